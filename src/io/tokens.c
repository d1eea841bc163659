/* tokens.c: token-sequence datasets for transformer models: the .npy loader, the checks
 * before training, and the built-in synthetic order task (see dpsgd/data.h and
 * docs/sequence-data.md).
 *
 * A token dataset is a dp_dataset with c = 1, h = 1, w = dim = T; x holds the ids as exact
 * float integers (< 2^24) and -1 for padding. */
#include "dpsgd/data.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- loading ------------------------------------------------------------------------------ */

/* Describes an npy shape as "(2, 3, 4)" into buf (for messages). */
static const char *shape_text(const dp_npy *a, char *buf, size_t cap) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "(");
    for (int i = 0; i < a->ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", a->shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "%s)", a->ndim == 1 ? "," : "");
    return buf;
}

/* Messages about the CONTENT of the files (an id or a label, below and in
 * dp_dataset_validate_tokens) name the file and the rule broken, never the offending value,
 * its row or position, or how many rows break it: what is printed about private data is a
 * release the accountant does not cover (docs/privacy.md). Messages about the STRUCTURE (ndim,
 * shape, dtype, N, T, the label count against N) may be detailed: shapes are public. */
enum { ID_NONFINITE = 1, ID_FRACTION = 2, ID_TOO_LARGE = 4 }; /* what convert_ids found */

/* A float id: finite, an integer, below 2^24 (else the ID_ flag it breaks, and *id is
 * untouched); a negative one is passed on as -1. */
static int float_id(double v, int64_t *id) {
    if (!isfinite(v)) return ID_NONFINITE;
    if (v != floor(v)) return ID_FRACTION;
    if (v >= (double)DP_TOKENS_MAX_VOCAB) return ID_TOO_LARGE;
    *id = v < 0 ? -1 : (int64_t)v;
    return 0;
}

/* Converts the ids of a (count elements of a->dtype) into floats at dst, which may be
 * a->data itself when the element size is 4 (every element is read before its slot is
 * written; memcpy keeps that well-defined under the aliasing rules). Every id is read even
 * after a bad one, and the error reported is the first of non-finite (DP_ERR_NONFINITE), not
 * an integer (DP_ERR_FORMAT), 2^24 or more (DP_ERR_RANGE) that occurs anywhere: which one is
 * reported does not depend on where the bad ids are. */
static dp_status convert_ids(const char *path, const dp_npy *a, int pad_id, float *dst) {
    const unsigned char *src = a->data;
    unsigned char *out = (unsigned char *)dst;
    int bad = 0;
    for (size_t i = 0; i < a->count; i++) {
        int64_t v = 0;
        int why = 0;
        switch (a->dtype) {
        case DP_NPY_I32: {
            int32_t t;
            memcpy(&t, src + 4 * i, 4);
            v = t;
            break;
        }
        case DP_NPY_I64: memcpy(&v, src + 8 * i, 8); break;
        case DP_NPY_U8: v = src[i]; break;
        case DP_NPY_F32: {
            float t;
            memcpy(&t, src + 4 * i, 4);
            why = float_id(t, &v);
            break;
        }
        case DP_NPY_F64: {
            double t;
            memcpy(&t, src + 8 * i, 8);
            why = float_id(t, &v);
            break;
        }
        default:
            return dp_fail(DP_ERR_UNSUPPORTED, "%s: token ids of dtype %s are not supported", path,
                           dp_npy_dtype_name(a->dtype));
        }
        if (why) {
            bad |= why;
            continue;
        }
        if (v < 0 || (pad_id >= 0 && v == pad_id)) {
            v = -1;
        } else if (v >= DP_TOKENS_MAX_VOCAB) {
            bad |= ID_TOO_LARGE;
            continue;
        }
        float f = (float)v;
        memcpy(out + 4 * i, &f, 4);
    }
    if (bad & ID_NONFINITE)
        return dp_fail(DP_ERR_NONFINITE, "%s: a token id is not finite (NaN or Inf); ids must be integers",
                       path);
    if (bad & ID_FRACTION)
        return dp_fail(DP_ERR_FORMAT, "%s: a token id is not an integer; ids stored as floats must be whole numbers",
                       path);
    if (bad & ID_TOO_LARGE)
        return dp_fail(DP_ERR_RANGE,
                       "%s: a token id is above 2^24 - 1 = %d, the largest id supported (ids are kept exactly as "
                       "float32)",
                       path, DP_TOKENS_MAX_VOCAB - 1);
    return DP_OK;
}

