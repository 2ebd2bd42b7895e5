/*
 * plugin_loader.h: finding, loading and checking method plugins.
 *
 * Search path, in precedence order: directories given by the run ([run] plugin_path, or the
 * --plugin-path flag), the PEFT_PLUGIN_PATH environment variable (':'-separated), the install
 * directory PEFT_PLUGIN_DIR (from meson), and <exe dir>/../lib/peft/plugins. `method = ID`
 * loads the first file peft-ID.so found; `method = /path/x.so` loads that file.
 *
 * Loading: dlopen(RTLD_NOW | RTLD_LOCAL), dlsym("peft_plugin_entry"), ABI version and struct
 * size checked before any plugin code runs, then init(), then every descriptor is checked
 * (required vtable entries, id syntax, unique ids, key schema). A refusal is one line:
 * "PATH: reason" (both versions for a mismatch). Handles are never dlclosed (plugin threads,
 * sanitizer reports), as SQLite's "load permanently".
 */
#ifndef PEFT_PLUGIN_LOADER_H
#define PEFT_PLUGIN_LOADER_H

#include <stdint.h>

#include "peft/peft_plugin.h"

struct plugin_file {
    char *path;                      /* as resolved (realpath) */
    void *handle;
    const peft_plugin_entry_t *entry;
};

struct plugin_method {
    const peft_method_desc *desc;
    const struct plugin_file *file;
};

struct plugin_registry {
    char **dirs;
    int32_t n_dirs;
    struct plugin_file **files;
    int32_t n_files;
    struct plugin_method *methods;
    int32_t n_methods;
};

/* Build the search path. extra_dirs: ':'- or ','-separated list, or NULL. */
void registry_init(struct plugin_registry *r, const char *extra_dirs);
void registry_free(struct plugin_registry *r);
/* Load one file (idempotent per realpath). -1 with "PATH: reason". */
int registry_load_file(struct plugin_registry *r, const char *path);
/* The method `id` (a plugin id, or a path to a .so), loading peft-ID.so from the search path
 * if needed. NULL with "unknown method 'ID' (searched: DIRS)" or the load error. */
const struct plugin_method *registry_find(struct plugin_registry *r, const char *id);
/* Load every peft-*.so in the search path. Refusals are passed to on_refused (one line each)
 * and do not stop the scan. */
void registry_scan(struct plugin_registry *r, void (*on_refused)(void *ctx, const char *line),
                   void *ctx);
/* The search path as "DIR, DIR" for messages, or "no plugin directory exists". Caller
 * frees. */
char *registry_dirs_text(const struct plugin_registry *r);
/* Does pm's descriptor list the feature tag (PEFT_FEATURE_*)? */
int plugin_has_feature(const struct plugin_method *pm, const char *tag);
/* The method's recommended values of host stage keys (none for a descriptor older than the
 * field): their count, and the array into *out when out is not NULL. */
uint32_t method_stage_defaults(const peft_method_desc *d, const peft_kv **out);
/* Human name of a PEFT_PARAM_* type ("int", "float", ...). */
const char *param_type_name(int32_t type);
/* Check value text against a key's type. -1 with "expected ..., got '...'" (no place). */
int param_check_value(const peft_param_spec *p, const char *value);

#endif
