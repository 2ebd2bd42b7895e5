/*
 * lota_unit: the LoTA plugin (plugins/lota) through the host's method runtime, on the tiny
 * test model, with a stand-in run that serves a calibration stage's task vector (stage_delta)
 * and an earlier stage's adapter file (stage_file).
 *   - the mask is ONE global top-k of |delta| with ties kept: it equals a brute-force
 *     selection (sort all |delta|, tau = k-th largest, keep >= tau) entry for entry, and its
 *     per-site counts are not those of a per-tensor top-k; with heavy ties the count exceeds k
 *     by exactly the ties;
 *   - training with weight decay leaves every frozen entry bit-identical to the base, moves
 *     the masked ones, keeps no dense gradient block and optimizer state for the mask only;
 *   - the plugin's own calibration: after `calibration_steps` dense steps every weight is back
 *     to the base bit for bit, the mask is the top-k of the calibration's task vector, the
 *     optimizer restarted (zero moments, first sparse step of size lr), and step0 goes
 *     through save/load;
 *   - the adapter file holds the sparse task vector (index, value, delta per site), and
 *     loading it restores the weights exactly;
 *   - LoTTO: with `exclude` (a file) or `exclude_stages` (a stage) the new mask is disjoint
 *     from the earlier one even when the new task vector is largest there, and training task
 *     B leaves task A's delta bit-identical;
 *   - bad keys and a stage that ends during calibration are refused with a clear line.
 * Usage: test_lota_unit PLUGIN.so... (the lota plugin among them)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"
#include "optim.h"
#include "safetensors.h"

enum { B = 3, T = 6 };

struct fix {
    struct model m;
    float *base;              /* (n_params) the model before any stage */
    struct model_acts *a;
    struct batch b;
    struct task_table tasks;
    const struct plugin_method *pm;
    char dir[64];
    float **delta;            /* (n_sites) task vector of stage "calib", per site */
    const char *file_stage;   /* stage_file answers for this stage name ... */
    const char *file_path;    /* ... with this path */
};

static int env_delta(void *ctx, const char *stage, int32_t site, float *out) {
    struct fix *f = ctx;
    if (strcmp(stage, "calib") != 0 || !f->delta) return err_set("no stage '%s'", stage);
    memcpy(out, f->delta[site], f->m.tensors[model_site_tensor(&f->m, site)].numel * 4);
    return 0;
}

static int env_file(void *ctx, const char *stage, char *out, size_t cap) {
    struct fix *f = ctx;
    if (!f->file_stage || strcmp(stage, f->file_stage) != 0)
        return err_set("stage '%s' has not finished", stage);
    snprintf(out, cap, "%s", f->file_path);
    return 0;
}

static uint64_t site_numel(const struct fix *f, int32_t s) {
    return f->m.tensors[model_site_tensor(&f->m, s)].numel;
}

static uint64_t total_numel(const struct fix *f) {
    uint64_t n = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++) n += site_numel(f, s);
    return n;
}

/* A method run with the schema's defaults and `kv` (NULL-ended pairs) on top; NULL with
 * err_msg() when creation fails. */
static struct method_run *create(struct fix *f, const char *const *kv) {
    struct method_env env = mt_env(&f->tasks, 7);
    env.run_ctx = f;
    env.stage_delta = env_delta;
    env.stage_file = env_file;
    return mt_run_create(f->pm, &f->m, &env, kv);
}

static struct optim_params opt(double wd) {
    return (struct optim_params){.lr = 1e-2, .weight_decay = wd, .beta1 = 0.9, .beta2 = 0.999,
                                 .eps = 1e-8, .grad_clip = 0, .min_lr_ratio = 0,
                                 .schedule = SCHEDULE_CONSTANT};
}

