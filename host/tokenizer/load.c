/*
 * load.c: tokenizer.json and tokenizer_config.json into a struct tokenizer. Every component
 * is checked when the file loads; one the tokenizer does not implement is refused with a line
 * naming the file and the component ("tokenizer.json: pre_tokenizer.pretokenizers[0]: type
 * 'Digits' is not supported (...)"), never skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/core.h"
#include "tok_internal.h"

struct loader {
    struct tokenizer *t;
    const char *path;
    char where[160]; /* the component being read, e.g. "pre_tokenizer.pretokenizers[0]" */
};

static int refuse(struct loader *L, const char *fmt, const char *arg) {
    char msg[320];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    return err_set("%s: %s: %s", L->path, L->where, msg);
}

static const char *type_of(const cJSON *o) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

/* A JSON number that is an integer in [lo, hi] (checked before any conversion). */
static int int_in(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi) ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int flag(const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return def;
}

static void to_ustr(const char *s, struct ustr *out) { utf8_decode(s, strlen(s), 0, out); }

/* A single character given as a string (Metaspace's replacement, Strip's content). */
static int one_char(struct loader *L, const cJSON *o, const char *key, uint32_t def, uint32_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return *out = def, 0;
    struct ustr u = {0};
    if (cJSON_IsString(v)) to_ustr(v->valuestring, &u);
    int ok = u.n == 1;
    if (ok) *out = u.cp[0];
    ustr_free(&u);
    return ok ? 0 : refuse(L, "'%s' must be one character", key);
}

/* A Split or Replace pattern: {"String": s} or {"Regex": r}. */
static int read_pattern(struct loader *L, const cJSON *o, struct ustr *literal, struct tok_regex **re) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    if (cJSON_IsString(s)) {
        to_ustr(s->valuestring, literal);
        return 0;
    }
    if (cJSON_IsString(r)) {
        *re = tok_regex_compile(r->valuestring);
        if (!*re) {
            char msg[200];
            snprintf(msg, sizeof msg, "%.180s", err_msg());
            return refuse(L, "pattern: %s", msg);
        }
        return 0;
    }
    return refuse(L, "pattern must be {\"String\": ...} or {\"Regex\": ...}", NULL);
}

/* ---- normalizer ---------------------------------------------------------------------------- */
static int read_normalizer(struct loader *L, const cJSON *o) {
    const char *type = type_of(o);
    struct tokenizer *t = L->t;
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(list)) return refuse(L, "Sequence without a 'normalizers' list", NULL);
        size_t base = strlen(L->where);
        int i = 0;
        for (const cJSON *k = list->child; k; k = k->next, i++) {
            snprintf(L->where + base, sizeof L->where - base, ".normalizers[%d]", i);
            if (read_normalizer(L, k)) return -1;
        }
        L->where[base] = '\0';
        return 0;
    }
    t->norm = xrealloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *t->norm);
    struct normalizer *nz = &t->norm[t->n_norm];
    memset(nz, 0, sizeof *nz);
    if (type && strcmp(type, "NFC") == 0) {
        nz->kind = NORM_NFC;
    } else if (type && strcmp(type, "Prepend") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prepend");
        if (!cJSON_IsString(p)) return refuse(L, "Prepend without a 'prepend' string", NULL);
        nz->kind = NORM_PREPEND;
        to_ustr(p->valuestring, &nz->arg);
    } else if (type && strcmp(type, "Replace") == 0) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (!cJSON_IsString(c)) return refuse(L, "Replace without a 'content' string", NULL);
        nz->kind = NORM_REPLACE;
        t->n_norm++; /* counted now so that its buffers are freed on a refusal below */
        to_ustr(c->valuestring, &nz->content);
        return read_pattern(L, o, &nz->arg, &nz->re);
    } else {
        return refuse(L, "type '%s' is not supported (NFC, Prepend, Replace, Sequence)",
                      type ? type : "(none)");
    }
    t->n_norm++;
    return 0;
}

