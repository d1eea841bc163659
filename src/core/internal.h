/* internal.h (internal): small helpers shared by the library's source files. */
#ifndef DP_INTERNAL_H
#define DP_INTERNAL_H
#include <math.h>
#include <stdint.h>

#include "dpsgd/core.h"

/* seconds on the monotonic clock (for elapsed times) */
double dp__now_s(void);

/* "<prefix>: <the current message>" with status st (dp_fail formats before it writes) */
static inline dp_status dp__prefix_error(dp_status st, const char *prefix) {
    return dp_fail(st, "%s: %s", prefix, dp_last_error());
}

/* The generators, written once: dp_rng (src/core/core.c) and the noise blocks (src/privacy/noise.c,
 * whose AVX2 path runs four xoshiro256** lanes side by side) use these. */
/* splitmix64: advances *x by the golden gamma and returns the mixed value */
static inline uint64_t dp__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline uint64_t dp__rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
/* xoshiro256**: the next output of state s, which it advances */
static inline uint64_t dp__xoshiro256ss(uint64_t s[4]) {
    const uint64_t out = dp__rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = dp__rotl64(s[3], 45);
    return out;
}

/* Called by the noise functions below right after block [lo, hi) of the released gradient
 * is final, in the thread that wrote it (the private step updates those parameters there,
 * while the block is in cache). Blocks are disjoint; they may come in any order. */
typedef void (*dp__block_fn)(void *user, size_t lo, size_t hi);
/* dp_noise_gaussian_scaled and dp_secure_noise_gaussian_scaled with the per-block call (the
 * same numbers; after may be NULL) */
void dp__noise_gaussian_scaled_then(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                    dp_rng *rng, dp__block_fn after, void *user);
struct dp_csprng;
/* Whether the secure noise takes its keystream from OpenSSL's ChaCha20 (1, the default) or
 * from the built-in generator (0, also where libcrypto has no ChaCha20). Both give the same
 * stream bit for bit; tests/test_checkpoint.c compares them. */
extern int dp__noise_libcrypto;
/* noise blocks whose keystream libcrypto made, since the process started (for the tests) */
extern unsigned long dp__noise_libcrypto_blocks;
/* Starts libcrypto and fetches its ChaCha20 for the secure noise (once; the first noise call
 * does it otherwise). A program whose heap never returns freed memory calls it before its large
 * allocations: what libcrypto keeps from its first use would otherwise pin freed space between
 * them (tools/tool_setup.h). */
void dp__secure_start(void);
void dp__secure_noise_gaussian_scaled_then(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                           struct dp_csprng *r, dp__block_fn after, void *user);

/* uniform in (0, 1] from a 64-bit word: never 0, so that log() is finite */
static inline double dp__unit_open0(uint64_t w) { return ((double)(w >> 11) + 1.0) * 0x1.0p-53; }

/* The exact ziggurat of src/privacy/noise.c (256 layers) over 64-bit words: cnt standard
 * normals, the first attempt of normal k from the word w[k], what a rejected attempt needs
 * (about 1 in 100) from next(src). dp__zig_init builds the tables (once; thread-safe) and must
 * have run before. */
void dp__zig_init(void);
void dp__zig_normals_words(double *z, size_t cnt, const uint64_t *w, uint64_t (*next)(void *), void *src);

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
