/*
 * model.h: the llama-architecture decoder, fp32, row-major, every matrix product through
 * cblas_sgemm. RMSNorm, rotary embeddings in the HF rotate-half convention, grouped-query
 * attention, SwiGLU MLP, tied or untied head.
 *
 * Dimension letters: B batch, T sequence, C = d_model, H heads, KV kv heads, D head_dim,
 * F = d_ff, V = vocab, n_rows = B*T.
 *
 * Parameters live in one block (llm.c style) with a struct of views into it; gradients, when
 * asked for, in a second block of the same layout. Activations live in a separate object so
 * several passes (main, auxiliary) can be in flight.
 *
 * Sites are the seven linear projections of every layer, index = layer * 7 + kind, named as in
 * HF ("model.layers.3.self_attn.q_proj"). Hooks let adaptation methods add to a site's output
 * and to its input gradient.
 */
#ifndef PEFT_MODEL_H
#define PEFT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "gemm.h" /* the matrix products every layer above uses */

struct model_config {
    int32_t vocab;       /* V */
    int32_t d_model;     /* C */
    int32_t n_layers;    /* L */
    int32_t n_heads;     /* H */
    int32_t n_kv_heads;  /* KV, divides H */
    int32_t head_dim;    /* D (H*D need not equal C) */
    int32_t d_ff;        /* F */
    int32_t max_seq;     /* longest T accepted */
    float rms_eps;
    float rope_theta;
    int32_t tied;        /* lm_head shares embed_tokens */
    int32_t qkv_bias;    /* q, k and v projections have biases (qwen2) */
    int32_t qk_norm;     /* RMSNorm of each head's q and k before RoPE (qwen3) */
    int32_t sliding_window; /* mistral's attention window (0: none); must cover max_seq */
    struct rope_scaling {
        int32_t type;             /* ROPE_DEFAULT, ROPE_LINEAR, ROPE_LLAMA3 */
        float factor;             /* linear, llama3: frequencies divided by it */
        float low_freq_factor;    /* llama3: wavelengths above original / low are scaled */
        float high_freq_factor;   /* llama3: wavelengths below original / high are kept */
        int32_t original_context; /* llama3: original_max_position_embeddings */
    } rope;
};
enum { ROPE_DEFAULT = 0, ROPE_LINEAR = 1, ROPE_LLAMA3 = 2 };

/* The inverse frequency of RoPE pair j of D (HF's _compute_*_parameters; a zeroed scaling is
 * the default RoPE). */
double rope_inv_freq(const struct model_config *c, int32_t j, int32_t D);

enum site_kind {
    SITE_Q, SITE_K, SITE_V, SITE_O, SITE_GATE, SITE_UP, SITE_DOWN, SITE_KINDS
};
extern const char *const site_kind_names[SITE_KINDS]; /* "q_proj", ... */

/* Views into the parameter (or gradient) block. */
struct model_weights {
    float *embed;        /* (V, C) model.embed_tokens.weight */
    float *final_norm;   /* (C) model.norm.weight */
    float *lm_head;      /* (V, C) lm_head.weight; == embed when tied */
    struct layer_weights {
        float *attn_norm;  /* (C) input_layernorm */
        float *wq;         /* (H*D, C) */
        float *wk;         /* (KV*D, C) */
        float *wv;         /* (KV*D, C) */
        float *wo;         /* (C, H*D) */
        float *mlp_norm;   /* (C) post_attention_layernorm */
        float *wgate;      /* (F, C) */
        float *wup;        /* (F, C) */
        float *wdown;      /* (C, F) */
        float *bq, *bk, *bv; /* (H*D), (KV*D), (KV*D) with qkv_bias, else NULL */
        float *q_norm, *k_norm; /* (D) each with qk_norm, else NULL */
    } *layers;           /* (L) */
};

/* One named model tensor (HF name), for I/O and for plugins registering base tensors. */
struct model_tensor {
    char name[96];       /* "model.layers.0.self_attn.q_proj.weight" */
    int32_t ndim;
    int64_t shape[2];
    size_t offset;       /* in floats, into the parameter block */
    size_t numel;
    int32_t site;        /* site index, or -1 (norms, embeddings, head) */
};

/* A sparse gradient target for a site's weight (serves: LoTA's masked weights). When index is
 * set, model_backward forms that weight's gradient only at the n entries of index (sorted flat
 * indices into its (d_out, d_in) storage) and accumulates them (+=) into out (n), a sampled
 * product of dy and x; no dense dW is formed for it and need_grad is not consulted. */
