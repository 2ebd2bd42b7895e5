/* run.c: execute a chain of stages: reuse, train, evaluate, save, summarize. */
#include "run.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io/io.h"
#include "merge/merge.h"

/* ---- the stages' view of the run ---------------------------------------------------- */

struct stage_env *run_env(struct run *r) {
    r->env = (struct stage_env){
        .run_path = r->cfg.path, .model = &r->model, .reg = &r->reg, .tasks = &r->tasks,
        .train = &r->train, .eval = &r->eval, .stages = r->stages, .n_stages = r->n_stages,
        .base_params = r->base_params, .metrics = &r->metrics, .aux = &r->aux, .seed = r->seed,
        .resume = r->resume, .quiet = r->quiet, .progress = r->quiet ? 0 : r->progress,
        .stop_after = r->stop_after, .model_dir = r->model_dir, .tok = r->tok,
        .allreduce_overlap = r->allreduce_overlap};
    return &r->env;
}

int run_method_create(struct run *r, const char *where, const char *stage, uint64_t seed,
                      const struct plugin_method *pm, const peft_kv *kv, uint32_t n_kv,
                      struct method_run **out) {
    return stage_method_create(run_env(r), where, stage, seed, pm, kv, n_kv, out);
}

const struct model_snapshot *run_stage_start(struct run *r, const struct stage *s) {
    return stage_start(run_env(r), s);
}

int run_eval(struct run *r, struct stage *s, struct method_run *mr, struct eval_result *out) {
    return stage_eval(run_env(r), s, mr, out);
}

/* ---- the processes of an MPI job -------------------------------------------------- */

/* Under mpirun every process runs the chain, process 0 alone writes files and prints. */
static int writer(void) { return dist_rank() == 0; }

/* Every process must take the same way through the chain (a stage reused or trained). Being
 * a collective call, it is also where the others wait for process 0 to have written the
 * stages before this one (a later stage may read their files: init_from, merge inputs). */
static int run_agree(const struct run *r, const struct stage *s, int complete) {
    uint64_t lo, hi;
    if (dist_agree((uint64_t)complete, &lo, &hi)) return -1;
    if (lo != hi)
        return err_set("%s: the processes disagree on whether %s is complete (do they all see "
                       "the same run folder?)", r->cfg.path, s->dir);
    return 0;
}

/* Process 0 writes a random token into the run folder; every other process must read it
 * back, or the folder is not shared and a resumed or reused stage could not be read. */
static int folder_shared(const struct run *r) {
    char *path = path_join(r->out_dir, ".processes");
    double token = 0;
    int rc = 0;
    if (writer()) {
        token = (double)((uint64_t)(now_seconds() * 1e9) % 1000000007ull) + (double)getpid();
        char text[32];
        int n = snprintf(text, sizeof text, "%.0f\n", token);
        rc = file_write_atomic(path, text, (size_t)n);
    }
    double sums[2] = {token, rc ? 1.0 : 0.0};
    if (dist_sum_doubles(sums, 2)) rc = -1;
    else if (sums[1] > 0) rc = writer() ? -1 : err_set("%s: process 0 could not write it", path);
    char *text = NULL;
    if (rc == 0 && !writer() && (file_read_all(path, &text, NULL) || strtod(text, NULL) != sums[0])) {
        err_clear();
        rc = err_set("%s: not the run folder process 0 writes: every process must see the "
                     "same [run] out (a folder shared between the machines)", r->out_dir);
    }
    free(text);
    dist_barrier(); /* read by all before it goes */
    if (writer()) unlink(path);
    free(path);
    return rc;
}

/* ---- one stage --------------------------------------------------------------------- */

/* The stage's output file carries the config hash it was made with. A run killed between
 * renaming a new output into place and writing its stage.json leaves an old stage.json beside
 * another configuration's output: that is not a complete stage. */
