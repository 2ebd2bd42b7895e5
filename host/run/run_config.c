/* run_config.c: read and check a run file completely before anything is written. */
#include <stdio.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "run.h"
#include "data/data.h"
#include "io/io.h"
#include "merge/merge.h"
#include "methods/methods.h"

/* A problem the reader can continue past: noted, reported with the others at the end. */
#define NOTE(expr)                                                                               \
    do {                                                                                         \
        if (expr) cfg_note(c);                                                                   \
    } while (0)

/* Every key of a host section the checks did not take, noted as unknown. */
static void note_unknown(struct cfg *c, const char *section, uint32_t flags) {
    struct strbuf known = {0};
    host_keys_text(section, flags, &known);
    cfg_check_unused(c, section, known.s);
    sb_free(&known);
}

/* ---- [run] ------------------------------------------------------------------------- */

static char *default_out_dir(const char *ini) {
    const char *base = strrchr(ini, '/');
    base = base ? base + 1 : ini;
    const char *dot = strrchr(base, '.');
    size_t n = dot ? (size_t)(dot - base) : strlen(base);
    char *name = xstrndup(base, n);
    char *out = xasprintf("runs/%s", name);
    free(name);
    return out;
}

static int load_run_section(struct run *r, const char *plugin_path_flag) {
    struct cfg *c = &r->cfg;
    const char *out = NULL, *plugin_path = NULL;
    int64_t seed = 1, threads = 0;
    NOTE(cfg_str(c, "run", "out", NULL, &out));
    NOTE(cfg_key_int(c, "run", "seed", &seed));
    NOTE(cfg_key_int(c, "run", "threads", &threads));
    int overlap = 0;
    NOTE(cfg_key_bool(c, "run", "allreduce_overlap", &overlap));
    r->allreduce_overlap = overlap;
    /* unset: PEFT_PRECISION, else auto (the key's default is auto, so look for the key) */
    struct cfg_entry *pe = cfg_find(c, "run", "precision");
    const char *precision = NULL;
    if (pe) NOTE(cfg_key_choice(c, "run", "precision", &precision));
    char pwhere[512];
    if (pe) cfg_where(c, pe, pwhere, sizeof pwhere);
    if ((!pe || precision) &&
        model_precision_choose(precision, pe ? pwhere : c->path, &r->precision) != 0)
        cfg_note(c);
    NOTE(cfg_str(c, "run", "plugin_path", NULL, &plugin_path));
    note_unknown(c, "run", 0);
    if (plugin_path) { /* a folder that is not there is a typo, not an empty folder */
        /* split as the plugin loader splits it: ':' or ',', spaces around each folder dropped */
        char *dirs = xstrdup(plugin_path);
        for (char *d = strtok(dirs, ":,"); d; d = strtok(NULL, ":,")) {
            while (isspace((unsigned char)*d)) d++;
            size_t len = strlen(d);
            while (len > 0 && isspace((unsigned char)d[len - 1])) d[--len] = '\0';
            if (len > 0 && !dir_exists(d)) {
                char where[512];
                err_set("%s: [run] plugin_path: no such folder '%s'",
                        cfg_where(c, cfg_find(c, "run", "plugin_path"), where, sizeof where), d);
                cfg_note(c);
            }
        }
        free(dirs);
    }
    if (out) {
        /* A relative out is relative to the working directory, like every path a user types. */
        r->out_dir = xstrdup(out);
    } else {
        r->out_dir = default_out_dir(c->path);
    }
    r->seed = (uint64_t)seed;
    r->threads = (int32_t)threads;
    char *dirs = NULL;
    if (plugin_path_flag && plugin_path)
        dirs = xasprintf("%s:%s", plugin_path_flag, plugin_path);
    else if (plugin_path_flag || plugin_path)
        dirs = xstrdup(plugin_path_flag ? plugin_path_flag : plugin_path);
    registry_init(&r->reg, dirs);
    free(dirs);
    return 0;
}

/* ---- [model] ----------------------------------------------------------------------- */

