/* onnx_tensor.c: the ONNX file layer's tensors (src/io/onnx_impl.h): raw_data, the typed
 * fields and external data converted to float or int64, every size checked. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "io/onnx_impl.h"

dp_status dp__onnx_failf(dp_status st, const ctx *c, const char *where, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dp_fail(st, "%s: %s: %s", c->label, where, msg);
}

dp_status dp__onnx_oom(const ctx *c, const char *where) {
    return dp_fail(DP_ERR_NOMEM, "%s: %s: out of memory (%s)", c->label, where, dp_last_error());
}

/* "[3, 4, 5]" into buf */
const char *dp__onnx_dims_text(char *buf, size_t size, size_t n, const int64_t *dims) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, size - k, "[");
    for (size_t i = 0; i < n && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
    return buf;
}

static uint64_t le(const uint8_t *p, size_t w) {
    uint64_t x = 0;
    for (size_t i = 0; i < w; i++) x |= (uint64_t)p[i] << (8 * i);
    return x;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | (man << 13); /* inf, nan */
    else if (exp != 0)
        bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0)
        bits = sign;
    else { /* subnormal: man * 2^-24 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static float bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static float double_to_float(double x) {
    if (x > FLT_MAX) return INFINITY;
    if (x < -FLT_MAX) return -INFINITY;
    return (float)x; /* NaN stays NaN */
}

/* decodes count little-endian values of type t from raw into out (f or i); 0, or -1 for a
 * UINT64 above INT64_MAX (*bad: its index) */
static int decode_raw(int t, const uint8_t *raw, size_t count, float *f, int64_t *iv, size_t *bad) {
    size_t w = dp__onnx_raw_size(t);
    for (size_t k = 0; k < count; k++) {
        const uint8_t *p = raw + k * w;
        uint64_t u = le(p, w);
        switch (t) {
        case DP__ONNX_FLOAT:
            f[k] = bits_to_float((uint32_t)u);
            break;
        case DP__ONNX_DOUBLE: {
            double d;
            memcpy(&d, &u, 8);
            f[k] = double_to_float(d);
            break;
        }
        case DP__ONNX_FLOAT16:
            f[k] = half_to_float((uint16_t)u);
            break;
        case DP__ONNX_BFLOAT16:
            f[k] = bits_to_float((uint32_t)u << 16);
            break;
        case DP__ONNX_UINT8:
        case DP__ONNX_UINT16:
        case DP__ONNX_UINT32:
            iv[k] = (int64_t)u;
            break;
        case DP__ONNX_BOOL:
            iv[k] = u != 0;
            break;
        case DP__ONNX_INT8:
            iv[k] = (int8_t)(uint8_t)u;
            break;
        case DP__ONNX_INT16:
            iv[k] = (int16_t)(uint16_t)u;
            break;
        case DP__ONNX_INT32:
            iv[k] = (int32_t)(uint32_t)u;
            break;
        case DP__ONNX_INT64:
            iv[k] = (int64_t)u;
            break;
        case DP__ONNX_UINT64:
            if (u > (uint64_t)INT64_MAX) {
                *bad = k;
                return -1;
            }
            iv[k] = (int64_t)u;
            break;
        default:
            DP_ASSERT(0);
        }
    }
    return 0;
}

/* the typed field a type's values are stored in, by ONNX's rules */
enum { TF_NONE, TF_FLOAT, TF_INT32, TF_STRING, TF_INT64, TF_DOUBLE, TF_UINT64 };
static const char *const tf_names[] = {"-",          "float_data",  "int32_data", "string_data",
                                       "int64_data", "double_data", "uint64_data"};
