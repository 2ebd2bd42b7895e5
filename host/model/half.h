/* half.h (inside host/model): the products of a site whose weight is held in 16 bits, widened
 * block by block (half.c). */
#ifndef PEFT_MODEL_HALF_H
#define PEFT_MODEL_HALF_H

#include "model.h"

/* Does a product through tensor t go block by block (half.c)? When it is held in 16 bits,
 * and every product of the bf16 model. */
static inline int block_products(const struct model *m, int32_t t)
{
    return m->precision == MODEL_BF16 || model_tensor_in_half(m, t);
}

/* y (n, d_out) = x (n, d_in) W^T, W = tensor t. */
void half_matmul_forward(const struct model *m, int32_t t, float *y, const float *x, int32_t n,
                         int32_t d_in, int32_t d_out);
/* dx (n, d_in) = dy (n, d_out) W + dx_beta dx. */
void half_matmul_backward_dx(const struct model *m, int32_t t, float *dx, const float *dy,
                             int32_t n, int32_t d_in, int32_t d_out, float dx_beta);

/* The embedding rows of tokens (n) into out (n, C), widened when the table is in 16 bits. */
void model_embed_tokens(const struct model *m, const int32_t *tokens, int32_t n, float *out);
/* logits (n, V) = h (n, C) . head^T, the head in fp32 or 16 bits. */
void model_head_logits(const struct model *m, const float *h, float *logits, int32_t n);

#endif
