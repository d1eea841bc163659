/* accountant.c: the accountant of include/dpsgd/accounting.h: the kinds (one table made from
 * DP_ACCOUNTANT_LIST), the (q, sigma, steps) history, and the one call for epsilon and the one
 * for delta, which check their arguments and hand the history to the kind (src/acct_<name>.c).
 * Calibration is in src/privacy/acct_calibrate.c. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "privacy/acct.h"

/* ---- the kinds ----------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int bound;
    dp_status (*epsilon)(const acct_history *h, double delta, const dp_accounting_params *prm, dp_epsilon_report *r);
    dp_status (*delta)(const acct_history *h, const double *eps, size_t n_eps, int sweep,
                       const dp_accounting_params *prm, double *delta);
} kind_row;

static const kind_row kinds[] = {
#define DP__ROW(kind, name, bound) {#name, bound, dp__acct_##name##_epsilon, dp__acct_##name##_delta},
    DP_ACCOUNTANT_LIST(DP__ROW)
#undef DP__ROW
};
_Static_assert(sizeof kinds / sizeof kinds[0] == DP_ACCT_COUNT, "every accountant kind needs a row");

/* "rdp, prv, pld, gdp" and the bounds among them, as string literals made from the list (each
 * name after ", "; the functions below skip the first) */
#define DP__IF_0(x)
#define DP__IF_1(x)                  x
#define DP__IF(bound, x)             DP__IF_##bound(x)
#define DP__ALL(kind, name, bound)   ", " #name
#define DP__BOUND(kind, name, bound) DP__IF(bound, ", " #name)
static const char all_names[] = DP_ACCOUNTANT_LIST(DP__ALL);
static const char bound_names[] = "" DP_ACCOUNTANT_LIST(DP__BOUND);
#undef DP__ALL
#undef DP__BOUND
#undef DP__IF
#undef DP__IF_0
#undef DP__IF_1
_Static_assert(sizeof bound_names > 2, "at least one accountant must be a bound (to calibrate sigma)");

const char *dp_accountant_kind_names(int bounds_only) { return (bounds_only ? bound_names : all_names) + 2; }

const char *dp_accountant_kind_name(dp_accountant_kind k) { return (unsigned)k < DP_ACCT_COUNT ? kinds[k].name : NULL; }

int dp_accountant_kind_is_bound(dp_accountant_kind k) { return (unsigned)k < DP_ACCT_COUNT && kinds[k].bound; }

dp_status dp_accountant_kind_parse(const char *s, dp_accountant_kind *out) {
    for (int k = 0; s && k < DP_ACCT_COUNT; k++)
        if (!strcmp(s, kinds[k].name)) {
            *out = (dp_accountant_kind)k;
            return DP_OK;
        }
    return dp_fail(DP_ERR_INVALID, "accountant '%s' is not one of %s", s ? s : "(null)", all_names + 2);
}

dp_accounting_params dp_accounting_default_params(void) {
    dp_accounting_params p = {0.01, 0.0, (size_t)1 << 22};
    return p;
}

/* ---- the history --------------------------------------------------------------------------- */

static dp_status check_q(double q) {
    if (!(q >= 0.0 && q <= 1.0)) return dp_fail(DP_ERR_RANGE, "sample rate %g is outside [0, 1]", q);
    return DP_OK;
}
static dp_status check_sigma(double sigma) {
    if (!(sigma > 0.0) || !isfinite(sigma))
        return dp_fail(DP_ERR_RANGE, "noise multiplier %g must be finite and > 0", sigma);
    return DP_OK;
}
static dp_status check_steps(long steps) {
    if (steps < 0) return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 0", steps);
    return DP_OK;
}

dp_status dp_accountant_create(dp_accountant **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "accountant create: out is NULL");
    dp_accountant *a = dp_calloc(1, sizeof *a);
    if (!a) return DP_ERR_NOMEM;
    *out = a;
    return DP_OK;
}

void dp_accountant_destroy(dp_accountant *a) {
    if (!a) return;
    dp_free(a->hist);
    dp_free(a);
}

dp_status dp_accountant_step(dp_accountant *a, double q, double sigma, long steps) {
    dp_status st;
    if (!a) return dp_fail(DP_ERR_INVALID, "accountant step: accountant is NULL");
    if ((st = check_q(q)) || (st = check_sigma(sigma)) || (st = check_steps(steps))) return st;
    if (steps > LONG_MAX - a->total) return dp_fail(DP_ERR_RANGE, "steps: total %ld + %ld overflows", a->total, steps);
    if (steps == 0) return DP_OK;
    if (a->len > 0 && a->hist[a->len - 1].q == q && a->hist[a->len - 1].sigma == sigma) {
        a->hist[a->len - 1].steps += steps;
    } else {
        if (a->len == a->cap) {
            size_t ncap = a->cap ? 2 * a->cap : 8;
            acct_entry *nh = dp_alloc(ncap * sizeof *nh);
            if (!nh) return DP_ERR_NOMEM;
            if (a->len) memcpy(nh, a->hist, a->len * sizeof *nh);
            dp_free(a->hist);
            a->hist = nh;
            a->cap = ncap;
        }
        if (a->len > 0) {
            const acct_entry *last = &a->hist[a->len - 1];
            dp__acct_rdp_accumulate(a->closed_rdp, last->q, last->sigma, last->steps);
        }
        a->hist[a->len++] = (acct_entry){q, sigma, steps};
    }
    a->total += steps;
    return DP_OK;
}

long dp_accountant_total_steps(const dp_accountant *a) { return a ? a->total : 0; }

size_t dp_accountant_history_len(const dp_accountant *a) { return a ? a->len : 0; }

