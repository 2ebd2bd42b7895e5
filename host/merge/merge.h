/*
 * merge.h: merge stages. A stage with `merge = OP` instead of `method = ID` trains nothing: it
 * combines adapters and task vectors (earlier stages of the chain, adapter files, task vector
 * files, HF PEFT folders) into one result, which is evaluated like any stage and which later
 * stages can start from.
 *
 *   [stage.both]
 *   merge = add                 ; the operator (below)
 *   space = delta               ; delta: exact weight changes; factor: PEM's module arithmetic
 *   inputs = task_a task_b      ; earlier stages, adapter / task vector files, HF PEFT folders
 *   weights = 1 1               ; one per input (default 1 each)
 *   output = lora               ; delta space: delta | lora | model; factor space: adapter | model
 *   rank = 16                   ; output = lora: the rank of the truncated SVD
 *
 * Operators. In delta space every input gives its exact task vector per model tensor, ΔW_i,
 * asked of its method (method_run_delta: the plugin's delta_weight, or live - start for
 * tensors that alias base weights; sparse where the method keeps a masked task vector):
 *   add, task_arithmetic   Σ w_i ΔW_i                   (mergekit task_arithmetic, no normalize)
 *   additive               Σ w_i ΔW_i on sparse vectors  (LoTA's merge; same formula, its name)
 *   negate                 Σ w_i neg(ΔW_i), neg being the method's own negation
 *   magnitude_prune, ties, dare_linear, dare_ties        (PEFT merge_utils; see merge_ops.h)
 * each times `lambda` (default 1). In factor space (the PEM paper; README "Merging adapters") the inputs
 * must be adapters of one method with one configuration; each tensor is averaged with
 * coefficients |w_i| / Σ|w_j| (trainable tensors and those flagged PEFT_TENSOR_AVERAGE; other
 * frozen state must be equal), an input with a negative weight, or every input under
 * `negate`, being negated first as its method defines (LoRA: B flipped). The product of
 * averaged factors has cross terms, so factor-space addition is not the ΔW sum.
 *
 * Outputs in the stage folder: adapter.safetensors (output = lora: a `lora` adapter of rank
 * `rank`, lora_alpha = rank, from the truncated SVD of each site's merged ΔW, B = U S,
 * A = Vt; output = adapter: the inputs' method), task_vector.safetensors (output = delta),
 * model/ (output = model, or save_model = true). Their metadata say the operator, the space,
 * the inputs and weights (peft.merge*), and adapters carry peft.method_config so they can be
 * loaded again. stage.json as for every stage.
 */
#ifndef PEFT_MERGE_H
#define PEFT_MERGE_H

#include <stdint.h>

#include "merge_ops.h"
#include "stage/stage.h"

enum merge_op {
    MERGE_OP_ADD,
    MERGE_OP_TASK_ARITHMETIC,
    MERGE_OP_ADDITIVE,
    MERGE_OP_NEGATE,
    MERGE_OP_MAGNITUDE_PRUNE,
    MERGE_OP_TIES,
    MERGE_OP_DARE_LINEAR,
    MERGE_OP_DARE_TIES,
};
enum merge_space { MERGE_SPACE_DELTA, MERGE_SPACE_FACTOR };
enum merge_output { MERGE_OUT_DELTA, MERGE_OUT_LORA, MERGE_OUT_MODEL, MERGE_OUT_ADAPTER };
enum merge_input_kind { MERGE_IN_STAGE, MERGE_IN_FILE, MERGE_IN_HF };

struct merge_input {
    char *text;    /* as written in `inputs` */
    int32_t kind;  /* enum merge_input_kind */
    int32_t stage; /* MERGE_IN_STAGE: index of the stage */
    char *path;    /* MERGE_IN_FILE: the safetensors file; MERGE_IN_HF: the folder */
    double weight;
};

struct merge_spec {
    int32_t op, space, output;
    struct merge_input *in;
    int32_t n_in;
    int32_t rank;                     /* output = lora */
    struct merge_params params;       /* pruning, sign election, lambda, seed */
    int32_t save_model;               /* also write STAGE/model */
    const struct plugin_method *lora; /* output = lora: the method the adapter is written for */
    char *where;                      /* "FILE:LINE: [stage.NAME]" for run-time errors */
    char *where_inputs;               /* "FILE:LINE: [stage.NAME] inputs" */
    /* after the merge ran */
    int32_t mergeable;        /* the result is folded into the weights */
    double svd_max_rel_error; /* output = lora: worst site, ||ΔW - BA|| / ||ΔW|| */
    int32_t n_sites;          /* sites the result changes */
};

/* Names as the run file writes them. */
const char *merge_op_name(int32_t op);
const char *merge_output_name(int32_t output);

/* The stand-in method of merge stages (id "merge"): it attaches to nothing, so evaluating
 * with it is evaluating the model's weights as they are. */
const struct plugin_method *merge_stage_method(void);

/* Read a merge stage's own keys (merge, space, inputs, weights, output, rank, density,
 * lambda, sign) into s->merge; the host keys it shares with trained stages are read by the
 * caller. *default_from is the stage the first stage input started from (-1: [model]).
 * -1 with one located line. */
int merge_config_load(struct stage_env *env, struct cfg *c, struct stage *s,
                      int32_t *default_from);
/* Identity of the inputs for the stage hash (stage hashes, file paths, sizes and times). */
uint64_t merge_inputs_hash(const struct stage_env *env, const struct stage *s, uint64_t h);
/* Check the inputs against the model and each other before anything is written (opens
 * every file input). The model's weights are left as they were. */
int merge_config_check(struct stage_env *env, struct stage *s);
void merge_spec_free(struct merge_spec *m);

/* Compute the merge on the stage's starting weights, leaving the merged weights in the
 * model (or, for an adapter that cannot be merged, in *eval_mr, which the caller evaluates
 * with and frees). With write, the outputs go to the stage folder. */
int merge_execute(struct stage_env *env, struct stage *s, int write, struct method_run **eval_mr);

#endif
