/* testhooks.h (internal): switches for the tests and the test build of the CLI
 * (dpsgd-testhooks, built with the tests and never installed). They are not in the public
 * headers, their symbols are hidden in the shared library, and the shipped `dpsgd` never
 * calls them: several of them deliberately break the privacy guarantee. */
#ifndef DP_TESTHOOKS_H
#define DP_TESTHOOKS_H
#include "dpsgd/train.h"

#define DP_HIDDEN __attribute__((visibility("hidden")))

/* dp_train with test switches. noise: 0 normal; 1 no noise is added; 2 noise only (the
 * clipped sum is zeroed before the noise). shards: 0/1 ordinary sampling; S > 1 in one
 * process: sample exactly as S ranks would (each shard i % S == r from its own stream, which
 * needs noise_seeded); the union equals an S-rank run's sample. With comm->size > 1 it must
 * be 0 or the size. dump_released: see below. */
typedef struct {
    int noise;
    int shards;
    const char *dump_released; /* NULL, or a file to which rank 0 appends each step's released
                                * (noised and scaled) gradient as raw float32 */
} dp__train_test;
DP_HIDDEN dp_status dp__train(dp_model *model, const dp_dataset *train, const dp_dataset *test,
                              const dp_train_params *p, const dp__train_test *t, dp_train_result *result);

/* Fault injection: fail the n-th allocation from now (n >= 1), 0 disables. */
DP_HIDDEN void dp_mem_fail_after(long n);

/* Milliseconds dp_safetensors_save sleeps between writing the temporary file and renaming
 * it, so a test can kill the process while a checkpoint is half done (0: none). */
DP_HIDDEN extern long dp__test_slow_write_ms;

/* dp_audit_run with switches that break the mechanism on purpose, so the tests can show that
 * the audit catches what it exists to catch (tests/test_audit.c; `dpsgd-testhooks audit
 * --debug-noise-scale X --debug-canary-scale X`). t == NULL, or {1, 1}: the honest run.
 *   noise_scale (>= 0): the noise std is noise_scale * sigma * C while the accountant still
 *     records sigma (0.1: "noise scaled down by 10", a broken build);
 *   canary_scale (> 0): gradient canaries get a per-sample gradient of norm canary_scale * C
 *     (10: a layer whose per-sample gradient escapes clipping, so one example moves the sum
 *     by more than the C the accountant assumes); ignored for input canaries.
 * Bad values fail with DP_ERR_RANGE naming noise_scale / canary_scale. */
#include "dpsgd/audit.h"
typedef struct {
    double noise_scale, canary_scale;
} dp__audit_test;
DP_HIDDEN dp_status dp__audit(dp_model *model, const dp_dataset *train, const dp_dataset *pool,
                              const dp_audit_params *p, const dp__audit_test *t, dp_audit_result *result,
                              float *scores, unsigned char *in);
#endif
