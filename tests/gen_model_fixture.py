#!/usr/bin/python3
# Writes the PyTorch reference fixtures of the model test (tests/model/model_torch.c):
#   tests/fixtures/model_tied_gqa.bin    tied head, grouped-query attention
#   tests/fixtures/model_untied_mha.bin  untied head, H == KV, head_dim != d_model / n_heads
#   tests/fixtures/model_qwen2.bin       qwen2: q/k/v biases (modeling_qwen2.py)
#   tests/fixtures/model_qwen3.bin       qwen3: per-head RMSNorm of q and k before RoPE, H*D != C
#   tests/fixtures/model_llama3_rope.bin llama with rope_scaling llama3 (modeling_rope_utils.py)
# Regenerate from the repository root with:  /usr/bin/python3 tests/gen_model_fixture.py
# (needs torch; not run by the build or CI). The output is deterministic for a torch version.
#
# The llama decoder is written out here by hand, in float64, from the HF llama formulas:
# RMSNorm, rotate-half rotary embeddings, causal grouped-query attention with repeat_kv,
# SwiGLU MLP, cross-entropy with ignore_index -1 (mean over rows with a target).
#
# File layout, little-endian:
#   u32 magic 0x4d544650 ("PFTM"), u32 version (1, or 2 for the families below)
#   i32 vocab, d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff, max_seq, tied, B, T
#   f32 rms_eps, rope_theta
#   version 2 only: i32 qkv_bias, qk_norm, rope_type (0 default, 2 llama3), original context;
#                   f32 factor, low_freq_factor, high_freq_factor
#   i32 n_tensors, then per tensor: i32 name length, name bytes, i32 ndim, i32 shape[ndim],
#       f32 values                       (model.h tensor order, HF names)
#   i32 tokens[B*T], i32 targets[B*T]    (-1 = no loss at that row)
#   f32 logits[B*T*V], f64 loss
#   per tensor, same order: f32 gradient values
#   u32 magic again
import math
import os
import struct
import sys

import torch

MAGIC = 0x4D544650

CONFIGS = [
    dict(file="model_tied_gqa.bin", vocab=29, d_model=16, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=4, d_ff=40, max_seq=16, rms_eps=1e-5, rope_theta=10000.0,
         tied=1, B=2, T=7, seed=1234),
    dict(file="model_untied_mha.bin", vocab=23, d_model=12, n_layers=2, n_heads=3,
         n_kv_heads=3, head_dim=6, d_ff=20, max_seq=16, rms_eps=1e-6, rope_theta=1000.0,
         tied=0, B=3, T=6, seed=5678),
    dict(file="model_qwen2.bin", vocab=31, d_model=16, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=4, d_ff=24, max_seq=16, rms_eps=1e-6, rope_theta=1000000.0,
         tied=1, B=2, T=7, seed=2468, qkv_bias=1),
    dict(file="model_qwen3.bin", vocab=27, d_model=16, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=8, d_ff=24, max_seq=16, rms_eps=1e-6, rope_theta=1000000.0,
         tied=0, B=2, T=6, seed=1357, qk_norm=1),
    dict(file="model_llama3_rope.bin", vocab=25, d_model=16, n_layers=2, n_heads=2,
         n_kv_heads=1, head_dim=8, d_ff=24, max_seq=16, rms_eps=1e-5, rope_theta=500000.0,
         tied=1, B=2, T=12, seed=9753, rope=(8.0, 1.0, 4.0, 16)),
]


def tensor_list(c):
    """(name, shape) in the order of host/model/model.c."""
    C, HD = c["d_model"], c["n_heads"] * c["head_dim"]
    KVD, F = c["n_kv_heads"] * c["head_dim"], c["d_ff"]
    out = [("model.embed_tokens.weight", (c["vocab"], C))]
    for layer in range(c["n_layers"]):
        p = f"model.layers.{layer}."
        out += [
            (p + "input_layernorm.weight", (C,)),
            (p + "self_attn.q_proj.weight", (HD, C)),
            (p + "self_attn.k_proj.weight", (KVD, C)),
            (p + "self_attn.v_proj.weight", (KVD, C)),
            (p + "self_attn.o_proj.weight", (C, HD)),
            (p + "post_attention_layernorm.weight", (C,)),
            (p + "mlp.gate_proj.weight", (F, C)),
            (p + "mlp.up_proj.weight", (F, C)),
            (p + "mlp.down_proj.weight", (C, F)),
        ]
        if c.get("qkv_bias"):
            out += [(p + "self_attn.q_proj.bias", (HD,)), (p + "self_attn.k_proj.bias", (KVD,)),
                    (p + "self_attn.v_proj.bias", (KVD,))]
        if c.get("qk_norm"):
            out += [(p + "self_attn.q_norm.weight", (c["head_dim"],)),
                    (p + "self_attn.k_norm.weight", (c["head_dim"],))]
    out.append(("model.norm.weight", (C,)))
    if not c["tied"]:
        out.append(("lm_head.weight", (c["vocab"], C)))
    return out


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(T, D, theta, rope=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    if rope:  # _compute_llama3_parameters
        factor, low, high, orig = rope
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > orig / low, inv_freq / factor, inv_freq)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < orig / high) * ~(wavelen > orig / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)                              # (T, D)
    return emb.cos(), emb.sin()