void dp_accountant_history_get(const dp_accountant *a, size_t i, double *q, double *sigma, long *steps) {
    DP_ASSERT(a != NULL && i < a->len);
    if (q) *q = a->hist[i].q;
    if (sigma) *sigma = a->hist[i].sigma;
    if (steps) *steps = a->hist[i].steps;
}

/* Entries with q > 0 and steps > 0 (the others lose no privacy); h->e NULL when h->n == 0. */
dp_status dp__acct_history_load(const dp_accountant *a, acct_history *h) {
    size_t len = dp_accountant_history_len(a), m = 0;
    long tot = 0;
    acct_entry *e = NULL;
    if (len) {
        e = dp_alloc(len * sizeof *e);
        if (!e) return DP_ERR_NOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        double q, s;
        long st;
        dp_accountant_history_get(a, i, &q, &s, &st);
        if (q > 0.0 && st > 0) {
            e[m].q = q;
            e[m].sigma = s;
            e[m].steps = st;
            tot += st;
            m++;
        }
    }
    if (!m) {
        dp_free(e);
        e = NULL;
    }
    h->a = a;
    h->e = e;
    h->n = m;
    h->total = tot;
    return DP_OK;
}

void dp__acct_history_free(acct_history *h) {
    dp_free((void *)h->e);
    h->e = NULL;
    h->n = 0;
}

/* ---- epsilon and delta --------------------------------------------------------------------- */

static dp_status check_common(const dp_accountant *a, dp_accountant_kind k) {
    if (!a) return dp_fail(DP_ERR_INVALID, "accounting: accountant is NULL");
    if ((unsigned)k >= DP_ACCT_COUNT)
        return dp_fail(DP_ERR_INVALID, "accountant kind %d is not one of %s", (int)k, all_names + 2);
    return DP_OK;
}

dp_status dp_accountant_epsilon(const dp_accountant *a, dp_accountant_kind k, double delta,
                                const dp_accounting_params *params, dp_epsilon_report *out) {
    dp_status st;
    if ((st = check_common(a, k))) return st;
    if (!out) return dp_fail(DP_ERR_INVALID, "accounting: out is NULL");
    if (!(delta > 0.0 && delta < 1.0)) return dp_fail(DP_ERR_RANGE, "delta %g is outside (0, 1)", delta);
    dp_accounting_params prm = params ? *params : dp_accounting_default_params();
    if (!(prm.eps_error > 0.0) || !isfinite(prm.eps_error))
        return dp_fail(DP_ERR_RANGE, "eps_error %g must be finite and > 0", prm.eps_error);
    if (prm.delta_error == 0.0) prm.delta_error = delta / 1000.0;
    if (!(prm.delta_error > 0.0 && prm.delta_error < delta))
        return dp_fail(DP_ERR_RANGE, "delta_error %g must be in (0, delta = %g)", prm.delta_error, delta);
    acct_history h;
    if ((st = dp__acct_history_load(a, &h))) return st;
    dp_epsilon_report r;
    st = kinds[k].epsilon(&h, delta, &prm, &r);
    dp__acct_history_free(&h);
    if (st) return st;
    *out = r;
    return DP_OK;
}

/* the accounting parameters of a delta query: the defaults, or *params checked */
static dp_status delta_params(const dp_accounting_params *params, dp_accounting_params *prm) {
    *prm = params ? *params : dp_accounting_default_params();
    if (prm->delta_error == 0.0) prm->delta_error = 1e-10;
    if (!(prm->eps_error > 0.0) || !isfinite(prm->eps_error) || !(prm->delta_error > 0.0 && prm->delta_error < 1.0))
        return dp_fail(DP_ERR_RANGE, "eps_error %g / delta_error %g out of range", prm->eps_error, prm->delta_error);
    return DP_OK;
}

/* delta at n epsilons (checked: >= 0, not NaN); sweep: a profile (acct.h) */
static dp_status deltas(const dp_accountant *a, dp_accountant_kind k, const double *eps, size_t n, int sweep,
                        const dp_accounting_params *params, double *delta) {
    dp_status st;
    dp_accounting_params prm;
    if ((st = delta_params(params, &prm))) return st;
    acct_history h;
    if ((st = dp__acct_history_load(a, &h))) return st;
    if (h.n == 0) { /* nothing at risk */
        for (size_t i = 0; i < n; i++) delta[i] = 0.0;
    } else {
        st = kinds[k].delta(&h, eps, n, sweep, &prm, delta);
    }
    dp__acct_history_free(&h);
    return st;
}

dp_status dp_accountant_delta(const dp_accountant *a, dp_accountant_kind k, double epsilon,
                              const dp_accounting_params *params, double *delta) {
    dp_status st;
    if ((st = check_common(a, k))) return st;
    if (!delta) return dp_fail(DP_ERR_INVALID, "accounting: delta is NULL");
    if (!(epsilon >= 0.0)) return dp_fail(DP_ERR_RANGE, "epsilon %g must be >= 0 (and not NaN)", epsilon);
    double d;
    if ((st = deltas(a, k, &epsilon, 1, 0, params, &d))) return st;
    *delta = d;
    return DP_OK;
}

dp_status dp_accountant_delta_many(const dp_accountant *a, dp_accountant_kind k, const double *eps, size_t n,
                                   const dp_accounting_params *params, double *delta) {
    dp_status st;
    if ((st = check_common(a, k))) return st;
    if (!eps || !delta) return dp_fail(DP_ERR_INVALID, "accounting: eps or delta is NULL");
    for (size_t i = 0; i < n; i++)
        if (!(eps[i] >= 0.0)) return dp_fail(DP_ERR_RANGE, "epsilon %g must be >= 0 (and not NaN)", eps[i]);
    return deltas(a, k, eps, n, 1, params, delta);
}
