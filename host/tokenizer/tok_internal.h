/*
 * tok_internal.h: what the files of host/tokenizer share: text as code points with their
 * source offsets, the string -> id table, the split regex, and the loaded pipeline.
 *
 * The pipeline is the one of HF `tokenizer.json` as the reference implementation runs it
 * (@lenml/tokenizers, the tokenizers of transformers.js): the input is decoded from UTF-8
 * (invalid bytes become U+FFFD, as the WHATWG decoder does); added tokens are cut out first;
 * every other section is normalized, pre-tokenized and given to the BPE model; the
 * post-processor adds BOS/EOS. Every token keeps the byte offset in the input of the first
 * character it came from, so a caller can tell which tokens came from which span (chat
 * templates use it to put the loss on the assistant's turns only).
 */
#ifndef PEFT_TOK_INTERNAL_H
#define PEFT_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- text under way: code points and where each came from ---------------------------- */
struct ustr {
    uint32_t *cp;  /* (n) code points */
    uint32_t *src; /* (n) byte offset in the encoded input of the character each came from */
    size_t n, cap;
};
void ustr_push(struct ustr *s, uint32_t cp, uint32_t src);
void ustr_append(struct ustr *s, const struct ustr *from, size_t a, size_t b); /* from[a..b) */
void ustr_free(struct ustr *s);

/* UTF-8 to code points the way the WHATWG decoder does it: each maximal invalid subpart is
 * one U+FFFD. src gets each character's byte offset plus base. */
void utf8_decode(const char *s, size_t len, uint32_t base, struct ustr *out);
/* One code point as UTF-8 into out (4 bytes at most); its length. */
size_t utf8_put(uint32_t cp, char *out);
/* Replace every invalid UTF-8 sequence in s[0..len) by U+FFFD (as utf8_decode would) into a
 * new NUL-terminated string; *out_len its length. */
char *utf8_sanitize(const char *s, size_t len, size_t *out_len);

/* ---- growing byte strings ------------------------------------------------------------ */
struct bstr {
    char *p;
    size_t n, cap;
};
void bstr_put(struct bstr *b, const char *s, size_t n);
void bstr_putc(struct bstr *b, char c);
void bstr_put_cp(struct bstr *b, uint32_t cp);
void bstr_free(struct bstr *b);

/* ---- string -> id (open addressing) ------------------------------------------------------ */
struct strmap {
    uint32_t *slot; /* (cap) index+1 into keys, 0 = empty */
    const char **key;
    uint32_t *key_len;
    int32_t *val;
    size_t n, cap_keys, cap; /* cap: power of two */
};
void strmap_put(struct strmap *m, const char *key, size_t len, int32_t val); /* key kept */
int32_t strmap_get(const struct strmap *m, const char *key, size_t len); /* -1 if absent */
void strmap_free(struct strmap *m);
uint64_t tok_hash(const void *p, size_t n);

/* ---- the split regex: the subset that tokenizer.json patterns use ----------------------- */
struct tok_regex;
/* Compile pattern (UTF-8). NULL with err_set("... what ...") naming the construct refused. */
struct tok_regex *tok_regex_compile(const char *pattern);
/* The leftmost match in text[from..n): 1 with [*start, *end), 0 if none. */
int tok_regex_find(const struct tok_regex *re, const uint32_t *text, size_t n, size_t from,
                   size_t *start, size_t *end);
void tok_regex_free(struct tok_regex *re);

/* ---- the pipeline's parts ----------------------------------------------------------------- */
enum norm_kind { NORM_NFC, NORM_PREPEND, NORM_REPLACE };
struct normalizer {
    enum norm_kind kind;
    struct ustr arg;          /* Prepend: the text; Replace: the String pattern */
    struct ustr content;      /* Replace: the replacement */
    struct tok_regex *re;     /* Replace with a Regex pattern */
};

