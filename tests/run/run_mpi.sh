#!/usr/bin/env bash
# run_mpi: `mpirun -np N peft run FILE` trains data-parallel and gives the single process's
# result up to floating-point summation order:
#   - for lora (with grad_accum 2), lota (compact masked gradients; its index sets identical),
#     poly (per-row tasks) and full, with 2 and 3 processes (batch 8: shares 4+4 and 2+3+3),
#     the adapter agrees with one process's within the tolerance printed, and so do the
#     evaluation losses; also with the gradients' sums started layer by layer during the
#     backward (allreduce_overlap = true), and with a process that has no example (batch 2
#     over 3 processes); and for dynamic ConPET trained on the label loss with its selector's
#     auxiliary loss; and for a chain with early stopping and a merge stage;
#   - bad input gives one line and exit 2, a divergence one line and exit 1, a process that
#     does not see the run folder ends the job with one line;
#   - a process killed mid-run ends the job, leaves the last checkpoint whole and no complete
#     stage, and --resume under mpirun completes it: the adapter equals an uninterrupted run's;
#     a stage stopped under 2 processes resumes under 3 or 1 to the same adapter.
# Under PEFT_PRECISION=bf16 the bounds are bfloat16's (testlib.sh: tolerance), and LoTA is
# compared by its evaluation losses.
#   run_mpi.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
export OMPI_MCA_mpi_warn_on_fork=0
# containers often forbid the cross-process memory copy Open MPI tries first
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { mpirun -q --allow-run-as-root --oversubscribe -np "$@"; }

write() { # method, keys that add to or replace the stage's...
    local method=$1 drop="^$" k; shift
    for k in "$@"; do drop="$drop|^${k%% =*} ="; done
    base "$method" | grep -vE "$drop"
    for k in "$@"; do echo "$k"; done
}
base() {
    cat <<INI
[run]
seed = 3
[model]
d_model = 32
n_layers = 2
n_heads = 2
n_kv_heads = 1
d_ff = 64
max_seq = 40
[data]
n_train = 200
n_eval = 24
[stage.s]
method = $1
tasks = reverse add
steps = 30
batch_size = 8
lr = 1e-2
INI
}

# the largest relative difference of the float tensors, and how many integer tensors differ
apart() { "$PEFT" inspect "$1" --diff "$2" | tail -n1 | sed -n 's/.*max relative difference \([^ ;]*\).*; \([0-9]*\) integer.*/\1 \2/p'; }
# eval losses of stage.json's "after" block, one per line
losses() { sed -n '/"after"/,$p' "$1" | grep '"loss"' | sed 's/[^0-9.e+-]//g'; }
worse() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 > b + 0)}'; }

against_one() { # name, processes, tolerance, label, extra run arguments...: vs name-1
    local name=$1 n=$2 tol=$3 label=$4 out="$1-$2${5:+-x}"; shift 4
    mpi "$n" "$PEFT" run "$name.ini" --quiet --set run.out="$out" "$@" >"$out.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        bad "$label: exit $rc: $(grep '^peft:' "$out.log")"
        return
    fi
    read -r rel ints <<<"$(apart "$name-1/s/adapter.safetensors" "$out/s/adapter.safetensors")"
    # bf16: LoTA's mask comes from calibrated gradients, in which bfloat16's rounding (of dy
    # scaled by each process's share) moves entries across the cut: its index sets and so its
    # tensors may differ, and its eval losses are what is compared
    local skip_tensors=0
    [ "$BF16" = 1 ] && [ "$name" = lota ] && skip_tensors=1 && rel=0 ints=0
    local lw=0 l1 ln
    while read -r l1 ln; do
        lw=$(awk -v a="$l1" -v b="$ln" -v w="$lw" 'BEGIN {d = a - b; if (d < 0) d = -d; d /= a; print (d > w ? d : w)}')
    done < <(paste <(losses "$name-1/s/stage.json") <(losses "$out/s/stage.json"))
    local procs
    procs=$(grep -c '"count":	'"$n" "$out/s/stage.json")
    local ltol
    ltol=$(tolerance 1e-5 5e-3)
    if [ -n "$rel" ] && ! worse "$rel" "$tol" && [ "$ints" = 0 ] && ! worse "$lw" "$ltol" && [ "$procs" = 1 ]; then
        if [ "$skip_tensors" = 1 ]; then
            ok "$label (bf16): eval losses within $lw of one process's (tolerance $ltol); tensors not compared"
        else
            ok "$label: adapter within $rel of one process's (tolerance $tol)$([ "$name" = lota ] && echo ", index sets identical"), eval losses within $lw (tolerance $ltol)"
        fi
    else
        bad "$label: adapter apart by ${rel:-?} (tolerance $tol), integer tensors differing ${ints:-?}, eval losses by $lw, processes in stage.json: $procs"
    fi
}

