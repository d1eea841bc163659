/* test_audit.c: one-run privacy auditing (dpsgd/audit.h).
 *   - the p-value and the epsilon bound against values computed independently (Python,
 *     exact binomial sums) and their shape: all-correct guesses give a bound that grows
 *     with the number of guesses, 50% correct gives 0, the bound falls as the confidence
 *     rises or delta grows, and rises with the number of correct guesses;
 *   - the f-DP estimator (Mahloujifar, Melis & Chaudhuri 2024): its p-value against closed
 *     forms (one guess; pure DP with every guess right: the binomial) and an independent Python
 *     implementation, never below the binomial of mechanisms that attain it; its bound never
 *     above Steinke et al.'s for pure DP, close to it with a small delta, rising with the
 *     number of correct guesses, and the Gaussian curve's not below the (eps, delta) one's;
 *   - guessing from scores (top half "in", bottom half "out", Bonferroni over the grid);
 *   - audited runs on a small synthetic task: honest runs (every clipping mode, epsilon 1, 2,
 *     4, 8; gradient and input canaries) stay below the claimed epsilon; the test-only broken
 *     builds (dp__audit of src/core/testhooks.h: noise scaled by 0.1, canary gradient 10x the
 *     clipping norm) are caught by the white-box audit, whose bound then exceeds the claim;
 *   - determinism per seed, parameter errors naming their flag, no leaks. */
#include <omp.h>
#include <stdint.h>

#include "fixtures.h"
#include "core/testhooks.h"

/* ---- the bound ------------------------------------------------------------------------ */

static void test_p_value(void) {
    double p;
    /* eps = 0, delta = 0: all 10 right is a fair-coin event, 2^-10 */
    CHECK_OK(dp_audit_p_value(10, 10, 10, 0, 0, &p));
    CHECK_CLOSE(p, 1.0 / 1024, 1e-12);
    /* reference values: exact binomial sums in Python (math.comb) of the same formula */
    CHECK_OK(dp_audit_p_value(100, 10, 8, 1.0, 0, &p));
    CHECK_CLOSE(p, 0.4695614139934625, 1e-10);
    CHECK_OK(dp_audit_p_value(100, 10, 8, 1.0, 1e-3, &p));
    CHECK_CLOSE(p, 0.5216628355815993, 1e-10);
    CHECK_OK(dp_audit_p_value(1000, 200, 150, 0.5, 1e-5, &p));
    CHECK_CLOSE(p / 0.000621207835838714, 1.0, 1e-8);
    /* no correct guesses: always p = 1 */
    CHECK_OK(dp_audit_p_value(100, 50, 0, 3, 0, &p));
    CHECK_CLOSE(p, 1.0, 1e-12);
    /* errors */
    CHECK(dp_audit_p_value(10, 11, 5, 1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_p_value(10, 10, 11, 1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_p_value(10, 10, 5, -1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_p_value(10, 10, 5, 1, 2, &p) == DP_ERR_RANGE);
}

static void test_bound(void) {
    double e, prev = -1;
    /* all correct: the bound grows with r; delta = 0 has the closed form q^r = 1 - conf */
    const long rs[] = {5, 10, 20, 50, 100, 200, 500, 1000};
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        CHECK_OK(dp_audit_epsilon_bound(1000, rs[i], rs[i], 0, 0.95, &e));
        double qq = pow(0.05, 1.0 / (double)rs[i]);
        CHECK_CLOSE(e, log(qq / (1 - qq)), 1e-5);
        if (!(e > prev)) fprintf(stderr, "  r = %ld: bound %g not above %g\n", rs[i], e, prev);
        CHECK(e > prev);
        prev = e;
    }
    CHECK_CLOSE(prev, 5.8091, 1e-4); /* r = 1000: log(q/(1-q)), q = 0.05^(1/1000) */
    /* 50% correct: nothing can be said */
    CHECK_OK(dp_audit_epsilon_bound(1000, 1000, 500, 1e-5, 0.95, &e));
    CHECK(e == 0);
    CHECK_OK(dp_audit_epsilon_bound(1000, 100, 50, 0, 0.95, &e));
    CHECK(e == 0);
    /* monotone: higher confidence -> lower bound; more correct -> higher; larger delta -> lower */
    double e90, e95, e99;
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 170, 1e-5, 0.90, &e90));
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 170, 1e-5, 0.95, &e95));
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 170, 1e-5, 0.99, &e99));
    printf("  r 200, v 170: bound %.4f / %.4f / %.4f at 90 / 95 / 99%%\n", e90, e95, e99);
    CHECK(e90 > e95 && e95 > e99 && e99 > 0);
    double e160, e190;
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 160, 1e-5, 0.95, &e160));
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 190, 1e-5, 0.95, &e190));
    CHECK(e160 < e95 && e95 < e190);
    double ed0, ed;
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 190, 0, 0.95, &ed0));
    CHECK_OK(dp_audit_epsilon_bound(1000, 200, 190, 1e-4, 0.95, &ed));
    CHECK(ed < ed0);
    /* the bound is where the p-value crosses 1 - confidence */
    double p_lo, p_hi;
    CHECK_OK(dp_audit_p_value(1000, 200, 170, e95 - 1e-4, 1e-5, &p_lo));
    CHECK_OK(dp_audit_p_value(1000, 200, 170, e95 + 1e-4, 1e-5, &p_hi));
    CHECK(p_lo < 0.05 && p_hi > 0.05);
    CHECK(dp_audit_epsilon_bound(1000, 200, 170, 1e-5, 1.0, &e) == DP_ERR_RANGE);
    CHECK(dp_audit_epsilon_bound(1000, 200, 170, 1e-5, 0.0, &e) == DP_ERR_RANGE);
}

