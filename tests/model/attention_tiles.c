/* Attention in causal tiles (ops.c) against its definition written out in double: at a length
 * of three query blocks (the last one partial), the output and each query's log-sum-exp
 * against the plain causal softmax, and the backward (recomputed from lse, no (T, T) block)
 * against central differences of the double-precision loss sum(dout * out). */
#include "check.h"
#include "core.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>

enum { B = 2, H = 4, KV = 2, D = 8, T = 2 * ATTENTION_CAUSAL_BLOCK + 22, N = B * T };

struct inputs {
    double q[N * H * D], k[N * KV * D], v[N * KV * D], dout[N * H * D];
};

/* out (n, H*D) and lse (B, H, T) of the causal softmax, in double. */
static void reference(const struct inputs *in, double *out, double *lse)
{
    static double sc[T];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / KV);
            for (int i = 0; i < T; i++) {
                const double *q_i = in->q + ((size_t)(b * T + i) * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *k_j = in->k + ((size_t)(b * T + j) * KV + g) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += q_i[d] * k_j[d];
                    sc[j] = dot / sqrt((double)D);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j <= i; j++) sum += exp(sc[j] - mx);
                if (lse) lse[((size_t)b * H + h) * T + i] = mx + log(sum);
                double *o_i = out + ((size_t)(b * T + i) * H + h) * D;
                for (int d = 0; d < D; d++) o_i[d] = 0;
                for (int j = 0; j <= i; j++) {
                    double p = exp(sc[j] - mx) / sum;
                    const double *v_j = in->v + ((size_t)(b * T + j) * KV + g) * D;
                    for (int d = 0; d < D; d++) o_i[d] += p * v_j[d];
                }
            }
        }
}

static double loss(const struct inputs *in, double *out)
{
    reference(in, out, NULL);
    double s = 0;
    for (size_t i = 0; i < (size_t)N * H * D; i++) s += in->dout[i] * out[i];
    return s;
}

static float *to_floats(const double *x, size_t n)
{
    float *f = xalloc_floats(n);
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

/* Round the inputs to floats so that both sides see the same values. */
static void fill(struct rng *g, double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform(g, -1.0f, 1.0f);
}

/* Central differences of the double loss at `count` random entries of x against grad. */
static double check_grad(struct rng *g, struct inputs *in, double *x, size_t n,
                         const float *grad, double *scratch, int count)
{
    double worst = 0, eps = 1e-5;
    for (int c = 0; c < count; c++) {
        size_t i = (size_t)rng_below(g, n);
        double keep = x[i];
        x[i] = keep + eps;
        double up = loss(in, scratch);
        x[i] = keep - eps;
        double down = loss(in, scratch);
        x[i] = keep;
        double fd = (up - down) / (2 * eps), err = fabs(fd - grad[i]) / (1.0 + fabs(fd));
        worst = err > worst ? err : worst;
    }
    return worst;
}

int main(void)
{
    struct rng g;
    rng_seed(&g, 11);
    struct inputs *in = xcalloc(1, sizeof *in);
    fill(&g, in->q, sizeof in->q / sizeof *in->q);
    fill(&g, in->k, sizeof in->k / sizeof *in->k);
    fill(&g, in->v, sizeof in->v / sizeof *in->v);
    fill(&g, in->dout, sizeof in->dout / sizeof *in->dout);
    size_t nq = (size_t)N * H * D, nkv = (size_t)N * KV * D;
    float *q = to_floats(in->q, nq), *k = to_floats(in->k, nkv), *v = to_floats(in->v, nkv);
    float *dout = to_floats(in->dout, nq);
    float *out = xalloc_floats(nq), *lse = xalloc_floats((size_t)B * H * T);
    float *dq = xalloc_floats(nq), *dk = xalloc_floats(nkv), *dv = xalloc_floats(nkv);
    attention_forward(out, lse, q, k, v, B, T, H, KV, D);
    attention_backward(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KV, D);

    double *ref = xmalloc(nq * sizeof *ref), *ref_lse = xmalloc((size_t)B * H * T * sizeof *ref_lse);
    reference(in, ref, ref_lse);
    double worst_o = 0, worst_lse = 0;
    for (size_t i = 0; i < nq; i++) worst_o = fmax(worst_o, fabs(ref[i] - out[i]));
    for (size_t i = 0; i < (size_t)B * H * T; i++) worst_lse = fmax(worst_lse, fabs(ref_lse[i] - lse[i]));
    printf("out max abs err %.3g, lse max abs err %.3g\n", worst_o, worst_lse);
    CHECK(worst_o < 1e-5, "out against the double causal softmax: %.3g", worst_o);
    CHECK(worst_lse < 1e-5, "lse against the double causal softmax: %.3g", worst_lse);

    double eq = check_grad(&g, in, in->q, nq, dq, ref, 60);
    double ek = check_grad(&g, in, in->k, nkv, dk, ref, 60);
    double ev = check_grad(&g, in, in->v, nkv, dv, ref, 60);
    printf("backward against central differences (rel): dq %.3g, dk %.3g, dv %.3g\n", eq, ek, ev);
    CHECK(eq < 1e-4 && ek < 1e-4 && ev < 1e-4,
          "backward against central differences: dq %.3g, dk %.3g, dv %.3g", eq, ek, ev);

    /* entries from the last, partial block are covered: the last query's gradient is live */
    double last = 0;
    for (int d = 0; d < D; d++) last += fabs(dq[((size_t)(T - 1) * H) * D + (size_t)d]);
    CHECK(last > 0, "the last query's gradient is zero");

    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(ref), free(ref_lse), free(in);
    return check_report("attention_tiles");
}
