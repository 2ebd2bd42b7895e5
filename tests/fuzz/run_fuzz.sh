#!/usr/bin/env bash
# Run every fuzz target of a fuzz build on a copy of its seed corpus for SECONDS each, under
# the sanitizers the build has. One line per target (executions, new corpus entries, and the
# crashing input if any), then "N passed, N failed".
#
# usage: tests/fuzz/run_fuzz.sh BUILD_DIR [SECONDS]   (default 60)
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}" && pwd)
seconds=${2:-60}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PEFT_PLUGIN_PATH="$build/plugins/full:$build/plugins/lora:$build/plugins/loratrf:$build/plugins/poly:$build/plugins/lota:$build/plugins/conpet"
passed=0
failed=0
for t in safetensors jsonl hf_config run_config tokenizer_json tokenizer_text; do
    exe="$build/tests/fuzz/fuzz_$t"
    [ -x "$exe" ] || { echo "FAIL fuzz_$t: not built ($exe)"; failed=$((failed + 1)); continue; }
    mkdir -p "$work/$t" "$work/$t-crash"
    (cd "$work/$t-crash" && "$exe" "$work/$t" "$here/corpus/$t" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$work/$t-crash/" \
        >"$work/$t.log" 2>&1)
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    crash=$(ls "$work/$t-crash" 2>/dev/null | head -n 1)
    if [ $rc -eq 0 ] && [ -z "$crash" ]; then
        echo "ok   fuzz_$t: ${execs:-?} executions in ${seconds} s, $(ls "$work/$t" | wc -l) corpus entries, 0 crashes"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz_$t: exit $rc, ${execs:-?} executions; input: ${crash:-none}"
        grep -E "ERROR|SUMMARY|==[0-9]+==" "$work/$t.log" | head -n 8
        [ -n "$crash" ] && { echo "  input (base64):"; base64 -w 100 "$work/$t-crash/$crash" | head -n 5; }
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