/* ---- the f-DP estimator (Mahloujifar, Melis & Chaudhuri 2024) --------------------------- */

static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* P[Binomial(k, q) >= v], summed directly (no code shared with src/privacy/audit.c) */
static double binom_tail(long k, double q, long v) {
    double s = 0;
    for (long t = v; t <= k; t++)
        s += exp(lgamma((double)k + 1) - lgamma((double)t + 1) - lgamma((double)(k - t) + 1) + (double)t * log(q) +
                 (double)(k - t) * log1p(-q));
    return s;
}

static void test_fdp_p_value(void) {
    double p;
    /* one guess: the best accuracy of a single f-DP test with prior 1/2, in closed form:
     * Phi(mu/2) for mu-GDP, delta + (1 - delta) e^eps/(1+e^eps) for (eps, delta)-DP */
    const double mus[] = {0.1, 0.5, 1, 2, 4};
    for (int i = 0; i < 5; i++) {
        CHECK_OK(dp_audit_fdp_p_value(1, 1, 1, DP_FDP_GAUSSIAN, mus[i], 0, &p));
        CHECK_CLOSE(p, phi(mus[i] / 2), 1e-9);
    }
    const double eps[] = {0.1, 1, 3};
    for (int i = 0; i < 3; i++) {
        const double q = 1 / (1 + exp(-eps[i]));
        CHECK_OK(dp_audit_fdp_p_value(1, 1, 1, DP_FDP_APPROX_DP, eps[i], 0, &p));
        CHECK_CLOSE(p, q, 1e-9);
        CHECK_OK(dp_audit_fdp_p_value(1, 1, 1, DP_FDP_APPROX_DP, eps[i], 0.01, &p));
        CHECK_CLOSE(p, 0.01 + 0.99 * q, 1e-9);
    }
    /* pure DP, all k guesses correct: exactly Steinke et al.'s binomial q^k (randomised response,
     * proved optimal by them), whatever m */
    const long ks[] = {1, 5, 10, 40};
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < 3; e++) {
            double want = pow(1 / (1 + exp(-eps[e])), (double)ks[i]);
            CHECK_OK(dp_audit_fdp_p_value(100, ks[i], ks[i], DP_FDP_APPROX_DP, eps[e], 0, &p));
            if (fabs(p / want - 1) > 1e-9)
                fprintf(stderr, "  k %ld eps %g: %.15g, want %.15g\n", ks[i], eps[e], p, want);
            CHECK_CLOSE(p / want, 1.0, 1e-9);
        }
    /* reference values: an independent implementation in Python (statistics.NormalDist, the
     * recursion as in the authors' code, bisection on tau to 2^-200) */
    CHECK_OK(dp_audit_fdp_p_value(100, 10, 8, DP_FDP_APPROX_DP, 1.0, 0, &p));
    CHECK_CLOSE(p, 0.6097328891305767, 1e-9);
    CHECK_OK(dp_audit_fdp_p_value(100, 10, 8, DP_FDP_APPROX_DP, 1.0, 1e-3, &p));
    CHECK_CLOSE(p, 0.6249572621454427, 1e-9);
    CHECK_OK(dp_audit_fdp_p_value(1000, 200, 170, DP_FDP_GAUSSIAN, 0.5, 0, &p));
    CHECK_CLOSE(p / 0.020635313544625365, 1.0, 1e-8);
    CHECK_OK(dp_audit_fdp_p_value(50, 20, 18, DP_FDP_GAUSSIAN, 1.0, 0, &p));
    CHECK_CLOSE(p, 0.47220452898618326, 1e-9);
    CHECK_OK(dp_audit_fdp_p_value(10, 10, 10, DP_FDP_GAUSSIAN, 1.0, 0, &p));
    CHECK_CLOSE(p, 0.1188789675486958, 1e-9);
    /* validity against mechanisms that attain a binomial: k independent guesses, each right
     * with the single-guess optimum (randomised response for DP; a Gaussian per canary,
     * guessed by its sign, for GDP). The bound may be looser, never below. */
    const long vs[] = {0, 3, 6, 8, 10};
    for (int i = 0; i < 5; i++)
        for (int e = 0; e < 3; e++) {
            double pb, pd;
            CHECK_OK(dp_audit_fdp_p_value(30, 10, vs[i], DP_FDP_APPROX_DP, eps[e], 0, &pd));
            CHECK(pd >= binom_tail(10, 1 / (1 + exp(-eps[e])), vs[i]) * (1 - 1e-9));
            CHECK_OK(dp_audit_fdp_p_value(30, 10, vs[i], DP_FDP_GAUSSIAN, mus[e + 1], 0, &pb));
            CHECK(pb >= binom_tail(10, phi(mus[e + 1] / 2), vs[i]) * (1 - 1e-9));
        }
    /* no correct guesses: p = 1; more correct: smaller p */
    CHECK_OK(dp_audit_fdp_p_value(100, 50, 0, DP_FDP_GAUSSIAN, 3, 0, &p));
    CHECK(p == 1);
    double prev = 2;
    for (long v = 25; v <= 50; v += 5) {
        CHECK_OK(dp_audit_fdp_p_value(100, 50, v, DP_FDP_GAUSSIAN, 0.5, 0, &p));
        CHECK(p < prev || p == 1); /* 1: not ruled out even at probability 1 */
        prev = p;
    }
    /* errors */
    CHECK(dp_audit_fdp_p_value(10, 11, 5, DP_FDP_GAUSSIAN, 1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_p_value(10, 10, 11, DP_FDP_GAUSSIAN, 1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_p_value(10, 0, 0, DP_FDP_GAUSSIAN, 1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_p_value(10, 10, 5, DP_FDP_GAUSSIAN, -1, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_p_value(10, 10, 5, DP_FDP_APPROX_DP, INFINITY, 0, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_p_value(10, 10, 5, DP_FDP_APPROX_DP, 1, 2, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_p_value(10, 10, 5, DP_FDP_COUNT, 1, 0, &p) == DP_ERR_INVALID);
}

static void test_fdp_bound(void) {
    double e, mu, s;
    /* reference values (Python, as above; Steinke et al.'s bound beside them) */
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1e-5, 0.95, DP_FDP_APPROX_DP, &e, &mu));
    CHECK_CLOSE(e, 1.3863450571781968, 1e-6);
    CHECK(isnan(mu));
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1e-5, 0.95, DP_FDP_GAUSSIAN, &e, &mu));
    CHECK_CLOSE(mu, 0.5551622072459637, 1e-6);
    CHECK_CLOSE(e, 2.2406907668337226, 1e-5);
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 1000, 1000, 1e-5, 0.95, DP_FDP_GAUSSIAN, &e, &mu));
    CHECK_CLOSE(mu, 2.36807390040166, 1e-6);
    CHECK_CLOSE(e, 12.334569509141147, 1e-5);
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 100, 83, 1e-5, 0.95, DP_FDP_APPROX_DP, &e, NULL));
    CHECK_CLOSE(e, 1.1149615567288216, 1e-6);
    /* pure DP: never above Steinke et al.'s bound (exact there), equal when all are correct */
    const long rs[] = {10, 50, 200, 1000};
    for (int i = 0; i < 4; i++)
        for (long v = rs[i] / 2; v <= rs[i]; v += rs[i] / 10) {
            CHECK_OK(dp_audit_fdp_epsilon_bound(1000, rs[i], v, 0, 0.95, DP_FDP_APPROX_DP, &e, NULL));
            CHECK_OK(dp_audit_epsilon_bound(1000, rs[i], v, 0, 0.95, &s));
            if (!(e <= s + 1e-6)) fprintf(stderr, "  r %ld v %ld: f-DP %g above Steinke %g\n", rs[i], v, e, s);
            CHECK(e <= s + 1e-6);
            if (v == rs[i]) CHECK_CLOSE(e, s, 1e-6);
        }
    /* with delta (1e-5, m = 1000: m delta small) the two stay within 0.02 + 5%; a larger m
     * delta costs Steinke et al. more (their delta term grows with m), not the curve */
    printf("  f-DP vs Steinke et al., m 1000, delta 1e-5, 95%%:\n");
    for (long v = 120; v <= 200; v += 20) {
        double eg;
        CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, v, 1e-5, 0.95, DP_FDP_APPROX_DP, &e, NULL));
        CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, v, 1e-5, 0.95, DP_FDP_GAUSSIAN, &eg, &mu));
        CHECK_OK(dp_audit_epsilon_bound(1000, 200, v, 1e-5, 0.95, &s));
        printf("    %ld of 200: Steinke %.4f, f-DP (eps, delta) %.4f, Gaussian %.4f (mu %.4f)\n", v, s, e, eg, mu);
        CHECK(fabs(e - s) <= 0.05 * s + 0.02);
        /* mu-GDP is (eps(mu), delta)-DP: the Gaussian number is not below the other */
        CHECK(eg >= e - 1e-6);
        /* and exceeds it by the Gaussian assumption only, not by a large factor */
        CHECK(eg <= 2.5 * e + 1e-6);
    }
    CHECK_OK(dp_audit_fdp_epsilon_bound(100, 36, 35, 1e-4, 0.95, DP_FDP_APPROX_DP, &e, NULL));
    CHECK_OK(dp_audit_epsilon_bound(100, 36, 35, 1e-4, 0.95, &s));
    CHECK(e > s);
    /* more correct guesses -> higher bound, for both curves */
    double pe = -1, pm = -1;
    for (long v = 100; v <= 200; v += 10) {
        double eg;
        CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, v, 1e-5, 0.95, DP_FDP_APPROX_DP, &e, NULL));
        CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, v, 1e-5, 0.95, DP_FDP_GAUSSIAN, &eg, &mu));
        if (v <= 110) CHECK(e == 0 && mu == 0 && eg == 0); /* about half right: nothing to say */
        else CHECK(e > pe && mu > pm);
        pe = e;
        pm = mu;
    }
    /* higher confidence -> lower bound */
    double e90, e99;
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1e-5, 0.90, DP_FDP_GAUSSIAN, &e90, NULL));
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1e-5, 0.99, DP_FDP_GAUSSIAN, &e99, NULL));
    CHECK(e90 > e99 && e99 > 0);
    /* the bound is where the p-value crosses 1 - confidence */
    double p_lo, p_hi;
    CHECK_OK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1e-5, 0.95, DP_FDP_GAUSSIAN, &e, &mu));
    CHECK_OK(dp_audit_fdp_p_value(1000, 200, 170, DP_FDP_GAUSSIAN, mu - 1e-4, 0, &p_lo));
    CHECK_OK(dp_audit_fdp_p_value(1000, 200, 170, DP_FDP_GAUSSIAN, mu + 1e-4, 0, &p_hi));
    CHECK(p_lo < 0.05 && p_hi > 0.05);
    CHECK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1e-5, 1.0, DP_FDP_GAUSSIAN, &e, &mu) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_epsilon_bound(1000, 200, 170, 1.0, 0.95, DP_FDP_APPROX_DP, &e, &mu) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_epsilon_bound(1000, 200, 201, 1e-5, 0.95, DP_FDP_APPROX_DP, &e, &mu) == DP_ERR_RANGE);
}

