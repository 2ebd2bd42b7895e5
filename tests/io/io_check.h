/*
 * io_check.h: the small assertion and scratch-folder helpers shared by the io tests.
 * A failed CHECK prints the place and the condition and counts the failure; main() returns
 * io_failures() != 0 at the end so every check runs and reports.
 */
#ifndef PEFT_TESTS_IO_CHECK_H
#define PEFT_TESTS_IO_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int io_fail_count;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
            io_fail_count++;                                                               \
        }                                                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            io_fail_count++;                                                               \
        }                                                                                  \
    } while (0)

static inline int io_failures(void) { return io_fail_count; }

/* A fresh scratch folder under $TMPDIR (or /tmp); caller frees and removes it. */
static inline char *io_scratch_dir(const char *tag) {
    const char *base = getenv("TMPDIR");
    char *tmpl = xasprintf("%s/peft-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "cannot create a scratch folder %s\n", tmpl);
        exit(1);
    }
    return tmpl;
}

/* A file of the source tree (tests/fixtures/...), through PEFT_SOURCE_ROOT set by meson. */
static inline char *io_source_path(const char *rel) {
    const char *root = getenv("PEFT_SOURCE_ROOT");
    return path_join(root && *root ? root : ".", rel);
}

static inline void io_write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

#endif
