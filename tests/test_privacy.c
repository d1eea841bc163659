/* test_privacy.c: noise, Poisson sampling, the RDP accountant (against Opacus 1.5.4
 * reference values in DP_REFERENCE_DIR/accountant.json), composition, calibration. */
#include "fixtures.h"

#include <limits.h>
#include <omp.h>

/* RDP epsilon and its order through the one epsilon call (dp_accountant_epsilon, kind RDP): of
 * the history of a, or of `steps` steps at (q, sigma). Out-parameters written on success only;
 * alpha may be NULL. */
static dp_status acc_rdp(const dp_accountant *a, double delta, double *eps, double *alpha) {
    dp_epsilon_report r;
    dp_status st = dp_accountant_epsilon(a, DP_ACCT_RDP, delta, NULL, &r);
    if (st) return st;
    *eps = r.epsilon;
    if (alpha) *alpha = r.order;
    return DP_OK;
}
static dp_status rdp_eps(double q, double sigma, long steps, double delta, double *eps, double *alpha) {
    dp_epsilon_report r;
    dp_status st = t_epsilon1(DP_ACCT_RDP, q, sigma, steps, delta, &r);
    if (st) return st;
    *eps = r.epsilon;
    if (alpha) *alpha = r.order;
    return DP_OK;
}

/* The RDP orders as Opacus lists them (1.1 .. 10.9, 12 .. 63). */
static int orders_ref(double *o) {
    int n = 0;
    for (int x = 1; x < 100; x++) o[n++] = 1.0 + x / 10.0;
    for (int a = 12; a < 64; a++) o[n++] = a;
    return n;
}

/* eps of a given RDP curve (independent re-implementation of the conversion). */
static double conv_eps(const double *o, const double *rdp, int n, double delta, double *alpha) {
    double best = INFINITY;
    *alpha = NAN;
    for (int k = 0; k < n; k++) {
        double e = rdp[k] - (log(delta) + log(o[k])) / (o[k] - 1) + log((o[k] - 1) / o[k]);
        if (e < best) {
            best = e;
            *alpha = o[k];
        }
    }
    return best;
}

/* ---- reference grid ----------------------------------------------------------------- */

static void test_reference_grid(void) {
    const char *path = DP_REFERENCE_DIR "/accountant.json";
    char *txt = t_read_text(path);
    if (!txt) {
        fprintf(stderr, "cannot read %s: the reference test cannot run\n", path);
        CHECK(txt != NULL);
        return;
    }
    /* meta.rdp_alphas must be the order set this library uses */
    double o[160];
    int no = orders_ref(o);
    const char *al = strstr(txt, "\"rdp_alphas\"");
    CHECK(al != NULL);
    if (al) {
        const char *p = strchr(al, '[');
        const char *close = p ? strchr(p, ']') : NULL;
        int k = 0, same = (p && close);
        while (same && p < close) {
            char *after;
            double v = strtod(p + 1, &after);
            if (after == p + 1) break;
            if (k >= no || v != o[k]) same = 0;
            k++;
            p = after;
            while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
        }
        if (!same || k != no || k != DP_RDP_NUM_ORDERS)
            fprintf(stderr, "rdp_alphas: %d entries read, %d expected (same=%d)\n", k, no, same);
        CHECK(same && k == no && k == DP_RDP_NUM_ORDERS);
    }

    const char *grid = strstr(txt, "\"epsilon_grid\"");
    CHECK(grid != NULL);
    int n = 0, bad = 0;
    double worst = 0;
    const char *p = grid;
    while (p) {
        double q, sigma, steps, delta, eps_ref, alpha_ref;
        const char *next = strstr(p, "\"sample_rate\"");
        if (!next) break;
        const char *end = strstr(next + 1, "\"sample_rate\""); /* the next entry */
        const char *r;
        if (!(p = json_num(next, end, "sample_rate", &q)) ||
            !(p = json_num(next, end, "noise_multiplier", &sigma)) ||
            !(p = json_num(next, end, "steps", &steps)) ||
            !(p = json_num(next, end, "delta", &delta)) ||
            !(r = strstr(next, "\"rdp\"")) || (end && r >= end) ||
            !json_num(r, end, "epsilon", &eps_ref) ||
            !json_num(r, end, "best_alpha", &alpha_ref)) {
            fprintf(stderr, "accountant.json: cannot parse grid entry %d\n", n);
            CHECK(0);
            break;
        }
        double eps = NAN, alpha = NAN;
        CHECK_OK(rdp_eps(q, sigma, (long)steps, delta, &eps, &alpha));
        double rel = fabs(eps - eps_ref) / fabs(eps_ref);
        if (rel > worst) worst = rel;
        if (!(rel <= 1e-6) || alpha != alpha_ref) {
            bad++;
            fprintf(stderr,
                    "grid q=%g sigma=%g steps=%ld delta=%g: eps %.15g alpha %g, "
                    "Opacus eps %.15g alpha %g (rel err %.3g)\n",
                    q, sigma, (long)steps, delta, eps, alpha, eps_ref, alpha_ref, rel);
        }
        CHECK(rel <= 1e-6);
        CHECK(alpha == alpha_ref);
        /* the accountant route gives the same numbers */
        dp_accountant *a = NULL;
        CHECK_OK(dp_accountant_create(&a));
        if (a) {
            double e2 = NAN, a2 = NAN;
            CHECK_OK(dp_accountant_step(a, q, sigma, (long)steps));
            CHECK_OK(acc_rdp(a, delta, &e2, &a2));
            CHECK(e2 == eps && a2 == alpha);
            dp_accountant_destroy(a);
        }
        n++;
        p = end;
    }
    printf("reference grid: %d entries, %d mismatches, worst relative error %.3g\n", n, bad,
           worst);
    CHECK(n >= 20); /* the file holds 24 entries */
    free(txt);
}

