/* scatter.c: the 2-D scattering transform with Kymatio's Morlet filter bank (see
 * dpsgd/scatter.h and docs/scatter.md).
 *
 * Kymatio (Scattering2D, filter_bank.py and core/scattering2d.py) is followed exactly where
 * it fixes a number, because a "ScatterNet" result (Tramer & Boneh 2021) is only comparable
 * on the same features:
 *   - padded grid Mp = H + 2^(J+1), Np = W + 2^(J+1) (compute_padding for H, W divisible by
 *     2^J), reflect padding of 2^J on every side (edge not repeated), and the output cropped
 *     by one coefficient on every side after the final subsampling by 2^J;
 *   - gabor(sigma, theta, xi, slant)(u) = sum over 5 x 5 copies of the grid of
 *     exp(-u^T C u + i xi (cos theta, sin theta).u) / (2 * 3.1415 * sigma^2 / slant),
 *     C = R diag(1, slant^2) R^T / (2 sigma^2), with R's cosine and sine rounded to float32
 *     and Kymatio's 3.1415 (not pi): they change the filters by about 1e-7 and 3e-5
 *     (relative) and are kept;
 *   - psi_{j,t} = morlet = gabor(xi) - K gabor(0), K = sum gabor(xi) / sum gabor(0) (zero
 *     mean), sigma = 0.8 2^j, theta = ((int)(L - L/2 - 1) - t) pi / L, xi = 3 pi / 4 / 2^j,
 *     slant = 4 / L; phi = gabor(0.8 2^(J-1), 0, 0, 1);
 *   - each filter is the REAL PART of its DFT on the padded grid; for a signal subsampled by
 *     2^r the filter is cropped to the low frequencies (periodize_filter_fft: a mask, then a
 *     sum of aliases, so the Nyquist row/column takes the negative frequency);
 *   - subsampling by s in the Fourier domain is the mean of the s^2 aliases, i.e. exactly
 *     spatial subsampling of the filtered signal; inverse FFTs are normalised.
 * The filters are built in double (a direct DFT, O(MN(M+N)) per filter: no FFTW double
 * planner to share with the accountants, whose lock is theirs) and kept in float, as
 * Kymatio's torch frontend keeps them.
 *
 * The transform runs in float with FFTW single precision. A real signal's spectrum comes from
 * an r2c FFT and is expanded to the full grid once (the wavelets are not symmetric, and one
 * expansion serves all L or L (J - 1 - j1) wavelets applied to it); the low-pass output is
 * real, so only its half spectrum is formed, from the half spectrum of the signal (phi is
 * even), and inverted with a c2r FFT. Plans are made once per dp_scatter (FFTW_ESTIMATE,
 * under a lock: FFTW's planner is not thread-safe) and run with the new-array execute
 * functions on per-thread scratch, every buffer 64-byte aligned like the arrays the plans were
 * made with, so each image's arithmetic is the same whichever thread runs it.
 */
#define _POSIX_C_SOURCE 200809L
#include "dpsgd/scatter.h"

#include <fftw3.h> /* without <complex.h>: fftwf_complex is float[2] and the arithmetic is ours */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define DP_PI 3.14159265358979323846
enum { MAX_J = 30 }; /* 2^J <= H <= INT_MAX */

struct dp_scatter {
    dp_scatter_info info;
    int mr[MAX_J + 1], nr[MAX_J + 1]; /* grid at resolution r: (Mp >> r) x (Np >> r) */
    int *row_src, *col_src;           /* padded row/column -> image row/column (reflection) */
    float *phi[MAX_J];                /* phi level r, r < J */
    float **psi;                      /* psi level r of filter n at psi[n * J + r]; NULL if not kept */
    float **psi2;                     /* the same, each value twice: multiplies interleaved complex */
    fftwf_plan r2c[MAX_J], c2c[MAX_J], c2r; /* r2c and inverse c2c at r < J; c2r at J */
    /* per-thread scratch, offsets in floats (each a multiple of 16: 64-byte aligned) */
    size_t off_x, off_h, off_f0, off_f1, off_z, off_zo, off_s, off_sr, scratch_floats;
};

