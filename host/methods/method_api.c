/*
 * method_api.c: the host API table a plugin instance is given, and the bracket around every
 * call into the plugin.
 *
 * Errors. During a call the ERROR lines the plugin logs are collected; if the call fails, the
 * error line becomes "WHERE: ID: <those lines>", e.g. "conf/x.ini [stage.adapt]: lora: r must
 * be in 1..65536, got 0". When the host refuses an API call it records why; that reason is
 * used when the plugin itself logged nothing.
 *
 * Lifecycle. API functions check which plugin entry is running (tensor_register only in
 * create/attach, tensor_set_mask up to stage_begin and in step_end, run_pass only in
 * batch_begin, tensor_view once tensors exist) and answer PEFT_E_STATE outside it.
 *
 * ALIAS_BASE tensors. Their data is the model's parameter storage. Without a mask their
 * gradient is the model's own (m->grads, need_grad set), so the model's backward computes it
 * densely. With a mask the compact gradient buffer is the model's sparse target for that
 * weight: the backward forms the gradient at the masked entries only (a sampled product of
 * dy and x), no dense dW exists for it, and the start value is kept for those entries only.
 * The model's gradient block, when this instance made it, is freed once no tensor needs it.
 *
 * A mask set in step_end restarts the tensor's optimizer state (fresh moments, bias
 * correction counted from that step): serves LoTA's own calibration.
 *
 * Extensions: "peft.files/1" reads tensors of other safetensors files and names the adapter
 * file of an earlier stage; "peft.tensor_start/1" gives an aliased tensor's start value.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "method_internal.h"
#include "peft/peft_files.h"
#include "peft/peft_stage_keys.h"
#include "peft/peft_site_weight.h"
#include "peft/peft_stage_tasks.h"
#include "peft/peft_tensor_start.h"
#include "io/io.h"

static const char *status_name(peft_status st) {
    switch (st) {
    case PEFT_OK: return "ok";
    case PEFT_E_INVALID_ARG: return "invalid argument";
    case PEFT_E_NOMEM: return "out of memory";
    case PEFT_E_CONFIG: return "bad configuration";
    case PEFT_E_SHAPE: return "shape mismatch";
    case PEFT_E_UNSUPPORTED: return "unsupported";
    case PEFT_E_ABI: return "ABI contract violation";
    case PEFT_E_IO: return "I/O error";
    case PEFT_E_STATE: return "called at the wrong point of the lifecycle";
    case PEFT_E_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}

const char *method_id(const struct peft_host *h) { return h->pm->desc->id; }

/* ------------------------------------------------------------------------------------------
 * Calls into the plugin.
 */

void append_line(char *buf, size_t cap, const char *msg) {
    size_t n = strlen(buf);
    if (n + 3 >= cap) return;
    snprintf(buf + n, cap - n, "%s%s", n ? "; " : "", msg);
}

int call_begin(struct peft_host *h, int kind) {
    int prev = h->call;
    if (prev == CALL_NONE) {
        h->reason[0] = '\0';
        h->api_reason[0] = '\0';
        h->misbehaved = 0;
    }
    h->call = kind;
    return prev;
}

/* End a call. On failure set "WHERE: ID: [WHAT: ]reason" and return -1. */
int call_end(struct peft_host *h, int prev, peft_status st, const char *what) {
    h->call = prev;
    if (st == PEFT_OK && h->misbehaved && prev == CALL_NONE) st = PEFT_E_ABI;
    if (st == PEFT_OK) return 0;
    const char *reason = h->reason[0] ? h->reason
                         : h->api_reason[0] ? h->api_reason
                                            : status_name(st);
    if (what)
        err_set("%s: %s: %s: %s", h->env.where, method_id(h), what, reason);
    else
        err_set("%s: %s: %s", h->env.where, method_id(h), reason);
    return -1;
}

/* The host refuses an API call: remember why (used if the plugin logs nothing). */
static peft_status refuse(struct peft_host *h, peft_status st, const char *fmt, ...)
    PEFT_PRINTF(3, 4);
static peft_status refuse(struct peft_host *h, peft_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->api_reason, sizeof h->api_reason, fmt, ap);
    va_end(ap);
    return st;
}

