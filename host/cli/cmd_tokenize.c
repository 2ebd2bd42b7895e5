/* cmd_tokenize.c: peft tokenize: a model folder's tokenizer on a text, ids and pieces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "tokenizer/tokenizer.h"

/* s as a quoted line: control bytes and quotes escaped, the rest (UTF-8) as is. */
static void print_quoted(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') printf("\\n");
        else if (c == '\t') printf("\\t");
        else if (c == '\r') printf("\\r");
        else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
}

/* All of standard input (any bytes, NULs included). */
static int read_stdin(char **out, size_t *len) {
    size_t cap = 65536, n = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) buf = xrealloc(buf, cap *= 2);
    }
    if (ferror(stdin)) {
        free(buf);
        return err_set("tokenize: standard input: read failed");
    }
    *len = n;
    *out = buf;
    return 0;
}

static int tokenize_main(int argc, char **argv) {
    const char *dir = NULL, *text_arg = NULL, *decode = NULL;
    int special = 1, ids_only = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--no-special") == 0) special = 0;
        else if (strcmp(a, "--ids") == 0) ids_only = 1;
        else if (strcmp(a, "--decode") == 0 && i + 1 < argc) decode = argv[++i];
        else if (a[0] == '-' && a[1] == '-') return cli_unexpected(&cmd_tokenize, a);
        else if (!dir) dir = a;
        else if (!text_arg) text_arg = a;
        else return cli_unexpected(&cmd_tokenize, a);
    }
    if (!dir) {
        err_set("tokenize: give a model folder (peft tokenize --help)");
        return cli_fail();
    }
    struct tokenizer *t = NULL;
    int found = tokenizer_load_dir(dir, &t);
    if (found <= 0) {
        if (found == 0) err_set("%s: no tokenizer.json in this folder", dir);
        return cli_fail();
    }
    int rc = 0;
    if (decode) {
        struct tok_encoding e = {0};
        for (const char *p = decode; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) {
                err_set("tokenize: --decode: expected ids like 1,2,3, got '%s'", decode);
                rc = -1;
                break;
            }
            tok_encoding_push(&e, (int32_t)v, -1);
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
        char *out = NULL;
        size_t len = 0;
        if (rc == 0 && tokenizer_decode(t, e.ids, e.n, !special, &out, &len) == 0) {
            fwrite(out, 1, len, stdout);
            putchar('\n');
        } else {
            rc = -1;
        }
        free(out);
        tok_encoding_free(&e);
        tokenizer_free(t);
        return rc ? cli_fail() : 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (text_arg) {
        text = xstrdup(text_arg);
        len = strlen(text);
    } else if (read_stdin(&text, &len)) {
        tokenizer_free(t);
        return cli_fail();
    }
    struct tok_encoding e = {0};
    tokenizer_encode(t, text, len, special ? TOK_ADD_SPECIAL : 0, &e);
    if (ids_only) {
        for (size_t i = 0; i < e.n; i++) printf(i ? " %d" : "%d", e.ids[i]);
        putchar('\n');
    } else {
        printf("%-8s %-7s %-24s %s\n", "id", "offset", "piece", "text");
        for (size_t i = 0; i < e.n; i++) {
            const char *piece = tokenizer_piece(t, e.ids[i]);
            char *own = NULL;
            size_t own_len = 0;
            tokenizer_decode(t, &e.ids[i], 1, 0, &own, &own_len);
            printf("%-8d %-7lld ", e.ids[i], (long long)e.offset[i]);
            print_quoted(piece, strlen(piece));
            printf("%*s", (int)(strlen(piece) < 22 ? 22 - strlen(piece) : 0), "");
            putchar(' ');
            print_quoted(own ? own : "", own_len);
            putchar('\n');
            free(own);
        }
        printf("%zu tokens from %zu bytes (%s)\n", e.n, len, tokenizer_path(t));
    }
    tok_encoding_free(&e);
    free(text);
    tokenizer_free(t);
    return 0;
}

const struct command cmd_tokenize = {
    "tokenize", "MODEL_DIR [TEXT] [--no-special] [--ids] [--decode IDS]",
    "Show how a model folder's tokenizer.json splits a text: ids, offsets, pieces.",
    "Reads MODEL_DIR/tokenizer.json (and tokenizer_config.json), as a run on that folder does,\n"
    "and encodes TEXT, or standard input when no TEXT is given. Each token: its id, the byte\n"
    "offset in the text it starts at (-1 for the BOS/EOS the post-processor adds), its piece as\n"
    "the vocabulary writes it, and its own text.\n"
    "\n"
    "options:\n"
    "  --no-special   without the post-processor's BOS/EOS\n"
    "  --ids          the ids alone, on one line\n"
    "  --decode IDS   decode ids (1,2,3) instead (with --no-special: special tokens left out)\n"
    "  -h, --help     this help\n"
    "\n"
    "example:\n"
    "  peft tokenize models/SmolLM2-135M 'Hello world'\n",
    tokenize_main};