static pthread_mutex_t fftwf_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Reflection about the first and last samples (numpy 'reflect', torch ReflectionPad2d):
 * ... 2 1 | 0 1 ... n-1 | n-2 n-3 ..., periodic with period 2(n - 1) for any distance. */
static int reflect(long t, int n) {
    long p = 2L * (n - 1);
    t %= p;
    if (t < 0) t += p;
    return (int)(t >= n ? p - t : t);
}

/* ---- filter bank (double) ------------------------------------------------------------- */

/* Kymatio's gabor_2d on an M x N grid into (re, im). */
static void gabor(int M, int N, double sigma, double theta, double xi, double slant, double *re, double *im) {
    /* Kymatio builds R and R^-1 as float32 arrays: the curvature uses the rounded values */
    double c = (double)(float)cos(theta), sn = (double)(float)sin(theta), s2 = slant * slant;
    double k = 1.0 / (2.0 * sigma * sigma);
    double c00 = (c * c + s2 * sn * sn) * k, c11 = (sn * sn + s2 * c * c) * k, c01 = 2.0 * c * sn * (1.0 - s2) * k;
    double fx = xi * cos(theta), fy = xi * sin(theta);
    memset(re, 0, sizeof *re * (size_t)M * (size_t)N);
    memset(im, 0, sizeof *im * (size_t)M * (size_t)N);
    for (int ex = -2; ex <= 2; ex++)
        for (int ey = -2; ey <= 2; ey++)
            for (int u = 0; u < M; u++) {
                double xx = (double)u + (double)ex * M;
                for (int v = 0; v < N; v++) {
                    double yy = (double)v + (double)ey * N;
                    double q = c00 * xx * xx + c01 * xx * yy + c11 * yy * yy;
                    if (q > 746.0) continue; /* exp(-q) is exactly 0 in double: adds nothing */
                    double e = exp(-q);
                    size_t i = (size_t)u * N + v;
                    if (xi == 0.0) {
                        re[i] += e;
                    } else {
                        double a = xx * fx + yy * fy;
                        re[i] += e * cos(a);
                        im[i] += e * sin(a);
                    }
                }
            }
    double norm = 2.0 * 3.1415 * sigma * sigma / slant; /* Kymatio's constant, kept on purpose */
    for (size_t i = 0; i < (size_t)M * N; i++) re[i] /= norm, im[i] /= norm;
}

/* cos and sin of 2 pi k v / n for k, v < n: tab[k n + v], tab[n n + k n + v] */
static void twiddles(int n, double *tab) {
    for (int k = 0; k < n; k++)
        for (int v = 0; v < n; v++) {
            long p = (long)k * v % n;
            tab[(size_t)k * n + v] = cos(2.0 * DP_PI * (double)p / n);
            tab[(size_t)n * n + (size_t)k * n + v] = sin(2.0 * DP_PI * (double)p / n);
        }
}

/* Real part of the unnormalised 2-D DFT (e^{-i}) of (re, im), into out: rows, then columns,
 * each as a sum of scaled rows (contiguous, vectorisable). twm, twn: twiddles(M), twiddles(N);
 * t holds 2 M N doubles. */
static void dft_real(int M, int N, const double *re, const double *im, double *out, double *t, const double *twm,
                     const double *twn) {
    const size_t mn = (size_t)M * N, nn = (size_t)N * N, mm = (size_t)M * M;
    double *restrict tr = t, *restrict ti = t + mn;
    memset(t, 0, sizeof(double) * 2 * mn);
    for (int u = 0; u < M; u++) { /* T[u][k] = sum_v x[u][v] e^{-2 pi i k v / N} */
        double *restrict ar = tr + (size_t)u * N, *restrict ai = ti + (size_t)u * N;
        for (int v = 0; v < N; v++) {
            const double xr = re[(size_t)u * N + v], xi = im[(size_t)u * N + v];
            const double *restrict c = twn + (size_t)v * N, *restrict sn = twn + nn + (size_t)v * N;
            for (int k = 0; k < N; k++) { /* (xr + i xi)(c - i s) */
                ar[k] += xr * c[k] + xi * sn[k];
                ai[k] += xi * c[k] - xr * sn[k];
            }
        }
    }
    memset(out, 0, sizeof(double) * mn);
    for (int k1 = 0; k1 < M; k1++) { /* Re F[k1][k] = sum_u Re(T[u][k] e^{-2 pi i k1 u / M}) */
        double *restrict o = out + (size_t)k1 * N;
        for (int u = 0; u < M; u++) {
            const double c = twm[(size_t)k1 * M + u], sn = twm[mm + (size_t)k1 * M + u];
            const double *restrict ar = tr + (size_t)u * N, *restrict ai = ti + (size_t)u * N;
            for (int k = 0; k < N; k++) o[k] += ar[k] * c + ai[k] * sn;
        }
    }
}

