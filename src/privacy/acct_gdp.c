/* acct_gdp.c: the GDP accountant (the kind "gdp" of DP_ACCOUNTANT_LIST): the central-limit
 * approximation of Bu, Dong, Long, Su (2019), as Opacus' GaussianAccountant with Poisson
 * sampling. The history is mu-GDP with mu^2 = sum_i N_i q_i^2 (e^{1/s_i^2} - 1) (q_i = 1:
 * N_i / s_i^2). NOT a bound: it can underestimate (the report says approximate = 1), so it
 * never calibrates sigma (DP_ACCOUNTANT_LIST says bound 0).
 * This file must be compiled without -ffast-math.
 */
#include <math.h>

#include "privacy/acct.h"

#define DP_PI 3.14159265358979323846

static double gdp_mu(const acct_entry *e, size_t n) {
    double mu2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double s2 = e[i].sigma * e[i].sigma;
        mu2 += (double)e[i].steps * (e[i].q == 1.0 ? 1.0 / s2 : e[i].q * e[i].q * expm1(1.0 / s2));
    }
    return sqrt(mu2);
}

/* log Phi(y) */
static double log_ncdf(double y) {
    if (y > -20.0) return log(0.5 * erfc(-y / sqrt(2.0)));
    /* asymptotic: Phi(y) ~ phi(y)/|y| (1 - 1/y^2 + 3/y^4 - 15/y^6) */
    const double y2 = y * y;
    return -0.5 * y2 - log(-y) - 0.5 * log(2.0 * DP_PI) + log1p(-1.0 / y2 + 3.0 / (y2 * y2) - 15.0 / (y2 * y2 * y2));
}

static double gdp_delta(double mu, double eps) {
    if (mu == 0.0) return 0.0;
    if (isinf(mu)) return 1.0;
    double d = 0.5 * erfc((eps / mu - mu / 2.0) / sqrt(2.0)) - exp(eps + log_ncdf(-eps / mu - mu / 2.0));
    return d < 0.0 ? 0.0 : d;
}

static double gdp_eps(double mu, double delta) {
    if (mu == 0.0) return 0.0;
    if (isinf(mu)) return INFINITY;
    if (gdp_delta(mu, 0.0) <= delta) return 0.0;
    double lo = 0.0, hi = 500.0;
    while (gdp_delta(mu, hi) > delta) {
        lo = hi;
        hi *= 2.0;
        if (hi > 1e300) return INFINITY;
    }
    for (int it = 0; it < 300 && hi - lo > 1e-14 * hi; it++) {
        double mid = 0.5 * (lo + hi);
        if (gdp_delta(mu, mid) > delta)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* ---- the kind "gdp" --------------------------------------------------------------------- */

dp_status dp__acct_gdp_epsilon(const acct_history *h, double delta, const dp_accounting_params *prm,
                               dp_epsilon_report *r) {
    (void)prm;
    /* an empty history has mu = 0: epsilon 0 */
    const double eps = gdp_eps(gdp_mu(h->e, h->n), delta);
    dp_epsilon_report o = {eps, eps, NAN, NAN, 0.0, 1, NAN};
    *r = o;
    return DP_OK;
}

dp_status dp__acct_gdp_delta(const acct_history *h, const double *eps, size_t n_eps, int sweep,
                             const dp_accounting_params *prm, double *delta) {
    (void)sweep;
    (void)prm;
    for (size_t i = 0; i < n_eps; i++) delta[i] = isinf(eps[i]) ? 0.0 : gdp_delta(gdp_mu(h->e, h->n), eps[i]);
    return DP_OK;
}
