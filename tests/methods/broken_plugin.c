/* broken_plugin.c: a method whose backward is wrong on purpose, for `peft check` to catch:
 * a bias added to every targeted projection's output (as the SDK template's), whose backward
 * accumulates half the bias's gradient. Its loss still falls in training, which is why a
 * checker is needed. Nothing else is wrong with it. */
#include <stdio.h>
#include <stdlib.h>

#include "peft/peft_plugin.h"

struct peft_instance {
    const peft_host_api *api;
    peft_host *host;
    uint32_t n_sites;
    peft_tensor_id *id; /* (n_sites) */
    int *attached;      /* (n_sites) */
    uint32_t *d_out;    /* (n_sites) */
};

static peft_status bb_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                             uint32_t n_cfg, peft_instance **out) {
    (void)cfg, (void)n_cfg;
    peft_model_info info = {.struct_size = sizeof info};
    peft_status st = api->model_info(h, &info);
    if (st != PEFT_OK) return st;
    peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api, self->host = h, self->n_sites = info.n_sites;
    self->id = calloc(info.n_sites + 1, sizeof *self->id);
    self->attached = calloc(info.n_sites + 1, sizeof *self->attached);
    self->d_out = calloc(info.n_sites + 1, sizeof *self->d_out);
    if (!self->id || !self->attached || !self->d_out) {
        free(self->id), free(self->attached), free(self->d_out), free(self);
        return PEFT_E_NOMEM;
    }
    *out = self;
    return PEFT_OK;
}

static void bb_destroy(peft_instance *self) {
    free(self->id), free(self->attached), free(self->d_out), free(self);
}

static peft_status bb_attach(peft_instance *self, uint32_t site) {
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->host, site, &si);
    if (st != PEFT_OK) return st;
    char name[256];
    snprintf(name, sizeof name, "%s.bias_delta", si.name);
    peft_tensor_desc d = {.struct_size = sizeof d, .name = name, .site = (int32_t)site,
                          .ndim = 1, .shape = {si.d_out}, .init = PEFT_INIT_ZERO,
                          .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NEGATE};
    st = self->api->tensor_register(self->host, &d, &self->id[site]);
    if (st != PEFT_OK) return st;
    self->attached[site] = 1;
    self->d_out[site] = si.d_out;
    return PEFT_OK;
}

static peft_status bb_forward(peft_instance *self, const peft_forward_io *io) {
    peft_tensor_view v;
    peft_status st = self->api->tensor_view(self->host, self->id[io->site], &v);
    if (st != PEFT_OK) return st;
    uint32_t d = self->d_out[io->site];
    for (uint32_t i = 0; i < io->n_rows; i++)
        for (uint32_t j = 0; j < d; j++) io->y[(size_t)i * d + j] += v.data[j];
    return PEFT_OK;
}

static peft_status bb_backward(peft_instance *self, const peft_backward_io *io) {
    peft_tensor_view v;
    peft_status st = self->api->tensor_view(self->host, self->id[io->site], &v);
    if (st != PEFT_OK || !v.grad) return st;
    uint32_t d = self->d_out[io->site];
    for (uint32_t i = 0; i < io->n_rows; i++)
        for (uint32_t j = 0; j < d; j++) v.grad[j] += 0.5f * io->dy[(size_t)i * d + j]; /* the defect */
    return PEFT_OK;
}

static const peft_method_vtable bb_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = bb_create,
    .destroy = bb_destroy,
    .attach = bb_attach,
    .forward = bb_forward,
    .backward = bb_backward,
};

static const peft_param_spec bb_params[] = {
    {"target_modules", PEFT_PARAM_LIST, "q_proj v_proj", NULL, "projections that get a bias"},
};

static const peft_method_desc bb_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "test.broken_backward",
    .name = "A bias with half its gradient",
    .version = "1.0.0",
    .description = "peft check must catch its backward",
    .params = bb_params,
    .n_params = 1,
    .vt = &bb_vt,
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &bb_desc);