/* ---- the claimed privacy profile (the verdict's test) ------------------------------------ */

/* delta(eps) of mu-GDP (Dong, Roth & Su 2019), written out here, not shared with src/privacy/audit.c */
static double gdp_delta_ref(double mu, double eps) {
    const double d = phi(-eps / mu + mu / 2) - exp(eps) * phi(-eps / mu - mu / 2);
    return d > 0 ? d : 0;
}

static void test_fdp_profile(void) {
    double p, q;
    /* one point: exactly the (eps, delta) curve of dp_audit_fdp_p_value */
    const long mk[][3] = {{1, 1, 1}, {100, 10, 8}, {1000, 200, 170}, {100, 36, 35}, {30, 10, 3}, {5000, 500, 480}};
    const double pts[][2] = {{0, 0}, {0.5, 0}, {1, 1e-3}, {3, 1e-5}, {0.2, 0.05}};
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 5; j++) {
            const dp_fdp_profile one = {&pts[j][0], &pts[j][1], 1};
            CHECK_OK(dp_audit_fdp_profile_p_value(mk[i][0], mk[i][1], mk[i][2], &one, &p));
            CHECK_OK(dp_audit_fdp_p_value(mk[i][0], mk[i][1], mk[i][2], DP_FDP_APPROX_DP, pts[j][0], pts[j][1], &q));
            /* bit for bit, but at eps 0, where the curve's max(y - delta, 1 - delta - (1 - y)) gains
             * up to 1e-16 by rounding the second form and the profile keeps the exact first one */
            const int same = pts[j][0] > 0 ? p == q : fabs(p - q) <= 1e-6 * q + 1e-15;
            if (!same)
                fprintf(stderr, "  profile of one point %g %g: %.17g, curve %.17g\n", pts[j][0], pts[j][1], p, q);
            CHECK(same);
        }
    /* a family of points: never above the p-value of any one of them (every point is claimed at
     * once), the same in any order and with a useless point (delta 1) added */
    double e[5], d[5], er[6], dr[6];
    for (int j = 0; j < 5; j++) {
        e[j] = pts[j][0];
        d[j] = pts[j][1];
        er[4 - j] = e[j];
        dr[4 - j] = d[j];
    }
    er[5] = 2;
    dr[5] = 1;
    const dp_fdp_profile all = {e, d, 5}, rev = {er, dr, 6};
    for (int i = 0; i < 6; i++) {
        CHECK_OK(dp_audit_fdp_profile_p_value(mk[i][0], mk[i][1], mk[i][2], &all, &p));
        CHECK_OK(dp_audit_fdp_profile_p_value(mk[i][0], mk[i][1], mk[i][2], &rev, &q));
        CHECK_CLOSE(p, q, 1e-15);
        for (int j = 0; j < 5; j++) {
            CHECK_OK(dp_audit_fdp_p_value(mk[i][0], mk[i][1], mk[i][2], DP_FDP_APPROX_DP, e[j], d[j], &q));
            CHECK(p <= q * (1 + 1e-6) + 1e-15); /* (the rounding at eps 0 above) */
        }
    }
    /* the privacy profile of mu-GDP on a grid of eps: its curve lies below the Gaussian one
     * (validity: p not below the Gaussian p-value) and approaches it as the grid gets finer */
    const double mus[] = {0.5, 1, 2};
    const long gk[] = {200, 200, 1000}, gv[] = {170, 192, 1000}; /* cases with p < 1 */
    for (int im = 0; im < 3; im++) {
        const double mu = mus[im];
        double pg;
        CHECK_OK(dp_audit_fdp_p_value(1000, gk[im], gv[im], DP_FDP_GAUSSIAN, mu, 0, &pg));
        CHECK(pg < 0.5);
        double prev = 2;
        const double steps[] = {1, 0.25, 0.05, 0.01};
        for (int s = 0; s < 4; s++) {
            enum { NMAX = 2001 };
            static double ge[NMAX], gd[NMAX];
            size_t n = 0;
            for (double x = 0; x <= 20 && n < NMAX; x += steps[s], n++) {
                ge[n] = x;
                gd[n] = gdp_delta_ref(mu, x);
            }
            const dp_fdp_profile g = {ge, gd, n};
            CHECK_OK(dp_audit_fdp_profile_p_value(1000, gk[im], gv[im], &g, &p));
            printf("  mu %.1f: profile of %4zu points (eps step %.2f): p %.6g, Gaussian curve %.6g\n", mu, n, steps[s],
                   p, pg);
            CHECK(p >= pg * (1 - 1e-9));
            CHECK(p <= prev * (1 + 1e-12)); /* finer grid (a superset of points here): smaller */
            prev = p;
            if (s == 3) CHECK(p <= pg * 1.02 + 1e-9);
        }
    }
    /* more correct guesses: smaller p; p = 1 when nothing is ruled out */
    double prev = 2;
    for (long v = 100; v <= 200; v += 10) {
        CHECK_OK(dp_audit_fdp_profile_p_value(1000, 200, v, &all, &p));
        CHECK(p < prev || p == 1);
        prev = p;
    }
    CHECK_OK(dp_audit_fdp_profile_p_value(1000, 200, 100, &all, &p));
    CHECK(p == 1);
    /* errors */
    const double bad_e = -1, bad_d = 2, ok = 0.5;
    const dp_fdp_profile empty = {e, d, 0}, neg = {&bad_e, &ok, 1}, big = {&ok, &bad_d, 1};
    CHECK(dp_audit_fdp_profile_p_value(10, 10, 5, &empty, &p) == DP_ERR_INVALID);
    CHECK(dp_audit_fdp_profile_p_value(10, 10, 5, NULL, &p) == DP_ERR_INVALID);
    CHECK(dp_audit_fdp_profile_p_value(10, 10, 5, &neg, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_profile_p_value(10, 10, 5, &big, &p) == DP_ERR_RANGE);
    CHECK(dp_audit_fdp_profile_p_value(10, 11, 5, &all, &p) == DP_ERR_RANGE);
}

