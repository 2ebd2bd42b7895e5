/*
 * tokenizer.h: text to token ids and back. Two kinds behind one face:
 *
 *  - the byte tokenizer of the project's own synthetic models: ids 0..255 are bytes, then
 *    BOS, EOS, PAD (259 ids); any byte string round-trips;
 *  - a model's own tokenizer, read from an HF `tokenizer.json` (with `tokenizer_config.json`
 *    beside it): BPE with the ByteLevel pre-tokenizer and the Split regexes of GPT-2,
 *    Llama-3 and Qwen, or SentencePiece-style BPE (Prepend/Replace normalizers, byte
 *    fallback), NFC, added and special tokens, TemplateProcessing, and the decoders
 *    (ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace). Anything else is refused
 *    when the file is loaded, with one line naming the file and the component. (Digits, which
 *    SmolLM2 puts before ByteLevel, splits digits from the rest.)
 *
 * Ids and decoded text equal those of the reference implementation (@lenml/tokenizers, the
 * tokenizers of transformers.js) on the parity corpus of tests/tokenizer.
 */
#ifndef PEFT_TOKENIZER_H
#define PEFT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* The byte tokenizer's ids. */
enum { TOK_BOS = 256, TOK_EOS = 257, TOK_PAD = 258, TOK_VOCAB = 259 };

struct tokenizer;

/* The byte tokenizer (a static object: tokenizer_free does nothing to it). */
const struct tokenizer *tokenizer_bytes(void);
/* DIR/tokenizer.json and DIR/tokenizer_config.json (the latter optional). 1 and *out when
 * DIR has a tokenizer.json, 0 when it has none, -1 with "PATH: reason" when it cannot be
 * used. */
int tokenizer_load_dir(const char *dir, struct tokenizer **out);
/* One tokenizer.json (config_path may be NULL). -1 with "PATH: component: reason". */
int tokenizer_load(const char *json_path, const char *config_path, struct tokenizer **out);
void tokenizer_free(struct tokenizer *t);

/* Ids with, for each, the byte offset in the input of the first character it came from (-1
 * for a token the post-processor added). */
struct tok_encoding {
    int32_t *ids;     /* (n) */
    int64_t *offset;  /* (n) */
    size_t n, cap;
};
/* Encode text[0..len) (any bytes; invalid UTF-8 reads as U+FFFD) and append to out.
 * add_special: the post-processor's specials (the byte tokenizer's: BOS), those before the
 * text (TOK_ADD_PREFIX), after it (TOK_ADD_SUFFIX), both (TOK_ADD_SPECIAL) or none (0). */
enum { TOK_ADD_PREFIX = 1, TOK_ADD_SUFFIX = 2, TOK_ADD_SPECIAL = 3 };
void tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_special,
                      struct tok_encoding *out);
void tok_encoding_push(struct tok_encoding *e, int32_t id, int64_t offset);
void tok_encoding_free(struct tok_encoding *e);

/* Ids to text: a new NUL-terminated UTF-8 string (*len its length). skip_special leaves out
 * the special tokens. -1 with "token id N is outside the vocabulary (V ids)". */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                     char **out, size_t *len);

/* The vocabulary size (largest id + 1). */
int32_t tokenizer_vocab_size(const struct tokenizer *t);
/* The token's own string as the vocabulary writes it (NULL if the id is unused); the byte
 * tokenizer writes bytes as <0xNN> and its specials as <bos>, <eos>, <pad>. */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id);
/* The id of a token written exactly (added tokens included), -1 if none. */
int32_t tokenizer_token_id(const struct tokenizer *t, const char *token);
/* BOS, EOS (the end of an answer) and PAD ids; -1 where the tokenizer has none. */
int32_t tokenizer_bos(const struct tokenizer *t);
int32_t tokenizer_eos(const struct tokenizer *t);
int32_t tokenizer_pad(const struct tokenizer *t);
int tokenizer_is_special(const struct tokenizer *t, int32_t id);
int tokenizer_is_bytes(const struct tokenizer *t);
/* tokenizer_config.json's chat_template, NULL if none; the tokenizer.json path (NULL for the
 * byte tokenizer). */
const char *tokenizer_chat_template(const struct tokenizer *t);
const char *tokenizer_path(const struct tokenizer *t);

/* ---- chat templates ----------------------------------------------------------------------- */
/* The families' templates, recognised by their distinctive text as llama.cpp does. */
enum chat_family { CHAT_NONE, CHAT_CHATML, CHAT_CHATML_THINK, CHAT_LLAMA3, CHAT_LLAMA2 };
struct chat_message {
    char *role;    /* "system", "user", "assistant" */
    char *content;
};
/* The family of template text (NULL: none). -1 if unrecognised. */
int chat_family_of(const char *template_text, enum chat_family *out);
/* By name: chatml, chatml-think, llama3, llama2, none. -1 if unknown. */
int chat_family_by_name(const char *name, enum chat_family *out);
const char *chat_family_name(enum chat_family f);
/* Render messages as the template does, into a new string; each assistant turn's content
 * and end-of-turn token, as byte spans [span[2k], span[2k+1]) of the result, are appended
 * to *spans (n_spans pairs). -1 with a reason (roles out of order for llama2, ...). */
struct chat_spans {
    size_t *v;
    size_t n, cap; /* n counts numbers: 2 per span */
};
int chat_render(enum chat_family f, const struct tokenizer *t, const struct chat_message *m,
                int32_t n, int add_generation_prompt, char **out, size_t *len,
                struct chat_spans *spans);

#endif
