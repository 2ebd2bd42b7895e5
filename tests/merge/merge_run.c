/*
 * merge_run.c: merge stages in a real chain (two LoRAs, a full stage and two LoTA stages
 * trained a few steps on a tiny model), checked against the inputs' own ΔW, which the test
 * asks of the method runs itself; then HF PEFT export and import, and inspect.
 *   - delta space: Σ w_i ΔW_i written as a task vector equals the inputs' ΔW sum within fp32
 *     rounding; the merged weights are the start plus it; a full fine-tuning input counts
 *     with its dense change;
 *   - output = lora at rank >= the true rank reproduces the sum (SVD exact); at a lower rank
 *     the error the stage reports is the error of the adapter it wrote;
 *   - negation: delta space gives -ΔW; factor space flips B (A untouched), so ΔW -> -ΔW;
 *   - factor-space addition is the PEM formula (A and B averaged separately with weights
 *     normalised to 1) and differs from the ΔW average by the cross terms; a negative weight
 *     negates its module first;
 *   - two LoTA stages with disjoint masks merged by LoTA's additive merge: a sparse task
 *     vector on the union of the masks, every value exact;
 *   - a stage can start from a merge; a second run reuses every stage and rebuilds the same
 *     weights bit for bit;
 *   - HF PEFT: export writes exactly the config keys and tensor names HF PEFT writes for LoRA;
 *     import gives back the same tensors bit for bit and the same ΔW; bad folders are refused
 *     with one line naming the problem;
 *   - inspect prints the adapter's method, metadata and tensor lines;
 *   - HF PEFT's Poly: an MHR adapter exported as a POLY folder has exactly the config keys and
 *     the tensors (names, shapes) of PEFT's Poly (tuners/poly: poly_lora_A (n_splits, n_skills,
 *     in / n_splits, r), poly_lora_B (n_splits, n_skills, r, out / n_splits),
 *     poly_router.module_logits (n_tasks, n_splits * n_skills)), A and the routing bit for bit
 *     and B times lora_alpha (PEFT divides by r alone);
 *   - shared initialisation: two LoRA stages of one init_seed (other tasks, other stage
 *     seeds) start from the same lora_A, bit for bit, and carry one init fingerprint; another
 *     init_seed gives another A and another fingerprint.
 */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_meta.h"
#include "check.h"
#include "inspect.h"
#include "merge.h"
#include "peft_hf.h"
#include "run.h"
#include "safetensors.h"

static char tmp[64];

static const char *ini_text =
    "[run]\nout = %s/out\nseed = 3\nthreads = 1\n"
    "[model]\nd_model = 16\nn_layers = 2\nn_heads = 2\nd_ff = 32\nmax_seq = 40\n"
    "[data]\nn_train = 32\nn_eval = 8\n"
    "[stage.base]\nmethod = full\ntasks = upper\nsteps = 3\nbatch_size = 4\n"
    "[stage.a]\nmethod = lora\nfrom = base\ntasks = reverse\nsteps = 4\nbatch_size = 4\nlr = 0.05\n"
    "r = 4\nlora_alpha = 8\ntarget_modules = all-linear\n"
    "[stage.b]\nmethod = lora\nfrom = base\ntasks = swap\nsteps = 4\nbatch_size = 4\nlr = 0.05\n"
    "r = 4\nlora_alpha = 8\ntarget_modules = all-linear\n"
    "[stage.fb]\nmethod = full\nfrom = base\ntasks = swap\nsteps = 3\nbatch_size = 4\n"
    "[stage.sum]\nmerge = add\ninputs = a b\nweights = 0.7 -1.3\n"
    "[stage.sum_lora]\nmerge = add\ninputs = a b\nweights = 0.7 -1.3\noutput = lora\nrank = 8\n"
    "[stage.low]\nmerge = add\ninputs = a b\noutput = lora\nrank = 2\n"
    "[stage.neg]\nmerge = negate\ninputs = a\n"
    "[stage.fneg]\nmerge = negate\nspace = factor\ninputs = a\n"
    "[stage.fadd]\nmerge = add\nspace = factor\ninputs = a b\nweights = 3 1\n"
    "[stage.mixed]\nmerge = add\ninputs = a fb\n"
    "[stage.chain]\nmethod = lora\nfrom = sum_lora\ntasks = upper\nsteps = 2\nbatch_size = 4\n"
    "[stage.fsub]\nmerge = add\nspace = factor\ninputs = a b\nweights = 1 -1\n"
    "[stage.la]\nmethod = lota\nfrom = base\ntasks = reverse\nsteps = 4\nbatch_size = 4\n"
    "calibration_steps = 2\nsparsity = 0.9\n"
    "[stage.lb]\nmethod = lota\nfrom = base\ntasks = swap\nsteps = 4\nbatch_size = 4\n"
    "calibration_steps = 2\nsparsity = 0.9\nexclude_stages = la\n"
    "[stage.ladd]\nmerge = additive\ninputs = la lb\n"
    /* learning rate 0: the adapters as they were initialised */
    "[stage.i0]\nmethod = lora\nfrom = base\ntasks = reverse\nsteps = 1\nbatch_size = 4\nlr = 0\n"
    "r = 4\ntarget_modules = all-linear\n"
    "[stage.i1]\nmethod = lora\nfrom = base\ntasks = swap\nsteps = 1\nbatch_size = 4\nlr = 0\n"
    "r = 4\ntarget_modules = all-linear\nseed = 77\n"
    "[stage.i2]\nmethod = lora\nfrom = base\ntasks = reverse\nsteps = 1\nbatch_size = 4\nlr = 0\n"
    "r = 4\ntarget_modules = all-linear\ninit_seed = 11\n"
    "[stage.p]\nmethod = poly\nfrom = base\ntasks = reverse swap\nsteps = 2\nbatch_size = 4\n"
    "variant = mhr\nn_splits = 2\nn_skills = 3\nr = 2\nlora_alpha = 2\n"
    "target_modules = q_proj v_proj down_proj\n"
    "[stage.ia]\nmethod = ia3\nfrom = base\ntasks = reverse\nsteps = 3\nbatch_size = 4\nlr = 0.05\n"
    "[stage.do]\nmethod = dora\nfrom = base\ntasks = reverse\nsteps = 3\nbatch_size = 4\nlr = 0.05\n"
    "r = 2\ntarget_modules = q_proj down_proj\n";

static int32_t stage_index(const struct run *r, const char *name) {
    for (int32_t i = 0; i < r->n_stages; i++)
        if (strcmp(r->stages[i].name, name) == 0) return i;
    REQUIRE(0, "no stage %s", name);
    return -1;
}

