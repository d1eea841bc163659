/* model.c: sequential models, the spec parser, forward, backward and the clipping engine. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "dpsgd/nn.h"
#include "kernels.h"

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
    return dp_fail(DP_ERR_INVALID, "--clipping %s: unknown mode (choose vanilla, fast or ghost)", s ? s : "(null)");
}

dp_clip_params dp_clip_default_params(void) {
    dp_clip_params p = {DP_CLIP_GHOST, 1.0};
    return p;
}

/* ---- the model ------------------------------------------------------------------------ */

typedef struct {
    dp_layer_kind kind;
    int ic, ih, iw, oc, oh, ow;
    size_t in_size, out_size;
    int k, s, pad, has_bias;
    float p; /* dropout probability */
    size_t w_off, nw, b_off, nb;
    int frozen;
    float *out;          /* [cap, out_size] */
    float *col;          /* conv: [cap, T, D] unfolded input */
    int32_t *arg;        /* maxpool: [cap, out_size] */
    unsigned char *mask; /* dropout: [cap, out_size] */
} layer;

struct dp_model {
    int n;
    layer *L;
    int c, h, w;
    size_t in_size, max_size;
    size_t np;
    float *params, *grad;
    unsigned char *tmask;
    int cap;          /* batch capacity of the activation buffers */
    const float *x;   /* input of the last forward (borrowed) */
    int fwd_B, fwd_train;
    float *g0, *g1;   /* backward ping-pong buffers [cap, max_size] */
    float *work;      /* conv scratch */
    size_t work_floats;
    double *sq;       /* [cap] */
    int ntensors;
    char (*tnames)[24];
    size_t *toff, *tcount;
};

static int has_params(const layer *l) { return l->nw > 0; }

static void layer_free_buffers(layer *l) {
    dp_free(l->out);
    dp_free(l->col);
    dp_free(l->arg);
    dp_free(l->mask);
    l->out = l->col = NULL;
    l->arg = NULL;
    l->mask = NULL;
}

void dp_model_destroy(dp_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) layer_free_buffers(&m->L[i]);
    dp_free(m->L);
    dp_free(m->params);
    dp_free(m->grad);
    dp_free(m->tmask);
    dp_free(m->g0);
    dp_free(m->g1);
    dp_free(m->work);
    dp_free(m->sq);
    dp_free(m->tnames);
    dp_free(m->toff);
    dp_free(m->tcount);
    dp_free(m);
}

/* ---- spec parser ---------------------------------------------------------------------- */