static int output_matches(struct run *r, const struct stage *s, const cJSON *info,
                          const char *want) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(info, "merge");
    const cJSON *file = m ? cJSON_GetObjectItemCaseSensitive(m, "file") : NULL;
    char *path = path_join(s->dir, cJSON_IsString(file) ? file->valuestring : "adapter.safetensors");
    struct st_file f;
    int opened = st_open(&f, path) == 0;
    const char *h = opened ? st_meta(&f, "peft.config_hash") : NULL;
    int ok = h && strcmp(h, want) == 0;
    if (!ok && !r->quiet)
        printf("[%s] %s is not the output stage.json describes (an interrupted run): "
               "running the stage again\n", s->name, path);
    if (opened) st_close(&f);
    free(path);
    err_clear();
    return ok;
}

static int stage_is_complete(struct run *r, struct stage *s, cJSON **info) {
    char *path = path_join(s->dir, "stage.json"), *text;
    size_t len;
    int ok = 0;
    *info = NULL;
    if (file_read_all(path, &text, &len) == 0) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *h = j ? cJSON_GetObjectItemCaseSensitive(j, "hash") : NULL;
        char want[32];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)s->hash);
        if (cJSON_IsString(h) && strcmp(h->valuestring, want) == 0 && output_matches(r, s, j, want)) {
            ok = 1;
            *info = j;
        } else {
            cJSON_Delete(j);
        }
        free(text);
    }
    err_clear();
    free(path);
    return ok;
}

static void eval_from_json(const cJSON *arr, struct eval_result *out, const struct stage *s) {
    for (int32_t i = 0; i < s->n_eval_tasks; i++) {
        out[i].task = s->eval_tasks[i];
        out[i].n = 0;
        out[i].loss = out[i].accuracy = -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        int32_t task = (int32_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "task_id"));
        for (int32_t i = 0; i < s->n_eval_tasks; i++)
            if (out[i].task == task) {
                out[i].n = (int32_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "n"));
                out[i].loss = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "loss"));
                out[i].accuracy = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "accuracy"));
            }
    }
}

