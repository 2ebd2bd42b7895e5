/*
 * poly_unit: the poly plugin's contract (Polytropon, MHR / Poly-S, Poly-mu, MHR-z), through the
 * real loader and host.
 *   - layout: PEFT's Poly names and shapes, per-block A bound 1/sqrt(d_in/h), B = 0, routing
 *     logits U(+-1e-3) with their own learning rate and lr group; trainable counts against
 *     K r (d_in + d_out) + T h K per site;
 *   - refusals: heads that do not divide a site's dimension (the key and the site's
 *     dimensions named), a multi-head poly, poly-mu / mhr-z without init_from, a source of
 *     another structure, a bad temperature;
 *   - gradients at the site level for every variant, skills, routing logits (masked rows
 *     included) and dx, against fourth-order central differences, with the Gumbel noise held
 *     fixed and with plain sigmoid routing;
 *   - mhr with one head equals poly: same tensors, bit-identical logits in training (Gumbel)
 *     and evaluation;
 *   - rows of different tasks in one batch use their own adapters: equal tokens under two
 *     tasks give different logits, and every example's logits equal those of a batch holding
 *     it alone; the Gumbel draw is per example;
 *   - poly-mu's factors are the skills' means, and its forward equals the lora plugin's with
 *     those factors, and the source's with uniform routing;
 *   - chained stages (init_from): skills and trained rows copied, new rows fresh, masks on the
 *     routing rows (mhr-z trains those rows only), ΔW exact for a stage that trained one task
 *     and refused for several, a resumed stage keeps its loaded tensors;
 *   - saved skills and routing tables load back bit for bit.
 * Usage: test_poly_unit PLUGIN.so... (the poly and lora plugins among them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"

enum { B = 4, T = 5, NR = B * T, NT = 4 };

#define FD_STEP 1e-2
/* Site-level differences of an fp32 forward with step 1e-2 leave ~1e-4 of noise against
 * gradients of order 1; per tensor, the largest error over the largest |gradient|. */
#define GRAD_TOL 2e-3

static const char *const task_names[NT] = {"reverse", "add", "upper", "shift"};

/* A finished earlier stage that init_from can name. */
struct source {
    const char *stage;
    struct method_run *mr;
};

struct fix {
    struct model m;
    struct task_table tasks;
    struct batch b;
    struct model_acts *a;
    struct source src[2];
    const struct plugin_method *poly, *lora;
};

/* The run's stage_tensor: a tensor of a source by name. */
static int source_tensor(void *ctx, const char *stage, const char *name, float *out,
                         uint64_t numel) {
    struct fix *f = ctx;
    for (int i = 0; i < 2; i++) {
        if (!f->src[i].mr || strcmp(f->src[i].stage, stage) != 0) continue;
        for (int32_t k = 0; k < method_run_tensor_count(f->src[i].mr); k++) {
            struct mtensor *t = method_run_tensor(f->src[i].mr, k);
            if (strcmp(t->name, name) != 0) continue;
            if (t->numel != numel)
                return err_set("tensor '%s' has %llu entries, %llu asked", name,
                               (unsigned long long)t->numel, (unsigned long long)numel);
            memcpy(out, t->data, numel * sizeof(float));
            return 0;
        }
        return err_set("no tensor '%s' in stage '%s'", name, stage);
    }
    return err_set("stage '%s' has not finished (or does not exist)", stage);
}

static struct method_run *create_on(struct fix *f, struct model *m,
                                    const struct plugin_method *pm, const char *const *kv,
                                    uint64_t seed) {
    struct method_env env = mt_env(&f->tasks, seed);
    env.run_ctx = f;
    env.stage_tensor = source_tensor;
    return mt_run_create(pm, m, &env, kv);
}

/* Created and begun, or NULL with err_msg(). */
static struct method_run *create(struct fix *f, const struct plugin_method *pm,
                                 const char *const *kv) {
    struct method_run *mr = create_on(f, &f->m, pm, kv, 42);
    if (mr && method_run_begin(mr) != 0) {
        method_run_free(mr);
        mr = NULL;
    }
    return mr;
}

/* The tensor `what` (poly_lora_A, poly_lora_B, poly_router.module_logits, lora_A.weight, ...)
 * of a site. */
static struct mtensor *site_tensor(struct fix *f, struct method_run *mr, int32_t site,
                                   const char *what) {
    char site_name[96], name[256];
    model_site_name(&f->m, site, site_name, sizeof site_name);
    snprintf(name, sizeof name, "base_model.model.%s.%s", site_name, what);
    struct mtensor *t = mt_find_tensor(mr, name);
    REQUIRE(t, "no tensor %s", name);
    return t;
}

/* Every trainable entry (and, with all, every entry of site tensors) moved by U(-amp, amp). */
static void randomize(struct method_run *mr, uint64_t seed, float amp, int all) {
    struct rng g;
    rng_seed(&g, seed);
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (t->desc.site < 0 || (!all && !(t->desc.flags & PEFT_TENSOR_TRAINABLE))) continue;
        for (uint64_t j = 0; j < t->numel; j++) t->data[j] += rng_uniform(&g, -amp, amp);
    }
}

