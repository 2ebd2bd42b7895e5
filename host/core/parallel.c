/* parallel.c: the host's one pool of worker threads, for the loops outside the matrix
 * products (norms, rotary embeddings, softmax, SwiGLU, cross-entropy, the optimizer).
 *
 * OpenBLAS runs the products on its own threads. The two never compete: a loop here starts
 * only after the product before it has returned, and between loops the workers sleep on a
 * condition variable instead of spinning, so they leave the cores to OpenBLAS.
 *
 * Work is split into contiguous ranges of whole items and every item is computed by the same
 * code, so results do not depend on the number of threads. */
#include "core.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

enum { MAX_THREADS = 64 };

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_mutex_t submit; /* one loop at a time; a second caller runs its loop alone */
    int32_t threads;        /* 0 until first use or parallel_set_threads */
    int32_t started;        /* workers running (threads - 1 once started) */
    uint64_t generation;    /* bumped once per loop */
    int32_t pending;        /* workers still inside the current loop */
    parallel_fn fn;
    void *ctx;
    size_t n, chunks;
    uint64_t born[MAX_THREADS]; /* the generation each worker started at: it waits for the next */
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .submit = PTHREAD_MUTEX_INITIALIZER,
};

/* A loop body that itself calls parallel_for runs the inner loop on its own thread. */
static _Thread_local int inside_loop;

static void run_chunk(parallel_fn fn, void *ctx, size_t n, size_t chunks, size_t c)
{
    if (c >= chunks) return;
    size_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    if (begin < end) fn(ctx, begin, end);
}

static void *worker(void *arg)
{
    size_t index = (size_t)(uintptr_t)arg;
    inside_loop = 1;
    pthread_mutex_lock(&pool.mu);
    uint64_t seen = pool.born[index];
    for (;;) {
        while (pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.mu);
        seen = pool.generation;
        parallel_fn fn = pool.fn;
        void *ctx = pool.ctx;
        size_t n = pool.n, chunks = pool.chunks;
        pthread_mutex_unlock(&pool.mu);
        run_chunk(fn, ctx, n, chunks, index);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0) pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* The count OpenBLAS itself starts with, so that both use the same cores by default. */
static int32_t default_threads(void)
{
    const char *vars[] = {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        int64_t k;
        if (v && parse_i64(v, &k) == 0 && k > 0) return k > MAX_THREADS ? MAX_THREADS : (int32_t)k;
    }
    /* processes of one MPI job on this machine split its cores, rather than each taking all */
    long cores = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size();
    return cores < 1 ? 1 : cores > MAX_THREADS ? MAX_THREADS : (int32_t)cores;
}

void parallel_set_threads(int32_t n)
{
    if (n < 1) n = default_threads();
    if (n > MAX_THREADS) n = MAX_THREADS;
    pthread_mutex_lock(&pool.submit);
    /* workers beyond n - 1 stay asleep; missing ones start on demand */
    __atomic_store_n(&pool.threads, n, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pool.submit);
}

/* Read without the submit lock (a loop body may ask while its loop holds it). */
int32_t parallel_threads(void)
{
    int32_t n = __atomic_load_n(&pool.threads, __ATOMIC_RELAXED);
    if (n > 0) return n;
    int32_t zero = 0, d = default_threads();
    __atomic_compare_exchange_n(&pool.threads, &zero, d, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return __atomic_load_n(&pool.threads, __ATOMIC_RELAXED);
}

/* A child of fork() has none of the workers: it starts its own on its first loop. */
static void forget_workers_in_child(void)
{
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pthread_mutex_init(&pool.submit, NULL);
    pool.started = 0;
    pool.pending = 0;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, forget_workers_in_child); }

/* Start workers up to threads - 1; with the submit lock held. Fewer threads if the system
 * refuses more: the loop still runs, on the threads there are. */
static void start_workers(void)
{
    pthread_once(&atfork_once, register_atfork);
    while (pool.started < pool.threads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_mutex_lock(&pool.mu);
        pool.born[pool.started + 1] = pool.generation;
        pthread_mutex_unlock(&pool.mu);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, (void *)(uintptr_t)(pool.started + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool.started++;
    }
}

void parallel_for(size_t n, size_t min_items, parallel_fn fn, void *ctx)
{
    if (n == 0) return;
    if (min_items < 1) min_items = 1;
    if (inside_loop || n < 2 * min_items || pthread_mutex_trylock(&pool.submit) != 0) {
        fn(ctx, 0, n);
        return;
    }
    parallel_threads(); /* the default, on first use */
    start_workers();
    size_t workers = (size_t)(pool.started < pool.threads - 1 ? pool.started : pool.threads - 1);
    size_t chunks = n / min_items;
    if (chunks > workers + 1) chunks = workers + 1;
    if (chunks < 2) {
        pthread_mutex_unlock(&pool.submit);
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn, pool.ctx = ctx, pool.n = n, pool.chunks = chunks;
    pool.pending = pool.started; /* every started worker wakes; those past chunks do nothing */
    pool.generation++;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);

    inside_loop = 1;
    run_chunk(fn, ctx, n, chunks, 0);
    inside_loop = 0;

    pthread_mutex_lock(&pool.mu);
    while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.submit);
}
