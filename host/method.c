/*
 * method.c: the host side of the plugin ABI for one method instance in one stage.
 *
 * A method_run owns a `struct peft_host` (what the host API functions see: the model, the
 * run's environment, the registered tensors, the instance's random stream) plus the state of
 * hook dispatch (the current batch, activation caches per pass and site).
 *
 * Errors. Every call into the plugin is bracketed by call_begin/call_end. During the call the
 * ERROR lines the plugin logs are collected; if the call fails, the error line becomes
 * "WHERE: ID: <those lines>", e.g. "conf/x.ini [stage.adapt]: lora: r must be > 0, got 0".
 * When the host refuses an API call it records why; that reason is used when the plugin
 * itself logged nothing.
 *
 * Lifecycle. Host API functions check which plugin entry is running (tensor_register only in
 * create/attach, tensor_set_mask up to stage_begin, run_pass only in batch_begin, ...) and
 * answer PEFT_E_STATE outside it.
 *
 * ALIAS_BASE tensors. Their data is the model's parameter storage; their gradient is the
 * model's own (m->grads, with m->need_grad set), so the model's backward computes it. With a
 * mask the model still forms the dense gradient; method_run_collect_grads copies the masked
 * entries into the compact gradient the optimizer reads.
 *
 * Optimizer state (adam_m, adam_v) is allocated by the optimizer and freed here, with the
 * tensor.
 */
#include "method.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

/* Which plugin entry is running; host API calls check it. Bits so that "allowed in" is a
 * mask. */
enum {
    CALL_NONE = 0,
    CALL_CREATE = 1 << 0,
    CALL_ATTACH = 1 << 1,
    CALL_STAGE_BEGIN = 1 << 2,
    CALL_BATCH_BEGIN = 1 << 3,
    CALL_OTHER = 1 << 4, /* hooks, task_begin, step_end, delta, state, ... */
};

struct peft_host {
    struct model *m;
    const struct plugin_method *pm;
    const peft_method_vtable *vt;
    peft_instance *inst;
    struct method_env env;     /* copy; where/stage point at our own strings */
    struct rng rng;            /* the instance's stream: rng_seed_label(seed, "method:STAGE") */
    struct mtensor *tensors;
    uint8_t *prev_need_grad;   /* per tensor: the model's need_grad before we aliased it */
    int32_t n_tensors, cap_tensors;
    int allocated;             /* tensors have storage */
    char (*site_names)[96];    /* (n_sites) kept alive for site_info */
    int call;                  /* CALL_* of the running entry, CALL_NONE between calls */
    int misbehaved;            /* a contract violation during the current call */
    char reason[1024];         /* ERROR lines logged during the current outermost call */
    char api_reason[512];      /* why the host last refused an API call */
};

struct act_buf {
    float *p;
    uint64_t cap;
    int32_t n_rows;            /* rows of the forward that filled it; -1 = none */
};

struct hook_ctx {
    struct method_run *mr;
    uint32_t training;
};

struct method_run {
    struct peft_host h;        /* first member: (struct method_run *)h is the run */
    int32_t *sites;            /* (n_sites) attached sites, ascending */
    int32_t n_sites;
    int32_t *slot_of_site;     /* (model n_sites) index into sites, or -1 */
    /* The current batch, copied so the caller may reuse its buffers. */
    int has_batch;
    peft_batch_info binfo;
    int32_t *tokens, *example_task, *prompt_len;
    int32_t cap_rows, cap_batch;
    int32_t *row_task;         /* (n_rows) example_task expanded per row */
    int32_t row_task_n;        /* rows row_task was built for */
    uint32_t row_seq;
    struct act_buf **acts;     /* acts[pass][slot] */
    uint32_t n_pass;
    struct hook_ctx hctx[2];   /* [training] */
    struct model_hooks hooks[2];
    int merged;                /* after method_run_merge the site hooks no longer dispatch */
};

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

static const char *method_id(const struct peft_host *h) { return h->pm->desc->id; }

/* ------------------------------------------------------------------------------------------
 * Calls into the plugin.
 */

