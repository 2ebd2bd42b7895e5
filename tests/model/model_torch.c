/*
 * model_torch: logits, loss and every parameter gradient against an independent PyTorch
 * implementation (fixtures written by tests/gen_model_fixture.py; layout described there).
 * Errors are measured relative to the scale of each reference tensor (its largest |value|).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model.h"
#include "core.h"

#define FIXTURE_MAGIC 0x4d544650u
#define FIXTURE_VERSION 2u /* files of version 1 (no family fields) are read too */
#define SCALED_TOL 1e-4

/* A cursor over the fixture bytes; reads past the end set `bad`. */
struct reader {
    const char *p;
    size_t left;
    int bad;
};

static const void *take(struct reader *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const void *at = r->p;
    r->p += n;
    r->left -= n;
    return at;
}

/* Copy n bytes out (they need not be aligned); out is left as it is past the end. */
static int take_bytes(struct reader *r, void *out, size_t n)
{
    const void *at = take(r, n);
    if (!at)
        return -1;
    memcpy(out, at, n);
    return 0;
}

static int32_t take_i32(struct reader *r)
{
    int32_t v = 0;
    take_bytes(r, &v, sizeof v);
    return v;
}

static float take_f32(struct reader *r)
{
    float v = 0.0f;
    take_bytes(r, &v, sizeof v);
    return v;
}

static double take_f64(struct reader *r)
{
    double v = 0.0;
    take_bytes(r, &v, sizeof v);
    return v;
}

static int take_floats(struct reader *r, float *out, size_t n)
{
    return take_bytes(r, out, n * sizeof(float));
}

/* max |got - want| / max |want| over a tensor; *max_abs = max |got - want| */
static double scaled_error(const float *got, const float *want, size_t n, double *max_abs)
{
    double scale = 0.0, err = 0.0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(want[i]));
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= err))
            err = d; /* NaN propagates as a failure */
    }
    *max_abs = err;
    return scale > 0.0 ? err / scale : err;
}