enum pre_kind { PRE_SPLIT, PRE_BYTE_LEVEL, PRE_METASPACE };
struct pretokenizer {
    enum pre_kind kind;
    struct tok_regex *re;     /* Split (Isolated); ByteLevel with use_regex: the GPT-2 pattern */
    int add_prefix_space;     /* ByteLevel, Metaspace */
    uint32_t replacement;     /* Metaspace */
    int prepend_scheme;       /* Metaspace: 0 always, 1 first, 2 never */
};

enum dec_kind { DEC_BYTE_LEVEL, DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
struct decoder {
    enum dec_kind kind;
    char *pattern, *content;  /* Replace (String): UTF-8 */
    uint32_t strip_char;      /* Strip */
    int32_t start, stop;      /* Strip */
    int add_prefix_space;     /* Metaspace */
    uint32_t replacement;     /* Metaspace */
};

struct added_token {
    char *content;            /* UTF-8 */
    int32_t id;
    uint8_t lstrip, rstrip, special;
};

/* Merge (left id, right id) -> rank and merged id; open addressing on the pair. */
struct merge_map {
    uint64_t *pair;           /* (cap) (left+1) << 32 | (right+1); 0 = empty */
    int32_t *rank, *merged;
    size_t cap;
};

struct tokenizer {
    int bytes;                /* the byte tokenizer: nothing below is used */
    char *path;               /* tokenizer.json, for messages */

    /* model (BPE) */
    char **vocab;             /* (n_vocab) id -> token string (UTF-8); NULL for unused ids */
    int32_t n_vocab;          /* largest id + 1, added tokens included */
    int32_t cap_vocab;
    struct strmap ids;        /* token string -> id, added tokens included */
    struct merge_map merges;
    int32_t unk_id;           /* -1 if none */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_token[256];  /* byte_fallback: id of <0xXX>, -1 if absent */
    int32_t char_id[512];     /* id of the one-character token of each code point below 512
                                 (all of ByteLevel's alphabet), -1 if none: BPE's first step */
    int byte_level;           /* a ByteLevel pre-tokenizer maps bytes to characters */

    struct normalizer *norm;
    int32_t n_norm;
    struct pretokenizer *pre;
    int32_t n_pre;
    struct decoder *dec;
    int32_t n_dec;

    struct added_token *added;
    int32_t n_added;
    struct added_trie *trie;

    /* post-processor: TemplateProcessing's single template, ids before and after A */
    int32_t *post_before, *post_after;
    int32_t n_post_before, n_post_after;

    /* tokenizer_config.json */
    int clean_up_spaces;
    int32_t bos_id, eos_id, pad_id;
    char *chat_template;      /* NULL if none */
    char **retired;           /* vocabulary strings an added token took the id of: the id
                                 table still maps them, as the reference's does */
    int32_t n_retired;
};

/* GPT-2's byte <-> character map (ByteLevel). */
uint32_t byte_level_char(uint8_t byte);
int byte_level_byte(uint32_t cp); /* -1 if cp is not one of the 256 */

/* Added tokens: leftmost-longest split of text into sections. */
struct added_trie *added_trie_build(const struct added_token *t, int32_t n);
void added_trie_free(struct added_trie *trie);
/* The longest added token starting at text[i]: its index in the added list, *len its length
 * in code points; -1 if none. */
int32_t added_trie_match(const struct added_trie *trie, const uint32_t *text, size_t n, size_t i,
                         size_t *len);

/* Parts of the pipeline (normalize.c, pretokenize.c, bpe.c). */
void normalize_apply(const struct normalizer *nz, struct ustr *s);
void nfc_apply(struct ustr *s);
/* A section's pre-tokens: [start, end) ranges into s appended to *ranges (2 per piece). */
struct ranges {
    size_t *v;
    size_t n, cap;
};
void ranges_push(struct ranges *r, size_t a, size_t b);
void pretokenize_apply(const struct tokenizer *t, const struct ustr *s, int32_t section_index,
                       struct ustr *out, struct ranges *pieces);
/* BPE on one pre-token (code points s[a..b)); appends ids and offsets to out. */
void bpe_encode_piece(const struct tokenizer *t, const struct ustr *s, size_t a, size_t b,
                      struct tok_encoding *out);

#endif
