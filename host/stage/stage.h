/*
 * stage.h: the face of host/stage, one stage of a run: its description (struct stage), what it
 * gets from the run that executes it (struct stage_env, passed explicitly: nothing here calls
 * back into the run), its training loop with bit-exact checkpoints (train.c), its evaluation
 * (eval.c), the optimizer (optim.h), the metrics log (metrics.c), the method instances it
 * creates and the services they get from the chain (method_env.c), the progress line, and
 * generation with a model and an unmerged adapter (generate.h).
 */
#ifndef PEFT_STAGE_H
#define PEFT_STAGE_H

#include <stdint.h>

#include "generate.h"
#include "optim.h"
#include "core/core.h"
#include "data/data.h"
#include "io/io.h"
#include "methods/methods.h"
#include "model/model.h"

struct eval_result {
    int32_t task;
    int32_t n;          /* examples */
    double loss;        /* mean completion-token loss */
    double accuracy;    /* exact match by greedy decoding */
};

struct stage {
    char *name;
    char *section;              /* "stage.NAME" */
    char *where;                /* "FILE:LINE: [stage.NAME]" (its header line), for errors */
    const struct plugin_method *pm;
    int32_t from;               /* index of the stage it starts from, -1 = the base model */
    int32_t *train_tasks, n_train_tasks;
    int32_t *eval_tasks, n_eval_tasks;
    /* Tasks the stage's result has seen: its start's, its own training tasks, and for a merge
     * stage its inputs' (the default eval_tasks). */
    int32_t *known_tasks, n_known_tasks;
    struct merge_spec *merge;   /* a merge stage (merge.h): trains nothing; else NULL */
    int64_t steps, batch_size, eval_batch_size, eval_every, save_every, log_every;
    int64_t grad_accum;         /* micro-batches per optimizer step */
    int64_t early_stopping;     /* patience in evaluations (0 = off) */
    int64_t keep_checkpoints;   /* the N most recent kept, past the stage's end (0: latest) */
    int32_t early_on_accuracy;  /* watch mean accuracy (else mean loss) */
    int64_t best_step;          /* early stopping: the evaluation kept as the result (0: none) */
    int64_t stopped_step;       /* early stopping: the step training stopped at (0: ran out) */
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
    /* train.c: the training loss is label prediction's (labels.c) over the labels of the
     * stage's tasks and replay_tasks, instead of the completion tokens' cross-entropy. */
    int32_t train_labels;
    struct optim_params opt;
    uint64_t seed;
    uint64_t init_seed;         /* the adapter's random initialisation (default: the run's seed) */
    int32_t save_model;
    int32_t predictions;        /* write predictions-TASK.jsonl after the final evaluation */
    peft_kv *kv;                /* method keys, every schema key (defaults filled) + "stage" */
    uint32_t n_kv;
    char *config_json;          /* the stage's keys as JSON, for metadata */
    uint64_t hash;
    char *dir;                  /* OUT/NAME */
    /* results */
    struct model_snapshot *result_params; /* the weights after the stage (adapter merged) */
    struct eval_result *before, *after; /* n_eval_tasks each */
    int32_t reused;             /* loaded from a completed earlier run */
    int32_t unmerged;           /* its adapter could not be folded into the weights */
    uint64_t n_trainable;       /* trainable entries of the method */
    double train_seconds, tokens_per_second;
    /* under mpirun: the gradient sums' seconds and bytes over comm_steps steps */
    double comm_seconds, comm_bytes;
    int64_t comm_steps;
    double eval_seconds;        /* time spent evaluating in this stage */
    int64_t peak_rss_kb;        /* the process's peak resident size when the stage ended */
};

/* ---- the metrics log (metrics.c): OUT/metrics.jsonl, rewritten whole and atomically ---- */
struct metrics {
    char *path;    /* OUT/metrics.jsonl */
    char **lines;  /* (n) one JSON object each */
    int32_t n;
};
/* Start from the lines already in path (stages reused from an earlier run keep theirs). */
void metrics_open(struct metrics *m, const char *path);
void metrics_add(struct metrics *m, char *json_line); /* takes ownership */
/* Drop the lines of a stage with step > after_step (all of them when after_step < 0). */
void metrics_drop_stage(struct metrics *m, const char *stage, int64_t after_step);
int metrics_flush(const struct metrics *m);
void metrics_free(struct metrics *m);

/* The batch being processed, for the auxiliary passes a plugin asks for (run_pass); its
 * activations are kept apart from the main pass's. */
struct aux_pass {
    struct method_run *mr;
    const struct batch *batch;
    int32_t training;
    struct model_acts *acts;
};

