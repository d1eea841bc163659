/* dpsgd/secure.h: the default source of a private run's randomness (`dpsgd train` without
 * --noise-seed): a cryptographically secure generator seeded by the operating system, and
 * noise, Poisson sampling and dropout drawn from it.
 *
 * Generator: ChaCha20 (RFC 8439 block function) in counter mode, 256-bit key from
 * getrandom(2); a seed cannot be given (by design: a known seed makes the noise known).
 *
 * Gaussian noise, hardened against floating-point attacks (Mironov 2012: the set of doubles
 * that "x + textbook noise" can produce depends on x, which leaks x). Each normal is drawn by
 * the polar Box-Muller method from 53-bit uniforms of the CSPRNG, scaled by std, added to
 * g[i] in double, and the noisy value is rounded to the grid Lambda*Z with Lambda = 2^(k-20),
 * 2^k the smallest power of two >= std (the "snapping" idea of Mironov 2012, with a grid 2^20
 * times finer than the noise instead of as coarse as it): the released value depends only on
 * which grid cell the ideal sum falls in, and the double arithmetic that produced it works
 * at a resolution 2^25 times finer than a cell (for |g| below 2^24 std). Rounding to float32
 * afterwards is a function of the grid value (both are power-of-two grids), i.e.
 * post-processing. See docs/reliability.md for the argument and its limits.
 */
#ifndef DPSGD_SECURE_H
#define DPSGD_SECURE_H
#include "dpsgd/core.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct dp_csprng dp_csprng;
/* New generator keyed from getrandom(2) (caller owns; dp_csprng_destroy). DP_ERR_IO if the
 * OS gives no entropy, DP_ERR_NOMEM. The key is wiped on destroy. */
dp_status dp_csprng_create(dp_csprng **out);
/* Keyed from 32 given bytes: ONLY for known-answer tests of the cipher. */
dp_status dp_csprng_create_from_key(const unsigned char key[32], dp_csprng **out);
void dp_csprng_destroy(dp_csprng *r);
uint64_t dp_csprng_u64(dp_csprng *r);
/* uniform in (0, 1): 53 random bits, never 0 */
double dp_csprng_uniform(dp_csprng *r);
/* standard normal, polar Box-Muller from dp_csprng_uniform */
double dp_csprng_normal(dp_csprng *r);
/* The grid of dp_secure_noise_gaussian for a noise std > 0: 2^(ceil(log2 std) - 20). */
double dp_secure_noise_grid(double std);
/* g[i] = float(Lambda * round((g[i] + std * z_i) / Lambda)); std finite and >= 0 (0: no-op).
 * Takes a 256-bit key from r and draws block b of 4096 coordinates from ChaCha20 under that
 * key with nonce b: parallel (OpenMP), and the same numbers for any thread count. */
void dp_secure_noise_gaussian(float *g, size_t n, double std, dp_csprng *r);
/* The step's "noise, then average" in one pass: g[i] = float(Lambda * round((g[i] + std z_i) /
 * Lambda) * scale) where mask[i] (or mask is NULL), else 0; no draw for masked-out (frozen)
 * coordinates. std 0: only the scaling and masking. */
void dp_secure_noise_gaussian_scaled(float *g, size_t n, const unsigned char *mask, double std, double scale,
                                     dp_csprng *r);
/* Poisson sampling: example i joins when a 64-bit uniform is below floor(q 2^64) (exact to
 * 2^-64); one draw per example. idx, count as dp_poisson_sample. DP_ERR_RANGE for q outside
 * [0, 1]. */
dp_status dp_secure_poisson_sample(dp_csprng *r, size_t n, double q, size_t *idx, size_t *count);
#ifdef __cplusplus
}
#endif
#endif
