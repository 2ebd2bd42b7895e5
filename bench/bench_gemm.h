/*
 * bench_gemm.h: the matrix products of one training step as a list of cblas_sgemm shapes
 * (with how often each runs per step), and the machine's own sgemm speed on exactly those
 * shapes.
 *
 * The "sgemm peak" of a step is sum(flops) / sum(seconds) over its products, each timed alone
 * in a hot loop (best of several rounds): the rate the step would reach if it did nothing but
 * its GEMMs at the speed BLAS gives them in isolation.
 */
#ifndef PEFT_BENCH_GEMM_H
#define PEFT_BENCH_GEMM_H

#include <stdint.h>
#include <stdio.h>

/* Row-major C (m, n) = op(A) (m, k) . op(B) (k, n); lda/ldb/ldc as passed to cblas_sgemm. */
struct gemm_shape {
    int32_t trans_a, trans_b;
    int32_t m, n, k;
    int32_t lda, ldb, ldc;
    double count;        /* calls per training step */
    double seconds;      /* per call, after gemm_list_measure */
};

struct gemm_list {
    struct gemm_shape *v;
    int32_t n, cap;
};

/* Add `count` calls of a shape; equal shapes are merged. Leading dimensions 0 = packed. */
void gemm_list_add(struct gemm_list *l, int32_t trans_a, int32_t trans_b, int32_t m, int32_t n,
                   int32_t k, int32_t lda, int32_t ldb, int32_t ldc, double count);
void gemm_list_free(struct gemm_list *l);

/* FLOPs of one call (2 m n k). */
double gemm_flops(const struct gemm_shape *s);

/* Fill every shape's `seconds`: the fastest of `rounds` rounds, each at least min_seconds of
 * back-to-back calls. Shapes already in `cache` (from an earlier list) are not timed again;
 * newly timed ones are added to it. */
void gemm_list_measure(struct gemm_list *l, struct gemm_list *cache, double min_seconds,
                       int32_t rounds);

/* Per step: total FLOPs of the products, and the seconds they take at the measured rates. */
double gemm_list_flops(const struct gemm_list *l);
double gemm_list_seconds(const struct gemm_list *l);

/* One line per shape: op, m n k, calls per step, GFLOP/s, share of the list's time. */
void gemm_list_print(const struct gemm_list *l, FILE *f);

#endif
