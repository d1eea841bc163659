/* nn/memplan.c: the memory plan and the activation buffers.
 *
 * Recomputed when freezing changes (plan()): a node "needs grad" when it is trainable or reads
 * a node that needs grad. Only what some backward reads is kept per node (a trainable
 * Linear's input, a tanh's output, a LayerNorm's normalised rows, the attention
 * probabilities: the layer table's flags say which); every other activation (the whole frozen
 * prefix of a fine-tuned transformer, which runs as inference) lives in a small pool of slots
 * reused in forward order, with its saved tensors in one shared scratch. Backward gradients
 * live in a pool of slots assigned in reverse order (two for a chain), plus one accumulation
 * buffer for nodes read by several others.
 *
 * The plan is derived state: queries (the memory estimates) bring it up to date without
 * touching the buffers, which are marked stale and reallocated by the next forward. */
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/graph.h"

/* Does node c read its inputs' values (not just their shapes) in its backward? */
static int reads_input_in_bwd(const dp__node *c) {
    const unsigned f = dp__ops(c)->flags;
    const int in = (f & DP__LF_READS_IN) || (dp__ops(c)->reads_in && dp__ops(c)->reads_in(c));
    return ((f & DP__LF_PARAM_READS_IN) && dp__trainable(c)) || (in && c->need_grad);
}

static size_t saved_floats(const dp__node *l) { return dp__ops(l)->saved_floats ? dp__ops(l)->saved_floats(l) : 0; }
static size_t work_floats(const dp__node *l, int B, size_t nt) {
    return dp__ops(l)->work_floats ? dp__ops(l)->work_floats(l, B, nt) : 0;
}
static void assign_saved(dp__node *l, char *base, size_t B) {
    if (dp__ops(l)->assign_saved) dp__ops(l)->assign_saved(l, base, B);
}

void dp__free_buffers(dp_model *m) {
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        dp_free(l->own_out);
        dp_free(l->own_saved);
        l->own_out = l->own_saved = l->out = l->xhat = l->rstd = l->P = NULL;
        l->arg = NULL;
        l->mask = NULL;
    }
    for (int i = 0; i < m->alloc_nf; i++) dp_free(m->fslots ? m->fslots[i] : NULL);
    for (int i = 0; i < m->alloc_ng; i++) dp_free(m->gslots ? m->gslots[i] : NULL);
    dp_free(m->fslots);
    dp_free(m->gslots);
    dp_free(m->gacc);
    dp_free(m->shared_saved);
    dp_free(m->work);
    dp_free(m->sq);
    dp_free(m->sq1);
    dp_free(m->ids);
    dp_free(m->kvalid);
    dp_free(m->scratch);
    m->scratch = NULL;
    m->scratch_bytes = 0;
    dp_free(m->grams);
    m->grams = NULL;
    m->grams_cap = 0;
    m->grams_B = 0;
    m->fslots = m->gslots = NULL;
    m->gacc = NULL;
    m->shared_saved = NULL;
    m->work = NULL;
    m->sq = m->sq1 = NULL;
    m->ids = NULL;
    m->kvalid = NULL;
    m->alloc_nf = m->alloc_ng = 0;
    m->cap = 0;
    m->work_threads = 0;
    m->stale = 0;
}

/* the nodes that read node k's output */
static int readers(const dp_model *m, int k) {
    int n = 0;
    for (int r = k + 1; r < m->n; r++)
        for (int j = 0; j < m->L[r].nin; j++) n += m->L[r].in[j] == k;
    return n;
}
/* conv2d -> tanh pairs where the tanh is the conv's only reader and nothing reads the conv's
 * output after the forward (not in backward: a conv never reads its output; not as the model's
 * output): the conv applies the tanh (dp__node.fuse_tanh) */
