/* privacy.c: Gaussian noise, Poisson sampling, the RDP accountant and sigma calibration.
 *
 * The accountant follows Opacus 1.5.4 (opacus/accountants/analysis/rdp.py, itself from
 * TF Privacy), re-derived here in plain IEEE double arithmetic:
 *   RDP_alpha(q, sigma) = log(A_alpha) / (alpha - 1) per step, times the step count;
 *   integer alpha:    A = sum_{i=0..alpha} C(alpha,i) q^i (1-q)^(alpha-i) exp((i^2-i)/(2 s^2))
 *   fractional alpha: the two half-line series of Mironov, Talwar, Zhang (2019), Sec. 3.3,
 *                     summed until both new terms are below exp(-30);
 *   q == 0 -> 0;  q == 1 -> alpha / (2 sigma^2);
 *   eps = min over alpha of  rdp - (log delta + log alpha)/(alpha-1) + log((alpha-1)/alpha)
 *   (NaN orders ignored; ties go to the first order).
 * This file must be compiled without -ffast-math (the log-space sums rely on IEEE inf).
 */
#include "dpsgd/privacy.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---- noise -------------------------------------------------------------------------- */

/* Gaussian noise for millions of coordinates per step, in parallel and deterministic.
 *
 * Streams: one 64-bit key is drawn from the caller's rng per call; coordinates are cut into
 * fixed blocks of NOISE_BLOCK, and block b draws from its own xoshiro256** seeded by
 * splitmix64 of (key, b). The noise is thus a function of the rng state and n only: the
 * same for any thread count, and resumable from a checkpointed rng.
 *
 * Normals: the ziggurat method of Marsaglia & Tsang (2000) with 256 layers of equal area,
 * in double precision, with the layer index and the uniform taken from disjoint bits of one
 * 64-bit draw (Doornik 2005 points out the correlation when they share bits). It is exact:
 * a point is accepted only when it lies under the density (rectangle test, then the wedge
 * test against exp(-x^2/2)), and the tail beyond r is drawn by Marsaglia's exact method.
 * The table is built once: r is found by bisection so that the 256 layers close at the top
 * in double arithmetic (r = 3.6541528853610088 in the literature). */

enum { ZIG_N = 256, NOISE_BLOCK = 4096 };
static double zig_x[ZIG_N + 1]; /* layer i is [0, zig_x[i]] wide, between f(zig_x[i]) and f(zig_x[i+1]) */
static double zig_f[ZIG_N + 1]; /* f(zig_x[i]) = exp(-zig_x[i]^2 / 2) */
static pthread_once_t zig_once = PTHREAD_ONCE_INIT;

static double gauss_f(double x) { return exp(-0.5 * x * x); }

/* Builds the layers for base r (layer area v = r f(r) + the tail mass beyond r); returns the
 * mismatch at the top: > 0 when the layers overshoot f = 1 (r too small), < 0 otherwise. */
static double zig_build(double r) {
    const double v = r * gauss_f(r) + sqrt(2 * atan(1.0)) * erfc(r / sqrt(2.0));
    zig_x[0] = v / gauss_f(r);
    zig_x[1] = r;
    for (int i = 1; i < ZIG_N - 1; i++) {
        double y = v / zig_x[i] + gauss_f(zig_x[i]);
        if (y >= 1) return 1; /* overshoot before the top */
        zig_x[i + 1] = sqrt(-2 * log(y));
    }
    zig_x[ZIG_N] = 0;
    return v / zig_x[ZIG_N - 1] + gauss_f(zig_x[ZIG_N - 1]) - 1;
}

static void zig_init(void) {
    double lo = 3.0, hi = 4.0; /* zig_build(lo) > 0 > zig_build(hi) */
    for (int it = 0; it < 200 && hi - lo > 1e-15; it++) {
        double mid = 0.5 * (lo + hi);
        if (zig_build(mid) > 0) lo = mid;
        else hi = mid;
    }
    zig_build(hi);
    for (int i = 0; i <= ZIG_N; i++) zig_f[i] = gauss_f(zig_x[i]);
}

typedef struct {
    uint64_t s[4];
} xo256;