/* A contract violation the plugin cannot see as a status (void API functions). */
void misbehaving(struct peft_host *h, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    h->misbehaved = 1;
    append_line(h->reason, sizeof h->reason, line);
}

/* ------------------------------------------------------------------------------------------
 * The host API table.
 */

static void api_log(peft_host *h, int32_t level, const char *raw) {
    if (!raw) return;
    /* A plugin's line reaches a terminal: control bytes (an escape sequence, a newline that
     * would forge a line of its own) become '?'. */
    char msg[1024];
    size_t n = 0;
    for (; raw[n] && n + 1 < sizeof msg; n++) {
        unsigned char c = (unsigned char)raw[n];
        msg[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    msg[n] = 0;
    if (!h) {
        if (level >= PEFT_LOG_WARN) fprintf(stderr, "peft: plugin: %s\n", msg);
        return;
    }
    if (level >= PEFT_LOG_ERROR) {
        append_line(h->reason, sizeof h->reason, msg);
    } else if (level == PEFT_LOG_WARN) {
        fprintf(stderr, "peft: %s: %s: warning: %s\n", h->env.where, method_id(h), msg);
    } else if (level == PEFT_LOG_INFO || getenv("PEFT_DEBUG")) {
        /* Information, not a failure: no "peft:" prefix, which marks errors. */
        fprintf(stderr, "[%s] %s: %s\n", h->env.stage ? h->env.stage : "-", method_id(h), msg);
    }
}

/* Is `call` one of `allowed`? Otherwise record the refusal. */
static int in_call(struct peft_host *h, int allowed, const char *fn, const char *when) {
    if (h->call & allowed) return 1;
    refuse(h, PEFT_E_STATE, "%s is allowed %s only", fn, when);
    return 0;
}

static void api_sgemm(peft_host *h, int32_t trans_a, int32_t trans_b, uint32_t m, uint32_t n,
                      uint32_t k, float alpha, const float *a, uint32_t lda, const float *b,
                      uint32_t ldb, float beta, float *c, uint32_t ldc) {
    if (m == 0 || n == 0) return;
    /* Row-major: a stored matrix's row length is its column count. */
    uint32_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    if (!c || ldc < n || (k > 0 && (!a || !b || lda < a_cols || ldb < b_cols) )) {
        if (h)
            misbehaving(h, "sgemm: bad arguments (m %u n %u k %u lda %u ldb %u ldc %u)", m, n,
                        k, lda, ldb, ldc);
        return;
    }
    if (k == 0) { /* C = beta C; BLAS may reject k = 0 with these leading dimensions */
        for (uint32_t i = 0; i < m; i++)
            for (uint32_t j = 0; j < n; j++) c[(size_t)i * ldc + j] *= beta;
        return;
    }
    gemm_f32(trans_a != 0, trans_b != 0, (int32_t)m, (int32_t)n, (int32_t)k, alpha, a,
             (int32_t)lda, b, (int32_t)ldb, beta, c, (int32_t)ldc);
}

static void api_rng_uniform(peft_host *h, float *out, uint64_t n, float lo, float hi) {
    if (!h || !out) return;
    for (uint64_t i = 0; i < n; i++) out[i] = rng_uniform(&h->rng, lo, hi);
}

static void api_rng_normal(peft_host *h, float *out, uint64_t n, float mean, float std) {
    if (!h || !out) return;
    for (uint64_t i = 0; i < n; i++) out[i] = rng_normal(&h->rng, mean, std);
}

static uint64_t api_rng_u64(peft_host *h) { return h ? rng_next(&h->rng) : 0; }

static peft_status api_model_info(peft_host *h, peft_model_info *out) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!out) return refuse(h, PEFT_E_INVALID_ARG, "model_info: out is NULL");
    if (!PEFT_HAS_FIELD(out, peft_model_info, n_sites))
        return refuse(h, PEFT_E_ABI, "model_info: out->struct_size %u is too small (host: %zu)",
                      out->struct_size, sizeof *out);
    const struct model_config *c = &h->m->cfg;
    peft_model_info info = {
        .struct_size = out->struct_size,
        .n_layers = (uint32_t)c->n_layers,
        .d_model = (uint32_t)c->d_model,
        .n_heads = (uint32_t)c->n_heads,
        .n_kv_heads = (uint32_t)c->n_kv_heads,
        .head_dim = (uint32_t)c->head_dim,
        .d_ff = (uint32_t)c->d_ff,
        .vocab = (uint32_t)c->vocab,
        .n_sites = (uint32_t)h->m->n_sites,
    };
    *out = info;
    return PEFT_OK;
}

