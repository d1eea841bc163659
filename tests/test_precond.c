/* test_precond: private Kronecker-factored preconditioning (src/train/precond.c, dpsgd/precond.h)
 * and the accounting of a release before training (dp_calibrate_sigma_prior, prior_sigma).
 *   (a) exact statistics (no noise): A and B against a double-precision reference built here,
 *       P_a = A^-1/4 (P_a^4 A = I), the floor (the largest eigenvalue of P_a is (floor max)^-p),
 *       P_a commuting with A, the scale s;
 *   (b) the transform of the data against s P_a G P_b computed here; the folded classifier on
 *       G (the recipe's model: groupnorm, flatten, linear) gives the trained classifier's logits;
 *   (c) the release: noise of std z sqrt(2) on every upper-triangle entry (the sample std of
 *       released - exact), symmetric; seeded reproducible, the OS-seeded source different each
 *       time; the sensitivity bound (trace A = trace B <= n);
 *   (d) the accountant: the calibrated sigma puts the composed epsilon at the target, above the
 *       sigma without the release; dp_train's and the step API's epsilon is that of the composed
 *       history; a release
 *       that alone spends the target is refused; prior_sigma with checkpoints is refused;
 *   (e) errors: groups, power, floor, an overflowing noise; an example with a non-finite feature
 *       adds nothing, silently. */
#include "test.h"

#define N_EX 60
#define C_ 6
#define H_ 3
#define W_ 4
#define HW_ (H_ * W_)
#define DIM_ (C_ * HW_)
#define G_ 3

static void make_data(dp_dataset *d, size_t n, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = C_;
    d->h = H_;
    d->w = W_;
    d->dim = DIM_;
    d->n_classes = 3;
    d->x = dp_alloc(sizeof(float) * n * DIM_);
    d->y = dp_alloc(sizeof(int32_t) * n);
    dp_rng r;
    dp_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        d->y[i] = (int32_t)(i % 3);
        for (int j = 0; j < DIM_; j++) /* channels of different scales and a shared component */
            d->x[i * DIM_ + j] = (float)((1 + j / HW_) * dp_rng_normal(&r) + (j % HW_) * 0.3 * d->y[i]);
    }
}

/* G(x) in double, as the groupnorm layer: population variance, eps 1e-5 */
static void gn_ref(const float *x, double *g) {
    const int n = (C_ / G_) * HW_;
    for (int grp = 0; grp < G_; grp++) {
        const float *xg = x + grp * n;
        double m = 0, v = 0;
        for (int j = 0; j < n; j++) m += xg[j];
        m /= n;
        for (int j = 0; j < n; j++) v += (xg[j] - m) * (xg[j] - m);
        const double rs = 1 / sqrt(v / n + (double)1e-5f);
        for (int j = 0; j < n; j++) g[grp * n + j] = (xg[j] - m) * rs;
    }
}

static void moments_ref(const dp_dataset *d, double *a, double *b) {
    double g[DIM_];
    memset(a, 0, sizeof(double) * C_ * C_);
    memset(b, 0, sizeof(double) * HW_ * HW_);
    for (size_t i = 0; i < d->n; i++) {
        gn_ref(d->x + i * DIM_, g);
        for (int j = 0; j < DIM_; j++) g[j] /= sqrt((double)DIM_);
        for (int r = 0; r < C_; r++)
            for (int s = 0; s < C_; s++)
                for (int p = 0; p < HW_; p++) a[r * C_ + s] += g[r * HW_ + p] * g[s * HW_ + p];
        for (int p = 0; p < HW_; p++)
            for (int q = 0; q < HW_; q++)
                for (int r = 0; r < C_; r++) b[p * HW_ + q] += g[r * HW_ + p] * g[r * HW_ + q];
    }
}

static void matmul(const double *x, const double *y, double *z, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += x[i * n + k] * y[k * n + j];
            z[i * n + j] = s;
        }
}

static double max_abs_diff(const double *x, const double *y, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(x[i] - y[i]));
    return m;
}

