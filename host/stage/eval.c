/* eval.c: per-task evaluation: mean completion-token loss and exact-match accuracy (over the
 * examples whose whole answer fits the context; the run refuses a task with none).
 *
 * Exact match by greedy decoding is computed with one teacher-forced pass: greedy decoding
 * reproduces the reference completion (and its EOS) exactly when, at every completion
 * position, the argmax given the reference prefix is the reference token (by induction on
 * the position), so both give the same verdict for every example.
 *
 * With eval_labels (class-incremental evaluation) the accuracy is label prediction instead:
 * the candidates are every distinct completion of the stage's eval tasks (the labels seen so
 * far, from their train and eval examples), the score of a label is the log-probability of
 * its tokens and the EOS after the prompt, and an example is right when its own completion
 * scores highest (ties go to the label seen first). The loss stays the reference's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stage.h"

int32_t eval_argmax(const float *v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

double eval_row_nll(const float *logits, int32_t V, int32_t target) {
    float mx = logits[0];
    for (int32_t i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < V; i++) sum += exp((double)(logits[i] - mx));
    return log(sum) + mx - logits[target];
}

/* ---- label prediction (eval_labels) --------------------------------------------------- */

/* More candidates than this means the eval tasks are not classification tasks. */
enum { MAX_LABELS = 64 };

struct labels {
    const char *v[MAX_LABELS]; /* borrowed from the datasets */
    int32_t n;
};

static int labels_add_from(struct labels *L, const struct dataset *d, const struct stage *s) {
    for (size_t i = 0; i < d->n; i++) {
        int in_eval = 0;
        for (int32_t k = 0; k < s->n_eval_tasks; k++) in_eval |= d->ex[i].task == s->eval_tasks[k];
        if (!in_eval) continue;
        int32_t j = 0;
        while (j < L->n && strcmp(L->v[j], d->ex[i].completion) != 0) j++;
        if (j < L->n) continue;
        if (L->n == MAX_LABELS)
            return err_set("[%s] eval_labels: more than %d distinct completions among the eval "
                           "tasks (label prediction is for classification tasks)",
                           s->section, MAX_LABELS);
        L->v[L->n++] = d->ex[i].completion;
    }
    return 0;
}

/* Sum over a row block of the log-probabilities of its targets, and their count. */
static double rows_logprob(const float *logits, const int32_t *targets, int32_t T, int32_t V,
                           int64_t *n_tokens) {
    double lp = 0;
    for (int32_t t = 0; t < T; t++) {
        if (targets[t] < 0) continue;
        lp -= eval_row_nll(logits + (size_t)t * V, V, targets[t]);
        (*n_tokens)++;
    }
    return lp;
}

/* One task: examples idx[0..n) of env->eval scored against every label, as many examples per
 * batch as fit eval_batch_size rows (one row per example and label). */
static int eval_task_labels(struct stage_env *env, struct stage *s, struct method_run *mr,
                            const struct labels *L, const size_t *idx, size_t n,
                            struct model_acts *acts, struct batch *b, struct eval_result *out) {
    const int32_t V = env->model->cfg.vocab;
    const struct model_hooks *hooks = method_run_hooks(mr, 0);
    size_t per_batch = (size_t)s->eval_batch_size / (size_t)L->n;
    if (per_batch == 0) per_batch = 1;
    size_t *pair_idx = xmalloc(sizeof *pair_idx * per_batch * (size_t)L->n);
    double *score = xmalloc(sizeof *score * (size_t)L->n);
    double nll = 0;
    int64_t tokens = 0, correct = 0;
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += per_batch) {
        size_t ne = n - at < per_batch ? n - at : per_batch;
        struct dataset pairs = {.enc = env->eval->enc}; /* example e, label l at row e * L->n + l */
        for (size_t e = 0; e < ne; e++) {
            const struct example *ex = &env->eval->ex[idx[at + e]];
            for (int32_t l = 0; l < L->n; l++) dataset_add(&pairs, ex->task, ex->prompt, L->v[l]);
        }
        for (size_t i = 0; i < pairs.n; i++) pair_idx[i] = i;
        batch_make(b, &pairs, pair_idx, (int32_t)pairs.n, env->model->cfg.max_seq);
        float loss;
        stage_set_batch(env, mr, b, 0);
        rc = method_run_batch_begin(mr, b, 0, 0) ||
             model_forward(env->model, acts, b->tokens, b->targets, b->B, b->T, hooks, &loss);
        stage_set_batch(env, NULL, NULL, 0);
        const float *logits = model_logits(acts); /* (B*T, V) */
        for (size_t e = 0; e < ne && rc == 0; e++) {
            const char *ref = env->eval->ex[idx[at + e]].completion;
            int32_t best = 0, own = -1;
            for (int32_t l = 0; l < L->n; l++) {
                int32_t row = (int32_t)(e * (size_t)L->n) + l;
                int64_t n_tok = 0;
                score[l] = rows_logprob(logits + (size_t)row * b->T * V, b->targets + (size_t)row * b->T,
                                        b->T, V, &n_tok);
                if (score[l] > score[best]) best = l;
                if (own < 0 && strcmp(L->v[l], ref) == 0) {
                    own = l;
                    nll -= score[l];
                    tokens += n_tok;
                }
            }
            correct += best == own;
        }
        dataset_free(&pairs);
    }
    free(pair_idx);
    free(score);
    out->n = (int32_t)n;
    out->loss = tokens ? nll / (double)tokens : 0.0;
    out->accuracy = n ? (double)correct / (double)n : 0.0;
    return rc ? -1 : 0;
}

