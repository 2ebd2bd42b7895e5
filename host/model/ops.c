/* ops.c: the kernels of the llama decoder (see ops.h). Matrix products go through
 * gemm_f32; the rest are loops over contiguous rows, split across the host's worker
 * threads (parallel_for) by whole rows, so their results do not depend on the thread count. */
#include "ops.h"
#include "model.h"

#include "core/core.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- linear ---------------------------------------------------------------------------- */

void matmul_forward(float *y, const float *x, const float *w, int32_t n, int32_t d_in,
                    int32_t d_out)
{
    /* y (n, d_out) = x (n, d_in) . W^T (d_in, d_out) */
    gemm_f32(0, 1, n, d_out, d_in, 1.0f, x, d_in, w,
                d_in, 0.0f, y, d_out);
}

void matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                     int32_t n, int32_t d_in, int32_t d_out, float dx_beta)
{
    if (dx) /* dx (n, d_in) = dy (n, d_out) . W (d_out, d_in) */
        gemm_f32(0, 0, n, d_in, d_out, 1.0f, dy,
                    d_out, w, d_in, dx_beta, dx, d_in);
    if (dw) /* dW (d_out, d_in) += dy^T (d_out, n) . x (n, d_in) */
        gemm_f32(1, 0, d_out, d_in, n, 1.0f, dy, d_out,
                    x, d_in, 1.0f, dw, d_in);
}

/* Rows per block of the sampled product: long enough for the dot products to run at speed,
 * short enough that a block's transposed x and dy stay in cache. */
enum { SAMPLED_ROWS = 128 };

size_t matmul_sampled_scratch(int32_t d_in, int32_t d_out)
{
    return (size_t)SAMPLED_ROWS * ((size_t)d_in + (size_t)d_out);
}

/* a . b over n floats, in eight independent sums so the compiler can vectorize it. */
static float dot_f32(const float *a, const float *b, int32_t n)
{
    float acc[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int32_t k = 0; k < 8; k++)
            acc[k] += a[i + k] * b[i + k];
    for (; i < n; i++)
        acc[0] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* dst (cols, rb) = src rows [0, rb) of a (., cols) matrix, transposed. */
static void transpose_block(float *dst, const float *src, int32_t rb, int32_t cols)
{
    for (int32_t r = 0; r < rb; r++) {
        const float *row = src + (size_t)r * cols;
        for (int32_t c = 0; c < cols; c++)
            dst[(size_t)c * rb + r] = row[c];
    }
}

void matmul_backward_sampled(float *out, const uint64_t *idx, uint64_t k, const float *dy,
                             const float *x, int32_t n, int32_t d_in, int32_t d_out,
                             float *scratch)
{
    if (k == 0)
        return;
    float *xt = scratch;                                  /* (d_in, rb) */
    float *dyt = scratch + (size_t)SAMPLED_ROWS * d_in;   /* (d_out, rb) */
    for (int32_t r0 = 0; r0 < n; r0 += SAMPLED_ROWS) {
        int32_t rb = n - r0 < SAMPLED_ROWS ? n - r0 : SAMPLED_ROWS;
        transpose_block(xt, x + (size_t)r0 * d_in, rb, d_in);
        transpose_block(dyt, dy + (size_t)r0 * d_out, rb, d_out);
        /* idx is sorted, so the output row o only grows: no division per entry. */
        uint64_t o = 0, row_start = 0, row_end = (uint64_t)d_in;
        for (uint64_t j = 0; j < k; j++) {
            while (idx[j] >= row_end) {
                o++;
                row_start = row_end;
                row_end += (uint64_t)d_in;
            }
            const float *dy_o = dyt + (size_t)o * rb;
            const float *x_i = xt + (size_t)(idx[j] - row_start) * rb;
            out[j] += dot_f32(dy_o, x_i, rb);
        }
    }
}

/* ---- RMSNorm --------------------------------------------------------------------------- */

/* Rows worth a thread of their own in the row-wise kernels: enough work to pay for waking
 * a worker (tens of microseconds). */
enum { ROWS_PER_THREAD = 16 };

struct rmsnorm_job {
    float *y, *rstd, *dx;
    const float *x, *w, *dy, *rstd_in;
    int32_t c;
    float eps;
};

static void rmsnorm_forward_rows(void *ctx, size_t begin, size_t end)
{
    const struct rmsnorm_job *job = ctx;
    float *y = job->y, *rstd = job->rstd;
    const float *x = job->x, *w = job->w;
    int32_t c = job->c;
    float eps = job->eps;
    for (size_t i = begin; i < end; i++) {
        const float *x_i = x + (size_t)i * c; /* (c) */
        float *y_i = y + (size_t)i * c;       /* (c) */
        double ss = 0.0;
        for (int32_t j = 0; j < c; j++)
            ss += (double)x_i[j] * x_i[j];
        float r = (float)(1.0 / sqrt(ss / c + eps));
        rstd[i] = r;
        for (int32_t j = 0; j < c; j++)
            y_i[j] = x_i[j] * r * w[j];
    }
}

void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int32_t n,
                     int32_t c, float eps)
{
    struct rmsnorm_job job = {.y = y, .rstd = rstd, .x = x, .w = w, .c = c, .eps = eps};
    parallel_for((size_t)n, ROWS_PER_THREAD, rmsnorm_forward_rows, &job);
}