static inline uint64_t xo_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint64_t xo_next(xo256 *r) {
    uint64_t *s = r->s;
    const uint64_t out = xo_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = xo_rotl(s[3], 45);
    return out;
}
static inline uint64_t mix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* uniform in (0, 1]: never 0, so that log() is finite */
static inline double xo_unit(xo256 *r) { return ((double)(xo_next(r) >> 11) + 1.0) * 0x1.0p-53; }

/* One ziggurat attempt's x from a 64-bit draw: bits 0..7 give the layer i, bits 12..63 a
 * uniform in [-1, 1) (as a double in [2, 4) minus 3, exactly) */
static inline double zig_x_of(uint64_t u, int *i) {
    *i = (int)(u & (ZIG_N - 1));
    const uint64_t bits = (u >> 12) | 0x4000000000000000ULL;
    double d;
    memcpy(&d, &bits, sizeof d);
    return (d - 3.0) * zig_x[*i];
}

/* The rest of the method once the attempt (i, x) fell outside its layer's inner rectangle:
 * the tail (base layer) or the wedge test, then fresh attempts from r until one is accepted */
static double zig_slow(xo256 *r, int i, double x) {
    for (;;) {
        if (i == 0) { /* beyond r: Marsaglia's exact tail */
            double a, b;
            do {
                a = -log(xo_unit(r)) / zig_x[1];
                b = -log(xo_unit(r));
            } while (b + b < a * a);
            return x < 0 ? -(zig_x[1] + a) : zig_x[1] + a;
        }
        /* the wedge: accept with the density's height against a uniform height in the layer */
        if (zig_f[i] + xo_unit(r) * (zig_f[i + 1] - zig_f[i]) < gauss_f(x)) return x;
        x = zig_x_of(xo_next(r), &i);
        if (fabs(x) < zig_x[i + 1]) return x;
    }
}

static inline double zig_normal(xo256 *r) {
    int i;
    const double x = zig_x_of(xo_next(r), &i);
    return fabs(x) < zig_x[i + 1] ? x : zig_slow(r, i, x);
}

/* cnt standard normals for block b of the call with this key: the first attempts from four
 * interleaved xoshiro256** lanes (AVX2 where the build has it: the rectangle test of four
 * draws at once), everything after a failed first attempt and the last cnt % 4 from a
 * fifth, scalar stream. The same numbers with or without AVX2. */
static void block_normals(double *z, size_t cnt, uint64_t key, size_t b) {
    uint64_t x = key ^ (0xd1b54a32d192ed03ULL * (b + 1));
    uint64_t ls[4][4]; /* ls[word][lane] */
    for (int l = 0; l < 4; l++)
        for (int w = 0; w < 4; w++) ls[w][l] = mix64(&x);
    xo256 rs;
    for (int w = 0; w < 4; w++) rs.s[w] = mix64(&x);
    const size_t n4 = cnt & ~(size_t)3;
#if defined(__AVX2__)
    __m256i s0 = _mm256_loadu_si256((const __m256i *)ls[0]), s1 = _mm256_loadu_si256((const __m256i *)ls[1]);
    __m256i s2 = _mm256_loadu_si256((const __m256i *)ls[2]), s3 = _mm256_loadu_si256((const __m256i *)ls[3]);
    const __m256i m255 = _mm256_set1_epi64x(ZIG_N - 1), two = _mm256_set1_epi64x(0x4000000000000000LL);
    const __m256d three = _mm256_set1_pd(3.0), sign = _mm256_set1_pd(-0.0);
    for (size_t k = 0; k < n4; k += 4) {
        const __m256i s1x5 = _mm256_add_epi64(s1, _mm256_slli_epi64(s1, 2));
        const __m256i rot = _mm256_or_si256(_mm256_slli_epi64(s1x5, 7), _mm256_srli_epi64(s1x5, 57));
        const __m256i u = _mm256_add_epi64(rot, _mm256_slli_epi64(rot, 3));
        const __m256i t = _mm256_slli_epi64(s1, 17);
        s2 = _mm256_xor_si256(s2, s0);
        s3 = _mm256_xor_si256(s3, s1);
        s1 = _mm256_xor_si256(s1, s2);
        s0 = _mm256_xor_si256(s0, s3);
        s2 = _mm256_xor_si256(s2, t);
        s3 = _mm256_or_si256(_mm256_slli_epi64(s3, 45), _mm256_srli_epi64(s3, 19));
        const __m256i idx = _mm256_and_si256(u, m255);
        const __m256d xi = _mm256_i64gather_pd(zig_x, idx, 8), xi1 = _mm256_i64gather_pd(zig_x + 1, idx, 8);
        const __m256d uni = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(u, 12), two)), three);
        const __m256d zz = _mm256_mul_pd(uni, xi);
        const int ok = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_andnot_pd(sign, zz), xi1, _CMP_LT_OQ));
        _mm256_storeu_pd(z + k, zz);
        if (ok != 15) {
            int64_t id[4];
            _mm256_storeu_si256((__m256i *)id, idx);
            for (int l = 0; l < 4; l++)
                if (!(ok >> l & 1)) z[k + (size_t)l] = zig_slow(&rs, (int)id[l], z[k + (size_t)l]);
        }
    }