/* Every site's ΔW of an adapter file read into a fresh run of its method; (n_sites) arrays,
 * NULL where the adapter does not touch the site. */
static float **file_deltas(struct run *r, const char *path) {
    struct st_file f;
    REQUIRE(st_open(&f, path) == 0, "%s", err_msg());
    const struct plugin_method *pm = registry_find(&r->reg, st_meta(&f, "peft.method"));
    struct kv_list kv;
    REQUIRE(pm && adapter_file_kv(&f, pm, &kv) == 0, "%s", err_msg());
    st_close(&f);
    struct method_run *mr;
    REQUIRE(run_method_create(r, path, "check", 1, pm, kv.kv, kv.n, &mr) == 0, "%s", err_msg());
    REQUIRE(method_run_load(mr, path) == 0, "%s", err_msg());
    float **d = xcalloc((size_t)r->model.n_sites, sizeof *d);
    for (int32_t i = 0; i < method_run_site_count(mr); i++) {
        int32_t s = method_run_site(mr, i), d_in, d_out;
        model_site_dims(&r->model, s, &d_in, &d_out);
        d[s] = xalloc_floats((size_t)d_in * d_out);
        REQUIRE(method_run_delta(mr, s, 1.0f, d[s]) == 0, "%s", err_msg());
    }
    method_run_free(mr);
    kv_list_free(&kv);
    return d;
}

static void free_deltas(const struct run *r, float **d) {
    for (int32_t s = 0; s < r->model.n_sites; s++) free(d[s]);
    free(d);
}

static size_t site_numel(const struct run *r, int32_t s) {
    int32_t d_in, d_out;
    model_site_dims(&r->model, s, &d_in, &d_out);
    return (size_t)d_in * d_out;
}

/* Worst |got - want| over all sites, relative to the largest |want|. */
struct cmp {
    double max_abs, scale;
};

static void cmp_add(struct cmp *c, double got, double want) {
    c->max_abs = fmax(c->max_abs, fabs(got - want));
    c->scale = fmax(c->scale, fabs(want));
}

static double cmp_rel(const struct cmp *c) {
    return c->scale > 0 ? c->max_abs / c->scale : c->max_abs;
}

static char *stage_path(const struct run *r, const char *stage, const char *file) {
    char *dir = path_join(r->out_dir, stage), *p = path_join(dir, file);
    free(dir);
    return p;
}

/* A snapshot's weights as one block laid out as params (the caller frees). */
static float *flat(struct run *r, const struct model_snapshot *s) {
    float *out = xalloc_floats(r->model.n_params);
    for (int32_t t = 0; t < r->model.n_tensors; t++)
        model_snapshot_read(s, &r->model, t, out + r->model.tensors[t].offset);
    return out;
}

static void check_delta_space(struct run *r, float **da, float **db) {
    /* The task vector file of `sum` against 0.7 ΔA - 1.3 ΔB (reference in double). */
    char *p = stage_path(r, "sum", "task_vector.safetensors");
    struct st_file f;
    REQUIRE(st_open(&f, p) == 0, "%s", err_msg());
    CHECK(st_meta(&f, "peft.kind") && strcmp(st_meta(&f, "peft.kind"), "task_vector") == 0);
    CHECK(st_meta(&f, "peft.merge") && strcmp(st_meta(&f, "peft.merge"), "add") == 0);
    CHECK(st_meta(&f, "peft.merge_space") &&
          strncmp(st_meta(&f, "peft.merge_space"), "delta", 5) == 0);
    struct cmp tv = {0}, w = {0};
    int32_t is = stage_index(r, "sum");
    float *start = flat(r, run_stage_start(r, &r->stages[is])), *end = flat(r, r->stages[is].result_params);
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        const struct model_tensor *mt = &r->model.tensors[model_site_tensor(&r->model, s)];
        const struct st_tensor *t = st_find(&f, mt->name);
        REQUIRE(t && t->numel == mt->numel, "sum: no tensor %s", mt->name);
        float *x = xalloc_floats(t->numel);
        REQUIRE(st_read_f32(&f, t, x, t->numel) == 0, "%s", err_msg());
        for (size_t j = 0; j < t->numel; j++) {
            double want = 0.7 * (double)da[s][j] - 1.3 * (double)db[s][j];
            cmp_add(&tv, x[j], want);
            /* the merged weights: start + τ, one fp32 rounding of the weight */
            double sum = (double)start[mt->offset + j] + x[j];
            w.max_abs =
                fmax(w.max_abs, fabs((double)end[mt->offset + j] - sum) / fmax(fabs(sum), 1e-30));
        }
        free(x);
    }
    st_close(&f);
    free(p);
    free(start);
    free(end);
    printf("delta add: task vector vs 0.7 dA - 1.3 dB: max abs error %.2e (%.2e of the largest "
           "entry); merged weights vs start + tau: max relative %.2e\n",
           tv.max_abs, cmp_rel(&tv), w.max_abs);
    CHECK(cmp_rel(&tv) < 3e-7, "task vector: %g", cmp_rel(&tv));
    CHECK(w.max_abs < 1.2e-7, "merged weights: %g", w.max_abs);

    /* output = lora of rank 8 >= 4 + 4: the SVD is exact up to fp32. */
    p = stage_path(r, "sum_lora", "adapter.safetensors");
    float **dl = file_deltas(r, p);
    free(p);
    struct cmp lo = {0};
    for (int32_t s = 0; s < r->model.n_sites; s++)
        for (size_t j = 0; dl[s] && j < site_numel(r, s); j++)
            cmp_add(&lo, dl[s][j], 0.7 * (double)da[s][j] - 1.3 * (double)db[s][j]);
    int32_t il = stage_index(r, "sum_lora");
    printf("delta add -> lora rank 8 (true rank <= 8): max abs error %.2e (%.2e relative), "
           "reported SVD error %.2e, %d sites\n",
           lo.max_abs, cmp_rel(&lo), r->stages[il].merge->svd_max_rel_error,
           r->stages[il].merge->n_sites);
    CHECK(cmp_rel(&lo) < 2e-6 && r->stages[il].merge->svd_max_rel_error < 2e-6, "lora rank 8: %g",
          cmp_rel(&lo));
    CHECK(r->stages[il].merge->n_sites == r->model.n_sites, "all-linear: every site");
    free_deltas(r, dl);

    /* Rank 2 < the true rank: the error the stage reports is the adapter's error. */
    p = stage_path(r, "low", "adapter.safetensors");
    dl = file_deltas(r, p);
    free(p);
    double worst = 0;
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        double num = 0, den = 0;
        for (size_t j = 0; j < site_numel(r, s); j++) {
            double want = (double)da[s][j] + db[s][j];
            num += (dl[s][j] - want) * (dl[s][j] - want);
            den += want * want;
        }
        worst = fmax(worst, sqrt(num / den));
    }
    double reported = r->stages[stage_index(r, "low")].merge->svd_max_rel_error;
    printf("delta add -> lora rank 2: worst site relative error %.4f, reported %.4f\n", worst,
           reported);
    CHECK(worst > 0.01 && fabs(worst - reported) < 1e-4, "%g vs %g", worst, reported);
    free_deltas(r, dl);

    /* negate in delta space: -ΔA exactly (the sign of a product flips exactly). */
    p = stage_path(r, "neg", "task_vector.safetensors");
    REQUIRE(st_open(&f, p) == 0, "%s", err_msg());
    struct cmp ng = {0};
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        const struct model_tensor *mt = &r->model.tensors[model_site_tensor(&r->model, s)];
        const struct st_tensor *t = st_find(&f, mt->name);
        REQUIRE(t, "neg: %s", mt->name);
        float *x = xalloc_floats(t->numel);
        REQUIRE(st_read_f32(&f, t, x, t->numel) == 0, "%s", err_msg());
        for (size_t j = 0; j < t->numel; j++) cmp_add(&ng, x[j], -(double)da[s][j]);
        free(x);
    }
    st_close(&f);
    free(p);
    printf("delta negate: vs -dA max abs error %.2e\n", ng.max_abs);
    CHECK(ng.max_abs == 0, "negate: %g", ng.max_abs);

    /* A full fine-tuning input: its dense change, fb - base, added to ΔA. */
    int32_t ifb = stage_index(r, "fb"), im = stage_index(r, "mixed");
    float *fb_end = flat(r, r->stages[ifb].result_params),
          *fb_start = flat(r, run_stage_start(r, &r->stages[ifb]));
    p = stage_path(r, "mixed", "task_vector.safetensors");
    REQUIRE(st_open(&f, p) == 0, "%s", err_msg());
    struct cmp mx = {0};
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        const struct model_tensor *mt = &r->model.tensors[model_site_tensor(&r->model, s)];
        const struct st_tensor *t = st_find(&f, mt->name);
        REQUIRE(t, "mixed: %s", mt->name);
        float *x = xalloc_floats(t->numel);
        REQUIRE(st_read_f32(&f, t, x, t->numel) == 0, "%s", err_msg());
        for (size_t j = 0; j < t->numel; j++)
            cmp_add(&mx, x[j],
                    (double)da[s][j] + ((double)fb_end[mt->offset + j] - fb_start[mt->offset + j]));
        free(x);
    }
    st_close(&f);
    free(p);
    free(fb_end);
    free(fb_start);
    printf("delta add of lora and full: max abs error %.2e (%.2e relative), %d sites\n", mx.max_abs,
           cmp_rel(&mx), r->stages[im].merge->n_sites);
    CHECK(cmp_rel(&mx) < 3e-7, "mixed: %g", cmp_rel(&mx));
}

