/* dpsgd/data.h: .npy arrays, IDX (MNIST-style) datasets, and checks on datasets before
 * training.
 *
 *   dp_npy a;                                   // an n-d array read from a .npy file
 *   if (dp_npy_load("x.npy", &a) != DP_OK) fprintf(stderr, "%s\n", dp_last_error());
 *   ... a.data holds a.count elements of a.dtype, C order ...
 *   dp_npy_free(&a);
 *
 *   dp_dataset d;                               // Fashion-MNIST test split, pixels in [0,1]
 *   dp_dataset_load_mnist_dir("/usr/share/datasets/fashion-mnist", 0, &d);
 *   dp_dataset_validate(&d, "test set", 1, 10);
 *   dp_dataset_free(&d);
 *
 * Every loader checks its input completely (magic, header fields, sizes, no truncated or
 * trailing data) and on failure returns a status with a message naming the file, the field
 * and the reason (read it with dp_last_error()). Out-parameters are written only on success.
 * All array memory comes from the tracked allocator (dp_alloc); the caller owns what a
 * loader returns and gives it back with the matching free function.
 * Byte order: the library runs on little-endian hosts only (checked at compile time).
 */
#ifndef DPSGD_DATA_H
#define DPSGD_DATA_H
#include "dpsgd/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- .npy arrays ---------------------------------------------------------------------
 * Format versions 1.0, 2.0 and 3.0; C order only; descr '<f4' '<f8' '<i8' '<i4' '|u1'
 * ('=' on this little-endian host is read as '<'; for u1 any byte-order mark is accepted).
 * Big-endian, Fortran-order, structured and other dtypes give DP_ERR_UNSUPPORTED. */
typedef enum { DP_NPY_F32, DP_NPY_F64, DP_NPY_I64, DP_NPY_I32, DP_NPY_U8, DP_NPY_DTYPE_COUNT } dp_npy_dtype;

enum { DP_NPY_MAX_DIMS = 8 };

typedef struct {
    dp_npy_dtype dtype;
    int ndim;              /* 0..8 (0: a scalar, count 1) */
    int64_t shape[8];      /* shape[0..ndim-1]; the rest 0 */
    size_t count;          /* product of shape */
    void *data;            /* count elements of dtype, tracked allocation, owned by the struct */
} dp_npy;

/* Bytes per element (4, 8, 8, 4, 1); 0 for an invalid dtype. */
size_t dp_npy_dtype_size(dp_npy_dtype dtype);
/* The .npy descr of a dtype ("<f4", ...); "?" for an invalid dtype. Static string. */
const char *dp_npy_dtype_name(dp_npy_dtype dtype);

/* Reads a whole .npy file. On success *out owns a new tracked block (free with
 * dp_npy_free). Errors: DP_ERR_IO (cannot open/read), DP_ERR_FORMAT (bad magic, header,
 * truncated or trailing data, negative dimension), DP_ERR_RANGE (size overflows),
 * DP_ERR_UNSUPPORTED (version, dtype, byte order, fortran_order, more than 8 dims),
 * DP_ERR_NOMEM. */
dp_status dp_npy_load(const char *path, dp_npy *out);

/* Convenience: load and convert to float32 (from f32/f64/i32/i64/u8). On success *out is a
 * new tracked block of *count floats, owned by the caller (dp_free). shape (room for 8),
 * ndim and count may each be NULL when not wanted. */
dp_status dp_npy_load_f32(const char *path, float **out, int64_t *shape, int *ndim, size_t *count);

/* Frees a->data and zeroes the struct. NULL-safe. */
void dp_npy_free(dp_npy *a);

/* Class labels from an array read by dp_npy_load (int32, int64 or uint8, any shape): its
 * a->count values into y, each in 0..INT32_MAX - 1; *max_label (may be NULL) the largest.
 * Labels are private data: a message names `path` and the range, never a value or its
 * position. Errors: DP_ERR_UNSUPPORTED (a float dtype), DP_ERR_RANGE (a label outside). */
dp_status dp_npy_labels(const dp_npy *a, const char *path, int32_t *y, int32_t *max_label);

/* Writes a version 1.0 .npy file (C order, little-endian), atomically: a temporary file in
 * the same directory is written, fsynced and renamed over path, so path either keeps its
 * old content or holds the complete new array, never a partial file. data (borrowed, not
 * kept) holds the product of shape elements of dtype; it may be NULL when that is 0. */
