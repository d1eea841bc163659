/* train.c: the DP-SGD training loop (sampling, the step, evaluation, and the calls to the
 * checkpoints of train_checkpoint.c), the ranks' checks, and dp_evaluate. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpsgd/io.h"
#include "dpsgd/privacy.h"
#include "dpsgd/secure.h"
#include "dpsgd/train.h"
#include "core/internal.h"
#include "train/step.h"
#include "core/testhooks.h"
#include "train/train_checkpoint.h"

_Static_assert(sizeof(size_t) == sizeof(int64_t), "the sampler permutation is checkpointed as I64");

dp_train_params dp_train_default_params(void) {
    dp_train_params p;
    memset(&p, 0, sizeof p);
    p.clipping = DP_CLIP_AUTO;
    p.max_grad_norm = 0.1;
    p.noise_multiplier = 0;
    p.target_epsilon = 3.0;
    p.delta = 1e-5;
    p.accountant = DP_ACCT_PRV;
    p.expected_batch = 2048;
    p.epochs = 40;
    p.optim = dp_optim_default_params(DP_OPT_SGD);
    p.optim.lr = 4.0;
    p.optim.momentum = 0.9;
    p.eval_batch = 1000;
    p.augment_pad = 4;
    p.augment_flip = 1;
    return p;
}

double dp_train_ema_decay_at(double decay, long t) {
    const double warm = (1.0 + (double)t) / (10.0 + (double)t);
    return decay < warm ? decay : warm;
}

double dp_train_lr_at(int schedule, double lr, long t, long T) {
    if (schedule != DP_LR_COSINE || T <= 0) return lr;
    return lr * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)t / (double)T));
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
        if (d->t) { /* regression: the mean squared error; no accuracy */
            if (d->n_targets != K) {
                st = dp_fail(DP_ERR_INVALID, "evaluate: %d regression targets per row, but the model has %d outputs",
                             d->n_targets, K);
                break;
            }
            if ((st = dp_loss_mse(z, d->t + off * (size_t)K, B, K, lv, NULL)) != DP_OK) break;
            for (int i = 0; i < B; i++) lsum += lv[i];
            continue;
        }
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
    if (accuracy) *accuracy = d->t ? -1 : d->n ? (double)correct / (double)d->n : 0;
    if (loss) *loss = d->n ? lsum / (double)d->n : 0;
    return DP_OK;
}

/* ---- sharded sampling and the ranks' checks ------------------------------------------------ */

/* splitmix64 of one value */
static uint64_t mix64(uint64_t z) { return dp__splitmix64(&z); }

/* The stream of shard r at step `step` (0-based) for purpose `salt`: a function of the seed,
 * step and shard only, so a rank needs no state to resume and one process can emulate any
 * rank's draws (shards > 1). */
static void shard_rng(dp_rng *r, uint64_t seed, long step, int shard, uint64_t salt) {
    dp_rng_seed(r, mix64(mix64(mix64(seed ^ salt) ^ (uint64_t)step) ^ (uint64_t)shard));
}

/* FNV-1a over n bytes, continuing from h (start: FNV_START) */
#define FNV_START 1469598103934665603ULL
static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t params_hash(const float *x, size_t n) { return fnv_bytes(FNV_START, x, n * sizeof(float)); }

/* Every rank must run one configuration: a rank clipping at another C, or with another sigma,
 * q or step count, would break the guarantee or hang in a collective. Compared before any
 * collective whose size depends on it. */
