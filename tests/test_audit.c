/* test_audit.c: one-run privacy auditing (dpsgd/audit.h).
 *   - the p-value and the epsilon bound against values computed independently (Python,
 *     exact binomial sums) and their shape: all-correct guesses give a bound that grows
 *     with the number of guesses, 50% correct gives 0, the bound falls as the confidence
 *     rises or delta grows, and rises with the number of correct guesses;
 *   - guessing from scores (top half "in", bottom half "out", Bonferroni over the grid);
 *   - audited runs on a small synthetic task: honest runs (every clipping mode, epsilon 1, 2,
 *     4, 8; gradient and input canaries) stay below the claimed epsilon; the test-only broken
 *     builds (noise scaled by 0.1, canary gradient 10x the clipping norm) are caught by the
 *     white-box audit, whose bound then exceeds the claim;
 *   - determinism per seed, parameter errors naming their flag, no leaks. */
#include <omp.h>
#include <stdint.h>

#include "fixtures.h"

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
    /* grid: Bonferroni over 6 counts; the best is r = ... with all correct (largest r that
     * stays all correct is limited by the smaller class) */
    CHECK_OK(dp_audit_guess(s, in, M, 0, 0, 0.95, &r));
    CHECK_CLOSE(r.p_level, 0.05 / 6, 1e-12);
    CHECK(r.correct <= r.guesses && r.eps_lower > 0);
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
    return p;
}

static dp_audit_result run(const dp_dataset *d, const dp_audit_params *p) {
    dp_model *m = new_model(SPEC, d->c, d->h, d->w, 5);
    dp_audit_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(dp_audit_run(m, d, NULL, p, &r, NULL, NULL));
    dp_model_destroy(m);
    return r;
}

static void show(const char *what, const dp_audit_params *p, const dp_audit_result *r) {
    printf("  %-34s %-8s %-7s claimed eps %.3f (sigma %.3f), lower bound %.3f, %ld/%ld correct: %s\n", what,
           dp_canary_kind_name(p->canary), dp_clip_mode_name(p->clipping), r->epsilon, r->sigma, r->eps_lower,
           r->correct, r->guesses, r->violation ? "VIOLATION" : "consistent");
}

static void test_honest(const dp_dataset *d) {
    const double eps[] = {1, 2, 4, 8};
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++)
        for (int e = 0; e < 4; e++) {
            dp_audit_params p = small_params(eps[e]);
            p.clipping = (dp_clip_mode)mode;
            p.seed = 100 + (uint64_t)(mode * 4 + e);
            dp_audit_result r = run(d, &p);
            show("honest", &p, &r);
            CHECK(r.epsilon <= eps[e] + 1e-9 && r.epsilon > eps[e] - 0.02);
            CHECK(r.eps_lower < r.epsilon);
            CHECK(!r.violation);
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
        p.debug_noise_scale = 0.1;
        dp_audit_result r = run(d, &p);
        show("broken: noise x 0.1", &p, &r);
        CHECK(r.eps_lower > r.epsilon);
        CHECK(r.violation);
        p = broken_params(eps[e]);
        p.clipping = DP_CLIP_FAST;
        p.debug_canary_scale = 10;
        r = run(d, &p);
        show("broken: canary gradient 10 C", &p, &r);
        CHECK(r.eps_lower > r.epsilon);
        CHECK(r.violation);
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
    int inc = 0;
    for (int j = 0; j < 100; j++) inc += i1[j];
    CHECK(inc == r1.included);

    dp_audit_result r;
    memset(&r, 0, sizeof r);
    const char *flag[] = {"--canaries", "--confidence", "--delta", "--batch-size", "--epochs", "debug_noise_scale",
                          "--guesses"};
    for (int k = 0; k < 7; k++) {
        dp_audit_params b = p;
        switch (k) {
        case 0: b.num_canaries = 1; break;
        case 1: b.confidence = 1.5; break;
        case 2: b.delta = 0.1; break;
        case 3: b.expected_batch = 100000; break;
        case 4: b.epochs = 0; break;
        case 5: b.debug_noise_scale = -1; break;
        default: b.guesses = 101; break;
        }
        dp_status st = dp_audit_run(m, d, NULL, &b, &r, NULL, NULL);
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
    test_guess();
    dp_dataset d;
    make_ds(&d, 500, 1, 8, 8, 4, 0.3, 1);
    test_honest(&d);
    test_broken(&d);
    test_deterministic_and_errors(&d);
    dp_dataset_free(&d);
    return t_finish("test_audit");
}
