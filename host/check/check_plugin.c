/* check_plugin.c: `peft check` (see check.h): the runs of a method and their checks. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/core.h"
#include "methods/methods.h"

enum { B = 3, T = 6, MAX_ENTRIES = 2000, MAX_KEYS = 64 };

#define FD_STEP 1e-2
/* The fp32 logits leave ~3e-5 of noise in a fourth-order difference with step 1e-2, while
 * its truncation error stays below that for weights of std 0.3. Two bounds: per entry, the
 * relative error with gradients below ABS_FLOOR counted as absolute; per tensor, the largest
 * error over the largest gradient. */
#define REL_TOL 2e-2
#define ABS_FLOOR 1e-2
#define NORM_TOL 1e-2
/* A tensor whose gradients are all below the noise / NORM_TOL (a gate's, which is second
 * order in the adapter: ~1e-3 here) is held to that noise in absolute terms instead. */
#define NORM_SCALE_FLOOR 3e-3
/* The step is halved, up to twice, where the gradient and the difference disagree by more
 * than this: at a sharply curved point (a tied head, rslora, dropout) the step's truncation
 * error exceeds the tolerance; smaller steps converge to a right gradient, never a wrong one. */
#define REFINE_TOL 5e-3

struct checker {
    FILE *out;
    const char *label; /* "lora defaults", "loratrf variant filter=f2", ... */
    int passed, failed;
};

static void verdict(struct checker *ck, int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(ck->out, "%s %s: ", ok ? "ok  " : "FAIL", ck->label);
    vfprintf(ck->out, fmt, ap);
    fputc('\n', ck->out);
    va_end(ap);
    if (ok) ck->passed++;
    else ck->failed++;
}

/* ---- a method's keys --------------------------------------------------------------------- */

struct keys {
    peft_kv kv[MAX_KEYS];
    char *val[MAX_KEYS];
    uint32_t n;
};

static void keys_set(struct keys *k, const char *key, const char *value) {
    for (uint32_t i = 0; i < k->n; i++)
        if (strcmp(k->kv[i].key, key) == 0) {
            free(k->val[i]);
            k->kv[i].value = k->val[i] = xstrdup(value);
            return;
        }
    if (k->n == MAX_KEYS) return;
    k->val[k->n] = xstrdup(value);
    k->kv[k->n] = (peft_kv){key, k->val[k->n]};
    k->n++;
}

static const char *keys_get(const struct keys *k, const char *key) {
    for (uint32_t i = 0; i < k->n; i++)
        if (strcmp(k->kv[i].key, key) == 0) return k->val[i];
    return NULL;
}

static void keys_free(struct keys *k) {
    for (uint32_t i = 0; i < k->n; i++) free(k->val[i]);
    k->n = 0;
}

static int has_key(const peft_method_desc *d, const char *key) {
    for (uint32_t i = 0; i < d->n_params; i++)
        if (strcmp(d->params[i].name, key) == 0) return 1;
    return 0;
}

/* ---- one run: a model, a batch, an instance ------------------------------------------------ */

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

static void run_free(struct run *r) {
    method_run_free(r->mr);
    model_acts_free(r->a);
    model_free(&r->m);
    free(r->base);
    check_batch_free(&r->b);
    task_table_free(&r->tasks);
}

static int run_setup(struct run *r, int tied, const struct plugin_method *pm, const struct keys *k) {
    memset(r, 0, sizeof *r);
    if (check_tiny_model(&r->m, tied, 11, 0.3f) != 0) return -1;
    r->base = xalloc_floats(r->m.n_params);
    memcpy(r->base, r->m.params, r->m.n_params * sizeof(float));
    r->a = model_acts_new();
    check_mixed_batch(&r->b, B, T, r->m.cfg.vocab, 5);
    task_table_id(&r->tasks, "reverse");
    task_table_id(&r->tasks, "add");
    /* Model gradients exist before the method: the embedding's gradient checks dx. */
    model_alloc_grads(&r->m);
    r->m.need_grad[model_find_tensor(&r->m, "model.embed_tokens.weight")] = 1;
    struct method_env env = {.tasks = &r->tasks, .seed = 1234, .init_seed = 1234,
                             .stage = "check", .where = "peft check"};
    if (method_run_create(&r->mr, pm, &r->m, &env, k->kv, k->n) != 0) return -1;
    if (method_run_begin(r->mr) != 0 || method_run_batch_begin(r->mr, &r->b, 1, 0) != 0) return -1;
    return 0;
}

