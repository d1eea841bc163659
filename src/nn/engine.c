/* nn/engine.c: forward and backward through the graph, per-sample gradients and per-layer
 * norms. Each node's work is its row of the layer table; this file only walks the graph,
 * routes gradients between nodes and decides, per trainable node and pass, what to compute. */
#include <math.h>
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/graph.h"

/* ---- forward ------------------------------------------------------------------------- */

dp_status dp_model_forward(dp_model *m, const float *x, int B, int train, dp_rng *rng, const float **logits) {
    if (B < 0) return dp_fail(DP_ERR_INVALID, "forward: negative batch size %d", B);
    dp_status st = dp__ensure_capacity(m, B > 0 ? B : 1);
    if (st != DP_OK) {
        dp__free_buffers(m); /* buffers are in an unknown state: rebuild on the next call */
        return st;
    }
    m->x = x;
    m->fwd_B = B;
    m->fwd_train = train;
    if (m->tokens) {
        const size_t T = m->in_size;
        const int V = m->L[0].vocab;
        for (size_t i = 0; i < (size_t)B * T; i++) {
            float v = x[i];
            if (!(v >= -1.0f && v < (float)V) || v != floorf(v))
                return dp_fail(DP_ERR_RANGE, "forward: token %zu of sample %zu is %g: ids must be integers in -1..%d (-1: padding)",
                               i % T, i / T, (double)v, V - 1);
            m->ids[i] = (int32_t)v;
            m->kvalid[i] = v >= 0;
        }
    }
    m->grams_B = 0;
    if (train && m->grams_want && B > 0) {
        /* the convolutions' Grams for the ghost norms of the private step's backward: in a
         * block kept between steps; if it cannot grow, the ghost norms unfold the input as
         * before (nothing else depends on it) */
        const size_t need = dp__gram_floats(m) * (size_t)B;
        if (need > m->grams_cap) {
            dp_free(m->grams);
            m->grams = dp_alloc(sizeof(float) * need);
            m->grams_cap = m->grams ? need : 0;
        }
        if (need && m->grams) m->grams_B = B;
    }
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        if ((st = dp__ops(l)->forward(m, l, B, train, rng)) != DP_OK) {
            m->grams_B = 0; /* some were not made */
            return st;
        }
    }
    *logits = m->L[m->n - 1].out;
    return DP_OK;
}

float *dp__grams_of(const dp_model *m, const dp__node *l, int B) {
    return m->grams_B == B && dp__gram_layer(l) ? m->grams + (size_t)B * l->gram_off : NULL;
}

size_t dp__gram_layer(const dp__node *l) {
    if (l->kind != DP_LAYER_CONV2D || !dp__trainable(l) || !dp__ghost_cheaper(l)) return 0;
    const size_t T = (size_t)l->oh * l->ow, G = l->groups > 1 ? (size_t)l->groups : 1;
    return T <= DP__GRAM_FWD_T ? G * T * T : 0;
}

size_t dp__gram_floats(const dp_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n; i++) {
        const size_t f = dp__gram_layer(&m->L[i]);
        if (f) m->L[i].gram_off = n; /* the nodes' offsets follow the trainable set */
        n += f;
    }
    return n;
}

/* ---- losses ------------------------------------------------------------------------- */

dp_status dp_loss_xent(const float *logits, const int32_t *y, int B, int K, float *loss, float *dlogits) {
    for (int i = 0; i < B; i++)
        if (y[i] < 0 || y[i] >= K) return dp_fail(DP_ERR_RANGE, "cross-entropy: label %d of sample %d outside 0..%d", y[i], i, K - 1);
    int bad = dp__k_xent_f32(loss, dlogits, logits, y, B, K);
    if (bad) return dp_fail(DP_ERR_NONFINITE, "cross-entropy: %d of %d per-sample losses are not finite", bad, B);
    return DP_OK;
}

dp_status dp_loss_mse(const float *logits, const float *t, int B, int K, float *loss, float *dlogits) {
    int bad = dp__k_mse_f32(loss, dlogits, logits, t, B, K);
    if (bad) return dp_fail(DP_ERR_NONFINITE, "mse: %d of %d per-sample losses are not finite", bad, B);
    return DP_OK;
}

/* ---- per-layer gradient operations -------------------------------------------------------- */

/* a node's norm costs, ghost (INFINITY where its kind has none) and instantiation, and
 * whether ghost is the cheaper: the one rule */
static int norm_costs(const dp__node *l, double *g, double *in) {
    const dp__layer_ops *ops = dp__ops(l);
    *g = INFINITY;
    *in = 2.0 * (double)(l->nw + l->nb) * dp__seq_T(l);
    if (ops->ghost_sq && ops->norm_cost) ops->norm_cost(l, g, in);
    return *g <= *in;
}

