/* npy.c: reading and writing NumPy .npy files (versions 1.0/2.0/3.0, C order).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for 1.0, uint32 LE for
 * 2.0/3.0), a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (16, 784), }
 * padded with spaces and ended by '\n', then the raw data. */
#define _POSIX_C_SOURCE 200809L
#include "dpsgd/data.h"
#include "io/file.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dpsgd reads and writes little-endian data in place: a little-endian host is required"
#endif

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
enum { NPY_MAX_HEADER = 1 << 20 }; /* far more than any header of <= 8 dims needs */

static const struct {
    const char *descr;
    size_t size;
} npy_types[] = {
    [DP_NPY_F32] = {"<f4", 4}, [DP_NPY_F64] = {"<f8", 8}, [DP_NPY_I64] = {"<i8", 8},
    [DP_NPY_I32] = {"<i4", 4}, [DP_NPY_U8] = {"|u1", 1},
};
_Static_assert(sizeof npy_types / sizeof npy_types[0] == DP_NPY_DTYPE_COUNT,
               "every dp_npy_dtype needs a descr and a size");

size_t dp_npy_dtype_size(dp_npy_dtype dtype) {
    if ((int)dtype < 0 || dtype >= DP_NPY_DTYPE_COUNT) return 0;
    return npy_types[dtype].size;
}

const char *dp_npy_dtype_name(dp_npy_dtype dtype) {
    if ((int)dtype < 0 || dtype >= DP_NPY_DTYPE_COUNT) return "?";
    return npy_types[dtype].descr;
}

/* ---- header parsing ------------------------------------------------------------------- */

typedef struct {
    const char *path;
    const char *p, *end;
} hparser;

static void skip_ws(hparser *h) {
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

static int at(hparser *h, char c) { return h->p < h->end && *h->p == c; }

/* A Python string literal in single or double quotes (no escapes needed for the keys and
 * descrs we accept; a backslash is taken literally). Writes at most cap-1 chars + NUL. */
static dp_status parse_str(hparser *h, char *buf, size_t cap, const char *what) {
    skip_ws(h);
    if (!at(h, '\'') && !at(h, '"'))
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header: expected a quoted string for %s", h->path,
                       what);
    char q = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != q) {
        if (n + 1 >= cap)
            return dp_fail(DP_ERR_FORMAT, "%s: .npy header: %s string too long", h->path, what);
        buf[n++] = *h->p++;
    }
    if (h->p >= h->end)
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header: unterminated string for %s", h->path, what);
    h->p++;
    buf[n] = '\0';
    return DP_OK;
}

static int match_word(hparser *h, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(h->end - h->p) < n || memcmp(h->p, w, n) != 0) return 0;
    h->p += n;
    return 1;
}

/* shape tuple: ( [int {, int} [,]] ) ; ints may carry Python 2's 'L' suffix */
static dp_status parse_shape(hparser *h, int *ndim, int64_t *shape) {
    skip_ws(h);
    if (!at(h, '('))
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header: 'shape' is not a tuple", h->path);
    h->p++;
    int n = 0;
    for (;;) {
        skip_ws(h);
        if (at(h, ')')) {
            h->p++;
            break;
        }
        int neg = 0;
        if (at(h, '-')) {
            neg = 1;
            h->p++;
        }
        if (h->p >= h->end || *h->p < '0' || *h->p > '9')
            return dp_fail(DP_ERR_FORMAT, "%s: .npy header: 'shape' dimension %d is not an integer",
                           h->path, n);
        uint64_t v = 0;
        int overflow = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            unsigned d = (unsigned)(*h->p++ - '0');
            if (v > ((uint64_t)INT64_MAX - d) / 10) overflow = 1;
            else v = v * 10 + d;
        }
        if (at(h, 'L')) h->p++;
        if (neg && (v != 0 || overflow))
            return dp_fail(DP_ERR_FORMAT, "%s: .npy header: 'shape' dimension %d is negative",
                           h->path, n);
        if (overflow)
            return dp_fail(DP_ERR_RANGE, "%s: .npy header: 'shape' dimension %d is too large",
                           h->path, n);
        if (n == DP_NPY_MAX_DIMS)
            return dp_fail(DP_ERR_UNSUPPORTED, "%s: .npy header: 'shape' has more than %d dimensions",
                           h->path, DP_NPY_MAX_DIMS);
        shape[n++] = (int64_t)v;
        skip_ws(h);
        if (at(h, ',')) {
            h->p++;
            continue;
        }
        if (at(h, ')')) {
            h->p++;
            break;
        }
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header: 'shape' tuple is malformed", h->path);
    }
    *ndim = n;
    return DP_OK;
}

