/*
 * crash_shim.c: an LD_PRELOAD library that kills its process at a chosen file-system step,
 * for the crash tests (crash.sh). It wraps rename(), fsync() and fwrite() (the project writes
 * files through stdio, whose own write() calls a preload cannot see); each call is one step.
 *
 *   PEFT_CRASH_AT=N       SIGKILL the process at the Nth step (0 or unset: never)
 *   PEFT_CRASH_WHEN=after kill just after the step is done (default: just before it)
 *   PEFT_CRASH_COUNT=FILE write the number of steps so far to FILE after every step
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long steps;

static void record(void) {
    const char *file = getenv("PEFT_CRASH_COUNT");
    if (!file) return;
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char text[32];
    int n = snprintf(text, sizeof text, "%ld\n", steps);
    if (write(fd, text, (size_t)n) != n) { /* the count is best effort */
    }
    close(fd);
}

/* Called around each step: kills the process when this is the chosen one. */
static void step(int after) {
    const char *at = getenv("PEFT_CRASH_AT"), *when = getenv("PEFT_CRASH_WHEN");
    int kill_after = when && strcmp(when, "after") == 0;
    if (!after) steps++;
    if (at && atol(at) == steps && kill_after == after) raise(SIGKILL);
    if (after) record();
}

int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "rename");
    step(0);
    int rc = real(from, to);
    step(1);
    return rc;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "fsync");
    step(0);
    int rc = real(fd);
    step(1);
    return rc;
}

size_t fwrite(const void *buf, size_t size, size_t n, FILE *f) {
    static size_t (*real)(const void *, size_t, size_t, FILE *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "fwrite");
    step(0);
    size_t rc = real(buf, size, n, f);
    step(1);
    return rc;
}
