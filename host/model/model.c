/*
 * model.c: the llama decoder (see model.h): the tensor list and parameter block, the sites,
 * the activations of a pass, and forward/backward over the kernels of ops.c.
 *
 * Tensor order (and parameter block layout): model.embed_tokens, then per layer
 * input_layernorm, q, k, v, o, post_attention_layernorm, gate, up, down, then model.norm and,
 * when untied, lm_head.
 */
#include "model.h"
#include "half.h"
#include "head_loss.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

const char *const site_kind_names[SITE_KINDS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

/* Slots of a layer's tensors, in tensor order: the nine of every llama layer, then qwen2's
 * q/k/v biases and qwen3's q/k norms when the config has them. */
enum {
    SLOT_ATTN_NORM, SLOT_Q, SLOT_K, SLOT_V, SLOT_O, SLOT_MLP_NORM, SLOT_GATE, SLOT_UP,
    SLOT_DOWN, SLOTS_LLAMA, SLOT_Q_BIAS = SLOTS_LLAMA, SLOT_K_BIAS, SLOT_V_BIAS, SLOT_Q_NORM,
    SLOT_K_NORM
};
static const int32_t slot_of_kind[SITE_KINDS] = {
    SLOT_Q, SLOT_K, SLOT_V, SLOT_O, SLOT_GATE, SLOT_UP, SLOT_DOWN,
};

static int32_t slots_per_layer(const struct model_config *c)
{
    return SLOTS_LLAMA + 3 * (c->qkv_bias != 0) + 2 * (c->qk_norm != 0);
}

/* A slot's place in its layer (slots a config lacks are never asked for). */
static int32_t slot_place(const struct model_config *c, int32_t slot)
{
    if (slot < SLOTS_LLAMA || c->qkv_bias) return slot;
    return slot - 3; /* q/k norms without biases */
}

static int32_t layer_tensor(const struct model_config *c, int32_t layer, int32_t slot)
{
    return 1 + layer * slots_per_layer(c) + slot_place(c, slot);
}

static int32_t final_norm_tensor(const struct model_config *c)
{
    return 1 + c->n_layers * slots_per_layer(c);
}

/* The head's gradient lands in embed when tied. */
static int32_t lm_head_tensor(const struct model_config *c)
{
    return c->tied ? 0 : final_norm_tensor(c) + 1;
}

/* ---- config ---------------------------------------------------------------------------- */

int model_config_check(const struct model_config *c)
{
    const struct {
        const char *key;
        int32_t v;
    } pos[] = {
        {"vocab", c->vocab},         {"d_model", c->d_model},   {"n_layers", c->n_layers},
        {"n_heads", c->n_heads},     {"n_kv_heads", c->n_kv_heads},
        {"head_dim", c->head_dim},   {"d_ff", c->d_ff},         {"max_seq", c->max_seq},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0)
            return err_set("%s: %d must be positive", pos[i].key, (int)pos[i].v);
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set("n_heads: %d is not a multiple of n_kv_heads %d", (int)c->n_heads,
                       (int)c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return err_set("head_dim: %d must be even for rotary embeddings", (int)c->head_dim);
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return err_set("rms_eps: %g must be positive and finite", (double)c->rms_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return err_set("rope_theta: %g must be positive and finite", (double)c->rope_theta);
    if (c->rope.type != ROPE_DEFAULT && (!(c->rope.factor > 0.0f) || !isfinite(c->rope.factor)))
        return err_set("rope_scaling: factor %g must be positive and finite", (double)c->rope.factor);
    if (c->rope.type == ROPE_LLAMA3 &&
        (!(c->rope.high_freq_factor > c->rope.low_freq_factor) || !(c->rope.low_freq_factor > 0.0f) ||
         c->rope.original_context <= 0))
        return err_set("rope_scaling: llama3 needs 0 < low_freq_factor (%g) < high_freq_factor (%g) "
                       "and a positive original_max_position_embeddings (%d)",
                       (double)c->rope.low_freq_factor, (double)c->rope.high_freq_factor,
                       (int)c->rope.original_context);
    if (c->sliding_window > 0 && c->sliding_window < c->max_seq)
        return err_set("sliding_window: %d is shorter than the context max_seq %d (sliding-window "
                       "attention is not implemented; lower max_seq to %d)", (int)c->sliding_window,
                       (int)c->max_seq, (int)c->sliding_window);
    if (c->tied != 0 && c->tied != 1)
        return err_set("tied: %d must be 0 or 1", (int)c->tied);
    /* Keep every sgemm dimension and leading dimension inside int. */
    if ((int64_t)c->n_heads * c->head_dim > INT32_MAX)
        return err_set("n_heads: %d * head_dim %d is too large", (int)c->n_heads,
                       (int)c->head_dim);
    double C = c->d_model, HD = (double)c->n_heads * c->head_dim;
    double KVD = (double)c->n_kv_heads * c->head_dim;
    double per_layer = 2 * C + 2 * C * HD + 2 * C * KVD + 3 * C * c->d_ff;
    double total = (double)c->vocab * C * (c->tied ? 1 : 2) + C + c->n_layers * per_layer;
    if (total > 1e11)
        return err_set("model: %.3g parameters is too large", total);
    return 0;
}

/* ---- parameters ------------------------------------------------------------------------ */

static void add_tensor(struct model *m, size_t *offset, const char *name, int64_t rows,
                       int64_t cols, int32_t site)
{
    struct model_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols > 0 ? cols : 0;
    t->numel = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    t->offset = *offset;
    t->site = site;
    *offset += t->numel;
}

static void build_tensors(struct model *m)
{
    const struct model_config *c = &m->cfg;
    int64_t C = c->d_model, HD = (int64_t)c->n_heads * c->head_dim;
    int64_t KVD = (int64_t)c->n_kv_heads * c->head_dim, F = c->d_ff;
    m->n_tensors = 0;
    m->tensors = xcalloc((size_t)c->n_layers * (size_t)slots_per_layer(c) + 3, sizeof *m->tensors);
    size_t off = 0;
    char name[96];
    add_tensor(m, &off, "model.embed_tokens.weight", c->vocab, C, -1);
    for (int32_t l = 0; l < c->n_layers; l++) {
        const int64_t dims[SITE_KINDS][2] = {
            {HD, C}, {KVD, C}, {KVD, C}, {C, HD}, {F, C}, {F, C}, {C, F},
        };
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", (int)l);
        add_tensor(m, &off, name, C, 0, -1);
        for (int32_t kind = 0; kind < SITE_KINDS; kind++) {
            if (kind == SITE_GATE) {
                snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight",
                         (int)l);
                add_tensor(m, &off, name, C, 0, -1);
            }
            int32_t site = l * SITE_KINDS + kind;
            model_site_name(m, site, name, sizeof name - 8);
            strcat(name, ".weight");
            add_tensor(m, &off, name, dims[kind][0], dims[kind][1], site);
        }
        if (c->qkv_bias) {
            const char *which[3] = {"q_proj", "k_proj", "v_proj"};
            for (int32_t k = 0; k < 3; k++) {
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", (int)l, which[k]);
                add_tensor(m, &off, name, dims[k][0], 0, -1);
            }
        }
        if (c->qk_norm) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", (int)l);
            add_tensor(m, &off, name, c->head_dim, 0, -1);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", (int)l);
            add_tensor(m, &off, name, c->head_dim, 0, -1);
        }
    }
    add_tensor(m, &off, "model.norm.weight", C, 0, -1);
    if (!c->tied)
        add_tensor(m, &off, "lm_head.weight", c->vocab, C, -1);
    m->n_params = off;
}

/* Point a struct of views at a block laid out as m->tensors says. */
static void point_views(struct model_weights *w, const struct model *m, float *base)
{
    const struct model_config *c = &m->cfg;
    const struct model_tensor *t = m->tensors;
    w->embed = base + t[0].offset;
    w->final_norm = base + t[final_norm_tensor(c)].offset;
    w->lm_head = base + t[lm_head_tensor(c)].offset;
    w->layers = xcalloc((size_t)c->n_layers, sizeof *w->layers);
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct layer_weights *lw = &w->layers[l];
        lw->attn_norm = base + t[layer_tensor(c, l, SLOT_ATTN_NORM)].offset;
        lw->wq = base + t[layer_tensor(c, l, SLOT_Q)].offset;
        lw->wk = base + t[layer_tensor(c, l, SLOT_K)].offset;
        lw->wv = base + t[layer_tensor(c, l, SLOT_V)].offset;
        lw->wo = base + t[layer_tensor(c, l, SLOT_O)].offset;
        lw->mlp_norm = base + t[layer_tensor(c, l, SLOT_MLP_NORM)].offset;
        lw->wgate = base + t[layer_tensor(c, l, SLOT_GATE)].offset;
        lw->wup = base + t[layer_tensor(c, l, SLOT_UP)].offset;
        lw->wdown = base + t[layer_tensor(c, l, SLOT_DOWN)].offset;
        lw->bq = c->qkv_bias ? base + t[layer_tensor(c, l, SLOT_Q_BIAS)].offset : NULL;
        lw->bk = c->qkv_bias ? base + t[layer_tensor(c, l, SLOT_K_BIAS)].offset : NULL;
        lw->bv = c->qkv_bias ? base + t[layer_tensor(c, l, SLOT_V_BIAS)].offset : NULL;
        lw->q_norm = c->qk_norm ? base + t[layer_tensor(c, l, SLOT_Q_NORM)].offset : NULL;
        lw->k_norm = c->qk_norm ? base + t[layer_tensor(c, l, SLOT_K_NORM)].offset : NULL;
    }
}