/* site_info.weight: an fp32 view, made for a site held in 16 bits unless the method reads
 * weights on request (peft_site_weight.h). */
static const float *weight_view(peft_host *h, int32_t site) {
    int32_t t = model_site_tensor(h->m, site);
    if (plugin_has_feature(h->pm, PEFT_FEATURE_WEIGHT_ON_REQUEST) && model_tensor_in_half(h->m, t))
        return NULL;
    return model_site_weight(h->m, site);
}

static peft_status api_site_info(peft_host *h, uint32_t site, peft_site_info *out) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!out) return refuse(h, PEFT_E_INVALID_ARG, "site_info: out is NULL");
    if (!PEFT_HAS_FIELD(out, peft_site_info, weight))
        return refuse(h, PEFT_E_ABI, "site_info: out->struct_size %u is too small (host: %zu)",
                      out->struct_size, sizeof *out);
    if (site >= (uint32_t)h->m->n_sites)
        return refuse(h, PEFT_E_INVALID_ARG, "site_info: site %u out of range (%d sites)", site,
                      h->m->n_sites);
    int32_t d_in, d_out;
    model_site_dims(h->m, (int32_t)site, &d_in, &d_out);
    peft_site_info info = {
        .struct_size = out->struct_size,
        .index = site,
        .layer = (uint32_t)model_site_layer((int32_t)site),
        .d_in = (uint32_t)d_in,
        .d_out = (uint32_t)d_out,
        .name = h->site_names[site],
        .kind = site_kind_names[model_site_kind((int32_t)site)],
        .weight = weight_view(h, (int32_t)site),
    };
    *out = info;
    return PEFT_OK;
}

static int name_ok(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f) return 0;
    return n > 0 && n < 200;
}

/* Check an ALIAS_BASE desc and find the model tensor it aliases. A name the model does not
 * have is PEFT_E_UNSUPPORTED, so a plugin can probe for optional tensors (an untied head). */
static peft_status alias_target(struct peft_host *h, const peft_tensor_desc *d, int32_t *out) {
    const struct model *m = h->m;
    int32_t mt;
    if (d->site >= 0) {
        mt = model_site_tensor(m, d->site);
    } else {
        mt = model_find_tensor(m, d->name);
        if (mt < 0)
            return refuse(h, PEFT_E_UNSUPPORTED, "tensor_register: the model has no tensor "
                          "'%s'", d->name);
    }
    const struct model_tensor *t = &m->tensors[mt];
    int same = (int32_t)d->ndim == t->ndim;
    for (int32_t i = 0; same && i < t->ndim; i++) same = (int64_t)d->shape[i] == t->shape[i];
    if (!same) {
        char a[64];
        snprintf(a, sizeof a, t->ndim > 1 ? "[%lld, %lld]" : "[%lld]", (long long)t->shape[0],
                 t->ndim > 1 ? (long long)t->shape[1] : 0LL);
        return refuse(h, PEFT_E_SHAPE, "tensor_register: '%s' aliases '%s' of shape %s; the "
                      "desc has another shape", d->name, t->name, a);
    }
    for (int32_t i = 0; i < h->n_tensors; i++) {
        const struct mtensor *o = &h->tensors[i];
        if (o->model_tensor >= 0 && m->tensors[o->model_tensor].offset == t->offset)
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s' aliases the same model "
                          "tensor as '%s'", d->name, o->name);
    }
    *out = mt;
    return PEFT_OK;
}

