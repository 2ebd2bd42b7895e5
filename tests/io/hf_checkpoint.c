/*
 * hf_checkpoint: HF llama checkpoints.
 *  - a random model saved with hf_model_save loads back bit-identical (config and every
 *    weight), tied and untied, and saving again gives byte-identical files;
 *  - the committed fixtures from tests/gen_hf_fixture.py (BF16 + v5 rope_parameters + tied;
 *    F16 + v4 rope_theta + untied GQA + a stray inv_freq buffer) load to exactly the fp32
 *    values torch converted them to, with the config values torch's side expects;
 *  - a sharded checkpoint (index + two shards) loads like the single file;
 *  - broken checkpoints are refused with one line naming the file and the key or tensor.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>

#include "checkpoint_hf.h"
#include "io_check.h"
#include "safetensors.h"

static const struct model_config base_cfg = {
    .vocab = 37, .d_model = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 6,
    .d_ff = 24, .max_seq = 32, .rms_eps = 1e-5f, .rope_theta = 123456.7f, .tied = 0,
};

static int same_config(const struct model_config *a, const struct model_config *b) {
    return a->vocab == b->vocab && a->d_model == b->d_model && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->head_dim == b->head_dim && a->d_ff == b->d_ff && a->max_seq == b->max_seq &&
           a->rms_eps == b->rms_eps && a->rope_theta == b->rope_theta && a->tied == b->tied;
}

static char *read_text(const char *path) {
    char *s = NULL;
    size_t n;
    if (file_read_all(path, &s, &n) != 0) return xstrdup("");
    return s;
}

static int files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (file_read_all(a, &x, &nx) != 0) return 0;
    if (file_read_all(b, &y, &ny) != 0) {
        free(x);
        return 0;
    }
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return eq;
}

// ---------------------------------------------------------------------------------------

static void test_roundtrip(const char *scratch, int tied) {
    struct model_config c = base_cfg;
    c.tied = tied;
    struct model m;
    CHECK(model_init(&m, &c) == 0);
    model_init_random(&m, 11 + (uint64_t)tied, 0.02f);
    /* make the norms distinct from 1 so a mixed-up tensor would show */
    for (size_t i = 0; i < m.n_params; i += 7) m.params[i] += 0.001f * (float)(i % 13);

    char *dir = xasprintf("%s/roundtrip_%s/model", scratch, tied ? "tied" : "untied");
    const char *meta[] = {"peft.method", "full", "peft.stage", "adapt", NULL};
    CHECK(hf_model_save(dir, &m, meta) == 0, "%s", err_msg());

    struct model back;
    int rc = hf_model_load(dir, &back);
    CHECK(rc == 0, "%s", err_msg());
    if (rc == 0) {
        CHECK(same_config(&m.cfg, &back.cfg));
        CHECK(back.n_params == m.n_params && back.n_tensors == m.n_tensors);
        size_t differ = 0;
        for (size_t i = 0; i < m.n_params && back.n_params == m.n_params; i++)
            differ += memcmp(&m.params[i], &back.params[i], sizeof(float)) != 0;
        printf("  %s: %d tensors, %zu parameters, %zu differ after save + load\n",
               tied ? "tied  " : "untied", back.n_tensors, back.n_params, differ);
        CHECK(differ == 0);
        CHECK((back.w.lm_head == back.w.embed) == (tied != 0));
        model_free(&back);
    }

    /* what is on disk */
    char *st_path = path_join(dir, "model.safetensors");
    char *cfg_path = path_join(dir, "config.json");
    struct st_file f;
    CHECK(st_open(&f, st_path) == 0);
    CHECK(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "pt") == 0);
    CHECK(st_meta(&f, "peft.method") && strcmp(st_meta(&f, "peft.method"), "full") == 0);
    CHECK(st_meta(&f, "peft.stage") && strcmp(st_meta(&f, "peft.stage"), "adapt") == 0);
    CHECK((st_find(&f, "lm_head.weight") == NULL) == (tied != 0));
    for (int32_t i = 0; i < f.n_tensors; i++) CHECK(f.tensors[i].dtype == ST_F32);
    st_close(&f);
    char *cfg = read_text(cfg_path);
    CHECK(strstr(cfg, "\"model_type\":\t\"llama\"") != NULL);
    CHECK(strstr(cfg, "\"LlamaForCausalLM\"") != NULL);
    CHECK(strstr(cfg, "\"torch_dtype\":\t\"float32\"") != NULL);
    CHECK(strstr(cfg, "\"rope_theta\":\t123456.7,") != NULL); /* shortest fp32 text */
    CHECK(strstr(cfg, "\"rope_parameters\":\t{") != NULL);
    CHECK(strstr(cfg, "\"rms_norm_eps\":\t1e-05") != NULL);
    CHECK(strstr(cfg, tied ? "\"tie_word_embeddings\":\ttrue" : "\"tie_word_embeddings\":\tfalse"));
    free(cfg);

    /* saving the loaded model again writes the same bytes */
    CHECK(hf_model_load(dir, &back) == 0);
    char *dir2 = xasprintf("%s/roundtrip_%s/again", scratch, tied ? "tied" : "untied");
    CHECK(hf_model_save(dir2, &back, meta) == 0);
    char *st2 = path_join(dir2, "model.safetensors"), *cfg2 = path_join(dir2, "config.json");
    CHECK(files_equal(st_path, st2));
    CHECK(files_equal(cfg_path, cfg2));
    model_free(&back);
    free(st2);
    free(cfg2);
    free(dir2);

    free(st_path);
    free(cfg_path);
    free(dir);
    model_free(&m);
}

