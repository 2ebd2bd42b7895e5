/* config.c: the run file (INI through inih), --set overrides and typed, located getters. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static void host_key_listed(const char *section, const char *key);

/* inih calls the handler after reading the line it reports, so a reader that counts lines
 * gives each entry its line without the ABI-changing INI_HANDLER_LINENO. */
struct reader {
    FILE *f;
    struct cfg *c;
    int32_t line;
    int32_t header_line; /* line of the last "[section]" header */
    int32_t long_line;   /* first line longer than the reader's buffer */
    int32_t nul_line;    /* first line with a NUL byte (it would cut the value silently) */
};

static void add_section(struct cfg *c, const char *name, int32_t line);

/* Headers are recorded here too: this inih reports no section that has no keys, and an
 * empty [arm.baseline] or a misspelt empty section must still be seen. */
static char *read_line(char *str, int num, void *stream) {
    struct reader *r = stream;
    memset(str, 1, (size_t)num); /* so that a newline after a NUL byte can be told from stale bytes */
    char *s = fgets(str, num, r->f);
    if (s) {
        r->line++;
        size_t n = strlen(s);
        const char *nl = memchr(s, '\n', (size_t)num);
        if (nl && nl > s + n && !r->nul_line) r->nul_line = r->line;
        /* inih reads lines into a fixed buffer and would take the rest as a new line. */
        if (n + 1 >= (size_t)num && s[n - 1] != '\n' && !r->long_line) r->long_line = r->line;
        const char *p = s;
        while (*p == ' ' || *p == '\t') p++;
        const char *end = *p == '[' ? strchr(p, ']') : NULL;
        if (end) {
            r->header_line = r->line;
            const char *b = p + 1, *e = end;
            while (b < e && (*b == ' ' || *b == '\t')) b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\t')) e--;
            char *name = xstrndup(b, (size_t)(e - b));
            add_section(r->c, name, r->line);
            free(name);
        }
    }
    return s;
}

struct load_ctx {
    struct cfg *c;
    struct reader *r;
    int32_t dup_line; /* first duplicate key, reported after parsing */
    char dup_desc[256];
};

static void add_section(struct cfg *c, const char *name, int32_t line) {
    for (int32_t i = 0; i < c->n_sections; i++)
        if (strcmp(c->sections[i].name, name) == 0) return;
    c->sections = xrealloc(c->sections, sizeof *c->sections * (size_t)(c->n_sections + 1));
    c->sections[c->n_sections].name = xstrdup(name);
    c->sections[c->n_sections].line = line;
    c->n_sections++;
}

static void add_entry(struct cfg *c, const char *section, const char *key, const char *value,
                      int32_t line) {
    c->e = xrealloc(c->e, sizeof *c->e * (size_t)(c->n + 1));
    struct cfg_entry *e = &c->e[c->n++];
    e->section = xstrdup(section);
    e->key = xstrdup(key);
    e->value = xstrdup(value);
    e->line = line;
    e->used = 0;
    e->origin = NULL;
}

void cfg_add_default(struct cfg *c, const char *section, const char *key, const char *value,
                     const char *origin) {
    if (cfg_find(c, section, key)) return;
    add_entry(c, section, key, value, 0);
    c->e[c->n - 1].origin = xstrdup(origin);
}

static int on_entry(void *user, const char *section, const char *name, const char *value) {
    struct load_ctx *lc = user;
    struct cfg *c = lc->c;
    if (!name) { /* a section header with no keys yet (inih >= r43 reports these) */
        add_section(c, section, lc->r->line);
        return 1;
    }
    add_section(c, section, lc->r->header_line ? lc->r->header_line : lc->r->line);
    struct cfg_entry *old = cfg_find(c, section, name);
    if (old) {
        if (!lc->dup_line) {
            lc->dup_line = lc->r->line;
            snprintf(lc->dup_desc, sizeof lc->dup_desc, "[%s] %s: given twice (first on line %d)",
                     section, name, old->line);
        }
        return 1;
    }
    add_entry(c, section, name, value, lc->r->line);
    return 1;
}

int cfg_load(struct cfg *c, const char *path) {
    memset(c, 0, sizeof *c);
    c->path = xstrdup(path);
    FILE *f = file_fopen_regular(path);
    if (!f) {
        cfg_free(c);
        return -1;
    }
    struct reader r = {f, c, 0, 0, 0, 0};
    struct load_ctx lc = {c, &r, 0, ""};
    int rc = ini_parse_stream(read_line, &r, on_entry, &lc);
    fclose(f);
    if (r.long_line) {
        err_set("%s:%d: line too long (at most %d characters)", path, r.long_line, INI_MAX_LINE - 2);
        cfg_free(c);
        return -1;
    }
    if (r.nul_line) {
        err_set("%s:%d: a NUL byte in the line (a run file is text)", path, r.nul_line);
        cfg_free(c);
        return -1;
    }
    if (rc != 0) {
        err_set("%s:%d: syntax error (expected '[section]' or 'key = value')", path, rc);
        cfg_free(c);
        return -1;
    }
    if (lc.dup_line) {
        err_set("%s:%d: %s", path, lc.dup_line, lc.dup_desc);
        cfg_free(c);
        return -1;
    }
    for (int32_t i = 0; i < c->n; i++)
        if (c->e[i].section[0] == 0) {
            err_set("%s:%d: %s: key outside any section", path, c->e[i].line, c->e[i].key);
            cfg_free(c);
            return -1;
        }
    return 0;
}

