/*
 * conpet.c: ConPET, continual parameter-efficient tuning (Song et al. 2023), as a plugin
 * ("conpet"), over a sequence of class-incremental tasks, each stage of a chain training the
 * next task(s) (README "ConPET"). The key `mode` chooses:
 *   static   one LoRA at the targeted sites, continued task after task: with init_from the
 *            stage starts from that stage's LoRA. The replay half of each batch comes from the
 *            host's continual-learning sampler (stage keys replay, replay_tasks,
 *            memory_per_label), which any method can use: with it this is static ConPET, without
 *            it the sequential PET-only baseline.
 *   dynamic  one LoRA expert per task of the run, all registered up front (api->task_count);
 *            an expert trains in the stage that first trains its task and is frozen in every
 *            later stage of the chain. A selector (its own LoRA at the same sites and a linear
 *            head over task ids on the final hidden state of the last prompt token) picks the
 *            experts of each example.
 *
 * Tensors per matched site (W: (d_out, d_in)):
 *   static   "base_model.model.<site>.lora_A.weight" (r, d_in)   U(+-1/sqrt(d_in))
 *            "base_model.model.<site>.lora_B.weight" (d_out, r)  zero, NEGATE
 *            (HF PEFT's names: a static adapter is a plain LoRA, mergeable: dW = s B A)
 *   dynamic  expert of task T: "base_model.model.<site>.lora_A.<T>.weight" (r, d_in) and
 *            "....lora_B.<T>.weight" (d_out, r), as above (HF PEFT's in-memory names of an
 *            adapter called T). Trainable (exempt from weight decay) in the stage that trains
 *            task T, frozen in every other: init_from's trained experts, and the experts of
 *            tasks the stage does not train, which are empty and not saved (the host's
 *            peft.stage_tasks/1 says which; a host without it gets every expert init_from did
 *            not train as trainable and saved, and those outside the stage's batches get no
 *            gradient, so under AdamW without decay they stay bit-identical all the same).
 *            selector: "conpet.selector.<site>.lora_A.weight" (selector_r, d_in) U(+-1/sqrt(d_in)),
 *            "conpet.selector.<site>.lora_B.weight" (d_out, selector_r) zero (not NEGATE: negating
 *            the adapter negates the experts, not the routing).
 * The selector's LoRA and head are frozen in a stage that knows a single task (no selector
 * pass runs then). Model-level: "conpet.selector.head.weight" (n_tasks, C) and ".bias"
 * (n_tasks), both U(+-1/sqrt(C)) as torch's nn.Linear (dynamic only); "conpet.config" (5) and
 * "conpet.experts" (n_tasks: 0 fresh, 1 trained by an earlier stage, 2 trained here, 3 routed
 * to by a selector stage, not trained yet), saved,
 * never trained: what a later stage's init_from checks and reads. All state is in tensors,
 * so the adapter file is the whole state and a chain can stop after any task and go on.
 *
 * Forward, s = lora_alpha / r. Static: y += s x A^T B^T. Dynamic, on the main pass: the
 * selector picks the k = top_k known tasks route[b] of example b (at most the number of known
 * tasks), and one expert e runs on the example's rows, y += s x A_e^T B_e^T. As the published
 * dynamic ConPET, each selected expert runs its own forward and scores only its own task's
 * labels: under label prediction (the host's eval_labels and train_labels, where every example
 * of a batch is a (prompt, label) pair) e is the task of the pair's label, and a pair whose
 * task is not selected is masked (peft_batch_info.label_masked): it gets the null score
 * (-100, the official code's null expert logit), so the prediction is the best label of the
 * selected experts' tasks and the label loss normalises over those labels only. In any other
 * batch (a completion's tokens, generation) e is the first selected task. On pass 1 (the
 * selector's auxiliary pass, run from batch_begin) every row gets the selector's LoRA
 * instead, and the final hidden state h of the last prompt token gives the logits z = W h + b
 * over task ids; the auxiliary loss is the mean over examples of -log softmax(z)[task], the
 * softmax over the known tasks (trained by an earlier stage or begun in this one). route[b] =
 * the top-k known tasks by z; in training with teacher_forcing, when the example's own task
 * is not among them it replaces the last. With one known task no selector pass is needed. A
 * host that offers no auxiliary passes gets routing by the batch's task ids (logged once).
 *
 * Phases (key phase): the official code trains a task's selector first, keeping its best
 * validation checkpoint, then the task's expert with the selector frozen. phase = selector
 * trains only the selector (the new task routable, its expert not trained yet), phase =
 * experts then trains the new experts with the selector frozen (init_from the selector
 * stage); the host's early_stopping keeps the selector stage's best evaluation. phase = joint
 * (the default) trains both on every batch.
 *
 * Backward on each routed segment, with u = x A_e^T and g = dy B_e:
 *   dB_e += s dy^T u,  dA_e += s g^T x,  dx += s g A_e;
 * of the head, p = softmax over the known tasks: dW += (p - onehot) h / n, db += (p - onehot)
 * / n, dh += (p - onehot) W / n. delta_weight: static s B A, exact; dynamic has none (each
 * example uses the experts its selector picks) and refuses.
 */
