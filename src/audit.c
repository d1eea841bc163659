/* audit.c: one-run privacy auditing (Steinke, Nasr, Jagielski 2023): the p-value of an
 * (eps, delta)-DP guesser, the epsilon lower bound, the f-DP estimator of Mahloujifar, Melis
 * and Chaudhuri (2024) on the same guesses, for a family of curves or for the curve of a whole
 * privacy profile (the verdict's test of the accountant's claim), guessing from scores, and the
 * audited DP-SGD run with input-space or white-box gradient canaries. See dpsgd/audit.h and
 * docs/audit.md. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dpsgd/audit.h"
#include "dpsgd/privacy.h"
#include "dpsgd/train.h"
#include "internal.h"
#include "step.h"
#include "testhooks.h"

static const char *const canary_names[] = {
#define DP__NAME(name, text) text,
    DP_CANARY_LIST(DP__NAME)
#undef DP__NAME
};
_Static_assert(sizeof canary_names / sizeof canary_names[0] == DP_CANARY_COUNT, "canary kind without a name");

const char *dp_canary_kind_name(dp_canary_kind k) {
    return (unsigned)k < DP_CANARY_COUNT ? canary_names[k] : "unknown";
}

dp_status dp_canary_kind_parse(const char *s, dp_canary_kind *out) {
    for (int k = 0; s && k < DP_CANARY_COUNT; k++)
        if (!strcasecmp(s, canary_names[k])) {
            *out = (dp_canary_kind)k;
            return DP_OK;
        }
    return dp_fail(DP_ERR_INVALID, "--canary-type %s: expected input or gradient", s ? s : "(null)");
}

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
        return dp_fail(DP_ERR_RANGE, "--confidence %g: must be in (0, 1)", confidence);
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
        return dp_fail(DP_ERR_RANGE, "--confidence %g: must be in (0, 1)", confidence);
    dp_status st = fdp_check(m, k, v, curve, 0, delta);
    if (st != DP_OK) return st;
    if (!(delta < 1)) return dp_fail(DP_ERR_RANGE, "--delta %g: must be in [0, 1)", delta);
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
    if (m < 2) return dp_fail(DP_ERR_RANGE, "--canaries %d: need at least 2", m);
    if (guesses < 0 || guesses > m) return dp_fail(DP_ERR_RANGE, "--guesses %d: must be in 0..%d", guesses, m);
    if (!(confidence > 0 && confidence < 1))
        return dp_fail(DP_ERR_RANGE, "--confidence %g: must be in (0, 1)", confidence);
    if (!(delta >= 0 && delta < 1)) return dp_fail(DP_ERR_RANGE, "--delta %g: must be in [0, 1)", delta);
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

/* ---- the audited run ------------------------------------------------------------------ */

dp_audit_params dp_audit_default_params(void) {
    dp_audit_params p;
    memset(&p, 0, sizeof p);
    p.canary = DP_CANARY_GRADIENT;
    p.num_canaries = 0; /* as many as the model allows: dp_audit_num_canaries */
    p.confidence = 0.95;
    p.clipping = DP_CLIP_GHOST;
    p.max_grad_norm = 0.1;
    p.target_epsilon = 3.0;
    p.delta = 1e-5;
    p.expected_batch = 500;
    p.epochs = 20;
    p.optim = dp_optim_default_params(DP_OPT_SGD);
    p.optim.lr = 4.0;
    p.optim.momentum = 0.9;
    p.accountant = DP_ACCT_PRV;
    return p;
}

int dp_audit_num_canaries(const dp_model *model, size_t n_train, const dp_audit_params *p) {
    if (p->num_canaries != 0) return p->num_canaries;
    if (p->canary == DP_CANARY_INPUT || !model) return 1000;
    /* Gradient canaries cost almost nothing themselves, and the test's power grows with their
     * number (more guesses at the same accuracy), up to one per trainable coordinate, where
     * they stop being orthogonal (each then sees another's signal as noise). The run's steps
     * grow with n + m/2 (q = B / (n + m/2)), so m is capped at 4 n: at most three times the
     * steps of the real rows alone. */
    const unsigned char *mask = dp_model_trainable_mask(model);
    const size_t np = dp_model_num_params(model);
    size_t d = 0;
    for (size_t t = 0; t < np; t++) d += mask[t] != 0;
    size_t m = d < 4 * n_train ? d : 4 * n_train;
    if (m > 10000000) m = 10000000;
    return m < 2 ? 2 : (int)m;
}

