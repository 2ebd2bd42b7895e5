/* peft_hf.c: HF PEFT LoRA folders: read, write, export from and import into adapter files. */
#include "peft_hf.h"

#include <cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"
#include "method.h"

static const char *const hf_prefix = "base_model.model.";

void hf_lora_tensor_name(char *buf, size_t cap, const char *site, char which) {
    snprintf(buf, cap, "%s%s.lora_%c.weight", hf_prefix, site, which);
}

/* Is m a llama projection module ("model.layers.N.self_attn.q_proj", ...)? */
static int llama_module(const char *m) {
    static const char *const tails[] = {
        ".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.o_proj",
        ".mlp.gate_proj",    ".mlp.up_proj",      ".mlp.down_proj"};
    const char *p = "model.layers.";
    if (strncmp(m, p, strlen(p)) != 0) return 0;
    m += strlen(p);
    if (!isdigit((unsigned char)*m)) return 0;
    while (isdigit((unsigned char)*m)) m++;
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++)
        if (strcmp(m, tails[i]) == 0) return 1;
    return 0;
}

/* Split an HF key into its module (into buf) and factor 'A' or 'B'; 0 if it is not the key
 * of a LoRA factor of a llama projection. */
static char split_key(const char *key, char *module, size_t cap) {
    size_t lp = strlen(hf_prefix), lk = strlen(key), ls = strlen(".lora_A.weight");
    if (lk <= lp + ls || strncmp(key, hf_prefix, lp) != 0) return 0;
    const char *tail = key + lk - ls;
    char which = strcmp(tail, ".lora_A.weight") == 0   ? 'A'
                 : strcmp(tail, ".lora_B.weight") == 0 ? 'B'
                                                       : 0;
    size_t n = lk - lp - ls;
    if (!which || n + 1 > cap) return 0;
    memcpy(module, key + lp, n);
    module[n] = 0;
    return llama_module(module) ? which : 0;
}

/* The module of a DoRA magnitude key ("....<module>.lora_magnitude_vector", or with PEFT's
 * older ".weight" after it) into module; 0 if it is not one. */
static int split_magnitude_key(const char *key, char *module, size_t cap) {
    static const char *const tails[] = {".lora_magnitude_vector", ".lora_magnitude_vector.weight"};
    size_t lp = strlen(hf_prefix), lk = strlen(key);
    for (int i = 0; i < 2; i++) {
        size_t ls = strlen(tails[i]);
        if (lk <= lp + ls || strncmp(key, hf_prefix, lp) != 0 || strcmp(key + lk - ls, tails[i]) != 0)
            continue;
        size_t n = lk - lp - ls;
        if (n + 1 > cap) return 0;
        memcpy(module, key + lp, n);
        module[n] = 0;
        return llama_module(module);
    }
    return 0;
}

/* HF PEFT list matching: the entry equals the module or is its suffix after a dot. */
static int module_matches(const char *module, const char *word) {
    if (strcmp(word, "all-linear") == 0 || strcmp(module, word) == 0) return 1;
    size_t lm = strlen(module), lw = strlen(word);
    return lm > lw && module[lm - lw - 1] == '.' && strcmp(module + lm - lw, word) == 0;
}

void hf_lora_free(struct hf_lora *a) {
    for (int32_t i = 0; i < a->n; i++) {
        free(a->names[i]);
        free(a->data[i]);
    }
    free(a->names);
    free(a->shape);
    free(a->data);
    free(a->target_modules);
    free(a->base_model);
    memset(a, 0, sizeof *a);
}

/* ---- reading ------------------------------------------------------------------------- */

/* Optional JSON members: absent or null gives the default; a wrong type is an error. */
static int json_number(const cJSON *j, const char *key, double def, double *out, const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!it || cJSON_IsNull(it)) return *out = def, 0;
    if (!cJSON_IsNumber(it)) return err_set("%s: %s: expected a number", path, key);
    *out = it->valuedouble;
    return 0;
}

static int json_bool(const cJSON *j, const char *key, int def, int32_t *out, const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!it || cJSON_IsNull(it)) return *out = def, 0;
    if (!cJSON_IsBool(it)) return err_set("%s: %s: expected true or false", path, key);
    *out = cJSON_IsTrue(it);
    return 0;
}