/* One trainer step (host/stage/train.c); snap (n_params) gets the weights before step_end. */
static void step(struct fix *f, struct method_run *mr, int64_t t, const struct optim_params *p,
                 float *snap) {
    REQUIRE(method_run_batch_begin(mr, &f->b, 1, (uint64_t)(t - 1)) == 0, "%s", err_msg());
    method_run_zero_grads(mr);
    mt_forward(&f->m, f->a, &f->b, method_run_hooks(mr, 1));
    REQUIRE(model_backward(&f->m, f->a, method_run_hooks(mr, 1)) == 0, "%s", err_msg());
    method_run_collect_grads(mr);
    optim_step(mr, p, t);
    if (snap) memcpy(snap, f->m.params, f->m.n_params * sizeof(float));
    REQUIRE(method_run_step_end(mr, (uint64_t)t) == 0, "step_end: %s", err_msg());
}

/* Task vectors for stage "calib": N(0, 1 + spread * site) per entry; `quantum` > 0 rounds them
 * to multiples of it (ties). */
static void set_delta(struct fix *f, uint64_t seed, double spread, float quantum) {
    struct rng g;
    rng_seed(&g, seed);
    for (int32_t s = 0; s < f->m.n_sites; s++)
        for (uint64_t j = 0; j < site_numel(f, s); j++) {
            float v = rng_normal(&g, 0.0f, (float)(1.0 + spread * s));
            f->delta[s][j] = quantum > 0 ? quantum * roundf(v / quantum) : v;
        }
}

/* Per site and entry, 1 where the entry is in the mask. */
struct masks {
    uint8_t **on;            /* (n_sites)[numel] */
    uint64_t count;
};

static void masks_init(struct masks *mk, const struct fix *f) {
    mk->on = xcalloc((size_t)f->m.n_sites, sizeof *mk->on);
    for (int32_t s = 0; s < f->m.n_sites; s++) mk->on[s] = xcalloc(site_numel(f, s), 1);
    mk->count = 0;
}

static void masks_free(struct masks *mk, const struct fix *f) {
    for (int32_t s = 0; s < f->m.n_sites; s++) free(mk->on[s]);
    free(mk->on);
}

/* The run's masks (tensor i is site i: every site is attached, in order). */
static void masks_of(struct masks *mk, const struct fix *f, struct method_run *mr) {
    masks_init(mk, f);
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        struct mtensor *t = method_run_tensor(mr, s);
        REQUIRE(t->mask, "site %d has no mask", s);
        for (uint64_t j = 0; j < t->n_trainable; j++) mk->on[s][t->mask[j]] = 1;
        mk->count += t->n_trainable;
    }
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Brute force: k = floor((1 - sparsity) N) (as a decimal: 0.9 of 3840 keeps 384),
 * tau = the k-th largest |delta| over the entries not excluded, keep those >= tau.
 * delta (n_sites)[numel]. */
static float expected_masks(struct masks *mk, const struct fix *f, float *const *delta,
                            double sparsity, const struct masks *excl) {
    uint64_t N = total_numel(f), n = 0;
    float *all = xmalloc(N * sizeof *all);
    for (int32_t s = 0; s < f->m.n_sites; s++)
        for (uint64_t j = 0; j < site_numel(f, s); j++)
            if (!excl || !excl->on[s][j]) all[n++] = fabsf(delta[s][j]);
    uint64_t k = (uint64_t)floor((1.0 - sparsity) * (double)N + 1e-6);
    if (k > n) k = n;
    qsort(all, n, sizeof *all, cmp_desc);
    float tau = all[k - 1];
    free(all);
    masks_init(mk, f);
    for (int32_t s = 0; s < f->m.n_sites; s++)
        for (uint64_t j = 0; j < site_numel(f, s); j++)
            if ((!excl || !excl->on[s][j]) && fabsf(delta[s][j]) >= tau) {
                mk->on[s][j] = 1;
                mk->count++;
            }
    return tau;
}

