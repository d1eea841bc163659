/* audit_stats.c: the statistics of one-run privacy auditing (Steinke, Nasr, Jagielski 2023),
 * pure math on the canaries' guesses: the p-value of an (eps, delta)-DP guesser and the epsilon
 * lower bound, the f-DP estimator of Mahloujifar, Melis and Chaudhuri (2024) on the same
 * guesses, for a family of curves or for the curve of a whole privacy profile (the upper
 * envelope of its lines: the verdict's test of the accountant's claim), and guessing from
 * scores with every estimate. The audited run that produces the scores is src/privacy/audit.c. See
 * dpsgd/audit.h and docs/audit.md. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpsgd/audit.h"

/* ---- the bound ------------------------------------------------------------------------ */

static double log_binom_pmf(long r, long k, double lq, double l1q) {
    return lgamma((double)r + 1) - lgamma((double)k + 1) - lgamma((double)(r - k) + 1) + (double)k * lq +
           (double)(r - k) * l1q;
}

dp_status dp_audit_p_value(long m, long r, long v, double eps, double delta, double *p) {
    if (!(0 <= v && v <= r && r <= m))
        return dp_fail(DP_ERR_RANGE, "audit: need 0 <= correct (%ld) <= guesses (%ld) <= canaries (%ld)", v, r, m);
    if (!(eps >= 0) || isnan(eps)) return dp_fail(DP_ERR_RANGE, "audit: epsilon %g must be >= 0", eps);
    if (!(delta >= 0 && delta <= 1)) return dp_fail(DP_ERR_RANGE, "audit: delta %g must be in [0, 1]", delta);
    /* an eps-DP guess is right with probability at most e^eps / (1 + e^eps) (randomised response) */
    const double l1p = log1p(exp(-eps));
    const double lq = -l1p, l1q = -eps - l1p;
    double beta = 0; /* P[Binomial(r, q) >= v] */
    for (long k = v; k <= r; k++) beta += exp(log_binom_pmf(r, k, lq, l1q));
    double alpha = 0, sum = 0; /* sum = P[v > Binomial(r, q) >= v - i] */
    for (long i = 1; i <= v; i++) {
        sum += exp(log_binom_pmf(r, v - i, lq, l1q));
        if (sum > (double)i * alpha) alpha = sum / (double)i;
    }
    double pv = beta + alpha * delta * 2.0 * (double)m;
    *p = pv < 1 ? pv : 1;
    return DP_OK;
}

/* the bound at an explicit level (p-value threshold) */
static dp_status bound_at_level(long m, long r, long v, double delta, double level, double *eps_lb) {
    double pv;
    dp_status st = dp_audit_p_value(m, r, v, 0, delta, &pv);
    if (st != DP_OK) return st;
    if (pv >= level) {
        *eps_lb = 0;
        return DP_OK;
    }
    double lo = 0, hi = 1; /* invariant: p(lo) < level <= p(hi) */
    for (;;) {
        dp_audit_p_value(m, r, v, hi, delta, &pv);
        if (pv >= level || hi >= 256) break;
        lo = hi;
        hi *= 2;
    }
    if (pv < level) { /* cannot happen for v <= r (p -> 1 as eps grows); be safe */
        *eps_lb = hi;
        return DP_OK;
    }
    while (hi - lo > 1e-7) {
        double mid = 0.5 * (lo + hi);
        dp_audit_p_value(m, r, v, mid, delta, &pv);
        if (pv < level) lo = mid;
        else hi = mid;
    }
    *eps_lb = lo;
    return DP_OK;
}

dp_status dp_audit_epsilon_bound(long m, long r, long v, double delta, double confidence, double *eps_lb) {
    if (!(confidence > 0 && confidence < 1))
        return dp_fail(DP_ERR_RANGE, "confidence %g: must be in (0, 1)", confidence);
    return bound_at_level(m, r, v, delta, 1 - confidence, eps_lb);
}

/* ---- the f-DP estimator (Mahloujifar, Melis & Chaudhuri 2024) ----------------------------- */

#define SQRT2 1.41421356237309504880
#define SQRT2PI 2.50662827463100050242

