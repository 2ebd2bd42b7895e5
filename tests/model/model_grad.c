/*
 * model_grad: model_backward against finite differences of model_forward, for every
 * parameter of a tiny model (tied and untied), without and with hooks (site hooks that add
 * x M^T at three sites, a hidden-state hook that adds to the loss). Also: rows with target -1
 * do not count, hook failures abort the pass, bad inputs are refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model.h"
#include "core.h"

enum { B = 2, T = 5, N = B * T };

/* Relative error bound and the gradient size below which errors count as absolute: the
 * fp32 logits put ~2e-5 of noise on a fourth-order difference with step 1e-2, while its
 * truncation error stays below that for weights of std 0.3. */
#define FD_STEP 1e-2
#define REL_TOL 2e-2
#define ABS_FLOOR 2e-3

static struct model_config tiny_config(int tied)
{
    struct model_config c = {
        .vocab = 13, .d_model = 8, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
        .head_dim = 4, .d_ff = 12, .max_seq = 8, .rms_eps = 1e-5f, .rope_theta = 100.0f,
        .tied = tied,
    };
    return c;
}

/* ---- the test hooks -------------------------------------------------------------------- */

#define HOOKED_SITES 3
static const int32_t hooked_site[HOOKED_SITES] = {
    0 * SITE_KINDS + SITE_V, 1 * SITE_KINDS + SITE_Q, 1 * SITE_KINDS + SITE_DOWN,
};

struct hook_ctx {
    const struct model *m;
    float *M[HOOKED_SITES];  /* (d_out, d_in) per hooked site */
    float *R;                /* (N, C) weights of the hidden-state loss */
    int hidden_on;
    const float **x_seen;    /* per site: x of the last forward */
    float **x_copy;          /* per site: its contents then */
    int fwd_calls, bwd_calls, hidden_fwd_calls, hidden_bwd_calls;
    int x_changed;           /* a backward saw another x than its forward */
    int32_t fail_site;       /* -1, or the site whose hook fails */
    int fail_in_backward;
};

static int hooked_index(int32_t site)
{
    for (int i = 0; i < HOOKED_SITES; i++)
        if (hooked_site[i] == site)
            return i;
    return -1;
}

static int hook_site_forward(void *ctx, uint32_t pass, int32_t site, const float *x, float *y,
                             int32_t n_rows)
{
    struct hook_ctx *h = ctx;
    (void)pass;
    h->fwd_calls++;
    int32_t d_in, d_out;
    model_site_dims(h->m, site, &d_in, &d_out);
    h->x_seen[site] = x;
    memcpy(h->x_copy[site], x, (size_t)n_rows * d_in * sizeof(float));
    if (site == h->fail_site && !h->fail_in_backward)
        return err_set("test hook: forward refused at site %d", (int)site);
    int k = hooked_index(site);
    if (k < 0)
        return 0;
    for (int32_t r = 0; r < n_rows; r++) /* y += x M^T */
        for (int32_t o = 0; o < d_out; o++) {
            float s = 0.0f;
            for (int32_t i = 0; i < d_in; i++)
                s += x[r * d_in + i] * h->M[k][o * d_in + i];
            y[r * d_out + o] += s;
        }
    return 0;
}

static int hook_site_backward(void *ctx, uint32_t pass, int32_t site, const float *x,
                              const float *dy, float *dx, int32_t n_rows)
{
    struct hook_ctx *h = ctx;
    (void)pass;
    h->bwd_calls++;
    int32_t d_in, d_out;
    model_site_dims(h->m, site, &d_in, &d_out);
    if (x != h->x_seen[site] ||
        memcmp(x, h->x_copy[site], (size_t)n_rows * d_in * sizeof(float)) != 0)
        h->x_changed++;
    if (site == h->fail_site && h->fail_in_backward)
        return err_set("test hook: backward refused at site %d", (int)site);
    int k = hooked_index(site);
    if (k < 0)
        return 0;
    for (int32_t r = 0; r < n_rows; r++) /* dx += dy M */
        for (int32_t i = 0; i < d_in; i++) {
            float s = 0.0f;
            for (int32_t o = 0; o < d_out; o++)
                s += dy[r * d_out + o] * h->M[k][o * d_in + i];
            dx[r * d_in + i] += s;
        }
    return 0;
}

