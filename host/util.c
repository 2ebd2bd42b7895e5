/* util.c: the error line, checked allocation, files, time, the random stream, word lists. */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the error line ------------------------------------------------------------------ */

static char err_line[2048];

int err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_line, sizeof err_line, fmt, ap);
    va_end(ap);
    return -1;
}

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
void err_clear(void) { err_line[0] = 0; }

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
static size_t fmt_length(const char *fmt, va_list ap) {
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

float *xalloc_floats(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) out_of_memory(bytes);
    memset(p, 0, bytes);
    return p;
}

/* ---- files --------------------------------------------------------------------------- */

int file_read_all(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set("%s: not a regular file", path);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set("%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

int atomic_open(struct atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    af->path = xstrdup(path);
    af->tmp_path = xasprintf("%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        err_set("%s: cannot write: %s", path, strerror(errno));
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return -1;
    }
    return 0;
}

int atomic_commit(struct atomic_file *af) {
    int rc = 0;
    if (fflush(af->f) != 0 || ferror(af->f) || fsync(fileno(af->f)) != 0)
        rc = err_set("%s: write failed: %s", af->path, strerror(errno));
    if (fclose(af->f) != 0 && rc == 0) rc = err_set("%s: write failed: %s", af->path, strerror(errno));
    af->f = NULL;
    if (rc == 0 && rename(af->tmp_path, af->path) != 0)
        rc = err_set("%s: cannot rename into place: %s", af->path, strerror(errno));
    if (rc != 0) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
    return rc;
}

void atomic_abort(struct atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

int file_write_atomic(const char *path, const void *data, size_t len) {
    struct atomic_file af;
    if (atomic_open(&af, path) != 0) return -1;
    if (len && fwrite(data, 1, len, af.f) != len) {
        atomic_abort(&af);
        return err_set("%s: write failed", path);
    }
    return atomic_commit(&af);
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mkdir_p(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            err_set("%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        rc = err_set("%s: cannot create directory: %s", p, strerror(errno));
    else if (!dir_exists(p))
        rc = err_set("%s: exists and is not a directory", p);
    free(p);
    return rc;
}

int remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path) == 0 ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = path_join(path, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            rc |= remove_tree(sub);
        else
            rc |= unlink(sub);
        free(sub);
    }
    closedir(d);
    return rmdir(path) == 0 && rc == 0 ? 0 : -1;
}

char *path_join(const char *a, const char *b) {
    if (b[0] == '/' || !a || !a[0]) return xstrdup(b);
    size_t la = strlen(a);
    return xasprintf("%s%s%s", a, a[la - 1] == '/' ? "" : "/", b);
}

char *path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

/* ---- time ---------------------------------------------------------------------------- */

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- random stream ------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(struct rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rng_double(struct rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

float rng_uniform(struct rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)rng_double(r);
}

float rng_normal(struct rng *r, float mean, float std) {
    /* Box-Muller; one draw per call keeps the stream simple to reproduce. */
    double u1 = rng_double(r), u2 = rng_double(r);
    if (u1 < 1e-300) u1 = 1e-300;
    double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    return mean + std * (float)z;
}

uint64_t rng_below(struct rng *r, uint64_t n) {
    /* Rejection keeps the draw unbiased. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

void rng_seed_label(struct rng *r, uint64_t seed, const char *label) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the label, mixed with the seed */
    for (const unsigned char *p = (const unsigned char *)label; *p; p++) h = (h ^ *p) * 1099511628211ull;
    rng_seed(r, seed ^ (h * 0x9e3779b97f4a7c15ull));
}

/* ---- a growing string ----------------------------------------------------------------- */

void sb_printf(struct strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = fmt_length(fmt, ap);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += n;
}

void sb_free(struct strbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- words --------------------------------------------------------------------------- */

static int is_sep(char c) { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void words_split(struct words *w, const char *s) {
    w->v = NULL;
    w->n = 0;
    if (!s) return;
    while (*s) {
        while (*s && is_sep(*s)) s++;
        const char *b = s;
        while (*s && !is_sep(*s)) s++;
        if (s > b) {
            w->v = xrealloc(w->v, sizeof(char *) * (size_t)(w->n + 1));
            w->v[w->n++] = xstrndup(b, (size_t)(s - b));
        }
    }
}

void words_free(struct words *w) {
    for (int i = 0; i < w->n; i++) free(w->v[i]);
    free(w->v);
    w->v = NULL;
    w->n = 0;
}

int words_find(const struct words *w, const char *s) {
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->v[i], s) == 0) return i;
    return -1;
}

/* ---- strict parsing ------------------------------------------------------------------ */

int parse_i64(const char *s, int64_t *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t') end++;
    if (errno || *end || end == s) return -1;
    *out = v;
    return 0;
}

int parse_f64(const char *s, double *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ' || *end == '\t') end++;
    if (errno || *end || end == s || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int parse_bool(const char *s, int *out) {
    static const char *yes[] = {"true", "yes", "1", "on"}, *no[] = {"false", "no", "0", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) return *out = 1, 0;
        if (strcmp(s, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}