static dp_status check_same_config(const dp_train_comm *c, const dp_checkpoint_info *k, long steps) {
    uint64_t data[2] = {k->data_n, k->data_dim}, seeds[3] = {(uint64_t)k->secure, k->noise_seed, k->seed};
    const dp_optim_params *o = &k->optim; /* field by field: a struct's padding is not part of it */
    const double adaptive[3] = {k->clip_quantile, k->clip_lr, k->clip_count_noise};
    const int64_t sched = k->lr_schedule;
    double optim[9] = {(double)o->kind, o->lr,    o->momentum, o->dampening, (double)o->nesterov,
                       o->weight_decay, o->beta1, o->beta2,    o->eps};
    /* in cause-first order: another step count or delta also changes a calibrated sigma */
    const struct {
        const char *what;
        uint64_t h;
    } f[] = {
        {"model", fnv_bytes(FNV_START, k->model, strlen(k->model))},
        {"training data size", fnv_bytes(FNV_START, data, sizeof data)},
        {"training data content (checksum)", k->data_checksum},
        {"max_grad_norm", fnv_bytes(FNV_START, &k->max_grad_norm, sizeof k->max_grad_norm)},
        {"sample rate (expected_batch)", fnv_bytes(FNV_START, &k->q, sizeof k->q)},
        {"step count (epochs, expected_batch)", fnv_bytes(FNV_START, &steps, sizeof steps)},
        {"delta", fnv_bytes(FNV_START, &k->delta, sizeof k->delta)},
        {"noise multiplier (target_epsilon, noise_multiplier, the accountant kind)", fnv_bytes(FNV_START, &k->sigma, sizeof k->sigma)},
        {"clipping", (uint64_t)k->clipping},
        {"noise source and seeds (noise_seeded, noise_seed, seed)", fnv_bytes(FNV_START, seeds, sizeof seeds)},
        {"optimizer (optim.kind, lr, momentum, ...)", fnv_bytes(FNV_START, optim, sizeof optim)},
        {"no_dp", (uint64_t)k->no_dp},
        {"adaptive clipping (clip_quantile, clip_lr, clip_count_noise)", fnv_bytes(FNV_START, adaptive, sizeof adaptive)},
        {"lr_schedule", fnv_bytes(FNV_START, &sched, sizeof sched)},
        {"augmentation (augmult, augment_pad, augment_flip)",
         (uint64_t)k->augmult | (uint64_t)k->augment_pad << 16 | (uint64_t)k->augment_flip << 32},
    };
    enum { NF = sizeof f / sizeof f[0] };
    uint64_t h[NF];
    for (int i = 0; i < NF; i++) h[i] = f[i].h;
    int which;
    dp_status st = dp_step_first_difference(c, h, NF, &which);
    if (st != DP_OK) return st;
    if (which >= 0)
        return dp_fail(DP_ERR_INVALID, "the %d ranks were started with different settings: %s differs between ranks; "
                       "every rank must run the same command", c->size, f[which].what);
    return DP_OK;
}

/* every rank holds the same parameters: sums the hash halves; a differing rank shows */
static dp_status check_replicas(const dp_train_comm *c, const float *params, size_t np, long step) {
    uint64_t h = params_hash(params, np);
    int which;
    dp_status st = dp_step_first_difference(c, &h, 1, &which);
    if (st != DP_OK) return st;
    if (which >= 0)
        return dp_fail(DP_ERR_INVALID, "step %ld: the ranks' models differ after the update (rank %d of %d); "
                       "training stopped", step, c->rank, c->size);
    return DP_OK;
}

