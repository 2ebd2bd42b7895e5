/* half.c: frozen matrices (site weights, the embedding, the head) held in 16 bits (bfloat16
 * or fp16, as the checkpoint stores them) instead of fp32: widening on demand, and the
 * products of such a matrix, which widen it a block of rows at a time into a small buffer, so
 * the fp32 copy of a frozen model never exists whole. Widening is exact (every 16-bit value
 * is an fp32 value), so the products equal those of the widened weight up to the order of the
 * sums. The bf16 model's products (precision.c) are these too: they also round the activation
 * operand, and the rows of a weight held in fp32 (a trained one), to bfloat16 values; a
 * product of bfloat16 values is exact in fp32, so this is bf16 x bf16 -> fp32. */
#include <stdlib.h>
#include <string.h>

#include "half.h"

/* Entries of W widened per block (8 MiB of fp32): a whole site weight of the small models
 * (SmolLM2's largest, 1536 x 576, is 0.9 M), so that its product is one call split over
 * every thread, while a large matrix (a 49 k-word head, Llama-3.2-1B's MLP) goes in blocks
 * of rows and its fp32 copy never exists whole. */
enum { HALF_BLOCK_FLOATS = 2 << 20 };

/* Rows per block of a matrix of d_in columns and d_out rows. */
static int32_t block_rows(int32_t d_in, int32_t d_out)
{
    int32_t rows = HALF_BLOCK_FLOATS / (d_in > 0 ? d_in : 1);
    if (rows < 1) rows = 1;
    return rows < d_out ? rows : d_out;
}

/* The block buffer and the bf16 model's rounded activations, reused across products (a
 * fresh one per product would be fresh pages to fault in every time); the host runs the
 * model from one thread. */
struct scratch {
    float *p;
    size_t cap;
};
static struct scratch block_buf, rounded_buf;

static float *scratch_get(struct scratch *s, size_t n)
{
    if (n > s->cap) {
        free(s->p);
        s->p = xmalloc(n * sizeof *s->p);
        s->cap = n;
    }
    return s->p;
}

struct widen_job {
    const uint16_t *h;
    int bf16;
    float *out;
};

static void widen_range(void *ctx, size_t begin, size_t end)
{
    const struct widen_job *j = ctx;
    const uint16_t *h = j->h + begin;
    float *out = j->out + begin;
    size_t n = end - begin;
    if (j->bf16) {
        /* bfloat16 is the top half of an fp32: a shift; in fixed groups of 16, which the
         * compiler turns into vector instructions at -O2 */
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
            uint32_t u[16];
            for (int k = 0; k < 16; k++) u[k] = (uint32_t)h[i + (size_t)k] << 16;
            memcpy(out + i, u, sizeof u);
        }
        for (; i < n; i++) {
            uint32_t u = (uint32_t)h[i] << 16;
            memcpy(out + i, &u, sizeof u);
        }
    } else
        for (size_t i = 0; i < n; i++)
            out[i] = f16_to_f32(h[i]);
}

/* n values of tensor t's 16-bit copy from entry `from` into out, on every thread. */
static void widen(const struct model *m, int32_t t, size_t from, size_t n, float *out)
{
    struct widen_job j = {m->half[t] + from, m->half_bf16[t], out};
    parallel_for(n, 1 << 16, widen_range, &j);
}

void model_tensor_set_half(struct model *m, int32_t t, uint16_t *v, int bf16)
{
    free(m->half[t]);
    m->half[t] = v;
    m->half_bf16[t] = (uint8_t)(bf16 != 0);
    model_tensor_release(m, t);
}

int model_tensor_in_half(const struct model *m, int32_t t)
{
    return m->half && m->half[t] && !m->fp32_ok[t];
}

float *model_tensor_data(const struct model *m, int32_t t)
{
    float *p = m->params + m->tensors[t].offset;
    if (model_tensor_in_half(m, t)) {
        widen(m, t, 0, m->tensors[t].numel, p);
        m->fp32_ok[t] = 1; /* the fp32 range is a cache of the 16-bit values: const model */
    }
    return p;
}

