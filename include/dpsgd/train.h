/* dpsgd/train.h: the DP-SGD training loop behind `dpsgd train`.
 *
 * Each step: Poisson-sample a logical batch with rate q = expected_batch / n (variable size,
 * possibly empty); process it in physical chunks of at most physical_batch samples (virtual
 * batches: memory is bounded by the chunk, the result is the same); per chunk forward, the
 * clipping engine accumulates the clipped sum (auto: book-keeping where memory allows, else a
 * second backward pass); then Gaussian noise of
 * std sigma*C on every trainable coordinate, division by the EXPECTED batch size q*n, the
 * optimizer step, and the accountant records (q, sigma). With no_dp the batch is a plain
 * shuffled mini-batch of expected_batch samples and nothing is clipped, noised or accounted.
 */
#ifndef DPSGD_TRAIN_H
#define DPSGD_TRAIN_H
#include <signal.h> /* sig_atomic_t */

#include "dpsgd/accounting.h"
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
    double train_loss;          /* mean per-sample loss over the epoch so far; NaN unless
                                 * report_nonprivate (not covered by epsilon) */
    double test_accuracy;       /* at epoch end (negative when not evaluated yet) */
    double test_loss;
    double epsilon;             /* spent so far (0 with no_dp) */
    double elapsed;             /* seconds since training started */
    int epoch_end;              /* 1 when called at the end of an epoch */
    double max_grad_norm;       /* C for the next step (moves with adaptive clipping) */
} dp_train_progress;

typedef void (*dp_progress_fn)(void *user, const dp_train_progress *p);

/* Data-parallel training (docs/distributed.md). The library itself has no MPI in it: the
 * caller supplies the collective. `size` processes ("ranks") each call dp_train with the same
 * model initialisation, data and parameters, and a comm with their own `rank`. At the start
 * the ranks compare a hash of every setting the guarantee or the replicas depend on (model,
 * C, q, sigma, delta, steps, data checksum, clipping mode, noise source, optimizer) and all
 * refuse a mismatch, naming the field. Example i belongs to rank i % size, which
 * Poisson-samples its examples with the same rate q (so the union over ranks is one Poisson
 * sample of the whole set) from its own secret source (or, with noise_seeded, from a stream
 * derived from (noise_seed, step, rank)). Each step the ranks sum their clipped sums
 * (sum_f32); rank 0 alone adds the Gaussian noise to the total (variance exactly
 * sigma^2 C^2, rounded once to the noise grid) and the scaling, and a second sum_f32 in
 * which the other ranks contribute zeros gives every rank the released gradient. Every rank
 * applies the same optimizer step. After each step the ranks compare a hash of their
 * parameters (one more small sum) and all stop with DP_ERR_INVALID if they differ.
 * Both sums must leave bit-identical results on every rank (e.g. MPI_Reduce to rank 0 then
 * MPI_Bcast: the result is computed once and copied), and return DP_OK or an error on every
 * rank alike. Checkpoints are written by rank 0 only and record the rank count; a resume with
 * another count is refused. --no-dp is not supported with size > 1. */
typedef struct dp_train_comm {
    int rank, size;
    void *user;
    dp_status (*sum_f32)(void *user, float *buf, size_t n);  /* in place, over all ranks */
    dp_status (*sum_f64)(void *user, double *buf, size_t n); /* in place, over all ranks */
} dp_train_comm;

