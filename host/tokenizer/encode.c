/*
 * encode.c: text to ids. Added tokens are cut out first (lstrip/rstrip take the whitespace
 * beside them); every other section is normalized, pre-tokenized and encoded by BPE; the
 * post-processor's specials go around the whole.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"
#include "unicode.h"

void tok_encoding_push(struct tok_encoding *e, int32_t id, int64_t offset) {
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->ids = xrealloc(e->ids, e->cap * sizeof *e->ids);
        e->offset = xrealloc(e->offset, e->cap * sizeof *e->offset);
    }
    e->ids[e->n] = id;
    e->offset[e->n++] = offset;
}

void tok_encoding_free(struct tok_encoding *e) {
    free(e->ids);
    free(e->offset);
    memset(e, 0, sizeof *e);
}

struct section {
    size_t a, b;
    int32_t added; /* index into t->added, or -1 for text */
};

static int is_space(uint32_t cp) { return (unicode_class(cp) & UNI_WS) != 0; }

static void encode_text_section(const struct tokenizer *t, const struct ustr *u, size_t a, size_t b,
                                int32_t section_index, struct tok_encoding *out) {
    struct ustr s = {0};
    ustr_append(&s, u, a, b);
    for (int32_t k = 0; k < t->n_norm; k++) normalize_apply(&t->norm[k], &s);
    if (s.n == 0) {
        ustr_free(&s);
        return;
    }
    struct ustr pieces_text = {0};
    struct ranges pieces = {0};
    if (t->n_pre > 0) {
        pretokenize_apply(t, &s, section_index, &pieces_text, &pieces);
    } else {
        ustr_append(&pieces_text, &s, 0, s.n);
        ranges_push(&pieces, 0, s.n);
    }
    size_t first = out->n;
    for (size_t j = 0; j < pieces.n; j += 2)
        bpe_encode_piece(t, &pieces_text, pieces.v[j], pieces.v[j + 1], out);
    if (t->fuse_unk && t->unk_id >= 0) { /* a run of unknown tokens becomes one */
        size_t w = first;
        for (size_t r = first; r < out->n; r++) {
            if (out->ids[r] == t->unk_id && w > first && out->ids[w - 1] == t->unk_id) continue;
            out->ids[w] = out->ids[r];
            out->offset[w++] = out->offset[r];
        }
        out->n = w;
    }
    free(pieces.v);
    ustr_free(&pieces_text);
    ustr_free(&s);
}

static void encode_bytes(const char *text, size_t len, int add_special, struct tok_encoding *out) {
    if (add_special & TOK_ADD_PREFIX) tok_encoding_push(out, TOK_BOS, -1);
    for (size_t i = 0; i < len; i++) tok_encoding_push(out, (int32_t)(unsigned char)text[i], (int64_t)i);
}

void tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_special,
                      struct tok_encoding *out) {
    if (t->bytes) {
        encode_bytes(text, len, add_special, out);
        return;
    }
    struct ustr u = {0};
    utf8_decode(text, len, 0, &u);

    struct section *sec = NULL;
    size_t n_sec = 0, cap_sec = 0, start = 0;
#define ADD_SECTION(A, B, K)                                                                      \
    do {                                                                                          \
        if (n_sec == cap_sec) {                                                                   \
            cap_sec = cap_sec ? cap_sec * 2 : 16;                                                 \
            sec = xrealloc(sec, cap_sec * sizeof *sec);                                           \
        }                                                                                         \
        sec[n_sec++] = (struct section){(A), (B), (K)};                                           \
    } while (0)
    for (size_t i = 0; i < u.n && t->trie;) {
        size_t m = 0;
        int32_t k = added_trie_match(t->trie, u.cp, u.n, i, &m);
        if (k < 0) {
            i++;
            continue;
        }
        if (i > start) ADD_SECTION(start, i, -1);
        ADD_SECTION(i, i + m, k);
        i += m;
        start = i;
    }
    if (start < u.n) ADD_SECTION(start, u.n, -1);
#undef ADD_SECTION

    /* lstrip / rstrip: the whitespace next to the token goes (JavaScript's trimEnd/Start) */
    for (size_t i = 0; i < n_sec; i++) {
        if (sec[i].added < 0) continue;
        const struct added_token *a = &t->added[sec[i].added];
        if (a->lstrip && i > 0 && sec[i - 1].added < 0)
            while (sec[i - 1].b > sec[i - 1].a && is_space(u.cp[sec[i - 1].b - 1])) sec[i - 1].b--;
        if (a->rstrip && i + 1 < n_sec && sec[i + 1].added < 0)
            while (sec[i + 1].a < sec[i + 1].b && is_space(u.cp[sec[i + 1].a])) sec[i + 1].a++;
    }

    if (add_special & TOK_ADD_PREFIX)
        for (int32_t k = 0; k < t->n_post_before; k++) tok_encoding_push(out, t->post_before[k], -1);
    for (size_t i = 0; i < n_sec; i++) {
        if (sec[i].b <= sec[i].a) continue;
        if (sec[i].added >= 0) tok_encoding_push(out, t->added[sec[i].added].id, u.src[sec[i].a]);
        else encode_text_section(t, &u, sec[i].a, sec[i].b, (int32_t)i, out);
    }
    if (add_special & TOK_ADD_SUFFIX)
        for (int32_t k = 0; k < t->n_post_after; k++) tok_encoding_push(out, t->post_after[k], -1);
    free(sec);
    ustr_free(&u);
}
