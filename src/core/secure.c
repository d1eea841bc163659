/* secure.c: ChaCha20 CSPRNG seeded by getrandom, hardened Gaussian noise, Poisson sampling
 * (see dpsgd/secure.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dpsgd/secure.h"
#include "core/internal.h"

enum { LANES = 8, WORDS = 16 * LANES }; /* blocks made at once (AVX2: one per 32-bit lane) */
enum { NOISE_BLOCK = 4096 };               /* coordinates per noise stream (a multiple of WORDS / 2) */

struct dp_csprng {
    uint32_t key[8];
    uint32_t nonce[2]; /* 0 for a generator; the block index for the noise's per-block streams */
    uint64_t counter;  /* of the next block to make */
    uint32_t block[WORDS]; /* LANES consecutive blocks of keystream, in order */
    int used; /* 32-bit words of block consumed (WORDS: empty) */
    int has_spare;
    double spare;
};

/* RFC 8439 block: constants, key, 32-bit counter + 96-bit nonce; here counter (low) and the
 * upper counter bits in the first nonce word, then the 64-bit nonce of the stream. Makes
 * blocks counter .. counter + LANES - 1 into r->block, in order. */
static void chacha_state(const dp_csprng *r, uint64_t counter, uint32_t in[16]) {
    static const uint32_t sigma[4] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
    memcpy(in, sigma, sizeof sigma);
    memcpy(in + 4, r->key, 32);
    in[12] = (uint32_t)counter;
    in[13] = (uint32_t)(counter >> 32);
    in[14] = r->nonce[0];
    in[15] = r->nonce[1];
}

/* ChaCha20's 20 rounds (10 double rounds: columns, then diagonals) on the state words x[0..15],
 * with Q the quarter round of the width in use (8 lanes, scalar, 16 lanes) */
#define CHACHA_ROUNDS(Q, x)                                                                                            \
    for (int i_ = 0; i_ < 10; i_++) {                                                                                  \
        Q(x[0], x[4], x[8], x[12]);                                                                                    \
        Q(x[1], x[5], x[9], x[13]);                                                                                    \
        Q(x[2], x[6], x[10], x[14]);                                                                                   \
        Q(x[3], x[7], x[11], x[15]);                                                                                   \
        Q(x[0], x[5], x[10], x[15]);                                                                                   \
        Q(x[1], x[6], x[11], x[12]);                                                                                   \
        Q(x[2], x[7], x[8], x[13]);                                                                                    \
        Q(x[3], x[4], x[9], x[14]);                                                                                    \
    }

#ifdef __AVX2__
#include <immintrin.h>
/* the same function on LANES blocks at once: lane l of vector i is word i of block l */
static inline __m256i rotl8(__m256i x, int k) { return _mm256_or_si256(_mm256_slli_epi32(x, k), _mm256_srli_epi32(x, 32 - k)); }
/* rotations by whole bytes (16 and 8) as one byte shuffle within each 32-bit lane */
#define ROT16 _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)
#define ROT8 _mm256_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14)
#define VQR(a, b, c, d)                                                                                                \
    a = _mm256_add_epi32(a, b), d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), rot16), c = _mm256_add_epi32(c, d),    \
    b = rotl8(_mm256_xor_si256(b, c), 12), a = _mm256_add_epi32(a, b),                                                 \
    d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), rot8), c = _mm256_add_epi32(c, d), b = rotl8(_mm256_xor_si256(b, c), 7)
/* n times: blocks counter .. counter + LANES - 1 of r's stream into the 16 * LANES * 4 bytes
 * at dst, lane-major: word i of block l at byte 4 (LANES i + l) (stored bytewise: dst may be
 * any buffer, e.g. 64-bit words); then the next LANES blocks 512 bytes further on. The state's
 * copies are wiped once, after the last (as chacha_run16). */
