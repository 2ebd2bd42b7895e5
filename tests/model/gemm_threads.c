/* gemm_f32 and gemm_f64 split products into panels across the host's threads; every
 * transpose, a leading dimension wider than the matrix, beta 0 and 1, k = 0 and shapes
 * that split by rows and by columns must give the serial product, bit for bit. The
 * row-wise kernels (RMSNorm, softmax, cross-entropy) must also give the same bits on 1 and
 * 2 threads. */
#include "check.h"
#include "core.h"
#include "gemm.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* C (m, n) = alpha op(A) op(B) + beta C in double, the plain definition. */
static void reference(int ta, int tb, int32_t m, int32_t n, int32_t k, double alpha,
                      const float *a, int32_t lda, const float *b, int32_t ldb, double beta,
                      const float *c0, double *c, int32_t ldc)
{
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < n; j++) {
            double s = 0;
            for (int32_t p = 0; p < k; p++) {
                double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += av * bv;
            }
            c[(size_t)i * ldc + j] = alpha * s + beta * c0[(size_t)i * ldc + j];
        }
}

static float *random_floats(struct rng *g, size_t n)
{
    float *v = xalloc_floats(n ? n : 1);
    for (size_t i = 0; i < n; i++) v[i] = rng_uniform(g, -1.0f, 1.0f);
    return v;
}

static void check_shape(struct rng *g, int ta, int tb, int32_t m, int32_t n, int32_t k,
                        float beta)
{
    int32_t pad = 3; /* leading dimensions wider than the rows */
    int32_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
    size_t nc = (size_t)m * ldc;
    float *a = random_floats(g, na), *b = random_floats(g, nb), *c0 = random_floats(g, nc);
    float *c1 = xalloc_floats(nc), *c2 = xalloc_floats(nc);
    double *ref = xmalloc(nc * sizeof *ref);
    memcpy(c1, c0, nc * sizeof *c1);
    memcpy(c2, c0, nc * sizeof *c2);
    parallel_set_threads(1);
    gemm_f32(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, beta, c1, ldc);
    parallel_set_threads(2);
    gemm_f32(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, beta, c2, ldc);
    reference(ta, tb, m, n, k, 0.5, a, lda, b, ldb, beta, c0, ref, ldc);
    double worst = 0;
    int same = 1;
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < n; j++) {
            size_t at = (size_t)i * ldc + j;
            double e = fabs(c2[at] - ref[at]) / (1.0 + fabs(ref[at]));
            if (e > worst) worst = e;
            if (memcmp(&c1[at], &c2[at], sizeof(float)) != 0) same = 0;
        }
    /* the padding between rows is never written */
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = n; j < ldc; j++)
            if (c2[(size_t)i * ldc + j] != c0[(size_t)i * ldc + j]) same = 0;
    CHECK(same, "gemm_f32 ta %d tb %d (%d x %d x %d) beta %g: 2 threads give 1 thread's bits", ta,
          tb, m, n, k, beta);
    CHECK(worst < 1e-5 * (k + 1), "gemm_f32 ta %d tb %d (%d x %d x %d): error %.2g against double",
          ta, tb, m, n, k, worst);
    free(a), free(b), free(c0), free(c1), free(c2), free(ref);
}

static void check_f64(struct rng *g)
{
    int32_t m = 300, n = 70, k = 90;
    double *a = xmalloc((size_t)m * k * sizeof *a), *b = xmalloc((size_t)k * n * sizeof *b);
    double *c1 = xcalloc((size_t)m * n, sizeof *c1), *c2 = xcalloc((size_t)m * n, sizeof *c2);
    for (int32_t i = 0; i < m * k; i++) a[i] = rng_uniform(g, -1, 1);
    for (int32_t i = 0; i < k * n; i++) b[i] = rng_uniform(g, -1, 1);
    parallel_set_threads(1);
    gemm_f64(0, 0, m, n, k, 1.0, a, k, b, n, 0.0, c1, n);
    parallel_set_threads(2);
    gemm_f64(0, 0, m, n, k, 1.0, a, k, b, n, 0.0, c2, n);
    double worst = 0;
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < n; j++) {
            double s = 0;
            for (int32_t p = 0; p < k; p++) s += a[(size_t)i * k + p] * b[(size_t)p * n + j];
            double e = fabs(c2[(size_t)i * n + j] - s);
            if (e > worst) worst = e;
        }
    CHECK(memcmp(c1, c2, (size_t)m * n * sizeof *c1) == 0 && worst < 1e-12,
          "gemm_f64 (300 x 70 x 90): 2 threads give 1 thread's bits, error %.2g", worst);
    free(a), free(b), free(c1), free(c2);
}

/* The row-wise kernels on 1 and 2 threads. */
/* Attention's length: three causal blocks, the last one partial. */
enum { T_MAX = 2 * ATTENTION_CAUSAL_BLOCK + 22 };