/* Kymatio's periodize_filter_fft: zero the band between the kept low frequencies, then sum
 * the 4^r aliases onto the (M >> r) x (N >> r) grid; stored as float. */
static void crop(const double *f, int M, int N, int r, float *out) {
    int m = M >> r, n = N >> r;
    int sx = (int)(M * ldexp(1.0, -r - 1)), lx = (int)(M * (1.0 - ldexp(1.0, -r)));
    int sy = (int)(N * ldexp(1.0, -r - 1)), ly = (int)(N * (1.0 - ldexp(1.0, -r)));
    for (int k = 0; k < m; k++)
        for (int l = 0; l < n; l++) {
            double a = 0;
            for (int i = 0; i < (1 << r); i++)
                for (int j = 0; j < (1 << r); j++) {
                    int x = k + i * m, y = l + j * n;
                    if ((x >= sx && x < sx + lx) || (y >= sy && y < sy + ly)) continue;
                    a += f[(size_t)x * N + y];
                }
            out[(size_t)k * n + l] = (float)a;
        }
}

static int psi_levels(int j, int J) {
    int top = J - 1 > 1 ? J - 1 : 1; /* Kymatio: range(min(j + 1, max(J - 1, 1))) */
    return j + 1 < top ? j + 1 : top;
}

/* Builds filter `which` (-1: phi; else psi n = j L + t) and its kept levels. Thread-safe
 * (no FFTW), so the filters are built in parallel. Returns 0 on out of memory. */
static int build_filter(dp_scatter *s, int which, const double *twm, const double *twn) {
    const int M = s->info.pad_h, N = s->info.pad_w, J = s->info.J, L = s->info.L;
    size_t mn = (size_t)M * N;
    double *buf = dp_alloc(sizeof(double) * 7 * mn);
    if (!buf) return 0;
    double *re = buf, *im = buf + mn, *mre = buf + 2 * mn, *mim = buf + 3 * mn, *f = buf + 4 * mn;
    double *t = buf + 5 * mn;
    int nlev, ok = 1;
    if (which < 0) {
        gabor(M, N, 0.8 * ldexp(1.0, J - 1), 0.0, 0.0, 1.0, re, im);
        nlev = J;
    } else {
        int j = which / L, th = which % L;
        double sigma = 0.8 * ldexp(1.0, j), theta = ((int)(L - L / 2.0 - 1) - th) * DP_PI / L;
        double xi = 3.0 / 4.0 * DP_PI / ldexp(1.0, j), slant = 4.0 / L;
        gabor(M, N, sigma, theta, xi, slant, re, im);
        gabor(M, N, sigma, theta, 0.0, slant, mre, mim);
        /* K = sum(wv) / sum(wv_modulus); the latter is real (xi = 0) */
        double sr = 0, si = 0, sm = 0;
        for (size_t i = 0; i < mn; i++) sr += re[i], si += im[i], sm += mre[i];
        double kr = sr / sm, ki = si / sm;
        for (size_t i = 0; i < mn; i++) re[i] -= kr * mre[i], im[i] -= ki * mre[i];
        nlev = psi_levels(j, J);
    }
    dft_real(M, N, re, im, f, t, twm, twn);
    for (int r = 0; r < nlev && ok; r++) {
        float *lev = dp_alloc(sizeof(float) * (size_t)s->mr[r] * (size_t)s->nr[r]);
        if (!lev) {
            ok = 0;
            break;
        }
        crop(f, M, N, r, lev);
        if (which < 0) {
            s->phi[r] = lev;
            continue;
        }
        size_t n = (size_t)s->mr[r] * (size_t)s->nr[r];
        float *dup = dp_alloc(sizeof(float) * 2 * n);
        s->psi[(size_t)which * J + r] = lev;
        if (!dup) {
            ok = 0;
            break;
        }
        for (size_t i = 0; i < n; i++) dup[2 * i] = dup[2 * i + 1] = lev[i];
        s->psi2[(size_t)which * J + r] = dup;
    }
    dp_free(buf);
    return ok;
}

