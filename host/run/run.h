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
 *   OUT/STAGE/checkpoint*.safetensors  while a stage is in progress (removed when it completes;
 *                                  found by a later run, it is continued with --resume or
 *                                  dropped with --restart, never silently)
 * A completed stage whose hash (its config, the configs it depends on, model, data, seed and
 * plugin version) is unchanged is not trained again: its outputs are loaded.
 */
#ifndef PEFT_RUN_H
#define PEFT_RUN_H

#include <stdint.h>

#include "stage/stage.h"

struct run {
    struct cfg cfg;
    char *out_dir;
    uint64_t seed;
    int32_t threads;
    int32_t allreduce_overlap;    /* [run] allreduce_overlap */
    int32_t precision;            /* [run] precision: MODEL_FP32 or MODEL_BF16 */
    struct plugin_registry reg;
    /* model */
    struct model model;
    struct model_snapshot *base_params; /* the model before any stage */
    /* data */
    char *model_dir;            /* [model] path, NULL for a generated model */
    struct tokenizer *tok;      /* the model folder's tokenizer.json; NULL: the byte tokenizer */
    struct data_encoding enc;   /* how examples become ids (the datasets point here) */
    struct task_table tasks;
    struct dataset train, eval;
    /* chain */
    struct stage *stages;
    int32_t n_stages;
    struct metrics metrics;     /* OUT/metrics.jsonl */
    struct aux_pass aux;        /* the batch being processed, for auxiliary passes */
    /* options */
    int32_t resume;
    int32_t restart;            /* start stages with a checkpoint over (else they refuse) */
    int64_t stop_after;         /* testing aid: stop a stage after this many steps (0 = off) */
    int32_t progress;           /* progress on stderr: 1, 0, -1 = a line on a terminal */
    int32_t quiet;
    /* What the stages get: pointers into this run, bound by run_env(). */
    struct stage_env env;
};

/* Read and check the whole run file before anything is written: sections, keys, types,
 * model, data, methods, task names, stage references. -1 with one located line. */
int run_load(struct run *r, const char *ini, char *const *sets, int32_t n_sets,
             const char *plugin_path);
/* The same from a configuration already read (taken over: *cfg is emptied). */
int run_load_cfg(struct run *r, struct cfg *cfg, const char *plugin_path);
/* Execute the chain, holding OUT/.lock (dir_lock) meanwhile. -1 with one line. */
int run_execute(struct run *r);
void run_free(struct run *r);

/* The run's stage_env (pointers into r, valid while r lives and its stages are not
 * reallocated). */
struct stage_env *run_env(struct run *r);

/* The stage layer's services on a loaded run (stage.h). */
int run_method_create(struct run *r, const char *where, const char *stage, uint64_t seed,
                      const struct plugin_method *pm, const peft_kv *kv, uint32_t n_kv,
                      struct method_run **out);
const struct model_snapshot *run_stage_start(struct run *r, const struct stage *s);
int run_eval(struct run *r, struct stage *s, struct method_run *mr, struct eval_result *out);

#endif