/* ---- pre-tokenizer ------------------------------------------------------------------------ */
/* GPT-2's split, which ByteLevel applies when use_regex is true. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int read_pretokenizer(struct loader *L, const cJSON *o) {
    const char *type = type_of(o);
    struct tokenizer *t = L->t;
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(list)) return refuse(L, "Sequence without a 'pretokenizers' list", NULL);
        size_t base = strlen(L->where);
        int i = 0;
        for (const cJSON *k = list->child; k; k = k->next, i++) {
            snprintf(L->where + base, sizeof L->where - base, ".pretokenizers[%d]", i);
            if (read_pretokenizer(L, k)) return -1;
        }
        L->where[base] = '\0';
        return 0;
    }
    t->pre = xrealloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *t->pre);
    struct pretokenizer *p = &t->pre[t->n_pre];
    memset(p, 0, sizeof *p);
    if (type && strcmp(type, "Split") == 0) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "behavior");
        if (!cJSON_IsString(b) || strcmp(b->valuestring, "Isolated") != 0)
            return refuse(L, "Split behavior '%s' is not supported (Isolated)",
                          cJSON_IsString(b) ? b->valuestring : "(none)");
        if (flag(o, "invert", 0)) return refuse(L, "Split with invert: true is not supported", NULL);
        p->kind = PRE_SPLIT;
        t->n_pre++;
        struct ustr literal = {0};
        if (read_pattern(L, o, &literal, &p->re)) return ustr_free(&literal), -1;
        if (!p->re) {
            /* a String pattern: the same split as a regex of the escaped text */
            struct bstr rx = {0};
            for (size_t k = 0; k < literal.n; k++) {
                uint32_t c = literal.cp[k];
                if (c < 128 && strchr("\\^$.|?*+()[]{}-/", (int)c)) bstr_putc(&rx, '\\');
                bstr_put_cp(&rx, c);
            }
            p->re = tok_regex_compile(rx.p ? rx.p : "");
            bstr_free(&rx);
        }
        ustr_free(&literal);
        if (!p->re) return refuse(L, "an empty Split pattern", NULL);
        return 0;
    }
    if (type && strcmp(type, "ByteLevel") == 0) {
        p->kind = PRE_BYTE_LEVEL;
        p->add_prefix_space = flag(o, "add_prefix_space", 0);
        t->n_pre++;
        t->byte_level = 1;
        if (flag(o, "use_regex", 1)) {
            p->re = tok_regex_compile(GPT2_PATTERN);
            if (!p->re) return refuse(L, "GPT-2 pattern: %s", err_msg());
        }
        return 0;
    }
    if (type && strcmp(type, "Metaspace") == 0) {
        p->kind = PRE_METASPACE;
        t->n_pre++;
        if (one_char(L, o, "replacement", 0x2581, &p->replacement)) return -1;
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(o, "prepend_scheme");
        const char *s = cJSON_IsString(scheme) ? scheme->valuestring : "always";
        if (strcmp(s, "always") == 0) p->prepend_scheme = 0;
        else if (strcmp(s, "first") == 0) p->prepend_scheme = 1;
        else if (strcmp(s, "never") == 0) p->prepend_scheme = 2;
        else return refuse(L, "prepend_scheme '%s' is not one of always, first, never", s);
        /* older files say add_prefix_space; newer ones only the scheme */
        p->add_prefix_space = flag(o, "add_prefix_space", p->prepend_scheme != 2);
        return 0;
    }
    if (type && strcmp(type, "Digits") == 0) {
        /* digits apart from the rest, one by one with individual_digits (the reference's
         * pattern, JavaScript's ASCII \d) */
        p->kind = PRE_SPLIT;
        t->n_pre++;
        p->re = tok_regex_compile(flag(o, "individual_digits", 0) ? "[^\\d]+|\\d" : "[^\\d]+|\\d+");
        if (!p->re) return refuse(L, "Digits: %s", err_msg());
        return 0;
    }
    return refuse(L, "type '%s' is not supported (Split, ByteLevel, Metaspace, Digits, Sequence)",
                  type ? type : "(none)");
}

/* ---- post-processor ------------------------------------------------------------------------ */
static int special_id(struct loader *L, const cJSON *o, const char *name, int32_t *id) {
    *id = strmap_get(&L->t->ids, name, strlen(name));
    if (*id >= 0) return 0;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(st, name), "ids");
    int64_t v;
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && int_in(ids->child, 0, L->t->n_vocab - 1, &v) == 0) {
        *id = (int32_t)v;
        return 0;
    }
    return refuse(L, "special token '%s' is not in the vocabulary", name);
}