/* Forward with hooks (NULL: the bare model); the precise loss, NAN when the forward fails. */
static double forward(struct run *r, struct model *m, struct model_acts *a,
                      const struct model_hooks *hk) {
    float loss;
    if (model_forward(m, a, r->b.tokens, r->b.targets, r->b.B, r->b.T, hk, &loss) != 0) return NAN;
    return check_loss_from_logits(m, a, &r->b);
}

static size_t n_logits(const struct run *r) { return (size_t)B * T * r->m.cfg.vocab; }

/* 1. A fresh instance changes nothing. */
static int check_noop(struct checker *ck, struct run *r) {
    size_t n = n_logits(r);
    float *bare = xmalloc(n * sizeof(float));
    int same = !isnan(forward(r, &r->m, r->a, NULL));
    if (same) memcpy(bare, model_logits(r->a), n * sizeof(float));
    for (int training = 0; training < 2 && same; training++) {
        same = !isnan(forward(r, &r->m, r->a, method_run_hooks(r->mr, training)));
        same = same && memcmp(bare, model_logits(r->a), n * sizeof(float)) == 0;
    }
    free(bare);
    verdict(ck, same, "a fresh instance leaves the logits bit-identical%s",
            same ? "" : " (it changes them, or a forward failed)");
    return 0;
}

/* 2. Small random values in every trainable tensor (LoRA's B != 0, full's task vector != 0). */
static void randomize(struct run *r) {
    struct rng g;
    rng_seed(&g, 77);
    for (int32_t i = 0; i < method_run_tensor_count(r->mr); i++) {
        struct mtensor *t = method_run_tensor(r->mr, i);
        if (!(t->desc.flags & PEFT_TENSOR_TRAINABLE)) continue;
        float amp = t->model_tensor >= 0 ? 0.05f : 0.2f;
        for (uint64_t k = 0; k < t->n_trainable; k++) {
            uint64_t at = t->mask ? t->mask[k] : k;
            t->data[at] += rng_uniform(&g, -amp, amp);
        }
    }
}

/* ---- the inputs a plugin must leave alone --------------------------------------------------- */

/* Hooks around the method's: each site's x (forward) and x and dy (backward) are compared
 * before and after the plugin's call; a plugin writes y, dx and its own gradients only. */
struct guard {
    const struct model_hooks *inner;
    struct model_hooks hooks;
    const struct model *m;
    int64_t calls, touched;
    int32_t first_site; /* the first site where an input changed, -1 */
};

static int guard_changed(const float *p, const float *copy, size_t n) {
    return memcmp(p, copy, n * sizeof *p) != 0;
}

static int guard_forward(void *ctx, uint32_t pass, int32_t site, const float *x, float *y,
                         int32_t n_rows) {
    struct guard *g = ctx;
    int32_t d_in, d_out;
    model_site_dims(g->m, site, &d_in, &d_out);
    size_t nx = (size_t)n_rows * d_in;
    float *keep = xmalloc(nx * sizeof *keep);
    memcpy(keep, x, nx * sizeof *keep);
    int rc = g->inner->site_forward(g->inner->ctx, pass, site, x, y, n_rows);
    g->calls++;
    if (guard_changed(x, keep, nx)) {
        g->touched++;
        if (g->first_site < 0) g->first_site = site;
    }
    free(keep);
    return rc;
}

