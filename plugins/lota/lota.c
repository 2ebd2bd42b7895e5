/*
 * lota.c: Lottery Ticket Adaptation (Panda et al. 2024) as a plugin ("lota"), with LoTTO's
 * disjoint masks for sequential tasks.
 *
 * Contract. Every matched site's weight W (d_out, d_in) is registered as a trainable
 * ALIAS_BASE tensor under its HF name ("model.layers.0.self_attn.q_proj.weight"), as `full`
 * does: the tensor is the live weight and the host's model computes its gradient. The plugin
 * has no forward or backward hook; it only chooses the mask, in three phases:
 *   1. calibration: a task vector delta = w_calibrated - w_start, from a finished stage
 *      (`calibrate_from`, e.g. a `full` stage started from the same weights, via stage_delta)
 *      or from the stage's own first `calibration_steps` dense steps (read in step_end as
 *      live - start through the host extension peft.tensor_start/1);
 *   2. mask: ONE global top-k of |delta| over all targeted weights together,
 *      k = floor((1 - sparsity) N) (of the decimal: sparsity 0.9 of 3840 keeps 384),
 *      tau = the k-th largest, trainable where |delta| >= tau (ties kept, so the count may
 *      exceed k). Entries of earlier masks (`exclude` files, `exclude_stages`) are never
 *      candidates: LoTTO's disjoint masks (README "LoTA and LoTTO"), so earlier tasks'
 *      deltas are never overwritten;
 *   3. sparse adaptation from the start weights: after its own calibration the plugin puts
 *      every weight back to its start value, bit for bit, before setting the masks; the host
 *      then trains the masked entries only (compact gradients from a sampled product, compact
 *      AdamW state restarted at the mask; weight decay never reaches frozen entries).
 * With `random_mask` the mask is k entries drawn uniformly from the host's seeded stream
 * instead (the official code's ablation); no calibration runs.
 *
 * The threshold is found without a copy of all |delta|: a radix select on the float bits of
 * |delta| (non-negative floats order as their bit patterns): a histogram of the top 16 bits,
 * then of the low 16 bits inside the bin that holds the k-th largest. Each pass reads the
 * task vector site by site again, so extra memory is one site's weight.
 *
 * Outputs. The host saves a masked aliased tensor as its sparse task vector (NAME.sparse_index
 * I64, NAME.sparse_value F32, NAME.sparse_delta F32; see host/methods/method_file.c), which `exclude`
 * reads back (through peft.files/1). delta_weight and negate are left to the host, which
 * computes them from live - start. The merged model is the host's `save_model`.
 *
 * A stage's `steps` counts the calibration steps too; the optimizer state restarts when the
 * mask is set (see tensor_set_mask in peft_plugin.h), the learning-rate schedule does not.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "peft/peft_files.h"
#include "peft/peft_plugin.h"
#include "peft/peft_stage_keys.h"
#include "peft/peft_tensor_start.h"

struct lota_site {
    uint32_t site, d_in, d_out;
    uint64_t numel;
    peft_tensor_id id;
    uint64_t *excl;   /* sorted entries of earlier masks (never trainable), or NULL */
    uint64_t n_excl;
};

struct peft_instance {
    const peft_host_api *api;
    peft_host *h;
    const peft_tensor_start_api *start_api; /* own calibration only */
    const peft_files_api *files;            /* exclusions only */
    double sparsity;
    int64_t calibration_steps;
    int random_mask;
    char *calibrate_from;  /* stage name, or "" */
    char *exclude;         /* file paths, comma/space separated */
    char *exclude_stages;  /* stage names, comma/space separated */
    struct lota_site *sites;
    uint32_t n_sites;
    int calibrating;       /* own calibration in progress: no mask yet */
    float *buf;            /* one site's task vector (calibrate_from) */
    uint64_t *idx;         /* one site's selected entries */
};

/* How a site's |delta| is read: from the calibration stage, or live - start. */
enum source { FROM_STAGE, FROM_LIVE };

static char *dup_str(const char *s) {
    size_t n = strlen(s ? s : "") + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s ? s : "", n);
    return d;
}

/* The next word of a comma/space separated list at *p (copied into out), or 0 at the end. */
static int next_word(const char **p, char *out, size_t cap) {
    const char *s = *p;
    while (*s == ' ' || *s == ',' || *s == '\t') s++;
    size_t n = 0;
    while (s[n] && s[n] != ' ' && s[n] != ',' && s[n] != '\t') n++;
    if (n == 0) return 0;
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    *p = s + n;
    while (**p && **p != ' ' && **p != ',' && **p != '\t') (*p)++;
    return 1;
}

