/* vexp.h (inside host/model): exp over arrays, written so the compiler vectorises it (only
 * arithmetic, selects and bit moves, in fixed groups of 16 lanes); the softmax, cross-entropy
 * and SwiGLU kernels spend their time here (ops.c).
 *
 * exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2] (ln 2 split in
 * two for an exact product), exp(r) by its degree-6 Taylor polynomial (truncation below
 * 2.5e-8 relative there); at most 3 ulp from the correctly rounded value on [-87.3, 88.7]
 * (checked over every 4096th float by the vexp test). Below -87.3 the result is 0 (the
 * true value is a denormal under 1.2e-38, nothing a sum of probabilities can see), above
 * 88.7 +inf, and NaN stays NaN. */
#ifndef PEFT_MODEL_VEXP_H
#define PEFT_MODEL_VEXP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Selects on float bits with integer masks (m all ones or zero): integer comparisons, unlike
 * float ones under -ftrapping-math, let the compiler turn the loops into vector code. */
static inline uint32_t vexp_pick(uint32_t m, uint32_t a, uint32_t b)
{
    return (a & m) | (b & ~m);
}

static inline float vexp_one(float x)
{
    const uint32_t hi_bits = 0x42b17218u; /* 88.7228394f: exp overflows above */
    const uint32_t lo_bits = 0x42aeac50u; /* |-87.3365479f|: 2^-126 below */
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    uint32_t ax = xb & 0x7fffffffu, neg = 0u - (xb >> 31);
    uint32_t nan = 0u - (uint32_t)(ax > 0x7f800000u);
    uint32_t under = neg & (0u - (uint32_t)(ax > lo_bits)) & ~nan;
    uint32_t over = ~neg & (0u - (uint32_t)(ax > hi_bits)) & ~nan;
    uint32_t cb = vexp_pick(under, 0xc2aeac50u, vexp_pick(over, hi_bits, vexp_pick(nan, 0u, xb)));
    float xc;
    memcpy(&xc, &cb, sizeof xc);
    /* k = round(x / ln 2) by the 1.5 * 2^23 trick (round to nearest in the FPU's mode) */
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float k = t - 12582912.0f;
    float r = xc - k * 0.693145751953125f; /* ln 2, high part: k * it is exact */
    r = r - k * 1.42860682030941723e-6f;  /* ln 2 - the high part */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* times 2^k, k in [-126, 128] after the clamp, as 2^h 2^(k-h) with h = floor(k / 2):
     * both factors are normal floats built in the exponent field */
    int32_t ki = (int32_t)k, h = ki >> 1;
    uint32_t b1 = (uint32_t)(h + 127) << 23, b2 = (uint32_t)(ki - h + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    float y = p * s1 * s2;
    uint32_t yb;
    memcpy(&yb, &y, sizeof yb);
    yb = vexp_pick(under, 0u, vexp_pick(over, 0x7f800000u, vexp_pick(nan, xb, yb)));
    memcpy(&y, &yb, sizeof y);
    return y;
}

/* out[i] = exp(in[i] - shift), i < n (out may be in). */
static inline void vexp_shifted(float *out, const float *in, size_t n, float shift)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float v[16];
        for (int k = 0; k < 16; k++)
            v[k] = vexp_one(in[i + (size_t)k] - shift);
        memcpy(out + i, v, sizeof v);
    }
    for (; i < n; i++)
        out[i] = vexp_one(in[i] - shift);
}

/* The sum over i < n of exp(in[i] - shift), accumulated in double. */
static inline double vexp_sum_shifted(const float *in, size_t n, float shift)
{
    double acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += (double)vexp_one(in[i + (size_t)k] - shift);
    double sum = 0.0;
    for (int k = 0; k < 16; k++)
        sum += acc[k];
    for (; i < n; i++)
        sum += (double)vexp_one(in[i] - shift);
    return sum;
}

/* out[i] = sigmoid(in[i]) = 1 / (1 + exp(-in[i])), i < n. */
static inline void vsigmoid(float *out, const float *in, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float v[16];
        for (int k = 0; k < 16; k++)
            v[k] = 1.0f / (1.0f + vexp_one(-in[i + (size_t)k]));
        memcpy(out + i, v, sizeof v);
    }
    for (; i < n; i++)
        out[i] = 1.0f / (1.0f + vexp_one(-in[i]));
}

#endif
