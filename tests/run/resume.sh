#!/usr/bin/env bash
# An interrupted run continued with --resume ends with the same files as an uninterrupted
# one: the adapter of each stage byte for byte, for full fine-tuning (base weights written)
# and for LoRA with dropout (the random stream must be restored too). A second run reuses
# the completed stages.
#
# usage: resume.sh PEFT JSONL_VALID
set -u
PEFT=$(realpath "$1")
JSONL_VALID=$(realpath "$2")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
fail=0

cat >chain.ini <<'INI'
[run]
seed = 7
[model]
d_model = 24
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ff = 48
max_seq = 40
[data]
n_train = 64
n_eval = 8
[stage.base]
method = full
tasks = upper add
steps = 30
batch_size = 4
lr = 0.003
warmup_steps = 5
save_every = 10
train_norms = true
[stage.adapt]
method = lora
tasks = shift
steps = 25
batch_size = 4
lr = 0.01
r = 4
lora_dropout = 0.1
save_every = 7
INI

run() { # LOG ARGS...: run peft, stop the test on failure
    local log=$1; shift
    if ! "$PEFT" run chain.ini "$@" >"$log" 2>&1; then
        echo "FAIL peft run $* failed:"; cat "$log"
        echo "0 passed, 1 failed"; exit 1
    fi
}

run whole.log --quiet --set run.out="$TMP/whole"
# Interrupt inside the first stage, then inside the second, resuming each time.
run p1.log --quiet --set run.out="$TMP/parts" --stop-after 13
[ -f parts/base/checkpoint.json ] || { echo "FAIL no checkpoint after the interruption"; fail=1; }
[ ! -f parts/base/stage.json ] || { echo "FAIL an interrupted stage was marked complete"; fail=1; }
# Found without --resume, the checkpoint is neither continued nor dropped silently: refused.
"$PEFT" run chain.ini --quiet --set run.out="$TMP/parts" >refused.log 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "stage 'base' was interrupted and has a checkpoint.*--resume.*--restart" refused.log &&
    [ -f parts/base/checkpoint.json ] && [ ! -f parts/base/stage.json ]; then
    echo "ok   a checkpoint without --resume is refused (exit 2), files untouched"
else
    echo "FAIL run over a checkpoint without --resume: exit $rc"; cat refused.log; fail=1
fi
# --restart starts the stage over without reading its checkpoint (spoiled here, so that a
# resume would fail): the same files as the uninterrupted run.
run r1.log --quiet --set run.out="$TMP/restarted" --stop-after 13
echo spoiled >restarted/base/checkpoint.json
run r2.log --quiet --set run.out="$TMP/restarted" --restart
run p2.log --quiet --set run.out="$TMP/parts" --resume --stop-after 11
[ -f parts/base/stage.json ] || { echo "FAIL the first stage did not complete"; fail=1; }
run p3.log --quiet --set run.out="$TMP/parts" --resume

for d in parts restarted; do
    for f in base/adapter.safetensors base/model/model.safetensors adapt/adapter.safetensors; do
        if cmp -s "whole/$f" "$d/$f"; then
            echo "ok   $d: $f identical to the uninterrupted run's ($(stat -c %s "whole/$f") bytes)"
        else
            echo "FAIL $d: $f differs between the uninterrupted and the $d run"
            fail=1
        fi
    done
done
# peft inspect --diff tells the same: 0 apart for the resumed adapter; the full stage's
# adapter against the LoRA stage's is refused (other tensors); the restarted stage: 0 too.
d=$("$PEFT" inspect whole/adapt/adapter.safetensors --diff parts/adapt/adapter.safetensors | tail -n1)
"$PEFT" inspect whole/adapt/adapter.safetensors --diff whole/base/adapter.safetensors >other.log 2>&1
other=$?
far=$("$PEFT" inspect whole/base/adapter.safetensors --diff restarted/base/adapter.safetensors | tail -n1)
if [ "$d" = "8 tensors: max |a-b| 0, max relative difference 0; 0 integer tensors differ" ] &&
    [ $other -eq 2 ] && grep -q "^peft: whole/base/adapter.safetensors: no tensor 'base_model" other.log &&
    echo "$far" | grep -q 'max relative difference 0;'; then
    echo "ok   peft inspect --diff: $d; other tensors refused: $(cat other.log)"
else
    echo "FAIL peft inspect --diff: '$d', exit $other, $(cat other.log)"; fail=1
fi
# --quiet: no progress lines, but the results (stage tables, summary) still print.
if ! grep -q "step [0-9]*/" whole.log && grep -q "accuracy % (loss)" whole.log && grep -q "^| task |" whole.log; then
    echo "ok   --quiet prints the results and no progress"
else
    echo "FAIL --quiet output:"; cat whole.log; fail=1
fi
# Accuracy columns of the summary must agree too (times differ, of course).
if cmp -s <(grep '^| [a-z]' whole/summary.md | head -n 3) <(grep '^| [a-z]' parts/summary.md | head -n 3); then
    echo "ok   summary accuracies identical"
else
    echo "FAIL summaries differ"; diff whole/summary.md parts/summary.md; fail=1
fi
for d in whole parts restarted; do
    if ls "$d"/*/checkpoint* >/dev/null 2>&1; then echo "FAIL checkpoints left in $d"; fail=1; fi
done
# Interrupted or not, metrics.jsonl is JSON on every line.
if "$JSONL_VALID" whole/metrics.jsonl parts/metrics.jsonl restarted/metrics.jsonl >valid.log 2>&1; then
    echo "ok   metrics.jsonl: $(cat valid.log)"
else
    echo "FAIL metrics.jsonl: $(cat valid.log)"; fail=1
fi
# A second run reuses completed stages instead of training again.
run again.log --set run.out="$TMP/whole"
if [ "$(grep -c 'reused' again.log)" -eq 2 ]; then
    echo "ok   completed stages reused"
else
    echo "FAIL stages not reused:"; cat again.log; fail=1
fi

if [ $fail -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $fail
