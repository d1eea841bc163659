/* nn/onnx_ops.c: the general tensor operators of the ONNX importer (onnx_map.h explains the
 * logical and physical shapes): Reshape, Flatten, Squeeze, Unsqueeze, Transpose, MatMul (with
 * a parameter: a linear layer on rows; of two activations: batched products), Softmax,
 * LogSoftmax, element-wise functions, Add/Sub/Mul/Div/Pow with broadcasting, Slice, Split,
 * Gather with constant indices, Concat, ReduceMean, ReduceSum, LayerNormalization, Cast. An
 * axis that holds the batch may be moved and merged, never reduced, sliced or mixed: such a
 * node is refused with the reason. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nn/onnx_map.h"

typedef dp__oval val;
typedef dp__octx ctx;

#define FAIL(why) (*st = dp__onnx_node_fail(c, n, why), 1)

static int64_t prod(const int *d, int from, int to) {
    int64_t p = 1;
    for (int j = from; j < to; j++) p *= d[j];
    return p;
}

/* a value with the shape x under output name `name`, made by no node (a view) */
static int put_view(ctx *c, const char *name, val x, dp_status *st) {
    x.name = name;
    dp__onnx_set_rank(&x);
    *st = dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    return 1;
}

/* the output fields of a general node from the physical dims of its output shape */
static void out_fields(dp__node *l, const val *shape) {
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(shape, pd, first);
    l->oc = np > 0 ? pd[np - 1] : 1;
    l->oh = (int)prod(pd, 0, np > 0 ? np - 1 : 0);
    l->ow = 1;
    l->seq = np >= 2;
}

static int finish_gen(ctx *c, dp__node *l, const dp__onnx_node *n, const val *shape, dp_status *st) {
    out_fields(l, shape);
    if (!l->name[0]) snprintf(l->name, sizeof l->name, "%s", n->name); /* a parameter's layer keeps its module name */
    *st = dp__onnx_finish_like(c, l, n, shape, 0);
    return 1;
}

static int axis_of(int64_t a, int nd) { return (int)(a < 0 ? a + nd : a); }

/* the values of an ints attribute or (opset >= 13) of constant input j: 1 when found */
static int ints_arg(const ctx *c, const dp__onnx_node *n, const char *attr, int j, int64_t *out, int *no) {
    const dp__onnx_attr *a = dp__onnx_find_attr(n, attr);
    if (a && a->type == DP__ONNX_ATTR_INTS && a->n <= DP__SYM_MAX) {
        for (size_t k = 0; k < a->n; k++) out[k] = a->ints[k];
        *no = (int)a->n;
        return 1;
    }
    dp__sym s[DP__SYM_MAX];
    if (j < n->n_inputs && n->inputs[j][0] && dp__onnx_ints(c, dp__onnx_find(c, n->inputs[j]), s, no)) {
        for (int k = 0; k < *no; k++) {
            if (s[k].c1) return 0;
            out[k] = s[k].c0;
        }
        return 1;
    }
    return 0;
}

/* ---- Reshape: find the output axis that holds the batch ------------------------------------- */

/* Does output axis j of S (ns fixed values, S[j] the batch axis's factor f) keep the values
 * outer (O) and inner (I) to the batch? Sets the factors bp, bm. */
static int batch_axis_ok(const int64_t *S, int ns, int j, int64_t f, int64_t O, int64_t I, int64_t *bp, int64_t *bm) {
    int64_t pre = 1, post = 1;
    for (int k = 0; k < j; k++) pre *= S[k];
    for (int k = j + 1; k < ns; k++) post *= S[k];
    if (pre <= 0 || post <= 0 || O % pre) return 0;
    int64_t p = O / pre;
    if (p <= 0 || f % p) return 0;
    int64_t m = f / p;
    if (m * post != I) return 0;
    *bp = p, *bm = m;
    return 1;
}

