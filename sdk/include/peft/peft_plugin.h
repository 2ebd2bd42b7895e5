/*
 * peft_plugin.h: the peftkit plugin ABI, version 1.2.
 *
 * This is the only header a method plugin needs. A plugin is a shared object that exports one
 * const data symbol, `peft_plugin_entry` (see PEFT_PLUGIN_DEFINE), and links nothing of the
 * host: every host service reaches it through the `peft_host_api` table, which the host hands
 * to `init` and to each instance's `create` (keep the pointer; it stays valid until `deinit`).
 *
 * The contract in short
 *   - The host reads `abi_version` and `struct_size` of the entry before it runs any plugin
 *     code. It runs a plugin of its own major version built for its minor version or an
 *     older one; a plugin of another major, or of a newer minor, is refused with one line.
 *     Within a major version the ABI only grows at the end: fields appended to structs that
 *     carry struct_size (test them with PEFT_HAS_FIELD), functions appended to
 *     peft_host_api, new feature tags and extensions. What came with 1.1 and 1.2 is marked
 *     so.
 *   - One plugin object (`peft_instance`) is created per method per stage. It sees the whole
 *     model: it is told about every site (adaptable linear projection) it is attached to, and
 *     per-site hooks carry the site index.
 *   - Trainable state is *registered with the host* (name, shape, init, learning rate, weight
 *     decay, mask). The host allocates parameters, gradients and optimizer state, runs the
 *     optimizer, clips, schedules, checkpoints and saves. Plugins never implement optimizers.
 *   - Backward hooks accumulate (`+=`) into gradients and into dx; the host zeroes gradients.
 *   - Every fallible call returns a peft_status. Reasons go through host->log before the
 *     return. Plugins never print, exit or abort, and never free memory the host allocated
 *     (nor the other way round).
 *   - Threading: the host calls every entry of one instance from one thread, serially
 *     ([serial]). Host API functions may be called only from inside a call the host made into
 *     the plugin, on that thread. Plugins start no threads; parallelism comes from host->sgemm.
 *   - Strings and pointers handed to a call are borrowed for that call unless the comment
 *     beside them says otherwise; copy what you keep.
 *
 * Which need of the methods each part serves is written beside it as "serves: ...".
 *
 * Dimension letters used in comments: n_rows = B*T token rows of a batch, d_in / d_out of a
 * site's linear projection, C = d_model, r = adapter rank.
 */
#ifndef PEFT_PLUGIN_H
#define PEFT_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI's version, MAJOR.MINOR, as abi_version fields carry it: (MAJOR << 16) | MINOR. A
 * value below 0x10000 is a major version alone, minor 0: the first releases wrote 1 (= 1.0). */
#define PEFT_ABI_MAJOR 1u
#define PEFT_ABI_MINOR 2u
#define PEFT_ABI_VERSION ((PEFT_ABI_MAJOR << 16) | PEFT_ABI_MINOR)
#define PEFT_ABI_VERSION_MAJOR(v) ((uint32_t)(v) < 0x10000u ? (uint32_t)(v) : (uint32_t)(v) >> 16)
#define PEFT_ABI_VERSION_MINOR(v) ((uint32_t)(v) < 0x10000u ? 0u : (uint32_t)(v) & 0xffffu)
/* The oldest version this header's host runs: 1.0, written as the first releases wrote it. */
#define PEFT_ABI_MIN_VERSION 1u

#if defined(_WIN32)
#define PEFT_EXPORT __declspec(dllexport)
#else
#define PEFT_EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------------------------
 * Status codes: every fallible call returns one.
 */
typedef int32_t peft_status;
enum {
    PEFT_OK = 0,
    PEFT_E_INVALID_ARG = -1, /* a bad argument from the caller */
    PEFT_E_NOMEM = -2,       /* allocation failed */
    PEFT_E_CONFIG = -3,      /* a key's value is unusable (the log line says which) */
    PEFT_E_SHAPE = -4,       /* shapes disagree */
    PEFT_E_UNSUPPORTED = -5, /* the operation is not offered (e.g. a merge of a gated adapter) */
    PEFT_E_ABI = -6,         /* a contract violation across the boundary */
    PEFT_E_IO = -7,          /* reading or writing state failed */
    PEFT_E_STATE = -8,       /* called at the wrong point of the lifecycle */
    PEFT_E_INTERNAL = -9,    /* a bug */
};

/* Log levels for peft_host_api.log. */
enum {
    PEFT_LOG_DEBUG = 0,
    PEFT_LOG_INFO = 1,
    PEFT_LOG_WARN = 2,
    PEFT_LOG_ERROR = 3,
    PEFT_LOG_PLUGIN_MISBEHAVING = 4, /* used by the host about a plugin */
};

