/*
 * plugin_loader.c: the method registry: search path, dlopen, ABI and descriptor checks.
 *
 * A file is refused as a whole when anything in it is wrong, and a refused file registers
 * nothing. No plugin function runs before the entry's ABI version and size are checked.
 * Handles are never dlclosed (see plugin_loader.h), so descriptors stay valid for the
 * process; deinit is owed only for a successful init and is paid by registry_free.
 */
#include "plugin_loader.h"

#include <ctype.h>
#include <stddef.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "method.h"
#include "core/core.h"
#include "io/io.h"

#ifndef PEFT_PLUGIN_DIR
#define PEFT_PLUGIN_DIR "/usr/local/lib/peft/plugins"
#endif

/* A garbage method_count must not make the host read far past the plugin's array. */
#define MAX_METHODS_PER_FILE 1024u

/* What the registry keeps per file. `pub` comes first, so files[i] converts back. `methods`
 * is allocated once per file, so the pointers registry_find returns stay valid however much
 * the registry grows later (r->methods is a flat copy for listing and may move). */
struct loaded_file {
    struct plugin_file pub;
    struct plugin_method *methods; /* (n_methods) */
    uint32_t n_methods;
    int owes_deinit;               /* init ran and succeeded */
};

static struct loaded_file *loaded(struct plugin_file *f) { return (struct loaded_file *)f; }

// ---------------------------------------------------------------------------------------
// The search path

static void add_dir(struct plugin_registry *r, const char *dir) {
    if (!dir || !*dir) return;
    char *real = realpath(dir, NULL);
    if (!real) return; /* a directory that does not exist is skipped */
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        free(real);
        return;
    }
    for (int32_t i = 0; i < r->n_dirs; i++) {
        if (strcmp(r->dirs[i], real) == 0) {
            free(real);
            return;
        }
    }
    r->dirs = xrealloc(r->dirs, (size_t)(r->n_dirs + 1) * sizeof *r->dirs);
    r->dirs[r->n_dirs++] = real;
}

/* Add every item of a list separated by any of `seps`; blanks around items are ignored. */
static void add_dir_list(struct plugin_registry *r, const char *list, const char *seps) {
    if (!list) return;
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, seps);
        const char *s = p, *e = p + n;
        while (s < e && isspace((unsigned char)*s)) s++;
        while (e > s && isspace((unsigned char)e[-1])) e--;
        if (e > s) {
            char *dir = xstrndup(s, (size_t)(e - s));
            add_dir(r, dir);
            free(dir);
        }
        p += n;
        if (*p) p++;
    }
}

static void add_exe_relative_dir(struct plugin_registry *r) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\0';
    char *bin = path_dirname(exe);
    char *dir = path_join(bin, "../lib/peft/plugins");
    add_dir(r, dir);
#ifdef PEFT_BUILD_EXE_DIR
    /* `peft` run from its build tree (not installed) finds the plugins built beside it. */
    char *real_bin = realpath(bin, NULL), *real_build = realpath(PEFT_BUILD_EXE_DIR, NULL);
    if (real_bin && real_build && strcmp(real_bin, real_build) == 0)
        add_dir_list(r, PEFT_BUILD_PLUGIN_PATH, ":");
    free(real_bin);
    free(real_build);
#endif
    free(dir);
    free(bin);
}

void registry_init(struct plugin_registry *r, const char *extra_dirs) {
    memset(r, 0, sizeof *r);
    add_dir_list(r, extra_dirs, ":,");
    add_dir_list(r, getenv("PEFT_PLUGIN_PATH"), ":");
    add_dir(r, PEFT_PLUGIN_DIR);
    add_exe_relative_dir(r);
}

void registry_free(struct plugin_registry *r) {
    /* deinit in reverse load order; handles stay open (descriptors may still be read by
     * code that outlives the registry, and sanitizers need the mappings at exit). */
    for (int32_t i = r->n_files - 1; i >= 0; i--) {
        struct loaded_file *lf = loaded(r->files[i]);
        if (lf->owes_deinit && lf->pub.entry->deinit) lf->pub.entry->deinit();
        free(lf->pub.path);
        free(lf->methods);
        free(lf);
    }
    for (int32_t i = 0; i < r->n_dirs; i++) free(r->dirs[i]);
    free(r->dirs);
    free(r->files);
    free(r->methods);
    memset(r, 0, sizeof *r);
}

