/* alloc.c: checked allocation: out of memory is fatal. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- allocation ---------------------------------------------------------------------- */

static void out_of_memory(size_t n) {
    fprintf(stderr, "peft: out of memory (asked for %zu bytes)\n", n);
    exit(1);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) out_of_memory(n);
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* The length vsnprintf would write for fmt and ap; works on a copy, so ap stays usable. */
size_t fmt_length(const char *fmt, va_list ap) {
    va_list cp;
    va_copy(cp, ap);
    char probe[1];
    int n = vsnprintf(probe, sizeof probe, fmt, cp);
    va_end(cp);
    return (size_t)n;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = fmt_length(fmt, ap);
    char *p = xmalloc(n + 1);
    vsnprintf(p, n + 1, fmt, ap);
    va_end(ap);
    return p;
}

float *xalloc_floats_lazy(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) out_of_memory(bytes);
    return p;
}

void free_floats_lazy(float *p, size_t n) {
    if (p) munmap(p, (n ? n : 1) * sizeof(float));
}

void release_floats_lazy(float *p, size_t n) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)(p + n)) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

float *xalloc_floats(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) out_of_memory(bytes);
    memset(p, 0, bytes);
    return p;
}
