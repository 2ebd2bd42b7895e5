/*
 * poly.c: Polytropon (Ponti et al. 2022) and Multi-Head Routing, a.k.a. Poly-S (Caccia et al.
 * 2023), as a plugin ("poly"): an inventory of K LoRA skills at every site, mixed per task by
 * learned routing logits (README "Poly, MHR, Poly-μ, MHR-z"). The key `variant` chooses:
 *   poly     one head (h = 1): the task's adapter is a weighted average of the skills;
 *   mhr      h heads: head q owns input rows [q d_in/h, (q+1) d_in/h) of A and output columns
 *            [q d_out/h, (q+1) d_out/h) of B, each head routed on its own;
 *   mhr-z    few-shot: the skills of `init_from` frozen, only new tasks' routing rows train;
 *   poly-mu  few-shot: the skills of `init_from` averaged uniformly into ONE LoRA
 *            (A = mean_k A_k, B = mean_k B_k), which then trains as a plain LoRA.
 * With init_from, poly and mhr start from that stage's skills and routing and train the skills
 * and the rows of tasks new to the chain (tasks init_from did not train; only the stage's own
 * tasks get gradients, and the other rows stay bit-identical); without it, everything starts
 * fresh. Choices (README "Poly, MHR, Poly-μ, MHR-z"): PEFT's per-block A bound; sum normalisation; lora_alpha 1
 * by default (s = 1/r, as PEFT's Poly and mttl).
 * This file holds the keys, creation and the chaining of stages; the routing maths (gate,
 * mixing, site hooks, ΔW) are in poly_route.c.
 *
 * Tensors per matched site (W: (d_out, d_in)), in HF PEFT's Poly layout:
 *   A "base_model.model.<site>.poly_lora_A"  (h, K, d_in/h, r)  U(+-1/sqrt(d_in/h)), per block
 *   B "base_model.model.<site>.poly_lora_B"  (h, K, r, d_out/h) zero, flagged NEGATE
 *   Z "base_model.model.<site>.poly_router.module_logits" (n_tasks, h K)  U(+-1e-3), its own
 *     learning rate (routing_lr, lr group "routing"), no weight decay; one row per task of the
 *     run (api->task_count). With init_from, Z is masked to the rows of tasks new to the chain.
 * poly-mu registers LoRA's tensors instead: lora_A.weight (r, d_in), lora_B.weight (d_out, r).
 * Two model-level tensors, saved, never trained:
 *   "poly.config"    (5) variant, K, h, r, lora_alpha: what a later stage checks and reads;
 *   "poly.task_rows" (n_tasks) per task 0 = fresh row, 1 = trained by an earlier stage of the
 *     chain (copied from init_from), 2 = trained by this stage (set in task_begin).
 *
 * Forward of a row of task t, with z = Z[t] (h, K):
 *   p = sigmoid((z + log u - log(1 - u)) / temperature), u ~ U(0, 1) per example, in training
 *       when gumbel is on (relaxed Bernoulli); p = sigmoid(z) otherwise (evaluation);
 *   w[q,k] = p[q,k] / (sum_k' p[q,k'] + 1e-12);
 *   A_t (d_in, r) = vstack_q sum_k w[q,k] A[q,k];  B_t (r, d_out) = hstack_q sum_k w[q,k] B[q,k];
 *   y += s (x A_t) B_t,  s = lora_alpha / r.
 * Rows are taken in segments that share a task (and, with Gumbel noise, an example): each
 * segment forms its A_t, B_t once and goes through sgemm.
 * Backward per segment (§2.3), with u = x A_t, g = dy B_t^T, GA = s x^T g, GB = s u^T dy:
 *   dx += s g A_t^T;  dA[q,k] += w[q,k] GA[head q];  dB[q,k] += w[q,k] GB[head q];
 *   gw[q,k] = <GA[head q], A[q,k]> + <GB[head q], B[q,k]>;
 *   dp[q,j] = gw[q,j] / S_q - sum_k gw[q,k] p[q,k] / S_q^2  (S_q = sum_k p[q,k] + 1e-12);
 *   dZ[t] += dp p (1 - p) / temperature (the noise held fixed; / 1 without noise).
 * Activation cache per site and pass: [0] the temperature used (0 = no noise), then u
 * (n_rows, r), then p (h, K) per segment (at most n_rows segments). The gate p already holds
 * the noise, so backward needs nothing else of it.
 *
 * delta_weight. poly-mu: s B A, exact. The others: a task's adapter depends on its routing, so
 * ΔW exists per task; it is given (exact, with evaluation routing) when this stage trained
 * exactly one task, and refused with the reason otherwise. Negation flips every B (NEGATE),
 * which negates every task's adapter.
 */