def attention(x, p, layer, c, cos, sin):
    B, T, _ = x.shape
    H, KV, D = c["n_heads"], c["n_kv_heads"], c["head_dim"]
    pre = f"model.layers.{layer}.self_attn."
    q, k, v = (x @ p[pre + n + "_proj.weight"].T for n in "qkv")
    if c.get("qkv_bias"):  # qwen2
        q, k, v = q + p[pre + "q_proj.bias"], k + p[pre + "k_proj.bias"], v + p[pre + "v_proj.bias"]
    q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
    if c.get("qk_norm"):  # qwen3: each head's q and k over its D values, before RoPE
        q = rms_norm(q, p[pre + "q_norm.weight"], c["rms_eps"])
        k = rms_norm(k, p[pre + "k_norm.weight"], c["rms_eps"])
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)          # (B, heads, T, D)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    # repeat_kv: kv head j serves query heads j*g .. j*g+g-1
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    scores = q @ k.transpose(-1, -2) / (D ** 0.5)                             # (B, H, T, T)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v                                     # (B, H, T, D)
    y = y.transpose(1, 2).reshape(B, T, H * D)
    return y @ p[pre + "o_proj.weight"].T


def mlp(x, p, layer):
    pre = f"model.layers.{layer}.mlp."
    gate = x @ p[pre + "gate_proj.weight"].T
    up = x @ p[pre + "up_proj.weight"].T
    return (torch.nn.functional.silu(gate) * up) @ p[pre + "down_proj.weight"].T


def forward(p, tokens, targets, c):
    T = tokens.shape[1]
    cos, sin = rope_cos_sin(T, c["head_dim"], c["rope_theta"], c.get("rope"))
    x = p["model.embed_tokens.weight"][tokens]                                # (B, T, C)
    for layer in range(c["n_layers"]):
        pre = f"model.layers.{layer}."
        x = x + attention(rms_norm(x, p[pre + "input_layernorm.weight"], c["rms_eps"]),
                          p, layer, c, cos, sin)
        x = x + mlp(rms_norm(x, p[pre + "post_attention_layernorm.weight"], c["rms_eps"]),
                    p, layer)
    h = rms_norm(x, p["model.norm.weight"], c["rms_eps"])
    head = p["model.embed_tokens.weight"] if c["tied"] else p["lm_head.weight"]
    logits = h @ head.T                                                       # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["vocab"]),
                                             targets.reshape(-1), ignore_index=-1)
    return logits, loss


def make_fixture(c, path):
    g = torch.Generator().manual_seed(c["seed"])
    tensors = tensor_list(c)
    params = {}
    for name, shape in tensors:
        if name.endswith(".bias"):
            t = 0.3 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # norms away from 1 so their gradients are generic
            t = 1.0 + 0.2 * torch.randn(shape, generator=g)
        else:
            t = (0.5 if "embed" in name else 0.3) * torch.randn(shape, generator=g)
        # the values the C side sees are float32; compute with exactly those
        params[name] = t.float().double().requires_grad_(True)
    B, T, V = c["B"], c["T"], c["vocab"]
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    drop = torch.rand((B, T), generator=g) < 0.25
    drop[0, 0] = True
    targets[drop] = -1

    logits, loss = forward(params, tokens, targets, c)
    loss.backward()

    out = bytearray()
    version = 2 if ("qkv_bias" in c or "qk_norm" in c or "rope" in c) else 1
    out += struct.pack("<II", MAGIC, version)
    out += struct.pack("<11i", V, c["d_model"], c["n_layers"], c["n_heads"], c["n_kv_heads"],
                       c["head_dim"], c["d_ff"], c["max_seq"], c["tied"], B, T)
    out += struct.pack("<2f", c["rms_eps"], c["rope_theta"])
    if version == 2:
        factor, low, high, orig = c.get("rope", (0.0, 0.0, 0.0, 0))
        out += struct.pack("<4i", c.get("qkv_bias", 0), c.get("qk_norm", 0), 2 if "rope" in c else 0, orig)
        out += struct.pack("<3f", factor, low, high)
    out += struct.pack("<i", len(tensors))
    for name, shape in tensors:
        nb = name.encode()
        out += struct.pack("<i", len(nb)) + nb
        out += struct.pack(f"<i{len(shape)}i", len(shape), *shape)
        out += params[name].detach().float().numpy().astype("<f4").tobytes()
    out += tokens.to(torch.int32).numpy().astype("<i4").tobytes()
    out += targets.to(torch.int32).numpy().astype("<i4").tobytes()
    out += logits.detach().float().numpy().astype("<f4").tobytes()
    out += struct.pack("<d", loss.item())
    for name, _ in tensors:
        out += params[name].grad.float().numpy().astype("<f4").tobytes()
    out += struct.pack("<I", MAGIC)
    with open(path, "wb") as f:
        f.write(out)
    print(f"{path}: {len(out)} bytes, loss {loss.item():.6f}, "
          f"{int((targets >= 0).sum())} of {B * T} rows with a target")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "fixtures"), exist_ok=True)
    only = set(sys.argv[1:])  # file names to write (default: all)
    for c in CONFIGS:
        if not only or c["file"] in only:
            make_fixture(c, os.path.join(here, "fixtures", c["file"]))


if __name__ == "__main__":
    main()