/* ---- closed form at q = 1 and composition -------------------------------------------- */

static void test_q1_closed_form(void) {
    double o[160], rdp[160];
    int no = orders_ref(o);
    const double sig[] = {0.7, 1.0, 2.5};
    const long st[] = {1, 10, 1000};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            for (int k = 0; k < no; k++) rdp[k] = st[j] * o[k] / (2 * sig[i] * sig[i]);
            double a_ref, e_ref = conv_eps(o, rdp, no, 1e-5, &a_ref);
            double e = NAN, a = NAN;
            CHECK_OK(rdp_eps(1.0, sig[i], st[j], 1e-5, &e, &a));
            CHECK_CLOSE(e, e_ref, 1e-12);
            if (a != a_ref)
                fprintf(stderr, "q=1 sigma %g steps %ld: alpha %g vs %g\n", sig[i], st[j], a,
                        a_ref);
            CHECK(a == a_ref);
        }
    /* two sigmas at q = 1: RDP adds, so (1, s1, 10) + (1, s2, 20) == 30 steps at s_eff with
     * 30 / s_eff^2 = 10 / s1^2 + 20 / s2^2 */
    dp_accountant *acc = NULL;
    CHECK_OK(dp_accountant_create(&acc));
    if (!acc) return;
    const double s1 = 0.8, s2 = 1.7;
    CHECK_OK(dp_accountant_step(acc, 1.0, s1, 10));
    CHECK_OK(dp_accountant_step(acc, 1.0, s2, 20));
    double seff = sqrt(30.0 / (10.0 / (s1 * s1) + 20.0 / (s2 * s2)));
    double e_mix = NAN, a_mix = NAN, e_eff = NAN, a_eff = NAN;
    CHECK_OK(acc_rdp(acc, 1e-5, &e_mix, &a_mix));
    CHECK_OK(rdp_eps(1.0, seff, 30, 1e-5, &e_eff, &a_eff));
    CHECK_CLOSE(e_mix, e_eff, 1e-12);
    CHECK(a_mix == a_eff);
    for (int k = 0; k < no; k++)
        rdp[k] = 10 * o[k] / (2 * s1 * s1) + 20 * o[k] / (2 * s2 * s2);
    double a_ref, e_ref = conv_eps(o, rdp, no, 1e-5, &a_ref);
    CHECK_CLOSE(e_mix, e_ref, 1e-12);
    CHECK(a_mix == a_ref);
    dp_accountant_destroy(acc);
}