/* the largest eigenvalue of a symmetric positive definite matrix, by power iteration */
static double top_eig(const double *m, int n) {
    double v[64], w[64], lam = 0;
    for (int i = 0; i < n; i++) v[i] = 1.0 + 0.01 * i;
    for (int it = 0; it < 2000; it++) {
        double nrm = 0;
        for (int i = 0; i < n; i++) {
            w[i] = 0;
            for (int k = 0; k < n; k++) w[i] += m[i * n + k] * v[k];
            nrm += w[i] * w[i];
        }
        nrm = sqrt(nrm);
        lam = nrm;
        for (int i = 0; i < n; i++) v[i] = w[i] / nrm;
    }
    return lam;
}

static void test_exact(void) {
    dp_dataset d;
    make_data(&d, N_EX, 1);
    double a[C_ * C_], b[HW_ * HW_], t1[HW_ * HW_], t2[HW_ * HW_], t3[HW_ * HW_];
    moments_ref(&d, a, b);
    dp_precond_params pp = dp_precond_default_params();
    pp.groups = G_;
    pp.floor = 1e-12; /* nothing floored: P^4 is the exact inverse */
    dp_precond pc;
    CHECK_OK(dp_precond_fit(&d, &pp, &pc));
    CHECK(pc.c == C_ && pc.hw == HW_ && pc.groups == G_);
    double sa = 0;
    for (int i = 0; i < C_ * C_; i++) sa = fmax(sa, fabs(a[i]));
    /* the released moments, exact without noise (up to G(x) in float, as the groupnorm layer) */
    CHECK(max_abs_diff(pc.a, a, C_ * C_) < 1e-6 * sa);
    CHECK(max_abs_diff(pc.b, b, HW_ * HW_) < 1e-6 * sa);
    memcpy(a, pc.a, sizeof a); /* the inverse powers are of what was released */
    memcpy(b, pc.b, sizeof b);
    /* P_a^4 A = I and P_b^4 B = I */
    matmul(pc.pa, pc.pa, t1, C_);
    matmul(t1, t1, t2, C_);
    matmul(t2, a, t3, C_);
    double id[HW_ * HW_];
    for (int i = 0; i < HW_ * HW_; i++) id[i] = 0;
    for (int i = 0; i < C_; i++) id[i * C_ + i] = 1;
    CHECK(max_abs_diff(t3, id, C_ * C_) < 1e-8);
    matmul(pc.pb, pc.pb, t1, HW_);
    matmul(t1, t1, t2, HW_);
    matmul(t2, b, t3, HW_);
    for (int i = 0; i < HW_ * HW_; i++) id[i] = 0;
    for (int i = 0; i < HW_; i++) id[i * HW_ + i] = 1;
    CHECK(max_abs_diff(t3, id, HW_ * HW_) < 1e-8);
    /* the scale: s^2 tr(P_a^2 A) tr(P_b^2 B) = tr^2 */
    double ta = 0, tb = 0, qa = 0, qb = 0;
    matmul(pc.pa, pc.pa, t1, C_);
    matmul(t1, a, t2, C_);
    for (int i = 0; i < C_; i++) ta += a[i * C_ + i], qa += t2[i * C_ + i];
    matmul(pc.pb, pc.pb, t1, HW_);
    matmul(t1, b, t2, HW_);
    for (int i = 0; i < HW_; i++) tb += b[i * HW_ + i], qb += t2[i * HW_ + i];
    CHECK_CLOSE(ta, tb, 1e-9);
    CHECK_CLOSE(pc.scale * pc.scale * qa * qb, ta * tb, 1e-9);
    /* (c) the sensitivity bound: every example adds at most 1 to the traces */
    CHECK(ta <= (double)N_EX + 1e-9 && ta > 0.5 * N_EX);
    dp_precond_free(&pc);

    /* the floor: eigenvalues below floor * max are raised to it, so the largest eigenvalue of
     * P_a is (floor max)^-p; P_a keeps A's eigenvectors (they commute) */
    pp.floor = 0.3;
    CHECK_OK(dp_precond_fit(&d, &pp, &pc));
    CHECK_CLOSE(top_eig(pc.pa, C_), pow(0.3 * top_eig(a, C_), -0.25), 1e-6);
    CHECK_CLOSE(top_eig(pc.pb, HW_), pow(0.3 * top_eig(b, HW_), -0.25), 1e-6);
    matmul(pc.pa, a, t1, C_);
    matmul(a, pc.pa, t2, C_);
    CHECK(max_abs_diff(t1, t2, C_ * C_) < 1e-9 * sa);
    dp_precond_free(&pc);
    /* another power: P_a^2 A = I at p = 1/2 */
    pp.floor = 1e-12;
    pp.power = 0.5;
    CHECK_OK(dp_precond_fit(&d, &pp, &pc));
    matmul(pc.pa, pc.pa, t1, C_);
    matmul(t1, a, t2, C_);
    for (int i = 0; i < C_ * C_; i++) id[i] = 0;
    for (int i = 0; i < C_; i++) id[i * C_ + i] = 1;
    CHECK(max_abs_diff(t2, id, C_ * C_) < 1e-8);
    dp_precond_free(&pc);
    dp_dataset_free(&d);
}