#else
    for (size_t k = 0; k < n4; k += 4) {
        uint64_t u[4];
        for (int l = 0; l < 4; l++) { /* lane l's xoshiro256** step */
            const uint64_t a = ls[1][l], t = a << 17;
            u[l] = xo_rotl(a * 5, 7) * 9;
            ls[2][l] ^= ls[0][l];
            ls[3][l] ^= ls[1][l];
            ls[1][l] ^= ls[2][l];
            ls[0][l] ^= ls[3][l];
            ls[2][l] ^= t;
            ls[3][l] = xo_rotl(ls[3][l], 45);
        }
        for (int l = 0; l < 4; l++) {
            int i;
            const double v = zig_x_of(u[l], &i);
            z[k + (size_t)l] = fabs(v) < zig_x[i + 1] ? v : zig_slow(&rs, i, v);
        }
    }
#endif
    for (size_t k = n4; k < cnt; k++) z[k] = zig_normal(&rs);
}

/* g[i] += std z_i where mask is NULL or mask[i]; with zero_masked, then g[i] *= scale and
 * masked coordinates become 0 (one pass for "noise, then average"). Every coordinate of a
 * block with a trainable one has its z_i, so the three variants see the same numbers. */
static void noise_blocks(float *g, size_t n, const unsigned char *mask, double std, int zero_masked, double scale,
                         dp_rng *rng) {
    DP_ASSERT(std >= 0.0 && isfinite(std));
    if (n == 0 || (std == 0.0 && !zero_masked)) return;
    DP_ASSERT(g != NULL && rng != NULL);
    if (std == 0.0) { /* only the scaling and masking; nothing drawn */
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) g[i] = mask[i] ? (float)((double)g[i] * scale) : 0.0f;
        return;
    }
    pthread_once(&zig_once, zig_init);
    const uint64_t key = dp_rng_u64(rng);
    const size_t nb = (n + NOISE_BLOCK - 1) / NOISE_BLOCK;
#pragma omp parallel if (nb > 4)
    {
        double z[NOISE_BLOCK];
#pragma omp for schedule(static)
        for (size_t b = 0; b < nb; b++) {
            const size_t lo = b * NOISE_BLOCK, hi = lo + NOISE_BLOCK < n ? lo + NOISE_BLOCK : n, cnt = hi - lo;
            float *gb = g + lo;
            const unsigned char *mb = mask ? mask + lo : NULL;
            if (mb && !memchr(mb, 1, cnt)) { /* a frozen block: nothing to draw */
                if (zero_masked) memset(gb, 0, sizeof(float) * cnt);
                continue;
            }
            block_normals(z, cnt, key, b);
            if (zero_masked) {
                /* rounded to float twice, as noise then a separate scaling pass would */
#pragma omp simd
                for (size_t i = 0; i < cnt; i++)
                    gb[i] = mb[i] ? (float)((double)(float)((double)gb[i] + std * z[i]) * scale) : 0.0f;
            } else if (mb) {
#pragma omp simd
                for (size_t i = 0; i < cnt; i++) gb[i] = mb[i] ? (float)((double)gb[i] + std * z[i]) : gb[i];
            } else {
#pragma omp simd
                for (size_t i = 0; i < cnt; i++) gb[i] = (float)((double)gb[i] + std * z[i]);
            }
        }
    }
}

