/* check_grad.c: gradients against central differences, and the inputs a plugin must not
 * write (see check.h, checks 2 and 3). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check_internal.h"

enum { MAX_ENTRIES = 2000 }; /* sampled entries per tensor */

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
 * error exceeds the tolerance; smaller steps converge to a right gradient, never a wrong one.
 * Where they agree to this but not to the noise, the step is doubled once instead (fd). */
#define REFINE_TOL 5e-3
/* The noise of a difference at step FD_STEP (above) */
#define NOISE 2e-5

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

/* The input hooks too: the same buffer and ctx as the method's. */
static const float *guard_input(void *ctx, uint32_t pass, int32_t site, const float *x,
                                int32_t n_rows) {
    struct guard *g = ctx;
    return g->inner->site_input(g->inner->ctx, pass, site, x, n_rows);
}

static int guard_input_backward(void *ctx, uint32_t pass, int32_t site, const float *x,
                                float *dx, int32_t n_rows) {
    struct guard *g = ctx;
    return g->inner->site_input_backward(g->inner->ctx, pass, site, x, dx, n_rows);
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
    g->hooks.site_input = inner->site_input ? guard_input : NULL;
    g->hooks.site_input_backward = inner->site_input_backward ? guard_input_backward : NULL;
    if (!inner->site_forward && !inner->site_backward) return inner; /* no site hooks to watch */
    return &g->hooks;
}

/* ---- 2 and 3: gradients against central differences ---------------------------------------- */

static double loss_at(struct run *r) {
    *method_run_rng(r->mr) = r->stream; /* dropout masks repeat */
    return check_forward(r, &r->m, r->a, r->hk);
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
    int curved = 0;
    for (int k = 0; k < 2; k++) {
        double den = fmax(fmax(fabs(grad), fabs(want)), ABS_FLOOR);
        if (fabs(grad - want) <= REFINE_TOL * den) break;
        if (k == 0) (*refined)++;
        curved = 1;
        h /= 2;
        want = fd_step(r, p, h);
    }
    if (!curved && fabs(grad - want) > NOISE) {
        /* within the relative bound but above the noise: a small gradient, where the noise
         * decides (NORM_SCALE_FLOOR). Twice the step halves the noise; the closer of the two
         * differences is kept, and a wrong gradient is far from both. */
        (*refined)++;
        double wider = fd_step(r, p, 2 * FD_STEP);
        if (fabs(grad - wider) < fabs(grad - want)) want = wider;
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

/* The checks of the derivatives, on the model's weights with its products' operands
 * unrounded (check.h: the bf16 model's loss is flat almost everywhere). */
static int grads_checked(struct checker *ck, struct run *r);

int check_grads(struct checker *ck, struct run *r) {
    int32_t precision = r->m.precision;
    r->m.precision = MODEL_FP32;
    int rc = grads_checked(ck, r);
    r->m.precision = precision;
    return rc;
}

static int grads_checked(struct checker *ck, struct run *r) {
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