static int reshape_to(ctx *c, const dp__onnx_node *n, int a, const dp__sym *S0, int ns, int allowzero, dp_status *st) {
    const val *v = &c->v[a];
    if (v->rank == -1 || ns < 1 || ns > 8) return FAIL("reshapes a value whose layout is not known, or to more than 8 axes");
    int64_t O = v->bp, I = v->bm;
    for (int k = 0; k < v->bax; k++) O *= v->ld[k];
    for (int k = v->bax + 1; k < v->nd; k++) I *= v->ld[k];
    dp__sym S[DP__SYM_MAX];
    int neg = -1, bat = -1;
    for (int j = 0; j < ns; j++) {
        S[j] = S0[j];
        if (S[j].c0 == 0 && S[j].c1 == 0 && !allowzero) { /* copy the input's dim */
            if (j >= v->nd) return FAIL("its shape has a 0 past the input's axes");
            S[j] = j == v->bax ? (dp__sym){0, v->bp * v->bm} : (dp__sym){v->ld[j], 0};
        }
        if (S[j].c0 > INT32_MAX || S[j].c1 > INT32_MAX || S[j].c1 < 0) return FAIL("its shape has a dimension too large");
        if (S[j].c1) {
            if (bat >= 0 || S[j].c0) return FAIL("its shape has the batch size in more than one place");
            bat = j;
        } else if (S[j].c0 == -1) {
            if (neg >= 0) return FAIL("its shape has more than one -1");
            neg = j;
        } else if (S[j].c0 < 1)
            return FAIL("its shape has a dimension below 1");
    }
    int64_t fixed[8], known = 1;
    for (int j = 0; j < ns; j++) {
        fixed[j] = S[j].c1 ? S[j].c1 : S[j].c0;
        if (j != neg && __builtin_mul_overflow(known, fixed[j], &known)) return FAIL("its shape is too large");
    }
    if (known > (int64_t)INT32_MAX * 64) return FAIL("its shape is too large");
    val x = *v;
    x.nd = ns;
    /* Where is the batch? Every reading of the target that keeps the values outer and inner
     * to it: the symbolic entry; else the -1 (it holds what is left); else (and besides the -1) an
     * entry with the export's batch size written in, when the graph input fixes one. */
    int found = 0;
    int64_t best[8];
    for (int j = bat >= 0 ? bat : 0; j < (bat >= 0 ? bat + 1 : ns); j++)
        for (int lit = 0; lit < 2; lit++) {
            const int64_t b0 = lit ? c->batch0 : 1;
            if (bat >= 0 ? lit : lit ? (b0 <= 0 || j == neg || fixed[j] % b0) : j != neg) continue;
            int64_t f[8], k = 1, bp, bm;
            memcpy(f, fixed, sizeof f);
            if (lit) f[j] /= b0;
            for (int q = 0; q < ns; q++)
                if (q != neg) k *= f[q];
            if (neg >= 0) { /* -1: what is left */
                if (k <= 0 || (O * I) % k) continue;
                f[neg] = O * I / k;
            } else if (k != O * I)
                continue;
            if (!batch_axis_ok(f, ns, j, f[j], O, I, &bp, &bm)) continue;
            if (found++) continue;
            x.bax = j, x.bp = bp, x.bm = bm;
            memcpy(best, f, sizeof best);
        }
    if (found > 1)
        return FAIL("its shape is fixed and could put the batch on several axes: export with a dynamic batch "
                    "(dynamic_axes={'input': {0: 'batch'}})");
    if (found != 1)
        return FAIL("this reshape would mix values of different samples (the batch axis must keep the values "
                    "outer and inner to it)");
    memcpy(fixed, best, sizeof best);
    for (int j = 0; j < ns; j++) x.ld[j] = j == x.bax ? x.bp * x.bm : fixed[j];
    return put_view(c, n->outputs[0], x, st);
}

static int sym_prod(const val *v, int from, int to, dp__sym *out) {
    dp__sym p = {1, 0};
    for (int k = from; k < to; k++) p = k == v->bax ? (dp__sym){0, p.c0 * v->bp * v->bm} : (dp__sym){p.c0 * v->ld[k], p.c1 * v->ld[k]};
    *out = p;
    return 1;
}

/* ---- Transpose ------------------------------------------------------------------------------ */

static int transpose(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    const val *v = &c->v[a];
    int perm[8], pd[DP__TMAXD], first[9];
    const dp__onnx_attr *pa = dp__onnx_find_attr(n, "perm");
    if (pa && (pa->type != DP__ONNX_ATTR_INTS || (int)pa->n != v->nd)) return FAIL("its perm must list every axis");
    unsigned seen = 0;
    for (int j = 0; j < v->nd; j++) {
        perm[j] = pa ? axis_of(pa->ints[j], v->nd) : v->nd - 1 - j;
        if (perm[j] < 0 || perm[j] >= v->nd || (seen >> perm[j] & 1u)) return FAIL("its perm is not a permutation");
        seen |= 1u << perm[j];
    }
    int np = dp__onnx_phys(v, pd, first);
    if (np < 0) return FAIL("has more than 8 axes");
    val x = *v;
    int pp[DP__TMAXD], q = 0, moved = 0;
    for (int j = 0; j < v->nd; j++) {
        x.ld[j] = v->ld[perm[j]];
        if (perm[j] == v->bax) x.bax = j;
        for (int k = first[perm[j]]; k < first[perm[j] + 1]; k++) {
            moved |= k != q;
            pp[q++] = k;
        }
    }
    if (!moved) return put_view(c, n->outputs[0], x, st); /* only the batch or 1s moved */
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_TRANSPOSE, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    l->tnd = np;
    memcpy(l->tdim, pd, sizeof(int) * (size_t)np);
    memcpy(l->tperm, pp, sizeof(int) * (size_t)np);
    return finish_gen(c, l, n, &x, st);
}

/* ---- MatMul ------------------------------------------------------------------------------- */