/* LoTA's sparse task vectors (disjoint masks, LoTTO) merged by LoTA's additive merge: the
 * output stays sparse, its support is the union of the masks, each value a task vector's. */
static void check_sparse(struct run *r) {
    int32_t ia = stage_index(r, "la"), ib = stage_index(r, "lb");
    float *base = flat(r, run_stage_start(r, &r->stages[ia]));
    float *wa = flat(r, r->stages[ia].result_params), *wb = flat(r, r->stages[ib].result_params);
    char *p = stage_path(r, "ladd", "task_vector.safetensors");
    struct st_file f;
    REQUIRE(st_open(&f, p) == 0, "%s", err_msg());
    uint64_t stored = 0, changed = 0;
    double err = 0;
    int all_sparse = 1;
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        const struct model_tensor *mt = &r->model.tensors[model_site_tensor(&r->model, s)];
        char ix[160], dl[160];
        snprintf(ix, sizeof ix, "%s.sparse_index", mt->name);
        snprintf(dl, sizeof dl, "%s.sparse_delta", mt->name);
        const struct st_tensor *ti = st_find(&f, ix), *td = st_find(&f, dl);
        all_sparse &= st_find(&f, mt->name) == NULL;
        float *want = xalloc_floats(mt->numel), *got = xalloc_floats(mt->numel);
        for (size_t j = 0; j < mt->numel; j++) {
            float da = wa[mt->offset + j] - base[mt->offset + j],
                  db = wb[mt->offset + j] - base[mt->offset + j];
            CHECK(da == 0 || db == 0, "masks overlap at %s[%zu]", mt->name, j);
            want[j] = da + db;
            changed += want[j] != 0;
        }
        if (ti && td) {
            REQUIRE(ti->dtype == ST_I64 && ti->numel == td->numel, "sparse parts");
            const int64_t *idx = st_data(&f, ti);
            float *v = xalloc_floats(td->numel);
            REQUIRE(st_read_f32(&f, td, v, td->numel) == 0, "%s", err_msg());
            for (uint64_t k = 0; k < ti->numel; k++) got[idx[k]] = v[k];
            stored += ti->numel;
            free(v);
        }
        for (size_t j = 0; j < mt->numel; j++) err = fmax(err, fabs(got[j] - want[j]));
        free(want);
        free(got);
    }
    st_close(&f);
    free(p);
    free(base);
    free(wa);
    free(wb);
    printf("sparse additive merge of two LoTA stages (disjoint masks): %llu entries stored, %llu "
           "changed by the stages, max abs error %.1e\n",
           (unsigned long long)stored, (unsigned long long)changed, err);
    CHECK(all_sparse && stored > 0 && stored == changed && err == 0, "sparse merge");
}

/* A tensor of an adapter file by name, as floats (caller frees). */
static float *file_tensor(const char *path, const char *name, uint64_t *numel) {
    struct st_file f;
    REQUIRE(st_open(&f, path) == 0, "%s", err_msg());
    const struct st_tensor *t = st_find(&f, name);
    REQUIRE(t, "%s: no %s", path, name);
    float *x = xalloc_floats(t->numel);
    REQUIRE(st_read_f32(&f, t, x, t->numel) == 0, "%s", err_msg());
    *numel = t->numel;
    st_close(&f);
    return x;
}

