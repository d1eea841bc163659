/* bench_accounting: time of epsilon for 100,000 steps (q 0.01, sigma 1, delta 1e-5) with
 * each accountant, of a heterogeneous history, and of calibrating sigma for epsilon 3 at
 * 10,000 steps. Usage: bench_accounting [steps]. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dpsgd.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 100000;
    printf("epsilon, q 0.01, sigma 1, %ld steps, delta 1e-5\n", steps);
    dp_accountant *one = NULL;
    if (dp_accountant_create(&one) || dp_accountant_step(one, 0.01, 1.0, steps)) return 1;
    for (int k = 0; k < DP_ACCT_COUNT; k++) {
        dp_epsilon_report r;
        double t = now();
        dp_status st = dp_accountant_epsilon(one, k, 1e-5, NULL, &r);
        double el = now() - t;
        if (st) {
            printf("  %s: error %s\n", dp_accountant_kind_name(k), dp_last_error());
            continue;
        }
        printf("  %-4s eps %.4f  [%.4f, %.4f]  %.3f s\n", dp_accountant_kind_name(k), r.epsilon,
               r.lower, r.upper, el);
    }
    dp_accountant_destroy(one);
    dp_accountant *a = NULL;
    if (dp_accountant_create(&a)) return 1;
    for (int i = 0; i < 10; i++) dp_accountant_step(a, 0.01, 0.8 + 0.05 * i, steps / 10);
    printf("heterogeneous: 10 entries (sigma 0.8 .. 1.25), %ld steps\n", steps / 10 * 10);
    for (int k = 0; k < DP_ACCT_COUNT; k++) {
        dp_epsilon_report r;
        double t = now();
        dp_status st = dp_accountant_epsilon(a, k, 1e-5, NULL, &r);
        printf("  %-4s eps %.4f  %.3f s%s\n", dp_accountant_kind_name(k), st ? -1.0 : r.epsilon,
               now() - t, st ? " (error)" : "");
    }
    dp_accountant_destroy(a);
    printf("calibration: epsilon 3, q 0.01, 10000 steps, delta 1e-5\n");
    for (int k = 0; k < DP_ACCT_COUNT; k++) {
        if (!dp_accountant_kind_is_bound(k)) continue; /* refused: an approximation cannot choose the noise */
        double s = 0, t = now();
        dp_status st = dp_calibrate_sigma_kind(k, 3.0, 1e-5, 0.01, 10000, 0.0, &s);
        printf("  %-4s sigma %.4f  %.3f s%s\n", dp_accountant_kind_name(k), s, now() - t,
               st ? " (error)" : "");
    }
    return 0;
}
