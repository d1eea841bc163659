/* dpsgd/io.h: safetensors weights and training checkpoints.
 *
 * safetensors (https://github.com/huggingface/safetensors): 8 bytes little-endian header
 * length N, N bytes of JSON header, then the data section. The header maps each tensor
 * name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
 * section) and may hold "__metadata__", a map of strings to strings. The reader checks it
 * strictly: header size (at most 100 MB and inside the file), JSON syntax, no duplicate
 * keys, no unknown fields, known dtype, shape entries non-negative integers, at most 8
 * dimensions, byte size = product(shape) * dtype size without overflow, offsets inside the
 * data section, tensors neither overlapping nor leaving holes, and nothing after the last
 * tensor. Every failure names the file (or `what`) and the tensor or field.
 *
 * Model weights use PyTorch's nn.Sequential names ("0.weight", "0.bias", ...) and shapes
 * (linear [out, in], conv2d [out, in, k, k], bias [out]), dtype F32, so
 * `model.load_state_dict(safetensors.torch.load_file(path))` works on the PyTorch side.
 *
 * A checkpoint is one safetensors file, DIR/checkpoint.safetensors: the model tensors, the
 * optimizer state ("optimizer.state", F32), the sampler permutation of the non-private
 * baseline ("sampler.perm", I64, only with no_dp), and in __metadata__ the configuration
 * and the loop state (RNG states, accountant history, counters), and a checksum of all of it
 * (dp_checkpoint_content_checksum), verified on reading. It is written atomically
 * (temporary file in DIR, fsync, rename, fsync of DIR), so a crash while writing leaves the
 * previous checkpoint intact. See docs/reliability.md.
 */
#ifndef DPSGD_IO_H
#define DPSGD_IO_H
#include "dpsgd/core.h"
#include "dpsgd/nn.h"
#include "dpsgd/optim.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- safetensors ------------------------------------------------------------------- */
typedef enum { DP_ST_F32, DP_ST_F64, DP_ST_I64, DP_ST_I32, DP_ST_U8, DP_ST_DTYPE_COUNT } dp_st_dtype;
#define DP_ST_MAX_HEADER  (100u << 20) /* header size limit (as the reference implementation) */
#define DP_ST_MAX_TENSORS 65536
/* "F32", ...; "?" out of range. */
const char *dp_st_dtype_name(dp_st_dtype d);
size_t dp_st_dtype_size(dp_st_dtype d);

/* A tensor to write: name (copied), dtype, shape (ndim <= 8), data (borrowed). */
typedef struct {
    const char *name;
    dp_st_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
} dp_st_tensor;

/* A parsed file (opaque). Holds the whole file in one tracked block. */
typedef struct dp_safetensors dp_safetensors;

/* Parse a safetensors image in memory (copied). `what` names it in messages (a path).
 * Errors: DP_ERR_FORMAT (malformed), DP_ERR_RANGE (sizes), DP_ERR_UNSUPPORTED (dtype),
 * DP_ERR_NOMEM. *out written only on success. */
dp_status dp_safetensors_parse(const void *buf, size_t len, const char *what, dp_safetensors **out);
/* Read and parse a file (DP_ERR_IO if it cannot be read). */
dp_status dp_safetensors_load(const char *path, dp_safetensors **out);
void dp_safetensors_destroy(dp_safetensors *s);
int dp_safetensors_num_tensors(const dp_safetensors *s);
/* Tensor i (in file order) or by name: any out-pointer may be NULL. *data points into the
 * file image (valid until destroy, NOT necessarily aligned: memcpy it). by name: DP_ERR_INVALID
 * naming the file and tensor if absent. */
dp_status dp_safetensors_tensor(const dp_safetensors *s, int i, const char **name, dp_st_dtype *dtype, int *ndim,
                                const int64_t **shape, const void **data, size_t *count);
dp_status dp_safetensors_find(const dp_safetensors *s, const char *name, dp_st_dtype *dtype, int *ndim,
                              const int64_t **shape, const void **data, size_t *count);
/* A __metadata__ value, or NULL if the key is absent. Borrowed. */
const char *dp_safetensors_meta(const dp_safetensors *s, const char *key);
/* The __metadata__ pairs in file order: their number, and pair i (key and value borrowed). */
int dp_safetensors_num_meta(const dp_safetensors *s);
void dp_safetensors_meta_at(const dp_safetensors *s, int i, const char **key, const char **value);
const char *dp_safetensors_what(const dp_safetensors *s);

/* Write tensors (and meta: n_meta key/value pairs, meta[2k] the key, meta[2k+1] the value;
 * may be NULL) to path atomically (temp file in the same directory, fsync, rename, fsync of
 * the directory). The data section starts 8-byte aligned. */
dp_status dp_safetensors_save(const char *path, const dp_st_tensor *t, int n, const char *const *meta, int n_meta);

/* Model weights: every parameter tensor with its PyTorch name and shape, F32. */
dp_status dp_model_save_safetensors(dp_model *m, const char *path);
/* Loads weights into m: the file must hold exactly the model's tensors (names, F32, shapes
 * as the model's); anything missing, extra or mismatched is refused naming the tensor, and
 * the model is unchanged on failure. */
dp_status dp_model_load_safetensors(dp_model *m, const char *path);
/* Same, from a parsed file (for checkpoints), ignoring tensors whose names start with
 * `skip_prefix` (may be NULL). */
dp_status dp_model_from_safetensors(dp_model *m, const dp_safetensors *s, const char *skip_prefix);
/* The model's tensors as dp_st_tensor entries (names borrowed from the model, shapes as
 * PyTorch). out has room for dp_model_num_tensors(m) entries. */