/* dp_accountant_delta_many: the numbers of dp_accountant_delta, one epsilon at a time */
static void test_delta_many(void) {
    dp_accountant *a;
    CHECK_OK(dp_accountant_create(&a));
    CHECK_OK(dp_accountant_step(a, 0.02, 1.2, 300));
    const double eps[] = {2.5, 0, 0.3, 1, 4, 8, 30}; /* any order */
    double many[7], one;
    const dp_accountant_kind kinds[] = {DP_ACCT_PRV, DP_ACCT_PLD, DP_ACCT_RDP};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(dp_accountant_delta_many(a, kinds[k], eps, 7, NULL, many));
        for (int i = 0; i < 7; i++) {
            CHECK_OK(dp_accountant_delta(a, kinds[k], eps[i], NULL, &one));
            /* PRV and PLD read all epsilons off in one sweep: the same up to rounding */
            if (!(fabs(many[i] - one) <= 1e-12 * one + 1e-17))
                fprintf(stderr, "  %s eps %g: many %.17g, one %.17g\n", dp_accountant_kind_name(kinds[k]), eps[i],
                        many[i], one);
            CHECK(fabs(many[i] - one) <= 1e-12 * one + 1e-17);
            if (i > 1) CHECK(many[i] <= many[i - 1]);
        }
    }
    const double neg = -1;
    CHECK(dp_accountant_delta_many(a, DP_ACCT_PRV, &neg, 1, NULL, many) == DP_ERR_RANGE);
    dp_accountant_destroy(a);
}