static int masks_equal(const struct masks *a, const struct masks *b, const struct fix *f) {
    for (int32_t s = 0; s < f->m.n_sites; s++)
        if (memcmp(a->on[s], b->on[s], site_numel(f, s)) != 0) return 0;
    return 1;
}

static uint64_t masks_overlap(const struct masks *a, const struct masks *b, const struct fix *f) {
    uint64_t n = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++)
        for (uint64_t j = 0; j < site_numel(f, s); j++) n += a->on[s][j] && b->on[s][j];
    return n;
}

static void reset_model(struct fix *f) {
    memcpy(f->m.params, f->base, f->m.n_params * sizeof(float));
}

/* ---- the mask -------------------------------------------------------------------------- */

static void check_global_mask(struct fix *f) {
    reset_model(f);
    set_delta(f, 11, 0.5, 0.0f); /* later sites have larger task vectors */
    const char *kv[] = {"calibrate_from", "calib", "sparsity", "0.9", NULL};
    struct method_run *mr = create(f, kv);
    REQUIRE(mr, "create: %s", err_msg());
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    struct masks got, want;
    masks_of(&got, f, mr);
    float tau = expected_masks(&want, f, f->delta, 0.9, NULL);
    uint64_t N = total_numel(f), k = (uint64_t)floor(0.1 * (double)N);
    /* A per-tensor top-k would keep floor(0.1 numel) at every site. */
    int32_t differ = 0;
    uint64_t first = 0, last = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        uint64_t per_tensor = (uint64_t)floor(0.1 * (double)site_numel(f, s));
        differ += method_run_tensor(mr, s)->n_trainable != per_tensor;
    }
    first = method_run_tensor(mr, 0)->n_trainable;
    last = method_run_tensor(mr, f->m.n_sites - 1)->n_trainable;
    printf("global mask: %llu of %llu entries (k = %llu, tau %.4g); equals the brute-force "
           "global top-k: %s; sites whose count differs from a per-tensor top-k: %d of %d "
           "(first site %llu, last %llu)\n", (unsigned long long)got.count,
           (unsigned long long)N, (unsigned long long)k, (double)tau,
           masks_equal(&got, &want, f) ? "yes" : "NO", differ, f->m.n_sites,
           (unsigned long long)first, (unsigned long long)last);
    CHECK(got.count == k, "count %llu, k %llu (no ties expected)", (unsigned long long)got.count,
          (unsigned long long)k);
    CHECK(masks_equal(&got, &want, f), "the mask is not the global top-k");
    CHECK(differ >= f->m.n_sites / 2 && first < last, "the mask looks per tensor");
    CHECK(f->m.grads == NULL, "a dense gradient block is kept for masked weights");
    masks_free(&got, f);
    masks_free(&want, f);
    method_run_free(mr);
}

static void check_ties(struct fix *f) {
    reset_model(f);
    set_delta(f, 12, 0.0, 0.5f); /* few distinct values: many ties at tau */
    const char *kv[] = {"calibrate_from", "calib", "sparsity", "0.8", NULL};
    struct method_run *mr = create(f, kv);
    REQUIRE(mr, "create: %s", err_msg());
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    struct masks got, want;
    masks_of(&got, f, mr);
    float tau = expected_masks(&want, f, f->delta, 0.8, NULL);
    uint64_t k = (uint64_t)floor(0.2 * (double)total_numel(f)), above = 0, at = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++)
        for (uint64_t j = 0; j < site_numel(f, s); j++) {
            above += fabsf(f->delta[s][j]) > tau;
            at += fabsf(f->delta[s][j]) == tau;
        }
    printf("ties: k = %llu, %llu entries above tau %.3g and %llu at it: %llu trainable; equals "
           "the brute force: %s\n", (unsigned long long)k, (unsigned long long)above,
           (double)tau, (unsigned long long)at, (unsigned long long)got.count,
           masks_equal(&got, &want, f) ? "yes" : "NO");
    CHECK(above < k && above + at >= k, "tau is not the k-th largest");
    CHECK(got.count == above + at && got.count > k, "ties at tau are not all kept");
    CHECK(masks_equal(&got, &want, f), "tie mask differs from the brute force");
    masks_free(&got, f);
    masks_free(&want, f);
    method_run_free(mr);
}

