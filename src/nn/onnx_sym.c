/* nn/onnx_sym.c: shape arithmetic folded at load. PyTorch exports with a dynamic batch compute
 * reshape targets from Shape(x): Gather picks a dimension, Mul/Div/Add combine them, Unsqueeze
 * and Concat assemble the target. Each integer here is c0 + c1 * batch (dp__sym), so the batch
 * stays a symbol and the reshape that follows knows which axis holds it (onnx_ops.c). What
 * would make the batch appear squared or divided is refused, naming the node. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nn/onnx_map.h"

typedef dp__oval val;
typedef dp__octx ctx;

int dp__onnx_ints(const ctx *c, int vi, dp__sym *out, int *n) {
    if (vi < 0) return 0;
    const val *v = &c->v[vi];
    if (v->kind == V_SYM) {
        memcpy(out, v->sym, sizeof(dp__sym) * (size_t)v->nsym);
        *n = v->nsym;
        return 1;
    }
    if (v->kind != V_CONST || v->t->ndim > 1 || v->t->count > DP__SYM_MAX || (v->t->count && !v->t->i)) return 0;
    for (size_t j = 0; j < v->t->count; j++) out[j] = (dp__sym){v->t->i[j], 0};
    *n = (int)v->t->count;
    return 1;
}

/* an integer value (V_SYM, or an integer constant of rank <= 1) */
static int intish(const ctx *c, const char *name, int *vi) {
    *vi = dp__onnx_find(c, name);
    if (*vi < 0) return 0;
    const val *v = &c->v[*vi];
    return v->kind == V_SYM || (v->kind == V_CONST && v->t->i && v->t->ndim <= 1 && v->t->count <= DP__SYM_MAX);
}
static int scalar_of(const ctx *c, int vi) { return c->v[vi].kind == V_SYM ? c->v[vi].sscalar : c->v[vi].t->ndim == 0; }

static int put(ctx *c, const dp__onnx_node *n, const dp__sym *s, int ns, int scalar, dp_status *st) {
    val x = {.name = n->outputs[0], .kind = V_SYM, .nsym = ns, .sscalar = scalar};
    memcpy(x.sym, s, sizeof(dp__sym) * (size_t)ns);
    *st = dp__onnx_add_val(c, x) < 0 ? DP_ERR_NOMEM : DP_OK;
    return 1;
}
static int fail(const ctx *c, const dp__onnx_node *n, const char *why, dp_status *st) {
    *st = dp__onnx_node_fail(c, n, why);
    return 1;
}

/* Shape(x): the logical dims, the batch axis as bp * bm * batch */
static int shape_of(ctx *c, const dp__onnx_node *n, int a, dp_status *st) {
    const val *v = &c->v[a];
    if (v->rank == -1) return fail(c, n, "the shape of a value whose layout is not known", st);
    int64_t start = dp__onnx_attr_int(n, "start", 0), end = dp__onnx_attr_int(n, "end", v->nd);
    if (start < 0) start += v->nd;
    if (end < 0) end += v->nd;
    if (start < 0) start = 0;
    if (end > v->nd) end = v->nd;
    dp__sym s[DP__SYM_MAX];
    int ns = 0;
    for (int64_t j = start; j < end; j++)
        s[ns++] = j == v->bax ? (dp__sym){0, v->bp * v->bm} : (dp__sym){v->ld[j], 0};
    return put(c, n, s, ns, 0, st);
}

