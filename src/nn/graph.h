/* nn/graph.h (internal): the model graph, its nodes, and the layer-operations table.
 *
 * A model is a graph of nodes in topological order. A node reads the outputs of up to three
 * earlier nodes (or the model input) and writes one output. Everything a layer kind does is
 * one row of the table dp__layer_ops[kind] (nn/layers/table.c), written in the kind's family
 * file (nn/layers/): spec arguments, output shape, parameters and their initialisation,
 * forward, backward, per-sample gradients, ghost norms, FLOPs, saved and scratch sizes. The
 * engine (nn/engine.c), the memory plan (nn/memplan.c) and the clipping engine (nn/clip.c)
 * only ask the table; nothing outside the table and the layer files switches on a kind.
 *
 * Files: graph.c (building, parameters, accessors), spec.c (the spec parser), transformer.c
 * (the BERT-like builder), memplan.c (activation buffers), engine.c (forward, backward),
 * clip.c (clip factors, clipping plans, the clipped sum, memory estimates). */
#ifndef DP_NN_GRAPH_H
#define DP_NN_GRAPH_H
#include <stddef.h>
#include <stdint.h>

#include "dpsgd/nn.h"
#include "nn/kernels/kernels_tensor.h"

enum { DP__NAME_LEN = 80, DP__MAX_SLOTS = 64 };

typedef struct {
    dp_layer_kind kind;
    int in[3], nin;      /* input nodes, -1 = the model input */
    int seq;             /* the output is a sequence [T, F] (oc = F, oh = T, ow = 1) */
    int iseq;            /* the input is a sequence */
    int ic, ih, iw, oc, oh, ow;
    size_t in_size, out_size;
    int k, s, pad, has_bias, groups, heads, vocab;
    int dil;             /* conv2d: dilation (0 or 1: none); groups: conv2d groups (0 or 1: none) */
    int padl, padb, padr; /* conv2d, pooling: zero padding left, below, right (pad: above); pP sets all four */
    int ceil_mode;        /* pooling: the output size rounds up (ONNX ceil_mode) */
    float p, eps;
    size_t w_off, nw, b_off, nb;
    int frozen;
    int plain;           /* a normalisation without affine parameters (imported models) */
    int excl_pad;        /* avgpool: divide by the real positions of a window, not k*k (ONNX default) */
    char name[DP__NAME_LEN];
    /* parameter tensor names when they are not "<name>.weight" / "<name>.bias" (imported) */
    char wname[DP__NAME_LEN + 8], bname[DP__NAME_LEN + 8];
    /* their shapes in the file when they are not the kind's (imported; 0: the kind's) */
    int wnd;
    int64_t wdims[4];
    int wtrans;          /* the file stores the weight [in, out] (transposed): read and written so */
    /* general tensor layers (layers/tensor.c, imported models); dims are per sample */
    int tnd;                       /* axes of tdim */
    int tdim[DP__TMAXD];           /* TRANSPOSE, REDUCE: the input's dims; BINARY: the output's */
    int tperm[DP__TMAXD];          /* TRANSPOSE: output axis j is input axis tperm[j] */
    int tsa[DP__TMAXD], tsb[DP__TMAXD]; /* BINARY: the operands' strides along tdim (0: broadcast) */
    int op;                        /* UNARY, BINARY: DP__UN_*, DP__BIN_*; SOFTMAX: log-softmax; REDUCE: mean */
    int cside;                     /* BINARY: -1 two activations; 0 (1): the constant is operand a (b) */
    float *cst;                    /* BINARY: the constant operand (owned), ncst values */
    size_t ncst;
    unsigned axes;                 /* REDUCE: bit j: axis j of tdim is reduced */
    size_t touter, tinner;         /* SLICE, CONCAT: [outer, n, inner] around the axis */
    int tn, tstart, tcount, tstep; /* SLICE: n, start, count, step; CONCAT: n (the output's) */
    int mg, mm, mk, mn, mga, mgb;  /* MATMUL: G products [M, K] x [K, N]; ga/gb 0: one matrix for all G */
    /* memory plan (memplan.c) */
    int need_grad, keep_out, keep_saved, fslot, gslot, last_use;
    /* fusion (memplan.c): 1 on a conv2d whose only reader is the tanh right after it (the
     * conv's forward writes tanh of its output into the tanh's buffer and leaves its own
     * unwritten), 2 on that tanh (its forward does nothing; its backward is unchanged) */
    int fuse_tanh;
    /* 1 on a max pooling that finds its winners from its input (dp__maxpool_recomputes) whose
     * input is a tanh read by nothing else, itself the only reader of its input: the pooling's
     * backward applies the tanh's derivative and writes the tanh's input gradient; 2 on that
     * tanh (its input backward does nothing; its output-gradient slot is its input's) */
    int fuse_tanh_bwd;
    /* 1 on a flatten whose input is a node read by nothing else (memplan.c): its output is its
     * input's buffer (no copy either way), and its output gradient shares its input's slot */
    int view;
    /* a trainable conv2d with ghost norms and T <= DP__GRAM_FWD_T: where its input's Grams start
     * in the model's Gram block, per sample (dp__gram_layer; the block holds B times this) */
    size_t gram_off;
    /* buffers: own_* are owned; out/xhat/rstd/P/arg/mask point at own or shared memory */
    float *own_out, *own_saved;
    float *out, *xhat, *rstd, *P;
    int32_t *arg;
    unsigned char *mask;
} dp__node;