int model_init(struct model *m, const struct model_config *c)
{
    memset(m, 0, sizeof *m);
    if (model_config_check(c) != 0)
        return -1;
    m->cfg = *c;
    m->n_sites = c->n_layers * SITE_KINDS;
    build_tensors(m);
    m->params = xalloc_floats_lazy(m->n_params);
    point_views(&m->w, m, m->params);
    m->half = xcalloc((size_t)m->n_tensors, sizeof *m->half);
    m->half_bf16 = xcalloc((size_t)m->n_tensors, 1);
    m->fp32_ok = xcalloc((size_t)m->n_tensors, 1);
    m->need_grad = xcalloc((size_t)m->n_tensors, 1);
    m->sparse_grad = xcalloc((size_t)m->n_tensors, sizeof *m->sparse_grad);
    return 0;
}

void model_init_random(struct model *m, uint64_t seed, float init_std)
{
    struct rng r;
    rng_seed_label(&r, seed, "model:init");
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct model_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        int bias = strstr(t->name, ".bias") != NULL; /* biases drawn like weights, norms at 1 */
        for (size_t j = 0; j < t->numel; j++)
            p[j] = t->ndim == 1 && !bias ? 1.0f : rng_normal(&r, 0.0f, init_std);
    }
}

void model_free(struct model *m)
{
    free_floats_lazy(m->params, m->n_params);
    for (int32_t i = 0; m->half && i < m->n_tensors; i++)
        free(m->half[i]);
    free(m->half);
    free(m->half_bf16);
    free(m->fp32_ok);
    free(m->w.layers);
    free_floats_lazy(m->grads, m->n_params);
    free(m->g.layers);
    free(m->need_grad);
    free(m->sparse_grad);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

void model_alloc_grads(struct model *m)
{
    if (!m->grads) {
        /* backed page by page: only the gradients of flagged tensors are ever written */
        m->grads = xalloc_floats_lazy(m->n_params);
        point_views(&m->g, m, m->grads);
    } else {
        model_zero_grads(m);
    }
    memset(m->need_grad, 0, (size_t)m->n_tensors);
}

void model_zero_grads(struct model *m)
{
    /* Only flagged tensors' gradients are written or read (model_backward), so only theirs
     * need zeroing; the others stay untouched pages. */
    for (int32_t t = 0; m->grads && t < m->n_tensors; t++)
        if (m->need_grad[t])
            memset(m->grads + m->tensors[t].offset, 0, m->tensors[t].numel * sizeof(float));
}

void model_free_grads(struct model *m)
{
    free_floats_lazy(m->grads, m->n_params);
    free(m->g.layers);
    m->grads = NULL;
    memset(&m->g, 0, sizeof m->g);
}

int model_set_sparse_grad(struct model *m, int32_t tensor, const uint64_t *index, uint64_t n,
                          float *out)
{
    if (tensor < 0 || tensor >= m->n_tensors || m->tensors[tensor].site < 0)
        return err_set("model_set_sparse_grad: tensor %d is not a site's weight", (int)tensor);
    m->sparse_grad[tensor] = index ? (struct model_sparse_grad){index, n, out}
                                   : (struct model_sparse_grad){NULL, 0, NULL};
    return 0;
}

int32_t model_find_tensor(const struct model *m, const char *name)
{
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- sites ----------------------------------------------------------------------------- */

int32_t model_site_kind(int32_t site) { return site % SITE_KINDS; }
int32_t model_site_layer(int32_t site) { return site / SITE_KINDS; }

void model_site_name(const struct model *m, int32_t site, char *out, size_t cap)
{
    (void)m;
    int32_t kind = model_site_kind(site);
    snprintf(out, cap, "model.layers.%d.%s.%s", (int)model_site_layer(site),
             kind <= SITE_O ? "self_attn" : "mlp", site_kind_names[kind]);
}

int32_t model_site_tensor(const struct model *m, int32_t site)
{
    return layer_tensor(&m->cfg, model_site_layer(site), slot_of_kind[model_site_kind(site)]);
}

void model_site_dims(const struct model *m, int32_t site, int32_t *d_in, int32_t *d_out)
{
    const struct model_tensor *t = &m->tensors[model_site_tensor(m, site)];
    *d_out = (int32_t)t->shape[0];
    *d_in = (int32_t)t->shape[1];
}

float *model_site_weight(const struct model *m, int32_t site)
{
    return model_tensor_data(m, model_site_tensor(m, site));
}

/* The gradient of tensor i, or NULL when not asked for. */
static float *grad_of(const struct model *m, int32_t i)
{
    if (!m->grads || !m->need_grad[i])
        return NULL;
    return m->grads + m->tensors[i].offset;
}

/* ---- activations ----------------------------------------------------------------------- */

struct layer_acts {
    float *resid; /* (n, C) input of the layer */
    float *rstd1; /* (n) */
    float *q;     /* (n, H*D) after RoPE */
    float *k;     /* (n, KV*D) after RoPE */
    float *q_raw; /* (n, H*D) q_proj's output (+ bias) before its norm, with qk_norm */
    float *k_raw; /* (n, KV*D) */
    float *rstd_q; /* (n*H) */
    float *rstd_k; /* (n*KV) */
    float *v;     /* (n, KV*D) */
    float *att_lse; /* (B, H, T) each query's log-sum-exp of its attention scores */
    float *yatt;  /* (n, H*D) attention output: the x of o_proj */
    float *h;     /* (n, C) residual stream after attention */
    float *rstd2; /* (n) */
    float *gate;  /* (n, F) */
    float *up;    /* (n, F) */
};
/* The norms' outputs (the x of q, k, v and of gate, up) and silu(gate) * up (the x of
 * down_proj) are not kept per layer: the backward makes them again from resid, h, gate and
 * up, bit for bit (the same kernels on the same inputs), into the model_acts buffers xn and
 * act. That is 2 C + F floats per row and layer less, for two norms and one SwiGLU more. */

struct model_acts {
    struct model_config cfg; /* the layout below is for this config and (B, T) */
    int32_t B, T;
    int32_t ready;           /* a forward finished and no backward has run on it since */
    int32_t n_valid;         /* rows with a target */
    float loss_scale;        /* the backward pass's gradients are of loss_scale * loss (0: 1) */
    const float *row_weight; /* (n) borrowed: the backward's per-row loss weights, or NULL */
    int32_t loss_chunk;      /* > 0: the loss and its gradient fused, in chunks of these rows */
    int32_t head_done;       /* the forward left d_hidden (loss_chunk mode) */
    struct head_loss_scratch head; /* loss_chunk mode's buffers, in the forward block */

    float *fwd;              /* forward block */
    size_t fwd_cap;
    float *bwd;              /* backward scratch block, made on the first backward */
    size_t bwd_cap;
    int32_t *ids;            /* tokens then targets, 2 * n */
    size_t ids_cap;
    struct layer_acts *layers;
    int32_t layers_cap;

    int32_t *tokens;         /* (n) */
    int32_t *targets;        /* (n), -1 = no loss */
    float *rope_cos;         /* (T, D/2) */
    float *rope_sin;         /* (T, D/2) */
    float *resid_final;      /* (n, C) output of the last layer */
    float *rstd_final;       /* (n) */
    float *hidden;           /* (n, C) after the final norm */
    float *logits;           /* (n, V); NULL in loss_chunk mode */
    float *lse;              /* (n) log-sum-exp of each logits row */
    float *proj;             /* (n, C) output of o_proj / down_proj before the residual add */
    float *xn;               /* (n, C) the current layer's norm output (forward and backward) */
    float *act;              /* (n, F) the current layer's silu(gate) * up */
    float *rstd_again;       /* (n) the norm's row factors when the backward remakes xn */

    float *d_resid;          /* (n, C) gradient of the residual stream */
    float *d_norm;           /* (n, C) gradient of a norm output (sum over its sites) */
    float *d_site;           /* (n, C) one site's dx while a hook sees it */
    float *d_q;              /* (n, H*D) */
    float *d_k;              /* (n, KV*D) */
    float *d_v;              /* (n, KV*D) */
    float *d_q_raw;          /* (n, H*D) with qk_norm: d(loss)/d(q before its norm) */
    float *d_k_raw;          /* (n, KV*D) */
    float *d_yatt;           /* (n, H*D) */
    float *d_gate;           /* (n, F) */
    float *d_up;             /* (n, F) */
    float *d_act;            /* (n, F) */
    float *d_hidden;         /* (n, C) */
    float *d_sampled;        /* scratch of the sampled weight gradient (sparse targets) */
};

struct model_acts *model_acts_new(void)
{
    return xcalloc(1, sizeof(struct model_acts));
}

void model_acts_set_loss_scale(struct model_acts *a, float scale)
{
    a->loss_scale = scale;
}

void model_acts_set_row_weights(struct model_acts *a, const float *w)
{
    a->row_weight = w;
}

void model_acts_set_loss_chunk(struct model_acts *a, int32_t rows)
{
    a->loss_chunk = rows > 0 ? rows : 0;
}

/* The logits of one chunk stay under this: a tenth of a step's memory at SmolLM2's vocabulary,
 * and rows enough for the head's products to run at full speed. */
enum { LOSS_CHUNK_BYTES = 32 << 20, LOSS_CHUNK_MIN_ROWS = 64 };

int32_t model_loss_chunk_rows(const struct model_config *c)
{
    size_t rows = LOSS_CHUNK_BYTES / ((size_t)c->vocab * sizeof(float));
    rows = rows < LOSS_CHUNK_MIN_ROWS ? LOSS_CHUNK_MIN_ROWS : rows;
    return rows > INT32_MAX / 4 ? INT32_MAX / 4 : (int32_t)rows;
}

void model_acts_free(struct model_acts *a)
{
    if (!a)
        return;
    free(a->fwd);
    free(a->bwd);
    free(a->ids);
    free(a->layers);
    free(a);
}

/* Hand out n floats at *cursor (64-byte steps); with base NULL only count. */
static float *carve(float *base, size_t *cursor, size_t n)
{
    float *p = base ? base + *cursor : NULL;
    *cursor += (n + 15) & ~(size_t)15;
    return p;
}

static size_t layout_forward(struct model_acts *a, float *base)
{
    const struct model_config *c = &a->cfg;
    size_t n = (size_t)a->B * a->T, C = (size_t)c->d_model, F = (size_t)c->d_ff;
    size_t HD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim;
    size_t cur = 0;
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct layer_acts la;
        la.resid = carve(base, &cur, n * C);
        la.rstd1 = carve(base, &cur, n);
        la.q = carve(base, &cur, n * HD);
        la.k = carve(base, &cur, n * KVD);
        la.v = carve(base, &cur, n * KVD);
        int norms = c->qk_norm != 0;
        la.q_raw = norms ? carve(base, &cur, n * HD) : NULL;
        la.k_raw = norms ? carve(base, &cur, n * KVD) : NULL;
        la.rstd_q = norms ? carve(base, &cur, n * (size_t)c->n_heads) : NULL;
        la.rstd_k = norms ? carve(base, &cur, n * (size_t)c->n_kv_heads) : NULL;
        la.att_lse = carve(base, &cur, n * (size_t)c->n_heads);
        la.yatt = carve(base, &cur, n * HD);
        la.h = carve(base, &cur, n * C);
        la.rstd2 = carve(base, &cur, n);
        la.gate = carve(base, &cur, n * F);
        la.up = carve(base, &cur, n * F);
        if (base)
            a->layers[l] = la;
    }
    size_t half = (size_t)c->head_dim / 2;
    a->rope_cos = carve(base, &cur, (size_t)a->T * half);
    a->rope_sin = carve(base, &cur, (size_t)a->T * half);
    a->resid_final = carve(base, &cur, n * C);
    a->rstd_final = carve(base, &cur, n);
    a->hidden = carve(base, &cur, n * C);
    if (a->loss_chunk > 0) { /* one chunk of logits and its row buffers instead of (n, V) */
        size_t chunk = (size_t)a->loss_chunk < n ? (size_t)a->loss_chunk : n;
        a->logits = NULL;
        a->head.chunk = (int32_t)chunk;
        a->head.logits = carve(base, &cur, chunk * (size_t)c->vocab);
        a->head.hidden = carve(base, &cur, chunk * C);
        a->head.d_hidden = carve(base, &cur, chunk * C);
        a->head.lse = carve(base, &cur, chunk);
        /* int32 rows in float slots: both 4 bytes, the block from malloc */
        a->head.targets = (int32_t *)(void *)carve(base, &cur, chunk);
        a->head.rows = (int32_t *)(void *)carve(base, &cur, n);
    } else {
        a->logits = carve(base, &cur, n * (size_t)c->vocab);
    }
    a->lse = carve(base, &cur, n);
    a->proj = carve(base, &cur, n * C);
    a->xn = carve(base, &cur, n * C);
    a->act = carve(base, &cur, n * (size_t)c->d_ff);
    a->rstd_again = carve(base, &cur, n);
    return cur;
}

static size_t layout_backward(struct model_acts *a, float *base)
{
    const struct model_config *c = &a->cfg;
    size_t n = (size_t)a->B * a->T, C = (size_t)c->d_model, F = (size_t)c->d_ff;
    size_t HD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim;
    size_t cur = 0;
    a->d_resid = carve(base, &cur, n * C);
    a->d_norm = carve(base, &cur, n * C);
    a->d_site = carve(base, &cur, n * C);
    a->d_q = carve(base, &cur, n * HD);
    a->d_k = carve(base, &cur, n * KVD);
    a->d_v = carve(base, &cur, n * KVD);
    a->d_q_raw = carve(base, &cur, c->qk_norm ? n * HD : 0);
    a->d_k_raw = carve(base, &cur, c->qk_norm ? n * KVD : 0);
    a->d_yatt = carve(base, &cur, n * HD);
    a->d_gate = carve(base, &cur, n * F);
    a->d_up = carve(base, &cur, n * F);
    a->d_act = carve(base, &cur, n * F);
    a->d_hidden = carve(base, &cur, n * C);
    size_t widest = C > F ? C : F;
    widest = widest > HD ? widest : HD;
    a->d_sampled = carve(base, &cur, matmul_sampled_scratch((int32_t)widest, (int32_t)widest));
    return cur;
}

/* Lay the forward block out for (cfg, B, T), growing it when needed. */
static void acts_prepare(struct model_acts *a, const struct model_config *c, int32_t B,
                         int32_t T)
{
    a->cfg = *c;
    a->B = B;
    a->T = T;
    a->ready = 0;
    a->head_done = 0;
    if (c->n_layers > a->layers_cap) {
        free(a->layers);
        a->layers = xcalloc((size_t)c->n_layers, sizeof *a->layers);
        a->layers_cap = c->n_layers;
    }
    size_t need = layout_forward(a, NULL);
    if (need > a->fwd_cap) {
        free(a->fwd);
        a->fwd = xalloc_floats(need);
        a->fwd_cap = need;
    }
    layout_forward(a, a->fwd);
    size_t n = (size_t)B * T;
    if (2 * n > a->ids_cap) {
        free(a->ids);
        a->ids = xmalloc(2 * n * sizeof *a->ids);
        a->ids_cap = 2 * n;
    }
    a->tokens = a->ids;
    a->targets = a->ids + n;
}

static void acts_prepare_backward(struct model_acts *a)
{
    size_t need = layout_backward(a, NULL);
    if (need > a->bwd_cap) {
        free(a->bwd);
        a->bwd = xalloc_floats(need);
        a->bwd_cap = need;
    }
    layout_backward(a, a->bwd);
}

const float *model_logits(const struct model_acts *a) { return a->logits; }
const float *model_hidden(const struct model_acts *a) { return a->hidden; }

/* ---- forward --------------------------------------------------------------------------- */

void model_embed_tokens(const struct model *m, const int32_t *tokens, int32_t n, float *out)
{
    int32_t C = m->cfg.d_model;
    if (!model_tensor_in_half(m, 0)) {
        embedding_forward(out, tokens, m->w.embed, n, C);
        /* the bf16 model reads a trained table's fp32 master as bfloat16, as its products
         * do: the same rows as the table saved and loaded again */
        if (m->precision == MODEL_BF16) round_floats_bf16(out, out, (size_t)n * (size_t)C);
        return;
    }
    for (int32_t i = 0; i < n; i++) /* one row each: the rows a batch uses are few */
        model_weight_rows(m, 0, tokens[i], 1, C, out + (size_t)i * C);
}

void model_head_logits(const struct model *m, const float *h, float *logits, int32_t n)
{
    int32_t head = lm_head_tensor(&m->cfg), C = m->cfg.d_model, V = m->cfg.vocab;
    if (block_products(m, head))
        half_matmul_forward(m, head, logits, h, n, C, V);
    else
        matmul_forward(logits, h, m->w.lm_head, n, C, V);
}

/* y (n, d_out) = x' W^T at a site, x' = x or what the input hook makes of it, then the
 * site's hook. */
int model_site_forward(const struct model *m, const struct model_hooks *hk, int32_t site,
                       const float *x, float *y, int32_t n)
{
    int32_t d_in, d_out;
    model_site_dims(m, site, &d_in, &d_out);
    if (hk && hk->site_input && !(x = hk->site_input(hk->ctx, hk->pass, site, x, n)))
        return -1;
    int32_t t = model_site_tensor(m, site);
    if (block_products(m, t))
        half_matmul_forward(m, t, y, x, n, d_in, d_out);
    else
        matmul_forward(y, x, m->params + m->tensors[t].offset, n, d_in, d_out);
    if (hk && hk->site_forward)
        return hk->site_forward(hk->ctx, hk->pass, site, x, y, n);
    return 0;
}

/* db (d) += the column sums of dy (n, d); nothing when db is NULL. */
static void bias_backward(float *db, const float *dy, int32_t n, int32_t d)
{
    if (!db)
        return;
    for (int32_t i = 0; i < n; i++)
        for (int32_t j = 0; j < d; j++)
            db[j] += dy[(size_t)i * d + j];
}

static void add_rows(float *out, const float *a, const float *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = a[i] + b[i];
}

static int check_inputs(const struct model *m, const int32_t *tokens, const int32_t *targets,
                        int32_t B, int32_t T)
{
    const struct model_config *c = &m->cfg;
    if (B <= 0 || T <= 0)
        return err_set("model_forward: batch %d x %d must be positive", (int)B, (int)T);
    if (T > c->max_seq)
        return err_set("model_forward: sequence length %d exceeds max_seq %d", (int)T,
                       (int)c->max_seq);
    if ((int64_t)B * T > INT32_MAX / 4)
        return err_set("model_forward: batch %d x %d is too large", (int)B, (int)T);
    size_t n = (size_t)B * T;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return err_set("model_forward: tokens[%zu] = %d is outside the vocabulary [0, %d)",
                           i, (int)tokens[i], (int)c->vocab);
        if (targets && (targets[i] < -1 || targets[i] >= c->vocab))
            return err_set("model_forward: targets[%zu] = %d is not -1 or in [0, %d)", i,
                           (int)targets[i], (int)c->vocab);
    }
    return 0;
}

