/*
 * mtest.h: helpers shared by the methods tests: a tiny random model, a batch that mixes two
 * tasks, method keys from a plugin's schema, and a precise loss (the assertions are
 * tests/check.h).
 */
#ifndef PEFT_TESTS_MTEST_H
#define PEFT_TESTS_MTEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data.h"
#include "method.h"
#include "model.h"
#include "plugin_loader.h"
#include "core.h"

/* ---- the model ------------------------------------------------------------------------- */

/* 2 layers, C 16, 2 heads of 8 over 1 kv head (GQA), F 24, V 29: small enough for finite
 * differences over every adapter entry. */
static inline void mt_model(struct model *m, int tied, uint64_t seed, float init_std) {
    struct model_config c = {
        .vocab = 29, .d_model = 16, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
        .head_dim = 8, .d_ff = 24, .max_seq = 16, .rms_eps = 1e-5f, .rope_theta = 100.0f,
        .tied = tied,
    };
    REQUIRE(model_init(m, &c) == 0, "model_init: %s", err_msg());
    model_init_random(m, seed, init_std);
    /* Norm weights away from 1, so their gradients are not special. */
    struct rng r;
    rng_seed(&r, seed ^ 0x5eed);
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ndim == 1)
            for (size_t j = 0; j < m->tensors[i].numel; j++)
                m->params[m->tensors[i].offset + j] = rng_uniform(&r, 0.7f, 1.3f);
}

/* A second model with the same config and parameters. */
static inline void mt_model_copy(struct model *dst, const struct model *src) {
    REQUIRE(model_init(dst, &src->cfg) == 0, "model_init: %s", err_msg());
    memcpy(dst->params, src->params, src->n_params * sizeof(float));
}

/* ---- a batch mixing tasks 0 and 1 ------------------------------------------------------ */

static inline void mt_batch(struct batch *b, int32_t B, int32_t T, int32_t vocab, uint64_t seed) {
    struct rng r;
    rng_seed(&r, seed);
    memset(b, 0, sizeof *b);
    b->B = B;
    b->T = T;
    b->tokens = xmalloc((size_t)B * T * sizeof(int32_t));
    b->targets = xmalloc((size_t)B * T * sizeof(int32_t));
    b->example_task = xmalloc((size_t)B * sizeof(int32_t));
    b->prompt_len = xmalloc((size_t)B * sizeof(int32_t));
    for (int32_t i = 0; i < B; i++) {
        b->example_task[i] = i % 2;
        b->prompt_len[i] = 2;
        for (int32_t t = 0; t < T; t++) {
            b->tokens[i * T + t] = (int32_t)rng_below(&r, (uint64_t)vocab);
            b->targets[i * T + t] = t >= 1 ? (int32_t)rng_below(&r, (uint64_t)vocab) : -1;
        }
    }
    b->cap_B = B;
    b->cap_T = T;
}

static inline void mt_batch_free(struct batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->example_task);
    free(b->prompt_len);
}

/* ---- method keys ----------------------------------------------------------------------- */

#define MT_MAX_KEYS 48

/* Every key of the schema with its default, then overrides. */
struct mt_cfg {
    peft_kv kv[MT_MAX_KEYS];
    char *val[MT_MAX_KEYS];
    uint32_t n;
};

static inline int mt_has_key(const peft_method_desc *d, const char *key) {
    for (uint32_t i = 0; i < d->n_params; i++)
        if (strcmp(d->params[i].name, key) == 0) return 1;
    return 0;
}

static inline void mt_cfg_set(struct mt_cfg *c, const char *key, const char *value) {
    for (uint32_t i = 0; i < c->n; i++) {
        if (strcmp(c->kv[i].key, key) == 0) {
            free(c->val[i]);
            c->val[i] = xstrdup(value);
            c->kv[i].value = c->val[i];
            return;
        }
    }
    REQUIRE(c->n < MT_MAX_KEYS, "too many keys");
    c->val[c->n] = xstrdup(value);
    c->kv[c->n] = (peft_kv){key, c->val[c->n]};
    c->n++;
}

/* The value of key, or NULL. */
static inline const char *mt_cfg_get(const struct mt_cfg *c, const char *key) {
    for (uint32_t i = 0; i < c->n; i++)
        if (strcmp(c->kv[i].key, key) == 0) return c->val[i];
    return NULL;
}

