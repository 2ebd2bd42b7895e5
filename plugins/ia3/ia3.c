/*
 * ia3.c: (IA)3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
 * Cheaper than In-Context Learning") as a plugin ("ia3"), with HF PEFT's names, shapes and
 * defaults.
 *
 * Contract. At each matched site (W: (d_out, d_in)) one trainable vector l, initialised to
 * ones, named as HF PEFT saves it, "base_model.model.<site>.ia3_l":
 *   - a site listed in feedforward_modules (default down_proj) scales its input:
 *       l (1, d_in),   y = (x * l) W^T       through the host's input hook (ABI 1.1), so
 *                                             the product runs once, on the scaled input;
 *   - any other targeted site (default k_proj, v_proj) scales its output:
 *       l (d_out, 1),  y = (x W^T) * l       (forward rewrites y, as ABI 1.1 allows).
 * Backward, with dy = dL/dy:
 *   input scaling:   the host hands dL/dx' for x' = x * l;  dl += sum_rows dL/dx' * x,
 *                    dx = dL/dx' * l;
 *   output scaling:  dl += sum_rows dy * (x W^T)  (x W^T kept from the forward), and dx,
 *                    which holds dy W, becomes (l * dy) W = dy W + ((l - 1) * dy) W: one
 *                    extra product with W, at sites whose d_out is small in grouped-query
 *                    attention (k_proj, v_proj).
 * The vectors are exempt from weight decay: decay would pull a scale towards 0, not 1.
 *
 * delta_weight: W' = diag(l) W (output) or W diag(l) (input), so dW = (l - 1) * W by rows or
 * columns, exact: the method is mergeable. Negation maps l to 2 - l, which negates dW
 * exactly (dW is linear in l - 1). Factor-space arithmetic (averaging the l of several
 * adapters, PEM's (IA)3 composition) is offered.
 */
#include <stdlib.h>

#include "peft/peft_lowrank.h"
#include "peft/peft_plugin.h"

struct ia3_site {
    uint32_t site, d_in, d_out;
    int input;            /* a feedforward module: l scales the input */
    const float *w;       /* (d_out, d_in) the site's weight (site_info.weight) */
    peft_tensor_id l;     /* (d_in) or (d_out) */
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    char feedforward[512]; /* the feedforward_modules key: words */
    struct ia3_site *sites;
    uint32_t n_sites;
    int32_t *slot;         /* (model sites) index into sites, or -1 */
    peft_scratch work;     /* plugin-owned work space, grown on demand */
};

/* HF PEFT's list matching: a word equals the site's kind or is a suffix of its name after a
 * dot. */
static int listed(const char *words, const char *name, const char *kind) {
    char w[256];
    for (const char *p = words; *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, " ,");
        if (n == 0) break;
        if (n < sizeof w) {
            memcpy(w, p, n);
            w[n] = 0;
            size_t ln = strlen(name);
            if (strcmp(w, kind) == 0 || strcmp(w, "all-linear") == 0 ||
                (ln > n && strcmp(name + ln - n, w) == 0 && name[ln - n - 1] == '.'))
                return 1;
        }
        p += n;
    }
    return 0;
}

static peft_status ia3_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                              uint32_t n_cfg, peft_instance **out) {
    const char *ff = peft_kv_get(cfg, n_cfg, "feedforward_modules");
    if (!ff) ff = "";
    if (strlen(ff) >= sizeof(((struct peft_instance *)0)->feedforward)) {
        peft_logf(api, h, PEFT_LOG_ERROR, "feedforward_modules is too long");
        return PEFT_E_CONFIG;
    }
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    if (peft_site_table_new(mi.n_sites, sizeof *self->sites, (void **)&self->sites, &self->slot)) {
        free(self);
        return PEFT_E_NOMEM;
    }
    self->api = api;
    self->h = h;
    strcpy(self->feedforward, ff);
    *out = self;
    return PEFT_OK;
}

static void ia3_destroy(peft_instance *self) {
    free(self->sites);
    free(self->slot);
    peft_scratch_free(&self->work);
    free(self);
}

