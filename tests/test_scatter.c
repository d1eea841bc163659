/* test_scatter: the 2-D scattering transform (src/nn/scatter.c, docs/scatter.md).
 *   (a) the FFT path against a direct computation in double: reflect padding, circular
 *       convolutions in space with the filters brought back to space, subsampling, modulus,
 *       every output channel, in Kymatio's channel order;
 *   (f) the filters against their closed form in the Fourier domain (Poisson summation of the
 *       Gaussian's transform): sigma, xi, angle, slant, normalisation, Morlet zero mean, and
 *       the cropped levels;
 *   (b) Littlewood-Paley bounds of the bank;
 *   (c) translation by 2^J pixels shifts every output by one coefficient;
 *   (d) shapes, 81 channels for J = 2, L = 8 on 28 x 28, path metadata, errors;
 *   (e) determinism and independence of the thread count. */
#include <omp.h>

#include "test.h"

#define PI 3.14159265358979323846

/* ---- (a) the direct reference, double precision ----------------------------------------- */

static int refl(int t, int n) { /* numpy 'reflect', any distance */
    int p = 2 * (n - 1);
    t %= p;
    if (t < 0) t += p;
    return t >= n ? p - t : t;
}

/* the spatial filter of a Fourier-domain filter F (m x n, real): h = IDFT(F), complex, by the
 * definition (one dimension at a time) */
static void spatial(const float *F, int m, int n, double *hr, double *hi) {
    double *tr = malloc(sizeof(double) * m * n), *ti = malloc(sizeof(double) * m * n);
    for (int k = 0; k < m; k++) /* t[k][v] = sum_l F[k][l] e^{2 pi i l v / n} */
        for (int v = 0; v < n; v++) {
            double ar = 0, ai = 0;
            for (int l = 0; l < n; l++) {
                double a = 2 * PI * (double)((l * v) % n) / n;
                ar += F[k * n + l] * cos(a), ai += F[k * n + l] * sin(a);
            }
            tr[k * n + v] = ar, ti[k * n + v] = ai;
        }
    for (int u = 0; u < m; u++) /* h[u][v] = sum_k t[k][v] e^{2 pi i k u / m} / (m n) */
        for (int v = 0; v < n; v++) {
            double ar = 0, ai = 0;
            for (int k = 0; k < m; k++) {
                double a = 2 * PI * (double)((k * u) % m) / m, c = cos(a), sn = sin(a);
                ar += tr[k * n + v] * c - ti[k * n + v] * sn, ai += tr[k * n + v] * sn + ti[k * n + v] * c;
            }
            hr[u * n + v] = ar / (m * n), hi[u * n + v] = ai / (m * n);
        }
    free(tr), free(ti);
}

/* y = (x circularly convolved with h) at the points s*a, on an m x n grid; complex, double */
static void conv_sub(const double *xr, const double *xi, const double *hr, const double *hi, int m, int n, int s,
                     double *yr, double *yi) {
    for (int a = 0; a < m / s; a++)
        for (int b = 0; b < n / s; b++) {
            double sr = 0, si = 0;
            for (int u = 0; u < m; u++)
                for (int v = 0; v < n; v++) {
                    int p = ((s * a - u) % m + m) % m, q = ((s * b - v) % n + n) % n;
                    double x_r = xr[p * n + q], x_i = xi[p * n + q];
                    sr += hr[u * n + v] * x_r - hi[u * n + v] * x_i;
                    si += hr[u * n + v] * x_i + hi[u * n + v] * x_r;
                }
            yr[a * (n / s) + b] = sr;
            yi[a * (n / s) + b] = si;
        }
}

typedef struct {
    int M, N;
    double *re, *im; /* spatial filter */
} sfilt;