int cfg_set(struct cfg *c, const char *arg) {
    const char *eq = strchr(arg, '=');
    const char *dot = NULL;
    for (const char *p = arg; eq && p < eq; p++)
        if (*p == '.') dot = p;
    if (!eq || !dot || dot == arg || dot + 1 == eq)
        return err_set("--set %s: expected section.key=value", arg);
    char *section = xstrndup(arg, (size_t)(dot - arg));
    char *key = xstrndup(dot + 1, (size_t)(eq - dot - 1));
    struct cfg_entry *e = cfg_find(c, section, key);
    if (e) {
        free(e->value);
        e->value = xstrdup(eq + 1);
        e->line = 0;
    } else {
        add_section(c, section, 0);
        add_entry(c, section, key, eq + 1, 0);
    }
    free(section);
    free(key);
    return 0;
}

void cfg_free(struct cfg *c) {
    for (int32_t i = 0; i < c->n; i++) {
        free(c->e[i].section);
        free(c->e[i].key);
        free(c->e[i].value);
        free(c->e[i].origin);
    }
    for (int32_t i = 0; i < c->n_sections; i++) free(c->sections[i].name);
    free(c->e);
    free(c->sections);
    free(c->path);
    sb_free(&c->problems);
    memset(c, 0, sizeof *c);
}

void cfg_copy(struct cfg *dst, const struct cfg *src) {
    memset(dst, 0, sizeof *dst);
    dst->path = xstrdup(src->path);
    for (int32_t i = 0; i < src->n_sections; i++) add_section(dst, src->sections[i].name, src->sections[i].line);
    for (int32_t i = 0; i < src->n; i++) {
        add_entry(dst, src->e[i].section, src->e[i].key, src->e[i].value, src->e[i].line);
        if (src->e[i].origin) dst->e[dst->n - 1].origin = xstrdup(src->e[i].origin);
    }
}

struct cfg_entry *cfg_find(struct cfg *c, const char *section, const char *key) {
    for (int32_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].section, section) == 0 && strcmp(c->e[i].key, key) == 0) return &c->e[i];
    return NULL;
}

int cfg_has_section(const struct cfg *c, const char *section) {
    for (int32_t i = 0; i < c->n_sections; i++)
        if (strcmp(c->sections[i].name, section) == 0) return 1;
    return 0;
}

const char *cfg_where(const struct cfg *c, const struct cfg_entry *e, char *buf, size_t cap) {
    if (e && e->line > 0)
        snprintf(buf, cap, "%s:%d", c->path, e->line);
    else if (e && e->origin)
        snprintf(buf, cap, "%s (the default of %s)", c->path, e->origin);
    else if (e)
        snprintf(buf, cap, "%s (--set)", c->path);
    else
        snprintf(buf, cap, "%s", c->path);
    return buf;
}

static int bad_value(struct cfg *c, struct cfg_entry *e, const char *expected) {
    char where[512];
    return err_set("%s: [%s] %s: expected %s, got '%s'", cfg_where(c, e, where, sizeof where),
                   e->section, e->key, expected, e->value);
}

int cfg_int(struct cfg *c, const char *section, const char *key, int64_t def, int64_t lo,
            int64_t hi, int64_t *out) {
    host_key_listed(section, key);
    struct cfg_entry *e = cfg_find(c, section, key);
    if (!e) return *out = def, 0;
    e->used = 1;
    int64_t v;
    char expect[96];
    snprintf(expect, sizeof expect, "an integer in [%lld, %lld]", (long long)lo, (long long)hi);
    if (parse_i64(e->value, &v) != 0 || v < lo || v > hi) return *out = def, bad_value(c, e, expect);
    *out = v;
    return 0;
}

int cfg_float(struct cfg *c, const char *section, const char *key, double def, double lo,
              double hi, double *out) {
    host_key_listed(section, key);
    struct cfg_entry *e = cfg_find(c, section, key);
    if (!e) return *out = def, 0;
    e->used = 1;
    double v;
    char expect[96];
    snprintf(expect, sizeof expect, "a number in [%g, %g]", lo, hi);
    if (parse_f64(e->value, &v) != 0 || v < lo || v > hi) return *out = def, bad_value(c, e, expect);
    *out = v;
    return 0;
}

