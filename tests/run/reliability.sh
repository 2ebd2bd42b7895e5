#!/usr/bin/env bash
# What a crash, a second process or a hostile file system must not do to a run folder:
#  - an output renamed into place by another configuration's run that died before its
#    stage.json is not taken for a complete stage;
#  - two processes never share a run folder: the second says who holds it and exits 2;
#  - special files are never replaced or read as if they were regular files, and temporary
#    files an interrupted run left are removed.
#
#  - a run whose loss or gradient goes non-finite stops (exit 1, one line naming the stage and
#    step), saves nothing as complete, keeps metrics.jsonl valid JSON, and a comparison marks
#    such an arm diverged and never stars it.
#
# usage: reliability.sh PEFT JSONL_VALID
set -u
JSONL_VALID=$(realpath "$2")
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"

cat >a.ini <<'INI'
[run]
out = out
seed = 5
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 32
n_eval = 4
[stage.a]
method = lora
tasks = upper
steps = 6
batch_size = 2
INI

# ---- stale reuse ----------------------------------------------------------------------
"$PEFT" run a.ini --quiet >/dev/null 2>&1 || { echo "run A failed"; exit 1; }
cp out/a/adapter.safetensors a_adapter.safetensors
"$PEFT" run a.ini --quiet --set run.out=out_b --set stage.a.lr=0.01 >/dev/null 2>&1 || { echo "run B failed"; exit 1; }
# B died after renaming its adapter into A's folder, before its stage.json.
cp out_b/a/adapter.safetensors out/a/adapter.safetensors
"$PEFT" run a.ini >again.log 2>&1
rc=$?
if [ $rc -eq 0 ] && ! grep -q "reused" again.log && grep -q "is not the output stage.json describes" again.log &&
    cmp -s a_adapter.safetensors out/a/adapter.safetensors; then
    ok "another configuration's adapter under an old stage.json: the stage trains again, same bytes as run A"
else
    bad "stale adapter reused (exit $rc): $(cat again.log)"
fi

# ---- one process per run folder ---------------------------------------------------------
sed -e 's/^steps = 6/steps = 100000/' -e 's/^out = out/out = busy/' a.ini >long.ini
"$PEFT" run long.ini --quiet >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 100); do [ -s busy/.lock ] && break; sleep 0.1; done
"$PEFT" run long.ini --quiet >second.log 2>&1
rc=$?
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
if [ $rc -eq 2 ] && [ "$(wc -l <second.log)" -eq 1 ] &&
    grep -q "busy: in use by another peft process (pid $holder)" second.log; then
    ok "a second run on a busy folder: exit 2, $(cat second.log)"
else
    bad "second run: exit $rc: $(cat second.log)"
fi

# ---- special files and temporaries ---------------------------------------------------------
mkfifo pipe
"$PEFT" data --tasks upper --n 3 --out pipe >data.log 2>&1
rc=$?
if [ $rc -eq 2 ] && [ -p pipe ] && grep -q "pipe: exists and is not a regular file; not replaced" data.log; then
    ok "peft data --out FIFO: refused, the FIFO left as it was"
else
    bad "data --out FIFO: exit $rc, $(cat data.log), $(ls -l pipe)"
fi
n=$("$PEFT" data --tasks upper --n 3 --out - 2>/dev/null | grep -c '^{"task":"upper"')
[ "$n" -eq 3 ] && ok "peft data --out - writes JSONL to standard output" || bad "--out -: $n lines"
for what in "run pipe" "inspect pipe"; do
    # shellcheck disable=SC2086
    timeout 10 "$PEFT" $what >fifo.log 2>&1
    rc=$?
    if [ $rc -eq 2 ] && grep -q "pipe: not a regular file" fifo.log; then
        ok "peft $what: refused at once"
    else
        bad "peft $what: exit $rc (124 = blocked), $(cat fifo.log)"
    fi
done
sed 's|^n_eval = 4|n_eval = 4\nfiles = pipe|' a.ini >fifo_data.ini
timeout 10 "$PEFT" run fifo_data.ini --quiet >fifo.log 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q "\[data\] files: pipe: not a regular file" fifo.log &&
    ok "a FIFO as a data file: refused at once" || bad "FIFO data file: exit $rc, $(cat fifo.log)"

touch out/metrics.jsonl.tmp.4242.abcdef out/a/adapter.safetensors.tmp.4242.ghijkl
"$PEFT" run a.ini >tmp.log 2>&1
if grep -q "removed 2 temporary files an interrupted run left" tmp.log && ! ls out/*.tmp.* out/a/*.tmp.* >/dev/null 2>&1; then
    ok "temporary files of an interrupted run removed"
else
    bad "temporaries: $(cat tmp.log); $(ls out out/a)"
fi
# ---- divergence ------------------------------------------------------------------------
# AdamW with eps = 0 divides 0 by 0 for a gradient entry that is still zero.
for case in "eps=0|the loss is not finite (NaN)"; do
    IFS='|' read -r set want <<<"$case"
    rm -rf div
    "$PEFT" run a.ini --quiet --set run.out=div --set "stage.a.$set" >div.log 2>&1
    rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <div.log)" -eq 1 ] && grep -q "a.ini: \[stage.a\] diverged at step [0-9]*: $want" div.log &&
        [ ! -e div/a/stage.json ] && [ ! -e div/a/adapter.safetensors ] && "$JSONL_VALID" div/metrics.jsonl >/dev/null; then
        ok "$set: exit 1, $(cat div.log); nothing complete, metrics.jsonl valid"
    else
        bad "$set: exit $rc, $(cat div.log); $(ls div/a 2>&1)"
    fi
done
"$JSONL_VALID" out/metrics.jsonl out_b/metrics.jsonl >valid.log 2>&1 &&
    ok "metrics.jsonl of the runs above: $(cat valid.log)" || bad "metrics.jsonl: $(cat valid.log)"

{ cat a.ini; printf '[compare]\nout = cmp\n[arm.fine]\nstage.a.r = 4\n[arm.wild]\nstage.a.eps = 0\n'; } | sed '/^out = out/d' >cmp.ini
"$PEFT" compare cmp.ini >cmp.log 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "^| wild | \*\*diverged\*\* |" cmp/report.md && ! grep "^| wild |" cmp/report.md | grep -q "★" &&
    grep -q "^wild,[0-9]*,,,status,diverged" cmp/results.csv && grep -q "arm 'wild' diverged" cmp.log; then
    ok "peft compare: the diverged arm is marked diverged and never starred (exit 1)"
else
    bad "compare with a diverging arm: exit $rc; $(grep '^| wild' cmp/report.md 2>&1); $(tail -3 cmp.log)"
fi
finish
