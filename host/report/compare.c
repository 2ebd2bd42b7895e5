/* compare.c: run the arms of a comparison as child processes and gather their results. */
#include "compare.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "report.h"
#include "svg.h"
#include "core/core.h"
#include "io/io.h"
#include "run/run.h"

/* Stage keys an arm may not override: they define the data, its order and the budget. */
static const char *const fixed_stage_keys[] = {"steps", "batch_size", "tasks", "eval_tasks",
                                               "n_train", "seed", "from", "eval_labels", NULL};

struct arm {
    char *name;
    char *label;                /* for messages: NAME, or "NAME (seed S)" */
    int64_t seed;               /* the run's [run] seed when the comparison has seeds, else 0 */
    int64_t run_seed;           /* the seed the run has (the base file's without seeds) */
    int32_t line;
    char *dir, *ini;            /* OUT/arms/NAME, OUT/arms/NAME/run.ini */
    struct cfg cfg;             /* the arm's complete run configuration */
    char *overrides;
    /* From checking the arm's run: its stages and what they train and evaluate. */
    int32_t n_stages;
    char **stage_names, **stage_methods;
    uint64_t *stage_hash;
    int64_t *stage_steps;
    struct words *stage_trained, *stage_evaluated;
    uint64_t model_params;
    /* execution */
    pid_t pid;
    double t0, wall;
    int32_t exit_status;
    int64_t rss_kb;
    int32_t ran;
};

static void arm_free(struct arm *a) {
    free(a->name);
    free(a->label);
    free(a->dir);
    free(a->ini);
    free(a->overrides);
    cfg_free(&a->cfg);
    for (int32_t s = 0; s < a->n_stages; s++) {
        free(a->stage_names[s]);
        free(a->stage_methods[s]);
        words_free(&a->stage_trained[s]);
        words_free(&a->stage_evaluated[s]);
    }
    free(a->stage_names);
    free(a->stage_methods);
    free(a->stage_hash);
    free(a->stage_steps);
    free(a->stage_trained);
    free(a->stage_evaluated);
}

/* ---- reading and checking the compare file ------------------------------------------ */

static int is_arm_section(const char *s) { return strncmp(s, "arm.", 4) == 0; }

static char *default_out(const char *file) {
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    const char *dot = strrchr(base, '.');
    return xasprintf("runs/%.*s", (int)(dot ? dot - base : (long)strlen(base)), base);
}

/* Build arm `a`'s configuration: the base sections, then its overrides (keeping their lines
 * in the compare file so errors point there), with [run] out moved into the arm's folder. */
