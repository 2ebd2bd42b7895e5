/*
 * method_file.c: adapter files of a method run (safetensors): every tensor
 * without NO_SAVE under its registered name, the plugin's own state as a U8 tensor
 * "peft.state", and in __metadata__ the method id, its version and the ABI version, plus
 * what the caller adds. Loading checks the whole file against the run (method, major
 * version, every name, dtype and shape, no unknown tensor) before anything is overwritten.
 *
 * A masked ALIAS_BASE tensor NAME (a sparse task vector, e.g. LoTA's) is written sparse:
 *   NAME.sparse_index  I64 (n)  sorted flat row-major indices into NAME: the mask
 *   NAME.sparse_value  F32 (n)  the weight at those entries
 *   NAME.sparse_delta  F32 (n)  value - the stage's start value there: the task vector
 * Every other entry of NAME is the start value's. The value is what loading restores (it is
 * exact; start + delta need not round back to it); the delta is for merges and readers. The
 * metadata key "peft.sparse" says so, and "peft.step0.NAME" keeps a restarted tensor's step0
 * (method.h) so a resumed stage continues its bias correction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "method_internal.h"
#include "io/io.h"

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

/* May the tensor come sparse? (A trainable ALIAS_BASE tensor: the host keeps its start.) */
static int sparse_capable(const struct mtensor *t) {
    return t->model_tensor >= 0 && (t->desc.flags & PEFT_TENSOR_TRAINABLE);
}

static const char *const sparse_suffix[3] = {".sparse_index", ".sparse_value", ".sparse_delta"};

/* name + suffix k, in buf. */
static const char *sparse_name(char *buf, size_t cap, const char *name, int k) {
    snprintf(buf, cap, "%s%s", name, sparse_suffix[k]);
    return buf;
}

int read_index_tensor(const struct st_file *f, const struct st_tensor *t, uint64_t *out,
                      uint64_t n) {
    if (n != t->numel)
        return err_set("%s: tensor '%s': %llu entries requested, the tensor holds %llu",
                       f->path, t->name, (unsigned long long)n, (unsigned long long)t->numel);
    const uint8_t *p = st_data(f, t);
    for (uint64_t i = 0; i < n; i++) {
        int64_t v;
        switch (t->dtype) {
        case ST_I64:
        case ST_U64: {
            uint64_t u;
            memcpy(&u, p + 8 * i, 8);
            v = u > (uint64_t)INT64_MAX ? -1 : (int64_t)u;
            break;
        }
        case ST_I32: {
            int32_t x;
            memcpy(&x, p + 4 * i, 4);
            v = x;
            break;
        }
        case ST_U32: {
            uint32_t x;
            memcpy(&x, p + 4 * i, 4);
            v = x;
            break;
        }
        default:
            return err_set("%s: tensor '%s': dtype %s is not an index type (I64, I32, U64 or "
                           "U32)", f->path, t->name, st_dtype_name(t->dtype));
        }
        if (v < 0)
            return err_set("%s: tensor '%s': entry %llu is negative or too large", f->path,
                           t->name, (unsigned long long)i);
        out[i] = (uint64_t)v;
    }
    return 0;
}

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
    /* Buffers and names of sparse tensors, alive until the file is written. */
    void **keep = xcalloc((size_t)h->n_tensors * 7 + 1, sizeof *keep);
    size_t n_keep = 0;
    int any_sparse = 0;
    for (int32_t i = 0; i < h->n_tensors; i++) {
        const struct mtensor *t = &h->tensors[i];
        if (!saved(t)) continue;
        if (t->step0 > 0) {
            char *key = xasprintf("peft.step0.%s", t->name);
            char *val = xasprintf("%lld", (long long)t->step0);
            st_writer_meta(w, key, val);
            keep[n_keep++] = key;
            keep[n_keep++] = val;
        }
        if (t->mask && sparse_capable(t)) {
            uint64_t n = t->n_trainable;
            float *value = xalloc_floats(n), *delta = xalloc_floats(n);
            for (uint64_t j = 0; j < n; j++) {
                value[j] = t->data[t->mask[j]];
                delta[j] = value[j] - t->start[j];
            }
            int64_t shape[1] = {(int64_t)n};
            char *names[3];
            for (int k = 0; k < 3; k++) keep[n_keep++] = names[k] = xasprintf("%s%s", t->name,
                                                                             sparse_suffix[k]);
            /* The mask's indices are below 2^40, so their uint64 bytes are the I64 ones. */
            st_writer_add(w, names[0], ST_I64, 1, shape, t->mask);
            st_writer_add_f32(w, names[1], 1, shape, value);
            st_writer_add_f32(w, names[2], 1, shape, delta);
            keep[n_keep++] = value;
            keep[n_keep++] = delta;
            any_sparse = 1;
            continue;
        }
        int64_t shape[4];
        for (uint32_t k = 0; k < t->desc.ndim; k++) shape[k] = (int64_t)t->desc.shape[k];
        st_writer_add_f32(w, t->name, (int32_t)t->desc.ndim, shape, t->data);
    }
    if (any_sparse)
        st_writer_meta(w, "peft.sparse",
                       "NAME.sparse_index (I64): sorted flat row-major indices into NAME; "
                       "NAME.sparse_value (F32): NAME there; NAME.sparse_delta (F32): value - "
                       "start there; every other entry of NAME is the start value's");
    if (state.n) {
        int64_t shape[1] = {(int64_t)state.n};
        st_writer_add(w, "peft.state", ST_U8, 1, shape, state.p);
    }
    char abi[16];
    snprintf(abi, sizeof abi, "%u.%u", PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    st_writer_meta(w, "peft.method", d->id);
    st_writer_meta(w, "peft.method_version", d->version);
    st_writer_meta(w, "peft.abi_version", abi);
    char fp[24];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)h->init_fp);
    if (h->init_fp) st_writer_meta(w, "peft.init_fingerprint", fp);
    for (int i = 0; meta_kv && meta_kv[i] && meta_kv[i + 1]; i += 2)
        st_writer_meta(w, meta_kv[i], meta_kv[i + 1]);
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    for (size_t i = 0; i < n_keep; i++) free(keep[i]);
    free(keep);
    free(state.p);
    return rc;
}

