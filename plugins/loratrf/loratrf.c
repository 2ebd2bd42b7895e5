/*
 * loratrf.c: LoRATRF ("Low-Rank Adaptation with Task-Relevant Feature Enhancement", Li et al.
 * 2024) as a plugin ("loratrf"): LoRA plus a learned, input-dependent task-aware filter.
 *
 * No code or equations of LoRATRF are public: the paper's abstract names a "task-aware filter"
 * that "selectively extracts" task-relevant features from hidden representations, and no more.
 * What follows is the project's documented reconstruction (README "LoRATRF (a reconstruction)"), not the paper's
 * method.
 *
 * Contract. At each matched site (W: (d_out, d_in)) the LoRA tensors of plugins/lora are
 * registered under the same HF PEFT names, plus the filter:
 *   A    "base_model.model.<site>.lora_A.weight"      (r, d_in)   U(-1/sqrt(d_in), 1/sqrt(d_in))
 *   B    "base_model.model.<site>.lora_B.weight"      (d_out, r)  zero, flagged NEGATE
 *   W_f  "base_model.model.<site>.trf_filter.weight"  f1: (r, r), f2: (d_out)   zero
 *   b_f  "base_model.model.<site>.trf_filter.bias"    f1: (r),    f2: (d_out)   filter_bias_init
 * With s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora) and xd = drop(x):
 *   f1 (default), a gate on the low-rank features before B:
 *     z = xd A^T (n_rows, r),  a = z W_f^T + b_f,  g = sigmoid(a),  y += s (g * z) B^T
 *     r^2 + r filter entries per site.
 *   f2, a gate on the output computed from the frozen layer's output h0 = x W^T (the y the
 *   hook receives, before anything is added):
 *     g = sigmoid(h0 * w_f + b_f) (n_rows, d_out),  y += g * (s z B^T)
 *     2 d_out filter entries per site.
 * W_f = 0 at the start, so the initial gate is sigmoid(filter_bias_init) everywhere (0.881 at
 * the default 2); B = 0, so the initial output is the base model's.
 *
 * Backward, with G = dy:
 *   f1: dz' = s G B, dB += s G^T (g * z), da = dz' * z * g (1 - g), dW_f += da^T z,
 *       db_f += sum_rows da, dz = dz' * g + da W_f, dA += dz^T xd, dx += (dz A) * keep.
 *   f2: D = s z B^T, da = G * D * g (1 - g), dw_f += sum_rows da * h0, db_f += sum_rows da,
 *       then LoRA's gradients from G' = G * g: dB += s G'^T z, dA += s (G' B)^T xd,
 *       dx += s (G' B A) * keep; and the path through h0 = x W^T: dx += (da * w_f) W.
 * delta_weight: refused (PEFT_E_UNSUPPORTED). Both gates depend on the input, so there is no
 * fixed dW and the adapter cannot be merged into the weights. Negation flips B, which negates
 * the adapter's output exactly (the gates do not depend on B).
 *
 * Activation cache per site and pass: z (n_rows, r), then g (n_rows, r) for f1 or h0
 * (n_rows, d_out) for f2, then, when lora_dropout > 0, the scaled keep mask (n_rows, d_in).
 * Every product goes through the host's sgemm.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "peft/peft_lowrank.h"
#include "peft/peft_plugin.h"
#include "peft/peft_site_weight.h"

enum filter_kind { FILTER_F1, FILTER_F2 };

/* Beyond this the sigmoid's slope is below 1.2e-7: the gate could not learn. */
#define MAX_BIAS_INIT 16.0

