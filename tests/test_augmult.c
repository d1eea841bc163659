#define _POSIX_C_SOURCE 200809L /* mkdtemp */
/* test_augmult.c: augmentation multiplicity (De et al. 2022). The clipping engine with groups of
 * rows (dp_clip_params.group) in every mode against the reference formed one example at a time
 * from per-row gradients (dp_model_per_sample_grads): average the example's rows, clip the
 * average with the engine's factor formula, sum; a clipped example's norm <= C with no tolerance;
 * the crops and flips pixel by pixel; dp_train
 * with augmult: the same epsilon as without, reproducible with a noise seed, a resume
 * bit-identical to the uninterrupted run, and the refusals naming their field. */
#include "fixtures.h"
#include "train/step.h"

static dp_rng R;

/* the engine's factor (src/nn/clip.c, clip_factors), margin included, in double */
static double clip_factor(double norm, double C) {
    double r = C * (1.0 - 0x1p-18) / (norm + 1e-6);
    return r < 1.0 ? r : 1.0;
}

/* B = E * G rows of a model with inputs c x h x w; every mode's clipped sum with group G must
 * equal the example-at-a-time reference. C is put between the examples' norms, so that some
 * are clipped and some not. `inf_example` >= 0: that example's second row gets a non-finite
 * loss gradient; it must get factor 0 and count as one non-finite example. */
static void check_groups(const char *spec, int c, int h, int w, int E, int G, int inf_example) {
    dp_model *m = new_model(spec, c, h, w, 11);
    const int B = E * G, K = dp_model_output_size(m);
    const size_t np = dp_model_num_params(m), dim = dp_model_input_size(m);
    float *x = dp_alloc(sizeof(float) * B * dim), *dz = dp_alloc(sizeof(float) * B * K);
    float *ps = dp_alloc(sizeof(float) * B * np), *ref = dp_calloc(np, sizeof(float));
    int32_t *y = dp_alloc(sizeof(int32_t) * B);
    double *avg = dp_calloc(np, sizeof(double)), *rn = dp_calloc(E, sizeof(double)), *rf = dp_calloc(E, sizeof(double));
    for (size_t j = 0; j < (size_t)B * dim; j++) x[j] = (float)dp_rng_normal(&R);
    for (int i = 0; i < E; i++)
        for (int k = 0; k < G; k++) y[i * G + k] = (int32_t)(i % K);
    /* a larger loss gradient on the even examples: norms spread over a wide range */
    const float *logits;
    CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
    CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
    for (int b = 0; b < B; b++)
        for (int j = 0; j < K; j++) dz[b * K + j] *= (b / G) % 2 ? 1.0f : 8.0f;
    if (inf_example >= 0) dz[(inf_example * G + (G > 1)) * K] = INFINITY;
    CHECK_OK(dp_model_per_sample_grads(m, dz, B, ps));
    /* the examples' norms, of their average gradients */
    double lo = INFINITY, hi = 0;
    for (int i = 0; i < E; i++) {
        memset(avg, 0, sizeof(double) * np);
        for (int k = 0; k < G; k++)
            for (size_t j = 0; j < np; j++) avg[j] += ps[(size_t)(i * G + k) * np + j];
        double s = 0;
        for (size_t j = 0; j < np; j++) s += (avg[j] / G) * (avg[j] / G);
        rn[i] = sqrt(s);
        if (i == inf_example) continue;
        if (rn[i] < lo) lo = rn[i];
        if (rn[i] > hi) hi = rn[i];
    }
    const double C = sqrt(lo * hi); /* the smallest is not clipped, the largest is */
    int clipped = 0;
    for (int i = 0; i < E; i++) {
        if (i == inf_example) continue;
        rf[i] = clip_factor(rn[i], C);
        clipped += rf[i] < 1.0;
        for (size_t j = 0; j < np; j++) {
            double a = 0;
            for (int k = 0; k < G; k++) a += ps[(size_t)(i * G + k) * np + j];
            ref[j] += (float)(rf[i] * a / G);
        }
    }
    CHECK(clipped > 0 && clipped < E - (inf_example >= 0));
    float *norms = dp_alloc(sizeof(float) * E), *fac = dp_alloc(sizeof(float) * E);
    /* every mode; auto also with a budget no kept tensor fits (all second pass) and a huge one
     * (everything kept: per-sample gradients for conv layers, G for the head) */
    const size_t budgets[3] = {0, 1, (size_t)1 << 40};
    for (int run = 0; run < DP_CLIP_COUNT + 2; run++) {
        const int mode = run < DP_CLIP_COUNT ? run : DP_CLIP_AUTO;
        dp_clip_params cp = {(dp_clip_mode)mode, C, run < DP_CLIP_COUNT ? 0 : budgets[run - DP_CLIP_COUNT + 1], G};
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
        int bad = -1;
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, fac, &bad));
        CHECK(bad == (inf_example >= 0));
        double e = t_rel_err(dp_model_grad(m), ref, np), en = 0, ef = 0;
        int finite = 1;
        for (size_t j = 0; j < np; j++) finite &= isfinite(dp_model_grad(m)[j]) != 0;
        for (int i = 0; i < E; i++) {
            if (i == inf_example) {
                CHECK(fac[i] == 0.0f);
                continue;
            }
            en = fmax(en, fabs(norms[i] - rn[i]) / rn[i]);
            ef = fmax(ef, fabs(fac[i] - rf[i]) / rf[i]);
            CHECK((double)fac[i] <= rf[i]); /* rounded down */
        }
        CHECK(finite);
        CHECK(e < 1e-5 && en < 1e-5 && ef < 1e-6);
        if (!(e < 1e-5 && en < 1e-5 && ef < 1e-6))
            fprintf(stderr, "mode %s (budget %zu) on '%s', group %d: clipped sum rel err %g, norms %g, factors %g\n",
                    dp_clip_mode_name((dp_clip_mode)mode), cp.mem_budget, spec, G, e, en, ef);
    }
    /* a batch that is not whole groups, and groups out of range, are refused */
    dp_clip_params cp = {DP_CLIP_GHOST, C, 0, G};
    if (G > 1) {
        CHECK_OK(dp_model_forward(m, x, B - 1, 1, NULL, &logits));
        CHECK(dp_model_clipped_grad(m, &cp, dz, B - 1, NULL, NULL, NULL) == DP_ERR_INVALID);
    }
    cp.group = DP_CLIP_MAX_GROUP + 1;
    CHECK(dp_model_clipped_grad(m, &cp, dz, B, NULL, NULL, NULL) == DP_ERR_RANGE);
    cp.group = -1;
    CHECK(dp_model_clipped_grad(m, &cp, dz, B, NULL, NULL, NULL) == DP_ERR_RANGE);
    dp_free(x); dp_free(dz); dp_free(ps); dp_free(ref); dp_free(y); dp_free(avg); dp_free(rn); dp_free(rf);
    dp_free(norms); dp_free(fac);
    dp_model_destroy(m);
}

