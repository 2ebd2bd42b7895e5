#!/usr/bin/python3
"""Write tests/fixtures/sites_torch.h: the outputs and gradients of one adapted site, computed
by torch autograd in float64 as HF PEFT defines the methods, for tests/methods/torch_sites.c:

  dora  at layer 0 q_proj (16 -> 16), r 2, lora_alpha 3: PEFT's DoraLinearLayer,
        y = x W^T + (m / n - 1) x W^T + (m / n) s x A^T B^T with n = ||W + s B A|| by rows,
        the norm detached;
  ia3   at layer 0 k_proj (16 -> 8), output scaled: y = (x W^T) * l;
        at layer 0 down_proj (24 -> 16), input scaled: y = (x * l) W^T.

Every input is a formula both files evaluate (in double, rounded to float), so nothing but
the results is stored. The loss is sum(y * dy): its gradients are those of a backward from dy.

    /usr/bin/python3 tests/gen_sites_fixture.py > tests/fixtures/sites_torch.h
"""
import math

import torch

ROWS = 6


def f32(v):
    return float(torch.tensor(v, dtype=torch.float32))


def mat(rows, cols, fn):
    return torch.tensor([[f32(fn(i, j)) for j in range(cols)] for i in range(rows)],
                        dtype=torch.float64)


def vec(n, fn):
    return torch.tensor([f32(fn(i)) for i in range(n)], dtype=torch.float64)


# The formulas (the same in tests/methods/torch_sites.c).
def weight(d_out, d_in):
    return mat(d_out, d_in, lambda o, i: 0.3 * math.sin(0.7 * o + 0.3 * i + 0.1))


def inputs(d_in):
    return mat(ROWS, d_in, lambda r, i: math.sin(0.13 * r * 16 + 0.29 * i))


def upstream(d_out):
    return mat(ROWS, d_out, lambda r, o: math.cos(0.31 * r + 0.17 * o))


def dora():
    d_in, d_out, r, s = 16, 16, 2, 3.0 / 2
    W = weight(d_out, d_in)
    A = mat(r, d_in, lambda k, i: 0.2 * math.cos(0.5 * k + 0.9 * i)).requires_grad_()
    B = mat(d_out, r, lambda o, k: 0.25 * math.sin(1.1 * o - 0.4 * k + 0.3)).requires_grad_()
    m = vec(d_out, lambda o: 1.0 + 0.1 * math.cos(0.8 * o)).requires_grad_()
    x = inputs(d_in).requires_grad_()
    dy = upstream(d_out)
    lora_weight = B @ A
    weight_norm = (W + s * lora_weight).norm(p=2, dim=1).detach()
    mag_norm_scale = (m / weight_norm).view(1, -1)
    base = x @ W.T
    lora = (x @ A.T) @ B.T
    y = base + (mag_norm_scale - 1) * base + mag_norm_scale * lora * s
    (y * dy).sum().backward()
    return [("dora_y", y), ("dora_dA", A.grad), ("dora_dB", B.grad), ("dora_dm", m.grad),
            ("dora_dx", x.grad)]


def ia3(name, d_in, d_out, feedforward):
    W = weight(d_out, d_in)
    n = d_in if feedforward else d_out
    l = vec(n, lambda i: 1.0 + 0.2 * math.sin(0.6 * i + 0.2)).requires_grad_()
    x = inputs(d_in).requires_grad_()
    dy = upstream(d_out)
    y = (x * l) @ W.T if feedforward else (x @ W.T) * l
    (y * dy).sum().backward()
    return [(name + "_y", y), (name + "_dl", l.grad), (name + "_dx", x.grad)]


def main():
    print("/* sites_torch.h: written by tests/gen_sites_fixture.py with torch "
          f"{torch.__version__}; do not edit. */")
    print("#ifndef SITES_TORCH_H\n#define SITES_TORCH_H")
    print(f"enum {{ SITES_ROWS = {ROWS} }};")
    for name, t in dora() + ia3("ia3k", 16, 8, False) + ia3("ia3d", 24, 16, True):
        v = t.detach().reshape(-1).tolist()
        print(f"static const double {name}[{len(v)}] = {{")
        for k in range(0, len(v), 4):
            print("    " + ", ".join(f"{x:.17g}" for x in v[k:k + 4]) + ",")
        print("};")
    print("#endif")


if __name__ == "__main__":
    main()
