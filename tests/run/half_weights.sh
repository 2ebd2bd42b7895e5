#!/usr/bin/env bash
# A bf16 checkpoint keeps its frozen matrices in bf16 (no fp32 copy; products widen them
# block by block, the embedding row by row): a LoRA stage on it trains to the same losses as
# on the same weights stored in F32 (widening is exact; only the order of sums differs), with
# less resident memory, and its merged model keeps the weights LoRA did not touch in bf16.
#   half_weights.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
cfg=$PEFT_SOURCE_ROOT/tests/fixtures/configs/SmolLM2-135M.json
"$PEFT" init-model "$cfg" bf16 --layers 2 --dtype bf16 >/dev/null 2>err || { cat err; bad "init-model --dtype bf16"; finish; exit 1; }
"$PEFT" inspect bf16/model.safetensors >insp.txt 2>&1
if grep -q 'model.layers.0.mlp.down_proj.weight *BF16' insp.txt && grep -q 'model.embed_tokens.weight *BF16' insp.txt; then
    ok "init-model --dtype bf16 writes BF16 weights"
else
    bad "init-model --dtype bf16: $(head -30 insp.txt)"
fi
run() { # name, model folder, steps, lr, save_model
    cat >"$1.ini" <<INI
[run]
out = $1
[model]
path = $2
max_seq = 48
[data]
n_train = 200
n_eval = 20
[stage.s]
method = lora
tasks = upper
steps = $3
batch_size = 4
lr = $4
log_every = 1
save_model = $5
INI
    "$PEFT" run "$1.ini" --quiet >/dev/null 2>err || { cat err; bad "run $1"; }
}
# The same weights in F32: a LoRA step at lr 0 folds B A = 0 into every weight it reads.
run widen bf16 1 0 true
"$PEFT" inspect widen/s/model/model.safetensors >insp2.txt 2>&1
grep -q 'model.layers.0.mlp.down_proj.weight *BF16' insp2.txt && grep -q 'model.layers.0.self_attn.q_proj.weight *F32' insp2.txt &&
    ok "the merged model: q_proj (changed) in F32, down_proj (untouched) still BF16" ||
    bad "merged model dtypes: $(grep -E 'q_proj|down_proj' insp2.txt | head -4)"
mkdir f32
"$PEFT" run widen.ini --quiet >/dev/null 2>&1 # reused
cat >tof32.ini <<INI
[run]
out = tof32
[model]
path = bf16
max_seq = 48
[stage.s]
method = full
tasks = upper
steps = 1
lr = 0
train_norms = true
train_embeddings = true
save_model = true
INI
"$PEFT" run tof32.ini --quiet >/dev/null 2>err || cat err
cp tof32/s/model/config.json tof32/s/model/model.safetensors f32/
"$PEFT" inspect f32/model.safetensors >insp3.txt 2>&1
if grep -q 'model.layers.0.mlp.down_proj.weight *F32' insp3.txt && ! grep -q ' BF16 ' insp3.txt; then
    ok "full at lr 0 writes the same weights in F32"
else
    bad "F32 copy: $(grep -c BF16 insp3.txt) BF16 tensors left"
fi
run a bf16 20 0.005 false
run b f32 20 0.005 false
la=$(grep '"type":"train"' a/metrics.jsonl | grep -o '"loss":[0-9.]*' | cut -d: -f2)
lb=$(grep '"type":"train"' b/metrics.jsonl | grep -o '"loss":[0-9.]*' | cut -d: -f2)
worst=$(paste <(echo "$la") <(echo "$lb") | awk '{d = $1 - $2; if (d < 0) d = -d; r = d / $2; if (r > w) w = r} END {printf "%.2g", w}')
if [ -n "$la" ] && [ "$(echo "$la" | wc -l)" = 20 ] && awk -v w="$worst" 'BEGIN {exit !(w < 1e-4)}'; then
    ok "LoRA on bf16-held weights vs the same weights in F32: 20 step losses, worst relative difference $worst"
else
    bad "losses differ: worst $worst; $la / $lb"
fi
ra=$(grep -o '"peak_rss_kb":[[:space:]]*[0-9]*' a/s/stage.json | grep -o '[0-9]*$')
rb=$(grep -o '"peak_rss_kb":[[:space:]]*[0-9]*' b/s/stage.json | grep -o '[0-9]*$')
if [ -n "$ra" ] && [ -n "$rb" ] && [ "$ra" -lt "$rb" ]; then
    ok "peak resident memory: bf16 $((ra / 1024)) MiB < F32 $((rb / 1024)) MiB"
else
    bad "peak RSS bf16 ${ra:-?} kB, F32 ${rb:-?} kB"
fi
finish
