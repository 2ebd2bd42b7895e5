/* bench_shape.h: the model shapes the benchmarks build (bench_shape.c): "CxL" sizes and the
 * presets named after real models, as llama configs with random weights. */
#ifndef PEFT_BENCH_SHAPE_H
#define PEFT_BENCH_SHAPE_H

#include <stdint.h>

#include "model.h"

#define BYTE_VOCAB 259 /* 256 bytes + BOS, EOS, PAD */

/* The shapes of the models the benchmarks are named after (their config.json files are in
 * tests/fixtures/configs/): llama layouts with these sizes (Qwen2.5's q/k/v biases, a few
 * thousand entries, are left out of the timing model). */
struct preset {
    const char *name, *size; /* size: "CxL" */
    int64_t head_dim, kv_heads, d_ff, vocab;
};
/* The preset called name, or NULL. */
const struct preset *bench_preset(const char *name);
#define BENCH_PRESET_NAMES "smollm2-135m, qwen2.5-0.5b or llama-3.2-1b"

/* "CxL" -> a llama config: heads = C / head_dim, kv heads = heads / 2, d_ff = 8/3 C rounded
 * to a multiple of 8, tied head, the byte tokenizer's vocabulary; kv_heads, d_ff and vocab
 * replace those when above 0. -1 with a line naming the size. */
int bench_shape_config(const char *size, int64_t head_dim, int64_t kv_heads, int64_t d_ff,
                       int64_t vocab, int32_t max_seq, struct model_config *c);

#endif
