/*
 * full.c: full fine-tuning of the targeted weights, as a plugin ("full").
 *
 * Contract. Every matched site's weight (d_out, d_in) is registered as a trainable
 * ALIAS_BASE tensor named as in HF checkpoints ("model.layers.0.self_attn.q_proj.weight"),
 * so the tensor *is* the live weight and the host's model computes its gradient: the plugin
 * has no forward or backward hook. With train_norms the RMSNorm weights (C) are trained too
 * (no weight decay); with train_embeddings the token embedding (V, C) and, when the head is
 * not tied to it, lm_head.weight (V, C).
 *
 * Every tensor is flagged NEGATE: the host negates an aliased tensor's task vector
 * (w = start - (w - start)), and the host computes delta / merge from the task vector, so
 * delta_weight and negate are left to it. The adapter file written by the host is a partial
 * model checkpoint under the HF tensor names.
 *
 * Serves: the baseline of every comparison, the calibration stage of LoTA, and building the
 * quickstart's base model.
 */
#include <stdlib.h>

#include "peft/peft_plugin.h"

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
};

/* Register one model-level ALIAS_BASE tensor (site -1) of the given shape. */
static peft_status alias_model_tensor(struct peft_instance *self, const char *name,
                                      uint32_t ndim, uint64_t d0, uint64_t d1, uint32_t flags) {
    peft_tensor_desc d = {
        .struct_size = sizeof d,
        .name = name,
        .site = -1,
        .ndim = ndim,
        .shape = {d0, d1, 0, 0},
        .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_ALIAS_BASE | PEFT_TENSOR_NEGATE | flags,
    };
    peft_tensor_id id;
    return self->api->tensor_register(self->h, &d, &id);
}

static peft_status full_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api;
    self->h = h;
    char name[128];
    if (peft_kv_bool(cfg, n_cfg, "train_norms", 0)) {
        for (uint32_t l = 0; l < mi.n_layers && st == PEFT_OK; l++) {
            snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
            st = alias_model_tensor(self, name, 1, mi.d_model, 0, PEFT_TENSOR_NO_DECAY);
            snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
            if (st == PEFT_OK)
                st = alias_model_tensor(self, name, 1, mi.d_model, 0, PEFT_TENSOR_NO_DECAY);
        }
        if (st == PEFT_OK)
            st = alias_model_tensor(self, "model.norm.weight", 1, mi.d_model, 0,
                                    PEFT_TENSOR_NO_DECAY);
    }
    if (st == PEFT_OK && peft_kv_bool(cfg, n_cfg, "train_embeddings", 0)) {
        st = alias_model_tensor(self, "model.embed_tokens.weight", 2, mi.vocab, mi.d_model, 0);
        /* A tied head has no tensor of its own (it is embed_tokens): the host answers
         * PEFT_E_UNSUPPORTED, which is not an error here. */
        if (st == PEFT_OK) {
            st = alias_model_tensor(self, "lm_head.weight", 2, mi.vocab, mi.d_model, 0);
            if (st == PEFT_E_UNSUPPORTED) st = PEFT_OK;
        }
    }
    if (st != PEFT_OK) {
        free(self);
        return st;
    }
    *out = self;
    return PEFT_OK;
}

static void full_destroy(peft_instance *self) { free(self); }

static peft_status full_attach(peft_instance *self, uint32_t site) {
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    char name[160];
    snprintf(name, sizeof name, "%s.weight", si.name);
    peft_tensor_desc d = {
        .struct_size = sizeof d,
        .name = name,
        .site = (int32_t)site,
        .ndim = 2,
        .shape = {si.d_out, si.d_in, 0, 0}, /* (d_out, d_in): the live weight */
        .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_ALIAS_BASE | PEFT_TENSOR_NEGATE,
    };
    peft_tensor_id id;
    return self->api->tensor_register(self->h, &d, &id);
}

static const peft_param_spec full_params[] = {
    {"target_modules", PEFT_PARAM_LIST, "all-linear", NULL,
     "weights to train: site kinds (q_proj ...), name suffixes, or all-linear"},
    {"train_norms", PEFT_PARAM_BOOL, "false", NULL,
     "also train the RMSNorm weights (without weight decay)"},
    {"train_embeddings", PEFT_PARAM_BOOL, "false", NULL,
     "also train embed_tokens (and lm_head when it is not tied)"},
};

static const peft_method_vtable full_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = full_create,
    .destroy = full_destroy,
    .attach = full_attach,
};

static const char *const full_features[] = {PEFT_FEATURE_WRITES_BASE, PEFT_FEATURE_MERGEABLE,
                                            NULL};

static const peft_method_desc full_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "full",
    .name = "Full fine-tuning",
    .version = "1.0.0",
    .description = "train the targeted weights themselves (the baseline; LoTA's calibration)",
    .features = full_features,
    .params = full_params,
    .n_params = sizeof full_params / sizeof full_params[0],
    .vt = &full_vt,
    .license = "MIT",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &full_desc);