#include <math.h>
#include <stdlib.h>

#include "conpet.h"
#include "peft/peft_site_weight.h"
#include "peft/peft_stage_keys.h"
#include "peft/peft_stage_tasks.h"

static const char *const config_name = "conpet.config";
static const char *const experts_name = "conpet.experts";
static const char *const head_w_name = "conpet.selector.head.weight";
static const char *const head_b_name = "conpet.selector.head.bias";

float *cp_scratch(struct peft_instance *self, uint64_t n) {
    return peft_scratch_get(&self->scratch, n);
}

/* ------------------------------------------------------------------------------------------
 * Creation: keys, the source stage, model-level tensors.
 */

/* The same checks as read_source, from init_from's keys, which the host gives before any stage
 * has trained: a wrong chain is refused when the run file is checked, not when it is reached. */
static peft_status check_source_keys(struct peft_instance *self) {
    const peft_host_api *api = self->api;
    const peft_stage_keys_api *sk = api->get_extension(self->h, PEFT_STAGE_KEYS_EXTENSION);
    char method[64], mode[32], r[32], alpha[64], sel_r[32];
    if (!sk || !PEFT_HAS_FIELD(sk, peft_stage_keys_api, stage_value) ||
        sk->stage_value(self->h, self->init_from, "method", method, sizeof method) != PEFT_OK)
        return PEFT_OK; /* no run, or no such stage (the host reports that) */
    if (strcmp(method, "conpet") != 0) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s' is a stage of method '%s'; "
                  "it must be a conpet stage", self->init_from, method);
        return PEFT_E_CONFIG;
    }
    static const char *const modes[] = {"static", "dynamic"};
    if (sk->stage_value(self->h, self->init_from, "mode", mode, sizeof mode) != PEFT_OK ||
        sk->stage_value(self->h, self->init_from, "r", r, sizeof r) != PEFT_OK ||
        sk->stage_value(self->h, self->init_from, "lora_alpha", alpha, sizeof alpha) != PEFT_OK ||
        sk->stage_value(self->h, self->init_from, "selector_r", sel_r, sizeof sel_r) != PEFT_OK)
        return PEFT_OK;
    if (strcmp(mode, modes[self->mode]) != 0) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "mode = %s, but init_from = '%s' is mode = %s",
                  modes[self->mode], self->init_from, mode);
        return PEFT_E_CONFIG;
    }
    if ((uint32_t)strtoul(r, NULL, 10) != self->r || (float)strtod(alpha, NULL) != self->alpha ||
        (self->mode == CP_DYNAMIC && (uint32_t)strtoul(sel_r, NULL, 10) != self->sel_r)) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "r = %u, lora_alpha = %g, selector_r = %u must "
                  "be those of init_from = '%s': r = %s, lora_alpha = %s, selector_r = %s",
                  self->r, (double)self->alpha, self->sel_r, self->init_from, r, alpha, sel_r);
        return PEFT_E_CONFIG;
    }
    return PEFT_OK;
}

/* Check this stage's structure against init_from's conpet.config and take the experts it
 * trained (src_experts). The host also creates every stage's instance before the run starts,
 * to check its keys, when no stage has finished: then the source cannot be read and
 * src_experts stays NULL; stage_begin, which only a running stage reaches, refuses that. */
