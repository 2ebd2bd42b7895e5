#!/usr/bin/python3
"""Where a training step's CPU time goes: GEMM, the rest of the step, spinning, idle.

    bench/profile_split.py BUILD_DIR [bench_train flags...]

Runs BUILD_DIR/bench/bench_train under `perf record` (sampling every thread at 999 Hz on
cpu-clock) and sorts the samples by symbol into:
  gemm      OpenBLAS's kernels and packing routines (sgemm_*, dgemm_*, *_ZEN, ...)
  spin      threads waiting by spinning: sched_yield and the scheduler entries it causes
  set-up    building the random model (rng_*, cos/sin/log of the init), not the step
  rest      everything else the process ran: norms, softmax, SwiGLU, cross-entropy, AdamW,
            the plugins' own loops, page faults, ...
idle is the share of `threads` x (wall time - set-up time) in which no thread of the process
ran. Shares are of threads x (wall - set-up). Needs Debian's `linux-perf`; prints the CPU
(`lscpu` model name) first. Keep --gemm-seconds small so that the peak measurement after the
steps stays out of the figures.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

GEMM = re.compile(r"^(sgemm|dgemm|sgemv|dgemv|saxpy|daxpy|sdot|ddot)_|_(ZEN|HASWELL|SKYLAKEX|COOPERLAKE|PRESCOTT)$|"
                  r"^(s|d)gemm_(kernel|beta|on|ot|in|it|small)", re.I)
SPIN = re.compile(r"sched_yield|^__schedule$|^schedule$|^do_sched_yield$|^yield_task|"
                  r"^pick_next_task|^__x64_sys_sched_yield$|^entry_SYSCALL|^syscall_return|"
                  r"^do_syscall_64$|^blas_thread_server$|^exec_blas", re.I)
SETUP = re.compile(r"^rng_|^__cos|^__sin|^__ieee754_log|^__log|^model_init|^init_", re.I)


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    build, flags = sys.argv[1], sys.argv[2:]
    threads = 2
    for i, f in enumerate(flags[:-1]):
        if f == "--threads":
            threads = int(flags[i + 1])
    exe = os.path.join(build, "bench", "bench_train")
    env = dict(os.environ)
    env.setdefault("PEFT_PLUGIN_PATH", ":".join(
        os.path.join(build, "plugins", p) for p in ("full", "lora", "lota")))
    env.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        t0 = time.monotonic()
        run = subprocess.run(["perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "-o", data,
                              exe, *flags], env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if run.returncode != 0:
            sys.stderr.write(run.stderr)
            return 1
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "sym", "-F", "sample,sym"],
                             capture_output=True, text=True).stdout
    samples = {"gemm": 0, "spin": 0, "set-up": 0, "rest": 0}
    for line in rep.splitlines():
        m = re.match(r"\s*(\d+)\s+\[[.k]\]\s+(\S+)", line)
        if not m:
            continue
        n, sym = int(m.group(1)), m.group(2)
        kind = ("gemm" if GEMM.search(sym) else "spin" if SPIN.search(sym)
                else "set-up" if SETUP.search(sym) else "rest")
        samples[kind] += n
    hz = 999.0
    setup_s = samples["set-up"] / hz
    budget = threads * max(wall - setup_s, 1e-9)
    busy = (samples["gemm"] + samples["spin"] + samples["rest"]) / hz
    step_line = [l for l in run.stdout.splitlines() if re.match(r"^\d+x\d+\s", l)]
    print(f"CPU: {cpu_name()}; {threads} threads; bench_train {' '.join(flags)}")
    if step_line:
        print(f"bench_train: {step_line[-1]}")
    print(f"wall {wall:.1f} s, set-up {setup_s:.1f} s (excluded)")
    for kind in ("gemm", "rest", "spin"):
        print(f"  {kind:<5} {samples[kind] / hz / budget * 100:5.1f}%")
    print(f"  idle  {max(0.0, 1 - busy / budget) * 100:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