void dp_noise_gaussian(float *g, size_t n, double std, dp_rng *rng) { noise_blocks(g, n, NULL, std, 0, 1.0, rng); }

void dp_noise_gaussian_masked(float *g, size_t n, const unsigned char *mask, double std, dp_rng *rng) {
    DP_ASSERT(n == 0 || mask != NULL);
    noise_blocks(g, n, mask, std, 0, 1.0, rng);
}

void dp_noise_gaussian_scaled(float *g, size_t n, const unsigned char *mask, double std, double scale, dp_rng *rng) {
    DP_ASSERT(n == 0 || mask != NULL);
    DP_ASSERT(isfinite(scale));
    noise_blocks(g, n, mask, std, 1, scale, rng);
}

/* ---- Poisson sampling ------------------------------------------------------------------ */

dp_status dp_poisson_sample(dp_rng *rng, size_t n, double q, size_t *idx, size_t *count) {
    if (!(q >= 0.0 && q <= 1.0))
        return dp_fail(DP_ERR_RANGE, "sample rate %g is outside [0, 1]", q);
    if (!count) return dp_fail(DP_ERR_INVALID, "poisson sample: count is NULL");
    if (n > 0 && !idx) return dp_fail(DP_ERR_INVALID, "poisson sample: idx is NULL");
    if (n > 0 && q > 0.0 && !rng) return dp_fail(DP_ERR_INVALID, "poisson sample: rng is NULL");
    size_t c = 0;
    if (q == 0.0 || n == 0) {
        /* empty batch */
    } else if (q == 1.0) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        c = n;
    } else if (q < 0.25) {
        /* Gap before the next chosen example: G ~ Geometric(q) on {0, 1, ...},
         * P(G >= k) = (1-q)^k, drawn as floor(log(1-U) / log(1-q)) with U in [0, 1). */
        const double log1mq = log1p(-q); /* < 0 */
        size_t pos = 0;
        for (;;) {
            double gap = floor(log1p(-dp_rng_uniform(rng)) / log1mq);
            if (!(gap < (double)(n - pos))) break; /* also guards the size_t conversion */
            pos += (size_t)gap;
            idx[c++] = pos;
            pos++;
            if (pos >= n) break;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            if (dp_rng_uniform(rng) < q) idx[c++] = i;
    }
    *count = c;
    return DP_OK;
}

/* ---- RDP of the subsampled Gaussian ----------------------------------------------------- */

static double rdp_order(int k) {
    /* Opacus: [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) */
    return k < 99 ? 1.0 + (double)(k + 1) / 10.0 : (double)(12 + (k - 99));
}

/* log(exp(x) + exp(y)) */
static double log_add(double x, double y) {
    double a = x < y ? x : y, b = x < y ? y : x;
    if (a == -INFINITY) return b;
    return log1p(exp(a - b)) + b;
}

/* log(exp(x) - exp(y)) for x >= y; *bad set when x < y (a negative result). */
static double log_sub(double x, double y, int *bad) {
    if (x < y) {
        *bad = 1;
        return NAN;
    }
    if (y == -INFINITY) return x;
    if (x == y) return -INFINITY;
    double e = expm1(x - y);
    if (isinf(e)) return x; /* exp(x-y) overflows: exp(y) is negligible */
    return log(e) + y;
}

#define LOG_SQRT_PI 0.57236494292470008707 /* log(sqrt(pi)) */

/* log(erfc(x)), accurate also where erfc underflows. */
static double log_erfc(double x) {
    if (x <= 25.0) return log(erfc(x)); /* erfc(25) ~ 8e-274: still a normal double */
    /* erfc(x) = exp(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k (asymptotic;
     * at x > 25 the 8 terms below leave a relative error under 1e-20) */
    double r = 1.0 / (2.0 * x * x), term = 1.0, sum = 1.0;
    for (int k = 1; k <= 8; k++) {
        term *= -(double)(2 * k - 1) * r;
        sum += term;
    }
    return -x * x - log(x) - LOG_SQRT_PI + log(sum);
}

