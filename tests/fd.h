/* fd.h: what the double-precision kernel tests share (test_seq_kernels.c,
 * test_tensor_kernels.c): the file's random stream R, random fills, a dot product, the relative
 * error used for gradients, CHECK_ERR, and central finite differences of L = <u, f(v)>.
 * Include after test.h. */
#ifndef DP_TEST_FD_H
#define DP_TEST_FD_H
#include "test.h"

static dp_rng R;

/* uniform in [-scale, scale) */
static inline void fill(double *a, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) a[i] = scale * (2 * dp_rng_uniform(&R) - 1);
}
/* uniform in [lo, hi) */
static inline void fill_in(double *a, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * dp_rng_uniform(&R);
}
static inline double *dnew(size_t n) { return dp_calloc(n ? n : 1, sizeof(double)); }
static inline double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
/* max |a-b| / max(1e-3, max|b|); NaN anywhere gives NaN */
static inline double max_rel(const double *a, const double *b, size_t n) {
    double mx = 0, sc = 1e-3;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > mx || d != d) mx = d;
        if (fabs(b[i]) > sc) sc = fabs(b[i]);
    }
    return mx / sc;
}

#define CHECK_ERR(what, e, tol)                                                                   \
    do {                                                                                          \
        double e_ = (e);                                                                          \
        CHECK(e_ < (tol));                                                                        \
        if (!(e_ < (tol))) fprintf(stderr, "  %s: error %g (tol %g)\n", what, e_, (double)(tol)); \
    } while (0)

/* g = d <u, y> / d v by central differences (step H), y = f(ctx) reading v in place */
typedef void (*fwd_fn)(void *ctx, double *y);
static const double H = 1e-6;

static inline void fd_grad(fwd_fn f, void *ctx, double *v, size_t nv, const double *u, size_t ny, double *g) {
    double *y = dnew(ny);
    for (size_t j = 0; j < nv; j++) {
        double o = v[j];
        v[j] = o + H;
        f(ctx, y);
        double fp = dot(u, y, ny);
        v[j] = o - H;
        f(ctx, y);
        double fm = dot(u, y, ny);
        v[j] = o;
        g[j] = (fp - fm) / (2 * H);
    }
    dp_free(y);
}
#endif