static cJSON *eval_to_json(struct run *r, const struct eval_result *ev, int32_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (int32_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "task", r->tasks.names[ev[i].task]);
        cJSON_AddNumberToObject(o, "task_id", ev[i].task);
        cJSON_AddNumberToObject(o, "n", ev[i].n);
        cJSON_AddNumberToObject(o, "loss", ev[i].loss);
        cJSON_AddNumberToObject(o, "accuracy", ev[i].accuracy);
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static const char *const *stage_meta(struct run *r, struct stage *s, char **hash_out) {
    static const char *kv[15];
    static char trainable[32];
    snprintf(trainable, sizeof trainable, "%llu", (unsigned long long)s->n_trainable);
    *hash_out = xasprintf("%016llx", (unsigned long long)s->hash);
    kv[0] = "peft.stage";
    kv[1] = s->name;
    kv[2] = "peft.stage_config";
    kv[3] = s->config_json;
    kv[4] = "peft.config_hash";
    kv[5] = *hash_out;
    kv[6] = "peft.run";
    kv[7] = r->cfg.path;
    kv[8] = "peft.trainable_parameters"; /* the count stage.json, summary and report give */
    kv[9] = trainable;
    /* the task names by id, so that a task-routed adapter can be read outside the run */
    static char *tasks;
    cJSON *names = cJSON_CreateArray();
    for (int32_t i = 0; i < r->tasks.n; i++) cJSON_AddItemToArray(names, cJSON_CreateString(r->tasks.names[i]));
    cJSON_free(tasks);
    tasks = cJSON_PrintUnformatted(names);
    cJSON_Delete(names);
    kv[10] = "peft.tasks";
    kv[11] = tasks;
    int n = 12;
    /* the folder the adapter applies to, when the stage starts from the run's model */
    static char *base;
    free(base);
    base = r->model_dir && s->from < 0 ? realpath(r->model_dir, NULL) : NULL;
    if (base) {
        kv[n++] = "peft.base_model";
        kv[n++] = base;
    }
    kv[n] = NULL;
    return kv;
}

static int stage_write_outputs(struct run *r, struct stage *s, struct method_run *mr) {
    char *hash, *path = path_join(s->dir, "adapter.safetensors");
    const char *const *meta = stage_meta(r, s, &hash);
    int rc = method_run_save(mr, path, meta);
    free(path);
    int save_model = s->save_model;
    if (save_model < 0) save_model = plugin_has_feature(s->pm, PEFT_FEATURE_WRITES_BASE);
    if (rc == 0 && save_model && s->unmerged) {
        if (!r->quiet) printf("[%s] no merged model written: %s cannot be folded into the weights\n",
                              s->name, s->pm->desc->id);
    } else if (rc == 0 && save_model) {
        /* The merged model: the way base models are made for later runs ([model] path). */
        char *dir = path_join(s->dir, "model");
        rc = hf_model_save(dir, &r->model, meta);
        if (rc == 0 && r->model_dir) rc = hf_copy_tokenizer(r->model_dir, dir);
        free(dir);
    }
    free(hash);
    return rc;
}

/* What a merge stage did, for stage.json. */
static cJSON *merge_json(const struct stage *s) {
    static const char *const files[] = {"task_vector.safetensors", "adapter.safetensors",
                                        "model/model.safetensors", "adapter.safetensors"};
    const struct merge_spec *m = s->merge;
    cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateArray(), *w = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "operator", merge_op_name(m->op));
    cJSON_AddStringToObject(o, "space", m->space == MERGE_SPACE_FACTOR ? "factor" : "delta");
    cJSON_AddStringToObject(o, "output", merge_output_name(m->output));
    cJSON_AddStringToObject(o, "file", files[m->output]);
    for (int32_t i = 0; i < m->n_in; i++) {
        cJSON_AddItemToArray(in, cJSON_CreateString(m->in[i].text));
        cJSON_AddItemToArray(w, cJSON_CreateNumber(m->in[i].weight));
    }
    cJSON_AddItemToObject(o, "inputs", in);
    cJSON_AddItemToObject(o, "weights", w);
    cJSON_AddNumberToObject(o, "sites_changed", m->n_sites);
    if (m->output == MERGE_OUT_LORA) {
        cJSON_AddNumberToObject(o, "rank", m->rank);
        cJSON_AddNumberToObject(o, "svd_max_rel_error", m->svd_max_rel_error);
    }
    return o;
}

