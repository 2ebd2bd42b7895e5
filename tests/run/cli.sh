#!/usr/bin/env bash
# The command line: plugins are found as .so files (and not linked into peft), their keys are
# shown, the synthetic suite is listed and written as JSONL that a run can read back, and
# usage errors exit with status 2.
#
# usage: cli.sh PEFT
set -u
PEFT=$(realpath "$1")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

out=$("$PEFT" plugins 2>"$TMP/err")
echo "$out"
for id in full lora; do
    if echo "$out" | grep -E "^$id +[0-9]+\.[0-9]+\.[0-9]+ +1\.2 +.*peft-$id\.so" >/dev/null; then
        ok "peft plugins lists $id from peft-$id.so"
    else
        bad "peft plugins does not list $id with version, ABI 1.2 and its file"
    fi
done

if ldd "$PEFT" | grep -E 'peft-(full|lora)' >/dev/null; then
    bad "peft links a method plugin: $(ldd "$PEFT" | grep peft-)"
else
    ok "ldd peft shows no plugin"
fi

show=$("$PEFT" plugins lora)
for key in r lora_alpha lora_dropout target_modules use_rslora; do
    if echo "$show" | grep -E "^ *$key\b" >/dev/null; then ok "peft plugins lora shows key $key"; else bad "key $key missing from: $show"; fi
done

"$PEFT" plugins nosuch >/dev/null 2>"$TMP/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "unknown method 'nosuch'" "$TMP/err"; then ok "unknown plugin id refused"; else bad "unknown plugin: status $rc, $(cat "$TMP/err")"; fi

n=$("$PEFT" data --list | wc -l)
if [ "$n" -ge 10 ]; then ok "peft data --list lists $n tasks"; else bad "only $n tasks listed"; fi

"$PEFT" data --tasks upper,add --n 10 --seed 3 --out "$TMP/d.jsonl" >/dev/null &&
    [ "$(wc -l <"$TMP/d.jsonl")" -eq 20 ] && grep -q '"task":"upper"' "$TMP/d.jsonl" &&
    ok "peft data writes JSONL" || bad "peft data --out did not write 20 lines"

# The written JSONL is valid run input (10 per task: the tenth is held out for evaluation).
cat >"$TMP/j.ini" <<INI
[run]
out = $TMP/jrun
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
files = $TMP/d.jsonl
[stage.a]
method = lora
tasks = upper
steps = 2
batch_size = 2
INI
if "$PEFT" run "$TMP/j.ini" --quiet >/dev/null 2>"$TMP/err" && [ -f "$TMP/jrun/a/adapter.safetensors" ]; then
    ok "a run trains from the written JSONL"
else
    bad "run from JSONL failed: $(cat "$TMP/err")"
fi

# Every stage key the host reserves is accepted by a stage.
cat >"$TMP/keys.ini" <<INI
[run]
out = $TMP/keys
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 16
n_eval = 4
[stage.a]
method = lora
from =
tasks = upper
eval_tasks = upper
steps = 3
batch_size = 2
eval_batch_size = 4
lr = 0.001
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.99
eps = 1e-8
grad_clip = 1
warmup_steps = 1
schedule = linear
min_lr_ratio = 0.1
eval_every = 1
save_every = 1
log_every = 1
save_model = true
seed = 3
n_train = 4
replay_tasks = add
replay = 0.5
memory_per_label = 4
eval_labels = true
INI
if "$PEFT" run "$TMP/keys.ini" --quiet >"$TMP/keys.out" 2>"$TMP/err" && [ -f "$TMP/keys/a/model/model.safetensors" ] &&
    [ "$(grep -c '"point":"step"' "$TMP/keys/metrics.jsonl")" -eq 2 ]; then
    ok "every stage key accepted (save_model and eval_every take effect)"
else
    bad "stage keys: $(cat "$TMP/err")"
fi
# eval_every's results reach the screen as a line (even with --quiet: they are results).
if grep -qE "^\[a\] step 1 eval: [a-z_]+ [0-9.]+% \([0-9.]+\)" "$TMP/keys.out"; then
    ok "eval_every prints each evaluation as a line"
else
    bad "no eval_every line in: $(cat "$TMP/keys.out")"
fi

"$PEFT" frobnicate >/dev/null 2>&1
[ $? -eq 2 ] && ok "unknown command exits 2" || bad "unknown command did not exit 2"
"$PEFT" version | grep -q "plugin ABI 1" && ok "peft version names the ABI" || bad "peft version"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