/* Opaque handles. `peft_host` is the host's context of one plugin instance (or NULL in entry
 * init/deinit); `peft_instance` is the plugin's own object. */
typedef struct peft_host peft_host;
typedef struct peft_instance peft_instance;

/* ------------------------------------------------------------------------------------------
 * Key schema. serves: every method (the host validates the INI section, rejects unknown keys,
 * fills defaults and prints `peft plugins ID`).
 */
enum {
    PEFT_PARAM_INT = 1,    /* decimal integer (int64 range) */
    PEFT_PARAM_FLOAT = 2,  /* finite decimal number */
    PEFT_PARAM_BOOL = 3,   /* true/false, yes/no, 1/0, on/off */
    PEFT_PARAM_STRING = 4, /* any text */
    PEFT_PARAM_LIST = 5,   /* words separated by commas and/or spaces */
    PEFT_PARAM_CHOICE = 6, /* one of `choices`, given as "a|b|c" */
    PEFT_PARAM_STAGE = 7,  /* the name of an earlier stage of the same run (or empty) */
    PEFT_PARAM_FILES = 8,  /* paths separated by commas and/or spaces; each must exist */
};

/* A key of the method's INI section. Static data owned by the plugin, valid until deinit. */
typedef struct peft_param_spec {
    const char *name;          /* ecosystem names where they exist (r, lora_alpha, ...) */
    int32_t type;              /* PEFT_PARAM_* */
    const char *default_value; /* text form; NULL = the key is required */
    const char *choices;       /* PEFT_PARAM_CHOICE only: "a|b|c"; else NULL */
    const char *help;          /* one line */
} peft_param_spec;

/* A key/value pair given to create(): every key of the schema, defaults filled in, already
 * checked against its type. Borrowed for the create() call only. */
typedef struct peft_kv {
    const char *key;
    const char *value;
} peft_kv;

/* Special key the host always passes to create() besides the schema keys:
 * "stage" (the stage's name). */

/* ------------------------------------------------------------------------------------------
 * The model as a plugin sees it.
 */
typedef struct peft_model_info {
    uint32_t struct_size; /* = sizeof(peft_model_info) as the host knows it */
    uint32_t n_layers;
    uint32_t d_model;    /* C */
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t d_ff;
    uint32_t vocab;
    uint32_t n_sites;    /* sites in the model (all of them, attached or not) */
} peft_model_info;

/* A site: one adaptable linear projection y = x W^T, named as in HF llama checkpoints. */
typedef struct peft_site_info {
    uint32_t struct_size;
    uint32_t index;   /* 0 .. n_sites-1 */
    uint32_t layer;   /* decoder layer */
    uint32_t d_in;
    uint32_t d_out;
    const char *name; /* "model.layers.3.self_attn.q_proj"; valid for the instance lifetime */
    const char *kind; /* "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj"; valid for the instance lifetime */
    /* serves: base-weight access (LoTA, full). The live weight (d_out, d_in), row-major.
     * Read-only for the plugin; valid for the instance lifetime. It changes only through a
     * tensor registered with PEFT_TENSOR_ALIAS_BASE. Memory: when the host keeps the weight
     * in 16 bits, this is an fp32 copy made for the asking plugin (4 bytes per weight); a
     * method with the feature "weight-on-request" gets NULL then and reads the values through
     * peft_site_weight.h instead. Which weight: in a training stage and a run's evaluation,
     * that of the model the stage starts from. In an instance opened on a saved adapter (a
     * merge input, peft eval, generate, export) that of the model the adapter is applied to:
     * the merge's start weights for a file input, the weights its stage started from for a
     * stage input; never with this adapter's own change folded in. */
    const float *weight;
} peft_site_info;

/* ------------------------------------------------------------------------------------------
 * Host-registered tensors. serves: every method (trainable state lives in the host),
 * Poly (own learning rate for routing logits), LoTA (masks, base-weight writes).
 */
enum {
    PEFT_INIT_ZERO = 0,
    PEFT_INIT_UNIFORM = 1, /* U(init_a, init_b) from the host's seeded stream */
    PEFT_INIT_NORMAL = 2,  /* N(mean = init_a, std = init_b) */
    PEFT_INIT_CONST = 3,   /* every entry = init_a */
    PEFT_INIT_NONE = 4,    /* left as is; the plugin fills it in stage_begin (it is zeroed) */
};

