/* acct_calibrate.c: the noise multiplier for a target epsilon with any accountant that is a bound
 * (include/dpsgd/accounting.h, dp_calibrate_sigma_kind): Opacus' search for RDP (src/privacy/acct_rdp.c),
 * regula falsi from GDP's answer for PRV and PLD, both fenced by the range any sigma reaches. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>

#include "privacy/acct.h"

static dp_status check_qss(double q, double sigma, long steps) {
    if (!(q > 0.0 && q <= 1.0)) return dp_fail(DP_ERR_RANGE, "sample rate %g is outside (0, 1]", q);
    if (!(sigma > 0.0) || !isfinite(sigma))
        return dp_fail(DP_ERR_RANGE, "noise multiplier %g must be finite and > 0", sigma);
    if (steps < 1) return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 1", steps);
    return DP_OK;
}

/* epsilon of `steps` steps at (q, sigma) by k (q in (0, 1], sigma > 0, steps >= 1): the report of
 * a one-entry history */
static dp_status epsilon_one(dp_accountant_kind k, double q, double sigma, long steps, double delta,
                             dp_epsilon_report *out) {
    dp_status st;
    if ((st = check_qss(q, sigma, steps))) return st;
    dp_accountant *a = NULL;
    if ((st = dp_accountant_create(&a))) return st;
    st = dp_accountant_step(a, q, sigma, steps);
    if (!st) st = dp_accountant_epsilon(a, k, delta, NULL, out);
    dp_accountant_destroy(a);
    return st;
}

enum { CALIB_MAX_BISECT = 200 };
#define CALIB_MAX_SIGMA 1e6

/* epsilon at sigma; a sigma too small for the grid (huge privacy loss) is simply not private
 * enough: +inf */
static dp_status calib_eval(dp_accountant_kind k, double q, double sigma, long steps, double delta, double *eps) {
    dp_epsilon_report r;
    dp_status st = epsilon_one(k, q, sigma, steps, delta, &r);
    if (st == DP_ERR_RANGE) {
        dp_clear_error();
        *eps = INFINITY;
        return DP_OK;
    }
    if (st == DP_OK) *eps = r.epsilon;
    return st;
}

static dp_status calibrate(dp_accountant_kind k, double target_eps, double delta, double q, long steps, double eps_tol,
                           double *sigma);

/* Where the search for sigma looks, [sigma_min, CALIB_MAX_SIGMA], and the epsilons at its ends.
 * A target outside them used to cost minutes of evaluations before "no convergence" (or, worse,
 * a sigma far from the target): it is refused at once instead, with the range. */
typedef struct {
    double sigma_min;  /* PRV, PLD: the least noise whose privacy loss their grid holds; RDP: 0 */
    double eps_at_max; /* epsilon at CALIB_MAX_SIGMA: the least a target can be */
    double eps_at_min; /* epsilon at sigma_min (the most); NAN where not computed */
} calib_range;

/* PRV and PLD evaluate only where compose's domain fits, L <= MAX_LOSS_DOMAIN (L shrinks as sigma
 * grows): the smallest such sigma, by bisection on log sigma with RDP alone (milliseconds). */
static dp_status calib_sigma_min(double q, long steps, double delta, double *out) {
    const dp_accounting_params prm = dp_accounting_default_params();
    acct_entry e = {q, 0.0, steps};
    double lo = 1e-4, hi = CALIB_MAX_SIGMA, L;
    dp_status st;
    e.sigma = lo;
    if ((st = dp__acct_loss_domain(&e, 1, steps, delta / 1000.0, prm.eps_error, &L))) return st;
    if (L <= DP__ACCT_MAX_LOSS_DOMAIN) { /* no such q and delta in practice; the search then stops at lo */
        *out = lo;
        return DP_OK;
    }
    for (int it = 0; it < 26; it++) { /* lo does not fit, hi does; to a relative 4e-7 */
        e.sigma = sqrt(lo * hi);
        if ((st = dp__acct_loss_domain(&e, 1, steps, delta / 1000.0, prm.eps_error, &L))) return st;
        if (L <= DP__ACCT_MAX_LOSS_DOMAIN)
            hi = e.sigma;
        else
            lo = e.sigma;
    }
    *out = hi;
    return DP_OK;
}

