/* peft_hf_ia3.c: (IA)3 adapters of the `ia3` method as HF PEFT IA3 folders (see peft_hf.h),
 * both ways. The tensors already carry PEFT's names, shapes and meaning:
 *   base_model.model.<module>.ia3_l   (d_out, 1) scaling the module's output, or
 *                                     (1, d_in) scaling its input (feedforward_modules)
 * and adapter_config.json says peft_type "IA3", target_modules, feedforward_modules. */
#include "peft_hf.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"
#include "method.h"

static const char *const ia3_suffix = ".ia3_l";

static int is_ia3_key(const char *name) {
    size_t n = strlen(name), k = strlen(ia3_suffix);
    return n > k + 17 && strncmp(name, "base_model.model.", 17) == 0 &&
           strcmp(name + n - k, ia3_suffix) == 0;
}

static int write_config(const char *dir, const char *base_model, const char *target_modules,
                        const char *feedforward_modules) {
    struct strbuf b = {0};
    sb_printf(&b, "{\n  ");
    hf_json_base_model(&b, base_model);
    sb_printf(&b, ",\n  \"fan_in_fan_out\": false,\n  \"feedforward_modules\": ");
    hf_json_targets(&b, feedforward_modules);
    sb_printf(&b, ",\n  \"inference_mode\": true,\n  \"init_ia3_weights\": true,\n"
                  "  \"modules_to_save\": null,\n  \"peft_type\": \"IA3\",\n"
                  "  \"target_modules\": ");
    hf_json_targets(&b, target_modules);
    sb_printf(&b, ",\n  \"task_type\": \"CAUSAL_LM\"\n}\n");
    return hf_config_write(dir, &b);
}

