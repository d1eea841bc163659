/* bench_step: the default CNN's training step without the optimizer, noise or data loading
 * (forward, cross-entropy, then the non-private backward or the clipped gradient of a
 * clipping mode, C = 0.1 as the default run), on N(0,1) images, for counting what a mode
 * adds in instructions, which unlike times do not move with a shared machine's state:
 *
 *     OMP_NUM_THREADS=1 valgrind --tool=callgrind ./build/bench_step no-dp 256 4
 *     OMP_NUM_THREADS=1 valgrind --tool=callgrind ./build/bench_step auto 256 4
 *     callgrind_annotate callgrind.out.PID
 *
 * The first private step unfolds the input for its ghost norms (the forward makes their Grams
 * from the second step on, docs/design.md): compare steps after the first. Without valgrind it
 * prints each step's time. Usage: bench_step MODE [BATCH [STEPS]], MODE no-dp or a clipping
 * mode (vanilla, fast, ghost, bk, auto); defaults auto 256 4. */
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

static int usage(const char *why) {
    fprintf(stderr, "bench_step: %s\nusage: bench_step MODE [BATCH [STEPS]]  (MODE: no-dp, vanilla, fast, ghost, bk, auto)\n",
            why);
    return 2;
}

int main(int argc, char **argv) {
    const char *mode_s = argc > 1 ? argv[1] : "auto";
    if (!strcmp(mode_s, "--help") || !strcmp(mode_s, "-h")) return usage("one training step's passes of the default CNN");
    const int dp = strcmp(mode_s, "no-dp") != 0;
    dp_clip_params cp = dp_clip_default_params();
    cp.max_grad_norm = 0.1;
    if (dp && dp_clip_mode_parse(mode_s, &cp.mode) != DP_OK) {
        fprintf(stderr, "bench_step: unknown mode '%s'\n", mode_s);
        return usage("MODE must be no-dp or a clipping mode");
    }
    const int B = argc > 2 ? atoi(argv[2]) : 256, N = argc > 3 ? atoi(argv[3]) : 4;
    if (B < 1 || B > 65536) return usage("BATCH must be in 1..65536");
    if (N < 1) return usage("STEPS must be at least 1");
    dp_model *m = NULL;
    if (dp_model_create_named("cnn", 1, 28, 28, 10, &m) != DP_OK) {
        fprintf(stderr, "bench_step: %s\n", dp_last_error());
        return 1;
    }
    dp_rng r;
    dp_rng_seed(&r, 1);
    dp_model_init(m, &r);
    float *x = malloc(sizeof(float) * (size_t)B * 784), *dl = malloc(sizeof(float) * (size_t)B * 10);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    if (!x || !dl || !y) {
        fprintf(stderr, "bench_step: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)B * 784; i++) x[i] = (float)dp_rng_normal(&r);
    for (int i = 0; i < B; i++) y[i] = (int32_t)(dp_rng_u64(&r) % 10);
    for (int s = 0; s < N; s++) {
        const double t0 = now();
        const float *logits;
        int bad = 0;
        dp_model_zero_grad(m);
        dp_status st = dp_model_forward(m, x, B, 1, &r, &logits);
        if (st == DP_OK) st = dp_loss_xent(logits, y, B, 10, NULL, dl);
        if (st == DP_OK) st = dp ? dp_model_clipped_grad(m, &cp, dl, B, NULL, NULL, &bad) : dp_model_backward(m, dl, B);
        if (st != DP_OK) {
            fprintf(stderr, "bench_step: step %d: %s\n", s + 1, dp_last_error());
            return 1;
        }
        printf("step %d (%s, batch %d): %.2f ms\n", s + 1, mode_s, B, 1e3 * (now() - t0));
    }
    free(x);
    free(dl);
    free(y);
    dp_model_destroy(m);
    return 0;
}
