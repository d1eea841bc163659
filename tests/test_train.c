#define _POSIX_C_SOURCE 200809L /* mkdtemp */
/* test_train.c: the DP-SGD training loop (dp_train) and dp_evaluate on tiny in-memory
 * datasets: virtual batches give the same result as whole batches in every clipping mode,
 * the noise has the documented scale sigma*C/(q n), empty Poisson batches, non-finite
 * losses and parameters stop training with a message naming the step, frozen layers stay
 * bit-identical, runs are deterministic per seed, private and non-private training learn an
 * easy task, bad parameters are rejected naming their flag, and evaluation is exact on a
 * hand-made case. */
#include <float.h>
#include <stdint.h>

#include "fixtures.h"

/* ---- helpers ----------------------------------------------------------------------- */


static void set_params(dp_model *m, const float *p) {
    memcpy(dp_model_params(m), p, sizeof(float) * dp_model_num_params(m));
}

/* Small, fast private training parameters (fixed sigma: no calibration). */
static dp_train_params small_params(void) {
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = p.report_nonprivate = 1; /* reproducible noise and sampling; the loop statistics */
    p.accountant = DP_ACCT_RDP; /* tiny sigmas below (noise-free runs); RDP is exact to compare */
    p.max_grad_norm = 0.5;
    p.noise_multiplier = 1.0;
    p.delta = 1e-3;
    p.expected_batch = 20;
    p.epochs = 2;
    p.optim.lr = 0.5;
    p.optim.momentum = 0.9;
    p.seed = p.noise_seed = 7;
    p.eval_batch = 64;
    return p;
}


/* ---- virtual batches ------------------------------------------------------------------ */

/* Trains from the same initial parameters with physical batch 7 and 0 (whole batch) in
 * every mode; all runs must agree up to float rounding of the summation order. */
