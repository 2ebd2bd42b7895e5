#!/usr/bin/env bash
# compare_mpi: `mpirun -np N peft compare FILE` spreads the arms over N processes and gives the
# same comparison as one process: every figure of results.csv but the times and memory is the
# same, for N = 2 and 3; commands other than run and compare refuse mpirun with one line.
#   compare_mpi.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
export OMPI_MCA_mpi_warn_on_fork=0
# containers often forbid the cross-process memory copy Open MPI tries first
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { mpirun -q --allow-run-as-root --oversubscribe -np "$@"; }
write() { # out folder
    cat <<INI
[compare]
seeds = 1 2
out = $1
[run]
seed = 1
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 32
[data]
n_train = 200
n_eval = 20
[stage.base]
method = full
tasks = upper
steps = 20
batch_size = 8
[stage.adapt]
method = lora
tasks = cls_size
eval_tasks = cls_size
eval_labels = true
steps = 30
batch_size = 8
lr = 0.01
[arm.r4]
stage.adapt.r = 4
[arm.r2]
stage.adapt.r = 2
[arm.r1]
stage.adapt.r = 1
[arm.ia3]
stage.adapt.method = ia3
stage.adapt.target_modules = !unset
INI
}
# the figures that do not depend on time or memory
figures() { grep -vE ',(eval_seconds|peak_rss_mib|tokens_per_second|train_seconds|wall_seconds|stage_eval_seconds|stage_tokens_per_second|stage_train_seconds)(_mean|_sd)?,' "$1" | sort; }
write one >one.ini
"$PEFT" compare one.ini >one.log 2>&1 || { cat one.log; bad "the single-process comparison failed"; finish; exit 1; }
figures one/results.csv >one.txt
acc=$(grep -c ',accuracy,' one.txt)
for n in 2 3; do
    write np$n >np$n.ini
    mpi $n "$PEFT" compare np$n.ini >np$n.log 2>&1
    rc=$?
    figures np$n/results.csv >np$n.txt 2>/dev/null
    if [ $rc -eq 0 ] && [ -s np$n/report.md ] && [ "$(sed 's/np[23]/one/g' np$n.txt)" = "$(cat one.txt)" ]; then
        ok "mpirun -np $n: the same $(wc -l <one.txt) figures as one process ($acc accuracies, r4's on seed 1 $(grep '^r4,1,adapt,cls_size,accuracy,' one.txt | cut -d, -f6))"
    else
        bad "mpirun -np $n: exit $rc; $(diff <(sed 's/np[23]/one/g' np$n.txt) one.txt | head -5) $(tail -3 np$n.log)"
    fi
done
mpi 2 "$PEFT" keys >keys.out 2>keys.err
rc=$?
[ $rc -eq 2 ] && [ "$(grep -c '^peft:' keys.err)" -eq 1 ] && grep -q 'runs as one process' keys.err &&
    ok "peft keys under mpirun: $(grep '^peft:' keys.err)" || bad "peft keys under mpirun: exit $rc, $(cat keys.err)"
finish
