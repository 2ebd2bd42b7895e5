/* ops.c: the kernels of the llama decoder (see ops.h). Matrix products go through
 * cblas_sgemm; the rest are plain loops over contiguous rows. */
#include "ops.h"
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- linear ---------------------------------------------------------------------------- */

void matmul_forward(float *y, const float *x, const float *w, int32_t n, int32_t d_in,
                    int32_t d_out)
{
    /* y (n, d_out) = x (n, d_in) . W^T (d_in, d_out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d_out, d_in, 1.0f, x, d_in, w,
                d_in, 0.0f, y, d_out);
}

void matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                     int32_t n, int32_t d_in, int32_t d_out, float dx_beta)
{
    if (dx) /* dx (n, d_in) = dy (n, d_out) . W (d_out, d_in) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d_in, d_out, 1.0f, dy,
                    d_out, w, d_in, dx_beta, dx, d_in);
    if (dw) /* dW (d_out, d_in) += dy^T (d_out, n) . x (n, d_in) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d_out, d_in, n, 1.0f, dy, d_out,
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

void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int32_t n,
                     int32_t c, float eps)
{
    for (int32_t i = 0; i < n; i++) {
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

void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int32_t n, int32_t c)
{
    /* y = w * x * r with r = (mean(x^2) + eps)^(-1/2), so dr/dx_j = -r^3 x_j / c and
     * dx = r * (w * dy) - x * r^3 / c * sum(w * dy * x). */
    for (int32_t i = 0; i < n; i++) {
        const float *x_i = x + (size_t)i * c;
        const float *dy_i = dy + (size_t)i * c;
        float *dx_i = dx + (size_t)i * c;
        float r = rstd[i];
        float dot = 0.0f;
        for (int32_t j = 0; j < c; j++)
            dot += w[j] * dy_i[j] * x_i[j];
        float k = dot * r * r * r / (float)c;
        for (int32_t j = 0; j < c; j++)
            dx_i[j] += r * w[j] * dy_i[j] - k * x_i[j];
        if (dw)
            for (int32_t j = 0; j < c; j++)
                dw[j] += dy_i[j] * x_i[j] * r;
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

/* One rotation for every head of every row; sign = +1 forward, -1 for the transpose. */
static void rope_apply(float *x, const float *cos_t, const float *sin_t, int32_t B, int32_t T,
                       int32_t n_heads, int32_t D, float sign)
{
    int32_t half = D / 2;
    for (int32_t b = 0; b < B; b++)
        for (int32_t t = 0; t < T; t++) {
            const float *c_t = cos_t + (size_t)t * half; /* (D/2) */
            const float *s_t = sin_t + (size_t)t * half; /* (D/2) */
            float *row = x + ((size_t)b * T + t) * (size_t)n_heads * D; /* (n_heads*D) */
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

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int32_t B, int32_t T, int32_t H, int32_t KV, int32_t D)
{
    int32_t hd = H * D, kvd = KV * D, group = H / KV;
    float scale = 1.0f / sqrtf((float)D);
    for (int32_t b = 0; b < B; b++)
        for (int32_t h = 0; h < H; h++) {
            size_t row0 = (size_t)b * T;
            const float *q_bh = q + row0 * hd + (size_t)h * D;              /* (T, D) ld hd */
            const float *k_bh = k + row0 * kvd + (size_t)(h / group) * D;   /* (T, D) ld kvd */
            const float *v_bh = v + row0 * kvd + (size_t)(h / group) * D;   /* (T, D) ld kvd */
            float *p = att + ((size_t)b * H + h) * (size_t)T * T;           /* (T, T) */
            float *o_bh = out + row0 * hd + (size_t)h * D;                  /* (T, D) ld hd */

            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, q_bh, hd,
                        k_bh, kvd, 0.0f, p, T);
            for (int32_t i = 0; i < T; i++) {
                float *p_i = p + (size_t)i * T;
                float mx = p_i[0];
                for (int32_t j = 1; j <= i; j++)
                    mx = p_i[j] > mx ? p_i[j] : mx;
                float sum = 0.0f;
                for (int32_t j = 0; j <= i; j++) {
                    p_i[j] = expf(p_i[j] - mx);
                    sum += p_i[j];
                }
                float inv = 1.0f / sum;
                for (int32_t j = 0; j <= i; j++)
                    p_i[j] *= inv;
                for (int32_t j = i + 1; j < T; j++)
                    p_i[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, p, T, v_bh,
                        kvd, 0.0f, o_bh, hd);
        }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *att, const float *q, const float *k, const float *v,
                        int32_t B, int32_t T, int32_t H, int32_t KV, int32_t D)
{
    int32_t hd = H * D, kvd = KV * D, group = H / KV;
    float scale = 1.0f / sqrtf((float)D);
    size_t n = (size_t)B * T;
    memset(dk, 0, n * kvd * sizeof(float));
    memset(dv, 0, n * kvd * sizeof(float));
    for (int32_t b = 0; b < B; b++)
        for (int32_t h = 0; h < H; h++) {
            size_t row0 = (size_t)b * T;
            size_t kv_off = row0 * kvd + (size_t)(h / group) * D;
            const float *q_bh = q + row0 * hd + (size_t)h * D;       /* (T, D) ld hd */
            const float *k_bh = k + kv_off;                          /* (T, D) ld kvd */
            const float *v_bh = v + kv_off;                          /* (T, D) ld kvd */
            const float *p = att + ((size_t)b * H + h) * (size_t)T * T; /* (T, T) */
            const float *do_bh = dout + row0 * hd + (size_t)h * D;   /* (T, D) ld hd */
            float *dq_bh = dq + row0 * hd + (size_t)h * D;
            float *dk_bh = dk + kv_off; /* shared by the group: accumulate */
            float *dv_bh = dv + kv_off;
            float *ds = scratch; /* (T, T): dP, then dS in place */

            /* dP = dO V^T; dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, do_bh, hd, v_bh,
                        kvd, 0.0f, ds, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, p, T, do_bh, hd,
                        1.0f, dv_bh, kvd);
            /* softmax backward: dS = P * (dP - sum_j P dP); zero above the diagonal */
            for (int32_t i = 0; i < T; i++) {
                const float *p_i = p + (size_t)i * T;
                float *ds_i = ds + (size_t)i * T;
                float dot = 0.0f;
                for (int32_t j = 0; j <= i; j++)
                    dot += p_i[j] * ds_i[j];
                for (int32_t j = 0; j <= i; j++)
                    ds_i[j] = p_i[j] * (ds_i[j] - dot);
                for (int32_t j = i + 1; j < T; j++)
                    ds_i[j] = 0.0f;
            }
            /* S = scale Q K^T: dQ = scale dS K; dK += scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, scale, ds, T, k_bh,
                        kvd, 0.0f, dq_bh, hd);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, scale, ds, T, q_bh, hd,
                        1.0f, dk_bh, kvd);
        }
}

/* ---- SwiGLU ---------------------------------------------------------------------------- */

void swiglu_forward(float *out, const float *gate, const float *up, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + expf(-g));
        out[i] = g * s * up[i];
    }
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t len)
{
    /* d silu(g)/dg = s (1 + g (1 - s)) with s = sigmoid(g) */
    for (size_t i = 0; i < len; i++) {
        float g = gate[i];
        float s = 1.0f / (1.0f + expf(-g));
        float silu = g * s;
        dup[i] = dout[i] * silu;
        dgate[i] = dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
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

double crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int32_t n,
                            int32_t V, int32_t *n_valid)
{
    double total = 0.0;
    int32_t count = 0;
    for (int32_t i = 0; i < n; i++) {
        const float *l_i = logits + (size_t)i * V; /* (V) */
        float mx = l_i[0];
        for (int32_t j = 1; j < V; j++)
            mx = l_i[j] > mx ? l_i[j] : mx;
        double sum = 0.0;
        for (int32_t j = 0; j < V; j++)
            sum += expf(l_i[j] - mx);
        double lse_i = mx + log(sum);
        lse[i] = (float)lse_i;
        if (targets && targets[i] >= 0) {
            total += lse_i - l_i[targets[i]];
            count++;
        }
    }
    *n_valid = count;
    return total;
}

void crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                           const int32_t *targets, int32_t n, int32_t V, float scale)
{
    for (int32_t i = 0; i < n; i++) {
        float *d_i = dlogits + (size_t)i * V;
        const float *l_i = logits + (size_t)i * V;
        if (!targets || targets[i] < 0) {
            memset(d_i, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int32_t j = 0; j < V; j++)
            d_i[j] = scale * expf(l_i[j] - lse[i]);
        d_i[targets[i]] -= scale;
    }
}

void add_bias(float *y, const float *bias, int32_t n, int32_t d)
{
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < d; j++)
            y[(size_t)i * d + j] += bias[j];
}
