/* dist.c: the processes of one job under MPI (Open MPI's mpirun), or one process.
 *
 * MPI is an optional build dependency (PEFT_HAVE_MPI). Even when it is built in, MPI starts
 * only in a process that mpirun launched (its environment says so) and that is not a child a
 * peft process started itself (PEFT_NO_MPI, set by peft compare for its arms' runs): a peft
 * started by hand is one process exactly as without MPI. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

#ifdef PEFT_HAVE_MPI
#include <mpi.h>
#endif

static int dist_rank_v, dist_size_v = 1, dist_local_size_v = 1;
#ifdef PEFT_HAVE_MPI
static int dist_on; /* MPI_Init ran */
#endif

static int launched_by_mpirun(void) {
    if (getenv("PEFT_NO_MPI")) return 0;
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int dist_init(int *argc, char ***argv) {
#ifdef PEFT_HAVE_MPI
    if (!launched_by_mpirun()) return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return err_set("MPI_Init failed");
    dist_on = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_rank_v);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_size_v);
    MPI_Comm local; /* the processes that share this machine's memory, and its cores */
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_size(local, &dist_local_size_v);
        MPI_Comm_free(&local);
    }
    /* the processes an MPI process starts are single processes of their own */
    setenv("PEFT_NO_MPI", "1", 1);
    return 0;
#else
    (void)argc;
    (void)argv;
    if (launched_by_mpirun() && getenv("OMPI_COMM_WORLD_SIZE") &&
        strcmp(getenv("OMPI_COMM_WORLD_SIZE"), "1") != 0)
        return err_set("launched by mpirun, but this peft was built without MPI (install "
                       "libopenmpi-dev and build again)");
    return 0;
#endif
}

int dist_rank(void) { return dist_rank_v; }
int dist_local_size(void) { return dist_local_size_v; }
int dist_size(void) { return dist_size_v; }

void dist_barrier(void) {
#ifdef PEFT_HAVE_MPI
    if (dist_on) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

int dist_sum_doubles(double *v, size_t n) {
#ifdef PEFT_HAVE_MPI
    if (dist_on && n > 0 &&
        MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
        return err_set("MPI_Allreduce failed");
#else
    (void)v;
    (void)n;
#endif
    return 0;
}

/* What process 0 says when mpirun ends the job under it (SIGTERM: another process died). */
static const char *term_line;
static size_t term_len;

/* MPI counts in int: large buffers go in pieces of at most 2^30 elements. */
enum { DIST_PIECE = 1 << 30 };

static double comm_seconds, comm_bytes;

int dist_sum_floats(float *v, size_t n) {
#ifdef PEFT_HAVE_MPI
    if (!dist_on || dist_size_v <= 1) return 0;
    double t0 = now_seconds();
    for (size_t at = 0; at < n; at += DIST_PIECE) {
        size_t k = n - at < DIST_PIECE ? n - at : DIST_PIECE;
        if (MPI_Allreduce(MPI_IN_PLACE, v + at, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return err_set("MPI_Allreduce of %zu floats failed", n);
    }
    comm_seconds += now_seconds() - t0;
    comm_bytes += (double)n * sizeof *v;
#else
    (void)v;
    (void)n;
#endif
    return 0;
}

/* Sums started and not yet waited for (dist_isum_floats). */
#ifdef PEFT_HAVE_MPI
static MPI_Request *pending;
static int n_pending, cap_pending;
#endif

int dist_isum_floats(float *v, size_t n) {
#ifdef PEFT_HAVE_MPI
    if (!dist_on || dist_size_v <= 1) return 0;
    double t0 = now_seconds();
    for (size_t at = 0; at < n; at += DIST_PIECE) {
        size_t k = n - at < DIST_PIECE ? n - at : DIST_PIECE;
        if (n_pending == cap_pending) {
            cap_pending = cap_pending ? 2 * cap_pending : 64;
            pending = xrealloc(pending, sizeof *pending * (size_t)cap_pending);
        }
        if (MPI_Iallreduce(MPI_IN_PLACE, v + at, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                           &pending[n_pending]) != MPI_SUCCESS)
            return err_set("MPI_Iallreduce of %zu floats failed", n);
        n_pending++;
    }
    comm_seconds += now_seconds() - t0;
    comm_bytes += (double)n * sizeof *v;
#else
    (void)v;
    (void)n;
#endif
    return 0;
}

int dist_progress(void) {
#ifdef PEFT_HAVE_MPI
    if (!dist_on || n_pending == 0) return 0;
    double t0 = now_seconds();
    int done;
    int rc = MPI_Testall(n_pending, pending, &done, MPI_STATUSES_IGNORE);
    if (rc == MPI_SUCCESS && done) n_pending = 0; /* every request is freed once complete */
    comm_seconds += now_seconds() - t0;
    if (rc != MPI_SUCCESS) return err_set("MPI_Testall failed");
#endif
    return 0;
}

int dist_wait_sums(void) {
#ifdef PEFT_HAVE_MPI
    if (!dist_on || n_pending == 0) return 0;
    double t0 = now_seconds();
    int rc = MPI_Waitall(n_pending, pending, MPI_STATUSES_IGNORE);
    n_pending = 0;
    comm_seconds += now_seconds() - t0;
    if (rc != MPI_SUCCESS) return err_set("MPI_Waitall failed");
#endif
    return 0;
}

void dist_comm_stats(double *seconds, double *bytes) {
    *seconds = comm_seconds;
    *bytes = comm_bytes;
}

int dist_agree(uint64_t value, uint64_t *lowest, uint64_t *highest) {
    *lowest = *highest = value;
#ifdef PEFT_HAVE_MPI
    if (!dist_on || dist_size_v <= 1) return 0;
    uint64_t v[2] = {~value, value}; /* one MAX gives both: max(~v) = ~min(v) */
    if (MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return err_set("MPI_Allreduce failed");
    *lowest = ~v[0];
    *highest = v[1];
#endif
    return 0;
}

void dist_fail(int code) {
    if (dist_size_v <= 1) return;
    term_line = NULL; /* this process tells why; not also that the job was ended */
    /* A failure every process meets (a divergence, a file none can read) is process 0's to
     * tell: the others give it a moment to end the job before they speak themselves. */
    if (dist_rank_v > 0) sleep(3);
    if (dist_rank_v > 0) fprintf(stderr, "peft: process %d of %d: %s\n", dist_rank_v, dist_size_v, err_msg());
    else fprintf(stderr, "peft: %s\n", err_msg());
    fflush(stderr);
    dist_abort(code);
}


static void on_termination(int sig) {
    if (term_line) {
        ssize_t w = write(STDERR_FILENO, term_line, term_len);
        (void)w;
    }
    _exit(128 + sig);
}

void dist_on_termination(const char *line) {
    if (dist_size_v <= 1) return;
    term_line = dist_rank_v == 0 ? line : NULL; /* one line for the job */
    term_len = term_line ? strlen(term_line) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_termination;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
}

void dist_abort(int code) {
#ifdef PEFT_HAVE_MPI
    if (dist_on) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

void dist_finalize(void) {
#ifdef PEFT_HAVE_MPI
    if (dist_on) MPI_Finalize();
    dist_on = 0;
#endif
}
