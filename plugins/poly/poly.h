/*
 * poly.h: what the two files of the poly plugin share: the instance, its sites, and the
 * routing functions. poly.c holds the contract, the keys, creation and the chaining of
 * stages (init_from); poly_route.c the routing maths: gate, mixing, the site hooks and ΔW.
 */
#ifndef PEFT_POLY_H
#define PEFT_POLY_H

#include "peft/peft_lowrank.h"
#include "peft/peft_plugin.h"

enum poly_variant { POLY, MHR, POLY_MU, MHR_Z };

/* Values of the "poly.task_rows" tensor, per task. */
enum { ROW_FRESH = 0, ROW_INHERITED = 1, ROW_TRAINED_HERE = 2 };

struct poly_site {
    uint32_t site, d_in, d_out;
    peft_tensor_id a, b, z; /* skills A, B and routing logits Z; poly-mu: LoRA A, B (no z) */
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    int variant;               /* enum poly_variant */
    uint32_t K, heads, r, n_tasks;
    float alpha, s, temperature, routing_lr;
    int gumbel;
    char init_from[128];       /* "" = a fresh start */
    float *src_rows;           /* (n_tasks) init_from's poly.task_rows, or NULL */
    int32_t *row_off;          /* (n_tasks) where a task's row lies in Z's (compact) gradient,
                                  -1 when the row is frozen */
    peft_tensor_id config_id, rows_id;
    struct poly_site *sites;
    uint32_t n_sites;
    int32_t *slot;             /* (model sites) index into sites, or -1 */
    peft_scratch work;         /* plugin-owned work space, grown on demand */
};

/* Whether the variant routes (all but poly-mu, which is one plain LoRA). */
static inline int poly_routed(const struct peft_instance *self) {
    return self->variant != POLY_MU;
}

/* Where a registered tensor lives (stage_begin and later). */
static inline peft_status poly_view(struct peft_instance *self, peft_tensor_id id,
                                    peft_tensor_view *v) {
    return self->api->tensor_view(self->h, id, v);
}

/* n floats of the instance's work space (NULL when out of memory); valid until the next call. */
float *poly_scratch(struct peft_instance *self, uint64_t n);

/* At (d_in, r) = vstack_q sum_k w[q,k] A[q,k] and Bt (r, d_out) = hstack_q sum_k w[q,k] B[q,k]
 * for the site's skills A (h, K, d_in/h, r), B (h, K, r, d_out/h) and weights w (h, K);
 * Bh (r * d_out floats) is work space. */
void poly_mix(const struct peft_instance *self, const struct poly_site *ps, const float *A,
              const float *B, const float *w, float *At, float *Bt, float *Bh);

/* The site hooks and ΔW (poly_route.c). */
uint64_t poly_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows);
peft_status poly_forward(peft_instance *self, const peft_forward_io *io);
peft_status poly_backward(peft_instance *self, const peft_backward_io *io);
peft_status poly_delta_weight(peft_instance *self, uint32_t site, float scale, float *out);

#endif