/* ---- plan ----------------------------------------------------------------------------- */

void dp_scatter_destroy(dp_scatter *s) {
    if (!s) return;
    pthread_mutex_lock(&fftwf_lock);
    for (int r = 0; r < s->info.J; r++) {
        if (s->r2c[r]) fftwf_destroy_plan(s->r2c[r]);
        if (s->c2c[r]) fftwf_destroy_plan(s->c2c[r]);
    }
    if (s->c2r) fftwf_destroy_plan(s->c2r);
    pthread_mutex_unlock(&fftwf_lock);
    for (int r = 0; r < s->info.J; r++) dp_free(s->phi[r]);
    for (size_t i = 0; i < (size_t)s->info.J * s->info.J * s->info.L; i++) {
        if (s->psi) dp_free(s->psi[i]);
        if (s->psi2) dp_free(s->psi2[i]);
    }
    dp_free(s->psi);
    dp_free(s->psi2);
    dp_free(s->row_src);
    dp_free(s->col_src);
    dp_free(s);
}

static dp_status check_shape(int h, int w, int J, int L) {
    if (J < 1 || J > MAX_J)
        return dp_fail(DP_ERR_INVALID, "scattering: J = %d, need J >= 1 (and 2^J at most the image size)", J);
    if (L < 1 || L > DP_SCATTER_MAX_L)
        return dp_fail(DP_ERR_INVALID, "scattering: L = %d angles, need 1 <= L <= %d", L, DP_SCATTER_MAX_L);
    if (h < 1 || w < 1) return dp_fail(DP_ERR_INVALID, "scattering: image size %d x %d is empty", h, w);
    long p = 1L << J;
    if (p > h || p > w)
        return dp_fail(DP_ERR_INVALID, "scattering: J = %d is too large for %d x %d images (2^J = %ld exceeds a side)",
                       J, h, w, p);
    if (h % p || w % p)
        return dp_fail(DP_ERR_INVALID,
                       "scattering: image size %d x %d is not divisible by 2^J = %ld (pad or crop the images first)",
                       h, w, p);
    if (h > INT_MAX - 2 * p || w > INT_MAX - 2 * p)
        return dp_fail(DP_ERR_RANGE, "scattering: image size %d x %d is too large", h, w);
    return DP_OK;
}