int dp__onnx_map_sym(ctx *c, const dp__onnx_node *n, dp_status *st) {
    const char *op = n->op_type;
    *st = DP_OK;
    if (!strcmp(op, "Shape")) {
        int a = n->n_inputs ? dp__onnx_find(c, n->inputs[0]) : -1, ns = 0;
        if (a >= 0 && c->v[a].kind == V_ACT) return shape_of(c, n, a, st);
        dp__sym s[DP__SYM_MAX];
        if (a >= 0 && dp__onnx_ints(c, a, s, &ns)) { /* of a shape value: its length */
            dp__sym len = {ns, 0};
            return put(c, n, &len, scalar_of(c, a) ? 0 : 1, 0, st);
        }
        return 0;
    }
    /* the rest folds only integer inputs (at least one), every one of them integer */
    int vi[5] = {-1, -1, -1, -1, -1}, nin = 0;
    for (int j = 0; j < n->n_inputs && j < 5; j++) {
        if (!n->inputs[j][0]) continue;
        if (!intish(c, n->inputs[j], &vi[j])) return 0;
        nin++;
    }
    if (!nin || n->n_inputs > 5) return 0;
    dp__sym x[DP__SYM_MAX], y[DP__SYM_MAX], out[DP__SYM_MAX];
    int nx = 0, ny = 0;
    dp__onnx_ints(c, vi[0], x, &nx);
    if (!strcmp(op, "Cast")) {
        int64_t to = dp__onnx_attr_int(n, "to", 7);
        if (to == 1 || to == 10 || to == 11 || to == 16) return 0; /* to float: not shape arithmetic */
        return put(c, n, x, nx, scalar_of(c, vi[0]), st);
    }
    if (!strcmp(op, "Gather")) {
        if (dp__onnx_attr_int(n, "axis", 0) != 0 || vi[1] < 0) return fail(c, n, "a gather from a shape must use axis 0", st);
        dp__onnx_ints(c, vi[1], y, &ny);
        for (int j = 0; j < ny; j++) {
            if (y[j].c1) return fail(c, n, "its indices depend on the batch size", st);
            int64_t k = y[j].c0 < 0 ? y[j].c0 + nx : y[j].c0;
            if (k < 0 || k >= nx) return fail(c, n, "its index is out of range", st);
            out[j] = x[k];
        }
        return put(c, n, out, ny, scalar_of(c, vi[1]), st);
    }
    if (!strcmp(op, "Unsqueeze") || !strcmp(op, "Squeeze")) {
        /* of a scalar to [1] and back: the values do not change */
        if (!strcmp(op, "Unsqueeze") ? !scalar_of(c, vi[0]) : nx != 1)
            return fail(c, n, "only a scalar shape value to one of one value (and back) is supported", st);
        return put(c, n, x, nx, op[0] == 'S', st);
    }
    if (!strcmp(op, "Concat")) {
        int no = 0;
        for (int j = 0; j < n->n_inputs; j++) {
            if (vi[j] < 0) continue;
            dp__onnx_ints(c, vi[j], y, &ny);
            if (no + ny > DP__SYM_MAX) return fail(c, n, "makes a shape of more than 8 values", st);
            memcpy(out + no, y, sizeof(dp__sym) * (size_t)ny);
            no += ny;
        }
        return put(c, n, out, no, 0, st);
    }
    if (!strcmp(op, "Reshape")) { /* a shape value to one axis: the same values */
        dp__onnx_ints(c, vi[1], y, &ny);
        if (ny != 1 || y[0].c1 || (y[0].c0 != -1 && y[0].c0 != nx))
            return fail(c, n, "only a reshape of a shape value to one axis is supported", st);
        return put(c, n, x, nx, 0, st);
    }
    if (!strcmp(op, "ConstantOfShape")) { /* of a fixed length: that many copies of an integer */
        const dp__onnx_attr *va = dp__onnx_find_attr(n, "value");
        int64_t val0 = 0;
        if (va && (va->type != DP__ONNX_ATTR_TENSOR || !va->t || va->t->count != 1 || !va->t->i)) return 0;
        if (va) val0 = va->t->i[0];
        if (nx != 1 || x[0].c1 || x[0].c0 < 0 || x[0].c0 > DP__SYM_MAX)
            return fail(c, n, "only a short integer tensor of a fixed length is supported", st);
        for (int j = 0; j < x[0].c0; j++) out[j] = (dp__sym){val0, 0};
        return put(c, n, out, (int)x[0].c0, 0, st);
    }
    if (!strcmp(op, "Equal")) { /* for every batch size >= 1, or refused */
        dp__onnx_ints(c, vi[1], y, &ny);
        if (nx != ny && nx != 1 && ny != 1) return fail(c, n, "compares shape values of different lengths", st);
        const int no = nx > ny ? nx : ny;
        for (int j = 0; j < no; j++) {
            dp__sym p = x[nx == 1 ? 0 : j], q = y[ny == 1 ? 0 : j];
            int64_t dc1 = p.c1 - q.c1, dc0 = q.c0 - p.c0;
            if (!dc1) out[j] = (dp__sym){dc0 == 0, 0};
            else if (dc0 % dc1 || dc0 / dc1 < 1) out[j] = (dp__sym){0, 0}; /* equal at no batch size */
            else return fail(c, n, "its result depends on the batch size", st);
        }
        return put(c, n, out, no, scalar_of(c, vi[0]) && scalar_of(c, vi[1]), st);
    }
    if (!strcmp(op, "Where")) {
        dp__sym z[DP__SYM_MAX];
        int nz = 0;
        if (vi[2] < 0) return fail(c, n, "needs three inputs", st);
        dp__onnx_ints(c, vi[1], y, &ny);
        dp__onnx_ints(c, vi[2], z, &nz);
        int no = nx > ny ? nx : ny;
        if (nz > no) no = nz;
        if ((nx != no && nx != 1) || (ny != no && ny != 1) || (nz != no && nz != 1))
            return fail(c, n, "selects among shape values of different lengths", st);
        for (int j = 0; j < no; j++) {
            dp__sym cnd = x[nx == 1 ? 0 : j];
            if (cnd.c1) return fail(c, n, "its condition depends on the batch size", st);
            out[j] = cnd.c0 ? y[ny == 1 ? 0 : j] : z[nz == 1 ? 0 : j];
        }
        return put(c, n, out, no, 0, st);
    }
    if (!strcmp(op, "Neg")) {
        for (int j = 0; j < nx; j++) {
            if (x[j].c0 == INT64_MIN || x[j].c1 == INT64_MIN) return fail(c, n, "overflows 64-bit integers", st);
            out[j] = (dp__sym){-x[j].c0, -x[j].c1};
        }
        return put(c, n, out, nx, scalar_of(c, vi[0]), st);
    }
    if (!strcmp(op, "Slice")) {
        dp__sym s[DP__SYM_MAX], e[DP__SYM_MAX];
        int ns = 0, ne = 0;
        if (vi[1] < 0 || vi[2] < 0) return fail(c, n, "a slice of a shape needs starts and ends", st);
        dp__onnx_ints(c, vi[1], s, &ns);
        dp__onnx_ints(c, vi[2], e, &ne);
        dp__sym ax[DP__SYM_MAX], sp[DP__SYM_MAX];
        int na = 0, nsp = 0;
        if (vi[3] >= 0) dp__onnx_ints(c, vi[3], ax, &na);
        if (vi[4] >= 0) dp__onnx_ints(c, vi[4], sp, &nsp);
        if (ns != 1 || ne != 1 || s[0].c1 || e[0].c1 || (na && (na != 1 || ax[0].c0 != 0 || ax[0].c1)) ||
            (nsp && (nsp != 1 || sp[0].c0 != 1 || sp[0].c1)))
            return fail(c, n, "a slice of a shape must have constant start and end, axis 0 and step 1", st);
        int64_t b = s[0].c0 < 0 ? s[0].c0 + nx : s[0].c0, en = e[0].c0 < 0 ? e[0].c0 + nx : e[0].c0;
        if (b < 0) b = 0;
        if (en > nx) en = nx;
        int no = 0;
        for (int64_t j = b; j < en; j++) out[no++] = x[j];
        return put(c, n, out, no, 0, st);
    }
    const int bop = !strcmp(op, "Add") ? 0 : !strcmp(op, "Sub") ? 1 : !strcmp(op, "Mul") ? 2 : !strcmp(op, "Div") ? 3 : -1;
    if (bop < 0) return 0;
    if (vi[1] < 0) return fail(c, n, "needs two inputs", st);
    dp__onnx_ints(c, vi[1], y, &ny);
    if (nx != ny && nx != 1 && ny != 1) return fail(c, n, "combines shape values of different lengths", st);
    const int no = nx > ny ? nx : ny;
    for (int j = 0; j < no; j++) {
        dp__sym p = x[nx == 1 ? 0 : j], q = y[ny == 1 ? 0 : j];
        int64_t t0, t1;
        int ovf = 0;
        switch (bop) {
        case 0:
            ovf = __builtin_add_overflow(p.c0, q.c0, &out[j].c0) | __builtin_add_overflow(p.c1, q.c1, &out[j].c1);
            break;
        case 1:
            ovf = __builtin_sub_overflow(p.c0, q.c0, &out[j].c0) | __builtin_sub_overflow(p.c1, q.c1, &out[j].c1);
            break;
        case 2:
            if (p.c1 && q.c1) return fail(c, n, "multiplies the batch size by itself", st);
            ovf = __builtin_mul_overflow(p.c0, q.c0, &out[j].c0) | __builtin_mul_overflow(p.c0, q.c1, &t0) |
                  __builtin_mul_overflow(p.c1, q.c0, &t1) | __builtin_add_overflow(t0, t1, &out[j].c1);
            break;
        default:
            if (q.c1 || q.c0 == 0 || (q.c0 == -1 && (p.c0 == INT64_MIN || p.c1 == INT64_MIN)))
                return fail(c, n, "divides by the batch size or by zero", st);
            if (p.c1 % q.c0 || (p.c1 && p.c0 % q.c0)) return fail(c, n, "divides the batch size unevenly", st);
            out[j] = (dp__sym){p.c0 / q.c0, p.c1 / q.c0};
            break;
        }
        if (ovf) return fail(c, n, "overflows 64-bit integers", st);
    }
    return put(c, n, out, no, scalar_of(c, vi[0]) && scalar_of(c, vi[1]), st);
}
