/* nn/layers/pooling.c: pooling over image windows (maxpool, avgpool), whole images
 * (globalavgpool) and a sequence's tokens (meanpool over the real tokens, firsttoken). No
 * parameters. */
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

/* ---- maxpool(K[,S][,pP]), avgpool(K[,S][,pP][,exclude]): windows K x K, stride S (K), implicit
 * padding P (0) on every side, floor mode. Max pooling never picks a padded position; average
 * pooling counts the padded zeros in its divisor (K*K, PyTorch's count_include_pad=True) unless
 * `exclude` (divide by the real positions of each window, ONNX's default). ------------------ */

static dp_status window_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    (void)m;
    const int avg = l->kind == DP_LAYER_AVGPOOL;
    long k, s, p = 0;
    if (t->nargs < 1 || t->nargs > (avg ? 4 : 3) || !dp__parse_int(t->args[0], 1, 1 << 10, &k))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s(K[,S][,pP]%s) needs K >= 1", idx, t->name,
                       avg ? "[,exclude]" : "");
    s = k;
    l->excl_pad = 0;
    for (int a = 1; a < t->nargs; a++) {
        if (a == 1 && dp__parse_int(t->args[a], 1, 1 << 10, &s)) continue;
        if (t->args[a][0] == 'p' && dp__parse_int(t->args[a] + 1, 0, 1 << 10, &p)) continue;
        if (avg && strcmp(t->args[a], "exclude") == 0) {
            l->excl_pad = 1;
            continue;
        }
        if (a == 1 && t->args[a][0] >= '0' && t->args[a][0] <= '9')
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s: bad stride '%s'", idx, t->name, t->args[a]);
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s: bad option '%s' (S, pN%s)", idx, t->name, t->args[a],
                       avg ? " or exclude" : "");
    }
    if (2 * p > k)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s: padding %ld larger than half the kernel %ld (as PyTorch, pad <= K/2)",
                       idx, t->name, p, k);
    if (l->ih + 2 * p < k || l->iw + 2 * p < k)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s kernel %ld larger than its %sinput %dx%d", idx, t->name, k,
                       p ? "padded " : "", l->ih, l->iw);
    l->k = (int)k;
    l->s = (int)s;
    l->pad = l->padl = l->padb = l->padr = (int)p;
    return DP_OK;
}

/* windows along one axis of `in` values, padded by a before and b after, for a kernel spanning
 * ext: floor mode, or ceil mode without a last window that would start in the trailing
 * padding (as PyTorch and ONNX) */
int dp__pool_out(long in, long a, long b, long ext, long s, int ceil_mode) {
    const long span = in + a + b - ext;
    if (span < 0) return 0;
    long o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + a) o--;
    return (int)o;
}

static int window_d(const dp__node *l) { return l->kind == DP_LAYER_MAXPOOL && l->dil > 1 ? l->dil : 1; }

static void window_shape(dp__node *l) {
    const long ext = (long)(l->k - 1) * window_d(l) + 1;
    l->oh = dp__pool_out(l->ih, l->pad, l->padb, ext, l->s, l->ceil_mode);
    l->ow = dp__pool_out(l->iw, l->padl, l->padr, ext, l->s, l->ceil_mode);
}

static dp__pool_geom window_geom(const dp__node *l) {
    dp__pool_geom g = {l->k, l->s, l->pad, l->padl, l->padb, l->padr, window_d(l), !l->excl_pad};
    return g;
}

/* whether the layer finds its winners again in backward from its input (kernels.h) instead of
 * saving their indices */
static int maxpool_recomputes(const dp__node *l) {
    const dp__pool_geom g = window_geom(l);
    return dp__maxpool_recomputes(&g, l->ih, l->iw, l->oh, l->ow);
}
static dp_status maxpool_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    const dp__pool_geom g = window_geom(l);
    dp__k_maxpool_fwd_f32(l->out, maxpool_recomputes(l) ? NULL : l->arg, dp__input(m, l, 0), B, l->ic, l->ih, l->iw, &g,
                          l->oh, l->ow);
    return DP_OK;
}
static void maxpool_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    if (maxpool_recomputes(l)) /* fused: din is the gradient of the tanh's input (memplan.c) */
        dp__k_maxpool_bwd_recompute_f32(din, g, dp__input(m, l, 0), B, l->ic, l->ih, l->iw, l->oh, l->ow,
                                        l->fuse_tanh_bwd == 1);
    else
        dp__k_maxpool_bwd_f32(din, g, l->arg, B, l->ic, l->ih, l->iw, l->oh, l->ow);
}
static size_t maxpool_saved(const dp__node *l) { return maxpool_recomputes(l) ? 0 : l->out_size; } /* int32 arg */
static void maxpool_assign(dp__node *l, char *base, size_t B) {
    (void)B;
    l->arg = (int32_t *)base;
}
const dp__layer_ops dp__ops_DP_LAYER_MAXPOOL = {
    .flags = DP__LF_IMAGE,
    .parse = window_parse,
    .shape = window_shape,
    .reads_in = maxpool_recomputes,
    .forward = maxpool_forward,
    .bwd_input = maxpool_bwd_input,
    .saved_floats = maxpool_saved,
    .assign_saved = maxpool_assign,
};

static dp_status avgpool_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    const dp__pool_geom gm = window_geom(l);
    dp__k_avgpool_fwd_f32(l->out, dp__input(m, l, 0), B, l->ic, l->ih, l->iw, &gm, l->oh, l->ow);
    return DP_OK;
}
static void avgpool_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    const dp__pool_geom gm = window_geom(l);
    dp__k_avgpool_bwd_f32(din, g, B, l->ic, l->ih, l->iw, &gm, l->oh, l->ow);
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
