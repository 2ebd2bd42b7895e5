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
 * its tokens and the EOS after the prompt (or the null score where the method masks it,
 * labels.c), and an example is right when its own completion scores highest (ties go to the
 * label seen first). The loss stays the reference's. */
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

/* ---- label prediction (eval_labels, labels.c) ----------------------------------------- */

/* One task: examples idx[0..n) of env->eval scored against every label, as many examples per
 * batch as fit eval_batch_size rows (one row per example and label). */
static int eval_task_labels(struct stage_env *env, struct stage *s, struct method_run *mr,
                            const struct label_set *L, const size_t *idx, size_t n,
                            struct model_acts *acts, struct label_batch *lb, double *sums) {
    const int32_t V = env->model->cfg.vocab;
    const struct model_hooks *hooks = method_run_hooks(mr, 0);
    size_t per_batch = (size_t)s->eval_batch_size / (size_t)L->n;
    if (per_batch == 0) per_batch = 1;
    double *score = xmalloc(sizeof *score * per_batch * (size_t)L->n);
    int64_t *n_tok = xmalloc(sizeof *n_tok * per_batch * (size_t)L->n);
    double nll = 0;
    int64_t tokens = 0, correct = 0;
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += per_batch) {
        size_t ne = n - at < per_batch ? n - at : per_batch;
        label_batch_make(lb, env->eval, idx + at, ne, L, env->model->cfg.max_seq);
        struct batch *b = &lb->b;
        float loss;
        stage_set_batch(env, mr, b, 0);
        rc = method_run_batch_begin(mr, b, 0, 0) ||
             model_forward(env->model, acts, b->tokens, b->targets, b->B, b->T, hooks, &loss);
        stage_set_batch(env, NULL, NULL, 0);
        if (rc) break;
        label_scores(model_logits(acts), b, V, method_run_label_masked(mr), score, n_tok);
        for (size_t e = 0; e < ne; e++) {
            const double *se = score + e * (size_t)L->n;
            int32_t own = label_set_find(L, env->eval->ex[idx[at + e]].completion);
            /* the reference is among the labels: they were collected from these examples */
            nll -= se[own];
            tokens += n_tok[e * (size_t)L->n + (size_t)own];
            int32_t best = 0;
            for (int32_t l = 1; l < L->n; l++)
                if (se[l] > se[best]) best = l; /* ties go to the label seen first */
            correct += best == own;
        }
    }
    free(score);
    free(n_tok);
    sums[0] = nll;
    sums[1] = (double)tokens;
    sums[2] = (double)correct;
    sums[3] = (double)n;
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
    struct label_set L = {.n = 0};
    struct label_batch lb = {0};
    if (s->eval_labels &&
        (label_set_add(&L, env->train, s->eval_tasks, s->n_eval_tasks, s->section, "eval_labels") ||
         label_set_add(&L, env->eval, s->eval_tasks, s->n_eval_tasks, s->section, "eval_labels")))
        rc = err_prefix("%s", env->run_path);
    /* per task: the loss's sum and tokens, the right answers and the graded examples */
    double *sums = xcalloc((size_t)s->n_eval_tasks * 4 + 1, sizeof *sums);
    size_t *n_task = xcalloc((size_t)s->n_eval_tasks + 1, sizeof *n_task);
    for (int32_t k = 0; k < s->n_eval_tasks && rc == 0; k++) {
        int32_t task = s->eval_tasks[k];
        size_t n_all = 0;
        for (size_t i = 0; i < env->eval->n; i++)
            if (env->eval->ex[i].task == task) idx[n_all++] = i;
        n_task[k] = n_all;
        /* under mpirun this process's share of them; the sums are gathered below */
        size_t lo, hi;
        dp_share(n_all, &lo, &hi);
        memmove(idx, idx + lo, sizeof *idx * (hi - lo));
        size_t n = hi - lo;
        out[k].task = task;
        if (s->eval_labels) {
            rc = eval_task_labels(env, s, mr, &L, idx, n, acts, &lb, sums + 4 * k);
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
        sums[4 * k] = nll;
        sums[4 * k + 1] = (double)tokens;
        sums[4 * k + 2] = (double)correct;
        sums[4 * k + 3] = (double)graded;
    }
    if (rc == 0) rc = dist_sum_doubles(sums, (size_t)s->n_eval_tasks * 4);
    for (int32_t k = 0; k < s->n_eval_tasks && rc == 0; k++) {
        const double *t = sums + 4 * k;
        out[k].n = (int32_t)n_task[k];
        out[k].loss = t[1] > 0 ? t[0] / t[1] : 0.0;
        out[k].accuracy = t[3] > 0 ? t[2] / t[3] : 0.0;
    }
    free(sums);
    free(n_task);
    free(idx);
    batch_free(&b);
    label_batch_free(&lb);
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
