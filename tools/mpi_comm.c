/* mpi_comm.c: dp_train_comm over MPI (see mpi_comm.h, docs/distributed.md). */
#include <stdlib.h>

#include "mpi_comm.h"

#ifdef DP_HAVE_MPI
#include <limits.h>
#include <mpi.h>

static int mpi_started;

/* The sum is reduced to rank 0 (MPI_Reduce) and then broadcast from it (MPI_Bcast): the
 * result is computed once, on rank 0, and copied bit for bit to the others, so every rank
 * holds identical values. (MPI_Allreduce does not promise that: an implementation may reduce
 * in a different order on different ranks.) */
static dp_status sum_any(float *fbuf, double *dbuf, size_t n) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const size_t chunk = (size_t)1 << 28; /* counts are int */
    for (size_t off = 0; off < n; off += chunk) {
        int k = (int)(n - off < chunk ? n - off : chunk);
        void *p = fbuf ? (void *)(fbuf + off) : (void *)(dbuf + off);
        MPI_Datatype t = fbuf ? MPI_FLOAT : MPI_DOUBLE;
        int e = MPI_Reduce(rank == 0 ? MPI_IN_PLACE : p, p, k, t, MPI_SUM, 0, MPI_COMM_WORLD);
        if (e == MPI_SUCCESS) e = MPI_Bcast(p, k, t, 0, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return dp_fail(DP_ERR_IO, "MPI sum over the ranks failed (MPI error %d)", e);
    }
    return DP_OK;
}

static dp_status sum_f32(void *user, float *buf, size_t n) {
    (void)user;
    return sum_any(buf, NULL, n);
}

static dp_status sum_f64(void *user, double *buf, size_t n) {
    (void)user;
    return sum_any(NULL, buf, n);
}

int dp_cli_mpi_init(dp_train_comm *c) {
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return 0;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return 0;
    mpi_started = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->user = NULL;
    c->sum_f32 = sum_f32;
    c->sum_f64 = sum_f64;
    return 1;
}

void dp_cli_mpi_finalize(void) {
    if (mpi_started) MPI_Finalize();
    mpi_started = 0;
}

void dp_cli_mpi_abort(int code) {
    if (mpi_started) MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* built without MPI */

int dp_cli_mpi_init(dp_train_comm *c) {
    (void)c;
    return 0;
}

void dp_cli_mpi_finalize(void) {}

void dp_cli_mpi_abort(int code) { (void)code; }

#endif
