/*
 * generate.h: continuing a sequence with the model and, when given, an unmerged adapter (a
 * live method run): the decoder, greedy continuation, the ids that end an answer, and the
 * predictions file that `peft eval` and a stage's final evaluation write.
 *
 * The decoder keeps a key/value cache, so each new token costs one row of every product.
 * A method that looks at a batch as a whole (it has batch_begin or a hidden-state hook, as
 * ConPET's selector reading the last prompt token) sees the whole sequence again at every
 * token instead, a batch of one example whose prompt is what was fed first: what it sees is
 * then what it would see in an evaluation batch, at the cost of a full forward per token.
 */
#ifndef PEFT_GENERATE_H
#define PEFT_GENERATE_H

#include <stdint.h>

#include "data/data.h"
#include "methods/methods.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

/* The ids that end a generated answer (stop_ids.c): the tokenizer's EOS, the eos_token_id of
 * MODEL_DIR's config.json and generation_config.json (model_dir may be NULL) and, with
 * turn_ends, the chat templates' end-of-turn tokens. */
struct stop_ids {
    int32_t v[64];
    int32_t n;
};
void stop_ids_collect(const char *model_dir, const struct tokenizer *t, int turn_ends,
                      struct stop_ids *s);
int stop_ids_has(const struct stop_ids *s, int32_t id);

struct decoder;
/* A decoder of up to cap positions (at most max_seq) on m, with no adapter. */
struct decoder *decoder_new(struct model *m, int32_t cap);
void decoder_free(struct decoder *d);
/* Run mr's hooks (NULL: none) with every row routed to task (-1: none) from now on. */
void decoder_use(struct decoder *d, struct method_run *mr, int32_t task);
/* The batch mr sees (one example); stable for the decoder's life, for a run's aux passes. */
const struct batch *decoder_batch(const struct decoder *d);
/* An auxiliary forward of the batch being decoded, or of the one shown (method_env.run_pass;
 * ctx = the decoder). */
int decoder_run_pass(void *ctx, uint32_t pass, uint32_t backward);
/* Show b (NULL: none) to run_pass while the caller runs its own forward of b with mr. */
void decoder_show_batch(struct decoder *d, const struct batch *b);
/* Start a new sequence. */
void decoder_reset(struct decoder *d);
int32_t decoder_len(const struct decoder *d);
/* Append ids[0..n) and put the logits (V) after the last one into logits. The first call
 * after a reset feeds the prompt. -1 with "the context is full (cap positions)" or a hook's
 * error. */
int decoder_feed(struct decoder *d, const int32_t *ids, int32_t n, float *logits);

/* Greedy continuation of prompt[0..n_prompt) until a stop id, max_new ids, or a full
 * context, appended to out. -1 with the decoder's error. */
int decoder_greedy(struct decoder *d, const int32_t *prompt, int32_t n_prompt,
                   const struct stop_ids *stop, int32_t max_new, struct tok_encoding *out);

/* PATH (atomically): one JSON line per example idx[0..n) of d: its prompt, its expected
 * answer, the greedy continuation by dec (at most the answer's length + 8 ids, or max_new
 * when above 0) and whether the two texts are equal. With mr, every example is routed to
 * task, or to its own task when task < 0. -1 with one line. */
int predictions_write(const char *path, struct decoder *dec, struct method_run *mr, int32_t task,
                      const struct tokenizer *t, const struct stop_ids *stop,
                      const struct dataset *d, const size_t *idx, size_t n, int32_t max_new);

#endif
