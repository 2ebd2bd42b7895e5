/* check_plugin.c: `peft check` (see check.h): the runs of a method, and the checks besides
 * the gradients (check_grad.c): no-op at init, negation, save -> load, merge. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "check_internal.h"

enum { MAX_KEYS = 64 };


void verdict(struct checker *ck, int ok, const char *fmt, ...) {
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

static void run_free(struct run *r) {
    method_run_free(r->mr);
    model_acts_free(r->a);
    model_free(&r->m);
    free(r->base);
    check_batch_free(&r->b);
    task_table_free(&r->tasks);
}

static int run_setup(struct run *r, int tied, int32_t precision, const struct plugin_method *pm,
                     const struct keys *k) {
    memset(r, 0, sizeof *r);
    if (check_tiny_model(&r->m, tied, 11, 0.3f) != 0) return -1;
    if (precision == MODEL_BF16) {
        model_set_bf16(&r->m);
        /* the differences of check 3 move the embedding's entries: its fp32 range */
        (void)model_tensor_data(&r->m, model_find_tensor(&r->m, "model.embed_tokens.weight"));
    }
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

double check_forward(struct run *r, struct model *m, struct model_acts *a,
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
    int same = !isnan(check_forward(r, &r->m, r->a, NULL));
    if (same) memcpy(bare, model_logits(r->a), n * sizeof(float));
    for (int training = 0; training < 2 && same; training++) {
        same = !isnan(check_forward(r, &r->m, r->a, method_run_hooks(r->mr, training)));
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
    if (!method_run_can_negate(mr)) { /* optional in the ABI: said, not failed */
        fprintf(ck->out, "     %s: negation not offered (no negate() and no tensor flagged "
                "NEGATE)\n", ck->label);
        return 0;
    }
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
        /* the weights held in 16 bits back to that copy, which nothing writes: the base's */
        for (int32_t t = 0; t < m2.n_tensors; t++) model_tensor_release(&m2, t);
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
        rc = isnan(check_forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) ? -1 : 0;
        if (rc == 0) memcpy(l1, model_logits(r->a), n * sizeof(float));
        if (rc == 0) rc = method_run_batch_begin(mr2, &r->b, 0, 0);
        if (rc == 0) rc = isnan(check_forward(r, &m2, a2, method_run_hooks(mr2, 0))) ? -1 : 0;
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
    if (rc == 0) rc = isnan(check_forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) ? -1 : 0;
    if (rc != 0) {
        verdict(ck, 0, "merge: the evaluation pass failed: %s", err_msg());
    } else if (!mergeable) {
        memcpy(hooked, model_logits(r->a), n * sizeof(float));
        float *before = xmalloc(r->m.n_params * sizeof(float));
        memcpy(before, r->m.params, r->m.n_params * sizeof(float));
        int refused = method_run_merge(r->mr) != 0;
        int same_w = memcmp(before, r->m.params, r->m.n_params * sizeof(float)) == 0;
        int same_l = !isnan(check_forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) &&
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
        if (rc == 0 && !isnan(check_forward(r, &r->m, r->a, NULL))) {
            e = check_nmse(model_logits(r->a), hooked, n);
            memcpy(other, model_logits(r->a), n * sizeof(float));
            /* after a merge the hooks stop adding: the hooked model is the merged one */
            stopped = !isnan(check_forward(r, &r->m, r->a, method_run_hooks(r->mr, 0))) &&
                      memcmp(other, model_logits(r->a), n * sizeof(float)) == 0;
        }
        if (rc != 0)
            verdict(ck, 0, "merge: %s", err_msg());
        else
        {
            double bound = ck->precision == MODEL_BF16 ? 1e-3 : 1e-10; /* check.h */
            verdict(ck, e < bound && stopped,
                    "merge: NMSE(merged bare model, hooked) %.3g (bound %g); hooks silent "
                    "after the merge: %s", e, bound, stopped ? "yes" : "NO");
        }
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
    /* a surrogate gradient is not the forward's derivative: check the exact one */
    int surrogate = plugin_has_feature(pm, PEFT_FEATURE_SURROGATE_GRAD) && has_key(d, "exact_grad");
    if (surrogate) keys_set(&k, "exact_grad", "true");
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
    snprintf(label, sizeof label, "%s %s%s%s%s", d->id, variant ? "variant" : "defaults",
             choice ? " " : "", choice ? choice : "", surrogate ? " exact_grad=true" : "");
    ck->label = label;
    struct run r;
    double t0 = now_seconds();
    if (run_setup(&r, variant, ck->precision, pm, &k) != 0) {
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

int plugin_check(struct plugin_registry *reg, const char *what, int32_t precision, FILE *out) {
    const struct plugin_method *first = registry_find(reg, what);
    if (!first) return -1;
    const char *tmp = getenv("TMPDIR");
    char *dir = xasprintf("%s/peft-check-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        err_set("%s: cannot make a temporary folder: %s", dir, strerror(errno));
        free(dir);
        return -1;
    }
    struct checker ck = {.out = out, .precision = precision};
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
    free(dir);
    fprintf(out, "%s: %d method%s checked (precision %s)\n%d passed, %d failed\n", file,
            (int)n_methods, n_methods == 1 ? "" : "s", model_precision_name(precision), ck.passed,
            ck.failed);
    return ck.failed;
}