static void set_tasks(struct batch *b, const int32_t *tasks) {
    for (int32_t i = 0; i < b->B; i++) b->example_task[i] = tasks[i];
}

/* Logits (B*T, V) of the batch with the instance's hooks, into out. */
static void logits(struct fix *f, struct model *m, struct method_run *mr, const struct batch *b,
                   int training, float *out) {
    REQUIRE(method_run_batch_begin(mr, b, training, 0) == 0, "batch_begin: %s", err_msg());
    mt_forward(m, f->a, b, mr ? method_run_hooks(mr, training) : NULL);
    memcpy(out, model_logits(f->a), (size_t)b->B * b->T * m->cfg.vocab * sizeof(float));
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0.0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* ---- layout -------------------------------------------------------------------------- */

static uint64_t formula(struct fix *f, struct method_run *mr, uint64_t K, uint64_t r,
                        uint64_t h) {
    uint64_t n = 0;
    for (int32_t i = 0; i < method_run_site_count(mr); i++) {
        int32_t d_in, d_out;
        model_site_dims(&f->m, method_run_site(mr, i), &d_in, &d_out);
        n += K * r * (uint64_t)(d_in + d_out) + NT * h * K;
    }
    return n;
}

static void check_layout(struct fix *f) {
    for (int mhr = 0; mhr < 2; mhr++) {
        const char *kv[] = {"variant", mhr ? "mhr" : "poly", "n_splits", mhr ? "2" : "0", NULL};
        struct method_run *mr = create(f, f->poly, kv);
        REQUIRE(mr, "create: %s", err_msg());
        uint32_t h = mhr ? 2 : 1;
        const int32_t site = 6; /* layer 0 down_proj: 24 -> 16 */
        struct mtensor *A = site_tensor(f, mr, site, "poly_lora_A");
        struct mtensor *Bt = site_tensor(f, mr, site, "poly_lora_B");
        struct mtensor *Z = site_tensor(f, mr, site, "poly_router.module_logits");
        int shapes = A->desc.ndim == 4 && A->desc.shape[0] == h && A->desc.shape[1] == 8 &&
                     A->desc.shape[2] == 24 / h && A->desc.shape[3] == 4 &&
                     Bt->desc.ndim == 4 && Bt->desc.shape[0] == h && Bt->desc.shape[1] == 8 &&
                     Bt->desc.shape[2] == 4 && Bt->desc.shape[3] == 16 / h &&
                     /* PEFT's PolyRouter.module_logits: (n_tasks, n_splits * n_skills) */
                     Z->desc.ndim == 2 && Z->desc.shape[0] == NT && Z->desc.shape[1] == h * 8;
        int flags = (A->desc.flags & PEFT_TENSOR_TRAINABLE) &&
                    (Bt->desc.flags & PEFT_TENSOR_NEGATE) &&
                    (Z->desc.flags & PEFT_TENSOR_NO_DECAY) && Z->desc.lr == 0.1f &&
                    strcmp(Z->desc.lr_group, "routing") == 0;
        double amax = 0.0, bmax = 0.0, zmax = 0.0;
        for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
            struct mtensor *t = method_run_tensor(mr, i);
            if (t->desc.site < 0) continue;
            int32_t d_in, d_out;
            model_site_dims(&f->m, t->desc.site, &d_in, &d_out);
            for (uint64_t j = 0; j < t->numel; j++) {
                double v = fabs(t->data[j]);
                if (strstr(t->name, "poly_lora_A")) amax = fmax(amax, v * sqrt(d_in / (double)h));
                if (strstr(t->name, "poly_lora_B")) bmax = fmax(bmax, v);
                if (strstr(t->name, "module_logits")) zmax = fmax(zmax, v);
            }
        }
        uint64_t n = method_run_trainable_count(mr), want = formula(f, mr, 8, 4, h);
        printf("%s: %d sites; A %s, B %s, Z %s; max |A| sqrt(d_in/h) %.4f, max |B| %g, max |Z| "
               "%.2e; %llu trainable entries (formula %llu)\n", mhr ? "mhr h=2" : "poly",
               method_run_site_count(mr), "(h, K, d_in/h, r)", "(h, K, r, d_out/h)",
               "(n_tasks, h, K)", amax, bmax, zmax, (unsigned long long)n,
               (unsigned long long)want);
        CHECK(method_run_site_count(mr) == 14, "sites %d", method_run_site_count(mr));
        CHECK(shapes, "shapes of the site tensors");
        CHECK(flags, "flags, lr or lr group of the site tensors");
        CHECK(amax <= 1.0 && amax > 0.97, "A bound: %g", amax);
        CHECK(bmax == 0.0, "B not zero: %g", bmax);
        CHECK(zmax <= 1e-3 && zmax > 0.9e-3, "Z init: %g", zmax);
        CHECK(n == want, "trainable %llu, formula %llu", (unsigned long long)n,
              (unsigned long long)want);
        method_run_free(mr);
    }
}

/* ---- refusals -------------------------------------------------------------------------- */

