/* nn/layers/attention.c: multi-head scaled dot-product attention, the parameter-free core fed
 * by separate q, k, v Linear nodes (so its per-sample norms come from those Linears), with
 * padding masks from the token ids. Keeps the attention probabilities P for the backward. */
#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

static dp_status attn_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_attn_fwd_f32(l->out, l->P, dp__input(m, l, 0), dp__input(m, l, 1), dp__input(m, l, 2), m->tokens ? m->kvalid : NULL,
                       B, l->ih, l->ic, l->heads);
    return DP_OK;
}

static dp_status attn_bwd_inputs(dp_model *m, const dp__node *l, float *const din[3], const int acc[3], const float *g, int B) {
    for (int j = 0; j < 3; j++)
        if (din[j] && acc[j]) return dp_fail(DP_ERR_INVALID, "backward: attention inputs must be distinct nodes read only by it");
    dp__k_attn_bwd_f32(din[0], din[1], din[2], m->work, g, l->P, dp__input(m, l, 0), dp__input(m, l, 1), dp__input(m, l, 2), B,
                       l->ih, l->ic, l->heads);
    return DP_OK;
}

static void attn_flops(const dp__node *l, double *fwd, double *bwd_weight, double *bwd_input) {
    *fwd = 4.0 * l->ih * l->ih * l->ic;
    *bwd_weight = 0;
    *bwd_input = 8.0 * l->ih * l->ih * l->ic;
}

static size_t attn_saved(const dp__node *l) { return (size_t)l->heads * l->ih * l->ih; }
static void attn_assign(dp__node *l, char *base, size_t B) {
    (void)B;
    l->P = (float *)base;
}
static size_t attn_work(const dp__node *l, int B, size_t nt) {
    (void)B;
    return nt * DP_ATTN_BWD_WORK(l->ih, l->ic);
}

const dp__layer_ops dp__ops_DP_LAYER_ATTENTION = {
    .flags = DP__LF_BUILT | DP__LF_MULTI | DP__LF_READS_IN,
    .forward = attn_forward,
    .bwd_inputs = attn_bwd_inputs,
    .flops = attn_flops,
    .saved_floats = attn_saved,
    .assign_saved = attn_assign,
    .work_floats = attn_work,
};
