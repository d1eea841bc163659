/* acct.h (internal): what the accountant's files share (include/dpsgd/accounting.h is the
 * public side).
 *
 *   src/privacy/accountant.c     the kinds (names, parse), the history, the one epsilon call and the
 *                        one delta call (dispatch to the kinds), the privacy profile
 *   src/privacy/acct_rdp.c       RDP: the running sum of the history, epsilon, delta, Opacus' search
 *   src/privacy/acct_prv.c       PRV and PLD: the grid, FFT composition, epsilon, delta, profile
 *   src/privacy/acct_gdp.c       GDP: the central-limit approximation
 *   src/privacy/acct_calibrate.c sigma calibration with any kind that is a bound
 *
 * Each kind of DP_ACCOUNTANT_LIST(X) defines dp__acct_<name>_epsilon and dp__acct_<name>_delta
 * (declared below from the list); src/privacy/accountant.c builds its table from the same list.
 * This code must be compiled without -ffast-math (the log-space sums rely on IEEE inf). */
#ifndef DP_ACCT_H
#define DP_ACCT_H
#include <stddef.h>

#include "dpsgd/accounting.h"

#ifndef DP_HIDDEN
#define DP_HIDDEN __attribute__((visibility("hidden")))
#endif

/* one history entry */
typedef struct {
    double q, sigma;
    long steps;
} acct_entry;

struct dp_accountant {
    acct_entry *hist; /* [cap], dp_alloc'ed */
    size_t len, cap;
    long total;
    /* RDP summed over hist[0 .. len-2], in history order (as Opacus sums): only the last
     * entry can still grow, so epsilon costs one entry's RDP however long the history */
    double closed_rdp[DP_RDP_NUM_ORDERS];
};

/* What a kind reads: the accountant (RDP reads its running sum), and its entries that lose
 * privacy (q > 0 and steps > 0; e is NULL when n == 0), with their total steps. */
typedef struct {
    const dp_accountant *a;
    const acct_entry *e;
    size_t n;
    long total;
} acct_history;

/* A kind's two entry points, called with the arguments checked (delta in (0, 1), epsilons
 * >= 0 and not NaN, prm filled in: for epsilon, delta_error defaulted to delta / 1000; for
 * delta, to 1e-10).
 *   epsilon: *r filled; any history, h->n == 0 included (nothing at risk: epsilon 0). The
 *            report's fields the kind lacks are NaN, and order is NaN but for RDP.
 *   delta:   delta[i] at eps[i], i < n_eps (+inf gives 0), for a history with h->n > 0.
 *            sweep 0: each as the one delta call gives it; sweep 1: a privacy profile (PRV,
 *            PLD: one composition read off in one sweep, equal up to ~1e-18; the others
 *            ignore it). */
#define DP__ACCT_DECLARE(kind, name, bound)                                                                            \
    DP_HIDDEN dp_status dp__acct_##name##_epsilon(const acct_history *h, double delta,                                 \
                                                  const dp_accounting_params *prm, dp_epsilon_report *r);              \
    DP_HIDDEN dp_status dp__acct_##name##_delta(const acct_history *h, const double *eps, size_t n_eps, int sweep,     \
                                                const dp_accounting_params *prm, double *delta);
DP_ACCOUNTANT_LIST(DP__ACCT_DECLARE)
#undef DP__ACCT_DECLARE

/* ---- RDP, for the others (src/privacy/acct_rdp.c) ---- */

/* rdp[k] += steps * RDP_alpha_k(q, sigma) over the DP_RDP_NUM_ORDERS orders */
DP_HIDDEN void dp__acct_rdp_accumulate(double *rdp, double q, double sigma, long steps);
/* RDP epsilon (Opacus, every entry of the history, q = 0 ones included) and its order:
 * an empty history gives 0 and order 0. DP_ERR_RANGE naming "delta" outside (0, 1). */
DP_HIDDEN dp_status dp__acct_rdp_of(const dp_accountant *a, double delta, double *eps, double *order);
/* RDP epsilon of the entries e[0 .. n) in order (each with its steps) */
DP_HIDDEN dp_status dp__acct_rdp_of_entries(const acct_entry *e, size_t n, double delta, double *eps);
/* Opacus get_noise_multiplier (arguments checked: target_eps finite and > 0, delta in (0, 1),
 * q in (0, 1], steps >= 1, eps_tol > 0): DP_ERR_RANGE when it needs sigma above 1e6. */
DP_HIDDEN dp_status dp__acct_rdp_calibrate(double target_eps, double delta, double q, long steps, double eps_tol,
                                           double *sigma);

/* ---- the grid of PRV and PLD, for calibration (src/privacy/acct_prv.c) ---- */

/* The largest privacy loss domain a grid is built for: PRV and PLD refuse (DP_ERR_RANGE) a
 * history whose domain exceeds it, i.e. too little noise */
#define DP__ACCT_MAX_LOSS_DOMAIN 5000.0
/* The safe domain size L of the grid (Opacus compute_safe_domain_size), from RDP alone */
DP_HIDDEN dp_status dp__acct_loss_domain(const acct_entry *e, size_t ne, long total, double delta_error,
                                         double eps_error, double *out);

/* ---- history helpers (src/privacy/accountant.c) ---- */

/* The entries that lose privacy, copied (h->e dp_alloc'ed; free with dp__acct_history_free) */
DP_HIDDEN dp_status dp__acct_history_load(const dp_accountant *a, acct_history *h);
DP_HIDDEN void dp__acct_history_free(acct_history *h);

#endif
