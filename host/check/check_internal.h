/* check_internal.h (inside host/check): what the check files share: the checker that counts
 * and prints verdicts, and one run (a model, a batch, a method instance). */
#ifndef PEFT_CHECK_INTERNAL_H
#define PEFT_CHECK_INTERNAL_H

#include "check.h"
#include "core/core.h"
#include "methods/methods.h"

enum { B = 3, T = 6 }; /* the batch: B examples of T tokens, of two tasks */

struct checker {
    FILE *out;
    const char *label; /* "lora defaults", "loratrf variant filter=f2", ... */
    int passed, failed;
    int32_t precision; /* MODEL_FP32 or MODEL_BF16: the model every run is made on */
};

/* One line "ok   LABEL: ..." or "FAIL LABEL: ...", counted. */
void verdict(struct checker *ck, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct run {
    struct model m;
    float *base; /* (n_params) the model before any change */
    struct model_acts *a;
    struct batch b;
    struct task_table tasks;
    struct method_run *mr;
    struct rng stream; /* the instance's stream before the gradient's forward */
    const struct model_hooks *hk;
};

/* Forward with hooks (NULL: the bare model); the precise loss, NAN when the forward fails. */
double check_forward(struct run *r, struct model *m, struct model_acts *a,
                     const struct model_hooks *hk);

/* The gradients of every trainable tensor and of the input (dx, at the embedding) against
 * central differences, and the site inputs left alone (check_grad.c). -1 when the training
 * pass itself failed (reported). */
int check_grads(struct checker *ck, struct run *r);

#endif
