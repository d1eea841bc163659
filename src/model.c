/* model.c: models as graphs of layers (nodes in topological order), the spec parser, the
 * transformer builder, forward, backward and the clipping engine.
 *
 * A node reads the outputs of up to three earlier nodes (or the model input) and writes one
 * output. Sequential specs give a chain; the transformer builder adds residual connections
 * (add) and attention (a parameter-free core fed by separate q, k, v Linear nodes, so that
 * the attention's per-sample norms come from its Linears).
 *
 * Memory plan (recomputed when freezing changes, see plan()): a node "needs grad" when it
 * is trainable or reads a node that needs grad. Only what some backward reads is kept per
 * node (a trainable Linear's input, a tanh's output, a LayerNorm's normalised rows, the
 * attention probabilities); every other activation (the whole frozen prefix of a
 * fine-tuned transformer, which runs as inference) lives in a small pool of slots reused
 * in forward order, with its saved tensors in one shared scratch. Backward gradients live
 * in a pool of slots assigned in reverse order (two for a chain), plus one accumulation
 * buffer for nodes read by several others. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "dpsgd/nn.h"
#include "kernels.h"
#include "kernels_seq.h"

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
    return dp_fail(DP_ERR_INVALID, "--clipping %s: unknown mode (choose %s)", s ? s : "(null)", known);
}

dp_clip_params dp_clip_default_params(void) {
    dp_clip_params p = {DP_CLIP_AUTO, 1.0, 0};
    return p;
}

/* ---- the model ------------------------------------------------------------------------ */

enum { NAME_LEN = 80 };

typedef struct {
    dp_layer_kind kind;
    int in[3], nin;      /* input nodes, -1 = the model input */
    int seq;             /* the output is a sequence [T, F] (oc = F, oh = T, ow = 1) */
    int iseq;            /* the input is a sequence */
    int ic, ih, iw, oc, oh, ow;
    size_t in_size, out_size;
    int k, s, pad, has_bias, groups, heads, vocab;
    float p, eps;
    size_t w_off, nw, b_off, nb;
    int frozen;
    char name[NAME_LEN];
    /* plan */
    int need_grad, keep_out, keep_saved, fslot, gslot, last_use;
    int cm;              /* dp_sum_method in bk/auto steps */
    float *keep;         /* kept G or per-sample gradients during a bk/auto step */
    /* buffers: own_* are owned; out/col/xhat/rstd/P/arg/mask point at own or shared memory */
    float *own_out, *own_saved;
    float *out, *col, *xhat, *rstd, *P;
    int32_t *arg;
    unsigned char *mask;
} node;

struct dp_model {
    int n, capn;
    node *L;
    int c, h, w;
    int tokens;       /* the input is T = c*h*w token ids (first node is an embedding) */
    int bert_init;    /* N(0, 0.02) weights, zero biases (the transformer builder) */
    size_t in_size, max_size;
    size_t np;
    float *params, *grad;
    unsigned char *tmask;
    int planned;      /* plan() is current */
    int cap;          /* batch capacity of the activation buffers */
    const float *x;   /* input of the last forward (borrowed) */
    int fwd_B, fwd_train;
    int32_t *ids;     /* token models: [cap, T] */
    unsigned char *kvalid; /* [cap, T] */
    int nfslots, ngslots;
    size_t fsz[64], gsz[64], accsz; /* floats per sample of each slot and of the accumulator */
    float **fslots, **gslots, *gacc;
    void *shared_saved;
    unsigned char *gw; /* [n] gradient slot written in this backward */
    float *work;      /* scratch for conv, ghost norms, attention */
    size_t work_floats;
    double *sq, *sq1; /* [cap] */
    void *scratch;    /* a DP step's large block (bk/auto's kept tensors, vanilla's per-sample
                       * gradients), kept between steps so that it is not faulted in anew */
    size_t scratch_bytes;
    int keeping;      /* backward pass 1 of a bk/auto step: fill the nodes' keep buffers */
    int ps_compact;   /* BWD_PS writes rows of the trainable coordinates only ([B, trainable]) */
    int pass2_low;    /* >= 0: a second pass for the DP_SUM_SECOND_PASS nodes, down to this one */
    int ntensors;
    char (*tnames)[NAME_LEN + 8];
    size_t *toff, *tcount;
    int *tnode;
};

static int has_params(const node *l) { return l->nw > 0; }
static int trainable(const node *l) { return has_params(l) && !l->frozen; }

static void free_buffers(dp_model *m) {
    for (int i = 0; i < m->n; i++) {
        node *l = &m->L[i];
        dp_free(l->own_out);
        dp_free(l->own_saved);
        l->own_out = l->own_saved = l->out = l->col = l->xhat = l->rstd = l->P = NULL;
        l->arg = NULL;
        l->mask = NULL;
    }
    for (int i = 0; i < m->nfslots; i++) dp_free(m->fslots ? m->fslots[i] : NULL);
    for (int i = 0; i < m->ngslots; i++) dp_free(m->gslots ? m->gslots[i] : NULL);
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
    m->fslots = m->gslots = NULL;
    m->gacc = NULL;
    m->shared_saved = NULL;
    m->work = NULL;
    m->sq = m->sq1 = NULL;
    m->ids = NULL;
    m->kvalid = NULL;
    m->cap = 0;
}

void dp_model_destroy(dp_model *m) {
    if (!m) return;
    free_buffers(m);
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

static dp_model *model_new(int c, int h, int w) {
    dp_model *m = dp_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->c = c;
    m->h = h;
    m->w = w;
    m->in_size = m->max_size = (size_t)c * h * w;
    m->pass2_low = -1;
    return m;
}

/* Append a node (zeroed, kind set) reading `in0` (-1: model input); NULL when out of memory. */
static node *push_node(dp_model *m, dp_layer_kind kind, int in0) {
    if (m->n == m->capn) {
        int nc = m->capn ? 2 * m->capn : 16;
        node *nl = dp_calloc((size_t)nc, sizeof *nl);
        if (!nl) return NULL;
        if (m->L) memcpy(nl, m->L, sizeof *nl * (size_t)m->n);
        dp_free(m->L);
        m->L = nl;
        m->capn = nc;
    }
    node *l = &m->L[m->n++];
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
        const node *p = &m->L[in0];
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

/* Shapes, parameters and names once a node's kind-specific fields are set. */
static dp_status finish_node(dp_model *m, node *l, int idx, const char *name) {
    switch (l->kind) {
    case DP_LAYER_LINEAR:
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
        break;
    case DP_LAYER_CONV2D:
        l->nw = (size_t)l->oc * l->ic * l->k * l->k;
        l->nb = l->has_bias ? (size_t)l->oc : 0;
        break;
    case DP_LAYER_EMBEDDING:
        l->nw = (size_t)l->vocab * l->oc;
        l->oh = (int)l->in_size; /* T */
        l->ow = 1;
        l->seq = 1;
        break;
    case DP_LAYER_POSEMBED: l->nw = (size_t)l->ic * l->ih; break;
    case DP_LAYER_LAYERNORM:
    case DP_LAYER_GROUPNORM:
        l->nw = l->nb = (size_t)l->ic;
        l->has_bias = 1;
        break;
    case DP_LAYER_RMSNORM: l->nw = (size_t)l->ic; break;
    case DP_LAYER_MEANPOOL:
    case DP_LAYER_FIRSTTOKEN:
        l->oh = l->ow = 1;
        l->seq = 0;
        break;
    default: break;
    }
    l->out_size = (size_t)l->oc * l->oh * l->ow;
    if (l->out_size > m->max_size) m->max_size = l->out_size;
    l->w_off = m->np;
    m->np += l->nw;
    l->b_off = m->np;
    m->np += l->nb;
    if (has_params(l)) m->ntensors += l->nb ? 2 : 1;
    if (name)
        snprintf(l->name, sizeof l->name, "%s", name);
    else
        snprintf(l->name, sizeof l->name, "%d", idx);
    return DP_OK;
}

/* Parameter blocks and the tensor table, once every node is in. */
static dp_status finish_model(dp_model *m) {
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
        node *l = &m->L[i];
        if (!has_params(l)) continue;
        snprintf(m->tnames[ti], sizeof m->tnames[ti], "%s.weight", l->name);
        m->toff[ti] = l->w_off;
        m->tnode[ti] = i;
        m->tcount[ti++] = l->nw;
        if (l->nb) {
            snprintf(m->tnames[ti], sizeof m->tnames[ti], "%s.bias", l->name);
            m->toff[ti] = l->b_off;
            m->tnode[ti] = i;
            m->tcount[ti++] = l->nb;
        }
    }
    return DP_OK;
}

/* ---- spec parser ---------------------------------------------------------------------- */

typedef struct {
    char name[16];
    char args[8][16];
    int nargs;
    char label[NAME_LEN]; /* optional "@name" suffix: the module name for parameter names */
} token;

static dp_status next_token(const char **sp, token *t, int idx) {
    const char *s = *sp;
    memset(t, 0, sizeof *t);
    size_t n = 0;
    while (*s && (isalnum((unsigned char)*s) || *s == '_')) {
        if (n + 1 >= sizeof t->name) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: name too long", idx);
        t->name[n++] = (char)tolower((unsigned char)*s++);
    }
    if (n == 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: expected a layer name at '%.20s'", idx, s);
    if (*s == '(') {
        s++;
        for (;;) {
            while (*s == ' ') s++;
            if (*s == ')') {
                s++;
                break;
            }
            if (t->nargs == 8) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): too many arguments", idx, t->name);
            size_t a = 0;
            while (*s && *s != ',' && *s != ')' && *s != ' ') {
                if (a + 1 >= sizeof t->args[0])
                    return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): argument too long", idx, t->name);
                t->args[t->nargs][a++] = *s++;
            }
            while (*s == ' ') s++;
            if (a == 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): empty argument", idx, t->name);
            t->nargs++;
            if (*s == ',') s++;
            else if (*s != ')')
                return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): missing ')'", idx, t->name);
        }
    }
    if (*s == '@') {
        s++;
        size_t a = 0;
        while (*s && (isalnum((unsigned char)*s) || *s == '_' || *s == '.')) {
            if (a + 1 >= sizeof t->label) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): name too long", idx, t->name);
            t->label[a++] = *s++;
        }
        if (a == 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): empty name after '@'", idx, t->name);
    }
    if (*s && !isspace((unsigned char)*s))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): unexpected '%c'", idx, t->name, *s);
    while (isspace((unsigned char)*s)) s++;
    *sp = s;
    return DP_OK;
}

