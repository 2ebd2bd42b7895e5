/* cmd_plugins.c: peft plugins [ID]: the method plugins found, or one method's keys, as text
 * (plugins_cmd.h). */
#include "plugins_cmd.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"

/* Length of the first line of s (descriptions and help are meant to be one line). */
static int first_line_len(const char *s) {
    return s ? (int)strcspn(s, "\r\n") : 0;
}

static int max_int(int a, int b) { return a > b ? a : b; }

struct refusal_sink {
    FILE *err;
    int n;
};

static void print_refusal(void *ctx, const char *line) {
    struct refusal_sink *s = ctx;
    fprintf(s->err, "peft: %s\n", line);
    s->n++;
}

static int cmp_method_id(const void *a, const void *b) {
    const struct plugin_method *x = *(const struct plugin_method *const *)a;
    const struct plugin_method *y = *(const struct plugin_method *const *)b;
    return strcmp(x->desc->id, y->desc->id);
}

static int list_methods(struct plugin_registry *r, FILE *out, FILE *err) {
    struct refusal_sink sink = {err, 0};
    registry_scan(r, print_refusal, &sink);
    if (r->n_methods == 0) {
        char *dirs = registry_dirs_text(r);
        if (r->n_dirs == 0) err_set("no method plugins found: %s", dirs);
        else err_set("no method plugins found (searched: %s)", dirs);
        free(dirs);
        return -1;
    }

    const struct plugin_method **m = xmalloc((size_t)r->n_methods * sizeof *m);
    int w_id = (int)strlen("ID"), w_ver = (int)strlen("VERSION"), w_file = (int)strlen("FILE");
    for (int32_t i = 0; i < r->n_methods; i++) {
        m[i] = &r->methods[i];
        w_id = max_int(w_id, (int)strlen(m[i]->desc->id));
        w_ver = max_int(w_ver, (int)strlen(m[i]->desc->version));
        w_file = max_int(w_file, (int)strlen(m[i]->file->path));
    }
    qsort(m, (size_t)r->n_methods, sizeof *m, cmp_method_id);

    fprintf(out, "%-*s  %-*s  %-4s  %-*s  %s\n", w_id, "ID", w_ver, "VERSION", "ABI", w_file,
            "FILE", "DESCRIPTION");
    for (int32_t i = 0; i < r->n_methods; i++) {
        const peft_method_desc *d = m[i]->desc;
        uint32_t abi = m[i]->file->entry->abi_version;
        fprintf(out, "%-*s  %-*s  %u.%-2u  %-*s  %.*s\n", w_id, d->id, w_ver, d->version,
                PEFT_ABI_VERSION_MAJOR(abi), PEFT_ABI_VERSION_MINOR(abi), w_file, m[i]->file->path,
                first_line_len(d->description), d->description);
    }
    free(m);
    return 0;
}

/* "int", or "choice (a|b|c)" */
static char *type_text(const peft_param_spec *p) {
    if (p->type == PEFT_PARAM_CHOICE && p->choices)
        return xasprintf("%s (%s)", param_type_name(p->type), p->choices);
    return xstrdup(param_type_name(p->type));
}

/* Quote a default that would otherwise be invisible or ambiguous (empty, or with blanks). */
static void print_default(FILE *out, const char *v) {
    if (!v) {
        fputs("required", out);
    } else if (!*v || strpbrk(v, " \t,")) {
        fprintf(out, "default \"%s\"", v);
    } else {
        fprintf(out, "default %s", v);
    }
}

