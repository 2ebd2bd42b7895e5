#!/bin/sh
# test_sdk_install.sh: the SDK as a third party sees it.
#
# 1. Install this build into a staging directory (meson install --destdir) and relocate the
#    installed peft-plugin.pc to it (its prefix= line), as a packager would.
# 2. Build the installed copy of the template plugin (share/peft/template) out of tree with
#    PKG_CONFIG_PATH pointing into the staging directory only: no path into this source tree
#    may reach the compiler. Install it into the pc file's plugindir.
# 3. Run the installed `peft`: `peft plugins com.example.bias` must describe the method, and
#    `peft check` must pass every check on it, and
#    `peft run` of a tiny INI whose stage uses it must exit 0 and write the adapter, which
#    must hold the biases of the targeted sites only.
set -eu

build=${PEFT_BUILD_ROOT:?PEFT_BUILD_ROOT is not set (run through meson test)}
source_root=${PEFT_SOURCE_ROOT:?PEFT_SOURCE_ROOT is not set (run through meson test)}
meson=${MESON:-meson}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/peft-sdk-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

fail() {
    echo "test_sdk_install: FAIL: $*" >&2
    exit 1
}

# Run a command quietly; show its output if it fails.
quiet() {
    log=$tmp/last.log
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        fail "$*"
    fi
}

# ---- 1. install and relocate -------------------------------------------------------------
stage=$tmp/stage
quiet "$meson" install -C "$build" --destdir "$stage" --no-rebuild
pc=$(find "$stage" -name peft-plugin.pc | head -n 1)
[ -n "$pc" ] || fail "no peft-plugin.pc installed"
prefix=$(sed -n 's/^prefix=//p' "$pc")
[ -n "$prefix" ] || fail "$pc has no prefix= line"
sed -i "s|^prefix=.*|prefix=$stage$prefix|" "$pc"

PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR 2>/dev/null || true
cflags=$(pkg-config --cflags peft-plugin)
plugindir=$(pkg-config --variable=plugindir peft-plugin)
echo "pkg-config peft-plugin: version $(pkg-config --modversion peft-plugin), cflags $cflags"
echo "plugindir: $plugindir"
case $cflags in *"$stage"*) ;; *) fail "cflags '$cflags' do not point into the install" ;; esac
case $plugindir in "$stage"/*) ;; *) fail "plugindir '$plugindir' is not in the install" ;; esac
header=$(find "$stage" -path '*/include/peft/peft_plugin.h' | head -n 1)
[ -n "$header" ] || fail "peft/peft_plugin.h not installed"

template=$(find "$stage" -type d -path '*/share/peft/template' | head -n 1)
[ -n "$template" ] || fail "the template is not installed (share/peft/template)"
peft=$(find "$stage" -type f -path '*/bin/peft' | head -n 1)
[ -n "$peft" ] && [ -x "$peft" ] || fail "peft is not installed"

# ---- 2. build the template against the installed SDK alone ------------------------------
cp -R "$template" "$tmp/template"
quiet "$meson" setup "$tmp/tbuild" "$tmp/template"
quiet "$meson" compile -C "$tmp/tbuild"
so=$tmp/tbuild/peft-com.example.bias.so
[ -f "$so" ] || fail "the template did not build $so"
if grep -q -- "$source_root" "$tmp/tbuild/build.ninja"; then
    fail "the template build refers to the source tree $source_root"
fi
grep -q -- "-Werror" "$tmp/tbuild/build.ninja" || fail "the template is not built with -Werror"
quiet "$meson" install -C "$tmp/tbuild"
[ -f "$plugindir/peft-com.example.bias.so" ] || fail "template not installed into $plugindir"
echo "template built: $so"

# ---- 3. run it with the installed host ---------------------------------------------------
PEFT_PLUGIN_PATH=$tmp/tbuild "$peft" plugins com.example.bias >"$tmp/show.txt" 2>&1 ||
    { cat "$tmp/show.txt" >&2; fail "peft plugins com.example.bias"; }
cat "$tmp/show.txt"
grep -q "com.example.bias" "$tmp/show.txt" || fail "peft plugins does not name the method"
grep -q "init_std" "$tmp/show.txt" || fail "peft plugins does not list the key init_std"
grep -q "^license      MIT$" "$tmp/show.txt" && grep -q "^url          https://example.com/bias$" "$tmp/show.txt" ||
    fail "peft plugins does not show the descriptor's license and url"

# the checks an author runs on their plugin: peft check, every line ok
"$peft" check "$so" >"$tmp/check.txt" 2>&1 || { cat "$tmp/check.txt" >&2; fail "peft check of the template failed"; }
tail -1 "$tmp/check.txt"
grep -q "^ok   com.example.bias defaults: parameter gradients" "$tmp/check.txt" &&
    grep -Eq '^[1-9][0-9]* passed, 0 failed$' "$tmp/check.txt" || fail "peft check: $(tail -3 "$tmp/check.txt")"

cat >"$tmp/run.ini" <<EOF
[run]
out = $tmp/run
seed = 1
plugin_path = $tmp/tbuild
[model]
d_model = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
d_ff = 64
max_seq = 48
[data]
n_train = 64
n_eval = 16
[stage.bias]
method = com.example.bias
tasks = upper
steps = 5
batch_size = 4
lr = 0.01
target_modules = q_proj v_proj
EOF

status=0
(cd "$tmp" && "$peft" run "$tmp/run.ini") >"$tmp/run.log" 2>&1 || status=$?
cat "$tmp/run.log"
[ "$status" -eq 0 ] || fail "peft run exited with status $status"
adapter=$tmp/run/bias/adapter.safetensors
[ -f "$adapter" ] || fail "no $adapter"
for site in q_proj v_proj; do
    grep -a -q "model.layers.0.self_attn.$site.bias_delta" "$adapter" ||
        fail "the adapter lacks the bias of $site"
done
if grep -a -q "k_proj.bias_delta" "$adapter"; then
    fail "the adapter holds a bias of k_proj, which target_modules does not name"
fi
echo "adapter: $adapter ($(wc -c <"$adapter") bytes)"

# ---- 4. plugin_path: ':' or ',' with spaces around a folder, as the loader reads it --------
# run_with_plugin_path NAME VALUE: the run above with [run] plugin_path = VALUE and its own out;
# sets status and leaves the output in $tmp/NAME.log.
run_with_plugin_path() {
    sed -e "s#^plugin_path = .*#plugin_path = $2#" -e "s#^out = .*#out = $tmp/out-$1#" \
        "$tmp/run.ini" >"$tmp/$1.ini"
    status=0
    "$peft" run "$tmp/$1.ini" >"$tmp/$1.log" 2>&1 || status=$?
    cat "$tmp/$1.log"
}
run_with_plugin_path missing "$tmp/nowhere , $tmp/tbuild"
[ "$status" -eq 2 ] && grep -q "plugin_path: no such folder '$tmp/nowhere'" "$tmp/missing.log" ||
    fail "a missing folder in plugin_path was not named (status $status)"
run_with_plugin_path spaced "$tmp , $tmp/tbuild :  $tmp"
[ "$status" -eq 0 ] || fail "plugin_path with spaces around ',' and ':' refused"
run_with_plugin_path words "$tmp/tbuild $tmp"
[ "$status" -eq 2 ] && grep -q "no such folder '$tmp/tbuild $tmp'" "$tmp/words.log" ||
    fail "space-separated plugin_path folders were not refused (status $status)"
echo "test_sdk_install: ok"