static int major_of(const char *v) { return v ? atoi(v) : -1; }

/* The sparse part k (sparse_suffix) of NAME in f, or NULL. */
static const struct st_tensor *find_sparse(const struct st_file *f, const char *name, int k) {
    char nm[320];
    return st_find(f, sparse_name(nm, sizeof nm, name, k));
}

/* A sparse tensor: index and value (delta optional) of one length, 1-D, index an integer
 * type with sorted unique entries below numel, value and delta floats. */
static int sparse_check(const struct st_file *f, const struct mtensor *t, const char *path) {
    const struct st_tensor *ix = find_sparse(f, t->name, 0), *val = find_sparse(f, t->name, 1);
    const struct st_tensor *dl = find_sparse(f, t->name, 2);
    if (!val) return err_set("%s: tensor '%s%s' missing", path, t->name, sparse_suffix[1]);
    const struct st_tensor *parts[3] = {ix, val, dl};
    for (int k = 0; k < 3; k++) {
        const struct st_tensor *p = parts[k];
        if (!p) continue;
        int is_float = p->dtype == ST_F32 || p->dtype == ST_F16 || p->dtype == ST_BF16;
        if (p->ndim != 1 || p->numel != ix->numel || p->numel > t->numel || (k > 0 && !is_float))
            return err_set("%s: tensor '%s': a sparse part must be 1-D, of one length for "
                           "index, value and delta (at most %llu), value and delta F32, F16 "
                           "or BF16", path, p->name, (unsigned long long)t->numel);
    }
    uint64_t *idx = xmalloc((ix->numel ? ix->numel : 1) * sizeof *idx);
    int rc = read_index_tensor(f, ix, idx, ix->numel);
    for (uint64_t j = 0; rc == 0 && j < ix->numel; j++)
        if (idx[j] >= t->numel || (j > 0 && idx[j] <= idx[j - 1]))
            rc = err_set("%s: tensor '%s': entry %llu (%llu) is out of range or out of order "
                         "(indices must be sorted, unique and below %llu)", path, ix->name,
                         (unsigned long long)j, (unsigned long long)idx[j],
                         (unsigned long long)t->numel);
    free(idx);
    return rc;
}

/* Restore a checked sparse tensor: every entry to its start value, then the mask and the
 * saved values. */
static int sparse_load(struct peft_host *h, const struct st_file *f, struct mtensor *t,
                       const char *path) {
    if (t->adam_m || t->adam_v)
        return err_set("%s: tensor '%s': cannot set its mask, it already has optimizer state",
                       path, t->name);
    const struct st_tensor *ix = find_sparse(f, t->name, 0), *val = find_sparse(f, t->name, 1);
    uint64_t n = ix->numel;
    uint64_t *idx = xmalloc((n ? n : 1) * sizeof *idx);
    float *v = xalloc_floats(n);
    int rc = read_index_tensor(f, ix, idx, n);
    if (rc == 0) rc = st_read_f32(f, val, v, n);
    if (rc == 0) {
        if (t->mask) {
            for (uint64_t j = 0; j < t->n_trainable; j++) t->data[t->mask[j]] = t->start[j];
        } else {
            memcpy(t->data, t->start, t->numel * sizeof(float));
        }
        mask_apply(h, t, idx, n);
        for (uint64_t j = 0; j < n; j++) t->data[idx[j]] = v[j];
    }
    free(idx);
    free(v);
    return rc;
}

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
        if (!s && sparse_capable(t) && find_sparse(f, t->name, 0)) {
            if (sparse_check(f, t, path) != 0) return -1;
            continue;
        }
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
        for (int32_t k = 0; k < h->n_tensors && !known; k++) {
            const struct mtensor *t = &h->tensors[k];
            if (!saved(t)) continue;
            known = strcmp(t->name, nm) == 0;
            size_t ln = strlen(t->name);
            for (int j = 0; j < 3 && !known && sparse_capable(t); j++)
                known = strncmp(nm, t->name, ln) == 0 && strcmp(nm + ln, sparse_suffix[j]) == 0;
        }
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
        if (!saved(t)) continue;
        const struct st_tensor *s = st_find(&f, t->name);
        rc = s ? st_read_f32(&f, s, t->data, t->numel) : sparse_load(h, &f, t, path);
        t->loaded = rc == 0;
        char key[320];
        snprintf(key, sizeof key, "peft.step0.%s", t->name);
        const char *step0 = st_meta(&f, key);
        int64_t v = 0;
        if (rc == 0 && step0 && (parse_i64(step0, &v) != 0 || v < 0))
            rc = err_set("%s: metadata '%s' is not a step count: '%s'", path, key, step0);
        t->step0 = v;
    }
    /* the file's initialisation is the adapter's now (unknown when the file has none) */
    const char *fp = st_meta(&f, "peft.init_fingerprint");
    if (rc == 0) {
        char *end = NULL;
        unsigned long long v = fp ? strtoull(fp, &end, 16) : 0;
        if (fp && (end == fp || *end != '\0'))
            rc = err_set("%s: metadata 'peft.init_fingerprint' is not a hex number: '%s'", path, fp);
        h->init_fp = (uint64_t)v;
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