/* One example of G copies: its clipped contribution (the clipped sum of one example) has norm
 * <= C with no tolerance in every mode, C just below the norm of the average and well below:
 * the rows' weights R_i / G must not round the bound away. */
static void check_group_bound(const char *spec, int c, int h, int w, int G, int reps) {
    dp_model *m = new_model(spec, c, h, w, 17);
    const size_t np = dp_model_num_params(m), dim = dp_model_input_size(m);
    const int K = dp_model_output_size(m);
    float *x = dp_alloc(sizeof(float) * G * dim), *dz = dp_alloc(sizeof(float) * G * K);
    static const double below[] = {-1e-8, 0.0, 1e-7, 1e-6, 1e-3, 0.5};
    const float *logits;
    int checked = 0, over = 0;
    for (int rep = 0; rep < reps; rep++) {
        for (size_t j = 0; j < (size_t)G * dim; j++) x[j] = (float)dp_rng_normal(&R);
        for (int j = 0; j < G * K; j++) dz[j] = (float)(pow(10.0, rep % 5 - 2) * dp_rng_normal(&R));
        dp_clip_params big = {DP_CLIP_VANILLA, 1e30, 0, G};
        float n0 = 0;
        CHECK_OK(dp_model_forward(m, x, G, 1, NULL, &logits));
        CHECK_OK(dp_model_clipped_grad(m, &big, dz, G, &n0, NULL, NULL));
        if (!(n0 > 0)) continue;
        for (size_t b = 0; b < sizeof below / sizeof below[0]; b++)
            for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
                const double C = n0 * (1 - below[b]);
                dp_clip_params cp = {(dp_clip_mode)mode, C, 0, G};
                dp_model_zero_grad(m);
                CHECK_OK(dp_model_forward(m, x, G, 1, NULL, &logits));
                CHECK_OK(dp_model_clipped_grad(m, &cp, dz, G, NULL, NULL, NULL));
                double sq = 0;
                for (size_t j = 0; j < np; j++) sq += (double)dp_model_grad(m)[j] * dp_model_grad(m)[j];
                checked++;
                over += sqrt(sq) > C;
            }
    }
    CHECK(checked > 0 && over == 0);
    if (over) fprintf(stderr, "'%s' group %d: %d of %d clipped examples have norm > C\n", spec, G, over, checked);
    dp_free(x); dp_free(dz);
    dp_model_destroy(m);
}