#include <math.h>
#include <stdlib.h>

#include "peft/peft_site_weight.h"
#include "peft/peft_stage_keys.h"
#include "peft/peft_stage_tasks.h"
#include "poly.h"

static const char *const variant_names[] = {"poly", "mhr", "poly-mu", "mhr-z"};

#define CONFIG_LEN 5 /* poly.config: variant, K, h, r, lora_alpha */

/* ------------------------------------------------------------------------------------------
 * Creation: keys, the source stage, site tensors.
 */

static const char *const config_name = "poly.config";     /* (5) variant, K, h, r, alpha */
static const char *const rows_name = "poly.task_rows";    /* (n_tasks) ROW_* per task */

/* A key of init_from's stage as a number (peft.stage_keys/1); def when it cannot be read. */
static double source_number(const peft_stage_keys_api *sk, struct peft_instance *self,
                            const char *key, double def) {
    char v[64];
    return sk->stage_value(self->h, self->init_from, key, v, sizeof v) == PEFT_OK ? strtod(v, NULL)
                                                                                : def;
}

/* The same checks as read_source, from init_from's keys, which the host gives before any stage
 * has trained: a wrong chain is refused when the run file is checked, not when it is reached. */
static peft_status check_source_keys(struct peft_instance *self, int64_t n_splits) {
    const peft_host_api *api = self->api;
    const peft_stage_keys_api *sk = api->get_extension(self->h, PEFT_STAGE_KEYS_EXTENSION);
    char method[64], variant[32];
    if (!sk || !PEFT_HAS_FIELD(sk, peft_stage_keys_api, stage_value) ||
        sk->stage_value(self->h, self->init_from, "method", method, sizeof method) != PEFT_OK)
        return PEFT_OK; /* no run, or no such stage (the host reports that) */
    if (strcmp(method, "poly") != 0) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s' is a stage of method '%s'; "
                  "it must be a poly stage", self->init_from, method);
        return PEFT_E_CONFIG;
    }
    if (sk->stage_value(self->h, self->init_from, "variant", variant, sizeof variant) == PEFT_OK &&
        strcmp(variant, "poly-mu") == 0) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s': that stage is poly-mu (one "
                  "LoRA, no skills); start from the stage that trained the skills",
                  self->init_from);
        return PEFT_E_CONFIG;
    }
    uint32_t K = (uint32_t)source_number(sk, self, "n_skills", self->K);
    uint32_t r = (uint32_t)source_number(sk, self, "r", self->r);
    float alpha = (float)source_number(sk, self, "lora_alpha", self->alpha);
    uint32_t splits = (uint32_t)source_number(sk, self, "n_splits", 0);
    uint32_t heads = splits ? splits : strcmp(variant, "mhr") == 0 ? 4u : 1u;
    if (K != self->K || r != self->r) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "n_skills = %u and r = %u must be those of "
                  "init_from = '%s': n_skills = %u, r = %u", self->K, self->r, self->init_from,
                  K, r);
        return PEFT_E_CONFIG;
    }
    if (alpha != self->alpha) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "lora_alpha = %g, but init_from = '%s' has "
                  "lora_alpha = %g (the skills were trained at that scale)",
                  (double)self->alpha, self->init_from, (double)alpha);
        return PEFT_E_CONFIG;
    }
    if (n_splits != 0 && (uint32_t)n_splits != heads) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "n_splits = %lld, but init_from = '%s' has "
                  "n_splits = %u (leave it 0 to take the source's)", (long long)n_splits,
                  self->init_from, heads);
        return PEFT_E_CONFIG;
    }
    return PEFT_OK;
}

/* Check this stage's structure against init_from's poly.config, take its heads and the rows it
 * trained (src_rows). The host also creates every stage's instance before the run starts, to
 * check its keys, when no stage has finished: then the source cannot be read and src_rows
 * stays NULL; stage_begin, which only a running stage reaches, refuses that. */