enum {
    PEFT_TENSOR_TRAINABLE = 1u << 0,  /* the host optimizes it (else it is frozen state) */
    PEFT_TENSOR_NO_DECAY = 1u << 1,   /* exempt from weight decay */
    PEFT_TENSOR_NEGATE = 1u << 2,     /* negation of the adapter flips this tensor's sign
                                         (serves: PEM arithmetic; LoRA flags B) */
    PEFT_TENSOR_NO_SAVE = 1u << 3,    /* not written to the adapter file (scratch state) */
    /* serves: write access to base weights (full, LoTA). The tensor's storage *is* the
     * weight of `site` (shape (d_out, d_in)) or, with site = -1, the model tensor called
     * `name` (e.g. "model.norm.weight"). The host computes its gradient in the model's
     * backward; the plugin needs no hook for it. The host keeps the stage's starting value,
     * so the stage's task vector (live - start) is known. */
    PEFT_TENSOR_ALIAS_BASE = 1u << 4,
    PEFT_TENSOR_AVERAGE = 1u << 5,    /* factor-space addition averages this tensor
                                         (serves: PEM add; Poly-mu style collapses) */
};

typedef struct peft_tensor_desc {
    uint32_t struct_size; /* = sizeof(peft_tensor_desc) */
    /* Key in saved files, e.g. "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".
     * Unique within the instance. Copied by the host. */
    const char *name;
    int32_t site;       /* the site it belongs to, or -1 for model-level state */
    uint32_t ndim;      /* 1..4 */
    uint64_t shape[4];  /* row-major, outermost first */
    int32_t init;       /* PEFT_INIT_*; ignored with PEFT_TENSOR_ALIAS_BASE */
    float init_a, init_b;
    uint32_t flags;     /* PEFT_TENSOR_* */
    float lr;           /* > 0: this tensor's own learning rate; 0: the stage's lr */
    const char *lr_group; /* name shown in logs/metrics for tensors sharing `lr`; NULL = "" */
} peft_tensor_desc;

/* What a registered tensor looks like once allocated. Host-owned memory, valid from
 * stage_begin until destroy. */
typedef struct peft_tensor_view {
    float *data;   /* numel floats; for ALIAS_BASE, the live weight itself */
    /* Gradient, NULL if frozen. Dense (numel floats) without a mask; with a mask it is
     * compact: n_trainable floats, grad[i] belongs to data[mask_index[i]]. */
    float *grad;
    uint64_t numel;
    uint64_t n_trainable;        /* numel without a mask */
    const uint64_t *mask_index;  /* sorted flat indices of trainable entries, or NULL */
} peft_tensor_view;

typedef uint32_t peft_tensor_id;

/* ------------------------------------------------------------------------------------------
 * Batches and the hooks' arguments.
 */

/* Passes. PEFT_PASS_MAIN is the ordinary forward/backward of a step or evaluation; other ids
 * are auxiliary passes the plugin asked for with run_pass (serves: ConPET's selector pass). */
enum { PEFT_PASS_MAIN = 0 };

typedef struct peft_batch_info {
    uint32_t struct_size;
    uint32_t batch;            /* B examples */
    uint32_t seq;              /* T tokens per example (padded); n_rows = B*T */
    uint32_t training;         /* 1 in a training step, 0 in evaluation */
    const int32_t *tokens;     /* (B, T) input ids */
    const int32_t *example_task; /* (B) task id of each example (serves: Poly, ConPET) */
    const int32_t *prompt_len; /* (B) tokens of BOS + prompt: row b*T + prompt_len[b]-1 is the
                                  last prompt token (serves: ConPET's selector) */
    uint64_t step;             /* optimizer steps done so far in this stage */
    /* 1.1 (test with PEFT_HAS_FIELD). Label scoring (stage keys eval_labels
     * and train_labels; serves: ConPET dynamic, whose selected experts each score only their
     * own task's labels): every example of such a batch is one (prompt, candidate label)
     * pair, its completion the label, and label_task[b] is the task the label of pair b
     * belongs to; NULL in every other batch. label_masked (B) is host-owned, zeroed before
     * batch_begin and read by the host after it: a plugin that sets label_masked[b] = 1
     * gives pair b the null score PEFT_LABEL_NULL_SCORE instead of its log-probability, so
     * the pair competes with the others as a label the model rules out, and no gradient
     * flows through it. Valid until the next batch_begin. */
    const int32_t *label_task; /* (B) or NULL */
    uint8_t *label_masked;     /* (B) or NULL; writable during batch_begin only */
    /* 1.2 (test with PEFT_HAS_FIELD). The batch's share of the optimizer step's examples:
     * its B over the step's, across every micro-batch (grad_accum) and every process of a
     * data-parallel run; 1 in evaluation. A plugin that adds a loss of its own as a mean over
     * the batch's examples (an auxiliary pass) multiplies that loss's gradient by it, so that
     * the gradients summed over the step's batches are those of the mean over the whole
     * step, as the host does for its own loss. serves: ConPET's selector loss. */
    float step_share;
} peft_batch_info;

