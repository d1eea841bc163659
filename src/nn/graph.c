/* nn/graph.c: building a model graph (nodes, parameter blocks, tensor names), its
 * parameters (initialisation, freezing, named tensors) and what can be asked about it. The
 * kind-specific parts come from the layer table (nn/graph.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h"

/* ---- name tables ---------------------------------------------------------------------- */

static const char *const layer_names[] = {
#define DP__TEXT(name, text) text,
    DP_LAYER_LIST(DP__TEXT)
#undef DP__TEXT
};
_Static_assert(sizeof layer_names / sizeof layer_names[0] == DP_LAYER_COUNT, "every layer kind needs a name");

static const char *const clip_names[] = {
#define DP__TEXT(name, text) text,
    DP_CLIP_LIST(DP__TEXT)
#undef DP__TEXT
};
_Static_assert(sizeof clip_names / sizeof clip_names[0] == DP_CLIP_COUNT, "every clipping mode needs a name");

const char *dp_layer_kind_name(dp_layer_kind k) {
    return (int)k >= 0 && k < DP_LAYER_COUNT ? layer_names[k] : "?";
}
const char *dp_clip_mode_name(dp_clip_mode m) { return (int)m >= 0 && m < DP_CLIP_COUNT ? clip_names[m] : "?"; }

