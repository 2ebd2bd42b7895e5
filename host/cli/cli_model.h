/*
 * cli_model.h: what `peft generate` and `peft eval` read: a model folder (or a stage's merged
 * model/), its tokenizer, and optionally an unmerged adapter on it (a stage folder, an
 * adapter file or an HF PEFT folder) routed to one task.
 *
 * A stage folder without model/ is read as its adapter on the folder the run's model came
 * from (the adapter's peft.base_model, recorded when the stage starts from the run's model).
 */
#ifndef PEFT_CLI_MODEL_H
#define PEFT_CLI_MODEL_H

#include "methods/methods.h"
#include "model/model.h"
#include "stage/stage.h"
#include "tokenizer/tokenizer.h"

struct cli_model {
    char *dir;                  /* the model folder read */
    struct model m;
    struct tokenizer *tok;      /* NULL: the byte tokenizer */
    const struct tokenizer *t;  /* tok or the byte tokenizer */
    struct plugin_registry reg;
    struct task_table tasks;    /* the adapter's task names */
    struct method_run *mr;      /* the adapter, or NULL */
    int32_t task;               /* the task every row is routed to, or -1 */
    int task_given;             /* by --task */
    struct decoder *dec;        /* decodes with the adapter (its run_pass context) */
    char *adapter;              /* the adapter as named, or NULL */
};

struct cli_model_options {
    const char *path;        /* MODEL_DIR or STAGE_DIR */
    const char *adapter;     /* --adapter, or NULL */
    const char *task;        /* --task NAME or id, or NULL */
    const char *plugin_path; /* --plugin-path, or NULL */
    const char *what;        /* "generate", "eval": starts error lines */
    int any_task;            /* the caller routes rows by task itself: --task is optional for
                                an adapter of several tasks */
    const char *precision;   /* --precision (auto, fp32, bf16), or NULL: PEFT_PRECISION */
};

/* Open everything; -1 with one line (the model, tokenizer or adapter file named). */
int cli_model_open(struct cli_model *cm, const struct cli_model_options *o);
void cli_model_close(struct cli_model *cm);
/* " with adapter PATH (method M[, task T])" for summary lines, or "". Static buffer. */
const char *cli_model_adapter_text(const struct cli_model *cm);

#endif
