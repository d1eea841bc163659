/* nn/onnx_fuse.c: patterns of PyTorch exports that the importer maps onto one built-in layer
 * instead of a node per operator: the same function, fewer passes over memory. GELU exports as
 * Div(x, sqrt 2) -> Erf -> Add(1) -> Mul(x, .) -> Mul(0.5), which becomes one gelu node (the
 * exact, erf form); nn.Linear on a sequence exports as MatMul then Add(bias), and the bias
 * joins the linear node (its ghost norm then covers both). A pattern is taken only when its
 * intermediate values are read by nothing else. */
#include <math.h>
#include <string.h>

#include "nn/onnx_map.h"

typedef dp__oval val;
typedef dp__octx ctx;

int dp__onnx_readers(const dp__onnx_model *g, const char *name, int *first) {
    int n = 0;
    *first = -1;
    for (int k = 0; k < g->n_nodes; k++)
        for (int q = 0; q < g->nodes[k].n_inputs; q++)
            if (!strcmp(g->nodes[k].inputs[q], name)) {
                if (!n++) *first = k;
            }
    for (int k = 0; k < g->n_outputs; k++) n += !strcmp(g->outputs[k].name, name);
    return n;
}

/* the one node reading output 0 of node i, when it is op (else -1) */
static int only_reader(const ctx *c, int i, const char *op) {
    int f;
    if (dp__onnx_readers(c->g, c->g->nodes[i].outputs[0], &f) != 1 || f < 0) return -1;
    return !strcmp(c->g->nodes[f].op_type, op) && c->g->nodes[f].n_outputs >= 1 ? f : -1;
}

/* the input of node k that is not `name`, when the node has two inputs and one of them is it */
static const char *other_input(const dp__onnx_node *n, const char *name) {
    if (n->n_inputs != 2) return NULL;
    if (!strcmp(n->inputs[0], name)) return n->inputs[1];
    if (!strcmp(n->inputs[1], name)) return n->inputs[0];
    return NULL;
}

/* is value `name` a float constant of one value equal to v (to float precision)? It may be
 * made by a Constant node later in the file than the pattern's first node. */
static int scalar_is(const ctx *c, const char *name, double v) {
    if (!name) return 0;
    const dp__onnx_tensor *t = NULL;
    int i = dp__onnx_find(c, name);
    if (i >= 0 && c->v[i].kind == V_CONST) t = c->v[i].t;
    for (int k = 0; i < 0 && !t && k < c->g->n_nodes; k++) {
        const dp__onnx_node *n = &c->g->nodes[k];
        const dp__onnx_attr *a = !strcmp(n->op_type, "Constant") && n->n_outputs >= 1 && !strcmp(n->outputs[0], name)
                                     ? dp__onnx_find_attr(n, "value")
                                     : NULL;
        if (a && a->type == DP__ONNX_ATTR_TENSOR) t = a->t;
    }
    if (!t || t->count != 1 || !t->f) return 0;
    return fabs(t->f[0] - v) <= 1e-6 * fabs(v);
}

int dp__onnx_fuse(ctx *c, int i, unsigned char *skip, dp_status *st) {
    const dp__onnx_node *d = &c->g->nodes[i];
    *st = DP_OK;
    if (strcmp(d->op_type, "Div") || d->n_inputs != 2 || d->n_outputs < 1 || !scalar_is(c, d->inputs[1], sqrt(2.0)))
        return 0;
    const int xa = dp__onnx_find(c, d->inputs[0]);
    if (xa < 0 || c->v[xa].kind != V_ACT || (c->v[xa].node < 0 && c->m->tokens)) return 0;
    const char *x = d->inputs[0];
    int e = only_reader(c, i, "Erf"), a = e >= 0 ? only_reader(c, e, "Add") : -1;
    if (a < 0 || !scalar_is(c, other_input(&c->g->nodes[a], c->g->nodes[e].outputs[0]), 1.0)) return 0;
    int m1 = only_reader(c, a, "Mul");
    const char *o1 = m1 >= 0 ? other_input(&c->g->nodes[m1], c->g->nodes[a].outputs[0]) : NULL;
    if (!o1 || strcmp(o1, x)) return 0;
    int m2 = only_reader(c, m1, "Mul");
    if (m2 < 0 || !scalar_is(c, other_input(&c->g->nodes[m2], c->g->nodes[m1].outputs[0]), 0.5)) return 0;
    dp__node *l = dp__onnx_new_node(c, DP_LAYER_GELU, xa);
    if (!l) return *st = DP_ERR_NOMEM, 1;
    *st = dp__onnx_finish_like(c, l, &c->g->nodes[m2], &c->v[xa], 0);
    skip[i] = skip[e] = skip[a] = skip[m1] = skip[m2] = 1;
    return 1;
}