static int guard_backward(void *ctx, uint32_t pass, int32_t site, const float *x,
                          const float *dy, float *dx, int32_t n_rows) {
    struct guard *g = ctx;
    int32_t d_in, d_out;
    model_site_dims(g->m, site, &d_in, &d_out);
    size_t nx = (size_t)n_rows * d_in, ny = (size_t)n_rows * d_out;
    float *keep = xmalloc((nx + ny) * sizeof *keep);
    memcpy(keep, x, nx * sizeof *keep);
    memcpy(keep + nx, dy, ny * sizeof *keep);
    int rc = g->inner->site_backward(g->inner->ctx, pass, site, x, dy, dx, n_rows);
    g->calls++;
    if (guard_changed(x, keep, nx) || guard_changed(dy, keep + nx, ny)) {
        g->touched++;
        if (g->first_site < 0) g->first_site = site;
    }
    free(keep);
    return rc;
}

/* The hidden-state hooks share the one ctx: passed through to the method's. */
static int guard_hidden_forward(void *ctx, uint32_t pass, const float *h, int32_t n_rows,
                                float *loss) {
    struct guard *g = ctx;
    return g->inner->hidden_forward(g->inner->ctx, pass, h, n_rows, loss);
}

static int guard_hidden_backward(void *ctx, uint32_t pass, const float *h, float *dh,
                                 int32_t n_rows) {
    struct guard *g = ctx;
    return g->inner->hidden_backward(g->inner->ctx, pass, h, dh, n_rows);
}

static const struct model_hooks *guard_wrap(struct guard *g, const struct model *m,
                                            const struct model_hooks *inner) {
    *g = (struct guard){.inner = inner, .m = m, .first_site = -1};
    g->hooks = *inner;
    g->hooks.ctx = g;
    g->hooks.site_forward = inner->site_forward ? guard_forward : NULL;
    g->hooks.site_backward = inner->site_backward ? guard_backward : NULL;
    g->hooks.hidden_forward = inner->hidden_forward ? guard_hidden_forward : NULL;
    g->hooks.hidden_backward = inner->hidden_backward ? guard_hidden_backward : NULL;
    if (!inner->site_forward && !inner->site_backward) return inner; /* no site hooks to watch */
    return &g->hooks;
}

/* ---- 2 and 3: gradients against central differences ---------------------------------------- */

static double loss_at(struct run *r) {
    *method_run_rng(r->mr) = r->stream; /* dropout masks repeat */
    return forward(r, &r->m, r->a, r->hk);
}

static double fd_step(struct run *r, float *p, double h) {
    float saved = *p;
    double v[4];
    const double steps[4] = {h, -h, 2 * h, -2 * h};
    for (int i = 0; i < 4; i++) {
        *p = (float)(saved + steps[i]);
        v[i] = loss_at(r);
    }
    *p = saved;
    return (8.0 * (v[0] - v[1]) - (v[2] - v[3])) / (12.0 * h);
}

static double fd(struct run *r, float *p, double grad, int *refined) {
    double h = FD_STEP, want = fd_step(r, p, h);
    for (int k = 0; k < 2; k++) {
        double den = fmax(fmax(fabs(grad), fabs(want)), ABS_FLOOR);
        if (fabs(grad - want) <= REFINE_TOL * den) break;
        if (k == 0) (*refined)++;
        h /= 2;
        want = fd_step(r, p, h);
    }
    return want;
}

/* Error statistics over entries, plus per tensor the largest error over its largest |fd|,
 * and the tensors where the worst of each was seen. */
struct grad_err {
    size_t count;
    double max_abs, max_rel;
    double t_abs, t_scale;
    double max_norm;
    const char *worst_rel, *worst_norm;
};

static void grad_err_add(struct grad_err *e, double got, double want, const char *name) {
    double a = fabs(got - want), rel = a / fmax(fmax(fabs(got), fabs(want)), ABS_FLOOR);
    e->count++;
    if (!(a <= e->max_abs)) e->max_abs = a;    /* a NaN sticks */
    if (!(rel <= e->max_rel)) {
        e->max_rel = rel;
        e->worst_rel = name;
    }
    if (!(a <= e->t_abs)) e->t_abs = a;
    e->t_scale = fmax(e->t_scale, fabs(want));
}

