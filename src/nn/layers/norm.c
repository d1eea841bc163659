/* nn/layers/norm.c: normalisation layers, LayerNorm and RMSNorm over each token's features,
 * GroupNorm over groups of channels of an image. Each keeps its normalised input (xhat) and
 * reciprocal standard deviations (rstd) for the backward; weights start at 1, biases at 0. */
#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

static dp_status eps_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    double x;
    l->eps = 1e-5f;
    if (t->nargs > 1 || (t->nargs == 1 && !dp__parse_real(t->args[0], 1e-12, 1, &x)))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s([EPS]) needs EPS in (0, 1]", idx, t->name);
    if (t->nargs == 1) l->eps = (float)x;
    return DP_OK;
}

static void affine_shape(dp__node *l) {
    l->nw = l->nb = l->plain ? 0 : (size_t)l->ic;
    l->has_bias = !l->plain;
}
/* gamma (NULL without affine parameters: the kernels take 1 and 0) */
static const float *gamma_of(const dp_model *m, const dp__node *l) { return l->nw ? dp__weight(m, l) : NULL; }

static void ones_init(const dp_model *m, const dp__node *l, float *w, float *b, dp_rng *rng) {
    (void)m, (void)rng;
    for (size_t j = 0; j < l->nw; j++) w[j] = 1.0f;
    for (size_t j = 0; j < l->nb; j++) b[j] = 0.0f;
}

/* xhat [B, out_size], then rstd: one per row (token) or per group */
static size_t token_saved(const dp__node *l) { return l->out_size + (size_t)l->ih; }
static void xhat_assign(dp__node *l, char *base, size_t B) {
    l->xhat = (float *)base;
    l->rstd = (float *)base + B * l->out_size;
}

/* ---- layernorm ----------------------------------------------------------------------------- */

static dp_status ln_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_layernorm_fwd_f32(l->out, l->xhat, l->rstd, dp__input(m, l, 0), gamma_of(m, l), dp__bias(m, l), B * l->ih, l->ic,
                            l->eps);
    return DP_OK;
}
static void ln_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_layernorm_bwd_input_f32(din, g, l->xhat, l->rstd, gamma_of(m, l), B * l->ih, l->ic);
}
static void ln_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_layernorm_bwd_param_f32(m->grad + l->w_off, m->grad + l->b_off, dout, l->xhat, B * l->ih, l->ic);
}
static void ln_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    (void)m;
    dp__k_layernorm_ps_grad_f32(ps, stride, dout, l->xhat + (size_t)b0 * l->out_size, nb, l->ih, l->ic);
}

const dp__layer_ops dp__ops_DP_LAYER_LAYERNORM = {
    .flags = DP__LF_SEQ,
    .parse = eps_parse,
    .shape = affine_shape,
    .init = ones_init,
    .forward = ln_forward,
    .bwd_input = ln_bwd_input,
    .bwd_param = ln_bwd_param,
    .ps_grad = ln_ps_grad,
    .saved_floats = token_saved,
    .assign_saved = xhat_assign,
};

/* ---- rmsnorm ------------------------------------------------------------------------------- */

static void rms_shape(dp__node *l) { l->nw = (size_t)l->ic; }
static dp_status rms_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_rmsnorm_fwd_f32(l->out, l->xhat, l->rstd, dp__input(m, l, 0), dp__weight(m, l), B * l->ih, l->ic, l->eps);
    return DP_OK;
}
static void rms_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_rmsnorm_bwd_input_f32(din, g, l->xhat, l->rstd, dp__weight(m, l), B * l->ih, l->ic);
}
static void rms_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_rmsnorm_bwd_param_f32(m->grad + l->w_off, dout, l->xhat, B * l->ih, l->ic);
}
static void rms_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    (void)m;
    dp__k_rmsnorm_ps_grad_f32(ps, stride, dout, l->xhat + (size_t)b0 * l->out_size, nb, l->ih, l->ic);
}

const dp__layer_ops dp__ops_DP_LAYER_RMSNORM = {
    .flags = DP__LF_SEQ,
    .parse = eps_parse,
    .shape = rms_shape,
    .init = ones_init,
    .forward = rms_forward,
    .bwd_input = rms_bwd_input,
    .bwd_param = rms_bwd_param,
    .ps_grad = rms_ps_grad,
    .saved_floats = token_saved,
    .assign_saved = xhat_assign,
};

/* ---- groupnorm(G) -------------------------------------------------------------------------- */

static dp_status gn_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    long v;
    if (t->nargs != 1 || !dp__parse_int(t->args[0], 1, 1 << 16, &v) || l->ic % v)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: groupnorm(G) needs G >= 1 dividing the %d channels", idx, l->ic);
    l->groups = (int)v;
    l->eps = 1e-5f;
    return DP_OK;
}
static dp_status gn_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_groupnorm_fwd_f32(l->out, l->xhat, l->rstd, dp__input(m, l, 0), gamma_of(m, l), dp__bias(m, l), B, l->ic,
                            l->ih * l->iw, l->groups, l->eps);
    return DP_OK;
}
static void gn_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_groupnorm_bwd_input_f32(din, g, l->xhat, l->rstd, gamma_of(m, l), B, l->ic, l->ih * l->iw, l->groups);
}
static void gn_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_groupnorm_bwd_param_f32(m->grad + l->w_off, m->grad + l->b_off, dout, l->xhat, B, l->ic, l->ih * l->iw);
}
static void gn_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    (void)m;
    dp__k_groupnorm_ps_grad_f32(ps, stride, dout, l->xhat + (size_t)b0 * l->out_size, nb, l->ic, l->ih * l->iw);
}
static size_t gn_saved(const dp__node *l) { return l->out_size + (size_t)l->groups; }

const dp__layer_ops dp__ops_DP_LAYER_GROUPNORM = {
    .flags = DP__LF_IMAGE,
    .parse = gn_parse,
    .shape = affine_shape,
    .init = ones_init,
    .forward = gn_forward,
    .bwd_input = gn_bwd_input,
    .bwd_param = gn_bwd_param,
    .ps_grad = gn_ps_grad,
    .saved_floats = gn_saved,
    .assign_saved = xhat_assign,
};