static void expect_refused(struct fix *f, const char *const *kv, const char *part) {
    struct method_run *mr = create(f, f->poly, kv);
    CHECK(!mr, "accepted: %s = %s", kv[0], kv[1]);
    if (mr) {
        method_run_free(mr);
        return;
    }
    printf("refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), part) != NULL, "message lacks '%s': %s", part, err_msg());
}

static void check_refusals(struct fix *f) {
    const char *heads[] = {"variant", "mhr", "n_splits", "3", NULL};
    expect_refused(f, heads, "n_splits = 3 heads must divide both dimensions of every site, "
                             "but model.layers.0.self_attn.q_proj has d_in = 16 and d_out = 16");
    const char *poly_heads[] = {"variant", "poly", "n_splits", "2", NULL};
    expect_refused(f, poly_heads, "variant = poly has one head");
    const char *mu[] = {"variant", "poly-mu", NULL};
    expect_refused(f, mu, "variant = poly-mu adapts trained skills: set init_from");
    const char *z[] = {"variant", "mhr-z", NULL};
    expect_refused(f, z, "variant = mhr-z adapts trained skills: set init_from");
    const char *tau[] = {"temperature", "0", NULL};
    expect_refused(f, tau, "temperature must be > 0");
    const char *other[] = {"init_from", "multi", "n_skills", "4", NULL};
    expect_refused(f, other, "n_skills = 4 and r = 4 must be those of init_from = 'multi'");
    const char *other_h[] = {"init_from", "multi_mhr", "n_splits", "1", NULL};
    expect_refused(f, other_h, "n_splits = 1, but init_from = 'multi_mhr' has n_splits = 2");
    const char *nowhere[] = {"init_from", "nowhere", NULL};
    expect_refused(f, nowhere, "init_from = 'nowhere': that stage has no poly skills");
}

/* ---- gradients at the site level ------------------------------------------------------- */

struct site_run {
    struct fix *f;
    struct method_run *mr;
    int32_t site, d_in, d_out;
    float *x;          /* (NR, d_in) */
    const double *c;   /* (NR, d_out) dL/dy */
    struct rng stream; /* before every forward, so the Gumbel noise repeats */
};

/* L = sum(c * addition) of the site hook in training mode, in double. */
static double site_loss(struct site_run *s) {
    size_t n = (size_t)NR * s->d_out;
    float *y = xalloc_floats(n);
    *method_run_rng(s->mr) = s->stream;
    const struct model_hooks *hk = method_run_hooks(s->mr, 1);
    REQUIRE(hk->site_forward(hk->ctx, hk->pass, s->site, s->x, y, NR) == 0, "forward: %s",
            err_msg());
    double L = 0.0;
    for (size_t j = 0; j < n; j++) L += s->c[j] * y[j];
    free(y);
    return L;
}

static double site_fd(struct site_run *s, float *p) {
    float saved = *p;
    const double steps[4] = {FD_STEP, -FD_STEP, 2 * FD_STEP, -2 * FD_STEP};
    double v[4];
    for (int i = 0; i < 4; i++) {
        *p = (float)(saved + steps[i]);
        v[i] = site_loss(s);
    }
    *p = saved;
    return (8.0 * (v[0] - v[1]) - (v[2] - v[3])) / (12.0 * FD_STEP);
}

/* Largest error over the largest |fd| of n entries (data[index[j]] when masked). */
static double tensor_err(struct site_run *s, float *data, const float *grad, uint64_t n,
                         const uint64_t *index, double *scale) {
    double worst = 0.0;
    *scale = 0.0;
    for (uint64_t j = 0; j < n; j++) {
        double want = site_fd(s, &data[index ? index[j] : j]);
        worst = fmax(worst, fabs(grad[j] - want));
        *scale = fmax(*scale, fabs(want));
    }
    return worst / fmax(*scale, 1e-30);
}

/* Gradients of every trainable tensor of `site` and of x, on a batch of `tasks`. */
static void check_site_grads(struct fix *f, struct method_run *mr, const char *label,
                             int32_t site, const int32_t *tasks, int want_tensors) {
    struct site_run s = {.f = f, .mr = mr, .site = site};
    model_site_dims(&f->m, site, &s.d_in, &s.d_out);
    randomize(mr, 31 + (uint64_t)site, 0.5f, 0);
    struct rng g;
    rng_seed(&g, 57);
    s.x = xalloc_floats((size_t)NR * s.d_in);
    for (int32_t j = 0; j < NR * s.d_in; j++) s.x[j] = rng_uniform(&g, -1.0f, 1.0f);
    double *c = xmalloc((size_t)NR * s.d_out * sizeof(double));
    float *cf = xalloc_floats((size_t)NR * s.d_out), *dx = xalloc_floats((size_t)NR * s.d_in);
    for (int32_t j = 0; j < NR * s.d_out; j++) c[j] = cf[j] = rng_uniform(&g, -1.0f, 1.0f);
    s.c = c;

    set_tasks(&f->b, tasks);
    REQUIRE(method_run_batch_begin(mr, &f->b, 1, 0) == 0, "%s", err_msg());
    s.stream = *method_run_rng(mr);
    method_run_zero_grads(mr);
    site_loss(&s);
    const struct model_hooks *hk = method_run_hooks(mr, 1);
    REQUIRE(hk->site_backward(hk->ctx, hk->pass, site, s.x, cf, dx, NR) == 0, "backward: %s",
            err_msg());

    double scale;
    int n_t = 0;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (t->desc.site != site || !t->grad) continue;
        double e = tensor_err(&s, t->data, t->grad, t->n_trainable, t->mask, &scale);
        printf("  %s: %-28s %5llu entries: max err / max |grad| %.2e (max |grad| %.3g)\n",
               label, strstr(t->name, "proj.") + 5, (unsigned long long)t->n_trainable, e,
               scale);
        CHECK(e < GRAD_TOL && scale > 1e-3, "%s: %s: gradient err %.3g (scale %.3g)", label,
              t->name, e, scale);
        n_t++;
    }
    CHECK(n_t == want_tensors, "%s: %d trainable tensors at the site, expected %d", label, n_t,
          want_tensors);
    double e = tensor_err(&s, s.x, dx, (uint64_t)NR * s.d_in, NULL, &scale);
    printf("  %s: %-28s %5d entries: max err / max |grad| %.2e (max |grad| %.3g)\n", label,
           "dx", NR * s.d_in, e, scale);
    CHECK(e < GRAD_TOL && scale > 1e-3, "%s: dx err %.3g (scale %.3g)", label, e, scale);
    free(s.x);
    free(c);
    free(cf);
    free(dx);
}