/* DP_ERR_RANGE for a target outside cr (eps_at_min known for PRV and PLD), naming both ends */
static dp_status unreachable(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                             const calib_range *cr) {
    char range[128];
    if (k == DP_ACCT_RDP || isnan(cr->eps_at_min))
        snprintf(range, sizeof range, "a target of at least %.4g can be reached", cr->eps_at_max);
    else
        snprintf(range, sizeof range, "a target from %.4g to %.4g can be reached", cr->eps_at_max, cr->eps_at_min);
    if (target_eps < cr->eps_at_max)
        return dp_fail(DP_ERR_RANGE,
                       "target epsilon %g is unreachable with the %s accountant: at sample rate %g, %ld steps and "
                       "delta %g, epsilon is at least %.4g even at noise multiplier %g, the most noise the search "
                       "tries%s; %s",
                       target_eps, dp_accountant_kind_name(k), q, steps, delta, cr->eps_at_max, CALIB_MAX_SIGMA,
                       k == DP_ACCT_PRV ? " (prv's upper bound includes its error of 0.01)" : "", range);
    return dp_fail(DP_ERR_RANGE,
                   "target epsilon %g is unreachable with the %s accountant: at sample rate %g, %ld steps and delta "
                   "%g, epsilon is at most %.4g even at noise multiplier %.4g, the least noise the %s accountant can "
                   "evaluate%s; %s",
                   target_eps, dp_accountant_kind_name(k), q, steps, delta, cr->eps_at_min, cr->sigma_min,
                   dp_accountant_kind_name(k), k == DP_ACCT_RDP ? "" : " (its privacy loss outgrows the grid below it)",
                   range);
}

/* The reachable range for k (RDP, PRV or PLD; arguments checked): DP_OK when the target lies in it,
 * else the refusal. Costs about one evaluation of k where the target is reachable, two where not. */
static dp_status calib_reach(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                             double eps_tol, calib_range *cr) {
    dp_status st;
    cr->sigma_min = 0.0;
    cr->eps_at_min = NAN;
    /* Two runs differ only where the example is sampled, which happens with probability
     * 1 - (1-q)^T: that bounds the total variation distance, i.e. delta at epsilon 0, whatever
     * the noise. A delta that large makes epsilon 0 for every sigma: nothing to calibrate. */
    const double p_any = -expm1((double)steps * log1p(-q));
    if (delta >= p_any)
        return dp_fail(DP_ERR_RANGE,
                       "delta %g is at least 1 - (1 - q)^T = %.6g, the chance that an example is sampled at all in "
                       "%ld steps at sample rate %g: epsilon is then 0 whatever the noise (even none), so no noise "
                       "multiplier meets target epsilon %g; choose a delta far below it (below 1/n)",
                       delta, p_any, steps, q, target_eps);
    if ((st = calib_eval(k, q, CALIB_MAX_SIGMA, steps, delta, &cr->eps_at_max))) return st;
    if (k != DP_ACCT_RDP && (st = calib_sigma_min(q, steps, delta, &cr->sigma_min))) return st;
    if (target_eps < cr->eps_at_max) {
        if (k != DP_ACCT_RDP && (st = calib_eval(k, q, cr->sigma_min, steps, delta, &cr->eps_at_min))) return st;
        return unreachable(k, target_eps, delta, q, steps, cr);
    }
    if (k == DP_ACCT_RDP) return DP_OK; /* its epsilon grows without bound as the noise vanishes */
    /* The upper end. Every realistic target lies far below it (the default run: 3 against about
     * 1500), which a coarse grid shows in milliseconds: PRV's lower bound is below the true epsilon,
     * and both PRV's and PLD's upper bounds are above it. Only near the end the full grid decides. */
    dp_accounting_params coarse = dp_accounting_default_params();
    coarse.max_points = (size_t)1 << 16;
    dp_accountant *a = NULL;
    dp_epsilon_report r;
    if ((st = dp_accountant_create(&a))) return st;
    st = dp_accountant_step(a, q, cr->sigma_min, steps);
    if (!st) st = dp_accountant_epsilon(a, DP_ACCT_PRV, delta, &coarse, &r);
    dp_accountant_destroy(a);
    if (st == DP_OK && r.lower >= target_eps) return DP_OK;
    dp_clear_error();
    if ((st = calib_eval(k, q, cr->sigma_min, steps, delta, &cr->eps_at_min))) return st;
    if (cr->eps_at_min < target_eps - eps_tol) return unreachable(k, target_eps, delta, q, steps, cr);
    return DP_OK;
}