static int matmul(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    const val *v = &c->v[a];
    int b = n->n_inputs == 2 ? dp__onnx_find(c, n->inputs[1]) : -1;
    if (b < 0) return FAIL("needs two inputs");
    const val *w = &c->v[b];
    if (v->nd < 2 || v->bax == v->nd - 1 || v->rank == -1) return FAIL("its first input's last axis must not hold the batch");
    const int64_t K = v->ld[v->nd - 1];
    if (w->kind == V_PARAM) { /* x W^T with W [out, in]: nn.Linear's weight, its name kept */
        if (w->vnd != 2) return FAIL("a parameter multiplied from the right must be a matrix");
        if (w->vdims[0] != K) return FAIL("its weight's input size is not the input's last dimension");
        if ((*st = dp__onnx_take_param(c, n, b)) != DP_OK) return 1;
        dp__node *l = dp__onnx_new_node(c, DP_LAYER_LINEAR, a);
        if (!l) return *st = DP_ERR_NOMEM, 1;
        if (v->rank != 1 && v->rank != 2) dp__onnx_view_rows(l, v);
        l->oc = (int)w->vdims[1];
        dp__onnx_param_names(l, w->t, NULL, n);
        l->wtrans = !w->ptrans; /* x W with W stored [in, out] (constant folding's copy of nn.Linear's) */
        *st = v->rank == 1 ? dp__onnx_finish(c, l, n, 1) : dp__onnx_finish_like(c, l, n, v, w->vdims[1]);
        return 1;
    }
    if (w->kind != V_ACT) return FAIL("its second input must be a parameter or an activation");
    if (w->nd != v->nd || w->bax != v->bax || w->bp != v->bp || w->bm != v->bm || v->bax >= v->nd - 2)
        return FAIL("multiplies activations whose batch axes differ or lie in the matrix axes");
    for (int j = 0; j < v->nd - 2; j++)
        if (j != v->bax && w->ld[j] != v->ld[j]) return FAIL("broadcasting the leading axes of a product is not supported");
    if (w->ld[w->nd - 2] != K) return FAIL("its inputs' inner dimensions differ");
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(v, pd, first);
    if (np < 2) return FAIL("has more than 8 axes");
    val x = *v;
    x.ld[x.nd - 1] = w->ld[w->nd - 1];
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_MATMUL, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    l->in[1] = w->node;
    l->nin = 2;
    l->mg = (int)prod(pd, 0, np - 2);
    l->mm = pd[np - 2];
    l->mk = (int)K;
    l->mn = (int)x.ld[x.nd - 1];
    l->mga = l->mgb = 1;
    return finish_gen(c, l, n, &x, st);
}

/* ---- element-wise ---------------------------------------------------------------------------- */

static int unary(ctx *c, const dp__onnx_node *n, int a, int op, dp_status *st) {
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_UNARY, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    l->op = op;
    const dp__onnx_attr *al = dp__onnx_find_attr(n, "alpha");
    l->p = op == DP__UN_LEAKY ? (al && al->type == DP__ONNX_ATTR_FLOAT ? al->f : 0.01f) : 0;
    snprintf(l->name, sizeof l->name, "%s", n->name);
    *st = dp__onnx_finish_like(c, l, n, &c->v[a], 0);
    return 1;
}

/* strides of operand o (logical shape od[ond], its physical dims from its own layout) along the
 * physical dims of the output shape x; 0 on broadcast axes */
static int operand_strides(const val *x, const val *o, int *s) {
    int xd[DP__TMAXD], xf[9], od[DP__TMAXD], of[9];
    int nx = dp__onnx_phys(x, xd, xf), no = dp__onnx_phys(o, od, of);
    if (nx < 0 || no < 0) return 0;
    int os[DP__TMAXD];
    for (int k = no - 1, m = 1; k >= 0; k--) {
        os[k] = m;
        m *= od[k];
    }
    const int shift = x->nd - o->nd;
    for (int i = 0; i < x->nd; i++) {
        const int io = i - shift;
        const int bcast = io < 0 || (o->ld[io] == 1 && x->ld[i] != 1 && i != x->bax) ||
                          of[io + 1] - of[io] != xf[i + 1] - xf[i]; /* a constant along the batch */
        for (int k = xf[i]; k < xf[i + 1]; k++) s[k] = bcast ? 0 : os[of[io] + (k - xf[i])];
    }
    return nx;
}

static const char *const bin_names[] = {
#define DP__S(e, s) s,
    DP__BINARY_LIST(DP__S)
#undef DP__S
};

