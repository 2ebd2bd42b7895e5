/*
 * lora.c: LoRA (Hu et al. 2021) as a plugin ("lora"), in the HF PEFT layout.
 *
 * Contract. At each matched site (W: (d_out, d_in)) two trainable tensors are registered,
 * named as HF PEFT saves them:
 *   A  "base_model.model.<site>.lora_A.weight"  (r, d_in)   U(-1/sqrt(d_in), 1/sqrt(d_in))
 *   B  "base_model.model.<site>.lora_B.weight"  (d_out, r)  zero, flagged NEGATE
 * and the site computes y = x W^T + s * drop(x) A^T B^T with s = lora_alpha / r, or
 * lora_alpha / sqrt(r) with use_rslora. Dropout (training only) zeroes input entries with
 * probability p and scales the kept ones by 1 / (1 - p), drawn from the host's stream.
 *
 * Backward, with xd = drop(x), u = xd A^T (n_rows, r) and g = dy B (n_rows, r):
 *   dB += s dy^T u,   dA += s g^T xd,   dx += s (g A) * keep   (keep = the scaled mask).
 * delta_weight: out += scale * s * B A, exact, so the method is mergeable. Negation flips B
 * (the host does it from the NEGATE flag).
 *
 * Activation cache per site and pass: u (n_rows, r), then, when lora_dropout > 0, the scaled
 * keep mask (n_rows, d_in). Every product goes through the host's sgemm.
 */
#include <math.h>
#include <stdlib.h>

#include "peft/peft_lowrank.h"
#include "peft/peft_plugin.h"
#include "peft/peft_site_weight.h"

struct lora_site {
    uint32_t site, d_in, d_out;
    peft_tensor_id a, b;
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    uint32_t r;
    float dropout;   /* p in [0, 1) */
    float s;         /* alpha / r, or alpha / sqrt(r) */
    struct lora_site *sites;
    uint32_t n_sites;
    int32_t *slot;   /* (model sites) index into sites, or -1 */
    peft_scratch work; /* plugin-owned work space, grown on demand */
};

static peft_status lora_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    peft_lowrank_keys k;
    peft_status st = peft_lowrank_read_keys(api, h, cfg, n_cfg, 8, 8.0, &k);
    if (st != PEFT_OK) return st;
    peft_model_info mi = {.struct_size = sizeof mi};
    if ((st = api->model_info(h, &mi)) != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    if (peft_site_table_new(mi.n_sites, sizeof *self->sites, (void **)&self->sites, &self->slot)) {
        free(self);
        return PEFT_E_NOMEM;
    }
    self->api = api;
    self->h = h;
    self->r = k.r;
    self->dropout = k.dropout;
    self->s = k.s;
    *out = self;
    return PEFT_OK;
}

static void lora_destroy(peft_instance *self) {
    free(self->sites);
    free(self->slot);
    peft_scratch_free(&self->work);
    free(self);
}

static peft_status lora_attach(peft_instance *self, uint32_t site) {
    const peft_host_api *api = self->api;
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    struct lora_site *ls = &self->sites[self->n_sites];
    ls->site = site;
    ls->d_in = si.d_in;
    ls->d_out = si.d_out;
    char a_name[192], b_name[192];
    snprintf(a_name, sizeof a_name, "base_model.model.%s.lora_A.weight", si.name);
    snprintf(b_name, sizeof b_name, "base_model.model.%s.lora_B.weight", si.name);
    st = peft_lowrank_register(api, self->h, (int32_t)site, si.d_in, si.d_out, self->r, a_name,
                               PEFT_TENSOR_TRAINABLE, b_name,
                               PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NEGATE, NULL, &ls->a, &ls->b);
    if (st != PEFT_OK) return st;
    self->slot[site] = (int32_t)self->n_sites++;
    return PEFT_OK;
}

/* The site's slot and the views of A and B. */
static peft_status site_views(peft_instance *self, uint32_t site, struct lora_site **ls,
                              peft_tensor_view *a, peft_tensor_view *b) {
    if (self->slot[site] < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    *ls = &self->sites[self->slot[site]];
    peft_status st = self->api->tensor_view(self->h, (*ls)->a, a);
    return st != PEFT_OK ? st : self->api->tensor_view(self->h, (*ls)->b, b);
}

static uint64_t lora_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows) {
    uint64_t d_in = self->slot[site] >= 0 ? self->sites[self->slot[site]].d_in : 0;
    return (uint64_t)n_rows * (self->r + (self->dropout > 0.0f ? d_in : 0));
}

