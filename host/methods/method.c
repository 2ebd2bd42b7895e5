/*
 * method.c: one method instance in one stage, driven by the host: creation (create, site
 * matching, attach, allocation and initialization of the registered tensors), the lifecycle
 * calls, the model hooks that dispatch to the plugin, and arithmetic (delta, merge, negate).
 *
 * A method_run owns a `struct peft_host` (what the host API functions see, method_api.c)
 * plus the state of hook dispatch: the current batch, copied, and activation caches per pass
 * and site. Optimizer state (adam_m, adam_v) is allocated by the optimizer and freed here,
 * with the tensor. Adapter files are in method_file.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "method_internal.h"

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

static void attach_site(struct method_run *mr, int32_t site) {
    mr->sites[mr->n_sites] = site;
    mr->slot_of_site[site] = mr->n_sites++;
}

/* Forget tensors registered from index n on (a declined attach registers nothing). */
static void drop_tensors_from(struct peft_host *h, int32_t n) {
    while (h->n_tensors > n) {
        struct mtensor *t = &h->tensors[--h->n_tensors];
        free(t->mask);
        free(t->name);
    }
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
            int32_t before = h->n_tensors;
            if (call_attach(mr, s, &st) == 0) {
                attach_site(mr, s);
            } else if (st == PEFT_E_UNSUPPORTED) {
                drop_tensors_from(h, before);
            } else {
                return -1;
            }
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
                snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%s",
                         k ? ", " : "", site_kind_names[k]);
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
        for (uint64_t i = 0; i < t->numel; i++) x[i] = rng_uniform(&h->init_rng, d->init_a, d->init_b);
        break;
    case PEFT_INIT_NORMAL:
        for (uint64_t i = 0; i < t->numel; i++) x[i] = rng_normal(&h->init_rng, d->init_a, d->init_b);
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
    uint64_t fp = HASH_FNV1A_BASIS;
    int drawn = 0;
    for (int32_t i = 0; i < h->n_tensors; i++) {
        struct mtensor *t = &h->tensors[i];
        if (t->model_tensor >= 0) {
            t->data = model_tensor_data(m, t->model_tensor); /* trained or written: fp32 */
            /* With a mask already set, only the trainable entries can ever change. */
            if (t->mask) {
                t->start = xalloc_floats(t->n_trainable);
                for (uint64_t j = 0; j < t->n_trainable; j++) t->start[j] = t->data[t->mask[j]];
            } else {
                t->start = xalloc_floats(t->numel);
                memcpy(t->start, t->data, t->numel * sizeof(float));
            }
            if (t->desc.flags & PEFT_TENSOR_TRAINABLE)
                h->prev_need_grad[i] = m->need_grad[t->model_tensor];
        } else {
            t->data = xalloc_floats(t->numel);
            init_tensor(h, t);
            if (t->desc.init == PEFT_INIT_UNIFORM || t->desc.init == PEFT_INIT_NORMAL) {
                fp = hash_fnv1a(fp, t->name, strlen(t->name) + 1);
                fp = hash_fnv1a(fp, t->data, t->numel * sizeof(float));
                drawn = 1;
            }
        }
        bind_grad(h, t);
    }
    h->init_fp = drawn ? (fp ? fp : 1) : 0;
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
    label = xasprintf("init:%s", pm->desc->id);
    rng_seed_label(&h->init_rng, env->init_seed, label);
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
    peft_status st = h->vt->create(host_api_table(), h, all, n_all, &inst);
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
    mr->step_share = 1.0f;
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
            if (h->allocated && (t->desc.flags & PEFT_TENSOR_TRAINABLE)) {
                h->m->need_grad[t->model_tensor] = h->prev_need_grad[i];
                if (t->mask) model_set_sparse_grad(h->m, t->model_tensor, NULL, 0, NULL);
            }
        } else {
            free(t->data);
        }
        free(t->start);
        free(t->mask);
        free(t->adam_m);
        free(t->adam_v);
        free(t->name);
    }
    release_model_grads(h);
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
    free(mr->label_task);
    free(mr->label_masked);
    free(mr->x_in);
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
int method_run_sees_batches(const struct method_run *mr) {
    const peft_method_vtable *vt = mr->h.vt;
    return vt->batch_begin || vt->hidden_forward || vt->hidden_backward;
}
int32_t method_run_site(const struct method_run *mr, int32_t i) { return mr->sites[i]; }
struct rng *method_run_rng(struct method_run *mr) { return &mr->h.rng; }
uint64_t method_run_init_fingerprint(const struct method_run *mr) { return mr->h.init_fp; }
void method_run_set_init_fingerprint(struct method_run *mr, uint64_t fp) { mr->h.init_fp = fp; }

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
    mr->has_labels = b->label_task != NULL;
    if (mr->has_labels) {
        mr->label_task = xrealloc(mr->label_task, ((size_t)b->B + 1) * sizeof(int32_t));
        mr->label_masked = xrealloc(mr->label_masked, (size_t)b->B + 1);
        if (b->B) memcpy(mr->label_task, b->label_task, (size_t)b->B * sizeof(int32_t));
        memset(mr->label_masked, 0, (size_t)b->B + 1);
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
        .label_task = mr->has_labels ? mr->label_task : NULL,
        .label_masked = mr->has_labels ? mr->label_masked : NULL,
        .step_share = training ? mr->step_share : 1.0f,
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

void method_run_set_step_share(struct method_run *mr, double share) {
    mr->step_share = (float)share;
}

const uint8_t *method_run_label_masked(const struct method_run *mr) {
    return mr->has_batch && mr->has_labels ? mr->label_masked : NULL;
}

int method_run_step_end(struct method_run *mr, uint64_t step) {
    struct peft_host *h = &mr->h;
    if (!h->vt->step_end) return 0;
    h->step = step; /* a mask set now restarts optimizer state from this step */
    int prev = call_begin(h, CALL_STEP_END);
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
    }
}

