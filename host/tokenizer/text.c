/*
 * text.c: the tokenizer's text types (code points with source offsets, growing byte strings),
 * UTF-8 in both directions, and the string -> id table.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"

/* ---- code points with source offsets --------------------------------------------------- */

static void ustr_reserve(struct ustr *s, size_t n) {
    if (n <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 16;
    while (cap < n)
        cap *= 2;
    s->cp = xrealloc(s->cp, cap * sizeof *s->cp);
    s->src = xrealloc(s->src, cap * sizeof *s->src);
    s->cap = cap;
}

void ustr_push(struct ustr *s, uint32_t cp, uint32_t src) {
    ustr_reserve(s, s->n + 1);
    s->cp[s->n] = cp;
    s->src[s->n++] = src;
}

void ustr_append(struct ustr *s, const struct ustr *from, size_t a, size_t b) {
    if (b <= a) return; /* nothing (and maybe no buffer on either side) */
    ustr_reserve(s, s->n + (b - a));
    memcpy(s->cp + s->n, from->cp + a, (b - a) * sizeof *s->cp);
    memcpy(s->src + s->n, from->src + a, (b - a) * sizeof *s->src);
    s->n += b - a;
}

void ustr_free(struct ustr *s) {
    free(s->cp);
    free(s->src);
    memset(s, 0, sizeof *s);
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

void utf8_decode(const char *text, size_t len, uint32_t base, struct ustr *out) {
    const unsigned char *s = (const unsigned char *)text;
    ustr_reserve(out, out->n + len);
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        uint32_t start = (uint32_t)i + base;
        if (c < 0x80) {
            out->cp[out->n] = c;
            out->src[out->n++] = start;
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* the range of the next byte */
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0; /* overlong */
            if (c == 0xED) hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07;
            if (c == 0xF0) lo = 0x90; /* overlong */
            if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
        } else {
            /* a continuation byte or a byte that never starts a character */
            out->cp[out->n] = 0xFFFD;
            out->src[out->n++] = start;
            i++;
            continue;
        }
        i++;
        /* The maximal subpart: a byte out of range ends it and is read again afresh. */
        while (need > 0 && i < len && s[i] >= lo && s[i] <= hi) {
            cp = cp << 6 | (s[i] & 0x3F);
            lo = 0x80, hi = 0xBF;
            need--, i++;
        }
        out->cp[out->n] = need == 0 ? cp : 0xFFFD;
        out->src[out->n++] = start;
    }
}

size_t utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

char *utf8_sanitize(const char *s, size_t len, size_t *out_len) {
    struct ustr u = {0};
    utf8_decode(s, len, 0, &u);
    struct bstr b = {0};
    for (size_t i = 0; i < u.n; i++)
        bstr_put_cp(&b, u.cp[i]);
    bstr_putc(&b, '\0');
    ustr_free(&u);
    *out_len = b.n - 1;
    return b.p;
}

/* ---- byte strings ---------------------------------------------------------------------- */

void bstr_put(struct bstr *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void bstr_putc(struct bstr *b, char c) { bstr_put(b, &c, 1); }

void bstr_put_cp(struct bstr *b, uint32_t cp) {
    char tmp[4];
    bstr_put(b, tmp, utf8_put(cp, tmp));
}

void bstr_free(struct bstr *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- string -> id --------------------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n) {
    /* FNV-1a, then a final mix so that the low bits (the slot) depend on every byte */
    uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, p, n);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static void strmap_grow(struct strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint32_t *slot = xcalloc(cap, sizeof *slot);
    for (size_t k = 0; k < m->n; k++) {
        size_t i = tok_hash(m->key[k], m->key_len[k]) & (cap - 1);
        while (slot[i])
            i = (i + 1) & (cap - 1);
        slot[i] = (uint32_t)k + 1;
    }
    free(m->slot);
    m->slot = slot;
    m->cap = cap;
}

static size_t strmap_find_slot(const struct strmap *m, const char *key, size_t len) {
    size_t i = tok_hash(key, len) & (m->cap - 1);
    while (m->slot[i]) {
        uint32_t k = m->slot[i] - 1;
        if (m->key_len[k] == len && memcmp(m->key[k], key, len) == 0)
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

void strmap_put(struct strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap)
        strmap_grow(m);
    size_t i = strmap_find_slot(m, key, len);
    if (m->slot[i]) {
        m->val[m->slot[i] - 1] = val; /* a later entry wins, as a JS Map.set does */
        return;
    }
    if (m->n == m->cap_keys) {
        m->cap_keys = m->cap_keys ? m->cap_keys * 2 : 1024;
        m->key = xrealloc(m->key, m->cap_keys * sizeof *m->key);
        m->key_len = xrealloc(m->key_len, m->cap_keys * sizeof *m->key_len);
        m->val = xrealloc(m->val, m->cap_keys * sizeof *m->val);
    }
    m->key[m->n] = key;
    m->key_len[m->n] = (uint32_t)len;
    m->val[m->n] = val;
    m->slot[i] = (uint32_t)++m->n;
}

int32_t strmap_get(const struct strmap *m, const char *key, size_t len) {
    if (!m->cap)
        return -1;
    size_t i = strmap_find_slot(m, key, len);
    return m->slot[i] ? m->val[m->slot[i] - 1] : -1;
}

void strmap_free(struct strmap *m) {
    free(m->slot);
    free(m->key);
    free(m->key_len);
    free(m->val);
    memset(m, 0, sizeof *m);
}
