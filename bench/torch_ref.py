#!/usr/bin/python3
"""PyTorch reference for bench_train (and, with --generate, bench_generate): the same llama
model, methods and timed step.

Run with Debian's torch: /usr/bin/python3 bench/torch_ref.py --size 256x4 --threads 2

Model: RMSNorm, rotary embeddings in the HF rotate-half convention, grouped-query attention,
SwiGLU MLP, head tied to the embedding, vocabulary 259 (the byte tokenizer). A size CxL has
heads = C / head_dim, kv heads = heads / 2, d_ff = 8/3 C rounded to a multiple of 8, exactly
as bench_train builds it.

Methods: full = the seven projections of every layer trainable (embedding and norms frozen);
lora = r-rank adapters on all seven projections, y = x W^T + (alpha / r) (x A^T) B^T, base
frozen. One step: zero_grad, forward, cross-entropy, backward, clip_grad_norm_(1.0), AdamW
(lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay), on one fixed random batch. The report is
tokens/s from the median over repeats of the mean step time of `steps` steps, after warm-up.
"""
import argparse
import ctypes
import json
import math
import os
import resource
import statistics
import sys
import time

# torch's OpenMP pool and OpenBLAS's threads share the cores; with libgomp's default (active)
# waiting, idle OpenMP threads spin while OpenBLAS works and a 2-core step runs several times
# slower. Passive waiting lets them yield. Read when libgomp loads, so set before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BYTE_VOCAB = 259
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# The shapes bench_train's --preset names (the same table as bench_train.c's presets).
PRESETS = {
    "smollm2-135m": dict(size="576x30", head_dim=64, kv_heads=3, d_ff=1536, vocab=49152),
    "qwen2.5-0.5b": dict(size="896x24", head_dim=64, kv_heads=2, d_ff=4864, vocab=151936),
    "llama-3.2-1b": dict(size="2048x16", head_dim=64, kv_heads=8, d_ff=8192, vocab=128256),
}


