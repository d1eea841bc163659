/* dpsgd/train.h: the DP-SGD training loop behind `dpsgd train`.
 *
 * Each step: Poisson-sample a logical batch with rate q = expected_batch / n (variable size,
 * possibly empty); process it in physical chunks of at most physical_batch samples (virtual
 * batches: memory is bounded by the chunk, the result is the same); per chunk forward, the
 * clipping engine's two backward passes accumulate the clipped sum; then Gaussian noise of
 * std sigma*C on every trainable coordinate, division by the EXPECTED batch size q*n, the
 * optimizer step, and the accountant records (q, sigma). With no_dp the batch is a plain
 * shuffled mini-batch of expected_batch samples and nothing is clipped, noised or accounted.
 */
#ifndef DPSGD_TRAIN_H
#define DPSGD_TRAIN_H
#include "dpsgd/core.h"
#include "dpsgd/data.h"
#include "dpsgd/nn.h"
#include "dpsgd/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int epoch, epochs;          /* 1-based epoch in progress / total */
    long step, steps;           /* steps done so far / total */
    int step_in_epoch, steps_per_epoch;
    double train_loss;          /* mean per-sample loss over the epoch so far */
    double test_accuracy;       /* at epoch end (negative when not evaluated yet) */
    double test_loss;
    double epsilon;             /* spent so far (0 with no_dp) */
    double elapsed;             /* seconds since training started */
    int epoch_end;              /* 1 when called at the end of an epoch */
} dp_train_progress;

typedef void (*dp_progress_fn)(void *user, const dp_train_progress *p);

typedef struct {
    dp_clip_mode clipping;      /* ghost */
    int no_dp;                  /* 0: private training; 1: the non-private baseline */
    double max_grad_norm;       /* C = 0.1 */
    double noise_multiplier;    /* sigma; <= 0: calibrate for target_epsilon (default) */
    double target_epsilon;      /* 3 */
    double delta;               /* 1e-5 */
    int expected_batch;         /* 2048: q = expected_batch / n */
    int physical_batch;         /* 0: whole logical batch at once; else chunk size */
    int epochs;                 /* 40 */
    dp_optim_params optim;      /* SGD lr 4, momentum 0.9 */
    uint64_t seed;              /* 0 */
    int eval_batch;             /* 1000 */
    dp_progress_fn progress;    /* called after every step and at each epoch end; may be NULL */
    void *progress_user;
} dp_train_params;

dp_train_params dp_train_default_params(void);

typedef struct {
    double test_accuracy, test_loss;
    double epsilon, delta;      /* epsilon spent (RDP accountant) at delta */
    double sigma, q;            /* noise multiplier used and sample rate */
    long steps;
    int steps_per_epoch;
    double seconds;             /* wall time of training (evaluation included) */
    double mean_batch;          /* mean drawn logical batch size */
    long empty_batches;
    long nonfinite_samples;     /* samples whose gradient norm was not finite (clip factor 0) */
    size_t peak_bytes;          /* peak tracked memory during training */
} dp_train_result;

/* Steps per epoch for n examples and an expected batch: round(n / expected_batch), >= 1. */
int dp_train_steps_per_epoch(size_t n, int expected_batch);

/* Train `model` (already initialised) on `train`; evaluate on `test` (may be NULL) after each
 * epoch. A non-finite loss or parameter stops training with DP_ERR_NONFINITE and a message
 * naming the step. The result is written only on success. */
dp_status dp_train(dp_model *model, const dp_dataset *train, const dp_dataset *test, const dp_train_params *p,
                   dp_train_result *result);

/* Accuracy and mean cross-entropy of the model on a dataset (forward only). */
dp_status dp_evaluate(dp_model *model, const dp_dataset *d, int batch, double *accuracy, double *loss);

#ifdef __cplusplus
}
#endif
#endif
