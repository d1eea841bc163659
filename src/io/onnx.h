/* onnx.h (internal): the ONNX file layer. Reads a ModelProto file (or a standalone TensorProto
 * file, as libonnx-testdata's input_N.pb / output_N.pb) into a plain-C graph that exposes no
 * protobuf type, and writes a model back with some float initializers replaced. The parsing
 * itself is protobuf-c's, generated at build time from Debian's /usr/include/onnx/onnx.proto
 * (CMakeLists.txt); this file never hands out a protobuf-c object. docs/onnx.md "Reading the
 * file".
 *
 * Everything a loaded model holds (names, dims, data) lives in the model's own memory and is
 * freed by dp__onnx_free; pointers stay valid until then. Element types keep ONNX's
 * TensorProto.DataType numbers (DP__ONNX_FLOAT = 1, ...), attribute types ONNX's
 * AttributeProto.AttributeType numbers (DP__ONNX_ATTR_FLOAT = 1, ...).
 *
 * Every failure is a dp_status with the message (dp_last_error) naming the file, the part of
 * it (graph input, node, attribute, initializer) and the reason. The symbols are hidden in the
 * shared library (tests and the CLI link the static one). */
#ifndef DP_IO_ONNX_H
#define DP_IO_ONNX_H
#include <stddef.h>
#include <stdint.h>

#include "dpsgd/core.h"

#ifndef DP_HIDDEN
#define DP_HIDDEN __attribute__((visibility("hidden")))
#endif

/* The largest .onnx (or .pb) file read: protobuf's own limit for one message (2 GiB - 1).
 * Bigger models keep their weights in external data files, which are read tensor by tensor. */
#define DP__ONNX_MAX_FILE_BYTES ((size_t)0x7fffffff)
/* The deepest nesting of messages accepted (subgraphs in subgraphs, sequence types of sequence
 * types); protobuf-c recurses once per level and a deeper file would overflow the stack. */
#define DP__ONNX_MAX_DEPTH 64
/* The most dimensions a tensor or a graph input may have. */
#define DP__ONNX_MAX_DIMS 32

/* element types: ONNX TensorProto.DataType */
enum {
    DP__ONNX_UNDEFINED = 0,
    DP__ONNX_FLOAT = 1,
    DP__ONNX_UINT8 = 2,
    DP__ONNX_INT8 = 3,
    DP__ONNX_UINT16 = 4,
    DP__ONNX_INT16 = 5,
    DP__ONNX_INT32 = 6,
    DP__ONNX_INT64 = 7,
    DP__ONNX_STRING = 8,
    DP__ONNX_BOOL = 9,
    DP__ONNX_FLOAT16 = 10,
    DP__ONNX_DOUBLE = 11,
    DP__ONNX_UINT32 = 12,
    DP__ONNX_UINT64 = 13,
    DP__ONNX_COMPLEX64 = 14,
    DP__ONNX_COMPLEX128 = 15,
    DP__ONNX_BFLOAT16 = 16
};
/* "FLOAT", "INT64", ...; "type 99" style text for an unknown number (a static buffer per
 * thread) */
DP_HIDDEN const char *dp__onnx_type_name(int elem_type);
/* 1 for the types read as float (FLOAT, DOUBLE, FLOAT16, BFLOAT16), 2 for those read as int64
 * (INT8..INT64, UINT8..UINT64, BOOL), 3 for STRING, 0 for the rest (complex, unknown) */
DP_HIDDEN int dp__onnx_type_class(int elem_type);

/* A tensor: an initializer, a TENSOR attribute (Constant's value), or a TensorProto file.
 * Exactly one of f, i, s is set, by dp__onnx_type_class(elem_type), unless count is 0 (then
 * all may be NULL). FLOAT16, BFLOAT16 and DOUBLE are converted to float (a double beyond
 * float's range becomes +-inf); integer types and BOOL (0/1) to int64 (a UINT64 above
 * INT64_MAX is refused). */
typedef struct {
    const char *name; /* "" when the file gives none */
    int elem_type;    /* DP__ONNX_* */
    int ndim;         /* 0 for a scalar */
    const int64_t *dims;
    size_t count; /* product of dims (1 for a scalar) */
    const float *f;
    const int64_t *i;
    const char *const *s; /* STRING: count byte strings, each NUL-terminated ... */
    const size_t *s_len;  /* ... and of this length (they may hold NULs) */
    int external;         /* 1: the data came from an external data file */
} dp__onnx_tensor;

/* graph inputs, outputs and value_info entries */
enum {
    DP__ONNX_VALUE_NONE = 0, /* no type given */
    DP__ONNX_VALUE_TENSOR,
    DP__ONNX_VALUE_SEQUENCE,
    DP__ONNX_VALUE_MAP,
    DP__ONNX_VALUE_OPTIONAL,
    DP__ONNX_VALUE_SPARSE_TENSOR
};
typedef struct {
    const char *name;
    int kind;      /* DP__ONNX_VALUE_* */
    int elem_type; /* tensors: DP__ONNX_*, else 0 */
    int ndim;      /* -1: rank unknown (no shape given); else the number of dims */
    /* dims[d] >= 0: a fixed size (dim_value); -1: not fixed, and dim_param[d] is its symbolic
     * name ("batch", "N") or "" when the file gives neither */
    const int64_t *dims;
    const char *const *dim_param;
} dp__onnx_value;

