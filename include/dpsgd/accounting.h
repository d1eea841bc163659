/* dpsgd/accounting.h: four accountants for the Poisson-subsampled Gaussian mechanism,
 * composed over a (q, sigma, steps) history, and sigma calibration with any of them.
 *
 *   RDP  Renyi DP (dpsgd/privacy.h; Opacus' orders and conversion). A guarantee.
 *   PRV  privacy random variables (Gopi, Lee, Wutschitz 2021), as Opacus' PRVAccountant:
 *        the PRV of each step is truncated to [-L, L], discretised on a mesh with a mean
 *        correction, composed by FFT (FFTW), and read off with explicit error bounds:
 *        lower <= true epsilon <= upper (eps_error 0.01, delta_error delta/1000 by
 *        default, as Opacus). `epsilon` is the upper bound (Opacus returns it too).
 *   PLD  privacy loss distribution with pessimistic discretisation (as Google's
 *        dp_accounting): every privacy loss is rounded UP to the grid, the mass beyond the
 *        grid counts as the infinite-loss mass and is added to delta, with a bound on the
 *        composed mass past the grid (too coarse a grid falls back on RDP): an upper bound.
 *        Rounding DOWN instead gives a lower bound from the same composition (it is the
 *        same distribution shifted by one bin per step): so PLD also reports lower/upper.
 *   GDP  central-limit approximation (Bu, Dong, Long, Su 2019), as Opacus'
 *        GaussianAccountant with Poisson sampling. NOT a guarantee: it can underestimate
 *        (the report says approximate = 1), so it never calibrates sigma (refused) and is
 *        never a run's epsilon; quote it beside a bound (PRV) if at all.
 *
 * Neighbouring relation: add/remove one example, the "remove" direction
 * P = (1-q) N(0, s^2) + q N(1, s^2) against Q = N(0, s^2) (unit sensitivity, s = sigma),
 * as Opacus' RDP and PRV accountants.
 *
 * State and checkpoints: every accountant works from the history of a dp_accountant
 * (dpsgd/privacy.h): entries (q, sigma, steps), so sigma and q may change during training
 * (heterogeneous histories work with every kind). Saving a checkpoint = saving that
 * history (dp_accountant_history_len / dp_accountant_history_get); restoring = replaying
 * it through dp_accountant_step. Nothing else is kept between calls.
 *
 * Cost: PRV and PLD rebuild and compose the distributions on every call (tens of ms to
 * about a second for 1e5 steps); call them when epsilon is reported, not every step.
 * FFTW plans are made with FFTW_ESTIMATE under a process-wide lock; the calls here are
 * thread-safe with respect to each other.
 *
 * Errors (DP_ERR_RANGE; the message names the parameter): delta outside (0, 1), epsilon
 * negative or NaN, sample rate outside (0, 1], noise multiplier <= 0, steps < 1, target
 * epsilon unreachable. DP_ERR_NOMEM when a grid cannot be allocated. Out-parameters are
 * written only on success. Nothing here prints or exits.
 */
#ifndef DPSGD_ACCOUNTING_H
#define DPSGD_ACCOUNTING_H
#include "dpsgd/core.h"
#include "dpsgd/privacy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DP_ACCT_RDP, DP_ACCT_PRV, DP_ACCT_PLD, DP_ACCT_GDP, DP_ACCT_COUNT } dp_accountant_kind;

/* "rdp", "prv", "pld", "gdp"; NULL for a value outside the enum. */
const char *dp_accountant_kind_name(dp_accountant_kind k);
/* Parses one of the names above (case-sensitive). DP_ERR_INVALID naming "accountant"
 * otherwise (*out untouched). */
dp_status dp_accountant_kind_parse(const char *s, dp_accountant_kind *out);

/* Accuracy settings of PRV and PLD. */
typedef struct {
    double eps_error;   /* PRV: epsilon error bound eps_error [0.01, as Opacus];
                           PLD: the grid is chosen so upper - lower ~ eps_error where
                           the point budget allows */
    double delta_error; /* PRV: delta error; 0 = delta / 1000 (Opacus) */
    size_t max_points;  /* largest grid (points); beyond it the mesh is coarsened and the
                           reported error bounds widen accordingly [1 << 22] */
} dp_accounting_params;

dp_accounting_params dp_accounting_default_params(void);