dp_status dp_scatter_create(int h, int w, int J, int L, dp_scatter **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp_scatter_create: out is NULL");
    dp_status st = check_shape(h, w, J, L);
    if (st != DP_OK) return st;
    dp_scatter *s = dp_calloc(1, sizeof *s);
    if (!s) return dp_fail(DP_ERR_NOMEM, "scattering: out of memory for the plan");
    dp_scatter_info *in = &s->info;
    in->h = h, in->w = w, in->J = J, in->L = L;
    in->channels = 1 + J * L + L * L * J * (J - 1) / 2;
    in->out_h = h >> J, in->out_w = w >> J;
    in->pad_h = h + (2 << J), in->pad_w = w + (2 << J);
    for (int r = 0; r <= J; r++) s->mr[r] = in->pad_h >> r, s->nr[r] = in->pad_w >> r;
    const int M = in->pad_h, N = in->pad_w;
    size_t mn = (size_t)M * N, nf = (size_t)J * L;
    /* Scratch: padded image and moduli (real, M x N at most), a half spectrum, two full
     * spectra (the input's and the first modulus'), the wavelet product and its inverse
     * (out-of-place c2c: faster than in place at these sizes), the low-pass half spectrum and
     * its inverse at resolution J. */
    size_t ms = (size_t)s->mr[J], ns = (size_t)s->nr[J];
    s->off_x = 0;
    s->off_h = s->off_x + round16(mn);
    s->off_f0 = s->off_h + round16(2 * (size_t)M * (N / 2 + 1));
    s->off_f1 = s->off_f0 + round16(2 * mn);
    s->off_z = s->off_f1 + round16(2 * mn);
    s->off_zo = s->off_z + round16(2 * mn);
    s->off_s = s->off_zo + round16(2 * mn);
    s->off_sr = s->off_s + round16(2 * ms * (ns / 2 + 1));
    s->scratch_floats = s->off_sr + round16(ms * ns);
    s->psi = dp_calloc(nf * (size_t)J, sizeof *s->psi);
    s->psi2 = dp_calloc(nf * (size_t)J, sizeof *s->psi2);
    s->row_src = dp_alloc(sizeof(int) * (size_t)M);
    s->col_src = dp_alloc(sizeof(int) * (size_t)N);
    float *scr = dp_alloc(sizeof(float) * s->scratch_floats);
    if (!s->psi || !s->psi2 || !s->row_src || !s->col_src || !scr) {
        dp_free(scr);
        dp_scatter_destroy(s);
        return dp_fail(DP_ERR_NOMEM, "scattering: out of memory for the plan");
    }
    for (int i = 0; i < M; i++) s->row_src[i] = reflect((long)i - (1L << J), h);
    for (int i = 0; i < N; i++) s->col_src[i] = reflect((long)i - (1L << J), w);

    /* the DFT's twiddle tables, shared by the filters: 2 (M^2 + N^2) doubles */
    double *tw = dp_alloc(sizeof(double) * 2 * ((size_t)M * M + (size_t)N * N));
    int ok = tw != NULL;
    if (ok) {
        twiddles(M, tw);
        twiddles(N, tw + 2 * (size_t)M * M);
#pragma omp parallel for schedule(dynamic, 1) reduction(&& : ok)
        for (int f = -1; f < (int)nf; f++) ok = build_filter(s, f, tw, tw + 2 * (size_t)M * M) && ok;
    }
    dp_free(tw);

    pthread_mutex_lock(&fftwf_lock);
    float *x = scr + s->off_x, *z = scr + s->off_z, *sh = scr + s->off_s, *sr = scr + s->off_sr;
    fftwf_complex *hc = (fftwf_complex *)(scr + s->off_h), *zc = (fftwf_complex *)z;
    fftwf_complex *zo = (fftwf_complex *)(scr + s->off_zo);
    for (int r = 0; r < J && ok; r++) {
        s->r2c[r] = fftwf_plan_dft_r2c_2d(s->mr[r], s->nr[r], x, hc, FFTW_ESTIMATE);
        s->c2c[r] = fftwf_plan_dft_2d(s->mr[r], s->nr[r], zc, zo, FFTW_BACKWARD, FFTW_ESTIMATE);
        ok = s->r2c[r] && s->c2c[r];
    }
    if (ok) ok = (s->c2r = fftwf_plan_dft_c2r_2d(s->mr[J], s->nr[J], (fftwf_complex *)sh, sr, FFTW_ESTIMATE)) != NULL;
    pthread_mutex_unlock(&fftwf_lock);
    dp_free(scr);
    if (!ok) {
        dp_scatter_destroy(s);
        return dp_fail(DP_ERR_NOMEM, "scattering: out of memory building the filters or FFT plans for %d x %d, J = %d, L = %d",
                       h, w, J, L);
    }
    *out = s;
    return DP_OK;
}

dp_scatter_info dp_scatter_get_info(const dp_scatter *s) {
    dp_scatter_info z = {0};
    return s ? s->info : z;
}

const float *dp_scatter_filter(const dp_scatter *s, int which, int res) {
    if (!s) {
        dp_fail(DP_ERR_INVALID, "dp_scatter_filter: plan is NULL");
        return NULL;
    }
    int J = s->info.J, nf = J * s->info.L;
    if (which < -1 || which >= nf || res < 0 || res >= (which < 0 ? J : psi_levels(which / s->info.L, J))) {
        dp_fail(DP_ERR_INVALID, "dp_scatter_filter: no filter %d at level %d (J = %d, L = %d)", which, res, J,
                s->info.L);
        return NULL;
    }
    return which < 0 ? s->phi[res] : s->psi[(size_t)which * J + res];
}

