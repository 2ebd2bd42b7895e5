/*
 * host_api: the host side of the ABI, driven by the probe plugin (probe_plugin.c).
 *   - without target_modules every site is offered and PEFT_E_UNSUPPORTED declines it;
 *   - tensors are initialized as registered (CONST, NORMAL, UNIFORM, NONE) from the
 *     instance's stream, which depends on the seed and the stage name;
 *   - each contract violation (bad registration, calls out of their lifecycle phase, bad
 *     sgemm arguments, no instance) gives one error line "WHERE: probe: [CALL: ]reason";
 *   - hooks see per-row task ids, seq and the training flag, also for a pass of another
 *     length; a hook before batch_begin is an error;
 *   - masked ALIAS_BASE tensors: compact gradients formed by the model at the mask (equal
 *     to the dense ones there, no dense dW formed), zeroed, need_grad restored on free,
 *     delta = data - start;
 *   - plugin state goes through save/load as "peft.state";
 *   - negate and merge are refused when the method offers neither.
 * Usage: test_host_api PROBE.so [PLUGIN.so...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"
#include "safetensors.h"

enum { B = 3, T = 6 };

struct fix {
    struct model m;
    struct task_table tasks;
    struct batch b;
    struct model_acts *a;
    const struct plugin_method *pm;
};

static struct method_run *create_env(struct fix *f, const struct method_env *env,
                                     const char *const *kv) {
    return mt_run_create(f->pm, &f->m, env, kv);
}

static struct method_run *create(struct fix *f, const char *const *kv) {
    struct method_env env = mt_env(&f->tasks, 42);
    return create_env(f, &env, kv);
}

static void check_sites_and_init(struct fix *f) {
    const char *kv[] = {"accept", "q_proj down_proj", NULL};
    struct method_run *mr = create(f, kv);
    REQUIRE(mr, "create: %s", err_msg());
    int32_t want[] = {0 * 7 + 0, 0 * 7 + 6, 1 * 7 + 0, 1 * 7 + 6};
    int ok = method_run_site_count(mr) == 4;
    for (int i = 0; ok && i < 4; i++) ok = method_run_site(mr, i) == want[i];
    /* probe.frozen, probe.vec, probe.seen and one per attached site */
    ok &= method_run_tensor_count(mr) == 3 + 4 &&
          !mt_find_tensor(mr, "probe.model.layers.0.self_attn.k_proj.w");
    printf("offered every site, declined all but q_proj/down_proj: %d sites attached, %d "
           "tensors kept\n", method_run_site_count(mr), method_run_tensor_count(mr));
    CHECK(ok, "attached sites");

    struct mtensor *fr = mt_find_tensor(mr, "probe.frozen"), *vec = mt_find_tensor(mr, "probe.vec");
    struct mtensor *w = mt_find_tensor(mr, "probe.model.layers.1.mlp.down_proj.w");
    struct mtensor *seen = mt_find_tensor(mr, "probe.seen");
    REQUIRE(fr && vec && w && seen, "tensors missing");
    int cst = 1, zero = 1;
    for (int i = 0; i < 4; i++) cst &= fr->data[i] == 0.5f;
    for (int i = 0; i < 256; i++) zero &= seen->data[i] == 0.0f;
    double mean = 0, var = 0, lo = 1, hi = -1;
    for (uint64_t i = 0; i < vec->numel; i++) mean += vec->data[i];
    mean /= (double)vec->numel;
    for (uint64_t i = 0; i < vec->numel; i++) var += pow(vec->data[i] - mean, 2);
    double sd = sqrt(var / (double)vec->numel);
    for (uint64_t i = 0; i < w->numel; i++) lo = fmin(lo, w->data[i]), hi = fmax(hi, w->data[i]);
    printf("init: CONST 0.5 %s, NONE zero %s, NORMAL(0, 1): mean %.3f sd %.3f, UNIFORM(-0.1, "
           "0.3): [%.3f, %.3f]\n", cst ? "ok" : "NO", zero ? "ok" : "NO", mean, sd, lo, hi);
    CHECK(cst && zero, "CONST / NONE init");
    CHECK(fabs(mean) < 0.1 && fabs(sd - 1.0) < 0.1, "NORMAL init");
    CHECK(lo >= -0.1 && hi < 0.3 && lo < 0.0 && hi > 0.2, "UNIFORM init");
    CHECK(fr->grad == NULL && fr->n_trainable == 0 && vec->grad && vec->n_trainable == 1024,
          "frozen / trainable");

    /* The initialisation follows init_seed and the method, not the stage: another stage of
     * the same init_seed starts from the same numbers, another init_seed from others. */
    struct method_run *same = create(f, kv);
    struct method_env env = mt_env(&f->tasks, 42);
    env.stage = "other";
    struct method_run *sibling = create_env(f, &env, kv);
    env.init_seed = 7;
    struct method_run *other = create_env(f, &env, kv);
    REQUIRE(same && sibling && other, "create: %s", err_msg());
    int rep = memcmp(mt_find_tensor(same, "probe.vec")->data, vec->data, 1024 * 4) == 0;
    int shared = memcmp(mt_find_tensor(sibling, "probe.vec")->data, vec->data, 1024 * 4) == 0;
    int differs = memcmp(mt_find_tensor(other, "probe.vec")->data, vec->data, 1024 * 4) != 0;
    int fp = method_run_init_fingerprint(mr) != 0 &&
             method_run_init_fingerprint(sibling) == method_run_init_fingerprint(mr) &&
             method_run_init_fingerprint(other) != method_run_init_fingerprint(mr);
    printf("init: repeats: %s; another stage, one init_seed: %s; another init_seed differs: %s; "
           "fingerprints follow: %s\n", rep ? "yes" : "NO", shared ? "same" : "DIFFERENT",
           differs ? "yes" : "NO", fp ? "yes" : "NO");
    CHECK(rep && shared && differs && fp, "initialisation stream");
    method_run_free(sibling);
    method_run_free(same);
    method_run_free(other);

    CHECK(method_run_negate(mr) != 0 && strstr(err_msg(), "probe: cannot negate"), "negate: %s",
          err_msg());
    method_run_free(mr);

    /* A merge refused at the second site leaves every weight as it was; a merge adds the
     * probe's delta (W[0][0] += 1) at every site. */
    const char *kv2[] = {"accept", "q_proj down_proj", "defect", "delta_second", NULL};
    mr = create(f, kv2);
    REQUIRE(mr, "create: %s", err_msg());
    float *before = xmalloc(f->m.n_params * sizeof(float));
    memcpy(before, f->m.params, f->m.n_params * sizeof(float));
    int rc = method_run_merge(mr);
    int untouched = memcmp(before, f->m.params, f->m.n_params * sizeof(float)) == 0;
    printf("merge refused at the 2nd site: %s; weights untouched: %s\n",
           rc ? err_msg() : "(accepted)", untouched ? "yes" : "NO");
    CHECK(rc != 0 && strcmp(err_msg(), "test.ini [stage.test]: probe: delta_weight at "
          "model.layers.0.mlp.down_proj: no delta at site 6") == 0, "merge: %s", err_msg());
    CHECK(untouched, "a refused merge changed the model");
    method_run_free(mr);
    mr = create(f, kv);
    REQUIRE(mr && method_run_merge(mr) == 0, "merge: %s", err_msg());
    int added = 1;
    for (int i = 0; i < 4; i++) {
        const float *w = model_site_weight(&f->m, want[i]);
        added &= w[0] == before[model_site_weight(&f->m, want[i]) - f->m.params] + 1.0f;
    }
    CHECK(added, "merge did not add the delta");
    memcpy(f->m.params, before, f->m.n_params * sizeof(float));
    free(before);
    method_run_free(mr);
}

