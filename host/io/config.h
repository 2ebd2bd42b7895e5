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
#include "core/core.h"

struct cfg_entry {
    char *section;
    char *key;
    char *value;
    int32_t line;     /* 0 for a --set override or a default from elsewhere */
    int32_t used;     /* consumed by a checker; leftovers are unknown keys */
    char *origin;     /* NULL, or where a default put in by cfg_add_default comes from */
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
    /* Problems found so far (cfg_note), reported together by cfg_report. */
    struct strbuf problems;
    int32_t n_problems;
};

/* Read PATH. -1 with "PATH: cannot open ..." or "PATH:LINE: syntax error". */
int cfg_load(struct cfg *c, const char *path);
/* Apply "section.key=value" (the key is after the last dot). -1 with "--set ARG: reason". */
int cfg_set(struct cfg *c, const char *arg);
void cfg_free(struct cfg *c);
/* A deep copy (entries keep their lines; used flags reset). */
void cfg_copy(struct cfg *dst, const struct cfg *src);

struct cfg_entry *cfg_find(struct cfg *c, const char *section, const char *key);
/* Set section.key to value unless the file or a --set gives it; error lines about it name
 * `origin` ("method 'lota'") instead of a line. */
void cfg_add_default(struct cfg *c, const char *section, const char *key, const char *value,
                     const char *origin);
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

/* After all checkers ran: every entry of `section` not used is noted (cfg_note) as
 * "FILE:LINE: [section] key: unknown key (known: a, b, c)"; -1 if there was one. known may be
 * NULL. */
int cfg_check_unused(struct cfg *c, const char *section, const char *known);
/* Note e as an unknown key, with the nearest of known (", "-separated) when it looks like a
 * typo of it; -1. */
int cfg_unknown_key(struct cfg *c, struct cfg_entry *e, const char *known);

/* ---- every problem of a file at once --------------------------------------------------
 * A checker that finds a problem it can continue past notes the error line and goes on;
 * cfg_report then fails with all of them, one per line (at most CFG_MAX_PROBLEMS, then a count
 * of the rest). */
enum { CFG_MAX_PROBLEMS = 20 };
void cfg_note(struct cfg *c); /* the current error line (err_msg) is one more problem */
int cfg_report(struct cfg *c); /* 0 when nothing was noted, else -1 with every line */

/* ---- the host's keys (run_keys.c) -----------------------------------------------------
 * Every key of [run], [model], [data] and [stage.NAME] that the host reads: the reader takes
 * their ranges and defaults from here, `peft keys` prints them, and a method may not declare
 * a stage key of the host. */
enum { HOST_KEY_TRAIN = 1, HOST_KEY_MERGE = 2 }; /* which stages read a [stage.NAME] key */
struct host_key {
    const char *section; /* "run", "model", "data", or "stage" for every [stage.NAME] */
    const char *key;
    const char *type;    /* int, float, bool, string, choice, path, dirs, files, words, ... */
    const char *def;     /* the default as text ("" = none) */
    double lo, hi;       /* the range of an int or float */
    const char *choices; /* "a|b|c" of a choice */
    uint32_t flags;      /* HOST_KEY_TRAIN / HOST_KEY_MERGE for stage keys */
    const char *help;
};
int32_t host_key_count(void);
const struct host_key *host_key_at(int32_t i);
/* "run", "model", "data" or "stage" for a section name ("stage.adapt"), NULL for others. */
const char *host_key_kind(const char *section);
const struct host_key *host_key_find(const char *section, const char *key);
/* 1 if key is a key the host reads in a trained stage: a method may not declare it. */
int host_stage_key(const char *key);
/* The keys of a section (of stages with any of flags; 0 = all), ", "-separated, onto out. */
void host_keys_text(const char *section, uint32_t flags, struct strbuf *out);

/* Getters of host keys: range, and default unless given, from the table. */
int cfg_key_int(struct cfg *c, const char *section, const char *key, int64_t *out);
int cfg_key_int_def(struct cfg *c, const char *section, const char *key, int64_t def,
                    int64_t *out);
int cfg_key_float(struct cfg *c, const char *section, const char *key, double *out);
int cfg_key_bool(struct cfg *c, const char *section, const char *key, int *out);
int cfg_key_choice(struct cfg *c, const char *section, const char *key, const char **out);

#endif
