/* onnx_impl.h (internal to src/io/onnx*.c): what the ONNX file layer's files share. The
 * reader is split by seam: onnx_wire.c checks the wire format and decodes with protobuf-c
 * under a memory budget, onnx_tensor.c converts tensors (raw, typed and external data),
 * onnx.c builds the graph of onnx.h and reads TensorProto files, onnx_write.c writes a model
 * back with initializers replaced. */
#ifndef DP_IO_ONNX_IMPL_H
#define DP_IO_ONNX_IMPL_H
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

/* the model's memory: an arena of dp_alloc blocks (onnx.c) */
typedef struct blk {
    struct blk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} blk;
typedef struct {
    blk *cur;   /* the block small allocations are cut from */
    blk *large; /* blocks of one big allocation each */
} arena;
/* n bytes aligned to 16 (NULL when out of memory, the message set); count * size bytes;
 * copies of strings; everything freed at once */
DP_HIDDEN void *dp__onnx_ar_alloc(arena *a, size_t n);
DP_HIDDEN void *dp__onnx_ar_array(arena *a, size_t count, size_t size);
DP_HIDDEN char *dp__onnx_ar_strndup(arena *a, const void *s, size_t n);
DP_HIDDEN char *dp__onnx_ar_strdup(arena *a, const char *s);
DP_HIDDEN void dp__onnx_ar_free(arena *a);

/* bytes per element of a type's raw_data (0: none) (onnx.c) */
DP_HIDDEN size_t dp__onnx_raw_size(int t);
/* the file at path in a malloc'd buffer, at most DP__ONNX_MAX_FILE_BYTES; dir (may be NULL):
 * its directory (malloc'd), where its external data lies (onnx.c) */
DP_HIDDEN dp_status dp__onnx_read_file(const char *path, unsigned char **out, size_t *len, char **dir);

/* protobuf-c's memory, bounded: decoding may take limit bytes in all */
typedef struct {
    size_t used, limit;
    int over;
} pb_budget;

/* check (data, len), scan the wire format, then decode with protobuf-c under the budget b for
 * len bytes (*al is set up here: the message is freed with it, while b lives) (onnx_wire.c) */
DP_HIDDEN dp_status dp__onnx_pb_unpack(const ProtobufCMessageDescriptor *d, const void *data, size_t len,
                                       const char *label, pb_budget *b, ProtobufCAllocator *al, ProtobufCMessage **out);

/* a conversion: the file, its external data directory (NULL refuses external data), the arena */
typedef struct {
    const char *label;
    const char *base_dir;
    arena *ar;
} ctx;
/* messages "<file>: <where>: <what>" (onnx_tensor.c) */
#define FAILF(st, c, where, ...) dp__onnx_failf((st), (c), (where), __VA_ARGS__)
DP_HIDDEN dp_status dp__onnx_failf(dp_status st, const ctx *c, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
DP_HIDDEN dp_status dp__onnx_oom(const ctx *c, const char *where);
DP_HIDDEN const char *dp__onnx_dims_text(char *buf, size_t size, size_t n, const int64_t *dims);
DP_HIDDEN dp_status dp__onnx_dims_count(const ctx *c, const char *where, size_t ndim, const int64_t *dims, size_t *count);
DP_HIDDEN dp_status dp__onnx_conv_tensor(const ctx *c, const char *where, const Onnx__TensorProto *t, dp__onnx_tensor *o);
/* the external data of t: bytes bytes into buf (onnx_tensor.c) */
DP_HIDDEN dp_status dp__onnx_read_external(const ctx *c, const char *where, const Onnx__TensorProto *t, size_t bytes,
                               unsigned char **out);
#endif