static int read_post(struct loader *L, const cJSON *o) {
    const char *type = type_of(o);
    struct tokenizer *t = L->t;
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(list)) return refuse(L, "Sequence without a 'processors' list", NULL);
        size_t base = strlen(L->where);
        int i = 0;
        for (const cJSON *k = list->child; k; k = k->next, i++) {
            snprintf(L->where + base, sizeof L->where - base, ".processors[%d]", i);
            if (read_post(L, k)) return -1;
        }
        L->where[base] = '\0';
        return 0;
    }
    if (type && strcmp(type, "ByteLevel") == 0) return 0; /* offsets only: ids unchanged */
    if (!type || strcmp(type, "TemplateProcessing") != 0)
        return refuse(L, "type '%s' is not supported (TemplateProcessing, ByteLevel, Sequence)",
                      type ? type : "(none)");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    if (!cJSON_IsArray(single)) return refuse(L, "TemplateProcessing without a 'single' template", NULL);
    int seen_a = 0;
    for (const cJSON *item = single->child; item; item = item->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(item, "Sequence");
        if (sp) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
            if (!cJSON_IsString(name)) return refuse(L, "a SpecialToken without an id", NULL);
            int32_t id;
            if (special_id(L, o, name->valuestring, &id)) return -1;
            int32_t **v = seen_a ? &t->post_after : &t->post_before;
            int32_t *n = seen_a ? &t->n_post_after : &t->n_post_before;
            *v = xrealloc(*v, (size_t)(*n + 1) * sizeof **v);
            (*v)[(*n)++] = id;
        } else if (seq) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(seq, "id");
            if (!cJSON_IsString(id) || strcmp(id->valuestring, "A") != 0 || seen_a)
                return refuse(L, "the single template must hold sequence A once", NULL);
            seen_a = 1;
        } else {
            return refuse(L, "a template item that is neither SpecialToken nor Sequence", NULL);
        }
    }
    if (!seen_a) return refuse(L, "the single template must hold sequence A once", NULL);
    return 0;
}

/* ---- decoder ---------------------------------------------------------------------------- */
static int read_decoder(struct loader *L, const cJSON *o) {
    const char *type = type_of(o);
    struct tokenizer *t = L->t;
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(list)) return refuse(L, "Sequence without a 'decoders' list", NULL);
        size_t base = strlen(L->where);
        int i = 0;
        for (const cJSON *k = list->child; k; k = k->next, i++) {
            snprintf(L->where + base, sizeof L->where - base, ".decoders[%d]", i);
            if (read_decoder(L, k)) return -1;
        }
        L->where[base] = '\0';
        return 0;
    }
    t->dec = xrealloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *t->dec);
    struct decoder *d = &t->dec[t->n_dec];
    memset(d, 0, sizeof *d);
    if (type && strcmp(type, "ByteLevel") == 0) {
        d->kind = DEC_BYTE_LEVEL;
    } else if (type && strcmp(type, "ByteFallback") == 0) {
        d->kind = DEC_BYTE_FALLBACK;
    } else if (type && strcmp(type, "Fuse") == 0) {
        d->kind = DEC_FUSE;
    } else if (type && strcmp(type, "Replace") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "String");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (!cJSON_IsString(p) || !cJSON_IsString(c) || !p->valuestring[0])
            return refuse(L, "Replace needs a non-empty String pattern and a content string", NULL);
        d->kind = DEC_REPLACE;
        d->pattern = xstrdup(p->valuestring);
        d->content = xstrdup(c->valuestring);
    } else if (type && strcmp(type, "Strip") == 0) {
        d->kind = DEC_STRIP;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "stop");
        int64_t start = 0, stop = 0;
        if ((a && int_in(a, 0, 1 << 20, &start)) || (b && int_in(b, 0, 1 << 20, &stop)))
            return refuse(L, "Strip: start and stop must be counts", NULL);
        d->start = (int32_t)start;
        d->stop = (int32_t)stop;
        if (one_char(L, o, "content", ' ', &d->strip_char)) return -1;
    } else if (type && strcmp(type, "Metaspace") == 0) {
        d->kind = DEC_METASPACE;
        if (one_char(L, o, "replacement", 0x2581, &d->replacement)) return -1;
        d->add_prefix_space = flag(o, "add_prefix_space", 1);
    } else {
        return refuse(L, "type '%s' is not supported (ByteLevel, Metaspace, ByteFallback, Fuse, "
                         "Strip, Replace, Sequence)", type ? type : "(none)");
    }
    t->n_dec++;
    return 0;
}

