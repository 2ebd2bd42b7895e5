/*
 * safetensors_bad: malformed files, built byte by byte here, must each be refused with one
 * line that names the file and says what is wrong; well-formed edge cases built the same way
 * must open. Then every truncation of a valid file and a few thousand random byte mutations
 * must either be refused cleanly or open with a consistent layout (run under ASan in CI).
 */
#include <stdint.h>

#include "io_check.h"
#include "safetensors.h"

#define LEN_ACTUAL UINT64_MAX

struct bad_case {
    const char *name;      /* also the file name */
    const char *header;    /* JSON text (may hold \0 via header_bytes) */
    size_t header_bytes;   /* 0: strlen(header) */
    uint64_t length_field; /* the 8-byte prefix; LEN_ACTUAL: the header's length */
    size_t data_bytes;     /* bytes of data after the header */
    const char *phrase;    /* must appear in the error line; NULL: the file must open */
};

#define T2x3 "\"dtype\":\"F32\",\"shape\":[2,3]"

static const struct bad_case cases[] = {
    /* framing */
    {"too_small", "", 0, 0, 0, "too small for the 8-byte header length"},
    {"length_past_end", "{}", 0, 1000, 0, "runs past the end"},
    {"length_over_cap", "{}", 0, 200000000ull, 0, "exceeds the limit"},
    {"length_2_pow_64", "{}", 0, UINT64_MAX - 1, 0, "exceeds the limit"},
    /* a JSONL file: its first 8 bytes, {"task":, read as a length, then no JSON object */
    {"jsonl_text", "\"a\",\"prompt\":\"b\"}\n", 0, 0x3A226B736174227Bull, 0,
     "not a safetensors file"},
    /* header text */
    {"not_json", "{\"a\": ", 0, LEN_ACTUAL, 0, "not valid JSON"},
    {"not_object", "[1, 2]", 0, LEN_ACTUAL, 0, "not a JSON object"},
    {"bom", "\xef\xbb\xbf{}", 0, LEN_ACTUAL, 0, "must start with '{'"},
    {"nul_padding", "{}\0\0\0\0\0\0", 8, LEN_ACTUAL, 0, "control byte 0x00"},
    {"bad_utf8", "{\"a\xff\":{" T2x3 ",\"data_offsets\":[0,24]}}", 0, LEN_ACTUAL, 24,
     "not valid UTF-8"},
    {"overlong_utf8", "{\"\xc0\xaf\":{}}", 0, LEN_ACTUAL, 0, "not valid UTF-8"},
    {"trailing_text", "{}  x", 0, LEN_ACTUAL, 0, "characters after the JSON object"},
    {"two_objects", "{}{}", 0, LEN_ACTUAL, 0, "characters after the JSON object"},
    /* tensor entries */
    {"unknown_dtype", "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0,
     LEN_ACTUAL, 8, "tensor 'w': unknown dtype 'F33'"},
    {"fp8_dtype", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0,
     LEN_ACTUAL, 2, "dtype 'F8_E4M3' is not supported"},
    {"dtype_not_string", "{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 0,
     LEN_ACTUAL, 8, "dtype is a number"},
    {"negative_offset", "{\"w\":{" T2x3 ",\"data_offsets\":[-4,20]}}", 0, LEN_ACTUAL, 24,
     "tensor 'w': data_offsets must be integers"},
    {"float_offset", "{\"w\":{" T2x3 ",\"data_offsets\":[0,24.5]}}", 0, LEN_ACTUAL, 24,
     "tensor 'w': data_offsets must be integers"},
    {"string_offset", "{\"w\":{" T2x3 ",\"data_offsets\":[\"0\",24]}}", 0, LEN_ACTUAL, 24,
     "tensor 'w': data_offsets must be integers"},
    {"offset_2_pow_48", "{\"w\":{" T2x3 ",\"data_offsets\":[0,281474976710656]}}", 0,
     LEN_ACTUAL, 24, "data_offsets must be integers in [0, 2^48)"},
    {"three_offsets", "{\"w\":{" T2x3 ",\"data_offsets\":[0,12,24]}}", 0, LEN_ACTUAL, 24,
     "data_offsets must be an array [begin, end]"},
    {"end_before_begin",
     "{\"v\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]},\"w\":{" T2x3
     ",\"data_offsets\":[0,24]}}", 0, LEN_ACTUAL, 24, "tensor 'v': data_offsets [4, 0] end"},
    {"gap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, LEN_ACTUAL, 20,
     "tensor 'b': data_offsets [12, 20] leave a gap: bytes [8, 12)"},
    {"not_from_zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0,
     LEN_ACTUAL, 12, "tensor 'a': data_offsets [4, 12] leave a gap: bytes [0, 4)"},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, LEN_ACTUAL, 12,
     "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
    {"alias",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, LEN_ACTUAL, 8,
     "overlap tensor 'a'"},
    {"wrong_byte_count", "{\"a.weight\":{" T2x3 ",\"data_offsets\":[0,12]}}", 0, LEN_ACTUAL, 12,
     "tensor 'a.weight': data_offsets [0, 12] hold 12 bytes but shape [2, 3] of F32 needs 24"},
    {"numel_overflow",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[268435456,268435456,268435456],"
     "\"data_offsets\":[0,4]}}", 0, LEN_ACTUAL, 4, "overflows 64 bits"},
    {"bytes_overflow",
     "{\"w\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 0,
     LEN_ACTUAL, 8, "overflows 64 bits"},
    {"truncated_data", "{\"w\":{" T2x3 ",\"data_offsets\":[0,24]}}", 0, LEN_ACTUAL, 20,
     "file is truncated"},
    {"trailing_bytes", "{\"w\":{" T2x3 ",\"data_offsets\":[0,24]}}", 0, LEN_ACTUAL, 28,
     "4 trailing bytes after the last tensor"},
    {"data_without_tensors", "{}", 0, LEN_ACTUAL, 16, "16 trailing bytes"},
    {"duplicate_tensor",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, LEN_ACTUAL, 16,
     "tensor 'w' appears more than once"},
    {"duplicate_identical",
     "{\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
     "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, LEN_ACTUAL, 0,
     "tensor 'z' appears more than once"},
    {"duplicate_metadata", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, LEN_ACTUAL, 0,
     "'__metadata__' appears more than once"},
    {"duplicate_meta_key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, LEN_ACTUAL, 0,
     "__metadata__: key 'k' appears more than once"},
    {"metadata_number", "{\"__metadata__\":{\"format\":\"pt\",\"step\":1}}", 0, LEN_ACTUAL, 0,
     "__metadata__: key 'step' is a number, expected a string"},
    {"metadata_nested", "{\"__metadata__\":{\"cfg\":{\"r\":\"8\"}}}", 0, LEN_ACTUAL, 0,
     "key 'cfg' is an object, expected a string"},
    {"metadata_not_object", "{\"__metadata__\":\"pt\"}", 0, LEN_ACTUAL, 0,
     "__metadata__ is a string, expected an object of strings"},
    {"missing_data_offsets", "{\"w\":{" T2x3 "}}", 0, LEN_ACTUAL, 24,
     "tensor 'w': missing field 'data_offsets'"},
    {"missing_dtype", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, LEN_ACTUAL, 8,
     "tensor 'w': missing field 'dtype'"},
    {"extra_field", "{\"w\":{" T2x3 ",\"data_offsets\":[0,24],\"extra\":1}}", 0, LEN_ACTUAL, 24,
     "tensor 'w': unknown field 'extra'"},
    {"repeated_field",
     "{\"w\":{" T2x3 ",\"data_offsets\":[0,24],\"dtype\":\"F32\"}}", 0, LEN_ACTUAL, 24,
     "field 'dtype' appears more than once"},
    {"entry_not_object", "{\"w\":[0,24]}", 0, LEN_ACTUAL, 24, "tensor 'w': entry is an array"},
    {"negative_dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 0,
     LEN_ACTUAL, 24, "tensor 'w': shape[1] is not an integer"},
    {"fractional_dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0,
     LEN_ACTUAL, 4, "shape[0] is not an integer"},
    {"shape_not_array", "{\"w\":{\"dtype\":\"F32\",\"shape\":6,\"data_offsets\":[0,24]}}", 0,
     LEN_ACTUAL, 24, "shape is a number"},
    {"nine_dims",
     "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 0,
     LEN_ACTUAL, 1, "9 dimensions"},
    {"control_in_name", "{\"a\\nb\":{" T2x3 ",\"data_offsets\":[0,12]}}", 0, LEN_ACTUAL, 12,
     "tensor 'a\\x0ab'"},
    /* well-formed edge cases the same builder makes: these must open */
    {"ok_empty_header", "{}", 0, LEN_ACTUAL, 0, NULL},
    {"ok_whitespace_padded", "\t\n{}\r ", 0, LEN_ACTUAL, 0, NULL},
    {"ok_scalar_and_empty",
     "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
     "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
     "\"z\":{\"dtype\":\"BOOL\",\"shape\":[4,0],\"data_offsets\":[8,8]}}   ", 0, LEN_ACTUAL, 8,
     NULL},
    {"ok_unsorted_entries",
     "{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]},"
     "\"__metadata__\":{\"format\":\"pt\"},"
     "\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, LEN_ACTUAL, 11, NULL},
};

static void write_case(const char *path, const struct bad_case *c) {
    size_t hlen = c->header_bytes ? c->header_bytes : strlen(c->header);
    size_t total = 8 + hlen + c->data_bytes;
    if (strcmp(c->name, "too_small") == 0) total = 5;
    uint8_t *buf = xcalloc(total > 8 ? total : 8, 1);
    uint64_t len = c->length_field == LEN_ACTUAL ? hlen : c->length_field;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
    if (total >= 8 + hlen) memcpy(buf + 8, c->header, hlen);
    for (size_t i = 8 + hlen; i < total; i++) buf[i] = (uint8_t)(i * 37);
    io_write_bytes(path, buf, total);
    free(buf);
}

/* Every tensor of an opened file lies inside the data buffer, which ends at the file end. */
static int layout_consistent(const struct st_file *f) {
    for (int32_t i = 0; i < f->n_tensors; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (t->end < t->begin || f->data + t->end > f->map + f->size) return 0;
        if (t->numel * st_dtype_size(t->dtype) != t->end - t->begin) return 0;
    }
    return 1;
}

static void test_cases(const char *dir) {
    int refused = 0, opened = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad_case *c = &cases[i];
        char *file = xasprintf("%s.safetensors", c->name);
        char *path = path_join(dir, file);
        write_case(path, c);
        struct st_file f;
        err_clear();
        int rc = st_open(&f, path);
        if (c->phrase) {
            const char *msg = err_msg();
            CHECK(rc == -1, "%s opened", c->name);
            CHECK(strstr(msg, path) == msg, "%s: message does not start with the path: %s",
                  c->name, msg);
            CHECK(strstr(msg, c->phrase) != NULL, "%s: want '%s' in: %s", c->name,
                  c->phrase, msg);
            CHECK(strchr(msg, '\n') == NULL, "%s: message spans lines", c->name);
            CHECK(f.map == NULL && f.tensors == NULL && f.path == NULL,
                  "%s: failed open left state", c->name);
            printf("  %-22s -> %s\n", c->name, msg + strlen(dir) + 1);
            if (rc == -1) refused++;
            if (rc == 0) st_close(&f);
        } else {
            CHECK(rc == 0, "%s: %s", c->name, err_msg());
            if (rc == 0) {
                CHECK(layout_consistent(&f));
                printf("  %-22s -> opens, %d tensors\n", c->name, f.n_tensors);
                opened++;
                st_close(&f);
            }
        }
        free(path);
        free(file);
    }
    char *missing = path_join(dir, "missing.safetensors");
    struct st_file f;
    CHECK(st_open(&f, missing) == -1);
    CHECK(strstr(err_msg(), "missing.safetensors: cannot open") != NULL);
    printf("  %-22s -> %s\n", "missing", err_msg() + strlen(dir) + 1);
    free(missing);
    printf("  %d malformed files refused, %d well-formed edge cases opened\n", refused, opened);
    CHECK(refused >= 15);
}

