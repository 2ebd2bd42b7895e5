/* bench_gemm.c: sgemm shapes of a step and their measured speed (see bench_gemm.h). */
#include "bench_gemm.h"

#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "gemm.h"

static int same_shape(const struct gemm_shape *a, const struct gemm_shape *b) {
    return a->trans_a == b->trans_a && a->trans_b == b->trans_b && a->m == b->m &&
           a->n == b->n && a->k == b->k && a->lda == b->lda && a->ldb == b->ldb &&
           a->ldc == b->ldc;
}

static struct gemm_shape *find_shape(struct gemm_list *l, const struct gemm_shape *s) {
    for (int32_t i = 0; i < l->n; i++)
        if (same_shape(&l->v[i], s)) return &l->v[i];
    return NULL;
}

static void push_shape(struct gemm_list *l, const struct gemm_shape *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = *s;
}

void gemm_list_add(struct gemm_list *l, int32_t trans_a, int32_t trans_b, int32_t m, int32_t n,
                   int32_t k, int32_t lda, int32_t ldb, int32_t ldc, double count) {
    struct gemm_shape s = {
        .trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
        /* Row-major: a stored matrix's leading dimension is its column count. */
        .lda = lda ? lda : (trans_a ? m : k),
        .ldb = ldb ? ldb : (trans_b ? k : n),
        .ldc = ldc ? ldc : n,
        .count = count,
    };
    struct gemm_shape *old = find_shape(l, &s);
    if (old)
        old->count += count;
    else
        push_shape(l, &s);
}

void gemm_list_free(struct gemm_list *l) {
    free(l->v);
    memset(l, 0, sizeof *l);
}

double gemm_flops(const struct gemm_shape *s) { return 2.0 * s->m * s->n * (double)s->k; }

/* Seconds per call of one shape: the fastest round's elapsed / calls. The fastest, since
 * other work on the machine only ever slows a round down and this is meant as a peak. */
static double time_shape(const struct gemm_shape *s, double min_seconds, int32_t rounds) {
    size_t rows_a = (size_t)(s->trans_a ? s->k : s->m);
    size_t rows_b = (size_t)(s->trans_b ? s->n : s->k);
    size_t na = rows_a * (size_t)s->lda, nb = rows_b * (size_t)s->ldb;
    size_t nc = (size_t)s->m * (size_t)s->ldc;
    float *a = xalloc_floats(na), *b = xalloc_floats(nb), *c = xalloc_floats(nc);
    struct rng g;
    rng_seed(&g, 1);
    for (size_t i = 0; i < na; i++) a[i] = rng_uniform(&g, -1.0f, 1.0f);
    for (size_t i = 0; i < nb; i++) b[i] = rng_uniform(&g, -1.0f, 1.0f);
    /* One untimed call: first-touch of the buffers and BLAS's own set-up. */
    gemm_f32(s->trans_a, s->trans_b, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb, 0.0f, c,
             s->ldc);
    double best = 0.0;
    for (int32_t r = 0; r < rounds; r++) {
        double t0 = now_seconds(), elapsed;
        int64_t calls = 0;
        do {
            gemm_f32(s->trans_a, s->trans_b, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb,
                     0.0f, c, s->ldc);
            calls++;
            elapsed = now_seconds() - t0;
        } while (elapsed < min_seconds);
        double per_call = elapsed / (double)calls;
        if (r == 0 || per_call < best) best = per_call;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

void gemm_list_measure(struct gemm_list *l, struct gemm_list *cache, double min_seconds,
                       int32_t rounds) {
    if (rounds < 1) rounds = 1;
    for (int32_t i = 0; i < l->n; i++) {
        struct gemm_shape *s = &l->v[i];
        const struct gemm_shape *known = cache ? find_shape(cache, s) : NULL;
        if (known) {
            s->seconds = known->seconds;
            continue;
        }
        s->seconds = time_shape(s, min_seconds, rounds);
        if (cache) push_shape(cache, s);
    }
}

double gemm_list_flops(const struct gemm_list *l) {
    double f = 0.0;
    for (int32_t i = 0; i < l->n; i++) f += l->v[i].count * gemm_flops(&l->v[i]);
    return f;
}

double gemm_list_seconds(const struct gemm_list *l) {
    double t = 0.0;
    for (int32_t i = 0; i < l->n; i++) t += l->v[i].count * l->v[i].seconds;
    return t;
}

void gemm_list_print(const struct gemm_list *l, FILE *f) {
    double total = gemm_list_seconds(l);
    fprintf(f, "  %-5s %6s %6s %6s %8s %9s %7s\n", "op", "m", "n", "k", "calls", "GFLOP/s",
            "time");
    for (int32_t i = 0; i < l->n; i++) {
        const struct gemm_shape *s = &l->v[i];
        fprintf(f, "  %c%c    %6d %6d %6d %8.0f %9.1f %6.1f%%\n", s->trans_a ? 'T' : 'N',
                s->trans_b ? 'T' : 'N', (int)s->m, (int)s->n, (int)s->k, s->count,
                gemm_flops(s) / s->seconds / 1e9, 100.0 * s->count * s->seconds / total);
    }
}
