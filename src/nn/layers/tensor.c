/* nn/layers/tensor.c: the general tensor layers of imported models (nn/onnx.c builds them;
 * no spec names them): transpose, matmul (two activations), softmax, unary (Erf, Sqrt, Exp,
 * ...), binary (Add, Sub, Mul, Div, Pow with broadcasting, of two activations or of an
 * activation and a constant), slice, concat and reduce (sum or mean over axes). None has
 * parameters. Each sample's values are one block of the node's per-sample dims (the fields
 * t*, m* and op of dp__node, set by the importer, which also sets the output's oc, oh, ow);
 * the batch is never an operand's axis, so no layer here mixes samples. */
#include <string.h>

#include "nn/graph.h"
#include "nn/kernels/kernels_tensor.h"

static size_t in_size(const dp_model *m, const dp__node *l, int j) {
    return l->in[j] < 0 ? m->in_size : m->L[l->in[j]].out_size;
}

/* ---- transpose ------------------------------------------------------------------------- */

static dp_status transpose_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_permute_f32(l->out, dp__input(m, l, 0), B, l->tnd, l->tdim, l->tperm, 0);
    return DP_OK;
}
static void transpose_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_permute_f32(din, g, B, l->tnd, l->tdim, l->tperm, 1);
}
const dp__layer_ops dp__ops_DP_LAYER_TRANSPOSE = {
    .flags = DP__LF_BUILT,
    .forward = transpose_forward,
    .bwd_input = transpose_bwd_input,
};

/* ---- matmul: per sample, G products [M, K] x [K, N] of two activations ------------------- */

static dp_status matmul_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_bmm_fwd_f32(l->out, dp__input(m, l, 0), dp__input(m, l, 1), B, l->mg, l->mm, l->mk, l->mn, l->mga, l->mgb);
    return DP_OK;
}
static dp_status matmul_bwd_inputs(dp_model *m, const dp__node *l, float *const din[3], const int acc[3], const float *g,
                                   int B) {
    const float *a = dp__input(m, l, 0), *b = dp__input(m, l, 1);
    if (din[0] && din[1] && l->in[0] == l->in[1]) { /* x x: the two gradients go to one buffer, in turn */
        dp__k_bmm_bwd_f32(din[0], NULL, acc[0], 0, g, a, b, B, l->mg, l->mm, l->mk, l->mn, l->mga, l->mgb);
        dp__k_bmm_bwd_f32(NULL, din[1], 0, 1, g, a, b, B, l->mg, l->mm, l->mk, l->mn, l->mga, l->mgb);
        return DP_OK;
    }
    dp__k_bmm_bwd_f32(din[0], din[1], acc[0], acc[1], g, a, b, B, l->mg, l->mm, l->mk, l->mn, l->mga, l->mgb);
    return DP_OK;
}
static void matmul_flops(const dp__node *l, double *fwd, double *bwd_weight, double *bwd_input) {
    *fwd = 2.0 * l->mg * l->mm * l->mk * l->mn;
    *bwd_weight = 0;
    *bwd_input = 2 * *fwd;
}
const dp__layer_ops dp__ops_DP_LAYER_MATMUL = {
    .flags = DP__LF_BUILT | DP__LF_MULTI | DP__LF_READS_IN,
    .forward = matmul_forward,
    .bwd_inputs = matmul_bwd_inputs,
    .flops = matmul_flops,
};

/* ---- softmax over the last axis (op 1: log-softmax) ------------------------------------- */

static dp_status softmax_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_softmax_fwd_f32(l->out, dp__input(m, l, 0), (size_t)B * l->out_size / (size_t)l->tn, l->tn, l->op);
    return DP_OK;
}
static void softmax_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_softmax_bwd_f32(din, g, l->out, (size_t)B * l->out_size / (size_t)l->tn, l->tn, l->op);
}
const dp__layer_ops dp__ops_DP_LAYER_SOFTMAX = {
    .flags = DP__LF_BUILT | DP__LF_READS_OUT,
    .forward = softmax_forward,
    .bwd_input = softmax_bwd_input,
};

/* ---- unary: y = f(x) (p: LeakyRelu's slope) ---------------------------------------------- */

