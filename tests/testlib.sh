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
