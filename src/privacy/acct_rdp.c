/* acct_rdp.c: the RDP accountant (the kind "rdp" of DP_ACCOUNTANT_LIST), its running sum over
 * the history, and Opacus' search for sigma.
 *
 * The accountant follows Opacus 1.5.4 (opacus/accountants/analysis/rdp.py, itself from
 * TF Privacy), re-derived here in plain IEEE double arithmetic:
 *   RDP_alpha(q, sigma) = log(A_alpha) / (alpha - 1) per step, times the step count;
 *   integer alpha:    A = sum_{i=0..alpha} C(alpha,i) q^i (1-q)^(alpha-i) exp((i^2-i)/(2 s^2))
 *   fractional alpha: the two half-line series of Mironov, Talwar, Zhang (2019), Sec. 3.3,
 *                     summed until both new terms are below exp(-30);
 *   q == 0 -> 0;  q == 1 -> alpha / (2 sigma^2);
 *   eps = min over alpha of  rdp - (log delta + log alpha)/(alpha-1) + log((alpha-1)/alpha)
 *   (NaN orders ignored; ties go to the first order).
 * This file must be compiled without -ffast-math (the log-space sums rely on IEEE inf).
 */
#include <math.h>
#include <string.h>

#include "privacy/acct.h"

/* ---- RDP of the subsampled Gaussian ----------------------------------------------------- */

static double rdp_order(int k) {
    /* Opacus: [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) */
    return k < 99 ? 1.0 + (double)(k + 1) / 10.0 : (double)(12 + (k - 99));
}

/* log(exp(x) + exp(y)) */
static double log_add(double x, double y) {
    double a = x < y ? x : y, b = x < y ? y : x;
    if (a == -INFINITY) return b;
    return log1p(exp(a - b)) + b;
}

/* log(exp(x) - exp(y)) for x >= y; *bad set when x < y (a negative result). */
static double log_sub(double x, double y, int *bad) {
    if (x < y) {
        *bad = 1;
        return NAN;
    }
    if (y == -INFINITY) return x;
    if (x == y) return -INFINITY;
    double e = expm1(x - y);
    if (isinf(e)) return x; /* exp(x-y) overflows: exp(y) is negligible */
    return log(e) + y;
}

#define LOG_SQRT_PI 0.57236494292470008707 /* log(sqrt(pi)) */

/* log(erfc(x)), accurate also where erfc underflows. */
static double log_erfc(double x) {
    if (x <= 25.0) return log(erfc(x)); /* erfc(25) ~ 8e-274: still a normal double */
    /* erfc(x) = exp(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k (asymptotic;
     * at x > 25 the 8 terms below leave a relative error under 1e-20) */
    double r = 1.0 / (2.0 * x * x), term = 1.0, sum = 1.0;
    for (int k = 1; k <= 8; k++) {
        term *= -(double)(2 * k - 1) * r;
        sum += term;
    }
    return -x * x - log(x) - LOG_SQRT_PI + log(sum);
}

/* log(A_alpha) for integer alpha >= 1, 0 < q < 1. */
static double log_a_int(double q, double sigma, int alpha) {
    const double log_q = log(q), log_1mq = log1p(-q), two_s2 = 2.0 * sigma * sigma;
    double log_a = -INFINITY;
    double binom = 1.0; /* C(alpha, i), exact or within a few ulps for alpha <= 63 */
    for (int i = 0; i <= alpha; i++) {
        double log_coef = log(binom) + i * log_q + (alpha - i) * log_1mq;
        double s = log_coef + ((double)i * i - i) / two_s2;
        log_a = log_add(log_a, s);
        binom = binom * (double)(alpha - i) / (double)(i + 1);
    }
    return log_a;
}

enum { FRAC_MAX_TERMS = 10000000 };

/* log(A_alpha) for fractional alpha > 1, 0 < q < 1. Returns +inf if the series breaks
 * down numerically or does not converge (an unusable order, never a smaller epsilon). */
