/*
 * probe_plugin.c: a test plugin ("probe") that exercises the host API, including the calls a
 * plugin must not make. Its schema has no target_modules, so the host offers every site and
 * the probe declines the kinds not listed in `accept` (after registering a tensor for the
 * site, which the host must then forget).
 *
 * Tensors: "probe.frozen" (4) CONST 0.5, frozen; "probe.vec" (64, 16) NORMAL(0, 1);
 * per attached site "probe.<site>.w" (d_out) UNIFORM(-0.1, 0.3); "probe.seen" (256) frozen,
 * NO_SAVE, where the forward at the first attached site writes row_task (and seen[255] = seq,
 * seen[254] = training) and state_load writes the state it read into seen[253]; stage_begin
 * writes 1 + tensor_origin of probe.vec into seen[252] (1 init, 2 loaded).
 * With mask_site = true, each attached site's weight is also registered as a trainable
 * ALIAS_BASE tensor "probe.<site>.weight", masked to its even entries in stage_begin.
 *
 * delta_weight adds 1 to W[0][0] of each site (refused at all but the first site with
 * defect = delta_second).
 *
 * `defect` picks one contract violation (see the list in probe_params) whose outcome the
 * host must turn into a clear error line.
 */
#include <stdlib.h>

#include "peft/peft_plugin.h"

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    char accept[128];
    char defect[32];
    int mask_site;
    peft_tensor_id seen, first_alias;
    int32_t first_site;
    int n_alias;
    int32_t state;
};

static int is(const struct peft_instance *p, const char *d) { return strcmp(p->defect, d) == 0; }

static peft_status reg(struct peft_instance *p, const char *name, int32_t site, uint32_t ndim,
                       uint64_t d0, uint64_t d1, int32_t init, float a, float b, uint32_t flags,
                       peft_tensor_id *id) {
    peft_tensor_desc d = {
        .struct_size = sizeof d, .name = name, .site = site, .ndim = ndim,
        .shape = {d0, d1, 0, 0}, .init = init, .init_a = a, .init_b = b, .flags = flags,
    };
    peft_tensor_id dummy;
    return p->api->tensor_register(p->h, &d, id ? id : &dummy);
}

static peft_status probe_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                                uint32_t n_cfg, peft_instance **out) {
    const char *defect = peft_kv_get(cfg, n_cfg, "defect");
    if (defect && strcmp(defect, "log_error") == 0) {
        api->log(h, PEFT_LOG_ERROR, "bad key x");
        return PEFT_E_CONFIG;
    }
    if (defect && strcmp(defect, "no_instance") == 0) return PEFT_OK;
    struct peft_instance *p = calloc(1, sizeof *p);
    if (!p) return PEFT_E_NOMEM;
    p->api = api;
    p->h = h;
    p->first_site = -1;
    const char *accept = peft_kv_get(cfg, n_cfg, "accept");
    snprintf(p->accept, sizeof p->accept, "%s", accept ? accept : "");
    snprintf(p->defect, sizeof p->defect, "%s", defect ? defect : "none");
    p->mask_site = peft_kv_bool(cfg, n_cfg, "mask_site", 0);
    peft_status st = reg(p, "probe.frozen", -1, 1, 4, 0, PEFT_INIT_CONST, 0.5f, 0, 0, NULL);
    if (st == PEFT_OK)
        st = reg(p, "probe.vec", -1, 2, 64, 16, PEFT_INIT_NORMAL, 0.0f, 1.0f,
                 PEFT_TENSOR_TRAINABLE, NULL);
    if (st == PEFT_OK)
        st = reg(p, "probe.seen", -1, 1, 256, 0, PEFT_INIT_NONE, 0, 0, PEFT_TENSOR_NO_SAVE,
                 &p->seen);
    if (st == PEFT_OK && is(p, "dup_name"))
        st = reg(p, "probe.vec", -1, 1, 4, 0, PEFT_INIT_ZERO, 0, 0, 0, NULL);
    if (st == PEFT_OK && is(p, "bad_ndim")) {
        peft_tensor_desc d = {.struct_size = sizeof d, .name = "probe.bad", .site = -1,
                              .ndim = 5, .shape = {1, 1, 1, 1}};
        peft_tensor_id id;
        st = api->tensor_register(h, &d, &id);
    }
    if (st == PEFT_OK && is(p, "alias_shape"))
        st = reg(p, "probe.alias", 0, 2, 3, 3, 0, 0, 0,
                 PEFT_TENSOR_ALIAS_BASE | PEFT_TENSOR_TRAINABLE, NULL);
    if (st == PEFT_OK && is(p, "alias_missing"))
        st = reg(p, "model.nope.weight", -1, 1, 16, 0, 0, 0, 0, PEFT_TENSOR_ALIAS_BASE, NULL);
    if (st == PEFT_OK && is(p, "view_early")) {
        peft_tensor_view v;
        st = api->tensor_view(h, p->seen, &v);
    }
    if (st == PEFT_OK && is(p, "mask_frozen")) {
        uint64_t idx[1] = {0};
        st = api->tensor_set_mask(h, 0, idx, 1);
    }
    if (st == PEFT_OK && is(p, "stage_tensor")) {
        float x[4];
        st = api->stage_tensor(h, "calib", "probe.vec", x, 4);
    }
    if (st != PEFT_OK) {
        free(p);
        return st;
    }
    *out = p;
    return PEFT_OK;
}