/* log(A_alpha) for integer alpha >= 1, 0 < q < 1. */
static double log_a_int(double q, double sigma, int alpha) {
    const double log_q = log(q), log_1mq = log1p(-q), two_s2 = 2.0 * sigma * sigma;
    double log_a = -INFINITY;
    double binom = 1.0; /* C(alpha, i), exact or within a few ulps for alpha <= 63 */
    for (int i = 0; i <= alpha; i++) {
        double log_coef = log(binom) + i * log_q + (alpha - i) * log_1mq;
        double s = log_coef + ((double)i * i - i) / two_s2;
        log_a = log_add(log_a, s);
        binom = binom * (double)(alpha - i) / (double)(i + 1);
    }
    return log_a;
}

enum { FRAC_MAX_TERMS = 10000000 };

/* log(A_alpha) for fractional alpha > 1, 0 < q < 1. Returns +inf if the series breaks
 * down numerically or does not converge (an unusable order, never a smaller epsilon). */
static double log_a_frac(double q, double sigma, double alpha) {
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    const double log_q = log(q), log_1mq = log1p(-q), two_s2 = 2.0 * sigma * sigma;
    const double z0 = sigma * sigma * (log_1mq - log_q) + 0.5; /* s^2 log(1/q - 1) + 1/2 */
    const double inv_sqrt2s = 1.0 / (sqrt(2.0) * sigma), log_half = log(0.5);
    double log_abs_coef = 0.0; /* log |C(alpha, i)| */
    int sign = 1;              /* sign of C(alpha, i) */
    int bad = 0;
    for (long i = 0; i < FRAC_MAX_TERMS; i++) {
        const double di = (double)i, j = alpha - di;
        double log_t0 = log_abs_coef + di * log_q + j * log_1mq;
        double log_t1 = log_abs_coef + j * log_q + di * log_1mq;
        double log_e0 = log_half + log_erfc((di - z0) * inv_sqrt2s);
        double log_e1 = log_half + log_erfc((z0 - j) * inv_sqrt2s);
        double log_s0 = log_t0 + (di * di - di) / two_s2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / two_s2 + log_e1;
        if (sign > 0) {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0, &bad);
            log_a1 = log_sub(log_a1, log_s1, &bad);
        }
        if (bad || isnan(log_s0) || isnan(log_s1)) return INFINITY;
        if ((log_s0 > log_s1 ? log_s0 : log_s1) < -30.0) return log_add(log_a0, log_a1);
        /* C(alpha, i+1) = C(alpha, i) (alpha - i) / (i + 1) */
        log_abs_coef += log(fabs(j)) - log(di + 1.0);
        if (j < 0) sign = -sign;
    }
    return INFINITY;
}

/* RDP of one step at order alpha (q in [0,1], sigma > 0). */
static double rdp_step(double q, double sigma, double alpha) {
    if (q == 0.0) return 0.0;
    if (q == 1.0) return alpha / (2.0 * sigma * sigma);
    double la = alpha == floor(alpha) ? log_a_int(q, sigma, (int)alpha)
                                      : log_a_frac(q, sigma, alpha);
    return la / (alpha - 1.0);
}

/* rdp[k] += steps * RDP_alpha_k(q, sigma) (Opacus: compute_rdp(...) = rdp * steps, summed) */
static void rdp_accumulate(double *rdp, double q, double sigma, long steps) {
    for (int k = 0; k < DP_RDP_NUM_ORDERS; k++)
        rdp[k] += rdp_step(q, sigma, rdp_order(k)) * (double)steps;
}

/* Opacus get_privacy_spent: epsilon minimised over the orders, NaN orders ignored. */
static void rdp_to_eps(const double *rdp, double delta, double *eps, double *alpha) {
    const double log_delta = log(delta);
    int best = -1;
    double best_eps = NAN;
    for (int k = 0; k < DP_RDP_NUM_ORDERS; k++) {
        const double a = rdp_order(k);
        double e = rdp[k] - (log_delta + log(a)) / (a - 1.0) + log((a - 1.0) / a);
        if (isnan(e)) continue;
        if (best < 0 || e < best_eps) {
            best = k;
            best_eps = e;
        }
    }
    if (best < 0) {
        *eps = INFINITY;
        *alpha = NAN;
    } else {
        *eps = best_eps;
        *alpha = rdp_order(best);
    }
}