/* the checks every calibration makes first */
static dp_status calib_args(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                            double eps_tol) {
    if ((unsigned)k >= DP_ACCT_COUNT)
        return dp_fail(DP_ERR_INVALID, "accountant kind %d is not one of %s", (int)k, dp_accountant_kind_names(0));
    /* An approximation (GDP, a central limit) is not a bound: it can underestimate epsilon badly
     * (a run calibrated to 0.994 by GDP spends 2.476 by PRV), so a sigma chosen by it carries
     * no guarantee */
    if (!dp_accountant_kind_is_bound(k))
        return dp_fail(DP_ERR_INVALID,
                       "accountant %s: an approximation that can underestimate epsilon, not a bound; it cannot "
                       "calibrate the noise multiplier: use one of %s",
                       dp_accountant_kind_name(k), dp_accountant_kind_names(1));
    if (!(target_eps > 0.0) || !isfinite(target_eps))
        return dp_fail(DP_ERR_RANGE, "target epsilon %g must be finite and > 0", target_eps);
    if (!(delta > 0.0 && delta < 1.0)) return dp_fail(DP_ERR_RANGE, "delta %g is outside (0, 1)", delta);
    if (!(q > 0.0 && q <= 1.0)) return dp_fail(DP_ERR_RANGE, "sample rate %g is outside (0, 1]", q);
    if (steps < 1) return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 1", steps);
    if (!(eps_tol >= 0.0) || !isfinite(eps_tol))
        return dp_fail(DP_ERR_RANGE, "epsilon tolerance %g must be finite and >= 0", eps_tol);
    return DP_OK;
}

dp_status dp_calibrate_sigma_kind(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                                  double eps_tol, double *sigma) {
    dp_status st;
    if (dp_accountant_kind_is_bound(k) && !sigma) return dp_fail(DP_ERR_INVALID, "calibrate sigma: sigma is NULL");
    if ((st = calib_args(k, target_eps, delta, q, steps, eps_tol))) return st;
    if (eps_tol == 0.0) eps_tol = DP_CALIBRATE_EPS_TOL_DEFAULT;
    if (k != DP_ACCT_RDP) return calibrate(k, target_eps, delta, q, steps, eps_tol, sigma);
    /* RDP: Opacus' bisection (src/privacy/acct_rdp.c), fenced by the same range check, and its answer
     * checked: near sigma 0 the bisection can end far below the target */
    calib_range cr;
    double s, e;
    if ((st = calib_reach(k, target_eps, delta, q, steps, eps_tol, &cr))) return st;
    if ((st = dp__acct_rdp_calibrate(target_eps, delta, q, steps, eps_tol, &s))) return st;
    if ((st = calib_eval(k, q, s, steps, delta, &e))) return st;
    if (target_eps - e > eps_tol) {
        cr.sigma_min = s;
        cr.eps_at_min = e;
        return unreachable(k, target_eps, delta, q, steps, &cr);
    }
    *sigma = s;
    return DP_OK;
}

dp_status dp_calibrate_sigma_check(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                                   double eps_tol) {
    dp_status st;
    if ((st = calib_args(k, target_eps, delta, q, steps, eps_tol))) return st;
    if (eps_tol == 0.0) eps_tol = DP_CALIBRATE_EPS_TOL_DEFAULT;
    if (k == DP_ACCT_RDP) { /* the whole calibration costs milliseconds */
        double s;
        return dp_calibrate_sigma_kind(k, target_eps, delta, q, steps, eps_tol, &s);
    }
    calib_range cr;
    return calib_reach(k, target_eps, delta, q, steps, eps_tol, &cr);
}

