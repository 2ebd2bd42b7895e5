#!/usr/bin/env bash
# A plugin's auxiliary pass (run_pass) through a real run: the probe method trains a task
# selector on the final hidden state from pass 1 only, and its stage_end fails the run unless
# the pass reached the sites and the hidden hook and its loss fell below 0.7 of its first value.
#
# usage: aux_pass.sh PEFT AUX_PLUGIN
set -u
PEFT=$(realpath "$1")
PLUGIN=$(realpath "$2")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/aux.ini" <<INI
[run]
out = $TMP/out
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 64
n_eval = 8
[stage.select]
method = $PLUGIN
tasks = upper add
steps = 100
batch_size = 8
lr = 0.1
INI
if "$PEFT" run "$TMP/aux.ini" --quiet >"$TMP/log" 2>&1 && [ -f "$TMP/out/select/adapter.safetensors" ]; then
    echo "ok   auxiliary pass trained the selector"
    echo "1 passed, 0 failed"
else
    cat "$TMP/log"
    echo "FAIL the run with an auxiliary pass failed"
    echo "0 passed, 1 failed"
    exit 1
fi
