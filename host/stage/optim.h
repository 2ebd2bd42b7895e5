/*
 * optim.h: the host's optimizer over a method's registered tensors: AdamW (decoupled weight
 * decay, bias correction), RMSprop or SGD (as torch.optim's: weight decay added to the
 * gradient, optional momentum), gradient-norm clipping over all tensors or per tensor, and a
 * learning-rate schedule with linear warmup then cosine, linear or constant decay.
 *
 * Masked tensors keep gradients and moments for their trainable entries only, so frozen
 * entries never change (not even through weight decay).
 */
#ifndef PEFT_OPTIM_H
#define PEFT_OPTIM_H

#include <stdint.h>

#include "methods/methods.h"

enum { SCHEDULE_COSINE, SCHEDULE_LINEAR, SCHEDULE_CONSTANT };
enum { OPTIM_ADAMW, OPTIM_RMSPROP, OPTIM_SGD };

struct optim_params {
    double lr, weight_decay, beta1, beta2, eps, grad_clip, min_lr_ratio;
    double alpha;    /* RMSprop: smoothing of the squared gradient */
    double momentum; /* RMSprop and SGD: momentum (0: none) */
    int64_t warmup_steps, total_steps;
    int32_t schedule;
    int32_t kind;              /* OPTIM_ADAMW (0, the default), OPTIM_RMSPROP, OPTIM_SGD */
    int32_t clip_per_tensor;   /* grad_clip bounds each tensor's norm instead of the global one */
};

/* Learning rate multiplier at step (0-based) in [0, 1]. */
double optim_lr_factor(const struct optim_params *p, int64_t step);
/* Global L2 norm of all trainable gradients. */
double optim_grad_norm(struct method_run *mr);
/* One optimizer step (t = 1-based step of the stage; AdamW's bias correction counts t minus a
 * tensor's step0, the steps before its state restarted). Clips first when grad_clip > 0.
 * Returns the global gradient norm before clipping. State per tensor: adam_m (AdamW's first
 * moment; the momentum buffer of RMSprop and SGD) and adam_v (AdamW's second moment;
 * RMSprop's square average). */
double optim_step(struct method_run *mr, const struct optim_params *p, int64_t t);

/* One RMSprop or SGD step (p->kind) on one tensor's n trainable entries: w[at[j]] (w[j] when
 * at is NULL) updated in place from scale * g[j], scale being the clipping's; state m and v
 * (n each); lr already scheduled; t counts this tensor's steps (1 on its first); decay 0 for
 * tensors marked PEFT_TENSOR_NO_DECAY. */
void optim_update(const struct optim_params *p, float *w, const uint64_t *at, const float *g,
                  float scale, float *m, float *v, uint64_t n, double lr, double decay, double t);

#endif
