/*
 * decode.c: ids to text. The ids become their token strings, the decoders run in order on the
 * list of strings (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace), the strings are
 * joined, and the config's clean-up of tokenization spaces runs last. Bytes that do not form
 * UTF-8 become U+FFFD, as the reference's TextDecoder makes them.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"

struct strlist {
    struct bstr *v;
    size_t n, cap;
};

static struct bstr *list_add(struct strlist *l) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    memset(&l->v[l->n], 0, sizeof l->v[0]);
    return &l->v[l->n++];
}

static void list_free(struct strlist *l) {
    for (size_t i = 0; i < l->n; i++) bstr_free(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void push_sanitized(struct strlist *out, const char *bytes, size_t n) {
    size_t len;
    char *clean = utf8_sanitize(bytes, n, &len);
    bstr_put(list_add(out), clean, len);
    free(clean);
}

static int is_added_content(const struct tokenizer *t, const struct bstr *s) {
    for (int32_t k = 0; k < t->n_added; k++)
        if (strlen(t->added[k].content) == s->n && memcmp(t->added[k].content, s->p, s->n) == 0) return 1;
    return 0;
}

/* ByteLevel: runs of ordinary tokens map their characters back to bytes; added tokens stay. */
static void dec_byte_level(const struct tokenizer *t, struct strlist *in, struct strlist *out) {
    struct bstr run = {0};
    for (size_t i = 0; i <= in->n; i++) {
        if (i < in->n && !is_added_content(t, &in->v[i])) {
            struct ustr u = {0};
            utf8_decode(in->v[i].p ? in->v[i].p : "", in->v[i].n, 0, &u);
            for (size_t k = 0; k < u.n; k++) {
                int b = byte_level_byte(u.cp[k]);
                bstr_putc(&run, (char)(b < 0 ? 0 : b)); /* the reference's Uint8Array makes 0 */
            }
            ustr_free(&u);
            continue;
        }
        if (run.n > 0) {
            push_sanitized(out, run.p, run.n);
            run.n = 0;
        }
        if (i < in->n) bstr_put(list_add(out), in->v[i].p, in->v[i].n);
    }
    bstr_free(&run);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* ByteFallback: runs of <0xXX> tokens become the text of their bytes. */
static void dec_byte_fallback(struct strlist *in, struct strlist *out) {
    struct bstr run = {0};
    for (size_t i = 0; i <= in->n; i++) {
        int byte = -1;
        if (i < in->n) {
            const struct bstr *s = &in->v[i];
            if (s->n == 6 && memcmp(s->p, "<0x", 3) == 0 && s->p[5] == '>') {
                /* parseInt of the two characters: leading hex digits count */
                int hi = hex_digit(s->p[3]), lo = hex_digit(s->p[4]);
                if (hi >= 0) byte = lo >= 0 ? hi * 16 + lo : hi;
            }
        }
        if (byte >= 0) {
            bstr_putc(&run, (char)byte);
            continue;
        }
        if (run.n > 0) {
            push_sanitized(out, run.p, run.n);
            run.n = 0;
        }
        if (i < in->n) bstr_put(list_add(out), in->v[i].p, in->v[i].n);
    }
    bstr_free(&run);
}

static void replace_all(const struct bstr *s, const char *pat, const char *with, struct bstr *out) {
    size_t m = strlen(pat), w = strlen(with);
    for (size_t i = 0; i < s->n;) {
        if (i + m <= s->n && memcmp(s->p + i, pat, m) == 0) {
            bstr_put(out, with, w);
            i += m;
        } else {
            bstr_putc(out, s->p[i++]);
        }
    }
    if (!out->p) bstr_put(out, "", 0);
}

static void run_decoder(const struct tokenizer *t, const struct decoder *d, struct strlist *in,
                        struct strlist *out) {
    char ch[4];
    switch (d->kind) {
    case DEC_BYTE_LEVEL:
        dec_byte_level(t, in, out);
        break;
    case DEC_BYTE_FALLBACK:
        dec_byte_fallback(in, out);
        break;
    case DEC_FUSE: {
        struct bstr *all = list_add(out);
        bstr_put(all, "", 0);
        for (size_t i = 0; i < in->n; i++) bstr_put(all, in->v[i].p, in->v[i].n);
        break;
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) replace_all(&in->v[i], d->pattern, d->content, list_add(out));
        break;
    case DEC_METASPACE: {
        size_t m = utf8_put(d->replacement, ch);
        ch[m] = '\0';
        for (size_t i = 0; i < in->n; i++) {
            struct bstr *o = list_add(out);
            replace_all(&in->v[i], ch, " ", o);
            if (d->add_prefix_space && i == 0 && o->n > 0 && o->p[0] == ' ') {
                memmove(o->p, o->p + 1, o->n);
                o->n--;
            }
        }
        break;
    }
    case DEC_STRIP: {
        size_t m = utf8_put(d->strip_char, ch);
        for (size_t i = 0; i < in->n; i++) {
            const struct bstr *s = &in->v[i];
            size_t a = 0, b = s->n;
            for (int32_t k = 0; k < d->start && a + m <= b && memcmp(s->p + a, ch, m) == 0; k++) a += m;
            for (int32_t k = 0; k < d->stop && b >= a + m && memcmp(s->p + b - m, ch, m) == 0; k++) b -= m;
            struct bstr *o = list_add(out);
            bstr_put(o, s->p ? s->p + a : "", b - a);
        }
        break;
    }
    }
}

/* transformers' clean_up_tokenization: spaces before punctuation and in contractions */
static void clean_up(struct bstr *s) {
    static const char *from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof from[0]; k++) {
        struct bstr o = {0};
        replace_all(s, from[k], to[k], &o);
        bstr_free(s);
        *s = o;
    }
}

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                     char **out, size_t *len) {
    int32_t V = tokenizer_vocab_size(t);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V || !tokenizer_piece(t, ids[i]))
            return err_set("token id %d is outside the vocabulary (%d ids)", ids[i], V);
    struct bstr text = {0};
    bstr_put(&text, "", 0);
    if (t->bytes) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 256) bstr_putc(&text, (char)ids[i]); /* specials carry no text */
        *out = text.p;
        *len = text.n;
        return 0;
    }
    struct strlist cur = {0};
    for (size_t i = 0; i < n; i++) {
        if (skip_special && tokenizer_is_special(t, ids[i])) continue;
        const char *p = t->vocab[ids[i]];
        bstr_put(list_add(&cur), p, strlen(p));
    }
    for (int32_t k = 0; k < t->n_dec; k++) {
        struct strlist next = {0};
        run_decoder(t, &t->dec[k], &cur, &next);
        list_free(&cur);
        cur = next;
    }
    for (size_t i = 0; i < cur.n; i++) {
        if (i > 0 && t->n_dec == 0) bstr_putc(&text, ' '); /* no decoder: joined by spaces */
        bstr_put(&text, cur.v[i].p, cur.v[i].n);
    }
    list_free(&cur);
    if (t->clean_up_spaces) clean_up(&text);
    *out = text.p;
    *len = text.n;
    return 0;
}
