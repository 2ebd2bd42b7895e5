/*
 * bench_tokenize.c: encode throughput of our tokenizer on the parity corpus, single thread.
 * Each timed pass encodes every corpus string (with special tokens) `--passes` times; the
 * figure is MB of input text per second, one line of JSON per repeat. bench/run_tokenize.sh
 * runs it interleaved with the reference (bench_tokenize.mjs).
 *
 *   bench_tokenize TOKENIZER_DIR CORPUS.hex [--passes N] [--repeats R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "tokenizer/hex.h"
#include "tokenizer.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenize TOKENIZER_DIR CORPUS.hex [--passes N] [--repeats R]\n");
        return 2;
    }
    int passes = 20, repeats = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--passes") == 0) passes = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--repeats") == 0) repeats = atoi(argv[i + 1]);
    }
    struct tokenizer *t = NULL;
    double t0 = now_seconds();
    if (tokenizer_load_dir(argv[1], &t) <= 0) {
        fprintf(stderr, "bench_tokenize: %s\n", t ? "" : err_msg());
        return 2;
    }
    double load = now_seconds() - t0;
    FILE *f = fopen(argv[2], "r");
    if (!f) return 2;
    char **text = NULL;
    size_t *len = NULL, n = 0, bytes = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0) {
        text = xrealloc(text, (n + 1) * sizeof *text);
        len = xrealloc(len, (n + 1) * sizeof *len);
        text[n] = xmalloc((size_t)got / 2 + 1);
        len[n] = unhex(line, (size_t)got, text[n]);
        bytes += len[n++];
    }
    free(line);
    fclose(f);
    for (int r = 0; r < repeats; r++) {
        size_t ids = 0;
        struct tok_encoding e = {0};
        double s = now_seconds();
        for (int p = 0; p < passes; p++)
            for (size_t i = 0; i < n; i++) {
                e.n = 0;
                tokenizer_encode(t, text[i], len[i], TOK_ADD_SPECIAL, &e);
                ids += e.n;
            }
        double secs = now_seconds() - s;
        tok_encoding_free(&e);
        printf("{\"impl\": \"c\", \"strings\": %zu, \"bytes\": %zu, \"passes\": %d, \"ids\": %zu, "
               "\"seconds\": %.6f, \"mb_per_s\": %.3f, \"load_seconds\": %.3f}\n", n, bytes, passes,
               ids, secs, (double)bytes * passes / secs / 1e6, load);
    }
    for (size_t i = 0; i < n; i++) free(text[i]);
    free(text);
    free(len);
    tokenizer_free(t);
    return 0;
}