dp_status dp_clip_mode_parse(const char *s, dp_clip_mode *out) {
    for (int i = 0; i < DP_CLIP_COUNT; i++)
        if (s && strcmp(s, clip_names[i]) == 0) {
            *out = (dp_clip_mode)i;
            return DP_OK;
        }
    char known[128] = "";
    for (int i = 0; i < DP_CLIP_COUNT; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", clip_names[i]);
    return dp_fail(DP_ERR_INVALID, "clipping %s: unknown mode (choose %s)", s ? s : "(null)", known);
}

dp_clip_params dp_clip_default_params(void) {
    dp_clip_params p = {DP_CLIP_AUTO, 1.0, 0, 0};
    return p;
}

void dp_model_destroy(dp_model *m) {
    if (!m) return;
    dp__free_buffers(m);
    for (int i = 0; i < m->n; i++) dp_free(m->L[i].cst);
    dp_free(m->L);
    dp_free(m->params);
    dp_free(m->grad);
    dp_free(m->tmask);
    dp_free(m->gw);
    dp_free(m->tnames);
    dp_free(m->toff);
    dp_free(m->tcount);
    dp_free(m->tnode);
    dp_free(m);
}


/* ---- building ------------------------------------------------------------------------- */

dp_model *dp__model_new(int c, int h, int w) {
    dp_model *m = dp_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->c = c;
    m->h = h;
    m->w = w;
    m->in_size = m->max_size = (size_t)c * h * w;
    return m;
}

/* Append a node (zeroed, kind set) reading `in0` (-1: model input); NULL when out of memory. */
dp__node *dp__push_node(dp_model *m, dp_layer_kind kind, int in0) {
    if (m->n == m->capn) {
        int nc = m->capn ? 2 * m->capn : 16;
        dp__node *nl = dp_calloc((size_t)nc, sizeof *nl);
        if (!nl) return NULL;
        if (m->L) memcpy(nl, m->L, sizeof *nl * (size_t)m->n);
        dp_free(m->L);
        m->L = nl;
        m->capn = nc;
    }
    dp__node *l = &m->L[m->n++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->in[0] = in0;
    l->in[1] = l->in[2] = -1;
    l->nin = 1;
    if (in0 < 0) {
        l->ic = m->c;
        l->ih = m->h;
        l->iw = m->w;
        l->iseq = 0;
    } else {
        const dp__node *p = &m->L[in0];
        l->ic = p->oc;
        l->ih = p->oh;
        l->iw = p->ow;
        l->iseq = p->seq;
    }
    l->in_size = (size_t)l->ic * l->ih * l->iw;
    l->oc = l->ic;
    l->oh = l->ih;
    l->ow = l->iw;
    l->seq = l->iseq;
    return l;
}

/* Shapes, parameters and names once a dp__node's kind-specific fields are set. */
/* Shapes, parameters and names once a node's kind-specific fields are set. */
void dp__finish_node(dp_model *m, dp__node *l, int idx, const char *name) {
    const dp__layer_ops *ops = dp__ops(l);
    if (ops->shape) ops->shape(l);
    l->out_size = (size_t)l->oc * l->oh * l->ow;
    if (l->out_size > m->max_size) m->max_size = l->out_size;
    l->w_off = m->np;
    m->np += l->nw;
    l->b_off = m->np;
    m->np += l->nb;
    if (dp__has_params(l)) m->ntensors += l->nb ? 2 : 1;
    if (name)
        snprintf(l->name, sizeof l->name, "%s", name);
    else
        snprintf(l->name, sizeof l->name, "%d", idx);
}

/* Parameter blocks and the tensor table, once every dp__node is in. */
dp_status dp__finish_model(dp_model *m) {
    if (m->n == 0) return dp_fail(DP_ERR_INVALID, "model spec: no layers");
    if (m->np == 0) return dp_fail(DP_ERR_INVALID, "model spec: the model has no parameters to train");
    m->params = dp_calloc(m->np, sizeof(float));
    m->grad = dp_calloc(m->np, sizeof(float));
    m->tmask = dp_alloc(m->np);
    m->gw = dp_calloc((size_t)m->n, 1);
    m->tnames = dp_calloc((size_t)m->ntensors, sizeof *m->tnames);
    m->toff = dp_calloc((size_t)m->ntensors, sizeof(size_t));
    m->tcount = dp_calloc((size_t)m->ntensors, sizeof(size_t));
    m->tnode = dp_calloc((size_t)m->ntensors, sizeof(int));
    if (!m->params || !m->grad || !m->tmask || !m->gw || !m->tnames || !m->toff || !m->tcount || !m->tnode)
        return DP_ERR_NOMEM;
    memset(m->tmask, 1, m->np);
    int ti = 0;
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        if (!dp__has_params(l)) continue;
        if (l->wname[0])
            snprintf(m->tnames[ti], sizeof m->tnames[ti], "%s", l->wname);
        else
            snprintf(m->tnames[ti], sizeof m->tnames[ti], "%s.weight", l->name);
        m->toff[ti] = l->w_off;
        m->tnode[ti] = i;
        m->tcount[ti++] = l->nw;
        if (l->nb) {
            if (l->bname[0])
                snprintf(m->tnames[ti], sizeof m->tnames[ti], "%s", l->bname);
            else
                snprintf(m->tnames[ti], sizeof m->tnames[ti], "%s.bias", l->name);
            m->toff[ti] = l->b_off;
            m->tnode[ti] = i;
            m->tcount[ti++] = l->nb;
        }
    }
    return DP_OK;
}

/* ---- parameters --------------------------------------------------------------------- */

void dp_model_init(dp_model *m, dp_rng *rng) {
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        if (!dp__has_params(l)) continue;
        float *w = m->params + l->w_off, *b = m->params + l->b_off;
        const dp__layer_ops *ops = dp__ops(l);
        if (ops->init) {
            ops->init(m, l, w, b, rng);
        } else if (m->bert_init) {
            for (size_t j = 0; j < l->nw; j++) w[j] = (float)(0.02 * dp_rng_normal(rng));
            for (size_t j = 0; j < l->nb; j++) b[j] = 0.0f;
        } else { /* kaiming-uniform: fan-in = weights per output channel */
            double bound = 1.0 / sqrt((double)(l->nw / (size_t)l->oc));
            for (size_t j = 0; j < l->nw; j++) w[j] = (float)((2 * dp_rng_uniform(rng) - 1) * bound);
            for (size_t j = 0; j < l->nb; j++) b[j] = (float)((2 * dp_rng_uniform(rng) - 1) * bound);
        }
    }
}

