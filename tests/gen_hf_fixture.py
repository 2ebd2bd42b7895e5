#!/usr/bin/python3
"""Write the small HF llama checkpoints and conversion tables the io tests read.

Run from the repository root with Debian's python3 (it has torch):

    /usr/bin/python3 tests/gen_hf_fixture.py

Writes, under tests/fixtures/:
  hf_bf16_v5_tied/    config.json in the transformers v5 layout (rope_parameters), tied
                      embeddings, BF16 weights, head_dim * heads != hidden_size
  hf_f16_v4_gqa/      config.json in the v4 layout (top-level rope_theta, rope_scaling null),
                      untied head, grouped-query attention, F16 weights plus an old-style F32
                      rotary_emb.inv_freq buffer that loaders must ignore
  each with expected.safetensors: every weight as torch converts it to fp32, and the config
  values a loader must derive (defaults filled in) in its __metadata__;
  hf_fp_conversions.safetensors: fp32 values (random, ties, subnormals, overflow edges, inf,
  nan) with torch's F16 and BF16 roundings of them, and those converted back to fp32.

safetensors files are written by hand (struct + json) so that the `safetensors` package is not
needed.
"""
import json
import os
import struct

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

DTYPES = {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2)}


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: torch tensor}. Sorted by dtype size (desc) then name, header padded
    with spaces to a multiple of 8, "__metadata__" first with "format": "pt"."""
    meta = {"format": "pt"}
    meta.update(metadata or {})
    order = sorted(tensors, key=lambda n: (-DTYPES[tensors[n].dtype][1], n))
    header = {"__metadata__": meta}
    blobs = []
    offset = 0
    for name in order:
        t = tensors[name].contiguous()
        dtype, size = DTYPES[t.dtype]
        # raw little-endian bytes through an integer view, no numpy round trip of the values
        if size == 2:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.view(torch.int32).numpy().astype("<i4").tobytes()
        assert len(raw) == t.numel() * size
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def llama_tensors(gen, vocab, hidden, inter, layers, heads, kv, head_dim, tied):
    """HF names and shapes (as HF transformers names them), random values like a trained model's scale."""
    def mat(rows, cols):
        return torch.randn(rows, cols, generator=gen) * 0.05

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=gen)

    t = {"model.embed_tokens.weight": mat(vocab, hidden), "model.norm.weight": norm(hidden)}
    if not tied:
        t["lm_head.weight"] = mat(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(hidden)
        t[p + "post_attention_layernorm.weight"] = norm(hidden)
        t[p + "self_attn.q_proj.weight"] = mat(heads * head_dim, hidden)
        t[p + "self_attn.k_proj.weight"] = mat(kv * head_dim, hidden)
        t[p + "self_attn.v_proj.weight"] = mat(kv * head_dim, hidden)
        t[p + "self_attn.o_proj.weight"] = mat(hidden, heads * head_dim)
        t[p + "mlp.gate_proj.weight"] = mat(inter, hidden)
        t[p + "mlp.up_proj.weight"] = mat(inter, hidden)
        t[p + "mlp.down_proj.weight"] = mat(hidden, inter)
    return t


def f32_str(x):
    """Shortest decimal that reads back as the same fp32 value."""
    v = torch.tensor(x, dtype=torch.float32).item()
    for digits in range(1, 10):
        s = "%.*g" % (digits, v)
        if torch.tensor(float(s), dtype=torch.float32).item() == v:
            return s
    return repr(v)


def write_checkpoint(name, config, weights, dtype, expected_cfg):
    folder = os.path.join(ROOT, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    stored = {}
    for n, t in weights.items():
        stored[n] = t if n.endswith("rotary_emb.inv_freq") else t.to(dtype)
    write_safetensors(os.path.join(folder, "model.safetensors"), stored)
    expected = {n: t.to(torch.float32) for n, t in stored.items()
                if not n.endswith("rotary_emb.inv_freq")}
    meta = {k: (f32_str(v) if isinstance(v, float) else str(v)) for k, v in expected_cfg.items()}
    write_safetensors(os.path.join(folder, "expected.safetensors"), expected, meta)


def bf16_v5_tied():
    gen = torch.Generator().manual_seed(1234)
    vocab, hidden, inter, layers, heads, kv, head_dim = 40, 16, 24, 2, 4, 4, 6
    w = llama_tensors(gen, vocab, hidden, inter, layers, heads, kv, head_dim, tied=True)
    # edge values a BF16 reader must carry over: the largest finite, a subnormal, -0
    w["model.embed_tokens.weight"][0, :4] = torch.tensor([3.3895313892515355e38, 1e-40, -0.0,
                                                         1e-3])
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "dtype": "bfloat16",
        "eos_token_id": [2, 3],
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": 64,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        "tie_word_embeddings": True,
        "transformers_version": "5.0.0",
        "use_cache": True,
        "vocab_size": vocab,
    }
    expected_cfg = {"vocab": vocab, "d_model": hidden, "n_layers": layers, "n_heads": heads,
                    "n_kv_heads": kv, "head_dim": head_dim, "d_ff": inter, "max_seq": 64,
                    "rms_eps": 1e-05, "rope_theta": 500000.0, "tied": 1}
    write_checkpoint("hf_bf16_v5_tied", config, w, torch.bfloat16, expected_cfg)


def f16_v4_gqa():
    gen = torch.Generator().manual_seed(5678)
    vocab, hidden, inter, layers, heads, kv = 48, 16, 20, 2, 4, 2
    head_dim = hidden // heads  # absent from config.json: the loader must derive it
    w = llama_tensors(gen, vocab, hidden, inter, layers, heads, kv, head_dim, tied=False)
    # edge values an F16 reader must carry over: +-max, least subnormal, a subnormal, -0
    w["model.embed_tokens.weight"][0, :6] = torch.tensor([65504.0, -65504.0, 6e-8, 1e-5, -0.0,
                                                         0.33325])
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    w["model.layers.0.self_attn.rotary_emb.inv_freq"] = inv_freq
    config = {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": 128,
        "model_type": "llama",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": vocab,
    }
    expected_cfg = {"vocab": vocab, "d_model": hidden, "n_layers": layers, "n_heads": heads,
                    "n_kv_heads": kv, "head_dim": head_dim, "d_ff": inter, "max_seq": 128,
                    "rms_eps": 1e-06, "rope_theta": 10000.0, "tied": 0}
    write_checkpoint("hf_f16_v4_gqa", config, w, torch.float16, expected_cfg)


def halves(bits):
    return torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.float16)


