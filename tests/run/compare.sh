#!/usr/bin/env bash
# `peft compare` end to end on a tiny model: a shared base stage, then two stages (task A,
# task B) whose method differs per arm. Checks the report files, that two arms with identical
# settings give identical figures, that the shared stage is trained once, that a resumed
# comparison does not re-run finished arms, that a failing arm is reported, and that bad
# compare files are refused with the file, section and key named.
#
# usage: compare.sh PEFT AUX_PLUGIN
set -u
PEFT=$(realpath "$1")
AUX=$(realpath "$2")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

base() {
    cat <<'INI'
[compare]
out = cmp
[run]
seed = 3
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 64
n_eval = 8
[stage.base]
method = full
tasks = reverse
steps = 20
batch_size = 4
lr = 0.003
[stage.a]
method = lora
tasks = upper
steps = 15
batch_size = 4
lr = 0.01
[stage.b]
method = lora
tasks = shift
steps = 15
batch_size = 4
lr = 0.01
INI
}

{ base; cat <<'INI'
[arm.lora]
stage.a.r = 4
stage.b.r = 4
[arm.lora-again]
stage.a.r = 4
stage.b.r = 4
[arm.full]
stage.a.method = full
stage.b.method = full
stage.a.lr = 0.001
stage.b.lr = 0.001
INI
} >good.ini

if "$PEFT" compare good.ini --jobs 2 >run1.log 2>&1; then ok "compare ran"; else bad "compare failed: $(cat run1.log)"; fi
for f in report.md results.csv loss.svg accuracy-vs-params.svg accuracy-lora.svg accuracy-full.svg; do
    [ -s "cmp/$f" ] && ok "cmp/$f written" || bad "cmp/$f missing"
done
grep -q '★' cmp/report.md && ok "winners marked" || bad "no winner marked"
# The plots render (when a renderer is installed; their XML is checked in compare_unit).
if command -v rsvg-convert >/dev/null; then
    for f in loss accuracy-vs-params accuracy-lora; do
        if rsvg-convert "cmp/$f.svg" -o "$f.png" && [ "$(head -c 8 "$f.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ]; then
            ok "$f.svg renders to PNG ($(stat -c %s "$f.png") bytes)"
        else
            bad "$f.svg does not render"
        fi
    done
else
    echo "skip rendering: rsvg-convert not installed"
fi
grep -q '^| forgetting |' cmp/report.md && ok "forgetting rows" || bad "no forgetting row"
# Every arm's predictions after its last stage are linked, and every link opens.
links=$(grep -o '(arms/[^)]*predictions-[^)]*\.jsonl)' cmp/report.md | tr -d '()')
missing=0
for l in $links; do [ -s "cmp/$l" ] || missing=$((missing + 1)); done
arms_linked=$(grep -c '^- \*\*[a-z-]*\*\* ([a-z]*):.*predictions-' cmp/report.md)
if [ -n "$links" ] && [ $missing = 0 ] && [ "$arms_linked" = 3 ]; then
    ok "report links $(echo "$links" | wc -w) predictions files of 3 arms, all present"
else
    bad "predictions links: '$links', $missing missing, $arms_linked arms"
fi
# Identical settings, identical figures (accuracy and loss of every stage and task).
if diff <(grep '^lora,' cmp/results.csv | grep -E ',(accuracy|loss),' | cut -d, -f2-) \
        <(grep '^lora-again,' cmp/results.csv | grep -E ',(accuracy|loss),' | cut -d, -f2-) >/dev/null &&
   [ "$(grep -c '^lora,.*,accuracy,' cmp/results.csv)" -ge 5 ]; then
    ok "two arms with identical settings give identical figures"
else
    bad "identical arms differ"