static void test_virtual_batches(const char *spec, int c, int h, int w) {
    dp_dataset d;
    make_ds(&d, 60, c, h, w, 3, 0.3, 11);
    dp_model *m = new_model(spec, c, h, w, 5);
    size_t np = dp_model_num_params(m);
    float *p0 = copy_params(m);
    float *ref[DP_CLIP_COUNT];
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_train_params p = small_params();
        p.clipping = (dp_clip_mode)mode;
        dp_train_result r0, r7;
        set_params(m, p0);
        p.physical_batch = 0;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r0));
        ref[mode] = copy_params(m);
        set_params(m, p0);
        p.physical_batch = 7;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r7));
        double e = t_rel_err(dp_model_params(m), ref[mode], np);
        if (!(e < 1e-5))
            fprintf(stderr, "  %s, %s: physical 7 vs whole batch: rel err %g (tol 1e-5)\n", spec,
                    dp_clip_mode_name((dp_clip_mode)mode), e);
        CHECK(e < 1e-5);
        /* and the parameters moved at all */
        CHECK(t_rel_err(ref[mode], p0, np) > 1e-3);
        CHECK(r0.steps == r7.steps && r0.steps == 6);
        CHECK(r0.steps_per_epoch == 3);
        CHECK_CLOSE(r0.q, 20.0 / 60.0, 1e-12);
        CHECK(r0.mean_batch == r7.mean_batch);
        CHECK(r0.test_accuracy == -1);
        /* a physical batch far above the logical one behaves as the whole batch, and the
         * buffers follow the drawn batch, not the requested chunk size (2^20 rows here would
         * be ~80 MB of staging buffers for a 60-row set) */
        if (mode == DP_CLIP_GHOST) {
            dp_train_result rb;
            set_params(m, p0);
            p.physical_batch = 1 << 20;
            CHECK_OK(dp_train(m, &d, NULL, &p, &rb));
            CHECK(t_rel_err(dp_model_params(m), ref[mode], np) < 1e-6);
            if (!(rb.peak_bytes <= 2 * r0.peak_bytes + 65536))
                fprintf(stderr, "  physical batch 2^20 on a batch of ~20: peak %zu bytes, whole batch %zu bytes\n",
                        rb.peak_bytes, r0.peak_bytes);
            CHECK(rb.peak_bytes <= 2 * r0.peak_bytes + 65536);
        }
    }
    for (int mode = 1; mode < DP_CLIP_COUNT; mode++) {
        double e = t_rel_err(ref[mode], ref[0], np);
        if (!(e < 1e-4))
            fprintf(stderr, "  %s: %s vs vanilla: rel err %g (tol 1e-4)\n", spec,
                    dp_clip_mode_name((dp_clip_mode)mode), e);
        CHECK(e < 1e-4);
    }
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) dp_free(ref[mode]);
    dp_free(p0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* ---- the noise ------------------------------------------------------------------------- */

/* q = 1 (expected batch = n), one step, SGD lr 1 without momentum: theta1 = theta0 -
 * (clipped sum + noise) / n. Against a run with (practically) no noise, the difference per
 * coordinate is -noise/n ~ N(0, (sigma C / n)^2). The noise-free run must also equal theta0
 * minus the clipped gradient computed directly by the engine. */
static void test_noise_scale(void) {
    const size_t n = 50;
    const double S = 2.0, C = 0.5;
    dp_dataset d;
    make_ds(&d, n, 1, 1, 32, 3, 0.5, 21);
    dp_model *m = new_model("flatten linear(64) tanh linear(3)", 1, 1, 32, 9);
    size_t np = dp_model_num_params(m);
    CHECK(np >= 2000);
    float *p0 = copy_params(m);
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = p.report_nonprivate = 1; /* reproducible noise and sampling; the loop statistics */
    p.accountant = DP_ACCT_RDP; /* tiny sigmas below (noise-free runs); RDP is exact to compare */
    p.clipping = DP_CLIP_GHOST;
    p.max_grad_norm = C;
    p.delta = 1e-3;
    p.expected_batch = (int)n;
    p.epochs = 1;
    p.optim.lr = 1.0;
    p.optim.momentum = 0.0;
    p.seed = p.noise_seed = 123;
    dp_train_result r;
    p.noise_multiplier = S;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    float *pn = copy_params(m);
    CHECK(r.steps == 1 && r.steps_per_epoch == 1);
    CHECK_CLOSE(r.q, 1.0, 0);
    CHECK_CLOSE(r.sigma, S, 0);
    CHECK_CLOSE(r.mean_batch, (double)n, 0);
    CHECK(r.empty_batches == 0);
    /* epsilon reported = the accountant's for one step at (q, S) */
    dp_epsilon_report eps_ref = {0};
    CHECK_OK(t_epsilon1(DP_ACCT_RDP, 1.0, S, 1, p.delta, &eps_ref));
    CHECK_CLOSE(r.epsilon, eps_ref.epsilon, 1e-9);

    set_params(m, p0);
    p.noise_multiplier = 1e-9;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    float *pc = copy_params(m);

    /* the noise-free update by hand: forward the whole set, clipped sum, divide by n */
    set_params(m, p0);
    dp_model_zero_grad(m);
    const float *z;
    float *dz = dp_alloc(sizeof(float) * n * 3);
    int bad = -1;
    dp_clip_params cp = {DP_CLIP_VANILLA, C, 0, 0};
    CHECK_OK(dp_model_forward(m, d.x, (int)n, 1, NULL, &z));
    CHECK_OK(dp_loss_xent(z, d.y, (int)n, 3, NULL, dz));
    CHECK_OK(dp_model_clipped_grad(m, &cp, dz, (int)n, NULL, NULL, &bad));
    CHECK(bad == 0);
    const float *g = dp_model_grad(m);
    float *ph = dp_alloc(sizeof(float) * np);
    double gmax = 0;
    for (size_t j = 0; j < np; j++) {
        ph[j] = (float)(p0[j] - (double)g[j] / (double)n);
        if (fabs(g[j]) > gmax) gmax = fabs(g[j]);
    }
    CHECK(gmax > 0);
    /* compare the updates theta1 - theta0 (the update is small against theta) */
    double num = 0, den = 0;
    for (size_t j = 0; j < np; j++) {
        double a = (double)pc[j] - p0[j], b = (double)ph[j] - p0[j];
        num += (a - b) * (a - b);
        den += b * b;
    }
    double upd_err = sqrt(num / den);
    if (!(upd_err < 1e-3)) fprintf(stderr, "  noise-free update vs clipped_grad/n: rel err %g\n", upd_err);
    CHECK(upd_err < 1e-3);

    /* the noise */
    double sum = 0, sq = 0;
    for (size_t j = 0; j < np; j++) {
        double dd = ((double)pn[j] - pc[j]);
        sum += dd;
        sq += dd * dd;
    }
    double mean = sum / (double)np, sd = sqrt(sq / (double)np - mean * mean);
    double want = S * C / (1.0 * (double)n);
    if (fabs(sd / want - 1) > 0.1 || fabs(mean) > 4 * want / sqrt((double)np))
        fprintf(stderr, "  noise per coordinate: mean %g sd %g, want mean 0 sd %g (%zu coords)\n", mean, sd, want, np);
    CHECK(fabs(sd / want - 1) <= 0.1);
    CHECK(fabs(mean) <= 4 * want / sqrt((double)np));

    dp_free(ph);
    dp_free(dz);
    dp_free(pn);
    dp_free(pc);
    dp_free(p0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* The clipped sum is divided by the EXPECTED batch size q n, not by the drawn one: with n
 * identical rows every per-sample clipped gradient is the same g, so one step of SGD (lr 1,
 * no momentum, negligible noise) moves theta by -count * g / (q n), where count (the drawn
 * batch size) is the run's mean_batch. */
static void test_expected_batch_divisor(void) {
    const size_t n = 50;
    dp_dataset d;
    make_ds(&d, n, 1, 1, 8, 3, 0.3, 25);
    for (size_t i = 1; i < n; i++) {
        memcpy(d.x + i * d.dim, d.x, sizeof(float) * d.dim);
        d.y[i] = d.y[0];
    }
    dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 1, 8, 6);
    size_t np = dp_model_num_params(m);
    float *p0 = copy_params(m);
    /* g: the clipped gradient of one row */
    const float *z;
    float dz[3];
    dp_clip_params cp = {DP_CLIP_GHOST, 0.1, 0, 0};
    dp_model_zero_grad(m);
    CHECK_OK(dp_model_forward(m, d.x, 1, 1, NULL, &z));
    CHECK_OK(dp_loss_xent(z, d.y, 1, 3, NULL, dz));
    CHECK_OK(dp_model_clipped_grad(m, &cp, dz, 1, NULL, NULL, NULL));
    float *g = dp_alloc(sizeof(float) * np);
    memcpy(g, dp_model_grad(m), sizeof(float) * np);
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = p.report_nonprivate = 1; /* reproducible noise and sampling; the loop statistics */
    p.accountant = DP_ACCT_RDP; /* tiny sigmas below (noise-free runs); RDP is exact to compare */
    p.clipping = DP_CLIP_FAST;
    p.max_grad_norm = 0.1;
    p.noise_multiplier = 1e-9;
    p.delta = 1e-3;
    p.expected_batch = 40; /* q = 0.8, round(50/40) = 1 step */
    p.epochs = 1;
    p.optim.lr = 1.0;
    p.optim.momentum = 0;
    int tested = 0;
    for (uint64_t seed = 1; seed <= 5 && tested < 2; seed++) {
        p.seed = p.noise_seed = seed;
        dp_train_result r;
        set_params(m, p0);
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
        CHECK(r.steps == 1);
        if (r.mean_batch == 40) continue; /* drawn == expected: not telling */
        tested++;
        const float *pp = dp_model_params(m);
        double num = 0, den = 0;
        for (size_t j = 0; j < np; j++) {
            double got = (double)pp[j] - p0[j], want = -r.mean_batch * g[j] / 40.0;
            num += (got - want) * (got - want);
            den += want * want;
        }
        double e = sqrt(num / den);
        if (!(e < 1e-3))
            fprintf(stderr, "  drawn batch %g, expected 40: update rel err %g against -count*g/(q n)\n",
                    r.mean_batch, e);
        CHECK(e < 1e-3);
    }
    CHECK(tested == 2);
    dp_free(g);
    dp_free(p0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* ---- empty batches ------------------------------------------------------------------ */

static int n_progress, n_epoch_end;
static long last_step;
static void count_progress(void *user, const dp_train_progress *pr) {
    (void)user;
    if (pr->epoch_end) n_epoch_end++;
    else {
        n_progress++;
        last_step = pr->step;
    }
}

static void test_empty_batches(void) {
    dp_dataset d;
    make_ds(&d, 200, 1, 1, 8, 3, 0.3, 31);
    dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 1, 8, 3);
    dp_train_params p = small_params();
    p.expected_batch = 1; /* q = 1/200, 200 steps: P(empty) = 0.995^200 ~ 0.37 per step */
    p.epochs = 1;
    p.seed = p.noise_seed = 1;
    p.optim.momentum = 0;
    p.progress = count_progress;
    n_progress = n_epoch_end = 0;
    dp_train_result r;
    CHECK_OK(dp_train(m, &d, &d, &p, &r));
    CHECK(r.steps == 200);
    CHECK(r.empty_batches > 0);
    CHECK(r.empty_batches < 200);
    if (!(r.empty_batches > 0)) fprintf(stderr, "  empty_batches %ld\n", r.empty_batches);
    CHECK(r.mean_batch > 0.5 && r.mean_batch < 1.5);
    CHECK(r.test_accuracy >= 0 && r.test_accuracy <= 1);
    CHECK(isfinite(r.test_loss));
    CHECK(r.epsilon > 0);
    CHECK(n_progress == 200 && n_epoch_end == 1 && last_step == 200);
    for (size_t j = 0; j < dp_model_num_params(m); j++)
        if (!isfinite(dp_model_params(m)[j])) {
            CHECK(!"parameter not finite after empty batches");
            break;
        }
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* ---- non-finite loss / parameters --------------------------------------------------- */

static void test_nonfinite(void) {
    dp_dataset d;
    make_ds(&d, 40, 1, 1, 16, 3, 0.3, 41);
    dp_train_result r, sentinel;
    memset(&sentinel, 0xAB, sizeof sentinel);

    /* (a) one sample's features are Inf (or huge: its logits overflow): with DP it is dropped
     * (clip factor 0), counted, and training goes on with finite weights, in every mode and
     * with virtual batches; without DP a non-finite loss stops training */
    for (int kind = 0; kind < 2; kind++) {
        dp_model *m = new_model("flatten linear(3)", 1, 1, 16, 1);
        float *w = dp_model_params(m);
        for (size_t j = 0; j < d.dim; j++) d.x[5 * d.dim + j] = kind == 0 ? INFINITY : 1e38f;
        dp_train_params p = small_params();
        p.expected_batch = 40; /* q = 1: row 5 is in every batch */
        for (int mode = 0; mode < DP_CLIP_COUNT; mode++)
            for (int phys = 0; phys <= 3; phys += 3) {
                for (size_t j = 0; j < dp_model_num_params(m); j++) w[j] = 1.0f;
                p.clipping = (dp_clip_mode)mode;
                p.physical_batch = phys;
                dp_status st = dp_train(m, &d, NULL, &p, &r);
                if (st != DP_OK) fprintf(stderr, "  bad row (kind %d, mode %d): %s\n", kind, mode, dp_last_error());
                CHECK(st == DP_OK);
                CHECK(r.nonfinite_samples == r.steps); /* row 5, once per step */
                int finite = 1;
                for (size_t j = 0; j < dp_model_num_params(m); j++) finite &= isfinite(w[j]) != 0;
                CHECK(finite);
            }
        /* without DP */
        for (size_t j = 0; j < dp_model_num_params(m); j++) w[j] = 1.0f;
        p.no_dp = 1;
        p.physical_batch = 0;
        memcpy(&r, &sentinel, sizeof r);
        dp_status st = dp_train(m, &d, NULL, &p, &r);
        CHECK(st == DP_ERR_NONFINITE);
        CHECK(msg_has("step"));
        CHECK(memcmp(&r, &sentinel, sizeof r) == 0);
        /* with DP, when every sampled example is non-finite the run stops */
        for (size_t i = 0; i < d.n * d.dim; i++) d.x[i] = 1e38f;
        for (size_t j = 0; j < dp_model_num_params(m); j++) w[j] = 1.0f;
        p.no_dp = 0;
        memcpy(&r, &sentinel, sizeof r);
        st = dp_train(m, &d, NULL, &p, &r);
        CHECK(st == DP_ERR_NONFINITE);
        CHECK(msg_has("step 1") && msg_has("every sampled example"));
        CHECK(memcmp(&r, &sentinel, sizeof r) == 0);
        dp_model_destroy(m);
        dp_dataset_free(&d);
        make_ds(&d, 40, 1, 1, 16, 3, 0.3, 41);
    }
    /* (b) a learning rate of 1e30 with noise of std 1e18: the parameters overflow at step 1 */
    {
        dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 1, 16, 1);
        dp_train_params p = small_params();
        p.optim.lr = 1e30;
        p.max_grad_norm = 1e9;
        p.noise_multiplier = 1e9;
        memcpy(&r, &sentinel, sizeof r);
        dp_status st = dp_train(m, &d, NULL, &p, &r);
        if (st != DP_ERR_NONFINITE) fprintf(stderr, "  lr 1e30: got %s: %s\n", dp_strerror(st), dp_last_error());
        CHECK(st == DP_ERR_NONFINITE);
        CHECK(msg_has("step 1"));
        CHECK(memcmp(&r, &sentinel, sizeof r) == 0);
        dp_model_destroy(m);
    }
    /* (c) lr 1e30 alone (ordinary noise): training stops at some step, never succeeds
     * silently with non-finite parameters */
    {
        dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 1, 16, 1);
        dp_train_params p = small_params();
        p.optim.lr = 1e30;
        p.epochs = 20;
        memcpy(&r, &sentinel, sizeof r);
        dp_status st = dp_train(m, &d, NULL, &p, &r);
        int all_finite = 1;
        for (size_t j = 0; j < dp_model_num_params(m); j++) all_finite &= isfinite(dp_model_params(m)[j]) != 0;
        if (st == DP_OK) {
            CHECK(all_finite);
            CHECK(isfinite(r.epsilon));
        } else {
            CHECK(st == DP_ERR_NONFINITE);
            CHECK(msg_has("step"));
            CHECK(memcmp(&r, &sentinel, sizeof r) == 0);
        }
        dp_model_destroy(m);
    }
    dp_dataset_free(&d);
}

/* ---- frozen layers -------------------------------------------------------------------- */

static void test_frozen(void) {
    dp_dataset d;
    make_ds(&d, 60, 1, 1, 16, 3, 0.3, 51);
    for (int variant = 0; variant < DP_CLIP_COUNT + 1; variant++) {
        dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 1, 16, 2);
        CHECK(dp_model_layer_kind(m, 1) == DP_LAYER_LINEAR);
        CHECK_OK(dp_model_set_frozen(m, 1, 1));
        size_t off1, off3;
        size_t n1 = dp_model_layer_params(m, 1, &off1), n3 = dp_model_layer_params(m, 3, &off3);
        CHECK(n1 == 16 * 8 + 8 && n3 == 8 * 3 + 3);
        CHECK(dp_model_num_trainable(m) == n3);
        float *p0 = copy_params(m);
        dp_train_params p = small_params();
        if (variant < DP_CLIP_COUNT) p.clipping = (dp_clip_mode)variant;
        else p.no_dp = 1;
        p.physical_batch = 8;
        dp_train_result r;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
        const float *pp = dp_model_params(m);
        int frozen_same = memcmp(pp + off1, p0 + off1, sizeof(float) * n1) == 0;
        if (!frozen_same)
            fprintf(stderr, "  frozen layer 1 changed (%s)\n",
                    variant < DP_CLIP_COUNT ? dp_clip_mode_name((dp_clip_mode)variant) : "no_dp");
        CHECK(frozen_same);
        size_t changed = 0;
        for (size_t j = 0; j < n3; j++) changed += pp[off3 + j] != p0[off3 + j];
        CHECK(changed == n3);
        dp_free(p0);
        dp_model_destroy(m);
    }
    dp_dataset_free(&d);
}

/* ---- determinism -------------------------------------------------------------------- */

static void test_determinism(void) {
    dp_dataset d;
    make_ds(&d, 36, 1, 6, 6, 3, 0.3, 61);
    const char *spec = "conv2d(3,3,s1,p1) tanh maxpool(2) flatten linear(3)";
    dp_model *m = new_model(spec, 1, 6, 6, 4);
    size_t np = dp_model_num_params(m);
    float *p0 = copy_params(m);
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_train_params p = small_params();
        p.clipping = (dp_clip_mode)mode;
        p.expected_batch = 12;
        p.physical_batch = 5;
        dp_train_result r1, r2, r3;
        set_params(m, p0);
        CHECK_OK(dp_train(m, &d, NULL, &p, &r1));
        float *a = copy_params(m);
        set_params(m, p0);
        CHECK_OK(dp_train(m, &d, NULL, &p, &r2));
        int same = memcmp(a, dp_model_params(m), sizeof(float) * np) == 0;
        if (!same)
            fprintf(stderr, "  %s: same seed, parameters differ (rel %g)\n", dp_clip_mode_name((dp_clip_mode)mode),
                    t_rel_err(dp_model_params(m), a, np));
        CHECK(same);
        CHECK(r1.mean_batch == r2.mean_batch && r1.epsilon == r2.epsilon && r1.empty_batches == r2.empty_batches);
        set_params(m, p0);
        p.seed = p.noise_seed = 8;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r3));
        CHECK(t_rel_err(dp_model_params(m), a, np) > 1e-3);
        dp_free(a);
    }
    /* no_dp: deterministic too */
    {
        dp_train_params p = small_params();
        p.no_dp = 1;
        dp_train_result r;
        set_params(m, p0);
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
        float *a = copy_params(m);
        set_params(m, p0);
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
        CHECK(memcmp(a, dp_model_params(m), sizeof(float) * np) == 0);
        CHECK(r.epsilon == 0);
        /* the seed drives the shuffling of the non-private baseline */
        set_params(m, p0);
        p.seed = p.noise_seed = 8;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
        CHECK(t_rel_err(dp_model_params(m), a, np) > 1e-4);
        dp_free(a);
    }
    dp_free(p0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* ---- learning -------------------------------------------------------------------------- */

static void test_learning(void) {
    dp_dataset tr, te;
    /* two gaussian blobs in 16-D, means +-0.75 per coordinate (6 sigma apart) */
    make_ds(&tr, 400, 1, 1, 16, 2, 0.75, 71);
    make_ds(&te, 400, 1, 1, 16, 2, 0.75, 72);
    const char *spec = "flatten linear(8) tanh linear(2)";
    /* non-private */
    {
        dp_model *m = new_model(spec, 1, 1, 16, 13);
        double acc0, loss0, acc1, loss1;
        CHECK_OK(dp_evaluate(m, &te, 100, &acc0, &loss0));
        dp_train_params p = dp_train_default_params();
        p.noise_seeded = p.report_nonprivate = 1; /* reproducible noise and sampling; the loop statistics */
        p.accountant = DP_ACCT_RDP;
    p.accountant = DP_ACCT_RDP; /* tiny sigmas below (noise-free runs); RDP is exact to compare */
        p.no_dp = 1;
        p.expected_batch = 32;
        p.epochs = 3;
        p.optim.lr = 0.1;
        p.optim.momentum = 0.9;
        dp_train_result r;
        CHECK_OK(dp_train(m, &tr, &te, &p, &r));
        CHECK_OK(dp_evaluate(m, &te, 100, &acc1, &loss1));
        if (!(acc1 > 0.95 && acc1 > acc0)) fprintf(stderr, "  no_dp: accuracy %g -> %g\n", acc0, acc1);
        CHECK(acc1 > 0.95);
        CHECK(acc1 > acc0 || acc0 > 0.95);
        CHECK(loss1 < loss0);
        CHECK(r.test_accuracy == acc1);
        CHECK_CLOSE(r.test_loss, loss1, 1e-12);
        CHECK(r.epsilon == 0);
        CHECK(r.steps == 3L * 13); /* round(400/32) = 13 per epoch */
        CHECK(r.mean_batch > 30 && r.mean_batch <= 32);
        dp_model_destroy(m);
    }
    /* private, sigma calibrated for epsilon 4 */
    {
        dp_model *m = new_model(spec, 1, 1, 16, 13);
        dp_train_params p = dp_train_default_params();
        p.noise_seeded = p.report_nonprivate = 1; /* reproducible noise and sampling; the loop statistics */
        p.accountant = DP_ACCT_RDP;
    p.accountant = DP_ACCT_RDP; /* tiny sigmas below (noise-free runs); RDP is exact to compare */
        p.clipping = DP_CLIP_GHOST;
        p.target_epsilon = 4.0;
        p.delta = 1e-3;
        p.max_grad_norm = 1.0;
        p.expected_batch = 100;
        p.epochs = 10;
        p.optim.lr = 0.5;
        p.optim.momentum = 0.5;
        p.seed = p.noise_seed = 3;
        dp_train_result r;
        CHECK_OK(dp_train(m, &tr, &te, &p, &r));
        if (!(r.test_accuracy > 0.9 && r.epsilon <= 4.0 + 1e-9))
            fprintf(stderr, "  DP: accuracy %g at epsilon %g (sigma %g)\n", r.test_accuracy, r.epsilon, r.sigma);
        CHECK(r.test_accuracy > 0.9);
        CHECK(r.epsilon <= p.target_epsilon + 1e-9);
        CHECK(r.epsilon >= p.target_epsilon - 0.02);
        CHECK(r.sigma > 0);
        CHECK(r.steps == 40);
        CHECK_CLOSE(r.delta, 1e-3, 0);
        dp_epsilon_report eps_ref = {0};
        CHECK_OK(t_epsilon1(DP_ACCT_RDP, 0.25, r.sigma, 40, 1e-3, &eps_ref));
        CHECK_CLOSE(r.epsilon, eps_ref.epsilon, 1e-9);
        dp_model_destroy(m);
    }
    dp_dataset_free(&tr);
    dp_dataset_free(&te);
}

/* ---- parameter checks ---------------------------------------------------------------- */

static void expect_reject(dp_model *m, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *p,
                          const char *needle, int line) {
    dp_train_result r, sentinel;
    memset(&sentinel, 0x5A, sizeof sentinel);
    memcpy(&r, &sentinel, sizeof r);
    size_t np = dp_model_num_params(m);
    float *before = copy_params(m);
    dp_status st = dp_train(m, tr, te, p, &r);
    if (st == DP_OK || !strstr(dp_last_error(), needle))
        fprintf(stderr, "  line %d: expected a rejection naming \"%s\", got %s: %s\n", line, needle, dp_strerror(st),
                dp_last_error());
    CHECK(st != DP_OK);
    CHECK(strstr(dp_last_error(), needle) != NULL);
    CHECK(memcmp(&r, &sentinel, sizeof r) == 0);
    CHECK(memcmp(before, dp_model_params(m), sizeof(float) * np) == 0);
    dp_free(before);
}

static void test_bad_params(void) {
    dp_dataset d, d2, empty;
    make_ds(&d, 50, 1, 1, 16, 3, 0.3, 81);
    make_ds(&d2, 10, 1, 1, 15, 3, 0.3, 82);
    memset(&empty, 0, sizeof empty);
    empty.c = 1, empty.h = 1, empty.w = 16, empty.dim = 16, empty.n_classes = 3;
    dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 1, 16, 1);
    dp_train_params p;

    p = small_params(), p.epochs = 0;
    expect_reject(m, &d, NULL, &p, "epochs ", __LINE__);
    p = small_params(), p.epochs = -3;
    expect_reject(m, &d, NULL, &p, "epochs ", __LINE__);
    p = small_params(), p.expected_batch = 51;
    expect_reject(m, &d, NULL, &p, "expected_batch ", __LINE__);
    p = small_params(), p.expected_batch = 0;
    expect_reject(m, &d, NULL, &p, "expected_batch ", __LINE__);
    p = small_params(), p.physical_batch = -1;
    expect_reject(m, &d, NULL, &p, "physical_batch -1:", __LINE__);
    p = small_params(), p.delta = 1.0 / 50;
    expect_reject(m, &d, NULL, &p, "delta ", __LINE__);
    p = small_params(), p.delta = 0.5;
    expect_reject(m, &d, NULL, &p, "delta ", __LINE__);
    p = small_params(), p.delta = 0;
    expect_reject(m, &d, NULL, &p, "delta ", __LINE__);
    p = small_params(), p.delta = NAN;
    expect_reject(m, &d, NULL, &p, "delta ", __LINE__);
    p = small_params(), p.max_grad_norm = 0;
    expect_reject(m, &d, NULL, &p, "max_grad_norm ", __LINE__);
    p = small_params(), p.max_grad_norm = -1;
    expect_reject(m, &d, NULL, &p, "max_grad_norm ", __LINE__);
    p = small_params(), p.max_grad_norm = NAN;
    expect_reject(m, &d, NULL, &p, "max_grad_norm ", __LINE__);
    p = small_params(), p.max_grad_norm = INFINITY;
    expect_reject(m, &d, NULL, &p, "max_grad_norm ", __LINE__);
    p = small_params(), p.optim.lr = -1;
    expect_reject(m, &d, NULL, &p, "lr -1:", __LINE__);
    p = small_params(), p.optim.momentum = 1.5;
    expect_reject(m, &d, NULL, &p, "momentum 1.5:", __LINE__);
    /* GDP, an approximation that can underestimate, neither calibrates nor is the run's epsilon */
    p = small_params(), p.accountant = DP_ACCT_GDP;
    expect_reject(m, &d, NULL, &p, "gdp", __LINE__);
    p = small_params(), p.accountant = DP_ACCT_GDP, p.noise_multiplier = 1;
    expect_reject(m, &d, NULL, &p, "gdp", __LINE__);
    /* calibration that cannot reach the target */
    p = small_params(), p.noise_multiplier = 0, p.target_epsilon = -1;
    expect_reject(m, &d, NULL, &p, "epsilon", __LINE__);
    /* dataset shape */
    p = small_params(), p.expected_batch = 5;
    expect_reject(m, &d2, NULL, &p, "features", __LINE__);
    expect_reject(m, &d, &d2, &p, "features", __LINE__);
    expect_reject(m, &empty, NULL, &p, "empty", __LINE__);
    /* the non-private baseline ignores the privacy parameters but not the others */
    p = small_params(), p.no_dp = 1, p.delta = 0.9, p.max_grad_norm = 0;
    {
        dp_train_result r;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    }
    p = small_params(), p.no_dp = 1, p.epochs = 0;
    expect_reject(m, &d, NULL, &p, "epochs ", __LINE__);

    dp_model_destroy(m);
    dp_dataset_free(&d);
    dp_dataset_free(&d2);
}