static double ncdf(double x) { return 0.5 * erfc(-x / SQRT2); }

/* log Phi(x); the asymptotic series where erfc would underflow */
static double log_ncdf(double x) {
    if (x > -30) return log(ncdf(x));
    const double x2 = x * x;
    return -0.5 * x2 - log(-x) - log(SQRT2PI) + log1p(-1 / x2 + 3 / (x2 * x2) - 15 / (x2 * x2 * x2));
}

/* Phi^-1(p), p in (0, 1): Acklam's rational approximation (relative error 1.2e-9), then one
 * Halley step on erfc (~1e-15), skipped in the far tails where exp(x^2/2) would overflow */
static double ninv(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    const double pl = 0.02425;
    double x;
    if (p < pl || p > 1 - pl) {
        const double q = sqrt(-2 * (p < pl ? log(p) : log1p(-p)));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        if (p > 1 - pl) x = -x;
    } else {
        const double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    if (fabs(x) < 37) {
        const double u = (ncdf(x) - p) * SQRT2PI * exp(0.5 * x * x);
        x -= u / (1 + 0.5 * x * u);
    }
    return x;
}

/* A trade-off curve as the recursion sees it: one curve of a family (curve, par, delta), or,
 * when nl > 0, the curve f = max_i f_{eps_i, delta_i} claimed by a privacy profile, held as
 * the upper envelope of the lines its inverse blow-up is made of (below). */
typedef struct {
    dp_fdp_curve curve;
    double par, delta;
    size_t nl;        /* envelope: lines 0..nl-1 by increasing slope, line j the largest up to brk[j] */
    unsigned char *t; /* 0: y -> 0; 1: y -> e^-eps (y - delta); 2: y -> 1 - delta - e^eps (1 - y) */
    double *ex, *d, *brk; /* e^-eps (t 1) or e^eps (t 2), delta; brk[nl-1] = +inf */
} fdp_fn;

static double line_at(const fdp_fn *f, size_t j, double y) {
    /* the same expressions as the single (eps, delta) curve, so one pair gives the same numbers */
    return f->t[j] == 0 ? 0 : f->t[j] == 1 ? (y - f->d[j]) * f->ex[j] : 1 - f->d[j] - f->ex[j] * (1 - y);
}

/* The inverse of the "blow-up" y -> 1 - f(y) of an f-DP mechanism: an event of probability y
 * under one input has probability at least this under a neighbouring one. For a profile every
 * (eps_i, delta_i) gives its own lower bound and all hold at once, so the largest one does:
 * a convex piecewise-linear function (the recursion needs convexity), found on the envelope by
 * binary search. A rounding error in a breakpoint can only pick a line below the envelope, a
 * smaller value, which never makes the test reject more; the neighbours are checked too. */
static double fdp_inv(const fdp_fn *f, double y) {
    if (y <= 0) return 0;
    if (f->nl) {
        size_t lo = 0, hi = f->nl - 1; /* the first line whose breakpoint is above y */
        while (lo < hi) {
            const size_t mid = (lo + hi) / 2;
            if (f->brk[mid] > y) hi = mid;
            else lo = mid + 1;
        }
        double x = line_at(f, lo, y);
        if (lo > 0) x = fmax(x, line_at(f, lo - 1, y));
        if (lo + 1 < f->nl) x = fmax(x, line_at(f, lo + 1, y));
        return x > 0 ? x : 0;
    }
    if (f->curve == DP_FDP_GAUSSIAN) return y >= 1 ? 1 : ncdf(ninv(y) - f->par);
    const double a = (y - f->delta) * exp(-f->par), b = 1 - f->delta - exp(f->par) * (1 - y);
    const double x = a > b ? a : b;
    return x > 0 ? x : 0;
}

static void fdp_fn_free(fdp_fn *f) {
    dp_free(f->t);
    dp_free(f->ex);
    dp_free(f->d);
    dp_free(f->brk);
    memset(f, 0, sizeof *f);
}

typedef struct {
    double s, c; /* slope, intercept (for the hull only; values come from line_at) */
    double ex, d;
    unsigned char t;
} hline;

static int cmp_slope(const void *a, const void *b) {
    const hline *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    if (x->c != y->c) return x->c < y->c ? -1 : 1;
    /* the same line (eps 0) both ways: keep (y - delta) e^-eps, exact for small y, where
     * 1 - delta - e^eps (1 - y) loses y to rounding */
    return (int)y->t - (int)x->t;
}

static dp_status profile_check(const dp_fdp_profile *prof) {
    if (!prof || !prof->eps || !prof->delta || prof->n < 1)
        return dp_fail(DP_ERR_INVALID, "audit: the privacy profile needs at least one (eps, delta) point");
    for (size_t i = 0; i < prof->n; i++) {
        if (!(prof->eps[i] >= 0 && prof->eps[i] <= 700)) /* e^eps stays finite */
            return dp_fail(DP_ERR_RANGE, "audit: profile epsilon %g must be in [0, 700]", prof->eps[i]);
        if (!(prof->delta[i] >= 0 && prof->delta[i] <= 1))
            return dp_fail(DP_ERR_RANGE, "audit: profile delta %g must be in [0, 1]", prof->delta[i]);
    }
    return DP_OK;
}

/* The envelope of the profile's lines: the zero line and, per point, the two lines of
 * max(0, (y - delta) e^-eps, 1 - delta - e^eps (1 - y)); by increasing slope (equal slopes:
 * the higher one), a line stays while it is on top somewhere (the convex hull trick). */
static dp_status fdp_fn_profile(const dp_fdp_profile *prof, fdp_fn *f) {
    memset(f, 0, sizeof *f);
    dp_status st = profile_check(prof);
    if (st != DP_OK) return st;
    const size_t nmax = 2 * prof->n + 1;
    hline *L = dp_alloc(sizeof(hline) * nmax);
    f->t = dp_alloc(nmax);
    f->ex = dp_alloc(sizeof(double) * nmax);
    f->d = dp_alloc(sizeof(double) * nmax);
    f->brk = dp_alloc(sizeof(double) * nmax);
    if (!L || !f->t || !f->ex || !f->d || !f->brk) {
        dp_free(L);
        fdp_fn_free(f);
        return dp_fail(DP_ERR_NOMEM, "audit: out of memory");
    }
    size_t n = 0;
    L[n++] = (hline){0, 0, 0, 0, 0};
    for (size_t i = 0; i < prof->n; i++) {
        const double e = prof->eps[i], d = prof->delta[i], em = exp(-e), ep = exp(e);
        L[n++] = (hline){em, -d * em, em, d, 1};
        L[n++] = (hline){ep, -(expm1(e) + d), ep, d, 2};
    }
    qsort(L, n, sizeof *L, cmp_slope);
    size_t h = 0; /* the hull, in place */
    for (size_t i = 0; i < n; i++) {
        if (h > 0 && L[h - 1].s == L[i].s) h--; /* equal slopes: the later (higher) one wins */
        /* the top line is useless if the new one overtakes the one below it no later than it does */
        while (h >= 2 && (L[h - 2].c - L[i].c) * (L[h - 1].s - L[h - 2].s) <=
                             (L[h - 2].c - L[h - 1].c) * (L[i].s - L[h - 2].s))
            h--;
        L[h++] = L[i];
    }
    for (size_t j = 0; j < h; j++) {
        f->t[j] = L[j].t;
        f->ex[j] = L[j].ex;
        f->d[j] = L[j].d;
        f->brk[j] = j + 1 < h ? (L[j].c - L[j + 1].c) / (L[j + 1].s - L[j].s) : INFINITY;
    }
    f->nl = h;
    dp_free(L);
    return DP_OK;
}

/* Can no f-DP mechanism have at least v of the k guesses correct with probability >= tau?
 * The paper's recursion on masses per canary (divided by m): r_i = E[#correct guesses; at
 * least i correct] / m, h_i = E[#wrong guesses; at least i correct] / m. Flipping one
 * canary's bit turns its correct guess into a wrong one with one correct guess fewer, so f-DP
 * (averaged over the canaries, the inverse blow-up being convex) forces h_{i-1} >= inv(r_i);
 * "exactly i correct" adds i correct and k - i wrong guesses, so r_{i-1} - r_i =
 * (i-1)/(k-i+1) (h_{i-1} - h_i); and r_0 + h_0 = k/m, the guesses per canary. The least
 * masses start from all of tau at exactly v correct: r_v = tau v/m, h_v = tau (k-v)/m. */
static int fdp_rules_out(long m, long k, long v, const fdp_fn *f, double tau) {
    const double total = (double)k / (double)m;
    double r = tau * (double)v / (double)m, h = tau * (double)(k - v) / (double)m;
    for (long i = v - 1; i >= 0; i--) {
        const double hn = fdp_inv(f, r);
        if (hn <= h) break; /* r and h stay as they are from here down to i = 0 */
        r += (double)i / (double)(k - i) * (hn - h);
        h = hn;
        if (r + h > total) return 1; /* the masses only grow: stop before they overflow */
    }
    return r + h > total;
}

static dp_status fdp_check(long m, long k, long v, dp_fdp_curve curve, double param, double delta) {
    if (!(0 <= v && v <= k && k <= m && k >= 1))
        return dp_fail(DP_ERR_RANGE, "audit: need 0 <= correct (%ld) <= guesses (%ld) <= canaries (%ld), guesses >= 1",
                       v, k, m);
    if ((unsigned)curve >= DP_FDP_COUNT) return dp_fail(DP_ERR_INVALID, "audit: unknown f-DP curve %d", (int)curve);
    if (!(param >= 0) || !isfinite(param))
        return dp_fail(DP_ERR_RANGE, "audit: f-DP curve parameter %g must be >= 0 and finite", param);
    if (!(delta >= 0 && delta <= 1)) return dp_fail(DP_ERR_RANGE, "audit: delta %g must be in [0, 1]", delta);
    return DP_OK;
}

/* the p-value: the least tau ruled out (to 1e-12 relative; 1 when even tau = 1 is not) */
static double fdp_p(long m, long k, long v, const fdp_fn *f) {
    if (!fdp_rules_out(m, k, v, f, 1)) return 1;
    /* ruled out is monotone in tau: more probability at v correct needs more mass below */
    double lo = 0, hi = 1; /* invariant: lo is not ruled out, hi is */
    for (int it = 0; it < 1100 && hi - lo > 1e-12 * hi; it++) {
        const double mid = 0.5 * (lo + hi);
        if (fdp_rules_out(m, k, v, f, mid)) hi = mid;
        else lo = mid;
    }
    return hi;
}

dp_status dp_audit_fdp_p_value(long m, long k, long v, dp_fdp_curve curve, double param, double delta, double *p) {
    dp_status st = fdp_check(m, k, v, curve, param, delta);
    if (st != DP_OK) return st;
    const fdp_fn f = {curve, param, delta, 0, NULL, NULL, NULL, NULL};
    *p = fdp_p(m, k, v, &f);
    return DP_OK;
}

dp_status dp_audit_fdp_profile_p_value(long m, long k, long v, const dp_fdp_profile *prof, double *p) {
    dp_status st = fdp_check(m, k, v, DP_FDP_APPROX_DP, 0, 0);
    if (st != DP_OK) return st;
    fdp_fn f;
    if ((st = fdp_fn_profile(prof, &f)) != DP_OK) return st;
    *p = fdp_p(m, k, v, &f);
    fdp_fn_free(&f);
    return DP_OK;
}

/* The largest eps (mu) whose curve is ruled out at the level, by bisection to 1e-7; ruled
 * out is monotone in the parameter (a more private curve forces more mass below v). */
static double fdp_bound_at_level(long m, long k, long v, dp_fdp_curve curve, double delta, double level) {
    fdp_fn f = {curve, 0, delta, 0, NULL, NULL, NULL, NULL};
    if (!fdp_rules_out(m, k, v, &f, level)) return 0;
    double lo = 0, hi = 1; /* invariant: lo is ruled out, hi is not */
    for (f.par = hi; fdp_rules_out(m, k, v, &f, level); f.par = hi) {
        if (hi >= 256) return hi; /* cannot happen for v <= k (f -> 0); be safe */
        lo = hi;
        hi *= 2;
    }
    while (hi - lo > 1e-7) {
        f.par = 0.5 * (lo + hi);
        if (fdp_rules_out(m, k, v, &f, level)) lo = f.par;
        else hi = f.par;
    }
    return lo;
}

/* delta(eps) of mu-GDP (Dong, Roth & Su 2019, corollary 2.13); e^eps Phi(.) in log space */
static double gdp_delta(double mu, double eps) {
    const double d = ncdf(-eps / mu + mu / 2) - exp(eps + log_ncdf(-eps / mu - mu / 2));
    return d > 0 ? d : 0;
}

/* the least eps at which mu-GDP is (eps, delta)-DP (infinite for delta = 0 and mu > 0) */
static double gdp_epsilon(double mu, double delta) {
    if (!(mu > 0)) return 0;
    if (!(delta > 0)) return INFINITY; /* (numerically gdp_delta only underflows to 0) */
    if (gdp_delta(mu, 0) <= delta) return 0;
    double lo = 0, hi = 1;
    while (gdp_delta(mu, hi) > delta) {
        lo = hi;
        hi *= 2;
        if (hi > 1e6) return INFINITY;
    }
    for (int it = 0; it < 200 && hi - lo > 1e-12 * hi; it++) {
        const double mid = 0.5 * (lo + hi);
        if (gdp_delta(mu, mid) > delta) lo = mid;
        else hi = mid;
    }
    return hi;
}

dp_status dp_audit_fdp_epsilon_bound(long m, long k, long v, double delta, double confidence, dp_fdp_curve curve,
                                     double *eps_lb, double *mu_lb) {
    if (!(confidence > 0 && confidence < 1))
        return dp_fail(DP_ERR_RANGE, "confidence %g: must be in (0, 1)", confidence);
    dp_status st = fdp_check(m, k, v, curve, 0, delta);
    if (st != DP_OK) return st;
    if (!(delta < 1)) return dp_fail(DP_ERR_RANGE, "delta %g: must be in [0, 1)", delta);
    const double b = fdp_bound_at_level(m, k, v, curve, delta, 1 - confidence);
    if (curve == DP_FDP_GAUSSIAN) {
        *eps_lb = gdp_epsilon(b, delta);
        if (mu_lb) *mu_lb = b;
    } else {
        *eps_lb = b;
        if (mu_lb) *mu_lb = NAN;
    }
    return DP_OK;
}

/* ---- guessing --------------------------------------------------------------------------- */

typedef struct {
    float s;
    int j;
} scored;

static int cmp_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->j - y->j;
}

