/*
 * bias.c: a minimal peftkit method plugin, `com.example.bias`, built outside the peftkit
 * tree against the installed SDK alone.
 *
 * The method: a trainable bias vector b (d_out) added to the output of every targeted
 * projection,
 *     forward   y += b                      (each of the n_rows rows)
 *     backward  db += sum over rows of dy   (dx gets nothing: b does not depend on x)
 * b starts at zero (or N(0, init_std)). The host owns b, its gradient and optimizer state;
 * the plugin only registers it and reads/writes through the views the host hands out.
 * A bias is not a change of W, so delta_weight is not offered and the method does not merge.
 */
#include <peft/peft_plugin.h>
#include <peft/peft_site_weight.h>

/* What the plugin keeps per site of the model; only attached sites are used. */
struct site_bias {
    int attached;
    uint32_t d_out;
    peft_tensor_id id; /* the host's handle of b */
    float *b;          /* (d_out) host-owned, valid from stage_begin */
    float *db;         /* (d_out) host-owned gradient; NULL while frozen */
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *host;        /* valid for the instance's lifetime */
    float init_std;
    uint32_t n_sites;       /* sites in the model */
    struct site_bias *sites; /* (n_sites) */
};

// ---------------------------------------------------------------------------------------
// Create, attach, destroy

static peft_status bias_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    peft_model_info info = {.struct_size = sizeof info};
    peft_status st = api->model_info(h, &info);
    if (st != PEFT_OK) return st;
    peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api;
    self->host = h;
    self->init_std = (float)peft_kv_float(cfg, n_cfg, "init_std", 0.0);
    if (self->init_std < 0.0f) {
        peft_logf(api, h, PEFT_LOG_ERROR, "init_std: must be >= 0, got %g",
                  (double)self->init_std);
        free(self);
        return PEFT_E_CONFIG;
    }
    self->n_sites = info.n_sites;
    self->sites = calloc(info.n_sites ? info.n_sites : 1, sizeof *self->sites);
    if (!self->sites) {
        free(self);
        return PEFT_E_NOMEM;
    }
    *out = self;
    return PEFT_OK;
}

static void bias_destroy(peft_instance *self) {
    free(self->sites);
    free(self);
}

static peft_status bias_attach(peft_instance *self, uint32_t site) {
    if (site >= self->n_sites) return PEFT_E_INVALID_ARG;
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->host, site, &si);
    if (st != PEFT_OK) return st;

    char name[256]; /* copied by the host */
    snprintf(name, sizeof name, "%s.bias_delta", si.name);
    peft_tensor_desc d = {
        .struct_size = sizeof d,
        .name = name,
        .site = (int32_t)site,
        .ndim = 1,
        .shape = {si.d_out},
        .init = self->init_std > 0.0f ? PEFT_INIT_NORMAL : PEFT_INIT_ZERO,
        .init_a = 0.0f,
        .init_b = self->init_std,
        .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY | PEFT_TENSOR_NEGATE,
        .lr = 0.0f, /* the stage's learning rate */
        .lr_group = NULL,
    };
    struct site_bias *s = &self->sites[site];
    st = self->api->tensor_register(self->host, &d, &s->id);
    if (st != PEFT_OK) return st;
    s->attached = 1;
    s->d_out = si.d_out;
    return PEFT_OK;
}

// ---------------------------------------------------------------------------------------
// Views of the host's storage

static peft_status bind_site(peft_instance *self, struct site_bias *s) {
    peft_tensor_view v;
    peft_status st = self->api->tensor_view(self->host, s->id, &v);
    if (st != PEFT_OK) return st;
    if (v.numel != s->d_out) {
        peft_logf(self->api, self->host, PEFT_LOG_ERROR, "bias has %llu entries, expected %u",
                  (unsigned long long)v.numel, (unsigned)s->d_out);
        return PEFT_E_SHAPE;
    }
    s->b = v.data;
    s->db = v.grad;
    return PEFT_OK;
}

static peft_status bias_stage_begin(peft_instance *self) {
    for (uint32_t i = 0; i < self->n_sites; i++) {
        if (!self->sites[i].attached) continue;
        peft_status st = bind_site(self, &self->sites[i]);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

/* The attached site `site` with its views bound (a run that only evaluates a loaded adapter
 * may skip stage_begin), or NULL. */
static struct site_bias *site_ready(peft_instance *self, uint32_t site) {
    if (site >= self->n_sites || !self->sites[site].attached) return NULL;
    struct site_bias *s = &self->sites[site];
    if (!s->b && bind_site(self, s) != PEFT_OK) return NULL;
    return s;
}

// ---------------------------------------------------------------------------------------
// Forward and backward

static peft_status bias_forward(peft_instance *self, const peft_forward_io *io) {
    struct site_bias *s = site_ready(self, io->site);
    if (!s) return PEFT_E_STATE;
    const float *b = s->b; /* (d_out) */
    for (uint32_t i = 0; i < io->n_rows; i++) {
        float *y = io->y + (size_t)i * s->d_out; /* (d_out) row i of (n_rows, d_out) */
        for (uint32_t j = 0; j < s->d_out; j++) y[j] += b[j];
    }
    return PEFT_OK;
}

static peft_status bias_backward(peft_instance *self, const peft_backward_io *io) {
    struct site_bias *s = site_ready(self, io->site);
    if (!s) return PEFT_E_STATE;
    if (!s->db) return PEFT_OK; /* frozen: nothing to accumulate */
    float *db = s->db;           /* (d_out) */
    for (uint32_t i = 0; i < io->n_rows; i++) {
        const float *dy = io->dy + (size_t)i * s->d_out; /* (d_out) row i of (n_rows, d_out) */
        for (uint32_t j = 0; j < s->d_out; j++) db[j] += dy[j];
    }
    return PEFT_OK; /* dL/dx of this path is zero: io->dx is left as it is */
}

// ---------------------------------------------------------------------------------------
// The descriptor and the exported entry

static const peft_param_spec bias_params[] = {
    {"target_modules", PEFT_PARAM_LIST, "q_proj v_proj", NULL,
     "projections to add a bias to (kinds like q_proj, or all-linear)"},
    {"init_std", PEFT_PARAM_FLOAT, "0", NULL,
     "standard deviation of the initial bias; 0 starts at zero (no change to the model)"},
};

static const peft_method_vtable bias_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = bias_create,
    .destroy = bias_destroy,
    .attach = bias_attach,
    .stage_begin = bias_stage_begin,
    .forward = bias_forward,
    .backward = bias_backward,
    /* everything else NULL: not offered */
};

/* The bias never reads site_info.weight: the host need not make an fp32 copy of weights it
 * keeps in 16 bits for it (peft/peft_site_weight.h). */
static const char *const bias_features[] = {PEFT_FEATURE_WEIGHT_ON_REQUEST, NULL};

static const peft_method_desc bias_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "com.example.bias",
    .name = "Output bias (example)",
    .version = "0.1.0",
    .description = "a trainable bias vector added to each targeted projection's output",
    .features = bias_features,
    .params = bias_params,
    .n_params = sizeof bias_params / sizeof bias_params[0],
    .vt = &bias_vt,
    .license = "MIT",
    .url = "https://example.com/bias",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &bias_desc);
