/*
 * checkpoint_hf.c: HF checkpoints (llama, qwen2, qwen3, mistral): DIR/config.json and the weights in
 * DIR/model.safetensors, or in shards listed by DIR/model.safetensors.index.json.
 *
 * config.json: both RoPE layouts are read (transformers v4: top-level rope_theta and
 * rope_scaling; v5: rope_parameters {rope_type, rope_theta}). Only default RoPE, SiLU and
 * bias-free projections are implemented, so anything else is refused with a line naming the
 * key rather than loaded into a model that would compute something different.
 *
 * Weights: every tensor of the model (model.h's list) must be present with the shape
 * config.json implies; F32, F16 and BF16 are converted to fp32. Old rotary_emb.inv_freq
 * buffers are ignored; any other extra tensor is refused by name (a bias, a layer beyond
 * num_hidden_layers, an lm_head that differs from a tied embedding).
 *
 * Writing: config.json (v4 and v5 RoPE keys both present, so both generations read it) and
 * one F32 model.safetensors, each atomically.
 */
#include "checkpoint_hf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "core/core.h"

// ---------------------------------------------------------------------------------------
// config.json

/* The shortest decimal that reads back as the same fp32, always with a '.' or exponent so
 * that Python reads a float. */
static void float_text(char *buf, size_t cap, float v) {
    if (v == floorf(v) && fabsf(v) < 1e15f) { /* 10000.0, as HF files spell rope_theta */
        snprintf(buf, cap, "%.1f", (double)v);
        return;
    }
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, cap, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eE")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

/* A name read from a file, safe for a one-line message: control bytes escaped, cut at ~150. */
static const char *printable(const char *s, char buf[static 160]) {
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (j + 8 >= 160) {
            memcpy(buf + j, "...", 4);
            return buf;
        }
        if (*p < 0x20 || *p == 0x7f)
            j += (size_t)snprintf(buf + j, 160 - j, "\\x%02x", *p);
        else
            buf[j++] = (char)*p;
    }
    buf[j] = '\0';
    return buf;
}