static peft_status read_source(struct peft_instance *self, int64_t n_splits) {
    const peft_host_api *api = self->api;
    float cfg[CONFIG_LEN];
    if (api->stage_tensor(self->h, self->init_from, config_name, cfg, CONFIG_LEN) != PEFT_OK)
        return PEFT_OK;
    int src_variant = (int)cfg[0];
    uint32_t K = (uint32_t)cfg[1], heads = (uint32_t)cfg[2], r = (uint32_t)cfg[3];
    if (src_variant == POLY_MU) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s': that stage is poly-mu (one "
                  "LoRA, no skills); start from the stage that trained the skills",
                  self->init_from);
        return PEFT_E_CONFIG;
    }
    if (K != self->K || r != self->r) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "n_skills = %u and r = %u must be those of "
                  "init_from = '%s': n_skills = %u, r = %u", self->K, self->r, self->init_from,
                  K, r);
        return PEFT_E_CONFIG;
    }
    if (cfg[4] != self->alpha) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "lora_alpha = %g, but init_from = '%s' has "
                  "lora_alpha = %g (the skills were trained at that scale)",
                  (double)self->alpha, self->init_from, (double)cfg[4]);
        return PEFT_E_CONFIG;
    }
    if (n_splits != 0 && (uint32_t)n_splits != heads) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "n_splits = %lld, but init_from = '%s' has "
                  "n_splits = %u (leave it 0 to take the source's)", (long long)n_splits,
                  self->init_from, heads);
        return PEFT_E_CONFIG;
    }
    self->heads = heads;
    self->src_rows = malloc(self->n_tasks * sizeof *self->src_rows);
    if (!self->src_rows) return PEFT_E_NOMEM;
    if (api->stage_tensor(self->h, self->init_from, rows_name, self->src_rows,
                          self->n_tasks) != PEFT_OK) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "init_from = '%s': cannot read its %s for the "
                  "run's %u tasks", self->init_from, rows_name, self->n_tasks);
        return PEFT_E_CONFIG;
    }
    return PEFT_OK;
}

/* Is task t one this stage trains? Every task when the host cannot say (peft.stage_tasks/1). */
static int stage_trains(struct peft_instance *self, uint32_t t) {
    const peft_stage_tasks_api *st = self->api->get_extension(self->h, PEFT_STAGE_TASKS_EXTENSION);
    const int32_t *ids;
    uint32_t n;
    if (!st || st->train_tasks(self->h, &ids, &n) != PEFT_OK) return 1;
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == (int32_t)t) return 1;
    return 0;
}

/* Where each task's routing row lies in Z's gradient: every row without init_from; with it,
 * the rows of this stage's tasks that are new to the chain, in task order (the mask set in
 * attach), so only they count as trainable. */
static peft_status plan_rows(struct peft_instance *self) {
    self->row_off = malloc(self->n_tasks * sizeof *self->row_off);
    if (!self->row_off) return PEFT_E_NOMEM;
    int32_t next = 0, hk = (int32_t)(self->heads * self->K);
    for (uint32_t t = 0; t < self->n_tasks; t++) {
        int trains = !self->src_rows || (self->src_rows[t] == ROW_FRESH && stage_trains(self, t));
        self->row_off[t] = trains ? next : -1;
        next += trains ? hk : 0;
    }
    return PEFT_OK;
}

static peft_status register_model_tensors(struct peft_instance *self) {
    peft_tensor_desc c = {
        .struct_size = sizeof c, .name = config_name, .site = -1, .ndim = 1,
        .shape = {CONFIG_LEN, 0, 0, 0}, .init = PEFT_INIT_NONE, /* filled in stage_begin */
    };
    peft_status st = self->api->tensor_register(self->h, &c, &self->config_id);
    if (st != PEFT_OK) return st;
    peft_tensor_desc t = {
        .struct_size = sizeof t, .name = rows_name, .site = -1, .ndim = 1,
        .shape = {self->n_tasks, 0, 0, 0}, .init = PEFT_INIT_ZERO,
    };
    return self->api->tensor_register(self->h, &t, &self->rows_id);
}

static void poly_destroy(peft_instance *self) {
    free(self->sites);
    free(self->slot);
    free(self->src_rows);
    free(self->row_off);
    peft_scratch_free(&self->work);
    free(self);
}

