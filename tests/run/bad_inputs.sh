#!/usr/bin/env bash
# Bad input of every kind, one row per case: each must end `peft run` with exit status 2,
# exactly one line on stderr naming the file and the place (section/key or line), no crash,
# and no output folder written.
#
# usage: bad_inputs.sh PEFT BAD_ABI_PLUGIN
set -u
PEFT=$(realpath "$1")
BAD_ABI=$2
FIX="$PEFT_SOURCE_ROOT/tests/fixtures"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
passed=0
failed=0

# A valid run to start each case from.
base() {
    cat <<EOF
[run]
out = $TMP/out
seed = 1
[model]
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 40
[data]
n_train = 16
n_eval = 4
[stage.a]
method = lora
tasks = upper
steps = 2
batch_size = 2
EOF
}

# check NAME EXPECTED_PHRASE... : runs "$PEFT run NAME.ini $EXTRA_ARGS"
check() {
    local name=$1; shift
    rm -rf "$TMP/out"
    "$PEFT" run "$name.ini" --quiet "${EXTRA_ARGS[@]}" >"$name.out" 2>"$name.err"
    local rc=$? ok=1 why=""
    local lines
    lines=$(wc -l <"$name.err")
    [ "$rc" -eq 2 ] || { ok=0; why="exit status $rc, expected 2"; }
    [ "$lines" -eq "${LINES:-1}" ] || { ok=0; why="$why; $lines lines on stderr, expected ${LINES:-1}"; }
    for phrase in "$@"; do
        grep -qF -- "$phrase" "$name.err" || { ok=0; why="$why; missing '$phrase'"; }
    done
    if [ -e "$TMP/out" ]; then ok=0; why="$why; output folder was written"; fi
    if [ $ok -eq 1 ]; then
        passed=$((passed + 1))
        printf 'ok   %-22s %s\n' "$name" "$(cat "$name.err")"
    else
        failed=$((failed + 1))
        printf 'FAIL %-22s %s\n     got: %s\n' "$name" "$why" "$(head -c 600 "$name.err")"
    fi
    EXTRA_ARGS=()
}
EXTRA_ARGS=()

# The valid base itself must run (otherwise every case below proves nothing).
base >good.ini
if "$PEFT" run good.ini --quiet >good.out 2>good.err; then
    echo "ok   good run"
    rm -rf "$TMP/out"
else
    echo "FAIL the valid base run failed: $(cat good.err)"
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- the run file --------------------------------------------------------------------
{ base; printf '[colour]\nx = 1\n'; } >unknown_section.ini
check unknown_section "unknown_section.ini:" "[colour]" "unknown section"

{ base | sed 's/^seed = 1/sed = 1/'; } >unknown_run_key.ini
check unknown_run_key "unknown_run_key.ini:3:" "[run] sed" "unknown key"

{ base; echo "rank = 8"; } >unknown_stage_key.ini
check unknown_stage_key "unknown_stage_key.ini:18:" "[stage.a] rank" "unknown key"

{ base | sed 's/^steps = 2/steps = ten/'; } >bad_integer.ini
check bad_integer "bad_integer.ini:16:" "[stage.a] steps" "expected an integer"

{ base; echo "lr = 1e-3x"; } >bad_float.ini
check bad_float "bad_float.ini:18:" "[stage.a] lr" "expected a number"

{ base | sed 's/^batch_size = 2/batch_size = 0/'; } >zero_batch.ini
check zero_batch "zero_batch.ini:17:" "[stage.a] batch_size"

{ base; echo "schedule = wavy"; } >bad_choice.ini
check bad_choice "bad_choice.ini:18:" "[stage.a] schedule" "cosine|linear|constant"

{ base; echo "r = abc"; } >bad_method_int.ini
check bad_method_int "bad_method_int.ini:18:" "[stage.a] r" "expected"

{ base; echo "use_rslora = maybe"; } >bad_method_bool.ini
check bad_method_bool "bad_method_bool.ini:18:" "[stage.a] use_rslora"

{ base; echo "r = 0"; } >lora_rank_zero.ini
check lora_rank_zero "lora_rank_zero.ini:13:" "[stage.a]" "r must be"

