/*
 * test_loader.c: the plugin registry against real shared objects.
 *
 * Arguments are TAG=PATH pairs naming the test plugins built by tests/loader/meson.build from
 * test_plugin.c, one per defect. Checks: the exact refusal line of each defect (the file's
 * path, the reason, both versions for an ABI mismatch); that a refused file registers
 * nothing and, before the ABI check passes, runs no plugin code; that init/deinit come in
 * pairs; lookup by id through the search path (with precedence and the "unknown method"
 * line), by path, and the directory scan; the key value checks; the text of
 * `peft plugins` and `peft plugins ID`.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "plugin_loader.h"
#include "plugins_cmd.h"
#include "core.h"

// ---------------------------------------------------------------------------------------
// The plugins given on the command line

#define MAX_PLUGINS 32
static struct {
    const char *tag;
    char *path; /* realpath */
} plugins[MAX_PLUGINS];
static int n_plugins;

static const char *plugin(const char *tag) {
    for (int i = 0; i < n_plugins; i++)
        if (strcmp(plugins[i].tag, tag) == 0) return plugins[i].path;
    fprintf(stderr, "test_loader: no argument %s=PATH\n", tag);
    exit(2);
}

static int env_count(const char *what, const char *tag) {
    char name[128];
    snprintf(name, sizeof name, "PEFT_LOADER_TEST_%s_%s", what, tag);
    const char *v = getenv(name);
    return v ? atoi(v) : 0;
}

static int has_method(const struct plugin_registry *r, const char *id) {
    for (int32_t i = 0; i < r->n_methods; i++)
        if (strcmp(r->methods[i].desc->id, id) == 0) return 1;
    return 0;
}

/* Load `tag`'s file into r and expect refusal with exactly `want` (a printf format whose
 * first %s is the file's path). Nothing may be registered. */
static void expect_refused(struct plugin_registry *r, const char *tag, const char *want) {
    int32_t files = r->n_files, methods = r->n_methods;
    err_clear();
    int rc = registry_load_file(r, plugin(tag));
    CHECK(rc == -1, "%s: loaded, expected a refusal", tag);
    CHECK(strcmp(err_msg(), want) == 0, "%s:\n  got  '%s'\n  want '%s'", tag, err_msg(), want);
    CHECK(r->n_files == files && r->n_methods == methods,
          "%s: refused file registered something (%d files, %d methods)", tag,
          (int)r->n_files, (int)r->n_methods);
    printf("refused %-12s %s\n", tag, err_msg());
}

// ---------------------------------------------------------------------------------------

