/* scripts/mpi_sum_bench.c: time of the gradient sum of `dpsgd train` under MPI for several
 * model sizes, two ways side by side: the sum tools/mpi_comm.c does (each rank's part sent to
 * rank 0, added there in rank order and sent back, every wait polled with the watchdog's
 * deadline), MPI_Reduce to rank 0 + MPI_Bcast (what it did before the watchdog), and
 * MPI_Ireduce + MPI_Ibcast completed with MPI_Wait (the non-blocking collectives a deadline
 * could have polled; docs/distributed.md says why the CLI does not use them).
 * Not part of the build (it needs MPI); from the repository root, after building:
 *   mpicc -O2 -DDP_HAVE_MPI -Iinclude -Itools scripts/mpi_sum_bench.c tools/mpi_comm.c \
 *       -Lbuild -ldpsgd -Wl,-rpath,$PWD/build -o /tmp/mpi_sum_bench
 *   mpirun --allow-run-as-root -np 2 /tmp/mpi_sum_bench
 * Prints "floats  ms_per_sum  GB/s (buffer bytes / time)" per method on rank 0 (best of the
 * repetitions); docs/distributed.md. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "mpi_comm.h"

int main(void) {
    dp_train_comm c;
    if (!dp_cli_mpi_init(&c)) {
        fprintf(stderr, "mpi_sum_bench: run it under mpirun\n");
        return 1;
    }
    const long sizes[] = {26010, 109386, 1000000, 4000000, 15600000};
    if (c.rank == 0)
        printf("%9s  %-22s  %-22s  %-22s\n", "floats", "dpsgd (watchdog)", "MPI_Reduce + MPI_Bcast",
               "MPI_Ireduce + MPI_Ibcast");
    for (int s = 0; s < 5; s++) {
        long n = sizes[s];
        float *b = malloc(sizeof(float) * (size_t)n);
        for (long i = 0; i < n; i++) b[i] = (float)(i % 7) * 0.5f;
        int reps = n > 4000000 ? 10 : 50;
        double best[3] = {1e30, 1e30, 1e30};
        for (int r = 0; r < reps; r++)
            for (int way = 0; way < 3; way++) { /* interleaved: the machine's load hits all alike */
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = MPI_Wtime();
                if (way == 0) {
                    if (c.sum_f32(c.user, b, (size_t)n) != DP_OK) return 1;
                } else if (way == 1) {
                    MPI_Reduce(c.rank == 0 ? MPI_IN_PLACE : b, b, (int)n, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
                    MPI_Bcast(b, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
                } else {
                    MPI_Request q;
                    MPI_Ireduce(c.rank == 0 ? MPI_IN_PLACE : b, b, (int)n, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD, &q);
                    MPI_Wait(&q, MPI_STATUS_IGNORE);
                    MPI_Ibcast(b, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD, &q);
                    MPI_Wait(&q, MPI_STATUS_IGNORE);
                }
                double t = MPI_Wtime() - t0;
                if (t < best[way]) best[way] = t;
            }
        if (c.rank == 0)
            printf("%9ld  %8.3f ms %6.2f GB/s  %8.3f ms %6.2f GB/s  %8.3f ms %6.2f GB/s\n", n, best[0] * 1e3,
                   4.0 * n / best[0] / 1e9, best[1] * 1e3, 4.0 * n / best[1] / 1e9, best[2] * 1e3,
                   4.0 * n / best[2] / 1e9);
        free(b);
    }
    dp_cli_mpi_finalize();
    return 0;
}