// ---------------------------------------------------------------------------------------
// Keys: types and values

const char *param_type_name(int32_t type) {
    switch (type) {
    case PEFT_PARAM_INT: return "int";
    case PEFT_PARAM_FLOAT: return "float";
    case PEFT_PARAM_BOOL: return "bool";
    case PEFT_PARAM_STRING: return "string";
    case PEFT_PARAM_LIST: return "list";
    case PEFT_PARAM_CHOICE: return "choice";
    case PEFT_PARAM_STAGE: return "stage";
    case PEFT_PARAM_FILES: return "files";
    default: return "unknown";
    }
}

/* The checks below accept exactly what the SDK's peft_kv_int/float/bool read correctly, so
 * a value that passes means the same thing to the host and to the plugin. */
static int text_is_int64(const char *s) {
    if (!(isdigit((unsigned char)s[0]) || ((s[0] == '-' || s[0] == '+') &&
                                            isdigit((unsigned char)s[1]))))
        return 0;
    char *end;
    errno = 0;
    (void)strtoll(s, &end, 10);
    return errno == 0 && *end == '\0';
}

static int text_is_finite(const char *s) {
    if (!*s || isspace((unsigned char)*s)) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    return *end == '\0' && errno != ERANGE && isfinite(v);
}

static int text_is_bool(const char *s) {
    static const char *const words[] = {"true", "false", "yes", "no", "1", "0", "on", "off"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcmp(s, words[i]) == 0) return 1;
    return 0;
}

