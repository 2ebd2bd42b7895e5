/*
 * peft_lowrank.h: the plumbing every LoRA-shaped method repeats, header-only (static inline,
 * nothing to link): the table of attached sites, a growable work space, the registration of a
 * pair of factors A (r, d_in) and B (d_out, r) with LoRA's initialisation, and the products of
 * y += s x Aᵀ Bᵀ, its backward and its dense ΔW on the host's sgemm.
 *
 * The products, for n rows of a site (W: (d_out, d_in)):
 *   forward:   u (n, r) = x Aᵀ;  y (n, d_out) += s u Bᵀ
 *   backward:  g (n, r) = dy B;  dB += s dyᵀ u;  dA += s gᵀ x;  dx += s g A
 *   delta:     out (d_out, d_in) += s B A
 * Frozen factors (view.grad NULL) get no gradient; dx may be NULL.
 */
#ifndef PEFT_LOWRANK_H
#define PEFT_LOWRANK_H

#include <math.h>

#include "peft/peft_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the attached sites ------------------------------------------------------------------- */

/* slot[site] (n_sites entries of the model) = the index of the site's entry in the plugin's
 * own table, or -1. Allocates slot with every entry -1; NULL when out of memory. */
static inline int32_t *peft_slots_new(uint32_t n_model_sites) {
    int32_t *slot = (int32_t *)malloc(((size_t)n_model_sites + 1) * sizeof *slot);
    for (uint32_t i = 0; slot && i < n_model_sites; i++) slot[i] = -1;
    return slot;
}

/* The plugin's table of sites: *sites (n_model_sites + 1 zeroed entries of elem bytes) and
 * *slot (peft_slots_new). PEFT_E_NOMEM (and both NULL) when either fails. */
static inline peft_status peft_site_table_new(uint32_t n_model_sites, size_t elem, void **sites,
                                              int32_t **slot) {
    *sites = calloc((size_t)n_model_sites + 1, elem);
    *slot = peft_slots_new(n_model_sites);
    if (*sites && *slot) return PEFT_OK;
    free(*sites);
    free(*slot);
    *sites = NULL;
    *slot = NULL;
    return PEFT_E_NOMEM;
}

/* ---- the LoRA keys ------------------------------------------------------------------------ */

/* r, lora_alpha, lora_dropout (0 when the method has no such key) and use_rslora, read and
 * checked; s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora. */
typedef struct peft_lowrank_keys {
    uint32_t r;
    double alpha;
    float dropout;
    float s;
} peft_lowrank_keys;

/* A bad value is logged with its key and gives PEFT_E_CONFIG. */
static inline peft_status peft_lowrank_read_keys(const peft_host_api *api, peft_host *h,
                                                 const peft_kv *cfg, uint32_t n_cfg,
                                                 int64_t default_r, double default_alpha,
                                                 peft_lowrank_keys *out) {
    int64_t r = peft_kv_int(cfg, n_cfg, "r", default_r);
    double alpha = peft_kv_float(cfg, n_cfg, "lora_alpha", default_alpha);
    double p = peft_kv_float(cfg, n_cfg, "lora_dropout", 0.0);
    if (r <= 0 || r > 65536) {
        peft_logf(api, h, PEFT_LOG_ERROR, "r must be in 1..65536, got %lld", (long long)r);
        return PEFT_E_CONFIG;
    }
    if (!(p >= 0.0 && p < 1.0)) {
        peft_logf(api, h, PEFT_LOG_ERROR, "lora_dropout must be in [0, 1), got %g", p);
        return PEFT_E_CONFIG;
    }
    int rslora = peft_kv_bool(cfg, n_cfg, "use_rslora", 0);
    out->r = (uint32_t)r;
    out->alpha = alpha;
    out->dropout = (float)p;
    out->s = (float)(alpha / (rslora ? sqrt((double)r) : (double)r));
    return PEFT_OK;
}

/* ---- work space --------------------------------------------------------------------------- */

/* A plugin-owned buffer that grows on demand. */
typedef struct peft_scratch {
    float *p;
    uint64_t cap;
} peft_scratch;

