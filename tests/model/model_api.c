/*
 * model_api: the model's structure and invariants: config checks and their error lines, the
 * tensor list (HF names, shapes, a contiguous block), sites, random init, activations that
 * grow with the batch, causality and batch independence of the forward pass, the FLOP count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model.h"
#include "core.h"

static struct model_config base_config(void)
{
    struct model_config c = {
        .vocab = 17, .d_model = 12, .n_layers = 3, .n_heads = 6, .n_kv_heads = 2,
        .head_dim = 4, .d_ff = 20, .max_seq = 16, .rms_eps = 1e-6f, .rope_theta = 10000.0f,
        .tied = 0,
    };
    return c;
}

/* A config with one field changed must be refused with a line that starts with `want`. */
static void expect_refused(struct model_config c, const char *want)
{
    int rc = model_config_check(&c);
    CHECK(rc == -1, "config accepted, want '%s'", want);
    if (rc == -1) {
        printf("refused: %s\n", err_msg());
        CHECK(strncmp(err_msg(), want, strlen(want)) == 0, "error line '%s', want '%s'",
              err_msg(), want);
    }
}

static void test_config_check(void)
{
    struct model_config c = base_config();
    CHECK(model_config_check(&c) == 0, "base config refused: %s", err_msg());
    c = base_config(), c.n_heads = 6, c.n_kv_heads = 4;
    expect_refused(c, "n_heads: 6 is not a multiple of n_kv_heads 4");
    c = base_config(), c.vocab = 0;
    expect_refused(c, "vocab: 0 must be positive");
    c = base_config(), c.n_kv_heads = -1;
    expect_refused(c, "n_kv_heads: -1 must be positive");
    c = base_config(), c.head_dim = 5;
    expect_refused(c, "head_dim: 5 must be even");
    c = base_config(), c.rms_eps = 0.0f;
    expect_refused(c, "rms_eps:");
    c = base_config(), c.rope_theta = -1.0f;
    expect_refused(c, "rope_theta:");
    c = base_config(), c.tied = 2;
    expect_refused(c, "tied: 2 must be 0 or 1");
    c = base_config(), c.max_seq = 0;
    expect_refused(c, "max_seq: 0 must be positive");
    struct model m;
    c = base_config(), c.d_ff = 0;
    CHECK(model_init(&m, &c) == -1, "model_init accepted d_ff 0");
}

