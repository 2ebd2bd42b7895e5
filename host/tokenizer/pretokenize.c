/*
 * pretokenize.c: the pre-tokenizers: Split (Isolated), ByteLevel and Metaspace, applied in
 * sequence; each turns every piece of the previous one into pieces of its own.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"

/* GPT-2's byte map: printable bytes stand for themselves, the 68 others (controls, space, DEL,
 * NBSP, soft hyphen) take U+0100.. in increasing byte order, so that no token holds a space. */
uint32_t byte_level_char(uint8_t byte) {
    static uint32_t map[256];
    static int ready;
    if (!ready) {
        uint32_t next = 256;
        for (int b = 0; b < 256; b++) {
            int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            map[b] = printable ? (uint32_t)b : next++;
        }
        ready = 1;
    }
    return map[byte];
}

int byte_level_byte(uint32_t cp) {
    static int16_t inverse[324];
    static int ready;
    if (!ready) {
        for (int k = 0; k < 324; k++) inverse[k] = -1;
        for (int b = 0; b < 256; b++) inverse[byte_level_char((uint8_t)b)] = (int16_t)b;
        ready = 1;
    }
    return cp < 324 ? inverse[cp] : -1;
}

void ranges_push(struct ranges *r, size_t a, size_t b) {
    if (r->n + 2 > r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->v = xrealloc(r->v, r->cap * sizeof *r->v);
    }
    r->v[r->n++] = a;
    r->v[r->n++] = b;
}

/* Append in[a..b) to out as one piece. */
static void piece_copy(struct ustr *out, struct ranges *pieces, const struct ustr *in, size_t a,
                       size_t b) {
    size_t start = out->n;
    ustr_append(out, in, a, b);
    ranges_push(pieces, start, out->n);
}

/* The UTF-8 bytes of in[a..b), each as its ByteLevel character, as one piece. */
static void piece_bytes(struct ustr *out, struct ranges *pieces, const struct ustr *in, size_t a,
                        size_t b, int prefix_space) {
    size_t start = out->n;
    if (prefix_space)
        ustr_push(out, byte_level_char(' '), b > a ? in->src[a] : 0);
    for (size_t k = a; k < b; k++) {
        char buf[4];
        size_t m = utf8_put(in->cp[k], buf);
        for (size_t j = 0; j < m; j++)
            ustr_push(out, byte_level_char((uint8_t)buf[j]), in->src[k]);
    }
    ranges_push(pieces, start, out->n);
}

static void split_isolated(const struct tok_regex *re, const struct ustr *in, size_t a, size_t b,
                           struct ustr *out, struct ranges *pieces) {
    size_t prev = a, from = a, s, e;
    /* The regex sees only this piece: a view starting at a. */
    while (from <= b && tok_regex_find(re, in->cp + a, b - a, from - a, &s, &e)) {
        s += a, e += a;
        if (e == s) { /* an empty match splits nothing */
            from = s + 1;
            continue;
        }
        if (prev < s) piece_copy(out, pieces, in, prev, s);
        piece_copy(out, pieces, in, s, e);
        prev = from = e;
    }
    if (prev < b) piece_copy(out, pieces, in, prev, b);
}

static void byte_level(const struct pretokenizer *p, const struct ustr *in, size_t a, size_t b,
                       struct ustr *out, struct ranges *pieces) {
    int prefix = p->add_prefix_space && (b == a || in->cp[a] != ' ');
    if (!p->re) {
        piece_bytes(out, pieces, in, a, b, prefix);
        return;
    }
    /* With the prefix space the regex runs on " " + piece: copy it so that it can. */
    struct ustr tmp = {0};
    if (prefix) ustr_push(&tmp, ' ', b > a ? in->src[a] : 0);
    ustr_append(&tmp, in, a, b);
    size_t from = 0, s, e;
    /* String.match with a global regex keeps the matches only */
    while (from <= tmp.n && tok_regex_find(p->re, tmp.cp, tmp.n, from, &s, &e)) {
        if (e == s) {
            from = s + 1;
            continue;
        }
        piece_bytes(out, pieces, &tmp, s, e, 0);
        from = e;
    }
    ustr_free(&tmp);
}

static void metaspace(const struct pretokenizer *p, const struct ustr *in, size_t a, size_t b,
                      int32_t section_index, struct ustr *out, struct ranges *pieces) {
    size_t start = out->n;
    int starts_with = b > a && (in->cp[a] == ' ' || in->cp[a] == p->replacement);
    if (p->add_prefix_space && !starts_with &&
        (p->prepend_scheme == 0 || (p->prepend_scheme == 1 && section_index == 0)))
        ustr_push(out, p->replacement, b > a ? in->src[a] : 0);
    for (size_t k = a; k < b; k++)
        ustr_push(out, in->cp[k] == ' ' ? p->replacement : in->cp[k], in->src[k]);
    ranges_push(pieces, start, out->n);
}

void pretokenize_apply(const struct tokenizer *t, const struct ustr *s, int32_t section_index,
                       struct ustr *out, struct ranges *pieces) {
    struct ustr cur = {0};
    struct ranges cur_pieces = {0};
    ustr_append(&cur, s, 0, s->n);
    ranges_push(&cur_pieces, 0, s->n);
    for (int32_t k = 0; k < t->n_pre; k++) {
        const struct pretokenizer *p = &t->pre[k];
        struct ustr next = {0};
        struct ranges next_pieces = {0};
        for (size_t j = 0; j < cur_pieces.n; j += 2) {
            size_t a = cur_pieces.v[j], b = cur_pieces.v[j + 1];
            if (p->kind == PRE_SPLIT) split_isolated(p->re, &cur, a, b, &next, &next_pieces);
            else if (p->kind == PRE_BYTE_LEVEL) byte_level(p, &cur, a, b, &next, &next_pieces);
            else metaspace(p, &cur, a, b, section_index, &next, &next_pieces);
        }
        ustr_free(&cur);
        free(cur_pieces.v);
        cur = next;
        cur_pieces = next_pieces;
    }
    ustr_append(out, &cur, 0, cur.n);
    for (size_t j = 0; j < cur_pieces.n; j += 2)
        ranges_push(pieces, cur_pieces.v[j] + (out->n - cur.n), cur_pieces.v[j + 1] + (out->n - cur.n));
    ustr_free(&cur);
    free(cur_pieces.v);
}
