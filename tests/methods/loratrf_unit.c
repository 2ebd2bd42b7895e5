/*
 * loratrf_unit: the LoRATRF plugin's contract, through the real loader and host. LoRATRF has
 * no public code or equations; the plugin is the documented reconstruction of the README
 * (section "LoRATRF (a reconstruction)"), and this test holds it to that text.
 *   - names and shapes: LoRA's HF PEFT names plus trf_filter.weight / trf_filter.bias; the
 *     trainable count is r (d_in + d_out) + r^2 + r per site for f1 and
 *     r (d_in + d_out) + 2 d_out for f2;
 *   - init: B = 0, filter weight 0, filter bias = filter_bias_init, so the logits of a fresh
 *     instance are the base model's bit for bit (both filters, dropout on, training and
 *     evaluation), and once B moves, the site's addition is sigmoid(b0) times LoRA's with the
 *     same A, B and scale;
 *   - gradients at the site level, both filters, with and without dropout: every parameter
 *     entry and dx (f2's path through h0 = x W^T included) against fourth-order central
 *     differences of L = sum(c * (y - x W^T)) accumulated in double;
 *   - delta_weight and merge are refused with the reason, the weights untouched;
 *   - bad keys are refused with the key named;
 *   - LoRA's and LoRATRF's trainable counts on the conf/loratrf.ini model at the same rank
 *     and at about 2/3 of it (printed as a table, each count checked against its formula).
 * Usage: test_loratrf_unit PLUGIN.so... (the lora and loratrf plugins among them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"

enum { B = 2, T = 5, NR = B * T };

#define FD_STEP 1e-2
/* Site-level differences of an fp32 forward with step 1e-2 leave ~1e-4 of noise against
 * gradients of order 1; per tensor, the largest error over the largest |gradient|. */
#define GRAD_TOL 2e-3

struct fix {
    struct model m;
    struct task_table tasks;
    struct batch b;
    struct model_acts *a;
};

static struct method_run *create(struct fix *f, const struct plugin_method *pm,
                                 const char *const *kv) {
    struct method_env env = mt_env(&f->tasks, 42);
    return mt_run_create(pm, &f->m, &env, kv);
}

enum kind { LORA, F1, F2 };

/* The count the formula gives over the method's sites: r (d_in + d_out) per site, plus
 * r^2 + r (f1) or 2 d_out (f2). */
static uint64_t formula(const struct model *m, struct method_run *mr, int64_t r, enum kind k) {
    uint64_t n = 0;
    for (int32_t i = 0; i < method_run_site_count(mr); i++) {
        int32_t d_in, d_out;
        model_site_dims(m, method_run_site(mr, i), &d_in, &d_out);
        n += (uint64_t)r * (uint64_t)(d_in + d_out);
        if (k == F1) n += (uint64_t)(r * r + r);
        if (k == F2) n += 2 * (uint64_t)d_out;
    }
    return n;
}

/* ---- names, shapes, counts ------------------------------------------------------------ */