struct model_sparse_grad {
    const uint64_t *index;     /* (n), or NULL: no target */
    uint64_t n;
    float *out;                /* (n) */
};

struct model {
    struct model_config cfg;
    float *params;             /* one block, n_params floats */
    size_t n_params;
    struct model_weights w;    /* views into params */
    float *grads;              /* NULL, or one block like params (model_alloc_grads) */
    struct model_weights g;    /* views into grads */
    /* Per tensor: compute its gradient in model_backward (index as in tensors[]). Only the
     * gradients of flagged tensors are written; the others are left untouched. */
    uint8_t *need_grad;
    /* Per tensor (index as in tensors[]): the sparse target, if any; borrowed pointers, set
     * with model_set_sparse_grad. */
    struct model_sparse_grad *sparse_grad;
    struct model_tensor *tensors;
    int32_t n_tensors;
    int32_t n_sites;           /* L * 7 */
    /* Frozen matrices (site weights, the embedding, the head) kept in a checkpoint's 16-bit
     * type, with no fp32 copy of them:
     * half[t] holds tensor t's numel values (bfloat16 when half_bf16[t], else IEEE fp16), or
     * is NULL. While fp32_ok[t] is 0 the tensor's range of params is unused - never touched,
     * so it takes no memory (the block comes zeroed from the allocator, page by page) - and
     * the products widen the weight block by block. Asking for the fp32 values
     * (model_tensor_data, model_site_weight) widens it into params once (fp32_ok = 1), as a
     * method that trains, writes or reads the weight needs. All NULL for a model made in
     * fp32 (model_init_random, F32 checkpoints). */
    uint16_t **half;           /* (n_tensors) */
    uint8_t *half_bf16;        /* (n_tensors) */
    uint8_t *fp32_ok;          /* (n_tensors) */
    /* MODEL_FP32, or MODEL_BF16 (model_set_bf16): every matrix held in bfloat16, and every
     * product through a model weight (sites, head) takes both operands in bfloat16 with fp32
     * sums. */
    int32_t precision;
};
enum model_precision { MODEL_FP32 = 0, MODEL_BF16 = 1 };

/* Check a config (positive sizes, H % KV == 0, ...). -1 with a reason naming the key. */
int model_config_check(const struct model_config *c);
/* Allocate a model with zeroed parameters. */
int model_init(struct model *m, const struct model_config *c);
/* Random init as HF llama does: normal(0, init_std) for matrices, ones for norms. */
void model_init_random(struct model *m, uint64_t seed, float init_std);
void model_free(struct model *m);
void model_alloc_grads(struct model *m);     /* zeroed; need_grad all 0 */
void model_zero_grads(struct model *m);
/* Free the gradient block (views cleared); model_alloc_grads makes a new one. */
void model_free_grads(struct model *m);
/* Give a site's weight tensor a sparse gradient target (index NULL removes it). index and out
 * are borrowed until removed. -1 if the tensor is not a site's weight. */
int model_set_sparse_grad(struct model *m, int32_t tensor, const uint64_t *index, uint64_t n,
                          float *out);
int32_t model_find_tensor(const struct model *m, const char *name); /* index or -1 */

/* Sites. */
void model_site_name(const struct model *m, int32_t site, char *out, size_t cap);
int32_t model_site_kind(int32_t site);
int32_t model_site_layer(int32_t site);
void model_site_dims(const struct model *m, int32_t site, int32_t *d_in, int32_t *d_out);
/* (d_out, d_in) fp32, widened from the 16-bit copy first if need be (memory: the tensor's
 * fp32 range becomes resident). */
float *model_site_weight(const struct model *m, int32_t site);
int32_t model_site_tensor(const struct model *m, int32_t site); /* index into tensors[] */

/* ---- 16-bit frozen weights (half.c) ------------------------------------------------------ */
/* Keep tensor t (a matrix) as the 16-bit values v (numel, owned by the model from now
 * on); its fp32 range is dropped. */
void model_tensor_set_half(struct model *m, int32_t t, uint16_t *v, int bf16);
/* Is tensor t held in 16 bits only (no fp32 values yet)? */
int model_tensor_in_half(const struct model *m, int32_t t);
/* Tensor t's fp32 values in params, widened from its 16-bit copy first if need be. */
float *model_tensor_data(const struct model *m, int32_t t);
/* Tensor t's values into out (numel floats), without making its fp32 range resident. */
void model_tensor_read(const struct model *m, int32_t t, float *out);
/* Tensor t's 16-bit copy widened into out (numel), whatever its fp32 range holds. */
void model_tensor_read_half(const struct model *m, int32_t t, float *out);
/* Back to the 16-bit copy (the caller knows the fp32 values equal it): the fp32 range is
 * given back to the system. No-op for a tensor without one. */
