/* Fuzz target: tokenizer.json's reader (tokenizer_load); a file it accepts then encodes and
 * decodes a fixed text. */
#include <string.h>

#include "fuzz_input.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tokenizer *t = NULL;
    if (tokenizer_load(fuzz_file("tokenizer.json", data, size), NULL, &t) == 0) {
        static const char text[] = "Hello  world's <s> 12345\n\n\xC3\xA9\xE6\x97\xA5 \xF0\x9F\x99\x82 \xFF";
        struct tok_encoding e = {0};
        tokenizer_encode(t, text, sizeof text - 1, TOK_ADD_SPECIAL, &e);
        char *out = NULL;
        size_t len = 0;
        if (tokenizer_decode(t, e.ids, e.n, 0, &out, &len) == 0) free(out);
        tok_encoding_free(&e);
        tokenizer_free(t);
    }
    err_clear();
    return 0;
}
