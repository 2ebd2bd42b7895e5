#!/usr/bin/env bash
# [run] precision = bf16 against fp32, on the same runs: full fine-tuning then LoRA on the
# synthetic tasks, and LoRA on a bf16 checkpoint of SmolLM2-135M's config (2 layers, random
# weights). bf16 rounds every product's operands, so the two differ, but they must train
# alike: the mean train loss over the last steps and every task's eval loss within stated
# tolerances. The accuracies are printed, not compared: part-trained tasks (these runs are
# short) move by tens of points between any two runs, fp32 against fp32 with another seed
# too; bench/run_precision.sh compares trained ones. Also: stage.json
# records the precision, a change of precision trains the stage again (it is not reused),
# the key in the file wins over PEFT_PRECISION, eval --precision, and bad values.
#   precision.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
unset PEFT_PRECISION

synthetic() { # name precision
    cat >"$1.ini" <<INI
[run]
out = $1
precision = $2
[model]
d_model = 64
n_layers = 3
n_heads = 4
n_kv_heads = 2
d_ff = 172
max_seq = 24
[data]
n_train = 2000
n_eval = 100
[stage.base]
method = full
tasks = upper swap cls_color
steps = 400
batch_size = 32
lr = 0.004
warmup_steps = 30
log_every = 10
save_model = true
[stage.adapt]
method = lora
from = base
tasks = shift
steps = 300
batch_size = 32
lr = 0.01
log_every = 10
INI
    "$PEFT" run "$1.ini" --quiet >/dev/null 2>"$1.err" || { cat "$1.err"; bad "run $1"; }
}

# mean train loss of a stage's last 10 logged points
tail_loss() { # run stage
    grep '"type":"train"' "$1/metrics.jsonl" | grep "\"stage\":\"$2\"" | tail -10 |
        grep -o '"loss":[0-9.e+-]*' | cut -d: -f2 | awk '{s += $1} END {if (NR) printf "%.5f", s / NR}'
}
# "task loss accuracy" of a stage's evaluation after training
eval_after() { # run stage
    grep '"type":"eval"' "$1/metrics.jsonl" | grep "\"stage\":\"$2\"" | grep '"point":"after"' |
        sed 's/.*"task":"\([^"]*\)".*"loss":\([0-9.e+-]*\).*"accuracy":\([0-9.e+-]*\).*/\1 \2 \3/'
}
# within: a b tolerance -> true when |a - b| / max(|b|, floor) <= tolerance
within() { awk -v a="$1" -v b="$2" -v t="$3" -v f="${4:-0.05}" 'BEGIN {
    d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; if (m < f) m = f; exit !(d / m <= t) }'; }

compare_runs() { # fp32-run bf16-run stage loss-tolerance
    local a b
    a=$(tail_loss "$1" "$3")
    b=$(tail_loss "$2" "$3")
    if [ -n "$a" ] && [ -n "$b" ] && within "$b" "$a" "$4"; then
        ok "$3: mean train loss of the last 10 points fp32 $a, bf16 $b (tolerance $4 relative)"
    else
        bad "$3: train loss fp32 '$a', bf16 '$b' (tolerance $4)"
    fi
    paste <(eval_after "$1" "$3") <(eval_after "$2" "$3") >"$3.eval"
    [ -s "$3.eval" ] || bad "$3: no evaluation after training"
    while read -r task la aa task2 lb ab; do
        if [ "$task" = "$task2" ] && within "$lb" "$la" "$4" 0.05; then
            ok "$3 $task: eval loss fp32 $la, bf16 $lb (tolerance $4 relative); accuracy $aa, $ab"
        else
            bad "$3 $task: eval loss fp32 $la, bf16 $lb (tolerance $4); accuracy $aa, $ab"
        fi
    done <"$3.eval"
}

synthetic s32 fp32
synthetic s16 bf16
compare_runs s32 s16 base 0.1
compare_runs s32 s16 adapt 0.1

grep -q '"precision":[[:space:]]*"bf16"' s16/base/stage.json &&
    grep -q '"precision":[[:space:]]*"fp32"' s32/base/stage.json &&
    ok "stage.json records the precision" || bad "stage.json precision: $(grep precision s16/base/stage.json s32/base/stage.json)"

# the bf16 results are not those of fp32: the adapters differ
"$PEFT" inspect s32/adapt/adapter.safetensors --diff s16/adapt/adapter.safetensors >diff.txt 2>&1
if grep -q 'max' diff.txt && ! grep -q 'identical' diff.txt; then
    ok "the bf16 adapter is not the fp32 one ($(grep -m1 -i 'max' diff.txt | tr -s ' ' | cut -c1-80))"
else
    bad "inspect --diff: $(head -5 diff.txt)"
fi

# a change of precision trains again; the same precision is reused
"$PEFT" run s32.ini --set run.precision=bf16 >again.out 2>&1
if grep -q 'reus' again.out && ! grep -qi 'train' <(grep -v 'reus' again.out | grep 'base'); then
    bad "fp32 stages reused under bf16: $(head -5 again.out)"
