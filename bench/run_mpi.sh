#!/bin/sh
# Data-parallel training on one machine: `peft run` as 1 process and as N processes under
# mpirun (one BLAS thread each), the gradient sums overlapped with the backward and after it
# (allreduce_overlap), for LoRA and full fine-tuning, interleaved (1, N, N, 1, N, N, ...) so
# that the machine's noise falls on all alike. Each run's stage.json gives the training
# seconds and tokens/s; under mpirun also the seconds process 0 spent in the gradients'
# MPI_Allreduce and the bytes it summed per step. Prints every run, then the medians.
#
# usage: bench/run_mpi.sh BUILD [ROUNDS] [N]    (ROUNDS default 3, N default 2)
# MPI_SHAPE ("512 8 8 1536": d_model n_layers n_heads d_ff), MPI_STEPS (30), MPI_BATCH (16)
# set the run.
set -eu
build=${1:?usage: run_mpi.sh BUILD [ROUNDS] [N]}
rounds=${2:-3}
procs=${3:-2}
set -- ${MPI_SHAPE:-512 8 8 1536}
d_model=$1 n_layers=$2 n_heads=$3 d_ff=$4
steps=${MPI_STEPS:-30}
batch=${MPI_BATCH:-16}
peft=$(cd "$build" && pwd)/peft
[ -x "$peft" ] || { echo "run_mpi.sh: $peft not found" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "run_mpi.sh: mpirun not found (Debian: openmpi-bin)" >&2; exit 2; }
# containers often forbid the cross-process memory copy Open MPI tries first
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_warn_on_fork=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
for method in lora full; do
    cat >"$method.ini" <<INI
[run]
seed = 1
threads = 1
[model]
d_model = $d_model
n_layers = $n_layers
n_heads = $n_heads
d_ff = $d_ff
max_seq = 64
[data]
n_train = 2000
n_eval = 8
[stage.s]
method = $method
tasks = reverse add
steps = $steps
batch_size = $batch
lr = 1e-3
INI
done
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; model ${d_model}x${n_layers}, d_ff $d_ff; batch $batch, $steps steps; 1 thread per process"
# stage.json -> "train_seconds tokens_per_second allreduce_seconds bytes_per_step"
figures() {
    tr -d '\t\n ' <"$1" | sed 's/.*"train_seconds":\([^,]*\),"tokens_per_second":\([^,]*\),.*/\1 \2/'
    if grep -q '"processes"' "$1"; then
        tr -d '\t\n ' <"$1" | sed 's/.*"allreduce_seconds":\([^,]*\),"allreduce_bytes_per_step":\([^}]*\)}.*/ \1 \2/'
    else
        printf ' 0 0'
    fi
}
for r in $(seq "$rounds"); do
    for method in lora full; do
        for side in 1 "$procs" "$procs-after"; do
            rm -rf out
            n=${side%-after}
            overlap=true
            [ "$side" = "$n" ] || overlap=false
            if [ "$n" = 1 ]; then
                "$peft" run "$method.ini" --quiet --set run.out=out >/dev/null
            else
                mpirun -q --allow-run-as-root --oversubscribe -np "$n" "$peft" run "$method.ini" \
                    --quiet --set run.out=out --set run.allreduce_overlap=$overlap >/dev/null
            fi
            line="$method $side $(figures out/s/stage.json | tr '\n' ' ')"
            echo "round $r  $line"
            echo "$line" >>runs.txt
        done
    done
done
/usr/bin/python3 - runs.txt "$steps" <<'PY'
import statistics, sys
rows = {}
steps = int(sys.argv[2])
order = []
for line in open(sys.argv[1]):
    m, side, sec, tps, ar, bps = line.split()
    if (m, side) not in rows:
        order.append((m, side))
    rows.setdefault((m, side), []).append((float(sec), float(tps), float(ar), float(bps)))
print("\n| method | processes | gradient sums | step (ms) | tokens/s | speed-up | allreduce share | MB summed per step |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for m in ("lora", "full"):
    base = None
    for side in [k[1] for k in order if k[0] == m]:
        v = rows[(m, side)]
        n = side.split("-")[0]
        how = "-" if n == "1" else ("after the backward" if side.endswith("after") else "overlapped")
        sec = statistics.median(x[0] for x in v)
        tps = statistics.median(x[1] for x in v)
        share = statistics.median(x[2] / x[0] for x in v)
        mb = statistics.median(x[3] for x in v) / 1e6
        base = base or tps
        print(f"| {m} | {n} | {how} | {1000 * sec / steps:.1f} | {tps:.0f} | {tps / base:.2f} | "
              f"{100 * share:.1f}% | {mb:.3f} |")
PY