static peft_status read_source(struct peft_instance *self) {
    const peft_host_api *api = self->api;
    float cfg[CP_CONFIG_LEN];
    if (api->stage_tensor(self->h, self->init_from, config_name, cfg, CP_CONFIG_LEN) != PEFT_OK)
        return PEFT_OK;
    static const char *const modes[] = {"static", "dynamic"};
    int src_mode = (int)cfg[0] - 1;
    if (src_mode != self->mode) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "mode = %s, but init_from = '%s' is mode = %s",
                  modes[self->mode], self->init_from,
                  src_mode == CP_STATIC || src_mode == CP_DYNAMIC ? modes[src_mode] : "?");
        return PEFT_E_CONFIG;
    }
    if ((uint32_t)cfg[1] != self->r || cfg[2] != self->alpha ||
        (self->mode == CP_DYNAMIC && (uint32_t)cfg[3] != self->sel_r)) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "r = %u, lora_alpha = %g, selector_r = %u must "
                  "be those of init_from = '%s': r = %u, lora_alpha = %g, selector_r = %u",
                  self->r, (double)self->alpha, self->sel_r, self->init_from, (uint32_t)cfg[1],
                  (double)cfg[2], (uint32_t)cfg[3]);
        return PEFT_E_CONFIG;
    }
    if ((uint32_t)cfg[4] != self->n_tasks) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s' knew %u tasks, this run has %u",
                  self->init_from, (uint32_t)cfg[4], self->n_tasks);
        return PEFT_E_CONFIG;
    }
    self->src_experts = malloc(self->n_tasks * sizeof *self->src_experts);
    if (!self->src_experts) return PEFT_E_NOMEM;
    if (api->stage_tensor(self->h, self->init_from, experts_name, self->src_experts,
                          self->n_tasks) != PEFT_OK) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s': cannot read its %s",
                  self->init_from, experts_name);
        return PEFT_E_CONFIG;
    }
    return PEFT_OK;
}

/* Whether init_from trained task's expert (a selector stage's SELECTABLE ones it did not). */
static int inherited(const struct peft_instance *self, uint32_t task) {
    return self->src_experts && (self->src_experts[task] == EXPERT_INHERITED ||
                                 self->src_experts[task] == EXPERT_TRAINED_HERE);
}

/* Whether init_from already routed to task (a selector stage's new task). */
static int selectable(const struct peft_instance *self, uint32_t task) {
    return self->src_experts && self->src_experts[task] == EXPERT_SELECTABLE;
}

/* Whether task's expert trains in this stage: not trained by an earlier stage, and one of the
 * stage's tasks (every such task when the host does not say which those are). */
static int expert_trains(const struct peft_instance *self, uint32_t task) {
    return self->phase != CP_SELECTOR && !inherited(self, task) &&
           (!self->stage_trains || self->stage_trains[task]);
}

/* Whether the selector trains: when the host says which tasks the stage trains, only if at
 * least two tasks are known in the stage (with one, no selector pass runs). */
static int selector_trains(const struct peft_instance *self) {
    if (self->phase == CP_EXPERTS) return 0;
    if (!self->stage_trains) return 1;
    uint32_t known = 0;
    for (uint32_t t = 0; t < self->n_tasks; t++)
        known += inherited(self, t) || selectable(self, t) || self->stage_trains[t];
    return known >= 2;
}

/* The stage's training tasks from the host, when it offers peft.stage_tasks/1. */
static peft_status read_stage_tasks(struct peft_instance *self) {
    const peft_stage_tasks_api *x = self->api->get_extension(self->h, PEFT_STAGE_TASKS_EXTENSION);
    if (!x || !PEFT_HAS_FIELD(x, peft_stage_tasks_api, train_tasks)) return PEFT_OK;
    const int32_t *ids;
    uint32_t n;
    if (x->train_tasks(self->h, &ids, &n) != PEFT_OK) return PEFT_OK;
    self->stage_trains = calloc(self->n_tasks + 1, 1);
    if (!self->stage_trains) return PEFT_E_NOMEM;
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] >= 0 && (uint32_t)ids[i] < self->n_tasks) self->stage_trains[ids[i]] = 1;
    return PEFT_OK;
}

