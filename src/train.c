/* train.c: the DP-SGD training loop and evaluation. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <time.h>

#include "dpsgd/privacy.h"
#include "dpsgd/train.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

dp_train_params dp_train_default_params(void) {
    dp_train_params p;
    memset(&p, 0, sizeof p);
    p.clipping = DP_CLIP_GHOST;
    p.max_grad_norm = 0.1;
    p.noise_multiplier = 0;
    p.target_epsilon = 3.0;
    p.delta = 1e-5;
    p.expected_batch = 2048;
    p.epochs = 40;
    p.optim = dp_optim_default_params(DP_OPT_SGD);
    p.optim.lr = 4.0;
    p.optim.momentum = 0.9;
    p.eval_batch = 1000;
    return p;
}

int dp_train_steps_per_epoch(size_t n, int expected_batch) {
    if (expected_batch < 1) return 1;
    long s = lround((double)n / expected_batch);
    return s < 1 ? 1 : (int)s;
}

dp_status dp_evaluate(dp_model *m, const dp_dataset *d, int batch, double *accuracy, double *loss) {
    int K = dp_model_output_size(m);
    if (batch < 1) batch = 1000;
    float *lv = dp_alloc(sizeof(float) * (size_t)batch);
    if (!lv) return DP_ERR_NOMEM;
    size_t correct = 0;
    double lsum = 0;
    dp_status st = DP_OK;
    for (size_t off = 0; off < d->n; off += (size_t)batch) {
        int B = (int)(d->n - off < (size_t)batch ? d->n - off : (size_t)batch);
        const float *z;
        if ((st = dp_model_forward(m, d->x + off * d->dim, B, 0, NULL, &z)) != DP_OK) break;
        for (int i = 0; i < B; i++) {
            const float *zi = z + (size_t)i * K;
            int best = 0;
            for (int c = 1; c < K; c++)
                if (zi[c] > zi[best]) best = c;
            correct += best == d->y[off + (size_t)i];
        }
        st = dp_loss_xent(z, d->y + off, B, K, lv, NULL);
        if (st != DP_OK) break;
        for (int i = 0; i < B; i++) lsum += lv[i];
    }
    dp_free(lv);
    if (st != DP_OK) return st;
    if (accuracy) *accuracy = d->n ? (double)correct / (double)d->n : 0;
    if (loss) *loss = d->n ? lsum / (double)d->n : 0;
    return DP_OK;
}

/* Fisher-Yates on the first k positions of perm (a partial shuffle): a uniform k-subset. */
static void shuffle_prefix(size_t *perm, size_t n, size_t k, dp_rng *rng) {
    for (size_t i = 0; i < k && i + 1 < n; i++) {
        size_t j = i + (size_t)(dp_rng_u64(rng) % (uint64_t)(n - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static dp_status grow(void **buf, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return DP_OK;
    dp_free(*buf);
    *buf = dp_alloc(need * elem);
    *cap = *buf ? need : 0;
    return *buf ? DP_OK : DP_ERR_NOMEM;
}

dp_status dp_train(dp_model *m, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *p,
                   dp_train_result *result) {
    const size_t N = tr->n, dim = tr->dim;
    const int K = dp_model_output_size(m);
    const size_t np = dp_model_num_params(m);
    if (N == 0) return dp_fail(DP_ERR_INVALID, "training set is empty");
    if (dim != dp_model_input_size(m))
        return dp_fail(DP_ERR_INVALID, "training set rows have %zu features but the model expects %zu", dim,
                       dp_model_input_size(m));
    if (te && te->dim != dim)
        return dp_fail(DP_ERR_INVALID, "test set rows have %zu features, training set %zu", te->dim, dim);
    if (p->epochs < 1) return dp_fail(DP_ERR_RANGE, "--epochs %d: must be >= 1", p->epochs);
    if (p->expected_batch < 1 || (size_t)p->expected_batch > N)
        return dp_fail(DP_ERR_RANGE, "--batch-size %d: must be in 1..%zu (the training set size)", p->expected_batch, N);
    if (p->physical_batch < 0) return dp_fail(DP_ERR_RANGE, "--physical-batch %d: must be >= 0", p->physical_batch);
    if (!p->no_dp) {
        if (!(p->max_grad_norm > 0) || !isfinite(p->max_grad_norm))
            return dp_fail(DP_ERR_RANGE, "--max-grad-norm %g: must be a positive finite number", p->max_grad_norm);
        if (!(p->delta > 0 && p->delta < 1)) return dp_fail(DP_ERR_RANGE, "--delta %g: must be in (0, 1)", p->delta);
        if (!(p->delta < 1.0 / (double)N))
            return dp_fail(DP_ERR_RANGE, "--delta %g: must be below 1/n = %g, or the guarantee is void", p->delta,
                           1.0 / (double)N);
    }
    const double q = (double)p->expected_batch / (double)N;
    const int spe = dp_train_steps_per_epoch(N, p->expected_batch);
    const long steps = (long)spe * p->epochs;
    double sigma = 0;
    dp_status st = DP_OK;
    if (!p->no_dp) {
        if (p->noise_multiplier > 0) sigma = p->noise_multiplier;
        else if ((st = dp_calibrate_sigma(p->target_epsilon, p->delta, q, steps, 0.01, &sigma)) != DP_OK)
            return st;
    }
    dp_accountant *acc = NULL;
    dp_optim *opt = NULL;
    size_t *idx = NULL;
    float *xb = NULL, *dz = NULL, *lv = NULL;
    int32_t *yb = NULL;
    size_t cap_x = 0, cap_y = 0, cap_dz = 0, cap_l = 0;
    dp_train_result r;
    memset(&r, 0, sizeof r);
    r.sigma = sigma;
    r.q = q;
    r.delta = p->delta;
    r.steps_per_epoch = spe;
    if ((st = dp_accountant_create(&acc)) != DP_OK) goto done;
    if ((st = dp_optim_create(&p->optim, np, &opt)) != DP_OK) goto done;
    if (!(idx = dp_alloc(sizeof(size_t) * N))) {
        st = DP_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < N; i++) idx[i] = i;
    dp_rng root, rs, rn, rd;
    dp_rng_seed(&root, p->seed);
    dp_rng_split(&root, &rs); /* sampling */
    dp_rng_split(&root, &rn); /* noise */
    dp_rng_split(&root, &rd); /* dropout */
    const unsigned char *mask = dp_model_trainable_mask(m);
    float *grad = dp_model_grad(m), *params = dp_model_params(m);
    const double t0 = now_s();
    dp_mem_reset_peak();
    long step = 0;
    double batch_sum = 0;
    dp_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.epochs = p->epochs;
    pr.steps = steps;
    pr.steps_per_epoch = spe;
    pr.test_accuracy = -1;
    for (int ep = 1; ep <= p->epochs; ep++) {
        double lsum = 0;
        size_t lcount = 0;
        if (p->no_dp) shuffle_prefix(idx, N, N, &rs);
        for (int s = 0; s < spe; s++, step++) {
            size_t count, first = 0;
            dp_mem_stage("sample");
            if (p->no_dp) {
                first = (size_t)s * (size_t)p->expected_batch % N;
                count = N - first < (size_t)p->expected_batch ? N - first : (size_t)p->expected_batch;
            } else {
                if ((st = dp_poisson_sample(&rs, N, q, idx, &count)) != DP_OK) goto done;
            }
            batch_sum += (double)count;
            if (count == 0) r.empty_batches++;
            dp_model_zero_grad(m);
            size_t chunk = count ? count : 1; /* buffers for what is processed at once, never more */
            if (p->physical_batch > 0 && (size_t)p->physical_batch < chunk) chunk = (size_t)p->physical_batch;
            if ((st = grow((void **)&xb, &cap_x, chunk * dim, sizeof(float))) != DP_OK ||
                (st = grow((void **)&yb, &cap_y, chunk, sizeof(int32_t))) != DP_OK ||
                (st = grow((void **)&dz, &cap_dz, chunk * (size_t)K, sizeof(float))) != DP_OK ||
                (st = grow((void **)&lv, &cap_l, chunk, sizeof(float))) != DP_OK)
                goto done;
            for (size_t off = 0; off < count; off += chunk) {
                int B = (int)(count - off < chunk ? count - off : chunk);
                for (int i = 0; i < B; i++) {
                    size_t e = idx[first + off + (size_t)i];
                    memcpy(xb + (size_t)i * dim, tr->x + e * dim, sizeof(float) * dim);
                    yb[i] = tr->y[e];
                }
                const float *z;
                dp_mem_stage("forward");
                if ((st = dp_model_forward(m, xb, B, 1, &rd, &z)) != DP_OK) goto done;
                st = dp_loss_xent(z, yb, B, K, lv, dz);
                if (st == DP_ERR_NONFINITE) {
                    st = dp_fail(DP_ERR_NONFINITE, "step %ld (epoch %d): %s; training stopped (lower --lr?)", step + 1,
                                 ep, dp_last_error());
                    goto done;
                }
                if (st != DP_OK) goto done;
                for (int i = 0; i < B; i++) lsum += lv[i];
                lcount += (size_t)B;
                if (p->no_dp) {
                    dp_mem_stage("backward");
                    st = dp_model_backward(m, dz, B);
                } else {
                    dp_clip_params cp = {p->clipping, p->max_grad_norm};
                    int bad = 0;
                    dp_mem_stage("clip");
                    st = dp_model_clipped_grad(m, &cp, dz, B, NULL, NULL, &bad);
                    r.nonfinite_samples += bad;
                }
                if (st != DP_OK) goto done;
            }
            dp_mem_stage("optimizer");
            double scale;
            if (!p->no_dp) {
                /* noise on every trainable coordinate, then divide by the EXPECTED batch size */
                dp_noise_gaussian(grad, np, sigma * p->max_grad_norm, &rn);
                scale = 1.0 / (q * (double)N);
            } else {
                scale = count ? 1.0 / (double)count : 0.0;
            }
            for (size_t j = 0; j < np; j++) grad[j] = mask[j] ? (float)(grad[j] * scale) : 0.0f;
            dp_optim_step(opt, params, grad, mask);
            if (!p->no_dp && (st = dp_accountant_step(acc, q, sigma, 1)) != DP_OK) goto done;
            for (size_t j = 0; j < np; j++)
                if (!isfinite(params[j])) {
                    st = dp_fail(DP_ERR_NONFINITE, "step %ld (epoch %d): parameter %zu became non-finite; training stopped "
                                 "(lower --lr?)", step + 1, ep, j);
                    goto done;
                }
            pr.epoch = ep;
            pr.step = step + 1;
            pr.step_in_epoch = s + 1;
            pr.train_loss = lcount ? lsum / (double)lcount : 0;
            pr.elapsed = now_s() - t0;
            pr.epoch_end = 0;
            if (p->progress) p->progress(p->progress_user, &pr);
        }
        dp_mem_stage("evaluate");
        if (te && (st = dp_evaluate(m, te, p->eval_batch, &pr.test_accuracy, &pr.test_loss)) != DP_OK) goto done;
        if (!p->no_dp && (st = dp_accountant_epsilon(acc, p->delta, &pr.epsilon, NULL)) != DP_OK) goto done;
        pr.elapsed = now_s() - t0;
        pr.epoch_end = 1;
        if (p->progress) p->progress(p->progress_user, &pr);
    }
    r.test_accuracy = te ? pr.test_accuracy : -1;
    r.test_loss = te ? pr.test_loss : 0;
    r.epsilon = pr.epsilon;
    r.steps = step;
    r.seconds = now_s() - t0;
    r.mean_batch = step ? batch_sum / (double)step : 0;
    r.peak_bytes = dp_mem_get().peak_bytes;
    *result = r;
done:
    dp_accountant_destroy(acc);
    dp_optim_destroy(opt);
    dp_free(idx);
    dp_free(xb);
    dp_free(yb);
    dp_free(dz);
    dp_free(lv);
    return st;
}
