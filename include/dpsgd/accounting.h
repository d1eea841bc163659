/* dpsgd/accounting.h: the privacy accountant of DP-SGD: the (q, sigma, steps) history of a run,
 * four ways of reading epsilon (or delta) off it, and sigma calibration with any of them. All
 * for the Poisson-subsampled Gaussian mechanism.
 *
 *   RDP  Renyi DP, as Opacus 1.5.4's RDPAccountant: the same 151 orders (1.1, 1.2, ..., 10.9,
 *        then 12, 13, ..., 63), the same RDP of the subsampled Gaussian (integer orders by the
 *        binomial sum, fractional orders by the two-sided series of Mironov et al. 2019, both in
 *        log space) and the same RDP -> (epsilon, delta) conversion (Balle et al. 2020, Theorem
 *        21), minimised over the orders. A guarantee.
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
 * Units: q is a probability (the per-example sample rate, in [0, 1]); sigma is the noise
 * multiplier (noise standard deviation divided by the clipping norm C); delta is a probability
 * in (0, 1); epsilon is in nats; steps counts optimizer steps.
 *
 * Neighbouring relation: add/remove one example, the "remove" direction
 * P = (1-q) N(0, s^2) + q N(1, s^2) against Q = N(0, s^2) (unit sensitivity, s = sigma),
 * as Opacus' RDP and PRV accountants.
 *
 * State and checkpoints: every accountant works from the history of a dp_accountant:
 * entries (q, sigma, steps), so sigma and q may change during training (heterogeneous
 * histories work with every kind). Saving a checkpoint = saving that history
 * (dp_accountant_history_len / dp_accountant_history_get); restoring = replaying it through
 * dp_accountant_step. Nothing else is kept between calls.
 *
 * Cost: PRV and PLD rebuild and compose the distributions on every call (tens of ms to
 * about a second for 1e5 steps); call them when epsilon is reported, not every step.
 * FFTW plans are made with FFTW_ESTIMATE under a process-wide lock; the calls here are
 * thread-safe with respect to each other.
 *
 * Errors (DP_ERR_RANGE; the message names the parameter): delta outside (0, 1), epsilon
 * negative or NaN, sample rate outside [0, 1] ((0, 1] to calibrate), noise multiplier <= 0,
 * steps < 0 (< 1 to calibrate), target epsilon unreachable. DP_ERR_NOMEM when a grid cannot
 * be allocated. Out-parameters are written only on success. Nothing here prints or exits.
 */
#ifndef DPSGD_ACCOUNTING_H
#define DPSGD_ACCOUNTING_H
#include "dpsgd/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the kinds -------------------------------------------------------------------------- */

/* One row per accountant: X(enum, name, bound). name is the kind's name as an identifier: its
 * spelling is the name in messages, options and reports, and src/acct_<name>.c (or the file
 * that says so) defines its two entry points, dp__acct_<name>_epsilon and dp__acct_<name>_delta
 * (src/privacy/acct.h). bound: 1 when its epsilon is a guarantee (an upper bound on the true epsilon),
 * so it may calibrate sigma and be a run's epsilon; 0 for an approximation, which does neither.
 * Every list of kinds the library prints is made from this list. */
#define DP_ACCOUNTANT_LIST(X)                                                                 \
    X(DP_ACCT_RDP, rdp, 1) /* Renyi DP, as Opacus */                                          \
    X(DP_ACCT_PRV, prv, 1) /* privacy random variables, FFT, as Opacus */                     \
    X(DP_ACCT_PLD, pld, 1) /* privacy loss distribution, pessimistic grid */                  \
    X(DP_ACCT_GDP, gdp, 0) /* central-limit approximation: NOT a bound */

typedef enum {
#define DP__ENUM(kind, name, bound) kind,
    DP_ACCOUNTANT_LIST(DP__ENUM)
#undef DP__ENUM
        DP_ACCT_COUNT
} dp_accountant_kind;

/* "rdp", "prv", "pld", "gdp"; NULL for a value outside the enum. */
const char *dp_accountant_kind_name(dp_accountant_kind k);
/* Parses one of the names above (case-sensitive). DP_ERR_INVALID otherwise, with a message
 * naming "accountant" and listing every kind (*out untouched). */
dp_status dp_accountant_kind_parse(const char *s, dp_accountant_kind *out);
/* 1 when k's epsilon is a guarantee (may calibrate sigma, may be a run's epsilon); 0 for an
 * approximation (GDP) or a value outside the enum. */
int dp_accountant_kind_is_bound(dp_accountant_kind k);
/* The names for messages, made from DP_ACCOUNTANT_LIST: "rdp, prv, pld, gdp" (bounds_only 0)
 * or only the guarantees, "rdp, prv, pld" (bounds_only 1). Static strings. */
const char *dp_accountant_kind_names(int bounds_only);

/* ---- the history ------------------------------------------------------------------------- */

/* Number of RDP orders used: 1.1, 1.2, ..., 10.9 (99 orders, step 0.1) then the integers
 * 12..63 (52 orders), as Opacus RDPAccountant.DEFAULT_ALPHAS. */
#define DP_RDP_NUM_ORDERS 151

/* The accountant: the history of (q, sigma, steps) entries of a run; heterogeneous steps
 * (different q and sigma over training) compose. Opaque; its history lives in tracked memory
 * (dp_alloc) owned by the accountant. */
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
 * up to ~0.1 s near q = 1/2 with very large sigma), so RDP's epsilon costs the same
 * however long the history. Errors: DP_ERR_RANGE naming "sample rate", "noise multiplier"
 * or "steps" (steps < 0, or the total would overflow a long); DP_ERR_NOMEM (accountant
 * unchanged). */
