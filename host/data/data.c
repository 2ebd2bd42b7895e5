/*
 * data.c: the task table, the in-memory dataset, and JSONL reading (four formats, see
 * data.h) and writing. Errors name the file and the line.
 */
#include "data.h"

#include <stdio.h>
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

static struct example *dataset_new_example(struct dataset *d, int32_t task) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->ex = xrealloc(d->ex, sizeof(*d->ex) * d->cap);
    }
    struct example *e = &d->ex[d->n++];
    memset(e, 0, sizeof *e);
    e->task = task;
    return e;
}

void example_free(struct example *e) {
    free(e->prompt);
    free(e->completion);
    for (int32_t m = 0; m < e->n_messages; m++) {
        free(e->messages[m].role);
        free(e->messages[m].content);
    }
    free(e->messages);
    free(e->ids);
    free(e->scored);
    memset(e, 0, sizeof *e);
}

/* Encode the example just added; on failure it is taken back. */
static int encode_last(struct dataset *d) {
    struct example *e = &d->ex[d->n - 1];
    if (example_encode(d->enc, e) == 0) return 0;
    example_free(e);
    d->n--;
    return -1;
}

void dataset_add(struct dataset *d, int32_t task, const char *prompt, const char *completion) {
    struct example *e = dataset_new_example(d, task);
    e->prompt = xstrdup(prompt);
    e->completion = xstrdup(completion);
    /* a prompt/completion pair only fails with a tokenizer that has no EOS, which the run
     * refuses before adding any */
    if (encode_last(d)) { /* unreachable: the run refuses a tokenizer without EOS first */
        fprintf(stderr, "peft: %s\n", err_msg());
        exit(2);
    }
}

int dataset_add_messages(struct dataset *d, int32_t task, const struct chat_message *m, int32_t n) {
    struct example *e = dataset_new_example(d, task);
    e->prompt = xstrdup("");
    e->messages = xcalloc((size_t)n + 1, sizeof *e->messages);
    e->n_messages = n;
    const char *last_answer = "";
    for (int32_t i = 0; i < n; i++) {
        e->messages[i].role = xstrdup(m[i].role);
        e->messages[i].content = xstrdup(m[i].content);
        if (strcmp(m[i].role, "assistant") == 0) last_answer = m[i].content;
    }
    e->completion = xstrdup(last_answer);
    return encode_last(d);
}

/* The source name as this dataset keeps it (added once). */
static const char *dataset_source(struct dataset *d, const char *source) {
    if (!source) return NULL;
    for (int32_t k = 0; k < d->n_sources; k++)
        if (strcmp(d->sources[k], source) == 0) return d->sources[k];
    d->sources = xrealloc(d->sources, (size_t)(d->n_sources + 1) * sizeof *d->sources);
    d->sources[d->n_sources] = xstrdup(source);
    return d->sources[d->n_sources++];
}