int model_forward(struct model *m, struct model_acts *a, const int32_t *tokens,
                  const int32_t *targets, int32_t B, int32_t T, const struct model_hooks *hooks,
                  float *loss)
{
    const struct model_config *c = &m->cfg;
    if (check_inputs(m, tokens, targets, B, T) != 0)
        return -1;
    acts_prepare(a, c, B, T);
    int32_t n = B * T, C = c->d_model, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim;
    size_t nC = (size_t)n * C;
    memcpy(a->tokens, tokens, (size_t)n * sizeof *tokens);
    for (int32_t i = 0; i < n; i++)
        a->targets[i] = targets ? targets[i] : -1;
    rope_table(a->rope_cos, a->rope_sin, T, D, c);

    model_embed_tokens(m, a->tokens, n, a->layers[0].resid);
    for (int32_t l = 0; l < c->n_layers; l++) {
        const struct layer_weights *lw = &m->w.layers[l];
        struct layer_acts *la = &a->layers[l];
        float *out = l + 1 < c->n_layers ? a->layers[l + 1].resid : a->resid_final; /* (n, C) */
        int32_t s0 = l * SITE_KINDS;

        rmsnorm_forward(a->xn, la->rstd1, la->resid, lw->attn_norm, n, C, c->rms_eps);
        float *q_out = c->qk_norm ? la->q_raw : la->q, *k_out = c->qk_norm ? la->k_raw : la->k;
        if (model_site_forward(m, hooks, s0 + SITE_Q, a->xn, q_out, n) != 0 ||
            model_site_forward(m, hooks, s0 + SITE_K, a->xn, k_out, n) != 0 ||
            model_site_forward(m, hooks, s0 + SITE_V, a->xn, la->v, n) != 0)
            return -1;
        if (c->qkv_bias) {
            add_bias(q_out, lw->bq, n, H * D);
            add_bias(k_out, lw->bk, n, KV * D);
            add_bias(la->v, lw->bv, n, KV * D);
        }
        if (c->qk_norm) { /* each head's q and k normalized over its D values */
            rmsnorm_forward(la->q, la->rstd_q, la->q_raw, lw->q_norm, n * H, D, c->rms_eps);
            rmsnorm_forward(la->k, la->rstd_k, la->k_raw, lw->k_norm, n * KV, D, c->rms_eps);
        }
        rope_forward(la->q, a->rope_cos, a->rope_sin, B, T, H, D);
        rope_forward(la->k, a->rope_cos, a->rope_sin, B, T, KV, D);
        attention_forward(la->yatt, la->att_lse, la->q, la->k, la->v, B, T, H, KV, D);
        if (model_site_forward(m, hooks, s0 + SITE_O, la->yatt, a->proj, n) != 0)
            return -1;
        add_rows(la->h, la->resid, a->proj, nC);

        rmsnorm_forward(a->xn, la->rstd2, la->h, lw->mlp_norm, n, C, c->rms_eps);
        if (model_site_forward(m, hooks, s0 + SITE_GATE, a->xn, la->gate, n) != 0 ||
            model_site_forward(m, hooks, s0 + SITE_UP, a->xn, la->up, n) != 0)
            return -1;
        swiglu_forward(a->act, la->gate, la->up, (size_t)n * c->d_ff);
        if (model_site_forward(m, hooks, s0 + SITE_DOWN, a->act, a->proj, n) != 0)
            return -1;
        add_rows(out, la->h, a->proj, nC);
    }
    rmsnorm_forward(a->hidden, a->rstd_final, a->resid_final, m->w.final_norm, n, C,
                    c->rms_eps);
    double sum;
    if (a->loss_chunk > 0) { /* the loss's gradient now, chunk by chunk: d_hidden for backward */
        acts_prepare_backward(a);
        int32_t count = 0;
        for (int32_t i = 0; i < n; i++)
            count += a->targets[i] >= 0;
        float scale = count > 0 ? 1.0f / (float)count : 0.0f;
        if (a->loss_scale > 0.0f) scale *= a->loss_scale;
        int32_t head = lm_head_tensor(c);
        sum = head_loss_fused(m, head, a->hidden, a->targets, n, scale, a->d_hidden,
                              grad_of(m, head), a->lse, &a->head, &a->n_valid);
        a->head_done = 1;
    } else {
        model_head_logits(m, a->hidden, a->logits, n);
        sum = crossentropy_forward(a->lse, a->logits, a->targets, n, c->vocab, &a->n_valid);
    }
    float total = a->n_valid > 0 ? (float)(sum / a->n_valid) : 0.0f;
    if (hooks && hooks->hidden_forward &&
        hooks->hidden_forward(hooks->ctx, hooks->pass, a->hidden, n, &total) != 0)
        return -1;
    *loss = total;
    a->ready = 1;
    return 0;
}

