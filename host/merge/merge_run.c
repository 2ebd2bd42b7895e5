/* merge_run.c: execute a merge stage: open the inputs, combine them in delta or factor space,
 * write the outputs, and leave the merged weights in the model (see merge.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge.h"
#include "merge_input.h"
#include "svd.h"
#include "io/io.h"
#include "model/model.h"
#include "methods/methods.h"

/* ---- metadata ---------------------------------------------------------------------------- */

/* What every output of the stage says about how it was made. */
static void merge_meta(struct stage_env *env, const struct stage *s, struct kv_list *meta) {
    const struct merge_spec *m = s->merge;
    char buf[64];
    kv_list_set(meta, "peft.stage", s->name);
    kv_list_set(meta, "peft.stage_config", s->config_json);
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)s->hash);
    kv_list_set(meta, "peft.config_hash", buf);
    kv_list_set(meta, "peft.run", env->run_path);
    kv_list_set(meta, "peft.merge", merge_op_name(m->op));
    kv_list_set(meta, "peft.merge_space",
                m->space == MERGE_SPACE_FACTOR
                    ? "factor: PEM module arithmetic: each adapter tensor averaged with "
                      "coefficients |w_i| / sum |w_j|, negative weights negating the module"
                    : "delta: exact weight changes, combined per model tensor");
    struct strbuf in = {0}, w = {0};
    for (int32_t i = 0; i < m->n_in; i++) {
        sb_printf(&in, "%s%s", i ? " " : "", m->in[i].text);
        sb_printf(&w, "%s%.17g", i ? " " : "", m->in[i].weight);
    }
    kv_list_set(meta, "peft.merge_inputs", in.s);
    kv_list_set(meta, "peft.merge_weights", w.s);
    sb_free(&in);
    sb_free(&w);
    kv_list_set(meta, "peft.merge_output", merge_output_name(m->output));
    if (m->space == MERGE_SPACE_DELTA) {
        const char *conv =
            m->params.prune == PRUNE_NONE
                ? "sum of w_i * dW_i (task arithmetic), times lambda"
                : "PEFT merge_utils on whole task vectors: magnitude top-k per tensor or DARE "
                  "(keep with probability density, rescale 1/density); sign election on the "
                  "unweighted pruned inputs; disjoint mean by count; times lambda";
        kv_list_set(meta, "peft.merge_convention", conv);
        snprintf(buf, sizeof buf, "%.17g", m->params.lambda);
        kv_list_set(meta, "peft.merge_lambda", buf);
        if (m->params.prune != PRUNE_NONE) {
            snprintf(buf, sizeof buf, "%.17g", m->params.density);
            kv_list_set(meta, "peft.merge_density", buf);
        }
        if (m->params.sign != SIGN_NONE)
            kv_list_set(meta, "peft.merge_sign",
                        m->params.sign == SIGN_TOTAL ? "total" : "frequency");
    }
}

/* The NULL-ended key/value array the writers take (pointers into meta). */
static const char **meta_array(const struct kv_list *meta) {
    const char **a = xcalloc(2 * (size_t)meta->n + 1, sizeof *a);
    for (uint32_t i = 0; i < meta->n; i++) {
        a[2 * i] = meta->kv[i].key;
        a[2 * i + 1] = meta->kv[i].value;
    }
    return a;
}

static int save_model_dir(struct stage_env *env, const struct stage *s, const struct kv_list *meta) {
    const char **a = meta_array(meta);
    char *dir = path_join(s->dir, "model");
    int rc = hf_model_save(dir, env->model, a);
    if (rc == 0 && env->model_dir) rc = hf_copy_tokenizer(env->model_dir, dir);
    free(dir);
    free(a);
    return rc;
}

static int save_adapter(const struct stage *s, struct method_run *mr, const struct kv_list *meta) {
    const char **a = meta_array(meta);
    char *path = path_join(s->dir, "adapter.safetensors");
    int rc = method_run_save(mr, path, a);
    free(path);
    free(a);
    return rc;
}

/* ---- factor space -------------------------------------------------------------------------- */