static void test_guess(void) {
    enum { M = 200 };
    float s[M];
    unsigned char in[M];
    for (int j = 0; j < M; j++) {
        in[j] = (unsigned char)((j * 7 + 3) % 5 < 2 ? 1 : (j % 3 == 0)); /* some pattern */
        s[j] = in[j] ? 1.0f + 0.001f * (float)j : -1.0f - 0.001f * (float)j;
    }
    dp_audit_result r;
    memset(&r, 0, sizeof r);
    /* perfectly separated, fixed r = 40: all 40 correct, tested at the full level */
    CHECK_OK(dp_audit_guess(s, in, M, 40, 0, 0.95, &r));
    CHECK(r.guesses == 40 && r.correct == 40);
    CHECK_CLOSE(r.p_level, 0.05, 1e-12);
    double e;
    CHECK_OK(dp_audit_epsilon_bound(M, 40, 40, 0, 0.95, &e));
    CHECK_CLOSE(r.eps_lower, e, 1e-9);
    /* the f-DP estimator on the same guesses: pure DP, all correct, equals the above; the
     * Gaussian curve's mu is positive, hence an infinite epsilon at delta = 0 */
    double mu;
    CHECK(r.fdp_guesses == 40 && r.fdp_correct == 40 && r.gdp_guesses == 40 && r.gdp_correct == 40);
    CHECK_CLOSE(r.fdp_eps_lower, e, 1e-6);
    CHECK_OK(dp_audit_fdp_epsilon_bound(M, 40, 40, 0, 0.95, DP_FDP_GAUSSIAN, &e, &mu));
    CHECK_CLOSE(r.gdp_mu_lower, mu, 1e-9);
    CHECK(mu > 0 && isinf(r.gdp_eps_lower));
    /* no claim, no verdict */
    CHECK(isnan(r.profile_p) && !r.violation && r.profile_guesses == 0);
    /* the verdict's test on the same guesses: 40 of 40 right rejects a claim of eps 1 (pure DP:
     * p = (e/(1+e))^40 ~ 4e-6), not one of eps 5 ((e^5/(1+e^5))^40 ~ 0.76) */
    {
        const double ce[] = {1, 5}, cd[] = {0, 0};
        double pc, es;
        CHECK_OK(dp_audit_epsilon_bound(M, 40, 40, 0, 0.95, &es));
        for (int c = 0; c < 2; c++) {
            const dp_fdp_profile claim = {&ce[c], &cd[c], 1};
            CHECK_OK(dp_audit_guess_profile(s, in, M, 40, 0, 0.95, &claim, &r));
            CHECK_OK(dp_audit_fdp_profile_p_value(M, 40, 40, &claim, &pc));
            CHECK_CLOSE(r.profile_p, pc, 1e-15);
            CHECK_CLOSE(pc, pow(1 / (1 + exp(-ce[c])), 40), 1e-9 * pc);
            CHECK(r.profile_guesses == 40 && r.profile_correct == 40);
            CHECK(r.violation == (c == 0));
            CHECK_CLOSE(r.eps_lower, es, 1e-9); /* the lower bounds are untouched */
        }
        /* over the grid: the smallest p-value times the 6 counts (Bonferroni) */
        const dp_fdp_profile claim = {&ce[0], &cd[0], 1};
        CHECK_OK(dp_audit_guess_profile(s, in, M, 0, 0, 0.95, &claim, &r));
        CHECK_OK(dp_audit_fdp_profile_p_value(M, r.profile_guesses, r.profile_correct, &claim, &pc));
        CHECK_CLOSE(r.profile_p, fmin(1, 6 * pc), 1e-15);
        CHECK(r.violation == (r.profile_p < 0.05));
        CHECK(r.violation);
    }
    CHECK_OK(dp_audit_guess(s, in, M, 40, 1e-5, 0.95, &r));
    CHECK_OK(dp_audit_fdp_epsilon_bound(M, 40, 40, 1e-5, 0.95, DP_FDP_GAUSSIAN, &e, &mu));
    CHECK_CLOSE(r.gdp_eps_lower, e, 1e-9);
    CHECK(r.gdp_eps_lower >= r.fdp_eps_lower);
    /* grid: Bonferroni over 6 counts; the best is r = ... with all correct (largest r that
     * stays all correct is limited by the smaller class) */
    CHECK_OK(dp_audit_guess(s, in, M, 0, 0, 0.95, &r));
    CHECK_CLOSE(r.p_level, 0.05 / 6, 1e-12);
    CHECK(r.correct <= r.guesses && r.eps_lower > 0);
    CHECK(r.fdp_correct <= r.fdp_guesses && r.fdp_eps_lower > 0 && r.gdp_mu_lower > 0);
    /* scores unrelated to membership: bound 0 (grid, independent coin flips) */
    dp_rng g;
    dp_rng_seed(&g, 3);
    for (int j = 0; j < M; j++) {
        in[j] = dp_rng_uniform(&g) < 0.5;
        s[j] = (float)dp_rng_normal(&g);
    }
    CHECK_OK(dp_audit_guess(s, in, M, 0, 1e-5, 0.95, &r));
    if (r.eps_lower != 0) fprintf(stderr, "  random scores: bound %g (r %ld v %ld)\n", r.eps_lower, r.guesses, r.correct);
    CHECK(r.eps_lower == 0);
    CHECK(r.fdp_eps_lower == 0 && r.gdp_mu_lower == 0 && r.gdp_eps_lower == 0);
    /* not even the claim of perfect privacy (eps 0, delta 0) is rejected */
    {
        const double z = 0;
        const dp_fdp_profile claim = {&z, &z, 1};
        CHECK_OK(dp_audit_guess_profile(s, in, M, 0, 1e-5, 0.95, &claim, &r));
        CHECK(!r.violation && r.profile_p >= 0.05);
        CHECK(dp_audit_guess_profile(s, in, M, 0, 1e-5, 0.95, NULL, &r) == DP_ERR_INVALID);
    }
    /* errors */
    CHECK(dp_audit_guess(s, in, 1, 0, 0, 0.95, &r) == DP_ERR_RANGE);
    CHECK(dp_audit_guess(s, in, M, M + 1, 0, 0.95, &r) == DP_ERR_RANGE);
    s[5] = NAN;
    CHECK(dp_audit_guess(s, in, M, 0, 0, 0.95, &r) == DP_ERR_NONFINITE);
}