static void check_factor_space(struct run *r, float **da, float **db) {
    char *pa = stage_path(r, "a", "adapter.safetensors"),
         *pb = stage_path(r, "b", "adapter.safetensors");
    char *pn = stage_path(r, "fneg", "adapter.safetensors"),
         *pf = stage_path(r, "fadd", "adapter.safetensors");
    char *ps = stage_path(r, "fsub", "adapter.safetensors");
    double neg_err = 0, avg_err = 0, sub_err = 0;
    struct cmp formula = {0}, versus = {0};
    const double ca = 0.75, cb = 0.25, scale = 8.0 / 4.0; /* weights 3 1; lora_alpha / r */
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        char site[128], nA[256], nB[256];
        model_site_name(&r->model, s, site, sizeof site);
        hf_lora_tensor_name(nA, sizeof nA, site, 'A');
        hf_lora_tensor_name(nB, sizeof nB, site, 'B');
        uint64_t n1, n2;
        float *Aa = file_tensor(pa, nA, &n1), *Ba = file_tensor(pa, nB, &n2);
        float *Ab = file_tensor(pb, nA, &n1), *Bb = file_tensor(pb, nB, &n2);
        float *An = file_tensor(pn, nA, &n1), *Bn = file_tensor(pn, nB, &n2);
        float *Af = file_tensor(pf, nA, &n1), *Bf = file_tensor(pf, nB, &n2);
        float *As = file_tensor(ps, nA, &n1), *Bs = file_tensor(ps, nB, &n2);
        for (uint64_t j = 0; j < n1; j++) {
            neg_err = fmax(neg_err, fabs(An[j] - Aa[j]));
            avg_err = fmax(avg_err, fabs(Af[j] - (ca * Aa[j] + cb * Ab[j])));
            sub_err = fmax(sub_err, fabs(As[j] - (0.5 * Aa[j] + 0.5 * Ab[j])));
        }
        for (uint64_t j = 0; j < n2; j++) {
            neg_err = fmax(neg_err, fabs(Bn[j] + Ba[j]));
            avg_err = fmax(avg_err, fabs(Bf[j] - (ca * Ba[j] + cb * Bb[j])));
            sub_err = fmax(sub_err, fabs(Bs[j] - (0.5 * Ba[j] - 0.5 * Bb[j])));
        }
        free(As);
        free(Bs);
        /* ΔW of fadd against s (ca Ba + cb Bb)(ca Aa + cb Ab) and against ca ΔA + cb ΔB. */
        int32_t d_in, d_out, rk = 4;
        model_site_dims(&r->model, s, &d_in, &d_out);
        float *dw = xalloc_floats((size_t)d_in * d_out);
        for (int32_t i = 0; i < d_out; i++)
            for (int32_t j = 0; j < d_in; j++) {
                double x = 0;
                for (int32_t q = 0; q < rk; q++)
                    x += (ca * Ba[i * rk + q] + cb * Bb[i * rk + q]) *
                         (ca * Aa[q * d_in + j] + cb * Ab[q * d_in + j]);
                dw[i * d_in + j] = (float)(scale * x);
                cmp_add(&versus, dw[i * d_in + j],
                        ca * da[s][i * d_in + j] + cb * db[s][i * d_in + j]);
            }
        free(dw);
        float *all[8] = {Aa, Ba, Ab, Bb, An, Bn, Af, Bf};
        for (int k = 0; k < 8; k++) free(all[k]);
    }
    /* The adapter fadd wrote, read by its method: its ΔW is the formula. */
    float **df = file_deltas(r, pf), **dn = file_deltas(r, pn);
    struct cmp neg_dw = {0};
    for (int32_t s = 0; s < r->model.n_sites; s++) {
        char site[128], nA[256], nB[256];
        model_site_name(&r->model, s, site, sizeof site);
        hf_lora_tensor_name(nA, sizeof nA, site, 'A');
        hf_lora_tensor_name(nB, sizeof nB, site, 'B');
        uint64_t n1, n2;
        float *Af = file_tensor(pf, nA, &n1), *Bf = file_tensor(pf, nB, &n2);
        int32_t d_in, d_out, rk = 4;
        model_site_dims(&r->model, s, &d_in, &d_out);
        for (int32_t i = 0; i < d_out; i++)
            for (int32_t j = 0; j < d_in; j++) {
                double x = 0;
                for (int32_t q = 0; q < rk; q++) x += (double)Bf[i * rk + q] * Af[q * d_in + j];
                cmp_add(&formula, df[s][i * d_in + j], scale * x);
                cmp_add(&neg_dw, dn[s][i * d_in + j], -(double)da[s][i * d_in + j]);
            }
        free(Af);
        free(Bf);
    }
    printf("factor negate: A kept, B flipped: max abs error %.1e; its dW vs -dA: %.1e\n", neg_err,
           neg_dw.max_abs);
    printf("factor add (weights 3 1 -> 0.75 0.25): tensors vs the weighted average %.1e; dW vs "
           "s (avg B)(avg A) %.1e relative; vs 0.75 dA + 0.25 dB (cross terms): %.3f relative\n",
           avg_err, cmp_rel(&formula), cmp_rel(&versus));
    CHECK(neg_err == 0 && neg_dw.max_abs == 0, "factor negate: %g %g", neg_err, neg_dw.max_abs);
    CHECK(avg_err < 1e-7 && cmp_rel(&formula) < 1e-6, "factor add: %g %g", avg_err,
          cmp_rel(&formula));
    CHECK(cmp_rel(&versus) > 0.05, "factor add must differ from the dW average: %g",
          cmp_rel(&versus));
    printf(
        "factor add with weights 1 -1: A = (Aa + Ab) / 2, B = (Ba - Bb) / 2 (b negated): max abs "
        "error %.1e\n",
        sub_err);
    CHECK(sub_err < 1e-7, "factor subtraction: %g", sub_err);
    free(ps);
    free_deltas(r, df);
    free_deltas(r, dn);
    free(pa);
    free(pb);
    free(pn);
    free(pf);
}

static const char *const hf_keys[] = {"alpha_pattern",
                                      "base_model_name_or_path",
                                      "bias",
                                      "fan_in_fan_out",
                                      "inference_mode",
                                      "init_lora_weights",
                                      "lora_alpha",
                                      "lora_dropout",
                                      "modules_to_save",
                                      "peft_type",
                                      "r",
                                      "rank_pattern",
                                      "target_modules",
                                      "task_type",
                                      "use_rslora"};

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = path_join(dir, name);
    REQUIRE(file_write_atomic(p, text, strlen(text)) == 0, "%s", err_msg());
    free(p);
}

static void check_hf(struct run *r, float **da) {
    char *src = stage_path(r, "a", "adapter.safetensors");
    char *hf = path_join(tmp, "hf_a"), *back = path_join(tmp, "a_back.safetensors");
    REQUIRE(peft_export(&r->reg, src, hf, "tiny/llama") == 0, "%s", err_msg());
    /* adapter_config.json: exactly the well-established keys, sorted, with their values. */
    char *cfgp = path_join(hf, "adapter_config.json"), *text;
    size_t len;
    REQUIRE(file_read_all(cfgp, &text, &len) == 0, "%s", err_msg());
    cJSON *j = cJSON_Parse(text);
    REQUIRE(cJSON_IsObject(j), "adapter_config.json is not JSON");
    int n = 0, in_order = 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        in_order &= n < 15 && strcmp(it->string, hf_keys[n]) == 0;
        n++;
    }
    CHECK(n == 15 && in_order, "config keys: %d, in order %d", n, in_order);