dp_status dp_scatter_path(const dp_scatter *s, int k, int *order, int *j1, int *t1, int *j2, int *t2) {
    if (!s || !order || !j1 || !t1 || !j2 || !t2) return dp_fail(DP_ERR_INVALID, "dp_scatter_path: NULL argument");
    const int J = s->info.J, L = s->info.L;
    if (k < 0 || k >= s->info.channels)
        return dp_fail(DP_ERR_INVALID, "dp_scatter_path: channel %d out of range 0..%d", k, s->info.channels - 1);
    *order = 0, *j1 = *t1 = *j2 = *t2 = -1;
    if (k == 0) return DP_OK;
    k -= 1;
    if (k < J * L) {
        *order = 1, *j1 = k / L, *t1 = k % L;
        return DP_OK;
    }
    k -= J * L;
    for (int n1 = 0; n1 < J * L; n1++) {
        int a = n1 / L, count = (J - 1 - a) * L; /* second wavelets with j2 > j1 */
        if (k < count) {
            *order = 2, *j1 = a, *t1 = n1 % L, *j2 = a + 1 + k / L, *t2 = k % L;
            return DP_OK;
        }
        k -= count;
    }
    DP_ASSERT(0);
    return DP_ERR_INVALID;
}

/* ---- transform (float) ------------------------------------------------------------------ */

/* Full M x N spectrum f from the r2c half spectrum h (M x (N/2 + 1)): X[-k] = conj X[k]. */
static void expand(const float *h, int M, int N, float *f) {
    int nh = N / 2 + 1;
    for (int k1 = 0; k1 < M; k1++) {
        const float *a = h + 2 * (size_t)k1 * nh, *b = h + 2 * (size_t)((M - k1) % M) * nh;
        float *o = f + 2 * (size_t)k1 * N;
        memcpy(o, a, sizeof(float) * 2 * (size_t)nh);
        for (int k2 = nh; k2 < N; k2++) o[2 * k2] = b[2 * (N - k2)], o[2 * k2 + 1] = -b[2 * (N - k2) + 1];
    }
}

/* z (M/s x N/s, complex) = sum of the s^2 aliases of f .* g (g: the real filter, each value
 * twice): the spectrum of the filtered signal subsampled by s, up to the inverse FFT's 1/MN
 * (applied after the modulus, which commutes with a positive factor). */
static void wavelet_product(const float *restrict f, const float *restrict g, int M, int N, int s,
                            float *restrict z) {
    const int ms = M / s, w = 2 * (N / s); /* floats per output row */
    for (int m1 = 0; m1 < ms; m1++) {
        float *restrict o = z + (size_t)m1 * w;
        for (int q1 = 0; q1 < s; q1++) {
            const float *a = f + 2 * (size_t)(m1 + q1 * ms) * N, *p = g + 2 * (size_t)(m1 + q1 * ms) * N;
            for (int q2 = 0; q2 < s; q2++, a += w, p += w)
                if (q1 == 0 && q2 == 0)
                    for (int m = 0; m < w; m++) o[m] = a[m] * p[m];
                else
                    for (int m = 0; m < w; m++) o[m] += a[m] * p[m];
        }
    }
}

/* The half spectrum o (M/s x (N/s/2 + 1)) of (signal * phi) subsampled by s, up to the factor
 * 1/MN, from the half spectrum h (M x (N/2 + 1)) of a real signal; columns past N/2 are read
 * through conjugate symmetry. phi is even, so the result is the half spectrum of a real signal. */
static void lowpass_product(const float *restrict h, const float *restrict phi, int M, int N, int s,
                            float *restrict o) {
    int ms = M / s, ns = N / s, nh = N / 2 + 1, oh = ns / 2 + 1;
    memset(o, 0, sizeof(float) * 2 * (size_t)ms * oh);
    for (int k1 = 0; k1 < M; k1++) {
        float *d = o + 2 * (size_t)(k1 % ms) * oh;
        const float *a = h + 2 * (size_t)k1 * nh, *b = h + 2 * (size_t)((M - k1) % M) * nh;
        const float *p = phi + (size_t)k1 * N;
        for (int q = 0; q < s; q++)
            for (int m = 0; m < oh; m++) {
                int k2 = m + q * ns;
                float re, im;
                if (k2 < nh) re = a[2 * k2], im = a[2 * k2 + 1];
                else re = b[2 * (N - k2)], im = -b[2 * (N - k2) + 1];
                d[2 * m] += re * p[k2], d[2 * m + 1] += im * p[k2];
            }
    }
}

