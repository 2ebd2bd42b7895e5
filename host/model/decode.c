/*
 * decode.c: the forward pass one step at a time with a key/value cache, for generation. The
 * same layers as model_forward (model.c) for one sequence; a step of n tokens computes only
 * their rows and attends over the cached keys and values of every earlier position.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "half.h"
#include "ops.h"

struct model_kv_cache {
    int32_t cap, len;
    float *k, *v;          /* (L, cap, KV*D) each; k after RoPE */
    float *cos_t, *sin_t;  /* (cap, D/2) RoPE of every position */
    /* scratch for a step of up to `rows` tokens */
    int32_t rows;
    float *x, *xn, *q, *y, *h, *gate, *up, *proj, *scores;
};

struct model_kv_cache *model_kv_cache_new(const struct model *m, int32_t cap) {
    const struct model_config *c = &m->cfg;
    if (cap > c->max_seq) cap = c->max_seq;
    struct model_kv_cache *kv = xcalloc(1, sizeof *kv);
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    kv->cap = cap;
    kv->k = xalloc_floats((size_t)c->n_layers * cap * kvd);
    kv->v = xalloc_floats((size_t)c->n_layers * cap * kvd);
    kv->cos_t = xalloc_floats((size_t)cap * (c->head_dim / 2));
    kv->sin_t = xalloc_floats((size_t)cap * (c->head_dim / 2));
    rope_table(kv->cos_t, kv->sin_t, cap, c->head_dim, c);
    return kv;
}

void model_kv_cache_free(struct model_kv_cache *kv) {
    if (!kv) return;
    float *all[] = {kv->k, kv->v, kv->cos_t, kv->sin_t, kv->x, kv->xn, kv->q, kv->y, kv->h,
                    kv->gate, kv->up, kv->proj, kv->scores};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    free(kv);
}

int32_t model_kv_cache_len(const struct model_kv_cache *kv) { return kv->len; }
void model_kv_cache_reset(struct model_kv_cache *kv) { kv->len = 0; }

static void scratch(struct model_kv_cache *kv, const struct model_config *c, int32_t n) {
    if (n <= kv->rows) return;
    float **bufs[] = {&kv->x, &kv->xn, &kv->q, &kv->y, &kv->h, &kv->gate, &kv->up, &kv->proj, &kv->scores};
    size_t C = (size_t)c->d_model, HD = (size_t)c->n_heads * c->head_dim, F = (size_t)c->d_ff;
    /* scores: a row of attention weights, or the rstd of every head of a row (qk_norm) */
    size_t score_width = (size_t)(kv->cap > c->n_heads ? kv->cap : c->n_heads);
    size_t width[] = {C, C > HD ? C : HD, HD, HD, C, F, F, C > HD ? C : HD, score_width};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = xalloc_floats((size_t)n * width[i]);
    }
    kv->rows = n;
}

/* Causal attention of the n new query rows (positions pos..pos+n-1) over cached positions
 * 0..pos+n-1 of one layer: y (n, H*D). */