static void test_composition(void) {
    const double q = 0.01, s = 1.1;
    dp_accountant *a = NULL, *b = NULL;
    CHECK_OK(dp_accountant_create(&a));
    CHECK_OK(dp_accountant_create(&b));
    if (!a || !b) {
        dp_accountant_destroy(a);
        dp_accountant_destroy(b);
        return;
    }
    double e0 = -1, a0 = -1;
    CHECK_OK(acc_rdp(a, 1e-5, &e0, &a0)); /* empty: 0, 0 as Opacus */
    CHECK(e0 == 0.0 && a0 == 0.0);
    CHECK(dp_accountant_total_steps(a) == 0 && dp_accountant_history_len(a) == 0);

    /* (q,s,10) + (q,s,20) == (q,s,30), merged into one entry */
    CHECK_OK(dp_accountant_step(a, q, s, 10));
    CHECK_OK(dp_accountant_step(a, q, s, 20));
    CHECK(dp_accountant_history_len(a) == 1);
    CHECK(dp_accountant_total_steps(a) == 30);
    double e30 = NAN, a30 = NAN, e_acc = NAN, a_acc = NAN;
    CHECK_OK(rdp_eps(q, s, 30, 1e-5, &e30, &a30));
    CHECK_OK(acc_rdp(a, 1e-5, &e_acc, &a_acc));
    if (e30 != e_acc) fprintf(stderr, "10+20 steps: %.17g vs 30 steps: %.17g\n", e_acc, e30);
    CHECK(e30 == e_acc && a30 == a_acc);
    /* one step at a time gives the same */
    int steps_ok = 1;
    for (int i = 0; i < 30; i++) steps_ok &= dp_accountant_step(b, q, s, 1) == DP_OK;
    CHECK(steps_ok);
    double eb = NAN, ab = NAN;
    CHECK(dp_accountant_history_len(b) == 1);
    CHECK_OK(acc_rdp(b, 1e-5, &eb, &ab));
    CHECK(eb == e30 && ab == a30);

    /* heterogeneous: more steps at a second sigma can only cost more, and cost less than
     * the same steps at the smaller sigma; block order does not matter */
    CHECK_OK(dp_accountant_step(a, q, 2.0, 20));
    CHECK(dp_accountant_history_len(a) == 2 && dp_accountant_total_steps(a) == 50);
    double e_mix = NAN, a_mix = NAN, e50 = NAN;
    CHECK_OK(acc_rdp(a, 1e-5, &e_mix, &a_mix));
    CHECK_OK(rdp_eps(q, s, 50, 1e-5, &e50, NULL));
    printf("composition: eps(30 @ %.1f) = %.6f, + 20 @ 2.0 = %.6f, 50 @ %.1f = %.6f\n", s, e30,
           e_mix, s, e50);
    CHECK(e_mix > e30 && e_mix < e50);
    dp_accountant *c = NULL;
    CHECK_OK(dp_accountant_create(&c));
    if (c) {
        double ec = NAN;
        CHECK_OK(dp_accountant_step(c, q, 2.0, 20));
        CHECK_OK(dp_accountant_step(c, q, s, 30));
        CHECK_OK(acc_rdp(c, 1e-5, &ec, NULL));
        CHECK_CLOSE(ec, e_mix, 1e-13);
        dp_accountant_destroy(c);
    }
    /* a long alternating history equals the same steps in two blocks (RDP adds) */
    {
        dp_accountant *alt = NULL, *blk = NULL;
        CHECK_OK(dp_accountant_create(&alt));
        CHECK_OK(dp_accountant_create(&blk));
        if (alt && blk) {
            int ok = 1;
            for (int i = 0; i < 100; i++) {
                ok &= dp_accountant_step(alt, q, s, 3) == DP_OK;
                ok &= dp_accountant_step(alt, 0.02, 1.5, 1) == DP_OK;
            }
            CHECK(ok);
            CHECK(dp_accountant_history_len(alt) == 200 && dp_accountant_total_steps(alt) == 400);
            CHECK_OK(dp_accountant_step(blk, q, s, 300));
            CHECK_OK(dp_accountant_step(blk, 0.02, 1.5, 100));
            double e1 = NAN, e2 = NAN, x1 = NAN, x2 = NAN;
            CHECK_OK(acc_rdp(alt, 1e-5, &e1, &x1));
            CHECK_OK(acc_rdp(blk, 1e-5, &e2, &x2));
            CHECK_CLOSE(e1, e2, 1e-12);
            CHECK(x1 == x2);
        }
        dp_accountant_destroy(alt);
        dp_accountant_destroy(blk);
    }

    /* history round trip (checkpoints) */
    CHECK_OK(dp_accountant_step(a, q, s, 5));
    CHECK(dp_accountant_history_len(a) == 3 && dp_accountant_total_steps(a) == 55);
    dp_accountant *r = NULL;
    CHECK_OK(dp_accountant_create(&r));
    if (r) {
        for (size_t i = 0; i < dp_accountant_history_len(a); i++) {
            double hq, hs;
            long hn;
            dp_accountant_history_get(a, i, &hq, &hs, &hn);
            CHECK_OK(dp_accountant_step(r, hq, hs, hn));
        }
        double hq, hs;
        long hn;
        dp_accountant_history_get(a, 1, &hq, &hs, &hn);
        CHECK(hq == q && hs == 2.0 && hn == 20);
        double ea = NAN, er = NAN;
        CHECK_OK(acc_rdp(a, 1e-5, &ea, NULL));
        CHECK_OK(acc_rdp(r, 1e-5, &er, NULL));
        CHECK(ea == er && dp_accountant_history_len(r) == 3);
        dp_accountant_destroy(r);
    }

    /* invalid input: error naming the parameter, state and out-params untouched */
    double keep = 42.0;
    CHECK(dp_accountant_step(a, 1.5, s, 1) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate"));
    CHECK(dp_accountant_step(a, NAN, s, 1) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate"));
    CHECK(dp_accountant_step(a, q, 0.0, 1) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "noise multiplier"));
    CHECK(dp_accountant_step(a, q, NAN, 1) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "noise multiplier"));
    CHECK(dp_accountant_step(a, q, s, -1) == DP_ERR_RANGE && strstr(dp_last_error(), "steps"));
    CHECK(dp_accountant_step(a, q, s, LONG_MAX) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "steps"));
    CHECK(dp_accountant_total_steps(a) == 55 && dp_accountant_history_len(a) == 3);
    CHECK(acc_rdp(a, 0.0, &keep, NULL) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "delta") && keep == 42.0);
    CHECK(acc_rdp(a, 1.0, &keep, NULL) == DP_ERR_RANGE && keep == 42.0);
    CHECK(rdp_eps(-0.1, s, 1, 1e-5, &keep, NULL) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate") && keep == 42.0);
    CHECK(rdp_eps(q, -1, 1, 1e-5, &keep, NULL) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "noise multiplier"));
    CHECK(rdp_eps(q, s, -3, 1e-5, &keep, NULL) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "steps"));
    CHECK(rdp_eps(q, s, 3, NAN, &keep, NULL) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "delta") && keep == 42.0);
    /* q = 0: nothing sampled, nothing at risk: epsilon 0 whatever sigma (the history's other
     * kinds say the same; Opacus' RDP would give the conversion term alone) */
    double ez1 = NAN, ez2 = NAN;
    CHECK_OK(rdp_eps(0.0, 1.0, 100, 1e-5, &ez1, NULL));
    CHECK_OK(rdp_eps(0.0, 5.0, 100, 1e-5, &ez2, NULL));
    CHECK(ez1 == 0.0 && ez1 == ez2);

    /* allocation failure while growing the history leaves it unchanged */
    dp_accountant *g = NULL;
    CHECK_OK(dp_accountant_create(&g));
    if (g) {
        for (int i = 0; i < 8; i++) CHECK_OK(dp_accountant_step(g, q, 1.0 + i, 1));
        dp_mem_fail_after(1);
        CHECK(dp_accountant_step(g, q, 100.0, 1) == DP_ERR_NOMEM);
        dp_mem_fail_after(0);
        CHECK(dp_accountant_history_len(g) == 8 && dp_accountant_total_steps(g) == 8);
        CHECK_OK(dp_accountant_step(g, q, 100.0, 1));
        CHECK(dp_accountant_history_len(g) == 9);
        dp_accountant_destroy(g);
    }
    dp_accountant *h = (dp_accountant *)&keep;
    dp_mem_fail_after(1);
    CHECK(dp_accountant_create(&h) == DP_ERR_NOMEM && h == (dp_accountant *)&keep);
    dp_mem_fail_after(0);
    dp_accountant_destroy(NULL);

    dp_accountant_destroy(a);
    dp_accountant_destroy(b);
}

