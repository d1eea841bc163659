/* onnx.c: the ONNX file layer (src/io/onnx.h). protobuf-c decodes the file with the code
 * generated at build time from Debian's onnx.proto; this file checks the wire format's nesting
 * depth first (protobuf-c recurses once per nested message and has no limit of its own: a 40 KB
 * file of nested types overflows an 8 MB stack), bounds the memory protobuf-c may take,
 * converts the message into the plain-C graph of onnx.h (checking every size with overflow-safe
 * arithmetic), reads external data next to the model, and writes a model back with some
 * initializers replaced. docs/onnx.md "Reading the file". */
#define _XOPEN_SOURCE 700 /* realpath */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h> /* the library's own symbols keep their default visibility */
/* the generated code is compiled with -fvisibility=hidden (CMakeLists.txt): declare it so */
#pragma GCC visibility push(hidden)
#include "onnx.pb-c.h"
#pragma GCC visibility pop

#include "io/file.h"
#include "io/onnx.h"

/* ---- element types ----------------------------------------------------------------------- */

static const char *const type_names[] = {"UNDEFINED", "FLOAT",  "UINT8",     "INT8",       "UINT16",  "INT16",
                                         "INT32",     "INT64",  "STRING",    "BOOL",       "FLOAT16", "DOUBLE",
                                         "UINT32",    "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"};
enum { N_TYPE_NAMES = (int)(sizeof type_names / sizeof type_names[0]) };

const char *dp__onnx_type_name(int t) {
    static _Thread_local char buf[32];
    if (t >= 0 && t < N_TYPE_NAMES) return type_names[t];
    snprintf(buf, sizeof buf, "type %d", t);
    return buf;
}

int dp__onnx_type_class(int t) {
    switch (t) {
    case DP__ONNX_FLOAT:
    case DP__ONNX_DOUBLE:
    case DP__ONNX_FLOAT16:
    case DP__ONNX_BFLOAT16:
        return 1;
    case DP__ONNX_UINT8:
    case DP__ONNX_INT8:
    case DP__ONNX_UINT16:
    case DP__ONNX_INT16:
    case DP__ONNX_INT32:
    case DP__ONNX_INT64:
    case DP__ONNX_BOOL:
    case DP__ONNX_UINT32:
    case DP__ONNX_UINT64:
        return 2;
    case DP__ONNX_STRING:
        return 3;
    default:
        return 0;
    }
}

/* bytes per element in raw_data (0: cannot be raw) */
static size_t raw_size(int t) {
    switch (t) {
    case DP__ONNX_UINT8:
    case DP__ONNX_INT8:
    case DP__ONNX_BOOL:
        return 1;
    case DP__ONNX_UINT16:
    case DP__ONNX_INT16:
    case DP__ONNX_FLOAT16:
    case DP__ONNX_BFLOAT16:
        return 2;
    case DP__ONNX_FLOAT:
    case DP__ONNX_INT32:
    case DP__ONNX_UINT32:
        return 4;
    case DP__ONNX_INT64:
    case DP__ONNX_DOUBLE:
    case DP__ONNX_UINT64:
        return 8;
    default:
        return 0;
    }
}

static const char *const attr_type_names[] = {
    "UNDEFINED", "FLOAT",   "INT",    "STRING",        "TENSOR",         "GRAPH",      "FLOATS",     "INTS",
    "STRINGS",   "TENSORS", "GRAPHS", "SPARSE_TENSOR", "SPARSE_TENSORS", "TYPE_PROTO", "TYPE_PROTOS"};
enum { N_ATTR_TYPE_NAMES = (int)(sizeof attr_type_names / sizeof attr_type_names[0]) };

const char *dp__onnx_attr_type_name(int t) {
    static _Thread_local char buf[32];
    if (t >= 0 && t < N_ATTR_TYPE_NAMES) return attr_type_names[t];
    snprintf(buf, sizeof buf, "type %d", t);
    return buf;
}

/* ---- the model's memory: an arena of dp_alloc blocks ------------------------------------- */

typedef struct blk {
    struct blk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} blk;
typedef struct {
    blk *cur;   /* the block small allocations are cut from */
    blk *large; /* blocks of one big allocation each */
} arena;

enum { ARENA_CHUNK = 64 * 1024, ARENA_LARGE = 8 * 1024 };

static blk *blk_new(size_t cap) {
    if (cap > SIZE_MAX - sizeof(blk)) return NULL;
    blk *b = dp_alloc(sizeof(blk) + cap);
    if (b) {
        b->next = NULL;
        b->used = 0;
        b->cap = cap;
    }
    return b;
}

/* n bytes aligned to 16; NULL when out of memory (the message is set) */
static void *ar_alloc(arena *a, size_t n) {
    if (n == 0) n = 1;
    if (n > ARENA_LARGE) {
        blk *b = blk_new(n);
        if (!b) return NULL;
        b->next = a->large;
        a->large = b;
        b->used = n;
        return b->data;
    }
    size_t need = (n + 15) & ~(size_t)15;
    if (!a->cur || a->cur->cap - a->cur->used < need) {
        blk *b = blk_new(ARENA_CHUNK);
        if (!b) return NULL;
        b->next = a->cur;
        a->cur = b;
    }
    void *p = a->cur->data + a->cur->used;
    a->cur->used += need;
    return p;
}

static void *ar_array(arena *a, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    return ar_alloc(a, count * size);
}

static void ar_free(arena *a) {
    for (blk *lists[2] = {a->cur, a->large}, **l = lists; l < lists + 2; l++) {
        for (blk *b = *l; b;) {
            blk *next = b->next;
            dp_free(b);
            b = next;
        }
    }
    a->cur = a->large = NULL;
}

