/* acct_prv.c: the PRV and PLD accountants (the kinds "prv" and "pld" of DP_ACCOUNTANT_LIST),
 * which share one grid and one FFT composition of the history.
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
#include <complex.h> /* before fftw3.h: fftw_complex is then the C99 double complex */
#include <fftw3.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "privacy/acct.h"

#define DP_PI 3.14159265358979323846

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
        if (prv_cdf(p, mid) < target)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

static double prv_quantile_sf(const prv1 *p, double lo, double hi, double target) {
    for (int it = 0; it < 200 && hi - lo > 1e-12 * fmax(1.0, fabs(hi)); it++) {
        double mid = 0.5 * (lo + hi);
        if (prv_sf(p, mid) > target)
            lo = mid;
        else
            hi = mid;
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
static void discretize(const prv1 *p, double t0, double dt, size_t n, int pld, double *pmf, double *shift,
                       double *inf_mass) {
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
        if (pld && j == 0) e = -INFINITY;      /* everything below goes to t_0 (rounded up) */
        const int side = e >= tmed;
        const double v = side ? prv_sf(p, e) : prv_cdf(p, e);
        if (j > jlo) {
            double m;
            if (!prev_side && !side)
                m = v - prev_v;
            else if (prev_side && side)
                m = prev_v - v;
            else
                m = (1.0 - v) - prev_v;
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
#define WRAP_LAM0   3

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
    double *pmf; /* [n] composed pmf on t0 + shift + j dt */
    size_t n;
    double t0, dt, shift, inf_mass, eps_error;
    long steps;
} composed;

static void composed_free(composed *c) {
    dp_free(c->pmf);
    c->pmf = NULL;
}

/* The safe domain size L of the grid (Opacus compute_safe_domain_size), from RDP alone: cheap,
 * so calibration can find where PRV and PLD stop being computable without composing. */
dp_status dp__acct_loss_domain(const acct_entry *e, size_t ne, long total, double delta_error, double eps_error,
                               double *out) {
    dp_status st;
    double L, l1;
    if ((st = dp__acct_rdp_of_entries(e, ne, delta_error / 4.0, &L))) return st;
    for (size_t i = 0; i < ne; i++) {
        acct_entry one = e[i];
        one.steps = 1;
        if ((st = dp__acct_rdp_of_entries(&one, 1, delta_error / (8.0 * (double)total), &l1))) return st;
        if (l1 > L) L = l1;
    }
    *out = fmax(L, eps_error) + 3.0;
    return DP_OK;
}

/* Builds the grid and composes the history. pld selects the discretisation. */
static dp_status compose(const acct_entry *e, size_t ne, long total, int pld, double delta_error,
                         const dp_accounting_params *prm, composed *out) {
    dp_status st;
    double L;
    if ((st = dp__acct_loss_domain(e, ne, total, delta_error, prm->eps_error, &L))) return st;
    if (!(L <= DP__ACCT_MAX_LOSS_DOMAIN))
        return dp_fail(DP_ERR_RANGE,
                       "noise multiplier too small for the %s accountant: the privacy loss "
                       "domain would exceed %g (use rdp)",
                       dp_accountant_kind_name(pld ? DP_ACCT_PLD : DP_ACCT_PRV), DP__ACCT_MAX_LOSS_DOMAIN);
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
        if (i == 0)
            memcpy(acc, c, nc * sizeof *c);
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

/* ---- the kinds "prv" and "pld" ------------------------------------------------------------ */

static dp_status grid_epsilon(const acct_history *h, int pld, double delta, const dp_accounting_params *prm,
                              dp_epsilon_report *out) {
    dp_status st;
    dp_epsilon_report r = {0.0, 0.0, 0.0, 0.0, 0.0, 0, NAN};
    if (h->n == 0) { /* nothing at risk */
        *out = r;
        return DP_OK;
    }
    composed c = {0};
    if ((st = compose(h->e, h->n, h->total, pld, prm->delta_error, prm, &c))) return st;
    if (!pld) {
        const double t0 = c.t0 + c.shift, de = prm->delta_error, ee = c.eps_error;
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
        if (dp__acct_rdp_of(h->a, delta, &er, NULL) == DP_OK && er < r.upper) r.upper = er;
    }
    r.epsilon = r.upper;
    r.eps_error = c.eps_error;
    composed_free(&c);
    *out = r;
    return DP_OK;
}

/* delta at each eps[i] (finite ones; +inf gives 0) */
static dp_status grid_delta(const acct_history *h, int pld, const double *eps, size_t n, int sweep,
                            const dp_accounting_params *prm, double *delta) {
    dp_status st;
    composed c = {0};
    if ((st = compose(h->e, h->n, h->total, pld, prm->delta_error, prm, &c))) return st;
    if (!sweep) { /* each by its own sum over the grid */
        for (size_t i = 0; i < n; i++) {
            if (isinf(eps[i]))
                delta[i] = 0.0;
            else if (pld)
                delta[i] = disc_delta(&c, c.t0, c.inf_mass, eps[i]);
            else
                delta[i] = fmin(1.0, disc_delta(&c, c.t0 + c.shift, 0.0, eps[i] - c.eps_error) + prm->delta_error);
        }
        composed_free(&c);
        return DP_OK;
    }
    /* A profile: the composition is read off at every epsilon by the formulas of the one delta
     * call (PRV: at eps - eps_error, plus delta_error), in one pass down the grid: disc_delta's
     * sum_{t_j >= e} p_j (1 - e^{e - t_j}) is S1 - e^e S2 with S1 = sum p_j and S2 = sum p_j
     * e^{-t_j} over t_j >= e, so all n cost one sweep instead of n (hundreds of epsilons: 0.4 s
     * -> 0.05 s at the audit's default). In long double the difference agrees with disc_delta's
     * to ~1e-18 absolute, far inside delta_error. */
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
        delta[ord[i]] = pld ? d : fmin(1.0, d + prm->delta_error);
    }
    dp_free(ord);
    composed_free(&c);
    return DP_OK;
}

dp_status dp__acct_prv_epsilon(const acct_history *h, double delta, const dp_accounting_params *prm,
                               dp_epsilon_report *r) {
    return grid_epsilon(h, 0, delta, prm, r);
}
dp_status dp__acct_prv_delta(const acct_history *h, const double *eps, size_t n_eps, int sweep,
                             const dp_accounting_params *prm, double *delta) {
    return grid_delta(h, 0, eps, n_eps, sweep, prm, delta);
}
dp_status dp__acct_pld_epsilon(const acct_history *h, double delta, const dp_accounting_params *prm,
                               dp_epsilon_report *r) {
    return grid_epsilon(h, 1, delta, prm, r);
}
dp_status dp__acct_pld_delta(const acct_history *h, const double *eps, size_t n_eps, int sweep,
                             const dp_accounting_params *prm, double *delta) {
    return grid_delta(h, 1, eps, n_eps, sweep, prm, delta);
}
