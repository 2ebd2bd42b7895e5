/*
 * data.c: the task table, the in-memory dataset, and JSONL reading and writing.
 *
 * A JSONL file holds one object per line with string fields "task", "prompt" and
 * "completion"; anything else on the object is ignored. Errors name the file and the line.
 */
#include "data.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* A line longer than this is taken to be a wrong file rather than an example. */
enum { JSONL_MAX_LINE = 1 << 20 };

/* ---- task table ------------------------------------------------------------------------ */

int32_t task_table_find(const struct task_table *tt, const char *name) {
    for (int32_t i = 0; i < tt->n; i++)
        if (strcmp(tt->names[i], name) == 0)
            return i;
    return -1;
}

int32_t task_table_id(struct task_table *tt, const char *name) {
    int32_t id = task_table_find(tt, name);
    if (id >= 0)
        return id;
    tt->names = xrealloc(tt->names, sizeof(char *) * (size_t)(tt->n + 1));
    tt->names[tt->n] = xstrdup(name);
    return tt->n++;
}

/* Drop the names added after the table had n_keep of them. */
static void task_table_truncate(struct task_table *tt, int32_t n_keep) {
    for (int32_t i = n_keep; i < tt->n; i++)
        free(tt->names[i]);
    tt->n = n_keep;
}

void task_table_free(struct task_table *tt) {
    task_table_truncate(tt, 0);
    free(tt->names);
    tt->names = NULL;
}

/* ---- dataset --------------------------------------------------------------------------- */

void dataset_add(struct dataset *d, int32_t task, const char *prompt, const char *completion) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->ex = xrealloc(d->ex, sizeof(*d->ex) * d->cap);
    }
    struct example *e = &d->ex[d->n++];
    e->task = task;
    e->prompt = xstrdup(prompt);
    e->completion = xstrdup(completion);
}

static void example_free(struct example *e) {
    free(e->prompt);
    free(e->completion);
    e->prompt = e->completion = NULL;
}

/* Drop the examples after the first n_keep. */
static void dataset_truncate(struct dataset *d, size_t n_keep) {
    for (size_t i = n_keep; i < d->n; i++)
        example_free(&d->ex[i]);
    d->n = n_keep;
}

void dataset_free(struct dataset *d) {
    dataset_truncate(d, 0);
    free(d->ex);
    d->ex = NULL;
    d->cap = 0;
}

void dataset_filter(struct dataset *d, const int32_t *ids, int32_t n_ids) {
    size_t kept = 0;
    for (size_t i = 0; i < d->n; i++) {
        int keep = 0;
        for (int32_t j = 0; j < n_ids && !keep; j++)
            keep = d->ex[i].task == ids[j];
        if (keep)
            d->ex[kept++] = d->ex[i];
        else
            example_free(&d->ex[i]);
    }
    d->n = kept;
}

/* ---- JSONL reading --------------------------------------------------------------------- */

/* Length of the valid UTF-8 prefix of s[0..n): n when all of it is valid. Rejects overlong
 * forms, surrogates and code points above U+10FFFF, as RFC 3629 does. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return i;
        }
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += len;
    }
    return n;
}

/* Whether valid JSON text holds the escape \u0000, which would cut a C string short.
 * Backslashes only occur inside strings in valid JSON, so a plain scan suffices. */
static int has_escaped_nul(const char *text) {
    for (const char *p = text; *p; p++) {
        if (*p != '\\')
            continue;
        if (strncmp(p + 1, "u0000", 5) == 0)
            return 1;
        p++; /* skip the escaped character: an escaped backslash then "u0000" is text */
    }
    return 0;
}

/* The string field `key` of obj into *out; -1 with "PATH:LINE: field ..." otherwise. */
static int json_string_field(const cJSON *obj, const char *key, const char *path, int line,
                             const char **out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL)
        return err_set("%s:%d: field '%s' missing", path, line, key);
    if (!cJSON_IsString(item) || item->valuestring == NULL)
        return err_set("%s:%d: field '%s' is not a string", path, line, key);
    *out = item->valuestring;
    return 0;
}