/* The scattering of one image, written from the definition: out is K x oh x ow. */
static void reference(const dp_scatter *s, const float *img, double *out) {
    dp_scatter_info in = dp_scatter_get_info(s);
    const int J = in.J, L = in.L, M = in.pad_h, N = in.pad_w, oh = in.out_h, ow = in.out_w;
    const size_t big = (size_t)M * N;
    sfilt phi[8], *psi = calloc((size_t)J * L * J, sizeof *psi);
    for (int r = 0; r < J; r++) {
        phi[r].M = M >> r, phi[r].N = N >> r;
        phi[r].re = malloc(sizeof(double) * big), phi[r].im = malloc(sizeof(double) * big);
        spatial(dp_scatter_filter(s, -1, r), M >> r, N >> r, phi[r].re, phi[r].im);
    }
    for (int f = 0; f < J * L; f++)
        for (int r = 0; r < J; r++) {
            const float *F = dp_scatter_filter(s, f, r);
            if (!F) continue;
            sfilt *p = &psi[f * J + r];
            p->M = M >> r, p->N = N >> r;
            p->re = malloc(sizeof(double) * big), p->im = malloc(sizeof(double) * big);
            spatial(F, M >> r, N >> r, p->re, p->im);
        }
    dp_clear_error();
    double *xr = calloc(big, sizeof(double)), *zero = calloc(big, sizeof(double));
    double *u1 = calloc(big, sizeof(double)), *u2 = calloc(big, sizeof(double));
    double *tr = calloc(big, sizeof(double)), *ti = calloc(big, sizeof(double));
    const int pad = 1 << J;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) xr[i * N + j] = img[refl(i - pad, in.h) * in.w + refl(j - pad, in.w)];
    /* low-pass at resolution r, subsample to J, crop one coefficient on each side */
    int k = 0, k2 = 1 + J * L;
#define LOWPASS(sig, r, dst)                                                                                           \
    do {                                                                                                               \
        conv_sub(sig, zero, phi[r].re, phi[r].im, M >> (r), N >> (r), 1 << (J - (r)), tr, ti);                          \
        for (int a = 0; a < oh; a++)                                                                                   \
            for (int b = 0; b < ow; b++) (dst)[a * ow + b] = tr[(a + 1) * (N >> J) + b + 1];                            \
    } while (0)
    LOWPASS(xr, 0, out);
    k = 1;
    for (int n1 = 0; n1 < J * L; n1++, k++) {
        int j1 = n1 / L;
        sfilt *p = &psi[n1 * J];
        conv_sub(xr, zero, p->re, p->im, M, N, 1 << j1, tr, ti);
        for (size_t i = 0; i < big >> (2 * j1); i++) u1[i] = hypot(tr[i], ti[i]);
        LOWPASS(u1, j1, out + (size_t)k * oh * ow);
        for (int n2 = (j1 + 1) * L; n2 < J * L; n2++, k2++) {
            int j2 = n2 / L;
            sfilt *q = &psi[n2 * J + j1];
            conv_sub(u1, zero, q->re, q->im, M >> j1, N >> j1, 1 << (j2 - j1), tr, ti);
            for (size_t i = 0; i < big >> (2 * j2); i++) u2[i] = hypot(tr[i], ti[i]);
            LOWPASS(u2, j2, out + (size_t)k2 * oh * ow);
        }
    }
#undef LOWPASS
    for (int r = 0; r < J; r++) free(phi[r].re), free(phi[r].im);
    for (int f = 0; f < J * L * J; f++) free(psi[f].re), free(psi[f].im);
    free(psi), free(xr), free(zero), free(u1), free(u2), free(tr), free(ti);
}

static double rel_err_d(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}

static void fill_image(float *x, int h, int w, dp_rng *r) {
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) /* noise plus an edge and a bar: every band gets energy */
            x[i * w + j] = (float)(0.5 * dp_rng_uniform(r) + (j > w / 2 ? 0.7 : 0.0) + (abs(i - j) < 2 ? 0.5 : 0.0));
}