/* The search for PRV or PLD (arguments checked); GDP here only gives them a starting point. */
static dp_status calibrate(dp_accountant_kind k, double target_eps, double delta, double q, long steps, double eps_tol,
                           double *sigma) {
    /* eps(sigma) is smooth and decreasing, and each evaluation of PRV or PLD costs up to a
     * second, so: start from the sigma the (instant) GDP approximation needs, bracket the
     * answer by steps of 10%, then narrow the bracket by regula falsi with the Illinois
     * modification (superlinear; a few evaluations instead of a dozen bisections). The
     * invariant is eps(hi) <= target < eps(lo); the answer hi has target - tol <= eps(hi).
     * calib_reach first makes sure the answer lies in [sigma_min, CALIB_MAX_SIGMA], the walks
     * stay in it. */
    dp_status st;
    double s0 = 1.0;
    calib_range cr = {0.0, 0.0, NAN}; /* GDP: no range (it only gives a starting point) */
    if (k != DP_ACCT_GDP) {
        if ((st = calib_reach(k, target_eps, delta, q, steps, eps_tol, &cr)) != DP_OK) return st;
        double g;
        if (calibrate(DP_ACCT_GDP, target_eps, delta, q, steps, eps_tol, &g) == DP_OK) s0 = g;
        dp_clear_error();
        s0 = fmin(fmax(s0, cr.sigma_min), CALIB_MAX_SIGMA);
    }
    double lo, hi, el, eh;
    if ((st = calib_eval(k, q, s0, steps, delta, &eh)) != DP_OK) return st;
    if (eh <= target_eps) {
        hi = s0;
        lo = s0;
        el = eh;
        while (el <= target_eps) {               /* walk down until not private enough */
            if (lo <= cr.sigma_min) {            /* the least noise it can evaluate meets the target */
                if (target_eps - el > eps_tol) { /* calib_reach said otherwise: eps is not monotone here */
                    cr.eps_at_min = el;
                    return unreachable(k, target_eps, delta, q, steps, &cr);
                }
                *sigma = lo;
                return DP_OK;
            }
            hi = lo;
            eh = el;
            lo = fmax(hi / 1.1, cr.sigma_min);
            if ((st = calib_eval(k, q, lo, steps, delta, &el)) != DP_OK) return st;
        }
    } else {
        lo = s0;
        el = eh;
        hi = s0;
        while (eh > target_eps) { /* walk up until private enough */
            lo = hi;
            el = eh;
            hi = k == DP_ACCT_GDP ? lo * 1.1 : fmin(lo * 1.1, CALIB_MAX_SIGMA);
            if (hi > CALIB_MAX_SIGMA || lo >= CALIB_MAX_SIGMA) /* GDP; or eps(CALIB_MAX_SIGMA) changed */
                return dp_fail(DP_ERR_RANGE,
                               "target epsilon %g is unreachable at sample rate %g, %ld steps, "
                               "delta %g with the %s accountant: it needs a noise multiplier above %g",
                               target_eps, q, steps, delta, dp_accountant_kind_name(k), CALIB_MAX_SIGMA);
            if ((st = calib_eval(k, q, hi, steps, delta, &eh)) != DP_OK) return st;
        }
    }
    double fl = el - target_eps, fh = eh - target_eps; /* fl > 0 (may be inf), fh <= 0 */
    double gap = -fh; /* target - eps(hi): what the tolerance bounds (Illinois halves fh itself, so
                       * -fh <= tol would stop the search early, as far from the target as it likes) */
    int side = 0;
    for (int it = 0; it < CALIB_MAX_BISECT && gap > eps_tol; it++) {
        double x = 0.5 * (lo + hi);
        if (isfinite(fl)) {
            double xf = hi - fh * (hi - lo) / (fh - fl);
            if (xf > lo && xf < hi) x = xf;
        }
        double ex;
        if ((st = calib_eval(k, q, x, steps, delta, &ex)) != DP_OK) return st;
        double fx = ex - target_eps;
        if (fx <= 0) {
            hi = x;
            fh = fx;
            gap = -fx;
            if (side == -1) fl *= 0.5; /* Illinois: the stale end's value is halved */
            side = -1;
        } else {
            lo = x;
            fl = fx;
            if (side == 1) fh *= 0.5;
            side = 1;
        }
    }
    if (gap > eps_tol)
        return dp_fail(DP_ERR_RANGE, "calibrate sigma: no convergence with the %s accountant",
                       dp_accountant_kind_name(k));
    *sigma = hi;
    return DP_OK;
}