/* ---- model ------------------------------------------------------------------------------ */
static void merge_put(struct merge_map *m, int32_t left, int32_t right, int32_t rank, int32_t merged) {
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
    size_t i = tok_hash(&key, sizeof key) & (m->cap - 1);
    while (m->pair[i] && m->pair[i] != key) i = (i + 1) & (m->cap - 1);
    m->pair[i] = key; /* a repeated merge takes its later rank, as the reference's Map does */
    m->rank[i] = rank;
    m->merged[i] = merged;
}

static int set_vocab(struct loader *L, const char *token, int64_t id) {
    struct tokenizer *t = L->t;
    if (id < 0 || id >= (1 << 24)) return refuse(L, "token id out of range for '%s'", token);
    if (id >= t->cap_vocab) { /* geometric: vocabularies come in id order */
        int32_t cap = t->cap_vocab ? t->cap_vocab : 1024;
        while (cap <= id) cap *= 2;
        t->vocab = xrealloc(t->vocab, (size_t)cap * sizeof *t->vocab);
        memset(t->vocab + t->cap_vocab, 0, (size_t)(cap - t->cap_vocab) * sizeof *t->vocab);
        t->cap_vocab = cap;
    }
    if (id >= t->n_vocab) t->n_vocab = (int32_t)id + 1;
    /* the old string stays owned until the end: the id table may still point at it */
    char *copy = xstrdup(token);
    if (t->vocab[id]) {
        t->retired = xrealloc(t->retired, (size_t)(t->n_retired + 1) * sizeof *t->retired);
        t->retired[t->n_retired++] = t->vocab[id];
    }
    t->vocab[id] = copy;
    strmap_put(&t->ids, copy, strlen(copy), (int32_t)id);
    return 0;
}

static int read_model(struct loader *L, const cJSON *m) {
    struct tokenizer *t = L->t;
    const char *type = type_of(m);
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (type ? strcmp(type, "BPE") != 0 : !merges)
        return refuse(L, "type '%s' is not supported (BPE)", type ? type : "(none)");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0)
        return refuse(L, "BPE dropout is not supported", NULL);
    const char *affixes[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, affixes[k]);
        if (cJSON_IsString(v) && v->valuestring[0]) return refuse(L, "a non-empty %s is not supported", affixes[k]);
    }
    t->byte_fallback = flag(m, "byte_fallback", 0);
    t->fuse_unk = flag(m, "fuse_unk", 0);
    t->ignore_merges = flag(m, "ignore_merges", 0);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsObject(vocab)) return refuse(L, "vocab must be an object {token: id}", NULL);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int64_t v;
        if (int_in(e, 0, (1 << 24) - 1, &v))
            return refuse(L, "vocab: the id of '%s' is not an integer in [0, 16777215]", e->string);
        if (set_vocab(L, e->string, v)) return -1;
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_token");
    t->unk_id = cJSON_IsString(unk) ? strmap_get(&t->ids, unk->valuestring, strlen(unk->valuestring)) : -1;
    if (cJSON_IsString(unk) && t->unk_id < 0) return refuse(L, "unk_token '%s' is not in the vocabulary", unk->valuestring);
    if (!cJSON_IsArray(merges)) return refuse(L, "merges must be a list", NULL);
    int n = cJSON_GetArraySize(merges);
    t->merges.cap = 1024;
    while (t->merges.cap < 2 * (size_t)n + 2) t->merges.cap *= 2;
    t->merges.pair = xcalloc(t->merges.cap, sizeof *t->merges.pair);
    t->merges.rank = xcalloc(t->merges.cap, sizeof *t->merges.rank);
    t->merges.merged = xcalloc(t->merges.cap, sizeof *t->merges.merged);
    int rank = 0;
    struct bstr both = {0};
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
        const char *a = NULL, *b = NULL;
        size_t la = 0;
        if (cJSON_IsString(e)) {
            /* "a b": the reference splits at spaces and keeps the first two parts */
            a = e->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp) { bstr_free(&both); return refuse(L, "merges: '%s' is not two tokens", a); }
            la = (size_t)(sp - a);
            b = sp + 1;
            const char *sp2 = strchr(b, ' ');
            both.n = 0;
            bstr_put(&both, a, la);
            size_t lb = sp2 ? (size_t)(sp2 - b) : strlen(b);
            bstr_put(&both, b, lb);
            int32_t ia = strmap_get(&t->ids, a, la), ib = strmap_get(&t->ids, b, lb);
            int32_t im = strmap_get(&t->ids, both.p, both.n);
            if (ia < 0 || ib < 0 || im < 0) {
                bstr_free(&both);
                snprintf(L->where + strlen(L->where), sizeof L->where - strlen(L->where), ".merges[%d]", rank);
                return refuse(L, "'%s': a token of the merge is not in the vocabulary", e->valuestring);
            }
            merge_put(&t->merges, ia, ib, rank, im);
            continue;
        }
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(e->child) ||
            !cJSON_IsString(e->child->next)) {
            bstr_free(&both);
            return refuse(L, "merges: an entry is neither \"a b\" nor [\"a\", \"b\"]", NULL);
        }
        a = e->child->valuestring;
        b = e->child->next->valuestring;
        both.n = 0;
        bstr_put(&both, a, strlen(a));
        bstr_put(&both, b, strlen(b));
        int32_t ia = strmap_get(&t->ids, a, strlen(a)), ib = strmap_get(&t->ids, b, strlen(b));
        int32_t im = strmap_get(&t->ids, both.p, both.n);
        if (ia < 0 || ib < 0 || im < 0) {
            bstr_free(&both);
            snprintf(L->where + strlen(L->where), sizeof L->where - strlen(L->where), ".merges[%d]", rank);
            return refuse(L, "a token of the merge is not in the vocabulary", NULL);
        }
        merge_put(&t->merges, ia, ib, rank, im);
    }
    bstr_free(&both);
    for (int byte = 0; byte < 256; byte++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", byte);
        t->byte_token[byte] = strmap_get(&t->ids, name, strlen(name));
    }
    return 0;
}

