/*
 * conpet_route.c: the selector (its auxiliary pass and head), the routing of each example to
 * its experts, and the site hooks of both modes (the contract is at the top of conpet.c).
 *
 * Routing is per example: route[b][0..k) are the tasks selected for example b, and expert[b]
 * the one expert its rows run (static: the one LoRA, "task" 0, for every example). In a
 * label-scoring batch every example is a (prompt, label) pair: it runs the expert of its
 * label's task when that task is selected, and is masked (the host gives it the null score)
 * when it is not, so each selected expert scores only its own task's labels, one forward per
 * expert, as the published dynamic ConPET. In any other batch the first selected expert
 * runs. The rows of consecutive examples that run the same expert form a segment, which goes
 * through sgemm at once.
 *
 * Activation cache per site and pass: main pass, u = x A_e^T (n_rows, r); selector pass,
 * u = x A_sel^T (n_rows, selector_r).
 */
#include <math.h>
#include <stdlib.h>

#include "conpet.h"

/* ------------------------------------------------------------------------------------------
 * LoRA products on a block of rows.
 */

/* The LoRA products on a block of rows (peft_lowrank.h). */
static void lora_rows_forward(peft_instance *self, const float *A, const float *B, uint32_t r,
                              float scale, const float *x, float *y, float *u, uint32_t n,
                              uint32_t d_in, uint32_t d_out) {
    peft_lowrank_forward(self->api, self->h, A, B, r, scale, x, y, u, n, d_in, d_out);
}