/* ---- training ---------------------------------------------------------------------------- */

static void check_frozen(struct fix *f) {
    reset_model(f);
    set_delta(f, 13, 0.2, 0.0f);
    const char *kv[] = {"calibrate_from", "calib", NULL};
    struct method_run *mr = create(f, kv);
    REQUIRE(mr, "create: %s", err_msg());
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    struct optim_params p = opt(0.1);
    for (int64_t t = 1; t <= 6; t++) step(f, mr, t, &p, NULL);
    uint64_t frozen_same = 0, frozen = 0, moved = 0, masked = 0, state = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        struct mtensor *t = method_run_tensor(mr, s);
        const float *b0 = f->base + f->m.tensors[t->model_tensor].offset;
        uint64_t k = 0;
        for (uint64_t j = 0; j < t->numel; j++) {
            int in = k < t->n_trainable && t->mask[k] == j;
            if (in) {
                k++;
                masked++;
                moved += t->data[j] != b0[j];
            } else {
                frozen++;
                frozen_same += memcmp(&t->data[j], &b0[j], sizeof(float)) == 0;
            }
        }
        state += t->adam_m ? t->n_trainable : 0;
    }
    printf("6 AdamW steps (weight decay 0.1): frozen entries bit-identical: %llu of %llu; masked "
           "entries moved: %llu of %llu; optimizer state for %llu entries; dense gradient "
           "block: %s\n", (unsigned long long)frozen_same, (unsigned long long)frozen,
           (unsigned long long)moved, (unsigned long long)masked, (unsigned long long)state,
           f->m.grads ? "kept" : "none");
    CHECK(frozen_same == frozen && frozen > 0, "frozen entries changed");
    CHECK(moved == masked && masked > 0, "masked entries did not move");
    CHECK(state == masked && method_run_trainable_count(mr) == masked, "optimizer state size");
    CHECK(f->m.grads == NULL, "dense gradients kept");
    REQUIRE(method_run_end(mr) == 0, "end: %s", err_msg());
    method_run_free(mr);
}

