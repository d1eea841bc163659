/* accounting.c: PRV, PLD and GDP accountants over a dp_accountant's (q, sigma, steps)
 * history, the dispatch to RDP, and calibration with any accountant.
 *
 * The privacy loss of one step (the "remove" pair P = (1-q)N(0,s^2) + qN(1,s^2) against
 * Q = N(0,s^2)) at an outcome x is
 *     T(x) = log(1 - q + q exp(u)),   u = (2x - 1) / (2 s^2),
 * increasing in x. Its distribution under P (Gopi et al. 2021, Prop. B1/B4):
 *     z(t) = log((e^t + q - 1) / q)          for t > log(1 - q)   (T <= t  <=>  u <= z)
 *     a = (2 z s^2 - 1) / (2 sqrt2 s),  b = (2 z s^2 + 1) / (2 sqrt2 s)
 *     cdf(t) = q/2 erfc(-a) + (1-q)/2 erfc(-b),   sf(t) = q/2 erfc(a) + (1-q)/2 erfc(b)
 * Both are evaluated directly (no 1 - x cancellation); bin masses use the cdf below the
 * median of T and the sf above it.
 *
 * Grid: points t_j = t0 + j dt, j = 0..n-1, t0 = -k dt (k = ceil(L / dt)), n >= 2k + 2
 * rounded up to a 2^a 3^b 5^c 7^d size for FFTW. L is Opacus' safe domain size
 * (compute_safe_domain_size: RDP epsilons at delta_error/4 for the whole history and at
 * delta_error/(8 N) for single steps, + 3). The pmf of every history entry is transformed
 * (r2c), raised to its step count by binary powering, multiplied into one spectrum and
 * transformed back once: a circular convolution, whose sum index S maps to grid index
 * S - (N - 1) k (mod n), undone by one rotation. (Opacus composes each entry the same way,
 * then combines entries by linear convolutions; the difference is mass that wraps around
 * the window, which the domain size makes negligible.)
 *
 * PRV (Opacus PRVAccountant): the PRV truncated to [t_0, t_{n-1}], midpoint bins
 * (t_j - dt/2, t_j + dt/2], then the grid shifted by (continuous mean - discrete mean);
 * mesh dt = eps_error / sqrt(N log(12 / delta_error) / 2). Epsilon for delta on the
 * discrete PRV solves sum_{t_j >= e} p_j (1 - e^{e - t_j}) = delta exactly;
 *     upper = eps(delta - delta_error) + eps_error, lower = eps(delta + delta_error) - eps_error.
 * PLD (pessimistic, as Google dp_accounting): bins (t_j - dt, t_j] put at t_j (losses rounded
 * up), mass below t_0 put at t_0, mass above t_{n-1} is the infinite-loss mass (added to
 * delta), and so is a Chernoff bound on the composed mass past the top of the window (which
 * the circular convolution would wrap to the bottom). Losses rounded down are the same pmf
 * one bin lower, so after N steps the optimistic composition is the pessimistic one shifted
 * by N dt: lower bound for free.
 * This file must be compiled without -ffast-math.
 */
#define _POSIX_C_SOURCE 200809L
#include "dpsgd/accounting.h"

#include <complex.h> /* before fftw3.h: fftw_complex is then the C99 double complex */
#include <fftw3.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#define DP_PI 3.14159265358979323846

/* ---- names ------------------------------------------------------------------------- */

static const char *const kind_names[] = {"rdp", "prv", "pld", "gdp"};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == DP_ACCT_COUNT,
               "every accountant kind needs a name");

const char *dp_accountant_kind_name(dp_accountant_kind k) {
    return (unsigned)k < DP_ACCT_COUNT ? kind_names[k] : NULL;
}

dp_status dp_accountant_kind_parse(const char *s, dp_accountant_kind *out) {
    for (int k = 0; s && k < DP_ACCT_COUNT; k++)
        if (!strcmp(s, kind_names[k])) {
            *out = (dp_accountant_kind)k;
            return DP_OK;
        }
    return dp_fail(DP_ERR_INVALID, "accountant '%s' is not one of rdp, prv, pld, gdp",
                   s ? s : "(null)");
}

dp_accounting_params dp_accounting_default_params(void) {
    dp_accounting_params p = {0.01, 0.0, (size_t)1 << 22};
    return p;
}

/* ---- history ----------------------------------------------------------------------- */

typedef struct {
    double q, sigma;
    long steps;
} entry;

/* Entries with q > 0 and steps > 0 (the others lose no privacy). *out: dp_alloc'd, or
 * NULL when *n == 0. */
static dp_status load_history(const dp_accountant *a, entry **out, size_t *n, long *total) {
    size_t len = dp_accountant_history_len(a), m = 0;
    long tot = 0;
    entry *e = NULL;
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
    *out = e;
    *n = m;
    *total = tot;
    return DP_OK;
}

/* RDP epsilon of the entries (each with its steps, or with 1 step each if one_step). */
static dp_status rdp_eps_entries(const entry *e, size_t n, double delta, double *eps) {
    dp_accountant *acc = NULL;
    dp_status st = dp_accountant_create(&acc);
    if (st) return st;
    for (size_t i = 0; i < n && !st; i++) st = dp_accountant_step(acc, e[i].q, e[i].sigma, e[i].steps);
    if (!st) st = dp_accountant_epsilon(acc, delta, eps, NULL);
    dp_accountant_destroy(acc);
    return st;
}

