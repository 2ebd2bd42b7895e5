#!/usr/bin/env bash
# early_stopping: a LoRA stage whose learning rate is too large stops once the mean eval loss
# has not improved for 2 evaluations, and its result is the best evaluation's adapter (the
# final evaluation gives exactly that evaluation's loss); without early_stopping it runs all
# its steps; early_stopping without eval_every is refused.
#   early_stopping.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
write() { # name, extra keys
    cat >"$1.ini" <<INI
[run]
out = $1
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 40
[data]
n_train = 200
n_eval = 20
[stage.s]
method = lora
tasks = upper
steps = 60
batch_size = 8
lr = 10
$2
INI
}
write es "eval_every = 5
early_stopping = 2"
"$PEFT" run es.ini >out.txt 2>err.txt || { cat err.txt; bad "the run failed"; finish; exit 1; }
best=$(grep -o '"best_step":[[:space:]]*[0-9]*' es/s/stage.json | grep -o '[0-9]*$')
stopped=$(grep -o '"stopped_at_step":[[:space:]]*[0-9]*' es/s/stage.json | grep -o '[0-9]*$')
line=$(grep 'early stop at step' out.txt)
best_loss=$(grep "\"point\":\"step\",\"step\":$best," es/metrics.jsonl | grep -o '"loss":[0-9.]*' | cut -d: -f2)
after_loss=$(grep '"point":"after"' es/metrics.jsonl | grep -o '"loss":[0-9.]*' | cut -d: -f2)
if [ -n "$line" ] && [ -n "$best" ] && [ "$stopped" -lt 60 ] && [ "$stopped" -eq $((best + 10)) ] &&
    [ -n "$best_loss" ] && [ "$best_loss" = "$after_loss" ]; then
    ok "early stop: $line; the final evaluation's loss $after_loss is step $best's"
else
    bad "early stop: '$line' best ${best:-?} stopped ${stopped:-?} losses ${best_loss:-?} / ${after_loss:-?}"
fi
[ ! -e es/s/early-stopping-best.safetensors ] && ok "the best adapter's temporary file is gone" ||
    bad "early-stopping-best.safetensors left behind"

# Interrupted between the best evaluation and the stop, then resumed: the watch continues
# from the checkpoint (best step, best loss, evaluations since), so the stage stops at the same
# step with the same result as the uninterrupted run.
write es "eval_every = 5
early_stopping = 2
save_every = 5"
mv es es-whole
cut_at=$((best + 5))
"$PEFT" run es.ini --stop-after $cut_at >/dev/null 2>err.txt
"$PEFT" run es.ini --resume >out4.txt 2>err.txt
best2=$(grep -o '"best_step":[[:space:]]*[0-9]*' es/s/stage.json | grep -o '[0-9]*$')
stopped2=$(grep -o '"stopped_at_step":[[:space:]]*[0-9]*' es/s/stage.json | grep -o '[0-9]*$')
after2=$(grep '"point":"after"' es/metrics.jsonl | grep -o '"loss":[0-9.]*' | cut -d: -f2)
if grep -q "resuming at step $cut_at" out4.txt && [ "$best2" = "$best" ] && [ "$stopped2" = "$stopped" ] &&
    [ "$after2" = "$after_loss" ]; then
    ok "stopped at step $cut_at (best $best) and resumed: stops at $stopped2 with step $best2's result, loss $after2"
else
    bad "resume: best ${best2:-?} (want $best), stopped ${stopped2:-?} (want $stopped), loss ${after2:-?} (want $after_loss); $(cat out4.txt err.txt)"
fi

write full "eval_every = 5"
"$PEFT" run full.ini >out2.txt 2>&1 && ! grep -q 'early stop' out2.txt &&
    grep -q '"point":"after","step":60' full/metrics.jsonl &&
    ok "without early_stopping the stage runs its 60 steps" || bad "without early_stopping: $(cat out2.txt)"

write refuse "early_stopping = 2"
"$PEFT" run refuse.ini >/dev/null 2>err3.txt
rc=$?
if [ $rc -eq 2 ] && grep -q 'refuse.ini:.*early_stopping: needs eval_every' err3.txt && [ ! -e refuse ]; then
    ok "refused: $(cat err3.txt)"
else
    bad "early_stopping without eval_every: exit $rc, $(cat err3.txt)"
fi
finish