{ base; echo "lora_dropout = 1.5"; } >lora_dropout.ini
check lora_dropout "lora_dropout.ini:13:" "[stage.a]" "lora_dropout"

{ base; echo "target_modules = nothing_proj"; } >no_target.ini
check no_target "no_target.ini:13:" "[stage.a]" "nothing_proj" "matches no site"

{ base | sed 's/^method = lora/method = nosuch/'; } >unknown_method.ini
check unknown_method "unknown_method.ini:14:" "[stage.a] method" "unknown method 'nosuch'"

{ base | sed '/^method = lora/d'; } >missing_method.ini
check missing_method "missing_method.ini:13:" "[stage.a] method" "missing"

{ base; printf '[stage.b]\nmethod = lora\ntasks = upper\nfrom = nostage\n'; } >unknown_from.ini
check unknown_from "unknown_from.ini:21:" "[stage.b] from" "nostage"

{ base | sed 's/^tasks = upper/tasks = upper nosuchtask/'; } >unknown_task.ini
check unknown_task "unknown_task.ini:15:" "[stage.a] tasks" "unknown task 'nosuchtask'"

{ base | sed '/^tasks = upper/d'; } >missing_tasks.ini
check missing_tasks "missing_tasks.ini:13:" "[stage.a] tasks" "missing"

{ base | sed '/^\[stage.a\]/,$d'; } >no_stage.ini
check no_stage "no_stage.ini" "no [stage.NAME] section"

{ base; echo "this line is not ini"; } >syntax.ini
check syntax "syntax.ini:18:" "syntax error"

{ base; echo "steps = 3"; } >duplicate_key.ini
check duplicate_key "duplicate_key.ini:18:" "[stage.a] steps" "given twice"

check missing_file "missing_file.ini" "cannot open"

{ base | sed 's/^n_heads = 2/n_heads = 2\nn_kv_heads = 3/'; } >bad_heads.ini
check bad_heads "bad_heads.ini" "[model]" "n_kv_heads"

{ base | sed 's/^method = lora/method = loratrf/'; printf '[stage.b]\nmethod = lora\ntasks = upper\n'; } >from_unfoldable.ini
check from_unfoldable "from_unfoldable.ini:18:" "[stage.b] from" "stage 'a' (loratrf) cannot be folded"

{ base; printf 'eval_tasks = upper%0250d\n' 0; } >long_line.ini
check long_line "long_line.ini:18:" "line too long"

{ base; echo "replay = 0.5"; } >replay_alone.ini
check replay_alone "replay_alone.ini:18:" "[stage.a] replay" "replay_tasks"

{ base; echo "replay_tasks = upper"; } >replay_overlap.ini
check replay_overlap "replay_overlap.ini:18:" "[stage.a] replay_tasks" "also in tasks"

# ---- overrides -------------------------------------------------------------------------
base >set_unknown.ini
EXTRA_ARGS=(--set colour.x=1)
check set_unknown "set_unknown.ini (--set)" "[colour]" "unknown section"

base >set_malformed.ini
EXTRA_ARGS=(--set steps=3)
check set_malformed "--set steps=3" "section.key=value"

base >set_bad_value.ini
EXTRA_ARGS=(--set stage.a.steps=-1)
check set_bad_value "set_bad_value.ini (--set)" "[stage.a] steps"

# ---- data files ------------------------------------------------------------------------
{ base | sed 's/^n_eval = 4/n_eval = 4\nfiles = nothere.jsonl/'; } >missing_jsonl.ini
check missing_jsonl "missing_jsonl.ini:13:" "[data] files" "nothere.jsonl" "cannot open"

printf '{"task":"t","prompt":"a=","completion":"b"}\n{"task":"t","prompt":"a=", "completion":\n' >broken.jsonl
{ base | sed "s|^n_eval = 4|n_eval = 4\nfiles = $TMP/broken.jsonl|"; } >bad_jsonl.ini
check bad_jsonl "bad_jsonl.ini:13:" "[data] files" "broken.jsonl:2:"

