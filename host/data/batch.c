/*
 * batch.c: examples to padded (B, T) token and target arrays.
 *
 * A sequence is BOS + prompt + completion + EOS, length L. The inputs are its first L-1 ids and
 * the target at position t is id t+1, kept only where that id is a completion byte or the EOS
 * (the loss counts the answer, not the question); elsewhere it is -1. T is the longest L-1 in
 * the batch, capped at max_T; shorter rows are padded with PAD and target -1.
 *
 * A sequence longer than max_T + 1 loses the end of its completion first. When even the
 * prompt does not fit, prompt bytes are dropped from the front (after BOS) so that the last
 * input still predicts the first completion byte: no row is left without a target.
 */
#include "data.h"

#include <stdlib.h>
#include <string.h>

/* Grow the buffers to hold (B, T) if needed; contents are rewritten by the caller. */
static void batch_reserve(struct batch *b, int32_t B, int32_t T) {
    if (B <= b->cap_B && T <= b->cap_T)
        return;
    int32_t cap_B = B > b->cap_B ? B : b->cap_B;
    int32_t cap_T = T > b->cap_T ? T : b->cap_T;
    size_t n = (size_t)cap_B * (size_t)cap_T;
    free(b->tokens);
    free(b->targets);
    free(b->example_task);
    free(b->prompt_len);
    b->tokens = xmalloc(sizeof(int32_t) * (n ? n : 1));
    b->targets = xmalloc(sizeof(int32_t) * (n ? n : 1));
    b->example_task = xmalloc(sizeof(int32_t) * (size_t)(cap_B ? cap_B : 1));
    b->prompt_len = xmalloc(sizeof(int32_t) * (size_t)(cap_B ? cap_B : 1));
    b->cap_B = cap_B;
    b->cap_T = cap_T;
}

/* Inputs of an example before any cut: BOS + prompt + completion (the EOS is never an input
 * of a whole sequence, only a target). */
static int32_t example_input_len(const struct example *e) {
    return 1 + (int32_t)strlen(e->prompt) + (int32_t)strlen(e->completion);
}

/* An example after its prompt cut: id i of BOS + prompt[skip..] + completion + EOS. */
struct cut_seq {
    const unsigned char *prompt, *completion;
    int32_t skip, P_kept, C;
};

static int32_t cut_seq_id(const struct cut_seq *s, int32_t i) {
    if (i == 0)
        return TOK_BOS;
    if (i <= s->P_kept)
        return (int32_t)s->prompt[s->skip + i - 1];
    if (i <= s->P_kept + s->C)
        return (int32_t)s->completion[i - 1 - s->P_kept];
    return TOK_EOS;
}

/* One row of T slots from example e. */
static void batch_fill_row(struct batch *b, int32_t row, const struct example *e, int32_t T) {
    int32_t *tok = b->tokens + (size_t)row * (size_t)T;  /* (T) */
    int32_t *tgt = b->targets + (size_t)row * (size_t)T; /* (T) */
    int32_t P = (int32_t)strlen(e->prompt);
    struct cut_seq s = {(const unsigned char *)e->prompt, (const unsigned char *)e->completion,
                        0, P, (int32_t)strlen(e->completion)};
    /* drop prompt bytes from the front so that BOS + the kept prompt is at most T ids */
    if (1 + P > T) {
        s.skip = 1 + P - T;
        s.P_kept = P - s.skip;
    }
    int32_t n_in = 1 + s.P_kept + s.C; /* the EOS is only ever a target */
    if (n_in > T)
        n_in = T; /* the end of the completion is cut */

    for (int32_t t = 0; t < T; t++) {
        if (t < n_in) {
            tok[t] = cut_seq_id(&s, t);
            tgt[t] = t + 1 > s.P_kept ? cut_seq_id(&s, t + 1) : -1;
        } else {
            tok[t] = TOK_PAD;
            tgt[t] = -1;
        }
    }
    b->prompt_len[row] = 1 + s.P_kept;
    b->example_task[row] = e->task;
}

void batch_make(struct batch *b, const struct dataset *d, const size_t *idx, int32_t n,
                int32_t max_T) {
    int32_t T = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t len = example_input_len(&d->ex[idx[i]]);
        if (len > T)
            T = len;
    }
    /* max_T <= 0 means no cap */
    if (max_T > 0 && T > max_T)
        T = max_T;
    batch_reserve(b, n, T);
    b->B = n;
    b->T = T;
    for (int32_t i = 0; i < n; i++)
        batch_fill_row(b, i, &d->ex[idx[i]], T);
}

void batch_free(struct batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->example_task);
    free(b->prompt_len);
    memset(b, 0, sizeof *b);
}