static int hook_hidden_forward(void *ctx, uint32_t pass, const float *hid, int32_t n_rows,
                               float *loss)
{
    struct hook_ctx *h = ctx;
    (void)pass;
    h->hidden_fwd_calls++;
    if (!h->hidden_on)
        return 0;
    size_t len = (size_t)n_rows * h->m->cfg.d_model;
    double s = 0.0;
    for (size_t i = 0; i < len; i++)
        s += (double)hid[i] * h->R[i];
    *loss += (float)s;
    return 0;
}

static int hook_hidden_backward(void *ctx, uint32_t pass, const float *hid, float *dh,
                                int32_t n_rows)
{
    struct hook_ctx *h = ctx;
    (void)pass;
    (void)hid;
    h->hidden_bwd_calls++;
    if (!h->hidden_on)
        return 0;
    size_t len = (size_t)n_rows * h->m->cfg.d_model;
    for (size_t i = 0; i < len; i++)
        dh[i] += h->R[i];
    return 0;
}

static void hook_ctx_init(struct hook_ctx *h, const struct model *m, struct rng *r)
{
    memset(h, 0, sizeof *h);
    h->m = m;
    h->fail_site = -1;
    for (int k = 0; k < HOOKED_SITES; k++) {
        int32_t d_in, d_out;
        model_site_dims(m, hooked_site[k], &d_in, &d_out);
        h->M[k] = xmalloc((size_t)d_in * d_out * sizeof(float));
        for (int32_t i = 0; i < d_in * d_out; i++)
            h->M[k][i] = rng_normal(r, 0.0f, 0.2f);
    }
    size_t nc = (size_t)N * m->cfg.d_model;
    h->R = xmalloc(nc * sizeof(float));
    for (size_t i = 0; i < nc; i++)
        h->R[i] = rng_normal(r, 0.0f, 0.05f);
    h->x_seen = xcalloc((size_t)m->n_sites, sizeof *h->x_seen);
    h->x_copy = xcalloc((size_t)m->n_sites, sizeof *h->x_copy);
    for (int32_t s = 0; s < m->n_sites; s++) {
        int32_t d_in, d_out;
        model_site_dims(m, s, &d_in, &d_out);
        h->x_copy[s] = xmalloc((size_t)N * d_in * sizeof(float));
    }
}

static void hook_ctx_free(struct hook_ctx *h)
{
    for (int k = 0; k < HOOKED_SITES; k++)
        free(h->M[k]);
    free(h->R);
    for (int32_t s = 0; s < h->m->n_sites; s++)
        free(h->x_copy[s]);
    free(h->x_copy);
    free(h->x_seen);
}

/* ---- the model under test -------------------------------------------------------------- */

struct fixture {
    struct model m;
    struct model_acts *a;
    int32_t tokens[N];
    int32_t targets[N];
};

static void fixture_init(struct fixture *f, int tied, uint64_t seed)
{
    struct model_config c = tiny_config(tied);
    if (model_init(&f->m, &c) != 0) {
        fprintf(stderr, "model_init: %s\n", err_msg());
        exit(1);
    }
    model_init_random(&f->m, seed, 0.3f);
    struct rng r;
    rng_seed(&r, seed + 1);
    /* norms away from 1 so their gradients are generic */
    for (int32_t i = 0; i < f->m.n_tensors; i++) {
        const struct model_tensor *t = &f->m.tensors[i];
        if (t->ndim == 1)
            for (size_t j = 0; j < t->numel; j++)
                f->m.params[t->offset + j] = 1.0f + rng_normal(&r, 0.0f, 0.3f);
    }
    for (int i = 0; i < N; i++) {
        f->tokens[i] = (int32_t)rng_below(&r, (uint64_t)c.vocab);
        f->targets[i] = (int32_t)rng_below(&r, (uint64_t)c.vocab);
    }
    f->targets[1] = -1; /* rows without loss, in both sequences */
    f->targets[T + 3] = -1;
    f->a = model_acts_new();
    model_alloc_grads(&f->m);
    memset(f->m.need_grad, 1, (size_t)f->m.n_tensors);
}