def size_config(size, args):
    """As bench_train: heads = C / head_dim, kv heads = heads / 2, d_ff = 8/3 C rounded to a
    multiple of 8, vocabulary 259, unless --kv-heads, --d-ff or --vocab say otherwise."""
    c, _, l = size.partition("x")
    d_model, n_layers = int(c), int(l)
    head_dim = args.head_dim
    if d_model % head_dim:
        raise SystemExit(f"--size {size}: d_model {d_model} is not a multiple of {head_dim}")
    heads = d_model // head_dim
    kv = args.kv_heads or (heads // 2 if heads >= 2 else 1)
    if heads % kv:
        raise SystemExit(f"--kv-heads {kv} does not divide the {heads} heads of {size}")
    return dict(vocab=args.vocab or BYTE_VOCAB, d_model=d_model, n_layers=n_layers,
                n_heads=heads, n_kv_heads=kv, head_dim=head_dim,
                d_ff=args.d_ff or (d_model + 1) // 3 * 8, rms_eps=1e-5, rope_theta=10000.0)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LoRALinear(nn.Module):
    """A frozen linear map plus s * B A (HF PEFT's layout and init: A kaiming-uniform, B 0)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        d_out, d_in = base.weight.shape
        bound = 1.0 / math.sqrt(d_in)
        self.lora_A = nn.Parameter(torch.empty(r, d_in).uniform_(-bound, bound))  # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(d_out, r))                       # (d_out, r)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + ((x @ self.lora_A.t()) * self.scale) @ self.lora_B.t()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, h, kv, d = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
        self.h, self.kv, self.d = h, kv, d
        self.q_proj = nn.Linear(c, h * d, bias=False)
        self.k_proj = nn.Linear(c, kv * d, bias=False)
        self.v_proj = nn.Linear(c, kv * d, bias=False)
        self.o_proj = nn.Linear(h * d, c, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.d).transpose(1, 2)   # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.kv, self.d).transpose(1, 2)  # (B, KV, T, D)
        v = self.v_proj(x).view(B, T, self.kv, self.d).transpose(1, 2)  # (B, KV, T, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.h // self.kv
        if group > 1:
            k = k.repeat_interleave(group, dim=1)                       # (B, H, T, D)
            v = v.repeat_interleave(group, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.d)             # (B, H, T, T)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.h * self.d)    # (B, T, H*D)
        return self.o_proj(y)

    def decode(self, x, cos, sin, cache):
        """x (1, n, C) at the positions after cache's; cache = [k, v] (1, KV, t, D) or
        [None, None], extended in place."""
        _, n, _ = x.shape
        q = self.q_proj(x).view(1, n, self.h, self.d).transpose(1, 2)   # (1, H, n, D)
        k = self.k_proj(x).view(1, n, self.kv, self.d).transpose(1, 2)  # (1, KV, n, D)
        v = self.v_proj(x).view(1, n, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache[0] is not None:
            k = torch.cat((cache[0], k), dim=2)
            v = torch.cat((cache[1], v), dim=2)
        cache[0], cache[1] = k, v
        group = self.h // self.kv
        if group > 1:
            k = k.repeat_interleave(group, dim=1)                       # (1, H, t+n, D)
            v = v.repeat_interleave(group, dim=1)
        t = k.shape[2]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.d)             # (1, H, n, t+n)
        causal = torch.ones(n, t, dtype=torch.bool).triu(t - n + 1)
        att = att.masked_fill(causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(1, n, self.h * self.d)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, f = cfg["d_model"], cfg["d_ff"]
        self.gate_proj = nn.Linear(c, f, bias=False)
        self.up_proj = nn.Linear(c, f, bias=False)
        self.down_proj = nn.Linear(f, c, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["d_model"], cfg["rms_eps"])
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["d_model"], cfg["rms_eps"])
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))

    def decode(self, x, cos, sin, cache):
        h = x + self.self_attn.decode(self.input_layernorm(x), cos, sin, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama(nn.Module):
    def __init__(self, cfg, T):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg["vocab"], cfg["d_model"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layers"]))
        self.norm = RMSNorm(cfg["d_model"], cfg["rms_eps"])
        d = cfg["head_dim"]
        inv_freq = cfg["rope_theta"] ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (T, D/2)
        angles = torch.cat((angles, angles), dim=-1)                                 # (T, D)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1),
                             persistent=False)
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=0.02)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)

    def forward(self, tokens, targets):
        x = self.embed_tokens(tokens)                                   # (B, T, C)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        logits = self.norm(x) @ self.embed_tokens.weight.t()            # (B, T, V) tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    @torch.no_grad()
    def decode(self, tokens, caches, pos):
        """tokens (1, n) at positions pos.. with per-layer KV caches: the last logits (V)."""
        n = tokens.shape[1]
        cos, sin = self.cos[pos:pos + n], self.sin[pos:pos + n]
        x = self.embed_tokens(tokens)
        for layer, cache in zip(self.layers, caches):
            x = layer.decode(x, cos, sin, cache)
        return self.norm(x[:, -1]) @ self.embed_tokens.weight.t()       # (1, V) the last row


def apply_method(model, method, r, alpha):
    """Freeze what the method does not train; wrap projections with LoRA. Returns the trainable
    parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = []
    for layer in model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in ALL_LINEAR:
                lin = getattr(parent, name, None)
                if lin is None:
                    continue
                if method == "full":
                    lin.weight.requires_grad_(True)
                    trainable.append(lin.weight)
                else:
                    wrapped = LoRALinear(lin, r, alpha)
                    setattr(parent, name, wrapped)
                    trainable += [wrapped.lora_A, wrapped.lora_B]
    return trainable


def openblas_info():
    """The OpenBLAS kernel and thread count torch's BLAS calls run with (same process)."""
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode(), lib.openblas_get_num_threads()
        except (OSError, AttributeError):
            continue
    return "unknown", -1


def bench_one(size, method, args):
    cfg = size_config(size, args)
    torch.manual_seed(args.seed)
    model = Llama(cfg, args.seq)
    params = apply_method(model, method, args.rank, 8.0)  # lora_alpha 8, as the plugin's default
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, cfg["vocab"], (args.batch, args.seq), generator=gen)
    targets = torch.randint(0, cfg["vocab"], (args.batch, args.seq), generator=gen)

    # bf16: PyTorch's mixed-precision recipe on the CPU, autocast (linear layers and matmuls
    # in bfloat16, weights and optimizer in fp32)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    loss_first = None
    for _ in range(args.warmup):
        loss = step()
        loss_first = loss if loss_first is None else loss_first
    per_step = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
            loss_first = loss if loss_first is None else loss_first
        per_step.append((time.perf_counter() - t0) / args.steps)
    med = statistics.median(per_step)
    # KiB on Linux: the process's high-water mark so far (one size and method per process
    # gives that run's peak)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    trainable = sum(p.numel() for p in params)
    return dict(size=size, method=method, trainable=trainable,
                optimizer_state_bytes=2 * 4 * trainable, step_seconds=per_step,
                step_seconds_median=med, tokens_per_second=args.batch * args.seq / med,
                loss_first=loss_first, loss_last=loss, peak_rss_mib=peak_mib, **cfg)


def bench_generate(size, args):
    """bench_generate's loop: a random prompt in one call, then greedy tokens one at a time
    with the KV cache; prefill time and decode tokens/s, medians over repeats."""
    cfg = size_config(size, args)
    torch.manual_seed(args.seed)
    model = Llama(cfg, args.prompt + args.generate).eval()
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, cfg["vocab"], (1, args.prompt), generator=gen)
    prefill, rate = [], []
    for r in range(args.repeats):
        caches = [[None, None] for _ in model.layers]
        t0 = time.perf_counter()
        logits = model.decode(prompt, caches, 0)
        t1 = time.perf_counter()
        pos = args.prompt
        for k in range(args.generate):
            nxt = logits.argmax(dim=-1, keepdim=True)                   # (1, 1)
            if k + 1 < args.generate:
                logits = model.decode(nxt, caches, pos)
                pos += 1
        t2 = time.perf_counter()
        prefill.append(t1 - t0)
        rate.append((args.generate - 1) / (t2 - t1))
        print(f"  repeat {r + 1}: prefill {1e3 * prefill[-1]:.1f} ms, decode {rate[-1]:.1f} "
              f"tokens/s", flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"median: prefill {1e3 * statistics.median(prefill):.1f} ms, decode "
          f"{statistics.median(rate):.1f} tokens/s, peak RSS {peak_mib:.0f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", action="append", help="d_model x n_layers, e.g. 256x4")
    ap.add_argument("--method", action="append", choices=("full", "lora"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--kv-heads", type=int, default=0, help="default heads / 2")
    ap.add_argument("--d-ff", type=int, default=0, help="default 8/3 d_model")
    ap.add_argument("--vocab", type=int, default=0, help=f"default {BYTE_VOCAB}")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="a model's shape; a --size after it cuts its layers")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: torch.autocast('cpu', dtype=torch.bfloat16) around the forward")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the figures as JSON")
    ap.add_argument("--generate", type=int, default=0,
                    help="instead of training: greedy generation of this many tokens with a "
                         "KV cache after a random prompt (as bench_generate)")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens with --generate")
    args = ap.parse_args()
    if args.preset:
        p = PRESETS[args.preset]
        args.head_dim = p["head_dim"]
        args.kv_heads = args.kv_heads or p["kv_heads"]
        args.d_ff = args.d_ff or p["d_ff"]
        args.vocab = args.vocab or p["vocab"]
        args.size = args.size or [p["size"]]
    sizes = args.size or ["128x4", "256x4"]
    methods = args.method or ["full", "lora"]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.generate > 0:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: {sizes[0]}, prompt "
              f"{args.prompt}, {args.generate} new tokens, greedy, KV cache")
        bench_generate(sizes[0], args)
        return 0
    core, blas_threads = openblas_info()
    print("torch reference of the training-step benchmark")
    print(f"torch {torch.__version__}  intra-op threads: {torch.get_num_threads()}  "
          f"OpenBLAS core: {core}  OpenBLAS threads: {blas_threads}  "
          f"OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  "
          f"OMP_WAIT_POLICY: {os.environ['OMP_WAIT_POLICY']}")
    print(f"batch B={args.batch} x seq T={args.seq}; {args.warmup} warm-up + {args.steps} "
          f"timed steps, median of {args.repeats} repeats; lora r={args.rank}; "
          f"precision {args.precision}")
    print(f"{'size':<8} {'method':<6} {'trainable':>11} {'ms/step':>9} {'tokens/s':>10} "
          f"{'loss':>7} {'peak MiB':>8}")
    results = []
    for size in sizes:
        for method in methods:
            r = bench_one(size, method, args)
            results.append(r)
            print(f"{size:<8} {method:<6} {r['trainable']:>11} "
                  f"{r['step_seconds_median'] * 1e3:>9.2f} {r['tokens_per_second']:>10.0f} "
                  f"{r['loss_last']:>7.4f} {r['peak_rss_mib']:>8.0f}", flush=True)
    if args.json:
        doc = dict(implementation="torch", torch_version=torch.__version__,
                   threads=torch.get_num_threads(), openblas_corename=core,
                   openblas_threads=blas_threads,
                   omp_wait_policy=os.environ["OMP_WAIT_POLICY"], batch=args.batch, seq=args.seq,
                   warmup=args.warmup, steps=args.steps, repeats=args.repeats,
                   lora_r=args.rank, lr=args.lr, precision=args.precision, results=results)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