/* The memory estimate with groups covers instantiating every layer (whole groups per chunk), and
 * the largest batch within a budget is whole groups. */
static void test_group_plan(void) {
    dp_model *m = new_model("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 3);
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_clip_params c1 = {(dp_clip_mode)mode, 1.0, 0, 0}, c4 = c1;
        c4.group = 4;
        CHECK(dp_model_clip_plan_bytes(m, &c4, 64) >= dp_model_clip_plan_bytes(m, &c1, 64) || mode == DP_CLIP_AUTO);
        const int n = dp_model_max_batch_within(m, &c4, dp_model_clip_plan_bytes(m, &c4, 40), 64);
        CHECK(n % 4 == 0 && n >= 40 && n < 64);
        char buf[4096];
        CHECK_OK(dp_model_describe_plan(m, &c4, 64, buf, sizeof buf));
        CHECK(strstr(buf, "16 examples x 4 augmented copies") != NULL && strstr(buf, "norm ghost") == NULL);
    }
    dp_model_destroy(m);
}

/* crops and flips, pixel by pixel, and the draws' ranges */
static void test_augment_apply(void) {
    const int c = 2, h = 3, w = 4;
    float x[24], out[24];
    for (int j = 0; j < 24; j++) x[j] = (float)(j + 1);
    dp_augment a = {1, -2, 0};
    dp__augment_apply(x, out, c, h, w, &a);
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                const int si = i + 1, sj = j - 2;
                const float want = si < h && sj >= 0 ? x[(ch * h + si) * w + sj] : 0.0f;
                CHECK(out[(ch * h + i) * w + j] == want);
            }
    a = (dp_augment){0, 0, 1}; /* a mirror image */
    dp__augment_apply(x, out, c, h, w, &a);
    CHECK(out[0] == x[3] && out[3] == x[0] && out[12 + 5] == x[12 + 6]);
    a = (dp_augment){-1, 1, 1}; /* shift, then mirror: out[i][j] = x[i - 1][w - 1 - (j + 1)] */
    dp__augment_apply(x, out, c, h, w, &a);
    CHECK(out[0] == 0.0f && out[w + 0] == x[2] && out[w + 3] == 0.0f && out[2 * w + 1] == x[w + 1]);
    dp_rng r;
    dp_rng_seed(&r, 5);
    int seen[9] = {0}, flips = 0;
    for (int t = 0; t < 2000; t++) {
        dp__augment_draw(&r, 4, 1, &a);
        CHECK(a.dy >= -4 && a.dy <= 4 && a.dx >= -4 && a.dx <= 4);
        if (a.dy >= -4 && a.dy <= 4) seen[a.dy + 4] = 1;
        flips += a.flip;
        dp__augment_draw(&r, 4, 0, &a);
        CHECK(a.flip == 0);
    }
    int all = 1;
    for (int k = 0; k < 9; k++) all &= seen[k];
    CHECK(all && flips > 850 && flips < 1150);
}

/* dp_train with augmult: epsilon as without it, reproducible, resumable bit-identically,
 * refusals naming their field */
