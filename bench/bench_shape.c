/* bench_shape.c: see bench_shape.h. */
#include "bench_shape.h"

#include <string.h>

#include "core.h"

static const struct preset presets[] = {
    {"smollm2-135m", "576x30", 64, 3, 1536, 49152},
    {"qwen2.5-0.5b", "896x24", 64, 2, 4864, 151936},
    {"llama-3.2-1b", "2048x16", 64, 8, 8192, 128256},
};

const struct preset *bench_preset(const char *name) {
    for (size_t k = 0; name && k < sizeof presets / sizeof presets[0]; k++)
        if (strcmp(name, presets[k].name) == 0) return &presets[k];
    return NULL;
}

int bench_shape_config(const char *size, int64_t head_dim, int64_t kv_heads, int64_t d_ff,
                       int64_t vocab, int32_t max_seq, struct model_config *c) {
    const char *x = strchr(size, 'x');
    int64_t C, L;
    char left[32];
    if (!x || (size_t)(x - size) >= sizeof left)
        return err_set("--size '%s': expected D_MODELxN_LAYERS, e.g. 256x4", size);
    memcpy(left, size, (size_t)(x - size));
    left[x - size] = '\0';
    if (parse_i64(left, &C) || parse_i64(x + 1, &L) || C <= 0 || L <= 0 || C > 65536 ||
        L > 1024)
        return err_set("--size '%s': expected D_MODELxN_LAYERS, e.g. 256x4", size);
    if (C % head_dim != 0)
        return err_set("--size '%s': d_model %lld is not a multiple of the head dim %lld",
                       size, (long long)C, (long long)head_dim);
    int32_t H = (int32_t)(C / head_dim);
    *c = (struct model_config){
        .vocab = vocab > 0 ? (int32_t)vocab : BYTE_VOCAB,
        .d_model = (int32_t)C,
        .n_layers = (int32_t)L,
        .n_heads = H,
        .n_kv_heads = kv_heads > 0 ? (int32_t)kv_heads : H >= 2 ? H / 2 : 1,
        .head_dim = (int32_t)head_dim,
        .d_ff = d_ff > 0 ? (int32_t)d_ff : (int32_t)((C + 1) / 3 * 8),
        .max_seq = max_seq,
        .rms_eps = 1e-5f,
        .rope_theta = 10000.0f,
        .tied = 1,
    };
    return model_config_check(c);
}
