#!/usr/bin/env bash
# Adapters applied unmerged by peft eval and peft generate, against what the run itself
# measured and wrote: a LoRA stage (cached decoding; equal to its merged model), a Poly stage
# (task-routed: rows go to the task named, or to the task of the same name) and a ConPET
# stage (its selector reads the whole batch: a full forward per token, auxiliary passes). A
# stage folder without a merged model is read as its adapter on the run's model folder.
#   unmerged.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"

# losses of a stage.json's "after", one "task loss accuracy n" line each
after() { sed -n '/"after"/,$p' "$1" | awk -F'[:,]' '/"task"/ {gsub(/[\t "]/, "", $2); t = $2}
    /"n":/ {n = $2} /"loss"/ {l = $2} /"accuracy"/ {gsub(/[ }\]]/, "", $2); print t, l, $2, n}'; }
# the loss column of peft eval's table for TASK
eval_loss() { awk -F'|' -v t="$2" '$2 ~ "^ " t " $" {gsub(/ /, "", $5); print $5}' "$1"; }

cat >make.ini <<'INI'
[run]
out = made
[model]
d_model = 48
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ff = 64
max_seq = 32
[stage.base]
method = full
tasks = cls_color cls_size
steps = 600
batch_size = 16
lr = 0.01
train_embeddings = true
train_norms = true
save_model = true
INI
"$PEFT" run make.ini --quiet >/dev/null 2>err || { cat err; bad "could not make the base model"; finish; exit 1; }
base=made/base/model

cat >ad.ini <<INI
[run]
out = ad
[model]
path = $base
[data]
n_eval = 40
[stage.lora]
method = lora
tasks = cls_color
steps = 150
batch_size = 16
lr = 0.01
save_model = true
[stage.poly]
method = poly
from =
tasks = cls_color cls_size
steps = 150
batch_size = 16
lr = 0.01
[stage.t1]
method = conpet
mode = dynamic
from =
tasks = cls_size
steps = 60
batch_size = 16
lr = 0.005
[stage.t2]
method = conpet
mode = dynamic
from =
init_from = t1
tasks = cls_color
eval_tasks = cls_size cls_color
replay_tasks = cls_size
steps = 60
batch_size = 16
lr = 0.005
INI
"$PEFT" run ad.ini --quiet >/dev/null 2>err || { cat err; bad "the run failed"; finish; exit 1; }

# 1. The run's predictions agree with its teacher-forced exact match (greedy decoding
#    reproduces the answer exactly when every answer token is the argmax).
for s in lora poly t2; do
    while read -r task loss acc n; do
        f=ad/$s/predictions-$task.jsonl
        exact=$(grep -c '"exact":true' "$f")
        lines=$(wc -l <"$f")
        want=$(awk -v a="$acc" -v n="$n" 'BEGIN {printf "%d", a * n + 0.5}')
        if [ "$lines" = "$n" ] && [ "$exact" = "$want" ]; then
            ok "run predictions $s/$task: $exact of $lines exact = accuracy $acc"
        else
            bad "run predictions $s/$task: $exact exact of $lines lines, accuracy $acc of $n"
        fi
    done < <(after ad/$s/stage.json)
done

# 2. LoRA unmerged on the base = the merged model = the run: loss and every prediction.
"$PEFT" eval ad/lora --tasks cls_color --n 40 --out merged >merged.txt 2>err || cat err
"$PEFT" eval $base --adapter ad/lora --tasks cls_color --n 40 --out unmerged >unmerged.txt 2>err || cat err
read -r _ run_loss _ _ < <(after ad/lora/stage.json)
m=$(eval_loss merged.txt cls_color) u=$(eval_loss unmerged.txt cls_color)
# bf16 rounds the merged weight W + s B A to bfloat16, which the unmerged path never does:
# there merged and unmerged agree to bfloat16's rounding, and unmerged is still the run's
mtol=$(tolerance 0 2e-3)
if [ -n "$u" ] && [ -n "$m" ] && awk -v a="$u" -v b="$m" -v t="$mtol" 'BEGIN {d = a - b; exit !(d <= t && -d <= t)}' &&
   awk -v a="$u" -v b="$run_loss" 'BEGIN {exit !(a - b < 1e-4 && b - a < 1e-4)}'; then
    ok "lora: unmerged loss $u = the run's $run_loss, merged $m (apart by at most $mtol)"
else
    bad "lora: unmerged '$u', merged '$m' (tolerance $mtol), run $run_loss"
fi
if { [ "$BF16" = 1 ] || cmp -s merged/predictions-cls_color.jsonl unmerged/predictions-cls_color.jsonl; } &&
   cmp -s unmerged/predictions-cls_color.jsonl ad/lora/predictions-cls_color.jsonl; then
    ok "lora: unmerged predictions = the run's$([ "$BF16" = 1 ] || echo " = merged") ($(wc -l <unmerged/predictions-cls_color.jsonl) lines)"