static int factor_merge(struct stage_env *env, struct stage *s, struct merge_source *src, int write,
                        struct method_run **eval_mr) {
    struct merge_spec *m = s->merge;
    const struct plugin_method *pm = src[0].pm;
    for (int32_t i = 1; i < m->n_in; i++) {
        const char *key = NULL;
        if (src[i].pm != pm)
            return err_set("%s: %s is %s, %s is %s: inputs of different methods cannot be "
                           "combined in factor space; use space = delta",
                           m->where_inputs, src[0].label, pm->desc->id, src[i].label,
                           src[i].pm->desc->id);
        if (!kv_equal(&src[0].kv, &src[i].kv, &key))
            return err_set("%s: %s and %s differ in %s (%s vs %s): factor space needs one "
                           "configuration; use space = delta",
                           m->where_inputs, src[0].label, src[i].label, key,
                           kv_list_get(&src[0].kv, key), kv_list_get(&src[i].kv, key));
    }
    if (pm->desc->vt->state_save)
        return err_set("%s: %s keeps state outside its tensors, which factor space cannot "
                       "average; use space = delta",
                       m->where_inputs, pm->desc->id);
    /* PEM's arithmetic adds modules trained from one initialisation; averaging factors
     * drawn independently is another operation. 0 = unknown (an imported adapter). */
    uint64_t fp0 = 0;
    int32_t first = -1;
    for (int32_t i = 0; i < m->n_in; i++) {
        uint64_t fp = method_run_init_fingerprint(src[i].mr);
        if (!fp) continue;
        if (first < 0) {
            fp0 = fp;
            first = i;
        } else if (fp != fp0) {
            return err_set("%s: %s and %s were trained from different initialisations (init "
                           "fingerprints %016llx and %016llx): factor space adds modules that "
                           "share one; use space = delta, or train them with one init_seed",
                           m->where_inputs, src[first].label, src[i].label,
                           (unsigned long long)fp0, (unsigned long long)fp);
        }
    }
    double sum = 0;
    for (int32_t i = 0; i < m->n_in; i++) sum += fabs(m->in[i].weight);
    struct method_run *out;
    if (stage_method_create(env, m->where, s->name, s->seed, pm, src[0].kv.kv, src[0].kv.n, &out))
        return -1;
    method_run_set_init_fingerprint(out, fp0);
    int rc = 0;
    /* One configuration registers the same tensors in the same order; make sure of it. */
    for (int32_t i = 0; i < m->n_in && rc == 0; i++) {
        int same = method_run_tensor_count(src[i].mr) == method_run_tensor_count(out);
        for (int32_t j = 0; same && j < method_run_tensor_count(out); j++)
            same = strcmp(method_run_tensor(src[i].mr, j)->name, method_run_tensor(out, j)->name) ==
                       0 &&
                   method_run_tensor(src[i].mr, j)->numel == method_run_tensor(out, j)->numel;
        if (!same)
            rc = err_set("%s: %s does not register the tensors its configuration should (%s)",
                         m->where_inputs, src[i].label, pm->desc->id);
    }
    for (int32_t j = 0; j < method_run_tensor_count(out) && rc == 0; j++) {
        struct mtensor *t = method_run_tensor(out, j);
        if (t->desc.flags & PEFT_TENSOR_NO_SAVE) continue;
        int average = (t->desc.flags & (PEFT_TENSOR_TRAINABLE | PEFT_TENSOR_AVERAGE)) != 0;
        if (!average) { /* frozen state: it must be the same in every input */
            memcpy(t->data, method_run_tensor(src[0].mr, j)->data, t->numel * sizeof(float));
        } else {
            for (uint64_t e = 0; e < t->numel; e++) {
                double acc = 0;
                for (int32_t i = 0; i < m->n_in; i++)
                    acc += fabs(m->in[i].weight) / sum * method_run_tensor(src[i].mr, j)->data[e];
                t->data[e] = (float)acc;
            }
        }
        for (int32_t i = 1; i < m->n_in && !average && rc == 0; i++)
            if (memcmp(method_run_tensor(src[i].mr, j)->data, t->data, t->numel * sizeof(float)))
                rc = err_set("%s: tensor '%s' is frozen state that differs between %s and %s; "
                             "factor space needs it equal",
                             m->where_inputs, t->name, src[0].label, src[i].label);
    }
    struct kv_list meta = {0};
    merge_meta(env, s, &meta);
    char *cfg = kv_list_json(&src[0].kv);
    kv_list_set(&meta, "peft.method_config", cfg);
    free(cfg);
    if (rc == 0 && write && m->output == MERGE_OUT_ADAPTER) rc = save_adapter(s, out, &meta);
    m->n_sites = method_run_site_count(out);
    if (rc == 0) {
        m->mergeable = method_run_merge(out) == 0;
        if (!m->mergeable && m->output == MERGE_OUT_MODEL)
            rc = err_prefix("%s: output = model", m->where);
        else if (!m->mergeable)
            err_clear(); /* evaluated through its hooks; no later stage may start from it */
    }
    if (rc == 0 && write && m->mergeable && (m->output == MERGE_OUT_MODEL || m->save_model))
        rc = save_model_dir(env, s, &meta);
    kv_list_free(&meta);
    if (rc == 0 && !m->mergeable) {
        *eval_mr = out;
        return 0;
    }
    method_run_free(out);
    return rc;
}