void method_run_collect_grads(struct method_run *mr) { (void)mr; }

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

/* The plugin's input hook, when it has one and the site is attached: x copied into the run's
 * buffer, which the plugin rewrites. */
static int input_hooked(const struct method_run *mr, int32_t site) {
    const peft_method_vtable *vt = mr->h.vt;
    return PEFT_HAS_FIELD(vt, peft_method_vtable, input_forward) && vt->input_forward &&
           site >= 0 && site < mr->h.m->n_sites && mr->slot_of_site[site] >= 0 && !mr->merged;
}

static const float *hook_site_input(void *ctx, uint32_t pass, int32_t site, const float *x,
                                    int32_t n_rows) {
    struct hook_ctx *hc = ctx;
    struct method_run *mr = hc->mr;
    struct peft_host *h = &mr->h;
    if (!input_hooked(mr, site)) return x;
    const int32_t *row_task;
    uint32_t seq;
    if (rows_for(mr, n_rows, &row_task, &seq) != 0) return NULL;
    int32_t d_in, d_out;
    model_site_dims(h->m, site, &d_in, &d_out);
    size_t n = (size_t)n_rows * (size_t)d_in;
    if (n > mr->x_in_cap) {
        free(mr->x_in);
        mr->x_in = xalloc_floats(n);
        mr->x_in_cap = n;
    }
    memcpy(mr->x_in, x, n * sizeof *x);
    peft_input_io io = {
        .struct_size = (uint32_t)sizeof io,
        .site = (uint32_t)site,
        .pass = pass,
        .training = hc->training,
        .n_rows = (uint32_t)n_rows,
        .seq = seq,
        .x = x,
        .x_out = mr->x_in,
        .row_task = row_task,
    };
    int prev = call_begin(h, CALL_OTHER);
    char what[128];
    snprintf(what, sizeof what, "input_forward at %s", h->site_names[site]);
    return call_end(h, prev, h->vt->input_forward(h->inst, &io), what) ? NULL : mr->x_in;
}

static int hook_site_input_backward(void *ctx, uint32_t pass, int32_t site, const float *x,
                                    float *dx, int32_t n_rows) {
    struct hook_ctx *hc = ctx;
    struct method_run *mr = hc->mr;
    struct peft_host *h = &mr->h;
    if (!input_hooked(mr, site)) return 0;
    const int32_t *row_task;
    uint32_t seq;
    if (rows_for(mr, n_rows, &row_task, &seq) != 0) return -1;
    peft_input_io io = {
        .struct_size = (uint32_t)sizeof io,
        .site = (uint32_t)site,
        .pass = pass,
        .training = hc->training,
        .n_rows = (uint32_t)n_rows,
        .seq = seq,
        .x = x,
        .dx = dx,
        .row_task = row_task,
    };
    int prev = call_begin(h, CALL_OTHER);
    char what[128];
    snprintf(what, sizeof what, "input_backward at %s", h->site_names[site]);
    return call_end(h, prev, h->vt->input_backward(h->inst, &io), what);
}

