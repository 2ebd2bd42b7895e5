/*
 * peft_stage_tasks.h: host extension "peft.stage_tasks/1": the tasks the current stage trains
 * on, known from create on (serves: Poly's few-shot stages, which train only the routing rows
 * of their own tasks and must size that mask in attach, before task_begin runs; any method
 * that sizes per-task state for the stage).
 *
 * Get it with api->get_extension(h, PEFT_STAGE_TASKS_EXTENSION); NULL means the host does not
 * know the stage's tasks here (e.g. an instance made for a merge). Host-owned struct, valid for
 * the instance lifetime.
 */
#ifndef PEFT_STAGE_TASKS_H
#define PEFT_STAGE_TASKS_H

#include "peft/peft_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PEFT_STAGE_TASKS_EXTENSION "peft.stage_tasks/1"

typedef struct peft_stage_tasks_api {
    uint32_t struct_size; /* = sizeof(peft_stage_tasks_api) as the host knows it */

    /* [any call] The run-wide ids of the tasks this stage trains on, in the run file's order:
     * *ids (host-owned, valid for the instance lifetime) and their count in *n. */
    peft_status (*train_tasks)(peft_host *h, const int32_t **ids, uint32_t *n);
} peft_stage_tasks_api;

#ifdef __cplusplus
}
#endif

#endif /* PEFT_STAGE_TASKS_H */