static void check_own_calibration(struct fix *f) {
    reset_model(f);
    const char *kv[] = {"calibration_steps", "3", "sparsity", "0.9", NULL};
    struct method_run *mr = create(f, kv);
    REQUIRE(mr, "create: %s", err_msg());
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    CHECK(method_run_trainable_count(mr) == total_numel(f), "calibration is dense");
    struct optim_params p = opt(0.0);
    float *snap = xalloc_floats(f->m.n_params);
    for (int64_t t = 1; t <= 3; t++) step(f, mr, t, &p, snap);
    /* The calibration's task vector: the weights after step 3's update, minus the base. */
    float **dl = xcalloc((size_t)f->m.n_sites, sizeof *dl);
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        const struct model_tensor *mt = &f->m.tensors[model_site_tensor(&f->m, s)];
        dl[s] = xalloc_floats(mt->numel);
        for (size_t j = 0; j < mt->numel; j++)
            dl[s][j] = snap[mt->offset + j] - f->base[mt->offset + j];
    }
    int back = memcmp(f->m.params, f->base, f->m.n_params * sizeof(float)) == 0;
    struct masks got, want;
    masks_of(&got, f, mr);
    expected_masks(&want, f, dl, 0.9, NULL);
    int fresh = 1;
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        struct mtensor *t = method_run_tensor(mr, s);
        fresh &= t->step0 == 3 && t->adam_m != NULL;
        for (uint64_t j = 0; fresh && j < t->n_trainable; j++)
            fresh &= t->adam_m[j] == 0.0f && t->adam_v[j] == 0.0f;
    }
    /* The first sparse step: bias correction restarted, so |update| = lr (no decay). */
    step(f, mr, 4, &p, NULL);
    double ratio_lo = 1e9, ratio_hi = 0;
    uint64_t frozen_bad = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        struct mtensor *t = method_run_tensor(mr, s);
        const float *b0 = f->base + f->m.tensors[t->model_tensor].offset;
        for (uint64_t j = 0; j < t->n_trainable; j++) {
            double r = fabs((double)t->data[t->mask[j]] - b0[t->mask[j]]) / p.lr;
            ratio_lo = fmin(ratio_lo, r);
            ratio_hi = fmax(ratio_hi, r);
        }
        uint64_t k = 0;
        for (uint64_t j = 0; j < t->numel; j++) {
            if (k < t->n_trainable && t->mask[k] == j) {
                k++;
                continue;
            }
            frozen_bad += t->data[j] != b0[j];
        }
    }
    printf("own calibration (3 steps): weights back to the base bit for bit: %s; mask (%llu "
           "entries) = top-k of the calibration's task vector: %s; optimizer restarted (zero "
           "moments, step0 3): %s; first sparse step |dw| / lr in [%.4f, %.4f]; frozen entries "
           "changed: %llu\n", back ? "yes" : "NO", (unsigned long long)got.count,
           masks_equal(&got, &want, f) ? "yes" : "NO", fresh ? "yes" : "NO", ratio_lo,
           ratio_hi, (unsigned long long)frozen_bad);
    CHECK(back, "weights not restored to the base");
    CHECK(masks_equal(&got, &want, f), "mask is not the calibration's top-k");
    CHECK(fresh, "optimizer state did not restart");
    CHECK(ratio_lo > 0.99 && ratio_hi < 1.0001, "first sparse step not of size lr");
    CHECK(frozen_bad == 0, "frozen entries changed");
    CHECK(f->m.grads == NULL, "dense gradients kept after calibration");

    /* step0 goes through a file, with the mask. */
    char *path = xasprintf("%s/own.safetensors", f->dir);
    REQUIRE(method_run_save(mr, path, NULL) == 0, "save: %s", err_msg());
    float *w = xalloc_floats(f->m.n_params);
    memcpy(w, f->m.params, f->m.n_params * sizeof(float));
    reset_model(f);
    struct method_run *mr2 = create(f, kv);
    REQUIRE(mr2 && method_run_load(mr2, path) == 0, "load: %s", err_msg());
    struct masks got2;
    masks_of(&got2, f, mr2);
    int same = memcmp(w, f->m.params, f->m.n_params * sizeof(float)) == 0;
    printf("own calibration through a file: weights bit-identical: %s; masks equal: %s; step0 "
           "%lld\n", same ? "yes" : "NO", masks_equal(&got, &got2, f) ? "yes" : "NO",
           (long long)method_run_tensor(mr2, 0)->step0);
    CHECK(same && masks_equal(&got, &got2, f), "sparse file round trip");
    CHECK(method_run_tensor(mr2, 0)->step0 == 3, "step0 not restored");
    REQUIRE(method_run_begin(mr2) == 0, "begin after load: %s", err_msg());
    CHECK(method_run_trainable_count(mr2) == got.count, "resumed stage_begin changed the mask");
    method_run_free(mr2);
    masks_free(&got2, f);
    free(w);
    free(path);
    masks_free(&got, f);
    masks_free(&want, f);
    for (int32_t s = 0; s < f->m.n_sites; s++) free(dl[s]);
    free(dl);
    free(snap);
    method_run_free(mr);
}

/* ---- LoTTO ------------------------------------------------------------------------------- */

