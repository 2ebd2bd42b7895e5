/*
 * dora.c: DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation") as a plugin
 * ("dora"), with HF PEFT's names and its use_dora semantics.
 *
 * Contract. At each matched site (W: (d_out, d_in)) three trainable tensors, named as HF PEFT
 * saves them:
 *   A  "base_model.model.<site>.lora_A.weight"          (r, d_in)  U(+-1/sqrt(d_in))
 *   B  "base_model.model.<site>.lora_B.weight"          (d_out, r) zero
 *   m  "base_model.model.<site>.lora_magnitude_vector"  (d_out)    the row norms of W, set in
 *                                                                  stage_begin when fresh
 * With s = lora_alpha / r (or / sqrt(r) with use_rslora), V = W + s B A and n_o = ||V_o||
 * the norm of output row o, the site computes
 *   y = (m / n) * (x W^T + s x A^T B^T)          (scaled per output column of y),
 * so the adapted weight is m * V / ||V|| by rows: a magnitude and a direction. A fresh adapter
 * (B = 0, m = ||W||) leaves the model as it is, bit for bit.
 *
 * Backward, with z = x W^T + s u B^T, u = x A^T, c = m / n:
 *   dm += sum_rows dy * z / n;  dz = c * dy;  dB += s dz^T u;  dA += s (dz B)^T x;
 *   dx = dz W + s (dz B) A, i.e. the host's dy W plus ((c - 1) * dy) W (one product with W)
 *   plus the low-rank path.
 * As HF PEFT (and the paper's section 4.3), the norm n is a constant of the backward
 * (detached): its dependence on A and B gets no gradient. exact_grad = true adds it,
 *   dV_o = -(m_o / n_o^3) (sum_rows dy_o z_o) V_o,  dB += s dV A^T,  dA += s B^T dV,
 * which is the exact gradient of the forward (what peft check verifies, see the feature
 * "surrogate-grad").
 *
 * delta_weight: m * V / n - W by rows, exact: the method is mergeable. It offers no negation
 * (no DoRA adapter has the opposite change) and no factor-space arithmetic.
 */
#include <math.h>
#include <stdlib.h>

#include "peft/peft_lowrank.h"
#include "peft/peft_plugin.h"

struct dora_site {
    uint32_t site, d_in, d_out;
    const float *w;          /* (d_out, d_in) the site's weight (site_info.weight) */
    peft_tensor_id a, b, m;
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    uint32_t r;
    float s;                 /* alpha / r, or alpha / sqrt(r) */
    int exact_grad;
    struct dora_site *sites;
    uint32_t n_sites;
    int32_t *slot;           /* (model sites) index into sites, or -1 */
    peft_scratch work, v;    /* work space; V (d_out, d_in) */
};

static peft_status dora_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
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
    self->s = k.s;
    self->exact_grad = peft_kv_bool(cfg, n_cfg, "exact_grad", 0);
    *out = self;
    return PEFT_OK;
}

static void dora_destroy(peft_instance *self) {
    free(self->sites);
    free(self->slot);
    peft_scratch_free(&self->work);
    peft_scratch_free(&self->v);
    free(self);
}

static peft_status dora_attach(peft_instance *self, uint32_t site) {
    const peft_host_api *api = self->api;
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    if (!si.weight) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "%s: the host gives no weight", si.name);
        return PEFT_E_UNSUPPORTED;
    }
    struct dora_site *ds = &self->sites[self->n_sites];
    ds->site = site;
    ds->d_in = si.d_in;
    ds->d_out = si.d_out;
    ds->w = si.weight;
    char a_name[192], b_name[192], m_name[192];
    snprintf(a_name, sizeof a_name, "base_model.model.%s.lora_A.weight", si.name);
    snprintf(b_name, sizeof b_name, "base_model.model.%s.lora_B.weight", si.name);
    snprintf(m_name, sizeof m_name, "base_model.model.%s.lora_magnitude_vector", si.name);
    st = peft_lowrank_register(api, self->h, (int32_t)site, si.d_in, si.d_out, self->r, a_name,
                               PEFT_TENSOR_TRAINABLE, b_name, PEFT_TENSOR_TRAINABLE, NULL, &ds->a,
                               &ds->b);
    if (st != PEFT_OK) return st;
    peft_tensor_desc m = {
        .struct_size = sizeof m, .name = m_name, .site = (int32_t)site, .ndim = 1,
        .shape = {si.d_out, 0, 0, 0}, /* (d_out) */
        .init = PEFT_INIT_NONE, .flags = PEFT_TENSOR_TRAINABLE,
    };
    st = api->tensor_register(self->h, &m, &ds->m);
    if (st != PEFT_OK) return st;
    self->slot[site] = (int32_t)self->n_sites++;
    return PEFT_OK;
}

struct views {
    struct dora_site *ds;
    peft_tensor_view A, B, m;
};

