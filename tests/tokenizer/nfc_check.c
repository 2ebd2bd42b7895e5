/*
 * nfc_check.c: our NFC (host/tokenizer/normalize.c) against the vectors the Unicode table
 * generator wrote from the JavaScript engine's String.prototype.normalize("NFC"): every code
 * point that NFC changes, every composition, reordered marks, Hangul, blocked compositions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "hex.h"
#include "tok_internal.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        printf("cannot open %s\n", argv[1]);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lines = 0, bad = 0;
    while (getline(&line, &cap, f) > 0) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = '\0';
        char *want_hex = tab + 1;
        want_hex[strcspn(want_hex, "\r\n")] = '\0';
        char in[256], want[256];
        size_t n_in = unhex(line, strlen(line), in), n_want = unhex(want_hex, strlen(want_hex), want);
        struct ustr u = {0};
        utf8_decode(in, n_in, 0, &u);
        nfc_apply(&u);
        struct bstr got = {0};
        bstr_put(&got, "", 0);
        for (size_t i = 0; i < u.n; i++) bstr_put_cp(&got, u.cp[i]);
        lines++;
        if (got.n != n_want || memcmp(got.p, want, n_want) != 0) {
            if (bad++ < 10) printf("NFC(%s) differs: want %s\n", line, want_hex);
        }
        bstr_free(&got);
        ustr_free(&u);
    }
    free(line);
    fclose(f);
    printf("nfc: %d vectors, %d mismatches\n", lines, bad);
    return lines > 8000 && bad == 0 ? 0 : 1;
}