/* n floats of s (NULL when out of memory); valid until the next call. */
static inline float *peft_scratch_get(peft_scratch *s, uint64_t n) {
    if (n > s->cap) {
        float *p = (float *)realloc(s->p, n * sizeof(float));
        if (!p) return NULL;
        s->p = p;
        s->cap = n;
    }
    return s->p;
}

static inline void peft_scratch_free(peft_scratch *s) {
    free(s->p);
    s->p = NULL;
    s->cap = 0;
}

/* ---- a pair of factors -------------------------------------------------------------------- */

/* Register A "a_name" (r, d_in), U(-1/sqrt(d_in), 1/sqrt(d_in)) as HF PEFT's kaiming_uniform(a =
 * sqrt 5) draws it, with a_flags, and B "b_name" (d_out, r), zero, with b_flags, at `site`
 * (-1: model-level). The names are borrowed for the call. */
static inline peft_status peft_lowrank_register(const peft_host_api *api, peft_host *h,
                                                int32_t site, uint32_t d_in, uint32_t d_out,
                                                uint32_t r, const char *a_name, uint32_t a_flags,
                                                const char *b_name, uint32_t b_flags,
                                                const char *lr_group, peft_tensor_id *a,
                                                peft_tensor_id *b) {
    float bound = 1.0f / sqrtf((float)d_in);
    peft_tensor_desc da = {
        .struct_size = sizeof da, .name = a_name, .site = site, .ndim = 2,
        .shape = {r, d_in, 0, 0}, /* (r, d_in) */
        .init = PEFT_INIT_UNIFORM, .init_a = -bound, .init_b = bound, .flags = a_flags,
        .lr_group = lr_group,
    };
    peft_status st = api->tensor_register(h, &da, a);
    if (st != PEFT_OK) return st;
    peft_tensor_desc db = {
        .struct_size = sizeof db, .name = b_name, .site = site, .ndim = 2,
        .shape = {d_out, r, 0, 0}, /* (d_out, r) */
        .init = PEFT_INIT_ZERO, .flags = b_flags, .lr_group = lr_group,
    };
    return api->tensor_register(h, &db, b);
}

/* u (n, r) = x Aᵀ; y (n, d_out) += s u Bᵀ. */
static inline void peft_lowrank_forward(const peft_host_api *api, peft_host *h, const float *A,
                                        const float *B, uint32_t r, float s, const float *x,
                                        float *y, float *u, uint32_t n, uint32_t d_in,
                                        uint32_t d_out) {
    api->sgemm(h, 0, 1, n, r, d_in, 1.0f, x, d_in, A, d_in, 0.0f, u, r);
    api->sgemm(h, 0, 1, n, d_out, r, s, u, r, B, r, 1.0f, y, d_out);
}

/* g (n, r) = dy B into the caller's g; dB (d_out, r) += s dyᵀ u; dA (r, d_in) += s gᵀ x;
 * dx (n, d_in) += s g A when dx is not NULL. */
static inline void peft_lowrank_backward(const peft_host_api *api, peft_host *h,
                                         const peft_tensor_view *A, const peft_tensor_view *B,
                                         uint32_t r, float s, const float *x, const float *dy,
                                         float *dx, const float *u, float *g, uint32_t n,
                                         uint32_t d_in, uint32_t d_out) {
    api->sgemm(h, 0, 0, n, r, d_out, 1.0f, dy, d_out, B->data, r, 0.0f, g, r);
    if (B->grad) api->sgemm(h, 1, 0, d_out, r, n, s, dy, d_out, u, r, 1.0f, B->grad, r);
    if (A->grad) api->sgemm(h, 1, 0, r, d_in, n, s, g, r, x, d_in, 1.0f, A->grad, d_in);
    if (dx) api->sgemm(h, 0, 0, n, d_in, r, s, g, r, A->data, d_in, 1.0f, dx, d_in);
}

/* out (d_out, d_in) += s B A. */
static inline void peft_lowrank_delta(const peft_host_api *api, peft_host *h, const float *A,
                                      const float *B, uint32_t r, float s, float *out,
                                      uint32_t d_in, uint32_t d_out) {
    api->sgemm(h, 0, 0, d_out, d_in, r, s, B, r, A, d_in, 1.0f, out, d_in);
}

#ifdef __cplusplus
}
#endif

#endif /* PEFT_LOWRANK_H */