/* key absent or null: HF treats both as "use the default" */
static const cJSON *get_key(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static const char *kind_of(const cJSON *v) {
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    return "null";
}

/* A positive integer that fits int32; absent -> def, or an error when def < 0 (required). */
static int get_pos_int(const char *path, const cJSON *root, const char *key, int32_t def,
                       int32_t *out) {
    const cJSON *v = get_key(root, key);
    if (!v) {
        if (def < 0) return err_set("%s: %s: missing", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return err_set("%s: %s: expected a positive integer, got %s", path, key, kind_of(v));
    double d = v->valuedouble;
    if (!(d >= 1) || d > INT32_MAX || d != floor(d))
        return err_set("%s: %s: expected a positive integer, got %g", path, key, d);
    *out = (int32_t)d;
    return 0;
}

static int get_pos_float(const char *path, const char *key, const cJSON *v, float *out) {
    if (!cJSON_IsNumber(v))
        return err_set("%s: %s: expected a positive number, got %s", path, key, kind_of(v));
    double d = v->valuedouble;
    if (!(d > 0) || !isfinite((float)d) || (float)d == 0.0f)
        return err_set("%s: %s: expected a positive number, got %g", path, key, d);
    *out = (float)d;
    return 0;
}

/* A boolean key that must be false (or absent) for the model we implement. */
static int require_false(const char *path, const cJSON *root, const char *key,
                         const char *why) {
    const cJSON *v = get_key(root, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v))
        return err_set("%s: %s: expected true or false, got %s", path, key, kind_of(v));
    if (cJSON_IsTrue(v)) return err_set("%s: %s: true is not supported (%s)", path, key, why);
    return 0;
}

/* rope_scaling (v4) or rope_parameters (v5): the default RoPE, "linear" (positions divided by
 * factor) and "llama3" (Llama 3.1's frequency-dependent scaling). The others (dynamic, yarn,
 * longrope, ...) are refused by name. */
static int read_rope(const char *path, const char *key, const cJSON *obj, struct rope_scaling *out) {
    if (!cJSON_IsObject(obj))
        return err_set("%s: %s: expected an object or null, got %s", path, key, kind_of(obj));
    const cJSON *type = get_key(obj, "rope_type");
    const char *field = "rope_type";
    if (!type) { /* older files spell it "type" */
        type = get_key(obj, "type");
        field = "type";
    }
    if (type && !cJSON_IsString(type))
        return err_set("%s: %s: %s: expected a string, got %s", path, key, field,
                       kind_of(type));
    if (!type) {
        for (const cJSON *c = obj->child; c; c = c->next)
            if (cJSON_IsObject(c))
                return err_set("%s: %s: per-layer-type RoPE settings ('%s') are not supported",
                               path, key, c->string);
        if (strcmp(key, "rope_scaling") == 0 && obj->child)
            return err_set("%s: rope_scaling: no rope_type given", path);
        return 0;
    }
    const char *t = type->valuestring;
    if (strcmp(t, "default") == 0) return 0;
    if (strcmp(t, "linear") != 0 && strcmp(t, "llama3") != 0)
        return err_set("%s: %s: %s '%s' is not supported (default, linear, llama3)", path, key,
                       field, t);
    char where[96];
    snprintf(where, sizeof where, "%s: factor", key);
    const cJSON *f = get_key(obj, "factor");
    if (!f) return err_set("%s: %s: factor missing (rope_type %s)", path, key, t);
    if (get_pos_float(path, where, f, &out->factor) != 0) return -1;
    out->type = strcmp(t, "linear") == 0 ? ROPE_LINEAR : ROPE_LLAMA3;
    if (out->type == ROPE_LINEAR) return 0;
    static const char *names[3] = {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    float v[3];
    for (int k = 0; k < 3; k++) {
        const cJSON *x = get_key(obj, names[k]);
        snprintf(where, sizeof where, "%s: %s", key, names[k]);
        if (!x) return err_set("%s: %s: %s missing (rope_type llama3)", path, key, names[k]);
        if (get_pos_float(path, where, x, &v[k]) != 0) return -1;
    }
    if (!(v[1] > v[0]))
        return err_set("%s: %s: high_freq_factor %g must exceed low_freq_factor %g", path, key,
                       (double)v[1], (double)v[0]);
    out->low_freq_factor = v[0];
    out->high_freq_factor = v[1];
    out->original_context = (int32_t)v[2];
    return 0;
}

static int parse_config(const char *path, const cJSON *root, struct model_config *c) {
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) return err_set("%s: expected a JSON object", path);

    /* The families: llama; qwen2 (q/k/v biases); qwen3 (per-head q/k RMSNorm); mistral
     * (llama's layout, refused if its sliding window is shorter than the context). */
    const cJSON *mt = get_key(root, "model_type");
    const char *family = cJSON_IsString(mt) ? mt->valuestring : "llama";
    if (mt && (!cJSON_IsString(mt) ||
               (strcmp(family, "llama") && strcmp(family, "qwen2") && strcmp(family, "qwen3") &&
                strcmp(family, "mistral"))))
        return err_set("%s: model_type: '%s' is not supported (llama, qwen2, qwen3, mistral)",
                       path, cJSON_IsString(mt) ? mt->valuestring : kind_of(mt));
    c->qkv_bias = strcmp(family, "qwen2") == 0;
    c->qk_norm = strcmp(family, "qwen3") == 0;
    const cJSON *act = get_key(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return err_set("%s: hidden_act: '%s' is not supported (silu only)", path,
                       cJSON_IsString(act) ? act->valuestring : kind_of(act));
    /* qwen2's biases are its own (no attention_bias key); elsewhere only bias-free projections */
    if ((!c->qkv_bias &&
         require_false(path, root, "attention_bias", "projections without bias only") != 0) ||
        require_false(path, root, "mlp_bias", "projections without bias only") != 0)
        return -1;

    if (get_pos_int(path, root, "vocab_size", -1, &c->vocab) != 0 ||
        get_pos_int(path, root, "hidden_size", -1, &c->d_model) != 0 ||
        get_pos_int(path, root, "intermediate_size", -1, &c->d_ff) != 0 ||
        get_pos_int(path, root, "num_hidden_layers", -1, &c->n_layers) != 0 ||
        get_pos_int(path, root, "num_attention_heads", -1, &c->n_heads) != 0 ||
        get_pos_int(path, root, "num_key_value_heads", c->n_heads, &c->n_kv_heads) != 0 ||
        get_pos_int(path, root, "max_position_embeddings", 2048, &c->max_seq) != 0)
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set("%s: num_key_value_heads: %d does not divide num_attention_heads %d",
                       path, (int)c->n_kv_heads, (int)c->n_heads);
    if (!get_key(root, "head_dim") && c->d_model % c->n_heads != 0)
        return err_set("%s: head_dim: missing, and hidden_size %d is not a multiple of "
                       "num_attention_heads %d", path, (int)c->d_model, (int)c->n_heads);
    if (get_pos_int(path, root, "head_dim", c->d_model / c->n_heads, &c->head_dim) != 0)
        return -1;

    c->rms_eps = 1e-6f;
    const cJSON *eps = get_key(root, "rms_norm_eps");
    if (eps && get_pos_float(path, "rms_norm_eps", eps, &c->rms_eps) != 0) return -1;

    c->tied = 0;
    const cJSON *tie = get_key(root, "tie_word_embeddings");
    if (tie && !cJSON_IsBool(tie))
        return err_set("%s: tie_word_embeddings: expected true or false, got %s", path,
                       kind_of(tie));
    if (tie) c->tied = cJSON_IsTrue(tie) ? 1 : 0;

    /* RoPE: v5 rope_parameters.rope_theta, else v4 top-level rope_theta, else 10000 */
    const cJSON *scaling = get_key(root, "rope_scaling");
    const cJSON *params = get_key(root, "rope_parameters");
    struct rope_scaling from_scaling = {0}, from_params = {0};
    if (scaling && !cJSON_IsNull(scaling) && read_rope(path, "rope_scaling", scaling, &from_scaling) != 0) return -1;
    if (params && read_rope(path, "rope_parameters", params, &from_params) != 0) return -1;
    if (from_scaling.type != ROPE_DEFAULT && from_params.type != ROPE_DEFAULT &&
        memcmp(&from_scaling, &from_params, sizeof from_scaling) != 0)
        return err_set("%s: rope_scaling disagrees with rope_parameters", path);
    c->rope = from_params.type != ROPE_DEFAULT ? from_params : from_scaling;
    const cJSON *theta_top = get_key(root, "rope_theta");
    const cJSON *theta_v5 = params ? get_key(params, "rope_theta") : NULL;
    float top = 0, v5 = 0;
    if (theta_top && get_pos_float(path, "rope_theta", theta_top, &top) != 0) return -1;
    if (theta_v5 && get_pos_float(path, "rope_parameters: rope_theta", theta_v5, &v5) != 0)
        return -1;
    if (theta_top && theta_v5 && top != v5) {
        char a[64], b[64];
        float_text(a, sizeof a, top);
        float_text(b, sizeof b, v5);
        return err_set("%s: rope_theta: %s disagrees with rope_parameters.rope_theta %s", path, a,
                       b);
    }
    c->rope_theta = theta_v5 ? v5 : theta_top ? top : 10000.0f;

    /* sliding-window attention (mistral; qwen2 when use_sliding_window): full attention equals
     * it only within the window, so a shorter window than the context is refused (by run) */
    const cJSON *window = get_key(root, "sliding_window");
    const cJSON *use_window = get_key(root, "use_sliding_window");
    int windowed = strcmp(family, "mistral") == 0 || cJSON_IsTrue(use_window);
    if (windowed && window && cJSON_IsNumber(window)) {
        if (get_pos_int(path, root, "sliding_window", 0, &c->sliding_window) != 0) return -1;
        /* the context within which full attention is the model's attention */
        if (c->sliding_window < c->max_seq) c->max_seq = c->sliding_window;
    }

    if (model_config_check(c) != 0) return err_prefix("%s", path);
    return 0;
}

int hf_config_load(const char *dir, struct model_config *c) {
    char *path = path_join(dir, "config.json");
    int rc = hf_config_load_file(path, c);
    free(path);
    return rc;
}

int hf_config_load_file(const char *path, struct model_config *c) {
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(path, &text, &len);
    if (rc == 0) {
        const char *end = NULL;
        /* len + 1: cJSON wants to see the terminating NUL to reject trailing text */
        cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
        if (!root) {
            /* the line of the failure helps more than a byte offset in a config file */
            int line = 1;
            for (const char *p = text; end && p < end && p < text + len; p++) line += *p == '\n';
            rc = err_set("%s:%d: not valid JSON", path, line);
        } else {
            rc = parse_config(path, root, c);
            cJSON_Delete(root);
        }
    }
    free(text);
    return rc;
}

// ---------------------------------------------------------------------------------------
// weights

/* The weight files of a checkpoint: one model.safetensors or the shards of an index. */
struct weight_files {
    struct st_file *v;
    int32_t n;
    char *where; /* the file to name when a tensor is missing */
};

static void weight_files_close(struct weight_files *w) {
    for (int32_t i = 0; i < w->n; i++) st_close(&w->v[i]);
    free(w->v);
    free(w->where);
    memset(w, 0, sizeof *w);
}

static const struct st_tensor *weight_find(const struct weight_files *w, const char *name,
                                           const struct st_file **file) {
    for (int32_t i = 0; i < w->n; i++) {
        const struct st_tensor *t = st_find(&w->v[i], name);
        if (t) {
            *file = &w->v[i];
            return t;
        }
    }
    return NULL;
}

/* Shard file names come from a file we did not write: plain names in DIR only. */
static int shard_name_ok(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int open_index(const char *dir, const char *index_path, struct weight_files *w) {
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(index_path, &text, &len) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return err_set("%s: not valid JSON", index_path);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    char name[160];
    int rc = 0;
    if (!cJSON_IsObject(map))
        rc = err_set("%s: weight_map: missing or not an object", index_path);
    /* distinct shard names, in first-seen order */
    int32_t n_map = 0;
    for (const cJSON *e = map ? map->child : NULL; rc == 0 && e; e = e->next) {
        n_map++;
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring))
            rc = err_set("%s: weight_map: '%s': expected a file name in the same folder",
                         index_path, printable(e->string, name));
    }
    if (rc == 0 && n_map == 0) rc = err_set("%s: weight_map: empty", index_path);
    w->v = xcalloc((size_t)n_map + 1, sizeof *w->v);
    for (const cJSON *e = map ? map->child : NULL; rc == 0 && e; e = e->next) {
        char *p = path_join(dir, e->valuestring);
        int32_t seen = 0;
        for (int32_t i = 0; i < w->n && !seen; i++) seen = strcmp(w->v[i].path, p) == 0;
        if (!seen) {
            rc = st_open(&w->v[w->n], p);
            if (rc == 0) w->n++;
        }
        free(p);
    }
    /* every mapped tensor is in the shard the map names */
    for (const cJSON *e = map ? map->child : NULL; rc == 0 && e; e = e->next) {
        char *p = path_join(dir, e->valuestring);
        for (int32_t i = 0; i < w->n; i++)
            if (strcmp(w->v[i].path, p) == 0 && !st_find(&w->v[i], e->string))
                rc = err_set("%s: weight_map: tensor '%s' is not in %s", index_path,
                             printable(e->string, name), e->valuestring);
        free(p);
    }
    cJSON_Delete(root);
    return rc;
}

static int open_weights(const char *dir, struct weight_files *w) {
    char name[160];
    memset(w, 0, sizeof *w);
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    int rc;
    if (file_exists(single) || !file_exists(index)) {
        w->v = xcalloc(1, sizeof *w->v);
        rc = st_open(&w->v[0], single);
        if (rc == 0) w->n = 1;
        w->where = xstrdup(single);
    } else {
        rc = open_index(dir, index, w);
        w->where = xstrdup(index);
    }
    /* a tensor in two shards would make the checkpoint ambiguous */
    for (int32_t i = 0; rc == 0 && i < w->n; i++)
        for (int32_t k = 0; rc == 0 && k < w->v[i].n_tensors; k++)
            for (int32_t j = i + 1; rc == 0 && j < w->n; j++)
                if (st_find(&w->v[j], w->v[i].tensors[k].name))
                    rc = err_set("%s: tensor '%s' is also in %s", w->v[j].path,
                                 printable(w->v[i].tensors[k].name, name), w->v[i].path);
    if (rc != 0) weight_files_close(w);
    free(single);
    free(index);
    return rc;
}

static int is_float_dtype(int32_t dtype) {
    return dtype == ST_F32 || dtype == ST_F16 || dtype == ST_BF16;
}

static int load_tensor(const struct st_file *f, const struct st_tensor *t,
                       const struct model_tensor *mt, float *out) {
    if (!is_float_dtype(t->dtype))
        return err_set("%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", f->path,
                       t->name, st_dtype_name(t->dtype));
    int same = t->ndim == mt->ndim;
    for (int32_t k = 0; same && k < mt->ndim; k++) same = t->shape[k] == mt->shape[k];
    if (!same) {
        char have[128], want[64];
        st_shape_text(have, sizeof have, t->ndim, t->shape);
        st_shape_text(want, sizeof want, mt->ndim, mt->shape);
        return err_set("%s: tensor '%s' has shape %s but config.json says %s", f->path, t->name,
                       have, want);
    }
    return out ? st_read_f32(f, t, out, mt->numel) : 0; /* NULL out: the checks alone */
}

/* A matrix (a site's weight, the embedding, the head) stored in 16 bits stays in 16 bits
 * (model.h: widened per product block or row, or once when a method trains, writes or reads
 * it). */
static int load_half(const struct st_file *f, const struct st_tensor *t,
                     const struct model_tensor *mt, struct model *m, int32_t i) {
    int rc = load_tensor(f, t, mt, NULL); /* dtype and shape */
    if (rc) return rc;
    uint16_t *v = xmalloc(mt->numel * sizeof *v);
    memcpy(v, st_data(f, t), mt->numel * sizeof *v);
    model_tensor_set_half(m, i, v, t->dtype == ST_BF16);
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A tensor of the files that the model has no place for. */
static int check_extra(const struct model *m, const struct st_file *f,
                       const struct st_tensor *t) {
    if (model_find_tensor(m, t->name) >= 0) return 0;
    if (ends_with(t->name, "rotary_emb.inv_freq")) return 0; /* a recomputed buffer */
    if (m->cfg.tied && strcmp(t->name, "lm_head.weight") == 0) {
        /* a tied checkpoint may still store the head; accept only an exact copy */
        const struct model_tensor *emb = &m->tensors[0];
        float *head = xmalloc(emb->numel * sizeof(float) + 1), *embed = xalloc_floats(emb->numel);
        int rc = load_tensor(f, t, emb, head);
        model_tensor_read(m, 0, embed);
        if (rc == 0 && memcmp(head, embed, emb->numel * sizeof(float)) != 0)
            rc = err_set("%s: tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' "
                         "but config.json says tie_word_embeddings: true", f->path);
        free(head);
        free(embed);
        return rc;
    }
    char name[160];
    return err_set("%s: unexpected tensor '%s' (not part of the llama model config.json "
                   "describes)", f->path, printable(t->name, name));
}

/* A tensor the model will have, checked against the weights before the model is allocated:
 * missing, or of another shape than config.json implies. */
static int check_one(const struct weight_files *w, const char *name, int64_t rows, int64_t cols) {
    const struct st_file *f;
    const struct st_tensor *t = weight_find(w, name, &f);
    if (!t) return err_set("%s: tensor '%s' is missing", w->where, name);
    int32_t ndim = cols ? 2 : 1;
    int64_t want_shape[2] = {rows, cols};
    if (t->ndim == ndim && t->shape[0] == rows && (ndim == 1 || t->shape[1] == cols)) return 0;
    char have[128], want[64];
    st_shape_text(have, sizeof have, t->ndim, t->shape);
    st_shape_text(want, sizeof want, ndim, want_shape);
    return err_set("%s: tensor '%s' has shape %s but config.json says %s", f->path, t->name, have,
                   want);
}

/* Every size in config.json is bounded by the weights before anything is allocated: the
 * embedding (vocab, hidden size), the first layer's projections (heads, head width, key/value
 * heads, MLP width) and the last layer's norm (layer count) must be there with those shapes,
 * so a config.json of a bigger model beside small weights is refused at once. */
static int check_sizes_against_weights(const struct model_config *c, const struct weight_files *w) {
    int64_t C = c->d_model, QD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim;
    char last[96];
    snprintf(last, sizeof last, "model.layers.%d.input_layernorm.weight", (int)c->n_layers - 1);
    if (check_one(w, "model.embed_tokens.weight", c->vocab, C) || check_one(w, last, C, 0) ||
        check_one(w, "model.layers.0.self_attn.q_proj.weight", QD, C) ||
        check_one(w, "model.layers.0.self_attn.k_proj.weight", KD, C) ||
        check_one(w, "model.layers.0.mlp.gate_proj.weight", c->d_ff, C))
        return -1;
    return 0;
}

int hf_model_load(const char *dir, struct model *m) {
    memset(m, 0, sizeof *m);
    struct model_config c;
    if (hf_config_load(dir, &c) != 0) return -1;
    struct weight_files w;
    if (open_weights(dir, &w) != 0) return -1;
    if (check_sizes_against_weights(&c, &w) != 0) {
        weight_files_close(&w);
        return -1;
    }
    if (model_init(m, &c) != 0) {
        weight_files_close(&w);
        return err_prefix("%s/config.json", dir);
    }
    int rc = 0;
    for (int32_t i = 0; rc == 0 && i < m->n_tensors; i++) {
        const struct model_tensor *mt = &m->tensors[i];
        const struct st_file *f = NULL;
        const struct st_tensor *t = weight_find(&w, mt->name, &f);
        if (!t)
            rc = err_set("%s: tensor '%s' is missing", w.where, mt->name);
        else if (mt->ndim == 2 && (t->dtype == ST_BF16 || t->dtype == ST_F16))
            rc = load_half(f, t, mt, m, i);
        else
            rc = load_tensor(f, t, mt, m->params + mt->offset);
        if (t && rc == 0) st_drop(f, t); /* read once: its bytes go back to the system */
    }
    for (int32_t i = 0; rc == 0 && i < w.n; i++)
        for (int32_t k = 0; rc == 0 && k < w.v[i].n_tensors; k++)
            rc = check_extra(m, &w.v[i], &w.v[i].tensors[k]);
    weight_files_close(&w);
    if (rc != 0) model_free(m);
    return rc;
}

// ---------------------------------------------------------------------------------------
// writing

static char *config_json(const struct model_config *c) {
    char num[64];
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(c->qk_norm ? "Qwen3ForCausalLM"
                                                  : c->qkv_bias ? "Qwen2ForCausalLM"
                                                                : "LlamaForCausalLM"));
    cJSON_AddStringToObject(root, "model_type", c->qk_norm ? "qwen3" : c->qkv_bias ? "qwen2" : "llama");
    cJSON_AddNumberToObject(root, "vocab_size", c->vocab);
    cJSON_AddNumberToObject(root, "hidden_size", c->d_model);
    cJSON_AddNumberToObject(root, "intermediate_size", c->d_ff);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(root, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(root, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(root, "head_dim", c->head_dim);
    cJSON_AddStringToObject(root, "hidden_act", "silu");
    cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_seq);
    float_text(num, sizeof num, c->rms_eps);
    cJSON_AddRawToObject(root, "rms_norm_eps", num);
    float_text(num, sizeof num, c->rope_theta);
    cJSON_AddRawToObject(root, "rope_theta", num); /* transformers v4 */
    cJSON *rope = cJSON_AddObjectToObject(root, "rope_parameters"); /* transformers v5 */
    static const char *rope_names[3] = {"default", "linear", "llama3"};
    cJSON_AddStringToObject(rope, "rope_type", rope_names[c->rope.type]);
    cJSON_AddRawToObject(rope, "rope_theta", num);
    if (c->rope.type != ROPE_DEFAULT) {
        cJSON *v4 = cJSON_AddObjectToObject(root, "rope_scaling");
        cJSON_AddStringToObject(v4, "rope_type", rope_names[c->rope.type]);
        for (int k = 0; k < 2; k++) {
            cJSON *o = k ? v4 : rope;
            float_text(num, sizeof num, c->rope.factor);
            cJSON_AddRawToObject(o, "factor", num);
            if (c->rope.type != ROPE_LLAMA3) continue;
            float_text(num, sizeof num, c->rope.low_freq_factor);
            cJSON_AddRawToObject(o, "low_freq_factor", num);
            float_text(num, sizeof num, c->rope.high_freq_factor);
            cJSON_AddRawToObject(o, "high_freq_factor", num);
            cJSON_AddNumberToObject(o, "original_max_position_embeddings", c->rope.original_context);
        }
    }
    cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tied != 0);
    if (!c->qkv_bias) cJSON_AddBoolToObject(root, "attention_bias", 0);
    if (c->sliding_window > 0) cJSON_AddNumberToObject(root, "sliding_window", c->sliding_window);
    cJSON_AddBoolToObject(root, "mlp_bias", 0);
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "peft: out of memory\n");
        exit(1);
    }
    char *out = xasprintf("%s\n", text);
    cJSON_free(text);
    return out;
}