static void rmsnorm_backward_rows(void *ctx, size_t begin, size_t end)
{
    /* y = w * x * r with r = (mean(x^2) + eps)^(-1/2), so dr/dx_j = -r^3 x_j / c and
     * dx = r * (w * dy) - x * r^3 / c * sum(w * dy * x). */
    const struct rmsnorm_job *job = ctx;
    const float *x = job->x, *w = job->w, *dy = job->dy, *rstd = job->rstd_in;
    float *dx = job->dx;
    int32_t c = job->c;
    for (size_t i = begin; i < end; i++) {
        const float *x_i = x + i * (size_t)c;
        const float *dy_i = dy + i * (size_t)c;
        float *dx_i = dx + i * (size_t)c;
        float r = rstd[i];
        float dot = 0.0f;
        for (int32_t j = 0; j < c; j++)
            dot += w[j] * dy_i[j] * x_i[j];
        float k = dot * r * r * r / (float)c;
        for (int32_t j = 0; j < c; j++)
            dx_i[j] += r * w[j] * dy_i[j] - k * x_i[j];
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int32_t n, int32_t c)
{
    struct rmsnorm_job job = {.dx = dx, .x = x, .w = w, .dy = dy, .rstd_in = rstd, .c = c};
    parallel_for((size_t)n, ROWS_PER_THREAD, rmsnorm_backward_rows, &job);
    /* The weight gradient sums over rows: on one thread, in row order. */
    if (dw)
        for (int32_t i = 0; i < n; i++) {
            const float *x_i = x + (size_t)i * c, *dy_i = dy + (size_t)i * c;
            for (int32_t j = 0; j < c; j++)
                dw[j] += dy_i[j] * x_i[j] * rstd[i];
        }
}

/* ---- rotary embeddings ----------------------------------------------------------------- */

double rope_inv_freq(const struct model_config *c, int32_t j, int32_t D)
{
    double f = pow((double)c->rope_theta, -2.0 * j / (double)D);
    const struct rope_scaling *r = &c->rope;
    if (r->type == ROPE_LINEAR) return f / r->factor;
    if (r->type != ROPE_LLAMA3) return f;
    /* Llama 3.1: long wavelengths slowed by factor, short ones kept, a smooth blend between */
    double L = r->original_context, wavelen = 2.0 * M_PI / f;
    double low_wavelen = L / r->low_freq_factor, high_wavelen = L / r->high_freq_factor;
    if (wavelen < high_wavelen) return f;
    if (wavelen > low_wavelen) return f / r->factor;
    double smooth = (L / wavelen - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
    return (1.0 - smooth) * f / r->factor + smooth * f;
}

void rope_table(float *cos_t, float *sin_t, int32_t T, int32_t D, const struct model_config *c)
{
    int32_t half = D / 2;
    for (int32_t j = 0; j < half; j++) {
        double inv_freq = rope_inv_freq(c, j, D);
        for (int32_t t = 0; t < T; t++) {
            double angle = (double)t * inv_freq;
            cos_t[(size_t)t * half + j] = (float)cos(angle);
            sin_t[(size_t)t * half + j] = (float)sin(angle);
        }
    }
}

struct rope_job {
    float *x;
    const float *cos_t, *sin_t;
    int32_t T, n_heads, D;
    float sign;
};

static void rope_rows(void *ctx, size_t begin, size_t end)
{
    const struct rope_job *job = ctx;
    int32_t half = job->D / 2, n_heads = job->n_heads, D = job->D;
    float sign = job->sign;
    for (size_t bt = begin; bt < end; bt++) {
        size_t t = bt % (size_t)job->T; /* the position restarts with every sequence */
        const float *c_t = job->cos_t + t * (size_t)half; /* (D/2) */
        const float *s_t = job->sin_t + t * (size_t)half; /* (D/2) */
        float *row = job->x + bt * (size_t)n_heads * D; /* (n_heads*D) */
        for (int32_t h = 0; h < n_heads; h++) {
            float *x1 = row + (size_t)h * D; /* first half */
            float *x2 = x1 + half;           /* second half */
            for (int32_t j = 0; j < half; j++) {
                float a = x1[j], bb = x2[j];
                float s = sign * s_t[j];
                x1[j] = a * c_t[j] - bb * s;
                x2[j] = bb * c_t[j] + a * s;
            }
        }
    }
}

/* One rotation for every head of every row; sign = +1 forward, -1 for the transpose. */
static void rope_apply(float *x, const float *cos_t, const float *sin_t, int32_t B, int32_t T,
                       int32_t n_heads, int32_t D, float sign)
{
    struct rope_job job = {.x = x, .cos_t = cos_t, .sin_t = sin_t, .T = T, .n_heads = n_heads,
                           .D = D, .sign = sign};
    parallel_for((size_t)B * T, ROWS_PER_THREAD, rope_rows, &job);
}

void rope_forward(float *x, const float *cos_t, const float *sin_t, int32_t B, int32_t T,
                  int32_t n_heads, int32_t D)
{
    rope_apply(x, cos_t, sin_t, B, T, n_heads, D, 1.0f);
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int32_t B, int32_t T,
                   int32_t n_heads, int32_t D)
{
    /* The rotation is orthogonal: its transpose is the rotation by the opposite angle. */
    rope_apply(dx, cos_t, sin_t, B, T, n_heads, D, -1.0f);
}

/* ---- attention ------------------------------------------------------------------------- */

/* Causal blocks: queries in blocks of CAUSAL_BLOCK rows see keys up to their block's end
 * only, so the products skip the blocks above the diagonal (they do 5/8 of the square's work
 * at T = 256). Every skipped term is a leading or trailing zero of a dot product (a
 * probability above the diagonal), so the sums are the ones the whole square gives.
 *
 * Tiles, flash-attention style: a block's scores, probabilities and their gradients live in a
 * (CAUSAL_BLOCK, T) tile of the worker's own; nothing of size (T, T) is kept between the
 * passes. The forward keeps each row's log-sum-exp, from which the backward recomputes the
 * probabilities with one more Q K^T product per block. */
enum { CAUSAL_BLOCK = ATTENTION_CAUSAL_BLOCK };

/* Attention runs one (example, key/value head) unit per task across the host's threads: the
 * unit's heads share its k and v, and only its heads write their columns of out, dq, dk and
 * dv, so units never touch the same memory. Inside a unit everything runs on one thread. */
struct attention_job {
    float *out, *lse, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *out_in, *lse_in;
    int32_t T, H, KV, D;
};

/* Row i of a tile (global query index i, live keys 0..i of cols): scores in, probabilities
 * out, zero from i + 1 to cols; returns the row's log-sum-exp. */
static float causal_softmax_row(float *p_i, int32_t i, int32_t cols)
{
    float mx = p_i[0];
    for (int32_t j = 1; j <= i; j++)
        mx = p_i[j] > mx ? p_i[j] : mx;
    vexp_shifted(p_i, p_i, (size_t)i + 1, mx);
    float sum = 0.0f;
    for (int32_t j = 0; j <= i; j++)
        sum += p_i[j];
    float inv = 1.0f / sum;
    for (int32_t j = 0; j <= i; j++)
        p_i[j] *= inv;
    for (int32_t j = i + 1; j < cols; j++)
        p_i[j] = 0.0f;
    return mx + logf(sum);
}

static void attention_forward_units(void *ctx, size_t begin, size_t end)
{
    const struct attention_job *j = ctx;
    int32_t T = j->T, H = j->H, KV = j->KV, D = j->D;
    int32_t hd = H * D, kvd = KV * D, group = H / KV;
    float scale = 1.0f / sqrtf((float)D);
    float *p = xmalloc((size_t)CAUSAL_BLOCK * T * sizeof *p); /* (CAUSAL_BLOCK, T) tile */
    for (size_t u = begin; u < end; u++) {
        int32_t b = (int32_t)(u / (size_t)KV), g = (int32_t)(u % (size_t)KV);
        size_t row0 = (size_t)b * T;
        const float *k_bg = j->k + row0 * kvd + (size_t)g * D; /* (T, D) ld kvd */
        const float *v_bg = j->v + row0 * kvd + (size_t)g * D; /* (T, D) ld kvd */
        for (int32_t h = g * group; h < (g + 1) * group; h++) {
            const float *q_bh = j->q + row0 * hd + (size_t)h * D; /* (T, D) ld hd */
            float *o_bh = j->out + row0 * hd + (size_t)h * D;     /* (T, D) ld hd */
            float *lse_bh = j->lse + ((size_t)b * H + h) * T;     /* (T) */
            for (int32_t i0 = 0; i0 < T; i0 += CAUSAL_BLOCK) {
                int32_t i1 = i0 + CAUSAL_BLOCK < T ? i0 + CAUSAL_BLOCK : T;
                /* S (i1 - i0, i1) = scale Q[i0:i1] K[0:i1]^T */
                gemm_f32(0, 1, i1 - i0, i1, D, scale, q_bh + (size_t)i0 * hd, hd, k_bg, kvd,
                         0.0f, p, T);
                for (int32_t i = i0; i < i1; i++)
                    lse_bh[i] = causal_softmax_row(p + (size_t)(i - i0) * T, i, i1);
                /* O[i0:i1] (i1 - i0, D) = P V[0:i1] */
                gemm_f32(0, 0, i1 - i0, D, i1, 1.0f, p, T, v_bg, kvd, 0.0f,
                         o_bh + (size_t)i0 * hd, hd);
            }
        }
    }
    free(p);
}

void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       int32_t B, int32_t T, int32_t H, int32_t KV, int32_t D)
{
    struct attention_job job = {.out = out, .lse = lse, .q = q, .k = k, .v = v, .T = T,
                                .H = H, .KV = KV, .D = D};
    parallel_for((size_t)B * KV, 1, attention_forward_units, &job);
}

static void attention_backward_units(void *ctx, size_t begin, size_t end)
{
    const struct attention_job *j = ctx;
    int32_t T = j->T, H = j->H, KV = j->KV, D = j->D;
    int32_t hd = H * D, kvd = KV * D, group = H / KV;
    float scale = 1.0f / sqrtf((float)D);
    float *p = xmalloc((size_t)2 * CAUSAL_BLOCK * T * sizeof *p); /* P tile, then dP/dS tile */
    float *ds = p + (size_t)CAUSAL_BLOCK * T;
    for (size_t u = begin; u < end; u++) {
        int32_t b = (int32_t)(u / (size_t)KV), g = (int32_t)(u % (size_t)KV);
        size_t row0 = (size_t)b * T;
        size_t kv_off = row0 * kvd + (size_t)g * D;
        const float *k_bg = j->k + kv_off; /* (T, D) ld kvd */
        const float *v_bg = j->v + kv_off; /* (T, D) ld kvd */
        float *dk_bg = j->dk + kv_off;     /* shared by the group's heads: accumulated */
        float *dv_bg = j->dv + kv_off;
        for (int32_t t = 0; t < T; t++) {
            memset(dk_bg + (size_t)t * kvd, 0, (size_t)D * sizeof(float));
            memset(dv_bg + (size_t)t * kvd, 0, (size_t)D * sizeof(float));
        }
        for (int32_t h = g * group; h < (g + 1) * group; h++) {
            size_t col = row0 * hd + (size_t)h * D;
            const float *q_bh = j->q + col;       /* (T, D) ld hd */
            const float *o_bh = j->out_in + col;  /* (T, D) ld hd */
            const float *do_bh = j->dout + col;   /* (T, D) ld hd */
            float *dq_bh = j->dq + col;
            const float *lse_bh = j->lse_in + ((size_t)b * H + h) * T; /* (T) */
            for (int32_t i0 = 0; i0 < T; i0 += CAUSAL_BLOCK) {
                int32_t i1 = i0 + CAUSAL_BLOCK < T ? i0 + CAUSAL_BLOCK : T, rb = i1 - i0;
                const float *q_blk = q_bh + (size_t)i0 * hd, *do_blk = do_bh + (size_t)i0 * hd;
                /* P (rb, i1) = exp(scale Q K^T - lse), zero above the diagonal */
                gemm_f32(0, 1, rb, i1, D, scale, q_blk, hd, k_bg, kvd, 0.0f, p, T);
                for (int32_t i = i0; i < i1; i++) {
                    float *p_i = p + (size_t)(i - i0) * T;
                    vexp_shifted(p_i, p_i, (size_t)i + 1, lse_bh[i]);
                    for (int32_t c = i + 1; c < i1; c++)
                        p_i[c] = 0.0f;
                }
                /* dP (rb, i1) = dO V^T; dV[0:i1] += P^T dO */
                gemm_f32(0, 1, rb, i1, D, 1.0f, do_blk, hd, v_bg, kvd, 0.0f, ds, T);
                gemm_f32(1, 0, i1, D, rb, 1.0f, p, T, do_blk, hd, 1.0f, dv_bg, kvd);
                /* dS = P * (dP - rowsum(dO * O)): the row sum equals sum_j P dP */
                for (int32_t i = i0; i < i1; i++) {
                    const float *o_i = o_bh + (size_t)i * hd, *do_i = do_bh + (size_t)i * hd;
                    float dot = 0.0f;
                    for (int32_t d = 0; d < D; d++)
                        dot += do_i[d] * o_i[d];
                    float *ds_i = ds + (size_t)(i - i0) * T;
                    const float *p_i = p + (size_t)(i - i0) * T;
                    for (int32_t c = 0; c < i1; c++)
                        ds_i[c] = p_i[c] * (ds_i[c] - dot);
                }
                /* S = scale Q K^T: dQ[i0:i1] = scale dS K[0:i1]; dK[0:i1] += scale dS^T Q */
                gemm_f32(0, 0, rb, D, i1, scale, ds, T, k_bg, kvd, 0.0f, dq_bh + (size_t)i0 * hd,
                         hd);
                gemm_f32(1, 0, i1, D, rb, scale, ds, T, q_blk, hd, 1.0f, dk_bg, kvd);
            }
        }
    }
    free(p);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v,
                        int32_t B, int32_t T, int32_t H, int32_t KV, int32_t D)
{
    struct attention_job job = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .out_in = out,
                                .lse_in = lse, .q = q, .k = k, .v = v, .T = T, .H = H,
                                .KV = KV, .D = D};
    parallel_for((size_t)B * KV, 1, attention_backward_units, &job);
}