static int stage_write_done(struct run *r, struct stage *s) {
    cJSON *j = cJSON_CreateObject();
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)s->hash);
    cJSON_AddStringToObject(j, "stage", s->name);
    cJSON_AddStringToObject(j, "hash", hash);
    cJSON_AddStringToObject(j, "method", s->pm->desc->id);
    cJSON_AddStringToObject(j, "method_version", s->pm->desc->version);
    char abi[32];
    snprintf(abi, sizeof abi, "%u.%u", PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    cJSON_AddStringToObject(j, "abi_version", abi);
    cJSON_AddStringToObject(j, "precision", model_precision_name(r->precision));
    cJSON_AddNumberToObject(j, "steps", (double)s->steps);
    cJSON_AddNumberToObject(j, "trainable_parameters", (double)s->n_trainable);
    cJSON_AddNumberToObject(j, "train_seconds", s->train_seconds);
    cJSON_AddNumberToObject(j, "tokens_per_second", s->tokens_per_second);
    cJSON_AddNumberToObject(j, "eval_seconds", s->eval_seconds);
    cJSON_AddNumberToObject(j, "peak_rss_kb", (double)s->peak_rss_kb);
    if (dist_size() > 1 && s->comm_steps > 0) { /* data-parallel: process 0's gradient sums */
        cJSON *p = cJSON_AddObjectToObject(j, "processes");
        cJSON_AddNumberToObject(p, "count", dist_size());
        cJSON_AddNumberToObject(p, "allreduce_seconds", s->comm_seconds);
        cJSON_AddNumberToObject(p, "allreduce_bytes_per_step", s->comm_bytes / (double)s->comm_steps);
    }
    /* the training data as ids: how many the loss counts (the answers) of how many */
    double examples = 0, sequence_tokens = 0, answer_tokens = 0;
    for (size_t i = 0; i < r->train.n; i++) {
        const struct example *e = &r->train.ex[i];
        int in_stage = 0;
        for (int32_t k = 0; k < s->n_train_tasks; k++) in_stage |= e->task == s->train_tasks[k];
        if (!in_stage) continue;
        examples++;
        sequence_tokens += e->n_ids;
        for (int32_t t = 1; t < e->n_ids; t++) answer_tokens += e->scored[t]; /* targets */
    }
    if (s->early_stopping > 0) {
        cJSON *es = cJSON_AddObjectToObject(j, "early_stopping");
        cJSON_AddNumberToObject(es, "best_step", (double)s->best_step);
        cJSON_AddNumberToObject(es, "stopped_at_step", (double)s->stopped_step);
    }
    cJSON *data = cJSON_AddObjectToObject(j, "data");
    cJSON_AddNumberToObject(data, "examples", examples);
    cJSON_AddNumberToObject(data, "sequence_tokens", sequence_tokens);
    cJSON_AddNumberToObject(data, "answer_tokens", answer_tokens);
    cJSON_AddItemToObject(j, "config", cJSON_Parse(s->config_json));
    if (s->merge) cJSON_AddItemToObject(j, "merge", merge_json(s));
    cJSON_AddItemToObject(j, "before", eval_to_json(r, s->before, s->n_eval_tasks));
    cJSON_AddItemToObject(j, "after", eval_to_json(r, s->after, s->n_eval_tasks));
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char *path = path_join(s->dir, "stage.json");
    int rc = file_write_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return rc;
}


/* A stage interrupted earlier left a checkpoint: continuing it (--resume) or starting it over
 * (--restart) is the user's choice, never made silently. */
static int check_checkpoints(struct run *r) {
    for (int32_t i = 0; i < r->n_stages; i++) {
        struct stage *s = &r->stages[i];
        if (!stage_checkpoint_exists(s) || r->resume) continue;
        if (r->restart) {
            if (writer()) stage_checkpoint_remove(s);
            continue;
        }
        return err_set("%s: stage '%s' was interrupted and has a checkpoint in %s: continue it "
                       "with --resume, or start it over with --restart",
                       r->cfg.path, s->name, s->dir);
    }
    return 0;
}

/* What later stages start from: the adapter folded into the weights. A method with no exact
 * dense change (an input-dependent gate) cannot be folded; that is fine unless a later stage
 * starts from this one, which the run file's check already refuses. */
/* Does anything need the stage's adapter folded into the weights: a later stage (they start
 * from the weights the chain left, and merges and methods read a stage's weight change) or
 * the merged model it writes? The last stage of a run without save_model folds nothing, so
 * the frozen weights it adapts stay as they are (16-bit ones are not made fp32). */
static int fold_needed(const struct run *r, const struct stage *s) {
    return s != r->stages + r->n_stages - 1 || s->save_model > 0;
}

static int stage_merge(struct run *r, struct stage *s, struct method_run *mr) {
    if (!fold_needed(r, s)) return 0; /* its result is then the unfolded weights: unused */
    if (method_run_merge(mr) == 0) return 0;
    for (struct stage *later = s + 1; later < r->stages + r->n_stages; later++)
        if (later->from == (int32_t)(s - r->stages))
            return err_prefix("stage '%s' starts from stage '%s'", later->name, s->name);
    err_clear();
    s->unmerged = 1;
    return 0;
}

