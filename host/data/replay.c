/* replay.c: the continual-learning sampler (replay.h): per-task memories and the mix of each batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

int replay_memory_build(struct replay_memory *m, const struct dataset *train,
                        const struct task_table *tt, const int32_t *tasks, int32_t n_tasks,
                        int64_t per_label, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->task = xcalloc((size_t)n_tasks + 1, sizeof *m->task);
    m->ex = xcalloc((size_t)n_tasks + 1, sizeof *m->ex);
    m->n_ex = xcalloc((size_t)n_tasks + 1, sizeof *m->n_ex);
    size_t *same = xmalloc(sizeof *same * (train->n + 1)); /* one label's examples */
    uint8_t *done = xcalloc(train->n + 1, 1);              /* already grouped by label */
    for (int32_t k = 0; k < n_tasks; k++) {
        int32_t t = tasks[k];
        m->task[k] = t;
        m->ex[k] = xmalloc(sizeof **m->ex * (train->n + 1));
        m->n_tasks = k + 1;
        char label[256];
        snprintf(label, sizeof label, "replay-memory:%s", t >= 0 && t < tt->n ? tt->names[t] : "?");
        struct rng g;
        rng_seed_label(&g, seed, label);
        /* Labels in order of first appearance; per label a partial Fisher-Yates keeps
         * per_label of its examples. */
        for (size_t i = 0; i < train->n; i++) {
            if (train->ex[i].task != t || done[i]) continue;
            size_t n_same = 0;
            for (size_t j = i; j < train->n; j++)
                if (train->ex[j].task == t && !done[j] &&
                    strcmp(train->ex[j].completion, train->ex[i].completion) == 0) {
                    done[j] = 1;
                    same[n_same++] = j;
                }
            size_t keep = per_label > 0 && (size_t)per_label < n_same ? (size_t)per_label : n_same;
            for (size_t q = 0; q < keep; q++) {
                size_t pick = q + (size_t)rng_below(&g, n_same - q), tmp = same[q];
                same[q] = same[pick];
                same[pick] = tmp;
                m->ex[k][m->n_ex[k]++] = same[q];
            }
        }
        if (m->n_ex[k] == 0) {
            free(same);
            free(done);
            return err_set("replay task '%s' has no training example",
                           t >= 0 && t < tt->n ? tt->names[t] : "?");
        }
    }
    free(same);
    free(done);
    return 0;
}

void replay_memory_free(struct replay_memory *m) {
    for (int32_t k = 0; k < m->n_tasks; k++) free(m->ex[k]);
    free(m->ex);
    free(m->n_ex);
    free(m->task);
    memset(m, 0, sizeof *m);
}

int32_t replay_count(double replay, int32_t joint, int32_t n_replay_tasks, int32_t n_tasks,
                     int32_t B) {
    if (n_replay_tasks <= 0) return 0;
    double share = joint ? (double)n_replay_tasks / (double)(n_replay_tasks + n_tasks) : replay;
    int32_t n = (int32_t)(share * B + 0.5);
    return n < 0 ? 0 : n > B ? B : n;
}

void replay_draw(const struct replay_memory *m, const size_t *pool, size_t n_pool, int32_t B,
                 int32_t n_old, struct rng *g, size_t *idx) {
    /* The new part first, in the same draws as a stage without replay. */
    for (int32_t i = 0; i < B - n_old; i++) idx[i] = pool[rng_below(g, n_pool)];
    for (int32_t i = B - n_old; i < B; i++) {
        uint64_t k = rng_below(g, (uint64_t)m->n_tasks);
        idx[i] = m->ex[k][rng_below(g, m->n_ex[k])];
    }
}

int replay_memory_save(const struct replay_memory *m, const struct dataset *train,
                       const struct task_table *tt, const char *path) {
    struct dataset d = {.enc = train->enc};
    for (int32_t k = 0; k < m->n_tasks; k++)
        for (size_t i = 0; i < m->n_ex[k]; i++)
            if (dataset_add_copy(&d, &train->ex[m->ex[k][i]])) {
                dataset_free(&d);
                return -1;
            }
    int rc = data_save_jsonl(path, &d, tt);
    dataset_free(&d);
    return rc;
}
