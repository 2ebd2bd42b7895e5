#!/usr/bin/env bash
# Merge stages, export, import and inspect from the command line.
#   1. a small chain trains two LoRAs (r 4 and r 8), a LoRATRF, a full stage and merges; its
#      adapters become the fixtures: an HF PEFT folder (peft export) and broken copies of it;
#   2. bad merge stages of every kind: each must end `peft run` with exit status 2, exactly one
#      line on stderr naming the file and the place, and no output folder;
#   3. a standalone merge of saved adapters (adapter file, task vector file, HF PEFT folder);
#   4. export / import / inspect: outputs, and refusals as one line.
#
# usage: merge_cli.sh PEFT
set -u
PEFT=$(realpath "$1")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }

model() {
    cat <<EOF
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 16
n_eval = 4
EOF
}

# ---- 1. the chain that makes the fixtures -----------------------------------------------
lora() { # NAME TASK R
    printf '[stage.%s]\nmethod = lora\nfrom = base\ntasks = %s\nsteps = 2\nbatch_size = 2\nlr = 0.05\nr = %s\n' "$1" "$2" "$3"
}
{
    printf '[run]\nout = %s/good\nseed = 1\nthreads = 1\n' "$TMP"
    model
    printf '[stage.base]\nmethod = full\ntasks = upper\nsteps = 2\nbatch_size = 2\n'
    lora a reverse 4
    lora b swap 4
    lora a8 swap 8
    printf '[stage.trf]\nmethod = loratrf\nfrom = base\ntasks = swap\nsteps = 2\nbatch_size = 2\nr = 4\n'
    printf '[stage.tv]\nmerge = ties\ninputs = a b\ndensity = 0.5\n'
    printf '[stage.both]\nmerge = add\ninputs = a b\noutput = lora\nrank = 8\n'
} >good.ini
if "$PEFT" run good.ini --quiet >good.out 2>good.err; then
    ok "the fixture chain runs"
else
    echo "FAIL the fixture chain failed: $(cat good.err)"
    echo "0 passed, 1 failed"
    exit 1
fi
for f in good/tv/task_vector.safetensors good/both/adapter.safetensors good/tv/stage.json; do
    [ -f "$f" ] && ok "wrote $f" || bad "no $f"
done
grep -q '"operator":[[:space:]]*"ties"' good/tv/stage.json &&
    grep -q '"space":[[:space:]]*"delta"' good/tv/stage.json &&
    ok "stage.json says the operator and the space" || bad "stage.json lacks the merge"

"$PEFT" export good/a hf >export.out 2>export.err && [ -f hf/adapter_config.json ] &&
    [ -f hf/adapter_model.safetensors ] && ok "export a stage folder" || bad "export: $(cat export.err)"
hf_copy() { # NAME: a copy of the HF folder to break
    rm -rf "$1"
    cp -r hf "$1"
}
hf_copy hf_ia3 && sed -i 's/"LORA"/"IA3"/' hf_ia3/adapter_config.json
hf_copy hf_loha && sed -i 's/"LORA"/"LOHA"/' hf_loha/adapter_config.json
hf_copy hf_rank && sed -i 's/"rank_pattern": {}/"rank_pattern": {"q_proj": 8}/' hf_rank/adapter_config.json
hf_copy hf_noconf && rm hf_noconf/adapter_config.json
mkdir -p empty_dir

# ---- 2. bad merge stages -------------------------------------------------------------------
# A valid run file to start each case from: merge stages are appended after a LoRA stage.
base() {
    printf '[run]\nout = %s/out\nseed = 1\n' "$TMP"
    model
    printf '[stage.a]\nmethod = lora\ntasks = upper\nsteps = 2\nbatch_size = 2\n'
    printf '[stage.b]\nmethod = lora\nfrom =\ntasks = reverse\nsteps = 2\nbatch_size = 2\n'
    printf '[stage.m]\n'
}
# [stage.m] is line 24 of each case; its keys start at line 25.
check() { # NAME PHRASE... (the run file is NAME.ini)
    local name=$1 ok=1 why=""
    shift
    rm -rf "$TMP/out"
    "$PEFT" run "$name.ini" --quiet >"$name.out" 2>"$name.err"
    local rc=$? lines
    lines=$(wc -l <"$name.err")
    [ "$rc" -eq 2 ] || { ok=0; why="exit status $rc, expected 2"; }
    [ "$lines" -eq 1 ] || { ok=0; why="$why; $lines lines on stderr, expected 1"; }
    for phrase in "$@"; do
        grep -qF -- "$phrase" "$name.err" || { ok=0; why="$why; missing '$phrase'"; }
    done
    [ -e "$TMP/out" ] && { ok=0; why="$why; output folder was written"; }
    if [ $ok -eq 1 ]; then
        passed=$((passed + 1))
        printf 'ok   %-20s %s\n' "$name" "$(cat "$name.err")"
    else
        failed=$((failed + 1))
        printf 'FAIL %-20s %s\n     got: %s\n' "$name" "$why" "$(head -c 600 "$name.err")"
    fi
}
case_() { # NAME then the stage's lines on stdin
    { base; cat; } >"$1.ini"
}

