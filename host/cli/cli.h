/*
 * cli.h: the face of host/cli, the `peft` command line: one file per command (cmd_*.c), each
 * a struct command with its usage, options and an example, so that `peft help CMD`,
 * `peft CMD --help` and `peft CMD -h` print the same text the parser follows.
 *
 * Exit status of every command: 0 done, 2 bad input (the error lines on stderr, each
 * "peft: FILE:LINE: ..."), 1 a run that diverged, an arm of a comparison that failed, out of
 * memory or an internal failure.
 */
#ifndef PEFT_CLI_H
#define PEFT_CLI_H

#include <stdio.h>

#include "inspect.h"
#include "tokenizer/tokenizer.h"
#include "plugins_cmd.h"

struct command {
    const char *name;
    const char *args;    /* after "peft NAME": "FILE.ini [options]" */
    const char *summary; /* one line */
    const char *help;    /* what it does, every option (one per line) and an example */
    int (*main)(int argc, char **argv); /* the arguments after NAME */
};

extern const struct command cmd_run, cmd_compare, cmd_plugins, cmd_check, cmd_keys, cmd_data,
    cmd_export,
    cmd_import, cmd_inspect, cmd_tokenize, cmd_init_model, cmd_generate, cmd_eval, cmd_version;

/* Every command, in the order `peft help` lists them; NULL-terminated. */
extern const struct command *const commands[];

/* Print the error line(s) as "peft: LINE" on stderr; returns the exit status they call for
 * (2 for bad input, 1 for a run that diverged). */
int cli_fail(void);
/* Set "NAME: unexpected argument 'ARG' (peft NAME --help lists the options)"; returns 2. */
int cli_unexpected(const struct command *c, const char *arg);
/* The full help of a command. */
void cli_help(const struct command *c, FILE *out);


#endif