static dp_status check_q(double q) {
    if (!(q >= 0.0 && q <= 1.0))
        return dp_fail(DP_ERR_RANGE, "sample rate %g is outside [0, 1]", q);
    return DP_OK;
}
static dp_status check_sigma(double sigma) {
    if (!(sigma > 0.0) || !isfinite(sigma))
        return dp_fail(DP_ERR_RANGE, "noise multiplier %g must be finite and > 0", sigma);
    return DP_OK;
}
static dp_status check_delta(double delta) {
    if (!(delta > 0.0 && delta < 1.0))
        return dp_fail(DP_ERR_RANGE, "delta %g is outside (0, 1)", delta);
    return DP_OK;
}
static dp_status check_steps(long steps) {
    if (steps < 0) return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 0", steps);
    return DP_OK;
}

/* ---- accountant ---------------------------------------------------------------------- */

typedef struct {
    double q, sigma;
    long steps;
} acc_entry;

struct dp_accountant {
    acc_entry *hist; /* [cap], dp_alloc'ed */
    size_t len, cap;
    long total;
    /* RDP summed over hist[0 .. len-2], in history order (as Opacus sums): only the last
     * entry can still grow, so epsilon costs one entry's RDP however long the history */
    double closed_rdp[DP_RDP_NUM_ORDERS];
};

dp_status dp_accountant_create(dp_accountant **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "accountant create: out is NULL");
    dp_accountant *a = dp_calloc(1, sizeof *a);
    if (!a) return DP_ERR_NOMEM;
    *out = a;
    return DP_OK;
}

void dp_accountant_destroy(dp_accountant *a) {
    if (!a) return;
    dp_free(a->hist);
    dp_free(a);
}

dp_status dp_accountant_step(dp_accountant *a, double q, double sigma, long steps) {
    dp_status st;
    if (!a) return dp_fail(DP_ERR_INVALID, "accountant step: accountant is NULL");
    if ((st = check_q(q)) || (st = check_sigma(sigma)) || (st = check_steps(steps))) return st;
    if (steps > LONG_MAX - a->total)
        return dp_fail(DP_ERR_RANGE, "steps: total %ld + %ld overflows", a->total, steps);
    if (steps == 0) return DP_OK;
    if (a->len > 0 && a->hist[a->len - 1].q == q && a->hist[a->len - 1].sigma == sigma) {
        a->hist[a->len - 1].steps += steps;
    } else {
        if (a->len == a->cap) {
            size_t ncap = a->cap ? 2 * a->cap : 8;
            acc_entry *nh = dp_alloc(ncap * sizeof *nh);
            if (!nh) return DP_ERR_NOMEM;
            if (a->len) memcpy(nh, a->hist, a->len * sizeof *nh);
            dp_free(a->hist);
            a->hist = nh;
            a->cap = ncap;
        }
        if (a->len > 0) {
            const acc_entry *last = &a->hist[a->len - 1];
            rdp_accumulate(a->closed_rdp, last->q, last->sigma, last->steps);
        }
        a->hist[a->len++] = (acc_entry){q, sigma, steps};
    }
    a->total += steps;
    return DP_OK;
}

long dp_accountant_total_steps(const dp_accountant *a) { return a ? a->total : 0; }

size_t dp_accountant_history_len(const dp_accountant *a) { return a ? a->len : 0; }

void dp_accountant_history_get(const dp_accountant *a, size_t i, double *q, double *sigma,
                               long *steps) {
    DP_ASSERT(a != NULL && i < a->len);
    if (q) *q = a->hist[i].q;
    if (sigma) *sigma = a->hist[i].sigma;
    if (steps) *steps = a->hist[i].steps;
}