int hf_model_save(const char *dir, const struct model *m, const char *const *meta_kv) {
    return hf_model_save_as(dir, m, meta_kv, ST_F32);
}

int hf_model_save_as(const char *dir, const struct model *m, const char *const *meta_kv,
                     int32_t dtype) {
    if (mkdir_p(dir) != 0) return -1;
    struct st_writer *w = st_writer_new();
    uint16_t **rounded = xcalloc((size_t)m->n_tensors + 1, sizeof *rounded); /* until saved */
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct model_tensor *t = &m->tensors[i];
        const float *v = m->params + t->offset;
        if (model_tensor_in_half(m, i)) { /* unchanged frozen weights keep their 16-bit type */
            st_writer_add(w, t->name, m->half_bf16[i] ? ST_BF16 : ST_F16, t->ndim, t->shape, m->half[i]);
        } else if (dtype == ST_BF16 || dtype == ST_F16) {
            rounded[i] = xmalloc(t->numel * sizeof **rounded + 1);
            for (size_t k = 0; k < t->numel; k++)
                rounded[i][k] = dtype == ST_BF16 ? f32_to_bf16(v[k]) : f32_to_f16(v[k]);
            st_writer_add(w, t->name, dtype, t->ndim, t->shape, rounded[i]);
        } else {
            st_writer_add_f32(w, t->name, t->ndim, t->shape, v);
        }
    }
    for (const char *const *kv = meta_kv; kv && kv[0] && kv[1]; kv += 2)
        st_writer_meta(w, kv[0], kv[1]);
    char *st_path = path_join(dir, "model.safetensors");
    int rc = st_writer_save(w, st_path);
    st_writer_free(w);
    for (int32_t i = 0; i < m->n_tensors; i++) free(rounded[i]);
    free(rounded);
    free(st_path);
    if (rc != 0) return -1;
    char *cfg_path = path_join(dir, "config.json");
    char *text = config_json(&m->cfg);
    rc = file_write_atomic(cfg_path, text, strlen(text));
    free(text);
    free(cfg_path);
    return rc;
}

int hf_copy_tokenizer(const char *from_dir, const char *to_dir) {
    static const char *names[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    int rc = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0] && rc == 0; k++) {
        char *from = path_join(from_dir, names[k]), *to = path_join(to_dir, names[k]);
        char *text = NULL;
        size_t len = 0;
        if (file_exists(from)) rc = file_read_all(from, &text, &len) || file_write_atomic(to, text, len) ? -1 : 0;
        free(text);
        free(from);
        free(to);
    }
    return rc;
}

char *hf_model_dir_of(const char *dir) {
    char *cfg = path_join(dir, "config.json");
    int here = file_exists(cfg);
    free(cfg);
    if (here) return xstrdup(dir);
    char *inner = path_join(dir, "model"), *inner_cfg = path_join(inner, "config.json");
    int there = file_exists(inner_cfg);
    free(inner_cfg);
    if (there) return inner;
    free(inner);
    err_set("%s: no config.json here or in %s/model (a checkpoint folder, or a stage folder "
            "written with save_model = true)", dir, dir);
    return NULL;
}