static int arm_build_cfg(const struct cfg *c, struct arm *a, const char *arm_section) {
    struct cfg *ac = &a->cfg;
    memset(ac, 0, sizeof *ac);
    ac->path = xstrdup(c->path);
    char where[512];
    for (int32_t i = 0; i < c->n_sections; i++) {
        const char *sec = c->sections[i].name;
        if (strcmp(sec, "compare") == 0 || is_arm_section(sec)) continue;
        ac->sections = xrealloc(ac->sections, sizeof *ac->sections * (size_t)(ac->n_sections + 1));
        ac->sections[ac->n_sections].name = xstrdup(sec);
        ac->sections[ac->n_sections].line = c->sections[i].line;
        ac->n_sections++;
    }
    for (int32_t i = 0; i < c->n; i++) {
        const struct cfg_entry *e = &c->e[i];
        if (strcmp(e->section, "compare") == 0 || is_arm_section(e->section)) continue;
        if (strcmp(e->section, "run") == 0 && strcmp(e->key, "out") == 0) continue;
        ac->e = xrealloc(ac->e, sizeof *ac->e * (size_t)(ac->n + 1));
        ac->e[ac->n++] = (struct cfg_entry){xstrdup(e->section), xstrdup(e->key), xstrdup(e->value), e->line, 0, NULL};
    }
    struct strbuf ov = {0};
    sb_printf(&ov, "%s", "");
    for (int32_t i = 0; i < c->n; i++) {
        const struct cfg_entry *e = &c->e[i];
        if (strcmp(e->section, arm_section) != 0) continue;
        cfg_where(c, e, where, sizeof where);
        const char *dot = strrchr(e->key, '.');
        if (!dot || dot == e->key || !dot[1]) {
            sb_free(&ov);
            return err_set("%s: [%s] %s: expected stage.NAME.key = value", where, arm_section, e->key);
        }
        char *section = xstrndup(e->key, (size_t)(dot - e->key));
        const char *key = dot + 1;
        int rc = 0;
        if (strncmp(section, "stage.", 6) != 0) {
            rc = err_set("%s: [%s] %s: arms share the model, data and seed; only stage keys "
                         "(stage.NAME.key) may differ", where, arm_section, e->key);
        } else if (!cfg_has_section(ac, section)) {
            rc = err_set("%s: [%s] %s: no [%s] in the base run", where, arm_section, e->key, section);
        } else {
            for (int32_t k = 0; fixed_stage_keys[k]; k++)
                if (strcmp(key, fixed_stage_keys[k]) == 0)
                    rc = err_set("%s: [%s] %s: every arm has the same data, order and step "
                                 "budget, so '%s' may not differ", where, arm_section, e->key, key);
        }
        if (rc == 0 && strcmp(e->value, "!unset") == 0) { /* back to the default */
            struct cfg_entry *old = cfg_find(ac, section, key);
            if (old) {
                int32_t at = (int32_t)(old - ac->e);
                free(old->section), free(old->key), free(old->value), free(old->origin);
                memmove(&ac->e[at], &ac->e[at + 1], sizeof *ac->e * (size_t)(ac->n - at - 1));
                ac->n--;
            }
            sb_printf(&ov, "%s%s unset", ov.len ? ", " : "", e->key);
        } else if (rc == 0) {
            struct cfg_entry *old = cfg_find(ac, section, key);
            if (old) {
                free(old->value);
                old->value = xstrdup(e->value);
                old->line = e->line;
            } else {
                ac->e = xrealloc(ac->e, sizeof *ac->e * (size_t)(ac->n + 1));
                ac->e[ac->n++] = (struct cfg_entry){xstrdup(section), xstrdup(key), xstrdup(e->value), e->line, 0, NULL};
            }
            sb_printf(&ov, "%s%s=%s", ov.len ? ", " : "", e->key, e->value);
        }
        free(section);
        if (rc) {
            sb_free(&ov);
            return -1;
        }
    }
    a->overrides = ov.s;
    ac->e = xrealloc(ac->e, sizeof *ac->e * (size_t)(ac->n + 1));
    ac->e[ac->n++] = (struct cfg_entry){xstrdup("run"), xstrdup("out"), xstrdup(a->dir), 0, 0, NULL};
    if (a->seed > 0) { /* one of [compare] seeds: the run's seed, for every arm alike */
        char text[32];
        snprintf(text, sizeof text, "%lld", (long long)a->seed);
        struct cfg_entry *old = cfg_find(ac, "run", "seed");
        if (old) {
            free(old->value);
            old->value = xstrdup(text);
        } else {
            ac->e = xrealloc(ac->e, sizeof *ac->e * (size_t)(ac->n + 1));
            ac->e[ac->n++] = (struct cfg_entry){xstrdup("run"), xstrdup("seed"), xstrdup(text), 0, 0, NULL};
        }
    }
    if (!cfg_has_section(ac, "run")) {
        ac->sections = xrealloc(ac->sections, sizeof *ac->sections * (size_t)(ac->n_sections + 1));
        ac->sections[ac->n_sections++] = (struct cfg_section){xstrdup("run"), 0};
    }
    return 0;
}

/* Load the arm's run completely (every check a run makes) and keep what the report needs. */
static int arm_check(struct arm *a, const char *plugin_path) {
    struct cfg copy;
    cfg_copy(&copy, &a->cfg); /* the run takes over its configuration; the arm keeps its own */
    struct run r;
    if (run_load_cfg(&r, &copy, plugin_path)) {
        cfg_free(&copy);
        run_free(&r);
        return err_prefix("arm '%s'", a->label);
    }
    a->n_stages = r.n_stages;
    a->stage_names = xcalloc((size_t)r.n_stages, sizeof *a->stage_names);
    a->stage_methods = xcalloc((size_t)r.n_stages, sizeof *a->stage_methods);
    a->stage_hash = xcalloc((size_t)r.n_stages, sizeof *a->stage_hash);
    a->stage_steps = xcalloc((size_t)r.n_stages, sizeof *a->stage_steps);
    a->stage_trained = xcalloc((size_t)r.n_stages, sizeof *a->stage_trained);
    a->stage_evaluated = xcalloc((size_t)r.n_stages, sizeof *a->stage_evaluated);
    for (int32_t s = 0; s < r.n_stages; s++) {
        const struct stage *st = &r.stages[s];
        a->stage_names[s] = xstrdup(st->name);
        a->stage_methods[s] = xstrdup(st->pm->desc->id);
        a->stage_hash[s] = st->hash;
        a->stage_steps[s] = st->steps;
        struct strbuf t = {0};
        for (int32_t k = 0; k < st->n_train_tasks; k++) sb_printf(&t, "%s ", r.tasks.names[st->train_tasks[k]]);
        words_split(&a->stage_trained[s], t.s);
        sb_free(&t);
        for (int32_t k = 0; k < st->n_eval_tasks; k++) sb_printf(&t, "%s ", r.tasks.names[st->eval_tasks[k]]);
        words_split(&a->stage_evaluated[s], t.s);
        sb_free(&t);
    }
    a->model_params = r.model.n_params;
    a->run_seed = (int64_t)r.seed;
    run_free(&r);
    return 0;
}