static void check_fresh_grads(struct fix *f) {
    static const int32_t mixed[B] = {0, 1, 2, 0};
    static const struct {
        const char *label, *variant, *heads, *gumbel;
        int32_t site;
    } cases[] = {
        {"poly, sigmoid", "poly", "0", "false", 6},
        {"poly, Gumbel", "poly", "0", "true", 1},
        {"mhr h=2, Gumbel", "mhr", "2", "true", 6},
        {"mhr h=4, sigmoid", "mhr", "4", "false", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *kv[] = {"variant", cases[i].variant, "n_splits", cases[i].heads,
                            "gumbel", cases[i].gumbel, "temperature", "0.7", NULL};
        struct method_run *mr = create(f, f->poly, kv);
        REQUIRE(mr, "create: %s", err_msg());
        check_site_grads(f, mr, cases[i].label, cases[i].site, mixed, 3);
        method_run_free(mr);
    }
}

/* ---- sources for init_from ------------------------------------------------------------- */

/* "multi" (poly) and "multi_mhr" (mhr, h = 2): tasks 0..2 trained, skills and routing moved. */
static void make_sources(struct fix *f) {
    static const char *const variants[2][2] = {{"multi", "poly"}, {"multi_mhr", "mhr"}};
    for (int i = 0; i < 2; i++) {
        const char *kv[] = {"variant", variants[i][1], "n_splits", i ? "2" : "0", NULL};
        struct method_run *mr = create(f, f->poly, kv);
        REQUIRE(mr, "create: %s", err_msg());
        for (int32_t t = 0; t < 3; t++)
            REQUIRE(method_run_task_begin(mr, t) == 0, "task_begin: %s", err_msg());
        randomize(mr, 101 + (uint64_t)i, 0.5f, 0);
        f->src[i] = (struct source){variants[i][0], mr};
    }
}

/* ---- mhr with one head is poly ----------------------------------------------------------- */

static void check_mhr1_is_poly(struct fix *f) {
    const char *kp[] = {"variant", "poly", NULL}, *km[] = {"variant", "mhr", "n_splits", "1", NULL};
    struct method_run *p = create(f, f->poly, kp), *m = create(f, f->poly, km);
    REQUIRE(p && m, "create: %s", err_msg());
    randomize(p, 5, 0.5f, 0);
    randomize(m, 5, 0.5f, 0);
    int same_tensors = method_run_tensor_count(p) == method_run_tensor_count(m);
    for (int32_t i = 0; same_tensors && i < method_run_tensor_count(p); i++) {
        struct mtensor *a = method_run_tensor(p, i), *b = method_run_tensor(m, i);
        same_tensors = strcmp(a->name, b->name) == 0 && a->numel == b->numel &&
                       (strcmp(a->name, "poly.config") == 0 ||
                        memcmp(a->data, b->data, a->numel * sizeof(float)) == 0);
    }
    static const int32_t mixed[B] = {0, 1, 2, 3};
    set_tasks(&f->b, mixed);
    size_t n = (size_t)NR * f->m.cfg.vocab;
    float *lp = xalloc_floats(n), *lm = xalloc_floats(n), *bare = xalloc_floats(n);
    int same[2];
    for (int training = 0; training < 2; training++) {
        logits(f, &f->m, p, &f->b, training, lp);
        logits(f, &f->m, m, &f->b, training, lm);
        same[training] = memcmp(lp, lm, n * sizeof(float)) == 0;
    }
    mt_forward(&f->m, f->a, &f->b, NULL);
    memcpy(bare, model_logits(f->a), n * sizeof(float));
    double moved = max_abs_diff(lp, bare, n);
    printf("mhr with n_splits = 1 against poly: same tensors %s; logits bit-identical in "
           "evaluation %s, in training (Gumbel) %s; max |adapter effect| %.3g\n",
           same_tensors ? "yes" : "NO", same[0] ? "yes" : "NO", same[1] ? "yes" : "NO", moved);
    CHECK(same_tensors && same[0] && same[1], "mhr h=1 differs from poly");
    CHECK(moved > 1e-2, "the adapters change nothing (%.3g)", moved);
    free(lp), free(lm), free(bare);
    method_run_free(p);
    method_run_free(m);
}

/* ---- per-row tasks ----------------------------------------------------------------------- */

static void check_row_tasks(struct fix *f) {
    const char *kv[] = {"variant", "mhr", "n_splits", "2", NULL};
    struct method_run *mr = create(f, f->poly, kv);
    REQUIRE(mr, "create: %s", err_msg());
    randomize(mr, 9, 0.5f, 0);
    /* examples 0 and 1: the same tokens under tasks 0 and 1; 2 and 3: other tokens */
    static const int32_t tasks[B] = {0, 1, 2, 0};
    set_tasks(&f->b, tasks);
    memcpy(f->b.tokens + T, f->b.tokens, T * sizeof(int32_t));
    int32_t V = f->m.cfg.vocab;
    size_t n = (size_t)NR * V, per = (size_t)T * V;
    float *all = xalloc_floats(n), *one = xalloc_floats(per);
    logits(f, &f->m, mr, &f->b, 0, all);
    double worst = 0.0;
    for (int32_t e = 0; e < B; e++) {
        struct batch b1 = {0};
        mt_batch(&b1, 1, T, V, 1);
        memcpy(b1.tokens, f->b.tokens + e * T, T * sizeof(int32_t));
        memcpy(b1.targets, f->b.targets + e * T, T * sizeof(int32_t));
        b1.example_task[0] = tasks[e];
        logits(f, &f->m, mr, &b1, 0, one);
        worst = fmax(worst, max_abs_diff(all + e * per, one, per));
        mt_batch_free(&b1);
    }
    double across = max_abs_diff(all, all + per, per);
    /* Training: the same tokens and task in examples 0 and 1 get their own Gumbel draws. */
    static const int32_t same_task[B] = {2, 2, 1, 0};
    set_tasks(&f->b, same_task);
    logits(f, &f->m, mr, &f->b, 1, all);
    double noise = max_abs_diff(all, all + per, per);
    logits(f, &f->m, mr, &f->b, 0, all);
    double eval_same = max_abs_diff(all, all + per, per);
    printf("rows by task: same tokens under tasks 0 and 1 differ by %.3g; each example against "
           "a batch of it alone: max diff %.3g; same task, training: examples differ by %.3g "
           "(one Gumbel draw each), evaluation: %.3g\n", across, worst, noise, eval_same);
    CHECK(across > 1e-2, "two tasks gave the same logits (%.3g)", across);
    CHECK(worst <= 1e-5, "an example's logits depend on its batch (%.3g)", worst);
    CHECK(noise > 1e-2, "the Gumbel draw is not per example (%.3g)", noise);
    /* rows of one sgemm may round apart by an ulp; no noise means no more than that */
    CHECK(eval_same <= 1e-5, "evaluation routing is not deterministic per task (%.3g)",
          eval_same);
    free(all), free(one);
    method_run_free(mr);
}

/* ---- poly-mu ----------------------------------------------------------------------------- */

/* The source's skills averaged here: A_mu (r, d_in), B_mu (d_out, r) in LoRA's layout. */
static void averaged(struct fix *f, int32_t site, uint32_t h, float *a_mu, float *b_mu) {
    const uint32_t K = 8, r = 4;
    int32_t d_in, d_out;
    model_site_dims(&f->m, site, &d_in, &d_out);
    const float *A = site_tensor(f, f->src[h == 2].mr, site, "poly_lora_A")->data;
    const float *Bs = site_tensor(f, f->src[h == 2].mr, site, "poly_lora_B")->data;
    uint32_t hi = (uint32_t)d_in / h, ho = (uint32_t)d_out / h;
    for (uint32_t q = 0; q < h; q++) {
        for (uint32_t i = 0; i < hi; i++)
            for (uint32_t j = 0; j < r; j++) {
                double acc = 0.0;
                for (uint32_t k = 0; k < K; k++) acc += A[(((q * K + k) * hi) + i) * r + j];
                a_mu[j * (uint32_t)d_in + q * hi + i] = (float)(acc / K);
            }
        for (uint32_t j = 0; j < r; j++)
            for (uint32_t c = 0; c < ho; c++) {
                double acc = 0.0;
                for (uint32_t k = 0; k < K; k++) acc += Bs[(((q * K + k) * r) + j) * ho + c];
                b_mu[(q * ho + c) * r + j] = (float)(acc / K);
            }
    }
}

static void check_poly_mu(struct fix *f) {
    for (int h2 = 0; h2 < 2; h2++) {
        const char *from = h2 ? "multi_mhr" : "multi";
        const char *kv[] = {"variant", "poly-mu", "init_from", from, NULL};
        const char *lkv[] = {"r", "4", "lora_alpha", "1", "target_modules",
                             "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj", NULL};
        struct method_run *mu = create(f, f->poly, kv), *lora = create(f, f->lora, lkv);
        REQUIRE(mu && lora, "create: %s", err_msg());
        double fac = 0.0;
        for (int32_t i = 0; i < method_run_site_count(mu); i++) {
            int32_t site = method_run_site(mu, i), d_in, d_out;
            model_site_dims(&f->m, site, &d_in, &d_out);
            float *a = xalloc_floats((size_t)4 * d_in), *b = xalloc_floats((size_t)4 * d_out);
            averaged(f, site, h2 ? 2 : 1, a, b);
            struct mtensor *ma = site_tensor(f, mu, site, "lora_A.weight");
            struct mtensor *mb = site_tensor(f, mu, site, "lora_B.weight");
            fac = fmax(fac, max_abs_diff(ma->data, a, ma->numel));
            fac = fmax(fac, max_abs_diff(mb->data, b, mb->numel));
            memcpy(site_tensor(f, lora, site, "lora_A.weight")->data, a, ma->numel * sizeof(float));
            memcpy(site_tensor(f, lora, site, "lora_B.weight")->data, b, mb->numel * sizeof(float));
            free(a), free(b);
        }
        static const int32_t tasks[B] = {3, 0, 1, 3};
        set_tasks(&f->b, tasks);
        size_t n = (size_t)NR * f->m.cfg.vocab;
        float *lm = xalloc_floats(n), *ll = xalloc_floats(n), *lu = xalloc_floats(n);
        logits(f, &f->m, mu, &f->b, 1, lm);
        logits(f, &f->m, lora, &f->b, 1, ll);
        double e_lora = mt_nmse(lm, ll, n);
        /* The source with every routing logit equal: uniform weights 1/K in every head. */
        struct method_run *src = f->src[h2].mr;
        float **keep = xcalloc((size_t)method_run_tensor_count(src), sizeof *keep);
        for (int32_t i = 0; i < method_run_tensor_count(src); i++) {
            struct mtensor *t = method_run_tensor(src, i);
            if (!strstr(t->name, "module_logits")) continue;
            keep[i] = xalloc_floats(t->numel);
            memcpy(keep[i], t->data, t->numel * sizeof(float));
            for (uint64_t j = 0; j < t->numel; j++) t->data[j] = 0.3f;
        }
        logits(f, &f->m, src, &f->b, 0, lu);
        double e_uniform = mt_nmse(lm, lu, n);
        for (int32_t i = 0; i < method_run_tensor_count(src); i++)
            if (keep[i]) {
                memcpy(method_run_tensor(src, i)->data, keep[i],
                       method_run_tensor(src, i)->numel * sizeof(float));
                free(keep[i]);
            }
        free(keep);
        /* ΔW: the LoRA's, exact. */
        int32_t site = 6, d_in, d_out;
        model_site_dims(&f->m, site, &d_in, &d_out);
        float *dm = xalloc_floats((size_t)d_in * d_out), *dl = xalloc_floats((size_t)d_in * d_out);
        REQUIRE(method_run_delta(mu, site, 1.0f, dm) == 0 &&
                    method_run_delta(lora, site, 1.0f, dl) == 0,
                "delta: %s", err_msg());
        double e_delta = max_abs_diff(dm, dl, (size_t)d_in * d_out);
        printf("poly-mu from %s (h = %d): factors against the skills' means: max diff %.3g; "
               "logits against lora with those factors: NMSE %.3g; against the source with "
               "uniform routing: NMSE %.3g; ΔW against lora's: max diff %.3g; %llu trainable "
               "entries\n", from, h2 ? 2 : 1, fac, e_lora, e_uniform, e_delta,
               (unsigned long long)method_run_trainable_count(mu));
        CHECK(fac <= 1e-6, "poly-mu factors are not the means (%.3g)", fac);
        CHECK(e_lora <= 1e-12, "poly-mu differs from lora (NMSE %.3g)", e_lora);
        CHECK(e_uniform <= 1e-10, "poly-mu differs from uniform routing (NMSE %.3g)", e_uniform);
        CHECK(e_delta <= 1e-6, "poly-mu ΔW differs from lora's (%.3g)", e_delta);
        CHECK(method_run_trainable_count(mu) == method_run_trainable_count(lora),
              "poly-mu trains %llu entries, lora %llu",
              (unsigned long long)method_run_trainable_count(mu),
              (unsigned long long)method_run_trainable_count(lora));
        free(lm), free(ll), free(lu), free(dm), free(dl);
        if (!h2) {
            static const int32_t g[B] = {3, 0, 1, 3};
            check_site_grads(f, mu, "poly-mu", 6, g, 2);
        }
        method_run_free(mu);
        method_run_free(lora);
    }
}

/* ---- chained stages ---------------------------------------------------------------------- */

static int same_data(struct mtensor *a, struct mtensor *b) {
    return a->numel == b->numel && memcmp(a->data, b->data, a->numel * sizeof(float)) == 0;
}

/* A few-shot stage from `from`: skills and trained rows copied, task 3's row fresh. */
static void check_start(struct fix *f, struct method_run *mr, int src, const char *label,
                        int skills_train) {
    struct method_run *s = f->src[src].mr;
    int skills = 1, rows = 1, fresh = 1, masks = 1;
    uint64_t hk = src ? 16 : 8;
    for (int32_t i = 0; i < method_run_site_count(mr); i++) {
        int32_t site = method_run_site(mr, i);
        struct mtensor *a = site_tensor(f, mr, site, "poly_lora_A");
        struct mtensor *b = site_tensor(f, mr, site, "poly_lora_B");
        struct mtensor *z = site_tensor(f, mr, site, "poly_router.module_logits");
        struct mtensor *sz = site_tensor(f, s, site, "poly_router.module_logits");
        skills &= same_data(a, site_tensor(f, s, site, "poly_lora_A")) &&
                  same_data(b, site_tensor(f, s, site, "poly_lora_B")) &&
                  !!(a->desc.flags & PEFT_TENSOR_TRAINABLE) == skills_train &&
                  !!(b->desc.flags & PEFT_TENSOR_TRAINABLE) == skills_train;
        rows &= memcmp(z->data, sz->data, 3 * hk * sizeof(float)) == 0;
        for (uint64_t j = 3 * hk; j < 4 * hk; j++)
            fresh &= fabsf(z->data[j]) <= 1e-3f && z->data[j] != sz->data[j];
        masks &= z->mask && z->n_trainable == hk && z->mask[0] == 3 * hk &&
                 z->mask[hk - 1] == 4 * hk - 1;
    }
    const float *tr = mt_find_tensor(mr, "poly.task_rows")->data;
    int marks = tr[0] == 1 && tr[1] == 1 && tr[2] == 1 && tr[3] == 0;
    printf("%s: skills as the source's (%s) %s; rows of trained tasks copied %s; the new "
           "task's row fresh %s; routing masked to the new row %s; task_rows %g %g %g %g\n",
           label, skills_train ? "trainable" : "frozen", skills ? "yes" : "NO",
           rows ? "yes" : "NO", fresh ? "yes" : "NO", masks ? "yes" : "NO", tr[0], tr[1],
           tr[2], tr[3]);
    CHECK(skills && rows && fresh && masks && marks, "%s: start from init_from", label);
}

/* ΔW of a stage that trained one task: the merged model equals the hooked one on it. */
static void check_delta_one_task(struct fix *f, struct method_run *mr, const char *label) {
    static const int32_t t3[B] = {3, 3, 3, 3};
    set_tasks(&f->b, t3);
    size_t n = (size_t)NR * f->m.cfg.vocab;
    float *hooked = xalloc_floats(n), *merged = xalloc_floats(n);
    logits(f, &f->m, mr, &f->b, 0, hooked);
    struct model m2;
    mt_model_copy(&m2, &f->m);
    for (int32_t i = 0; i < method_run_site_count(mr); i++) {
        int32_t site = method_run_site(mr, i);
        REQUIRE(method_run_delta(mr, site, 1.0f, model_site_weight(&m2, site)) == 0,
                "%s: delta: %s", label, err_msg());
    }
    mt_forward(&m2, f->a, &f->b, NULL);
    memcpy(merged, model_logits(f->a), n * sizeof(float));
    double e = mt_nmse(merged, hooked, n);
    printf("%s: trained task 3 only: merged weights against the hooked model on it: NMSE %.3g\n",
           label, e);
    CHECK(e < 1e-10, "%s: merged logits NMSE %.3g", label, e);
    model_free(&m2);
    free(hooked), free(merged);
}

static void check_chain(struct fix *f) {
    /* poly few-shot: skills and the new row train */
    const char *kp[] = {"variant", "poly", "init_from", "multi", NULL};
    struct method_run *p = create(f, f->poly, kp);
    REQUIRE(p, "create: %s", err_msg());
    check_start(f, p, 0, "poly from multi", 1);
    uint64_t want = 0;
    for (int32_t i = 0; i < method_run_site_count(p); i++) {
        int32_t d_in, d_out;
        model_site_dims(&f->m, method_run_site(p, i), &d_in, &d_out);
        want += 8 * 4 * (uint64_t)(d_in + d_out) + 8;
    }
    CHECK(method_run_trainable_count(p) == want, "poly few-shot trains %llu, expected %llu",
          (unsigned long long)method_run_trainable_count(p), (unsigned long long)want);
    REQUIRE(method_run_task_begin(p, 3) == 0, "task_begin: %s", err_msg());
    static const int32_t g[B] = {3, 0, 3, 1};
    check_site_grads(f, p, "poly from multi", 1, g, 3);
    check_delta_one_task(f, p, "poly from multi");
    method_run_free(p);

    /* mhr-z: only the new row trains; the heads come from the source */
    const char *kz[] = {"variant", "mhr-z", "init_from", "multi_mhr", NULL};
    struct method_run *z = create(f, f->poly, kz);
    REQUIRE(z, "create: %s", err_msg());
    check_start(f, z, 1, "mhr-z from multi_mhr", 0);
    uint64_t nz = method_run_trainable_count(z);
    printf("mhr-z: %llu trainable entries (14 sites x 2 heads x 8 skills = %d)\n",
           (unsigned long long)nz, 14 * 16);
    CHECK(nz == 14 * 16, "mhr-z trains %llu entries", (unsigned long long)nz);
    CHECK(method_run_task_begin(z, 0) != 0, "mhr-z accepted a task init_from trained");
    printf("refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), "task 'reverse' was trained by init_from = 'multi_mhr'") != NULL,
          "message: %s", err_msg());
    REQUIRE(method_run_task_begin(z, 3) == 0, "task_begin: %s", err_msg());
    check_site_grads(f, z, "mhr-z from multi_mhr", 6, g, 1);
    check_delta_one_task(f, z, "mhr-z from multi_mhr");
    method_run_free(z);

    /* the multi-task stage has no single ΔW */
    int32_t d_in, d_out;
    model_site_dims(&f->m, 0, &d_in, &d_out);
    float *d = xalloc_floats((size_t)d_in * d_out);
    CHECK(method_run_delta(f->src[0].mr, 0, 1.0f, d) != 0, "a 3-task stage gave a ΔW");
    printf("refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), "this stage trained 3 tasks") != NULL, "message: %s", err_msg());
    free(d);
}

/* ---- files -------------------------------------------------------------------------------- */

/* Save, load into a fresh instance (then begin it, as a resumed stage is): every tensor and
 * the logits bit-identical. */
static void check_roundtrip(struct fix *f, const char *const *kv, const char *label,
                            const char *dir) {
    struct method_run *mr = create(f, f->poly, kv);
    REQUIRE(mr, "create: %s", err_msg());
    REQUIRE(method_run_task_begin(mr, 3) == 0, "task_begin: %s", err_msg());
    randomize(mr, 77, 0.5f, 0); /* the skills move away from init_from's, if it has one */
    char *path = xasprintf("%s/poly.safetensors", dir);
    REQUIRE(method_run_save(mr, path, NULL) == 0, "save: %s", err_msg());
    struct method_run *back = create_on(f, &f->m, f->poly, kv, 999);
    REQUIRE(back, "create: %s", err_msg());
    REQUIRE(method_run_load(back, path) == 0, "load: %s", err_msg());
    REQUIRE(method_run_begin(back) == 0, "begin: %s", err_msg());
    int same = method_run_tensor_count(back) == method_run_tensor_count(mr);
    for (int32_t i = 0; same && i < method_run_tensor_count(mr); i++)
        same = same_data(method_run_tensor(mr, i), method_run_tensor(back, i));
    static const int32_t tasks[B] = {3, 0, 1, 2};
    set_tasks(&f->b, tasks);
    size_t n = (size_t)NR * f->m.cfg.vocab;
    float *l1 = xalloc_floats(n), *l2 = xalloc_floats(n);
    logits(f, &f->m, mr, &f->b, 0, l1);
    logits(f, &f->m, back, &f->b, 0, l2);
    int same_logits = memcmp(l1, l2, n * sizeof(float)) == 0;
    printf("%s: save -> load -> stage_begin: tensors bit-identical %s, logits bit-identical "
           "%s\n", label, same ? "yes" : "NO", same_logits ? "yes" : "NO");
    CHECK(same && same_logits, "%s: save -> load", label);
    remove(path);
    free(path);
    free(l1), free(l2);
    method_run_free(back);
    method_run_free(mr);
}

int main(int argc, char **argv) {
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    struct fix f = {0};
    f.poly = mt_method(&reg, argc, argv, "poly");
    f.lora = mt_method(&reg, argc, argv, "lora");
    mt_model(&f.m, 0, 11, 0.3f);
    for (int i = 0; i < NT; i++) task_table_id(&f.tasks, task_names[i]);
    mt_batch(&f.b, B, T, f.m.cfg.vocab, 3);
    f.a = model_acts_new();
    char dir[] = "/tmp/peft_poly_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp failed");
    double t0 = now_seconds();

    check_layout(&f);
    make_sources(&f);
    check_refusals(&f);
    check_fresh_grads(&f);
    check_mhr1_is_poly(&f);
    check_row_tasks(&f);
    check_poly_mu(&f);
    check_chain(&f);
    const char *k_mhr[] = {"variant", "mhr", "n_splits", "2", NULL};
    check_roundtrip(&f, k_mhr, "mhr h=2", dir);
    const char *k_p[] = {"variant", "poly", "init_from", "multi", NULL};
    check_roundtrip(&f, k_p, "poly from multi (a resumed stage keeps its moved skills)", dir);

    for (int i = 0; i < 2; i++) method_run_free(f.src[i].mr);
    remove_tree(dir);
    model_acts_free(f.a);
    mt_batch_free(&f.b);
    task_table_free(&f.tasks);
    model_free(&f.m);
    registry_free(&reg);
    printf("poly_unit: %.2f s; %d failures\n", now_seconds() - t0, check_failures);
    return check_status();
}