struct trf_site {
    uint32_t site, d_in, d_out;
    const float *w;   /* (d_out, d_in) the site's live weight, for f2's path through h0 */
    float *w_own;     /* NULL, or w widened into our own buffer: a weight the host keeps in
                         16 bits comes as NULL (weight-on-request), and f2 reads it at every
                         backward */
    peft_tensor_id a, b, fw, fb;
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    uint32_t r;
    enum filter_kind filter;
    float bias_init; /* b_f at the start */
    float dropout;   /* p in [0, 1) */
    float s;         /* alpha / r, or alpha / sqrt(r) */
    struct trf_site *sites;
    uint32_t n_sites;
    int32_t *slot;   /* (model sites) index into sites, or -1 */
    peft_scratch work; /* plugin-owned work space, grown on demand */
};

struct views {
    struct trf_site *ls;
    peft_tensor_view A, B, Wf, bf;
};

static float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

static float *scratch(struct peft_instance *self, uint64_t n) {
    return peft_scratch_get(&self->work, n);
}

static const char *filter_name(const struct peft_instance *self) {
    return self->filter == FILTER_F1 ? "f1" : "f2";
}

static peft_status trf_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                              uint32_t n_cfg, peft_instance **out) {
    peft_lowrank_keys k;
    peft_status st = peft_lowrank_read_keys(api, h, cfg, n_cfg, 8, 8.0, &k);
    if (st != PEFT_OK) return st;
    double b0 = peft_kv_float(cfg, n_cfg, "filter_bias_init", 2.0);
    const char *filter = peft_kv_get(cfg, n_cfg, "filter");
    if (!filter) filter = "f1";
    if (strcmp(filter, "f1") != 0 && strcmp(filter, "f2") != 0) {
        peft_logf(api, h, PEFT_LOG_ERROR, "filter must be f1 or f2, got '%s'", filter);
        return PEFT_E_CONFIG;
    }
    if (!(fabs(b0) <= MAX_BIAS_INIT)) {
        peft_logf(api, h, PEFT_LOG_ERROR,
                  "filter_bias_init must be in [-%g, %g] (beyond it the gate is saturated "
                  "and cannot learn), got %g", MAX_BIAS_INIT, MAX_BIAS_INIT, b0);
        return PEFT_E_CONFIG;
    }
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
    self->filter = strcmp(filter, "f1") == 0 ? FILTER_F1 : FILTER_F2;
    self->bias_init = (float)b0;
    self->dropout = k.dropout;
    self->s = k.s;
    *out = self;
    return PEFT_OK;
}

static void trf_destroy(peft_instance *self) {
    for (uint32_t i = 0; i < self->n_sites; i++) free(self->sites[i].w_own);
    free(self->sites);
    free(self->slot);
    peft_scratch_free(&self->work);
    free(self);
}

static peft_status reg(struct peft_instance *self, const char *site_name, const char *suffix,
                       uint32_t site, uint32_t ndim, uint64_t d0, uint64_t d1, int32_t init,
                       float ia, float ib, uint32_t flags, peft_tensor_id *id) {
    char name[192];
    snprintf(name, sizeof name, "base_model.model.%s.%s", site_name, suffix);
    peft_tensor_desc d = {
        .struct_size = sizeof d, .name = name, .site = (int32_t)site, .ndim = ndim,
        .shape = {d0, d1, 0, 0}, .init = init, .init_a = ia, .init_b = ib,
        .flags = PEFT_TENSOR_TRAINABLE | flags,
    };
    return self->api->tensor_register(self->h, &d, id);
}