/* ---- the PRV of one step ------------------------------------------------------------- */

typedef struct {
    double q, sigma, log1mq; /* log(1 - q): T > log1mq always (-inf when q = 1) */
} prv1;

static double prv_z(const prv1 *p, double t) {
    if (p->q == 1.0) return t;
    return log(expm1(t) + p->q) - log(p->q);
}

static double prv_cdf(const prv1 *p, double t) {
    if (!(t > p->log1mq)) return 0.0;
    const double s = p->sigma, z = prv_z(p, t), c = 2.0 * sqrt(2.0) * s;
    const double a = (2.0 * z * s * s - 1.0) / c, b = (2.0 * z * s * s + 1.0) / c;
    return 0.5 * p->q * erfc(-a) + 0.5 * (1.0 - p->q) * erfc(-b);
}

static double prv_sf(const prv1 *p, double t) {
    if (!(t > p->log1mq)) return 1.0;
    const double s = p->sigma, z = prv_z(p, t), c = 2.0 * sqrt(2.0) * s;
    const double a = (2.0 * z * s * s - 1.0) / c, b = (2.0 * z * s * s + 1.0) / c;
    return 0.5 * p->q * erfc(a) + 0.5 * (1.0 - p->q) * erfc(b);
}

/* loss T at outcome x */
static double prv_loss(const prv1 *p, double x) {
    const double u = (2.0 * x - 1.0) / (2.0 * p->sigma * p->sigma);
    if (p->q == 1.0) return u;
    if (u > 0.0) return u + log(p->q + (1.0 - p->q) * exp(-u));
    return log1p(p->q * expm1(u));
}

/* outcome x with T(x) = t (-inf below the support) */
static double prv_x_of_t(const prv1 *p, double t) {
    if (!(t > p->log1mq)) return -INFINITY;
    return p->sigma * p->sigma * prv_z(p, t) + 0.5;
}

/* Mean of T truncated to [tlo, thi]: Simpson's rule over x, in the range where P has mass. */
static double prv_truncated_mean(const prv1 *p, double tlo, double thi) {
    const double s = p->sigma;
    double a = fmax(-12.0 * s, prv_x_of_t(p, tlo)), b = fmin(1.0 + 12.0 * s, prv_x_of_t(p, thi));
    if (!(b > a)) return 0.5 * (tlo + thi);
    double h = fmin(s, s * s) / 64.0;
    double mf = ceil((b - a) / h);
    long m = mf > (double)(1 << 21) ? (1 << 21) : (long)mf;
    if (m < 64) m = 64;
    m += m & 1;
    h = (b - a) / (double)m;
    const double inv = 1.0 / (s * sqrt(2.0 * DP_PI));
    double num = 0.0, den = 0.0;
    for (long i = 0; i <= m; i++) {
        const double x = a + (double)i * h;
        const double w = (i == 0 || i == m) ? 1.0 : (i & 1) ? 4.0 : 2.0;
        const double d0 = (x / s), d1 = ((x - 1.0) / s);
        const double dens = inv * ((1.0 - p->q) * exp(-0.5 * d0 * d0) + p->q * exp(-0.5 * d1 * d1));
        num += w * dens * prv_loss(p, x);
        den += w * dens;
    }
    return den > 0.0 ? num / den : 0.5 * (tlo + thi);
}

/* t with cdf(t) = target, by bisection on [lo, hi] (cdf(lo) <= target <= cdf(hi) assumed) */
static double prv_quantile_cdf(const prv1 *p, double lo, double hi, double target) {
    for (int it = 0; it < 200 && hi - lo > 1e-12 * fmax(1.0, fabs(hi)); it++) {
        double mid = 0.5 * (lo + hi);
        if (prv_cdf(p, mid) < target) lo = mid;
        else hi = mid;
    }
    return hi;
}

static double prv_quantile_sf(const prv1 *p, double lo, double hi, double target) {
    for (int it = 0; it < 200 && hi - lo > 1e-12 * fmax(1.0, fabs(hi)); it++) {
        double mid = 0.5 * (lo + hi);
        if (prv_sf(p, mid) > target) lo = mid;
        else hi = mid;
    }
    return hi;
}

/* Mass above this survival probability is kept; below it PRV drops it, PLD counts it as
 * infinite loss. */
#define TAIL_CUT 1e-40

/* Grid index (clamped to [0, n]) of the first point >= t on t0 + j dt, offset f. */
static size_t grid_index(double t, double t0, double dt, double f, size_t n) {
    double j = ceil((t - t0) / dt + f);
    if (!(j > 0.0)) return 0;
    if (j >= (double)n) return n;
    return (size_t)j;
}

/* Discretises one step onto pmf[0..n) (overwritten). pld = 0: PRV (midpoint bins,
 * truncated, normalised; *shift = mean correction); pld = 1: pessimistic (bins
 * (t_j - dt, t_j]; *inf_mass = mass above the grid). */
