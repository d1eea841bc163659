/* step.h (internal): one DP-SGD step, the single implementation that dp_train and the audit
 * drive (docs/design.md, "The step").
 *
 * Given the indices of a logical batch (already sampled by the caller), dp_step_run forwards
 * it in physical chunks, forms the clipped sum in the chosen mode (or, with no_dp, the plain
 * gradient), drops samples whose loss is not finite (private runs), sums the clipped sums of
 * all ranks, adds the Gaussian noise once (rank 0; OS CSPRNG or seeded stream) and divides
 * by the expected batch size, hands every rank the released gradient, applies the optimizer
 * and records the step in the accountant. */
#ifndef DP_STEP_H
#define DP_STEP_H
#include "dpsgd/privacy.h"
#include "dpsgd/secure.h"
#include "dpsgd/train.h"

typedef struct {
    /* fixed for a run */
    dp_model *model;
    dp_optim *opt;
    dp_accountant *acc;        /* records (q, sigma) after each private step; NULL with no_dp */
    const dp_train_comm *comm; /* NULL: one process */
    int no_dp;
    dp_clip_params clip;
    double sigma, q;           /* sigma: what the accountant records */
    double expected;           /* q n: a private step divides the noisy sum by it */
    /* adaptive clipping (dp_train_params.clip_quantile; dp__step_adaptive sets these): 0 = off.
     * Each step counts the examples with norm <= C (+1/2 each, -1/2 for the others), adds
     * Gaussian noise of std count_std once (rank 0) and moves clip.max_grad_norm to
     * C exp(-clip_lr (noisy fraction - clip_quantile)) for the next step. */
    double clip_quantile, clip_lr, count_std;
    double noise_sigma;        /* the gradient noise's multiplier: sigma, or sigma_g with adaptive clipping */
    int physical_batch;        /* 0: the whole logical batch at once */
    /* the rows: copies example e's features (dim floats) to x and its label to y, and with
     * `targets` its regression targets (the model's output size, K floats) to t (else NULL) */
    void (*row)(void *user, size_t e, float *x, int32_t *y, float *t);
    void *row_user;
    int targets; /* regression: the loss is the mean squared error against t, not cross-entropy */
    /* randomness: noise from crng (the OS-seeded generator) when set, else from *rn; dropout
     * masks from *rd, which the step reseeds from crng when set */
    dp_csprng *crng;
    dp_rng *rn, *rd;
    /* hooks, may be NULL. on_clipped: this process's clipped sum (in the model's gradient
     * buffer) before the ranks' sum and the noise; it may add to it (the audit's gradient
     * canaries). on_released: the released gradient (noised, divided by `expected`) before
     * the optimizer; rank 0 only. */
    dp_status (*on_clipped)(void *user, float *grad, size_t np);
    dp_status (*on_released)(void *user, const float *grad, size_t np);
    /* on_stage: called as each stage of the step begins, with the name it gives dp_mem_stage:
     * "forward" (each chunk), "backward" (no_dp) or "clip" (each chunk), "allreduce" (with a
     * communicator), "optimizer" (noise, scaling, optimizer, accountant). The benchmark's
     * stage timers (tools/bench_measure.c); it must not change the step. */
    void (*on_stage)(void *user, const char *stage);
    void *hook_user;
    /* test switches (testhooks.h): noise std = noise_scale sigma C (1 normally); zero_clipped
     * zeroes the clipped sum before the noise */
    double noise_scale;
    int zero_clipped;
    /* augmentation multiplicity (augment.c, dp__augment_setup): 0 off; K >= 1: each example is
     * K augmented copies, rows i K .. i K + K - 1 of a chunk, clipped as one (clip.group = K);
     * physical_batch then counts examples. Crops and flips are drawn from *rd. */
    int augmult, aug_pad, aug_flip, aug_c, aug_h, aug_w;
    /* buffers, grown as needed; dp_step_free. cap: rows; xa: one example before augmentation */
    float *xb, *dz, *lv, *tb, *xa, *nrm; /* nrm: the chunk's norms (adaptive clipping) */
    int32_t *yb;
    size_t cap;
} dp_step;

