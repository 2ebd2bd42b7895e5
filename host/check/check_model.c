/* check_model.c: the small model, batch and precise loss `peft check` (and the methods'
 * tests) run plugins on (see check.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/core.h"

int check_tiny_model(struct model *m, int tied, uint64_t seed, float init_std) {
    struct model_config c = {
        .vocab = 29, .d_model = 16, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
        .head_dim = 8, .d_ff = 24, .max_seq = 16, .rms_eps = 1e-5f, .rope_theta = 100.0f,
        .tied = tied,
    };
    if (model_init(m, &c) != 0) return -1;
    model_init_random(m, seed, init_std);
    struct rng r;
    rng_seed(&r, seed ^ 0x5eed);
    for (int32_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ndim == 1)
            for (size_t j = 0; j < m->tensors[i].numel; j++)
                m->params[m->tensors[i].offset + j] = rng_uniform(&r, 0.7f, 1.3f);
    return 0;
}

int check_model_copy(struct model *dst, const struct model *src) {
    if (model_init(dst, &src->cfg) != 0) return -1;
    memcpy(dst->params, src->params, src->n_params * sizeof(float));
    for (int32_t t = 0; t < src->n_tensors; t++) { /* the 16-bit copies too, and their state */
        if (!src->half[t]) continue;
        size_t n = src->tensors[t].numel;
        uint16_t *v = xmalloc(n * sizeof *v);
        memcpy(v, src->half[t], n * sizeof *v);
        model_tensor_set_half(dst, t, v, src->half_bf16[t]);
        if (src->fp32_ok[t]) /* set_half dropped the fp32 values copied above: again */
            memcpy(model_tensor_data(dst, t), src->params + src->tensors[t].offset,
                   n * sizeof(float));
    }
    dst->precision = src->precision;
    return 0;
}

void check_mixed_batch(struct batch *b, int32_t B, int32_t T, int32_t vocab, uint64_t seed) {
    struct rng r;
    rng_seed(&r, seed);
    memset(b, 0, sizeof *b);
    b->B = B;
    b->T = T;
    b->tokens = xmalloc((size_t)B * T * sizeof(int32_t));
    b->targets = xmalloc((size_t)B * T * sizeof(int32_t));
    b->example_task = xmalloc((size_t)B * sizeof(int32_t));
    b->prompt_len = xmalloc((size_t)B * sizeof(int32_t));
    for (int32_t i = 0; i < B; i++) {
        b->example_task[i] = i % 2;
        b->prompt_len[i] = 2;
        for (int32_t t = 0; t < T; t++) {
            b->tokens[i * T + t] = (int32_t)rng_below(&r, (uint64_t)vocab);
            b->targets[i * T + t] = t >= 1 ? (int32_t)rng_below(&r, (uint64_t)vocab) : -1;
        }
    }
    b->cap_B = B;
    b->cap_T = T;
}

void check_batch_free(struct batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->example_task);
    free(b->prompt_len);
}

double check_loss_from_logits(const struct model *m, const struct model_acts *a,
                              const struct batch *b) {
    const float *lg = model_logits(a);
    int32_t V = m->cfg.vocab;
    double sum = 0.0;
    int32_t n = 0;
    for (int32_t i = 0; i < b->B * b->T; i++) {
        if (b->targets[i] < 0) continue;
        const float *row = lg + (size_t)i * V;
        double mx = row[0], s = 0.0;
        for (int32_t v = 1; v < V; v++) mx = fmax(mx, row[v]);
        for (int32_t v = 0; v < V; v++) s += exp((double)row[v] - mx);
        sum += mx + log(s) - row[b->targets[i]];
        n++;
    }
    return n ? sum / n : 0.0;
}

double check_nmse(const float *got, const float *want, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? num / den : num;
}