int dp__ghost_cheaper(const dp__node *l) {
    double g, in;
    return norm_costs(l, &g, &in);
}

dp_norm_method dp_model_norm_method(const dp_model *m, int i, dp_clip_mode mode, double *fg, double *fi) {
    const dp__node *l = &m->L[i];
    if (!dp__trainable(l)) return DP_NORM_NONE;
    double g, in;
    const int ghost = norm_costs(l, &g, &in);
    if (fg) *fg = g;
    if (fi) *fi = in;
    if (mode != DP_CLIP_FAST && mode != DP_CLIP_VANILLA && ghost) return DP_NORM_GHOST;
    return DP_NORM_INSTANTIATE;
}

/* Floats at most in one instantiation chunk (per-sample gradients of one layer). */
#define INST_CHUNK_FLOATS ((size_t)16 << 20)

size_t dp__inst_chunk(const dp__node *l, int B, int group) {
    size_t pl = l->nw + l->nb, nt = (size_t)dp__max_threads(), G = group > 1 ? (size_t)group : 1;
    size_t c = INST_CHUNK_FLOATS / (pl ? pl : 1);
    if (c < nt) c = nt;
    c = c / G * G; /* whole groups: a group's rows are summed before the norm */
    if (c < G) c = G;
    if (c > (size_t)B) c = (size_t)B;
    return c;
}

void dp__add_row_sq(double *sq, size_t sq_stride, const float *rows, size_t stride, size_t width, int B) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *g = rows + (size_t)b * stride;
        sq[(size_t)b * sq_stride] += dp__dot_f32(g, g, width);
    }
}

void dp__add_group_sq(double *sq, const float *rows, size_t stride, size_t width, int B, int group) {
    if (group <= 1) {
        dp__add_row_sq(sq, 1, rows, stride, width, B);
        return;
    }
    /* squared norms do not add over the copies: the norm is of the summed row, formed in
     * double coordinate by coordinate (no scratch, the rows stay as they are) */
    const int ng = B / group;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < ng; i++) {
        const float *g = rows + (size_t)i * group * stride;
        double acc = 0;
        for (size_t j = 0; j < width; j++) {
            double v = 0;
            for (int c = 0; c < group; c++) v += g[(size_t)c * stride + j];
            acc += v * v;
        }
        sq[i] += acc;
    }
}

/* sq[b] += this node's per-sample squared gradient norms (group > 1: sq[b / group], of the
 * groups' summed gradients). */
static dp_status node_norms(dp_model *m, int k, dp_clip_mode mode, const float *dout, int B, int group, double *sq) {
    dp__node *l = &m->L[k];
    const int G = group > 1 ? group : 1;
    /* a ghost norm is of one row's gradient; a group's sum is instantiated (docs/design.md) */
    if (G == 1 && dp_model_norm_method(m, k, mode, NULL, NULL) == DP_NORM_GHOST) {
        dp__ops(l)->ghost_sq(m, l, dout, B, sq);
        return DP_OK;
    }
    /* fast gradient clipping: instantiate this layer's per-sample gradients (in chunks of
     * samples, whole groups each), take their norms, free them */
    size_t pl = l->nw + l->nb, chunk = dp__inst_chunk(l, B, G);
    float *ps = dp_alloc(sizeof(float) * chunk * pl);
    if (!ps) return DP_ERR_NOMEM;
    for (int b0 = 0; b0 < B; b0 += (int)chunk) {
        int nb = B - b0 < (int)chunk ? B - b0 : (int)chunk;
        dp__ops(l)->ps_grad(m, l, ps, pl, dout + (size_t)b0 * l->out_size, b0, nb);
        dp__add_group_sq(sq + b0 / G, ps, pl, pl, nb, G);
    }
    dp_free(ps);
    return DP_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* Node j's output-gradient buffer: its slot, or during pass 1 of a book-keeping step its
 * keep buffer (so G is kept without a copy). */
static float *gbuf(const dp_model *m, const dp__bwd *p, int j) {
    return p->keep && p->keep[j] && p->cm[j] == DP_SUM_KEEP_GRAD ? p->keep[j] : m->gslots[m->L[j].gslot];
}

static int needs(const dp_model *m, const dp__node *l, int j) { return l->in[j] >= 0 && m->L[l->in[j]].need_grad; }

/* Input gradients of node l from its output gradient g. A single input's gradient goes to its
 * slot if nothing wrote it yet in this backward, else to the accumulation buffer, added after. */
static dp_status node_bwd_input(dp_model *m, const dp__bwd *p, const dp__node *l, const float *g, int B) {
    const dp__layer_ops *ops = dp__ops(l);
    if (ops->flags & DP__LF_MULTI) {
        float *din[3] = {NULL, NULL, NULL};
        int acc[3] = {0, 0, 0};
        for (int j = 0; j < l->nin; j++) { /* inputs off the trainable path get no gradient */
            if (!needs(m, l, j)) continue;
            int s = l->in[j];
            din[j] = gbuf(m, p, s);
            acc[j] = m->gw[s];
            for (int i = 0; i < j; i++) acc[j] |= din[i] && l->in[i] == s; /* the same node twice */
        }
        dp_status st = ops->bwd_inputs(m, l, din, acc, g, B);
        if (st != DP_OK) return st;
        for (int j = 0; j < l->nin; j++)
            if (din[j]) m->gw[l->in[j]] = 1;
        return DP_OK;
    }
    if (!needs(m, l, 0) || !ops->bwd_input) return DP_OK;
    if (l->fuse_tanh_bwd == 2) return DP_OK; /* the pooling after it wrote its input's gradient */
    int src = l->in[0];
    if (l->fuse_tanh_bwd == 1) { /* a pooling writes the gradient of its tanh's input (memplan.c) */
        DP_ASSERT(!m->gw[src] && !m->gw[m->L[src].in[0]]);
        m->gw[src] = 1; /* the tanh's output gradient: not formed, and not needed */
        src = m->L[src].in[0];
    }
    float *own = gbuf(m, p, src);
    ops->bwd_input(m, l, m->gw[src] ? m->gacc : own, g, B);
    if (m->gw[src]) {
        size_t n = (size_t)B * m->L[src].out_size;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t q = 0; q < n; q++) own[q] += m->gacc[q];
    }
    m->gw[src] = 1;
    return DP_OK;
}