/* ---- delta space ----------------------------------------------------------------------------- */

static int tvec_nonzero(const struct tvec *t) {
    for (uint64_t j = 0; j < t->n; j++)
        if (t->val[j] != 0.0f) return 1;
    return 0;
}

/* target_modules for the sites of sel: a kind where every layer has it, else full names. */
static char *targets_text(const struct model *md, const uint8_t *sel) {
    struct strbuf b = {0};
    int32_t L = md->cfg.n_layers;
    for (int32_t k = 0; k < SITE_KINDS; k++) {
        int32_t n = 0;
        for (int32_t s = 0; s < md->n_sites; s++) n += sel[s] && model_site_kind(s) == k;
        if (n == L) {
            sb_printf(&b, "%s%s", b.len ? " " : "", site_kind_names[k]);
            continue;
        }
        for (int32_t s = 0; s < md->n_sites; s++)
            if (sel[s] && model_site_kind(s) == k) {
                char name[128];
                model_site_name(md, s, name, sizeof name);
                sb_printf(&b, "%s%s", b.len ? " " : "", name);
            }
    }
    return b.s;
}

static struct mtensor *tensor_named(struct method_run *mr, const char *name) {
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++)
        if (strcmp(method_run_tensor(mr, i)->name, name) == 0) return method_run_tensor(mr, i);
    return NULL;
}

/* Re-factorise each changed site's ΔW into B A of rank m->rank by truncated SVD (B = U S,
 * A = Vt, lora_alpha = rank so the scale is 1), as a `lora` adapter; fold it into the model. */
