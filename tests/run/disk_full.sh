#!/usr/bin/env bash
# A full disk: a chained run in a run folder on a small tmpfs fails with one line naming the
# file it could not write and a non-zero exit, leaves no temporary file and no stage marked
# complete that is not; given room, `peft run --resume` completes it with the same files as a
# run that had room from the start. Needs root to mount a tmpfs (skipped, status 77, if it
# cannot).
#
# usage: disk_full.sh PEFT
set -u
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"
mkdir -p small
mount -t tmpfs -o size=100k tmpfs small 2>/dev/null || { echo "cannot mount a tmpfs here: skipped"; exit 77; }
trap 'umount "$TMP/small" 2>/dev/null; rm -rf "$TMP"' EXIT

cat >chain.ini <<'INI'
[run]
seed = 4
[model]
d_model = 24
n_layers = 2
n_heads = 2
d_ff = 48
max_seq = 32
[data]
n_train = 32
n_eval = 4
[stage.base]
method = full
tasks = upper
steps = 6
batch_size = 2
save_every = 2
[stage.adapt]
method = lora
tasks = swap
steps = 6
batch_size = 2
r = 2
save_every = 2
INI
"$PEFT" run chain.ini --quiet --set run.out=ref >ref.log 2>&1 || { cat ref.log; echo "0 passed, 1 failed"; exit 1; }
need=$(du -sk ref | cut -f1)

"$PEFT" run chain.ini --quiet --set run.out=small/out >full.log 2>&1
rc=$?
if [ $rc -ne 0 ] && [ "$(wc -l <full.log)" -eq 1 ] && grep -q "small/out/.*No space left on device" full.log; then
    ok "a full disk (100 KiB for a run of $need KiB): exit $rc, $(cat full.log)"
else
    bad "full disk: exit $rc, $(cat full.log)"
fi
leftovers=$(find small/out -name '*.tmp.*' | wc -l)
[ "$leftovers" -eq 0 ] && ok "no temporary file left on the full disk" || bad "$leftovers temporary files left"
complete_ok=1
for d in small/out/*/; do
    [ -f "$d/stage.json" ] || continue
    for f in $(cd "$d" && ls *.safetensors 2>/dev/null | grep -v '^checkpoint'); do
        cmp -s "$d/$f" "ref/$(basename "$d")/$f" || complete_ok=0
    done
done
[ $complete_ok -eq 1 ] && ok "every stage marked complete on the full disk is whole" || bad "a complete-marked stage differs"

mount -o remount,size=8m small
if "$PEFT" run chain.ini --quiet --resume --set run.out=small/out >resume.log 2>&1; then
    same=1
    for f in base/adapter.safetensors base/model/model.safetensors adapt/adapter.safetensors; do
        cmp -s "ref/$f" "small/out/$f" || same=0
    done
    [ $same -eq 1 ] && ok "with room, --resume completes the run with the same files" || bad "files differ after --resume"
else
    bad "--resume with room failed: $(cat resume.log)"
fi
finish