static peft_status poly_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    const char *v = peft_kv_get(cfg, n_cfg, "variant");
    int variant = -1;
    for (int i = 0; i < 4 && v; i++)
        if (strcmp(v, variant_names[i]) == 0) variant = i;
    int64_t K = peft_kv_int(cfg, n_cfg, "n_skills", 8), r = peft_kv_int(cfg, n_cfg, "r", 4);
    int64_t n_splits = peft_kv_int(cfg, n_cfg, "n_splits", 0);
    double alpha = peft_kv_float(cfg, n_cfg, "lora_alpha", 1.0);
    double tau = peft_kv_float(cfg, n_cfg, "temperature", 1.0);
    double routing_lr = peft_kv_float(cfg, n_cfg, "routing_lr", 0.1);
    const char *from = peft_kv_get(cfg, n_cfg, "init_from");
    from = from ? from : "";
    const char *bad = NULL;
    if (variant < 0) bad = "variant must be poly, mhr, poly-mu or mhr-z";
    else if (K < 1 || K > 4096) bad = "n_skills must be in 1..4096";
    else if (r < 1 || r > 65536) bad = "r must be in 1..65536";
    else if (n_splits < 0 || n_splits > 65536) bad = "n_splits must be in 0..65536";
    else if (!(tau > 0.0) || !isfinite(tau)) bad = "temperature must be > 0";
    else if (!(routing_lr >= 0.0) || !isfinite(routing_lr)) bad = "routing_lr must be >= 0";
    else if (!(alpha > 0.0) || !isfinite(alpha)) bad = "lora_alpha must be > 0";
    else if (strlen(from) >= sizeof(((struct peft_instance *)0)->init_from))
        bad = "init_from is too long";
    if (bad) {
        peft_logf(api, h, PEFT_LOG_ERROR, "%s (variant %s, n_skills %lld, r %lld, n_splits "
                  "%lld, temperature %g, routing_lr %g, lora_alpha %g)", bad, v ? v : "?",
                  (long long)K, (long long)r, (long long)n_splits, tau, routing_lr, alpha);
        return PEFT_E_CONFIG;
    }
    if (!from[0] && (variant == POLY_MU || variant == MHR_Z)) {
        peft_logf(api, h, PEFT_LOG_ERROR, "variant = %s adapts trained skills: set init_from "
                  "to the stage that trained them", variant_names[variant]);
        return PEFT_E_CONFIG;
    }
    if (!from[0] && variant == POLY && n_splits > 1) {
        peft_logf(api, h, PEFT_LOG_ERROR, "variant = poly has one head, but n_splits = %lld: "
                  "use variant = mhr for several heads", (long long)n_splits);
        return PEFT_E_CONFIG;
    }
    uint32_t n_tasks = api->task_count(h);
    if (n_tasks == 0) {
        peft_logf(api, h, PEFT_LOG_ERROR, "the run has no tasks to route");
        return PEFT_E_CONFIG;
    }
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;

    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api;
    self->h = h;
    self->variant = variant;
    self->K = (uint32_t)K;
    self->r = (uint32_t)r;
    self->n_tasks = n_tasks;
    self->alpha = (float)alpha;
    self->s = (float)(alpha / (double)r);
    self->temperature = (float)tau;
    self->routing_lr = (float)routing_lr;
    self->gumbel = peft_kv_bool(cfg, n_cfg, "gumbel", 1);
    strcpy(self->init_from, from);
    /* with init_from, read_source takes the source's heads */
    self->heads = n_splits ? (uint32_t)n_splits : (variant == MHR && !from[0]) ? 4u : 1u;
    st = peft_site_table_new(mi.n_sites, sizeof *self->sites, (void **)&self->sites, &self->slot);
    if (st == PEFT_OK && from[0]) st = check_source_keys(self, n_splits);
    if (st == PEFT_OK && from[0]) st = read_source(self, n_splits);
    if (st == PEFT_OK) st = plan_rows(self);
    if (st == PEFT_OK) st = register_model_tensors(self);
    if (st != PEFT_OK) {
        poly_destroy(self);
        return st;
    }
    *out = self;
    return PEFT_OK;
}

static peft_status register_site(struct peft_instance *self, struct poly_site *ps,
                                 const char *site_name, const char *what, peft_tensor_id *id,
                                 const uint64_t *shape, uint32_t ndim, int32_t init,
                                 float bound, uint32_t flags) {
    char name[224];
    snprintf(name, sizeof name, "base_model.model.%s.%s", site_name, what);
    peft_tensor_desc d = {
        .struct_size = sizeof d, .name = name, .site = (int32_t)ps->site, .ndim = ndim,
        .init = init, .init_a = -bound, .init_b = bound, .flags = flags,
    };
    for (uint32_t i = 0; i < ndim; i++) d.shape[i] = shape[i];
    return self->api->tensor_register(self->h, &d, id);
}