static void test_direct(int h, int w, int J, int L) {
    dp_scatter *s = NULL;
    CHECK_OK(dp_scatter_create(h, w, J, L, &s));
    if (!s) return;
    dp_scatter_info in = dp_scatter_get_info(s);
    const int n = 2, K = in.channels;
    const size_t plane = (size_t)in.out_h * in.out_w;
    float *x = malloc(sizeof(float) * n * h * w), *y = malloc(sizeof(float) * n * K * plane);
    double *ref = malloc(sizeof(double) * K * plane);
    dp_rng r;
    dp_rng_seed(&r, (uint64_t)(h * 1000 + w * 10 + J * 100 + L));
    for (int i = 0; i < n; i++) fill_image(x + (size_t)i * h * w, h, w, &r);
    CHECK_OK(dp_scatter_apply(s, x, n, y));
    double worst = 0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        reference(s, x + (size_t)i * h * w, ref);
        for (int k = 0; k < K; k++) {
            double e = rel_err_d(y + ((size_t)i * K + k) * plane, ref + k * plane, plane);
            if (e > worst) worst = e;
            if (!(e <= 1e-5)) {
                if (bad++ < 5) fprintf(stderr, "  %dx%d J=%d L=%d image %d channel %d: rel err %.3g\n", h, w, J, L, i, k, e);
            }
        }
    }
    CHECK(bad == 0);
    printf("(a) %2dx%-2d J=%d L=%d: %3d channels, worst per-channel relative error vs direct double: %.2g\n", h, w,
           J, L, K, worst);
    free(x), free(y), free(ref);
    dp_scatter_destroy(s);
}

/* ---- (f) filters against the closed form -------------------------------------------------- */

/* Fourier transform, at omega on the 2 pi-periodic torus, of Kymatio's gabor: the Gaussian
 * exp(-u^T C u) e^{i xi.u} / (2 * 3.1415 sigma^2 / slant) has transform
 * (pi / 3.1415) exp(-(sigma^2 / 2) (v1^2 + v2^2 / slant^2)), v = R^T (omega - xi); sampling on
 * the integer grid sums it over omega + 2 pi n. */
static double gabor_hat(double w1, double w2, double sigma, double theta, double xi, double slant) {
    double c = cos(theta), sn = sin(theta), sum = 0;
    for (int a = -4; a <= 4; a++)
        for (int b = -4; b <= 4; b++) {
            double d1 = w1 + 2 * PI * a - xi * c, d2 = w2 + 2 * PI * b - xi * sn;
            double v1 = c * d1 + sn * d2, v2 = -sn * d1 + c * d2;
            sum += exp(-0.5 * sigma * sigma * (v1 * v1 + v2 * v2 / (slant * slant)));
        }
    return PI / 3.1415 * sum;
}

static double psi_hat(double w1, double w2, int j, int t, int L) {
    double sigma = 0.8 * pow(2, j), theta = ((int)(L - L / 2.0 - 1) - t) * PI / L, xi = 0.75 * PI / pow(2, j);
    double slant = 4.0 / L;
    double K = gabor_hat(0, 0, sigma, theta, xi, slant) / gabor_hat(0, 0, sigma, theta, 0, slant);
    return gabor_hat(w1, w2, sigma, theta, xi, slant) - K * gabor_hat(w1, w2, sigma, theta, 0, slant);
}

static void test_filters(int h, int w, int J, int L) {
    dp_scatter *s = NULL;
    CHECK_OK(dp_scatter_create(h, w, J, L, &s));
    if (!s) return;
    dp_scatter_info in = dp_scatter_get_info(s);
    const int M = in.pad_h, N = in.pad_w;
    double worst = 0;
    for (int f = -1; f < J * L; f++) {
        const float *F = dp_scatter_filter(s, f, 0);
        CHECK(F != NULL);
        if (!F) continue;
        for (int k = 0; k < M; k++)
            for (int l = 0; l < N; l++) {
                double w1 = 2 * PI * k / M, w2 = 2 * PI * l / N;
                double e = f < 0 ? gabor_hat(w1, w2, 0.8 * pow(2, J - 1), 0, 0, 1) : psi_hat(w1, w2, f / L, f % L, L);
                double d = fabs(F[k * N + l] - e);
                if (d > worst) worst = d;
            }
        /* the cropped levels: the low frequencies of level 0, the Nyquist row/column taking the
         * negative frequency */
        for (int r = 1; r < J; r++) {
            const float *G = dp_scatter_filter(s, f, r);
            if (!G) continue;
            int m = M >> r, n = N >> r, same = 1;
            for (int k = 0; k < m; k++)
                for (int l = 0; l < n; l++) {
                    int k0 = k < m / 2 ? k : k - m + M, l0 = l < n / 2 ? l : l - n + N;
                    same &= G[k * n + l] == F[k0 * N + l0];
                }
            CHECK(same);
        }
    }
    printf("(f) %dx%d J=%d L=%d: filters vs closed form, max abs difference %.2g\n", h, w, J, L, worst);
    CHECK(worst < 1e-6);
    /* which levels are kept (Kymatio's set) */
    CHECK(dp_scatter_filter(s, -1, J) == NULL);
    CHECK(dp_scatter_filter(s, J * L, 0) == NULL);
    CHECK(dp_scatter_filter(s, 0, 1) == NULL); /* psi_0 has level 0 only */
    if (J >= 3) CHECK(dp_scatter_filter(s, (J - 1) * L, J - 2) != NULL && dp_scatter_filter(s, (J - 1) * L, J - 1) == NULL);
    dp_clear_error();
    dp_scatter_destroy(s);
}