# The valid base with a valid merge must run (otherwise the cases prove nothing).
printf 'merge = add\ninputs = a b\n' | case_ valid
if "$PEFT" run valid.ini --quiet >valid.out 2>valid.err; then ok "valid merge stage"; else bad "valid merge stage: $(cat valid.err)"; fi
rm -rf "$TMP/out"

printf 'merge = add\ninputs = a b\nsteps = 10\n' | case_ unknown_key
check unknown_key "unknown_key.ini:27:" "[stage.m] steps" "unknown key" "merge, space, inputs"
printf 'merge = blend\ninputs = a b\n' | case_ bad_op
check bad_op "bad_op.ini:25:" "[stage.m] merge" "add|task_arithmetic|additive|negate"
printf 'merge = add\nspace = weird\ninputs = a b\n' | case_ bad_space
check bad_space "bad_space.ini:26:" "[stage.m] space" "delta|factor"
printf 'merge = add\n' | case_ no_inputs
check no_inputs "no_inputs.ini:24:" "[stage.m] inputs" "missing"
printf 'merge = add\ninputs = a nosuch\n' | case_ unknown_input
check unknown_input "unknown_input.ini:26:" "[stage.m] inputs" "'nosuch' is neither an earlier stage nor an existing file"
{ printf 'merge = add\ninputs = a later\n'; printf '[stage.later]\nmethod = lora\ntasks = upper\n'; } | case_ later_input
check later_input "later_input.ini:26:" "[stage.m] inputs" "'later' is this stage or a later one"
printf 'merge = add\ninputs = a b\nweights = 1\n' | case_ weights_count
check weights_count "weights_count.ini:27:" "[stage.m] weights" "1 weight for 2 inputs"
printf 'merge = add\ninputs = a b\nweights = 1 x\n' | case_ weights_nan
check weights_nan "weights_nan.ini:27:" "[stage.m] weights" "'x' is not a number"
printf 'merge = ties\nspace = factor\ninputs = a b\ndensity = 0.5\n' | case_ factor_ties
check factor_ties "factor_ties.ini:25:" "[stage.m] merge" "factor space has add and negate only"
printf 'merge = add\nspace = factor\ninputs = a b\nweights = 0 0\n' | case_ factor_zero
check factor_zero "factor_zero.ini:28:" "[stage.m] weights" "they are all 0"
printf 'merge = add\ninputs = a b\noutput = lora\n' | case_ lora_no_rank
check lora_no_rank "lora_no_rank.ini:24:" "[stage.m] rank" "required with output = lora"
printf 'merge = add\ninputs = a b\nrank = 4\n' | case_ rank_unused
check rank_unused "rank_unused.ini:27:" "[stage.m] rank" "only used with output = lora"
printf 'merge = add\nspace = factor\ninputs = a b\noutput = lora\nrank = 4\n' | case_ factor_lora
check factor_lora "factor_lora.ini:28:" "[stage.m] output" "adapter|model"
printf 'merge = ties\ninputs = a b\n' | case_ ties_no_density
check ties_no_density "ties_no_density.ini:24:" "[stage.m] density" "required by merge = ties"
printf 'merge = dare_linear\ninputs = a b\ndensity = 0\n' | case_ density_zero
check density_zero "density_zero.ini:27:" "[stage.m] density" "above 0"
printf 'merge = dare_ties\ninputs = a b\ndensity = 1.5\n' | case_ density_big
check density_big "density_big.ini:27:" "[stage.m] density" "[0, 1]"
printf 'merge = add\ninputs = a b\ndensity = 0.5\n' | case_ density_unused
check density_unused "density_unused.ini:27:" "[stage.m] density" "only used by"
printf 'merge = dare_linear\ninputs = a b\ndensity = 0.5\nsign = total\n' | case_ sign_unused
check sign_unused "sign_unused.ini:28:" "[stage.m] sign" "only used by ties and dare_ties"
printf 'merge = ties\ninputs = a b\ndensity = 0.5\nsign = majority\n' | case_ sign_bad
check sign_bad "sign_bad.ini:28:" "[stage.m] sign" "total|frequency"
printf 'merge = add\nspace = factor\ninputs = a b\nlambda = 2\n' | case_ lambda_factor
check lambda_factor "lambda_factor.ini:28:" "[stage.m] lambda" "only used in space = delta"
printf 'merge = add\nmethod = lora\ninputs = a b\n' | case_ method_and_merge
check method_and_merge "method_and_merge.ini:26:" "[stage.m] method" "trains a method or merges"
printf 'merge = add\ninputs = a b\nfrom = nostage\n' | case_ bad_from
check bad_from "bad_from.ini:27:" "[stage.m] from" "no earlier stage named 'nostage'"
printf 'merge = add\ninputs = %s/good/a/adapter.safetensors\nfrom =\n' "$TMP" | case_ files_no_tasks
check files_no_tasks "files_no_tasks.ini:24:" "[stage.m] eval_tasks" "needed"