/* ---- audited runs ---------------------------------------------------------------------- */

#define SPEC "linear(16) tanh linear(4)"

static dp_audit_params small_params(double eps) {
    dp_audit_params p = dp_audit_default_params();
    p.num_canaries = 500;
    p.max_grad_norm = 0.5;
    p.target_epsilon = eps;
    p.delta = 1e-4;
    p.expected_batch = 50;
    p.epochs = 10;
    p.optim.lr = 0.5;
    p.optim.momentum = 0.9;
    p.seed = 11;
    p.noise_seeded = 1; /* reproducible tests; the default draws from the OS CSPRNG */
    p.noise_seed = 11;
    return p;
}

/* hooks: NULL (dp_audit_run, the public entry) or the test switches (dp__audit) */
static dp_audit_result run_hooks(const dp_dataset *d, const dp_audit_params *p, const dp__audit_test *hooks) {
    dp_model *m = new_model(SPEC, d->c, d->h, d->w, 5);
    dp_audit_result r;
    memset(&r, 0, sizeof r);
    if (hooks) CHECK_OK(dp__audit(m, d, NULL, p, hooks, &r, NULL, NULL));
    else CHECK_OK(dp_audit_run(m, d, NULL, p, &r, NULL, NULL));
    dp_model_destroy(m);
    return r;
}

