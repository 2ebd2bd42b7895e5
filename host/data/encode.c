/*
 * encode.c: examples to token ids, and the truncation of those longer than the context.
 *
 * prompt/completion: the prompt with the tokenizer's leading specials, then the completion,
 * each encoded on its own (the prompt's ids are those a user's prompt gives at generation
 * time), then EOS; the completion and EOS are scored. A conversation: its template's text,
 * encoded whole without added specials (templates write BOS themselves, as HF's
 * apply_chat_template does), and scored where a token overlaps an assistant span.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

static const struct data_encoding BYTES = {NULL, CHAT_NONE};

static const struct tokenizer *enc_tok(const struct data_encoding *enc) {
    return enc && enc->tok ? enc->tok : tokenizer_bytes();
}

static void set_ids(struct example *e, const struct tok_encoding *te, const uint8_t *scored) {
    free(e->ids);
    free(e->scored);
    e->n_ids = (int32_t)te->n;
    e->ids = xmalloc((te->n + 1) * sizeof *e->ids);
    e->scored = xmalloc(te->n + 1);
    memcpy(e->ids, te->ids, te->n * sizeof *e->ids);
    memcpy(e->scored, scored, te->n);
    e->n_prompt = e->n_ids;
    for (int32_t i = 0; i < e->n_ids; i++)
        if (e->scored[i]) {
            e->n_prompt = i;
            break;
        }
    e->answer_whole = 1;
}

static int encode_pair(const struct tokenizer *t, struct example *e) {
    int32_t eos = tokenizer_eos(t);
    if (eos < 0)
        return err_set("%s: the tokenizer names no eos_token (tokenizer_config.json): an answer "
                       "could not end", tokenizer_path(t) ? tokenizer_path(t) : "tokenizer");
    struct tok_encoding te = {0};
    tokenizer_encode(t, e->prompt, strlen(e->prompt), TOK_ADD_PREFIX, &te);
    size_t n_prompt = te.n;
    tokenizer_encode(t, e->completion, strlen(e->completion), 0, &te);
    tok_encoding_push(&te, eos, -1);
    uint8_t *scored = xcalloc(te.n + 1, 1);
    for (size_t i = n_prompt; i < te.n; i++) scored[i] = 1;
    set_ids(e, &te, scored);
    free(scored);
    tok_encoding_free(&te);
    return 0;
}

static int encode_messages(const struct data_encoding *enc, struct example *e) {
    const struct tokenizer *t = enc_tok(enc);
    char *text = NULL;
    size_t len = 0;
    struct chat_spans spans = {0};
    if (chat_render(enc ? enc->chat : CHAT_NONE, t, e->messages, e->n_messages, 0, &text, &len, &spans))
        return -1;
    struct tok_encoding te = {0};
    tokenizer_encode(t, text, len, 0, &te);
    /* A token covers the text from its offset to the next token's (a character split over
     * several tokens: each covers it); it is scored when it overlaps an assistant span, so
     * that a token joining a template's space to the answer's first word ("_Hello") counts. */
    uint8_t *scored = xcalloc(te.n + 1, 1);
    size_t n_scored = 0;
    for (size_t i = 0; i < te.n; i++) {
        if (te.offset[i] < 0) continue;
        size_t a = (size_t)te.offset[i], b = len;
        for (size_t j = i + 1; j < te.n; j++)
            if (te.offset[j] > te.offset[i]) {
                b = (size_t)te.offset[j];
                break;
            }
        for (size_t k = 0; k < spans.n; k += 2)
            if (a < spans.v[k + 1] && b > spans.v[k]) {
                scored[i] = 1;
                n_scored++;
                break;
            }
    }
    int rc = 0;
    if (n_scored == 0) rc = err_set("no assistant message to learn from");
    else set_ids(e, &te, scored);
    free(scored);
    tok_encoding_free(&te);
    free(spans.v);
    free(text);
    return rc;
}

/* Encode e with enc; -1 with "SOURCE:LINE: reason" (or the bare reason). */
int example_encode(const struct data_encoding *enc, struct example *e) {
    int rc = e->messages ? encode_messages(enc, e) : encode_pair(enc_tok(enc), e);
    if (rc && e->source) err_prefix("%s:%d", e->source, (int)e->line);
    return rc;
}