static double log_a_frac(double q, double sigma, double alpha) {
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    const double log_q = log(q), log_1mq = log1p(-q), two_s2 = 2.0 * sigma * sigma;
    const double z0 = sigma * sigma * (log_1mq - log_q) + 0.5; /* s^2 log(1/q - 1) + 1/2 */
    const double inv_sqrt2s = 1.0 / (sqrt(2.0) * sigma), log_half = log(0.5);
    double log_abs_coef = 0.0; /* log |C(alpha, i)| */
    int sign = 1;              /* sign of C(alpha, i) */
    int bad = 0;
    for (long i = 0; i < FRAC_MAX_TERMS; i++) {
        const double di = (double)i, j = alpha - di;
        double log_t0 = log_abs_coef + di * log_q + j * log_1mq;
        double log_t1 = log_abs_coef + j * log_q + di * log_1mq;
        double log_e0 = log_half + log_erfc((di - z0) * inv_sqrt2s);
        double log_e1 = log_half + log_erfc((z0 - j) * inv_sqrt2s);
        double log_s0 = log_t0 + (di * di - di) / two_s2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / two_s2 + log_e1;
        if (sign > 0) {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0, &bad);
            log_a1 = log_sub(log_a1, log_s1, &bad);
        }
        if (bad || isnan(log_s0) || isnan(log_s1)) return INFINITY;
        if ((log_s0 > log_s1 ? log_s0 : log_s1) < -30.0) return log_add(log_a0, log_a1);
        /* C(alpha, i+1) = C(alpha, i) (alpha - i) / (i + 1) */
        log_abs_coef += log(fabs(j)) - log(di + 1.0);
        if (j < 0) sign = -sign;
    }
    return INFINITY;
}

/* RDP of one step at order alpha (q in [0,1], sigma > 0). */
static double rdp_step(double q, double sigma, double alpha) {
    if (q == 0.0) return 0.0;
    if (q == 1.0) return alpha / (2.0 * sigma * sigma);
    double la = alpha == floor(alpha) ? log_a_int(q, sigma, (int)alpha) : log_a_frac(q, sigma, alpha);
    return la / (alpha - 1.0);
}

/* rdp[k] += steps * RDP_alpha_k(q, sigma) (Opacus: compute_rdp(...) = rdp * steps, summed) */
void dp__acct_rdp_accumulate(double *rdp, double q, double sigma, long steps) {
    for (int k = 0; k < DP_RDP_NUM_ORDERS; k++) rdp[k] += rdp_step(q, sigma, rdp_order(k)) * (double)steps;
}

/* Opacus get_privacy_spent: epsilon minimised over the orders, NaN orders ignored. */
static void rdp_to_eps(const double *rdp, double delta, double *eps, double *alpha) {
    const double log_delta = log(delta);
    int best = -1;
    double best_eps = NAN;
    for (int k = 0; k < DP_RDP_NUM_ORDERS; k++) {
        const double a = rdp_order(k);
        double e = rdp[k] - (log_delta + log(a)) / (a - 1.0) + log((a - 1.0) / a);
        if (isnan(e)) continue;
        if (best < 0 || e < best_eps) {
            best = k;
            best_eps = e;
        }
    }
    if (best < 0) {
        *eps = INFINITY;
        *alpha = NAN;
    } else {
        *eps = best_eps;
        *alpha = rdp_order(best);
    }
}

static dp_status check_delta(double delta) {
    if (!(delta > 0.0 && delta < 1.0)) return dp_fail(DP_ERR_RANGE, "delta %g is outside (0, 1)", delta);
    return DP_OK;
}

/* ---- epsilon of the history ------------------------------------------------------------ */

dp_status dp__acct_rdp_of(const dp_accountant *a, double delta, double *eps, double *best_alpha) {
    dp_status st;
    if ((st = check_delta(delta))) return st;
    double e = 0.0, al = 0.0;
    if (a->len > 0) {
        double rdp[DP_RDP_NUM_ORDERS];
        const acct_entry *last = &a->hist[a->len - 1];
        memcpy(rdp, a->closed_rdp, sizeof rdp);
        dp__acct_rdp_accumulate(rdp, last->q, last->sigma, last->steps);
        rdp_to_eps(rdp, delta, &e, &al);
    }
    *eps = e;
    if (best_alpha) *best_alpha = al;
    return DP_OK;
}