static int binary(ctx *c, const dp__onnx_node *n, int op, dp_status *st) {
    if (n->n_inputs != 2) return FAIL("needs two inputs");
    int i0 = dp__onnx_find(c, n->inputs[0]), i1 = dp__onnx_find(c, n->inputs[1]);
    if (i0 < 0 || i1 < 0) return FAIL("an input is unknown");
    const int act0 = c->v[i0].kind == V_ACT, act1 = c->v[i1].kind == V_ACT;
    if (!act0 && !act1) return FAIL("needs an activation among its inputs");
    const int a = act0 ? i0 : i1, o = act0 ? i1 : i0;
    const val *v = &c->v[a], *w = &c->v[o];
    if (v->rank == -1 || (w->kind == V_ACT && w->rank == -1)) return FAIL("its inputs' layouts are not known");
    if (w->kind == V_PARAM) {
        /* a parameter of the whole per-sample shape added: a learned position embedding */
        int d = 0;
        while (d < w->vnd && w->vdims[d] == 1 && w->vnd - d > v->nd - 1) d++;
        int whole = op == DP__BIN_ADD && !w->ptrans && v->bax == 0 && v->bp == 1 && v->bm == 1 && w->vnd - d == v->nd - 1;
        for (int j = 1; whole && j < v->nd; j++) whole = w->vdims[d + j - 1] == v->ld[j];
        if (!whole)
            return FAIL("a parameter here must be one value per channel (a scale or a bias) or, added, one value per "
                        "position of the input (a position embedding)");
        if ((*st = dp__onnx_take_param(c, n, o)) != DP_OK) return 1;
        dp__node *l = dp__onnx_new_node(c, DP_LAYER_POSEMBED, a);
        if (!l) return *st = DP_ERR_NOMEM, 1;
        if (v->rank != 2) dp__onnx_view_rows(l, v);
        dp__onnx_param_names(l, w->t, NULL, n);
        *st = dp__onnx_finish_like(c, l, n, v, 0);
        return 1;
    }
    val x = *v; /* the output shape: the broadcast of the two */
    if (w->kind == V_ACT) {
        if (w->bp != v->bp || w->bm != v->bm || w->bax - w->nd != v->bax - v->nd)
            return FAIL("combines activations whose batch axes differ");
        const val *big = w->nd > v->nd ? w : v, *sm = w->nd > v->nd ? v : w;
        x = *big;
        for (int j = 0; j < sm->nd; j++) {
            int jb = j + big->nd - sm->nd;
            if (jb == x.bax) continue;
            if (sm->ld[j] != big->ld[jb] && sm->ld[j] != 1 && big->ld[jb] != 1) return FAIL("its inputs' shapes do not broadcast");
            if (sm->ld[j] > x.ld[jb]) x.ld[jb] = sm->ld[j];
        }
    } else {
        const dp__onnx_tensor *t = w->t;
        if (w->kind != V_CONST || (!t->f && !t->i) || t->count == 0) return FAIL("its other input must be a number tensor");
        int d = 0;
        while (t->ndim - d > v->nd && t->dims[d] == 1) d++;
        if (t->ndim - d > v->nd) return FAIL("its constant has more axes than the activation");
        for (int j = d; j < t->ndim; j++) {
            int jv = j - t->ndim + v->nd;
            if (t->dims[j] != 1 && (jv == v->bax || t->dims[j] != v->ld[jv]))
                return FAIL("its constant must broadcast to the activation and be one value along the batch");
        }
    }
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(&x, pd, first);
    if (np < 0) return FAIL("has more than 8 axes");
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_BINARY, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    l->op = op;
    l->tnd = np;
    memcpy(l->tdim, pd, sizeof(int) * (size_t)np);
    if (w->kind == V_ACT) {
        l->cside = -1;
        l->in[0] = c->v[i0].node;
        l->in[1] = c->v[i1].node;
        l->nin = 2;
        operand_strides(&x, &c->v[i0], l->tsa);
        operand_strides(&x, &c->v[i1], l->tsb);
    } else {
        const dp__onnx_tensor *t = w->t;
        l->cside = act0 ? 1 : 0;
        l->cst = dp_alloc(sizeof(float) * t->count);
        if (!l->cst) return *st = DP_ERR_NOMEM, 1;
        l->ncst = t->count;
        for (size_t j = 0; j < t->count; j++) l->cst[j] = t->f ? t->f[j] : (float)t->i[j];
        val cv = x; /* the constant as a value of x's rank: 1 along the batch */
        for (int j = 0; j < x.nd; j++) {
            int jt = j - x.nd + t->ndim;
            cv.ld[j] = jt < 0 || j == x.bax ? 1 : t->dims[jt];
        }
        cv.bp = cv.bm = 1;
        int *cs = act0 ? l->tsb : l->tsa, *as = act0 ? l->tsa : l->tsb;
        operand_strides(&x, &cv, cs);
        for (int k = first[x.bax]; k < first[x.bax + 1]; k++) cs[k] = 0;
        operand_strides(&x, v, as);
    }
    char nm[DP__NAME_LEN];
    snprintf(nm, sizeof nm, "%s", n->name[0] ? n->name : bin_names[op]);
    snprintf(l->name, sizeof l->name, "%s", nm);
    out_fields(l, &x);
    *st = dp__onnx_finish_like(c, l, n, &x, 0);
    return 1;
}

/* ---- slices ------------------------------------------------------------------------------- */

/* one SLICE node of value a along logical axis ax: count values from start by step; the new
 * value is named name (drop: the axis is removed, a Gather's scalar index) */
