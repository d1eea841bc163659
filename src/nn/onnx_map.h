/* nn/onnx_map.h (internal): what the files of the ONNX importer share: onnx.c (loading, the
 * model input, values and nodes), onnx_layers.c (the operators that map onto built-in layers,
 * and the dispatcher), onnx_fuse.c (export patterns mapped onto one layer), onnx_ops.c (the
 * general tensor operators: layouts, matrix products of activations, broadcasting, softmax,
 * slices, reductions) and onnx_sym.c (shape arithmetic folded at load, the batch kept as a
 * symbol).
 *
 * Every activation has a logical shape, the ONNX one: nd axes, one of which (bax) holds the
 * batch, possibly merged with other axes as PyTorch's attention export does ([T, B*H, d]):
 * that axis has bp * B * bm values, bp outer and bm inner. It is stored batch first: each
 * sample's values are one block, the logical axes in order with the batch axis replaced by
 * its factors bp and bm (the "physical" dims). A reshape never moves data (the order of each
 * sample's values does not change), a transpose moves them within each sample, and no
 * operator may reduce or mix along the batch: the importer refuses it. */
#ifndef DP_NN_ONNX_MAP_H
#define DP_NN_ONNX_MAP_H
#include "io/onnx.h"
#include "nn/graph.h"

enum { V_ACT, V_PARAM, V_CONST, V_SYM, V_GN_RESHAPE, V_GN_NORM };
enum { DP__SYM_MAX = 8 };

/* an integer of shape arithmetic: c0 + c1 * batch */
typedef struct {
    int64_t c0, c1;
} dp__sym;

typedef struct {
    const char *name;
    int kind;
    int node;                 /* V_ACT: model node (-1: the model input); V_GN_*: the value index of the
                               * activation it came from */
    int rank;                 /* V_ACT: per-sample rank of a batch-first layout (1 vector, 2 sequence, 3
                               * image); 0 token ids; -1 values of an unknown shape
                               * (DP__ONNX_BIND_FLAT_INPUT); -2 any other layout */
    int nd, bax;              /* V_ACT: the logical shape (onnx_map.h's header) */
    int64_t ld[8], bp, bm;
    const dp__onnx_tensor *t; /* V_PARAM: the initializer; V_CONST: the tensor */
    int groups;               /* V_GN_*: G */
    float eps;                /* V_GN_NORM */
    int vnd;                  /* V_PARAM: the dims it is seen with (Unsqueeze adds 1s, Transpose swaps) */
    int64_t vdims[8];
    int ptrans;               /* V_PARAM: seen through Transpose (perm [1, 0]) */
    int bexp;                 /* V_PARAM: expanded over the batch (Expand): vdims[bax] is the batch axis
                               * (ViT's class token before its Concat) */
    int nsym, sscalar;        /* V_SYM: nsym values (a scalar when sscalar) */
    dp__sym sym[DP__SYM_MAX];
} dp__oval;

typedef struct {
    const char *path;
    const dp__onnx_model *g;
    dp_model *m;
    dp__oval *v;
    int nv, capv;
    dp__onnx_tensor *init; /* the initializers: the file's, and (bound) the bound graph inputs */
    int ninit;
    unsigned char *used;   /* [ninit]: consumed as a parameter */
    int64_t batch0;        /* the graph input's dim 0 when fixed (> 0), else 0 */
} dp__octx;

/* onnx.c */
DP_HIDDEN dp_status dp__onnx_node_fail(const dp__octx *c, const dp__onnx_node *n, const char *why);
DP_HIDDEN int dp__onnx_find(const dp__octx *c, const char *name);
DP_HIDDEN int dp__onnx_add_val(dp__octx *c, dp__oval x);
DP_HIDDEN int64_t dp__onnx_attr_int(const dp__onnx_node *n, const char *name, int64_t def);
/* a normalisation's epsilon attribute (default 1e-5): a float, finite and above 0, else the
 * node is refused */
DP_HIDDEN dp_status dp__onnx_epsilon(const dp__octx *c, const dp__onnx_node *n, float *eps);
DP_HIDDEN dp_status dp__onnx_take_param(dp__octx *c, const dp__onnx_node *n, int vi);
/* a new node reading activation value `in`, its input fields set from the value's shape */
DP_HIDDEN dp__node *dp__onnx_new_node(dp__octx *c, dp_layer_kind kind, int in);
DP_HIDDEN void dp__onnx_param_names(dp__node *l, const dp__onnx_tensor *w, const dp__onnx_tensor *b,
                                    const dp__onnx_node *n);
/* finish node l and name output 0 of n after it: a batch-first output of this rank (1, 2, 3),
 * shaped from the node's fields */
DP_HIDDEN dp_status dp__onnx_finish(dp__octx *c, dp__node *l, const dp__onnx_node *n, int rank);
/* ... or with the logical shape of `like` (its last axis last > 0 values when given) */
DP_HIDDEN dp_status dp__onnx_finish_like(dp__octx *c, dp__node *l, const dp__onnx_node *n, const dp__oval *like,
                                         int64_t last);
/* the rank field of an activation value from its logical shape */
DP_HIDDEN void dp__onnx_set_rank(dp__oval *v);
/* physical dims of an activation value; first[i] .. first[i + 1] are logical axis i's; -1 when
 * there are more than DP__TMAXD */
DP_HIDDEN int dp__onnx_phys(const dp__oval *v, int pd[DP__TMAXD], int first[9]);
/* input fields of l: rows of the value's last physical axis (a sequence view) */
DP_HIDDEN void dp__onnx_view_rows(dp__node *l, const dp__oval *v);

/* onnx_layers.c: map graph node n (the operators of the built-in layers, else shape folding and
 * the general operators), or refuse it naming it */
DP_HIDDEN dp_status dp__onnx_map_node(dp__octx *c, const dp__onnx_node *n);

/* onnx_sym.c: 1 when n is shape arithmetic it folded (or refused: *st), 0 when it is not */
DP_HIDDEN int dp__onnx_map_sym(dp__octx *c, const dp__onnx_node *n, dp_status *st);
/* the integers of value vi (V_SYM, or an integer V_CONST with at most DP__SYM_MAX values) */
DP_HIDDEN int dp__onnx_ints(const dp__octx *c, int vi, dp__sym *out, int *n);

/* onnx_fuse.c: how many inputs of nodes (and graph outputs) read value name; *first: the first
 * node that does */
DP_HIDDEN int dp__onnx_readers(const dp__onnx_model *g, const char *name, int *first);
/* 1 when graph node i starts a pattern mapped onto one layer (GELU's export), its nodes
 * marked in skip (or refused: *st) */
DP_HIDDEN int dp__onnx_fuse(dp__octx *c, int i, unsigned char *skip, dp_status *st);

/* onnx_ops.c: 1 when n is a general tensor operator it mapped (or refused: *st) */
DP_HIDDEN int dp__onnx_map_tensor(dp__octx *c, const dp__onnx_node *n, dp_status *st);
#endif
