/* data_parallel.c: one training stage over the processes of an MPI job (core/dist.c).
 *
 * Every process holds the whole model and method and draws the same global batches (the data
 * stream is seeded alike); each runs a contiguous share of every micro-batch, with its loss
 * weighted by its share of the step's answer tokens, so that the gradients summed over the
 * processes are the global batch's. Every process then applies the same optimizer step to the
 * same summed gradient, and the processes stay identical without ever sending weights. */
#include <stdlib.h>
#include <string.h>

#include "stage.h"

void dp_share(size_t n, size_t *lo, size_t *hi) {
    size_t rank = (size_t)dist_rank(), size = (size_t)dist_size();
    *lo = n * rank / size;
    *hi = n * (rank + 1) / size;
}

/* Tensors below this many floats travel packed together; larger ones are summed in place. */
enum { DP_BUCKET_FLOATS = 1 << 22 };

static int sum_bucket(struct method_run *mr, int32_t from, int32_t to, float *buf, uint64_t n) {
    uint64_t at = 0;
    for (int32_t i = from; i < to; i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        if (!t->grad || t->n_trainable >= DP_BUCKET_FLOATS) continue;
        memcpy(buf + at, t->grad, sizeof *buf * t->n_trainable);
        at += t->n_trainable;
    }
    if (dist_sum_floats(buf, n)) return -1;
    at = 0;
    for (int32_t i = from; i < to; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (!t->grad || t->n_trainable >= DP_BUCKET_FLOATS) continue;
        memcpy(t->grad, buf + at, sizeof *buf * t->n_trainable);
        at += t->n_trainable;
    }
    return 0;
}

int dp_sum_grads(struct method_run *mr) {
    if (dist_size() <= 1) return 0;
    int32_t count = method_run_tensor_count(mr), from = 0;
    float *buf = NULL;
    uint64_t filled = 0;
    int rc = 0;
    for (int32_t i = 0; i < count && rc == 0; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (!t->grad) continue;
        if (t->n_trainable >= DP_BUCKET_FLOATS) { /* a large tensor: in place */
            rc = dist_sum_floats(t->grad, t->n_trainable);
            continue;
        }
        if (filled + t->n_trainable > DP_BUCKET_FLOATS) { /* the bucket is full: send it */
            rc = sum_bucket(mr, from, i, buf, filled);
            from = i;
            filled = 0;
        }
        if (!buf) buf = xalloc_floats(DP_BUCKET_FLOATS);
        filled += t->n_trainable;
    }
    if (rc == 0 && filled > 0) rc = sum_bucket(mr, from, count, buf, filled);
    free(buf);
    return rc;
}

uint64_t dp_grad_floats(struct method_run *mr) {
    uint64_t n = 0;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        if (t->grad) n += t->n_trainable;
    }
    return n;
}

int dp_check_agree(struct method_run *mr, const char *run_path, const char *section) {
    if (dist_size() <= 1) return 0;
    uint64_t h = 1469598103934665603ull, lo, hi;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        if (t->grad) h = hash_fnv1a(h, t->data, sizeof *t->data * t->numel);
    }
    if (dist_agree(h, &lo, &hi)) return -1;
    if (lo != hi)
        return err_set("%s: [%s] the processes hold different trained values (the MPI sum "
                       "gave them different results)", run_path, section);
    return 0;
}

void dp_pass_stream(struct rng *shared, struct rng *saved, int64_t micro_batch) {
    *saved = *shared;
    if (dist_size() <= 1) return;
    uint64_t key[6] = {shared->s[0], shared->s[1], shared->s[2], shared->s[3],
                       (uint64_t)dist_rank(), (uint64_t)micro_batch};
    rng_seed_label(shared, hash_fnv1a(1469598103934665603ull, key, sizeof key), "process-pass");
}

void dp_pass_stream_end(struct rng *shared, const struct rng *saved) {
    if (dist_size() <= 1) return;
    *shared = *saved;
    rng_next(shared); /* the next micro-batch's streams differ from this one's */
}
