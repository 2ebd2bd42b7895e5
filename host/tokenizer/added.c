/*
 * added.c: added tokens are cut out of the text before anything else, leftmost first and, at
 * one position, longest first (the reference's trie does the same on UTF-16 units, which
 * for whole characters is the same thing).
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"

/* A trie on code points: edge (node, code point) -> child in one open-addressing table. */
struct added_trie {
    uint64_t *edge;    /* (cap) node << 32 | cp, plus one so that 0 means empty */
    int32_t *child;    /* (cap) */
    size_t cap, n_edges;
    int32_t *token;    /* (n_nodes) index of the added token ending here, -1 if none */
    int32_t n_nodes;
};

static size_t edge_slot(const struct added_trie *tr, uint64_t key) {
    size_t i = tok_hash(&key, sizeof key) & (tr->cap - 1);
    while (tr->edge[i] && tr->edge[i] != key) i = (i + 1) & (tr->cap - 1);
    return i;
}

static int32_t trie_child(const struct added_trie *tr, int32_t node, uint32_t cp) {
    uint64_t key = ((uint64_t)(uint32_t)node << 32 | cp) + 1;
    size_t i = edge_slot(tr, key);
    return tr->edge[i] ? tr->child[i] : -1;
}

struct added_trie *added_trie_build(const struct added_token *t, int32_t n) {
    struct added_trie *tr = xcalloc(1, sizeof *tr);
    size_t chars = 0;
    for (int32_t k = 0; k < n; k++) chars += strlen(t[k].content);
    tr->cap = 64;
    while (tr->cap < 2 * (chars + 1)) tr->cap *= 2;
    tr->edge = xcalloc(tr->cap, sizeof *tr->edge);
    tr->child = xcalloc(tr->cap, sizeof *tr->child);
    tr->token = xmalloc((chars + 1) * sizeof *tr->token);
    tr->token[0] = -1;
    tr->n_nodes = 1;
    for (int32_t k = 0; k < n; k++) {
        struct ustr u = {0};
        utf8_decode(t[k].content, strlen(t[k].content), 0, &u);
        int32_t node = 0;
        for (size_t j = 0; j < u.n; j++) {
            int32_t next = trie_child(tr, node, u.cp[j]);
            if (next < 0) {
                uint64_t key = ((uint64_t)(uint32_t)node << 32 | u.cp[j]) + 1;
                size_t i = edge_slot(tr, key);
                next = tr->n_nodes++;
                tr->token[next] = -1;
                tr->edge[i] = key;
                tr->child[i] = next;
                tr->n_edges++;
            }
            node = next;
        }
        if (u.n > 0) tr->token[node] = k; /* a later duplicate wins */
        ustr_free(&u);
    }
    return tr;
}

void added_trie_free(struct added_trie *tr) {
    if (!tr) return;
    free(tr->edge);
    free(tr->child);
    free(tr->token);
    free(tr);
}

int32_t added_trie_match(const struct added_trie *tr, const uint32_t *text, size_t n, size_t i,
                         size_t *len) {
    int32_t node = 0, found = -1;
    for (size_t j = i; j < n; j++) {
        node = trie_child(tr, node, text[j]);
        if (node < 0) break;
        if (tr->token[node] >= 0) {
            found = tr->token[node];
            *len = j + 1 - i;
        }
    }
    return found;
}