static peft_status register_model_tensors(struct peft_instance *self) {
    const peft_host_api *api = self->api;
    peft_tensor_desc c = {
        .struct_size = sizeof c, .name = config_name, .site = -1, .ndim = 1,
        .shape = {CP_CONFIG_LEN, 0, 0, 0}, .init = PEFT_INIT_NONE, /* filled in stage_begin */
    };
    peft_status st = api->tensor_register(self->h, &c, &self->config_id);
    if (st != PEFT_OK) return st;
    peft_tensor_desc e = {
        .struct_size = sizeof e, .name = experts_name, .site = -1, .ndim = 1,
        .shape = {self->n_tasks, 0, 0, 0}, .init = PEFT_INIT_NONE, /* EXPERT_* per task */
    };
    st = api->tensor_register(self->h, &e, &self->experts_id);
    if (st != PEFT_OK || self->mode != CP_DYNAMIC) return st;
    float bound = 1.0f / sqrtf((float)self->d_model);
    peft_tensor_desc w = {
        .struct_size = sizeof w, .name = head_w_name, .site = -1, .ndim = 2,
        .shape = {self->n_tasks, self->d_model, 0, 0}, /* (n_tasks, C) */
        .init = PEFT_INIT_UNIFORM, .init_a = -bound, .init_b = bound,
        .flags = selector_trains(self) ? PEFT_TENSOR_TRAINABLE : 0u, .lr_group = "selector",
    };
    st = api->tensor_register(self->h, &w, &self->head_w);
    if (st != PEFT_OK) return st;
    peft_tensor_desc b = {
        .struct_size = sizeof b, .name = head_b_name, .site = -1, .ndim = 1,
        .shape = {self->n_tasks, 0, 0, 0}, /* (n_tasks) */
        .init = PEFT_INIT_UNIFORM, .init_a = -bound, .init_b = bound,
        .flags = selector_trains(self) ? PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY : 0u,
        .lr_group = "selector",
    };
    return api->tensor_register(self->h, &b, &self->head_b);
}

static void cp_destroy(peft_instance *self) {
    if (!self) return;
    for (uint32_t i = 0; i < self->n_sites; i++) free(self->sites[i].expert);
    free(self->sites);
    free(self->slot);
    free(self->src_experts);
    free(self->stage_trains);
    free(self->route);
    free(self->expert);
    free(self->sel_logits);
    peft_scratch_free(&self->scratch);
    free(self);
}