dp_status dp_npy_save(const char *path, dp_npy_dtype dtype, int ndim, const int64_t *shape,
                      const void *data);

/* ---- Datasets --------------------------------------------------------------------------
 * Examples as float32 rows with a per-example shape, plus int labels. */
typedef struct {
    size_t n;           /* number of examples */
    int c, h, w;        /* per-example shape: images 1 x 28 x 28; flat data dim x 1 x 1 */
    size_t dim;         /* c*h*w */
    float *x;           /* [n, dim] owned by the struct, tracked */
    int32_t *y;         /* [n] owned by the struct, tracked */
    int n_classes;      /* the number of classes; with targets, n_targets */
    /* Regression (the loss is then the mean squared error, not cross-entropy): t[n, n_targets]
     * float targets, owned, tracked; y is then all 0 and n_classes = n_targets, so a model's
     * output size is checked alike. NULL (and 0) for class labels. */
    float *t;
    int n_targets;
} dp_dataset;

/* Reads an IDX pair: images (idx3, unsigned bytes, magic 0x00000803: count, rows, cols) and
 * labels (idx1, unsigned bytes, magic 0x00000801: count), each gzip-compressed or plain.
 * Pixels are scaled to [0,1] (p / 255). Checks: magic; every dimension > 0; at most 2^31
 * examples, rows*cols at most 2^31-1 and no size overflow (DP_ERR_RANGE); the file holds
 * exactly the data its header declares (truncated or trailing data: DP_ERR_FORMAT); equal
 * image and label counts (DP_ERR_FORMAT). On success *out owns new tracked blocks
 * (free with dp_dataset_free); c = 1, h = rows, w = cols. */
dp_status dp_dataset_load_idx(const char *images_path, const char *labels_path, dp_dataset *out);

/* Fashion-MNIST / MNIST directory: dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte, each
 * file taken with a .gz suffix if that exists, else without. train != 0: the training split,
 * else the test split. Ownership as dp_dataset_load_idx. */
dp_status dp_dataset_load_mnist_dir(const char *dir, int train, dp_dataset *out);

/* Frees x and y and zeroes the struct. NULL-safe. */
void dp_dataset_free(dp_dataset *d);

/* Checks before training, in this order: the struct is consistent (dim == c*h*w, arrays
 * present: DP_ERR_INVALID); n >= min_rows (DP_ERR_RANGE); every feature finite
 * (DP_ERR_NONFINITE); with regression targets, n_targets = n_classes (DP_ERR_INVALID) and every
 * target finite (DP_ERR_NONFINITE); labels in [0, n_classes) (DP_ERR_RANGE). Messages about the content
 * name the dataset and the rule, never a value or its row (docs/privacy.md). n_classes <= 0 means d->n_classes.
 * `what` names the dataset in messages (a file name, "training set"); may be NULL. */
dp_status dp_dataset_validate(const dp_dataset *d, const char *what, size_t min_rows, int n_classes);

/* Mean and (population) standard deviation over all n*dim values, accumulated in double.
 * An empty dataset gives mean 0, std 0. */
void dp_dataset_stats(const dp_dataset *d, double *mean, double *std);
/* x = (x - mean) / std for every value. A std that is not > 0 and finite is taken as 1
 * (constant data is only centred). */
void dp_dataset_normalize(dp_dataset *d, double mean, double std);

/* ---- Token sequences (transformer inputs) ---------------------------------------------
 * A token dataset is a dp_dataset with c = 1, h = 1, w = dim = T (the sequence length):
 * x[i*T + t] holds the token id at position t of row i AS A FLOAT (an exact integer, ids
 * below 2^24 so float32 holds them exactly), and -1 marks padding. Models treat any negative
 * id as padding; the loaders and the generator below write exactly -1. Labels as usual.
 *
 *   dp_dataset d;                               // ids [N, T] int32/int64, labels [N]
 *   dp_dataset_load_tokens("ids.npy", "labels.npy", 0, &d);   // id 0 is the pad token
 *   dp_dataset_validate_tokens(&d, "ids.npy", 30522);
 *   dp_dataset_free(&d);
 *
 * File format, Python snippets and the synthetic task: docs/sequence-data.md. */