/* x = scale |z|. The vector path computes the same IEEE operations (no FMA: this file is
 * compiled in ISO C mode, where GCC does not contract), so the result does not depend on it. */
static void modulus(const float *restrict z, size_t n, float scale, float *restrict x) {
    size_t i = 0;
#ifdef __AVX2__
    const __m256 sc = _mm256_set1_ps(scale);
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(z + 2 * i), b = _mm256_loadu_ps(z + 2 * i + 8); /* re im pairs */
        __m256 aa = _mm256_mul_ps(a, a), bb = _mm256_mul_ps(b, b);
        /* hadd sums adjacent pairs within 128-bit lanes: [a0 a1 b0 b1 | a2 a3 b2 b3]; reorder */
        __m256 s = _mm256_hadd_ps(aa, bb);
        s = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_sqrt_ps(s), sc));
    }
#endif
    for (; i < n; i++) x[i] = sqrtf(z[2 * i] * z[2 * i] + z[2 * i + 1] * z[2 * i + 1]) * scale;
}

/* Low-pass the real signal whose half spectrum is h (resolution r), subsample to resolution
 * J, invert, crop the border: one output channel. */
static void lowpass_out(const dp_scatter *s, float *scr, const float *h, int r, float *out) {
    const int J = s->info.J, M = s->mr[r], N = s->nr[r], ns = s->nr[J], ow = s->info.out_w;
    const float scale = 1.0f / ((float)M * (float)N);
    float *sh = scr + s->off_s, *sr = scr + s->off_sr;
    lowpass_product(h, s->phi[r], M, N, 1 << (J - r), sh);
    fftwf_execute_dft_c2r(s->c2r, (fftwf_complex *)sh, sr);
    for (int i = 0; i < s->info.out_h; i++) {
        const float *src = sr + (size_t)(i + 1) * ns + 1;
        for (int j = 0; j < ow; j++) out[(size_t)i * ow + j] = src[j] * scale;
    }
}

/* |signal * psi| subsampled from resolution r to r2: wavelet product with filter g from the
 * full spectrum f, inverse FFT, modulus into the real buffer, r2c into the half buffer. */
static void wavelet_modulus(const dp_scatter *s, float *scr, const float *f, const float *g, int r, int r2) {
    float *z = scr + s->off_z, *zo = scr + s->off_zo, *x = scr + s->off_x, *h = scr + s->off_h;
    const int M = s->mr[r], N = s->nr[r];
    wavelet_product(f, g, M, N, 1 << (r2 - r), z);
    fftwf_execute_dft(s->c2c[r2], (fftwf_complex *)z, (fftwf_complex *)zo);
    modulus(zo, (size_t)s->mr[r2] * s->nr[r2], 1.0f / ((float)M * (float)N), x);
    fftwf_execute_dft_r2c(s->r2c[r2], x, (fftwf_complex *)h);
}

static void transform_one(const dp_scatter *s, float *scr, const float *img, float *out) {
    const int J = s->info.J, L = s->info.L, M = s->mr[0], N = s->nr[0], w = s->info.w;
    const size_t plane = (size_t)s->info.out_h * s->info.out_w;
    float *x = scr + s->off_x, *h = scr + s->off_h, *f0 = scr + s->off_f0, *f1 = scr + s->off_f1;
    for (int i = 0; i < M; i++) {
        const float *src = img + (size_t)s->row_src[i] * w;
        for (int j = 0; j < N; j++) x[(size_t)i * N + j] = src[s->col_src[j]];
    }
    fftwf_execute_dft_r2c(s->r2c[0], x, (fftwf_complex *)h);
    lowpass_out(s, scr, h, 0, out); /* order 0 */
    expand(h, M, N, f0);
    float *o2 = out + plane * (size_t)(1 + J * L); /* order 2 channels, in (j1, t1, j2, t2) order */
    for (int n1 = 0; n1 < J * L; n1++) {
        int j1 = n1 / L;
        wavelet_modulus(s, scr, f0, s->psi2[(size_t)n1 * J], 0, j1);
        lowpass_out(s, scr, h, j1, out + plane * (size_t)(1 + n1));
        if (j1 + 1 >= J) continue;
        expand(h, s->mr[j1], s->nr[j1], f1);
        for (int n2 = (j1 + 1) * L; n2 < J * L; n2++, o2 += plane) {
            int j2 = n2 / L;
            wavelet_modulus(s, scr, f1, s->psi2[(size_t)n2 * J + j1], j1, j2);
            lowpass_out(s, scr, h, j2, o2);
        }
    }
}