static void grad_err_tensor(struct grad_err *e, const char *name) {
    double norm = e->t_abs / fmax(e->t_scale, NORM_SCALE_FLOOR);
    if (!(norm <= e->max_norm)) {
        e->max_norm = norm;
        e->worst_norm = name;
    }
    e->t_abs = e->t_scale = 0.0;
}

static int grad_err_ok(const struct grad_err *e) {
    return e->count > 0 && e->max_rel < REL_TOL && e->max_norm < NORM_TOL;
}

/* Up to MAX_ENTRIES distinct positions of [0, n), one per stratum. */
static uint64_t sample(struct rng *g, uint64_t n, uint64_t k, uint64_t i) {
    if (n <= k) return i;
    return (n * i) / k + rng_below(g, n / k);
}

static int check_grads(struct checker *ck, struct run *r) {
    method_run_zero_grads(r->mr);
    model_zero_grads(&r->m);
    r->stream = *method_run_rng(r->mr);
    struct guard watch;
    r->hk = guard_wrap(&watch, &r->m, method_run_hooks(r->mr, 1));
    if (isnan(loss_at(r)) || model_backward(&r->m, r->a, r->hk) != 0) {
        verdict(ck, 0, "the training pass failed: %s", err_msg());
        return -1;
    }
    char where[160] = "";
    if (watch.first_site >= 0) model_site_name(&r->m, watch.first_site, where, sizeof where);
    verdict(ck, watch.touched == 0, "inputs left alone: x in %lld site forwards and backwards, dy "
            "in the backwards%s%s", (long long)watch.calls,
            watch.touched ? "; changed first at " : "", where);
    r->hk = method_run_hooks(r->mr, 1);
    method_run_collect_grads(r->mr);
    struct rng g;
    rng_seed(&g, 99);
    struct grad_err e = {0};
    int refined = 0;
    for (int32_t i = 0; i < method_run_tensor_count(r->mr); i++) {
        struct mtensor *t = method_run_tensor(r->mr, i);
        if (!t->grad) continue;
        uint64_t k = t->n_trainable < MAX_ENTRIES ? t->n_trainable : MAX_ENTRIES;
        for (uint64_t s = 0; s < k; s++) {
            uint64_t j = sample(&g, t->n_trainable, k, s);
            uint64_t at = t->mask ? t->mask[j] : j;
            grad_err_add(&e, t->grad[j], fd(r, &t->data[at], t->grad[j], &refined), t->name);
        }
        grad_err_tensor(&e, t->name);
    }
    verdict(ck, grad_err_ok(&e),
            "parameter gradients against central differences: %zu entries (%d at a smaller "
            "step), max rel err %.3g (%s), max err / max |grad| of a tensor %.3g (%s); bounds %g "
            "and %g", e.count, refined, e.max_rel, e.worst_rel ? e.worst_rel : "-", e.max_norm,
            e.worst_norm ? e.worst_norm : "-", REL_TOL, NORM_TOL);

    /* The embedding: dL/dx through every site. */
    int32_t emb = model_find_tensor(&r->m, "model.embed_tokens.weight");
    const struct model_tensor *mt = &r->m.tensors[emb];
    float *w = r->m.params + mt->offset, *gw = r->m.grads + mt->offset;
    struct grad_err ex = {0};
    double gmax = 0.0;
    refined = 0;
    for (size_t j = 0; j < mt->numel; j++) {
        grad_err_add(&ex, gw[j], fd(r, &w[j], gw[j], &refined), "embed_tokens");
        gmax = fmax(gmax, fabs(gw[j]));
    }
    grad_err_tensor(&ex, "embed_tokens");
    verdict(ck, gmax > 1e-3 && grad_err_ok(&ex),
            "input gradients (dx, seen at embed_tokens) against central differences: %zu entries, "
            "max |grad| %.3g, max rel err %.3g, max err / max |grad| %.3g", ex.count, gmax,
            ex.max_rel, ex.max_norm);
    return 0;
}

