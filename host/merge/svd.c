/* svd.c: truncated SVD by one-sided Jacobi, directly or after a randomized range finder. */
#include "svd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/model.h"

/* One-sided Jacobi (Hestenes): rotate pairs of the q columns of x (each of length p, column
 * j at x + j*p) until every pair is orthogonal, applying the same rotations to v (q, q;
 * column j at v + j*q), which starts as the identity. Afterwards x_in = x_out v^T and the
 * columns of x_out are orthogonal: x_out = U diag(sigma). */
static void jacobi_columns(double *x, int32_t p, int32_t q, double *v) {
    memset(v, 0, (size_t)q * (size_t)q * sizeof *v);
    for (int32_t j = 0; j < q; j++) v[(size_t)j * q + j] = 1.0;
    for (int sweep = 0; sweep < 80; sweep++) {
        int rotated = 0;
        for (int32_t a = 0; a < q - 1; a++) {
            for (int32_t b = a + 1; b < q; b++) {
                double *xa = x + (size_t)a * p, *xb = x + (size_t)b * p;
                double alpha = 0, beta = 0, gamma = 0;
                for (int32_t i = 0; i < p; i++) {
                    alpha += xa[i] * xa[i];
                    beta += xb[i] * xb[i];
                    gamma += xa[i] * xb[i];
                }
                if (gamma == 0.0 || fabs(gamma) <= 1e-15 * sqrt(alpha * beta)) continue;
                rotated = 1;
                /* The rotation that zeroes the pair's inner product (the smaller root). */
                double zeta = (beta - alpha) / (2.0 * gamma);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                for (int32_t i = 0; i < p; i++) {
                    double ya = xa[i], yb = xb[i];
                    xa[i] = c * ya - s * yb;
                    xb[i] = s * ya + c * yb;
                }
                double *va = v + (size_t)a * q, *vb = v + (size_t)b * q;
                for (int32_t i = 0; i < q; i++) {
                    double ya = va[i], yb = vb[i];
                    va[i] = c * ya - s * yb;
                    vb[i] = s * ya + c * yb;
                }
            }
        }
        if (!rotated) break;
    }
}

/* The columns of x (q columns of length p) in order of decreasing norm; norms into sigma. */
static void order_by_norm(const double *x, int32_t p, int32_t q, int32_t *order, double *sigma) {
    for (int32_t j = 0; j < q; j++) {
        double ss = 0;
        for (int32_t i = 0; i < p; i++) ss += x[(size_t)j * p + i] * x[(size_t)j * p + i];
        sigma[j] = sqrt(ss);
        order[j] = j;
    }
    for (int32_t a = 1; a < q; a++) { /* insertion sort: q is small */
        int32_t o = order[a], b = a;
        while (b > 0 && sigma[order[b - 1]] < sigma[o]) {
            order[b] = order[b - 1];
            b--;
        }
        order[b] = o;
    }
}

/* Thin SVD of A (rows, cols) row-major in double, kk leading triplets: u (rows, kk),
 * s (kk), vt (kk, cols). Jacobi runs on the columns of A or of A^T, whichever are fewer. */
static void svd_dense(const double *A, int32_t rows, int32_t cols, int32_t kk, double *u, double *s,
                      double *vt) {
    int tall = rows >= cols;
    int32_t p = tall ? rows : cols, q = tall ? cols : rows; /* q columns of length p */
    double *x = xmalloc((size_t)p * q * sizeof *x), *v = xmalloc((size_t)q * q * sizeof *v);
    double *sigma = xmalloc((size_t)q * sizeof *sigma);
    int32_t *order = xmalloc((size_t)q * sizeof *order);
    for (int32_t i = 0; i < rows; i++)
        for (int32_t j = 0; j < cols; j++)
            x[tall ? (size_t)j * p + i : (size_t)i * p + j] = A[(size_t)i * cols + j];
    jacobi_columns(x, p, q, v);
    order_by_norm(x, p, q, order, sigma);
    /* tall: A = X V^T with X = U S, so u = X/sigma, vt = V^T.
     * wide: A^T = X V^T, so A = V S (X/sigma)^T: u = V, vt = (X/sigma)^T. */
    for (int32_t r = 0; r < kk; r++) {
        int32_t j = order[r];
        double sg = sigma[j], inv = sg > 0 ? 1.0 / sg : 0.0;
        s[r] = sg;
        const double *xj = x + (size_t)j * p, *vj = v + (size_t)j * q;
        if (tall) {
            for (int32_t i = 0; i < rows; i++) u[(size_t)i * kk + r] = xj[i] * inv;
            for (int32_t i = 0; i < cols; i++) vt[(size_t)r * cols + i] = vj[i];
        } else {
            for (int32_t i = 0; i < rows; i++) u[(size_t)i * kk + r] = vj[i];
            for (int32_t i = 0; i < cols; i++) vt[(size_t)r * cols + i] = xj[i] * inv;
        }
        if (sg == 0.0) { /* a null direction carries nothing: keep the factors zero */
            for (int32_t i = 0; i < rows; i++) u[(size_t)i * kk + r] = 0.0;
            for (int32_t i = 0; i < cols; i++) vt[(size_t)r * cols + i] = 0.0;
        }
    }
    free(x);
    free(v);
    free(sigma);
    free(order);
}

