/*
 * tokenizer.c: the byte-level tokenizer. A byte is its own id; BOS, EOS and PAD sit above 255,
 * so any byte string (UTF-8 or not) round-trips exactly.
 */
#include "tokenizer.h"

int32_t tok_encode(const char *s, int32_t *out, int32_t cap) {
    const unsigned char *p = (const unsigned char *)s;
    int32_t n = 0;
    while (n < cap && p[n] != '\0') {
        out[n] = (int32_t)p[n];
        n++;
    }
    return n;
}

int32_t tok_decode(const int32_t *ids, int32_t n, char *out, int32_t cap) {
    if (cap <= 0)
        return 0;
    int32_t len = 0;
    for (int32_t i = 0; i < n && len < cap - 1; i++) {
        /* specials (and anything outside the byte range) carry no text */
        if (ids[i] < 0 || ids[i] > 255)
            continue;
        out[len++] = (char)(unsigned char)ids[i];
    }
    out[len] = '\0';
    return len;
}
