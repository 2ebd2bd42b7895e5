#!/bin/sh
# Run the training-step benchmark in C (bench_train) and, when Debian's torch is importable, the
# PyTorch reference (torch_ref.py) with the same sizes and threads, then print them side by side.
# Builds nothing.
#
# usage: bench/run_bench.sh [BUILD_DIR]            (default: build)
#
# Settings come from the environment:
#   BENCH_SIZES    "128x4 256x4 512x6"   d_model x n_layers
#   BENCH_THREADS  2                     threads: the host's workers (C), OpenBLAS and intra-op threads (torch)
#   BENCH_STEPS    6                     timed steps per repeat
#   BENCH_REPEATS  3                     repeats (the median is reported)
#   BENCH_WARMUP   2                     untimed steps first
#   BENCH_BATCH    8,  BENCH_SEQ 64      batch shape
#   BENCH_OUT      a new temporary dir   where c.json and torch.json are written
#   BENCH_TORCH    1                     0 skips the torch reference
# OPENBLAS_CORETYPE, OMP_WAIT_POLICY and the like pass through untouched; the kernel that ran is
# printed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
exe=$build/bench/bench_train
py=/usr/bin/python3

if [ ! -x "$exe" ]; then
    echo "run_bench.sh: $exe not found; build it first:" >&2
    echo "  ninja -C $build bench/bench_train plugins/full/peft-full.so plugins/lora/peft-lora.so plugins/lota/peft-lota.so" >&2
    exit 2
fi

sizes=${BENCH_SIZES:-128x4 256x4 512x6}
threads=${BENCH_THREADS:-2}
steps=${BENCH_STEPS:-6}
repeats=${BENCH_REPEATS:-3}
warmup=${BENCH_WARMUP:-2}
batch=${BENCH_BATCH:-8}
seq=${BENCH_SEQ:-64}
out=${BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/peft-bench.XXXXXX")}
mkdir -p "$out"

PEFT_PLUGIN_PATH=${PEFT_PLUGIN_PATH:-$build/plugins/full:$build/plugins/lora:$build/plugins/lota}
OPENBLAS_NUM_THREADS=$threads
export PEFT_PLUGIN_PATH OPENBLAS_NUM_THREADS

size_args=
for s in $sizes; do size_args="$size_args --size $s"; done
common="--batch $batch --seq $seq --steps $steps --repeats $repeats --warmup $warmup --threads $threads"

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== C: $exe"
# shellcheck disable=SC2086
"$exe" $size_args $common --json "$out/c.json"

torch_json=
if [ "${BENCH_TORCH:-1}" != 0 ] && "$py" -c 'import torch' 2>/dev/null; then
    echo
    echo "== torch: $here/torch_ref.py"
    # shellcheck disable=SC2086
    "$py" "$here/torch_ref.py" $size_args $common --json "$out/torch.json"
    torch_json=$out/torch.json
else
    echo
    echo "== torch: skipped ($py cannot import torch, or BENCH_TORCH=0)"
fi

echo
echo "== side by side (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
# shellcheck disable=SC2086
"$py" "$here/compare.py" "$out/c.json" $torch_json
core=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["openblas_corename"])' "$out/c.json")
echo
echo "OpenBLAS kernel that ran: $core (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})."
case $core in
    [Pp]rescott)
        echo "Debian's OpenBLAS 0.3.21 does not recognise this CPU and uses its generic SSE3"
        echo "kernels; OPENBLAS_CORETYPE=SkylakeX (or Haswell) selects the AVX-512 (AVX2) ones." ;;
esac
echo "figures: $out/c.json${torch_json:+ $torch_json}"