/* The saved sparse task vector of every site: index, value = weight, delta = weight - base. */
static void check_file(struct fix *f, const char *path, const struct masks *mk) {
    struct st_file sf;
    REQUIRE(st_open(&sf, path) == 0, "%s", err_msg());
    int ok = st_meta(&sf, "peft.sparse") != NULL;
    uint64_t entries = 0, dense = 0;
    for (int32_t s = 0; s < f->m.n_sites && ok; s++) {
        const struct model_tensor *mt = &f->m.tensors[model_site_tensor(&f->m, s)];
        char nm[160];
        snprintf(nm, sizeof nm, "%s.sparse_index", mt->name);
        const struct st_tensor *ix = st_find(&sf, nm);
        snprintf(nm, sizeof nm, "%s.sparse_value", mt->name);
        const struct st_tensor *val = st_find(&sf, nm);
        snprintf(nm, sizeof nm, "%s.sparse_delta", mt->name);
        const struct st_tensor *dl = st_find(&sf, nm);
        dense += st_find(&sf, mt->name) != NULL;
        ok = ix && val && dl && ix->dtype == ST_I64 && val->dtype == ST_F32 &&
             dl->dtype == ST_F32 && ix->numel == val->numel && ix->numel == dl->numel;
        if (!ok) break;
        const uint8_t *pi = st_data(&sf, ix), *pv = st_data(&sf, val), *pd = st_data(&sf, dl);
        for (uint64_t j = 0; j < ix->numel && ok; j++) {
            int64_t at;
            float v, d;
            memcpy(&at, pi + 8 * j, 8);
            memcpy(&v, pv + 4 * j, 4);
            memcpy(&d, pd + 4 * j, 4);
            ok = at >= 0 && (uint64_t)at < mt->numel && mk->on[s][at];
            if (!ok) break;
            float w = f->m.params[mt->offset + (size_t)at];
            ok = v == w && d == w - f->base[mt->offset + (size_t)at];
        }
        entries += ix->numel;
    }
    printf("adapter file: sparse task vector of %llu entries (index I64, value, delta) at %d "
           "sites, matches the mask and weights: %s; dense weights in it: %llu\n",
           (unsigned long long)entries, f->m.n_sites, ok ? "yes" : "NO",
           (unsigned long long)dense);
    CHECK(ok && entries == mk->count && dense == 0, "sparse task vector in the file");
    st_close(&sf);
}