/* What the step's hooks need (src/step.h): the rows of the real data and of the input
 * canaries, and the gradient canaries sampled in this step. */
typedef struct {
    const dp_dataset *tr, *pool;
    const size_t *src;  /* input canary j copies pool row src[j] ... */
    const int32_t *lab; /* ... with the wrong label lab[j] */
    const size_t *can;  /* gradient canaries sampled this step (indices j), ncan of them */
    size_t ncan;
    const size_t *supp; /* canary j: coordinates supp[j kc ..], signs sgn[j kc ..] */
    const float *sgn;
    int kc;
    float norm;         /* a gradient canary's norm: C (times the test switch) */
    float *real;        /* the clipped sum of the real examples, before the canaries */
    double *llr;        /* per canary: sum over steps of the log-likelihood ratio (below) */
    double expected;
    int mc;
    double inv_c, inv_s2, q; /* 1/C, 1/sigma^2 (the sigma the accountant records), q */
} audit_hooks;

static void audit_row(void *user, size_t e, float *x, int32_t *y) {
    const audit_hooks *h = user;
    const size_t n = h->tr->n, dim = h->tr->dim;
    memcpy(x, e < n ? h->tr->x + e * dim : h->pool->x + h->src[e - n] * dim, sizeof(float) * dim);
    *y = e < n ? h->tr->y[e] : h->lab[e - n];
}

/* gradient canaries join the clipped sum as clipped real samples would (norm C) */
static dp_status audit_clipped(void *user, float *grad, size_t np) {
    audit_hooks *h = user;
    if (!h->llr) return DP_OK;
    memcpy(h->real, grad, sizeof(float) * np);
    for (size_t i = 0; i < h->ncan; i++) {
        const size_t *sj = h->supp + h->can[i] * (size_t)h->kc;
        const float *gj = h->sgn + h->can[i] * (size_t)h->kc;
        for (int c = 0; c < h->kc; c++) grad[sj[c]] += h->norm * gj[c];
    }
    return DP_OK;
}

/* The score of a gradient canary. At step t the auditor sees x_t = <released * (q n) - real
 * clipped sum, u_j> / C: the canary's own contribution (1 when sampled, 0 otherwise) plus
 * N(0, sigma^2) noise; the other canaries are orthogonal to u_j. Under the claimed mechanism x_t
 * is N(0, sigma^2) for a canary left out and the mixture (1-q) N(0, sigma^2) + q N(1, sigma^2)
 * for one put in, independently over the steps (fresh noise and sampling each step), so the
 * sum of the per-step log-likelihood ratios log(1 - q + q e^{(x_t - 1/2)/sigma^2}) is the most
 * powerful statistic for in versus out (Neyman-Pearson) against the very mechanism the
 * accountant describes. It uses the claimed sigma and q only, never whether the canary was
 * sampled. (The plain sum of the x_t, the earlier score, ignores that a sampled step stands out:
 * it caught noise x 0.5 in 4 of 5 simulated default audits where this caught 20 of 20.) */
static dp_status audit_released(void *user, const float *grad, size_t np) {
    audit_hooks *h = user;
    (void)np;
    if (!h->llr) return DP_OK;
    const int kc = h->kc;
    for (int j = 0; j < h->mc; j++) {
        const size_t *sj = h->supp + (size_t)j * kc;
        const float *gj = h->sgn + (size_t)j * kc;
        double x = 0;
        for (int c = 0; c < kc; c++) x += ((double)grad[sj[c]] * h->expected - h->real[sj[c]]) * gj[c];
        const double a = (x * h->inv_c - 0.5) * h->inv_s2;
        /* log(1 - q + q e^a) without overflow: a + log(q + (1 - q) e^-a) for a > 0 */
        h->llr[j] += a > 0 ? a + log(h->q + (1 - h->q) * exp(-a)) : log1p(h->q * expm1(a));
    }
    return DP_OK;
}

