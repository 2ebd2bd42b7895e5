/*
 * io_check.h: the scratch-folder and file helpers shared by the io tests (the assertions
 * are tests/check.h).
 */
#ifndef PEFT_TESTS_IO_CHECK_H
#define PEFT_TESTS_IO_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"

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