/* A step that does not fit in memory (here: a limit on the tracked allocator) fails saying so,
 * with a physical_batch that needs about half the memory by the plan; that size then trains. */
static void test_out_of_memory(void) {
    dp_dataset d;
    make_ds(&d, 400, 1, 16, 16, 3, 0.3, 91);
    dp_model *m = new_model("conv2d(8,3,s1,p1) tanh flatten linear(3)", 1, 16, 16, 5);
    dp_train_params p = small_params();
    p.expected_batch = 200;
    p.epochs = 1;
    p.clipping = DP_CLIP_GHOST;
    dp_clip_params cp = {p.clipping, p.max_grad_norm, 0, 0};
    const size_t need = dp_model_clip_plan_bytes(m, &cp, 200);
    /* the parameters, the data and the optimizer fit; a chunk of about 200 samples does not */
    dp_mem_set_limit(dp_mem_get().live_bytes + need * 3 / 4);
    dp_train_result r;
    dp_status st = dp_train(m, &d, NULL, &p, &r);
    CHECK(st == DP_ERR_NOMEM && msg_has("physical_batch ") && msg_has("memory plan"));
    const char *hint = strstr(dp_last_error(), "physical_batch ");
    int n = hint ? atoi(hint + strlen("physical_batch ")) : 0;
    CHECK(n >= 50 && n < 200);
    p.physical_batch = n;
    st = dp_train(m, &d, NULL, &p, &r);
    if (st != DP_OK) fprintf(stderr, "  physical_batch %d: %s\n", n, dp_last_error());
    CHECK(st == DP_OK);
    dp_mem_set_limit(0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* ---- regression (mean squared error) ------------------------------------------------------- */

/* rows x ~ N(0, I_4), targets t = A x + b + 0.05 noise for a fixed A [2, 4], b [2] */
static void make_regression(dp_dataset *d, size_t n, uint64_t seed) {
    static const float A[2][4] = {{0.8f, -0.5f, 0.3f, 0.0f}, {-0.2f, 0.6f, 0.0f, 0.9f}}, b[2] = {0.5f, -0.3f};
    dp_rng r;
    dp_rng_seed(&r, seed);
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = 4, d->h = d->w = 1;
    d->dim = 4;
    d->n_classes = d->n_targets = 2;
    d->x = dp_alloc(sizeof(float) * n * 4);
    d->y = dp_alloc(sizeof(int32_t) * n);
    d->t = dp_alloc(sizeof(float) * n * 2);
    for (size_t i = 0; i < n; i++) {
        d->y[i] = 0;
        for (int j = 0; j < 4; j++) d->x[i * 4 + j] = (float)dp_rng_normal(&r);
        for (int k = 0; k < 2; k++) {
            double v = b[k] + 0.05 * dp_rng_normal(&r);
            for (int j = 0; j < 4; j++) v += A[k][j] * d->x[i * 4 + j];
            d->t[i * 2 + k] = (float)v;
        }
    }
}

/* A linear model learns a linear map from float targets, privately and not: the test MSE
 * (dp_evaluate on regression data: accuracy -1) falls from about 1.4 at zero weights to near
 * the noise floor 0.0025; every clipping mode gives the clipped sum of the microbatch
 * reference; mismatched targets and NaN targets are refused. */
static void test_regression(void) {
    dp_dataset tr, te;
    make_regression(&tr, 400, 5);
    make_regression(&te, 200, 6);
    CHECK_OK(dp_dataset_validate(&tr, "regression", 2, 2));
    dp_model *m = new_model("linear(2)", 4, 1, 1, 9);
    memset(dp_model_params(m), 0, sizeof(float) * dp_model_num_params(m));
    double acc = 0, mse0 = 0, mse = 0;
    CHECK_OK(dp_evaluate(m, &te, 64, &acc, &mse0));
    CHECK(acc == -1 && mse0 > 0.5);
    float *p0 = copy_params(m);
    for (int priv = 0; priv < 2; priv++) {
        set_params(m, p0);
        dp_train_params p = small_params();
        p.no_dp = !priv;
        p.noise_multiplier = 0.5;
        p.max_grad_norm = 1.0;
        p.expected_batch = 40;
        p.epochs = 8;
        p.optim.lr = priv ? 0.5 : 0.1;
        dp_train_result r;
        dp_status st = dp_train(m, &tr, &te, &p, &r);
        if (st != DP_OK) fprintf(stderr, "  regression (%s): %s\n", priv ? "private" : "no_dp", dp_last_error());
        CHECK(st == DP_OK);
        CHECK_OK(dp_evaluate(m, &te, 64, &acc, &mse));
        CHECK(r.test_accuracy == -1 && fabs(r.test_loss - mse) < 1e-6);
        CHECK(mse < (priv ? 0.1 : 0.02));
        if (mse >= (priv ? 0.1 : 0.02)) fprintf(stderr, "  regression (%s): test mse %g (from %g)\n", priv ? "private" : "no_dp", mse, mse0);
    }
    /* the clipped sum of every mode against the per-sample reference, on the MSE's gradient */
    {
        dp_model *m2 = new_model("linear(3) tanh linear(2)", 4, 1, 1, 3);
        const int B = 6, K = 2;
        const float *z;
        float lv[6], dz[12];
        CHECK_OK(dp_model_forward(m2, tr.x, B, 1, NULL, &z));
        CHECK_OK(dp_loss_mse(z, tr.t, B, K, lv, dz));
        const size_t np = dp_model_num_params(m2);
        float *ref = dp_alloc(sizeof(float) * np);
        dp_clip_params cp = {DP_CLIP_VANILLA, 0.05, 0, 0};
        dp_model_zero_grad(m2);
        CHECK_OK(dp_model_clipped_grad(m2, &cp, dz, B, NULL, NULL, NULL));
        memcpy(ref, dp_model_grad(m2), sizeof(float) * np);
        for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
            CHECK_OK(dp_model_forward(m2, tr.x, B, 1, NULL, &z));
            CHECK_OK(dp_loss_mse(z, tr.t, B, K, lv, dz));
            cp.mode = (dp_clip_mode)mode;
            dp_model_zero_grad(m2);
            CHECK_OK(dp_model_clipped_grad(m2, &cp, dz, B, NULL, NULL, NULL));
            double worst = 0;
            for (size_t j = 0; j < np; j++) worst = fmax(worst, fabs(dp_model_grad(m2)[j] - ref[j]));
            CHECK(worst < 1e-6);
        }
        dp_free(ref);
        dp_model_destroy(m2);
    }
    /* a model whose outputs are not the targets' count, and a NaN target */
    dp_model *m3 = new_model("linear(3)", 4, 1, 1, 1);
    dp_train_params p = small_params();
    dp_train_result r;
    CHECK(dp_train(m3, &tr, NULL, &p, &r) == DP_ERR_INVALID && msg_has("2 regression targets per row, but the model has 3 outputs"));
    dp_model_destroy(m3);
    tr.t[17] = NAN;
    CHECK(dp_dataset_validate(&tr, "regression", 2, 2) == DP_ERR_NONFINITE && msg_has("regression target is not finite"));
    dp_free(p0);
    dp_model_destroy(m);
    dp_dataset_free(&tr);
    dp_dataset_free(&te);
}

/* ---- evaluation -------------------------------------------------------------------------- */

static void test_evaluate(void) {
    /* linear(2) with identity weights and zero bias on 2-D rows: logits = x */
    dp_model *m = new_model("linear(2)", 2, 1, 1, 1);
    float *w, *b;
    size_t nw, nb;
    CHECK_OK(dp_model_find_tensor(m, "0.weight", &w, &nw));
    CHECK_OK(dp_model_find_tensor(m, "0.bias", &b, &nb));
    CHECK(nw == 4 && nb == 2);
    w[0] = 1, w[1] = 0, w[2] = 0, w[3] = 1;
    b[0] = 0, b[1] = 0;
    static const float X[5][2] = {{1, 0}, {0, 1}, {2, 0}, {0, 3}, {-1, 1}};
    static const int32_t Y[5] = {0, 1, 1, 1, 0};
    /* correct: rows 0, 1, 3 -> 3/5 */
    dp_dataset d;
    memset(&d, 0, sizeof d);
    d.n = 5, d.c = 2, d.h = 1, d.w = 1, d.dim = 2, d.n_classes = 2;
    d.x = dp_alloc(sizeof X);
    d.y = dp_alloc(sizeof Y);
    memcpy(d.x, X, sizeof X);
    memcpy(d.y, Y, sizeof Y);
    double want_loss = 0;
    for (int i = 0; i < 5; i++) {
        double z0 = X[i][0], z1 = X[i][1];
        want_loss += log(exp(z0) + exp(z1)) - (Y[i] ? z1 : z0);
    }
    want_loss /= 5;
    int batches[] = {1, 2, 3, 5, 7, 0};
    for (size_t k = 0; k < sizeof batches / sizeof *batches; k++) {
        double acc = -1, loss = -1;
        CHECK_OK(dp_evaluate(m, &d, batches[k], &acc, &loss));
        CHECK_CLOSE(acc, 0.6, 1e-15);
        CHECK_CLOSE(loss, want_loss, 1e-6);
    }
    /* ties go to the lowest class: a row with equal logits counts as class 0 */
    d.x[0] = 1, d.x[1] = 1; /* row 0, label 0: still correct */
    double acc;
    CHECK_OK(dp_evaluate(m, &d, 2, &acc, NULL));
    CHECK_CLOSE(acc, 0.6, 1e-15);
    /* an empty set: accuracy and loss 0 */
    size_t n = d.n;
    d.n = 0;
    double loss = -1;
    acc = -1;
    CHECK_OK(dp_evaluate(m, &d, 4, &acc, &loss));
    CHECK(acc == 0 && loss == 0);
    d.n = n;
    dp_dataset_free(&d);
    dp_model_destroy(m);
}

static void test_steps_per_epoch(void) {
    CHECK(dp_train_steps_per_epoch(200, 1) == 200);
    CHECK(dp_train_steps_per_epoch(60, 20) == 3);
    CHECK(dp_train_steps_per_epoch(400, 32) == 13);
    CHECK(dp_train_steps_per_epoch(60000, 2048) == 29);
    CHECK(dp_train_steps_per_epoch(10, 10) == 1);
    CHECK(dp_train_steps_per_epoch(10, 20) == 1);
    CHECK(dp_train_steps_per_epoch(10, 0) == 1);
}

/* the default accountant is PRV: calibration and the reported epsilon come from it */
static void test_default_accountant(void) {
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = p.report_nonprivate = 1; /* reproducible noise and sampling; the loop statistics */
    CHECK(p.accountant == DP_ACCT_PRV);
    dp_dataset d;
    make_ds(&d, 200, 1, 1, 16, 2, 1.5, 3);
    dp_model *m = NULL;
    CHECK_OK(dp_model_create("flatten linear(2)", 1, 1, 16, &m));
    if (!m) {
        dp_dataset_free(&d);
        return;
    }
    dp_rng init;
    dp_rng_seed(&init, 11);
    dp_model_init(m, &init);
    p.epochs = 2;
    p.expected_batch = 20;
    p.delta = 1e-3;
    p.optim.lr = 0.1;
    dp_train_result r;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    dp_epsilon_report er;
    CHECK_OK(t_epsilon1(DP_ACCT_PRV, r.q, r.sigma, r.steps, p.delta, &er));
    CHECK_CLOSE(r.epsilon, er.epsilon, 1e-9);
    CHECK(r.epsilon <= p.target_epsilon + 1e-9 && r.epsilon > p.target_epsilon - 0.02);
    double rdp_sigma = 0;
    CHECK_OK(dp_calibrate_sigma_kind(DP_ACCT_RDP, p.target_epsilon, p.delta, r.q, r.steps, 0.01, &rdp_sigma));
    CHECK(r.sigma < rdp_sigma); /* PRV is tighter: less noise for the same target */
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* --ema: the model a run ends with (and evaluates) is the exponential moving average of the
 * per-step parameters, a <- d a + (1 - d) w from the initial ones. The trajectory w_1..w_T is
 * read off runs of 1..T steps (q = 1, one step an epoch, sigma given: the same noise for
 * each prefix); a resumed run continues the average bit-exactly; bad decays are refused. */
static void test_ema(void) {
    dp_dataset d;
    make_ds(&d, 40, 1, 1, 6, 3, 0.5, 31);
    dp_train_params p = small_params();
    p.expected_batch = 40; /* q = 1, 1 step per epoch */
    const int T = 5;
    const double decay = 0.6;
    dp_model *m = new_model("linear(4) tanh linear(3)", 1, 1, 6, 3);
    const size_t np = dp_model_num_params(m);
    float *w0 = copy_params(m);
    double *avg = calloc(np, sizeof *avg);
    for (size_t j = 0; j < np; j++) avg[j] = w0[j];
    dp_train_result r;
    for (int t = 1; t <= T; t++) { /* w_t, and the average after t steps, as the library forms it */
        set_params(m, w0);
        p.epochs = t;
        CHECK_OK(dp_train(m, &d, NULL, &p, &r));
        const float *w = dp_model_params(m);
        /* warmed up: min(decay, t / (9 + t)) after the t-th step (0.1, 0.18, 0.25, 0.31, then 0.36) */
        const double dt = fmin(decay, t / (9.0 + t));
        CHECK_CLOSE(dp_train_ema_decay_at(decay, t - 1), dt, 1e-15);
        for (size_t j = 0; j < np; j++) avg[j] = (float)(dt * avg[j] + (1.0 - dt) * w[j]);
    }
    CHECK_CLOSE(dp_train_ema_decay_at(decay, 100), decay, 0);
    set_params(m, w0);
    p.epochs = T;
    p.ema_decay = decay;
    CHECK_OK(dp_train(m, &d, &d, &p, &r));
    double err = 0;
    for (size_t j = 0; j < np; j++) err = fmax(err, fabs(dp_model_params(m)[j] - avg[j]));
    CHECK(err == 0);
    double acc = 0;
    CHECK_OK(dp_evaluate(m, &d, 64, &acc, NULL));
    CHECK_CLOSE(r.test_accuracy, acc, 0); /* the figure reported is the average's */
    /* resumed halfway: the same average */
    char dir[256];
    CHECK(t_scratch_dir(dir, sizeof dir, "test_train_ema"));
    float *full = copy_params(m);
    set_params(m, w0);
    p.epochs = 2;
    p.checkpoint_dir = dir;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    p.epochs = T;
    p.resume = dir;
    p.force = 1; /* another epoch count */
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    CHECK(memcmp(dp_model_params(m), full, sizeof(float) * np) == 0);
    p.checkpoint_dir = p.resume = NULL;
    p.force = 0;
    p.ema_decay = 1;
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_RANGE && msg_has("ema_decay 1:"));
    p.ema_decay = -0.1;
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_RANGE);
    CHECK(t_remove_dir(dir) == 0);
    free(avg);
    dp_free(w0);
    dp_free(full);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* ---- adaptive clipping (Andrew et al. 2021) -------------------------------------------- */

typedef struct {
    double C[512]; /* C after each step */
    int n;
} c_trace;

static void trace_clip_norm(void *user, const dp_train_progress *pr) {
    c_trace *t = user;
    if (!pr->epoch_end && t->n < 512) t->C[t->n++] = pr->max_grad_norm;
}

/* One step per epoch over every example (q = 1) with lr 0, so the per-sample norms stay those
 * of the initial parameters: from C_t and C_t+1 the count's noise xi_t can be read back exactly,
 * since C_t+1 = C_t exp(-eta (b_t - Q)) with b_t = (centred count + xi_t) / n + 1/2. Returns the
 * number of steps traced; xi[t] receives the noise read back. */
static int adaptive_trace(dp_model *m, const float *w0, const dp_dataset *d, dp_train_params p, int noise, double *xi) {
    const int n = (int)d->n, K = dp_model_output_size(m);
    /* the per-sample norms at w0, as the step computes them (auto mode) */
    set_params(m, w0);
    const float *z;
    float *dz = dp_alloc(sizeof(float) * (size_t)n * K), *nrm = dp_alloc(sizeof(float) * (size_t)n);
    dp_clip_params cp = {DP_CLIP_AUTO, p.max_grad_norm, 0, 0};
    int bad = 0;
    CHECK_OK(dp_model_forward(m, d->x, n, 1, NULL, &z));
    CHECK_OK(dp_loss_xent(z, d->y, n, K, NULL, dz));
    CHECK_OK(dp_model_clipped_grad(m, &cp, dz, n, nrm, NULL, &bad));
    c_trace tr = {{0}, 0};
    p.progress = trace_clip_norm;
    p.progress_user = &tr;
    dp_train_result r;
    dp__train_test hooks = {noise, 0, NULL};
    set_params(m, w0);
    CHECK_OK(dp__train(m, d, NULL, &p, &hooks, &r));
    CHECK(tr.n == p.epochs && r.max_grad_norm == tr.C[tr.n - 1]);
    double C = p.max_grad_norm;
    for (int t = 0; t < tr.n; t++) {
        double centred = 0;
        for (int i = 0; i < n; i++) centred += nrm[i] <= C ? 0.5 : -0.5;
        const double b = p.clip_quantile - log(tr.C[t] / C) / p.clip_lr;
        xi[t] = (b - 0.5) * n - centred;
        C = tr.C[t];
    }
    dp_free(dz);
    dp_free(nrm);
    return tr.n;
}

static void test_adaptive_clipping(void) {
    const int n = 60;
    dp_dataset d;
    make_ds(&d, (size_t)n, 1, 4, 4, 3, 0.5, 41);
    dp_model *m = new_model("flatten linear(8) tanh linear(3)", 1, 4, 4, 5);
    float *w0 = copy_params(m);
    dp_train_params p = small_params();
    p.expected_batch = n; /* q = 1: every example in every step */
    p.optim.lr = 0;
    p.optim.momentum = 0;
    p.noise_multiplier = 1.0;
    p.max_grad_norm = 0.05;
    p.clip_quantile = 0.3;
    p.clip_lr = 1e-3;
    p.clip_count_noise = 3.0;

    /* (a) without noise the rule is exact: C_t+1 = C_t exp(-eta (fraction <= C_t - Q)) */
    double xi[512];
    p.epochs = 50;
    int T = adaptive_trace(m, w0, &d, p, 1, xi);
    double worst = 0;
    for (int t = 0; t < T; t++) worst = fmax(worst, fabs(xi[t]));
    if (!(worst < 1e-3)) fprintf(stderr, "  adaptive clipping without noise: count off by %g\n", worst);
    CHECK(worst < 1e-3);
    /* ... and counts examples, not rows, under augmentation multiplicity: 3 identical copies (no
     * shift, no flip) average to the example's own gradient */
    dp_train_params pa = p;
    pa.augmult = 3;
    pa.augment_pad = 0;
    pa.augment_flip = 0;
    T = adaptive_trace(m, w0, &d, pa, 1, xi);
    worst = 0;
    for (int t = 0; t < T; t++) worst = fmax(worst, fabs(xi[t]));
    if (!(worst < 1e-3)) fprintf(stderr, "  adaptive clipping with --augmult 3: count off by %g\n", worst);
    CHECK(worst < 1e-3);

    /* (b) with noise: the count's noise is centred with std clip_count_noise */
    p.epochs = 400;
    T = adaptive_trace(m, w0, &d, p, 0, xi);
    double s1 = 0, s2 = 0;
    for (int t = 0; t < T; t++) {
        s1 += xi[t];
        s2 += xi[t] * xi[t];
    }
    const double mean = s1 / T, var = s2 / T - mean * mean, sb = p.clip_count_noise;
    if (fabs(mean) > 4 * sb / sqrt(T) || fabs(var / (sb * sb) - 1) > 0.25)
        fprintf(stderr, "  the count's noise: mean %g, variance / sigma_b^2 %g over %d steps\n", mean, var / (sb * sb), T);
    CHECK(fabs(mean) <= 4 * sb / sqrt(T));
    CHECK(fabs(var / (sb * sb) - 1) <= 0.25);

    /* (c) the gradient's noise multiplier (Theorem 1): sigma_g = (sigma^-2 - (2 sigma_b)^-2)^-1/2;
     * sigma_b = 2 / sqrt(3) makes it 2 sigma, so the released noise doubles */
    p.epochs = 1;
    p.noise_multiplier = 2.0;
    p.clip_count_noise = 2.0 / sqrt(3.0);
    dp_train_result r;
    set_params(m, w0);
    p.optim.lr = 1.0;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    CHECK_CLOSE(r.noise_multiplier_gradient, 4.0, 1e-12);
    CHECK_CLOSE(r.sigma, 2.0, 0);
    float *pn = copy_params(m);
    set_params(m, w0);
    dp__train_test quiet = {1, 0, NULL};
    CHECK_OK(dp__train(m, &d, NULL, &p, &quiet, &r));
    const size_t np = dp_model_num_params(m);
    double sq = 0;
    for (size_t j = 0; j < np; j++) sq += ((double)pn[j] - dp_model_params(m)[j]) * ((double)pn[j] - dp_model_params(m)[j]);
    const double sd = sqrt(sq / (double)np), want = 4.0 * p.max_grad_norm / n;
    if (fabs(sd / want - 1) > 0.15) fprintf(stderr, "  gradient noise sd %g, want %g (%zu coords)\n", sd, want, np);
    CHECK(fabs(sd / want - 1) <= 0.15);
    dp_free(pn);

    /* (d) the theorem in the accountants: one step of the pair (sigma_g on the gradient, 2 sigma_b
     * on the count of sensitivity 1/2) spends what one step of sigma does */
    for (int k = 0; k < 2; k++) {
        const dp_accountant_kind kind = k ? DP_ACCT_PRV : DP_ACCT_RDP;
        dp_accountant *pair = NULL;
        dp_epsilon_report e2, e1;
        CHECK_OK(dp_accountant_create(&pair));
        CHECK_OK(dp_accountant_step(pair, 1.0, 4.0, 1));
        CHECK_OK(dp_accountant_step(pair, 1.0, 2.0 * p.clip_count_noise, 1));
        CHECK_OK(dp_accountant_epsilon(pair, kind, 1e-5, NULL, &e2));
        CHECK_OK(t_epsilon1(kind, 1.0, 2.0, 1, 1e-5, &e1));
        if (fabs(e2.epsilon / e1.epsilon - 1) > (k ? 2e-3 : 1e-9))
            fprintf(stderr, "  %s: the pair %g, sigma alone %g\n", k ? "prv" : "rdp", e2.epsilon, e1.epsilon);
        CHECK(fabs(e2.epsilon / e1.epsilon - 1) <= (k ? 2e-3 : 1e-9));
        dp_accountant_destroy(pair);
    }

    /* (e) a resumed run goes on with the checkpoint's C: bit-identical to an uninterrupted one */
    char dir[256];
    CHECK(t_scratch_dir(dir, sizeof dir, "test_train_adaptive"));
    p.noise_multiplier = 1.0;
    p.clip_count_noise = 3.0;
    p.clip_lr = 0.2;
    p.optim.lr = 0.5;
    p.expected_batch = 20;
    p.epochs = 6;
    set_params(m, w0);
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    float *full = copy_params(m);
    const double Cfull = r.max_grad_norm;
    CHECK(Cfull != p.max_grad_norm);
    set_params(m, w0);
    p.epochs = 3;
    p.checkpoint_dir = dir;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    p.epochs = 6;
    p.resume = dir;
    p.force = 1; /* another epoch count */
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    CHECK(r.max_grad_norm == Cfull);
    CHECK(memcmp(dp_model_params(m), full, sizeof(float) * np) == 0);
    p.force = 0;
    p.clip_quantile = 0.4; /* another target: only with force */
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_INVALID && msg_has("clip_quantile"));
    p.checkpoint_dir = p.resume = NULL;
    CHECK(t_remove_dir(dir) == 0);
    dp_free(full);

    /* (f) a C that leaves the range of a double stops the run, after the step that was released
     * is recorded: its epsilon is spent (step API, which keeps the accountant) */
    p.epochs = 2;
    p.clip_lr = 1e300;
    dp_trainer *tr = NULL;
    CHECK_OK(dp_trainer_create(m, &d, &p, &tr));
    CHECK(dp_trainer_step(tr, NULL) == DP_ERR_NONFINITE && msg_has("adaptive clipping: the clipping norm left"));
    double spent = 0;
    CHECK_OK(dp_trainer_epsilon(tr, &spent));
    if (!(spent > 0)) fprintf(stderr, "  a released step was not recorded: epsilon %g\n", spent);
    CHECK(spent > 0);
    dp_trainer_destroy(tr);
    p.clip_lr = 0.2;
    /* (g) refusals */
    p.clip_quantile = 1.0;
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_RANGE && msg_has("clip_quantile 1:"));
    p.clip_quantile = 0.5;
    p.clip_count_noise = 0.5; /* 2 x 0.5 = sigma: the count alone would spend the budget */
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_RANGE && msg_has("clip_count_noise 0.5"));
    p.clip_count_noise = 0;
    p.no_dp = 1;
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_INVALID && msg_has("clip_quantile"));

    dp_free(w0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

/* --lr-schedule cosine: step t of T uses lr (1 + cos(pi t / T)) / 2. Without noise, momentum or
 * sampling (q = 1), a 2-step cosine run is a step at lr, then one at lr / 2; a run stopped after
 * its first epoch and resumed is bit-identical to it. */
static void test_lr_schedule(void) {
    CHECK_CLOSE(dp_train_lr_at(DP_LR_COSINE, 2.0, 0, 4), 2.0, 0);
    CHECK_CLOSE(dp_train_lr_at(DP_LR_COSINE, 2.0, 2, 4), 1.0, 1e-15);
    CHECK_CLOSE(dp_train_lr_at(DP_LR_COSINE, 2.0, 3, 4), 2.0 * 0.5 * (1 + cos(0.75 * 3.14159265358979323846)), 1e-15);
    CHECK_CLOSE(dp_train_lr_at(DP_LR_CONSTANT, 2.0, 3, 4), 2.0, 0);
    dp_dataset d;
    make_ds(&d, 40, 1, 1, 6, 3, 0.5, 33);
    dp_model *m = new_model("linear(4) tanh linear(3)", 1, 1, 6, 3);
    const size_t np = dp_model_num_params(m);
    float *w0 = copy_params(m);
    dp_train_params p = small_params();
    p.expected_batch = 40;
    p.optim.momentum = 0;
    p.optim.lr = 0.8;
    dp__train_test quiet = {1, 0, NULL};
    dp_train_result r;
    p.epochs = 1; /* by hand: lr 0.8, then lr 0.4 */
    CHECK_OK(dp__train(m, &d, NULL, &p, &quiet, &r));
    p.optim.lr = 0.4;
    CHECK_OK(dp__train(m, &d, NULL, &p, &quiet, &r));
    float *hand = copy_params(m);
    set_params(m, w0);
    p.optim.lr = 0.8;
    p.epochs = 2;
    p.lr_schedule = DP_LR_COSINE;
    CHECK_OK(dp__train(m, &d, NULL, &p, &quiet, &r));
    double err = 0, moved = 0;
    for (size_t j = 0; j < np; j++) {
        err = fmax(err, fabs(dp_model_params(m)[j] - hand[j]));
        moved = fmax(moved, fabs(hand[j] - w0[j]));
    }
    if (!(err <= 1e-6 * moved)) fprintf(stderr, "  cosine schedule vs by hand: %g (moved %g)\n", err, moved);
    CHECK(moved > 0 && err <= 1e-6 * moved);
    /* resumed after the first of 4 epochs: the same weights */
    char dir[256];
    CHECK(t_scratch_dir(dir, sizeof dir, "test_train_lrs"));
    p.epochs = 4;
    set_params(m, w0);
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    float *full = copy_params(m);
    set_params(m, w0);
    p.epochs = 1;
    p.checkpoint_dir = dir;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    p.epochs = 4;
    p.resume = dir;
    p.force = 1; /* another epoch count: the schedule is over the new T */
    CHECK_OK(dp_train(m, &d, NULL, &p, &r));
    /* the first step ran at lr(0 of 1) = lr(0 of 4): the same weights */
    CHECK(memcmp(dp_model_params(m), full, sizeof(float) * np) == 0);
    p.force = 0;
    p.lr_schedule = DP_LR_CONSTANT; /* another schedule: only with force */
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_INVALID && msg_has("lr_schedule"));
    p.checkpoint_dir = p.resume = NULL;
    p.lr_schedule = 7;
    CHECK(dp_train(m, &d, NULL, &p, &r) == DP_ERR_RANGE && msg_has("lr_schedule 7"));
    CHECK(t_remove_dir(dir) == 0);
    dp_free(full);
    dp_free(hand);
    dp_free(w0);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

int main(void) {
    test_lr_schedule();
    test_adaptive_clipping();
    test_ema();
    test_steps_per_epoch();
    test_default_accountant();
    test_evaluate();
    test_regression();
    test_bad_params();
    test_out_of_memory();
    test_virtual_batches("flatten linear(8) tanh linear(3)", 1, 4, 4);
    test_virtual_batches("conv2d(3,3,s1,p1) tanh maxpool(2) flatten linear(3)", 1, 6, 6);
    test_noise_scale();
    test_expected_batch_divisor();
    test_empty_batches();
    test_nonfinite();
    test_frozen();
    test_determinism();
    test_learning();
    return t_finish("test_train");
}
