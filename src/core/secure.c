/* secure.c: ChaCha20 CSPRNG seeded by getrandom, hardened Gaussian noise, Poisson sampling
 * (see dpsgd/secure.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "dpsgd/secure.h"
#include "core/internal.h"

enum { LANES = 8, WORDS = 16 * LANES }; /* blocks made at once (AVX2: one per 32-bit lane) */
enum { NOISE_BLOCK = 4096 };               /* coordinates per noise stream */

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
/* blocks counter .. counter + LANES - 1 of r's stream into the 16 * LANES * 4 bytes at dst,
 * lane-major: word i of block l at byte 4 (LANES i + l); the state's copies wiped after */
static void chacha_lanes(const dp_csprng *r, uint64_t counter, void *dst) {
    uint32_t in[16];
    chacha_state(r, counter, in);
    __m256i v[16], x[16];
    for (int i = 0; i < 16; i++) v[i] = _mm256_set1_epi32((int)in[i]);
    uint32_t lo[LANES], hi[LANES];
    for (int l = 0; l < LANES; l++) {
        lo[l] = (uint32_t)(counter + (uint64_t)l);
        hi[l] = (uint32_t)((counter + (uint64_t)l) >> 32);
    }
    v[12] = _mm256_loadu_si256((const __m256i *)lo);
    v[13] = _mm256_loadu_si256((const __m256i *)hi);
    memcpy(x, v, sizeof x);
    const __m256i rot16 = ROT16, rot8 = ROT8;
    CHACHA_ROUNDS(VQR, x);
    for (int i = 0; i < 16; i++) _mm256_storeu_si256((__m256i *)((char *)dst + 32 * i), _mm256_add_epi32(x[i], v[i]));
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
static void chacha_lanes(const dp_csprng *r, uint64_t counter, void *dst) {
    for (int l = 0; l < LANES; l++) {
        uint32_t in[16], x[16];
        chacha_state(r, counter + (uint64_t)l, in);
        memcpy(x, in, sizeof x);
        CHACHA_ROUNDS(QR, x);
        for (int i = 0; i < 16; i++) {
            const uint32_t v = x[i] + in[i];
            memcpy((char *)dst + 4 * (LANES * i + l), &v, 4);
        }
        explicit_bzero(x, sizeof x);
        explicit_bzero(in, sizeof in);
    }
}
#endif

/* Wipes n bytes of stack below the caller's frame, where the functions it called kept their
 * locals: gcc keeps copies of chacha_lanes' key broadcasts in stack slots that wiping its
 * arrays does not reach, and libcrypto's assembly leaves words of key and keystream */
__attribute__((noinline)) static void wipe_stack(size_t n) {
    unsigned char pad[n];
    explicit_bzero(pad, n);
    __asm__ volatile("" : : "r"(pad) : "memory");
}

/* the generator's next LANES blocks, in stream order */
static void chacha_blocks(dp_csprng *r) {
    uint32_t out[16][LANES];
    chacha_lanes(r, r->counter, out);
    wipe_stack(4096); /* chacha_lanes' frame (about 2 KiB) */
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


int dp__noise_libcrypto = 1;
unsigned long dp__noise_libcrypto_blocks;

/* libcrypto's ChaCha20 from its default provider, fetched once for the process (NULL where it
 * has none: the built-in code then serves every call) */
static EVP_CIPHER *chacha_cipher;
static pthread_once_t chacha_once = PTHREAD_ONCE_INIT;
static void chacha_fetch(void) {
    chacha_cipher = EVP_CIPHER_fetch(NULL, "ChaCha20", "provider=default");
    if (!chacha_cipher) ERR_clear_error(); /* the failed fetch's entries on this thread's queue */
}
void dp__secure_start(void) { pthread_once(&chacha_once, chacha_fetch); }

/* w[0 .. n64) = the keystream of s's key and nonce from block 0 on, as 64-bit words in stream
 * order (word k: bytes 8k .. 8k + 7, little-endian): what dp_csprng_u64 draws from a generator
 * at counter 0, made here by the built-in code a batch at a time */
static void builtin_keystream(dp_csprng *s, uint64_t *w, size_t n64) {
    s->counter = 0;
    for (size_t k0 = 0; k0 < n64; k0 += WORDS / 2) {
        chacha_blocks(s);
        const size_t m = n64 - k0 < WORDS / 2 ? n64 - k0 : WORDS / 2;
        for (size_t j = 0; j < m; j++) w[k0 + j] = (uint64_t)s->block[2 * j] | (uint64_t)s->block[2 * j + 1] << 32;
    }
    explicit_bzero(s->block, sizeof s->block);
}

/* the same words from libcrypto's context ec (keyed with s's key; its iv: state words 12-15,
 * the 64-bit block counter 0 and s's nonce, as chacha_state lays them out); 0 if it failed */
static int evp_keystream(EVP_CIPHER_CTX *ec, const dp_csprng *s, uint64_t *w, size_t n64) {
    const uint32_t iv[4] = {0, 0, s->nonce[0], s->nonce[1]};
    const int len = (int)(8 * n64);
    int out = 0;
    memset(w, 0, (size_t)len); /* the keystream is the encryption of zeros */
    return EVP_EncryptInit_ex(ec, NULL, NULL, NULL, (const unsigned char *)iv) == 1 &&
           EVP_EncryptUpdate(ec, (unsigned char *)w, &out, (const unsigned char *)w, len) == 1 && out == len;
}

/* OpenSSL's ChaCha20 (libcrypto's default provider: its code for the CPU in use, chosen at run
 * time) keyed with s's key, for one thread's noise blocks, once it has made one batch equal to
 * the built-in code's (at a nonce no noise block uses); NULL where it is switched off
 * (dp__noise_libcrypto), unavailable (a FIPS-only configuration has no ChaCha20), differs, or
 * the byte order is not little-endian: the built-in code then makes the same words */
static EVP_CIPHER_CTX *noise_cipher(dp_csprng *s) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (!dp__noise_libcrypto) return NULL;
    dp__secure_start();
    EVP_CIPHER_CTX *ec = chacha_cipher ? EVP_CIPHER_CTX_new() : NULL;
    int ok = ec && EVP_EncryptInit_ex2(ec, chacha_cipher, (const unsigned char *)s->key, NULL, NULL) == 1;
    if (ok) {
        uint64_t a[WORDS / 2], b[WORDS / 2];
        s->nonce[0] = UINT32_MAX; /* asymmetric: a swap of the nonce words shows */
        s->nonce[1] = UINT32_MAX - 1;
        ok = evp_keystream(ec, s, a, WORDS / 2);
        builtin_keystream(s, b, WORDS / 2);
        ok = ok && memcmp(a, b, sizeof a) == 0;
        explicit_bzero(a, sizeof a);
        explicit_bzero(b, sizeof b);
    }
    if (ok) return ec;
    EVP_CIPHER_CTX_free(ec); /* wipes what it holds */
    ERR_clear_error();       /* a failed initialisation's entries on this thread's queue */
#else
    (void)s;
#endif
    return NULL;
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
     * under (key, nonce b) from block 0 on (evp_keystream, builtin_keystream: the same words);
     * the rare rejected attempts draw from the same key and nonce at counters from 2^32 on, a
     * disjoint part of the stream. The keystream and normals stay in per-thread buffers, wiped
     * at the end. */
#pragma omp parallel if (nblocks > 1)
    {
        uint64_t w[NOISE_BLOCK];
        double z[NOISE_BLOCK];
        dp_csprng s;
        memset(&s, 0, sizeof s);
        memcpy(s.key, key, sizeof key);
        EVP_CIPHER_CTX *ec = std > 0.0 ? noise_cipher(&s) : NULL;
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
                if (ec && evp_keystream(ec, &s, w, cnt)) {
#pragma omp atomic
                    dp__noise_libcrypto_blocks++;
                } else
                    builtin_keystream(&s, w, cnt);
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
        EVP_CIPHER_CTX_free(ec); /* wipes its copy of the key */
        explicit_bzero(w, sizeof w);
        explicit_bzero(z, sizeof z);
        explicit_bzero(&s, sizeof s);
        wipe_stack(16384);
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