static void plan_fusion(dp_model *m) {
    for (int k = 0; k < m->n; k++) m->L[k].fuse_tanh = m->L[k].fuse_tanh_bwd = 0;
    for (int k = 0; k + 1 < m->n; k++) {
        dp__node *c = &m->L[k], *t = &m->L[k + 1];
        if (c->kind != DP_LAYER_CONV2D || t->kind != DP_LAYER_TANH || t->nin != 1 || t->in[0] != k || c->keep_out ||
            t->out_size != c->out_size || readers(m, k) != 1)
            continue;
        c->fuse_tanh = 1;
        t->fuse_tanh = 2;
    }
    /* tanh -> max pooling, in backward: the tanh's output is the pooling's input, which the
     * pooling reads in backward anyway; its input gradient then goes straight to the tanh's
     * input (a single reader each, so nothing is accumulated there) */
    for (int k = 1; k < m->n; k++) {
        dp__node *p = &m->L[k];
        const int ti = p->in[0];
        if (p->kind != DP_LAYER_MAXPOOL || p->nin != 1 || ti < 0 || !p->need_grad || !dp__ops(p)->reads_in ||
            !dp__ops(p)->reads_in(p))
            continue;
        dp__node *t = &m->L[ti];
        if (t->kind != DP_LAYER_TANH || t->nin != 1 || t->in[0] < 0 || !m->L[t->in[0]].need_grad || readers(m, ti) != 1 ||
            readers(m, t->in[0]) != 1)
            continue;
        p->fuse_tanh_bwd = 1;
        t->fuse_tanh_bwd = 2;
    }
}