int dataset_add_copy(struct dataset *d, const struct example *from) {
    struct example *e = dataset_new_example(d, from->task);
    e->prompt = xstrdup(from->prompt);
    e->completion = xstrdup(from->completion);
    if (from->messages) {
        e->messages = xcalloc((size_t)from->n_messages + 1, sizeof *e->messages);
        e->n_messages = from->n_messages;
        for (int32_t i = 0; i < from->n_messages; i++) {
            e->messages[i].role = xstrdup(from->messages[i].role);
            e->messages[i].content = xstrdup(from->messages[i].content);
        }
    }
    e->source = dataset_source(d, from->source);
    e->line = from->line;
    if (!from->ids) return encode_last(d);
    /* the encoding moves with the example: both datasets encode alike */
    e->n_ids = from->n_ids;
    e->ids = xmalloc(((size_t)from->n_ids + 1) * sizeof *e->ids);
    e->scored = xmalloc((size_t)from->n_ids + 1);
    memcpy(e->ids, from->ids, (size_t)from->n_ids * sizeof *e->ids);
    memcpy(e->scored, from->scored, (size_t)from->n_ids);
    e->n_prompt = from->n_prompt;
    e->answer_whole = from->answer_whole;
    return 0;
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
    for (int32_t k = 0; k < d->n_sources; k++) free(d->sources[k]);
    free(d->sources);
    d->sources = NULL;
    d->n_sources = 0;
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

/* The string field `key` of obj into *out; -1 with "PATH:LINE: field ..." otherwise. With
 * optional, a missing field gives NULL. */
static int json_string_field(const cJSON *obj, const char *key, const char *path, int line,
                             int optional, const char **out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (item == NULL && optional)
        return 0;
    if (item == NULL)
        return err_set("%s:%d: field '%s' missing", path, line, key);
    if (!cJSON_IsString(item) || item->valuestring == NULL)
        return err_set("%s:%d: field '%s' is not a string", path, line, key);
    *out = item->valuestring;
    return 0;
}

int data_format_by_name(const char *name, enum data_format *out) {
    static const char *names[] = {"auto", "prompt_completion", "text", "messages", "alpaca"};
    for (int k = 0; k < 5; k++)
        if (strcmp(name, names[k]) == 0) return *out = (enum data_format)k, 0;
    return -1;
}

static const char *format_name(enum data_format f) {
    static const char *names[] = {"auto", "prompt_completion", "text", "messages", "alpaca"};
    return names[f];
}

/* The format of a line's object, from its fields. */
static enum data_format format_of(const cJSON *obj) {
    if (cJSON_GetObjectItemCaseSensitive(obj, "messages")) return DATA_MESSAGES;
    if (cJSON_GetObjectItemCaseSensitive(obj, "instruction")) return DATA_ALPACA;
    if (cJSON_GetObjectItemCaseSensitive(obj, "prompt") || cJSON_GetObjectItemCaseSensitive(obj, "completion"))
        return DATA_PROMPT_COMPLETION;
    if (cJSON_GetObjectItemCaseSensitive(obj, "text")) return DATA_TEXT;
    return DATA_AUTO;
}

/* Stanford Alpaca's prompts (with and without an input). */
static char *alpaca_prompt(const char *instruction, const char *input) {
    if (input && input[0])
        return xasprintf("Below is an instruction that describes a task, paired with an input that "
                         "provides further context. Write a response that appropriately completes "
                         "the request.\n\n### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n",
                         instruction, input);
    return xasprintf("Below is an instruction that describes a task. Write a response that "
                     "appropriately completes the request.\n\n### Instruction:\n%s\n\n### Response:\n",
                     instruction);
}

static int add_messages_line(const cJSON *obj, const char *path, int line, int32_t task,
                             struct dataset *out) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, "messages");
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
        return err_set("%s:%d: field 'messages' is not a non-empty list", path, line);
    int32_t n = cJSON_GetArraySize(list), i = 0;
    struct chat_message *m = xcalloc((size_t)n, sizeof *m);
    int rc = 0;
    for (const cJSON *e = list->child; e && rc == 0; e = e->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(e, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsObject(e) || !cJSON_IsString(role) || !cJSON_IsString(content))
            rc = err_set("%s:%d: messages[%d] needs string fields 'role' and 'content'", path, line, i);
        else if (strcmp(role->valuestring, "system") != 0 && strcmp(role->valuestring, "user") != 0 &&
                 strcmp(role->valuestring, "assistant") != 0)
            rc = err_set("%s:%d: messages[%d]: role '%s' is not system, user or assistant", path,
                         line, i, role->valuestring);
        else
            m[i] = (struct chat_message){role->valuestring, content->valuestring};
    }
    if (rc == 0 && dataset_add_messages(out, task, m, n))
        rc = err_prefix("%s:%d", path, line);
    free(m);
    return rc;
}

/* One non-blank line (NUL-terminated, len bytes) into the dataset. *format: the file's,
 * recognised from its first line when it is DATA_AUTO. */