static void test_tensors(int tied)
{
    struct model_config c = base_config();
    c.tied = tied;
    struct model m;
    CHECK(model_init(&m, &c) == 0, "%s", err_msg());
    int32_t want_tensors = 1 + 9 * c.n_layers + 1 + (tied ? 0 : 1);
    CHECK(m.n_tensors == want_tensors, "n_tensors %d, want %d", (int)m.n_tensors,
          (int)want_tensors);
    CHECK(m.n_sites == 7 * c.n_layers, "n_sites %d", (int)m.n_sites);

    /* contiguous block in tensor order, sizes as the shapes say */
    size_t off = 0;
    for (int32_t i = 0; i < m.n_tensors; i++) {
        const struct model_tensor *t = &m.tensors[i];
        size_t numel = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        CHECK(t->offset == off, "%s offset %zu, want %zu", t->name, t->offset, off);
        CHECK(t->numel == numel, "%s numel %zu, want %zu", t->name, t->numel, numel);
        CHECK(model_find_tensor(&m, t->name) == i, "find %s", t->name);
        off += t->numel;
    }
    CHECK(off == m.n_params, "n_params %zu, tensors cover %zu", m.n_params, off);
    CHECK(model_find_tensor(&m, "model.layers.9.mlp.up_proj.weight") == -1, "found a ghost");
    CHECK(strcmp(m.tensors[0].name, "model.embed_tokens.weight") == 0, "%s",
          m.tensors[0].name);
    CHECK(model_find_tensor(&m, "model.norm.weight") >= 0, "no model.norm.weight");
    CHECK((model_find_tensor(&m, "lm_head.weight") >= 0) == !tied, "lm_head presence");
    CHECK(tied ? m.w.lm_head == m.w.embed : m.w.lm_head != m.w.embed, "lm_head view");

    const int64_t HD = 24, KVD = 8, C = 12, F = 20;
    const int64_t shapes[SITE_KINDS][2] = {
        {HD, C}, {KVD, C}, {KVD, C}, {C, HD}, {F, C}, {F, C}, {C, F},
    };
    const char *names[SITE_KINDS] = {
        "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.k_proj",
        "model.layers.2.self_attn.v_proj", "model.layers.2.self_attn.o_proj",
        "model.layers.2.mlp.gate_proj",    "model.layers.2.mlp.up_proj",
        "model.layers.2.mlp.down_proj",
    };
    float *views[SITE_KINDS] = {
        m.w.layers[2].wq, m.w.layers[2].wk, m.w.layers[2].wv, m.w.layers[2].wo,
        m.w.layers[2].wgate, m.w.layers[2].wup, m.w.layers[2].wdown,
    };
    for (int32_t kind = 0; kind < SITE_KINDS; kind++) {
        int32_t site = 2 * 7 + kind;
        char name[96], tname[128];
        model_site_name(&m, site, name, sizeof name);
        CHECK(strcmp(name, names[kind]) == 0, "site %d named %s", (int)site, name);
        CHECK(model_site_kind(site) == kind && model_site_layer(site) == 2, "site %d",
              (int)site);
        int32_t d_in, d_out;
        model_site_dims(&m, site, &d_in, &d_out);
        CHECK(d_out == shapes[kind][0] && d_in == shapes[kind][1], "%s dims %d x %d", name,
              (int)d_out, (int)d_in);
        CHECK(model_site_weight(&m, site) == views[kind], "%s weight view", name);
        snprintf(tname, sizeof tname, "%s.weight", names[kind]);
        int32_t ti = model_site_tensor(&m, site);
        CHECK(ti == model_find_tensor(&m, tname), "%s tensor index", name);
        CHECK(m.tensors[ti].site == site, "%s tensor site %d", name, (int)m.tensors[ti].site);
    }
    int32_t ln = model_find_tensor(&m, "model.layers.1.post_attention_layernorm.weight");
    CHECK(ln >= 0 && m.tensors[ln].site == -1 && m.tensors[ln].ndim == 1, "mlp norm");
    CHECK(ln >= 0 && m.params + m.tensors[ln].offset == m.w.layers[1].mlp_norm, "norm view");

    model_alloc_grads(&m);
    CHECK(m.grads && m.g.layers[1].wup == m.grads + (m.w.layers[1].wup - m.params),
          "grad views mirror param views");
    int any = 0;
    for (int32_t i = 0; i < m.n_tensors; i++)
        any |= m.need_grad[i];
    CHECK(!any, "need_grad not all 0");
    printf("%s: %d tensors, %zu parameters\n", tied ? "tied" : "untied", (int)m.n_tensors,
           m.n_params);
    model_free(&m);
}

static void test_init_random(void)
{
    struct model_config c = base_config();
    struct model a, b;
    CHECK(model_init(&a, &c) == 0 && model_init(&b, &c) == 0, "%s", err_msg());
    model_init_random(&a, 7, 0.02f);
    model_init_random(&b, 7, 0.02f);
    CHECK(memcmp(a.params, b.params, a.n_params * sizeof(float)) == 0, "seed not reproducible");
    model_init_random(&b, 8, 0.02f);
    CHECK(memcmp(a.params, b.params, a.n_params * sizeof(float)) != 0, "seed ignored");
    double s = 0.0, s2 = 0.0;
    size_t cnt = 0;
    int norms_one = 1;
    for (int32_t i = 0; i < a.n_tensors; i++) {
        const struct model_tensor *t = &a.tensors[i];
        for (size_t j = 0; j < t->numel; j++) {
            float v = a.params[t->offset + j];
            if (t->ndim == 1) {
                norms_one &= v == 1.0f;
            } else {
                s += v;
                s2 += (double)v * v;
                cnt++;
            }
        }
    }
    double mean = s / cnt, sd = sqrt(s2 / cnt - mean * mean);
    printf("init: %zu matrix entries, mean %.2e, std %.5f (want 0.02)\n", cnt, mean, sd);
    CHECK(norms_one, "norms not ones");
    CHECK(fabs(sd - 0.02) < 0.002 && fabs(mean) < 0.002, "init statistics");
    model_free(&a);
    model_free(&b);
}

/* Logits of a sequence do not depend on later tokens, nor on other sequences of the batch,
 * nor on the size of the batch the activations were first made for. */
