/* merge_config.c: the keys of a merge stage, checked before anything is written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "merge.h"
#include "merge_input.h"

/* ---- the stand-in method: attaches to nothing ----------------------------------------- */

struct peft_instance {
    int unused;
};

static peft_status none_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    (void)api, (void)h, (void)cfg, (void)n_cfg;
    *out = calloc(1, sizeof **out);
    return *out ? PEFT_OK : PEFT_E_NOMEM;
}

static void none_destroy(peft_instance *self) { free(self); }

static peft_status none_attach(peft_instance *self, uint32_t site) {
    (void)self, (void)site;
    return PEFT_E_UNSUPPORTED; /* declines every site */
}

static const peft_method_vtable none_vt = {
    .struct_size = sizeof(peft_method_vtable),
    .create = none_create,
    .destroy = none_destroy,
    .attach = none_attach,
};

/* "mergeable": later stages may start from a merge stage's result. */
static const char *const none_features[] = {PEFT_FEATURE_MERGEABLE, NULL};

static const peft_method_desc none_desc = {
    .struct_size = sizeof(peft_method_desc),
    .id = "merge",
    .name = "merge stage",
    .version = "1.0.0",
    .description = "combines adapters and task vectors; trains nothing",
    .features = none_features,
    .vt = &none_vt,
};

static const struct plugin_method none_pm = {&none_desc, NULL};

const struct plugin_method *merge_stage_method(void) { return &none_pm; }

/* ---- keys ------------------------------------------------------------------------------ */

static const char *const op_names[] = {"add",         "task_arithmetic", "additive",
                                       "negate",      "magnitude_prune", "ties",
                                       "dare_linear", "dare_ties"};

static int32_t op_of(const char *name) {
    for (int32_t i = 0; i < (int32_t)(sizeof op_names / sizeof op_names[0]); i++)
        if (strcmp(op_names[i], name) == 0) return i;
    return -1;
}

const char *merge_op_name(int32_t op) { return op_names[op]; }

const char *merge_output_name(int32_t output) {
    static const char *const names[] = {"delta", "lora", "model", "adapter"};
    return names[output];
}

static int op_prunes(int32_t op) {
    return op == MERGE_OP_MAGNITUDE_PRUNE || op == MERGE_OP_TIES || op == MERGE_OP_DARE_LINEAR ||
           op == MERGE_OP_DARE_TIES;
}

static int op_elects(int32_t op) { return op == MERGE_OP_TIES || op == MERGE_OP_DARE_TIES; }

static int section_line(const struct cfg *c, const char *section) {
    for (int32_t k = 0; k < c->n_sections; k++)
        if (strcmp(c->sections[k].name, section) == 0) return c->sections[k].line;
    return 0;
}

/* "FILE:LINE: [stage.X] key" of an entry (it exists). */
static const char *at(struct cfg *c, const struct stage *s, const char *key, char *buf,
                      size_t cap) {
    char where[400];
    snprintf(buf, cap, "%s: [%s] %s",
             cfg_where(c, cfg_find(c, s->section, key), where, sizeof where), s->section, key);
    return buf;
}

/* A key that only some operators or outputs use must not be given to the others. */
static int unused_here(struct cfg *c, const struct stage *s, const char *key, const char *why) {
    char buf[512];
    if (!cfg_find(c, s->section, key)) return 0;
    return err_set("%s: %s", at(c, s, key, buf, sizeof buf), why);
}

static int resolve_input(struct stage_env *env, struct cfg *c, struct stage *s,
                         struct merge_input *in) {
    char buf[512];
    /* Earlier stages first: a stage name wins over a file of the same name. */
    for (int32_t k = 0; k < env->n_stages - 1; k++)
        if (strcmp(env->stages[k].name, in->text) == 0) {
            in->kind = MERGE_IN_STAGE;
            in->stage = k;
            return 0;
        }
    char *later = xasprintf("stage.%s", in->text);
    int is_later = cfg_has_section(c, later);
    free(later);
    if (is_later)
        return err_set("%s: '%s' is this stage or a later one (inputs are earlier stages, files "
                       "or folders)",
                       at(c, s, "inputs", buf, sizeof buf), in->text);
    if (dir_exists(in->text)) {
        static const char *const inside[] = {"adapter.safetensors", "task_vector.safetensors"};
        char *cfgp = path_join(in->text, "adapter_config.json");
        int hf = file_exists(cfgp);
        free(cfgp);
        if (hf) {
            in->kind = MERGE_IN_HF;
            in->path = xstrdup(in->text);
            return 0;
        }
        for (int k = 0; k < 2; k++) { /* a stage folder of another run */
            char *p = path_join(in->text, inside[k]);
            if (file_exists(p)) {
                in->kind = MERGE_IN_FILE;
                in->path = p;
                return 0;
            }
            free(p);
        }
        return err_set("%s: '%s' is a folder without adapter_config.json (HF PEFT), "
                       "adapter.safetensors or task_vector.safetensors",
                       at(c, s, "inputs", buf, sizeof buf), in->text);
    }
    if (file_exists(in->text)) {
        in->kind = MERGE_IN_FILE;
        in->path = xstrdup(in->text);
        return 0;
    }
    return err_set("%s: '%s' is neither an earlier stage nor an existing file or folder",
                   at(c, s, "inputs", buf, sizeof buf), in->text);
}

