/* nn/layers/pooling.c: pooling over image windows (maxpool, avgpool), whole images
 * (globalavgpool) and a sequence's tokens (meanpool over the real tokens, firsttoken). No
 * parameters. */
#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

/* ---- maxpool(K[,S]), avgpool(K[,S]): windows K x K, stride S (K), no padding --------------- */

static dp_status window_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    long k, s;
    if (t->nargs < 1 || t->nargs > 2 || !dp__parse_int(t->args[0], 1, 1 << 10, &k))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s(K[,S]) needs K >= 1", idx, t->name);
    s = k;
    if (t->nargs == 2 && !dp__parse_int(t->args[1], 1, 1 << 10, &s))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s: bad stride '%s'", idx, t->name, t->args[1]);
    if (l->ih < k || l->iw < k)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s kernel %ld larger than its input %dx%d", idx, t->name, k, l->ih,
                       l->iw);
    l->k = (int)k;
    l->s = (int)s;
    return DP_OK;
}
static void window_shape(dp__node *l) {
    l->oh = (l->ih - l->k) / l->s + 1;
    l->ow = (l->iw - l->k) / l->s + 1;
}

static dp_status maxpool_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_maxpool_fwd_f32(l->out, l->arg, dp__input(m, l, 0), B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow);
    return DP_OK;
}
static void maxpool_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_maxpool_bwd_f32(din, g, l->arg, B, l->ic, l->ih, l->iw, l->oh, l->ow);
}
static size_t maxpool_saved(const dp__node *l) { return l->out_size; } /* int32 arg */
static void maxpool_assign(dp__node *l, char *base, size_t B) {
    (void)B;
    l->arg = (int32_t *)base;
}
const dp__layer_ops dp__ops_DP_LAYER_MAXPOOL = {
    .flags = DP__LF_IMAGE,
    .parse = window_parse,
    .shape = window_shape,
    .forward = maxpool_forward,
    .bwd_input = maxpool_bwd_input,
    .saved_floats = maxpool_saved,
    .assign_saved = maxpool_assign,
};

static dp_status avgpool_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_avgpool_fwd_f32(l->out, dp__input(m, l, 0), B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow);
    return DP_OK;
}
static void avgpool_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_avgpool_bwd_f32(din, g, B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow);
}
const dp__layer_ops dp__ops_DP_LAYER_AVGPOOL = {
    .flags = DP__LF_IMAGE,
    .parse = window_parse,
    .shape = window_shape,
    .forward = avgpool_forward,
    .bwd_input = avgpool_bwd_input,
};

/* ---- globalavgpool: C x H x W -> C x 1 x 1 ------------------------------------------------- */

static void gap_shape(dp__node *l) { l->oh = l->ow = 1; }
static dp_status gap_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_gap_fwd_f32(l->out, dp__input(m, l, 0), B, l->ic, l->ih * l->iw);
    return DP_OK;
}
static void gap_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_gap_bwd_f32(din, g, B, l->ic, l->ih * l->iw);
}
const dp__layer_ops dp__ops_DP_LAYER_GLOBALAVGPOOL = {
    .flags = DP__LF_IMAGE,
    .shape = gap_shape,
    .forward = gap_forward,
    .bwd_input = gap_bwd_input,
};

/* ---- meanpool, firsttoken: [T, F] -> [F] --------------------------------------------------- */

static void token_pool_shape(dp__node *l) {
    l->oh = l->ow = 1;
    l->seq = 0;
}
static const unsigned char *kvalid(const dp_model *m) { return m->tokens ? m->kvalid : NULL; }

static dp_status meanpool_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_meanpool_fwd_f32(l->out, dp__input(m, l, 0), kvalid(m), B, l->ih, l->ic);
    return DP_OK;
}
static void meanpool_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    dp__k_meanpool_bwd_f32(din, g, kvalid(m), B, l->ih, l->ic);
}
const dp__layer_ops dp__ops_DP_LAYER_MEANPOOL = {
    .flags = DP__LF_SEQ,
    .shape = token_pool_shape,
    .forward = meanpool_forward,
    .bwd_input = meanpool_bwd_input,
};

static dp_status firsttok_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_firsttok_fwd_f32(l->out, dp__input(m, l, 0), B, l->ih, l->ic);
    return DP_OK;
}
static void firsttok_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    dp__k_firsttok_bwd_f32(din, g, B, l->ih, l->ic);
}
const dp__layer_ops dp__ops_DP_LAYER_FIRSTTOKEN = {
    .flags = DP__LF_SEQ,
    .shape = token_pool_shape,
    .forward = firsttok_forward,
    .bwd_input = firsttok_bwd_input,
};