static int load_model_section(struct run *r) {
    struct cfg *c = &r->cfg;
    const char *path = NULL;
    NOTE(cfg_str(c, "model", "path", NULL, &path));
    char where[512];
    int32_t problems = c->n_problems;
    if (path) {
        for (int32_t i = 0; i < c->n; i++) {
            struct cfg_entry *e = &c->e[i];
            if (strcmp(e->section, "model") == 0 && strcmp(e->key, "path") != 0 &&
                strcmp(e->key, "max_seq") != 0 && host_key_find("model", e->key)) {
                err_set("%s: [model] %s: not allowed with path (the checkpoint's config.json "
                        "sets it)", cfg_where(c, e, where, sizeof where), e->key);
                cfg_note(c);
                e->used = 1;
            }
        }
        int64_t max_seq = 0;
        /* A checkpoint may be longer than a generated model: its own range (run_keys.c). */
        NOTE(cfg_int(c, "model", "max_seq", 0, 0, 1 << 20, &max_seq));
        note_unknown(c, "model", 0);
        if (c->n_problems > problems) return 0; /* noted: no model to load */
        if (hf_model_load(path, &r->model)) {
            struct cfg_entry *e = cfg_find(c, "model", "path");
            return err_prefix("%s: [model] path", cfg_where(c, e, where, sizeof where));
        }
        if (max_seq > 0 && r->model.cfg.sliding_window > 0 && max_seq > r->model.cfg.sliding_window) {
            err_set("%s: [model] max_seq: %lld is longer than the checkpoint's sliding_window %d "
                    "(sliding-window attention is not implemented)",
                    cfg_where(c, cfg_find(c, "model", "max_seq"), where, sizeof where),
                    (long long)max_seq, (int)r->model.cfg.sliding_window);
            return -1;
        }
        if (max_seq > 0) r->model.cfg.max_seq = (int32_t)max_seq;
        r->model_dir = xstrdup(path);
        /* The folder's own tokenizer when it has one: never bytes read as its ids. */
        int found = tokenizer_load_dir(path, &r->tok);
        if (found < 0) return -1;
        if (found && tokenizer_vocab_size(r->tok) > r->model.cfg.vocab)
            return err_set("%s: tokenizer.json has %d ids, more than the model's vocab_size %d",
                           path, tokenizer_vocab_size(r->tok), r->model.cfg.vocab);
        if (!found && r->model.cfg.vocab < TOK_VOCAB)
            return err_set("%s: vocab_size %d is smaller than the byte tokenizer's %d ids (the "
                           "folder has no tokenizer.json)", path, r->model.cfg.vocab, TOK_VOCAB);
    } else {
        int64_t vocab = 0, d_model = 0, n_layers = 0, n_heads = 1, n_kv = 1, head_dim = 0, d_ff = 0,
                max_seq = 0;
        double theta = 0, eps = 0, init_std = 0;
        int tied = 1;
        NOTE(cfg_key_int(c, "model", "vocab", &vocab));
        NOTE(cfg_key_int(c, "model", "d_model", &d_model));
        NOTE(cfg_key_int(c, "model", "n_layers", &n_layers));
        NOTE(cfg_key_int(c, "model", "n_heads", &n_heads));
        NOTE(cfg_key_int_def(c, "model", "n_kv_heads", n_heads, &n_kv));
        NOTE(cfg_key_int_def(c, "model", "head_dim", d_model / n_heads, &head_dim));
        NOTE(cfg_key_int_def(c, "model", "d_ff", (d_model * 8 / 3 + 7) / 8 * 8, &d_ff));
        NOTE(cfg_key_int_def(c, "model", "max_seq", 64, &max_seq));
        NOTE(cfg_key_float(c, "model", "rope_theta", &theta));
        NOTE(cfg_key_float(c, "model", "rms_eps", &eps));
        NOTE(cfg_key_bool(c, "model", "tied", &tied));
        NOTE(cfg_key_float(c, "model", "init_std", &init_std));
        note_unknown(c, "model", 0);
        if (c->n_problems > problems) return 0; /* noted: no model to build */
        struct model_config mc = {
            .vocab = (int32_t)vocab, .d_model = (int32_t)d_model, .n_layers = (int32_t)n_layers,
            .n_heads = (int32_t)n_heads, .n_kv_heads = (int32_t)n_kv, .head_dim = (int32_t)head_dim,
            .d_ff = (int32_t)d_ff, .max_seq = (int32_t)max_seq, .rms_eps = (float)eps,
            .rope_theta = (float)theta, .tied = tied};
        if (model_config_check(&mc)) return err_prefix("%s: [model]", c->path);
        if (model_init(&r->model, &mc)) return err_prefix("%s: [model]", c->path);
        model_init_random(&r->model, r->seed, (float)init_std);
    }
    if (r->precision == MODEL_BF16) model_set_bf16(&r->model);
    r->base_params = model_snapshot_take(&r->model);
    return 0;
}

/* ---- [data] ------------------------------------------------------------------------ */

struct data_settings {
    int64_t n_train, n_eval;
    uint64_t seed;
    struct dataset file_train, file_eval; /* examples from JSONL files, all tasks */
    enum truncation truncation;
    const char *chat_problem;             /* why auto found no chat template, or NULL */
};

/* The chat template: the key's, or the one the tokenizer's template text is recognised as. */
static void choose_chat_template(struct run *r, struct data_settings *ds, const char *name) {
    struct cfg *c = &r->cfg;
    if (name && strcmp(name, "auto") != 0) {
        chat_family_by_name(name, &r->enc.chat); /* the key's choices were checked */
        return;
    }
    const char *text = r->tok ? tokenizer_chat_template(r->tok) : NULL;
    r->enc.chat = CHAT_NONE;
    if (!r->tok) return; /* the byte tokenizer: messages as plain "role: content" lines */
    (void)c;
    if (!text)
        ds->chat_problem = "has no chat_template";
    else if (chat_family_of(text, &r->enc.chat))
        ds->chat_problem = "has a chat_template that is not ChatML, Llama-3 or Llama-2's";
}

static int load_data_section(struct run *r, struct data_settings *ds) {
    struct cfg *c = &r->cfg;
    int64_t seed = (int64_t)r->seed;
    const char *files = NULL, *eval_files = NULL, *format_name = NULL, *chat = NULL, *trunc = NULL;
    NOTE(cfg_key_choice(c, "data", "format", &format_name));
    NOTE(cfg_key_choice(c, "data", "chat_template", &chat));
    NOTE(cfg_key_choice(c, "data", "truncation", &trunc));
    enum data_format format = DATA_AUTO;
    if (format_name) data_format_by_name(format_name, &format);
    ds->truncation = TRUNC_DROP;
    if (trunc) truncation_by_name(trunc, &ds->truncation);
    r->enc.tok = r->tok;
    choose_chat_template(r, ds, chat);
    r->train.enc = r->eval.enc = ds->file_train.enc = ds->file_eval.enc = &r->enc;
    NOTE(cfg_key_int(c, "data", "n_train", &ds->n_train));
    NOTE(cfg_key_int(c, "data", "n_eval", &ds->n_eval));
    NOTE(cfg_key_int_def(c, "data", "seed", (int64_t)r->seed, &seed));
    NOTE(cfg_str(c, "data", "files", NULL, &files));
    NOTE(cfg_str(c, "data", "eval_files", NULL, &eval_files));
    note_unknown(c, "data", 0);
    ds->seed = (uint64_t)seed;
    struct words w;
    const char *lists[2] = {files, eval_files};
    struct dataset *into[2] = {&ds->file_train, &ds->file_eval};
    const char *keys[2] = {"files", "eval_files"};
    if ((files || eval_files) && tokenizer_eos(r->tok ? r->tok : tokenizer_bytes()) < 0) {
        char where[512];
        err_set("%s: [data] files: %s names no eos_token (tokenizer_config.json), so an answer "
                "could not end", cfg_where(c, cfg_find(c, "data", files ? "files" : "eval_files"),
                                            where, sizeof where), tokenizer_path(r->tok));
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        words_split(&w, lists[k]);
        for (int i = 0; i < w.n; i++) {
            if (data_load_jsonl_as(w.v[i], format, into[k], &r->tasks)) {
                char where[512];
                err_prefix("%s: [data] %s",
                           cfg_where(c, cfg_find(c, "data", keys[k]), where, sizeof where), keys[k]);
                cfg_note(c);
            }
        }
        words_free(&w);
    }
    if (files && !eval_files) {
        /* Hold out every tenth example of each task for evaluation, deterministically. */
        struct dataset keep = {0};
        int32_t *seen = xcalloc((size_t)r->tasks.n + 1, sizeof *seen);
        for (size_t i = 0; i < ds->file_train.n; i++) {
            struct example *e = &ds->file_train.ex[i];
            int hold = (seen[e->task]++ % 10) == 9;
            struct dataset *to = hold ? &ds->file_eval : &keep;
            /* moved, encoding and all */
            if (to->n == to->cap) {
                to->cap = to->cap ? to->cap * 2 : 64;
                to->ex = xrealloc(to->ex, to->cap * sizeof *to->ex);
            }
            to->ex[to->n++] = *e;
            memset(e, 0, sizeof *e);
        }
        keep.enc = &r->enc;
        /* The file names the examples point at move to keep; the held-out ones point there
         * too (file_eval owns none of its own here), and both are freed together. */
        keep.sources = ds->file_train.sources;
        keep.n_sources = ds->file_train.n_sources;
        ds->file_train.sources = NULL;
        ds->file_train.n_sources = 0;
        free(seen);
        dataset_free(&ds->file_train);
        ds->file_train = keep;
    }
    return 0;
}

