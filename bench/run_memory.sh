#!/usr/bin/env bash
# Peak resident memory of a LoRA run on a bf16 checkpoint of SmolLM2-135M's exact config
# (30 layers, vocabulary 49152; random weights written by peft init-model --dtype bf16),
# for two peft binaries - a build before 16-bit frozen weights and one after, or the same
# build twice - run interleaved (A, B, A, B, ...). Resident memory is /usr/bin/time's
# maximum RSS of the whole process; the weights alone are 270 MB in bf16, 540 MB in fp32.
# A LoRA stage folds its adapter into the weights it adapts when it ends (for the stages after
# it and the merged model), which makes those weights fp32: MEM_TARGETS=all-linear shows that.
#   bench/run_memory.sh PEFT_A PEFT_B  (env: MEM_ROUNDS, MEM_STEPS, MEM_SEQ, MEM_TARGETS, MEM_BATCH)
set -eu
a=$(realpath "$1") b=$(realpath "$2")
top=$(cd "$(dirname "$0")/.." && pwd)
rounds=${MEM_ROUNDS:-3} steps=${MEM_STEPS:-4} seq=${MEM_SEQ:-256}
targets=${MEM_TARGETS:-q_proj v_proj} batch=${MEM_BATCH:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$b" init-model "$top/tests/fixtures/configs/SmolLM2-135M.json" smol --dtype bf16 >/dev/null
cat >run.ini <<INI
[run]
out = out
[model]
path = smol
max_seq = $seq
[data]
n_train = 64
n_eval = 8
[stage.lora]
method = lora
tasks = upper
steps = $steps
batch_size = $batch
lr = 1e-3
target_modules = $targets
eval_batch_size = 2
predictions = false
INI
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; SmolLM2-135M config, bf16 weights, LoRA r 8 on $targets, $steps steps of batch $batch, max_seq $seq"
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
peak() { # binary -> max RSS in MiB
    rm -rf out
    grep -v '^predictions' run.ini >run_old.ini
    local ini=run.ini
    "$1" keys stage 2>/dev/null | grep -q predictions || ini=run_old.ini
    /usr/bin/time -f '%M' -o rss.txt "$1" run "$ini" --quiet >/dev/null 2>err.txt || { cat err.txt >&2; exit 1; }
    local tps
    tps=$(grep -o '"tokens_per_second":[[:space:]]*[0-9.]*' out/lora/stage.json | grep -o '[0-9.]*$')
    echo "$(( $(tail -n1 rss.txt) / 1024 )) ${tps%.*}"
}
ra=() rb=() ta=() tb=()
for _ in $(seq "$rounds"); do
    read -r m t < <(peak "$a"); ra+=("$m"); ta+=("$t")
    read -r m t < <(peak "$b"); rb+=("$m"); tb+=("$t")
done
ma=$(printf '%s\n' "${ra[@]}" | median) mb=$(printf '%s\n' "${rb[@]}" | median)
sa=$(printf '%s\n' "${ta[@]}" | median) sb=$(printf '%s\n' "${tb[@]}" | median)
printf '| peft | peak RSS MiB (median of %s) | each | training tokens/s (median) | each |\n| --- | --- | --- | --- | --- |\n' "$rounds"
printf '| A %s | %s | %s | %s | %s |\n| B %s | %s | %s | %s | %s |\n' "$1" "$ma" "${ra[*]}" "$sa" "${ta[*]}" "$2" "$mb" "${rb[*]}" "$sb" "${tb[*]}"
printf 'B / A: memory %.2f, tokens/s %.2f\n' "$(echo "$mb / $ma" | bc -l)" "$(echo "$sb / $sa" | bc -l)"