static dp_status unary_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_unary_fwd_f32(l->out, dp__input(m, l, 0), (size_t)B * l->out_size, l->op, l->p);
    return DP_OK;
}
static void unary_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_unary_bwd_f32(din, g, dp__input(m, l, 0), (size_t)B * l->out_size, l->op, l->p);
}
const dp__layer_ops dp__ops_DP_LAYER_UNARY = {
    .flags = DP__LF_BUILT | DP__LF_READS_IN | DP__LF_INPLACE,
    .forward = unary_forward,
    .bwd_input = unary_bwd_input,
};

/* ---- binary: y = a op b, broadcasting ------------------------------------------------------ */

/* The kernels' view: the batch as axis 0 (a constant's batch stride is 0). */
typedef struct {
    int nd, dims[DP__TMAXD + 1], sa[DP__TMAXD + 1], sb[DP__TMAXD + 1];
    const float *a, *b;
} bin_view;

static bin_view bin_make(const dp_model *m, const dp__node *l, int B) {
    bin_view v = {.nd = l->tnd + 1};
    v.dims[0] = B;
    for (int d = 0; d < l->tnd; d++) {
        v.dims[d + 1] = l->tdim[d];
        v.sa[d + 1] = l->tsa[d];
        v.sb[d + 1] = l->tsb[d];
    }
    const float *x = dp__input(m, l, 0);
    if (l->cside < 0) {
        v.a = x;
        v.b = dp__input(m, l, 1);
        v.sa[0] = (int)in_size(m, l, 0);
        v.sb[0] = (int)in_size(m, l, 1);
    } else {
        v.a = l->cside == 0 ? l->cst : x;
        v.b = l->cside == 0 ? x : l->cst;
        v.sa[0] = l->cside == 0 ? 0 : (int)in_size(m, l, 0);
        v.sb[0] = l->cside == 0 ? (int)in_size(m, l, 0) : 0;
    }
    return v;
}

static dp_status binary_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    bin_view v = bin_make(m, l, B);
    dp__k_binary_fwd_f32(l->out, v.a, v.b, v.nd, v.dims, v.sa, v.sb, l->op);
    return DP_OK;
}
static dp_status binary_bwd_inputs(dp_model *m, const dp__node *l, float *const din[3], const int acc[3], const float *g,
                                   int B) {
    bin_view v = bin_make(m, l, B);
    float *da = NULL, *db = NULL;
    if (l->cside < 0) {
        for (int j = 0; j < 2; j++)
            if (din[j] && !acc[j] && !(j == 1 && din[0] && l->in[0] == l->in[1]))
                memset(din[j], 0, sizeof(float) * (size_t)B * in_size(m, l, j));
        da = din[0];
        db = din[1];
    } else {
        if (din[0] && !acc[0]) memset(din[0], 0, sizeof(float) * (size_t)B * in_size(m, l, 0));
        if (l->cside == 0) db = din[0];
        else da = din[0];
    }
    if (da && db && da == db) { /* x op x: one buffer, the two terms in turn */
        dp__k_binary_bwd_f32(da, NULL, g, v.a, v.b, l->out, v.nd, v.dims, v.sa, v.sb, l->op);
        dp__k_binary_bwd_f32(NULL, db, g, v.a, v.b, l->out, v.nd, v.dims, v.sa, v.sb, l->op);
    } else
        dp__k_binary_bwd_f32(da, db, g, v.a, v.b, l->out, v.nd, v.dims, v.sa, v.sb, l->op);
    return DP_OK;
}
const dp__layer_ops dp__ops_DP_LAYER_BINARY = {
    .flags = DP__LF_BUILT | DP__LF_MULTI | DP__LF_READS_IN | DP__LF_READS_OUT,
    .forward = binary_forward,
    .bwd_inputs = binary_bwd_inputs,
};

/* ---- slice: [outer, n, inner] -> [outer, count, inner] ------------------------------------- */

static dp_status slice_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_slice_f32(l->out, dp__input(m, l, 0), B, l->touter, l->tn, l->tinner, l->tstart, l->tcount, l->tstep, 0);
    return DP_OK;
}
static void slice_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_slice_f32(din, g, B, l->touter, l->tn, l->tinner, l->tstart, l->tcount, l->tstep, 1);
}
const dp__layer_ops dp__ops_DP_LAYER_SLICE = {
    .flags = DP__LF_BUILT,
    .forward = slice_forward,
    .bwd_input = slice_bwd_input,
};