static void chacha_run(const dp_csprng *r, uint64_t counter, size_t n, void *dst) {
    uint32_t in[16];
    chacha_state(r, counter, in);
    __m256i v[16], x[16];
    for (int i = 0; i < 16; i++) v[i] = _mm256_set1_epi32((int)in[i]);
    const __m256i rot16 = ROT16, rot8 = ROT8;
    for (size_t it = 0; it < n; it++, counter += LANES) {
        uint32_t lo[LANES], hi[LANES];
        for (int l = 0; l < LANES; l++) {
            lo[l] = (uint32_t)(counter + (uint64_t)l);
            hi[l] = (uint32_t)((counter + (uint64_t)l) >> 32);
        }
        v[12] = _mm256_loadu_si256((const __m256i *)lo);
        v[13] = _mm256_loadu_si256((const __m256i *)hi);
        memcpy(x, v, sizeof x);
        CHACHA_ROUNDS(VQR, x);
        char *d = (char *)dst + 512 * it;
        for (int i = 0; i < 16; i++) _mm256_storeu_si256((__m256i *)(d + 32 * i), _mm256_add_epi32(x[i], v[i]));
    }
    explicit_bzero(x, sizeof x);
    explicit_bzero(v, sizeof v);
    explicit_bzero(in, sizeof in);
}
#else
static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }
#define QR(a, b, c, d)                                                                                                 \
    a += b, d ^= a, d = rotl(d, 16), c += d, b ^= c, b = rotl(b, 12), a += b, d ^= a, d = rotl(d, 8), c += d, b ^= c,  \
                    b = rotl(b, 7)
/* the same, one block at a time */
static void chacha_run(const dp_csprng *r, uint64_t counter, size_t n, void *dst) {
    for (size_t it = 0; it < n; it++, counter += LANES)
        for (int l = 0; l < LANES; l++) {
            uint32_t in[16], x[16];
            chacha_state(r, counter + (uint64_t)l, in);
            memcpy(x, in, sizeof x);
            CHACHA_ROUNDS(QR, x);
            for (int i = 0; i < 16; i++) {
                const uint32_t v = x[i] + in[i];
                memcpy((char *)dst + 512 * it + 4 * (LANES * i + l), &v, 4);
            }
            explicit_bzero(x, sizeof x);
            explicit_bzero(in, sizeof in);
        }
}
#endif

int dp__chacha_avx512 = 1;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DP_CHACHA16 1
#define VQR16(a, b, c, d)                                                                                              \
    a = _mm512_add_epi32(a, b), d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 16), c = _mm512_add_epi32(c, d),          \
    b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 12), a = _mm512_add_epi32(a, b),                                      \
    d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 8), c = _mm512_add_epi32(c, d), b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 7)
/* n16 times: blocks counter .. counter + 2 LANES - 1 with AVX-512 (16 lanes; rotations are
 * one instruction), stored as chacha_run stores blocks counter .. counter + LANES - 1
 * followed by what it stores for the next LANES: the same bytes as chacha_run with 2 n16.
 * The state's copies are wiped once, after the last (wiping them after every 16 blocks kept
 * them in memory: bench_noise's secure noise about 4% slower). Only where the CPU has
 * AVX-512F (chacha16_ok). */
__attribute__((target("avx512f"))) static void chacha_run16(const dp_csprng *r, uint64_t counter, size_t n16,
                                                            void *dst) {
    uint32_t in[16];
    chacha_state(r, counter, in);
    __m512i v[16], x[16];
    for (int i = 0; i < 16; i++) v[i] = _mm512_set1_epi32((int)in[i]);
    for (size_t it = 0; it < n16; it++, counter += 2 * LANES) {
        uint32_t lo[2 * LANES], hi[2 * LANES];
        for (int l = 0; l < 2 * LANES; l++) {
            lo[l] = (uint32_t)(counter + (uint64_t)l);
            hi[l] = (uint32_t)((counter + (uint64_t)l) >> 32);
        }
        v[12] = _mm512_loadu_si512(lo);
        v[13] = _mm512_loadu_si512(hi);
        memcpy(x, v, sizeof x);
        CHACHA_ROUNDS(VQR16, x);
        char *d = (char *)dst + 1024 * it;
        for (int i = 0; i < 16; i++) {
            const __m512i y = _mm512_add_epi32(x[i], v[i]);
            _mm256_storeu_si256((__m256i *)(d + 32 * i), _mm512_castsi512_si256(y));
            _mm256_storeu_si256((__m256i *)(d + 32 * (16 + i)), _mm512_extracti64x4_epi64(y, 1));
        }
    }
    explicit_bzero(x, sizeof x);
    explicit_bzero(v, sizeof v);
    explicit_bzero(in, sizeof in);
}
#undef VQR16
static int chacha16_ok(void) { return dp__chacha_avx512 && __builtin_cpu_supports("avx512f"); }
#else
static int chacha16_ok(void) { return 0; }
#endif