/* RDP epsilon of the entries (each with its steps) */
dp_status dp__acct_rdp_of_entries(const acct_entry *e, size_t n, double delta, double *eps) {
    dp_accountant *acc = NULL;
    dp_status st = dp_accountant_create(&acc);
    if (st) return st;
    for (size_t i = 0; i < n && !st; i++) st = dp_accountant_step(acc, e[i].q, e[i].sigma, e[i].steps);
    if (!st) st = dp__acct_rdp_of(acc, delta, eps, NULL);
    dp_accountant_destroy(acc);
    return st;
}

/* ---- the kind "rdp" --------------------------------------------------------------------- */

dp_status dp__acct_rdp_epsilon(const acct_history *h, double delta, const dp_accounting_params *prm,
                               dp_epsilon_report *r) {
    (void)prm;
    dp_epsilon_report o = {0.0, 0.0, NAN, 0.0, 0.0, 0, 0.0}; /* nothing at risk: 0 (order 0, as Opacus) */
    if (h->n > 0) {
        double eps, order;
        dp_status st = dp__acct_rdp_of(h->a, delta, &eps, &order);
        if (st) return st;
        o.epsilon = o.estimate = o.upper = eps;
        o.order = order;
    }
    *r = o;
    return DP_OK;
}

dp_status dp__acct_rdp_delta(const acct_history *h, const double *eps, size_t n_eps, int sweep,
                             const dp_accounting_params *prm, double *delta) {
    (void)sweep;
    (void)prm;
    dp_status st;
    for (size_t i = 0; i < n_eps; i++) {
        const double epsilon = eps[i];
        double d = 0.0;
        if (!isinf(epsilon)) {
            /* smallest delta whose RDP epsilon is <= epsilon, by bisection in log delta */
            double lo = log(1e-300), hi = log(0.999999), eh;
            if ((st = dp__acct_rdp_of(h->a, exp(hi), &eh, NULL))) return st;
            if (eh > epsilon) {
                d = 1.0;
            } else {
                for (int it = 0; it < 100 && hi - lo > 1e-12; it++) {
                    double mid = 0.5 * (lo + hi), em;
                    if ((st = dp__acct_rdp_of(h->a, exp(mid), &em, NULL))) return st;
                    if (em <= epsilon)
                        hi = mid;
                    else
                        lo = mid;
                }
                d = exp(hi);
            }
        }
        delta[i] = d;
    }
    return DP_OK;
}

/* ---- Opacus get_noise_multiplier ------------------------------------------------------- */

static double eps_of(double q, double sigma, long steps, double delta) {
    double rdp[DP_RDP_NUM_ORDERS] = {0}, e, al;
    dp__acct_rdp_accumulate(rdp, q, sigma, steps);
    rdp_to_eps(rdp, delta, &e, &al);
    return e;
}

enum { CALIBRATE_MAX_BISECT = 200 };
#define CALIBRATE_MAX_SIGMA 1e6

dp_status dp__acct_rdp_calibrate(double target_eps, double delta, double q, long steps, double eps_tol, double *sigma) {
    /* Opacus get_noise_multiplier (the arguments checked by the caller, eps_tol > 0) */
    double sigma_low = 0.0, sigma_high = 10.0, eps_high = INFINITY;
    while (!(eps_high <= target_eps)) { /* NaN keeps doubling, like Python's inf > t */
        sigma_high *= 2.0;
        eps_high = eps_of(q, sigma_high, steps, delta);
        if (sigma_high > CALIBRATE_MAX_SIGMA)
            return dp_fail(DP_ERR_RANGE,
                           "target epsilon %g is unreachable at sample rate %g, %ld steps, "
                           "delta %g: it needs a noise multiplier above %g",
                           target_eps, q, steps, delta, CALIBRATE_MAX_SIGMA);
    }
    for (int it = 0; it < CALIBRATE_MAX_BISECT && target_eps - eps_high > eps_tol; it++) {
        double mid = 0.5 * (sigma_low + sigma_high);
        double e = eps_of(q, mid, steps, delta);
        if (e < target_eps) {
            sigma_high = mid;
            eps_high = e;
        } else {
            sigma_low = mid;
        }
    }
    *sigma = sigma_high;
    return DP_OK;
}