// ---------------------------------------------------------------------------------------

static int meta_i32(const struct st_file *f, const char *key) {
    const char *v = st_meta(f, key);
    return v ? (int)strtol(v, NULL, 10) : -1;
}

static float meta_f32(const struct st_file *f, const char *key) {
    const char *v = st_meta(f, key);
    return v ? strtof(v, NULL) : NAN;
}

static void test_fixture(const char *name, int32_t want_dtype) {
    char *rel = xasprintf("tests/fixtures/%s", name);
    char *dir = io_source_path(rel);
    char *exp_path = path_join(dir, "expected.safetensors");
    char *model_path = path_join(dir, "model.safetensors");
    struct model m;
    int rc = hf_model_load(dir, &m);
    CHECK(rc == 0, "%s: %s", name, err_msg());
    struct st_file e, src;
    if (rc != 0 || st_open(&e, exp_path) != 0) {
        CHECK(0, "%s: %s", name, err_msg());
        if (rc == 0) model_free(&m);
        goto out;
    }
    CHECK(st_open(&src, model_path) == 0);

    /* the config as the generator says a loader must read it (defaults filled in) */
    const struct model_config *c = &m.cfg;
    CHECK(c->vocab == meta_i32(&e, "vocab") && c->d_model == meta_i32(&e, "d_model"));
    CHECK(c->n_layers == meta_i32(&e, "n_layers") && c->n_heads == meta_i32(&e, "n_heads"));
    CHECK(c->n_kv_heads == meta_i32(&e, "n_kv_heads"));
    CHECK(c->head_dim == meta_i32(&e, "head_dim") && c->d_ff == meta_i32(&e, "d_ff"));
    CHECK(c->max_seq == meta_i32(&e, "max_seq") && c->tied == meta_i32(&e, "tied"));
    CHECK(c->rms_eps == meta_f32(&e, "rms_eps"));
    CHECK(c->rope_theta == meta_f32(&e, "rope_theta"));
    struct model_config c2;
    CHECK(hf_config_load(dir, &c2) == 0 && same_config(&c2, c));

    /* every weight equals torch's fp32 conversion, bit for bit */
    int32_t compared = 0, stored_as = 0, kept_half = 0;
    size_t values = 0, differ = 0;
    for (int32_t i = 0; i < m.n_tensors; i++) {
        const struct model_tensor *mt = &m.tensors[i];
        const struct st_tensor *t = st_find(&e, mt->name);
        const struct st_tensor *s = st_find(&src, mt->name);
        CHECK(t && t->numel == mt->numel && t->dtype == ST_F32, "%s", mt->name);
        if (!t || t->numel != mt->numel) continue;
        if (s && s->dtype == want_dtype) stored_as++;
        const float *want = st_data(&e, t); /* F32, 8-aligned by the writer */
        kept_half += model_tensor_in_half(&m, i);
        const float *got = model_tensor_data(&m, i); /* widened here when kept in 16 bits */
        for (size_t k = 0; k < mt->numel; k++) {
            float w;
            memcpy(&w, want + k, sizeof w);
            differ += memcmp(&w, got + k, sizeof w) != 0;
        }
        values += mt->numel;
        compared++;
    }
    CHECK(compared == m.n_tensors && stored_as == m.n_tensors);
    CHECK(differ == 0);
    /* the matrices of a 16-bit checkpoint (sites, embedding, head) stay in 16 bits */
    int32_t matrices = 0;
    for (int32_t i = 0; i < m.n_tensors; i++) matrices += m.tensors[i].ndim == 2;
    CHECK(kept_half == (want_dtype == ST_F32 ? 0 : matrices), "%d of %d matrices in 16 bits",
          (int)kept_half, (int)matrices);
    CHECK(e.n_tensors == m.n_tensors); /* nothing the generator wrote was left out */
    int has_inv_freq = 0;
    for (int32_t i = 0; i < src.n_tensors; i++)
        has_inv_freq |= strstr(src.tensors[i].name, "rotary_emb.inv_freq") != NULL;
    printf("  %-16s %s, %s, vocab %d C %d H %d KV %d D %d F %d theta %g eps %g%s: "
           "%d tensors, %zu values, %zu differ from torch\n",
           name, st_dtype_name(want_dtype), c->tied ? "tied" : "untied", (int)c->vocab,
           (int)c->d_model, (int)c->n_heads, (int)c->n_kv_heads, (int)c->head_dim,
           (int)c->d_ff, (double)c->rope_theta, (double)c->rms_eps,
           has_inv_freq ? ", inv_freq ignored" : "", compared, values, differ);
    CHECK((m.w.lm_head == m.w.embed) == (c->tied != 0));
    if (want_dtype == ST_F16) {
        CHECK(has_inv_freq);
        CHECK(m.w.embed[0] == 65504.0f && m.w.embed[1] == -65504.0f);
        CHECK(m.w.embed[2] == 0x1p-24f && signbit(m.w.embed[4]) && m.w.embed[4] == 0.0f);
    } else {
        CHECK(m.w.embed[0] == 0x1.fep127f && m.w.embed[1] > 0 && m.w.embed[1] < 0x1p-126f);
    }
    st_close(&src);
    st_close(&e);
    model_free(&m);
out:
    free(model_path);
    free(exp_path);
    free(dir);
    free(rel);
}

