/*
 * method_internal.h: what the three files of the method runtime share: the host's context of
 * one plugin instance (`struct peft_host`), the run around it, and the bracket every call
 * into the plugin goes through. method_api.c serves the plugin (the host API table),
 * method.c drives it (creation, hooks, arithmetic), method_file.c saves and loads adapters.
 */
#ifndef PEFT_METHOD_INTERNAL_H
#define PEFT_METHOD_INTERNAL_H

#include "method.h"

/* Which plugin entry is running; host API calls check it. Bits so that "allowed in" is a
 * mask. */
enum {
    CALL_NONE = 0,
    CALL_CREATE = 1 << 0,
    CALL_ATTACH = 1 << 1,
    CALL_STAGE_BEGIN = 1 << 2,
    CALL_BATCH_BEGIN = 1 << 3,
    CALL_OTHER = 1 << 4, /* hooks, task_begin, delta, state, ... */
    CALL_STEP_END = 1 << 5,
};

struct peft_host {
    struct model *m;
    const struct plugin_method *pm;
    const peft_method_vtable *vt;
    peft_instance *inst;
    struct method_env env;     /* copy; where/stage point at our own strings */
    struct rng rng;            /* the instance's stream: rng_seed_label(seed, "method:STAGE") */
    struct rng init_rng;       /* the tensors' random initialisation: rng_seed_label(init_seed,
                                  "init:METHOD"), so stages of one method share it */
    uint64_t init_fp;          /* fingerprint of that initialisation (0: none drawn, unknown) */
    struct mtensor *tensors;
    uint8_t *prev_need_grad;   /* per tensor: the model's need_grad before we aliased it */
    int32_t n_tensors, cap_tensors;
    int allocated;             /* tensors have storage */
    int made_model_grads;      /* this instance allocated the model's gradient block */
    uint64_t step;             /* the step of the running step_end */
    char (*site_names)[96];    /* (n_sites) kept alive for site_info */
    int call;                  /* CALL_* of the running entry, CALL_NONE between calls */
    int misbehaved;            /* a contract violation during the current call */
    char reason[1024];         /* ERROR lines logged during the current outermost call */
    char api_reason[512];      /* why the host last refused an API call */
};

struct act_buf {
    float *p;
    uint64_t cap;
    int32_t n_rows;            /* rows of the forward that filled it; -1 = none */
};

struct hook_ctx {
    struct method_run *mr;
    uint32_t training;
};

struct method_run {
    struct peft_host h;        /* first member: (struct method_run *)h is the run */
    int32_t *sites;            /* (n_sites) attached sites, ascending */
    int32_t n_sites;
    int32_t *slot_of_site;     /* (model n_sites) index into sites, or -1 */
    float step_share;          /* the next training batch's peft_batch_info.step_share */
    /* The current batch, copied so the caller may reuse its buffers. */
    int has_batch;
    peft_batch_info binfo;
    int32_t *tokens, *example_task, *prompt_len;
    int32_t *label_task;       /* (B) a label-scoring batch's, else unused */
    uint8_t *label_masked;     /* (B) what the plugin masked in batch_begin */
    int has_labels;            /* the current batch is a label-scoring batch */
    float *x_in;               /* (rows, d_in) the input a plugin's input_forward made */
    size_t x_in_cap;
    int32_t cap_rows;
    int32_t *row_task;         /* (n_rows) example_task expanded per row */
    int32_t row_task_n;        /* rows row_task was built for */
    uint32_t row_seq;
    struct act_buf **acts;     /* acts[pass][slot] */
    uint32_t n_pass;
    struct hook_ctx hctx[2];   /* [training] */
    struct model_hooks hooks[2];
    int merged;                /* after method_run_merge the site hooks no longer dispatch */
};

/* The method's id, for error lines. */
const char *method_id(const struct peft_host *h);
/* Append msg to a "; "-separated line (truncated at cap). */
void append_line(char *buf, size_t cap, const char *msg);
/* Bracket a call into the plugin: call_begin returns the previous call kind, to be passed to
 * call_end, which sets "WHERE: ID: [WHAT: ]reason" and returns -1 when the call failed. */
int call_begin(struct peft_host *h, int kind);
int call_end(struct peft_host *h, int prev, peft_status st, const char *what);
/* Record a contract violation the plugin cannot see as a status; the call then fails. */
void misbehaving(struct peft_host *h, const char *fmt, ...) PEFT_PRINTF(2, 3);
/* Give a trainable tensor its gradient storage (after allocation, or after a new mask): an
 * unmasked ALIAS_BASE tensor the model's dense gradient (need_grad set), a masked one a
 * compact buffer that is the model's sparse target for it, any other a buffer of its own. */
void bind_grad(struct peft_host *h, struct mtensor *t);
/* Does the tensor own its gradient buffer (rather than pointing into the model's)? */
int grad_owned(const struct mtensor *t);
/* Free the model's gradient block if this instance made it and no tensor needs it now. */
void release_model_grads(struct peft_host *h);
/* Restrict a trainable tensor to the sorted, unique, in-range entries index (n): its
 * gradient becomes compact, an aliased tensor's start value too. Optimizer state must have
 * been dealt with by the caller. */
void mask_apply(struct peft_host *h, struct mtensor *t, const uint64_t *index, uint64_t n);
/* Read an integer tensor (I64, I32, U64, U32; every value >= 0) as uint64. -1 with
 * "PATH: NAME: reason". */
struct st_file;
struct st_tensor;
int read_index_tensor(const struct st_file *f, const struct st_tensor *t, uint64_t *out,
                      uint64_t n);

#endif
