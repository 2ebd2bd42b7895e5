/*
 * merge_ops_unit.c: the merge operators and the truncated SVD on hand-worked and constructed
 * cases.
 *   - TIES (both sign elections), magnitude pruning and its tie-break, written out by hand;
 *   - DARE: the rescale and sums against the draws, the draws' rate and unbiasedness, density
 *     1 = no pruning;
 *   - sparse inputs give exactly what their dense forms give, for every operator; LoTA's
 *     additive merge of disjoint sparse vectors is their union;
 *   - SVD: exact (to fp32) when the rank is at most k, on both routes; Eckart-Young error and
 *     singular values on a matrix of known spectrum; orthonormal factors; k beyond min(m, n).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "merge_ops.h"
#include "svd.h"
#include "core.h"

static struct tvec dense_of(const float *x, uint64_t n) {
    struct tvec t;
    tvec_init_dense(&t, n);
    memcpy(t.val, x, n * sizeof *x);
    return t;
}

static float *densify(const struct tvec *t) {
    float *d = xalloc_floats(t->numel);
    tvec_add_to(t, 1.0f, d);
    return d;
}

static double max_abs_diff(const float *a, const float *b, uint64_t n) {
    double m = 0;
    for (uint64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* ---- hand-worked TIES and magnitude pruning -------------------------------------------- */

