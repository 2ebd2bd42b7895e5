/*
 * inspect.h: `peft inspect FILE`: what a safetensors file holds.
 *
 * Prints the file's size, its __metadata__ (JSON values such as peft.stage_config and
 * peft.method_config indented), for an adapter file the method, its version and the ABI
 * version it was written for (beside this program's), and one line per tensor: name, dtype,
 * shape, bytes. A folder stands for the one known file it holds (adapter.safetensors,
 * adapter_model.safetensors after its adapter_config.json, task_vector.safetensors,
 * model.safetensors).
 */
#ifndef PEFT_INSPECT_H
#define PEFT_INSPECT_H

#include <stdio.h>

/* -1 with one line when the file cannot be read. */
int peft_inspect(const char *path, FILE *out);
/* One line per tensor (max |a - b|, and relative to max |a|), then the largest of each over
 * all tensors. -1 with one line when a file cannot be read or their tensors' names or shapes
 * differ. (inspect_diff.c) */
int peft_inspect_diff(const char *path_a, const char *path_b, FILE *out);

#endif
