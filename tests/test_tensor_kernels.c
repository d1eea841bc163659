/* test_tensor_kernels.c: the general tensor kernels of imported models (kernels_tensor.h) in
 * double precision: every backward against central finite differences of L = <u, out> for a
 * fixed random u (element-wise functions, binary operations with broadcast operands, softmax
 * and log-softmax, batched products with a broadcast operand, reductions), and the layout
 * kernels (permute, slice, concat) against their definitions and as adjoints of their
 * backwards. Float against double on one case of each family. */
#include "nn/kernels/kernels_tensor.h"
#include "fd.h"

/* ---- element-wise -------------------------------------------------------------------------- */
typedef struct {
    double *x;
    size_t n;
    int op;
} un_ctx;
static void un_f(void *c, double *y) {
    un_ctx *u = c;
    dp__k_unary_fwd_f64(y, u->x, u->n, u->op, 0.1);
}
static void test_unary(void) {
    const size_t n = 24;
    for (int op = 0; op < DP__UN_COUNT; op++) {
        double *x = dnew(n), *u = dnew(n), *g = dnew(n), *fd = dnew(n);
        /* away from the kinks and poles: positive for Sqrt, Log, Reciprocal; |x| >= 0.2 for Abs, LeakyRelu */
        fill_in(x, n, 0.2, 1.5);
        if (op != DP__UN_SQRT && op != DP__UN_LOG && op != DP__UN_RECIP)
            for (size_t i = 0; i < n; i += 2) x[i] = -x[i];
        fill_in(u, n, -1, 1);
        un_ctx c = {x, n, op};
        dp__k_unary_bwd_f64(g, u, x, n, op, 0.1);
        fd_grad(un_f, &c, x, n, u, n, fd);
        char what[64];
        snprintf(what, sizeof what, "unary op %d backward", op);
        CHECK_ERR(what, max_rel(g, fd, n), 1e-6);
        dp_free(x), dp_free(u), dp_free(g), dp_free(fd);
    }
    /* float against double */
    float xf[5] = {0.3f, -1.2f, 2.0f, 0.01f, -0.5f}, yf[5];
    double xd[5], yd[5];
    for (int i = 0; i < 5; i++) xd[i] = xf[i];
    dp__k_unary_fwd_f32(yf, xf, 5, DP__UN_ERF, 0);
    dp__k_unary_fwd_f64(yd, xd, 5, DP__UN_ERF, 0);
    for (int i = 0; i < 5; i++) CHECK(fabs(yf[i] - yd[i]) < 1e-6);
}

/* ---- binary with broadcasting: a [2, 3, 4], b [2(or 1), 3, 1] ---------------------------- */
typedef struct {
    double *a, *b;
    int nd, dims[3], sa[3], sb[3], op;
} bin_ctx;
static void bin_f(void *c, double *y) {
    bin_ctx *q = c;
    dp__k_binary_fwd_f64(y, q->a, q->b, q->nd, q->dims, q->sa, q->sb, q->op);
}
static void test_binary(void) {
    for (int bb = 0; bb < 2; bb++) /* b per sample, or one for the batch (a constant) */
        for (int op = 0; op < DP__BIN_COUNT; op++) {
            bin_ctx c = {.nd = 3, .dims = {2, 3, 4}, .sa = {12, 4, 1}, .sb = {bb ? 0 : 3, 1, 0}, .op = op};
            const size_t na = 24, nb = bb ? 3 : 6, ny = 24;
            c.a = dnew(na), c.b = dnew(nb);
            fill_in(c.a, na, 0.5, 1.5); /* positive: Pow */
            fill_in(c.b, nb, 0.5, 1.5);
            double *u = dnew(ny), *y = dnew(ny), *ga = dnew(na), *gb = dnew(nb), *fa = dnew(na), *fb = dnew(nb);
            fill_in(u, ny, -1, 1);
            bin_f(&c, y);
            dp__k_binary_bwd_f64(ga, gb, u, c.a, c.b, y, c.nd, c.dims, c.sa, c.sb, op);
            fd_grad(bin_f, &c, c.a, na, u, ny, fa);
            fd_grad(bin_f, &c, c.b, nb, u, ny, fb);
            char what[64];
            snprintf(what, sizeof what, "binary op %d (b %s) da", op, bb ? "shared" : "per sample");
            CHECK_ERR(what, max_rel(ga, fa, na), 1e-6);
            snprintf(what, sizeof what, "binary op %d (b %s) db", op, bb ? "shared" : "per sample");
            CHECK_ERR(what, max_rel(gb, fb, nb), 1e-6);
            /* the forward: a[i] op b[broadcast] */
            CHECK(op != DP__BIN_ADD || fabs(y[5] - (c.a[5] + c.b[1])) < 1e-12);
            dp_free(c.a), dp_free(c.b), dp_free(u), dp_free(y), dp_free(ga), dp_free(gb), dp_free(fa), dp_free(fb);
        }
}

