/*
 * ops.h: the kernels of the llama decoder, in forward/backward pairs with the same stem.
 * Outputs first, then inputs and weights, then dimensions. Backward kernels accumulate (+=)
 * into weight gradients; how they treat input gradients is stated per kernel.
 *
 * Dimension letters as in model.h: B batch, T sequence, C channels, H heads, KV kv heads,
 * D head_dim, F d_ff, V vocab, n = B*T rows.
 */
#ifndef PEFT_OPS_H
#define PEFT_OPS_H

#include <stddef.h>
#include <stdint.h>

/* y (n, d_out) = x (n, d_in) W^T, W (d_out, d_in). */
void matmul_forward(float *y, const float *x, const float *w, int32_t n, int32_t d_in,
                    int32_t d_out);
/* dx (n, d_in) = dx_beta * dx + dy W; dw (d_out, d_in) += dy^T x. dx or dw may be NULL. */
void matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                     int32_t n, int32_t d_in, int32_t d_out, float dx_beta);
/* The weight gradient at chosen entries only (a sampled product): for k sorted flat indices
 * idx into W (d_out, d_in), with o_j = idx[j] / d_in and i_j = idx[j] % d_in,
 *   out[j] += sum over rows r of dy[r, o_j] x[r, i_j].
 * Cost O(n k) instead of O(n d_in d_out). scratch holds matmul_sampled_scratch(d_in, d_out)
 * floats. */
void matmul_backward_sampled(float *out, const uint64_t *idx, uint64_t k, const float *dy,
                             const float *x, int32_t n, int32_t d_in, int32_t d_out,
                             float *scratch);
size_t matmul_sampled_scratch(int32_t d_in, int32_t d_out);

/* y (n, c) = x * rsqrt(mean(x^2) + eps) * w; rstd (n) keeps the row factor for backward. */
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int32_t n,
                     int32_t c, float eps);
/* dx (n, c) += d/dx; dw (c) += d/dw (dw may be NULL). */
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int32_t n, int32_t c);

/* cos, sin (T, D/2): angle t * theta^(-2j/D). */
struct model_config;
void rope_table(float *cos_t, float *sin_t, int32_t T, int32_t D, const struct model_config *c);
/* In place on x (B*T, n_heads*D), HF rotate-half: element j pairs with j + D/2, position t
 * restarts at 0 for every sequence. */
void rope_forward(float *x, const float *cos_t, const float *sin_t, int32_t B, int32_t T,
                  int32_t n_heads, int32_t D);
/* In place on dx: the transposed rotation. */
void rope_backward(float *dx, const float *cos_t, const float *sin_t, int32_t B, int32_t T,
                   int32_t n_heads, int32_t D);

/* Rows per causal block: the products of a block of queries stop at the block's last key. */
enum { ATTENTION_CAUSAL_BLOCK = 64 };

/* Causal grouped-query attention with scale 1/sqrt(D), computed in tiles of
 * ATTENTION_CAUSAL_BLOCK queries (no (T, T) block is kept).
 * q (n, H*D), k and v (n, KV*D) -> out (n, H*D); lse (B, H, T) keeps each query's
 * log-sum-exp of its scaled scores, for the backward. */
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       int32_t B, int32_t T, int32_t H, int32_t KV, int32_t D);
/* From the forward's out and lse, the probabilities recomputed tile by tile.
 * dq (n, H*D), dk and dv (n, KV*D) are overwritten. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v,
                        int32_t B, int32_t T, int32_t H, int32_t KV, int32_t D);

/* out (len) = silu(gate) * up. */
/* y (n, d) += bias (d) on every row. */
void add_bias(float *y, const float *bias, int32_t n, int32_t d);

void swiglu_forward(float *out, const float *gate, const float *up, size_t len);
/* dgate, dup (len) are overwritten. */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t len);

/* out (n, C) = embed[tokens]. */
void embedding_forward(float *out, const int32_t *tokens, const float *embed, int32_t n,
                       int32_t C);
/* dembed (V, C) += dout scattered by tokens. */
void embedding_backward(float *dembed, const float *dout, const int32_t *tokens, int32_t n,
                        int32_t C);

/* Sum over rows with targets[i] >= 0 of -log softmax(logits)[target]; lse (n) keeps each
 * row's log-sum-exp; *n_valid counts the rows. targets may be NULL (no row counts). */
double crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int32_t n,
                            int32_t V, int32_t *n_valid);
/* dlogits (n, V) = scale * w_i * (softmax - onehot) for rows with a target, 0 elsewhere,
 * with w_i = row_weight[i] (row_weight NULL: 1); dlogits may be logits (in place). */
void crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                           const int32_t *targets, const float *row_weight, int32_t n, int32_t V,
                           float scale);

#endif
