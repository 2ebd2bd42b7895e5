#!/usr/bin/env bash
# grad_accum: micro-batches summed into one optimizer step equal one large batch up to
# summation order. The same stage runs as batch_size 8 and as batch_size 4 with grad_accum 2
# (and 2 x 4 for full fine-tuning); the training losses of every step must agree; for
# dynamic ConPET (its selector loss weighted by step_share) the adapters must.
#   grad_accum.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"

run() { # name, method, batch_size, grad_accum
    cat >"$1.ini" <<INI
[run]
out = $1
seed = 3
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 40
[data]
n_train = 200
n_eval = 10
[stage.s]
method = $2
tasks = reverse add
steps = 25
batch_size = $3
grad_accum = $4
log_every = 1
lr = 1e-2
INI
    "$PEFT" run "$1.ini" --quiet >/dev/null 2>"$1.err" || { cat "$1.err"; return 1; }
    grep '"type":"train"' "$1/metrics.jsonl" | grep -o '"loss":[0-9.eE+-]*' | sed 's/.*://' >"$1.loss"
}

for method in lora full; do
    if run "$method-big" "$method" 8 1 && run "$method-acc" "$method" 4 2 &&
        [ "$(wc -l <"$method-big.loss")" -eq 25 ]; then
        worst=$(paste "$method-big.loss" "$method-acc.loss" |
            awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($1 > 1 ? $1 : 1); if (r > w) w = r} END {printf "%.2e", w}')
        first=$(head -n1 "$method-big.loss") last_big=$(tail -n1 "$method-big.loss") last_acc=$(tail -n1 "$method-acc.loss")
        if awk -v w="$worst" -v t="$(tolerance 1e-4 1e-3)" 'BEGIN {exit !(w < t)}'; then
            ok "$method: batch 8 and 4 x grad_accum 2 agree over 25 steps (loss $first -> $last_big / $last_acc), worst relative difference $worst"
        else
            bad "$method: the losses differ by up to $worst (relative)"
        fi
    else
        bad "$method: a run failed"
    fi
done
# Dynamic ConPET's co-trained selector adds a loss of its own (a mean over the batch): with
# peft_batch_info.step_share it is weighted like the host's, so 4 x grad_accum 2 trains the
# adapter of batch 8 (before step_share: twice the selector's gradient).
conpet() { # out, batch_size, grad_accum
    cat >"$1.ini" <<INI
[run]
out = $1
seed = 3
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 32
[data]
n_train = 300
n_eval = 10
[stage.t1]
method = conpet
mode = dynamic
tasks = cls_size
train_labels = true
steps = 15
batch_size = $2
grad_accum = $3
lr = 0.01
[stage.s]
method = conpet
mode = dynamic
from =
init_from = t1
tasks = cls_shape
replay_tasks = cls_size
train_labels = true
steps = 20
batch_size = $2
grad_accum = $3
lr = 0.01
INI
    "$PEFT" run "$1.ini" --quiet >/dev/null 2>"$1.err" || { cat "$1.err"; return 1; }
}
if conpet cp-big 8 1 && conpet cp-acc 4 2; then
    d=$("$PEFT" inspect cp-big/s/adapter.safetensors --diff cp-acc/s/adapter.safetensors | tail -n1)
    rel=$(echo "$d" | sed -n 's/.*max relative difference \([^ ;]*\).*/\1/p')
    tol=$(tolerance 1e-4 3e-3)
    if [ -n "$rel" ] && awk -v r="$rel" -v t="$tol" 'BEGIN {exit !(r < t)}'; then
        ok "conpet dynamic with its selector loss: batch 8 and 4 x grad_accum 2 give adapters within $rel (tolerance $tol)"
    else
        bad "conpet dynamic: batch 8 and 4 x grad_accum 2 apart: $d"
    fi
else
    bad "conpet: a run failed"
fi
finish
