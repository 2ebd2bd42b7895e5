/*
 * batch.c: examples to padded (B, T) token and target arrays.
 *
 * An example's encoding (data/encode.c) is a sequence of L ids, BOS + prompt + completion +
 * EOS for a pair. The inputs are its first L-1 ids and the target at position t is id t+1,
 * kept only where that id is scored (the answer, not the question); elsewhere it is -1. T is
 * the longest L-1 in the batch, capped at max_T; shorter rows are padded and get target -1.
 *
 * The run fits its datasets to the context first (dataset_fit: drop, left or error), so the
 * cut below only serves batches made on the fly (label scoring): a sequence longer than
 * max_T + 1 loses the end of its completion first; when even the prompt does not fit, prompt
 * ids are dropped from the front (after the first) so that the last input still predicts the
 * first answer id: no row is left without a target.
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

/* One row of T slots from example e: inputs ids[0..L-1), target at t = ids[t+1] where that id
 * is scored. When the prompt is longer than T, ids after the first are dropped from its
 * front so that the last input still predicts the first answer id; then the end is cut. */
static void batch_fill_row(struct batch *b, int32_t row, const struct example *e, int32_t T,
                           int32_t pad) {
    int32_t *tok = b->tokens + (size_t)row * (size_t)T;  /* (T) */
    int32_t *tgt = b->targets + (size_t)row * (size_t)T; /* (T) */
    int32_t skip = 0, P = e->n_prompt;
    if (P > T && P > 1) skip = P - T;
    /* position i of the cut sequence is id i (i == 0) or id i + skip */
#define CUT(i) ((i) == 0 ? 0 : (i) + skip)
    int32_t L = e->n_ids - skip;
    int32_t n_in = L - 1 < T ? L - 1 : T;
    for (int32_t t = 0; t < T; t++) {
        if (t < n_in) {
            tok[t] = e->ids[CUT(t)];
            tgt[t] = e->scored[CUT(t + 1)] ? e->ids[CUT(t + 1)] : -1;
        } else {
            tok[t] = pad;
            tgt[t] = -1;
        }
    }
#undef CUT
    b->prompt_len[row] = P - skip;
    b->example_task[row] = e->task;
}

void batch_make(struct batch *b, const struct dataset *d, const size_t *idx, int32_t n,
                int32_t max_T) {
    int32_t T = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t len = d->ex[idx[i]].n_ids - 1; /* the last id is only ever a target */
        if (len > T)
            T = len;
    }
    /* max_T <= 0 means no cap */
    if (max_T > 0 && T > max_T)
        T = max_T;
    if (T < 1)
        T = 1;
    int32_t pad = tokenizer_pad(d->enc && d->enc->tok ? d->enc->tok : tokenizer_bytes());
    if (pad < 0)
        pad = 0; /* never a target: any id does */
    batch_reserve(b, n, T);
    b->B = n;
    b->T = T;
    for (int32_t i = 0; i < n; i++)
        batch_fill_row(b, i, &d->ex[idx[i]], T, pad);
}

void batch_free(struct batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->example_task);
    free(b->prompt_len);
    memset(b, 0, sizeof *b);
}