/* ---- what a stage gets from the run that executes it -------------------------------- */
struct stage_env {
    const char *run_path;               /* the run file, for error lines and metadata */
    struct model *model;                /* the live model: params are the working weights */
    struct plugin_registry *reg;
    struct task_table *tasks;
    const struct dataset *train, *eval;
    struct stage *stages;               /* (n_stages) the chain, in order */
    int32_t n_stages;
    const struct model_snapshot *base_params; /* the model before any stage */
    const char *model_dir;              /* [model] path (its tokenizer goes with written
                                         * models); NULL for a generated model */
    const struct tokenizer *tok;        /* the run's tokenizer; NULL: bytes */
    struct metrics *metrics;
    struct aux_pass *aux;
    uint64_t seed;                      /* the run's seed */
    int32_t resume;                     /* continue from a stage's checkpoint */
    int32_t quiet;                      /* no progress and no informational lines (results
                                         * and errors still print) */
    int32_t progress;                   /* progress line on stderr: 1, 0, -1 = on a terminal */
    int64_t stop_after;                 /* testing aid: stop a stage after this many steps */
    int32_t allreduce_overlap;          /* under mpirun: sum gradients layer by layer during
                                         * the backward (dp_overlap) */
};

/* The weights a stage starts from: its `from` stage's result, or the base model. */
const struct model_snapshot *stage_start(const struct stage_env *env, const struct stage *s);
/* A completed stage's checkpoints: all removed, or (keep_checkpoints) only the manifest, so
 * that the kept pairs stay without marking the stage as interrupted. */
void stage_checkpoint_finish(const struct stage *s);

/* Create a method instance on the model as it is now (create + attach + tensors), with the
 * chain's services (stage_tensor, stage_delta, stage_file, run_pass); where prefixes its
 * error lines. The instance may use env until it is freed. */
int stage_method_create(struct stage_env *env, const char *where, const char *stage,
                        uint64_t seed, const struct plugin_method *pm, const peft_kv *kv,
                        uint32_t n_kv, struct method_run **out);
/* The same for a stage's own method and keys. */
int stage_method(struct stage_env *env, const struct stage *s, struct method_run **out);

/* Mark the batch about to be processed (NULL after it), so plugins can run auxiliary passes
 * of it from batch_begin. */
void stage_set_batch(struct stage_env *env, struct method_run *mr, const struct batch *b,
                     int training);

/* Train s with mr from its start (or its checkpoint with env->resume): 0 done, 1 stopped on
 * request (stop_after; the checkpoint is on disk), -1 with one line. (train.c) */
int stage_train(struct stage_env *env, struct stage *s, struct method_run *mr);
/* Has s a checkpoint (STAGE/checkpoint.json naming its files)? Remove every checkpoint file
 * of s (when it completes, or is started over). (train.c) */
int stage_checkpoint_exists(const struct stage *s);
void stage_checkpoint_remove(const struct stage *s);
/* ---- data-parallel training under mpirun (data_parallel.c) ---------------------------- */
/* This process's share [lo, hi) of n examples: contiguous, in process order. */
void dp_share(size_t n, size_t *lo, size_t *hi);
/* Every trainable gradient (n_trainable floats, the compact form of a masked tensor) summed
 * over the processes; the floats each process sends per step (dp_grad_floats). */
int dp_sum_grads(struct method_run *mr);
uint64_t dp_grad_floats(struct method_run *mr);
/* Overlap (as PyTorch's DDP does): in the step's last backward, each layer's gradients are
 * packed and their sum started (MPI_Iallreduce) as soon as the layer's backward is done, while
 * the layers below run theirs; dp_overlap_finish sums the rest (embedding, head, model-level
 * and masked tensors), waits and unpacks. Hook dp_overlap_layer_done as the model's
 * layer_backward_done with the struct as its layer_ctx. */
struct dp_overlap {
    struct method_run *mr;
    int32_t n_layers;
    int32_t *layer_of;     /* (n_tensors) the layer whose backward finishes the gradient, -1 */
    float **packed;        /* (n_layers) the layer's gradients, packed for their sum */
    uint64_t *packed_cap;  /* (n_layers) */
    uint8_t *started;      /* (n_layers) its sum was started this step */
    uint8_t *skip;         /* (n_tensors) scratch */
};
void dp_overlap_init(struct dp_overlap *o, struct method_run *mr, const struct model *m);
int dp_overlap_layer_done(void *ctx, int32_t layer);
int dp_overlap_finish(struct dp_overlap *o);
void dp_overlap_free(struct dp_overlap *o);
/* -1 with one line unless every process holds the same trainable values. */
int dp_check_agree(struct method_run *mr, const char *run_path, const char *section);
/* Around one micro-batch's passes: the method's random stream becomes this process's own
 * (made of the shared stream, the process and k), then the shared one again, moved on by one
 * draw on every process. Nothing changes with one process. */