static void plan(dp_model *m) {
    memset(m->fsz, 0, sizeof m->fsz);
    memset(m->gsz, 0, sizeof m->gsz);
    m->accsz = 0;
    for (int k = 0; k < m->n; k++) {
        dp__node *l = &m->L[k];
        l->need_grad = dp__trainable(l);
        for (int j = 0; j < l->nin; j++)
            if (l->in[j] >= 0 && m->L[l->in[j]].need_grad) l->need_grad = 1;
        const unsigned f = dp__ops(l)->flags;
        l->keep_saved = l->need_grad;
        l->keep_out = k == m->n - 1 || ((f & DP__LF_READS_OUT) && l->need_grad);
        l->last_use = k;
    }
    for (int c = 0; c < m->n; c++) {
        dp__node *l = &m->L[c];
        for (int j = 0; j < l->nin; j++) {
            int i = l->in[j];
            if (i < 0) continue;
            if (reads_input_in_bwd(l)) m->L[i].keep_out = 1;
            if (c > m->L[i].last_use) m->L[i].last_use = c;
        }
    }
    plan_fusion(m);
    /* a flatten of a node that nothing else reads is a view of it: that node's output lives
     * as long as the flatten's would have (kept if the flatten's was), the flatten owns no
     * buffer, and it copies nothing in forward or backward */
    for (int k = 0; k < m->n; k++) {
        dp__node *l = &m->L[k];
        const int src = l->in[0];
        l->view = l->kind == DP_LAYER_FLATTEN && l->nin == 1 && src >= 0 && !m->L[src].view && readers(m, src) == 1 &&
                  m->L[src].out_size == l->out_size && !m->L[src].fuse_tanh;
        if (!l->view) continue;
        if (l->keep_out) m->L[src].keep_out = 1;
        if (l->last_use > m->L[src].last_use) m->L[src].last_use = l->last_use;
        l->keep_out = 0;
    }
    /* forward slots for outputs nobody reads in backward: best fit among the free slots
     * (the smallest that holds the output, else the largest, which grows) */
    int nslots = 0;
    int owner[DP__MAX_SLOTS];
    for (int k = 0; k < m->n; k++) {
        dp__node *l = &m->L[k];
        l->fslot = -1;
        int src = l->in[0];
        if (l->view) {
            /* nothing of its own (its input's slot, if any, is held to its last use) */
        } else if (!l->keep_out && src >= 0 && m->L[src].fslot >= 0 && m->L[src].last_use == k && owner[m->L[src].fslot] == src &&
            m->L[src].out_size == l->out_size && (dp__ops(l)->flags & DP__LF_INPLACE)) {
            /* an elementwise op whose input dies here works in place (inference only: an
             * output read by a backward is kept, never pooled) */
            l->fslot = m->L[src].fslot;
            owner[l->fslot] = k;
        } else if (!l->keep_out) {
            int s = -1;
            for (int q = 0; q < nslots; q++) {
                if (owner[q] >= 0) continue;
                if (s < 0) s = q;
                else if (m->fsz[q] >= l->out_size ? (m->fsz[s] < l->out_size || m->fsz[q] < m->fsz[s])
                                                  : (m->fsz[s] < l->out_size && m->fsz[q] > m->fsz[s]))
                    s = q;
            }
            if (s < 0) {
                DP_ASSERT(nslots < DP__MAX_SLOTS);
                s = nslots++;
            }
            owner[s] = k;
            l->fslot = s;
            if (l->out_size > m->fsz[s]) m->fsz[s] = l->out_size;
        }
        for (int q = 0; q < nslots; q++)
            if (owner[q] >= 0 && owner[q] != k && m->L[owner[q]].last_use <= k) owner[q] = -1;
    }
    m->nfslots = nslots;
    /* backward slots, in reverse order; the accumulator for nodes read by several */
    int gs = 0;
    int gowner[DP__MAX_SLOTS];
    for (int k = 0; k < m->n; k++) m->L[k].gslot = -1;
    for (int i = 0; i < m->n; i++)
        if (m->L[i].need_grad && readers(m, i) > 1 && m->L[i].out_size > m->accsz) m->accsz = m->L[i].out_size;
    for (int k = m->n - 1; k >= 0; k--) {
        dp__node *l = &m->L[k];
        if (!l->need_grad) continue;
        /* a pooling fused with the tanh before it (plan_fusion) writes the gradient of the tanh's
         * input instead of the tanh's: that slot is taken here, while the pooling's own is still
         * held, and the tanh's output gradient (never formed) shares it */
        const int fused = l->fuse_tanh_bwd == 1;
        for (int j = -1; j < l->nin; j++) {
            int i = j < 0 ? k : l->in[j];
            if (fused && j == 0) i = m->L[i].in[0];
            if (i < 0 || !m->L[i].need_grad || m->L[i].gslot >= 0) continue;
            if (l->view && j == 0) { /* a view's input gradient is its output gradient */
                m->L[i].gslot = l->gslot;
                continue;
            }
            size_t need = m->L[i].out_size;
            int s = -1;
            for (int q = 0; q < gs; q++) {
                if (gowner[q] >= 0) continue;
                if (s < 0) s = q;
                else if (m->gsz[q] >= need ? (m->gsz[s] < need || m->gsz[q] < m->gsz[s]) : (m->gsz[s] < need && m->gsz[q] > m->gsz[s]))
                    s = q;
            }
            if (s < 0) {
                DP_ASSERT(gs < DP__MAX_SLOTS);
                s = gs++;
            }
            gowner[s] = i;
            m->L[i].gslot = s;
            if (need > m->gsz[s]) m->gsz[s] = need;
        }
        if (fused) m->L[l->in[0]].gslot = m->L[m->L[l->in[0]].in[0]].gslot;
        if (l->view && m->L[l->in[0]].need_grad) gowner[l->gslot] = l->in[0]; /* handed to its input */
        else if (l->fuse_tanh_bwd != 2) gowner[l->gslot] = -1; /* a fused tanh's slot is its input's */
    }
    m->ngslots = gs;
    m->planned = 1;
}


void dp__plan_current(dp_model *m) {
    if (m->planned) return;
    plan(m);
    m->stale = 1;
}