/* guessing and every estimate; claim (may be NULL): the claimed curve for the verdict's test */
static dp_status guess(const float *scores, const unsigned char *in, int m, int guesses, double delta,
                       double confidence, const fdp_fn *claim, dp_audit_result *result) {
    if (m < 2) return dp_fail(DP_ERR_RANGE, "m %d: need at least 2 canaries", m);
    if (guesses < 0 || guesses > m) return dp_fail(DP_ERR_RANGE, "guesses %d: must be in 0..%d", guesses, m);
    if (!(confidence > 0 && confidence < 1))
        return dp_fail(DP_ERR_RANGE, "confidence %g: must be in (0, 1)", confidence);
    if (!(delta >= 0 && delta < 1)) return dp_fail(DP_ERR_RANGE, "delta %g: must be in [0, 1)", delta);
    for (int j = 0; j < m; j++)
        if (!isfinite(scores[j])) return dp_fail(DP_ERR_NONFINITE, "audit: canary %d has a non-finite score", j);
    scored *s = dp_alloc(sizeof(scored) * (size_t)m);
    if (!s) return DP_ERR_NOMEM;
    for (int j = 0; j < m; j++) s[j] = (scored){scores[j], j};
    qsort(s, (size_t)m, sizeof *s, cmp_desc);
    /* candidate guess counts: the requested one, or a fixed grid (Bonferroni over its size) */
    static const double fr[] = {0.02, 0.05, 0.1, 0.2, 0.5, 1.0};
    long cand[6];
    int nc = 0;
    if (guesses > 0) cand[nc++] = guesses;
    else
        for (int i = 0; i < 6; i++) {
            long r = lround(fr[i] * m);
            if (r < 2) r = 2;
            if (r > m) r = m;
            if (nc == 0 || cand[nc - 1] != r) cand[nc++] = r;
        }
    const double level = (1 - confidence) / nc;
    long best_r = cand[0], best_v = 0;
    double best_eps = -1;
    /* the f-DP estimator on the same guesses at the same level: the Bonferroni split covers
     * each estimator's own choice of r, so each keeps its best (arithmetic only, a few
     * recursions of at most v steps per bisection step) */
    long fdp_r = cand[0], fdp_v = 0, gdp_r = cand[0], gdp_v = 0;
    double fdp_eps = -1, gdp_mu = -1;
    /* the verdict's test on the same guesses: each guess count's p-value against the claimed
     * curve; the smallest, times the number of counts (Bonferroni), is the test's p-value */
    long prof_r = cand[0], prof_v = 0;
    double prof_p = 2;
    int reject = 0;
    dp_status st = DP_OK;
    for (int c = 0; c < nc; c++) {
        long r = cand[c], kp = r / 2, km = r - kp, v = 0;
        for (long i = 0; i < kp; i++) v += in[s[i].j] != 0;           /* top: guess "in" */
        for (long i = 0; i < km; i++) v += in[s[m - 1 - i].j] == 0;   /* bottom: guess "out" */
        double e;
        if ((st = bound_at_level(m, r, v, delta, level, &e)) != DP_OK) break;
        if (e > best_eps) {
            best_eps = e;
            best_r = r;
            best_v = v;
        }
        e = fdp_bound_at_level(m, r, v, DP_FDP_APPROX_DP, delta, level);
        if (e > fdp_eps) {
            fdp_eps = e;
            fdp_r = r;
            fdp_v = v;
        }
        e = fdp_bound_at_level(m, r, v, DP_FDP_GAUSSIAN, delta, level);
        if (e > gdp_mu) {
            gdp_mu = e;
            gdp_r = r;
            gdp_v = v;
        }
        if (claim) {
            /* rejected at this count iff tau = level is ruled out (exact, unlike the p-value's
             * bisection, which only displays how far below the level it is) */
            reject |= fdp_rules_out(m, r, v, claim, level);
            const double pc = fdp_p(m, r, v, claim);
            if (pc < prof_p) {
                prof_p = pc;
                prof_r = r;
                prof_v = v;
            }
        }
    }
    dp_free(s);
    if (st != DP_OK) return st;
    if (claim) {
        result->profile_p = fmin(1, prof_p * nc);
        result->profile_guesses = prof_r;
        result->profile_correct = prof_v;
        result->violation = reject;
    } else {
        result->profile_p = NAN;
        result->profile_guesses = result->profile_correct = 0;
        result->violation = 0;
    }
    result->guesses = best_r;
    result->correct = best_v;
    result->eps_lower = best_eps;
    result->confidence = confidence;
    result->p_level = level;
    result->fdp_eps_lower = fdp_eps;
    result->fdp_guesses = fdp_r;
    result->fdp_correct = fdp_v;
    result->gdp_mu_lower = gdp_mu;
    result->gdp_eps_lower = gdp_epsilon(gdp_mu, delta);
    result->gdp_guesses = gdp_r;
    result->gdp_correct = gdp_v;
    return DP_OK;
}

dp_status dp_audit_guess(const float *scores, const unsigned char *in, int m, int guesses, double delta,
                         double confidence, dp_audit_result *result) {
    return guess(scores, in, m, guesses, delta, confidence, NULL, result);
}

dp_status dp_audit_guess_profile(const float *scores, const unsigned char *in, int m, int guesses, double delta,
                                 double confidence, const dp_fdp_profile *claim, dp_audit_result *result) {
    fdp_fn f;
    dp_status st = fdp_fn_profile(claim, &f);
    if (st != DP_OK) return st;
    st = guess(scores, in, m, guesses, delta, confidence, &f, result);
    fdp_fn_free(&f);
    return st;
}