static peft_status ia3_attach(peft_instance *self, uint32_t site) {
    const peft_host_api *api = self->api;
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    if (!si.weight) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "%s: the host gives no weight", si.name);
        return PEFT_E_UNSUPPORTED;
    }
    struct ia3_site *s = &self->sites[self->n_sites];
    s->site = site;
    s->d_in = si.d_in;
    s->d_out = si.d_out;
    s->w = si.weight;
    s->input = listed(self->feedforward, si.name, si.kind);
    char name[192];
    snprintf(name, sizeof name, "base_model.model.%s.ia3_l", si.name);
    peft_tensor_desc d = {
        .struct_size = sizeof d, .name = name, .site = (int32_t)site, .ndim = 2,
        /* HF PEFT's shapes: (1, d_in) for a feedforward module, (d_out, 1) otherwise */
        .shape = {s->input ? 1 : si.d_out, s->input ? si.d_in : 1, 0, 0},
        .init = PEFT_INIT_CONST, .init_a = 1.0f,
        .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY,
    };
    st = api->tensor_register(self->h, &d, &s->l);
    if (st != PEFT_OK) return st;
    self->slot[site] = (int32_t)self->n_sites++;
    return PEFT_OK;
}

/* The site's slot and the view of its l. */
static peft_status site_view(peft_instance *self, uint32_t site, struct ia3_site **s,
                             peft_tensor_view *l) {
    if (self->slot[site] < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    *s = &self->sites[self->slot[site]];
    return self->api->tensor_view(self->h, (*s)->l, l);
}

static uint64_t ia3_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows) {
    const struct ia3_site *s = self->slot[site] >= 0 ? &self->sites[self->slot[site]] : NULL;
    return s && !s->input ? (uint64_t)n_rows * s->d_out : 0; /* x W^T for dl */
}

/* ---- output scaling ----------------------------------------------------------------------- */

static peft_status ia3_forward(peft_instance *self, const peft_forward_io *io) {
    struct ia3_site *s;
    peft_tensor_view l;
    peft_status st = site_view(self, io->site, &s, &l);
    if (st != PEFT_OK || s->input) return st;
    uint32_t d = s->d_out;
    for (uint64_t r = 0; r < io->n_rows; r++) {
        float *y = io->y + r * d, *keep = io->acts + r * d; /* (d_out) */
        for (uint32_t o = 0; o < d; o++) {
            keep[o] = y[o];
            y[o] *= l.data[o];
        }
    }
    return PEFT_OK;
}

static peft_status ia3_backward(peft_instance *self, const peft_backward_io *io) {
    struct ia3_site *s;
    peft_tensor_view l;
    peft_status st = site_view(self, io->site, &s, &l);
    if (st != PEFT_OK || s->input) return st;
    uint32_t n = io->n_rows, d_out = s->d_out, d_in = s->d_in;
    if (l.grad)
        for (uint64_t r = 0; r < n; r++) /* dl += sum_rows dy * (x W^T) */
            for (uint32_t o = 0; o < d_out; o++)
                l.grad[o] += io->dy[r * d_out + o] * io->acts[r * d_out + o];
    if (!io->dx) return PEFT_OK;
    float *g = peft_scratch_get(&self->work, (uint64_t)n * d_out); /* (n, d_out) (l - 1) * dy */
    if (!g) return PEFT_E_NOMEM;
    for (uint64_t r = 0; r < n; r++)
        for (uint32_t o = 0; o < d_out; o++)
            g[r * d_out + o] = (l.data[o] - 1.0f) * io->dy[r * d_out + o];
    /* dx (n, d_in) += g W */
    self->api->sgemm(self->h, 0, 0, n, d_in, d_out, 1.0f, g, d_out, s->w, d_in, 1.0f, io->dx,
                     d_in);
    return PEFT_OK;
}

/* ---- input scaling ------------------------------------------------------------------------ */

