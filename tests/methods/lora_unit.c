/*
 * lora_unit: the LoRA plugin's contract, through the real loader and host.
 *   - tensor names and shapes are HF PEFT's (base_model.model.<module>.lora_A.weight [r, d_in],
 *     lora_B.weight [d_out, r]); B is the tensor flagged for negation;
 *   - site matching follows HF PEFT lists (kind, dotted suffix, full name, all-linear) and a
 *     word that matches nothing is refused with the sites listed;
 *   - scale s = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, seen in delta_weight;
 *   - A is U(-1/sqrt(d_in), 1/sqrt(d_in)), B is zero;
 *   - dropout acts in training only;
 *   - bad keys (r = 0, lora_dropout = 1.5) are refused with the key and value named;
 *   - adapter files: a file of another method, another shape, a missing tensor or an extra
 *     tensor is refused with the file and the tensor named.
 * Usage: test_lora_unit PLUGIN.so... (the lora and full plugins among them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"
#include "safetensors.h"

enum { B = 2, T = 5 };

struct fix {
    struct model m;
    struct task_table tasks;
    struct batch b;
    struct model_acts *a;
};

static struct method_run *create(struct fix *f, const struct plugin_method *pm,
                                 const char *const *kv) {
    struct method_env env = mt_env(&f->tasks, 42);
    return mt_run_create(pm, &f->m, &env, kv);
}

static void check_names(struct fix *f, const struct plugin_method *lora) {
    struct method_run *mr = create(f, lora, NULL);
    REQUIRE(mr, "create: %s", err_msg());
    /* defaults: q_proj and v_proj of 2 layers, r = 8 */
    CHECK(method_run_site_count(mr) == 4, "sites %d", method_run_site_count(mr));
    CHECK(method_run_tensor_count(mr) == 8, "tensors %d", method_run_tensor_count(mr));
    static const struct {
        const char *name;
        uint64_t d0, d1;
        int negate;
    } want[] = {
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 8, 16, 0},
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", 16, 8, 1},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", 8, 16, 0},
        {"base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", 8, 8, 1},
        {"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", 8, 16, 0},
        {"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", 8, 8, 1},
    };
    int ok = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct mtensor *t = mt_find_tensor(mr, want[i].name);
        CHECK(t, "no tensor %s", want[i].name);
        if (!t) continue;
        int good = t->desc.ndim == 2 && t->desc.shape[0] == want[i].d0 &&
                   t->desc.shape[1] == want[i].d1 &&
                   !!(t->desc.flags & PEFT_TENSOR_NEGATE) == want[i].negate &&
                   (t->desc.flags & PEFT_TENSOR_TRAINABLE);
        CHECK(good, "%s: shape [%llu, %llu] flags 0x%x", t->name,
              (unsigned long long)t->desc.shape[0], (unsigned long long)t->desc.shape[1],
              t->desc.flags);
        ok += good;
    }
    /* 2 layers x (q: 8*16 + 16*8, v: 8*16 + 8*8) */
    uint64_t n = method_run_trainable_count(mr);
    printf("HF PEFT names and shapes: %d of %zu as expected; %llu trainable entries\n", ok,
           sizeof want / sizeof want[0], (unsigned long long)n);
    CHECK(n == 2 * (256 + 192), "trainable %llu", (unsigned long long)n);

    /* A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)); B = 0 */
    double amax = 0, asum = 0, bmax = 0;
    uint64_t an = 0;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        int is_a = strstr(t->name, "lora_A") != NULL;
        for (uint64_t j = 0; j < t->numel; j++) {
            double v = fabs(t->data[j]) * (is_a ? sqrt((double)t->desc.shape[1]) : 1.0);
            if (is_a) {
                amax = fmax(amax, v);
                asum += v;
                an++;
            } else {
                bmax = fmax(bmax, v);
            }
        }
    }
    printf("init: max |A| sqrt(d_in) = %.4f, mean %.4f (uniform: 1, 0.5); max |B| = %g\n",
           amax, asum / an, bmax);
    CHECK(amax <= 1.0 && amax > 0.97, "A bound: %g", amax);
    CHECK(fabs(asum / an - 0.5) < 0.05, "A mean |x| %g", asum / an);
    CHECK(bmax == 0.0, "B not zero: %g", bmax);
    method_run_free(mr);
}