/* ---- files ---------------------------------------------------------------------------- */

static int write_arm_ini(const struct arm *a) {
    struct strbuf b = {0};
    sb_printf(&b, "; Arm '%s' of the comparison %s (written by peft compare).\n"
                  "; Run it alone with: peft run %s\n; Overrides:%s\n",
              a->name, a->cfg.path, a->ini, a->overrides[0] ? "" : " none");
    /* One override a line: the INI reader takes lines of up to 199 characters. */
    for (const char *p = a->overrides; *p;) {
        const char *end = strstr(p, ", ");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        sb_printf(&b, ";   %.*s\n", (int)n, p);
        p += n + (end ? 2 : 0);
    }
    for (int32_t i = 0; i < a->cfg.n_sections; i++) {
        const char *sec = a->cfg.sections[i].name;
        sb_printf(&b, "\n[%s]\n", sec);
        for (int32_t k = 0; k < a->cfg.n; k++)
            if (strcmp(a->cfg.e[k].section, sec) == 0)
                sb_printf(&b, "%s = %s\n", a->cfg.e[k].key, a->cfg.e[k].value);
    }
    int rc = mkdir_p(a->dir) || file_write_atomic(a->ini, b.s, b.len);
    sb_free(&b);
    return rc ? -1 : 0;
}

static int copy_file(const char *from, const char *to) {
    char *data;
    size_t len;
    if (file_read_all(from, &data, &len)) return -1;
    int rc = file_write_atomic(to, data, len);
    free(data);
    return rc;
}

/* stage.json of an arm's stage if complete with the expected hash, else NULL. */
static cJSON *stage_info(const struct arm *a, int32_t s) {
    char *path = xasprintf("%s/%s/stage.json", a->dir, a->stage_names[s]), *text;
    size_t len;
    cJSON *j = NULL;
    if (file_read_all(path, &text, &len) == 0) {
        j = cJSON_Parse(text);
        free(text);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "hash");
        char want[32];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)a->stage_hash[s]);
        if (!cJSON_IsString(h) || strcmp(h->valuestring, want) != 0) {
            cJSON_Delete(j);
            j = NULL;
        }
    }
    err_clear();
    free(path);
    return j;
}

static int arm_complete(const struct arm *a) {
    for (int32_t s = 0; s < a->n_stages; s++) {
        cJSON *j = stage_info(a, s);
        if (!j) return 0;
        cJSON_Delete(j);
    }
    return 1;
}

/* Stages identical to the first arm's (same hash) are copied from it, with their metrics. */
static int seed_shared_stages(const struct arm *first, const struct arm *a) {
    struct strbuf metrics = {0};
    int rc = 0;
    for (int32_t s = 0; s < a->n_stages && rc == 0; s++) {
        if (s >= first->n_stages || first->stage_hash[s] != a->stage_hash[s] ||
            strcmp(first->stage_names[s], a->stage_names[s]) != 0)
            break; /* a stage that differs, and every one after it, is trained by the arm */
        cJSON *mine = stage_info(a, s), *theirs = stage_info(first, s);
        if (!mine && theirs) {
            const char *files[] = {"adapter.safetensors", "model/config.json", "model/model.safetensors", "stage.json"};
            for (int k = 0; k < 4 && rc == 0; k++) {
                char *from = xasprintf("%s/%s/%s", first->dir, first->stage_names[s], files[k]);
                char *to = xasprintf("%s/%s/%s", a->dir, a->stage_names[s], files[k]);
                char *to_dir = path_dirname(to);
                if (file_exists(from)) rc = mkdir_p(to_dir) || copy_file(from, to);
                free(from);
                free(to);
                free(to_dir);
            }
            /* Its predictions files, so the arm's report links them. */
            for (int k = 0; k < a->stage_evaluated[s].n && rc == 0; k++) {
                char *from = xasprintf("%s/%s/predictions-%s.jsonl", first->dir, first->stage_names[s],
                                       a->stage_evaluated[s].v[k]);
                char *to = xasprintf("%s/%s/predictions-%s.jsonl", a->dir, a->stage_names[s],
                                     a->stage_evaluated[s].v[k]);
                if (file_exists(from)) rc = copy_file(from, to);
                free(from);
                free(to);
            }
            /* Their metrics lines, so the arm's loss curve is whole. */
            char *mpath = path_join(first->dir, "metrics.jsonl"), *text;
            size_t len;
            char needle[256];
            snprintf(needle, sizeof needle, "\"stage\":\"%s\"", a->stage_names[s]);
            if (file_read_all(mpath, &text, &len) == 0) {
                for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
                    if (strstr(line, needle)) sb_printf(&metrics, "%s\n", line);
                free(text);
            }
            err_clear();
            free(mpath);
        }
        cJSON_Delete(mine);
        cJSON_Delete(theirs);
    }
    if (rc == 0 && metrics.len) {
        char *mpath = path_join(a->dir, "metrics.jsonl");
        if (!file_exists(mpath)) rc = file_write_atomic(mpath, metrics.s, metrics.len);
        free(mpath);
    }
    sb_free(&metrics);
    return rc;
}