else
    bad "lora: predictions differ"
fi

# 3. Poly and ConPET stages (no merged model): each task routed to its own row.
for s in poly t2; do
    "$PEFT" eval ad/$s --tasks cls_color,cls_size --n 40 --out ev-$s >ev-$s.txt 2>err || cat err
    while read -r task loss acc n; do
        got=$(eval_loss ev-$s.txt "$task")
        if [ -n "$got" ] && awk -v a="$got" -v b="$loss" 'BEGIN {exit !(a - b < 1e-4 && b - a < 1e-4)}' &&
           cmp -s ev-$s/predictions-$task.jsonl ad/$s/predictions-$task.jsonl; then
            ok "$s/$task unmerged: loss $got = the run's $loss, same predictions"
        else
            bad "$s/$task unmerged: loss '$got', the run's $loss; $(cat ev-$s.txt err)"
        fi
    done < <(after ad/$s/stage.json)
done

# 4. peft generate with a task-routed adapter.
"$PEFT" generate ad/poly --prompt "clr red=" >out.txt 2>err
rc=$?
if [ $rc = 2 ] && [ "$(wc -l <err)" = 1 ] && grep -q "trained on 2 tasks (cls_color, ...): give --task NAME" err && [ ! -s out.txt ]; then
    ok "generate: a task-routed adapter without --task: $(cat err)"
else
    bad "generate without --task: exit $rc, $(cat err out.txt)"
fi
"$PEFT" generate ad/poly --task nosuch --prompt "x" >out.txt 2>err
rc=$?
if [ $rc = 2 ] && grep -q "'nosuch' is not a task of ad/poly (its tasks: cls_color, cls_size)" err; then
    ok "generate --task nosuch: $(cat err)"
else
    bad "generate --task nosuch: exit $rc, $(cat err)"
fi
prompt=$(sed -n 1p ad/poly/predictions-cls_color.jsonl | sed 's/^{"prompt":"\([^"]*\)".*/\1/')
want=$(sed -n 1p ad/poly/predictions-cls_color.jsonl | sed 's/.*"generated":"\([^"]*\)".*/\1/')
got=$("$PEFT" generate ad/poly --task cls_color --prompt "$prompt" --max-new-tokens 16 2>err)
if [ "$got" = "$want" ] && grep -q "with adapter ad/poly (poly, task cls_color)" err; then
    ok "generate ad/poly --task cls_color '$prompt' -> '$got' (the run's prediction)"
else
    bad "generate ad/poly: '$got', want '$want'; $(cat err)"
fi
got=$("$PEFT" generate $base --adapter ad/t2 --task cls_color --prompt "$prompt" --max-new-tokens 16 2>err)
want=$(grep -F "\"prompt\":\"$prompt\"" ad/t2/predictions-cls_color.jsonl | sed 's/.*"generated":"\([^"]*\)".*/\1/')
if [ -n "$want" ] && [ "$got" = "$want" ]; then
    ok "generate --adapter ad/t2 (conpet, whole-sequence forwards) -> '$got' (the run's prediction)"
else
    bad "generate conpet: '$got', want '$want'; $(cat err)"
fi

# A method that is not task-routed needs no --task, whatever tasks its run had.
got=$("$PEFT" generate $base --adapter ad/lora --prompt "$prompt" --max-new-tokens 16 2>err)
want=$(grep -F "\"prompt\":\"$prompt\"" ad/lora/predictions-cls_color.jsonl | sed 's/.*"generated":"\([^"]*\)".*/\1/')
if [ -n "$want" ] && [ "$got" = "$want" ]; then
    ok "generate --adapter ad/lora (its run had 2 tasks; lora is not task-routed: no --task) -> '$got' (the run's prediction)"
else
    bad "generate lora without --task: '$got', want '$want'; $(cat err)"
fi

# 5. Refusals: one line, exit 2, nothing written.
"$PEFT" eval $base --adapter made/base/model --tasks cls_color --out refused >out.txt 2>err
rc=$?
if [ $rc = 2 ] && [ "$(wc -l <err)" = 1 ] && grep -q "not an adapter" err && [ ! -e refused ]; then
    ok "an adapter that is a model folder: $(cat err)"
else
    bad "adapter = model folder: exit $rc, $(cat err)"
fi
"$PEFT" eval $base --task cls_color --tasks cls_color >out.txt 2>err
rc=$?
if [ $rc = 2 ] && grep -q "give --adapter" err; then ok "--task without --adapter: $(cat err)"; else bad "--task alone: exit $rc, $(cat err)"; fi
finish