static void test_causal_and_batch(void)
{
    struct model_config c = base_config();
    struct model m;
    CHECK(model_init(&m, &c) == 0, "%s", err_msg());
    model_init_random(&m, 3, 0.3f);
    enum { B = 3, T = 9 };
    int32_t tokens[B * T];
    struct rng r;
    rng_seed(&r, 99);
    for (int i = 0; i < B * T; i++)
        tokens[i] = (int32_t)rng_below(&r, (uint64_t)c.vocab);
    const int32_t V = c.vocab;

    struct model_acts *a = model_acts_new();
    float loss;
    /* small first, then grown */
    CHECK(model_forward(&m, a, tokens, NULL, 1, 4, NULL, &loss) == 0, "%s", err_msg());
    float *prefix = xmalloc(4 * (size_t)V * sizeof(float));
    memcpy(prefix, model_logits(a), 4 * (size_t)V * sizeof(float));
    CHECK(loss == 0.0f, "loss without targets %g", (double)loss);
    CHECK(model_forward(&m, a, tokens, NULL, B, T, NULL, &loss) == 0, "%s", err_msg());
    float *full = xmalloc((size_t)B * T * V * sizeof(float));
    memcpy(full, model_logits(a), (size_t)B * T * V * sizeof(float));

    struct err_stats prefix_err = {0}, batch_err = {0};
    for (int i = 0; i < 4 * V; i++)
        err_add(&prefix_err, full[i], prefix[i], 1e-3);
    /* sequence 2 alone, in a fresh set of activations */
    struct model_acts *solo = model_acts_new();
    CHECK(model_forward(&m, solo, tokens + 2 * T, NULL, 1, T, NULL, &loss) == 0, "%s",
          err_msg());
    const float *l2 = model_logits(solo);
    for (int i = 0; i < T * V; i++)
        err_add(&batch_err, full[2 * T * V + i], l2[i], 1e-3);
    printf("causal prefix: max abs diff %.2e; sequence alone vs in batch: %.2e\n",
           prefix_err.max_abs, batch_err.max_abs);
    /* The same rows in products of other sizes differ by summation order only (OpenBLAS
     * blocks by size): measured against the logits' scale, not element by element (a logit
     * near zero has no relative precision); a leak across positions or sequences would show
     * as differences of the logits' own size. */
    double scale = 0;
    for (int i = 0; i < B * T * V; i++) scale = fmax(scale, fabs((double)full[i]));
    CHECK(prefix_err.max_abs < 1e-5 * scale, "logits depend on later tokens");
    CHECK(batch_err.max_abs < 1e-5 * scale, "logits depend on the batch");

    /* a later token changes later logits only */
    tokens[5] = (tokens[5] + 1) % V;
    CHECK(model_forward(&m, a, tokens, NULL, B, T, NULL, &loss) == 0, "%s", err_msg());
    const float *changed = model_logits(a);
    double before = 0.0, after = 0.0;
    for (int i = 0; i < T * V; i++) {
        double d = fabs(changed[i] - full[i]);
        if (i < 5 * V)
            before = fmax(before, d);
        else
            after = fmax(after, d);
    }
    printf("token 5 changed: logits before it moved %.2e, from it on %.2e\n", before, after);
    CHECK(before == 0.0 && after > 1e-4, "causality");

    const float *hid = model_hidden(a);
    CHECK(hid != NULL && isfinite(hid[0]), "hidden state");
    free(prefix);
    free(full);
    model_acts_free(solo);
    model_acts_free(a);
    model_free(&m);
}

static void test_flops(void)
{
    struct model_config c = base_config();
    /* matrix params per layer: 12*24 + 2*12*8 + 24*12 + 3*12*20 = 1488; head 17*12 = 204 */
    double P = 3.0 * 1488 + 204;
    double want = 6.0 * P + 12.0 * 3 * 16 * 24;
    double got = model_train_flops_per_token(&c, 16);
    printf("flops per token at T=16: %.0f\n", got);
    CHECK(fabs(got - want) < 0.5, "flops %.1f, want %.1f", got, want);
}

int main(void)
{
    test_config_check();
    test_tensors(0);
    test_tensors(1);
    test_init_random();
    test_causal_and_batch();
    test_flops();
    return check_summary("OK", "failures");
}