// ---------------------------------------------------------------------------------------

/* Split a saved model in two shards with an index, as HF does for big checkpoints. */
static void write_shards(const char *dir, const struct model *m, const char *index_extra) {
    mkdir_p(dir);
    struct st_writer *w[2] = {st_writer_new(), st_writer_new()};
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)(m->n_params * sizeof(float)));
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    const char *names[2] = {"model-00001-of-00002.safetensors",
                            "model-00002-of-00002.safetensors"};
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct model_tensor *t = &m->tensors[i];
        int s = i < m->n_tensors / 2 ? 0 : 1;
        st_writer_add_f32(w[s], t->name, t->ndim, t->shape, m->params + t->offset);
        cJSON_AddStringToObject(map, t->name, names[s]);
    }
    if (index_extra) cJSON_AddStringToObject(map, index_extra, "../elsewhere.safetensors");
    for (int s = 0; s < 2; s++) {
        char *p = path_join(dir, names[s]);
        CHECK(st_writer_save(w[s], p) == 0);
        st_writer_free(w[s]);
        free(p);
    }
    char *text = cJSON_Print(root);
    char *p = path_join(dir, "model.safetensors.index.json");
    CHECK(file_write_atomic(p, text, strlen(text)) == 0);
    free(p);
    cJSON_free(text);
    cJSON_Delete(root);
}

static void test_sharded(const char *scratch) {
    struct model m, back;
    CHECK(model_init(&m, &base_cfg) == 0);
    model_init_random(&m, 5, 0.02f);
    char *dir = path_join(scratch, "sharded");
    CHECK(hf_model_save(dir, &m, NULL) == 0);
    char *single = path_join(dir, "model.safetensors");
    remove(single);
    write_shards(dir, &m, NULL);
    int rc = hf_model_load(dir, &back);
    CHECK(rc == 0, "%s", err_msg());
    if (rc == 0) {
        CHECK(back.n_params == m.n_params &&
              memcmp(back.params, m.params, m.n_params * sizeof(float)) == 0);
        printf("  sharded: 2 shards + index load bit-identical (%zu parameters)\n",
               back.n_params);
        model_free(&back);
    }
    char *bad = path_join(scratch, "sharded_escape");
    CHECK(hf_model_save(bad, &m, NULL) == 0);
    char *bad_single = path_join(bad, "model.safetensors");
    remove(bad_single);
    write_shards(bad, &m, "model.extra.weight");
    CHECK(hf_model_load(bad, &back) == -1);
    printf("  %-22s -> %s\n", "shard outside folder", err_msg() + strlen(scratch) + 1);
    CHECK(strstr(err_msg(), "model.safetensors.index.json: weight_map: 'model.extra.weight'"));
    free(bad_single);
    free(bad);
    free(single);
    free(dir);
    model_free(&m);
}

