/* mpi_comm.h: the MPI implementation of dp_train_comm for `mpirun -np N dpsgd train`
 * (tools/mpi_comm.c; compiled in when CMake finds MPI, DP_HAVE_MPI). Without MPI the
 * functions report a single process. */
#ifndef DPSGD_TOOLS_MPI_COMM_H
#define DPSGD_TOOLS_MPI_COMM_H
#include "dpsgd/train.h"

/* When launched by mpirun (Open MPI's OMPI_COMM_WORLD_SIZE, or PMI_SIZE / PMIX_RANK is set),
 * initialises MPI, fills *c for MPI_COMM_WORLD and returns 1; otherwise returns 0 and MPI is
 * never touched (single-process runs are unaffected). */
int dp_cli_mpi_init(dp_train_comm *c);
/* MPI_Finalize when dp_cli_mpi_init started MPI. */
void dp_cli_mpi_finalize(void);
/* MPI_Abort(MPI_COMM_WORLD, code) when MPI is running (one rank failed: the others would wait
 * forever in the next sum); returns otherwise. */
void dp_cli_mpi_abort(int code);
/* The watchdog's wait (--mpi-timeout): how long rank 0 waits for the other ranks at a sum
 * before it ends the job naming the ranks that did not arrive (the others wait
 * T + max(10, T/2) for rank 0); 0 waits forever. */
#define DP_CLI_MPI_TIMEOUT_DEFAULT 600.0
void dp_cli_mpi_set_timeout(double seconds);
#endif
