/* train.c: the training loop of one stage, with checkpoints that resume bit-exactly; its
 * batches come from the stage's tasks and the continual-learning replay (data/replay.h). */
#include <cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stage.h"
#include "data/data.h"
#include "io/io.h"

/* ---- checkpoint ---------------------------------------------------------------------
 * A checkpoint is two files named after its step, checkpoint-STEP.safetensors (the method's
 * tensors, as an adapter file) and checkpoint-STEP-optim.safetensors (the AdamW moments and the
 * loop state), both carrying the step and the stage hash, and the manifest checkpoint.json that
 * names them. The manifest is renamed into place last and the previous pair removed only after
 * it, so a crash at any moment leaves the previous checkpoint or the new one whole, never a mix
 * (files of a pair the manifest does not name are leftovers, removed by the next save). */

static const char *const manifest_name = "checkpoint.json";

static char *checkpoint_file(const struct stage *s, int64_t step, const char *suffix) {
    char name[96];
    snprintf(name, sizeof name, "checkpoint-%lld%s.safetensors", (long long)step, suffix);
    return path_join(s->dir, name);
}

/* The step of a checkpoint file's name (checkpoint-STEP[-optim].safetensors), or -1. */
static int64_t checkpoint_step(const char *name) {
    if (strncmp(name, "checkpoint-", 11) != 0) return -1;
    char *end;
    long long step = strtoll(name + 11, &end, 10);
    if (end == name + 11 || (strcmp(end, ".safetensors") != 0 && strcmp(end, "-optim.safetensors") != 0))
        return -1;
    return step;
}

/* Every checkpoint file of s but those of step keep and the (keep_checkpoints - 1) steps
 * before it that are on disk (keep -1: all, and the manifest too). */
static void checkpoint_remove_others(const struct stage *s, int64_t keep) {
    DIR *d = opendir(s->dir);
    if (!d) return;
    /* the oldest step still kept: the keep_checkpoints-th most recent on disk */
    int64_t oldest_kept = keep;
    if (keep >= 0 && s->keep_checkpoints > 1) {
        int64_t *steps = xcalloc((size_t)s->keep_checkpoints, sizeof *steps);
        int64_t n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            int64_t st = checkpoint_step(e->d_name);
            if (st < 0 || st > keep) continue;
            int dup = 0;
            for (int64_t k = 0; k < n; k++) dup |= steps[k] == st;
            if (dup) continue;
            if (n < s->keep_checkpoints) steps[n++] = st;
            else { /* replace the smallest when st is larger */
                int64_t m = 0;
                for (int64_t k = 1; k < n; k++) if (steps[k] < steps[m]) m = k;
                if (st > steps[m]) steps[m] = st;
            }
        }
        for (int64_t k = 0; k < n; k++) if (steps[k] < oldest_kept) oldest_kept = steps[k];
        free(steps);
        rewinddir(d);
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        int ours = strncmp(n, "checkpoint-", 11) == 0 || strcmp(n, manifest_name) == 0 ||
                   strcmp(n, "checkpoint.safetensors") == 0; /* the former single-name layout */
        int64_t st = checkpoint_step(n);
        if (!ours || (keep >= 0 && (strcmp(n, manifest_name) == 0 || (st >= oldest_kept && st <= keep))))
            continue;
        char *p = path_join(s->dir, n);
        unlink(p);
        free(p);
    }
    closedir(d);
}

int stage_checkpoint_exists(const struct stage *s) {
    char *p = path_join(s->dir, manifest_name);
    int found = file_exists(p);
    free(p);
    return found;
}

void stage_checkpoint_remove(const struct stage *s) { checkpoint_remove_others(s, -1); }

void stage_checkpoint_finish(const struct stage *s) {
    if (s->keep_checkpoints <= 0) {
        checkpoint_remove_others(s, -1);
        return;
    }
    char *p = path_join(s->dir, manifest_name);
    unlink(p);
    free(p);
}

