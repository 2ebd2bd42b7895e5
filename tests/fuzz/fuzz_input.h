/*
 * fuzz_input.h: what every fuzz target shares. The readers under test take paths, so each
 * input is written to a file of this process's own temporary folder first.
 */
#ifndef PEFT_FUZZ_INPUT_H
#define PEFT_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core.h"

/* A folder of this process's own, made once, removed at exit. */
static const char *fuzz_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/peft_fuzz_XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

/* Write data to DIR/name (replacing it); the path is static until the next call. */
static const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    return path;
}

#endif