static void check_defects(struct fix *f) {
    static const struct {
        const char *defect;
        int at_begin;
        const char *want; /* after "test.ini [stage.test]: probe: " */
    } cases[] = {
        {"log_error", 0, "bad key x"},
        {"no_instance", 0, "create returned PEFT_OK without an instance"},
        {"dup_name", 0, "tensor_register: 'probe.vec' is already registered"},
        {"bad_ndim", 0, "tensor_register: 'probe.bad': ndim 5 is not in 1..4"},
        {"alias_shape", 0, "tensor_register: 'probe.alias' aliases "
                           "'model.layers.0.self_attn.q_proj.weight' of shape [16, 16]; the "
                           "desc has another shape"},
        {"alias_missing", 0, "tensor_register: the model has no tensor 'model.nope.weight'"},
        {"view_early", 0, "tensor_view is allowed once tensors are allocated (stage_begin and "
                          "later)"},
        {"mask_frozen", 0, "tensor_set_mask: 'probe.frozen' is not trainable"},
        {"stage_tensor", 0, "stage_tensor: this run keeps no stage outputs"},
        {"mask_unsorted", 0, "attach to model.layers.0.self_attn.q_proj: tensor_set_mask: "
                             "'probe.vec': indices must be sorted and unique (position 1)"},
        {"register_late", 1, "stage_begin: tensor_register is allowed in create and attach "
                             "only"},
        {"run_pass", 1, "stage_begin: run_pass is allowed in batch_begin only"},
        {"bad_sgemm", 1, "stage_begin: sgemm: bad arguments (m 2 n 2 k 2 lda 1 ldb 2 ldc 2)"},
    };
    int passed = 0, n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        const char *kv[] = {"defect", cases[i].defect, NULL};
        struct method_run *mr = create(f, kv);
        int failed = mr == NULL;
        if (mr && cases[i].at_begin) failed = method_run_begin(mr) != 0;
        char *want = xasprintf("test.ini [stage.test]: probe: %s", cases[i].want);
        int ok = failed && strcmp(err_msg(), want) == 0;
        CHECK(ok, "defect %s: got '%s', want '%s'", cases[i].defect,
              failed ? err_msg() : "(accepted)", want);
        passed += ok;
        free(want);
        method_run_free(mr);
    }
    printf("contract violations refused with the expected line: %d of %d (e.g. '%s')\n", passed,
           n, "test.ini [stage.test]: probe: stage_begin: run_pass is allowed in batch_begin "
              "only");
}