/* Both hidden-state hooks: the forward fills *loss (dh NULL), the backward dh (loss NULL). */
static int call_hidden(void *ctx, int backward, uint32_t pass, const float *hs, int32_t n_rows,
                       float *dh, float *loss) {
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
        .loss = loss,
    };
    int prev = call_begin(h, CALL_OTHER);
    peft_status st = backward ? h->vt->hidden_backward(h->inst, &io)
                              : h->vt->hidden_forward(h->inst, &io);
    return call_end(h, prev, st, backward ? "hidden_backward" : "hidden_forward");
}

static int hook_hidden_forward(void *ctx, uint32_t pass, const float *hs, int32_t n_rows,
                               float *loss) {
    return call_hidden(ctx, 0, pass, hs, n_rows, NULL, loss);
}

static int hook_hidden_backward(void *ctx, uint32_t pass, const float *hs, float *dh,
                                int32_t n_rows) {
    return call_hidden(ctx, 1, pass, hs, n_rows, dh, NULL);
}

const struct model_hooks *method_run_hooks(struct method_run *mr, int training) {
    const peft_method_vtable *vt = mr->h.vt;
    struct model_hooks *k = &mr->hooks[training ? 1 : 0];
    /* Members stay NULL where the plugin has no entry, so the model skips them. */
    k->site_forward = vt->forward ? hook_site_forward : NULL;
    k->site_backward = vt->forward && vt->backward ? hook_site_backward : NULL;
    k->hidden_forward = vt->hidden_forward ? hook_hidden_forward : NULL;
    k->hidden_backward = vt->hidden_backward ? hook_hidden_backward : NULL;
    int has_input = PEFT_HAS_FIELD(vt, peft_method_vtable, input_forward) && vt->input_forward;
    k->site_input = has_input ? hook_site_input : NULL;
    k->site_input_backward = has_input ? hook_site_input_backward : NULL;
    return k;
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
        if (t->mask) { /* the other entries equal their start value */
            for (uint64_t j = 0; j < t->n_trainable; j++)
                out[t->mask[j]] += scale * (t->data[t->mask[j]] - t->start[j]);
        } else {
            for (uint64_t j = 0; j < t->numel; j++) out[j] += scale * (t->data[j] - t->start[j]);
        }
    }
    if (mr->slot_of_site[site] < 0) return 0;
    return plugin_delta(mr, site, scale, out);
}

int method_run_merge(struct method_run *mr) {
    struct peft_host *h = &mr->h;
    if (!h->vt->delta_weight && h->vt->forward)
        return err_set("%s: %s: not mergeable (no delta_weight)", h->env.where, method_id(h));
    if (h->vt->delta_weight) {
        size_t cap = 0;
        for (int32_t i = 0; i < mr->n_sites; i++) {
            int32_t d_in, d_out;
            model_site_dims(h->m, mr->sites[i], &d_in, &d_out);
            if ((size_t)d_in * (size_t)d_out > cap) cap = (size_t)d_in * (size_t)d_out;
        }
        float *tmp = xalloc_floats(cap ? cap : 1);
        /* Two passes: every site's delta is asked for before any weight changes, so a
         * refusal leaves the model as it was. */
        for (int pass = 0; pass < 2; pass++) {
            for (int32_t i = 0; i < mr->n_sites; i++) {
                int32_t site = mr->sites[i], d_in, d_out;
                model_site_dims(h->m, site, &d_in, &d_out);
                size_t n = (size_t)d_in * (size_t)d_out;
                memset(tmp, 0, n * sizeof(float));
                if (plugin_delta(mr, site, 1.0f, tmp) != 0) {
                    free(tmp);
                    return -1;
                }
                if (pass == 0) continue;
                float *w = model_site_weight(h->m, site);
                for (size_t j = 0; j < n; j++) w[j] += tmp[j];
            }
        }
        free(tmp);
    }
    mr->merged = 1; /* aliased tensors are live already; hooks stop adding from here on */
    return 0;
}

int method_run_can_negate(const struct method_run *mr) {
    const struct peft_host *h = &mr->h;
    if (h->vt->negate) return 1;
    for (int32_t i = 0; i < h->n_tensors; i++)
        if (h->tensors[i].desc.flags & PEFT_TENSOR_NEGATE) return 1;
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
        if (t->model_tensor >= 0 && t->mask) { /* the task vector lives at the mask only */
            for (uint64_t j = 0; j < t->n_trainable; j++) {
                float *w = &t->data[t->mask[j]];
                *w = t->start[j] - (*w - t->start[j]);
            }
        } else if (t->model_tensor >= 0) { /* negate the task vector: start - (data - start) */
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
