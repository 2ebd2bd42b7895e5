/* precision.c: the bf16 model (model.h, model_set_bf16): its matrices rounded to bfloat16
 * once, and the rounding of the products' activation operands. The products themselves are
 * the block products of half.c, which round what they read when the model is in bf16. */
#include <stdlib.h>
#include <string.h>

#include "half.h"

int model_precision_choose(const char *name, const char *where, int32_t *out)
{
    const char *from = where;
    if (!name) {
        name = getenv("PEFT_PRECISION");
        from = "PEFT_PRECISION";
        if (!name || !name[0])
            name = "auto";
    }
    if (strcmp(name, "fp32") == 0 || strcmp(name, "auto") == 0)
        *out = MODEL_FP32; /* auto: no native bf16 product is built, and the rounded fp32
                            * products that stand in for it are slower than plain fp32 */
    else if (strcmp(name, "bf16") == 0)
        *out = MODEL_BF16;
    else
        return err_set("%s: precision '%s' is not one of auto, fp32, bf16", from, name);
    return 0;
}

const char *model_precision_name(int32_t precision)
{
    return precision == MODEL_BF16 ? "bf16" : "fp32";
}

struct round_job {
    const float *x;
    float *out;
};

static void round_range(void *ctx, size_t begin, size_t end)
{
    const struct round_job *j = ctx;
    /* in fixed groups of 16 through memcpy'd words, which the compiler vectorises */
    size_t i = begin;
    for (; i + 16 <= end; i += 16) {
        uint32_t u[16];
        memcpy(u, j->x + i, sizeof u);
        for (int k = 0; k < 16; k++) u[k] = bf16_round_bits(u[k]);
        memcpy(j->out + i, u, sizeof u);
    }
    for (; i < end; i++) {
        uint32_t u;
        memcpy(&u, j->x + i, sizeof u);
        u = bf16_round_bits(u);
        memcpy(j->out + i, &u, sizeof u);
    }
}

void round_floats_bf16(const float *x, float *out, size_t n)
{
    struct round_job j = {x, out};
    parallel_for(n, 1 << 16, round_range, &j);
}

/* Tensor t (a matrix) as bfloat16 values, newly allocated: from its fp16 copy or from its
 * fp32 range, rounded. */
static uint16_t *to_bf16(const struct model *m, int32_t t)
{
    size_t n = m->tensors[t].numel;
    uint16_t *v = xmalloc(n * sizeof *v);
    const float *src = m->params + m->tensors[t].offset;
    float *widened = NULL;
    if (model_tensor_in_half(m, t)) { /* fp16 (a bf16 copy never gets here) */
        widened = xalloc_floats(n);
        model_tensor_read_half(m, t, widened);
        src = widened;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = f32_to_bf16(src[i]);
    free(widened);
    return v;
}

void model_set_bf16(struct model *m)
{
    for (int32_t t = 0; t < m->n_tensors; t++) {
        if (m->tensors[t].ndim != 2)
            continue; /* norms and biases stay fp32 */
        if (model_tensor_in_half(m, t) && m->half_bf16[t])
            continue; /* already bf16 */
        model_tensor_set_half(m, t, to_bf16(m, t), 1);
    }
    m->precision = MODEL_BF16;
}