/* ---- processes ----------------------------------------------------------------------- */

static int arm_start(struct arm *a, int32_t resume, int32_t jobs, const char *plugin_path) {
    char *log = path_join(a->dir, "log.txt");
    fflush(NULL);
    a->t0 = now_seconds();
    pid_t pid = fork();
    if (pid < 0) {
        free(log);
        return err_set("cannot start arm '%s': %s", a->label, strerror(errno));
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        /* Parallel arms share the cores: one BLAS thread each unless the user said otherwise. */
        if (jobs > 1) setenv("OPENBLAS_NUM_THREADS", "1", 0);
        const char *argv[8];
        int n = 0;
        argv[n++] = "peft";
        argv[n++] = "run";
        argv[n++] = a->ini;
        if (resume) argv[n++] = "--resume";
        if (plugin_path) {
            argv[n++] = "--plugin-path";
            argv[n++] = plugin_path;
        }
        argv[n] = NULL;
        execv("/proc/self/exe", (char *const *)argv);
        fprintf(stderr, "peft: cannot run the arm: %s\n", strerror(errno));
        _exit(127);
    }
    free(log);
    a->pid = pid;
    a->ran = 1;
    printf("[compare] arm %s: started (log: %s/log.txt)\n", a->label, a->dir);
    return 0;
}

/* Wait for one running arm; returns its index. */
static int32_t arm_wait(struct arm *arms, int32_t n) {
    int status;
    struct rusage ru;
    pid_t pid = wait4(-1, &status, 0, &ru);
    for (int32_t i = 0; i < n; i++) {
        if (arms[i].pid != pid || pid <= 0) continue;
        struct arm *a = &arms[i];
        a->pid = 0;
        a->wall = now_seconds() - a->t0;
        a->rss_kb = ru.ru_maxrss;
        a->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        printf("[compare] arm %s: %s in %.1f s\n", a->label, a->exit_status == 0 ? "done" : "FAILED",
               a->wall);
        return i;
    }
    return -1;
}

/* ---- results -------------------------------------------------------------------------- */

static int32_t task_find(const struct compare_result *cr, const char *name) {
    for (int32_t t = 0; t < cr->n_tasks; t++)
        if (strcmp(cr->tasks[t], name) == 0) return t;
    return -1;
}

static int32_t task_index(struct compare_result *cr, const char *name) {
    int32_t t = task_find(cr, name);
    if (t >= 0) return t;
    cr->tasks = xrealloc(cr->tasks, sizeof *cr->tasks * (size_t)(cr->n_tasks + 1));
    cr->tasks[cr->n_tasks] = xstrdup(name);
    return cr->n_tasks++;
}

/* Every task any arm trains or evaluates, in order of first appearance. */
static void collect_tasks(struct compare_result *cr, const struct arm *arms, int32_t n_arms) {
    for (int32_t i = 0; i < n_arms; i++)
        for (int32_t s = 0; s < arms[i].n_stages; s++) {
            for (int k = 0; k < arms[i].stage_trained[s].n; k++) task_index(cr, arms[i].stage_trained[s].v[k]);
            for (int k = 0; k < arms[i].stage_evaluated[s].n; k++) task_index(cr, arms[i].stage_evaluated[s].v[k]);
        }
}

static double json_number(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static char *last_log_line(const struct arm *a) {
    char *path = path_join(a->dir, "log.txt"), *text, *out = NULL;
    size_t len;
    if (file_read_all(path, &text, &len) == 0) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
            if (strncmp(line, "peft: ", 6) == 0) {
                free(out);
                out = xstrdup(line + 6);
            }
        free(text);
    }
    err_clear();
    free(path);
    return out ? out : xasprintf("exit status %d (see %s/log.txt)", a->exit_status, a->dir);
}