/* ---- monotonicity and calibration ----------------------------------------------------- */

static double eps_at(double q, double sigma, long steps, double delta) {
    double e = NAN;
    CHECK_OK(rdp_eps(q, sigma, steps, delta, &e, NULL));
    return e;
}

static void test_monotone(void) {
    const double q = 0.02;
    double prev = INFINITY;
    for (double s = 0.4; s <= 4.0; s += 0.3) {
        double e = eps_at(q, s, 500, 1e-5);
        if (!(e < prev)) fprintf(stderr, "eps(sigma=%g) = %g not < %g\n", s, e, prev);
        CHECK(e < prev);
        prev = e;
    }
    prev = 0;
    for (long t = 1; t <= 100000; t *= 4) {
        double e = eps_at(q, 1.0, t, 1e-5);
        if (!(e > prev)) fprintf(stderr, "eps(steps=%ld) = %g not > %g\n", t, e, prev);
        CHECK(e > prev);
        prev = e;
    }
    /* larger q costs more, larger delta costs less */
    CHECK(eps_at(0.05, 1.0, 100, 1e-5) > eps_at(0.01, 1.0, 100, 1e-5));
    CHECK(eps_at(0.01, 1.0, 100, 1e-3) < eps_at(0.01, 1.0, 100, 1e-5));
}