static int parse_int(const char *a, long lo, long hi, long *v) {
    char *end;
    long x = strtol(a, &end, 10);
    if (end == a || *end || x < lo || x > hi) return 0;
    *v = x;
    return 1;
}

static int parse_real(const char *a, double lo, double hi, double *v) {
    char *end;
    double x = strtod(a, &end);
    if (end == a || *end || !(x >= lo && x <= hi)) return 0;
    *v = x;
    return 1;
}

/* Kind-specific fields of a spec layer on the current node. */
static dp_status spec_layer(dp_model *m, node *l, const token *t, int idx) {
    long v;
    double x;
    const int c = l->ic, h = l->ih, w = l->iw;
    switch (l->kind) {
    case DP_LAYER_LINEAR:
        if (t->nargs < 1 || t->nargs > 2 || !parse_int(t->args[0], 1, 1 << 24, &v))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: linear(OUT[,nobias]) needs OUT >= 1", idx);
        l->has_bias = !(t->nargs == 2 && strcmp(t->args[1], "nobias") == 0);
        if (t->nargs == 2 && l->has_bias)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: linear: unknown option '%s'", idx, t->args[1]);
        l->oc = (int)v;
        break;
    case DP_LAYER_CONV2D: {
        long out, k, s = 1, p = 0;
        if (l->iseq) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: conv2d needs an image input, not a sequence", idx);
        if (t->nargs < 2 || !parse_int(t->args[0], 1, 1 << 16, &out) || !parse_int(t->args[1], 1, 1 << 10, &k))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: conv2d(OUT,K[,sS][,pP][,nobias]) needs OUT, K >= 1", idx);
        l->has_bias = 1;
        for (int a = 2; a < t->nargs; a++) {
            if (t->args[a][0] == 's' && parse_int(t->args[a] + 1, 1, 1 << 10, &s)) continue;
            if (t->args[a][0] == 'p' && parse_int(t->args[a] + 1, 0, 1 << 10, &p)) continue;
            if (strcmp(t->args[a], "nobias") == 0) {
                l->has_bias = 0;
                continue;
            }
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: conv2d: bad option '%s' (sN, pN or nobias)", idx, t->args[a]);
        }
        if (h + 2 * p < k || w + 2 * p < k)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: conv2d kernel %ld larger than its padded input %dx%d", idx, k, h, w);
        l->k = (int)k;
        l->s = (int)s;
        l->pad = (int)p;
        l->oc = (int)out;
        l->oh = (int)((h + 2 * p - k) / s + 1);
        l->ow = (int)((w + 2 * p - k) / s + 1);
        break;
    }
    case DP_LAYER_MAXPOOL:
    case DP_LAYER_AVGPOOL: {
        long k, s;
        if (l->iseq) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s needs an image input, not a sequence", idx, t->name);
        if (t->nargs < 1 || t->nargs > 2 || !parse_int(t->args[0], 1, 1 << 10, &k))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s(K[,S]) needs K >= 1", idx, t->name);
        s = k;
        if (t->nargs == 2 && !parse_int(t->args[1], 1, 1 << 10, &s))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s: bad stride '%s'", idx, t->name, t->args[1]);
        if (h < k || w < k)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s kernel %ld larger than its input %dx%d", idx, t->name, k, h, w);
        l->k = (int)k;
        l->s = (int)s;
        l->oh = (int)((h - k) / s + 1);
        l->ow = (int)((w - k) / s + 1);
        break;
    }
    case DP_LAYER_DROPOUT:
        if (t->nargs != 1 || !parse_real(t->args[0], 0, 0.999999, &x))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: dropout(P) needs P in [0, 1)", idx);
        l->p = (float)x;
        break;
    case DP_LAYER_EMBEDDING: {
        long V, d;
        if (idx != 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: embedding must be the first layer (it reads token ids)", idx);
        if (t->nargs != 2 || !parse_int(t->args[0], 1, 1 << 24, &V) || !parse_int(t->args[1], 1, 1 << 16, &d))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: embedding(VOCAB,DIM) needs VOCAB, DIM >= 1", idx);
        l->vocab = (int)V;
        l->oc = (int)d;
        m->tokens = 1;
        break;
    }
    case DP_LAYER_POSEMBED:
    case DP_LAYER_LAYERNORM:
    case DP_LAYER_RMSNORM:
    case DP_LAYER_MEANPOOL:
    case DP_LAYER_FIRSTTOKEN:
        if (!l->iseq) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s needs a sequence input (after embedding)", idx, t->name);
        if (l->kind == DP_LAYER_LAYERNORM || l->kind == DP_LAYER_RMSNORM) {
            l->eps = 1e-5f;
            if (t->nargs > 1 || (t->nargs == 1 && !parse_real(t->args[0], 1e-12, 1, &x)))
                return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s([EPS]) needs EPS in (0, 1]", idx, t->name);
            if (t->nargs == 1) l->eps = (float)x;
        } else if (t->nargs)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s takes no arguments", idx, t->name);
        break;
    case DP_LAYER_GROUPNORM:
        if (l->iseq) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: groupnorm needs an image input (C x H x W)", idx);
        if (t->nargs != 1 || !parse_int(t->args[0], 1, 1 << 16, &v) || c % v)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: groupnorm(G) needs G >= 1 dividing the %d channels", idx, c);
        l->groups = (int)v;
        l->eps = 1e-5f;
        break;
    case DP_LAYER_ADD:
    case DP_LAYER_ATTENTION:
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s joins several inputs and exists only in built models "
                       "(--model transformer)", idx, t->name);
    case DP_LAYER_FLATTEN:
        l->oc = (int)l->in_size;
        l->oh = l->ow = 1;
        l->seq = 0;
        /* fall through */
    case DP_LAYER_RELU:
    case DP_LAYER_TANH:
    case DP_LAYER_GELU:
        if (t->nargs) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s takes no arguments", idx, t->name);
        break;
    case DP_LAYER_COUNT: break;
    }
    return DP_OK;
}

dp_status dp_model_create(const char *spec, int c, int h, int w, dp_model **out) {
    if (!spec) return dp_fail(DP_ERR_INVALID, "model spec: empty");
    if (c < 1 || h < 1 || w < 1) return dp_fail(DP_ERR_INVALID, "model: input shape %dx%dx%d is not positive", c, h, w);
    dp_model *m = model_new(c, h, w);
    if (!m) return DP_ERR_NOMEM;
    dp_status st = DP_OK;
    const char *s = spec;
    while (isspace((unsigned char)*s)) s++;
    while (*s) {
        token t;
        if ((st = next_token(&s, &t, m->n)) != DP_OK) goto fail;
        int kind = -1;
        for (int k = 0; k < DP_LAYER_COUNT; k++)
            if (strcmp(t.name, layer_names[k]) == 0) kind = k;
        if (kind < 0) {
            char known[256] = "";
            for (int k = 0; k < DP_LAYER_COUNT; k++)
                if (k != DP_LAYER_ADD && k != DP_LAYER_ATTENTION)
                    snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", *known ? " " : "", layer_names[k]);
            st = dp_fail(DP_ERR_INVALID, "model spec: layer %d: unknown layer '%s' (known: %s)", m->n, t.name, known);
            goto fail;
        }
        int idx = m->n;
        node *l = push_node(m, (dp_layer_kind)kind, idx - 1);
        if (!l) {
            st = DP_ERR_NOMEM;
            goto fail;
        }
        if ((st = spec_layer(m, l, &t, idx)) != DP_OK) goto fail;
        if ((st = finish_node(m, l, idx, t.label[0] ? t.label : NULL)) != DP_OK) goto fail;
    }
    if ((st = finish_model(m)) != DP_OK) goto fail;
    *out = m;
    return DP_OK;
fail:
    dp_model_destroy(m);
    return st;
}

#define CNN_SPEC                                                                                  \
    "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh " \
    "linear(%d)"

const char *dp_model_builtin_spec(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "cnn") == 0) return CNN_SPEC;
    if (strcmp(name, "mlp") == 0) return "flatten linear(128) relu linear(%d)";
    return NULL;
}

dp_status dp_model_create_named(const char *name_or_spec, int c, int h, int w, int n_classes, dp_model **out) {
    const char *fmt = dp_model_builtin_spec(name_or_spec);
    if (!fmt) return dp_model_create(name_or_spec, c, h, w, out);
    if (n_classes < 1) return dp_fail(DP_ERR_INVALID, "model %s: number of classes %d must be >= 1", name_or_spec, n_classes);
    char spec[256];
    snprintf(spec, sizeof spec, fmt, n_classes);
    return dp_model_create(spec, c, h, w, out);
}

/* ---- the transformer builder ------------------------------------------------------------ */

dp_transformer_params dp_transformer_default_params(void) {
    dp_transformer_params p;
    memset(&p, 0, sizeof p);
    p.vocab = 1000;
    p.seq_len = 32;
    p.width = 64;
    p.heads = 4;
    p.layers = 2;
    p.ffn = 0;
    p.n_classes = 2;
    p.pre_norm = 0;
    p.gelu = 1;
    p.pool = DP_POOL_FIRST;
    p.dropout = 0.0f;
    p.train_last = -1;
    return p;
}

static int add_node(dp_model *m, dp_layer_kind kind, int in0, const char *name, int oc, int has_bias) {
    node *l = push_node(m, kind, in0);
    if (!l) return -1;
    int idx = m->n - 1;
    if (kind == DP_LAYER_LINEAR) {
        l->oc = oc;
        l->has_bias = has_bias;
    }
    if (kind == DP_LAYER_LAYERNORM) l->eps = 1e-12f;
    finish_node(m, l, idx, name);
    return idx;
}

static int add_binary(dp_model *m, dp_layer_kind kind, int a, int b) {
    int i = add_node(m, kind, a, NULL, 0, 0);
    if (i < 0) return -1;
    m->L[i].in[1] = b;
    m->L[i].nin = 2;
    return i;
}