else
    grep '"precision":[[:space:]]*"bf16"' s32/base/stage.json >/dev/null &&
        ok "the same file under bf16 trains its stages again (not reused)" ||
        bad "precision change: $(grep precision s32/base/stage.json)"
fi
"$PEFT" run s32.ini --set run.precision=bf16 >again2.out 2>&1
grep -qi 'reus' again2.out && ok "the same precision again: reused" || bad "not reused: $(head -5 again2.out)"

# the key wins over the environment; the environment decides when the key is absent
PEFT_PRECISION=fp32 "$PEFT" run s16.ini --quiet >/dev/null 2>&1
grep -q '"precision":[[:space:]]*"bf16"' s16/base/stage.json && ok "precision = bf16 in the file wins over PEFT_PRECISION=fp32" ||
    bad "key vs environment: $(grep precision s16/base/stage.json)"
sed '/^precision = /d; s/^out = s16/out = env16/' s16.ini >env16.ini
PEFT_PRECISION=bf16 "$PEFT" run env16.ini --quiet --set stage.base.steps=20 --set stage.adapt.steps=10 >/dev/null 2>env16.err
grep -q '"precision":[[:space:]]*"bf16"' env16/base/stage.json 2>/dev/null && ok "PEFT_PRECISION=bf16 applies when the key is absent" ||
    bad "environment default: $(cat env16.err)"

# bad values: one line naming the place, exit 2, nothing written
"$PEFT" run s16.ini --set run.precision=fp16 --set run.out=badp >bad.out 2>bad.err
rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l <bad.err)" -eq 1 ] && grep -q 'precision' bad.err && grep -q 'fp16' bad.err && [ ! -e badp ]; then
    ok "precision = fp16: exit 2, one line: $(cat bad.err)"
else
    bad "precision = fp16: exit $rc: $(cat bad.err)"
fi
PEFT_PRECISION=half "$PEFT" run env16.ini --set run.out=bade >bad.out 2>bad.err
rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l <bad.err)" -eq 1 ] && grep -q 'PEFT_PRECISION' bad.err && [ ! -e bade ]; then
    ok "PEFT_PRECISION=half: exit 2, one line: $(cat bad.err)"
else
    bad "PEFT_PRECISION=half: exit $rc: $(cat bad.err)"
fi

# a bf16 checkpoint of SmolLM2-135M's config, 2 layers: LoRA on all seven projections
cfg=$PEFT_SOURCE_ROOT/tests/fixtures/configs/SmolLM2-135M.json
"$PEFT" init-model "$cfg" smol --layers 2 --dtype bf16 >/dev/null 2>err || { cat err; bad "init-model"; }
smol() { # name precision
    cat >"$1.ini" <<INI
[run]
out = $1
precision = $2
[model]
path = smol
max_seq = 48
[data]
n_train = 400
n_eval = 40
[stage.s]
method = lora
target_modules = all-linear
tasks = upper
steps = 40
batch_size = 8
lr = 0.003
log_every = 4
INI
    "$PEFT" run "$1.ini" --quiet >/dev/null 2>"$1.err" || { cat "$1.err"; bad "run $1"; }
}
smol m32 fp32
smol m16 bf16
compare_runs m32 m16 s 0.05

# eval --precision bf16 of the fp32 run's model: close to its fp32 evaluation, not equal
"$PEFT" eval s32/base/model --tasks upper,swap --n 40 --precision bf16 >e16.txt 2>e16.err || { cat e16.err; bad "eval --precision bf16"; }
"$PEFT" eval s32/base/model --tasks upper,swap --n 40 --precision fp32 >e32.txt 2>e32.err || { cat e32.err; bad "eval --precision fp32"; }
differ=0
for task in upper swap; do
    # loss (4 decimals) and perplexity (2): the bf16 rounding shows in one of them
    l16=$(grep -m1 "^| $task " e16.txt | cut -d'|' -f5,6 | tr -d ' ')
    l32=$(grep -m1 "^| $task " e32.txt | cut -d'|' -f5,6 | tr -d ' ')
    [ "$l16" != "$l32" ] && differ=$((differ + 1))
    if [ -n "$l16" ] && [ -n "$l32" ] && within "${l16%|*}" "${l32%|*}" 0.05; then
        ok "eval --precision bf16, $task: loss|perplexity $l16 against fp32's $l32"
    else
        bad "eval --precision, $task: bf16 '$l16', fp32 '$l32': $(head -5 e16.txt)"
    fi
done
[ "$differ" -gt 0 ] && ok "eval --precision bf16 is not fp32 ($differ of 2 tasks differ)" ||
    bad "eval --precision bf16 gave fp32's figures"
"$PEFT" eval s32/base/model --tasks upper --precision half >/dev/null 2>bad.err
rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <bad.err)" -eq 1 ] && grep -q -- '--precision' bad.err &&
    ok "eval --precision half: one line: $(cat bad.err)" || bad "eval --precision half: exit $rc: $(cat bad.err)"
finish