void model_tensor_release(struct model *m, int32_t t);
/* Rows r0..r0+rows of weight tensor t (a matrix with d_in columns) as fp32 into out
 * (rows, d_in): a view of params when fp32_ok, else widened into out. */
const float *model_weight_rows(const struct model *m, int32_t t, int64_t r0, int32_t rows,
                               int32_t d_in, float *out);

/* ---- bfloat16 products (precision.c) ------------------------------------------------------ */
/* The bf16 model: every matrix (site weights, embedding, head) not yet in bfloat16 is rounded
 * to it (round to nearest even) and kept so, its fp32 range given back; from then on each
 * product through a model weight rounds its activation operand (x forward, dy for dx) to
 * bfloat16 and sums in fp32 - bf16 x bf16 -> fp32, as mixed-precision training does. A weight
 * a method trains gets an fp32 range again (model_tensor_data: the master copy, which
 * starts at the bf16 values) and the products round it as they read it. Norms, attention,
 * softmax, the loss, the weight gradients, the plugins' products and the optimizer stay
 * fp32. Call once, right after the weights are made or loaded, before any snapshot. */
void model_set_bf16(struct model *m);
/* The precision name asks for ("fp32", "bf16", or "auto": fp32, as this build has no native
 * bf16 product), or with name NULL the environment's PEFT_PRECISION, else auto. -1 with one
 * line starting with where (or PEFT_PRECISION) for another name. */
int model_precision_choose(const char *name, const char *where, int32_t *out);
const char *model_precision_name(int32_t precision); /* "fp32" or "bf16" */
/* out (n) = x (n) rounded to bfloat16 values (nearest even; NaN stays NaN), kept as fp32;
 * out may be x. Threaded. */
void round_floats_bf16(const float *x, float *out, size_t n);

/* ---- snapshots of the weights (snapshot.c) ------------------------------------------------ */
/* The model's weights at one point (a stage's start or result), as cheap as the model keeps
 * them: a tensor still held in 16 bits only is recorded as such (its values are the model's
 * 16-bit copy, which never changes), every other tensor's fp32 values are copied. */
struct model_snapshot;
struct model_snapshot *model_snapshot_take(const struct model *m);
void model_snapshot_free(struct model_snapshot *s);
/* Put the weights of s back into m. */
void model_snapshot_restore(struct model *m, const struct model_snapshot *s);
/* Tensor t of s: its fp32 values, or NULL where it is the model's 16-bit copy. */
const float *model_snapshot_tensor(const struct model_snapshot *s, int32_t t);
/* Tensor t of s into out (numel floats). */
void model_snapshot_read(const struct model_snapshot *s, const struct model *m, int32_t t,
                         float *out);

/* Hooks called at every site (NULL members are skipped). They return 0 or -1 (err_set). */
struct model_hooks {
    void *ctx;
    uint32_t pass;
    /* y (n_rows, d_out) already holds x W^T. */
    int (*site_forward)(void *ctx, uint32_t pass, int32_t site, const float *x, float *y,
                        int32_t n_rows);
    /* dx (n_rows, d_in) already holds dy W. */
    int (*site_backward)(void *ctx, uint32_t pass, int32_t site, const float *x,
                         const float *dy, float *dx, int32_t n_rows);
    /* (may be NULL) The input the site's product uses: x itself, or x rewritten into a
     * buffer of the hooks' owner, valid until the next call; NULL on failure. Called before
     * the product in the forward and again in the backward (the same x gives the same
     * result). */
    const float *(*site_input)(void *ctx, uint32_t pass, int32_t site, const float *x,
                               int32_t n_rows);
    /* With site_input rewriting x: dx (n_rows, d_in) holds this site's d(loss)/d(x it
     * returned); make it d(loss)/dx. */
    int (*site_input_backward)(void *ctx, uint32_t pass, int32_t site, const float *x,
                               float *dx, int32_t n_rows);
    /* After the final norm: h (n_rows, C). May add to *loss. */
    int (*hidden_forward)(void *ctx, uint32_t pass, const float *h, int32_t n_rows,
                          float *loss);
    /* Add into dh (n_rows, C). */
    int (*hidden_backward)(void *ctx, uint32_t pass, const float *h, float *dh,
                           int32_t n_rows);
    /* (may be NULL) Layer l's backward is done: the gradients of its weights and of what the
     * hooks at its sites hold are final for this pass (serves: summing them over the
     * processes while the layers below run theirs). Called for l = L-1 down to 0. */
    int (*layer_backward_done)(void *layer_ctx, int32_t layer);
    void *layer_ctx;
};