void dp_pass_stream(struct rng *shared, struct rng *saved, int64_t k);
void dp_pass_stream_end(struct rng *shared, const struct rng *saved);

/* Evaluate mr on s's eval tasks into out (n_eval_tasks); under mpirun each process takes a
 * share of every task's examples and all get the sums. (eval.c) */
int stage_eval(struct stage_env *env, struct stage *s, struct method_run *mr,
               struct eval_result *out);
/* The most likely id of logits (n): the first of equal maxima. */
int32_t eval_argmax(const float *v, int32_t n);
/* -log softmax(logits (V))[target], in double. */
double eval_row_nll(const float *logits, int32_t V, int32_t target);
/* STAGE/predictions-TASK.jsonl for every eval task (generate.h's predictions_write): the
 * model as it is with mr's hooks, each example routed to its own task. Nothing when the
 * stage's predictions key is off. -1 with one line. */
int stage_write_predictions(struct stage_env *env, struct stage *s, struct method_run *mr);
/* One metrics line per evaluated task (point: before, step, after); a step's evaluation
 * (eval_every) also as one line on stdout. */
void stage_log_eval(struct stage_env *env, const struct stage *s, const char *point,
                    int64_t step, const struct eval_result *ev);

/* ---- label prediction (labels.c): eval_labels and train_labels ------------------------ */
/* More candidates than this means the tasks are not classification tasks. */
enum { LABELS_MAX = 64 };
struct label_set {
    const char *text[LABELS_MAX]; /* borrowed from the datasets */
    int32_t task[LABELS_MAX];     /* the task each label first appears in */
    int32_t n;
};
/* Adds the distinct completions of d's examples of the given tasks, in order of appearance;
 * more than LABELS_MAX is refused with one line naming [section] key. */
int label_set_add(struct label_set *L, const struct dataset *d, const int32_t *tasks,
                  int32_t n_tasks, const char *section, const char *key);
/* The index of a label, or -1. */
int32_t label_set_find(const struct label_set *L, const char *completion);
/* A batch of (prompt, label) pairs: example e of idx with label l is pair e * L->n + l, and
 * b.label_task (B) the label's task. Owns its arrays; made again by each call. */
struct label_batch {
    struct dataset pairs;
    struct batch b;
    size_t *pair_idx;
    int32_t *label_task;
};
void label_batch_make(struct label_batch *lb, const struct dataset *d, const size_t *idx,
                      size_t n, const struct label_set *L, int32_t max_T);
void label_batch_free(struct label_batch *lb);
/* score (B): each pair's log-probability of its targets (PEFT_LABEL_NULL_SCORE where masked,
 * masked may be NULL) from its logits (B*T, V); n_tokens (B) its target count. */
void label_scores(const float *logits, const struct batch *b, int32_t V, const uint8_t *masked,
                  double *score, int64_t *n_tokens);
/* -log softmax(score (n_labels))[own]; d_score (n_labels, may be NULL) = its derivative by
 * each score, softmax - onehot(own). */
double label_loss(const double *score, int32_t n_labels, int32_t own, double *d_score);
/* One training micro-batch of label prediction: examples idx[0..n) of env->train paired with
 * every label of L (each example's completion among them), forward, and the backward of the
 * label loss summed over them and divided by n_total (n, or the whole micro-batch's count
 * when this process runs n of it) times acts' loss scale; *loss = that loss. acts must keep
 * its logits (no loss_chunk). -1 with one line. */
int label_train_batch(struct stage_env *env, struct method_run *mr, struct model_acts *acts,
                      struct label_batch *lb, const struct label_set *L, const size_t *idx,
                      size_t n, size_t n_total, uint64_t step, float *loss);

/* ---- the progress line (progress.c) --------------------------------------------------- */
struct progress {
    double t0, last;
    int64_t step0;      /* the step it started from (a resumed stage), for the time left */
    int32_t active;
};
void progress_begin(struct progress *p, int32_t enabled, int64_t step0);
void progress_update(struct progress *p, const char *stage, int64_t step, int64_t steps,
                     double loss, double tokens_per_s);
/* Seconds left at step of steps, elapsed seconds after starting at step0 (a resumed stage's
 * earlier steps are not in elapsed). */
double progress_time_left(double elapsed, int64_t step0, int64_t step, int64_t steps);
/* Before other output: ends a drawn line so the next update starts a fresh one. */
void progress_interrupt(struct progress *p);
void progress_end(struct progress *p);

#endif