static void append_line(char *buf, size_t cap, const char *msg) {
    size_t n = strlen(buf);
    if (n + 3 >= cap) return;
    snprintf(buf + n, cap - n, "%s%s", n ? "; " : "", msg);
}

static int call_begin(struct peft_host *h, int kind) {
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
static int call_end(struct peft_host *h, int prev, peft_status st, const char *what) {
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
static void misbehaving(struct peft_host *h, const char *fmt, ...) PEFT_PRINTF(2, 3);
static void misbehaving(struct peft_host *h, const char *fmt, ...) {
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

static void api_log(peft_host *h, int32_t level, const char *msg) {
    if (!msg) return;
    if (!h) {
        if (level >= PEFT_LOG_WARN) fprintf(stderr, "peft: plugin: %s\n", msg);
        return;
    }
    if (level >= PEFT_LOG_ERROR) {
        append_line(h->reason, sizeof h->reason, msg);
    } else if (level == PEFT_LOG_WARN) {
        fprintf(stderr, "peft: %s: %s: warning: %s\n", h->env.where, method_id(h), msg);
    } else if (level == PEFT_LOG_INFO || getenv("PEFT_DEBUG")) {
        fprintf(stderr, "peft: %s: %s: %s\n", h->env.where, method_id(h), msg);
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
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
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
        .weight = model_site_weight(h->m, (int32_t)site),
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

/* Give a trainable tensor its gradient storage (after allocation, or after a new mask). */
static void bind_grad(struct peft_host *h, struct mtensor *t) {
    if (!(t->desc.flags & PEFT_TENSOR_TRAINABLE)) return;
    if (t->model_tensor >= 0 && !t->mask) {
        t->grad = h->m->grads + h->m->tensors[t->model_tensor].offset;
    } else {
        t->grad = xalloc_floats(t->n_trainable ? t->n_trainable : 1);
    }
}

static int grad_owned(const struct mtensor *t) { return t->grad && (t->model_tensor < 0 || t->mask); }

static peft_status api_tensor_set_mask(peft_host *h, peft_tensor_id id, const uint64_t *index,
                                       uint64_t n) {
    if (!h) return PEFT_E_INVALID_ARG;
    if (!in_call(h, CALL_CREATE | CALL_ATTACH | CALL_STAGE_BEGIN, "tensor_set_mask",
                 "in create, attach and stage_begin"))
        return PEFT_E_STATE;
    if (check_id(h, id, "tensor_set_mask")) return PEFT_E_INVALID_ARG;
    struct mtensor *t = &h->tensors[id];
    if (!(t->desc.flags & PEFT_TENSOR_TRAINABLE))
        return refuse(h, PEFT_E_INVALID_ARG, "tensor_set_mask: '%s' is not trainable", t->name);
    if (n > 0 && !index) return refuse(h, PEFT_E_INVALID_ARG, "tensor_set_mask: index is NULL");
    if (t->adam_m || t->adam_v)
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
    if (grad_owned(t)) free(t->grad);
    t->grad = NULL;
    free(t->mask);
    t->mask = xmalloc((n ? n : 1) * sizeof *t->mask);
    if (n) memcpy(t->mask, index, n * sizeof *t->mask);
    t->n_trainable = n;
    if (h->allocated) bind_grad(h, t);
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

static const void *api_get_extension(peft_host *h, const char *id) {
    (void)h;
    (void)id;
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
};

const peft_host_api *host_api_table(void) { return &host_api; }

/* ------------------------------------------------------------------------------------------
 * Creation: create, site matching, attach, allocation and initialization.
 */

static int has_param(const peft_method_desc *d, const char *key) {
    for (uint32_t i = 0; i < d->n_params; i++)
        if (strcmp(d->params[i].name, key) == 0) return 1;
    return 0;
}

/* HF PEFT list matching: a word equals the site's kind or its full name, or the name ends
 * with "." + word; "all-linear" matches every site. */
static int site_matches(const struct peft_host *h, int32_t site, const char *word) {
    if (strcmp(word, "all-linear") == 0) return 1;
    const char *name = h->site_names[site];
    if (strcmp(site_kind_names[model_site_kind(site)], word) == 0) return 1;
    if (strcmp(name, word) == 0) return 1;
    size_t ln = strlen(name), lw = strlen(word);
    return ln > lw && name[ln - lw - 1] == '.' && strcmp(name + ln - lw, word) == 0;
}

static int attach_site(struct method_run *mr, int32_t site) {
    mr->sites[mr->n_sites] = site;
    mr->slot_of_site[site] = mr->n_sites++;
    return 0;
}

static int call_attach(struct method_run *mr, int32_t site, peft_status *st) {
    struct peft_host *h = &mr->h;
    int prev = call_begin(h, CALL_ATTACH);
    *st = h->vt->attach(h->inst, (uint32_t)site);
    char what[128];
    snprintf(what, sizeof what, "attach to %s", h->site_names[site]);
    return call_end(h, prev, *st, what);
}

static int match_and_attach(struct method_run *mr, const peft_kv *cfg, uint32_t n_cfg) {
    struct peft_host *h = &mr->h;
    int32_t n = h->m->n_sites;
    peft_status st;
    if (!has_param(h->pm->desc, "target_modules")) {
        /* Every site is offered; PEFT_E_UNSUPPORTED declines it. */
        for (int32_t s = 0; s < n; s++) {
            if (call_attach(mr, s, &st) == 0) attach_site(mr, s);
            else if (st != PEFT_E_UNSUPPORTED) return -1;
        }
        err_clear();
        return 0;
    }
    const char *tm = peft_kv_get(cfg, n_cfg, "target_modules");
    struct words w;
    words_split(&w, tm ? tm : "");
    if (w.n == 0) {
        words_free(&w);
        return err_set("%s: target_modules is empty", h->env.where);
    }
    for (int i = 0; i < w.n; i++) {
        int any = 0;
        for (int32_t s = 0; s < n && !any; s++) any = site_matches(h, s, w.v[i]);
        if (!any) {
            char kinds[160] = "";
            for (int k = 0; k < SITE_KINDS; k++)
                append_line(kinds, sizeof kinds, site_kind_names[k]);
            for (char *p = kinds; *p; p++) if (*p == ';') *p = ',';
            err_set("%s: target_modules '%s' matches no site of the model (sites are %s)",
                    h->env.where, w.v[i], kinds);
            words_free(&w);
            return -1;
        }
    }
    for (int32_t s = 0; s < n; s++) {
        int hit = 0;
        for (int i = 0; i < w.n && !hit; i++) hit = site_matches(h, s, w.v[i]);
        if (!hit) continue;
        if (call_attach(mr, s, &st) != 0) {
            words_free(&w);
            return -1;
        }
        attach_site(mr, s);
    }
    words_free(&w);
    return 0;
}

static void init_tensor(struct peft_host *h, struct mtensor *t) {
    const peft_tensor_desc *d = &t->desc;
    float *x = t->data;
    switch (d->init) {
    case PEFT_INIT_UNIFORM:
        for (uint64_t i = 0; i < t->numel; i++) x[i] = rng_uniform(&h->rng, d->init_a, d->init_b);
        break;
    case PEFT_INIT_NORMAL:
        for (uint64_t i = 0; i < t->numel; i++) x[i] = rng_normal(&h->rng, d->init_a, d->init_b);
        break;
    case PEFT_INIT_CONST:
        for (uint64_t i = 0; i < t->numel; i++) x[i] = d->init_a;
        break;
    default: /* ZERO and NONE: xalloc_floats zeroed it */
        break;
    }
}

static void allocate_tensors(struct peft_host *h) {
    struct model *m = h->m;
    for (int32_t i = 0; i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (t->model_tensor >= 0) {
            const struct model_tensor *mt = &m->tensors[t->model_tensor];
            t->data = m->params + mt->offset;
            t->start = xalloc_floats(t->numel);
            memcpy(t->start, t->data, t->numel * sizeof(float));
            if (t->desc.flags & PEFT_TENSOR_TRAINABLE) {
                if (!m->grads) model_alloc_grads(m);
                h->prev_need_grad[i] = m->need_grad[t->model_tensor];
                m->need_grad[t->model_tensor] = 1;
            }
        } else {
            t->data = xalloc_floats(t->numel);
            init_tensor(h, t);
        }
        bind_grad(h, t);
    }
    h->allocated = 1;
}

int method_run_create(struct method_run **out, const struct plugin_method *pm, struct model *m,
                      const struct method_env *env, const peft_kv *cfg, uint32_t n_cfg) {
    *out = NULL;
    struct method_run *mr = xcalloc(1, sizeof *mr);
    struct peft_host *h = &mr->h;
    h->m = m;
    h->pm = pm;
    h->vt = pm->desc->vt;
    h->env = *env;
    h->env.where = xstrdup(env->where ? env->where : pm->desc->id);
    h->env.stage = xstrdup(env->stage ? env->stage : "");
    char *label = xasprintf("method:%s", h->env.stage);
    rng_seed_label(&h->rng, env->seed, label);
    free(label);
    h->site_names = xcalloc((size_t)m->n_sites, sizeof *h->site_names);
    for (int32_t s = 0; s < m->n_sites; s++)
        model_site_name(m, s, h->site_names[s], sizeof h->site_names[s]);
    mr->sites = xcalloc((size_t)m->n_sites + 1, sizeof *mr->sites);
    mr->slot_of_site = xmalloc(((size_t)m->n_sites + 1) * sizeof *mr->slot_of_site);
    for (int32_t s = 0; s < m->n_sites; s++) mr->slot_of_site[s] = -1;
    for (int i = 0; i < 2; i++) mr->hctx[i] = (struct hook_ctx){mr, (uint32_t)i};

    /* cfg plus "stage" (unless the caller passed it). */
    peft_kv *all = xmalloc(((size_t)n_cfg + 1) * sizeof *all);
    if (n_cfg) memcpy(all, cfg, n_cfg * sizeof *all);
    uint32_t n_all = n_cfg;
    if (!peft_kv_get(cfg, n_cfg, "stage")) all[n_all++] = (peft_kv){"stage", h->env.stage};

    peft_instance *inst = NULL;
    int prev = call_begin(h, CALL_CREATE);
    peft_status st = h->vt->create(&host_api, h, all, n_all, &inst);
    if (st == PEFT_OK && !inst) {
        misbehaving(h, "create returned PEFT_OK without an instance");
        st = PEFT_E_ABI;
    }
    free(all);
    if (call_end(h, prev, st, NULL) != 0) {
        method_run_free(mr);
        return -1;
    }
    h->inst = inst;
    if (match_and_attach(mr, cfg, n_cfg) != 0) {
        method_run_free(mr);
        return -1;
    }
    allocate_tensors(h);
    for (int i = 0; i < 2; i++) {
        struct model_hooks *k = &mr->hooks[i];
        k->ctx = &mr->hctx[i];
        k->pass = PEFT_PASS_MAIN;
    }
    *out = mr;
    return 0;
}

void method_run_free(struct method_run *mr) {
    if (!mr) return;
    struct peft_host *h = &mr->h;
    if (h->inst) h->vt->destroy(h->inst);
    for (int32_t i = 0; i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (grad_owned(t)) free(t->grad);
        if (t->model_tensor >= 0) {
            if (h->allocated && (t->desc.flags & PEFT_TENSOR_TRAINABLE))
                h->m->need_grad[t->model_tensor] = h->prev_need_grad[i];
        } else {
            free(t->data);
        }
        free(t->start);
        free(t->mask);
        free(t->adam_m);
        free(t->adam_v);
        free(t->name);
    }
    free(h->tensors);
    free(h->prev_need_grad);
    free(h->site_names);
    free((char *)h->env.where);
    free((char *)h->env.stage);
    for (uint32_t p = 0; p < mr->n_pass; p++) {
        if (!mr->acts[p]) continue;
        for (int32_t s = 0; s < mr->n_sites; s++) free(mr->acts[p][s].p);
        free(mr->acts[p]);
    }
    free(mr->acts);
    free(mr->sites);
    free(mr->slot_of_site);
    free(mr->tokens);
    free(mr->example_task);
    free(mr->prompt_len);
    free(mr->row_task);
    free(mr);
}

/* ------------------------------------------------------------------------------------------
 * Accessors.
 */

int32_t method_run_tensor_count(const struct method_run *mr) { return mr->h.n_tensors; }
struct mtensor *method_run_tensor(struct method_run *mr, int32_t i) { return &mr->h.tensors[i]; }
const struct plugin_method *method_run_plugin(const struct method_run *mr) { return mr->h.pm; }
int32_t method_run_site_count(const struct method_run *mr) { return mr->n_sites; }
int32_t method_run_site(const struct method_run *mr, int32_t i) { return mr->sites[i]; }
struct rng *method_run_rng(struct method_run *mr) { return &mr->h.rng; }

uint64_t method_run_trainable_count(const struct method_run *mr) {
    uint64_t n = 0;
    for (int32_t i = 0; i < mr->h.n_tensors; i++) n += mr->h.tensors[i].n_trainable;
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Lifecycle calls.
 */

int method_run_begin(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    if (!h->vt->stage_begin) return 0;
    int prev = call_begin(h, CALL_STAGE_BEGIN);
    return call_end(h, prev, h->vt->stage_begin(h->inst), "stage_begin");
}

int method_run_task_begin(struct method_run *mr, int32_t task) {
    struct peft_host *h = &mr->h;
    if (!h->vt->task_begin) return 0;
    int prev = call_begin(h, CALL_OTHER);
    return call_end(h, prev, h->vt->task_begin(h->inst, task), "task_begin");
}

/* row_task for n_rows rows: the batch's own (n_rows = B*T), or re-expanded for a pass over
 * the same examples with another length (generation). */
static int rows_for(struct method_run *mr, int32_t n_rows, const int32_t **row_task,
                    uint32_t *seq) {
    uint32_t B = mr->binfo.batch;
    if (!mr->has_batch || B == 0)
        return err_set("%s: %s: site hook called before method_run_batch_begin",
                       mr->h.env.where, method_id(&mr->h));
    if (n_rows <= 0 || (uint32_t)n_rows % B != 0)
        return err_set("%s: %s: site hook with %d rows for a batch of %u examples",
                       mr->h.env.where, method_id(&mr->h), n_rows, B);
    if (mr->row_task_n != n_rows) {
        if (n_rows > mr->cap_rows) {
            mr->cap_rows = n_rows;
            mr->row_task = xrealloc(mr->row_task, (size_t)n_rows * sizeof *mr->row_task);
        }
        uint32_t T = (uint32_t)n_rows / B;
        for (int32_t i = 0; i < n_rows; i++) mr->row_task[i] = mr->example_task[(uint32_t)i / T];
        mr->row_task_n = n_rows;
        mr->row_seq = T;
    }
    *row_task = mr->row_task;
    *seq = mr->row_seq;
    return 0;
}

int method_run_batch_begin(struct method_run *mr, const struct batch *b, int training,
                           uint64_t step) {
    struct peft_host *h = &mr->h;
    size_t rows = (size_t)b->B * (size_t)b->T;
    mr->tokens = xrealloc(mr->tokens, (rows ? rows : 1) * sizeof *mr->tokens);
    mr->example_task = xrealloc(mr->example_task, ((size_t)b->B + 1) * sizeof(int32_t));
    mr->prompt_len = xrealloc(mr->prompt_len, ((size_t)b->B + 1) * sizeof(int32_t));
    if (rows) memcpy(mr->tokens, b->tokens, rows * sizeof *mr->tokens);
    if (b->B) {
        memcpy(mr->example_task, b->example_task, (size_t)b->B * sizeof(int32_t));
        memcpy(mr->prompt_len, b->prompt_len, (size_t)b->B * sizeof(int32_t));
    }
    mr->binfo = (peft_batch_info){
        .struct_size = (uint32_t)sizeof(peft_batch_info),
        .batch = (uint32_t)b->B,
        .seq = (uint32_t)b->T,
        .training = training ? 1u : 0u,
        .tokens = mr->tokens,
        .example_task = mr->example_task,
        .prompt_len = mr->prompt_len,
        .step = step,
    };
    mr->has_batch = 1;
    mr->row_task_n = -1;
    const int32_t *rt;
    uint32_t seq;
    if (rows && rows_for(mr, (int32_t)rows, &rt, &seq) != 0) return -1;
    if (!h->vt->batch_begin) return 0;
    int prev = call_begin(h, CALL_BATCH_BEGIN);
    return call_end(h, prev, h->vt->batch_begin(h->inst, &mr->binfo), "batch_begin");
}

int method_run_step_end(struct method_run *mr, uint64_t step) {
    struct peft_host *h = &mr->h;
    if (!h->vt->step_end) return 0;
    int prev = call_begin(h, CALL_OTHER);
    return call_end(h, prev, h->vt->step_end(h->inst, step), "step_end");
}

int method_run_end(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    if (!h->vt->stage_end) return 0;
    int prev = call_begin(h, CALL_OTHER);
    return call_end(h, prev, h->vt->stage_end(h->inst), "stage_end");
}

void method_run_zero_grads(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    for (int32_t i = 0; i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (!t->grad) continue;
        memset(t->grad, 0, t->n_trainable * sizeof(float));
        if (t->model_tensor >= 0 && t->mask)
            memset(h->m->grads + h->m->tensors[t->model_tensor].offset, 0,
                   t->numel * sizeof(float));
    }
}

void method_run_collect_grads(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    for (int32_t i = 0; i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (!t->grad || t->model_tensor < 0 || !t->mask) continue;
        const float *dense = h->m->grads + h->m->tensors[t->model_tensor].offset;
        for (uint64_t j = 0; j < t->n_trainable; j++) t->grad[j] = dense[t->mask[j]];
    }
}

/* ------------------------------------------------------------------------------------------
 * Hooks.
 */

static struct act_buf *act_slot(struct method_run *mr, uint32_t pass, int32_t slot) {
    if (pass >= mr->n_pass) {
        mr->acts = xrealloc(mr->acts, ((size_t)pass + 1) * sizeof *mr->acts);
        for (uint32_t p = mr->n_pass; p <= pass; p++) mr->acts[p] = NULL;
        mr->n_pass = pass + 1;
    }
    if (!mr->acts[pass]) {
        mr->acts[pass] = xcalloc((size_t)mr->n_sites + 1, sizeof **mr->acts);
        for (int32_t s = 0; s < mr->n_sites; s++) mr->acts[pass][s].n_rows = -1;
    }
    return &mr->acts[pass][slot];
}

static int hook_site_forward(void *ctx, uint32_t pass, int32_t site, const float *x, float *y,
                             int32_t n_rows) {
    struct hook_ctx *hc = ctx;
    struct method_run *mr = hc->mr;
    struct peft_host *h = &mr->h;
    if (site < 0 || site >= h->m->n_sites || mr->slot_of_site[site] < 0 || mr->merged) return 0;
    const int32_t *row_task;
    uint32_t seq;
    if (rows_for(mr, n_rows, &row_task, &seq) != 0) return -1;
    struct act_buf *ab = act_slot(mr, pass, mr->slot_of_site[site]);
    uint64_t need = 0;
    int prev = call_begin(h, CALL_OTHER);
    if (h->vt->act_floats) need = h->vt->act_floats(h->inst, (uint32_t)site, (uint32_t)n_rows);
    if (need > ab->cap) {
        free(ab->p);
        ab->p = xalloc_floats(need);
        ab->cap = need;
    }
    ab->n_rows = n_rows;
    peft_forward_io io = {
        .struct_size = (uint32_t)sizeof io,
        .site = (uint32_t)site,
        .pass = pass,
        .training = hc->training,
        .n_rows = (uint32_t)n_rows,
        .seq = seq,
        .x = x,
        .y = y,
        .row_task = row_task,
        .acts = need ? ab->p : NULL,
    };
    peft_status st = h->vt->forward(h->inst, &io);
    char what[128];
    snprintf(what, sizeof what, "forward at %s", h->site_names[site]);
    return call_end(h, prev, st, what);
}

static int hook_site_backward(void *ctx, uint32_t pass, int32_t site, const float *x,
                              const float *dy, float *dx, int32_t n_rows) {
    struct hook_ctx *hc = ctx;
    struct method_run *mr = hc->mr;
    struct peft_host *h = &mr->h;
    if (site < 0 || site >= h->m->n_sites || mr->slot_of_site[site] < 0 || mr->merged) return 0;
    const int32_t *row_task;
    uint32_t seq;
    if (rows_for(mr, n_rows, &row_task, &seq) != 0) return -1;
    struct act_buf *ab = act_slot(mr, pass, mr->slot_of_site[site]);
    if (ab->n_rows != n_rows)
        return err_set("%s: %s: backward at %s without its forward (pass %u)", h->env.where,
                       method_id(h), h->site_names[site], pass);
    peft_backward_io io = {
        .struct_size = (uint32_t)sizeof io,
        .site = (uint32_t)site,
        .pass = pass,
        .n_rows = (uint32_t)n_rows,
        .seq = seq,
        .x = x,
        .dy = dy,
        .dx = dx,
        .row_task = row_task,
        .acts = ab->p,
    };
    int prev = call_begin(h, CALL_OTHER);
    peft_status st = h->vt->backward(h->inst, &io);
    char what[128];
    snprintf(what, sizeof what, "backward at %s", h->site_names[site]);
    return call_end(h, prev, st, what);
}

static int hook_hidden_forward(void *ctx, uint32_t pass, const float *hs, int32_t n_rows,
                               float *loss) {
    struct method_run *mr = ((struct hook_ctx *)ctx)->mr;
    struct peft_host *h = &mr->h;
    peft_hidden_io io = {
        .struct_size = (uint32_t)sizeof io,
        .pass = pass,
        .n_rows = (uint32_t)n_rows,
        .d_model = (uint32_t)h->m->cfg.d_model,
        .batch = &mr->binfo,
        .h = hs,
        .dh = NULL,
        .loss = loss,
    };
    int prev = call_begin(h, CALL_OTHER);
    return call_end(h, prev, h->vt->hidden_forward(h->inst, &io), "hidden_forward");
}

static int hook_hidden_backward(void *ctx, uint32_t pass, const float *hs, float *dh,
                                int32_t n_rows) {
    struct method_run *mr = ((struct hook_ctx *)ctx)->mr;
    struct peft_host *h = &mr->h;
    peft_hidden_io io = {
        .struct_size = (uint32_t)sizeof io,
        .pass = pass,
        .n_rows = (uint32_t)n_rows,
        .d_model = (uint32_t)h->m->cfg.d_model,
        .batch = &mr->binfo,
        .h = hs,
        .dh = dh,
        .loss = NULL,
    };
    int prev = call_begin(h, CALL_OTHER);
    return call_end(h, prev, h->vt->hidden_backward(h->inst, &io), "hidden_backward");
}

const struct model_hooks *method_run_hooks(struct method_run *mr, int training) {
    const peft_method_vtable *vt = mr->h.vt;
    struct model_hooks *k = &mr->hooks[training ? 1 : 0];
    /* Members stay NULL where the plugin has no entry, so the model skips them. */
    k->site_forward = vt->forward ? hook_site_forward : NULL;
    k->site_backward = vt->forward && vt->backward ? hook_site_backward : NULL;
    k->hidden_forward = vt->hidden_forward ? hook_hidden_forward : NULL;
    k->hidden_backward = vt->hidden_backward ? hook_hidden_backward : NULL;
    return k;
}

/* ------------------------------------------------------------------------------------------
 * Adapter files.
 */

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

static void shape_text(char *out, size_t cap, uint32_t ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(out, cap, "[");
    for (uint32_t i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(out + n, cap - n, "]");
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
            shape_text(a, sizeof a, (uint32_t)s->ndim, s->shape);
            shape_text(b, sizeof b, t->desc.ndim, want);
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

/* ------------------------------------------------------------------------------------------
 * Arithmetic: deltas, merge, negation.
 */

static int site_check(struct method_run *mr, int32_t site) {
    if (site < 0 || site >= mr->h.m->n_sites)
        return err_set("%s: %s: site %d out of range (%d sites)", mr->h.env.where,
                       method_id(&mr->h), site, mr->h.m->n_sites);
    return 0;
}

/* The plugin's own part of dW at an attached site: out += scale * dW. */
static int plugin_delta(struct method_run *mr, int32_t site, float scale, float *out) {
    struct peft_host *h = &mr->h;
    if (!h->vt->delta_weight) {
        if (!h->vt->forward) return 0; /* no hook: its only changes are aliased tensors */
        return err_set("%s: %s: no delta_weight: the method's change at a site is not a fixed "
                       "weight", h->env.where, method_id(h));
    }
    int prev = call_begin(h, CALL_OTHER);
    char what[128];
    snprintf(what, sizeof what, "delta_weight at %s", h->site_names[site]);
    return call_end(h, prev, h->vt->delta_weight(h->inst, (uint32_t)site, scale, out), what);
}

int method_run_delta(struct method_run *mr, int32_t site, float scale, float *out) {
    struct peft_host *h = &mr->h;
    if (site_check(mr, site)) return -1;
    int32_t mt = model_site_tensor(h->m, site);
    for (int32_t i = 0; i < h->n_tensors; i++) {
        const struct mtensor *t = &h->tensors[i];
        if (t->model_tensor != mt) continue;
        for (uint64_t j = 0; j < t->numel; j++) out[j] += scale * (t->data[j] - t->start[j]);
    }
    if (mr->slot_of_site[site] < 0) return 0;
    return plugin_delta(mr, site, scale, out);
}

int method_run_merge(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    if (!h->vt->delta_weight && h->vt->forward)
        return err_set("%s: %s: not mergeable (no delta_weight)", h->env.where, method_id(h));
    if (!h->vt->delta_weight) { /* aliased tensors only: already live */
        mr->merged = 1;
        return 0;
    }
    for (int32_t i = 0; i < mr->n_sites; i++) {
        int32_t site = mr->sites[i], d_in, d_out;
        model_site_dims(h->m, site, &d_in, &d_out);
        size_t n = (size_t)d_in * (size_t)d_out;
        float *w = model_site_weight(h->m, site);
        float *tmp = xalloc_floats(n);
        if (plugin_delta(mr, site, 1.0f, tmp) != 0) {
            /* Take back what was merged, so a refused merge leaves the model as it was. */
            for (int32_t k = 0; k < i; k++) {
                int32_t s = mr->sites[k];
                model_site_dims(h->m, s, &d_in, &d_out);
                memset(tmp, 0, sizeof(float) * (size_t)d_in * (size_t)d_out);
                char keep[1024];
                snprintf(keep, sizeof keep, "%s", err_msg());
                if (plugin_delta(mr, s, -1.0f, tmp) == 0) {
                    float *ws = model_site_weight(h->m, s);
                    for (size_t j = 0; j < (size_t)d_in * (size_t)d_out; j++) ws[j] += tmp[j];
                }
                err_set("%s", keep);
            }
            free(tmp);
            return -1;
        }
        for (size_t j = 0; j < n; j++) w[j] += tmp[j];
        free(tmp);
    }
    mr->merged = 1;
    return 0;
}

int method_run_negate(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    if (h->vt->negate) {
        int prev = call_begin(h, CALL_OTHER);
        return call_end(h, prev, h->vt->negate(h->inst), "negate");
    }
    int any = 0;
    for (int32_t i = 0; i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (!(t->desc.flags & PEFT_TENSOR_NEGATE)) continue;
        any = 1;
        if (t->model_tensor >= 0) { /* negate the task vector: start - (data - start) */
            for (uint64_t j = 0; j < t->numel; j++)
                t->data[j] = t->start[j] - (t->data[j] - t->start[j]);
        } else {
            for (uint64_t j = 0; j < t->numel; j++) t->data[j] = -t->data[j];
        }
    }
    if (!any)
        return err_set("%s: %s: cannot negate (no negate() and no tensor flagged NEGATE)",
                       h->env.where, method_id(h));
    return 0;
}
