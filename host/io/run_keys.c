/* run_keys.c: every key of a run file that belongs to the host ([run], [model], [data] and
 * [stage.NAME]), with its type, default and help. The run file's reader takes its ranges and
 * defaults from here and refuses any other key, `peft keys` prints it, and the plugin loader
 * refuses a method that declares a stage key of the host: one table for all three. */
#include <string.h>

#include "config.h"

#define INF 1e300
#define TRAIN HOST_KEY_TRAIN
#define MERGE HOST_KEY_MERGE

static const struct host_key keys[] = {
    /* [run] */
    {"run", "out", "path", "runs/<run file name>", 0, 0, NULL, 0,
     "folder of the run's outputs (relative to the working directory)"},
    {"run", "seed", "int", "1", 0, 9.2e18, NULL, 0,
     "seed of everything random: model init, data, adapter init, sampling"},
    {"run", "threads", "int", "0", 0, 256, NULL, 0, "worker threads for the products and the loops between them (0: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, else every core, shared out among the processes an mpirun job has on the machine)"},
    {"run", "allreduce_overlap", "bool", "false", 0, 0, NULL, 0,
     "under mpirun: start summing a layer's gradients over the processes while the layers "
     "below run their backward, instead of all after it (slower on one machine: "
     "bench/README.md)"},
    {"run", "precision", "choice", "auto", 0, 0, "auto|fp32|bf16", 0,
     "the products through the model's weights: fp32, or bf16 (every matrix kept in "
     "bfloat16, each product's operands rounded to bfloat16 with fp32 sums; norms, attention, "
     "the loss, gradients, plugins and the optimizer stay fp32); auto is fp32 in this build; "
     "unset, the environment's PEFT_PRECISION decides"},
    {"run", "plugin_path", "dirs", "", 0, 0, NULL, 0,
     "folders searched for method plugins first, separated by ':' or ','; spaces around a "
     "folder are dropped, so a folder name may not start or end with one"},
    /* [model] */
    {"model", "path", "path", "", 0, 0, NULL, 0,
     "an HF checkpoint folder (config.json + model.safetensors); then only max_seq may be set"},
    {"model", "vocab", "int", "259", 259, 1 << 24, NULL, 0,
     "vocabulary size (at least the byte tokenizer's 259 ids)"},
    {"model", "d_model", "int", "128", 2, 1 << 16, NULL, 0, "hidden width"},
    {"model", "n_layers", "int", "4", 1, 1024, NULL, 0, "decoder layers"},
    {"model", "n_heads", "int", "4", 1, 1024, NULL, 0, "attention heads"},
    {"model", "n_kv_heads", "int", "n_heads", 1, 1024, NULL, 0,
     "key/value heads (grouped-query attention when fewer than n_heads)"},
    {"model", "head_dim", "int", "d_model / n_heads", 2, 1 << 12, NULL, 0, "width of one head"},
    {"model", "d_ff", "int", "8/3 d_model, rounded up to 8", 1, 1 << 20, NULL, 0,
     "SwiGLU inner width"},
    {"model", "max_seq", "int", "64 (with path: the checkpoint's)", 2, 1 << 16, NULL, 0,
     "longest sequence (prompt + completion) in tokens; longer examples follow [data] "
     "truncation (with path: 0 to 1048576, 0 = the checkpoint's)"},
    {"model", "rope_theta", "float", "10000", 1, 1e12, NULL, 0, "RoPE base"},
    {"model", "rms_eps", "float", "1e-5", 0, 1, NULL, 0, "RMSNorm epsilon"},
    {"model", "tied", "bool", "true", 0, 0, NULL, 0, "output head shares the embedding"},
    {"model", "init_std", "float", "0.02", 0, 10, NULL, 0,
     "standard deviation of the random initialisation"},
    /* [data] */
    {"data", "n_train", "int", "2000", 1, 1e8, NULL, 0,
     "training examples generated per built-in task"},
    {"data", "n_eval", "int", "100", 1, 1e8, NULL, 0,
     "held-out examples generated per built-in task"},
    {"data", "seed", "int", "[run] seed", 0, 9.2e18, NULL, 0, "seed of the built-in tasks' examples"},
    {"data", "files", "files", "", 0, 0, NULL, 0,
     "JSONL files of examples (see format); without eval_files every tenth example of each "
     "task is held out for evaluation"},
    {"data", "eval_files", "files", "", 0, 0, NULL, 0, "JSONL files of held-out examples"},
    {"data", "format", "choice", "auto", 0, 0, "auto|prompt_completion|text|messages|alpaca", 0,
     "the files' format; auto recognises it from each file's first line (prompt/completion, "
     "text, messages, instruction/output)"},
    {"data", "chat_template", "choice", "auto", 0, 0, "auto|chatml|chatml-think|llama3|llama2|none", 0,
     "how messages become text; auto recognises the model's tokenizer_config.json template"},
    {"data", "truncation", "choice", "drop", 0, 0, "drop|left|error", 0,
     "an example longer than the context (max_seq): dropped, cut from the left (keeping BOS), "
     "or an error; one warning line per file with the count"},
    /* [stage.NAME]: trained stages (method = ID) and merge stages (merge = OP) */
    {"stage", "method", "string", "", 0, 0, NULL, TRAIN,
     "the method plugin's id (peft plugins lists them); its keys go in the same section"},
    {"stage", "merge", "choice", "", 0, 0,
     "add|task_arithmetic|additive|negate|magnitude_prune|ties|dare_linear|dare_ties", MERGE,
     "a merge stage: the operator applied to inputs"},
    {"stage", "space", "choice", "delta", 0, 0, "delta|factor", MERGE,
     "merge dense changes (delta) or the adapters' factors (factor)"},
    {"stage", "inputs", "words", "", 0, 0, NULL, MERGE,
     "stages, adapter files, task vectors or HF PEFT folders to merge"},
    {"stage", "weights", "floats", "1 each", 0, 0, NULL, MERGE, "one weight per input"},
    {"stage", "output", "choice", "delta (factor space: adapter)", 0, 0,
     "delta|lora|model|adapter", MERGE,
     "what the merge writes: a task vector, a LoRA by SVD, a model, or an adapter"},
    {"stage", "rank", "int", "", 1, 65536, NULL, MERGE, "rank of output = lora"},
    {"stage", "density", "float", "", 0, 1, NULL, MERGE,
     "kept share of each delta (magnitude_prune, ties, dare_*)"},
    {"stage", "sign", "choice", "total", 0, 0, "total|frequency", MERGE, "TIES sign election"},
    {"stage", "lambda", "float", "1", -1e6, 1e6, NULL, MERGE, "scale of the merged delta"},
    {"stage", "from", "stage", "the previous stage", 0, 0, NULL, TRAIN | MERGE,
     "the stage whose result this one starts from; empty = [model]"},
    {"stage", "tasks", "words", "", 0, 0, NULL, TRAIN,
     "tasks to train on: built-in tasks (peft data --list) or tasks of [data] files"},
    {"stage", "eval_tasks", "words", "every task trained in the chain so far", 0, 0, NULL,
     TRAIN | MERGE, "tasks evaluated before and after the stage"},
    {"stage", "steps", "int", "100", 0, 1e8, NULL, TRAIN, "optimizer steps"},
    {"stage", "batch_size", "int", "16", 1, 1 << 20, NULL, TRAIN,
     "examples per forward pass (a step is grad_accum of them)"},
    {"stage", "grad_accum", "int", "1", 1, 1 << 16, NULL, TRAIN,
     "micro-batches of batch_size summed into one optimizer step; the step equals one batch "
     "of grad_accum * batch_size examples up to summation order"},
    {"stage", "eval_batch_size", "int", "64", 1, 1 << 20, NULL, TRAIN | MERGE,
     "examples per evaluation batch"},
    {"stage", "eval_every", "int", "0", 0, 1e8, NULL, TRAIN,
     "evaluate every this many steps (0 = before and after only)"},
    {"stage", "early_stopping", "int", "0", 0, 1e6, NULL, TRAIN,
     "stop when the evaluation metric has not improved for this many evaluations (eval_every); "
     "the best evaluation's adapter is the stage's result (0 = off)"},
    {"stage", "early_stopping_metric", "choice", "loss", 0, 0, "loss|accuracy", TRAIN,
     "the mean over the eval tasks early_stopping watches: loss (lower is better) or accuracy"},
    {"stage", "save_every", "int", "100", 0, 1e8, NULL, TRAIN,
     "checkpoint every this many steps (0 = never), for --resume"},
    {"stage", "keep_checkpoints", "int", "0", 0, 1e6, NULL, TRAIN,
     "keep the N most recent checkpoints, also after the stage completes (0 = only the latest, "
     "removed when the stage completes)"},
    {"stage", "log_every", "int", "10", 1, 1e8, NULL, TRAIN,
     "a metrics.jsonl train line every this many steps"},
    {"stage", "n_train", "int", "0", 0, 1e8, NULL, TRAIN,
     "train on the first n_train examples of each task only (0 = all)"},
    {"stage", "optimizer", "choice", "adamw", 0, 0, "adamw|rmsprop|sgd", TRAIN,
     "adamw (decoupled decay), or rmsprop / sgd as torch.optim's (decay added to the gradient)"},
    {"stage", "lr", "float", "1e-3", 0, 100, NULL, TRAIN, "peak learning rate"},
    {"stage", "weight_decay", "float", "0", 0, 100, NULL, TRAIN,
     "weight decay: decoupled for adamw, added to the gradient for rmsprop and sgd"},
    {"stage", "rmsprop_alpha", "float", "0.99", 0, 0.999999, NULL, TRAIN,
     "RMSprop's smoothing of the squared gradient (torch's alpha)"},
    {"stage", "momentum", "float", "0", 0, 0.999999, NULL, TRAIN, "RMSprop and SGD momentum"},
    {"stage", "clip_scope", "choice", "global", 0, 0, "global|tensor", TRAIN,
     "grad_clip bounds the norm of all gradients together, or of each tensor's own"},
    {"stage", "beta1", "float", "0.9", 0, 0.999999, NULL, TRAIN, "AdamW beta1"},
    {"stage", "beta2", "float", "0.999", 0, 0.99999999, NULL, TRAIN, "AdamW beta2"},
    {"stage", "eps", "float", "1e-8", 0, 1, NULL, TRAIN, "AdamW and RMSprop epsilon"},
    {"stage", "grad_clip", "float", "1", 0, 1e9, NULL, TRAIN,
     "clip the global gradient norm to this (0 = off)"},
    {"stage", "min_lr_ratio", "float", "0.1", 0, 1, NULL, TRAIN,
     "learning rate at the end of the decay, as a share of lr"},
    {"stage", "warmup_steps", "int", "0", 0, 1e8, NULL, TRAIN, "linear warmup steps"},
    {"stage", "schedule", "choice", "cosine", 0, 0, "cosine|linear|constant", TRAIN,
     "learning-rate decay after warmup"},
    {"stage", "seed", "int", "[run] seed + the stage's index", 0, 9.2e18, NULL, TRAIN | MERGE,
     "seed of the stage's data order, dropout and the method's own draws"},
    {"stage", "init_seed", "int", "[run] seed", 0, 9.2e18, NULL, TRAIN,
     "seed of the adapter's random initialisation, drawn per method: stages of one method "
     "with one init_seed start from the same tensors (PEM's shared initialisation, which "
     "factor-space merges need)"},
    {"stage", "save_model", "bool", "on for methods that write the base weights", 0, 0, NULL,
     TRAIN | MERGE, "also write the merged model as an HF checkpoint (STAGE/model)"},
    {"stage", "predictions", "bool", "true", 0, 0, NULL, TRAIN | MERGE,
     "after the final evaluation, write STAGE/predictions-TASK.jsonl: each held-out example's "
     "prompt, expected answer and greedy continuation"},
    {"stage", "replay_tasks", "words", "", 0, 0, NULL, TRAIN,
     "earlier tasks mixed into every batch (continual learning)"},
    {"stage", "replay", "float|joint", "0.5", 0, 1, NULL, TRAIN,
     "share of each batch from replay_tasks in [0, 1), or joint: every task an equal share"},
    {"stage", "memory_per_label", "int", "20", 0, 1e8, NULL, TRAIN,
     "examples kept per label of a replayed task (0 = all)"},
    {"stage", "eval_labels", "bool", "false", 0, 0, NULL, TRAIN,
     "accuracy = the best-scored label among all labels evaluated (class-incremental)"},
    {"stage", "train_labels", "bool", "false", 0, 0, NULL, TRAIN,
     "training loss = cross-entropy over the labels of tasks and replay_tasks, each scored by "
     "its log-probability (label prediction), instead of the answer tokens' cross-entropy"},
};