static void test_calibration(void) {
    /* Tramer & Boneh (2021) MNIST recipe: batch 2048 of 60000, 40 epochs. Steps as Opacus
     * get_noise_multiplier(epochs=40) counts them: int(epochs / q) = floor(1171.875) = 1171 */
    const double q = 2048.0 / 60000.0, delta = 1e-5, target = 3.0, tol = 0.01;
    const long steps = (long)(40.0 / q);
    CHECK(steps == 1171);
    double sigma = NAN;
    CHECK_OK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, q, steps, 0.0, &sigma));
    double e = eps_at(q, sigma, steps, delta);
    double e_lo = eps_at(q, sigma - 0.01, steps, delta);
    printf("calibration: q=2048/60000 steps=%ld delta=%g target eps=%g -> sigma=%.6f "
           "(eps %.6f; sigma-0.01 gives eps %.6f)\n",
           steps, delta, target, sigma, e, e_lo);
    CHECK(e <= target);
    CHECK(e >= target - tol);
    CHECK(e_lo > target - tol);
    CHECK(e_lo > e);
    /* explicit default tolerance gives the same answer; a finer one a smaller-or-equal
     * sigma (same bisection path, continued) with eps even closer to the target */
    double s2 = NAN, s_fine = NAN;
    CHECK_OK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, q, steps, DP_CALIBRATE_EPS_TOL_DEFAULT, &s2));
    CHECK(s2 == sigma);
    CHECK_OK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, q, steps, 1e-6, &s_fine));
    double ef = eps_at(q, s_fine, steps, delta);
    CHECK(s_fine <= sigma && sigma - s_fine < 0.05);
    CHECK(ef <= target && ef >= target - 1e-6);
    CHECK(eps_at(q, s_fine * (1 - 1e-4), steps, delta) > target - 1e-6);

    /* other budgets */
    const double targets[] = {0.5, 1.0, 8.0};
    for (int i = 0; i < 3; i++) {
        double s = NAN;
        CHECK_OK(dp_calibrate_sigma_kind(DP_ACCT_RDP, targets[i], delta, 0.01, 1000, 0.0, &s));
        double es = eps_at(0.01, s, 1000, delta);
        if (!(es <= targets[i] && es >= targets[i] - tol))
            fprintf(stderr, "calibrate target %g: sigma %g gives eps %g\n", targets[i], s, es);
        CHECK(es <= targets[i] && es >= targets[i] - tol);
    }

    /* unreachable and invalid */
    double keep = 42.0;
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, 0.05, delta, 0.01, 1000, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "unreachable") && keep == 42.0);
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, -1, delta, q, steps, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "target epsilon"));
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, NAN, delta, q, steps, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "target epsilon"));
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, 0.0, q, steps, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "delta"));
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, 0.0, steps, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate"));
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, 1.2, steps, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate"));
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, q, 0, 0.0, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "steps"));
    CHECK(dp_calibrate_sigma_kind(DP_ACCT_RDP, target, delta, q, steps, -0.1, &keep) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "tolerance"));
    CHECK(keep == 42.0);
}

/* ---- noise ---------------------------------------------------------------------------- */

static void test_noise(void) {
    enum { N = 200000 };
    float *g = dp_alloc(N * sizeof *g), *h = dp_alloc(N * sizeof *h);
    CHECK(g && h);
    if (!g || !h) {
        dp_free(g);
        dp_free(h);
        return;
    }
    const double std = 2.5, base = 1.5;
    for (size_t i = 0; i < N; i++) g[i] = h[i] = (float)base;
    dp_rng r1, r2;
    dp_rng_seed(&r1, 1234);
    dp_rng_seed(&r2, 1234);
    dp_noise_gaussian(g, N, std, &r1);
    dp_noise_gaussian(h, N, std, &r2);
    CHECK(memcmp(g, h, N * sizeof *g) == 0); /* deterministic for a seed */
    double sum = 0, sq = 0;
    for (size_t i = 0; i < N; i++) {
        double d = g[i] - base;
        sum += d;
        sq += d * d;
    }
    double mean = sum / N, var = sq / N - mean * mean;
    double mean_bound = 5 * std / sqrt(N), var_bound = 5 * std * std * sqrt(2.0 / N);
    printf("noise: mean %.5f (bound %.5f), variance %.5f vs %.5f (bound %.5f)\n", mean,
           mean_bound, var, std * std, var_bound);
    CHECK(fabs(mean) <= mean_bound);
    CHECK(fabs(var - std * std) <= var_bound);
    /* a different seed gives different noise; std = 0 changes nothing */
    dp_rng_seed(&r2, 1235);
    for (size_t i = 0; i < N; i++) h[i] = (float)base;
    dp_noise_gaussian(h, N, std, &r2);
    CHECK(memcmp(g, h, N * sizeof *g) != 0);
    dp_rng before = r2;
    for (size_t i = 0; i < N; i++) h[i] = (float)base;
    dp_noise_gaussian(h, N, 0.0, &r2);
    int same = 1;
    for (size_t i = 0; i < N; i++) same &= h[i] == (float)base;
    CHECK(same && memcmp(&before, &r2, sizeof r2) == 0);
    dp_noise_gaussian(NULL, 0, std, &r2);
    dp_free(g);
    dp_free(h);
}