static peft_status api_tensor_register(peft_host *h, const peft_tensor_desc *d,
                                       peft_tensor_id *out) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!in_call(h, CALL_CREATE | CALL_ATTACH, "tensor_register", "in create and attach"))
        return PEFT_E_STATE;
    if (!d || !out) return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: desc or out is NULL");
    if (!PEFT_HAS_FIELD(d, peft_tensor_desc, lr_group))
        return refuse(h, PEFT_E_ABI, "tensor_register: desc.struct_size %u is too small "
                      "(host: %zu)", d->struct_size, sizeof *d);
    if (!d->name || !name_ok(d->name))
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: a name must be 1..199 printable "
                      "characters without spaces");
    const char *nm = d->name;
    if (strcmp(nm, "peft.state") == 0)
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: the name 'peft.state' is "
                      "reserved");
    for (int32_t i = 0; i < h->n_tensors; i++)
        if (strcmp(h->tensors[i].name, nm) == 0)
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s' is already registered",
                          nm);
    if (d->ndim < 1 || d->ndim > 4)
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': ndim %u is not in 1..4",
                      nm, d->ndim);
    uint64_t numel = 1;
    for (uint32_t i = 0; i < d->ndim; i++) {
        if (d->shape[i] == 0 || d->shape[i] > (1ull << 40) / numel)
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': dimension %u is %llu "
                          "(must be > 0, total below 2^40)", nm, i,
                          (unsigned long long)d->shape[i]);
        numel *= d->shape[i];
    }
    const uint32_t known = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY | PEFT_TENSOR_NEGATE |
                           PEFT_TENSOR_NO_SAVE | PEFT_TENSOR_ALIAS_BASE | PEFT_TENSOR_AVERAGE;
    if (d->flags & ~known)
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': unknown flags 0x%x", nm,
                      d->flags & ~known);
    if (d->site < -1 || d->site >= h->m->n_sites)
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': site %d out of range",
                      nm, d->site);
    if (!(d->lr >= 0.0f) || !isfinite(d->lr))
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': lr must be >= 0", nm);
    int32_t mt = -1;
    if (d->flags & PEFT_TENSOR_ALIAS_BASE) {
        peft_status st = alias_target(h, d, &mt);
        if (st != PEFT_OK) return st;
    } else {
        if (d->init < PEFT_INIT_ZERO || d->init > PEFT_INIT_NONE)
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': unknown init %d", nm,
                          d->init);
        if (!isfinite(d->init_a) || !isfinite(d->init_b) ||
            (d->init == PEFT_INIT_UNIFORM && d->init_a > d->init_b) ||
            (d->init == PEFT_INIT_NORMAL && d->init_b < 0.0f))
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_register: '%s': bad init parameters "
                          "(%g, %g)", nm, (double)d->init_a, (double)d->init_b);
    }
    if (h->n_tensors == h->cap_tensors) {
        h->cap_tensors = h->cap_tensors ? 2 * h->cap_tensors : 16;
        h->tensors = xrealloc(h->tensors, (size_t)h->cap_tensors * sizeof *h->tensors);
        h->prev_need_grad = xrealloc(h->prev_need_grad, (size_t)h->cap_tensors);
    }
    struct mtensor *t = &h->tensors[h->n_tensors];
    memset(t, 0, sizeof *t);
    /* One string holds the name and, after its NUL, the lr group. */
    const char *group = d->lr_group ? d->lr_group : "";
    size_t ln = strlen(nm), lg = strlen(group);
    t->name = xmalloc(ln + lg + 2);
    memcpy(t->name, nm, ln + 1);
    memcpy(t->name + ln + 1, group, lg + 1);
    t->desc = *d;
    t->desc.struct_size = (uint32_t)sizeof t->desc;
    t->desc.name = t->name;
    t->desc.lr_group = t->name + ln + 1;
    t->numel = numel;
    t->n_trainable = (d->flags & PEFT_TENSOR_TRAINABLE) ? numel : 0;
    t->model_tensor = mt;
    h->prev_need_grad[h->n_tensors] = 0;
    *out = (peft_tensor_id)h->n_tensors++;
    return PEFT_OK;
}

static peft_status check_id(struct peft_host *h, peft_tensor_id id, const char *fn) {
    if (id >= (uint32_t)h->n_tensors)
        return refuse(h, PEFT_E_INVALID_ARG, "%s: tensor id %u is not registered", fn, id);
    return PEFT_OK;
}

