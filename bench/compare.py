#!/usr/bin/python3
"""Side-by-side table of bench_train's and torch_ref.py's JSON files (standard library only).

usage: compare.py C_JSON [TORCH_JSON]
"""
import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    c = load(argv[1])
    t = load(argv[2]) if len(argv) > 2 else None
    torch_rows = {(r["size"], r["method"]): r for r in t["results"]} if t else {}

    print(f"C:     OpenBLAS core {c['openblas_corename']}, {c['threads']} threads")
    if t:
        print(f"torch: {t['torch_version']}, OpenBLAS core {t['openblas_corename']}, "
              f"{t['threads']} intra-op threads, {t['openblas_threads']} OpenBLAS threads, "
              f"OMP_WAIT_POLICY {t.get('omp_wait_policy', '?')}")
    else:
        print("torch: not run")
    print(f"B={c['batch']} T={c['seq']}, {c['warmup']} warm-up + {c['steps']} steps, "
          f"median of {c['repeats']} repeats; lora r={c['lora_r']}")
    head = (f"{'size':<8} {'method':<6} {'C tok/s':>9} {'torch tok/s':>11} {'C/torch':>8} "
            f"{'C GFLOP/s':>9} {'sgemm':>7} {'C of peak':>9} {'C loss':>7} {'torch loss':>10}")
    print(head)
    print("-" * len(head))
    for r in c["results"]:
        tr = torch_rows.get((r["size"], r["method"]))
        tt = f"{tr['tokens_per_second']:>11.0f}" if tr else f"{'-':>11}"
        ratio = f"{r['tokens_per_second'] / tr['tokens_per_second']:>8.2f}" if tr else f"{'-':>8}"
        tl = f"{tr['loss_last']:>10.4f}" if tr else f"{'-':>10}"
        print(f"{r['size']:<8} {r['method']:<6} {r['tokens_per_second']:>9.0f} {tt} {ratio} "
              f"{r['gflops']:>9.1f} {r['sgemm_gflops']:>7.1f} "
              f"{100 * r['peak_fraction']:>8.1f}% {r['loss_last']:>7.4f} {tl}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