static void test_apply_fold(void) {
    dp_dataset d, orig;
    make_data(&d, N_EX, 2);
    make_data(&orig, N_EX, 2);
    dp_precond_params pp = dp_precond_default_params();
    pp.groups = G_;
    dp_precond pc;
    CHECK_OK(dp_precond_fit(&d, &pp, &pc));
    CHECK_OK(dp_precond_apply(&pc, &d));
    double worst = 0;
    for (size_t i = 0; i < d.n; i++) { /* s P_a G P_b, here in double */
        double g[DIM_], t[DIM_], y[DIM_];
        gn_ref(orig.x + i * DIM_, g);
        for (int r = 0; r < C_; r++)
            for (int p = 0; p < HW_; p++) {
                double s = 0;
                for (int k = 0; k < C_; k++) s += pc.pa[r * C_ + k] * g[k * HW_ + p];
                t[r * HW_ + p] = s;
            }
        double num = 0, den = 0;
        for (int r = 0; r < C_; r++)
            for (int p = 0; p < HW_; p++) {
                double s = 0;
                for (int k = 0; k < HW_; k++) s += t[r * HW_ + k] * pc.pb[k * HW_ + p];
                y[r * HW_ + p] = pc.scale * s;
                num += (y[r * HW_ + p] - d.x[i * DIM_ + r * HW_ + p]) * (y[r * HW_ + p] - d.x[i * DIM_ + r * HW_ + p]);
                den += y[r * HW_ + p] * y[r * HW_ + p];
            }
        worst = fmax(worst, sqrt(num / den));
    }
    CHECK(worst < 1e-5);
    /* the classifier on P(x) folded into groupnorm(G) flatten linear(K) gives the same logits on x */
    dp_model *lin = NULL, *full = NULL;
    CHECK_OK(dp_model_create("flatten linear(3)", C_, H_, W_, &lin));
    CHECK_OK(dp_model_create("groupnorm(3) flatten linear(3)", C_, H_, W_, &full));
    if (lin && full) {
        dp_rng r;
        dp_rng_seed(&r, 5);
        dp_model_init(lin, &r);
        dp_model_init(full, &r);
        float *lw, *lb, *fw, *fb, *gw, *gb;
        size_t n1, n2, n3, n4, n5, n6;
        CHECK_OK(dp_model_find_tensor(lin, "1.weight", &lw, &n1));
        CHECK_OK(dp_model_find_tensor(lin, "1.bias", &lb, &n2));
        CHECK_OK(dp_model_find_tensor(full, "2.weight", &fw, &n3));
        CHECK_OK(dp_model_find_tensor(full, "2.bias", &fb, &n4));
        CHECK_OK(dp_model_find_tensor(full, "0.weight", &gw, &n5));
        CHECK_OK(dp_model_find_tensor(full, "0.bias", &gb, &n6));
        CHECK(n1 == n3 && n2 == n4 && n1 == 3 * DIM_);
        for (size_t i = 0; i < n2; i++) lb[i] = 0.1f * (float)(i + 1);
        CHECK_OK(dp_precond_fold(&pc, 3, lw, fw));
        memcpy(fb, lb, sizeof(float) * n2);
        for (size_t i = 0; i < n5; i++) gw[i] = 1, gb[i] = 0;
        const float *l1, *l2;
        float keep[N_EX * 3];
        CHECK_OK(dp_model_forward(lin, d.x, N_EX, 0, NULL, &l1));
        memcpy(keep, l1, sizeof keep);
        CHECK_OK(dp_model_forward(full, orig.x, N_EX, 0, NULL, &l2));
        CHECK(t_rel_err(l2, keep, N_EX * 3) < 1e-5);
    }
    dp_model_destroy(lin);
    dp_model_destroy(full);
    /* a dataset of another shape is refused */
    dp_dataset other;
    make_data(&other, 4, 3);
    other.c = 3;
    other.h = 6;
    CHECK(dp_precond_apply(&pc, &other) == DP_ERR_INVALID);
    dp_dataset_free(&other);
    dp_precond_free(&pc);
    dp_dataset_free(&d);
    dp_dataset_free(&orig);
}

