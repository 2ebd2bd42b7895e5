#!/usr/bin/env bash
# One count of trainable parameters everywhere: the stage's first line, the line that says a
# mask was set within the stage, summary.md, stage.json and the adapter's metadata agree, for
# LoTA with its mask from a calibration stage (set at stage start) and from its own first
# steps (set within the stage), and for LoRA.
#
# usage: counts.sh PEFT
set -u
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"

cat >counts.ini <<'INI'
[run]
out = out
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 16
n_eval = 4
[stage.calib]
method = full
tasks = upper
steps = 3
batch_size = 2
[stage.chained]
method = lota
from =
calibrate_from = calib
sparsity = 0.9
tasks = upper
steps = 3
batch_size = 2
[stage.own]
method = lota
from =
calibration_steps = 2
sparsity = 0.9
tasks = upper
steps = 4
batch_size = 2
[stage.low]
method = lora
from =
tasks = upper
steps = 2
batch_size = 2
INI
"$PEFT" run counts.ini >run.log 2>err.log || { cat run.log err.log; echo "0 passed, 1 failed"; exit 1; }

json_count() { sed -n 's/.*"trainable_parameters":[[:space:]]*\([0-9]*\).*/\1/p' "out/$1/stage.json"; }
meta_count() { "$PEFT" inspect "out/$1/adapter.safetensors" | sed -n 's/.*peft.trainable_parameters: *\([0-9]*\).*/\1/p'; }
summary_count() { awk -F'|' -v s=" $1 " '$2 == s && $3 != " before (first evaluated) " {gsub(/ /, "", $4); print $4}' out/summary.md | tail -n 1; }
for st in chained own low; do
    # The last count the run printed for the stage: its first line, or a later mask line.
    printed=$(grep -E "^\[$st\] (lota|lora): [0-9]+ trainable parameters|^\[$st\] step [0-9]+: [0-9]+ trainable" run.log | tail -n 1 |
              sed -E 's/.* ([0-9]+) trainable parameters.*/\1/')
    j=$(json_count $st); m=$(meta_count $st); sm=$(summary_count $st)
    if [ -n "$j" ] && [ "$printed" = "$j" ] && [ "$m" = "$j" ] && [ "$sm" = "$j" ]; then
        ok "$st: $j trainable parameters in its line, stage.json, metadata and summary"
    else
        bad "$st: printed '$printed', stage.json '$j', metadata '$m', summary '$sm'"
    fi
done
# LoTA's own calibration trains densely first and says when its mask cuts the count.
first=$(grep -E "^\[own\] lota: [0-9]+ trainable" run.log | sed -E 's/.*: ([0-9]+) trainable.*/\1/')
if grep -qE "^\[own\] step 2: [0-9]+ trainable parameters from here on" run.log && [ "$first" -gt "$(json_count own)" ]; then
    ok "own calibration: $first dense, then $(json_count own) from step 2"
else
    bad "own calibration lines: $(grep '^\[own\]' run.log)"
fi
finish
