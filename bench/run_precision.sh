#!/bin/sh
# bf16 against fp32 on whole runs (not timings): the quickstart (full fine-tuning of a small
# model on six synthetic tasks, then LoRA on a seventh) with seeds 1 and 2, and LoRA on all
# seven projections of a bf16 checkpoint of SmolLM2-135M's config (random weights, LAYERS
# layers) on the `upper` task, each run with [run] precision = fp32 and with bf16. The second
# seed shows how far two fp32 runs land apart, the yardstick for the gap between precisions.
# Prints, per stage, the train loss (means of 10 logged points at a quarter, half, three
# quarters and the end of the stage) and every task's eval loss and exact match.
#
# usage: bench/run_precision.sh BUILD [OUT]      (OUT default /tmp/peft-precision)
# Environment: PRECISION_SEEDS (default "1 2"), PRECISION_SMOL_LAYERS (default 4),
# PRECISION_SMOL_STEPS (default 200).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: run_precision.sh BUILD [OUT]}" && pwd)
out=${2:-/tmp/peft-precision}
peft=$build/peft
layers=${PRECISION_SMOL_LAYERS:-4}
steps=${PRECISION_SMOL_STEPS:-200}
mkdir -p "$out"
cd "$out"
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $peft"
seeds=${PRECISION_SEEDS:-1 2}
for seed in $seeds; do
    for p in fp32 bf16; do
        rm -rf "quick$seed-$p"
        "$peft" run "$here/conf/quickstart.ini" --quiet --set run.out="quick$seed-$p" \
            --set run.precision=$p --set run.seed="$seed" >/dev/null
    done
done
[ -d smol ] || "$peft" init-model "$here/tests/fixtures/configs/SmolLM2-135M.json" smol \
    --layers "$layers" --dtype bf16 >/dev/null
for p in fp32 bf16; do
    cat >"smol-$p.ini" <<INI
[run]
out = smol-$p
precision = $p
[model]
path = smol
max_seq = 64
[data]
n_train = 2000
n_eval = 100
[stage.lora]
method = lora
target_modules = all-linear
tasks = upper
steps = $steps
batch_size = 8
lr = 0.002
log_every = 5
INI
    rm -rf "smol-$p"
    "$peft" run "smol-$p.ini" --quiet >/dev/null
done
/usr/bin/python3 - "$out" $seeds <<'PY'
import json, os, sys
out, seeds = sys.argv[1], sys.argv[2:]

def metrics(run):
    train, evals = {}, {}
    for line in open(os.path.join(out, run, "metrics.jsonl")):
        j = json.loads(line)
        if j.get("type") == "train":
            train.setdefault(j["stage"], []).append((j["step"], j["loss"]))
        elif j.get("type") == "eval" and j.get("point") == "after":
            evals.setdefault(j["stage"], {})[j["task"]] = (j["loss"], j["accuracy"])
    return train, evals

def window(points, end):
    part = points[max(0, end - 10):end]
    return sum(l for _, l in part) / len(part)

for name in [f"quick{s}" for s in seeds] + ["smol"]:
    t32, e32 = metrics(f"{name}-fp32")
    t16, e16 = metrics(f"{name}-bf16")
    for stage in t32:
        a, b = t32[stage], t16[stage]
        ends = [max(10, len(a) * q // 4) for q in (1, 2, 3, 4)]
        curve = "  ".join(f"{window(a, e):.4f}/{window(b, e):.4f}" for e in ends)
        print(f"{name}/{stage}: train loss fp32/bf16 at 1/4, 1/2, 3/4, end: {curve}")
        for task, (l32, a32) in e32.get(stage, {}).items():
            l16, a16 = e16[stage][task]
            print(f"    {task:<10} eval loss fp32 {l32:.4f}  bf16 {l16:.4f}  "
                  f"exact match fp32 {a32 * 100:5.1f}%  bf16 {a16 * 100:5.1f}%")
PY
