/* nn/layers/dense.c: the layers that multiply by a weight matrix, linear and conv2d. Their
 * per-sample norms have ghost forms (two Gram matrices, from the input or its unfolded
 * patches and the output gradient), so the engine picks per layer the cheaper method. */
#include <stdio.h>
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

/* ---- linear: [*, d] -> [*, p]; on a sequence it acts on every token ----------------------- */

static int lin_d(const dp__node *l) { return l->iseq ? l->ic : (int)l->in_size; }

static dp_status linear_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    long v;
    if (t->nargs < 1 || t->nargs > 2 || !dp__parse_int(t->args[0], 1, 1 << 24, &v))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: linear(OUT[,nobias]) needs OUT >= 1", idx);
    l->has_bias = !(t->nargs == 2 && strcmp(t->args[1], "nobias") == 0);
    if (t->nargs == 2 && l->has_bias)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: linear: unknown option '%s'", idx, t->args[1]);
    l->oc = (int)v;
    return DP_OK;
}

static void linear_shape(dp__node *l) {
    if (l->iseq) {
        l->nw = (size_t)l->oc * l->ic;
        l->oh = l->ih;
        l->ow = 1;
        l->seq = 1;
    } else {
        l->nw = (size_t)l->oc * l->in_size;
        l->oh = l->ow = 1;
        l->seq = 0;
    }
    l->nb = l->has_bias ? (size_t)l->oc : 0;
}

static int linear_weight_shape(const dp__node *l, int64_t shape[4]) {
    shape[0] = l->oc;
    shape[1] = (int64_t)(l->nw / (size_t)l->oc);
    return 2;
}

static dp_status linear_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_linear_fwd_f32(l->out, dp__input(m, l, 0), dp__weight(m, l), dp__bias(m, l), B * dp__seq_T(l), lin_d(l), l->oc);
    return DP_OK;
}

static void linear_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_linear_bwd_input_f32(din, g, dp__weight(m, l), B * dp__seq_T(l), lin_d(l), l->oc);
}

static void linear_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_linear_bwd_param_f32(m->grad + l->w_off, l->nb ? m->grad + l->b_off : NULL, dout, dp__input(m, l, 0),
                               B * dp__seq_T(l), lin_d(l), l->oc);
}

static void linear_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    const float *in = dp__input(m, l, 0) + (size_t)b0 * l->in_size;
    if (l->iseq)
        dp__k_seqlin_ps_grad_f32(ps, stride, dout, in, nb, l->ih, l->ic, l->oc, l->has_bias);
    else
        dp__k_linear_ps_grad_f32(ps, stride, dout, in, nb, (int)l->in_size, l->oc, l->has_bias);
}

static void linear_ghost_sq(dp_model *m, const dp__node *l, const float *dout, int B, double *sq) {
    const float *in = dp__input(m, l, 0);
    if (l->iseq)
        dp__k_seqlin_ghost_sq_f32(sq, m->work, dout, in, B, l->ih, l->ic, l->oc, l->has_bias);
    else
        dp__k_linear_ghost_sq_f32(sq, dout, in, B, (int)l->in_size, l->oc, l->has_bias);
}

/* ghost: two Gram matrices by SYRK (T^2 d and T^2 p multiply-adds, half of each computed)
 * and their inner product; instantiation: one T-deep GEMM and a norm */
static void gram_cost(double T, double d, double p, double *ghost, double *inst) {
    *ghost = T * T * (d + p) + 2 * T * T;
    *inst = 2 * T * d * p + 2 * d * p;
}

static void linear_norm_cost(const dp__node *l, double *ghost, double *inst) {
    gram_cost(dp__seq_T(l), lin_d(l), l->oc, ghost, inst);
}

static void matmul_flops(const dp__node *l, double fan_in, double *fwd, double *bwd_weight, double *bwd_input) {
    *fwd = *bwd_weight = *bwd_input = 2.0 * (double)l->out_size * fan_in;
}

static void linear_flops(const dp__node *l, double *fwd, double *bwd_weight, double *bwd_input) {
    matmul_flops(l, lin_d(l), fwd, bwd_weight, bwd_input);
}

