/*
 * normalize.c: the normalizers tokenizer.json files use: NFC, Prepend and Replace. Each works
 * on code points that carry their source offsets: an inserted or composed character takes the
 * offset of the character it stands at.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"
#include "unicode.h"

/* Canonical decomposition, canonical ordering, canonical composition (UAX #15). */
void nfc_apply(struct ustr *s) {
    /* fast path: nothing below U+0300 decomposes, composes or reorders */
    size_t i = 0;
    while (i < s->n && s->cp[i] < 0x300)
        i++;
    if (i == s->n)
        return;

    struct ustr d = {0};
    uint32_t buf[UNICODE_MAX_DECOMPOSITION];
    for (size_t k = 0; k < s->n; k++) {
        size_t m = unicode_decompose(s->cp[k], buf);
        for (size_t j = 0; j < m; j++)
            ustr_push(&d, buf[j], s->src[k]);
    }
    /* stable insertion sort of each run of non-starters by combining class */
    for (size_t k = 1; k < d.n; k++) {
        uint8_t r = unicode_ccc_rank(d.cp[k]);
        if (r == 0)
            continue;
        size_t j = k;
        while (j > 0) {
            uint8_t q = unicode_ccc_rank(d.cp[j - 1]);
            if (q == 0 || q <= r)
                break;
            uint32_t c = d.cp[j], o = d.src[j];
            d.cp[j] = d.cp[j - 1], d.src[j] = d.src[j - 1];
            d.cp[j - 1] = c, d.src[j - 1] = o;
            j--;
        }
    }
    /* compose: C joins the last starter L unless a character between them is a starter or
     * has a combining class at least C's (it is then blocked) */
    s->n = 0;
    size_t starter = SIZE_MAX;
    uint8_t last_rank = 0;
    for (size_t k = 0; k < d.n; k++) {
        uint32_t c = d.cp[k];
        uint8_t r = unicode_ccc_rank(c);
        if (starter != SIZE_MAX) {
            int adjacent = s->n - 1 == starter;
            int blocked = !adjacent && (last_rank == 0 || last_rank >= r);
            if (!blocked) {
                uint32_t p = unicode_compose(s->cp[starter], c);
                if (p) {
                    s->cp[starter] = p;
                    continue;
                }
            }
        }
        if (r == 0)
            starter = s->n;
        last_rank = r;
        ustr_push(s, c, d.src[k]);
    }
    ustr_free(&d);
}

/* Replace every non-overlapping occurrence of the pattern (leftmost first). */
static void replace_apply(const struct normalizer *nz, struct ustr *s) {
    struct ustr out = {0};
    size_t i = 0, changed = 0;
    while (i < s->n) {
        size_t a, b;
        if (nz->re) {
            if (!tok_regex_find(nz->re, s->cp, s->n, i, &a, &b))
                break;
            if (b == a) { /* an empty match replaces nothing here; step over one character */
                ustr_append(&out, s, i, a + (a < s->n));
                i = a + 1;
                continue;
            }
        } else {
            size_t m = nz->arg.n;
            if (m == 0)
                break;
            a = i;
            while (a + m <= s->n && memcmp(s->cp + a, nz->arg.cp, m * sizeof *s->cp) != 0)
                a++;
            if (a + m > s->n)
                break;
            b = a + m;
        }
        ustr_append(&out, s, i, a);
        for (size_t k = 0; k < nz->content.n; k++)
            ustr_push(&out, nz->content.cp[k], s->src[a]);
        i = b;
        changed = 1;
    }
    if (!changed) {
        ustr_free(&out);
        return;
    }
    ustr_append(&out, s, i, s->n);
    ustr_free(s);
    *s = out;
}

void normalize_apply(const struct normalizer *nz, struct ustr *s) {
    switch (nz->kind) {
    case NORM_NFC:
        nfc_apply(s);
        break;
    case NORM_PREPEND: {
        struct ustr out = {0};
        uint32_t src = s->n ? s->src[0] : 0;
        for (size_t k = 0; k < nz->arg.n; k++)
            ustr_push(&out, nz->arg.cp[k], src);
        ustr_append(&out, s, 0, s->n);
        ustr_free(s);
        *s = out;
        break;
    }
    case NORM_REPLACE:
        replace_apply(nz, s);
        break;
    }
}