/* ---- softmax ------------------------------------------------------------------------------- */
typedef struct {
    double *x;
    int lg;
} sm_ctx;
static void sm_f(void *c, double *y) {
    sm_ctx *q = c;
    dp__k_softmax_fwd_f64(y, q->x, 3, 5, q->lg);
}
static void test_softmax(void) {
    for (int lg = 0; lg < 2; lg++) {
        double x[15], u[15], y[15], g[15], fd[15];
        fill_in(x, 15, -3, 3);
        fill_in(u, 15, -1, 1);
        sm_ctx c = {x, lg};
        sm_f(&c, y);
        double s = 0;
        for (int i = 0; i < 5; i++) s += lg ? exp(y[i]) : y[i];
        CHECK(fabs(s - 1) < 1e-12);
        dp__k_softmax_bwd_f64(g, u, y, 3, 5, lg);
        fd_grad(sm_f, &c, x, 15, u, 15, fd);
        CHECK_ERR(lg ? "log-softmax backward" : "softmax backward", max_rel(g, fd, 15), 1e-6);
    }
}

/* ---- permute, slice, concat: definitions and adjoints ----------------------------------------- */
static void test_layout(void) {
    /* [2 samples][2, 3, 4] -> perm (2, 0, 1): out[b][k][i][j] = in[b][i][j][k] */
    const int dims[3] = {2, 3, 4}, perm[3] = {2, 0, 1};
    double x[48], y[48], u[48], back[48];
    fill_in(x, 48, -1, 1);
    fill_in(u, 48, -1, 1);
    dp__k_permute_f64(y, x, 2, 3, dims, perm, 0);
    int bad = 0;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 4; k++) bad |= y[b * 24 + (k * 2 + i) * 3 + j] != x[b * 24 + (i * 3 + j) * 4 + k];
    CHECK(!bad);
    dp__k_permute_f64(back, u, 2, 3, dims, perm, 1);
    CHECK(fabs(dot(y, u, 48) - dot(x, back, 48)) < 1e-12);
    /* slice [outer 2, n 5, inner 3] -> count 2 from 4 by step -2 (positions 4, 2) */
    double s[2 * 30], t[2 * 12], v[2 * 12], w[2 * 30];
    fill_in(s, 60, -1, 1);
    fill_in(v, 24, -1, 1);
    dp__k_slice_f64(t, s, 2, 2, 5, 3, 4, 2, -2, 0);
    CHECK(t[12 + (1 * 2 + 1) * 3 + 2] == s[30 + (1 * 5 + 2) * 3 + 2]);
    dp__k_slice_f64(w, v, 2, 2, 5, 3, 4, 2, -2, 1);
    CHECK(fabs(dot(t, v, 24) - dot(s, w, 60)) < 1e-12);
    /* concat = slices written in place (mode 2): [2, 3] and [2, 2] along axis 1 of [2, 5] */
    double p[6] = {1, 2, 3, 4, 5, 6}, q[4] = {7, 8, 9, 10}, o[10];
    dp__k_slice_f64(o, p, 1, 2, 5, 1, 0, 3, 1, 2);
    dp__k_slice_f64(o, q, 1, 2, 5, 1, 3, 2, 1, 2);
    const double want[10] = {1, 2, 3, 7, 8, 4, 5, 6, 9, 10};
    CHECK(!memcmp(o, want, sizeof want));
}

