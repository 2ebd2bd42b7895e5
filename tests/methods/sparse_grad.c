/*
 * sparse_grad: the model's sparse gradient targets (model_set_sparse_grad), which serve masked
 * base weights (LoTA), against the dense gradient read at the same entries.
 *
 * On a model with rows beyond one block of the sampled product (B*T = 200 > 128), for every
 * site kind and masks of density 0 (empty), 1%, 10%, 50% and 100%, with the first and last
 * entries always in:
 *   - the sparse gradient equals the dense dW at the mask (max abs err over max |g|);
 *   - the input gradients do not change (the embedding's gradient, which every site's dx
 *     reaches, is bit-identical with and without the targets);
 *   - a site with a target gets no dense dW (its block stays zero even with need_grad set);
 *   - a second backward accumulates (+=): twice the first.
 * Printed: per density, entries, max abs err, max |g|.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"

enum { B = 4, T = 50 };

struct fix {
    struct model m;
    struct model_acts *a;
    struct batch b;
};

/* Dense gradients of every tensor, as the reference. */
static float *dense_grads(struct fix *f) {
    model_zero_grads(&f->m);
    memset(f->m.need_grad, 1, (size_t)f->m.n_tensors);
    mt_forward(&f->m, f->a, &f->b, NULL);
    REQUIRE(model_backward(&f->m, f->a, NULL) == 0, "backward: %s", err_msg());
    float *g = xalloc_floats(f->m.n_params);
    memcpy(g, f->m.grads, f->m.n_params * sizeof(float));
    return g;
}

/* A mask of about `density` of n entries, always with the first and last. */
static uint64_t make_mask(uint64_t *idx, uint64_t n, double density, struct rng *g) {
    uint64_t k = 0;
    if (density <= 0) return 0;
    for (uint64_t j = 0; j < n; j++)
        if (j == 0 || j == n - 1 || rng_uniform(g, 0.0f, 1.0f) < density) idx[k++] = j;
    return k;
}

static void check_density(struct fix *f, const float *ref, double density) {
    struct model *m = &f->m;
    struct rng g;
    rng_seed(&g, 42 + (uint64_t)(density * 1000));
    uint64_t **idx = xcalloc((size_t)m->n_sites, sizeof *idx);
    float **out = xcalloc((size_t)m->n_sites, sizeof *out);
    uint64_t *n = xcalloc((size_t)m->n_sites, sizeof *n);
    /* Targets on every site; dense gradients stay asked for everywhere else. */
    model_zero_grads(m);
    memset(m->need_grad, 1, (size_t)m->n_tensors);
    for (int32_t s = 0; s < m->n_sites; s++) {
        int32_t t = model_site_tensor(m, s);
        uint64_t numel = m->tensors[t].numel;
        idx[s] = xmalloc((numel + 1) * sizeof **idx);
        n[s] = make_mask(idx[s], numel, density, &g);
        out[s] = xalloc_floats(n[s]);
        REQUIRE(model_set_sparse_grad(m, t, idx[s], n[s], out[s]) == 0, "%s", err_msg());
    }
    mt_forward(m, f->a, &f->b, NULL);
    REQUIRE(model_backward(m, f->a, NULL) == 0, "backward: %s", err_msg());

    double emax = 0, gmax = 0;
    uint64_t entries = 0;
    int no_dense = 1;
    for (int32_t s = 0; s < m->n_sites; s++) {
        const struct model_tensor *mt = &m->tensors[model_site_tensor(m, s)];
        for (uint64_t j = 0; j < n[s]; j++) {
            double want = ref[mt->offset + idx[s][j]];
            emax = fmax(emax, fabs(out[s][j] - want));
            gmax = fmax(gmax, fabs(want));
        }
        for (size_t j = 0; j < mt->numel; j++) no_dense &= m->grads[mt->offset + j] == 0.0f;
        entries += n[s];
    }
    const struct model_tensor *emb = &m->tensors[model_find_tensor(m, "model.embed_tokens.weight")];
    int same_dx =
        memcmp(m->grads + emb->offset, ref + emb->offset, emb->numel * sizeof(float)) == 0;

    /* A second backward (of the same forward, run again: a backward consumes its logits)
     * adds the same again. */
    float *first = xalloc_floats(entries);
    uint64_t at = 0;
    for (int32_t s = 0; s < m->n_sites; s++)
        for (uint64_t j = 0; j < n[s]; j++) first[at++] = out[s][j];
    mt_forward(m, f->a, &f->b, NULL);
    REQUIRE(model_backward(m, f->a, NULL) == 0, "backward: %s", err_msg());
    double acc_err = 0;
    at = 0;
    for (int32_t s = 0; s < m->n_sites; s++)
        for (uint64_t j = 0; j < n[s]; j++, at++)
            acc_err = fmax(acc_err, fabs(out[s][j] - 2.0 * first[at]));

    printf("density %-5g: %6llu entries, max abs err %.3g, max |g| %.3g; dense dW formed: %s; "
           "embedding grad bit-identical: %s; second backward - 2 x first: %.3g\n", density,
           (unsigned long long)entries, emax, gmax, no_dense ? "no" : "YES",
           same_dx ? "yes" : "NO", acc_err);
    CHECK(entries == 0 || gmax > 0, "density %g: zero reference gradient", density);
    CHECK(emax <= 2e-6 * fmax(gmax, 1e-30), "density %g: sparse gradient off by %.3g", density,
          emax);
    CHECK(no_dense, "density %g: a dense dW was formed for a site with a target", density);
    CHECK(same_dx, "density %g: input gradients changed", density);
    CHECK(acc_err <= 2e-6 * fmax(gmax, 1e-30), "density %g: not accumulated", density);

    for (int32_t s = 0; s < m->n_sites; s++) {
        model_set_sparse_grad(m, model_site_tensor(m, s), NULL, 0, NULL);
        free(idx[s]);
        free(out[s]);
    }
    free(first);
    free(idx);
    free(out);
    free(n);
}

int main(void) {
    struct fix f;
    memset(&f, 0, sizeof f);
    /* mt_model's config with rows long enough for several blocks of the sampled product. */
    mt_model(&f.m, 0, 5, 0.3f);
    struct model_config c = f.m.cfg;
    c.max_seq = T;
    float *params = xalloc_floats(f.m.n_params);
    memcpy(params, f.m.params, f.m.n_params * sizeof(float));
    model_free(&f.m);
    REQUIRE(model_init(&f.m, &c) == 0, "model_init: %s", err_msg());
    memcpy(f.m.params, params, f.m.n_params * sizeof(float));
    free(params);
    model_alloc_grads(&f.m);
    f.a = model_acts_new();
    mt_batch(&f.b, B, T, f.m.cfg.vocab, 9);

    CHECK(model_set_sparse_grad(&f.m, 0, NULL, 0, NULL) != 0,
          "a target on the embedding was accepted");
    float *ref = dense_grads(&f);
    const double densities[] = {0.0, 0.01, 0.1, 0.5, 1.0};
    for (size_t i = 0; i < sizeof densities / sizeof densities[0]; i++)
        check_density(&f, ref, densities[i]);

    free(ref);
    mt_batch_free(&f.b);
    model_acts_free(f.a);
    model_free(&f.m);
    return check_status();
}
