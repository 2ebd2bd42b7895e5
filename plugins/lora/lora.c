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
    float *scratch;  /* plugin-owned work space, grown on demand */
    uint64_t scratch_cap;
};

static float *scratch(struct peft_instance *self, uint64_t n) {
    if (n > self->scratch_cap) {
        float *p = realloc(self->scratch, n * sizeof(float));
        if (!p) return NULL;
        self->scratch = p;
        self->scratch_cap = n;
    }
    return self->scratch;
}

static peft_status lora_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    int64_t r = peft_kv_int(cfg, n_cfg, "r", 8);
    double alpha = peft_kv_float(cfg, n_cfg, "lora_alpha", 8.0);
    double p = peft_kv_float(cfg, n_cfg, "lora_dropout", 0.0);
    if (r <= 0 || r > 65536) {
        peft_logf(api, h, PEFT_LOG_ERROR, "r must be in 1..65536, got %lld", (long long)r);
        return PEFT_E_CONFIG;
    }
    if (!(p >= 0.0 && p < 1.0)) {
        peft_logf(api, h, PEFT_LOG_ERROR, "lora_dropout must be in [0, 1), got %g", p);
        return PEFT_E_CONFIG;
    }
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->sites = calloc(mi.n_sites + 1, sizeof *self->sites);
    self->slot = malloc((mi.n_sites + 1) * sizeof *self->slot);
    if (!self->sites || !self->slot) {
        free(self->sites);
        free(self->slot);
        free(self);
        return PEFT_E_NOMEM;
    }
    for (uint32_t i = 0; i < mi.n_sites; i++) self->slot[i] = -1;
    self->api = api;
    self->h = h;
    self->r = (uint32_t)r;
    self->dropout = (float)p;
    int rslora = peft_kv_bool(cfg, n_cfg, "use_rslora", 0);
    self->s = (float)(alpha / (rslora ? sqrt((double)r) : (double)r));
    *out = self;
    return PEFT_OK;
}

static void lora_destroy(peft_instance *self) {
    free(self->sites);
    free(self->slot);
    free(self->scratch);
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
    char name[192];
    float bound = 1.0f / sqrtf((float)si.d_in); /* kaiming_uniform(a = sqrt 5) on (r, d_in) */
    snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", si.name);
    peft_tensor_desc a = {
        .struct_size = sizeof a, .name = name, .site = (int32_t)site, .ndim = 2,
        .shape = {self->r, si.d_in, 0, 0}, /* (r, d_in) */
        .init = PEFT_INIT_UNIFORM, .init_a = -bound, .init_b = bound,
        .flags = PEFT_TENSOR_TRAINABLE,
    };
    st = api->tensor_register(self->h, &a, &ls->a);
    if (st != PEFT_OK) return st;
    snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", si.name);
    peft_tensor_desc b = {
        .struct_size = sizeof b, .name = name, .site = (int32_t)site, .ndim = 2,
        .shape = {si.d_out, self->r, 0, 0}, /* (d_out, r) */
        .init = PEFT_INIT_ZERO,
        .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NEGATE,
    };
    st = api->tensor_register(self->h, &b, &ls->b);
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
        float *xd = scratch(self, nx);
        if (!xd) return PEFT_E_NOMEM;
        for (uint64_t i = 0; i < nx; i++) xd[i] = io->x[i] * keep[i];
        xin = xd;
    }
    /* u (n, r) = xin A^T; y (n, d_out) += s u B^T */
    api->sgemm(self->h, 0, 1, n, r, d_in, 1.0f, xin, d_in, A.data, d_in, 0.0f, u, r);
    api->sgemm(self->h, 0, 1, n, d_out, r, self->s, u, r, B.data, r, 1.0f, io->y, d_out);
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
    float *work = scratch(self, (uint64_t)n * r + (drop ? nx : 0));
    if (!work) return PEFT_E_NOMEM;
    float *g = work;                      /* (n, r) dy B */
    float *xt = work + (uint64_t)n * r;   /* (n, d_in) drop(x), later (g A) */
    float s = self->s;
    api->sgemm(self->h, 0, 0, n, r, d_out, 1.0f, io->dy, d_out, B.data, r, 0.0f, g, r);
    /* dB (d_out, r) += s dy^T u */
    if (B.grad) api->sgemm(self->h, 1, 0, d_out, r, n, s, io->dy, d_out, u, r, 1.0f, B.grad, r);
    /* dA (r, d_in) += s g^T drop(x) */
    const float *xin = io->x;
    if (drop) {
        for (uint64_t i = 0; i < nx; i++) xt[i] = io->x[i] * keep[i];
        xin = xt;
    }
    if (A.grad) api->sgemm(self->h, 1, 0, r, d_in, n, s, g, r, xin, d_in, 1.0f, A.grad, d_in);
    /* dx (n, d_in) += s (g A) * keep */
    if (io->dx) {
        if (!drop) {
            api->sgemm(self->h, 0, 0, n, d_in, r, s, g, r, A.data, d_in, 1.0f, io->dx, d_in);
        } else {
            api->sgemm(self->h, 0, 0, n, d_in, r, s, g, r, A.data, d_in, 0.0f, xt, d_in);
            for (uint64_t i = 0; i < nx; i++) io->dx[i] += xt[i] * keep[i];
        }
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
    self->api->sgemm(self->h, 0, 0, ls->d_out, ls->d_in, self->r, scale * self->s, B.data,
                     self->r, A.data, ls->d_in, 1.0f, out, ls->d_in);
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
