/*
 * site_weight: a model whose site weights are held in bfloat16 (as a BF16 checkpoint loads):
 *   - a method with the feature weight-on-request (lora) attaches to every site, gets
 *     site_info.weight = NULL there, and no weight is made fp32;
 *   - peft.site_weight/1 widens a site's weight into the caller's buffer, equal to the
 *     rounded weight; a wrong size or site is refused;
 *   - a method without the feature (the probe plugin, as a 1.0 plugin) gets fp32 views, made
 *     only for the sites it asked about, equal to the 16-bit values;
 *   - the products of 16-bit sites give the logits of the same weights in fp32.
 * Usage: test_site_weight PROBE.so [PLUGIN.so...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "method_internal.h"
#include "mtest.h"
#include "peft/peft_site_weight.h"

/* Round every site weight of m to bfloat16 and hold it that way; want (n_params) gets the
 * rounded values as fp32. */
static void to_bf16(struct model *m, float *want) {
    memcpy(want, m->params, m->n_params * sizeof(float));
    for (int32_t s = 0; s < m->n_sites; s++) {
        int32_t t = model_site_tensor(m, s);
        const struct model_tensor *mt = &m->tensors[t];
        uint16_t *h = xmalloc(mt->numel * sizeof *h);
        for (size_t j = 0; j < mt->numel; j++) {
            h[j] = f32_to_bf16(m->params[mt->offset + j]);
            want[mt->offset + j] = bf16_to_f32(h[j]);
        }
        model_tensor_set_half(m, t, h, 1);
    }
}

static int32_t sites_in_half(const struct model *m) {
    int32_t n = 0;
    for (int32_t s = 0; s < m->n_sites; s++) n += model_tensor_in_half(m, model_site_tensor(m, s));
    return n;
}

int main(int argc, char **argv) {
    REQUIRE(argc >= 3, "usage: test_site_weight PROBE.so PLUGIN.so...");
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    const struct plugin_method *lora = mt_method(&reg, argc, argv, "lora");
    const struct plugin_method *probe = mt_method(&reg, argc, argv, "probe");
    struct task_table tasks = {0};
    task_table_id(&tasks, "a");
    struct method_env env = mt_env(&tasks, 7);

    struct model m, ref;
    mt_model(&m, 0, 3, 0.3f);
    float *want = xalloc_floats(m.n_params);
    to_bf16(&m, want);
    mt_model_copy(&ref, &m); /* params only: the sites' fp32 ranges are empty */
    memcpy(ref.params, want, m.n_params * sizeof(float));
    CHECK(sites_in_half(&m) == m.n_sites, "%d of %d sites held in 16 bits", sites_in_half(&m), m.n_sites);

    /* the products of 16-bit sites = the same weights in fp32 */
    struct batch b;
    mt_batch(&b, 2, 6, m.cfg.vocab, 11);
    struct model_acts *a = model_acts_new(), *ar = model_acts_new();
    float loss, loss_ref;
    REQUIRE(model_forward(&m, a, b.tokens, b.targets, b.B, b.T, NULL, &loss) == 0, "%s", err_msg());
    REQUIRE(model_forward(&ref, ar, b.tokens, b.targets, b.B, b.T, NULL, &loss_ref) == 0, "%s", err_msg());
    double e = mt_nmse(model_logits(a), model_logits(ar), (size_t)b.B * b.T * m.cfg.vocab);
    printf("logits with 16-bit sites vs the same weights in fp32: nmse %.2e, loss %.7f vs %.7f\n", e,
           (double)loss, (double)loss_ref);
    CHECK(e < 1e-12 && sites_in_half(&m) == m.n_sites, "16-bit products");

    /* lora: weight-on-request, every site attached, nothing widened */
    const char *all[] = {"target_modules", "all-linear", NULL};
    struct method_run *mr = mt_run_create(lora, &m, &env, all);
    REQUIRE(mr, "lora: %s", err_msg());
    printf("lora on all %d sites: %d site weights still in 16 bits\n", method_run_site_count(mr),
           sites_in_half(&m));
    CHECK(method_run_site_count(mr) == m.n_sites && sites_in_half(&m) == m.n_sites, "lora widened weights");
    peft_site_info si = {.struct_size = sizeof si};
    CHECK(host_api_table()->site_info(&mr->h, 3, &si) == PEFT_OK && si.weight == NULL && si.d_in > 0,
          "site_info.weight for a weight-on-request method");
    const peft_site_weight_api *sw = host_api_table()->get_extension(&mr->h, PEFT_SITE_WEIGHT_EXTENSION);
    REQUIRE(sw && PEFT_HAS_FIELD(sw, peft_site_weight_api, widen), "no peft.site_weight/1");
    int exact = 1;
    for (int32_t s = 0; s < m.n_sites; s++) {
        const struct model_tensor *mt = &m.tensors[model_site_tensor(&m, s)];
        float *out = xalloc_floats(mt->numel);
        exact &= sw->widen(&mr->h, (uint32_t)s, out, mt->numel) == PEFT_OK &&
                 memcmp(out, want + mt->offset, mt->numel * sizeof(float)) == 0;
        free(out);
    }
    float one;
    CHECK(exact && sites_in_half(&m) == m.n_sites, "widen: every site bit-exact, nothing kept");
    CHECK(sw->widen(&mr->h, 0, &one, 1) == PEFT_E_INVALID_ARG, "widen with a wrong numel");
    CHECK(sw->widen(&mr->h, (uint32_t)m.n_sites, &one, 1) == PEFT_E_INVALID_ARG, "widen past the sites");
    printf("peft.site_weight/1: %d sites widened bit-exactly; wrong size and site refused\n", m.n_sites);
    method_run_free(mr);

    /* probe: no feature (a plugin as 1.0 wrote them): fp32 views of the sites it asks about */
    const char *q[] = {"accept", "q_proj", NULL};
    mr = mt_run_create(probe, &m, &env, q);
    REQUIRE(mr, "probe: %s", err_msg());
    CHECK(host_api_table()->site_info(&mr->h, 0, &si) == PEFT_OK && si.weight &&
              memcmp(si.weight, want + m.tensors[model_site_tensor(&m, 0)].offset,
                     m.tensors[model_site_tensor(&m, 0)].numel * sizeof(float)) == 0,
          "fp32 view for a plugin without weight-on-request");
    printf("probe (no weight-on-request) asked about every site: %d of %d still in 16 bits, its view "
           "equals the 16-bit values\n", sites_in_half(&m), m.n_sites);
    CHECK(sites_in_half(&m) == 0, "views made");
    method_run_free(mr);

    model_acts_free(a);
    model_acts_free(ar);
    mt_batch_free(&b);
    free(want);
    model_free(&m);
    model_free(&ref);
    task_table_free(&tasks);
    registry_free(&reg);
    printf("%d failures\n", check_failures);
    return check_status();
}