size_t dp_model_num_params(const dp_model *m) { return m->np; }
size_t dp_model_num_trainable(const dp_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n; i++)
        if (!m->L[i].frozen) n += m->L[i].nw + m->L[i].nb;
    return n;
}
float *dp_model_params(dp_model *m) { return m->params; }
float *dp_model_grad(dp_model *m) { return m->grad; }
void dp_model_zero_grad(dp_model *m) { memset(m->grad, 0, m->np * sizeof(float)); }
const unsigned char *dp_model_trainable_mask(const dp_model *m) { return m->tmask; }
int dp_model_num_layers(const dp_model *m) { return m->n; }
size_t dp_model_input_size(const dp_model *m) { return m->in_size; }
int dp_model_output_size(const dp_model *m) { return (int)m->L[m->n - 1].out_size; }
int dp_model_input_is_tokens(const dp_model *m) { return m->tokens; }
int dp_model_vocab(const dp_model *m) { return m->tokens ? m->L[0].vocab : 0; }
dp_layer_kind dp_model_layer_kind(const dp_model *m, int i) { return m->L[i].kind; }
const char *dp_model_layer_name(const dp_model *m, int i) { return m->L[i].name; }
size_t dp_model_layer_params(const dp_model *m, int i, size_t *offset) {
    if (offset) *offset = m->L[i].w_off;
    return m->L[i].nw + m->L[i].nb;
}
int dp_model_layer_frozen(const dp_model *m, int i) { return m->L[i].frozen; }

static dp_status set_frozen(dp_model *m, int i, int frozen) {
    dp__node *l = &m->L[i];
    l->frozen = frozen != 0;
    memset(m->tmask + l->w_off, !l->frozen, l->nw + l->nb);
    m->planned = 0;
    m->fwd_train = 0; /* the next backward needs a new forward */
    return DP_OK;
}

dp_status dp_model_set_frozen(dp_model *m, int i, int frozen) {
    if (i < 0 || i >= m->n) return dp_fail(DP_ERR_RANGE, "freeze: layer %d does not exist (model has %d layers)", i, m->n);
    dp__node *l = &m->L[i];
    if (!dp__has_params(l)) return dp_fail(DP_ERR_INVALID, "freeze: layer %d (%s) has no parameters", i, dp_layer_kind_name(l->kind));
    int was = l->frozen;
    set_frozen(m, i, frozen);
    if (dp_model_num_trainable(m) == 0) {
        set_frozen(m, i, was);
        return dp_fail(DP_ERR_INVALID, "freeze: layer %d is the last trainable layer; nothing would be trained", i);
    }
    return DP_OK;
}

dp_status dp_model_set_frozen_prefix(dp_model *m, const char *prefix, int frozen, int *count) {
    size_t n = strlen(prefix);
    int hits = 0;
    unsigned char *was = dp_alloc((size_t)m->n);
    if (!was) return DP_ERR_NOMEM;
    for (int i = 0; i < m->n; i++) was[i] = (unsigned char)m->L[i].frozen;
    for (int i = 0; i < m->n; i++) {
        dp__node *l = &m->L[i];
        if (!dp__has_params(l) || strncmp(l->name, prefix, n) != 0) continue;
        if (l->name[n] != 0 && l->name[n] != '.' && n && prefix[n - 1] != '.') continue;
        set_frozen(m, i, frozen);
        hits++;
    }
    dp_status st = DP_OK;
    if (hits == 0)
        st = dp_fail(DP_ERR_INVALID, "freeze: no layer with parameters is named '%s' or '%s.*'", prefix, prefix);
    else if (dp_model_num_trainable(m) == 0)
        st = dp_fail(DP_ERR_INVALID, "freeze: '%s' would freeze every parameter; nothing would be trained", prefix);
    if (st != DP_OK)
        for (int i = 0; i < m->n; i++)
            if (dp__has_params(&m->L[i])) set_frozen(m, i, was[i]);
    dp_free(was);
    if (st == DP_OK && count) *count = hits;
    return st;
}

