/*
 * core.h: the lowest layer, which every host file uses: the error line, checked allocation,
 * whole-file and atomic file I/O, folders and paths, time, the seeded random stream, growing
 * strings and word lists, the pool of worker threads.
 *
 * Error style: host library functions return 0 on success and -1 on failure after setting
 * one line with err_set(); the CLI prints "peft: <line>" and exits 2. The line names the file
 * and the place: "conf/run.ini:12: [stage.adapt] r: expected an integer, got 'abc'".
 */
#ifndef PEFT_CORE_H
#define PEFT_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define PEFT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PEFT_PRINTF(a, b)
#endif

/* ---- the error line ------------------------------------------------------------------ */
/* Set the current error line (replaces any earlier one). Always returns -1. */
int err_set(const char *fmt, ...) PEFT_PRINTF(1, 2);
/* Prefix the current error line: err_prefix("%s", path) gives "path: <old line>". */
int err_prefix(const char *fmt, ...) PEFT_PRINTF(1, 2);
/* The same for a failure that is not bad input (a run that diverged): the command exits
 * with status (1) instead of 2. err_status: the status the current line calls for. */
int err_set_status(int status, const char *fmt, ...) PEFT_PRINTF(2, 3);
int err_status(void);
const char *err_msg(void);
void err_clear(void);

/* ---- allocation: out of memory is fatal (prints and exits 1) ------------------------- */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PEFT_PRINTF(1, 2);
/* The length vsnprintf would give fmt with ap (ap itself is not consumed). */
size_t fmt_length(const char *fmt, va_list ap);
/* 64-byte aligned float buffer, zeroed; free with free(). */
float *xalloc_floats(size_t n);
/* n zeroed floats (page-aligned) whose pages take memory only once written: for blocks of
 * which only parts are used (a model's parameters with 16-bit frozen weights, snapshots).
 * Free with free_floats_lazy(p, n); release_floats_lazy gives back the whole pages inside
 * p[0..n), which read as zero again. */
float *xalloc_floats_lazy(size_t n);
void free_floats_lazy(float *p, size_t n);
void release_floats_lazy(float *p, size_t n);

/* ---- files ---------------------------------------------------------------------------- */
/* Open a regular file for reading without ever blocking on a FIFO or device: the fd, or -1
 * with "PATH: not a regular file" / "PATH: cannot open: reason". st gets its stat (may be
 * NULL). file_fopen_regular: the same as a FILE (NULL on failure). */
struct stat;
int file_open_regular(const char *path, struct stat *st);
FILE *file_fopen_regular(const char *path);
/* Read a whole file (NUL-terminated for convenience). -1 with "PATH: reason" on failure. */
int file_read_all(const char *path, char **out, size_t *len);
/* Write a file atomically: an exclusive temporary sibling (PATH.tmp.<pid>.<random>), fsync,
 * rename, fsync of the folder. Only a regular file is ever replaced. -1 with "PATH: reason". */
int file_write_atomic(const char *path, const void *data, size_t len);

/* Streaming atomic writer: fopen a temporary sibling, write, then commit (fsync + rename) or
 * abort (unlink). Nothing appears under `path` unless commit succeeds. */
struct atomic_file {
    FILE *f;
    char *path;
    char *tmp_path;
};
int atomic_open(struct atomic_file *af, const char *path);
int atomic_commit(struct atomic_file *af);
void atomic_abort(struct atomic_file *af);

/* Lock folder dir for this process (flock on dir/.lock, which holds the holder's pid): the
 * lock's fd, kept open for as long as the lock is held (closing it, or exiting, releases it),
 * or -1 with "DIR: in use by another peft process (pid N); ...". */
int dir_lock(const char *dir);
/* Remove the temporary files (NAME.tmp.<pid>.XXXXXX, atomic_open's) an interrupted writer left
 * in dir and, depth levels down, its subfolders; how many were removed. Only for folders this
 * process holds the lock of. */
int file_remove_temporaries(const char *dir, int depth);
int file_exists(const char *path);
int dir_exists(const char *path);
/* mkdir -p; -1 with "PATH: reason". */
int mkdir_p(const char *path);
/* Remove a directory tree (used for temporary folders only). */
int remove_tree(const char *path);
/* a + "/" + b (b absolute -> b). Caller frees. */
char *path_join(const char *a, const char *b);
/* Directory part of a path ("." if none). Caller frees. */
char *path_dirname(const char *path);

/* ---- time ----------------------------------------------------------------------------- */
double now_seconds(void); /* monotonic */

/* ---- hashing --------------------------------------------------------------------------- */
/* FNV-1a over n bytes, continuing from h (start from HASH_FNV1A_BASIS). Not mixed: a caller
 * that takes low bits of it finalizes it itself. */
#define HASH_FNV1A_BASIS 1469598103934665603ull
uint64_t hash_fnv1a(uint64_t h, const void *p, size_t n);

/* ---- the seeded random stream (xoshiro256**; state is plain data so checkpoints keep it) */
struct rng {
    uint64_t s[4];
};
void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
double rng_double(struct rng *r);             /* [0, 1) */
float rng_uniform(struct rng *r, float lo, float hi);
float rng_normal(struct rng *r, float mean, float std);
uint64_t rng_below(struct rng *r, uint64_t n); /* [0, n), n > 0 */
/* A stream derived from a seed and a label ("data:reverse", "stage:adapt"), so streams do not
 * depend on the order in which they are made. */