static void test_refusals(void) {
    struct plugin_registry r;
    registry_init(&r, NULL);
    char want[2 * PATH_MAX];

    /* Accepted: registered once, init ran once, loading again changes nothing. */
    CHECK(registry_load_file(&r, plugin("good")) == 0, "good: %s", err_msg());
    CHECK(r.n_files == 1 && r.n_methods == 1, "good: %d files, %d methods", (int)r.n_files,
          (int)r.n_methods);
    CHECK(has_method(&r, "test.good"), "test.good not registered");
    CHECK(r.n_files == 1 && strcmp(r.files[0]->path, plugin("good")) == 0, "path '%s'",
          r.n_files ? r.files[0]->path : "");
    CHECK(registry_load_file(&r, plugin("good")) == 0, "good again: %s", err_msg());
    CHECK(r.n_files == 1 && r.n_methods == 1, "loading twice registered twice");
    CHECK(env_count("INIT", "good") == 1, "good: init ran %d times", env_count("INIT", "good"));
    CHECK(env_count("DEINIT", "good") == 0, "good: deinit ran before registry_free");

    snprintf(want, sizeof want, "%s: plugin ABI version 7.0, this host runs %u.0 to %u.%u: "
             "rebuild the plugin against this peftkit's SDK", plugin("bad_abi"), PEFT_ABI_MAJOR,
             PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    expect_refused(&r, "bad_abi", want);
    /* Built for a newer minor of the same major: its structs may be larger than the host's. */
    snprintf(want, sizeof want, "%s: plugin built for ABI %u.%u, newer than this host's %u.%u: "
             "update peftkit, or rebuild the plugin against this one's SDK", plugin("newer_minor"),
             PEFT_ABI_MAJOR, PEFT_ABI_MINOR + 1, PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    expect_refused(&r, "newer_minor", want);
    CHECK(env_count("INIT", "newer_minor") == 0, "newer_minor: plugin code ran before the ABI check");
    CHECK(env_count("INIT", "bad_abi") == 0, "bad_abi: plugin code ran before the ABI check");

    snprintf(want, sizeof want, "%s: no entry point 'peft_plugin_entry'", plugin("no_entry"));
    expect_refused(&r, "no_entry", want);
    CHECK(env_count("INIT", "no_entry") == 0, "no_entry: init ran");

    snprintf(want, sizeof want, "%s: peft_plugin_entry.struct_size 8 is smaller than %zu",
             plugin("bad_size"), sizeof(peft_plugin_entry_t));
    expect_refused(&r, "bad_size", want);
    CHECK(env_count("INIT", "bad_size") == 0, "bad_size: plugin code ran before the size check");

    snprintf(want, sizeof want,
             "%s: method 'test.no_attach': required function 'attach' is missing",
             plugin("no_attach"));
    expect_refused(&r, "no_attach", want);
    /* Refused after a successful init: deinit is owed at once. */
    CHECK(env_count("INIT", "no_attach") == 1 && env_count("DEINIT", "no_attach") == 1,
          "no_attach: init %d, deinit %d", env_count("INIT", "no_attach"),
          env_count("DEINIT", "no_attach"));

    snprintf(want, sizeof want,
             "%s: method 'test.bad_vt_size': vtable struct_size 16 is smaller than %zu",
             plugin("bad_vt_size"), offsetof(peft_method_vtable, input_forward));
    expect_refused(&r, "bad_vt_size", want);

    snprintf(want, sizeof want, "%s: method id 'Test/Bad' is not of the form [a-z0-9][a-z0-9_.-]*",
             plugin("bad_id"));
    expect_refused(&r, "bad_id", want);

    snprintf(want, sizeof want, "%s: method id 'test.good' is already provided by %s",
             plugin("twin"), plugin("good"));
    expect_refused(&r, "twin", want);

    snprintf(want, sizeof want,
             "%s: method 'test.reserved_key': key 'lr' collides with a stage key of the host",
             plugin("reserved_key"));
    expect_refused(&r, "reserved_key", want);

    snprintf(want, sizeof want,
             "%s: method 'test.bad_default': key 'r': bad default: expected an integer, "
             "got 'eight'",
             plugin("bad_default"));
    expect_refused(&r, "bad_default", want);

    snprintf(want, sizeof want, "%s: method 'test.dup_key': key 'r' is declared twice",
             plugin("dup_key"));
    expect_refused(&r, "dup_key", want);

    snprintf(want, sizeof want, "%s: init failed with status -3 (PEFT_E_CONFIG)",
             plugin("init_fails"));
    expect_refused(&r, "init_fails", want);

    snprintf(want, sizeof want,
             "%s: method 'test.bad_stage_default': stage_defaults: 'nosuch' is not a stage key "
             "of the host (see peft keys)",
             plugin("bad_stage_default"));
    expect_refused(&r, "bad_stage_default", want);
    CHECK(env_count("DEINIT", "init_fails") == 0, "init_fails: deinit after a failed init");

    /* Not a shared object at all, and no file at all. */
    char tmp[] = "/tmp/peft-loader-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    char *junk = path_join(tmp, "peft-junk.so");
    CHECK(file_write_atomic(junk, "not an ELF file\n", 16) == 0, "%s", err_msg());
    char *junk_real = realpath(junk, NULL);
    err_clear();
    CHECK(registry_load_file(&r, junk) == -1, "junk loaded");
    CHECK(junk_real && strncmp(err_msg(), junk_real, strlen(junk_real)) == 0 &&
              strlen(err_msg()) > strlen(junk_real) + 2,
          "junk: '%s'", err_msg());
    printf("refused %-12s %s\n", "junk", err_msg());
    char *missing = path_join(tmp, "peft-missing.so");
    snprintf(want, sizeof want, "%s: No such file or directory", missing);
    CHECK(registry_load_file(&r, missing) == -1 && strcmp(err_msg(), want) == 0, "missing: '%s'",
          err_msg());
    remove_tree(tmp);
    free(junk);
    free(junk_real);
    free(missing);

    CHECK(r.n_files == 1 && r.n_methods == 1, "after refusals: %d files, %d methods",
          (int)r.n_files, (int)r.n_methods);
    const char *refused_ids[] = {"test.bad_abi", "test.no_entry",    "test.bad_size",
                                 "test.no_attach", "test.bad_vt_size", "test.reserved_key",
                                 "test.bad_default", "test.dup_key",  "test.init_fails",
                                 "test.bad_stage_default"};
    for (size_t i = 0; i < sizeof refused_ids / sizeof refused_ids[0]; i++)
        CHECK(!has_method(&r, refused_ids[i]), "%s is registered", refused_ids[i]);

    registry_free(&r);
    CHECK(env_count("DEINIT", "good") == 1, "good: deinit ran %d times after registry_free",
          env_count("DEINIT", "good"));
}

/* A copy of the file `tag` named `name` in dir. */
static char *copy_plugin(const char *tag, const char *dir, const char *name) {
    char *data;
    size_t len;
    char *dst = path_join(dir, name);
    CHECK(file_read_all(plugin(tag), &data, &len) == 0, "%s", err_msg());
    CHECK(file_write_atomic(dst, data, len) == 0, "%s", err_msg());
    free(data);
    return dst;
}

static void test_find(void) {
    char *good_dir = path_dirname(plugin("good"));
    char *env = xasprintf("/nonexistent/peft/plugins:%s", good_dir);
    setenv("PEFT_PLUGIN_PATH", env, 1);

    /* By id through PEFT_PLUGIN_PATH; a missing directory is skipped. */
    struct plugin_registry r;
    registry_init(&r, NULL);
    CHECK(r.n_dirs >= 1 && strcmp(r.dirs[0], good_dir) == 0, "first dir '%s', want '%s'",
          r.n_dirs ? r.dirs[0] : "", good_dir);
    const struct plugin_method *m = registry_find(&r, "test.good");
    CHECK(m && strcmp(m->desc->id, "test.good") == 0, "find test.good: %s", err_msg());
    CHECK(m && strcmp(m->file->path, plugin("good")) == 0, "found in '%s'",
          m ? m->file->path : "");
    CHECK(registry_find(&r, "test.good") == m, "second find gives another record");

    /* Unknown id: the line lists the methods found, then the searched directories (only
     * existing ones). */
    char *want = xasprintf("unknown method 'test.nosuch' (methods found: test.good, test.old_desc, test.other, "
                           "test.stage_defaults; "
                           "searched: %s", good_dir);
    CHECK(registry_find(&r, "test.nosuch") == NULL, "found test.nosuch");
    CHECK(strncmp(err_msg(), want, strlen(want)) == 0 && !strstr(err_msg(), "/nonexistent") &&
              err_msg()[strlen(err_msg()) - 1] == ')',
          "got '%s'", err_msg());
    printf("unknown: %s\n", err_msg());
    free(want);

    /* By path: the refused file's error comes back, the good file's first method. */
    CHECK(registry_find(&r, plugin("bad_abi")) == NULL && strstr(err_msg(), "ABI version 7"),
          "bad_abi by path: '%s'", err_msg());
    m = registry_find(&r, plugin("good"));
    CHECK(m && strcmp(m->desc->id, "test.good") == 0, "good by path: %s", err_msg());

    /* Records stay put while the registry grows (run code keeps these pointers). */
    const struct plugin_method *kept = registry_find(&r, "test.good");
    const struct plugin_method *other = registry_find(&r, "test.other");
    CHECK(other && r.n_methods == 4, "find test.other: %s", err_msg());
    CHECK(kept && strcmp(kept->desc->id, "test.good") == 0 &&
              kept == registry_find(&r, "test.good"),
          "the record of test.good moved");
    registry_free(&r);

    char tmp[] = "/tmp/peft-loader-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");

    /* Precedence: extra dirs come before PEFT_PLUGIN_PATH; the first file found is used
     * even when it is refused (a stale file is reported, not silently shadowed). */
    char *shadow = copy_plugin("twin", tmp, "peft-test.good.so");
    char *shadow_real = realpath(shadow, NULL);
    registry_init(&r, tmp);
    m = registry_find(&r, "test.good");
    CHECK(m && shadow_real && strcmp(m->file->path, shadow_real) == 0,
          "extra dir did not take precedence: %s", m ? m->file->path : err_msg());
    registry_free(&r);
    /* (Another folder: a path once loaded stays loaded, so a file replaced under the same
     * name would not be read again.) */
    char tmp2[] = "/tmp/peft-loader-XXXXXX";
    CHECK(mkdtemp(tmp2) != NULL, "mkdtemp");
    char *stale = copy_plugin("bad_abi", tmp2, "peft-test.good.so");
    char *stale_real = realpath(stale, NULL);
    registry_init(&r, tmp2);
    m = registry_find(&r, "test.good");
    CHECK(m == NULL && stale_real && strstr(err_msg(), "plugin ABI version 7") &&
              strncmp(err_msg(), stale_real, strlen(stale_real)) == 0,
          "stale file: %s", m ? m->file->path : err_msg());
    registry_free(&r);

    remove_tree(tmp);
    remove_tree(tmp2);
    free(stale_real);
    free(shadow);
    free(shadow_real);
    free(stale);
    free(env);
    free(good_dir);
}

struct refusals {
    const char *dir;
    int n_in_dir;
    int n;
};

static void count_refusal(void *ctx, const char *line) {
    struct refusals *c = ctx;
    c->n++;
    if (strncmp(line, c->dir, strlen(c->dir)) == 0) c->n_in_dir++;
}

static void test_scan(void) {
    char *good_dir = path_dirname(plugin("good"));
    setenv("PEFT_PLUGIN_PATH", good_dir, 1);
    struct plugin_registry r;
    registry_init(&r, NULL);
    struct refusals c = {good_dir, 0, 0};
    registry_scan(&r, count_refusal, &c);
    /* Every test plugin but the four good ones is refused. */
    const char *good_ids[] = {"test.good", "test.other", "test.stage_defaults", "test.old_desc"};
    int n_good = (int)(sizeof good_ids / sizeof good_ids[0]);
    int from_dir = 0;
    for (int32_t i = 0; i < r.n_methods; i++)
        if (strncmp(r.methods[i].file->path, good_dir, strlen(good_dir)) == 0) {
            from_dir++;
            int known = 0;
            for (int k = 0; k < n_good; k++) known |= strcmp(r.methods[i].desc->id, good_ids[k]) == 0;
            CHECK(known, "scan registered '%s'", r.methods[i].desc->id);
        }
    CHECK(from_dir == n_good, "scan registered %d methods from the test dir", from_dir);
    CHECK(c.n_in_dir == n_plugins - n_good, "scan refused %d files of the test dir, want %d",
          c.n_in_dir, n_plugins - n_good);
    printf("scan: %d methods registered, %d refusals (%d from %s)\n", (int)r.n_methods, c.n,
           c.n_in_dir, good_dir);
    registry_free(&r);
    free(good_dir);
}

/* Stage defaults: declared ones are read back; a descriptor as large as before the field was
 * appended loads, and what lies past its struct_size is not read. */
static void test_stage_defaults(void) {
    struct plugin_registry r;
    registry_init(&r, NULL);
    CHECK(registry_load_file(&r, plugin("stage_defaults")) == 0, "stage_defaults: %s", err_msg());
    CHECK(registry_load_file(&r, plugin("old_desc")) == 0, "old_desc: %s", err_msg());
    const struct plugin_method *with = registry_find(&r, "test.stage_defaults");
    const struct plugin_method *old = registry_find(&r, "test.old_desc");
    const peft_kv *kv = NULL;
    uint32_t n = with ? method_stage_defaults(with->desc, &kv) : 0;
    CHECK(n == 2 && strcmp(kv[0].key, "optimizer") == 0 && strcmp(kv[0].value, "rmsprop") == 0 &&
              strcmp(kv[1].key, "weight_decay") == 0,
          "stage_defaults: %u read back", (unsigned)n);
    uint32_t n_old = old ? method_stage_defaults(old->desc, &kv) : 99;
    CHECK(n_old == 0 && kv == NULL, "old_desc: %u stage defaults read past its struct_size",
          (unsigned)n_old);
    printf("stage defaults: %u declared and read; a descriptor of the older size: %u\n",
           (unsigned)n, (unsigned)n_old);
    registry_free(&r);
}

static void test_values(void) {
    struct {
        int32_t type;
        const char *choices, *value;
        int ok;
    } cases[] = {
        {PEFT_PARAM_INT, NULL, "12", 1},
        {PEFT_PARAM_INT, NULL, "-9223372036854775808", 1},
        {PEFT_PARAM_INT, NULL, "9223372036854775808", 0},
        {PEFT_PARAM_INT, NULL, "1.5", 0},
        {PEFT_PARAM_INT, NULL, " 1", 0},
        {PEFT_PARAM_INT, NULL, "", 0},
        {PEFT_PARAM_INT, NULL, "0x10", 0},
        {PEFT_PARAM_FLOAT, NULL, "1e-3", 1},
        {PEFT_PARAM_FLOAT, NULL, "-2", 1},
        {PEFT_PARAM_FLOAT, NULL, "inf", 0},
        {PEFT_PARAM_FLOAT, NULL, "nan", 0},
        {PEFT_PARAM_FLOAT, NULL, "1e999", 0},
        {PEFT_PARAM_FLOAT, NULL, "0.1x", 0},
        {PEFT_PARAM_FLOAT, NULL, "", 0},
        {PEFT_PARAM_BOOL, NULL, "true", 1},
        {PEFT_PARAM_BOOL, NULL, "off", 1},
        {PEFT_PARAM_BOOL, NULL, "0", 1},
        {PEFT_PARAM_BOOL, NULL, "True", 0},
        {PEFT_PARAM_BOOL, NULL, "2", 0},
        {PEFT_PARAM_CHOICE, "gaussian|kaiming", "kaiming", 1},
        {PEFT_PARAM_CHOICE, "gaussian|kaiming", "gauss", 0},
        {PEFT_PARAM_CHOICE, "gaussian|kaiming", "", 0},
        {PEFT_PARAM_LIST, NULL, "q_proj, v_proj", 1},
        {PEFT_PARAM_STRING, NULL, "", 1},
        {PEFT_PARAM_STAGE, NULL, "calib", 1},
        {PEFT_PARAM_FILES, NULL, "/no/such/file", 1},
        {42, NULL, "x", 0},
    };
    int n_ok = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        peft_param_spec p = {"k", cases[i].type, NULL, cases[i].choices, "help"};
        int rc = param_check_value(&p, cases[i].value);
        CHECK((rc == 0) == cases[i].ok, "%s '%s': rc %d (%s)", param_type_name(cases[i].type),
              cases[i].value, rc, rc ? err_msg() : "ok");
        n_ok += rc == 0;
    }
    peft_param_spec pi = {"r", PEFT_PARAM_INT, NULL, NULL, ""};
    CHECK(param_check_value(&pi, "1.5") == -1 &&
              strcmp(err_msg(), "expected an integer, got '1.5'") == 0,
          "int message '%s'", err_msg());
    peft_param_spec pc = {"init", PEFT_PARAM_CHOICE, NULL, "a|b", ""};
    CHECK(param_check_value(&pc, "c") == -1 &&
              strcmp(err_msg(), "expected one of a|b, got 'c'") == 0,
          "choice message '%s'", err_msg());
    const char *names[] = {"int", "float", "bool", "string", "list", "choice", "stage", "files"};
    for (int32_t t = PEFT_PARAM_INT; t <= PEFT_PARAM_FILES; t++)
        CHECK(strcmp(param_type_name(t), names[t - 1]) == 0, "type %d is '%s'", (int)t,
              param_type_name(t));
    /* The host's stage keys are reserved (the list may grow); method keys are not. */
    const char *host_keys[] = {"method", "from", "tasks", "eval_tasks", "steps", "batch_size",
                               "lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
                               "warmup_steps", "schedule", "min_lr_ratio", "eval_every",
                               "save_every", "save_model", "seed", "log_every",
                               "eval_batch_size", "n_train"};
    for (size_t i = 0; i < sizeof host_keys / sizeof host_keys[0]; i++)
        CHECK(host_stage_key(host_keys[i]), "'%s' is not reserved", host_keys[i]);
    CHECK(!host_stage_key("r") && !host_stage_key("target_modules") &&
              !host_stage_key("lora_alpha"),
          "a method key is reserved");
    int n_reserved = 0;
    for (int32_t i = 0; i < host_key_count(); i++)
        if (strcmp(host_key_at(i)->section, "stage") == 0 && (host_key_at(i)->flags & HOST_KEY_TRAIN)) {
            CHECK(host_stage_key(host_key_at(i)->key), "list and lookup differ");
            n_reserved++;
        }
    printf("values: %d cases, %d accepted; %d reserved stage keys\n",
           (int)(sizeof cases / sizeof cases[0]), n_ok, n_reserved);
}

