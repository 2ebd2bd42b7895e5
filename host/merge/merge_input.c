/* merge_input.c: open the inputs of a merge stage (see merge_input.h). */
#include "merge_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "methods/methods.h"

/* ---- task vectors -------------------------------------------------------------------- */

static struct tvec *tvecs_new(const struct model *m) {
    return xcalloc((size_t)m->n_tensors + 1, sizeof(struct tvec));
}

static void tvecs_free(struct tvec *tv, const struct model *m) {
    if (!tv) return;
    for (int32_t t = 0; t < m->n_tensors; t++) tvec_free(&tv[t]);
    free(tv);
}

/* Read sorted, unique, in-range I64 indices. */
static int read_indices(const struct st_file *f, const struct st_tensor *t, uint64_t numel,
                        uint64_t *out) {
    if (t->dtype != ST_I64 || t->ndim != 1)
        return err_set("%s: tensor '%s': expected a 1-D I64 tensor of flat indices", f->path,
                       t->name);
    const uint8_t *p = st_data(f, t);
    for (uint64_t j = 0; j < t->numel; j++) {
        int64_t v;
        memcpy(&v, p + 8 * j, 8);
        if (v < 0 || (uint64_t)v >= numel || (j > 0 && (uint64_t)v <= out[j - 1]))
            return err_set("%s: tensor '%s': entry %llu (%lld) is out of range or out of order "
                           "(sorted, unique, below %llu)",
                           f->path, t->name, (unsigned long long)j, (long long)v,
                           (unsigned long long)numel);
        out[j] = (uint64_t)v;
    }
    return 0;
}

/* A task vector file: NAME (dense, the model tensor's shape) or NAME.sparse_index (I64) with
 * NAME.sparse_delta (F32) for model tensors NAME. */
static int read_task_vector(const struct model *m, const char *path, struct tvec **out) {
    struct st_file f;
    if (st_open(&f, path)) return -1;
    struct tvec *tv = tvecs_new(m);
    int rc = 0;
    const char *six = ".sparse_index", *sdl = ".sparse_delta";
    for (int32_t i = 0; i < f.n_tensors && rc == 0; i++) {
        const struct st_tensor *t = &f.tensors[i];
        size_t ln = strlen(t->name);
        int is_ix = ln > strlen(six) && strcmp(t->name + ln - strlen(six), six) == 0;
        int is_dl = ln > strlen(sdl) && strcmp(t->name + ln - strlen(sdl), sdl) == 0;
        char base[256];
        snprintf(base, sizeof base, "%.*s", (int)(is_ix || is_dl ? ln - strlen(six) : ln), t->name);
        int32_t mt = model_find_tensor(m, base);
        if (mt < 0) {
            rc = err_set("%s: tensor '%s' is not a tensor of the model", path, t->name);
            break;
        }
        const struct model_tensor *w = &m->tensors[mt];
        if (is_dl) { /* read with its index */
            char iname[300];
            snprintf(iname, sizeof iname, "%s%s", base, six);
            if (st_find(&f, iname)) continue;
            rc = err_set("%s: tensor '%s' has no '%s'", path, t->name, iname);
            break;
        }
        if (tv[mt].numel) {
            rc = err_set("%s: tensor '%s' comes both dense and sparse", path, base);
            break;
        }
        if (is_ix) {
            char dname[300];
            snprintf(dname, sizeof dname, "%s%s", base, sdl);
            const struct st_tensor *d = st_find(&f, dname);
            if (!d || d->numel != t->numel || t->numel > w->numel) {
                rc = err_set("%s: tensor '%s' needs '%s' of as many entries (at most %zu)", path,
                             t->name, dname, w->numel);
                break;
            }
            tv[mt].numel = w->numel;
            tv[mt].n = t->numel;
            tv[mt].idx = xmalloc((t->numel ? t->numel : 1) * sizeof *tv[mt].idx);
            tv[mt].val = xalloc_floats(t->numel);
            rc = read_indices(&f, t, w->numel, tv[mt].idx);
            if (rc == 0) rc = st_read_f32(&f, d, tv[mt].val, d->numel);
        } else {
            int same = t->ndim == w->ndim;
            for (int32_t k = 0; same && k < t->ndim; k++) same = t->shape[k] == w->shape[k];
            if (!same) {
                char a[96], b[96];
                st_shape_text(a, sizeof a, t->ndim, t->shape);
                st_shape_text(b, sizeof b, w->ndim, w->shape);
                rc =
                    err_set("%s: tensor '%s' has shape %s, the model's is %s", path, t->name, a, b);
                break;
            }
            tvec_init_dense(&tv[mt], w->numel);
            rc = st_read_f32(&f, t, tv[mt].val, w->numel);
        }
    }
    st_close(&f);
    if (rc) {
        tvecs_free(tv, m);
        return -1;
    }
    *out = tv;
    return 0;
}