struct dp_model {
    int n, capn;
    dp__node *L;
    int c, h, w;
    int tokens;       /* the input is T = c*h*w token ids (first node is an embedding) */
    int bert_init;    /* N(0, 0.02) weights, zero biases (the transformer builder) */
    size_t in_size, max_size;
    size_t np;
    float *params, *grad;
    unsigned char *tmask;
    int planned;      /* the memory plan (node fields, slot sizes) matches the frozen set */
    int stale;        /* the buffers were allocated for an older plan: reallocate them */
    int cap;          /* batch capacity of the activation buffers */
    const float *x;   /* input of the last forward (borrowed) */
    int fwd_B, fwd_train;
    int32_t *ids;     /* token models: [cap, T] */
    unsigned char *kvalid; /* [cap, T] */
    int nfslots, ngslots;           /* slots of the plan */
    int alloc_nf, alloc_ng;         /* slots allocated (an older plan's while stale) */
    size_t fsz[DP__MAX_SLOTS], gsz[DP__MAX_SLOTS], accsz; /* floats per sample of each slot and of the accumulator */
    float **fslots, **gslots, *gacc;
    void *shared_saved;
    unsigned char *gw; /* [n] gradient slot written in this backward */
    float *work;      /* scratch for conv, ghost norms, attention */
    size_t work_floats;
    int work_threads; /* the OpenMP threads work has room for (a share each) */
    double *sq, *sq1; /* [cap] */
    void *scratch;    /* a DP step's large block (bk/auto's kept tensors, vanilla's per-sample
                       * gradients), kept between steps so that it is not faulted in anew */
    size_t scratch_bytes;
    /* The unfolded inputs' Grams of the convolutions whose ghost norms use them (engine.c,
     * dp__gram_layer): made by a training forward while grams_want is set (by a private
     * step's clipped gradient with ghost norms; cleared by a non-private backward), read by
     * the ghost norms of the backward after it. grams_B: the batch the last (or running)
     * forward made them for, else 0. */
    float *grams;
    size_t grams_cap; /* floats */
    int grams_want, grams_B;
    int ntensors;
    char (*tnames)[DP__NAME_LEN + 8];
    size_t *toff, *tcount;
    int *tnode;
};

/* A layer of a spec string: "name(arg,arg)@label". */
typedef struct {
    char name[16];
    char args[8][16];
    int nargs;
    char label[DP__NAME_LEN];
} dp__spec_token;

/* Layer flags */
enum {
    DP__LF_BUILT = 1 << 0,        /* joins several inputs: only in built models, not in specs */
    DP__LF_IMAGE = 1 << 1,        /* needs an image input (C x H x W) */
    DP__LF_SEQ = 1 << 2,          /* needs a sequence input */
    DP__LF_READS_OUT = 1 << 3,    /* its input backward reads its own output */
    DP__LF_READS_IN = 1 << 4,     /* its input backward reads its inputs' values */
    DP__LF_PARAM_READS_IN = 1 << 5, /* its weight gradients read its input's values */
    DP__LF_INPLACE = 1 << 7,      /* element-wise: may overwrite its input in inference */
    DP__LF_MULTI = 1 << 8,        /* input backward writes several inputs (bwd_inputs) */
};