static void run_fixture(const char *root, const char *file)
{
    char *path = xasprintf("%s/tests/fixtures/%s", root, file);
    char *data = NULL;
    size_t len = 0;
    if (file_read_all(path, &data, &len) != 0) {
        CHECK(0, "%s", err_msg());
        free(path);
        return;
    }
    printf("%s (%zu bytes)\n", file, len);
    struct reader r = {data, len, 0};
    uint32_t magic = (uint32_t)take_i32(&r), version = (uint32_t)take_i32(&r);
    CHECK(magic == FIXTURE_MAGIC && (version == 1 || version == 2), "%s: magic %08x version %u",
          path, magic, version);
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.vocab = take_i32(&r);
    c.d_model = take_i32(&r);
    c.n_layers = take_i32(&r);
    c.n_heads = take_i32(&r);
    c.n_kv_heads = take_i32(&r);
    c.head_dim = take_i32(&r);
    c.d_ff = take_i32(&r);
    c.max_seq = take_i32(&r);
    c.tied = take_i32(&r);
    int32_t B = take_i32(&r), T = take_i32(&r);
    c.rms_eps = take_f32(&r);
    c.rope_theta = take_f32(&r);
    if (version == 2) { /* the families: qwen2's biases, qwen3's q/k norms, llama3 RoPE */
        c.qkv_bias = take_i32(&r);
        c.qk_norm = take_i32(&r);
        c.rope.type = take_i32(&r);
        c.rope.original_context = take_i32(&r);
        c.rope.factor = take_f32(&r);
        c.rope.low_freq_factor = take_f32(&r);
        c.rope.high_freq_factor = take_f32(&r);
        printf("  qkv_bias=%d qk_norm=%d rope_type=%d factor=%g\n", (int)c.qkv_bias, (int)c.qk_norm,
               (int)c.rope.type, (double)c.rope.factor);
    }
    printf("  V=%d C=%d L=%d H=%d KV=%d D=%d F=%d tied=%d B=%d T=%d eps=%g theta=%g\n",
           (int)c.vocab, (int)c.d_model, (int)c.n_layers, (int)c.n_heads, (int)c.n_kv_heads,
           (int)c.head_dim, (int)c.d_ff, (int)c.tied, (int)B, (int)T, (double)c.rms_eps,
           (double)c.rope_theta);

    struct model m;
    if (r.bad || model_init(&m, &c) != 0) {
        CHECK(0, "%s: bad header: %s", path, r.bad ? "truncated" : err_msg());
        free(data);
        free(path);
        return;
    }
    int32_t n_tensors = take_i32(&r);
    CHECK(n_tensors == m.n_tensors, "%s: %d tensors, the model has %d", path, (int)n_tensors,
          (int)m.n_tensors);
    for (int32_t i = 0; i < n_tensors && i < m.n_tensors && !r.bad; i++) {
        const struct model_tensor *t = &m.tensors[i];
        int32_t name_len = take_i32(&r);
        const char *name = take(&r, name_len > 0 ? (size_t)name_len : 0);
        int32_t ndim = take_i32(&r);
        int64_t shape[2] = {0, 0};
        for (int32_t d = 0; d < ndim && d < 2; d++)
            shape[d] = take_i32(&r);
        int same = name && (size_t)name_len == strlen(t->name) &&
                   memcmp(name, t->name, (size_t)name_len) == 0 && ndim == t->ndim &&
                   shape[0] == t->shape[0] && shape[1] == t->shape[1];
        CHECK(same, "%s: tensor %d is '%.*s', the model has %s", path, (int)i,
              name ? (int)name_len : 0, name ? name : "", t->name);
        take_floats(&r, m.params + t->offset, t->numel);
    }
    size_t n = (size_t)B * T;
    int32_t *tokens = xmalloc(2 * n * sizeof *tokens), *targets = tokens + n;
    for (size_t i = 0; i < 2 * n; i++)
        tokens[i] = take_i32(&r);
    float *ref_logits = xmalloc(n * (size_t)c.vocab * sizeof(float));
    take_floats(&r, ref_logits, n * (size_t)c.vocab);
    double ref_loss = take_f64(&r);
    float *ref_grads = xmalloc(m.n_params * sizeof(float));
    take_floats(&r, ref_grads, m.n_params);
    uint32_t end = (uint32_t)take_i32(&r);
    CHECK(!r.bad && end == FIXTURE_MAGIC && r.left == 0, "%s: bad layout", path);
    if (check_failures)
        goto out;

    model_alloc_grads(&m);
    memset(m.need_grad, 1, (size_t)m.n_tensors);
    struct model_acts *a = model_acts_new();
    float loss;
    CHECK(model_forward(&m, a, tokens, targets, B, T, NULL, &loss) == 0, "%s", err_msg());
    /* before the backward, which turns the logits into their gradient */
    double abs_err;
    double logit_err = scaled_error(model_logits(a), ref_logits, n * (size_t)c.vocab, &abs_err);
    CHECK(model_backward(&m, a, NULL) == 0, "%s", err_msg());
    printf("  %-50s max abs err %.2e  rel to max|ref| %.2e\n", "logits", abs_err, logit_err);
    CHECK(logit_err < SCALED_TOL, "logits: scaled error %.2e", logit_err);
    double loss_err = fabs(loss - ref_loss) / fmax(1.0, fabs(ref_loss));
    printf("  %-50s %.7f vs %.7f  rel %.2e\n", "loss", (double)loss, ref_loss, loss_err);
    CHECK(loss_err < 1e-5, "loss %.7f, want %.7f", (double)loss, ref_loss);

    double worst = 0.0;
    for (int32_t i = 0; i < m.n_tensors; i++) {
        const struct model_tensor *t = &m.tensors[i];
        double e = scaled_error(m.grads + t->offset, ref_grads + t->offset, t->numel, &abs_err);
        printf("  grad %-45s max abs err %.2e  rel to max|ref| %.2e\n", t->name, abs_err, e);
        CHECK(e < SCALED_TOL, "%s: scaled gradient error %.2e", t->name, e);
        worst = fmax(worst, e);
    }
    printf("  worst gradient error relative to max|ref| %.2e\n", worst);
    model_acts_free(a);
out:
    free(ref_grads);
    free(ref_logits);
    free(tokens);
    model_free(&m);
    free(data);
    free(path);
}

int main(void)
{
    const char *root = getenv("PEFT_SOURCE_ROOT");
    if (!root) {
        fprintf(stderr, "PEFT_SOURCE_ROOT is not set (run through meson test)\n");
        return 1;
    }
    run_fixture(root, "model_tied_gqa.bin");
    run_fixture(root, "model_untied_mha.bin");
    run_fixture(root, "model_qwen2.bin");
    run_fixture(root, "model_qwen3.bin");
    run_fixture(root, "model_llama3_rope.bin");
    return check_summary("OK", "failures");
}