static void fixture_free(struct fixture *f)
{
    model_acts_free(f->a);
    model_free(&f->m);
}

/* Cross-entropy of the last forward, recomputed in double from the logits: the finite
 * differences then carry the rounding of the fp32 logits only, not that of the loss. */
static double loss_from_logits(const struct fixture *f)
{
    const int32_t V = f->m.cfg.vocab;
    const float *logits = model_logits(f->a); /* (N, V) */
    double sum = 0.0;
    int valid = 0;
    for (int i = 0; i < N; i++) {
        if (f->targets[i] < 0)
            continue;
        const float *l_i = logits + (size_t)i * V;
        double mx = l_i[0];
        for (int j = 1; j < V; j++)
            mx = fmax(mx, l_i[j]);
        double z = 0.0;
        for (int j = 0; j < V; j++)
            z += exp(l_i[j] - mx);
        sum += mx + log(z) - l_i[f->targets[i]];
        valid++;
    }
    return valid ? sum / valid : 0.0;
}

/* The hidden hook's term, in double. */
static double hidden_term(const struct fixture *f, const struct hook_ctx *hc)
{
    if (!hc || !hc->hidden_on)
        return 0.0;
    const float *hid = model_hidden(f->a); /* (N, C) */
    double s = 0.0;
    for (size_t i = 0; i < (size_t)N * f->m.cfg.d_model; i++)
        s += (double)hid[i] * hc->R[i];
    return s;
}

/* Forward; returns the loss the model reports, and in *precise the same loss in double. */
static double loss_at2(struct fixture *f, const struct model_hooks *hk, double *precise)
{
    float loss = 0.0f;
    if (model_forward(&f->m, f->a, f->tokens, f->targets, B, T, hk, &loss) != 0) {
        fprintf(stderr, "model_forward: %s\n", err_msg());
        exit(1);
    }
    if (precise)
        *precise = loss_from_logits(f) + hidden_term(f, hk ? hk->ctx : NULL);
    return loss;
}

static double loss_at(struct fixture *f, const struct model_hooks *hk)
{
    return loss_at2(f, hk, NULL);
}

/* Fourth-order central difference of the loss in one parameter. */
static double fd_grad(struct fixture *f, float *p, const struct model_hooks *hk)
{
    float saved = *p;
    double h = FD_STEP, v[4];
    const double steps[4] = {h, -h, 2 * h, -2 * h};
    for (int i = 0; i < 4; i++) {
        *p = (float)(saved + steps[i]);
        loss_at2(f, hk, &v[i]);
    }
    *p = saved;
    return (8.0 * (v[0] - v[1]) - (v[2] - v[3])) / (12.0 * h);
}

/* Tensor families: embed, lm_head, norms, and one per site kind. */
enum { FAM_EMBED = SITE_KINDS, FAM_HEAD, FAM_NORM, FAMILIES };
static const char *family_name(int fam)
{
    return fam < SITE_KINDS ? site_kind_names[fam]
           : fam == FAM_EMBED ? "embed_tokens"
           : fam == FAM_HEAD  ? "lm_head"
                              : "norms";
}

static int family_of(const struct model_tensor *t)
{
    if (t->site >= 0)
        return model_site_kind(t->site);
    if (strstr(t->name, "embed_tokens"))
        return FAM_EMBED;
    if (strstr(t->name, "lm_head"))
        return FAM_HEAD;
    return FAM_NORM;
}

