/*
 * parity.c: our tokenizer against the reference's ids and texts (expected/NAME.tsv, written by
 * make_expected.mjs with @lenml/tokenizers) on every string of corpus.hex, for each real
 * tokenizer fetched by fetch_tokenizers.sh: encode with and without special tokens, and decode
 * of the reference's ids. Prints a table (tokenizer x strings x mismatches) and the first
 * mismatches of each kind; exits 1 on any mismatch.
 *
 *   parity CACHE_DIR TESTS_TOKENIZER_DIR [NAME...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core.h"
#include "hex.h"
#include "tokenizer.h"

/* "1,2,3" -> ids; "" -> none */
static size_t parse_ids(const char *s, int32_t **ids) {
    size_t n = 0, cap = 16;
    *ids = xmalloc(cap * sizeof **ids);
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (n == cap) *ids = xrealloc(*ids, (cap *= 2) * sizeof **ids);
        (*ids)[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    printf("      %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) printf(" %d", ids[i]);
    printf(n > 40 ? " ...\n" : "\n");
}

struct counts {
    int strings, enc_special, enc_plain, dec_special, dec_plain;
};

static int run_one(const char *cache, const char *dir, const char *name, struct counts *c) {
    char json[1024], cfg[1024], tsv[1024], corpus[1024];
    snprintf(json, sizeof json, "%s/tokenizers/%s/tokenizer.json", cache, name);
    snprintf(cfg, sizeof cfg, "%s/tokenizers/%s/tokenizer_config.json", cache, name);
    snprintf(tsv, sizeof tsv, "%s/expected/%s.tsv", dir, name);
    snprintf(corpus, sizeof corpus, "%s/corpus.hex", dir);
    struct tokenizer *t;
    if (tokenizer_load(json, cfg, &t)) {
        printf("%s: cannot load: %s\n", name, err_msg());
        return -1;
    }
    FILE *fc = fopen(corpus, "r"), *fe = fopen(tsv, "r");
    if (!fc || !fe) {
        printf("%s: cannot open %s or %s\n", name, corpus, tsv);
        if (fc) fclose(fc);
        if (fe) fclose(fe);
        tokenizer_free(t);
        return -1;
    }
    size_t cap_line = 1 << 16;
    char *line = xmalloc(cap_line), *exp = xmalloc(cap_line), *text = xmalloc(cap_line);
    ssize_t got;
    size_t cap_a = cap_line, cap_b = cap_line;
    memset(c, 0, sizeof *c);
    int shown = 0;
    while ((got = getline(&line, &cap_a, fc)) > 0) {
        if (getline(&exp, &cap_b, fe) <= 0) {
            printf("%s: %s has fewer lines than the corpus\n", name, tsv);
            break;
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        size_t el = strlen(exp);
        while (el > 0 && (exp[el - 1] == '\n' || exp[el - 1] == '\r')) exp[--el] = '\0';
        if ((size_t)got / 2 + 1 > cap_line) {
            cap_line = (size_t)got / 2 + 1;
            text = xrealloc(text, cap_line);
        }
        size_t len = unhex(line, (size_t)got, text);
        /* fields: index, ids with specials, ids without, decode-with hex, decode-without hex */
        char *f[5] = {0};
        char *p = exp;
        for (int k = 0; k < 5; k++) {
            f[k] = p;
            char *tab = strchr(p, '\t');
            if (!tab) { p = p + strlen(p); if (k < 4) f[k + 1] = p; continue; }
            *tab = '\0';
            p = tab + 1;
        }
        c->strings++;
        for (int special = 1; special >= 0; special--) {
            int32_t *want;
            size_t n_want = parse_ids(f[special ? 1 : 2], &want);
            struct tok_encoding e = {0};
            tokenizer_encode(t, text, len, special ? TOK_ADD_SPECIAL : 0, &e);
            int same = e.n == n_want && (n_want == 0 || memcmp(e.ids, want, n_want * sizeof *want) == 0);
            if (!same) {
                if (special) c->enc_special++;
                else c->enc_plain++;
                if (shown++ < 60) {
                    printf("  %s #%s encode%s differs: text %.120s\n", name, f[0],
                           special ? " with specials" : "", line);
                    print_ids("want", want, n_want);
                    print_ids("got ", e.ids, e.n);
                }
            }
            const char *want_hex = f[special ? 3 : 4];
            if (n_want > 0 && strcmp(want_hex, "-") != 0) {
                char *out = NULL;
                size_t out_len = 0;
                char *want_text = xmalloc(strlen(want_hex) / 2 + 1);
                size_t want_len = unhex(want_hex, strlen(want_hex), want_text);
                int ok = tokenizer_decode(t, want, n_want, 0, &out, &out_len) == 0 &&
                         out_len == want_len && memcmp(out, want_text, want_len) == 0;
                if (!ok) {
                    if (special) c->dec_special++;
                    else c->dec_plain++;
                    if (shown++ < 60)
                        printf("  %s #%s decode%s differs: want '%.*s' got '%.*s'\n", name, f[0],
                               special ? " with specials" : "", (int)want_len, want_text,
                               (int)(out ? out_len : 0), out ? out : "");
                }
                free(out);
                free(want_text);
            }
            tok_encoding_free(&e);
            free(want);
        }
    }
    free(line);
    free(exp);
    free(text);
    fclose(fc);
    fclose(fe);
    tokenizer_free(t);
    return 0;
}

/* Our chat renderings against the reference's apply_chat_template (expected/chat.json): the
 * four conversations, with and without the generation prompt. The Llama-3 package's template
 * always ends with the assistant's header, so its renderings are compared with ours that ask
 * for the generation prompt; Llama-2's ignores the flag, as ours does. */
static int check_chat(const char *cache, const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/expected/chat.json", dir);
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, &text, &len)) {
        printf("chat: %s\n", err_msg());
        return 1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *convs = cJSON_GetObjectItemCaseSensitive(root, "conversations");
    static const struct {
        const char *key, *tokenizer;
        enum chat_family f;
        int always_gen;
    } fams[] = {{"chatml", "qwen3", CHAT_CHATML, 0}, {"chatml_qwen3", "qwen3", CHAT_CHATML_THINK, 0},
                {"llama3", "llama3", CHAT_LLAMA3, 1}, {"llama2", "llama2", CHAT_LLAMA2, 0}};
    int bad = 0, tried = 0;
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        char json[1024], cfg[1024];
        snprintf(json, sizeof json, "%s/tokenizers/%s/tokenizer.json", cache, fams[f].tokenizer);
        snprintf(cfg, sizeof cfg, "%s/tokenizers/%s/tokenizer_config.json", cache, fams[f].tokenizer);
        struct tokenizer *t;
        if (tokenizer_load(json, cfg, &t)) {
            printf("chat: %s\n", err_msg());
            bad++;
            continue;
        }
        const cJSON *fam = cJSON_GetObjectItemCaseSensitive(root, fams[f].key);
        for (const cJSON *c = convs ? convs->child : NULL; c; c = c->next) {
            struct chat_message m[16];
            int32_t n = 0;
            for (const cJSON *msg = c->child; msg && n < 16; msg = msg->next, n++) {
                m[n].role = cJSON_GetObjectItemCaseSensitive(msg, "role")->valuestring;
                m[n].content = cJSON_GetObjectItemCaseSensitive(msg, "content")->valuestring;
            }
            for (int gen = 0; gen <= 1; gen++) {
                const cJSON *want = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(fam, c->string), gen ? "true" : "false");
                if (!cJSON_IsString(want)) continue;
                char *out = NULL;
                size_t out_len = 0;
                struct chat_spans sp = {0};
                int rc = chat_render(fams[f].f, t, m, n, gen || fams[f].always_gen, &out, &out_len, &sp);
                tried++;
                if (rc || strcmp(out, want->valuestring) != 0) {
                    bad++;
                    printf("chat %s %s gen=%d differs:\n  want %s\n  got  %s\n", fams[f].key, c->string,
                           gen, want->valuestring, rc ? err_msg() : out);
                }
                free(out);
                free(sp.v);
            }
        }
        tokenizer_free(t);
    }
    cJSON_Delete(root);
    printf("chat templates: %d renderings compared with apply_chat_template, %d differ\n", tried, bad);
    return bad > 0 || tried < 24;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: parity CACHE_DIR TESTS_TOKENIZER_DIR [NAME...]\n");
        return 2;
    }
    const char *names_default[] = {"llama2", "llama3", "qwen3"};
    int n_names = argc > 3 ? argc - 3 : 3;
    const char **names = argc > 3 ? (const char **)argv + 3 : names_default;
    int bad = 0;
    struct counts c[8];
    for (int i = 0; i < n_names && i < 8; i++) {
        if (run_one(argv[1], argv[2], names[i], &c[i])) {
            bad = 1;
            c[i].strings = 0;
        }
    }
    printf("\n| tokenizer | strings | encode (specials) | encode (none) | decode (specials) | decode (none) |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < n_names && i < 8; i++) {
        printf("| %s | %d | %d | %d | %d | %d |\n", names[i], c[i].strings, c[i].enc_special,
               c[i].enc_plain, c[i].dec_special, c[i].dec_plain);
        bad |= c[i].strings == 0 || c[i].enc_special || c[i].enc_plain || c[i].dec_special || c[i].dec_plain;
    }
    printf("(mismatches per kind; 0 everywhere is parity)\n");
    if (argc == 3) bad |= check_chat(argv[1], argv[2]);
    return bad;
}