static peft_status site_views(peft_instance *self, uint32_t site, struct views *v) {
    if (self->slot[site] < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    v->ds = &self->sites[self->slot[site]];
    peft_status st = self->api->tensor_view(self->h, v->ds->a, &v->A);
    if (st == PEFT_OK) st = self->api->tensor_view(self->h, v->ds->b, &v->B);
    if (st == PEFT_OK) st = self->api->tensor_view(self->h, v->ds->m, &v->m);
    return st;
}

/* V (d_out, d_in) = W + s B A into the instance's buffer, and norm (d_out) its row norms. */
static const float *direction(peft_instance *self, const struct views *v, float *norm) {
    const struct dora_site *ds = v->ds;
    uint64_t nw = (uint64_t)ds->d_out * ds->d_in;
    float *V = peft_scratch_get(&self->v, nw);
    if (!V) return NULL;
    memcpy(V, ds->w, nw * sizeof(float));
    peft_lowrank_delta(self->api, self->h, v->A.data, v->B.data, self->r, self->s, V, ds->d_in,
                       ds->d_out);
    for (uint32_t o = 0; o < ds->d_out; o++) {
        double sq = 0.0;
        for (uint32_t c = 0; c < ds->d_in; c++) sq += (double)V[(uint64_t)o * ds->d_in + c] * V[(uint64_t)o * ds->d_in + c];
        norm[o] = (float)sqrt(sq);
    }
    return V;
}

/* A fresh magnitude is the row norms of W + s B A (of W, with B = 0). */
static peft_status dora_stage_begin(peft_instance *self) {
    const peft_host_api *api = self->api;
    for (uint32_t i = 0; i < self->n_sites; i++) {
        struct views v;
        peft_status st = site_views(self, self->sites[i].site, &v);
        if (st != PEFT_OK) return st;
        uint32_t origin = PEFT_ORIGIN_INIT;
        if (PEFT_HAS_FIELD(api, peft_host_api, tensor_origin) &&
            (st = api->tensor_origin(self->h, self->sites[i].m, &origin)) != PEFT_OK)
            return st;
        if (origin == PEFT_ORIGIN_LOADED) continue;
        if (!direction(self, &v, v.m.data)) return PEFT_E_NOMEM;
    }
    return PEFT_OK;
}

static uint64_t dora_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows) {
    if (self->slot[site] < 0) return 0;
    uint64_t d_out = self->sites[self->slot[site]].d_out;
    /* u (n, r), z (n, d_out), the norms n (d_out), c = m / n (d_out) */
    return (uint64_t)n_rows * (self->r + d_out) + 2 * d_out;
}

static peft_status dora_forward(peft_instance *self, const peft_forward_io *io) {
    struct views v;
    peft_status st = site_views(self, io->site, &v);
    if (st != PEFT_OK) return st;
    uint32_t n = io->n_rows, r = self->r, d_in = v.ds->d_in, d_out = v.ds->d_out;
    float *u = io->acts, *z = u + (uint64_t)n * r, *norm = z + (uint64_t)n * d_out, *c = norm + d_out;
    if (!direction(self, &v, norm)) return PEFT_E_NOMEM;
    /* z (n, d_out) = x W^T + s (x A^T) B^T */
    memcpy(z, io->y, (uint64_t)n * d_out * sizeof(float));
    peft_lowrank_forward(self->api, self->h, v.A.data, v.B.data, r, self->s, io->x, z, u, n,
                         d_in, d_out);
    for (uint32_t o = 0; o < d_out; o++) c[o] = v.m.data[o] / norm[o];
    for (uint64_t row = 0; row < n; row++)
        for (uint32_t o = 0; o < d_out; o++) io->y[row * d_out + o] = c[o] * z[row * d_out + o];
    return PEFT_OK;
}

