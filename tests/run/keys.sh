#!/usr/bin/env bash
# `peft keys` prints the same table the run file's reader validates against:
#  - every key it lists is read: set to a wrong value, it is refused as a bad value, never
#    as an unknown key;
#  - a key it does not list is refused, and the "known" keys the refusal names are exactly
#    the listed ones (for a trained stage: the host's T keys, then the method's own).
#
# usage: keys.sh PEFT
set -u
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"

"$PEFT" keys >keys.txt || { echo "peft keys failed"; exit 1; }
# "[section]..." headers, then "  key  FLAGS type..." lines.
table=$(awk '/^\[run\]/ {s="run"} /^\[model\]/ {s="model"} /^\[data\]/ {s="data"}
             /^\[stage/ {s="stage"}
             /^  [a-z_0-9]+ / {f=""; if ($2 ~ /^(T|M|TM)$/) f=$2; print s, $1, f}' keys.txt)
[ "$(wc -l <<<"$table")" -ge 50 ] && ok "peft keys lists $(wc -l <<<"$table") keys" || bad "table: $table"

# A small run (never executed: every file below has a problem).
base() { # $1: extra [model] lines
    printf '[run]\nout = out\n[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\n%s[data]\nn_train = 8\nn_eval = 2\n' "${1-}"
    printf '[stage.a]\nmethod = lora\ntasks = upper\nsteps = 1\nbatch_size = 2\n'
}
merge_stage='[stage.m]\nmerge = add\ninputs = a\n'

listed() { awk -v s="$1" -v f="$2" '$1 == s && (f == "" || index($3, f)) {print $2}' <<<"$table" | paste -sd, | sed 's/,/, /g'; }

while read -r sec key fl; do
    case $sec in
    run | data) { base; } | sed "/^\[$sec\]/a $key = ?bad" >k.ini ;;
    model) base | sed "/^\[model\]/a $key = ?bad" >k.ini ;;
    stage)
        if [ "$fl" = M ]; then { base; printf "$merge_stage"; echo "$key = ?bad"; } >k.ini
        else { base; echo "$key = ?bad"; } >k.ini; fi ;;
    esac
    "$PEFT" run k.ini --quiet >/dev/null 2>err.txt
    rc=$?
    if [ $rc -ne 2 ]; then bad "[$sec] $key = ?bad: status $rc"; continue; fi
    if grep -E "\] $key: (unknown key|not a key of)" err.txt >/dev/null; then
        bad "[$sec] $key is listed but refused as unknown: $(cat err.txt)"
    else
        ok "[$sec] $key is read ($(head -n 1 err.txt | cut -c1-90))"
    fi
done <<<"$table"

# Unknown keys: the refusal names exactly the listed keys.
check_known() { # label, expected list, file
    "$PEFT" run "$3" --quiet >/dev/null 2>err.txt
    got=$(grep -o "known: [^)]*" err.txt | head -n 1 | sed 's/^known: //')
    if [ "$got" = "$2" ]; then ok "$1: the known keys are the listed ones"; else bad "$1: known '$got', listed '$2'"; fi
}
for sec in run model data; do
    base | sed "/^\[$sec\]/a no_such_key = 1" >u.ini
    check_known "[$sec]" "$(listed $sec "")" u.ini
done
{ base; printf "$merge_stage"; echo "no_such_key = 1"; } >u.ini
check_known "[stage.m] (merge)" "$(listed stage M)" u.ini
{ base; echo "no_such_key = 1"; } >u.ini
lora_keys=$("$PEFT" plugins lora | awk '/^keys/ {k=1; next} k && /^  [a-z_0-9]+ / {print $1}' | paste -sd, | sed 's/,/, /g')
check_known "[stage.a] (trained, lora)" "$(listed stage T), $lora_keys" u.ini

# A method's stage defaults (LoTA: the official trainer's RMSprop, no weight decay, per-tensor
# clipping, constant learning rate) apply where the stage is silent and yield to the stage's
# own keys; stage.json's config shows what the stage ran with.
printf '[run]\nout = md\nthreads = 1\n[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\n[data]\nn_train = 8\nn_eval = 2\n' >md.ini
printf '[stage.a]\nmethod = lota\ntasks = upper\nsteps = 2\nbatch_size = 2\ncalibration_steps = 1\n' >>md.ini
printf '[stage.b]\nmethod = lota\nfrom = a\ntasks = upper\nsteps = 2\nbatch_size = 2\ncalibration_steps = 1\noptimizer = adamw\n' >>md.ini
if "$PEFT" run md.ini --quiet >md.out 2>md.err; then
    has() { grep -Eq "\"$2\":[[:space:]]*\"$3\"" "md/$1/stage.json"; }
    has a optimizer rmsprop && has a weight_decay 0 && has a clip_scope tensor && has a schedule constant &&
        ok "lota's stage defaults apply where the stage is silent" || bad "lota a: $(grep -A12 config md/a/stage.json)"
    has b optimizer adamw && has b clip_scope tensor &&
        ok "a stage's own optimizer wins over the method's default" || bad "lota b: $(grep -A12 config md/b/stage.json)"
else
    bad "lota defaults run: $(cat md.err)"
fi
"$PEFT" plugins lota | grep -q "optimizer = rmsprop, .*clip_scope = tensor, schedule = constant" &&
    ok "peft plugins lota lists its stage defaults" || bad "peft plugins lota: no stage defaults"

finish