/* Resolve a task name: from the JSONL files, or the built-in suite. Generates its examples
 * into r->train / r->eval the first time. */
static int resolve_task(struct run *r, struct data_settings *ds, const char *name, int32_t *out) {
    int32_t id = task_table_find(&r->tasks, name);
    int in_files = 0;
    for (size_t i = 0; id >= 0 && i < ds->file_train.n && !in_files; i++)
        in_files = ds->file_train.ex[i].task == id;
    for (size_t i = 0; id >= 0 && i < ds->file_eval.n && !in_files; i++)
        in_files = ds->file_eval.ex[i].task == id;
    if (!in_files && synth_find(name) < 0) return -1;
    id = task_table_id(&r->tasks, name);
    /* Already materialized? */
    for (size_t i = 0; i < r->train.n; i++)
        if (r->train.ex[i].task == id) return *out = id, 0;
    for (size_t i = 0; i < r->eval.n; i++)
        if (r->eval.ex[i].task == id) return *out = id, 0;
    if (in_files) {
        for (size_t i = 0; i < ds->file_train.n; i++)
            if (ds->file_train.ex[i].task == id && dataset_add_copy(&r->train, &ds->file_train.ex[i]))
                return -2;
        for (size_t i = 0; i < ds->file_eval.n; i++)
            if (ds->file_eval.ex[i].task == id && dataset_add_copy(&r->eval, &ds->file_eval.ex[i]))
                return -2;
    } else {
        if (synth_generate(name, ds->seed, 0, (int32_t)ds->n_train, &r->train, &r->tasks) ||
            synth_generate(name, ds->seed, 1, (int32_t)ds->n_eval, &r->eval, &r->tasks))
            return -2;
    }
    *out = id;
    return 0;
}

static int resolve_task_list(struct run *r, struct data_settings *ds, struct stage *s,
                             const char *key, const char *text, int32_t **ids, int32_t *n) {
    struct words w;
    words_split(&w, text);
    *ids = xcalloc((size_t)w.n + 1, sizeof **ids);
    *n = 0;
    char where[512];
    struct cfg_entry *e = cfg_find(&r->cfg, s->section, key);
    for (int i = 0; i < w.n; i++) {
        int32_t id;
        int rc = resolve_task(r, ds, w.v[i], &id);
        if (rc == -1) {
            char known[1024] = "";
            for (int32_t k = 0; k < synth_count(); k++) {
                if (k) strncat(known, ", ", sizeof known - strlen(known) - 1);
                strncat(known, synth_info(k)->name, sizeof known - strlen(known) - 1);
            }
            err_set("%s: [%s] %s: unknown task '%s' (not in [data] files; built-in tasks: %s)",
                    cfg_where(&r->cfg, e, where, sizeof where), s->section, key, w.v[i], known);
            words_free(&w);
            return -1;
        }
        if (rc == -2) {
            words_free(&w);
            return err_prefix("%s: [%s] %s", cfg_where(&r->cfg, e, where, sizeof where),
                              s->section, key);
        }
        int dup = 0;
        for (int32_t k = 0; k < *n; k++) dup |= (*ids)[k] == id;
        if (!dup) (*ids)[(*n)++] = id;
    }
    words_free(&w);
    return 0;
}

/* The data as the stages will see it: conversations have a template, every example fits the
 * context (or the run stops, per [data] truncation), and every task a stage evaluates keeps
 * examples it can grade. */