static peft_status lora_rows_backward(peft_instance *self, const peft_tensor_view *A,
                                      const peft_tensor_view *B, uint32_t r, float scale,
                                      const float *x, const float *dy, float *dx, const float *u,
                                      uint32_t n, uint32_t d_in, uint32_t d_out) {
    float *g = cp_scratch(self, (uint64_t)n * r); /* (n, r) */
    if (!g) return PEFT_E_NOMEM;
    peft_lowrank_backward(self->api, self->h, A, B, r, scale, x, dy, dx, u, g, n, d_in, d_out);
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Routing.
 */

static peft_status reserve_batch(peft_instance *self, uint32_t B) {
    if (B <= self->cap_batch) return PEFT_OK;
    int32_t *route = realloc(self->route, (size_t)B * self->top_k * sizeof *route);
    if (!route) return PEFT_E_NOMEM;
    self->route = route;
    int32_t *expert = realloc(self->expert, (size_t)B * sizeof *expert + sizeof *expert);
    if (!expert) return PEFT_E_NOMEM;
    self->expert = expert;
    float *z = realloc(self->sel_logits, (size_t)B * self->n_tasks * sizeof *z + sizeof *z);
    if (!z) return PEFT_E_NOMEM;
    self->sel_logits = z;
    self->cap_batch = B;
    return PEFT_OK;
}

/* known[t] = 1 for the tasks the selector chooses among: trained by an earlier stage of the
 * chain or begun in this one. Returns how many; *only = one of them. */
static peft_status known_tasks(peft_instance *self, uint8_t *known, uint32_t *n_known,
                               int32_t *only) {
    peft_tensor_view ex;
    peft_status st = cp_view(self, self->experts_id, &ex);
    if (st != PEFT_OK) return st;
    *n_known = 0;
    *only = -1;
    for (uint32_t t = 0; t < self->n_tasks; t++) {
        known[t] = ex.data[t] != EXPERT_FRESH;
        if (known[t]) {
            (*n_known)++;
            *only = (int32_t)t;
        }
    }
    return PEFT_OK;
}

/* route[b][0..k_used) for every example. */
static void route_examples(peft_instance *self, const peft_batch_info *b, const uint8_t *known,
                           uint32_t n_known, int32_t only) {
    uint32_t K = self->top_k;
    self->k_used = self->have_scores ? (K < n_known ? K : n_known) : 1;
    for (uint32_t i = 0; i < b->batch; i++) {
        int32_t *rt = self->route + (size_t)i * K;
        int32_t own = b->example_task[i];
        int own_ok = own >= 0 && (uint32_t)own < self->n_tasks;
        if (self->have_scores) {
            /* the top k_used known tasks by selector logit, ties to the lower id */
            const float *z = self->sel_logits + (size_t)i * self->n_tasks;
            for (uint32_t j = 0; j < self->k_used; j++) {
                int32_t best = -1;
                for (uint32_t t = 0; t < self->n_tasks; t++) {
                    if (!known[t]) continue;
                    int taken = 0;
                    for (uint32_t q = 0; q < j; q++) taken |= rt[q] == (int32_t)t;
                    if (!taken && (best < 0 || z[t] > z[best])) best = (int32_t)t;
                }
                rt[j] = best;
            }
        } else if (n_known == 1) {
            rt[0] = only;
        } else {
            rt[0] = own_ok ? own : -1; /* no selector: the batch's task ids */
        }
        if (b->training && self->teacher_forcing && own_ok) {
            int in = 0;
            for (uint32_t j = 0; j < self->k_used; j++) in |= rt[j] == own;
            if (!in) rt[self->k_used - 1] = own;
        }
    }
}

/* expert[b] from the routes; in a label-scoring batch, the pairs of unselected tasks masked. */
static void choose_experts(peft_instance *self, const peft_batch_info *b) {
    const int32_t *label_task = PEFT_HAS_FIELD(b, peft_batch_info, label_masked) ? b->label_task : NULL;
    for (uint32_t i = 0; i < b->batch; i++) {
        const int32_t *rt = self->route + (size_t)i * self->top_k;
        if (!label_task) {
            self->expert[i] = rt[0];
            continue;
        }
        int selected = 0;
        for (uint32_t j = 0; j < self->k_used; j++) selected |= rt[j] == label_task[i];
        self->expert[i] = selected ? label_task[i] : -1;
        if (!selected) b->label_masked[i] = 1;
    }
}

peft_status cp_batch_begin(peft_instance *self, const peft_batch_info *b) {
    peft_status st = reserve_batch(self, b->batch);
    if (st != PEFT_OK) return st;
    self->batch = b->batch;
    self->have_scores = 0;
    if (self->mode == CP_STATIC) {
        self->k_used = 1;
        for (uint32_t i = 0; i < b->batch; i++) self->route[i] = self->expert[i] = 0;
        return PEFT_OK;
    }
    uint8_t *known = malloc(self->n_tasks + 1);
    if (!known) return PEFT_E_NOMEM;
    uint32_t n_known;
    int32_t only;
    st = known_tasks(self, known, &n_known, &only);
    if (st == PEFT_OK && n_known >= 2 && !self->no_aux) {
        /* The selector's pass: its forward fills sel_logits (hidden_forward), and in training
         * its backward trains the selector from the auxiliary loss. */
        st = self->api->run_pass(self->h, CP_PASS_SELECTOR,
                                 b->training && self->phase != CP_EXPERTS);
        if (st == PEFT_E_UNSUPPORTED) {
            self->no_aux = 1;
            peft_logf(self->api, self->h, PEFT_LOG_WARN, "the host offers no auxiliary passes: "
                      "no selector; examples are routed to their own task's expert");
            st = PEFT_OK;
        }
    }
    if (st == PEFT_OK) {
        route_examples(self, b, known, n_known, only);
        choose_experts(self, b);
    }
    free(known);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * Site hooks.
 */

static peft_status site_of(peft_instance *self, uint32_t site, const struct cp_site **cs) {
    int32_t at = site < self->n_model_sites ? self->slot[site] : -1;
    if (at < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    *cs = &self->sites[at];
    return PEFT_OK;
}

uint64_t cp_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows) {
    (void)site;
    uint64_t main = self->r;
    uint64_t sel = self->mode == CP_DYNAMIC ? self->sel_r : 0;
    return (uint64_t)n_rows * (main > sel ? main : sel);
}

/* Examples in a block of n_rows rows of seq tokens: the routed batch's, or an error. */
static peft_status check_rows(peft_instance *self, uint32_t n_rows, uint32_t seq) {
    if (seq == 0 || n_rows % seq != 0 || n_rows / seq != self->batch) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "%u rows of %u tokens, but the routed "
                  "batch has %u examples", n_rows, seq, self->batch);
        return PEFT_E_SHAPE;
    }
    return PEFT_OK;
}

/* The end (exclusive) of the segment of examples from b0 that run the same expert. */
static uint32_t segment_end(const peft_instance *self, uint32_t b0) {
    uint32_t b1 = b0 + 1;
    while (b1 < self->batch && self->expert[b1] == self->expert[b0]) b1++;
    return b1;
}