struct loop_state {
    int64_t step;
    struct rng data_rng;
    double tokens, seconds;
};

/* Early stopping: the best mean evaluation so far and how many evaluations since. */
struct early_state {
    double best;
    int64_t since;
};

/* After an evaluation: a better mean metric saves the method's tensors as the best (the
 * stage's result if training stops or ends); patience evaluations without one stop it. */
static int early_stopping_check(struct stage_env *env, struct stage *s, struct method_run *mr,
                                const struct eval_result *ev, int64_t step, struct early_state *e,
                                int *stop) {
    (void)env;
    double sum = 0;
    for (int32_t k = 0; k < s->n_eval_tasks; k++) sum += s->early_on_accuracy ? ev[k].accuracy : ev[k].loss;
    double metric = s->n_eval_tasks ? sum / s->n_eval_tasks : 0;
    int better = s->best_step == 0 || (s->early_on_accuracy ? metric > e->best : metric < e->best);
    if (better) {
        char *best = path_join(s->dir, "early-stopping-best.safetensors");
        char step_text[32];
        snprintf(step_text, sizeof step_text, "%lld", (long long)step);
        const char *meta[] = {"peft.step", step_text, NULL};
        /* process 0 writes; the others read it back at the stage's end */
        int rc = dist_rank() == 0 ? method_run_save(mr, best, meta) : 0;
        free(best);
        if (rc) return -1;
        e->best = metric;
        e->since = 0;
        s->best_step = step;
    } else if (++e->since >= s->early_stopping) {
        *stop = 1;
    }
    return 0;
}

static void rng_to_hex(const struct rng *g, char *out) {
    sprintf(out, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, g->s[0], g->s[1], g->s[2],
            g->s[3]);
}

static int rng_from_hex(struct rng *g, const char *hex) {
    if (!hex || strlen(hex) != 64) return -1;
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, hex + 16 * i, 16);
        part[16] = 0;
        char *end;
        g->s[i] = strtoull(part, &end, 16);
        if (*end) return -1;
    }
    return 0;
}

static int checkpoint_save(const struct stage *s, struct method_run *mr,
                           const struct loop_state *ls, const struct early_state *e,
                           const char *before_json) {
    char step[32], hash[32], data_rng[80], method_rng[80], tokens[48], seconds[48], early[96];
    /* early stopping's watch: the best evaluation's step and metric, evaluations since */
    snprintf(early, sizeof early, "%lld %.17g %lld", (long long)s->best_step, e->best, (long long)e->since);
    snprintf(step, sizeof step, "%lld", (long long)ls->step);
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)s->hash);
    rng_to_hex(&ls->data_rng, data_rng);
    rng_to_hex(method_run_rng(mr), method_rng);
    snprintf(tokens, sizeof tokens, "%.17g", ls->tokens);
    snprintf(seconds, sizeof seconds, "%.17g", ls->seconds);
    const char *meta[] = {"peft.step", step, "peft.config_hash", hash, NULL};
    char *adapter = checkpoint_file(s, ls->step, ""), *optim = checkpoint_file(s, ls->step, "-optim");
    int rc = method_run_save(mr, adapter, meta);
    if (rc) {
        free(adapter);
        free(optim);
        return -1;
    }

    struct st_writer *w = st_writer_new();
    char **names = xcalloc((size_t)method_run_tensor_count(mr) * 2 + 1, sizeof *names);
    int32_t n_names = 0;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (!t->adam_m) continue;
        int64_t shape[1] = {(int64_t)t->n_trainable};
        names[n_names] = xasprintf("adam_m/%s", t->name);
        st_writer_add_f32(w, names[n_names++], 1, shape, t->adam_m);
        names[n_names] = xasprintf("adam_v/%s", t->name);
        st_writer_add_f32(w, names[n_names++], 1, shape, t->adam_v);
    }
    st_writer_meta(w, "peft.step", step);
    st_writer_meta(w, "peft.config_hash", hash);
    st_writer_meta(w, "peft.data_rng", data_rng);
    st_writer_meta(w, "peft.method_rng", method_rng);
    st_writer_meta(w, "peft.tokens", tokens);
    st_writer_meta(w, "peft.seconds", seconds);
    st_writer_meta(w, "peft.before", before_json);
    st_writer_meta(w, "peft.early_stopping", early);
    rc = st_writer_save(w, optim);
    st_writer_free(w);
    for (int32_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    if (rc == 0) { /* the pair is whole: name it, then drop the previous one */
        char *text = xasprintf("{\"step\": %s, \"config_hash\": \"%s\", \"adapter\": \"%s\", "
                               "\"optim\": \"%s\"}\n", step, hash, strrchr(adapter, '/') + 1,
                               strrchr(optim, '/') + 1);
        char *manifest = path_join(s->dir, manifest_name);
        rc = file_write_atomic(manifest, text, strlen(text));
        free(manifest);
        free(text);
    }
    if (rc == 0) checkpoint_remove_others(s, ls->step);
    free(adapter);
    free(optim);
    return rc;
}