static int check_data(struct run *r, struct data_settings *ds) {
    struct cfg *c = &r->cfg;
    char where[512];
    size_t n_messages = 0;
    for (size_t i = 0; i < r->train.n; i++) n_messages += r->train.ex[i].messages != NULL;
    for (size_t i = 0; i < r->eval.n; i++) n_messages += r->eval.ex[i].messages != NULL;
    if (n_messages && ds->chat_problem) {
        const char *json = tokenizer_path(r->tok);
        size_t dir_len = strrchr(json, '/') ? (size_t)(strrchr(json, '/') - json) : 0;
        return err_set("%.*s%stokenizer_config.json %s: set [data] chat_template = "
                       "chatml|chatml-think|llama3|llama2|none (%zu conversations in the data)",
                       (int)dir_len, json, dir_len ? "/" : "", ds->chat_problem, n_messages);
    }
    int32_t max_T = r->model.cfg.max_seq;
    struct cfg_entry *te = cfg_find(c, "data", "truncation");
    if (dataset_fit(&r->train, max_T, ds->truncation, "training") ||
        dataset_fit(&r->eval, max_T, ds->truncation, "evaluation"))
        return te ? err_prefix("%s: [data] truncation = error", cfg_where(c, te, where, sizeof where)) : -1;
    for (int32_t k = 0; k < r->n_stages; k++) {
        const struct stage *s = &r->stages[k];
        for (int32_t t = 0; t < s->n_eval_tasks; t++) {
            size_t n = 0, graded = 0;
            for (size_t i = 0; i < r->eval.n; i++)
                if (r->eval.ex[i].task == s->eval_tasks[t]) n++, graded += r->eval.ex[i].answer_whole;
            if (graded == 0) {
                err_set("%s: eval task '%s' has no evaluation examples%s", s->where,
                        r->tasks.names[s->eval_tasks[t]],
                        n ? " whose answer fits the context" : " left (longer than the context, or none given)");
                cfg_note(c);
            }
        }
    }
    return 0;
}

/* ---- [stage.NAME] ------------------------------------------------------------------ */

static int32_t find_stage(const struct run *r, const char *name) {
    for (int32_t i = 0; i < r->n_stages; i++)
        if (strcmp(r->stages[i].name, name) == 0) return i;
    return -1;
}

static char *json_escape(const char *s) {
    size_t n = strlen(s);
    char *out = xmalloc(n * 6 + 3), *o = out;
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = (char)*p;
        } else if (*p < 0x20) {
            o += sprintf(o, "\\u%04x", *p);
        } else {
            *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *o = 0;
    return out;
}

/* Method keys: check each given key against the schema and type, fill defaults. */
static int load_method_keys(struct run *r, struct stage *s) {
    struct cfg *c = &r->cfg;
    const peft_method_desc *d = s->pm->desc;
    s->kv = xcalloc((size_t)d->n_params + 1, sizeof *s->kv);
    char where[512];
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        struct cfg_entry *e = cfg_find(c, s->section, p->name);
        const char *value = p->default_value;
        if (e) {
            e->used = 1;
            value = e->value;
            if (param_check_value(p, value)) {
                err_prefix("%s: [%s] %s", cfg_where(c, e, where, sizeof where), s->section, p->name);
                cfg_note(c);
            } else if (p->type == PEFT_PARAM_STAGE && value[0] && find_stage(r, value) < 0) {
                err_set("%s: [%s] %s: no earlier stage named '%s'",
                        cfg_where(c, e, where, sizeof where), s->section, p->name, value);
                cfg_note(c);
            } else if (p->type == PEFT_PARAM_FILES) {
                struct words w;
                words_split(&w, value);
                for (int k = 0; k < w.n; k++)
                    if (!file_exists(w.v[k])) {
                        err_set("%s: [%s] %s: no such file '%s'",
                                cfg_where(c, e, where, sizeof where), s->section, p->name, w.v[k]);
                        cfg_note(c);
                    }
                words_free(&w);
            }
        } else if (!value) {
            err_set("%s: [%s] %s: required by method '%s' but not given", s->where, s->section,
                    p->name, d->id);
            cfg_note(c);
            value = "";
        }
        s->kv[s->n_kv].key = p->name;
        s->kv[s->n_kv].value = value;
        s->n_kv++;
    }
    s->kv[s->n_kv].key = "stage";
    s->kv[s->n_kv].value = s->name;
    s->n_kv++;
    return 0;
}

/* Every key of a trained stage's section that neither the host nor its method reads, noted
 * with the methods that do read it (a key left over from switching methods). */
static void note_unknown_stage_keys(struct run *r, const struct stage *s) {
    struct cfg *c = &r->cfg;
    struct strbuf known = {0};
    host_keys_text(s->section, HOST_KEY_TRAIN, &known);
    for (uint32_t i = 0; i < s->pm->desc->n_params; i++)
        sb_printf(&known, ", %s", s->pm->desc->params[i].name);
    int scanned = 0;
    for (int32_t i = 0; i < c->n; i++) {
        struct cfg_entry *e = &c->e[i];
        if (e->used || strcmp(e->section, s->section) != 0) continue;
        if (!scanned++) { /* every method there is, to say which ones read the key */
            registry_scan(&r->reg, NULL, NULL);
            err_clear();
        }
        struct strbuf users = {0};
        for (int32_t m = 0; m < r->reg.n_methods; m++) {
            const peft_method_desc *d = r->reg.methods[m].desc;
            for (uint32_t k = 0; k < d->n_params; k++)
                if (strcmp(d->params[k].name, e->key) == 0)
                    sb_printf(&users, "%s%s", users.len ? ", " : "", d->id);
        }
        if (users.len) {
            char where[512];
            err_set("%s: [%s] %s: not a key of method '%s' (it is a key of %s)",
                    cfg_where(c, e, where, sizeof where), s->section, e->key, s->pm->desc->id,
                    users.s);
            cfg_note(c);
            e->used = 1;
        } else {
            cfg_unknown_key(c, e, known.s);
        }
        sb_free(&users);
    }
    sb_free(&known);
}

/* The stage section as a JSON object of strings, first_key first (then file order). */
static char *stage_config_json(const struct cfg *c, const char *section, const char *first_key) {
    struct strbuf b = {0};
    sb_printf(&b, "{");
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < c->n; i++) {
            if (strcmp(c->e[i].section, section) != 0) continue;
            if ((strcmp(c->e[i].key, first_key) == 0) != (pass == 0)) continue;
            char *k = json_escape(c->e[i].key), *v = json_escape(c->e[i].value);
            sb_printf(&b, "%s%s:%s", b.len > 1 ? "," : "", k, v);
            free(k);
            free(v);
        }
    sb_printf(&b, "}");
    return b.s;
}

/* The tasks a stage's result has seen: its start's, then extra (a merge's inputs'), then its
 * own training tasks, each once. */
