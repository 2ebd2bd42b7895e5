/* cmd_data.c: peft data: the built-in synthetic tasks, listed or written as JSONL. */
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "data/data.h"

static int data_main(int argc, char **argv) {
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
                return cli_fail();
            }
        } else if (strcmp(a, "--n") == 0 && v) {
            i++;
            if (parse_i64(v, &n) || n < 1 || n > 100000000) {
                err_set("data: --n: expected a positive count, got '%s'", v);
                return cli_fail();
            }
        } else if (strcmp(a, "--seed") == 0 && v) {
            i++;
            if (parse_i64(v, &seed) || seed < 0) {
                err_set("data: --seed: expected a non-negative integer, got '%s'", v);
                return cli_fail();
            }
        } else {
            return cli_unexpected(&cmd_data, a);
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
        err_set("data: give --list, or --tasks and --out (peft data --help)");
        return cli_fail();
    }
    struct words w;
    words_split(&w, tasks);
    struct dataset d = {0};
    struct task_table tt = {0};
    int rc = 0;
    for (int i = 0; i < w.n && rc == 0; i++)
        rc = synth_generate(w.v[i], (uint64_t)seed, strcmp(split, "eval") == 0, (int32_t)n, &d, &tt);
    if (rc == 0) rc = data_save_jsonl(out, &d, &tt);
    if (rc == 0 && strcmp(out, "-") != 0) /* with "-" stdout is the data alone */
        printf("wrote %zu examples of %d tasks to %s\n", d.n, w.n, out);
    words_free(&w);
    dataset_free(&d);
    task_table_free(&tt);
    return rc ? cli_fail() : 0;
}

const struct command cmd_data = {
    "data", "--list | --tasks T1,T2 --out FILE [--n N] [--split train|eval] [--seed S]",
    "List the built-in synthetic tasks, or write examples of some of them as JSONL.",
    "Each line of the JSONL file is {\"task\": ..., \"prompt\": ..., \"completion\": ...}, the\n"
    "format [data] files = ... reads. The same seed gives the same examples.\n"
    "\n"
    "options:\n"
    "  --list              the tasks: name, kind, description\n"
    "  --tasks T1,T2       tasks to write (comma- or space-separated)\n"
    "  --out FILE          the JSONL file to write (- for standard output)\n"
    "  --n N               examples per task (default 100)\n"
    "  --split train|eval  the training or the held-out stream (default train)\n"
    "  --seed S            seed of the examples (default 1)\n"
    "  -h, --help          this help\n"
    "\n"
    "example:\n"
    "  peft data --tasks reverse,add --n 500 --out data/train.jsonl\n",
    data_main};
