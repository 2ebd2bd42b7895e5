#!/usr/bin/env bash
# Crash tests: a chained run (full fine-tuning, LoRA with checkpoints, a merge to a LoRA by
# SVD) is killed (SIGKILL, by crash_shim.so) just before and just after each of its renames,
# fsyncs and fwrites in turn. After every kill, `peft run --resume` completes it, every adapter,
# task vector and model file is byte-identical to an uninterrupted run's, and metrics.jsonl is
# JSON on every line.
#
# usage: crash.sh PEFT CRASH_SHIM.so JSONL_VALID
set -u
JSONL_VALID=$(realpath "$3")
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"
SHIM=$(realpath "$2")
# The shim may be built with the sanitizers too; it then comes first in the library list.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

cat >chain.ini <<'INI'
[run]
seed = 11
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 32
[data]
n_train = 32
n_eval = 4
[stage.base]
method = full
tasks = upper
steps = 8
batch_size = 2
save_every = 3
[stage.adapt]
method = lora
tasks = swap
steps = 7
batch_size = 2
r = 2
lora_dropout = 0.1
save_every = 2
[stage.both]
merge = add
inputs = adapt
output = lora
rank = 2
INI

outputs() { (cd "$1" && find . -name '*.safetensors' ! -name 'checkpoint*' | sort); }

"$PEFT" run chain.ini --quiet --set run.out=ref >ref.log 2>&1 || { cat ref.log; echo "0 passed, 1 failed"; exit 1; }
PEFT_CRASH_COUNT="$TMP/count" LD_PRELOAD="$SHIM" "$PEFT" run chain.ini --quiet --set run.out=counted >/dev/null 2>&1
total=$(cat count)
[ "$total" -gt 10 ] && ok "an uninterrupted run has $total renames, fsyncs and fwrites" || bad "only $total steps counted"
ref_files=$(outputs ref)

tried=0
for when in before after; do
    for n in $(seq 1 "$total"); do
        rm -rf out
        PEFT_CRASH_AT=$n PEFT_CRASH_WHEN=$when LD_PRELOAD="$SHIM" "$PEFT" run chain.ini --quiet --set run.out=out >/dev/null 2>&1
        rc=$?
        if [ $rc -ne 137 ]; then bad "kill $when step $n: the run exited $rc, not by the kill"; continue; fi
        tried=$((tried + 1))
        if ! "$PEFT" run chain.ini --quiet --resume --set run.out=out >resume.log 2>&1; then
            bad "kill $when step $n: --resume failed: $(cat resume.log)"
            continue
        fi
        same=1
        [ "$(outputs out)" = "$ref_files" ] || same=0
        for f in $ref_files; do cmp -s "ref/$f" "out/$f" || same=0; done
        ls out/*/checkpoint* out/*.tmp.* out/*/*.tmp.* >/dev/null 2>&1 && same=0
        "$JSONL_VALID" out/metrics.jsonl >/dev/null 2>&1 || same=0
        [ $same -eq 1 ] || bad "kill $when step $n: files differ from the uninterrupted run's (or leftovers)"
    done
done
[ "$failed" -eq 0 ] && ok "$tried kills (before and after each of $total steps): every --resume completed with byte-identical outputs"
finish