void bind_grad(struct peft_host *h, struct mtensor *t) {
    if (!(t->desc.flags & PEFT_TENSOR_TRAINABLE)) return;
    struct model *m = h->m;
    int32_t mt = t->model_tensor;
    if (mt >= 0 && !t->mask) {
        if (!m->grads) {
            model_alloc_grads(m); /* clears need_grad: set again below and by later tensors */
            h->made_model_grads = 1;
        }
        m->need_grad[mt] = 1;
        t->grad = m->grads + m->tensors[mt].offset;
        return;
    }
    t->grad = xalloc_floats(t->n_trainable ? t->n_trainable : 1);
    if (mt >= 0) { /* the model forms the compact gradient itself; no dense dW */
        m->need_grad[mt] = h->prev_need_grad[t - h->tensors];
        model_set_sparse_grad(m, mt, t->mask, t->n_trainable, t->grad);
    }
}

int grad_owned(const struct mtensor *t) { return t->grad && (t->model_tensor < 0 || t->mask); }

void release_model_grads(struct peft_host *h) {
    struct model *m = h->m;
    if (!h->made_model_grads || !m->grads) return;
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (m->need_grad[i]) return;
    model_free_grads(m);
    h->made_model_grads = 0;
}

void mask_apply(struct peft_host *h, struct mtensor *t, const uint64_t *index, uint64_t n) {
    if (grad_owned(t)) free(t->grad);
    t->grad = NULL;
    if (t->model_tensor >= 0 && t->start) {
        /* Compact the start value: an entry outside the old mask never changed, so its start
         * is its current value. Both index lists are sorted: one merge walk. */
        float *start = xalloc_floats(n ? n : 1);
        uint64_t k = 0;
        for (uint64_t j = 0; j < n; j++) {
            uint64_t at = index[j];
            if (!t->mask) {
                start[j] = t->start[at];
                continue;
            }
            while (k < t->n_trainable && t->mask[k] < at) k++;
            start[j] = k < t->n_trainable && t->mask[k] == at ? t->start[k] : t->data[at];
        }
        free(t->start);
        t->start = start;
    }
    free(t->mask);
    t->mask = xmalloc((n ? n : 1) * sizeof *t->mask);
    if (n) memcpy(t->mask, index, n * sizeof *t->mask);
    t->n_trainable = n;
    if (h->allocated) {
        bind_grad(h, t);
        release_model_grads(h); /* the last dense user may have gone */
    }
}

static peft_status api_tensor_set_mask(peft_host *h, peft_tensor_id id, const uint64_t *index,
                                       uint64_t n) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!in_call(h, CALL_CREATE | CALL_ATTACH | CALL_STAGE_BEGIN | CALL_STEP_END,
                 "tensor_set_mask", "in create, attach, stage_begin and step_end"))
        return PEFT_E_STATE;
    if (check_id(h, id, "tensor_set_mask")) return PEFT_E_INVALID_ARG;
    struct mtensor *t = &h->tensors[id];
    if (!(t->desc.flags & PEFT_TENSOR_TRAINABLE))
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_set_mask: '%s' is not trainable", t->name);
    if (n > 0 && !index) return refuse(h, PEFT_E_INVALID_ARG, "tensor_set_mask: index is NULL");
    /* Optimizer state exists from the first step on; only step_end may restart it. */
    if ((t->adam_m || t->adam_v) && h->call != CALL_STEP_END)
        return refuse(h, PEFT_E_STATE, "tensor_set_mask: '%s' already has optimizer state",
                      t->name);
    for (uint64_t i = 0; i < n; i++) {
        if (index[i] >= t->numel)
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_set_mask: '%s': index %llu out of "
                          "range (numel %llu)", t->name, (unsigned long long)index[i],
                          (unsigned long long)t->numel);
        if (i > 0 && index[i] <= index[i - 1])
            return refuse(h, PEFT_E_INVALID_ARG, "tensor_set_mask: '%s': indices must be "
                          "sorted and unique (position %llu)", t->name, (unsigned long long)i);
    }
    mask_apply(h, t, index, n);
    if (h->call == CALL_STEP_END) {
        /* Restart: fresh moments of the new size (kept in checkpoints as zeros), and AdamW's
         * bias correction counts the steps from here. */
        free(t->adam_m);
        free(t->adam_v);
        t->adam_m = xalloc_floats(n);
        t->adam_v = xalloc_floats(n);
        t->step0 = (int64_t)h->step;
    }
    return PEFT_OK;
}

