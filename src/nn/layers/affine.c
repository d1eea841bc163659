/* nn/layers/affine.c: per-channel trainable affine layers (channels of an image, features of
 * a sequence's tokens, entries of a vector): scale, y = gamma[c] x (weight [C], starts at 1),
 * and bias, y = x + beta[c] (weight [C], starts at 0; ONNX exports of GroupNorm end in both).
 * Their per-sample gradients have only C entries, so the engine instantiates them (no ghost
 * form is needed).
 *
 * Kernels (declared in nn/kernels/kernels.h, compiled here for float and double like
 * kernels_impl.h):
 * values are rows r < R of C channels of `inner` values each, value (r, c, i) at
 * (r C + c) inner + i; an image sample is one row (inner = H W), a sequence sample T rows
 * (inner = 1). */
#include "nn/kernels/kernels.h"
#include <string.h>

#include "nn/graph.h"

#define AFFINE_KERNELS(REAL, S)                                                                                     \
    void dp__k_scale_fwd##S(REAL *out, const REAL *in, const REAL *gamma, int R, int C, int inner) {             \
        _Pragma("omp parallel for schedule(static) if ((size_t)R * C * inner > 65536)")                          \
        for (int r = 0; r < R; r++)                                                                             \
            for (int c = 0; c < C; c++) {                                                                       \
                const size_t o = ((size_t)r * C + c) * inner;                                                   \
                for (int i = 0; i < inner; i++) out[o + i] = gamma[c] * in[o + i];                              \
            }                                                                                                   \
    }                                                                                                           \
    void dp__k_scale_bwd_param##S(REAL *dgamma, const REAL *dout, const REAL *in, int R, int C, int inner) {     \
        _Pragma("omp parallel for schedule(static)")                                                            \
        for (int c = 0; c < C; c++) {                                                                           \
            double acc = 0;                                                                                     \
            for (int r = 0; r < R; r++) {                                                                       \
                const size_t o = ((size_t)r * C + c) * inner;                                                   \
                for (int i = 0; i < inner; i++) acc += (double)dout[o + i] * in[o + i];                         \
            }                                                                                                   \
            dgamma[c] += (REAL)acc;                                                                             \
        }                                                                                                       \
    }                                                                                                           \
    void dp__k_scale_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int rows, int C, \
                                int inner) {                                                                    \
        _Pragma("omp parallel for schedule(static)")                                                            \
        for (int b = 0; b < B; b++)                                                                             \
            for (int c = 0; c < C; c++) {                                                                       \
                double acc = 0;                                                                                 \
                for (int r = b * rows; r < (b + 1) * rows; r++) {                                               \
                    const size_t o = ((size_t)r * C + c) * inner;                                               \
                    for (int i = 0; i < inner; i++) acc += (double)dout[o + i] * in[o + i];                     \
                }                                                                                               \
                ps[(size_t)b * stride + c] = (REAL)acc;                                                         \
            }                                                                                                   \
    }                                                                                                           \
    void dp__k_bias_fwd##S(REAL *out, const REAL *in, const REAL *beta, int R, int C, int inner) {               \
        _Pragma("omp parallel for schedule(static) if ((size_t)R * C * inner > 65536)")                          \
        for (int r = 0; r < R; r++)                                                                             \
            for (int c = 0; c < C; c++) {                                                                       \
                const size_t o = ((size_t)r * C + c) * inner;                                                   \
                for (int i = 0; i < inner; i++) out[o + i] = in[o + i] + beta[c];                               \
            }                                                                                                   \
    }                                                                                                           \
    /* per-sample sums of the output gradient per channel: rows ps[b] (ps NULL: only dbeta[c] += the        \
     * batch's sum) */                                                                                          \
    void dp__k_bias_grad##S(REAL *dbeta, REAL *ps, size_t stride, const REAL *dout, int B, int rows, int C,       \
                            int inner) {                                                                        \
        _Pragma("omp parallel for schedule(static)")                                                            \
        for (int c = 0; c < C; c++) {                                                                           \
            double total = 0;                                                                                   \
            for (int b = 0; b < B; b++) {                                                                       \
                double acc = 0;                                                                                 \
                for (int r = b * rows; r < (b + 1) * rows; r++) {                                               \
                    const size_t o = ((size_t)r * C + c) * inner;                                               \
                    for (int i = 0; i < inner; i++) acc += (double)dout[o + i];                                 \
                }                                                                                               \
                if (ps) ps[(size_t)b * stride + c] = (REAL)acc;                                                 \
                total += acc;                                                                                   \
            }                                                                                                   \
            if (dbeta) dbeta[c] += (REAL)total;                                                                 \
        }                                                                                                       \
    }