/* Where node k's coordinates start among the trainable ones (the rows of compact per-sample
 * gradients: vanilla keeps only what trains, as Opacus does). */
size_t dp__trainable_offset(const dp_model *m, int k) {
    size_t o = 0;
    for (int j = 0; j < k; j++)
        if (dp__trainable(&m->L[j])) o += m->L[j].nw + m->L[j].nb;
    return o;
}

/* The model's step scratch, at least `bytes` long: the block of the previous step when it is
 * large enough, else a new one. A training loop allocates it once (on its largest batch)
 * instead of every step: blocks of hundreds of MB, freed and allocated again, go back to the
 * kernel and come back as page faults, which took seconds a step for GB-sized blocks. The
 * bytes are the same that a step holds anyway (dp_model_plan_bytes counts them); they stay
 * allocated until the buffers are resized or the model is destroyed. */
void *dp__step_scratch(dp_model *m, size_t bytes) {
    if (m->scratch && m->scratch_bytes >= bytes) return m->scratch;
    dp_free(m->scratch);
    m->scratch = dp_alloc(bytes ? bytes : 1);
    m->scratch_bytes = m->scratch ? bytes : 0;
    return m->scratch;
}

dp__bwd dp__bwd_init(int what, dp_clip_mode mode) {
    dp__bwd p;
    memset(&p, 0, sizeof p);
    p.what = what;
    p.mode = mode;
    p.low = -1;
    p.stop = -1;
    return p;
}

const float *dp__out_grad(const dp_model *m, int k) { return m->gslots[m->L[k].gslot]; }

dp_status dp__ps_trainable(dp_model *m, const float *dlogits, int B, float **out, int cached) {
    const size_t nt = dp_model_num_trainable(m);
    float *ps = cached ? dp__step_scratch(m, sizeof(float) * (size_t)B * nt) : dp_alloc(sizeof(float) * (size_t)B * nt);
    *out = ps;
    if (!ps) return DP_ERR_NOMEM;
    memset(ps, 0, sizeof(float) * (size_t)B * nt);
    dp__bwd p = dp__bwd_init(DP__BWD_PS, DP_CLIP_VANILLA);
    p.ps = ps;
    p.ps_compact = 1;
    return dp__backward(m, dlogits, B, &p);
}

