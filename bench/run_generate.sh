#!/bin/sh
# Greedy generation with a KV cache, side by side: BUILD's bench_generate and PyTorch's loop
# (bench/torch_ref.py --generate), interleaved (peft, torch, peft, torch, ...) so that the
# machine's noise falls on both alike. Prints every run's decode rate and the medians.
#
# usage: bench/run_generate.sh BUILD [ROUNDS]    (ROUNDS default 3)
# GEN_PRESET (smollm2-135m), GEN_PROMPT (32), GEN_TOKENS (64), GEN_THREADS (2) set the run.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run_generate.sh BUILD [ROUNDS]}
rounds=${2:-3}
preset=${GEN_PRESET:-smollm2-135m}
prompt=${GEN_PROMPT:-32}
tokens=${GEN_TOKENS:-64}
threads=${GEN_THREADS:-2}
[ -x "$build/bench/bench_generate" ] || { echo "run_generate.sh: $build/bench/bench_generate not found" >&2; exit 2; }
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $preset, prompt $prompt, $tokens new tokens, $threads threads"
out=$(mktemp)
for r in $(seq "$rounds"); do
    line=$("$build/bench/bench_generate" --preset "$preset" --prompt "$prompt" --tokens "$tokens" \
        --repeats 1 --threads "$threads" | sed -n 's/^median: //p')
    echo "round $r  peft   $line"
    echo "peft $line" >>"$out"
    line=$(/usr/bin/python3 "$here/torch_ref.py" --preset "$preset" --prompt "$prompt" \
        --generate "$tokens" --repeats 1 --threads "$threads" | sed -n 's/^median: //p')
    echo "round $r  torch  $line"
    echo "torch $line" >>"$out"
done
/usr/bin/python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side, rest = line.split(" ", 1)
    m = re.search(r"prefill ([\d.]+) ms, decode ([\d.]+) tokens/s, peak RSS (\d+) MiB", rest)
    rows.setdefault(side, []).append(tuple(float(x) for x in m.groups()))
med = {s: [statistics.median(v[i] for v in rows[s]) for i in range(3)] for s in rows}
for s in ("peft", "torch"):
    p, d, m = med[s]
    print(f"median {s:<5}  prefill {p:8.1f} ms  decode {d:7.1f} tokens/s  peak {m:.0f} MiB")
print(f"decode peft / torch {med['peft'][1] / med['torch'][1]:.2f}, prefill torch / peft "
      f"{med['torch'][0] / med['peft'][0]:.2f}")
PY
rm -f "$out"