/* A merge stage (merge.h) trains nothing: evaluate the starting weights, merge, evaluate the
 * result. A completed one is merged again (cheap and deterministic) to rebuild its weights,
 * and its evaluations are read back. */
static int run_merge_stage(struct run *r, struct stage *s) {
    model_snapshot_restore(&r->model, stage_start(&r->env, s));
    s->before = xcalloc((size_t)s->n_eval_tasks, sizeof *s->before);
    s->after = xcalloc((size_t)s->n_eval_tasks, sizeof *s->after);
    struct method_run *none = NULL, *eval_mr = NULL;
    cJSON *info = NULL;
    int complete = stage_is_complete(r, s, &info), rc = -1;
    if (stage_method(&r->env, s, &none)) goto out; /* attaches nothing: the bare weights */
    if (run_agree(r, s, complete)) goto out;
    if (!complete) {
        if (writer() && mkdir_p(s->dir)) goto out;
        metrics_drop_stage(&r->metrics, s->name, -1);
        if (stage_eval(&r->env, s, none, s->before)) goto out;
        stage_log_eval(&r->env, s, "before", 0, s->before);
    }
    if (merge_execute(&r->env, s, !complete && writer(), &eval_mr)) goto out;
    if (eval_mr) { /* an adapter that cannot be folded into the weights */
        for (struct stage *later = s + 1; later < r->stages + r->n_stages; later++)
            if (later->from == (int32_t)(s - r->stages)) {
                err_set("stage '%s' starts from stage '%s', whose result (%s) cannot be folded "
                        "into the weights", later->name, s->name,
                        method_run_plugin(eval_mr)->desc->id);
                goto out;
            }
        s->unmerged = 1;
        if (method_run_begin(eval_mr)) goto out;
    }
    if (complete) {
        eval_from_json(cJSON_GetObjectItemCaseSensitive(info, "before"), s->before, s);
        eval_from_json(cJSON_GetObjectItemCaseSensitive(info, "after"), s->after, s);
        s->eval_seconds = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(info, "eval_seconds"));
        s->reused = 1;
        if (!r->quiet) printf("[%s] complete in %s, reused\n", s->name, s->dir);
    } else {
        if (stage_eval(&r->env, s, eval_mr ? eval_mr : none, s->after)) goto out;
        stage_log_eval(&r->env, s, "after", 0, s->after);
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) s->peak_rss_kb = ru.ru_maxrss;
        if (writer() && (stage_write_predictions(&r->env, s, eval_mr ? eval_mr : none) ||
                         metrics_flush(&r->metrics) || stage_write_done(r, s)))
            goto out;
    }
    s->result_params = model_snapshot_take(&r->model);
    rc = 0;
out:
    cJSON_Delete(info);
    if (none) method_run_free(none);
    if (eval_mr) method_run_free(eval_mr);
    return rc;
}