/* The log-probability a masked label scores (ConPET's null expert logit). */
#define PEFT_LABEL_NULL_SCORE (-100.0)

/* Argument of forward(): y already holds x W^T, and only that: the site's own output buffer.
 * An additive method adds its delta (y += f(x)); a multiplicative one (IA3's scaling, DoRA's
 * renormalisation) may rewrite y from x W^T as it likes (y = l * y, y = g(y, x)). x is read
 * only: other sites share it (q, k and v read one normed input). */
typedef struct peft_forward_io {
    uint32_t struct_size;
    uint32_t site;
    uint32_t pass;             /* PEFT_PASS_MAIN or an id given to run_pass */
    uint32_t training;         /* dropout etc. only when 1 */
    uint32_t n_rows;
    uint32_t seq;              /* T: row i belongs to example i / T */
    const float *x;            /* (n_rows, d_in) the site's input */
    float *y;                  /* (n_rows, d_out) add into it */
    const int32_t *row_task;   /* (n_rows) task id per row (serves: per-row task ids) */
    float *acts;               /* act_floats(site, n_rows) floats kept for backward; host-owned,
                                  valid until the matching backward() of the same pass */
} peft_forward_io;

/* Argument of backward(): accumulate parameter gradients (+=) and make dx this site's dL/dx.
 * When the hook runs, dx holds this site's base path only, dy W with the dy it is given,
 * never another site's: the host sums the sites that share an input after each hook
 * returns. An additive method adds its path (dx += ...); a multiplicative one may rewrite
 * dx (for y = l * (x W^T): dy arrives as dL/dy, so dx must become (l * dy) W, and dl +=
 * sum over rows of dy * (x W^T)). */
typedef struct peft_backward_io {
    uint32_t struct_size;
    uint32_t site;
    uint32_t pass;
    uint32_t n_rows;
    uint32_t seq;
    const float *x;            /* (n_rows, d_in) the same input forward() saw */
    const float *dy;           /* (n_rows, d_out) dL/dy */
    float *dx;                 /* (n_rows, d_in) add dL/dx of the plugin's path into it; the
                                  base path (dy W) is already there. NULL if not needed. */
    const int32_t *row_task;   /* (n_rows) */
    const float *acts;         /* what forward() stored */
} peft_backward_io;

/* 1.1. Argument of input_forward() and input_backward(). serves: methods that scale or
 * replace a site's input before its product ((IA)3 on down_proj), which would otherwise pay a
 * second full product to correct y. */
typedef struct peft_input_io {
    uint32_t struct_size;
    uint32_t site;
    uint32_t pass;
    uint32_t training;
    uint32_t n_rows;
    uint32_t seq;
    const float *x;            /* (n_rows, d_in) the site's input as the model made it; read
                                  only (other sites share it) */
    float *x_out;              /* input_forward: (n_rows, d_in), holding a copy of x on entry;
                                  on return, the input the site's product x_out W^T and its
                                  forward()/backward() see. NULL in input_backward. */
    float *dx;                 /* input_backward: (n_rows, d_in), on entry dL/dx_out of this
                                  site alone (its base path and its backward()'s); on return
                                  dL/dx. NULL in input_forward. */
    const int32_t *row_task;   /* (n_rows) */
} peft_input_io;

/* Argument of the final-hidden-state hook (serves: ConPET dynamic's selector head and aux
 * loss). h is the output of the final norm. In the forward call the plugin may add to *loss
 * an auxiliary loss; in the backward call it adds dL/dh of that loss into dh. */
typedef struct peft_hidden_io {
    uint32_t struct_size;
    uint32_t pass;
    uint32_t n_rows;
    uint32_t d_model;
    const peft_batch_info *batch;
    const float *h;            /* (n_rows, C) */
    float *dh;                 /* backward only: (n_rows, C), add into it; NULL in forward */
    float *loss;               /* forward only: add the auxiliary loss; NULL in backward */
} peft_hidden_io;

/* Streams for non-tensor state (serves: LoTA masks, ConPET memory, Poly routing tables).
 * Return bytes moved or -1; transfers are complete unless they fail. */