/* Everything one layer kind does. NULL entries: see each field. */
typedef struct {
    unsigned flags;
    /* kind-specific fields from spec arguments (t->nargs may be 0); NULL: takes none */
    dp_status (*parse)(dp_model *m, dp__node *l, const dp__spec_token *t, int idx);
    /* output shape (oc, oh, ow, seq) and parameter counts (nw, nb) from the fields; NULL:
     * the output has the input's shape and there are no parameters */
    void (*shape)(dp__node *l);
    /* initial parameters; NULL: the default (BERT's N(0, 0.02) and zero biases in built
     * transformers, else PyTorch's kaiming-uniform with fan-in nw / oc) */
    void (*init)(const dp_model *m, const dp__node *l, float *w, float *b, dp_rng *rng);
    /* the weight tensor's PyTorch shape, number of dimensions; NULL: [nw] */
    int (*weight_shape)(const dp__node *l, int64_t shape[4]);
    /* whether this node's input backward reads its input (DP__LF_READS_IN for one node, not
     * the kind); NULL: the flag decides */
    int (*reads_in)(const dp__node *l);
    /* out = layer(inputs) for B samples */
    dp_status (*forward)(dp_model *m, dp__node *l, int B, int train, dp_rng *rng);
    /* din = d loss / d input from the output gradient g (single input; overwrite din) */
    void (*bwd_input)(dp_model *m, const dp__node *l, float *din, const float *g, int B);
    /* DP__LF_MULTI: din[j] (NULL: input j needs no gradient), acc[j]: add to it */
    dp_status (*bwd_inputs)(dp_model *m, const dp__node *l, float *const din[3], const int acc[3], const float *g,
                            int B);
    /* grad += sum over samples of the weight gradients (layers with parameters) */
    void (*bwd_param)(dp_model *m, const dp__node *l, const float *dout, int B);
    /* per-sample gradients of samples b0 .. b0+nb-1 into rows of ps (stride floats apart,
     * weight then bias) from their output-gradient rows dout */
    void (*ps_grad)(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb);
    /* sq[b] += per-sample squared gradient norm without forming the gradient; NULL: none */
    void (*ghost_sq)(dp_model *m, const dp__node *l, const float *dout, int B, double *sq);
    /* per-sample FLOPs of the two norm methods; NULL: no ghost norm, instantiation
     * 2 (nw + nb) T */
    void (*norm_cost)(const dp__node *l, double *ghost, double *inst);
    /* per-sample FLOPs of the matrix products (dp_model_layer_flops); NULL: 0 */
    void (*flops)(const dp__node *l, double *fwd, double *bwd_weight, double *bwd_input);
    /* floats per sample of saved tensors, and pointing them into base (B samples); NULL: none */
    size_t (*saved_floats)(const dp__node *l);
    void (*assign_saved)(dp__node *l, char *base, size_t B);
    /* scratch floats for B samples and nt threads; NULL: none */
    size_t (*work_floats)(const dp__node *l, int B, size_t nt);
} dp__layer_ops;

extern const dp__layer_ops *const dp__layer_ops_table[DP_LAYER_COUNT];
static inline const dp__layer_ops *dp__ops(const dp__node *l) { return dp__layer_ops_table[l->kind]; }

/* One row per kind, defined in the layer files (nn/layers/), named after the enum. */
#define DP__OPS_DECL(name, text) extern const dp__layer_ops dp__ops_##name;
DP_LAYER_LIST(DP__OPS_DECL)
#undef DP__OPS_DECL

static inline int dp__has_params(const dp__node *l) { return l->nw > 0; }
static inline int dp__trainable(const dp__node *l) { return l->nw > 0 && !l->frozen; }
static inline const float *dp__input(const dp_model *m, const dp__node *l, int j) {
    return l->in[j] < 0 ? m->x : m->L[l->in[j]].out;
}
static inline const float *dp__weight(const dp_model *m, const dp__node *l) { return m->params + l->w_off; }
static inline const float *dp__bias(const dp_model *m, const dp__node *l) { return l->nb ? m->params + l->b_off : NULL; }
static inline int dp__seq_T(const dp__node *l) { return l->iseq ? l->ih : 1; } /* rows per sample of a Linear */

/* graph.c */
dp_model *dp__model_new(int c, int h, int w);
dp__node *dp__push_node(dp_model *m, dp_layer_kind kind, int in0);
void dp__finish_node(dp_model *m, dp__node *l, int idx, const char *name);
dp_status dp__finish_model(dp_model *m);
/* conv2d geometry: groups divide the channels, the dilated kernel fits the padded input (dense.c) */
dp_status dp__conv_check(const dp__node *l, const char *what);
/* Is the ghost norm node l's cheaper norm method (engine.c; the rule dp_model_norm_method
 * applies in the modes that may use ghost norms)? */