/* The noise's distribution: a Kolmogorov-Smirnov test against the normal CDF, the mass in
 * the tails (beyond 2, 3 and the ziggurat's base r = 3.654, where the exact tail method takes
 * over) against its expectation, and the fourth moment; the same noise for 1 and 2 threads;
 * the masked variant leaves masked coordinates alone and draws nothing for them. */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_noise_distribution(void) {
    enum { N = 2000003 }; /* not a multiple of the block size */
    float *g = dp_alloc(N * sizeof *g), *h = dp_alloc(N * sizeof *h);
    double *z = dp_alloc(N * sizeof *z);
    unsigned char *mask = dp_alloc(N);
    CHECK(g && h && z && mask);
    if (!g || !h || !z || !mask) goto out;
    memset(g, 0, N * sizeof *g);
    dp_rng r;
    dp_rng_seed(&r, 99);
    dp_noise_gaussian(g, N, 1.0, &r);
    double m4 = 0;
    size_t t2 = 0, t3 = 0, tr = 0;
    for (size_t i = 0; i < N; i++) {
        z[i] = g[i];
        m4 += z[i] * z[i] * z[i] * z[i];
        double a = fabs(z[i]);
        t2 += a > 2;
        t3 += a > 3;
        tr += a > 3.6541528853610088;
    }
    m4 /= N;
    qsort(z, N, sizeof *z, cmp_double);
    double D = 0;
    for (size_t i = 0; i < N; i++) {
        double F = 0.5 * erfc(-z[i] / sqrt(2.0));
        double d1 = fabs(F - (double)i / N), d2 = fabs((double)(i + 1) / N - F);
        if (d1 > D) D = d1;
        if (d2 > D) D = d2;
    }
    /* P(sqrt(N) D > 1.95) ~ 0.001 */
    printf("noise distribution: KS D %.2e (sqrt(N) D %.3f), P(|z|>2) %.5f, P(|z|>3) %.6f, P(|z|>r) %.7f, E z^4 %.4f\n", D,
           sqrt((double)N) * D, (double)t2 / N, (double)t3 / N, (double)tr / N, m4);
    CHECK(sqrt((double)N) * D < 1.95);
    const double p2 = erfc(2 / sqrt(2.0)), p3 = erfc(3 / sqrt(2.0)), pr = erfc(3.6541528853610088 / sqrt(2.0));
    CHECK(fabs((double)t2 / N - p2) < 5 * sqrt(p2 / N));
    CHECK(fabs((double)t3 / N - p3) < 5 * sqrt(p3 / N));
    CHECK(fabs((double)tr / N - pr) < 5 * sqrt(pr / N));
    CHECK(fabs(m4 - 3) < 0.05); /* sd of the estimate: sqrt(96 / N) = 0.007 */

    /* the tail beyond r (its own exact method): the mean excess E[|z| - r | |z| > r] =
     * phi(r) / Q(r) - r, over 2e7 draws (about 5200 in the tail) */
    {
        const double rr = 3.6541528853610088;
        double ex = 0, ex2 = 0;
        size_t cnt = 0;
        for (int rep = 0; rep < 10; rep++) {
            memset(g, 0, N * sizeof *g);
            dp_noise_gaussian(g, N, 1.0, &r);
            for (size_t i = 0; i < N; i++)
                if (fabs(g[i]) > rr) {
                    double e = fabs(g[i]) - rr;
                    ex += e;
                    ex2 += e * e;
                    cnt++;
                }
        }
        const double phi = exp(-0.5 * rr * rr) / sqrt(8 * atan(1.0)), Q = 0.5 * erfc(rr / sqrt(2.0));
        const double want = phi / Q - rr, mean = cnt ? ex / cnt : 0, sd = cnt ? sqrt((ex2 / cnt - mean * mean) / cnt) : 1;
        printf("noise tail: %zu beyond r, mean excess %.4f vs %.4f (sd %.4f)\n", cnt, mean, want, sd);
        CHECK(cnt > 4000 && fabs(mean - want) < 4 * sd);
    }

    /* thread count does not change the noise */
    int nt = omp_get_max_threads();
    memset(g, 0, N * sizeof *g);
    memset(h, 0, N * sizeof *h);
    dp_rng_seed(&r, 7);
    omp_set_num_threads(1);
    dp_noise_gaussian(g, N, 0.5, &r);
    dp_rng_seed(&r, 7);
    omp_set_num_threads(nt > 1 ? nt : 2);
    dp_noise_gaussian(h, N, 0.5, &r);
    omp_set_num_threads(nt);
    CHECK(memcmp(g, h, N * sizeof *g) == 0);

    /* masked: frozen coordinates untouched, the others noised with the right variance */
    size_t on = 0;
    double sq = 0;
    for (size_t i = 0; i < N; i++) {
        mask[i] = (i / 1000) % 3 != 0;
        h[i] = 1.0f;
    }
    dp_noise_gaussian_masked(h, N, mask, 2.0, &r);
    int untouched = 1;
    for (size_t i = 0; i < N; i++) {
        if (!mask[i]) untouched &= h[i] == 1.0f;
        else {
            on++;
            sq += (h[i] - 1.0) * (h[i] - 1.0);
        }
    }
    CHECK(untouched);
    CHECK(fabs(sq / on - 4.0) < 5 * 4.0 * sqrt(2.0 / on));

    /* scaled: bit-equal to masked noise followed by a scaling pass that zeroes the masked,
     * and the rng advances alike; with std 0 only the scaling, nothing drawn */
    dp_rng ra, rb;
    dp_rng_seed(&ra, 31);
    rb = ra;
    for (size_t i = 0; i < N; i++) g[i] = h[i] = (float)(0.001 * (double)(i % 977));
    dp_noise_gaussian_masked(g, N, mask, 0.7, &ra);
    for (size_t i = 0; i < N; i++) g[i] = mask[i] ? (float)(g[i] * (1.0 / 3)) : 0.0f;
    dp_noise_gaussian_scaled(h, N, mask, 0.7, 1.0 / 3, &rb);
    CHECK(memcmp(g, h, N * sizeof *g) == 0 && memcmp(&ra, &rb, sizeof ra) == 0);
    dp_noise_gaussian_scaled(h, N, mask, 0.0, 3.0, &rb);
    int sc = 1;
    for (size_t i = 0; i < N; i++) sc &= h[i] == (mask[i] ? (float)(g[i] * 3.0) : 0.0f);
    CHECK(sc && memcmp(&ra, &rb, sizeof ra) == 0);
out:
    dp_free(g);
    dp_free(h);
    dp_free(z);
    dp_free(mask);
}

