/* cmd_run.c: peft run FILE.ini: check the whole run file, then run its chain of stages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "run/run.h"

static int run_main(int argc, char **argv) {
    const char *ini = NULL, *plugin_path = NULL;
    char **sets = xcalloc((size_t)argc + 1, sizeof *sets);
    int32_t n_sets = 0, resume = 0, restart = 0, quiet = 0;
    int64_t stop_after = 0;
    int code = 0;
    for (int i = 0; i < argc && code == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--set") == 0 && i + 1 < argc)
            sets[n_sets++] = argv[++i];
        else if (strncmp(a, "--set=", 6) == 0)
            sets[n_sets++] = argv[i] + 6;
        else if (strcmp(a, "--resume") == 0)
            resume = 1;
        else if (strcmp(a, "--restart") == 0)
            restart = 1;
        else if (strcmp(a, "--quiet") == 0)
            quiet = 1;
        else if (strcmp(a, "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (strcmp(a, "--stop-after") == 0 && i + 1 < argc) {
            if (parse_i64(argv[++i], &stop_after) || stop_after < 1) {
                err_set("run: --stop-after: expected a positive step count, got '%s'", argv[i]);
                code = cli_fail();
            }
        } else if (a[0] == '-' || ini)
            code = cli_unexpected(&cmd_run, a);
        else
            ini = a;
    }
    if (code == 0 && resume && restart) {
        err_set("run: --resume and --restart exclude each other");
        code = cli_fail();
    }
    if (code == 0 && !ini) {
        err_set("run: no run file given (usage: peft run %s)", cmd_run.args);
        code = cli_fail();
    }
    if (code) {
        free(sets);
        return code;
    }
    /* Under mpirun every process runs the chain on its share of each batch; process 0
     * alone prints and writes (the others' standard output goes nowhere). */
    if (dist_rank() > 0 && !freopen("/dev/null", "w", stdout)) {
        err_set("run: cannot silence the output of process %d", dist_rank());
        dist_fail(2);
    }
    dist_on_termination("peft: mpirun ended the job (one of its processes died, was killed "
                        "or interrupted); the last checkpoint is kept: continue with --resume\n");
    struct run r;
    int rc = run_load(&r, ini, sets, n_sets, plugin_path);
    free(sets);
    if (dist_size() > 1) {
        /* how many processes failed, and whether process 0 did: the same files fail alike on
         * every process, and process 0 tells; a process that failed alone tells its own */
        double failed[2] = {rc ? 1.0 : 0.0, rc && dist_rank() == 0 ? 1.0 : 0.0};
        if (dist_sum_doubles(failed, 2)) rc = -1;
        if (failed[0] > 0 || rc) {
            code = rc ? err_status() : 2;
            if (rc && (dist_rank() == 0 || failed[1] == 0)) {
                if (dist_rank() > 0) err_prefix("process %d of %d", dist_rank(), dist_size());
                cli_fail();
            }
            run_free(&r);
            return code;
        }
    }
    if (rc) {
        code = cli_fail();
        run_free(&r);
        return code;
    }
    r.resume = resume;
    r.restart = restart;
    r.quiet = quiet || dist_rank() > 0; /* no progress line from the other processes either */
    r.stop_after = stop_after;
    if (r.threads > 0) parallel_set_threads(r.threads);
    if (run_execute(&r)) {
        dist_fail(err_status()); /* under mpirun: the others wait on this process */
        code = cli_fail();
    }
    if (code == 0 && !quiet) printf("outputs in %s\n", r.out_dir);
    run_free(&r);
    return code;
}

const struct command cmd_run = {
    "run", "FILE.ini [--set SECTION.KEY=VALUE]... [--resume | --restart] [--quiet] [--plugin-path DIRS]",
    "Check the whole run file, then run its chain of stages; outputs go to [run] out.",
    "A run file is INI: [run], [model], [data] and one [stage.NAME] per stage, run in file\n"
    "order (peft keys lists the host's keys, peft plugins ID a method's). Every problem of\n"
    "the file is reported before anything is written. A completed stage whose configuration,\n"
    "model and data are unchanged is reused, not trained again.\n"
    "\n"
    "options:\n"
    "  --set SECTION.KEY=VALUE  override a key of the file (repeatable), e.g. --set stage.adapt.r=4\n"
    "  --resume                 continue an interrupted stage from its last checkpoint\n"
    "  --restart                start an interrupted stage over, dropping its checkpoint\n"
    "                           (a run that finds a checkpoint refuses without one of the two)\n"
    "  --quiet                  no progress lines; results, summary and errors still print\n"
    "  --plugin-path DIRS       folders searched first for method plugins (':'-separated)\n"
    "  --stop-after N           stop each stage after step N with a checkpoint (for testing\n"
    "                           --resume)\n"
    "  -h, --help               this help\n"
    "\n"
    "example:\n"
    "  peft run conf/quickstart.ini --set stage.adapt.steps=100\n",
    run_main};