static int lora_output(struct stage_env *env, struct stage *s, struct tvec *tau, int write,
                       struct kv_list *meta) {
    struct merge_spec *m = s->merge;
    struct model *md = env->model;
    for (int32_t t = 0; t < md->n_tensors; t++)
        if (md->tensors[t].site < 0 && tau[t].numel && tvec_nonzero(&tau[t]))
            return err_set("%s: the merge changes %s, which a LoRA cannot hold; use output = "
                           "delta or model",
                           m->where, md->tensors[t].name);
    uint8_t *sel = xcalloc((size_t)md->n_sites + 1, 1);
    int32_t n_sel = 0;
    for (int32_t st = 0; st < md->n_sites; st++) {
        const struct tvec *x = &tau[model_site_tensor(md, st)];
        sel[st] = x->numel && tvec_nonzero(x);
        n_sel += sel[st];
    }
    if (n_sel == 0) {
        free(sel);
        return err_set("%s: the merge changes no weight: there is nothing to write as a LoRA",
                       m->where);
    }
    char *targets = targets_text(md, sel), rank[32];
    snprintf(rank, sizeof rank, "%d", m->rank);
    struct kv_list given = {0}, kv = {0};
    kv_list_set(&given, "r", rank);
    kv_list_set(&given, "lora_alpha", rank);
    kv_list_set(&given, "lora_dropout", "0");
    kv_list_set(&given, "use_rslora", "false");
    kv_list_set(&given, "target_modules", targets);
    free(targets);
    struct method_run *out = NULL;
    int rc = kv_complete(&given, m->lora, m->where, &kv);
    if (rc == 0) rc = stage_method_create(env, m->where, s->name, s->seed, m->lora, kv.kv, kv.n, &out);
    m->svd_max_rel_error = 0;
    int32_t k = m->rank;
    for (int32_t st = 0; st < md->n_sites && rc == 0; st++) {
        if (!sel[st]) continue;
        int32_t d_in, d_out;
        model_site_dims(md, st, &d_in, &d_out);
        size_t n = (size_t)d_in * d_out;
        float *D = xalloc_floats(n), *U = xalloc_floats((size_t)d_out * k),
              *S = xalloc_floats((size_t)k);
        float *Vt = xalloc_floats((size_t)k * d_in);
        tvec_add_to(&tau[model_site_tensor(md, st)], 1.0f, D); /* (d_out, d_in) */
        svd_truncated(D, d_out, d_in, k, s->seed + (uint64_t)st, SVD_AUTO, U, S, Vt);
        for (int32_t i = 0; i < d_out; i++)
            for (int32_t j = 0; j < k; j++) U[(size_t)i * k + j] *= S[j]; /* B = U S (d_out, k) */
        char site[128], name[256];
        model_site_name(md, st, site, sizeof site);
        struct mtensor *A, *B;
        hf_lora_tensor_name(name, sizeof name, site, 'A');
        A = tensor_named(out, name);
        hf_lora_tensor_name(name, sizeof name, site, 'B');
        B = tensor_named(out, name);
        if (!A || !B || A->numel != (uint64_t)k * d_in || B->numel != (uint64_t)d_out * k) {
            rc = err_set("%s: %s has no tensors %s.lora_{A,B} of shapes (%d, %d) and (%d, %d)",
                         m->where, m->lora->desc->id, site, k, d_in, d_out, k);
        } else {
            memcpy(A->data, Vt, (size_t)k * d_in * sizeof(float));
            memcpy(B->data, U, (size_t)d_out * k * sizeof(float));
            /* How much of ΔW the rank-k factors miss. */
            double norm = 0, miss = 0;
            for (size_t e = 0; e < n; e++) norm += (double)D[e] * D[e];
            gemm_f32(0, 0, d_out, d_in, k, -1.0f, U, k, Vt,
                        d_in, 1.0f, D, d_in);
            for (size_t e = 0; e < n; e++) miss += (double)D[e] * D[e];
            double rel = norm > 0 ? sqrt(miss / norm) : 0;
            if (rel > m->svd_max_rel_error) m->svd_max_rel_error = rel;
        }
        free(D);
        free(U);
        free(S);
        free(Vt);
    }
    m->n_sites = n_sel;
    if (rc == 0) {
        char *cfg = kv_list_json(&kv), err[64];
        kv_list_set(meta, "peft.method_config", cfg);
        free(cfg);
        kv_list_set(meta, "peft.svd_rank", rank);
        snprintf(err, sizeof err, "%.6g", m->svd_max_rel_error);
        kv_list_set(meta, "peft.svd_max_rel_error", err);
        if (write) rc = save_adapter(s, out, meta);
    }
    if (rc == 0) rc = method_run_merge(out);
    if (out) method_run_free(out);
    kv_list_free(&given);
    kv_list_free(&kv);
    free(sel);
    return rc;
}