/* ---- backward -------------------------------------------------------------------------- */

/* Backward of a site whose input x feeds several sites: dx_sum (n, d_in) = dy W (first) or
 * += dy W (later), plus the hook's part; dW += dy^T x when asked for, or only at the entries
 * of its sparse target. The hook sees this site's dx alone, so later sites go through the
 * d_site buffer when a hook is set. */
static int site_backward(const struct model *m, struct model_acts *a,
                         const struct model_hooks *hk, int32_t site, const float *x,
                         const float *dy, float *dx_sum, int first)
{
    int32_t d_in, d_out, n = a->B * a->T;
    model_site_dims(m, site, &d_in, &d_out);
    int32_t wt = model_site_tensor(m, site);
    const struct model_sparse_grad *sg = &m->sparse_grad[wt];
    float *dw = sg->index ? NULL : grad_of(m, wt);
    /* the input the forward's product used, made again */
    const float *x_in = x;
    if (hk && hk->site_input && !(x = hk->site_input(hk->ctx, hk->pass, site, x_in, n)))
        return -1;
    int input_hooked = x != x_in;
    int hooked = (hk && hk->site_backward) || input_hooked;
    float *dx = first || !hooked ? dx_sum : a->d_site;
    float dx_beta = first || hooked ? 0.0f : 1.0f;
    if (block_products(m, wt)) { /* 16 bits or the bf16 model: dx block by block; dW in fp32 */
        half_matmul_backward_dx(m, wt, dx, dy, n, d_in, d_out, dx_beta);
        matmul_backward(NULL, dw, dy, x, NULL, n, d_in, d_out, 0.0f);
    } else {
        matmul_backward(dx, dw, dy, x, m->params + m->tensors[wt].offset, n, d_in, d_out, dx_beta);
    }
    if (sg->index)
        matmul_backward_sampled(sg->out, sg->index, sg->n, dy, x, n, d_in, d_out,
                                a->d_sampled);
    if (!hooked)
        return 0;
    if (hk->site_backward && hk->site_backward(hk->ctx, hk->pass, site, x, dy, dx, n) != 0)
        return -1;
    if (input_hooked && hk->site_input_backward(hk->ctx, hk->pass, site, x_in, dx, n) != 0)
        return -1;
    if (dx != dx_sum) {
        size_t len = (size_t)n * d_in;
        for (size_t i = 0; i < len; i++)
            dx_sum[i] += dx[i];
    }
    return 0;
}