enum {
    DP_TOKENS_MAX_LEN = 65536,        /* longest sequence T accepted */
    DP_TOKENS_MAX_VOCAB = 1 << 24     /* ids are < 2^24 (exact in float32) */
};

/* Reads a token dataset from two .npy files: ids_path, shape [N, T], and labels_path, shape
 * [N]. Ids dtypes: <i4 and <i8, also |u1; <f4 and <f8 only when every value is a finite
 * exact integer. Mapping: a negative id becomes -1 (padding); when pad_id >= 0, an id equal
 * to pad_id becomes -1 too (pad_id < 0: no such mapping). Labels dtypes: <i4, <i8, |u1; each
 * label in [0, 2^31-2]; n_classes = 1 + max label.
 * Errors, each naming the file and the reason (never a private value, its row or position):
 * everything dp_npy_load reports; DP_ERR_FORMAT: ids not 2-d or labels not 1-d, N or T is 0,
 * label count differs from N, an id that is not an integer (f4/f8); DP_ERR_NONFINITE: NaN or
 * infinite id; DP_ERR_RANGE: T > DP_TOKENS_MAX_LEN, an id >= DP_TOKENS_MAX_VOCAB, a negative or
 * too large label, size overflow; DP_ERR_UNSUPPORTED: a float labels file;
 * DP_ERR_INVALID: NULL arguments or pad_id >= DP_TOKENS_MAX_VOCAB. The loader does not look
 * at the vocabulary or at all-padding rows: dp_dataset_validate_tokens does.
 * On success *out owns new tracked blocks (free with dp_dataset_free): c = 1, h = 1,
 * w = dim = T. */
dp_status dp_dataset_load_tokens(const char *ids_path, const char *labels_path, int pad_id,
                                 dp_dataset *out);

/* Checks a token dataset before training, in this order: vocab in 1..DP_TOKENS_MAX_VOCAB
 * (DP_ERR_INVALID); everything dp_dataset_validate(d, what, 1, 0) checks (consistent struct,
 * at least one row, finite values, labels in [0, d->n_classes)); the shape is 1 x 1 x T with
 * 1 <= T <= DP_TOKENS_MAX_LEN (DP_ERR_INVALID / DP_ERR_RANGE); every id an integer
 * (DP_ERR_FORMAT) in [-1, vocab) (DP_ERR_RANGE: padding must be exactly -1 here); every row
 * holds at least one id that is not padding (DP_ERR_FORMAT). Messages name the rule, never
 * the value, row or position, and the rule reported does not depend on where the bad ids are. `what` names the dataset in messages
 * ("train ids.npy"); may be NULL. */
dp_status dp_dataset_validate_tokens(const dp_dataset *d, const char *what, int vocab);

/* Built-in synthetic text classification task in which the ORDER of tokens decides the label
 * and the multiset of tokens does not, so bag-of-words models stay at chance (50%) and a
 * model needs attention with position information. Each of the n rows:
 *   - a length L uniform in [max(3, ceil(T/2)), T]; positions L..T-1 are padding (-1);
 *   - position 0 holds id 0 (a [CLS] token);
 *   - two distinct positions p < q drawn uniformly from 1..L-1 hold the markers: label 1
 *     puts id 1 at p and id 2 at q (marker 1 first), label 0 puts id 2 at p and id 1 at q;
 *   - every other position in 1..L-1 holds an id uniform in [3, vocab).
 * A row of class 0 is a row of class 1 with the two markers swapped, so the distribution of
 * lengths, of the token multiset and of the set of marker positions is identical in the two
 * classes. Labels are exactly balanced (floor(n/2) of class 1) in a shuffled order;
 * n_classes = 2; c = 1, h = 1, w = dim = T. Deterministic for a seed (dp_rng) on every
 * platform. Errors: DP_ERR_INVALID: n == 0, T < 4 or T > DP_TOKENS_MAX_LEN, vocab < 4 or
 * vocab > DP_TOKENS_MAX_VOCAB, out NULL; DP_ERR_RANGE: n * T overflows; DP_ERR_NOMEM.
 * On success *out owns new tracked blocks (free with dp_dataset_free). */
dp_status dp_text_synthetic(size_t n, int T, int vocab, uint64_t seed, dp_dataset *out);

#ifdef __cplusplus
}
#endif
#endif