typedef struct peft_ostream {
    void *ctx;
    int64_t (*write)(const struct peft_ostream *s, const void *buf, uint64_t size);
} peft_ostream;
typedef struct peft_istream {
    void *ctx;
    int64_t (*read)(const struct peft_istream *s, void *buf, uint64_t size);
} peft_istream;

/* ------------------------------------------------------------------------------------------
 * Host services, passed to every call. Append-only after the freeze. Every function takes
 * the `peft_host *` the host gave the instance (NULL only where said).
 */
typedef struct peft_host_api {
    uint32_t abi_version; /* the host's PEFT_ABI_VERSION */
    uint32_t struct_size; /* = sizeof(peft_host_api) as the host knows it */

    /* [any call] Log a line. The host adds the plugin id, stage and context. h may be NULL
     * (entry init/deinit). msg is borrowed for the call. */
    void (*log)(peft_host *h, int32_t level, const char *msg);

    /* [any call] Row-major C = alpha op(A) op(B) + beta C, with op = transpose when trans_* is
     * nonzero: op(A) is (m, k), op(B) is (k, n), C is (m, n). The host's BLAS; its threads. */
    void (*sgemm)(peft_host *h, int32_t trans_a, int32_t trans_b, uint32_t m, uint32_t n,
                  uint32_t k, float alpha, const float *a, uint32_t lda, const float *b,
                  uint32_t ldb, float beta, float *c, uint32_t ldc);

    /* [any call] The stage's seeded random stream (saved in checkpoints, so a resumed run
     * draws the same numbers). */
    void (*rng_uniform)(peft_host *h, float *out, uint64_t n, float lo, float hi);
    void (*rng_normal)(peft_host *h, float *out, uint64_t n, float mean, float std);
    uint64_t (*rng_u64)(peft_host *h);

    /* [any call] The model and its sites. out is a caller-owned struct the host fills. */
    peft_status (*model_info)(peft_host *h, peft_model_info *out);
    peft_status (*site_info)(peft_host *h, uint32_t site, peft_site_info *out);

    /* [create/attach only] Register a tensor; the host allocates and (in stage_begin order)
     * initializes it. desc is borrowed for the call. */
    peft_status (*tensor_register)(peft_host *h, const peft_tensor_desc *desc,
                                   peft_tensor_id *out);
    /* [create/attach/stage_begin/step_end only] serves: LoTA. Restrict a trainable tensor to
     * the given entries (sorted, unique flat indices, borrowed for the call): gradients and
     * optimizer state are then kept for those entries only; the others never change. In
     * step_end (serves: LoTA's own calibration) the tensor's optimizer state restarts: fresh
     * moments, bias correction counted from that step; its values stay as they are. */
    peft_status (*tensor_set_mask)(peft_host *h, peft_tensor_id id, const uint64_t *index,
                                   uint64_t n);
    /* [stage_begin and later] Where a registered tensor lives. */
    peft_status (*tensor_view)(peft_host *h, peft_tensor_id id, peft_tensor_view *out);

    /* [any call] Tasks of the run: ids are dense, stable for the whole run, in order of first
     * appearance. serves: Poly (a routing row per task), ConPET (an expert per task). */
    uint32_t (*task_count)(peft_host *h);
    const char *(*task_name)(peft_host *h, int32_t task); /* valid for the instance lifetime */

    /* [create/attach/stage_begin] serves: chained stages reading a previous stage's output
     * (LoTA's calibration, Poly-mu's skills, ConPET's experts). A stage is named as in the
     * INI; it must have finished. */
    /* Copy a tensor saved by that stage's method into out (numel floats, caller-owned). */
    peft_status (*stage_tensor)(peft_host *h, const char *stage, const char *name, float *out,
                                uint64_t numel);
    /* out (d_out, d_in) = the dense change that stage made to a site's weight. */
    peft_status (*stage_delta)(peft_host *h, const char *stage, uint32_t site, float *out);

    /* [batch_begin only] serves: ConPET dynamic. Run an auxiliary forward pass of the current
     * batch whose hooks see io->pass = pass (> 0); with backward = 1 in training, also its
     * backward from the auxiliary loss the hidden hook reports. */
    peft_status (*run_pass)(peft_host *h, uint32_t pass, uint32_t backward);

    /* [any call] Optional host services by id "peft.<name>/<rev>"; NULL if absent. The
     * returned struct is host-owned, valid for the instance lifetime. */
    const void *(*get_extension)(peft_host *h, const char *id);

    /* 1.1 (test with PEFT_HAS_FIELD(api, peft_host_api, tensor_origin)). [stage_begin and
     * later] Where a registered tensor's values come from: *out = PEFT_ORIGIN_INIT (its
     * registered init; PEFT_INIT_NONE's zeros, for the plugin to fill in stage_begin) or
     * PEFT_ORIGIN_LOADED (read from a file before stage_begin: a resumed stage's checkpoint,
     * or an adapter opened for evaluation, a merge or export). Copies the plugin makes itself
     * (stage_tensor) leave INIT. serves: a tensor filled in stage_begin from the base weights
     * (DoRA's magnitude) only when fresh, which "all zero" cannot tell. */
    peft_status (*tensor_origin)(peft_host *h, peft_tensor_id id, uint32_t *out);
} peft_host_api;

