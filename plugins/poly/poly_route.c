/*
 * poly_route.c: the routing maths of the poly plugin (the contract is at the top of poly.c):
 * the gate, the per-head normalisation, the mixing of skills into a task's adapter, the site
 * hooks (forward and backward, by segments of rows that share a task), and ΔW.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "poly.h"

#define EPS_NORM 1e-12f   /* the sum normaliser's epsilon, as in mttl */
#define EPS_GUMBEL 1e-6f  /* u is kept in [EPS, 1 - EPS] so the noise stays finite */

float *poly_scratch(struct peft_instance *self, uint64_t n) {
    return peft_scratch_get(&self->work, n);
}

/* ------------------------------------------------------------------------------------------
 * Routing: gate, normalisation, mixing of the skills.
 */

/* p (n) = sigmoid((z + noise) / tau), noise = log u - log(1 - u) when u is given. */
static void gate(const float *z, const float *u, float tau, float *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        float v = z[i];
        if (u) {
            float ui = fminf(fmaxf(u[i], EPS_GUMBEL), 1.0f - EPS_GUMBEL);
            v = (v + logf(ui) - logf(1.0f - ui)) / tau;
        }
        p[i] = 1.0f / (1.0f + expf(-v));
    }
}

/* w (h, K) = p normalised to sum 1 over the skills of each head. */
static void normalise(const float *p, float *w, uint32_t heads, uint32_t K) {
    for (uint32_t q = 0; q < heads; q++) {
        float sum = EPS_NORM;
        for (uint32_t k = 0; k < K; k++) sum += p[q * K + k];
        for (uint32_t k = 0; k < K; k++) w[q * K + k] = p[q * K + k] / sum;
    }
}

/* At (d_in, r) = vstack_q sum_k w[q,k] A[q,k];  Bt (r, d_out) = hstack_q sum_k w[q,k] B[q,k].
 * A is (h, K, d_in/h, r), B is (h, K, r, d_out/h); Bh (h, r, d_out/h) is work space, needed
 * only with h > 1 (with one head Bh is Bt). */
void poly_mix(const struct peft_instance *self, const struct poly_site *ps, const float *A,
              const float *B, const float *w, float *At, float *Bt, float *Bh) {
    uint32_t K = self->K, r = self->r, hd = self->heads, ho = ps->d_out / hd;
    uint64_t na = (uint64_t)(ps->d_in / hd) * r, nb = (uint64_t)r * ho;
    float *bh = hd == 1 ? Bt : Bh;
    for (uint32_t q = 0; q < hd; q++) {
        /* head q's rows of At and its block of Bh are contiguous:
         * (1, n) = w[q] (1, K) x the head's K blocks (K, n) */
        self->api->sgemm(self->h, 0, 0, 1, (uint32_t)na, K, 1.0f, w + q * K, K, A + q * K * na,
                         (uint32_t)na, 0.0f, At + q * na, (uint32_t)na);
        self->api->sgemm(self->h, 0, 0, 1, (uint32_t)nb, K, 1.0f, w + q * K, K, B + q * K * nb,
                         (uint32_t)nb, 0.0f, bh + q * nb, (uint32_t)nb);
    }
    if (hd == 1) return;
    for (uint32_t q = 0; q < hd; q++) /* head q owns columns [q ho, (q+1) ho) of Bt */
        for (uint32_t j = 0; j < r; j++)
            memcpy(Bt + (uint64_t)j * ps->d_out + q * ho, bh + q * nb + (uint64_t)j * ho,
                   ho * sizeof(float));
}

/* The end of the segment that starts at row i: rows of one task and, with noise (one draw
 * per example), of one example. */
static uint32_t segment_end(const int32_t *row_task, uint32_t n, uint32_t seq, uint32_t i,
                            int per_example) {
    uint32_t stop = n;
    if (per_example && seq > 0 && (i / seq + 1) * (uint64_t)seq < n) stop = (i / seq + 1) * seq;
    uint32_t e = i + 1;
    while (e < stop && row_task[e] == row_task[i]) e++;
    return e;
}

/* ------------------------------------------------------------------------------------------
 * Site hooks.
 */

static peft_status site_of(peft_instance *self, uint32_t site, struct poly_site **ps) {
    if (self->slot[site] < 0) {
        peft_logf(self->api, self->h, PEFT_LOG_ERROR, "site %u is not attached", site);
        return PEFT_E_INVALID_ARG;
    }
    *ps = &self->sites[self->slot[site]];
    return PEFT_OK;
}

uint64_t poly_act_floats(peft_instance *self, uint32_t site, uint32_t n_rows) {
    (void)site;
    if (!poly_routed(self)) return (uint64_t)n_rows * self->r;
    return 1 + (uint64_t)n_rows * (self->r + (uint64_t)self->heads * self->K);
}