static dp_status parse_descr(const char *path, const char *d, dp_npy_dtype *dtype) {
    char order = d[0];
    const char *t = d + 1;
    if (order != '<' && order != '>' && order != '|' && order != '=') {
        order = '|';
        t = d;
    }
    static const struct {
        const char *code;
        dp_npy_dtype dt;
    } codes[] = {{"f4", DP_NPY_F32}, {"f8", DP_NPY_F64}, {"i8", DP_NPY_I64},
                 {"i4", DP_NPY_I32}, {"u1", DP_NPY_U8}};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (strcmp(t, codes[i].code) != 0) continue;
        dp_npy_dtype dt = codes[i].dt;
        if (npy_types[dt].size > 1) {
            if (order == '>')
                return dp_fail(DP_ERR_UNSUPPORTED,
                               "%s: .npy header: 'descr' '%s' is big-endian; only little-endian "
                               "data is supported (save with dtype '<%s')",
                               path, d, t);
            if (order == '|')
                return dp_fail(DP_ERR_FORMAT,
                               "%s: .npy header: 'descr' '%s' has no byte order for a %zu-byte type",
                               path, d, npy_types[dt].size);
        }
        *dtype = dt;
        return DP_OK;
    }
    return dp_fail(DP_ERR_UNSUPPORTED,
                   "%s: .npy header: 'descr' '%s' is not supported (supported: <f4 <f8 <i8 <i4 |u1)",
                   path, d);
}

/* Parses the header dict into dtype/ndim/shape. */
static dp_status parse_header(const char *path, const char *text, size_t len, dp_npy_dtype *dtype,
                              int *ndim, int64_t *shape) {
    hparser h = {path, text, text + len};
    dp_status s;
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    skip_ws(&h);
    if (!at(&h, '{'))
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header is not a dict (does not start with '{')",
                       path);
    h.p++;
    for (;;) {
        skip_ws(&h);
        if (at(&h, '}')) {
            h.p++;
            break;
        }
        char key[32];
        if ((s = parse_str(&h, key, sizeof key, "a key")) != DP_OK) return s;
        skip_ws(&h);
        if (!at(&h, ':'))
            return dp_fail(DP_ERR_FORMAT, "%s: .npy header: expected ':' after key '%s'", path, key);
        h.p++;
        skip_ws(&h);
        if (strcmp(key, "descr") == 0) {
            if (have_descr++)
                return dp_fail(DP_ERR_FORMAT, "%s: .npy header: duplicate key 'descr'", path);
            if (at(&h, '['))
                return dp_fail(DP_ERR_UNSUPPORTED,
                               "%s: .npy header: 'descr' is a structured dtype; only plain numeric "
                               "arrays are supported",
                               path);
            char d[32];
            if ((s = parse_str(&h, d, sizeof d, "'descr'")) != DP_OK) return s;
            if ((s = parse_descr(path, d, dtype)) != DP_OK) return s;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (have_fortran++)
                return dp_fail(DP_ERR_FORMAT, "%s: .npy header: duplicate key 'fortran_order'", path);
            if (match_word(&h, "True"))
                return dp_fail(DP_ERR_UNSUPPORTED,
                               "%s: .npy header: 'fortran_order' is True; only C-order arrays are "
                               "supported (save np.ascontiguousarray(a))",
                               path);
            if (!match_word(&h, "False"))
                return dp_fail(DP_ERR_FORMAT,
                               "%s: .npy header: 'fortran_order' is not True or False", path);
        } else if (strcmp(key, "shape") == 0) {
            if (have_shape++)
                return dp_fail(DP_ERR_FORMAT, "%s: .npy header: duplicate key 'shape'", path);
            if ((s = parse_shape(&h, ndim, shape)) != DP_OK) return s;
        } else {
            return dp_fail(DP_ERR_FORMAT, "%s: .npy header: unexpected key '%s'", path, key);
        }
        skip_ws(&h);
        if (at(&h, ',')) {
            h.p++;
            continue;
        }
        if (at(&h, '}')) {
            h.p++;
            break;
        }
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header: expected ',' or '}' after key '%s'", path,
                       key);
    }
    skip_ws(&h);
    if (h.p != h.end)
        return dp_fail(DP_ERR_FORMAT, "%s: .npy header: unexpected text after the dict", path);
    if (!have_descr) return dp_fail(DP_ERR_FORMAT, "%s: .npy header has no 'descr'", path);
    if (!have_fortran) return dp_fail(DP_ERR_FORMAT, "%s: .npy header has no 'fortran_order'", path);
    if (!have_shape) return dp_fail(DP_ERR_FORMAT, "%s: .npy header has no 'shape'", path);
    return DP_OK;
}