# Inputs checked against each other and the model before anything is written.
printf 'merge = add\ninputs = a %s/good/a/adapter.safetensors\nspace = factor\n' "$TMP" | case_ factor_keys
check factor_keys "factor_keys.ini:26:" "[stage.m] inputs" "differ in r (8 vs 4)" "factor space needs one configuration"
printf 'merge = add\ninputs = a %s/good/trf/adapter.safetensors\nspace = factor\n' "$TMP" | case_ factor_methods
check factor_methods "factor_methods.ini:26:" "[stage.m] inputs" "lora" "loratrf" "different methods"
printf 'merge = add\ninputs = %s/good/trf/adapter.safetensors a\nspace = factor\n' "$TMP" | case_ factor_feature
check factor_feature "factor_feature.ini:26:" "[stage.m] inputs" "loratrf" "no feature 'factor-merge'" "use space = delta"
printf 'merge = add\ninputs = a %s/good/base/adapter.safetensors\nspace = factor\n' "$TMP" | case_ factor_full
check factor_full "factor_full.ini:26:" "[stage.m] inputs" "changes the base weights" "use space = delta"
printf 'merge = add\ninputs = %s/good/tv/task_vector.safetensors\nspace = factor\neval_tasks = upper\n' "$TMP" | case_ factor_tv
check factor_tv "factor_tv.ini:26:" "[stage.m] inputs" "a task vector, not an adapter"
printf 'merge = add\ninputs = a %s/good/trf/adapter.safetensors\n' "$TMP" | case_ delta_trf
check delta_trf "delta_trf.ini:26:" "[stage.m] inputs" "loratrf" "no fixed ΔW"
printf 'merge = add\ninputs = a %s/hf_ia3\n' "$TMP" | case_ hf_ia3
check hf_ia3 "hf_ia3.ini:26:" "[stage.m] inputs" "peft_type 'IA3': only LORA adapters are read"
printf 'merge = add\ninputs = a %s/hf_rank\n' "$TMP" | case_ hf_rank
check hf_rank "hf_rank.ini:26:" "[stage.m] inputs" "rank_pattern" "per-module ranks are not supported"
printf 'merge = add\ninputs = a %s/hf_noconf\n' "$TMP" | case_ hf_noconf
check hf_noconf "hf_noconf.ini:26:" "[stage.m] inputs" "folder without adapter_config.json"
printf 'merge = add\ninputs = a %s/empty_dir\n' "$TMP" | case_ empty_dir
check empty_dir "empty_dir.ini:26:" "[stage.m] inputs" "folder without"
printf 'merge = add\ninputs = a %s/good/base/model/model.safetensors\n' "$TMP" | case_ not_adapter
check not_adapter "not_adapter.ini:26:" "[stage.m] inputs" "neither a peftkit adapter"
# An HF adapter made for another model: its shapes disagree with this one's.
{ base | sed 's/^d_model = 16/d_model = 24/'; printf 'merge = add\ninputs = a %s/hf\n' "$TMP"; } >hf_shape.ini
check hf_shape "hf_shape.ini:26:" "[stage.m] inputs" "has shape [4, 16], the model needs [4, 24]"