/* ---- SwiGLU ---------------------------------------------------------------------------- */

struct swiglu_job {
    float *out, *dgate, *dup;
    const float *dout, *gate, *up;
};

/* Entries worth a thread: one exp each. */
enum { SWIGLU_PER_THREAD = 4096 };

static void swiglu_forward_range(void *ctx, size_t begin, size_t end)
{
    const struct swiglu_job *job = ctx;
    const float *gate = job->gate, *up = job->up;
    float *out = job->out;
    /* a group's sigmoids first, so that out may be gate (decode.c works in place) */
    for (size_t i = begin; i < end; i += 16) {
        size_t g = end - i < 16 ? end - i : 16;
        float s[16];
        vsigmoid(s, gate + i, g);
        for (size_t k = 0; k < g; k++)
            out[i + k] = gate[i + k] * s[k] * up[i + k];
    }
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t len)
{
    struct swiglu_job job = {.out = out, .gate = gate, .up = up};
    parallel_for(len, SWIGLU_PER_THREAD, swiglu_forward_range, &job);
}

static void swiglu_backward_range(void *ctx, size_t begin, size_t end)
{
    const struct swiglu_job *job = ctx;
    const float *dout = job->dout, *gate = job->gate, *up = job->up;
    float *dgate = job->dgate, *dup = job->dup;
    /* d silu(g)/dg = s (1 + g (1 - s)) with s = sigmoid(g), held in dgate first */
    vsigmoid(dgate + begin, gate + begin, end - begin);
    for (size_t i = begin; i < end; i++) {
        float g = gate[i], s = dgate[i];
        dup[i] = dout[i] * g * s;
        dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t len)
{
    struct swiglu_job job = {.dgate = dgate, .dup = dup, .dout = dout, .gate = gate, .up = up};
    parallel_for(len, SWIGLU_PER_THREAD, swiglu_backward_range, &job);
}

/* ---- embedding ------------------------------------------------------------------------- */

void embedding_forward(float *out, const int32_t *tokens, const float *embed, int32_t n,
                       int32_t C)
{
    for (int32_t i = 0; i < n; i++)
        memcpy(out + (size_t)i * C, embed + (size_t)tokens[i] * C, (size_t)C * sizeof(float));
}

void embedding_backward(float *dembed, const float *dout, const int32_t *tokens, int32_t n,
                        int32_t C)
{
    for (int32_t i = 0; i < n; i++) {
        float *de = dembed + (size_t)tokens[i] * C;
        const float *d_i = dout + (size_t)i * C;
        for (int32_t j = 0; j < C; j++)
            de[j] += d_i[j];
    }
}

/* ---- cross-entropy --------------------------------------------------------------------- */

struct ce_job {
    float *lse, *dlogits;
    const float *lse_in; /* backward: the forward's lse */
    double *row_loss; /* (n): each counted row's -log p(target) in double, summed in order */
    const float *logits;
    const int32_t *targets;
    const float *row_weight; /* backward: (n) or NULL */
    int32_t V;
    float scale;
};

static void crossentropy_forward_rows(void *ctx, size_t begin, size_t end)
{
    const struct ce_job *job = ctx;
    int32_t V = job->V;
    for (size_t i = begin; i < end; i++) {
        const float *l_i = job->logits + i * (size_t)V; /* (V) */
        float mx = l_i[0];
        for (int32_t j = 1; j < V; j++)
            mx = l_i[j] > mx ? l_i[j] : mx;
        double lse_i = mx + log(vexp_sum_shifted(l_i, (size_t)V, mx));
        job->lse[i] = (float)lse_i;
        if (job->targets && job->targets[i] >= 0)
            job->row_loss[i] = lse_i - l_i[job->targets[i]];
    }
}

double crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int32_t n,
                            int32_t V, int32_t *n_valid)
{
    double *row_loss = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    struct ce_job job = {.lse = lse, .row_loss = row_loss, .logits = logits, .targets = targets,
                         .V = V};
    parallel_for((size_t)n, 1, crossentropy_forward_rows, &job);
    double total = 0.0;
    int32_t count = 0;
    for (int32_t i = 0; i < n; i++)
        if (targets && targets[i] >= 0) {
            total += row_loss[i];
            count++;
        }
    free(row_loss);
    *n_valid = count;
    return total;
}