/* count = product of shape, and count * elem in bytes, with overflow checks */
static dp_status shape_size(const char *path, int ndim, const int64_t *shape, size_t elem,
                            size_t *count, size_t *bytes) {
    size_t c = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return dp_fail(DP_ERR_FORMAT, "%s: shape dimension %d is negative (%" PRId64 ")", path,
                           i, shape[i]);
        if ((uint64_t)shape[i] > SIZE_MAX)
            return dp_fail(DP_ERR_RANGE, "%s: shape dimension %d (%" PRId64 ") is too large", path,
                           i, shape[i]);
        size_t d = (size_t)shape[i];
        if (d && c > SIZE_MAX / d)
            return dp_fail(DP_ERR_RANGE, "%s: shape has too many elements (size overflows)", path);
        c *= d;
    }
    if (elem && c > SIZE_MAX / elem)
        return dp_fail(DP_ERR_RANGE, "%s: shape has too many elements (size overflows)", path);
    *count = c;
    *bytes = c * elem;
    return DP_OK;
}

/* ---- load ------------------------------------------------------------------------------ */

dp_status dp_npy_load(const char *path, dp_npy *out) {
    if (!path || !out) return dp_fail(DP_ERR_INVALID, "dp_npy_load: path and out are required");
    dp_status s = DP_OK;
    char *hdr = NULL;
    void *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return dp_fail(DP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));

    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f);
    if (got < 6 || memcmp(pre, npy_magic, 6) != 0) {
        if (ferror(f)) s = dp_fail(DP_ERR_IO, "%s: read error: %s", path, strerror(errno));
        else s = dp_fail(DP_ERR_FORMAT, "%s: not a .npy file (magic \\x93NUMPY missing)", path);
        goto fail;
    }
    if (got < 10) {
        s = dp_fail(DP_ERR_FORMAT, "%s: truncated .npy header (file is %zu bytes)", path, got);
        goto fail;
    }
    int major = pre[6], minor = pre[7];
    size_t hlen, prefix;
    if (major == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        prefix = 10;
    } else if (major == 2 || major == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            s = dp_fail(DP_ERR_FORMAT, "%s: truncated .npy header (no header length)", path);
            goto fail;
        }
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        prefix = 12;
    } else {
        s = dp_fail(DP_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported (1.0-3.0)",
                    path, major, minor);
        goto fail;
    }
    if (minor != 0) {
        s = dp_fail(DP_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported (1.0-3.0)",
                    path, major, minor);
        goto fail;
    }
    if (hlen > NPY_MAX_HEADER) {
        s = dp_fail(DP_ERR_FORMAT, "%s: .npy header length %zu is implausibly large", path, hlen);
        goto fail;
    }
    hdr = dp_alloc(hlen + 1);
    if (!hdr) {
        s = DP_ERR_NOMEM;
        goto fail;
    }
    got = fread(hdr, 1, hlen, f);
    if (got != hlen) {
        if (ferror(f)) s = dp_fail(DP_ERR_IO, "%s: read error: %s", path, strerror(errno));
        else
            s = dp_fail(DP_ERR_FORMAT,
                        "%s: truncated .npy header: header length says %zu bytes, file holds %zu",
                        path, hlen, got);
        goto fail;
    }
    hdr[hlen] = '\0';
    if (memchr(hdr, '\0', hlen)) {
        s = dp_fail(DP_ERR_FORMAT, "%s: .npy header contains a NUL byte", path);
        goto fail;
    }

    dp_npy a;
    memset(&a, 0, sizeof a);
    if ((s = parse_header(path, hdr, hlen, &a.dtype, &a.ndim, a.shape)) != DP_OK) goto fail;
    size_t bytes = 0;
    if ((s = shape_size(path, a.ndim, a.shape, npy_types[a.dtype].size, &a.count, &bytes)) != DP_OK)
        goto fail;

    /* Check the size before allocating, so a header declaring a huge array fails cleanly. */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) {
        uint64_t have = (uint64_t)st.st_size > prefix + hlen ? (uint64_t)st.st_size - prefix - hlen : 0;
        if (have < bytes) {
            s = dp_fail(DP_ERR_FORMAT,
                        "%s: truncated data: header declares %zu elements of %s (%zu bytes), file "
                        "holds %" PRIu64 " bytes of data",
                        path, a.count, npy_types[a.dtype].descr, bytes, have);
            goto fail;
        }
        if (have > bytes) {
            s = dp_fail(DP_ERR_FORMAT,
                        "%s: trailing data: header declares %zu bytes of data, file holds %" PRIu64,
                        path, bytes, have);
            goto fail;
        }
    }
    data = dp_alloc(bytes);
    if (!data) {
        s = DP_ERR_NOMEM;
        goto fail;
    }
    got = fread(data, 1, bytes, f);
    if (got != bytes) {
        if (ferror(f)) s = dp_fail(DP_ERR_IO, "%s: read error: %s", path, strerror(errno));
        else
            s = dp_fail(DP_ERR_FORMAT,
                        "%s: truncated data: header declares %zu bytes of data, file holds %zu",
                        path, bytes, got);
        goto fail;
    }
    if (fgetc(f) != EOF) {
        s = dp_fail(DP_ERR_FORMAT, "%s: trailing data after the %zu bytes the header declares", path,
                    bytes);
        goto fail;
    }
    fclose(f);
    dp_free(hdr);
    a.data = data;
    *out = a;
    return DP_OK;