/* test hook (testhooks.h): appends the released gradient to the file named by user */
static dp_status dump_released(void *user, const float *g, size_t n) {
    const char *path = user;
    FILE *f = fopen(path, "ab");
    int ok = f && fwrite(g, sizeof *g, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? DP_OK : dp_fail(DP_ERR_IO, "%s: cannot append the released gradient", path);
}


/* epsilon spent so far at p->delta, by the chosen accountant */
static dp_status spent_epsilon(const dp_accountant *acc, const dp_train_params *p, double *eps) {
    dp_epsilon_report er;
    dp_status st = dp_accountant_epsilon(acc, p->accountant, p->delta, NULL, &er);
    if (st == DP_OK) *eps = er.epsilon;
    return st;
}

/* Whether the caller asked to stop (p->stop). With several ranks the request is summed over
 * them, so that one rank's signal stops every rank at the same step: a rank that left alone
 * would leave the others waiting in the next collective. */
static dp_status stop_requested(const dp_train_params *p, const dp_train_comm *comm, int *stop) {
    *stop = p->stop && *p->stop;
    if (!p->stop || !comm) return DP_OK;
    double v = *stop;
    dp_status st = comm->sum_f64(comm->user, &v, 1);
    if (st == DP_OK) *stop = v > 0;
    return st;
}

/* DP_ERR_INTERRUPTED: where the run stopped, what it spent, and where its steps are kept */
static dp_status interrupted(const dp_train_params *p, const dp_accountant *acc, long step, long step0, long steps,
                             int ep, int s, int spe, const char *ckpath) {
    char eps[96] = "", kept[4300];
    double e;
    if (!p->no_dp && spent_epsilon(acc, p, &e) == DP_OK)
        snprintf(eps, sizeof eps, "; epsilon spent so far %.3f (delta %g)", e, p->delta);
    if (ckpath) snprintf(kept, sizeof kept, "the checkpoint %s holds it", ckpath);
    else if (step == step0) snprintf(kept, sizeof kept, "no step was taken");
    else if (p->checkpoint_dir) snprintf(kept, sizeof kept, "rank 0's checkpoint in %s holds it", p->checkpoint_dir);
    else snprintf(kept, sizeof kept, "no checkpoint directory: the steps done are not saved");
    return dp_fail(DP_ERR_INTERRUPTED,
                   "stopped on request after %ld of %ld steps (epoch %d: %d of its %d steps done)%s; %s", step, steps,
                   ep, s, spe, eps, kept);
}

dp_status dp_train(dp_model *m, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *p,
                   dp_train_result *result) {
    return dp__train(m, tr, te, p, NULL, result);
}

dp_status dp__train(dp_model *m, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *p,
                    const dp__train_test *test, dp_train_result *result) {
    static const dp__train_test no_test = {0, 0, NULL};
    const dp__train_test *t = test ? test : &no_test;
    const size_t N = tr->n, dim = tr->dim;
    const size_t np = dp_model_num_params(m);
    if (N == 0) return dp_fail(DP_ERR_INVALID, "training set is empty");
    if (dim != dp_model_input_size(m))
        return dp_fail(DP_ERR_INVALID, "training set rows have %zu features but the model expects %zu", dim,
                       dp_model_input_size(m));
    if (te && te->dim != dim)
        return dp_fail(DP_ERR_INVALID, "test set rows have %zu features, training set %zu", te->dim, dim);
    if (te && !te->t != !tr->t)
        return dp_fail(DP_ERR_INVALID, "the training set has %s, the test set %s: both must be regression data or "
                       "both classification", tr->t ? "regression targets" : "class labels",
                       te->t ? "regression targets" : "class labels");
    dp_status cst = dp__check_targets(m, tr, "training set");
    if (cst == DP_OK) cst = dp__check_targets(m, te, "test set");
    if (cst != DP_OK) return cst;
    cst = dp__train_check_params(p, N);
    if (cst != DP_OK) return cst;
    if (!(p->ema_decay >= 0 && p->ema_decay < 1))
        return dp_fail(DP_ERR_RANGE, "ema_decay %g: must be in [0, 1) (0: no averaging)", p->ema_decay);
    if (p->checkpoint_every < 0)
        return dp_fail(DP_ERR_RANGE, "checkpoint_every %ld: must be >= 0", p->checkpoint_every);
    const dp_train_comm *comm = p->comm && p->comm->size > 1 ? p->comm : NULL;
    if (p->comm && (p->comm->size < 1 || p->comm->rank < 0 || p->comm->rank >= p->comm->size || !p->comm->sum_f32 ||
                    !p->comm->sum_f64))
        return dp_fail(DP_ERR_INVALID, "communicator: rank %d of %d, or a missing sum function", p->comm->rank,
                       p->comm->size);
    if (t->shards < 0) return dp_fail(DP_ERR_RANGE, "shards %d: must be >= 0", t->shards);
    if (comm && t->shards > 1 && t->shards != comm->size)
        return dp_fail(DP_ERR_INVALID, "shards %d: differs from the %d ranks", t->shards, comm->size);
    if (comm && p->no_dp) return dp_fail(DP_ERR_INVALID, "no_dp: not supported with several ranks (MPI)");
    if (t->shards > 1 && p->no_dp) return dp_fail(DP_ERR_INVALID, "no_dp: not supported with shards");
    /* S > 1: sharded sampling; this process samples shards [sh_lo, sh_hi) */
    const int S = comm ? comm->size : (t->shards > 1 ? t->shards : 1);
    const int report = p->report_nonprivate || p->no_dp; /* a non-private run has nothing to hide */
    const int sh_lo = comm ? comm->rank : 0, sh_hi = comm ? comm->rank + 1 : S;
    int64_t shards_val[1] = {S};
    const double q = (double)p->expected_batch / (double)N;
    const int spe = dp_train_steps_per_epoch(N, p->expected_batch);
    const long steps = (long)spe * p->epochs;
    double sigma = 0;
    dp_status st = DP_OK;
    dp_accountant *acc = NULL;
    dp_optim *opt = NULL;
    dp_csprng *crng = NULL;
    size_t *idx = NULL;
    dp_step sp;
    memset(&sp, 0, sizeof sp);
    dp_safetensors *ck = NULL;
    float *ema = NULL, *ema_hold = NULL; /* ema_decay: the average, and the live parameters while it is evaluated */
    dp_checkpoint_info cki, cur; /* the checkpoint resumed from, and this run's configuration */
    memset(&cki, 0, sizeof cki);
    memset(&cur, 0, sizeof cur);
    dp__ckpt_writer w = DP__CKPT_WRITER_INIT;
    if ((st = dp__augment_setup(&sp, p, m, tr)) != DP_OK) goto done; /* before any work */
    const int resumed = p->resume != NULL;
    if (resumed && (st = dp__ckpt_open(p, &ck, &cki)) != DP_OK) goto done;
    if (!p->no_dp) {
        if (p->noise_multiplier > 0) sigma = p->noise_multiplier;
        else if (resumed && cki.target_epsilon == p->target_epsilon) sigma = cki.sigma; /* as calibrated then */
        else if ((st = dp__train_calibrate(p, q, steps, &sigma)) != DP_OK)
            goto done;
        if (!isfinite(sigma) || !isfinite(sigma * p->max_grad_norm)) { /* the noise's standard deviation */
            st = dp_fail(DP_ERR_RANGE, "noise_multiplier %g x max_grad_norm %g: the noise standard deviation must be "
                         "a finite number", sigma, p->max_grad_norm);
            goto done;
        }
    }
    /* adaptive clipping splits sigma between the gradient and the count (refused before any
     * work when it cannot) */
    sp.sigma = sigma;
    sp.expected = q * (double)N;
    if (!p->no_dp && (st = dp__step_adaptive(&sp, p)) != DP_OK) goto done;
    uint64_t checksum = 0;
    /* only the ranks compare it, in memory: a checkpoint holds no fingerprint of the data (any
     * function of every record would tell a candidate for the last one apart) */
    if (comm) checksum = dp_checkpoint_data_checksum(tr->x, tr->y, N, dim);
    if (comm && tr->t) /* the regression targets too (the labels are then all 0) */
        checksum ^= fnv_bytes(FNV_START, tr->t, sizeof(float) * N * (size_t)tr->n_targets) * 0x9e3779b97f4a7c15ULL;
    if ((st = dp__ckpt_config(&cur, m, tr, p, sigma, q, checksum)) != DP_OK) goto done;
    if (sp.clip_quantile > 0) { /* the settings as resolved, and C to start from */
        cur.clip_quantile = sp.clip_quantile;
        cur.clip_lr = sp.clip_lr;
        cur.clip_count_noise = sp.count_std;
        cur.clip_norm = p->max_grad_norm;
    }
    if (comm && (st = check_same_config(comm, &cur, steps)) != DP_OK) goto done;
    if (resumed && (st = dp__ckpt_check_resume(ck, &cki, &cur, m, p, q, spe, S)) != DP_OK) goto done;
    dp_train_result r;
    memset(&r, 0, sizeof r);
    r.sigma = sigma;
    r.noise_multiplier_gradient = sp.noise_sigma;
    r.q = q;
    r.delta = p->delta;
    r.steps_per_epoch = spe;
    if ((st = dp__train_accountant(p, &acc)) != DP_OK) goto done;
    if ((st = dp_optim_create(&p->optim, np, &opt)) != DP_OK) goto done;
    if (!(idx = dp_alloc(sizeof(size_t) * N))) {
        st = DP_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < N; i++) idx[i] = i;
    /* Noise, Poisson sampling and dropout: from the OS-seeded CSPRNG unless the caller chose
     * a noise seed. Dropout masks are drawn by batch position, so they must be as secret as the
     * sample: known masks would make one example's presence move the others' gradients. */
    if (!p->no_dp && !p->noise_seeded && (st = dp_csprng_create(&crng)) != DP_OK) goto done;
    dp_rng root, rs, rn, rd;
    dp_rng_seed(&root, p->noise_seeded && !p->no_dp ? p->noise_seed : p->seed);
    dp_rng_split(&root, &rs); /* sampling */
    dp_rng_split(&root, &rn); /* noise */
    dp_rng_split(&root, &rd); /* dropout */
    long step = 0;
    double batch_sum = 0, lsum0 = 0, elapsed0 = 0, cki_clip_norm = 0;
    size_t lcount0 = 0;
    dp_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.test_accuracy = -1;
    if (p->ema_decay > 0) {
        /* the average starts at the (initial or resumed) parameters, or the checkpoint's */
        if (!(ema = dp_alloc(sizeof(float) * (np ? np : 1))) || !(ema_hold = dp_alloc(sizeof(float) * (np ? np : 1)))) {
            st = dp_fail(DP_ERR_NOMEM, "ema_decay: out of memory for the average");
            goto done;
        }
        memcpy(ema, dp_model_params(m), sizeof(float) * np);
    }
    if (resumed) {
        if ((st = dp__ckpt_restore(ck, &cki, m, opt, acc, idx, N, p->no_dp, steps, ema)) != DP_OK) goto done;
        if (!crng) { /* a secure run's streams were never written: fresh ones go on */
            rs = cki.rng_sampling;
            rn = cki.rng_noise;
            rd = cki.rng_dropout;
        }
        step = cki.step;
        batch_sum = cki.batch_sum;
        r.empty_batches = cki.empty_batches;
        r.nonfinite_samples = cki.nonfinite_samples;
        lsum0 = cki.lsum;
        lcount0 = (size_t)cki.lcount;
        elapsed0 = cki.elapsed;
        pr.test_accuracy = cki.test_accuracy;
        pr.test_loss = cki.test_loss;
        cki_clip_norm = cki.clip_quantile > 0 ? cki.clip_norm : 0;
        if (!p->no_dp && (st = spent_epsilon(acc, p, &pr.epsilon)) != DP_OK) goto done;
    }
    dp_safetensors_destroy(ck);
    ck = NULL;
    dp_checkpoint_info_free(&cki);
    const int writer = !comm || comm->rank == 0; /* checkpoints from rank 0 only */
    if (p->checkpoint_dir && writer) {
        if ((st = dp__ckpt_writer_init(&w, p, m, opt, idx, N, shards_val, ema)) != DP_OK) goto done;
        w.info = cur; /* the model record stays cur's */
    }
    float *params = dp_model_params(m);
    sp.model = m;
    sp.opt = opt;
    sp.acc = p->no_dp ? NULL : acc;
    sp.comm = comm;
    sp.no_dp = p->no_dp;

    sp.clip = (dp_clip_params){p->clipping, p->max_grad_norm, p->mem_budget, sp.clip.group};
    if (resumed && sp.clip_quantile > 0 && cki_clip_norm > 0) sp.clip.max_grad_norm = cki_clip_norm; /* C goes on */
    pr.max_grad_norm = sp.clip.max_grad_norm;
    sp.q = q;
    sp.physical_batch = p->physical_batch;
    sp.row = dp__dataset_row;
    sp.row_user = (void *)tr;
    sp.targets = tr->t != NULL;
    sp.crng = crng;
    sp.rn = &rn;
    sp.rd = &rd;
    sp.noise_scale = t->noise == 1 ? 0.0 : 1.0;
    sp.zero_clipped = t->noise == 2;
    if (t->dump_released && writer) {
        sp.on_released = dump_released;
        sp.hook_user = (void *)t->dump_released;
    }
    const double t0 = dp__now_s() - elapsed0;
    dp_mem_reset_peak();
    pr.epochs = p->epochs;
    pr.steps = steps;
    pr.steps_per_epoch = spe;
    const long step0 = step;
    long ck_step = -1; /* the step of the last checkpoint this call wrote */
    for (int ep = (int)(step0 / spe) + 1; ep <= p->epochs; ep++) {
        const int s0 = ep == (int)(step0 / spe) + 1 ? (int)(step0 % spe) : 0;
        double lsum = s0 ? lsum0 : 0;
        size_t lcount = s0 ? lcount0 : 0;
        if (p->no_dp && s0 == 0) dp_rng_shuffle(&rs, idx, N); /* the baseline's epoch order */
        for (int s = s0; s < spe; s++, step++) {
            int stop = 0;
            if (p->stop && (st = stop_requested(p, comm, &stop)) != DP_OK) goto done;
            if (stop) {
                /* a step boundary: the state is exactly what a checkpoint holds. At an epoch's
                 * start the epoch-end checkpoint already holds it (and the non-private baseline's
                 * permutation has been reshuffled since), and before this call's first step the
                 * state is the one it started from: a checkpoint is written only mid-epoch */
                if (p->checkpoint_dir && writer && step > step0 && ck_step != step) {
                    dp__ckpt_fill_counters(&w.info, step, &r, lcount, batch_sum, lsum, &pr, dp__now_s() - t0, report, p->test_private);
                    if ((st = dp__ckpt_write(&w, opt, acc, &rs, &rn, &rd)) != DP_OK) goto done;
                    ck_step = step;
                }
                st = interrupted(p, acc, step, step0, steps, ep, s, spe,
                                 p->checkpoint_dir && writer && ck_step == step ? w.path : NULL);
                goto done;
            }
            size_t count = 0, first = 0;
            dp_mem_stage("sample");
            if (S > 1) {
                /* shard sh holds the examples sh, sh + S, ...; each sampled with its own stream */
                for (int sh = sh_lo; sh < sh_hi; sh++) {
                    size_t nsh = N > (size_t)sh ? (N - (size_t)sh + (size_t)S - 1) / (size_t)S : 0, c = 0;
                    dp_rng sr;
                    shard_rng(&sr, p->noise_seed, step, sh, 0x73616d706c65ULL);
                    if (nsh) {
                        if (crng) st = dp_secure_poisson_sample(crng, nsh, q, idx + count, &c);
                        else st = dp_poisson_sample(&sr, nsh, q, idx + count, &c);
                        if (st != DP_OK) goto done;
                    }
                    for (size_t k = 0; k < c; k++) idx[count + k] = (size_t)sh + (size_t)S * idx[count + k];
                    count += c;
                }
                if (comm && !crng) shard_rng(&rd, p->noise_seed, step, comm->rank, 0x64726f70ULL); /* this rank's dropout */
            } else if (p->no_dp) {
                first = (size_t)s * (size_t)p->expected_batch % N;
                count = N - first < (size_t)p->expected_batch ? N - first : (size_t)p->expected_batch;
            } else if (crng) {
                if ((st = dp_secure_poisson_sample(crng, N, q, idx, &count)) != DP_OK) goto done;
            } else {
                if ((st = dp_poisson_sample(&rs, N, q, idx, &count)) != DP_OK) goto done;
            }
            dp_step_stats ss;
            if (p->lr_schedule != DP_LR_CONSTANT) dp_optim_set_lr(opt, dp_train_lr_at(p->lr_schedule, p->optim.lr, step, steps));
            if ((st = dp_step_run(&sp, idx + first, count, &ss)) != DP_OK) {
                char where[64];
                snprintf(where, sizeof where, "step %ld (epoch %d)", step + 1, ep);
                st = dp__prefix_error(st, where);
                goto done;
            }
            count = ss.count;
            lsum += ss.lsum;
            lcount += ss.lcount;
            r.nonfinite_samples += ss.nonfinite;
            batch_sum += (double)count;
            if (count == 0) r.empty_batches++;
            if (comm && (st = check_replicas(comm, params, np, step + 1)) != DP_OK) goto done;
            if (ema) { /* post-processing of the released iterates: free in privacy */
                const double d = dp_train_ema_decay_at(p->ema_decay, step);
#pragma omp parallel for schedule(static) if (np > 65536)
                for (size_t j = 0; j < np; j++) ema[j] = (float)(d * ema[j] + (1.0 - d) * params[j]);
            }
            pr.max_grad_norm = sp.clip.max_grad_norm;
            pr.epoch = ep;
            pr.step = step + 1;
            pr.step_in_epoch = s + 1;
            pr.train_loss = !report ? NAN : lcount ? lsum / (double)lcount : 0;
            pr.elapsed = dp__now_s() - t0;
            pr.epoch_end = 0;
            /* a checkpoint every checkpoint_every steps; the epoch's last step gets its own below,
             * after the evaluation, so a checkpoint at an epoch boundary has always evaluated.
             * Written before anything of the step is released (the progress call), so a killed
             * run never redoes a step whose results were seen. */
            if (p->checkpoint_dir && writer && p->checkpoint_every > 0 && (step + 1) % p->checkpoint_every == 0 && s + 1 < spe) {
                dp__ckpt_fill_counters(&w.info, step + 1, &r, lcount, batch_sum, lsum, &pr, dp__now_s() - t0, report, p->test_private);
                if ((st = dp__ckpt_write(&w, opt, acc, &rs, &rn, &rd)) != DP_OK) goto done;
                ck_step = step + 1;
            }
            /* the epoch's last step is reported before the epoch's checkpoint: nothing of the
             * data is in it unless report_nonprivate (train_loss is NaN, no evaluation yet) */
            if (p->progress) p->progress(p->progress_user, &pr);
        }
        dp_mem_stage("evaluate");
        if (ema) { /* the average is what is evaluated (and, at the end, returned) */
            memcpy(ema_hold, params, sizeof(float) * np);
            memcpy(params, ema, sizeof(float) * np);
        }
        st = te ? dp_evaluate(m, te, p->eval_batch, &pr.test_accuracy, &pr.test_loss) : DP_OK;
        if (ema) memcpy(params, ema_hold, sizeof(float) * np);
        if (st != DP_OK) goto done;
        if (!p->no_dp && (st = spent_epsilon(acc, p, &pr.epsilon)) != DP_OK) goto done;
        pr.elapsed = dp__now_s() - t0;
        pr.epoch_end = 1;
        if (p->checkpoint_dir && writer) { /* on disk before the epoch's figures are released */
            dp__ckpt_fill_counters(&w.info, step, &r, lcount, batch_sum, lsum, &pr, dp__now_s() - t0, report, p->test_private);
            if ((st = dp__ckpt_write(&w, opt, acc, &rs, &rn, &rd)) != DP_OK) goto done;
            ck_step = step;
        }
        if (p->progress) p->progress(p->progress_user, &pr);
    }
    if (!p->no_dp && (st = spent_epsilon(acc, p, &r.epsilon)) != DP_OK) goto done;
    if (ema) memcpy(params, ema, sizeof(float) * np); /* the model returned is the average */
    r.test_accuracy = te ? pr.test_accuracy : -1;
    r.test_loss = te ? pr.test_loss : 0;
    r.steps = step;
    r.max_grad_norm = sp.clip.max_grad_norm;
    r.seconds = dp__now_s() - t0;
    r.mean_batch = step ? batch_sum / (double)step : 0;
    if (!report) { /* statistics of the private data that epsilon does not cover */
        r.mean_batch = 0;
        r.empty_batches = 0;
        r.nonfinite_samples = 0;
    }
    r.peak_bytes = dp_mem_get().peak_bytes;
    *result = r;
done:
    dp_safetensors_destroy(ck);
    dp_checkpoint_info_free(&cki);
    dp_checkpoint_info_free(&cur);
    dp__ckpt_writer_close(&w); /* releases the directory's lock, on every path */
    dp_csprng_destroy(crng);
    dp_free(ema);
    dp_free(ema_hold);
    dp_accountant_destroy(acc);
    dp_optim_destroy(opt);
    dp_free(idx);
    dp_step_free(&sp);
    return st;
}

dp_status dp__train_calibrate(const dp_train_params *p, double q, long steps, double *sigma) {
    if (p->prior_sigma > 0)
        return dp_calibrate_sigma_prior(p->accountant, p->target_epsilon, p->delta, q, steps, p->prior_sigma, 0.01,
                                        sigma);
    return dp_calibrate_sigma_kind(p->accountant, p->target_epsilon, p->delta, q, steps, 0.01, sigma);
}

dp_status dp__train_accountant(const dp_train_params *p, dp_accountant **acc) {
    dp_status st = dp_accountant_create(acc);
    /* a release before training (dp_precond_fit's): the history starts with it */
    if (st == DP_OK && !p->no_dp && p->prior_sigma > 0 && (st = dp_accountant_step(*acc, 1.0, p->prior_sigma, 1)) != DP_OK) {
        dp_accountant_destroy(*acc);
        *acc = NULL;
    }
    return st;
}

dp_status dp__train_check_params(const dp_train_params *p, size_t N) {
    if (p->epochs < 1) return dp_fail(DP_ERR_RANGE, "epochs %d: must be >= 1", p->epochs);
    if (p->expected_batch < 1 || (size_t)p->expected_batch > N)
        return dp_fail(DP_ERR_RANGE, "expected_batch %d: must be in 1..%zu (the training set size)", p->expected_batch, N);
    if (p->physical_batch < 0) return dp_fail(DP_ERR_RANGE, "physical_batch %d: must be >= 0", p->physical_batch);
    if (p->lr_schedule != DP_LR_CONSTANT && p->lr_schedule != DP_LR_COSINE)
        return dp_fail(DP_ERR_RANGE, "lr_schedule %d: must be DP_LR_CONSTANT (0) or DP_LR_COSINE (1)", p->lr_schedule);
    if (p->no_dp) {
        if (p->clip_quantile != 0)
            return dp_fail(DP_ERR_INVALID, "clip_quantile: adaptive clipping is part of the private step; no_dp clips nothing");
        return DP_OK;
    }
    if (!(p->clip_quantile >= 0 && p->clip_quantile < 1))
        return dp_fail(DP_ERR_RANGE, "clip_quantile %g: must be in (0, 1), or 0 for a fixed C", p->clip_quantile);
    if (!(p->clip_lr >= 0) || !isfinite(p->clip_lr))
        return dp_fail(DP_ERR_RANGE, "clip_lr %g: must be a positive finite number (0: 0.2)", p->clip_lr);
    if (!(p->clip_count_noise >= 0) || !isfinite(p->clip_count_noise))
        return dp_fail(DP_ERR_RANGE, "clip_count_noise %g: must be a positive finite number (0: expected_batch / 20)",
                       p->clip_count_noise);
    if (!(p->max_grad_norm > 0) || !isfinite(p->max_grad_norm))
        return dp_fail(DP_ERR_RANGE, "max_grad_norm %g: must be a positive finite number", p->max_grad_norm);
    if (!(p->prior_sigma >= 0) || !isfinite(p->prior_sigma))
        return dp_fail(DP_ERR_RANGE, "prior_sigma %g: must be a finite number >= 0 (0: no release before training)",
                       p->prior_sigma);
    /* a checkpoint does not hold what the prior release produced (the caller's), so a resumed
     * run could not continue the same model: refused rather than half supported */
    if (p->prior_sigma > 0 && (p->resume || p->checkpoint_dir))
        return dp_fail(DP_ERR_INVALID, "prior_sigma: a run that starts with a release before training cannot be "
                                       "checkpointed or resumed yet (checkpoint_dir, resume)");
    if (!(p->delta > 0 && p->delta < 1)) return dp_fail(DP_ERR_RANGE, "delta %g: must be in (0, 1)", p->delta);
    if (!(p->delta < 1.0 / (double)N))
        return dp_fail(DP_ERR_RANGE, "delta %g: must be below 1/n = %g, or the guarantee is void", p->delta,
                       1.0 / (double)N);
    /* GDP can underestimate: it may neither choose sigma nor be the run's epsilon */
    if (p->accountant == DP_ACCT_GDP)
        return dp_fail(DP_ERR_INVALID,
                       "accountant gdp: a central-limit approximation that can underestimate epsilon, not a "
                       "bound; a run calibrates and reports with one of %s",
                       dp_accountant_kind_names(1));
    if (!dp_accountant_kind_is_bound(p->accountant))
        return dp_fail(DP_ERR_INVALID, "accountant %s: not a bound on epsilon; a run calibrates and reports with one of %s",
                       dp_accountant_kind_name(p->accountant) ? dp_accountant_kind_name(p->accountant) : "?",
                       dp_accountant_kind_names(1));
    return DP_OK;
}