typedef struct {
    dp_clip_mode clipping;      /* auto */
    size_t mem_budget;          /* auto: bytes a step may allocate (dp_clip_params); 0 = default */
    int no_dp;                  /* 0: private training; 1: the non-private baseline */
    double max_grad_norm;       /* C = 0.1 */
    double noise_multiplier;    /* sigma; <= 0: calibrate for target_epsilon (default) */
    double target_epsilon;      /* 3 */
    double delta;               /* 1e-5 */
    dp_accountant_kind accountant; /* PRV: used to calibrate sigma and to report epsilon (GDP,
                                    * an approximation, is refused: DP_ERR_INVALID) */
    int expected_batch;         /* 2048: q = expected_batch / n */
    int physical_batch;         /* 0: whole logical batch at once; else chunk size */
    int epochs;                 /* 40 */
    dp_optim_params optim;      /* SGD lr 4, momentum 0.9 */
    uint64_t seed;              /* 0: what may be public: the data order of no_dp runs (the CLI
                                 * also seeds the initialisation with it) */
    /* Noise, Poisson sampling and dropout masks. noise_seeded 0 (default): drawn from the
     * OS-seeded ChaCha20 CSPRNG (dpsgd/secure.h), hardened against floating-point attacks;
     * never reproducible, and the key is never written anywhere. noise_seeded 1: from
     * streams seeded by noise_seed: reproducible (a resumed run is bit-identical), and the
     * run's epsilon holds only while noise_seed stays secret (anyone who knows it can
     * regenerate every noise vector and every batch). Ignored with no_dp. */
    int noise_seeded;
    uint64_t noise_seed;
    /* 0 (default): the loop keeps no statistic of the private data that epsilon does not cover
     * (the progress's train_loss is NaN; the result's and the checkpoint's counters of
     * non-finite samples, drawn batch sizes and empty batches are 0). 1: computes them; the
     * caller must label them as not covered by epsilon (docs/privacy.md). */
    int report_nonprivate;
    /* 0: off. In (0, 1): an exponential moving average of the parameters, a <- d a + (1 - d) w
     * after every step t = 0, 1, ... with d = dp_train_ema_decay_at(ema_decay, t) (the decay,
     * warmed up over the first steps; De et al. 2022), is what each epoch evaluates and what the model holds
     * at the end; the live parameters train on. Post-processing of the released iterates: free
     * in privacy. Checkpointed ("state.ema"). */
    double ema_decay;
    /* 1: the test set is held out from the private data: its accuracy and loss are not covered
     * by epsilon and are not written to checkpoints unless report_nonprivate */
    int test_private;
    int eval_batch;             /* 1000 */
    dp_progress_fn progress;    /* called after every step and at each epoch end; may be NULL */
    void *progress_user;
    /* checkpoints and resume (dpsgd/io.h, docs/reliability.md) */
    const char *checkpoint_dir; /* NULL: none; else DIR/checkpoint.safetensors is written every
                                 * checkpoint_every steps and at each epoch end (atomically) */
    long checkpoint_every;      /* 0: only at epoch ends */
    const char *resume;         /* checkpoint directory or file to continue from; NULL: start afresh */
    int force;                  /* resume although epochs, threads, optimizer, clipping mode, seed or
                                 * data path differ; overwrite an existing checkpoint. Never
                                 * overrides model, data content, sigma, q, C, delta. */
    const char *data_id;        /* identity of the training data for checkpoints (its path); may be NULL */
    int threads;                /* thread count recorded in checkpoints; 0: omp_get_max_threads() */
    /* data-parallel training (see dp_train_comm above) */
    const dp_train_comm *comm;  /* NULL (or size 1): one process */
    /* A stop request, e.g. set by the caller's SIGINT handler (the library installs none). Read
     * once per step, at the boundary between steps (with comm: all ranks stop together when one
     * was asked). When set, the loop writes a checkpoint of the steps done (if checkpoint_dir is
     * set and the last one does not already hold them) and returns DP_ERR_INTERRUPTED with a
     * message naming the step, the epsilon spent so far and the checkpoint. A request that comes
     * after the last step changes nothing: the run completes. NULL: never asked. */
    volatile sig_atomic_t *stop;
    /* Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
     * Clipping"). clip_quantile 0 (default): C stays max_grad_norm. In (0, 1): C starts at
     * max_grad_norm and after each step moves geometrically toward the clip_quantile-quantile of
     * the per-sample norms, C <- C exp(-clip_lr (b - clip_quantile)), where b is the fraction of
     * the batch whose norm was at most C, counted privately: each example adds +1/2 (norm <= C)
     * or -1/2 (so one example moves the count by at most 1/2), Gaussian noise of std
     * clip_count_noise is added, and b = (noisy count) / expected_batch + 1/2. The gradient's
     * noise multiplier becomes sigma_g = (sigma^-2 - (2 clip_count_noise)^-2)^-1/2 so that the
     * two releases together are one Gaussian mechanism of multiplier sigma (the paper's
     * Theorem 1): the accountant records sigma, calibrated or given as without adaptation, and
     * epsilon is unchanged. Requires 2 clip_count_noise > sigma. */
    double clip_quantile;
    double clip_lr;          /* eta_C; 0: 0.2 (the paper's) */
    double clip_count_noise; /* sigma_b, in examples; 0: expected_batch / 20 (the paper's m / 20) */
    /* The learning rate over the run: DP_LR_CONSTANT (default) keeps optim.lr; DP_LR_COSINE takes
     * optim.lr * (1 + cos(pi t / T)) / 2 at step t = 0 .. T-1 of the T steps (no warm-up).
     * Public (a function of the step number only); checkpointed ("lr_schedule"). */
    int lr_schedule;
    /* Augmentation multiplicity (De et al. 2022; docs/design.md). 0 (default): off. K in
     * 1..DP_CLIP_MAX_GROUP: every sampled example becomes K randomly augmented copies (a random
     * crop: the image shifted by (dy, dx) in [-augment_pad, augment_pad]^2, the pixels shifted in
     * set to 0 in the model's input space, i.e. after any normalisation; then, with augment_flip,
     * a horizontal flip with probability 1/2); the example's gradient is the average of its
     * copies' gradients, and that average is clipped (dp_clip_params.group), so each example
     * still contributes at most C and the privacy accounting is unchanged. Evaluation sees the
     * images as they are. The augmentations are drawn from the dropout stream (secret with the
     * OS CSPRNG, reproducible with noise_seeded). Images only: token inputs and data of height
     * or width 1 are refused. physical_batch then counts examples (K rows each). Checkpointed. */
    int augmult;
    int augment_pad;  /* 4 (dp_train_default_params) */
    int augment_flip; /* 1 (dp_train_default_params); 0 for data whose mirror image is another class */
    /* > 0: a Gaussian mechanism of this noise multiplier ran on the whole training set before
     * training (sample rate 1, once: dp_precond_fit's release). The accountant's history starts
     * with it, so epsilon covers it, and a calibrated sigma is raised to keep the total at
     * target_epsilon (dp_calibrate_sigma_prior). Not with checkpoint_dir or resume (refused).
     * 0 (default): none. Ignored with no_dp. */
    double prior_sigma;
} dp_train_params;