/* a NUL-terminated copy of n bytes */
static char *ar_strndup(arena *a, const void *s, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *p = ar_alloc(a, n + 1);
    if (p) {
        if (n) memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}
static char *ar_strdup(arena *a, const char *s) { return ar_strndup(a, s ? s : "", s ? strlen(s) : 0); }

/* ---- reading whole files ----------------------------------------------------------------- */

/* the .onnx (or .pb) file path in a malloc'd buffer, at most DP__ONNX_MAX_FILE_BYTES; dir
 * (may be NULL): the directory holding it (malloc'd), where its external data lies */
static dp_status read_file(const char *path, unsigned char **out, size_t *len, char **dir) {
    void *buf = NULL;
    dp_status st = dp__read_file(path, DP__ONNX_MAX_FILE_BYTES, &buf, len);
    *out = buf;
    if (st == DP_ERR_RANGE)
        return dp_fail(DP_ERR_RANGE,
                       "%s: the file has %zu bytes, more than the %zu a protobuf message may have "
                       "(keep the weights in external data files: onnx.save_model(..., "
                       "save_as_external_data=True))",
                       path, *len, DP__ONNX_MAX_FILE_BYTES);
    if (st != DP_OK || !dir) return st;
    if (!(*dir = dp__dir_of(path))) {
        free(buf);
        *out = NULL;
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    }
    return DP_OK;
}

/* ---- the wire format, checked before protobuf-c decodes it ------------------------------- */

/* Walks the message with the generated descriptors: nesting depth (DP__ONNX_MAX_DEPTH), and
 * the reason a file is malformed (truncated, a wire type that does not match the field, a
 * bad varint), with the field path and offset, which protobuf-c does not report. */
typedef struct {
    size_t off;
    char path[256];
    char why[200];
} wire_err;

static int rd_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (*pos >= n) return -1; /* truncated */
        uint8_t b = p[(*pos)++];
        if (i == 9 && b > 1) return -2; /* more than 64 bits */
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -2;
}

static int expected_wire(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 1;
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return 5;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return 2;
    default:
        return 0;
    }
}

static const char *wire_name(unsigned wt) {
    switch (wt) {
    case 0:
        return "a varint";
    case 1:
        return "64-bit";
    case 2:
        return "length-delimited";
    case 5:
        return "32-bit";
    default:
        return "invalid";
    }
}

static int wfail(wire_err *e, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int wfail(wire_err *e, size_t off, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
    e->off = off;
    return -1;
}

/* append ".name[i]" (or ".name") to e->path; returns the old length to restore */
static size_t path_push(wire_err *e, const ProtobufCFieldDescriptor *f, long idx, uint32_t num) {
    size_t old = strlen(e->path);
    size_t room = sizeof e->path - old;
    if (room < 64) { /* deep: the path ends in "..." */
        if (old >= 3 && strcmp(e->path + old - 3, "...")) snprintf(e->path + old, room, "...");
        return old;
    }
    if (f && idx >= 0)
        snprintf(e->path + old, room, "%s%s[%ld]", old ? "." : "", f->name, idx);
    else if (f)
        snprintf(e->path + old, room, "%s%s", old ? "." : "", f->name);
    else
        snprintf(e->path + old, room, "%sfield %u", old ? "." : "", num);
    return old;
}

/* 0 ok, -1 malformed or too deep (e filled: e->path names the field) */
static int scan_msg(const uint8_t *p, size_t n, size_t base, const ProtobufCMessageDescriptor *d, int depth,
                    wire_err *e) {
    uint32_t seen[64] = {0}; /* occurrences per field index, for "node[3]" */
    size_t pos = 0;
    while (pos < n) {
        size_t at = pos;
        uint64_t tag, v;
        int r = rd_varint(p, n, &pos, &tag);
        if (r == -1) return wfail(e, base + at, "truncated field tag (the data ends inside it)");
        if (r == -2) return wfail(e, base + at, "invalid field tag (a varint of more than 10 bytes)");
        uint64_t num64 = tag >> 3;
        unsigned wt = (unsigned)(tag & 7);
        if (num64 == 0 || num64 > 0x1fffffff) return wfail(e, base + at, "invalid field number %" PRIu64, num64);
        uint32_t num = (uint32_t)num64;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, num);
        long idx = -1;
        if (f && f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t fi = (size_t)(f - d->fields);
            idx = fi < 64 ? (long)seen[fi]++ : -1;
        }
        int want = f ? expected_wire(f->type) : -1;
        /* packed repeated scalars come as one length-delimited field */
        int packable = f && f->label == PROTOBUF_C_LABEL_REPEATED && want != 2;
        if (f && (int)wt != want && !(packable && wt == 2)) {
            path_push(e, f, -1, num);
            return wfail(e, base + at, "wire type %u (%s), but the field is %s (not an ONNX %s?)", wt, wire_name(wt),
                         wire_name((unsigned)want), d->short_name);
        }
        switch (wt) {
        case 0:
            r = rd_varint(p, n, &pos, &v);
            if (r != 0) {
                path_push(e, f, idx, num);
                return wfail(e, base + at,
                             r == -1 ? "truncated (the data ends inside a number)"
                                     : "invalid varint (more than 10 bytes)");
            }
            break;
        case 1:
        case 5: {
            size_t w = wt == 1 ? 8 : 4;
            if (n - pos < w) {
                path_push(e, f, idx, num);
                return wfail(e, base + at, "truncated (the data ends inside a %zu-byte value)", w);
            }
            pos += w;
            break;
        }
        case 2: {
            size_t lat = pos;
            r = rd_varint(p, n, &pos, &v);
            if (r != 0) {
                path_push(e, f, idx, num);
                return wfail(e, base + lat,
                             r == -1 ? "truncated (the data ends inside a length)"
                                     : "invalid length (a varint of more than 10 bytes)");
            }
            if (v > n - pos) {
                path_push(e, f, idx, num);
                return wfail(e, base + at,
                             "declares %" PRIu64 " bytes, but only %zu remain in its enclosing message "
                             "(the file is truncated or corrupt)",
                             v, n - pos);
            }
            size_t len = (size_t)v;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                size_t old = path_push(e, f, idx, num);
                if (depth + 1 > DP__ONNX_MAX_DEPTH)
                    return wfail(e, base + at, "messages nested more than %d deep", DP__ONNX_MAX_DEPTH);
                if (scan_msg(p + pos, len, base + pos, f->descriptor, depth + 1, e) != 0) return -1;
                e->path[old] = '\0';
            } else if (packable) {
                const uint8_t *q = p + pos;
                if (want == 1 || want == 5) {
                    size_t w = want == 1 ? 8 : 4;
                    if (len % w) {
                        path_push(e, f, -1, num);
                        return wfail(e, base + at, "packed values: %zu bytes is not a multiple of %zu", len, w);
                    }
                } else {
                    size_t qp = 0;
                    while (qp < len) {
                        size_t vat = qp;
                        r = rd_varint(q, len, &qp, &v);
                        if (r != 0) {
                            path_push(e, f, -1, num);
                            return wfail(e, base + pos + vat, "packed values: %s",
                                         r == -1 ? "the last number is cut off" : "invalid varint");
                        }
                    }
                }
            }
            pos += len;
            break;
        }
        case 3:
        case 4:
            path_push(e, f, -1, num);
            return wfail(e, base + at, "group wire type %u (not used by ONNX)", wt);
        default:
            path_push(e, f, -1, num);
            return wfail(e, base + at, "invalid wire type %u", wt);
        }
    }
    return 0;
}