/* One non-blank line (NUL-terminated, len bytes) into the dataset. */
static int parse_line(char *text, size_t len, const char *path, int line, struct dataset *out,
                      struct task_table *tt) {
    if (strlen(text) != len)
        return err_set("%s:%d: contains a NUL byte", path, line);
    size_t valid = utf8_valid_prefix((const unsigned char *)text, len);
    if (valid != len)
        return err_set("%s:%d: not valid UTF-8 (byte %zu)", path, line, valid + 1);

    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithOpts(text, &end, 1);
    if (obj == NULL) {
        size_t at = end ? (size_t)(end - text) + 1 : 1;
        return err_set("%s:%d: not valid JSON (column %zu)", path, line, at);
    }
    int rc = -1;
    const char *task, *prompt, *completion;
    if (!cJSON_IsObject(obj)) {
        err_set("%s:%d: not a JSON object", path, line);
    } else if (has_escaped_nul(text)) {
        err_set("%s:%d: contains the escape \\u0000 (a NUL character)", path, line);
    } else if (json_string_field(obj, "task", path, line, &task) == 0 &&
               json_string_field(obj, "prompt", path, line, &prompt) == 0 &&
               json_string_field(obj, "completion", path, line, &completion) == 0) {
        if (task[0] == '\0') {
            err_set("%s:%d: empty task name", path, line);
        } else if (completion[0] == '\0') {
            err_set("%s:%d: empty completion", path, line);
        } else {
            dataset_add(out, task_table_id(tt, task), prompt, completion);
            rc = 0;
        }
    }
    cJSON_Delete(obj);
    return rc;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* All lines of buf (len bytes, modified in place) into out. */
static int parse_lines(char *buf, size_t len, const char *path, struct dataset *out,
                       struct task_table *tt) {
    size_t pos = 0;
    /* a UTF-8 byte-order mark at the start is allowed and skipped */
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    size_t n_before = out->n;
    for (int line = 1; pos < len; line++) {
        char *start = buf + pos;
        char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && start[n - 1] == '\r')
            n--; /* CRLF line ends */
        if (n > JSONL_MAX_LINE)
            return err_set("%s:%d: line too long (%zu bytes, at most %d)", path, line, n,
                           (int)JSONL_MAX_LINE);
        start[n] = '\0';
        if (is_blank(start, n))
            continue;
        if (parse_line(start, n, path, line, out, tt) != 0)
            return -1;
    }
    if (out->n == n_before)
        return err_set("%s: no examples (the file is empty or blank)", path);
    return 0;
}

int data_load_jsonl(const char *path, struct dataset *out, struct task_table *tt) {
    char *buf;
    size_t len;
    if (file_read_all(path, &buf, &len) != 0)
        return -1;
    /* on failure, leave the dataset and the task table as they were */
    size_t n_before = out->n;
    int32_t tasks_before = tt->n;
    int rc = parse_lines(buf, len, path, out, tt);
    if (rc != 0) {
        dataset_truncate(out, n_before);
        task_table_truncate(tt, tasks_before);
    }
    free(buf);
    return rc;
}

/* ---- JSONL writing --------------------------------------------------------------------- */

/* One example as a JSON line (cJSON escapes quotes, backslashes and control bytes). */
static char *example_json(const struct example *e, const char *task) {
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL || cJSON_AddStringToObject(obj, "task", task) == NULL ||
        cJSON_AddStringToObject(obj, "prompt", e->prompt) == NULL ||
        cJSON_AddStringToObject(obj, "completion", e->completion) == NULL) {
        cJSON_Delete(obj);
        return NULL;
    }
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return text;
}

/* Every example as one JSON line onto out; "NAME: ..." on failure. */
static int write_jsonl(FILE *out, const char *name, const struct dataset *d,
                       const struct task_table *tt) {
    for (size_t i = 0; i < d->n; i++) {
        char *text = example_json(&d->ex[i], tt->names[d->ex[i].task]);
        if (text == NULL) return err_set("%s: out of memory while writing example %zu", name, i);
        int ok = fputs(text, out) >= 0 && fputc('\n', out) != EOF;
        cJSON_free(text);
        if (!ok) return err_set("%s: write failed at example %zu", name, i);
    }
    return 0;
}

int data_save_jsonl(const char *path, const struct dataset *d, const struct task_table *tt) {
    for (size_t i = 0; i < d->n; i++)
        if (d->ex[i].task < 0 || d->ex[i].task >= tt->n)
            return err_set("%s: example %zu has task id %d, not in the task table (%d tasks)",
                           path, i, (int)d->ex[i].task, (int)tt->n);
    if (strcmp(path, "-") == 0) /* standard output, written in place */
        return write_jsonl(stdout, "standard output", d, tt) ||
                       (fflush(stdout) != 0 ? err_set("standard output: write failed") : 0)
                   ? -1
                   : 0;
    struct atomic_file af;
    if (atomic_open(&af, path) != 0) return -1;
    if (write_jsonl(af.f, path, d, tt)) {
        atomic_abort(&af);
        return -1;
    }
    return atomic_commit(&af);
}