static peft_status api_tensor_view(peft_host *h, peft_tensor_id id, peft_tensor_view *out) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!h->allocated)
        return refuse(h, PEFT_E_STATE, "tensor_view is allowed once tensors are allocated "
                      "(stage_begin and later)");
    if (!out) return refuse(h, PEFT_E_INVALID_ARG, "tensor_view: out is NULL");
    if (check_id(h, id, "tensor_view")) return PEFT_E_INVALID_ARG;
    const struct mtensor *t = &h->tensors[id];
    out->data = t->data;
    out->grad = t->grad;
    out->numel = t->numel;
    out->n_trainable = t->n_trainable;
    out->mask_index = t->mask;
    return PEFT_OK;
}

static peft_status api_tensor_origin(peft_host *h, peft_tensor_id id, uint32_t *out) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!h->allocated)
        return refuse(h, PEFT_E_STATE, "tensor_origin is allowed once tensors are allocated "
                      "(stage_begin and later)");
    if (!out) return refuse(h, PEFT_E_INVALID_ARG, "tensor_origin: out is NULL");
    if (check_id(h, id, "tensor_origin")) return PEFT_E_INVALID_ARG;
    *out = h->tensors[id].loaded ? PEFT_ORIGIN_LOADED : PEFT_ORIGIN_INIT;
    return PEFT_OK;
}

static uint32_t api_task_count(peft_host *h) {
    return h && h->env.tasks ? (uint32_t)h->env.tasks->n : 0;
}

static const char *api_task_name(peft_host *h, int32_t task) {
    if (!h || !h->env.tasks || task < 0 || task >= h->env.tasks->n) return NULL;
    return h->env.tasks->names[task];
}

static peft_status api_stage_tensor(peft_host *h, const char *stage, const char *name,
                                    float *out, uint64_t numel) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!in_call(h, CALL_CREATE | CALL_ATTACH | CALL_STAGE_BEGIN, "stage_tensor",
                 "in create, attach and stage_begin"))
        return PEFT_E_STATE;
    if (!stage || !name || !out)
        return refuse(h, PEFT_E_INVALID_ARG, "stage_tensor: NULL argument");
    if (!h->env.stage_tensor)
        return refuse(h, PEFT_E_UNSUPPORTED, "stage_tensor: this run keeps no stage outputs");
    if (h->env.stage_tensor(h->env.run_ctx, stage, name, out, numel) != 0)
        return refuse(h, PEFT_E_INVALID_ARG, "stage_tensor: %s", err_msg());
    return PEFT_OK;
}

static peft_status api_stage_delta(peft_host *h, const char *stage, uint32_t site, float *out) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!in_call(h, CALL_CREATE | CALL_ATTACH | CALL_STAGE_BEGIN, "stage_delta",
                 "in create, attach and stage_begin"))
        return PEFT_E_STATE;
    if (!stage || !out) return refuse(h, PEFT_E_INVALID_ARG, "stage_delta: NULL argument");
    if (site >= (uint32_t)h->m->n_sites)
        return refuse(h, PEFT_E_INVALID_ARG, "stage_delta: site %u out of range", site);
    if (!h->env.stage_delta)
        return refuse(h, PEFT_E_UNSUPPORTED, "stage_delta: this run keeps no stage outputs");
    if (h->env.stage_delta(h->env.run_ctx, stage, (int32_t)site, out) != 0)
        return refuse(h, PEFT_E_INVALID_ARG, "stage_delta: %s", err_msg());
    return PEFT_OK;
}

static peft_status api_run_pass(peft_host *h, uint32_t pass, uint32_t backward) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!in_call(h, CALL_BATCH_BEGIN, "run_pass", "in batch_begin")) return PEFT_E_STATE;
    if (pass == PEFT_PASS_MAIN)
        return refuse(h, PEFT_E_INVALID_ARG, "run_pass: pass must be > 0");
    if (!h->env.run_pass)
        return refuse(h, PEFT_E_UNSUPPORTED, "run_pass: auxiliary passes are not available "
                      "here");
    if (h->env.run_pass(h->env.run_ctx, pass, backward) != 0)
        return refuse(h, PEFT_E_INTERNAL, "run_pass: %s", err_msg());
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Extensions: peft.files/1 (peft_files.h), peft.tensor_start/1 (peft_tensor_start.h) and
 * peft.stage_tasks/1 (peft_stage_tasks.h).
 */

