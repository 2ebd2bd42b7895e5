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
#include "check/check.h"
#include "data.h"
#include "method.h"
#include "model.h"
#include "plugin_loader.h"
#include "core.h"

/* ---- the model ------------------------------------------------------------------------- */

/* peft check's small model (check/check.h): 2 layers, C 16, GQA, F 24, V 29. */
static inline void mt_model(struct model *m, int tied, uint64_t seed, float init_std) {
    REQUIRE(check_tiny_model(m, tied, seed, init_std) == 0, "model_init: %s", err_msg());
}

/* A second model with the same config and parameters. */
static inline void mt_model_copy(struct model *dst, const struct model *src) {
    REQUIRE(check_model_copy(dst, src) == 0, "model_init: %s", err_msg());
}

/* ---- a batch mixing tasks 0 and 1 ------------------------------------------------------ */

static inline void mt_batch(struct batch *b, int32_t B, int32_t T, int32_t vocab, uint64_t seed) {
    check_mixed_batch(b, B, T, vocab, seed);
}

static inline void mt_batch_free(struct batch *b) { check_batch_free(b); }

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

/* Mean cross-entropy over rows with a target, in double from the last forward's logits. */
static inline double mt_loss_from_logits(const struct model *m, const struct model_acts *a,
                                         const struct batch *b) {
    return check_loss_from_logits(m, a, b);
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
    return check_nmse(got, want, n);
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