static peft_status dora_backward(peft_instance *self, const peft_backward_io *io) {
    struct views v;
    peft_status st = site_views(self, io->site, &v);
    if (st != PEFT_OK) return st;
    const peft_host_api *api = self->api;
    uint32_t n = io->n_rows, r = self->r, d_in = v.ds->d_in, d_out = v.ds->d_out;
    const float *u = io->acts, *z = u + (uint64_t)n * r, *norm = z + (uint64_t)n * d_out;
    const float *c = norm + d_out; /* (d_out) m / n */
    float *work = peft_scratch_get(&self->work, (uint64_t)n * (d_out + r) + 2 * (uint64_t)d_out);
    if (!work) return PEFT_E_NOMEM;
    float *dz = work, *g = dz + (uint64_t)n * d_out;   /* (n, d_out) c * dy, (n, r) dz B */
    float *zdy = g + (uint64_t)n * r, *norm2 = zdy + d_out; /* (d_out) sum_rows dy z; (d_out) */
    for (uint32_t o = 0; o < d_out; o++) zdy[o] = 0.0f;
    for (uint64_t row = 0; row < n; row++)
        for (uint32_t o = 0; o < d_out; o++) {
            float dy = io->dy[row * d_out + o];
            zdy[o] += dy * z[row * d_out + o];
            dz[row * d_out + o] = c[o] * dy;
        }
    if (v.m.grad)
        for (uint32_t o = 0; o < d_out; o++) v.m.grad[o] += zdy[o] / norm[o];
    /* g = dz B; dB += s dz^T u; dA += s g^T x; dx += s g A */
    peft_lowrank_backward(api, self->h, &v.A, &v.B, r, self->s, io->x, dz, io->dx, u, g, n, d_in,
                          d_out);
    if (io->dx) { /* dx += ((c - 1) * dy) W: dz W, of which the host added dy W */
        for (uint64_t row = 0; row < n; row++)
            for (uint32_t o = 0; o < d_out; o++)
                dz[row * d_out + o] = (c[o] - 1.0f) * io->dy[row * d_out + o];
        api->sgemm(self->h, 0, 0, n, d_in, d_out, 1.0f, dz, d_out, v.ds->w, d_in, 1.0f, io->dx,
                   d_in);
    }
    if (self->exact_grad && (v.A.grad || v.B.grad)) {
        /* the norm's own gradient: dV_o = -(m_o / n_o^3) (sum_rows dy_o z_o) V_o */
        float *V = (float *)direction(self, &v, norm2); /* the forward's V: same A, B */
        if (!V) return PEFT_E_NOMEM;
        for (uint32_t o = 0; o < d_out; o++) {
            float q = -v.m.data[o] * zdy[o] / (norm[o] * norm[o] * norm[o]);
            for (uint32_t c = 0; c < d_in; c++) V[(uint64_t)o * d_in + c] *= q;
        }
        /* dB (d_out, r) += s dV A^T; dA (r, d_in) += s B^T dV */
        if (v.B.grad) api->sgemm(self->h, 0, 1, d_out, r, d_in, self->s, V, d_in, v.A.data, d_in,
                                 1.0f, v.B.grad, r);
        if (v.A.grad) api->sgemm(self->h, 1, 0, r, d_in, d_out, self->s, v.B.data, r, V, d_in,
                                 1.0f, v.A.grad, d_in);
    }
    return PEFT_OK;
}

static peft_status dora_delta_weight(peft_instance *self, uint32_t site, float scale,
                                     float *out) {
    struct views v;
    peft_status st = site_views(self, site, &v);
    if (st != PEFT_OK) return st;
    uint32_t d_in = v.ds->d_in, d_out = v.ds->d_out;
    float *norm = peft_scratch_get(&self->work, d_out);
    if (!norm) return PEFT_E_NOMEM;
    const float *V = direction(self, &v, norm);
    if (!V) return PEFT_E_NOMEM;
    /* out (d_out, d_in) += scale * (m * V / n - W) by rows */
    for (uint64_t o = 0; o < d_out; o++) {
        float co = v.m.data[o] / norm[o];
        for (uint64_t i = 0; i < d_in; i++)
            out[o * d_in + i] += scale * (co * V[o * d_in + i] - v.ds->w[o * d_in + i]);
    }
    return PEFT_OK;
}

static const peft_param_spec dora_params[] = {
    {"r", PEFT_PARAM_INT, "8", NULL, "rank of the direction's low-rank update"},
    {"lora_alpha", PEFT_PARAM_FLOAT, "8", NULL, "scale numerator: s = lora_alpha / r"},
    {"target_modules", PEFT_PARAM_LIST, "q_proj v_proj", NULL,
     "sites to adapt: kinds (q_proj ...), name suffixes, or all-linear"},
    {"use_rslora", PEFT_PARAM_BOOL, "false", NULL, "rank-stabilised scale lora_alpha / sqrt(r)"},
    {"exact_grad", PEFT_PARAM_BOOL, "false", NULL,
     "also the gradient through the weight norm, which HF PEFT and the paper detach"},
};

static const peft_method_vtable dora_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = dora_create,
    .destroy = dora_destroy,
    .attach = dora_attach,
    .stage_begin = dora_stage_begin,
    .act_floats = dora_act_floats,
    .forward = dora_forward,
    .backward = dora_backward,
    .delta_weight = dora_delta_weight,
};

static const char *const dora_features[] = {PEFT_FEATURE_MERGEABLE, PEFT_FEATURE_HF_PEFT,
                                            PEFT_FEATURE_SURROGATE_GRAD, NULL};

static const peft_method_desc dora_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "dora",
    .name = "DoRA",
    .version = "1.0.0",
    .description = "weight-decomposed LoRA: a learned magnitude per output row times the "
                   "normalised W + s B A (HF PEFT's use_dora)",
    .features = dora_features,
    .params = dora_params,
    .n_params = sizeof dora_params / sizeof dora_params[0],
    .vt = &dora_vt,
    .license = "MIT",
    .url = "https://arxiv.org/abs/2402.09353",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &dora_desc);
