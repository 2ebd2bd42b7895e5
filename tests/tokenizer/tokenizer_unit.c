/*
 * tokenizer_unit.c: the tokenizer's pieces on their own.
 *  - the split regexes of GPT-2 and Llama-3 against the pieces JavaScript's String.match gives
 *    (captured with node 20; the strings exercise \s+(?!\S), \s*[\r\n]+, \p{N}{1,3}, the
 *    case-insensitive contractions, NBSP and ideographic space, emoji);
 *  - constructs outside the subset are refused by name;
 *  - a small hand-made tokenizer.json: merge order with ties, byte fallback, added tokens with
 *    lstrip/rstrip, TemplateProcessing, offsets, and the decoders;
 *  - each unsupported component is refused with one line naming the file and the component;
 *  - the chat templates' renderings and their assistant spans.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "tok_internal.h"

static const char GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                             "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* The matches of re in s, joined by '|'. */
static void matches(const struct tok_regex *re, const char *s, char *out, size_t cap) {
    struct ustr u = {0};
    utf8_decode(s, strlen(s), 0, &u);
    struct bstr b = {0};
    bstr_put(&b, "", 0);
    size_t from = 0, a, e;
    while (tok_regex_find(re, u.cp, u.n, from, &a, &e) && e > a) {
        if (b.n) bstr_putc(&b, '|');
        for (size_t k = a; k < e; k++) bstr_put_cp(&b, u.cp[k]);
        from = e;
    }
    snprintf(out, cap, "%s", b.p);
    bstr_free(&b);
    ustr_free(&u);
}

static void test_regex(void) {
    static const char *in[] = {"Hello world's  \n\n  x 12345", "I'M here\t\t!!\r\n  ok",
                               "   leading and trailing   ",
                               "a\xC2\xA0" "b\xE3\x80\x80" "c \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80\xF0\x9F\x98\x80 x",
                               "don'T 'LL 's\n\n\n", "x=1234567;  y\n  \n z"};
    static const char *want_gpt2[] = {
        "Hello| world|'s|  \n\n | x| 12345", "I|'|M| here|\t|\t|!!|\r\n | ok",
        "  | leading| and| trailing|   ",
        "a|\xC2\xA0|b|\xE3\x80\x80|c| \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E| \xF0\x9F\x98\x80\xF0\x9F\x98\x80| x",
        "don|'|T| '|LL| '|s|\n\n\n", "x|=|1234567|;| | y|\n  \n| z"};
    static const char *want_llama3[] = {
        "Hello| world|'s|  \n\n| | x| |123|45", "I|'M| here|\t|\t|!!\r\n| | ok",
        "  | leading| and| trailing|   ",
        "a|\xC2\xA0" "b|\xE3\x80\x80" "c| \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E| \xF0\x9F\x98\x80\xF0\x9F\x98\x80| x",
        "don|'T| '|LL| '|s|\n\n\n", "x|=|123|456|7|;| | y|\n  \n| z"};
    struct tok_regex *g = tok_regex_compile(GPT2), *l = tok_regex_compile(LLAMA3);
    CHECK(g && l, "the patterns compile: %s", err_msg());
    int bad = 0;
    for (size_t i = 0; g && l && i < sizeof in / sizeof in[0]; i++) {
        char got[512];
        matches(g, in[i], got, sizeof got);
        if (strcmp(got, want_gpt2[i]) != 0) bad++, printf("gpt2 #%zu: got '%s' want '%s'\n", i, got, want_gpt2[i]);
        matches(l, in[i], got, sizeof got);
        if (strcmp(got, want_llama3[i]) != 0) bad++, printf("llama3 #%zu: got '%s' want '%s'\n", i, got, want_llama3[i]);
    }
    CHECK(bad == 0, "%d split mismatches against JavaScript", bad);
    printf("regex: %zu strings x 2 patterns, %d mismatches\n", sizeof in / sizeof in[0], bad);
    /* Digits with individual_digits (SmolLM2's): the reference's [^\d]+|\d */
    struct tok_regex *dg = tok_regex_compile("[^\\d]+|\\d");
    char got[256];
    matches(dg, "ab12 3x\xD9\xA3", got, sizeof got); /* Arabic-Indic 3 is not \d in JavaScript */
    CHECK(dg && strcmp(got, "ab|1|2| |3|x\xD9\xA3") == 0, "digits: '%s'", got);
    tok_regex_free(dg);
    tok_regex_free(g);
    tok_regex_free(l);

    /* A repetition whose body can match nothing ends (and matches as JavaScript does): the
     * machine drops a state it has been in, instead of looping on it. */
    static const char *empty_loops[][3] = {{" ?*x", "a  x b x", "  x| x"},
                                           {"(a?)*b", "aab b", "aab|b"},
                                           {"(a*)*b|c", "aaac", "c"}};
    for (size_t i = 0; i < sizeof empty_loops / sizeof empty_loops[0]; i++) {
        struct tok_regex *re = tok_regex_compile(empty_loops[i][0]);
        char m[128] = "";
        if (re) matches(re, empty_loops[i][1], m, sizeof m);
        CHECK(re && strcmp(m, empty_loops[i][2]) == 0, "'%s' on '%s': '%s', want '%s' (%s)",
              empty_loops[i][0], empty_loops[i][1], m, empty_loops[i][2], re ? "" : err_msg());
        tok_regex_free(re);
    }
    /* and a nested repetition over a long text without a match: backtracking through every
     * way of splitting 2000 'a' would not end; one visit per state does */
    char *long_a = xmalloc(2001);
    memset(long_a, 'a', 2000);
    long_a[2000] = 0;
    struct tok_regex *nested = tok_regex_compile("(a*)*b");
    char m[64] = "";
    double t0 = now_seconds();
    if (nested) matches(nested, long_a, m, sizeof m);
    CHECK(nested && m[0] == 0, "(a*)*b matched '%s' in a text without b", m);
    printf("regex: empty repetitions end; (a*)*b over 2000 a: no match in %.2f s\n",
           now_seconds() - t0);
    tok_regex_free(nested);
    free(long_a);

    static const char *refused[][2] = {{"(?<=a)b", "group kind"}, {"^a", "anchor"},
                                       {"a+?", "lazy"}, {"\\p{Lu}", "property"},
                                       {"(a", "unclosed"}, {"\\1", "escape"}};
    int refusals = 0;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        struct tok_regex *re = tok_regex_compile(refused[i][0]);
        int ok = !re && strstr(err_msg(), refused[i][1]);
        CHECK(ok, "'%s': %s", refused[i][0], re ? "accepted" : err_msg());
        refusals += ok;
        tok_regex_free(re);
    }
    printf("regex: %d of %zu constructs outside the subset refused by name\n", refusals,
           sizeof refused / sizeof refused[0]);
}

