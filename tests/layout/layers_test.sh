#!/usr/bin/env bash
# The layer check passes on the tree, and fails on copies of it with a lower layer including
# a higher one, a layer's inner header included from outside, and a path with "..".
set -u
src=${PEFT_SOURCE_ROOT:?}
check="$src/tests/layout/check_layers.sh"
fails=0
"$check" "$src" || { echo "FAIL: the tree breaks its layers"; fails=$((fails + 1)); }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
expect_refused() { # label, file (under host/), line to add, text the report must hold
    rm -rf "$tmp/t"; mkdir -p "$tmp/t"; cp -r "$src/host" "$tmp/t/host"
    printf '%s\n' "$3" >>"$tmp/t/host/$2"
    out=$("$check" "$tmp/t" 2>&1); rc=$?
    if [ $rc -eq 0 ] || ! grep -qF "$4" <<<"$out"; then
        echo "FAIL: $1 not refused as expected (exit $rc): $out"; fails=$((fails + 1))
    else
        echo "ok: $1: $(grep -F "$4" <<<"$out" | head -n 1)"
    fi
}
expect_refused "model includes run" model/ops.c '#include "run/run.h"' 'may not include run'
expect_refused "stage includes run" stage/train.c '#include "run/run.h"' 'may not include run'
expect_refused "inner header from outside" run/run.c '#include "io/safetensors.h"' "only io's face"
expect_refused "dotted path" cli/main.c '#include "../core/core.h"' 'FOLDER/FOLDER.h'
expect_refused "unknown sibling" data/data.c '#include "model.h"' 'is not a header of data/'
[ $fails -eq 0 ] && echo "layers_test: all cases ok"
exit $((fails > 0))