/* protobuf-c's memory, bounded: decoding may take limit bytes in all */
typedef struct {
    size_t used, limit;
    int over;
} pb_budget;

static void *pb_alloc(void *data, size_t size) {
    pb_budget *b = data;
    if (size > b->limit - b->used) {
        b->over = 1;
        return NULL;
    }
    void *p = malloc(size ? size : 1);
    if (p) b->used += size;
    return p;
}
static void pb_free(void *data, void *p) {
    (void)data;
    free(p);
}

/* the decoding budget for a file of len bytes: 256 MiB + 4 bytes per byte (raw data takes 1x;
 * small messages expand several times into structs and pointers) */
static size_t pb_limit(size_t len) {
    size_t lim = (size_t)256 << 20;
    if (len > (SIZE_MAX - lim) / 4) return SIZE_MAX;
    return lim + 4 * len;
}

/* check (data, len), scan, then decode with protobuf-c under the budget b for len bytes (*al is
 * set up here: the message is freed with it, while b lives) */
static dp_status pb_unpack(const ProtobufCMessageDescriptor *d, const void *data, size_t len, const char *label,
                           pb_budget *b, ProtobufCAllocator *al, ProtobufCMessage **out) {
    *out = NULL;
    if (!data && len) return dp_fail(DP_ERR_INVALID, "%s: data is NULL", label);
    if (len > DP__ONNX_MAX_FILE_BYTES)
        return dp_fail(DP_ERR_RANGE, "%s: %zu bytes, more than the %zu a protobuf message may have", label, len,
                       DP__ONNX_MAX_FILE_BYTES);
    const unsigned char *buf = data ? data : (const void *)"";
    b->used = 0;
    b->limit = pb_limit(len);
    b->over = 0;
    *al = (ProtobufCAllocator){pb_alloc, pb_free, b};
    wire_err e;
    e.path[0] = '\0';
    if (scan_msg(buf, len, 0, d, 0, &e) != 0)
        return dp_fail(DP_ERR_FORMAT, "%s: not a valid ONNX %s: %s%s: %s (at byte %zu)", label, d->short_name,
                       e.path[0] ? "field " : "top level", e.path, e.why, e.off);
    /* e.g. "m.onnx: not a valid ONNX ModelProto: field graph.node[3].attribute[0]: declares 4000
     * bytes, but only 12 remain in its enclosing message (the file is truncated or corrupt) (at
     * byte 912)" */
    ProtobufCMessage *m = protobuf_c_message_unpack(d, al, len, buf);
    if (!m) {
        if (b->over)
            return dp_fail(DP_ERR_NOMEM,
                           "%s: decoding needs more than %zu MiB for a file of %zu bytes (refused: too many "
                           "small elements)",
                           label, b->limit >> 20, len);
        return dp_fail(DP_ERR_FORMAT, "%s: not a valid ONNX %s (protobuf-c cannot decode it%s)", label, d->short_name,
                       len == 0 ? ": the file is empty" : "");
    }
    *out = m;
    return DP_OK;
}

/* ---- conversion -------------------------------------------------------------------------- */

typedef struct {
    const char *label;    /* the file, for messages */
    const char *base_dir; /* external data directory; NULL refuses external data */
    arena *ar;
} ctx;