check_method() { # name, tolerance, method, keys...
    local name=$1 tol=$2; shift 2
    write "$@" >"$name.ini"
    if ! "$PEFT" run "$name.ini" --quiet --set run.out="$name-1" >"$name-1.log" 2>&1; then
        bad "$name: the single-process run failed: $(tail -2 "$name-1.log")"
        return
    fi
    for n in 2 3; do against_one "$name" "$n" "$tol" "$name, $n processes"; done
}

check_method lora "$(tolerance 2e-5 5e-3)" lora "grad_accum = 2" "batch_size = 4"
check_method lota "$(tolerance 5e-3 5e-3)" lota "steps = 40" "calibration_steps = 10"
check_method poly "$(tolerance 5e-4 1e-2)" poly "n_skills = 2" "gumbel = false"
check_method full "$(tolerance 1e-4 3e-2)" full
# the sums started layer by layer during the backward instead of after it
against_one lora 3 "$(tolerance 2e-5 5e-3)" "lora, 3 processes, allreduce_overlap = true" --set run.allreduce_overlap=true
against_one full 2 "$(tolerance 1e-4 3e-2)" "full, 2 processes, allreduce_overlap = true" --set run.allreduce_overlap=true
against_one lota 2 "$(tolerance 5e-3 5e-3)" "lota, 2 processes, allreduce_overlap = true (masked: after the backward)" --set run.allreduce_overlap=true
# batch 2 over 3 processes: process 0 runs no example, yet takes part in every sum
check_method tiny "$(tolerance 2e-5 5e-3)" lora "batch_size = 2"
against_one tiny 3 "$(tolerance 2e-5 5e-3)" "tiny, 3 processes, allreduce_overlap = true" --set run.allreduce_overlap=true

# ConPET dynamic with its selector co-trained: the label loss split over the processes, the
# selector's auxiliary loss weighted by each process's share of the step (step_share)
cat >conpet.ini <<'INI'
[run]
seed = 3
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 32
[data]
n_train = 300
n_eval = 24
[stage.t1]
method = conpet
mode = dynamic
tasks = cls_size
eval_tasks = cls_size
eval_labels = true
train_labels = true
steps = 15
batch_size = 8
lr = 0.01
[stage.s]
method = conpet
mode = dynamic
from =
init_from = t1
tasks = cls_shape
replay_tasks = cls_size
eval_tasks = cls_size cls_shape
eval_labels = true
train_labels = true
steps = 20
batch_size = 8
lr = 0.01
INI
if "$PEFT" run conpet.ini --quiet --set run.out=conpet-1 >conpet-1.log 2>&1; then
    for n in 2 3; do against_one conpet "$n" "$(tolerance 1e-4 5e-3)" "conpet dynamic (label loss, selector), $n processes"; done
else
    bad "conpet: the single-process run failed: $(tail -2 conpet-1.log)"
fi