#define JSTR(k, v)                                                                                 \
    (cJSON_IsString(cJSON_GetObjectItem(j, k)) &&                                                  \
     strcmp(cJSON_GetObjectItem(j, k)->valuestring, v) == 0)
#define JNUM(k) cJSON_GetNumberValue(cJSON_GetObjectItem(j, k))
    CHECK(JSTR("peft_type", "LORA") && JSTR("task_type", "CAUSAL_LM") && JSTR("bias", "none") &&
          JSTR("base_model_name_or_path", "tiny/llama") && JSTR("target_modules", "all-linear"));
    CHECK(JNUM("r") == 4 && JNUM("lora_alpha") == 8 && JNUM("lora_dropout") == 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "inference_mode")) &&
          cJSON_IsTrue(cJSON_GetObjectItem(j, "init_lora_weights")) &&
          cJSON_IsFalse(cJSON_GetObjectItem(j, "fan_in_fan_out")) &&
          cJSON_IsFalse(cJSON_GetObjectItem(j, "use_rslora")) &&
          cJSON_IsNull(cJSON_GetObjectItem(j, "modules_to_save")) &&
          cJSON_GetArraySize(cJSON_GetObjectItem(j, "rank_pattern")) == 0 &&
          cJSON_GetArraySize(cJSON_GetObjectItem(j, "alpha_pattern")) == 0);
    CHECK(strstr(text, "\n  \"alpha_pattern\": {},\n") != NULL, "indented by 2, as PEFT writes");
    cJSON_Delete(j);
    /* adapter_model.safetensors: base_model.model.model.layers.N.<module>.lora_{A,B}.weight,
     * A (r, in), B (out, r), every site of the model (all-linear). */
    char *model = path_join(hf, "adapter_model.safetensors");
    struct st_file f;
    REQUIRE(st_open(&f, model) == 0, "%s", err_msg());
    int names_ok = f.n_tensors == 2 * r->model.n_sites;
    for (int32_t s = 0; s < r->model.n_sites && names_ok; s++) {
        char site[128], name[256];
        int32_t d_in, d_out;
        model_site_name(&r->model, s, site, sizeof site);
        model_site_dims(&r->model, s, &d_in, &d_out);
        snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", site);
        const struct st_tensor *A = st_find(&f, name);
        snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", site);
        const struct st_tensor *B = st_find(&f, name);
        names_ok = A && B && A->ndim == 2 && A->shape[0] == 4 && A->shape[1] == d_in &&
                   B->ndim == 2 && B->shape[0] == d_out && B->shape[1] == 4;
    }
    CHECK(names_ok, "HF tensor names and shapes");
    CHECK(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "pt") == 0 && f.n_meta == 1);
    printf("hf export: %d config keys in PEFT's order, %d tensors named and shaped as PEFT saves "
           "them\n",
           n, f.n_tensors);
    st_close(&f);
    /* import: the same tensors, bit for bit, and the same ΔW. */
    REQUIRE(peft_import(&r->reg, hf, back) == 0, "%s", err_msg());
    struct st_file x, y;
    REQUIRE(st_open(&x, src) == 0 && st_open(&y, back) == 0, "%s", err_msg());
    int same = x.n_tensors == y.n_tensors;
    for (int32_t i = 0; i < x.n_tensors && same; i++) {
        const struct st_tensor *t = &x.tensors[i], *u = st_find(&y, t->name);
        same = u && u->dtype == t->dtype && u->numel == t->numel &&
               memcmp(st_data(&x, t), st_data(&y, u), t->end - t->begin) == 0;
    }
    CHECK(same, "round trip is bit-exact");
    CHECK(strcmp(st_meta(&y, "peft.method"), "lora") == 0 && st_meta(&y, "peft.method_config"));
    st_close(&x);
    st_close(&y);
    float **dback = file_deltas(r, back);
    double dmax = 0;
    for (int32_t s = 0; s < r->model.n_sites; s++)
        for (size_t k = 0; k < site_numel(r, s); k++)
            dmax = fmax(dmax, fabs(dback[s][k] - da[s][k]));
    printf("hf round trip: tensors bit-exact %s, dW max abs difference %.1e\n", same ? "yes" : "no",
           dmax);
    CHECK(dmax == 0, "round-trip dW: %g", dmax);
    free_deltas(r, dback);

    /* Bad folders: one line each, naming the problem. */
    struct {
        const char *what, *config, *phrase;
        int drop_model, bin;
    } bad[] = {
        {"no config", NULL, "no adapter_config.json", 0, 0},
        {"not json", "{oops", "not a JSON object", 0, 0},
        {"no peft_type", "{\"r\": 4}", "peft_type: missing", 0, 0},
        {"IA3", "{\"peft_type\": \"IA3\", \"r\": 4}", "peft_type 'IA3'", 0, 0},
        {"rank_pattern", "{\"peft_type\": \"LORA\", \"r\": 4, \"rank_pattern\": {\"q_proj\": 8}}",
         "rank_pattern", 0, 0},
        {"alpha_pattern", "{\"peft_type\": \"LORA\", \"r\": 4, \"alpha_pattern\": {\"q_proj\": 8}}",
         "alpha_pattern", 0, 0},
        {"dora", "{\"peft_type\": \"LORA\", \"r\": 4, \"use_dora\": true}", "use_dora is true, but module", 0, 0},
        {"seq cls", "{\"peft_type\": \"LORA\", \"r\": 4, \"task_type\": \"SEQ_CLS\"}", "task_type",
         0, 0},
        {"modules_to_save",
         "{\"peft_type\": \"LORA\", \"r\": 4, \"modules_to_save\": [\"lm_head\"]}",
         "modules_to_save", 0, 0},
        {"bias", "{\"peft_type\": \"LORA\", \"r\": 4, \"bias\": \"all\"}", "bias", 0, 0},
        {"r mismatch", "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 8}",
         "expected [r, in] with r = 8", 0, 0},
        {"target_modules", "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\"]}",
         "not among target_modules", 0, 0},
        {"pickle only", "{\"peft_type\": \"LORA\", \"r\": 4}", "adapter_model.bin is a pickle", 1,
         1},
        {"no weights", "{\"peft_type\": \"LORA\", \"r\": 4}", "no adapter_model.safetensors", 1, 0},
    };
    int refused = 0;
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        char *d = path_join(tmp, "bad_hf");
        remove_tree(d);
        REQUIRE(mkdir_p(d) == 0, "%s", err_msg());
        if (bad[c].config) write_text(d, "adapter_config.json", bad[c].config);
        if (!bad[c].drop_model) {
            char *to = path_join(d, "adapter_model.safetensors");
            char *bytes;
            size_t nb;
            REQUIRE(file_read_all(model, &bytes, &nb) == 0, "%s", err_msg());
            REQUIRE(file_write_atomic(to, bytes, nb) == 0, "%s", err_msg());
            free(bytes);
            free(to);
        }
        if (bad[c].bin) write_text(d, "adapter_model.bin", "pickle");
        struct hf_lora a;
        int rc = hf_lora_read(d, &a);
        int ok = rc != 0 && strstr(err_msg(), bad[c].phrase) && !strchr(err_msg(), '\n');
        refused += ok;
        CHECK(ok, "%s: %s", bad[c].what, rc ? err_msg() : "accepted");
        if (rc == 0) hf_lora_free(&a);
        free(d);
    }
    printf("hf bad folders: %d of %zu refused with the expected line\n", refused,
           sizeof bad / sizeof bad[0]);
    /* A LoRA-shaped export only: a full fine-tuning adapter is refused. */
    char *full = stage_path(r, "fb", "adapter.safetensors"), *hf2 = path_join(tmp, "hf_full");
    CHECK(peft_export(&r->reg, full, hf2, NULL) != 0 && strstr(err_msg(), "only LoRA-shaped"),
          "export of full: %s", err_msg());
    free(full);
    free(hf2);
    free(text);
    free(cfgp);
    free(model);
    free(src);
    free(hf);
    free(back);
}