/* the released-minus-exact entries of both upper triangles: their sample std */
static double noise_std(const dp_precond *pc, const double *a, const double *b, int *symmetric) {
    double ss = 0;
    long k = 0;
    *symmetric = 1;
    for (int i = 0; i < C_; i++)
        for (int j = 0; j < C_; j++) {
            if (pc->a[i * C_ + j] != pc->a[j * C_ + i]) *symmetric = 0;
            if (j >= i) ss += (pc->a[i * C_ + j] - a[i * C_ + j]) * (pc->a[i * C_ + j] - a[i * C_ + j]), k++;
        }
    for (int i = 0; i < HW_; i++)
        for (int j = 0; j < HW_; j++) {
            if (pc->b[i * HW_ + j] != pc->b[j * HW_ + i]) *symmetric = 0;
            if (j >= i) ss += (pc->b[i * HW_ + j] - b[i * HW_ + j]) * (pc->b[i * HW_ + j] - b[i * HW_ + j]), k++;
        }
    return sqrt(ss / (double)k);
}

static void test_noise(void) {
    dp_dataset d;
    make_data(&d, N_EX, 4);
    double a[C_ * C_], b[HW_ * HW_];
    moments_ref(&d, a, b);
    dp_precond_params pp = dp_precond_default_params();
    pp.groups = G_;
    pp.noise_multiplier = 0.05; /* small next to the moments (traces ~60), so every fit succeeds */
    pp.floor = 0.05;
    /* the std over many fits' 99 entries each: z sqrt(2) to a few percent */
    double ss = 0;
    int fits = 0, sym = 1;
    for (int s = 0; s < 40; s++) {
        pp.noise_seeded = 1;
        pp.noise_seed = 1000 + (uint64_t)s;
        dp_precond pc;
        CHECK_OK(dp_precond_fit(&d, &pp, &pc));
        int sy;
        const double e = noise_std(&pc, a, b, &sy);
        ss += e * e;
        sym &= sy;
        fits++;
        dp_precond_free(&pc);
    }
    const double est = sqrt(ss / fits), want = 0.05 * sqrt(2.0) * (1 + ldexp(N_EX + 1, -22));
    CHECK(sym);
    CHECK(fabs(est / want - 1) < 0.05); /* 40 x 99 draws: the estimate's sd is about 1.1% */
    if (!(fabs(est / want - 1) < 0.05)) fprintf(stderr, "noise std %g, expected %g\n", est, want);
    /* seeded: reproducible; another seed, or the OS-seeded source, differs */
    dp_precond p1, p2, p3, p4, p5;
    pp.noise_seed = 7;
    CHECK_OK(dp_precond_fit(&d, &pp, &p1));
    CHECK_OK(dp_precond_fit(&d, &pp, &p2));
    pp.noise_seed = 8;
    CHECK_OK(dp_precond_fit(&d, &pp, &p3));
    pp.noise_seeded = 0;
    CHECK_OK(dp_precond_fit(&d, &pp, &p4));
    CHECK_OK(dp_precond_fit(&d, &pp, &p5));
    CHECK(memcmp(p1.pa, p2.pa, sizeof(double) * C_ * C_) == 0 && memcmp(p1.pb, p2.pb, sizeof(double) * HW_ * HW_) == 0);
    CHECK(memcmp(p1.a, p3.a, sizeof(double) * C_ * C_) != 0);
    CHECK(memcmp(p4.a, p5.a, sizeof(double) * C_ * C_) != 0 && memcmp(p4.b, p5.b, sizeof(double) * HW_ * HW_) != 0);
    int sy;
    CHECK(noise_std(&p4, a, b, &sy) > 0.3 * want && sy); /* the secure source adds noise too */
    dp_precond_free(&p1);
    dp_precond_free(&p2);
    dp_precond_free(&p3);
    dp_precond_free(&p4);
    dp_precond_free(&p5);
    dp_dataset_free(&d);
}