static void discretize(const prv1 *p, double t0, double dt, size_t n, int pld, double *pmf,
                       double *shift, double *inf_mass) {
    memset(pmf, 0, n * sizeof *pmf);
    const double f = pld ? 1.0 : 0.5; /* left edge of bin j: t0 + (j - f) dt */
    const double tmax = t0 + (double)(n - 1) * dt;
    double lo = fmax(p->log1mq, t0 - dt * f - dt);
    if (!isfinite(lo)) lo = t0 - dt * f - dt;
    /* active bins: [jlo, jhi) */
    size_t jlo = grid_index(p->log1mq, t0 + dt * (1.0 - f), dt, 0.0, n);
    if (jlo > 0) jlo--;
    double tcut = tmax + dt;
    if (prv_sf(p, tcut) < TAIL_CUT) tcut = prv_quantile_sf(p, lo, tcut, TAIL_CUT);
    size_t jhi = grid_index(tcut, t0, dt, f, n) + 1;
    if (jhi > n) jhi = n;
    const double tmed = prv_quantile_cdf(p, lo, fmax(tcut, lo + dt), 0.5);

    /* value at an edge: cdf below the median (side 0), sf above (side 1) */
    double prev_v = 0.0;
    int prev_side = 0;
    for (size_t j = jlo; j <= jhi && j <= n; j++) {
        double e = t0 + ((double)j - f) * dt;
        if (!pld) e = fmin(fmax(e, t0), tmax); /* truncation to [t0, tmax] (Opacus) */
        if (pld && j == 0) e = -INFINITY; /* everything below goes to t_0 (rounded up) */
        const int side = e >= tmed;
        const double v = side ? prv_sf(p, e) : prv_cdf(p, e);
        if (j > jlo) {
            double m;
            if (!prev_side && !side) m = v - prev_v;
            else if (prev_side && side) m = prev_v - v;
            else m = (1.0 - v) - prev_v;
            pmf[j - 1] = m > 0.0 ? m : 0.0;
        }
        prev_v = v;
        prev_side = side;
    }
    if (pld) {
        /* mass above the last evaluated edge (t_{n-1} when jhi == n) */
        *inf_mass = prv_sf(p, t0 + ((double)jhi - f) * dt);
        *shift = 0.0;
    } else {
        double tot = 0.0, md = 0.0;
        for (size_t j = jlo; j < jhi; j++) tot += pmf[j];
        if (tot > 0.0)
            for (size_t j = jlo; j < jhi; j++) {
                pmf[j] /= tot;
                md += (t0 + (double)j * dt) * pmf[j];
            }
        *shift = prv_truncated_mean(p, t0, tmax) - md;
        *inf_mass = 0.0;
    }
}

/* ---- FFT composition ------------------------------------------------------------------ */

static pthread_mutex_t fftw_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t next_smooth(size_t n) {
    for (;; n++) {
        if (n & 1) continue;
        size_t m = n;
        for (size_t f = 2; f <= 7; f++)
            while (m % f == 0) m /= f;
        if (m == 1) return n;
    }
}

static void cpow_long(fftw_complex *c, size_t nc, long e) {
    for (size_t i = 0; i < nc; i++) {
        double complex b = c[i], r = 1.0;
        for (long k = e; k; k >>= 1) {
            if (k & 1) r *= b;
            b *= b;
        }
        c[i] = r;
    }
}

static void reverse(double *x, size_t a, size_t b) { /* [a, b) */
    while (a + 1 < b) {
        double t = x[a];
        x[a++] = x[--b];
        x[b] = t;
    }
}

/* Chernoff orders lambda = 2^(m - WRAP_LAM0), m = 0 .. WRAP_ORDERS - 1 (1/8 .. 256), for the
 * bound on the mass a PLD composition carries past the top of its window (smaller orders only
 * help for tails within a few standard deviations, where the bound is large anyway). */
#define WRAP_ORDERS 12
#define WRAP_LAM0 3

/* out[m] >= log sum_j pmf[j] e^{lambda_m t_j} (t_j = t0 + j dt): the log moment generating
 * function of one step's discrete (sub-probability) pmf, at every Chernoff order. Summed from
 * the top bin down with e^{-lambda dt} as a running factor; once the factor is below 1e-18 of
 * the sum, the rest of the sum is at most the factor (the remaining mass is <= 1) and is
 * added as such (a fraction of the pass instead of all of it), and the slack covers the
 * rounding of the running factor. */
static void log_mgf(const double *pmf, size_t n, double t0, double dt, double *out) {
    size_t top = n;
    while (top > 0 && !(pmf[top - 1] > 0.0)) top--;
    const double ttop = t0 + (double)top * dt - dt, slack = 4.0 * (double)top * DBL_EPSILON;
    for (int m = 0; m < WRAP_ORDERS; m++) {
        if (!top) {
            out[m] = -INFINITY;
            continue;
        }
        const double lam = ldexp(1.0, m - WRAP_LAM0), f = exp(-lam * dt);
        double s = 0.0, w = 1.0;
        for (size_t j = top; j-- > 0;) {
            s += pmf[j] * w;
            w *= f;
            if (w < 1e-18 * s) {
                s += w;
                break;
            }
        }
        out[m] = lam * ttop + log(s) + slack;
    }
}

typedef struct {
    double *pmf;     /* [n] composed pmf on t0 + shift + j dt */
    size_t n;
    double t0, dt, shift, inf_mass, eps_error;
    long steps;
} composed;

static void composed_free(composed *c) {
    dp_free(c->pmf);
    c->pmf = NULL;
}

#define MAX_LOSS_DOMAIN 5000.0