static int typed_field(int t) {
    switch (t) {
    case DP__ONNX_FLOAT:
        return TF_FLOAT;
    case DP__ONNX_INT8:
    case DP__ONNX_UINT8:
    case DP__ONNX_INT16:
    case DP__ONNX_UINT16:
    case DP__ONNX_INT32:
    case DP__ONNX_BOOL:
    case DP__ONNX_FLOAT16:
    case DP__ONNX_BFLOAT16:
        return TF_INT32;
    case DP__ONNX_STRING:
        return TF_STRING;
    case DP__ONNX_INT64:
        return TF_INT64;
    case DP__ONNX_DOUBLE:
        return TF_DOUBLE;
    case DP__ONNX_UINT32:
    case DP__ONNX_UINT64:
        return TF_UINT64;
    default:
        return TF_NONE;
    }
}
static size_t typed_count(const Onnx__TensorProto *t, int tf) {
    switch (tf) {
    case TF_FLOAT:
        return t->n_float_data;
    case TF_INT32:
        return t->n_int32_data;
    case TF_STRING:
        return t->n_string_data;
    case TF_INT64:
        return t->n_int64_data;
    case TF_DOUBLE:
        return t->n_double_data;
    case TF_UINT64:
        return t->n_uint64_data;
    default:
        return 0;
    }
}

/* strict non-negative decimal */
static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s) return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The external data of t: checks the location and reads exactly `bytes` bytes (malloc'd into
 * *out). base_dir NULL refuses. Used by the loader and by the writer (which folds it in). */
dp_status dp__onnx_read_external(const ctx *c, const char *where, const Onnx__TensorProto *t, size_t bytes,
                               unsigned char **out) {
    *out = NULL;
    if (!c->base_dir)
        return FAILF(DP_ERR_UNSUPPORTED, c, where,
                     "external data (data_location EXTERNAL) is read only from a model file on disk");
    const char *loc = NULL, *soff = NULL, *slen = NULL;
    for (size_t k = 0; k < t->n_external_data; k++) {
        const Onnx__StringStringEntryProto *kv = t->external_data[k];
        const char *key = kv->key ? kv->key : "";
        const char **slot = !strcmp(key, "location") ? &loc
                            : !strcmp(key, "offset") ? &soff
                            : !strcmp(key, "length") ? &slen
                                                     : NULL;
        if (!slot) continue; /* "checksum" and others: not used */
        if (*slot) return FAILF(DP_ERR_FORMAT, c, where, "external_data gives '%s' twice", key);
        *slot = kv->value ? kv->value : "";
    }
    if (!loc || !*loc) return FAILF(DP_ERR_FORMAT, c, where, "external data without a 'location'");
    if (loc[0] == '/')
        return FAILF(DP_ERR_FORMAT, c, where,
                     "external data location '%s' is an absolute path (it must be relative to the "
                     "model's directory)",
                     loc);
    for (const char *p = loc; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return FAILF(DP_ERR_FORMAT, c, where,
                         "external data location '%s' has a '..' component (it must stay inside the "
                         "model's directory)",
                         loc);
        p += n;
        if (*p == '/') p++;
    }
    uint64_t off = 0, len = 0;
    if (soff && parse_u64(soff, &off) != 0)
        return FAILF(DP_ERR_FORMAT, c, where, "external data offset '%s' is not a non-negative integer", soff);
    if (slen && parse_u64(slen, &len) != 0)
        return FAILF(DP_ERR_FORMAT, c, where, "external data length '%s' is not a non-negative integer", slen);

    size_t bl = strlen(c->base_dir), ll = strlen(loc);
    char *full = malloc(bl + ll + 2);
    if (!full) return dp__onnx_oom(c, where);
    memcpy(full, c->base_dir, bl);
    full[bl] = '/';
    memcpy(full + bl + 1, loc, ll + 1);
    /* through symbolic links, the file must still be inside the directory */
    char *rdir = realpath(c->base_dir, NULL), *rfile = realpath(full, NULL);
    dp_status st = DP_OK;
    if (!rdir)
        st = FAILF(DP_ERR_IO, c, where, "cannot resolve the model's directory %s: %s", c->base_dir, strerror(errno));
    else if (!rfile)
        st = FAILF(DP_ERR_IO, c, where, "external data file %s: %s", full, strerror(errno));
    else {
        size_t rl = strlen(rdir);
        int inside = strncmp(rfile, rdir, rl) == 0 && (rfile[rl] == '/' || (rl == 1 && rdir[0] == '/'));
        if (!inside)
            st =
                FAILF(DP_ERR_FORMAT, c, where,
                      "external data location '%s' resolves to %s, outside the model's directory %s", loc, rfile, rdir);
    }
    free(rdir);
    free(rfile);
    if (st != DP_OK) {
        free(full);
        return st;
    }
    uint64_t fsize;
    int fd = dp__open_regular(full, &fsize);
    if (fd < 0) {
        if (fd == -1)
            st = FAILF(DP_ERR_IO, c, where, "cannot open external data file %s: %s", full, strerror(errno));
        else
            st = FAILF(DP_ERR_IO, c, where, "external data file %s is not a regular file", full);
        free(full);
        return st;
    }
    if (off > fsize) {
        st = FAILF(DP_ERR_FORMAT, c, where,
                   "external data offset %" PRIu64 " is past the end of %s (%" PRIu64 " bytes)", off, full, fsize);
        goto done;
    }
    if (!slen) len = fsize - off;
    if (len > fsize - off) {
        st = FAILF(DP_ERR_FORMAT, c, where,
                   "external data offset %" PRIu64 " + length %" PRIu64 " runs past the end of %s (%" PRIu64
                   " bytes: truncated?)",
                   off, len, full, fsize);
        goto done;
    }
    if (len != (uint64_t)bytes) {
        st = FAILF(DP_ERR_FORMAT, c, where, "external data has %" PRIu64 " bytes (in %s), the dims need %zu", len, full,
                   bytes);
        goto done;
    }
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (!buf) {
        st = dp__onnx_oom(c, where);
        goto done;
    }
    if (dp__pread_full(fd, buf, bytes, off) != bytes) {
        free(buf);
        st = FAILF(DP_ERR_IO, c, where, "read of external data file %s failed", full);
        goto done;
    }
    *out = buf;
done:
    close(fd);
    free(full);
    return st;
}