static double eps_of(double prior, double q, double sigma, long steps, double delta) {
    dp_accountant *a = NULL;
    dp_epsilon_report r;
    r.epsilon = NAN;
    if (dp_accountant_create(&a) != DP_OK) return NAN;
    if (prior > 0) dp_accountant_step(a, 1.0, prior, 1);
    dp_accountant_step(a, q, sigma, steps);
    if (dp_accountant_epsilon(a, DP_ACCT_PRV, delta, NULL, &r) != DP_OK) r.epsilon = NAN;
    dp_accountant_destroy(a);
    return r.epsilon;
}

static void test_accounting(void) {
    const double q = 8192.0 / 60000.0, delta = 1e-5;
    const long steps = 420;
    double s0 = 0, s1 = 0;
    CHECK_OK(dp_calibrate_sigma_kind(DP_ACCT_PRV, 3.0, delta, q, steps, 0.01, &s0));
    CHECK_OK(dp_calibrate_sigma_prior(DP_ACCT_PRV, 3.0, delta, q, steps, 10.0, 0.01, &s1));
    const double e1 = eps_of(10.0, q, s1, steps, delta);
    CHECK(e1 <= 3.0 && e1 >= 2.99);
    CHECK(s1 > s0);                                /* the release costs: more noise on the steps */
    CHECK(eps_of(10.0, q, s0, steps, delta) > 3.0); /* without the raise the total would exceed the target */
    /* a release that alone spends the target */
    double s2 = 0;
    CHECK(dp_calibrate_sigma_prior(DP_ACCT_PRV, 0.5, delta, q, steps, 0.5, 0.01, &s2) == DP_ERR_RANGE);
    CHECK(strstr(dp_last_error(), "alone spends") != NULL);
    CHECK(dp_calibrate_sigma_prior(DP_ACCT_PRV, 3.0, delta, q, steps, -1, 0.01, &s2) == DP_ERR_RANGE);

    /* dp_train: the history starts with the release; epsilon is the composed one */
    dp_dataset d;
    make_data(&d, 400, 6);
    dp_model *m = NULL;
    CHECK_OK(dp_model_create("flatten linear(3)", C_, H_, W_, &m));
    if (!m) return;
    dp_rng r;
    dp_rng_seed(&r, 1);
    dp_model_init(m, &r);
    dp_train_params p = dp_train_default_params();
    p.expected_batch = 100;
    p.epochs = 2;
    p.delta = 1e-3;
    p.noise_seeded = 1;
    p.noise_seed = 3;
    p.prior_sigma = 2.0;
    dp_train_result res;
    CHECK_OK(dp_train(m, &d, NULL, &p, &res));
    const long T = res.steps;
    CHECK_CLOSE(res.epsilon, eps_of(2.0, res.q, res.sigma, T, 1e-3), 1e-9);
    CHECK(res.epsilon <= 3.0 && res.epsilon >= 2.99);
    CHECK(eps_of(0, res.q, res.sigma, T, 1e-3) < res.epsilon - 0.01); /* the release is in it */
    /* a given sigma: reported with the release counted */
    p.noise_multiplier = 1.5;
    CHECK_OK(dp_train(m, &d, NULL, &p, &res));
    CHECK_CLOSE(res.epsilon, eps_of(2.0, res.q, 1.5, T, 1e-3), 1e-9);
    /* the step API: the same history */
    p.noise_multiplier = 0;
    dp_trainer *tr = NULL;
    CHECK_OK(dp_trainer_create(m, &d, &p, &tr));
    if (tr) {
        dp_trainer_info ti;
        dp_trainer_get_info(tr, &ti);
        dp_trainer_stats stt;
        for (int i = 0; i < 3; i++) CHECK_OK(dp_trainer_step(tr, &stt));
        double e = NAN;
        CHECK_OK(dp_trainer_epsilon(tr, &e));
        CHECK_CLOSE(e, eps_of(2.0, ti.q, ti.sigma, 3, 1e-3), 1e-9);
        CHECK(e > eps_of(0, ti.q, ti.sigma, 3, 1e-3) + 0.01);
        dp_trainer_destroy(tr);
    }
    p.noise_multiplier = 1.5;
    /* checkpoints would lose the transform: refused */
    p.checkpoint_dir = "/tmp";
    CHECK(dp_train(m, &d, NULL, &p, &res) == DP_ERR_INVALID);
    CHECK(strstr(dp_last_error(), "prior_sigma") != NULL);
    p.checkpoint_dir = NULL;
    p.prior_sigma = -1;
    CHECK(dp_train(m, &d, NULL, &p, &res) == DP_ERR_RANGE);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

static void test_errors(void) {
    dp_dataset d;
    make_data(&d, 10, 9);
    dp_precond_params pp = dp_precond_default_params();
    dp_precond pc;
    pp.groups = 4; /* does not divide 6 */
    CHECK(dp_precond_fit(&d, &pp, &pc) == DP_ERR_INVALID);
    CHECK(strstr(dp_last_error(), "groups") != NULL);
    pp.groups = G_;
    pp.power = 0;
    CHECK(dp_precond_fit(&d, &pp, &pc) == DP_ERR_INVALID);
    pp.power = 0.25;
    pp.floor = 0;
    CHECK(dp_precond_fit(&d, &pp, &pc) == DP_ERR_INVALID);
    pp.floor = 0.01;
    pp.noise_multiplier = NAN;
    CHECK(dp_precond_fit(&d, &pp, &pc) == DP_ERR_INVALID);
    pp.noise_multiplier = 1.5e308; /* its std would overflow */
    CHECK(dp_precond_fit(&d, &pp, &pc) == DP_ERR_INVALID);
    pp.noise_multiplier = 0;
    dp_dataset_free(&d);
    /* an example with a non-finite feature adds nothing, and nothing says so: the released
     * moments are those of the other examples */
    dp_dataset d2, rest;
    make_data(&d2, N_EX, 11);
    make_data(&rest, N_EX - 1, 11);
    memcpy(rest.x + 7 * DIM_, d2.x + 8 * DIM_, sizeof(float) * (N_EX - 8) * DIM_); /* d2 without row 7 */
    d2.x[7 * DIM_ + 5] = NAN;
    d2.x[7 * DIM_ + 6] = INFINITY;
    pp.floor = 1e-6;
    dp_precond q1, q2;
    dp_clear_error();
    CHECK_OK(dp_precond_fit(&d2, &pp, &q1));
    CHECK(dp_last_error()[0] == '\0');
    CHECK_OK(dp_precond_fit(&rest, &pp, &q2));
    CHECK(max_abs_diff(q1.a, q2.a, C_ * C_) < 1e-9 && max_abs_diff(q1.b, q2.b, HW_ * HW_) < 1e-9);
    dp_precond_free(&q1);
    dp_precond_free(&q2);
    dp_dataset_free(&d2);
    dp_dataset_free(&rest);
}

int main(void) {
    test_exact();
    test_apply_fold();
    test_noise();
    test_accounting();
    test_errors();
    return t_finish("test_precond");
}