/* A task vector file: NAME dense, or NAME.sparse_index (I64) + NAME.sparse_delta (F32). */
static int write_task_vector(struct stage_env *env, const struct stage *s, const struct tvec *tau,
                             struct kv_list *meta) {
    struct model *md = env->model;
    kv_list_set(meta, "peft.kind", "task_vector");
    kv_list_set(meta, "peft.task_vector",
                "NAME (F32, the model tensor's shape): the change of model tensor NAME; "
                "NAME.sparse_index (I64, sorted flat row-major indices) with NAME.sparse_delta "
                "(F32): the change at those entries, every other entry unchanged");
    struct st_writer *w = st_writer_new();
    char **names = xcalloc(2 * (size_t)md->n_tensors + 1, sizeof *names);
    int32_t n_names = 0;
    for (int32_t t = 0; t < md->n_tensors; t++) {
        const struct tvec *x = &tau[t];
        if (!x->numel || !tvec_nonzero(x)) continue;
        const struct model_tensor *mt = &md->tensors[t];
        if (!x->idx) {
            st_writer_add_f32(w, mt->name, mt->ndim, mt->shape, x->val);
            continue;
        }
        int64_t shape[1] = {(int64_t)x->n};
        char *ix = names[n_names++] = xasprintf("%s.sparse_index", mt->name);
        char *dl = names[n_names++] = xasprintf("%s.sparse_delta", mt->name);
        /* The indices are below 2^63, so their uint64 bytes are the I64 ones. */
        st_writer_add(w, ix, ST_I64, 1, shape, x->idx);
        st_writer_add_f32(w, dl, 1, shape, x->val);
    }
    const char **a = meta_array(meta);
    for (int32_t i = 0; a[i]; i += 2) st_writer_meta(w, a[i], a[i + 1]);
    char *path = path_join(s->dir, "task_vector.safetensors");
    int rc = st_writer_save(w, path);
    free(path);
    free(a);
    st_writer_free(w);
    for (int32_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    return rc;
}

static int delta_merge(struct stage_env *env, struct stage *s, struct merge_source *src, int write) {
    struct merge_spec *m = s->merge;
    struct model *md = env->model;
    int32_t n_in = m->n_in;
    struct tvec *tau = xcalloc((size_t)md->n_tensors + 1, sizeof *tau);
    struct tvec *in = xcalloc((size_t)n_in, sizeof *in);
    int *owned = xcalloc((size_t)n_in, sizeof *owned);
    double *w = xcalloc((size_t)n_in, sizeof *w);
    uint64_t none_idx = 0;
    float none_val = 0;
    int rc = 0;
    for (int32_t t = 0; t < md->n_tensors && rc == 0; t++) {
        int any = 0;
        for (int32_t i = 0; i < n_in && rc == 0; i++) {
            rc = merge_source_delta(&src[i], md, t, &in[i], &owned[i]);
            w[i] = m->in[i].weight;
            any |= in[i].numel != 0;
        }
        if (rc == 0 && any) {
            /* An input that leaves the tensor alone takes part as an empty sparse vector, so
             * every input keeps its position (DARE's draws are keyed by it). */
            for (int32_t i = 0; i < n_in; i++)
                if (!in[i].numel)
                    in[i] = (struct tvec){md->tensors[t].numel, 0, &none_idx, &none_val};
            merge_tensor(&m->params, in, w, n_in, md->tensors[t].name, &tau[t]);
        }
        for (int32_t i = 0; i < n_in; i++)
            if (owned[i]) tvec_free(&in[i]);
    }
    struct kv_list meta = {0};
    merge_meta(env, s, &meta);
    /* The model starts from the stage's weights (merge_execute put them there). */
    if (rc == 0 && m->output == MERGE_OUT_LORA) {
        rc = lora_output(env, s, tau, write, &meta);
    } else if (rc == 0) {
        m->n_sites = 0;
        for (int32_t t = 0; t < md->n_tensors; t++) {
            if (!tau[t].numel) continue;
            tvec_add_to(&tau[t], 1.0f, model_tensor_data(md, t));
            m->n_sites += md->tensors[t].site >= 0 && tvec_nonzero(&tau[t]);
        }
        if (write && m->output == MERGE_OUT_DELTA) rc = write_task_vector(env, s, tau, &meta);
    }
    m->mergeable = 1;
    if (rc == 0 && write && (m->output == MERGE_OUT_MODEL || m->save_model))
        rc = save_model_dir(env, s, &meta);
    kv_list_free(&meta);
    for (int32_t t = 0; t < md->n_tensors; t++) tvec_free(&tau[t]);
    free(tau);
    free(in);
    free(owned);
    free(w);
    return rc;
}

/* ---- the stage ------------------------------------------------------------------------------ */

int merge_execute(struct stage_env *env, struct stage *s, int write, struct method_run **eval_mr) {
    struct merge_spec *m = s->merge;
    struct model *md = env->model;
    const struct model_snapshot *p0 = stage_start(env, s);
    *eval_mr = NULL;
    m->params.seed = s->seed;
    model_snapshot_restore(md, p0);
    int factor = m->space == MERGE_SPACE_FACTOR;
    struct merge_source *src = xcalloc((size_t)m->n_in, sizeof *src);
    int rc = 0;
    for (int32_t i = 0; i < m->n_in && rc == 0; i++) {
        /* In factor space a negative weight negates the module (PEM's subtraction). */
        int negate = (m->op == MERGE_OP_NEGATE) != (factor && m->in[i].weight < 0);
        rc = merge_source_open(env, s, i, p0, factor, negate, &src[i]);
    }
    if (rc == 0)
        rc = factor ? factor_merge(env, s, src, write, eval_mr) : delta_merge(env, s, src, write);
    for (int32_t i = 0; i < m->n_in; i++) merge_source_close(&src[i]);
    free(src);
    if (rc == 0 && !env->quiet) {
        printf("[%s] merge %s in %s space of %d input%s -> %s", s->name, merge_op_name(m->op),
               factor ? "factor" : "delta", m->n_in, m->n_in == 1 ? "" : "s",
               merge_output_name(m->output));
        if (m->output == MERGE_OUT_LORA)
            printf(" (rank %d; SVD truncation: largest relative error %.2e)", m->rank,
                   m->svd_max_rel_error);
        printf(", %d site%s changed\n", m->n_sites, m->n_sites == 1 ? "" : "s");
    }
    return rc;
}
