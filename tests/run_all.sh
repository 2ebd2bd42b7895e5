#!/usr/bin/env bash
# The whole test suite: a warnings-as-errors build and an ASan+UBSan build, each running
# every test (the warnings-as-errors build also runs the suites that make runs again with
# precision = bf16), then the fuzz targets in a clang build. Ends with one line "N passed, N failed"
# counting all three.
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

tally() { # build folder [setup]: add its last test log's results to the totals
    local log="$1/meson-logs/testlog${2:+-$2}.json"
    if [ -f "$log" ]; then
        read -r p f < <(count "$log")
        passed=$((passed + p))
        failed=$((failed + f))
        [ "$f" -eq 0 ] || status=1
    else
        echo "no test log in $1${2:+ (setup $2)}"
        failed=$((failed + 1))
        status=1
    fi
}

run_setup() { # name, meson options...
    local dir=$1; shift
    if [ -d "$dir" ]; then
        meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    else
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    fi
}

run_build() { # name, meson options...
    local dir=$1; shift
    echo "== build $dir ($*)"
    run_setup "$dir" "$@" || return 1
    ninja -C "$dir" >"$dir.build.log" 2>&1 || { tail -n 60 "$dir.build.log"; return 1; }
    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --num-processes "$jobs" --print-errorlogs "${MESON_TEST_ARGS[@]}"
    return 0
}

MESON_TEST_ARGS=()
for spec in "build-werror|--werror|-Dbuildtype=debugoptimized" \
            "build-asan|--werror|-Db_sanitize=address,undefined|-Dbuildtype=debug|-Dmpi=disabled"; do
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
    tally "$dir"
    if [ "$dir" = build-werror ]; then
        # the suites whose tests make runs (peft run, eval, generate), again on the bf16
        # model: PEFT_PRECISION=bf16 through the test setup of meson.build
        echo "== $dir: the run, merge and loader suites with precision = bf16"
        rm -f "$dir/meson-logs/testlog-bf16.json"
        meson test -C "$dir" --setup bf16 --suite run --suite merge --suite loader --no-suite precision \
            --num-processes "$jobs" --print-errorlogs
        tally "$dir" bf16
    fi
done
# The fuzz build (clang, libFuzzer, ASan+UBSan): each target on its seed corpus for
# FUZZ_SECONDS (default 30); tests/fuzz/run_fuzz.sh counts one test per target.
if command -v clang >/dev/null 2>&1; then
    echo "== build build-fuzz (clang, libFuzzer, ASan+UBSan)"
    if CC=clang run_setup build-fuzz -Dfuzz=true -Dmpi=disabled -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbuildtype=debugoptimized --werror && ninja -C build-fuzz tests/fuzz/fuzz_safetensors \
        tests/fuzz/fuzz_jsonl tests/fuzz/fuzz_hf_config tests/fuzz/fuzz_run_config \
        tests/fuzz/fuzz_tokenizer_json tests/fuzz/fuzz_tokenizer_text \
        plugins/full/peft-full.so plugins/lora/peft-lora.so plugins/loratrf/peft-loratrf.so \
        plugins/poly/peft-poly.so plugins/lota/peft-lota.so plugins/conpet/peft-conpet.so \
        >build-fuzz.build.log 2>&1; then
        tests/fuzz/run_fuzz.sh build-fuzz "${FUZZ_SECONDS:-30}" | tee build-fuzz.fuzz.log
        read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' build-fuzz.fuzz.log | tail -n 1)
        passed=$((passed + ${p:-0}))
        failed=$((failed + ${f:-1}))
        [ "${f:-1}" -eq 0 ] || status=1
    else
        tail -n 40 build-fuzz.build.log
        echo "build build-fuzz failed"
        failed=$((failed + 1))
        status=1
    fi
else
    echo "clang not found: the fuzz targets were not run (apt-get install clang libclang-rt-14-dev)"
    failed=$((failed + 1))
    status=1
fi

echo "$passed passed, $failed failed"
exit $status