int32_t host_key_count(void) { return (int32_t)(sizeof keys / sizeof keys[0]); }

const struct host_key *host_key_at(int32_t i) {
    return i >= 0 && i < host_key_count() ? &keys[i] : NULL;
}

const char *host_key_kind(const char *section) {
    if (strncmp(section, "stage.", 6) == 0) return "stage";
    for (int32_t i = 0; i < host_key_count(); i++)
        if (strcmp(keys[i].section, section) == 0) return keys[i].section;
    return NULL;
}

const struct host_key *host_key_find(const char *section, const char *key) {
    const char *kind = host_key_kind(section);
    if (!kind) return NULL;
    for (int32_t i = 0; i < host_key_count(); i++)
        if (strcmp(keys[i].section, kind) == 0 && strcmp(keys[i].key, key) == 0) return &keys[i];
    return NULL;
}

int host_stage_key(const char *key) {
    const struct host_key *k = host_key_find("stage.", key);
    return k && (k->flags & HOST_KEY_TRAIN);
}

void host_keys_text(const char *section, uint32_t flags, struct strbuf *out) {
    const char *kind = host_key_kind(section);
    for (int32_t i = 0; kind && i < host_key_count(); i++)
        if (strcmp(keys[i].section, kind) == 0 && (!flags || (keys[i].flags & flags)))
            sb_printf(out, "%s%s", out->len ? ", " : "", keys[i].key);
}
