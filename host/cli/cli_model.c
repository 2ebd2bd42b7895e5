/* cli_model.c: a model folder, its tokenizer and an optional unmerged adapter, as generate and
 * eval read them (see cli_model.h). */
#include "cli_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

/* A stage folder with an adapter but no merged model: the adapter on its run's model folder.
 * 1 with *base set, 0 when stage_dir holds no adapter file, -1 with one line. */
static int stage_base(const char *stage_dir, char **base) {
    int hf;
    char *file = adapter_file_of(stage_dir, &hf);
    int rc = !hf && file && file_exists(file);
    struct st_file f;
    if (rc && st_open(&f, file) == 0) {
        const char *b = st_meta(&f, "peft.base_model");
        if (b) *base = xstrdup(b);
        else
            rc = err_set("%s: no merged model (%s/model) and no peft.base_model in its metadata "
                         "(the stage does not start from a model folder): give the model folder "
                         "it starts from and --adapter %s", file, stage_dir, stage_dir);
        st_close(&f);
    } else if (rc) {
        rc = -1;
    }
    free(file);
    return rc;
}

static int route_task(struct cli_model *cm, const char *task, int any_task) {
    if (!task && !plugin_has_feature(method_run_plugin(cm->mr), PEFT_FEATURE_TASK_ROUTED))
        return 0; /* rows need no task */
    if (!task) {
        if (cm->tasks.n > 1 && !any_task)
            return err_set("%s: the adapter was trained on %d tasks (%s, ...): give --task NAME",
                           cm->adapter, (int)cm->tasks.n, cm->tasks.names[0]);
        cm->task = cm->tasks.n == 1 ? 0 : -1;
        return 0;
    }
    int32_t id = task_table_find(&cm->tasks, task);
    int64_t n;
    if (id < 0 && cm->tasks.n == 0 && parse_i64(task, &n) == 0 && n >= 0 && n < 1 << 20)
        id = (int32_t)n; /* an adapter without task names: a task id */
    if (id < 0) {
        char *names = xstrdup("");
        for (int32_t i = 0; i < cm->tasks.n; i++) {
            char *more = xasprintf("%s%s%s", names, i ? ", " : "", cm->tasks.names[i]);
            free(names);
            names = more;
        }
        err_set("--task: '%s' is not a task of %s (its tasks: %s)", task, cm->adapter,
                cm->tasks.n ? names : "none recorded; give a task id");
        free(names);
        return -1;
    }
    cm->task = id;
    cm->task_given = 1;
    return 0;
}

int cli_model_open(struct cli_model *cm, const struct cli_model_options *o) {
    memset(cm, 0, sizeof *cm);
    cm->task = -1;
    registry_init(&cm->reg, o->plugin_path);
    const char *adapter = o->adapter;
    char *base = NULL;
    if (!o->adapter && dir_exists(o->path)) {
        char *cfg = path_join(o->path, "config.json"), *inner = path_join(o->path, "model/config.json");
        int plain = !file_exists(cfg) && !file_exists(inner);
        free(cfg), free(inner);
        int stage = plain ? stage_base(o->path, &base) : 0;
        if (stage < 0) return -1;
        if (stage) adapter = o->path;
    }
    cm->dir = hf_model_dir_of(base ? base : o->path);
    free(base);
    if (!cm->dir) return -1;
    int32_t precision;
    if (model_precision_choose(o->precision, "--precision", &precision)) return -1;
    if (hf_model_load(cm->dir, &cm->m)) return -1;
    if (precision == MODEL_BF16) model_set_bf16(&cm->m);
    int found = tokenizer_load_dir(cm->dir, &cm->tok);
    if (found < 0) return -1;
    cm->t = cm->tok ? cm->tok : tokenizer_bytes();
    if (tokenizer_vocab_size(cm->t) > cm->m.cfg.vocab)
        return err_set("%s: the tokenizer has %d ids, more than the model's vocab_size %d", cm->dir,
                       tokenizer_vocab_size(cm->t), cm->m.cfg.vocab);
    cm->dec = decoder_new(&cm->m, cm->m.cfg.max_seq);
    if (!adapter) {
        if (o->task) return err_set("%s: --task routes an adapter's rows: give --adapter", o->what);
        return 0;
    }
    cm->adapter = xstrdup(adapter);
    struct method_env env = {.seed = 1, .stage = o->what, .where = adapter, .run_ctx = cm->dec,
                             .run_pass = decoder_run_pass};
    if (adapter_open(&cm->reg, &cm->m, adapter, &env, &cm->tasks, &cm->mr)) return -1;
    if (route_task(cm, o->task, o->any_task)) return -1;
    decoder_use(cm->dec, cm->mr, cm->task);
    return 0;
}

void cli_model_close(struct cli_model *cm) {
    decoder_free(cm->dec);
    if (cm->mr) method_run_free(cm->mr);
    task_table_free(&cm->tasks);
    tokenizer_free(cm->tok);
    model_free(&cm->m);
    registry_free(&cm->reg);
    free(cm->dir);
    free(cm->adapter);
    memset(cm, 0, sizeof *cm);
}

const char *cli_model_adapter_text(const struct cli_model *cm) {
    static char buf[512];
    if (!cm->mr) return "";
    if (cm->task >= 0 && cm->task < cm->tasks.n)
        snprintf(buf, sizeof buf, " with adapter %s (%s, task %s)", cm->adapter,
                 method_run_plugin(cm->mr)->desc->id, cm->tasks.names[cm->task]);
    else
        snprintf(buf, sizeof buf, " with adapter %s (%s)", cm->adapter, method_run_plugin(cm->mr)->desc->id);
    return buf;
}
