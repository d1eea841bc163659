/* bench_scatter: time dp_scatter_dataset (J = 2, L = 8: 81 channels of 7 x 7) on the
 * Fashion-MNIST training set (60,000 images of 28 x 28), as the ScatterNet recipe of Tramer &
 * Boneh (2021) needs it once before training.
 * Usage: bench_scatter [DIR | --synthetic] [N] [J] [L]
 *   DIR: a Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist; synthetic
 *   uniform pixels of the same shape if it cannot be read, or with --synthetic);
 *   N: use the first N images (default all, 60,000). Threads: OMP_NUM_THREADS.
 * The features are private data (functions of the images): this program keeps them in
 * memory only and prints timings and shapes, never values. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
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

static int synthetic(size_t n, dp_dataset *d) {
    memset(d, 0, sizeof *d);
    d->n = n, d->c = 1, d->h = 28, d->w = 28, d->dim = 784, d->n_classes = 10;
    d->x = dp_alloc(sizeof(float) * n * d->dim);
    d->y = dp_alloc(sizeof(int32_t) * n);
    if (!d->x || !d->y) return 0;
    dp_rng r;
    dp_rng_seed(&r, 1);
    for (size_t i = 0; i < n * d->dim; i++) d->x[i] = (float)dp_rng_uniform(&r);
    for (size_t i = 0; i < n; i++) d->y[i] = (int32_t)(i % 10);
    return 1;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
    size_t n_max = argc > 2 ? (size_t)atol(argv[2]) : 0;
    int J = argc > 3 ? atoi(argv[3]) : 2, L = argc > 4 ? atoi(argv[4]) : 8;
    dp_dataset d;
    const char *what = "Fashion-MNIST train";
    double t0 = now();
    if (strcmp(dir, "--synthetic") == 0 || dp_dataset_load_mnist_dir(dir, 1, &d) != DP_OK) {
        if (strcmp(dir, "--synthetic") != 0) fprintf(stderr, "bench_scatter: %s; using synthetic images\n", dp_last_error());
        what = "synthetic uniform";
        if (!synthetic(n_max ? n_max : 60000, &d)) {
            fprintf(stderr, "bench_scatter: out of memory\n");
            return 1;
        }
    }
    if (n_max && n_max < d.n) d.n = n_max; /* the first n_max rows (the arrays stay as allocated) */
    double t_load = now() - t0;

    dp_scatter *s;
    t0 = now();
    if (dp_scatter_create(d.h, d.w, J, L, &s) != DP_OK) {
        fprintf(stderr, "bench_scatter: %s\n", dp_last_error());
        dp_dataset_free(&d);
        return 1;
    }
    double t_plan = now() - t0;
    dp_scatter_info in = dp_scatter_get_info(s);
    dp_scatter_destroy(s);

    dp_mem_reset_peak();
    dp_dataset f;
    t0 = now();
    dp_status st = dp_scatter_dataset(&d, J, L, &f);
    double t = now() - t0;
    if (st != DP_OK) {
        fprintf(stderr, "bench_scatter: %s\n", dp_last_error());
        dp_dataset_free(&d);
        return 1;
    }
    int finite = 1; /* a check, not a release: only whether every value is finite is printed */
    for (size_t i = 0; i < f.n * f.dim; i++) finite &= isfinite(f.x[i]) != 0;
    printf("scattering J=%d L=%d of %zu %s images %dx%d -> %d x %d x %d (%.0f MB of features), %d threads\n", J, L,
           d.n, what, d.h, d.w, f.c, f.h, f.w, 4e-6 * (double)f.n * (double)f.dim, omp_get_max_threads());
    printf("  load %.2f s, plan (filters + FFTW plans) %.3f s (padded grid %d x %d)\n", t_load, t_plan, in.pad_h,
           in.pad_w);
    printf("  dp_scatter_dataset: %.2f s, %.0f images/s, %.1f us per image; peak tracked memory %.0f MB; all finite: %s\n",
           t, (double)d.n / t, 1e6 * t / (double)d.n, 1e-6 * (double)dp_mem_get().peak_bytes, finite ? "yes" : "NO");
    dp_dataset_free(&f);
    dp_dataset_free(&d);
    return finite ? 0 : 1;
}