/* ---- (b) Littlewood-Paley ----------------------------------------------------------------- */

/* A(k) = phi(k)^2 + 1/2 sum_{j,t} (psi_{j,t}(k)^2 + psi_{j,t}(-k)^2) over the padded grid: the
 * wavelets for the angles in [pi, 2 pi) are the conjugates of those kept, so each counts at k
 * and -k. Then ||x||^2 A_min <= ||Wx||^2 <= ||x||^2 A_max for the wavelet transform W: the bank
 * is a frame (no frequency lost, A > 0) but not a tight one (A is not 1). Kymatio's filters give
 * A = phi(0)^2 = (pi / 3.1415)^2 at 0 (the largest value up to J = 2; 1.019 for J = 3) and
 * their smallest value at the corners (pi, pi), which the finest wavelets (centred at 3 pi / 4
 * on their axis) reach only with their tails: 0.123; on the disc |omega| <= pi at least 0.34.
 * The bounds asserted bracket those values. */
static void lp_bounds(int h, int w, int J, int L, double *lo, double *hi, double *lo_disc) {
    dp_scatter *s = NULL;
    *lo = *hi = *lo_disc = NAN;
    if (dp_scatter_create(h, w, J, L, &s) != DP_OK) return;
    dp_scatter_info in = dp_scatter_get_info(s);
    const int M = in.pad_h, N = in.pad_w;
    const float *phi = dp_scatter_filter(s, -1, 0);
    *lo = *lo_disc = INFINITY, *hi = 0;
    for (int k = 0; k < M; k++)
        for (int l = 0; l < N; l++) {
            int mk = (M - k) % M, ml = (N - l) % N;
            double a = (double)phi[k * N + l] * phi[k * N + l];
            for (int f = 0; f < J * L; f++) {
                const float *p = dp_scatter_filter(s, f, 0);
                a += 0.5 * ((double)p[k * N + l] * p[k * N + l] + (double)p[mk * N + ml] * p[mk * N + ml]);
            }
            double w1 = 2 * PI * (k <= M / 2 ? k : k - M) / M, w2 = 2 * PI * (l <= N / 2 ? l : l - N) / N;
            if (a < *lo) *lo = a;
            if (a > *hi) *hi = a;
            if (hypot(w1, w2) <= PI && a < *lo_disc) *lo_disc = a;
        }
    dp_scatter_destroy(s);
}

static void test_littlewood_paley(void) {
    double lo, hi, disc;
    lp_bounds(28, 28, 2, 8, &lo, &hi, &disc);
    printf("(b) Littlewood-Paley, 28x28 J=2 L=8: %.4f <= A <= %.4f (%.4f <= A on |omega| <= pi)\n", lo, hi, disc);
    CHECK(lo > 0.115 && lo < 0.13);
    CHECK(hi > 1.0 && hi < 1.001);
    CHECK(disc > 0.34 && disc < 0.36);
    lp_bounds(32, 32, 3, 8, &lo, &hi, &disc);
    printf("(b) Littlewood-Paley, 32x32 J=3 L=8: %.4f <= A <= %.4f (%.4f <= A on |omega| <= pi)\n", lo, hi, disc);
    CHECK(lo > 0.115 && lo < 0.13);
    CHECK(hi > 1.01 && hi < 1.03);
    CHECK(disc > 0.34 && disc < 0.36);
}