static dp_audit_result run(const dp_dataset *d, const dp_audit_params *p) { return run_hooks(d, p, NULL); }

static void show(const char *what, const dp_audit_params *p, const dp_audit_result *r) {
    printf("  %-34s %-8s %-7s claimed eps %.3f (sigma %.3f), lower bound %.3f, %ld/%ld correct: %s; "
           "f-DP %.3f, Gaussian %.3f (mu %.3f)\n",
           what, dp_canary_kind_name(p->canary), dp_clip_mode_name(p->clipping), r->epsilon, r->sigma, r->eps_lower,
           r->correct, r->guesses, r->violation ? "VIOLATION" : "consistent", r->fdp_eps_lower, r->gdp_eps_lower,
           r->gdp_mu_lower);
}

static void test_honest(const dp_dataset *d) {
    const double eps[] = {1, 2, 4, 8};
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++)
        for (int e = 0; e < 4; e++) {
            dp_audit_params p = small_params(eps[e]);
            p.clipping = (dp_clip_mode)mode;
            p.seed = p.noise_seed = 100 + (uint64_t)(mode * 4 + e);
            dp_audit_result r = run(d, &p);
            show("honest", &p, &r);
            CHECK(r.epsilon <= eps[e] + 1e-9 && r.epsilon > eps[e] - 0.02);
            CHECK(r.eps_lower < r.epsilon);
            CHECK(!r.violation);
            CHECK(r.fdp_eps_lower < r.epsilon && r.gdp_eps_lower >= r.fdp_eps_lower - 1e-6);
            CHECK(r.num_canaries == 500 && r.included > 200 && r.included < 300);
            CHECK(r.guesses > 0 && r.correct <= r.guesses);
        }
    /* input-space (black-box) canaries: mislabelled copies of training rows */
    for (int e = 0; e < 2; e++) {
        dp_audit_params p = small_params(e ? 8 : 2);
        p.canary = DP_CANARY_INPUT;
        p.clipping = e ? DP_CLIP_VANILLA : DP_CLIP_GHOST;
        dp_audit_result r = run(d, &p);
        show("honest", &p, &r);
        CHECK(r.eps_lower < r.epsilon && !r.violation);
    }
}

/* more canaries and epochs than the honest runs: the audit's power (how many canaries it
 * can place confidently) limits the largest bound it can show */
static dp_audit_params broken_params(double eps) {
    dp_audit_params p = small_params(eps);
    p.num_canaries = 1000;
    p.epochs = 20;
    return p;
}

static void test_broken(const dp_dataset *d) {
    const double eps[] = {1, 2};
    for (int e = 0; e < 2; e++) {
        dp_audit_params p = broken_params(eps[e]);
        const dp__audit_test noise = {0.1, 1}, canary = {1, 10};
        dp_audit_result r = run_hooks(d, &p, &noise);
        show("broken: noise x 0.1", &p, &r);
        CHECK(r.eps_lower > r.epsilon);
        CHECK(r.violation);
        CHECK(r.fdp_eps_lower > r.epsilon);
        p = broken_params(eps[e]);
        p.clipping = DP_CLIP_FAST;
        r = run_hooks(d, &p, &canary);
        show("broken: canary gradient 10 C", &p, &r);
        CHECK(r.eps_lower > r.epsilon);
        CHECK(r.violation);
        CHECK(r.fdp_eps_lower > r.epsilon);
    }
}

/* The finding that made the verdict a test of the whole claimed profile: noise scaled by 0.5
 * (the accountant still records sigma) was called "consistent" by the single-point lower bound.
 * Here, on the small task with as many canaries as the default gives (one per trainable
 * parameter, at most 4 n), the profile test flags it at every claimed epsilon, and passes the
 * honest runs of the same configuration. */
#define SPEC_WIDE "linear(64) tanh linear(4)"

static dp_audit_result run_wide(const dp_dataset *d, const dp_audit_params *p, const dp__audit_test *hooks) {
    dp_model *m = new_model(SPEC_WIDE, d->c, d->h, d->w, 5);
    dp_audit_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(dp__audit(m, d, NULL, p, hooks, &r, NULL, NULL));
    CHECK(r.num_canaries == dp_audit_num_canaries(m, d->n, p));
    dp_model_destroy(m);
    return r;
}