/* Bytes the activation buffers take for batch B (what dp__ensure_capacity allocates). */
size_t dp__buffer_bytes(const dp_model *m, int B, size_t nt) {
    size_t bytes = 0, shared = 0, work = 0;
    for (int i = 0; i < m->n; i++) {
        const dp__node *l = &m->L[i];
        if (l->keep_out) bytes += sizeof(float) * (size_t)B * l->out_size;
        size_t s = sizeof(float) * (size_t)B * saved_floats(l);
        if (l->keep_saved) bytes += s;
        else if (s > shared) shared = s;
        size_t wf = work_floats(l, B, nt);
        if (wf > work) work = wf;
    }
    bytes += shared + sizeof(float) * work;
    for (int q = 0; q < m->nfslots; q++) bytes += sizeof(float) * (size_t)B * m->fsz[q];
    for (int q = 0; q < m->ngslots; q++) bytes += sizeof(float) * (size_t)B * m->gsz[q];
    bytes += sizeof(float) * (size_t)B * m->accsz;
    bytes += 2 * sizeof(double) * (size_t)B;
    if (m->tokens) bytes += (sizeof(int32_t) + 1) * (size_t)B * m->in_size;
    return bytes;
}

dp_status dp__ensure_capacity(dp_model *m, int B) {
    dp__plan_current(m);
    /* the kernels give each running thread its share of work: more threads than it was sized
     * for (omp_set_num_threads between calls, as the Python package's threads= does) would
     * write past it, so the buffers are made again */
    if (m->stale || (m->cap && dp__max_threads() > m->work_threads)) dp__free_buffers(m);
    if (B <= m->cap) return DP_OK;
    dp__free_buffers(m);
    const size_t nc = (size_t)B, nt = (size_t)dp__max_threads();
    size_t shared = 0, work = 0;
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        if (l->keep_out) {
            if (!(l->own_out = dp_alloc(sizeof(float) * nc * l->out_size))) return DP_ERR_NOMEM;
            l->out = l->own_out;
        }
        size_t s = sizeof(float) * nc * saved_floats(l);
        if (s && l->keep_saved) {
            if (!(l->own_saved = dp_alloc(s))) return DP_ERR_NOMEM;
            assign_saved(l, (char *)l->own_saved, nc);
        } else if (s > shared)
            shared = s;
        size_t wf = work_floats(l, B, nt);
        if (wf > work) work = wf;
    }
    if (shared && !(m->shared_saved = dp_alloc(shared))) return DP_ERR_NOMEM;
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        if (!l->keep_saved && saved_floats(l)) assign_saved(l, (char *)m->shared_saved, nc);
    }
    m->fslots = dp_calloc((size_t)m->nfslots + 1, sizeof(float *));
    m->gslots = dp_calloc((size_t)m->ngslots + 1, sizeof(float *));
    if (!m->fslots || !m->gslots) return DP_ERR_NOMEM;
    m->alloc_nf = m->nfslots;
    m->alloc_ng = m->ngslots;
    for (int i = 0; i < m->nfslots; i++)
        if (!(m->fslots[i] = dp_alloc(sizeof(float) * nc * m->fsz[i]))) return DP_ERR_NOMEM;
    for (int i = 0; i < m->ngslots; i++)
        if (!(m->gslots[i] = dp_alloc(sizeof(float) * nc * m->gsz[i]))) return DP_ERR_NOMEM;
    for (int i = 0; i < m->n; i++)
        if (m->L[i].view) m->L[i].out = m->L[m->L[i].in[0]].out; /* in index order: its input's is set */
        else if (!m->L[i].keep_out) m->L[i].out = m->fslots[m->L[i].fslot];
    if (m->accsz && !(m->gacc = dp_alloc(sizeof(float) * nc * m->accsz))) return DP_ERR_NOMEM;
    m->work = work ? dp_alloc(sizeof(float) * work) : NULL;
    m->work_floats = work;
    m->work_threads = (int)nt;
    m->sq = dp_alloc(sizeof(double) * nc);
    m->sq1 = dp_alloc(sizeof(double) * nc);
    if ((work && !m->work) || !m->sq || !m->sq1) return DP_ERR_NOMEM;
    if (m->tokens) {
        m->ids = dp_alloc(sizeof(int32_t) * nc * m->in_size);
        m->kvalid = dp_alloc(nc * m->in_size);
        if (!m->ids || !m->kvalid) return DP_ERR_NOMEM;
    }
    m->cap = B;
    return DP_OK;
}