static void check_names(struct fix *f, const struct plugin_method *trf) {
    static const struct {
        const char *filter, *r, *targets;
    } cases[] = {
        {"f1", "8", "q_proj v_proj"}, {"f1", "3", "all-linear"},
        {"f2", "8", "q_proj v_proj"}, {"f2", "3", "all-linear"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *kv[] = {"filter", cases[c].filter, "r", cases[c].r, "target_modules",
                            cases[c].targets, NULL};
        struct method_run *mr = create(f, trf, kv);
        REQUIRE(mr, "create: %s", err_msg());
        int f2 = strcmp(cases[c].filter, "f2") == 0;
        int64_t r = atoi(cases[c].r);
        uint64_t got = method_run_trainable_count(mr);
        uint64_t want = formula(&f->m, mr, r, f2 ? F2 : F1);
        printf("%s r %lld %s: %d sites, %d tensors, %llu trainable, formula %llu\n",
               cases[c].filter, (long long)r, cases[c].targets, method_run_site_count(mr),
               method_run_tensor_count(mr), (unsigned long long)got, (unsigned long long)want);
        CHECK(got == want, "%s r %lld: %llu trainable, formula %llu", cases[c].filter,
              (long long)r, (unsigned long long)got, (unsigned long long)want);
        CHECK(method_run_tensor_count(mr) == 4 * method_run_site_count(mr), "tensors %d",
              method_run_tensor_count(mr));
        /* layer 1 k_proj (16 -> 8) or v_proj (16 -> 8): the filter's shapes */
        const char *site = strcmp(cases[c].targets, "all-linear") == 0 ? "k_proj" : "v_proj";
        char *wn = xasprintf("base_model.model.model.layers.1.self_attn.%s.trf_filter.weight", site);
        char *bn = xasprintf("base_model.model.model.layers.1.self_attn.%s.trf_filter.bias", site);
        char *an = xasprintf("base_model.model.model.layers.1.self_attn.%s.lora_A.weight", site);
        char *bbn = xasprintf("base_model.model.model.layers.1.self_attn.%s.lora_B.weight", site);
        struct mtensor *w = mt_find_tensor(mr, wn), *b = mt_find_tensor(mr, bn), *A = mt_find_tensor(mr, an), *Bt = mt_find_tensor(mr, bbn);
        CHECK(w && b && A && Bt, "%s: tensors missing", cases[c].filter);
        if (w && b && A && Bt) {
            uint64_t d = f2 ? 8 : (uint64_t)r;
            CHECK(A->desc.ndim == 2 && A->desc.shape[0] == (uint64_t)r && A->desc.shape[1] == 16,
                  "lora_A shape");
            CHECK(Bt->desc.ndim == 2 && Bt->desc.shape[0] == 8 && Bt->desc.shape[1] == (uint64_t)r &&
                  (Bt->desc.flags & PEFT_TENSOR_NEGATE), "lora_B shape/flags");
            CHECK(f2 ? (w->desc.ndim == 1 && w->desc.shape[0] == 8)
                     : (w->desc.ndim == 2 && w->desc.shape[0] == d && w->desc.shape[1] == d),
                  "%s: trf_filter.weight shape", cases[c].filter);
            CHECK(b->desc.ndim == 1 && b->desc.shape[0] == d, "%s: trf_filter.bias shape",
                  cases[c].filter);
            CHECK((w->desc.flags & PEFT_TENSOR_TRAINABLE) && (b->desc.flags & PEFT_TENSOR_TRAINABLE),
                  "filter not trainable");
            CHECK(!(w->desc.flags & PEFT_TENSOR_NEGATE) && !(b->desc.flags & PEFT_TENSOR_NEGATE),
                  "the filter must not flip under negation");
        }
        free(wn), free(bn), free(an), free(bbn);
        method_run_free(mr);
    }
}

/* ---- init: no-op, the gate's value ---------------------------------------------------- */

static void logits(struct fix *f, struct method_run *mr, int training, float *out) {
    REQUIRE(method_run_batch_begin(mr, &f->b, training, 0) == 0, "%s", err_msg());
    mt_forward(&f->m, f->a, &f->b, method_run_hooks(mr, training));
    memcpy(out, model_logits(f->a), (size_t)B * T * f->m.cfg.vocab * sizeof(float));
}

static void check_init(struct fix *f, const struct plugin_method *trf) {
    size_t n = (size_t)B * T * f->m.cfg.vocab;
    float *bare = xmalloc(n * sizeof(float)), *got = xmalloc(n * sizeof(float));
    mt_forward(&f->m, f->a, &f->b, NULL);
    memcpy(bare, model_logits(f->a), n * sizeof(float));
    static const char *const b0s[] = {"2", "0", "-3.5"};
    for (int f2 = 0; f2 < 2; f2++)
        for (size_t k = 0; k < sizeof b0s / sizeof b0s[0]; k++) {
            const char *kv[] = {"filter", f2 ? "f2" : "f1", "filter_bias_init", b0s[k],
                                "lora_dropout", "0.1", "target_modules", "all-linear", NULL};
            struct method_run *mr = create(f, trf, kv);
            REQUIRE(mr, "create: %s", err_msg());
            double b0 = atof(b0s[k]);
            int values_ok = 1;
            for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
                struct mtensor *t = method_run_tensor(mr, i);
                float want = strstr(t->name, "trf_filter.bias") ? (float)b0 : 0.0f;
                if (strstr(t->name, "lora_A")) continue;
                for (uint64_t j = 0; j < t->numel; j++) values_ok &= t->data[j] == want;
            }
            int same = 1;
            for (int training = 0; training < 2; training++) {
                logits(f, mr, training, got);
                same &= memcmp(bare, got, n * sizeof(float)) == 0;
            }
            printf("%s, filter_bias_init %s: B = 0, filter weight = 0, filter bias = b0: %s; "
                   "logits (training and eval) bit-identical to the base model: %s\n",
                   f2 ? "f2" : "f1", b0s[k], values_ok ? "yes" : "NO", same ? "yes" : "NO");
            CHECK(values_ok, "initial values");
            CHECK(same, "a fresh instance changed the logits");
            method_run_free(mr);
        }
    free(bare);
    free(got);
}