/* ---- 4: negation ------------------------------------------------------------------------- */

/* Whether the method has a dense delta, asked at its first site; a refusal must come with a
 * reason, from a method that does not claim "mergeable". */
static int probe_mergeable(struct checker *ck, struct run *r) {
    if (method_run_site_count(r->mr) == 0) return 1;
    int32_t site = method_run_site(r->mr, 0), d_in, d_out;
    model_site_dims(&r->m, site, &d_in, &d_out);
    float *d = xalloc_floats((size_t)d_in * d_out);
    int ok = method_run_delta(r->mr, site, 1.0f, d) == 0;
    free(d);
    if (ok) return 1;
    int claims = plugin_has_feature(method_run_plugin(r->mr), PEFT_FEATURE_MERGEABLE);
    verdict(ck, !claims && err_msg()[0], "delta_weight refused (%s)%s", err_msg(),
            claims ? ", yet the method claims '" PEFT_FEATURE_MERGEABLE "'" : "");
    return 0;
}

/* What the method changes at a site: its dense delta (d_out, d_in), or else its site hook's
 * addition to y = x W^T (B*T, d_out) in evaluation for a fixed random x; *y_max is then the
 * largest |x W^T|. NULL when the method fails. */
static float *site_change(struct run *r, int32_t site, int mergeable, size_t *n_out,
                          double *y_max) {
    int32_t d_in, d_out, n = B * T;
    model_site_dims(&r->m, site, &d_in, &d_out);
    *y_max = 0.0;
    if (mergeable) {
        *n_out = (size_t)d_in * d_out;
        float *d = xalloc_floats(*n_out);
        if (method_run_delta(r->mr, site, 1.0f, d) == 0) return d;
        free(d);
        return NULL;
    }
    *n_out = (size_t)n * d_out;
    float *x = xmalloc((size_t)n * d_in * sizeof(float)); /* (n, d_in) */
    float *y0 = xmalloc(*n_out * sizeof(float));         /* (n, d_out) x W^T */
    float *y = xmalloc(*n_out * sizeof(float));
    struct rng g;
    rng_seed(&g, 500 + (uint64_t)site);
    for (size_t j = 0; j < (size_t)n * d_in; j++) x[j] = rng_uniform(&g, -1.0f, 1.0f);
    const float *w = model_site_weight(&r->m, site); /* (d_out, d_in) */
    for (int32_t i = 0; i < n; i++)
        for (int32_t o = 0; o < d_out; o++) {
            double acc = 0.0;
            for (int32_t k = 0; k < d_in; k++) acc += (double)x[i * d_in + k] * w[o * d_in + k];
            y0[i * d_out + o] = (float)acc;
            *y_max = fmax(*y_max, fabs(acc));
        }
    memcpy(y, y0, *n_out * sizeof(float));
    const struct model_hooks *hk = method_run_hooks(r->mr, 0);
    int ok = hk->site_forward && hk->site_forward(hk->ctx, hk->pass, site, x, y, n) == 0;
    for (size_t j = 0; j < *n_out; j++) y[j] -= y0[j];
    free(x);
    free(y0);
    if (ok) return y;
    free(y);
    return NULL;
}

