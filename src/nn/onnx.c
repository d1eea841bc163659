/* nn/onnx.c: models imported from ONNX files (dp_model_load_onnx, dp_model_save_onnx).
 *
 * The file layer (src/io/onnx.c) gives a plain-C graph; its nodes are mapped in file order (ONNX
 * requires a topological one) onto rows of the layer table: onnx_layers.c maps the operators of
 * the built-in layers and dispatches the rest to onnx_sym.c (shape arithmetic) and onnx_ops.c
 * (general tensor operators); onnx_fuse.c first takes patterns that become one layer. What is
 * not understood is refused before anything runs, naming the node, its op type and the reason
 * (docs/onnx.md has the table).
 *
 * This file holds the loading (initializers, the model input, the output check, the initial
 * weights), the table of values by name (an activation with its logical shape, onnx_map.h; a
 * parameter, possibly seen through Unsqueeze or Transpose: the same parameter, its name kept;
 * a constant; shape values; GroupNorm's intermediate steps), the helpers that make nodes, and
 * the write-back of trained weights (dp_model_save_onnx). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx.h"
#include "nn/graph.h"
#include "nn/onnx_internal.h"
#include "nn/onnx_map.h"

typedef dp__oval val;
typedef dp__octx ctx;

dp_status dp__onnx_node_fail(const ctx *c, const dp__onnx_node *n, const char *why) {
    return dp_fail(DP_ERR_INVALID, "%s: node '%s' (%s): %s", c->path, n->name[0] ? n->name : "(unnamed)", n->op_type, why);
}

int dp__onnx_find(const ctx *c, const char *name) {
    for (int i = c->nv - 1; i >= 0; i--)
        if (strcmp(c->v[i].name, name) == 0) return i;
    return -1;
}

int dp__onnx_add_val(ctx *c, val x) {
    if (c->nv == c->capv) {
        int nc = c->capv ? 2 * c->capv : 64;
        val *nv = dp_alloc(sizeof *nv * (size_t)nc);
        if (!nv) return -1;
        if (c->v) memcpy(nv, c->v, sizeof *nv * (size_t)c->nv);
        dp_free(c->v);
        c->v = nv;
        c->capv = nc;
    }
    c->v[c->nv] = x;
    return c->nv++;
}

void dp__onnx_set_rank(val *v) {
    if (v->rank == 0 || v->rank == -1) return; /* token ids, flat bound inputs: as made */
    v->rank = v->bax == 0 && v->bp == 1 && v->bm == 1 && v->nd >= 2 && v->nd <= 4 ? v->nd - 1 : -2;
}

/* an activation made by model node `node` (-1: the input), batch first, of per-sample dims d */
static dp_status set_act(ctx *c, const char *name, int node, int rank, int nd, const int64_t *d) {
    val x = {.name = name, .kind = V_ACT, .node = node, .rank = rank, .nd = nd + 1, .bp = 1, .bm = 1};
    for (int j = 0; j < nd; j++) x.ld[j + 1] = d[j];
    return dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
}

int dp__onnx_phys(const val *v, int pd[DP__TMAXD], int first[9]) {
    int np = 0;
    for (int i = 0; i < v->nd; i++) {
        first[i] = np;
        int64_t f[2] = {v->ld[i], 1};
        int nf = 1;
        if (i == v->bax) {
            f[0] = v->bp, f[1] = v->bm;
            nf = 2;
        }
        for (int k = 0; k < nf; k++) {
            if (i == v->bax && f[k] == 1) continue;
            if (np == DP__TMAXD || f[k] > INT32_MAX) return -1;
            pd[np++] = (int)f[k];
        }
    }
    first[v->nd] = np;
    return np;
}

void dp__onnx_view_rows(dp__node *l, const val *v) {
    int pd[DP__TMAXD], first[9];
    int np = dp__onnx_phys(v, pd, first);
    const int last = np > 0 ? pd[np - 1] : 1;
    l->iseq = l->seq = 1;
    l->ic = l->oc = last;
    l->ih = l->oh = (int)(l->in_size / (size_t)last);
    l->iw = l->ow = 1;
}