static void collect_curve(struct arm_result *res, const struct arm *a) {
    char *path = path_join(a->dir, "metrics.jsonl"), *text;
    size_t len;
    if (file_read_all(path, &text, &len) == 0) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            cJSON *j = cJSON_Parse(line);
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
            const cJSON *stage = cJSON_GetObjectItemCaseSensitive(j, "stage");
            if (cJSON_IsString(type) && strcmp(type->valuestring, "train") == 0 && cJSON_IsString(stage)) {
                int64_t offset = 0;
                int32_t found = 0;
                for (int32_t s = 0; s < a->n_stages && !found; s++) {
                    if (strcmp(a->stage_names[s], stage->valuestring) == 0)
                        found = 1;
                    else
                        offset += a->stage_steps[s];
                }
                if (found) {
                    res->curve_step = xrealloc(res->curve_step, sizeof(int64_t) * (size_t)(res->n_curve + 1));
                    res->curve_loss = xrealloc(res->curve_loss, sizeof(double) * (size_t)(res->n_curve + 1));
                    res->curve_step[res->n_curve] = offset + (int64_t)json_number(j, "step");
                    res->curve_loss[res->n_curve] = json_number(j, "loss");
                    res->n_curve++;
                }
            }
            cJSON_Delete(j);
        }
        free(text);
    }
    err_clear();
    free(path);
}

static void collect_arm(struct compare_result *cr, struct arm_result *res, const struct arm *a,
                        const char *out) {
    res->name = xstrdup(a->name);
    res->seed = a->run_seed;
    res->overrides = xstrdup(a->overrides);
    res->wall_seconds = a->wall;
    res->peak_rss_kb = a->rss_kb;
    res->n_stages = a->n_stages;
    res->stages = xcalloc((size_t)a->n_stages, sizeof *res->stages);
    res->ok = a->exit_status == 0;
    for (int32_t s = 0; s < a->n_stages; s++) {
        struct arm_stage *st = &res->stages[s];
        st->name = xstrdup(a->stage_names[s]);
        st->method = xstrdup(a->stage_methods[s]);
        /* relative to the comparison's folder: the arm's folder without OUT/ */
        st->dir = xasprintf("%s/%s", a->dir + strlen(out) + 1, a->stage_names[s]);
        st->steps = a->stage_steps[s];
        st->trained = xcalloc((size_t)a->stage_trained[s].n + 1, sizeof *st->trained);
        for (int k = 0; k < a->stage_trained[s].n; k++)
            st->trained[st->n_trained++] = task_find(cr, a->stage_trained[s].v[k]);
    }
    for (int32_t s = 0; s < a->n_stages; s++) {
        struct arm_stage *st = &res->stages[s];
        cJSON *j = stage_info(a, s);
        st->complete = j != NULL;
        res->ok &= st->complete;
        st->acc = xcalloc((size_t)cr->n_tasks + 1, sizeof *st->acc);
        st->loss = xcalloc((size_t)cr->n_tasks + 1, sizeof *st->loss);
        for (int32_t t = 0; t < cr->n_tasks; t++) st->acc[t] = st->loss[t] = NAN;
        if (!j) continue;
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "after")) {
            const cJSON *task = cJSON_GetObjectItemCaseSensitive(it, "task");
            int32_t t = cJSON_IsString(task) ? task_find(cr, task->valuestring) : -1;
            if (t < 0) continue;
            st->acc[t] = json_number(it, "accuracy");
            st->loss[t] = json_number(it, "loss");
        }
        st->n_trainable = (uint64_t)json_number(j, "trainable_parameters");
        st->train_seconds = json_number(j, "train_seconds");
        st->tokens_per_second = json_number(j, "tokens_per_second");
        st->eval_seconds = json_number(j, "eval_seconds");
        double rss = json_number(j, "peak_rss_kb");
        if (!a->ran && !isnan(rss) && rss > (double)res->peak_rss_kb) res->peak_rss_kb = (int64_t)rss;
        char *adapter = xasprintf("%s/%s/adapter.safetensors", a->dir, a->stage_names[s]);
        struct stat sb;
        st->adapter_bytes = stat(adapter, &sb) == 0 ? (int64_t)sb.st_size : 0;
        free(adapter);
        cJSON_Delete(j);
    }
    if (!res->ok) res->error = a->exit_status ? last_log_line(a) : xstrdup("a stage did not complete");
    /* A run that diverged exits 1 with "diverged at step N" (stage/train.c). */
    res->diverged = !res->ok && a->exit_status == 1 && res->error && strstr(res->error, "diverged at step");
    collect_curve(res, a);
}