int dataset_encode_all(struct dataset *d) {
    for (size_t i = 0; i < d->n; i++)
        if (example_encode(d->enc ? d->enc : &BYTES, &d->ex[i])) return -1;
    return 0;
}

int truncation_by_name(const char *name, enum truncation *out) {
    static const char *names[] = {"drop", "left", "error"};
    for (int k = 0; k < 3; k++)
        if (strcmp(name, names[k]) == 0) return *out = (enum truncation)k, 0;
    return -1;
}

const char *truncation_name(enum truncation t) {
    return t == TRUNC_DROP ? "drop" : t == TRUNC_LEFT ? "left" : "error";
}

/* Keep the first `head` ids and the last max_T + 1 - head. */
static void cut_left(struct example *e, int32_t max_T, int32_t head) {
    int32_t keep = max_T + 1, drop = e->n_ids - keep;
    int32_t scored_before = 0, scored_after = 0;
    for (int32_t i = 0; i < e->n_ids; i++) scored_before += e->scored[i];
    memmove(e->ids + head, e->ids + head + drop, (size_t)(keep - head) * sizeof *e->ids);
    memmove(e->scored + head, e->scored + head + drop, (size_t)(keep - head));
    e->n_ids = keep;
    for (int32_t i = 0; i < e->n_ids; i++) scored_after += e->scored[i];
    e->answer_whole = scored_after == scored_before;
    e->n_prompt = e->n_ids;
    for (int32_t i = 0; i < e->n_ids; i++)
        if (e->scored[i]) {
            e->n_prompt = i;
            break;
        }
}

int dataset_fit(struct dataset *d, int32_t max_T, enum truncation policy, const char *what) {
    if (max_T <= 0) return 0;
    /* counts per source: index n_sources stands for the built-in tasks */
    int32_t *over = xcalloc((size_t)d->n_sources + 1, sizeof *over);
    int32_t *total = xcalloc((size_t)d->n_sources + 1, sizeof *total);
    int32_t head = 0;
    const struct tokenizer *t = enc_tok(d->enc);
    /* the leading specials (BOS) stay when cutting from the left */
    struct tok_encoding te = {0};
    tokenizer_encode(t, "", 0, TOK_ADD_PREFIX, &te);
    head = (int32_t)te.n;
    tok_encoding_free(&te);
    size_t kept = 0;
    int rc = 0;
    for (size_t i = 0; i < d->n; i++) {
        struct example *e = &d->ex[i];
        int32_t src = d->n_sources;
        for (int32_t k = 0; k < d->n_sources && e->source; k++)
            if (d->sources[k] == e->source) src = k;
        total[src]++;
        if (e->n_ids - 1 <= max_T) {
            d->ex[kept++] = *e;
            continue;
        }
        over[src]++;
        if (policy == TRUNC_ERROR && rc == 0) {
            rc = e->source ? err_set("%s:%d: %d tokens, longer than the context (%d + 1); set [data] "
                                     "truncation = drop or left", e->source, (int)e->line, (int)e->n_ids, (int)max_T)
                           : err_set("%s: an example of %d tokens is longer than the context (%d + 1)",
                                     what, (int)e->n_ids, (int)max_T);
        }
        if (policy == TRUNC_LEFT) {
            cut_left(e, max_T, head < max_T ? head : 0);
            d->ex[kept++] = *e;
        } else {
            example_free(e); /* dropped */
        }
    }
    d->n = kept;
    for (int32_t k = 0; k <= d->n_sources && rc == 0; k++) {
        if (!over[k]) continue;
        fprintf(stderr, "peft: warning: %s: %d of %d %s examples are longer than the context (%d "
                "tokens): %s (truncation = %s)\n", k < d->n_sources ? d->sources[k] : "built-in tasks",
                (int)over[k], (int)total[k], what, (int)max_T + 1,
                policy == TRUNC_LEFT ? "cut from the left" : "dropped", truncation_name(policy));
    }
    free(over);
    free(total);
    return rc;
}