dp_status dp__onnx_epsilon(const ctx *c, const dp__onnx_node *n, float *eps) {
    const dp__onnx_attr *e = dp__onnx_find_attr(n, "epsilon");
    *eps = 1e-5f;
    if (!e) return DP_OK;
    if (e->type != DP__ONNX_ATTR_FLOAT || !isfinite(e->f) || !(e->f > 0))
        return dp__onnx_node_fail(c, n, "its epsilon must be a finite float above 0");
    *eps = e->f;
    return DP_OK;
}

int64_t dp__onnx_attr_int(const dp__onnx_node *n, const char *name, int64_t def) {
    const dp__onnx_attr *a = dp__onnx_find_attr(n, name);
    return a && a->type == DP__ONNX_ATTR_INT ? a->i : def;
}

/* a parameter may be used by one node only (tied weights are not supported yet) */
dp_status dp__onnx_take_param(ctx *c, const dp__onnx_node *n, int vi) {
    const dp__onnx_tensor *t = c->v[vi].t;
    int k = (int)(t - c->init);
    if (c->used[k]) return dp__onnx_node_fail(c, n, "uses a parameter that another node uses too (tied weights are not supported; PyTorch's default "
                                     "eval-mode export merges parameters with equal values: export with "
                                     "training=torch.onnx.TrainingMode.TRAINING)");
    c->used[k] = 1;
    return DP_OK;
}

/* Append a node of kind reading activation value `in`, its input fields from the value's shape:
 * an image [C, H, W], a sequence [T, F] or a vector for batch-first values of rank 3, 2, 1
 * (the model input and flat values as made), rows of the last axis otherwise. */
dp__node *dp__onnx_new_node(ctx *c, dp_layer_kind kind, int in) {
    const val *v = &c->v[in];
    dp__node *l = dp__push_node(c->m, kind, v->node);
    if (!l || v->rank <= 0) {
        if (l && v->rank == -2) dp__onnx_view_rows(l, v);
        return l;
    }
    const int64_t *d = v->ld;
    l->iseq = l->seq = v->rank == 2;
    l->ic = l->oc = (int)(v->rank == 3 ? d[1] : v->rank == 2 ? d[2] : d[1]);
    l->ih = l->oh = (int)(v->rank == 3 ? d[2] : v->rank == 2 ? d[1] : 1);
    l->iw = l->ow = (int)(v->rank == 3 ? d[3] : 1);
    return l;
}

void dp__onnx_param_names(dp__node *l, const dp__onnx_tensor *w, const dp__onnx_tensor *b, const dp__onnx_node *n) {
    if (w) snprintf(l->wname, sizeof l->wname, "%s", w->name);
    if (w && w->ndim >= 1 && w->ndim <= 4) {
        l->wnd = w->ndim;
        for (int d = 0; d < w->ndim; d++) l->wdims[d] = w->dims[d];
    }
    if (b) snprintf(l->bname, sizeof l->bname, "%s", b->name);
    /* the module name: the weight's name without ".weight" when it has that form */
    const char *src = w ? w->name : b ? b->name : n->name;
    size_t len = strlen(src);
    const char *dot = strrchr(src, '.');
    if ((w || b) && dot) len = (size_t)(dot - src);
    snprintf(l->name, sizeof l->name, "%.*s", (int)(len < DP__NAME_LEN - 1 ? len : DP__NAME_LEN - 1), src);
}

/* dp__finish_node, then (defence in depth: every form was checked before) a refusal of a
 * node whose shape came out empty or too large */