/* ---- added tokens -------------------------------------------------------------------------- */
static int read_added(struct loader *L, const cJSON *list) {
    struct tokenizer *t = L->t;
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return refuse(L, "must be a list", NULL);
    int i = 0;
    size_t base = strlen(L->where);
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        snprintf(L->where + base, sizeof L->where - base, "[%d]", i);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        int64_t id_value;
        if (int_in(id, 0, (1 << 24) - 1, &id_value) || !cJSON_IsString(content) || !content->valuestring[0])
            return refuse(L, "an added token needs an id in [0, 16777215] and a non-empty content", NULL);
        t->added = xrealloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
        struct added_token *a = &t->added[t->n_added++];
        a->content = xstrdup(content->valuestring);
        a->id = (int32_t)id_value;
        a->lstrip = (uint8_t)flag(e, "lstrip", 0);
        a->rstrip = (uint8_t)flag(e, "rstrip", 0);
        a->special = (uint8_t)flag(e, "special", 0);
        if (set_vocab(L, a->content, id_value)) return -1;
    }
    L->where[base] = '\0';
    t->trie = added_trie_build(t->added, t->n_added);
    return 0;
}

/* ---- tokenizer_config.json ------------------------------------------------------------------- */
/* A token named by the config: a string or {"content": ...}. */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static int read_config(struct loader *L, const cJSON *cfg) {
    struct tokenizer *t = L->t;
    t->clean_up_spaces = flag(cfg, "clean_up_tokenization_spaces", 1);
    const char *names[3] = {"bos_token", "eos_token", "pad_token"};
    int32_t *ids[3] = {&t->bos_id, &t->eos_id, &t->pad_id};
    for (int k = 0; k < 3; k++) {
        const char *tok = config_token(cfg, names[k]);
        *ids[k] = tok ? strmap_get(&t->ids, tok, strlen(tok)) : -1;
        if (tok && *ids[k] < 0) {
            snprintf(L->where, sizeof L->where, "%s", names[k]);
            return refuse(L, "'%s' is not a token of tokenizer.json", tok);
        }
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");
    for (const cJSON *e = cJSON_IsArray(extra) ? extra->child : NULL; e; e = e->next) {
        const char *s = cJSON_IsString(e) ? e->valuestring
                                          : cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "content"))
                                                ? cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring
                                                : NULL;
        if (!s) continue;
        int32_t id = strmap_get(&t->ids, s, strlen(s));
        if (id >= 0) {
            /* a special token by the config's word: skipped when decoding without specials */
            for (int32_t k = 0; k < t->n_added; k++)
                if (t->added[k].id == id) t->added[k].special = 1;
        }
    }
    const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(tmpl)) {
        t->chat_template = xstrdup(tmpl->valuestring);
    } else if (cJSON_IsArray(tmpl)) { /* named templates: the default one */
        for (const cJSON *e = tmpl->child; e; e = e->next) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 && cJSON_IsString(text))
                t->chat_template = xstrdup(text->valuestring);
        }
    }
    return 0;
}

