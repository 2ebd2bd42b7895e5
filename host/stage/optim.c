/* optim.c: AdamW with clipping and schedules over host-registered tensors. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>

double optim_lr_factor(const struct optim_params *p, int64_t step) {
    if (p->warmup_steps > 0 && step < p->warmup_steps)
        return (double)(step + 1) / (double)(p->warmup_steps + 1);
    if (p->schedule == SCHEDULE_CONSTANT) return 1.0;
    int64_t span = p->total_steps - p->warmup_steps;
    double progress = span > 0 ? (double)(step - p->warmup_steps) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    double floor = p->min_lr_ratio;
    if (p->schedule == SCHEDULE_LINEAR) return floor + (1.0 - floor) * (1.0 - progress);
    return floor + (1.0 - floor) * 0.5 * (1.0 + cos(3.141592653589793 * progress));
}

/* Sum of squares of one tensor's trainable gradient entries (0 without a gradient). */
static double grad_sq(const struct mtensor *t) {
    double sum = 0.0;
    for (uint64_t j = 0; t->grad && j < t->n_trainable; j++) sum += (double)t->grad[j] * t->grad[j];
    return sum;
}

double optim_grad_norm(struct method_run *mr) {
    double sum = 0.0;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) sum += grad_sq(method_run_tensor(mr, i));
    return sqrt(sum);
}

/* One update per tensor; tensors are independent, so they are split across the host's
 * threads (each tensor whole, on one thread, as on a single one). */
struct optim_job {
    struct method_run *mr;
    const struct optim_params *p;
    int64_t t;
    double factor; /* the schedule's learning-rate factor */
    float clip;    /* the gradient's scale after clipping */
    const double *per_tensor_clip; /* NULL, or each tensor's own scale (clip_scope = tensor) */
};

static void update_tensors(void *ctx, size_t begin, size_t end)
{
    const struct optim_job *job = ctx;
    const struct optim_params *p = job->p;
    float b1 = (float)p->beta1, b2 = (float)p->beta2, c = job->clip;
    for (size_t i = begin; i < end; i++) {
        struct mtensor *tn = method_run_tensor(job->mr, (int32_t)i);
        if (!tn->grad) continue;
        uint64_t n = tn->n_trainable;
        /* Bias correction counts the steps since the tensor's state (re)started. */
        double tt = (double)(job->t - tn->step0);
        double bc1 = 1.0 - pow(p->beta1, tt), bc2 = 1.0 - pow(p->beta2, tt);
        if (!tn->adam_m) {
            tn->adam_m = xalloc_floats(n);
            tn->adam_v = xalloc_floats(n);
        }
        double lr = (tn->desc.lr > 0 ? tn->desc.lr : p->lr) * job->factor;
        float decay = (tn->desc.flags & PEFT_TENSOR_NO_DECAY) ? 0.0f : (float)(lr * p->weight_decay);
        float step_size = (float)(lr / bc1), inv_bc2 = (float)(1.0 / bc2), eps = (float)p->eps;
        float *m = tn->adam_m, *v = tn->adam_v, *g = tn->grad;
        if (job->per_tensor_clip) c = (float)job->per_tensor_clip[i];
        if (p->kind != OPTIM_ADAMW) {
            optim_update(p, tn->data, tn->mask, g, c, m, v, n, lr,
                         tn->desc.flags & PEFT_TENSOR_NO_DECAY ? 0.0 : p->weight_decay, tt);
            continue;
        }
        for (uint64_t j = 0; j < n; j++) {
            uint64_t at = tn->mask ? tn->mask[j] : j; /* compact state for masked tensors */
            float gj = g[j] * c;
            m[j] = b1 * m[j] + (1.0f - b1) * gj;
            v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
            float w = tn->data[at];
            w -= decay * w;
            w -= step_size * m[j] / (sqrtf(v[j] * inv_bc2) + eps);
            tn->data[at] = w;
        }
    }
}

void optim_update(const struct optim_params *p, float *w, const uint64_t *at, const float *g,
                  float scale, float *m, float *v, uint64_t n, double lr, double decay, double t)
{
    float lr_f = (float)lr, wd = (float)decay, mom = (float)p->momentum;
    float alpha = (float)p->alpha, eps = (float)p->eps;
    for (uint64_t j = 0; j < n; j++) {
        float *wj = w + (at ? at[j] : j); /* compact state for masked tensors */
        float gj = g[j] * scale + wd * *wj;
        if (p->kind == OPTIM_RMSPROP) {
            /* torch.optim.RMSprop (not centered): g += wd w; v = alpha v + (1 - alpha) g^2;
             * b = momentum b + g / (sqrt(v) + eps), w -= lr b (no momentum: b = g / ...) */
            v[j] = alpha * v[j] + (1.0f - alpha) * gj * gj;
            gj = gj / (sqrtf(v[j]) + eps);
            if (mom > 0) gj = m[j] = mom * m[j] + gj;
        } else if (mom > 0) { /* torch.optim.SGD: b = momentum b + g, b = g at first */
            gj = m[j] = t <= 1.0 ? gj : mom * m[j] + gj;
        }
        *wj -= lr_f * gj;
    }
}

double optim_step(struct method_run *mr, const struct optim_params *p, int64_t t) {
    double norm = optim_grad_norm(mr);
    double clip = (p->grad_clip > 0 && norm > p->grad_clip) ? p->grad_clip / (norm + 1e-6) : 1.0;
    struct optim_job job = {.mr = mr, .p = p, .t = t, .factor = optim_lr_factor(p, t - 1),
                            .clip = (float)clip};
    int32_t count = method_run_tensor_count(mr);
    double *scales = NULL;
    if (p->clip_per_tensor && p->grad_clip > 0) { /* each tensor's norm bounded on its own */
        scales = xmalloc((size_t)(count > 0 ? count : 1) * sizeof *scales);
        for (int32_t i = 0; i < count; i++) {
            double tn_norm = sqrt(grad_sq(method_run_tensor(mr, i)));
            scales[i] = tn_norm > p->grad_clip ? p->grad_clip / (tn_norm + 1e-6) : 1.0;
        }
        job.per_tensor_clip = scales;
    }
    parallel_for((size_t)count, 1, update_tensors, &job);
    free(scales);
    return norm;
}