/* The change from `start` to `end` of every model tensor that differs. */
static struct tvec *difference(const struct model *m, const struct model_snapshot *end_s,
                               const struct model_snapshot *start_s) {
    struct tvec *tv = tvecs_new(m);
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const float *end = model_snapshot_tensor(end_s, t), *start = model_snapshot_tensor(start_s, t);
        if (!end && !start) continue; /* both the 16-bit frozen copy: unchanged */
        size_t n = m->tensors[t].numel;
        float *e = xalloc_floats(n), *b = xalloc_floats(n);
        model_snapshot_read(end_s, m, t, e);
        model_snapshot_read(start_s, m, t, b);
        int differs = 0;
        for (size_t j = 0; j < n && !differs; j++) differs = e[j] != b[j];
        if (differs) {
            tvec_init_dense(&tv[t], n);
            for (size_t j = 0; j < n; j++) tv[t].val[j] = e[j] - b[j];
        }
        free(e);
        free(b);
    }
    return tv;
}

/* ---- method runs ----------------------------------------------------------------------- */

static int aliases_base(struct method_run *mr) {
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++)
        if (method_run_tensor(mr, i)->model_tensor >= 0) return 1;
    return 0;
}

static int site_attached(struct method_run *mr, int32_t site) {
    for (int32_t i = 0; i < method_run_site_count(mr); i++)
        if (method_run_site(mr, i) == site) return 1;
    return 0;
}

/* Every task vector of a method run whose tensors alias base weights: a masked tensor that
 * alone makes a weight's change (no plugin delta there) stays sparse, on its mask. */
static int extract(struct method_run *mr, const struct model *m, struct tvec **out) {
    struct tvec *tv = tvecs_new(m);
    const peft_method_desc *d = method_run_plugin(mr)->desc;
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const struct model_tensor *w = &m->tensors[t];
        int32_t n_alias = 0;
        const struct mtensor *only = NULL;
        for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
            const struct mtensor *x = method_run_tensor(mr, i);
            if (x->model_tensor != t) continue;
            n_alias++;
            only = x;
        }
        int attached = w->site >= 0 && site_attached(mr, w->site);
        int plugin_part = attached && d->vt->delta_weight;
        if (!n_alias && !attached) continue;
        if (n_alias == 1 && only->mask && !plugin_part) {
            tv[t].numel = w->numel;
            tv[t].n = only->n_trainable;
            tv[t].idx = xmalloc((only->n_trainable ? only->n_trainable : 1) * sizeof *tv[t].idx);
            tv[t].val = xalloc_floats(only->n_trainable);
            for (uint64_t j = 0; j < only->n_trainable; j++) {
                tv[t].idx[j] = only->mask[j];
                tv[t].val[j] = only->data[only->mask[j]] - only->start[j];
            }
            continue;
        }
        tvec_init_dense(&tv[t], w->numel);
        if (w->site >= 0) {
            if (method_run_delta(mr, w->site, 1.0f, tv[t].val)) {
                tvecs_free(tv, m);
                return -1;
            }
            continue;
        }
        for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
            const struct mtensor *x = method_run_tensor(mr, i);
            if (x->model_tensor != t) continue;
            if (x->mask) {
                for (uint64_t j = 0; j < x->n_trainable; j++)
                    tv[t].val[x->mask[j]] += x->data[x->mask[j]] - x->start[j];
            } else {
                for (uint64_t j = 0; j < x->numel; j++) tv[t].val[j] += x->data[j] - x->start[j];
            }
        }
    }
    *out = tv;
    return 0;
}

static void kv_from_stage(struct kv_list *out, const struct stage *k) {
    for (uint32_t i = 0; i < k->n_kv; i++)
        if (strcmp(k->kv[i].key, "stage") != 0) kv_list_set(out, k->kv[i].key, k->kv[i].value);
}

/* An adapter file (or the adapter of a merge stage) as a method run on the model. */
static int open_adapter_file(struct stage_env *env, const struct stage *s, const char *path,
                             const struct st_file *f, struct merge_source *out,
                             struct method_run **mr) {
    const char *id = st_meta(f, "peft.method");
    out->pm = registry_find(env->reg, id);
    if (!out->pm) return err_prefix("%s: method", path);
    if (adapter_file_kv(f, out->pm, &out->kv)) return -1;
    if (stage_method_create(env, path, s->name, s->seed, out->pm, out->kv.kv, out->kv.n, mr)) return -1;
    return method_run_load(*mr, path);
}