# A factor-space merge of LoRAs trained from different initialisations (another init_seed)
# is refused when it runs, with one line that says why and what to do instead; the same
# inputs in delta space merge.
mixed() { # SPACE
    printf '[run]\nout = %s/mixed\nseed = 1\nthreads = 1\n' "$TMP"
    model
    printf '[stage.a]\nmethod = lora\ntasks = upper\nsteps = 2\nbatch_size = 2\n'
    printf '[stage.b]\nmethod = lora\ntasks = reverse\nsteps = 2\nbatch_size = 2\ninit_seed = 5\n'
    printf '[stage.m]\nmerge = add\nspace = %s\ninputs = a b\n' "$1"
}
mixed factor >mixed_factor.ini
rm -rf "$TMP/mixed"
"$PEFT" run mixed_factor.ini --quiet >mixed.out 2>mixed.err
rc=$?
if [ "$rc" -ne 0 ] && [ "$(wc -l <mixed.err)" -eq 1 ] && grep -q "different initialisations" mixed.err &&
    grep -q "init_seed" mixed.err && grep -q "space = delta" mixed.err && [ ! -e mixed/m/adapter.safetensors ]; then
    ok "mixed-init factor merge refused: $(cat mixed.err)"
else
    bad "mixed-init factor merge: exit $rc, stderr: $(cat mixed.err)"
fi
mixed delta >mixed_delta.ini
rm -rf "$TMP/mixed"
"$PEFT" run mixed_delta.ini --quiet >mixed.out 2>mixed.err &&
    ok "the same inputs merge in delta space" || bad "delta merge of mixed inits: $(cat mixed.err)"

# ---- 3. a standalone merge of saved adapters ----------------------------------------------
{
    printf '[run]\nout = %s/saved\nthreads = 1\n' "$TMP"
    printf '[model]\npath = %s/good/base/model\n[data]\nn_train = 16\nn_eval = 4\n' "$TMP"
    printf '[stage.m]\nmerge = dare_ties\ninputs = %s/hf %s/good/b/adapter.safetensors %s/good/tv\n' "$TMP" "$TMP" "$TMP"
    printf 'weights = 1 0.5 -1\ndensity = 0.5\noutput = model\neval_tasks = reverse swap\n'
} >saved.ini
if "$PEFT" run saved.ini --quiet >saved.out 2>saved.err && [ -f saved/m/model/model.safetensors ] &&
    [ -f saved/m/stage.json ]; then
    ok "a standalone merge of an HF folder, an adapter file and a task vector"
else
    bad "standalone merge: $(cat saved.err)"
fi

# ---- 4. export / import / inspect ------------------------------------------------------------
"$PEFT" import hf back.safetensors >import.out 2>import.err && ok "import" || bad "import: $(cat import.err)"
"$PEFT" inspect back.safetensors >inspect.out 2>&1
grep -q '^adapter   method lora 1.0.0, plugin ABI 1' inspect.out &&
    grep -q '^  peft.method_config:$' inspect.out &&
    grep -q '^  base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight  F32    \[4, 16\]  256$' inspect.out &&
    ok "inspect an imported adapter" || bad "inspect: $(cat inspect.out)"
"$PEFT" inspect hf >inspect_hf.out 2>&1
grep -q '"peft_type": "LORA"' inspect_hf.out && grep -q '^tensors   4, 1024 bytes$' inspect_hf.out &&
    ok "inspect an HF folder" || bad "inspect hf: $(cat inspect_hf.out)"
"$PEFT" inspect good/tv >inspect_tv.out 2>&1
grep -q '^kind      task_vector$' inspect_tv.out && grep -q '^  peft.merge: ties$' inspect_tv.out &&
    ok "inspect a task vector" || bad "inspect tv: $(cat inspect_tv.out)"

refuse() { # NAME PHRASE -- ARGS...
    local name=$1 phrase=$2
    shift 3
    "$PEFT" "$@" >"$name.out" 2>"$name.err"
    local rc=$? lines
    lines=$(wc -l <"$name.err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$phrase" "$name.err"; then
        ok "$name: $(cat "$name.err")"
    else
        bad "$name: exit $rc, $lines lines: $(head -c 400 "$name.err")"
    fi
}
refuse export_full "only LoRA-shaped adapters are exported" -- export good/base hf_full
refuse export_trf "is not a LoRA factor" -- export good/trf hf_trf
refuse export_missing "cannot open" -- export nosuch.safetensors hf_x
# an IA3 folder imports as ia3; this one is a LoRA folder relabelled, which lacks IA3's keys
refuse import_ia3 "feedforward_modules: expected a list" -- import hf_ia3 x.safetensors
refuse import_loha "peft_type 'LOHA'" -- import hf_loha x.safetensors
refuse import_notdir "not a folder" -- import nosuch x.safetensors
refuse inspect_missing "nosuch.safetensors" -- inspect nosuch.safetensors
refuse inspect_args "give one safetensors file" -- inspect
[ ! -e hf_full ] && [ ! -e hf_trf ] && [ ! -e x.safetensors ] && ok "refusals wrote nothing" ||
    bad "a refused command wrote output"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
