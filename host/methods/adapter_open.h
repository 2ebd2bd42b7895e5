/*
 * adapter_open.h: an adapter, as a user names it on the command line, opened as a live method
 * run on a model, unmerged: a peftkit adapter file, a stage folder (its adapter.safetensors),
 * or an HF PEFT LoRA folder (adapter_config.json, read as the `lora` method).
 *
 * The method and its keys come from the file's metadata (adapter_meta.h); the task table
 * from "peft.tasks" (the run's task names in id order, a JSON array), so that a task-routed
 * method (Poly's routing rows) finds the rows it was trained with. The instance is for
 * evaluation: created, attached and loaded, without stage_begin.
 */
#ifndef PEFT_ADAPTER_OPEN_H
#define PEFT_ADAPTER_OPEN_H

#include "method.h"

/* The adapter file a PATH names: PATH/adapter.safetensors for a stage folder, NULL (with
 * *hf = 1) for an HF PEFT folder, else PATH. Caller frees. */
char *adapter_file_of(const char *path, int *hf);

/* Open PATH on m. env supplies the services (seed, where, run_pass...); its task table is
 * replaced by the adapter's (*tasks, owned by the caller, filled here). -1 with one line that
 * names the file. */
int adapter_open(struct plugin_registry *reg, struct model *m, const char *path,
                 const struct method_env *env, struct task_table *tasks, struct method_run **out);

#endif