dp_status dp_scatter_apply(const dp_scatter *s, const float *x, size_t n, float *y) {
    if (!s || (n > 0 && (!x || !y))) return dp_fail(DP_ERR_INVALID, "dp_scatter_apply: NULL argument");
    if (n == 0) return DP_OK;
    const size_t in_sz = (size_t)s->info.h * s->info.w;
    const size_t out_sz = (size_t)s->info.channels * s->info.out_h * s->info.out_w;
    int failed = 0;
#pragma omp parallel if (n > 1)
    {
        /* every thread has its own scratch; a thread that cannot get one skips its images and
         * the call fails (the worksharing loop must still be reached by all threads) */
        float *scr = dp_alloc(sizeof(float) * s->scratch_floats);
        if (!scr) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++)
            if (scr) transform_one(s, scr, x + i * in_sz, y + i * out_sz);
        dp_free(scr);
    }
    if (failed)
        return dp_fail(DP_ERR_NOMEM, "scattering: out of memory for the per-thread scratch (%zu bytes)",
                       sizeof(float) * s->scratch_floats);
    return DP_OK;
}

dp_status dp_scatter_dataset(const dp_dataset *in, int J, int L, dp_dataset *out) {
    if (!in || !out) return dp_fail(DP_ERR_INVALID, "dp_scatter_dataset: NULL argument");
    if (in->c < 1 || in->h < 1 || in->w < 1 || in->dim != (size_t)in->c * in->h * in->w)
        return dp_fail(DP_ERR_INVALID, "scattering a dataset: dim %zu does not match the example shape %d x %d x %d",
                       in->dim, in->c, in->h, in->w);
    if (in->n == 0 || !in->x || !in->y)
        return dp_fail(DP_ERR_INVALID, "scattering a dataset: %zu rows, %s", in->n,
                       in->n == 0 ? "nothing to transform" : "feature or label array missing");
    dp_scatter *s;
    dp_status st = dp_scatter_create(in->h, in->w, J, L, &s);
    if (st != DP_OK) return st;
    dp_scatter_info fi = s->info;
    size_t per = (size_t)fi.channels * fi.out_h * fi.out_w; /* per input channel */
    if ((size_t)in->c > SIZE_MAX / per || in->n > SIZE_MAX / sizeof(float) / (per * in->c) ||
        (size_t)in->c * fi.channels > INT_MAX) {
        dp_scatter_destroy(s);
        return dp_fail(DP_ERR_RANGE, "scattering a dataset: %zu x %d x %d channels overflow", in->n, in->c,
                       fi.channels);
    }
    dp_dataset d = {0};
    d.n = in->n, d.c = in->c * fi.channels, d.h = fi.out_h, d.w = fi.out_w, d.dim = per * in->c;
    d.n_classes = in->n_classes;
    d.x = dp_alloc(sizeof(float) * d.n * d.dim);
    d.y = dp_alloc(sizeof(int32_t) * d.n);
    if (!d.x || !d.y) {
        dp_dataset_free(&d);
        dp_scatter_destroy(s);
        return dp_fail(DP_ERR_NOMEM, "scattering a dataset: out of memory for the features (%zu x %zu floats)", in->n,
                       per * in->c);
    }
    memcpy(d.y, in->y, sizeof(int32_t) * d.n);
    st = dp_scatter_apply(s, in->x, in->n * (size_t)in->c, d.x);
    dp_scatter_destroy(s);
    if (st != DP_OK) {
        dp_dataset_free(&d);
        return st;
    }
    *out = d;
    return DP_OK;
}