static dp_status finish_node(ctx *c, dp__node *l, const dp__onnx_node *n) {
    char keep[DP__NAME_LEN];
    snprintf(keep, sizeof keep, "%s", l->name);
    dp__finish_node(c->m, l, c->m->n - 1, keep[0] ? keep : NULL);
    if (l->oc < 1 || l->oh < 1 || l->ow < 1 || l->out_size < 1 || l->out_size > INT32_MAX || l->in_size < 1)
        return dp__onnx_node_fail(c, n, "gives an empty or too large output");
    return DP_OK;
}

dp_status dp__onnx_finish(ctx *c, dp__node *l, const dp__onnx_node *n, int rank) {
    dp_status st = finish_node(c, l, n);
    if (st != DP_OK) return st;
    int64_t d[3] = {l->oc, l->oh, l->ow};
    if (rank == 2) d[0] = l->oh, d[1] = l->oc;
    return set_act(c, n->outputs[0], c->m->n - 1, rank, rank, d);
}

dp_status dp__onnx_finish_like(ctx *c, dp__node *l, const dp__onnx_node *n, const val *like, int64_t last) {
    dp_status st = finish_node(c, l, n);
    if (st != DP_OK) return st;
    val x = *like;
    x.name = n->outputs[0];
    x.node = c->m->n - 1;
    if (last > 0) x.ld[x.nd - 1] = last;
    if (x.rank == 0) x.rank = 2; /* an embedding of token ids */
    dp__onnx_set_rank(&x);
    return dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
}


/* What dp__model_load_onnx_bound adds to a plain load (NULL: dp_model_load_onnx). */
typedef struct {
    int n;
    const char *const *names;
    const dp__onnx_tensor *const *tensors;
    int input_index;
    unsigned flags;
} bind_opts;

/* The name of the parameter that DP__ONNX_BIND_ANY_OUTPUT adds to a graph without one. */
#define ONES_NAME "dp__node_test.ones"

/* The initializer table: the file's initializers, then (bound) the bound graph inputs under
 * their graph names, replacing a file initializer of the same name. */
static dp_status make_inits(ctx *c, const bind_opts *b) {
    const dp__onnx_model *g = c->g;
    const int nb = b ? b->n : 0;
    c->init = dp_alloc(sizeof *c->init * (size_t)(g->n_initializers + nb + 1));
    if (!c->init) return DP_ERR_NOMEM;
    for (int i = 0; i < g->n_initializers; i++) {
        int bound = 0;
        for (int j = 0; j < nb && !bound; j++) bound = strcmp(b->names[j], g->initializers[i].name) == 0;
        if (!bound) c->init[c->ninit++] = g->initializers[i];
    }
    for (int j = 0; j < nb; j++) {
        int gi = -1;
        for (int i = 0; i < g->n_inputs && gi < 0; i++)
            if (!strcmp(g->inputs[i].name, b->names[j])) gi = i;
        if (gi < 0 || gi == b->input_index)
            return dp_fail(DP_ERR_INVALID, "%s: bound value '%s' is %s", c->path, b->names[j],
                           gi < 0 ? "not a graph input" : "the model input");
        for (int k = 0; k < j; k++)
            if (!strcmp(b->names[k], b->names[j]))
                return dp_fail(DP_ERR_INVALID, "%s: bound value '%s' is given twice", c->path, b->names[j]);
        if (!b->tensors[j]) return dp_fail(DP_ERR_INVALID, "%s: bound value '%s' has no tensor", c->path, b->names[j]);
        c->init[c->ninit] = *b->tensors[j];
        c->init[c->ninit++].name = b->names[j];
    }
    return DP_OK;
}

static const dp__onnx_tensor *find_init(const ctx *c, const char *name) {
    for (int i = 0; i < c->ninit; i++)
        if (!strcmp(c->init[i].name, name)) return &c->init[i];
    return NULL;
}

