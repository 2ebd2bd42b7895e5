/* labels.c: label prediction, shared by evaluation (eval_labels) and training (train_labels).
 *
 * The candidates are the distinct completions of a set of tasks (the labels seen so far), each
 * tagged with the task it first appears in. A prompt is scored against every label at once:
 * one pair (prompt, label) per row of a batch, the score of a label being the log-probability
 * of its tokens and the EOS after the prompt. A method may mask a pair in batch_begin
 * (peft_batch_info.label_masked): it then scores PEFT_LABEL_NULL_SCORE, which is how ConPET
 * rules out the labels of experts it did not select.
 *
 * The label loss of a prompt is the cross-entropy over its pairs' scores,
 *   L = -score[own] + log sum_l exp score[l],   dL/dscore[l] = softmax(score)[l] - [l = own],
 * and since score[l] is minus the sum of its tokens' cross-entropies, a token row of pair l
 * gets the loss weight -dL/dscore[l] (0 for a masked pair: its score is a constant). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stage.h"

int label_set_add(struct label_set *L, const struct dataset *d, const int32_t *tasks,
                  int32_t n_tasks, const char *section, const char *key) {
    for (size_t i = 0; i < d->n; i++) {
        int wanted = 0;
        for (int32_t k = 0; k < n_tasks; k++) wanted |= d->ex[i].task == tasks[k];
        if (!wanted) continue;
        int32_t j = 0;
        while (j < L->n && strcmp(L->text[j], d->ex[i].completion) != 0) j++;
        if (j < L->n) continue;
        if (L->n == LABELS_MAX)
            return err_set("[%s] %s: more than %d distinct completions among its tasks (label "
                           "prediction is for classification tasks)", section, key, LABELS_MAX);
        L->text[L->n] = d->ex[i].completion;
        L->task[L->n++] = d->ex[i].task;
    }
    return 0;
}

int32_t label_set_find(const struct label_set *L, const char *completion) {
    for (int32_t l = 0; l < L->n; l++)
        if (strcmp(L->text[l], completion) == 0) return l;
    return -1;
}

void label_batch_make(struct label_batch *lb, const struct dataset *d, const size_t *idx,
                      size_t n, const struct label_set *L, int32_t max_T) {
    dataset_free(&lb->pairs);
    lb->pairs = (struct dataset){.enc = d->enc};
    size_t n_pairs = n * (size_t)L->n;
    lb->pair_idx = xrealloc(lb->pair_idx, (n_pairs + 1) * sizeof *lb->pair_idx);
    lb->label_task = xrealloc(lb->label_task, (n_pairs + 1) * sizeof *lb->label_task);
    for (size_t e = 0; e < n; e++) {
        const struct example *ex = &d->ex[idx[e]];
        for (int32_t l = 0; l < L->n; l++) {
            size_t p = e * (size_t)L->n + (size_t)l;
            dataset_add(&lb->pairs, ex->task, ex->prompt, L->text[l]);
            lb->pair_idx[p] = p;
            lb->label_task[p] = L->task[l];
        }
    }
    batch_make(&lb->b, &lb->pairs, lb->pair_idx, (int32_t)n_pairs, max_T);
    lb->b.label_task = lb->label_task;
}

void label_batch_free(struct label_batch *lb) {
    dataset_free(&lb->pairs);
    lb->b.label_task = NULL;
    batch_free(&lb->b);
    free(lb->pair_idx);
    free(lb->label_task);
    memset(lb, 0, sizeof *lb);
}

void label_scores(const float *logits, const struct batch *b, int32_t V, const uint8_t *masked,
                  double *score, int64_t *n_tokens) {
    for (int32_t p = 0; p < b->B; p++) {
        const float *lp = logits + (size_t)p * b->T * V;     /* (T, V) */
        const int32_t *tp = b->targets + (size_t)p * b->T;  /* (T) */
        double s = 0;
        int64_t n = 0;
        for (int32_t t = 0; t < b->T; t++) {
            if (tp[t] < 0) continue;
            s -= eval_row_nll(lp + (size_t)t * V, V, tp[t]);
            n++;
        }
        score[p] = masked && masked[p] ? PEFT_LABEL_NULL_SCORE : s;
        n_tokens[p] = n;
    }
}

double label_loss(const double *score, int32_t n_labels, int32_t own, double *d_score) {
    double mx = score[0];
    for (int32_t l = 1; l < n_labels; l++) mx = score[l] > mx ? score[l] : mx;
    double sum = 0;
    for (int32_t l = 0; l < n_labels; l++) sum += exp(score[l] - mx);
    double lse = mx + log(sum);
    for (int32_t l = 0; d_score && l < n_labels; l++)
        d_score[l] = exp(score[l] - lse) - (l == own ? 1.0 : 0.0);
    return lse - score[own];
}

int label_train_batch(struct stage_env *env, struct method_run *mr, struct model_acts *acts,
                      struct label_batch *lb, const struct label_set *L, const size_t *idx,
                      size_t n, size_t n_total, uint64_t step, float *loss) {
    const int32_t V = env->model->cfg.vocab, nL = L->n;
    label_batch_make(lb, env->train, idx, n, L, env->model->cfg.max_seq);
    struct batch *b = &lb->b;
    const struct model_hooks *hooks = method_run_hooks(mr, 1);
    float token_loss;
    stage_set_batch(env, mr, b, 1);
    int rc = method_run_batch_begin(mr, b, 1, step) ||
             model_forward(env->model, acts, b->tokens, b->targets, b->B, b->T, hooks, &token_loss);
    if (rc) {
        stage_set_batch(env, NULL, NULL, 0);
        return -1;
    }
    const uint8_t *masked = method_run_label_masked(mr);
    double *score = xmalloc(sizeof *score * (size_t)b->B), *d_score = xmalloc(sizeof *d_score * (size_t)nL);
    int64_t *n_tok = xmalloc(sizeof *n_tok * (size_t)b->B);
    float *w = xmalloc(sizeof *w * (size_t)b->B * (size_t)b->T); /* (B*T) per token row */
    label_scores(model_logits(acts), b, V, masked, score, n_tok);
    double total = 0;
    for (size_t e = 0; e < n && rc == 0; e++) {
        int32_t own = label_set_find(L, env->train->ex[idx[e]].completion);
        if (own < 0) { /* the set is every completion of the batches' tasks: a bug if missed */
            rc = err_set("%s: train_labels: an example's completion is not among the labels",
                         env->run_path);
            break;
        }
        total += label_loss(score + e * (size_t)nL, nL, own, d_score);
        for (int32_t l = 0; l < nL; l++) {
            size_t p = e * (size_t)nL + (size_t)l;
            /* d loss / d (a token row's cross-entropy) = -d loss / d score, over n_total
             * examples (this process's n of them under mpirun) */
            float wp = masked && masked[p] ? 0.0f : (float)(-d_score[l] / (double)n_total);
            for (int32_t t = 0; t < b->T; t++) w[p * (size_t)b->T + (size_t)t] = wp;
        }
    }
    *loss = (float)(total / (double)n_total);
    if (rc == 0) {
        model_acts_set_row_weights(acts, w);
        rc = model_backward(env->model, acts, hooks);
        model_acts_set_row_weights(acts, NULL);
    }
    stage_set_batch(env, NULL, NULL, 0);
    free(score);
    free(d_score);
    free(n_tok);
    free(w);
    return rc;
}