static int slice_axis(ctx *c, const dp__onnx_node *n, int a, int ax, int64_t start, int64_t count, int64_t step,
                      const char *name, int drop, dp_status *st) {
    const val *v = &c->v[a];
    if (ax < 0 || ax >= v->nd) return FAIL("its axis is out of range");
    if (ax == v->bax) return FAIL("slices along the batch axis (that would mix or drop samples)");
    if (count < 1) return FAIL("gives an empty tensor");
    const int64_t last = start + (count - 1) * step;
    if (start < 0 || start >= v->ld[ax] || last < 0 || last >= v->ld[ax] || count > v->ld[ax])
        return FAIL("reads past the end of its axis");
    val x = *v;
    x.ld[ax] = count;
    if (drop) {
        for (int j = ax; j + 1 < x.nd; j++) x.ld[j] = x.ld[j + 1];
        x.nd--;
        if (x.bax > ax) x.bax--;
    }
    if (count == v->ld[ax] && step == 1) return put_view(c, name, x, st);
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(v, pd, first);
    if (np < 0) return FAIL("has more than 8 axes");
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_SLICE, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    const int k = first[ax];
    l->touter = (size_t)prod(pd, 0, k);
    l->tinner = (size_t)prod(pd, k + 1, np);
    l->tn = pd[k];
    l->tstart = (int)start;
    l->tcount = (int)count;
    l->tstep = (int)step;
    snprintf(l->name, sizeof l->name, "%s", n->name);
    out_fields(l, &x);
    dp__onnx_node fake = *n;
    const char *outs[1] = {name};
    fake.outputs = outs;
    *st = dp__onnx_finish_like(c, l, &fake, &x, 0);
    return 1;
}

static int slice(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    int64_t s[8], e[8], ax[8], sp[8];
    int ns = 0, ne = 0, na = 0, nsp = 0;
    if (!ints_arg(c, n, "starts", 1, s, &ns) || !ints_arg(c, n, "ends", 2, e, &ne) || ns != ne)
        return FAIL("its starts and ends must be constants of one length");
    if (!ints_arg(c, n, "axes", 3, ax, &na)) {
        na = ns;
        for (int j = 0; j < na; j++) ax[j] = j;
    }
    if (!ints_arg(c, n, "steps", 4, sp, &nsp)) {
        nsp = ns;
        for (int j = 0; j < nsp; j++) sp[j] = 1;
    }
    if (na != ns || nsp != ns) return FAIL("its starts, ends, axes and steps differ in length");
    int cur = a;
    for (int j = 0; j < ns; j++) {
        const int nd = c->v[cur].nd, axis = axis_of(ax[j], nd);
        if (axis < 0 || axis >= nd) return FAIL("its axis is out of range");
        const int64_t dim = c->v[cur].ld[axis], step = sp[j];
        if (step == 0) return FAIL("its step is 0");
        int64_t b = s[j] < 0 ? s[j] + dim : s[j], en = e[j] < 0 ? e[j] + dim : e[j], cnt;
        if (step > 0) {
            b = b < 0 ? 0 : b > dim ? dim : b;
            en = en < 0 ? 0 : en > dim ? dim : en;
            cnt = en > b ? (en - b + step - 1) / step : 0;
        } else {
            b = b < 0 ? 0 : b > dim - 1 ? dim - 1 : b;
            en = en < -1 ? -1 : en > dim - 1 ? dim - 1 : en;
            cnt = b > en ? (b - en - step - 1) / -step : 0;
        }
        if (slice_axis(c, n, cur, axis, b, cnt, step, n->outputs[0], 0, st) && *st != DP_OK) return 1;
        cur = c->nv - 1;
    }
    if (ns == 0) return put_view(c, n->outputs[0], c->v[a], st);
    return 1;
}

static int split(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    const val *v = &c->v[a];
    const int axis = axis_of(dp__onnx_attr_int(n, "axis", 0), v->nd);
    if (axis < 0 || axis >= v->nd) return FAIL("its axis is out of range");
    int64_t sz[8];
    int nz = 0;
    if (!ints_arg(c, n, "split", 1, sz, &nz)) {
        nz = n->n_outputs;
        if (nz > 8 || v->ld[axis] % nz) return FAIL("splits an axis into parts that do not divide it (give split)");
        for (int j = 0; j < nz; j++) sz[j] = v->ld[axis] / nz;
    }
    if (nz != n->n_outputs) return FAIL("its split sizes do not match its outputs");
    int64_t tot = 0;
    for (int j = 0; j < nz; j++) {
        if (sz[j] < 1 || sz[j] > v->ld[axis]) return FAIL("its split sizes do not add up to the axis");
        tot += sz[j];
    }
    if (tot != v->ld[axis]) return FAIL("its split sizes do not add up to the axis");
    int64_t at = 0;
    for (int j = 0; j < nz; j++) {
        if (slice_axis(c, n, a, axis, at, sz[j], 1, n->outputs[j], 0, st) && *st != DP_OK) return 1;
        at += sz[j];
    }
    if (at != v->ld[axis]) return FAIL("its split sizes do not add up to the axis");
    return 1;
}