static peft_status trf_attach(peft_instance *self, uint32_t site) {
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    struct trf_site *ls = &self->sites[self->n_sites];
    ls->site = site;
    ls->d_in = si.d_in;
    ls->d_out = si.d_out;
    ls->w = si.weight;
    ls->w_own = NULL;
    if (!ls->w && self->filter == FILTER_F2) {
        const peft_site_weight_api *sw =
            self->api->get_extension(self->h, PEFT_SITE_WEIGHT_EXTENSION);
        uint64_t numel = (uint64_t)si.d_in * si.d_out;
        if (!sw) return PEFT_E_INTERNAL; /* a host that gives NULL weights offers widen */
        if (!(ls->w_own = malloc(numel * sizeof *ls->w_own))) return PEFT_E_NOMEM;
        st = sw->widen(self->h, site, ls->w_own, numel);
        if (st != PEFT_OK) {
            free(ls->w_own);
            ls->w_own = NULL;
            return st;
        }
        ls->w = ls->w_own;
    }
    uint32_t r = self->r;
    char a_name[192], b_name[192];
    snprintf(a_name, sizeof a_name, "base_model.model.%s.lora_A.weight", si.name);
    snprintf(b_name, sizeof b_name, "base_model.model.%s.lora_B.weight", si.name);
    st = peft_lowrank_register(self->api, self->h, (int32_t)site, si.d_in, si.d_out, r, a_name,
                               PEFT_TENSOR_TRAINABLE, b_name,
                               PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NEGATE, NULL, &ls->a, &ls->b);
    int f1 = self->filter == FILTER_F1;
    if (st == PEFT_OK) /* f1: (r, r); f2: (d_out) */
        st = reg(self, si.name, "trf_filter.weight", site, f1 ? 2 : 1, f1 ? r : si.d_out,
                 f1 ? r : 0, PEFT_INIT_ZERO, 0, 0, 0, &ls->fw);
    if (st == PEFT_OK) /* f1: (r); f2: (d_out). No decay: it would pull the gate to 1/2. */
        st = reg(self, si.name, "trf_filter.bias", site, 1, f1 ? r : si.d_out, 0,
                 PEFT_INIT_CONST, self->bias_init, 0, PEFT_TENSOR_NO_DECAY, &ls->fb);
    if (st != PEFT_OK) { /* the site is not counted: destroy would not see its buffer */
        free(ls->w_own);
        ls->w_own = NULL;
        return st;
    }
    self->slot[site] = (int32_t)self->n_sites++;
    return PEFT_OK;
}

static peft_status site_views(peft_instance *self, uint32_t site, struct views *v) {
    if (self->slot[site] < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    v->ls = &self->sites[self->slot[site]];
    const peft_host_api *api = self->api;
    peft_status st = api->tensor_view(self->h, v->ls->a, &v->A);
    if (st == PEFT_OK) st = api->tensor_view(self->h, v->ls->b, &v->B);
    if (st == PEFT_OK) st = api->tensor_view(self->h, v->ls->fw, &v->Wf);
    if (st == PEFT_OK) st = api->tensor_view(self->h, v->ls->fb, &v->bf);
    return st;
}

/* Floats of the cache: z, then g (f1) or h0 (f2), then the keep mask. */
static uint64_t gate_floats(const struct peft_instance *self, const struct trf_site *ls,
                            uint32_t n_rows) {
    return (uint64_t)n_rows * (self->filter == FILTER_F1 ? self->r : ls->d_out);
}

static uint64_t trf_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows) {
    if (self->slot[site] < 0) return 0;
    const struct trf_site *ls = &self->sites[self->slot[site]];
    return (uint64_t)n_rows * self->r + gate_floats(self, ls, n_rows) +
           (self->dropout > 0.0f ? (uint64_t)n_rows * ls->d_in : 0);
}

/* The keep mask (drawn in training, all ones otherwise) and drop(x) into xd. */
static void dropout_forward(struct peft_instance *self, const peft_forward_io *io, float *keep,
                            float *xd, uint64_t nx) {
    float p = self->dropout, kept = 1.0f / (1.0f - p);
    if (io->training) {
        self->api->rng_uniform(self->h, keep, nx, 0.0f, 1.0f);
        for (uint64_t i = 0; i < nx; i++) keep[i] = keep[i] >= p ? kept : 0.0f;
    } else {
        for (uint64_t i = 0; i < nx; i++) keep[i] = 1.0f;
    }
    for (uint64_t i = 0; i < nx; i++) xd[i] = io->x[i] * keep[i];
}

