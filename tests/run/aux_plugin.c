/*
 * aux_plugin.c: a test method ("test.aux") that exercises auxiliary passes end to end.
 *
 * In batch_begin it asks the host for pass 1 (with backward in training). Its final-hidden
 * hook, on pass 1 only, trains a selector vector w (C) to tell the batch's two tasks apart
 * from the hidden state of the last prompt token, as ConPET's selector does:
 *   loss = mean_b 0.5 (w . h_b - y_b)^2,  y_b = +1 for even task ids, -1 for odd.
 * It also counts site forwards per pass. stage_end fails the run unless pass 1 reached the
 * sites and the hidden hook, and the auxiliary loss fell below 0.7 of its first value.
 */
#include "peft/peft_plugin.h"

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    peft_tensor_id w_id;
    uint32_t d_model;
    uint64_t site_calls[2];  /* site forwards seen on pass 0 and pass 1 */
    double first_loss, last_loss;
    uint64_t losses;
};

static peft_status aux_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                              uint32_t n_cfg, peft_instance **out) {
    (void)cfg;
    (void)n_cfg;
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api;
    self->h = h;
    self->d_model = mi.d_model;
    peft_tensor_desc d = {.struct_size = sizeof d, .name = "aux.selector", .site = -1, .ndim = 1,
                          .shape = {mi.d_model}, .init = PEFT_INIT_ZERO,
                          .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY};
    st = api->tensor_register(h, &d, &self->w_id);
    if (st != PEFT_OK) {
        free(self);
        return st;
    }
    *out = self;
    return PEFT_OK;
}

static void aux_destroy(peft_instance *self) { free(self); }

static peft_status aux_attach(peft_instance *self, uint32_t site) {
    (void)self;
    (void)site;
    return PEFT_OK; /* every site: forward counts the passes that reach it */
}

static peft_status aux_batch_begin(peft_instance *self, const peft_batch_info *b) {
    return self->api->run_pass(self->h, 1, b->training);
}

static peft_status aux_forward(peft_instance *self, const peft_forward_io *io) {
    self->site_calls[io->pass == 1]++;
    return PEFT_OK;
}

/* For each example: e = w . h_last - y. */
static void residuals(peft_instance *self, const peft_hidden_io *io, const float *w, double *e) {
    const peft_batch_info *b = io->batch;
    for (uint32_t i = 0; i < b->batch; i++) {
        const float *h = io->h + ((size_t)i * b->seq + (size_t)(b->prompt_len[i] - 1)) * self->d_model;
        double dot = 0;
        for (uint32_t c = 0; c < self->d_model; c++) dot += (double)w[c] * h[c];
        e[i] = dot - ((b->example_task[i] % 2) ? -1.0 : 1.0);
    }
}

static peft_status aux_hidden_forward(peft_instance *self, const peft_hidden_io *io) {
    if (io->pass != 1) return PEFT_OK;
    peft_tensor_view w;
    peft_status st = self->api->tensor_view(self->h, self->w_id, &w);
    if (st != PEFT_OK) return st;
    double e[1024], loss = 0;
    uint32_t B = io->batch->batch;
    if (B > 1024) return PEFT_E_INVALID_ARG;
    residuals(self, io, w.data, e);
    for (uint32_t i = 0; i < B; i++) loss += 0.5 * e[i] * e[i] / B;
    *io->loss += (float)loss;
    if (io->batch->training) {
        if (self->losses == 0) self->first_loss = loss;
        self->last_loss = loss;
        self->losses++;
    }
    return PEFT_OK;
}

static peft_status aux_hidden_backward(peft_instance *self, const peft_hidden_io *io) {
    if (io->pass != 1) return PEFT_OK;
    peft_tensor_view w;
    peft_status st = self->api->tensor_view(self->h, self->w_id, &w);
    if (st != PEFT_OK) return st;
    const peft_batch_info *b = io->batch;
    double e[1024];
    residuals(self, io, w.data, e);
    for (uint32_t i = 0; i < b->batch; i++) {
        size_t row = (size_t)i * b->seq + (size_t)(b->prompt_len[i] - 1);
        const float *h = io->h + row * self->d_model;
        float *dh = io->dh + row * self->d_model;
        float g = (float)(e[i] / b->batch);
        for (uint32_t c = 0; c < self->d_model; c++) {
            w.grad[c] += g * h[c];
            dh[c] += g * w.data[c];
        }
    }
    return PEFT_OK;
}

static peft_status aux_stage_end(peft_instance *self) {
    if (self->site_calls[1] == 0 || self->site_calls[0] == 0 || self->losses == 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR,
                  "auxiliary pass not seen: %llu site calls on pass 0, %llu on pass 1, %llu losses",
                  (unsigned long long)self->site_calls[0], (unsigned long long)self->site_calls[1],
                  (unsigned long long)self->losses);
        return PEFT_E_INTERNAL;
    }
    if (!(self->last_loss < 0.7 * self->first_loss)) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR,
                  "auxiliary loss did not fall: %.4f at the first step, %.4f at the last",
                  self->first_loss, self->last_loss);
        return PEFT_E_INTERNAL;
    }
    peft_logf(self->api, self->h, PEFT_LOG_INFO, "auxiliary loss %.4f -> %.4f", self->first_loss,
              self->last_loss);
    return PEFT_OK;
}

static const peft_method_vtable aux_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = aux_create,
    .destroy = aux_destroy,
    .attach = aux_attach,
    .batch_begin = aux_batch_begin,
    .forward = aux_forward,
    .hidden_forward = aux_hidden_forward,
    .hidden_backward = aux_hidden_backward,
    .stage_end = aux_stage_end,
};

static const peft_method_desc aux_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "test.aux",
    .name = "auxiliary-pass probe",
    .version = "1.0.0",
    .description = "trains a task selector through an auxiliary pass (test only)",
    .vt = &aux_vt,
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &aux_desc);
