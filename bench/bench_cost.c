/* bench_cost.c: FLOPs and sgemm calls of one training step (see bench_cost.h). The call
 * shapes mirror host/model/ops.c (matmul_*, attention_*) and the LoRA plugin's products. */
#include "bench_cost.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* y = x W^T and dx = dy W of one linear map (n rows, d_in -> d_out); dW = dy^T x if asked. */
static void add_linear(struct gemm_list *l, int32_t n, int32_t d_in, int32_t d_out,
                       int with_dw) {
    gemm_list_add(l, 0, 1, n, d_out, d_in, 0, 0, 0, 1.0);     /* forward */
    gemm_list_add(l, 0, 0, n, d_in, d_out, 0, 0, 0, 1.0);     /* dx */
    if (with_dw) gemm_list_add(l, 1, 0, d_out, d_in, n, 0, 0, 0, 1.0); /* dW */
}

/* The six products of a LoRA site: u = x A^T, y += s u B^T; g = dy B, dB += dy^T u,
 * dA += g^T x, dx += g A. */
static void add_lora(struct gemm_list *l, int32_t n, int32_t d_in, int32_t d_out, int32_t r) {
    gemm_list_add(l, 0, 1, n, r, d_in, 0, 0, 0, 1.0);
    gemm_list_add(l, 0, 1, n, d_out, r, 0, 0, 0, 1.0);
    gemm_list_add(l, 0, 0, n, r, d_out, 0, 0, 0, 1.0);
    gemm_list_add(l, 1, 0, d_out, r, n, 0, 0, 0, 1.0);
    gemm_list_add(l, 1, 0, r, d_in, n, 0, 0, 0, 1.0);
    gemm_list_add(l, 0, 0, n, d_in, r, 0, 0, 0, 1.0);
}

/* Per (example, head, layer) and causal block (ATTENTION_CAUSAL_BLOCK rows, as ops.c runs
 * them): S = Q K^T, O = P V forward; dP = dO V^T, dV += P^T dO, dQ = dS K, dK += dS^T Q
 * backward. Query block [i0, i1) meets keys [0, i1); key block [j0, j1) meets queries
 * [j0, T). Q rows have stride H*D, K and V rows KV*D. Returns the FLOPs per example. */
static double add_attention(struct gemm_list *l, const struct model_config *c, int32_t B,
                            int32_t T) {
    int32_t D = c->head_dim, hd = c->n_heads * D, kvd = c->n_kv_heads * D;
    double count = (double)B * c->n_heads * c->n_layers, flops = 0;
    for (int32_t i0 = 0; i0 < T; i0 += ATTENTION_CAUSAL_BLOCK) {
        int32_t i1 = i0 + ATTENTION_CAUSAL_BLOCK < T ? i0 + ATTENTION_CAUSAL_BLOCK : T;
        int32_t rows = i1 - i0, seen = T - i0; /* the key block [i0, i1) meets T - i0 queries */
        gemm_list_add(l, 0, 1, rows, i1, D, hd, kvd, T, count);
        gemm_list_add(l, 0, 0, rows, D, i1, T, kvd, hd, count);
        gemm_list_add(l, 0, 1, rows, i1, D, hd, kvd, T, count);
        gemm_list_add(l, 1, 0, rows, D, seen, T, hd, kvd, count);
        gemm_list_add(l, 0, 0, rows, D, i1, T, kvd, hd, count);
        gemm_list_add(l, 1, 0, rows, D, seen, T, hd, kvd, count);
        flops += 6.0 * 2.0 * rows * i1 * D; /* sum over key blocks of rows * seen is the same */
    }
    return flops * c->n_heads * c->n_layers;
}

void step_cost_build(struct step_cost *c, struct model *m, struct method_run *mr, int32_t B,
                     int32_t T) {
    memset(c, 0, sizeof *c);
    const struct model_config *cfg = &m->cfg;
    int32_t n = B * T, C = cfg->d_model, V = cfg->vocab;
    uint8_t *site_dw = xcalloc((size_t)m->n_sites + 1, 1);
    int head_dw = 0;

    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        if (t->n_trainable == 0) continue;
        if (t->model_tensor < 0) {
            c->adapter_entries += (double)t->n_trainable;
            continue;
        }
        /* An aliased model tensor: the model forms its dense gradient. Only products count:
         * a site's weight, or the head (embed_tokens when tied, else lm_head). A masked site
         * weight gets its gradient by a sampled product instead (no sgemm). */
        const struct model_tensor *mt = &m->tensors[t->model_tensor];
        if (mt->site >= 0 && t->mask) {
            c->sampled_entries += (double)t->n_trainable;
        } else if (mt->site >= 0) {
            site_dw[mt->site] = 1;
            c->dense_grad_weights += (double)mt->numel;
        } else if ((t->model_tensor == 0 && cfg->tied) || strcmp(mt->name, "lm_head.weight") == 0) {
            head_dw = 1;
            c->dense_grad_weights += (double)mt->numel;
        }
    }

    for (int32_t s = 0; s < m->n_sites; s++) {
        int32_t d_in, d_out;
        model_site_dims(m, s, &d_in, &d_out);
        c->matmul_weights += (double)d_in * d_out;
        add_linear(&c->gemms, n, d_in, d_out, site_dw[s]);
    }
    c->matmul_weights += (double)V * C;
    add_linear(&c->gemms, n, C, V, head_dw);
    double attention_per_example = add_attention(&c->gemms, cfg, B, T);

    /* LoRA's A (r, d_in) names its site's products; other adapters add no sgemm shapes. */
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        const struct mtensor *t = method_run_tensor(mr, i);
        if (t->model_tensor >= 0 || t->desc.site < 0 || t->desc.ndim != 2 ||
            !ends_with(t->name, "lora_A.weight"))
            continue;
        int32_t d_in, d_out;
        model_site_dims(m, t->desc.site, &d_in, &d_out);
        add_lora(&c->gemms, n, d_in, d_out, (int32_t)t->desc.shape[0]);
    }

    c->attention = attention_per_example / T;
    c->flops_per_token = 4.0 * c->matmul_weights + 2.0 * c->dense_grad_weights +
                         2.0 * c->sampled_entries + 6.0 * c->adapter_entries + c->attention;
    c->model_flops = model_train_flops_per_token(cfg, T);
    free(site_dw);
}

void step_cost_free(struct step_cost *c) { gemm_list_free(&c->gemms); }