/* ---- concat of up to three parts along [outer, n, inner]'s middle axis: the inputs in order,
 * and at position cside (>= 0) the node's weight, the same for every sample (a learned token) */

static int nparts(const dp__node *l) { return l->nin + (l->cside >= 0); }
/* part q's input index (-1: the weight) and its length along the axis */
static int part(const dp_model *m, const dp__node *l, int q, int *len) {
    const int j = l->cside < 0 || q < l->cside ? q : q == l->cside ? -1 : q - 1;
    const size_t sz = j < 0 ? l->nw : in_size(m, l, j);
    *len = (int)(sz / (l->touter * l->tinner));
    return j;
}

static dp_status concat_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    for (int q = 0, at = 0, len; q < nparts(l); q++, at += len) {
        int j = part(m, l, q, &len);
        if (j >= 0) {
            dp__k_slice_f32(l->out, dp__input(m, l, j), B, l->touter, l->tn, l->tinner, at, len, 1, 2);
            continue;
        }
        for (int b = 0; b < B; b++)
            dp__k_slice_f32(l->out + (size_t)b * l->out_size, dp__weight(m, l), 1, l->touter, l->tn, l->tinner, at, len, 1, 2);
    }
    return DP_OK;
}
static dp_status concat_bwd_inputs(dp_model *m, const dp__node *l, float *const din[3], const int acc[3], const float *g,
                                   int B) {
    for (int q = 0, at = 0, len; q < nparts(l); q++, at += len) {
        int j = part(m, l, q, &len);
        if (j < 0 || !din[j]) continue;
        const size_t n = (size_t)B * in_size(m, l, j);
        float *dst = din[j];
        if (acc[j]) { /* gather the part, then add it */
            dst = dp_alloc(sizeof(float) * (n ? n : 1));
            if (!dst) return DP_ERR_NOMEM;
        }
        dp__k_slice_f32(dst, g, B, l->touter, l->tn, l->tinner, at, len, 1, 0);
        if (acc[j]) {
            for (size_t i = 0; i < n; i++) din[j][i] += dst[i];
            dp_free(dst);
        }
    }
    return DP_OK;
}
/* the weight's part of samples b0 .. b0+nb-1 of dout into rows of ps */
static void token_rows(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int nb) {
    for (int q = 0, at = 0, len; q < nparts(l); q++, at += len)
        if (part(m, l, q, &len) < 0)
            for (int b = 0; b < nb; b++)
                dp__k_slice_f32(ps + (size_t)b * stride, dout + (size_t)b * l->out_size, 1, l->touter, l->tn, l->tinner, at,
                                len, 1, 0);
}
static void concat_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0,
                           int nb) {
    (void)b0;
    token_rows(m, l, ps, stride, dout, nb);
}
static void concat_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    float *row = dp_alloc(sizeof(float) * l->nw);
    if (!row) return; /* bwd_param cannot fail; a token of a few values: never in practice */
    float *gw = m->grad + l->w_off;
    for (int b = 0; b < B; b++) {
        token_rows(m, l, row, l->nw, dout + (size_t)b * l->out_size, 1);
        for (size_t i = 0; i < l->nw; i++) gw[i] += row[i];
    }
    dp_free(row);
}
const dp__layer_ops dp__ops_DP_LAYER_CONCAT = {
    .flags = DP__LF_BUILT | DP__LF_MULTI,
    .forward = concat_forward,
    .bwd_inputs = concat_bwd_inputs,
    .bwd_param = concat_bwd_param,
    .ps_grad = concat_ps_grad,
};

/* ---- reduce: the sum (op 1: mean) over some axes ------------------------------------------- */

static dp_status reduce_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_reduce_fwd_f32(l->out, dp__input(m, l, 0), B, l->tnd, l->tdim, l->axes, l->op);
    return DP_OK;
}
static void reduce_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_reduce_bwd_f32(din, g, B, l->tnd, l->tdim, l->axes, l->op);
}
const dp__layer_ops dp__ops_DP_LAYER_REDUCE = {
    .flags = DP__LF_BUILT,
    .forward = reduce_forward,
    .bwd_input = reduce_bwd_input,
};