static void check_hooks(struct fix *f) {
    struct method_run *mr = create(f, NULL);
    REQUIRE(mr, "create: %s", err_msg());
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    float loss;
    int rc = model_forward(&f->m, f->a, f->b.tokens, f->b.targets, B, T,
                           method_run_hooks(mr, 1), &loss);
    CHECK(rc != 0 && strstr(err_msg(), "before method_run_batch_begin"), "no batch: %s",
          rc ? err_msg() : "accepted");
    const float *seen = mt_find_tensor(mr, "probe.seen")->data;
    REQUIRE(method_run_batch_begin(mr, &f->b, 1, 0) == 0, "%s", err_msg());
    mt_forward(&f->m, f->a, &f->b, method_run_hooks(mr, 1));
    int ok = seen[255] == T && seen[254] == 1.0f;
    for (int i = 0; i < B * T; i++) ok &= seen[i] == (float)f->b.example_task[i / T];
    /* A pass over the same examples with T = 4 (as generation does). */
    int32_t tok4[B * 4], tgt4[B * 4];
    for (int i = 0; i < B; i++)
        for (int t = 0; t < 4; t++) tok4[i * 4 + t] = f->b.tokens[i * T + t], tgt4[i * 4 + t] = -1;
    REQUIRE(model_forward(&f->m, f->a, tok4, tgt4, B, 4, method_run_hooks(mr, 0), &loss) == 0,
            "%s", err_msg());
    int ok4 = seen[255] == 4 && seen[254] == 0.0f;
    for (int i = 0; i < B * 4; i++) ok4 &= seen[i] == (float)f->b.example_task[i / 4];
    printf("hooks: row_task, seq and training as expected: %s (T = %d), %s (T = 4, eval)\n",
           ok ? "yes" : "NO", T, ok4 ? "yes" : "NO");
    CHECK(ok && ok4, "hook arguments");

    /* Plugin state through save and load. */
    char dir[] = "/tmp/peft_hostapi_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp");
    char *path = xasprintf("%s/probe.safetensors", dir);
    REQUIRE(method_run_save(mr, path, NULL) == 0, "save: %s", err_msg());
    struct st_file sf;
    REQUIRE(st_open(&sf, path) == 0, "%s", err_msg());
    const struct st_tensor *st = st_find(&sf, "peft.state");
    CHECK(st && st->dtype == ST_U8 && st->numel == 4, "peft.state in the file");
    CHECK(!st_find(&sf, "probe.seen"), "a NO_SAVE tensor was saved");
    st_close(&sf);
    struct method_run *back = create(f, NULL);
    REQUIRE(back && method_run_load(back, path) == 0, "load: %s", err_msg());
    REQUIRE(method_run_begin(back) == 0, "begin: %s", err_msg());
    float origin_fresh = seen[252] - 1, origin_loaded = mt_find_tensor(back, "probe.seen")->data[252] - 1;
    printf("tensor_origin at stage_begin: fresh instance %g (PEFT_ORIGIN_INIT = %d), loaded %g "
           "(PEFT_ORIGIN_LOADED = %d)\n", origin_fresh, PEFT_ORIGIN_INIT, origin_loaded,
           PEFT_ORIGIN_LOADED);
    CHECK(origin_fresh == PEFT_ORIGIN_INIT && origin_loaded == PEFT_ORIGIN_LOADED,
          "tensor_origin: fresh %g, loaded %g", origin_fresh, origin_loaded);
    float got = mt_find_tensor(back, "probe.seen")->data[253];
    printf("plugin state: 2 forwards saved, state_load read %g\n", got);
    CHECK(got == 2.0f, "state round trip: %g", got);
    CHECK(memcmp(mt_find_tensor(back, "probe.vec")->data, mt_find_tensor(mr, "probe.vec")->data, 4096) == 0,
          "tensor round trip");
    method_run_free(back);
    remove_tree(dir);
    free(path);
    method_run_free(mr);
}