/* The model input: the first graph input that is not an initializer, or the bound one. */
static dp_status make_input(ctx *c, const bind_opts *b) {
    const dp__onnx_model *g = c->g;
    const char *path = c->path;
    const dp__onnx_value *in = NULL;
    if (!b) {
        for (int i = 0; i < g->n_inputs && !in; i++)
            if (!dp__onnx_find_initializer(g, g->inputs[i].name)) in = &g->inputs[i];
    } else if (b->input_index >= 0 && b->input_index < g->n_inputs && !find_init(c, g->inputs[b->input_index].name))
        in = &g->inputs[b->input_index];
    const int flat = b && (b->flags & DP__ONNX_BIND_FLAT_INPUT);
    if (!in || in->kind != DP__ONNX_VALUE_TENSOR || in->ndim < (flat ? 1 : 2))
        return dp_fail(DP_ERR_INVALID, "%s: the graph needs one tensor input [batch, ...] that is not an initializer",
                       path);
    int64_t per = 1;
    for (int d = 1; d < in->ndim; d++) {
        if (in->dims[d] < 1)
            return dp_fail(DP_ERR_INVALID,
                           "%s: graph input '%s': dimension %d is not fixed (only the batch, dimension 0, may vary)",
                           path, in->name, d);
        if (in->dims[d] > INT32_MAX || (per *= in->dims[d]) > INT32_MAX)
            return dp_fail(DP_ERR_INVALID, "%s: graph input '%s' is too large (%d dims of up to 2^31 - 1 values in all)",
                           path, in->name, in->ndim - 1);
    }
    int cls = dp__onnx_type_class(in->elem_type), rank = in->ndim - 1;
    if (cls == 2 && rank == 1) {
        c->m = dp__model_new(1, 1, (int)in->dims[1]);
        if (c->m) c->m->tokens = 1;
    } else if (cls == 1 && rank == 1) {
        c->m = dp__model_new((int)in->dims[1], 1, 1);
    } else if (cls == 1 && rank == 3) {
        c->m = dp__model_new((int)in->dims[1], (int)in->dims[2], (int)in->dims[3]);
    } else if (cls == 1 && (rank >= 2 || flat)) { /* any other float input: a block of values per sample */
        int64_t f = 1;
        for (int d = 1; d < in->ndim; d++) {
            f *= in->dims[d];
            if (f > INT32_MAX) return dp_fail(DP_ERR_INVALID, "%s: graph input '%s' is too large", path, in->name);
        }
        c->m = dp__model_new((int)f, 1, 1);
        if (rank == 0) rank = -1; /* one value per sample: no operator that looks at shapes accepts it */
    } else
        return dp_fail(DP_ERR_INVALID,
                       "%s: graph input '%s' (%s, %d dims): supported are float [batch, ...] (up to 7 more "
                       "dims) and integer token ids [batch, T]",
                       path, in->name, dp__onnx_type_name(in->elem_type), in->ndim);
    if (!c->m) return DP_ERR_NOMEM;
    c->batch0 = in->dims[0] > 0 ? in->dims[0] : 0;
    int64_t d[DP__ONNX_MAX_DIMS];
    int nd = rank < 0 ? 1 : in->ndim - 1;
    if (nd > 7) nd = 1, rank = -1; /* more axes than a value tracks: seen flat (bound inputs only) */
    if (rank < 0) d[0] = (int64_t)c->m->in_size;
    else
        for (int j = 0; j < nd; j++) d[j] = in->dims[j + 1];
    if (set_act(c, in->name, -1, c->m->tokens ? 0 : rank, nd, d) != DP_OK) return DP_ERR_NOMEM;
    dp__onnx_set_rank(&c->v[c->nv - 1]);
    return DP_OK;
}

/* DP__ONNX_BIND_ANY_OUTPUT: a graph without parameters (or without nodes: Identity) gets a
 * last node y = 1 * x per channel, so that the model has a parameter and a last node (exact:
 * the product by 1.0f changes no value). */
