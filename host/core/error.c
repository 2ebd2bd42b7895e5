/* error.c: the error line every failing call leaves for its caller to print. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- the error line ------------------------------------------------------------------ */

/* Room for every problem of a run file (config.h: CFG_MAX_PROBLEMS lines). */
static char err_line[16384];
static int err_exit = 2; /* the exit status the line calls for */

int err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_line, sizeof err_line, fmt, ap);
    va_end(ap);
    err_exit = 2;
    return -1;
}

int err_set_status(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_line, sizeof err_line, fmt, ap);
    va_end(ap);
    err_exit = status;
    return -1;
}

int err_status(void) { return err_exit; }

int err_prefix(const char *fmt, ...) {
    char head[1024], old[sizeof err_line];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err_line, sizeof old);
    if (snprintf(err_line, sizeof err_line, "%s: %s", head, old) >= (int)sizeof err_line)
        err_line[sizeof err_line - 1] = 0; /* a long line is cut, never lost */
    return -1;
}

const char *err_msg(void) { return err_line[0] ? err_line : "unknown error"; }
void err_clear(void) {
    err_line[0] = 0;
    err_exit = 2;
}