// ---------------------------------------------------------------------------------------
// broken checkpoints: start from a good one, break one thing

enum edit_kind { EDIT_CONFIG, EDIT_WEIGHTS, EDIT_REMOVE };

struct bad_case {
    const char *name;
    int tied;
    enum edit_kind kind;
    const char *config_json; /* EDIT_CONFIG: members merged into config.json (replacing) */
    const char *drop;        /* EDIT_CONFIG: a key to delete; EDIT_REMOVE: a file to delete */
    const char *file;        /* the file the message must name */
    const char *phrase;      /* what it must say */
};

static const struct bad_case cases[] = {
    {"shape_mismatch", 0, EDIT_CONFIG, "{\"intermediate_size\": 20}", NULL,
     "model.safetensors",
     "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [24, 16] but config.json says "
     "[20, 16]"},
    {"layers_mismatch", 0, EDIT_CONFIG, "{\"num_hidden_layers\": 1}", NULL,
     "model.safetensors", "unexpected tensor 'model.layers.1."},
    {"missing_tensor", 0, EDIT_WEIGHTS, NULL, "model.layers.1.mlp.down_proj.weight",
     "model.safetensors", "tensor 'model.layers.1.mlp.down_proj.weight' is missing"},
    {"missing_lm_head", 0, EDIT_WEIGHTS, NULL, "lm_head.weight", "model.safetensors",
     "tensor 'lm_head.weight' is missing"},
    {"extra_bias", 0, EDIT_WEIGHTS, NULL, "+model.layers.0.self_attn.q_proj.bias",
     "model.safetensors", "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'"},
    {"tied_head_differs", 1, EDIT_WEIGHTS, NULL, "+lm_head.weight", "model.safetensors",
     "tensor 'lm_head.weight' differs from 'model.embed_tokens.weight'"},
    {"i64_weight", 0, EDIT_WEIGHTS, NULL, "!model.norm.weight", "model.safetensors",
     "tensor 'model.norm.weight' has dtype I64"},
    {"rope_scaling_dynamic", 0, EDIT_CONFIG,
     "{\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}}",
     "rope_parameters", "config.json", "rope_scaling: rope_type 'dynamic' is not supported"},
    {"rope_scaling_old_type", 0, EDIT_CONFIG,
     "{\"rope_scaling\": {\"type\": \"longrope\", \"factor\": 2.0}}", "rope_parameters",
     "config.json", "rope_scaling: type 'longrope' is not supported"},
    {"rope_llama3_no_high", 0, EDIT_CONFIG,
     "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": "
     "1.0, \"original_max_position_embeddings\": 8192}}",
     "rope_parameters", "config.json", "rope_scaling: high_freq_factor missing"},
    {"rope_parameters_yarn", 0, EDIT_CONFIG,
     "{\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 123456.703, \"factor\": "
     "4.0}}", NULL, "config.json", "rope_parameters: rope_type 'yarn' is not supported"},
    {"rope_theta_disagrees", 0, EDIT_CONFIG, "{\"rope_theta\": 10000.0}", NULL, "config.json",
     "rope_theta: 10000.0 disagrees with rope_parameters.rope_theta 123456.7"},
    {"hidden_act_gelu", 0, EDIT_CONFIG, "{\"hidden_act\": \"gelu\"}", NULL, "config.json",
     "hidden_act: 'gelu' is not supported"},
    {"attention_bias", 0, EDIT_CONFIG, "{\"attention_bias\": true}", NULL, "config.json",
     "attention_bias: true is not supported"},
    {"mlp_bias", 0, EDIT_CONFIG, "{\"mlp_bias\": true}", NULL, "config.json",
     "mlp_bias: true is not supported"},
    {"model_type_gemma", 0, EDIT_CONFIG, "{\"model_type\": \"gemma\"}", NULL, "config.json",
     "model_type: 'gemma' is not supported (llama, qwen2, qwen3, mistral)"},
    {"qwen2_without_biases", 0, EDIT_CONFIG, "{\"model_type\": \"qwen2\"}", NULL,
     "model.safetensors", "tensor 'model.layers.0.self_attn.q_proj.bias' is missing"},
    {"qwen3_without_norms", 0, EDIT_CONFIG, "{\"model_type\": \"qwen3\"}", NULL,
     "model.safetensors", "tensor 'model.layers.0.self_attn.q_norm.weight' is missing"},

    {"layers_as_string", 0, EDIT_CONFIG, "{\"num_hidden_layers\": \"2\"}", NULL,
     "config.json", "num_hidden_layers: expected a positive integer, got a string"},
    {"heads_fraction", 0, EDIT_CONFIG, "{\"num_attention_heads\": 4.5}", NULL, "config.json",
     "num_attention_heads: expected a positive integer, got 4.5"},
    {"zero_vocab", 0, EDIT_CONFIG, "{\"vocab_size\": 0}", NULL, "config.json",
     "vocab_size: expected a positive integer, got 0"},
    {"missing_vocab", 0, EDIT_CONFIG, "{}", "vocab_size", "config.json", "vocab_size: missing"},
    {"kv_not_dividing", 0, EDIT_CONFIG, "{\"num_key_value_heads\": 3}", NULL, "config.json",
     "num_key_value_heads: 3 does not divide num_attention_heads 4"},
    {"odd_head_dim", 0, EDIT_CONFIG, "{\"head_dim\": 5}", NULL, "config.json",
     "head_dim: 5 must be even"},
    {"negative_eps", 0, EDIT_CONFIG, "{\"rms_norm_eps\": -1e-5}", NULL, "config.json",
     "rms_norm_eps: expected a positive number"},
    {"tie_as_string", 0, EDIT_CONFIG, "{\"tie_word_embeddings\": \"yes\"}", NULL,
     "config.json", "tie_word_embeddings: expected true or false"},
    {"missing_config", 0, EDIT_REMOVE, NULL, "config.json", "config.json", ""},
    {"missing_weights", 0, EDIT_REMOVE, NULL, "model.safetensors", "model.safetensors", ""},
    {"config_not_json", 0, EDIT_REMOVE, NULL, "!config.json", "config.json:3",
     "not valid JSON"},
};