static dp_status add_ones(ctx *c, int o) {
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_SCALE, o);
    if (!l) return DP_ERR_NOMEM;
    snprintf(l->wname, sizeof l->wname, "%s", ONES_NAME);
    snprintf(l->name, sizeof l->name, "%s", "dp__node_test");
    int idx = c->m->n - 1;
    dp__finish_node(c->m, l, idx, "dp__node_test");
    c->v[o].node = idx; /* the graph output is now this node's */
    return DP_OK;
}

static dp_status load(const char *path, const bind_opts *b, dp_model **out) {
    dp__onnx_model *g = NULL;
    dp_status st = dp__onnx_load(path, &g);
    if (st != DP_OK) return st;
    ctx c = {.path = path, .g = g};
    unsigned char *skip = NULL; /* graph nodes taken by a fused pattern */
    int64_t ver = dp__onnx_opset_version(g, "");
    if (ver < 9 || ver > 18) {
        st = dp_fail(DP_ERR_INVALID, "%s: opset %lld of the default domain is not supported (9 to 18)", path,
                     (long long)ver);
        goto done;
    }
    if ((st = make_inits(&c, b)) != DP_OK || (st = make_input(&c, b)) != DP_OK) goto done;
    c.used = dp_calloc((size_t)c.ninit + 1, 1);
    if (!c.used) {
        st = DP_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < c.ninit; i++) {
        const dp__onnx_tensor *t = &c.init[i];
        val x = {.name = t->name, .kind = t->elem_type == DP__ONNX_FLOAT ? V_PARAM : V_CONST, .t = t};
        if (t->ndim > 8) x.kind = V_CONST; /* not a parameter any supported operator takes */
        x.vnd = t->ndim <= 8 ? t->ndim : 0;
        for (int d = 0; d < x.vnd; d++) x.vdims[d] = t->dims[d];
        if (dp__onnx_add_val(&c, x) < 0) {
            st = DP_ERR_NOMEM;
            goto done;
        }
    }
    skip = dp_calloc((size_t)g->n_nodes + 1, 1);
    if (!skip) {
        st = DP_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < g->n_nodes && st == DP_OK; i++)
        if (!skip[i] && !dp__onnx_fuse(&c, i, skip, &st)) st = dp__onnx_map_node(&c, &g->nodes[i]);
    if (st != DP_OK) goto done;
    /* the output: the logits, written by the last node */
    if (g->n_outputs != 1) {
        st = dp_fail(DP_ERR_INVALID, "%s: the graph has %d outputs; one (the logits) is supported", path, g->n_outputs);
        goto done;
    }
    int o = dp__onnx_find(&c, g->outputs[0].name);
    const int any = b && (b->flags & DP__ONNX_BIND_ANY_OUTPUT);
    if (any && o >= 0 && c.v[o].kind == V_ACT && c.v[o].node == c.m->n - 1 && c.m->np == 0 && !c.m->tokens &&
        (st = add_ones(&c, o)) != DP_OK)
        goto done;
    int64_t outer = 1; /* values outer to the batch in the output: 1 when its storage is its ONNX layout */
    for (int j = 0; o >= 0 && c.v[o].kind == V_ACT && j < c.v[o].bax; j++) outer *= c.v[o].ld[j];
    if (o < 0 || c.v[o].kind != V_ACT || c.v[o].node != c.m->n - 1 || c.m->n == 0 || (!any && c.v[o].rank != 1) ||
        outer * c.v[o].bp != 1) {
        st = dp_fail(DP_ERR_INVALID, "%s: graph output '%s' must be the logits [batch, classes] made by the last node", path,
                     g->outputs[0].name);
        goto done;
    }
    for (int i = 0; i < c.ninit; i++)
        if (!c.used[i] && c.init[i].elem_type == DP__ONNX_FLOAT && c.init[i].count > 0) {
            st = dp_fail(DP_ERR_INVALID,
                         "%s: float initializer '%s' is not a parameter of any supported operator (it would not "
                         "be trained)",
                         path, c.init[i].name);
            goto done;
        }
    if ((st = dp__finish_model(c.m)) != DP_OK) goto done;
    /* the initial weights are the file's (or the bound values) */
    for (int t = 0; t < c.m->ntensors; t++) {
        const dp__onnx_tensor *init = find_init(&c, c.m->tnames[t]);
        if (any && !init && !strcmp(c.m->tnames[t], ONES_NAME)) {
            for (size_t j = 0; j < c.m->tcount[t]; j++) c.m->params[c.m->toff[t] + j] = 1.0f;
            continue;
        }
        if (!init || init->count != c.m->tcount[t]) {
            st = dp_fail(DP_ERR_INVALID, "%s: parameter '%s': %zu values expected", path, c.m->tnames[t], c.m->tcount[t]);
            goto done;
        }
        for (size_t j = 0; j < init->count; j++)
            if (!isfinite(init->f[j])) { /* as --init refuses: the run would fail at step 1 */
                st = dp_fail(DP_ERR_NONFINITE, "%s: initializer '%s' holds a non-finite value (NaN or infinity); these "
                             "weights cannot be trained or evaluated", path, c.m->tnames[t]);
                goto done;
            }
        const dp__node *ln = &c.m->L[c.m->tnode[t]];
        if (ln->wtrans && c.m->toff[t] == ln->w_off) /* stored [in, out]: ours is [out, in] */
            dp__transpose_copy(c.m->params + c.m->toff[t], init->f, (size_t)init->dims[0], (size_t)init->dims[1]);
        else
            memcpy(c.m->params + c.m->toff[t], init->f, sizeof(float) * init->count);
    }
    *out = c.m;
    c.m = NULL;
done:
    dp_model_destroy(c.m);
    dp_free(c.v);
    dp_free(c.used);
    dp_free(skip);
    dp_free(c.init);
    dp__onnx_free(g);
    return st;
}