fi
# The base stage is trained by the first arm only; the others copy it.
n_trained=$(grep -l '\[base\] step' cmp/arms/*/log.txt | wc -l)
[ "$n_trained" -eq 1 ] && ok "shared stage trained once" || bad "shared stage trained $n_trained times"
cmp -s cmp/arms/lora/base/adapter.safetensors cmp/arms/full/base/adapter.safetensors &&
    ok "shared stage identical in every arm" || bad "shared stage differs"

# Resuming: finished arms are not run again, and the report is the same.
cp cmp/results.csv first.csv
"$PEFT" compare good.ini >run2.log 2>&1
if [ "$(grep -c 'complete, not run again' run2.log)" -eq 3 ] && ! grep -q 'started' run2.log; then
    ok "finished arms not re-run"
else
    bad "arms re-run: $(cat run2.log)"
fi
diff <(grep -E ',(accuracy|loss),' first.csv) <(grep -E ',(accuracy|loss),' cmp/results.csv) >/dev/null &&
    ok "resumed report has the same figures" || bad "resumed report differs"

# A failing arm is reported, not hidden: the probe method fails its stage when lr = 0.
{ base | sed 's/^out = cmp/out = cmpfail/'; cat <<INI
[arm.lora]
stage.b.r = 4
[arm.broken]
stage.b.method = $AUX
stage.b.lr = 0
INI
} >fail.ini
"$PEFT" compare fail.ini >fail.log 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q '| broken | \*\*failed\*\*' cmpfail/report.md && grep -q "auxiliary loss did not fall" cmpfail/report.md &&
   grep -q '| lora | ok |' cmpfail/report.md; then
    ok "failing arm reported (exit 1, marked in the report with its reason)"
else
    bad "failing arm: status $rc; $(cat fail.log)"
fi

# Bad compare files: one line naming the file, section and key; status 2; nothing written.
refuse() { # NAME PHRASE...
    local name=$1; shift
    "$PEFT" compare "$name.ini" >"$name.out" 2>"$name.err"
    local rc=$? good=1
    [ $rc -eq 2 ] || good=0
    [ "$(wc -l <"$name.err")" -eq 1 ] || good=0
    for p in "$@"; do grep -qF -- "$p" "$name.err" || good=0; done
    [ ! -e "bad-out" ] || good=0
    if [ $good -eq 1 ]; then ok "$name refused: $(cat "$name.err")"; else bad "$name: status $rc: $(cat "$name.err")"; fi
}
base | sed 's/^out = cmp/out = bad-out/' >no_arms.ini
refuse no_arms "no_arms.ini" "no [arm.NAME] section"
{ base | sed 's/^out = cmp/out = bad-out/'; printf '[arm.only]\nstage.a.r = 2\n'; } >one_arm.ini
refuse one_arm "one_arm.ini:32:" "[arm.only]" "at least two arms"
{ base | sed 's/^out = cmp/out = bad-out/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.a.rank = 2\n'; } >unknown_key.ini
refuse unknown_key "unknown_key.ini:35:" "arm 'y'" "[stage.a] rank" "unknown key"
{ base | sed 's/^out = cmp/out = bad-out/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\ndata.n_train = 32\n'; } >other_data.ini
refuse other_data "other_data.ini:35:" "[arm.y] data.n_train" "share the model, data and seed"
{ base | sed 's/^out = cmp/out = bad-out/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.a.steps = 30\n'; } >other_budget.ini
refuse other_budget "other_budget.ini:35:" "[arm.y] stage.a.steps" "step budget"
{ base | sed 's/^out = cmp/out = bad-out/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.c.r = 2\n'; } >no_stage.ini
refuse no_stage "no_stage.ini:35:" "[arm.y] stage.c.r" "no [stage.c]"
{ base | sed 's/^out = cmp/out = bad-out/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.a.r = zero\n'; } >bad_value.ini
refuse bad_value "bad_value.ini:35:" "[stage.a] r" "expected an integer"
{ base | sed 's/^out = cmp/out = bad-out\ncolour = red/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.a.r = 3\n'; } >compare_key.ini
refuse compare_key "compare_key.ini:3:" "[compare] colour" "unknown key"

# Seeds: every arm runs once per seed (its own folder); the report gives mean ± sd and the
# paired tests against the baseline arm; the CSV keeps each seed's figures.
{ base | sed 's/^out = cmp/out = cmpseeds\nseeds = 1 2\nbaseline = r2/'; cat <<'INI'
[arm.r2]
stage.a.r = 2
stage.b.r = 2
[arm.r4]
stage.a.r = 4
stage.b.r = 4
stage.a.lr = !unset
INI
} >seeds.ini
if "$PEFT" compare seeds.ini --jobs 2 >seeds.log 2>&1; then
    ok "compare with seeds ran"
    [ -f cmpseeds/arms/r4/seed-1/b/stage.json ] && [ -f cmpseeds/arms/r4/seed-2/b/stage.json ] &&
        ok "one folder per arm and seed" || bad "seed folders: $(ls -R cmpseeds/arms | head -20)"
    grep -q 'Each arm ran with 2 seeds (1, 2' cmpseeds/report.md && grep -q '| r2 | ok | [0-9.]* ± [0-9.]* |' cmpseeds/report.md &&
        grep -q 'Δ accuracy vs r2 (pp) \[95% CI\] | p (paired t) | p (sign-flip)' cmpseeds/report.md &&
        grep -Eq '^\| r4 \| ok \|.*\| (\*\*)?[-+][0-9.]+(\*\*)? \[[-+][0-9.]+, [-+][0-9.]+\]( ★)? \| ([0-9.]+|< 0.001|-) \| ([0-9.]+|< 0.001|-) \|$' cmpseeds/report.md &&
        ok "report: means ± sd, Δ and p-values against the named baseline" || bad "seeded report: $(head -20 cmpseeds/report.md)"
    [ "$(grep -c '^r4,1,b,' cmpseeds/results.csv)" -ge 2 ] && [ "$(grep -c '^r4,2,b,' cmpseeds/results.csv)" -ge 2 ] &&
        grep -q '^r4,,,,p_sign_flip,' cmpseeds/results.csv && grep -q '^r4,,,,final_average_accuracy_pct_sd,' cmpseeds/results.csv &&
        ok "CSV: each seed's rows and the aggregates" || bad "seeded CSV: $(head -5 cmpseeds/results.csv)"
    # "!unset" takes the key out: the arm's stage a runs at the default learning rate
    sec_a() { sed -n '/^\[stage.a\]/,/^\[/p' "$1"; }
    sec_a cmpseeds/arms/r2/seed-1/run.ini | grep -q '^lr = 0.01$' && ! sec_a cmpseeds/arms/r4/seed-1/run.ini | grep -q '^lr = ' &&
        grep -q 'stage.a.lr unset' cmpseeds/report.md &&
        ok "an arm's !unset removes the key (its default applies)" || bad "!unset: $(sec_a cmpseeds/arms/r4/seed-1/run.ini)"
    # seed 1 of this comparison is the one-seed comparison run with [run] seed = 1
    grep -q '^seed = 1$' cmpseeds/arms/r2/seed-1/run.ini && grep -q '^seed = 2$' cmpseeds/arms/r2/seed-2/run.ini &&
        ok "each run's file carries its seed" || bad "run.ini seeds"
else
    bad "compare with seeds failed: $(cat seeds.log)"
fi
{ base | sed 's/^out = cmp/out = bad-out\nseeds = 1 x/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.a.r = 3\n'; } >bad_seed.ini
refuse bad_seed "bad_seed.ini:3:" "[compare] seeds" "'x' is not a positive integer"
{ base | sed 's/^out = cmp/out = bad-out\nbaseline = z/'; printf '[arm.x]\nstage.a.r = 2\n[arm.y]\nstage.a.r = 3\n'; } >bad_baseline.ini
refuse bad_baseline "bad_baseline.ini:3:" "[compare] baseline" "no arm 'z'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