typedef struct {
    char name[16];
    char args[8][16];
    int nargs;
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

static dp_status build_layer(layer *l, const token *t, int idx, int c, int h, int w) {
    memset(l, 0, sizeof *l);
    l->ic = c;
    l->ih = h;
    l->iw = w;
    l->in_size = (size_t)c * h * w;
    long v;
    int kind = -1;
    for (int k = 0; k < DP_LAYER_COUNT; k++)
        if (strcmp(t->name, layer_names[k]) == 0) kind = k;
    if (kind < 0)
        return dp_fail(DP_ERR_INVALID,
                       "model spec: layer %d: unknown layer '%s' (known: linear conv2d relu tanh maxpool avgpool "
                       "flatten dropout)", idx, t->name);
    l->kind = (dp_layer_kind)kind;
    l->oc = c;
    l->oh = h;
    l->ow = w;
    switch (l->kind) {
    case DP_LAYER_LINEAR:
        if (t->nargs < 1 || t->nargs > 2 || !parse_int(t->args[0], 1, 1 << 24, &v))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: linear(OUT[,nobias]) needs OUT >= 1", idx);
        l->has_bias = !(t->nargs == 2 && strcmp(t->args[1], "nobias") == 0);
        if (t->nargs == 2 && l->has_bias)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: linear: unknown option '%s'", idx, t->args[1]);
        l->oc = (int)v;
        l->oh = l->ow = 1;
        l->nw = (size_t)v * l->in_size;
        l->nb = l->has_bias ? (size_t)v : 0;
        break;
    case DP_LAYER_CONV2D: {
        long out, k, s = 1, p = 0;
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
        l->nw = (size_t)out * c * k * k;
        l->nb = l->has_bias ? (size_t)out : 0;
        break;
    }
    case DP_LAYER_MAXPOOL:
    case DP_LAYER_AVGPOOL: {
        long k, s;
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
    case DP_LAYER_DROPOUT: {
        char *end;
        double p = t->nargs == 1 ? strtod(t->args[0], &end) : -1;
        if (t->nargs != 1 || *end || !(p >= 0 && p < 1))
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d: dropout(P) needs P in [0, 1)", idx);
        l->p = (float)p;
        break;
    }
    case DP_LAYER_FLATTEN:
        l->oc = (int)l->in_size;
        l->oh = l->ow = 1;
        /* fall through */
    case DP_LAYER_RELU:
    case DP_LAYER_TANH:
        if (t->nargs) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s takes no arguments", idx, t->name);
        break;
    case DP_LAYER_COUNT:
        break;
    }
    l->out_size = (size_t)l->oc * l->oh * l->ow;
    return DP_OK;
}

dp_status dp_model_create(const char *spec, int c, int h, int w, dp_model **out) {
    if (!spec) return dp_fail(DP_ERR_INVALID, "model spec: empty");
    if (c < 1 || h < 1 || w < 1) return dp_fail(DP_ERR_INVALID, "model: input shape %dx%dx%d is not positive", c, h, w);
    dp_model *m = dp_calloc(1, sizeof *m);
    if (!m) return DP_ERR_NOMEM;
    dp_status st = DP_OK;
    int capL = 0;
    const char *s = spec;
    while (isspace((unsigned char)*s)) s++;
    int cc = c, hh = h, ww = w;
    m->c = c;
    m->h = h;
    m->w = w;
    m->in_size = m->max_size = (size_t)c * h * w;
    while (*s) {
        token t;
        if ((st = next_token(&s, &t, m->n)) != DP_OK) goto fail;
        if (m->n == capL) {
            int nc = capL ? 2 * capL : 8;
            layer *nl = dp_calloc((size_t)nc, sizeof *nl);
            if (!nl) {
                st = DP_ERR_NOMEM;
                goto fail;
            }
            if (m->L) memcpy(nl, m->L, sizeof *nl * (size_t)m->n);
            dp_free(m->L);
            m->L = nl;
            capL = nc;
        }
        layer *l = &m->L[m->n];
        if ((st = build_layer(l, &t, m->n, cc, hh, ww)) != DP_OK) goto fail;
        m->n++;
        cc = l->oc;
        hh = l->oh;
        ww = l->ow;
        if (l->out_size > m->max_size) m->max_size = l->out_size;
        l->w_off = m->np;
        m->np += l->nw;
        l->b_off = m->np;
        m->np += l->nb;
        if (has_params(l)) m->ntensors += l->has_bias ? 2 : 1;
    }
    if (m->n == 0) {
        st = dp_fail(DP_ERR_INVALID, "model spec: no layers");
        goto fail;
    }
    if (m->np == 0) {
        st = dp_fail(DP_ERR_INVALID, "model spec: the model has no parameters to train");
        goto fail;
    }
    m->params = dp_calloc(m->np, sizeof(float));
    m->grad = dp_calloc(m->np, sizeof(float));
    m->tmask = dp_alloc(m->np);
    m->tnames = dp_calloc((size_t)m->ntensors, sizeof *m->tnames);
    m->toff = dp_calloc((size_t)m->ntensors, sizeof(size_t));
    m->tcount = dp_calloc((size_t)m->ntensors, sizeof(size_t));
    if (!m->params || !m->grad || !m->tmask || !m->tnames || !m->toff || !m->tcount) {
        st = DP_ERR_NOMEM;
        goto fail;
    }
    memset(m->tmask, 1, m->np);
    int ti = 0;
    for (int i = 0; i < m->n; i++) {
        layer *l = &m->L[i];
        if (!has_params(l)) continue;
        snprintf(m->tnames[ti], sizeof m->tnames[ti], "%d.weight", i);
        m->toff[ti] = l->w_off;
        m->tcount[ti++] = l->nw;
        if (l->has_bias) {
            snprintf(m->tnames[ti], sizeof m->tnames[ti], "%d.bias", i);
            m->toff[ti] = l->b_off;
            m->tcount[ti++] = l->nb;
        }
    }
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

void dp_model_init(dp_model *m, dp_rng *rng) {
    for (int i = 0; i < m->n; i++) {
        layer *l = &m->L[i];
        if (!has_params(l)) continue;
        size_t fan_in = l->kind == DP_LAYER_CONV2D ? (size_t)l->ic * l->k * l->k : l->in_size;
        double bound = 1.0 / sqrt((double)fan_in);
        for (size_t j = 0; j < l->nw; j++) m->params[l->w_off + j] = (float)((2 * dp_rng_uniform(rng) - 1) * bound);
        for (size_t j = 0; j < l->nb; j++) m->params[l->b_off + j] = (float)((2 * dp_rng_uniform(rng) - 1) * bound);
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
dp_layer_kind dp_model_layer_kind(const dp_model *m, int i) { return m->L[i].kind; }
size_t dp_model_layer_params(const dp_model *m, int i, size_t *offset) {
    if (offset) *offset = m->L[i].w_off;
    return m->L[i].nw + m->L[i].nb;
}

dp_status dp_model_set_frozen(dp_model *m, int i, int frozen) {
    if (i < 0 || i >= m->n) return dp_fail(DP_ERR_RANGE, "freeze: layer %d does not exist (model has %d layers)", i, m->n);
    layer *l = &m->L[i];
    if (!has_params(l)) return dp_fail(DP_ERR_INVALID, "freeze: layer %d (%s) has no parameters", i, layer_names[l->kind]);
    l->frozen = frozen != 0;
    memset(m->tmask + l->w_off, !l->frozen, l->nw + l->nb);
    if (dp_model_num_trainable(m) == 0) {
        l->frozen = 0;
        memset(m->tmask + l->w_off, 1, l->nw + l->nb);
        return dp_fail(DP_ERR_INVALID, "freeze: layer %d is the last trainable layer; nothing would be trained", i);
    }
    return DP_OK;
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

void dp_model_describe(const dp_model *m, char *buf, size_t cap) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "input %dx%dx%d\n", m->c, m->h, m->w);
    for (int i = 0; i < m->n && o < cap; i++) {
        const layer *l = &m->L[i];
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "%3d %-8s -> %dx%dx%d  params %zu%s\n", i,
                              layer_names[l->kind], l->oc, l->oh, l->ow, l->nw + l->nb, l->frozen ? " (frozen)" : "");
    }
    if (o < cap) snprintf(buf + o, cap - o, "total parameters %zu, trainable %zu\n", m->np, dp_model_num_trainable(m));
}

/* ---- buffers ------------------------------------------------------------------------- */

static size_t conv_T(const layer *l) { return (size_t)l->oh * l->ow; }
static size_t conv_D(const layer *l) { return (size_t)l->ic * l->k * l->k; }

static dp_status ensure_capacity(dp_model *m, int B) {
    if (B <= m->cap) return DP_OK;
    int nc = B;
    size_t nt = (size_t)dp__max_threads();
    size_t work = 0;
    for (int i = 0; i < m->n; i++) {
        layer *l = &m->L[i];
        layer_free_buffers(l);
        l->out = dp_alloc(sizeof(float) * (size_t)nc * l->out_size);
        if (!l->out) return DP_ERR_NOMEM;
        if (l->kind == DP_LAYER_CONV2D) {
            size_t T = conv_T(l), D = conv_D(l);
            l->col = dp_alloc(sizeof(float) * (size_t)nc * T * D);
            if (!l->col) return DP_ERR_NOMEM;
            size_t need = nt * T * D;
            if (nt * 2 * T * T > need) need = nt * 2 * T * T;
            if ((size_t)l->oc * nc * T > need) need = (size_t)l->oc * nc * T;
            if (need > work) work = need;
        }
        if (l->kind == DP_LAYER_MAXPOOL && !(l->arg = dp_alloc(sizeof(int32_t) * (size_t)nc * l->out_size)))
            return DP_ERR_NOMEM;
        if (l->kind == DP_LAYER_DROPOUT && !(l->mask = dp_alloc((size_t)nc * l->out_size))) return DP_ERR_NOMEM;
    }
    dp_free(m->g0);
    dp_free(m->g1);
    dp_free(m->work);
    dp_free(m->sq);
    m->g0 = dp_alloc(sizeof(float) * (size_t)nc * m->max_size);
    m->g1 = dp_alloc(sizeof(float) * (size_t)nc * m->max_size);
    m->work = work ? dp_alloc(sizeof(float) * work) : NULL;
    m->work_floats = work;
    m->sq = dp_alloc(sizeof(double) * (size_t)nc);
    if (!m->g0 || !m->g1 || (work && !m->work) || !m->sq) return DP_ERR_NOMEM;
    m->cap = nc;
    return DP_OK;
}

/* ---- forward ------------------------------------------------------------------------- */

static const float *layer_input(const dp_model *m, int i) { return i == 0 ? m->x : m->L[i - 1].out; }

dp_status dp_model_forward(dp_model *m, const float *x, int B, int train, dp_rng *rng, const float **logits) {
    if (B < 0) return dp_fail(DP_ERR_INVALID, "forward: negative batch size %d", B);
    dp_status st = ensure_capacity(m, B > 0 ? B : 1);
    if (st != DP_OK) {
        m->cap = 0; /* buffers are in an unknown state: rebuild on the next call */
        return st;
    }
    m->x = x;
    m->fwd_B = B;
    m->fwd_train = train;
    for (int i = 0; i < m->n; i++) {
        layer *l = &m->L[i];
        const float *in = layer_input(m, i);
        size_t n = (size_t)B * l->out_size;
        const float *w = m->params + l->w_off, *b = l->has_bias ? m->params + l->b_off : NULL;
        switch (l->kind) {
        case DP_LAYER_LINEAR: dp__k_linear_fwd_f32(l->out, in, w, b, B, (int)l->in_size, l->oc); break;
        case DP_LAYER_CONV2D:
            dp__k_conv_fwd_f32(l->out, l->col, m->work, in, w, b, B, l->ic, l->ih, l->iw, l->oc, l->k, l->s, l->pad, l->oh, l->ow);
            break;
        case DP_LAYER_RELU: dp__k_relu_fwd_f32(l->out, in, n); break;
        case DP_LAYER_TANH: dp__k_tanh_fwd_f32(l->out, in, n); break;
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

/* ---- backward ------------------------------------------------------------------------ */

enum { BWD_PARAM, BWD_NORMS, BWD_PS };

static int first_trainable(const dp_model *m) {
    for (int i = 0; i < m->n; i++)
        if (has_params(&m->L[i]) && !m->L[i].frozen) return i;
    return m->n;
}

dp_norm_method dp_model_norm_method(const dp_model *m, int i, dp_clip_mode mode, double *fg, double *fi) {
    const layer *l = &m->L[i];
    if (!has_params(l) || l->frozen) return DP_NORM_NONE;
    double T = 1, d = (double)l->in_size, p = l->oc;
    if (l->kind == DP_LAYER_CONV2D) {
        T = (double)conv_T(l);
        d = (double)conv_D(l);
    }
    double g = 2 * T * T * (d + p), in = 2 * T * d * p;
    if (fg) *fg = g;
    if (fi) *fi = in;
    if (mode == DP_CLIP_GHOST && g <= in) return DP_NORM_GHOST;
    return DP_NORM_INSTANTIATE;
}

/* Per-sample gradients of layer l into ps (row stride `stride`, weight then bias). */
static void layer_ps_grad(const dp_model *m, const layer *l, int i, float *ps, size_t stride, const float *dout, int B) {
    if (l->kind == DP_LAYER_LINEAR)
        dp__k_linear_ps_grad_f32(ps, stride, dout, layer_input(m, i), B, (int)l->in_size, l->oc, l->has_bias);
    else
        dp__k_conv_ps_grad_f32(ps, stride, dout, l->col, B, l->oc, (int)conv_T(l), (int)conv_D(l), l->has_bias);
}

static dp_status layer_norms(dp_model *m, int i, dp_clip_mode mode, const float *dout, int B, double *sq) {
    layer *l = &m->L[i];
    if (dp_model_norm_method(m, i, mode, NULL, NULL) == DP_NORM_GHOST) {
        if (l->kind == DP_LAYER_LINEAR)
            dp__k_linear_ghost_sq_f32(sq, dout, layer_input(m, i), B, (int)l->in_size, l->oc, l->has_bias);
        else
            dp__k_conv_ghost_sq_f32(sq, m->work, dout, l->col, B, l->oc, (int)conv_T(l), (int)conv_D(l), l->has_bias);
        return DP_OK;
    }
    /* fast gradient clipping: instantiate this layer's per-sample gradients, norm, free */
    size_t pl = l->nw + l->nb;
    float *ps = dp_alloc(sizeof(float) * (size_t)B * pl);
    if (!ps) return DP_ERR_NOMEM;
    layer_ps_grad(m, l, i, ps, pl, dout, B);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        double acc = 0;
        const float *g = ps + (size_t)b * pl;
        for (size_t j = 0; j < pl; j++) acc += (double)g[j] * g[j];
        sq[b] += acc;
    }
    dp_free(ps);
    return DP_OK;
}

/* Backward through the whole model from dlogits (rows optionally scaled by scale[i]). */
static dp_status backward(dp_model *m, const float *dlogits, const float *scale, int B, int what, dp_clip_mode mode,
                          float *ps, double *sq) {
    if (B == 0) return DP_OK;
    if (B != m->fwd_B || !m->fwd_train)
        return dp_fail(DP_ERR_INVALID, "backward: needs a training forward of the same batch (%d samples, got %d)", m->fwd_B, B);
    const int stop = first_trainable(m);
    float *cur = m->g0, *nxt = m->g1;
    size_t K = m->L[m->n - 1].out_size;
    for (int b = 0; b < B; b++) {
        float s = scale ? scale[b] : 1.0f;
        for (size_t j = 0; j < K; j++) cur[(size_t)b * K + j] = s == 0.0f ? 0.0f : dlogits[(size_t)b * K + j] * s;
    }
    for (int i = m->n - 1; i >= stop; i--) {
        layer *l = &m->L[i];
        const float *in = layer_input(m, i);
        const float *w = m->params + l->w_off;
        if (has_params(l) && !l->frozen) {
            if (what == BWD_PARAM) {
                float *gb = l->has_bias ? m->grad + l->b_off : NULL;
                if (l->kind == DP_LAYER_LINEAR)
                    dp__k_linear_bwd_param_f32(m->grad + l->w_off, gb, cur, in, B, (int)l->in_size, l->oc);
                else
                    dp__k_conv_bwd_param_f32(m->grad + l->w_off, gb, m->work, cur, l->col, B, l->oc, (int)conv_T(l),
                                             (int)conv_D(l));
            } else if (what == BWD_NORMS) {
                dp_status st = layer_norms(m, i, mode, cur, B, sq);
                if (st != DP_OK) return st;
            } else {
                layer_ps_grad(m, l, i, ps + l->w_off, m->np, cur, B);
            }
        }
        if (i == stop) break; /* nothing trainable below: no input gradient needed */
        size_t n = (size_t)B * l->in_size;
        switch (l->kind) {
        case DP_LAYER_LINEAR: dp__k_linear_bwd_input_f32(nxt, cur, w, B, (int)l->in_size, l->oc); break;
        case DP_LAYER_CONV2D:
            dp__k_conv_bwd_input_f32(nxt, m->work, cur, w, B, l->ic, l->ih, l->iw, l->oc, l->k, l->s, l->pad, l->oh, l->ow);
            break;
        case DP_LAYER_RELU: dp__k_relu_bwd_f32(nxt, cur, l->out, n); break;
        case DP_LAYER_TANH: dp__k_tanh_bwd_f32(nxt, cur, l->out, n); break;
        case DP_LAYER_MAXPOOL: dp__k_maxpool_bwd_f32(nxt, cur, l->arg, B, l->ic, l->ih, l->iw, l->oh, l->ow); break;
        case DP_LAYER_AVGPOOL: dp__k_avgpool_bwd_f32(nxt, cur, B, l->ic, l->ih, l->iw, l->k, l->s, l->oh, l->ow); break;
        case DP_LAYER_FLATTEN: memcpy(nxt, cur, sizeof(float) * n); break;
        case DP_LAYER_DROPOUT: dp__k_dropout_bwd_f32(nxt, cur, l->mask, l->p > 0 ? 1.0f / (1.0f - l->p) : 1.0f, n); break;
        case DP_LAYER_COUNT: break;
        }
        float *t = cur;
        cur = nxt;
        nxt = t;
    }
    return DP_OK;
}

dp_status dp_model_backward(dp_model *m, const float *dlogits, int B) {
    return backward(m, dlogits, NULL, B, BWD_PARAM, DP_CLIP_VANILLA, NULL, NULL);
}

dp_status dp_model_per_sample_grads(dp_model *m, const float *dlogits, int B, float *ps) {
    memset(ps, 0, sizeof(float) * (size_t)B * m->np);
    return backward(m, dlogits, NULL, B, BWD_PS, DP_CLIP_VANILLA, ps, NULL);
}

/* R_i from squared norms; non-finite norms get R_i = 0 */
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
        double r = C / (nrm + 1e-6);
        R[i] = (float)(r < 1.0 ? r : 1.0);
    }
    return bad;
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
        float *ps = dp_alloc(sizeof(float) * (size_t)B * m->np);
        if (!ps) {
            dp_free(R);
            return DP_ERR_NOMEM;
        }
        st = dp_model_per_sample_grads(m, dlogits, B, ps);
        if (st == DP_OK) {
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) {
                double acc = 0;
                const float *g = ps + (size_t)b * m->np;
                for (size_t j = 0; j < m->np; j++) acc += (double)g[j] * g[j];
                sq[b] = acc;
            }
            bad = clip_factors(sq, B, cp->max_grad_norm, R, norms);
            /* grad += ps^T R in one GEMV; rows of samples with R = 0 are zeroed first, since a
             * non-finite row times 0 would still poison the sum */
            dp_mem_stage("backward 2");
            for (int b = 0; b < B; b++)
                if (R[b] == 0.0f) memset(ps + (size_t)b * m->np, 0, sizeof(float) * m->np);
            cblas_sgemv(CblasRowMajor, CblasTrans, B, (int)m->np, 1.0f, ps, (int)m->np, R, 1, 1.0f, m->grad, 1);
        }
        dp_free(ps);
    } else {
        st = backward(m, dlogits, NULL, B, BWD_NORMS, cp->mode, NULL, sq);
        if (st == DP_OK) {
            bad = clip_factors(sq, B, cp->max_grad_norm, R, norms);
            dp_mem_stage("backward 2");
            st = backward(m, dlogits, R, B, BWD_PARAM, cp->mode, NULL, NULL);
        }
    }
    if (st == DP_OK) {
        if (factors) memcpy(factors, R, sizeof(float) * (size_t)B);
        if (n_nonfinite) *n_nonfinite = bad;
    }
    dp_free(R);
    return st;
}