static peft_status ia3_input_forward(peft_instance *self, const peft_input_io *io) {
    struct ia3_site *s;
    peft_tensor_view l;
    peft_status st = site_view(self, io->site, &s, &l);
    if (st != PEFT_OK || !s->input) return st;
    for (uint64_t r = 0; r < io->n_rows; r++) /* x' = x * l (x_out holds x) */
        for (uint32_t c = 0; c < s->d_in; c++) io->x_out[r * s->d_in + c] *= l.data[c];
    return PEFT_OK;
}

static peft_status ia3_input_backward(peft_instance *self, const peft_input_io *io) {
    struct ia3_site *s;
    peft_tensor_view l;
    peft_status st = site_view(self, io->site, &s, &l);
    if (st != PEFT_OK || !s->input) return st;
    uint32_t d = s->d_in;
    for (uint64_t r = 0; r < io->n_rows; r++) {
        float *dx = io->dx + r * d;
        const float *x = io->x + r * d;
        for (uint32_t c = 0; c < d; c++) {
            if (l.grad) l.grad[c] += dx[c] * x[c];
            dx[c] *= l.data[c];
        }
    }
    return PEFT_OK;
}

/* ---- arithmetic --------------------------------------------------------------------------- */

static peft_status ia3_delta_weight(peft_instance *self, uint32_t site, float scale,
                                    float *out) {
    struct ia3_site *s;
    peft_tensor_view l;
    peft_status st = site_view(self, site, &s, &l);
    if (st != PEFT_OK) return st;
    /* out (d_out, d_in) += scale * (l - 1) * W, l along rows (output) or columns (input) */
    for (uint64_t o = 0; o < s->d_out; o++)
        for (uint64_t c = 0; c < s->d_in; c++) {
            float f = (s->input ? l.data[c] : l.data[o]) - 1.0f;
            out[o * s->d_in + c] += scale * f * s->w[o * s->d_in + c];
        }
    return PEFT_OK;
}

static peft_status ia3_negate(peft_instance *self) {
    for (uint32_t i = 0; i < self->n_sites; i++) {
        peft_tensor_view l;
        peft_status st = self->api->tensor_view(self->h, self->sites[i].l, &l);
        if (st != PEFT_OK) return st;
        for (uint64_t j = 0; j < l.numel; j++) l.data[j] = 2.0f - l.data[j];
    }
    return PEFT_OK;
}

static const peft_param_spec ia3_params[] = {
    {"target_modules", PEFT_PARAM_LIST, "k_proj v_proj down_proj", NULL,
     "sites to adapt: kinds (k_proj ...), name suffixes, or all-linear (HF PEFT's llama "
     "default: k_proj v_proj down_proj)"},
    {"feedforward_modules", PEFT_PARAM_LIST, "down_proj", NULL,
     "the targeted sites whose input is scaled (the others scale their output), as HF "
     "PEFT's feedforward_modules"},
};

static const peft_method_vtable ia3_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = ia3_create,
    .destroy = ia3_destroy,
    .attach = ia3_attach,
    .act_floats = ia3_act_floats,
    .forward = ia3_forward,
    .backward = ia3_backward,
    .delta_weight = ia3_delta_weight,
    .negate = ia3_negate,
    .input_forward = ia3_input_forward,
    .input_backward = ia3_input_backward,
};

static const char *const ia3_features[] = {PEFT_FEATURE_MERGEABLE, PEFT_FEATURE_HF_PEFT,
                                           PEFT_FEATURE_FACTOR_MERGE, NULL};

static const peft_method_desc ia3_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "ia3",
    .name = "(IA)3",
    .version = "1.0.0",
    .description = "learned scaling of the output of k_proj and v_proj and of the input of "
                   "down_proj (HF PEFT layout)",
    .features = ia3_features,
    .params = ia3_params,
    .n_params = sizeof ia3_params / sizeof ia3_params[0],
    .vt = &ia3_vt,
    .license = "MIT",
    .url = "https://arxiv.org/abs/2205.05638",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &ia3_desc);