/* members of `patch` replace (or add to) those of config.json; `drop` is deleted */
static void edit_config(const char *dir, const char *patch, const char *drop) {
    char *path = path_join(dir, "config.json");
    char *text = read_text(path);
    cJSON *root = cJSON_Parse(text);
    cJSON *p = cJSON_Parse(patch);
    CHECK(root && p);
    for (cJSON *c = p ? p->child : NULL; c; c = c->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, c->string);
        cJSON_AddItemToObject(root, c->string, cJSON_Duplicate(c, 1));
    }
    if (drop) cJSON_DeleteItemFromObjectCaseSensitive(root, drop);
    char *out = cJSON_Print(root);
    io_write_bytes(path, out, strlen(out));
    cJSON_free(out);
    cJSON_Delete(p);
    cJSON_Delete(root);
    free(text);
    free(path);
}

/* Rewrite model.safetensors: "-NAME"/"NAME" drops a tensor, "+NAME" adds a random (C) or
 * (V, C) one, "!NAME" stores that tensor as I64. */
static void edit_weights(const char *dir, const struct model *m, const char *what) {
    char *path = path_join(dir, "model.safetensors");
    struct st_writer *w = st_writer_new();
    char op = (what[0] == '+' || what[0] == '!') ? what[0] : '-';
    const char *name = what + (what[0] == '+' || what[0] == '!' || what[0] == '-');
    int64_t *as_int = NULL;
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const struct model_tensor *t = &m->tensors[i];
        if (strcmp(t->name, name) == 0 && op == '-') continue;
        if (strcmp(t->name, name) == 0 && op == '!') {
            as_int = xcalloc(t->numel, sizeof *as_int);
            st_writer_add(w, t->name, ST_I64, t->ndim, t->shape, as_int);
            continue;
        }
        st_writer_add_f32(w, t->name, t->ndim, t->shape, m->params + t->offset);
    }
    float *extra = NULL;
    if (op == '+') {
        int64_t shape[2] = {m->cfg.vocab, m->cfg.d_model};
        int is_head = strstr(name, "lm_head") != NULL;
        size_t n = (size_t)(is_head ? shape[0] * shape[1] : m->cfg.n_heads * m->cfg.head_dim);
        extra = xcalloc(n, sizeof *extra);
        for (size_t k = 0; k < n; k++) extra[k] = m->w.embed[k % 16] + 0.5f; /* not the embed */
        if (!is_head) shape[0] = m->cfg.n_heads * m->cfg.head_dim;
        st_writer_add_f32(w, name, is_head ? 2 : 1, shape, extra);
    }
    CHECK(st_writer_save(w, path) == 0);
    st_writer_free(w);
    free(extra);
    free(as_int);
    free(path);
}

