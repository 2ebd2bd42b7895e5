/* text.c: growing strings, word lists and strict number parsing. */
#include "core.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growing string ----------------------------------------------------------------- */

void sb_printf(struct strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = fmt_length(fmt, ap);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += n;
}

void sb_free(struct strbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- words --------------------------------------------------------------------------- */

static int is_sep(char c) { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void words_split(struct words *w, const char *s) {
    w->v = NULL;
    w->n = 0;
    if (!s) return;
    while (*s) {
        while (*s && is_sep(*s)) s++;
        const char *b = s;
        while (*s && !is_sep(*s)) s++;
        if (s > b) {
            w->v = xrealloc(w->v, sizeof(char *) * (size_t)(w->n + 1));
            w->v[w->n++] = xstrndup(b, (size_t)(s - b));
        }
    }
}

void words_free(struct words *w) {
    for (int i = 0; i < w->n; i++) free(w->v[i]);
    free(w->v);
    w->v = NULL;
    w->n = 0;
}

int words_find(const struct words *w, const char *s) {
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->v[i], s) == 0) return i;
    return -1;
}

/* ---- strict parsing ------------------------------------------------------------------ */

int parse_i64(const char *s, int64_t *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t') end++;
    if (errno || *end || end == s) return -1;
    *out = v;
    return 0;
}

int parse_f64(const char *s, double *out) {
    if (!s || !*s) return -1;
    /* Decimal only: strtod would also take hexadecimal (0x10), inf and nan. */
    if (s[strspn(s, " \t+-.0123456789eE")]) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ' || *end == '\t') end++;
    if (errno || *end || end == s || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int parse_bool(const char *s, int *out) {
    static const char *yes[] = {"true", "yes", "1", "on"}, *no[] = {"false", "no", "0", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) return *out = 1, 0;
        if (strcmp(s, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

/* ---- nearest names -------------------------------------------------------------------- */

size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(b);
    size_t *row = xmalloc((n + 1) * sizeof *row);
    for (size_t j = 0; j <= n; j++) row[j] = j;
    for (const char *p = a; *p; p++) {
        size_t diag = row[0]++;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j];
            size_t best = diag + (*p != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[n];
    free(row);
    return d;
}

const char *nearest_name(const char *name, const char *const *names, size_t n) {
    const char *best = NULL;
    size_t best_d = 0, limit = strlen(name) / 3 + 1; /* a typo, not another word */
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(name, names[i]);
        if (d <= limit && (!best || d < best_d)) best = names[i], best_d = d;
    }
    return best;
}

/* ---- JSON numbers ---------------------------------------------------------------------- */

const char *json_finite(char *buf, size_t cap, const char *fmt, double v) {
    if (!isfinite(v)) return "null"; /* JSON has no NaN or infinity */
    snprintf(buf, cap, fmt, v);
    return buf;
}