static char *write_tmp(const char *dir, const char *name, const char *text) {
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* A SentencePiece-style toy: Prepend/Replace, byte fallback, TemplateProcessing, added
 * tokens with lstrip/rstrip, and the decoders Replace, ByteFallback, Fuse, Strip. */
static const char TOY[] =
    "{\"version\":\"1.0\",\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true},"
    "{\"id\":2,\"content\":\"</s>\",\"special\":true},"
    "{\"id\":3,\"content\":\"<sep>\",\"lstrip\":true,\"rstrip\":true,\"special\":false}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
    "\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":\" \"},"
    "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0xC3>\":4,\"<0xA9>\":5,\"\\u2581\":6,\"a\":7,\"b\":8,"
    "\"ab\":9,\"\\u2581a\":10,\"\\u2581ab\":11,\"ba\":12},"
    "\"merges\":[\"\\u2581 a\",\"a b\",\"\\u2581a b\",\"b a\"]}}";

static void test_toy(const char *dir) {
    char *path = write_tmp(dir, "toy.json", TOY);
    struct tokenizer *t = NULL;
    CHECK(tokenizer_load(path, NULL, &t) == 0, "toy: %s", err_msg());
    if (!t) { free(path); return; }
    struct {
        const char *text;
        int special;
        int32_t want[16];
        int n;
    } cases[] = {
        /* ▁abab: "▁ a" (rank 0), then "a b" (1) before "▁a b" (2): BOS ▁ab ab */
        {"abab", 1, {1, 11, 9}, 3},
        /* ▁bab: "a b" (rank 1) beats "b a" (3): ▁ b ab */
        {"bab", 0, {6, 8, 9}, 3},
        /* é is outside the vocabulary: its bytes; x has no byte tokens: unknown, fused with y */
        {"a\xC3\xA9xy", 0, {10, 4, 5, 0}, 4},
        /* lstrip/rstrip: the spaces around <sep> go */
        {"a  <sep>  b", 0, {10, 3, 6, 8}, 4},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tok_encoding e = {0};
        tokenizer_encode(t, cases[i].text, strlen(cases[i].text), cases[i].special, &e);
        int ok = e.n == (size_t)cases[i].n && memcmp(e.ids, cases[i].want, e.n * sizeof(int32_t)) == 0;
        if (!ok) {
            bad++;
            printf("toy '%s': got", cases[i].text);
            for (size_t k = 0; k < e.n; k++) printf(" %d", e.ids[k]);
            printf("\n");
        }
        tok_encoding_free(&e);
    }
    CHECK(bad == 0, "%d toy encodings differ", bad);
    /* offsets: "ba ab" -> BOS ▁ ba ▁ab, the last from the space at byte 2 */
    struct tok_encoding e = {0};
    tokenizer_encode(t, "ba ab", 5, TOK_ADD_SPECIAL, &e);
    CHECK(e.n >= 3 && e.offset[0] == -1 && e.ids[e.n - 1] == 11 && e.offset[e.n - 1] == 2,
          "offsets: BOS -1, '\\u2581ab' from byte 2 (the space): n %zu last id %d offset %lld", e.n,
          e.n ? e.ids[e.n - 1] : -1, e.n ? (long long)e.offset[e.n - 1] : -1);
    tok_encoding_free(&e);
    /* decode: <s> ▁ab ab <0xC3><0xA9> </s>; Strip takes a leading space only from the start */
    int32_t ids[] = {1, 11, 9, 4, 5, 2};
    char *out = NULL;
    size_t len = 0;
    CHECK(tokenizer_decode(t, ids, 6, 0, &out, &len) == 0 && strcmp(out, "<s> abab\xC3\xA9</s>") == 0,
          "decode: '%s'", out ? out : "");
    free(out);
    CHECK(tokenizer_decode(t, ids, 6, 1, &out, &len) == 0 && strcmp(out, "abab\xC3\xA9") == 0,
          "decode without specials: '%s'", out ? out : "");
    free(out);
    printf("toy tokenizer: %zu encodings, %d wrong; offsets and decoding checked\n",
           sizeof cases / sizeof cases[0], bad);
    tokenizer_free(t);
    free(path);
}

/* Each unsupported component: one line naming the file and the component. */
static void test_refusals(const char *dir) {
    static const struct {
        const char *from, *to, *want;
    } edits[] = {
        {"\"pre_tokenizer\":null", "\"pre_tokenizer\":{\"type\":\"Whitespace\"}", "pre_tokenizer: type 'Whitespace' is not supported"},
        {"{\"type\":\"Prepend\",", "{\"type\":\"NFKC\",", "normalizer.normalizers[0]: type 'NFKC' is not supported"},
        {"{\"type\":\"Fuse\"}", "{\"type\":\"CTC\"}", "decoder.decoders[2]: type 'CTC' is not supported"},
        {"\"type\":\"BPE\"", "\"type\":\"Unigram\"", "model: type 'Unigram' is not supported"},
        {"\"b a\"]", "\"b q\"]", "model.merges[3]: 'b q': a token of the merge is not in the vocabulary"},
        {"\"pre_tokenizer\":null", "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?<=x)\"},\"behavior\":\"Isolated\"}",
         "pre_tokenizer: pattern: regex uses a group kind"},
        {"\"pre_tokenizer\":null", "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"MergedWithNext\"}",
         "pre_tokenizer: Split behavior 'MergedWithNext' is not supported"},
        {"\"type\":\"TemplateProcessing\"", "\"type\":\"BertProcessing\"", "post_processor: type 'BertProcessing' is not supported"},
    };
    int ok_count = 0;
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        const char *at = strstr(TOY, edits[i].from);
        CHECK(at != NULL, "edit %zu does not apply", i);
        if (!at) continue;
        struct bstr b = {0};
        bstr_put(&b, TOY, (size_t)(at - TOY));
        bstr_put(&b, edits[i].to, strlen(edits[i].to));
        bstr_put(&b, at + strlen(edits[i].from), strlen(at + strlen(edits[i].from)));
        char name[32];
        snprintf(name, sizeof name, "bad%zu.json", i);
        char *path = write_tmp(dir, name, b.p);
        struct tokenizer *t = NULL;
        int rc = tokenizer_load(path, NULL, &t);
        int ok = rc == -1 && !t && strncmp(err_msg(), path, strlen(path)) == 0 && strstr(err_msg(), edits[i].want) &&
                 !strchr(err_msg(), '\n');
        CHECK(ok, "refusal %zu: got '%s', want '%s'", i, rc ? err_msg() : "(loaded)", edits[i].want);
        if (ok && ok_count < 3) printf("  %s\n", err_msg());
        ok_count += ok;
        tokenizer_free(t);
        free(path);
        bstr_free(&b);
    }
    printf("refusals: %d of %zu unsupported components refused with file and component\n", ok_count,
           sizeof edits / sizeof edits[0]);
}