void model_tensor_read(const struct model *m, int32_t t, float *out)
{
    if (model_tensor_in_half(m, t))
        widen(m, t, 0, m->tensors[t].numel, out);
    else
        memcpy(out, m->params + m->tensors[t].offset, m->tensors[t].numel * sizeof *out);
}

void model_tensor_read_half(const struct model *m, int32_t t, float *out)
{
    widen(m, t, 0, m->tensors[t].numel, out);
}

void model_tensor_release(struct model *m, int32_t t)
{
    if (!m->half || !m->half[t])
        return;
    m->fp32_ok[t] = 0;
    release_floats_lazy(m->params + m->tensors[t].offset, m->tensors[t].numel);
}

const float *model_weight_rows(const struct model *m, int32_t t, int64_t r0, int32_t rows,
                               int32_t d_in, float *out)
{
    if (!model_tensor_in_half(m, t))
        return m->params + m->tensors[t].offset + (size_t)r0 * (size_t)d_in;
    widen(m, t, (size_t)r0 * (size_t)d_in, (size_t)rows * (size_t)d_in, out);
    return out;
}

/* Rows r0..r0+rows of W as a product reads them (rows, d_in): model_weight_rows, and in the
 * bf16 model the rows of an fp32 (trained) weight rounded to bfloat16 into out. */
static const float *product_rows(const struct model *m, int32_t t, int32_t r0, int32_t rows,
                                 int32_t d_in, float *out)
{
    const float *w = model_weight_rows(m, t, r0, rows, d_in, out);
    if (m->precision == MODEL_BF16 && w != out) {
        round_floats_bf16(w, out, (size_t)rows * (size_t)d_in);
        w = out;
    }
    return w;
}

/* The activation operand (n, d) of a product: itself, or in the bf16 model its bfloat16
 * values in a scratch buffer. */
static const float *product_operand(const struct model *m, const float *a, int32_t n, int32_t d)
{
    if (m->precision != MODEL_BF16)
        return a;
    size_t len = (size_t)n * (size_t)d;
    float *r = scratch_get(&rounded_buf, len);
    round_floats_bf16(a, r, len);
    return r;
}

void half_matmul_forward(const struct model *m, int32_t t, float *y, const float *x, int32_t n,
                         int32_t d_in, int32_t d_out)
{
    int32_t R = block_rows(d_in, d_out);
    float *buf = scratch_get(&block_buf, (size_t)R * (size_t)d_in);
    x = product_operand(m, x, n, d_in);
    for (int32_t r0 = 0; r0 < d_out; r0 += R) {
        int32_t rb = d_out - r0 < R ? d_out - r0 : R;
        const float *w = product_rows(m, t, r0, rb, d_in, buf); /* (rb, d_in) */
        /* y[:, r0:r0+rb] (n, rb) = x (n, d_in) . w^T */
        gemm_f32(0, 1, n, rb, d_in, 1.0f, x, d_in, w, d_in,
                    0.0f, y + r0, d_out);
    }
}

void half_matmul_backward_dx(const struct model *m, int32_t t, float *dx, const float *dy,
                             int32_t n, int32_t d_in, int32_t d_out, float dx_beta)
{
    if (!dx)
        return;
    int32_t R = block_rows(d_in, d_out);
    float *buf = scratch_get(&block_buf, (size_t)R * (size_t)d_in);
    dy = product_operand(m, dy, n, d_out);
    for (int32_t r0 = 0; r0 < d_out; r0 += R) {
        int32_t rb = d_out - r0 < R ? d_out - r0 : R;
        const float *w = product_rows(m, t, r0, rb, d_in, buf); /* (rb, d_in) */
        /* dx (n, d_in) += dy[:, r0:r0+rb] (n, rb) . w (rb, d_in); the first block scales */
        gemm_f32(0, 0, n, d_in, rb, 1.0f, dy + r0, d_out,
                    w, d_in, r0 == 0 ? dx_beta : 1.0f, dx, d_in);
    }
}