dp_status dp_dataset_load_tokens(const char *ids_path, const char *labels_path, int pad_id,
                                 dp_dataset *out) {
    if (!ids_path || !labels_path || !out)
        return dp_fail(DP_ERR_INVALID,
                       "dp_dataset_load_tokens: ids_path, labels_path and out are required");
    if (pad_id >= DP_TOKENS_MAX_VOCAB)
        return dp_fail(DP_ERR_INVALID, "%s: pad id %d is above 2^24 - 1 = %d, the largest id supported",
                       ids_path, pad_id, DP_TOKENS_MAX_VOCAB - 1);
    dp_npy ids, lab;
    memset(&ids, 0, sizeof ids);
    memset(&lab, 0, sizeof lab);
    float *x = NULL;
    int32_t *y = NULL;
    char sh[160];
    dp_status s = dp_npy_load(ids_path, &ids);
    if (s != DP_OK) return s;
    if (ids.ndim != 2) {
        s = dp_fail(DP_ERR_FORMAT,
                    "%s: token ids must be a 2-d array [N, T] (rows, sequence length); this one "
                    "has %d dimension%s, shape %s",
                    ids_path, ids.ndim, ids.ndim == 1 ? "" : "s", shape_text(&ids, sh, sizeof sh));
        goto fail;
    }
    if (ids.shape[0] == 0) {
        s = dp_fail(DP_ERR_FORMAT, "%s: token ids: N (rows) is 0, shape %s", ids_path,
                    shape_text(&ids, sh, sizeof sh));
        goto fail;
    }
    if (ids.shape[1] == 0) {
        s = dp_fail(DP_ERR_FORMAT, "%s: token ids: T (sequence length) is 0, shape %s", ids_path,
                    shape_text(&ids, sh, sizeof sh));
        goto fail;
    }
    if (ids.shape[1] > DP_TOKENS_MAX_LEN) {
        s = dp_fail(DP_ERR_RANGE, "%s: token ids: T (sequence length) %" PRId64 " is above %d",
                    ids_path, ids.shape[1], DP_TOKENS_MAX_LEN);
        goto fail;
    }
    size_t n = (size_t)ids.shape[0], T = (size_t)ids.shape[1];
    if (ids.count > SIZE_MAX / sizeof(float)) {
        s = dp_fail(DP_ERR_RANGE, "%s: token ids: %zu x %zu values overflow memory sizes", ids_path,
                    n, T);
        goto fail;
    }

    if ((s = dp_npy_load(labels_path, &lab)) != DP_OK) goto fail;
    if (lab.ndim != 1) {
        s = dp_fail(DP_ERR_FORMAT,
                    "%s: labels must be a 1-d array [N]; this one has %d dimensions, shape %s",
                    labels_path, lab.ndim, shape_text(&lab, sh, sizeof sh));
        goto fail;
    }
    if ((size_t)lab.shape[0] != n) {
        s = dp_fail(DP_ERR_FORMAT, "%s: holds %" PRId64 " labels but token ids file %s holds %zu rows",
                    labels_path, lab.shape[0], ids_path, n);
        goto fail;
    }

    y = dp_alloc(n * sizeof(int32_t));
    if (!y) {
        s = DP_ERR_NOMEM;
        goto fail;
    }
    int32_t max_label = 0;
    if ((s = dp_npy_labels(&lab, labels_path, y, &max_label)) != DP_OK) goto fail;
    dp_npy_free(&lab);

    /* 4-byte dtypes are converted in place: the file's block becomes x (no second copy). */
    int in_place = dp_npy_dtype_size(ids.dtype) == sizeof(float);
    if (in_place) {
        x = ids.data;
        ids.data = NULL;
    } else if (!(x = dp_alloc(ids.count * sizeof(float)))) {
        s = DP_ERR_NOMEM;
        goto fail;
    }
    dp_npy src = ids;
    if (in_place) src.data = x;
    if ((s = convert_ids(ids_path, &src, pad_id, x)) != DP_OK) goto fail;
    dp_npy_free(&ids);

    memset(out, 0, sizeof *out);
    out->n = n;
    out->c = 1;
    out->h = 1;
    out->w = (int)T;
    out->dim = T;
    out->x = x;
    out->y = y;
    out->n_classes = max_label + 1;
    return DP_OK;

fail:
    dp_npy_free(&ids);
    dp_npy_free(&lab);
    dp_free(x);
    dp_free(y);
    return s;
}

/* ---- validation --------------------------------------------------------------------------- */