enum { DP_LR_CONSTANT = 0, DP_LR_COSINE = 1 };
/* the averaging's decay after step t (0-based): min(decay, (1 + t) / (10 + t)), so that the
 * average of a short run is not held at the initial weights (the warm-up of De et al. 2022 and
 * TensorFlow's ExponentialMovingAverage) */
double dp_train_ema_decay_at(double decay, long t);
/* the learning rate of step t (0-based) of T under a schedule */
double dp_train_lr_at(int schedule, double lr, long t, long T);

dp_train_params dp_train_default_params(void);

typedef struct {
    double test_accuracy, test_loss;
    double epsilon, delta;      /* epsilon spent at delta, by the chosen accountant (an upper
                                 * bound) */
    double sigma, q;            /* noise multiplier used and sample rate */
    long steps;
    int steps_per_epoch;
    double seconds;             /* wall time of training (evaluation included) */
    /* not covered by epsilon; 0 unless report_nonprivate (their values depend on the private
     * data and on which examples were sampled) */
    double mean_batch;          /* mean drawn logical batch size */
    long empty_batches;
    long nonfinite_samples;     /* samples whose gradient norm was not finite (clip factor 0) */
    size_t peak_bytes;          /* peak tracked memory during training */
    double max_grad_norm;       /* C at the end (adaptive clipping moves it; else the given C);
                                 * covered by epsilon (a function of the noisy counts) */
    double noise_multiplier_gradient; /* the gradient noise's multiplier: sigma, or with
                                       * adaptive clipping sigma_g (> sigma) */
} dp_train_result;

/* Steps per epoch for n examples and an expected batch: round(n / expected_batch), >= 1. */
int dp_train_steps_per_epoch(size_t n, int expected_batch);

/* Train `model` (already initialised) on `train`; evaluate on `test` (may be NULL) after each
 * epoch. With p->resume the model's parameters, the optimizer, RNG streams, accountant history
 * and counters are taken from the checkpoint and training continues at its step: the result
 * is bit-identical to a run never interrupted (noise_seeded, same seeds and thread count; a
 * run with OS-seeded noise continues with fresh noise: epsilon carries on, the weights differ). A checkpoint made
 * with another model, data, sigma, q, C or delta is refused with DP_ERR_INVALID naming the
 * difference. A non-finite loss or parameter stops training with DP_ERR_NONFINITE and a message
 * naming the step; a stop request (p->stop) with DP_ERR_INTERRUPTED. With checkpoint_dir the
 * run holds an exclusive lock (flock) on checkpoint_dir/.lock, which records its pid, from the
 * start until it returns: a second run on the same directory is refused naming that pid. The
 * result is written only on success. */
dp_status dp_train(dp_model *model, const dp_dataset *train, const dp_dataset *test, const dp_train_params *p,
                   dp_train_result *result);

/* Accuracy and mean cross-entropy of the model on a dataset (forward only); on a dataset with
 * regression targets (d->t) the mean squared error, and accuracy -1 (not defined). */
dp_status dp_evaluate(dp_model *model, const dp_dataset *d, int batch, double *accuracy, double *loss);

