/*
 * rope_scaling.c: RoPE's scaled frequencies against HF transformers' (torch, computed by
 * tests/gen_rope_scaling.py from modeling_rope_utils' formulas) for Llama-3.2-1B's llama3
 * scaling (theta 500000, head_dim 64, factor 32, low 1, high 4, original 8192) and a linear
 * factor 4; config.json's rope_scaling read, written back and refused by name.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "checkpoint_hf.h"
#include "model.h"

static const double LLAMA3[32] = {
    1.000000000e+00, 6.636012793e-01, 4.403666258e-01, 2.922278345e-01, 1.939227581e-01,
    1.286873817e-01, 8.539710194e-02, 5.666961893e-02, 3.760603070e-02, 2.495540865e-02,
    1.656044088e-02, 1.098952908e-02, 7.292665076e-03, 4.839421250e-03, 3.211446106e-03,
    1.290548011e-03, 4.295567051e-04, 9.708286234e-05, 1.946163866e-05, 1.291476747e-05,
    8.570255886e-06, 5.687232260e-06, 3.774054449e-06, 2.504467147e-06, 1.661967417e-06,
    1.102883630e-06, 7.318749340e-07, 4.856731266e-07, 3.222932889e-07, 2.138742303e-07,
    1.419272024e-07, 9.418306490e-08};
static const double LINEAR[8] = {2.500000000e-01, 7.905694097e-02, 2.500000037e-02, 7.905694656e-03,
                                 2.499999944e-03, 7.905694656e-04, 2.500000119e-04, 7.905694656e-05};

static double worst_rel(const struct model_config *c, const double *want, int32_t D) {
    double worst = 0;
    for (int32_t j = 0; j < D / 2; j++) {
        double rel = fabs(rope_inv_freq(c, j, D) - want[j]) / want[j];
        if (rel > worst) worst = rel;
    }
    return worst;
}

static void write_config(const char *dir, const char *rope) {
    char *path = xasprintf("%s/config.json", dir);
    char *text = xasprintf("{\"model_type\": \"llama\", \"vocab_size\": 64, \"hidden_size\": 16, "
                           "\"intermediate_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                           "\"num_key_value_heads\": 1, \"head_dim\": 8, \"rope_theta\": 500000.0, %s}", rope);
    file_write_atomic(path, text, strlen(text));
    free(text);
    free(path);
}

int main(void) {
    /* torch computes in float32: agreement to float32 precision */
    struct model_config c = {.rope_theta = 500000.0f,
                             .rope = {ROPE_LLAMA3, 32.0f, 1.0f, 4.0f, 8192}};
    double w3 = worst_rel(&c, LLAMA3, 64);
    c = (struct model_config){.rope_theta = 10000.0f, .rope = {ROPE_LINEAR, 4.0f, 0, 0, 0}};
    double wl = worst_rel(&c, LINEAR, 16);
    printf("inverse frequencies against torch: llama3 (32 pairs) worst relative error %.2e, "
           "linear (8 pairs) %.2e\n", w3, wl);
    CHECK(w3 < 2e-6 && wl < 2e-6, "rope frequencies differ from torch's");

    char dir[] = "/tmp/peft_rope.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    write_config(dir, "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, "
                      "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}");
    struct model_config r;
    CHECK(hf_config_load(dir, &r) == 0 && r.rope.type == ROPE_LLAMA3 && r.rope.factor == 32.0f &&
              r.rope.low_freq_factor == 1.0f && r.rope.high_freq_factor == 4.0f && r.rope.original_context == 8192,
          "llama3 rope_scaling read: %s", err_msg());
    /* written back and read again: the same scaling */
    struct model m = {0};
    if (model_init(&m, &r) == 0) {
        char *out = xasprintf("%s/saved", dir);
        struct model_config again;
        CHECK(hf_model_save(out, &m, NULL) == 0 && hf_config_load(out, &again) == 0 &&
                  memcmp(&again.rope, &r.rope, sizeof r.rope) == 0, "rope scaling lost on saving: %s", err_msg());
        free(out);
        model_free(&m);
    }
    write_config(dir, "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}");
    CHECK(hf_config_load(dir, &r) == 0 && r.rope.type == ROPE_LINEAR && r.rope.factor == 2.0f,
          "linear (old 'type' spelling): %s", err_msg());
    write_config(dir, "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    CHECK(hf_config_load(dir, &r) == -1 && strstr(err_msg(), "config.json: rope_scaling: rope_type 'yarn' is "
                                                               "not supported (default, linear, llama3)"),
          "yarn: %s", err_msg());
    printf("refused: %s\n", err_msg());
    write_config(dir, "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0}");
    CHECK(hf_config_load(dir, &r) == -1 && strstr(err_msg(), "high_freq_factor missing"), "llama3 without high: %s", err_msg());
    printf("refused: %s\n", err_msg());
    /* mistral: llama's layout; the context is cut to the sliding window, where full attention
     * is the model's own */
    char *mistral = xasprintf("%s/config.json", dir);
    const char *mtext = "{\"model_type\": \"mistral\", \"vocab_size\": 64, \"hidden_size\": 16, "
                        "\"intermediate_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                        "\"num_key_value_heads\": 1, \"max_position_embeddings\": 64, \"sliding_window\": 8}";
    file_write_atomic(mistral, mtext, strlen(mtext));
    free(mistral);
    CHECK(hf_config_load(dir, &r) == 0 && r.sliding_window == 8 && r.max_seq == 8 && !r.qkv_bias && !r.qk_norm,
          "mistral: %s (max_seq %d)", err_msg(), (int)r.max_seq);
    printf("mistral: sliding_window 8 of 64 positions -> context %d\n", (int)r.max_seq);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
    return check_report("rope_scaling");
}
