/*
 * conpet.h: what the two files of the conpet plugin share: the instance, its sites and the
 * hooks. conpet.c holds the contract, the keys, the tensors and the chaining of stages
 * (init_from); conpet_route.c the selector, the per-example routing and the site hooks.
 */
#ifndef PEFT_CONPET_H
#define PEFT_CONPET_H

#include "peft/peft_lowrank.h"
#include "peft/peft_plugin.h"

enum conpet_mode { CP_STATIC = 0, CP_DYNAMIC = 1 };

/* What a dynamic stage trains (key phase): the selector and the new experts together, the
 * selector alone (the published order's first part), or the new experts alone. */
enum conpet_phase { CP_JOINT = 0, CP_SELECTOR = 1, CP_EXPERTS = 2 };

/* Values of the "conpet.experts" tensor, per task of the run. SELECTABLE: a task a selector
 * stage routes to, whose expert has not trained yet (the next stage trains it). */
enum { EXPERT_FRESH = 0, EXPERT_INHERITED = 1, EXPERT_TRAINED_HERE = 2, EXPERT_SELECTABLE = 3 };

/* "conpet.config": mode + 1 (never 0, so a loaded tensor is told from a fresh one), r,
 * lora_alpha, selector_r, the run's task count. */
#define CP_CONFIG_LEN 5

struct cp_lora {
    peft_tensor_id a, b; /* A (r, d_in), B (d_out, r) */
};

struct cp_site {
    uint32_t site, d_in, d_out;
    struct cp_lora *expert; /* static: the one LoRA; dynamic: one per task of the run */
    struct cp_lora sel;     /* dynamic: the selector's own LoRA */
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    int mode;                  /* enum conpet_mode */
    int phase;                 /* enum conpet_phase */
    uint32_t r, sel_r, top_k;
    int teacher_forcing;
    float alpha, s, sel_s;     /* s = lora_alpha / r, sel_s = lora_alpha / selector_r */
    char init_from[128];       /* "" = a fresh start */
    uint32_t n_tasks, d_model, n_model_sites;
    float *src_experts;        /* (n_tasks) init_from's conpet.experts, or NULL */
    uint8_t *stage_trains;     /* (n_tasks) the tasks this stage trains (peft.stage_tasks/1),
                                  or NULL when the host does not say */
    struct cp_site *sites;
    uint32_t n_sites;
    int32_t *slot;             /* (model sites) index into sites, or -1 */
    peft_tensor_id config_id, experts_id, head_w, head_b;
    /* The current batch's routing. */
    uint32_t batch, cap_batch;
    uint32_t k_used;           /* experts selected per example in this batch */
    int32_t *route;            /* (batch, top_k) the tasks selected for example b */
    int32_t *expert;           /* (batch) the one expert example b runs (-1: none): its label's
                                  task in a label-scoring batch, else its first selected */
    float *sel_logits;         /* (batch, n_tasks) selector logits from pass 1 */
    int32_t have_scores;       /* sel_logits belong to the current batch */
    int32_t no_aux;            /* the host offers no auxiliary passes */
    /* The selector's accuracy on training batches (logged at stage_end). */
    uint64_t sel_seen, sel_right;
    peft_scratch scratch;      /* plugin-owned work space, grown on demand */
};

/* The auxiliary pass of the selector. */
#define CP_PASS_SELECTOR 1u

/* Where a registered tensor lives (stage_begin and later). */
static inline peft_status cp_view(struct peft_instance *self, peft_tensor_id id,
                                  peft_tensor_view *v) {
    return self->api->tensor_view(self->h, id, v);
}

/* n floats of the instance's work space (NULL when out of memory); valid until the next call. */
float *cp_scratch(struct peft_instance *self, uint64_t n);

/* Hooks (conpet_route.c). */
peft_status cp_batch_begin(peft_instance *self, const peft_batch_info *b);
uint64_t cp_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows);
peft_status cp_forward(peft_instance *self, const peft_forward_io *io);
peft_status cp_backward(peft_instance *self, const peft_backward_io *io);
peft_status cp_hidden_forward(peft_instance *self, const peft_hidden_io *io);
peft_status cp_hidden_backward(peft_instance *self, const peft_hidden_io *io);

#endif
