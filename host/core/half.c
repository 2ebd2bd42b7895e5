/* half.c: IEEE fp16 and bfloat16 to and from fp32 (round to nearest even on the way down),
 * for checkpoints stored in 16 bits and weights kept that way in memory. */
#include <math.h>
#include <string.h>

#include "core.h"


float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in fp32 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        u = sign | 0x7f800000u | (mant << 13); /* inf, or nan with its payload */
    else
        u = sign | ((exp + 112u) << 23) | (mant << 13); /* rebias 15 -> 127 */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* nan: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x47800000u) /* >= 2^16, or inf: beyond the largest rounding target */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal half (>= 2^-14): rebias, round to nearest even */
        uint32_t m = a - 0x38000000u;
        m = (m + 0xfffu + ((m >> 13) & 1u)) >> 13; /* a carry into 0x7c00 is inf, as it should */
        return (uint16_t)(sign | m);
    }
    if (a <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 is a tie, zero is even) */
        return sign;
    /* subnormal half: value / 2^-24 = mant >> (126 - e), rounded to nearest even */
    uint32_t e = a >> 23;
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14 .. 24 */
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++; /* may become 0x400, the least normal */
    return (uint16_t)(sign | q);
}

float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(bf16_round_bits(u) >> 16);
}