int merge_config_load(struct stage_env *env, struct cfg *c, struct stage *s,
                      int32_t *default_from) {
    const char *sec = s->section;
    struct merge_spec *m = xcalloc(1, sizeof *m);
    s->merge = m;
    m->where = xasprintf("%s:%d: [%s]", c->path, section_line(c, sec), sec);
    char buf[512];
    const char *op, *space, *inputs, *weights, *output, *sign;
    double density = 1.0, lambda = 1.0;
    int64_t rank = 0;
    if (cfg_choice(c, sec, "merge", NULL,
                   "add|task_arithmetic|additive|negate|magnitude_prune|ties|dare_linear|dare_ties",
                   &op) ||
        cfg_choice(c, sec, "space", "delta", "delta|factor", &space) ||
        cfg_str(c, sec, "inputs", NULL, &inputs) || cfg_str(c, sec, "weights", NULL, &weights))
        return -1;
    m->op = op_of(op);
    m->space = strcmp(space, "factor") == 0 ? MERGE_SPACE_FACTOR : MERGE_SPACE_DELTA;
    int factor = m->space == MERGE_SPACE_FACTOR;
    if (factor && m->op != MERGE_OP_ADD && m->op != MERGE_OP_NEGATE)
        return err_set("%s: %s: factor space has add and negate only (PEM's operators); use "
                       "space = delta",
                       at(c, s, "merge", buf, sizeof buf), op);
    if (cfg_choice(c, sec, "output", factor ? "adapter" : "delta",
                   factor ? "adapter|model" : "delta|lora|model", &output))
        return -1;
    m->output = strcmp(output, "lora") == 0      ? MERGE_OUT_LORA
                : strcmp(output, "model") == 0   ? MERGE_OUT_MODEL
                : strcmp(output, "adapter") == 0 ? MERGE_OUT_ADAPTER
                                                 : MERGE_OUT_DELTA;
    /* Inputs. */
    struct words w;
    words_split(&w, inputs);
    if (w.n == 0) {
        words_free(&w);
        if (!inputs)
            return err_set("%s:%d: [%s] inputs: missing (earlier stages, adapter files or HF PEFT "
                           "folders)",
                           c->path, section_line(c, sec), sec);
        return err_set("%s: empty", at(c, s, "inputs", buf, sizeof buf));
    }
    m->where_inputs = xstrdup(at(c, s, "inputs", buf, sizeof buf));
    m->in = xcalloc((size_t)w.n, sizeof *m->in);
    for (int i = 0; i < w.n; i++) {
        m->in[m->n_in].text = xstrdup(w.v[i]);
        m->in[m->n_in].weight = 1.0;
        m->n_in++;
        if (resolve_input(env, c, s, &m->in[m->n_in - 1])) {
            words_free(&w);
            return -1;
        }
    }
    words_free(&w);
    if (weights) {
        words_split(&w, weights);
        int rc = 0;
        if (w.n != m->n_in)
            rc = err_set("%s: %d weight%s for %d inputs", at(c, s, "weights", buf, sizeof buf), w.n,
                         w.n == 1 ? "" : "s", m->n_in);
        for (int i = 0; rc == 0 && i < w.n; i++)
            if (parse_f64(w.v[i], &m->in[i].weight))
                rc = err_set("%s: '%s' is not a number", at(c, s, "weights", buf, sizeof buf),
                             w.v[i]);
        words_free(&w);
        if (rc) return -1;
    }
    if (factor) {
        double sum = 0;
        for (int32_t i = 0; i < m->n_in; i++)
            sum += m->in[i].weight < 0 ? -m->in[i].weight : m->in[i].weight;
        if (!(sum > 0))
            return err_set("%s: factor space normalises the weights to sum to 1; they are all 0",
                           weights ? at(c, s, "weights", buf, sizeof buf) : m->where);
    }
    /* The operator's and the output's own keys. */
    if (m->output == MERGE_OUT_LORA) {
        if (!cfg_find(c, sec, "rank"))
            return err_set("%s:%d: [%s] rank: required with output = lora (the rank of the "
                           "truncated SVD)",
                           c->path, section_line(c, sec), sec);
        if (cfg_int(c, sec, "rank", 0, 1, 65536, &rank)) return -1;
        m->rank = (int32_t)rank;
        m->lora = registry_find(env->reg, "lora");
        if (!m->lora) return err_prefix("%s", at(c, s, "output", buf, sizeof buf));
    } else if (unused_here(c, s, "rank", "only used with output = lora")) {
        return -1;
    }
    if (op_prunes(m->op)) {
        if (!cfg_find(c, sec, "density"))
            return err_set("%s:%d: [%s] density: required by merge = %s (the fraction of each "
                           "task vector kept, in (0, 1])",
                           c->path, section_line(c, sec), sec, op);
        if (cfg_float(c, sec, "density", 1.0, 0.0, 1.0, &density)) return -1;
        if (!(density > 0))
            return err_set("%s: must be above 0 (nothing would be kept)",
                           at(c, s, "density", buf, sizeof buf));
    } else if (unused_here(c, s, "density",
                           "only used by magnitude_prune, ties, dare_linear and "
                           "dare_ties")) {
        return -1;
    }
    if (op_elects(m->op)) {
        if (cfg_choice(c, sec, "sign", "total", "total|frequency", &sign)) return -1;
        m->params.sign = strcmp(sign, "frequency") == 0 ? SIGN_FREQUENCY : SIGN_TOTAL;
    } else if (unused_here(c, s, "sign", "only used by ties and dare_ties (sign election)")) {
        return -1;
    }
    if (factor) {
        if (unused_here(c, s, "lambda", "only used in space = delta")) return -1;
    } else if (cfg_float(c, sec, "lambda", 1.0, -1e6, 1e6, &lambda)) {
        return -1;
    }
    m->params.prune = m->op == MERGE_OP_MAGNITUDE_PRUNE || m->op == MERGE_OP_TIES ? PRUNE_MAGNITUDE
                      : m->op == MERGE_OP_DARE_LINEAR || m->op == MERGE_OP_DARE_TIES ? PRUNE_RANDOM
                                                                                     : PRUNE_NONE;
    m->params.density = density;
    m->params.lambda = lambda;
    *default_from = -1;
    for (int32_t i = 0; i < m->n_in; i++)
        if (m->in[i].kind == MERGE_IN_STAGE) {
            *default_from = env->stages[m->in[i].stage].from;
            break;
        }
    return 0;
}