/* 1 = resumed, 0 = no usable checkpoint, -1 = a checkpoint that is broken. */
static int checkpoint_load(struct stage_env *env, struct stage *s, struct method_run *mr,
                           struct loop_state *ls, struct early_state *e, char **before_json) {
    char *manifest = path_join(s->dir, manifest_name), *text = NULL, *path = NULL, *adapter = NULL;
    int rc = 0;
    struct st_file f = {0}, fa = {0};
    cJSON *m = NULL;
    if (!file_exists(manifest)) goto done;
    if (file_read_all(manifest, &text, NULL)) {
        rc = -1;
        goto done;
    }
    m = cJSON_Parse(text);
    const cJSON *ja = m ? cJSON_GetObjectItemCaseSensitive(m, "adapter") : NULL;
    const cJSON *jo = m ? cJSON_GetObjectItemCaseSensitive(m, "optim") : NULL;
    if (!cJSON_IsString(ja) || !cJSON_IsString(jo) || strchr(ja->valuestring, '/') ||
        strchr(jo->valuestring, '/')) {
        rc = err_set("%s: not a checkpoint manifest (adapter and optim file names expected)", manifest);
        goto done;
    }
    adapter = path_join(s->dir, ja->valuestring);
    path = path_join(s->dir, jo->valuestring);
    if (st_open(&f, path) || st_open(&fa, adapter)) {
        rc = -1;
        goto done;
    }
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)s->hash);
    const char *h = st_meta(&f, "peft.config_hash"), *step = st_meta(&f, "peft.step");
    const char *astep = st_meta(&fa, "peft.step");
    if (!h || strcmp(h, hash) != 0) {
        if (!env->quiet) printf("[%s] checkpoint is from a different configuration; starting over\n", s->name);
        goto done;
    }
    int64_t st_step;
    if (!step || !astep || strcmp(step, astep) != 0 || parse_i64(step, &st_step) ||
        rng_from_hex(&ls->data_rng, st_meta(&f, "peft.data_rng")) ||
        rng_from_hex(method_run_rng(mr), st_meta(&f, "peft.method_rng")) || !st_meta(&f, "peft.before")) {
        rc = err_set("%s: checkpoint state is incomplete or does not match %s", path, adapter);
        goto done;
    }
    if (method_run_load(mr, adapter)) {
        rc = -1;
        goto done;
    }
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (!t->grad) continue;
        char name[512];
        snprintf(name, sizeof name, "adam_m/%s", t->name);
        const struct st_tensor *tm = st_find(&f, name);
        snprintf(name, sizeof name, "adam_v/%s", t->name);
        const struct st_tensor *tv = st_find(&f, name);
        if (!tm || !tv) {
            if (st_step == 0) continue;
            rc = err_set("%s: optimizer state of '%s' missing", path, t->name);
            goto done;
        }
        if (tm->numel != t->n_trainable || tv->numel != t->n_trainable) {
            rc = err_set("%s: optimizer state of '%s' has the wrong size", path, t->name);
            goto done;
        }
        t->adam_m = xalloc_floats(t->n_trainable);
        t->adam_v = xalloc_floats(t->n_trainable);
        if (st_read_f32(&f, tm, t->adam_m, t->n_trainable) || st_read_f32(&f, tv, t->adam_v, t->n_trainable)) {
            rc = -1;
            goto done;
        }
    }
    const char *early = st_meta(&f, "peft.early_stopping");
    long long best_step = 0, since = 0;
    double best = 0;
    if (early && (sscanf(early, "%lld %lf %lld", &best_step, &best, &since) != 3 || best_step < 0 ||
                  best_step > st_step || since < 0)) {
        rc = err_set("%s: metadata peft.early_stopping: expected 'best_step best since', got '%s'",
                     path, early);
        goto done;
    }
    s->best_step = best_step;
    e->best = best;
    e->since = since;
    ls->step = st_step;
    ls->tokens = strtod(st_meta(&f, "peft.tokens") ? st_meta(&f, "peft.tokens") : "0", NULL);
    ls->seconds = strtod(st_meta(&f, "peft.seconds") ? st_meta(&f, "peft.seconds") : "0", NULL);
    *before_json = xstrdup(st_meta(&f, "peft.before"));
    rc = 1;
