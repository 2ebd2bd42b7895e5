/*
 * data.h: examples, tasks, JSONL files, the built-in synthetic suite, and batches.
 *
 * An example is {task, prompt, completion}; the loss counts completion tokens (and the EOS
 * after them) only. A sequence is BOS + prompt + completion + EOS.
 *
 * Tasks get dense ids in order of first appearance in a task_table shared by the whole run.
 */
#ifndef PEFT_DATA_H
#define PEFT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "tokenizer/tokenizer.h"

struct task_table {
    char **names;
    int32_t n;
};
int32_t task_table_id(struct task_table *tt, const char *name);   /* adds if new */
int32_t task_table_find(const struct task_table *tt, const char *name); /* -1 if absent */
void task_table_free(struct task_table *tt);

struct example {
    int32_t task;
    char *prompt;
    char *completion;
};

struct dataset {
    struct example *ex;
    size_t n, cap;
};
void dataset_add(struct dataset *d, int32_t task, const char *prompt, const char *completion);
void dataset_free(struct dataset *d);
/* Keep only examples of the given task ids (n_ids of them). */
void dataset_filter(struct dataset *d, const int32_t *ids, int32_t n_ids);

/* Read JSONL: one object per line with string fields "task", "prompt", "completion" (extra
 * fields ignored, blank lines skipped). -1 with "PATH:LINE: reason". */
int data_load_jsonl(const char *path, struct dataset *out, struct task_table *tt);
/* Write d as JSONL to path (atomically), or to standard output when path is "-". */
int data_save_jsonl(const char *path, const struct dataset *d, const struct task_table *tt);

/* ---- built-in synthetic suite ------------------------------------------------------- */
struct synth_task_info {
    const char *name;        /* "reverse", "add", ... */
    const char *kind;        /* "transform", "arithmetic", "counting", "classification" */
    const char *description; /* one line */
};
int32_t synth_count(void);
const struct synth_task_info *synth_info(int32_t i);
int32_t synth_find(const char *name); /* -1 if unknown */
/* Append n examples of task `name` to out. Deterministic in (seed, name, split): split 0 =
 * train, 1 = eval; the two splits never share a prompt. -1 if unknown (err_set). */
int synth_generate(const char *name, uint64_t seed, int32_t split, int32_t n,
                   struct dataset *out, struct task_table *tt);

/* ---- batches ------------------------------------------------------------------------ */
struct batch {
    int32_t B, T;            /* T = longest sequence in the batch (minus one), padded */
    int32_t *tokens;         /* (B, T) inputs: BOS prompt completion, PAD after */
    int32_t *targets;        /* (B, T) next ids on completion positions (incl. EOS), else -1 */
    int32_t *example_task;   /* (B) */
    int32_t *prompt_len;     /* (B) BOS + prompt tokens */
    int32_t cap_B, cap_T;
};
/* Build a batch from examples idx[0..n). Sequences longer than max_T are cut (prompt kept
 * whole where possible). */
void batch_make(struct batch *b, const struct dataset *d, const size_t *idx, int32_t n,
                int32_t max_T);
void batch_free(struct batch *b);

/* The rest of host/data's face: the replay sampler. */
#include "replay.h"

#endif