static peft_status trf_forward(peft_instance *self, const peft_forward_io *io) {
    const peft_host_api *api = self->api;
    struct views v;
    peft_status st = site_views(self, io->site, &v);
    if (st != PEFT_OK) return st;
    uint32_t n = io->n_rows, r = self->r, d_in = v.ls->d_in, d_out = v.ls->d_out;
    uint64_t nr = (uint64_t)n * r, nx = (uint64_t)n * d_in, no = (uint64_t)n * d_out;
    float *z = io->acts;                                     /* (n, r) */
    float *gate = io->acts + nr;                             /* f1: g (n, r); f2: h0 (n, d_out) */
    float *keep = gate + gate_floats(self, v.ls, n);         /* (n, d_in) when dropout > 0 */
    int f1 = self->filter == FILTER_F1;
    float *work = scratch(self, (f1 ? nr : no) + (self->dropout > 0.0f ? nx : 0));
    if (!work) return PEFT_E_NOMEM;
    const float *xin = io->x;                                /* (n, d_in): x, or drop(x) */
    if (self->dropout > 0.0f) {
        float *xd = work + (f1 ? nr : no);
        dropout_forward(self, io, keep, xd, nx);
        xin = xd;
    }
    /* z (n, r) = xin A^T */
    api->sgemm(self->h, 0, 1, n, r, d_in, 1.0f, xin, d_in, v.A.data, d_in, 0.0f, z, r);
    if (f1) {
        /* g (n, r) = sigmoid(z W_f^T + b_f); y (n, d_out) += s (g * z) B^T */
        api->sgemm(self->h, 0, 1, n, r, r, 1.0f, z, r, v.Wf.data, r, 0.0f, gate, r);
        float *zg = work; /* (n, r) */
        for (uint64_t i = 0; i < nr; i++) {
            gate[i] = sigmoidf(gate[i] + v.bf.data[i % r]);
            zg[i] = gate[i] * z[i];
        }
        api->sgemm(self->h, 0, 1, n, d_out, r, self->s, zg, r, v.B.data, r, 1.0f, io->y,
                   d_out);
    } else {
        /* h0 (n, d_out) = y as it arrives; D (n, d_out) = s z B^T; y += sigmoid(h0 w_f + b_f) D */
        memcpy(gate, io->y, no * sizeof(float));
        float *D = work;
        api->sgemm(self->h, 0, 1, n, d_out, r, self->s, z, r, v.B.data, r, 0.0f, D, d_out);
        for (uint64_t i = 0; i < no; i++) {
            uint64_t o = i % d_out;
            io->y[i] += sigmoidf(gate[i] * v.Wf.data[o] + v.bf.data[o]) * D[i];
        }
    }
    return PEFT_OK;
}

/* LoRA's gradients from gz = dL/dz (n, r) (already scaled): dA += gz^T xd, dx += (gz A) keep.
 * xt (n, d_in) is work space. */
static void backward_through_a(struct peft_instance *self, const peft_backward_io *io,
                               const struct views *v, const float *gz, const float *keep,
                               float *xt) {
    const peft_host_api *api = self->api;
    uint32_t n = io->n_rows, r = self->r, d_in = v->ls->d_in;
    uint64_t nx = (uint64_t)n * d_in;
    const float *xin = io->x;
    if (keep) {
        for (uint64_t i = 0; i < nx; i++) xt[i] = io->x[i] * keep[i];
        xin = xt;
    }
    /* dA (r, d_in) += gz^T xd */
    if (v->A.grad) api->sgemm(self->h, 1, 0, r, d_in, n, 1.0f, gz, r, xin, d_in, 1.0f,
                              v->A.grad, d_in);
    /* dx (n, d_in) += (gz A) * keep */
    if (!io->dx) return;
    if (!keep) {
        api->sgemm(self->h, 0, 0, n, d_in, r, 1.0f, gz, r, v->A.data, d_in, 1.0f, io->dx, d_in);
    } else {
        api->sgemm(self->h, 0, 0, n, d_in, r, 1.0f, gz, r, v->A.data, d_in, 0.0f, xt, d_in);
        for (uint64_t i = 0; i < nx; i++) io->dx[i] += xt[i] * keep[i];
    }
}

