#!/usr/bin/python3
"""Write tests/fixtures/optim_torch.h: torch.optim.RMSprop and torch.optim.SGD on one tensor of
7 entries over 4 steps of fixed gradients, the weights after every step, for optim_unit.c.

    /usr/bin/python3 tests/gen_optim_fixture.py > tests/fixtures/optim_torch.h
"""
import torch

W0 = [0.5, -1.25, 2.0, 0.0, -0.75, 3.5, 1e-3]
GRADS = [
    [0.1, -0.2, 0.3, 0.0, 1.5, -2.0, 0.01],
    [-0.4, 0.25, 0.05, 0.7, -1.0, 0.5, 0.02],
    [0.3, 0.3, -0.6, -0.1, 0.2, 0.0, -0.03],
    [1.0, -0.5, 0.25, 0.125, -0.0625, 2.5, 0.04],
]
CASES = [  # name, optimizer, its keyword arguments (lr constant)
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01)),
    ("rmsprop_momentum", torch.optim.RMSprop, dict(lr=0.01, alpha=0.99, eps=1e-6, momentum=0.5)),
    ("sgd_momentum", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("sgd", torch.optim.SGD, dict(lr=0.05)),
]


def floats(v):
    return ", ".join(f"{float(x):.9e}f" for x in v)


def main():
    print("/* optim_torch.h: written by tests/gen_optim_fixture.py with torch "
          f"{torch.__version__}; do not edit. */")
    print(f"static const float fx_w0[7] = {{{floats(W0)}}};")
    print("static const float fx_grads[4][7] = {")
    for g in GRADS:
        print(f"    {{{floats(g)}}},")
    print("};")
    print("struct fx_case { const char *name; int kind; double lr, alpha, eps, momentum, "
          "weight_decay; float after[4][7]; };")
    print("static const struct fx_case fx_cases[] = {")
    for name, cls, kw in CASES:
        w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float32))
        opt = cls([w], **kw)
        after = []
        for g in GRADS:
            w.grad = torch.tensor(g, dtype=torch.float32)
            opt.step()
            after.append(w.detach().clone().tolist())
        kind = 1 if cls is torch.optim.RMSprop else 2
        rows = ", ".join("{" + floats(a) + "}" for a in after)
        print(f"    {{\"{name}\", {kind}, {kw['lr']}, {kw.get('alpha', 0.99)}, {kw.get('eps', 1e-8)}, "
              f"{kw.get('momentum', 0.0)}, {kw.get('weight_decay', 0.0)}, {{{rows}}}}},")
    print("};")


if __name__ == "__main__":
    main()