dp_status dp_model_create_transformer(const dp_transformer_params *tp, dp_model **out) {
    const dp_transformer_params *p = tp;
    int ffn = p->ffn > 0 ? p->ffn : 4 * p->width;
    if (p->vocab < 1 || p->vocab > (1 << 24)) return dp_fail(DP_ERR_INVALID, "--vocab %d: must be in 1..16777216", p->vocab);
    if (p->seq_len < 1 || p->seq_len > 65536) return dp_fail(DP_ERR_INVALID, "--seq-len %d: must be in 1..65536", p->seq_len);
    if (p->width < 1 || p->width > 65536) return dp_fail(DP_ERR_INVALID, "--width %d: must be in 1..65536", p->width);
    if (p->heads < 1 || p->width % p->heads)
        return dp_fail(DP_ERR_INVALID, "--heads %d: must be >= 1 and divide --width %d", p->heads, p->width);
    if (p->layers < 0 || p->layers > 1024) return dp_fail(DP_ERR_INVALID, "--layers %d: must be in 0..1024", p->layers);
    if (ffn < 1) return dp_fail(DP_ERR_INVALID, "--ffn %d: must be >= 1", p->ffn);
    if (p->n_classes < 1) return dp_fail(DP_ERR_INVALID, "transformer: number of classes %d must be >= 1", p->n_classes);
    if (!(p->dropout >= 0 && p->dropout < 1)) return dp_fail(DP_ERR_INVALID, "--dropout %g: must be in [0, 1)", p->dropout);
    if (p->pool != DP_POOL_FIRST && p->pool != DP_POOL_MEAN) return dp_fail(DP_ERR_INVALID, "transformer: unknown pooling %d", p->pool);
    if (p->train_last > p->layers)
        return dp_fail(DP_ERR_INVALID, "--train-last-blocks %d: the model has only %d blocks", p->train_last, p->layers);
    dp_model *m = model_new(1, 1, p->seq_len);
    if (!m) return DP_ERR_NOMEM;
    m->tokens = 1;
    m->bert_init = 1;
    dp_status st = DP_OK;
    char nm[NAME_LEN];
    const int d = p->width;
    int fail = 0;
#define NODE(var, kind, in, name, oc, bias)                                                        \
    do {                                                                                           \
        var = add_node(m, kind, in, name, oc, bias);                                               \
        if (var < 0) fail = 1;                                                                     \
    } while (0)
#define DROP(var)                                                                                  \
    do {                                                                                           \
        if (p->dropout > 0 && !fail) {                                                             \
            int dr_ = add_node(m, DP_LAYER_DROPOUT, var, NULL, 0, 0);                              \
            if (dr_ < 0) fail = 1;                                                                 \
            else {                                                                                 \
                m->L[dr_].p = p->dropout;                                                          \
                var = dr_;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    int x, t;
    {
        node *e = push_node(m, DP_LAYER_EMBEDDING, -1);
        if (!e) goto nomem;
        e->vocab = p->vocab;
        e->oc = d;
        finish_node(m, e, 0, "bert.embeddings.word_embeddings");
        x = 0;
    }
    NODE(x, DP_LAYER_POSEMBED, x, "bert.embeddings.position_embeddings", 0, 0);
    if (!p->pre_norm) NODE(x, DP_LAYER_LAYERNORM, x, "bert.embeddings.LayerNorm", 0, 0);
    DROP(x);
    for (int b = 0; b < p->layers && !fail; b++) {
        char pre[48];
        snprintf(pre, sizeof pre, "bert.encoder.layer.%d", b);
        int h = x, q, k, v, a, o;
        if (p->pre_norm) {
            snprintf(nm, sizeof nm, "%s.attention.LayerNorm", pre);
            NODE(h, DP_LAYER_LAYERNORM, x, nm, 0, 0);
        }
        snprintf(nm, sizeof nm, "%s.attention.self.query", pre);
        NODE(q, DP_LAYER_LINEAR, h, nm, d, 1);
        snprintf(nm, sizeof nm, "%s.attention.self.key", pre);
        NODE(k, DP_LAYER_LINEAR, h, nm, d, 1);
        snprintf(nm, sizeof nm, "%s.attention.self.value", pre);
        NODE(v, DP_LAYER_LINEAR, h, nm, d, 1);
        if (fail) break;
        a = add_node(m, DP_LAYER_ATTENTION, q, NULL, 0, 0);
        if (a < 0) goto nomem;
        m->L[a].in[1] = k;
        m->L[a].in[2] = v;
        m->L[a].nin = 3;
        m->L[a].heads = p->heads;
        snprintf(nm, sizeof nm, "%s.attention.output.dense", pre);
        NODE(o, DP_LAYER_LINEAR, a, nm, d, 1);
        DROP(o);
        if (fail) break;
        if ((t = add_binary(m, DP_LAYER_ADD, o, x)) < 0) goto nomem;
        if (!p->pre_norm) {
            snprintf(nm, sizeof nm, "%s.attention.output.LayerNorm", pre);
            NODE(t, DP_LAYER_LAYERNORM, t, nm, 0, 0);
        }
        x = t;
        h = x;
        if (p->pre_norm) {
            snprintf(nm, sizeof nm, "%s.output.LayerNorm", pre); /* the pre-FFN norm */
            NODE(h, DP_LAYER_LAYERNORM, x, nm, 0, 0);
        }
        int f;
        snprintf(nm, sizeof nm, "%s.intermediate.dense", pre);
        NODE(f, DP_LAYER_LINEAR, h, nm, ffn, 1);
        NODE(f, p->gelu ? DP_LAYER_GELU : DP_LAYER_RELU, f, NULL, 0, 0);
        snprintf(nm, sizeof nm, "%s.output.dense", pre);
        NODE(f, DP_LAYER_LINEAR, f, nm, d, 1);
        DROP(f);
        if (fail) break;
        if ((t = add_binary(m, DP_LAYER_ADD, f, x)) < 0) goto nomem;
        if (!p->pre_norm) {
            snprintf(nm, sizeof nm, "%s.output.LayerNorm", pre);
            NODE(t, DP_LAYER_LAYERNORM, t, nm, 0, 0);
        }
        x = t;
    }
    if (p->pre_norm) NODE(x, DP_LAYER_LAYERNORM, x, "bert.encoder.final_LayerNorm", 0, 0);
    NODE(x, p->pool == DP_POOL_FIRST ? DP_LAYER_FIRSTTOKEN : DP_LAYER_MEANPOOL, x, NULL, 0, 0);
    NODE(x, DP_LAYER_LINEAR, x, "bert.pooler.dense", d, 1);
    NODE(x, DP_LAYER_TANH, x, NULL, 0, 0);
    DROP(x);
    NODE(x, DP_LAYER_LINEAR, x, "classifier", p->n_classes, 1);
#undef NODE
#undef DROP
    if (fail) goto nomem;
    if ((st = finish_model(m)) != DP_OK) goto fail_;
    if (p->train_last >= 0) {
        char keep[NAME_LEN];
        for (int i = 0; i < m->n; i++) {
            node *l = &m->L[i];
            if (!has_params(l)) continue;
            int train = 0;
            for (int b = p->layers - p->train_last; b < p->layers; b++) {
                snprintf(keep, sizeof keep, "bert.encoder.layer.%d.", b);
                if (strncmp(l->name, keep, strlen(keep)) == 0) train = 1;
            }
            if (strncmp(l->name, "bert.pooler", 11) == 0 || strcmp(l->name, "classifier") == 0 ||
                strcmp(l->name, "bert.encoder.final_LayerNorm") == 0)
                train = 1;
            l->frozen = !train;
            memset(m->tmask + l->w_off, train, l->nw + l->nb);
        }
    }
    *out = m;
    return DP_OK;
nomem:
    st = DP_ERR_NOMEM;
fail_:
    dp_model_destroy(m);
    return st;
}

/* ---- parameters --------------------------------------------------------------------- */

void dp_model_init(dp_model *m, dp_rng *rng) {
    for (int i = 0; i < m->n; i++) {
        node *l = &m->L[i];
        if (!has_params(l)) continue;
        float *w = m->params + l->w_off, *b = m->params + l->b_off;
        switch (l->kind) {
        case DP_LAYER_LAYERNORM:
        case DP_LAYER_RMSNORM:
        case DP_LAYER_GROUPNORM:
            for (size_t j = 0; j < l->nw; j++) w[j] = 1.0f;
            for (size_t j = 0; j < l->nb; j++) b[j] = 0.0f;
            break;
        case DP_LAYER_EMBEDDING:
        case DP_LAYER_POSEMBED: {
            double sd = m->bert_init || l->kind == DP_LAYER_POSEMBED ? 0.02 : 1.0;
            for (size_t j = 0; j < l->nw; j++) w[j] = (float)(sd * dp_rng_normal(rng));
            break;
        }
        default:
            if (m->bert_init) {
                for (size_t j = 0; j < l->nw; j++) w[j] = (float)(0.02 * dp_rng_normal(rng));
                for (size_t j = 0; j < l->nb; j++) b[j] = 0.0f;
            } else {
                size_t fan_in = l->kind == DP_LAYER_CONV2D ? (size_t)l->ic * l->k * l->k : l->nw / (size_t)l->oc;
                double bound = 1.0 / sqrt((double)fan_in);
                for (size_t j = 0; j < l->nw; j++) w[j] = (float)((2 * dp_rng_uniform(rng) - 1) * bound);
                for (size_t j = 0; j < l->nb; j++) b[j] = (float)((2 * dp_rng_uniform(rng) - 1) * bound);
            }
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
    node *l = &m->L[i];
    l->frozen = frozen != 0;
    memset(m->tmask + l->w_off, !l->frozen, l->nw + l->nb);
    m->planned = 0;
    return DP_OK;
}

dp_status dp_model_set_frozen(dp_model *m, int i, int frozen) {
    if (i < 0 || i >= m->n) return dp_fail(DP_ERR_RANGE, "freeze: layer %d does not exist (model has %d layers)", i, m->n);
    node *l = &m->L[i];
    if (!has_params(l)) return dp_fail(DP_ERR_INVALID, "freeze: layer %d (%s) has no parameters", i, layer_names[l->kind]);
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
        node *l = &m->L[i];
        if (!has_params(l) || strncmp(l->name, prefix, n) != 0) continue;
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
            if (has_params(&m->L[i])) set_frozen(m, i, was[i]);
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
    const node *l = &m->L[m->tnode[t]];
    int bias = m->toff[t] == l->b_off && l->nb > 0 && m->toff[t] != l->w_off;
    if (bias) {
        shape[0] = (int64_t)l->nb;
        return 1;
    }
    switch (l->kind) {
    case DP_LAYER_LINEAR:
        shape[0] = l->oc;
        shape[1] = (int64_t)(l->nw / (size_t)l->oc);
        return 2;
    case DP_LAYER_CONV2D:
        shape[0] = l->oc;
        shape[1] = l->ic;
        shape[2] = shape[3] = l->k;
        return 4;
    case DP_LAYER_EMBEDDING:
        shape[0] = l->vocab;
        shape[1] = l->oc;
        return 2;
    case DP_LAYER_POSEMBED:
        shape[0] = l->ih;
        shape[1] = l->ic;
        return 2;
    default: shape[0] = (int64_t)l->nw; return 1;
    }
}

int dp_model_layer_shape(const dp_model *m, int i, int64_t shape[3]) {
    const node *l = &m->L[i];
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
    const node *l = &m->L[i];
    for (int j = 0; j < 3; j++) in[j] = j < l->nin ? l->in[j] : -1;
    return l->nin;
}

void dp_model_layer_flops(const dp_model *m, int i, double *fwd, double *bwd_weight, double *bwd_input) {
    const node *l = &m->L[i];
    double f = 0, w = 0, x = 0;
    if (l->kind == DP_LAYER_LINEAR || l->kind == DP_LAYER_CONV2D) {
        double fan_in = l->kind == DP_LAYER_CONV2D ? (double)l->ic * l->k * l->k : (double)(l->iseq ? l->ic : (int)l->in_size);
        f = w = x = 2.0 * (double)l->out_size * fan_in;
    } else if (l->kind == DP_LAYER_ATTENTION) {
        f = 4.0 * l->ih * l->ih * l->ic;
        x = 8.0 * l->ih * l->ih * l->ic;
    }
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
        const node *l = &m->L[i];
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
        int named = has_params(l) && !(l->name[0] >= '0' && l->name[0] <= '9');
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "%3d %-10s -> %-10s params %zu%s%s%s%s\n", i, layer_names[l->kind],
                              shp, l->nw + l->nb, l->frozen ? " (frozen)" : "", ins, named ? "  " : "", named ? l->name : "");
    }
    if (o < cap) snprintf(buf + o, cap - o, "total parameters %zu, trainable %zu\n", m->np, dp_model_num_trainable(m));
}

/* ---- memory plan ---------------------------------------------------------------------- */

static size_t conv_T(const node *l) { return (size_t)l->oh * l->ow; }
static size_t conv_D(const node *l) { return (size_t)l->ic * l->k * l->k; }
static int seq_T(const node *l) { return l->iseq ? l->ih : 1; }  /* rows per sample of a Linear */
static int lin_d(const node *l) { return l->iseq ? l->ic : (int)l->in_size; }

/* Does node c read input slot j (its value, not just shape) in its backward? */
static int reads_input_in_bwd(const node *c) {
    switch (c->kind) {
    case DP_LAYER_LINEAR: return trainable(c);
    case DP_LAYER_GELU:
    case DP_LAYER_ATTENTION: return c->need_grad;
    default: return 0;
    }
}

enum { MAX_SLOTS = 64 };
static size_t saved_floats(const node *l);

static void plan(dp_model *m) {
    memset(m->fsz, 0, sizeof m->fsz);
    memset(m->gsz, 0, sizeof m->gsz);
    m->accsz = 0;
    for (int k = 0; k < m->n; k++) {
        node *l = &m->L[k];
        l->need_grad = trainable(l);
        for (int j = 0; j < l->nin; j++)
            if (l->in[j] >= 0 && m->L[l->in[j]].need_grad) l->need_grad = 1;
        l->keep_saved = l->need_grad;
        if (l->kind == DP_LAYER_CONV2D) l->keep_saved = trainable(l); /* col: only weight gradients read it */
        l->keep_out = k == m->n - 1 || ((l->kind == DP_LAYER_RELU || l->kind == DP_LAYER_TANH) && l->need_grad);
        l->last_use = k;
    }
    for (int c = 0; c < m->n; c++) {
        node *l = &m->L[c];
        for (int j = 0; j < l->nin; j++) {
            int i = l->in[j];
            if (i < 0) continue;
            if (reads_input_in_bwd(l)) m->L[i].keep_out = 1;
            if (c > m->L[i].last_use) m->L[i].last_use = c;
        }
    }
    /* forward slots for outputs nobody reads in backward: best fit among the free slots
     * (the smallest that holds the output, else the largest, which grows) */
    int nslots = 0;
    int owner[MAX_SLOTS];
    for (int k = 0; k < m->n; k++) {
        node *l = &m->L[k];
        l->fslot = -1;
        int src = l->in[0];
        if (!l->keep_out && src >= 0 && m->L[src].fslot >= 0 && m->L[src].last_use == k && owner[m->L[src].fslot] == src &&
            m->L[src].out_size == l->out_size &&
            (l->kind == DP_LAYER_RELU || l->kind == DP_LAYER_TANH || l->kind == DP_LAYER_GELU || l->kind == DP_LAYER_ADD ||
             l->kind == DP_LAYER_POSEMBED || l->kind == DP_LAYER_DROPOUT)) {
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
                DP_ASSERT(nslots < MAX_SLOTS);
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
    int gowner[MAX_SLOTS];
    for (int k = 0; k < m->n; k++) m->L[k].gslot = -1;
    for (int i = 0; i < m->n; i++) {
        int readers = 0;
        for (int c = i + 1; c < m->n; c++)
            for (int j = 0; j < m->L[c].nin; j++) readers += m->L[c].in[j] == i;
        if (m->L[i].need_grad && readers > 1 && m->L[i].out_size > m->accsz) m->accsz = m->L[i].out_size;
    }
    for (int k = m->n - 1; k >= 0; k--) {
        node *l = &m->L[k];
        if (!l->need_grad) continue;
        for (int j = -1; j < l->nin; j++) {
            int i = j < 0 ? k : l->in[j];
            if (i < 0 || !m->L[i].need_grad || m->L[i].gslot >= 0) continue;
            size_t need = m->L[i].out_size;
            int s = -1;
            for (int q = 0; q < gs; q++) {
                if (gowner[q] >= 0) continue;
                if (s < 0) s = q;
                else if (m->gsz[q] >= need ? (m->gsz[s] < need || m->gsz[q] < m->gsz[s]) : (m->gsz[s] < need && m->gsz[q] > m->gsz[s]))
                    s = q;
            }
            if (s < 0) {
                DP_ASSERT(gs < MAX_SLOTS);
                s = gs++;
            }
            gowner[s] = i;
            m->L[i].gslot = s;
            if (need > m->gsz[s]) m->gsz[s] = need;
        }
        gowner[l->gslot] = -1;
    }
    m->ngslots = gs;
    m->planned = 1;
}

static size_t saved_floats(const node *l);
/* Floats of saved tensors per sample (col, xhat + rstd, P) and bytes of arg/mask. */
static size_t saved_floats(const node *l) {
    switch (l->kind) {
    case DP_LAYER_CONV2D: return conv_T(l) * conv_D(l);
    case DP_LAYER_LAYERNORM:
    case DP_LAYER_RMSNORM: return l->out_size + (size_t)l->ih;
    case DP_LAYER_GROUPNORM: return l->out_size + (size_t)l->groups;
    case DP_LAYER_ATTENTION: return (size_t)l->heads * l->ih * l->ih;
    case DP_LAYER_MAXPOOL: return l->out_size; /* int32 arg */
    case DP_LAYER_DROPOUT: return (l->out_size + 3) / 4; /* bytes */
    default: return 0;
    }
}

/* Scratch floats a node needs (conv GEMMs, ghost norms, attention backward) for B samples. */
static size_t work_floats(const node *l, int B, size_t nt) {
    size_t need = 0;
    if (l->kind == DP_LAYER_CONV2D) {
        size_t T = conv_T(l), D = conv_D(l);
        need = nt * T * D;
        if (nt * 2 * T * T > need) need = nt * 2 * T * T;
        if (DP_CONV_BWD_PARAM_WORK(B, l->oc, T, D, nt) > need) need = DP_CONV_BWD_PARAM_WORK(B, l->oc, T, D, nt);
    } else if (l->kind == DP_LAYER_LINEAR && l->iseq) {
        need = nt * 2 * (size_t)l->ih * l->ih;
    } else if (l->kind == DP_LAYER_EMBEDDING) {
        need = nt * (size_t)l->oc;
    } else if (l->kind == DP_LAYER_ATTENTION) {
        need = nt * DP_ATTN_BWD_WORK(l->ih, l->ic);
    }
    return need;
}

/* Bytes the activation buffers take for batch B (what ensure_capacity allocates). */
static size_t buffer_bytes(const dp_model *m, int B, size_t nt) {
    size_t bytes = 0, shared = 0, work = 0;
    for (int i = 0; i < m->n; i++) {
        const node *l = &m->L[i];
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

static void assign_saved(node *l, char *base, size_t B) {
    size_t fl = B * saved_floats(l);
    (void)fl;
    switch (l->kind) {
    case DP_LAYER_CONV2D: l->col = (float *)base; break;
    case DP_LAYER_LAYERNORM:
    case DP_LAYER_RMSNORM:
    case DP_LAYER_GROUPNORM:
        l->xhat = (float *)base;
        l->rstd = (float *)base + B * l->out_size;
        break;
    case DP_LAYER_ATTENTION: l->P = (float *)base; break;
    case DP_LAYER_MAXPOOL: l->arg = (int32_t *)base; break;
    case DP_LAYER_DROPOUT: l->mask = (unsigned char *)base; break;
    default: break;
    }
}

static dp_status ensure_capacity(dp_model *m, int B) {
    if (!m->planned) {
        free_buffers(m);
        plan(m);
    }
    if (B <= m->cap) return DP_OK;
    free_buffers(m);
    const size_t nc = (size_t)B, nt = (size_t)dp__max_threads();
    size_t shared = 0, work = 0;
    for (int i = 0; i < m->n; i++) {
        node *l = &m->L[i];
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
        node *l = &m->L[i];
        if (!l->keep_saved && saved_floats(l)) assign_saved(l, (char *)m->shared_saved, nc);
    }
    m->fslots = dp_calloc((size_t)m->nfslots + 1, sizeof(float *));
    m->gslots = dp_calloc((size_t)m->ngslots + 1, sizeof(float *));
    if (!m->fslots || !m->gslots) return DP_ERR_NOMEM;
    for (int i = 0; i < m->nfslots; i++)
        if (!(m->fslots[i] = dp_alloc(sizeof(float) * nc * m->fsz[i]))) return DP_ERR_NOMEM;
    for (int i = 0; i < m->ngslots; i++)
        if (!(m->gslots[i] = dp_alloc(sizeof(float) * nc * m->gsz[i]))) return DP_ERR_NOMEM;
    for (int i = 0; i < m->n; i++)
        if (!m->L[i].keep_out) m->L[i].out = m->fslots[m->L[i].fslot];
    if (m->accsz && !(m->gacc = dp_alloc(sizeof(float) * nc * m->accsz))) return DP_ERR_NOMEM;
    m->work = work ? dp_alloc(sizeof(float) * work) : NULL;
    m->work_floats = work;
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

/* ---- forward ------------------------------------------------------------------------- */

static const float *input_of(const dp_model *m, const node *l, int j) {
    return l->in[j] < 0 ? m->x : m->L[l->in[j]].out;
}

dp_status dp_model_forward(dp_model *m, const float *x, int B, int train, dp_rng *rng, const float **logits) {
    if (B < 0) return dp_fail(DP_ERR_INVALID, "forward: negative batch size %d", B);
    dp_status st = ensure_capacity(m, B > 0 ? B : 1);
    if (st != DP_OK) {
        free_buffers(m); /* buffers are in an unknown state: rebuild on the next call */
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
    const unsigned char *kv = m->tokens ? m->kvalid : NULL;
    for (int i = 0; i < m->n; i++) {
        node *l = &m->L[i];
        const float *in = input_of(m, l, 0);
        size_t n = (size_t)B * l->out_size;
        const float *w = m->params + l->w_off, *b = l->nb ? m->params + l->b_off : NULL;
        const int T = l->ih, F = l->ic, R = B * T;
        switch (l->kind) {
        case DP_LAYER_LINEAR: dp__k_linear_fwd_f32(l->out, in, w, b, B * seq_T(l), lin_d(l), l->oc); break;
        case DP_LAYER_CONV2D:
            dp__k_conv_fwd_f32(l->out, l->col, m->work, in, w, b, B, l->ic, l->ih, l->iw, l->oc, l->k, l->s, l->pad, l->oh, l->ow);
            break;
        case DP_LAYER_RELU: dp__k_relu_fwd_f32(l->out, in, n); break;
        case DP_LAYER_TANH: dp__k_tanh_fwd_f32(l->out, in, n); break;
        case DP_LAYER_GELU: dp__k_gelu_fwd_f32(l->out, in, n); break;
        case DP_LAYER_MAXPOOL:
            dp__k_maxpool_fwd_f32(l->out, l->arg, in, B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow);
            break;
        case DP_LAYER_AVGPOOL: dp__k_avgpool_fwd_f32(l->out, in, B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow); break;
        case DP_LAYER_FLATTEN: memcpy(l->out, in, sizeof(float) * n); break;
        case DP_LAYER_DROPOUT:
            if (train && l->p > 0) {
                if (!rng) return dp_fail(DP_ERR_INVALID, "forward: dropout in training needs an RNG");
                for (size_t j = 0; j < n; j++) l->mask[j] = dp_rng_uniform(rng) >= l->p;
                dp__k_dropout_fwd_f32(l->out, in, l->mask, 1.0f / (1.0f - l->p), n);
            } else {
                memset(l->mask, 1, n);
                memcpy(l->out, in, sizeof(float) * n);
            }
            break;
        case DP_LAYER_EMBEDDING: dp__k_embed_fwd_f32(l->out, m->ids, w, B, l->oh, l->oc); break;
        case DP_LAYER_POSEMBED: dp__k_posemb_fwd_f32(l->out, in, w, B, T, F); break;
        case DP_LAYER_LAYERNORM: dp__k_layernorm_fwd_f32(l->out, l->xhat, l->rstd, in, w, b, R, F, l->eps); break;
        case DP_LAYER_RMSNORM: dp__k_rmsnorm_fwd_f32(l->out, l->xhat, l->rstd, in, w, R, F, l->eps); break;
        case DP_LAYER_GROUPNORM:
            dp__k_groupnorm_fwd_f32(l->out, l->xhat, l->rstd, in, w, b, B, l->ic, l->ih * l->iw, l->groups, l->eps);
            break;
        case DP_LAYER_ADD: {
            const float *a2 = input_of(m, l, 1);
#pragma omp parallel for schedule(static) if (n > 65536)
            for (size_t j = 0; j < n; j++) l->out[j] = in[j] + a2[j];
            break;
        }
        case DP_LAYER_ATTENTION:
            dp__k_attn_fwd_f32(l->out, l->P, in, input_of(m, l, 1), input_of(m, l, 2), kv, B, T, F, l->heads);
            break;
        case DP_LAYER_MEANPOOL: dp__k_meanpool_fwd_f32(l->out, in, kv, B, T, F); break;
        case DP_LAYER_FIRSTTOKEN: dp__k_firsttok_fwd_f32(l->out, in, B, T, F); break;
        case DP_LAYER_COUNT: break;
        }
    }
    *logits = m->L[m->n - 1].out;
    return DP_OK;
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

enum { BWD_PARAM, BWD_NORMS, BWD_PS };

dp_norm_method dp_model_norm_method(const dp_model *m, int i, dp_clip_mode mode, double *fg, double *fi) {
    const node *l = &m->L[i];
    if (!trainable(l)) return DP_NORM_NONE;
    double g = INFINITY, in = 2.0 * (double)(l->nw + l->nb) * seq_T(l);
    if (l->kind == DP_LAYER_LINEAR || l->kind == DP_LAYER_CONV2D) {
        double T = seq_T(l), d = lin_d(l), p = l->oc;
        if (l->kind == DP_LAYER_CONV2D) {
            T = (double)conv_T(l);
            d = (double)conv_D(l);
        }
        /* ghost: two Gram matrices by SYRK (T^2 d and T^2 p multiply-adds, half of each
         * computed) and their inner product; instantiation: one T-deep GEMM and a norm */
        g = T * T * (d + p) + 2 * T * T;
        in = 2 * T * d * p + 2 * d * p;
    } else if (l->kind == DP_LAYER_EMBEDDING) {
        double T = l->oh, d = l->oc;
        g = T * T + 2 * T * d;
        in = (double)l->nw + T * d;
    }
    if (fg) *fg = g;
    if (fi) *fi = in;
    if (mode != DP_CLIP_FAST && mode != DP_CLIP_VANILLA && g <= in) return DP_NORM_GHOST;
    return DP_NORM_INSTANTIATE;
}

/* Per-sample gradients of node k for samples b0 .. b0+nb-1 into ps (row stride `stride`,
 * weight then bias), from the output gradient rows dout (of those same samples). */
static void node_ps_grad(const dp_model *m, const node *l, float *ps, size_t stride, const float *dout, int b0, int nb) {
    const float *in = input_of(m, l, 0);
    const size_t s0 = (size_t)b0;
    switch (l->kind) {
    case DP_LAYER_LINEAR:
        if (l->iseq)
            dp__k_seqlin_ps_grad_f32(ps, stride, dout, in + s0 * l->in_size, nb, l->ih, l->ic, l->oc, l->has_bias);
        else
            dp__k_linear_ps_grad_f32(ps, stride, dout, in + s0 * l->in_size, nb, (int)l->in_size, l->oc, l->has_bias);
        break;
    case DP_LAYER_CONV2D:
        dp__k_conv_ps_grad_f32(ps, stride, dout, l->col + s0 * conv_T(l) * conv_D(l), nb, l->oc, (int)conv_T(l), (int)conv_D(l),
                               l->has_bias);
        break;
    case DP_LAYER_EMBEDDING:
        dp__k_embed_ps_grad_f32(ps, stride, dout, m->ids + s0 * m->in_size, nb, l->oh, l->oc, l->vocab);
        break;
    case DP_LAYER_POSEMBED:
        for (int b = 0; b < nb; b++) memcpy(ps + (size_t)b * stride, dout + (size_t)b * l->out_size, sizeof(float) * l->out_size);
        break;
    case DP_LAYER_LAYERNORM:
        dp__k_layernorm_ps_grad_f32(ps, stride, dout, l->xhat + s0 * l->out_size, nb, l->ih, l->ic);
        break;
    case DP_LAYER_RMSNORM: dp__k_rmsnorm_ps_grad_f32(ps, stride, dout, l->xhat + s0 * l->out_size, nb, l->ih, l->ic); break;
    case DP_LAYER_GROUPNORM:
        dp__k_groupnorm_ps_grad_f32(ps, stride, dout, l->xhat + s0 * l->out_size, nb, l->ic, l->ih * l->iw);
        break;
    default: break;
    }
}

/* Batched weight gradients: grad += sum_i dL_i/dtheta of node l. */
static void node_bwd_param(dp_model *m, const node *l, const float *dout, int B) {
    const float *in = input_of(m, l, 0);
    float *gw = m->grad + l->w_off, *gb = l->nb ? m->grad + l->b_off : NULL;
    switch (l->kind) {
    case DP_LAYER_LINEAR: dp__k_linear_bwd_param_f32(gw, gb, dout, in, B * seq_T(l), lin_d(l), l->oc); break;
    case DP_LAYER_CONV2D:
        dp__k_conv_bwd_param_f32(gw, gb, m->work, dout, l->col, B, l->oc, (int)conv_T(l), (int)conv_D(l));
        break;
    case DP_LAYER_EMBEDDING: dp__k_embed_bwd_param_f32(gw, dout, m->ids, B, l->oh, l->oc); break;
    case DP_LAYER_POSEMBED: dp__k_posemb_bwd_param_f32(gw, dout, B, l->ih, l->ic); break;
    case DP_LAYER_LAYERNORM: dp__k_layernorm_bwd_param_f32(gw, gb, dout, l->xhat, B * l->ih, l->ic); break;
    case DP_LAYER_RMSNORM: dp__k_rmsnorm_bwd_param_f32(gw, dout, l->xhat, B * l->ih, l->ic); break;
    case DP_LAYER_GROUPNORM: dp__k_groupnorm_bwd_param_f32(gw, gb, dout, l->xhat, B, l->ic, l->ih * l->iw); break;
    default: break;
    }
}

/* Floats at most in one instantiation chunk (per-sample gradients of one layer). */
#define INST_CHUNK_FLOATS ((size_t)16 << 20)

static size_t inst_chunk(const node *l, int B) {
    size_t pl = l->nw + l->nb, nt = (size_t)dp__max_threads();
    size_t c = INST_CHUNK_FLOATS / (pl ? pl : 1);
    if (c < nt) c = nt;
    if (c > (size_t)B) c = (size_t)B;
    return c;
}

/* sq[b] += this node's per-sample squared gradient norms. */
static dp_status node_norms(dp_model *m, int k, dp_clip_mode mode, const float *dout, int B, double *sq) {
    node *l = &m->L[k];
    if (dp_model_norm_method(m, k, mode, NULL, NULL) == DP_NORM_GHOST) {
        const float *in = input_of(m, l, 0);
        if (l->kind == DP_LAYER_LINEAR && l->iseq)
            dp__k_seqlin_ghost_sq_f32(sq, m->work, dout, in, B, l->ih, l->ic, l->oc, l->has_bias);
        else if (l->kind == DP_LAYER_LINEAR)
            dp__k_linear_ghost_sq_f32(sq, dout, in, B, (int)l->in_size, l->oc, l->has_bias);
        else if (l->kind == DP_LAYER_CONV2D)
            dp__k_conv_ghost_sq_f32(sq, m->work, dout, l->col, B, l->oc, (int)conv_T(l), (int)conv_D(l), l->has_bias);
        else
            dp__k_embed_ghost_sq_f32(sq, m->work, dout, m->ids, B, l->oh, l->oc);
        return DP_OK;
    }
    /* fast gradient clipping: instantiate this layer's per-sample gradients (in chunks of
     * samples), take their norms, free them */
    size_t pl = l->nw + l->nb, chunk = inst_chunk(l, B);
    float *ps = dp_alloc(sizeof(float) * chunk * pl);
    if (!ps) return DP_ERR_NOMEM;
    for (int b0 = 0; b0 < B; b0 += (int)chunk) {
        int nb = B - b0 < (int)chunk ? B - b0 : (int)chunk;
        node_ps_grad(m, l, ps, pl, dout + (size_t)b0 * l->out_size, b0, nb);
#pragma omp parallel for schedule(static)
        for (int b = 0; b < nb; b++) {
            double acc = 0;
            const float *g = ps + (size_t)b * pl;
            for (size_t j = 0; j < pl; j++) acc += (double)g[j] * g[j];
            sq[b0 + b] += acc;
        }
    }
    dp_free(ps);
    return DP_OK;
}

/* Where node j's input gradient goes: its slot if nothing wrote it yet in this backward,
 * else the accumulation buffer (added by grad_done). */
/* Node j's output-gradient buffer: its slot, or during pass 1 of a book-keeping step its
 * keep buffer (so G is kept without a copy). */
static float *gbuf(const dp_model *m, int j) {
    const node *l = &m->L[j];
    return m->keeping && l->keep && l->cm == DP_SUM_KEEP_GRAD ? l->keep : m->gslots[l->gslot];
}
static float *grad_dst(dp_model *m, int j) { return m->gw[j] ? m->gacc : gbuf(m, j); }
static void grad_done(dp_model *m, int j, int B) {
    const node *l = &m->L[j];
    if (m->gw[j]) {
        float *g = gbuf(m, j);
        size_t n = (size_t)B * l->out_size;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t q = 0; q < n; q++) g[q] += m->gacc[q];
    }
    m->gw[j] = 1;
}

static int needs(const dp_model *m, const node *l, int j) { return l->in[j] >= 0 && m->L[l->in[j]].need_grad; }

/* Input gradients of node l from its output gradient g. */
static dp_status node_bwd_input(dp_model *m, const node *l, const float *g, int B) {
    const float *w = m->params + l->w_off;
    const int T = l->ih, F = l->ic;
    const size_t n = (size_t)B * l->in_size;
    if (l->kind == DP_LAYER_ADD) {
        for (int j = 0; j < 2; j++) {
            if (!needs(m, l, j)) continue;
            int s = l->in[j];
            float *dst = gbuf(m, s);
            if (m->gw[s]) {
#pragma omp parallel for schedule(static) if (n > 65536)
                for (size_t q = 0; q < n; q++) dst[q] += g[q];
            } else
                memcpy(dst, g, sizeof(float) * n);
            m->gw[s] = 1;
        }
        return DP_OK;
    }
    if (l->kind == DP_LAYER_ATTENTION) {
        float *d3[3];
        for (int j = 0; j < 3; j++) { /* inputs off the trainable path get no gradient */
            int s = l->in[j];
            d3[j] = NULL;
            if (!needs(m, l, j)) continue;
            if (m->gw[s])
                return dp_fail(DP_ERR_INVALID, "backward: attention inputs must be distinct nodes read only by it");
            d3[j] = gbuf(m, s);
        }
        dp__k_attn_bwd_f32(d3[0], d3[1], d3[2], m->work, g, l->P, input_of(m, l, 0), input_of(m, l, 1), input_of(m, l, 2), B, T,
                           F, l->heads);
        for (int j = 0; j < 3; j++)
            if (d3[j]) m->gw[l->in[j]] = 1;
        return DP_OK;
    }
    if (!needs(m, l, 0)) return DP_OK;
    int src = l->in[0];
    float *din = grad_dst(m, src);
    const float *in = input_of(m, l, 0);
    switch (l->kind) {
    case DP_LAYER_LINEAR: dp__k_linear_bwd_input_f32(din, g, w, B * seq_T(l), lin_d(l), l->oc); break;
    case DP_LAYER_CONV2D:
        dp__k_conv_bwd_input_f32(din, m->work, g, w, B, l->ic, l->ih, l->iw, l->oc, l->k, l->s, l->pad, l->oh, l->ow);
        break;
    case DP_LAYER_RELU: dp__k_relu_bwd_f32(din, g, l->out, n); break;
    case DP_LAYER_TANH: dp__k_tanh_bwd_f32(din, g, l->out, n); break;
    case DP_LAYER_GELU: dp__k_gelu_bwd_f32(din, g, in, n); break;
    case DP_LAYER_MAXPOOL: dp__k_maxpool_bwd_f32(din, g, l->arg, B, l->ic, l->ih, l->iw, l->oh, l->ow); break;
    case DP_LAYER_AVGPOOL: dp__k_avgpool_bwd_f32(din, g, B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow); break;
    case DP_LAYER_FLATTEN:
    case DP_LAYER_POSEMBED: memcpy(din, g, sizeof(float) * n); break;
    case DP_LAYER_DROPOUT: dp__k_dropout_bwd_f32(din, g, l->mask, l->p > 0 ? 1.0f / (1.0f - l->p) : 1.0f, n); break;
    case DP_LAYER_LAYERNORM: dp__k_layernorm_bwd_input_f32(din, g, l->xhat, l->rstd, w, B * T, F); break;
    case DP_LAYER_RMSNORM: dp__k_rmsnorm_bwd_input_f32(din, g, l->xhat, l->rstd, w, B * T, F); break;
    case DP_LAYER_GROUPNORM:
        dp__k_groupnorm_bwd_input_f32(din, g, l->xhat, l->rstd, w, B, l->ic, l->ih * l->iw, l->groups);
        break;
    case DP_LAYER_MEANPOOL: dp__k_meanpool_bwd_f32(din, g, m->tokens ? m->kvalid : NULL, B, T, F); break;
    case DP_LAYER_FIRSTTOKEN: dp__k_firsttok_bwd_f32(din, g, B, T, F); break;
    default: break;
    }
    grad_done(m, src, B);
    return DP_OK;
}

/* Where node k's coordinates start among the trainable ones (the rows of compact per-sample
 * gradients: vanilla keeps only what trains, as Opacus does). */
static size_t trainable_offset(const dp_model *m, int k) {
    size_t o = 0;
    for (int j = 0; j < k; j++)
        if (trainable(&m->L[j])) o += m->L[j].nw + m->L[j].nb;
    return o;
}

static dp_status backward(dp_model *m, const float *dlogits, const float *scale, int B, int what, dp_clip_mode mode,
                          float *ps, double *sq, double *sq_layers);

/* The model's step scratch, at least `bytes` long: the block of the previous step when it is
 * large enough, else a new one. A training loop allocates it once (on its largest batch)
 * instead of every step: blocks of hundreds of MB, freed and allocated again, go back to the
 * kernel and come back as page faults, which took seconds a step for GB-sized blocks. The
 * bytes are the same that a step holds anyway (dp_model_plan_bytes counts them); they stay
 * allocated until the buffers are resized or the model is destroyed. */
static void *step_scratch(dp_model *m, size_t bytes) {
    if (m->scratch && m->scratch_bytes >= bytes) return m->scratch;
    dp_free(m->scratch);
    m->scratch = dp_alloc(bytes ? bytes : 1);
    m->scratch_bytes = m->scratch ? bytes : 0;
    return m->scratch;
}

/* Per-sample gradients of the trainable coordinates only: ps [B, trainable], into the step
 * scratch (cached: the clipping step) or a buffer it allocates (*out, dp_free it). */
static dp_status ps_trainable(dp_model *m, const float *dlogits, int B, float **out, int cached) {
    const size_t nt = dp_model_num_trainable(m);
    float *ps = cached ? step_scratch(m, sizeof(float) * (size_t)B * nt) : dp_alloc(sizeof(float) * (size_t)B * nt);
    *out = ps;
    if (!ps) return DP_ERR_NOMEM;
    memset(ps, 0, sizeof(float) * (size_t)B * nt);
    m->ps_compact = 1;
    dp_status st = backward(m, dlogits, NULL, B, BWD_PS, DP_CLIP_VANILLA, ps, NULL, NULL);
    m->ps_compact = 0;
    return st;
}

/* Backward through the graph from dlogits (rows optionally scaled by scale[i]). what:
 * BWD_PARAM accumulates weight gradients, BWD_NORMS adds per-sample squared norms into sq
 * (and, when sq_layers is given, into its column per node: sq_layers[b * n + k]), BWD_PS
 * writes per-sample gradients into ps [B, np]. */
static dp_status backward(dp_model *m, const float *dlogits, const float *scale, int B, int what, dp_clip_mode mode,
                          float *ps, double *sq, double *sq_layers) {
    if (B == 0) return DP_OK;
    if (B != m->fwd_B || !m->fwd_train || !m->planned)
        return dp_fail(DP_ERR_INVALID, "backward: needs a training forward of the same batch (forward had %d samples, "
                       "backward %d; freezing layers also needs a new forward)", m->fwd_B, B);
    memset(m->gw, 0, (size_t)m->n);
    const int top = m->n - 1;
    float *cur = gbuf(m, top);
    size_t K = m->L[top].out_size;
    for (int b = 0; b < B; b++) {
        float s = scale ? scale[b] : 1.0f;
        for (size_t j = 0; j < K; j++) cur[(size_t)b * K + j] = s == 0.0f ? 0.0f : dlogits[(size_t)b * K + j] * s;
    }
    m->gw[top] = 1;
    for (int k = top; k >= 0; k--) {
        node *l = &m->L[k];
        if (!l->need_grad) continue;
        float *g = gbuf(m, k);
        if (!m->gw[k]) { /* no path to the output: its gradient is zero */
            memset(g, 0, sizeof(float) * (size_t)B * l->out_size);
            m->gw[k] = 1;
        }
        if (trainable(l)) {
            if (what == BWD_PARAM && m->pass2_low >= 0) {
                if (l->cm == DP_SUM_SECOND_PASS) node_bwd_param(m, l, g, B);
                if (k == m->pass2_low) break; /* nothing below needs this pass */
            } else if (what == BWD_PARAM)
                node_bwd_param(m, l, g, B);
            else if (m->keeping && l->cm == DP_SUM_KEEP_PS) {
                /* per-sample gradients, kept whole; the norms come from them */
                size_t pl = l->nw + l->nb;
                node_ps_grad(m, l, l->keep, pl, g, 0, B);
#pragma omp parallel for schedule(static)
                for (int b = 0; b < B; b++) {
                    double acc = 0;
                    const float *q = l->keep + (size_t)b * pl;
                    for (size_t j = 0; j < pl; j++) acc += (double)q[j] * q[j];
                    sq[b] += acc;
                }
            } else if (what == BWD_PS) {
                if (m->ps_compact)
                    node_ps_grad(m, l, ps + trainable_offset(m, k), dp_model_num_trainable(m), g, 0, B);
                else
                    node_ps_grad(m, l, ps + l->w_off, m->np, g, 0, B);
            }
            else if (sq_layers) {
                memset(m->sq1, 0, sizeof(double) * (size_t)B);
                dp_status st = node_norms(m, k, mode, g, B, m->sq1);
                if (st != DP_OK) return st;
                for (int b = 0; b < B; b++) {
                    sq[b] += m->sq1[b];
                    sq_layers[(size_t)b * m->n + k] = m->sq1[b];
                }
            } else {
                dp_status st = node_norms(m, k, mode, g, B, sq);
                if (st != DP_OK) return st;
            }
        }
        dp_status st = node_bwd_input(m, l, g, B);
        if (st != DP_OK) return st;
    }
    return DP_OK;
}

dp_status dp_model_backward(dp_model *m, const float *dlogits, int B) {
    return backward(m, dlogits, NULL, B, BWD_PARAM, DP_CLIP_VANILLA, NULL, NULL, NULL);
}

dp_status dp_model_per_sample_grads(dp_model *m, const float *dlogits, int B, float *ps) {
    memset(ps, 0, sizeof(float) * (size_t)B * m->np);
    return backward(m, dlogits, NULL, B, BWD_PS, DP_CLIP_VANILLA, ps, NULL, NULL);
}

dp_status dp_model_layer_sq_norms(dp_model *m, dp_clip_mode mode, const float *dlogits, int B, double *sq_layers) {
    if ((int)mode < 0 || mode >= DP_CLIP_COUNT) return dp_fail(DP_ERR_INVALID, "clipping mode %d unknown", (int)mode);
    if (B == 0) return DP_OK;
    memset(sq_layers, 0, sizeof(double) * (size_t)B * m->n);
    memset(m->sq, 0, sizeof(double) * (size_t)B);
    if (mode != DP_CLIP_VANILLA) return backward(m, dlogits, NULL, B, BWD_NORMS, mode, NULL, m->sq, sq_layers);
    float *ps;
    const size_t nt = dp_model_num_trainable(m);
    dp_status st = ps_trainable(m, dlogits, B, &ps, 0);
    if (st == DP_OK)
        for (int k = 0; k < m->n; k++) {
            const node *l = &m->L[k];
            if (!trainable(l)) continue;
            const size_t to = trainable_offset(m, k);
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) {
                double acc = 0;
                const float *g = ps + (size_t)b * nt + to;
                for (size_t j = 0; j < l->nw + l->nb; j++) acc += (double)g[j] * g[j];
                sq_layers[(size_t)b * m->n + k] = acc;
            }
        }
    dp_free(ps);
    return st;
}

/* Relative margin taken off every clip factor. The clipped gradient is formed in float (R_i g_i
 * in vanilla and bk, a second backward pass otherwise) from a norm computed by another route,
 * so its norm can exceed R_i ||g_i||: by up to 6.4e-8 relative (one float ulp) measured over
 * MLPs, CNNs and token models in every mode (tests/test_nn.c, check_clip_bound). Without a
 * margin, Opacus' R_i = min(1, C / (||g_i|| + 1e-6)) let clipped gradients exceed C by up to
 * 1.1e-7 relative; 2^-18 (64 ulps, 3.8e-6) keeps ||R_i g_i|| <= C with room to spare and moves
 * R_i far less than float training noise (the Opacus comparison holds at 1e-4). */
#define CLIP_MARGIN 0x1p-18

/* R_i = min(1, C (1 - CLIP_MARGIN) / (||g_i|| + 1e-6)) from squared norms, in double, rounded
 * down to float (never up: that alone could exceed C); non-finite norms get R_i = 0 */
static int clip_factors(const double *sq, int B, double C, float *R, float *norms) {
    int bad = 0;
    for (int i = 0; i < B; i++) {
        double nrm = sqrt(sq[i]);
        if (norms) norms[i] = (float)nrm;
        if (!isfinite(nrm)) {
            R[i] = 0.0f;
            bad++;
            continue;
        }
        /* the margin applies at R = 1 as well: a norm measured just below C may be realised
         * just above it */
        double r = C * (1.0 - CLIP_MARGIN) / (nrm + 1e-6);
        float f = (float)(r < 1.0 ? r : 1.0);
        if ((double)f > r) f = nextafterf(f, 0.0f);
        R[i] = f;
    }
    return bad;
}

/* ---- book-keeping and the automatic plan ------------------------------------------------- */

static size_t keep_bytes(const node *l, int cm, int B) {
    if (cm == DP_SUM_KEEP_GRAD) return sizeof(float) * (size_t)B * l->out_size;
    if (cm == DP_SUM_KEEP_PS) return sizeof(float) * (size_t)B * (l->nw + l->nb);
    return 0;
}

/* Bytes node l's kept tensor takes in the step scratch: keep_bytes rounded up to 64, so each
 * tensor starts at a 64-byte boundary. */
static size_t keep_span(const node *l, int B) { return (keep_bytes(l, l->cm, B) + 63) / 64 * 64; }

/* Sets every trainable node's cm for a bk/auto step of B samples; *budget and *kept (optional)
 * get the byte budget for kept tensors (auto) and what the plan keeps. */
size_t dp_model_default_mem_budget(dp_model *m, int B) {
    return (size_t)(1.2 * (double)dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 1) + 0.2 * 2.0 * sizeof(float) * (double)m->np);
}

static void clip_plan(dp_model *m, const dp_clip_params *cp, int B, size_t *budget, size_t *kept) {
    size_t total = 0, allowed = (size_t)-1;
    for (int k = 0; k < m->n; k++) {
        node *l = &m->L[k];
        l->cm = DP_SUM_SECOND_PASS;
        if (!trainable(l) || (cp->mode != DP_CLIP_BK && cp->mode != DP_CLIP_AUTO)) continue;
        if (cp->mode == DP_CLIP_BK) {
            l->cm = DP_SUM_KEEP_GRAD;
        } else {
            /* a layer whose norm comes from instantiated per-sample gradients keeps them when
             * that is no bigger than keeping G (its weighted sum then replaces the weight
             * GEMM); otherwise book-keeping */
            dp_norm_method nm = dp_model_norm_method(m, k, cp->mode, NULL, NULL);
            size_t mg = keep_bytes(l, DP_SUM_KEEP_GRAD, B), mp = keep_bytes(l, DP_SUM_KEEP_PS, B);
            l->cm = nm == DP_NORM_INSTANTIATE && mp <= mg ? DP_SUM_KEEP_PS : DP_SUM_KEEP_GRAD;
        }
        total += keep_span(l, B); /* what clipped_grad_bk allocates for it */
    }
    if (cp->mode == DP_CLIP_AUTO) {
        size_t base = dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 0);
        size_t b = cp->mem_budget ? cp->mem_budget : dp_model_default_mem_budget(m, B);
        allowed = b > base ? b - base : 0;
        if (budget) *budget = b;
        /* over budget: layers go back to a second pass from the top down, since that pass
         * only runs from the output to the lowest such layer (the head's layers are cheap
         * to reach) */
        for (int k = m->n - 1; k >= 0 && total > allowed; k--) {
            node *l = &m->L[k];
            if (!trainable(l) || l->cm == DP_SUM_SECOND_PASS) continue;
            total -= keep_span(l, B);
            l->cm = DP_SUM_SECOND_PASS;
        }
    } else if (budget)
        *budget = 0;
    if (kept) *kept = total;
}

static const char *sum_name(int cm) {
    return cm == DP_SUM_KEEP_GRAD ? "keep G (book-keeping)" : cm == DP_SUM_KEEP_PS ? "keep per-sample grads" : "second pass";
}

static void fmt_bytes(char *b, size_t n, double v) {
    if (v >= 1 << 30) snprintf(b, n, "%.2f GiB", v / (1 << 30));
    else if (v >= 1 << 20) snprintf(b, n, "%.1f MiB", v / (1 << 20));
    else snprintf(b, n, "%.1f KiB", v / 1024);
}

dp_status dp_model_describe_plan(dp_model *m, const dp_clip_params *cp, int B, char *buf, size_t cap) {
    if ((int)cp->mode < 0 || cp->mode >= DP_CLIP_COUNT) return dp_fail(DP_ERR_INVALID, "clipping mode %d unknown", (int)cp->mode);
    if (B < 1) B = 1;
    size_t budget = 0, kept = 0;
    if (!m->planned) {
        free_buffers(m);
        plan(m);
    }
    clip_plan(m, cp, B, &budget, &kept);
    size_t o = 0;
    char b1[32], b2[32];
    o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "clipping plan, mode %s, batch %d:\n", clip_names[cp->mode], B);
    int second = 0;
    for (int k = 0; k < m->n && o < cap; k++) {
        const node *l = &m->L[k];
        if (!trainable(l)) continue;
        double fg, fi;
        dp_norm_method nm = dp_model_norm_method(m, k, cp->mode, &fg, &fi);
        int cm = (cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO) ? l->cm : (cp->mode == DP_CLIP_VANILLA ? -1 : DP_SUM_SECOND_PASS);
        second |= cm == DP_SUM_SECOND_PASS;
        fmt_bytes(b1, sizeof b1, cm >= 0 ? (double)keep_bytes(l, cm, B) : (double)sizeof(float) * B * (l->nw + l->nb));
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "  %3d %-10s %-40s norm %-11s sum %-22s keeps %10s  norm %.3g FLOP\n", k,
                              layer_names[l->kind], l->name, cp->mode == DP_CLIP_VANILLA ? "per-sample" : nm == DP_NORM_GHOST ? "ghost" : "instantiate",
                              cm < 0 ? "stored per-sample grads" : sum_name(cm), b1,
                              (double)B * (cp->mode == DP_CLIP_VANILLA ? fi : nm == DP_NORM_GHOST ? fg : fi));
    }
    const double step = (double)dp_model_plan_bytes(m, cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO ? DP_CLIP_GHOST : cp->mode, B, 0) + (double)kept;
    fmt_bytes(b1, sizeof b1, step);
    fmt_bytes(b2, sizeof b2, (double)dp_model_plan_bytes(m, cp->mode, B, 1));
    if (o < cap)
        o += (size_t)snprintf(buf + o, cap - o, "  step memory (estimate) %s; non-private step %s; second backward pass: %s\n", b1, b2,
                              cp->mode == DP_CLIP_VANILLA ? "no" : second ? "yes" : "no");
    if (cp->mode == DP_CLIP_AUTO && o < cap) {
        fmt_bytes(b1, sizeof b1, (double)budget);
        /* a given budget that no plan meets: fewer samples at once do (the default budget grows
         * with the batch, so there a smaller chunk does not help) */
        char fix[96] = "";
        if (step > (double)budget && cp->mem_budget) {
            int n = dp_model_max_batch_within(m, cp, budget, B);
            if (n > 0) snprintf(fix, sizeof fix, "; --physical-batch %d fits it", n);
            else snprintf(fix, sizeof fix, "; not even one sample at a time fits it");
        }
        snprintf(buf + o, cap - o, "  memory budget %s%s%s%s\n", b1, cp->mem_budget ? "" : " (default: 1.2 x the non-private step with parameters and gradients)",
                 step > (double)budget ? "; no plan fits it: every layer takes the second pass, the smallest plan" : "", fix);
    }
    return DP_OK;
}

/* Pass 1 with kept tensors, clip factors, then the clipped sum from what was kept (and a
 * second pass for the layers that keep nothing). */
static dp_status clipped_grad_bk(dp_model *m, const dp_clip_params *cp, const float *dlogits, int B, float *R, int *bad) {
    clip_plan(m, cp, B, NULL, NULL);
    dp_status st = DP_OK;
    int low = -1;
    /* every kept tensor in one block of the step scratch (keep_span each) */
    size_t total = 0;
    for (int k = 0; k < m->n; k++) {
        node *l = &m->L[k];
        l->keep = NULL;
        if (trainable(l) && l->cm != DP_SUM_SECOND_PASS) total += keep_span(l, B);
    }
    char *block = total ? step_scratch(m, total) : NULL;
    if (total && !block) return DP_ERR_NOMEM;
    for (int k = 0; k < m->n; k++) {
        node *l = &m->L[k];
        if (!trainable(l)) continue;
        if (l->cm == DP_SUM_SECOND_PASS) {
            if (low < 0) low = k;
            continue;
        }
        l->keep = (float *)block;
        block += keep_span(l, B);
    }
    m->keeping = 1;
    st = backward(m, dlogits, NULL, B, BWD_NORMS, cp->mode, NULL, m->sq, NULL);
    m->keeping = 0;
    if (st != DP_OK) goto done;
    *bad = clip_factors(m->sq, B, cp->max_grad_norm, R, NULL);
    dp_mem_stage("backward 2");
    for (int k = 0; k < m->n; k++) {
        node *l = &m->L[k];
        if (!l->keep) continue;
        if (l->cm == DP_SUM_KEEP_GRAD) {
            size_t n = l->out_size;
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) {
                float *g = l->keep + (size_t)b * n;
                if (R[b] == 0.0f) memset(g, 0, sizeof(float) * n); /* 0 * inf would be NaN */
                else if (R[b] != 1.0f)
                    for (size_t j = 0; j < n; j++) g[j] *= R[b];
            }
            node_bwd_param(m, l, l->keep, B);
        } else {
            size_t pl = l->nw + l->nb;
            for (int b = 0; b < B; b++)
                if (R[b] == 0.0f) memset(l->keep + (size_t)b * pl, 0, sizeof(float) * pl);
            cblas_sgemv(CblasRowMajor, CblasTrans, B, (int)pl, 1.0f, l->keep, (int)pl, R, 1, 1.0f, m->grad + l->w_off, 1);
        }
    }
    if (low >= 0) {
        m->pass2_low = low;
        st = backward(m, dlogits, R, B, BWD_PARAM, cp->mode, NULL, NULL, NULL);
        m->pass2_low = -1;
    }
done:
    for (int k = 0; k < m->n; k++) m->L[k].keep = NULL;
    return st;
}

dp_status dp_model_clipped_grad(dp_model *m, const dp_clip_params *cp, const float *dlogits, int B, float *norms,
                                float *factors, int *n_nonfinite) {
    if (!(cp->max_grad_norm > 0) || !isfinite(cp->max_grad_norm))
        return dp_fail(DP_ERR_RANGE, "--max-grad-norm %g: must be a positive finite number", cp->max_grad_norm);
    if ((int)cp->mode < 0 || cp->mode >= DP_CLIP_COUNT) return dp_fail(DP_ERR_INVALID, "clipping mode %d unknown", (int)cp->mode);
    if (n_nonfinite) *n_nonfinite = 0;
    if (B == 0) return DP_OK;
    dp_status st;
    float *R = dp_alloc(sizeof(float) * (size_t)B);
    if (!R) return DP_ERR_NOMEM;
    double *sq = m->sq;
    memset(sq, 0, sizeof(double) * (size_t)B);
    int bad = 0;
    dp_mem_stage("backward 1");
    if (cp->mode == DP_CLIP_VANILLA) {
        float *ps;
        const size_t nt = dp_model_num_trainable(m);
        st = ps_trainable(m, dlogits, B, &ps, 1);
        if (st == DP_OK) {
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) {
                double acc = 0;
                const float *g = ps + (size_t)b * nt;
                for (size_t j = 0; j < nt; j++) acc += (double)g[j] * g[j];
                sq[b] = acc;
            }
            bad = clip_factors(sq, B, cp->max_grad_norm, R, norms);
            dp_mem_stage("backward 2");
            /* grad += ps^T R, one GEMV per layer's columns; rows of samples with R = 0 are
             * zeroed first, since a non-finite row times 0 would still poison the sum */
            for (int b = 0; b < B; b++)
                if (R[b] == 0.0f) memset(ps + (size_t)b * nt, 0, sizeof(float) * nt);
            for (int k = 0; k < m->n; k++) {
                const node *l = &m->L[k];
                if (!trainable(l)) continue;
                cblas_sgemv(CblasRowMajor, CblasTrans, B, (int)(l->nw + l->nb), 1.0f, ps + trainable_offset(m, k), (int)nt,
                            R, 1, 1.0f, m->grad + l->w_off, 1);
            }
        }
    } else if (cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO) {
        st = clipped_grad_bk(m, cp, dlogits, B, R, &bad);
        if (st == DP_OK && norms)
            for (int b = 0; b < B; b++) norms[b] = (float)sqrt(sq[b]);
    } else {
        st = backward(m, dlogits, NULL, B, BWD_NORMS, cp->mode, NULL, sq, NULL);
        if (st == DP_OK) {
            bad = clip_factors(sq, B, cp->max_grad_norm, R, norms);
            dp_mem_stage("backward 2");
            st = backward(m, dlogits, R, B, BWD_PARAM, cp->mode, NULL, NULL, NULL);
        }
    }
    if (st == DP_OK) {
        if (factors) memcpy(factors, R, sizeof(float) * (size_t)B);
        if (n_nonfinite) *n_nonfinite = bad;
    }
    dp_free(R);
    return st;
}

/* ---- memory estimates ------------------------------------------------------------------ */


size_t dp_model_plan_bytes(dp_model *m, dp_clip_mode mode, int B, int no_dp) {
    if (no_dp) {
        if (!m->planned) {
            free_buffers(m);
            plan(m);
        }
        return buffer_bytes(m, B < 1 ? 1 : B, (size_t)dp__max_threads());
    }
    dp_clip_params cp = dp_clip_default_params();
    cp.mode = mode;
    return dp_model_clip_plan_bytes(m, &cp, B);
}

size_t dp_model_clip_plan_bytes(dp_model *m, const dp_clip_params *cp, int B) {
    if (!m->planned) {
        free_buffers(m);
        plan(m);
    }
    if (B < 1) B = 1;
    const dp_clip_mode mode = cp->mode;
    size_t bytes = buffer_bytes(m, B, (size_t)dp__max_threads());
    size_t extra = 0;
    if (mode == DP_CLIP_BK || mode == DP_CLIP_AUTO) {
        size_t kept = 0;
        clip_plan(m, cp, B, NULL, &kept);
        bytes += kept;
    }
    if (mode == DP_CLIP_VANILLA)
        extra = sizeof(float) * (size_t)B * dp_model_num_trainable(m);
    else
        for (int k = 0; k < m->n; k++)
            if (dp_model_norm_method(m, k, mode, NULL, NULL) == DP_NORM_INSTANTIATE) {
                const node *l = &m->L[k];
                size_t e = sizeof(float) * inst_chunk(l, B) * (l->nw + l->nb);
                if (e > extra) extra = e;
            }
    return bytes + extra + sizeof(float) * (size_t)B;
}

int dp_model_max_batch_within(dp_model *m, const dp_clip_params *cp, size_t bytes, int B) {
    /* the estimates grow with n (buffers are per sample): bisection, lo fitting, hi not */
    int lo = 0, hi = B < 1 ? 1 : B;
#define FITS(n)                                                                                                        \
    ((cp->mode == DP_CLIP_AUTO ? dp_model_plan_bytes(m, DP_CLIP_GHOST, (n), 0) : dp_model_clip_plan_bytes(m, cp, (n))) \
     <= bytes)
    if (FITS(hi)) return hi;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (FITS(mid)) lo = mid;
        else hi = mid;
    }
#undef FITS
    return lo;
}
