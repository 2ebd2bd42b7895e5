/* merge_ops.c: dense and sparse task vectors, and the merge operators of merge_ops.h. */
#include "merge_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

void tvec_init_dense(struct tvec *t, uint64_t numel) {
    t->numel = numel;
    t->n = numel;
    t->idx = NULL;
    t->val = xalloc_floats(numel ? numel : 1);
}

void tvec_free(struct tvec *t) {
    free(t->idx);
    free(t->val);
    memset(t, 0, sizeof *t);
}

void tvec_add_to(const struct tvec *t, float scale, float *out) {
    if (t->idx) {
        for (uint64_t j = 0; j < t->n; j++) out[t->idx[j]] += scale * t->val[j];
    } else {
        for (uint64_t j = 0; j < t->n; j++) out[j] += scale * t->val[j];
    }
}

/* ---- DARE's draws ------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) { return hash_fnv1a(HASH_FNV1A_BASIS, s, strlen(s)); }

static int dare_keep_h(uint64_t base, uint64_t index, double density) {
    uint64_t h = mix64(base ^ mix64(index + 0x9e3779b97f4a7c15ull));
    double u = (double)(h >> 11) * 0x1.0p-53; /* [0, 1) */
    return u < density;
}

static uint64_t dare_base(uint64_t seed, int32_t input, const char *name) {
    return mix64(mix64(seed) ^ mix64(name_hash(name) + (uint64_t)input * 0x632be59bd9b4e019ull));
}

int merge_dare_keep(uint64_t seed, int32_t input, const char *name, uint64_t index,
                    double density) {
    return dare_keep_h(dare_base(seed, input, name), index, density);
}

/* ---- the union of supports ---------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorted unique union of the inputs' indices (all sparse). */
static uint64_t *union_support(const struct tvec *in, int32_t m, uint64_t *n_out) {
    uint64_t total = 0;
    for (int32_t i = 0; i < m; i++) total += in[i].n;
    uint64_t *u = xmalloc((total ? total : 1) * sizeof *u), n = 0;
    for (int32_t i = 0; i < m; i++) {
        memcpy(u + n, in[i].idx, in[i].n * sizeof *u);
        n += in[i].n;
    }
    qsort(u, n, sizeof *u, cmp_u64);
    uint64_t k = 0;
    for (uint64_t j = 0; j < n; j++)
        if (k == 0 || u[j] != u[k - 1]) u[k++] = u[j];
    *n_out = k;
    return u;
}

/* g (nu) = t at the positions of the support (sup NULL: dense, nu == numel). */
static void gather(const struct tvec *t, const uint64_t *sup, uint64_t nu, float *g) {
    if (!sup) {
        if (t->idx) {
            memset(g, 0, nu * sizeof *g);
            for (uint64_t j = 0; j < t->n; j++) g[t->idx[j]] = t->val[j];
        } else {
            memcpy(g, t->val, nu * sizeof *g);
        }
        return;
    }
    uint64_t j = 0; /* t is sparse here and its indices are a subset of sup */
    for (uint64_t u = 0; u < nu; u++) {
        while (j < t->n && t->idx[j] < sup[u]) j++;
        g[u] = j < t->n && t->idx[j] == sup[u] ? t->val[j] : 0.0f;
    }
}

/* ---- pruning ------------------------------------------------------------------------- */

struct mag {
    float a;     /* |x| */
    uint64_t at; /* flat index in the tensor */
    uint64_t u;  /* position in g */
};

static int cmp_mag(const void *pa, const void *pb) {
    const struct mag *a = pa, *b = pb;
    if (a->a != b->a) return a->a > b->a ? -1 : 1; /* larger first */
    return a->at < b->at ? -1 : a->at > b->at;     /* then the lower index */
}

/* Keep the k = floor(density * numel) entries of g of largest magnitude; the tensor's
 * entries outside the support are 0 and never outrank a stored non-zero. */
static void prune_magnitude(float *g, const uint64_t *sup, uint64_t nu, uint64_t numel,
                            double density) {
    uint64_t k = (uint64_t)floor(density * (double)numel);
    uint64_t nz = 0;
    for (uint64_t u = 0; u < nu; u++) nz += g[u] != 0.0f;
    if (nz <= k) return;
    struct mag *e = xmalloc(nz * sizeof *e);
    uint64_t n = 0;
    for (uint64_t u = 0; u < nu; u++)
        if (g[u] != 0.0f) e[n++] = (struct mag){fabsf(g[u]), sup ? sup[u] : u, u};
    qsort(e, n, sizeof *e, cmp_mag);
    for (uint64_t j = k; j < n; j++) g[e[j].u] = 0.0f;
    free(e);
}

static void prune_random(float *g, const uint64_t *sup, uint64_t nu, double density, uint64_t seed,
                         int32_t input, const char *name) {
    uint64_t base = dare_base(seed, input, name);
    float rescale = (float)(1.0 / density);
    for (uint64_t u = 0; u < nu; u++) {
        if (g[u] == 0.0f) continue;
        g[u] = dare_keep_h(base, sup ? sup[u] : u, density) ? g[u] * rescale : 0.0f;
    }
}

/* ---- the merge ------------------------------------------------------------------------ */

void merge_tensor(const struct merge_params *p, const struct tvec *in, const double *w, int32_t m,
                  const char *name, struct tvec *out) {
    uint64_t numel = in[0].numel, nu = numel;
    int all_sparse = 1;
    for (int32_t i = 0; i < m; i++) all_sparse &= in[i].idx != NULL;
    uint64_t *sup = all_sparse ? union_support(in, m, &nu) : NULL;
    float *g = xmalloc(((size_t)m * nu + 1) * sizeof *g); /* (m, nu) the inputs on the support */
    for (int32_t i = 0; i < m; i++) {
        float *gi = g + (size_t)i * nu;
        gather(&in[i], sup, nu, gi);
        if (p->prune == PRUNE_MAGNITUDE) prune_magnitude(gi, sup, nu, numel, p->density);
        if (p->prune == PRUNE_RANDOM) prune_random(gi, sup, nu, p->density, p->seed, i, name);
    }
    float *res = xmalloc((nu ? nu : 1) * sizeof *res); /* (nu) */
    for (uint64_t u = 0; u < nu; u++) {
        double acc = 0.0;
        if (p->sign != SIGN_NONE) {
            double vote = 0.0;
            for (int32_t i = 0; i < m; i++) {
                float x = g[(size_t)i * nu + u];
                vote += p->sign == SIGN_TOTAL ? x : (double)((x > 0) - (x < 0));
            }
            int elected = vote >= 0.0 ? 1 : -1; /* a tie counts as + */
            int agree = 0;
            for (int32_t i = 0; i < m; i++) {
                float x = g[(size_t)i * nu + u];
                if ((x > 0 && elected > 0) || (x < 0 && elected < 0)) {
                    acc += w[i] * x;
                    agree++;
                }
            }
            acc /= agree > 1 ? agree : 1;
        } else {
            for (int32_t i = 0; i < m; i++) acc += w[i] * g[(size_t)i * nu + u];
        }
        res[u] = (float)(acc * p->lambda);
    }
    free(g);
    memset(out, 0, sizeof *out);
    out->numel = numel;
    if (!sup) {
        out->n = numel;
        out->val = res;
        return;
    }
    uint64_t k = 0;
    for (uint64_t u = 0; u < nu; u++)
        if (res[u] != 0.0f) {
            sup[k] = sup[u];
            res[k++] = res[u];
        }
    out->n = k;
    out->idx = sup;
    out->val = res;
}
