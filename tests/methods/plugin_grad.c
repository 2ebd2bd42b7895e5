/*
 * plugin_grad: every method plugin, checked through the ABI against the real model.
 *
 * Usage: test_plugin_grad PLUGIN.so... (meson passes every built plugin). Each file is loaded
 * with the real loader, and every method in it is checked in two runs:
 *   defaults: the schema's defaults (target_modules = all-linear where the key exists), on a
 *             model with an untied head;
 *   variant:  every bool key true, every "*dropout" key 0.25 and lora_alpha = r, on a tied
 *             model.
 * A CHOICE key listed in switch_keys (a switch between forward/backward paths that needs no
 * other key, e.g. loratrf's `filter`) gets both runs again for each of its other values.
 * In each run:
 *   1. a fresh instance leaves the logits bit-identical to the bare model (no-op at init);
 *   2. every trainable tensor is moved to small random values (LoRA's B != 0, full's task
 *      vector != 0);
 *   3. the gradient of every trainable entry (up to MAX_ENTRIES sampled per tensor) against
 *      fourth-order central differences of the loss through the model, on a batch that mixes
 *      tasks 0 and 1, in training mode (the step is halved, up to twice, where the two
 *      disagree: see fd). Dropout masks repeat because the instance's random stream is
 *      restored before every forward;
 *   4. dL/d(embed_tokens) against finite differences: the input gradient reaches the
 *      embedding through every site, so this checks the plugins' dx;
 *   5. negate gives -delta at every attached site (a method that refuses delta_weight, i.e.
 *      is input-dependent: the site hook's added output turns into its negative);
 *   6. save, then load into a fresh instance on a fresh copy of the base model: every tensor
 *      and the logits bit-identical;
 *   7. merge: the merged bare model's logits match the hooked ones (NMSE < 1e-10); a method
 *      that refuses delta_weight must not claim "mergeable", and its refused merge leaves
 *      the weights and the hooked logits as they were.
 * Printed per method and run: max abs / rel gradient error of the parameters and of the
 * embedding, and the invariants' figures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"
#include "safetensors.h"

enum { B = 3, T = 6 };

#define MAX_ENTRIES 2000
#define FD_STEP 1e-2
/* The fp32 logits leave ~3e-5 of noise in a fourth-order difference with step 1e-2, while
 * its truncation error stays below that for weights of std 0.3. Two bounds: per entry, the
 * relative error with gradients below ABS_FLOOR counted as absolute; per tensor, the largest
 * error over the largest gradient (the smallest such scale here is ~2e-2). */
#define REL_TOL 2e-2
#define ABS_FLOOR 1e-2
#define NORM_TOL 1e-2
/* A tensor whose gradients are all below the noise / NORM_TOL (a gate's, which is second
 * order in the adapter: ~1e-3 here) is held to that noise in absolute terms instead. */
#define NORM_SCALE_FLOOR 3e-3

/* CHOICE keys whose every value is checked (see the top). */
static const char *const switch_keys[] = {"filter", "mode", NULL};

struct run {
    struct model m;
    float *base;              /* (n_params) the model before any change */
    struct model_acts *a;
    struct batch b;
    struct task_table tasks;
    struct method_run *mr;
    struct rng stream;        /* the instance's stream before the gradient's forward */
    const struct model_hooks *hk;
};

