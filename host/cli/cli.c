/* cli.c: what every command shares: error lines, help text. */
#include <string.h>

#include "cli.h"
#include "core/core.h"

int cli_fail(void) {
    /* A run file with several problems gives several lines: each gets the prefix. */
    const char *m = err_msg();
    for (const char *nl; (nl = strchr(m, '\n')); m = nl + 1)
        fprintf(stderr, "peft: %.*s\n", (int)(nl - m), m);
    fprintf(stderr, "peft: %s\n", m);
    return err_status();
}

int cli_unexpected(const struct command *c, const char *arg) {
    err_set("%s: unexpected argument '%s' (peft %s --help lists the options)", c->name, arg,
            c->name);
    return cli_fail();
}

void cli_help(const struct command *c, FILE *out) {
    fprintf(out, "usage: peft %s%s%s\n\n%s\n\n%s", c->name, c->args[0] ? " " : "", c->args,
            c->summary, c->help);
}