/* ---- batched products: per sample G = 3 products [2, 4] x [4, 5], Bm one for all G ----------- */
typedef struct {
    double *A, *Bm;
    int gb;
} mm_ctx;
static void mm_f(void *c, double *y) {
    mm_ctx *q = c;
    dp__k_bmm_fwd_f64(y, q->A, q->Bm, 2, 3, 2, 4, 5, 1, q->gb);
}
static void test_bmm(void) {
    for (int gb = 0; gb < 2; gb++) {
        const size_t na = 2 * 3 * 8, nb = 2 * (gb ? 3 : 1) * 20, ny = 2 * 3 * 10;
        mm_ctx c = {dnew(na), dnew(nb), gb};
        fill_in(c.A, na, -1, 1);
        fill_in(c.Bm, nb, -1, 1);
        double *u = dnew(ny), *ga = dnew(na), *gbm = dnew(nb), *fa = dnew(na), *fb = dnew(nb);
        fill_in(u, ny, -1, 1);
        dp__k_bmm_bwd_f64(ga, gbm, 0, 0, u, c.A, c.Bm, 2, 3, 2, 4, 5, 1, gb);
        fd_grad(mm_f, &c, c.A, na, u, ny, fa);
        fd_grad(mm_f, &c, c.Bm, nb, u, ny, fb);
        CHECK_ERR(gb ? "bmm dA" : "bmm dA (B shared by the G products)", max_rel(ga, fa, na), 1e-6);
        CHECK_ERR(gb ? "bmm dB" : "bmm dB (B shared by the G products)", max_rel(gbm, fb, nb), 1e-6);
        /* acc: adds to what is there */
        double *ga2 = dnew(na);
        for (size_t i = 0; i < na; i++) ga2[i] = 1;
        dp__k_bmm_bwd_f64(ga2, NULL, 1, 0, u, c.A, c.Bm, 2, 3, 2, 4, 5, 1, gb);
        for (size_t i = 0; i < na; i++) ga2[i] -= 1;
        CHECK(max_rel(ga2, ga, na) < 1e-12);
        dp_free(c.A), dp_free(c.Bm), dp_free(u), dp_free(ga), dp_free(gbm), dp_free(fa), dp_free(fb), dp_free(ga2);
    }
}

/* ---- reductions over axes {0, 2} of [3, 2, 4] ----------------------------------------------- */
typedef struct {
    double *x;
    int mean;
} rd_ctx;
static const int RD[3] = {3, 2, 4};
static void rd_f(void *c, double *y) {
    rd_ctx *q = c;
    dp__k_reduce_fwd_f64(y, q->x, 2, 3, RD, 5u, q->mean);
}
static void test_reduce(void) {
    for (int mean = 0; mean < 2; mean++) {
        double x[48], u[4], y[4], g[48], fd[48];
        fill_in(x, 48, -1, 1);
        fill_in(u, 4, -1, 1);
        rd_ctx c = {x, mean};
        rd_f(&c, y);
        double s = 0; /* sample 1, output 1 (axis 1 = 1) */
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 4; k++) s += x[24 + (i * 2 + 1) * 4 + k];
        CHECK(fabs(y[3] - (mean ? s / 12 : s)) < 1e-12);
        dp__k_reduce_bwd_f64(g, u, 2, 3, RD, 5u, mean);
        fd_grad(rd_f, &c, x, 48, u, 4, fd);
        CHECK_ERR(mean ? "reduce mean backward" : "reduce sum backward", max_rel(g, fd, 48), 1e-6);
    }
}

int main(void) {
    dp_rng_seed(&R, 7);
    test_unary();
    test_binary();
    test_softmax();
    test_layout();
    test_bmm();
    test_reduce();
    return t_finish("test_tensor_kernels");
}
