/*
 * decode_cache.c: decoding with the key/value cache gives what the full forward gives. Random
 * models (grouped-query attention; llama with llama3 RoPE scaling, qwen2's biases, qwen3's q/k
 * norms with H*D != C) are run greedily for 24 tokens
 * after a 7-token prompt; at every step the cached logits are compared with the last row of a
 * full forward over the whole prefix, and the greedy token with its argmax. Prefill in one
 * step and token by token must agree too.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "model.h"

static int32_t argmax(const float *v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static void run(const char *family, struct model_config c) {
    struct model m = {0};
    CHECK(model_config_check(&c) == 0 && model_init(&m, &c) == 0, "model: %s", err_msg());
    model_init_random(&m, 7, 0.5f); /* large weights: logits far apart, a real test of argmax */
    int32_t seq[40] = {3, 14, 15, 92, 65, 35, 89};
    int32_t P = 7, N = 24, V = c.vocab;
    struct model_kv_cache *kv = model_kv_cache_new(&m, 40);
    float *logits = xmalloc((size_t)V * sizeof *logits);
    CHECK(model_decode(&m, kv, seq, P, NULL, logits) == 0, "prefill: %s", err_msg());
    struct model_acts *a = model_acts_new();
    double worst = 0;
    int disagree = 0;
    for (int32_t step = 0; step < N; step++) {
        int32_t T = P + step;
        float loss;
        CHECK(model_forward(&m, a, seq, NULL, 1, T, NULL, &loss) == 0, "forward: %s", err_msg());
        const float *full = model_logits(a) + (size_t)(T - 1) * V; /* the last row */
        for (int32_t v = 0; v < V; v++) {
            double d = fabs((double)full[v] - logits[v]);
            if (d > worst) worst = d;
        }
        int32_t next = argmax(logits, V);
        disagree += next != argmax(full, V);
        seq[T] = next;
        CHECK(model_decode(&m, kv, &seq[T], 1, NULL, logits) == 0, "step %d: %s", step, err_msg());
    }
    printf("%s: greedy, %d steps after a %d-token prompt: %d argmax disagreements with the full "
           "forward, worst logit difference %.2e\n", family, N, P, disagree, worst);
    CHECK(disagree == 0 && worst < 1e-4, "the cache differs from the full forward");

    /* the same prefix token by token */
    struct model_kv_cache *one = model_kv_cache_new(&m, 40);
    float *l1 = xmalloc((size_t)V * sizeof *l1);
    for (int32_t i = 0; i < P + N; i++) model_decode(&m, one, &seq[i], 1, NULL, l1);
    struct model_kv_cache *all = model_kv_cache_new(&m, 40);
    float *l2 = xmalloc((size_t)V * sizeof *l2);
    model_decode(&m, all, seq, P + N, NULL, l2);
    double d12 = 0;
    for (int32_t v = 0; v < V; v++) d12 = fmax(d12, fabs((double)l1[v] - l2[v]));
    printf("%s: %d tokens one by one against one prefill: worst logit difference %.2e\n", family, P + N, d12);
    CHECK(d12 < 1e-4, "token-by-token and prefill differ");
    /* the context is full: refused */
    int32_t tok = 1;
    for (int32_t i = model_kv_cache_len(all); i < 40; i++) model_decode(&m, all, &tok, 1, NULL, l2);
    CHECK(model_decode(&m, all, &tok, 1, NULL, l2) == -1 && strstr(err_msg(), "context is full"),
          "a full cache accepted a token");
    model_kv_cache_free(kv);
    model_kv_cache_free(one);
    model_kv_cache_free(all);
    model_acts_free(a);
    free(logits);
    free(l1);
    free(l2);
    model_free(&m);
}

int main(void) {
    struct model_config llama = {.vocab = 97, .d_model = 32, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2,
                                 .head_dim = 8, .d_ff = 48, .max_seq = 40, .rms_eps = 1e-5f,
                                 .rope_theta = 10000.0f, .tied = 0, .rope = {ROPE_LLAMA3, 8.0f, 1.0f, 4.0f, 16}};
    run("llama (llama3 RoPE)", llama);
    struct model_config qwen2 = llama;
    qwen2.rope = (struct rope_scaling){0};
    qwen2.qkv_bias = 1;
    run("qwen2 (q/k/v biases)", qwen2);
    struct model_config qwen3 = qwen2;
    qwen3.qkv_bias = 0;
    qwen3.qk_norm = 1;
    qwen3.head_dim = 16; /* H*D = 64 != d_model, as Qwen3's */
    run("qwen3 (q/k norms)", qwen3);
    return check_report("decode_cache");
}