static void check_inspect(struct run *r) {
    char *p = stage_path(r, "sum_lora", "adapter.safetensors"), *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    REQUIRE(m, "open_memstream");
    int rc = peft_inspect(p, m);
    fclose(m);
    CHECK(rc == 0, "%s", err_msg());
    char abi_line[96]; /* written by this build: the ABI it was built with, twice */
    snprintf(abi_line, sizeof abi_line, "adapter   method lora 1.0.0, plugin ABI %u.%u (this peft: ABI %u.%u)\n",
             PEFT_ABI_MAJOR, PEFT_ABI_MINOR, PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    const char *want[] = {
        abi_line,
        "  peft.merge: add\n",
        "  peft.merge_output: lora\n",
        "  peft.stage_config:\n    {\n      \"merge\": \"add\",\n",
        "      \"r\": \"8\",\n",
        "tensors   28, ",
        "  base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight  F32    [8, 16]  512\n",
    };
    int found = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int ok = buf && strstr(buf, want[i]) != NULL;
        found += ok;
        CHECK(ok, "inspect lacks '%s'", want[i]);
    }
    printf("inspect: %d of %zu expected lines\n", found, sizeof want / sizeof want[0]);
    if (found != (int)(sizeof want / sizeof want[0])) fprintf(stderr, "%s", buf ? buf : "");
    free(buf);
    free(p);
}

/* PEFT's Poly, key by key (peft/tuners/poly: PolyConfig's fields, PolyLayer's parameters). */
/* An (IA)3 adapter as an HF PEFT IA3 folder: PEFT's config keys in order, its tensors
 * (k_proj and v_proj (d_out, 1), down_proj (1, d_in)) bit for bit, and back: peft import gives
 * the same tensors and the same model. */
static void check_ia3_export(struct run *r) {
    char *src = stage_path(r, "ia", "adapter.safetensors"), *hf = path_join(tmp, "hf_ia3");
    REQUIRE(peft_export(&r->reg, src, hf, "tiny/llama") == 0, "%s", err_msg());
    char *cfgp = path_join(hf, "adapter_config.json"), *text;
    size_t len;
    REQUIRE(file_read_all(cfgp, &text, &len) == 0, "%s", err_msg());
    cJSON *j = cJSON_Parse(text);
    REQUIRE(cJSON_IsObject(j), "adapter_config.json is not JSON");
    static const char *const keys[] = {"base_model_name_or_path", "fan_in_fan_out",
                                       "feedforward_modules", "inference_mode", "init_ia3_weights",
                                       "modules_to_save", "peft_type", "target_modules", "task_type"};
    int n = 0, in_order = 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        in_order &= n < 9 && strcmp(it->string, keys[n]) == 0;
        n++;
    }
    const cJSON *tm = cJSON_GetObjectItem(j, "target_modules"), *ff = cJSON_GetObjectItem(j, "feedforward_modules");
    int lists = cJSON_GetArraySize(tm) == 3 && strcmp(cJSON_GetArrayItem(tm, 2)->valuestring, "down_proj") == 0 &&
                cJSON_GetArraySize(ff) == 1 && strcmp(cJSON_GetArrayItem(ff, 0)->valuestring, "down_proj") == 0;
    CHECK(n == 9 && in_order && JSTR("peft_type", "IA3") && JSTR("task_type", "CAUSAL_LM") &&
              cJSON_IsFalse(cJSON_GetObjectItem(j, "fan_in_fan_out")) && lists,
          "IA3 config: %d keys, in order %d, lists %d:\n%s", n, in_order, lists, text);
    cJSON_Delete(j);
    free(text);
    free(cfgp);

    char *model = path_join(hf, "adapter_model.safetensors"), *back = path_join(tmp, "ia3_back.safetensors");
    REQUIRE(peft_import(&r->reg, hf, back) == 0, "import: %s", err_msg());
    struct st_file out, in, imp;
    REQUIRE(st_open(&out, model) == 0 && st_open(&in, src) == 0 && st_open(&imp, back) == 0, "%s", err_msg());
    static const char *const mods[3] = {"self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"};
    int found = 0, shapes = 1, values = 1, moved = 0;
    for (int l = 0; l < 2; l++)
        for (int m = 0; m < 3; m++) {
            /* k and v: (d_out, 1), kv heads x head dim; down_proj: (1, d_ff) */
            const int64_t want[3][2] = {{16, 1}, {16, 1}, {1, 32}};
            char name[256];
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.ia3_l", l, mods[m]);
            const struct st_tensor *t = st_find(&out, name), *u = st_find(&in, name), *v = st_find(&imp, name);
            if (!t || !u || !v) continue;
            found++;
            shapes &= t->ndim == 2 && t->shape[0] == want[m][0] && t->shape[1] == want[m][1] &&
                      v->ndim == 2 && v->shape[0] == want[m][0] && v->shape[1] == want[m][1];
            float *x = xalloc_floats(t->numel), *y = xalloc_floats(u->numel), *z = xalloc_floats(v->numel);
            REQUIRE(t->numel == u->numel && v->numel == u->numel && st_read_f32(&out, t, x, t->numel) == 0 &&
                        st_read_f32(&in, u, y, u->numel) == 0 && st_read_f32(&imp, v, z, v->numel) == 0,
                    "%s", err_msg());
            for (uint64_t e = 0; e < t->numel; e++) {
                values &= x[e] == y[e] && z[e] == y[e];
                moved |= y[e] != 1.0f;
            }
            free(x);
            free(y);
            free(z);
        }
    printf("IA3 export: config keys as PEFT writes them; %d of 6 vectors with PEFT's names and "
           "shapes: %s, equal to the adapter's: %s (trained away from 1: %s); imported back: "
           "%d tensors, method %s\n", found, shapes ? "yes" : "NO", values ? "yes" : "NO",
           moved ? "yes" : "NO", imp.n_tensors, st_meta(&imp, "peft.method"));
    CHECK(found == 6 && out.n_tensors == 6 && shapes && values && moved, "IA3 tensors");
    CHECK(imp.n_tensors == 6 && strcmp(st_meta(&imp, "peft.method"), "ia3") == 0, "IA3 import");
    st_close(&out);
    st_close(&in);
    st_close(&imp);
    free(model);
    free(back);
    free(src);
    free(hf);
}