static void test_bad(const char *scratch) {
    int refused = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct bad_case *bc = &cases[i];
        struct model_config c = base_cfg;
        c.tied = bc->tied;
        struct model m;
        CHECK(model_init(&m, &c) == 0);
        model_init_random(&m, 3, 0.02f);
        char *dir = path_join(scratch, bc->name);
        CHECK(hf_model_save(dir, &m, NULL) == 0);
        if (bc->kind == EDIT_CONFIG) {
            edit_config(dir, bc->config_json, bc->drop);
        } else if (bc->kind == EDIT_WEIGHTS) {
            edit_weights(dir, &m, bc->drop);
        } else if (bc->drop[0] == '!') {
            char *p = path_join(dir, bc->drop + 1);
            const char *broken = "{\n  \"vocab_size\": 37,\n  \"hidden_size\": 16 16\n}\n";
            io_write_bytes(p, broken, strlen(broken));
            free(p);
        } else {
            char *p = path_join(dir, bc->drop);
            remove(p);
            free(p);
        }
        struct model back;
        err_clear();
        int rc = hf_model_load(dir, &back);
        const char *msg = err_msg();
        char *file = path_join(dir, bc->file);
        CHECK(rc == -1, "%s loaded", bc->name);
        CHECK(strstr(msg, file) == msg, "%s: message does not start with %s: %s", bc->name,
              file, msg);
        CHECK(strstr(msg, bc->phrase) != NULL, "%s: want '%s' in: %s", bc->name,
              bc->phrase, msg);
        CHECK(strchr(msg, '\n') == NULL, "%s: message spans lines", bc->name);
        CHECK(back.params == NULL && back.tensors == NULL, "%s: failed load left state",
              bc->name);
        if (rc == -1) refused++;
        else model_free(&back);
        printf("  %-22s -> %s\n", bc->name, msg + strlen(scratch) + 1);
        free(file);
        free(dir);
        model_free(&m);
    }
    printf("  %d of %zu broken checkpoints refused\n", refused, sizeof cases / sizeof cases[0]);

    /* a tied checkpoint that still stores an exact copy of the head is fine */
    struct model_config c = base_cfg;
    c.tied = 1;
    struct model m, back;
    CHECK(model_init(&m, &c) == 0);
    model_init_random(&m, 4, 0.02f);
    char *dir = path_join(scratch, "tied_with_copy");
    CHECK(hf_model_save(dir, &m, NULL) == 0);
    char *path = path_join(dir, "model.safetensors");
    struct st_writer *w = st_writer_new();
    for (int32_t i = 0; i < m.n_tensors; i++)
        st_writer_add_f32(w, m.tensors[i].name, m.tensors[i].ndim, m.tensors[i].shape,
                          m.params + m.tensors[i].offset);
    st_writer_add_f32(w, "lm_head.weight", 2, m.tensors[0].shape, m.w.embed);
    CHECK(st_writer_save(w, path) == 0);
    st_writer_free(w);
    int rc = hf_model_load(dir, &back);
    CHECK(rc == 0, "%s", err_msg());
    if (rc == 0) {
        printf("  %-22s -> loads (lm_head.weight equals the embedding)\n", "tied_with_copy");
        model_free(&back);
    }
    free(path);
    free(dir);
    model_free(&m);
}

int main(void) {
    char *scratch = io_scratch_dir("hf");
    printf("save + load:\n");
    test_roundtrip(scratch, 0);
    test_roundtrip(scratch, 1);
    printf("fixtures (tests/gen_hf_fixture.py):\n");
    test_fixture("hf_bf16_v5_tied", ST_BF16);
    test_fixture("hf_f16_v4_gqa", ST_F16);
    printf("sharded:\n");
    test_sharded(scratch);
    printf("broken checkpoints:\n");
    test_bad(scratch);
    remove_tree(scratch);
    free(scratch);
    return check_summary("ok", "failed checks");
}
