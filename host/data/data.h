/*
 * data.h: examples, tasks, JSONL files, the built-in synthetic suite, and batches.
 *
 * An example is {task, prompt, completion} (JSONL prompt/completion, Alpaca rendered as its
 * prompt, plain text as a completion with an empty prompt) or a conversation {task, messages}.
 * It is encoded into token ids when it is added: the prompt with the tokenizer's leading
 * specials (BOS), the completion, then EOS; a conversation through its chat template. The
 * loss counts the answer's ids (completion and EOS; the assistant turns and their
 * end-of-turn tokens), never the question's.
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
    char *prompt;             /* "" for plain text and conversations */
    char *completion;         /* a conversation: its last assistant turn */
    struct chat_message *messages; /* (n_messages) a conversation, else NULL */
    int32_t n_messages;
    /* the encoding */
    int32_t *ids;             /* (n_ids) the whole sequence */
    uint8_t *scored;          /* (n_ids) 1 where the id is part of the answer (a loss target) */
    int32_t n_ids;
    int32_t n_prompt;         /* ids before the first scored one */
    uint8_t answer_whole;     /* every scored id is still there (exact match may grade it) */
    /* where it came from, for messages: a JSONL file and line, or NULL */
    const char *source;
    int32_t line;
};

/* How a dataset's examples become ids: the tokenizer and the chat template. */
struct data_encoding {
    const struct tokenizer *tok;
    enum chat_family chat;
};

struct dataset {
    struct example *ex;
    size_t n, cap;
    const struct data_encoding *enc; /* NULL: the byte tokenizer */
    char **sources;                  /* (n_sources) file names the examples point at */
    int32_t n_sources;
};
void dataset_add(struct dataset *d, int32_t task, const char *prompt, const char *completion);
/* A conversation (copied). -1 with "reason" when its template cannot render it or it has no
 * assistant turn. */
int dataset_add_messages(struct dataset *d, int32_t task, const struct chat_message *m, int32_t n);
/* A copy of an example of another dataset that encodes alike (its ids are copied). */
int dataset_add_copy(struct dataset *d, const struct example *e);
/* Free what an example owns (the struct itself is the dataset's). */
void example_free(struct example *e);
/* Encode e with enc (NULL: the byte tokenizer). -1 with "SOURCE:LINE: reason". */
int example_encode(const struct data_encoding *enc, struct example *e);
/* Encode (again) every example with d->enc. -1 with "SOURCE:LINE: reason". */
int dataset_encode_all(struct dataset *d);

/* Truncation of examples longer than the context (max_T inputs, max_T + 1 ids):
 * drop them, cut from the left (keeping the leading specials), or refuse the run. */
enum truncation { TRUNC_DROP, TRUNC_LEFT, TRUNC_ERROR };
int truncation_by_name(const char *name, enum truncation *out); /* -1 if unknown */
const char *truncation_name(enum truncation t);
/* Apply it to d; prints one warning line per source file (and one for built-in tasks) with
 * the count. -1 with "SOURCE:LINE: ..." under TRUNC_ERROR. */
int dataset_fit(struct dataset *d, int32_t max_T, enum truncation policy, const char *what);
void dataset_free(struct dataset *d);
/* Keep only examples of the given task ids (n_ids of them). */
void dataset_filter(struct dataset *d, const int32_t *ids, int32_t n_ids);

/* Read JSONL, one example per line (extra fields ignored, blank lines skipped), in one of the
 * formats, chosen by `format` or, when it is DATA_AUTO, recognised from the first line:
 *   prompt_completion  {"prompt", "completion", "task"?}
 *   text               {"text", "task"?}: the loss counts every token
 *   messages           {"messages": [{"role", "content"}...], "task"?}: the assistant turns
 *   alpaca             {"instruction", "input"?, "output", "task"?}: Stanford Alpaca's prompt
 * "task" defaults to the file's base name without its extension. -1 with "PATH:LINE: reason". */
enum data_format { DATA_AUTO, DATA_PROMPT_COMPLETION, DATA_TEXT, DATA_MESSAGES, DATA_ALPACA };
int data_format_by_name(const char *name, enum data_format *out); /* -1 if unknown */
int data_load_jsonl(const char *path, struct dataset *out, struct task_table *tt);
int data_load_jsonl_as(const char *path, enum data_format format, struct dataset *out,
                       struct task_table *tt);
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
    int32_t *targets;        /* (B, T) next ids on answer positions (incl. EOS), else -1 */
    int32_t *example_task;   /* (B) */
    int32_t *prompt_len;     /* (B) ids before the first answer id */
    /* (B) in a label-scoring batch (stage/labels.c): the task of the label example b pairs
     * with its prompt; NULL otherwise. Borrowed; batch_make leaves it alone. */
    const int32_t *label_task;
    int32_t cap_B, cap_T;
};
/* Build a batch from examples idx[0..n). A sequence still longer than max_T (dataset_fit
 * has not run, e.g. label scoring) loses prompt ids after the first, then the end. */
void batch_make(struct batch *b, const struct dataset *d, const size_t *idx, int32_t n,
                int32_t max_T);
void batch_free(struct batch *b);

/* The rest of host/data's face: the replay sampler. */
#include "replay.h"

#endif