# A chain: early stopping (process 0 writes the best evaluation's tensors, every process
# reads them back), a second stage, and a merge of both, as one process does it
cat >chain.ini <<'INI'
[run]
seed = 5
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
max_seq = 40
[data]
n_train = 200
n_eval = 24
[stage.a]
method = lora
tasks = reverse
steps = 40
batch_size = 8
lr = 0.02
eval_every = 5
early_stopping = 2
[stage.b]
method = lora
from =
tasks = add
steps = 20
batch_size = 8
lr = 0.02
[stage.m]
merge = add
inputs = a b
output = lora
rank = 8
INI
"$PEFT" run chain.ini --quiet --set run.out=chain-1 >chain-1.log 2>&1 || bad "chain: one process failed: $(tail -2 chain-1.log)"
mpi 3 "$PEFT" run chain.ini --quiet --set run.out=chain-3 >chain-3.log 2>&1
rc=$?
best1=$(tr -d ' \t\n' <chain-1/a/stage.json | grep -o '"best_step":[0-9]*')
best3=$(tr -d ' \t\n' <chain-3/a/stage.json 2>/dev/null | grep -o '"best_step":[0-9]*')
read -r rel_a _ <<<"$(apart chain-1/a/adapter.safetensors chain-3/a/adapter.safetensors 2>/dev/null)"
read -r rel_m _ <<<"$(apart chain-1/m/adapter.safetensors chain-3/m/adapter.safetensors 2>/dev/null)"
ctol=$(tolerance 2e-5 1e-2)
if [ $rc -eq 0 ] && [ -n "$best1" ] && [ "$best1" = "$best3" ] && [ -n "$rel_a" ] && ! worse "$rel_a" "$ctol" &&
    [ -n "$rel_m" ] && ! worse "$rel_m" "$ctol" && [ ! -e chain-3/a/early-stopping-best.safetensors ]; then
    ok "chain with early stopping and a merge, 3 processes: the same best step (${best1#*:}) kept, stage a within $rel_a, the merged adapter within $rel_m (tolerance $ctol)"
else
    bad "chain, 3 processes: exit $rc, best '$best1' / '$best3', a apart ${rel_a:-?}, m apart ${rel_m:-?}: $(grep '^peft:' chain-3.log)"
fi

# ---- failures end every process with one line ------------------------------------------
write lora >f.ini
mpi 2 "$PEFT" run f.ini --set stage.s.lr=abc --set run.out=f-bad >bad.out 2>bad.err
rc=$?
[ $rc -eq 2 ] && [ "$(grep -c . bad.err)" -eq 1 ] && grep -q '^peft: f.ini (--set): \[stage.s\] lr:' bad.err &&
    ok "bad input under mpirun: exit 2, $(cat bad.err)" || bad "bad input: exit $rc, $(cat bad.err)"
mpi 2 "$PEFT" run f.ini --quiet --set stage.s.eps=0 --set run.out=f-div >div.out 2>div.err
rc=$?
[ $rc -eq 1 ] && [ "$(grep -c . div.err)" -eq 1 ] && grep -q 'diverged at step' div.err && [ ! -e f-div/s/stage.json ] &&
    ok "divergence under mpirun: exit 1, $(cat div.err)" || bad "divergence: exit $rc, $(cat div.err)"
# a process that sees another run folder than process 0 (a folder not shared between machines)
mpi 2 sh -c "\"$PEFT\" run f.ini --quiet --set run.out=f-own-\$OMPI_COMM_WORLD_RANK" >own.out 2>own.err
rc=$?
# (the failing process says why; process 0, ended under it, that the job was ended)
[ $rc -ne 0 ] && [ "$(grep -c . own.err)" -le 2 ] && head -n1 own.err | grep -q '^peft: process 1 of 2: f-own-1: not the run folder process 0 writes' &&
    ok "a run folder not shared: exit $rc, $(head -n1 own.err)" || bad "folder not shared: exit $rc, $(cat own.err)"