/* Truncations and byte mutations of a valid file: refused with a line, or consistent. */
static void test_mutations(const char *dir) {
    char *path = path_join(dir, "valid.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {1, 2, 3};
    const int64_t sa[2] = {2, 3}, sb[1] = {3};
    struct st_writer *w = st_writer_new();
    st_writer_add_f32(w, "layer.a", 2, sa, a);
    st_writer_add(w, "layer.b", ST_BF16, 1, sb, b);
    st_writer_meta(w, "k", "v");
    CHECK(st_writer_save(w, path) == 0);
    st_writer_free(w);
    char *raw;
    size_t len;
    CHECK(file_read_all(path, &raw, &len) == 0);

    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | (uint8_t)raw[i];
    char *mpath = path_join(dir, "mutated.safetensors");
    int trunc_refused = 0;
    for (size_t n = 0; n < len; n++) {
        io_write_bytes(mpath, raw, n);
        struct st_file f;
        if (st_open(&f, mpath) == 0) {
            st_close(&f);
        } else if (strstr(err_msg(), "mutated.safetensors") && !strchr(err_msg(), '\n')) {
            trunc_refused++;
        }
    }
    struct rng r;
    rng_seed(&r, 7);
    uint8_t *m = xmalloc(len);
    int mut_refused = 0, mut_opened = 0, inconsistent = 0, unnamed = 0;
    const int trials = 3000;
    for (int t = 0; t < trials; t++) {
        memcpy(m, raw, len);
        int flips = 1 + (int)rng_below(&r, 3);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)rng_below(&r, len);
            /* bias towards the header, where the parsing happens */
            if (rng_below(&r, 4) != 0) at = 8 + (size_t)rng_below(&r, header_len);
            m[at] = (uint8_t)rng_below(&r, 256);
        }
        io_write_bytes(mpath, m, len);
        struct st_file f;
        if (st_open(&f, mpath) == 0) {
            mut_opened++;
            if (!layout_consistent(&f)) inconsistent++;
            st_close(&f);
        } else {
            mut_refused++;
            if (!strstr(err_msg(), "mutated.safetensors") || strchr(err_msg(), '\n')) unnamed++;
        }
    }
    printf("  truncations: %d of %zu refused; %d mutations: %d refused, %d opened (%d "
           "inconsistent), %d messages without the file name\n",
           trunc_refused, len, trials, mut_refused, mut_opened, inconsistent, unnamed);
    CHECK(trunc_refused == (int)len);
    CHECK(inconsistent == 0 && unnamed == 0 && mut_refused > trials / 2);
    free(m);
    free(raw);
    free(mpath);
    free(path);
}

int main(void) {
    char *dir = io_scratch_dir("st-bad");
    printf("malformed files:\n");
    test_cases(dir);
    printf("truncations and mutations:\n");
    test_mutations(dir);
    remove_tree(dir);
    free(dir);
    return check_summary("ok", "failed checks");
}
