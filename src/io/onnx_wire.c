/* onnx_wire.c: the ONNX file layer's decoding (src/io/onnx_impl.h): the wire format checked
 * with the generated descriptors before protobuf-c decodes it under a memory budget. */
#define _XOPEN_SOURCE 700
#include "io/onnx_impl.h"

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
dp_status dp__onnx_pb_unpack(const ProtobufCMessageDescriptor *d, const void *data, size_t len, const char *label,
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

