# testlib.sh: what the shell tests share, sourced after `set -u`:
#   PEFT (the realpath of $1), a temporary folder TMP removed on exit and made the working
#   directory, ok/bad counters and `finish`, which prints "N passed, N failed" and returns
#   non-zero when a check failed.
PEFT=$(realpath "$1")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

# The precision of every run a test makes, unless its file sets [run] precision:
# PEFT_PRECISION (`meson test --setup bf16` sets bf16). Two orders of one computation (a batch
# split into micro-batches or over processes, an adapter merged or applied unmerged) agree to
# fp32's rounding in fp32 but only to bfloat16's in bf16: which values a product rounds, and
# how, changes with the loss's scale and with a merged weight. Such a check takes its bound
# from `tolerance FP32 BF16`.
BF16=0
[ "${PEFT_PRECISION:-}" = bf16 ] && BF16=1
tolerance() { if [ "$BF16" = 1 ]; then echo "$2"; else echo "$1"; fi; }