static void set_known_tasks(struct run *r, struct stage *s, const int32_t *extra_stages,
                            int32_t n_extra) {
    s->known_tasks = xcalloc((size_t)r->tasks.n + 1, sizeof *s->known_tasks);
    s->n_known_tasks = 0;
    for (int32_t part = -1; part <= n_extra; part++) {
        const int32_t *ids;
        int32_t n;
        if (part == -1 || part < n_extra) {
            int32_t k = part == -1 ? s->from : extra_stages[part];
            if (k < 0) continue;
            ids = r->stages[k].known_tasks;
            n = r->stages[k].n_known_tasks;
        } else {
            ids = s->train_tasks;
            n = s->n_train_tasks;
        }
        for (int32_t t = 0; t < n; t++) {
            int dup = 0;
            for (int32_t k = 0; k < s->n_known_tasks; k++) dup |= s->known_tasks[k] == ids[t];
            if (!dup) s->known_tasks[s->n_known_tasks++] = ids[t];
        }
    }
}

/* FNV-1a of a string and a terminator, so that "ab"+"c" and "a"+"bc" differ. */
static uint64_t fnv1a(uint64_t h, const char *s) {
    return (hash_fnv1a(h, s, strlen(s)) ^ 0xff) * 1099511628211ull;
}

static uint64_t section_hash(struct cfg *c, const char *section, uint64_t h) {
    /* Entries in file order; the order of keys inside a section is the user's, so it is
     * part of the identity only through their values. Sort-free: hash each pair and add. */
    uint64_t sum = 0;
    for (int32_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].section, section) == 0)
            sum += fnv1a(fnv1a(HASH_FNV1A_BASIS, c->e[i].key), c->e[i].value);
    return fnv1a(h, section) ^ (sum * 0x9e3779b97f4a7c15ull);
}

/* The files a run reads (model, data) by size and modification time, so that a stage is
 * trained again when one of them changes, not only when the run file does. */