/* ---- (c) translation ------------------------------------------------------------------------ */

/* An image that is zero within 2^J + shift pixels of its border: its reflect-padded grid is the
 * content surrounded by zeros, so moving the content by d = 2^J pixels is a circular shift of the
 * padded grid, and every output (all orders) moves by exactly one coefficient (up to rounding). */
static void test_translation(void) {
    const int h = 32, w = 32, J = 2, d = 4;
    dp_scatter *s = NULL;
    CHECK_OK(dp_scatter_create(h, w, J, 8, &s));
    if (!s) return;
    dp_scatter_info in = dp_scatter_get_info(s);
    const int K = in.channels, oh = in.out_h, ow = in.out_w;
    float x[2][32 * 32] = {{0}};
    dp_rng r;
    dp_rng_seed(&r, 7);
    for (int i = 8; i < 20; i++)
        for (int j = 9; j < 22; j++) x[0][i * w + j] = (float)dp_rng_uniform(&r);
    for (int i = 8; i < 20; i++) /* down by d rows and right by d columns */
        for (int j = 9; j < 22; j++) x[1][(i + d) * w + j + d] = x[0][i * w + j];
    float *y = malloc(sizeof(float) * 2 * K * oh * ow);
    CHECK_OK(dp_scatter_apply(s, &x[0][0], 2, y));
    double num = 0, den = 0, moved = 0;
    for (int k = 0; k < K; k++)
        for (int a = 0; a + 1 < oh; a++)
            for (int b = 0; b + 1 < ow; b++) {
                double p = y[((size_t)k * oh + a) * ow + b], q = y[((size_t)(K + k) * oh + a + 1) * ow + b + 1];
                double unshifted = y[((size_t)(K + k) * oh + a) * ow + b];
                num += (p - q) * (p - q), den += p * p, moved += (p - unshifted) * (p - unshifted);
            }
    printf("(c) translation by %d pixels: relative difference to the shifted output %.2g (unshifted: %.2g)\n", d,
           sqrt(num / den), sqrt(moved / den));
    CHECK(sqrt(num / den) < 1e-5);
    CHECK(sqrt(moved / den) > 0.1); /* the comparison is not vacuous */
    free(y);
    dp_scatter_destroy(s);
}

/* ---- (d) shapes, metadata, errors ------------------------------------------------------------ */