/* The safe domain size L of the grid (Opacus compute_safe_domain_size), from RDP alone: cheap,
 * so calibration can find where PRV and PLD stop being computable without composing. */
static dp_status loss_domain(const entry *e, size_t ne, long total, double delta_error, double eps_error,
                             double *out) {
    dp_status st;
    double L, l1;
    if ((st = rdp_eps_entries(e, ne, delta_error / 4.0, &L))) return st;
    for (size_t i = 0; i < ne; i++) {
        entry one = e[i];
        one.steps = 1;
        if ((st = rdp_eps_entries(&one, 1, delta_error / (8.0 * (double)total), &l1))) return st;
        if (l1 > L) L = l1;
    }
    *out = fmax(L, eps_error) + 3.0;
    return DP_OK;
}

/* Builds the grid and composes the history. pld selects the discretisation. */
static dp_status compose(const entry *e, size_t ne, long total, int pld, double delta_error,
                         const dp_accounting_params *prm, composed *out) {
    dp_status st;
    double L;
    if ((st = loss_domain(e, ne, total, delta_error, prm->eps_error, &L))) return st;
    if (!(L <= MAX_LOSS_DOMAIN))
        return dp_fail(DP_ERR_RANGE,
                       "noise multiplier too small for the %s accountant: the privacy loss "
                       "domain would exceed %g (use rdp)",
                       pld ? "pld" : "prv", MAX_LOSS_DOMAIN);
    const size_t maxp = prm->max_points >= 64 ? prm->max_points : 64;
    double dt, err;
    const double tot = (double)total;
    if (!pld) {
        const double c = sqrt(tot * log(12.0 / delta_error) / 2.0);
        dt = prm->eps_error / c;
        if (2.0 * L / dt + 4.0 > (double)maxp) dt = 2.0 * L / ((double)maxp - 4.0);
        err = dt * c;
    } else {
        dt = prm->eps_error / tot;
        if (2.0 * L / dt + 4.0 > (double)maxp) dt = 2.0 * L / ((double)maxp - 4.0);
        err = 0.5 * dt * tot;
    }
    const size_t k = (size_t)ceil(L / dt);
    const size_t n = next_smooth(2 * k + 2), nc = n / 2 + 1;
    const double t0 = -(double)k * dt;

    double *r = dp_alloc(n * sizeof *r);
    fftw_complex *c = dp_alloc(nc * sizeof *c), *acc = dp_alloc(nc * sizeof *acc);
    if (!r || !c || !acc) {
        dp_free(r);
        dp_free(c);
        dp_free(acc);
        return DP_ERR_NOMEM;
    }
    pthread_mutex_lock(&fftw_lock);
    fftw_plan fwd = fftw_plan_dft_r2c_1d((int)n, r, c, FFTW_ESTIMATE);
    fftw_plan bwd = fftw_plan_dft_c2r_1d((int)n, acc, r, FFTW_ESTIMATE);
    pthread_mutex_unlock(&fftw_lock);

    double shift = 0.0, log_keep = 0.0, lmgf[WRAP_ORDERS], lbound[WRAP_ORDERS] = {0};
    for (size_t i = 0; i < ne; i++) {
        prv1 p = {e[i].q, e[i].sigma, log1p(-e[i].q)};
        double sh, inf;
        discretize(&p, t0, dt, n, pld, r, &sh, &inf);
        if (pld) {
            log_mgf(r, n, t0, dt, lmgf);
            for (int q = 0; q < WRAP_ORDERS; q++) lbound[q] += (double)e[i].steps * lmgf[q];
        }
        fftw_execute(fwd);
        cpow_long(c, nc, e[i].steps);
        if (i == 0) memcpy(acc, c, nc * sizeof *c);
        else
            for (size_t j = 0; j < nc; j++) acc[j] *= c[j];
        shift += sh * (double)e[i].steps;
        log_keep += (double)e[i].steps * log1p(-fmin(inf, 1.0));
    }
    fftw_execute(bwd);
    for (size_t j = 0; j < n; j++) r[j] /= (double)n;
    /* index S of the circular sum -> S - (N-1) k (mod n): rotate right by m */
    size_t m = (size_t)(((unsigned long long)(total - 1) % n) * (unsigned long long)(k % n) % n);
    m = (n - m) % n;
    if (m) { /* rotate right by m: reverse all, then the two parts */
        reverse(r, 0, n);
        reverse(r, 0, m);
        reverse(r, m, n);
    }
    pthread_mutex_lock(&fftw_lock);
    fftw_destroy_plan(fwd);
    fftw_destroy_plan(bwd);
    pthread_mutex_unlock(&fftw_lock);
    dp_free(c);
    dp_free(acc);
    out->pmf = r;
    out->n = n;
    out->t0 = t0;
    out->dt = dt;
    out->shift = shift;
    /* PLD: composed losses >= t0 + n dt wrap around the circular convolution to the bottom of
     * the window, where they would count for nothing (a coarse grid, whose rounding up moves
     * the composition by up to N dt, pushes much of it there). Their mass is at most
     * e^{-lambda T} prod_i M_i(lambda)^{N_i} (Chernoff); counted as infinite loss, the upper
     * bound stays an upper bound (the wrapped copy at the bottom only adds to delta). */
    double wrap = 0.0;
    if (pld) {
        const double T = t0 + (double)n * dt;
        double lw = INFINITY;
        for (int q = 0; q < WRAP_ORDERS; q++) lw = fmin(lw, lbound[q] - ldexp(1.0, q - WRAP_LAM0) * T);
        wrap = exp(lw);
    }
    out->inf_mass = fmin(1.0, -expm1(log_keep) + wrap);
    out->eps_error = err;
    out->steps = total;
    return DP_OK;
}