/* epsilon: the value to quote (RDP: its bound; PRV: upper; PLD: upper; GDP: the
 *          approximation). estimate: the best point estimate. lower, upper: bounds
 *          on the true epsilon where the method has them (RDP: lower = NaN, upper =
 *          epsilon; GDP: both NaN). approximate: 1 for GDP (can underestimate).
 * eps_error: the half-width of the error allowance actually used (PRV: eps_error, widened
 *          if max_points forced a coarser mesh; PLD: the grid interval times the number
 *          of steps; 0 otherwise). */
typedef struct {
    double epsilon, estimate, lower, upper, eps_error;
    int approximate;
} dp_epsilon_report;

/* Epsilon at delta of everything recorded in a (an empty history gives all zeros).
 * params may be NULL (defaults). */
dp_status dp_accountant_epsilon_kind(const dp_accountant *a, dp_accountant_kind k, double delta,
                                     dp_epsilon_report *out);
dp_status dp_accountant_epsilon_ex(const dp_accountant *a, dp_accountant_kind k, double delta,
                                   const dp_accounting_params *params, dp_epsilon_report *out);

/* Delta at epsilon (>= 0) of everything recorded in a: a guaranteed upper bound for RDP,
 * PRV (discrete delta at epsilon - eps_error, plus delta_error = 1e-10 by default or
 * params->delta_error) and PLD (pessimistic grid); the approximation for GDP. */
dp_status dp_accountant_delta_kind(const dp_accountant *a, dp_accountant_kind k, double epsilon,
                                   double *delta);
dp_status dp_accountant_delta_ex(const dp_accountant *a, dp_accountant_kind k, double epsilon,
                                 const dp_accounting_params *params, double *delta);

/* One-shot: `steps` steps at (q, sigma). q in (0, 1], sigma > 0, steps >= 1. */
dp_status dp_epsilon_kind(dp_accountant_kind k, double q, double sigma, long steps, double delta,
                          dp_epsilon_report *out);

/* Smallest sigma (bisection as Opacus get_noise_multiplier, as dp_calibrate_sigma) with
 *     target_eps - eps_tol <= report.epsilon(q, sigma, steps, delta) <= target_eps
 * for accountant k. eps_tol == 0 selects DP_CALIBRATE_EPS_TOL_DEFAULT (0.01).
 * DP_ACCT_RDP is exactly dp_calibrate_sigma. DP_ACCT_GDP is refused (DP_ERR_INVALID naming
 * "gdp"): an approximation that can underestimate epsilon cannot choose the noise.
 * A target no sigma in the search's range reaches is refused at once (DP_ERR_RANGE, "target
 * epsilon ... is unreachable", naming the epsilons at both ends of the range): below epsilon at
 * sigma 1e6, or (PRV, PLD) above epsilon at the least noise whose privacy loss their grid holds
 * (about 1500 for the default run; RDP has no such end), or any target when delta is at least
 * 1 - (1 - q)^steps (epsilon is then 0 whatever the noise). */
dp_status dp_calibrate_sigma_kind(dp_accountant_kind k, double target_eps, double delta, double q,
                                  long steps, double eps_tol, double *sigma);

/* Whether dp_calibrate_sigma_kind would reach target_eps: DP_OK, or its refusal (same status and
 * message), without the search: a few RDP evaluations and about one of k (RDP: the calibration
 * itself, milliseconds). For a tool that must tell a bad request from a failed run before it
 * starts the run that calibrates. */
dp_status dp_calibrate_sigma_check(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                                   double eps_tol);

/* The privacy profile at n epsilons (each >= 0, in any order): delta[i] is what
 * dp_accountant_delta_ex(a, k, eps[i], params) gives (RDP and GDP: the same call; PRV and PLD:
 * the same formula, up to rounding of ~1e-18, far inside delta_error), a guaranteed upper bound
 * for RDP, PRV and PLD; but PRV and PLD compose the history once and read every epsilon off in
 * one sweep of the grid (the audit's claimed profile: 400 epsilons in 0.03 s instead of 0.4 s). */
dp_status dp_accountant_delta_many(const dp_accountant *a, dp_accountant_kind k, const double *eps, size_t n,
                                   const dp_accounting_params *params, double *delta);

#ifdef __cplusplus
}
#endif
#endif
