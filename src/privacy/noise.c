/* privacy/noise.c: Gaussian noise and Poisson sampling (dpsgd/privacy.h). The accountant that prices
 * them is src/privacy/accountant.c and src/acct_*.c (dpsgd/accounting.h).
 * This file must be compiled without -ffast-math.
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

#include "core/internal.h"

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

/* a block's scalar stream: xoshiro256** (src/core/internal.h), seeded by splitmix64 */
typedef struct {
    uint64_t s[4];
} xo256;

static inline uint64_t xo_next(xo256 *r) { return dp__xoshiro256ss(r->s); }

/* One ziggurat attempt's x from a 64-bit draw: bits 0..7 give the layer i, bits 12..63 a
 * uniform in [-1, 1) (as a double in [2, 4) minus 3, exactly) */
static inline double zig_x_of(uint64_t u, int64_t *i) {
    *i = (int64_t)(u & (ZIG_N - 1));
    const uint64_t bits = (u >> 12) | 0x4000000000000000ULL;
    double d;
    memcpy(&d, &bits, sizeof d);
    return (d - 3.0) * zig_x[*i];
}

/* The rest of the method once the attempt (i, x) fell outside its layer's inner rectangle:
 * the tail (base layer) or the wedge test, then fresh attempts from r until one is accepted.
 * The 64-bit words come from next(src): a block's xoshiro256** stream here, a ChaCha20 stream
 * in the secure noise (src/core/secure.c). */
static double zig_slow_src(uint64_t (*next)(void *), void *src, int64_t i, double x) {
    for (;;) {
        if (i == 0) { /* beyond r: Marsaglia's exact tail */
            double a, b;
            do {
                a = -log(dp__unit_open0(next(src))) / zig_x[1];
                b = -log(dp__unit_open0(next(src)));
            } while (b + b < a * a);
            return x < 0 ? -(zig_x[1] + a) : zig_x[1] + a;
        }
        /* the wedge: accept with the density's height against a uniform height in the layer */
        if (zig_f[i] + dp__unit_open0(next(src)) * (zig_f[i + 1] - zig_f[i]) < gauss_f(x)) return x;
        x = zig_x_of(next(src), &i);
        if (fabs(x) < zig_x[i + 1]) return x;
    }
}

static uint64_t xo_word(void *r) { return xo_next(r); }
static double zig_slow(xo256 *r, int64_t i, double x) { return zig_slow_src(xo_word, r, i, x); }

void dp__zig_init(void) { pthread_once(&zig_once, zig_init); }

#if defined(__AVX2__)
/* The first attempts of the four words at w (the same operations as zig_x_of, no contraction:
 * a subtraction, then a product): z[0..3] = their x, and bit l of the result set where attempt
 * l passed its rectangle test. The layer's bounds x_i and x_{i+1} are adjacent in the table:
 * one 16-byte load per word and two unpacks, in place of two gathers (slower, on Zen 3 at
 * least: bench_noise's notes in docs/benchmarks.md). */
static inline int zig_rect4(const uint64_t *w, double *z) {
    const __m128d p0 = _mm_loadu_pd(zig_x + (w[0] & (ZIG_N - 1))), p1 = _mm_loadu_pd(zig_x + (w[1] & (ZIG_N - 1)));
    const __m128d p2 = _mm_loadu_pd(zig_x + (w[2] & (ZIG_N - 1))), p3 = _mm_loadu_pd(zig_x + (w[3] & (ZIG_N - 1)));
    const __m256d a = _mm256_insertf128_pd(_mm256_castpd128_pd256(p0), p2, 1); /* x0 x0' x2 x2' */
    const __m256d b = _mm256_insertf128_pd(_mm256_castpd128_pd256(p1), p3, 1); /* x1 x1' x3 x3' */
    const __m256d xi = _mm256_unpacklo_pd(a, b), xi1 = _mm256_unpackhi_pd(a, b);
    const __m256i u = _mm256_loadu_si256((const __m256i *)w);
    const __m256i bits = _mm256_or_si256(_mm256_srli_epi64(u, 12), _mm256_set1_epi64x(0x4000000000000000LL));
    const __m256d x = _mm256_mul_pd(_mm256_sub_pd(_mm256_castsi256_pd(bits), _mm256_set1_pd(3.0)), xi);
    _mm256_storeu_pd(z, x);
    return _mm256_movemask_pd(_mm256_cmp_pd(_mm256_andnot_pd(_mm256_set1_pd(-0.0), x), xi1, _CMP_LT_OQ));
}
#endif

/* The first attempts of n <= 64 coordinates from the words at w: z[k] = zig_x_of(w[k]), and
 * bit k of the result set where its rectangle test failed. The same numbers with or without
 * the AVX2 loop (zig_rect4). */
static inline uint64_t zig_first(double *z, const uint64_t *w, size_t n) {
    uint64_t rej = 0;
    size_t k = 0;
#if defined(__AVX2__)
    for (; k + 4 <= n; k += 4) rej |= (uint64_t)(~zig_rect4(w + k, z + k) & 15) << k;
#endif
    for (; k < n; k++) {
        int64_t i;
        const double x = zig_x_of(w[k], &i);
        z[k] = x;
        rej |= (uint64_t)!(fabs(x) < zig_x[i + 1]) << k;
    }
    return rej;
}