static void lota_destroy(peft_instance *self) {
    if (!self) return;
    for (uint32_t i = 0; i < self->n_sites; i++) free(self->sites[i].excl);
    free(self->sites);
    free(self->calibrate_from);
    free(self->exclude);
    free(self->exclude_stages);
    free(self->buf);
    free(self->idx);
    free(self);
}

/* What can be checked against the rest of the run before any stage trains (the host's
 * peft.stage_keys/1): the stage's own calibration must leave sparse steps, and every
 * exclude_stages entry must be a LoTA stage (only those have masks). */
static peft_status check_chain(const peft_host_api *api, peft_host *h, int own, int64_t calib,
                               const char *exclude_stages) {
    const peft_stage_keys_api *sk = api->get_extension(h, PEFT_STAGE_KEYS_EXTENSION);
    if (!sk || !PEFT_HAS_FIELD(sk, peft_stage_keys_api, stage_value)) return PEFT_OK;
    char value[64];
    if (own && sk->stage_value(h, NULL, "steps", value, sizeof value) == PEFT_OK &&
        strtoll(value, NULL, 10) <= calib) {
        peft_logf(api, h, PEFT_LOG_ERROR, "calibration_steps = %lld leaves no sparse step of the "
                  "stage's %s steps: set steps above it", (long long)calib, value);
        return PEFT_E_CONFIG;
    }
    for (const char *p = exclude_stages ? exclude_stages : ""; *p;) {
        size_t n = strcspn(p, ", \t");
        char name[128];
        if (n > 0 && n < sizeof name) {
            memcpy(name, p, n);
            name[n] = 0;
            if (sk->stage_value(h, name, "method", value, sizeof value) == PEFT_OK &&
                strcmp(value, "lota") != 0) {
                peft_logf(api, h, PEFT_LOG_ERROR, "exclude_stages: '%s' is a stage of method "
                          "'%s'; only lota stages have masks to exclude", name, value);
                return PEFT_E_CONFIG;
            }
        }
        p += n;
        p += strspn(p, ", \t");
    }
    return PEFT_OK;
}

static peft_status lota_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    double sparsity = peft_kv_float(cfg, n_cfg, "sparsity", 0.9);
    int64_t steps = peft_kv_int(cfg, n_cfg, "calibration_steps", 100);
    const char *from = peft_kv_get(cfg, n_cfg, "calibrate_from");
    int random_mask = peft_kv_bool(cfg, n_cfg, "random_mask", 0);
    if (!(sparsity >= 0.0 && sparsity < 1.0)) {
        peft_logf(api, h, PEFT_LOG_ERROR, "sparsity must be in [0, 1), got %g", sparsity);
        return PEFT_E_CONFIG;
    }
    int own = !random_mask && !(from && *from);
    if (steps < 0 || (own && steps == 0)) {
        peft_logf(api, h, PEFT_LOG_ERROR, "calibration_steps must be >= 1 when neither "
                  "calibrate_from nor random_mask gives the mask, got %lld", (long long)steps);
        return PEFT_E_CONFIG;
    }
    if (random_mask && from && *from) {
        peft_logf(api, h, PEFT_LOG_ERROR, "random_mask and calibrate_from exclude each other");
        return PEFT_E_CONFIG;
    }
    if (check_chain(api, h, own, steps, peft_kv_get(cfg, n_cfg, "exclude_stages")) != PEFT_OK)
        return PEFT_E_CONFIG;
    peft_model_info mi = {.struct_size = sizeof mi};
    peft_status st = api->model_info(h, &mi);
    if (st != PEFT_OK) return st;
    struct peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    self->api = api;
    self->h = h;
    self->sparsity = sparsity;
    self->calibration_steps = steps;
    self->random_mask = random_mask;
    self->calibrate_from = dup_str(from);
    self->exclude = dup_str(peft_kv_get(cfg, n_cfg, "exclude"));
    self->exclude_stages = dup_str(peft_kv_get(cfg, n_cfg, "exclude_stages"));
    self->sites = calloc(mi.n_sites + 1, sizeof *self->sites);
    if (!self->calibrate_from || !self->exclude || !self->exclude_stages || !self->sites) {
        lota_destroy(self);
        return PEFT_E_NOMEM;
    }
    if (own) {
        self->start_api = api->get_extension(h, PEFT_TENSOR_START_EXTENSION);
        if (!self->start_api || !PEFT_HAS_FIELD(self->start_api, peft_tensor_start_api, start)) {
            peft_logf(api, h, PEFT_LOG_ERROR, "the plugin's own calibration needs the host "
                      "extension %s; set calibrate_from instead", PEFT_TENSOR_START_EXTENSION);
            lota_destroy(self);
            return PEFT_E_UNSUPPORTED;
        }
    }
    if (self->exclude[0] || self->exclude_stages[0]) {
        self->files = api->get_extension(h, PEFT_FILES_EXTENSION);
        if (!self->files || !PEFT_HAS_FIELD(self->files, peft_files_api, stage_file)) {
            peft_logf(api, h, PEFT_LOG_ERROR, "exclude needs the host extension %s",
                      PEFT_FILES_EXTENSION);
            lota_destroy(self);
            return PEFT_E_UNSUPPORTED;
        }
    }
    *out = self;
    return PEFT_OK;
}