/* A DoRA adapter as an HF PEFT LoRA folder with use_dora: lora_A, lora_B and
 * lora_magnitude_vector (out) per module, bit for bit; peft import reads it back as `dora`. */
static void check_dora_export(struct run *r) {
    char *src = stage_path(r, "do", "adapter.safetensors"), *hf = path_join(tmp, "hf_dora");
    char *back = path_join(tmp, "dora_back.safetensors");
    REQUIRE(peft_export(&r->reg, src, hf, NULL) == 0, "%s", err_msg());
    char *cfgp = path_join(hf, "adapter_config.json"), *text;
    size_t len;
    REQUIRE(file_read_all(cfgp, &text, &len) == 0, "%s", err_msg());
    cJSON *j = cJSON_Parse(text);
    CHECK(JSTR("peft_type", "LORA") && cJSON_IsTrue(cJSON_GetObjectItem(j, "use_dora")) &&
              JNUM("r") == 2,
          "DoRA config:\n%s", text);
    cJSON_Delete(j);
    free(text);
    free(cfgp);
    REQUIRE(peft_import(&r->reg, hf, back) == 0, "import: %s", err_msg());
    struct st_file in, imp;
    REQUIRE(st_open(&in, src) == 0 && st_open(&imp, back) == 0, "%s", err_msg());
    int same = in.n_tensors == imp.n_tensors, magnitudes = 0;
    for (int32_t i = 0; same && i < in.n_tensors; i++) {
        const struct st_tensor *t = &in.tensors[i], *u = st_find(&imp, t->name);
        same = u && u->ndim == t->ndim && u->numel == t->numel;
        if (!same) break;
        magnitudes += strstr(t->name, ".lora_magnitude_vector") != NULL && t->ndim == 1;
        float *x = xalloc_floats(t->numel), *y = xalloc_floats(u->numel);
        REQUIRE(st_read_f32(&in, t, x, t->numel) == 0 && st_read_f32(&imp, u, y, u->numel) == 0, "%s", err_msg());
        same = memcmp(x, y, t->numel * sizeof(float)) == 0;
        free(x);
        free(y);
    }
    printf("DoRA export: use_dora in the config; import back as method %s: %d tensors (%d "
           "magnitude vectors) bit-identical: %s\n", st_meta(&imp, "peft.method"), imp.n_tensors,
           magnitudes, same ? "yes" : "NO");
    CHECK(same && magnitudes == 4 && strcmp(st_meta(&imp, "peft.method"), "dora") == 0, "DoRA round trip");
    st_close(&in);
    st_close(&imp);
    free(src);
    free(hf);
    free(back);
}

static void check_poly_export(struct run *r) {
    char *src = stage_path(r, "p", "adapter.safetensors"), *hf = path_join(tmp, "hf_poly");
    REQUIRE(peft_export(&r->reg, src, hf, "tiny/llama") == 0, "%s", err_msg());
    char *cfgp = path_join(hf, "adapter_config.json"), *text;
    size_t len;
    REQUIRE(file_read_all(cfgp, &text, &len) == 0, "%s", err_msg());
    cJSON *j = cJSON_Parse(text);
    REQUIRE(cJSON_IsObject(j), "adapter_config.json is not JSON");
    static const char *const keys[] = {"base_model_name_or_path", "inference_mode", "init_weights",
                                       "modules_to_save", "n_skills", "n_splits", "n_tasks",
                                       "peft_type", "poly_type", "r", "target_modules", "task_type"};
    int n = 0, in_order = 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        in_order &= n < 12 && strcmp(it->string, keys[n]) == 0;
        n++;
    }
    CHECK(n == 12 && in_order, "POLY config keys: %d, in order %d:\n%s", n, in_order, text);
    int32_t n_tasks = r->tasks.n;
    CHECK(JSTR("peft_type", "POLY") && JSTR("poly_type", "poly") && JSTR("task_type", "CAUSAL_LM") &&
              JSTR("base_model_name_or_path", "tiny/llama"),
          "POLY config strings");
    CHECK(JNUM("r") == 2 && JNUM("n_skills") == 3 && JNUM("n_splits") == 2 && JNUM("n_tasks") == n_tasks,
          "POLY config numbers: r %g n_skills %g n_splits %g n_tasks %g (want %d)", JNUM("r"),
          JNUM("n_skills"), JNUM("n_splits"), JNUM("n_tasks"), (int)n_tasks);
    const cJSON *tm = cJSON_GetObjectItem(j, "target_modules");
    CHECK(cJSON_GetArraySize(tm) == 3 && strcmp(cJSON_GetArrayItem(tm, 0)->valuestring, "q_proj") == 0 &&
              strcmp(cJSON_GetArrayItem(tm, 2)->valuestring, "down_proj") == 0,
          "POLY target_modules");
    cJSON_Delete(j);
    free(text);
    free(cfgp);

    /* tensors: per layer and module, PEFT's three names with PEFT's shapes, nothing else */
    char *model = path_join(hf, "adapter_model.safetensors");
    struct st_file out, in;
    REQUIRE(st_open(&out, model) == 0 && st_open(&in, src) == 0, "%s", err_msg());
    static const char *const mods[3] = {"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"};
    int found = 0, shapes = 1, values = 1;
    for (int l = 0; l < 2; l++)
        for (int m = 0; m < 3; m++) {
            int32_t d_in = m == 2 ? 32 : 16, d_out = 16;
            const int64_t want[3][4] = {{2, 3, d_in / 2, 2}, {2, 3, 2, d_out / 2}, {n_tasks, 6, 0, 0}};
            static const char *const part[3] = {"poly_lora_A", "poly_lora_B", "poly_router.module_logits"};
            for (int k = 0; k < 3; k++) {
                char name[256];
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.%s", l, mods[m], part[k]);
                const struct st_tensor *t = st_find(&out, name), *u = st_find(&in, name);
                if (!t || !u) continue;
                found++;
                int nd = k == 2 ? 2 : 4;
                shapes &= t->ndim == nd && t->dtype == ST_F32;
                for (int d = 0; d < nd; d++) shapes &= t->shape[d] == want[k][d];
                float *x = xalloc_floats(t->numel), *y = xalloc_floats(u->numel);
                REQUIRE(t->numel == u->numel && st_read_f32(&out, t, x, t->numel) == 0 &&
                            st_read_f32(&in, u, y, u->numel) == 0,
                        "%s", err_msg());
                for (uint64_t e = 0; e < t->numel; e++) values &= x[e] == (k == 1 ? 2.0f * y[e] : y[e]);
                free(x);
                free(y);
            }
        }
    printf("poly export: %d of 18 PEFT tensors, %d in the file; shapes %s; A and routing equal, B "
           "x lora_alpha: %s\n", found, (int)out.n_tensors, shapes ? "PEFT's" : "WRONG",
           values ? "yes" : "NO");
    CHECK(found == 18 && out.n_tensors == 18, "POLY tensors: %d found, %d in the file", found, (int)out.n_tensors);
    CHECK(shapes && values, "POLY tensors' shapes or values");
    st_close(&out);
    st_close(&in);
    free(model);
    free(src);
    free(hf);
}