/* Z's trainable entries with init_from: the rows of tasks new to the chain. */
static peft_status mask_routing(struct peft_instance *self, peft_tensor_id z) {
    uint64_t hk = (uint64_t)self->heads * self->K, n = 0;
    uint64_t *index = malloc((self->n_tasks * hk + 1) * sizeof *index);
    if (!index) return PEFT_E_NOMEM;
    for (uint32_t t = 0; t < self->n_tasks; t++)
        if (self->row_off[t] >= 0)
            for (uint64_t j = 0; j < hk; j++) index[n++] = t * hk + j;
    peft_status st = self->api->tensor_set_mask(self->h, z, index, n);
    free(index);
    return st;
}

static peft_status poly_attach(peft_instance *self, uint32_t site) {
    const peft_host_api *api = self->api;
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    uint32_t hd = self->heads;
    if (si.d_in % hd != 0 || si.d_out % hd != 0) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "n_splits = %u heads must divide both "
                  "dimensions of every site, but %s has d_in = %u and d_out = %u", hd, si.name,
                  si.d_in, si.d_out);
        return PEFT_E_CONFIG;
    }
    struct poly_site *ps = &self->sites[self->n_sites];
    ps->site = site;
    ps->d_in = si.d_in;
    ps->d_out = si.d_out;
    uint32_t r = self->r, K = self->K;
    if (self->variant == POLY_MU) { /* one LoRA, filled in stage_begin from the skills */
        const uint64_t sa[2] = {r, si.d_in}, sb[2] = {si.d_out, r};
        st = register_site(self, ps, si.name, "lora_A.weight", &ps->a, sa, 2, PEFT_INIT_NONE,
                           0.0f, PEFT_TENSOR_TRAINABLE);
        if (st == PEFT_OK)
            st = register_site(self, ps, si.name, "lora_B.weight", &ps->b, sb, 2,
                               PEFT_INIT_NONE, 0.0f, PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NEGATE);
    } else {
        uint32_t skills = self->variant == MHR_Z ? 0u : PEFT_TENSOR_TRAINABLE;
        const uint64_t sa[4] = {hd, K, si.d_in / hd, r}, sb[4] = {hd, K, r, si.d_out / hd};
        /* PEFT's PolyRouter: module_logits (n_tasks, n_splits * n_skills), head-major */
        const uint64_t sz[2] = {self->n_tasks, (uint64_t)hd * K};
        /* kaiming_uniform(a = sqrt 5) on each (r, d_in/h) block, as PEFT's Poly */
        float bound = 1.0f / sqrtf((float)(si.d_in / hd));
        st = register_site(self, ps, si.name, "poly_lora_A", &ps->a, sa, 4, PEFT_INIT_UNIFORM,
                           bound, skills);
        if (st == PEFT_OK)
            st = register_site(self, ps, si.name, "poly_lora_B", &ps->b, sb, 4, PEFT_INIT_ZERO,
                               0.0f, skills | PEFT_TENSOR_NEGATE);
        if (st == PEFT_OK) {
            char name[224];
            snprintf(name, sizeof name, "base_model.model.%s.poly_router.module_logits",
                     si.name);
            peft_tensor_desc d = {
                .struct_size = sizeof d, .name = name, .site = (int32_t)site, .ndim = 2,
                .shape = {sz[0], sz[1], 0, 0}, .init = PEFT_INIT_UNIFORM,
                .init_a = -1e-3f, .init_b = 1e-3f,
                /* no decay: rows of tasks absent from a stage stay exactly as they are */
                .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_NO_DECAY,
                .lr = self->routing_lr, .lr_group = "routing",
            };
            st = api->tensor_register(self->h, &d, &ps->z);
        }
        if (st == PEFT_OK && self->src_rows) st = mask_routing(self, ps->z);
    }
    if (st != PEFT_OK) return st;
    self->slot[site] = (int32_t)self->n_sites++;
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Stage and task hooks: the start from init_from, the rows a stage trains.
 */