/* A member that must be absent, null, false, empty or equal to `ok` (a string). */
static int json_unsupported(const cJSON *j, const char *key, const char *ok, const char *why,
                            const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!it || cJSON_IsNull(it) || cJSON_IsFalse(it)) return 0;
    if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && cJSON_GetArraySize(it) == 0) return 0;
    if (ok && cJSON_IsString(it) && strcmp(it->valuestring, ok) == 0) return 0;
    char *text = cJSON_PrintUnformatted(it);
    err_set("%s: %s = %.60s: %s", path, key, text ? text : "?", why);
    cJSON_free(text);
    return -1;
}

static int read_config(const char *dir, struct hf_lora *out, int *derive_targets) {
    char *path = path_join(dir, "adapter_config.json"), *text = NULL;
    size_t len;
    if (!file_exists(path)) {
        err_set("%s: no adapter_config.json (not an HF PEFT adapter folder)", dir);
        free(path);
        return -1;
    }
    if (file_read_all(path, &text, &len)) {
        free(path);
        return -1;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    int rc = 0;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(j, "task_type");
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    const cJSON *bm = cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path");
    double r = 8, alpha = 8, dropout = 0;
    if (!cJSON_IsObject(j)) {
        rc = err_set("%s: not a JSON object", path);
    } else if (!cJSON_IsString(pt)) {
        rc = err_set("%s: peft_type: missing (expected \"LORA\")", path);
    } else if (strcmp(pt->valuestring, "LORA") != 0) {
        rc = err_set("%s: peft_type '%s': only LORA adapters are read", path, pt->valuestring);
    } else if (tt && !cJSON_IsNull(tt) &&
               !(cJSON_IsString(tt) && strcmp(tt->valuestring, "CAUSAL_LM") == 0)) {
        rc = err_set("%s: task_type: only CAUSAL_LM adapters (of a llama model) are read", path);
    } else if (json_number(j, "r", 8, &r, path) || json_number(j, "lora_alpha", 8, &alpha, path) ||
               json_number(j, "lora_dropout", 0, &dropout, path) ||
               json_bool(j, "use_rslora", 0, &out->use_rslora, path)) {
        rc = -1;
    } else if (!(r >= 1 && r <= 65536 && r == floor(r))) {
        rc = err_set("%s: r = %g: expected a whole number in 1..65536", path, r);
    } else if (!(dropout >= 0 && dropout < 1)) {
        rc = err_set("%s: lora_dropout = %g: expected a number in [0, 1)", path, dropout);
    } else if (json_unsupported(j, "rank_pattern", NULL,
                                "per-module ranks are not supported (every module must have "
                                "rank r)",
                                path) ||
               json_unsupported(j, "alpha_pattern", NULL,
                                "per-module alphas are not supported (every module must use "
                                "lora_alpha)",
                                path) ||
               json_bool(j, "use_dora", 0, &out->use_dora, path) ||
               json_unsupported(j, "lora_bias", NULL, "LoRA biases are not supported", path) ||
               json_unsupported(j, "fan_in_fan_out", NULL,
                                "fan_in_fan_out layouts (GPT-2 Conv1D) are not supported", path) ||
               json_unsupported(j, "bias", "none", "trained biases are not supported", path) ||
               json_unsupported(j, "modules_to_save", NULL,
                                "fully trained extra modules are not supported", path)) {
        rc = -1;
    }
    if (rc == 0) {
        out->r = (int64_t)r;
        out->lora_alpha = alpha;
        out->lora_dropout = dropout;
        *derive_targets = 1;
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layers_to_transform");
        int whole_layers = !lt || cJSON_IsNull(lt);
        if (cJSON_IsArray(tm) && whole_layers) {
            struct strbuf b = {0};
            const cJSON *it;
            cJSON_ArrayForEach(it, tm) {
                if (!cJSON_IsString(it)) {
                    rc = err_set("%s: target_modules: expected a list of names", path);
                    break;
                }
                sb_printf(&b, "%s%s", b.len ? " " : "", it->valuestring);
            }
            if (rc == 0 && b.len) {
                out->target_modules = xstrdup(b.s);
                *derive_targets = 0;
            }
            sb_free(&b);
        } else if (cJSON_IsString(tm) && strcmp(tm->valuestring, "all-linear") == 0) {
            out->target_modules = xstrdup("all-linear");
            *derive_targets = 0;
        } else if (tm && !cJSON_IsNull(tm) && !cJSON_IsString(tm) && !cJSON_IsArray(tm)) {
            rc = err_set("%s: target_modules: expected a list, a string or null", path);
        }
        /* A regex, null, or a layer restriction: the tensors say which modules are adapted. */
        if (cJSON_IsString(bm)) out->base_model = xstrdup(bm->valuestring);
    }
    cJSON_Delete(j);
    free(path);
    return rc;
}

static int read_tensors(const char *dir, struct hf_lora *out, int derive_targets) {
    char *path = path_join(dir, "adapter_model.safetensors");
    if (!file_exists(path)) {
        char *bin = path_join(dir, "adapter_model.bin");
        int has_bin = file_exists(bin);
        free(bin);
        free(path);
        if (has_bin)
            return err_set("%s: adapter_model.bin is a pickle and is not read; save the adapter "
                           "with safe_serialization=True (adapter_model.safetensors)",
                           dir);
        return err_set("%s: no adapter_model.safetensors", dir);
    }
    struct st_file f;
    if (st_open(&f, path)) {
        free(path);
        return -1;
    }
    int rc = 0;
    out->names = xcalloc((size_t)f.n_tensors + 1, sizeof *out->names);
    out->shape = xcalloc((size_t)f.n_tensors + 1, sizeof *out->shape);
    out->data = xcalloc((size_t)f.n_tensors + 1, sizeof *out->data);
    struct strbuf mods = {0};
    struct words tw;
    words_split(&tw, out->target_modules ? out->target_modules : "");
    for (int32_t i = 0; i < f.n_tensors && rc == 0; i++) {
        const struct st_tensor *t = &f.tensors[i];
        char module[256], other[320];
        char which = split_key(t->name, module, sizeof module);
        if (!which && out->use_dora && split_magnitude_key(t->name, module, sizeof module)) {
            /* DoRA's magnitude: (out), kept under the name the dora method gives it */
            hf_lora_tensor_name(other, sizeof other, module, 'B');
            const struct st_tensor *b = st_find(&f, other);
            if (t->ndim != 1 || !b || b->shape[0] != t->shape[0]) {
                rc = err_set("%s: tensor '%s' is not a magnitude vector of module %s's output "
                             "(expected shape [out] beside %s)", path, t->name, module, other);
                break;
            }
            float *x = xalloc_floats(t->numel);
            if (st_read_f32(&f, t, x, t->numel)) {
                free(x);
                rc = -1;
                break;
            }
            out->names[out->n] = xasprintf("%s%s.lora_magnitude_vector", hf_prefix, module);
            out->shape[out->n][0] = t->shape[0];
            out->shape[out->n][1] = 0;
            out->data[out->n++] = x;
            continue;
        }
        if (which == 'A' && out->use_dora) {
            snprintf(other, sizeof other, "%s%s.lora_magnitude_vector", hf_prefix, module);
            char older[340];
            snprintf(older, sizeof older, "%s.weight", other);
            if (!st_find(&f, other) && !st_find(&f, older)) {
                rc = err_set("%s: use_dora is true, but module %s has no '%s'", path, module, other);
                break;
            }
        }
        if (!which) {
            rc = err_set("%s: tensor '%s' is not a LoRA factor of a llama projection (expected "
                         "base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight and "
                         "the like)",
                         path, t->name);
            break;
        }
        int64_t want = which == 'A' ? t->shape[0] : t->shape[1];
        if (t->ndim != 2 || want != out->r) {
            char sh[96];
            st_shape_text(sh, sizeof sh, t->ndim, t->shape);
            rc = err_set("%s: tensor '%s' has shape %s, expected %s with r = %lld "
                         "(adapter_config.json)",
                         path, t->name, sh, which == 'A' ? "[r, in]" : "[out, r]",
                         (long long)out->r);
            break;
        }
        hf_lora_tensor_name(other, sizeof other, module, which == 'A' ? 'B' : 'A');
        if (!st_find(&f, other)) {
            rc = err_set("%s: tensor '%s' has no partner '%s'", path, t->name, other);
            break;
        }
        int covered = derive_targets;
        for (int k = 0; k < tw.n && !covered; k++) covered = module_matches(module, tw.v[k]);
        if (!covered) {
            rc = err_set("%s: tensor '%s': module %s is not among target_modules '%s' "
                         "(adapter_config.json)",
                         path, t->name, module, out->target_modules);
            break;
        }
        if (derive_targets && which == 'A') sb_printf(&mods, "%s%s", mods.len ? " " : "", module);
        float *x = xalloc_floats(t->numel);
        if (st_read_f32(&f, t, x, t->numel)) {
            free(x);
            rc = -1;
            break;
        }
        out->names[out->n] = xstrdup(t->name);
        out->shape[out->n][0] = t->shape[0];
        out->shape[out->n][1] = t->shape[1];
        out->data[out->n] = x;
        out->n++;
    }
    if (rc == 0 && out->n == 0) rc = err_set("%s: no tensors", path);
    if (rc == 0 && derive_targets) {
        free(out->target_modules);
        out->target_modules = xstrdup(mods.s);
    }
    words_free(&tw);
    sb_free(&mods);
    st_close(&f);
    free(path);
    return rc;
}

int hf_lora_read(const char *dir, struct hf_lora *out) {
    memset(out, 0, sizeof *out);
    if (!dir_exists(dir))
        return err_set("%s: not a folder (an HF PEFT adapter is a folder with "
                       "adapter_config.json and adapter_model.safetensors)",
                       dir);
    int derive = 0;
    if (read_config(dir, out, &derive) || read_tensors(dir, out, derive)) {
        hf_lora_free(out);
        return -1;
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------------------- */

/* A float as Python's json writes one (always with a '.' or an exponent). */
static void json_float(struct strbuf *b, double x) {
    char buf[64];
    /* the shortest text that reads back to the same double */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    sb_printf(b, "%s%s", buf, strpbrk(buf, ".eEn") ? "" : ".0");
}

void hf_json_string(struct strbuf *b, const char *s) {
    cJSON *j = cJSON_CreateString(s);
    char *t = cJSON_PrintUnformatted(j);
    sb_printf(b, "%s", t);
    cJSON_free(t);
    cJSON_Delete(j);
}

void hf_json_targets(struct strbuf *b, const char *target_modules) {
    struct words w;
    words_split(&w, target_modules ? target_modules : "");
    if (w.n == 1 && strcmp(w.v[0], "all-linear") == 0) {
        sb_printf(b, "\"all-linear\""); /* PEFT's special value is a string, not a list */
    } else {
        sb_printf(b, "[");
        for (int i = 0; i < w.n; i++) {
            sb_printf(b, "%s\n    ", i ? "," : "");
            hf_json_string(b, w.v[i]);
        }
        sb_printf(b, "\n  ]");
    }
    words_free(&w);
}

void hf_json_base_model(struct strbuf *b, const char *base_model) {
    sb_printf(b, "\"base_model_name_or_path\": ");
    if (base_model)
        hf_json_string(b, base_model);
    else
        sb_printf(b, "null");
}

int hf_config_write(const char *dir, struct strbuf *b) {
    char *path = path_join(dir, "adapter_config.json");
    int rc = file_write_atomic(path, b->s, b->len);
    free(path);
    sb_free(b);
    return rc;
}

int hf_lora_write(const char *dir, const struct hf_lora *a) {
    if (mkdir_p(dir)) return -1;
    struct strbuf b = {0};
    sb_printf(&b, "{\n  \"alpha_pattern\": {},\n  ");
    hf_json_base_model(&b, a->base_model);
    sb_printf(&b, ",\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
                  "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n"
                  "  \"lora_alpha\": ");
    if (a->lora_alpha == floor(a->lora_alpha) && fabs(a->lora_alpha) < 1e15)
        sb_printf(&b, "%lld", (long long)a->lora_alpha); /* PEFT's lora_alpha is an int */
    else
        json_float(&b, a->lora_alpha);
    sb_printf(&b, ",\n  \"lora_dropout\": ");
    json_float(&b, a->lora_dropout);
    sb_printf(&b,
              ",\n  \"modules_to_save\": null,\n  \"peft_type\": \"LORA\",\n  \"r\": %lld,\n"
              "  \"rank_pattern\": {},\n  \"target_modules\": ",
              (long long)a->r);
    hf_json_targets(&b, a->target_modules);
    sb_printf(&b, ",\n  \"task_type\": \"CAUSAL_LM\",\n%s  \"use_rslora\": %s\n}\n",
              a->use_dora ? "  \"use_dora\": true,\n" : "", a->use_rslora ? "true" : "false");
    if (hf_config_write(dir, &b)) return -1;
    int rc;
    struct st_writer *wr = st_writer_new();
    for (int32_t i = 0; i < a->n; i++)
        st_writer_add_f32(wr, a->names[i], a->shape[i][1] ? 2 : 1, a->shape[i], a->data[i]);
    char *model = path_join(dir, "adapter_model.safetensors");
    rc = st_writer_save(wr, model);
    st_writer_free(wr);
    free(model);
    return rc;
}

/* ---- method keys ----------------------------------------------------------------------- */

static int has_key(const struct plugin_method *pm, const char *key) {
    for (uint32_t i = 0; i < pm->desc->n_params; i++)
        if (strcmp(pm->desc->params[i].name, key) == 0) return 1;
    return 0;
}

const char *hf_lora_method(const struct hf_lora *a) { return a->use_dora ? "dora" : "lora"; }

int hf_lora_method_kv(const struct hf_lora *a, const struct plugin_method *pm,
                      struct kv_list *out) {
    if (!has_key(pm, "r") || !has_key(pm, "lora_alpha") || !has_key(pm, "target_modules"))
        return err_set("method '%s' has no keys r, lora_alpha and target_modules: it cannot hold "
                       "an HF PEFT LoRA",
                       pm->desc->id);
    struct kv_list given = {0};
    char num[64];
    snprintf(num, sizeof num, "%lld", (long long)a->r);
    kv_list_set(&given, "r", num);
    snprintf(num, sizeof num, "%.17g", a->lora_alpha);
    kv_list_set(&given, "lora_alpha", num);
    snprintf(num, sizeof num, "%.17g", a->lora_dropout);
    if (has_key(pm, "lora_dropout")) kv_list_set(&given, "lora_dropout", num);
    else if (a->lora_dropout != 0)
        return err_set("method '%s' has no dropout; the adapter has lora_dropout = %g",
                       pm->desc->id, a->lora_dropout);
    kv_list_set(&given, "target_modules", a->target_modules);
    kv_list_set(&given, "use_rslora", a->use_rslora ? "true" : "false");
    int rc = a->use_rslora && !has_key(pm, "use_rslora")
                 ? err_set("method '%s' has no use_rslora key", pm->desc->id)
                 : kv_complete(&given, pm, "HF PEFT adapter", out);
    kv_list_free(&given);
    return rc;
}

/* ---- export / import --------------------------------------------------------------------- */

/* An HF PEFT folder into a fresh method run of pm: every saved tensor of the run by name,
 * every tensor of the folder used. */
int hf_lora_fill(struct method_run *mr, const struct hf_lora *a, const char *dir) {
    uint8_t *used = xcalloc((size_t)a->n + 1, 1);
    int rc = 0;
    for (int32_t i = 0; i < method_run_tensor_count(mr) && rc == 0; i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (t->desc.flags & PEFT_TENSOR_NO_SAVE) continue;
        int32_t k = 0;
        while (k < a->n && strcmp(a->names[k], t->name) != 0) k++;
        if (k == a->n) {
            rc = err_set("%s: no tensor '%s' (the adapter does not cover that site)", dir, t->name);
        } else if (t->desc.ndim != (a->shape[k][1] ? 2u : 1u) ||
                   (int64_t)t->desc.shape[0] != a->shape[k][0] ||
                   (a->shape[k][1] && (int64_t)t->desc.shape[1] != a->shape[k][1])) {
            rc =
                err_set("%s: tensor '%s' has shape [%lld, %lld], the model needs [%llu, %llu]", dir,
                        t->name, (long long)a->shape[k][0], (long long)a->shape[k][1],
                        (unsigned long long)t->desc.shape[0], (unsigned long long)t->desc.shape[1]);
        } else {
            memcpy(t->data, a->data[k], t->numel * sizeof(float));
            used[k] = 1;
        }
    }
    for (int32_t k = 0; k < a->n && rc == 0; k++)
        if (!used[k])
            rc = err_set("%s: tensor '%s' is not a site of the model's adapter (target_modules "
                         "'%s')",
                         dir, a->names[k], a->target_modules);
    free(used);
    return rc;
}

int peft_export(struct plugin_registry *reg, const char *src, const char *out_dir,
                const char *base_model) {
    char *path = dir_exists(src) ? path_join(src, "adapter.safetensors") : xstrdup(src);
    struct st_file f;
    if (st_open(&f, path)) {
        free(path);
        return -1;
    }
    free(path);
    struct kv_list kv = {0};
    struct hf_lora a = {0};
    int rc = 0;
    const char *id = st_meta(&f, "peft.method");
    const struct plugin_method *pm = id ? registry_find(reg, id) : NULL;
    int hf = plugin_has_feature(pm, PEFT_FEATURE_HF_PEFT);
    if (!id) {
        rc = err_set("%s: not a peftkit adapter (no peft.method in __metadata__)", f.path);
    } else if (!pm) {
        rc = err_prefix("%s", f.path);
    } else if (hf && has_key(pm, "feedforward_modules")) { /* PEFT's IA3 */
        rc = adapter_file_kv(&f, pm, &kv) || hf_ia3_export(&f, &kv, out_dir, base_model);
    } else if (hf && has_key(pm, "n_skills") && has_key(pm, "n_splits")) { /* PEFT's Poly */
        rc = adapter_file_kv(&f, pm, &kv) || hf_poly_export(&f, &kv, out_dir, base_model);
    } else if (!hf || !has_key(pm, "r") || !has_key(pm, "lora_alpha")) {
        rc = err_set("%s: method '%s' does not keep a LoRA in HF PEFT's layout; only LoRA-shaped "
                     "adapters are exported",
                     f.path, id);
    } else if (adapter_file_kv(&f, pm, &kv) == 0) {
        int64_t r = 0;
        double alpha = 0, dropout = 0;
        parse_i64(kv_list_get(&kv, "r"), &r);
        parse_f64(kv_list_get(&kv, "lora_alpha"), &alpha);
        const char *d = kv_list_get(&kv, "lora_dropout"), *rs = kv_list_get(&kv, "use_rslora");
        const char *tm = kv_list_get(&kv, "target_modules");
        if (d) parse_f64(d, &dropout);
        int rslora = 0;
        if (rs) parse_bool(rs, &rslora);
        a.r = r;
        a.lora_alpha = alpha;
        a.lora_dropout = dropout;
        a.use_rslora = rslora;
        a.target_modules = xstrdup(tm ? tm : "");
        a.base_model = base_model ? xstrdup(base_model) : NULL;
        a.names = xcalloc((size_t)f.n_tensors + 1, sizeof *a.names);
        a.shape = xcalloc((size_t)f.n_tensors + 1, sizeof *a.shape);
        a.data = xcalloc((size_t)f.n_tensors + 1, sizeof *a.data);
        for (int32_t i = 0; i < f.n_tensors && rc == 0; i++) {
            const struct st_tensor *t = &f.tensors[i];
            char module[256];
            char which = split_key(t->name, module, sizeof module);
            if (!which && t->ndim == 1 && split_magnitude_key(t->name, module, sizeof module)) {
                a.use_dora = 1; /* DoRA's magnitude, under PEFT's own name */
                float *x = xalloc_floats(t->numel);
                if (st_read_f32(&f, t, x, t->numel)) {
                    free(x);
                    rc = -1;
                    break;
                }
                a.names[a.n] = xstrdup(t->name);
                a.shape[a.n][0] = t->shape[0];
                a.shape[a.n][1] = 0;
                a.data[a.n++] = x;
                continue;
            }
            if (!which) {
                rc = err_set("%s: tensor '%s' is not a LoRA factor: %s keeps more than LoRA's A "
                             "and B, which HF PEFT's LoRA cannot hold",
                             f.path, t->name, id);
                break;
            }
            if (t->ndim != 2 || (which == 'A' ? t->shape[0] : t->shape[1]) != r) {
                rc = err_set("%s: tensor '%s' does not have rank r = %lld", f.path, t->name,
                             (long long)r);
                break;
            }
            float *x = xalloc_floats(t->numel);
            if (st_read_f32(&f, t, x, t->numel)) {
                free(x);
                rc = -1;
                break;
            }
            a.names[a.n] = xstrdup(t->name);
            a.shape[a.n][0] = t->shape[0];
            a.shape[a.n][1] = t->shape[1];
            a.data[a.n++] = x;
        }
        if (rc == 0 && a.n == 0) rc = err_set("%s: no tensors", f.path);
        if (rc == 0) rc = hf_lora_write(out_dir, &a);
    } else {
        rc = -1;
    }
    hf_lora_free(&a);
    kv_list_free(&kv);
    st_close(&f);
    return rc;
}

/* The peft_type of an HF PEFT folder's adapter_config.json, or NULL (the LoRA reader then
 * says what is wrong). */
static char *hf_peft_type(const char *dir) {
    char *path = path_join(dir, "adapter_config.json"), *text = NULL, *type = NULL;
    size_t len;
    if (file_exists(path) && file_read_all(path, &text, &len) == 0) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
        if (cJSON_IsString(pt)) type = xstrdup(pt->valuestring);
        cJSON_Delete(j);
    }
    free(text);
    free(path);
    return type;
}

int peft_import(struct plugin_registry *reg, const char *hf_dir, const char *out_file) {
    char *type = hf_peft_type(hf_dir);
    int ia3 = type && strcmp(type, "IA3") == 0;
    free(type);
    if (ia3) return hf_ia3_import(reg, hf_dir, out_file);
    struct hf_lora a;
    if (hf_lora_read(hf_dir, &a)) return -1;
    const struct plugin_method *pm = registry_find(reg, hf_lora_method(&a));
    struct kv_list kv = {0};
    int rc = !pm ? err_prefix("import: HF PEFT %s adapters become adapters of method '%s'",
                              a.use_dora ? "DoRA" : "LoRA", hf_lora_method(&a))
                 : hf_lora_method_kv(&a, pm, &kv);
    if (rc == 0) {
        struct st_writer *w = st_writer_new();
        for (int32_t i = 0; i < a.n; i++)
            st_writer_add_f32(w, a.names[i], a.shape[i][1] ? 2 : 1, a.shape[i], a.data[i]);
        char abi[16];
        snprintf(abi, sizeof abi, "%u.%u", PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
        char *method_json = kv_list_json(&kv);
        struct kv_list stage = {0};
        kv_list_set(&stage, "method", pm->desc->id);
        for (uint32_t i = 0; i < kv.n; i++) kv_list_set(&stage, kv.kv[i].key, kv.kv[i].value);
        char *stage_json = kv_list_json(&stage);
        st_writer_meta(w, "peft.method", pm->desc->id);
        st_writer_meta(w, "peft.method_version", pm->desc->version);
        st_writer_meta(w, "peft.abi_version", abi);
        st_writer_meta(w, "peft.method_config", method_json);
        st_writer_meta(w, "peft.stage_config", stage_json);
        st_writer_meta(w, "peft.source", hf_dir);
        if (a.base_model) st_writer_meta(w, "peft.base_model", a.base_model);
        rc = st_writer_save(w, out_file);
        st_writer_free(w);
        free(method_json);
        free(stage_json);
        kv_list_free(&stage);
    }
    kv_list_free(&kv);
    hf_lora_free(&a);
    return rc;
}