static peft_status backward_f1(struct peft_instance *self, const peft_backward_io *io,
                               const struct views *v, float *work) {
    const peft_host_api *api = self->api;
    uint32_t n = io->n_rows, r = self->r, d_out = v->ls->d_out;
    uint64_t nr = (uint64_t)n * r;
    const float *z = io->acts, *g = io->acts + nr; /* (n, r) each */
    const float *keep = self->dropout > 0.0f ? g + nr : NULL;
    float *zg = work, *dzg = work + nr, *da = work + 2 * nr, *dz = work + 3 * nr; /* (n, r) */
    float s = self->s;
    for (uint64_t i = 0; i < nr; i++) zg[i] = g[i] * z[i];
    /* dB (d_out, r) += s dy^T (g * z); dz' (n, r) = s dy B */
    if (v->B.grad) api->sgemm(self->h, 1, 0, d_out, r, n, s, io->dy, d_out, zg, r, 1.0f,
                              v->B.grad, r);
    api->sgemm(self->h, 0, 0, n, r, d_out, s, io->dy, d_out, v->B.data, r, 0.0f, dzg, r);
    for (uint64_t i = 0; i < nr; i++) {
        da[i] = dzg[i] * z[i] * g[i] * (1.0f - g[i]);
        dz[i] = dzg[i] * g[i];
    }
    /* dW_f (r, r) += da^T z; db_f (r) += sum over rows of da; dz += da W_f */
    if (v->Wf.grad) api->sgemm(self->h, 1, 0, r, r, n, 1.0f, da, r, z, r, 1.0f, v->Wf.grad, r);
    if (v->bf.grad)
        for (uint64_t i = 0; i < nr; i++) v->bf.grad[i % r] += da[i];
    api->sgemm(self->h, 0, 0, n, r, r, 1.0f, da, r, v->Wf.data, r, 1.0f, dz, r);
    backward_through_a(self, io, v, dz, keep, work + 4 * nr);
    return PEFT_OK;
}

static peft_status backward_f2(struct peft_instance *self, const peft_backward_io *io,
                               const struct views *v, float *work) {
    const peft_host_api *api = self->api;
    uint32_t n = io->n_rows, r = self->r, d_in = v->ls->d_in, d_out = v->ls->d_out;
    uint64_t nr = (uint64_t)n * r, no = (uint64_t)n * d_out;
    const float *z = io->acts, *h0 = io->acts + nr;          /* (n, r), (n, d_out) */
    const float *keep = self->dropout > 0.0f ? h0 + no : NULL;
    float *gd = work, *dh0 = work + no, *gz = work + 2 * no; /* (n, d_out) x2, (n, r) */
    float s = self->s;
    const float *wf = v->Wf.data, *bf = v->bf.data;
    /* D (n, d_out) = s z B^T into gd, then per entry: da = dy D g (1 - g), gd = dy g */
    api->sgemm(self->h, 0, 1, n, d_out, r, s, z, r, v->B.data, r, 0.0f, gd, d_out);
    for (uint64_t i = 0; i < no; i++) {
        uint64_t o = i % d_out;
        float g = sigmoidf(h0[i] * wf[o] + bf[o]);
        float da = io->dy[i] * gd[i] * g * (1.0f - g);
        if (v->Wf.grad) v->Wf.grad[o] += da * h0[i];
        if (v->bf.grad) v->bf.grad[o] += da;
        dh0[i] = da * wf[o];
        gd[i] = io->dy[i] * g;
    }
    /* LoRA's gradients from gd = dL/dD: dB (d_out, r) += s gd^T z; gz (n, r) = s gd B */
    if (v->B.grad) api->sgemm(self->h, 1, 0, d_out, r, n, s, gd, d_out, z, r, 1.0f, v->B.grad,
                              r);
    api->sgemm(self->h, 0, 0, n, r, d_out, s, gd, d_out, v->B.data, r, 0.0f, gz, r);
    backward_through_a(self, io, v, gz, keep, work + 2 * no + nr);
    /* The path through h0 = x W^T: dx (n, d_in) += dh0 W */
    if (io->dx) api->sgemm(self->h, 0, 0, n, d_in, d_out, 1.0f, dh0, d_out, v->ls->w, d_in,
                           1.0f, io->dx, d_in);
    return PEFT_OK;
}

