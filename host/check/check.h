/*
 * check.h: the face of host/check, `peft check`: a method plugin checked through the ABI on a
 * small random model, as its author would want before anyone trains with it.
 *
 * For every method of the plugin, in two runs (the schema's defaults on a model with an
 * untied head; every bool key true, every "*dropout" key 0.25 and lora_alpha = r on a tied
 * one), and again for every other value of each CHOICE key that the method accepts alone:
 *   1. a fresh instance leaves the logits bit-identical to the bare model;
 *   2. after every trainable tensor is moved to small random values, the gradient of every
 *      trainable entry (up to 2000 sampled per tensor) against fourth-order central
 *      differences of the loss, in a training pass over a batch that mixes two tasks;
 *   3. dL/d(embed_tokens) against central differences: the input gradient dx of every site
 *      reaches the embedding, so this checks the plugin's dx; and in that training pass the
 *      plugin left every site's x and dy as they were (it writes y, dx and its gradients);
 *   4. negate turns the method's change at every site into its negative (its delta_weight,
 *      or for a method without one, what its site hook adds);
 *   5. save, then load into a fresh instance on a fresh copy of the base: every tensor and
 *      the logits bit-identical;
 *   6. merge: the merged bare model's logits equal the hooked ones (NMSE < 1e-10); a method
 *      that refuses delta_weight must not claim "mergeable", and its refused merge changes
 *      nothing.
 * One line per check ("ok" or "FAIL", what was measured, the worst tensor named), then a
 * line "N passed, N failed".
 *
 * In bf16 (MODEL_BF16) the model is the bf16 model (model_set_bf16): every check runs on it,
 * but 2 and 3 check the derivatives with the products' operands unrounded, on the same
 * bfloat16 weights (rounding is flat almost everywhere: central differences of the rounded
 * loss say nothing), and 6 bounds the NMSE by 1e-3, since the merged weight W + delta is
 * itself rounded to bfloat16 by the products while the hooked path adds delta in fp32.
 */
#ifndef PEFT_CHECK_H
#define PEFT_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data/data.h"
#include "model/model.h"

struct plugin_registry;

/* Check every method of the plugin `what` (a method id or a path to its .so, found through
 * reg) and print the lines on out. Returns the number of failed checks, or -1 with one line
 * (err_msg) when the plugin cannot be loaded. */
int plugin_check(struct plugin_registry *reg, const char *what, int32_t precision, FILE *out);

/* ---- the pieces, also for the methods' own tests (check_model.c) ------------------------- */

/* A model small enough for finite differences over every adapter entry: 2 layers, C 16, 2
 * heads of 8 over 1 kv head (GQA), F 24, V 29, max_seq 16; random weights of std init_std,
 * norm weights in [0.7, 1.3] (so that their gradients are not special). -1 with err_msg. */
int check_tiny_model(struct model *m, int tied, uint64_t seed, float init_std);
/* A second model with m's config, parameters, 16-bit copies and precision. -1 with err_msg. */
int check_model_copy(struct model *dst, const struct model *src);
/* B examples of T random tokens, example i of task i % 2, targets from position 1 on. */
void check_mixed_batch(struct batch *b, int32_t B, int32_t T, int32_t vocab, uint64_t seed);
void check_batch_free(struct batch *b);
/* Mean cross-entropy over the rows with a target, in double from the last forward's logits
 * (the fp32 loss the model returns rounds away what finite differences need). */
double check_loss_from_logits(const struct model *m, const struct model_acts *a,
                              const struct batch *b);
/* Normalised mean squared error of got against want (n). */
double check_nmse(const float *got, const float *want, size_t n);

#endif