printf '{"task":"t","prompt":"a="}\n' >nocompletion.jsonl
{ base | sed "s|^n_eval = 4|n_eval = 4\nfiles = $TMP/nocompletion.jsonl|"; } >jsonl_field.ini
check jsonl_field "jsonl_field.ini:13:" "nocompletion.jsonl:1:" "completion"

# ---- model files -----------------------------------------------------------------------
model_case() { # NAME DIR: a run whose [model] is path = DIR
    base | sed "/^d_model/d;/^n_layers/d;/^n_heads/d;/^d_ff/d;/^max_seq/d;s|^\[model\]|[model]\npath = $2|" >"$1.ini"
}
model_case no_model_dir "$TMP/nomodel"
check no_model_dir "no_model_dir.ini:5:" "[model] path" "config.json"

mkdir -p trunc && cp "$FIX/hf_f16_v4_gqa/config.json" trunc/ &&
    head -c 1000 "$FIX/hf_f16_v4_gqa/model.safetensors" >trunc/model.safetensors
model_case truncated_weights "$TMP/trunc"
check truncated_weights "truncated_weights.ini:5:" "model.safetensors"

mkdir -p shape && cp "$FIX/hf_f16_v4_gqa/model.safetensors" shape/ &&
    sed 's/"intermediate_size": *\([0-9]*\)/"intermediate_size": 999/' "$FIX/hf_f16_v4_gqa/config.json" >shape/config.json
model_case shape_mismatch "$TMP/shape"
check shape_mismatch "shape_mismatch.ini:5:" "model.safetensors" "999"

# Sizes in config.json far beyond the weights are refused before the model is allocated:
# run under a 1 GiB address-space limit (not in a sanitizer build, whose shadow memory needs
# more), a million layers or a 4M vocabulary would otherwise fail to allocate (exit 1)
# instead of being reported.
REAL_PEFT=$PEFT
if ! ldd "$REAL_PEFT" | grep -q libasan; then
    printf '#!/bin/sh\nulimit -v 1048576\nexec "%s" "$@"\n' "$REAL_PEFT" >limited_peft
    chmod +x limited_peft
    PEFT=$TMP/limited_peft
fi
mkdir -p huge_layers && cp "$FIX/hf_f16_v4_gqa/model.safetensors" huge_layers/ &&
    sed 's/"num_hidden_layers": *\([0-9]*\)/"num_hidden_layers": 1000000/' "$FIX/hf_f16_v4_gqa/config.json" >huge_layers/config.json
model_case huge_layers "$TMP/huge_layers"
check huge_layers "huge_layers.ini:5:" "tensor 'model.layers.999999.input_layernorm.weight' is missing"
mkdir -p huge_vocab && cp "$FIX/hf_f16_v4_gqa/model.safetensors" huge_vocab/ &&
    sed 's/"vocab_size": *\([0-9]*\)/"vocab_size": 4000000/' "$FIX/hf_f16_v4_gqa/config.json" >huge_vocab/config.json
model_case huge_vocab "$TMP/huge_vocab"
check huge_vocab "huge_vocab.ini:5:" "model.embed_tokens.weight' has shape" "4000000"
PEFT=$REAL_PEFT

mkdir -p garbage && cp "$FIX/hf_f16_v4_gqa/config.json" garbage/ &&
    printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}' >garbage/model.safetensors
model_case inconsistent_weights "$TMP/garbage"
check inconsistent_weights "inconsistent_weights.ini:5:" "model.safetensors"

{ base; echo "d_ff = 64"; } | sed '0,/^\[model\]/s|^\[model\]|[model]\npath = /tmp|' >model_keys_with_path.ini
# Every problem at once: four [model] keys the checkpoint sets, and d_ff again in [stage.a].
LINES=5 check model_keys_with_path "model_keys_with_path.ini" "[model] d_model: not allowed with path" \
    "[model] n_heads" "[stage.a] d_ff: unknown key"

# Three problems in three sections: three lines, each naming its file, line and key.
base | sed -e 's/^seed = 1/seed = -4/' -e 's/^n_heads = 2/n_heads = two/' \
    -e 's/^steps = 2/steps = 2\nlora_alpha = 16\nwarmup = 3/' >three_problems.ini