/* Epsilon at which the discrete distribution on t0 + j dt (plus inf_mass at +inf) has
 * delta = target: sum_{t_j >= e} p_j (1 - e^{e - t_j}) + inf = target. */
static double disc_eps(const composed *c, double t0, double inf_mass, double target) {
    const double tgt = target - inf_mass;
    if (!(tgt > 0.0)) return INFINITY;
    long double d1 = 0.0L, d2 = 0.0L;
    long j = (long)c->n - 1;
    for (; j >= 0; j--) {
        const double t = t0 + (double)j * c->dt;
        const long double em = expl(-(long double)t);
        const long double n1 = d1 + c->pmf[j], n2 = d2 + (long double)c->pmf[j] * em;
        const long double del = n1 - n2 / em;
        if (del > tgt) break;
        d1 = n1;
        d2 = n2;
    }
    if (j == (long)c->n - 1) return INFINITY;
    if (!(d2 > 0.0L) || !(d1 - tgt > 0.0L)) return -INFINITY;
    return (double)logl((d1 - tgt) / d2);
}

/* delta at epsilon of the discrete distribution */
static double disc_delta(const composed *c, double t0, double inf_mass, double eps) {
    long double d = 0.0L;
    for (long j = (long)c->n - 1; j >= 0; j--) {
        const double t = t0 + (double)j * c->dt;
        if (t < eps) break;
        d += (long double)c->pmf[j] * -expm1l((long double)eps - t);
    }
    double r = (double)d + inf_mass;
    return r < 0.0 ? 0.0 : r > 1.0 ? 1.0 : r;
}

/* ---- GDP ------------------------------------------------------------------------------ */

static double gdp_mu(const entry *e, size_t n) {
    double mu2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double s2 = e[i].sigma * e[i].sigma;
        mu2 += (double)e[i].steps *
               (e[i].q == 1.0 ? 1.0 / s2 : e[i].q * e[i].q * expm1(1.0 / s2));
    }
    return sqrt(mu2);
}

/* log Phi(y) */
static double log_ncdf(double y) {
    if (y > -20.0) return log(0.5 * erfc(-y / sqrt(2.0)));
    /* asymptotic: Phi(y) ~ phi(y)/|y| (1 - 1/y^2 + 3/y^4 - 15/y^6) */
    const double y2 = y * y;
    return -0.5 * y2 - log(-y) - 0.5 * log(2.0 * DP_PI) +
           log1p(-1.0 / y2 + 3.0 / (y2 * y2) - 15.0 / (y2 * y2 * y2));
}

static double gdp_delta(double mu, double eps) {
    if (mu == 0.0) return 0.0;
    if (isinf(mu)) return 1.0;
    double d = 0.5 * erfc((eps / mu - mu / 2.0) / sqrt(2.0)) -
               exp(eps + log_ncdf(-eps / mu - mu / 2.0));
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
        if (gdp_delta(mu, mid) > delta) lo = mid;
        else hi = mid;
    }
    return hi;
}

/* ---- public ------------------------------------------------------------------------- */

static dp_status check_common(const dp_accountant *a, dp_accountant_kind k) {
    if (!a) return dp_fail(DP_ERR_INVALID, "accounting: accountant is NULL");
    if ((unsigned)k >= DP_ACCT_COUNT)
        return dp_fail(DP_ERR_INVALID, "accountant kind %d is not one of rdp, prv, pld, gdp", (int)k);
    return DP_OK;
}

