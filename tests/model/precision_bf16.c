/*
 * precision_bf16: the bf16 model (model_set_bf16). The rounding to bfloat16 (nearest even,
 * NaN, infinity, overflow, subnormals, any length on 1 and 2 threads) against the scalar
 * conversion of core/half.c; the matrices it keeps; every product through a model weight
 * (site forward, dx, the head, a trained fp32 weight) against a double-precision product of
 * the operands rounded here, one by one; and a whole step against the fp32 model: loss and
 * gradients close, not equal.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "half.h"
#include "model.h"

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The value bfloat16 keeps of f, through the scalar conversion the checkpoints use. */
static float scalar_round(float f) { return bf16_to_f32(f32_to_bf16(f)); }

static float round_one(float f)
{
    float out;
    round_floats_bf16(&f, &out, 1);
    return out;
}

static void check_rounding(void)
{
    /* ulp of bfloat16 at 1 is 2^-7: 1 + 2^-8 is a tie (to 1, even), 1 + 3 2^-8 a tie to
     * 1 + 2^-6 (even), 1 + 2^-8 + 2^-20 above the tie (up) */
    CHECK(round_one(1.0f + 0x1p-8f) == 1.0f);
    CHECK(round_one(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    CHECK(round_one(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    CHECK(round_one(-1.0f - 0x1p-8f - 0x1p-20f) == -1.0f - 0x1p-7f);
    CHECK(float_bits(round_one(-0.0f)) == 0x80000000u, "-0 keeps its sign");
    CHECK(isinf(round_one(INFINITY)) && round_one(-INFINITY) < 0);
    CHECK(isnan(round_one(NAN)));
    /* a NaN whose payload sits in the low bits only: truncating would make it infinity */
    CHECK(isnan(round_one(bits_float(0x7f800001u))));
    CHECK(isinf(round_one(FLT_MAX)), "beyond the largest bfloat16 rounds to infinity");
    CHECK(round_one(bits_float(0x7f7f0000u)) == bits_float(0x7f7f0000u), "largest bfloat16 kept");
    CHECK(round_one(1e-40f) == scalar_round(1e-40f), "subnormal");

    /* every length up to 70 (groups of 16 and the tail) and a long one that splits over the
     * threads: bit for bit the scalar conversion, in place too */
    struct rng g;
    rng_seed(&g, 7);
    size_t lengths[] = {1, 15, 16, 17, 33, 70, 300001};
    for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
        size_t n = lengths[li];
        float *x = xalloc_floats(n), *out = xalloc_floats(n);
        for (size_t i = 0; i < n; i++)
            x[i] = ldexpf(rng_uniform(&g, -1.0f, 1.0f), (int)(i % 60) - 30);
        for (int threads = 1; threads <= 2; threads++) {
            parallel_set_threads(threads);
            round_floats_bf16(x, out, n);
            int same = 1;
            for (size_t i = 0; i < n; i++)
                same &= float_bits(out[i]) == float_bits(scalar_round(x[i]));
            CHECK(same, "length %zu, %d threads: the scalar conversion's bits", n, threads);
        }
        round_floats_bf16(x, x, n);
        int same = 1;
        for (size_t i = 0; i < n; i++) same &= float_bits(x[i]) == float_bits(out[i]);
        CHECK(same, "length %zu in place", n);
        free(x), free(out);
    }
}

static struct model_config small_config(int tied)
{
    struct model_config c = {
        .vocab = 37, .d_model = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
        .head_dim = 6, .d_ff = 40, .max_seq = 16, .rms_eps = 1e-5f, .rope_theta = 1000.0f,
        .tied = tied,
    };
    return c;
}

/* out (rows, cols) of a (rows, k) and b: b (cols, k) when b_rows_are_outputs (x W^T), else
 * b (k, cols) (dy W); operands rounded to bfloat16 here, sums in double. */
static void reference_product(const float *a, const float *b, int b_rows_are_outputs,
                              int32_t rows, int32_t cols, int32_t k, double *out)
{
    for (int32_t i = 0; i < rows; i++)
        for (int32_t j = 0; j < cols; j++) {
            double s = 0;
            for (int32_t p = 0; p < k; p++) {
                float bv = b_rows_are_outputs ? b[(size_t)j * k + p] : b[(size_t)p * cols + j];
                s += (double)scalar_round(a[(size_t)i * k + p]) * (double)scalar_round(bv);
            }
            out[(size_t)i * cols + j] = s;
        }
}

/* Largest |got - want| / (1 + |want|). */
static double worst_error(const float *got, const double *want, size_t n)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (e > w) w = e;
    }
    return w;
}

static float *random_floats(struct rng *g, size_t n, float scale)
{
    float *v = xalloc_floats(n);
    for (size_t i = 0; i < n; i++) v[i] = rng_uniform(g, -scale, scale);
    return v;
}

/* The model's matrices after model_set_bf16: each a bfloat16 copy of its rounded fp32 (or
 * fp16) values, and the norms untouched. */
static void check_storage(void)
{
    struct model_config c = small_config(0);
    struct model m, ref;
    REQUIRE(model_init(&m, &c) == 0 && model_init(&ref, &c) == 0, "model_init");
    model_init_random(&m, 3, 0.5f);
    model_init_random(&ref, 3, 0.5f);
    /* one matrix as a checkpoint's fp16 first */
    int32_t t16 = model_site_tensor(&m, SITE_UP);
    size_t n16 = m.tensors[t16].numel;
    uint16_t *h = xmalloc(n16 * sizeof *h);
    for (size_t i = 0; i < n16; i++) h[i] = f32_to_f16(m.params[m.tensors[t16].offset + i]);
    model_tensor_set_half(&m, t16, h, 0);
    model_set_bf16(&m);
    CHECK(m.precision == MODEL_BF16);
    for (int32_t t = 0; t < m.n_tensors; t++) {
        const struct model_tensor *mt = &m.tensors[t];
        float *got = xalloc_floats(mt->numel);
        model_tensor_read(&m, t, got);
        int ok = 1;
        for (size_t i = 0; i < mt->numel; i++) {
            float src = ref.params[mt->offset + i];
            if (t == t16) src = f16_to_f32(f32_to_f16(src));
            float want = mt->ndim == 2 ? scalar_round(src) : src;
            ok &= float_bits(got[i]) == float_bits(want);
        }
        CHECK(ok, "%s: %s", mt->name, mt->ndim == 2 ? "its values rounded to bfloat16" : "unchanged");
        CHECK(mt->ndim != 2 || (model_tensor_in_half(&m, t) && m.half_bf16[t]),
              "%s held in bfloat16", mt->name);
        free(got);
    }
    model_free(&m);
    model_free(&ref);
}

/* Each product through a model weight, against the reference on rounded operands. */
static void check_products(void)
{
    struct model_config c = small_config(1);
    struct model m;
    REQUIRE(model_init(&m, &c) == 0, "model_init");
    model_init_random(&m, 5, 0.3f);
    model_set_bf16(&m);
    struct rng g;
    rng_seed(&g, 11);
    const int32_t n = 9;
    for (int32_t site = 0; site < m.n_sites; site++) {
        int32_t d_in, d_out, t = model_site_tensor(&m, site);
        model_site_dims(&m, site, &d_in, &d_out);
        float *w = xalloc_floats((size_t)d_out * d_in);
        model_tensor_read(&m, t, w);
        float *x = random_floats(&g, (size_t)n * d_in, 2.0f);
        float *y = xalloc_floats((size_t)n * d_out), *dy = random_floats(&g, (size_t)n * d_out, 1.0f);
        float *dx = xalloc_floats((size_t)n * d_in);
        double *want_y = xmalloc((size_t)n * d_out * sizeof *want_y);
        double *want_dx = xmalloc((size_t)n * d_in * sizeof *want_dx);
        REQUIRE(model_site_forward(&m, NULL, site, x, y, n) == 0, "site forward");
        reference_product(x, w, 1, n, d_out, d_in, want_y);
        half_matmul_backward_dx(&m, t, dx, dy, n, d_in, d_out, 0.0f);
        reference_product(dy, w, 0, n, d_in, d_out, want_dx);
        char name[96];
        model_site_name(&m, site, name, sizeof name);
        double ey = worst_error(y, want_y, (size_t)n * d_out);
        double edx = worst_error(dx, want_dx, (size_t)n * d_in);
        /* fp32 sums of exact products: a few ulp of fp32, never bfloat16's 4e-3 */
        CHECK(ey < 1e-5, "%s forward: %.3g from x and W rounded to bfloat16", name, ey);
        CHECK(edx < 1e-5, "%s dx: %.3g from dy and W rounded to bfloat16", name, edx);
        free(w), free(x), free(y), free(dy), free(dx), free(want_y), free(want_dx);
    }

    /* the tied head */
    int32_t C = c.d_model, V = c.vocab;
    float *head = xalloc_floats((size_t)V * C);
    model_tensor_read(&m, 0, head);
    float *hid = random_floats(&g, (size_t)n * C, 2.0f), *logits = xalloc_floats((size_t)n * V);
    double *want = xmalloc((size_t)n * V * sizeof *want);
    model_head_logits(&m, hid, logits, n);
    reference_product(hid, head, 1, n, V, C, want);
    double eh = worst_error(logits, want, (size_t)n * V);
    CHECK(eh < 1e-5, "head: %.3g from h and the head rounded to bfloat16", eh);

    /* a trained weight: an fp32 master whose values leave bfloat16's grid; the products read
     * it rounded, the master keeps its bits */
    int32_t site = 1 * SITE_KINDS + SITE_O, d_in, d_out, t = model_site_tensor(&m, site);
    model_site_dims(&m, site, &d_in, &d_out);
    float *master = model_tensor_data(&m, t);
    for (size_t i = 0; i < (size_t)d_out * d_in; i++) master[i] *= 1.0f + 0x1p-12f;
    float *kept = xalloc_floats((size_t)d_out * d_in);
    memcpy(kept, master, (size_t)d_out * d_in * sizeof *kept);
    int off_grid = 0;
    for (size_t i = 0; i < (size_t)d_out * d_in; i++) off_grid += master[i] != scalar_round(master[i]);
    CHECK(off_grid > d_out * d_in / 2, "the master leaves bfloat16's grid (%d entries)", off_grid);
    float *x = random_floats(&g, (size_t)n * d_in, 2.0f), *y = xalloc_floats((size_t)n * d_out);
    double *want_y = xmalloc((size_t)n * d_out * sizeof *want_y);
    REQUIRE(model_site_forward(&m, NULL, site, x, y, n) == 0, "site forward");
    reference_product(x, kept, 1, n, d_out, d_in, want_y);
    double et = worst_error(y, want_y, (size_t)n * d_out);
    CHECK(et < 1e-5, "trained o_proj forward: %.3g from x and the master rounded", et);
    CHECK(memcmp(kept, m.params + m.tensors[t].offset, (size_t)d_out * d_in * sizeof *kept) == 0,
          "the fp32 master is not rounded in place");
    /* a trained embedding: its rows are read as bfloat16 too (the table saved and loaded
     * again gives the same rows) */
    float *table = model_tensor_data(&m, 0);
    for (size_t i = 0; i < (size_t)V * C; i++) table[i] *= 1.0f + 0x1p-12f;
    int32_t ids[3] = {0, 5, V - 1};
    float rows[3 * 24];
    REQUIRE(C == 24, "C");
    model_embed_tokens(&m, ids, 3, rows);
    int same = 1;
    for (int r = 0; r < 3; r++)
        for (int32_t j = 0; j < C; j++)
            same &= float_bits(rows[r * C + j]) ==
                    float_bits(scalar_round(table[(size_t)ids[r] * C + j]));
    CHECK(same, "a trained embedding's rows are read rounded to bfloat16");
    free(head), free(hid), free(logits), free(want), free(kept), free(x), free(y), free(want_y);
    model_free(&m);
}

/* One training step of a whole model in bf16 against fp32: the loss within bfloat16's
 * resolution, and each trained tensor's gradient in the same direction. */
static void check_step_against_fp32(void)
{
    struct model_config c = small_config(0);
    enum { B = 2, T = 12 };
    int32_t tokens[B * T], targets[B * T];
    struct rng g;
    rng_seed(&g, 17);
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)(rng_uniform(&g, 0.0f, 1.0f) * (float)c.vocab) % c.vocab;
        targets[i] = i % 5 == 0 ? -1 : (int32_t)(rng_uniform(&g, 0.0f, 1.0f) * (float)c.vocab) % c.vocab;
    }
    struct model ms[2];
    float loss[2];
    for (int k = 0; k < 2; k++) {
        REQUIRE(model_init(&ms[k], &c) == 0, "model_init");
        model_init_random(&ms[k], 9, 0.2f);
        if (k == 1) model_set_bf16(&ms[k]);
        model_alloc_grads(&ms[k]);
        for (int32_t t = 0; t < ms[k].n_tensors; t++) {
            ms[k].need_grad[t] = 1;
            (void)model_tensor_data(&ms[k], t); /* trained: fp32 masters */
        }
        struct model_acts *a = model_acts_new();
        REQUIRE(model_forward(&ms[k], a, tokens, targets, B, T, NULL, &loss[k]) == 0, "forward");
        REQUIRE(model_backward(&ms[k], a, NULL) == 0, "backward");
        model_acts_free(a);
    }
    double rel = fabs(loss[1] - loss[0]) / fabs(loss[0]);
    CHECK(rel < 1e-2, "loss fp32 %.6f, bf16 %.6f: %.2g apart", loss[0], loss[1], rel);
    CHECK(loss[1] != loss[0], "the bf16 model rounds (the losses are not the same bits)");
    for (int32_t t = 0; t < ms[0].n_tensors; t++) {
        const struct model_tensor *mt = &ms[0].tensors[t];
        const float *g0 = ms[0].grads + mt->offset, *g1 = ms[1].grads + mt->offset;
        double dot = 0, n0 = 0, n1 = 0;
        for (size_t i = 0; i < mt->numel; i++) {
            dot += (double)g0[i] * g1[i];
            n0 += (double)g0[i] * g0[i];
            n1 += (double)g1[i] * g1[i];
        }
        double cosine = n0 > 0 && n1 > 0 ? dot / sqrt(n0 * n1) : 0;
        CHECK(cosine > 0.99 && fabs(sqrt(n1 / n0) - 1) < 0.05,
              "%s: gradient cosine %.4f, norm ratio %.4f (bf16 / fp32)", mt->name, cosine,
              sqrt(n1 / n0));
    }
    model_free(&ms[0]);
    model_free(&ms[1]);
}