static inline void mt_cfg_defaults(struct mt_cfg *c, const peft_method_desc *d) {
    memset(c, 0, sizeof *c);
    for (uint32_t i = 0; i < d->n_params; i++) {
        REQUIRE(d->params[i].default_value, "%s: key %s has no default", d->id,
                d->params[i].name);
        mt_cfg_set(c, d->params[i].name, d->params[i].default_value);
    }
}

static inline void mt_cfg_free(struct mt_cfg *c) {
    for (uint32_t i = 0; i < c->n; i++) free(c->val[i]);
    c->n = 0;
}

static inline struct method_env mt_env(struct task_table *tasks, uint64_t seed) {
    struct method_env env = {
        .tasks = tasks, .seed = seed, .init_seed = seed, .stage = "test",
        .where = "test.ini [stage.test]",
    };
    return env;
}

/* A method run of pm on m with the schema's defaults and `kv` (NULL-ended key/value pairs) on
 * top; NULL with err_msg() when creation fails. */
static inline struct method_run *mt_run_create(const struct plugin_method *pm, struct model *m,
                                               const struct method_env *env,
                                               const char *const *kv) {
    struct mt_cfg cfg;
    mt_cfg_defaults(&cfg, pm->desc);
    for (int i = 0; kv && kv[i]; i += 2) mt_cfg_set(&cfg, kv[i], kv[i + 1]);
    struct method_run *mr = NULL;
    if (method_run_create(&mr, pm, m, env, cfg.kv, cfg.n) != 0) mr = NULL;
    mt_cfg_free(&cfg);
    return mr;
}

/* A registered tensor by name, or NULL. */
static inline struct mtensor *mt_find_tensor(struct method_run *mr, const char *name) {
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++)
        if (strcmp(method_run_tensor(mr, i)->name, name) == 0) return method_run_tensor(mr, i);
    return NULL;
}

/* ---- the loss, in double from the logits ----------------------------------------------- */

/* Mean cross-entropy over rows with a target, from the logits of the last forward (the fp32
 * loss the model returns rounds away what finite differences need). */
static inline double mt_loss_from_logits(const struct model *m, const struct model_acts *a,
                                         const struct batch *b) {
    const float *lg = model_logits(a);
    int32_t V = m->cfg.vocab;
    double sum = 0.0;
    int32_t n = 0;
    for (int32_t i = 0; i < b->B * b->T; i++) {
        if (b->targets[i] < 0) continue;
        const float *row = lg + (size_t)i * V;
        double mx = row[0], s = 0.0;
        for (int32_t v = 1; v < V; v++) mx = fmax(mx, row[v]);
        for (int32_t v = 0; v < V; v++) s += exp((double)row[v] - mx);
        sum += mx + log(s) - row[b->targets[i]];
        n++;
    }
    return n ? sum / n : 0.0;
}

/* Forward with hooks (NULL: the bare model); the precise loss. */
static inline double mt_forward(struct model *m, struct model_acts *a, const struct batch *b,
                                const struct model_hooks *hk) {
    float loss;
    REQUIRE(model_forward(m, a, b->tokens, b->targets, b->B, b->T, hk, &loss) == 0,
            "model_forward: %s", err_msg());
    return mt_loss_from_logits(m, a, b);
}

/* Normalised mean squared error of got against want. */
static inline double mt_nmse(const float *got, const float *want, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? num / den : num;
}

/* Load the plugin file at `path` and list its methods (pointers that stay valid). */
static inline int32_t mt_load_methods(struct plugin_registry *r, const char *path,
                                      const struct plugin_method **out, int32_t cap) {
    REQUIRE(registry_load_file(r, path) == 0, "registry_load_file: %s", err_msg());
    char *real = realpath(path, NULL);
    REQUIRE(real, "%s: cannot resolve", path);
    int32_t n = 0;
    for (int32_t i = 0; i < r->n_methods && n < cap; i++) {
        if (strcmp(r->methods[i].file->path, real) != 0) continue;
        out[n] = registry_find(r, r->methods[i].desc->id);
        REQUIRE(out[n], "registry_find(%s): %s", r->methods[i].desc->id, err_msg());
        n++;
    }
    free(real);
    return n;
}

/* The method `id` from the plugin files given on the command line. */
static inline const struct plugin_method *mt_method(struct plugin_registry *r, int argc,
                                                    char **argv, const char *id) {
    for (int i = 1; i < argc; i++)
        REQUIRE(registry_load_file(r, argv[i]) == 0, "registry_load_file: %s", err_msg());
    const struct plugin_method *pm = registry_find(r, id);
    REQUIRE(pm, "method %s: %s", id, err_msg());
    return pm;
}

#endif
