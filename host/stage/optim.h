/*
 * optim.h: the host's optimizer over a method's registered tensors: AdamW (decoupled weight
 * decay, bias correction), global gradient-norm clipping, and a learning-rate schedule with
 * linear warmup then cosine, linear or constant decay.
 *
 * Masked tensors keep gradients and moments for their trainable entries only, so frozen
 * entries never change (not even through weight decay).
 */
#ifndef PEFT_OPTIM_H
#define PEFT_OPTIM_H

#include <stdint.h>

#include "methods/methods.h"

enum { SCHEDULE_COSINE, SCHEDULE_LINEAR, SCHEDULE_CONSTANT };

struct optim_params {
    double lr, weight_decay, beta1, beta2, eps, grad_clip, min_lr_ratio;
    int64_t warmup_steps, total_steps;
    int32_t schedule;
};

/* Learning rate multiplier at step (0-based) in [0, 1]. */
double optim_lr_factor(const struct optim_params *p, int64_t step);
/* Global L2 norm of all trainable gradients. */
double optim_grad_norm(struct method_run *mr);
/* One AdamW step (t = 1-based step of the stage; a tensor's bias correction counts t minus its
 * step0, the steps before its state restarted). Clips first when
 * grad_clip > 0. Returns the gradient norm before clipping. */
double optim_step(struct method_run *mr, const struct optim_params *p, int64_t t);

#endif