static void check_masked_alias(struct fix *f) {
    const char *kv[] = {"mask_site", "true", NULL};
    int32_t q0 = model_site_tensor(&f->m, 0), q1 = model_site_tensor(&f->m, 7);
    struct method_run *mr = create(f, kv);
    REQUIRE(mr, "create: %s", err_msg());
    CHECK(f->m.need_grad[q0] && f->m.need_grad[q1], "need_grad not set");
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    struct mtensor *t = mt_find_tensor(mr, "probe.model.layers.0.self_attn.q_proj.weight");
    REQUIRE(t && t->mask, "masked alias missing");
    CHECK(t->n_trainable == 128 && t->mask[5] == 10, "mask: %llu", (unsigned long long)t->n_trainable);
    CHECK(t->data == model_site_weight(&f->m, 0), "alias storage");
    CHECK(method_run_trainable_count(mr) == 1024 + 2 * 16 + 2 * 128, "trainable %llu",
          (unsigned long long)method_run_trainable_count(mr));

    /* The model forms the masked gradient itself (a sampled product): no dense dW. */
    CHECK(!f->m.need_grad[q0] && f->m.sparse_grad[q0].out == t->grad &&
          f->m.sparse_grad[q0].n == t->n_trainable, "sparse target not set");
    REQUIRE(method_run_batch_begin(mr, &f->b, 1, 0) == 0, "%s", err_msg());
    float *dense = f->m.grads + f->m.tensors[q0].offset;
    memset(dense, 0, t->numel * sizeof(float));
    method_run_zero_grads(mr);
    mt_forward(&f->m, f->a, &f->b, method_run_hooks(mr, 1));
    REQUIRE(model_backward(&f->m, f->a, method_run_hooks(mr, 1)) == 0, "%s", err_msg());
    method_run_collect_grads(mr);
    int untouched = 1;
    for (uint64_t j = 0; j < t->numel; j++) untouched &= dense[j] == 0.0f;
    /* Reference: the same backward with the dense dW, read at the mask. */
    struct model_sparse_grad keep = f->m.sparse_grad[q0];
    model_set_sparse_grad(&f->m, q0, NULL, 0, NULL);
    f->m.need_grad[q0] = 1;
    mt_forward(&f->m, f->a, &f->b, method_run_hooks(mr, 1)); /* a backward consumes its forward */
    REQUIRE(model_backward(&f->m, f->a, method_run_hooks(mr, 1)) == 0, "%s", err_msg());
    f->m.need_grad[q0] = 0;
    model_set_sparse_grad(&f->m, q0, keep.index, keep.n, keep.out);
    double gmax = 0, emax = 0;
    for (uint64_t j = 0; j < t->n_trainable; j++) {
        emax = fmax(emax, fabs(t->grad[j] - dense[t->mask[j]]));
        gmax = fmax(gmax, fabs(dense[t->mask[j]]));
    }
    memset(dense, 0, t->numel * sizeof(float));
    method_run_zero_grads(mr);
    int zeroed = 1;
    for (uint64_t j = 0; j < t->n_trainable; j++) zeroed &= t->grad[j] == 0.0f;
    printf("masked alias: compact grad vs dense grad at the mask: max abs err %.3g (max |g| "
           "%.3g); dense block untouched: %s; zeroed: %s\n", emax, gmax,
           untouched ? "yes" : "NO", zeroed ? "yes" : "NO");
    CHECK(gmax > 0 && emax <= 1e-5 * gmax, "compact gradient");
    CHECK(untouched, "a dense dW was formed for a masked tensor");
    CHECK(zeroed, "zero_grads");

    /* delta = data - start at the site */
    t->data[t->mask[3]] += 0.25f;
    float *d = xalloc_floats(t->numel);
    REQUIRE(method_run_delta(mr, 0, 2.0f, d) == 0, "delta: %s", err_msg());
    int only = 1; /* 2 * 0.25 at the changed entry, plus the probe's own 2 * 1 at [0][0] */
    for (uint64_t j = 0; j < t->numel; j++)
        only &= j == t->mask[3] ? fabs(d[j] - 0.5f) < 1e-6 : d[j] == (j == 0 ? 2.0f : 0.0f);
    CHECK(only, "delta of an aliased tensor");
    t->data[t->mask[3]] -= 0.25f;
    free(d);
    method_run_free(mr);
    CHECK(!f->m.need_grad[q0] && !f->m.need_grad[q1], "need_grad not restored");
}

int main(int argc, char **argv) {
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    struct fix f;
    memset(&f, 0, sizeof f);
    f.pm = mt_method(&reg, argc, argv, "probe");
    mt_model(&f.m, 0, 3, 0.3f);
    model_alloc_grads(&f.m);
    task_table_id(&f.tasks, "a");
    task_table_id(&f.tasks, "b");
    mt_batch(&f.b, B, T, f.m.cfg.vocab, 4);
    f.a = model_acts_new();

    check_sites_and_init(&f);
    check_defects(&f);
    check_hooks(&f);
    check_masked_alias(&f);

    model_acts_free(f.a);
    mt_batch_free(&f.b);
    task_table_free(&f.tasks);
    model_free(&f.m);
    registry_free(&reg);
    printf("%d failures\n", check_failures);
    return check_status();
}
