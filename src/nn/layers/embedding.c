/* nn/layers/embedding.c: token and positional embeddings. The token embedding reads the
 * model's token ids (m->ids, checked by the forward) and has a ghost norm (token-equality
 * Gram matrix times the output-gradient Gram matrix); the positional embedding adds a learned
 * [T, D] table. */
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/graph.h"

static void normal_init(const dp__node *l, double sd, float *w, dp_rng *rng) {
    for (size_t j = 0; j < l->nw; j++) w[j] = (float)(sd * dp_rng_normal(rng));
}

/* ---- embedding(V, D): T ids -> [T, D] ------------------------------------------------------ */

static dp_status embed_parse(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    long V, d;
    if (idx != 0)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: embedding must be the first layer (it reads token ids)", idx);
    if (t->nargs != 2 || !dp__parse_int(t->args[0], 1, 1 << 24, &V) || !dp__parse_int(t->args[1], 1, 1 << 16, &d))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: embedding(VOCAB,DIM) needs VOCAB, DIM >= 1", idx);
    l->vocab = (int)V;
    l->oc = (int)d;
    m->tokens = 1;
    return DP_OK;
}

static void embed_shape(dp__node *l) {
    l->nw = (size_t)l->vocab * l->oc;
    l->oh = (int)l->in_size; /* T */
    l->ow = 1;
    l->seq = 1;
}

static void embed_init(const dp_model *m, const dp__node *l, float *w, float *b, dp_rng *rng) {
    (void)b;
    normal_init(l, m->bert_init ? 0.02 : 1.0, w, rng);
}

static int embed_weight_shape(const dp__node *l, int64_t shape[4]) {
    shape[0] = l->vocab;
    shape[1] = l->oc;
    return 2;
}

static dp_status embed_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_embed_fwd_f32(l->out, m->ids, dp__weight(m, l), B, l->oh, l->oc);
    return DP_OK;
}

static void embed_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_embed_bwd_param_f32(m->grad + l->w_off, dout, m->ids, B, l->oh, l->oc);
}

static void embed_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    dp__k_embed_ps_grad_f32(ps, stride, dout, m->ids + (size_t)b0 * m->in_size, nb, l->oh, l->oc, l->vocab);
}

static void embed_ghost_sq(dp_model *m, const dp__node *l, const float *dout, int B, double *sq) {
    dp__k_embed_ghost_sq_f32(sq, m->work, dout, m->ids, B, l->oh, l->oc);
}

static void embed_norm_cost(const dp__node *l, double *ghost, double *inst) {
    double T = l->oh, d = l->oc;
    *ghost = T * T + 2 * T * d;
    *inst = (double)l->nw + T * d;
}

static size_t embed_work(const dp__node *l, int B, size_t nt) {
    (void)B;
    return nt * (size_t)l->oc;
}

const dp__layer_ops dp__ops_DP_LAYER_EMBEDDING = {
    .parse = embed_parse,
    .shape = embed_shape,
    .init = embed_init,
    .weight_shape = embed_weight_shape,
    .forward = embed_forward,
    .bwd_param = embed_bwd_param,
    .ps_grad = embed_ps_grad,
    .ghost_sq = embed_ghost_sq,
    .norm_cost = embed_norm_cost,
    .work_floats = embed_work,
};

/* ---- posembed: [T, D] + P ------------------------------------------------------------------ */

static void posemb_shape(dp__node *l) { l->nw = (size_t)l->ic * l->ih; }

static void posemb_init(const dp_model *m, const dp__node *l, float *w, float *b, dp_rng *rng) {
    (void)m, (void)b;
    normal_init(l, 0.02, w, rng);
}

static int posemb_weight_shape(const dp__node *l, int64_t shape[4]) {
    shape[0] = l->ih;
    shape[1] = l->ic;
    return 2;
}

static dp_status posemb_forward(dp_model *m, dp__node *l, int B, int train, dp_rng *rng) {
    (void)train, (void)rng;
    dp__k_posemb_fwd_f32(l->out, dp__input(m, l, 0), dp__weight(m, l), B, l->ih, l->ic);
    return DP_OK;
}

static void posemb_bwd_input(dp_model *m, const dp__node *l, float *din, const float *g, int B) {
    (void)m;
    memcpy(din, g, sizeof(float) * (size_t)B * l->in_size);
}

static void posemb_bwd_param(dp_model *m, const dp__node *l, const float *dout, int B) {
    dp__k_posemb_bwd_param_f32(m->grad + l->w_off, dout, B, l->ih, l->ic);
}

static void posemb_ps_grad(const dp_model *m, const dp__node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    (void)m, (void)b0;
    for (int b = 0; b < nb; b++) memcpy(ps + (size_t)b * stride, dout + (size_t)b * l->out_size, sizeof(float) * l->out_size);
}

const dp__layer_ops dp__ops_DP_LAYER_POSEMBED = {
    .flags = DP__LF_SEQ | DP__LF_INPLACE,
    .shape = posemb_shape,
    .init = posemb_init,
    .weight_shape = posemb_weight_shape,
    .forward = posemb_forward,
    .bwd_input = posemb_bwd_input,
    .bwd_param = posemb_bwd_param,
    .ps_grad = posemb_ps_grad,
};