peft_status cp_forward(peft_instance *self, const peft_forward_io *io) {
    const struct cp_site *cs;
    peft_status st = site_of(self, io->site, &cs);
    if (st != PEFT_OK) return st;
    uint32_t d_in = cs->d_in, d_out = cs->d_out, n = io->n_rows;
    peft_tensor_view A, B;
    if (io->pass == CP_PASS_SELECTOR) {
        if (self->mode != CP_DYNAMIC) return PEFT_OK;
        if ((st = cp_view(self, cs->sel.a, &A)) != PEFT_OK || (st = cp_view(self, cs->sel.b, &B)) != PEFT_OK)
            return st;
        lora_rows_forward(self, A.data, B.data, self->sel_r, self->sel_s, io->x, io->y, io->acts,
                          n, d_in, d_out);
        return PEFT_OK;
    }
    if ((st = check_rows(self, n, io->seq)) != PEFT_OK) return st;
    uint32_t T = io->seq, r = self->r;
    for (uint32_t b0 = 0, b1; b0 < self->batch; b0 = b1) {
        b1 = segment_end(self, b0);
        int32_t e = self->expert[b0];
        if (e < 0) continue;
        const struct cp_lora *l = &cs->expert[self->mode == CP_DYNAMIC ? e : 0];
        if ((st = cp_view(self, l->a, &A)) != PEFT_OK || (st = cp_view(self, l->b, &B)) != PEFT_OK)
            return st;
        uint64_t row0 = (uint64_t)b0 * T;
        lora_rows_forward(self, A.data, B.data, r, self->s, io->x + row0 * d_in,
                          io->y + row0 * d_out, io->acts + row0 * r, (b1 - b0) * T, d_in, d_out);
    }
    return PEFT_OK;
}

peft_status cp_backward(peft_instance *self, const peft_backward_io *io) {
    const struct cp_site *cs;
    peft_status st = site_of(self, io->site, &cs);
    if (st != PEFT_OK) return st;
    uint32_t d_in = cs->d_in, d_out = cs->d_out, n = io->n_rows;
    peft_tensor_view A, B;
    if (io->pass == CP_PASS_SELECTOR) {
        if (self->mode != CP_DYNAMIC) return PEFT_OK;
        if ((st = cp_view(self, cs->sel.a, &A)) != PEFT_OK || (st = cp_view(self, cs->sel.b, &B)) != PEFT_OK)
            return st;
        return lora_rows_backward(self, &A, &B, self->sel_r, self->sel_s, io->x, io->dy, io->dx,
                                  io->acts, n, d_in, d_out);
    }
    if ((st = check_rows(self, n, io->seq)) != PEFT_OK) return st;
    uint32_t T = io->seq, r = self->r;
    for (uint32_t b0 = 0, b1; b0 < self->batch; b0 = b1) {
        b1 = segment_end(self, b0);
        int32_t e = self->expert[b0];
        if (e < 0) continue;
        const struct cp_lora *l = &cs->expert[self->mode == CP_DYNAMIC ? e : 0];
        if ((st = cp_view(self, l->a, &A)) != PEFT_OK || (st = cp_view(self, l->b, &B)) != PEFT_OK)
            return st;
        uint64_t row0 = (uint64_t)b0 * T;
        st = lora_rows_backward(self, &A, &B, r, self->s, io->x + row0 * d_in,
                                io->dy + row0 * d_out, io->dx ? io->dx + row0 * d_in : NULL,
                                io->acts + row0 * r, (b1 - b0) * T, d_in, d_out);
        if (st != PEFT_OK) return st;
    }
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * The selector head on the final hidden state of the last prompt token.
 */

struct head {
    peft_tensor_view w, b; /* W (n_tasks, C), b (n_tasks) */
    uint8_t *known;        /* (n_tasks) */
    uint32_t n_known;
    uint32_t n_counted;    /* examples whose own task is known: the loss averages over them */
};

static peft_status head_open(peft_instance *self, const peft_hidden_io *io, struct head *hd) {
    const peft_batch_info *b = io->batch;
    memset(hd, 0, sizeof *hd);
    if (b->batch != self->batch || io->n_rows != b->batch * b->seq) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "hidden state of %u rows for a batch of "
                  "%u x %u", io->n_rows, b->batch, b->seq);
        return PEFT_E_SHAPE;
    }
    for (uint32_t i = 0; i < b->batch; i++)
        if (b->prompt_len[i] < 1 || (uint32_t)b->prompt_len[i] > b->seq) {
            peft_logf(self->api, self->h, PEFT_LOG_ERROR, "example %u: prompt length %d outside "
                      "1..%u", i, b->prompt_len[i], b->seq);
            return PEFT_E_SHAPE;
        }
    peft_status st;
    if ((st = cp_view(self, self->head_w, &hd->w)) != PEFT_OK ||
        (st = cp_view(self, self->head_b, &hd->b)) != PEFT_OK)
        return st;
    hd->known = malloc(self->n_tasks + 1);
    if (!hd->known) return PEFT_E_NOMEM;
    int32_t only;
    if ((st = known_tasks(self, hd->known, &hd->n_known, &only)) != PEFT_OK) return st;
    for (uint32_t i = 0; i < b->batch; i++) {
        int32_t own = b->example_task[i];
        hd->n_counted += own >= 0 && (uint32_t)own < self->n_tasks && hd->known[own];
    }
    return PEFT_OK;
}

