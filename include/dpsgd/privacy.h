/* dpsgd/privacy.h: the mechanism's randomness: Gaussian noise and Poisson sampling.
 *
 * Units: q is a probability (the per-example sample rate, in [0, 1]); sigma is the noise
 * multiplier (noise standard deviation divided by the clipping norm C, so the noise added
 * to a summed gradient has standard deviation sigma * C).
 *
 * What the noise and the sampling cost in privacy (the accountant of (q, sigma, steps), RDP,
 * PRV, PLD and GDP, sigma calibration) is in dpsgd/accounting.h.
 *
 * Every fallible call returns a dp_status; on failure dp_last_error() names the offending
 * parameter. Out-parameters are written only on success. Nothing here prints or exits.
 */
#ifndef DPSGD_PRIVACY_H
#define DPSGD_PRIVACY_H
#include "dpsgd/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- noise ------------------------------------------------------------------------- */

/* g[i] += std * N(0,1) for i < n, in parallel (OpenMP). One 64-bit key is drawn from rng
 * per call; the coordinates are cut into fixed blocks with their own streams derived from
 * it, so the noise depends on rng's state and n only (not on the thread count). Normals are
 * drawn exactly (ziggurat with an exact tail) in double precision, the sum g[i] + std*z is
 * formed in double and rounded once to float. g: [n] floats, borrowed, updated in place
 * (may be NULL when n == 0). std: the noise standard deviation in gradient units (sigma * C),
 * finite and >= 0; std == 0 leaves g and rng untouched. A negative or non-finite std is a
 * programming error (aborts). For noise hardened against floating-point attacks see
 * dp_secure_noise_gaussian (secure.h). */
void dp_noise_gaussian(float *g, size_t n, double std, dp_rng *rng);
/* The same, on the coordinates with mask[i] != 0 only (the others are neither changed nor
 * drawn for): frozen parameters cost nothing. mask: [n], borrowed. */
void dp_noise_gaussian_masked(float *g, size_t n, const unsigned char *mask, double std, dp_rng *rng);
/* One pass for a step's "noise, then average": g[i] = (g[i] + std * z_i) * scale where
 * mask[i], else 0; z_i and the rng's advance are those of dp_noise_gaussian_masked (std may
 * be 0: then only the scaling and masking). */
void dp_noise_gaussian_scaled(float *g, size_t n, const unsigned char *mask, double std, double scale, dp_rng *rng);

/* ---- Poisson sampling -------------------------------------------------------------- */

/* Poisson sampling: each of the n examples joins the batch independently with probability
 * q in [0, 1]. idx: caller-owned, room for n entries (may be NULL when n == 0); receives
 * the chosen indices in strictly increasing order; *count receives how many (may be 0).
 * For q < 1/4 the gaps between chosen indices are drawn as geometric variables
 * (one uniform per chosen example, so cost ~ q n); otherwise one uniform per example.
 * Either way each example is an independent Bernoulli(q). q == 0 and q == 1 draw nothing
 * from rng. Invalid q (NaN or outside [0, 1]) -> DP_ERR_RANGE naming "sample rate". */
dp_status dp_poisson_sample(dp_rng *rng, size_t n, double q, size_t *idx, size_t *count);

#ifdef __cplusplus
}
#endif
#endif
