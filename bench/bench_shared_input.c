/*
 * bench_shared_input: what batching the LoRA A products of the sites that read one input
 * would save. A layer's q_proj, k_proj and v_proj read one normalised input x (rows, C), its
 * gate_proj and up_proj another; LoRA computes u = x A^T (rows, r) for each site apart and,
 * in the backward, dA = g^T x (r, C). Stacked, a group's products are one call each: x [A_q;
 * A_k; A_v]^T (rows, 3r) and [g_q g_k g_v]^T x (3r, C). This times both forms with the host's
 * gemm_f32, alternating them over rounds (the machine's noise falls on both), and prints the
 * medians and the saving per layer (one group of 3 and one of 2).
 *
 * usage: bench_shared_input [ROWS C R THREADS ROUNDS]   (default 512 576 8 2 15: SmolLM2-135M
 *                                                        at batch 2 x 256)
 */
#include <stdio.h>
#include <stdlib.h>

#include "core.h"
#include "model.h"
#include "gemm.h"

static double seconds_of(int stacked, int32_t group, int32_t n, int32_t c, int32_t r,
                         const float *x, const float *a, float *u, const float *g, float *da) {
    const int reps = 50;
    double t0 = now_seconds();
    for (int i = 0; i < reps; i++) {
        if (stacked) { /* one product of each kind for the whole group */
            gemm_f32(0, 1, n, group * r, c, 1.0f, x, c, a, c, 0.0f, u, group * r);
            gemm_f32(1, 0, group * r, c, n, 1.0f, g, group * r, x, c, 0.0f, da, c);
        } else {
            for (int32_t s = 0; s < group; s++) {
                gemm_f32(0, 1, n, r, c, 1.0f, x, c, a + (size_t)s * r * c, c, 0.0f,
                         u + (size_t)s * n * r, r);
                gemm_f32(1, 0, r, c, n, 1.0f, g + (size_t)s * n * r, r, x, c, 0.0f,
                         da + (size_t)s * r * c, c);
            }
        }
    }
    return (now_seconds() - t0) / reps;
}

static int cmp(const void *p, const void *q) {
    double a = *(const double *)p, b = *(const double *)q;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv) {
    int32_t n = argc > 1 ? atoi(argv[1]) : 512, c = argc > 2 ? atoi(argv[2]) : 576;
    int32_t r = argc > 3 ? atoi(argv[3]) : 8, threads = argc > 4 ? atoi(argv[4]) : 2;
    int32_t rounds = argc > 5 ? atoi(argv[5]) : 15;
    if (n < 1 || c < 1 || r < 1 || threads < 1 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "usage: bench_shared_input [ROWS C R THREADS ROUNDS]\n");
        return 2;
    }
    parallel_set_threads(threads);
    float *x = xalloc_floats((size_t)n * c), *a = xalloc_floats((size_t)3 * r * c);
    float *u = xalloc_floats((size_t)3 * n * r), *g = xalloc_floats((size_t)3 * n * r);
    float *da = xalloc_floats((size_t)3 * r * c);
    struct rng rg;
    rng_seed_label(&rg, 1, "bench-shared-input");
    for (size_t i = 0; i < (size_t)n * c; i++) x[i] = rng_normal(&rg, 0.0f, 1.0f);
    for (size_t i = 0; i < (size_t)3 * r * c; i++) a[i] = rng_normal(&rg, 0.0f, 0.02f);
    for (size_t i = 0; i < (size_t)3 * n * r; i++) g[i] = rng_normal(&rg, 0.0f, 1.0f);
    printf("rows %d, C %d, r %d, %d threads, %d rounds; forward x A^T and backward g^T x\n", n, c,
           r, threads, rounds);
    double saved_layer = 0;
    for (int32_t group = 3; group >= 2; group--) {
        double *apart = xmalloc(sizeof *apart * (size_t)rounds);
        double *stacked = xmalloc(sizeof *stacked * (size_t)rounds);
        for (int32_t k = 0; k < rounds; k++) {
            apart[k] = seconds_of(0, group, n, c, r, x, a, u, g, da);
            stacked[k] = seconds_of(1, group, n, c, r, x, a, u, g, da);
        }
        qsort(apart, (size_t)rounds, sizeof *apart, cmp);
        qsort(stacked, (size_t)rounds, sizeof *stacked, cmp);
        double ma = apart[rounds / 2], ms = stacked[rounds / 2];
        printf("group of %d: apart %.1f us, stacked %.1f us (median), %.2fx, saves %.1f us\n",
               group, 1e6 * ma, 1e6 * ms, ma / ms, 1e6 * (ma - ms));
        saved_layer += ma - ms;
        free(apart);
        free(stacked);
    }
    printf("per layer (q/k/v and gate/up): %.2f ms saved\n", 1e3 * saved_layer);
    free(x);
    free(a);
    free(u);
    free(g);
    free(da);
    return 0;
}
