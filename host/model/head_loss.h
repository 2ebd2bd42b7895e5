/* head_loss.h (inside host/model): the language-model head, the cross-entropy and its
 * gradient in one pass over chunks of the rows that have a target (head_loss.c), so that a
 * training step never holds the whole (rows x vocab) logits. */
#ifndef PEFT_MODEL_HEAD_LOSS_H
#define PEFT_MODEL_HEAD_LOSS_H

#include "model.h"

/* The buffers of one call, for up to `chunk` target rows at a time. */
struct head_loss_scratch {
    int32_t chunk;   /* rows per chunk */
    float *logits;   /* (chunk, V): logits, then their gradient in place */
    float *hidden;   /* (chunk, C): the chunk's rows of h, gathered */
    float *d_hidden; /* (chunk, C) */
    float *lse;      /* (chunk) */
    int32_t *targets; /* (chunk) */
    int32_t *rows;   /* (n): the indices of the rows with a target */
};

/* With head the head's tensor (the embedding when tied), over the rows i of h (n, C) with
 * targets[i] >= 0, in row order:
 *   loss_i = lse_i - logits_i[targets[i]],  logits_i = h_i head^T,
 *   d_logits_i = scale (softmax(logits_i) - onehot(targets[i])),
 * d_h (n, C) = d_logits head (zero on rows without a target), d_head (V, C) += d_logits^T h
 * when d_head is not NULL; lse (n) for the target rows. Returns the sum of the loss_i (in
 * double, chunk by chunk in row order) and sets *n_valid. scale must be known before
 * (1 / n_valid times the caller's loss scale), so the caller counts the rows first. */
double head_loss_fused(const struct model *m, int32_t head, const float *h,
                       const int32_t *targets, int32_t n, float scale, float *d_h,
                       float *d_head, float *lse, const struct head_loss_scratch *s,
                       int32_t *n_valid);

#endif
