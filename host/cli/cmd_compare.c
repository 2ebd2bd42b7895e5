/* cmd_compare.c: peft compare FILE.ini: the arms of an A/B comparison and their report. */
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "report/report.h"

static int compare_cmd_main(int argc, char **argv) {
    const char *file = NULL, *plugin_path = NULL;
    int64_t jobs = 0;
    int32_t resume = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) {
            if (parse_i64(argv[++i], &jobs) || jobs < 1 || jobs > 64) {
                err_set("compare: --jobs: expected 1..64, got '%s'", argv[i]);
                return cli_fail();
            }
        } else if (strcmp(argv[i], "--resume") == 0) {
            resume = 1;
        } else if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc) {
            plugin_path = argv[++i];
        } else if (argv[i][0] == '-' || file) {
            return cli_unexpected(&cmd_compare, argv[i]);
        } else {
            file = argv[i];
        }
    }
    if (!file) {
        err_set("compare: no compare file given (usage: peft compare %s)", cmd_compare.args);
        return cli_fail();
    }
    return compare_main(file, (int32_t)jobs, resume, plugin_path);
}

const struct command cmd_compare = {
    "compare", "FILE.ini [--jobs N] [--resume] [--plugin-path DIRS]",
    "Run the arms of an A/B comparison and write its report, table and plots.",
    "The arms run on the same model, data, seed and step budget; report.md, results.csv and\n"
    "SVG plots go to [compare] out.\n"
    "FILE.ini is a run file plus [compare] (out, jobs, seeds, baseline, alpha) and one\n"
    "[arm.NAME] section per arm, whose keys override the run file's stage keys (e.g.\n"
    "stage.adapt.method = lota; a value of !unset takes the key out). Stages identical in\n"
    "every arm are trained once. With\n"
    "seeds = 1 2 3 each arm runs once per seed, figures are mean +- sd, and each arm is\n"
    "tested against the baseline arm (paired t and sign-flip p-values; a star only where\n"
    "both are below alpha). The exit status is 1 when an arm failed.\n"
    "\n"
    "options:\n"
    "  --jobs N            arms run at once as child processes (1..64; default [compare] jobs)\n"
    "  --resume            continue interrupted arms; complete arms are not run again\n"
    "  --plugin-path DIRS  folders searched first for method plugins (':'-separated)\n"
    "  -h, --help          this help\n"
    "\n"
    "example:\n"
    "  peft compare conf/compare/lora_vs_full.ini --jobs 2\n",
    compare_cmd_main};