int model_backward(struct model *m, struct model_acts *a, const struct model_hooks *hooks)
{
    const struct model_config *c = &m->cfg;
    if (!a->ready)
        return err_set("model_backward: no finished forward pass to go back through");
    if (memcmp(&a->cfg, c, sizeof *c) != 0)
        return err_set("model_backward: the forward pass ran on a model of another shape");
    if (a->row_weight && a->head_done)
        return err_set("model_backward: per-row loss weights with the fused chunked loss");
    acts_prepare_backward(a);
    int32_t B = a->B, T = a->T, n = B * T, C = c->d_model;
    int32_t H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim;

    /* head: d(loss)/d(logits) = (softmax - onehot) / n_valid, written over the logits: the
     * (n, V) block is the largest of a step at a real vocabulary, and it is held once. So
     * the forward's logits are gone, and a second backward needs a new forward. In
     * loss_chunk mode the forward did this already, a chunk at a time. */
    a->ready = 0;
    if (!a->head_done) {
        float scale = a->n_valid > 0 ? 1.0f / (float)a->n_valid : 0.0f;
        if (a->loss_scale > 0.0f) scale *= a->loss_scale;
        float *d_logits = a->logits;
        crossentropy_backward(d_logits, a->logits, a->lse, a->targets, a->row_weight, n, c->vocab,
                              a->row_weight ? (a->loss_scale > 0.0f ? a->loss_scale : 1.0f) : scale);
        int32_t head = lm_head_tensor(c);
        if (block_products(m, head)) { /* dx block by block; dW (the bf16 model's) in fp32 */
            half_matmul_backward_dx(m, head, a->d_hidden, d_logits, n, C, c->vocab, 0.0f);
            matmul_backward(NULL, grad_of(m, head), d_logits, a->hidden, NULL, n, C, c->vocab,
                            0.0f);
        } else {
            matmul_backward(a->d_hidden, grad_of(m, head), d_logits, a->hidden, m->w.lm_head,
                            n, C, c->vocab, 0.0f);
        }
    }
    a->head_done = 0;
    if (hooks && hooks->hidden_backward &&
        hooks->hidden_backward(hooks->ctx, hooks->pass, a->hidden, a->d_hidden, n) != 0)
        return -1;
    memset(a->d_resid, 0, (size_t)n * C * sizeof(float));
    rmsnorm_backward(a->d_resid, grad_of(m, final_norm_tensor(c)), a->d_hidden,
                     a->resid_final, m->w.final_norm, a->rstd_final, n, C);

    /* d_resid holds d(loss)/d(output of layer l) on entry, d/d(input) on exit */
    for (int32_t l = c->n_layers - 1; l >= 0; l--) {
        const struct layer_weights *lw = &m->w.layers[l];
        struct layer_acts *la = &a->layers[l];
        int32_t s0 = l * SITE_KINDS;

        /* out = h + down(silu(gate(xn2)) * up(xn2)) */
        swiglu_forward(a->act, la->gate, la->up, (size_t)n * c->d_ff);
        if (site_backward(m, a, hooks, s0 + SITE_DOWN, a->act, a->d_resid, a->d_act, 1) != 0)
            return -1;
        swiglu_backward(a->d_gate, a->d_up, a->d_act, la->gate, la->up, (size_t)n * c->d_ff);
        rmsnorm_forward(a->xn, a->rstd_again, la->h, lw->mlp_norm, n, C, c->rms_eps);
        if (site_backward(m, a, hooks, s0 + SITE_GATE, a->xn, a->d_gate, a->d_norm, 1) != 0 ||
            site_backward(m, a, hooks, s0 + SITE_UP, a->xn, a->d_up, a->d_norm, 0) != 0)
            return -1;
        rmsnorm_backward(a->d_resid, grad_of(m, layer_tensor(c, l, SLOT_MLP_NORM)), a->d_norm,
                         la->h, lw->mlp_norm, la->rstd2, n, C);

        /* h = resid + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))) */
        if (site_backward(m, a, hooks, s0 + SITE_O, la->yatt, a->d_resid, a->d_yatt, 1) != 0)
            return -1;
        attention_backward(a->d_q, a->d_k, a->d_v, a->d_yatt, la->yatt, la->att_lse, la->q,
                           la->k, la->v, B, T, H, KV, D);
        rope_backward(a->d_q, a->rope_cos, a->rope_sin, B, T, H, D);
        rope_backward(a->d_k, a->rope_cos, a->rope_sin, B, T, KV, D);
        float *dq = a->d_q, *dk = a->d_k;
        if (c->qk_norm) { /* back through each head's norm: d(q before it) */
            memset(a->d_q_raw, 0, (size_t)n * H * D * sizeof(float));
            memset(a->d_k_raw, 0, (size_t)n * KV * D * sizeof(float));
            rmsnorm_backward(a->d_q_raw, grad_of(m, layer_tensor(c, l, SLOT_Q_NORM)), a->d_q,
                             la->q_raw, lw->q_norm, la->rstd_q, n * H, D);
            rmsnorm_backward(a->d_k_raw, grad_of(m, layer_tensor(c, l, SLOT_K_NORM)), a->d_k,
                             la->k_raw, lw->k_norm, la->rstd_k, n * KV, D);
            dq = a->d_q_raw;
            dk = a->d_k_raw;
        }
        if (c->qkv_bias) {
            bias_backward(grad_of(m, layer_tensor(c, l, SLOT_Q_BIAS)), dq, n, H * D);
            bias_backward(grad_of(m, layer_tensor(c, l, SLOT_K_BIAS)), dk, n, KV * D);
            bias_backward(grad_of(m, layer_tensor(c, l, SLOT_V_BIAS)), a->d_v, n, KV * D);
        }
        rmsnorm_forward(a->xn, a->rstd_again, la->resid, lw->attn_norm, n, C, c->rms_eps);
        if (site_backward(m, a, hooks, s0 + SITE_Q, a->xn, dq, a->d_norm, 1) != 0 ||
            site_backward(m, a, hooks, s0 + SITE_K, a->xn, dk, a->d_norm, 0) != 0 ||
            site_backward(m, a, hooks, s0 + SITE_V, a->xn, a->d_v, a->d_norm, 0) != 0)
            return -1;
        rmsnorm_backward(a->d_resid, grad_of(m, layer_tensor(c, l, SLOT_ATTN_NORM)), a->d_norm,
                         la->resid, lw->attn_norm, la->rstd1, n, C);
        if (hooks && hooks->layer_backward_done &&
            hooks->layer_backward_done(hooks->layer_ctx, l) != 0)
            return -1;
    }
    float *d_embed = grad_of(m, 0);
    if (d_embed)
        embedding_backward(d_embed, a->d_resid, a->tokens, n, C);
    return 0;
}

/* ---- cost ------------------------------------------------------------------------------ */

/* Training FLOPs per token = 6 * P + 12 * L * T * H * D, where
 *   P = L * (C*H*D [q] + 2*C*KV*D [k, v] + H*D*C [o] + 3*C*F [gate, up, down]) + V*C [head]
 * counts the parameters used in matrix products (the embedding lookup is not one): 2 FLOPs
 * per parameter and token forward, 4 backward. Attention per layer and token: QK^T and AV
 * are 2*T*H*D each forward over the full T x T square the kernels compute (the causal half
 * is not skipped), twice that backward, 12*T*H*D in all. */
double model_train_flops_per_token(const struct model_config *c, int32_t T)
{
    double C = c->d_model, HD = (double)c->n_heads * c->head_dim;
    double KVD = (double)c->n_kv_heads * c->head_dim, F = c->d_ff;
    double per_layer = C * HD + 2.0 * C * KVD + HD * C + 3.0 * C * F;
    double matrix_params = c->n_layers * per_layer + (double)c->vocab * C;
    return 6.0 * matrix_params + 12.0 * c->n_layers * (double)T * HD;
}
