/* generate.c: the decoder (a model, optionally with an unmerged adapter, continuing one
 * sequence), greedy continuation and predictions files (see generate.h). */
#include "generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "stage.h"

struct decoder {
    struct model *m;
    struct method_run *mr;        /* NULL: the bare model */
    int32_t task;                 /* every row's task for mr, or -1 */
    int whole;                    /* mr sees batches: a full forward of the sequence per call */
    int32_t cap, len, n_prompt;
    int32_t *ids;                 /* (cap) the sequence so far */
    struct model_kv_cache *kv;    /* cached mode */
    struct model_acts *acts, *aux_acts; /* whole mode: the main pass, run_pass's passes */
    struct batch b;               /* (1, T) what mr sees; arrays owned here */
    const struct batch *shown;    /* the batch run_pass runs: &b while feeding, or a caller's */
    int32_t example_task, prompt_len;
};

struct decoder *decoder_new(struct model *m, int32_t cap) {
    struct decoder *d = xcalloc(1, sizeof *d);
    if (cap > m->cfg.max_seq) cap = m->cfg.max_seq;
    d->m = m;
    d->cap = cap;
    d->task = -1;
    d->ids = xmalloc((size_t)(cap > 0 ? cap : 1) * sizeof *d->ids);
    d->b = (struct batch){.B = 1, .example_task = &d->example_task, .prompt_len = &d->prompt_len};
    return d;
}

void decoder_free(struct decoder *d) {
    if (!d) return;
    model_kv_cache_free(d->kv);
    model_acts_free(d->acts);
    model_acts_free(d->aux_acts);
    free(d->ids);
    free(d);
}

void decoder_use(struct decoder *d, struct method_run *mr, int32_t task) {
    d->mr = mr;
    d->task = task;
    d->whole = mr && method_run_sees_batches(mr);
    decoder_reset(d);
}

const struct batch *decoder_batch(const struct decoder *d) { return &d->b; }

void decoder_show_batch(struct decoder *d, const struct batch *b) { d->shown = b; }

void decoder_reset(struct decoder *d) {
    d->len = d->n_prompt = 0;
    if (d->kv) model_kv_cache_reset(d->kv);
}

int32_t decoder_len(const struct decoder *d) { return d->len; }

int decoder_run_pass(void *ctx, uint32_t pass, uint32_t backward) {
    struct decoder *d = ctx;
    (void)backward; /* decoding never trains */
    const struct batch *b = d->shown;
    if (!d->mr || !b || b->T == 0) return err_set("run_pass: no batch is being processed");
    struct model_hooks hooks = *method_run_hooks(d->mr, 0);
    hooks.pass = pass;
    if (!d->aux_acts) d->aux_acts = model_acts_new();
    float loss;
    return model_forward(d->m, d->aux_acts, b->tokens, NULL, b->B, b->T, &hooks, &loss);
}

/* Show mr the batch tokens[0..T) (one example). */
static int batch_begin(struct decoder *d, int32_t *tokens, int32_t T) {
    d->b.tokens = tokens;
    d->b.T = T;
    d->example_task = d->task;
    d->prompt_len = d->n_prompt;
    d->shown = &d->b;
    return d->mr ? method_run_batch_begin(d->mr, &d->b, 0, 0) : 0;
}

int decoder_feed(struct decoder *d, const int32_t *ids, int32_t n, float *logits) {
    if (n <= 0) return err_set("decoder: nothing to feed");
    if (d->len + n > d->cap) return err_set("the context is full (%d positions)", (int)d->cap);
    memcpy(d->ids + d->len, ids, (size_t)n * sizeof *ids);
    if (d->len == 0) d->n_prompt = n;
    const struct model_hooks *hooks = d->mr ? method_run_hooks(d->mr, 0) : NULL;
    int32_t V = d->m->cfg.vocab;
    int rc;
    if (d->whole) {
        int32_t T = d->len + n;
        if (!d->acts) d->acts = model_acts_new();
        float loss;
        rc = batch_begin(d, d->ids, T);
        if (rc == 0) rc = model_forward(d->m, d->acts, d->ids, NULL, 1, T, hooks, &loss);
        if (rc == 0) memcpy(logits, model_logits(d->acts) + (size_t)(T - 1) * V, (size_t)V * sizeof *logits);
    } else {
        if (!d->kv) d->kv = model_kv_cache_new(d->m, d->cap);
        rc = batch_begin(d, d->ids + d->len, n);
        if (rc == 0) rc = model_decode(d->m, d->kv, d->ids + d->len, n, hooks, logits);
    }
    d->b.T = 0; /* no batch between calls */
    d->shown = NULL;
    if (rc == 0) d->len += n;
    return rc;
}

int decoder_greedy(struct decoder *d, const int32_t *prompt, int32_t n_prompt,
                   const struct stop_ids *stop, int32_t max_new, struct tok_encoding *out) {
    float *logits = xmalloc((size_t)d->m->cfg.vocab * sizeof *logits);
    decoder_reset(d);
    int rc = decoder_feed(d, prompt, n_prompt, logits);
    for (int32_t k = 0; rc == 0 && k < max_new && d->len < d->cap; k++) {
        int32_t next = eval_argmax(logits, d->m->cfg.vocab);
        if (stop_ids_has(stop, next)) break;
        tok_encoding_push(out, next, -1);
        if (k + 1 < max_new && d->len < d->cap) rc = decoder_feed(d, &next, 1, logits);
    }
    free(logits);
    return rc;
}

static char *text_of(const struct tokenizer *t, const int32_t *ids, size_t n) {
    char *s = NULL;
    size_t len = 0;
    if (tokenizer_decode(t, ids, n, 1, &s, &len)) {
        err_clear();
        return xstrdup("");
    }
    return s;
}

int predictions_write(const char *path, struct decoder *dec, struct method_run *mr, int32_t task,
                      const struct tokenizer *t, const struct stop_ids *stop,
                      const struct dataset *d, const size_t *idx, size_t n, int32_t max_new) {
    struct atomic_file af;
    if (atomic_open(&af, path)) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct example *e = &d->ex[idx[i]];
        struct tok_encoding gen = {0};
        int32_t n_answer = e->n_ids - e->n_prompt;
        decoder_use(dec, mr, task >= 0 ? task : e->task);
        rc = decoder_greedy(dec, e->ids, e->n_prompt, stop, max_new > 0 ? max_new : n_answer + 8, &gen);
        if (rc) {
            err_prefix("%s: example %zu", path, i + 1);
            break;
        }
        char *prompt = text_of(t, e->ids, (size_t)e->n_prompt);
        char *expected = text_of(t, e->ids + e->n_prompt, (size_t)n_answer);
        char *generated = text_of(t, gen.ids, gen.n);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "prompt", prompt);
        cJSON_AddStringToObject(j, "expected", expected);
        cJSON_AddStringToObject(j, "generated", generated);
        cJSON_AddBoolToObject(j, "exact", strcmp(expected, generated) == 0);
        char *line = cJSON_PrintUnformatted(j);
        if (fprintf(af.f, "%s\n", line) < 0) rc = err_set("%s: write failed", path);
        cJSON_free(line);
        cJSON_Delete(j);
        free(prompt), free(expected), free(generated);
        tok_encoding_free(&gen);
    }
    if (rc == 0) return atomic_commit(&af);
    atomic_abort(&af);
    return -1;
}
