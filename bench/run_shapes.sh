#!/bin/sh
# The training step at real shapes, interleaved: for each round and each configuration, build A's
# bench_train, build B's, then the PyTorch reference (torch_ref.py), one after the other, so that
# the machine's noise falls on all three alike. Prints every figure (ms per step and the
# process's peak resident memory, where the build reports it) and the medians.
#
# usage: bench/run_shapes.sh A_BUILD B_BUILD [ROUNDS]     (ROUNDS default 3)
#
# Configurations (SHAPES_CONFIGS, "SHAPE:METHOD ..."): smollm2-135m:lora smollm2-135m:full
# 512x8:lora, where SHAPE is a --preset name or a --size. Batch 2 x 256 tokens (SHAPES_BATCH,
# SHAPES_SEQ), 1 warm-up and 3 timed steps (SHAPES_STEPS) per run, 2 threads (SHAPES_THREADS).
# A_BUILD may be a build of an older commit (a git worktree) to measure a change before/after.
# SHAPES_A_ARGS, SHAPES_B_ARGS and SHAPES_TORCH_ARGS add flags to one side: the same build in
# two precisions is SHAPES_A_ARGS="--precision fp32" SHAPES_B_ARGS="--precision bf16" with
# A_BUILD = B_BUILD.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
a=${1:?usage: run_shapes.sh A_BUILD B_BUILD [ROUNDS]}
b=${2:?usage: run_shapes.sh A_BUILD B_BUILD [ROUNDS]}
rounds=${3:-3}
configs=${SHAPES_CONFIGS:-smollm2-135m:lora smollm2-135m:full 512x8:lora}
threads=${SHAPES_THREADS:-2}
OPENBLAS_NUM_THREADS=$threads
export OPENBLAS_NUM_THREADS
for d in "$a" "$b"; do
    [ -x "$d/bench/bench_train" ] || { echo "run_shapes.sh: $d/bench/bench_train not found" >&2; exit 2; }
done
have_torch=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && have_torch=1
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
for r in $(seq "$rounds"); do
    for cfg in $configs; do
        shape=${cfg%%:*} method=${cfg##*:}
        case $shape in *x*) sargs="--size $shape" ;; *) sargs="--preset $shape" ;; esac
        common="$sargs --method $method --batch ${SHAPES_BATCH:-2} --seq ${SHAPES_SEQ:-256}
            --steps ${SHAPES_STEPS:-3} --warmup 1 --repeats 1 --threads $threads"
        for side in A B torch; do
            case $side in
            A | B)
                d=$a; [ $side = B ] && d=$b
                # shellcheck disable=SC2086
                extra=${SHAPES_A_ARGS:-}; [ $side = B ] && extra=${SHAPES_B_ARGS:-}
                fig=$(PEFT_PLUGIN_PATH=$d/plugins/full:$d/plugins/lora "$d/bench/bench_train" $common \
                    $extra --gemm-seconds 0.005 |
                    awk '$2 == "'"$method"'" && $1 ~ /^[0-9]+x[0-9]+$/ {print $5, ($12 == "" ? "-" : $12)}') ;;
            torch)
                [ $have_torch = 1 ] || continue
                # shellcheck disable=SC2086
                fig=$(/usr/bin/python3 "$here/torch_ref.py" $common ${SHAPES_TORCH_ARGS:-} |
                    awk '$2 == "'"$method"'" && $1 ~ /^[0-9]+x[0-9]+$/ {print $4, ($7 == "" ? "-" : $7)}') ;;
            esac
            set -- $fig
            echo "round $r  $cfg  $side  $1 ms/step  peak ${2:--} MiB"
            echo "$cfg $side $fig" >>"$out"
        done
    done
done
echo "== medians (ms/step and peak MiB; torch / X above 1 means X is faster than PyTorch)"
/usr/bin/python3 - "$out" <<'PY'
import statistics, sys
runs, peaks = {}, {}
for line in open(sys.argv[1]):
    cfg, side, ms, peak = (line.split() + ["-"])[:4]
    runs.setdefault(cfg, {}).setdefault(side, []).append(float(ms))
    if peak != "-":
        peaks.setdefault(cfg, {}).setdefault(side, []).append(float(peak))
for cfg, sides in runs.items():
    med = {s: statistics.median(v) for s, v in sides.items()}
    mem = {s: statistics.median(v) for s, v in peaks.get(cfg, {}).items()}
    line = f"{cfg:<20} A {med['A']:8.1f}  B {med['B']:8.1f}  B/A speed-up {med['A'] / med['B']:.2f}"
    if "torch" in med:
        line += (f"  torch {med['torch']:8.1f}  torch/A {med['torch'] / med['A']:.2f}"
                 f"  torch/B {med['torch'] / med['B']:.2f}")
    print(line)
    if mem:
        print(" " * 21 + "peak MiB: " + "  ".join(f"{s} {v:.0f}" for s, v in mem.items()) +
              (f"  B / torch {mem['B'] / mem['torch']:.2f}" if "B" in mem and "torch" in mem else ""))
PY
rm -f "$out"