/* Values of peft_host_api.tensor_origin. */
enum { PEFT_ORIGIN_INIT = 0, PEFT_ORIGIN_LOADED = 1 };

/* ------------------------------------------------------------------------------------------
 * The method vtable. Every entry takes the instance first. Entries marked (optional) may be
 * NULL, which means "not offered". All [serial]. Beside each entry: [when it is called; which
 * instances get it] and who owns what it is handed.
 *
 * Instances. A host makes an instance for
 *   - a training stage: create, attach, (tensors initialized, or loaded when resuming),
 *     stage_begin, task_begin, the batches, step_end, stage_end, save, destroy;
 *   - a run's evaluation of a finished stage: create, attach, load, stage_begin, batches;
 *   - a saved adapter opened to merge, export, evaluate (peft eval) or generate from, and a
 *     merge stage's output: create, attach, load (or a merge's arithmetic), then batches,
 *     delta_weight, negate or save, but NO stage_begin, task_begin, step_end or stage_end.
 * So everything an instance needs to run a batch must be in its tensors and state, not made
 * in stage_begin; tensor_origin tells stage_begin a loaded tensor from a fresh one.
 *
 * Lifecycle of one training stage:
 *   create -> attach(site) for every matched site -> (host allocates and initializes tensors;
 *   loads saved tensors when resuming or chaining) -> stage_begin -> for each step:
 *   [task_begin when a task first appears] batch_begin, forward/backward per site, hidden hooks,
 *   (host optimizer step) step_end -> stage_end -> delta_weight / save -> destroy.
 */
