/* nn/onnx_layers.c: the ONNX operators that map onto the built-in layers (Gemm, Conv, pooling,
 * GroupNorm's and InstanceNorm's exports, embeddings, per-channel scales and biases, residual
 * Adds, Dropout, Identity, Constant) and the dispatcher that hands the rest to shape folding
 * (onnx_sym.c) and the general tensor operators (onnx_ops.c). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nn/kernels/kernels.h"
#include "nn/onnx_map.h"

typedef dp__oval val;
typedef dp__octx ctx;

#define SUPPORTED                                                                                                   \
    "Gemm, MatMul, Conv, Relu, LeakyRelu, Tanh, Sigmoid, Erf, Sqrt, Exp, Log, Neg, Abs, Reciprocal, Softmax, "         \
    "LogSoftmax, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Add, Sub, " \
    "Mul, Div, Pow, Slice, Split, Concat, Expand, Gather (an embedding, or constant indices), ReduceMean, ReduceSum, "          \
    "LayerNormalization, InstanceNormalization (GroupNorm's export), Dropout, Identity, Cast, Constant, Shape"


/* ints attribute with every value equal: that value, or def when absent; -1 when they differ */
static int64_t attr_same(const dp__onnx_node *n, const char *name, int64_t def, size_t expect) {
    const dp__onnx_attr *a = dp__onnx_find_attr(n, name);
    if (!a) return def;
    if (a->type != DP__ONNX_ATTR_INTS || (expect && a->n != expect) || a->n == 0) return -1;
    for (size_t i = 1; i < a->n; i++)
        if (a->ints[i] != a->ints[0]) return -1;
    return a->ints[0];
}

/* the activation value named by input j, or -1 */
static int act_input(const ctx *c, const dp__onnx_node *n, int j) {
    if (j >= n->n_inputs) return -1;
    int i = dp__onnx_find(c, n->inputs[j]);
    return i >= 0 && c->v[i].kind == V_ACT ? i : -1;
}

static int param_input(const ctx *c, const dp__onnx_node *n, int j) {
    if (j >= n->n_inputs || !n->inputs[j][0]) return -1;
    int i = dp__onnx_find(c, n->inputs[j]);
    return i >= 0 && c->v[i].kind == V_PARAM ? i : -1;
}
/* A parameter value seen as one value per channel of an activation of this rank: [C, 1, 1]
 * on an image, [C] on features or a sequence's tokens (leading 1s, as a batch axis, allowed). */
static int per_channel(const val *p, int64_t C, int rank) {
    if (p->t->elem_type != DP__ONNX_FLOAT || (int64_t)p->t->count != C) return 0;
    int d = 0;
    while (p->vnd - d > (rank == 3 ? 3 : 1) && p->vdims[d] == 1) d++;
    if (rank == 3) return p->vnd - d == 3 && p->vdims[d] == C && p->vdims[d + 1] == 1 && p->vdims[d + 2] == 1;
    return p->vnd - d == 1 && p->vdims[d] == C;
}

/* auto_pad absent, NOTSET or VALID: the padding is the pads attribute's (VALID: none) */
/* a Conv or pooling node's window: kernel k, stride s, dilation d, pads above, left, below, right */
static void set_window(dp__node *l, int64_t k, int64_t s, int64_t d, const int64_t pads[4]) {
    l->k = (int)k;
    l->s = (int)s;
    l->dil = (int)d;
    l->pad = (int)pads[0];
    l->padl = (int)pads[1];
    l->padb = (int)pads[2];
    l->padr = (int)pads[3];
}

/* The pads above, left, below and right of a Conv or pooling node over the image ld ([batch,
 * C, H, W]) with a kernel spanning ext and stride s: given (pads [top, left, bottom, right]),
 * or what auto_pad SAME_UPPER / SAME_LOWER needs for an output of ceil(in / stride) (the odd
 * one below and right for UPPER, above and left for LOWER), or none (VALID, or neither). */