dp_status dp_accountant_epsilon(const dp_accountant *a, double delta, double *eps,
                                double *best_alpha) {
    dp_status st;
    if (!a || !eps) return dp_fail(DP_ERR_INVALID, "accountant epsilon: NULL argument");
    if ((st = check_delta(delta))) return st;
    double e = 0.0, al = 0.0;
    if (a->len > 0) {
        double rdp[DP_RDP_NUM_ORDERS];
        const acc_entry *last = &a->hist[a->len - 1];
        memcpy(rdp, a->closed_rdp, sizeof rdp);
        rdp_accumulate(rdp, last->q, last->sigma, last->steps);
        rdp_to_eps(rdp, delta, &e, &al);
    }
    *eps = e;
    if (best_alpha) *best_alpha = al;
    return DP_OK;
}

dp_status dp_rdp_epsilon(double q, double sigma, long steps, double delta, double *eps,
                         double *best_alpha) {
    dp_status st;
    if (!eps) return dp_fail(DP_ERR_INVALID, "rdp epsilon: eps is NULL");
    if ((st = check_q(q)) || (st = check_sigma(sigma)) || (st = check_steps(steps)) ||
        (st = check_delta(delta)))
        return st;
    double e = 0.0, al = 0.0;
    if (steps > 0) {
        double rdp[DP_RDP_NUM_ORDERS] = {0};
        rdp_accumulate(rdp, q, sigma, steps);
        rdp_to_eps(rdp, delta, &e, &al);
    }
    *eps = e;
    if (best_alpha) *best_alpha = al;
    return DP_OK;
}

/* ---- calibration ------------------------------------------------------------------- */

static double eps_of(double q, double sigma, long steps, double delta) {
    double rdp[DP_RDP_NUM_ORDERS] = {0}, e, al;
    rdp_accumulate(rdp, q, sigma, steps);
    rdp_to_eps(rdp, delta, &e, &al);
    return e;
}

enum { CALIBRATE_MAX_BISECT = 200 };
#define CALIBRATE_MAX_SIGMA 1e6

dp_status dp_calibrate_sigma(double target_eps, double delta, double q, long steps,
                             double eps_tol, double *sigma) {
    dp_status st;
    if (!sigma) return dp_fail(DP_ERR_INVALID, "calibrate sigma: sigma is NULL");
    if (!(target_eps > 0.0) || !isfinite(target_eps))
        return dp_fail(DP_ERR_RANGE, "target epsilon %g must be finite and > 0", target_eps);
    if ((st = check_delta(delta))) return st;
    if (!(q > 0.0 && q <= 1.0))
        return dp_fail(DP_ERR_RANGE,
                       "sample rate %g is outside (0, 1] (calibration needs q > 0: at q = 0 "
                       "epsilon does not depend on sigma)",
                       q);
    if (steps < 1)
        return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 1 for calibration", steps);
    if (!(eps_tol >= 0.0) || !isfinite(eps_tol))
        return dp_fail(DP_ERR_RANGE, "epsilon tolerance %g must be finite and >= 0", eps_tol);
    if (eps_tol == 0.0) eps_tol = DP_CALIBRATE_EPS_TOL_DEFAULT;

    /* Opacus get_noise_multiplier */
    double sigma_low = 0.0, sigma_high = 10.0, eps_high = INFINITY;
    while (!(eps_high <= target_eps)) { /* NaN keeps doubling, like Python's inf > t */
        sigma_high *= 2.0;
        eps_high = eps_of(q, sigma_high, steps, delta);
        if (sigma_high > CALIBRATE_MAX_SIGMA)
            return dp_fail(DP_ERR_RANGE,
                           "target epsilon %g is unreachable at sample rate %g, %ld steps, "
                           "delta %g: it needs a noise multiplier above %g",
                           target_eps, q, steps, delta, CALIBRATE_MAX_SIGMA);
    }
    for (int it = 0; it < CALIBRATE_MAX_BISECT && target_eps - eps_high > eps_tol; it++) {
        double mid = 0.5 * (sigma_low + sigma_high);
        double e = eps_of(q, mid, steps, delta);
        if (e < target_eps) {
            sigma_high = mid;
            eps_high = e;
        } else {
            sigma_low = mid;
        }
    }
    *sigma = sigma_high;
    return DP_OK;
}