/* epsilon of the history {(1, prior, 1), (q, sigma, steps)}; +inf where the grid cannot hold it */
static dp_status prior_eval(dp_accountant_kind k, double prior, double q, double sigma, long steps, double delta,
                            double *eps) {
    dp_accountant *a = NULL;
    dp_epsilon_report r;
    dp_status st = dp_accountant_create(&a);
    if (!st) st = dp_accountant_step(a, 1.0, prior, 1);
    if (!st && steps > 0) st = dp_accountant_step(a, q, sigma, steps);
    if (!st) st = dp_accountant_epsilon(a, k, delta, NULL, &r);
    dp_accountant_destroy(a);
    if (st == DP_ERR_RANGE) {
        dp_clear_error();
        *eps = INFINITY;
        return DP_OK;
    }
    if (st == DP_OK) *eps = r.epsilon;
    return st;
}

dp_status dp_calibrate_sigma_prior(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                                   double prior_sigma, double eps_tol, double *sigma) {
    dp_status st;
    if (dp_accountant_kind_is_bound(k) && !sigma) return dp_fail(DP_ERR_INVALID, "calibrate sigma: sigma is NULL");
    if ((st = calib_args(k, target_eps, delta, q, steps, eps_tol))) return st;
    if (!(prior_sigma > 0) || !isfinite(prior_sigma))
        return dp_fail(DP_ERR_RANGE, "prior noise multiplier %g must be finite and > 0", prior_sigma);
    if (eps_tol == 0.0) eps_tol = DP_CALIBRATE_EPS_TOL_DEFAULT;
    double e0, lo, hi, el, eh;
    if ((st = prior_eval(k, prior_sigma, q, 1.0, 0, delta, &e0)) != DP_OK) return st;
    if (!(e0 < target_eps - eps_tol))
        return dp_fail(DP_ERR_RANGE,
                       "target epsilon %g is unreachable: the release before training (noise multiplier %g on the "
                       "whole data) alone spends epsilon %.4g at delta %g by the %s accountant; give it more noise "
                       "or the run a larger target", target_eps, prior_sigma, e0, delta, dp_accountant_kind_name(k));
    /* the steps alone need lo (their epsilon is then about the target): the history needs more */
    if ((st = dp_calibrate_sigma_kind(k, target_eps, delta, q, steps, eps_tol, &lo)) != DP_OK) return st;
    if ((st = prior_eval(k, prior_sigma, q, lo, steps, delta, &el)) != DP_OK) return st;
    hi = lo;
    eh = el;
    for (int it = 0; eh > target_eps; it++) { /* walk up by 10% until private enough */
        if (it == CALIB_MAX_BISECT || hi * 1.1 > CALIB_MAX_SIGMA)
            return dp_fail(DP_ERR_RANGE, "target epsilon %g is unreachable after the prior release (noise multiplier "
                                         "%g) with the %s accountant", target_eps, prior_sigma,
                           dp_accountant_kind_name(k));
        lo = hi;
        el = eh;
        hi *= 1.1;
        if ((st = prior_eval(k, prior_sigma, q, hi, steps, delta, &eh)) != DP_OK) return st;
    }
    /* eps(hi) <= target < eps(lo), unless lo itself met it (then lo == hi); bisection on the ratio */
    for (int it = 0; it < CALIB_MAX_BISECT && target_eps - eh > eps_tol && hi > lo; it++) {
        const double x = sqrt(lo * hi);
        double ex;
        if ((st = prior_eval(k, prior_sigma, q, x, steps, delta, &ex)) != DP_OK) return st;
        if (ex <= target_eps) {
            hi = x;
            eh = ex;
        } else
            lo = x;
        if (hi / lo < 1 + 1e-9) break;
    }
    if (target_eps - eh > eps_tol)
        return dp_fail(DP_ERR_RANGE, "calibrate sigma after a prior release: no convergence with the %s accountant",
                       dp_accountant_kind_name(k));
    *sigma = hi;
    return DP_OK;
}