static void test_ties_by_hand(void) {
    /* Three task vectors of 5 entries, weights 1, 1, 2, density 0.4: k = floor(0.4 * 5) = 2.
     *   t1 = [ 0.5, -0.2, 0.1,  0.9, -0.3]  top-2 |x|: 0.9 (3), 0.5 (0) -> [ 0.5,  0,   0, 0.9, 0]
     *   t2 = [-0.6,  0.4, 0.05, 0.2,  0.1]  top-2: 0.6 (0), 0.4 (1)     -> [-0.6,  0.4, 0, 0,   0]
     *   t3 = [ 0.3, -0.7, 0.2, -0.1,  0.0]  top-2: 0.7 (1), 0.3 (0)     -> [ 0.3, -0.7, 0, 0,   0]
     * Election "total" on the unweighted pruned vectors: entry 0: 0.5 - 0.6 + 0.3 = 0.2 (+);
     * entry 1: 0.4 - 0.7 = -0.3 (-); entry 3: 0.9 (+); entries 2 and 4 hold nothing.
     * Disjoint mean by count of the weighted agreeing entries:
     *   entry 0: (1 * 0.5 + 2 * 0.3) / 2 = 0.55;  entry 1: (2 * -0.7) / 1 = -1.4;  entry 3: 0.9.
     * Election "frequency": entry 1 has one + and one -: a tie, which counts as +, so only
     * t2 agrees: 0.4. Magnitude prune without election (a plain weighted sum of the pruned):
     *   [0.5 - 0.6 + 0.6, 0.4 - 1.4, 0, 0.9, 0] = [0.5, -1.0, 0, 0.9, 0]. */
    const float t1[5] = {0.5f, -0.2f, 0.1f, 0.9f, -0.3f};
    const float t2[5] = {-0.6f, 0.4f, 0.05f, 0.2f, 0.1f};
    const float t3[5] = {0.3f, -0.7f, 0.2f, -0.1f, 0.0f};
    struct tvec in[3] = {dense_of(t1, 5), dense_of(t2, 5), dense_of(t3, 5)};
    const double w[3] = {1, 1, 2};
    struct {
        const char *what;
        struct merge_params p;
        float want[5];
    } cases[] = {
        {"ties total", {PRUNE_MAGNITUDE, SIGN_TOTAL, 0.4, 1.0, 0}, {0.55f, -1.4f, 0, 0.9f, 0}},
        {"ties frequency",
         {PRUNE_MAGNITUDE, SIGN_FREQUENCY, 0.4, 1.0, 0},
         {0.55f, 0.4f, 0, 0.9f, 0}},
        {"magnitude_prune", {PRUNE_MAGNITUDE, SIGN_NONE, 0.4, 1.0, 0}, {0.5f, -1.0f, 0, 0.9f, 0}},
        {"ties total, lambda 0.5",
         {PRUNE_MAGNITUDE, SIGN_TOTAL, 0.4, 0.5, 0},
         {0.275f, -0.7f, 0, 0.45f, 0}},
        /* density 1 keeps everything: TIES elects on all entries. Entry 1: -0.2 + 0.4 - 0.7 < 0:
         * t1 and t3 agree: (-0.2 - 1.4) / 2; entry 2: 0.1 + 0.05 + 0.2 > 0, all agree:
         * (0.1 + 0.05 + 0.4) / 3; entry 3: t1 and t2: (0.9 + 0.2) / 2; entry 4: -0.3 + 0.1 + 0
         * = -0.2 (-): only t1. */
        {"ties density 1",
         {PRUNE_MAGNITUDE, SIGN_TOTAL, 1.0, 1.0, 0},
         {0.55f, -0.8f, 0.55f / 3, (0.9f + 0.2f) / 2, -0.3f}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct tvec out;
        merge_tensor(&cases[c].p, in, w, 3, "w", &out);
        CHECK(out.idx == NULL && out.n == 5, "%s: dense in, dense out", cases[c].what);
        double err = max_abs_diff(out.val, cases[c].want, 5);
        printf("%-24s [% .3f % .3f % .3f % .3f % .3f]  max abs error %.1e\n", cases[c].what,
               out.val[0], out.val[1], out.val[2], out.val[3], out.val[4], err);
        CHECK(err < 1e-6, "%s: max abs error %g", cases[c].what, err);
        tvec_free(&out);
    }
    /* Ties in magnitude go to the lower index: keep 2 of [0.2, -0.2, 0.2, 0.1]. */
    const float tt[4] = {0.2f, -0.2f, 0.2f, 0.1f};
    struct tvec one = dense_of(tt, 4), out;
    const double w1 = 1;
    struct merge_params mp = {PRUNE_MAGNITUDE, SIGN_NONE, 0.5, 1.0, 0};
    merge_tensor(&mp, &one, &w1, 1, "w", &out);
    const float want[4] = {0.2f, -0.2f, 0, 0};
    CHECK(max_abs_diff(out.val, want, 4) == 0, "magnitude tie-break: got [%g %g %g %g]", out.val[0],
          out.val[1], out.val[2], out.val[3]);
    tvec_free(&out);
    tvec_free(&one);
    for (int i = 0; i < 3; i++) tvec_free(&in[i]);
}

/* ---- DARE --------------------------------------------------------------------------------- */

static void test_dare(void) {
    /* dare_linear and dare_ties against the draws, worked entry by entry. */
    enum { N = 16 };
    float a[N], b[N];
    for (int i = 0; i < N; i++) {
        a[i] = (float)(i + 1) * (i % 3 ? 1.0f : -1.0f) * 0.1f;
        b[i] = (float)(N - i) * (i % 2 ? -1.0f : 1.0f) * 0.05f;
    }
    struct tvec in[2] = {dense_of(a, N), dense_of(b, N)};
    const double w[2] = {2.0, 0.5};
    const double d = 0.25;
    struct merge_params lin = {PRUNE_RANDOM, SIGN_NONE, d, 1.0, 42};
    struct merge_params ties = {PRUNE_RANDOM, SIGN_TOTAL, d, 1.0, 42};
    struct tvec ol, ot;
    merge_tensor(&lin, in, w, 2, "layers.0.q", &ol);
    merge_tensor(&ties, in, w, 2, "layers.0.q", &ot);
    int kept_a = 0, kept_b = 0;
    double err_l = 0, err_t = 0;
    for (int i = 0; i < N; i++) {
        int ka = merge_dare_keep(42, 0, "layers.0.q", (uint64_t)i, d);
        int kb = merge_dare_keep(42, 1, "layers.0.q", (uint64_t)i, d);
        kept_a += ka;
        kept_b += kb;
        double pa = ka ? a[i] / d : 0, pb = kb ? b[i] / d : 0; /* rescaled by 1/density */
        double lin_want = w[0] * pa + w[1] * pb;
        double vote = pa + pb; /* unweighted */
        int sgn = vote >= 0 ? 1 : -1, n = 0;
        double acc = 0;
        if (pa != 0 && (pa > 0) == (sgn > 0)) acc += w[0] * pa, n++;
        if (pb != 0 && (pb > 0) == (sgn > 0)) acc += w[1] * pb, n++;
        double ties_want = n ? acc / n : 0;
        err_l = fmax(err_l, fabs(ol.val[i] - lin_want));
        err_t = fmax(err_t, fabs(ot.val[i] - ties_want));
    }
    printf(
        "dare (16 entries, density 0.25): kept %d and %d; max abs error linear %.1e, ties %.1e\n",
        kept_a, kept_b, err_l, err_t);
    CHECK(err_l < 1e-6 && err_t < 1e-6, "dare vs worked: %g %g", err_l, err_t);
    CHECK(kept_a > 0 && kept_a < N && kept_b > 0 && kept_b < N, "a draw that keeps some");
    tvec_free(&ol);
    tvec_free(&ot);

    /* density 1: nothing dropped, nothing rescaled: dare_linear = the weighted sum. */
    struct merge_params one = {PRUNE_RANDOM, SIGN_NONE, 1.0, 1.0, 42};
    merge_tensor(&one, in, w, 2, "x", &ol);
    double e1 = 0;
    for (int i = 0; i < N; i++) e1 = fmax(e1, fabs(ol.val[i] - (w[0] * a[i] + w[1] * b[i])));
    CHECK(e1 < 1e-6, "dare density 1 = sum: %g", e1);
    tvec_free(&ol);
    for (int i = 0; i < 2; i++) tvec_free(&in[i]);

    /* The draws: rate = density, inputs and tensors independent, rescaled sum unbiased. */
    enum { M = 200000 };
    int kept = 0, both = 0;
    double sum_in = 0, sum_out = 0;
    struct tvec big;
    tvec_init_dense(&big, M);
    for (int i = 0; i < M; i++) big.val[i] = 1.0f + (float)(i % 7);
    const double w0 = 1.0;
    struct merge_params p3 = {PRUNE_RANDOM, SIGN_NONE, 0.3, 1.0, 7};
    struct tvec o;
    merge_tensor(&p3, &big, &w0, 1, "t", &o);
    for (int i = 0; i < M; i++) {
        int k0 = merge_dare_keep(7, 0, "t", (uint64_t)i, 0.3);
        kept += k0;
        both += k0 && merge_dare_keep(7, 1, "t", (uint64_t)i, 0.3);
        sum_in += big.val[i];
        sum_out += o.val[i];
    }
    double rate = (double)kept / M, joint = (double)both / M, bias = sum_out / sum_in - 1;
    printf("dare draws (200000, density 0.3): kept %.4f, both inputs %.4f (0.09 if independent), "
           "rescaled sum / sum - 1 = %+.4f\n",
           rate, joint, bias);
    CHECK(fabs(rate - 0.3) < 0.005 && fabs(joint - 0.09) < 0.004 && fabs(bias) < 0.01,
          "rate %g joint %g bias %g", rate, joint, bias);
    tvec_free(&o);
    tvec_free(&big);
}

/* ---- sparse = dense ----------------------------------------------------------------------- */

static void test_sparse_equals_dense(void) {
    enum { NUMEL = 60, M = 3 };
    struct rng g;
    rng_seed(&g, 99);
    struct tvec sp[M], de[M];
    for (int i = 0; i < M; i++) {
        sp[i].numel = NUMEL;
        sp[i].idx = xmalloc(NUMEL * sizeof *sp[i].idx);
        sp[i].val = xalloc_floats(NUMEL);
        sp[i].n = 0;
        for (uint64_t j = 0; j < NUMEL; j++)
            if (rng_double(&g) < 0.3) {
                sp[i].idx[sp[i].n] = j;
                sp[i].val[sp[i].n++] = rng_uniform(&g, -1, 1);
            }
        tvec_init_dense(&de[i], NUMEL);
        tvec_add_to(&sp[i], 1.0f, de[i].val);
    }
    const double w[M] = {1.0, -0.5, 2.0};
    const struct merge_params ps[] = {
        {PRUNE_NONE, SIGN_NONE, 1, 1, 0},         {PRUNE_MAGNITUDE, SIGN_NONE, 0.1, 1, 0},
        {PRUNE_MAGNITUDE, SIGN_TOTAL, 0.1, 1, 0}, {PRUNE_MAGNITUDE, SIGN_FREQUENCY, 0.2, 1, 0},
        {PRUNE_RANDOM, SIGN_NONE, 0.5, 1, 3},     {PRUNE_RANDOM, SIGN_TOTAL, 0.5, 0.7, 3},
    };
    const char *names[] = {"add",         "magnitude_prune", "ties", "ties frequency",
                           "dare_linear", "dare_ties"};
    for (size_t c = 0; c < sizeof ps / sizeof ps[0]; c++) {
        struct tvec a, b;
        merge_tensor(&ps[c], sp, w, M, "layer", &a);
        merge_tensor(&ps[c], de, w, M, "layer", &b);
        float *da = densify(&a);
        double err = max_abs_diff(da, b.val, NUMEL);
        CHECK(a.idx != NULL && b.idx == NULL, "%s: sparse in gives sparse out", names[c]);
        CHECK(err == 0, "%s: sparse and dense differ by %g", names[c], err);
        printf("sparse = dense %-16s %3llu stored entries, max abs difference %.1e\n", names[c],
               (unsigned long long)a.n, err);
        free(da);
        tvec_free(&a);
        tvec_free(&b);
    }
    for (int i = 0; i < M; i++) {
        tvec_free(&sp[i]);
        tvec_free(&de[i]);
    }

    /* LoTA's additive merge of disjoint masks (LoTTO): the union, every value as it was. */
    uint64_t i1[3] = {2, 7, 40}, i2[2] = {5, 41};
    float v1[3] = {0.5f, -1.0f, 2.0f}, v2[2] = {3.0f, -0.25f};
    struct tvec x[2] = {{NUMEL, 3, i1, v1}, {NUMEL, 2, i2, v2}}, u;
    const double ones[2] = {1, 1};
    struct merge_params add = {PRUNE_NONE, SIGN_NONE, 1, 1, 0};
    merge_tensor(&add, x, ones, 2, "w", &u);
    const uint64_t want_i[5] = {2, 5, 7, 40, 41};
    const float want_v[5] = {0.5f, 3.0f, -1.0f, 2.0f, -0.25f};
    int same = u.n == 5;
    for (int k = 0; same && k < 5; k++) same = u.idx[k] == want_i[k] && u.val[k] == want_v[k];
    CHECK(same, "additive union: %llu entries", (unsigned long long)u.n);
    tvec_free(&u);
}

/* ---- SVD ------------------------------------------------------------------------------------ */

/* Q (n, n) with orthonormal columns, from Gram-Schmidt of a random matrix. */
static void random_orthogonal(double *q, int32_t n, struct rng *g) {
    for (int32_t i = 0; i < n * n; i++) q[i] = rng_normal(g, 0, 1);
    for (int32_t j = 0; j < n; j++) {
        for (int pass = 0; pass < 2; pass++)
            for (int32_t k = 0; k < j; k++) {
                double d = 0;
                for (int32_t i = 0; i < n; i++) d += q[i * n + k] * q[i * n + j];
                for (int32_t i = 0; i < n; i++) q[i * n + j] -= d * q[i * n + k];
            }
        double nn = 0;
        for (int32_t i = 0; i < n; i++) nn += q[i * n + j] * q[i * n + j];
        for (int32_t i = 0; i < n; i++) q[i * n + j] /= sqrt(nn);
    }
}

/* ||M - U diag(s) Vt||_F / ||M||_F and the worst deviation of U^T U and Vt Vt^T from I. */
static void svd_errors(const float *M, int32_t m, int32_t n, int32_t k, const float *u,
                       const float *s, const float *vt, double *rel, double *ortho) {
    double num = 0, den = 0;
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < n; j++) {
            double r = 0;
            for (int32_t q = 0; q < k; q++) r += (double)u[i * k + q] * s[q] * vt[q * n + j];
            num += (M[i * n + j] - r) * (M[i * n + j] - r);
            den += (double)M[i * n + j] * M[i * n + j];
        }
    *rel = sqrt(num / den);
    *ortho = 0;
    for (int32_t a = 0; a < k; a++)
        for (int32_t b = 0; b < k; b++) {
            if (s[a] == 0 || s[b] == 0) continue;
            double du = 0, dv = 0;
            for (int32_t i = 0; i < m; i++) du += (double)u[i * k + a] * u[i * k + b];
            for (int32_t j = 0; j < n; j++) dv += (double)vt[a * n + j] * vt[b * n + j];
            *ortho = fmax(*ortho, fmax(fabs(du - (a == b)), fabs(dv - (a == b))));
        }
}

