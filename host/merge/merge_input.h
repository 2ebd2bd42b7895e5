/*
 * merge_input.h: the inputs of a merge stage, opened on the model.
 *
 * An input is an earlier stage (its adapter loaded into a method run made with that stage's
 * config, on the weights that stage started from), an adapter file (its method and keys from
 * its metadata), an HF PEFT folder (read as the `lora` method), a task vector file written
 * by a merge (peft.kind = task_vector), or a merge stage's result. What comes out is either
 * a live method run (an adapter that does not touch the base weights: its ΔW is asked per
 * site when needed) or task vectors extracted per model tensor (methods that write the base
 * weights, task vector files): several of those alias the same weights, so they cannot stay
 * open together.
 */
#ifndef PEFT_MERGE_INPUT_H
#define PEFT_MERGE_INPUT_H

#include "merge.h"
#include "methods/methods.h"

struct merge_source {
    char *label;                    /* for messages: "stage 'a'", or the path */
    const struct plugin_method *pm; /* the input's method; NULL for a bare task vector */
    struct kv_list kv;              /* its keys, every one of the schema */
    struct method_run *mr;          /* a live adapter, or NULL */
    struct tvec *tv; /* (n_tv) task vectors by model tensor, numel 0 = none; or NULL */
    int32_t n_tv;
};

/* Open input i of merge stage s. p0 holds the weights to leave in the model afterwards (and
 * those file inputs are read against). keep_live: the adapter must stay a live method run
 * (factor space). negate: negate it as its method defines. -1 with one line. */
int merge_source_open(struct stage_env *env, const struct stage *s, int32_t i,
                      const struct model_snapshot *p0,
                      int keep_live, int negate, struct merge_source *out);
void merge_source_close(struct merge_source *src);

/* The input's task vector of model tensor t into *out: a view of stored data (*owned = 0)
 * or a new dense vector (*owned = 1; free with tvec_free). out->numel == 0: the input does
 * not change that tensor. -1 with one line. */
int merge_source_delta(struct merge_source *src, struct model *m, int32_t t, struct tvec *out,
                       int *owned);

#endif