static void test_shapes_and_errors(void) {
    dp_scatter *s = NULL;
    CHECK_OK(dp_scatter_create(28, 28, 2, 8, &s));
    dp_scatter_info in = dp_scatter_get_info(s);
    CHECK(in.channels == 81 && in.out_h == 7 && in.out_w == 7 && in.pad_h == 36 && in.pad_w == 36);
    /* Kymatio's channel order */
    int o, a, b, c, e, ok = 1, k = 0;
    CHECK_OK(dp_scatter_path(s, k++, &o, &a, &b, &c, &e));
    CHECK(o == 0 && a == -1 && b == -1 && c == -1 && e == -1);
    for (int j = 0; j < 2; j++)
        for (int t = 0; t < 8; t++)
            ok &= dp_scatter_path(s, k++, &o, &a, &b, &c, &e) == DP_OK && o == 1 && a == j && b == t && c == -1;
    for (int j1 = 0; j1 < 2; j1++)
        for (int t1 = 0; t1 < 8; t1++)
            for (int j2 = j1 + 1; j2 < 2; j2++)
                for (int t2 = 0; t2 < 8; t2++)
                    ok &= dp_scatter_path(s, k++, &o, &a, &b, &c, &e) == DP_OK && o == 2 && a == j1 && b == t1 &&
                          c == j2 && e == t2;
    CHECK(ok && k == 81);
    CHECK(dp_scatter_path(s, 81, &o, &a, &b, &c, &e) == DP_ERR_INVALID);
    CHECK(dp_scatter_path(s, -1, &o, &a, &b, &c, &e) == DP_ERR_INVALID);
    /* a constant image: order 0 is the constant times phi's mean (pi / 3.1415, Kymatio's
     * normalisation), orders 1 and 2 vanish (Morlet wavelets have zero mean) */
    float img[28 * 28], y[81 * 49];
    for (int i = 0; i < 28 * 28; i++) img[i] = 0.5f;
    CHECK_OK(dp_scatter_apply(s, img, 1, y));
    double m0 = 0, m12 = 0;
    for (int i = 0; i < 49; i++) m0 = fmax(m0, fabs(y[i] - 0.5 * PI / 3.1415));
    for (int i = 49; i < 81 * 49; i++) m12 = fmax(m12, fabs(y[i]));
    CHECK(m0 < 1e-6 && m12 < 1e-5);
    /* a batch [B, C, H, W] is B C images; input channel c gives output channels c K .. */
    float x3[3 * 784], y3[3 * 81 * 49];
    dp_rng r;
    dp_rng_seed(&r, 3);
    for (int i = 0; i < 3 * 784; i++) x3[i] = (float)dp_rng_uniform(&r);
    CHECK_OK(dp_scatter_apply(s, x3, 3, y3));
    CHECK_OK(dp_scatter_apply(s, x3 + 2 * 784, 1, y));
    CHECK(memcmp(y, y3 + 2 * 81 * 49, sizeof y) == 0);
    CHECK_OK(dp_scatter_apply(s, NULL, 0, NULL));
    CHECK(dp_scatter_apply(s, NULL, 1, y) == DP_ERR_INVALID);
    dp_scatter_destroy(s);
    dp_scatter_destroy(NULL);

    /* K = 1 + J L + L^2 J (J - 1) / 2 */
    s = NULL;
    CHECK_OK(dp_scatter_create(32, 64, 3, 6, &s));
    in = dp_scatter_get_info(s);
    CHECK(in.channels == 1 + 18 + 36 * 3 && in.out_h == 4 && in.out_w == 8);
    dp_scatter_destroy(s);
    CHECK_OK(dp_scatter_create(8, 8, 3, 1, &s)); /* 2^J = H: the reflection wraps past the image */
    CHECK(dp_scatter_get_info(s).channels == 1 + 3 + 3 && dp_scatter_get_info(s).out_h == 1);
    dp_scatter_destroy(s);

    /* errors name the problem */
    s = (dp_scatter *)&s;
    CHECK(dp_scatter_create(30, 28, 2, 8, &s) == DP_ERR_INVALID && strstr(dp_last_error(), "not divisible"));
    CHECK(s == (dp_scatter *)&s); /* out untouched on failure */
    CHECK(dp_scatter_create(28, 28, 3, 8, &s) == DP_ERR_INVALID && strstr(dp_last_error(), "not divisible"));
    CHECK(dp_scatter_create(28, 28, 5, 8, &s) == DP_ERR_INVALID && strstr(dp_last_error(), "too large"));
    CHECK(dp_scatter_create(28, 28, 0, 8, &s) == DP_ERR_INVALID && strstr(dp_last_error(), "J = 0"));
    CHECK(dp_scatter_create(28, 28, 2, 0, &s) == DP_ERR_INVALID && strstr(dp_last_error(), "L = 0"));
    CHECK(dp_scatter_create(28, 28, 2, DP_SCATTER_MAX_L + 1, &s) == DP_ERR_INVALID);
    CHECK(dp_scatter_create(0, 28, 1, 8, &s) == DP_ERR_INVALID);
    CHECK(dp_scatter_create(28, 28, 2, 8, NULL) == DP_ERR_INVALID);

    /* datasets */
    dp_dataset d = {0}, o2 = {0};
    d.n = 3, d.c = 2, d.h = 16, d.w = 8, d.dim = 2 * 16 * 8, d.n_classes = 4;
    d.x = dp_alloc(sizeof(float) * d.n * d.dim);
    d.y = dp_alloc(sizeof(int32_t) * d.n);
    for (size_t i = 0; i < d.n * d.dim; i++) d.x[i] = (float)dp_rng_uniform(&r);
    for (size_t i = 0; i < d.n; i++) d.y[i] = (int32_t)(3 - i);
    CHECK_OK(dp_scatter_dataset(&d, 2, 4, &o2));
    CHECK(o2.n == 3 && o2.c == 2 * 25 && o2.h == 4 && o2.w == 2 && o2.dim == (size_t)50 * 8 && o2.n_classes == 4);
    CHECK(o2.y && o2.y[0] == 3 && o2.y[2] == 1);
    CHECK_OK(dp_dataset_validate(&o2, "scattered", 1, 0));
    /* example 1, input channel 1 = image 3 of the batch: output channels 25..49 of example 1 */
    CHECK_OK(dp_scatter_create(16, 8, 2, 4, &s));
    float *one = malloc(sizeof(float) * 25 * 8);
    CHECK_OK(dp_scatter_apply(s, d.x + 3 * 128, 1, one));
    CHECK(memcmp(one, o2.x + o2.dim + 25 * 8, sizeof(float) * 25 * 8) == 0);
    free(one);
    dp_scatter_destroy(s);
    dp_dataset_free(&o2);
    dp_dataset o3 = {0};
    CHECK(dp_scatter_dataset(&d, 4, 4, &o3) == DP_ERR_INVALID && strstr(dp_last_error(), "too large") && !o3.x);
    /* out of memory: the output block, the plan, the per-thread scratch */
    dp_mem_set_limit(dp_mem_get().live_bytes + 20000);
    CHECK(dp_scatter_dataset(&d, 2, 4, &o3) == DP_ERR_NOMEM && !o3.x);
    dp_mem_set_limit(0);
    for (int nth = 1; nth <= 40; nth++) { /* fail each allocation in turn: no leak, a clean error */
        dp_mem_fail_after(nth);
        dp_status st = dp_scatter_dataset(&d, 2, 4, &o3);
        dp_mem_fail_after(0);
        CHECK(st == DP_OK || (st == DP_ERR_NOMEM && !o3.x && strstr(dp_last_error(), "memory")));
        if (st == DP_OK) dp_dataset_free(&o3);
    }
    d.dim = 5;
    CHECK(dp_scatter_dataset(&d, 2, 4, &o3) == DP_ERR_INVALID && strstr(dp_last_error(), "dim 5"));
    CHECK(dp_scatter_dataset(NULL, 2, 4, &o3) == DP_ERR_INVALID);
    dp_dataset_free(&d);
    printf("(d) shapes, channel order, errors checked\n");
}

