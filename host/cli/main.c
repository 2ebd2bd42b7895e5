/* main.c: the `peft` command line. Exit status: 0 done, 2 bad input (one line on stderr
 * naming the file and the place), 1 out of memory or an internal failure. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "data/data.h"
#include "inspect.h"
#include "methods/methods.h"
#include "plugins_cmd.h"
#include "run/run.h"

static const char *usage =
    "usage: peft COMMAND ...\n"
    "\n"
    "  peft run FILE.ini [--set section.key=value]... [--resume] [--plugin-path DIRS] [--quiet]\n"
    "      run the chain of stages FILE.ini describes; outputs go to [run] out\n"
    "  peft compare FILE.ini [--jobs N] [--resume] [--plugin-path DIRS]\n"
    "      run the arms of an A/B comparison; report.md, results.csv and plots in [compare] out\n"
    "  peft plugins [ID] [--plugin-path DIRS]\n"
    "      list the method plugins found, or show one method's keys\n"
    "  peft data --list | --tasks T1,T2 [--n N] [--split train|eval] [--seed S] --out FILE\n"
    "      list the built-in synthetic tasks, or write some of them as JSONL\n"
    "  peft export ADAPTER|STAGE_DIR OUT_DIR [--base-model NAME] [--plugin-path DIRS]\n"
    "      write a LoRA adapter as an HF PEFT folder (adapter_config.json, adapter_model.safetensors)\n"
    "  peft import HF_DIR OUT.safetensors [--plugin-path DIRS]\n"
    "      read an HF PEFT LoRA folder into an adapter file of method lora\n"
    "  peft inspect FILE|DIR\n"
    "      print the tensors (name, dtype, shape, bytes) and metadata of a safetensors file\n"
    "  peft version\n";

/* The error line (several for a run file with several problems), each as "peft: LINE". */
static int fail(void) {
    const char *m = err_msg();
    for (const char *nl; (nl = strchr(m, '\n')); m = nl + 1)
        fprintf(stderr, "peft: %.*s\n", (int)(nl - m), m);
    fprintf(stderr, "peft: %s\n", m);
    return 2;
}

static int cmd_run(int argc, char **argv) {
    const char *ini = NULL, *plugin_path = NULL;
    char **sets = xcalloc((size_t)argc + 1, sizeof *sets);
    int32_t n_sets = 0, resume = 0, quiet = 0;
    int64_t stop_after = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--set") == 0 && i + 1 < argc)
            sets[n_sets++] = argv[++i];
        else if (strncmp(a, "--set=", 6) == 0)
            sets[n_sets++] = argv[i] + 6;
        else if (strcmp(a, "--resume") == 0)
            resume = 1;
        else if (strcmp(a, "--quiet") == 0)
            quiet = 1;
        else if (strcmp(a, "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (strcmp(a, "--stop-after") == 0 && i + 1 < argc) {
            if (parse_i64(argv[++i], &stop_after) || stop_after < 1) {
                free(sets);
                err_set("--stop-after: expected a positive step count, got '%s'", argv[i]);
                return fail();
            }
        } else if (a[0] == '-' || ini) {
            free(sets);
            err_set("run: unexpected argument '%s'", a);
            fprintf(stderr, "%s", usage);
            return fail();
        } else
            ini = a;
    }
    if (!ini) {
        free(sets);
        fprintf(stderr, "%s", usage);
        err_set("run: no run file given");
        return fail();
    }
    struct run r;
    if (run_load(&r, ini, sets, n_sets, plugin_path)) {
        free(sets);
        int code = fail();
        run_free(&r);
        return code;
    }
    free(sets);
    r.resume = resume;
    r.quiet = quiet;
    r.stop_after = stop_after;
    if (r.threads > 0) openblas_set_num_threads(r.threads);
    int code = run_execute(&r) ? fail() : 0;
    if (code == 0 && !quiet) printf("outputs in %s\n", r.out_dir);
    run_free(&r);
    return code;
}

static int cmd_compare(int argc, char **argv) {
    const char *file = NULL, *plugin_path = NULL;
    int64_t jobs = 0;
    int32_t resume = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
            if (parse_i64(argv[++i], &jobs) || jobs < 1 || jobs > 64) {
                err_set("compare: --jobs: expected 1..64, got '%s'", argv[i]);
                return fail();
            }
        } else if (strcmp(argv[i], "--resume") == 0) {
            resume = 1;
        } else if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc) {
            plugin_path = argv[++i];
        } else if (argv[i][0] == '-' || file) {
            err_set("compare: unexpected argument '%s'", argv[i]);
            return fail();
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        err_set("compare: no compare file given");
        return fail();
    }
    return compare_main(file, (int32_t)jobs, resume, plugin_path);
}