static void probe_destroy(peft_instance *p) { free(p); }

/* Is `kind` one of the words of accept? */
static int accepted(const char *accept, const char *kind) {
    size_t n = strlen(kind);
    for (const char *s = strstr(accept, kind); s; s = strstr(s + 1, kind))
        if ((s == accept || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\0')) return 1;
    return 0;
}

static peft_status probe_attach(peft_instance *p, uint32_t site) {
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = p->api->site_info(p->h, site, &si);
    if (st != PEFT_OK) return st;
    char name[160];
    snprintf(name, sizeof name, "probe.%s.w", si.name);
    st = reg(p, name, (int32_t)site, 1, si.d_out, 0, PEFT_INIT_UNIFORM, -0.1f, 0.3f,
             PEFT_TENSOR_TRAINABLE, NULL);
    /* Declined after registering: the host must forget the tensor. */
    if (st == PEFT_OK && !accepted(p->accept, si.kind)) return PEFT_E_UNSUPPORTED;
    if (st == PEFT_OK && p->mask_site) {
        snprintf(name, sizeof name, "probe.%s.weight", si.name);
        peft_tensor_id id;
        st = reg(p, name, (int32_t)site, 2, si.d_out, si.d_in, 0, 0, 0,
                 PEFT_TENSOR_ALIAS_BASE | PEFT_TENSOR_TRAINABLE, &id);
        if (p->n_alias++ == 0) p->first_alias = id;
    }
    if (st == PEFT_OK && is(p, "mask_unsorted")) {
        uint64_t idx[2] = {3, 1};
        st = p->api->tensor_set_mask(p->h, 1, idx, 2);
    }
    if (p->first_site < 0) p->first_site = (int32_t)site;
    return st;
}

static peft_status probe_stage_begin(peft_instance *p) {
    const peft_host_api *api = p->api;
    if (is(p, "register_late")) return reg(p, "probe.late", -1, 1, 4, 0, 0, 0, 0, 0, NULL);
    if (is(p, "run_pass")) return api->run_pass(p->h, 1, 0);
    if (is(p, "bad_sgemm")) {
        float a[4] = {0}, b[4] = {0}, c[4] = {0};
        api->sgemm(p->h, 0, 0, 2, 2, 2, 1.0f, a, 1, b, 2, 0.0f, c, 2); /* lda < k */
        return PEFT_OK;
    }
    uint32_t origin = 7;
    peft_tensor_view seen;
    if (PEFT_HAS_FIELD(api, peft_host_api, tensor_origin) &&
        api->tensor_origin(p->h, 1, &origin) == PEFT_OK && api->tensor_view(p->h, p->seen, &seen) == PEFT_OK)
        seen.data[252] = 1.0f + (float)origin;
    /* Mask every aliased site weight to its even entries. */
    for (int k = 0; k < p->n_alias; k++) {
        peft_tensor_id id = p->first_alias + (peft_tensor_id)(2 * k);
        peft_tensor_view v;
        peft_status st = api->tensor_view(p->h, id, &v);
        if (st != PEFT_OK) return st;
        uint64_t *idx = malloc((v.numel / 2 + 1) * sizeof *idx);
        if (!idx) return PEFT_E_NOMEM;
        uint64_t n = 0;
        for (uint64_t i = 0; i < v.numel; i += 2) idx[n++] = i;
        st = api->tensor_set_mask(p->h, id, idx, n);
        free(idx);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

static peft_status probe_forward(peft_instance *p, const peft_forward_io *io) {
    if ((int32_t)io->site != p->first_site) return PEFT_OK;
    peft_tensor_view v;
    peft_status st = p->api->tensor_view(p->h, p->seen, &v);
    if (st != PEFT_OK) return st;
    for (uint32_t i = 0; i < io->n_rows && i < 250; i++) v.data[i] = (float)io->row_task[i];
    v.data[255] = (float)io->seq;
    v.data[254] = (float)io->training;
    p->state++;
    return PEFT_OK;
}

static peft_status probe_backward(peft_instance *p, const peft_backward_io *io) {
    (void)p;
    (void)io;
    return PEFT_OK;
}

/* A fixed change: W[0][0] += 1 (what forward adds is not checked against it). */
static peft_status probe_delta_weight(peft_instance *p, uint32_t site, float scale,
                                      float *out) {
    if (is(p, "delta_second") && (int32_t)site != p->first_site) {
        peft_logf(p->api, p->h, PEFT_LOG_ERROR, "no delta at site %u", site);
        return PEFT_E_UNSUPPORTED;
    }
    out[0] += scale;
    return PEFT_OK;
}

static peft_status probe_state_save(peft_instance *p, const peft_ostream *out) {
    return out->write(out, &p->state, sizeof p->state) == sizeof p->state ? PEFT_OK : PEFT_E_IO;
}

static peft_status probe_state_load(peft_instance *p, const peft_istream *in) {
    int32_t s;
    if (in->read(in, &s, sizeof s) != sizeof s) return PEFT_E_IO;
    peft_tensor_view v;
    peft_status st = p->api->tensor_view(p->h, p->seen, &v);
    if (st != PEFT_OK) return st;
    v.data[253] = (float)s;
    return PEFT_OK;
}

static const peft_param_spec probe_params[] = {
    {"accept", PEFT_PARAM_STRING, "q_proj", NULL, "site kinds to attach to"},
    {"mask_site", PEFT_PARAM_BOOL, "false", NULL, "alias and mask the attached weights"},
    {"defect", PEFT_PARAM_CHOICE, "none",
     "none|log_error|no_instance|dup_name|bad_ndim|alias_shape|alias_missing|view_early|"
     "mask_frozen|stage_tensor|mask_unsorted|register_late|run_pass|bad_sgemm|delta_second",
     "the contract violation to commit"},
};

static const peft_method_vtable probe_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = probe_create,
    .destroy = probe_destroy,
    .attach = probe_attach,
    .stage_begin = probe_stage_begin,
    .forward = probe_forward,
    .backward = probe_backward,
    .delta_weight = probe_delta_weight,
    .state_save = probe_state_save,
    .state_load = probe_state_load,
};

static const peft_method_desc probe_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "probe",
    .name = "Host API probe",
    .version = "1.0.0",
    .description = "exercises the host API (tests only)",
    .params = probe_params,
    .n_params = sizeof probe_params / sizeof probe_params[0],
    .vt = &probe_vt,
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &probe_desc);
