#!/usr/bin/env bash
# keep_checkpoints: the N most recent checkpoints stay, also after the stage completes (without
# the manifest, so the stage does not read as interrupted); 0 keeps today's behaviour (only
# the latest while running, none after).
#   keep_checkpoints.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
write() { # name, keep
    cat >"$1.ini" <<INI
[run]
out = $1
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 32
[stage.s]
method = lora
tasks = upper
steps = 20
batch_size = 4
save_every = 5
keep_checkpoints = $2
INI
}
write two 2
if "$PEFT" run two.ini --quiet >/dev/null 2>err; then
    left=$(cd two/s && ls checkpoint* 2>/dev/null | tr '\n' ' ')
    if [ "$left" = "checkpoint-10-optim.safetensors checkpoint-10.safetensors checkpoint-15-optim.safetensors checkpoint-15.safetensors " ] &&
        [ -f two/s/stage.json ] && "$PEFT" run two.ini --quiet >/dev/null 2>err2; then
        ok "keep_checkpoints = 2: $left kept after the stage; a second run reuses the stage"
    else
        bad "keep_checkpoints = 2 left '$left' $(cat err2 2>/dev/null)"
    fi
else
    bad "run: $(cat err)"
fi
write none 0
"$PEFT" run none.ini --quiet >/dev/null 2>err && ! ls none/s/checkpoint* >/dev/null 2>&1 &&
    ok "keep_checkpoints = 0: no checkpoint left after the stage" || bad "keep 0: $(ls none/s; cat err)"
finish