/* Read a tensor of the source stage by this stage's name for it. */
static peft_status source_tensor(peft_instance *self, const struct poly_site *ps,
                                 const char *what, float *out, uint64_t numel) {
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->h, ps->site, &si);
    if (st != PEFT_OK) return st;
    char name[224];
    snprintf(name, sizeof name, "base_model.model.%s.%s", si.name, what);
    st = self->api->stage_tensor(self->h, self->init_from, name, out, numel);
    if (st != PEFT_OK)
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "init_from = '%s': cannot read %s (does "
                  "it target the same sites?)", self->init_from, name);
    return st;
}

/* poly-mu: A (r, d_in) = (mean_k vstack_q A[q,k])^T, B (d_out, r) = (mean_k hstack_q B[q,k])^T. */
static peft_status collapse_skills(peft_instance *self, const struct poly_site *ps) {
    uint64_t na = (uint64_t)self->K * ps->d_in * self->r;
    uint64_t nb = (uint64_t)self->K * self->r * ps->d_out;
    uint64_t nt = (uint64_t)ps->d_in * self->r, no = (uint64_t)self->r * ps->d_out;
    float *buf = poly_scratch(self, na + nb + nt + 2 * no + self->heads * self->K);
    if (!buf) return PEFT_E_NOMEM;
    float *A = buf, *B = buf + na, *At = B + nb, *Bt = At + nt, *Bh = Bt + no, *w = Bh + no;
    peft_status st = source_tensor(self, ps, "poly_lora_A", A, na);
    if (st == PEFT_OK) st = source_tensor(self, ps, "poly_lora_B", B, nb);
    if (st != PEFT_OK) return st;
    for (uint32_t i = 0; i < self->heads * self->K; i++) w[i] = 1.0f / (float)self->K;
    poly_mix(self, ps, A, B, w, At, Bt, Bh);
    peft_tensor_view a, b;
    if ((st = poly_view(self, ps->a, &a)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &b)) != PEFT_OK)
        return st;
    for (uint32_t j = 0; j < self->r; j++) {
        for (uint32_t i = 0; i < ps->d_in; i++)
            a.data[(uint64_t)j * ps->d_in + i] = At[(uint64_t)i * self->r + j];
        for (uint32_t o = 0; o < ps->d_out; o++)
            b.data[(uint64_t)o * self->r + j] = Bt[(uint64_t)j * ps->d_out + o];
    }
    return PEFT_OK;
}

/* poly, mhr, mhr-z: the skills as they are, and the routing rows the source trained (the
 * rows of new tasks keep this stage's fresh initialisation). */
static peft_status copy_skills(peft_instance *self, const struct poly_site *ps) {
    peft_tensor_view a, b, z;
    peft_status st;
    if ((st = poly_view(self, ps->a, &a)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &b)) != PEFT_OK ||
        (st = poly_view(self, ps->z, &z)) != PEFT_OK)
        return st;
    if ((st = source_tensor(self, ps, "poly_lora_A", a.data, a.numel)) != PEFT_OK ||
        (st = source_tensor(self, ps, "poly_lora_B", b.data, b.numel)) != PEFT_OK)
        return st;
    float *zs = poly_scratch(self, z.numel);
    if (!zs) return PEFT_E_NOMEM;
    if ((st = source_tensor(self, ps, "poly_router.module_logits", zs, z.numel)) != PEFT_OK)
        return st;
    uint64_t hk = (uint64_t)self->heads * self->K;
    for (uint32_t t = 0; t < self->n_tasks; t++)
        if (self->src_rows[t] != ROW_FRESH)
            memcpy(z.data + t * hk, zs + t * hk, hk * sizeof(float));
    return PEFT_OK;
}

static peft_status poly_stage_begin(peft_instance *self) {
    peft_tensor_view cfg, rows;
    peft_status st;
    if ((st = poly_view(self, self->config_id, &cfg)) != PEFT_OK ||
        (st = poly_view(self, self->rows_id, &rows)) != PEFT_OK)
        return st;
    const float c[CONFIG_LEN] = {(float)self->variant, (float)self->K, (float)self->heads,
                                 (float)self->r, self->alpha};
    memcpy(cfg.data, c, sizeof c);
    /* Rows already marked mean the tensors were loaded (a resumed stage): keep them. */
    int loaded = 0;
    for (uint32_t t = 0; t < self->n_tasks; t++) loaded |= rows.data[t] != ROW_FRESH;
    if (!self->init_from[0] || loaded) return PEFT_OK;
    if (!self->src_rows) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "init_from = '%s': that stage has no "
                  "poly skills to start from (no %s)", self->init_from, config_name);
        return PEFT_E_CONFIG;
    }
    for (uint32_t i = 0; i < self->n_sites && st == PEFT_OK; i++)
        st = self->variant == POLY_MU ? collapse_skills(self, &self->sites[i])
                                      : copy_skills(self, &self->sites[i]);
    for (uint32_t t = 0; st == PEFT_OK && t < self->n_tasks; t++)
        rows.data[t] = self->src_rows[t] != ROW_FRESH ? ROW_INHERITED : ROW_FRESH;
    return st;
}