static peft_status lora_forward(peft_instance *self, const peft_forward_io *io) {
    const peft_host_api *api = self->api;
    struct lora_site *ls;
    peft_tensor_view A, B;
    peft_status st = site_views(self, io->site, &ls, &A, &B);
    if (st != PEFT_OK) return st;
    uint32_t n = io->n_rows, r = self->r, d_in = ls->d_in, d_out = ls->d_out;
    uint64_t nx = (uint64_t)n * d_in;
    float *u = io->acts;            /* (n, r) */
    const float *xin = io->x;       /* (n, d_in): x, or drop(x) */
    if (self->dropout > 0.0f) {
        float *keep = io->acts + (uint64_t)n * r; /* (n, d_in) 0 or 1/(1-p) */
        float p = self->dropout, kept = 1.0f / (1.0f - p);
        if (io->training) {
            api->rng_uniform(self->h, keep, nx, 0.0f, 1.0f);
            for (uint64_t i = 0; i < nx; i++) keep[i] = keep[i] >= p ? kept : 0.0f;
        } else {
            for (uint64_t i = 0; i < nx; i++) keep[i] = 1.0f;
        }
        float *xd = peft_scratch_get(&self->work, nx);
        if (!xd) return PEFT_E_NOMEM;
        for (uint64_t i = 0; i < nx; i++) xd[i] = io->x[i] * keep[i];
        xin = xd;
    }
    /* u (n, r) = xin A^T; y (n, d_out) += s u B^T */
    peft_lowrank_forward(api, self->h, A.data, B.data, r, self->s, xin, io->y, u, n, d_in, d_out);
    return PEFT_OK;
}

static peft_status lora_backward(peft_instance *self, const peft_backward_io *io) {
    const peft_host_api *api = self->api;
    struct lora_site *ls;
    peft_tensor_view A, B;
    peft_status st = site_views(self, io->site, &ls, &A, &B);
    if (st != PEFT_OK) return st;
    uint32_t n = io->n_rows, r = self->r, d_in = ls->d_in, d_out = ls->d_out;
    uint64_t nx = (uint64_t)n * d_in;
    int drop = self->dropout > 0.0f;
    const float *u = io->acts;                               /* (n, r) */
    const float *keep = drop ? io->acts + (uint64_t)n * r : NULL; /* (n, d_in) */
    float *work = peft_scratch_get(&self->work, (uint64_t)n * r + (drop ? nx : 0));
    if (!work) return PEFT_E_NOMEM;
    float *g = work;                      /* (n, r) dy B */
    float *xt = work + (uint64_t)n * r;   /* (n, d_in) drop(x), later (g A) */
    float s = self->s;
    const float *xin = io->x;
    if (drop) {
        for (uint64_t i = 0; i < nx; i++) xt[i] = io->x[i] * keep[i];
        xin = xt;
    }
    /* g = dy B; dB += s dy^T u; dA += s g^T drop(x); without dropout dx += s g A */
    peft_lowrank_backward(api, self->h, &A, &B, r, s, xin, io->dy, drop ? NULL : io->dx, u, g, n,
                          d_in, d_out);
    /* with dropout, dx (n, d_in) += s (g A) * keep */
    if (io->dx && drop) {
        api->sgemm(self->h, 0, 0, n, d_in, r, s, g, r, A.data, d_in, 0.0f, xt, d_in);
        for (uint64_t i = 0; i < nx; i++) io->dx[i] += xt[i] * keep[i];
    }
    return PEFT_OK;
}

static peft_status lora_delta_weight(peft_instance *self, uint32_t site, float scale,
                                     float *out) {
    struct lora_site *ls;
    peft_tensor_view A, B;
    peft_status st = site_views(self, site, &ls, &A, &B);
    if (st != PEFT_OK) return st;
    /* out (d_out, d_in) += scale * s * B (d_out, r) A (r, d_in) */
    peft_lowrank_delta(self->api, self->h, A.data, B.data, self->r, scale * self->s, out,
                       ls->d_in, ls->d_out);
    return PEFT_OK;
}

static const peft_param_spec lora_params[] = {
    {"r", PEFT_PARAM_INT, "8", NULL, "rank of the update"},
    {"lora_alpha", PEFT_PARAM_FLOAT, "8", NULL, "scale numerator: s = lora_alpha / r"},
    {"lora_dropout", PEFT_PARAM_FLOAT, "0.0", NULL,
     "dropout probability on the adapter's input, training only"},
    {"target_modules", PEFT_PARAM_LIST, "q_proj v_proj", NULL,
     "sites to adapt: kinds (q_proj ...), name suffixes, or all-linear"},
    {"use_rslora", PEFT_PARAM_BOOL, "false", NULL, "rank-stabilised scale lora_alpha / sqrt(r)"},
};

static const peft_method_vtable lora_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = lora_create,
    .destroy = lora_destroy,
    .attach = lora_attach,
    .act_floats = lora_act_floats,
    .forward = lora_forward,
    .backward = lora_backward,
    .delta_weight = lora_delta_weight,
};

static const char *const lora_features[] = {PEFT_FEATURE_MERGEABLE, PEFT_FEATURE_HF_PEFT,
                                            PEFT_FEATURE_WEIGHT_ON_REQUEST,
                                            PEFT_FEATURE_FACTOR_MERGE, NULL};

static const peft_method_desc lora_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "lora",
    .name = "LoRA",
    .version = "1.0.0",
    .description = "low-rank update s * B A of each targeted weight (HF PEFT layout)",
    .features = lora_features,
    .params = lora_params,
    .n_params = sizeof lora_params / sizeof lora_params[0],
    .vt = &lora_vt,
    .license = "MIT",
    .url = "https://arxiv.org/abs/2106.09685",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &lora_desc);
