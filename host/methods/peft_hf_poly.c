/* peft_hf_poly.c: a Poly / MHR adapter of the `poly` method written as an HF PEFT POLY folder
 * (see peft_hf.h). The tensors already carry PEFT's names and shapes:
 *   base_model.model.<module>.poly_lora_A                (n_splits, n_skills, in / n_splits, r)
 *   base_model.model.<module>.poly_lora_B                (n_splits, n_skills, r, out / n_splits)
 *   base_model.model.<module>.poly_router.module_logits  (n_tasks, n_splits * n_skills)
 * PEFT's Poly adds x A B / r; the method adds (lora_alpha / r) x A B, so B is written times
 * lora_alpha (exact at the default lora_alpha = 1). Row t of the routing table is task t of
 * the run that trained it, named in order by the file's peft.tasks metadata, which the
 * exported file keeps. */
#include "peft_hf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int write_config(const char *dir, const char *base_model, int64_t K, int64_t h,
                        int64_t n_tasks, int64_t r, const char *target_modules) {
    struct strbuf b = {0};
    sb_printf(&b, "{\n  ");
    hf_json_base_model(&b, base_model);
    sb_printf(&b,
              ",\n  \"inference_mode\": true,\n  \"init_weights\": true,\n"
              "  \"modules_to_save\": null,\n  \"n_skills\": %lld,\n  \"n_splits\": %lld,\n"
              "  \"n_tasks\": %lld,\n  \"peft_type\": \"POLY\",\n  \"poly_type\": \"poly\",\n"
              "  \"r\": %lld,\n  \"target_modules\": ",
              (long long)K, (long long)h, (long long)n_tasks, (long long)r);
    hf_json_targets(&b, target_modules);
    sb_printf(&b, ",\n  \"task_type\": \"CAUSAL_LM\"\n}\n");
    return hf_config_write(dir, &b);
}

int hf_poly_export(const struct st_file *f, const struct kv_list *kv, const char *out_dir,
                   const char *base_model) {
    const char *variant = kv_list_get(kv, "variant");
    if (variant && strcmp(variant, "poly") != 0 && strcmp(variant, "mhr") != 0 &&
        strcmp(variant, "mhr-z") != 0)
        return err_set("%s: variant '%s' keeps one LoRA, not PEFT's Poly layout; only poly, mhr "
                       "and mhr-z adapters are exported as POLY",
                       f->path, variant);
    double alpha = 1.0;
    const char *a_text = kv_list_get(kv, "lora_alpha");
    if (a_text && parse_f64(a_text, &alpha)) return err_set("%s: lora_alpha '%s'", f->path, a_text);
    int64_t K = -1, h = -1, r = -1, n_tasks = -1;
    int rc = 0, n_out = 0;
    struct st_writer *w = st_writer_new();
    float **keep = xcalloc((size_t)f->n_tensors + 1, sizeof *keep);
    for (int32_t i = 0; i < f->n_tensors && rc == 0; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (strncmp(t->name, "poly.", 5) == 0) continue; /* the method's own bookkeeping */
        int is_a = ends_with(t->name, ".poly_lora_A"), is_b = ends_with(t->name, ".poly_lora_B");
        int is_z = ends_with(t->name, ".poly_router.module_logits");
        if (!is_a && !is_b && !is_z) {
            rc = err_set("%s: tensor '%s' is not part of PEFT's Poly layout", f->path, t->name);
            break;
        }
        int64_t th = is_z ? h : t->shape[0], tk = is_z ? K : t->shape[1];
        int64_t tr = is_a ? t->shape[3] : is_b ? t->shape[2] : r;
        if ((is_z && t->ndim != 2) || (!is_z && t->ndim != 4)) {
            rc = err_set("%s: tensor '%s' has %d dimensions, PEFT's Poly has %d", f->path, t->name,
                         (int)t->ndim, is_z ? 2 : 4);
            break;
        }
        if (!is_z && (h < 0 || K < 0 || r < 0)) h = th, K = tk, r = tr;
        if (!is_z && (th != h || tk != K || tr != r)) {
            rc = err_set("%s: tensor '%s' has %lld splits, %lld skills, rank %lld; another has %lld, "
                         "%lld, %lld", f->path, t->name, (long long)th, (long long)tk,
                         (long long)tr, (long long)h, (long long)K, (long long)r);
            break;
        }
        if (is_z && n_tasks < 0) n_tasks = t->shape[0];
        float *x = xalloc_floats(t->numel);
        keep[n_out++] = x;
        if (st_read_f32(f, t, x, t->numel)) {
            rc = -1;
            break;
        }
        if (is_b && alpha != 1.0) /* PEFT divides by r alone */
            for (uint64_t k = 0; k < t->numel; k++) x[k] *= (float)alpha;
        st_writer_add_f32(w, t->name, t->ndim, t->shape, x);
    }
    /* the routing tables' width is the splits times the skills of the factors */
    for (int32_t i = 0; i < f->n_tensors && rc == 0; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (ends_with(t->name, ".poly_router.module_logits") &&
            (t->shape[1] != h * K || t->shape[0] != n_tasks))
            rc = err_set("%s: tensor '%s' has shape [%lld, %lld], PEFT's Poly needs [%lld, %lld]",
                         f->path, t->name, (long long)t->shape[0], (long long)t->shape[1],
                         (long long)n_tasks, (long long)(h * K));
    }
    if (rc == 0 && (K < 0 || n_tasks < 0)) rc = err_set("%s: no Poly skills or routing table", f->path);
    if (rc == 0) {
        st_writer_meta(w, "format", "pt");
        const char *tasks = st_meta(f, "peft.tasks");
        if (tasks) st_writer_meta(w, "peft.tasks", tasks); /* routing row t = task t */
        rc = mkdir_p(out_dir) || write_config(out_dir, base_model, K, h, n_tasks, r,
                                              kv_list_get(kv, "target_modules"));
    }
    if (rc == 0) {
        char *model = path_join(out_dir, "adapter_model.safetensors");
        rc = st_writer_save(w, model);
        free(model);
    }
    st_writer_free(w);
    for (int i = 0; i < n_out; i++) free(keep[i]);
    free(keep);
    return rc ? -1 : 0;
}