static void crossentropy_backward_rows(void *ctx, size_t begin, size_t end)
{
    const struct ce_job *job = ctx;
    int32_t V = job->V;
    float scale = job->scale;
    for (size_t i = begin; i < end; i++) {
        float *d_i = job->dlogits + i * (size_t)V;
        const float *l_i = job->logits + i * (size_t)V;
        if (!job->targets || job->targets[i] < 0) {
            memset(d_i, 0, (size_t)V * sizeof(float));
            continue;
        }
        float scale_i = job->row_weight ? scale * job->row_weight[i] : scale;
        vexp_shifted(d_i, l_i, (size_t)V, job->lse_in[i]);
        for (int32_t j = 0; j < V; j++)
            d_i[j] *= scale_i;
        d_i[job->targets[i]] -= scale_i;
    }
}

void crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                           const int32_t *targets, const float *row_weight, int32_t n, int32_t V,
                           float scale)
{
    struct ce_job job = {.lse_in = lse, .dlogits = dlogits, .logits = logits,
                         .targets = targets, .row_weight = row_weight, .V = V, .scale = scale};
    parallel_for((size_t)n, 1, crossentropy_backward_rows, &job);
}

void add_bias(float *y, const float *bias, int32_t n, int32_t d)
{
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < d; j++)
            y[(size_t)i * d + j] += bias[j];
}