/* Backward, then every parameter against its finite difference. */
static void check_all_grads(struct fixture *f, const struct model_hooks *hk, const char *label)
{
    model_zero_grads(&f->m);
    double precise;
    double reported = loss_at2(f, hk, &precise);
    CHECK(fabs(reported - precise) < 1e-5 * fmax(1.0, fabs(precise)),
          "%s: loss %.7f, recomputed %.7f", label, reported, precise);
    if (model_backward(&f->m, f->a, hk) != 0) {
        fprintf(stderr, "model_backward: %s\n", err_msg());
        exit(1);
    }
    size_t np = f->m.n_params;
    float *g = xmalloc(np * sizeof(float));
    memcpy(g, f->m.grads, np * sizeof(float));

    struct err_stats fam[FAMILIES];
    memset(fam, 0, sizeof fam);
    double g_max = 0.0;
    for (int32_t i = 0; i < f->m.n_tensors; i++) {
        const struct model_tensor *t = &f->m.tensors[i];
        struct err_stats *s = &fam[family_of(t)];
        for (size_t j = 0; j < t->numel; j++) {
            size_t k = t->offset + j;
            double fd = fd_grad(f, &f->m.params[k], hk);
            err_add(s, g[k], fd, ABS_FLOOR);
            g_max = fmax(g_max, fabs(g[k]));
        }
    }
    printf("%s: %zu parameters, max |grad| %.3e\n", label, np, g_max);
    for (int k = 0; k < FAMILIES; k++) {
        if (fam[k].count == 0)
            continue;
        printf("  %-13s n=%5zu  max abs err %.3e  max rel err %.3e\n", family_name(k),
               fam[k].count, fam[k].max_abs, fam[k].max_rel);
        CHECK(fam[k].max_rel < REL_TOL, "%s %s: rel err %.3e", label, family_name(k),
              fam[k].max_rel);
    }
    CHECK(g_max > 1e-2, "%s: gradients are suspiciously small (%.3e)", label, g_max);
    free(g);
}

/* ---- cases ----------------------------------------------------------------------------- */

static void test_plain(int tied)
{
    struct fixture f;
    fixture_init(&f, tied, 11 + (uint64_t)tied);
    check_all_grads(&f, NULL, tied ? "tied, no hooks" : "untied, no hooks");
    fixture_free(&f);
}

static void test_hooks(int tied)
{
    struct fixture f;
    fixture_init(&f, tied, 21 + (uint64_t)tied);
    struct rng r;
    rng_seed(&r, 5);
    struct hook_ctx hc;
    hook_ctx_init(&hc, &f.m, &r);
    struct model_hooks hk = {
        .ctx = &hc, .pass = 0, .site_forward = hook_site_forward,
        .site_backward = hook_site_backward, .hidden_forward = hook_hidden_forward,
        .hidden_backward = hook_hidden_backward,
    };

    /* the hooks change the loss (forward wiring) */
    double plain = loss_at(&f, NULL);
    hc.hidden_on = 0;
    double site_only = loss_at(&f, &hk);
    hc.hidden_on = 1;
    double both = loss_at(&f, &hk);
    printf("%s hooks: loss plain %.6f, with site hooks %.6f, plus hidden hook %.6f\n",
           tied ? "tied" : "untied", plain, site_only, both);
    CHECK(fabs(site_only - plain) > 1e-3, "site hooks did not change the loss");
    CHECK(fabs(both - site_only) > 1e-3, "hidden hook did not change the loss");

    hc.fwd_calls = hc.bwd_calls = hc.hidden_fwd_calls = hc.hidden_bwd_calls = 0;
    hc.x_changed = 0;
    loss_at(&f, &hk);
    model_zero_grads(&f.m);
    CHECK(model_backward(&f.m, f.a, &hk) == 0, "backward: %s", err_msg());
    CHECK(hc.fwd_calls == f.m.n_sites && hc.bwd_calls == f.m.n_sites,
          "site hooks called %d / %d times, want %d", hc.fwd_calls, hc.bwd_calls,
          (int)f.m.n_sites);
    CHECK(hc.hidden_fwd_calls == 1 && hc.hidden_bwd_calls == 1, "hidden hooks %d / %d",
          hc.hidden_fwd_calls, hc.hidden_bwd_calls);
    CHECK(hc.x_changed == 0, "%d site inputs changed between forward and backward",
          hc.x_changed);

    /* every gradient, the input embedding's included, sees the hooks in both passes */
    check_all_grads(&f, &hk, tied ? "tied, hooks" : "untied, hooks");
    CHECK(hc.x_changed == 0, "%d site inputs changed between forward and backward",
          hc.x_changed);

    /* a failing hook aborts the pass with its own error line */
    float loss;
    hc.fail_site = 9;
    hc.fail_in_backward = 0;
    CHECK(model_forward(&f.m, f.a, f.tokens, f.targets, B, T, &hk, &loss) == -1,
          "failing forward hook not reported");
    CHECK(strstr(err_msg(), "forward refused at site 9") != NULL, "error line '%s'",
          err_msg());
    CHECK(model_backward(&f.m, f.a, &hk) == -1, "backward ran after an aborted forward");
    hc.fail_in_backward = 1;
    CHECK(model_forward(&f.m, f.a, f.tokens, f.targets, B, T, &hk, &loss) == 0, "%s",
          err_msg());
    CHECK(model_backward(&f.m, f.a, &hk) == -1, "failing backward hook not reported");
    CHECK(strstr(err_msg(), "backward refused at site 9") != NULL, "error line '%s'",
          err_msg());

    hook_ctx_free(&hc);
    fixture_free(&f);
}