static double loss_at(struct run *r) {
    *method_run_rng(r->mr) = r->stream;
    return mt_forward(&r->m, r->a, &r->b, r->hk);
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

/* The difference to hold `grad` to: step FD_STEP, halved up to twice while the two disagree
 * by more than REFINE_TOL. At a sharply curved point (a tied head, rslora and dropout make a
 * few) the step's truncation error exceeds the tolerance; the smaller steps converge to a
 * right gradient and never to a wrong one. *refined counts the entries that needed it. */
#define REFINE_TOL 5e-3
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

/* The error statistics over all entries, plus the largest error of a tensor relative to
 * its largest |fd|, and the names where the worst of each was seen. */
struct grad_err {
    struct err_stats all;
    double t_abs, t_scale;       /* the current tensor: largest error, largest |fd| */
    double max_norm;             /* over tensors: t_abs / t_scale */
    const char *worst_rel, *worst_norm;
};

static void grad_err_add(struct grad_err *e, double got, double want, const char *name) {
    double before = e->all.max_rel;
    double rel = err_add(&e->all, got, want, ABS_FLOOR);
    double a = fabs(got - want);
    if (!(a <= e->t_abs)) e->t_abs = a;
    e->t_scale = fmax(e->t_scale, fabs(want));
    if (!(rel <= before)) e->worst_rel = name;
}

/* Close the current tensor. */
static void grad_err_tensor(struct grad_err *e, const char *name) {
    double norm = e->t_abs / fmax(e->t_scale, NORM_SCALE_FLOOR);
    if (!(norm <= e->max_norm)) {
        e->max_norm = norm;
        e->worst_norm = name;
    }
    e->t_abs = e->t_scale = 0.0;
}

static int grad_err_ok(const struct grad_err *e) {
    return e->all.count > 0 && e->all.max_rel < REL_TOL && e->max_norm < NORM_TOL;
}

/* Up to MAX_ENTRIES distinct positions of [0, n), ascending. */
static uint64_t sample(struct rng *g, uint64_t n, uint64_t k, uint64_t i) {
    if (n <= k) return i;
    return (n * i) / k + rng_below(g, n / k); /* one per stratum */
}

static void run_setup(struct run *r, int tied, const struct plugin_method *pm,
                      const struct mt_cfg *cfg) {
    memset(r, 0, sizeof *r);
    mt_model(&r->m, tied, 11, 0.3f);
    r->base = xalloc_floats(r->m.n_params);
    memcpy(r->base, r->m.params, r->m.n_params * sizeof(float));
    r->a = model_acts_new();
    mt_batch(&r->b, B, T, r->m.cfg.vocab, 5);
    task_table_id(&r->tasks, "reverse");
    task_table_id(&r->tasks, "add");
    /* Model gradients exist before the method: the embedding's gradient checks dx. */
    model_alloc_grads(&r->m);
    r->m.need_grad[model_find_tensor(&r->m, "model.embed_tokens.weight")] = 1;
    struct method_env env = mt_env(&r->tasks, 1234);
    REQUIRE(method_run_create(&r->mr, pm, &r->m, &env, cfg->kv, cfg->n) == 0,
            "method_run_create: %s", err_msg());
    REQUIRE(method_run_begin(r->mr) == 0, "method_run_begin: %s", err_msg());
    REQUIRE(method_run_batch_begin(r->mr, &r->b, 1, 0) == 0, "batch_begin: %s", err_msg());
}

static void run_free(struct run *r) {
    method_run_free(r->mr);
    model_acts_free(r->a);
    model_free(&r->m);
    free(r->base);
    mt_batch_free(&r->b);
    task_table_free(&r->tasks);
}

/* 1. A fresh instance changes nothing. */
static void check_noop(struct run *r, const char *label) {
    size_t n = (size_t)B * T * r->m.cfg.vocab;
    float *bare = xmalloc(n * sizeof(float));
    mt_forward(&r->m, r->a, &r->b, NULL);
    memcpy(bare, model_logits(r->a), n * sizeof(float));
    int same = 1;
    for (int training = 0; training < 2; training++) {
        mt_forward(&r->m, r->a, &r->b, method_run_hooks(r->mr, training));
        same &= memcmp(bare, model_logits(r->a), n * sizeof(float)) == 0;
    }
    printf("  %s: fresh instance leaves the logits bit-identical: %s\n", label,
           same ? "yes" : "NO");
    CHECK(same, "%s: a fresh instance changed the logits", label);
    free(bare);
}

/* 2. Small random values in every trainable tensor. */
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

/* 3 and 4. Gradients against finite differences. */
static void check_grads(struct run *r, const char *label) {
    method_run_zero_grads(r->mr);
    model_zero_grads(&r->m);
    r->stream = *method_run_rng(r->mr);
    r->hk = method_run_hooks(r->mr, 1);
    loss_at(r);
    REQUIRE(model_backward(&r->m, r->a, r->hk) == 0, "model_backward: %s", err_msg());
    method_run_collect_grads(r->mr);

    struct rng g;
    rng_seed(&g, 99);
    struct grad_err e = {0};
    int refined = 0, refined_x = 0;
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
    printf("  %s: parameter gradients: %zu entries (%d at a smaller step), max abs err %.3g, "
           "max rel err %.3g (%s), max err / max |grad| of a tensor %.3g (%s)\n", label,
           e.all.count, refined, e.all.max_abs, e.all.max_rel,
           e.worst_rel ? e.worst_rel : "-", e.max_norm, e.worst_norm ? e.worst_norm : "-");
    CHECK(grad_err_ok(&e),
          "%s: parameter gradients: rel err %.3g (%s), normalized err %.3g (%s)", label,
          e.all.max_rel, e.worst_rel, e.max_norm, e.worst_norm);

    /* The embedding: dL/dx through every site. */
    int32_t emb = model_find_tensor(&r->m, "model.embed_tokens.weight");
    const struct model_tensor *mt = &r->m.tensors[emb];
    float *w = r->m.params + mt->offset, *gw = r->m.grads + mt->offset;
    struct grad_err ex = {0};
    double gmax = 0.0;
    for (size_t j = 0; j < mt->numel; j++) {
        grad_err_add(&ex, gw[j], fd(r, &w[j], gw[j], &refined_x), "embed_tokens");
        gmax = fmax(gmax, fabs(gw[j]));
    }
    grad_err_tensor(&ex, "embed_tokens");
    printf("  %s: embed_tokens gradient (checks dx): %zu entries (%d at a smaller step), max "
           "|grad| %.3g, max abs err %.3g, max rel err %.3g, max err / max |grad| %.3g\n",
           label, ex.all.count, refined_x, gmax, ex.all.max_abs, ex.all.max_rel, ex.max_norm);
    CHECK(gmax > 1e-3, "%s: embedding gradient is zero", label);
    CHECK(grad_err_ok(&ex), "%s: embedding gradient: rel err %.3g, normalized err %.3g", label,
          ex.all.max_rel, ex.max_norm);
}

/* Whether the method has a dense delta, asked at its first site. A refusal must come with a
 * reason, from a method that does not claim "mergeable". */
static int probe_mergeable(struct run *r, const char *label) {
    if (method_run_site_count(r->mr) == 0) return 1;
    int32_t site = method_run_site(r->mr, 0), d_in, d_out;
    model_site_dims(&r->m, site, &d_in, &d_out);
    float *d = xalloc_floats((size_t)d_in * d_out);
    int ok = method_run_delta(r->mr, site, 1.0f, d) == 0;
    free(d);
    if (ok) return 1;
    int claims = 0;
    const peft_method_desc *desc = method_run_plugin(r->mr)->desc;
    for (const char *const *f = desc->features; f && *f; f++)
        claims |= strcmp(*f, PEFT_FEATURE_MERGEABLE) == 0;
    printf("  %s: delta_weight refused: %s\n", label, err_msg());
    CHECK(!claims, "%s: claims '%s' but refuses delta_weight", label, PEFT_FEATURE_MERGEABLE);
    CHECK(err_msg()[0] != 0, "%s: delta_weight refused without a reason", label);
    return 0;
}

/* What the method changes at a site: its dense delta (d_out, d_in) when it has one, else the
 * site hook's addition to y = x W^T (B*T, d_out) in evaluation, for a fixed random x; *y_max
 * is then the largest |x W^T| (the rounding scale of the addition). */
static float *site_change(struct run *r, int32_t site, int mergeable, size_t *n_out,
                          double *y_max) {
    int32_t d_in, d_out, n = B * T;
    model_site_dims(&r->m, site, &d_in, &d_out);
    *y_max = 0.0;
    if (mergeable) {
        *n_out = (size_t)d_in * d_out;
        float *d = xalloc_floats(*n_out);
        REQUIRE(method_run_delta(r->mr, site, 1.0f, d) == 0, "delta: %s", err_msg());
        return d;
    }
    *n_out = (size_t)n * d_out;
    float *x = xmalloc((size_t)n * d_in * sizeof(float));  /* (n, d_in) */
    float *y0 = xmalloc(*n_out * sizeof(float));          /* (n, d_out) x W^T */
    float *y = xmalloc(*n_out * sizeof(float));           /* (n, d_out) */
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
    REQUIRE(hk->site_forward && hk->site_forward(hk->ctx, hk->pass, site, x, y, n) == 0,
            "site_forward: %s", err_msg());
    for (size_t j = 0; j < *n_out; j++) y[j] -= y0[j];
    free(x);
    free(y0);
    return y;
}

/* 5. negate gives -delta (or -addition). */
static void check_negate(struct run *r, const char *label, int mergeable) {
    struct method_run *mr = r->mr;
    int32_t n_t = method_run_tensor_count(mr);
    float **keep = xcalloc((size_t)n_t, sizeof *keep);
    for (int32_t i = 0; i < n_t; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        keep[i] = xmalloc(t->numel * sizeof(float));
        memcpy(keep[i], t->data, t->numel * sizeof(float));
    }
    int32_t ns = method_run_site_count(mr);
    float **d1 = xcalloc((size_t)ns, sizeof *d1);
    double dmax = 0.0, worst = 0.0, ymax = 0.0, y_max;
    size_t n;
    for (int32_t i = 0; i < ns; i++) d1[i] = site_change(r, method_run_site(mr, i), mergeable, &n, &y_max);
    int rc = method_run_negate(mr);
    CHECK(rc == 0, "%s: negate: %s", label, err_msg());
    for (int32_t i = 0; rc == 0 && i < ns; i++) {
        float *d2 = site_change(r, method_run_site(mr, i), mergeable, &n, &y_max);
        ymax = fmax(ymax, y_max);
        for (size_t j = 0; j < n; j++) {
            dmax = fmax(dmax, fabs(d1[i][j]));
            worst = fmax(worst, fabs((double)d2[j] + d1[i][j]));
        }
        free(d2);
    }
    const char *what = mergeable ? "delta" : "site output added";
    printf("  %s: negate at %d sites: max |%s| %.3g, max |negated + it| %.3g\n", label, ns,
           what, dmax, worst);
    CHECK(ns == 0 || dmax > 1e-3, "%s: %s is zero after randomizing", label, what);
    CHECK(worst <= 1e-6 * fmax(fmax(dmax, ymax), 1.0), "%s: negated %s off by %.3g", label,
          what, worst);
    for (int32_t i = 0; i < ns; i++) free(d1[i]);
    free(d1);
    for (int32_t i = 0; i < n_t; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        memcpy(t->data, keep[i], t->numel * sizeof(float));
        free(keep[i]);
    }
    free(keep);
}

/* 6. save -> load round trip. */
static void check_roundtrip(struct run *r, const struct plugin_method *pm,
                            const struct mt_cfg *cfg, const char *dir, const char *label) {
    char *path = xasprintf("%s/%s.safetensors", dir, pm->desc->id);
    const char *meta[] = {"peft.stage", "test", NULL};
    REQUIRE(method_run_save(r->mr, path, meta) == 0, "save: %s", err_msg());
    struct st_file f;
    REQUIRE(st_open(&f, path) == 0, "st_open: %s", err_msg());
    CHECK(st_meta(&f, "peft.method") && strcmp(st_meta(&f, "peft.method"), pm->desc->id) == 0,
          "peft.method");
    CHECK(st_meta(&f, "peft.abi_version") && strcmp(st_meta(&f, "peft.abi_version"), "1") == 0,
          "peft.abi_version");
    CHECK(st_meta(&f, "peft.stage") && strcmp(st_meta(&f, "peft.stage"), "test") == 0,
          "meta_kv");
    st_close(&f);

    struct model m2;
    mt_model_copy(&m2, &r->m);
    memcpy(m2.params, r->base, m2.n_params * sizeof(float));
    struct method_env env = mt_env(&r->tasks, 999); /* another seed: the file must decide */
    struct method_run *mr2;
    REQUIRE(method_run_create(&mr2, pm, &m2, &env, cfg->kv, cfg->n) == 0, "create: %s",
            err_msg());
    REQUIRE(method_run_load(mr2, path) == 0, "load: %s", err_msg());
    int same = method_run_tensor_count(mr2) == method_run_tensor_count(r->mr);
    for (int32_t i = 0; same && i < method_run_tensor_count(mr2); i++) {
        struct mtensor *a = method_run_tensor(r->mr, i), *b = method_run_tensor(mr2, i);
        same = strcmp(a->name, b->name) == 0 && a->numel == b->numel &&
               memcmp(a->data, b->data, a->numel * sizeof(float)) == 0;
    }
    size_t n = (size_t)B * T * r->m.cfg.vocab;
    float *l1 = xmalloc(n * sizeof(float));
    mt_forward(&r->m, r->a, &r->b, method_run_hooks(r->mr, 0));
    memcpy(l1, model_logits(r->a), n * sizeof(float));
    struct model_acts *a2 = model_acts_new();
    REQUIRE(method_run_batch_begin(mr2, &r->b, 0, 0) == 0, "batch_begin: %s", err_msg());
    mt_forward(&m2, a2, &r->b, method_run_hooks(mr2, 0));
    int same_logits = memcmp(l1, model_logits(a2), n * sizeof(float)) == 0;
    printf("  %s: save -> load: tensors bit-identical: %s, logits bit-identical: %s\n", label,
           same ? "yes" : "NO", same_logits ? "yes" : "NO");
    CHECK(same, "%s: tensors differ after save -> load", label);
    CHECK(same_logits, "%s: logits differ after save -> load", label);
    free(l1);
    model_acts_free(a2);
    method_run_free(mr2);
    model_free(&m2);
    remove(path);
    free(path);
}

/* 7b. A refused merge changes nothing. */
static void check_merge_refused(struct run *r, const char *label, const float *hooked) {
    size_t n = (size_t)B * T * r->m.cfg.vocab;
    float *before = xmalloc(r->m.n_params * sizeof(float));
    memcpy(before, r->m.params, r->m.n_params * sizeof(float));
    int rc = method_run_merge(r->mr);
    printf("  %s: merge refused: %s\n", label, rc ? err_msg() : "NO (accepted)");
    int same_w = memcmp(before, r->m.params, r->m.n_params * sizeof(float)) == 0;
    mt_forward(&r->m, r->a, &r->b, method_run_hooks(r->mr, 0));
    int same_l = memcmp(hooked, model_logits(r->a), n * sizeof(float)) == 0;
    printf("  %s: after the refused merge: weights unchanged: %s; hooked logits unchanged: %s\n",
           label, same_w ? "yes" : "NO", same_l ? "yes" : "NO");
    CHECK(rc != 0, "%s: merge of a method without delta_weight accepted", label);
    CHECK(same_w, "%s: a refused merge changed the weights", label);
    CHECK(same_l, "%s: a refused merge changed the hooked logits", label);
    free(before);
}

/* 7. merge. */
static void check_merge(struct run *r, const char *label, int mergeable) {
    size_t n = (size_t)B * T * r->m.cfg.vocab;
    float *hooked = xmalloc(n * sizeof(float));
    REQUIRE(method_run_batch_begin(r->mr, &r->b, 0, 0) == 0, "batch_begin: %s", err_msg());
    mt_forward(&r->m, r->a, &r->b, method_run_hooks(r->mr, 0));
    memcpy(hooked, model_logits(r->a), n * sizeof(float));
    if (!mergeable) {
        check_merge_refused(r, label, hooked);
        free(hooked);
        return;
    }
    int rc = method_run_merge(r->mr);
    CHECK(rc == 0, "%s: merge: %s", label, err_msg());
    mt_forward(&r->m, r->a, &r->b, NULL);
    double e = mt_nmse(model_logits(r->a), hooked, n);
    /* After a merge the hooks stop adding, so the hooked model is the merged one. */
    float *merged = xmalloc(n * sizeof(float));
    memcpy(merged, model_logits(r->a), n * sizeof(float));
    mt_forward(&r->m, r->a, &r->b, method_run_hooks(r->mr, 0));
    int stopped = memcmp(merged, model_logits(r->a), n * sizeof(float)) == 0;
    printf("  %s: merge: NMSE(merged, hooked) %.3g; hooks silent after merge: %s\n", label, e,
           stopped ? "yes" : "NO");
    CHECK(e < 1e-10, "%s: merged logits NMSE %.3g", label, e);
    CHECK(stopped, "%s: hooks still add after merge", label);
    free(hooked);
    free(merged);
}

/* choice: NULL, or "key=value" of a switch key (the value is already in `choice`). */
static void check_method(const struct plugin_method *pm, int variant, const char *choice,
                         const char *dir) {
    const peft_method_desc *d = pm->desc;
    struct mt_cfg cfg;
    mt_cfg_defaults(&cfg, d);
    if (mt_has_key(d, "target_modules")) mt_cfg_set(&cfg, "target_modules", "all-linear");
    if (choice) {
        char key[64];
        const char *eq = strchr(choice, '=');
        REQUIRE(eq && (size_t)(eq - choice) < sizeof key, "bad choice %s", choice);
        memcpy(key, choice, (size_t)(eq - choice));
        key[eq - choice] = 0;
        mt_cfg_set(&cfg, key, eq + 1);
    }
    if (variant) {
        for (uint32_t i = 0; i < d->n_params; i++) {
            const peft_param_spec *p = &d->params[i];
            size_t ln = strlen(p->name);
            if (p->type == PEFT_PARAM_BOOL) mt_cfg_set(&cfg, p->name, "true");
            if (p->type == PEFT_PARAM_FLOAT && ln >= 7 && strcmp(p->name + ln - 7, "dropout") == 0)
                mt_cfg_set(&cfg, p->name, "0.25");
        }
        /* and the LoRA scale s = lora_alpha / r at 1: the adapter's path as strong as the
         * base's, so that its gradients stand above the fp32 differences' noise */
        const char *r_value = mt_cfg_get(&cfg, "r");
        if (r_value && mt_has_key(d, "lora_alpha")) {
            char *alpha = xstrdup(r_value);
            mt_cfg_set(&cfg, "lora_alpha", alpha);
            free(alpha);
        }
    }
    char label[160];
    snprintf(label, sizeof label, "%s/%s%s%s", d->id, variant ? "variant" : "defaults",
             choice ? " " : "", choice ? choice : "");
    double t0 = now_seconds();
    struct run r;
    run_setup(&r, variant, pm, &cfg);
    printf("%s: %d sites, %d tensors, %llu trainable entries, %s head\n", label,
           method_run_site_count(r.mr), method_run_tensor_count(r.mr),
           (unsigned long long)method_run_trainable_count(r.mr), variant ? "tied" : "untied");
    CHECK(method_run_trainable_count(r.mr) > 0, "%s: nothing to train", label);
    check_noop(&r, label);
    randomize(&r);
    check_grads(&r, label);
    int mergeable = probe_mergeable(&r, label);
    check_negate(&r, label, mergeable);
    check_roundtrip(&r, pm, &cfg, dir, label);
    check_merge(&r, label, mergeable);
    printf("  %s: %.2f s\n", label, now_seconds() - t0);
    run_free(&r);
    mt_cfg_free(&cfg);
}

/* Both runs again for every other value of each switch key the method has. */
static void check_switches(const struct plugin_method *pm, const char *dir) {
    const peft_method_desc *d = pm->desc;
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        int is_switch = 0;
        for (const char *const *k = switch_keys; *k; k++) is_switch |= strcmp(*k, p->name) == 0;
        if (!is_switch || p->type != PEFT_PARAM_CHOICE || !p->choices) continue;
        struct words w;
        char *list = xstrdup(p->choices);
        for (char *c = list; *c; c++)
            if (*c == '|') *c = ' ';
        words_split(&w, list);
        for (int j = 0; j < w.n; j++) {
            if (p->default_value && strcmp(w.v[j], p->default_value) == 0) continue;
            char *choice = xasprintf("%s=%s", p->name, w.v[j]);
            check_method(pm, 0, choice, dir);
            check_method(pm, 1, choice, dir);
            free(choice);
        }
        words_free(&w);
        free(list);
    }
}

int main(int argc, char **argv) {
    REQUIRE(argc >= 2, "usage: %s PLUGIN.so...", argv[0]);
    char dir[] = "/tmp/peft_methods_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp failed");
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    int n_methods = 0;
    for (int i = 1; i < argc; i++) {
        const struct plugin_method *pms[16];
        int32_t n = mt_load_methods(&reg, argv[i], pms, 16);
        CHECK(n > 0, "%s: no methods", argv[i]);
        for (int32_t k = 0; k < n; k++) {
            check_method(pms[k], 0, NULL, dir);
            check_method(pms[k], 1, NULL, dir);
            check_switches(pms[k], dir);
            n_methods++;
        }
    }
    remove_tree(dir);
    registry_free(&reg);
    printf("%d methods from %d plugin files checked; %d failures\n", n_methods, argc - 1,
           check_failures);
    return check_status();
}
