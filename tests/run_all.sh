#!/usr/bin/env bash
# The whole test suite: a warnings-as-errors build and an ASan+UBSan build, each running
# every test. Ends with one line "N passed, N failed" counting both builds.
set -u
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0
status=0

count() { # testlog.json (one JSON object per test) -> "passed failed"
    awk '/"result": "(OK|EXPECTEDFAIL)"/ {p++; next}
         /"result": "SKIP"/ {next}
         /"result": / {f++}
         END {print p+0, f+0}' "$1"
}

run_build() { # name, meson options...
    local dir=$1; shift
    echo "== build $dir ($*)"
    if [ -d "$dir" ]; then
        meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    else
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    fi
    ninja -C "$dir" >"$dir.build.log" 2>&1 || { tail -n 60 "$dir.build.log"; return 1; }
    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --num-processes "$jobs" --print-errorlogs "${MESON_TEST_ARGS[@]}"
    return 0
}

MESON_TEST_ARGS=()
for spec in "build-werror|--werror|-Dbuildtype=debugoptimized" \
            "build-asan|--werror|-Db_sanitize=address,undefined|-Dbuildtype=debug"; do
    IFS='|' read -r dir opts <<<"$spec"
    IFS='|' read -r -a optarr <<<"$opts"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    if ! run_build "$dir" "${optarr[@]}"; then
        echo "build $dir failed"
        failed=$((failed + 1))
        status=1
        continue
    fi
    if [ -f "$dir/meson-logs/testlog.json" ]; then
        read -r p f < <(count "$dir/meson-logs/testlog.json")
        passed=$((passed + p))
        failed=$((failed + f))
        [ "$f" -eq 0 ] || status=1
    else
        echo "no test log in $dir"
        failed=$((failed + 1))
        status=1
    fi
done
echo "$passed passed, $failed failed"
exit $status