dp_status dp_accountant_epsilon_ex(const dp_accountant *a, dp_accountant_kind k, double delta,
                                   const dp_accounting_params *params, dp_epsilon_report *out) {
    dp_status st;
    if ((st = check_common(a, k))) return st;
    if (!out) return dp_fail(DP_ERR_INVALID, "accounting: out is NULL");
    if (!(delta > 0.0 && delta < 1.0))
        return dp_fail(DP_ERR_RANGE, "delta %g is outside (0, 1)", delta);
    dp_accounting_params prm = params ? *params : dp_accounting_default_params();
    if (!(prm.eps_error > 0.0) || !isfinite(prm.eps_error))
        return dp_fail(DP_ERR_RANGE, "eps_error %g must be finite and > 0", prm.eps_error);
    if (prm.delta_error == 0.0) prm.delta_error = delta / 1000.0;
    if (!(prm.delta_error > 0.0 && prm.delta_error < delta))
        return dp_fail(DP_ERR_RANGE, "delta_error %g must be in (0, delta = %g)", prm.delta_error,
                       delta);
    dp_epsilon_report r = {0.0, 0.0, 0.0, 0.0, 0.0, 0};
    entry *e = NULL;
    size_t ne = 0;
    long total = 0;
    if ((st = load_history(a, &e, &ne, &total))) return st;
    if (ne == 0) {
        if (k == DP_ACCT_RDP) r.lower = NAN;
        if (k == DP_ACCT_GDP) {
            r.lower = r.upper = NAN;
            r.approximate = 1;
        }
        *out = r;
        return DP_OK;
    }
    switch (k) {
    case DP_ACCT_RDP: {
        double eps;
        st = dp_accountant_epsilon(a, delta, &eps, NULL);
        r.epsilon = r.estimate = r.upper = eps;
        r.lower = NAN;
        break;
    }
    case DP_ACCT_GDP: {
        double eps = gdp_eps(gdp_mu(e, ne), delta);
        r.epsilon = r.estimate = eps;
        r.lower = r.upper = NAN;
        r.approximate = 1;
        break;
    }
    case DP_ACCT_PRV:
    case DP_ACCT_PLD: {
        const int pld = k == DP_ACCT_PLD;
        composed c = {0};
        if ((st = compose(e, ne, total, pld, prm.delta_error, &prm, &c))) break;
        if (!pld) {
            const double t0 = c.t0 + c.shift, de = prm.delta_error, ee = c.eps_error;
            r.upper = disc_eps(&c, t0, 0.0, delta - de) + ee;
            r.estimate = fmax(0.0, disc_eps(&c, t0, 0.0, delta));
            r.lower = fmax(0.0, disc_eps(&c, t0, 0.0, delta + de) - ee);
            r.upper = fmax(r.upper, 0.0);
        } else {
            const double span = c.dt * (double)c.steps;
            r.upper = fmax(0.0, disc_eps(&c, c.t0, c.inf_mass, delta));
            r.estimate = fmax(0.0, disc_eps(&c, c.t0 - 0.5 * span, 0.0, delta));
            r.lower = fmax(0.0, disc_eps(&c, c.t0 - span, 0.0, delta));
            /* a coarse grid (many steps, max_points) can leave the pessimistic bound above
             * RDP's; both are guarantees, so report the smaller */
            double er;
            if (dp_accountant_epsilon(a, delta, &er, NULL) == DP_OK && er < r.upper) r.upper = er;
        }
        r.epsilon = r.upper;
        r.eps_error = c.eps_error;
        composed_free(&c);
        break;
    }
    default:
        break;
    }
    dp_free(e);
    if (st) return st;
    *out = r;
    return DP_OK;
}

dp_status dp_accountant_epsilon_kind(const dp_accountant *a, dp_accountant_kind k, double delta,
                                     dp_epsilon_report *out) {
    return dp_accountant_epsilon_ex(a, k, delta, NULL, out);
}

/* the accounting parameters of a delta query: the defaults, or *params checked */
static dp_status delta_params(const dp_accounting_params *params, dp_accounting_params *prm) {
    *prm = params ? *params : dp_accounting_default_params();
    if (prm->delta_error == 0.0) prm->delta_error = 1e-10;
    if (!(prm->eps_error > 0.0) || !isfinite(prm->eps_error) || !(prm->delta_error > 0.0 && prm->delta_error < 1.0))
        return dp_fail(DP_ERR_RANGE, "eps_error %g / delta_error %g out of range", prm->eps_error,
                       prm->delta_error);
    return DP_OK;
}

dp_status dp_accountant_delta_ex(const dp_accountant *a, dp_accountant_kind k, double epsilon,
                                 const dp_accounting_params *params, double *delta) {
    dp_status st;
    if ((st = check_common(a, k))) return st;
    if (!delta) return dp_fail(DP_ERR_INVALID, "accounting: delta is NULL");
    if (!(epsilon >= 0.0))
        return dp_fail(DP_ERR_RANGE, "epsilon %g must be >= 0 (and not NaN)", epsilon);
    dp_accounting_params prm;
    if ((st = delta_params(params, &prm))) return st;
    entry *e = NULL;
    size_t ne = 0;
    long total = 0;
    if ((st = load_history(a, &e, &ne, &total))) return st;
    double d = 0.0;
    if (ne == 0 || isinf(epsilon)) {
        d = 0.0;
    } else if (k == DP_ACCT_GDP) {
        d = gdp_delta(gdp_mu(e, ne), epsilon);
    } else if (k == DP_ACCT_RDP) {
        /* smallest delta whose RDP epsilon is <= epsilon, by bisection in log delta */
        double lo = log(1e-300), hi = log(0.999999), eh;
        if ((st = dp_accountant_epsilon(a, exp(hi), &eh, NULL))) goto done;
        if (eh > epsilon) {
            d = 1.0;
        } else {
            for (int it = 0; it < 100 && hi - lo > 1e-12; it++) {
                double mid = 0.5 * (lo + hi), em;
                if ((st = dp_accountant_epsilon(a, exp(mid), &em, NULL))) goto done;
                if (em <= epsilon) hi = mid;
                else lo = mid;
            }
            d = exp(hi);
        }
    } else {
        const int pld = k == DP_ACCT_PLD;
        composed c = {0};
        if ((st = compose(e, ne, total, pld, prm.delta_error, &prm, &c))) goto done;
        if (pld) d = disc_delta(&c, c.t0, c.inf_mass, epsilon);
        else
            d = fmin(1.0, disc_delta(&c, c.t0 + c.shift, 0.0, epsilon - c.eps_error) +
                              prm.delta_error);
        composed_free(&c);
    }
done:
    dp_free(e);
    if (st) return st;
    *delta = d;
    return DP_OK;
}