static void attend(struct model_kv_cache *kv, const struct model_config *c, const float *k_l,
                   const float *v_l, int32_t pos, int32_t n) {
    int32_t H = c->n_heads, D = c->head_dim, group = H / c->n_kv_heads;
    size_t hd = (size_t)H * D, kvd = (size_t)c->n_kv_heads * D;
    float scale = 1.0f / sqrtf((float)D);
    float *p = kv->scores; /* (pos + n) */
    for (int32_t i = 0; i < n; i++) {
        int32_t last = pos + i; /* attends to 0..last */
        for (int32_t h = 0; h < H; h++) {
            const float *q = kv->q + (size_t)i * hd + (size_t)h * D;
            size_t off = (size_t)(h / group) * D;
            float mx = -INFINITY;
            for (int32_t j = 0; j <= last; j++) {
                const float *k = k_l + (size_t)j * kvd + off;
                float dot = 0.0f;
                for (int32_t d = 0; d < D; d++) dot += q[d] * k[d];
                p[j] = dot * scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            float sum = 0.0f;
            for (int32_t j = 0; j <= last; j++) sum += p[j] = expf(p[j] - mx);
            float *y = kv->y + (size_t)i * hd + (size_t)h * D;
            memset(y, 0, (size_t)D * sizeof *y);
            for (int32_t j = 0; j <= last; j++) {
                const float *v = v_l + (size_t)j * kvd + off;
                float w = p[j] / sum;
                for (int32_t d = 0; d < D; d++) y[d] += w * v[d];
            }
        }
    }
}

int model_decode(struct model *m, struct model_kv_cache *kv, const int32_t *tokens, int32_t n,
                 const struct model_hooks *hooks, float *logits) {
    const struct model_config *c = &m->cfg;
    if (n <= 0) return err_set("model_decode: no tokens");
    if (kv->len + n > kv->cap)
        return err_set("the context is full (%d positions)", (int)kv->cap);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return err_set("model_decode: token %d is outside the vocabulary [0, %d)", (int)tokens[i], (int)c->vocab);
    scratch(kv, c, n);
    int32_t C = c->d_model, pos = kv->len, half = c->head_dim / 2;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, nC = (size_t)n * C;
    model_embed_tokens(m, tokens, n, kv->x);
    for (int32_t l = 0; l < c->n_layers; l++) {
        const struct layer_weights *lw = &m->w.layers[l];
        int32_t s0 = l * SITE_KINDS;
        float *k_l = kv->k + (size_t)l * kv->cap * kvd, *v_l = kv->v + (size_t)l * kv->cap * kvd;
        float *k_new = k_l + (size_t)pos * kvd, *v_new = v_l + (size_t)pos * kvd;
        rmsnorm_forward(kv->xn, kv->proj, kv->x, lw->attn_norm, n, C, c->rms_eps);
        if (model_site_forward(m, hooks, s0 + SITE_Q, kv->xn, kv->q, n) ||
            model_site_forward(m, hooks, s0 + SITE_K, kv->xn, k_new, n) ||
            model_site_forward(m, hooks, s0 + SITE_V, kv->xn, v_new, n))
            return -1;
        if (c->qkv_bias) {
            add_bias(kv->q, lw->bq, n, c->n_heads * c->head_dim);
            add_bias(k_new, lw->bk, n, c->n_kv_heads * c->head_dim);
            add_bias(v_new, lw->bv, n, c->n_kv_heads * c->head_dim);
        }
        if (c->qk_norm) { /* in place, each head over its D values; rstd into scratch */
            rmsnorm_forward(kv->q, kv->scores, kv->q, lw->q_norm, n * c->n_heads, c->head_dim, c->rms_eps);
            rmsnorm_forward(k_new, kv->scores, k_new, lw->k_norm, n * c->n_kv_heads, c->head_dim, c->rms_eps);
        }
        /* RoPE at the rows' own positions: the tables from position pos on */
        rope_forward(kv->q, kv->cos_t + (size_t)pos * half, kv->sin_t + (size_t)pos * half, 1, n,
                     c->n_heads, c->head_dim);
        rope_forward(k_new, kv->cos_t + (size_t)pos * half, kv->sin_t + (size_t)pos * half, 1, n,
                     c->n_kv_heads, c->head_dim);
        attend(kv, c, k_l, v_l, pos, n);
        if (model_site_forward(m, hooks, s0 + SITE_O, kv->y, kv->proj, n)) return -1;
        for (size_t i = 0; i < nC; i++) kv->h[i] = kv->x[i] + kv->proj[i];
        rmsnorm_forward(kv->xn, kv->proj, kv->h, lw->mlp_norm, n, C, c->rms_eps);
        if (model_site_forward(m, hooks, s0 + SITE_GATE, kv->xn, kv->gate, n) ||
            model_site_forward(m, hooks, s0 + SITE_UP, kv->xn, kv->up, n))
            return -1;
        swiglu_forward(kv->gate, kv->gate, kv->up, (size_t)n * c->d_ff);
        if (model_site_forward(m, hooks, s0 + SITE_DOWN, kv->gate, kv->proj, n)) return -1;
        for (size_t i = 0; i < nC; i++) kv->x[i] = kv->h[i] + kv->proj[i];
    }
    kv->len += n;
    /* the last row only: the next token's distribution */
    const float *last = kv->x + (size_t)(n - 1) * C;
    float rstd;
    rmsnorm_forward(kv->xn, &rstd, last, m->w.final_norm, 1, C, c->rms_eps);
    model_head_logits(m, kv->xn, logits, 1);
    return 0;
}
