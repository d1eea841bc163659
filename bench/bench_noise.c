/* bench_noise: per-step cost of a private step's randomness, seeded (--noise-seed:
 * xoshiro256** and ziggurat normals) against the default OS-seeded ChaCha20 (snapped
 * Box-Muller normals), for the noise on P coordinates and the Poisson sampling of N examples.
 * Usage: bench_noise [P [N [reps]]]; defaults: the default run (26,010 parameters, 60,000
 * examples, q = 2048/60000). Both timed in one process, interleaved. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpsgd.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const size_t P = argc > 1 ? (size_t)atol(argv[1]) : 26010, N = argc > 2 ? (size_t)atol(argv[2]) : 60000;
    const int reps = argc > 3 ? atoi(argv[3]) : 200;
    const double q = 2048.0 / 60000.0, std = 0.18, scale = 1.0 / 2048.0;
    float *g = calloc(P ? P : 1, sizeof *g);
    unsigned char *mask = malloc(P ? P : 1);
    size_t *idx = malloc(sizeof *idx * (N ? N : 1)), c;
    dp_csprng *cr = NULL;
    if (!g || !mask || !idx || P == 0 || reps < 1 || dp_csprng_create(&cr) != DP_OK) {
        fprintf(stderr, "bench_noise: bad arguments or no memory/entropy\n");
        return 1;
    }
    memset(mask, 1, P);
    dp_rng r;
    dp_rng_seed(&r, 1);
    double t[4] = {0};
    /* one untimed round first: the first call would otherwise pay for faulting in g (the
     * seeded noise runs first, and showed about 2x its time at 16.4M coordinates) */
    dp_noise_gaussian_scaled(g, P, mask, std, scale, &r);
    dp_secure_noise_gaussian_scaled(g, P, mask, std, scale, cr);
    for (int i = 0; i < reps; i++) {
        double a = now();
        dp_noise_gaussian_scaled(g, P, mask, std, scale, &r);
        double b = now();
        dp_secure_noise_gaussian_scaled(g, P, mask, std, scale, cr);
        double d = now();
        dp_poisson_sample(&r, N, q, idx, &c);
        double e = now();
        dp_secure_poisson_sample(cr, N, q, idx, &c);
        double f = now();
        t[0] += b - a, t[1] += d - b, t[2] += e - d, t[3] += f - e;
    }
    printf("noise on %zu coordinates: seeded %.3f ms, OS-seeded ChaCha20 %.3f ms\n", P, 1e3 * t[0] / reps,
           1e3 * t[1] / reps);
    printf("Poisson sampling of %zu examples (q %.4f): seeded %.3f ms, OS-seeded ChaCha20 %.3f ms\n", N, q,
           1e3 * t[2] / reps, 1e3 * t[3] / reps);
    dp_csprng_destroy(cr);
    free(g);
    free(mask);
    free(idx);
    return 0;
}
