/*
 * method.h: the host side of the plugin ABI for one method instance in one stage: the
 * peft_host_api table, tensor registration and storage, site matching, hook dispatch, and
 * adapter files.
 *
 * Life of a method_run: method_run_create (create + attach to matched sites + allocate and
 * initialize tensors) -> optionally method_run_load -> method_run_begin (stage_begin) ->
 * steps (method_run_batch_begin, model passes with method_run_hooks, optimizer over
 * method_run tensors, method_run_step_end) -> method_run_end -> save / merge -> free.
 */
#ifndef PEFT_METHOD_H
#define PEFT_METHOD_H

#include <stdint.h>

#include "peft/peft_plugin.h"
#include "plugin_loader.h"
#include "core/core.h"
#include "data/data.h"
#include "model/model.h"

/* A registered tensor, host-owned. */
struct mtensor {
    char *name;
    peft_tensor_desc desc;   /* copy; desc.name points at `name` */
    float *data;             /* numel; for ALIAS_BASE a view into the model */
    float *grad;             /* NULL if frozen; n_trainable floats */
    float *adam_m, *adam_v;  /* optimizer state, n_trainable floats, allocated by the optimizer
                                (xmalloc family), freed by method_run_free */
    uint64_t numel;
    uint64_t n_trainable;
    uint64_t *mask;          /* NULL or n_trainable sorted indices */
    int32_t model_tensor;    /* ALIAS_BASE: index into model->tensors, else -1 */
    /* ALIAS_BASE: value at stage start (task vector = data - start): numel floats, or with a
     * mask n_trainable floats, start[j] belonging to data[mask[j]] (the other entries never
     * change, so they equal their start value). */
    float *start;
    /* Optimizer steps of the stage done before this tensor's optimizer state (re)started
     * (a mask set in step_end restarts it); AdamW's bias correction counts from here. */
    int64_t step0;
    int32_t loaded;          /* its values were read from a file (tensor_origin) */
};

/* What the runtime needs from the run to serve host API calls. */
struct method_env {
    struct task_table *tasks;
    uint64_t seed;                 /* the stage's seed; the instance's stream derives from it */
    uint64_t init_seed;            /* the seed of the tensors' random initialisation */
    const char *stage;             /* stage name */
    const char *where;             /* "FILE [stage.NAME]" prefix for error lines */
    /* Stage outputs for stage_tensor / stage_delta; NULL members answer "unknown stage". */
    void *run_ctx;
    int (*stage_tensor)(void *run_ctx, const char *stage, const char *name, float *out,
                        uint64_t numel);
    int (*stage_delta)(void *run_ctx, const char *stage, int32_t site, float *out);
    /* Auxiliary passes (run_pass); NULL = unsupported. */
    int (*run_pass)(void *run_ctx, uint32_t pass, uint32_t backward);
    /* The adapter file a finished stage wrote (peft.files/1 stage_file); NULL = none. */
    int (*stage_file)(void *run_ctx, const char *stage, char *out, size_t cap);
    /* A key of a stage of the run (peft.stage_keys/1; stage NULL: this one): 0 with the value
     * in out, 1 when there is no such stage or key, -1 when it does not fit. NULL = no run. */
    int (*stage_value)(void *run_ctx, const char *stage, const char *key, char *out, size_t cap);
    /* The task ids the stage trains on (peft.stage_tasks/1); NULL = not known. */
    const int32_t *train_tasks;
    int32_t n_train_tasks;
};

struct method_run;

/* Create the plugin instance with cfg (schema keys, defaults filled, checked), attach it to
 * the matched sites and allocate/initialize its tensors from env->seed. -1 with a line that
 * starts with env->where. */
int method_run_create(struct method_run **out, const struct plugin_method *pm, struct model *m,
                      const struct method_env *env, const peft_kv *cfg, uint32_t n_cfg);
void method_run_free(struct method_run *mr);