static peft_status check_tasks(peft_instance *self, const int32_t *row_task, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (row_task[i] < 0 || (uint32_t)row_task[i] >= self->n_tasks) {
            peft_logf(self->api, self->h, PEFT_LOG_ERROR, "row %u has task %d, outside the "
                      "run's %u tasks", i, row_task[i], self->n_tasks);
            return PEFT_E_INVALID_ARG;
        }
    return PEFT_OK;
}

/* poly-mu: plain LoRA, y += s (x A^T) B^T. */
static peft_status lora_forward(peft_instance *self, const struct poly_site *ps,
                                const peft_forward_io *io) {
    peft_tensor_view A, B;
    peft_status st;
    if ((st = poly_view(self, ps->a, &A)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &B)) != PEFT_OK)
        return st;
    uint32_t n = io->n_rows, r = self->r;
    float *u = io->acts; /* (n, r) */
    self->api->sgemm(self->h, 0, 1, n, r, ps->d_in, 1.0f, io->x, ps->d_in, A.data, ps->d_in,
                     0.0f, u, r);
    self->api->sgemm(self->h, 0, 1, n, ps->d_out, r, self->s, u, r, B.data, r, 1.0f, io->y,
                     ps->d_out);
    return PEFT_OK;
}

/* poly-mu: dB += s dy^T u, dA += s g^T x, dx += s g A, with g = dy B. */
static peft_status lora_backward(peft_instance *self, const struct poly_site *ps,
                                 const peft_backward_io *io) {
    const peft_host_api *api = self->api;
    peft_tensor_view A, B;
    peft_status st;
    if ((st = poly_view(self, ps->a, &A)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &B)) != PEFT_OK)
        return st;
    uint32_t n = io->n_rows, r = self->r, d_in = ps->d_in, d_out = ps->d_out;
    const float *u = io->acts; /* (n, r) */
    float *g = poly_scratch(self, (uint64_t)n * r);
    if (!g) return PEFT_E_NOMEM;
    api->sgemm(self->h, 0, 0, n, r, d_out, 1.0f, io->dy, d_out, B.data, r, 0.0f, g, r);
    float s = self->s;
    if (B.grad) api->sgemm(self->h, 1, 0, d_out, r, n, s, io->dy, d_out, u, r, 1.0f, B.grad, r);
    if (A.grad) api->sgemm(self->h, 1, 0, r, d_in, n, s, g, r, io->x, d_in, 1.0f, A.grad, d_in);
    if (io->dx) api->sgemm(self->h, 0, 0, n, d_in, r, s, g, r, A.data, d_in, 1.0f, io->dx, d_in);
    return PEFT_OK;
}

/* Work space of a routed site: At (d_in, r), Bt (r, d_out), Bh (h, r, d_out/h), GA (d_in, r),
 * GB (h, r, d_out/h), g (n, r), and (h, K) each for the noise, p and w. */
struct work {
    float *At, *Bt, *Bh, *GA, *GB, *g, *u, *p, *w;
};

static peft_status work_for(peft_instance *self, const struct poly_site *ps, uint32_t n,
                            struct work *wk) {
    uint64_t na = (uint64_t)ps->d_in * self->r, nb = (uint64_t)self->r * ps->d_out;
    uint64_t hk = (uint64_t)self->heads * self->K;
    float *p = poly_scratch(self, 2 * na + 3 * nb + (uint64_t)n * self->r + 3 * hk);
    if (!p) return PEFT_E_NOMEM;
    wk->At = p;
    wk->Bt = wk->At + na;
    wk->Bh = wk->Bt + nb;
    wk->GA = wk->Bh + nb;
    wk->GB = wk->GA + na;
    wk->g = wk->GB + nb;
    wk->u = wk->g + (uint64_t)n * self->r;
    wk->p = wk->u + hk;
    wk->w = wk->p + hk;
    return PEFT_OK;
}

