/*
 * replay.h: the host's continual-learning sampler (replay.c), drawn from by the training loop
 * (stage/train.c).
 *
 * A stage with replay_tasks and a replay share (struct stage) draws every batch as
 *   B - n_old examples from its own tasks' pool, uniformly with replacement (the ordinary
 *   sampler), then n_old examples of earlier tasks, each by picking a replayed task uniformly
 *   and then an example of that task's memory uniformly (ConPET's dynamic replay);
 * n_old = round(replay * B), or with replay_joint round(B * n_replay / (n_replay + n_tasks)),
 * which gives every task of the stage and of replay_tasks the same share (joint training).
 *
 * The memory of a replayed task keeps memory_per_label of its training examples per label
 * (distinct completion), or all of them with 0. Which ones is decided by a stream seeded from
 * the run's seed and the task's name alone, so every stage of a run, and a run stopped after
 * any task and continued later, keeps the same examples. train.c writes it to
 * STAGE/replay_memory.jsonl.
 */
#ifndef PEFT_REPLAY_H
#define PEFT_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "core/core.h"

struct replay_memory {
    int32_t n_tasks;
    int32_t *task;   /* (n_tasks) task ids */
    size_t **ex;     /* (n_tasks) arrays of indices into the training set */
    size_t *n_ex;    /* (n_tasks) */
};

/* The memory of `tasks` (n_tasks ids) from train. -1 (err_set) if a task has no example. */
int replay_memory_build(struct replay_memory *m, const struct dataset *train,
                        const struct task_table *tt, const int32_t *tasks, int32_t n_tasks,
                        int64_t per_label, uint64_t seed);
void replay_memory_free(struct replay_memory *m);

/* Replayed examples in a batch of B (see the top); 0 when nothing is replayed. */
int32_t replay_count(double replay, int32_t joint, int32_t n_replay_tasks, int32_t n_tasks,
                     int32_t B);

/* One batch of example indices into idx (B): B - n_old from pool (n_pool > 0), then n_old from
 * the memory (m may be NULL when n_old is 0), every draw from g. */
void replay_draw(const struct replay_memory *m, const size_t *pool, size_t n_pool, int32_t B,
                 int32_t n_old, struct rng *g, size_t *idx);

/* Write the memory's examples as JSONL (atomically). */
int replay_memory_save(const struct replay_memory *m, const struct dataset *train,
                       const struct task_table *tt, const char *path);

#endif