typedef struct peft_method_vtable {
    uint32_t struct_size; /* = sizeof(peft_method_vtable) */

    /* [first, once; every instance] Create the instance. cfg holds every schema key (defaults
     * filled, types checked) plus "stage"; borrowed for the call. The plugin may register
     * model-level tensors here. *out is plugin-owned until destroy. On error, log why and
     * return a status; *out is then ignored and destroy is not called. */
    peft_status (*create)(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                          uint32_t n_cfg, peft_instance **out);
    /* [last, once; every created instance] Free everything the plugin allocated (never what
     * the host did: tensors, views, batch arrays). Never fails. */
    void (*destroy)(peft_instance *self);

    /* [after create, once per offered site, in site order; every instance] Attach to a site.
     * If the schema has a key "target_modules", the host matches sites by it as HF PEFT does
     * (a listed name equals the site's kind or is a suffix of its name after a dot;
     * "all-linear" = every site) and refuses a run where nothing matches; otherwise the host
     * offers every site and the plugin returns PEFT_E_UNSUPPORTED to decline one (the tensors
     * it registered for that site are forgotten). Register the site's tensors here. */
    peft_status (*attach)(peft_instance *self, uint32_t site);

    /* (optional) [once, after all tensors are allocated and initialized or loaded; training
     * stages and a run's evaluation only, see "Instances"] serves: model-level hooks that
     * see all sites. LoTA's global top-k mask is computed here. */
    peft_status (*stage_begin)(peft_instance *self);
    /* (optional) [training stages: once per task the stage trains on (its tasks, then any it
     * replays), in that order, after stage_begin, before the first training batch] serves:
     * new routing rows / experts. */
    peft_status (*task_begin)(peft_instance *self, int32_t task);
    /* (optional) [before the forward of every batch, training and evaluation; every instance
     * that runs batches] batch is host-owned, valid until the next batch_begin; the plugin
     * may write only batch->label_masked, and only during this call. */
    peft_status (*batch_begin)(peft_instance *self, const peft_batch_info *batch);

    /* (optional) [before a forward, per attached site] Floats of activation cache forward()
     * needs for backward at this site for n_rows rows; the host allocates them (io->acts). */
    uint64_t (*act_floats)(peft_instance *self, uint32_t site, uint32_t n_rows);
    /* (optional) [per attached site, in every forward pass after batch_begin] Make io->y the
     * site's output, see peft_forward_io. All of io is host-owned, valid for the call; acts
     * until the matching backward. */
    peft_status (*forward)(peft_instance *self, const peft_forward_io *io);
    /* (optional) [per attached site, in reverse order, in training passes after the forward]
     * Accumulate (+=) gradients of registered tensors (views from tensor_view); make io->dx
     * this site's dL/dx, see peft_backward_io. io is host-owned, valid for the call. */
    peft_status (*backward)(peft_instance *self, const peft_backward_io *io);

    /* (optional) [after the final norm of every forward; before the head's backward] Final
     * hidden state hooks, see peft_hidden_io (host-owned, valid for the call). */
    peft_status (*hidden_forward)(peft_instance *self, const peft_hidden_io *io);
    peft_status (*hidden_backward)(peft_instance *self, const peft_hidden_io *io);

    /* (optional) [training stages: after the host's optimizer update of step `step`
     * (1-based)] The only signal that trainable values changed; tensor views stay valid. */
    peft_status (*step_end)(peft_instance *self, uint64_t step);
    /* (optional) [training stages: once, after the last step, before the save] */
    peft_status (*stage_end)(peft_instance *self);

    /* (optional) [any time after stage_begin or a load; every instance] serves: per-method
     * arithmetic, merges, export. out (d_out, d_in), host-owned, += scale * dW of the site,
     * exact. NULL or PEFT_E_UNSUPPORTED (logged with the reason) if the method has no
     * input-independent dW. */
    peft_status (*delta_weight)(peft_instance *self, uint32_t site, float scale, float *out);
    /* (optional) [after a load; merge instances] serves: PEM negation. Negate the adapter in
     * place. When NULL the host flips every tensor flagged PEFT_TENSOR_NEGATE. */
    peft_status (*negate)(peft_instance *self);

    /* (optional) [state_save: at every checkpoint and the stage's save; state_load: after the
     * tensors are loaded, before stage_begin when there is one] serves: non-tensor state
     * (masks, replay memory, routing tables), saved next to the tensors. The streams are
     * host-owned, valid for the call. */
    peft_status (*state_save)(peft_instance *self, const peft_ostream *out);
    peft_status (*state_load)(peft_instance *self, const peft_istream *in);

    /* (optional) [any call] Plugin-side extensions by id; NULL if absent. Plugin-owned, valid
     * until destroy. */
    const void *(*get_extension)(peft_instance *self, const char *id);

    /* 1.1 (optional, per attached site) [in every pass, before the site's product; in a
     * training pass again before the site's backward, to make x_out anew, so it must give
     * the same x_out for the same x: no fresh randomness] Rewrite the site's input for this
     * site alone, see peft_input_io. */
    peft_status (*input_forward)(peft_instance *self, const peft_input_io *io);
    /* 1.1 (optional, with input_forward) [training passes, per attached site, after the site's
     * backward()] Turn io->dx from dL/dx_out into dL/dx, and accumulate (+=) the gradients of
     * the tensors input_forward used. */
    peft_status (*input_backward)(peft_instance *self, const peft_input_io *io);
} peft_method_vtable;

/* Feature tags a method may list. */
#define PEFT_FEATURE_MERGEABLE "mergeable"          /* delta_weight is exact */
#define PEFT_FEATURE_WRITES_BASE "writes-base"      /* registers ALIAS_BASE tensors */
#define PEFT_FEATURE_TASK_ROUTED "task-routed"      /* reads row_task */
#define PEFT_FEATURE_HF_PEFT "hf-peft"              /* tensor names follow HF PEFT */
/* 1.1: adding, averaging and negating this method's adapters tensor by tensor (PEM's
 * factor-space arithmetic, merge stages' space = factor) gives a meaningful adapter; the
 * host refuses factor space for a method that does not list it. Negation flips the tensors
 * flagged PEFT_TENSOR_NEGATE, or calls negate. */
#define PEFT_FEATURE_FACTOR_MERGE "factor-merge"
/* 1.1: the method's default gradient treats part of its forward as a constant on purpose
 * (DoRA's weight norm, detached as HF PEFT does), so it is not the derivative of the forward;
 * its bool key "exact_grad" adds the missing part. peft check verifies the gradients with
 * exact_grad = true. */
#define PEFT_FEATURE_SURROGATE_GRAD "surrogate-grad"