#define FAILF(st, c, where, ...) dp__onnx_failf((st), (c), (where), __VA_ARGS__)
static dp_status dp__onnx_failf(dp_status st, const ctx *c, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static dp_status dp__onnx_failf(dp_status st, const ctx *c, const char *where, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dp_fail(st, "%s: %s: %s", c->label, where, msg);
}

static dp_status oom(const ctx *c, const char *where) {
    return dp_fail(DP_ERR_NOMEM, "%s: %s: out of memory (%s)", c->label, where, dp_last_error());
}

/* "[3, 4, 5]" into buf */
static const char *dims_text(char *buf, size_t size, size_t n, const int64_t *dims) {
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
    size_t w = raw_size(t);
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
static dp_status read_external(const ctx *c, const char *where, const Onnx__TensorProto *t, size_t bytes,
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
    if (!full) return oom(c, where);
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
        st = oom(c, where);
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
static dp_status dims_count(const ctx *c, const char *where, size_t ndim, const int64_t *dims, size_t *count) {
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
                             dims_text(buf, sizeof buf, ndim, dims));
            }
    *count = (size_t)n;
    return DP_OK;
}

static dp_status conv_tensor(const ctx *c, const char *where, const Onnx__TensorProto *t, dp__onnx_tensor *o) {
    memset(o, 0, sizeof *o);
    arena *a = c->ar;
    char dbuf[200];
    if (!(o->name = ar_strdup(a, t->name))) return oom(c, where);
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
    dp_status st = dims_count(c, where, t->n_dims, t->dims, &count);
    if (st != DP_OK) return st;
    o->ndim = (int)t->n_dims;
    o->count = count;
    int64_t *dims = ar_array(a, t->n_dims, sizeof *dims);
    if (!dims) return oom(c, where);
    if (t->n_dims) memcpy(dims, t->dims, t->n_dims * sizeof *dims);
    o->dims = dims;
    dims_text(dbuf, sizeof dbuf, t->n_dims, t->dims);

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

    size_t esz = raw_size(et);
    if (cls == 3) { /* STRING */
        if (has_raw || external)
            return FAILF(DP_ERR_FORMAT, c, where, "a STRING tensor's values must be in string_data, not %s",
                         has_raw ? "raw_data" : "external data");
        if (ntyped != count)
            return FAILF(DP_ERR_FORMAT, c, where, "string_data has %zu values, dims %s need %zu", ntyped, dbuf, count);
        char **s = ar_array(a, count, sizeof *s);
        size_t *sl = ar_array(a, count, sizeof *sl);
        if (!s || !sl) return oom(c, where);
        for (size_t k = 0; k < count; k++) {
            if (!(s[k] = ar_strndup(a, t->string_data[k].data, t->string_data[k].len))) return oom(c, where);
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
        st = read_external(c, where, t, bytes, &ext); /* checks the length first */
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
        f = ar_array(a, count, sizeof *f);
    else
        iv = ar_array(a, count, sizeof *iv);
    if (!f && !iv) {
        free(ext);
        return oom(c, where);
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

static dp_status conv_value(const ctx *c, const char *kind, size_t idx, const Onnx__ValueInfoProto *v,
                            dp__onnx_value *o) {
    char where[320];
    memset(o, 0, sizeof *o);
    o->ndim = -1;
    if (!v->name || !*v->name) {
        snprintf(where, sizeof where, "%s %zu", kind, idx);
        return FAILF(DP_ERR_FORMAT, c, where, "no name");
    }
    snprintf(where, sizeof where, "%s '%s'", kind, v->name);
    if (!(o->name = ar_strdup(c->ar, v->name))) return oom(c, where);
    const Onnx__TypeProto *tp = v->type;
    if (!tp) return DP_OK;
    const Onnx__TensorShapeProto *shape = NULL;
    switch (tp->value_case) {
    case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
        o->kind = DP__ONNX_VALUE_TENSOR;
        if (tp->tensor_type) {
            o->elem_type = tp->tensor_type->has_elem_type ? tp->tensor_type->elem_type : 0;
            shape = tp->tensor_type->shape;
        }
        break;
    case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
        o->kind = DP__ONNX_VALUE_SPARSE_TENSOR;
        if (tp->sparse_tensor_type) {
            o->elem_type = tp->sparse_tensor_type->has_elem_type ? tp->sparse_tensor_type->elem_type : 0;
            shape = tp->sparse_tensor_type->shape;
        }
        break;
    case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
        o->kind = DP__ONNX_VALUE_SEQUENCE;
        return DP_OK;
    case ONNX__TYPE_PROTO__VALUE_MAP_TYPE:
        o->kind = DP__ONNX_VALUE_MAP;
        return DP_OK;
    case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
        o->kind = DP__ONNX_VALUE_OPTIONAL;
        return DP_OK;
    default:
        return DP_OK;
    }
    if (!shape) return DP_OK;
    if (shape->n_dim > DP__ONNX_MAX_DIMS)
        return FAILF(DP_ERR_UNSUPPORTED, c, where, "%zu dims, more than %d", shape->n_dim, DP__ONNX_MAX_DIMS);
    int64_t *dims = ar_array(c->ar, shape->n_dim, sizeof *dims);
    const char **dp = ar_array(c->ar, shape->n_dim, sizeof *dp);
    if (!dims || !dp) return oom(c, where);
    for (size_t d = 0; d < shape->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = shape->dim[d];
        dims[d] = -1;
        dp[d] = "";
        if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (dim->dim_value < 0)
                return FAILF(DP_ERR_FORMAT, c, where, "dim %zu has dim_value %" PRId64 " (negative)", d,
                             dim->dim_value);
            dims[d] = dim->dim_value;
        } else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM) {
            if (!(dp[d] = ar_strdup(c->ar, dim->dim_param))) return oom(c, where);
        }
    }
    o->ndim = (int)shape->n_dim;
    o->dims = dims;
    o->dim_param = dp;
    return DP_OK;
}

static dp_status conv_attr(const ctx *c, const char *nwhere, const Onnx__AttributeProto *at, dp__onnx_attr *o) {
    char where[480];
    memset(o, 0, sizeof *o);
    arena *a = c->ar;
    if (!at->name || !*at->name) {
        snprintf(where, sizeof where, "%s: an attribute", nwhere);
        return FAILF(DP_ERR_FORMAT, c, where, "no name");
    }
    snprintf(where, sizeof where, "%s: attribute '%s'", nwhere, at->name);
    if (!(o->name = ar_strdup(a, at->name))) return oom(c, where);
    int type = at->has_type ? (int)at->type : 0;
    if (type == DP__ONNX_ATTR_UNDEFINED) return FAILF(DP_ERR_FORMAT, c, where, "no type (UNDEFINED)");
    if (type < 0 || type >= N_ATTR_TYPE_NAMES) return FAILF(DP_ERR_FORMAT, c, where, "unknown type %d", type);
    o->type = type;
    switch (type) {
    case DP__ONNX_ATTR_FLOAT:
        o->f = at->f;
        break;
    case DP__ONNX_ATTR_INT:
        o->i = at->i;
        break;
    case DP__ONNX_ATTR_STRING:
        if (!(o->s = ar_strndup(a, at->s.data, at->has_s ? at->s.len : 0))) return oom(c, where);
        o->s_len = at->has_s ? at->s.len : 0;
        break;
    case DP__ONNX_ATTR_TENSOR: {
        if (!at->t) return FAILF(DP_ERR_FORMAT, c, where, "type TENSOR but no tensor 't'");
        dp__onnx_tensor *t = ar_alloc(a, sizeof *t);
        if (!t) return oom(c, where);
        dp_status st = conv_tensor(c, where, at->t, t);
        if (st != DP_OK) return st;
        o->t = t;
        break;
    }
    case DP__ONNX_ATTR_FLOATS: {
        float *v = ar_array(a, at->n_floats, sizeof *v);
        if (!v) return oom(c, where);
        if (at->n_floats) memcpy(v, at->floats, at->n_floats * sizeof *v);
        o->floats = v;
        o->n = at->n_floats;
        break;
    }
    case DP__ONNX_ATTR_INTS: {
        int64_t *v = ar_array(a, at->n_ints, sizeof *v);
        if (!v) return oom(c, where);
        if (at->n_ints) memcpy(v, at->ints, at->n_ints * sizeof *v);
        o->ints = v;
        o->n = at->n_ints;
        break;
    }
    case DP__ONNX_ATTR_STRINGS: {
        char **v = ar_array(a, at->n_strings, sizeof *v);
        size_t *vl = ar_array(a, at->n_strings, sizeof *vl);
        if (!v || !vl) return oom(c, where);
        for (size_t k = 0; k < at->n_strings; k++) {
            if (!(v[k] = ar_strndup(a, at->strings[k].data, at->strings[k].len))) return oom(c, where);
            vl[k] = at->strings[k].len;
        }
        o->strings = (const char *const *)v;
        o->strings_len = vl;
        o->n = at->n_strings;
        break;
    }
    default:
        break; /* kept as name and type only */
    }
    return DP_OK;
}

static dp_status conv_names(const ctx *c, const char *where, size_t n, char **in, const char *const **out) {
    const char **v = ar_array(c->ar, n, sizeof *v);
    if (!v) return oom(c, where);
    for (size_t k = 0; k < n; k++)
        if (!(v[k] = ar_strdup(c->ar, in[k]))) return oom(c, where);
    *out = v;
    return DP_OK;
}

static dp_status conv_node(const ctx *c, size_t idx, const Onnx__NodeProto *n, dp__onnx_node *o) {
    char where[320];
    memset(o, 0, sizeof *o);
    const char *op = n->op_type ? n->op_type : "";
    if (n->name && *n->name)
        snprintf(where, sizeof where, "node %zu '%s' (%s)", idx, n->name, op);
    else
        snprintf(where, sizeof where, "node %zu (%s)", idx, op);
    if (!*op) return FAILF(DP_ERR_FORMAT, c, where, "no op_type");
    if (n->n_input > INT_MAX || n->n_output > INT_MAX || n->n_attribute > INT_MAX)
        return FAILF(DP_ERR_RANGE, c, where, "too many inputs, outputs or attributes");
    if (!(o->name = ar_strdup(c->ar, n->name)) || !(o->op_type = ar_strdup(c->ar, op)) ||
        !(o->domain = ar_strdup(c->ar, n->domain)))
        return oom(c, where);
    dp_status st;
    if ((st = conv_names(c, where, n->n_input, n->input, &o->inputs)) != DP_OK) return st;
    if ((st = conv_names(c, where, n->n_output, n->output, &o->outputs)) != DP_OK) return st;
    o->n_inputs = (int)n->n_input;
    o->n_outputs = (int)n->n_output;
    dp__onnx_attr *attrs = ar_array(c->ar, n->n_attribute, sizeof *attrs);
    if (!attrs) return oom(c, where);
    for (size_t k = 0; k < n->n_attribute; k++) {
        if ((st = conv_attr(c, where, n->attribute[k], &attrs[k])) != DP_OK) return st;
        for (size_t j = 0; j < k; j++)
            if (!strcmp(attrs[j].name, attrs[k].name))
                return FAILF(DP_ERR_FORMAT, c, where, "attribute '%s' given twice", attrs[k].name);
    }
    o->attrs = attrs;
    o->n_attrs = (int)n->n_attribute;
    return DP_OK;
}

/* ---- the model --------------------------------------------------------------------------- */

typedef struct {
    arena ar;
    const dp__onnx_tensor **by_name; /* the initializers sorted by name, for lookups */
} model_mem;

static int cmp_init(const void *a, const void *b) {
    return strcmp((*(const dp__onnx_tensor *const *)a)->name, (*(const dp__onnx_tensor *const *)b)->name);
}

static dp_status conv_model(const ctx *c, const Onnx__ModelProto *mp, dp__onnx_model *m, model_mem *mm) {
    arena *a = c->ar;
    const Onnx__GraphProto *g = mp->graph;
    if (!g) return dp_fail(DP_ERR_FORMAT, "%s: no graph (not an ONNX model?)", c->label);
    m->ir_version = mp->has_ir_version ? mp->ir_version : 0;
    if (!(m->producer_name = ar_strdup(a, mp->producer_name)) ||
        !(m->producer_version = ar_strdup(a, mp->producer_version)) || !(m->graph_name = ar_strdup(a, g->name)))
        return oom(c, "model");
    if (mp->n_opset_import > INT_MAX || g->n_input > INT_MAX || g->n_output > INT_MAX || g->n_value_info > INT_MAX ||
        g->n_node > INT_MAX || g->n_initializer > INT_MAX)
        return dp_fail(DP_ERR_RANGE, "%s: too many entries in the graph", c->label);
    dp__onnx_opset *ops = ar_array(a, mp->n_opset_import, sizeof *ops);
    if (!ops) return oom(c, "opset_import");
    for (size_t k = 0; k < mp->n_opset_import; k++) {
        const char *d = mp->opset_import[k]->domain;
        if (!(ops[k].domain = ar_strdup(a, d))) return oom(c, "opset_import");
        ops[k].version = mp->opset_import[k]->has_version ? mp->opset_import[k]->version : 0;
    }
    m->opsets = ops;
    m->n_opsets = (int)mp->n_opset_import;
    if (g->n_sparse_initializer)
        return dp_fail(DP_ERR_UNSUPPORTED, "%s: graph: %zu sparse initializers (sparse_initializer is not supported)",
                       c->label, g->n_sparse_initializer);

    dp_status st;
    struct {
        const char *kind;
        size_t n;
        Onnx__ValueInfoProto **in;
        const dp__onnx_value **out;
        int *count;
    } vals[3] = {{"graph input", g->n_input, g->input, &m->inputs, &m->n_inputs},
                 {"graph output", g->n_output, g->output, &m->outputs, &m->n_outputs},
                 {"value_info", g->n_value_info, g->value_info, &m->value_info, &m->n_value_info}};
    for (int v = 0; v < 3; v++) {
        dp__onnx_value *arr = ar_array(a, vals[v].n, sizeof *arr);
        if (!arr) return oom(c, vals[v].kind);
        for (size_t k = 0; k < vals[v].n; k++)
            if ((st = conv_value(c, vals[v].kind, k, vals[v].in[k], &arr[k])) != DP_OK) return st;
        *vals[v].out = arr;
        *vals[v].count = (int)vals[v].n;
    }

    dp__onnx_node *nodes = ar_array(a, g->n_node, sizeof *nodes);
    if (!nodes) return oom(c, "graph");
    for (size_t k = 0; k < g->n_node; k++)
        if ((st = conv_node(c, k, g->node[k], &nodes[k])) != DP_OK) return st;
    m->nodes = nodes;
    m->n_nodes = (int)g->n_node;

    dp__onnx_tensor *inits = ar_array(a, g->n_initializer, sizeof *inits);
    const dp__onnx_tensor **order = ar_array(a, g->n_initializer, sizeof *order);
    if (!inits || !order) return oom(c, "graph");
    for (size_t k = 0; k < g->n_initializer; k++) {
        const Onnx__TensorProto *t = g->initializer[k];
        char where[320];
        if (!t->name || !*t->name) {
            snprintf(where, sizeof where, "initializer %zu", k);
            return FAILF(DP_ERR_FORMAT, c, where, "no name");
        }
        snprintf(where, sizeof where, "initializer '%s'", t->name);
        if ((st = conv_tensor(c, where, t, &inits[k])) != DP_OK) return st;
        order[k] = &inits[k];
    }
    m->initializers = inits;
    m->n_initializers = (int)g->n_initializer;
    if (g->n_initializer > 1) {
        qsort(order, g->n_initializer, sizeof *order, cmp_init);
        for (size_t k = 1; k < g->n_initializer; k++)
            if (!strcmp(order[k - 1]->name, order[k]->name))
                return dp_fail(DP_ERR_FORMAT, "%s: initializer '%s' is given twice", c->label, order[k]->name);
    }
    mm->by_name = order;
    return DP_OK;
}

dp_status dp__onnx_parse(const void *data, size_t size, const char *label, const char *base_dir, dp__onnx_model **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_parse: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    pb_budget b;
    ProtobufCAllocator al;
    ProtobufCMessage *msg;
    dp_status st = pb_unpack(&onnx__model_proto__descriptor, data, size, label, &b, &al, &msg);
    if (st != DP_OK) return st;
    arena ar = {0};
    dp__onnx_model *m = NULL;
    model_mem *mm = NULL;
    ctx c = {label, base_dir, &ar};
    char *lab = ar_strdup(&ar, label);
    if (!lab || !(m = ar_alloc(&ar, sizeof *m)) || !(mm = ar_alloc(&ar, sizeof *mm))) {
        st = oom(&c, "model");
        goto fail;
    }
    memset(m, 0, sizeof *m);
    memset(mm, 0, sizeof *mm);
    m->path = c.label = lab;
    st = conv_model(&c, (const Onnx__ModelProto *)msg, m, mm);
    if (st != DP_OK) goto fail;
    protobuf_c_message_free_unpacked(msg, &al);
    mm->ar = ar; /* the arena's blocks now belong to the model (mm lives in them) */
    m->mem_ = mm;
    *out = m;
    return DP_OK;
fail:
    protobuf_c_message_free_unpacked(msg, &al);
    ar_free(&ar);
    return st;
}

dp_status dp__onnx_load(const char *path, dp__onnx_model **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_load: out is NULL");
    *out = NULL;
    if (!path) return dp_fail(DP_ERR_INVALID, "dp__onnx_load: path is NULL");
    unsigned char *buf;
    size_t len;
    char *dir;
    dp_status st = read_file(path, &buf, &len, &dir);
    if (st != DP_OK) return st;
    st = dp__onnx_parse(buf, len, path, dir, out);
    free(dir);
    free(buf);
    return st;
}

void dp__onnx_free(dp__onnx_model *m) {
    if (!m) return;
    model_mem *mm = m->mem_;
    arena ar = mm->ar; /* m and mm live in the arena */
    ar_free(&ar);
}

const dp__onnx_tensor *dp__onnx_find_initializer(const dp__onnx_model *m, const char *name) {
    if (!m || !name) return NULL;
    const model_mem *mm = m->mem_;
    size_t lo = 0, hi = (size_t)m->n_initializers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dp__onnx_tensor *t = mm->by_name[mid];
        int r = strcmp(name, t->name);
        if (r == 0) return t;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const dp__onnx_attr *dp__onnx_find_attr(const dp__onnx_node *n, const char *name) {
    if (!n || !name) return NULL;
    for (int k = 0; k < n->n_attrs; k++)
        if (!strcmp(n->attrs[k].name, name)) return &n->attrs[k];
    return NULL;
}

int64_t dp__onnx_opset_version(const dp__onnx_model *m, const char *domain) {
    if (!m) return 0;
    if (!domain || !strcmp(domain, "ai.onnx")) domain = "";
    for (int k = 0; k < m->n_opsets; k++) {
        const char *d = m->opsets[k].domain;
        if (!strcmp(d, "ai.onnx")) d = "";
        if (!strcmp(d, domain)) return m->opsets[k].version;
    }
    return 0;
}

/* ---- a standalone TensorProto file ------------------------------------------------------- */

struct dp__onnx_tensor_file {
    arena ar;
    dp__onnx_tensor t;
};

dp_status dp__onnx_parse_tensor(const void *data, size_t size, const char *label, dp__onnx_tensor_file **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_parse_tensor: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    pb_budget b;
    ProtobufCAllocator al;
    ProtobufCMessage *msg;
    dp_status st = pb_unpack(&onnx__tensor_proto__descriptor, data, size, label, &b, &al, &msg);
    if (st != DP_OK) return st;
    arena ar = {0};
    ctx c = {label, NULL, &ar};
    dp__onnx_tensor_file *tf = ar_alloc(&ar, sizeof *tf);
    char *lab = ar_strdup(&ar, label);
    if (!tf || !lab) {
        st = oom(&c, "tensor");
        goto done;
    }
    c.label = lab;
    const Onnx__TensorProto *t = (const Onnx__TensorProto *)msg;
    char where[320];
    if (t->name && *t->name)
        snprintf(where, sizeof where, "tensor '%s'", t->name);
    else
        snprintf(where, sizeof where, "tensor");
    st = conv_tensor(&c, where, t, &tf->t);
done:
    protobuf_c_message_free_unpacked(msg, &al);
    if (st != DP_OK) {
        ar_free(&ar);
        return st;
    }
    tf->ar = ar;
    *out = tf;
    return DP_OK;
}

dp_status dp__onnx_load_tensor(const char *path, dp__onnx_tensor_file **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_load_tensor: out is NULL");
    *out = NULL;
    if (!path) return dp_fail(DP_ERR_INVALID, "dp__onnx_load_tensor: path is NULL");
    unsigned char *buf;
    size_t len;
    dp_status st = read_file(path, &buf, &len, NULL);
    if (st != DP_OK) return st;
    st = dp__onnx_parse_tensor(buf, len, path, out);
    free(buf);
    return st;
}

const dp__onnx_tensor *dp__onnx_tensor_file_get(const dp__onnx_tensor_file *tf) { return tf ? &tf->t : NULL; }

void dp__onnx_tensor_file_free(dp__onnx_tensor_file *tf) {
    if (!tf) return;
    arena ar = tf->ar;
    ar_free(&ar);
}

/* ---- writing back ------------------------------------------------------------------------ */

/* a tensor whose data was swapped for the writer, and what to put back before protobuf-c frees
 * the message (the whole struct as decoded: the swap changes only its data fields) */
typedef struct {
    Onnx__TensorProto *t;
    unsigned char *buf; /* ours (malloc) */
    Onnx__TensorProto saved;
} swap;

typedef struct {
    swap *v;
    size_t n, cap;
    const ctx *c;
    dp_status st;
} swaps;

static int swap_add(swaps *s, Onnx__TensorProto *t, unsigned char *buf, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        swap *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    swap *w = &s->v[s->n++];
    w->t = t;
    w->buf = buf;
    w->saved = *t;
    t->has_raw_data = 1;
    t->raw_data.data = buf;
    t->raw_data.len = len;
    t->has_data_location = 0;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
    t->n_external_data = 0;
    t->n_float_data = 0;
    return 0;
}

static void swaps_undo(swaps *s) {
    for (size_t k = s->n; k-- > 0;) {
        swap *w = &s->v[k];
        *w->t = w->saved;
        free(w->buf);
    }
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static int is_swapped(const swaps *s, const Onnx__TensorProto *t) {
    for (size_t k = 0; k < s->n; k++)
        if (s->v[k].t == t) return 1;
    return 0;
}

/* fold one tensor's external data in as raw_data */
static void fold_tensor(swaps *s, Onnx__TensorProto *t, const char *where) {
    if (s->st != DP_OK || !t) return;
    if (!(t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)) return;
    if (is_swapped(s, t)) return;
    char w[320];
    snprintf(w, sizeof w, "%s '%s'", where, t->name ? t->name : "");
    size_t count, esz = raw_size(t->has_data_type ? t->data_type : 0);
    if (esz == 0) {
        s->st = FAILF(DP_ERR_UNSUPPORTED, s->c, w, "external data of elem type %s cannot be folded in",
                      dp__onnx_type_name(t->has_data_type ? t->data_type : 0));
        return;
    }
    if ((s->st = dims_count(s->c, w, t->n_dims, t->dims, &count)) != DP_OK) return;
    unsigned char *buf;
    if ((s->st = read_external(s->c, w, t, count * esz, &buf)) != DP_OK) return;
    if (swap_add(s, t, buf, count * esz) != 0) {
        free(buf);
        s->st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", s->c->label);
    }
}

static void fold_graph(swaps *s, Onnx__GraphProto *g, int depth);
static void fold_sparse(swaps *s, Onnx__SparseTensorProto *sp, const char *where) {
    if (!sp) return;
    fold_tensor(s, sp->values, where);
    fold_tensor(s, sp->indices, where);
}
static void fold_nodes(swaps *s, size_t n, Onnx__NodeProto **nodes, int depth) {
    for (size_t k = 0; k < n && s->st == DP_OK; k++) {
        Onnx__NodeProto *nd = nodes[k];
        for (size_t j = 0; j < nd->n_attribute && s->st == DP_OK; j++) {
            Onnx__AttributeProto *a = nd->attribute[j];
            fold_tensor(s, a->t, "attribute tensor");
            for (size_t i = 0; i < a->n_tensors; i++) fold_tensor(s, a->tensors[i], "attribute tensor");
            fold_sparse(s, a->sparse_tensor, "attribute sparse tensor");
            for (size_t i = 0; i < a->n_sparse_tensors; i++)
                fold_sparse(s, a->sparse_tensors[i], "attribute sparse tensor");
            fold_graph(s, a->g, depth + 1);
            for (size_t i = 0; i < a->n_graphs; i++) fold_graph(s, a->graphs[i], depth + 1);
        }
    }
}
static void fold_graph(swaps *s, Onnx__GraphProto *g, int depth) {
    if (!g || s->st != DP_OK) return;
    if (depth > DP__ONNX_MAX_DEPTH) { /* cannot happen after the wire scan; kept as a guard */
        s->st = dp_fail(DP_ERR_FORMAT, "%s: subgraphs nested too deep", s->c->label);
        return;
    }
    for (size_t k = 0; k < g->n_initializer; k++) fold_tensor(s, g->initializer[k], "initializer");
    for (size_t k = 0; k < g->n_sparse_initializer; k++) fold_sparse(s, g->sparse_initializer[k], "sparse initializer");
    fold_nodes(s, g->n_node, g->node, depth);
}

dp_status dp__onnx_save_initializers(const char *in_model, const char *out_model, int n,
                                     const dp__onnx_replacement *repl) {
    if (!in_model || !out_model) return dp_fail(DP_ERR_INVALID, "dp__onnx_save_initializers: a path is NULL");
    if (n < 0 || (n > 0 && !repl))
        return dp_fail(DP_ERR_INVALID, "%s: dp__onnx_save_initializers: bad replacement list", out_model);
    unsigned char *file;
    size_t len;
    char *dir;
    dp_status st = read_file(in_model, &file, &len, &dir);
    if (st != DP_OK) return st;
    /* the whole model is checked first, as the loader checks it */
    dp__onnx_model *ir = NULL;
    if ((st = dp__onnx_parse(file, len, in_model, dir, &ir)) != DP_OK) {
        free(dir);
        free(file);
        return st;
    }
    for (int k = 0; k < n; k++) {
        const char *name = repl[k].name;
        const dp__onnx_tensor *t = name ? dp__onnx_find_initializer(ir, name) : NULL;
        if (!name)
            st = dp_fail(DP_ERR_INVALID, "%s: replacement %d has no name", out_model, k);
        else if (!t)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': %s has no initializer of that name", out_model, name,
                         in_model);
        else if (t->elem_type != DP__ONNX_FLOAT)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': the initializer is %s, not FLOAT", out_model, name,
                         dp__onnx_type_name(t->elem_type));
        else if (repl[k].count != t->count)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': %zu values given, its dims hold %zu", out_model,
                         name, repl[k].count, t->count);
        else if (t->count && !repl[k].data)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': data is NULL", out_model, name);
        for (int j = 0; j < k && st == DP_OK; j++)
            if (!strcmp(repl[j].name, name))
                st = dp_fail(DP_ERR_INVALID, "%s: '%s' is replaced twice", out_model, name);
        if (st != DP_OK) break;
    }
    dp__onnx_free(ir);
    if (st != DP_OK) {
        free(dir);
        free(file);
        return st;
    }

    pb_budget b;
    ProtobufCAllocator al;
    ProtobufCMessage *msg;
    if ((st = pb_unpack(&onnx__model_proto__descriptor, file, len, in_model, &b, &al, &msg)) != DP_OK) {
        free(dir);
        free(file);
        return st;
    }
    free(file);
    Onnx__ModelProto *mp = (Onnx__ModelProto *)msg;
    arena scratch = {0};
    ctx c = {in_model, dir, &scratch};
    swaps s = {NULL, 0, 0, &c, DP_OK};
    unsigned char *out = NULL;
    size_t out_len = 0;
    for (int k = 0; k < n && s.st == DP_OK; k++) {
        Onnx__TensorProto *t = NULL;
        for (size_t j = 0; j < mp->graph->n_initializer && !t; j++)
            if (mp->graph->initializer[j]->name && !strcmp(mp->graph->initializer[j]->name, repl[k].name))
                t = mp->graph->initializer[j];
        DP_ASSERT(t); /* checked above on the same bytes */
        size_t bytes = repl[k].count * 4;
        unsigned char *buf = malloc(bytes ? bytes : 1);
        if (!buf) {
            s.st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", out_model);
            break;
        }
        for (size_t i = 0; i < repl[k].count; i++) {
            uint32_t u;
            memcpy(&u, &repl[k].data[i], 4);
            for (int bb = 0; bb < 4; bb++) buf[4 * i + (size_t)bb] = (unsigned char)(u >> (8 * bb));
        }
        if (swap_add(&s, t, buf, bytes) != 0) {
            free(buf);
            s.st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", out_model);
        }
    }
    fold_graph(&s, mp->graph, 0);
    for (size_t k = 0; k < mp->n_training_info && s.st == DP_OK; k++) {
        fold_graph(&s, mp->training_info[k]->initialization, 1);
        fold_graph(&s, mp->training_info[k]->algorithm, 1);
    }
    for (size_t k = 0; k < mp->n_functions && s.st == DP_OK; k++)
        fold_nodes(&s, mp->functions[k]->n_node, mp->functions[k]->node, 1);
    st = s.st;
    if (st == DP_OK) {
        out_len = protobuf_c_message_get_packed_size(msg);
        if (out_len > DP__ONNX_MAX_FILE_BYTES)
            st = dp_fail(DP_ERR_RANGE,
                         "%s: the model with its weights folded in would have %zu bytes, more than the %zu a "
                         "protobuf message may have",
                         out_model, out_len, DP__ONNX_MAX_FILE_BYTES);
        else if (!(out = malloc(out_len ? out_len : 1)))
            st = dp_fail(DP_ERR_NOMEM, "%s: out of memory (%zu bytes)", out_model, out_len);
        else if (protobuf_c_message_pack(msg, out) != out_len)
            st = dp_fail(DP_ERR_IO, "%s: protobuf-c packed a different size than it announced", out_model);
    }
    swaps_undo(&s);
    protobuf_c_message_free_unpacked(msg, &al);
    ar_free(&scratch);
    free(dir);
    if (st == DP_OK) st = dp__write_file_atomic(out_model, out, out_len);
    free(out);
    return st;
}