static void check_matching(struct fix *f, const struct plugin_method *lora) {
    static const struct {
        const char *targets;
        int sites;
    } cases[] = {
        {"all-linear", 14},
        {"q_proj, v_proj", 4},
        {"self_attn.q_proj", 2},
        {"model.layers.1.mlp.down_proj", 1},
        {"mlp.down_proj o_proj", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *kv[] = {"target_modules", cases[i].targets, NULL};
        struct method_run *mr = create(f, lora, kv);
        CHECK(mr, "target_modules '%s': %s", cases[i].targets, err_msg());
        if (!mr) continue;
        printf("target_modules '%s': %d sites\n", cases[i].targets, method_run_site_count(mr));
        CHECK(method_run_site_count(mr) == cases[i].sites, "'%s': %d sites, expected %d",
              cases[i].targets, method_run_site_count(mr), cases[i].sites);
        method_run_free(mr);
    }
    const char *kv[] = {"target_modules", "q_proj v_prj", NULL};
    CHECK(!create(f, lora, kv), "a word matching nothing was accepted");
    printf("refused: %s\n", err_msg());
    CHECK(strcmp(err_msg(), "test.ini [stage.test]: target_modules 'v_prj' matches no site of "
                 "the model (sites are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                 "down_proj)") == 0, "message: %s", err_msg());
    const char *kv2[] = {"target_modules", "layers.0.self_attn.q", NULL};
    CHECK(!create(f, lora, kv2), "a partial word matched");
}

/* delta at site 0 against s * B A computed here in double. */
static double scale_error(struct fix *f, const struct plugin_method *lora, const char *rslora,
                          double s) {
    const char *kv[] = {"r", "4", "lora_alpha", "16", "use_rslora", rslora, NULL};
    struct method_run *mr = create(f, lora, kv);
    REQUIRE(mr, "create: %s", err_msg());
    struct mtensor *A = mt_find_tensor(mr, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    struct mtensor *Bt = mt_find_tensor(mr, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    REQUIRE(A && Bt, "tensors missing");
    struct rng g;
    rng_seed(&g, 3);
    for (uint64_t j = 0; j < Bt->numel; j++) Bt->data[j] = rng_uniform(&g, -1, 1);
    int32_t d_in, d_out, r = 4;
    model_site_dims(&f->m, 0, &d_in, &d_out);
    float *d = xalloc_floats((size_t)d_in * d_out);
    REQUIRE(method_run_delta(mr, 0, 0.5f, d) == 0, "delta: %s", err_msg());
    double worst = 0, big = 0;
    for (int32_t o = 0; o < d_out; o++)
        for (int32_t i = 0; i < d_in; i++) {
            double want = 0;
            for (int32_t k = 0; k < r; k++)
                want += (double)Bt->data[o * r + k] * A->data[k * d_in + i];
            want *= 0.5 * s;
            worst = fmax(worst, fabs(d[o * d_in + i] - want));
            big = fmax(big, fabs(want));
        }
    free(d);
    method_run_free(mr);
    return worst / big;
}

static void check_scale(struct fix *f, const struct plugin_method *lora) {
    double e1 = scale_error(f, lora, "false", 16.0 / 4.0);
    double e2 = scale_error(f, lora, "true", 16.0 / 2.0);
    printf("scale: delta_weight vs 0.5 * s * B A: rel err %.3g (s = alpha/r = 4), %.3g "
           "(rslora: s = alpha/sqrt(r) = 8)\n", e1, e2);
    CHECK(e1 < 1e-6, "scale alpha/r: %g", e1);
    CHECK(e2 < 1e-6, "scale alpha/sqrt(r): %g", e2);
}

static void logits(struct fix *f, struct method_run *mr, int training, float *out) {
    REQUIRE(method_run_batch_begin(mr, &f->b, training, 0) == 0, "%s", err_msg());
    mt_forward(&f->m, f->a, &f->b, method_run_hooks(mr, training));
    memcpy(out, model_logits(f->a), (size_t)B * T * f->m.cfg.vocab * sizeof(float));
}

static void check_dropout(struct fix *f, const struct plugin_method *lora) {
    const char *kv[] = {"lora_dropout", "0.5", NULL};
    struct method_run *drop = create(f, lora, kv), *plain = create(f, lora, NULL);
    REQUIRE(drop && plain, "create: %s", err_msg());
    for (int32_t i = 0; i < method_run_tensor_count(drop); i++) {
        struct mtensor *t = method_run_tensor(drop, i), *u = method_run_tensor(plain, i);
        for (uint64_t j = 0; j < t->numel; j++) t->data[j] += 0.3f * ((float)(j % 7) - 3.0f);
        memcpy(u->data, t->data, t->numel * sizeof(float));
    }
    size_t n = (size_t)B * T * f->m.cfg.vocab;
    float *ev1 = xmalloc(n * 4), *ev2 = xmalloc(n * 4), *ev0 = xmalloc(n * 4);
    float *tr1 = xmalloc(n * 4), *tr2 = xmalloc(n * 4);
    logits(f, drop, 0, ev1);
    logits(f, drop, 0, ev2);
    logits(f, plain, 0, ev0);
    logits(f, drop, 1, tr1);
    logits(f, drop, 1, tr2);
    int eval_same = memcmp(ev1, ev2, n * 4) == 0 && memcmp(ev1, ev0, n * 4) == 0;
    double d_tr = mt_nmse(tr1, ev1, n), d_tr2 = mt_nmse(tr1, tr2, n);
    printf("dropout 0.5: eval logits equal to no-dropout: %s; training vs eval NMSE %.3g, "
           "two training passes NMSE %.3g\n", eval_same ? "yes" : "NO", d_tr, d_tr2);
    CHECK(eval_same, "dropout acts in evaluation");
    CHECK(d_tr > 1e-6 && d_tr2 > 1e-6, "dropout inactive in training");
    free(ev1), free(ev2), free(ev0), free(tr1), free(tr2);
    method_run_free(drop);
    method_run_free(plain);
}

static void check_bad_keys(struct fix *f, const struct plugin_method *lora) {
    const char *r0[] = {"r", "0", NULL};
    CHECK(!create(f, lora, r0), "r = 0 accepted");
    printf("r = 0: %s\n", err_msg());
    CHECK(strncmp(err_msg(), "test.ini [stage.test]: lora: r must be", 38) == 0 &&
          strstr(err_msg(), "got 0"), "message: %s", err_msg());
    const char *p15[] = {"lora_dropout", "1.5", NULL};
    CHECK(!create(f, lora, p15), "lora_dropout = 1.5 accepted");
    printf("lora_dropout = 1.5: %s\n", err_msg());
    CHECK(strstr(err_msg(), "lora: lora_dropout must be in [0, 1), got 1.5"), "message: %s",
          err_msg());
}

static void expect_load_error(struct method_run *mr, const char *path, const char *want) {
    int rc = method_run_load(mr, path);
    printf("load refused: %s\n", rc ? err_msg() : "(accepted)");
    CHECK(rc != 0 && strcmp(err_msg(), want) == 0, "load: got '%s', want '%s'",
          rc ? err_msg() : "ok", want);
}

static void check_files(struct fix *f, const struct plugin_method *lora,
                        const struct plugin_method *full, const char *dir) {
    char *path = xasprintf("%s/lora.safetensors", dir);
    struct method_run *mr = create(f, lora, NULL);
    REQUIRE(mr && method_run_save(mr, path, NULL) == 0, "save: %s", err_msg());
    method_run_free(mr);
    struct st_file sf;
    REQUIRE(st_open(&sf, path) == 0, "%s", err_msg());
    const struct st_tensor *t =
        st_find(&sf, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 8 && t->shape[1] == 8,
          "file layout");
    CHECK(sf.n_tensors == 8, "file has %d tensors", sf.n_tensors);
    st_close(&sf);

    char *want;
    const char *none[] = {NULL};
    mr = create(f, full, none);
    REQUIRE(mr, "%s", err_msg());
    want = xasprintf("%s: written by method 'lora', not 'full'", path);
    expect_load_error(mr, path, want);
    free(want);
    method_run_free(mr);

    const char *r4[] = {"r", "4", NULL};
    mr = create(f, lora, r4);
    want = xasprintf("%s: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A."
                     "weight' has shape [8, 16], the method expects [4, 16]", path);
    expect_load_error(mr, path, want);
    free(want);
    method_run_free(mr);

    const char *more[] = {"target_modules", "q_proj v_proj k_proj", NULL};
    mr = create(f, lora, more);
    want = xasprintf("%s: tensor 'base_model.model.model.layers.0.self_attn.k_proj.lora_A."
                     "weight' missing", path);
    expect_load_error(mr, path, want);
    free(want);
    method_run_free(mr);

    const char *fewer[] = {"target_modules", "q_proj", NULL};
    mr = create(f, lora, fewer);
    want = xasprintf("%s: tensor 'base_model.model.model.layers.0.self_attn.v_proj.lora_A."
                     "weight' is not a tensor of this lora run (other target_modules or "
                     "keys?)", path);
    expect_load_error(mr, path, want);
    free(want);
    char *nofile = xasprintf("%s/absent.safetensors", dir);
    CHECK(method_run_load(mr, nofile) != 0 && strstr(err_msg(), nofile), "missing file: %s",
          err_msg());
    free(nofile);
    method_run_free(mr);
    remove(path);
    free(path);
}

int main(int argc, char **argv) {
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    const struct plugin_method *lora = mt_method(&reg, argc, argv, "lora");
    const struct plugin_method *full = mt_method(&reg, argc, argv, "full");
    char dir[] = "/tmp/peft_lora_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp");
    struct fix f;
    memset(&f, 0, sizeof f);
    mt_model(&f.m, 0, 7, 0.3f);
    task_table_id(&f.tasks, "a");
    task_table_id(&f.tasks, "b");
    mt_batch(&f.b, B, T, f.m.cfg.vocab, 8);
    f.a = model_acts_new();

    check_names(&f, lora);
    check_matching(&f, lora);
    check_scale(&f, lora);
    check_dropout(&f, lora);
    check_bad_keys(&f, lora);
    check_files(&f, lora, full, dir);

    model_acts_free(f.a);
    mt_batch_free(&f.b);
    task_table_free(&f.tasks);
    model_free(&f.m);
    remove_tree(dir);
    registry_free(&reg);
    printf("%d failures\n", check_failures);
    return check_status();
}