static void test_broken_half(const dp_dataset *d) {
    const double eps[] = {2, 3, 4};
    const dp__audit_test half = {0.5, 1}, honest = {1, 1};
    for (int e = 0; e < 3; e++) {
        dp_audit_params p = small_params(eps[e]);
        p.num_canaries = 0; /* the default: here min(4420 parameters, 4 x 1000 rows) = 4000 */
        p.epochs = 20;
        p.seed = p.noise_seed = 40 + (uint64_t)e;
        dp_audit_result r = run_wide(d, &p, &half);
        printf("  broken: noise x 0.5, eps %.0f: m %d, profile p %.3g (%ld/%ld), lower bounds %.3f, f-DP %.3f: %s\n",
               eps[e], r.num_canaries, r.profile_p, r.profile_correct, r.profile_guesses, r.eps_lower,
               r.fdp_eps_lower, r.violation ? "VIOLATION" : "consistent");
        CHECK(r.num_canaries == 4000);
        CHECK(r.violation && r.profile_p < 0.05);
        CHECK(r.profile_points > 100);
        r = run_wide(d, &p, &honest);
        printf("  honest,            eps %.0f: m %d, profile p %.3g (%ld/%ld), lower bounds %.3f, f-DP %.3f: %s\n",
               eps[e], r.num_canaries, r.profile_p, r.profile_correct, r.profile_guesses, r.eps_lower,
               r.fdp_eps_lower, r.violation ? "VIOLATION" : "consistent");
        CHECK(!r.violation && r.profile_p >= 0.05);
        CHECK(r.eps_lower < r.epsilon && r.fdp_eps_lower < r.epsilon);
    }
}

static void test_deterministic_and_errors(const dp_dataset *d) {
    dp_audit_params p = small_params(4);
    p.num_canaries = 100;
    p.epochs = 2;
    float s1[100], s2[100];
    unsigned char i1[100], i2[100];
    dp_audit_result r1, r2;
    dp_model *m = new_model(SPEC, d->c, d->h, d->w, 5);
    CHECK_OK(dp_audit_run(m, d, NULL, &p, &r1, s1, i1));
    dp_model_destroy(m);
    m = new_model(SPEC, d->c, d->h, d->w, 5);
    CHECK_OK(dp_audit_run(m, d, NULL, &p, &r2, s2, i2));
    CHECK(!memcmp(s1, s2, sizeof s1) && !memcmp(i1, i2, sizeof i1));
    CHECK(r1.correct == r2.correct && r1.eps_lower == r2.eps_lower);
    /* the default noise source (the OS CSPRNG, as dp_train): the same canaries, other noise */
    {
        dp_audit_params ps = p;
        ps.noise_seeded = 0;
        float t1[100], t2[100];
        unsigned char j1[100], j2[100];
        dp_audit_result q1, q2;
        dp_model *a = new_model(SPEC, d->c, d->h, d->w, 5), *b = new_model(SPEC, d->c, d->h, d->w, 5);
        CHECK_OK(dp_audit_run(a, d, NULL, &ps, &q1, t1, j1));
        CHECK_OK(dp_audit_run(b, d, NULL, &ps, &q2, t2, j2));
        CHECK(!memcmp(j1, j2, sizeof j1) && !memcmp(j1, i1, sizeof j1) && memcmp(t1, t2, sizeof t1) != 0);
        CHECK(q1.epsilon == r1.epsilon && q1.sigma == r1.sigma);
        dp_model_destroy(a);
        dp_model_destroy(b);
    }
    int inc = 0;
    for (int j = 0; j < 100; j++) inc += i1[j];
    CHECK(inc == r1.included);

    dp_audit_result r;
    memset(&r, 0, sizeof r);
    /* each message names the field, as the library does (the CLI maps it to its flag) */
    const char *flag[] = {"num_canaries 1:", "confidence 1.5:", "delta 0.1:", "expected_batch 100000:", "epochs 0:",
                          "noise_scale -1:", "canary_scale 0:", "guesses 101:"};
    for (int k = 0; k < 8; k++) {
        dp_audit_params b = p;
        dp__audit_test hooks = {1, 1};
        switch (k) {
        case 0: b.num_canaries = 1; break;
        case 1: b.confidence = 1.5; break;
        case 2: b.delta = 0.1; break;
        case 3: b.expected_batch = 100000; break;
        case 4: b.epochs = 0; break;
        case 5: hooks.noise_scale = -1; break;
        case 6: hooks.canary_scale = 0; break;
        default: b.guesses = 101; break;
        }
        dp_status st = dp__audit(m, d, NULL, &b, &hooks, &r, NULL, NULL);
        CHECK(st != DP_OK);
        const char *e = dp_last_error();
        if (!strstr(e, flag[k])) fprintf(stderr, "  message \"%s\" does not name %s\n", e, flag[k]);
        CHECK(strstr(e, flag[k]) != NULL);
    }
    dp_canary_kind k;
    CHECK_OK(dp_canary_kind_parse("Input", &k));
    CHECK(k == DP_CANARY_INPUT);
    CHECK(dp_canary_kind_parse("ghost", &k) == DP_ERR_INVALID);
    CHECK(!strcmp(dp_canary_kind_name(DP_CANARY_GRADIENT), "gradient"));
    dp_model_destroy(m);
}

int main(void) {
    /* the models here are tiny: one thread (OpenMP barriers on a busy 2-core machine cost
     * more than the work) */
    omp_set_num_threads(1);
    test_p_value();
    test_bound();
    test_fdp_p_value();
    test_fdp_bound();
    test_fdp_profile();
    test_delta_many();
    test_guess();
    dp_dataset d;
    make_ds(&d, 500, 1, 8, 8, 4, 0.3, 1);
    test_honest(&d);
    test_broken(&d);
    dp_dataset d2;
    make_ds(&d2, 1000, 1, 8, 8, 4, 0.3, 2);
    test_broken_half(&d2);
    dp_dataset_free(&d2);
    test_deterministic_and_errors(&d);
    dp_dataset_free(&d);
    return t_finish("test_audit");
}