static void check_kernels(struct rng *g)
{
    int32_t n = 96, c = 40, V = 300, T = T_MAX;
    float *x = random_floats(g, (size_t)n * c), *w = random_floats(g, (size_t)c);
    float *y1 = xalloc_floats((size_t)n * c), *y2 = xalloc_floats((size_t)n * c);
    float *r1 = xalloc_floats((size_t)n), *r2 = xalloc_floats((size_t)n);
    parallel_set_threads(1);
    rmsnorm_forward(y1, r1, x, w, n, c, 1e-5f);
    parallel_set_threads(2);
    rmsnorm_forward(y2, r2, x, w, n, c, 1e-5f);
    CHECK(memcmp(y1, y2, (size_t)n * c * sizeof *y1) == 0, "rmsnorm_forward: same bits on 1 and 2 threads");

    float *logits = random_floats(g, (size_t)n * V), *l1 = xalloc_floats((size_t)n),
          *l2 = xalloc_floats((size_t)n);
    int32_t *tg = xmalloc((size_t)n * sizeof *tg);
    for (int32_t i = 0; i < n; i++) tg[i] = i % 5 == 0 ? -1 : (int32_t)rng_below(g, (uint64_t)V);
    int32_t v1, v2;
    parallel_set_threads(1);
    double t1 = crossentropy_forward(l1, logits, tg, n, V, &v1);
    parallel_set_threads(2);
    double t2 = crossentropy_forward(l2, logits, tg, n, V, &v2);
    CHECK(t1 == t2 && v1 == v2 && memcmp(l1, l2, (size_t)n * sizeof *l1) == 0,
          "crossentropy_forward: same total (%.17g, %.17g) and rows on 1 and 2 threads", t1, t2);

    /* attention: 2 examples, 4 heads, 2 kv heads, head dim 8 */
    int32_t B = 2, H = 4, KV = 2, D = 8, rows = B * T;
    float *q = random_floats(g, (size_t)rows * H * D), *k = random_floats(g, (size_t)rows * KV * D);
    float *v = random_floats(g, (size_t)rows * KV * D), *dout = random_floats(g, (size_t)rows * H * D);
    float *o[2], *lse[2], *dq[2], *dk[2], *dv[2];
    for (int s = 0; s < 2; s++) {
        parallel_set_threads(s + 1);
        o[s] = xalloc_floats((size_t)rows * H * D);
        lse[s] = xalloc_floats((size_t)B * H * T);
        dq[s] = xalloc_floats((size_t)rows * H * D);
        dk[s] = xalloc_floats((size_t)rows * KV * D);
        dv[s] = xalloc_floats((size_t)rows * KV * D);
        attention_forward(o[s], lse[s], q, k, v, B, T, H, KV, D);
        attention_backward(dq[s], dk[s], dv[s], dout, o[s], lse[s], q, k, v, B, T, H, KV, D);
    }
    CHECK(memcmp(o[0], o[1], (size_t)rows * H * D * sizeof(float)) == 0 &&
              memcmp(dq[0], dq[1], (size_t)rows * H * D * sizeof(float)) == 0 &&
              memcmp(dk[0], dk[1], (size_t)rows * KV * D * sizeof(float)) == 0 &&
              memcmp(dv[0], dv[1], (size_t)rows * KV * D * sizeof(float)) == 0,
          "attention forward and backward: same bits on 1 and 2 threads");
    for (int s = 0; s < 2; s++) free(o[s]), free(lse[s]), free(dq[s]), free(dk[s]), free(dv[s]);
    free(q), free(k), free(v), free(dout);
    free(x), free(w), free(y1), free(y2), free(r1), free(r2), free(logits), free(l1), free(l2), free(tg);
}

/* A child of fork() (peft compare forks before it execs) has none of the parent's worker
 * threads; its loops must still run, on workers of its own. */
static void check_fork(struct rng *g)
{
    parallel_set_threads(2);
    float *a = random_floats(g, 256 * 256), *b = random_floats(g, 256 * 256);
    float *c = xalloc_floats(256 * 256);
    gemm_f32(0, 0, 256, 256, 256, 1.0f, a, 256, b, 256, 0.0f, c, 256); /* workers started */
    pid_t pid = fork();
    if (pid == 0) {
        float *c2 = xalloc_floats(256 * 256);
        gemm_f32(0, 0, 256, 256, 256, 1.0f, a, 256, b, 256, 0.0f, c2, 256);
        _exit(memcmp(c, c2, 256 * 256 * sizeof(float)) == 0 ? 0 : 1);
    }
    int status = -1, waited = 0;
    /* a child waiting for workers it does not have would hang: give it 30 s */
    while (pid > 0 && waitpid(pid, &status, WNOHANG) == 0 && waited++ < 3000) usleep(10000);
    if (pid > 0 && waited > 3000) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    CHECK(pid > 0, "fork failed");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a product in a forked child: exit status %d (1: other bits, else it hung or crashed)",
          status);
    free(a), free(b), free(c);
}

int main(void)
{
    struct rng g;
    rng_seed(&g, 7);
    /* Shapes around the panel size (32) and the split threshold, split by rows (m > n) and
     * by columns, rank-8 products as LoRA's, k = 0, and a decoded token's (one row, split for
     * the size of its weight). */
    const int32_t shapes[][3] = {{512, 576, 8}, {512, 8, 576}, {8, 576, 512}, {576, 8, 512},
                                 {300, 200, 100}, {200, 301, 64}, {33, 1000, 70}, {1000, 33, 70},
                                 {64, 64, 0}, {1, 1, 1}, {1, 576, 576}, {2, 1536, 576}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                check_shape(&g, ta, tb, shapes[s][0], shapes[s][1], shapes[s][2],
                            (ta + tb) % 2 ? 1.0f : 0.0f);
    check_f64(&g);
    check_kernels(&g);
    check_fork(&g);
    return check_report("gemm_threads");
}
