/* secure.c: ChaCha20 CSPRNG seeded by getrandom, hardened Gaussian noise, Poisson sampling
 * (see dpsgd/secure.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dpsgd/secure.h"
#include "internal.h"

struct dp_csprng {
    uint32_t key[8];
    uint32_t nonce[2]; /* 0 for a generator; the block index for the noise's per-block streams */
    uint64_t counter;
    uint32_t block[16];
    int used; /* 32-bit words of block consumed (16: empty) */
    int has_spare;
    double spare;
};

static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }
#define QR(a, b, c, d)                                                                                                 \
    a += b, d ^= a, d = rotl(d, 16), c += d, b ^= c, b = rotl(b, 12), a += b, d ^= a, d = rotl(d, 8), c += d, b ^= c,  \
                    b = rotl(b, 7)

/* RFC 8439 block: constants, key, 32-bit counter + 96-bit nonce; here counter (low) and the
 * upper counter bits in the first nonce word, then the 64-bit nonce of the stream. */
static void chacha_block(dp_csprng *r) {
    uint32_t in[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
    memcpy(in + 4, r->key, 32);
    in[12] = (uint32_t)r->counter;
    in[13] = (uint32_t)(r->counter >> 32);
    in[14] = r->nonce[0];
    in[15] = r->nonce[1];
    uint32_t x[16];
    memcpy(x, in, sizeof x);
    for (int i = 0; i < 10; i++) {
        QR(x[0], x[4], x[8], x[12]);
        QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]);
        QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]);
        QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]);
        QR(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; i++) r->block[i] = x[i] + in[i];
    r->counter++;
    r->used = 0;
}

dp_status dp_csprng_create_from_key(const unsigned char key[32], dp_csprng **out) {
    dp_csprng *r = calloc(1, sizeof *r);
    if (!r) return dp_fail(DP_ERR_NOMEM, "secure RNG: out of memory");
    for (int i = 0; i < 8; i++)
        r->key[i] = (uint32_t)key[4 * i] | (uint32_t)key[4 * i + 1] << 8 | (uint32_t)key[4 * i + 2] << 16 |
                    (uint32_t)key[4 * i + 3] << 24;
    r->used = 16;
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
    if (r->used > 14) chacha_block(r);
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

double dp_csprng_normal(dp_csprng *r) { return dp__polar_normal(csprng_uniform, r, &r->has_spare, &r->spare); }

double dp_secure_noise_grid(double std) {
    int e;
    double f = frexp(std, &e); /* std = f 2^e, f in [0.5, 1) */
    if (f == 0.5) e--;         /* exact power of two: 2^k = std */
    return ldexp(1.0, e - 20);
}

enum { NOISE_BLOCK = 4096 };

void dp_secure_noise_gaussian_scaled(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                     dp_csprng *r) {
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
    const double lam = std > 0.0 ? dp_secure_noise_grid(std) : 1.0;
    const size_t nblocks = (n + NOISE_BLOCK - 1) / NOISE_BLOCK;
#pragma omp parallel for schedule(static) if (nblocks > 1)
    for (size_t b = 0; b < nblocks; b++) {
        dp_csprng s;
        memset(&s, 0, sizeof s);
        memcpy(s.key, key, sizeof key);
        s.nonce[0] = (uint32_t)b;
        s.nonce[1] = (uint32_t)((uint64_t)b >> 32);
        s.used = 16;
        const size_t lo = b * NOISE_BLOCK, hi = lo + NOISE_BLOCK < n ? lo + NOISE_BLOCK : n;
        for (size_t i = lo; i < hi; i++) {
            if (mask && !mask[i]) {
                g[i] = 0.0f;
                continue;
            }
            double y = (double)g[i];
            if (std > 0.0) {
                y += std * dp_csprng_normal(&s);
                y = lam * nearbyint(y / lam); /* y / lam and lam * k are exact (power of 2) */
            }
            g[i] = (float)(y * scale); /* a function of the grid value: post-processing */
        }
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