/* Per-sample losses of the m input canaries under the current model (no training mode). */
static dp_status canary_losses(dp_model *m, const dp_dataset *pool, const size_t *src, const int32_t *lab, int mc,
                               float *xb, size_t cap, float *loss) {
    const size_t dim = pool->dim;
    const int K = dp_model_output_size(m);
    for (int off = 0; off < mc; off += (int)cap) {
        int B = mc - off < (int)cap ? mc - off : (int)cap;
        for (int i = 0; i < B; i++) memcpy(xb + (size_t)i * dim, pool->x + src[off + i] * dim, sizeof(float) * dim);
        const float *z;
        dp_status st = dp_model_forward(m, xb, B, 0, NULL, &z);
        if (st == DP_OK) st = dp_loss_xent(z, lab + off, B, K, loss + off, NULL);
        if (st != DP_OK) return st;
    }
    return DP_OK;
}


dp_status dp_audit_run(dp_model *model, const dp_dataset *tr, const dp_dataset *pool, const dp_audit_params *p,
                       dp_audit_result *result, float *scores_out, unsigned char *in_out) {
    return dp__audit(model, tr, pool, p, NULL, result, scores_out, in_out);
}

/* dp_audit_run with the test switches of src/testhooks.h (t == NULL: none) */
dp_status dp__audit(dp_model *model, const dp_dataset *tr, const dp_dataset *pool, const dp_audit_params *p,
                    const dp__audit_test *hooks, dp_audit_result *result, float *scores_out, unsigned char *in_out) {
    const double t0 = dp__now_s();
    const double noise_scale = hooks ? hooks->noise_scale : 1.0, canary_scale = hooks ? hooks->canary_scale : 1.0;
    if (!pool) pool = tr;
    const size_t n = tr->n, dim = tr->dim, np = dp_model_num_params(model);
    const int K = dp_model_output_size(model), mc = dp_audit_num_canaries(model, n, p);
    const int input = p->canary == DP_CANARY_INPUT;
    if ((unsigned)p->canary >= DP_CANARY_COUNT) return dp_fail(DP_ERR_INVALID, "audit: unknown canary kind");
    if (n == 0) return dp_fail(DP_ERR_INVALID, "training set is empty");
    if (dim != dp_model_input_size(model))
        return dp_fail(DP_ERR_INVALID, "training set rows have %zu features but the model expects %zu", dim,
                       dp_model_input_size(model));
    if (mc < 2 || mc > 10000000) return dp_fail(DP_ERR_RANGE, "--canaries %d: must be in 2..10000000", mc);
    if (p->guesses < 0 || p->guesses > mc) return dp_fail(DP_ERR_RANGE, "--guesses %d: must be in 0..%d", p->guesses, mc);
    if (!(p->confidence > 0 && p->confidence < 1))
        return dp_fail(DP_ERR_RANGE, "--confidence %g: must be in (0, 1)", p->confidence);
    if (p->epochs < 1) return dp_fail(DP_ERR_RANGE, "--epochs %d: must be >= 1", p->epochs);
    if (p->physical_batch < 0) return dp_fail(DP_ERR_RANGE, "--physical-batch %d: must be >= 0", p->physical_batch);
    if (!(p->max_grad_norm > 0) || !isfinite(p->max_grad_norm))
        return dp_fail(DP_ERR_RANGE, "--max-grad-norm %g: must be a positive finite number", p->max_grad_norm);
    if (!(noise_scale >= 0) || !isfinite(noise_scale))
        return dp_fail(DP_ERR_RANGE, "--debug-noise-scale %g: must be >= 0 and finite", noise_scale);
    if (!(canary_scale > 0) || !isfinite(canary_scale))
        return dp_fail(DP_ERR_RANGE, "--debug-canary-scale %g: must be > 0 and finite", canary_scale);
    if (input) {
        if (K < 2) return dp_fail(DP_ERR_INVALID, "input canaries need a model with at least 2 outputs");
        if (pool->n == 0 || pool->dim != dim)
            return dp_fail(DP_ERR_INVALID, "canary pool: %zu rows of %zu features (need rows of %zu)", pool->n,
                           pool->dim, dim);
        for (size_t i = 0; i < pool->n; i++)
            if (pool->y[i] < 0 || pool->y[i] >= K) /* the pool may be private: no value, no row */
                return dp_fail(DP_ERR_RANGE, "canary pool: a label is outside 0..%d", K - 1);
    }
    /* the sample rate is fixed before the inclusions are drawn: q = B / (n + m/2) */
    const double n_exp = (double)n + 0.5 * mc;
    if (p->expected_batch < 1 || (double)p->expected_batch > n_exp)
        return dp_fail(DP_ERR_RANGE, "--batch-size %d: must be in 1..%.0f (training set + half the canaries)",
                       p->expected_batch, floor(n_exp));
    if (!(p->delta > 0 && p->delta < 1.0 / n_exp))
        return dp_fail(DP_ERR_RANGE, "--delta %g: must be in (0, 1/n) = (0, %g)", p->delta, 1.0 / n_exp);
    const double q = (double)p->expected_batch / n_exp;
    const int spe = dp_train_steps_per_epoch((size_t)llround(n_exp), p->expected_batch);
    const long steps = (long)spe * p->epochs;
    double sigma = p->noise_multiplier;
    dp_status st = DP_OK;
    if (!(sigma > 0) &&
        (st = dp_calibrate_sigma_kind(p->accountant, p->target_epsilon, p->delta, q, steps, 0.01, &sigma)) != DP_OK)
        return st;

    dp_accountant *acc = NULL;
    dp_optim *opt = NULL;
    size_t *members = NULL, *idx = NULL, *src = NULL, *can = NULL;
    size_t *supp = NULL; /* gradient canaries: k coordinates each */
    float *sgn = NULL;
    int32_t *lab = NULL;
    unsigned char *in = NULL;
    float *real = NULL, *loss0 = NULL, *loss1 = NULL, *xb = NULL, *sc = NULL;
    double *llr = NULL, *peps = NULL, *pdel = NULL;
    dp_csprng *crng = NULL;
    dp_step sp;
    memset(&sp, 0, sizeof sp);
    const size_t xcap = 256; /* rows of xb: the canaries' losses, in chunks */
    dp_audit_result r;
    memset(&r, 0, sizeof r);
    if ((st = dp_accountant_create(&acc)) != DP_OK || (st = dp_optim_create(&p->optim, np, &opt)) != DP_OK) goto done;
    members = dp_alloc(sizeof(size_t) * (n + (size_t)mc));
    idx = dp_alloc(sizeof(size_t) * (n + (size_t)mc));
    in = dp_alloc((size_t)mc);
    sc = dp_alloc(sizeof(float) * (size_t)mc);
    can = dp_alloc(sizeof(size_t) * (size_t)mc);
    if (!members || !idx || !in || !sc || !can) goto nomem;
    if (input) {
        src = dp_alloc(sizeof(size_t) * (size_t)mc);
        lab = dp_alloc(sizeof(int32_t) * (size_t)mc);
        loss0 = dp_alloc(sizeof(float) * (size_t)mc);
        loss1 = dp_alloc(sizeof(float) * (size_t)mc);
        xb = dp_alloc(sizeof(float) * xcap * dim);
        if (!src || !lab || !loss0 || !loss1 || !xb) goto nomem;
    } else {
        llr = dp_calloc((size_t)mc, sizeof(double));
        real = dp_alloc(sizeof(float) * (np ? np : 1));
        if (!llr || !real) goto nomem;
    }

    /* noise, sampling and dropout as dp_train draws them: from the OS-seeded CSPRNG unless a
     * noise seed is given; the canaries (inclusion, directions, images, labels) from `seed` */
    dp_rng root, rc, rs, rn, rd;
    dp_rng_seed(&root, p->noise_seeded ? p->noise_seed : p->seed);
    dp_rng_split(&root, &rs); /* sampling (as dp_train) */
    dp_rng_split(&root, &rn); /* noise */
    dp_rng_split(&root, &rd); /* dropout */
    dp_rng_seed(&rc, p->seed ^ 0x63616e617279ULL); /* canaries */
    if (!p->noise_seeded && (st = dp_csprng_create(&crng)) != DP_OK) goto done;
    size_t N = 0;
    for (size_t i = 0; i < n; i++) members[N++] = i;
    for (int j = 0; j < mc; j++) {
        in[j] = dp_rng_uniform(&rc) < 0.5;
        if (in[j]) members[N++] = n + (size_t)j;
        r.included += in[j];
    }
    const unsigned char *mask = dp_model_trainable_mask(model);
    size_t d_train = 0;
    for (size_t t = 0; t < np; t++) d_train += mask[t] != 0;
    if (d_train == 0) {
        st = dp_fail(DP_ERR_INVALID, "audit: the model has no trainable parameters");
        goto done;
    }
    const double C = p->max_grad_norm;
    int kc = 0; /* coordinates per gradient canary */
    if (input) {
        /* canary j: a pool row (a random permutation, cycled when m > pool size) with a
         * wrong label drawn uniformly among the other K-1 classes */
        size_t *perm = dp_alloc(sizeof(size_t) * pool->n);
        if (!perm) goto nomem;
        for (size_t i = 0; i < pool->n; i++) perm[i] = i;
        for (size_t i = 0; i < pool->n && i < (size_t)mc; i++) {
            size_t k = i + (size_t)(dp_rng_u64(&rc) % (uint64_t)(pool->n - i));
            size_t t = perm[i];
            perm[i] = perm[k];
            perm[k] = t;
        }
        for (int j = 0; j < mc; j++) src[j] = perm[(size_t)j % pool->n];
        dp_free(perm);
        for (int j = 0; j < mc; j++) {
            lab[j] = (int32_t)((pool->y[src[j]] + 1 + (int32_t)(dp_rng_u64(&rc) % (uint64_t)(K - 1))) % K);
        }
        if ((st = canary_losses(model, pool, src, lab, mc, xb, xcap, loss0)) != DP_OK) goto done;
    } else {
        /* canary j: unit vector with k = d/m (1..64) entries +-1/sqrt(k) on coordinates
         * taken from one random permutation of the trainable coordinates, so canaries are
         * orthogonal while m k <= d (the permutation is cycled beyond that) */
        kc = (int)(d_train / (size_t)mc);
        kc = kc < 1 ? 1 : kc > 64 ? 64 : kc;
        size_t *perm = dp_alloc(sizeof(size_t) * d_train);
        supp = dp_alloc(sizeof(size_t) * (size_t)mc * (size_t)kc);
        sgn = dp_alloc(sizeof(float) * (size_t)mc * (size_t)kc);
        if (!perm || !supp || !sgn) {
            dp_free(perm);
            goto nomem;
        }
        size_t k = 0;
        for (size_t t = 0; t < np; t++)
            if (mask[t]) perm[k++] = t;
        for (size_t i = 0; i + 1 < d_train; i++) {
            size_t j = i + (size_t)(dp_rng_u64(&rc) % (uint64_t)(d_train - i));
            size_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        const float a = (float)(1.0 / sqrt((double)kc));
        for (size_t i = 0; i < (size_t)mc * (size_t)kc; i++) {
            supp[i] = perm[i % d_train];
            sgn[i] = (dp_rng_u64(&rc) >> 63) ? a : -a;
        }
        dp_free(perm);
    }

    /* the training itself: dp_train's step (src/step.c), with the gradient canaries added to
     * the clipped sum and the released gradient observed through its hooks */
    audit_hooks h = {tr,   pool, src, lab, can,   0,         supp,          sgn,          kc, (float)(canary_scale * C),
                     real, llr,  q * n_exp, mc, 1 / C, 1 / (sigma * sigma), q};
    sp.model = model;
    sp.opt = opt;
    sp.acc = acc;
    sp.clip = (dp_clip_params){p->clipping, C, 0};
    sp.sigma = sigma;
    sp.q = q;
    sp.expected = q * n_exp;
    sp.physical_batch = p->physical_batch;
    sp.row = audit_row;
    sp.row_user = &h;
    sp.crng = crng;
    sp.rn = &rn;
    sp.rd = &rd;
    sp.on_clipped = audit_clipped;
    sp.on_released = audit_released;
    sp.hook_user = &h;
    sp.noise_scale = noise_scale;
    for (long step = 0; step < steps; step++) {
        size_t count;
        if (crng) st = dp_secure_poisson_sample(crng, N, q, idx, &count);
        else st = dp_poisson_sample(&rs, N, q, idx, &count);
        if (st != DP_OK) goto done;
        /* real examples (and input canaries) go through the model; gradient canaries are
         * added to the clipped sum by audit_clipped */
        size_t nf = 0, ncan = 0;
        for (size_t i = 0; i < count; i++) {
            size_t e = members[idx[i]];
            if (e >= n && !input) can[ncan++] = e - n;
            else idx[nf++] = e; /* nf <= i: in place */
        }
        h.ncan = ncan;
        dp_step_stats ss;
        if ((st = dp_step_run(&sp, idx, nf, &ss)) != DP_OK) {
            st = dp_fail(st, "audit step %ld: %s", step + 1, dp_last_error());
            goto done;
        }
    }

    if (input) {
        if ((st = canary_losses(model, pool, src, lab, mc, xb, xcap, loss1)) != DP_OK) goto done;
        for (int j = 0; j < mc; j++) sc[j] = loss0[j] - loss1[j];
    } else {
        for (int j = 0; j < mc; j++) sc[j] = (float)llr[j];
    }
    dp_epsilon_report er;
    if ((st = dp_accountant_epsilon_kind(acc, p->accountant, p->delta, &er)) != DP_OK) goto done;
    r.epsilon = er.epsilon; /* the bound dp_train reports for the same run */
    {
        /* The claim under test: the whole privacy profile the accountant certifies for this
         * run, delta(eps) on a grid of eps (upper bounds: PRV's delta at eps - eps_error plus
         * its delta error), and the quoted (epsilon, delta) itself. Any finite set of
         * certified points is a true claim, so the test stays valid however coarse the grid;
         * a finer one only adds power (0.05 apart: within 0.5% of the limit in the tests'
         * Gaussian example). RDP has no composition to share: each delta is a bisection over
         * its conversion (~25 ms here), so its grid is 0.25 apart (about 2 s at the default). */
        const double top = isfinite(r.epsilon) ? fmin(4 * r.epsilon + 8, 64) : 64;
        const double hstep = fmax(p->accountant == DP_ACCT_RDP ? 0.25 : 0.05, top / 1000);
        const size_t ng = (size_t)(top / hstep) + 1;
        peps = dp_alloc(sizeof(double) * (ng + 1));
        pdel = dp_alloc(sizeof(double) * (ng + 1));
        if (!peps || !pdel) goto nomem;
        for (size_t i = 0; i < ng; i++) peps[i] = (double)i * hstep;
        if ((st = dp_accountant_delta_many(acc, p->accountant, peps, ng, NULL, pdel)) != DP_OK) goto done;
        size_t np_ = ng;
        if (isfinite(r.epsilon)) {
            peps[np_] = r.epsilon;
            pdel[np_++] = p->delta;
        }
        const dp_fdp_profile prof = {peps, pdel, np_};
        if ((st = dp_audit_guess_profile(sc, in, mc, p->guesses, p->delta, p->confidence, &prof, &r)) != DP_OK)
            goto done;
        r.profile_points = (int)np_;
    }
    r.delta = p->delta;
    r.sigma = sigma;
    r.q = q;
    r.steps = steps;
    r.num_canaries = mc;
    r.seconds = dp__now_s() - t0;
    if (scores_out) memcpy(scores_out, sc, sizeof(float) * (size_t)mc);
    if (in_out) memcpy(in_out, in, (size_t)mc);
    *result = r;
    goto done;
nomem:
    st = dp_fail(DP_ERR_NOMEM, "audit: out of memory");
done:
    dp_accountant_destroy(acc);
    dp_optim_destroy(opt);
    dp_free(members);
    dp_free(idx);
    dp_free(src);
    dp_free(supp);
    dp_free(sgn);
    dp_free(lab);
    dp_free(can);
    dp_free(real);
    dp_csprng_destroy(crng);
    dp_step_free(&sp);
    dp_free(in);
    dp_free(loss0);
    dp_free(loss1);
    dp_free(xb);
    dp_free(sc);
    dp_free(llr);
    dp_free(peps);
    dp_free(pdel);
    return st;
}