fail:
    if (f) fclose(f);
    dp_free(hdr);
    dp_free(data);
    return s;
}

void dp_npy_free(dp_npy *a) {
    if (!a) return;
    dp_free(a->data);
    memset(a, 0, sizeof *a);
}

dp_status dp_npy_load_f32(const char *path, float **out, int64_t *shape, int *ndim, size_t *count) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp_npy_load_f32: out is required");
    dp_npy a;
    dp_status s = dp_npy_load(path, &a);
    if (s != DP_OK) return s;
    float *f;
    if (a.dtype == DP_NPY_F32) {
        f = a.data;
        a.data = NULL;
    } else {
        f = dp_alloc(a.count * sizeof(float) + (a.count == 0));
        if (!f) {
            dp_npy_free(&a);
            return DP_ERR_NOMEM;
        }
        size_t n = a.count;
        switch (a.dtype) {
        case DP_NPY_F64:
            for (size_t i = 0; i < n; i++) f[i] = (float)((const double *)a.data)[i];
            break;
        case DP_NPY_I64:
            for (size_t i = 0; i < n; i++) f[i] = (float)((const int64_t *)a.data)[i];
            break;
        case DP_NPY_I32:
            for (size_t i = 0; i < n; i++) f[i] = (float)((const int32_t *)a.data)[i];
            break;
        case DP_NPY_U8:
            for (size_t i = 0; i < n; i++) f[i] = (float)((const uint8_t *)a.data)[i];
            break;
        default:
            DP_ASSERT(0 && "unhandled dtype");
        }
    }
    if (shape)
        for (int i = 0; i < DP_NPY_MAX_DIMS; i++) shape[i] = i < a.ndim ? a.shape[i] : 0;
    if (ndim) *ndim = a.ndim;
    if (count) *count = a.count;
    *out = f;
    dp_npy_free(&a);
    return DP_OK;
}

