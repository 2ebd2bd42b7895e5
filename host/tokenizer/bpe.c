/*
 * bpe.c: byte-pair encoding of one pre-token. The symbols start as the pre-token's characters;
 * the adjacent pair with the lowest merge rank is merged first, ties going to the leftmost
 * (a min-heap keyed on rank, then position), until no adjacent pair has a merge. A character
 * outside the vocabulary becomes its <0xXX> byte tokens under byte_fallback, else the unknown
 * token. With ignore_merges a pre-token that is itself a token is taken whole.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"

struct symbol {
    int32_t id;        /* -1: a character outside the vocabulary */
    int32_t prev, next;
    uint32_t start;    /* index of its first character in the pre-token */
};

struct candidate {
    uint64_t key;      /* rank << 32 | start of the left symbol: lower merges first */
    int32_t left, right;
    int32_t left_id, right_id;
};

struct heap {
    struct candidate *v;
    size_t n, cap;
    struct candidate local[64];
};

static void heap_push(struct heap *h, struct candidate c) {
    if (h->n == h->cap) {
        if (h->v == h->local) {
            h->v = xmalloc(h->cap * 2 * sizeof *h->v);
            memcpy(h->v, h->local, h->n * sizeof *h->v);
        } else {
            h->v = xrealloc(h->v, h->cap * 2 * sizeof *h->v);
        }
        h->cap *= 2;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent].key <= c.key) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = c;
}

static struct candidate heap_pop(struct heap *h) {
    struct candidate top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t kid = 2 * i + 1;
        if (kid >= h->n) break;
        if (kid + 1 < h->n && h->v[kid + 1].key < h->v[kid].key) kid++;
        if (last.key <= h->v[kid].key) break;
        h->v[i] = h->v[kid];
        i = kid;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

/* The merge of (left, right): rank and merged id, or -1. */
static int32_t merge_lookup(const struct merge_map *m, int32_t left, int32_t right, int32_t *merged) {
    if (left < 0 || right < 0 || !m->cap) return -1;
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
    size_t i = tok_hash(&key, sizeof key) & (m->cap - 1);
    while (m->pair[i]) {
        if (m->pair[i] == key) {
            *merged = m->merged[i];
            return m->rank[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static void consider(const struct tokenizer *t, struct heap *h, const struct symbol *sym, int32_t left) {
    int32_t right = sym[left].next;
    if (right < 0) return;
    int32_t merged;
    int32_t rank = merge_lookup(&t->merges, sym[left].id, sym[right].id, &merged);
    if (rank < 0) return;
    heap_push(h, (struct candidate){((uint64_t)(uint32_t)rank << 32) | sym[left].start, left,
                                    right, sym[left].id, sym[right].id});
}

void bpe_encode_piece(const struct tokenizer *t, const struct ustr *s, size_t a, size_t b,
                      struct tok_encoding *out) {
    if (b <= a) return;
    char buf[4];
    if (t->ignore_merges && b - a > 1) {
        char local[256];
        struct bstr whole = {0};
        size_t n_local = 0;
        for (size_t k = a; k < b; k++) {
            if (!whole.p && n_local + 4 <= sizeof local) {
                n_local += utf8_put(s->cp[k], local + n_local);
                continue;
            }
            if (!whole.p) bstr_put(&whole, local, n_local);
            bstr_put_cp(&whole, s->cp[k]);
        }
        int32_t id = whole.p ? strmap_get(&t->ids, whole.p, whole.n) : strmap_get(&t->ids, local, n_local);
        bstr_free(&whole);
        if (id >= 0) {
            tok_encoding_push(out, id, s->src[a]);
            return;
        }
    }
    size_t n = b - a;
    struct symbol local_sym[64]; /* most pre-tokens are short: no allocation for them */
    struct symbol *sym = n <= 64 ? local_sym : xmalloc(n * sizeof *sym);
    for (size_t k = 0; k < n; k++) {
        uint32_t cp = s->cp[a + k];
        int32_t id = cp < 512 ? t->char_id[cp] : strmap_get(&t->ids, buf, utf8_put(cp, buf));
        sym[k] = (struct symbol){id, (int32_t)k - 1, k + 1 < n ? (int32_t)k + 1 : -1, (uint32_t)k};
    }
    struct heap h;
    h.v = h.local;
    h.n = 0;
    h.cap = sizeof h.local / sizeof h.local[0];
    for (size_t k = 0; k + 1 < n; k++) consider(t, &h, sym, (int32_t)k);
    while (h.n > 0) {
        struct candidate c = heap_pop(&h);
        /* stale when either side has been merged away or changed since it was pushed */
        if (sym[c.left].id != c.left_id || sym[c.left].next != c.right ||
            sym[c.right].id != c.right_id)
            continue;
        int32_t merged;
        merge_lookup(&t->merges, c.left_id, c.right_id, &merged);
        sym[c.left].id = merged;
        sym[c.left].next = sym[c.right].next;
        if (sym[c.right].next >= 0) sym[sym[c.right].next].prev = c.left;
        sym[c.right].id = -2; /* gone */
        sym[c.right].next = -1;
        if (sym[c.left].prev >= 0) consider(t, &h, sym, sym[c.left].prev);
        consider(t, &h, sym, c.left);
    }
    for (int32_t k = 0; k >= 0; k = sym[k].next) {
        int64_t offset = s->src[a + sym[k].start];
        if (sym[k].id >= 0) {
            tok_encoding_push(out, sym[k].id, offset);
            continue;
        }
        /* outside the vocabulary: a single character (merges only make known tokens) */
        size_t m = utf8_put(s->cp[a + sym[k].start], buf);
        int all = t->byte_fallback;
        for (size_t j = 0; j < m && all; j++) all = t->byte_token[(uint8_t)buf[j]] >= 0;
        if (all) {
            for (size_t j = 0; j < m; j++) tok_encoding_push(out, t->byte_token[(uint8_t)buf[j]], offset);
        } else if (t->unk_id >= 0) {
            tok_encoding_push(out, t->unk_id, offset);
        }
    }
    if (h.v != h.local) free(h.v);
    if (sym != local_sym) free(sym);
}
