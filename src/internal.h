/* internal.h (internal): small helpers shared by the library's source files. */
#ifndef DP_INTERNAL_H
#define DP_INTERNAL_H
#include <math.h>

/* seconds on the monotonic clock (for elapsed times) */
double dp__now_s(void);

/* A standard normal by the polar Box-Muller method from uniforms in (-1, 1) made of
 * uniform(state) (in [0, 1)); the second value of each accepted pair is kept in *spare
 * (*has_spare set) and returned by the next call. Shared by dp_rng_normal and
 * dp_csprng_normal. */
static inline double dp__polar_normal(double (*uniform)(void *), void *state, int *has_spare, double *spare) {
    if (*has_spare) {
        *has_spare = 0;
        return *spare;
    }
    double u, v, s;
    do {
        u = 2.0 * uniform(state) - 1.0;
        v = 2.0 * uniform(state) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double m = sqrt(-2.0 * log(s) / s);
    *spare = v * m;
    *has_spare = 1;
    return u * m;
}
#endif