/* ---- Poisson sampling ---------------------------------------------------------------- */

static int sorted_unique(const size_t *idx, size_t c, size_t n) {
    for (size_t i = 0; i < c; i++) {
        if (idx[i] >= n) return 0;
        if (i && idx[i] <= idx[i - 1]) return 0;
    }
    return 1;
}

/* Known answers: the noise of a fixed key (secure) and a fixed seed is the stream the
 * portable code makes (a build without AVX2, -march=x86-64, gave these fingerprints; the
 * ASan build is such a build: it runs the scalar ziggurat loops, the Release build on an AVX2
 * machine the vector ones; test_checkpoint shows the secure noise the same from libcrypto's
 * ChaCha20 and from the built-in generator). A change of any path's numbers fails here, on
 * the machine whose path it is. The size ends in a part block whose length is
 * neither a multiple of 64 (the rectangle tests' chunk) nor of 4 (the vector width); the
 * mask freezes a whole block and scattered coordinates. */
static void test_noise_known_answers(void) {
    enum { N = 2 * 4096 + 1000 + 3 };
    float *x = malloc(sizeof(float) * N), *g = malloc(sizeof(float) * N);
    unsigned char *mask = malloc(N);
    CHECK(x && g && mask);
    if (!x || !g || !mask) return;
    for (size_t i = 0; i < N; i++) {
        x[i] = (float)((double)(i % 97) * 0.01 - 0.3);
        mask[i] = i / 4096 != 1 && i % 13 != 5;
    }
    unsigned char key[32];
    for (int i = 0; i < 32; i++) key[i] = (unsigned char)(7 * i + 1);
    dp_csprng *cr = NULL;
    CHECK_OK(dp_csprng_create_from_key(key, &cr));
    uint64_t h[5];
    if (cr) {
        memcpy(g, x, sizeof(float) * N);
        dp_secure_noise_gaussian_scaled(g, N, mask, 0.37, 1.0 / 2048, cr);
        h[0] = t_fnv64(g, sizeof(float) * N);
        memcpy(g, x, sizeof(float) * N);
        dp_secure_noise_gaussian(g, N, 1.3, cr);
        h[1] = t_fnv64(g, sizeof(float) * N);
        dp_csprng_destroy(cr);
    }
    dp_rng r;
    dp_rng_seed(&r, 5);
    memcpy(g, x, sizeof(float) * N);
    dp_noise_gaussian_scaled(g, N, mask, 0.37, 1.0 / 2048, &r);
    h[2] = t_fnv64(g, sizeof(float) * N);
    memcpy(g, x, sizeof(float) * N);
    dp_noise_gaussian_masked(g, N, mask, 0.37, &r);
    h[3] = t_fnv64(g, sizeof(float) * N);
    memcpy(g, x, sizeof(float) * N);
    dp_noise_gaussian(g, N, 0.37, &r);
    h[4] = t_fnv64(g, sizeof(float) * N);
    static const uint64_t want[5] = {0x8e3d594ab7fa24dcULL, 0x8d4449f7226945c5ULL, 0x17fc2113ae1d7aa8ULL,
                                     0xc8508f7ecbb40c8bULL, 0x761d293e4c561209ULL};
    static const char *what[5] = {"secure, masked and scaled", "secure", "seeded, masked and scaled", "seeded, masked",
                                  "seeded"};
    for (int k = cr ? 0 : 2; k < 5; k++) {
        CHECK(h[k] == want[k]);
        if (h[k] != want[k])
            fprintf(stderr, "noise known answer (%s): fingerprint %016llx, expected %016llx\n", what[k],
                    (unsigned long long)h[k], (unsigned long long)want[k]);
    }
    free(x);
    free(g);
    free(mask);
}