/* The loss is the mean over rows with a target, computed again from the logits here. */
static void test_targets(void)
{
    struct fixture f;
    fixture_init(&f, 0, 31);
    const int32_t V = f.m.cfg.vocab;
    double want;
    double loss = loss_at2(&f, NULL, &want);
    int valid = 0;
    for (int i = 0; i < N; i++)
        valid += f.targets[i] >= 0;
    printf("targets: loss %.7f, from logits over %d of %d rows %.7f\n", loss, valid, N, want);
    CHECK(valid == N - 2, "fixture should have 2 rows without target");
    CHECK(fabs(loss - want) < 1e-5 * fmax(1.0, fabs(want)), "loss %.7f, want %.7f", loss, want);

    /* no target at all: loss 0 and every gradient 0 */
    for (int i = 0; i < N; i++)
        f.targets[i] = -1;
    loss = loss_at(&f, NULL);
    model_zero_grads(&f.m);
    CHECK(model_backward(&f.m, f.a, NULL) == 0, "%s", err_msg());
    /* the backward turned the logits into their gradient: a second one must refuse */
    CHECK(model_backward(&f.m, f.a, NULL) == -1, "a second backward on one forward was accepted");
    double gmax = 0.0;
    for (size_t k = 0; k < f.m.n_params; k++)
        gmax = fmax(gmax, fabs(f.m.grads[k]));
    printf("targets: all -1: loss %.3g, max |grad| %.3g\n", loss, gmax);
    CHECK(loss == 0.0 && gmax == 0.0, "rows without target counted");

    /* need_grad off: those gradients stay untouched */
    for (int i = 0; i < N; i++)
        f.targets[i] = i % V;
    memset(f.m.need_grad, 0, (size_t)f.m.n_tensors);
    int32_t wq = model_find_tensor(&f.m, "model.layers.1.self_attn.q_proj.weight");
    CHECK(wq >= 0, "q_proj of layer 1 not found");
    f.m.need_grad[wq] = 1;
    for (size_t k = 0; k < f.m.n_params; k++)
        f.m.grads[k] = 7.0f;
    loss_at(&f, NULL);
    CHECK(model_backward(&f.m, f.a, NULL) == 0, "%s", err_msg());
    size_t changed_other = 0, changed_wq = 0;
    for (int32_t i = 0; i < f.m.n_tensors; i++) {
        const struct model_tensor *t = &f.m.tensors[i];
        for (size_t j = 0; j < t->numel; j++) {
            int changed = f.m.grads[t->offset + j] != 7.0f;
            if (i == wq)
                changed_wq += (size_t)changed;
            else
                changed_other += (size_t)changed;
        }
    }
    printf("need_grad on q_proj only: %zu of its entries changed, %zu elsewhere\n",
           changed_wq, changed_other);
    CHECK(changed_other == 0 && changed_wq > 0, "need_grad not respected");
    fixture_free(&f);
}