static int gather(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    const val *v = &c->v[a];
    dp__sym idx[DP__SYM_MAX];
    int ni = 0;
    int iv = n->n_inputs > 1 ? dp__onnx_find(c, n->inputs[1]) : -1;
    if (!dp__onnx_ints(c, iv, idx, &ni) || ni < 1)
        return FAIL("only a lookup in a parameter table (an embedding) or constant indices are supported");
    const int axis = axis_of(dp__onnx_attr_int(n, "axis", 0), v->nd);
    if (axis < 0 || axis >= v->nd) return FAIL("its axis is out of range");
    int64_t first = idx[0].c0 < 0 ? idx[0].c0 + v->ld[axis] : idx[0].c0;
    for (int j = 0; j < ni; j++) {
        int64_t k = idx[j].c0 < 0 ? idx[j].c0 + v->ld[axis] : idx[j].c0;
        if (idx[j].c1 || k != first + j || k < 0 || k >= v->ld[axis])
            return FAIL("its indices must be constant, in range and consecutive");
    }
    const int scalar = c->v[iv].kind == V_CONST ? c->v[iv].t->ndim == 0 : c->v[iv].sscalar;
    return slice_axis(c, n, a, axis, first, ni, 1, n->outputs[0], scalar, st);
}

/* Expand of a parameter over the batch (ViT's class token: cls.expand(B, -1, -1)), or of an
 * activation to its own shape */
static int expand(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    dp__sym sh[DP__SYM_MAX];
    int ns = 0;
    if (a < 0 || n->n_inputs != 2 || !dp__onnx_ints(c, dp__onnx_find(c, n->inputs[1]), sh, &ns))
        return FAIL("its input must be known and its shape a constant or folded from shapes");
    val x = c->v[a];
    if (x.kind == V_ACT) {
        int same = ns <= x.nd;
        for (int j = 0; same && j < ns; j++) {
            int jx = j + x.nd - ns;
            same = jx == x.bax ? (sh[j].c0 == 0 && sh[j].c1 == x.bp * x.bm) || (sh[j].c0 == 1 && !sh[j].c1)
                               : !sh[j].c1 && (sh[j].c0 == 1 || sh[j].c0 == x.ld[jx]);
        }
        if (!same) return FAIL("only an expand of an activation to its own shape is supported");
        return put_view(c, n->outputs[0], x, st);
    }
    if (x.kind != V_PARAM || x.ptrans || x.bexp || ns < x.vnd || ns > 8)
        return FAIL("only a parameter expanded over the batch (a learned token) or an activation is supported");
    int bax = -1;
    int64_t d[8];
    for (int j = 0; j < ns; j++) {
        int jp = j - (ns - x.vnd);
        int64_t pd = jp >= 0 ? x.vdims[jp] : 1;
        if (sh[j].c1) {
            if (bax >= 0 || sh[j].c0 || sh[j].c1 != 1 || pd != 1) return FAIL("expands a parameter over the batch oddly");
            bax = j;
            d[j] = 1;
        } else {
            if (sh[j].c0 != 1 && pd != 1 && sh[j].c0 != pd) return FAIL("its shape does not broadcast");
            d[j] = pd == 1 ? sh[j].c0 : pd;
            if (d[j] != pd) return FAIL("expands a parameter along an axis other than the batch");
        }
    }
    if (bax < 0) return FAIL("expands a parameter without the batch (it would be used as a constant)");
    x.name = n->outputs[0];
    x.bexp = 1;
    x.bax = bax;
    x.vnd = ns;
    memcpy(x.vdims, d, sizeof(int64_t) * (size_t)ns);
    *st = dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    return 1;
}

/* Concat of activations along an axis that is not the batch; one input may be a parameter
 * expanded over the batch (a learned token), trained as the node's weight */
