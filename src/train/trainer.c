/* trainer.c: the step API (dpsgd/train.h, "A loop of your own"): dp_train's set-up and its
 * sampling around the one private step (step.c), one step per call, for callers that write their
 * own loop (the Python package's PrivateTrainer). A run of dp_trainer_step calls draws the same
 * samples and noise as dp_train with the same parameters: with noise_seeded the weights are
 * bit-identical. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dpsgd/privacy.h"
#include "dpsgd/secure.h"
#include "dpsgd/train.h"
#include "core/internal.h"
#include "train/step.h"

struct dp_trainer {
    dp_model *model;
    const dp_dataset *train; /* borrowed */
    int no_dp, report, spe;
    dp_accountant_kind kind;
    double delta, q, sigma;
    long steps;   /* steps done */
    long drawn;   /* no_dp: mini-batches drawn (the epoch order is reshuffled every spe of them) */
    size_t *idx;  /* [n]: the sample of dp_trainer_step; no_dp: the epoch order */
    int expected_batch;
    dp_accountant *acc;
    dp_optim *opt;
    dp_csprng *crng; /* the secret source (NULL with noise_seeded or no_dp) */
    dp_rng rs, rn, rd;
    dp_step sp;
};

/* the step's row source: example e of the dataset */

void dp_trainer_destroy(dp_trainer *t) {
    if (!t) return;
    dp_step_free(&t->sp);
    dp_csprng_destroy(t->crng);
    dp_accountant_destroy(t->acc);
    dp_optim_destroy(t->opt);
    dp_free(t->idx);
    dp_free(t);
}

dp_status dp_trainer_create(dp_model *m, const dp_dataset *tr, const dp_train_params *p, dp_trainer **out) {
    if (!m || !tr || !p || !out) return dp_fail(DP_ERR_INVALID, "trainer: NULL argument");
    const size_t N = tr->n, dim = tr->dim;
    if (N == 0) return dp_fail(DP_ERR_INVALID, "training set is empty");
    if (!tr->x || !tr->y) return dp_fail(DP_ERR_INVALID, "training set: no feature or label array");
    if (dim != dp_model_input_size(m))
        return dp_fail(DP_ERR_INVALID, "training set rows have %zu features but the model expects %zu", dim,
                       dp_model_input_size(m));
    /* what only dp_train does: said, rather than silently left out */
    if (p->ema_decay != 0) return dp_fail(DP_ERR_UNSUPPORTED, "ema_decay: not part of the step API (dp_train has it)");
    if (p->checkpoint_dir || p->resume)
        return dp_fail(DP_ERR_UNSUPPORTED, "%s: not part of the step API (dp_train has checkpoints)",
                       p->checkpoint_dir ? "checkpoint_dir" : "resume");
    if (p->comm && p->comm->size > 1) return dp_fail(DP_ERR_UNSUPPORTED, "comm: the step API runs in one process");
    dp_status cst = dp__check_targets(m, tr, "training set");
    if (cst == DP_OK) cst = dp__train_check_params(p, N);
    if (cst != DP_OK) return cst;
    if (!p->no_dp) {
        if (p->noise_multiplier > 0 && !isfinite(p->noise_multiplier * p->max_grad_norm))
            return dp_fail(DP_ERR_RANGE, "noise_multiplier %g, max_grad_norm %g: the noise std (their product) must be "
                           "a finite number", p->noise_multiplier, p->max_grad_norm);
    }
    dp_trainer *t = dp_calloc(1, sizeof *t);
    if (!t) return DP_ERR_NOMEM;
    t->model = m;
    t->train = tr;
    t->no_dp = p->no_dp != 0;
    t->report = p->report_nonprivate || p->no_dp;
    t->kind = p->accountant;
    t->delta = p->delta;
    t->expected_batch = p->expected_batch;
    t->q = (double)p->expected_batch / (double)N; /* as dp_train */
    t->spe = dp_train_steps_per_epoch(N, p->expected_batch);
    dp_status st = dp__augment_setup(&t->sp, p, m, tr); /* before the calibration's work */
    if (st != DP_OK) goto fail;
    if (!t->no_dp) {
        if (p->noise_multiplier > 0) t->sigma = p->noise_multiplier;
        else if ((st = dp__train_calibrate(p, t->q, (long)t->spe * p->epochs, &t->sigma)) != DP_OK)
            goto fail;
        if (!isfinite(t->sigma * p->max_grad_norm)) { /* the noise draw asserts a finite std */
            st = dp_fail(DP_ERR_RANGE, "noise_multiplier %g, max_grad_norm %g: the noise std (their product) must be "
                         "a finite number", t->sigma, p->max_grad_norm);
            goto fail;
        }
    }
    if ((st = dp__train_accountant(p, &t->acc)) != DP_OK) goto fail;
    if ((st = dp_optim_create(&p->optim, dp_model_num_params(m), &t->opt)) != DP_OK) goto fail;
    if (!(t->idx = dp_alloc(sizeof(size_t) * N))) {
        st = DP_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < N; i++) t->idx[i] = i;
    if (!t->no_dp && !p->noise_seeded && (st = dp_csprng_create(&t->crng)) != DP_OK) goto fail;
    /* the streams of dp_train: root seeded by the noise seed (or the public seed), split in order */
    dp_rng root;
    dp_rng_seed(&root, p->noise_seeded && !t->no_dp ? p->noise_seed : p->seed);
    dp_rng_split(&root, &t->rs);
    dp_rng_split(&root, &t->rn);
    dp_rng_split(&root, &t->rd);
    t->sp.model = m;
    t->sp.opt = t->opt;
    t->sp.acc = t->no_dp ? NULL : t->acc;
    t->sp.no_dp = t->no_dp;
    t->sp.clip = (dp_clip_params){p->clipping, p->max_grad_norm, p->mem_budget, t->sp.clip.group};
    t->sp.sigma = t->sigma;
    t->sp.q = t->q;
    t->sp.expected = t->q * (double)N;
    t->sp.physical_batch = p->physical_batch;
    t->sp.row = dp__dataset_row;
    t->sp.row_user = (void *)tr;
    t->sp.targets = tr->t != NULL;
    t->sp.crng = t->crng;
    t->sp.rn = &t->rn;
    t->sp.rd = &t->rd;
    t->sp.noise_scale = 1.0;
    if (!t->no_dp && (st = dp__step_adaptive(&t->sp, p)) != DP_OK) goto fail;
    *out = t;
    return DP_OK;
fail:
    dp_trainer_destroy(t);
    return st;
}