static peft_status lota_attach(peft_instance *self, uint32_t site) {
    peft_site_info si = {.struct_size = sizeof si};
    peft_status st = self->api->site_info(self->h, site, &si);
    if (st != PEFT_OK) return st;
    char name[160];
    snprintf(name, sizeof name, "%s.weight", si.name);
    peft_tensor_desc d = {
        .struct_size = sizeof d,
        .name = name,
        .site = (int32_t)site,
        .ndim = 2,
        .shape = {si.d_out, si.d_in, 0, 0}, /* (d_out, d_in): the live weight */
        .flags = PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_ALIAS_BASE | PEFT_TENSOR_NEGATE,
    };
    struct lota_site *s = &self->sites[self->n_sites];
    st = self->api->tensor_register(self->h, &d, &s->id);
    if (st != PEFT_OK) return st;
    s->site = site;
    s->d_in = si.d_in;
    s->d_out = si.d_out;
    s->numel = (uint64_t)si.d_in * si.d_out;
    self->n_sites++;
    return PEFT_OK;
}

/* ---- earlier masks (LoTTO) ------------------------------------------------------------- */

/* Add the sorted unique list b (n_b) to a site's exclusions (a sorted union). */
static peft_status add_exclusions(struct lota_site *s, const uint64_t *b, uint64_t n_b) {
    uint64_t *u = malloc((s->n_excl + n_b + 1) * sizeof *u), n = 0, i = 0, j = 0;
    if (!u) return PEFT_E_NOMEM;
    while (i < s->n_excl || j < n_b) {
        uint64_t v = j >= n_b || (i < s->n_excl && s->excl[i] <= b[j]) ? s->excl[i] : b[j];
        if (i < s->n_excl && s->excl[i] == v) i++;
        if (j < n_b && b[j] == v) j++;
        u[n++] = v;
    }
    free(s->excl);
    s->excl = u;
    s->n_excl = n;
    return PEFT_OK;
}

/* Read the masks of one earlier LoTA adapter file into the sites' exclusions. */
static peft_status exclude_file(struct peft_instance *self, const char *path) {
    uint32_t found = 0;
    for (uint32_t i = 0; i < self->n_sites; i++) {
        struct lota_site *s = &self->sites[i];
        peft_site_info si = {.struct_size = sizeof si};
        peft_status st = self->api->site_info(self->h, s->site, &si);
        if (st != PEFT_OK) return st;
        char name[200];
        snprintf(name, sizeof name, "%s.weight.sparse_index", si.name);
        uint64_t n;
        st = self->files->tensor_numel(self->h, path, name, &n);
        if (st == PEFT_E_INVALID_ARG) continue; /* that task did not target this site */
        if (st != PEFT_OK) {
            peft_logf(self->api, self->h, PEFT_LOG_ERROR, "exclude: cannot read '%s'", path);
            return st;
        }
        uint64_t *idx = malloc((n + 1) * sizeof *idx);
        if (!idx) return PEFT_E_NOMEM;
        st = self->files->read_index(self->h, path, name, idx, n);
        for (uint64_t j = 0; st == PEFT_OK && j < n; j++)
            if (idx[j] >= s->numel || (j > 0 && idx[j] <= idx[j - 1])) {
                peft_logf(self->api, self->h, PEFT_LOG_ERROR, "exclude: %s: '%s' is not a "
                          "sorted mask of this site (entry %llu)", path, name,
                          (unsigned long long)j);
                st = PEFT_E_SHAPE;
            }
        if (st == PEFT_OK) st = add_exclusions(s, idx, n);
        free(idx);
        if (st != PEFT_OK) return st;
        found++;
    }
    if (found == 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "exclude: '%s' holds no sparse task "
                  "vector (NAME.sparse_index) of any targeted weight; is it a LoTA adapter?",
                  path);
        return PEFT_E_CONFIG;
    }
    return PEFT_OK;
}