static int run_stage(struct run *r, struct stage *s) {
    if (s->merge) return run_merge_stage(r, s);
    /* The model starts from the weights the chain left. */
    model_snapshot_restore(&r->model, stage_start(&r->env, s));
    s->before = xcalloc((size_t)s->n_eval_tasks, sizeof *s->before);
    s->after = xcalloc((size_t)s->n_eval_tasks, sizeof *s->after);

    struct method_run *mr = NULL;
    cJSON *info = NULL;
    int complete = stage_is_complete(r, s, &info);
    if (run_agree(r, s, complete)) goto fail;
    if (complete) {
        /* Reuse: load its adapter onto the starting weights and merge. */
        if (stage_method(&r->env, s, &mr)) goto fail;
        char *path = path_join(s->dir, "adapter.safetensors");
        int rc = method_run_load(mr, path);
        free(path);
        if (rc || stage_merge(r, s, mr)) goto fail;
        eval_from_json(cJSON_GetObjectItemCaseSensitive(info, "before"), s->before, s);
        eval_from_json(cJSON_GetObjectItemCaseSensitive(info, "after"), s->after, s);
        s->train_seconds = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(info, "train_seconds"));
        s->tokens_per_second = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(info, "tokens_per_second"));
        s->n_trainable = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(info, "trainable_parameters"));
        s->eval_seconds = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(info, "eval_seconds"));
        s->peak_rss_kb = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(info, "peak_rss_kb"));
        cJSON_Delete(info);
        info = NULL;
        s->reused = 1;
        if (!r->quiet) printf("[%s] complete in %s, reused\n", s->name, s->dir);
    } else {
        if (writer() && mkdir_p(s->dir)) goto fail;
        if (stage_method(&r->env, s, &mr)) goto fail;
        int rc = stage_train(&r->env, s, mr);
        if (rc > 0) { /* stopped on request (testing aid): the checkpoint is on disk */
            method_run_free(mr);
            return 1;
        }
        if (rc) goto fail;
        s->n_trainable = method_run_trainable_count(mr); /* a mask set in the stage (LoTA) */
        if (method_run_end(mr)) goto fail;
        if (stage_eval(&r->env, s, mr, s->after)) goto fail;
        stage_log_eval(&r->env, s, "after", s->stopped_step ? s->stopped_step : s->steps, s->after);
        if (writer() && stage_write_predictions(&r->env, s, mr)) goto fail;
        /* Fold first, so that the model written with save_model includes the adapter. */
        if (stage_merge(r, s, mr) || (writer() && stage_write_outputs(r, s, mr))) goto fail;
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) s->peak_rss_kb = ru.ru_maxrss;
        if (writer() && (metrics_flush(&r->metrics) || stage_write_done(r, s))) goto fail;
        if (writer()) stage_checkpoint_finish(s);
    }
    s->result_params = model_snapshot_take(&r->model);
    method_run_free(mr);
    return 0;
fail:
    cJSON_Delete(info);
    if (mr) method_run_free(mr);
    return -1;
}

/* ---- summary ----------------------------------------------------------------------- */

static int write_summary(struct run *r) {
    /* Rows: every task evaluated anywhere. Columns: the task's accuracy before the first
     * stage that evaluated it trained, then after each stage. Cells: exact-match accuracy, %. */
    struct strbuf md = {0};
    sb_printf(&md, "# %s\n\nAccuracy (%%) on held-out examples: exact match by greedy decoding, or in "
                   "stages with eval_labels the most likely label among all labels evaluated.\n\n",
              r->cfg.path);
    sb_printf(&md, "| task | before (first evaluated) |");
    for (int32_t i = 0; i < r->n_stages; i++) sb_printf(&md, " after %s |", r->stages[i].name);
    sb_printf(&md, "\n|---|---|");
    for (int32_t i = 0; i < r->n_stages; i++) sb_printf(&md, "---|");
    sb_printf(&md, "\n");
    for (int32_t t = 0; t < r->tasks.n; t++) {
        int any = 0;
        for (int32_t i = 0; i < r->n_stages; i++)
            for (int32_t k = 0; k < r->stages[i].n_eval_tasks; k++) any |= r->stages[i].eval_tasks[k] == t;
        if (!any) continue;
        sb_printf(&md, "| %s |", r->tasks.names[t]);
        /* "before": the first stage that evaluated this task, before it trained. */
        const char *before = " - |";
        char cell[32];
        for (int32_t i = 0; i < r->n_stages && before[1] == '-'; i++)
            for (int32_t k = 0; k < r->stages[i].n_eval_tasks; k++)
                if (r->stages[i].eval_tasks[k] == t && r->stages[i].before[k].accuracy >= 0) {
                    snprintf(cell, sizeof cell, " %.1f |", 100.0 * r->stages[i].before[k].accuracy);
                    before = cell;
                }
        sb_printf(&md, "%s", before);
        for (int32_t i = 0; i < r->n_stages; i++) {
            int done = 0;
            for (int32_t k = 0; k < r->stages[i].n_eval_tasks && !done; k++)
                if (r->stages[i].eval_tasks[k] == t && r->stages[i].after[k].accuracy >= 0) {
                    sb_printf(&md, " %.1f |", 100.0 * r->stages[i].after[k].accuracy);
                    done = 1;
                }
            if (!done) sb_printf(&md, " - |");
        }
        sb_printf(&md, "\n");
    }
    sb_printf(&md, "\n| stage | method | trainable parameters | steps | train time (s) | tokens/s |\n"
         "|---|---|---|---|---|---|\n");
    for (int32_t i = 0; i < r->n_stages; i++) {
        const struct stage *s = &r->stages[i];
        sb_printf(&md, "| %s | %s | %llu | %lld | %.1f | %.0f |\n", s->name, s->pm->desc->id,
             (unsigned long long)s->n_trainable, (long long)s->steps, s->train_seconds,
             s->tokens_per_second);
    }
    printf("\n%s", md.s); /* results print even with --quiet */
    char *path = path_join(r->out_dir, "summary.md");
    int rc = file_write_atomic(path, md.s, md.len);
    free(path);
    sb_free(&md);
    return rc;
}

