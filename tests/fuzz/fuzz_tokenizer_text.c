/*
 * Fuzz target: encoding any bytes. A byte-level tokenizer (Llama-3's split, ByteLevel, a few
 * merges) must give back the text exactly as the UTF-8 decoder reads it (invalid sequences as
 * U+FFFD): decode(encode(x)) == sanitize(x); with an NFC normalizer in front, the NFC of that.
 * A SentencePiece-style one (Prepend/Replace, byte fallback, added tokens with lstrip/rstrip)
 * must not fail.
 */
#include <string.h>

#include "fuzz_input.h"
#include "tok_internal.h"

static const char *byte_level_json(int nfc) {
    static char buf[2][32768];
    char *o = buf[nfc];
    size_t n = 0;
    n += (size_t)snprintf(o + n, sizeof buf[0] - n,
        "{\"added_tokens\":[{\"id\":300,\"content\":\"<|eot|>\",\"special\":true}],"
        "\"normalizer\":%s,"
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
        "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
        "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{",
        nfc ? "{\"type\":\"NFC\"}" : "null");
    for (int b = 0; b < 256; b++) {
        char ch[4];
        size_t m = utf8_put(byte_level_char((uint8_t)b), ch);
        /* JSON string of the character: escape quote and backslash */
        o[n++] = '"';
        if (ch[0] == '"' || ch[0] == '\\') o[n++] = '\\';
        memcpy(o + n, ch, m);
        n += m;
        n += (size_t)snprintf(o + n, sizeof buf[0] - n, "\":%d,", b);
    }
    n += (size_t)snprintf(o + n, sizeof buf[0] - n,
        "\"\xC4\xA0t\":256,\"he\":257,\"\xC4\xA0the\":258,\"\xC4\xA0\xC4\xA0\":259},"
        "\"merges\":[\"\xC4\xA0 t\",\"h e\",\"\xC4\xA0t he\",\"\xC4\xA0 \xC4\xA0\"]}}");
    return o;
}

static const char TOY[] =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
    "{\"id\":3,\"content\":\"<sep>\",\"lstrip\":true,\"rstrip\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}]},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":\" \"},"
    "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0xC3>\":4,\"<0xA9>\":5,\"\\u2581\":6,\"a\":7,\"b\":8,\"ab\":9,\"\\u2581a\":10},"
    "\"merges\":[\"\\u2581 a\",\"a b\"]}}";

static struct tokenizer *load(const char *name, const char *json) {
    struct tokenizer *t = NULL;
    /* without the config's clean-up of spaces before punctuation, decoding undoes encoding */
    static const char config[] = "{\"clean_up_tokenization_spaces\": false}";
    char *config_path = xstrdup(fuzz_file("tokenizer_config.json", (const uint8_t *)config, strlen(config)));
    char *path = xstrdup(fuzz_file(name, (const uint8_t *)json, strlen(json)));
    int rc = tokenizer_load(path, config_path, &t);
    free(path);
    free(config_path);
    if (rc) {
        fprintf(stderr, "fuzz_tokenizer_text: %s\n", err_msg());
        abort();
    }
    return t;
}

static void round_trip(const struct tokenizer *t, const char *text, size_t size, int nfc) {
    struct tok_encoding e = {0};
    tokenizer_encode(t, text, size, 0, &e);
    char *out = NULL;
    size_t len = 0;
    if (tokenizer_decode(t, e.ids, e.n, 0, &out, &len)) abort();
    /* what the text reads as: invalid UTF-8 as U+FFFD, then NFC when the tokenizer has it */
    struct ustr u = {0};
    utf8_decode(text, size, 0, &u);
    if (nfc) nfc_apply(&u);
    struct bstr want = {0};
    bstr_put(&want, "", 0);
    for (size_t i = 0; i < u.n; i++) bstr_put_cp(&want, u.cp[i]);
    if (want.n != len || memcmp(want.p, out, len) != 0) {
        fprintf(stderr, "round trip differs (nfc %d): %zu bytes back, want %zu\n", nfc, len, want.n);
        abort();
    }
    bstr_free(&want);
    ustr_free(&u);
    free(out);
    tok_encoding_free(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct tokenizer *plain, *nfc, *toy;
    if (!plain) {
        plain = load("plain.json", byte_level_json(0));
        nfc = load("nfc.json", byte_level_json(1));
        toy = load("toy.json", TOY);
    }
    const char *text = (const char *)data;
    round_trip(plain, text, size, 0);
    round_trip(nfc, text, size, 1);
    struct tok_encoding e = {0};
    tokenizer_encode(toy, text, size, TOK_ADD_SPECIAL, &e);
    char *out = NULL;
    size_t len = 0;
    if (tokenizer_decode(toy, e.ids, e.n, 1, &out, &len)) abort();
    free(out);
    tok_encoding_free(&e);
    err_clear();
    return 0;
}