/* A method's descriptor. Static data owned by the plugin, valid until deinit. */
typedef struct peft_method_desc {
    uint32_t struct_size;      /* = sizeof(peft_method_desc) */
    const char *id;            /* what `method =` names: [a-z0-9_.-]+, unique across plugins;
                                  third parties use reverse-DNS ids */
    const char *name;          /* human name */
    const char *version;       /* "MAJOR.MINOR.PATCH" */
    const char *description;   /* one line */
    const char *const *features; /* NULL-terminated PEFT_FEATURE_* tags, or NULL */
    const peft_param_spec *params;
    uint32_t n_params;
    const peft_method_vtable *vt;
    /* Appended (struct_size tells whether a plugin has them): the values this method
     * recommends for the host's own stage keys (optimizer, weight_decay, clip_scope,
     * schedule, lr, ...), as the method's paper or official code trains it. The host uses
     * them in a trained stage of this method that leaves the key unset; `peft plugins ID`
     * lists them. Static data, read at load; a key that is not a host stage key refuses the
     * plugin, a bad value fails the stage that uses it with a line naming the method. */
    const peft_kv *stage_defaults;
    uint32_t n_stage_defaults;
    /* Appended: where the method comes from, for `peft plugins ID` (NULL: not given). license
     * is an SPDX expression ("Apache-2.0"), url the method's home (code or paper). */
    const char *license;
    const char *url;
} peft_method_desc;

/* The exported entry, a const object named peft_plugin_entry of this type. Static data, read
 * by the host before any plugin code runs. */
typedef struct peft_plugin_entry {
    uint32_t abi_version; /* = PEFT_ABI_VERSION at build time */
    uint32_t struct_size; /* = sizeof(peft_plugin_entry_t) */
    /* (optional) Once per loaded file, before anything else; fast, no heavy work. On failure
     * the host calls nothing else of the file, deinit included. */
    peft_status (*init)(const peft_host_api *api);
    /* (optional) After the last call, matched with a successful init. */
    void (*deinit)(void);
    uint32_t method_count;
    const peft_method_desc *const *methods; /* method_count descriptors */
} peft_plugin_entry_t;

#define PEFT_PLUGIN_ENTRY_SYMBOL "peft_plugin_entry"

/* Emit the exported entry: PEFT_PLUGIN_DEFINE(init_fn_or_NULL, deinit_fn_or_NULL, &desc...). */
#define PEFT_PLUGIN_DEFINE(init_fn, deinit_fn, ...)                                          \
    static const peft_method_desc *const peft_plugin_methods_[] = {__VA_ARGS__};           \
    PEFT_EXPORT const peft_plugin_entry_t peft_plugin_entry = {                            \
        PEFT_ABI_VERSION, (uint32_t)sizeof(peft_plugin_entry_t), (init_fn), (deinit_fn),    \
        (uint32_t)(sizeof(peft_plugin_methods_) / sizeof(peft_plugin_methods_[0])),         \
        peft_plugin_methods_}

/* True if a struct received across the boundary is large enough to hold `field`. */
#define PEFT_HAS_FIELD(ptr, type, field)                                                      \
    ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* ------------------------------------------------------------------------------------------
 * Header-only helpers for plugin code (static inline: nothing to link).
 */

/* Format and log a line through the host. */
static inline void peft_logf(const peft_host_api *api, peft_host *h, int32_t level,
                             const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static inline void peft_logf(const peft_host_api *api, peft_host *h, int32_t level,
                             const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    api->log(h, level, buf);
}

/* The value of `key` in cfg, or NULL. */
static inline const char *peft_kv_get(const peft_kv *cfg, uint32_t n, const char *key) {
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(cfg[i].key, key) == 0) return cfg[i].value;
    return NULL;
}

/* Typed readers. The host has already checked the types, so these only convert; a missing
 * key gives the fallback. */
static inline int64_t peft_kv_int(const peft_kv *cfg, uint32_t n, const char *key,
                                  int64_t fallback) {
    const char *v = peft_kv_get(cfg, n, key);
    return v && *v ? strtoll(v, NULL, 10) : fallback;
}
static inline double peft_kv_float(const peft_kv *cfg, uint32_t n, const char *key,
                                   double fallback) {
    const char *v = peft_kv_get(cfg, n, key);
    return v && *v ? strtod(v, NULL) : fallback;
}
static inline int peft_kv_bool(const peft_kv *cfg, uint32_t n, const char *key, int fallback) {
    const char *v = peft_kv_get(cfg, n, key);
    if (!v || !*v) return fallback;
    return strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0 ||
           strcmp(v, "on") == 0;
}

#ifdef __cplusplus
}
#endif

#endif /* PEFT_PLUGIN_H */