int dp_model_num_tensors(const dp_model *m) { return m->ntensors; }
dp_status dp_model_tensor(dp_model *m, int t, const char **name, float **data, size_t *count) {
    if (t < 0 || t >= m->ntensors) return dp_fail(DP_ERR_RANGE, "tensor %d does not exist", t);
    if (name) *name = m->tnames[t];
    if (data) *data = m->params + m->toff[t];
    if (count) *count = m->tcount[t];
    return DP_OK;
}
dp_status dp_model_find_tensor(dp_model *m, const char *name, float **data, size_t *count) {
    for (int t = 0; t < m->ntensors; t++)
        if (strcmp(m->tnames[t], name) == 0) return dp_model_tensor(m, t, NULL, data, count);
    return dp_fail(DP_ERR_INVALID, "parameter '%s' does not exist in this model", name);
}

int dp_model_tensor_shape(const dp_model *m, int t, int64_t shape[4]) {
    if (t < 0 || t >= m->ntensors) return 0;
    const dp__node *l = &m->L[m->tnode[t]];
    int bias = m->toff[t] == l->b_off && l->nb > 0 && m->toff[t] != l->w_off;
    if (bias) {
        shape[0] = (int64_t)l->nb;
        return 1;
    }
    if (l->wnd > 0 && !l->wtrans) { /* an imported parameter: its shape in the file */
        for (int d = 0; d < l->wnd; d++) shape[d] = l->wdims[d];
        return l->wnd;
    }
    if (dp__ops(l)->weight_shape) return dp__ops(l)->weight_shape(l, shape);
    shape[0] = (int64_t)l->nw;
    return 1;
}

int dp_model_layer_shape(const dp_model *m, int i, int64_t shape[3]) {
    const dp__node *l = &m->L[i];
    if (l->seq) {
        shape[0] = l->oh;
        shape[1] = l->oc;
        return 2;
    }
    shape[0] = l->oc;
    shape[1] = l->oh;
    shape[2] = l->ow;
    return 3;
}

int dp_model_layer_inputs(const dp_model *m, int i, int in[3]) {
    const dp__node *l = &m->L[i];
    for (int j = 0; j < 3; j++) in[j] = j < l->nin ? l->in[j] : -1;
    return l->nin;
}

void dp_model_layer_flops(const dp_model *m, int i, double *fwd, double *bwd_weight, double *bwd_input) {
    const dp__node *l = &m->L[i];
    double f = 0, w = 0, x = 0;
    if (dp__ops(l)->flops) dp__ops(l)->flops(l, &f, &w, &x);
    if (fwd) *fwd = f;
    if (bwd_weight) *bwd_weight = w;
    if (bwd_input) *bwd_input = x;
}

void dp_model_describe(const dp_model *m, char *buf, size_t cap) {
    size_t o = 0;
    if (m->tokens)
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "input %d token ids (vocabulary %d)\n", (int)m->in_size, m->L[0].vocab);
    else
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "input %dx%dx%d\n", m->c, m->h, m->w);
    for (int i = 0; i < m->n && o < cap; i++) {
        const dp__node *l = &m->L[i];
        char ins[48] = "";
        int chain = l->nin == 1 && l->in[0] == i - 1;
        if (!chain) {
            snprintf(ins, sizeof ins, " <-");
            for (int j = 0; j < l->nin; j++) snprintf(ins + strlen(ins), sizeof ins - strlen(ins), " %d", l->in[j]);
        }
        char shp[40];
        if (l->seq)
            snprintf(shp, sizeof shp, "%dx%d", l->oh, l->oc);
        else
            snprintf(shp, sizeof shp, "%dx%dx%d", l->oc, l->oh, l->ow);
        int named = dp__has_params(l) && !(l->name[0] >= '0' && l->name[0] <= '9');
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "%3d %-10s -> %-10s params %zu%s%s%s%s\n", i, dp_layer_kind_name(l->kind),
                              shp, l->nw + l->nb, l->frozen ? " (frozen)" : "", ins, named ? "  " : "", named ? l->name : "");
    }
    if (o < cap) snprintf(buf + o, cap - o, "total parameters %zu, trainable %zu\n", m->np, dp_model_num_trainable(m));
}

void dp__transpose_copy(float *dst, const float *src, size_t rows, size_t cols) {
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) dst[j * rows + i] = src[i * cols + j];
}
