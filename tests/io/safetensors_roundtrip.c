/*
 * safetensors_roundtrip: write tensors of several dtypes and metadata, read them back
 * bit-exact, check the on-disk layout the writer promises (8-aligned data, space padding,
 * __metadata__ first, dtype-size order, every tensor aligned to its element size), and check
 * the fp16/bf16 conversions: hand-picked cases (ties, inf, nan, subnormals, overflow), an
 * exhaustive round trip of all 2^16 patterns, and torch's own conversions of ~7.6k values
 * (tests/fixtures/hf_fp_conversions.safetensors, from tests/gen_hf_fixture.py).
 */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "io_check.h"
#include "safetensors.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- round trip of a file ------------------------------------------------------------ */

static void test_file_roundtrip(const char *dir) {
    char *path = path_join(dir, "mixed.safetensors");
    /* (2, 3) F32 with specials */
    const float f32[6] = {1.5f, -0.0f, INFINITY, NAN, 1e-45f, -3.25e38f};
    const int64_t f32_shape[2] = {2, 3};
    /* (5) F16 as raw bits */
    const uint16_t f16[5] = {0x3c00, 0x0001, 0x7bff, 0xfc00, 0x7e01};
    const int64_t f16_shape[1] = {5};
    /* (3, 1) BF16 */
    const uint16_t bf16[3] = {0x3f80, 0xff80, 0x0001};
    const int64_t bf16_shape[2] = {3, 1};
    /* (4) I64 */
    const int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
    const int64_t i64_shape[1] = {4};
    /* (7) U8 */
    const uint8_t u8[7] = {0, 1, 2, 127, 128, 254, 255};
    const int64_t u8_shape[1] = {7};
    /* () scalar and (0, 4) empty */
    const float scalar = 42.0f;
    const int64_t empty_shape[2] = {0, 4};

    struct st_writer *w = st_writer_new();
    st_writer_add(w, "u8", ST_U8, 1, u8_shape, u8); /* added out of order on purpose */
    st_writer_add(w, "b.half", ST_F16, 1, f16_shape, f16);
    st_writer_add_f32(w, "a.weight", 2, f32_shape, f32);
    st_writer_add(w, "a.bf16", ST_BF16, 2, bf16_shape, bf16);
    st_writer_add(w, "idx", ST_I64, 1, i64_shape, i64);
    st_writer_add_f32(w, "scalar", 0, NULL, &scalar);
    st_writer_add_f32(w, "empty", 2, empty_shape, NULL);
    st_writer_meta(w, "method", "lora");
    st_writer_meta(w, "note", "quote \" backslash \\ newline \n tab \t unicode \xc3\xa9");
    st_writer_meta(w, "method", "lora-v2"); /* a second value for a key replaces the first */
    CHECK(st_writer_save(w, path) == 0);
    st_writer_free(w);

    struct st_file f;
    if (st_open(&f, path) != 0) {
        fprintf(stderr, "st_open: %s\n", err_msg());
        CHECK(0);
        free(path);
        return;
    }
    CHECK(f.n_tensors == 7);
    CHECK(f.n_meta == 3);
    CHECK(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "pt") == 0);
    CHECK(st_meta(&f, "method") && strcmp(st_meta(&f, "method"), "lora-v2") == 0);
    CHECK(st_meta(&f, "note") &&
          strcmp(st_meta(&f, "note"),
                 "quote \" backslash \\ newline \n tab \t unicode \xc3\xa9") == 0);
    CHECK(st_meta(&f, "absent") == NULL);
    CHECK(st_find(&f, "absent") == NULL);

    const struct {
        const char *name;
        int dtype;
        int32_t ndim;
        const int64_t *shape;
        const void *data;
        size_t nbytes;
    } want[] = {
        {"a.weight", ST_F32, 2, f32_shape, f32, sizeof f32},
        {"b.half", ST_F16, 1, f16_shape, f16, sizeof f16},
        {"a.bf16", ST_BF16, 2, bf16_shape, bf16, sizeof bf16},
        {"idx", ST_I64, 1, i64_shape, i64, sizeof i64},
        {"u8", ST_U8, 1, u8_shape, u8, sizeof u8},
        {"scalar", ST_F32, 0, NULL, &scalar, sizeof scalar},
        {"empty", ST_F32, 2, empty_shape, NULL, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct st_tensor *t = st_find(&f, want[i].name);
        CHECK(t != NULL, "%s", want[i].name);
        if (!t) continue;
        CHECK(t->dtype == want[i].dtype, "%s", want[i].name);
        CHECK(t->ndim == want[i].ndim, "%s", want[i].name);
        for (int32_t k = 0; k < t->ndim && k < want[i].ndim; k++)
            CHECK(t->shape[k] == want[i].shape[k], "%s dim %d", want[i].name, k);
        CHECK(t->end - t->begin == want[i].nbytes, "%s", want[i].name);
        if (want[i].nbytes)
            CHECK(memcmp(st_data(&f, t), want[i].data, want[i].nbytes) == 0, "%s bytes",
                  want[i].name);
        printf("  %-9s %-4s ndim %d  bytes [%llu, %llu)\n", t->name, st_dtype_name(t->dtype),
               t->ndim, (unsigned long long)t->begin, (unsigned long long)t->end);
    }
    const struct st_tensor *te = st_find(&f, "empty"), *ts = st_find(&f, "scalar");
    CHECK(te && te->numel == 0 && te->begin == te->end);
    CHECK(ts && ts->numel == 1);

    /* st_read_f32: F32 copies bits, F16/BF16 convert, other dtypes are refused by name */
    float out[6];
    CHECK(st_read_f32(&f, st_find(&f, "a.weight"), out, 6) == 0);
    CHECK(memcmp(out, f32, sizeof f32) == 0);
    CHECK(st_read_f32(&f, st_find(&f, "b.half"), out, 5) == 0);
    CHECK(out[0] == 1.0f && out[1] == ldexpf(1.0f, -24) && out[2] == 65504.0f);
    CHECK(isinf(out[3]) && out[3] < 0 && isnan(out[4]));
    CHECK(st_read_f32(&f, st_find(&f, "a.bf16"), out, 3) == 0);
    CHECK(out[0] == 1.0f && isinf(out[1]) && out[1] < 0 && f32_bits(out[2]) == 0x00010000u);
    CHECK(st_read_f32(&f, st_find(&f, "idx"), out, 4) == -1);
    printf("  refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), "mixed.safetensors") && strstr(err_msg(), "'idx'") &&
          strstr(err_msg(), "I64"));
    CHECK(st_read_f32(&f, st_find(&f, "a.weight"), out, 5) == -1);
    printf("  refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), "'a.weight'") != NULL);
    st_close(&f);

    /* the layout on disk */
    char *raw;
    size_t len;
    CHECK(file_read_all(path, &raw, &len) == 0);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)raw[i];
    printf("  file %zu bytes, header %llu bytes, data starts at %llu\n", len,
           (unsigned long long)n, (unsigned long long)(8 + n));
    CHECK(n % 8 == 0 && 8 + n <= len);
    const char *h = raw + 8;
    const char *first = "{\"__metadata__\":{\"format\":\"pt\",";
    CHECK(strncmp(h, first, strlen(first)) == 0);
    size_t close_at = (size_t)n;
    while (close_at > 0 && h[close_at - 1] == ' ') close_at--;
    CHECK(close_at > 0 && h[close_at - 1] == '}');
    CHECK(n - close_at < 8); /* padding is spaces only, less than 8 of them */

    CHECK(st_open(&f, path) == 0);
    /* file order: by begin; sizes must not increase, names ascend within a size */
    const struct st_tensor *by_offset[7] = {0};
    for (int32_t i = 0; i < f.n_tensors; i++) {
        int32_t rank = 0;
        for (int32_t j = 0; j < f.n_tensors; j++)
            if (f.tensors[j].begin < f.tensors[i].begin ||
                (f.tensors[j].begin == f.tensors[i].begin &&
                 strcmp(f.tensors[j].name, f.tensors[i].name) < 0))
                rank++;
        by_offset[rank] = &f.tensors[i];
    }
    printf("  file order:");
    for (int32_t i = 0; i < f.n_tensors; i++) {
        const struct st_tensor *t = by_offset[i];
        printf(" %s(%s)", t->name, st_dtype_name(t->dtype));
        CHECK((8 + n + t->begin) % st_dtype_size(t->dtype) == 0, "%s misaligned", t->name);
        if (i > 0) {
            const struct st_tensor *p = by_offset[i - 1];
            size_t sp = st_dtype_size(p->dtype), st = st_dtype_size(t->dtype);
            CHECK(sp > st || (sp == st && strcmp(p->name, t->name) < 0), "%s before %s",
                  p->name, t->name);
        }
    }
    printf("\n");
    /* expected order, spelled out */
    const char *order[] = {"idx", "a.weight", "empty", "scalar", "a.bf16", "b.half", "u8"};
    for (int i = 0; i < 7; i++)
        CHECK(by_offset[i] && strcmp(by_offset[i]->name, order[i]) == 0, "position %d", i);
    st_close(&f);
    free(raw);

    /* no temporary sibling is left behind */
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    CHECK(!file_exists(tmp));
    free(tmp);

    /* writer misuse is reported at save, naming the file and the tensor; nothing written */
    char *bad = path_join(dir, "bad.safetensors");
    w = st_writer_new();
    st_writer_add_f32(w, "x", 1, f16_shape, f32);
    st_writer_add_f32(w, "x", 1, f16_shape, f32);
    CHECK(st_writer_save(w, bad) == -1);
    printf("  refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), "bad.safetensors") && strstr(err_msg(), "'x'"));
    CHECK(!file_exists(bad));
    st_writer_free(w);
    const int64_t neg_shape[1] = {-2};
    w = st_writer_new();
    st_writer_add_f32(w, "neg", 1, neg_shape, f32);
    CHECK(st_writer_save(w, bad) == -1);
    printf("  refused: %s\n", err_msg());
    CHECK(strstr(err_msg(), "'neg'") != NULL);
    CHECK(!file_exists(bad));
    st_writer_free(w);
    free(bad);

    /* an empty file (no tensors) is valid */
    char *none = path_join(dir, "none.safetensors");
    w = st_writer_new();
    CHECK(st_writer_save(w, none) == 0);
    st_writer_free(w);
    CHECK(st_open(&f, none) == 0);
    CHECK(f.n_tensors == 0 && f.n_meta == 1);
    st_close(&f);
    free(none);
    free(path);
}

/* ---- hand-picked conversion cases -------------------------------------------------- */

static void test_conversion_cases(void) {
    const struct {
        float f;
        uint16_t h;
        const char *what;
    } f16[] = {
        {1.0f, 0x3c00, "one"},
        {-2.0f, 0xc000, "minus two"},
        {0.0f, 0x0000, "zero"},
        {-0.0f, 0x8000, "negative zero"},
        {65504.0f, 0x7bff, "largest finite"},
        {65519.99f, 0x7bff, "below the overflow tie"},
        {65520.0f, 0x7c00, "overflow tie rounds to even = inf"},
        {1e6f, 0x7c00, "overflow"},
        {-1e6f, 0xfc00, "negative overflow"},
        {INFINITY, 0x7c00, "inf"},
        {-INFINITY, 0xfc00, "-inf"},
        {0x1p-24f, 0x0001, "least subnormal"},
        {0x1p-25f, 0x0000, "half the least subnormal: tie to even zero"},
        {0x1.000002p-25f, 0x0001, "just above that tie"},
        {0x1.8p-24f, 0x0002, "subnormal tie 1.5 -> 2"},
        {0x1.4p-23f, 0x0002, "subnormal tie 2.5 -> 2"},
        {0x1p-14f, 0x0400, "least normal"},
        {0x1.ffcp-15f, 0x0400, "subnormal tie 1023.5 -> 1024 (least normal)"},
        {0x1.ff8p-15f, 0x03ff, "largest subnormal"},
        {0x1.002p0f, 0x3c00, "1 + 2^-11: tie to even 1"},
        {0x1.006p0f, 0x3c02, "1 + 3*2^-11: tie to even 1 + 2^-9"},
        {0x1.002002p0f, 0x3c01, "just above a tie"},
        {1e-10f, 0x0000, "far below the subnormals"},
        {-1e-10f, 0x8000, "negative, far below"},
        {0.1f, 0x2e66, "0.1"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
        uint16_t got = f32_to_f16(f16[i].f);
        if (got != f16[i].h) {
            fprintf(stderr, "f32->f16 %s (%a): got 0x%04x want 0x%04x\n", f16[i].what,
                    (double)f16[i].f, got, f16[i].h);
            bad++;
        }
    }
    uint16_t hn = f32_to_f16(NAN);
    uint16_t hn2 = f32_to_f16(bits_f32(0xff800001u)); /* signalling nan, payload low */
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    CHECK((hn2 & 0x7c00) == 0x7c00 && (hn2 & 0x3ff) != 0 && (hn2 & 0x8000));

    const struct {
        float f;
        uint16_t b;
        const char *what;
    } bf[] = {
        {1.0f, 0x3f80, "one"},
        {-0.0f, 0x8000, "negative zero"},
        {0x1.01p0f, 0x3f80, "1 + 2^-8: tie to even 1"},
        {0x1.03p0f, 0x3f82, "1 + 3*2^-8: tie to even"},
        {0x1.010002p0f, 0x3f81, "just above a tie"},
        {bits_f32(0x7f7fffffu), 0x7f80, "largest float rounds to inf"},
        {bits_f32(0x7f7f7fffu), 0x7f7f, "largest bf16 stays"},
        {INFINITY, 0x7f80, "inf"},
        {-INFINITY, 0xff80, "-inf"},
        {bits_f32(0x00000001u), 0x0000, "least fp32 subnormal"},
        {bits_f32(0x00008000u), 0x0000, "subnormal tie to even zero"},
        {bits_f32(0x00018000u), 0x0002, "subnormal tie to even"},
        {bits_f32(0x00010000u), 0x0001, "least bf16 subnormal"},
    };
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
        uint16_t got = f32_to_bf16(bf[i].f);
        if (got != bf[i].b) {
            fprintf(stderr, "f32->bf16 %s: got 0x%04x want 0x%04x\n", bf[i].what, got, bf[i].b);
            bad++;
        }
    }
    uint16_t bn = f32_to_bf16(bits_f32(0x7f800001u)); /* truncation would give inf */
    CHECK((bn & 0x7f80) == 0x7f80 && (bn & 0x7f) != 0);
    CHECK(isnan(bf16_to_f32(bn)));

    /* up-conversions */
    CHECK(f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(f16_to_f32(0x03ff) == 0x1.ff8p-15f);
    CHECK(f16_to_f32(0x0400) == 0x1p-14f);
    CHECK(f16_to_f32(0x7bff) == 65504.0f);
    CHECK(f32_bits(f16_to_f32(0x8000)) == 0x80000000u);
    CHECK(isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
    CHECK(isnan(f16_to_f32(0x7e00)) && isnan(f16_to_f32(0x7c01)));
    CHECK(f32_bits(bf16_to_f32(0x8001)) == 0x80010000u);

    /* exhaustive: every non-nan half and bf16 survives a round trip through fp32 */
    int rt16 = 0, rtb = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (isnan(f) ? !isnan(f16_to_f32(f32_to_f16(f))) : f32_to_f16(f) != h) rt16++;
        float g = bf16_to_f32((uint16_t)h);
        if (isnan(g) ? !isnan(bf16_to_f32(f32_to_bf16(g))) : f32_to_bf16(g) != h) rtb++;
    }
    printf("  conversions: %zu f16 and %zu bf16 hand-picked cases, %d wrong; all 65536 "
           "patterns round trip: f16 %d wrong, bf16 %d wrong\n",
           sizeof f16 / sizeof f16[0], sizeof bf / sizeof bf[0], bad, rt16, rtb);
    CHECK(bad == 0 && rt16 == 0 && rtb == 0);
}

/* ---- torch's conversions ------------------------------------------------------------ */

static void test_against_torch(void) {
    char *path = io_source_path("tests/fixtures/hf_fp_conversions.safetensors");
    struct st_file f;
    if (st_open(&f, path) != 0) {
        fprintf(stderr, "%s\n", err_msg());
        CHECK(0);
        free(path);
        return;
    }
    const struct st_tensor *tf = st_find(&f, "f32"), *th = st_find(&f, "f16"),
                           *tb = st_find(&f, "bf16"), *thf = st_find(&f, "f16_as_f32"),
                           *tbf = st_find(&f, "bf16_as_f32");
    CHECK(tf && th && tb && thf && tbf);
    if (!(tf && th && tb && thf && tbf)) {
        st_close(&f);
        free(path);
        return;
    }
    CHECK(tf->dtype == ST_F32 && th->dtype == ST_F16 && tb->dtype == ST_BF16);
    uint64_t n = tf->numel;
    CHECK(th->numel == n && tb->numel == n && thf->numel == n && tbf->numel == n);
    float *x = xmalloc(n * sizeof(float)), *hx = xmalloc(n * sizeof(float)),
          *bx = xmalloc(n * sizeof(float)), *hx_torch = xmalloc(n * sizeof(float)),
          *bx_torch = xmalloc(n * sizeof(float));
    CHECK(st_read_f32(&f, tf, x, n) == 0);
    CHECK(st_read_f32(&f, th, hx, n) == 0);   /* our up-conversion of torch's halves */
    CHECK(st_read_f32(&f, tb, bx, n) == 0);
    CHECK(st_read_f32(&f, thf, hx_torch, n) == 0);
    CHECK(st_read_f32(&f, tbf, bx_torch, n) == 0);
    const uint8_t *hraw = st_data(&f, th), *braw = st_data(&f, tb);
    uint64_t down16 = 0, downb = 0, up16 = 0, upb = 0, nans = 0, ties = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h_torch, b_torch;
        memcpy(&h_torch, hraw + 2 * i, 2);
        memcpy(&b_torch, braw + 2 * i, 2);
        uint16_t h = f32_to_f16(x[i]), b = f32_to_bf16(x[i]);
        if (isnan(x[i])) {
            nans++;
            if (!isnan(f16_to_f32(h)) || !isnan(f16_to_f32(h_torch))) down16++;
            if (!isnan(bf16_to_f32(b)) || !isnan(bf16_to_f32(b_torch))) downb++;
        } else {
            if (h != h_torch) {
                if (down16 < 5)
                    fprintf(stderr, "f16 of %a: ours 0x%04x torch 0x%04x\n", (double)x[i], h,
                            h_torch);
                down16++;
            }
            if (b != b_torch) {
                if (downb < 5)
                    fprintf(stderr, "bf16 of %a: ours 0x%04x torch 0x%04x\n", (double)x[i], b,
                            b_torch);
                downb++;
            }
        }
        if ((f32_bits(x[i]) & 0xffffu) == 0x8000u) ties++;
        if (isnan(hx[i]) ? !isnan(hx_torch[i]) : f32_bits(hx[i]) != f32_bits(hx_torch[i])) up16++;
        if (isnan(bx[i]) ? !isnan(bx_torch[i]) : f32_bits(bx[i]) != f32_bits(bx_torch[i])) upb++;
    }
    printf("  against torch %s: %llu values (%llu nan, %llu exact bf16 ties): f32->f16 %llu "
           "differ, f32->bf16 %llu differ, f16->f32 %llu differ, bf16->f32 %llu differ\n",
           st_meta(&f, "torch") ? st_meta(&f, "torch") : "?", (unsigned long long)n,
           (unsigned long long)nans, (unsigned long long)ties, (unsigned long long)down16,
           (unsigned long long)downb, (unsigned long long)up16, (unsigned long long)upb);
    CHECK(n > 5000 && nans > 0 && ties > 100);
    CHECK(down16 == 0 && downb == 0 && up16 == 0 && upb == 0);
    free(x);
    free(hx);
    free(bx);
    free(hx_torch);
    free(bx_torch);
    st_close(&f);
    free(path);
}

int main(void) {
    char *dir = io_scratch_dir("st-roundtrip");
    printf("file round trip:\n");
    test_file_roundtrip(dir);
    printf("fp16/bf16 conversions:\n");
    test_conversion_cases();
    test_against_torch();
    remove_tree(dir);
    free(dir);
    return check_summary("ok", "failed checks");
}