/* the generator's next LANES blocks, in stream order */
static void chacha_blocks(dp_csprng *r) {
    uint32_t out[16][LANES];
    chacha_run(r, r->counter, 1, out);
    for (int l = 0; l < LANES; l++) /* transpose: block l is words out[0..15][l] */
        for (int i = 0; i < 16; i++) r->block[16 * l + i] = out[i][l];
    explicit_bzero(out, sizeof out);
    r->counter += LANES;
    r->used = 0;
}

dp_status dp_csprng_create_from_key(const unsigned char key[32], dp_csprng **out) {
    dp_csprng *r = calloc(1, sizeof *r);
    if (!r) return dp_fail(DP_ERR_NOMEM, "secure RNG: out of memory");
    for (int i = 0; i < 8; i++)
        r->key[i] = (uint32_t)key[4 * i] | (uint32_t)key[4 * i + 1] << 8 | (uint32_t)key[4 * i + 2] << 16 |
                    (uint32_t)key[4 * i + 3] << 24;
    r->used = WORDS;
    *out = r;
    return DP_OK;
}

dp_status dp_csprng_create(dp_csprng **out) {
    unsigned char key[32];
    size_t got = 0;
    while (got < sizeof key) {
        ssize_t n = getrandom(key + got, sizeof key - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return dp_fail(DP_ERR_IO, "secure RNG: getrandom failed: %s", strerror(errno));
        got += (size_t)n;
    }
    dp_status st = dp_csprng_create_from_key(key, out);
    explicit_bzero(key, sizeof key);
    return st;
}

void dp_csprng_destroy(dp_csprng *r) {
    if (!r) return;
    explicit_bzero(r, sizeof *r);
    free(r);
}

uint64_t dp_csprng_u64(dp_csprng *r) {
    if (r->used > WORDS - 2) chacha_blocks(r);
    uint64_t v = (uint64_t)r->block[r->used] | (uint64_t)r->block[r->used + 1] << 32;
    r->used += 2;
    return v;
}

double dp_csprng_uniform(dp_csprng *r) {
    uint64_t v;
    do v = dp_csprng_u64(r) >> 11;
    while (v == 0);
    return (double)v * 0x1.0p-53;
}

static double csprng_uniform(void *r) { return dp_csprng_uniform(r); }
static uint64_t csprng_word(void *r) { return dp_csprng_u64(r); }

double dp_csprng_normal(dp_csprng *r) { return dp__polar_normal(csprng_uniform, r, &r->has_spare, &r->spare); }

double dp_secure_noise_grid(double std) {
    int e;
    double f = frexp(std, &e); /* std = f 2^e, f in [0.5, 1) */
    if (f == 0.5) e--;         /* exact power of two: 2^k = std */
    return ldexp(1.0, e - 20);
}


void dp_secure_noise_gaussian_scaled(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                     dp_csprng *r) {
    dp__secure_noise_gaussian_scaled_then(g, n, mask, std, scale, r, NULL, NULL);
}

void dp__secure_noise_gaussian_scaled_then(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                           dp_csprng *r, dp__block_fn after, void *user) {
    DP_ASSERT(std >= 0.0 && isfinite(std));
    if (n == 0) return;
    DP_ASSERT(g != NULL && r != NULL);
    /* a fresh 256-bit key for this call from the generator; block b of NOISE_BLOCK coordinates
     * draws from ChaCha20 under that key with nonce b, so the blocks run in parallel and the
     * noise does not depend on the thread count */
    uint32_t key[8];
    for (int i = 0; i < 4; i++) {
        uint64_t v = dp_csprng_u64(r);
        key[2 * i] = (uint32_t)v;
        key[2 * i + 1] = (uint32_t)(v >> 32);
    }
    const double lam = std > 0.0 ? dp_secure_noise_grid(std) : 1.0, inv_lam = 1.0 / lam;
    /* lam is a power of 2: so is 1 / lam, exactly, unless it over- or underflows */
    const int exact_inv = isnormal(lam) && isnormal(inv_lam) && lam * inv_lam == 1.0;
    const size_t nblocks = (n + NOISE_BLOCK - 1) / NOISE_BLOCK;
    dp__zig_init();
    /* Block b's normals: the first attempt of coordinate k takes 64-bit word k of the keystream
     * blocks 0, 1, ... under (key, nonce b), read in the lane-major order the 8-lane ChaCha20
     * makes them in (no transpose; the same numbers from the scalar loop); the rare rejected
     * attempts draw from the same key and nonce at counters from 2^32 on, a disjoint part of
     * the stream. The keystream and normals stay in per-thread buffers, wiped at the end. */
    enum { BATCH_WORDS = 16 * LANES / 2 }; /* 64-bit words per LANES blocks */
    const int wide = chacha16_ok();
    (void)wide; /* without DP_CHACHA16 */
    _Static_assert(NOISE_BLOCK % (2 * BATCH_WORDS) == 0, "a block is whole pairs of batches");
#pragma omp parallel if (nblocks > 1)
    {
        uint64_t w[NOISE_BLOCK];
        double z[NOISE_BLOCK];
        dp_csprng s;
        memset(&s, 0, sizeof s);
        memcpy(s.key, key, sizeof key);
#pragma omp for schedule(static)
        for (size_t b = 0; b < nblocks; b++) {
            const size_t lo = b * NOISE_BLOCK, hi = lo + NOISE_BLOCK < n ? lo + NOISE_BLOCK : n, cnt = hi - lo;
            if (mask && !memchr(mask + lo, 1, cnt)) { /* a frozen block: nothing drawn */
                memset(g + lo, 0, sizeof(float) * cnt);
                if (after) after(user, lo, hi);
                continue;
            }
            if (std > 0.0) {
                s.nonce[0] = (uint32_t)b;
                s.nonce[1] = (uint32_t)((uint64_t)b >> 32);
                /* whole batches straight into w (NOISE_BLOCK is a multiple of BATCH_WORDS: the
                 * last block's tail too, words past cnt unused): with AVX-512 two at a time while
                 * more than one batch is left (k + BATCH_WORDS < cnt <= NOISE_BLOCK), then the rest
                 * with 8 lanes */
                size_t k = 0;
#ifdef DP_CHACHA16
                if (wide && cnt > BATCH_WORDS) {
                    const size_t n16 = (cnt - BATCH_WORDS + 2 * BATCH_WORDS - 1) / (2 * BATCH_WORDS);
                    chacha_run16(&s, 0, n16, w);
                    k = n16 * 2 * BATCH_WORDS;
                }
#endif
                if (k < cnt)
                    chacha_run(&s, (uint64_t)(k / BATCH_WORDS) * LANES, (cnt - k + BATCH_WORDS - 1) / BATCH_WORDS, w + k);
                s.counter = (uint64_t)1 << 32; /* the rejected attempts' part of the stream */
                s.used = WORDS;
                dp__zig_normals_words(z, cnt, w, csprng_word, &s);
            }
            float *gb = g + lo;
            const unsigned char *mb = mask ? mask + lo : NULL;
            if (std > 0.0 && exact_inv) {
                /* y / lam as y * (1 / lam): the same number, both exact (a power of 2); no branch,
                 * so the loop vectorises */
#pragma omp simd
                for (size_t k = 0; k < cnt; k++) {
                    const double y = lam * nearbyint(((double)gb[k] + std * z[k]) * inv_lam);
                    const float v = (float)(y * scale); /* a function of the grid value: post-processing */
                    gb[k] = mb && !mb[k] ? 0.0f : v;
                }
            } else {
                for (size_t k = 0; k < cnt; k++) {
                    if (mb && !mb[k]) {
                        gb[k] = 0.0f;
                        continue;
                    }
                    double y = (double)gb[k];
                    if (std > 0.0) {
                        y += std * z[k];
                        y = lam * nearbyint(y / lam); /* y / lam and lam * k are exact (power of 2) */
                    }
                    gb[k] = (float)(y * scale); /* a function of the grid value: post-processing */
                }
            }
            if (after) after(user, lo, hi);
        }
        explicit_bzero(w, sizeof w);
        explicit_bzero(z, sizeof z);
        explicit_bzero(&s, sizeof s);
    }
    explicit_bzero(key, sizeof key);
}

void dp_secure_noise_gaussian(float *g, size_t n, double std, dp_csprng *r) {
    dp_secure_noise_gaussian_scaled(g, n, NULL, std, 1.0, r);
}

dp_status dp_secure_poisson_sample(dp_csprng *r, size_t n, double q, size_t *idx, size_t *count) {
    if (!(q >= 0.0 && q <= 1.0)) return dp_fail(DP_ERR_RANGE, "sample rate %g is outside [0, 1]", q);
    size_t c = 0;
    if (q == 1.0) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        c = n;
    } else if (q > 0.0) {
        /* q < 1, so q 2^64 < 2^64 fits; ldexp is exact, the cast truncates */
        uint64_t thr = (uint64_t)ldexp(q, 64);
        for (size_t i = 0; i < n; i++)
            if (dp_csprng_u64(r) < thr) idx[c++] = i;
    }
    *count = c;
    return DP_OK;
}
