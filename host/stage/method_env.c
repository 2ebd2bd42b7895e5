/* method_env.c: the method instances a stage creates, and the services the chain gives them
 * through the ABI: a finished stage's tensors and dense changes (stage_tensor, stage_delta,
 * stage_file) and auxiliary passes of the batch being processed (run_pass). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage.h"

const struct model_snapshot *stage_start(const struct stage_env *env, const struct stage *s) {
    return s->from >= 0 ? env->stages[s->from].result_params : env->base_params;
}

static struct stage *finished_stage(struct stage_env *env, const char *name) {
    for (int32_t i = 0; i < env->n_stages; i++)
        if (strcmp(env->stages[i].name, name) == 0)
            return env->stages[i].result_params ? &env->stages[i] : NULL;
    return NULL;
}

static int env_stage_tensor(void *ctx, const char *stage, const char *name, float *out,
                            uint64_t numel) {
    struct stage *s = finished_stage(ctx, stage);
    if (!s) return err_set("stage '%s' has not finished (or does not exist)", stage);
    char *path = path_join(s->dir, "adapter.safetensors");
    struct st_file f;
    int rc = st_open(&f, path);
    free(path);
    if (rc) return -1;
    const struct st_tensor *t = st_find(&f, name);
    if (!t)
        rc = err_set("%s: no tensor '%s' in stage '%s'", f.path, name, stage);
    else if (t->numel != numel)
        rc = err_set("%s: tensor '%s' has %llu entries, %llu asked", f.path, name,
                     (unsigned long long)t->numel, (unsigned long long)numel);
    else
        rc = st_read_f32(&f, t, out, numel);
    st_close(&f);
    return rc;
}

static int env_stage_file(void *ctx, const char *stage, char *out, size_t cap) {
    struct stage *s = finished_stage(ctx, stage);
    if (!s) return err_set("stage '%s' has not finished (or does not exist)", stage);
    char *path = path_join(s->dir, "adapter.safetensors");
    int rc = strlen(path) < cap ? 0 : err_set("stage '%s': path too long for the buffer", stage);
    if (rc == 0) memcpy(out, path, strlen(path) + 1);
    free(path);
    return rc;
}

static int env_stage_delta(void *ctx, const char *stage, int32_t site, float *out) {
    struct stage_env *env = ctx;
    struct stage *s = finished_stage(env, stage);
    if (!s) return err_set("stage '%s' has not finished (or does not exist)", stage);
    if (s->unmerged)
        return err_set("stage '%s' (%s) has no dense change of the weights to give", stage,
                       s->pm->desc->id);
    int32_t t = model_site_tensor(env->model, site);
    size_t n = env->model->tensors[t].numel;
    float *start = xalloc_floats(n);
    model_snapshot_read(s->result_params, env->model, t, out);
    model_snapshot_read(stage_start(env, s), env->model, t, start);
    for (size_t i = 0; i < n; i++) out[i] -= start[i];
    free(start);
    return 0;
}

/* peft.stage_keys/1: a stage's method keys (defaults filled), its method's id and steps. */
static int env_stage_value(void *ctx, const char *stage, const char *key, char *out, size_t cap) {
    struct stage_env *env = ctx;
    const struct stage *s = NULL;
    for (int32_t i = 0; i < env->n_stages && !s; i++)
        if (stage && strcmp(env->stages[i].name, stage) == 0) s = &env->stages[i];
    if (!s) return 1;
    char steps[32];
    const char *v = NULL;
    if (strcmp(key, "method") == 0) {
        v = s->merge ? "merge" : s->pm ? s->pm->desc->id : NULL;
    } else if (strcmp(key, "steps") == 0) {
        snprintf(steps, sizeof steps, "%lld", (long long)s->steps);
        v = steps;
    } else {
        for (uint32_t i = 0; i < s->n_kv && !v; i++)
            if (strcmp(s->kv[i].key, key) == 0) v = s->kv[i].value;
    }
    if (!v) return 1;
    if (strlen(v) >= cap) return -1;
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

void stage_set_batch(struct stage_env *env, struct method_run *mr, const struct batch *b,
                     int training) {
    env->aux->mr = mr;
    env->aux->batch = b;
    env->aux->training = training;
}

/* A forward of the current batch whose hooks see `pass`, with no language-model loss (only
 * what the hidden hook adds), and its backward when asked in training. */
static int env_run_pass(void *ctx, uint32_t pass, uint32_t backward) {
    struct stage_env *env = ctx;
    struct aux_pass *a = env->aux;
    const struct batch *b = a->batch;
    if (!b || !a->mr) return err_set("run_pass: no batch is being processed");
    struct model_hooks hooks = *method_run_hooks(a->mr, a->training);
    hooks.pass = pass;
    if (!a->acts) a->acts = model_acts_new();
    float loss;
    if (model_forward(env->model, a->acts, b->tokens, NULL, b->B, b->T, &hooks, &loss)) return -1;
    if (backward && a->training) return model_backward(env->model, a->acts, &hooks);
    return 0;
}

int stage_method_create(struct stage_env *env, const char *where, const char *stage,
                        uint64_t seed, const struct plugin_method *pm, const peft_kv *kv,
                        uint32_t n_kv, struct method_run **out) {
    struct method_env menv = {
        .tasks = env->tasks, .seed = seed, .init_seed = env->seed, .stage = stage, .where = where,
        .run_ctx = env, .stage_tensor = env_stage_tensor, .stage_delta = env_stage_delta,
        .run_pass = env_run_pass, .stage_file = env_stage_file, .stage_value = env_stage_value};
    for (int32_t i = 0; i < env->n_stages; i++)
        if (strcmp(env->stages[i].name, stage) == 0) {
            menv.train_tasks = env->stages[i].train_tasks;
            menv.n_train_tasks = env->stages[i].n_train_tasks;
            menv.init_seed = env->stages[i].init_seed;
        }
    return method_run_create(out, pm, env->model, &menv, kv, n_kv);
}

int stage_method(struct stage_env *env, const struct stage *s, struct method_run **out) {
    return stage_method_create(env, s->where, s->name, s->seed, s->pm, s->kv, s->n_kv, out);
}