int hf_ia3_export(const struct st_file *f, const struct kv_list *kv, const char *out_dir,
                  const char *base_model) {
    int rc = 0, n_out = 0;
    struct st_writer *w = st_writer_new();
    float **keep = xcalloc((size_t)f->n_tensors + 1, sizeof *keep);
    for (int32_t i = 0; i < f->n_tensors && rc == 0; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (!is_ia3_key(t->name) || t->ndim != 2 || (t->shape[0] != 1 && t->shape[1] != 1)) {
            rc = err_set("%s: tensor '%s' is not an (IA)3 vector of PEFT's layout", f->path, t->name);
            break;
        }
        float *x = xalloc_floats(t->numel);
        keep[n_out++] = x;
        if (st_read_f32(f, t, x, t->numel)) {
            rc = -1;
            break;
        }
        st_writer_add_f32(w, t->name, 2, t->shape, x);
    }
    if (rc == 0 && n_out == 0) rc = err_set("%s: no (IA)3 vectors", f->path);
    if (rc == 0) {
        st_writer_meta(w, "format", "pt");
        const char *tm = kv_list_get(kv, "target_modules"), *ff = kv_list_get(kv, "feedforward_modules");
        rc = mkdir_p(out_dir) || write_config(out_dir, base_model, tm ? tm : "", ff ? ff : "");
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

/* A list of module names (JSON array of strings, or the string "all-linear") as words. */
static int json_words(const cJSON *j, const char *key, const char *path, char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    struct strbuf b = {0};
    if (cJSON_IsString(v) && strcmp(v->valuestring, "all-linear") == 0) {
        *out = xstrdup("all-linear");
        return 0;
    }
    if (!cJSON_IsArray(v)) return err_set("%s: %s: expected a list of module names", path, key);
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (!cJSON_IsString(it) || !*it->valuestring || strchr(it->valuestring, ' ')) {
            sb_free(&b);
            return err_set("%s: %s: expected a list of module names", path, key);
        }
        sb_printf(&b, "%s%s", b.len ? " " : "", it->valuestring);
    }
    *out = b.s ? b.s : xstrdup("");
    return 0;
}

/* Is the (module) named by an ia3_l key listed in words, as HF PEFT matches names? */
static int module_listed(const char *key, const char *words) {
    size_t n = strlen(key) - strlen(ia3_suffix) - 17;
    char module[256];
    if (n >= sizeof module) return 0;
    memcpy(module, key + 17, n);
    module[n] = 0;
    char *copy = xstrdup(words);
    int found = 0;
    for (char *w = strtok(copy, " "); w && !found; w = strtok(NULL, " ")) {
        size_t k = strlen(w);
        found = strcmp(w, "all-linear") == 0 || strcmp(module, w) == 0 ||
                (n > k && strcmp(module + n - k, w) == 0 && module[n - k - 1] == '.');
    }
    free(copy);
    return found;
}

int hf_ia3_import(struct plugin_registry *reg, const char *hf_dir, const char *out_file) {
    char *path = path_join(hf_dir, "adapter_config.json"), *text = NULL, *tm = NULL, *ff = NULL;
    size_t len;
    int rc = file_read_all(path, &text, &len);
    cJSON *j = rc == 0 ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *fifo = cJSON_GetObjectItemCaseSensitive(j, "fan_in_fan_out");
    const cJSON *mts = cJSON_GetObjectItemCaseSensitive(j, "modules_to_save");
    const cJSON *bm = cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path");
    if (rc == 0 && !cJSON_IsObject(j)) rc = err_set("%s: not a JSON object", path);
    if (rc == 0 && (json_words(j, "target_modules", path, &tm) ||
                    json_words(j, "feedforward_modules", path, &ff)))
        rc = -1;
    if (rc == 0 && fifo && !cJSON_IsFalse(fifo) && !cJSON_IsNull(fifo))
        rc = err_set("%s: fan_in_fan_out layouts (GPT-2 Conv1D) are not supported", path);
    if (rc == 0 && mts && !cJSON_IsNull(mts) && !(cJSON_IsArray(mts) && cJSON_GetArraySize(mts) == 0))
        rc = err_set("%s: modules_to_save: fully trained extra modules are not supported", path);
    const struct plugin_method *pm = rc == 0 ? registry_find(reg, "ia3") : NULL;
    if (rc == 0 && !pm) rc = err_prefix("import: HF PEFT IA3 adapters become adapters of method 'ia3'");
    char *model = path_join(hf_dir, "adapter_model.safetensors");
    struct st_file f = {0};
    int opened = rc == 0 && st_open(&f, model) == 0;
    if (rc == 0 && !opened) rc = -1;
    struct st_writer *w = st_writer_new();
    float **keep = xcalloc((size_t)(opened ? f.n_tensors : 0) + 1, sizeof *keep);
    int n = 0;
    for (int32_t i = 0; rc == 0 && i < f.n_tensors; i++) {
        const struct st_tensor *t = &f.tensors[i];
        int ffwd = is_ia3_key(t->name) && module_listed(t->name, ff);
        if (!is_ia3_key(t->name) || t->ndim != 2 || (ffwd ? t->shape[0] != 1 : t->shape[1] != 1)) {
            rc = err_set("%s: tensor '%s' is not an (IA)3 vector of a %s module (shape (%s))",
                         model, t->name, ffwd ? "feedforward" : "non-feedforward",
                         ffwd ? "1, in" : "out, 1");
            break;
        }
        float *x = xalloc_floats(t->numel);
        keep[n++] = x;
        if (st_read_f32(&f, t, x, t->numel)) rc = -1;
        else st_writer_add_f32(w, t->name, 2, t->shape, x);
    }
    if (rc == 0 && n == 0) rc = err_set("%s: no (IA)3 vectors", model);
    if (rc == 0) {
        struct kv_list kv = {0}, stage = {0};
        for (uint32_t i = 0; i < pm->desc->n_params; i++)
            if (pm->desc->params[i].default_value)
                kv_list_set(&kv, pm->desc->params[i].name, pm->desc->params[i].default_value);
        kv_list_set(&kv, "target_modules", tm);
        kv_list_set(&kv, "feedforward_modules", ff);
        kv_list_set(&stage, "method", pm->desc->id);
        for (uint32_t i = 0; i < kv.n; i++) kv_list_set(&stage, kv.kv[i].key, kv.kv[i].value);
        char abi[16];
        snprintf(abi, sizeof abi, "%u.%u", PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
        char *method_json = kv_list_json(&kv), *stage_json = kv_list_json(&stage);
        st_writer_meta(w, "peft.method", pm->desc->id);
        st_writer_meta(w, "peft.method_version", pm->desc->version);
        st_writer_meta(w, "peft.abi_version", abi);
        st_writer_meta(w, "peft.method_config", method_json);
        st_writer_meta(w, "peft.stage_config", stage_json);
        st_writer_meta(w, "peft.source", hf_dir);
        if (cJSON_IsString(bm)) st_writer_meta(w, "peft.base_model", bm->valuestring);
        rc = st_writer_save(w, out_file);
        free(method_json);
        free(stage_json);
        kv_list_free(&kv);
        kv_list_free(&stage);
    }
    st_writer_free(w);
    for (int i = 0; i < n; i++) free(keep[i]);
    free(keep);
    if (opened) st_close(&f);
    cJSON_Delete(j);
    free(model);
    free(path);
    free(tm);
    free(ff);
    return rc ? -1 : 0;
}