/* One site's product for n rows: y (n, d_out) = x (n, d_in) W^T, then the hook's part. */
int model_site_forward(const struct model *m, const struct model_hooks *hk, int32_t site,
                       const float *x, float *y, int32_t n);

/* Activations of one pass for a (B, T) batch; grows on demand. */
struct model_acts;
struct model_acts *model_acts_new(void);
void model_acts_free(struct model_acts *a);
/* The next backward passes compute the gradients of scale * loss (gradient accumulation:
 * each micro-batch's share of the answer tokens of the whole step). 1 by default. */
void model_acts_set_loss_scale(struct model_acts *a, float scale);

/* The next backward passes take the loss as sum_i w[i] * loss_i over the rows i with a
 * target (loss_i their cross-entropy), times the loss scale, instead of the mean: w (B*T) is
 * borrowed until it is set again (NULL: the mean). A caller whose loss is a function of the
 * rows' log-probabilities (label prediction) gives its derivative by each row's loss this
 * way. Not with loss_chunk (its gradient is made in the forward): that backward fails. */
void model_acts_set_row_weights(struct model_acts *a, const float *w);
/* Training forwards (rows > 0): the head, the loss and the loss's gradient run together over
 * chunks of `rows` rows that have a target, so the (B*T, V) logits are never held whole and
 * rows without a target cost no head product. model_logits is then NULL, and the forward
 * already adds the head's weight gradient (when it is asked for), so the gradients are
 * zeroed before it and a backward follows it. 0 (the default): logits kept whole. */
void model_acts_set_loss_chunk(struct model_acts *a, int32_t rows);
/* The chunk for a model: the rows whose logits fit in 32 MiB, 64 at least. */
int32_t model_loss_chunk_rows(const struct model_config *c);

/* Forward over tokens (B, T). targets (B, T): next-token ids, -1 = no loss at that row.
 * Returns 0 and sets *loss = mean cross-entropy over rows with a target (0 if none), plus
 * whatever hidden_forward adds. Logits stay in acts for model_logits. */
int model_forward(struct model *m, struct model_acts *a, const int32_t *tokens,
                  const int32_t *targets, int32_t B, int32_t T, const struct model_hooks *hooks,
                  float *loss);
/* Backward of the last model_forward on `a` with d(loss) = 1: writes (accumulates, +=) the
 * gradients of tensors with need_grad set into m->grads, and those of tensors with a sparse
 * target into the target, and calls the hooks. It turns the logits into their gradient in
 * place, so it runs once per forward (a second call fails) and model_logits is the
 * forward's only until then. */
int model_backward(struct model *m, struct model_acts *a, const struct model_hooks *hooks);
/* (B*T, V) logits of the last forward on `a` (until model_backward); NULL in loss_chunk
 * mode. */
const float *model_logits(const struct model_acts *a);
/* (B*T, C) final hidden state (after the final norm) of the last forward on `a`. */
const float *model_hidden(const struct model_acts *a);

/* FLOPs of one training step (forward + backward, all parameters) per token, for benchmarks. */
double model_train_flops_per_token(const struct model_config *c, int32_t T);

/* ---- decoding with a key/value cache (decode.c) ------------------------------------------ */
/* The keys (after RoPE) and values of every layer for the positions seen so far, so that each
 * new token costs one row of every product instead of the whole sequence again. */
struct model_kv_cache;
/* A cache for up to cap positions (at most max_seq). */
struct model_kv_cache *model_kv_cache_new(const struct model *m, int32_t cap);
void model_kv_cache_free(struct model_kv_cache *c);
int32_t model_kv_cache_len(const struct model_kv_cache *c);
/* Forget every position (a new sequence). */
void model_kv_cache_reset(struct model_kv_cache *c);
/* Run tokens[0..n) at the next n positions; logits (V) of the last one into logits. -1 with
 * "the context is full (cap positions)" or a hook's error. */
int model_decode(struct model *m, struct model_kv_cache *c, const int32_t *tokens, int32_t n,
                 const struct model_hooks *hooks, float *logits);

#endif