static int parse_line(char *text, size_t len, const char *path, int line, enum data_format *format,
                      const char *default_task, struct dataset *out, struct task_table *tt) {
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
    const char *task = NULL, *a = NULL, *b = NULL, *c = NULL;
    size_t n_before = out->n;
    if (!cJSON_IsObject(obj)) {
        err_set("%s:%d: not a JSON object", path, line);
    } else if (has_escaped_nul(text)) {
        err_set("%s:%d: contains the escape \\u0000 (a NUL character)", path, line);
    } else if (*format == DATA_AUTO && (*format = format_of(obj)) == DATA_AUTO) {
        err_set("%s:%d: no field of a known format: prompt/completion, text, messages, or "
                "instruction/output (Alpaca)", path, line);
    } else if (json_string_field(obj, "task", path, line, 1, &task) == 0) {
        if (!task) task = default_task;
        int32_t id = task[0] ? task_table_id(tt, task) : -1;
        if (id < 0) {
            err_set("%s:%d: empty task name", path, line);
        } else if (*format == DATA_PROMPT_COMPLETION) {
            if (json_string_field(obj, "prompt", path, line, 0, &a) == 0 &&
                json_string_field(obj, "completion", path, line, 0, &b) == 0) {
                if (b[0] == '\0') err_set("%s:%d: empty completion", path, line);
                else dataset_add(out, id, a, b), rc = 0;
            }
        } else if (*format == DATA_TEXT) {
            if (json_string_field(obj, "text", path, line, 0, &a) == 0) {
                if (a[0] == '\0') err_set("%s:%d: empty text", path, line);
                else dataset_add(out, id, "", a), rc = 0;
            }
        } else if (*format == DATA_ALPACA) {
            if (json_string_field(obj, "instruction", path, line, 0, &a) == 0 &&
                json_string_field(obj, "input", path, line, 1, &b) == 0 &&
                json_string_field(obj, "output", path, line, 0, &c) == 0) {
                if (c[0] == '\0') {
                    err_set("%s:%d: empty output", path, line);
                } else {
                    char *prompt = alpaca_prompt(a, b);
                    dataset_add(out, id, prompt, c);
                    free(prompt);
                    rc = 0;
                }
            }
        } else {
            rc = add_messages_line(obj, path, line, id, out);
        }
    }
    if (rc == 0 && out->n > n_before) {
        out->ex[out->n - 1].source = dataset_source(out, path);
        out->ex[out->n - 1].line = line;
    } else if (rc != 0 && *format != DATA_AUTO && strstr(err_msg(), "' missing")) {
        char *msg = xasprintf("%s (the file's format is %s)", err_msg(), format_name(*format));
        err_set("%s", msg);
        free(msg);
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
static int parse_lines(char *buf, size_t len, const char *path, enum data_format format,
                       struct dataset *out, struct task_table *tt) {
    /* the default task: the file's base name without its extension */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *task = xstrdup(base);
    char *dot = strrchr(task, '.');
    if (dot && dot != task) *dot = '\0';
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
        if (n > JSONL_MAX_LINE) {
            free(task);
            return err_set("%s:%d: line too long (%zu bytes, at most %d)", path, line, n,
                           (int)JSONL_MAX_LINE);
        }
        start[n] = '\0';
        if (is_blank(start, n))
            continue;
        if (parse_line(start, n, path, line, &format, task, out, tt) != 0) {
            free(task);
            return -1;
        }
    }
    free(task);
    if (out->n == n_before)
        return err_set("%s: no examples (the file is empty or blank)", path);
    return 0;
}

int data_load_jsonl(const char *path, struct dataset *out, struct task_table *tt) {
    return data_load_jsonl_as(path, DATA_AUTO, out, tt);
}

int data_load_jsonl_as(const char *path, enum data_format format, struct dataset *out,
                       struct task_table *tt) {
    char *buf;
    size_t len;
    if (file_read_all(path, &buf, &len) != 0)
        return -1;
    /* on failure, leave the dataset and the task table as they were */
    size_t n_before = out->n;
    int32_t tasks_before = tt->n;
    int rc = parse_lines(buf, len, path, format, out, tt);
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
    if (e->messages) { /* a conversation stays one */
        cJSON *list = cJSON_AddArrayToObject(obj, "messages");
        for (int32_t i = 0; list && i < e->n_messages; i++) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", e->messages[i].role);
            cJSON_AddStringToObject(m, "content", e->messages[i].content);
            cJSON_AddItemToArray(list, m);
        }
        cJSON_AddStringToObject(obj, "task", task);
        char *text = cJSON_PrintUnformatted(obj);
        cJSON_Delete(obj);
        return text;
    }
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