/* 1 if value is one of the '|'-separated alternatives. */
static int choice_has(const char *choices, const char *value) {
    size_t len = strlen(value);
    for (const char *p = choices; p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

int param_check_value(const peft_param_spec *p, const char *value) {
    if (!value) return err_set("expected a value, got none");
    switch (p->type) {
    case PEFT_PARAM_INT:
        if (!text_is_int64(value)) return err_set("expected an integer, got '%s'", value);
        return 0;
    case PEFT_PARAM_FLOAT:
        if (!text_is_finite(value)) return err_set("expected a finite number, got '%s'", value);
        return 0;
    case PEFT_PARAM_BOOL:
        if (!text_is_bool(value))
            return err_set("expected true/false, yes/no, 1/0 or on/off, got '%s'", value);
        return 0;
    case PEFT_PARAM_CHOICE:
        if (!p->choices || !choice_has(p->choices, value))
            return err_set("expected one of %s, got '%s'", p->choices ? p->choices : "(none)",
                           value);
        return 0;
    case PEFT_PARAM_STRING:
    case PEFT_PARAM_LIST:
    case PEFT_PARAM_STAGE:
    case PEFT_PARAM_FILES: /* existence of files is the run's check, where paths resolve */
        return 0;
    default:
        return err_set("unknown key type %" PRId32, p->type);
    }
}

// ---------------------------------------------------------------------------------------
// Descriptor checks. Each returns -1 with "PATH: ..." set.

static int id_char(char c, int first) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return 1;
    return !first && (c == '_' || c == '.' || c == '-');
}

static int id_is_valid(const char *id) {
    if (!id || !id_char(id[0], 1)) return 0;
    for (const char *p = id + 1; *p; p++)
        if (!id_char(*p, 0)) return 0;
    return 1;
}

/* Key names appear in INI sections and in --set overrides ("stage.NAME.KEY=..."), so no
 * dots, blanks or '='. */
static int key_name_is_valid(const char *name) {
    if (!name || !*name || name[0] == '-') return 0;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') return 0;
    return 1;
}

static int choices_are_valid(const char *choices) {
    if (!choices || !*choices) return 0;
    for (const char *p = choices; p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == 0) return 0;
        p = bar ? bar + 1 : NULL;
    }
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int check_params(const char *path, const peft_method_desc *d) {
    if (d->n_params > 0 && !d->params)
        return err_set("%s: method '%s': n_params is %" PRIu32 " but params is NULL", path,
                       d->id, d->n_params);
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        if (!key_name_is_valid(p->name))
            return err_set("%s: method '%s': key #%" PRIu32 " has no valid name "
                           "(letters, digits, '_' and '-')",
                           path, d->id, i);
        if (host_stage_key(p->name))
            return err_set("%s: method '%s': key '%s' collides with a stage key of the host",
                           path, d->id, p->name);
        if (strcmp(p->name, "stage") == 0)
            return err_set("%s: method '%s': key 'stage' is reserved (the host passes the "
                           "stage's name under it)",
                           path, d->id);
        if (p->type < PEFT_PARAM_INT || p->type > PEFT_PARAM_FILES)
            return err_set("%s: method '%s': key '%s': unknown type %" PRId32, path, d->id,
                           p->name, p->type);
        if (p->type == PEFT_PARAM_CHOICE && !choices_are_valid(p->choices))
            return err_set("%s: method '%s': key '%s': a choice needs choices \"a|b|...\"",
                           path, d->id, p->name);
        if (p->default_value && param_check_value(p, p->default_value) != 0)
            return err_prefix("%s: method '%s': key '%s': bad default", path, d->id, p->name);
    }
    /* Duplicates by sorting the names: a plugin may declare many keys. */
    const char **names = xcalloc((size_t)d->n_params + 1, sizeof *names);
    for (uint32_t i = 0; i < d->n_params; i++) names[i] = d->params[i].name;
    qsort(names, d->n_params, sizeof *names, cmp_str);
    int rc = 0;
    for (uint32_t i = 1; i < d->n_params && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = err_set("%s: method '%s': key '%s' is declared twice", path, d->id, names[i]);
    free(names);
    return rc;
}

static int check_desc(const char *path, uint32_t index, const peft_method_desc *d) {
    if (!d) return err_set("%s: method #%" PRIu32 ": descriptor is NULL", path, index);
    /* stage_defaults came later: a descriptor that stops before them is whole */
    size_t least = offsetof(peft_method_desc, stage_defaults);
    if (d->struct_size < least)
        return err_set("%s: method #%" PRIu32 ": descriptor struct_size %" PRIu32
                       " is smaller than %zu",
                       path, index, d->struct_size, least);
    if (!d->id) return err_set("%s: method #%" PRIu32 ": id is missing", path, index);
    if (!id_is_valid(d->id))
        return err_set("%s: method id '%s' is not of the form [a-z0-9][a-z0-9_.-]*", path,
                       d->id);
    const char *missing = !d->name ? "name" : !d->version ? "version"
                        : !d->description ? "description" : NULL;
    if (missing) return err_set("%s: method '%s': field '%s' is missing", path, d->id, missing);
    const peft_method_vtable *vt = d->vt;
    if (!vt) return err_set("%s: method '%s': vtable is missing", path, d->id);
    /* ABI 1.0's vtable ends before input_forward; later entries are read by PEFT_HAS_FIELD */
    if (vt->struct_size < offsetof(peft_method_vtable, input_forward))
        return err_set("%s: method '%s': vtable struct_size %" PRIu32 " is smaller than %zu",
                       path, d->id, vt->struct_size, offsetof(peft_method_vtable, input_forward));
    if (PEFT_HAS_FIELD(vt, peft_method_vtable, input_forward) &&
        (vt->input_forward == NULL) != (!PEFT_HAS_FIELD(vt, peft_method_vtable, input_backward) ||
                                        vt->input_backward == NULL))
        return err_set("%s: method '%s': input_forward and input_backward come together", path,
                       d->id);
    missing = !vt->create ? "create" : !vt->destroy ? "destroy" : !vt->attach ? "attach" : NULL;
    if (missing)
        return err_set("%s: method '%s': required function '%s' is missing", path, d->id,
                       missing);
    if (check_params(path, d) != 0) return -1;
    uint32_t n_def = method_stage_defaults(d, NULL);
    const peft_kv *def = n_def ? d->stage_defaults : NULL;
    for (uint32_t i = 0; i < n_def; i++) {
        if (!def[i].key || !def[i].value)
            return err_set("%s: method '%s': stage_defaults #%" PRIu32 " has no key or value",
                           path, d->id, i);
        const struct host_key *k = host_key_find("stage", def[i].key);
        if (!k || !(k->flags & HOST_KEY_TRAIN) || strcmp(def[i].key, "method") == 0)
            return err_set("%s: method '%s': stage_defaults: '%s' is not a stage key of the "
                           "host (see peft keys)",
                           path, d->id, def[i].key);
    }
    return 0;
}

uint32_t method_stage_defaults(const peft_method_desc *d, const peft_kv **out) {
    int has = PEFT_HAS_FIELD(d, peft_method_desc, n_stage_defaults) && d->stage_defaults;
    if (out) *out = has ? d->stage_defaults : NULL;
    return has ? d->n_stage_defaults : 0;
}

// ---------------------------------------------------------------------------------------
// Loading

static struct loaded_file *find_file(struct plugin_registry *r, const char *real, void *handle) {
    for (int32_t i = 0; i < r->n_files; i++) {
        struct plugin_file *f = r->files[i];
        if ((real && strcmp(f->path, real) == 0) || (handle && f->handle == handle))
            return loaded(f);
    }
    return NULL;
}

static const struct plugin_method *find_method(struct plugin_registry *r, const char *id) {
    for (int32_t i = 0; i < r->n_files; i++) {
        struct loaded_file *lf = loaded(r->files[i]);
        for (uint32_t j = 0; j < lf->n_methods; j++)
            if (strcmp(lf->methods[j].desc->id, id) == 0) return &lf->methods[j];
    }
    return NULL;
}

static const char *status_name(peft_status s) {
    switch (s) {
    case PEFT_E_INVALID_ARG: return "PEFT_E_INVALID_ARG";
    case PEFT_E_NOMEM: return "PEFT_E_NOMEM";
    case PEFT_E_CONFIG: return "PEFT_E_CONFIG";
    case PEFT_E_SHAPE: return "PEFT_E_SHAPE";
    case PEFT_E_UNSUPPORTED: return "PEFT_E_UNSUPPORTED";
    case PEFT_E_ABI: return "PEFT_E_ABI";
    case PEFT_E_IO: return "PEFT_E_IO";
    case PEFT_E_STATE: return "PEFT_E_STATE";
    case PEFT_E_INTERNAL: return "PEFT_E_INTERNAL";
    default: return "unknown status";
    }
}

/* dlerror() usually starts with the file name; drop it, since our line starts with it. */
static const char *dlerror_reason(const char *real) {
    const char *msg = dlerror();
    if (!msg) return "dlopen failed";
    size_t n = strlen(real);
    if (strncmp(msg, real, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') return msg + n + 2;
    return msg;
}

/* The entry's own checks: everything that can be read without running plugin code. */
static int check_entry(const char *real, const peft_plugin_entry_t *e) {
    uint32_t major = PEFT_ABI_VERSION_MAJOR(e->abi_version), minor = PEFT_ABI_VERSION_MINOR(e->abi_version);
    if (major != PEFT_ABI_MAJOR)
        return err_set("%s: plugin ABI version %" PRIu32 ".%" PRIu32 ", this host runs %u.0 to "
                       "%u.%u: rebuild the plugin against this peftkit's SDK", real, major, minor,
                       PEFT_ABI_MAJOR, PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    if (minor > PEFT_ABI_MINOR)
        return err_set("%s: plugin built for ABI %" PRIu32 ".%" PRIu32 ", newer than this host's "
                       "%u.%u: update peftkit, or rebuild the plugin against this one's SDK", real,
                       major, minor, PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    if (e->struct_size < sizeof *e)
        return err_set("%s: %s.struct_size %" PRIu32 " is smaller than %zu", real,
                       PEFT_PLUGIN_ENTRY_SYMBOL, e->struct_size, sizeof *e);
    if (e->method_count < 1)
        return err_set("%s: %s declares no methods", real, PEFT_PLUGIN_ENTRY_SYMBOL);
    if (e->method_count > MAX_METHODS_PER_FILE)
        return err_set("%s: %s declares %" PRIu32 " methods (at most %u)", real,
                       PEFT_PLUGIN_ENTRY_SYMBOL, e->method_count, MAX_METHODS_PER_FILE);
    if (!e->methods)
        return err_set("%s: %s.methods is NULL", real, PEFT_PLUGIN_ENTRY_SYMBOL);
    return 0;
}

/* Every descriptor, and ids unique against the registry and within the file. */
static int check_methods(struct plugin_registry *r, const char *real,
                         const peft_plugin_entry_t *e) {
    for (uint32_t i = 0; i < e->method_count; i++) {
        const peft_method_desc *d = e->methods[i];
        if (check_desc(real, i, d) != 0) return -1;
        const struct plugin_method *other = find_method(r, d->id);
        if (other)
            return err_set("%s: method id '%s' is already provided by %s", real, d->id,
                           other->file->path);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(e->methods[j]->id, d->id) == 0)
                return err_set("%s: method id '%s' is already provided by %s", real, d->id,
                               real);
    }
    return 0;
}

static void add_file(struct plugin_registry *r, char *real, void *handle,
                     const peft_plugin_entry_t *e, int owes_deinit) {
    struct loaded_file *lf = xcalloc(1, sizeof *lf);
    lf->pub.path = real;
    lf->pub.handle = handle;
    lf->pub.entry = e;
    lf->owes_deinit = owes_deinit;
    lf->n_methods = e->method_count;
    lf->methods = xcalloc(e->method_count, sizeof *lf->methods);
    r->files = xrealloc(r->files, (size_t)(r->n_files + 1) * sizeof *r->files);
    r->files[r->n_files++] = &lf->pub;
    r->methods = xrealloc(r->methods,
                          (size_t)(r->n_methods + (int32_t)e->method_count) * sizeof *r->methods);
    for (uint32_t i = 0; i < e->method_count; i++) {
        lf->methods[i].desc = e->methods[i];
        lf->methods[i].file = &lf->pub;
        r->methods[r->n_methods++] = lf->methods[i];
    }
}

/* Load `path` (or find it already loaded); *out is its record. */
static int load_file(struct plugin_registry *r, const char *path, struct loaded_file **out) {
    char *real = realpath(path, NULL);
    if (!real) return err_set("%s: %s", path, strerror(errno));
    if ((*out = find_file(r, real, NULL))) {
        free(real);
        return 0;
    }
    dlerror();
    void *handle = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        err_set("%s: %s", real, dlerror_reason(real));
        free(real);
        return -1;
    }
    if ((*out = find_file(r, NULL, handle))) { /* the same file under another name */
        free(real);
        return 0;
    }
    /* The entry is data, read before any plugin function runs. */
    const peft_plugin_entry_t *e = dlsym(handle, PEFT_PLUGIN_ENTRY_SYMBOL);
    if (!e) {
        err_set("%s: no entry point '%s'", real, PEFT_PLUGIN_ENTRY_SYMBOL);
        free(real);
        return -1;
    }
    if (check_entry(real, e) != 0) {
        free(real);
        return -1;
    }
    if (e->init) {
        peft_status st = e->init(host_api_table());
        if (st != PEFT_OK) {
            err_set("%s: init failed with status %" PRId32 " (%s)", real, st, status_name(st));
            free(real);
            return -1;
        }
    }
    if (check_methods(r, real, e) != 0) {
        if (e->init && e->deinit) e->deinit(); /* nothing else of it will run */
        free(real);
        return -1;
    }
    add_file(r, real, handle, e, e->init != NULL);
    *out = find_file(r, NULL, handle);
    return 0;
}

int registry_load_file(struct plugin_registry *r, const char *path) {
    struct loaded_file *lf;
    return load_file(r, path, &lf);
}

// ---------------------------------------------------------------------------------------
// Lookup and scan

static int is_path(const char *id) {
    size_t n = strlen(id);
    return strchr(id, '/') != NULL || (n >= 3 && strcmp(id + n - 3, ".so") == 0);
}

char *registry_dirs_text(const struct plugin_registry *r) {
    if (r->n_dirs == 0) return xstrdup("no plugin directory exists");
    size_t len = 1;
    for (int32_t i = 0; i < r->n_dirs; i++) len += strlen(r->dirs[i]) + 2;
    char *s = xmalloc(len);
    s[0] = '\0';
    for (int32_t i = 0; i < r->n_dirs; i++) {
        if (i) strcat(s, ", ");
        strcat(s, r->dirs[i]);
    }
    return s;
}

const struct plugin_method *registry_find(struct plugin_registry *r, const char *id) {
    struct loaded_file *lf;
    if (!id || !*id) {
        err_set("no method given");
        return NULL;
    }
    if (is_path(id)) {
        if (load_file(r, id, &lf) != 0) return NULL;
        return &lf->methods[0];
    }
    const struct plugin_method *m = find_method(r, id);
    if (m) return m;
    for (int32_t i = 0; i < r->n_dirs; i++) {
        char *file = xasprintf("%s/peft-%s.so", r->dirs[i], id);
        if (access(file, F_OK) != 0) {
            free(file);
            continue;
        }
        /* The first file found is the one: a broken or stale file there is reported rather
         * than silently shadowed by a later directory. */
        int rc = load_file(r, file, &lf);
        free(file);
        if (rc != 0) return NULL;
        if ((m = find_method(r, id))) return m;
        err_set("%s: does not provide method '%s' (it provides '%s')", lf->pub.path, id,
                lf->methods[0].desc->id);
        return NULL;
    }
    /* Not found: name the methods there are, and the nearest one. */
    registry_scan(r, NULL, NULL);
    const char **ids = xcalloc((size_t)r->n_methods + 1, sizeof *ids);
    struct strbuf found = {0};
    for (int32_t i = 0; i < r->n_methods; i++) {
        ids[i] = r->methods[i].desc->id;
        sb_printf(&found, "%s%s", i ? ", " : "", ids[i]);
    }
    const char *near = nearest_name(id, ids, (size_t)r->n_methods);
    char *dirs = registry_dirs_text(r);
    if (r->n_methods == 0)
        err_set("unknown method '%s': no method plugin found (searched: %s)", id, dirs);
    else if (near)
        err_set("unknown method '%s': did you mean '%s'? (methods found: %s; searched: %s)", id,
                near, found.s, dirs);
    else
        err_set("unknown method '%s' (methods found: %s; searched: %s)", id, found.s, dirs);
    free(dirs);
    free(ids);
    sb_free(&found);
    return NULL;
}

static int is_plugin_name(const char *name) {
    size_t n = strlen(name);
    return n > strlen("peft-.so") && strncmp(name, "peft-", 5) == 0 &&
           strcmp(name + n - 3, ".so") == 0;
}


void registry_scan(struct plugin_registry *r, void (*on_refused)(void *ctx, const char *line),
                   void *ctx) {
    for (int32_t i = 0; i < r->n_dirs; i++) {
        DIR *d = opendir(r->dirs[i]);
        if (!d) continue;
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!is_plugin_name(de->d_name)) continue;
            names = xrealloc(names, (n + 1) * sizeof *names);
            names[n++] = xstrdup(de->d_name);
        }
        closedir(d);
        if (n > 1) qsort(names, n, sizeof *names, cmp_str);
        for (size_t k = 0; k < n; k++) {
            char *file = path_join(r->dirs[i], names[k]);
            struct stat st;
            if (stat(file, &st) == 0 && S_ISREG(st.st_mode) &&
                registry_load_file(r, file) != 0 && on_refused)
                on_refused(ctx, err_msg());
            free(file);
            free(names[k]);
        }
        free(names);
    }
}

int plugin_has_feature(const struct plugin_method *pm, const char *tag) {
    for (const char *const *f = pm ? pm->desc->features : NULL; f && *f; f++)
        if (strcmp(*f, tag) == 0) return 1;
    return 0;
}