/* ---- identity --------------------------------------------------------------------------- */

static uint64_t mix(uint64_t h, uint64_t x) { return (h ^ x) * 0x100000001b3ull + (x >> 17); }

static uint64_t stamp(uint64_t h, const char *path) {
    struct stat st;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) h = mix(h, *p);
    if (stat(path, &st) == 0) {
        h = mix(h, (uint64_t)st.st_size);
        h = mix(h, (uint64_t)st.st_mtim.tv_sec);
        h = mix(h, (uint64_t)st.st_mtim.tv_nsec);
    }
    return h;
}

uint64_t merge_inputs_hash(const struct stage_env *env, const struct stage *s, uint64_t h) {
    const struct merge_spec *m = s->merge;
    for (int32_t i = 0; i < m->n_in; i++) {
        const struct merge_input *in = &m->in[i];
        h = mix(h, (uint64_t)i + 1);
        if (in->kind == MERGE_IN_STAGE) {
            h = mix(h, env->stages[in->stage].hash);
        } else if (in->kind == MERGE_IN_HF) {
            char *a = path_join(in->path, "adapter_config.json");
            char *b = path_join(in->path, "adapter_model.safetensors");
            h = stamp(stamp(h, a), b);
            free(a);
            free(b);
        } else {
            h = stamp(h, in->path);
        }
    }
    return h;
}

/* ---- checks against the model ------------------------------------------------------------ */

/* A method whose change is a fixed weight change (it says so by its feature tags). */
static int mergeable(const struct plugin_method *pm) {
    return plugin_has_feature(pm, PEFT_FEATURE_MERGEABLE) || plugin_has_feature(pm, PEFT_FEATURE_WRITES_BASE);
}

