/* gemm.c: matrix products on OpenBLAS, one thread per output panel (see gemm.h). */
#include "gemm.h"

#include "core/core.h"

#include <cblas.h>
#include <pthread.h>

/* OpenBLAS's own threads would spin (sched_yield) while the host's work; it gets one. */
static pthread_once_t blas_single = PTHREAD_ONCE_INIT;
static void make_blas_single(void) { openblas_set_num_threads(1); }

/* The panels depend on the shape alone, never on the thread count: each panel is one BLAS
 * call with the same arguments whichever thread makes it, so the result is the same bits on
 * any number of threads (BLAS kernels sum differently for different panel sizes). A product
 * of at least MIN_SPLIT_FLOPS is cut into up to MAX_PANELS panels of at least PANEL_MIN rows
 * or columns, a multiple of PANEL_ALIGN (whole register tiles); 8 panels share out evenly
 * over 1, 2, 4 or 8 threads. */
enum { MAX_PANELS = 8, PANEL_MIN = 64, PANEL_ALIGN = 16 };
static const double MIN_SPLIT_FLOPS = 2e6;
/* A product of few rows (a decoded token, m = 1) is bound by reading its weight, not by its
 * FLOPs: split it too when op(B) has this many entries (1 MiB), so both cores stream it. */
static const double MIN_SPLIT_WEIGHTS = 256.0 * 1024.0;

struct gemm_job {
    int trans_a, trans_b, split_rows, f64;
    int32_t m, n, k, lda, ldb, ldc, panels;
    double alpha, beta;
    const void *a, *b;
    void *c;
};

/* Start of panel i of `panels` over a side of `side` rows or columns. */
static int32_t panel_start(int32_t side, int32_t panels, int32_t i)
{
    if (i >= panels) return side;
    int64_t at = (int64_t)side * i / panels;
    return (int32_t)(at - at % PANEL_ALIGN);
}

static void gemm_panels(void *ctx, size_t begin, size_t end)
{
    const struct gemm_job *g = ctx;
    int32_t side = g->split_rows ? g->m : g->n;
    for (size_t i = begin; i < end; i++) {
        int32_t lo = panel_start(side, g->panels, (int32_t)i);
        int32_t hi = panel_start(side, g->panels, (int32_t)i + 1);
        if (lo >= hi) continue;
        int32_t m = g->m, n = g->n;
        size_t a_off = 0, b_off = 0, c_off;
        if (g->split_rows) { /* rows lo..hi of C and of op(A) */
            m = hi - lo;
            a_off = g->trans_a ? (size_t)lo : (size_t)lo * (size_t)g->lda;
            c_off = (size_t)lo * (size_t)g->ldc;
        } else { /* columns lo..hi of C and of op(B) */
            n = hi - lo;
            b_off = g->trans_b ? (size_t)lo * (size_t)g->ldb : (size_t)lo;
            c_off = (size_t)lo;
        }
        enum CBLAS_TRANSPOSE ta = g->trans_a ? CblasTrans : CblasNoTrans;
        enum CBLAS_TRANSPOSE tb = g->trans_b ? CblasTrans : CblasNoTrans;
        if (g->f64)
            cblas_dgemm(CblasRowMajor, ta, tb, m, n, g->k, g->alpha,
                        (const double *)g->a + a_off, g->lda, (const double *)g->b + b_off,
                        g->ldb, g->beta, (double *)g->c + c_off, g->ldc);
        else
            cblas_sgemm(CblasRowMajor, ta, tb, m, n, g->k, (float)g->alpha,
                        (const float *)g->a + a_off, g->lda, (const float *)g->b + b_off,
                        g->ldb, (float)g->beta, (float *)g->c + c_off, g->ldc);
    }
}

static void gemm_run(struct gemm_job *g)
{
    pthread_once(&blas_single, make_blas_single);
    if (g->m <= 0 || g->n <= 0) return;
    if (g->k <= 0) { /* C = beta C; BLAS may reject k = 0 with these leading dimensions */
        for (int32_t i = 0; i < g->m; i++)
            for (int32_t j = 0; j < g->n; j++) {
                size_t at = (size_t)i * (size_t)g->ldc + (size_t)j;
                if (g->f64) ((double *)g->c)[at] *= g->beta;
                else ((float *)g->c)[at] *= (float)g->beta;
            }
        return;
    }
    /* Split the longer side of C, so each panel still reuses the other operand whole. */
    g->split_rows = g->m > g->n;
    int32_t side = g->split_rows ? g->m : g->n;
    g->panels = side / PANEL_MIN < MAX_PANELS ? side / PANEL_MIN : MAX_PANELS;
    int worth = 2.0 * g->m * g->n * g->k >= MIN_SPLIT_FLOPS ||
                (double)g->k * g->n >= MIN_SPLIT_WEIGHTS;
    if (!worth || g->panels < 2) g->panels = 1;
    parallel_for((size_t)g->panels, 1, gemm_panels, g);
}

void gemm_f32(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, float alpha,
              const float *a, int32_t lda, const float *b, int32_t ldb, float beta, float *c,
              int32_t ldc)
{
    struct gemm_job g = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
                         .lda = lda, .ldb = ldb, .ldc = ldc, .alpha = alpha, .beta = beta,
                         .a = a, .b = b, .c = c};
    gemm_run(&g);
}

void gemm_f64(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, double alpha,
              const double *a, int32_t lda, const double *b, int32_t ldb, double beta,
              double *c, int32_t ldc)
{
    struct gemm_job g = {.trans_a = trans_a, .trans_b = trans_b, .f64 = 1, .m = m, .n = n,
                         .k = k, .lda = lda, .ldb = ldb, .ldc = ldc, .alpha = alpha,
                         .beta = beta, .a = a, .b = b, .c = c};
    gemm_run(&g);
}
