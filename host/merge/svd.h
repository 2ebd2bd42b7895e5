/*
 * svd.h: truncated singular value decomposition of a dense fp32 matrix, for re-factorising a
 * merged weight change into a LoRA of a chosen rank (Eckart-Young: the k leading singular
 * triplets give the best rank-k approximation in Frobenius norm).
 *
 * Two routes, both ending in one-sided Jacobi (Hestenes) in double precision:
 *   - Jacobi on the whole matrix (columns of its thinner side), when that side is small;
 *   - randomized subspace iteration (Halko, Martinsson, Tropp 2011: a Gaussian sketch of
 *     k + 10 columns, two power iterations with re-orthonormalisation), then Jacobi on the
 *     small projected matrix. Exact up to rounding when the matrix's rank is at most the
 *     sketch width.
 */
#ifndef PEFT_SVD_H
#define PEFT_SVD_H

#include <stdint.h>

enum svd_route { SVD_AUTO = 0, SVD_JACOBI = 1, SVD_RANDOMIZED = 2 };

/* M (m, n) row-major ~ U diag(s) Vt with the k largest singular values, descending:
 * u (m, k), s (k), vt (k, n), all row-major and caller-owned. k may exceed min(m, n): the
 * extra triplets are zero. seed drives the randomized route's sketch. */
void svd_truncated(const float *M, int32_t m, int32_t n, int32_t k, uint64_t seed, int route,
                   float *u, float *s, float *vt);

#endif