static void test_chat(void) {
    struct chat_message m[] = {{"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello."},
                               {"user", "Again"}, {"assistant", "Hi again."}};
    struct {
        enum chat_family f;
        const char *want;
    } cases[] = {
        {CHAT_CHATML, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
                      "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n"
                      "<|im_start|>assistant\nHi again.<|im_end|>\n"},
        {CHAT_CHATML_THINK, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
                            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n"
                            "<|im_start|>assistant\n<think>\n\n</think>\n\nHi again.<|im_end|>\n"},
        {CHAT_LLAMA3, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nAgain<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\nHi again.<|eot_id|>"},
        {CHAT_LLAMA2, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello. </s><s>[INST] Again [/INST] Hi again. </s>"},
    };
    const char *ends[] = {"<|im_end|>", "<|im_end|>", "<|eot_id|>", "</s>"};
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        size_t len = 0;
        struct chat_spans sp = {0};
        int rc = chat_render(cases[i].f, tokenizer_bytes(), m, 5, 0, &out, &len, &sp);
        int ok = rc == 0 && strcmp(out, cases[i].want) == 0 && sp.n == 4;
        /* the spans: the answers, each ending with the end-of-turn token */
        for (size_t k = 0; ok && k < sp.n; k += 2) {
            size_t e = strlen(ends[i]);
            ok = sp.v[k + 1] - sp.v[k] > e && memcmp(out + sp.v[k + 1] - e, ends[i], e) == 0 &&
                 (strncmp(out + sp.v[k], "Hello.", 6) == 0 || strncmp(out + sp.v[k], "Hi again.", 9) == 0 ||
                  strncmp(out + sp.v[k], "<think>", 7) == 0);
        }
        if (!ok) bad++, printf("%s: rc %d spans %zu\n%s\n", chat_family_name(cases[i].f), rc, sp.n / 2, out ? out : "");
        free(out);
        free(sp.v);
    }
    CHECK(bad == 0, "%d chat renderings differ", bad);
    /* roles out of order for Llama-2 */
    struct chat_message wrong[] = {{"assistant", "x"}};
    char *out = NULL;
    size_t len;
    struct chat_spans sp = {0};
    CHECK(chat_render(CHAT_LLAMA2, tokenizer_bytes(), wrong, 1, 0, &out, &len, &sp) == -1 &&
              strstr(err_msg(), "message 1"), "llama2 accepted an assistant first: %s", err_msg());
    enum chat_family f;
    CHECK(chat_family_of("{% for m in messages %}<|im_start|>{{ m.role }}", &f) == 0 && f == CHAT_CHATML, "chatml by text");
    CHECK(chat_family_of("{{ '<|start_header_id|>' }}", &f) == 0 && f == CHAT_LLAMA3, "llama3 by text");
    CHECK(chat_family_of("{{ '[INST] ' }}{{ '<<SYS>>' }}", &f) == 0 && f == CHAT_LLAMA2, "llama2 by text");
    CHECK(chat_family_of("{{ '<|user|>' }}", &f) == -1, "an unknown template was recognised");
    printf("chat: %zu families rendered, %d wrong; spans end with the end-of-turn token\n",
           sizeof cases / sizeof cases[0], bad);
}

int main(void) {
    char dir[] = "/tmp/peft_tok_unit.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_regex();
    test_toy(dir);
    test_refusals(dir);
    test_chat();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
    return check_report("tokenizer_unit");
}