static void test_bad_inputs(void)
{
    struct fixture f;
    fixture_init(&f, 1, 41);
    float loss;
    struct model_acts *fresh = model_acts_new();
    CHECK(model_backward(&f.m, fresh, NULL) == -1, "backward without forward accepted");
    model_acts_free(fresh);
    f.tokens[3] = 13;
    CHECK(model_forward(&f.m, f.a, f.tokens, f.targets, B, T, NULL, &loss) == -1,
          "token out of range accepted");
    printf("bad token: %s\n", err_msg());
    CHECK(strstr(err_msg(), "tokens[3]") != NULL, "error line '%s'", err_msg());
    f.tokens[3] = 0;
    f.targets[4] = -2;
    CHECK(model_forward(&f.m, f.a, f.tokens, f.targets, B, T, NULL, &loss) == -1,
          "target -2 accepted");
    CHECK(strstr(err_msg(), "targets[4]") != NULL, "error line '%s'", err_msg());
    f.targets[4] = 0;
    CHECK(model_forward(&f.m, f.a, f.tokens, f.targets, 1, 9, NULL, &loss) == -1,
          "T > max_seq accepted");
    printf("long sequence: %s\n", err_msg());
    CHECK(strstr(err_msg(), "max_seq") != NULL, "error line '%s'", err_msg());
    fixture_free(&f);
}

/* Loss-chunk mode (training forwards) against whole logits: the same loss and the same
 * gradient of every tensor, with chunks of 3 rows over the 8 target rows (3, 3, 2), a loss
 * scale, tied and untied heads; no logits are kept. */
static void test_loss_chunk(int tied)
{
    struct fixture f;
    fixture_init(&f, tied, 51 + (uint64_t)tied);
    size_t np = f.m.n_params;
    float *whole = xmalloc(np * sizeof *whole);
    float loss[2];
    for (int mode = 0; mode < 2; mode++) {
        model_acts_set_loss_chunk(f.a, mode ? 3 : 0);
        model_acts_set_loss_scale(f.a, 0.5f);
        model_zero_grads(&f.m);
        CHECK(model_forward(&f.m, f.a, f.tokens, f.targets, B, T, NULL, &loss[mode]) == 0, "%s", err_msg());
        CHECK((model_logits(f.a) == NULL) == (mode == 1), "logits kept in mode %d", mode);
        CHECK(model_backward(&f.m, f.a, NULL) == 0, "%s", err_msg());
        if (mode == 0) memcpy(whole, f.m.grads, np * sizeof *whole);
    }
    double gmax = 0, err = 0;
    for (size_t k = 0; k < np; k++) {
        gmax = fmax(gmax, fabs(whole[k]));
        err = fmax(err, fabs(whole[k] - f.m.grads[k]));
    }
    printf("loss chunks (%s): loss %.7f vs %.7f, max grad diff %.3g of max |grad| %.3g\n",
           tied ? "tied" : "untied", loss[1], loss[0], err, gmax);
    CHECK(fabsf(loss[1] - loss[0]) <= 1e-6f * fabsf(loss[0]), "loss %.8f vs %.8f", loss[1], loss[0]);
    CHECK(gmax > 0 && err <= 1e-5 * gmax, "gradients differ by %.3g (max %.3g)", err, gmax);
    free(whole);
    fixture_free(&f);
}

int main(void)
{
    test_plain(0);
    test_plain(1);
    test_hooks(0);
    test_hooks(1);
    test_targets();
    test_loss_chunk(0);
    test_loss_chunk(1);
    test_bad_inputs();
    return check_summary("OK", "failures");
}