def fp_conversions():
    """fp32 inputs chosen to hit every branch of a round-to-nearest-even conversion."""
    gen = torch.Generator().manual_seed(42)
    vals = []
    # random values over the whole range of both formats
    for scale in [1e-9, 1e-7, 1e-5, 1e-3, 1e-1, 1.0, 10.0, 1e3, 6e4, 1e6, 1e30, 1e38]:
        vals.append(torch.randn(200, generator=gen) * scale)
    # exact midpoints between neighbouring finite halves (ties), normal and subnormal
    h = torch.randint(0, 0x7bff, (1000,), generator=gen)
    lo = halves(h.tolist()).float()
    hi = halves((h + 1).tolist()).float()
    mid = (lo.double() + hi.double()) / 2
    vals.append(mid.float())
    vals.append(-mid.float())
    # one ulp (fp32) either side of those midpoints
    vals.append(torch.nextafter(mid.float(), torch.tensor(float("inf"))))
    vals.append(torch.nextafter(mid.float(), torch.tensor(0.0)))
    # bf16 ties: fp32 bit patterns with the low 16 bits exactly 0x8000, and near it
    b = torch.randint(0, 0x7f7f, (400,), generator=gen).to(torch.int64)
    for low in [0x8000, 0x7fff, 0x8001]:
        bits = (b << 16) | low
        vals.append(bits.to(torch.int32).view(torch.float32))
    # edges: overflow of f16 (65504 max, 65520 rounds to inf) and bf16, subnormal limits
    edges = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65519.996, 65520.0, 65536.0, 1e5, -65520.0,
             2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 1.5 * 2.0 ** -24, 2.0 ** -14,
             2.0 ** -14 - 2.0 ** -25, 2.0 ** -26, 1e-45, 1.1754942e-38, 1.1754944e-38,
             3.4028235e38, -3.4028235e38, 3.3895314e38, 3.3961776e38,
             float("inf"), float("-inf"), float("nan"), 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11,
             1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8]
    vals.append(torch.tensor(edges, dtype=torch.float32))
    f32 = torch.cat([v.float().flatten() for v in vals])
    f16 = f32.to(torch.float16)
    bf16 = f32.to(torch.bfloat16)
    write_safetensors(os.path.join(ROOT, "hf_fp_conversions.safetensors"), {
        "f32": f32, "f16": f16, "bf16": bf16,
        "f16_as_f32": f16.to(torch.float32), "bf16_as_f32": bf16.to(torch.float32),
    }, {"torch": torch.__version__})
    return f32.numel()


if __name__ == "__main__":
    os.makedirs(ROOT, exist_ok=True)
    bf16_v5_tied()
    f16_v4_gqa()
    n = fp_conversions()
    print(f"wrote fixtures under {ROOT} ({n} conversion cases)")