/* What pass p computes at trainable node k from its output gradient g. */
static dp_status node_grad(dp_model *m, const dp__bwd *p, int k, const float *g, int B) {
    dp__node *l = &m->L[k];
    const dp__layer_ops *ops = dp__ops(l);
    if (p->what == DP__BWD_PARAM) {
        if (p->low < 0 || p->cm[k] == DP_SUM_SECOND_PASS) ops->bwd_param(m, l, g, B);
    } else if (p->keep && p->cm[k] == DP_SUM_KEEP_PS) {
        /* per-sample gradients, kept whole; the norms come from them */
        size_t pl = l->nw + l->nb;
        ops->ps_grad(m, l, p->keep[k], pl, g, 0, B);
        dp__add_group_sq(p->sq, p->keep[k], pl, pl, B, p->group);
    } else if (p->what == DP__BWD_PS) {
        if (p->ps_compact)
            ops->ps_grad(m, l, p->ps + dp__trainable_offset(m, k), dp_model_num_trainable(m), g, 0, B);
        else
            ops->ps_grad(m, l, p->ps + l->w_off, m->np, g, 0, B);
    } else if (p->sq_layers) {
        memset(m->sq1, 0, sizeof(double) * (size_t)B);
        dp_status st = node_norms(m, k, p->mode, g, B, p->group, m->sq1);
        if (st != DP_OK) return st;
        for (int b = 0; b < B; b++) {
            p->sq[b] += m->sq1[b];
            p->sq_layers[(size_t)b * m->n + k] = m->sq1[b];
        }
    } else
        return node_norms(m, k, p->mode, g, B, p->group, p->sq);
    return DP_OK;
}

dp_status dp__backward(dp_model *m, const float *dlogits, int B, const dp__bwd *p) {
    if (B == 0) return DP_OK;
    if (B != m->fwd_B || !m->fwd_train || !m->planned)
        return dp_fail(DP_ERR_INVALID, "backward: needs a training forward of the same batch (forward had %d samples, "
                       "backward %d; freezing layers also needs a new forward)", m->fwd_B, B);
    memset(m->gw, 0, (size_t)m->n);
    const int top = m->n - 1;
    float *cur = gbuf(m, p, top);
    size_t K = m->L[top].out_size;
    for (int b = 0; b < B; b++) {
        float s = p->scale ? p->scale[b] : 1.0f;
        for (size_t j = 0; j < K; j++) cur[(size_t)b * K + j] = s == 0.0f ? 0.0f : dlogits[(size_t)b * K + j] * s;
    }
    m->gw[top] = 1;
    for (int k = top; k >= 0; k--) {
        dp__node *l = &m->L[k];
        if (!l->need_grad) continue;
        float *g = gbuf(m, p, k);
        if (!m->gw[k]) { /* no path to the output: its gradient is zero */
            memset(g, 0, sizeof(float) * (size_t)B * l->out_size);
            m->gw[k] = 1;
        }
        if (dp__trainable(l)) {
            if (k == p->stop) break; /* the caller takes it from here (clip.c) */
            dp_status st = node_grad(m, p, k, g, B);
            if (st != DP_OK) return st;
            if (k == p->low) break; /* nothing below needs this pass */
        }
        dp_status st = node_bwd_input(m, p, l, g, B);
        if (st != DP_OK) return st;
    }
    return DP_OK;
}

dp_status dp_model_backward(dp_model *m, const float *dlogits, int B) {
    m->grams_want = 0; /* non-private training: the forward makes no Grams */
    dp__bwd p = dp__bwd_init(DP__BWD_PARAM, DP_CLIP_VANILLA);
    return dp__backward(m, dlogits, B, &p);
}

dp_status dp_model_per_sample_grads(dp_model *m, const float *dlogits, int B, float *ps) {
    memset(ps, 0, sizeof(float) * (size_t)B * m->np);
    dp__bwd p = dp__bwd_init(DP__BWD_PS, DP_CLIP_VANILLA);
    p.ps = ps;
    return dp__backward(m, dlogits, B, &p);
}

dp_status dp_model_layer_sq_norms(dp_model *m, dp_clip_mode mode, const float *dlogits, int B, double *sq_layers) {
    if ((int)mode < 0 || mode >= DP_CLIP_COUNT) return dp_fail(DP_ERR_INVALID, "clipping mode %d unknown", (int)mode);
    if (B == 0) return DP_OK;
    memset(sq_layers, 0, sizeof(double) * (size_t)B * m->n);
    memset(m->sq, 0, sizeof(double) * (size_t)B);
    if (mode != DP_CLIP_VANILLA) {
        dp__bwd p = dp__bwd_init(DP__BWD_NORMS, mode);
        p.sq = m->sq;
        p.sq_layers = sq_layers;
        return dp__backward(m, dlogits, B, &p);
    }
    float *ps;
    const size_t nt = dp_model_num_trainable(m);
    dp_status st = dp__ps_trainable(m, dlogits, B, &ps, 0);
    if (st == DP_OK)
        for (int k = 0; k < m->n; k++) {
            const dp__node *l = &m->L[k];
            if (!dp__trainable(l)) continue;
            /* sq_layers was zeroed: 0 + the norm is the norm */
            dp__add_row_sq(sq_layers + k, (size_t)m->n, ps + dp__trainable_offset(m, k), nt, l->nw + l->nb, B);
        }
    dp_free(ps);
    return st;
}
