/* train_checkpoint.h (internal): dp_train's checkpoints (dpsgd/io.h, docs/reliability.md),
 * so that src/train/train.c holds only the loop and calls these at its boundaries:
 *   - the run's configuration as a checkpoint records it, and the model's structure record;
 *   - on resume: open the file, check it against this run (configuration, model structure,
 *     the calibrated sigma, the rank count), restore the state;
 *   - the writer: the directory's lock, the tensors, one atomic write per checkpoint. */
#ifndef DP_TRAIN_CHECKPOINT_H
#define DP_TRAIN_CHECKPOINT_H
#include "dpsgd/io.h"
#include "dpsgd/train.h"

/* Everything the loop needs to write a checkpoint; the info's configuration part is filled
 * once (its model record borrowed from the caller's configuration), its state part before
 * each write. Start from DP__CKPT_WRITER_INIT; release with dp__ckpt_writer_close. */
typedef struct {
    char path[4096];
    dp_checkpoint_info info;
    dp_st_tensor *t; /* model tensors + optimizer state + sampler permutation */
    int nt;
    int lock_fd; /* DIR/.lock, flocked for the whole run; -1: not held */
} dp__ckpt_writer;
#define DP__CKPT_WRITER_INIT {.lock_fd = -1}

/* The configuration part of *c for this run (the rest zero); c->model is the model's
 * structure record, malloc'd (dp_checkpoint_info_free). */
dp_status dp__ckpt_config(dp_checkpoint_info *c, const dp_model *m, const dp_dataset *tr, const dp_train_params *p,
                          double sigma, double q, uint64_t checksum);

/* Loads the checkpoint p->resume names (a directory or the file) and reads its info; *ck
 * is set (or NULL) either way, for the caller to destroy. */
dp_status dp__ckpt_open(const dp_train_params *p, dp_safetensors **ck, dp_checkpoint_info *info);

/* Whether this run may continue checkpoint ck (info cki): its configuration `cur` against
 * the checkpoint's (what only force may override, and what nothing may), the model's
 * structure, a calibrated sigma recomputed for the checkpoint's own step count, the number
 * of ranks. m: for format 2 files, whose model is dp_model_describe text. */
dp_status dp__ckpt_check_resume(const dp_safetensors *ck, const dp_checkpoint_info *cki, const dp_checkpoint_info *cur,
                                const dp_model *m, const dp_train_params *p, double q, int steps_per_epoch, int ranks);

/* Restores the model, optimizer, sampler permutation (no_dp) and accountant from a checked
 * checkpoint, and, when ema is not NULL, the parameter average: the checkpoint's, or the
 * restored parameters when it has none. */
dp_status dp__ckpt_restore(const dp_safetensors *s, const dp_checkpoint_info *c, dp_model *m, dp_optim *opt,
                           dp_accountant *acc, size_t *perm, size_t n, int no_dp, long total_steps, float *ema);

/* Prepares the writer: creates and locks p->checkpoint_dir, refuses to replace another
 * run's checkpoint (unless p->force, or it is the one being resumed), lists the tensors:
 * the model's, the optimizer's state, perm (no_dp), the rank count (> 1), ema (may be NULL). */
dp_status dp__ckpt_writer_init(dp__ckpt_writer *w, const dp_train_params *p, dp_model *m, dp_optim *opt,
                               size_t *perm, size_t n, int64_t *shards_val, float *ema);

/* The state part of w->info that the loop's counters make (statistics of the private data
 * are zeroed unless report_nonprivate), then one checkpoint written atomically. */
void dp__ckpt_fill_counters(dp_checkpoint_info *c, long step, const dp_train_result *r, size_t lcount,
                            double batch_sum, double lsum, const dp_train_progress *pr, double elapsed,
                            int report_nonprivate, int private_test);
dp_status dp__ckpt_write(dp__ckpt_writer *w, dp_optim *opt, const dp_accountant *acc, const dp_rng *rs,
                         const dp_rng *rn, const dp_rng *rd);

/* Frees the tensor list and releases the directory's lock. */
void dp__ckpt_writer_close(dp__ckpt_writer *w);
#endif