LINES=3 check three_problems "three_problems.ini:3: [run] seed" "three_problems.ini:7: [model] n_heads" \
    "three_problems.ini:18: [stage.a] warmup: unknown key"

# A NUL byte would cut a value silently; hexadecimal is not a number here.
base | sed 's/^steps = 2/steps = 2\x00 0/' >nul_byte.ini
check nul_byte "nul_byte.ini:16: a NUL byte in the line"
base | sed 's/^steps = 2/steps = 2\nlr = 0x10/' >hex_number.ini
check hex_number "hex_number.ini:17: [stage.a] lr: expected a number in [0, 100], got '0x10'"
# A dotted stage name is refused as bad input (exit 2), not as an internal failure.
base | sed 's/^\[stage.a\]/[stage.a.b]/' >dotted_stage.ini
check dotted_stage "dotted_stage.ini:13: [stage.a.b]: a stage name must be non-empty, without '/' or '.'"

# Chains that a method can only refuse by comparing stages: refused when the run file is
# checked, before the first stage trains (nothing written), through peft.stage_keys/1.
{ base | sed 's/^method = lora/method = poly\nn_skills = 2\nr = 4/'; printf '[stage.b]\nmethod = poly\nfrom =\ninit_from = a\nn_skills = 2\nr = 8\ntasks = swap\n'; } >poly_chain.ini
check poly_chain "[stage.b]" "n_skills = 2 and r = 8 must be those of init_from = 'a': n_skills = 2, r = 4"
{ base | sed 's/^method = lora/method = conpet\nmode = static/'; printf '[stage.b]\nmethod = conpet\nmode = dynamic\nfrom =\ninit_from = a\ntasks = swap\n'; } >conpet_chain.ini
check conpet_chain "[stage.b]" "mode = dynamic, but init_from = 'a' is mode = static"
base | sed 's/^method = lora/method = lota\ncalibration_steps = 5/' >lota_calibration.ini
check lota_calibration "[stage.a]" "calibration_steps = 5 leaves no sparse step of the stage's 2 steps"
{ base; printf '[stage.b]\nmethod = lota\nfrom =\nexclude_stages = a\ntasks = swap\nsteps = 3\ncalibration_steps = 1\n'; } >lota_exclude.ini
check lota_exclude "[stage.b]" "exclude_stages: 'a' is a stage of method 'lora'"

# At most 20 problems are shown, then a count of the rest.
{ base; for i in $(seq 1 25); do echo "typo_$i = 1"; done; } >many_problems.ini
LINES=21 check many_problems "many_problems.ini:18: [stage.a] typo_1: unknown key" \
    "many_problems.ini: 5 more problems not shown"

# A key left over from another method says which method reads it.
base | sed -e 's/^method = lora/method = full/' -e 's/^steps = 2/steps = 2\nr = 4\nlora_alpha = 8/' >leftover_keys.ini
LINES=2 check leftover_keys "leftover_keys.ini:17: [stage.a] r: not a key of method 'full' (it is a key of" \
    "leftover_keys.ini:18: [stage.a] lora_alpha: not a key of method 'full'" "lora"

# A stage after one whose method is unknown starts from it by default: only the unknown
# method is reported (the later stage is checked without it, and nothing crashes).
{ base | sed 's/^method = lora/method = lroa/'; printf '[stage.b]\nmethod = lora\ntasks = upper\n'; } >after_broken.ini
check after_broken "after_broken.ini:14: [stage.a] method: unknown method 'lroa'"

# An unknown method: the methods found, and the nearest one.
base | sed 's/^method = lora/method = lroa/' >method_typo.ini
check method_typo "method_typo.ini:14: [stage.a] method" "did you mean 'lora'?" "methods found:" "lota"

# ---- plugins ---------------------------------------------------------------------------
{ base | sed "s|^method = lora|method = $BAD_ABI|"; } >bad_plugin.ini
check bad_plugin "bad_plugin.ini:14:" "[stage.a] method" "ABI version"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -ge 25 ]