/* Open path and find name in it; on failure a status, its reason kept for the error line. */
static peft_status open_tensor(peft_host *h, const char *fn, const char *path, const char *name,
                               struct st_file *f, const struct st_tensor **t) {
    if (!path || !name) return refuse(h, PEFT_E_INVALID_ARG, "%s: NULL argument", fn);
    if (st_open(f, path) != 0) return refuse(h, PEFT_E_IO, "%s: %s", fn, err_msg());
    *t = st_find(f, name);
    if (!*t) {
        st_close(f);
        return refuse(h, PEFT_E_INVALID_ARG, "%s: %s: no tensor '%s'", fn, path, name);
    }
    return PEFT_OK;
}

static peft_status files_tensor_numel(peft_host *h, const char *path, const char *name,
                                      uint64_t *numel) {
    if (!h || !numel) return PEFT_E_INVALID_ARG;
    struct st_file f;
    const struct st_tensor *t;
    peft_status st = open_tensor(h, "tensor_numel", path, name, &f, &t);
    if (st != PEFT_OK) return st;
    *numel = t->numel;
    st_close(&f);
    return PEFT_OK;
}

static peft_status files_read(peft_host *h, const char *fn, const char *path, const char *name,
                              void *out, uint64_t numel, int index) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!out && numel) return refuse(h, PEFT_E_INVALID_ARG, "%s: out is NULL", fn);
    struct st_file f;
    const struct st_tensor *t;
    peft_status st = open_tensor(h, fn, path, name, &f, &t);
    if (st != PEFT_OK) return st;
    if (t->numel != numel) {
        st = refuse(h, PEFT_E_SHAPE, "%s: %s: tensor '%s' has %llu entries, %llu asked", fn,
                    path, name, (unsigned long long)t->numel, (unsigned long long)numel);
    } else {
        int rc = index ? read_index_tensor(&f, t, out, numel) : st_read_f32(&f, t, out, numel);
        if (rc != 0) st = refuse(h, PEFT_E_IO, "%s: %s", fn, err_msg());
    }
    st_close(&f);
    return st;
}

static peft_status files_read_f32(peft_host *h, const char *path, const char *name, float *out,
                                  uint64_t numel) {
    return files_read(h, "read_f32", path, name, out, numel, 0);
}

static peft_status files_read_index(peft_host *h, const char *path, const char *name,
                                    uint64_t *out, uint64_t numel) {
    return files_read(h, "read_index", path, name, out, numel, 1);
}

static peft_status files_stage_file(peft_host *h, const char *stage, char *out, uint64_t cap) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!stage || !out || cap == 0)
        return refuse(h, PEFT_E_INVALID_ARG, "stage_file: NULL argument or no room");
    if (!h->env.stage_file)
        return refuse(h, PEFT_E_UNSUPPORTED, "stage_file: this run keeps no stage outputs");
    if (h->env.stage_file(h->env.run_ctx, stage, out, (size_t)cap) != 0)
        return refuse(h, PEFT_E_INVALID_ARG, "stage_file: %s", err_msg());
    return PEFT_OK;
}

static const peft_files_api files_api = {
    .struct_size = (uint32_t)sizeof(peft_files_api),
    .tensor_numel = files_tensor_numel,
    .read_f32 = files_read_f32,
    .read_index = files_read_index,
    .stage_file = files_stage_file,
};

static peft_status start_of(peft_host *h, peft_tensor_id id, const float **out, uint64_t *n) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!out || !n) return refuse(h, PEFT_E_INVALID_ARG, "tensor_start: out or n is NULL");
    if (!h->allocated)
        return refuse(h, PEFT_E_STATE, "tensor_start is allowed once tensors are allocated "
                      "(stage_begin and later)");
    if (check_id(h, id, "tensor_start")) return PEFT_E_INVALID_ARG;
    const struct mtensor *t = &h->tensors[id];
    if (t->model_tensor < 0)
        return refuse(h, PEFT_E_UNSUPPORTED, "tensor_start: '%s' is not ALIAS_BASE", t->name);
    *out = t->start;
    *n = t->mask ? t->n_trainable : t->numel;
    return PEFT_OK;
}

