/* head_loss.c: the head, the cross-entropy and its gradient fused over row chunks (see
 * head_loss.h). Rows without a target (prompts, padding) get no logits at all: with
 * answer-only losses that skips most of the head's work. */
#include "head_loss.h"
#include "half.h"
#include "ops.h"

#include <string.h>

double head_loss_fused(const struct model *m, int32_t head, const float *h,
                       const int32_t *targets, int32_t n, float scale, float *d_h,
                       float *d_head, float *lse, const struct head_loss_scratch *s,
                       int32_t *n_valid)
{
    int32_t C = m->cfg.d_model, V = m->cfg.vocab;
    int32_t count = 0;
    for (int32_t i = 0; i < n; i++)
        if (targets[i] >= 0)
            s->rows[count++] = i;
    *n_valid = count;
    memset(d_h, 0, (size_t)n * C * sizeof *d_h);
    double total = 0.0;
    /* chunks of even size (512 rows in chunks of at most 170: 4 x 128, not 3 x 170 + 2) */
    int32_t n_chunks = count > 0 ? (count + s->chunk - 1) / s->chunk : 0;
    int32_t per = n_chunks > 0 ? (count + n_chunks - 1) / n_chunks : 0;
    for (int32_t r0 = 0; r0 < count; r0 += per) {
        int32_t rb = count - r0 < per ? count - r0 : per;
        const int32_t *rows = s->rows + r0;
        for (int32_t r = 0; r < rb; r++)
            memcpy(s->hidden + (size_t)r * C, h + (size_t)rows[r] * C, (size_t)C * sizeof *h);
        for (int32_t r = 0; r < rb; r++)
            s->targets[r] = targets[rows[r]];
        /* logits (rb, V) = hidden (rb, C) head^T; their loss; their gradient in place */
        model_head_logits(m, s->hidden, s->logits, rb);
        int32_t valid;
        total += crossentropy_forward(s->lse, s->logits, s->targets, rb, V, &valid);
        crossentropy_backward(s->logits, s->logits, s->lse, s->targets, NULL, rb, V, scale);
        /* d_hidden (rb, C) = d_logits head; d_head (V, C) += d_logits^T hidden */
        if (block_products(m, head)) { /* dW (the bf16 model's) in fp32 */
            half_matmul_backward_dx(m, head, s->d_hidden, s->logits, rb, C, V, 0.0f);
            matmul_backward(NULL, d_head, s->logits, s->hidden, NULL, rb, C, V, 0.0f);
        } else
            matmul_backward(s->d_hidden, d_head, s->logits, s->hidden, m->w.lm_head, rb, C, V,
                            0.0f);
        for (int32_t r = 0; r < rb; r++) {
            memcpy(d_h + (size_t)rows[r] * C, s->d_hidden + (size_t)r * C, (size_t)C * sizeof *d_h);
            lse[rows[r]] = s->lse[r];
        }
    }
    return total;
}