static peft_status cp_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                             uint32_t n_cfg, peft_instance **out) {
    const char *mode = peft_kv_get(cfg, n_cfg, "mode");
    const char *from = peft_kv_get(cfg, n_cfg, "init_from");
    int64_t r = peft_kv_int(cfg, n_cfg, "r", 4), sel_r = peft_kv_int(cfg, n_cfg, "selector_r", 4);
    int64_t top_k = peft_kv_int(cfg, n_cfg, "top_k", 1);
    const char *phase = peft_kv_get(cfg, n_cfg, "phase");
    double alpha = peft_kv_float(cfg, n_cfg, "lora_alpha", 1.0);
    const char *bad = NULL;
    if (!mode || (strcmp(mode, "static") != 0 && strcmp(mode, "dynamic") != 0))
        bad = "mode must be static or dynamic";
    else if (r <= 0 || r > 65536) bad = "r must be in 1..65536";
    else if (sel_r <= 0 || sel_r > 65536) bad = "selector_r must be in 1..65536";
    else if (top_k <= 0 || top_k > 64) bad = "top_k must be in 1..64";
    else if (phase && strcmp(phase, "joint") != 0 && strcmp(phase, "selector") != 0 &&
             strcmp(phase, "experts") != 0)
        bad = "phase must be joint, selector or experts";
    else if (phase && strcmp(phase, "joint") != 0 && strcmp(mode, "dynamic") != 0)
        bad = "phase = selector or experts is for mode = dynamic";
    else if (!(alpha > 0.0 && alpha < 1e6)) bad = "lora_alpha must be positive";
    else if (!from) from = "";
    if (!bad && strlen(from) >= sizeof(((struct peft_instance *)0)->init_from))
        bad = "init_from is too long";
    if (bad) {
        peft_logf(api, h, PEFT_LOG_ERROR, "%s", bad);
        return PEFT_E_CONFIG;
    }
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api;
    self->h = h;
    self->mode = strcmp(mode, "dynamic") == 0 ? CP_DYNAMIC : CP_STATIC;
    self->r = (uint32_t)r;
    self->sel_r = (uint32_t)sel_r;
    self->top_k = self->mode == CP_DYNAMIC ? (uint32_t)top_k : 1;
    self->teacher_forcing = peft_kv_bool(cfg, n_cfg, "teacher_forcing", 1);
    self->phase = !phase || strcmp(phase, "joint") == 0 ? CP_JOINT
                  : strcmp(phase, "selector") == 0      ? CP_SELECTOR
                                                        : CP_EXPERTS;
    self->alpha = (float)alpha;
    self->s = (float)(alpha / (double)r);
    self->sel_s = (float)(alpha / (double)sel_r);
    strcpy(self->init_from, from);
    self->n_tasks = api->task_count(h);
    self->d_model = mi.d_model;
    if (self->mode == CP_DYNAMIC && self->n_tasks == 0) {
        peft_logf(api, h, PEFT_LOG_ERROR, "mode = dynamic needs the run's tasks (an expert each), "
                  "and the run has none");
        cp_destroy(self);
        return PEFT_E_CONFIG;
    }
    if (peft_site_table_new(mi.n_sites, sizeof *self->sites, (void **)&self->sites, &self->slot)) {
        cp_destroy(self);
        return PEFT_E_NOMEM;
    }
    self->n_model_sites = mi.n_sites;
    if (self->init_from[0]) st = check_source_keys(self);
    if (st == PEFT_OK && self->init_from[0]) st = read_source(self);
    if (st == PEFT_OK) st = read_stage_tasks(self);
    if (st == PEFT_OK) st = register_model_tensors(self);
    if (st != PEFT_OK) {
        cp_destroy(self);
        return st;
    }
    *out = self;
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Sites.
 */

/* Which LoRA pair of a site: the static one, the selector's, or (>= 0) a task's expert. */
enum { PAIR_STATIC = -1, PAIR_SELECTOR = -2 };

/* The names of a pair's tensors at the site called site_name. */
static void pair_names(const peft_instance *self, const char *site_name, int32_t pair,
                       char *a_name, char *b_name, size_t cap) {
    if (pair == PAIR_SELECTOR) {
        snprintf(a_name, cap, "conpet.selector.%s.lora_A.weight", site_name);
        snprintf(b_name, cap, "conpet.selector.%s.lora_B.weight", site_name);
    } else if (pair == PAIR_STATIC) {
        snprintf(a_name, cap, "base_model.model.%s.lora_A.weight", site_name);
        snprintf(b_name, cap, "base_model.model.%s.lora_B.weight", site_name);
    } else {
        const char *t = self->api->task_name(self->h, pair);
        snprintf(a_name, cap, "base_model.model.%s.lora_A.%s.weight", site_name, t);
        snprintf(b_name, cap, "base_model.model.%s.lora_B.%s.weight", site_name, t);
    }
}

/* One LoRA pair at a site: A (r, d_in) uniform, B (d_out, r) zero. */
static peft_status register_lora(struct peft_instance *self, const peft_site_info *si,
                                 const char *a_name, const char *b_name, uint32_t r,
                                 uint32_t flags, uint32_t b_flags, const char *group,
                                 struct cp_lora *out) {
    return peft_lowrank_register(self->api, self->h, (int32_t)si->index, si->d_in, si->d_out, r,
                                 a_name, flags, b_name, flags | b_flags, group, &out->a, &out->b);
}

static peft_status cp_attach(peft_instance *self, uint32_t site) {
    const peft_host_api *api = self->api;
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    struct cp_site *cs = &self->sites[self->n_sites];
    cs->site = site;
    cs->d_in = si.d_in;
    cs->d_out = si.d_out;
    uint32_t n_experts = self->mode == CP_DYNAMIC ? self->n_tasks : 1;
    cs->expert = calloc(n_experts, sizeof *cs->expert);
    if (!cs->expert) return PEFT_E_NOMEM;
    self->n_sites++; /* from here on destroy frees cs->expert */
    char a_name[320], b_name[320];
    if (self->mode == CP_STATIC) {
        pair_names(self, si.name, PAIR_STATIC, a_name, b_name, sizeof a_name);
        st = register_lora(self, &si, a_name, b_name, self->r, PEFT_TENSOR_TRAINABLE,
                           PEFT_TENSOR_NEGATE, NULL, &cs->expert[0]);
    }
    for (uint32_t t = 0; self->mode == CP_DYNAMIC && t < self->n_tasks && st == PEFT_OK; t++) {
        pair_names(self, si.name, (int32_t)t, a_name, b_name, sizeof a_name);
        /* Frozen and kept: trained earlier. Trainable: trained here. Neither: an empty expert
         * nothing reads, left out of the adapter file. */
        uint32_t flags = inherited(self, t)       ? 0u
                         : expert_trains(self, t) ? PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY
                                                  : PEFT_TENSOR_NO_SAVE;
        st = register_lora(self, &si, a_name, b_name, self->r, flags, PEFT_TENSOR_NEGATE,
                           "experts", &cs->expert[t]);
    }
    if (self->mode == CP_DYNAMIC && st == PEFT_OK) {
        pair_names(self, si.name, PAIR_SELECTOR, a_name, b_name, sizeof a_name);
        st = register_lora(self, &si, a_name, b_name, self->sel_r,
                           selector_trains(self) ? PEFT_TENSOR_TRAINABLE : 0u, 0, "selector",
                           &cs->sel);
    }
    if (st == PEFT_OK) self->slot[site] = (int32_t)(self->n_sites - 1);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * Stage and task hooks: the start from init_from, the experts a stage trains.
 */

/* Copy the source stage's tensor `name` (numel floats) into out. */
static peft_status source_tensor(peft_instance *self, const char *name, float *out,
                                 uint64_t numel) {
    peft_status st = self->api->stage_tensor(self->h, self->init_from, name, out, numel);
    if (st != PEFT_OK)
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "init_from = '%s': cannot read %s (does "
                  "it target the same sites?)", self->init_from, name);
    return st;
}

/* Copy a pair of the site from the source stage, which names it the same way. */
static peft_status copy_site_lora(peft_instance *self, const struct cp_site *cs, int32_t pair) {
    const struct cp_lora *l = pair == PAIR_SELECTOR ? &cs->sel : &cs->expert[pair < 0 ? 0 : pair];
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->h, cs->site, &si);
    if (st != PEFT_OK) return st;
    char a_name[320], b_name[320];
    pair_names(self, si.name, pair, a_name, b_name, sizeof a_name);
    peft_tensor_view a, b;
    st = cp_view(self, l->a, &a);
    if (st == PEFT_OK) st = cp_view(self, l->b, &b);
    if (st == PEFT_OK) st = source_tensor(self, a_name, a.data, a.numel);
    if (st == PEFT_OK) st = source_tensor(self, b_name, b.data, b.numel);
    return st;
}