static void check_choose(void)
{
    int32_t p = -1;
    CHECK(model_precision_choose("bf16", "x.ini:3", &p) == 0 && p == MODEL_BF16);
    CHECK(model_precision_choose("fp32", "x.ini:3", &p) == 0 && p == MODEL_FP32);
    CHECK(model_precision_choose("auto", "x.ini:3", &p) == 0 && p == MODEL_FP32);
    CHECK(model_precision_choose("fp16", "x.ini:3", &p) != 0 &&
          strstr(err_msg(), "x.ini:3") && strstr(err_msg(), "fp16"), "%s", err_msg());
    setenv("PEFT_PRECISION", "bf16", 1);
    CHECK(model_precision_choose(NULL, "x.ini", &p) == 0 && p == MODEL_BF16);
    setenv("PEFT_PRECISION", "half", 1);
    CHECK(model_precision_choose(NULL, "x.ini", &p) != 0 && strstr(err_msg(), "PEFT_PRECISION"),
          "%s", err_msg());
    unsetenv("PEFT_PRECISION");
    CHECK(model_precision_choose(NULL, "x.ini", &p) == 0 && p == MODEL_FP32);
}

int main(void)
{
    check_rounding();
    check_storage();
    check_products();
    check_step_against_fp32();
    check_choose();
    return check_report("precision_bf16");
}