/* the element count of dims, checked (each >= 0, product and bytes in range) */
dp_status dp__onnx_dims_count(const ctx *c, const char *where, size_t ndim, const int64_t *dims, size_t *count) {
    if (ndim > DP__ONNX_MAX_DIMS)
        return FAILF(DP_ERR_UNSUPPORTED, c, where, "%zu dims, more than %d", ndim, DP__ONNX_MAX_DIMS);
    uint64_t n = 1;
    int zero = 0;
    for (size_t d = 0; d < ndim; d++) {
        if (dims[d] < 0) return FAILF(DP_ERR_FORMAT, c, where, "dim %zu is negative (%" PRId64 ")", d, dims[d]);
        if (dims[d] == 0) zero = 1;
    }
    if (zero)
        n = 0;
    else
        for (size_t d = 0; d < ndim; d++)
            if (__builtin_mul_overflow(n, (uint64_t)dims[d], &n) || n > (uint64_t)(SIZE_MAX / 16)) {
                char buf[200];
                return FAILF(DP_ERR_RANGE, c, where, "dims %s overflow (the element count is too large)",
                             dp__onnx_dims_text(buf, sizeof buf, ndim, dims));
            }
    *count = (size_t)n;
    return DP_OK;
}

dp_status dp__onnx_conv_tensor(const ctx *c, const char *where, const Onnx__TensorProto *t, dp__onnx_tensor *o) {
    memset(o, 0, sizeof *o);
    arena *a = c->ar;
    char dbuf[200];
    if (!(o->name = dp__onnx_ar_strdup(a, t->name))) return dp__onnx_oom(c, where);
    if (t->segment)
        return FAILF(DP_ERR_UNSUPPORTED, c, where, "segmented tensors (the 'segment' field) are not supported");
    int et = t->has_data_type ? t->data_type : 0;
    o->elem_type = et;
    if (et == DP__ONNX_UNDEFINED) return FAILF(DP_ERR_FORMAT, c, where, "no data_type (UNDEFINED)");
    int cls = dp__onnx_type_class(et);
    if (cls == 0)
        return FAILF(DP_ERR_UNSUPPORTED, c, where,
                     "unsupported elem type %s (read: FLOAT, DOUBLE, FLOAT16, BFLOAT16, the integer types, "
                     "BOOL, STRING)",
                     dp__onnx_type_name(et));
    size_t count;
    dp_status st = dp__onnx_dims_count(c, where, t->n_dims, t->dims, &count);
    if (st != DP_OK) return st;
    o->ndim = (int)t->n_dims;
    o->count = count;
    int64_t *dims = dp__onnx_ar_array(a, t->n_dims, sizeof *dims);
    if (!dims) return dp__onnx_oom(c, where);
    if (t->n_dims) memcpy(dims, t->dims, t->n_dims * sizeof *dims);
    o->dims = dims;
    dp__onnx_dims_text(dbuf, sizeof dbuf, t->n_dims, t->dims);

    /* where the values are: exactly one source */
    int tf = typed_field(et);
    int external = t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    if (t->has_data_location && t->data_location != ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL &&
        t->data_location != ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT)
        return FAILF(DP_ERR_FORMAT, c, where, "unknown data_location %d", (int)t->data_location);
    static const int all_tf[] = {TF_FLOAT, TF_INT32, TF_STRING, TF_INT64, TF_DOUBLE, TF_UINT64};
    for (size_t k = 0; k < sizeof all_tf / sizeof all_tf[0]; k++)
        if (all_tf[k] != tf && typed_count(t, all_tf[k]))
            return FAILF(DP_ERR_FORMAT, c, where, "%s given for a %s tensor (its values go in %s or raw_data)",
                         tf_names[all_tf[k]], dp__onnx_type_name(et), tf_names[tf]);
    size_t ntyped = typed_count(t, tf);
    int has_raw = t->has_raw_data;
    if (external && (has_raw || ntyped))
        return FAILF(DP_ERR_FORMAT, c, where, "external data and %s both given", has_raw ? "raw_data" : tf_names[tf]);
    if (!external && t->n_external_data)
        return FAILF(DP_ERR_FORMAT, c, where, "external_data entries, but data_location is not EXTERNAL");
    if (has_raw && ntyped) return FAILF(DP_ERR_FORMAT, c, where, "both raw_data and %s given", tf_names[tf]);
    o->external = external;

    size_t esz = dp__onnx_raw_size(et);
    if (cls == 3) { /* STRING */
        if (has_raw || external)
            return FAILF(DP_ERR_FORMAT, c, where, "a STRING tensor's values must be in string_data, not %s",
                         has_raw ? "raw_data" : "external data");
        if (ntyped != count)
            return FAILF(DP_ERR_FORMAT, c, where, "string_data has %zu values, dims %s need %zu", ntyped, dbuf, count);
        char **s = dp__onnx_ar_array(a, count, sizeof *s);
        size_t *sl = dp__onnx_ar_array(a, count, sizeof *sl);
        if (!s || !sl) return dp__onnx_oom(c, where);
        for (size_t k = 0; k < count; k++) {
            if (!(s[k] = dp__onnx_ar_strndup(a, t->string_data[k].data, t->string_data[k].len))) return dp__onnx_oom(c, where);
            sl[k] = t->string_data[k].len;
        }
        o->s = (const char *const *)s;
        o->s_len = sl;
        return DP_OK;
    }
    size_t bytes = count * esz; /* count <= SIZE_MAX / 16 */
    /* sizes are checked before anything of the tensor's size is allocated */
    const uint8_t *raw = NULL;
    unsigned char *ext = NULL;
    if (has_raw) {
        if (t->raw_data.len != bytes)
            return FAILF(DP_ERR_FORMAT, c, where, "raw_data has %zu bytes, dims %s of %s need %zu", t->raw_data.len,
                         dbuf, dp__onnx_type_name(et), bytes);
        raw = t->raw_data.data;
    } else if (external) {
        st = dp__onnx_read_external(c, where, t, bytes, &ext); /* checks the length first */
        if (st != DP_OK) return st;
        raw = ext;
    } else if (ntyped != count) {
        if (ntyped == 0)
            return FAILF(DP_ERR_FORMAT, c, where,
                         "no data: dims %s need %zu values and neither raw_data, %s nor external data is given", dbuf,
                         count, tf_names[tf]);
        return FAILF(DP_ERR_FORMAT, c, where, "%s has %zu values, dims %s need %zu", tf_names[tf], ntyped, dbuf, count);
    }
    float *f = NULL;
    int64_t *iv = NULL;
    if (cls == 1)
        f = dp__onnx_ar_array(a, count, sizeof *f);
    else
        iv = dp__onnx_ar_array(a, count, sizeof *iv);
    if (!f && !iv) {
        free(ext);
        return dp__onnx_oom(c, where);
    }
    o->f = f;
    o->i = iv;
    if (raw) {
        size_t bad = 0;
        int r = decode_raw(et, raw, count, f, iv, &bad);
        free(ext);
        if (r != 0)
            return FAILF(DP_ERR_RANGE, c, where, "UINT64 value at index %zu is above INT64_MAX (not supported)", bad);
        return DP_OK;
    }
    for (size_t k = 0; k < count; k++) {
        switch (tf) {
        case TF_FLOAT:
            f[k] = t->float_data[k];
            break;
        case TF_DOUBLE:
            f[k] = double_to_float(t->double_data[k]);
            break;
        case TF_INT64:
            iv[k] = t->int64_data[k];
            break;
        case TF_UINT64: {
            uint64_t u = t->uint64_data[k];
            uint64_t max = et == DP__ONNX_UINT32 ? UINT32_MAX : (uint64_t)INT64_MAX;
            if (u > max)
                return FAILF(DP_ERR_RANGE, c, where, "uint64_data value at index %zu is out of range for %s%s", k,
                             dp__onnx_type_name(et), et == DP__ONNX_UINT64 ? " (above INT64_MAX: not supported)" : "");
            iv[k] = (int64_t)u;
            break;
        }
        case TF_INT32: {
            int32_t v = t->int32_data[k];
            int64_t lo = INT32_MIN, hi = INT32_MAX;
            switch (et) {
            case DP__ONNX_INT8:
                lo = INT8_MIN, hi = INT8_MAX;
                break;
            case DP__ONNX_UINT8:
                lo = 0, hi = UINT8_MAX;
                break;
            case DP__ONNX_INT16:
                lo = INT16_MIN, hi = INT16_MAX;
                break;
            case DP__ONNX_UINT16:
            case DP__ONNX_FLOAT16:
            case DP__ONNX_BFLOAT16:
                lo = 0, hi = UINT16_MAX;
                break;
            case DP__ONNX_BOOL:
                lo = 0, hi = 1;
                break;
            default:
                break;
            }
            if (v < lo || v > hi)
                return FAILF(DP_ERR_RANGE, c, where, "int32_data value at index %zu is out of range for %s", k,
                             dp__onnx_type_name(et));
            if (et == DP__ONNX_FLOAT16)
                f[k] = half_to_float((uint16_t)v);
            else if (et == DP__ONNX_BFLOAT16)
                f[k] = bits_to_float((uint32_t)v << 16);
            else
                iv[k] = v;
            break;
        }
        default:
            DP_ASSERT(0);
        }
    }
    return DP_OK;
}