/* The selector head's rows of the tasks the source knew; the others keep this stage's fresh
 * initialisation (the head grows by one row per task, as the paper's). */
static peft_status copy_head(peft_instance *self) {
    peft_tensor_view w, b;
    peft_status st;
    if ((st = cp_view(self, self->head_w, &w)) != PEFT_OK ||
        (st = cp_view(self, self->head_b, &b)) != PEFT_OK)
        return st;
    uint64_t C = self->d_model;
    float *src = cp_scratch(self, w.numel + b.numel);
    if (!src) return PEFT_E_NOMEM;
    if ((st = source_tensor(self, head_w_name, src, w.numel)) != PEFT_OK ||
        (st = source_tensor(self, head_b_name, src + w.numel, b.numel)) != PEFT_OK)
        return st;
    /* the rows init_from's selector learnt: its trained tasks' and a selector stage's new ones */
    for (uint32_t t = 0; t < self->n_tasks; t++) {
        if (!inherited(self, t) && !selectable(self, t)) continue;
        memcpy(w.data + t * C, src + t * C, C * sizeof(float));
        b.data[t] = src[w.numel + t];
    }
    return PEFT_OK;
}

static peft_status cp_stage_begin(peft_instance *self) {
    peft_tensor_view cfg, experts;
    peft_status st;
    if ((st = cp_view(self, self->config_id, &cfg)) != PEFT_OK ||
        (st = cp_view(self, self->experts_id, &experts)) != PEFT_OK)
        return st;
    /* A set config means the tensors were loaded (a resumed stage): keep them. */
    if (cfg.data[0] != 0.0f) return PEFT_OK;
    const float c[CP_CONFIG_LEN] = {(float)(self->mode + 1), (float)self->r, self->alpha,
                                    (float)self->sel_r, (float)self->n_tasks};
    memcpy(cfg.data, c, sizeof c);
    if (!self->init_from[0]) return PEFT_OK;
    if (!self->src_experts) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "init_from = '%s': that stage has no "
                  "ConPET state to start from (no %s): name an earlier conpet stage",
                  self->init_from, config_name);
        return PEFT_E_CONFIG;
    }
    for (uint32_t i = 0; i < self->n_sites && st == PEFT_OK; i++) {
        const struct cp_site *cs = &self->sites[i];
        if (self->mode == CP_STATIC) {
            st = copy_site_lora(self, cs, PAIR_STATIC);
            continue;
        }
        st = copy_site_lora(self, cs, PAIR_SELECTOR);
        for (uint32_t t = 0; t < self->n_tasks && st == PEFT_OK; t++)
            if (inherited(self, t)) st = copy_site_lora(self, cs, (int32_t)t);
    }
    if (st == PEFT_OK && self->mode == CP_DYNAMIC) st = copy_head(self);
    for (uint32_t t = 0; st == PEFT_OK && t < self->n_tasks; t++)
        experts.data[t] = inherited(self, t) ? EXPERT_INHERITED : EXPERT_FRESH;
    /* An experts stage after a selector stage: the tasks it routed to stay selectable (their
     * experts train here, from task_begin on; replayed ones are in the batches too). */
    for (uint32_t t = 0; st == PEFT_OK && t < self->n_tasks; t++)
        if (selectable(self, t)) experts.data[t] = EXPERT_SELECTABLE;
    return st;
}