static int cmd_plugins(int argc, char **argv) {
    const char *id = NULL, *plugin_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (argv[i][0] == '-' || id) {
            err_set("plugins: unexpected argument '%s'", argv[i]);
            return fail();
        } else
            id = argv[i];
    }
    struct plugin_registry reg;
    registry_init(&reg, plugin_path);
    int rc = id ? plugins_show(&reg, id, stdout) : plugins_list(&reg, stdout, stderr);
    registry_free(&reg);
    return rc ? fail() : 0;
}

static int cmd_data(int argc, char **argv) {
    const char *tasks = NULL, *out = NULL, *split = "train";
    int64_t n = 100, seed = 1;
    int list = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--list") == 0) {
            list = 1;
        } else if (strcmp(a, "--tasks") == 0 && v) {
            tasks = v, i++;
        } else if (strcmp(a, "--out") == 0 && v) {
            out = v, i++;
        } else if (strcmp(a, "--split") == 0 && v) {
            split = v, i++;
            if (strcmp(split, "train") && strcmp(split, "eval")) {
                err_set("data: --split: expected train or eval, got '%s'", split);
                return fail();
            }
        } else if (strcmp(a, "--n") == 0 && v) {
            i++;
            if (parse_i64(v, &n) || n < 1 || n > 100000000) {
                err_set("data: --n: expected a positive count, got '%s'", v);
                return fail();
            }
        } else if (strcmp(a, "--seed") == 0 && v) {
            i++;
            if (parse_i64(v, &seed) || seed < 0) {
                err_set("data: --seed: expected a non-negative integer, got '%s'", v);
                return fail();
            }
        } else {
            err_set("data: unexpected argument '%s'", a);
            return fail();
        }
    }
    if (list) {
        for (int32_t i = 0; i < synth_count(); i++) {
            const struct synth_task_info *t = synth_info(i);
            printf("%-12s %-15s %s\n", t->name, t->kind, t->description);
        }
        return 0;
    }
    if (!tasks || !out) {
        err_set("data: give --list, or --tasks and --out");
        return fail();
    }
    struct words w;
    words_split(&w, tasks);
    struct dataset d = {0};
    struct task_table tt = {0};
    int rc = 0;
    for (int i = 0; i < w.n && rc == 0; i++)
        rc = synth_generate(w.v[i], (uint64_t)seed, strcmp(split, "eval") == 0, (int32_t)n, &d, &tt);
    if (rc == 0) rc = data_save_jsonl(out, &d, &tt);
    if (rc == 0) printf("wrote %zu examples of %d tasks to %s\n", d.n, w.n, out);
    words_free(&w);
    dataset_free(&d);
    task_table_free(&tt);
    return rc ? fail() : 0;
}

/* export / import: two positional arguments and the flags each takes. */
static int cmd_hf(int argc, char **argv, int export) {
    const char *pos[2] = {NULL, NULL}, *plugin_path = NULL, *base_model = NULL;
    int n_pos = 0;
    const char *name = export ? "export" : "import";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc) {
            plugin_path = argv[++i];
        } else if (export && strcmp(argv[i], "--base-model") == 0 && i + 1 < argc) {
            base_model = argv[++i];
        } else if (argv[i][0] == '-' || n_pos == 2) {
            err_set("%s: unexpected argument '%s'", name, argv[i]);
            return fail();
        } else {
            pos[n_pos++] = argv[i];
        }
    }
    if (n_pos != 2) {
        err_set(export ? "export: give an adapter file (or stage folder) and an output folder"
                       : "import: give an HF PEFT folder and an output .safetensors file");
        return fail();
    }
    struct plugin_registry reg;
    registry_init(&reg, plugin_path);
    int rc = export ? peft_export(&reg, pos[0], pos[1], base_model) : peft_import(&reg, pos[0], pos[1]);
    registry_free(&reg);
    if (rc) return fail();
    printf("wrote %s\n", pos[1]);
    return 0;
}

static int cmd_inspect(int argc, char **argv) {
    if (argc != 1 || argv[0][0] == '-') {
        err_set("inspect: give one safetensors file (or a folder holding one)");
        return fail();
    }
    return peft_inspect(argv[0], stdout) ? fail() : 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "plugins") == 0) return cmd_plugins(argc - 2, argv + 2);
    if (strcmp(cmd, "compare") == 0) return cmd_compare(argc - 2, argv + 2);
    if (strcmp(cmd, "data") == 0) return cmd_data(argc - 2, argv + 2);
    if (strcmp(cmd, "export") == 0) return cmd_hf(argc - 2, argv + 2, 1);
    if (strcmp(cmd, "import") == 0) return cmd_hf(argc - 2, argv + 2, 0);
    if (strcmp(cmd, "inspect") == 0) return cmd_inspect(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("peft %s (plugin ABI %u)\n", PEFT_VERSION, PEFT_ABI_VERSION);
        return 0;
    }
    err_set("unknown command '%s' (commands: run, compare, plugins, data, export, import, "
            "inspect, version)", cmd);
    fprintf(stderr, "%s", usage);
    return fail();
}