static int check_negate(struct checker *ck, struct run *r, int mergeable) {
    struct method_run *mr = r->mr;
    int32_t n_t = method_run_tensor_count(mr), ns = method_run_site_count(mr);
    float **keep = xcalloc((size_t)n_t + 1, sizeof *keep);
    for (int32_t i = 0; i < n_t; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        keep[i] = xmalloc(t->numel * sizeof(float));
        memcpy(keep[i], t->data, t->numel * sizeof(float));
    }
    float **d1 = xcalloc((size_t)ns + 1, sizeof *d1);
    double dmax = 0.0, worst = 0.0, ymax = 0.0, y_max;
    size_t n;
    int ok = 1;
    for (int32_t i = 0; i < ns && ok; i++)
        ok = (d1[i] = site_change(r, method_run_site(mr, i), mergeable, &n, &y_max)) != NULL;
    int rc = ok ? method_run_negate(mr) : -1;
    for (int32_t i = 0; rc == 0 && i < ns; i++) {
        float *d2 = site_change(r, method_run_site(mr, i), mergeable, &n, &y_max);
        if (!d2) {
            rc = -1;
            break;
        }
        ymax = fmax(ymax, y_max);
        for (size_t j = 0; j < n; j++) {
            dmax = fmax(dmax, fabs(d1[i][j]));
            worst = fmax(worst, fabs((double)d2[j] + d1[i][j]));
        }
        free(d2);
    }
    const char *what = mergeable ? "delta_weight" : "site output added";
    if (rc != 0)
        verdict(ck, 0, "negate: %s", err_msg());
    else
        verdict(ck, (ns == 0 || dmax > 1e-3) && worst <= 1e-6 * fmax(fmax(dmax, ymax), 1.0),
                "negate at %d sites: max |%s| %.3g, max |negated + it| %.3g", ns, what, dmax,
                worst);
    for (int32_t i = 0; i < ns; i++) free(d1[i]);
    free(d1);
    for (int32_t i = 0; i < n_t; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        memcpy(t->data, keep[i], t->numel * sizeof(float));
        free(keep[i]);
    }
    free(keep);
    return 0;
}

/* ---- 5: save -> load ------------------------------------------------------------------------- */

static int check_roundtrip(struct checker *ck, struct run *r, const struct plugin_method *pm,
                           const struct keys *k, const char *dir) {
    char *path = xasprintf("%s/%s.safetensors", dir, pm->desc->id);
    const char *meta[] = {"peft.stage", "check", NULL};
    struct model m2;
    struct method_run *mr2 = NULL;
    struct model_acts *a2 = model_acts_new();
    size_t n = n_logits(r);
    float *l1 = xmalloc(n * sizeof(float));
    int have_m2 = 0, same = 0, same_logits = 0;
    int rc = method_run_save(r->mr, path, meta);
    if (rc == 0) rc = check_model_copy(&m2, &r->m);
    if (rc == 0) {
        have_m2 = 1;
        memcpy(m2.params, r->base, m2.n_params * sizeof(float));
        /* another seed: the file must decide everything */
        struct method_env env = {.tasks = &r->tasks, .seed = 999, .init_seed = 999,
                                 .stage = "check", .where = "peft check"};
        rc = method_run_create(&mr2, pm, &m2, &env, k->kv, k->n);
    }
    if (rc == 0) rc = method_run_load(mr2, path);
    if (rc == 0) {
        same = method_run_tensor_count(mr2) == method_run_tensor_count(r->mr);
        for (int32_t i = 0; same && i < method_run_tensor_count(mr2); i++) {
            struct mtensor *a = method_run_tensor(r->mr, i), *b = method_run_tensor(mr2, i);
            same = strcmp(a->name, b->name) == 0 && a->numel == b->numel &&
                   memcmp(a->data, b->data, a->numel * sizeof(float)) == 0;
        }
        rc = isnan(forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) ? -1 : 0;
        if (rc == 0) memcpy(l1, model_logits(r->a), n * sizeof(float));
        if (rc == 0) rc = method_run_batch_begin(mr2, &r->b, 0, 0);
        if (rc == 0) rc = isnan(forward(r, &m2, a2, method_run_hooks(mr2, 0))) ? -1 : 0;
        if (rc == 0) same_logits = memcmp(l1, model_logits(a2), n * sizeof(float)) == 0;
    }
    if (rc != 0)
        verdict(ck, 0, "save -> load: %s", err_msg());
    else
        verdict(ck, same && same_logits, "save -> load into a fresh instance: tensors %s, logits %s",
                same ? "bit-identical" : "DIFFER", same_logits ? "bit-identical" : "DIFFER");
    free(l1);
    model_acts_free(a2);
    method_run_free(mr2);
    if (have_m2) model_free(&m2);
    remove(path);
    free(path);
    return 0;
}

