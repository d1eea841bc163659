/* nn/layers/elementwise.c: layers that act on each value alone (relu, tanh, sigmoid, gelu, dropout),
 * flatten, and add (the residual join of built models). None has parameters. */
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

static size_t count(const dp__node *l, int B) { return (size_t)B * l->out_size; }

static dp_status relu_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_relu_fwd_f32(l->out, dp__input(m, l, 0), count(l, B));
    return DP_OK;
}
static void relu_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_relu_bwd_f32(din, g, l->out, count(l, B));
}
const dp__layer_ops dp__ops_DP_LAYER_RELU = {
    .flags = DP__LF_READS_OUT | DP__LF_INPLACE,
    .forward = relu_forward,
    .bwd_input = relu_bwd_input,
};

static dp_status tanh_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    if (l->fuse_tanh == 2) return DP_OK; /* the conv before it wrote the output (memplan.c) */
    dp__k_tanh_fwd_f32(l->out, dp__input(m, l, 0), count(l, B));
    return DP_OK;
}
static void tanh_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_tanh_bwd_f32(din, g, l->out, count(l, B));
}
const dp__layer_ops dp__ops_DP_LAYER_TANH = {
    .flags = DP__LF_READS_OUT | DP__LF_INPLACE,
    .forward = tanh_forward,
    .bwd_input = tanh_bwd_input,
};

static dp_status gelu_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_gelu_fwd_f32(l->out, dp__input(m, l, 0), count(l, B));
    return DP_OK;
}
static void gelu_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_gelu_bwd_f32(din, g, dp__input(m, l, 0), count(l, B));
}
const dp__layer_ops dp__ops_DP_LAYER_GELU = {
    .flags = DP__LF_READS_IN | DP__LF_INPLACE,
    .forward = gelu_forward,
    .bwd_input = gelu_bwd_input,
};

static dp_status sigmoid_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_sigmoid_fwd_f32(l->out, dp__input(m, l, 0), count(l, B));
    return DP_OK;
}
static void sigmoid_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_sigmoid_bwd_f32(din, g, l->out, count(l, B));
}
const dp__layer_ops dp__ops_DP_LAYER_SIGMOID = {
    .flags = DP__LF_READS_OUT | DP__LF_INPLACE,
    .forward = sigmoid_forward,
    .bwd_input = sigmoid_bwd_input,
};

/* ---- dropout(P): the mask (one byte per value) is the saved tensor ------------------------- */

static dp_status dropout_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    double x;
    if (t->nargs != 1 || !dp__parse_real(t->args[0], 0, 0.999999, &x))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: dropout(P) needs P in [0, 1)", idx);
    l->p = (float)x;
    return DP_OK;
}
static dp_status dropout_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    const float *in = dp__input(m, l, 0);
    const size_t n = count(l, B);
    if (train && l->p > 0) {
        if (!rng) return dp_fail(DP_ERR_INVALID, "forward: dropout in training needs an RNG");
        for (size_t j = 0; j < n; j++) l->mask[j] = dp_rng_uniform(rng) >= l->p;
        dp__k_dropout_fwd_f32(l->out, in, l->mask, 1.0f / (1.0f - l->p), n);
    } else {
        memset(l->mask, 1, n);
        memcpy(l->out, in, sizeof(float) * n);
    }
    return DP_OK;
}
static void dropout_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_dropout_bwd_f32(din, g, l->mask, l->p > 0 ? 1.0f / (1.0f - l->p) : 1.0f, count(l, B));
}
static size_t dropout_saved(const dp__node *l) { return (l->out_size + 3) / 4; } /* bytes, in floats */
static void dropout_assign(dp__node *l, char *base, size_t B) {
    (void)B;
    l->mask = (unsigned char *)base;
}
const dp__layer_ops dp__ops_DP_LAYER_DROPOUT = {
    .flags = DP__LF_INPLACE,
    .parse = dropout_parse,
    .forward = dropout_forward,
    .bwd_input = dropout_bwd_input,
    .saved_floats = dropout_saved,
    .assign_saved = dropout_assign,
};

/* ---- flatten: [C, H, W] or [T, F] -> a vector ---------------------------------------------- */

static void flatten_shape(dp__node *l) {
    l->oc = (int)l->in_size;
    l->oh = l->ow = 1;
    l->seq = 0;
}
/* a view (memplan.c) shares its input's buffer and gradient slot: nothing to copy */
static dp_status copy_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    const float *in = dp__input(m, l, 0);
    if (l->out != in) memcpy(l->out, in, sizeof(float) * count(l, B));
    return DP_OK;
}
static void copy_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    if (din != g) memcpy(din, g, sizeof(float) * (size_t)B * l->in_size);
}
const dp__layer_ops dp__ops_DP_LAYER_FLATTEN = {
    .shape = flatten_shape,
    .forward = copy_forward,
    .bwd_input = copy_bwd_input,
};

/* ---- add: out = in0 + in1 (built models) --------------------------------------------------- */

static dp_status add_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    const float *a = dp__input(m, l, 0), *a2 = dp__input(m, l, 1);
    const size_t n = count(l, B);
    float *out = l->out;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t j = 0; j < n; j++) out[j] = a[j] + a2[j];
    return DP_OK;
}
static dp_status add_bwd_inputs(dp_model *m, const dp__node *l, float *const din[3], const int acc[3], const float *g, int B) {
    (void)m;
    const size_t n = (size_t)B * l->in_size;
    for (int j = 0; j < 2; j++) {
        float *dst = din[j];
        if (!dst) continue;
        if (acc[j]) {
#pragma omp parallel for schedule(static) if (n > 65536)
            for (size_t q = 0; q < n; q++) dst[q] += g[q];
        } else
            memcpy(dst, g, sizeof(float) * n);
    }
    return DP_OK;
}
const dp__layer_ops dp__ops_DP_LAYER_ADD = {
    .flags = DP__LF_BUILT | DP__LF_MULTI | DP__LF_INPLACE,
    .forward = add_forward,
    .bwd_inputs = add_bwd_inputs,
};