dp_status dp_accountant_step(dp_accountant *a, double q, double sigma, long steps);
/* Total number of steps recorded (sum over the history). */
long dp_accountant_total_steps(const dp_accountant *a);
/* History access for checkpoints: number of entries, and entry i < len (q, sigma, steps;
 * any out-pointer may be NULL). Replaying the entries through dp_accountant_step in order
 * rebuilds an identical accountant. i out of range is a programming error (aborts). */
size_t dp_accountant_history_len(const dp_accountant *a);
void dp_accountant_history_get(const dp_accountant *a, size_t i, double *q, double *sigma,
                               long *steps);

/* ---- epsilon and delta ------------------------------------------------------------------- */

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
 *          of steps; 0 otherwise).
 * order:   RDP: the order alpha that attains epsilon (0 for an empty history, as Opacus; NaN
 *          if every order is unusable, epsilon then +inf); NaN for the other kinds. */
typedef struct {
    double epsilon, estimate, lower, upper, eps_error;
    int approximate;
    double order;
} dp_epsilon_report;

/* THE epsilon of a history: epsilon at delta (in (0, 1)) of everything recorded in a, by
 * accountant k. params may be NULL (defaults). A history with nothing at risk (empty, or only
 * entries with q = 0) gives epsilon 0 (all fields 0 but those the kind lacks: NaN). */
dp_status dp_accountant_epsilon(const dp_accountant *a, dp_accountant_kind k, double delta,
                                const dp_accounting_params *params, dp_epsilon_report *out);

/* THE delta of a history: delta at epsilon (>= 0) of everything recorded in a: a guaranteed
 * upper bound for RDP, PRV (discrete delta at epsilon - eps_error, plus delta_error = 1e-10 by
 * default or params->delta_error) and PLD (pessimistic grid); the approximation for GDP.
 * params may be NULL (defaults). */
dp_status dp_accountant_delta(const dp_accountant *a, dp_accountant_kind k, double epsilon,
                              const dp_accounting_params *params, double *delta);

/* The privacy profile at n epsilons (each >= 0, in any order): delta[i] is what
 * dp_accountant_delta(a, k, eps[i], params) gives (RDP and GDP: the same call; PRV and PLD:
 * the same formula, up to rounding of ~1e-18, far inside delta_error), a guaranteed upper bound
 * for RDP, PRV and PLD; but PRV and PLD compose the history once and read every epsilon off in
 * one sweep of the grid (the audit's claimed profile: 400 epsilons in 0.03 s instead of 0.4 s). */
dp_status dp_accountant_delta_many(const dp_accountant *a, dp_accountant_kind k, const double *eps, size_t n,
                                   const dp_accounting_params *params, double *delta);

/* ---- calibration ------------------------------------------------------------------------- */

/* Default epsilon tolerance of dp_calibrate_sigma_kind (Opacus epsilon_tolerance). */
#define DP_CALIBRATE_EPS_TOL_DEFAULT 0.01

/* Smallest sigma with
 *     target_eps - eps_tol <= report.epsilon(q, sigma, steps, delta) <= target_eps
 * for accountant k. eps_tol == 0 selects DP_CALIBRATE_EPS_TOL_DEFAULT (0.01).
 * DP_ACCT_RDP searches as Opacus get_noise_multiplier does: sigma_high doubles (20, 40, ...)
 * until epsilon(sigma_high) <= target_eps, then bisection on [0, sigma_high] until
 * target_eps - epsilon(sigma_high) <= eps_tol; sigma = sigma_high (the answer is then checked
 * against the tolerance). PRV and PLD start from GDP's answer and narrow a bracket by regula
 * falsi. A kind that is not a bound (GDP) is refused (DP_ERR_INVALID naming it and the kinds
 * that are): an approximation that can underestimate epsilon cannot choose the noise.
 * A target no sigma in the search's range reaches is refused at once (DP_ERR_RANGE, "target
 * epsilon ... is unreachable", naming the epsilons at both ends of the range): below epsilon at
 * sigma 1e6, or (PRV, PLD) above epsilon at the least noise whose privacy loss their grid holds
 * (about 1500 for the default run; RDP has no such end), or any target when delta is at least
 * 1 - (1 - q)^steps (epsilon is then 0 whatever the noise). */
dp_status dp_calibrate_sigma_kind(dp_accountant_kind k, double target_eps, double delta, double q,
                                  long steps, double eps_tol, double *sigma);

/* As dp_calibrate_sigma_kind for a history that starts with one Gaussian mechanism of noise
 * multiplier prior_sigma on the whole data (sample rate 1, one step: a statistic released before
 * training, as dp_precond_fit's): the smallest sigma (to the tolerance) with
 *     target_eps - eps_tol <= epsilon({(1, prior_sigma, 1), (q, sigma, steps)}) <= target_eps.
 * Refused (DP_ERR_RANGE, naming its epsilon) when the prior release alone spends the target. */
dp_status dp_calibrate_sigma_prior(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                                   double prior_sigma, double eps_tol, double *sigma);

/* Whether dp_calibrate_sigma_kind would reach target_eps: DP_OK, or its refusal (same status and
 * message), without the search: a few RDP evaluations and about one of k (RDP: the calibration
 * itself, milliseconds). For a tool that must tell a bad request from a failed run before it
 * starts the run that calibrates. */
dp_status dp_calibrate_sigma_check(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                                   double eps_tol);

#ifdef __cplusplus
}
#endif
#endif