dp_status dp_trainer_sample(dp_trainer *t, size_t *idx, size_t *count) {
    const size_t N = t->train->n;
    if (t->no_dp) { /* the non-private baseline's order: a shuffled epoch, cut in mini-batches */
        const long s = t->drawn % t->spe;
        if (s == 0) dp_rng_shuffle(&t->rs, t->idx, N);
        const size_t first = (size_t)s * (size_t)t->expected_batch % N;
        const size_t c = N - first < (size_t)t->expected_batch ? N - first : (size_t)t->expected_batch;
        if (idx != t->idx + first) memmove(idx, t->idx + first, c * sizeof *idx);
        *count = c;
        t->drawn++;
        return DP_OK;
    }
    if (t->crng) return dp_secure_poisson_sample(t->crng, N, t->q, idx, count);
    return dp_poisson_sample(&t->rs, N, t->q, idx, count);
}

dp_status dp_trainer_step_indices(dp_trainer *t, const size_t *idx, size_t count, dp_trainer_stats *out) {
    const size_t N = t->train->n;
    if (count && !idx) return dp_fail(DP_ERR_INVALID, "indices: NULL with a count of %zu", count);
    for (size_t i = 0; i < count; i++)
        if (idx[i] >= N) return dp_fail(DP_ERR_RANGE, "indices: an index is outside 0..%zu (the training set)", N - 1);
    dp_step_stats ss;
    dp_status st = dp_step_run(&t->sp, idx, count, &ss);
    if (st != DP_OK) {
        char where[48];
        snprintf(where, sizeof where, "step %ld", t->steps + 1);
        return dp__prefix_error(st, where);
    }
    t->steps++;
    if (out) {
        memset(out, 0, sizeof *out);
        out->step = t->steps;
        if (t->report) { /* statistics of the private data: only when asked for */
            out->batch = ss.count;
            out->loss = ss.lcount ? ss.lsum / (double)ss.lcount : NAN;
            out->nonfinite = ss.nonfinite;
        } else {
            out->loss = NAN;
        }
    }
    return DP_OK;
}

dp_status dp_trainer_step(dp_trainer *t, dp_trainer_stats *out) {
    size_t count = 0;
    size_t *idx = t->idx;
    dp_status st;
    if (t->no_dp) { /* the batch is a slice of the epoch order kept in t->idx */
        const size_t first = (size_t)(t->drawn % t->spe) * (size_t)t->expected_batch % t->train->n;
        if ((st = dp_trainer_sample(t, t->idx + first, &count)) != DP_OK) return st;
        idx = t->idx + first;
    } else if ((st = dp_trainer_sample(t, t->idx, &count)) != DP_OK) {
        return st;
    }
    return dp_trainer_step_indices(t, idx, count, out);
}

void dp_trainer_get_info(const dp_trainer *t, dp_trainer_info *info) {
    memset(info, 0, sizeof *info);
    info->q = t->q;
    info->sigma = t->sigma;
    info->steps = t->steps;
    info->steps_per_epoch = t->spe;
    info->secret_noise = t->crng != NULL;
}

dp_status dp_trainer_epsilon(const dp_trainer *t, double *epsilon) {
    if (t->no_dp) {
        *epsilon = 0;
        return DP_OK;
    }
    dp_epsilon_report r;
    dp_status st = dp_accountant_epsilon(t->acc, t->kind, t->delta, NULL, &r);
    if (st == DP_OK) *epsilon = r.epsilon;
    return st;
}

const dp_accountant *dp_trainer_accountant(const dp_trainer *t) { return t->acc; }

dp_status dp_trainer_set_lr(dp_trainer *t, double lr) {
    if (!(lr >= 0) || !isfinite(lr)) return dp_fail(DP_ERR_RANGE, "lr %g: must be >= 0 and finite", lr);
    dp_optim_set_lr(t->opt, lr);
    return DP_OK;
}