static void test_train_augmult(void) {
    dp_dataset d;
    make_ds(&d, 60, 1, 6, 6, 3, 0.3, 21);
    dp_model *m = new_model("conv2d(3,3,s1,p1) tanh maxpool(2) flatten linear(3)", 1, 6, 6, 4);
    const size_t np = dp_model_num_params(m);
    float *p0 = copy_params(m);
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = 1;
    p.noise_seed = p.seed = 3;
    p.max_grad_norm = 0.5;
    p.noise_multiplier = 1.0;
    p.delta = 1e-3;
    p.accountant = DP_ACCT_RDP;
    p.expected_batch = 12;
    p.epochs = 2;
    p.optim.lr = 0.5;
    dp_train_result r0, r1, r2;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r0));
    float *plain = copy_params(m);
    memcpy(dp_model_params(m), p0, sizeof(float) * np);
    p.augmult = 3;
    p.augment_pad = 2;
    p.physical_batch = 5; /* examples: chunks of 15 rows */
    CHECK_OK(dp_train(m, &d, NULL, &p, &r1));
    float *aug = copy_params(m);
    CHECK(r1.epsilon == r0.epsilon && r1.steps == r0.steps && r1.sigma == r0.sigma);
    CHECK(t_rel_err(aug, plain, np) > 1e-3); /* the augmentation changed the run */
    memcpy(dp_model_params(m), p0, sizeof(float) * np);
    CHECK_OK(dp_train(m, &d, NULL, &p, &r2));
    CHECK(memcmp(aug, dp_model_params(m), sizeof(float) * np) == 0);
    /* resumed after the first epoch: bit-identical; another augmult is refused without force */
    char dir[256];
    CHECK(t_scratch_dir(dir, sizeof dir, "test_augmult"));
    memcpy(dp_model_params(m), p0, sizeof(float) * np);
    p.epochs = 1;
    p.checkpoint_dir = dir;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r2));
    float *half = copy_params(m);
    p.epochs = 2;
    p.resume = dir;
    p.force = 1; /* another epoch count */
    CHECK_OK(dp_train(m, &d, NULL, &p, &r2));
    CHECK(memcmp(aug, dp_model_params(m), sizeof(float) * np) == 0);
    CHECK(r2.epsilon == r1.epsilon);
    /* a checkpoint of epoch 1 again, then a resume with another multiplicity */
    memcpy(dp_model_params(m), half, sizeof(float) * np);
    p.epochs = 1;
    p.resume = NULL;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r2)); /* force: replaces the checkpoint */
    p.epochs = 2;
    p.resume = dir;
    p.force = 0;
    p.augmult = 2;
    CHECK(dp_train(m, &d, NULL, &p, &r2) == DP_ERR_INVALID && msg_has("augmult"));
    p.checkpoint_dir = p.resume = NULL;
    CHECK(t_remove_dir(dir) == 0);
    /* no_dp: supported, the copies' mean gradient */
    p.no_dp = 1;
    p.augmult = 2;
    CHECK_OK(dp_train(m, &d, NULL, &p, &r2));
    p.no_dp = 0;
    /* refusals */
    p.augmult = DP_CLIP_MAX_GROUP + 1;
    CHECK(dp_train(m, &d, NULL, &p, &r2) == DP_ERR_RANGE && msg_has("augmult 65"));
    p.augmult = -1;
    CHECK(dp_train(m, &d, NULL, &p, &r2) == DP_ERR_RANGE && msg_has("augmult -1"));
    p.augmult = 2;
    p.augment_pad = 6;
    CHECK(dp_train(m, &d, NULL, &p, &r2) == DP_ERR_RANGE && msg_has("augment_pad 6"));
    p.augment_pad = 1;
    dp_trainer *t = NULL;
    CHECK_OK(dp_trainer_create(m, &d, &p, &t)); /* the step API has it too */
    CHECK_OK(dp_trainer_step(t, NULL));
    dp_trainer_destroy(t);
    dp_dataset flat;
    make_ds(&flat, 40, 1, 1, 36, 3, 0.3, 22);
    dp_model *mf = new_model("linear(4) tanh linear(3)", 1, 1, 36, 5);
    CHECK(dp_train(mf, &flat, NULL, &p, &r2) == DP_ERR_INVALID && msg_has("not images"));
    CHECK(dp_trainer_create(mf, &flat, &p, &t) == DP_ERR_INVALID && msg_has("augmult"));
    dp_model_destroy(mf);
    dp_dataset_free(&flat);
    dp_free(p0); dp_free(plain); dp_free(aug); dp_free(half);
    dp_model_destroy(m);
    dp_dataset_free(&d);
}

int main(void) {
    dp_rng_seed(&R, 2022);
    test_augment_apply();
    /* an MLP on image inputs, small CNNs, the default CNN; groups of 1 (the plain engine), 2, 3, 4 */
    check_groups("flatten linear(16) relu linear(5)", 1, 4, 5, 6, 3, -1);
    check_groups("flatten linear(16) relu linear(5)", 1, 4, 5, 5, 1, -1);
    check_groups("flatten linear(16) relu linear(5)", 1, 4, 5, 5, 4, 2);
    check_groups("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 6, 2, -1);
    check_groups("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 5, 3, 1);
    check_groups("conv2d(4,3,s1,p1,nobias) groupnorm(2) scale bias sigmoid globalavgpool flatten bias linear(7)", 2, 7, 6, 5,
                 3, -1);
    check_groups("conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh linear(10)",
                 1, 28, 28, 4, 4, -1);
    check_group_bound("flatten linear(16) relu linear(5)", 1, 4, 5, 3, 20);
    check_group_bound("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 7, 10);
    test_group_plan();
    test_train_augmult();
    return t_finish("test_augmult");
}