dp_status dp_model_load_onnx(const char *path, dp_model **out) { return load(path, NULL, out); }

dp_status dp__model_load_onnx_bound(const char *path, int n, const char *const names[],
                                    const dp__onnx_tensor *const tensors[], int input_index, unsigned flags,
                                    dp_model **out) {
    if (n < 0 || (n > 0 && (!names || !tensors)))
        return dp_fail(DP_ERR_INVALID, "%s: bound values: bad count or NULL arrays", path ? path : "(null)");
    bind_opts b = {n, names, tensors, input_index, flags};
    return load(path, &b, out);
}

dp_status dp_model_save_onnx(const dp_model *m, const char *in_model, const char *out_model) {
    dp__onnx_replacement *r = dp_alloc(sizeof *r * (size_t)(m->ntensors ? m->ntensors : 1));
    if (!r) return DP_ERR_NOMEM;
    float **tmp = dp_calloc((size_t)(m->ntensors ? m->ntensors : 1), sizeof *tmp);
    dp_status st = tmp ? DP_OK : DP_ERR_NOMEM;
    for (int t = 0; t < m->ntensors && st == DP_OK; t++) {
        r[t].name = m->tnames[t];
        r[t].data = m->params + m->toff[t];
        r[t].count = m->tcount[t];
        const dp__node *l = &m->L[m->tnode[t]];
        if (l->wtrans && m->toff[t] == l->w_off) { /* back to the file's [in, out] */
            if (!(tmp[t] = dp_alloc(sizeof(float) * m->tcount[t]))) {
                st = DP_ERR_NOMEM;
                break;
            }
            dp__transpose_copy(tmp[t], r[t].data, (size_t)l->oc, m->tcount[t] / (size_t)l->oc);
            r[t].data = tmp[t];
        }
    }
    if (st == DP_OK) st = dp__onnx_save_initializers(in_model, out_model, m->ntensors, r);
    for (int t = 0; tmp && t < m->ntensors; t++) dp_free(tmp[t]);
    dp_free(tmp);
    dp_free(r);
    return st;
}
