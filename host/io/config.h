/*
 * config.h: the run file. An INI file (inih) read into entries that remember their line, with
 * `--set section.key=value` overrides applied on top, then checked section by section against
 * known keys and types. Every error is one line naming the file, the line where there is one,
 * the section and the key.
 */
#ifndef PEFT_CONFIG_H
#define PEFT_CONFIG_H

#include <stdint.h>

#include "peft/peft_plugin.h"

struct cfg_entry {
    char *section;
    char *key;
    char *value;
    int32_t line;     /* 0 for a --set override */
    int32_t used;     /* consumed by a checker; leftovers are unknown keys */
};

struct cfg_section {
    char *name;
    int32_t line;
};

struct cfg {
    char *path;
    struct cfg_entry *e;
    int32_t n;
    struct cfg_section *sections; /* in file order */
    int32_t n_sections;
};

/* Read PATH. -1 with "PATH: cannot open ..." or "PATH:LINE: syntax error". */
int cfg_load(struct cfg *c, const char *path);
/* Apply "section.key=value" (the key is after the last dot). -1 with "--set ARG: reason". */
int cfg_set(struct cfg *c, const char *arg);
void cfg_free(struct cfg *c);
/* A deep copy (entries keep their lines; used flags reset). */
void cfg_copy(struct cfg *dst, const struct cfg *src);

struct cfg_entry *cfg_find(struct cfg *c, const char *section, const char *key);
int cfg_has_section(const struct cfg *c, const char *section);
/* "FILE:LINE" (or "FILE (--set)") for an entry, into buf. */
const char *cfg_where(const struct cfg *c, const struct cfg_entry *e, char *buf, size_t cap);

/* Typed getters: mark the entry used, fall back to def when absent, -1 with
 * "FILE:LINE: [section] key: expected ..., got 'v'" when malformed or out of [lo, hi]. */
int cfg_int(struct cfg *c, const char *section, const char *key, int64_t def, int64_t lo,
            int64_t hi, int64_t *out);
int cfg_float(struct cfg *c, const char *section, const char *key, double def, double lo,
              double hi, double *out);
int cfg_bool(struct cfg *c, const char *section, const char *key, int def, int *out);
/* String (NULL when absent and def NULL). The pointer lives as long as the cfg. */
int cfg_str(struct cfg *c, const char *section, const char *key, const char *def,
            const char **out);
/* One of "a|b|c". */
int cfg_choice(struct cfg *c, const char *section, const char *key, const char *def,
               const char *choices, const char **out);

/* After all checkers ran: the first entry of `section` not used -> -1 with
 * "FILE:LINE: [section] key: unknown key (known: a, b, c)". known may be NULL. */
int cfg_check_unused(struct cfg *c, const char *section, const char *known);

#endif
