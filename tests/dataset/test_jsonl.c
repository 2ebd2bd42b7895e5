/*
 * test_jsonl.c: reading a good JSONL file (extra fields, blank lines, CRLF, escapes, UTF-8),
 * writing it back atomically and reading it again; then a table of bad files, each of which
 * must fail with "PATH:LINE: reason" and leave the dataset and the task table as they were.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "data.h"

static char *tmp_dir;

static char *write_tmp(const char *name, const char *content, size_t len) {
    char *path = path_join(tmp_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(content, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    return path;
}

static const char GOOD[] =
    "\xEF\xBB\xBF{\"task\": \"rev\", \"prompt\": \"rev abc=\", \"completion\": \"cba\"}\n"
    "\n"
    "   \t\n"
    "{\"id\": 17, \"completion\": \"2\", \"prompt\": \"add 1+1=\", \"task\": \"add\", "
    "\"meta\": {\"x\": [1, 2]}}\r\n"
    "{\"task\":\"rev\",\"prompt\":\"say \\\"hi\\\"\\n\\ttab\\\\u0000=\",\"completion\":\"ok\\u00e9\"}\n"
    "{\"task\": \"\xE6\x97\xA5\xE6\x9C\xAC\", \"prompt\": \"caf\xC3\xA9 \xF0\x9F\x99\x82=\", "
    "\"completion\": \"\xE2\x9C\x93\"}"; /* no newline at the end of the file */

struct want_example {
    const char *task, *prompt, *completion;
    int32_t id;
};

static const struct want_example GOOD_WANT[] = {
    {"rev", "rev abc=", "cba", 0},
    {"add", "add 1+1=", "2", 1},
    {"rev", "say \"hi\"\n\ttab\\u0000=", "ok\xC3\xA9", 0},
    {"\xE6\x97\xA5\xE6\x9C\xAC", "caf\xC3\xA9 \xF0\x9F\x99\x82=", "\xE2\x9C\x93", 2},
};
enum { N_GOOD = 4 };

static int matches_good(const struct dataset *d, size_t first, const struct task_table *tt) {
    int bad = 0;
    for (size_t i = 0; i < N_GOOD; i++) {
        const struct example *e = &d->ex[first + i];
        const struct want_example *w = &GOOD_WANT[i];
        int ok = e->task == w->id && strcmp(tt->names[e->task], w->task) == 0 &&
                 strcmp(e->prompt, w->prompt) == 0 && strcmp(e->completion, w->completion) == 0;
        CHECK(ok, "example %zu: task %d '%s' prompt '%s' completion '%s'", i, (int)e->task,
              tt->names[e->task], e->prompt, e->completion);
        bad += !ok;
    }
    return bad;
}