/* attribute types: ONNX AttributeProto.AttributeType */
enum {
    DP__ONNX_ATTR_UNDEFINED = 0,
    DP__ONNX_ATTR_FLOAT = 1,
    DP__ONNX_ATTR_INT = 2,
    DP__ONNX_ATTR_STRING = 3,
    DP__ONNX_ATTR_TENSOR = 4,
    DP__ONNX_ATTR_GRAPH = 5,
    DP__ONNX_ATTR_FLOATS = 6,
    DP__ONNX_ATTR_INTS = 7,
    DP__ONNX_ATTR_STRINGS = 8,
    DP__ONNX_ATTR_TENSORS = 9,
    DP__ONNX_ATTR_GRAPHS = 10,
    DP__ONNX_ATTR_SPARSE_TENSOR = 11,
    DP__ONNX_ATTR_SPARSE_TENSORS = 12,
    DP__ONNX_ATTR_TYPE_PROTO = 13,
    DP__ONNX_ATTR_TYPE_PROTOS = 14
};
DP_HIDDEN const char *dp__onnx_attr_type_name(int type);
/* An attribute. FLOAT, INT, STRING, TENSOR, FLOATS, INTS and STRINGS carry their value; the
 * other types (GRAPH, TENSORS, SPARSE_TENSOR, TYPE_PROTO, ...) only their name and type, so
 * that a model using them still loads and the graph layer can refuse the node by name. */
typedef struct {
    const char *name;
    int type;      /* DP__ONNX_ATTR_* */
    float f;       /* FLOAT */
    int64_t i;     /* INT */
    const char *s; /* STRING (NUL-terminated; s_len bytes) */
    size_t s_len;
    size_t n; /* FLOATS, INTS, STRINGS: the number of values */
    const float *floats;
    const int64_t *ints;
    const char *const *strings;
    const size_t *strings_len;
    const dp__onnx_tensor *t; /* TENSOR */
} dp__onnx_attr;

typedef struct {
    const char *name; /* "" when unnamed */
    const char *op_type;
    const char *domain; /* "" is the default domain (ai.onnx) */
    int n_inputs, n_outputs, n_attrs;
    const char *const *inputs; /* "" for an omitted optional input */
    const char *const *outputs;
    const dp__onnx_attr *attrs;
} dp__onnx_node;

typedef struct {
    const char *domain; /* "" for ai.onnx */
    int64_t version;
} dp__onnx_opset;

typedef struct dp__onnx_model {
    const char *path; /* as given to the loader ("<memory>" style label when parsed) */
    int64_t ir_version;
    const char *producer_name, *producer_version;
    const char *graph_name;
    int n_opsets;
    const dp__onnx_opset *opsets;
    int n_inputs, n_outputs, n_value_info;
    const dp__onnx_value *inputs; /* graph.input in file order (may include initializers,
                                   * as older exporters list them) */
    const dp__onnx_value *outputs;
    const dp__onnx_value *value_info;
    int n_nodes;
    const dp__onnx_node *nodes; /* graph.node in file order */
    int n_initializers;
    const dp__onnx_tensor *initializers; /* graph.initializer in file order, names unique */
    void *mem_;                          /* private: the model's memory */
} dp__onnx_model;

/* Reads the .onnx file at path. External data (data_location EXTERNAL) is read from files in
 * the model's directory; a location that is absolute, has a ".." component or resolves (through
 * symbolic links) outside that directory is refused. */
DP_HIDDEN dp_status dp__onnx_load(const char *path, dp__onnx_model **out);
/* The same from memory; label names the input in messages. base_dir is the directory external
 * data is read from; NULL refuses external data. */
DP_HIDDEN dp_status dp__onnx_parse(const void *data, size_t size, const char *label, const char *base_dir,
                                   dp__onnx_model **out);
DP_HIDDEN void dp__onnx_free(dp__onnx_model *m);

/* lookups (NULL / 0 when absent) */
DP_HIDDEN const dp__onnx_tensor *dp__onnx_find_initializer(const dp__onnx_model *m, const char *name);
DP_HIDDEN const dp__onnx_attr *dp__onnx_find_attr(const dp__onnx_node *n, const char *name);
/* the opset version imported for domain ("" or "ai.onnx": the default domain); 0 if none */
DP_HIDDEN int64_t dp__onnx_opset_version(const dp__onnx_model *m, const char *domain);

/* A standalone TensorProto file (libonnx-testdata's test_data_set_N/input_N.pb). External data
 * is refused there. */
typedef struct dp__onnx_tensor_file dp__onnx_tensor_file;
DP_HIDDEN dp_status dp__onnx_load_tensor(const char *path, dp__onnx_tensor_file **out);
DP_HIDDEN dp_status dp__onnx_parse_tensor(const void *data, size_t size, const char *label, dp__onnx_tensor_file **out);
DP_HIDDEN const dp__onnx_tensor *dp__onnx_tensor_file_get(const dp__onnx_tensor_file *tf);
DP_HIDDEN void dp__onnx_tensor_file_free(dp__onnx_tensor_file *tf);

/* One replacement for dp__onnx_save_initializers: the FLOAT initializer called name gets
 * count floats (count must equal its element count; dims are kept). */
typedef struct {
    const char *name;
    const float *data;
    size_t count;
} dp__onnx_replacement;

/* Writes out_model: in_model with the given FLOAT initializers replaced (stored as
 * little-endian raw_data), every external tensor folded in as raw_data (the result stands
 * alone; a result over 2 GiB is refused), and everything else as it was (unknown fields
 * included; protobuf-c re-serializes the message, so bytes may differ where the input's
 * encoding was not canonical). Written to a temporary file next to out_model, fsync'ed and
 * renamed into place, so out_model is either the old file or the whole new one; out_model may
 * be in_model. A name that is not a FLOAT initializer of the graph, a count that differs, or
 * the same name twice is refused before anything is written. */
DP_HIDDEN dp_status dp__onnx_save_initializers(const char *in_model, const char *out_model, int n,
                                               const dp__onnx_replacement *repl);
#endif
