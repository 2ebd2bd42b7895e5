#!/usr/bin/env bash
# `peft check` on every in-tree plugin in fp32 and in bf16 (all checks pass), on the SDK
# template built against
# ABI 1.0 (a binary kept from before 1.1: it loads and passes on this host), on a plugin whose
# backward is wrong on purpose (caught: exit 1, the failing check and tensor named), and on a
# plugin that does not exist (one line, exit 2).
#
# usage: plugin_check.sh PEFT BROKEN_PLUGIN ABI_1_0_PLUGIN PLUGIN...
set -u
BROKEN=$(realpath "$2")
OLD=$(realpath "$3")
plugins=()
for so in "${@:4}"; do plugins+=("$(realpath "$so")"); done
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"
# A sanitizer build runs 4-5x slower: there the bf16 pass takes the plugins whose use of the
# model's weights differs (lora: none; loratrf f2: its own widened copy; full: fp32 masters),
# and the warnings-as-errors build runs it on every plugin.
sanitized=0
ldd "$PEFT" 2>/dev/null | grep -q 'libasan\|libubsan' && sanitized=1
for precision in fp32 bf16; do
    for so in "${plugins[@]}"; do
        name=$(basename "$so" .so)
        if [ $precision = bf16 ] && [ $sanitized = 1 ]; then
            case $name in peft-lora | peft-loratrf | peft-full) ;; *) continue ;; esac
        fi
        out=$name.out
        [ $precision = bf16 ] && out=$name.bf16.out
        "$PEFT" check "$so" --precision $precision >"$out" 2>"$name.err"
        rc=$?
        summary=$(tail -1 "$out")
        if [ $rc -eq 0 ] && [[ "$summary" =~ ^[1-9][0-9]*\ passed,\ 0\ failed$ ]] &&
            ! grep -q '^FAIL' "$out" && grep -q "(precision $precision)" "$out"; then
            ok "$name, $precision: $summary"
        else
            bad "$name, $precision: exit $rc, $summary; $(grep '^FAIL' "$out" | head -3) $(cat "$name.err")"
        fi
    done
done
# every check named once per run: the gradients, dx, negate, save/load, merge
lines=$(grep -c '^ok   lora defaults' peft-lora.out 2>/dev/null)
for what in "parameter gradients against central differences" "input gradients (dx" "negate at" "save -> load" "merge:"; do
    grep -q "^ok   lora defaults: $what" peft-lora.out && ok "lora: '$what' checked" || bad "lora: no '$what' line ($lines lines)"
done

"$PEFT" plugins "$OLD" >old.info 2>&1
"$PEFT" check "$OLD" >old.out 2>old.err
rc=$?
if [ $rc -eq 0 ] && grep -q '^abi  *1\.0$' old.info && [[ "$(tail -1 old.out)" =~ ^[1-9][0-9]*\ passed,\ 0\ failed$ ]]; then
    ok "an ABI 1.0 binary on this ABI $("$PEFT" version | sed 's/.*ABI \([0-9.]*\).*/\1/') host: $(grep '^abi' old.info | tr -s ' '), peft check $(tail -1 old.out)"
else
    bad "the ABI 1.0 binary: exit $rc; $(cat old.info | grep -i 'abi\|error' | head -2) $(tail -3 old.out) $(cat old.err)"
fi

"$PEFT" check "$BROKEN" >broken.out 2>broken.err
rc=$?
fail=$(grep '^FAIL' broken.out | head -1)
if [ $rc -eq 1 ] && [[ "$fail" == *"parameter gradients against central differences"*".bias_delta"* ]] &&
    [[ "$(tail -1 broken.out)" =~ [1-9][0-9]*\ failed$ ]]; then
    ok "a wrong backward is caught: $fail"
else
    bad "broken plugin: exit $rc; $(cat broken.out broken.err | tail -5)"
fi
"$PEFT" check "$BROKEN" --precision bf16 >broken16.out 2>&1
rc=$?
fail=$(grep '^FAIL' broken16.out | head -1)
[ $rc -eq 1 ] && [[ "$fail" == *"parameter gradients against central differences"*".bias_delta"* ]] &&
    ok "in bf16 too: $fail" || bad "broken plugin in bf16: exit $rc; $(tail -5 broken16.out)"
"$PEFT" check lora --precision half >badp.out 2>badp.err
rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <badp.err)" -eq 1 ] && grep -q -- "--precision" badp.err &&
    ok "check --precision half: $(cat badp.err)" || bad "check --precision half: exit $rc, $(cat badp.err)"


"$PEFT" check nosuch.method >missing.out 2>missing.err
rc=$?
[ $rc -eq 2 ] && [ "$(wc -l <missing.err)" -eq 1 ] && grep -q "unknown method 'nosuch.method'" missing.err &&
    ok "a plugin that does not exist: $(cat missing.err)" || bad "missing plugin: exit $rc, $(cat missing.err)"
finish