int merge_config_check(struct stage_env *env, struct stage *s) {
    struct merge_spec *m = s->merge;
    int factor = m->space == MERGE_SPACE_FACTOR;
    struct model_snapshot *p0 = model_snapshot_take(env->model);
    int rc = 0;
    /* The method and keys of each input, where known before the chain runs. */
    const struct plugin_method *first_pm = NULL;
    struct kv_list first_kv = {0};
    const char *first_label = NULL;
    char *first_label_own = NULL;
    for (int32_t i = 0; i < m->n_in && rc == 0; i++) {
        const struct merge_input *in = &m->in[i];
        const struct plugin_method *pm = NULL;
        struct kv_list kv = {0};
        char *label = NULL;
        if (in->kind == MERGE_IN_STAGE) {
            const struct stage *k = &env->stages[in->stage];
            if (k->merge) {
                if (factor && k->merge->output != MERGE_OUT_ADAPTER &&
                    k->merge->output != MERGE_OUT_LORA)
                    rc = err_set("%s: stage '%s' makes a %s, not an adapter: factor space "
                                 "averages adapter tensors; use space = delta",
                                 m->where_inputs, k->name,
                                 k->merge->output == MERGE_OUT_MODEL ? "model" : "task vector");
                continue; /* its adapter exists once it ran; checked then */
            }
            pm = k->pm;
            for (uint32_t j = 0; j < k->n_kv; j++)
                if (strcmp(k->kv[j].key, "stage") != 0)
                    kv_list_set(&kv, k->kv[j].key, k->kv[j].value);
            label = xasprintf("stage '%s'", k->name);
            if (!factor && !mergeable(pm))
                rc = err_set("%s: stage '%s' (%s) has no fixed ΔW (its change depends on "
                             "the input), so it cannot be merged",
                             m->where_inputs, k->name, pm->desc->id);
            if (factor && pm->desc->vt->state_save)
                rc = err_set("%s: stage '%s' (%s) keeps state outside its tensors, which "
                             "factor space cannot average; use space = delta",
                             m->where_inputs, k->name, pm->desc->id);
            if (factor && rc == 0 && plugin_has_feature(pm, PEFT_FEATURE_WRITES_BASE))
                rc = err_set("%s: stage '%s' (%s) changes the base weights: factor space "
                             "averages adapter tensors only; use space = delta",
                             m->where_inputs, k->name, pm->desc->id);
        } else {
            /* Open it now: a bad file stops the run before anything is written. */
            struct merge_source src;
            rc = merge_source_open(env, s, i, p0, factor, 0, &src);
            if (rc == 0 && factor && src.pm && src.pm->desc->vt->state_save)
                rc = err_set("%s: '%s' (%s) keeps state outside its tensors, which factor "
                             "space cannot average; use space = delta",
                             m->where_inputs, in->text, src.pm->desc->id);
            if (rc == 0 && !factor && src.pm && !mergeable(src.pm))
                rc = err_set("%s: '%s' (%s) has no fixed ΔW (its change depends on the input), "
                             "so it cannot be merged",
                             m->where_inputs, in->text, src.pm->desc->id);
            if (rc == 0 && src.pm) {
                pm = src.pm;
                for (uint32_t j = 0; j < src.kv.n; j++)
                    kv_list_set(&kv, src.kv.kv[j].key, src.kv.kv[j].value);
                label = xstrdup(in->text);
            }
            merge_source_close(&src);
        }
        if (rc == 0 && factor && pm) {
            const char *key = NULL;
            if (!first_pm && !plugin_has_feature(pm, PEFT_FEATURE_FACTOR_MERGE)) {
                rc = err_set("%s: %s is %s, whose adapters the plugin does not offer to combine "
                             "tensor by tensor (no feature '%s'): use space = delta",
                             m->where_inputs, label, pm->desc->id, PEFT_FEATURE_FACTOR_MERGE);
            } else if (!first_pm) {
                first_pm = pm;
                first_kv = kv;
                memset(&kv, 0, sizeof kv);
                first_label = first_label_own = label;
                label = NULL;
            } else if (pm != first_pm) {
                rc = err_set("%s: %s is %s, %s is %s: inputs of different methods cannot "
                             "be combined in factor space; use space = delta",
                             m->where_inputs, first_label, first_pm->desc->id, label, pm->desc->id);
            } else if (!kv_equal(&first_kv, &kv, &key)) {
                rc = err_set("%s: %s and %s differ in %s (%s vs %s): factor space needs "
                             "one configuration; use space = delta",
                             m->where_inputs, first_label, label, key, kv_list_get(&first_kv, key),
                             kv_list_get(&kv, key));
            }
        }
        kv_list_free(&kv);
        free(label);
    }
    kv_list_free(&first_kv);
    free(first_label_own);
    model_snapshot_restore(env->model, p0);
    model_snapshot_free(p0);
    return rc;
}

void merge_spec_free(struct merge_spec *m) {
    if (!m) return;
    for (int32_t i = 0; i < m->n_in; i++) {
        free(m->in[i].text);
        free(m->in[i].path);
    }
    free(m->in);
    free(m->where);
    free(m->where_inputs);
    free(m);
}
