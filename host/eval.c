/* eval.c: per-task evaluation: mean completion-token loss and exact-match accuracy.
 *
 * Exact match by greedy decoding is computed with one teacher-forced pass: greedy decoding
 * reproduces the reference completion (and its EOS) exactly when, at every completion
 * position, the argmax given the reference prefix is the reference token (by induction on
 * the position), so both give the same verdict for every example. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run.h"

static int32_t argmax(const float *v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static double row_nll(const float *logits, int32_t V, int32_t target) {
    float mx = logits[0];
    for (int32_t i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < V; i++) sum += exp((double)(logits[i] - mx));
    return log(sum) + mx - logits[target];
}

int run_eval(struct run *r, struct stage *s, struct method_run *mr, struct eval_result *out) {
    const int32_t V = r->model.cfg.vocab;
    struct model_acts *acts = model_acts_new();
    struct batch b = {0};
    size_t *idx = xmalloc(sizeof *idx * (r->eval.n + 1));
    const struct model_hooks *hooks = method_run_hooks(mr, 0);
    int rc = 0;
    double t0 = now_seconds();
    for (int32_t k = 0; k < s->n_eval_tasks && rc == 0; k++) {
        int32_t task = s->eval_tasks[k];
        size_t n = 0;
        for (size_t i = 0; i < r->eval.n; i++)
            if (r->eval.ex[i].task == task) idx[n++] = i;
        double nll = 0;
        int64_t tokens = 0, correct = 0;
        for (size_t at = 0; at < n && rc == 0; at += (size_t)s->eval_batch_size) {
            int32_t nb = (int32_t)((n - at) < (size_t)s->eval_batch_size ? n - at : (size_t)s->eval_batch_size);
            batch_make(&b, &r->eval, idx + at, nb, r->model.cfg.max_seq);
            float loss;
            run_set_batch(r, mr, &b, 0);
            int failed = method_run_batch_begin(mr, &b, 0, 0) ||
                         model_forward(&r->model, acts, b.tokens, b.targets, b.B, b.T, hooks, &loss);
            run_set_batch(r, NULL, NULL, 0);
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
                    nll += row_nll(logits + (size_t)row * V, V, target);
                    tokens++;
                    ok &= argmax(logits + (size_t)row * V, V) == target;
                }
                correct += ok;
            }
        }
        out[k].task = task;
        out[k].n = (int32_t)n;
        out[k].loss = tokens ? nll / (double)tokens : 0.0;
        out[k].accuracy = n ? (double)correct / (double)n : 0.0;
    }
    free(idx);
    batch_free(&b);
    model_acts_free(acts);
    s->eval_seconds += now_seconds() - t0;
    return rc;
}