static void check_lotto(struct fix *f) {
    /* Task A from the base. */
    reset_model(f);
    set_delta(f, 21, 0.3, 0.0f);
    const char *kv_a[] = {"calibrate_from", "calib", "sparsity", "0.9", NULL};
    struct method_run *ma = create(f, kv_a);
    REQUIRE(ma && method_run_begin(ma) == 0, "task A: %s", err_msg());
    struct optim_params p = opt(0.05);
    for (int64_t t = 1; t <= 5; t++) step(f, ma, t, &p, NULL);
    struct masks mask_a;
    masks_of(&mask_a, f, ma);
    char *file_a = xasprintf("%s/task_a.safetensors", f->dir);
    REQUIRE(method_run_save(ma, file_a, NULL) == 0, "save: %s", err_msg());
    check_file(f, file_a, &mask_a);
    method_run_free(ma);
    float *w_a = xalloc_floats(f->m.n_params);
    memcpy(w_a, f->m.params, f->m.n_params * sizeof(float));

    /* Task B's task vector is largest exactly where A trained. */
    set_delta(f, 22, 0.3, 0.0f);
    for (int32_t s = 0; s < f->m.n_sites; s++)
        for (uint64_t j = 0; j < site_numel(f, s); j++)
            if (mask_a.on[s][j]) f->delta[s][j] = 100.0f + f->delta[s][j];

    const char *kv_plain[] = {"calibrate_from", "calib", "sparsity", "0.9", NULL};
    struct method_run *mp = create(f, kv_plain);
    REQUIRE(mp && method_run_begin(mp) == 0, "task B without exclude: %s", err_msg());
    struct masks mask_plain;
    masks_of(&mask_plain, f, mp);
    method_run_free(mp);

    const char *kv_b[] = {"calibrate_from", "calib", "sparsity", "0.9", "exclude", file_a, NULL};
    struct method_run *mb = create(f, kv_b);
    REQUIRE(mb && method_run_begin(mb) == 0, "task B: %s", err_msg());
    struct masks mask_b, want;
    masks_of(&mask_b, f, mb);
    expected_masks(&want, f, f->delta, 0.9, &mask_a);
    for (int64_t t = 1; t <= 5; t++) step(f, mb, t, &p, NULL);
    uint64_t a_same = 0, rest_bad = 0, b_moved = 0;
    for (int32_t s = 0; s < f->m.n_sites; s++) {
        const struct model_tensor *mt = &f->m.tensors[model_site_tensor(&f->m, s)];
        for (uint64_t j = 0; j < mt->numel; j++) {
            size_t at = mt->offset + j;
            if (mask_a.on[s][j])
                a_same += memcmp(&f->m.params[at], &w_a[at], sizeof(float)) == 0;
            else if (mask_b.on[s][j])
                b_moved += f->m.params[at] != w_a[at];
            else
                rest_bad += memcmp(&f->m.params[at], &f->base[at], sizeof(float)) != 0;
        }
    }

    /* The same exclusion named as an earlier stage of the run. */
    f->file_stage = "task_a";
    f->file_path = file_a;
    memcpy(f->m.params, w_a, f->m.n_params * sizeof(float));
    const char *kv_s[] = {"calibrate_from", "calib", "sparsity", "0.9", "exclude_stages",
                          "task_a", NULL};
    struct method_run *ms = create(f, kv_s);
    REQUIRE(ms && method_run_begin(ms) == 0, "task B by stage: %s", err_msg());
    struct masks mask_s;
    masks_of(&mask_s, f, ms);
    method_run_free(ms);
    f->file_stage = NULL;

    printf("LoTTO: mask A %llu entries; B's task vector largest on A's mask: without exclude B "
           "overlaps A at %llu entries, with exclude at %llu (B: %llu entries, the top-k outside "
           "A: %s; by exclude_stages the same mask: %s); after training B, A's entries "
           "bit-identical: %llu of %llu, B's moved: %llu of %llu, others changed: %llu\n",
           (unsigned long long)mask_a.count,
           (unsigned long long)masks_overlap(&mask_plain, &mask_a, f),
           (unsigned long long)masks_overlap(&mask_b, &mask_a, f),
           (unsigned long long)mask_b.count, masks_equal(&mask_b, &want, f) ? "yes" : "NO",
           masks_equal(&mask_b, &mask_s, f) ? "yes" : "NO", (unsigned long long)a_same,
           (unsigned long long)mask_a.count, (unsigned long long)b_moved,
           (unsigned long long)mask_b.count, (unsigned long long)rest_bad);
    CHECK(masks_overlap(&mask_plain, &mask_a, f) > mask_a.count / 2,
          "the adversarial task vector should pull B onto A without exclude");
    CHECK(masks_overlap(&mask_b, &mask_a, f) == 0, "LoTTO masks overlap");
    CHECK(masks_equal(&mask_b, &want, f), "B's mask is not the top-k outside A");
    CHECK(masks_equal(&mask_b, &mask_s, f), "exclude_stages differs from exclude");
    CHECK(a_same == mask_a.count, "task A's delta changed while training B");
    CHECK(b_moved == mask_b.count && rest_bad == 0, "B moved the wrong entries");
    method_run_free(mb);

    /* A full-style file holds no masks: refused. */
    char *dense_file = xasprintf("%s/dense.safetensors", f->dir);
    reset_model(f);
    const char *kv_d[] = {"calibration_steps", "2", NULL};
    struct method_run *md = create(f, kv_d);
    REQUIRE(md && method_run_save(md, dense_file, NULL) == 0, "%s", err_msg());
    method_run_free(md);
    const char *kv_x[] = {"calibrate_from", "calib", "exclude", dense_file, NULL};
    struct method_run *mx = create(f, kv_x);
    REQUIRE(mx, "create: %s", err_msg());
    int rc = method_run_begin(mx);
    printf("exclude of a file without masks: %s\n", rc ? err_msg() : "accepted");
    CHECK(rc != 0 && strstr(err_msg(), "holds no sparse task vector"), "non-LoTA exclude file");
    method_run_free(mx);

    free(dense_file);
    masks_free(&mask_a, f);
    masks_free(&mask_plain, f);
    masks_free(&mask_b, f);
    masks_free(&mask_s, f);
    masks_free(&want, f);
    free(w_a);
    free(file_a);
}