static peft_status poly_task_begin(peft_instance *self, int32_t task) {
    peft_tensor_view rows;
    peft_status st = poly_view(self, self->rows_id, &rows);
    if (st != PEFT_OK) return st;
    if (task < 0 || (uint32_t)task >= self->n_tasks) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "task %d is outside the run's %u tasks",
                  task, self->n_tasks);
        return PEFT_E_INVALID_ARG;
    }
    if (poly_routed(self) && self->row_off[task] < 0) {
        const char *name = self->api->task_name(self->h, task);
        int fatal = self->variant == MHR_Z; /* it would train nothing for this task */
        peft_logf(self->api, self->h, fatal ? PEFT_LOG_ERROR : PEFT_LOG_WARN,
                  "task '%s' was trained by init_from = '%s': its routing row stays frozen "
                  "(only rows of tasks new to the chain train)%s", name ? name : "?",
                  self->init_from, fatal ? ", so mhr-z has nothing to train for it" : "");
        if (fatal) return PEFT_E_CONFIG;
    }
    rows.data[task] = ROW_TRAINED_HERE;
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Keys and the descriptor.
 */

static const peft_param_spec poly_params[] = {
    {"variant", PEFT_PARAM_CHOICE, "poly", "poly|mhr|poly-mu|mhr-z",
     "poly (one head), mhr (Poly-S: n_splits heads), and for few-shot stages with init_from: "
     "mhr-z (only new routing rows train), poly-mu (skills averaged into one LoRA)"},
    {"n_skills", PEFT_PARAM_INT, "8", NULL, "K: LoRA skills in each site's inventory"},
    {"n_splits", PEFT_PARAM_INT, "0", NULL,
     "heads h, each routed on its own; 0: 1 for poly, 4 for mhr, init_from's when it is set"},
    {"r", PEFT_PARAM_INT, "4", NULL, "rank of every skill"},
    {"lora_alpha", PEFT_PARAM_FLOAT, "1", NULL,
     "scale numerator: s = lora_alpha / r (1: PEFT's Poly and mttl, which divide by r)"},
    {"target_modules", PEFT_PARAM_LIST, "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj",
     NULL, "sites to adapt: kinds (q_proj ...), name suffixes, or all-linear"},
    {"gumbel", PEFT_PARAM_BOOL, "true", NULL,
     "Gumbel-sigmoid (relaxed Bernoulli) routing in training; plain sigmoid when off and in "
     "evaluation"},
    {"temperature", PEFT_PARAM_FLOAT, "1.0", NULL, "temperature of the Gumbel-sigmoid"},
    {"routing_lr", PEFT_PARAM_FLOAT, "0.1", NULL,
     "learning rate of the routing logits (0: the stage's lr)"},
    {"init_from", PEFT_PARAM_STAGE, "", NULL,
     "an earlier poly stage whose skills and routing rows this stage starts from"},
};

static const peft_method_vtable poly_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = poly_create,
    .destroy = poly_destroy,
    .attach = poly_attach,
    .stage_begin = poly_stage_begin,
    .task_begin = poly_task_begin,
    .act_floats = poly_act_floats,
    .forward = poly_forward,
    .backward = poly_backward,
    .delta_weight = poly_delta_weight,
};

static const char *const poly_features[] = {PEFT_FEATURE_TASK_ROUTED, PEFT_FEATURE_HF_PEFT,
                                           PEFT_FEATURE_WEIGHT_ON_REQUEST, NULL};

static const peft_method_desc poly_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "poly",
    .name = "Polytropon / MHR (Poly-S), Poly-mu, MHR-z",
    .version = "1.0.0",
    .description = "an inventory of LoRA skills per site, mixed per task by learned routing",
    .features = poly_features,
    .params = poly_params,
    .n_params = sizeof poly_params / sizeof poly_params[0],
    .vt = &poly_vt,
    .license = "MIT",
    .url = "https://arxiv.org/abs/2202.13914",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &poly_desc);