static dp_status node_pads(ctx *c, const dp__onnx_node *n, const int64_t *ld, int64_t ext, int64_t s, int64_t pads[4]) {
    for (int j = 0; j < 4; j++) pads[j] = 0;
    const dp__onnx_attr *ap = dp__onnx_find_attr(n, "auto_pad"), *pa = dp__onnx_find_attr(n, "pads");
    if (ap && ap->type != DP__ONNX_ATTR_STRING) return dp__onnx_node_fail(c, n, "its auto_pad must be a string");
    const char *mode = ap ? ap->s : "NOTSET";
    if (!strcmp(mode, "SAME_UPPER") || !strcmp(mode, "SAME_LOWER")) {
        if (pa) return dp__onnx_node_fail(c, n, "has both auto_pad and pads");
        for (int ax = 0; ax < 2; ax++) {
            const int64_t in = ld[2 + ax], out = (in + s - 1) / s, tot = (out - 1) * s + ext - in;
            const int64_t t = tot > 0 ? tot : 0, lo = mode[5] == 'U' ? t / 2 : t - t / 2;
            pads[ax] = lo;
            pads[2 + ax] = t - lo;
        }
    } else if (!strcmp(mode, "VALID")) {
        if (pa) return dp__onnx_node_fail(c, n, "has both auto_pad and pads");
    } else if (strcmp(mode, "NOTSET")) {
        return dp__onnx_node_fail(c, n, "its auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER");
    } else if (pa) {
        if (pa->type != DP__ONNX_ATTR_INTS || pa->n != 4)
            return dp__onnx_node_fail(c, n, "its pads must be 4 integers (top, left, bottom, right)");
        for (int j = 0; j < 4; j++) pads[j] = pa->ints[j];
    }
    for (int j = 0; j < 4; j++)
        if (pads[j] < 0 || pads[j] > (INT32_MAX - (ld[2] > ld[3] ? ld[2] : ld[3])) / 2)
            return dp__onnx_node_fail(c, n, "its pads must be 0 or more, and not too large");
    if (ld[2] + pads[0] + pads[2] < ext || ld[3] + pads[1] + pads[3] < ext)
        return dp__onnx_node_fail(c, n, "its kernel (dilated) is larger than its padded input");
    return DP_OK;
}

/* The inputs an operator takes at most (opsets 9 to 18; Concat is variadic): a node with more
 * is malformed, and its extra inputs would be ignored silently. */
static int max_inputs(const char *op) {
    static const struct {
        const char *op;
        int n;
    } t[] = {{"Gemm", 3}, {"MatMul", 2}, {"Conv", 3}, {"Relu", 1}, {"LeakyRelu", 1}, {"Tanh", 1}, {"Sigmoid", 1},
             {"Erf", 1}, {"Sqrt", 1}, {"Exp", 1}, {"Log", 1}, {"Neg", 1}, {"Abs", 1}, {"Reciprocal", 1},
             {"Softmax", 1}, {"LogSoftmax", 1}, {"MaxPool", 1}, {"AveragePool", 1}, {"GlobalAveragePool", 1},
             {"Flatten", 1}, {"Reshape", 2}, {"Transpose", 1}, {"Squeeze", 2}, {"Unsqueeze", 2}, {"Add", 2},
             {"Sub", 2}, {"Mul", 2}, {"Div", 2}, {"Pow", 2}, {"Slice", 5}, {"Split", 2}, {"Expand", 2},
             {"Gather", 2}, {"ReduceMean", 2}, {"ReduceSum", 2}, {"LayerNormalization", 3},
             {"InstanceNormalization", 3}, {"Dropout", 3}, {"Identity", 1}, {"Cast", 1}, {"CastLike", 2},
             {"Constant", 0}, {"Shape", 1}, {"ConstantOfShape", 1}, {"Equal", 2}, {"Where", 3}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(op, t[i].op)) return t[i].n;
    return -1; /* variadic, or not known here */
}