/* Each tensor named *lora_A* of two adapter files: all equal (want_same) or some differing;
 * and their init fingerprints. */
static void check_init(struct run *r) {
    const char *stages[3] = {"i0", "i1", "i2"};
    struct st_file f[3];
    for (int i = 0; i < 3; i++) {
        char *p = stage_path(r, stages[i], "adapter.safetensors");
        REQUIRE(st_open(&f[i], p) == 0, "%s", err_msg());
        free(p);
    }
    int n_a = 0, same01 = 1, same02 = 1;
    for (int32_t k = 0; k < f[0].n_tensors; k++) {
        const struct st_tensor *t = &f[0].tensors[k];
        if (!strstr(t->name, "lora_A")) continue;
        n_a++;
        float *x[3];
        for (int i = 0; i < 3; i++) {
            const struct st_tensor *u = st_find(&f[i], t->name);
            REQUIRE(u && u->numel == t->numel, "%s missing in stage %s", t->name, stages[i]);
            x[i] = xalloc_floats(t->numel);
            REQUIRE(st_read_f32(&f[i], u, x[i], t->numel) == 0, "%s", err_msg());
        }
        same01 &= memcmp(x[0], x[1], t->numel * sizeof(float)) == 0;
        same02 &= memcmp(x[0], x[2], t->numel * sizeof(float)) == 0;
        for (int i = 0; i < 3; i++) free(x[i]);
    }
    const char *fp[3];
    for (int i = 0; i < 3; i++) fp[i] = st_meta(&f[i], "peft.init_fingerprint");
    printf("init: %d lora_A tensors; one init_seed (other tasks and seeds): %s, fingerprints %s "
           "%s; init_seed 11: %s, fingerprint %s\n", n_a, same01 ? "identical" : "different",
           fp[0] ? fp[0] : "-", fp[1] ? fp[1] : "-", same02 ? "identical" : "different",
           fp[2] ? fp[2] : "-");
    CHECK(n_a == 14, "expected 14 lora_A tensors (2 layers x 7 sites), got %d", n_a);
    CHECK(same01, "two stages of one init_seed start from different lora_A");
    CHECK(!same02, "another init_seed gives the same lora_A");
    CHECK(fp[0] && fp[1] && fp[2] && strcmp(fp[0], fp[1]) == 0 && strcmp(fp[0], fp[2]) != 0,
          "fingerprints: one init_seed, one fingerprint; another, another");
    for (int i = 0; i < 3; i++) st_close(&f[i]);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/peft_merge_XXXXXX");
    REQUIRE(mkdtemp(tmp), "mkdtemp");
    char *ini = path_join(tmp, "merge.ini"), *text = xasprintf(ini_text, tmp);
    REQUIRE(file_write_atomic(ini, text, strlen(text)) == 0, "%s", err_msg());
    free(text);

    struct run r;
    REQUIRE(run_load(&r, ini, NULL, 0, NULL) == 0, "%s", err_msg());
    r.quiet = 1;
    REQUIRE(run_execute(&r) == 0, "%s", err_msg());
    char *pa = stage_path(&r, "a", "adapter.safetensors"),
         *pb = stage_path(&r, "b", "adapter.safetensors");
    float **da = file_deltas(&r, pa), **db = file_deltas(&r, pb);
    check_delta_space(&r, da, db);
    check_factor_space(&r, da, db);
    check_sparse(&r);
    check_hf(&r, da);
    check_inspect(&r);
    check_init(&r);
    check_poly_export(&r);
    check_ia3_export(&r);
    check_dora_export(&r);

    /* The chain went on from a merge; a second run reuses everything, bit for bit. */
    int32_t ic = stage_index(&r, "chain"), isl = stage_index(&r, "sum_lora");
    CHECK(r.stages[ic].result_params && r.stages[ic].from == isl, "a stage after a merge");
    struct run r2;
    REQUIRE(run_load(&r2, ini, NULL, 0, NULL) == 0, "%s", err_msg());
    r2.quiet = 1;
    REQUIRE(run_execute(&r2) == 0, "%s", err_msg());
    int reused = 0, same = 1;
    for (int32_t i = 0; i < r.n_stages; i++) {
        reused += r2.stages[i].reused;
        float *w1 = flat(&r, r.stages[i].result_params), *w2 = flat(&r2, r2.stages[i].result_params);
        same &= memcmp(w1, w2, r.model.n_params * sizeof(float)) == 0;
        free(w1);
        free(w2);
    }
    printf("second run: %d of %d stages reused, weights identical: %s\n", reused, r.n_stages,
           same ? "yes" : "no");
    CHECK(reused == r.n_stages && same, "reuse");
    run_free(&r2);

    free_deltas(&r, da);
    free_deltas(&r, db);
    free(pa);
    free(pb);
    run_free(&r);
    free(ini);
    remove_tree(tmp);
    return check_report("merge_run");
}
