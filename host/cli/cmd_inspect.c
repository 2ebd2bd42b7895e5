/* cmd_inspect.c: peft inspect FILE|DIR: what a safetensors file holds (inspect.h). */
#include "inspect.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "peft/peft_plugin.h"
#include "core/core.h"
#include "io/io.h"

/* A metadata value: JSON objects and arrays indented under the key, anything else inline. */
static void print_value(FILE *out, const char *key, const char *value) {
    cJSON *j = (value[0] == '{' || value[0] == '[') ? cJSON_Parse(value) : NULL;
    if (!j) {
        fprintf(out, "  %s: %s\n", key, value);
        return;
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    fprintf(out, "  %s:\n    ", key);
    for (const char *p = text; *p; p++) {
        if (*p == '\t' && p > text && p[-1] == ':')
            fputc(' ', out); /* "key":<tab>value */
        else if (*p == '\t')
            fputs("  ", out);
        else if (*p == '\n')
            fputs("\n    ", out);
        else
            fputc(*p, out);
    }
    fputc('\n', out);
    cJSON_free(text);
}

static int cmp_begin(const void *a, const void *b) {
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static char *pick_file(const char *dir, FILE *out) {
    static const char *const names[] = {"adapter.safetensors", "adapter_model.safetensors",
                                        "task_vector.safetensors", "model.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = path_join(dir, names[i]);
        if (file_exists(p)) {
            char *cfg = path_join(dir, "adapter_config.json"), *text;
            size_t len;
            if (i == 1 && file_read_all(cfg, &text, &len) == 0) {
                fprintf(out, "%s:\n%s%s", cfg, text, len && text[len - 1] == '\n' ? "" : "\n");
                free(text);
            }
            err_clear();
            free(cfg);
            return p;
        }
        free(p);
    }
    err_set("%s: a folder without adapter.safetensors, adapter_model.safetensors, "
            "task_vector.safetensors or model.safetensors",
            dir);
    return NULL;
}

int peft_inspect(const char *path, FILE *out) {
    char *file = dir_exists(path) ? pick_file(path, out) : xstrdup(path);
    if (!file) return -1;
    struct st_file f;
    if (st_open(&f, file)) {
        free(file);
        return -1;
    }
    free(file);
    size_t header = (size_t)(f.data - f.map);
    fprintf(out, "file      %s\n", f.path);
    fprintf(out, "size      %zu bytes (header %zu, data %zu)\n", f.size, header, f.size - header);
    const char *id = st_meta(&f, "peft.method");
    if (id) {
        const char *ver = st_meta(&f, "peft.method_version"),
                   *abi = st_meta(&f, "peft.abi_version");
        fprintf(out, "adapter   method %s %s, plugin ABI %s (this peft: ABI %u.%u)\n", id,
                ver ? ver : "?", abi ? abi : "?", PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    } else if (st_meta(&f, "peft.kind")) {
        fprintf(out, "kind      %s\n", st_meta(&f, "peft.kind"));
    }
    fprintf(out, "metadata  %d entries\n", f.n_meta);
    for (int32_t i = 0; i < f.n_meta; i++) print_value(out, f.meta_keys[i], f.meta_values[i]);
    const struct st_tensor **order = xcalloc((size_t)f.n_tensors + 1, sizeof *order);
    int w_name = 4, w_shape = 5;
    char shape[128];
    for (int32_t i = 0; i < f.n_tensors; i++) {
        order[i] = &f.tensors[i];
        int n = (int)strlen(f.tensors[i].name);
        w_name = n > w_name ? n : w_name;
        st_shape_text(shape, sizeof shape, f.tensors[i].ndim, f.tensors[i].shape);
        n = (int)strlen(shape);
        w_shape = n > w_shape ? n : w_shape;
    }
    qsort(order, (size_t)f.n_tensors, sizeof *order, cmp_begin);
    uint64_t total = 0;
    for (int32_t i = 0; i < f.n_tensors; i++) total += order[i]->end - order[i]->begin;
    fprintf(out, "tensors   %d, %llu bytes\n", f.n_tensors, (unsigned long long)total);
    fprintf(out, "  %-*s  %-5s  %-*s  %s\n", w_name, "name", "dtype", w_shape, "shape", "bytes");
    for (int32_t i = 0; i < f.n_tensors; i++) {
        const struct st_tensor *t = order[i];
        st_shape_text(shape, sizeof shape, t->ndim, t->shape);
        fprintf(out, "  %-*s  %-5s  %-*s  %llu\n", w_name, t->name, st_dtype_name(t->dtype),
                w_shape, shape, (unsigned long long)(t->end - t->begin));
    }
    free(order);
    st_close(&f);
    return 0;
}

/* ---- the command ---------------------------------------------------------------- */

static int inspect_main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--diff") == 0 && argv[0][0] != '-' && argv[2][0] != '-')
        return peft_inspect_diff(argv[0], argv[2], stdout) ? cli_fail() : 0;
    if (argc != 1) {
        if (argc > 1 && strcmp(argv[1], "--diff") == 0 && argc == 2) {
            err_set("inspect: --diff: give the second file");
            return cli_fail();
        }
        if (argc > 1) return cli_unexpected(&cmd_inspect, argv[argc > 3 ? 3 : 1]);
        err_set("inspect: give one safetensors file (or a folder holding one)");
        return cli_fail();
    }
    if (argv[0][0] == '-') return cli_unexpected(&cmd_inspect, argv[0]);
    return peft_inspect(argv[0], stdout) ? cli_fail() : 0;
}

const struct command cmd_inspect = {
    "inspect", "FILE.safetensors | DIR   or   A.safetensors --diff B.safetensors",
    "Print the tensors and the metadata of a safetensors file, or how far two files differ.",
    "Each tensor: name, dtype, shape, bytes. For an adapter it also says which method and plugin ABI wrote it. A folder is searched\n"
    "for adapter.safetensors, adapter_model.safetensors (with its adapter_config.json),\n"
    "task_vector.safetensors or model.safetensors, in that order.\n"
    "With --diff, one line per tensor of A: the largest |A - B| of its entries and that\n"
    "relative to the largest |A|, then the largest of both over all tensors (the files must\n"
    "hold the same tensor names and shapes).\n"
    "\n"
    "options:\n"
    "  --diff B    compare with B instead of listing\n"
    "  -h, --help  this help\n"
    "\n"
    "examples:\n"
    "  peft inspect runs/quickstart/adapt/adapter.safetensors\n"
    "  peft inspect one/adapt/adapter.safetensors --diff two/adapt/adapter.safetensors\n",
    inspect_main};