dp_status dp_accountant_delta_kind(const dp_accountant *a, dp_accountant_kind k, double epsilon,
                                   double *delta) {
    return dp_accountant_delta_ex(a, k, epsilon, NULL, delta);
}

static dp_status check_qss(double q, double sigma, long steps) {
    if (!(q > 0.0 && q <= 1.0)) return dp_fail(DP_ERR_RANGE, "sample rate %g is outside (0, 1]", q);
    if (!(sigma > 0.0) || !isfinite(sigma))
        return dp_fail(DP_ERR_RANGE, "noise multiplier %g must be finite and > 0", sigma);
    if (steps < 1) return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 1", steps);
    return DP_OK;
}

dp_status dp_epsilon_kind(dp_accountant_kind k, double q, double sigma, long steps, double delta,
                          dp_epsilon_report *out) {
    dp_status st;
    if ((st = check_qss(q, sigma, steps))) return st;
    dp_accountant *a = NULL;
    if ((st = dp_accountant_create(&a))) return st;
    st = dp_accountant_step(a, q, sigma, steps);
    if (!st) st = dp_accountant_epsilon_kind(a, k, delta, out);
    dp_accountant_destroy(a);
    return st;
}

enum { CALIB_MAX_BISECT = 200 };
#define CALIB_MAX_SIGMA 1e6

/* epsilon at sigma; a sigma too small for the grid (huge privacy loss) is simply not private
 * enough: +inf */
static dp_status calib_eval(dp_accountant_kind k, double q, double sigma, long steps, double delta, double *eps) {
    dp_epsilon_report r;
    dp_status st = dp_epsilon_kind(k, q, sigma, steps, delta, &r);
    if (st == DP_ERR_RANGE) {
        dp_clear_error();
        *eps = INFINITY;
        return DP_OK;
    }
    if (st == DP_OK) *eps = r.epsilon;
    return st;
}

static dp_status calibrate(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                           double eps_tol, double *sigma);

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
    entry e = {q, 0.0, steps};
    double lo = 1e-4, hi = CALIB_MAX_SIGMA, L;
    dp_status st;
    e.sigma = lo;
    if ((st = loss_domain(&e, 1, steps, delta / 1000.0, prm.eps_error, &L))) return st;
    if (L <= MAX_LOSS_DOMAIN) { /* no such q and delta in practice; the search then stops at lo */
        *out = lo;
        return DP_OK;
    }
    for (int it = 0; it < 26; it++) { /* lo does not fit, hi does; to a relative 4e-7 */
        e.sigma = sqrt(lo * hi);
        if ((st = loss_domain(&e, 1, steps, delta / 1000.0, prm.eps_error, &L))) return st;
        if (L <= MAX_LOSS_DOMAIN) hi = e.sigma;
        else lo = e.sigma;
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
                       target_eps, kind_names[k], q, steps, delta, cr->eps_at_max, CALIB_MAX_SIGMA,
                       k == DP_ACCT_PRV ? " (prv's upper bound includes its error of 0.01)" : "", range);
    return dp_fail(DP_ERR_RANGE,
                   "target epsilon %g is unreachable with the %s accountant: at sample rate %g, %ld steps and delta "
                   "%g, epsilon is at most %.4g even at noise multiplier %.4g, the least noise the %s accountant can "
                   "evaluate%s; %s",
                   target_eps, kind_names[k], q, steps, delta, cr->eps_at_min, cr->sigma_min, kind_names[k],
                   k == DP_ACCT_RDP ? "" : " (its privacy loss outgrows the grid below it)", range);
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
    if (!st) st = dp_accountant_epsilon_ex(a, DP_ACCT_PRV, delta, &coarse, &r);
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
        return dp_fail(DP_ERR_INVALID, "accountant kind %d is not one of rdp, prv, pld, gdp", (int)k);
    /* GDP is a central-limit approximation, not a bound: it can underestimate epsilon badly
     * (a run calibrated to 0.994 by GDP spends 2.476 by PRV), so a sigma chosen by it carries
     * no guarantee */
    if (k == DP_ACCT_GDP)
        return dp_fail(DP_ERR_INVALID,
                       "accountant gdp: a central-limit approximation that can underestimate epsilon, not a "
                       "bound; it cannot calibrate the noise multiplier: use prv, rdp or pld");
    if (!(target_eps > 0.0) || !isfinite(target_eps))
        return dp_fail(DP_ERR_RANGE, "target epsilon %g must be finite and > 0", target_eps);
    if (!(delta > 0.0 && delta < 1.0))
        return dp_fail(DP_ERR_RANGE, "delta %g is outside (0, 1)", delta);
    if (!(q > 0.0 && q <= 1.0)) return dp_fail(DP_ERR_RANGE, "sample rate %g is outside (0, 1]", q);
    if (steps < 1) return dp_fail(DP_ERR_RANGE, "steps %ld must be >= 1", steps);
    if (!(eps_tol >= 0.0) || !isfinite(eps_tol))
        return dp_fail(DP_ERR_RANGE, "epsilon tolerance %g must be finite and >= 0", eps_tol);
    return DP_OK;
}