dp_status dp__onnx_map_node(ctx *c, const dp__onnx_node *n) {
    const char *op = n->op_type;
    dp_status st = DP_OK;
    if (n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
        return dp__onnx_node_fail(c, n, "operators outside the default domain are not supported");
    if (n->n_outputs < 1) return dp__onnx_node_fail(c, n, "has no output");
    const int most = max_inputs(op);
    if (most >= 0 && n->n_inputs > most) {
        char why[96];
        snprintf(why, sizeof why, "has %d inputs; %s takes at most %d", n->n_inputs, op, most);
        return dp__onnx_node_fail(c, n, why);
    }
    if (!strcmp(op, "BatchNormalization"))
        return dp__onnx_node_fail(c, n,
                                  "BatchNormalization mixes the samples of a batch, which per-sample clipping cannot "
                                  "bound: use GroupNorm (nn.GroupNorm) instead");
    if (!strcmp(op, "Constant")) {
        const dp__onnx_attr *a = dp__onnx_find_attr(n, "value");
        if (!a || a->type != DP__ONNX_ATTR_TENSOR || !a->t)
            return dp__onnx_node_fail(c, n, "only a 'value' tensor is supported");
        val x = {.name = n->outputs[0], .kind = V_CONST, .t = a->t};
        return dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    }
    if (!strcmp(op, "Identity") || !strcmp(op, "Dropout")) {
        int i = n->n_inputs ? dp__onnx_find(c, n->inputs[0]) : -1;
        if (i < 0) return dp__onnx_node_fail(c, n, "its input is unknown");
        for (int j = 1; j < n->n_outputs; j++)
            if (n->outputs[j][0]) { /* the mask: used by nothing we support */
                for (int k = 0; k < c->g->n_nodes; k++)
                    for (int q = 0; q < c->g->nodes[k].n_inputs; q++)
                        if (!strcmp(c->g->nodes[k].inputs[q], n->outputs[j]))
                            return dp__onnx_node_fail(c, n, "its mask output is used");
            }
        double p = 0;
        if (!strcmp(op, "Dropout")) {
            int r = n->n_inputs > 1 && n->inputs[1][0] ? dp__onnx_find(c, n->inputs[1]) : -1;
            if (r >= 0 && c->v[r].kind == V_CONST && c->v[r].t->count == 1 && c->v[r].t->f) p = c->v[r].t->f[0];
            else if (r >= 0) return dp__onnx_node_fail(c, n, "its ratio must be a constant");
            const dp__onnx_attr *a = dp__onnx_find_attr(n, "ratio");
            if (a && a->type == DP__ONNX_ATTR_FLOAT) p = a->f;
            if (!(p >= 0 && p < 1)) return dp__onnx_node_fail(c, n, "its ratio must be in [0, 1)");
        }
        if (p > 0) {
            if (c->v[i].kind != V_ACT)
                return dp__onnx_node_fail(c, n, "dropout of a parameter or constant is not supported");
            if (c->v[i].node < 0 && c->m->tokens) return dp__onnx_node_fail(c, n, "dropout of token ids is not supported");
            dp__node *l = dp__onnx_new_node(c, DP_LAYER_DROPOUT, i);
            if (!l) return DP_ERR_NOMEM;
            l->p = (float)p;
            return dp__onnx_finish_like(c, l, n, &c->v[i], 0);
        }
        val x = c->v[i];
        x.name = n->outputs[0];
        return dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    }
    if (dp__onnx_map_sym(c, n, &st)) return st; /* shape arithmetic */
    if (!strcmp(op, "Unsqueeze") && param_input(c, n, 0) >= 0) { /* a parameter seen through a view keeps its name */
        int p = param_input(c, n, 0);
        const int64_t *axes = NULL;
        size_t na = 0;
        int ai = n->n_inputs > 1 ? dp__onnx_find(c, n->inputs[1]) : -1;
        const dp__onnx_attr *at = dp__onnx_find_attr(n, "axes");
        if (ai >= 0 && c->v[ai].kind == V_CONST && c->v[ai].t->i) {
            axes = c->v[ai].t->i;
            na = c->v[ai].t->count;
        } else if (at && at->type == DP__ONNX_ATTR_INTS) {
            axes = at->ints;
            na = at->n;
        } else
            return dp__onnx_node_fail(c, n, "its axes must be constants");
        val x = c->v[p];
        x.name = n->outputs[0];
        const int rank = x.vnd + (int)na;
        if (rank > 8) return dp__onnx_node_fail(c, n, "gives more than 8 dimensions");
        unsigned char one[8] = {0};
        for (size_t j = 0; j < na; j++) {
            int64_t ax = axes[j] < 0 ? axes[j] + rank : axes[j];
            if (ax < 0 || ax >= rank || one[ax]) return dp__onnx_node_fail(c, n, "its axes are out of range or repeated");
            one[ax] = 1;
        }
        for (int d = 0, q = 0; d < rank; d++) x.vdims[d] = one[d] ? 1 : c->v[p].vdims[q++];
        x.vnd = rank;
        return dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    }
    if (!strcmp(op, "Transpose") && param_input(c, n, 0) >= 0) { /* W^T: nn.Linear's weight in a MatMul */
        int p = param_input(c, n, 0);
        const dp__onnx_attr *pa = dp__onnx_find_attr(n, "perm");
        if (c->v[p].vnd != 2 || (pa && (pa->type != DP__ONNX_ATTR_INTS || pa->n != 2 || pa->ints[0] != 1 || pa->ints[1] != 0)))
            return dp__onnx_node_fail(c, n, "only the transpose of a matrix parameter (perm [1, 0]) is supported");
        val x = c->v[p];
        x.name = n->outputs[0];
        x.ptrans = !x.ptrans;
        x.vdims[0] = c->v[p].vdims[1];
        x.vdims[1] = c->v[p].vdims[0];
        return dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    }
    /* from here on the first input is an activation (or GroupNorm's steps) */
    int a = n->n_inputs ? dp__onnx_find(c, n->inputs[0]) : -1;
    if (a < 0) return dp__onnx_node_fail(c, n, "its first input is unknown");
    int swap = 0; /* Add(bias, x), Mul(gamma, x): the activation second */
    if ((!strcmp(op, "Add") || !strcmp(op, "Mul")) && n->n_inputs == 2 && c->v[a].kind != V_ACT) {
        int i1 = dp__onnx_find(c, n->inputs[1]);
        if (i1 >= 0 && c->v[i1].kind == V_ACT) a = i1, swap = 1;
    }
    const int kind = c->v[a].kind;
    const int r = kind == V_ACT ? c->v[a].rank : -3;
    const int64_t *ld = c->v[a].ld;
    if (!strcmp(op, "Reshape")) {
        int s = n->n_inputs > 1 ? dp__onnx_find(c, n->inputs[1]) : -1;
        if (s < 0) return dp__onnx_node_fail(c, n, "its shape input is unknown");
        dp__sym sh[DP__SYM_MAX];
        int ns = 0;
        const int ints = dp__onnx_ints(c, s, sh, &ns);
        if (kind == V_ACT && r == 3 && ints && ns == 3 && sh[0].c0 == 0 && sh[0].c1 == 0 && sh[2].c0 == -1 &&
            sh[2].c1 == 0 && sh[1].c1 == 0 && sh[1].c0 >= 1) {
            /* GroupNorm's export, step 1: [C, H, W] -> [G, C/G H W] */
            if (sh[1].c0 > ld[1] || ld[1] % sh[1].c0)
                return dp__onnx_node_fail(c, n, "reshapes C channels into groups that do not divide C");
            int G = (int)sh[1].c0;
            val y = {.name = n->outputs[0], .kind = V_GN_RESHAPE, .node = a, .groups = G};
            return dp__onnx_add_val(c, y) < 0 ? DP_ERR_NOMEM : DP_OK;
        }
        if (kind == V_GN_NORM) {
            /* step 3: back to the shape of the input: one groupnorm (its affine parameters
             * are the Mul and Add that follow) */
            const val *x = &c->v[c->v[a].node];
            int same = ints && ns == x->nd;
            for (int j = 0; same && j < ns; j++)
                same = j == 0 ? sh[j].c0 == 0 && sh[j].c1 == 1 : sh[j].c1 == 0 && sh[j].c0 == x->ld[j];
            if (!same) return dp__onnx_node_fail(c, n, "GroupNorm's export must reshape back to the shape of its input");
            dp__node *l = dp__onnx_new_node(c, DP_LAYER_GROUPNORM, c->v[a].node);
            if (!l) return DP_ERR_NOMEM;
            l->groups = c->v[a].groups;
            l->eps = c->v[a].eps;
            l->plain = 1;
            snprintf(l->name, sizeof l->name, "%s", n->name);
            return dp__onnx_finish(c, l, n, 3);
        }
    }
    if (!strcmp(op, "InstanceNormalization")) {
        int sc = n->n_inputs > 1 ? dp__onnx_find(c, n->inputs[1]) : -1, bi = n->n_inputs > 2 ? dp__onnx_find(c, n->inputs[2]) : -1;
        if (kind == V_ACT && r == 3 && sc >= 0 && bi >= 0 && c->v[sc].kind == V_PARAM && c->v[bi].kind == V_PARAM) {
            /* nn.InstanceNorm2d(affine=True): a groupnorm with one group per channel */
            const dp__onnx_tensor *S = c->v[sc].t, *Bs = c->v[bi].t;
            if ((int64_t)S->count != ld[1] || (int64_t)Bs->count != ld[1] || S->ndim != 1 || Bs->ndim != 1)
                return dp__onnx_node_fail(c, n, "its scale and bias must be parameters of one value per channel");
            if ((st = dp__onnx_take_param(c, n, sc)) != DP_OK || (st = dp__onnx_take_param(c, n, bi)) != DP_OK) return st;
            float eps;
            if ((st = dp__onnx_epsilon(c, n, &eps)) != DP_OK) return st;
            dp__node *l = dp__onnx_new_node(c, DP_LAYER_GROUPNORM, a);
            if (!l) return DP_ERR_NOMEM;
            l->groups = (int)ld[1];
            l->eps = eps;
            dp__onnx_param_names(l, S, Bs, n);
            return dp__onnx_finish(c, l, n, 3);
        }
        if (kind != V_GN_RESHAPE)
            return dp__onnx_node_fail(c, n,
                                      "only on an image with scale and bias parameters (nn.InstanceNorm2d(affine=True)) "
                                      "or as part of GroupNorm's export (Reshape, InstanceNormalization, Reshape)");
        if (sc < 0 || bi < 0 || c->v[sc].kind != V_CONST || c->v[bi].kind != V_CONST || !c->v[sc].t->f || !c->v[bi].t->f ||
            (int)c->v[sc].t->count != c->v[a].groups || (int)c->v[bi].t->count != c->v[a].groups)
            return dp__onnx_node_fail(c, n, "its scale and bias must be constants, one per group");
        for (size_t j = 0; j < c->v[sc].t->count; j++)
            if (c->v[sc].t->f[j] != 1.0f || c->v[bi].t->f[j] != 0.0f)
                return dp__onnx_node_fail(
                    c, n, "its scale and bias must be 1 and 0 (GroupNorm's affine parameters follow as Mul and Add)");
        float eps;
        if ((st = dp__onnx_epsilon(c, n, &eps)) != DP_OK) return st;
        val y = {.name = n->outputs[0], .kind = V_GN_NORM, .node = c->v[a].node, .groups = c->v[a].groups, .eps = eps};
        return dp__onnx_add_val(c, y) < 0 ? DP_ERR_NOMEM : DP_OK;
    }
    if (kind == V_PARAM && !strcmp(op, "Gather")) { /* an embedding lookup */
        int ids = act_input(c, n, 1);
        if (ids < 0 || c->v[ids].node != -1 || !c->m->tokens || c->m->n != 0 || dp__onnx_attr_int(n, "axis", 0) != 0)
            return dp__onnx_node_fail(c, n, "a lookup in a parameter table must read the token ids of the graph input, first");
        const dp__onnx_tensor *w = c->v[a].t;
        if (w->ndim != 2 || c->v[a].ptrans) return dp__onnx_node_fail(c, n, "the table must be [vocabulary, dimension]");
        if ((st = dp__onnx_take_param(c, n, a)) != DP_OK) return st;
        dp__node *l = dp__push_node(c->m, DP_LAYER_EMBEDDING, -1);
        if (!l) return DP_ERR_NOMEM;
        l->vocab = (int)w->dims[0];
        l->oc = (int)w->dims[1];
        dp__onnx_param_names(l, w, NULL, n);
        return dp__onnx_finish(c, l, n, 2);
    }
    if (kind != V_ACT && (!strcmp(op, "Expand") || !strcmp(op, "Concat")) && dp__onnx_map_tensor(c, n, &st))
        return st; /* a learned token: a parameter expanded over the batch, then joined */
    if (kind != V_ACT) return dp__onnx_node_fail(c, n, "its first input must be an activation here");
    if (c->v[a].node < 0 && c->m->tokens)
        return dp__onnx_node_fail(c, n, "token ids can only be looked up in a parameter table (Gather, an embedding)");
    struct {
        const char *op;
        dp_layer_kind kind;
    } unary[] = {{"Relu", DP_LAYER_RELU}, {"Tanh", DP_LAYER_TANH}, {"Sigmoid", DP_LAYER_SIGMOID}};
    for (size_t u = 0; u < sizeof unary / sizeof unary[0]; u++)
        if (!strcmp(op, unary[u].op)) {
            dp__node *l = dp__onnx_new_node(c, unary[u].kind, a);
            if (!l) return DP_ERR_NOMEM;
            return dp__onnx_finish_like(c, l, n, &c->v[a], 0);
        }
    if (!strcmp(op, "Gemm")) {
        int w = param_input(c, n, 1), b = n->n_inputs > 2 ? param_input(c, n, 2) : -1;
        if (r != 1 && (r != -2 || c->v[a].nd != 2 || c->v[a].bax != 0))
            return dp__onnx_node_fail(c, n, "its input must be [batch, features] (or rows holding the batch)");
        if (w < 0)
            return dp__onnx_node_fail(
                c, n, "its second input must be a parameter (a matrix product of two activations is MatMul's)");
        if (n->n_inputs > 2 && n->inputs[2][0] && b < 0) return dp__onnx_node_fail(c, n, "its bias must be a parameter");
        if (dp__onnx_attr_int(n, "transA", 0) != 0) return dp__onnx_node_fail(c, n, "only transA = 0 is supported");
        const dp__onnx_attr *al = dp__onnx_find_attr(n, "alpha"), *be = dp__onnx_find_attr(n, "beta");
        if ((al && al->f != 1.0f) || (be && be->f != 1.0f)) return dp__onnx_node_fail(c, n, "alpha and beta must be 1");
        const dp__onnx_tensor *W = c->v[w].t, *Bt = b >= 0 ? c->v[b].t : NULL;
        /* y = x W^T (nn.Linear, W [out, in]) when exactly one of transB and a Transpose of W
         * is there; else y = x W, W stored [in, out] */
        const int wt = (dp__onnx_attr_int(n, "transB", 0) != 0) == (c->v[w].ptrans != 0);
        if (W->ndim != 2 || W->dims[!wt] != ld[c->v[a].nd - 1])
            return dp__onnx_node_fail(c, n, "its weight must be [out, in] (or [in, out]) with in = the input's features");
        const int64_t out = W->dims[wt];
        if (Bt && ((int64_t)Bt->count != out || (Bt->ndim == 2 && Bt->dims[1] != out) || Bt->ndim > 2))
            return dp__onnx_node_fail(c, n, "its bias must have one value per output ([out] or [1, out])");
        if ((st = dp__onnx_take_param(c, n, w)) == DP_OK && b >= 0) st = dp__onnx_take_param(c, n, b);
        if (st != DP_OK) return st;
        dp__node *l = dp__onnx_new_node(c, DP_LAYER_LINEAR, a);
        if (!l) return DP_ERR_NOMEM;
        l->oc = (int)out;
        l->has_bias = Bt != NULL;
        dp__onnx_param_names(l, W, Bt, n);
        l->wtrans = wt;
        return r == 1 ? dp__onnx_finish(c, l, n, 1) : dp__onnx_finish_like(c, l, n, &c->v[a], out);
    }
    if (!strcmp(op, "Conv")) {
        int w = param_input(c, n, 1), b = n->n_inputs > 2 ? param_input(c, n, 2) : -1;
        if (r != 3) return dp__onnx_node_fail(c, n, "its input must be an image [batch, C, H, W]");
        if (w < 0 || c->v[w].ptrans) return dp__onnx_node_fail(c, n, "its weight must be a parameter");
        if (n->n_inputs > 2 && n->inputs[2][0] && b < 0) return dp__onnx_node_fail(c, n, "its bias must be a parameter");
        const dp__onnx_tensor *W = c->v[w].t, *Bt = b >= 0 ? c->v[b].t : NULL;
        const int64_t G = dp__onnx_attr_int(n, "group", 1), d = attr_same(n, "dilations", 1, 2);
        if (G < 1 || G > ld[1] || ld[1] % G || (W->ndim == 4 && W->dims[0] % G))
            return dp__onnx_node_fail(c, n, "its group must divide its input and output channels");
        if (d < 1 || d > INT32_MAX) return dp__onnx_node_fail(c, n, "its dilations must be equal, 1 or more");
        int64_t k = attr_same(n, "kernel_shape", W->ndim == 4 ? W->dims[2] : -1, 2), s = attr_same(n, "strides", 1, 2);
        if (W->ndim != 4 || W->dims[1] != ld[1] / G || W->dims[2] != W->dims[3] || k != W->dims[2])
            return dp__onnx_node_fail(c, n, "its weight must be [out, C / group, K, K] (square kernels only, for now)");
        if (s < 1) return dp__onnx_node_fail(c, n, "its strides must be the same along both axes");
        if (s > INT32_MAX || k > INT32_MAX) return dp__onnx_node_fail(c, n, "its kernel or strides are too large");
        const int64_t ext = (k - 1) * d + 1; /* the dilated kernel's extent; below 2^62 */
        int64_t pads[4];
        if ((st = node_pads(c, n, ld, ext, s, pads)) != DP_OK) return st;
        if (Bt && (int64_t)Bt->count != W->dims[0])
            return dp__onnx_node_fail(c, n, "its bias must have one value per output channel");
        if ((st = dp__onnx_take_param(c, n, w)) == DP_OK && b >= 0) st = dp__onnx_take_param(c, n, b);
        if (st != DP_OK) return st;
        dp__node *l = dp__onnx_new_node(c, DP_LAYER_CONV2D, a);
        if (!l) return DP_ERR_NOMEM;
        l->oc = (int)W->dims[0];
        set_window(l, k, s, d, pads);
        l->groups = (int)G;
        l->has_bias = Bt != NULL;
        dp__onnx_param_names(l, W, Bt, n);
        return dp__onnx_finish(c, l, n, 3);
    }
    if (!strcmp(op, "MaxPool") || !strcmp(op, "AveragePool")) {
        if (r != 3) return dp__onnx_node_fail(c, n, "its input must be an image [batch, C, H, W]");
        const int maxp = op[0] == 'M';
        int64_t k = attr_same(n, "kernel_shape", -1, 2), s = attr_same(n, "strides", 1, 2), d = attr_same(n, "dilations", 1, 2);
        if (k < 1) return dp__onnx_node_fail(c, n, "its kernel must be square (kernel_shape [K, K])");
        if (s < 1) return dp__onnx_node_fail(c, n, "its strides must be equal");
        if (d < 1 || (!maxp && d != 1)) return dp__onnx_node_fail(c, n, maxp ? "its dilations must be equal, 1 or more"
                                                                            : "dilations are not supported");
        if (s > INT32_MAX || k > INT32_MAX || d > INT32_MAX) return dp__onnx_node_fail(c, n, "its kernel, strides or dilations are too large");
        int64_t cip = maxp ? 0 : dp__onnx_attr_int(n, "count_include_pad", 0), ceil_mode = dp__onnx_attr_int(n, "ceil_mode", 0);
        if (cip != 0 && cip != 1) return dp__onnx_node_fail(c, n, "count_include_pad must be 0 or 1");
        if (ceil_mode != 0 && ceil_mode != 1) return dp__onnx_node_fail(c, n, "ceil_mode must be 0 or 1");
        if (n->n_outputs > 1 && n->outputs[1][0]) return dp__onnx_node_fail(c, n, "its indices output is not supported");
        const int64_t ext = (k - 1) * d + 1; /* below 2^62 */
        int64_t pads[4];
        if ((st = node_pads(c, n, ld, ext, s, pads)) != DP_OK) return st;
        /* every window must hold a real position (one wholly in the padding has no maximum and
         * no mean of real values) */
        for (int ax = 0; ax < 2; ax++) {
            const int64_t in = ld[2 + ax], pa = pads[ax];
            const int out = dp__pool_out(in, pa, pads[2 + ax], ext, s, (int)ceil_mode);
            for (int64_t o = 0; o < out; o++) {
                /* the window's first tap at or after 0 (taps o s - pa + t d, t < k) must be in */
                const int64_t y0 = o * s - pa, t0 = y0 >= 0 ? 0 : (-y0 + d - 1) / d;
                if (t0 >= k || y0 + t0 * d >= in)
                    return dp__onnx_node_fail(c, n, "a window lies wholly in the padding (pads as large as the kernel)");
            }
        }
        dp__node *l = dp__onnx_new_node(c, maxp ? DP_LAYER_MAXPOOL : DP_LAYER_AVGPOOL, a);
        if (!l) return DP_ERR_NOMEM;
        set_window(l, k, s, d, pads);
        l->ceil_mode = (int)ceil_mode;
        l->excl_pad = !cip;
        return dp__onnx_finish(c, l, n, 3);
    }
    if (!strcmp(op, "GlobalAveragePool")) {
        if (r != 3) return dp__onnx_node_fail(c, n, "its input must be an image [batch, C, H, W]");
        dp__node *l = dp__onnx_new_node(c, DP_LAYER_GLOBALAVGPOOL, a);
        if (!l) return DP_ERR_NOMEM;
        return dp__onnx_finish(c, l, n, 3);
    }
    if (!strcmp(op, "Flatten") && r >= 1) {
        int64_t axis = dp__onnx_attr_int(n, "axis", 1);
        if (axis < 0) axis += r + 1; /* counted from the end of [batch, ...] */
        if (axis == 1) {
            dp__node *l = dp__onnx_new_node(c, DP_LAYER_FLATTEN, a);
            if (!l) return DP_ERR_NOMEM;
            return dp__onnx_finish(c, l, n, 1);
        }
    }
    if (!strcmp(op, "ReduceMean") && r == 2) {
        const dp__onnx_attr *ax = dp__onnx_find_attr(n, "axes");
        if (ax && ax->type == DP__ONNX_ATTR_INTS && ax->n == 1 && ax->ints[0] == 1 && n->n_inputs == 1 &&
            dp__onnx_attr_int(n, "keepdims", 1) == 0) { /* the mean over the tokens of a sequence */
            dp__node *l = dp__onnx_new_node(c, DP_LAYER_MEANPOOL, a);
            if (!l) return DP_ERR_NOMEM;
            return dp__onnx_finish(c, l, n, 1);
        }
    }
    if ((!strcmp(op, "Add") || !strcmp(op, "Mul")) && n->n_inputs == 2) {
        int other = dp__onnx_find(c, n->inputs[!swap]);
        if (other < 0) return dp__onnx_node_fail(c, n, "its second input is unknown");
        const val *o = &c->v[other];
        if (op[0] == 'A' && o->kind == V_ACT && o->nd == c->v[a].nd && o->bax == c->v[a].bax && o->bp == c->v[a].bp &&
            o->bm == c->v[a].bm && !memcmp(o->ld, ld, sizeof(int64_t) * (size_t)o->nd) && o->rank != -1 &&
            r != -1) { /* a residual join: the same shape */
            dp__node *l = dp__onnx_new_node(c, DP_LAYER_ADD, a);
            if (!l) return DP_ERR_NOMEM;
            l->in[1] = o->node;
            l->nin = 2;
            return dp__onnx_finish_like(c, l, n, &c->v[a], 0);
        }
        if (o->kind == V_PARAM && (r >= 1 || (r == -2 && c->v[a].bax != c->v[a].nd - 1)) &&
            per_channel(o, r == 3 ? ld[1] : ld[c->v[a].nd - 1], r == 3 ? 3 : 1)) {
            if ((st = dp__onnx_take_param(c, n, other)) != DP_OK) return st;
            dp__node *p = c->v[a].node >= 0 && c->v[a].node == c->m->n - 1 ? &c->m->L[c->v[a].node] : NULL;
            int first;
            if (op[0] == 'A' && r != 3 && p && p->kind == DP_LAYER_LINEAR && !p->has_bias && !p->nb &&
                dp__onnx_readers(c->g, c->v[a].name, &first) == 1) {
                /* MatMul then Add(bias): the bias joins the linear layer (the last node, so its
                 * parameters are the last block) */
                p->has_bias = 1;
                p->nb = (size_t)p->oc;
                p->b_off = c->m->np;
                c->m->np += p->nb;
                c->m->ntensors++;
                snprintf(p->bname, sizeof p->bname, "%s", o->t->name);
                val y = c->v[a];
                y.name = n->outputs[0];
                return dp__onnx_add_val(c, y) < 0 ? DP_ERR_NOMEM : DP_OK;
            }
            dp__node *l = dp__onnx_new_node(c, op[0] == 'A' ? DP_LAYER_BIAS : DP_LAYER_SCALE, a);
            if (!l) return DP_ERR_NOMEM;
            snprintf(l->wname, sizeof l->wname, "%s", o->t->name);
            dp__onnx_param_names(l, o->t, NULL, n);
            return dp__onnx_finish_like(c, l, n, &c->v[a], 0);
        }
    }
    if (dp__onnx_map_tensor(c, n, &st)) return st;
    char why[1024];
    snprintf(why, sizeof why, "operator not supported (supported: %s)", SUPPORTED);
    return dp__onnx_node_fail(c, n, why);
}