/* ---- 6: merge ------------------------------------------------------------------------------ */

static int check_merge(struct checker *ck, struct run *r, int mergeable) {
    size_t n = n_logits(r);
    float *hooked = xmalloc(n * sizeof(float)), *other = xmalloc(n * sizeof(float));
    int rc = method_run_batch_begin(r->mr, &r->b, 0, 0);
    if (rc == 0) rc = isnan(forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) ? -1 : 0;
    if (rc != 0) {
        verdict(ck, 0, "merge: the evaluation pass failed: %s", err_msg());
    } else if (!mergeable) {
        memcpy(hooked, model_logits(r->a), n * sizeof(float));
        float *before = xmalloc(r->m.n_params * sizeof(float));
        memcpy(before, r->m.params, r->m.n_params * sizeof(float));
        int refused = method_run_merge(r->mr) != 0;
        int same_w = memcmp(before, r->m.params, r->m.n_params * sizeof(float)) == 0;
        int same_l = !isnan(forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) &&
                     memcmp(hooked, model_logits(r->a), n * sizeof(float)) == 0;
        verdict(ck, refused && same_w && same_l,
                "merge refused (no delta_weight): %s; weights unchanged: %s; hooked logits "
                "unchanged: %s", refused ? "yes" : "NO, accepted", same_w ? "yes" : "NO",
                same_l ? "yes" : "NO");
        free(before);
    } else {
        memcpy(hooked, model_logits(r->a), n * sizeof(float));
        rc = method_run_merge(r->mr);
        double e = NAN;
        int stopped = 0;
        if (rc == 0 && !isnan(forward(r, &r->m, r->a, NULL))) {
            e = check_nmse(model_logits(r->a), hooked, n);
            memcpy(other, model_logits(r->a), n * sizeof(float));
            /* after a merge the hooks stop adding: the hooked model is the merged one */
            stopped = !isnan(forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) &&
                      memcmp(other, model_logits(r->a), n * sizeof(float)) == 0;
        }
        if (rc != 0)
            verdict(ck, 0, "merge: %s", err_msg());
        else
            verdict(ck, e < 1e-10 && stopped,
                    "merge: NMSE(merged bare model, hooked) %.3g (bound 1e-10); hooks silent "
                    "after the merge: %s", e, stopped ? "yes" : "NO");
    }
    free(hooked);
    free(other);
    return 0;
}

/* ---- the runs of a method -------------------------------------------------------------------- */

/* One run: choice is NULL or "key=value". A configuration the method refuses when created
 * (a key that needs others) is reported and skipped when it is not the defaults. */