static size_t linear_work(const dp__node *l, int B, size_t nt) {
    (void)B;
    return l->iseq ? nt * 2 * (size_t)l->ih * l->ih : 0;
}

const dp__layer_ops dp__ops_DP_LAYER_LINEAR = {
    .flags = DP__LF_PARAM_READS_IN,
    .parse = linear_parse,
    .shape = linear_shape,
    .weight_shape = linear_weight_shape,
    .forward = linear_forward,
    .bwd_input = linear_bwd_input,
    .bwd_param = linear_bwd_param,
    .ps_grad = linear_ps_grad,
    .ghost_sq = linear_ghost_sq,
    .norm_cost = linear_norm_cost,
    .flops = linear_flops,
    .work_floats = linear_work,
};

/* ---- conv2d: im2col patches times the weight, unfolded a few samples at a time (the weight
 * gradients unfold the input again: a trainable convolution keeps its input) ---------------- */

static size_t conv_T(const dp__node *l) { return (size_t)l->oh * l->ow; }
static int conv_G(const dp__node *l) { return l->groups > 1 ? l->groups : 1; }
static int conv_d(const dp__node *l) { return l->dil > 1 ? l->dil : 1; }
/* the unfolded patch (all channels) and one group's share of it, the weight's row */
static size_t conv_D(const dp__node *l) { return (size_t)l->ic * l->k * l->k; }
static size_t conv_Dg(const dp__node *l) { return conv_D(l) / (size_t)conv_G(l); }
/* the extent of the kernel on the input: taps dilation apart */
static long conv_extent(long k, long d) { return (k - 1) * d + 1; }

/* Checks a convolution's geometry (the spec parser and the ONNX importer): channels divisible
 * by the groups, the dilated kernel within the padded input. */
dp_status dp__conv_check(const dp__node *l, const char *what) {
    const long G = conv_G(l), ext = conv_extent(l->k, conv_d(l));
    if (l->ic % G || l->oc % G)
        return dp_fail(DP_ERR_INVALID, "%s: %ld groups do not divide its %d input and %d output channels", what, G, l->ic,
                       l->oc);
    const long ph = (long)l->ih + l->pad + l->padb, pw = (long)l->iw + l->padl + l->padr;
    if (ph < ext || pw < ext)
        return dp_fail(DP_ERR_INVALID, "%s: kernel %d (dilation %d: extent %ld) larger than its padded input %ldx%ld", what,
                       l->k, conv_d(l), ext, ph, pw);
    return DP_OK;
}

static dp_status conv_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    long out, k, s = 1, p = 0, g = 1, d = 1;
    if (t->nargs < 2 || !dp__parse_int(t->args[0], 1, 1 << 16, &out) || !dp__parse_int(t->args[1], 1, 1 << 10, &k))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: conv2d(OUT,K[,sS][,pP][,gG][,dD][,nobias]) needs OUT, K >= 1",
                       idx);
    l->has_bias = 1;
    for (int a = 2; a < t->nargs; a++) {
        if (t->args[a][0] == 's' && dp__parse_int(t->args[a] + 1, 1, 1 << 10, &s)) continue;
        if (t->args[a][0] == 'p' && dp__parse_int(t->args[a] + 1, 0, 1 << 10, &p)) continue;
        if (t->args[a][0] == 'g' && dp__parse_int(t->args[a] + 1, 1, 1 << 16, &g)) continue;
        if (t->args[a][0] == 'd' && dp__parse_int(t->args[a] + 1, 1, 1 << 10, &d)) continue;
        if (strcmp(t->args[a], "nobias") == 0) {
            l->has_bias = 0;
            continue;
        }
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: conv2d: bad option '%s' (sN, pN, gN, dN or nobias)", idx,
                       t->args[a]);
    }
    l->k = (int)k;
    l->s = (int)s;
    l->pad = l->padl = l->padb = l->padr = (int)p;
    l->oc = (int)out;
    l->groups = (int)g;
    l->dil = (int)d;
    char what[64];
    snprintf(what, sizeof what, "model spec: layer %d: conv2d", idx);
    return dp__conv_check(l, what);
}