static int concat(ctx *c, const dp__onnx_node *n, dp_status *st) {
    if (n->n_inputs < 1 || n->n_inputs > 3) return FAIL("concatenates more than 3 tensors");
    int in[3], a = -1, pi = -1;
    for (int j = 0; j < n->n_inputs; j++) {
        in[j] = dp__onnx_find(c, n->inputs[j]);
        if (in[j] < 0) return FAIL("an input is unknown");
        if (c->v[in[j]].kind == V_ACT && a < 0) a = in[j];
        else if (c->v[in[j]].kind == V_PARAM && c->v[in[j]].bexp && pi < 0) pi = j;
        else if (c->v[in[j]].kind != V_ACT)
            return FAIL("concatenates something that is not an activation or a parameter expanded over the batch");
    }
    if (a < 0) return 0; /* shape values: not here */
    const val *v = &c->v[a];
    if (v->rank == -1) return FAIL("needs the shape of a value whose layout is not known");
    const int axis = axis_of(dp__onnx_attr_int(n, "axis", 0), v->nd);
    if (axis < 0 || axis >= v->nd || axis == v->bax) return FAIL("concatenates along the batch axis or out of range");
    val x = *v;
    x.ld[axis] = 0;
    for (int j = 0; j < n->n_inputs; j++) {
        const val *w = &c->v[in[j]];
        const int64_t *wd = j == pi ? w->vdims : w->ld;
        int wn = j == pi ? w->vnd : w->nd;
        if (wn != v->nd || w->bax != v->bax || (j == pi ? v->bp * v->bm != 1 : w->bp != v->bp || w->bm != v->bm))
            return FAIL("its inputs' shapes differ");
        for (int k = 0; k < v->nd; k++)
            if (k != axis && k != v->bax && wd[k] != v->ld[k]) return FAIL("its inputs' shapes differ off the axis");
        x.ld[axis] += wd[axis];
    }
    if (n->n_inputs == 1) return put_view(c, n->outputs[0], *v, st);
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(&x, pd, first);
    if (np < 0) return FAIL("has more than 8 axes");
    if (pi >= 0 && (*st = dp__onnx_take_param(c, n, in[pi])) != DP_OK) return 1;
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_CONCAT, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    l->nin = 0;
    for (int j = 0; j < n->n_inputs; j++)
        if (j != pi) l->in[l->nin++] = c->v[in[j]].node;
    const int k = first[axis];
    l->touter = (size_t)prod(pd, 0, k);
    l->tinner = (size_t)prod(pd, k + 1, np);
    l->tn = pd[k];
    l->cside = pi;
    if (pi >= 0) {
        l->nw = c->v[in[pi]].t->count;
        dp__onnx_param_names(l, c->v[in[pi]].t, NULL, n);
    }
    return finish_gen(c, l, n, &x, st);
}

/* ---- reductions and normalisation ----------------------------------------------------------- */

static int reduce(ctx *c, const dp__onnx_node *n, int a, int mean, dp_status *st) {
    const val *v = &c->v[a];
    int64_t ax[8];
    int na = 0;
    if (!ints_arg(c, n, "axes", 1, ax, &na) || na == 0)
        return FAIL("reduces over every axis, the batch too (give axes)");
    const int keep = (int)dp__onnx_attr_int(n, "keepdims", 1);
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(v, pd, first);
    if (np < 0) return FAIL("has more than 8 axes");
    unsigned mask = 0, pmask = 0;
    for (int j = 0; j < na; j++) {
        int axis = axis_of(ax[j], v->nd);
        if (axis < 0 || axis >= v->nd) return FAIL("its axis is out of range");
        if (axis == v->bax) return FAIL("reduces over the batch axis (that would mix samples)");
        mask |= 1u << axis;
        pmask |= 1u << first[axis];
    }
    val x = *v;
    x.nd = 0;
    for (int j = 0; j < v->nd; j++) {
        if (j == v->bax) x.bax = x.nd;
        if (!(mask >> j & 1u)) x.ld[x.nd++] = v->ld[j];
        else if (keep) x.ld[x.nd++] = 1;
    }
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_REDUCE, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    l->tnd = np;
    memcpy(l->tdim, pd, sizeof(int) * (size_t)np);
    l->axes = pmask;
    l->op = mean;
    return finish_gen(c, l, n, &x, st);
}

static int layernorm(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    const val *v = &c->v[a];
    const int axis = axis_of(dp__onnx_attr_int(n, "axis", -1), v->nd);
    if (axis != v->nd - 1 || axis == v->bax) return FAIL("only the normalisation of the last axis is supported");
    int sc = n->n_inputs > 1 ? dp__onnx_find(c, n->inputs[1]) : -1, bi = n->n_inputs > 2 && n->inputs[2][0] ? dp__onnx_find(c, n->inputs[2]) : -1;
    const int64_t D = v->ld[axis];
    if (sc < 0 || bi < 0 || c->v[sc].kind != V_PARAM || c->v[bi].kind != V_PARAM || (int64_t)c->v[sc].t->count != D ||
        (int64_t)c->v[bi].t->count != D || c->v[sc].ptrans || c->v[bi].ptrans)
        return FAIL("its scale and bias must be parameters of one value per feature (nn.LayerNorm with its affine "
                    "parameters)");
    for (int j = 1; j < n->n_outputs; j++)
        if (n->outputs[j][0]) return FAIL("its mean and inverse deviation outputs are not supported");
    if ((*st = dp__onnx_take_param(c, n, sc)) != DP_OK || (*st = dp__onnx_take_param(c, n, bi)) != DP_OK) return 1;
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_LAYERNORM, a);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    if (v->rank != 1 && v->rank != 2) dp__onnx_view_rows(l, v);
    if ((*st = dp__onnx_epsilon(c, n, &l->eps)) != DP_OK) return 1;
    dp__onnx_param_names(l, c->v[sc].t, c->v[bi].t, n);
    *st = dp__onnx_finish_like(c, l, n, v, 0);
    return 1;
}

/* ---- the dispatcher ------------------------------------------------------------------------ */

static const char *const un_names[] = {
#define DP__S(e, s) s,
    DP__UNARY_LIST(DP__S)
#undef DP__S
};

