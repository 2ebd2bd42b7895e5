/*
 * tokenizer.c: the byte tokenizer and the questions any tokenizer answers (sizes, pieces,
 * special ids).
 */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"

static struct tokenizer byte_tokenizer = {.bytes = 1};

const struct tokenizer *tokenizer_bytes(void) { return &byte_tokenizer; }
int tokenizer_is_bytes(const struct tokenizer *t) { return t->bytes; }

int32_t tokenizer_vocab_size(const struct tokenizer *t) { return t->bytes ? TOK_VOCAB : t->n_vocab; }

const char *tokenizer_piece(const struct tokenizer *t, int32_t id) {
    if (t->bytes) {
        static char names[256][7];
        static int ready;
        if (!ready) {
            for (int b = 0; b < 256; b++) snprintf(names[b], sizeof names[b], "<0x%02X>", b);
            ready = 1;
        }
        if (id >= 0 && id < 256) return names[id];
        return id == TOK_BOS ? "<bos>" : id == TOK_EOS ? "<eos>" : id == TOK_PAD ? "<pad>" : NULL;
    }
    return id >= 0 && id < t->n_vocab ? t->vocab[id] : NULL;
}

int32_t tokenizer_token_id(const struct tokenizer *t, const char *token) {
    if (t->bytes) {
        for (int32_t id = 0; id < TOK_VOCAB; id++)
            if (strcmp(tokenizer_piece(t, id), token) == 0) return id;
        return -1;
    }
    return strmap_get(&t->ids, token, strlen(token));
}

int32_t tokenizer_bos(const struct tokenizer *t) {
    if (t->bytes) return TOK_BOS;
    return t->n_post_before > 0 ? t->post_before[0] : t->bos_id;
}
int32_t tokenizer_eos(const struct tokenizer *t) { return t->bytes ? TOK_EOS : t->eos_id; }
int32_t tokenizer_pad(const struct tokenizer *t) {
    if (t->bytes) return TOK_PAD;
    return t->pad_id >= 0 ? t->pad_id : t->eos_id;
}

int tokenizer_is_special(const struct tokenizer *t, int32_t id) {
    if (t->bytes) return id >= 256;
    for (int32_t k = 0; k < t->n_added; k++)
        if (t->added[k].id == id && t->added[k].special) return 1;
    return 0;
}

const char *tokenizer_chat_template(const struct tokenizer *t) { return t->bytes ? NULL : t->chat_template; }
const char *tokenizer_path(const struct tokenizer *t) { return t->bytes ? NULL : t->path; }
