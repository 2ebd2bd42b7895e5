/*
 * tokenizer.h: the byte-level tokenizer. Ids 0..255 are bytes; then BOS, EOS, PAD.
 */
#ifndef PEFT_TOKENIZER_H
#define PEFT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

enum { TOK_BOS = 256, TOK_EOS = 257, TOK_PAD = 258, TOK_VOCAB = 259 };

/* Bytes of s as ids into out (cap ids at most); returns the count written. */
int32_t tok_encode(const char *s, int32_t *out, int32_t cap);
/* Ids to text (specials skipped) into out (NUL-terminated, cap bytes); returns length. */
int32_t tok_decode(const int32_t *ids, int32_t n, char *out, int32_t cap);

#endif