/* Tensors (all registered, trainable or not). */
int32_t method_run_tensor_count(const struct method_run *mr);
struct mtensor *method_run_tensor(struct method_run *mr, int32_t i);
uint64_t method_run_trainable_count(const struct method_run *mr); /* entries */
const struct plugin_method *method_run_plugin(const struct method_run *mr);
/* Does the plugin look at a batch as a whole (batch_begin or a hidden-state hook)? Then its
 * output at a position may depend on more than the rows before it (decoding one token at a
 * time with a cache would change what it sees). */
int method_run_sees_batches(const struct method_run *mr);
/* Sites the method is attached to. */
int32_t method_run_site_count(const struct method_run *mr);
int32_t method_run_site(const struct method_run *mr, int32_t i);

int method_run_begin(struct method_run *mr);                   /* stage_begin */
int method_run_task_begin(struct method_run *mr, int32_t task); /* once per new task */
/* After method_run_batch_begin of a label-scoring batch (b->label_task set): (B) the pairs
 * the plugin gave the null score (peft_batch_info.label_masked); NULL for any other batch. */
const uint8_t *method_run_label_masked(const struct method_run *mr);
/* The share of the step's examples the next training batches hold (peft_batch_info
 * .step_share; 1 until set). */
void method_run_set_step_share(struct method_run *mr, double share);
int method_run_batch_begin(struct method_run *mr, const struct batch *b, int training,
                           uint64_t step);
/* Hooks for model_forward/model_backward that dispatch to the plugin. The struct stays
 * valid until method_run_free. training selects dropout etc. */
const struct model_hooks *method_run_hooks(struct method_run *mr, int training);
void method_run_zero_grads(struct method_run *mr);
/* Call after model_backward, before clipping and the optimizer. Nothing is left to do here
 * today: unmasked ALIAS_BASE tensors use the model's dense gradient in place, and masked ones
 * are the model's sparse gradient targets (it forms their compact gradient directly, with no
 * dense dW). Kept as the one place between backward and the optimizer. */
void method_run_collect_grads(struct method_run *mr);
int method_run_step_end(struct method_run *mr, uint64_t step);
int method_run_end(struct method_run *mr);                     /* stage_end */

/* Adapter files: every tensor without NO_SAVE, plus the plugin's state (if any) as a U8
 * tensor "peft.state", plus meta_kv (NULL-ended key/value list) and the method id, its
 * version and the ABI version in __metadata__. A masked ALIAS_BASE tensor NAME is saved as
 * its sparse task vector instead of whole: NAME.sparse_index (I64, sorted flat indices),
 * NAME.sparse_value (F32, the weight there) and NAME.sparse_delta (F32, value - start). */
int method_run_save(struct method_run *mr, const char *path, const char *const *meta_kv);
/* Load tensors saved by method_run_save (names and shapes must match; a trainable
 * ALIAS_BASE tensor may come whole or sparse, and a sparse one sets its mask and restores it
 * to start + the saved change). -1 with "PATH: tensor NAME: reason". */
int method_run_load(struct method_run *mr, const char *path);

/* out (d_out, d_in) += scale * dW at a site. ALIAS_BASE tensors contribute data - start.
 * -1 if the method cannot say (err_set with the reason). */
int method_run_delta(struct method_run *mr, int32_t site, float scale, float *out);
/* Fold the adapter into the model's weights (W += dW at every attached site). No-op for
 * ALIAS_BASE tensors (already live). -1 if not mergeable. */
int method_run_merge(struct method_run *mr);
/* Whether the method offers negation (negate(), or tensors flagged NEGATE). */
int method_run_can_negate(const struct method_run *mr);
int method_run_negate(struct method_run *mr);

/* The instance's random stream (dropout etc.), so checkpoints can save and restore it. */
struct rng *method_run_rng(struct method_run *mr);
/* A fingerprint of the adapter's random initialisation (its randomly initialised tensors'
 * names and starting values), carried in saved adapters as peft.init_fingerprint: two runs
 * trained from one initialisation have the same. 0 when none was drawn or it is unknown
 * (an imported adapter). */
uint64_t method_run_init_fingerprint(const struct method_run *mr);
void method_run_set_init_fingerprint(struct method_run *mr, uint64_t fp);

/* The host API table (one for the whole process). */
const peft_host_api *host_api_table(void);

#endif