static void conv_shape(dp__node *l) {
    const int ext = (int)conv_extent(l->k, conv_d(l));
    l->oh = (l->ih + l->pad + l->padb - ext) / l->s + 1;
    l->ow = (l->iw + l->padl + l->padr - ext) / l->s + 1;
    l->nw = (size_t)l->oc * conv_Dg(l);
    l->nb = l->has_bias ? (size_t)l->oc : 0;
}

static int conv_weight_shape(const dp__node *l, int64_t shape[4]) {
    shape[0] = l->oc;
    shape[1] = l->ic / conv_G(l);
    shape[2] = shape[3] = l->k;
    return 4;
}

/* grams: only a layer whose norms can be ghost norms has room for two T x T Grams */
static dp__conv_geom conv_geom(const dp__node *l) {
    const dp__conv_geom g = {l->ic, l->ih, l->iw, l->oc, l->k, l->s, l->pad, l->padl, conv_d(l), conv_G(l), l->oh, l->ow,
                             dp__ghost_cheaper(l), 0, NULL};
    return g;
}

static dp_status conv_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__conv_geom g = conv_geom(l);
    g.tanh = l->fuse_tanh == 1; /* then the output is the next node's (memplan.c) */
    g.gram_buf = dp__grams_of(m, l, B); /* NULL unless a private step asked for them */
    dp__k_conv_fwd_f32(g.tanh ? l[1].out : l->out, m->work, dp__input(m, l, 0), dp__weight(m, l), dp__bias(m, l), B, &g);
    return DP_OK;
}

static void conv_bwd_input(dp_model *m, const dp__node *l, float *din, const float *dout, int B) {
    const dp__conv_geom g = conv_geom(l);
    dp__k_conv_bwd_input_f32(din, m->work, dout, dp__weight(m, l), B, &g);
}

static void conv_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    const dp__conv_geom g = conv_geom(l);
    dp__k_conv_bwd_param_f32(m->grad + l->w_off, l->nb ? m->grad + l->b_off : NULL, m->work, dout, dp__input(m, l, 0), B,
                             &g);
}

static void conv_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    const dp__conv_geom g = conv_geom(l);
    dp__k_conv_ps_grad_f32(ps, stride, m->work, dout, dp__input(m, l, 0) + (size_t)b0 * l->in_size, nb, &g, l->has_bias);
}

static void conv_ghost_sq(dp_model *m, const dp__node *l, const float *dout, int B, double *sq) {
    dp__conv_geom g = conv_geom(l);
    g.gram_buf = dp__grams_of(m, l, B); /* the forward's, or NULL: unfold here */
    dp__k_conv_ghost_sq_f32(sq, m->work, dout, dp__input(m, l, 0), B, &g, l->has_bias);
}

/* per group: two T x T Grams against one [Cout/G, Dg] product */
static void conv_norm_cost(const dp__node *l, double *ghost, double *inst) {
    const double G = conv_G(l);
    gram_cost((double)conv_T(l), (double)conv_Dg(l), l->oc / G, ghost, inst);
    *ghost *= G;
    *inst *= G;
}

static void conv_flops(const dp__node *l, double *fwd, double *bwd_weight, double *bwd_input) {
    matmul_flops(l, (double)conv_Dg(l), fwd, bwd_weight, bwd_input);
}

static size_t conv_work(const dp__node *l, int B, size_t nt) {
    (void)B;
    const dp__conv_geom g = conv_geom(l);
    return dp__conv_work(&g, (int)nt);
}

const dp__layer_ops dp__ops_DP_LAYER_CONV2D = {
    .flags = DP__LF_IMAGE | DP__LF_PARAM_READS_IN,
    .parse = conv_parse,
    .shape = conv_shape,
    .weight_shape = conv_weight_shape,
    .forward = conv_forward,
    .bwd_input = conv_bwd_input,
    .bwd_param = conv_bwd_param,
    .ps_grad = conv_ps_grad,
    .ghost_sq = conv_ghost_sq,
    .norm_cost = conv_norm_cost,
    .flops = conv_flops,
    .work_floats = conv_work,
};