peft_status poly_forward(peft_instance *self, const peft_forward_io *io) {
    struct poly_site *ps;
    peft_status st = site_of(self, io->site, &ps);
    if (st != PEFT_OK) return st;
    if (!poly_routed(self)) return lora_forward(self, ps, io);
    if ((st = check_tasks(self, io->row_task, io->n_rows)) != PEFT_OK) return st;
    const peft_host_api *api = self->api;
    peft_tensor_view A, B, Z;
    if ((st = poly_view(self, ps->a, &A)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &B)) != PEFT_OK ||
        (st = poly_view(self, ps->z, &Z)) != PEFT_OK)
        return st;
    struct work wk;
    if ((st = work_for(self, ps, 0, &wk)) != PEFT_OK) return st;
    uint32_t n = io->n_rows, r = self->r, d_in = ps->d_in, d_out = ps->d_out;
    uint32_t hk = self->heads * self->K;
    int noisy = io->training && self->gumbel;
    io->acts[0] = noisy ? self->temperature : 0.0f;
    float *U = io->acts + 1;                         /* (n, r) */
    float *P = U + (uint64_t)n * r;                  /* (segments, h, K) */
    for (uint32_t i = 0, seg = 0; i < n; seg++) {
        uint32_t e = segment_end(io->row_task, n, io->seq, i, noisy), len = e - i;
        float *p = P + (uint64_t)seg * hk;
        const float *z = Z.data + (uint64_t)io->row_task[i] * hk;
        if (noisy) api->rng_uniform(self->h, wk.u, hk, 0.0f, 1.0f);
        gate(z, noisy ? wk.u : NULL, self->temperature, p, hk);
        normalise(p, wk.w, self->heads, self->K);
        poly_mix(self, ps, A.data, B.data, wk.w, wk.At, wk.Bt, wk.Bh);
        float *u = U + (uint64_t)i * r;
        /* u (len, r) = x A_t;  y (len, d_out) += s u B_t */
        api->sgemm(self->h, 0, 0, len, r, d_in, 1.0f, io->x + (uint64_t)i * d_in, d_in, wk.At,
                   r, 0.0f, u, r);
        api->sgemm(self->h, 0, 0, len, d_out, r, self->s, u, r, wk.Bt, d_out, 1.0f,
                   io->y + (uint64_t)i * d_out, d_out);
        i = e;
    }
    return PEFT_OK;
}

/* dL/dZ[t] of one segment from the routing weights' gradient gw (h, K). */
static void routing_grad(const peft_instance *self, const float *p, const float *gw, float tau,
                         float *dz) {
    uint32_t K = self->K;
    for (uint32_t q = 0; q < self->heads; q++) {
        const float *pq = p + q * K, *gq = gw + q * K;
        double S = EPS_NORM, dot = 0.0;
        for (uint32_t k = 0; k < K; k++) {
            S += pq[k];
            dot += (double)gq[k] * pq[k];
        }
        for (uint32_t j = 0; j < K; j++) {
            double dp = gq[j] / S - dot / (S * S);
            dz[q * K + j] += (float)(dp * pq[j] * (1.0 - pq[j]) / tau);
        }
    }
}

peft_status poly_backward(peft_instance *self, const peft_backward_io *io) {
    struct poly_site *ps;
    peft_status st = site_of(self, io->site, &ps);
    if (st != PEFT_OK) return st;
    if (!poly_routed(self)) return lora_backward(self, ps, io);
    if ((st = check_tasks(self, io->row_task, io->n_rows)) != PEFT_OK) return st;
    const peft_host_api *api = self->api;
    peft_tensor_view A, B, Z;
    if ((st = poly_view(self, ps->a, &A)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &B)) != PEFT_OK ||
        (st = poly_view(self, ps->z, &Z)) != PEFT_OK)
        return st;
    uint32_t n = io->n_rows, r = self->r, d_in = ps->d_in, d_out = ps->d_out, K = self->K;
    uint32_t hd = self->heads, hk = hd * K, ho = d_out / hd;
    uint64_t na = (uint64_t)(d_in / hd) * r, nb = (uint64_t)r * ho;
    struct work wk;
    if ((st = work_for(self, ps, n, &wk)) != PEFT_OK) return st;
    float tau = io->acts[0];
    int noisy = tau > 0.0f;
    const float *U = io->acts + 1, *P = U + (uint64_t)n * r;
    float s = self->s;
    for (uint32_t i = 0, seg = 0; i < n; seg++) {
        uint32_t e = segment_end(io->row_task, n, io->seq, i, noisy), len = e - i;
        int32_t t = io->row_task[i];
        const float *p = P + (uint64_t)seg * hk, *u = U + (uint64_t)i * r;
        const float *x = io->x + (uint64_t)i * d_in, *dy = io->dy + (uint64_t)i * d_out;
        normalise(p, wk.w, self->heads, K);
        poly_mix(self, ps, A.data, B.data, wk.w, wk.At, wk.Bt, wk.Bh);
        /* g (len, r) = dy B_t^T;  dx += s g A_t^T;  GA (d_in, r) = s x^T g, whose head q
         * rows are contiguous like A's blocks */
        api->sgemm(self->h, 0, 1, len, r, d_out, 1.0f, dy, d_out, wk.Bt, d_out, 0.0f, wk.g, r);
        if (io->dx)
            api->sgemm(self->h, 0, 1, len, d_in, r, s, wk.g, r, wk.At, r, 1.0f,
                       io->dx + (uint64_t)i * d_in, d_in);
        api->sgemm(self->h, 1, 0, d_in, r, len, s, x, d_in, wk.g, r, 0.0f, wk.GA, r);
        float *gw = wk.p; /* (h, K) reused: dL/dw */
        for (uint32_t q = 0; q < hd; q++) {
            const float *wq = wk.w + q * K, *ga = wk.GA + q * na;
            float *gb = wk.GB + q * nb;
            const float *Aq = A.data + (uint64_t)q * K * na, *Bq = B.data + (uint64_t)q * K * nb;
            /* head q's GB (r, d_out/h) = s u^T dy[:, head q's columns] */
            api->sgemm(self->h, 1, 0, r, ho, len, s, u, r, dy + (uint64_t)q * ho, d_out, 0.0f,
                       gb, ho);
            /* gw[q] (K) = A[q] (K, na) GA_q + B[q] (K, nb) GB_q */
            api->sgemm(self->h, 0, 1, K, 1, (uint32_t)na, 1.0f, Aq, (uint32_t)na, ga,
                       (uint32_t)na, 0.0f, gw + q * K, 1);
            api->sgemm(self->h, 0, 1, K, 1, (uint32_t)nb, 1.0f, Bq, (uint32_t)nb, gb,
                       (uint32_t)nb, 1.0f, gw + q * K, 1);
            /* dA[q] (K, na) += w[q]^T GA_q;  dB[q] (K, nb) += w[q]^T GB_q */
            if (A.grad)
                api->sgemm(self->h, 1, 0, K, (uint32_t)na, 1, 1.0f, wq, K, ga, (uint32_t)na,
                           1.0f, A.grad + (uint64_t)q * K * na, (uint32_t)na);
            if (B.grad)
                api->sgemm(self->h, 1, 0, K, (uint32_t)nb, 1, 1.0f, wq, K, gb, (uint32_t)nb,
                           1.0f, B.grad + (uint64_t)q * K * nb, (uint32_t)nb);
        }
        if (Z.grad && self->row_off[t] >= 0)
            routing_grad(self, p, gw, noisy ? tau : 1.0f, Z.grad + self->row_off[t]);
        i = e;
    }
    return PEFT_OK;
}