int cfg_bool(struct cfg *c, const char *section, const char *key, int def, int *out) {
    host_key_listed(section, key);
    struct cfg_entry *e = cfg_find(c, section, key);
    if (!e) return *out = def, 0;
    e->used = 1;
    if (parse_bool(e->value, out) != 0) return *out = def, bad_value(c, e, "true or false");
    return 0;
}

int cfg_str(struct cfg *c, const char *section, const char *key, const char *def,
            const char **out) {
    host_key_listed(section, key);
    struct cfg_entry *e = cfg_find(c, section, key);
    if (!e) return *out = def, 0;
    e->used = 1;
    *out = e->value;
    return 0;
}

int cfg_choice(struct cfg *c, const char *section, const char *key, const char *def,
               const char *choices, const char **out) {
    host_key_listed(section, key);
    struct cfg_entry *e = cfg_find(c, section, key);
    if (!e) return *out = def, 0;
    e->used = 1;
    size_t n = strlen(e->value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, e->value, n) == 0) return *out = e->value, 0;
        p += len + (bar ? 1 : 0);
    }
    char expect[256];
    snprintf(expect, sizeof expect, "one of %s", choices);
    return *out = def, bad_value(c, e, expect);
}

int cfg_unknown_key(struct cfg *c, struct cfg_entry *e, const char *known) {
    struct words w;
    words_split(&w, known);
    const char *near = nearest_name(e->key, (const char *const *)w.v, (size_t)w.n);
    char where[512], hint[160] = "";
    if (near) snprintf(hint, sizeof hint, ": did you mean '%s'?", near);
    err_set("%s: [%s] %s: unknown key%s%s%s%s", cfg_where(c, e, where, sizeof where), e->section,
            e->key, hint, known ? " (known: " : "", known ? known : "", known ? ")" : "");
    words_free(&w);
    cfg_note(c);
    e->used = 1; /* noted once */
    return -1;
}

int cfg_check_unused(struct cfg *c, const char *section, const char *known) {
    int rc = 0;
    for (int32_t i = 0; i < c->n; i++) {
        struct cfg_entry *e = &c->e[i];
        if (!e->used && strcmp(e->section, section) == 0) rc = cfg_unknown_key(c, e, known);
    }
    return rc;
}

void cfg_note(struct cfg *c) {
    if (c->n_problems++ < CFG_MAX_PROBLEMS)
        sb_printf(&c->problems, "%s%s", c->problems.len ? "\n" : "", err_msg());
}

int cfg_report(struct cfg *c) {
    if (c->n_problems == 0) return 0;
    if (c->n_problems > CFG_MAX_PROBLEMS)
        return err_set("%s\n%s: %d more problems not shown", c->problems.s, c->path,
                       c->n_problems - CFG_MAX_PROBLEMS);
    return err_set("%s", c->problems.s);
}

/* ---- host keys: ranges and defaults from the table (run_keys.c) ------------------------ */

/* The typed getters read only keys the host's table lists in the host's sections ([run],
 * [model], [data], [stage.NAME]), so `peft keys` lists every key the reader accepts. */
static void host_key_listed(const char *section, const char *key) {
    if (host_key_kind(section) && !host_key_find(section, key)) {
        fprintf(stderr, "peft: internal error: [%s] %s is read but not in the host's key table\n",
                section, key);
        abort();
    }
}

static const struct host_key *key_of(const char *section, const char *key) {
    host_key_listed(section, key);
    return host_key_find(section, key);
}

int cfg_key_int_def(struct cfg *c, const char *section, const char *key, int64_t def,
                    int64_t *out) {
    const struct host_key *k = key_of(section, key);
    return cfg_int(c, section, key, def, (int64_t)k->lo,
                   k->hi >= 9.2e18 ? INT64_MAX : (int64_t)k->hi, out);
}

int cfg_key_int(struct cfg *c, const char *section, const char *key, int64_t *out) {
    return cfg_key_int_def(c, section, key, (int64_t)strtod(key_of(section, key)->def, NULL), out);
}

int cfg_key_float(struct cfg *c, const char *section, const char *key, double *out) {
    const struct host_key *k = key_of(section, key);
    return cfg_float(c, section, key, strtod(k->def, NULL), k->lo, k->hi, out);
}

int cfg_key_bool(struct cfg *c, const char *section, const char *key, int *out) {
    return cfg_bool(c, section, key, strcmp(key_of(section, key)->def, "true") == 0, out);
}

int cfg_key_choice(struct cfg *c, const char *section, const char *key, const char **out) {
    const struct host_key *k = key_of(section, key);
    return cfg_choice(c, section, key, k->def[0] ? k->def : NULL, k->choices, out);
}
