/*
 * run.h: a run is one INI file: a model, data, and a chain of stages, each training one
 * method (a plugin) and writing its adapter, metrics and checkpoints into the run folder.
 *
 * Run folder layout:
 *   OUT/metrics.jsonl              one JSON object per line (train points and eval points)
 *   OUT/summary.md                 accuracy of every task after every stage
 *   OUT/STAGE/adapter.safetensors  the method's tensors; method, version, ABI, config in metadata
 *   OUT/STAGE/stage.json           written last: the stage is complete (with its config hash)
 *   OUT/STAGE/model/               config.json + model.safetensors when save_model is on
 *   OUT/STAGE/checkpoint*.safetensors  while a stage is in progress (removed when it completes)
 * A completed stage whose hash (its config, the configs it depends on, model, data, seed and
 * plugin version) is unchanged is not trained again: its outputs are loaded.
 */
#ifndef PEFT_RUN_H
#define PEFT_RUN_H

#include <stdint.h>

#include "config.h"
#include "data.h"
#include "method.h"
#include "model.h"
#include "optim.h"
#include "plugin_loader.h"
#include "util.h"

struct eval_result {
    int32_t task;
    int32_t n;          /* examples */
    double loss;        /* mean completion-token loss */
    double accuracy;    /* exact match by greedy decoding */
};

struct stage {
    char *name;
    char *section;              /* "stage.NAME" */
    const struct plugin_method *pm;
    int32_t from;               /* index of the stage it starts from, -1 = the base model */
    int32_t *train_tasks, n_train_tasks;
    int32_t *eval_tasks, n_eval_tasks;
    /* Tasks the stage's result has seen: its start's, its own training tasks, and for a merge
     * stage its inputs' (the default eval_tasks). */
    int32_t *known_tasks, n_known_tasks;
    struct merge_spec *merge;   /* a merge stage (merge.h): trains nothing; else NULL */
    int64_t steps, batch_size, eval_batch_size, eval_every, save_every, log_every;
    int64_t n_train;            /* examples per task this stage trains on (0 = all) */
    /* The continual-learning sampler (train.c, replay.h): a share of every batch comes from
     * the earlier tasks replay_tasks, each example drawn by picking one of them uniformly,
     * then an example of its memory (memory_per_label examples per label, 0 = all). */
    int32_t *replay_tasks, n_replay_tasks;
    double replay;              /* share of each batch from replay_tasks, in [0, 1) */
    int32_t replay_joint;       /* instead: every task of tasks + replay_tasks an equal share */
    int64_t memory_per_label;
    /* eval.c: accuracy = the label scored best among every label of the eval tasks (the
     * class-incremental evaluation) instead of greedy exact match. */
    int32_t eval_labels;
    struct optim_params opt;
    uint64_t seed;
    int32_t save_model;
    peft_kv *kv;                /* method keys, every schema key (defaults filled) + "stage" */
    uint32_t n_kv;
    char *config_json;          /* the stage's keys as JSON, for metadata */
    uint64_t hash;
    char *dir;                  /* OUT/NAME */
    /* results */
    float *result_params;       /* model parameters after the stage (adapter merged) */
    struct eval_result *before, *after; /* n_eval_tasks each */
    int32_t reused;             /* loaded from a completed earlier run */
    int32_t unmerged;           /* its adapter could not be folded into the weights */
    uint64_t n_trainable;       /* trainable entries of the method */
    double train_seconds, tokens_per_second;
    double eval_seconds;        /* time spent evaluating in this stage */
    int64_t peak_rss_kb;        /* the process's peak resident size when the stage ended */
};

struct run {
    struct cfg cfg;
    char *out_dir;
    uint64_t seed;
    int32_t threads;
    struct plugin_registry reg;
    /* model */
    struct model model;
    float *base_params;         /* the model before any stage */
    /* data */
    struct task_table tasks;
    struct dataset train, eval;
    /* chain */
    struct stage *stages;
    int32_t n_stages;
    /* metrics lines (rewritten atomically to OUT/metrics.jsonl) */
    char **metrics;
    int32_t n_metrics;
    /* the batch being processed, for auxiliary passes a plugin asks for (run_pass) */
    struct method_run *cur_mr;
    const struct batch *cur_batch;
    int32_t cur_training;
    struct model_acts *aux_acts;
    /* options */
    int32_t resume;
    int64_t stop_after;         /* testing aid: stop a stage after this many steps (0 = off) */
    int32_t progress;           /* progress line on stderr (a terminal) */
    int32_t quiet;
};

/* Read and check the whole run file before anything is written: sections, keys, types,
 * model, data, methods, task names, stage references. -1 with one located line. */
int run_load(struct run *r, const char *ini, char *const *sets, int32_t n_sets,
             const char *plugin_path);
/* The same from a configuration already read (taken over: *cfg is emptied). */
int run_load_cfg(struct run *r, struct cfg *cfg, const char *plugin_path);
/* Execute the chain. -1 with one line. */
int run_execute(struct run *r);
void run_free(struct run *r);

/* Mark the batch about to be processed (NULL after it), so plugins can run auxiliary passes
 * of it from batch_begin. */
void run_set_batch(struct run *r, struct method_run *mr, const struct batch *b, int training);

/* Create a stage's method instance on the model as it is now (create + attach + tensors). */
int run_stage_method(struct run *r, struct stage *s, struct method_run **out);
/* The same for any method and keys, served by the run (stage outputs, auxiliary passes);
 * where prefixes its error lines. */
int run_method_create(struct run *r, const char *where, const char *stage, uint64_t seed,
                      const struct plugin_method *pm, const peft_kv *kv, uint32_t n_kv,
                      struct method_run **out);
/* The weights a stage starts from: its `from` stage's result, or the base model. */
const float *run_stage_start(struct run *r, const struct stage *s);

/* Pieces used by run_execute, one file each. */
int run_train_stage(struct run *r, struct stage *s, struct method_run *mr);   /* train.c */
int run_eval(struct run *r, struct stage *s, struct method_run *mr,
             struct eval_result *out);                                         /* eval.c */
void run_metric(struct run *r, char *json_line); /* takes ownership */
/* One metrics line per evaluated task (point: before, step, after). */
void run_log_eval(struct run *r, const struct stage *s, const char *point, int64_t step,
                  const struct eval_result *ev);
/* Drop metric lines of a stage with step > after_step (all of them when after_step < 0). */
void run_metrics_drop_stage(struct run *r, const char *stage, int64_t after_step);
int run_metrics_flush(struct run *r);

/* Progress line (progress.c). */
struct progress {
    double t0, last;
    int32_t active;
};
void progress_begin(struct progress *p, int32_t enabled);
void progress_update(struct progress *p, const char *stage, int64_t step, int64_t steps,
                     double loss, double tokens_per_s);
void progress_end(struct progress *p);

#endif