void rng_seed_label(struct rng *r, uint64_t seed, const char *label);

/* ---- a growing string ----------------------------------------------------------------- */
struct strbuf {
    char *s;      /* NUL-terminated; NULL until the first append */
    size_t len, cap;
};
void sb_printf(struct strbuf *b, const char *fmt, ...) PEFT_PRINTF(2, 3);
void sb_free(struct strbuf *b);

/* ---- words ---------------------------------------------------------------------------- */
/* Split on commas and/or whitespace; empty items dropped. Caller frees with words_free. */
struct words {
    char **v;
    int n;
};
void words_split(struct words *w, const char *s);
void words_free(struct words *w);
int words_find(const struct words *w, const char *s); /* index or -1 */

/* Levenshtein distance between two strings (bytes). */
size_t edit_distance(const char *a, const char *b);
/* The name of names[0..n) nearest to name if it is close enough to be a typo of it, or NULL. */
const char *nearest_name(const char *name, const char *const *names, size_t n);

/* v printed with fmt into buf, or "null" when v is not finite (JSON has no NaN): a JSON
 * number for every double. */
const char *json_finite(char *buf, size_t cap, const char *fmt, double v);

/* Strict number parsing: whole string, no trailing junk. 0 ok, -1 bad. */
int parse_i64(const char *s, int64_t *out);
int parse_f64(const char *s, double *out); /* finite only */
int parse_bool(const char *s, int *out);

/* ---- parallel loops (parallel.c) ------------------------------------------------------ */
/* The host's worker threads for loops outside the matrix products. fn(ctx, begin, end) runs
 * once per contiguous range of items [begin, end); the ranges cover [0, n) and run at the
 * same time on up to parallel_threads() threads, the caller's included. min_items: the
 * fewest items worth a thread of their own (below 2 * min_items the loop runs on the caller
 * alone). fn must not depend on how [0, n) is split; it may not print or fail. A loop
 * started from inside another, or while another thread's loop runs, runs on its caller. */
typedef void (*parallel_fn)(void *ctx, size_t begin, size_t end);
void parallel_for(size_t n, size_t min_items, parallel_fn fn, void *ctx);
/* n < 1: the default, OpenBLAS's own rule (OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS,
 * OMP_NUM_THREADS, else the online cores, shared out among the processes of an MPI job on
 * this machine). */
void parallel_set_threads(int32_t n);
int32_t parallel_threads(void);

/* ---- the processes of an MPI job (dist.c) ------------------------------------------------- */
/* MPI_Init when mpirun launched this process (and MPI is built in), else nothing: one
 * process, rank 0 of 1. -1 with one line (launched by mpirun without MPI built in). */
int dist_init(int *argc, char ***argv);
int dist_rank(void);
int dist_size(void);
/* The processes of the job on this machine (1 without MPI). */
int dist_local_size(void);
void dist_barrier(void);
/* v (n) summed over every process, in place. */
int dist_sum_doubles(double *v, size_t n);
/* v (n) summed over every process, in place (the gradients of data-parallel training);
 * the time and bytes of these sums add up in dist_comm_stats. */
int dist_sum_floats(float *v, size_t n);
void dist_comm_stats(double *seconds, double *bytes);
/* Start summing v (n) in place without waiting (MPI_Iallreduce): v must stay untouched until
 * dist_wait_sums returns. Every process starts its sums in the same order. dist_progress lets
 * the started sums advance (Open MPI moves them only inside its calls); the time spent in
 * these three is what the sums cost the step beyond the computation they overlap. */
int dist_isum_floats(float *v, size_t n);
int dist_progress(void);
int dist_wait_sums(void);
/* The lowest and highest of `value` over the processes (equal: they agree). */
int dist_agree(uint64_t value, uint64_t *lowest, uint64_t *highest);
/* Under mpirun: the failure in err_msg() ends the job; process 0 tells it as "peft: LINE",
 * another process (after a pause that lets process 0 go first when it failed too) as
 * "peft: process K of N: LINE". Returns only when there is one process. */
void dist_fail(int code);
/* Under mpirun: when mpirun ends the job (SIGTERM, after another process died or was
 * killed), process 0 writes `line` (static, with its newline) to stderr, and every process
 * exits 128 + the signal at once (files are only ever renamed into place whole). */
void dist_on_termination(const char *line);
/* End every process of the job with `code`. */
void dist_abort(int code);
void dist_finalize(void);

/* ---- 16-bit floats (half.c) ----------------------------------------------------------- */
/* IEEE fp16 and bfloat16 to and from fp32; the way down rounds to nearest even. */
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
uint16_t f32_to_bf16(float f);
/* The fp32 bits u rounded to bfloat16 (nearest even) and kept as fp32 bits: the top 16 are
 * f32_to_bf16's result, the low 16 zero. NaN stays NaN, made quiet (truncation could lose a
 * payload that sits in the low bits); past the largest bfloat16 comes infinity. Inline, so
 * that a loop over many values vectorises. */
static inline uint32_t bf16_round_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u | 0x00400000u) & 0xffff0000u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

#endif
