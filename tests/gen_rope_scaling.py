# The inverse RoPE frequencies of HF transformers (modeling_rope_utils: default, linear, llama3)
# in torch, for tests/model/rope_scaling.c (values pasted there). Run: /usr/bin/python3 tests/gen_rope_scaling.py
import math, torch
def default(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
def llama3(base, dim, factor, low, high, orig):
    inv_freq = default(base, dim)
    low_wavelen = orig / low; high_wavelen = orig / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)
print("llama3", ", ".join("%.9e" % v for v in llama3(500000.0, 64, 32.0, 1.0, 4.0, 8192).tolist()))
print("linear", ", ".join("%.9e" % v for v in (default(10000.0, 16) / 4.0).tolist()))