done:
    if (f.path) st_close(&f);
    if (fa.path) st_close(&fa);
    cJSON_Delete(m);
    free(text);
    free(manifest);
    free(path);
    free(adapter);
    return rc;
}

/* ---- evaluation results as JSON (kept in checkpoints) ------------------------------ */

static char *eval_json(const struct eval_result *ev, int32_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (int32_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "task_id", ev[i].task);
        cJSON_AddNumberToObject(o, "n", ev[i].n);
        cJSON_AddNumberToObject(o, "loss", ev[i].loss);
        cJSON_AddNumberToObject(o, "accuracy", ev[i].accuracy);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return text;
}

static void eval_parse(const char *json, struct eval_result *ev, int32_t n) {
    cJSON *arr = cJSON_Parse(json);
    int32_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (i >= n) break;
        ev[i].task = (int32_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "task_id"));
        ev[i].n = (int32_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "n"));
        ev[i].loss = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "loss"));
        ev[i].accuracy = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "accuracy"));
        i++;
    }
    cJSON_Delete(arr);
}

void stage_log_eval(struct stage_env *env, const struct stage *s, const char *point, int64_t step,
                  const struct eval_result *ev) {
    for (int32_t i = 0; i < s->n_eval_tasks; i++) {
        char loss[40], acc[40];
        metrics_add(env->metrics,
                    xasprintf("{\"type\":\"eval\",\"stage\":\"%s\",\"point\":\"%s\",\"step\":%lld,"
                              "\"task\":\"%s\",\"n\":%d,\"loss\":%s,\"accuracy\":%s}",
                              s->name, point, (long long)step, env->tasks->names[ev[i].task],
                              ev[i].n, json_finite(loss, sizeof loss, "%.6f", ev[i].loss),
                              json_finite(acc, sizeof acc, "%.6f", ev[i].accuracy)));
    }
    if (strcmp(point, "step") != 0) return; /* a result: printed even with --quiet */
    /* Intermediate evaluations (eval_every) as one line: accuracy % (loss) per task. */
    printf("[%s] step %lld eval:", s->name, (long long)step);
    for (int32_t i = 0; i < s->n_eval_tasks; i++)
        printf("%s %s %.1f%% (%.3f)", i ? "," : "", env->tasks->names[ev[i].task],
               100.0 * ev[i].accuracy, ev[i].loss);
    printf("\n");
    fflush(stdout);
}

