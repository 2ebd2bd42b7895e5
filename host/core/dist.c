/* dist.c: the processes of one job under MPI (Open MPI's mpirun), or one process.
 *
 * MPI is an optional build dependency (PEFT_HAVE_MPI). Even when it is built in, MPI starts
 * only in a process that mpirun launched (its environment says so) and that is not a child a
 * peft process started itself (PEFT_NO_MPI, set by peft compare for its arms' runs): a peft
 * started by hand is one process exactly as without MPI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#ifdef PEFT_HAVE_MPI
#include <mpi.h>
#endif

static int dist_rank_v, dist_size_v = 1;
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