static void test_cmd(void) {
    char *good_dir = path_dirname(plugin("good"));
    setenv("PEFT_PLUGIN_PATH", good_dir, 1);
    struct plugin_registry r;

    /* peft plugins ID */
    registry_init(&r, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    CHECK(plugins_show(&r, "test.good", out) == 0, "show: %s", err_msg());
    fclose(out);
    const char *want_lines[] = {
        "id           test.good\n",
        "version      1.2.3\n",
        "features     mergeable\n",
        "description  a method that only exists to be loaded (good)\n",
        "  r               int                   default 8\n",
        "  init            choice (zero|normal)  default zero\n",
        "  target_modules  list                  default \"q_proj v_proj\"\n",
        "  note            string                default \"\"\n",
        "  source          stage                 required\n",
        "                  the stage to start from\n",
    };
    for (size_t i = 0; i < sizeof want_lines / sizeof want_lines[0]; i++)
        CHECK(text && strstr(text, want_lines[i]), "show lacks '%s'", want_lines[i]);
    char *file_line = xasprintf("file         %s\n", plugin("good"));
    CHECK(text && strstr(text, file_line), "show lacks '%s'", file_line);
    printf("--- peft plugins test.good\n%s", text ? text : "");
    free(file_line);
    free(text);
    CHECK(plugins_show(&r, "test.nosuch", stdout) == -1 && strstr(err_msg(), "unknown method"),
          "show unknown: '%s'", err_msg());
    /* A plugin's control bytes are shown as '?', never sent to the terminal. */
    const char *noisy = getenv("PEFT_NOISY_PLUGIN");
    if (noisy) {
        text = NULL;
        out = open_memstream(&text, &len);
        CHECK(plugins_show(&r, noisy, out) == 0, "show noisy: %s", err_msg());
        fclose(out);
        CHECK(text && strstr(text, "description  a method with ?[2Jnoisy\n") && !strchr(text, '\x1b') &&
                  !strchr(text, '\r'),
              "control bytes printed raw: '%s'", text ? text : "");
        free(text);
    } else {
        CHECK(0, "PEFT_NOISY_PLUGIN is not set");
    }
    registry_free(&r);

    /* peft plugins */
    registry_init(&r, NULL);
    char *etext = NULL;
    size_t elen = 0;
    FILE *err = open_memstream(&etext, &elen);
    text = NULL;
    out = open_memstream(&text, &len);
    CHECK(plugins_list(&r, out, err) == 0, "list: %s", err_msg());
    fclose(out);
    fclose(err);
    CHECK(text && strncmp(text, "ID ", 3) == 0, "list header: '%s'", text ? text : "");
    /* The row of test.good, column by column. */
    const char *line = text ? strstr(text, "\ntest.good ") : NULL;
    char id[64] = "", version[64] = "", abi[16] = "", file[PATH_MAX] = "";
    int desc_at = 0;
    CHECK(line && sscanf(line + 1, "%63s %63s %15s %4095s %n", id, version, abi, file,
                         &desc_at) == 4,
          "no row for test.good");
    const char *desc = line ? line + 1 + desc_at : "";
    char *row = xasprintf("%s|%s|%s|%s|%.*s", id, version, abi, file, (int)strcspn(desc, "\n"),
                          desc);
    char *want_row = xasprintf("test.good|1.2.3|%u.%u|%s|%s", PEFT_ABI_MAJOR, PEFT_ABI_MINOR, plugin("good"),
                               "a method that only exists to be loaded (good)");
    CHECK(strcmp(row, want_row) == 0, "row '%s', want '%s'", row, want_row);
    const char *other_line = text ? strstr(text, "\ntest.other ") : NULL;
    CHECK(line && other_line && line < other_line, "rows are not sorted by id");
    free(want_row);
    int err_lines = 0;
    for (const char *p = etext; p && *p; p++) err_lines += *p == '\n';
    CHECK(err_lines >= n_plugins - 4, "list printed %d refusal lines, want >= %d", err_lines,
          n_plugins - 4); /* four of the test plugins are good */
    CHECK(etext && strstr(etext, "plugin ABI version 7"), "list err lacks the ABI refusal");
    printf("--- peft plugins\n%s--- (stderr: %d lines)\n", text ? text : "", err_lines);
    free(row);
    free(text);
    free(etext);
    registry_free(&r);
    free(good_dir);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc && n_plugins < MAX_PLUGINS; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "test_loader: argument '%s' is not TAG=PATH\n", argv[i]);
            return 2;
        }
        *eq = '\0';
        plugins[n_plugins].tag = argv[i];
        plugins[n_plugins].path = realpath(eq + 1, NULL);
        if (!plugins[n_plugins].path) {
            fprintf(stderr, "test_loader: %s: no such file\n", eq + 1);
            return 2;
        }
        n_plugins++;
    }
    test_refusals();
    test_find();
    test_scan();
    test_stage_defaults();
    test_values();
    test_cmd();
    for (int i = 0; i < n_plugins; i++) free(plugins[i].path);
    if (check_failures)
        fprintf(stderr, "test_loader: %d of %d checks failed\n", check_failures, check_count);
    else
        printf("test_loader: all %d checks passed\n", check_count);
    return check_status();
}