static int show_method(struct plugin_registry *r, const char *id, FILE *out) {
    const struct plugin_method *pm = registry_find(r, id);
    if (!pm) return -1;
    const peft_method_desc *d = pm->desc;

    fprintf(out, "id           %s\n", d->id);
    fprintf(out, "name         %s\n", d->name);
    fprintf(out, "version      %s\n", d->version);
    fprintf(out, "file         %s\n", pm->file->path);
    fprintf(out, "abi          %u.%u\n", PEFT_ABI_VERSION_MAJOR(pm->file->entry->abi_version),
            PEFT_ABI_VERSION_MINOR(pm->file->entry->abi_version));
    fputs("features     ", out);
    if (!d->features || !d->features[0]) fputs("none", out);
    for (int i = 0; d->features && d->features[i]; i++)
        fprintf(out, "%s%s", i ? ", " : "", d->features[i]);
    fputc('\n', out);
    fprintf(out, "description  %.*s\n", first_line_len(d->description), d->description);
    const char *license = PEFT_HAS_FIELD(d, peft_method_desc, license) ? d->license : NULL;
    const char *url = PEFT_HAS_FIELD(d, peft_method_desc, url) ? d->url : NULL;
    if (license) fprintf(out, "license      %.*s\n", first_line_len(license), license);
    if (url) fprintf(out, "url          %.*s\n", first_line_len(url), url);
    const peft_kv *defaults;
    uint32_t n_defaults = method_stage_defaults(d, &defaults);
    if (n_defaults) {
        fprintf(out, "\nstage keys this method sets unless the stage does (see peft keys):\n ");
        for (uint32_t i = 0; i < n_defaults; i++)
            fprintf(out, " %s = %s%s", defaults[i].key, defaults[i].value,
                    i + 1 < n_defaults ? "," : "\n");
    }

    if (d->n_params == 0) {
        fprintf(out, "\nkeys: none besides the stage keys\n");
        return 0;
    }
    int w_name = 0, w_type = 0;
    char **types = xmalloc(d->n_params * sizeof *types);
    for (uint32_t i = 0; i < d->n_params; i++) {
        types[i] = type_text(&d->params[i]);
        w_name = max_int(w_name, (int)strlen(d->params[i].name));
        w_type = max_int(w_type, (int)strlen(types[i]));
    }
    fprintf(out, "\nkeys (in a [stage.NAME] section with method = %s):\n", d->id);
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        fprintf(out, "  %-*s  %-*s  ", w_name, p->name, w_type, types[i]);
        print_default(out, p->default_value);
        fputc('\n', out);
        if (p->help && *p->help)
            fprintf(out, "  %-*s  %.*s\n", w_name, "", first_line_len(p->help), p->help);
        free(types[i]);
    }
    free(types);
    return 0;
}

/* A plugin's strings reach the terminal: its text is printed with control bytes (an escape
 * sequence, a carriage return) shown as '?', so a plugin cannot rewrite the screen. */
static void put_clean(FILE *out, const char *text, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        fputc((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f ? '?' : c, out);
    }
}

int plugins_list(struct plugin_registry *r, FILE *out, FILE *err) {
    char *text = NULL, *errs = NULL;
    size_t len = 0, elen = 0;
    FILE *mem = open_memstream(&text, &len), *emem = open_memstream(&errs, &elen);
    if (!mem || !emem) return err_set("out of memory");
    int rc = list_methods(r, mem, emem);
    fclose(mem);
    fclose(emem);
    put_clean(out, text, len);
    put_clean(err, errs, elen);
    free(text);
    free(errs);
    return rc;
}

int plugins_show(struct plugin_registry *r, const char *id, FILE *out) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) return err_set("out of memory");
    int rc = show_method(r, id, mem);
    fclose(mem);
    put_clean(out, text, len);
    free(text);
    return rc;
}

/* ---- the command ---------------------------------------------------------------- */

static int plugins_main(int argc, char **argv) {
    const char *id = NULL, *plugin_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (argv[i][0] == '-' || id)
            return cli_unexpected(&cmd_plugins, argv[i]);
        else
            id = argv[i];
    }
    struct plugin_registry reg;
    registry_init(&reg, plugin_path);
    int rc = id ? plugins_show(&reg, id, stdout) : plugins_list(&reg, stdout, stderr);
    registry_free(&reg);
    return rc ? cli_fail() : 0;
}

const struct command cmd_plugins = {
    "plugins", "[ID | FILE.so] [--plugin-path DIRS]",
    "List the method plugins found, or show one method and its keys.",
    "The list gives each method's id, version, ABI and file; one method's page its\n"
    "description, features and every key with type, default and help.\n"
    "Plugins are found in --plugin-path, [run] plugin_path, PEFT_PLUGIN_PATH, the install\n"
    "folder and, for a peft run from its build tree, the plugins built beside it. Files that\n"
    "are refused are listed with the reason. The host's own keys: peft keys.\n"
    "\n"
    "options:\n"
    "  --plugin-path DIRS  folders searched first (':'-separated)\n"
    "  -h, --help          this help\n"
    "\n"
    "examples:\n"
    "  peft plugins\n"
    "  peft plugins lora\n",
    plugins_main};