static void test_svd(void) {
    struct rng g;
    rng_seed(&g, 5);
    /* Exact rank 5 (sums of outer products), both routes, tall and wide, k = 5 and 8. */
    const int32_t shapes[3][2] = {{40, 25}, {25, 60}, {300, 280}};
    for (int sh = 0; sh < 3; sh++) {
        int32_t m = shapes[sh][0], n = shapes[sh][1], true_rank = 5;
        float *M = xalloc_floats((size_t)m * n);
        for (int32_t q = 0; q < true_rank; q++) {
            float *x = xalloc_floats((size_t)m), *y = xalloc_floats((size_t)n);
            for (int32_t i = 0; i < m; i++) x[i] = rng_normal(&g, 0, 1);
            for (int32_t j = 0; j < n; j++) y[j] = rng_normal(&g, 0, 1) * (float)(q + 1);
            for (int32_t i = 0; i < m; i++)
                for (int32_t j = 0; j < n; j++) M[i * n + j] += x[i] * y[j];
            free(x);
            free(y);
        }
        for (int route = SVD_JACOBI; route <= SVD_RANDOMIZED; route++)
            for (int32_t k = 5; k <= 8; k += 3) {
                float *u = xalloc_floats((size_t)m * k), *s = xalloc_floats((size_t)k);
                float *vt = xalloc_floats((size_t)k * n);
                svd_truncated(M, m, n, k, 11, route, u, s, vt);
                double rel, ortho;
                svd_errors(M, m, n, k, u, s, vt, &rel, &ortho);
                printf("svd %-10s %3dx%-3d rank 5, k %d: relative error %.1e, orthonormality %.1e, "
                       "s[k-1] %.1e\n",
                       route == SVD_JACOBI ? "jacobi" : "randomized", m, n, k, rel, ortho,
                       s[k - 1]);
                CHECK(rel < 2e-6 && ortho < 1e-5, "rank >= true rank must be exact: %g %g", rel,
                      ortho);
                if (k > true_rank)
                    CHECK(s[k - 1] < 1e-4 * s[0], "no sixth direction: %g", s[k - 1]);
                free(u);
                free(s);
                free(vt);
            }
        free(M);
    }
    /* Known spectrum: M = Q1 diag(sigma) Q2^T (30 x 20); Eckart-Young: the best rank-k error is
     * sqrt(sum of the left-out sigma^2) / sqrt(sum of all). */
    enum { m = 30, n = 20 };
    double *q1 = xmalloc(m * m * sizeof *q1), *q2 = xmalloc(n * n * sizeof *q2), sig[n];
    random_orthogonal(q1, m, &g);
    random_orthogonal(q2, n, &g);
    float *M = xalloc_floats(m * n);
    double total = 0;
    for (int32_t q = 0; q < n; q++) {
        sig[q] = 10.0 * pow(0.6, q);
        total += sig[q] * sig[q];
    }
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < n; j++) {
            double x = 0;
            for (int32_t q = 0; q < n; q++) x += q1[i * m + q] * sig[q] * q2[j * n + q];
            M[i * n + j] = (float)x;
        }
    for (int route = SVD_JACOBI; route <= SVD_RANDOMIZED; route++)
        for (int32_t k = 1; k <= 4; k++) {
            float u[m * 4], s[4], vt[4 * n];
            svd_truncated(M, m, n, k, 3, route, u, s, vt);
            double rel, ortho, tail = 0, worst_s = 0;
            svd_errors(M, m, n, k, u, s, vt, &rel, &ortho);
            for (int32_t q = k; q < n; q++) tail += sig[q] * sig[q];
            double want = sqrt(tail / total);
            for (int32_t q = 0; q < k; q++) worst_s = fmax(worst_s, fabs(s[q] - sig[q]) / sig[q]);
            printf("svd %-10s known spectrum, k %d: error %.6f (Eckart-Young %.6f), singular "
                   "values rel. error %.1e\n",
                   route == SVD_JACOBI ? "jacobi" : "randomized", k, rel, want, worst_s);
            CHECK(fabs(rel - want) < 1e-4 * fmax(want, 1e-3) + 1e-6 && worst_s < 1e-5 &&
                      ortho < 1e-5,
                  "k %d: %g vs %g, s %g, ortho %g", k, rel, want, worst_s, ortho);
        }
    /* k beyond min(m, n): the extra triplets are zero and the product is still M. */
    float u[m * 24], s[24], vt[24 * n];
    svd_truncated(M, m, n, 24, 3, SVD_AUTO, u, s, vt);
    double rel, ortho;
    svd_errors(M, m, n, 24, u, s, vt, &rel, &ortho);
    int zero = 1;
    for (int32_t q = n; q < 24; q++) zero &= s[q] == 0;
    CHECK(zero && rel < 2e-6, "k > min(m, n): error %g", rel);
    free(q1);
    free(q2);
    free(M);
}

int main(void) {
    test_ties_by_hand();
    test_dare();
    test_sparse_equals_dense();
    test_svd();
    return check_report("merge_ops_unit");
}