/* ------------------------------------------------------------------------------------------
 * Arithmetic.
 */

peft_status poly_delta_weight(peft_instance *self, uint32_t site, float scale, float *out) {
    struct poly_site *ps;
    peft_status st = site_of(self, site, &ps);
    if (st != PEFT_OK) return st;
    const peft_host_api *api = self->api;
    peft_tensor_view A, B, Z, rows;
    if ((st = poly_view(self, ps->a, &A)) != PEFT_OK ||
        (st = poly_view(self, ps->b, &B)) != PEFT_OK)
        return st;
    if (!poly_routed(self)) { /* out (d_out, d_in) += scale s B (d_out, r) A (r, d_in) */
        api->sgemm(self->h, 0, 0, ps->d_out, ps->d_in, self->r, scale * self->s, B.data,
                   self->r, A.data, ps->d_in, 1.0f, out, ps->d_in);
        return PEFT_OK;
    }
    if ((st = poly_view(self, ps->z, &Z)) != PEFT_OK ||
        (st = poly_view(self, self->rows_id, &rows)) != PEFT_OK)
        return st;
    int32_t task = -1;
    uint32_t n_here = 0;
    for (uint32_t t = 0; t < self->n_tasks; t++)
        if (rows.data[t] == ROW_TRAINED_HERE) {
            task = (int32_t)t;
            n_here++;
        }
    if (n_here != 1) {
        peft_logf(api, self->h, PEFT_LOG_ERROR, "no single weight change: a task's adapter "
                  "depends on its routing, and this stage trained %u tasks (a weight change "
                  "exists for a stage that trains one task, or for poly-mu)", n_here);
        return PEFT_E_UNSUPPORTED;
    }
    struct work wk;
    if ((st = work_for(self, ps, 0, &wk)) != PEFT_OK) return st;
    uint32_t hk = self->heads * self->K;
    gate(Z.data + (uint64_t)task * hk, NULL, 1.0f, wk.p, hk);
    normalise(wk.p, wk.w, self->heads, self->K);
    poly_mix(self, ps, A.data, B.data, wk.w, wk.At, wk.Bt, wk.Bh);
    /* out (d_out, d_in) += scale s B_t^T A_t^T */
    api->sgemm(self->h, 1, 1, ps->d_out, ps->d_in, self->r, scale * self->s, wk.Bt, ps->d_out,
               wk.At, self->r, 1.0f, out, ps->d_in);
    return PEFT_OK;
}
