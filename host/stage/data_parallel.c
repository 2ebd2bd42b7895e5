/* data_parallel.c: one training stage over the processes of an MPI job (core/dist.c).
 *
 * Every process holds the whole model and method and draws the same global batches (the data
 * stream is seeded alike); each runs a contiguous share of every micro-batch, with its loss
 * weighted by its share of the step's answer tokens, so that the gradients summed over the
 * processes are the global batch's. Every process then applies the same optimizer step to the
 * same summed gradient, and the processes stay identical without ever sending weights.
 * Random draws inside the passes come from each process's own stream (dp_pass_stream). */
#include <stdio.h>
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

/* Is tensor i's gradient summed here (it has one, and skip does not name it)? */
static int summed(struct method_run *mr, const uint8_t *skip, int32_t i) {
    return method_run_tensor(mr, i)->grad && !(skip && skip[i]);
}

static int sum_bucket(struct method_run *mr, const uint8_t *skip, int32_t from, int32_t to,
                      float *buf, uint64_t n) {
    uint64_t at = 0;
    for (int32_t i = from; i < to; i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        if (!summed(mr, skip, i) || t->n_trainable >= DP_BUCKET_FLOATS) continue;
        memcpy(buf + at, t->grad, sizeof *buf * t->n_trainable);
        at += t->n_trainable;
    }
    if (dist_sum_floats(buf, n)) return -1;
    at = 0;
    for (int32_t i = from; i < to; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (!summed(mr, skip, i) || t->n_trainable >= DP_BUCKET_FLOATS) continue;
        memcpy(t->grad, buf + at, sizeof *buf * t->n_trainable);
        at += t->n_trainable;
    }
    return 0;
}

/* The gradients of the tensors skip does not name (NULL: all), summed now. */
static int sum_grads(struct method_run *mr, const uint8_t *skip) {
    int32_t count = method_run_tensor_count(mr), from = 0;
    float *buf = NULL;
    uint64_t filled = 0;
    int rc = 0;
    for (int32_t i = 0; i < count && rc == 0; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (!summed(mr, skip, i)) continue;
        if (t->n_trainable >= DP_BUCKET_FLOATS) { /* a large tensor: in place */
            rc = dist_sum_floats(t->grad, t->n_trainable);
            continue;
        }
        if (filled + t->n_trainable > DP_BUCKET_FLOATS) { /* the bucket is full: send it */
            rc = sum_bucket(mr, skip, from, i, buf, filled);
            from = i;
            filled = 0;
        }
        if (!buf) buf = xalloc_floats(DP_BUCKET_FLOATS);
        filled += t->n_trainable;
    }
    if (rc == 0 && filled > 0) rc = sum_bucket(mr, skip, from, count, buf, filled);
    free(buf);
    return rc;
}

int dp_sum_grads(struct method_run *mr) { return dist_size() > 1 ? sum_grads(mr, NULL) : 0; }

/* ---- overlap: a layer's gradients summed while the layers below run their backward ---- */

void dp_overlap_init(struct dp_overlap *o, struct method_run *mr, const struct model *m) {
    memset(o, 0, sizeof *o);
    o->mr = mr;
    o->n_layers = m->cfg.n_layers;
    int32_t n = method_run_tensor_count(mr);
    o->layer_of = xmalloc(sizeof *o->layer_of * (size_t)(n + 1));
    for (int32_t i = 0; i < n; i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        int32_t layer = -1, site = t->desc.site;
        if (t->model_tensor >= 0) { /* a weight of the model: its site, or its name's layer */
            const struct model_tensor *mt = &m->tensors[t->model_tensor];
            site = mt->site;
            if (site < 0 && sscanf(mt->name, "model.layers.%d.", &layer) != 1) layer = -1;
        }
        if (site >= 0) layer = model_site_layer(site);
        o->layer_of[i] = layer >= 0 && layer < o->n_layers ? layer : -1;
    }
    o->packed = xcalloc((size_t)o->n_layers, sizeof *o->packed);
    o->packed_cap = xcalloc((size_t)o->n_layers, sizeof *o->packed_cap);
    o->started = xcalloc((size_t)o->n_layers, sizeof *o->started);
    o->skip = xcalloc((size_t)n + 1, 1);
}