static peft_status cp_task_begin(peft_instance *self, int32_t task) {
    peft_tensor_view experts;
    peft_status st = cp_view(self, self->experts_id, &experts);
    if (st != PEFT_OK) return st;
    if (task < 0 || (uint32_t)task >= self->n_tasks) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "task %d is outside the run's %u tasks",
                  task, self->n_tasks);
        return PEFT_E_INVALID_ARG;
    }
    if (experts.data[task] == EXPERT_INHERITED) {
        /* A replayed task (or one trained again): its expert stays as the earlier stage left
         * it; its examples train the selector (dynamic) or the shared LoRA (static). */
        if (self->mode == CP_DYNAMIC)
            peft_logf(self->api, self->h, PEFT_LOG_DEBUG, "task '%s': expert from init_from = "
                      "'%s', frozen", self->api->task_name(self->h, task), self->init_from);
        return PEFT_OK;
    }
    int in_stage = !self->stage_trains || self->stage_trains[task];
    if (self->mode == CP_DYNAMIC && (!in_stage || inherited(self, (uint32_t)task))) {
        /* A replayed task that no earlier stage of the chain trained: nothing to route to. */
        peft_logf(self->api, self->h, PEFT_LOG_WARN, "task '%s' is in the batches, but neither "
                  "this stage nor init_from = '%s' trains it: its expert stays empty and the "
                  "selector does not choose it", self->api->task_name(self->h, task),
                  self->init_from);
        return PEFT_OK;
    }
    /* A selector stage routes to the new task without training its expert yet. */
    experts.data[task] = self->phase == CP_SELECTOR ? EXPERT_SELECTABLE : EXPERT_TRAINED_HERE;
    return PEFT_OK;
}

/* Entries of a LoRA pair. */
static uint64_t lora_numel(peft_instance *self, const struct cp_lora *l) {
    peft_tensor_view a, b;
    if (cp_view(self, l->a, &a) != PEFT_OK || cp_view(self, l->b, &b) != PEFT_OK) return 0;
    return a.numel + b.numel;
}