/* ---- (e) determinism and thread count ---------------------------------------------------------- */

static void test_threads(void) {
    dp_dataset d = {0}, a = {0}, b = {0}, c = {0};
    d.n = 64, d.c = 1, d.h = 28, d.w = 28, d.dim = 784, d.n_classes = 10;
    d.x = dp_alloc(sizeof(float) * d.n * d.dim);
    d.y = dp_calloc(d.n, sizeof(int32_t));
    dp_rng r;
    dp_rng_seed(&r, 11);
    for (size_t i = 0; i < d.n * d.dim; i++) d.x[i] = (float)dp_rng_uniform(&r);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    CHECK_OK(dp_scatter_dataset(&d, 2, 8, &a));
    omp_set_num_threads(2);
    CHECK_OK(dp_scatter_dataset(&d, 2, 8, &b));
    CHECK_OK(dp_scatter_dataset(&d, 2, 8, &c));
    omp_set_num_threads(saved);
    size_t bytes = sizeof(float) * d.n * 81 * 49;
    CHECK(a.x && b.x && c.x && memcmp(a.x, b.x, bytes) == 0 && memcmp(b.x, c.x, bytes) == 0);
    printf("(e) 1 and 2 threads, and two runs: bit-identical\n");
    dp_dataset_free(&a), dp_dataset_free(&b), dp_dataset_free(&c), dp_dataset_free(&d);
}

int main(void) {
    test_filters(28, 28, 2, 8);
    test_filters(32, 32, 3, 8);
    test_filters(16, 24, 2, 4);
    test_littlewood_paley();
    test_direct(16, 16, 2, 4);
    test_direct(16, 16, 2, 8);
    test_direct(16, 24, 2, 4);
    test_direct(16, 16, 3, 4);
    test_direct(8, 16, 3, 2);
    test_translation();
    test_shapes_and_errors();
    test_threads();
    return t_finish("test_scatter");
}
