/* dpsgd/privacy.h: Gaussian noise, Poisson sampling, the RDP accountant, sigma calibration.
 *
 * Units: q is a probability (the per-example sample rate, in [0, 1]); sigma is the noise
 * multiplier (noise standard deviation divided by the clipping norm C, so the noise added
 * to a summed gradient has standard deviation sigma * C); delta is a probability in (0, 1);
 * epsilon is in nats (the usual (epsilon, delta)-DP epsilon); steps counts optimizer steps.
 *
 * The accountant reproduces Opacus 1.5.4's RDP accountant: the same 150 orders
 * (1.1, 1.2, ..., 10.9, then 12, 13, ..., 63), the same RDP of the Poisson-subsampled
 * Gaussian (integer orders by the binomial sum, fractional orders by the two-sided series
 * of Mironov et al. 2019, both in log space), and the same RDP -> (epsilon, delta)
 * conversion (Balle et al. 2020, Theorem 21), minimised over the orders.
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

/* ---- RDP accountant ---------------------------------------------------------------- */

/* Number of RDP orders used: 1.1, 1.2, ..., 10.9 (99 orders, step 0.1) then the integers
 * 12..63 (52 orders), as Opacus RDPAccountant.DEFAULT_ALPHAS. */
#define DP_RDP_NUM_ORDERS 151

/* RDP accountant for the Poisson-subsampled Gaussian mechanism; heterogeneous steps
 * (different q and sigma over training) are composed by adding their RDP curves.
 * Opaque; its history lives in tracked memory (dp_alloc) owned by the accountant. */
typedef struct dp_accountant dp_accountant;

/* New, empty accountant in *out (caller owns it; release with dp_accountant_destroy).
 * DP_ERR_NOMEM if allocation fails (out untouched). */
dp_status dp_accountant_create(dp_accountant **out);
/* Frees the accountant and its history. NULL is a no-op. */
void dp_accountant_destroy(dp_accountant *a);
/* Records `steps` steps at sample rate q (in [0, 1]) with noise multiplier sigma (> 0,
 * finite). If the last history entry has exactly the same q and sigma, its step count is
 * increased instead of adding an entry (as Opacus RDPAccountant.step). steps == 0 is a
 * no-op. When a new entry starts, the RDP of the previous one is folded into a running
 * sum (151 orders: typically well under a millisecond,
 * up to ~0.1 s near q = 1/2 with very large sigma), so dp_accountant_epsilon costs the same
 * however long the history. Errors: DP_ERR_RANGE naming "sample rate", "noise multiplier"
 * or "steps" (steps < 0, or the total would overflow a long); DP_ERR_NOMEM (accountant
 * unchanged). */
dp_status dp_accountant_step(dp_accountant *a, double q, double sigma, long steps);
/* Total number of steps recorded (sum over the history). */
long dp_accountant_total_steps(const dp_accountant *a);
/* Epsilon of everything recorded so far at the given delta in (0, 1), and the RDP order
 * that attains it (*best_alpha; may be NULL if not wanted). An empty history gives
 * eps = 0 and best_alpha = 0 (as Opacus). If every order is unusable (NaN) eps = +inf and
 * best_alpha = NaN. Errors: DP_ERR_RANGE naming "delta". */
dp_status dp_accountant_epsilon(const dp_accountant *a, double delta, double *eps,
                                double *best_alpha);
/* History access for checkpoints: number of entries, and entry i < len (q, sigma, steps;
 * any out-pointer may be NULL). Replaying the entries through dp_accountant_step in order
 * rebuilds an identical accountant. i out of range is a programming error (aborts). */
size_t dp_accountant_history_len(const dp_accountant *a);
void dp_accountant_history_get(const dp_accountant *a, size_t i, double *q, double *sigma,
                               long *steps);

/* One-shot: epsilon (and best order, may be NULL) of `steps` steps at (q, sigma), delta.
 * Same validation and results as an accountant holding the single entry (q, sigma, steps). */
dp_status dp_rdp_epsilon(double q, double sigma, long steps, double delta, double *eps,
                         double *best_alpha);

/* ---- calibration ------------------------------------------------------------------- */

/* Default epsilon tolerance of dp_calibrate_sigma (Opacus epsilon_tolerance). */
#define DP_CALIBRATE_EPS_TOL_DEFAULT 0.01

/* Noise multiplier for a budget, found as Opacus get_noise_multiplier does: sigma_high
 * doubles (20, 40, ...) until epsilon(q, sigma_high, steps, delta) <= target_eps, then
 * bisection on [sigma_low = 0, sigma_high] until target_eps - eps(sigma_high) <= eps_tol;
 * *sigma = sigma_high. So the result always satisfies
 *     target_eps - eps_tol <= epsilon(q, *sigma, steps, delta) <= target_eps,
 * and is within the bisection bracket of the smallest such sigma. eps_tol == 0 selects
 * DP_CALIBRATE_EPS_TOL_DEFAULT (0.01).
 * Errors (DP_ERR_RANGE, the message names the parameter): "target epsilon" not finite and
 * > 0; "delta" outside (0, 1); "sample rate" outside (0, 1]; "steps" < 1; "epsilon
 * tolerance" negative, NaN or infinite (q == 0 or steps == 0 are rejected because epsilon
 * then does not depend on sigma); "target epsilon ... unreachable" when sigma > 1e6 is
 * needed (Opacus: "The privacy budget is too low"). */
dp_status dp_calibrate_sigma(double target_eps, double delta, double q, long steps,
                             double eps_tol, double *sigma);

#ifdef __cplusplus
}
#endif
#endif