# ---- a process killed mid-run --------------------------------------------------------------
write lora "steps = 400" "save_every = 10" "lora_dropout = 0.1" >k.ini
mpi 2 "$PEFT" run k.ini --quiet --set run.out=k-whole >whole.log 2>&1 || bad "the uninterrupted run failed: $(tail -2 whole.log)"
mpi 2 "$PEFT" run k.ini --quiet --set run.out=k-cut >cut.log 2>&1 &
job=$!
victim=""
for _ in $(seq 600); do # until the first checkpoint is on disk
    if [ -e k-cut/s/checkpoint.json ]; then
        for pid in $(pgrep -f "run k.ini --quiet --set run.out=k-cut"); do
            tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$pid
        done
        break
    fi
    sleep 0.05
done
if [ -n "$victim" ]; then kill -9 "$victim"; fi
ended=0
for _ in $(seq 600); do kill -0 $job 2>/dev/null || { ended=1; break; }; sleep 0.1; done
wait $job
rc=$?
at=$(sed -n 's/.*"step": \([0-9]*\).*/\1/p' k-cut/s/checkpoint.json 2>/dev/null)
if [ -n "$victim" ] && [ $ended = 1 ] && [ $rc -ne 0 ] && [ ! -e k-cut/s/stage.json ] && [ -n "$at" ] && [ "$at" -lt 400 ] &&
    [ "$(grep -c . cut.log)" -eq 1 ] && grep -q '^peft: mpirun ended the job (one of its processes died' cut.log; then
    ok "process 1 killed: the job ended (exit $rc) with $(cat cut.log); the checkpoint of step $at whole, no stage complete"
else
    bad "kill: victim '${victim}', ended $ended, exit $rc, checkpoint step '${at}', $(ls k-cut/s 2>&1 | tr '\n' ' '), said: $(cat cut.log)"
fi
mpi 2 "$PEFT" run k.ini --quiet --set run.out=k-cut >again.log 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q 'continue it with --resume' again.log; then
    ok "without --resume the interrupted run is refused: $(grep '^peft:' again.log)"
else
    bad "rerun without --resume: exit $rc, $(cat again.log)"
fi
mpi 2 "$PEFT" run k.ini --quiet --resume --set run.out=k-cut >resume.log 2>&1
rc=$?
read -r rel ints <<<"$(apart k-whole/s/adapter.safetensors k-cut/s/adapter.safetensors 2>/dev/null)"
if [ $rc -eq 0 ] && [ "${rel:-x}" = 0 ] && [ ! -e k-cut/s/checkpoint.json ]; then
    ok "--resume under mpirun completed the stage from step $at: the adapter equals the uninterrupted run's (dropout on)"
else
    bad "--resume: exit $rc, apart by ${rel:-?}: $(tail -3 resume.log)"
fi
# the batches do not depend on the number of processes: a stage stopped under 2 processes
# resumes under 3 (and one) to the same adapter, up to summation order
write lora "steps = 30" "save_every = 10" >r.ini
mpi 2 "$PEFT" run r.ini --quiet --set run.out=r-whole >/dev/null 2>&1
for n in 3 1; do
    mpi 2 "$PEFT" run r.ini --quiet --set run.out=r-$n --stop-after 10 >/dev/null 2>&1
    if [ $n = 1 ]; then "$PEFT" run r.ini --quiet --resume --set run.out=r-$n >r-$n.log 2>&1
    else mpi $n "$PEFT" run r.ini --quiet --resume --set run.out=r-$n >r-$n.log 2>&1; fi
    rc=$?
    read -r rel _ <<<"$(apart r-whole/s/adapter.safetensors r-$n/s/adapter.safetensors 2>/dev/null)"
    tol=$(tolerance 2e-5 1e-3)
    if [ $rc -eq 0 ] && [ -n "$rel" ] && ! worse "$rel" "$tol"; then
        ok "stopped at step 10 under 2 processes, resumed under $n: within $rel of the uninterrupted run (tolerance $tol)"
    else
        bad "resume under $n processes: exit $rc, apart ${rel:-?}: $(grep '^peft:' r-$n.log)"
    fi
done
finish