int stage_eval(struct stage_env *env, struct stage *s, struct method_run *mr, struct eval_result *out) {
    const int32_t V = env->model->cfg.vocab;
    struct model_acts *acts = model_acts_new();
    struct batch b = {0};
    size_t *idx = xmalloc(sizeof *idx * (env->eval->n + 1));
    const struct model_hooks *hooks = method_run_hooks(mr, 0);
    int rc = 0;
    double t0 = now_seconds();
    struct labels L = {.n = 0};
    if (s->eval_labels && (labels_add_from(&L, env->train, s) || labels_add_from(&L, env->eval, s)))
        rc = err_prefix("%s", env->run_path);
    for (int32_t k = 0; k < s->n_eval_tasks && rc == 0; k++) {
        int32_t task = s->eval_tasks[k];
        size_t n = 0;
        for (size_t i = 0; i < env->eval->n; i++)
            if (env->eval->ex[i].task == task) idx[n++] = i;
        out[k].task = task;
        if (s->eval_labels) {
            rc = eval_task_labels(env, s, mr, &L, idx, n, acts, &b, &out[k]);
            continue;
        }
        double nll = 0;
        int64_t tokens = 0, correct = 0, graded = 0;
        for (size_t at = 0; at < n && rc == 0; at += (size_t)s->eval_batch_size) {
            int32_t nb = (int32_t)((n - at) < (size_t)s->eval_batch_size ? n - at : (size_t)s->eval_batch_size);
            batch_make(&b, env->eval, idx + at, nb, env->model->cfg.max_seq);
            float loss;
            stage_set_batch(env, mr, &b, 0);
            int failed = method_run_batch_begin(mr, &b, 0, 0) ||
                         model_forward(env->model, acts, b.tokens, b.targets, b.B, b.T, hooks, &loss);
            stage_set_batch(env, NULL, NULL, 0);
            if (failed) {
                rc = -1;
                break;
            }
            const float *logits = model_logits(acts); /* (B*T, V) */
            for (int32_t e = 0; e < b.B; e++) {
                int ok = 1;
                for (int32_t t = 0; t < b.T; t++) {
                    int32_t row = e * b.T + t, target = b.targets[row];
                    if (target < 0) continue;
                    nll += eval_row_nll(logits + (size_t)row * V, V, target);
                    tokens++;
                    ok &= eval_argmax(logits + (size_t)row * V, V) == target;
                }
                /* exact match grades only an example whose whole answer is in the row */
                if (env->eval->ex[idx[at + (size_t)e]].answer_whole) {
                    correct += ok;
                    graded++;
                }
            }
        }
        out[k].task = task;
        out[k].n = (int32_t)n;
        out[k].loss = tokens ? nll / (double)tokens : 0.0;
        out[k].accuracy = graded ? (double)correct / (double)graded : 0.0;
    }
    free(idx);
    batch_free(&b);
    model_acts_free(acts);
    s->eval_seconds += now_seconds() - t0;
    return rc;
}

int stage_write_predictions(struct stage_env *env, struct stage *s, struct method_run *mr) {
    if (!s->predictions) return 0;
    const struct tokenizer *t = env->tok ? env->tok : tokenizer_bytes();
    struct stop_ids stop;
    stop_ids_collect(env->model_dir, t, 1, &stop);
    struct decoder *dec = decoder_new(env->model, env->model->cfg.max_seq);
    stage_set_batch(env, mr, decoder_batch(dec), 0); /* what an auxiliary pass runs */
    size_t *idx = xmalloc(sizeof *idx * (env->eval->n + 1));
    int rc = 0;
    double t0 = now_seconds();
    for (int32_t k = 0; k < s->n_eval_tasks && rc == 0; k++) {
        size_t n = 0;
        for (size_t i = 0; i < env->eval->n; i++)
            if (env->eval->ex[i].task == s->eval_tasks[k]) idx[n++] = i;
        char *path = xasprintf("%s/predictions-%s.jsonl", s->dir, env->tasks->names[s->eval_tasks[k]]);
        rc = predictions_write(path, dec, mr, -1, t, &stop, env->eval, idx, n, 0);
        free(path);
    }
    stage_set_batch(env, NULL, NULL, 0);
    s->eval_seconds += now_seconds() - t0;
    free(idx);
    decoder_free(dec);
    return rc;
}