/* Orthonormalise the columns of a (rows, cols) row-major in place by modified Gram-Schmidt,
 * twice ("twice is enough"). A column left with almost nothing of its own (rank deficiency)
 * becomes zero. */
static void orthonormalise_columns(double *a, int32_t rows, int32_t cols) {
    for (int32_t j = 0; j < cols; j++) {
        double before = 0;
        for (int32_t i = 0; i < rows; i++)
            before += a[(size_t)i * cols + j] * a[(size_t)i * cols + j];
        for (int pass = 0; pass < 2; pass++)
            for (int32_t k = 0; k < j; k++) {
                double d = 0;
                for (int32_t i = 0; i < rows; i++)
                    d += a[(size_t)i * cols + k] * a[(size_t)i * cols + j];
                for (int32_t i = 0; i < rows; i++)
                    a[(size_t)i * cols + j] -= d * a[(size_t)i * cols + k];
            }
        double after = 0;
        for (int32_t i = 0; i < rows; i++)
            after += a[(size_t)i * cols + j] * a[(size_t)i * cols + j];
        double scale = after > 1e-24 * before && after > 0 ? 1.0 / sqrt(after) : 0.0;
        for (int32_t i = 0; i < rows; i++) a[(size_t)i * cols + j] *= scale;
    }
}

void svd_truncated(const float *M, int32_t m, int32_t n, int32_t k, uint64_t seed, int route,
                   float *u, float *s, float *vt) {
    memset(u, 0, (size_t)m * k * sizeof *u);
    memset(s, 0, (size_t)k * sizeof *s);
    memset(vt, 0, (size_t)k * n * sizeof *vt);
    int32_t mn = m < n ? m : n, kk = k < mn ? k : mn;
    if (kk <= 0) return;
    if (route == SVD_AUTO) route = (mn <= 256 || kk + 10 >= mn) ? SVD_JACOBI : SVD_RANDOMIZED;
    double *A = xmalloc((size_t)m * n * sizeof *A); /* (m, n) */
    for (size_t i = 0; i < (size_t)m * n; i++) A[i] = M[i];
    double *ud = xmalloc((size_t)m * kk * sizeof *ud), *sd = xmalloc((size_t)kk * sizeof *sd);
    double *vd = xmalloc((size_t)kk * n * sizeof *vd);
    if (route == SVD_JACOBI) {
        svd_dense(A, m, n, kk, ud, sd, vd);
    } else {
        int32_t l = kk + 10 < mn ? kk + 10 : mn;          /* sketch width */
        double *om = xmalloc((size_t)n * l * sizeof *om); /* (n, l) */
        double *y = xmalloc((size_t)m * l * sizeof *y);   /* (m, l) */
        double *z = xmalloc((size_t)n * l * sizeof *z);   /* (n, l) */
        struct rng g;
        rng_seed_label(&g, seed, "svd-sketch");
        for (size_t i = 0; i < (size_t)n * l; i++) om[i] = rng_normal(&g, 0.0f, 1.0f);
        gemm_f64(0, 0, m, l, n, 1.0, A, n, om, l, 0.0, y,
                    l);
        orthonormalise_columns(y, m, l);
        for (int it = 0; it < 2; it++) { /* power iterations sharpen the captured range */
            gemm_f64(1, 0, n, l, m, 1.0, A, n, y, l, 0.0, z,
                        l);
            orthonormalise_columns(z, n, l);
            gemm_f64(0, 0, m, l, n, 1.0, A, n, z, l, 0.0, y,
                        l);
            orthonormalise_columns(y, m, l);
        }
        /* C (l, n) = Q^T A with Q = y (m, l); A ~ Q C = (Q Uc) S Vt. */
        double *c = xmalloc((size_t)l * n * sizeof *c), *uc = xmalloc((size_t)l * kk * sizeof *uc);
        gemm_f64(1, 0, l, n, m, 1.0, y, l, A, n, 0.0, c, n);
        svd_dense(c, l, n, kk, uc, sd, vd);
        gemm_f64(0, 0, m, kk, l, 1.0, y, l, uc, kk, 0.0, ud,
                    kk);
        free(om);
        free(y);
        free(z);
        free(c);
        free(uc);
    }
    for (int32_t i = 0; i < m; i++)
        for (int32_t r = 0; r < kk; r++) u[(size_t)i * k + r] = (float)ud[(size_t)i * kk + r];
    for (int32_t r = 0; r < kk; r++) {
        s[r] = (float)sd[r];
        for (int32_t j = 0; j < n; j++) vt[(size_t)r * n + j] = (float)vd[(size_t)r * n + j];
    }
    free(A);
    free(ud);
    free(sd);
    free(vd);
}
