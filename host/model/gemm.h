/*
 * gemm.h: the host's matrix products. Every product of the host and of its plugins goes
 * through here instead of calling BLAS directly.
 *
 * OpenBLAS runs single-threaded; the host's worker threads (parallel_for in core.h) split a
 * product's output into column or row panels, one BLAS call per panel. So the products and
 * the loops between them share one pool of threads, which sleep between loops instead of
 * spinning against each other. A product called from inside a parallel loop runs whole on
 * its caller's thread: the loop is already the parallelism. The panels follow from the
 * shape alone, so results are the same bits on any number of threads.
 */
#ifndef PEFT_GEMM_H
#define PEFT_GEMM_H

#include <stdint.h>

/* C (m, n) = alpha op(A) op(B) + beta C, all row-major as cblas_?gemm with CblasRowMajor:
 * op(A) (m, k) is A (m, k) with lda >= k, or A^T of A (k, m) with lda >= m when trans_a;
 * op(B) (k, n) is B (k, n) with ldb >= n, or B^T of B (n, k) with ldb >= k when trans_b.
 * k = 0 scales C by beta. */
void gemm_f32(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, float alpha,
              const float *a, int32_t lda, const float *b, int32_t ldb, float beta, float *c,
              int32_t ldc);
void gemm_f64(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, double alpha,
              const double *a, int32_t lda, const double *b, int32_t ldb, double beta,
              double *c, int32_t ldc);

#endif