void dp_overlap_free(struct dp_overlap *o) {
    for (int32_t l = 0; l < o->n_layers && o->packed; l++) free(o->packed[l]);
    free(o->packed);
    free(o->packed_cap);
    free(o->started);
    free(o->layer_of);
    free(o->skip);
    memset(o, 0, sizeof *o);
}

/* Is tensor i's gradient sent with its layer's (a dense one: a masked gradient takes its
 * compact form after the backward, method_run_collect_grads)? Packed with the layer's other
 * small ones, or (large) summed in place. */
static int with_layer(const struct dp_overlap *o, int32_t i, int32_t layer) {
    const struct mtensor *t = method_run_tensor(o->mr, i);
    return o->layer_of[i] == layer && t->grad && !t->mask;
}
/* Within a layer, a gradient of at least this many floats starts its own sum in place (no
 * copy); the smaller ones share one packed sum. */
enum { DP_IN_PLACE_FLOATS = 1 << 16 };
static int packed_with_layer(const struct dp_overlap *o, int32_t i, int32_t layer) {
    return with_layer(o, i, layer) && method_run_tensor(o->mr, i)->n_trainable < DP_IN_PLACE_FLOATS;
}

/* Start the sums of layer l's gradients: the large ones in place, the others packed. */
static int start_layer(struct dp_overlap *o, int32_t l) {
    uint64_t n = 0;
    int32_t count = method_run_tensor_count(o->mr);
    o->started[l] = 1;
    for (int32_t i = 0; i < count; i++) {
        struct mtensor *t = method_run_tensor(o->mr, i);
        if (packed_with_layer(o, i, l)) n += t->n_trainable;
        else if (with_layer(o, i, l) && dist_isum_floats(t->grad, t->n_trainable)) return -1;
    }
    if (n > o->packed_cap[l]) {
        free(o->packed[l]);
        o->packed[l] = xalloc_floats(n);
        o->packed_cap[l] = n;
    }
    uint64_t at = 0;
    for (int32_t i = 0; i < count; i++)
        if (packed_with_layer(o, i, l)) {
            const struct mtensor *t = method_run_tensor(o->mr, i);
            memcpy(o->packed[l] + at, t->grad, sizeof *t->grad * t->n_trainable);
            at += t->n_trainable;
        }
    return n ? dist_isum_floats(o->packed[l], n) : 0;
}

int dp_overlap_layer_done(void *ctx, int32_t layer) {
    struct dp_overlap *o = ctx;
    if (layer < 0 || layer >= o->n_layers || o->started[layer]) return 0;
    return start_layer(o, layer) || dist_progress();
}

int dp_overlap_finish(struct dp_overlap *o) {
    /* a process that ran no example this step starts the same sums, in the same order */
    int rc = 0;
    for (int32_t l = o->n_layers - 1; l >= 0 && rc == 0; l--)
        if (!o->started[l]) rc = start_layer(o, l);
    int32_t count = method_run_tensor_count(o->mr);
    for (int32_t i = 0; i < count; i++) { /* the rest: outside the layers, or masked */
        const struct mtensor *t = method_run_tensor(o->mr, i);
        o->skip[i] = o->layer_of[i] >= 0 && !t->mask;
    }
    if (rc == 0) rc = sum_grads(o->mr, o->skip);
    if (rc == 0) rc = dist_wait_sums();
    for (int32_t l = 0; l < o->n_layers && rc == 0; l++) { /* unpack the layers' sums */
        uint64_t at = 0;
        for (int32_t i = 0; i < count; i++)
            if (packed_with_layer(o, i, l)) {
                struct mtensor *t = method_run_tensor(o->mr, i);
                memcpy(t->grad, o->packed[l] + at, sizeof *t->grad * t->n_trainable);
                at += t->n_trainable;
            }
    }
    memset(o->started, 0, (size_t)o->n_layers);
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
