/* nn/transformer.c: the BERT-like encoder classifier builder (include/dpsgd/nn.h,
 * dp_model_create_transformer): nodes joined by residual adds and attention, with Hugging
 * Face's parameter names. */
#include <stdio.h>
#include <string.h>

#include "nn/graph.h"

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
    dp__node *l = dp__push_node(m, kind, in0);
    if (!l) return -1;
    int idx = m->n - 1;
    if (kind == DP_LAYER_LINEAR) {
        l->oc = oc;
        l->has_bias = has_bias;
    }
    if (kind == DP_LAYER_LAYERNORM) l->eps = 1e-12f;
    dp__finish_node(m, l, idx, name);
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
    if (p->vocab < 1 || p->vocab > (1 << 24)) return dp_fail(DP_ERR_INVALID, "vocab %d: must be in 1..16777216", p->vocab);
    if (p->seq_len < 1 || p->seq_len > 65536) return dp_fail(DP_ERR_INVALID, "seq_len %d: must be in 1..65536", p->seq_len);
    if (p->width < 1 || p->width > 65536) return dp_fail(DP_ERR_INVALID, "width %d: must be in 1..65536", p->width);
    if (p->heads < 1 || p->width % p->heads)
        return dp_fail(DP_ERR_INVALID, "heads %d: must be >= 1 and divide width %d", p->heads, p->width);
    if (p->layers < 0 || p->layers > 1024) return dp_fail(DP_ERR_INVALID, "layers %d: must be in 0..1024", p->layers);
    if (ffn < 1) return dp_fail(DP_ERR_INVALID, "ffn %d: must be >= 1", p->ffn);
    if (p->n_classes < 1) return dp_fail(DP_ERR_INVALID, "transformer: number of classes %d must be >= 1", p->n_classes);
    if (!(p->dropout >= 0 && p->dropout < 1)) return dp_fail(DP_ERR_INVALID, "dropout %g: must be in [0, 1)", p->dropout);
    if (p->pool != DP_POOL_FIRST && p->pool != DP_POOL_MEAN) return dp_fail(DP_ERR_INVALID, "transformer: unknown pooling %d", p->pool);
    if (p->train_last > p->layers)
        return dp_fail(DP_ERR_INVALID, "train_last %d: the model has only %d blocks", p->train_last, p->layers);
    dp_model *m = dp__model_new(1, 1, p->seq_len);
    if (!m) return DP_ERR_NOMEM;
    m->tokens = 1;
    m->bert_init = 1;
    dp_status st = DP_OK;
    char nm[DP__NAME_LEN];
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
        dp__node *e = dp__push_node(m, DP_LAYER_EMBEDDING, -1);
        if (!e) goto nomem;
        e->vocab = p->vocab;
        e->oc = d;
        dp__finish_node(m, e, 0, "bert.embeddings.word_embeddings");
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
    if ((st = dp__finish_model(m)) != DP_OK) goto fail_;
    if (p->train_last >= 0) {
        char keep[DP__NAME_LEN];
        for (int i = 0; i < m->n; i++) {
            dp__node *l = &m->L[i];
            if (!dp__has_params(l)) continue;
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
