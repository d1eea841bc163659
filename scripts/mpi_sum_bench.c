/* scripts/mpi_sum_bench.c: time of the gradient sum of `dpsgd train` under MPI (MPI_Reduce to
 * rank 0 + MPI_Bcast of a float buffer, as tools/mpi_comm.c does) for several model sizes.
 * Not part of the build (it needs MPI):
 *   mpicc -O2 scripts/mpi_sum_bench.c -o /tmp/mpi_sum_bench
 *   mpirun --allow-run-as-root -np 2 /tmp/mpi_sum_bench
 * Prints "floats  ms_per_sum  GB/s (buffer bytes / time)" on rank 0; docs/distributed.md. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const long sizes[] = {26010, 109386, 1000000, 4000000, 15600000};
    for (int s = 0; s < 5; s++) {
        long n = sizes[s];
        float *b = malloc(sizeof(float) * (size_t)n);
        for (long i = 0; i < n; i++) b[i] = (float)(i % 7) * 0.5f;
        int reps = n > 4000000 ? 10 : 50;
        MPI_Barrier(MPI_COMM_WORLD);
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Reduce(rank == 0 ? MPI_IN_PLACE : b, b, (int)n, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
            MPI_Bcast(b, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
            double t = MPI_Wtime() - t0;
            if (t < best) best = t;
        }
        if (rank == 0) printf("%9ld floats  %8.3f ms  %6.2f GB/s\n", n, best * 1e3, 4.0 * n / best / 1e9);
        free(b);
    }
    MPI_Finalize();
    return 0;
}