int dp__onnx_map_tensor(ctx *c, const dp__onnx_node *n, dp_status *st) {
    const char *op = n->op_type;
    *st = DP_OK;
    for (int b = 0; b < DP__BIN_COUNT; b++)
        if (!strcmp(op, bin_names[b])) return binary(c, n, b, st);
    int a = n->n_inputs ? dp__onnx_find(c, n->inputs[0]) : -1;
    if (!strcmp(op, "Expand")) return expand(c, n, a, st);
    if (!strcmp(op, "Concat")) return concat(c, n, st);
    if (a < 0 || c->v[a].kind != V_ACT) return 0;
    const val *v = &c->v[a];
    for (int u = 0; u < DP__UN_COUNT; u++) /* element-wise: any layout */
        if (!strcmp(op, un_names[u])) return unary(c, n, a, u, st);
    if (v->rank == -1) return FAIL("needs the shape of a value whose layout is not known");
    if (!strcmp(op, "Cast")) {
        int64_t to = dp__onnx_attr_int(n, "to", 0);
        if (to != 1 && to != 11)
            return FAIL("casts an activation to a type other than float or double (dpsgd computes in float)");
        return put_view(c, n->outputs[0], *v, st);
    }
    if (!strcmp(op, "Reshape")) {
        dp__sym s[DP__SYM_MAX];
        int ns = 0;
        if (n->n_inputs < 2 || !dp__onnx_ints(c, dp__onnx_find(c, n->inputs[1]), s, &ns))
            return FAIL("its shape must be a constant or folded from shapes");
        return reshape_to(c, n, a, s, ns, (int)dp__onnx_attr_int(n, "allowzero", 0), st);
    }
    if (!strcmp(op, "Flatten")) {
        int axis = axis_of(dp__onnx_attr_int(n, "axis", 1), v->nd);
        if (axis < 0 || axis > v->nd) return FAIL("its axis is out of range");
        dp__sym s[2];
        sym_prod(v, 0, axis, &s[0]);
        sym_prod(v, axis, v->nd, &s[1]);
        if (!s[0].c1 && !s[1].c1) return FAIL("flattens the batch axis away");
        return reshape_to(c, n, a, s, 2, 1, st);
    }
    if (!strcmp(op, "Squeeze") || !strcmp(op, "Unsqueeze")) {
        int64_t ax[8];
        int na = 0;
        val x = *v;
        if (!ints_arg(c, n, "axes", 1, ax, &na)) {
            if (op[0] == 'U') return FAIL("its axes must be constants");
            na = 0;
            for (int j = 0; j < v->nd; j++) /* every axis of size 1 */
                if (v->ld[j] == 1 && j != v->bax) ax[na++] = j;
        }
        const int nd = op[0] == 'U' ? v->nd + na : v->nd;
        if (nd > 8) return FAIL("gives more than 8 axes");
        unsigned m = 0;
        for (int j = 0; j < na; j++) {
            int axis = axis_of(ax[j], nd);
            if (axis < 0 || axis >= nd || (m >> axis & 1u)) return FAIL("its axes are out of range or repeated");
            if (op[0] == 'S' && (axis == v->bax || v->ld[axis] != 1)) return FAIL("squeezes an axis that is not 1");
            m |= 1u << axis;
        }
        x.nd = 0;
        if (op[0] == 'S') {
            for (int j = 0; j < v->nd; j++) {
                if (j == v->bax) x.bax = x.nd;
                if (!(m >> j & 1u)) x.ld[x.nd++] = v->ld[j];
            }
        } else
            for (int j = 0, q = 0; j < nd; j++) {
                if (m >> j & 1u) {
                    x.ld[j] = 1;
                    continue;
                }
                if (q == v->bax) x.bax = j;
                x.ld[j] = v->ld[q++];
            }
        if (op[0] == 'U') x.nd = nd;
        return put_view(c, n->outputs[0], x, st);
    }
    if (!strcmp(op, "Transpose")) return transpose(c, n, a, st);
    if (!strcmp(op, "MatMul")) return matmul(c, n, a, st);
    if (!strcmp(op, "Softmax") || !strcmp(op, "LogSoftmax")) {
        int axis = axis_of(dp__onnx_attr_int(n, "axis", dp__onnx_opset_version(c->g, "") >= 13 ? -1 : 1), v->nd);
        if (axis != v->nd - 1 || axis == v->bax) return FAIL("only a softmax over the last axis (not the batch) is supported");
        dp__node *l = dp__onnx_new_node(c, DP_LAYER_SOFTMAX, a);
        if (!l) return *st = DP_ERR_NOMEM, 1;
        l->tn = (int)v->ld[axis];
        l->op = op[0] == 'L';
        return finish_gen(c, l, n, v, st);
    }
    if (!strcmp(op, "Slice")) return slice(c, n, a, st);
    if (!strcmp(op, "Split")) return split(c, n, a, st);
    if (!strcmp(op, "Gather")) return gather(c, n, a, st);
    if (!strcmp(op, "ReduceMean") || !strcmp(op, "ReduceSum")) return reduce(c, n, a, op[6] == 'M', st);
    if (!strcmp(op, "LayerNormalization")) return layernorm(c, n, a, st);
    return 0;
}