static int write_plots(const struct compare_result *cr, const char *out, char ***plots, int32_t *n) {
    *plots = xcalloc((size_t)cr->n_arms + 2, sizeof **plots);
    *n = 0;
    char *path = path_join(out, "loss.svg");
    int rc = svg_loss_curves(cr, path);
    free(path);
    (*plots)[(*n)++] = xstrdup("loss.svg");
    path = path_join(out, "accuracy-vs-params.svg");
    rc = rc || svg_accuracy_vs_params(cr, path);
    free(path);
    (*plots)[(*n)++] = xstrdup("accuracy-vs-params.svg");
    for (int32_t i = 0; i < cr->n_arms && rc == 0; i++) {
        char *name = xasprintf("accuracy-%s.svg", compare_run(cr, i, 0)->name);
        path = path_join(out, name);
        /* one stage: a bar per task; a chain: the heat map of R[stage][task] */
        rc = compare_run(cr, i, 0)->n_stages == 1 ? svg_accuracy_bars(cr, i, path)
                                                  : svg_accuracy_heatmap(cr, i, path);
        free(path);
        (*plots)[(*n)++] = name;
    }
    return rc ? -1 : 0;
}

/* ---- the command ---------------------------------------------------------------------- */

/* Parse [compare] seeds ("1 2 3": distinct positive integers) into *seeds. */
static int parse_seeds(struct cfg *c, int64_t **seeds, int32_t *n) {
    const char *text;
    *seeds = NULL;
    *n = 0;
    if (cfg_str(c, "compare", "seeds", NULL, &text)) return -1;
    if (!text) return 0;
    char where[512];
    cfg_where(c, cfg_find(c, "compare", "seeds"), where, sizeof where);
    struct words w;
    words_split(&w, text);
    int rc = 0;
    *seeds = xcalloc((size_t)w.n + 1, sizeof **seeds);
    for (int i = 0; i < w.n && rc == 0; i++) {
        int64_t v;
        if (parse_i64(w.v[i], &v) || v < 1)
            rc = err_set("%s: [compare] seeds: '%s' is not a positive integer", where, w.v[i]);
        for (int32_t k = 0; k < *n && rc == 0; k++)
            if ((*seeds)[k] == v) rc = err_set("%s: [compare] seeds: %lld is given twice", where, (long long)v);
        if (rc == 0) (*seeds)[(*n)++] = v;
    }
    if (rc == 0 && *n == 0) rc = err_set("%s: [compare] seeds: empty", where);
    if (rc == 0 && *n > COMPARE_MAX_SEEDS)
        rc = err_set("%s: [compare] seeds: %d seeds, at most %d", where, (int)*n, COMPARE_MAX_SEEDS);
    words_free(&w);
    return rc;
}

/* Start arm a unless it is complete; 1 when started. */
static int arm_launch(struct arm *a, int32_t resume, int32_t jobs, const char *plugin_path) {
    if (arm_complete(a)) {
        printf("[compare] arm %s: complete, not run again\n", a->label);
        return 0;
    }
    return arm_start(a, resume, jobs, plugin_path) ? -1 : 1;
}

/* Run arms[idx[0..n)]: the first alone (its shared stages seed the others), then the rest,
 * jobs at a time. Under mpirun the first runs on process 0 and the rest are dealt out over
 * the processes (position p on process (p - 1) mod size), each running jobs at a time. */
static int run_group(struct arm *arms, int32_t n_all, const int32_t *idx, int32_t n, int32_t resume,
                     int32_t jobs, const char *plugin_path) {
    int rank = dist_rank(), size = dist_size();
    struct arm *first = &arms[idx[0]];
    if (rank == 0) {
        int started = arm_launch(first, resume, jobs, plugin_path);
        if (started < 0) return -1;
        if (started) arm_wait(arms, n_all);
    }
    /* every process learns how the first arm ended */
    double first_status = rank == 0 ? first->exit_status : 0;
    dist_barrier();
    if (dist_sum_doubles(&first_status, 1)) return -1;
    first->exit_status = (int32_t)first_status;
    int32_t next = 1, running = 0;
    while (next < n || running > 0) {
        while (next < n && running < jobs) {
            int32_t p = next++;
            if ((p - 1) % size != rank) continue;
            struct arm *a = &arms[idx[p]];
            if (first->exit_status == 0 && seed_shared_stages(first, a)) return -1;
            int started = arm_launch(a, resume, jobs, plugin_path);
            if (started < 0) return -1;
            running += started;
        }
        if (running > 0 && arm_wait(arms, n_all) >= 0) running--;
    }
    dist_barrier();
    return 0;
}