int merge_source_open(struct stage_env *env, const struct stage *s, int32_t i,
                      const struct model_snapshot *p0,
                      int keep_live, int negate, struct merge_source *out) {
    const struct merge_input *in = &s->merge->in[i];
    struct model *m = env->model;
    memset(out, 0, sizeof *out);
    struct method_run *mr = NULL;
    char *file = in->path ? xstrdup(in->path) : NULL;
    int rc = 0;
    if (in->kind == MERGE_IN_STAGE) {
        const struct stage *k = &env->stages[in->stage];
        out->label = xasprintf("stage '%s'", k->name);
        if (k->merge && k->merge->output == MERGE_OUT_MODEL) {
            out->tv = difference(m, k->result_params, stage_start(env, k));
        } else if (k->merge) {
            file = path_join(k->dir, k->merge->output == MERGE_OUT_DELTA ? "task_vector.safetensors"
                                                                         : "adapter.safetensors");
        } else {
            model_snapshot_restore(m, stage_start(env, k));
            out->pm = k->pm;
            kv_from_stage(&out->kv, k);
            char *path = path_join(k->dir, "adapter.safetensors");
            rc = stage_method(env, (struct stage *)k, &mr);
            if (rc == 0) rc = method_run_load(mr, path);
            free(path);
        }
    } else {
        out->label = xstrdup(in->path);
        model_snapshot_restore(m, p0);
    }
    if (rc == 0 && in->kind == MERGE_IN_HF) {
        struct hf_lora a;
        rc = hf_lora_read(in->path, &a);
        if (rc == 0) {
            out->pm = registry_find(env->reg, hf_lora_method(&a));
            if (!out->pm)
                rc = err_prefix("%s: HF PEFT adapters like this one are read as method '%s'",
                                in->path, hf_lora_method(&a));
            if (rc == 0) rc = hf_lora_method_kv(&a, out->pm, &out->kv);
            if (rc == 0)
                rc = stage_method_create(env, in->path, s->name, s->seed, out->pm, out->kv.kv,
                                       out->kv.n, &mr);
            if (rc == 0) rc = hf_lora_fill(mr, &a, in->path);
            hf_lora_free(&a);
        }
    } else if (rc == 0 && file && !out->tv) {
        struct st_file f;
        rc = st_open(&f, file);
        if (rc == 0) {
            const char *kind = st_meta(&f, "peft.kind");
            if (st_meta(&f, "peft.method")) {
                rc = open_adapter_file(env, s, file, &f, out, &mr);
            } else if (kind && strcmp(kind, "task_vector") == 0) {
                rc = read_task_vector(m, file, &out->tv);
            } else {
                rc = err_set("%s: neither a peftkit adapter (peft.method) nor a task vector "
                             "(peft.kind = task_vector) in __metadata__",
                             file);
            }
            st_close(&f);
        }
    }
    free(file);
    if (rc == 0 && mr) {
        if (negate) rc = method_run_negate(mr);
        int alias = aliases_base(mr);
        if (rc == 0 && keep_live && alias)
            rc = err_set("%s changes the base weights (method %s): factor space averages adapter "
                         "tensors only; use space = delta",
                         out->label, out->pm->desc->id);
        if (rc == 0 && !alias) {
            out->mr = mr;
            mr = NULL;
        } else if (rc == 0) {
            rc = extract(mr, m, &out->tv);
        }
    } else if (rc == 0 && keep_live) {
        rc = err_set("%s is a task vector, not an adapter: factor space averages adapter "
                     "tensors; use space = delta",
                     out->label);
    } else if (rc == 0 && negate) {
        for (int32_t t = 0; t < m->n_tensors; t++)
            for (uint64_t j = 0; j < out->tv[t].n; j++) out->tv[t].val[j] = -out->tv[t].val[j];
    }
    if (mr) method_run_free(mr);
    model_snapshot_restore(m, p0);
    if (out->tv) out->n_tv = m->n_tensors;
    if (rc) {
        if (strstr(err_msg(), in->text)) /* the line names the input already */
            err_prefix("%s", s->merge->where_inputs);
        else
            err_prefix("%s: '%s'", s->merge->where_inputs, in->text);
        tvecs_free(out->tv, m);
        out->tv = NULL;
        merge_source_close(out);
        return -1;
    }
    return 0;
}

void merge_source_close(struct merge_source *src) {
    if (src->mr) method_run_free(src->mr);
    for (int32_t t = 0; src->tv && t < src->n_tv; t++) tvec_free(&src->tv[t]);
    free(src->tv);
    kv_list_free(&src->kv);
    free(src->label);
    memset(src, 0, sizeof *src);
}

int merge_source_delta(struct merge_source *src, struct model *m, int32_t t, struct tvec *out,
                       int *owned) {
    memset(out, 0, sizeof *out);
    *owned = 0;
    if (src->tv) {
        *out = src->tv[t];
        return 0;
    }
    int32_t site = m->tensors[t].site;
    if (!src->mr || site < 0 || !site_attached(src->mr, site)) return 0;
    tvec_init_dense(out, m->tensors[t].numel);
    *owned = 1;
    if (method_run_delta(src->mr, site, 1.0f, out->val)) {
        tvec_free(out);
        *owned = 0;
        return err_prefix("%s", src->label);
    }
    return 0;
}