/* z (n_tasks) = W h + b for example i; returns h (C), the last prompt token's row. */
static const float *head_logits(peft_instance *self, const peft_hidden_io *io,
                                const struct head *hd, uint32_t i, float *z) {
    const peft_batch_info *b = io->batch;
    uint32_t C = self->d_model;
    const float *h = io->h + ((size_t)i * b->seq + (size_t)(b->prompt_len[i] - 1)) * C;
    for (uint32_t t = 0; t < self->n_tasks; t++) {
        const float *w = hd->w.data + (size_t)t * C;
        double acc = hd->b.data[t];
        for (uint32_t c = 0; c < C; c++) acc += (double)w[c] * h[c];
        z[t] = (float)acc;
    }
    return h;
}

/* log sum_{known t} exp z[t]; *arg = the known task of the largest logit. */
static double log_sum_known(const struct head *hd, const float *z, uint32_t n_tasks, int32_t *arg) {
    double mx = -INFINITY;
    *arg = -1;
    for (uint32_t t = 0; t < n_tasks; t++)
        if (hd->known[t] && z[t] > mx) {
            mx = z[t];
            *arg = (int32_t)t;
        }
    double sum = 0.0;
    for (uint32_t t = 0; t < n_tasks; t++)
        if (hd->known[t]) sum += exp((double)z[t] - mx);
    return mx + log(sum);
}

static int counted(const peft_instance *self, const struct head *hd, int32_t own) {
    return own >= 0 && (uint32_t)own < self->n_tasks && hd->known[own];
}

peft_status cp_hidden_forward(peft_instance *self, const peft_hidden_io *io) {
    if (io->pass != CP_PASS_SELECTOR || self->mode != CP_DYNAMIC) return PEFT_OK;
    struct head hd;
    peft_status st = head_open(self, io, &hd);
    const peft_batch_info *b = io->batch;
    double loss = 0.0;
    for (uint32_t i = 0; st == PEFT_OK && i < b->batch; i++) {
        float *z = self->sel_logits + (size_t)i * self->n_tasks;
        head_logits(self, io, &hd, i, z);
        int32_t own = b->example_task[i], arg;
        if (!counted(self, &hd, own)) continue;
        loss += log_sum_known(&hd, z, self->n_tasks, &arg) - z[own];
        if (b->training) {
            self->sel_seen++;
            self->sel_right += arg == own;
        }
    }
    if (st == PEFT_OK) {
        if (hd.n_counted) *io->loss += (float)(loss / hd.n_counted);
        self->have_scores = 1;
    }
    free(hd.known);
    return st;
}

peft_status cp_hidden_backward(peft_instance *self, const peft_hidden_io *io) {
    if (io->pass != CP_PASS_SELECTOR || self->mode != CP_DYNAMIC) return PEFT_OK;
    struct head hd;
    peft_status st = head_open(self, io, &hd);
    const peft_batch_info *b = io->batch;
    uint32_t C = self->d_model;
    float *z = st == PEFT_OK ? cp_scratch(self, self->n_tasks) : NULL;
    if (st == PEFT_OK && !z) st = PEFT_E_NOMEM;
    /* the batch's share of the step (grad_accum, data parallelism): the selector loss's
     * gradients summed over the step's batches are those of its mean over the step */
    double share = PEFT_HAS_FIELD(b, peft_batch_info, step_share) && b->step_share > 0.0f
                       ? (double)b->step_share : 1.0;
    for (uint32_t i = 0; st == PEFT_OK && i < b->batch; i++) {
        int32_t own = b->example_task[i], arg;
        if (!counted(self, &hd, own)) continue;
        const float *h = head_logits(self, io, &hd, i, z);
        float *dh = io->dh + (h - io->h);
        double lse = log_sum_known(&hd, z, self->n_tasks, &arg);
        for (uint32_t t = 0; t < self->n_tasks; t++) {
            if (!hd.known[t]) continue;
            /* dL/dz_t = (softmax_t - [t = own]) / n, times the batch's share */
            float g = (float)((exp((double)z[t] - lse) - (t == (uint32_t)own)) * share / hd.n_counted);
            const float *w = hd.w.data + (size_t)t * C;
            if (hd.w.grad) {
                float *gw = hd.w.grad + (size_t)t * C;
                for (uint32_t c = 0; c < C; c++) gw[c] += g * h[c];
            }
            if (hd.b.grad) hd.b.grad[t] += g;
            for (uint32_t c = 0; c < C; c++) dh[c] += g * w[c];
        }
    }
    free(hd.known);
    return st;
}