/* Before/after table of each stage, printed as it finishes (a result: even with --quiet). */
static void print_stage_table(struct run *r, const struct stage *s) {
    printf("[%s] accuracy %% (loss)   before -> after\n", s->name);
    for (int32_t k = 0; k < s->n_eval_tasks; k++)
        printf("  %-14s %6.1f (%.3f) -> %6.1f (%.3f)\n", r->tasks.names[s->eval_tasks[k]],
               100.0 * s->before[k].accuracy, s->before[k].loss, 100.0 * s->after[k].accuracy,
               s->after[k].loss);
}

/* The chain, in a locked run folder. */
static int run_chain(struct run *r) {
    int stale = writer() ? file_remove_temporaries(r->out_dir, 2) : 0;
    if (stale && !r->quiet) printf("removed %d temporary files an interrupted run left\n", stale);
    char *metrics_path = path_join(r->out_dir, "metrics.jsonl");
    metrics_free(&r->metrics);
    metrics_open(&r->metrics, metrics_path);
    free(metrics_path);
    run_env(r);
    if (check_checkpoints(r)) return -1;
    dist_barrier(); /* checkpoints dropped with --restart are gone for every process */
    for (int32_t i = 0; i < r->n_stages; i++) {
        struct stage *s = &r->stages[i];
        int rc = run_stage(r, s);
        if (rc < 0) { /* keep what the stage logged until it failed (a divergence's curve) */
            char *line = xstrdup(err_msg());
            int status = err_status();
            metrics_flush(&r->metrics);
            err_set_status(status, "%s", line);
            free(line);
            return -1;
        }
        if (rc > 0) {
            if (!r->quiet) printf("[%s] stopped after %lld steps; continue with --resume\n", s->name,
                                  (long long)r->stop_after);
            return metrics_flush(&r->metrics);
        }
        print_stage_table(r, s);
    }
    return writer() ? write_summary(r) : 0;
}

int run_execute(struct run *r) {
    /* One process at a time in a run folder, for as long as the chain runs; what an
     * interrupted one left half-written goes. Under mpirun process 0 holds the lock and
     * writes; the others read what it wrote (a reused stage, a checkpoint) from the same
     * folder, which must be shared. */
    int lock = -1;
    if (writer() && (mkdir_p(r->out_dir) || (lock = dir_lock(r->out_dir)) < 0)) return -1;
    if (dist_size() > 1 && folder_shared(r)) {
        if (lock >= 0) close(lock);
        return -1;
    }
    int rc = run_chain(r);
    if (lock >= 0) close(lock);
    return rc;
}