/* ---- the loop ---------------------------------------------------------------------- */

/* A stage whose loss or gradient is no longer finite stops: nothing of it is saved as done,
 * and the command exits 1 (a failure of the run, not bad input). Takes what. */
static void diverged(const struct stage_env *env, const struct stage *s, int64_t step, char *what) {
    err_set_status(1, "%s: [%s] diverged at step %lld: %s (lower lr, or check the method's "
                   "keys)", env->run_path, s->section, (long long)step, what);
    free(what);
}

/* The first trainable tensor with a non-finite gradient entry, or NULL. */
static const char *first_nonfinite_grad(struct method_run *mr) {
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        for (uint64_t j = 0; t->grad && j < t->n_trainable; j++)
            if (!isfinite(t->grad[j])) return t->name;
    }
    return NULL;
}

int stage_train(struct stage_env *env, struct stage *s, struct method_run *mr) {
    /* The pool: every training example of the stage's tasks. */
    /* With n_train, only the first n_train examples of each task (few-shot stages). */
    size_t *pool = xmalloc(sizeof *pool * (env->train->n + 1)), n_pool = 0;
    int64_t *taken = xcalloc((size_t)s->n_train_tasks + 1, sizeof *taken);
    for (size_t i = 0; i < env->train->n; i++)
        for (int32_t k = 0; k < s->n_train_tasks; k++)
            if (env->train->ex[i].task == s->train_tasks[k] && (s->n_train == 0 || taken[k] < s->n_train)) {
                taken[k]++;
                pool[n_pool++] = i;
            }
    free(taken);
    struct loop_state ls = {0};
    struct dp_overlap overlap = {0};
    int overlapping = 0;
    rng_seed_label(&ls.data_rng, s->seed, "data-order");
    char *before_json = NULL;
    int rc = -1, resumed = 0;
    struct model_acts *acts = model_acts_new();
    /* training forwards: the head and the loss fused in chunks, no (rows, vocab) block;
     * label prediction reads the pairs' logits before its loss is known, so keeps them */
    if (!s->train_labels) model_acts_set_loss_chunk(acts, model_loss_chunk_rows(&env->model->cfg));
    struct batch b = {0};
    struct label_batch lb = {0};
    struct label_set labels = {.n = 0};
    /* a step's examples: grad_accum micro-batches of batch_size, drawn at once as one batch */
    int64_t accum = s->grad_accum > 0 ? s->grad_accum : 1;
    size_t *idx = xmalloc(sizeof *idx * (size_t)(s->batch_size * accum));
    struct progress prog;
    struct replay_memory memory = {0};
    int32_t n_old = replay_count(s->replay, s->replay_joint, s->n_replay_tasks,
                                 s->n_train_tasks, (int32_t)s->batch_size);
    if (n_pool == 0 && s->batch_size > n_old) {
        err_set("%s: [%s] tasks: no training example", env->run_path, s->section);
        goto out;
    }
    if (s->train_labels &&
        (label_set_add(&labels, env->train, s->train_tasks, s->n_train_tasks, s->section, "train_labels") ||
         label_set_add(&labels, env->train, s->replay_tasks, s->n_replay_tasks, s->section, "train_labels"))) {
        err_prefix("%s", env->run_path);
        goto out;
    }
    if (n_old > 0) {
        char *path = path_join(s->dir, "replay_memory.jsonl");
        int mrc = replay_memory_build(&memory, env->train, env->tasks, s->replay_tasks,
                                      s->n_replay_tasks, s->memory_per_label, env->seed) ||
                  (dist_rank() == 0 && replay_memory_save(&memory, env->train, env->tasks, path));
        free(path);
        if (mrc) {
            err_prefix("%s: [%s] replay_tasks", env->run_path, s->section);
            goto out;
        }
    }

    /* early stopping's watch starts over, or continues from the checkpoint */
    struct early_state early = {0};
    s->best_step = s->stopped_step = 0;
    if (env->resume) {
        resumed = checkpoint_load(env, s, mr, &ls, &early, &before_json);
        if (resumed < 0) goto out;
    }
    if (method_run_begin(mr)) goto out;
    /* Counted after stage_begin, where a method may set a mask (LoTA from a calibration). */
    s->n_trainable = method_run_trainable_count(mr);
    if (!env->quiet)
        printf("[%s] %s: %llu trainable parameters at %d sites, %lld steps\n", s->name,
               s->pm->desc->id, (unsigned long long)s->n_trainable, method_run_site_count(mr),
               (long long)s->steps);
    for (int32_t k = 0; k < s->n_train_tasks; k++)
        if (method_run_task_begin(mr, s->train_tasks[k])) goto out;
    /* Replayed tasks appear in the batches too (task_begin: before a task's first batch). */
    for (int32_t k = 0; n_old > 0 && k < s->n_replay_tasks; k++)
        if (method_run_task_begin(mr, s->replay_tasks[k])) goto out;
    if (resumed) {
        eval_parse(before_json, s->before, s->n_eval_tasks);
        metrics_drop_stage(env->metrics, s->name, ls.step);
        if (!env->quiet) printf("[%s] resuming at step %lld\n", s->name, (long long)ls.step);
    } else {
        metrics_drop_stage(env->metrics, s->name, -1);
        if (stage_eval(env, s, mr, s->before)) goto out;
        stage_log_eval(env, s, "before", 0, s->before);
        before_json = eval_json(s->before, s->n_eval_tasks);
    }

    const struct model_hooks *hooks = method_run_hooks(mr, 1);
    /* under mpirun: the last micro-batch's backward starts each layer's gradient sum */
    struct model_hooks last_hooks = *hooks;
    overlapping = dist_size() > 1 && env->allreduce_overlap;
    if (overlapping) {
        dp_overlap_init(&overlap, mr, env->model);
        last_hooks.layer_backward_done = dp_overlap_layer_done;
        last_hooks.layer_ctx = &overlap;
    }
    double comm0_seconds, comm0_bytes;
    dist_comm_stats(&comm0_seconds, &comm0_bytes);
    int64_t first_step = ls.step;
    double window_loss = 0, t_start = now_seconds(), tokens_at_start = ls.tokens;
    int32_t window_n = 0;
    progress_begin(&prog, env->progress, ls.step);
    for (int64_t step = ls.step + 1; step <= s->steps; step++) {
        replay_draw(&memory, pool, n_pool, (int32_t)(s->batch_size * accum), n_old * (int32_t)accum,
                    &ls.data_rng, idx);
        /* Zero first: batch_begin may run an auxiliary pass that accumulates gradients. */
        method_run_zero_grads(mr);
        /* Each micro-batch's loss is a mean over its answer tokens; weighted by its share of
         * the step's answer tokens, the summed gradients are those of the whole batch's mean. */
        /* (the run fitted every training example to the context, so its targets are its
         * scored ids after the first) */
        /* (under mpirun every process counts the whole step's: its share is its part of it) */
        int weigh = accum > 1 || dist_size() > 1;
        int64_t step_targets = 0;
        for (int64_t i = 0; i < s->batch_size * accum && weigh && !s->train_labels; i++) {
            const struct example *e = &env->train->ex[idx[i]];
            for (int32_t t = 1; t < e->n_ids; t++) step_targets += e->scored[t];
        }
        double step_loss = 0, step_tokens = 0;
        int failed = 0;
        /* Under mpirun each process runs its share [lo, hi) of every micro-batch (a process
         * with none still takes part in the sums), drawing its own random numbers. */
        size_t lo, hi;
        dp_share((size_t)s->batch_size, &lo, &hi);
        /* what a plugin's own loss (a mean over the batch) is weighted by */
        method_run_set_step_share(mr, (double)(hi - lo) / (double)(s->batch_size * accum));
        struct rng shared_stream;
        for (int64_t k = 0; k < accum && !failed && s->train_labels; k++) {
            /* label prediction: every micro-batch has batch_size examples, an equal share */
            model_acts_set_loss_scale(acts, (float)(1.0 / (double)accum));
            float loss = 0;
            dp_pass_stream(method_run_rng(mr), &shared_stream, k);
            if (hi > lo)
                failed = label_train_batch(env, mr, acts, &lb, &labels, idx + k * s->batch_size + lo,
                                           hi - lo, (size_t)s->batch_size, (uint64_t)(step - 1), &loss);
            dp_pass_stream_end(method_run_rng(mr), &shared_stream);
            step_loss += hi > lo ? loss / (double)accum : 0.0;
            step_tokens += hi > lo ? (double)lb.b.B * lb.b.T : 0.0;
        }
        for (int64_t k = 0; k < accum && !failed && !s->train_labels && hi > lo; k++) {
            batch_make(&b, env->train, idx + k * s->batch_size + lo, (int32_t)(hi - lo), env->model->cfg.max_seq);
            int64_t targets = 0;
            for (int32_t r = 0; r < b.B * b.T && weigh; r++) targets += b.targets[r] >= 0;
            double share = weigh ? (step_targets ? (double)targets / (double)step_targets : 0.0) : 1.0;
            model_acts_set_loss_scale(acts, (float)share);
            stage_set_batch(env, mr, &b, 1);
            float loss = 0;
            dp_pass_stream(method_run_rng(mr), &shared_stream, k);
            const struct model_hooks *hk = k == accum - 1 ? &last_hooks : hooks;
            failed = method_run_batch_begin(mr, &b, 1, (uint64_t)(step - 1)) ||
                     model_forward(env->model, acts, b.tokens, b.targets, b.B, b.T, hk, &loss) ||
                     model_backward(env->model, acts, hk);
            dp_pass_stream_end(method_run_rng(mr), &shared_stream);
            stage_set_batch(env, NULL, NULL, 0);
            step_loss += share * loss;
            step_tokens += (double)b.B * b.T;
        }
        for (int64_t k = 0; k < accum && !s->train_labels && hi <= lo; k++) { /* nothing to run */
            dp_pass_stream(method_run_rng(mr), &shared_stream, k);
            dp_pass_stream_end(method_run_rng(mr), &shared_stream);
        }
        model_acts_set_loss_scale(acts, 1.0f);
        if (failed) goto out;
        method_run_collect_grads(mr); /* masked base-weight gradients into their compact form */
        double sums[2] = {step_loss, step_tokens};
        if ((overlapping && !s->train_labels ? dp_overlap_finish(&overlap) : dp_sum_grads(mr)) ||
            dist_sum_doubles(sums, 2))
            goto out;
        step_loss = sums[0];
        step_tokens = sums[1];
        float loss = (float)step_loss;
        if (!isfinite(loss)) {
            diverged(env, s, step, xasprintf("the loss is not finite (%s)",
                                             isnan(loss) ? "NaN" : loss > 0 ? "+inf" : "-inf"));
            goto out;
        }
        double grad_norm = optim_step(mr, &s->opt, step);
        if (!isfinite(grad_norm)) {
            const char *t = first_nonfinite_grad(mr);
            diverged(env, s, step, t ? xasprintf("the gradient of '%s' is not finite", t)
                                     : xasprintf("the gradient norm is not finite"));
            goto out;
        }
        if (method_run_step_end(mr, (uint64_t)step)) goto out;
        if (method_run_trainable_count(mr) != s->n_trainable) { /* a mask set in the stage */
            s->n_trainable = method_run_trainable_count(mr);
            progress_interrupt(&prog);
            if (!env->quiet)
                printf("[%s] step %lld: %llu trainable parameters from here on\n", s->name,
                       (long long)step, (unsigned long long)s->n_trainable);
        }
        ls.step = step;
        ls.tokens += step_tokens;
        window_loss += loss;
        window_n++;
        double elapsed = now_seconds() - t_start;
        double tps = elapsed > 0 ? (ls.tokens - tokens_at_start) / elapsed : 0;
        if (step % s->log_every == 0 || step == s->steps) {
            char lossb[40], normb[40];
            metrics_add(env->metrics,
                        xasprintf("{\"type\":\"train\",\"stage\":\"%s\",\"step\":%lld,\"loss\":%s,"
                                  "\"lr\":%.6g,\"grad_norm\":%s,\"tokens_per_second\":%.1f}",
                                  s->name, (long long)step,
                                  json_finite(lossb, sizeof lossb, "%.6f", window_loss / window_n),
                                  s->opt.lr * optim_lr_factor(&s->opt, step - 1),
                                  json_finite(normb, sizeof normb, "%.6g", grad_norm), tps));
            progress_update(&prog, s->name, step, s->steps, window_loss / window_n, tps);
            window_loss = 0;
            window_n = 0;
        }
        int stop_early = 0;
        if (s->eval_every && step % s->eval_every == 0 && step < s->steps) {
            struct eval_result *ev = xcalloc((size_t)s->n_eval_tasks, sizeof *ev);
            int erc = stage_eval(env, s, mr, ev);
            progress_interrupt(&prog);
            if (erc == 0) stage_log_eval(env, s, "step", step, ev);
            if (erc == 0 && s->early_stopping > 0)
                erc = early_stopping_check(env, s, mr, ev, step, &early, &stop_early);
            free(ev);
            if (erc) goto out;
        }
        if (stop_early) {
            s->stopped_step = step;
            if (!env->quiet)
                printf("[%s] early stop at step %lld: the mean eval %s has not improved for %lld "
                       "evaluations; the result is step %lld's\n", s->name, (long long)step,
                       s->early_on_accuracy ? "accuracy" : "loss", (long long)s->early_stopping,
                       (long long)s->best_step);
            break;
        }
        int stop_here = env->stop_after > 0 && step == env->stop_after && step < s->steps;
        if ((s->save_every && step % s->save_every == 0 && step < s->steps) || stop_here) {
            ls.seconds += now_seconds() - t_start;
            t_start = now_seconds();
            tokens_at_start = ls.tokens;
            if (dist_rank() == 0 && /* process 0 writes; the others hold the same state */
                (checkpoint_save(s, mr, &ls, &early, before_json) || metrics_flush(env->metrics)))
                goto out;
        }
        if (stop_here) {
            progress_end(&prog);
            rc = 1;
            goto out;
        }
    }
    progress_end(&prog);
    if (s->best_step > 0) { /* the best evaluation's tensors are the stage's result */
        char *best = path_join(s->dir, "early-stopping-best.safetensors");
        dist_barrier(); /* process 0 wrote it */
        int lrc = method_run_load(mr, best);
        dist_barrier(); /* every process read it */
        if (dist_rank() == 0) unlink(best);
        free(best);
        if (lrc) goto out;
    }
    if (dp_check_agree(mr, env->run_path, s->section)) goto out;
    if (dist_size() > 1) { /* the gradient sums of the steps this process ran */
        double comm_s, comm_b;
        dist_comm_stats(&comm_s, &comm_b);
        s->comm_seconds = comm_s - comm0_seconds;
        s->comm_bytes = comm_b - comm0_bytes;
        s->comm_steps = ls.step - first_step;
    }
    ls.seconds += now_seconds() - t_start;
    s->train_seconds = ls.seconds;
    s->tokens_per_second = ls.seconds > 0 ? ls.tokens / ls.seconds : 0;
    rc = 0;
out:
    if (overlapping) dp_overlap_free(&overlap);
    replay_memory_free(&memory);
    free(before_json);
    free(idx);
    free(pool);
    batch_free(&b);
    label_batch_free(&lb);
    model_acts_free(acts);
    return rc;
}