dp_status dp_model_st_tensors(dp_model *m, dp_st_tensor *out);

/* ---- checkpoints (used by dp_train; exposed for tests and tools) ----------------------- */
#define DP_CHECKPOINT_FILE "checkpoint.safetensors"
/* Path of the checkpoint in a directory (or path itself when it names a regular file):
 * writes at most cap bytes to buf; DP_ERR_RANGE if too long. */
dp_status dp_checkpoint_path(const char *dir_or_file, char *buf, size_t cap);
/* 64-bit checksum of a dataset's features, labels and shape (identity of the data). */
uint64_t dp_checkpoint_data_checksum(const float *x, const int32_t *y, size_t n, size_t dim);
/* RNG state <-> text ("s0 s1 s2 s3 has_spare spare", hex, exact). buf: >= 128 bytes. */
void dp_rng_to_text(const dp_rng *r, char *buf, size_t cap);
dp_status dp_rng_from_text(const char *text, const char *what, dp_rng *r);
/* Parse checkpoint text fields strictly: a whole string as a double (decimal or %a hex),
 * a long, an unsigned 64-bit value; failures name `what` and `key`. */
dp_status dp_meta_double(const dp_safetensors *s, const char *key, double *out);
dp_status dp_meta_long(const dp_safetensors *s, const char *key, long lo, long hi, long *out);
dp_status dp_meta_u64(const dp_safetensors *s, const char *key, uint64_t *out);
dp_status dp_meta_string(const dp_safetensors *s, const char *key, const char **out);

/* The non-tensor content of a checkpoint: the configuration (checked on resume) and the
 * loop state. The tensors beside it: the model's, "optimizer.state" (F32) and, with no_dp,
 * "sampler.perm" (I64). */
typedef struct {
    /* configuration */
    /* the model's structure: one line per layer (kind, inputs, output shape, parameters,
     * frozen, name), from the accessors of dpsgd/nn.h; malloc'd (dp_checkpoint_info_free).
     * In format 2 files: dp_model_describe text. */
    char *model;
    int version;      /* the file's format version (read: 2 or 3; written: always 3) */
    char data[512];   /* identity of the training data as given (a path) */
    uint64_t data_n, data_dim;
    uint64_t data_checksum; /* in memory only (the MPI ranks compare it): a checkpoint holds no
                             * fingerprint of the private data */
    int no_dp, clipping, expected_batch, physical_batch, epochs, threads;
    int secure;          /* 1: noise, sampling and dropout from the OS CSPRNG (not written) */
    double max_grad_norm, sigma, q, delta, target_epsilon;
    dp_optim_params optim;
    uint64_t seed;
    uint64_t noise_seed; /* with secure 0: the --noise-seed (epsilon holds only while it is secret) */
    double ema_decay;    /* 0: no parameter averaging; else the tensor "state.ema" holds the average */
    /* state at a step boundary */
    long step;        /* optimizer steps done */
    long optim_steps; /* the optimizer's step count */
    dp_rng rng_sampling, rng_noise, rng_dropout;
    long empty_batches, nonfinite_samples, lcount;
    double batch_sum, lsum, test_accuracy, test_loss, elapsed;
    size_t acc_len; /* accountant history (q, sigma, steps), malloc'd */
    double *acc_q, *acc_sigma;
    long *acc_steps;
    int regression; /* 1: trained on regression targets (mean squared error), "loss" "mse"; absent
                     * in files written before it: cross-entropy */
    /* adaptive clipping (dp_train_params.clip_quantile; fields absent in files before it: off):
     * the settings, defaults resolved, and the state: C for the next step ("clip.norm") */
    double clip_quantile, clip_lr, clip_count_noise, clip_norm;
    int lr_schedule; /* dp_train_params.lr_schedule ("lr_schedule"; absent in files before it: constant) */
    /* augmentation multiplicity (dp_train_params); absent in files written before it: 0 (off) */
    int augmult, augment_pad, augment_flip;
} dp_checkpoint_info;
/* The checkpoint's content checksum (stored in its "checksum" field): CRC-64/XZ over every
 * __metadata__ pair but "checksum" itself and every tensor (name, dtype, shape, bytes), in
 * file order, each part length-prefixed. It catches corruption and casual edits, not an
 * adversary (who can recompute it). */
uint64_t dp_checkpoint_content_checksum(const dp_safetensors *s);
/* Reads and checks every field (DP_ERR_FORMAT naming the file and field), then the integrity:
 * the checksum must match the content (a checkpoint of format version 1, which predates it,
 * is refused), and the accountant history must be the one (q, sigma, step) make: empty at
 * step 0 or without DP, else the single entry (q, sigma, step), bit for bit. Versions 2 and 3
 * are read (they differ in what `model` holds). model and the acc_* arrays are malloc'd:
 * release with dp_checkpoint_info_free. */
dp_status dp_checkpoint_info_read(const dp_safetensors *s, dp_checkpoint_info *c);
void dp_checkpoint_info_free(dp_checkpoint_info *c);
/* Writes the checkpoint file at path atomically: the info as __metadata__, the tensors. */
dp_status dp_checkpoint_write(const char *path, const dp_checkpoint_info *c, const dp_st_tensor *t, int nt);
/* Checks the structure of a checkpoint file image (fuzzing entry point): parses it as
 * safetensors and reads the info. */
dp_status dp_checkpoint_check(const void *buf, size_t len, const char *what);

#ifdef __cplusplus
}
#endif
#endif