int dp__ghost_cheaper(const dp__node *l);
/* Floats per sample of the input Grams the forward makes for node l (0: none): a trainable
 * conv2d whose norm is a ghost norm (dp__ghost_cheaper) on at most DP__GRAM_FWD_T positions */
size_t dp__gram_layer(const dp__node *l);
/* Floats per sample of the model's Gram block (every such node's) */
size_t dp__gram_floats(const dp_model *m);
/* Node l's Grams in the block when the last (or running) forward made them for batch B, else
 * NULL: where its forward writes them and its ghost norm reads them */
float *dp__grams_of(const dp_model *m, const dp__node *l, int B);
/* dst [cols, rows] = the transpose of src [rows, cols] */
void dp__transpose_copy(float *dst, const float *src, size_t rows, size_t cols);
/* spec.c: integer / real arguments in [lo, hi] */
int dp__parse_int(const char *a, long lo, long hi, long *v);
int dp__parse_real(const char *a, double lo, double hi, double *v);
/* memplan.c */
void dp__plan_current(dp_model *m);
void dp__free_buffers(dp_model *m);
dp_status dp__ensure_capacity(dp_model *m, int B);
size_t dp__buffer_bytes(const dp_model *m, int B, size_t nt);

/* engine.c: one backward pass through the graph from dlogits. */
enum { DP__BWD_PARAM, DP__BWD_NORMS, DP__BWD_PS };
typedef struct {
    int what;                 /* PARAM: grad += weight gradients; NORMS: sq[b] += per-sample squared
                               * norms (and sq_layers[b * n + k] per node when given); PS: per-sample
                               * gradients into ps ([B, np], or [B, trainable] when ps_compact) */
    dp_clip_mode mode;        /* NORMS: picks ghost or instantiation per layer */
    const float *scale;       /* rows of dlogits scaled by scale[b] (NULL: 1) */
    float *ps;
    int ps_compact;
    double *sq, *sq_layers;
    /* book-keeping (clip.c): per node, how its clipped sum is formed (dp_sum_method) ... */
    const unsigned char *cm;
    /* ... pass 1: where node k keeps its output gradient or per-sample gradients (NULL: nothing) */
    float *const *keep;
    int low;                  /* PARAM, >= 0: only DP_SUM_SECOND_PASS nodes, down to this one */
    int stop;                 /* >= 0: the pass ends at this trainable node, its output gradient
                               * formed (dp__out_grad) but nothing computed from it (clip.c) */
    /* NORMS, > 1: the rows come in groups of `group` consecutive rows (augmented copies of one
     * example) and sq[b / group] gets the squared norm of each group's SUMMED gradient; every
     * node then instantiates (dp_clip_params.group) */
    int group;
} dp__bwd;
dp_status dp__backward(dp_model *m, const float *dlogits, int B, const dp__bwd *p);
dp__bwd dp__bwd_init(int what, dp_clip_mode mode); /* no scale, keep or plan; low = stop = -1 */
/* node k's output gradient after a pass that did not keep it (DP_SUM_KEEP_GRAD keeps it in
 * the pass's keep buffer instead): valid until the next backward */
const float *dp__out_grad(const dp_model *m, int k);
/* Per-sample gradients of the trainable coordinates only, [B, trainable], into the step
 * scratch (cached: the clipping step) or a buffer it allocates (*out, dp_free it). */
dp_status dp__ps_trainable(dp_model *m, const float *dlogits, int B, float **out, int cached);
void *dp__step_scratch(dp_model *m, size_t bytes);
size_t dp__trainable_offset(const dp_model *m, int k);
/* samples per instantiation chunk: a multiple of group (0 or 1: no grouping), at least one group */
size_t dp__inst_chunk(const dp__node *l, int B, int group);
/* sq[b * sq_stride] += the squared norm (in double) of row b: width floats at rows + b * stride */
void dp__add_row_sq(double *sq, size_t sq_stride, const float *rows, size_t stride, size_t width, int B);
/* sq[i] += the squared norm (in double) of the sum of rows i G .. i G + G - 1 (G = group > 1),
 * for the B / G groups of B rows; G <= 1 is dp__add_row_sq with sq_stride 1 */
void dp__add_group_sq(double *sq, const float *rows, size_t stride, size_t width, int B, int group);
#endif
