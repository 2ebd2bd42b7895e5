/* snapshot.c: the weights at a point of a run (see model.h), without copying the 16-bit
 * frozen weights: a snapshot's block is as large as params but only the fp32 tensors it
 * records are written, so only they take memory. */
#include <stdlib.h>
#include <string.h>

#include "model.h"

struct model_snapshot {
    float *data;     /* (n_params) lazily backed: only recorded tensors are written */
    size_t n_params;
    uint8_t *fp32;   /* (n_tensors) 1: data holds the tensor; 0: the model's 16-bit copy */
    int32_t n_tensors;
    size_t *offset;  /* (n_tensors) */
};

struct model_snapshot *model_snapshot_take(const struct model *m)
{
    struct model_snapshot *s = xcalloc(1, sizeof *s);
    s->n_params = m->n_params;
    s->n_tensors = m->n_tensors;
    s->data = xalloc_floats_lazy(m->n_params);
    s->fp32 = xcalloc((size_t)m->n_tensors + 1, 1);
    s->offset = xcalloc((size_t)m->n_tensors + 1, sizeof *s->offset);
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const struct model_tensor *mt = &m->tensors[t];
        s->offset[t] = mt->offset;
        if (model_tensor_in_half(m, t))
            continue;
        memcpy(s->data + mt->offset, m->params + mt->offset, mt->numel * sizeof(float));
        s->fp32[t] = 1;
    }
    return s;
}

void model_snapshot_free(struct model_snapshot *s)
{
    if (!s)
        return;
    free_floats_lazy(s->data, s->n_params);
    free(s->fp32);
    free(s->offset);
    free(s);
}

void model_snapshot_restore(struct model *m, const struct model_snapshot *s)
{
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const struct model_tensor *mt = &m->tensors[t];
        if (s->fp32[t]) {
            memcpy(m->params + mt->offset, s->data + mt->offset, mt->numel * sizeof(float));
            if (m->fp32_ok)
                m->fp32_ok[t] = 1;
        } else {
            model_tensor_release(m, t); /* its values are the 16-bit copy again */
        }
    }
}

const float *model_snapshot_tensor(const struct model_snapshot *s, int32_t t)
{
    return s->fp32[t] ? s->data + s->offset[t] : NULL;
}

void model_snapshot_read(const struct model_snapshot *s, const struct model *m, int32_t t,
                         float *out)
{
    const float *v = model_snapshot_tensor(s, t);
    if (v) {
        memcpy(out, v, m->tensors[t].numel * sizeof *out);
        return;
    }
    model_tensor_read_half(m, t, out); /* the live fp32 values may have changed since */
}