void dp__zig_normals_words(double *z, size_t cnt, const uint64_t *w, uint64_t (*next)(void *), void *src) {
    /* 64 first attempts at a time, their rectangle tests without calls or branches (zig_first);
     * then the rejected ones (about 1 in 100) through the slow path, in order, so that its
     * draws from next(src) come in coordinate order as in a plain loop */
    for (size_t k0 = 0; k0 < cnt; k0 += 64) {
        const size_t n = cnt - k0 < 64 ? cnt - k0 : 64;
        for (uint64_t rej = zig_first(z + k0, w + k0, n); rej; rej &= rej - 1) {
            const size_t k = k0 + (size_t)__builtin_ctzll(rej);
            int64_t i;
            const double x = zig_x_of(w[k], &i);
            z[k] = zig_slow_src(next, src, i, x);
        }
    }
}

static inline double zig_normal(xo256 *r) {
    int64_t i;
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
        for (int w = 0; w < 4; w++) ls[w][l] = dp__splitmix64(&x);
    xo256 rs;
    for (int w = 0; w < 4; w++) rs.s[w] = dp__splitmix64(&x);
    const size_t n4 = cnt & ~(size_t)3;
#if defined(__AVX2__)
    __m256i s0 = _mm256_loadu_si256((const __m256i *)ls[0]), s1 = _mm256_loadu_si256((const __m256i *)ls[1]);
    __m256i s2 = _mm256_loadu_si256((const __m256i *)ls[2]), s3 = _mm256_loadu_si256((const __m256i *)ls[3]);
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
        uint64_t uw[4];
        _mm256_storeu_si256((__m256i *)uw, u);
        const int ok = zig_rect4(uw, z + k);
        if (ok != 15)
            for (int l = 0; l < 4; l++)
                if (!(ok >> l & 1)) z[k + (size_t)l] = zig_slow(&rs, (int64_t)(uw[l] & (ZIG_N - 1)), z[k + (size_t)l]);
    }
#else
    for (size_t k = 0; k < n4; k += 4) {
        uint64_t u[4];
        for (int l = 0; l < 4; l++) { /* lane l's xoshiro256** step */
            uint64_t st[4] = {ls[0][l], ls[1][l], ls[2][l], ls[3][l]};
            u[l] = dp__xoshiro256ss(st);
            for (int w = 0; w < 4; w++) ls[w][l] = st[w];
        }
        for (int l = 0; l < 4; l++) {
            int64_t i;
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
                         dp_rng *rng, dp__block_fn after, void *user) {
    DP_ASSERT(std >= 0.0 && isfinite(std));
    if (n == 0 || (std == 0.0 && !zero_masked)) return;
    DP_ASSERT(g != NULL && rng != NULL);
    if (std == 0.0) { /* only the scaling and masking; nothing drawn */
        const size_t nb = (n + NOISE_BLOCK - 1) / NOISE_BLOCK;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t b = 0; b < nb; b++) {
            const size_t lo = b * NOISE_BLOCK, hi = lo + NOISE_BLOCK < n ? lo + NOISE_BLOCK : n;
            for (size_t i = lo; i < hi; i++) g[i] = mask[i] ? (float)((double)g[i] * scale) : 0.0f;
            if (after) after(user, lo, hi);
        }
        return;
    }
    dp__zig_init();
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
                if (after) after(user, lo, hi);
                continue;
            }
            block_normals(z, cnt, key, b);
            /* the value is made for every coordinate and the mask only selects: gcc does not
             * if-convert a conditional conversion under -ftrapping-math, and written as
             * mb[i] ? (float)(...) : 0 these loops ran scalar */
            if (zero_masked) {
                /* rounded to float twice, as noise then a separate scaling pass would */
#pragma omp simd
                for (size_t i = 0; i < cnt; i++) {
                    const float v = (float)((double)(float)((double)gb[i] + std * z[i]) * scale);
                    gb[i] = mb[i] ? v : 0.0f;
                }
            } else if (mb) {
#pragma omp simd
                for (size_t i = 0; i < cnt; i++) {
                    const float v = (float)((double)gb[i] + std * z[i]);
                    gb[i] = mb[i] ? v : gb[i];
                }
            } else {
#pragma omp simd
                for (size_t i = 0; i < cnt; i++) gb[i] = (float)((double)gb[i] + std * z[i]);
            }
            if (after) after(user, lo, hi);
        }
    }
}

void dp_noise_gaussian(float *g, size_t n, double std, dp_rng *rng) {
    noise_blocks(g, n, NULL, std, 0, 1.0, rng, NULL, NULL);
}

void dp_noise_gaussian_masked(float *g, size_t n, const unsigned char *mask, double std, dp_rng *rng) {
    DP_ASSERT(n == 0 || mask != NULL);
    noise_blocks(g, n, mask, std, 0, 1.0, rng, NULL, NULL);
}

void dp_noise_gaussian_scaled(float *g, size_t n, const unsigned char *mask, double std, double scale, dp_rng *rng) {
    DP_ASSERT(n == 0 || mask != NULL);
    DP_ASSERT(isfinite(scale));
    noise_blocks(g, n, mask, std, 1, scale, rng, NULL, NULL);
}

void dp__noise_gaussian_scaled_then(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                    dp_rng *rng, dp__block_fn after, void *user) {
    DP_ASSERT(n == 0 || mask != NULL);
    DP_ASSERT(isfinite(scale));
    noise_blocks(g, n, mask, std, 1, scale, rng, after, user);
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