/* ---- A loop of your own: the step API ------------------------------------------------------
 * dp_train's set-up (sigma calibrated or given, the optimizer, the accountant, the secret source
 * or the noise_seed streams) and its step, one call per step, for callers that write their own
 * loop (the Python package's PrivateTrainer):
 *
 *   dp_trainer *t;
 *   dp_trainer_create(model, &train, &p, &t);        // p: a dp_train_params, as for dp_train
 *   for (int s = 0; s < steps; s++) dp_trainer_step(t, NULL);
 *   dp_trainer_epsilon(t, &eps);
 *   dp_trainer_destroy(t);
 *
 * dp_trainer_step draws the Poisson sample (rate q = expected_batch / n) and runs the private
 * step: steps_per_epoch x epochs calls draw exactly what dp_train draws, so with noise_seeded the
 * weights are bit-identical to dp_train's (its evaluation draws nothing). p's fields used:
 * clipping, mem_budget, no_dp, max_grad_norm, noise_multiplier (or target_epsilon for the
 * calibration, with delta, the accountant and expected_batch x epochs steps, as dp_train),
 * accountant, expected_batch, physical_batch, epochs (the calibration only: the caller decides
 * how many steps to take), optim, seed, noise_seeded, noise_seed, report_nonprivate. ema_decay,
 * checkpoint_dir, resume and a comm of several ranks are refused (DP_ERR_UNSUPPORTED: dp_train
 * has them); progress, stop, test_private, eval_batch, force, data_id and threads are not read.
 * The model and the dataset are borrowed and must outlive the trainer; one thread at a time. */
typedef struct dp_trainer dp_trainer;

typedef struct {
    long step;        /* steps done, this one included */
    /* NOT covered by epsilon; 0 (loss NaN) unless report_nonprivate or no_dp */
    size_t batch;     /* examples in the logical batch */
    double loss;      /* their mean per-sample loss (the finite ones) */
    long nonfinite;   /* samples that contributed nothing (non-finite loss or gradient norm) */
} dp_trainer_stats;

typedef struct {
    double q, sigma;      /* sample rate and noise multiplier (0 with no_dp) */
    long steps;           /* steps done */
    int steps_per_epoch;  /* dp_train_steps_per_epoch(n, expected_batch) */
    int secret_noise;     /* 1: noise, sampling and dropout from the OS-seeded CSPRNG */
} dp_trainer_info;

/* Checks p as dp_train does (same messages) and sets the run up; calibrates sigma unless given.
 * *out only on success; release with dp_trainer_destroy (NULL is a no-op). */
dp_status dp_trainer_create(dp_model *model, const dp_dataset *train, const dp_train_params *p, dp_trainer **out);
void dp_trainer_destroy(dp_trainer *t);
/* One step on the next sample (the trainer's own Poisson sample; no_dp: the next mini-batch of a
 * shuffled epoch order). stats may be NULL. Errors as dp_train's steps, prefixed "step N". */
dp_status dp_trainer_step(dp_trainer *t, dp_trainer_stats *stats);
/* Draws the next sample, as dp_trainer_step would, into idx (room for n indices): *count of them,
 * increasing (no_dp: the next mini-batch). Drawn from the run's secret source unless noise_seeded:
 * knowing it is knowing who is in the batch; it is the caller's to keep. */
dp_status dp_trainer_sample(dp_trainer *t, size_t *idx, size_t *count);
/* One step on the examples idx[0..count) chosen by the caller (each < n, repeats allowed). The
 * accountant records the step as one of Poisson sampling at rate q: the epsilon it reports holds
 * only when the indices ARE such a sample, drawn independently of the data from a secret source
 * (dp_trainer_sample draws one). DP_ERR_RANGE for an index outside the training set. */
dp_status dp_trainer_step_indices(dp_trainer *t, const size_t *idx, size_t count, dp_trainer_stats *stats);
void dp_trainer_get_info(const dp_trainer *t, dp_trainer_info *info);
/* Epsilon spent so far at p->delta by p->accountant (0 with no_dp). */
dp_status dp_trainer_epsilon(const dp_trainer *t, double *epsilon);
/* The accountant's history so far (borrowed; dpsgd/accounting.h reads it with any kind). */
const dp_accountant *dp_trainer_accountant(const dp_trainer *t);
/* The learning rate of the following steps (schedules): >= 0 and finite, else DP_ERR_RANGE. */
dp_status dp_trainer_set_lr(dp_trainer *t, double lr);

#ifdef __cplusplus
}
#endif
#endif
