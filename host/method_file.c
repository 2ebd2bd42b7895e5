/*
 * method_file.c: adapter files of a method run (safetensors, FORMATS.md §1): every tensor
 * without NO_SAVE under its registered name, the plugin's own state as a U8 tensor
 * "peft.state", and in __metadata__ the method id, its version and the ABI version, plus
 * what the caller adds. Loading checks the whole file against the run (method, major
 * version, every name, dtype and shape, no unknown tensor) before anything is overwritten.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "method_internal.h"
#include "safetensors.h"

struct membuf {
    uint8_t *p;
    uint64_t n, cap, pos;
};

static int64_t mem_write(const peft_ostream *s, const void *buf, uint64_t size) {
    struct membuf *b = s->ctx;
    if (size == 0) return 0;
    if (!buf) return -1;
    if (b->n + size > b->cap) {
        b->cap = (b->n + size) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, buf, size);
    b->n += size;
    return (int64_t)size;
}

static int64_t mem_read(const peft_istream *s, void *buf, uint64_t size) {
    struct membuf *b = s->ctx;
    if (size == 0) return 0;
    if (!buf || size > b->n - b->pos) return -1;
    memcpy(buf, b->p + b->pos, size);
    b->pos += size;
    return (int64_t)size;
}

static int saved(const struct mtensor *t) { return !(t->desc.flags & PEFT_TENSOR_NO_SAVE); }

int method_run_save(struct method_run *mr, const char *path, const char *const *meta_kv) {
    struct peft_host *h = &mr->h;
    const peft_method_desc *d = h->pm->desc;
    struct membuf state = {0};
    if (h->vt->state_save) {
        peft_ostream os = {&state, mem_write};
        int prev = call_begin(h, CALL_OTHER);
        if (call_end(h, prev, h->vt->state_save(h->inst, &os), "state_save") != 0) {
            free(state.p);
            return -1;
        }
    }
    struct st_writer *w = st_writer_new();
    for (int32_t i = 0; i < h->n_tensors; i++) {
        const struct mtensor *t = &h->tensors[i];
        if (!saved(t)) continue;
        int64_t shape[4];
        for (uint32_t k = 0; k < t->desc.ndim; k++) shape[k] = (int64_t)t->desc.shape[k];
        st_writer_add_f32(w, t->name, (int32_t)t->desc.ndim, shape, t->data);
    }
    if (state.n) {
        int64_t shape[1] = {(int64_t)state.n};
        st_writer_add(w, "peft.state", ST_U8, 1, shape, state.p);
    }
    char abi[16];
    snprintf(abi, sizeof abi, "%u", PEFT_ABI_VERSION);
    st_writer_meta(w, "peft.method", d->id);
    st_writer_meta(w, "peft.method_version", d->version);
    st_writer_meta(w, "peft.abi_version", abi);
    for (int i = 0; meta_kv && meta_kv[i] && meta_kv[i + 1]; i += 2)
        st_writer_meta(w, meta_kv[i], meta_kv[i + 1]);
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    free(state.p);
    return rc;
}

static int major_of(const char *v) { return v ? atoi(v) : -1; }

/* Check the whole file against the run before anything is overwritten. */
static int load_check(struct method_run *mr, const struct st_file *f, const char *path) {
    struct peft_host *h = &mr->h;
    const peft_method_desc *d = h->pm->desc;
    const char *id = st_meta(f, "peft.method");
    if (!id) return err_set("%s: not a peftkit adapter (no peft.method in __metadata__)", path);
    if (strcmp(id, d->id) != 0)
        return err_set("%s: written by method '%s', not '%s'", path, id, d->id);
    const char *ver = st_meta(f, "peft.method_version");
    if (major_of(ver) != major_of(d->version))
        return err_set("%s: written by %s %s, this plugin is %s", path, id, ver ? ver : "?",
                       d->version);
    for (int32_t i = 0; i < h->n_tensors; i++) {
        const struct mtensor *t = &h->tensors[i];
        if (!saved(t)) continue;
        const struct st_tensor *s = st_find(f, t->name);
        if (!s) return err_set("%s: tensor '%s' missing", path, t->name);
        if (s->dtype != ST_F32 && s->dtype != ST_F16 && s->dtype != ST_BF16)
            return err_set("%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", path,
                           t->name, st_dtype_name(s->dtype));
        int64_t want[4];
        for (uint32_t k = 0; k < t->desc.ndim; k++) want[k] = (int64_t)t->desc.shape[k];
        int same = s->ndim == (int32_t)t->desc.ndim;
        for (int32_t k = 0; same && k < s->ndim; k++) same = s->shape[k] == want[k];
        if (!same) {
            char a[96], b[96];
            st_shape_text(a, sizeof a, s->ndim, s->shape);
            st_shape_text(b, sizeof b, (int32_t)t->desc.ndim, want);
            return err_set("%s: tensor '%s' has shape %s, the method expects %s", path,
                           t->name, a, b);
        }
    }
    for (int32_t i = 0; i < f->n_tensors; i++) {
        const char *nm = f->tensors[i].name;
        if (strcmp(nm, "peft.state") == 0) {
            if (!h->vt->state_load)
                return err_set("%s: tensor 'peft.state' holds plugin state but %s has no "
                               "state_load", path, d->id);
            if (f->tensors[i].dtype != ST_U8)
                return err_set("%s: tensor 'peft.state' must be U8", path);
            continue;
        }
        int known = 0;
        for (int32_t k = 0; k < h->n_tensors && !known; k++)
            known = saved(&h->tensors[k]) && strcmp(h->tensors[k].name, nm) == 0;
        if (!known)
            return err_set("%s: tensor '%s' is not a tensor of this %s run (other "
                           "target_modules or keys?)", path, nm, d->id);
    }
    return 0;
}

int method_run_load(struct method_run *mr, const char *path) {
    struct peft_host *h = &mr->h;
    struct st_file f;
    if (st_open(&f, path) != 0) return -1;
    int rc = load_check(mr, &f, path);
    for (int32_t i = 0; rc == 0 && i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (saved(t)) rc = st_read_f32(&f, st_find(&f, t->name), t->data, t->numel);
    }
    const struct st_tensor *s = st_find(&f, "peft.state");
    if (rc == 0 && s) {
        struct membuf b = {(uint8_t *)st_data(&f, s), s->numel, s->numel, 0};
        peft_istream is = {&b, mem_read};
        int prev = call_begin(h, CALL_OTHER);
        rc = call_end(h, prev, h->vt->state_load(h->inst, &is), "state_load");
        if (rc != 0) err_prefix("%s", path);
    }
    st_close(&f);
    return rc;
}

