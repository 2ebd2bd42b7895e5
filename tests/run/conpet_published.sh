#!/usr/bin/env bash
# conpet_published: dynamic ConPET in the published order through peft run: task 1's expert
# with the label loss (train_labels), task 2's selector stage (phase = selector, its best
# evaluation kept), then task 2's expert stage (phase = experts, top_k 2, the label loss).
# Checked: the run completes; the selector stage trains the selector only and leaves task 2's
# expert out of its file; the experts stage starts from that selector and trains task 2's
# expert; the label loss starts near log(labels) (a classification loss, not the answer
# tokens' cross-entropy); train_labels on a task that is not a classification is refused with
# one line before anything of that stage is written.
#   conpet_published.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
cat >run.ini <<'INI'
[run]
out = out
seed = 2
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 32
[data]
n_train = 200
n_eval = 20
[stage.t1]
method = conpet
mode = dynamic
from =
tasks = cls_size
eval_labels = true
train_labels = true
steps = 20
batch_size = 8
lr = 0.01
[stage.t2_sel]
method = conpet
mode = dynamic
phase = selector
from =
init_from = t1
tasks = cls_shape
replay_tasks = cls_size
eval_tasks = cls_size cls_shape
eval_labels = true
eval_every = 5
early_stopping = 100
steps = 20
batch_size = 8
lr = 0.01
[stage.t2]
method = conpet
mode = dynamic
phase = experts
top_k = 2
from =
init_from = t2_sel
tasks = cls_shape
replay_tasks = cls_size
eval_tasks = cls_size cls_shape
eval_labels = true
train_labels = true
steps = 20
batch_size = 8
lr = 0.01
INI
"$PEFT" run run.ini >out.txt 2>err.txt || { cat out.txt err.txt; bad "the run failed"; finish; exit 1; }
ok "a chain t1 -> t2_sel (selector) -> t2 (experts, top_k 2) ran"

# What each file holds: "inspect" lists tensor names.
"$PEFT" inspect out/t2_sel/adapter.safetensors >sel.txt 2>&1
"$PEFT" inspect out/t2/adapter.safetensors >exp.txt 2>&1
if grep -q 'lora_A\.cls_size\.weight' sel.txt && ! grep -q 'lora_A\.cls_shape\.weight' sel.txt &&
    grep -q 'lora_A\.cls_shape\.weight' exp.txt; then
    ok "the selector stage's file has task 1's expert and not task 2's; the experts stage's has both"
else
    bad "expert tensors: selector stage $(grep -c 'lora_A\.' sel.txt), experts stage $(grep -c 'lora_A\.' exp.txt)"
fi
# (the plugins' lines go to stderr)
grep -q '\[t2_sel\] conpet: trained: [0-9]* entries (0 new experts and the selector)' err.txt &&
    grep -q '\[t2\] conpet: trained: [0-9]* entries (1 new expert);' err.txt &&
    ok "t2_sel trained the selector alone, t2 one new expert alone: $(grep -c 'trained:' err.txt) stages said so" ||
    bad "what trained: $(grep 'trained:' err.txt)"
grep -q '"best_step"' out/t2_sel/stage.json && ok "the selector stage kept its best evaluation (best_step in stage.json)" ||
    bad "no best_step in t2_sel/stage.json"

# The label loss: at the first step of t1 about log(2) (two labels), far below the tokens' loss.
first=$(grep '"type":"train","stage":"t1"' out/metrics.jsonl | head -1 | grep -o '"loss":[0-9.]*' | cut -d: -f2)
if awk -v l="$first" 'BEGIN { exit !(l > 0.3 && l < 1.5) }'; then
    ok "t1's first logged loss $first is a two-label cross-entropy (log 2 = 0.69)"
else
    bad "t1's first loss '$first' is not near log 2"
fi

# A task with more labels than label prediction takes: refused with one line.
sed 's/^tasks = cls_size$/tasks = add/' run.ini | sed 's/^out = out$/out = bad/' >bad.ini
"$PEFT" run bad.ini >bad.out 2>bad.err
rc=$?
if [ $rc -ne 0 ] && [ "$(wc -l <bad.err)" -eq 1 ] && grep -q 'train_labels: more than 64 distinct completions' bad.err &&
    [ ! -e bad/t1/stage.json ]; then
    ok "train_labels on 'add' refused: $(cat bad.err)"
else
    bad "train_labels on add: exit $rc, $(cat bad.err)"
fi
finish