/* y (NR, d_out) = x W^T of a site, rounded once from double. */
static void base_out(const struct model *m, int32_t site, const float *x, float *y) {
    int32_t d_in, d_out;
    model_site_dims(m, site, &d_in, &d_out);
    const float *w = model_site_weight(m, site); /* (d_out, d_in) */
    for (int32_t i = 0; i < NR; i++)
        for (int32_t o = 0; o < d_out; o++) {
            double acc = 0.0;
            for (int32_t k = 0; k < d_in; k++) acc += (double)x[i * d_in + k] * w[o * d_in + k];
            y[i * d_out + o] = (float)acc;
        }
}

/* The site hook's addition to x W^T, in double per entry, for the given mode. */
static void site_add(struct fix *f, struct method_run *mr, int training, int32_t site,
                     const float *x, double *add) {
    int32_t d_in, d_out;
    model_site_dims(&f->m, site, &d_in, &d_out);
    float *y0 = xalloc_floats((size_t)NR * d_out), *y = xalloc_floats((size_t)NR * d_out);
    base_out(&f->m, site, x, y0);
    memcpy(y, y0, (size_t)NR * d_out * sizeof(float));
    const struct model_hooks *hk = method_run_hooks(mr, training);
    REQUIRE(hk->site_forward(hk->ctx, hk->pass, site, x, y, NR) == 0, "forward: %s", err_msg());
    for (int32_t j = 0; j < NR * d_out; j++) add[j] = (double)y[j] - y0[j];
    free(y0);
    free(y);
}

static void random_x(float *x, size_t n, uint64_t seed) {
    struct rng g;
    rng_seed(&g, seed);
    for (size_t j = 0; j < n; j++) x[j] = rng_uniform(&g, -1.0f, 1.0f);
}

/* With the filter weight at 0 the gate is sigmoid(b0) for every entry: LoRATRF's addition is
 * sigmoid(b0) times LoRA's with the same A, B, r and lora_alpha. */
static void check_gate_value(struct fix *f, const struct plugin_method *trf,
                             const struct plugin_method *lora) {
    const int32_t site = 6; /* layer 0 down_proj: 24 -> 16 */
    for (int f2 = 0; f2 < 2; f2++) {
        const char *kv[] = {"filter", f2 ? "f2" : "f1", "r", "4", "lora_alpha", "6",
                            "target_modules", "down_proj", NULL};
        const char *lkv[] = {"r", "4", "lora_alpha", "6", "target_modules", "down_proj", NULL};
        struct method_run *mt = create(f, trf, kv), *ml = create(f, lora, lkv);
        REQUIRE(mt && ml, "create: %s", err_msg());
        struct rng g;
        rng_seed(&g, 17);
        for (int32_t i = 0; i < method_run_tensor_count(ml); i++) {
            struct mtensor *tl = method_run_tensor(ml, i), *tt = mt_find_tensor(mt, tl->name);
            REQUIRE(tt && tt->numel == tl->numel, "%s: missing in loratrf", tl->name);
            if (strstr(tl->name, "lora_B"))
                for (uint64_t j = 0; j < tl->numel; j++) tl->data[j] = rng_uniform(&g, -1, 1);
            memcpy(tt->data, tl->data, tl->numel * sizeof(float));
        }
        REQUIRE(method_run_batch_begin(mt, &f->b, 0, 0) == 0 &&
                method_run_batch_begin(ml, &f->b, 0, 0) == 0, "%s", err_msg());
        float x[NR * 24];
        double at[NR * 16], al[NR * 16], worst = 0.0, big = 0.0;
        random_x(x, NR * 24, 5);
        site_add(f, mt, 0, site, x, at);
        site_add(f, ml, 0, site, x, al);
        double gate = 1.0 / (1.0 + exp(-2.0)); /* the default filter_bias_init, 2 */
        for (int32_t j = 0; j < NR * 16; j++) {
            worst = fmax(worst, fabs(at[j] - gate * al[j]));
            big = fmax(big, fabs(al[j]));
        }
        printf("%s: addition = sigmoid(2) = %.4f x LoRA's: max |LoRA's| %.3g, max error %.3g\n",
               f2 ? "f2" : "f1", gate, big, worst);
        CHECK(big > 0.1, "LoRA's addition is zero");
        CHECK(worst <= 1e-5 * fmax(big, 1.0), "the initial gate is not sigmoid(2): err %.3g",
              worst);
        method_run_free(mt);
        method_run_free(ml);
    }
}