dp_status dp_dataset_validate_tokens(const dp_dataset *d, const char *what, int vocab) {
    if (!what) what = "dataset";
    if (vocab < 1 || vocab > DP_TOKENS_MAX_VOCAB)
        return dp_fail(DP_ERR_INVALID, "%s: vocabulary size %d is outside 1..%d", what, vocab,
                       DP_TOKENS_MAX_VOCAB);
    dp_status s = dp_dataset_validate(d, what, 1, 0);
    if (s != DP_OK) return s;
    if (d->c != 1 || d->h != 1 || d->w < 1)
        return dp_fail(DP_ERR_INVALID,
                       "%s: not a token dataset: example shape %d x %d x %d, expected 1 x 1 x T "
                       "(T >= 1)",
                       what, d->c, d->h, d->w);
    if (d->w > DP_TOKENS_MAX_LEN)
        return dp_fail(DP_ERR_RANGE, "%s: sequence length %d is above %d", what, d->w,
                       DP_TOKENS_MAX_LEN);
    /* The content rules below are reported as the loader's are (the rule above the ID_ flags):
     * the dataset and the rule, never the id, its row or position, or how many; every id is
     * read, and which rule is reported (in this order) does not depend on where the bad ids
     * are. */
    size_t T = d->dim;
    int fraction = 0, outside = 0, empty = 0;
    for (size_t i = 0; i < d->n; i++) {
        const float *row = d->x + i * T;
        size_t tokens = 0;
        for (size_t t = 0; t < T; t++) {
            float v = row[t];
            fraction |= v != floorf(v);
            outside |= v < -1.0f || v >= (float)vocab;
            tokens += v >= 0.0f;
        }
        empty |= tokens == 0;
    }
    if (fraction)
        return dp_fail(DP_ERR_FORMAT, "%s: a token id is not an integer; ids must be whole numbers", what);
    if (outside)
        return dp_fail(DP_ERR_RANGE,
                       "%s: a token id is outside -1..%d; ids must lie in 0..V-1 for vocabulary V, or be -1 "
                       "(padding)",
                       what, vocab - 1);
    if (empty)
        return dp_fail(DP_ERR_FORMAT,
                       "%s: a sequence is all padding; every sequence must hold at least one id that is not "
                       "padding",
                       what);
    return DP_OK;
}

/* ---- the synthetic order task ------------------------------------------------------------- */

dp_status dp_text_synthetic(size_t n, int T, int vocab, uint64_t seed, dp_dataset *out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp_text_synthetic: out is required");
    if (n == 0) return dp_fail(DP_ERR_INVALID, "dp_text_synthetic: n (rows) is 0");
    if (T < 4 || T > DP_TOKENS_MAX_LEN)
        return dp_fail(DP_ERR_INVALID,
                       "dp_text_synthetic: sequence length T = %d is outside 4..%d ([CLS], two "
                       "markers and at least one more position)",
                       T, DP_TOKENS_MAX_LEN);
    if (vocab < 4 || vocab > DP_TOKENS_MAX_VOCAB)
        return dp_fail(DP_ERR_INVALID,
                       "dp_text_synthetic: vocabulary size %d is outside 4..%d (ids 0 [CLS], 1 and "
                       "2 markers, 3.. filler)",
                       vocab, DP_TOKENS_MAX_VOCAB);
    if (n > SIZE_MAX / sizeof(float) / (size_t)T)
        return dp_fail(DP_ERR_RANGE, "dp_text_synthetic: %zu rows of %d tokens overflow memory sizes",
                       n, T);
    float *x = dp_alloc(n * (size_t)T * sizeof(float));
    int32_t *y = dp_alloc(n * sizeof(int32_t));
    if (!x || !y) {
        dp_free(x);
        dp_free(y);
        return DP_ERR_NOMEM;
    }
    dp_rng r;
    dp_rng_seed(&r, seed);
    /* exactly balanced labels in a random order (Fisher-Yates from the top down, on int32
     * labels: not dp_rng_shuffle, whose draws differ; the order is pinned by test_tokens) */
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)(i & 1);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)dp_rng_below(&r, (uint64_t)i + 1);
        int32_t t = y[i];
        y[i] = y[j];
        y[j] = t;
    }
    int lmin = (T + 1) / 2 > 3 ? (T + 1) / 2 : 3;
    uint64_t fillers = (uint64_t)vocab - 3;
    for (size_t i = 0; i < n; i++) {
        float *row = x + i * (size_t)T;
        int L = lmin + (int)dp_rng_below(&r, (uint64_t)(T - lmin + 1));
        /* two distinct positions in 1..L-1 */
        int a = 1 + (int)dp_rng_below(&r, (uint64_t)(L - 1));
        int b = 1 + (int)dp_rng_below(&r, (uint64_t)(L - 2));
        if (b >= a) b++;
        int p = a < b ? a : b, q = a < b ? b : a;
        row[0] = 0.0f;
        for (int t = 1; t < L; t++) row[t] = (float)(3 + dp_rng_below(&r, fillers));
        for (int t = L; t < T; t++) row[t] = -1.0f;
        row[p] = y[i] ? 1.0f : 2.0f;
        row[q] = y[i] ? 2.0f : 1.0f;
    }
    memset(out, 0, sizeof *out);
    out->n = n;
    out->c = 1;
    out->h = 1;
    out->w = T;
    out->dim = (size_t)T;
    out->x = x;
    out->y = y;
    out->n_classes = 2;
    return DP_OK;
}