/* Under mpirun each process ran some arms: every process gets every arm's outcome. */
static int gather_arms(struct arm *arms, int32_t n) {
    if (dist_size() <= 1) return 0;
    double *v = xcalloc((size_t)n * 4 + 1, sizeof *v);
    for (int32_t i = 0; i < n; i++) { /* each arm ran on one process at most; the others add 0 */
        v[4 * i] = arms[i].ran ? arms[i].exit_status : 0;
        v[4 * i + 1] = arms[i].ran ? arms[i].wall : 0;
        v[4 * i + 2] = arms[i].ran ? (double)arms[i].rss_kb : 0;
        v[4 * i + 3] = arms[i].ran;
    }
    int rc = dist_sum_doubles(v, (size_t)n * 4);
    for (int32_t i = 0; rc == 0 && i < n; i++) {
        arms[i].exit_status = (int32_t)v[4 * i];
        arms[i].wall = v[4 * i + 1];
        arms[i].rss_kb = (int64_t)v[4 * i + 2];
        arms[i].ran = v[4 * i + 3] > 0;
    }
    free(v);
    return rc;
}

int compare_main(const char *file, int32_t jobs, int32_t resume, const char *plugin_path) {
    struct cfg c;
    if (cfg_load(&c, file)) { /* every process reads the same file: process 0 says why */
        if (dist_rank() == 0) fprintf(stderr, "peft: %s\n", err_msg());
        return 2;
    }
    struct arm *arms = NULL;
    int32_t n_arms = 0, n_runs = 0, n_seeds = 0, baseline = 0, code = 2;
    int64_t *seeds = NULL;
    int lock_fd = -1, set_up = 0;
    const char *out_text, *baseline_name;
    int64_t jobs_file;
    double alpha;
    char *out = NULL;
    if (cfg_str(&c, "compare", "out", NULL, &out_text) ||
        cfg_int(&c, "compare", "jobs", 1, 1, 64, &jobs_file) ||
        cfg_str(&c, "compare", "baseline", NULL, &baseline_name) ||
        cfg_float(&c, "compare", "alpha", 0.05, 1e-6, 0.5, &alpha) ||
        parse_seeds(&c, &seeds, &n_seeds) ||
        cfg_check_unused(&c, "compare", "out, jobs, seeds, baseline, alpha"))
        goto done;
    out = out_text ? xstrdup(out_text) : default_out(file);
    if (jobs <= 0) jobs = (int32_t)jobs_file;
    int32_t per_arm = n_seeds > 0 ? n_seeds : 1;

    /* One run per arm and seed, arm-major (the report's layout). */
    for (int32_t i = 0; i < c.n_sections; i++) {
        if (!is_arm_section(c.sections[i].name)) continue;
        const char *name = c.sections[i].name + 4;
        if (!name[0] || strchr(name, '/')) {
            err_set("%s:%d: [%s]: an arm needs a name without '/'", c.path, c.sections[i].line,
                    c.sections[i].name);
            goto done;
        }
        n_arms++;
        for (int32_t k = 0; k < per_arm; k++) {
            arms = xrealloc(arms, sizeof *arms * (size_t)(n_runs + 1));
            struct arm *a = &arms[n_runs++];
            memset(a, 0, sizeof *a);
            a->name = xstrdup(name);
            a->line = c.sections[i].line;
            a->seed = n_seeds > 0 ? seeds[k] : 0;
            a->label = n_seeds > 0 ? xasprintf("%s (seed %lld)", name, (long long)a->seed) : xstrdup(name);
            a->dir = n_seeds > 0 ? xasprintf("%s/arms/%s/seed-%lld", out, name, (long long)a->seed)
                                 : xasprintf("%s/arms/%s", out, name);
            a->ini = path_join(a->dir, "run.ini");
            if (arm_build_cfg(&c, a, c.sections[i].name)) goto done;
        }
    }
    if (n_arms < 2) {
        if (n_arms == 0)
            err_set("%s: no [arm.NAME] section: a comparison needs at least two arms", c.path);
        else
            err_set("%s:%d: [arm.%s]: a comparison needs at least two arms (one given)", c.path,
                    arms[0].line, arms[0].name);
        goto done;
    }
    if (baseline_name) {
        baseline = -1;
        for (int32_t i = 0; i < n_arms; i++)
            if (strcmp(arms[i * per_arm].name, baseline_name) == 0) baseline = i;
        if (baseline < 0) {
            char where[512];
            err_set("%s: [compare] baseline: no arm '%s'",
                    cfg_where(&c, cfg_find(&c, "compare", "baseline"), where, sizeof where), baseline_name);
            goto done;
        }
    }
    /* Check every run completely before anything is written or run. */
    if (n_seeds > 0)
        printf("[compare] %s: %d arms x %d seeds, checking\n", file, n_arms, n_seeds);
    else
        printf("[compare] %s: %d arms, checking\n", file, n_arms);
    for (int32_t i = 0; i < n_runs; i++)
        if (arm_check(&arms[i], plugin_path)) goto done;
    /* One comparison at a time in its folder (each arm's run locks its own folder too); under
     * mpirun, process 0 holds the lock and writes the arms' files, the others wait for it. */
    int setup_rc = 0;
    if (dist_rank() == 0) {
        setup_rc = mkdir_p(out) || (lock_fd = dir_lock(out)) < 0;
        for (int32_t i = 0; i < n_runs && !setup_rc; i++) setup_rc = write_arm_ini(&arms[i]);
    }
    double setup_failed = setup_rc ? 1 : 0;
    set_up = 1; /* from here on a failure may be one process's own */
    dist_barrier();
    if (dist_sum_doubles(&setup_failed, 1) || setup_failed > 0) {
        if (dist_rank() != 0) err_set("%s: process 0 could not set the comparison up", out);
        goto done;
    }

    /* Seed by seed: the arms of one seed share their identical stages. */
    int32_t *idx = xcalloc((size_t)n_arms, sizeof *idx);
    for (int32_t k = 0; k < per_arm; k++) {
        for (int32_t i = 0; i < n_arms; i++) idx[i] = i * per_arm + k;
        if (run_group(arms, n_runs, idx, n_arms, resume, jobs, plugin_path)) {
            free(idx);
            goto done;
        }
    }
    free(idx);
    if (gather_arms(arms, n_runs)) goto done;
    if (dist_rank() != 0) { /* process 0 writes the report */
        code = 0;
        goto done;
    }

    struct compare_result cr = {0};
    cr.title = xstrdup(file);
    cr.model_params = arms[0].model_params;
    cr.n_arms = n_arms;
    cr.n_seeds = per_arm;
    cr.baseline = baseline;
    cr.alpha = alpha;
    cr.arms = xcalloc((size_t)n_runs, sizeof *cr.arms);
    collect_tasks(&cr, arms, n_runs);
    for (int32_t i = 0; i < n_runs; i++) collect_arm(&cr, &cr.arms[i], &arms[i], out);
    /* A stage with the same name and hash in every arm of its seed is shared (trained once). */
    for (int32_t i = 0; i < n_runs; i++)
        for (int32_t s = 0; s < arms[i].n_stages; s++) {
            int shared = 1;
            for (int32_t k = i % per_arm; k < n_runs && shared; k += per_arm)
                shared = s < arms[k].n_stages && arms[k].stage_hash[s] == arms[i].stage_hash[s] &&
                         strcmp(arms[k].stage_names[s], arms[i].stage_names[s]) == 0;
            cr.arms[i].stages[s].shared = shared;
        }
    char **plots = NULL;
    int32_t n_plots = 0;
    int failed_runs = 0;
    for (int32_t i = 0; i < n_runs; i++) failed_runs += !cr.arms[i].ok;
    if (write_plots(&cr, out, &plots, &n_plots) || report_write(&cr, out, (const char *const *)plots, n_plots)) {
        code = 2;
    } else {
        char *report = path_join(out, "report.md");
        printf("[compare] report: %s (results.csv and %d plots beside it)\n", report, n_plots);
        free(report);
        for (int32_t i = 0; i < n_runs; i++)
            if (!cr.arms[i].ok)
                fprintf(stderr, "peft: arm '%s' %s: %s\n", arms[i].label,
                        cr.arms[i].diverged ? "diverged" : "failed", cr.arms[i].error);
        code = failed_runs ? 1 : 0;
    }
    for (int32_t i = 0; i < n_plots; i++) free(plots[i]);
    free(plots);
    compare_result_free(&cr);
done:
    /* before the set-up every process checks the same file: process 0 says what is wrong */
    if (code == 2 && (set_up || dist_rank() == 0)) fprintf(stderr, "peft: %s\n", err_msg());
    if (code != 0 && set_up && dist_size() > 1) { /* the other processes wait on this one */
        fprintf(stderr, "peft: process %d of %d failed: ending the comparison\n", dist_rank(),
                dist_size());
        dist_abort(code);
    }
    for (int32_t i = 0; i < n_runs; i++) {
        if (arms[i].pid > 0) kill(arms[i].pid, SIGTERM);
        arm_free(&arms[i]);
    }
    free(arms);
    free(seeds);
    free(out);
    if (lock_fd >= 0) close(lock_fd);
    cfg_free(&c);
    return code;
}
