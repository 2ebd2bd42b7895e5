#!/usr/bin/env bash
# Encode throughput, ours against the reference, on the parity corpus, single thread, the two
# interleaved (C, node, C, node, ...) in one session; medians and their ratio per tokenizer.
#   bench/run_tokenize.sh BUILD_DIR     (env: TOK_PASSES, TOK_ROUNDS)
set -eu
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cache=$("$top/tests/tokenizer/fetch_tokenizers.sh" --reference)
corpus=$top/tests/tokenizer/corpus.hex
passes=${TOK_PASSES:-20}
rounds=${TOK_ROUNDS:-5}
export OPENBLAS_NUM_THREADS=1
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; node $(node --version); corpus $(wc -l <"$corpus") strings, $passes passes per timing, $rounds rounds"
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
printf '| tokenizer | ours MB/s | reference MB/s | ratio | ids per pass |\n| --- | --- | --- | --- | --- |\n'
for name in llama2 llama3 qwen3; do
    c=() r=()
    for _ in $(seq "$rounds"); do
        c+=("$("$build/bench/bench_tokenize" "$cache/tokenizers/$name" "$corpus" --passes "$passes" | sed 's/.*"mb_per_s": \([0-9.]*\).*/\1/')")
        r+=("$(node "$top/bench/bench_tokenize.mjs" "$name" "$corpus" "$passes" 1 | sed 's/.*"mb_per_s":\([0-9.]*\).*/\1/')")
    done
    cm=$(printf '%s\n' "${c[@]}" | median)
    rm_=$(printf '%s\n' "${r[@]}" | median)
    ids=$("$build/bench/bench_tokenize" "$cache/tokenizers/$name" "$corpus" --passes 1 | sed 's/.*"ids": \([0-9]*\).*/\1/')
    printf '| %s | %.2f | %.2f | %.1fx | %s |\n' "$name" "$cm" "$rm_" "$(echo "$cm / $rm_" | bc -l)" "$ids"
done