/* augment.c: one copy's shift (dy, dx in [-pad, pad]) and flip, drawn from r */
typedef struct {
    int dy, dx, flip;
} dp_augment;
void dp__augment_draw(dp_rng *r, int pad, int flip, dp_augment *a);
/* out [c, h, w] = x shifted by (dy, dx) (0 where the source is outside the image), then mirrored
 * left-right when a->flip: out[i][j] = x[i + dy][flip ? w - 1 - (j + dx) : j + dx] */
void dp__augment_apply(const float *x, float *out, int c, int h, int w, const dp_augment *a);
/* Checks p's augmult, augment_pad and augment_flip against the model and the training data
 * (images only; messages name the field) and sets s's augmentation and clip.group. */
dp_status dp__augment_setup(dp_step *s, const dp_train_params *p, const dp_model *m, const dp_dataset *tr);

/* What a step saw, summed over the ranks. Not covered by epsilon: callers release it only
 * under a non-private label. */
typedef struct {
    size_t count;   /* examples in the logical batch */
    size_t dropped; /* of them, with a non-finite loss (dropped, private runs only) */
    long nonfinite; /* samples that contributed nothing: dropped + non-finite gradient norm */
    double lsum;    /* sum of the finite per-sample losses */
    size_t lcount;  /* how many */
    double centred; /* adaptive clipping: sum over the examples of +1/2 (norm <= C) or -1/2; the
                     * step adds noise to it before anything depends on it */
} dp_step_stats;

/* Adaptive clipping's set-up for a step whose sigma and expected are set: clip_quantile, the
 * update rate and the count's noise from p (0 = the defaults), and noise_sigma = sigma_g so that
 * the gradient and the count together are one Gaussian mechanism of multiplier sigma. Without
 * adaptive clipping noise_sigma = sigma. Errors: DP_ERR_RANGE when 2 clip_count_noise <= sigma
 * (no sigma_g exists). */
dp_status dp__step_adaptive(dp_step *s, const dp_train_params *p);

/* One step over the `count` examples idx[0..count). Errors: the model's and the
 * collective's; DP_ERR_NONFINITE when a non-private run meets a non-finite loss, when every
 * sampled example's loss is not finite, or when a parameter becomes non-finite (the caller
 * prefixes the step number). */
dp_status dp_step_run(dp_step *s, const size_t *idx, size_t count, dp_step_stats *out);
void dp_step_free(dp_step *s);

/* optim.c: the update of coordinates [lo, hi) at step number t (dp_optim_steps + 1), in the
 * calling thread, exactly as dp_optim_step updates them; dp__optim_advance then counts the
 * step. For the private step's single pass over the gradient. */
void dp__optim_range(dp_optim *o, long t, float *params, const float *grad, const unsigned char *mask, size_t lo,
                     size_t hi);
void dp__optim_advance(dp_optim *o);

/* The step's row source for a dp_dataset (user): features, label and, when the dataset has
 * regression targets and t is not NULL, the targets. */
void dp__dataset_row(void *user, size_t e, float *x, int32_t *y, float *t);
/* A dataset with regression targets has as many per row as the model has outputs; `what`
 * names it. DP_OK for class labels. */
dp_status dp__check_targets(const dp_model *m, const dp_dataset *d, const char *what);

/* The checks of dp_train_params that dp_train and the step API (trainer.c) share, for a
 * training set of N examples: epochs, batch sizes, and (private runs) max_grad_norm, delta and
 * an accountant that bounds epsilon. Messages name the field. */
dp_status dp__train_check_params(const dp_train_params *p, size_t N);
/* What dp_train and the step API share about a private run's noise: sigma calibrated for
 * p->target_epsilon over (q, steps), after the release before training when p->prior_sigma > 0;
 * and a new accountant whose history starts with that release. */
dp_status dp__train_calibrate(const dp_train_params *p, double q, long steps, double *sigma);
dp_status dp__train_accountant(const dp_train_params *p, dp_accountant **acc);

/* Sums the hashes h[0..n) (n <= 16) over the ranks and sets *which, on every rank alike, to
 * the index of the first one that differs between ranks, or -1. */
dp_status dp_step_first_difference(const dp_train_comm *c, const uint64_t *h, int n, int *which);
#endif