static peft_status trf_backward(peft_instance *self, const peft_backward_io *io) {
    struct views v;
    peft_status st = site_views(self, io->site, &v);
    if (st != PEFT_OK) return st;
    uint64_t n = io->n_rows, nr = n * self->r, nx = n * v.ls->d_in, no = n * v.ls->d_out;
    uint64_t need = self->filter == FILTER_F1 ? 4 * nr : 2 * no + nr;
    float *work = scratch(self, need + (self->dropout > 0.0f ? nx : 0));
    if (!work) return PEFT_E_NOMEM;
    return self->filter == FILTER_F1 ? backward_f1(self, io, &v, work)
                                     : backward_f2(self, io, &v, work);
}

static peft_status trf_delta_weight(peft_instance *self, uint32_t site, float scale,
                                    float *out) {
    (void)site;
    (void)scale;
    (void)out;
    peft_logf(self->api, self->h, PEFT_LOG_ERROR,
              "filter %s depends on the input, so the adapter cannot be merged into the "
              "weights", filter_name(self));
    return PEFT_E_UNSUPPORTED;
}

static const peft_param_spec trf_params[] = {
    {"r", PEFT_PARAM_INT, "8", NULL, "rank of the update"},
    {"lora_alpha", PEFT_PARAM_FLOAT, "8", NULL, "scale numerator: s = lora_alpha / r"},
    {"lora_dropout", PEFT_PARAM_FLOAT, "0.0", NULL,
     "dropout probability on the adapter's input, training only"},
    {"target_modules", PEFT_PARAM_LIST, "q_proj v_proj", NULL,
     "sites to adapt: kinds (q_proj ...), name suffixes, or all-linear"},
    {"use_rslora", PEFT_PARAM_BOOL, "false", NULL, "rank-stabilised scale lora_alpha / sqrt(r)"},
    {"filter", PEFT_PARAM_CHOICE, "f1", "f1|f2",
     "reconstruction, not the paper's (no public code or equations; README, LoRATRF): "
     "f1 gates the r low-rank features by sigmoid(z W_f^T + b_f), r^2 + r entries per site; "
     "f2 gates the output by sigmoid(h0 * w_f + b_f) from the frozen output h0, 2 d_out"},
    {"filter_bias_init", PEFT_PARAM_FLOAT, "2", NULL,
     "initial filter bias b0 (filter weight starts at 0): the initial gate is sigmoid(b0), "
     "0.881 at 2; in [-16, 16]"},
};

static const peft_method_vtable trf_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = trf_create,
    .destroy = trf_destroy,
    .attach = trf_attach,
    .act_floats = trf_act_floats,
    .forward = trf_forward,
    .backward = trf_backward,
    .delta_weight = trf_delta_weight,
};

static const char *const trf_features[] = {PEFT_FEATURE_HF_PEFT, PEFT_FEATURE_WEIGHT_ON_REQUEST, NULL};

static const peft_method_desc trf_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "loratrf",
    .name = "LoRATRF (reconstruction)",
    .version = "1.0.0",
    .description = "LoRA with a learned sigmoid task-aware filter; LoRATRF has no public code "
                   "or equations, this is the project's documented reconstruction (README, LoRATRF); "
                   "not mergeable",
    .features = trf_features,
    .params = trf_params,
    .n_params = sizeof trf_params / sizeof trf_params[0],
    .vt = &trf_vt,
    .license = "MIT",
    .url = "https://arxiv.org/abs/2412.09827",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &trf_desc);