static void check_run(struct checker *ck, const struct plugin_method *pm, int variant,
                      const char *choice, const char *dir) {
    const peft_method_desc *d = pm->desc;
    struct keys k = {0};
    for (uint32_t i = 0; i < d->n_params; i++)
        keys_set(&k, d->params[i].name, d->params[i].default_value ? d->params[i].default_value : "");
    if (has_key(d, "target_modules")) keys_set(&k, "target_modules", "all-linear");
    if (choice) {
        char key[128];
        const char *eq = strchr(choice, '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - choice), choice);
        keys_set(&k, key, eq + 1);
    }
    if (variant) {
        for (uint32_t i = 0; i < d->n_params; i++) {
            const peft_param_spec *p = &d->params[i];
            size_t ln = strlen(p->name);
            if (p->type == PEFT_PARAM_BOOL) keys_set(&k, p->name, "true");
            if (p->type == PEFT_PARAM_FLOAT && ln >= 7 && strcmp(p->name + ln - 7, "dropout") == 0)
                keys_set(&k, p->name, "0.25");
        }
        /* the LoRA scale at 1: the adapter's path as strong as the base's, so that its
         * gradients stand above the differences' noise */
        const char *r = keys_get(&k, "r");
        if (r && has_key(d, "lora_alpha")) {
            char *alpha = xstrdup(r);
            keys_set(&k, "lora_alpha", alpha);
            free(alpha);
        }
    }
    char label[256];
    snprintf(label, sizeof label, "%s %s%s%s", d->id, variant ? "variant" : "defaults",
             choice ? " " : "", choice ? choice : "");
    ck->label = label;
    struct run r;
    double t0 = now_seconds();
    if (run_setup(&r, variant, pm, &k) != 0) {
        if (choice)
            fprintf(ck->out, "skip %s: the method refuses this value alone (%s)\n", label, err_msg());
        else
            verdict(ck, 0, "creating the instance: %s", err_msg());
        run_free(&r);
        keys_free(&k);
        return;
    }
    fprintf(ck->out, "---- %s: %d sites, %d tensors, %llu trainable entries, %s head\n", label,
            method_run_site_count(r.mr), method_run_tensor_count(r.mr),
            (unsigned long long)method_run_trainable_count(r.mr), variant ? "tied" : "untied");
    verdict(ck, method_run_trainable_count(r.mr) > 0, "%llu trainable entries",
            (unsigned long long)method_run_trainable_count(r.mr));
    if (check_noop(ck, &r) == 0) {
        randomize(&r);
        if (check_grads(ck, &r) == 0) {
            int mergeable = probe_mergeable(ck, &r);
            check_negate(ck, &r, mergeable);
            check_roundtrip(ck, &r, pm, &k, dir);
            check_merge(ck, &r, mergeable);
        }
    }
    fprintf(ck->out, "     %s: %.2f s\n", label, now_seconds() - t0);
    run_free(&r);
    keys_free(&k);
}

/* Both runs again for every other value of each CHOICE key. */
static void check_choices(struct checker *ck, const struct plugin_method *pm, const char *dir) {
    const peft_method_desc *d = pm->desc;
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        if (p->type != PEFT_PARAM_CHOICE || !p->choices) continue;
        char *list = xstrdup(p->choices);
        for (char *c = list; *c; c++)
            if (*c == '|') *c = ' ';
        struct words w;
        words_split(&w, list);
        for (int j = 0; j < w.n; j++) {
            if (p->default_value && strcmp(w.v[j], p->default_value) == 0) continue;
            char *choice = xasprintf("%s=%s", p->name, w.v[j]);
            check_run(ck, pm, 0, choice, dir);
            check_run(ck, pm, 1, choice, dir);
            free(choice);
        }
        words_free(&w);
        free(list);
    }
}

int plugin_check(struct plugin_registry *reg, const char *what, FILE *out) {
    const struct plugin_method *first = registry_find(reg, what);
    if (!first) return -1;
    char dir[] = "/tmp/peft-check-XXXXXX";
    if (!mkdtemp(dir)) return err_set("cannot make a temporary folder: %s", strerror(errno));
    struct checker ck = {.out = out};
    /* every method of the file that holds `what` */
    const char *file = first->file->path;
    int32_t n_methods = 0;
    for (int32_t i = 0; i < reg->n_methods; i++) {
        if (strcmp(reg->methods[i].file->path, file) != 0) continue;
        const struct plugin_method *pm = registry_find(reg, reg->methods[i].desc->id);
        if (!pm) continue;
        n_methods++;
        check_run(&ck, pm, 0, NULL, dir);
        check_run(&ck, pm, 1, NULL, dir);
        check_choices(&ck, pm, dir);
    }
    remove_tree(dir);
    fprintf(out, "%s: %d method%s checked\n%d passed, %d failed\n", file, (int)n_methods,
            n_methods == 1 ? "" : "s", ck.passed, ck.failed);
    return ck.failed;
}
