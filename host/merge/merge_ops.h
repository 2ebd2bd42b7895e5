/*
 * merge_ops.h: task vectors of one model tensor, dense or sparse, and the operators that
 * merge several of them: weighted sums (task arithmetic, LoTA's additive merge), magnitude
 * pruning, TIES and DARE.
 *
 * Conventions (where HF PEFT's merge_utils and mergekit differ). These follow
 * PEFT's utils/merge_utils.py, applied to whole task vectors (dense ΔW or sparse deltas)
 * rather than to LoRA factors, as PEFT's `*_svd` combination types do:
 *   magnitude prune: per tensor keep the k = floor(density * numel) entries of largest |x|
 *                    (ties broken towards the lower flat index); the rest become 0;
 *   DARE:            keep each entry with probability density, then divide by density (not
 *                    mergekit's L1-norm rescale). The draw of entry j of input i is a hash of
 *                    (seed, i, tensor name, j), so it is the same whether the input is stored
 *                    dense or sparse and whatever the order of tensors;
 *   sign election:   on the pruned, *unweighted* inputs: "total" = sign of their sum,
 *                    "frequency" = sign of the sum of their signs; 0 counts as + (PEFT);
 *   disjoint mean:   sum of w_i t_i over the inputs whose sign agrees with the elected one,
 *                    divided by how many agree (at least 1) - by count, not mergekit's sum
 *                    of weights;
 *   TIES = magnitude prune, elect, disjoint mean; DARE-TIES = DARE, elect, disjoint mean;
 *   linear kinds = sum of w_i t_i (after pruning for magnitude_prune and dare_linear).
 * Every result is finally multiplied by lambda (mergekit's `lambda`; 1 = none).
 */
#ifndef PEFT_MERGE_OPS_H
#define PEFT_MERGE_OPS_H

#include <stdint.h>

/* The task vector of one tensor of numel entries: dense (idx NULL, n == numel) or sparse
 * (n sorted, unique flat row-major indices below numel, with their values). */
struct tvec {
    uint64_t numel;
    uint64_t n;
    uint64_t *idx; /* (n) or NULL */
    float *val;    /* (n) */
};

/* A zeroed dense vector of numel entries. */
void tvec_init_dense(struct tvec *t, uint64_t numel);
void tvec_free(struct tvec *t);
/* out (numel, dense) += scale * t. */
void tvec_add_to(const struct tvec *t, float scale, float *out);

enum merge_prune { PRUNE_NONE = 0, PRUNE_MAGNITUDE = 1, PRUNE_RANDOM = 2 };
enum merge_sign { SIGN_NONE = 0, SIGN_TOTAL = 1, SIGN_FREQUENCY = 2 };

struct merge_params {
    int32_t prune;  /* enum merge_prune */
    int32_t sign;   /* enum merge_sign: elect a sign and take the disjoint mean */
    double density; /* fraction kept by pruning, in (0, 1] */
    double lambda;  /* final scale */
    uint64_t seed;  /* DARE's draws */
};

/* out = the merge of in[0..m) (each of the same numel) with weights w (m). Sparse when every
 * input is sparse (support: the union of theirs, exact zeros dropped), dense otherwise.
 * name keys DARE's draws. out is overwritten (free it with tvec_free). */
void merge_tensor(const struct merge_params *p, const struct tvec *in, const double *w, int32_t m,
                  const char *name, struct tvec *out);

/* DARE's draw for entry `index` of input `input` of tensor `name`: 1 = kept. */
int merge_dare_keep(uint64_t seed, int32_t input, const char *name, uint64_t index, double density);

#endif