static void test_good_file(void) {
    char *path = write_tmp("good.jsonl", GOOD, sizeof GOOD - 1);
    struct dataset d = {0};
    struct task_table tt = {0};
    int rc = data_load_jsonl(path, &d, &tt);
    CHECK(rc == 0, "load failed: %s", err_msg());
    CHECK(d.n == N_GOOD && tt.n == 3, "%zu examples and %d tasks, want 4 and 3", d.n, (int)tt.n);
    int bad = d.n == N_GOOD ? matches_good(&d, 0, &tt) : N_GOOD;
    printf("good file: %zu examples, %d tasks, %d mismatched\n", d.n, (int)tt.n, bad);

    /* write it back, and read it again into a table that already knows other tasks */
    char *out = path_join(tmp_dir, "saved.jsonl");
    CHECK(data_save_jsonl(out, &d, &tt) == 0, "save failed: %s", err_msg());
    char *text = NULL;
    size_t len = 0;
    CHECK(file_read_all(out, &text, &len) == 0, "%s", err_msg());
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    CHECK(lines == N_GOOD, "saved file has %d lines, want %d", lines, N_GOOD);
    /* the newline and quotes inside the prompt are escaped, so each example stays one line */
    CHECK(text != NULL && strstr(text, "say \\\"hi\\\"\\n\\ttab\\\\u0000=") != NULL,
          "escapes missing in: %s", text ? text : "(null)");
    char *tmp_left = xasprintf("%s.tmp.%ld", out, (long)getpid());
    CHECK(!file_exists(tmp_left), "temporary %s left behind", tmp_left);

    struct dataset d2 = {0};
    struct task_table tt2 = {0};
    task_table_id(&tt2, "other");
    dataset_add(&d2, 0, "x=", "y");
    CHECK(data_load_jsonl(out, &d2, &tt2) == 0, "reload failed: %s", err_msg());
    int bad2 = 0;
    CHECK(d2.n == 1 + N_GOOD && tt2.n == 4, "reload: %zu examples, %d tasks", d2.n, (int)tt2.n);
    if (d2.n == 1 + N_GOOD) {
        for (size_t i = 0; i < N_GOOD; i++) {
            const struct example *a = &d.ex[i], *b = &d2.ex[1 + i];
            int ok = strcmp(tt.names[a->task], tt2.names[b->task]) == 0 && b->task == a->task + 1 &&
                     strcmp(a->prompt, b->prompt) == 0 && strcmp(a->completion, b->completion) == 0;
            bad2 += !ok;
        }
    }
    CHECK(bad2 == 0, "%d examples differ after save and reload", bad2);
    printf("saved %zu bytes in %d lines; reloaded after 1 example: %zu examples, %d differ\n", len,
           lines, d2.n, bad2);

    /* dataset_filter keeps the chosen tasks in order */
    const int32_t keep[] = {1}; /* "rev" in tt2 */
    dataset_filter(&d2, keep, 1);
    CHECK(d2.n == 2 && strcmp(d2.ex[0].prompt, "rev abc=") == 0 && d2.ex[1].task == 1,
          "filter kept %zu examples", d2.n);
    printf("filter on task 'rev': %zu examples kept\n", d2.n);

    /* an example whose task id is not in the table is refused, and nothing is written */
    char *bad_out = path_join(tmp_dir, "never.jsonl");
    d2.ex[0].task = 9;
    CHECK(data_save_jsonl(bad_out, &d2, &tt2) == -1 && strstr(err_msg(), bad_out) &&
              strstr(err_msg(), "task id 9") && !file_exists(bad_out),
          "unknown task id: %s", err_msg());

    free(bad_out);
    free(tmp_left);
    free(text);
    free(out);
    free(path);
    dataset_free(&d);
    dataset_free(&d2);
    task_table_free(&tt);
    task_table_free(&tt2);
}

struct bad_case {
    const char *name;
    const char *content;
    size_t len;  /* 0: strlen(content) */
    int line;    /* expected line, 0: the message names no line */
    const char *phrase;
};

#define GOOD_LINE "{\"task\": \"t\", \"prompt\": \"p=\", \"completion\": \"c\"}\n"
#define NUL_LINE "{\"task\": \"t\", \"prompt\": \"a\0b\", \"completion\": \"c\"}\n"