/* ---- the whole file ------------------------------------------------------------------------- */
static int read_section(struct loader *L, const cJSON *root, const char *key,
                        int (*read)(struct loader *, const cJSON *)) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!o || cJSON_IsNull(o)) return 0;
    snprintf(L->where, sizeof L->where, "%s", key);
    if (!cJSON_IsObject(o)) return refuse(L, "must be an object or null", NULL);
    return read(L, o);
}

int tokenizer_load(const char *json_path, const char *config_path, struct tokenizer **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(json_path, &text, &len)) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set("%s: not a JSON object (a tokenizer.json file is one)", json_path);
    }
    struct tokenizer *t = xcalloc(1, sizeof *t);
    t->path = xstrdup(json_path);
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
    t->clean_up_spaces = 1;
    struct loader L = {t, json_path, ""};
    int rc = 0;
    snprintf(L.where, sizeof L.where, "model");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) rc = refuse(&L, "missing (a BPE model is required)", NULL);
    if (!rc) rc = read_model(&L, model);
    if (!rc) {
        snprintf(L.where, sizeof L.where, "added_tokens");
        rc = read_added(&L, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
    }
    if (!rc) rc = read_section(&L, root, "normalizer", read_normalizer);
    if (!rc) rc = read_section(&L, root, "pre_tokenizer", read_pretokenizer);
    if (!rc) rc = read_section(&L, root, "post_processor", read_post);
    if (!rc) rc = read_section(&L, root, "decoder", read_decoder);
    cJSON_Delete(root);
    for (uint32_t cp = 0; cp < 512 && !rc; cp++) {
        char ch[4];
        t->char_id[cp] = strmap_get(&t->ids, ch, utf8_put(cp, ch));
    }
    if (!rc && config_path && file_exists(config_path)) {
        if (file_read_all(config_path, &text, &len)) {
            rc = -1;
        } else {
            cJSON *cfg = cJSON_ParseWithLength(text, len);
            free(text);
            struct loader C = {t, config_path, ""};
            if (!cJSON_IsObject(cfg)) rc = err_set("%s: not a JSON object", config_path);
            else rc = read_config(&C, cfg);
            cJSON_Delete(cfg);
        }
    }
    if (rc) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int tokenizer_load_dir(const char *dir, struct tokenizer **out) {
    *out = NULL;
    char *json = xasprintf("%s/tokenizer.json", dir);
    char *cfg = xasprintf("%s/tokenizer_config.json", dir);
    int rc = 0;
    if (file_exists(json)) rc = tokenizer_load(json, cfg, out) ? -1 : 1;
    free(json);
    free(cfg);
    return rc;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t || t->bytes) return;
    for (int32_t i = 0; i < t->n_vocab; i++) free(t->vocab[i]);
    free(t->vocab);
    strmap_free(&t->ids);
    free(t->merges.pair);
    free(t->merges.rank);
    free(t->merges.merged);
    for (int32_t i = 0; i < t->n_norm; i++) {
        ustr_free(&t->norm[i].arg);
        ustr_free(&t->norm[i].content);
        tok_regex_free(t->norm[i].re);
    }
    free(t->norm);
    for (int32_t i = 0; i < t->n_pre; i++) tok_regex_free(t->pre[i].re);
    free(t->pre);
    for (int32_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].pattern);
        free(t->dec[i].content);
    }
    free(t->dec);
    for (int32_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    added_trie_free(t->trie);
    free(t->post_before);
    free(t->post_after);
    free(t->chat_template);
    for (int32_t i = 0; i < t->n_retired; i++) free(t->retired[i]);
    free(t->retired);
    free(t->path);
    free(t);
}
