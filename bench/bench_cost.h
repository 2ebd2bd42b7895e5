/*
 * bench_cost.h: what one training step of a method computes: the FLOPs per token it is
 * credited with and the list of its sgemm calls.
 *
 * FLOPs per token, with P = the weights used in matrix products (the seven projections of
 * every layer plus the head; the embedding lookup is not a product):
 *   forward            2 P
 *   backward dx        2 P          (every layer's input gradient is formed)
 *   backward dW        2 * (trainable weights the model forms a dense gradient for:
 *                      ALIAS_BASE tensors, e.g. the projections under `full`)
 *   sampled dW         2 * (masked entries of ALIAS_BASE weights, e.g. LoTA's: the model
 *                      forms their gradient alone, one multiply-add per entry and row; no
 *                      sgemm)
 *   adapter            6 * (trainable entries the plugin owns, e.g. LoRA's A and B:
 *                      2 forward, 4 backward per entry, exact for LoRA)
 *   attention          the causal blocks' products per token: 12 L H D times the mean
 *                      keys a query block meets (model_train_flops_per_token counts the
 *                      whole T x T square, 12 L T H D)
 * With every weight trainable this is 6 P + attention; `full`
 * on all-linear with a tied head forms no head gradient, so it is that minus 2 V C; LoRA
 * forms no base gradient at all, so it is 4 P + 6 (LoRA entries) + attention.
 */
#ifndef PEFT_BENCH_COST_H
#define PEFT_BENCH_COST_H

#include <stdint.h>

#include "bench_gemm.h"
#include "method.h"
#include "model.h"

struct step_cost {
    double matmul_weights;     /* P */
    double dense_grad_weights; /* weights with a dense dW */
    double sampled_entries;    /* masked weights whose dW entries are sampled */
    double adapter_entries;    /* trainable entries owned by the plugin */
    double attention;          /* the causal blocks' products, per token */
    double flops_per_token;    /* the sum above */
    double model_flops;        /* model_train_flops_per_token (every weight trained) */
    struct gemm_list gemms;    /* the step's sgemm calls */
};

/* Cost of one step of `mr` on `m` with a (B, T) batch. */
void step_cost_build(struct step_cost *c, struct model *m, struct method_run *mr, int32_t B,
                     int32_t T);
void step_cost_free(struct step_cost *c);

#endif