dp_status dp_calibrate_sigma_kind(dp_accountant_kind k, double target_eps, double delta, double q,
                                  long steps, double eps_tol, double *sigma) {
    dp_status st;
    if ((unsigned)k < DP_ACCT_COUNT && k != DP_ACCT_GDP && !sigma)
        return dp_fail(DP_ERR_INVALID, "calibrate sigma: sigma is NULL");
    if ((st = calib_args(k, target_eps, delta, q, steps, eps_tol))) return st;
    if (eps_tol == 0.0) eps_tol = DP_CALIBRATE_EPS_TOL_DEFAULT;
    if (k != DP_ACCT_RDP) return calibrate(k, target_eps, delta, q, steps, eps_tol, sigma);
    /* RDP: Opacus' bisection (dp_calibrate_sigma), fenced by the same range check, and its answer
     * checked: near sigma 0 the bisection can end far below the target */
    calib_range cr;
    double s, e;
    if ((st = calib_reach(k, target_eps, delta, q, steps, eps_tol, &cr))) return st;
    if ((st = dp_calibrate_sigma(target_eps, delta, q, steps, eps_tol, &s))) return st;
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
static dp_status calibrate(dp_accountant_kind k, double target_eps, double delta, double q, long steps,
                           double eps_tol, double *sigma) {
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
        while (el <= target_eps) { /* walk down until not private enough */
            if (lo <= cr.sigma_min) { /* the least noise it can evaluate meets the target */
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
                               target_eps, q, steps, delta, kind_names[k], CALIB_MAX_SIGMA);
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
    if (gap > eps_tol) return dp_fail(DP_ERR_RANGE, "calibrate sigma: no convergence with the %s accountant", kind_names[k]);
    *sigma = hi;
    return DP_OK;
}

/* ---- a privacy profile in one call ---------------------------------------------------- */

dp_status dp_accountant_delta_many(const dp_accountant *a, dp_accountant_kind k, const double *eps, size_t n,
                                   const dp_accounting_params *params, double *delta) {
    dp_status st;
    if ((st = check_common(a, k))) return st;
    if (!eps || !delta) return dp_fail(DP_ERR_INVALID, "accounting: eps or delta is NULL");
    for (size_t i = 0; i < n; i++)
        if (!(eps[i] >= 0.0)) return dp_fail(DP_ERR_RANGE, "epsilon %g must be >= 0 (and not NaN)", eps[i]);
    /* RDP and GDP cost nothing to compose: one epsilon at a time, exactly as delta_ex */
    if (k == DP_ACCT_RDP || k == DP_ACCT_GDP) {
        for (size_t i = 0; i < n; i++)
            if ((st = dp_accountant_delta_ex(a, k, eps[i], params, &delta[i]))) return st;
        return DP_OK;
    }
    dp_accounting_params prm;
    if ((st = delta_params(params, &prm))) return st;
    entry *e = NULL;
    size_t ne = 0;
    long total = 0;
    if ((st = load_history(a, &e, &ne, &total))) return st;
    if (ne == 0) {
        for (size_t i = 0; i < n; i++) delta[i] = 0.0;
        return DP_OK;
    }
    /* PRV and PLD: the composition is done once, and read off at every epsilon by the formulas
     * of dp_accountant_delta_ex (PRV: at eps - eps_error, plus delta_error), in one pass down
     * the grid: disc_delta's sum_{t_j >= e} p_j (1 - e^{e - t_j}) is S1 - e^e S2 with S1 =
     * sum p_j and S2 = sum p_j e^{-t_j} over t_j >= e, so all n cost one sweep instead of n
     * (hundreds of epsilons: 0.4 s -> 0.05 s at the audit's default). In long double the
     * difference agrees with disc_delta's to ~1e-18 absolute, far inside delta_error. */
    const int pld = k == DP_ACCT_PLD;
    composed c = {0};
    st = compose(e, ne, total, pld, prm.delta_error, &prm, &c);
    dp_free(e);
    if (st) return st;
    size_t *ord = dp_alloc(sizeof(size_t) * (n ? n : 1));
    if (!ord) {
        composed_free(&c);
        return DP_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) ord[i] = i;
    for (size_t i = 1; i < n; i++) /* by decreasing epsilon (insertion sort: n is small) */
        for (size_t j = i; j > 0 && eps[ord[j]] > eps[ord[j - 1]]; j--) {
            const size_t t = ord[j];
            ord[j] = ord[j - 1];
            ord[j - 1] = t;
        }
    const double t0 = pld ? c.t0 : c.t0 + c.shift, inf_mass = pld ? c.inf_mass : 0.0;
    long double s1 = 0.0L, s2 = 0.0L;
    long j = (long)c.n - 1;
    for (size_t i = 0; i < n; i++) {
        const double x = eps[ord[i]], at = pld ? x : x - c.eps_error;
        if (isinf(x)) {
            delta[ord[i]] = 0.0;
            continue;
        }
        for (; j >= 0 && t0 + (double)j * c.dt >= at; j--) {
            s1 += c.pmf[j];
            s2 += (long double)c.pmf[j] * expl(-(long double)(t0 + (double)j * c.dt));
        }
        double d = (double)(s1 - expl((long double)at) * s2) + inf_mass;
        d = d < 0.0 ? 0.0 : d > 1.0 ? 1.0 : d;
        delta[ord[i]] = pld ? d : fmin(1.0, d + prm.delta_error);
    }
    dp_free(ord);
    composed_free(&c);
    return DP_OK;
}