static const peft_tensor_start_api tensor_start_api = {
    .struct_size = (uint32_t)sizeof(peft_tensor_start_api),
    .start = start_of,
};

/* ---- peft.stage_tasks/1 --------------------------------------------------------------- */

static peft_status stage_train_tasks(peft_host *h, const int32_t **ids, uint32_t *n) {
    if (!h || !ids || !n) return PEFT_E_INVALID_ARG;
    if (!h->env.train_tasks) return refuse(h, PEFT_E_UNSUPPORTED, "stage_tasks: not known here");
    *ids = h->env.train_tasks;
    *n = (uint32_t)h->env.n_train_tasks;
    return PEFT_OK;
}

static const peft_stage_tasks_api stage_tasks_api = {
    .struct_size = (uint32_t)sizeof(peft_stage_tasks_api),
    .train_tasks = stage_train_tasks,
};

/* ---- peft.stage_keys/1 ---------------------------------------------------------------- */

static peft_status stage_key_value(peft_host *h, const char *stage, const char *key, char *out,
                                   size_t cap) {
    if (!h || !key || !out || cap == 0) return PEFT_E_INVALID_ARG;
    if (!h->env.stage_value) return PEFT_E_CONFIG;
    int rc = h->env.stage_value(h->env.run_ctx, stage ? stage : h->env.stage, key, out, cap);
    return rc == 0 ? PEFT_OK : rc > 0 ? PEFT_E_CONFIG : PEFT_E_INVALID_ARG;
}

static const peft_stage_keys_api stage_keys_api = {
    .struct_size = (uint32_t)sizeof(peft_stage_keys_api),
    .stage_value = stage_key_value,
};

static peft_status site_weight_widen(peft_host *h, uint32_t site, float *out, uint64_t numel) {
    if (!h || !out) return PEFT_E_INVALID_ARG;
    if (site >= (uint32_t)h->m->n_sites)
        return refuse(h, PEFT_E_INVALID_ARG, "site_weight: site %u out of range (%d sites)", site,
                      h->m->n_sites);
    int32_t t = model_site_tensor(h->m, (int32_t)site);
    if (numel != h->m->tensors[t].numel)
        return refuse(h, PEFT_E_INVALID_ARG, "site_weight: numel %llu, the weight has %zu",
                      (unsigned long long)numel, h->m->tensors[t].numel);
    model_tensor_read(h->m, t, out);
    return PEFT_OK;
}

static const peft_site_weight_api site_weight_api = {
    .struct_size = (uint32_t)sizeof(peft_site_weight_api),
    .widen = site_weight_widen,
};

static const void *api_get_extension(peft_host *h, const char *id) {
    if (!id) return NULL;
    if (strcmp(id, PEFT_SITE_WEIGHT_EXTENSION) == 0) return &site_weight_api;
    if (strcmp(id, PEFT_FILES_EXTENSION) == 0) return &files_api;
    if (strcmp(id, PEFT_TENSOR_START_EXTENSION) == 0) return &tensor_start_api;
    if (strcmp(id, PEFT_STAGE_TASKS_EXTENSION) == 0 && h && h->env.train_tasks) return &stage_tasks_api;
    if (strcmp(id, PEFT_STAGE_KEYS_EXTENSION) == 0 && h && h->env.stage_value) return &stage_keys_api;
    return NULL;
}

static const peft_host_api host_api = {
    .abi_version = PEFT_ABI_VERSION,
    .struct_size = (uint32_t)sizeof(peft_host_api),
    .log = api_log,
    .sgemm = api_sgemm,
    .rng_uniform = api_rng_uniform,
    .rng_normal = api_rng_normal,
    .rng_u64 = api_rng_u64,
    .model_info = api_model_info,
    .site_info = api_site_info,
    .tensor_register = api_tensor_register,
    .tensor_set_mask = api_tensor_set_mask,
    .tensor_view = api_tensor_view,
    .task_count = api_task_count,
    .task_name = api_task_name,
    .stage_tensor = api_stage_tensor,
    .stage_delta = api_stage_delta,
    .run_pass = api_run_pass,
    .get_extension = api_get_extension,
    .tensor_origin = api_tensor_origin,
};

const peft_host_api *host_api_table(void) { return &host_api; }