static peft_status load_exclusions(struct peft_instance *self) {
    char word[1024];
    const char *p = self->exclude;
    while (next_word(&p, word, sizeof word)) {
        peft_status st = exclude_file(self, word);
        if (st != PEFT_OK) return st;
    }
    p = self->exclude_stages;
    while (next_word(&p, word, sizeof word)) {
        char path[4096];
        peft_status st = self->files->stage_file(self->h, word, path, sizeof path);
        if (st != PEFT_OK) {
            peft_logf(self->api, self->h, PEFT_LOG_ERROR, "exclude_stages: '%s' is not a "
                      "finished earlier stage of this run", word);
            return st;
        }
        st = exclude_file(self, path);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

/* ---- the mask ---------------------------------------------------------------------------- */

/* |delta| of site i into self->buf (d_out * d_in), as float bits; excluded entries are
 * skipped by the callers. */
static peft_status site_scores(struct peft_instance *self, uint32_t i, enum source src) {
    struct lota_site *s = &self->sites[i];
    float *d = self->buf;
    if (src == FROM_STAGE) {
        peft_status st = self->api->stage_delta(self->h, self->calibrate_from, s->site, d);
        if (st != PEFT_OK) return st;
    } else {
        peft_tensor_view v;
        const float *start;
        uint64_t n;
        peft_status st = self->api->tensor_view(self->h, s->id, &v);
        if (st == PEFT_OK) st = self->start_api->start(self->h, s->id, &start, &n);
        if (st != PEFT_OK) return st;
        if (n != s->numel) return PEFT_E_INTERNAL;
        for (uint64_t j = 0; j < s->numel; j++) d[j] = v.data[j] - start[j];
    }
    for (uint64_t j = 0; j < s->numel; j++) {
        d[j] = fabsf(d[j]);
        if (isnan(d[j])) {
            peft_logf(self->api, self->h, PEFT_LOG_ERROR, "the task vector of site %u is NaN "
                      "at entry %llu", s->site, (unsigned long long)j);
            return PEFT_E_INVALID_ARG;
        }
    }
    return PEFT_OK;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Run body for every candidate (not excluded) entry j of site s, with bits = its score's
 * float bits. */
#define FOR_CANDIDATES(s, scores, j, bits, body)                                             \
    do {                                                                                     \
        uint64_t ex_ = 0;                                                                    \
        for (uint64_t j = 0; j < (s)->numel; j++) {                                          \
            while (ex_ < (s)->n_excl && (s)->excl[ex_] < j) ex_++;                           \
            if (ex_ < (s)->n_excl && (s)->excl[ex_] == j) continue;                          \
            uint32_t bits = bits_of((scores)[j]);                                            \
            body;                                                                            \
        }                                                                                    \
    } while (0)

/* The k-th largest score bits over all candidates: two histogram passes. */
static peft_status global_threshold(struct peft_instance *self, enum source src, uint64_t k,
                                    uint32_t *tau) {
    uint64_t *hist = malloc(65536 * sizeof *hist);
    if (!hist) return PEFT_E_NOMEM;
    uint32_t prefix = 0;
    uint64_t rank = k; /* the rank sought inside the current bin */
    peft_status st = PEFT_OK;
    for (int pass = 0; pass < 2 && st == PEFT_OK; pass++) {
        memset(hist, 0, 65536 * sizeof *hist);
        for (uint32_t i = 0; i < self->n_sites && st == PEFT_OK; i++) {
            st = site_scores(self, i, src);
            if (st != PEFT_OK) break;
            struct lota_site *s = &self->sites[i];
            if (pass == 0)
                FOR_CANDIDATES(s, self->buf, j, b, hist[b >> 16]++);
            else
                FOR_CANDIDATES(s, self->buf, j, b, if ((b >> 16) == prefix) hist[b & 0xffff]++);
        }
        if (st != PEFT_OK) break;
        uint32_t bin = 65535;
        uint64_t above = 0;
        while (bin > 0 && above + hist[bin] < rank) above += hist[bin--];
        rank -= above;
        prefix = pass == 0 ? bin : (prefix << 16) | bin;
    }
    free(hist);
    *tau = prefix;
    return st;
}

/* Candidates selected at site i, ascending, into self->idx; their count. Threshold mode
 * keeps score bits >= tau; random mode draws from the remaining quota (selection sampling:
 * exactly `*quota` of the `*left` candidates still to come). */
static uint64_t select_site(struct peft_instance *self, uint32_t i, uint32_t tau,
                            uint64_t *quota, uint64_t *left) {
    struct lota_site *s = &self->sites[i];
    uint64_t n = 0;
    if (!quota) {
        FOR_CANDIDATES(s, self->buf, j, b, if (b >= tau) self->idx[n++] = j);
        return n;
    }
    uint64_t ex = 0;
    for (uint64_t j = 0; j < s->numel; j++) {
        while (ex < s->n_excl && s->excl[ex] < j) ex++;
        if (ex < s->n_excl && s->excl[ex] == j) continue;
        /* P(select) = quota / left, from 53 random bits */
        double u = (double)(self->api->rng_u64(self->h) >> 11) * (1.0 / 9007199254740992.0);
        if (u * (double)*left < (double)*quota) {
            self->idx[n++] = j;
            (*quota)--;
        }
        (*left)--;
    }
    return n;
}

/* Compute and set every site's mask. FROM_LIVE first returns the weights to their start. */
static peft_status make_masks(struct peft_instance *self, enum source src) {
    uint64_t total = 0, excluded = 0, widest = 1;
    for (uint32_t i = 0; i < self->n_sites; i++) {
        total += self->sites[i].numel;
        excluded += self->sites[i].n_excl;
        if (self->sites[i].numel > widest) widest = self->sites[i].numel;
    }
    uint64_t candidates = total - excluded;
    /* 1e-6: (1 - 0.9) * 3840 is 383.99999999999994 in binary; the decimal means 384. */
    uint64_t k = (uint64_t)floor((1.0 - self->sparsity) * (double)total + 1e-6);
    if (k > candidates) {
        peft_logf(self->api, self->h, PEFT_LOG_WARN, "only %llu entries are left outside the "
                  "excluded masks; all of them are trainable (k was %llu)",
                  (unsigned long long)candidates, (unsigned long long)k);
        k = candidates;
    }
    if (k == 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "no trainable entry: k = floor((1 - "
                  "sparsity %g) * %llu) = 0 after exclusions", self->sparsity,
                  (unsigned long long)total);
        return PEFT_E_CONFIG;
    }
    free(self->buf);
    free(self->idx);
    self->buf = malloc(widest * sizeof *self->buf);
    self->idx = malloc(widest * sizeof *self->idx);
    if (!self->buf || !self->idx) return PEFT_E_NOMEM;
    uint32_t tau = 0;
    peft_status st = PEFT_OK;
    if (!self->random_mask) st = global_threshold(self, src, k, &tau);
    uint64_t chosen = 0, quota = k, left = candidates;
    for (uint32_t i = 0; i < self->n_sites && st == PEFT_OK; i++) {
        struct lota_site *s = &self->sites[i];
        uint64_t n;
        if (self->random_mask) {
            n = select_site(self, i, 0, &quota, &left);
        } else {
            st = site_scores(self, i, src);
            if (st != PEFT_OK) break;
            n = select_site(self, i, tau, NULL, NULL);
        }
        if (src == FROM_LIVE) { /* back to the start weights, bit for bit, before the mask */
            peft_tensor_view v;
            const float *start;
            uint64_t ns;
            st = self->api->tensor_view(self->h, s->id, &v);
            if (st == PEFT_OK) st = self->start_api->start(self->h, s->id, &start, &ns);
            if (st != PEFT_OK) break;
            memcpy(v.data, start, s->numel * sizeof(float));
        }
        st = self->api->tensor_set_mask(self->h, s->id, self->idx, n);
        chosen += n;
    }
    free(self->buf);
    free(self->idx);
    self->buf = NULL;
    self->idx = NULL;
    if (st != PEFT_OK) return st;
    float tau_f;
    memcpy(&tau_f, &tau, sizeof tau_f);
    peft_logf(self->api, self->h, PEFT_LOG_INFO,
              "mask: %llu of %llu weights trainable (k = %llu, density %.4g), %s%s; %llu "
              "excluded by earlier masks", (unsigned long long)chosen,
              (unsigned long long)total, (unsigned long long)k,
              (double)chosen / (double)total,
              self->random_mask ? "drawn at random" : "global |delta| >= ",
              self->random_mask ? "" : "tau", (unsigned long long)excluded);
    if (!self->random_mask)
        peft_logf(self->api, self->h, PEFT_LOG_INFO, "mask: tau = %.6g (from %s)",
                  (double)tau_f, src == FROM_STAGE ? self->calibrate_from : "own calibration");
    return PEFT_OK;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static peft_status lota_stage_begin(peft_instance *self) {
    /* Resumed after the mask was set: the host restored the masks from the checkpoint. */
    for (uint32_t i = 0; i < self->n_sites; i++) {
        peft_tensor_view v;
        peft_status st = self->api->tensor_view(self->h, self->sites[i].id, &v);
        if (st != PEFT_OK) return st;
        if (v.mask_index || v.n_trainable != v.numel) {
            self->calibrating = 0;
            return PEFT_OK;
        }
    }
    peft_status st = load_exclusions(self);
    if (st != PEFT_OK) return st;
    if (self->random_mask || self->calibrate_from[0]) return make_masks(self, FROM_STAGE);
    self->calibrating = 1; /* dense steps first; the mask comes in step_end */
    return PEFT_OK;
}

static peft_status lota_step_end(peft_instance *self, uint64_t step) {
    if (!self->calibrating || step < (uint64_t)self->calibration_steps) return PEFT_OK;
    peft_status st = make_masks(self, FROM_LIVE);
    if (st == PEFT_OK) self->calibrating = 0;
    return st;
}

static peft_status lota_stage_end(peft_instance *self) {
    if (!self->calibrating) return PEFT_OK;
    peft_logf(self->api, self->h, PEFT_LOG_ERROR, "the stage ended during calibration: its "
              "steps must exceed calibration_steps (%lld)", (long long)self->calibration_steps);
    return PEFT_E_CONFIG;
}

static const peft_param_spec lota_params[] = {
    {"target_modules", PEFT_PARAM_LIST, "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj",
     NULL, "weights that may be trained (one global mask over all of them)"},
    {"sparsity", PEFT_PARAM_FLOAT, "0.9", NULL,
     "fraction of the targeted weights that stays frozen, in [0, 1)"},
    {"calibrate_from", PEFT_PARAM_STAGE, "", NULL,
     "finished stage whose task vector gives the mask (e.g. a full stage from the same start)"},
    {"calibration_steps", PEFT_PARAM_INT, "100", NULL,
     "without calibrate_from: dense steps of this stage that give the mask (part of steps)"},
    {"exclude", PEFT_PARAM_FILES, "", NULL,
     "earlier LoTA adapter files: their masks stay frozen (LoTTO)"},
    {"exclude_stages", PEFT_PARAM_LIST, "", NULL,
     "earlier LoTA stages of this run: their masks stay frozen (LoTTO)"},
    {"random_mask", PEFT_PARAM_BOOL, "false", NULL,
     "ablation: a uniformly random mask of the same size, no calibration"},
};

static const peft_method_vtable lota_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = lota_create,
    .destroy = lota_destroy,
    .attach = lota_attach,
    .stage_begin = lota_stage_begin,
    .step_end = lota_step_end,
    .stage_end = lota_stage_end,
};

static const char *const lota_features[] = {PEFT_FEATURE_WRITES_BASE, PEFT_FEATURE_MERGEABLE,
                                            NULL};

/* The official trainer's optimizer: MaskedRMSprop (torch RMSprop: alpha 0.99, eps 1e-8, no
 * momentum, no weight decay), each tensor's gradient clipped on its own, constant learning
 * rate (no warmup, no decay). */
static const peft_kv lota_stage_defaults[] = {
    {"optimizer", "rmsprop"}, {"rmsprop_alpha", "0.99"}, {"momentum", "0"}, {"eps", "1e-8"},
    {"weight_decay", "0"},    {"clip_scope", "tensor"},  {"schedule", "constant"},
};

static const peft_method_desc lota_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "lota",
    .name = "Lottery Ticket Adaptation (LoTA, LoTTO)",
    .version = "1.0.0",
    .description = "sparse fine-tuning of a global top-k mask of a calibration task vector; "
                   "disjoint masks for sequential tasks",
    .features = lota_features,
    .params = lota_params,
    .n_params = sizeof lota_params / sizeof lota_params[0],
    .vt = &lota_vt,
    .stage_defaults = lota_stage_defaults,
    .n_stage_defaults = sizeof lota_stage_defaults / sizeof lota_stage_defaults[0],
    .license = "MIT",
    .url = "https://arxiv.org/abs/2406.16797",
};

PEFT_PLUGIN_DEFINE(NULL, NULL, &lota_desc);