AFFINE_KERNELS(float, _f32)
AFFINE_KERNELS(double, _f64)

/* rows per sample and values per (row, channel) */
static int rows(const dp__node *l) { return l->iseq ? l->ih : 1; }
static int inner(const dp__node *l) { return l->iseq ? 1 : l->ih * l->iw; }

static void scale_shape(dp__node *l) { l->nw = (size_t)l->ic; } /* one per channel */

static void scale_init(const dp_model *m, const dp__node *l, float *w, float *b, dp_rng *rng) {
    (void)m, (void)b, (void)rng;
    for (size_t j = 0; j < l->nw; j++) w[j] = 1.0f;
}

static dp_status scale_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_scale_fwd_f32(l->out, dp__input(m, l, 0), dp__weight(m, l), B * rows(l), l->ic, inner(l));
    return DP_OK;
}

/* d in = gamma d out: the forward kernel applied to the gradient */
static void scale_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_scale_fwd_f32(din, g, dp__weight(m, l), B * rows(l), l->ic, inner(l));
}

static void scale_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_scale_bwd_param_f32(m->grad + l->w_off, dout, dp__input(m, l, 0), B * rows(l), l->ic, inner(l));
}

static void scale_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    dp__k_scale_ps_grad_f32(ps, stride, dout, dp__input(m, l, 0) + (size_t)b0 * l->in_size, nb, rows(l), l->ic, inner(l));
}

const dp__layer_ops dp__ops_DP_LAYER_SCALE = {
    .flags = DP__LF_PARAM_READS_IN | DP__LF_INPLACE,
    .shape = scale_shape,
    .init = scale_init,
    .forward = scale_forward,
    .bwd_input = scale_bwd_input,
    .bwd_param = scale_bwd_param,
    .ps_grad = scale_ps_grad,
};

/* ---- bias: y = x + beta[c] ----------------------------------------------------------------- */

static void zero_init(const dp_model *m, const dp__node *l, float *w, float *b, dp_rng *rng) {
    (void)m, (void)b, (void)rng;
    for (size_t j = 0; j < l->nw; j++) w[j] = 0.0f;
}

static dp_status bias_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_bias_fwd_f32(l->out, dp__input(m, l, 0), dp__weight(m, l), B * rows(l), l->ic, inner(l));
    return DP_OK;
}

static void bias_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    memcpy(din, g, sizeof(float) * (size_t)B * l->in_size);
}

static void bias_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_bias_grad_f32(m->grad + l->w_off, NULL, 0, dout, B, rows(l), l->ic, inner(l));
}

static void bias_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    (void)m, (void)b0;
    dp__k_bias_grad_f32(NULL, ps, stride, dout, nb, rows(l), l->ic, inner(l));
}

const dp__layer_ops dp__ops_DP_LAYER_BIAS = {
    .flags = DP__LF_INPLACE,
    .shape = scale_shape,
    .init = zero_init,
    .forward = bias_forward,
    .bwd_input = bias_bwd_input,
    .bwd_param = bias_bwd_param,
    .ps_grad = bias_ps_grad,
};