static peft_status cp_stage_end(peft_instance *self) {
    if (self->mode != CP_DYNAMIC) return PEFT_OK;
    peft_tensor_view ex, w, b;
    peft_status st;
    if ((st = cp_view(self, self->experts_id, &ex)) != PEFT_OK ||
        (st = cp_view(self, self->head_w, &w)) != PEFT_OK ||
        (st = cp_view(self, self->head_b, &b)) != PEFT_OK)
        return st;
    /* What trained (without peft.stage_tasks/1 the host counts every expert not trained by an
     * earlier stage as trainable, since the stage's tasks are not known when tensors are
     * registered; the others get no gradient and do not change). */
    uint64_t trained = 0, n_new = 0;
    for (uint32_t t = 0; t < self->n_tasks; t++) {
        if (ex.data[t] != EXPERT_TRAINED_HERE) continue;
        n_new++;
        for (uint32_t i = 0; i < self->n_sites; i++) trained += lora_numel(self, &self->sites[i].expert[t]);
    }
    /* the selector trained when its pass ran in training and its tensors were trainable */
    int sel_trained = self->sel_seen > 0 && selector_trains(self);
    if (sel_trained) {
        trained += w.numel + b.numel;
        for (uint32_t i = 0; i < self->n_sites; i++) trained += lora_numel(self, &self->sites[i].sel);
    }
    if (self->sel_seen > 0) {
        peft_logf(self->api, self->h, PEFT_LOG_INFO,
                  "selector: %.1f%% of %llu training examples routed to their own task",
                  100.0 * (double)self->sel_right / (double)self->sel_seen,
                  (unsigned long long)self->sel_seen);
    }
    peft_logf(self->api, self->h, PEFT_LOG_INFO, "trained: %llu entries (%llu new expert%s%s); "
              "the other experts did not change", (unsigned long long)trained,
              (unsigned long long)n_new, n_new == 1 ? "" : "s",
              sel_trained ? " and the selector" : "");
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Arithmetic.
 */

static peft_status cp_delta_weight(peft_instance *self, uint32_t site, float scale, float *out) {
    if (self->mode == CP_DYNAMIC) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "mode = dynamic has no single weight "
                  "change: each example uses the experts its selector picks");
        return PEFT_E_UNSUPPORTED;
    }
    int32_t at = site < self->n_model_sites ? self->slot[site] : -1;
    if (at < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    const struct cp_site *cs = &self->sites[at];
    peft_tensor_view A, B;
    peft_status st;
    if ((st = cp_view(self, cs->expert[0].a, &A)) != PEFT_OK ||
        (st = cp_view(self, cs->expert[0].b, &B)) != PEFT_OK)
        return st;
    /* out (d_out, d_in) += scale * s * B (d_out, r) A (r, d_in) */
    peft_lowrank_delta(self->api, self->h, A.data, B.data, self->r, scale * self->s, out,
                       cs->d_in, cs->d_out);
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * The descriptor.
 */

static const peft_param_spec cp_params[] = {
    {"mode", PEFT_PARAM_CHOICE, "static", "static|dynamic",
     "static: one LoRA continued task after task; dynamic: an expert per task and a selector"},
    {"r", PEFT_PARAM_INT, "4", NULL, "rank of the LoRA (static) or of each expert (dynamic)"},
    {"lora_alpha", PEFT_PARAM_FLOAT, "1", NULL,
     "scale numerator: s = lora_alpha / r (1 is loralib's default, as in ConPET's code)"},
    {"target_modules", PEFT_PARAM_LIST, "q_proj k_proj", NULL,
     "sites to adapt: kinds (q_proj ...), name suffixes, or all-linear"},
    {"init_from", PEFT_PARAM_STAGE, "", NULL,
     "an earlier conpet stage of the same mode to continue: its LoRA (static), or its experts, "
     "which stay frozen, and selector (dynamic)"},
    {"top_k", PEFT_PARAM_INT, "1", NULL, "dynamic: experts per example, chosen by the selector"},
    {"teacher_forcing", PEFT_PARAM_BOOL, "true", NULL,
     "dynamic, training: an example's own task replaces the last of its top_k experts when "
     "the selector missed it"},
    {"selector_r", PEFT_PARAM_INT, "4", NULL, "dynamic: rank of the selector's own LoRA"},
    {"phase", PEFT_PARAM_CHOICE, "joint", "joint|selector|experts",
     "dynamic: what the stage trains: the selector and the new experts together (joint), the "
     "selector alone with every expert frozen (selector: the published first step of a task, "
     "keep its best evaluation with early_stopping), or the new experts with the selector "
     "frozen (experts: the second step, init_from the selector stage)"},
};

static const peft_method_vtable cp_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = cp_create,
    .destroy = cp_destroy,
    .attach = cp_attach,
    .stage_begin = cp_stage_begin,
    .task_begin = cp_task_begin,
    .batch_begin = cp_batch_begin,
    .act_floats = cp_act_floats,
    .forward = cp_forward,
    .backward = cp_backward,
    .hidden_forward = cp_hidden_forward,
    .hidden_backward = cp_hidden_backward,
    .stage_end = cp_stage_end,
    .delta_weight = cp_delta_weight,
};

static const char *const cp_features[] = {PEFT_FEATURE_TASK_ROUTED, PEFT_FEATURE_WEIGHT_ON_REQUEST, NULL};

static const peft_method_desc cp_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "conpet",
    .name = "ConPET",
    .version = "1.0.0",
    .description = "continual PET over class-incremental tasks: one LoRA continued with replay "
                   "(static) or an expert per task picked by a selector (dynamic)",
    .features = cp_features,
    .params = cp_params,
    .n_params = sizeof cp_params / sizeof cp_params[0],
    .vt = &cp_vt,
    .license = "MIT",
    .url = "https://arxiv.org/abs/2309.14763",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &cp_desc);