static uint64_t file_stamp(uint64_t h, const char *path) {
    struct stat st;
    char text[96];
    if (stat(path, &st) != 0) return fnv1a(h, path);
    snprintf(text, sizeof text, "%lld:%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             (long)st.st_mtim.tv_nsec);
    return fnv1a(fnv1a(h, path), text);
}

static uint64_t input_files_hash(struct cfg *c, uint64_t h) {
    const char *lists[] = {"files", "eval_files"};
    for (int k = 0; k < 2; k++) {
        struct cfg_entry *e = cfg_find(c, "data", lists[k]);
        struct words w;
        words_split(&w, e ? e->value : NULL);
        for (int i = 0; i < w.n; i++) h = file_stamp(h, w.v[i]);
        words_free(&w);
    }
    struct cfg_entry *m = cfg_find(c, "model", "path");
    if (m) {
        const char *names[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
        for (int k = 0; k < 3; k++) {
            char *p = path_join(m->value, names[k]);
            if (file_exists(p)) h = file_stamp(h, p);
            free(p);
        }
    }
    return h;
}

/* What the host computes for one configuration: raised when a change of the host alters a
 * stage's result for the same keys (2: adapters drawn per method from init_seed, attention in
 * tiles, the loss in chunks), so that a finished stage of an older host is trained again
 * instead of reused. */
static const char *const host_results_version = "2";

/* What a stage's result depends on besides its own inputs: the model, the data (and the files
 * they come from), the method and its version, the run's seed, the stage's section and the
 * stage it starts from, and the host's results version. */
static uint64_t stage_hash_base(struct run *r, const struct stage *s, const char *section) {
    struct cfg *c = &r->cfg;
    uint64_t h = section_hash(c, "model", HASH_FNV1A_BASIS);
    h = fnv1a(h, host_results_version);
    h = section_hash(c, "data", h);
    h = input_files_hash(c, h);
    h = fnv1a(h, s->pm->desc->id);
    h = fnv1a(h, s->pm->desc->version);
    char seedtxt[32];
    snprintf(seedtxt, sizeof seedtxt, "%llu", (unsigned long long)r->seed);
    h = fnv1a(h, seedtxt);
    if (r->precision == MODEL_BF16) h = fnv1a(h, "precision bf16"); /* fp32 hashes as before */
    h = section_hash(c, section, h);
    if (s->from >= 0) h ^= r->stages[s->from].hash * 0xff51afd7ed558ccdull;
    return h;
}

/* The next stage of the chain, named after its section (run_free releases it). NULL with one
 * line for a name that cannot be a folder. */
static struct stage *stage_add(struct run *r, const char *section, int32_t line) {
    const char *name = section + strlen("stage.");
    if (!name[0] || strchr(name, '/') || strchr(name, '.') || name[0] == '-') {
        err_set("%s:%d: [%s]: a stage name must be non-empty, without '/' or '.'", r->cfg.path,
                line, section);
        return NULL;
    }
    struct stage *s = &r->stages[r->n_stages++];
    memset(s, 0, sizeof *s);
    s->section = xstrdup(section);
    s->name = xstrdup(name);
    /* The section's header: a plugin's complaint may concern any of its keys. */
    s->where = xasprintf("%s:%d: [%s]", r->cfg.path, line, section);
    return s;
}

/* Where stage s starts: `from` (an earlier stage, or empty for [model]) or def_from when it is
 * not given. Starting from a stage means starting from its weights with its adapter folded in,
 * which needs a method that can give its exact dense change (or writes the weights itself). */
static int stage_from(struct run *r, struct stage *s, const char *from, int32_t def_from,
                      int32_t line) {
    struct cfg *c = &r->cfg;
    struct cfg_entry *e = cfg_find(c, s->section, "from");
    char where[512];
    if (e)
        cfg_where(c, e, where, sizeof where);
    else
        snprintf(where, sizeof where, "%s:%d", c->path, line);
    s->from = def_from;
    if (from && from[0] == 0)
        s->from = -1;
    else if (from && ((s->from = find_stage(r, from)) < 0 || s->from == r->n_stages - 1))
        return err_set("%s: [%s] from: no earlier stage named '%s' (stages run in file order; "
                       "leave it empty to start from [model])", where, s->section, from);
    const struct stage *f = s->from >= 0 ? &r->stages[s->from] : NULL;
    if (!f || !f->pm) return 0; /* the model, or a stage whose own problem is already noted */
    if (plugin_has_feature(f->pm, PEFT_FEATURE_MERGEABLE) ||
        plugin_has_feature(f->pm, PEFT_FEATURE_WRITES_BASE))
        return 0;
    return err_set("%s: [%s] from: stage '%s' (%s) cannot be folded into the weights, so no "
                   "stage can start from it%s", where, s->section, f->name, f->pm->desc->id,
                   e ? "" : " (that is the default here: set from = another stage, or leave it "
                            "empty for [model])");
}

static int load_stage(struct run *r, struct data_settings *ds, const char *section,
                      int32_t line) {
    struct cfg *c = &r->cfg;
    struct stage *s = stage_add(r, section, line);
    if (!s) return -1;
    char where[512];
    int32_t problems = c->n_problems;

    const char *method, *from, *tasks, *eval_tasks, *schedule, *optimizer = "adamw",
               *clip_scope = "global";
    if (cfg_str(c, section, "method", NULL, &method)) return -1;
    if (!method)
        return err_set("%s:%d: [%s] method: missing (e.g. method = lora)", c->path, line, section);
    s->pm = registry_find(&r->reg, method);
    if (!s->pm) {
        struct cfg_entry *e = cfg_find(c, section, "method");
        return err_prefix("%s: [%s] method", cfg_where(c, e, where, sizeof where), section);
    }
    /* The method's recommended host keys (its paper's optimizer, ...) where the stage is silent */
    const peft_kv *defaults;
    uint32_t n_defaults = method_stage_defaults(s->pm->desc, &defaults);
    char *origin = xasprintf("method '%s'", s->pm->desc->id);
    for (uint32_t i = 0; i < n_defaults; i++)
        cfg_add_default(c, section, defaults[i].key, defaults[i].value, origin);
    free(origin);
    if (cfg_str(c, section, "from", NULL, &from) ||
        stage_from(r, s, from, r->n_stages >= 2 ? r->n_stages - 2 : -1, line)) /* default: the previous stage */
        return -1;
    if (cfg_str(c, section, "tasks", NULL, &tasks) || cfg_str(c, section, "eval_tasks", NULL, &eval_tasks))
        return -1;
    if (!tasks)
        return err_set("%s:%d: [%s] tasks: missing (e.g. tasks = reverse add)", c->path, line, section);
    if (resolve_task_list(r, ds, s, "tasks", tasks, &s->train_tasks, &s->n_train_tasks)) return -1;
    if (s->n_train_tasks == 0)
        return err_set("%s: [%s] tasks: empty",
                       cfg_where(c, cfg_find(c, section, "tasks"), where, sizeof where), section);
    if (eval_tasks) {
        if (resolve_task_list(r, ds, s, "eval_tasks", eval_tasks, &s->eval_tasks, &s->n_eval_tasks))
            return -1;
    }
    set_known_tasks(r, s, NULL, 0);
    if (!eval_tasks) {
        /* Default: every task trained so far in the chain that leads here (merged inputs'
         * included), this stage's last. */
        s->eval_tasks = xcalloc((size_t)s->n_known_tasks + 1, sizeof *s->eval_tasks);
        memcpy(s->eval_tasks, s->known_tasks, (size_t)s->n_known_tasks * sizeof *s->eval_tasks);
        s->n_eval_tasks = s->n_known_tasks;
    }

    /* The continual-learning sampler (replay.h) and label evaluation (eval.c). */
    const char *replay_tasks, *replay;
    int eval_labels, train_labels;
    NOTE(cfg_str(c, section, "replay_tasks", NULL, &replay_tasks));
    NOTE(cfg_str(c, section, "replay", host_key_find(section, "replay")->def, &replay));
    NOTE(cfg_key_int(c, section, "memory_per_label", &s->memory_per_label));
    NOTE(cfg_key_bool(c, section, "eval_labels", &eval_labels));
    s->eval_labels = eval_labels;
    NOTE(cfg_key_bool(c, section, "train_labels", &train_labels));
    s->train_labels = train_labels;
    if (replay_tasks && resolve_task_list(r, ds, s, "replay_tasks", replay_tasks, &s->replay_tasks,
                                          &s->n_replay_tasks))
        return -1;
    struct cfg_entry *replay_e = cfg_find(c, section, "replay");
    if (strcmp(replay, "joint") == 0)
        s->replay_joint = 1;
    else if (parse_f64(replay, &s->replay) || s->replay < 0 || s->replay >= 1)
        return err_set("%s: [%s] replay: expected a share in [0, 1) or 'joint', got '%s'",
                       cfg_where(c, replay_e, where, sizeof where), section, replay);
    if (replay_e && !replay_tasks)
        return err_set("%s: [%s] replay: set replay_tasks (the earlier tasks to replay)",
                       cfg_where(c, replay_e, where, sizeof where), section);
    for (int32_t i = 0; i < s->n_replay_tasks; i++)
        for (int32_t k = 0; k < s->n_train_tasks; k++)
            if (s->replay_tasks[i] == s->train_tasks[k])
                return err_set("%s: [%s] replay_tasks: '%s' is also in tasks",
                               cfg_where(c, cfg_find(c, section, "replay_tasks"), where, sizeof where),
                               section, r->tasks.names[s->replay_tasks[i]]);

    int64_t seed = 0, save_model_i = -1;
    int save_model = 0;
    struct optim_params *o = &s->opt;
    NOTE(cfg_key_int(c, section, "steps", &s->steps));
    NOTE(cfg_key_int(c, section, "batch_size", &s->batch_size));
    NOTE(cfg_key_int(c, section, "grad_accum", &s->grad_accum));
    NOTE(cfg_key_int(c, section, "eval_batch_size", &s->eval_batch_size));
    NOTE(cfg_key_int(c, section, "eval_every", &s->eval_every));
    NOTE(cfg_key_int(c, section, "early_stopping", &s->early_stopping));
    const char *early_metric = NULL;
    NOTE(cfg_key_choice(c, section, "early_stopping_metric", &early_metric));
    s->early_on_accuracy = early_metric && strcmp(early_metric, "accuracy") == 0;
    if (s->early_stopping > 0 && s->eval_every == 0) {
        char where[512];
        err_set("%s: [%s] early_stopping: needs eval_every (the evaluations it watches)",
                cfg_where(c, cfg_find(c, section, "early_stopping"), where, sizeof where), section);
        cfg_note(c);
    }
    NOTE(cfg_key_int(c, section, "save_every", &s->save_every));
    NOTE(cfg_key_int(c, section, "keep_checkpoints", &s->keep_checkpoints));
    NOTE(cfg_key_int(c, section, "log_every", &s->log_every));
    NOTE(cfg_key_int(c, section, "n_train", &s->n_train));
    NOTE(cfg_key_float(c, section, "lr", &o->lr));
    NOTE(cfg_key_float(c, section, "weight_decay", &o->weight_decay));
    NOTE(cfg_key_float(c, section, "beta1", &o->beta1));
    NOTE(cfg_key_float(c, section, "beta2", &o->beta2));
    NOTE(cfg_key_float(c, section, "eps", &o->eps));
    NOTE(cfg_key_float(c, section, "grad_clip", &o->grad_clip));
    NOTE(cfg_key_float(c, section, "min_lr_ratio", &o->min_lr_ratio));
    NOTE(cfg_key_int(c, section, "warmup_steps", &o->warmup_steps));
    NOTE(cfg_key_choice(c, section, "schedule", &schedule));
    NOTE(cfg_key_choice(c, section, "optimizer", &optimizer));
    NOTE(cfg_key_choice(c, section, "clip_scope", &clip_scope));
    NOTE(cfg_key_float(c, section, "rmsprop_alpha", &o->alpha));
    NOTE(cfg_key_float(c, section, "momentum", &o->momentum));
    NOTE(cfg_key_int_def(c, section, "seed", (int64_t)(r->seed + (uint64_t)r->n_stages), &seed));
    int64_t init_seed = 0;
    NOTE(cfg_key_int_def(c, section, "init_seed", (int64_t)r->seed, &init_seed));
    s->init_seed = (uint64_t)init_seed;
    struct cfg_entry *sm = cfg_find(c, section, "save_model");
    if (sm) {
        NOTE(cfg_key_bool(c, section, "save_model", &save_model));
        save_model_i = save_model;
    }
    s->save_model = (int32_t)save_model_i; /* -1: auto (on for methods that write the base) */
    int predictions = 1;
    NOTE(cfg_key_bool(c, section, "predictions", &predictions));
    s->predictions = predictions;
    o->total_steps = s->steps;
    o->schedule = strcmp(schedule, "linear") == 0     ? SCHEDULE_LINEAR
                  : strcmp(schedule, "constant") == 0 ? SCHEDULE_CONSTANT
                                                      : SCHEDULE_COSINE;
    o->kind = strcmp(optimizer, "rmsprop") == 0 ? OPTIM_RMSPROP
              : strcmp(optimizer, "sgd") == 0   ? OPTIM_SGD
                                                : OPTIM_ADAMW;
    o->clip_per_tensor = strcmp(clip_scope, "tensor") == 0;
    s->seed = (uint64_t)seed;
    load_method_keys(r, s);
    note_unknown_stage_keys(r, s);
    if (c->n_problems > problems) return 0; /* noted; no identity for a stage with problems */

    /* The stage's config as JSON (for metadata) and its identity hash. */
    s->config_json = stage_config_json(c, section, "method");

    uint64_t h = stage_hash_base(r, s, section);
    /* A stage reading another stage's output through a STAGE key depends on it too. */
    for (uint32_t i = 0; i < s->n_kv; i++)
        for (uint32_t p = 0; p < s->pm->desc->n_params; p++)
            if (s->pm->desc->params[p].type == PEFT_PARAM_STAGE &&
                strcmp(s->pm->desc->params[p].name, s->kv[i].key) == 0 && s->kv[i].value[0])
                h ^= r->stages[find_stage(r, s->kv[i].value)].hash * 0xc4ceb9fe1a85ec53ull;
    s->hash = h;
    s->dir = path_join(r->out_dir, s->name);
    return 0;
}

/* A merge stage (merge.h): `merge = OP` instead of `method = ID`. It shares with trained
 * stages from, eval_tasks, eval_batch_size, seed and save_model; its own keys are read by
 * merge_config_load. */
static int load_merge_stage(struct run *r, struct data_settings *ds, const char *section,
                            int32_t line) {
    struct cfg *c = &r->cfg;
    struct stage *s = stage_add(r, section, line);
    if (!s) return -1;
    char where[512];
    struct cfg_entry *me = cfg_find(c, section, "method");
    if (me)
        return err_set("%s: [%s] method: a stage either trains a method or merges (merge = ...), "
                       "not both", cfg_where(c, me, where, sizeof where), section);
    s->pm = merge_stage_method();
    int32_t default_from;
    if (merge_config_load(run_env(r), c, s, &default_from)) return -1;
    const char *from, *eval_tasks;
    if (cfg_str(c, section, "from", NULL, &from) || cfg_str(c, section, "eval_tasks", NULL, &eval_tasks))
        return -1;
    if (stage_from(r, s, from, default_from, line)) /* default: where the first input started */
        return -1;
    int32_t *inputs = xcalloc((size_t)s->merge->n_in + 1, sizeof *inputs), n_inputs = 0;
    for (int32_t i = 0; i < s->merge->n_in; i++)
        if (s->merge->in[i].kind == MERGE_IN_STAGE) inputs[n_inputs++] = s->merge->in[i].stage;
    set_known_tasks(r, s, inputs, n_inputs);
    free(inputs);
    if (eval_tasks) {
        if (resolve_task_list(r, ds, s, "eval_tasks", eval_tasks, &s->eval_tasks, &s->n_eval_tasks))
            return -1;
    } else {
        s->eval_tasks = xcalloc((size_t)s->n_known_tasks + 1, sizeof *s->eval_tasks);
        memcpy(s->eval_tasks, s->known_tasks, (size_t)s->n_known_tasks * sizeof *s->eval_tasks);
        s->n_eval_tasks = s->n_known_tasks;
    }
    if (s->n_eval_tasks == 0)
        return err_set("%s:%d: [%s] eval_tasks: needed (no task is known from the inputs or the "
                       "start of this merge)", c->path, line, section);
    int64_t seed = 0;
    int save_model = 0;
    int32_t problems = c->n_problems;
    NOTE(cfg_key_int(c, section, "eval_batch_size", &s->eval_batch_size));
    NOTE(cfg_key_int_def(c, section, "seed", (int64_t)(r->seed + (uint64_t)r->n_stages), &seed));
    NOTE(cfg_key_bool(c, section, "save_model", &save_model));
    s->seed = (uint64_t)seed;
    s->init_seed = r->seed;
    s->save_model = save_model;
    s->merge->save_model = save_model;
    note_unknown(c, section, HOST_KEY_MERGE);
    if (c->n_problems > problems) return 0; /* noted */
    s->config_json = stage_config_json(c, section, "merge");

    uint64_t h = stage_hash_base(r, s, section);
    s->hash = merge_inputs_hash(run_env(r), s, h);
    s->dir = path_join(r->out_dir, s->name);
    return 0;
}

/* ---- the whole file ---------------------------------------------------------------- */

int run_load(struct run *r, const char *ini, char *const *sets, int32_t n_sets,
             const char *plugin_path) {
    struct cfg c;
    memset(r, 0, sizeof *r);
    if (cfg_load(&c, ini)) return -1;
    for (int32_t i = 0; i < n_sets; i++)
        if (cfg_set(&c, sets[i])) {
            cfg_free(&c);
            return -1;
        }
    return run_load_cfg(r, &c, plugin_path);
}

int run_load_cfg(struct run *r, struct cfg *cfg, const char *plugin_path) {
    memset(r, 0, sizeof *r);
    r->cfg = *cfg; /* taken over */
    memset(cfg, 0, sizeof *cfg);
    r->progress = -1;
    struct cfg *c = &r->cfg;

    /* Every problem of the file is noted and reported together; a problem that leaves
     * nothing to check further (no model, a stage without a method) ends only its part. */
    int32_t n_stage_sections = 0;
    for (int32_t i = 0; i < c->n_sections; i++) {
        const char *name = c->sections[i].name;
        if (strncmp(name, "stage.", 6) == 0) {
            n_stage_sections++;
            continue;
        }
        if (!host_key_kind(name)) {
            if (c->sections[i].line > 0)
                err_set("%s:%d: [%s]: unknown section (known: run, model, data, stage.NAME)",
                        c->path, c->sections[i].line, name);
            else
                err_set("%s (--set): [%s]: unknown section (known: run, model, data, stage.NAME)",
                        c->path, name);
            cfg_note(c);
        }
    }
    if (n_stage_sections == 0) {
        err_set("%s: no [stage.NAME] section: a run needs at least one stage", c->path);
        cfg_note(c);
    }

    NOTE(load_run_section(r, plugin_path));
    NOTE(load_model_section(r));
    int have_model = r->base_params != NULL;
    struct data_settings ds = {0};
    int32_t before_data = c->n_problems;
    NOTE(load_data_section(r, &ds));
    /* Stages name tasks of the data: with broken data their checks would only echo it. */
    if (c->n_problems == before_data) {
        r->stages = xcalloc((size_t)n_stage_sections + 1, sizeof *r->stages);
        for (int32_t i = 0; i < c->n_sections; i++)
            if (strncmp(c->sections[i].name, "stage.", 6) == 0)
                NOTE(cfg_find(c, c->sections[i].name, "merge")
                         ? load_merge_stage(r, &ds, c->sections[i].name, c->sections[i].line)
                         : load_stage(r, &ds, c->sections[i].name, c->sections[i].line));
    }
    dataset_free(&ds.file_train);
    dataset_free(&ds.file_eval);
    if (c->n_problems == before_data && r->stages) NOTE(check_data(r, &ds));
    if (cfg_report(c)) return -1;
    /* Every way to end without a model noted a problem, so there is one here. */
    if (!have_model) return err_set("%s: [model]: no model", c->path);
    /* Let every method check its keys against the model now, so that a bad value is reported
     * before anything is written. */
    int rc = 0;
    for (int32_t i = 0; i < r->n_stages && rc == 0; i++) {
        struct method_run *mr;
        if (r->stages[i].merge) {
            rc = merge_config_check(run_env(r), &r->stages[i]);
            continue;
        }
        rc = stage_method(run_env(r), &r->stages[i], &mr);
        if (rc == 0) method_run_free(mr);
    }
    return rc;
}

void run_free(struct run *r) {
    for (int32_t i = 0; i < r->n_stages; i++) {
        struct stage *s = &r->stages[i];
        free(s->name);
        free(s->section);
        free(s->where);
        free(s->train_tasks);
        free(s->eval_tasks);
        free(s->replay_tasks);
        free(s->known_tasks);
        merge_spec_free(s->merge);
        free(s->kv);
        free(s->config_json);
        free(s->dir);
        model_snapshot_free(s->result_params);
        free(s->before);
        free(s->after);
    }
    free(r->stages);
    metrics_free(&r->metrics);
    dataset_free(&r->train);
    dataset_free(&r->eval);
    tokenizer_free(r->tok);
    r->tok = NULL;
    free(r->model_dir);
    r->model_dir = NULL;
    task_table_free(&r->tasks);
    model_free(&r->model);
    if (r->aux.acts) model_acts_free(r->aux.acts);
    model_snapshot_free(r->base_params);
    registry_free(&r->reg);
    free(r->out_dir);
    cfg_free(&r->cfg);
    memset(r, 0, sizeof *r);
}