static void test_poisson(void) {
    enum { N = 10000, T = 200 };
    size_t *idx = dp_alloc(N * sizeof *idx);
    CHECK(idx != NULL);
    if (!idx) return;
    dp_rng r;
    dp_rng_seed(&r, 7);
    const double qs[] = {0.001, 0.01, 0.2, 0.5, 0.9};
    for (int k = 0; k < 5; k++) {
        const double q = qs[k], mu = N * q, sd = sqrt(N * q * (1 - q));
        double total = 0;
        int ok_sorted = 1, ok_count = 1;
        for (int t = 0; t < T; t++) {
            size_t c = 0;
            if (dp_poisson_sample(&r, N, q, idx, &c) != DP_OK) {
                CHECK_OK(dp_poisson_sample(&r, N, q, idx, &c)); /* reports the error */
                break;
            }
            ok_sorted &= sorted_unique(idx, c, N);
            if (fabs((double)c - mu) > 6 * sd) {
                ok_count = 0;
                fprintf(stderr, "q=%g: batch of %zu, expected %g +- %g\n", q, c, mu, sd);
            }
            total += (double)c;
        }
        double avg = total / T, bound = 5 * sd / sqrt(T);
        if (!(fabs(avg - mu) <= bound))
            fprintf(stderr, "q=%g: mean batch %g, expected %g (bound %g)\n", q, avg, mu, bound);
        CHECK(ok_sorted);
        CHECK(ok_count);
        CHECK(fabs(avg - mu) <= bound);
    }
    /* per-example inclusion frequency ~ q, and consecutive pairs ~ q^2 (independence),
     * on both code paths (geometric gaps for small q, direct Bernoulli otherwise) */
    {
        enum { M = 40, R = 40000 };
        const double qq[] = {0.05, 0.3};
        for (int k = 0; k < 2; k++) {
            const double q = qq[k];
            long hits[M] = {0}, pairs[M] = {0};
            size_t small[M];
            int all_ok = 1;
            for (int t = 0; t < R; t++) {
                size_t c = 0;
                all_ok &= dp_poisson_sample(&r, M, q, small, &c) == DP_OK;
                int in[M] = {0};
                for (size_t i = 0; i < c; i++) in[small[i]] = 1;
                for (int i = 0; i < M; i++) {
                    hits[i] += in[i];
                    if (i + 1 < M) pairs[i] += in[i] && in[i + 1];
                }
            }
            int ok = 1, okp = 1;
            const double b1 = 5.5 * sqrt(q * (1 - q) / R), b2 = 5.5 * sqrt(q * q * (1 - q * q) / R);
            for (int i = 0; i < M; i++) {
                double f = (double)hits[i] / R;
                if (fabs(f - q) > b1) {
                    ok = 0;
                    fprintf(stderr, "q=%g example %d: frequency %g (bound %g)\n", q, i, f, b1);
                }
                if (i + 1 < M) {
                    double fp = (double)pairs[i] / R;
                    if (fabs(fp - q * q) > b2) {
                        okp = 0;
                        fprintf(stderr, "q=%g pair %d: frequency %g vs %g (bound %g)\n", q, i,
                                fp, q * q, b2);
                    }
                }
            }
            CHECK(all_ok);
            CHECK(ok);
            CHECK(okp);
        }
    }
    /* edge cases */
    size_t c = 99;
    dp_rng before = r;
    CHECK_OK(dp_poisson_sample(&r, N, 0.0, idx, &c));
    CHECK(c == 0 && memcmp(&before, &r, sizeof r) == 0);
    CHECK_OK(dp_poisson_sample(&r, N, 1.0, idx, &c));
    int all = c == N;
    for (size_t i = 0; all && i < c; i++) all = idx[i] == i;
    CHECK(all);
    CHECK_OK(dp_poisson_sample(&r, 0, 0.5, NULL, &c));
    CHECK(c == 0);
    /* deterministic for a seed */
    size_t c1, c2, *idx2 = dp_alloc(N * sizeof *idx2);
    CHECK(idx2 != NULL);
    if (idx2) {
        dp_rng a, b;
        dp_rng_seed(&a, 99);
        dp_rng_seed(&b, 99);
        CHECK_OK(dp_poisson_sample(&a, N, 0.01, idx, &c1));
        CHECK_OK(dp_poisson_sample(&b, N, 0.01, idx2, &c2));
        CHECK(c1 == c2 && memcmp(idx, idx2, c1 * sizeof *idx) == 0);
        dp_free(idx2);
    }
    /* invalid q */
    c = 77;
    CHECK(dp_poisson_sample(&r, N, -0.01, idx, &c) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate") && c == 77);
    CHECK(dp_poisson_sample(&r, N, 1.01, idx, &c) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate") && c == 77);
    CHECK(dp_poisson_sample(&r, N, NAN, idx, &c) == DP_ERR_RANGE &&
          strstr(dp_last_error(), "sample rate") && c == 77);
    dp_free(idx);
}

int main(void) {
    test_reference_grid();
    test_q1_closed_form();
    test_composition();
    test_monotone();
    test_calibration();
    test_noise();
    test_noise_distribution();
    test_noise_known_answers();
    test_poisson();
    return t_finish("test_privacy");
}