static void test_bad_files(void) {
    /* a 1 MB + 1 byte line: a JSON string that is too long */
    size_t big_len = (1u << 20) + 1;
    char *big = malloc(sizeof GOOD_LINE + big_len + 2);
    strcpy(big, GOOD_LINE);
    size_t off = strlen(big);
    memset(big + off, ' ', big_len);
    big[off + big_len] = '\n';
    big[off + big_len + 1] = '\0';

    const struct bad_case cases[] = {
        {"not_json.jsonl", GOOD_LINE "{\"task\": \"t\", \"prompt\": \"p\"\n", 0, 2,
         "not valid JSON"},
        {"missing.jsonl", GOOD_LINE "\n{\"task\": \"t\", \"prompt\": \"p\"}\n", 0, 3,
         "field 'completion' missing"},
        {"task_number.jsonl", "{\"task\": 7, \"prompt\": \"p\", \"completion\": \"c\"}\n", 0, 1,
         "field 'task' is not a string"},
        {"prompt_null.jsonl", GOOD_LINE GOOD_LINE
         "{\"task\": \"t\", \"prompt\": null, \"completion\": \"c\"}\n", 0, 3,
         "field 'prompt' is not a string"},
        {"empty_completion.jsonl", GOOD_LINE GOOD_LINE GOOD_LINE GOOD_LINE GOOD_LINE GOOD_LINE
         "{\"task\": \"t\", \"prompt\": \"p\", \"completion\": \"\"}\n", 0, 7, "empty completion"},
        {"empty_task.jsonl", "{\"task\": \"\", \"prompt\": \"p\", \"completion\": \"c\"}\n", 0, 1,
         "empty task name"},
        {"array.jsonl", GOOD_LINE "[\"t\", \"p\", \"c\"]\n", 0, 2, "not a JSON object"},
        {"trailing.jsonl", GOOD_LINE GOOD_LINE "{\"task\": \"t\", \"prompt\": \"p\", "
         "\"completion\": \"c\"} {}\n", 0, 3, "not valid JSON"},
        {"bad_utf8.jsonl", GOOD_LINE "{\"task\": \"t\", \"prompt\": \"\xFF=\", \"completion\": "
         "\"c\"}\n", 0, 2, "not valid UTF-8"},
        {"overlong_utf8.jsonl", "{\"task\": \"t\", \"prompt\": \"\xC0\xAF\", \"completion\": "
         "\"c\"}\n", 0, 1, "not valid UTF-8"},
        {"nul.jsonl", GOOD_LINE NUL_LINE, sizeof(GOOD_LINE NUL_LINE) - 1, 2, "NUL byte"},
        {"escaped_nul.jsonl", GOOD_LINE "{\"task\": \"t\", \"prompt\": \"a\\u0000b\", "
         "\"completion\": \"c\"}\n", 0, 2, "\\u0000"},
        {"long_line.jsonl", big, 0, 2, "line too long"},
        {"empty.jsonl", "", 0, 0, "no examples"},
        {"blank.jsonl", "\n  \n\r\n\t\n", 0, 0, "no examples"},
    };
    int n_cases = (int)(sizeof cases / sizeof cases[0]);

    int passed = 0;
    for (int i = 0; i < n_cases; i++) {
        const struct bad_case *c = &cases[i];
        char *path = write_tmp(c->name, c->content, c->len ? c->len : strlen(c->content));
        /* the dataset and table hold something already: a failed load must not touch them */
        struct dataset d = {0};
        struct task_table tt = {0};
        dataset_add(&d, task_table_id(&tt, "before"), "a=", "b");
        err_clear();
        int rc = data_load_jsonl(path, &d, &tt);
        const char *msg = err_msg();
        char *place = c->line ? xasprintf("%s:%d: ", path, c->line) : xasprintf("%s: ", path);
        int ok = rc == -1 && strncmp(msg, place, strlen(place)) == 0 &&
                 strstr(msg, c->phrase) != NULL && strchr(msg, '\n') == NULL;
        CHECK(ok, "%s: rc %d, message '%s', want '%s...%s'", c->name, rc, msg, place, c->phrase);
        int kept = d.n == 1 && tt.n == 1 && strcmp(d.ex[0].prompt, "a=") == 0;
        CHECK(kept, "%s: a failed load left %zu examples and %d tasks", c->name, d.n, (int)tt.n);
        passed += ok && kept;
        /* the path is long; print the message from the file name on */
        const char *shown = strstr(msg, c->name);
        printf("  %-24s -> %s\n", c->name, shown ? shown : msg);
        free(place);
        free(path);
        dataset_free(&d);
        task_table_free(&tt);
    }

    /* a missing file names the path */
    char *missing = path_join(tmp_dir, "does_not_exist.jsonl");
    struct dataset d = {0};
    struct task_table tt = {0};
    int ok = data_load_jsonl(missing, &d, &tt) == -1 && strstr(err_msg(), missing) == err_msg();
    CHECK(ok, "missing file: '%s'", err_msg());
    passed += ok;
    free(missing);
    printf("bad files: %d of %d rejected with the right place and reason\n", passed, n_cases + 1);
    free(big);
}

int main(void) {
    char tmpl[] = "/tmp/peft-test-jsonl-XXXXXX";
    tmp_dir = mkdtemp(tmpl);
    if (tmp_dir == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_good_file();
    test_bad_files();
    remove_tree(tmp_dir);
    return check_report("test_jsonl");
}
