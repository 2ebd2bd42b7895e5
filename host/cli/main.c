/* main.c: the `peft` command line: finds the command and hands it its arguments; help for
 * every command comes from the command's own description (cli.h). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"

static int version_main(int argc, char **argv) {
    if (argc > 0) return cli_unexpected(&cmd_version, argv[0]);
    printf("peft %s (plugin ABI %u.%u)\n", PEFT_VERSION, PEFT_ABI_MAJOR, PEFT_ABI_MINOR);
    return 0;
}

const struct command cmd_version = {
    "version", "", "Print the version of peft and of the plugin ABI it loads.",
    "options:\n  -h, --help  this help\n\nexample:\n  peft version\n", version_main};

const struct command *const commands[] = {&cmd_run, &cmd_compare, &cmd_plugins, &cmd_check, &cmd_keys,
                                          &cmd_data, &cmd_tokenize, &cmd_init_model, &cmd_generate, &cmd_eval, &cmd_export, &cmd_import,
                                          &cmd_inspect, &cmd_version, NULL};

static const struct command *find_command(const char *name) {
    for (const struct command *const *c = commands; *c; c++)
        if (strcmp((*c)->name, name) == 0) return *c;
    return NULL;
}

static void overview(FILE *out) {
    fprintf(out, "usage: peft COMMAND [ARGS]   (peft help COMMAND, or peft COMMAND --help)\n\n");
    for (const struct command *const *c = commands; *c; c++) {
        const char *nl = strchr((*c)->summary, '\n');
        int n = nl ? (int)(nl - (*c)->summary) : (int)strlen((*c)->summary);
        fprintf(out, "  %-10s %.*s%s\n", (*c)->name, n, (*c)->summary, nl ? " ..." : "");
    }
    fprintf(out, "\nexample:\n  peft run conf/quickstart.ini\n");
}

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

int main(int argc, char **argv) {
    if (argc < 2) {
        overview(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || is_help(name)) {
        if (argc == 2 || is_help(name)) {
            overview(stdout);
            return 0;
        }
        const struct command *c = find_command(argv[2]);
        if (!c) {
            err_set("help: unknown command '%s' (peft help lists them)", argv[2]);
            return cli_fail();
        }
        cli_help(c, stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0) name = "version";
    const struct command *c = find_command(name);
    if (!c) {
        const char *names[16];
        size_t n = 0;
        for (const struct command *const *k = commands; *k && n < 16; k++) names[n++] = (*k)->name;
        const char *near = nearest_name(name, names, n);
        err_set("unknown command '%s'%s%s%s (peft help lists the commands)", name,
                near ? ": did you mean '" : "", near ? near : "", near ? "'?" : "");
        return cli_fail();
    }
    for (int i = 2; i < argc; i++)
        if (is_help(argv[i])) {
            cli_help(c, stdout);
            return 0;
        }
    if (dist_init(&argc, &argv)) return cli_fail();
    if (dist_size() > 1 && c != &cmd_compare && c != &cmd_run) {
        err_set("peft %s runs as one process; under mpirun `peft run` trains data-parallel "
                "and `peft compare` spreads its arms over the processes", c->name);
        if (dist_rank() == 0) cli_fail();
        dist_finalize();
        return 2;
    }
    /* under mpirun, a command that fails on one process alone ends the job itself */
    int rc = c->main(argc - 2, argv + 2);
    dist_finalize();
    return rc;
}