/* ---- gradients at the site level ------------------------------------------------------- */

struct site_run {
    struct fix *f;
    struct method_run *mr;
    int32_t site, d_in, d_out;
    float *x;          /* (NR, d_in) */
    const double *c;   /* (NR, d_out) dL/dy */
    struct rng stream; /* before every forward, so dropout masks repeat */
};

static double site_loss(struct site_run *s) {
    size_t n = (size_t)NR * s->d_out;
    double *add = xmalloc(n * sizeof(double)), L = 0.0;
    *method_run_rng(s->mr) = s->stream;
    site_add(s->f, s->mr, 1, s->site, s->x, add);
    for (size_t j = 0; j < n; j++) L += s->c[j] * add[j];
    free(add);
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

/* Largest error over the largest |fd| of n entries. */
static double tensor_err(struct site_run *s, float *p, const float *grad, uint64_t n,
                         double *scale) {
    double worst = 0.0;
    *scale = 0.0;
    for (uint64_t j = 0; j < n; j++) {
        double want = site_fd(s, &p[j]);
        worst = fmax(worst, fabs(grad[j] - want));
        *scale = fmax(*scale, fabs(want));
    }
    return worst / fmax(*scale, 1e-30);
}

static void check_site_grads(struct fix *f, const struct plugin_method *trf, int f2,
                             const char *dropout, int32_t site) {
    const char *kv[] = {"filter", f2 ? "f2" : "f1", "r", "4", "lora_alpha", "6",
                        "lora_dropout", dropout, "target_modules", "all-linear", NULL};
    struct site_run s = {.f = f, .site = site};
    s.mr = create(f, trf, kv);
    REQUIRE(s.mr, "create: %s", err_msg());
    model_site_dims(&f->m, site, &s.d_in, &s.d_out);
    struct rng g;
    rng_seed(&g, 31 + (uint64_t)site);
    for (int32_t i = 0; i < method_run_tensor_count(s.mr); i++) {
        struct mtensor *t = method_run_tensor(s.mr, i);
        for (uint64_t j = 0; j < t->numel; j++) t->data[j] += rng_uniform(&g, -0.5f, 0.5f);
    }
    s.x = xalloc_floats((size_t)NR * s.d_in);
    random_x(s.x, (size_t)NR * s.d_in, 7);
    double *c = xmalloc((size_t)NR * s.d_out * sizeof(double));
    float *cf = xalloc_floats((size_t)NR * s.d_out), *dx = xalloc_floats((size_t)NR * s.d_in);
    for (int32_t j = 0; j < NR * s.d_out; j++) c[j] = cf[j] = rng_uniform(&g, -1.0f, 1.0f);
    s.c = c;

    REQUIRE(method_run_batch_begin(s.mr, &f->b, 1, 0) == 0, "%s", err_msg());
    s.stream = *method_run_rng(s.mr);
    method_run_zero_grads(s.mr);
    site_loss(&s);
    const struct model_hooks *hk = method_run_hooks(s.mr, 1);
    REQUIRE(hk->site_backward(hk->ctx, hk->pass, site, s.x, cf, dx, NR) == 0, "backward: %s",
            err_msg());

    char label[64];
    snprintf(label, sizeof label, "%s, dropout %s, site %d (%d -> %d)", f2 ? "f2" : "f1",
             dropout, site, s.d_in, s.d_out);
    double worst = 0.0, scale;
    int n_t = 0;
    for (int32_t i = 0; i < method_run_tensor_count(s.mr); i++) {
        struct mtensor *t = method_run_tensor(s.mr, i);
        if (t->desc.site != site) continue;
        double e = tensor_err(&s, t->data, t->grad, t->numel, &scale);
        printf("  %s: %-52s max err / max |grad| %.2e (max |grad| %.3g)\n", label,
               strstr(t->name, "proj.") + 5, e, scale);
        CHECK(e < GRAD_TOL && scale > 1e-3, "%s: %s: gradient err %.3g (scale %.3g)", label,
              t->name, e, scale);
        worst = fmax(worst, e);
        n_t++;
    }
    CHECK(n_t == 4, "%s: %d tensors at the site", label, n_t);
    double e = tensor_err(&s, s.x, dx, (uint64_t)NR * s.d_in, &scale);
    printf("  %s: %-52s max err / max |grad| %.2e (max |grad| %.3g)\n", label, "dx", e, scale);
    CHECK(e < GRAD_TOL && scale > 1e-3, "%s: dx err %.3g (scale %.3g)", label, e, scale);
    free(s.x), free(c), free(cf), free(dx);
    method_run_free(s.mr);
}

/* ---- refusals ------------------------------------------------------------------------- */

static void check_no_merge(struct fix *f, const struct plugin_method *trf) {
    for (int f2 = 0; f2 < 2; f2++) {
        const char *kv[] = {"filter", f2 ? "f2" : "f1", NULL};
        struct method_run *mr = create(f, trf, kv);
        REQUIRE(mr, "create: %s", err_msg());
        float d[16 * 16];
        memset(d, 0, sizeof d);
        int rc = method_run_delta(mr, 0, 1.0f, d);
        char *want = xasprintf("test.ini [stage.test]: loratrf: delta_weight at "
                               "model.layers.0.self_attn.q_proj: filter %s depends on the "
                               "input, so the adapter cannot be merged into the weights",
                               f2 ? "f2" : "f1");
        printf("delta_weight refused: %s\n", rc ? err_msg() : "(accepted)");
        CHECK(rc != 0 && strcmp(err_msg(), want) == 0, "delta: got '%s'", err_msg());
        float *before = xmalloc(f->m.n_params * sizeof(float));
        memcpy(before, f->m.params, f->m.n_params * sizeof(float));
        rc = method_run_merge(mr);
        printf("merge refused: %s\n", rc ? err_msg() : "(accepted)");
        CHECK(rc != 0 && strcmp(err_msg(), want) == 0, "merge: got '%s'", err_msg());
        CHECK(memcmp(before, f->m.params, f->m.n_params * sizeof(float)) == 0,
              "a refused merge changed the weights");
        free(before);
        free(want);
        method_run_free(mr);
    }
}

static void expect_refused(struct fix *f, const struct plugin_method *trf, const char *key,
                           const char *value, const char *want) {
    const char *kv[] = {key, value, NULL};
    struct method_run *mr = create(f, trf, kv);
    printf("%s = %s: %s\n", key, value, mr ? "(accepted)" : err_msg());
    CHECK(!mr && strstr(err_msg(), want), "%s = %s: '%s'", key, value, mr ? "" : err_msg());
    if (mr) method_run_free(mr);
}

static void check_bad_keys(struct fix *f, const struct plugin_method *trf) {
    expect_refused(f, trf, "r", "0", "loratrf: r must be in 1..65536, got 0");
    expect_refused(f, trf, "lora_dropout", "1.5", "loratrf: lora_dropout must be in [0, 1), got 1.5");
    expect_refused(f, trf, "filter", "f3", "loratrf: filter must be f1 or f2, got 'f3'");
    expect_refused(f, trf, "filter_bias_init", "40",
                   "loratrf: filter_bias_init must be in [-16, 16]");
}

/* ---- LoRA's and LoRATRF's counts ------------------------------------------------------ */

static uint64_t count_of(struct fix *f, const struct plugin_method *pm, const char *filter,
                         int64_t r) {
    char rs[24];
    snprintf(rs, sizeof rs, "%lld", (long long)r);
    const char *kv[] = {"r", rs, "target_modules", "all-linear", filter ? "filter" : NULL,
                        filter, NULL};
    struct method_run *mr = create(f, pm, kv);
    REQUIRE(mr, "create: %s", err_msg());
    uint64_t n = method_run_trainable_count(mr);
    enum kind k = !filter ? LORA : strcmp(filter, "f2") == 0 ? F2 : F1;
    uint64_t want = formula(&f->m, mr, r, k);
    CHECK(n == want, "%s r %lld: %llu, formula %llu", filter ? filter : "lora", (long long)r,
          (unsigned long long)n, (unsigned long long)want);
    method_run_free(mr);
    return n;
}

/* The model of conf/loratrf.ini (d_model 64, 3 layers, 4 heads of 16, 2 kv heads, d_ff 172),
 * all seven projections adapted. */
static void print_counts(const struct plugin_method *trf, const struct plugin_method *lora) {
    struct fix f;
    memset(&f, 0, sizeof f);
    struct model_config c = {
        .vocab = 259, .d_model = 64, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2,
        .head_dim = 16, .d_ff = 172, .max_seq = 32, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
    };
    REQUIRE(model_init(&f.m, &c) == 0, "model_init: %s", err_msg());
    task_table_id(&f.tasks, "a");
    printf("\nTrainable parameters, conf/loratrf.ini model, target_modules = all-linear "
           "(21 sites):\n\n");
    printf("| LoRA r | LoRA | LoRATRF f1, same r | f2, same r | LoRATRF r (~2/3) | f1 | f1 / LoRA "
           "| f2 | f2 / LoRA |\n|---|---|---|---|---|---|---|---|---|\n");
    static const int64_t ranks[][2] = {{6, 4}, {8, 5}, {12, 8}, {16, 11}};
    for (size_t i = 0; i < sizeof ranks / sizeof ranks[0]; i++) {
        int64_t r = ranks[i][0], r2 = ranks[i][1];
        uint64_t nl = count_of(&f, lora, NULL, r);
        uint64_t s1 = count_of(&f, trf, "f1", r), s2 = count_of(&f, trf, "f2", r);
        uint64_t t1 = count_of(&f, trf, "f1", r2), t2 = count_of(&f, trf, "f2", r2);
        printf("| %lld | %llu | %llu | %llu | %lld | %llu | %.3f | %llu | %.3f |\n",
               (long long)r, (unsigned long long)nl, (unsigned long long)s1,
               (unsigned long long)s2, (long long)r2, (unsigned long long)t1,
               (double)t1 / (double)nl, (unsigned long long)t2, (double)t2 / (double)nl);
        CHECK(t1 < nl && s1 > nl, "f1 counts out of order at r %lld", (long long)r);
    }
    printf("\n");
    task_table_free(&f.tasks);
    model_free(&f.m);
}

int main(int argc, char **argv) {
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    const struct plugin_method *trf = mt_method(&reg, argc, argv, "loratrf");
    const struct plugin_method *lora = mt_method(&reg, argc, argv, "lora");
    struct fix f;
    memset(&f, 0, sizeof f);
    mt_model(&f.m, 0, 7, 0.3f);
    task_table_id(&f.tasks, "a");
    task_table_id(&f.tasks, "b");
    mt_batch(&f.b, B, T, f.m.cfg.vocab, 8);
    f.a = model_acts_new();

    check_names(&f, trf);
    check_init(&f, trf);
    check_gate_value(&f, trf, lora);
    printf("site-level gradients against finite differences:\n");
    for (int f2 = 0; f2 < 2; f2++) {
        check_site_grads(&f, trf, f2, "0", 1);   /* layer 0 k_proj: 16 -> 8 */
        check_site_grads(&f, trf, f2, "0.3", 6); /* layer 0 down_proj: 24 -> 16 */
    }
    check_no_merge(&f, trf);
    check_bad_keys(&f, trf);
    print_counts(trf, lora);

    model_acts_free(f.a);
    mt_batch_free(&f.b);
    task_table_free(&f.tasks);
    model_free(&f.m);
    registry_free(&reg);
    printf("%d failures\n", check_failures);
    return check_status();
}