/* ---- refusals ---------------------------------------------------------------------------- */

static void check_refusals(struct fix *f) {
    reset_model(f);
    static const struct {
        const char *kv[5];
        const char *want;
    } cases[] = {
        {{"sparsity", "1", NULL}, "sparsity must be in [0, 1), got 1"},
        {{"calibration_steps", "0", NULL}, "calibration_steps must be >= 1"},
        {{"random_mask", "true", "calibrate_from", "calib", NULL},
         "random_mask and calibrate_from exclude each other"},
    };
    int ok = 0, n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        struct method_run *mr = create(f, cases[i].kv);
        int hit = !mr && strstr(err_msg(), cases[i].want) != NULL;
        if (!hit) fprintf(stderr, "case %d: %s\n", i, mr ? "accepted" : err_msg());
        ok += hit;
        method_run_free(mr);
    }
    /* The stage ends before its own calibration did. */
    const char *kv[] = {"calibration_steps", "5", NULL};
    struct method_run *mr = create(f, kv);
    REQUIRE(mr && method_run_begin(mr) == 0, "%s", err_msg());
    struct optim_params p = opt(0.0);
    step(f, mr, 1, &p, NULL);
    int rc = method_run_end(mr);
    int early = rc != 0 && strstr(err_msg(), "must exceed calibration_steps") != NULL;
    printf("refusals: %d of %d bad keys refused with the expected line; a stage ending during "
           "calibration: %s\n", ok, n, rc ? err_msg() : "accepted");
    CHECK(ok == n, "bad keys");
    CHECK(early, "early stage end");
    method_run_free(mr);
}

int main(int argc, char **argv) {
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    struct fix f;
    memset(&f, 0, sizeof f);
    f.pm = mt_method(&reg, argc, argv, "lota");
    mt_model(&f.m, 0, 3, 0.3f);
    f.base = xalloc_floats(f.m.n_params);
    memcpy(f.base, f.m.params, f.m.n_params * sizeof(float));
    task_table_id(&f.tasks, "a");
    task_table_id(&f.tasks, "b");
    mt_batch(&f.b, B, T, f.m.cfg.vocab, 4);
    f.a = model_acts_new();
    f.delta = xcalloc((size_t)f.m.n_sites, sizeof *f.delta);
    for (int32_t s = 0; s < f.m.n_sites; s++) f.delta[s] = xalloc_floats(site_numel(&f, s));
    snprintf(f.dir, sizeof f.dir, "/tmp/peft_lota_XXXXXX");
    REQUIRE(mkdtemp(f.dir), "mkdtemp");

    check_global_mask(&f);
    check_ties(&f);
    check_frozen(&f);
    check_own_calibration(&f);
    check_lotto(&f);
    check_refusals(&f);

    remove_tree(f.dir);
    for (int32_t s = 0; s < f.m.n_sites; s++) free(f.delta[s]);
    free(f.delta);
    free(f.base);
    model_acts_free(f.a);
    mt_batch_free(&f.b);
    task_table_free(&f.tasks);
    model_free(&f.m);
    registry_free(&reg);
    return check_status();
}