dp_status dp_npy_labels(const dp_npy *a, const char *path, int32_t *y, int32_t *max_label) {
    if (a->dtype == DP_NPY_F32 || a->dtype == DP_NPY_F64)
        return dp_fail(DP_ERR_UNSUPPORTED,
                       "%s: labels have dtype %s; integer labels are required (<i4, <i8 or |u1: save "
                       "labels.astype(np.int64))",
                       path, dp_npy_dtype_name(a->dtype));
    int32_t mx = 0;
    for (size_t i = 0; i < a->count; i++) {
        int64_t v;
        switch (a->dtype) {
        case DP_NPY_I32: v = ((const int32_t *)a->data)[i]; break;
        case DP_NPY_I64: v = ((const int64_t *)a->data)[i]; break;
        case DP_NPY_U8: v = ((const uint8_t *)a->data)[i]; break;
        default:
            return dp_fail(DP_ERR_UNSUPPORTED, "%s: labels of dtype %s are not supported", path,
                           dp_npy_dtype_name(a->dtype));
        }
        if (v < 0 || v > INT32_MAX - 1) /* the file, never the value or its row: labels are private */
            return dp_fail(DP_ERR_RANGE, "%s: a label is outside 0..%d, the labels supported", path, INT32_MAX - 1);
        y[i] = (int32_t)v;
        if (y[i] > mx) mx = y[i];
    }
    if (max_label) *max_label = mx;
    return DP_OK;
}

/* ---- save ------------------------------------------------------------------------------ */

dp_status dp_npy_save(const char *path, dp_npy_dtype dtype, int ndim, const int64_t *shape,
                      const void *data) {
    if (!path) return dp_fail(DP_ERR_INVALID, "dp_npy_save: path is required");
    if ((int)dtype < 0 || dtype >= DP_NPY_DTYPE_COUNT)
        return dp_fail(DP_ERR_INVALID, "%s: cannot save: invalid dtype %d", path, (int)dtype);
    if (ndim < 0 || ndim > DP_NPY_MAX_DIMS)
        return dp_fail(DP_ERR_INVALID, "%s: cannot save: ndim %d is outside 0..%d", path, ndim,
                       DP_NPY_MAX_DIMS);
    if (ndim > 0 && !shape)
        return dp_fail(DP_ERR_INVALID, "%s: cannot save: shape is NULL", path);
    size_t count = 0, bytes = 0;
    dp_status s = shape_size(path, ndim, shape, npy_types[dtype].size, &count, &bytes);
    if (s != DP_OK) return s == DP_ERR_FORMAT ? DP_ERR_INVALID : s;
    if (bytes > 0 && !data) return dp_fail(DP_ERR_INVALID, "%s: cannot save: data is NULL", path);

    /* header: dict, padded with spaces so that magic+len+dict+'\n' is a multiple of 64 */
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_types[dtype].descr);
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%" PRId64, i ? ", " : "", shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    DP_ASSERT(n > 0 && (size_t)n < sizeof dict - 80);
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    unsigned char head[640];
    DP_ASSERT(padded <= sizeof head);
    size_t hlen = padded - 10;
    memcpy(head, npy_magic, 6);
    head[6] = 1;
    head[7] = 0;
    head[8] = (unsigned char)(hlen & 0xff);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + 10, dict, (size_t)n);
    memset(head + 10 + n, ' ', padded - 10 - (size_t)n - 1);
    head[padded - 1] = '\n';

    const dp__file_part parts[2] = {{head, padded}, {data, bytes}};
    const dp__write_opts opts = {".tmp.", 0644, NULL};
    return dp__write_file_atomic_parts(path, parts, 2, &opts);
}
