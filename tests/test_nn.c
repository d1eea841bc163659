/* test_nn.c: every layer's backward, per-sample gradient and ghost norm against central
 * finite differences in double precision (the same kernel source compiled for double), and
 * the clipping modes against the microbatch reference (one sample at a time). */
#include <omp.h>

#include "nn/graph.h"
#include "nn/kernels/kernels.h"
#include "test.h"

static dp_rng R;

static void fill(double *a, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) a[i] = scale * (2 * dp_rng_uniform(&R) - 1);
}
static double *dnew(size_t n) { return dp_calloc(n ? n : 1, sizeof(double)); }
static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
/* max |a-b| / max(1e-3, max|b|) */
static double max_rel(const double *a, const double *b, size_t n) {
    double mx = 0, sc = 1e-3;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > mx) mx = d;
        if (fabs(b[i]) > sc) sc = fabs(b[i]);
    }
    return mx / sc;
}

/* A layer under test as a function of (x, theta) -> y, all double, batch B. */
typedef struct {
    int B;
    size_t nx, ny, nth; /* per batch sizes: input, output, params */
    void (*fwd)(void *ctx, double *y, const double *x, const double *th);
    void *ctx;
} fd_fn;

static const double H = 1e-6;

/* gradient of f = <u, y(x, th)> with respect to v (x or th) by central differences */
static void fd_grad(const fd_fn *f, double *g, double *x, double *th, const double *u, int wrt_x, size_t lo, size_t hi) {
    double *y = dnew(f->ny);
    double *v = wrt_x ? x : th;
    for (size_t j = lo; j < hi; j++) {
        double o = v[j];
        v[j] = o + H;
        f->fwd(f->ctx, y, x, th);
        double fp = dot(u, y, f->ny);
        v[j] = o - H;
        f->fwd(f->ctx, y, x, th);
        double fm = dot(u, y, f->ny);
        v[j] = o;
        g[j] = (fp - fm) / (2 * H);
    }
    dp_free(y);
}

/* ---- linear ---- */
typedef struct { int B, d, p, bias; } lin_ctx;
static void lin_fwd(void *c, double *y, const double *x, const double *th) {
    lin_ctx *l = c;
    dp__k_linear_fwd_f64(y, x, th, l->bias ? th + (size_t)l->p * l->d : NULL, l->B, l->d, l->p);
}

static void test_linear(int B, int d, int p, int bias) {
    lin_ctx c = {B, d, p, bias};
    size_t nw = (size_t)p * d, nth = nw + (bias ? p : 0);
    fd_fn f = {B, (size_t)B * d, (size_t)B * p, nth, lin_fwd, &c};
    double *x = dnew(f.nx), *th = dnew(nth), *u = dnew(f.ny), *gx = dnew(f.nx), *gth = dnew(nth);
    double *din = dnew(f.nx), *dth = dnew(nth), *ps = dnew((size_t)B * nth), *sq = dnew(B);
    fill(x, f.nx, 1);
    fill(th, nth, 0.5);
    fill(u, f.ny, 1);
    fd_grad(&f, gx, x, th, u, 1, 0, f.nx);
    fd_grad(&f, gth, x, th, u, 0, 0, nth);
    dp__k_linear_bwd_input_f64(din, u, th, B, d, p);
    dp__k_linear_bwd_param_f64(dth, bias ? dth + nw : NULL, u, x, B, d, p);
    CHECK(max_rel(din, gx, f.nx) < 1e-7);
    CHECK(max_rel(dth, gth, nth) < 1e-7);
    /* per-sample: FD of f_i = <u_i, y_i> through a batch-of-one forward */
    dp__k_linear_ps_grad_f64(ps, nth, u, x, B, d, p, bias);
    dp__k_linear_ghost_sq_f64(sq, u, x, B, d, p, bias);
    double worst = 0, worst_sq = 0;
    for (int i = 0; i < B; i++) {
        lin_ctx c1 = {1, d, p, bias};
        fd_fn f1 = {1, (size_t)d, (size_t)p, nth, lin_fwd, &c1};
        double *g1 = dnew(nth);
        fd_grad(&f1, g1, x + (size_t)i * d, th, u + (size_t)i * p, 0, 0, nth);
        double e = max_rel(ps + (size_t)i * nth, g1, nth);
        if (e > worst) worst = e;
        double n2 = dot(g1, g1, nth);
        double es = fabs(sq[i] - n2) / n2;
        if (es > worst_sq) worst_sq = es;
        dp_free(g1);
    }
    CHECK(worst < 1e-7);
    CHECK(worst_sq < 1e-7);
    if (worst >= 1e-7 || worst_sq >= 1e-7) fprintf(stderr, "linear B%d d%d p%d: ps %g ghost %g\n", B, d, p, worst, worst_sq);
    dp_free(x); dp_free(th); dp_free(u); dp_free(gx); dp_free(gth); dp_free(din); dp_free(dth); dp_free(ps); dp_free(sq);
}

/* ---- conv2d ---- */
typedef struct { int B; dp__conv_geom g; int bias; double *work; } conv_ctx;
static void conv_fwd(void *cv, double *y, const double *x, const double *th) {
    conv_ctx *c = cv;
    size_t nw = (size_t)c->g.Cout * (c->g.Cin / c->g.G) * c->g.k * c->g.k;
    dp__k_conv_fwd_f64(y, c->work, x, th, c->bias ? th + nw : NULL, c->B, &c->g);
}

/* d: dilation, G: groups (weight [Cout, Cin / G, k, k]); pad above, pl left, pb below, pr right */
static void test_conv_pads(int B, int Cin, int Hh, int Ww, int Cout, int k, int s, int pad, int pl, int pb, int pr,
                           int bias, int d, int G) {
    const int ext = (k - 1) * d + 1;
    int Ho = (Hh + pad + pb - ext) / s + 1, Wo = (Ww + pl + pr - ext) / s + 1, T = Ho * Wo, D = Cin * k * k, Dg = D / G;
    size_t nw = (size_t)Cout * Dg, nth = nw + (bias ? Cout : 0);
    const dp__conv_geom geom = {Cin, Hh, Ww, Cout, k, s, pad, pl, d, G, Ho, Wo, 1, 0, NULL};
    double *work = dnew(dp__conv_work(&geom, dp__max_threads()));
    conv_ctx c = {B, geom, bias, work};
    fd_fn f = {B, (size_t)B * Cin * Hh * Ww, (size_t)B * Cout * T, nth, conv_fwd, &c};
    double *x = dnew(f.nx), *th = dnew(nth), *u = dnew(f.ny), *gx = dnew(f.nx), *gth = dnew(nth), *y = dnew(f.ny);
    double *din = dnew(f.nx), *dth = dnew(nth), *ps = dnew((size_t)B * nth), *sq = dnew(B);
    fill(x, f.nx, 1);
    fill(th, nth, 0.5);
    fill(u, f.ny, 1);
    fd_grad(&f, gx, x, th, u, 1, 0, f.nx);
    fd_grad(&f, gth, x, th, u, 0, 0, nth);
    conv_fwd(&c, y, x, th);
    /* the forward against the definition: y[o, oy, ox] = b[o] + sum over the group's channels
     * and the taps of w[o, c, ky, kx] x[g Cin/G + c, oy s - pad + ky d, ox s - pad + kx d] */
    double ef = 0;
    for (int i = 0; i < B; i++)
        for (int o = 0; o < Cout; o++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    const int g = o / (Cout / G), cg = Cin / G;
                    double r = bias ? th[nw + o] : 0;
                    for (int ci = 0; ci < cg; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s - pad + ky * d, ix = ox * s - pl + kx * d;
                                if (iy < 0 || iy >= Hh || ix < 0 || ix >= Ww) continue;
                                r += th[(((size_t)o * cg + ci) * k + ky) * k + kx] *
                                     x[(((size_t)i * Cin + g * cg + ci) * Hh + iy) * Ww + ix];
                            }
                    double e = fabs(y[(((size_t)i * Cout + o) * Ho + oy) * Wo + ox] - r);
                    if (e > ef) ef = e;
                }
    CHECK(ef < 1e-12);
    dp__k_conv_bwd_input_f64(din, work, u, th, B, &geom);
    dp__k_conv_bwd_param_f64(dth, bias ? dth + nw : NULL, work, u, x, B, &geom);
    double ex = max_rel(din, gx, f.nx), et = max_rel(dth, gth, nth);
    CHECK(ex < 1e-7);
    CHECK(et < 1e-7);
    dp__k_conv_ps_grad_f64(ps, nth, work, u, x, B, &geom, bias);
    dp__k_conv_ghost_sq_f64(sq, work, u, x, B, &geom, bias);
    double worst = 0, worst_sq = 0;
    for (int i = 0; i < B; i++) {
        conv_ctx c1 = c;
        c1.B = 1;
        fd_fn f1 = {1, (size_t)Cin * Hh * Ww, (size_t)Cout * T, nth, conv_fwd, &c1};
        double *g1 = dnew(nth);
        fd_grad(&f1, g1, x + (size_t)i * Cin * Hh * Ww, th, u + (size_t)i * Cout * T, 0, 0, nth);
        double e = max_rel(ps + (size_t)i * nth, g1, nth);
        if (e > worst) worst = e;
        double n2 = dot(g1, g1, nth), es = fabs(sq[i] - n2) / n2;
        if (es > worst_sq) worst_sq = es;
        dp_free(g1);
    }
    CHECK(worst < 1e-7);
    CHECK(worst_sq < 1e-7);
    if (ef >= 1e-12 || ex >= 1e-7 || et >= 1e-7 || worst >= 1e-7 || worst_sq >= 1e-7)
        fprintf(stderr, "conv B%d Cin%d %dx%d Cout%d k%d s%d p%d d%d G%d: forward %g din %g dW %g ps %g ghost %g\n", B,
                Cin, Hh, Ww, Cout, k, s, pad, d, G, ef, ex, et, worst, worst_sq);
    dp_free(x); dp_free(th); dp_free(u); dp_free(gx); dp_free(gth); dp_free(y); dp_free(din); dp_free(dth);
    dp_free(ps); dp_free(sq); dp_free(work);
}

static void test_conv_dg(int B, int Cin, int Hh, int Ww, int Cout, int k, int s, int pad, int bias, int d, int G) {
    test_conv_pads(B, Cin, Hh, Ww, Cout, k, s, pad, pad, pad, pad, bias, d, G);
}

static void test_conv(int B, int Cin, int Hh, int Ww, int Cout, int k, int s, int pad, int bias) {
    test_conv_dg(B, Cin, Hh, Ww, Cout, k, s, pad, bias, 1, 1);
}

/* The unfolding against its definition, col[t = oy Wo + ox][(c k + ky) k + kx] = x[c, oy s - pt
 * + ky d, ox s - pl + kx d] or 0 outside, value for value: a padded layer whose padded image is
 * small reads a zero-padded copy (every window inner); a large one (Cin x Hp x Wp over 8192),
 * a dilated one or one without padding takes the row path with its bounds checks; a layer whose
 * rows are short next to its tap rows, the position-major path. */
static void test_im2col_paths(void) {
    const dp__conv_geom gs[] = {
        {1, 28, 28, 16, 8, 2, 2, 2, 1, 1, 13, 13, 0, 0, NULL},  /* the default CNN's first layer: padded copy */
        {3, 60, 60, 2, 3, 1, 1, 1, 1, 1, 60, 60, 0, 0, NULL},   /* 3 x 62 x 62 > 8192: bounds checks */
        {2, 9, 7, 3, 3, 2, 0, 1, 1, 1, 4, 4, 0, 0, NULL},       /* pads left and below only (Ho 4 reads row 9) */
        {2, 9, 8, 3, 3, 2, 2, 2, 2, 1, 5, 4, 0, 0, NULL},       /* dilated */
        {16, 12, 12, 32, 4, 2, 0, 0, 1, 1, 5, 5, 0, 0, NULL},   /* the second layer: position-major */
        {4, 7, 7, 4, 3, 1, 1, 1, 1, 1, 7, 7, 0, 0, NULL},       /* position-major with padding */
    };
    for (size_t q = 0; q < sizeof gs / sizeof gs[0]; q++) {
        const dp__conv_geom *g = &gs[q];
        const int k = g->k, D = g->Cin * k * k, T = g->Ho * g->Wo;
        const size_t nx = (size_t)g->Cin * g->H * g->W;
        float *x = dp_alloc(sizeof(float) * nx), *col = dp_alloc(sizeof(float) * (size_t)T * D);
        double *xd = dnew(nx), *cold = dnew((size_t)T * D);
        for (size_t j = 0; j < nx; j++) x[j] = (float)(xd[j] = (double)(j + 1));
        dp__k_im2col_f32(col, x, g);
        dp__k_im2col_f64(cold, xd, g);
        long bad = 0;
        for (int oy = 0; oy < g->Ho; oy++)
            for (int ox = 0; ox < g->Wo; ox++)
                for (int c = 0; c < g->Cin; c++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            const int iy = oy * g->s - g->pt + ky * g->d, ix = ox * g->s - g->pl + kx * g->d;
                            const double ref = iy < 0 || iy >= g->H || ix < 0 || ix >= g->W
                                                   ? 0
                                                   : xd[((size_t)c * g->H + iy) * g->W + ix];
                            const size_t at = ((size_t)oy * g->Wo + ox) * D + ((size_t)c * k + ky) * k + kx;
                            bad += col[at] != ref || cold[at] != ref;
                        }
        CHECK(bad == 0);
        if (bad) fprintf(stderr, "im2col geometry %zu: %ld values differ from the definition\n", q, bad);
        dp_free(x); dp_free(col); dp_free(xd); dp_free(cold);
    }
}

/* The convolution kernels work a few samples at a time (dp__conv_chunk: the unfolding of a
 * chunk in the thread's scratch, not the batch's): a batch spanning several chunks, the last
 * one partial, gives what one sample at a time gives (forward, input gradient), and the
 * weight gradient, per-sample gradients and ghost norms agree with one another. */
static void test_conv_chunks(int B, int Cin, int Hh, int Cout, int k, int s, int pad, int G) {
    const int Ho = (Hh + 2 * pad - k) / s + 1, T = Ho * Ho, D = Cin * k * k;
    const dp__conv_geom g = {Cin, Hh, Hh, Cout, k, s, pad, pad, 1, G, Ho, Ho, 1, 0, NULL};
    const int nc = dp__conv_chunk(&g);
    CHECK(B > 2 * nc && B % nc != 0);
    const size_t isz = (size_t)Cin * Hh * Hh, osz = (size_t)Cout * T, nw = (size_t)Cout * (D / G), nth = nw + Cout;
    double *work = dnew(dp__conv_work(&g, dp__max_threads())), *x = dnew(B * isz), *th = dnew(nth), *u = dnew(B * osz);
    double *y = dnew(B * osz), *y1 = dnew(osz), *din = dnew(B * isz), *din1 = dnew(isz), *dth = dnew(nth);
    double *ps = dnew((size_t)B * nth), *sq = dnew(B), *sum = dnew(nth);
    fill(x, B * isz, 1);
    fill(th, nth, 0.5);
    fill(u, B * osz, 1);
    dp__k_conv_fwd_f64(y, work, x, th, th + nw, B, &g);
    dp__k_conv_bwd_input_f64(din, work, u, th, B, &g);
    dp__k_conv_bwd_param_f64(dth, dth + nw, work, u, x, B, &g);
    dp__k_conv_ps_grad_f64(ps, nth, work, u, x, B, &g, 1);
    dp__k_conv_ghost_sq_f64(sq, work, u, x, B, &g, 1);
    double ef = 0, ei = 0, eq = 0;
    for (int i = 0; i < B; i++) {
        dp__k_conv_fwd_f64(y1, work, x + i * isz, th, th + nw, 1, &g);
        dp__k_conv_bwd_input_f64(din1, work, u + i * osz, th, 1, &g);
        double e = max_rel(y + i * osz, y1, osz);
        if (e > ef) ef = e;
        e = max_rel(din + i * isz, din1, isz);
        if (e > ei) ei = e;
        const double *pi = ps + (size_t)i * nth, n2 = dot(pi, pi, nth);
        e = fabs(sq[i] - n2) / n2;
        if (e > eq) eq = e;
        for (size_t j = 0; j < nth; j++) sum[j] += pi[j];
    }
    const double ew = max_rel(dth, sum, nth);
    CHECK(ef < 1e-12);
    CHECK(ei < 1e-12);
    CHECK(ew < 1e-12);
    CHECK(eq < 1e-12);
    if (ef >= 1e-12 || ei >= 1e-12 || ew >= 1e-12 || eq >= 1e-12)
        fprintf(stderr, "conv chunks B%d (chunk %d) Cin%d %d k%d s%d p%d G%d: forward %g din %g dW %g ghost %g\n", B, nc,
                Cin, Hh, k, s, pad, G, ef, ei, ew, eq);
    dp_free(work); dp_free(x); dp_free(th); dp_free(u); dp_free(y); dp_free(y1); dp_free(din); dp_free(din1);
    dp_free(dth); dp_free(ps); dp_free(sq); dp_free(sum);
}

/* ---- parameter-free layers: input gradient only ---- */
typedef struct { int kind, B, C, H, W; dp__pool_geom g; int Ho, Wo; int32_t *arg; unsigned char *mask; double *y; } act_ctx;
static void act_fwd(void *cv, double *y, const double *x, const double *th) {
    act_ctx *c = cv;
    size_t n = (size_t)c->B * c->C * c->H * c->W;
    switch (c->kind) {
    case DP_LAYER_RELU: dp__k_relu_fwd_f64(y, x, n); break;
    case DP_LAYER_TANH: dp__k_tanh_fwd_f64(y, x, n); break;
    case DP_LAYER_SIGMOID: dp__k_sigmoid_fwd_f64(y, x, n); break;
    case DP_LAYER_GLOBALAVGPOOL: dp__k_gap_fwd_f64(y, x, c->B, c->C, c->H * c->W); break;
    case DP_LAYER_MAXPOOL: dp__k_maxpool_fwd_f64(y, c->arg, x, c->B, c->C, c->H, c->W, &c->g, c->Ho, c->Wo); break;
    case DP_LAYER_AVGPOOL: dp__k_avgpool_fwd_f64(y, x, c->B, c->C, c->H, c->W, &c->g, c->Ho, c->Wo); break;
    case DP_LAYER_DROPOUT: dp__k_dropout_fwd_f64(y, x, c->mask, 1 / 0.7, n); break;
    }
}

/* the pooling kinds' geometry g (padding above, left, below, right; dilation; avgpool's
 * count_include_pad), with the output sizes of floor or ceil mode */
static void test_act_geom(int kind, int B, int C, int Hh, int Ww, dp__pool_geom geom, int ceil_mode) {
    int pool = kind == DP_LAYER_MAXPOOL || kind == DP_LAYER_AVGPOOL, gap = kind == DP_LAYER_GLOBALAVGPOOL;
    const int k = geom.k, s = geom.s, pad = geom.pt, cip = geom.count_pad, ext = (k - 1) * (geom.d > 1 ? geom.d : 1) + 1;
    int Ho = pool ? dp__pool_out(Hh, geom.pt, geom.pb, ext, s, ceil_mode) : gap ? 1 : Hh;
    int Wo = pool ? dp__pool_out(Ww, geom.pl, geom.pr, ext, s, ceil_mode) : gap ? 1 : Ww;
    size_t nx = (size_t)B * C * Hh * Ww, ny = (size_t)B * C * Ho * Wo;
    act_ctx c = {kind, B, C, Hh, Ww, geom, Ho, Wo, dp_calloc(ny, sizeof(int32_t)), dp_calloc(nx, 1), NULL};
    for (size_t j = 0; j < nx; j++) c.mask[j] = dp_rng_uniform(&R) < 0.7;
    fd_fn f = {B, nx, ny, 0, act_fwd, &c};
    double *x = dnew(nx), *u = dnew(ny), *g = dnew(nx), *din = dnew(nx), *y = dnew(ny);
    fill(x, nx, 2);
    /* keep inputs away from kinks (relu at 0, ties in max pooling) so FD is well defined */
    for (size_t j = 0; j < nx; j++)
        if (fabs(x[j]) < 1e-3) x[j] = 0.5;
    if (kind == DP_LAYER_MAXPOOL)
        for (size_t j = 0; j < nx; j++) x[j] = (double)((j * 7919) % 1009) / 1009.0 + 1e-3 * x[j];
    fill(u, ny, 1);
    fd_grad(&f, g, x, NULL, u, 1, 0, nx);
    act_fwd(&c, y, x, NULL);
    switch (kind) {
    case DP_LAYER_RELU: dp__k_relu_bwd_f64(din, u, y, nx); break;
    case DP_LAYER_TANH: dp__k_tanh_bwd_f64(din, u, y, nx); break;
    case DP_LAYER_SIGMOID: dp__k_sigmoid_bwd_f64(din, u, y, nx); break;
    case DP_LAYER_GLOBALAVGPOOL: dp__k_gap_bwd_f64(din, u, B, C, Hh * Ww); break;
    case DP_LAYER_MAXPOOL: dp__k_maxpool_bwd_f64(din, u, c.arg, B, C, Hh, Ww, Ho, Wo); break;
    case DP_LAYER_AVGPOOL: dp__k_avgpool_bwd_f64(din, u, B, C, Hh, Ww, &c.g, Ho, Wo); break;
    case DP_LAYER_DROPOUT: dp__k_dropout_bwd_f64(din, u, c.mask, 1 / 0.7, nx); break;
    }
    double e = max_rel(din, g, nx);
    CHECK(e < 1e-7);
    if (e >= 1e-7)
        fprintf(stderr, "%s (pad %d, count_include_pad %d): input gradient rel err %g\n", dp_layer_kind_name(kind), pad, cip, e);
    dp_free(c.arg); dp_free(c.mask); dp_free(x); dp_free(u); dp_free(g); dp_free(din); dp_free(y);
}
/* pad: implicit padding of the pooling kinds on every side; cip: avgpool's count_include_pad */
static void test_act_pad(int kind, int B, int C, int Hh, int Ww, int k, int s, int pad, int cip) {
    dp__pool_geom g = {k, s, pad, pad, pad, pad, 1, cip};
    test_act_geom(kind, B, C, Hh, Ww, g, 0);
}
static void test_act(int kind, int B, int C, int Hh, int Ww, int k, int s) { test_act_pad(kind, B, C, Hh, Ww, k, s, 0, 1); }

/* padded pooling forward values against hand-computed ones: a 4x4 plane, k 3, s 2, pad 1 ->
 * 2x2 outputs whose windows cover 2x2 (top left), 2x3, 3x2 and 3x3 real positions */
static void test_pool_pad_values(void) {
    /* output sizes, as PyTorch's nn.MaxPool2d computes them: floor; ceil; ceil dropping a last
     * window that would start in the trailing padding (5 values, pad 1, k 2, s 2: windows at
     * -1, 1, 3; a fourth at 5 would start in the padding) */
    CHECK(dp__pool_out(4, 0, 0, 3, 2, 0) == 1 && dp__pool_out(4, 0, 0, 3, 2, 1) == 2);
    CHECK(dp__pool_out(5, 1, 1, 2, 2, 0) == 3 && dp__pool_out(5, 1, 1, 2, 2, 1) == 3);
    CHECK(dp__pool_out(6, 1, 1, 2, 2, 1) == 4 && dp__pool_out(7, 0, 1, 5, 2, 1) == 3 && dp__pool_out(2, 0, 0, 3, 1, 0) == 0);
    double x[16], y[4], want[4];
    int32_t arg[4];
    for (int j = 0; j < 16; j++) x[j] = -1 - j; /* all negative: a zero pad must never win */
    dp__pool_geom g = {3, 2, 1, 1, 1, 1, 1, 0};
    dp__k_maxpool_fwd_f64(y, arg, x, 1, 1, 4, 4, &g, 2, 2);
    /* windows rows/cols [-1,1] and [1,3]: maxima at (0,0), (0,1), (1,0), (1,1) */
    const int32_t warg[4] = {0, 1, 4, 5};
    for (int j = 0; j < 4; j++) CHECK(arg[j] == warg[j] && y[j] == x[warg[j]]);
    for (int j = 0; j < 16; j++) x[j] = 1;
    const double n[4] = {4, 6, 6, 9};
    dp__k_avgpool_fwd_f64(y, x, 1, 1, 4, 4, &g, 2, 2); /* exclude: the mean of real positions */
    for (int j = 0; j < 4; j++) CHECK(fabs(y[j] - 1) < 1e-15);
    g.count_pad = 1;
    dp__k_avgpool_fwd_f64(y, x, 1, 1, 4, 4, &g, 2, 2); /* include: pads count as zeros */
    for (int j = 0; j < 4; j++) want[j] = n[j] / 9;
    for (int j = 0; j < 4; j++) CHECK(fabs(y[j] - want[j]) < 1e-15);
}

/* Max pooling picks the first maximum of a window in scan order (rows, then columns), and a
 * NaN wins: checked against a plain scan on planes full of ties and NaNs, for the windows the
 * kernel pools row by row and for those (stride 1, small planes) it pools separably */
static void test_maxpool_order(int C, int Hh, int Ww, int k, int s) {
    const int Ho = (Hh - k) / s + 1, Wo = (Ww - k) / s + 1;
    double *x = dnew((size_t)C * Hh * Ww), *y = dnew((size_t)C * Ho * Wo);
    int32_t *arg = dp_calloc((size_t)C * Ho * Wo, sizeof(int32_t));
    for (int j = 0; j < C * Hh * Ww; j++) x[j] = j % 11 == 5 ? NAN : (double)(((uint32_t)j * 2654435761u >> 7) % 3); /* ties: 0, 1, 2 */
    dp__pool_geom g = {k, s, 0, 0, 0, 0, 1, 0};
    dp__k_maxpool_fwd_f64(y, arg, x, 1, C, Hh, Ww, &g, Ho, Wo);
    int bad = 0;
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                const double *xc = x + (size_t)c * Hh * Ww;
                double best = 0;
                int bi = -1;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const int p = (oy * s + ky) * Ww + ox * s + kx;
                        if (bi < 0 || xc[p] > best || (isnan(xc[p]) && !isnan(best))) {
                            best = xc[p];
                            bi = p;
                        }
                    }
                const size_t o = ((size_t)c * Ho + oy) * Wo + ox;
                bad += arg[o] != bi || !(y[o] == best || (isnan(y[o]) && isnan(best)));
            }
    CHECK(bad == 0);
    if (bad) fprintf(stderr, "maxpool %d x %dx%d k%d s%d: %d outputs differ from the scan order\n", C, Hh, Ww, k, s, bad);
    if (dp__maxpool_recomputes(&g, Hh, Ww, Ho, Wo)) {
        /* the path that saves no indices: the same outputs without them, and a backward that
         * finds the winners again gives the input gradient of the saved indices' */
        double *y2 = dnew((size_t)C * Ho * Wo), *u = dnew((size_t)C * Ho * Wo);
        double *d1 = dnew((size_t)C * Hh * Ww), *d2 = dnew((size_t)C * Hh * Ww);
        dp__k_maxpool_fwd_f64(y2, NULL, x, 1, C, Hh, Ww, &g, Ho, Wo);
        fill(u, (size_t)C * Ho * Wo, 1);
        dp__k_maxpool_bwd_f64(d1, u, arg, 1, C, Hh, Ww, Ho, Wo);
        dp__k_maxpool_bwd_recompute_f64(d2, u, x, 1, C, Hh, Ww, Ho, Wo, 0);
        int diff = 0;
        for (int j = 0; j < C * Ho * Wo; j++) diff += !(y2[j] == y[j] || (isnan(y2[j]) && isnan(y[j])));
        for (int j = 0; j < C * Hh * Ww; j++) diff += d1[j] != d2[j];
        CHECK(diff == 0);
        dp_free(y2); dp_free(u); dp_free(d1); dp_free(d2);
    }
    dp_free(x); dp_free(y); dp_free(arg);
}

/* ---- losses: d loss_i / d z against FD ---- */
static void test_losses(void) {
    const int B = 5, K = 7;
    double z[35], dz[35], t[35], loss[5], lp[5], lm[5];
    int32_t y[5] = {0, 3, 6, 2, 2};
    fill(z, 35, 3);
    fill(t, 35, 1);
    for (int which = 0; which < 2; which++) {
        if (which == 0) dp__k_xent_f64(loss, dz, z, y, B, K);
        else dp__k_mse_f64(loss, dz, z, t, B, K);
        double worst = 0;
        for (int j = 0; j < B * K; j++) {
            double o = z[j];
            z[j] = o + H;
            if (which == 0) dp__k_xent_f64(lp, NULL, z, y, B, K);
            else dp__k_mse_f64(lp, NULL, z, t, B, K);
            z[j] = o - H;
            if (which == 0) dp__k_xent_f64(lm, NULL, z, y, B, K);
            else dp__k_mse_f64(lm, NULL, z, t, B, K);
            z[j] = o;
            double fd = (lp[j / K] - lm[j / K]) / (2 * H);
            if (fabs(fd - dz[j]) > worst) worst = fabs(fd - dz[j]);
        }
        CHECK(worst < 1e-7);
    }
    /* a known value: uniform logits -> log K */
    double zu[7] = {0}, l1;
    int32_t y0 = 4;
    dp__k_xent_f64(&l1, NULL, zu, &y0, 1, 7);
    CHECK_CLOSE(l1, log(7.0), 1e-12);
    /* non-finite detection */
    float zf[3] = {1, NAN, 0}, lf, dzf[3];
    int32_t yf = 0;
    CHECK(dp_loss_xent(zf, &yf, 1, 3, &lf, dzf) == DP_ERR_NONFINITE);
    yf = 3;
    CHECK(dp_loss_xent(zf, &yf, 1, 3, &lf, dzf) == DP_ERR_RANGE);
}

/* float and double kernels agree (the engine runs the float ones) */
static void test_f32_vs_f64(void) {
    const int B = 3, Cin = 2, Hh = 9, Ww = 9, Cout = 4, k = 3, s = 2, pad = 1;
    int Ho = (Hh + 2 * pad - k) / s + 1, Wo = Ho, T = Ho * Wo, D = Cin * k * k;
    size_t nx = (size_t)B * Cin * Hh * Ww, ny = (size_t)B * Cout * T, nw = (size_t)Cout * D;
    const dp__conv_geom geom = {Cin, Hh, Ww, Cout, k, s, pad, pad, 1, 1, Ho, Wo, 1, 0, NULL};
    const size_t nwk = dp__conv_work(&geom, dp__max_threads());
    double *xd = dnew(nx), *wd = dnew(nw + Cout), *yd = dnew(ny), *wkd = dnew(nwk);
    float *wkf = dp_alloc(nwk * 4);
    float *xf = dp_alloc(nx * 4), *wf = dp_alloc((nw + Cout) * 4), *yf = dp_alloc(ny * 4);
    fill(xd, nx, 1);
    fill(wd, nw + Cout, 1);
    for (size_t j = 0; j < nx; j++) xf[j] = (float)xd[j], xd[j] = xf[j];
    for (size_t j = 0; j < nw + Cout; j++) wf[j] = (float)wd[j], wd[j] = wf[j];
    dp__k_conv_fwd_f64(yd, wkd, xd, wd, wd + nw, B, &geom);
    dp__k_conv_fwd_f32(yf, wkf, xf, wf, wf + nw, B, &geom);
    double worst = 0;
    for (size_t j = 0; j < ny; j++)
        if (fabs(yf[j] - yd[j]) > worst) worst = fabs(yf[j] - yd[j]);
    CHECK(worst < 1e-5);
    /* the float tanh (no libm) against libm's double tanh: within 1e-7 relative (about an ulp)
     * on a dense grid of [-10, 10] and at tiny values, monotone, odd, exactly +-1 from |x| = 9.1
     * on, NaN propagated, infinities to +-1, -0 kept */
    enum { NT = 200001, NS = 64 };
    float *tx = dp_alloc(sizeof(float) * (NT + NS)), *ty = dp_alloc(sizeof(float) * (NT + NS));
    for (int j = 0; j < NT; j++) tx[j] = (float)((j - NT / 2) * 1e-4);
    for (int j = 0; j < NS; j++) tx[NT + j] = ldexpf(1.0f, -j - 1) * (j % 2 ? -1.0f : 1.0f);
    dp__k_tanh_fwd_f32(ty, tx, NT + NS);
    double wt = 0;
    int mono = 1, odd = 1;
    for (int j = 0; j < NT + NS; j++) {
        double ref = tanh((double)tx[j]), e = fabs(ty[j] - ref) / (fabs(ref) > 1e-30 ? fabs(ref) : 1.0);
        if (e > wt) wt = e;
        if (j > 0 && j < NT && ty[j] < ty[j - 1]) mono = 0;
        if (j < NT && ty[j] != -ty[NT - 1 - j]) odd = 0;
        if (j < NT && fabsf(tx[j]) >= 9.1f && fabsf(ty[j]) != 1.0f) odd = 0;
    }
    CHECK(wt < 1e-7);
    if (wt >= 1e-7) fprintf(stderr, "float tanh: worst relative error %g\n", wt);
    CHECK(mono);
    CHECK(odd);
    float sx[5] = {NAN, INFINITY, -INFINITY, -0.0f, 1e30f}, sy[5];
    dp__k_tanh_fwd_f32(sy, sx, 5);
    CHECK(isnan(sy[0]) && sy[1] == 1.0f && sy[2] == -1.0f && sy[3] == 0.0f && signbit(sy[3]) && sy[4] == 1.0f);
    dp_free(tx);
    dp_free(ty);
    dp_free(xd); dp_free(wd); dp_free(yd); dp_free(wkd); dp_free(wkf); dp_free(xf); dp_free(wf); dp_free(yf);
}

/* The float convolution kernels against the double ones where the float build has its own code
 * (with AVX2; elsewhere these run the im2col path and OpenBLAS). The direct path (few input
 * channels, kernel at most 8 wide, stride 1 or 2, output rows of 8 to 16; conv_direct.h): the
 * default CNN's first convolution, k < 8 (masked lanes), odd k (a lone last kernel row), Cout
 * not a multiple of 6, stride 1, uneven padding, Wo = 8 and 16. The small GEMMs (N a multiple
 * of 8; kernels_f32.c): the default CNN's second convolution, two groups of 8 channels and 8
 * patch values, 40 channels (a 32-column panel and an 8-column one) and 72 patch values.
 * B = 1 and odd B (uneven runs per thread, a last row block of 1 or 2). Forward with and
 * without the bias and the fused tanh, per-sample gradients (with bias sums), the input
 * gradient, and the batch gradient added to what the buffer held (with and without db). */
static void test_conv_f32_paths(void) {
    const dp__conv_geom gs[] = {
        {1, 28, 28, 16, 8, 2, 2, 2, 1, 1, 13, 13, 0, 0, NULL}, /* the default CNN's */
        {1, 28, 28, 16, 8, 2, 3, 3, 1, 1, 14, 14, 0, 0, NULL},
        {3, 12, 12, 7, 5, 1, 2, 2, 1, 1, 12, 12, 0, 0, NULL},
        {2, 20, 21, 13, 3, 2, 1, 0, 1, 1, 10, 10, 0, 0, NULL},
        {1, 17, 16, 5, 1, 2, 0, 0, 1, 1, 9, 8, 0, 0, NULL},
        {4, 18, 18, 6, 3, 1, 0, 0, 1, 1, 16, 16, 0, 0, NULL},
        {16, 12, 12, 32, 4, 2, 0, 0, 1, 1, 5, 5, 0, 0, NULL}, /* the default CNN's second */
        {4, 7, 7, 16, 2, 1, 0, 0, 1, 2, 6, 6, 0, 0, NULL},
        {8, 6, 6, 40, 3, 1, 1, 1, 1, 1, 6, 6, 0, 0, NULL},
        /* more of the direct path (the review's list): one output row and an odd k (the spare
         * row), Wo = 9, 11, 15, Cout % 6 = 2 and 3, even k at stride 1 and 2, k = 7, padding
         * beyond the kernel (whole windows of zeros) */
        {2, 3, 11, 8, 3, 1, 0, 0, 1, 1, 1, 9, 0, 0, NULL},
        {1, 10, 24, 9, 4, 2, 0, 1, 1, 1, 4, 11, 0, 0, NULL},
        {3, 8, 18, 14, 6, 1, 1, 1, 1, 1, 5, 15, 0, 0, NULL},
        {1, 6, 12, 7, 2, 2, 3, 3, 1, 1, 6, 8, 0, 0, NULL},
        {2, 15, 15, 12, 7, 2, 3, 3, 1, 1, 8, 8, 0, 0, NULL},
        /* more small GEMMs: 24- and 16-column panels; a patch of 576 (OpenBLAS for the input
         * gradient and, with many positions a chunk, the weight gradient) */
        {8, 8, 8, 24, 3, 1, 0, 0, 1, 1, 6, 6, 0, 0, NULL},
        {4, 6, 6, 16, 2, 1, 0, 0, 1, 1, 5, 5, 0, 0, NULL},
        {36, 5, 5, 8, 4, 1, 0, 0, 1, 1, 2, 2, 0, 0, NULL},
    };
    const int Bs[] = {5, 3, 1, 7, 3, 2, 9, 4, 5, 3, 4, 2, 5, 3, 6, 3, 20};
    /* which take the direct path where the build has it (the test would otherwise check the
     * im2col path twice without noticing) */
    const int direct[] = {1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0};
#if defined(__AVX2__) && defined(__FMA__)
    const int have_direct = 1;
#else
    const int have_direct = 0;
#endif
    CHECK(sizeof Bs / sizeof Bs[0] == sizeof gs / sizeof gs[0] && sizeof direct == sizeof Bs);
    for (size_t q = 0; q < sizeof gs / sizeof gs[0]; q++) {
        const dp__conv_geom g = gs[q];
        CHECK(dp__k_conv_direct_f32(&g) == (have_direct && direct[q]));
        const int B = Bs[q], T = g.Ho * g.Wo, D = g.Cin * g.k * g.k / g.G;
        const size_t isz = (size_t)g.Cin * g.H * g.W, osz = (size_t)g.Cout * T, nw = (size_t)g.Cout * D,
                     nth = nw + g.Cout, nwk = dp__conv_work(&g, dp__max_threads());
        double *xd = dnew(B * isz), *wd = dnew(nth), *ud = dnew(B * osz), *yd = dnew(B * osz), *wkd = dnew(nwk);
        double *psd = dnew(B * nth), *dwd = dnew(nth), *dxd = dnew(B * isz);
        float *dxf = dp_alloc(sizeof(float) * B * isz);
        float *xf = dp_alloc(sizeof(float) * B * isz), *wf = dp_alloc(sizeof(float) * nth);
        float *uf = dp_alloc(sizeof(float) * B * osz), *yf = dp_alloc(sizeof(float) * B * osz);
        float *wkf = dp_alloc(sizeof(float) * nwk), *psf = dp_alloc(sizeof(float) * B * nth), *dwf = dp_alloc(sizeof(float) * nth);
        fill(xd, B * isz, 1);
        fill(wd, nth, 1);
        fill(ud, B * osz, 1);
        for (size_t j = 0; j < B * isz; j++) xf[j] = (float)xd[j], xd[j] = xf[j];
        for (size_t j = 0; j < nth; j++) wf[j] = (float)wd[j], wd[j] = wf[j];
        for (size_t j = 0; j < B * osz; j++) uf[j] = (float)ud[j], ud[j] = uf[j];
        double e[7] = {0};
        dp__k_conv_bwd_input_f64(dxd, wkd, ud, wd, B, &g);
        dp__k_conv_bwd_input_f32(dxf, wkf, uf, wf, B, &g);
        for (size_t j = 0; j < B * isz; j++) e[6] = fmax(e[6], fabs(dxf[j] - dxd[j]) / (1 + fabs(dxd[j])));
        for (int v = 0; v < 3; v++) { /* bias; none; bias and tanh */
            dp__conv_geom gv = g;
            gv.tanh = v == 2;
            dp__k_conv_fwd_f64(yd, wkd, xd, wd, v == 1 ? NULL : wd + nw, B, &g);
            if (gv.tanh) dp__k_tanh_fwd_f64(yd, yd, B * osz);
            dp__k_conv_fwd_f32(yf, wkf, xf, wf, v == 1 ? NULL : wf + nw, B, &gv);
            for (size_t j = 0; j < B * osz; j++) e[v] = fmax(e[v], fabs(yf[j] - yd[j]) / (1 + fabs(yd[j])));
        }
        dp__k_conv_ps_grad_f64(psd, nth, wkd, ud, xd, B, &g, 1);
        for (size_t j = 0; j < B * nth; j++) psf[j] = NAN; /* every entry written */
        dp__k_conv_ps_grad_f32(psf, nth, wkf, uf, xf, B, &g, 1);
        for (size_t j = 0; j < B * nth; j++) e[3] = fmax(e[3], isnan(psf[j]) ? 1 : fabs(psf[j] - psd[j]) / (1 + fabs(psd[j])));
        for (int v = 0; v < 2; v++) { /* the batch gradient is added: start from w; with db and without */
            for (size_t j = 0; j < nth; j++) dwd[j] = wd[j], dwf[j] = wf[j];
            dp__k_conv_bwd_param_f64(dwd, v ? NULL : dwd + nw, wkd, ud, xd, B, &g);
            dp__k_conv_bwd_param_f32(dwf, v ? NULL : dwf + nw, wkf, uf, xf, B, &g);
            for (size_t j = 0; j < nth; j++) e[4 + v] = fmax(e[4 + v], fabs(dwf[j] - dwd[j]) / (1 + fabs(dwd[j])));
        }
        const double tol = 2e-6 * sqrt((double)(D > T * B ? D : T * B));
        int ok = 1;
        for (int v = 0; v < 7; v++) ok &= e[v] < tol;
        CHECK(ok);
        if (!ok)
            fprintf(stderr,
                    "conv f32 geometry %zu: forward %g, no bias %g, tanh %g, per-sample %g, dW %g, no db %g, input %g (tol %g)\n",
                    q, e[0], e[1], e[2], e[3], e[4], e[5], e[6], tol);
        dp_free(xd); dp_free(wd); dp_free(ud); dp_free(yd); dp_free(wkd); dp_free(psd); dp_free(dwd); dp_free(dxd); dp_free(dxf);
        dp_free(xf); dp_free(wf); dp_free(uf); dp_free(yf); dp_free(wkf); dp_free(psf); dp_free(dwf);
    }
}

/* The float ghost norms of convolutions with small Grams (T <= 32: with AVX2 their upper
 * triangle by blocks of 3 x 4 rows and the contraction with the output gradient by the small
 * GEMM, kernels_f32.c) against the double kernels' (GEMM): the default CNN's second
 * convolution, a patch length with a tail (D = 27, not a multiple of 8), groups (Dg = 18),
 * T = 1..32 with partial blocks, and bias. */
static void test_ghost_f32(void) {
    const dp__conv_geom gs[] = {
        {16, 12, 12, 32, 4, 2, 0, 0, 1, 1, 5, 5, 1, 0, NULL},
        {3, 6, 6, 5, 3, 1, 0, 0, 1, 1, 4, 4, 1, 0, NULL},
        {4, 6, 6, 6, 3, 1, 0, 0, 1, 2, 4, 4, 1, 0, NULL},
        {2, 7, 7, 3, 2, 1, 0, 0, 1, 1, 6, 6, 1, 0, NULL},  /* T = 36 > 32: the GEMM path in both */
        {5, 3, 3, 4, 3, 1, 0, 0, 1, 1, 1, 1, 1, 0, NULL},  /* T = 1 */
        {8, 5, 5, 4, 2, 1, 0, 0, 1, 1, 4, 4, 1, 0, NULL},  /* T = 16, D = 32 */
        {1, 9, 9, 3, 3, 2, 1, 1, 1, 1, 5, 5, 1, 0, NULL},  /* padded, D = 9 */
        /* T % 4 (the Gram's partial column block) and T % 3 (its partial row block) in every
         * combination, and output channels that leave a partial chunk of DP__GHOST_ROWS */
        {3, 2, 3, 4, 2, 1, 0, 0, 1, 1, 1, 2, 1, 0, NULL},  /* T = 2 */
        {2, 2, 4, 7, 2, 1, 0, 0, 1, 1, 1, 3, 1, 0, NULL},  /* T = 3, D = 8 */
        {5, 3, 4, 6, 2, 1, 0, 0, 1, 1, 2, 3, 1, 0, NULL},  /* T = 6 */
        {3, 2, 8, 9, 2, 1, 0, 0, 1, 1, 1, 7, 1, 0, NULL},  /* T = 7 */
        {4, 3, 8, 13, 2, 1, 0, 0, 1, 1, 2, 7, 1, 0, NULL}, /* T = 14, 13 channels */
        {6, 6, 7, 25, 2, 1, 0, 0, 1, 1, 5, 6, 1, 0, NULL}, /* T = 30, 25 channels */
        {3, 5, 9, 13, 2, 1, 0, 0, 1, 1, 4, 8, 1, 0, NULL}, /* T = 32 */
        {3, 4, 5, 26, 2, 1, 0, 0, 1, 1, 3, 4, 1, 0, NULL}, /* T = 12 */
    };
    const int B = 6;
    for (size_t q = 0; q < sizeof gs / sizeof gs[0]; q++) {
        const dp__conv_geom *g = &gs[q];
        const size_t nx = (size_t)B * g->Cin * g->H * g->W, ny = (size_t)B * g->Cout * g->Ho * g->Wo;
        float *xf = dp_alloc(sizeof(float) * nx), *uf = dp_alloc(sizeof(float) * ny);
        float *wf = dp_alloc(sizeof(float) * dp__conv_work(g, dp__max_threads()));
        double *xd = dnew(nx), *ud = dnew(ny), *wd = dnew(dp__conv_work(g, dp__max_threads())), *sf = dnew(B), *sd = dnew(B);
        for (size_t j = 0; j < nx; j++) xd[j] = xf[j] = (float)dp_rng_normal(&R);
        for (size_t j = 0; j < ny; j++) ud[j] = uf[j] = (float)dp_rng_normal(&R);
        for (int bias = 0; bias < 2; bias++) {
            memset(sf, 0, sizeof(double) * B);
            memset(sd, 0, sizeof(double) * B);
            dp__k_conv_ghost_sq_f32(sf, wf, uf, xf, B, g, bias);
            dp__k_conv_ghost_sq_f64(sd, wd, ud, xd, B, g, bias);
            double worst = 0;
            for (int b = 0; b < B; b++) {
                const double e = fabs(sf[b] - sd[b]) / sd[b];
                if (e > worst) worst = e;
            }
            CHECK(worst < 1e-5);
            if (worst >= 1e-5) fprintf(stderr, "float ghost norms, geometry %zu, bias %d: relative error %g\n", q, bias, worst);
        }
        dp_free(xf); dp_free(uf); dp_free(wf); dp_free(xd); dp_free(ud); dp_free(wd); dp_free(sf); dp_free(sd);
    }
}

/* ---- scale (nn/layers/scale.c): R rows of C channels of `inner` values ---- */
typedef struct { int R, C, inner, bias; } scale_ctx;
static void scale_fwd(void *cv, double *y, const double *x, const double *th) {
    scale_ctx *c = cv;
    if (c->bias) dp__k_bias_fwd_f64(y, x, th, c->R, c->C, c->inner);
    else dp__k_scale_fwd_f64(y, x, th, c->R, c->C, c->inner);
}

/* B samples of `rows` rows each: an image is (rows 1, inner H*W), a sequence (rows T, inner 1) */
static void test_scale(int B, int rows, int C, int inner, int bias) {
    scale_ctx c = {B * rows, C, inner, bias};
    const size_t per = (size_t)rows * C * inner, nx = (size_t)B * per;
    fd_fn f = {B, nx, nx, (size_t)C, scale_fwd, &c};
    double *x = dnew(nx), *th = dnew(C), *u = dnew(nx), *gx = dnew(nx), *gth = dnew(C);
    double *din = dnew(nx), *dth = dnew(C), *ps = dnew((size_t)B * C);
    fill(x, nx, 1);
    fill(th, C, 1);
    fill(u, nx, 1);
    fd_grad(&f, gx, x, th, u, 1, 0, nx);
    fd_grad(&f, gth, x, th, u, 0, 0, C);
    if (bias) { /* the input backward is the identity; per-sample and batch sums of u */
        memcpy(din, u, sizeof(double) * nx);
        dp__k_bias_grad_f64(dth, NULL, 0, u, B, rows, C, inner);
    } else { /* the input backward is the forward on u */
        dp__k_scale_fwd_f64(din, u, th, B * rows, C, inner);
        dp__k_scale_bwd_param_f64(dth, u, x, B * rows, C, inner);
    }
    CHECK(max_rel(din, gx, nx) < 1e-7);
    CHECK(max_rel(dth, gth, C) < 1e-7);
    if (bias) dp__k_bias_grad_f64(NULL, ps, C, u, B, rows, C, inner);
    else dp__k_scale_ps_grad_f64(ps, C, u, x, B, rows, C, inner);
    double worst = 0;
    for (int i = 0; i < B; i++) {
        scale_ctx c1 = {rows, C, inner, bias};
        fd_fn f1 = {1, per, per, (size_t)C, scale_fwd, &c1};
        double *g1 = dnew(C);
        fd_grad(&f1, g1, x + (size_t)i * per, th, u + (size_t)i * per, 0, 0, C);
        double e = max_rel(ps + (size_t)i * C, g1, C);
        if (e > worst) worst = e;
        dp_free(g1);
    }
    CHECK(worst < 1e-7);
    if (worst >= 1e-7) fprintf(stderr, "%s B%d rows%d C%d inner%d: ps %g\n", bias ? "bias" : "scale", B, rows, C, inner, worst);
    dp_free(x); dp_free(th); dp_free(u); dp_free(gx); dp_free(gth); dp_free(din); dp_free(dth); dp_free(ps);
}

/* ---- the engine: clipping modes against the microbatch reference ---- */

/* A layer of over 2^18 parameters clipped on the fly still gets a row per thread a chunk (the
 * per-sample kernels share a chunk's rows among the threads): its plan keeps that many rows
 * (dp_model_describe_plan prints the bytes kept, here 270,300 floats a row) */
static void check_fused_rows(void) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create("conv2d(300,3) flatten linear(2)", 100, 33, 33, &m));
    if (!m) return;
    char plan[4096], want[64];
    dp_clip_params cp = {DP_CLIP_AUTO, 1.0, (size_t)1 << 40, 0};
    CHECK_OK(dp_model_describe_plan(m, &cp, 64, plan, sizeof plan));
    snprintf(want, sizeof want, "%.1f MiB", 4.0 * 270300 * dp__max_threads() / (1 << 20));
    const char *row = strstr(plan, "on the fly");
    CHECK(row != NULL && strstr(row, want) != NULL);
    if (!row || !strstr(row, want)) fprintf(stderr, "plan (want %s kept):\n%s", want, plan);
    dp_model_destroy(m);
}

/* auto's plan for B rows clips the lowest layer's per-sample gradients on the fly */
static void check_plan_fused(const char *spec, int c, int h, int w, int B) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create(spec, c, h, w, &m));
    if (!m) return;
    char plan[4096];
    dp_clip_params cp = {DP_CLIP_AUTO, 1.0, 0, 0};
    CHECK_OK(dp_model_describe_plan(m, &cp, B, plan, sizeof plan));
    CHECK(strstr(plan, "on the fly") != NULL);
    dp_model_destroy(m);
}

static void check_modes(const char *spec, int c, int h, int w, int B, double C, int freeze_layer) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create(spec, c, h, w, &m));
    if (!m) return;
    dp_model_init(m, &R);
    if (freeze_layer >= 0) CHECK_OK(dp_model_set_frozen(m, freeze_layer, 1));
    size_t np = dp_model_num_params(m), dim = (size_t)c * h * w;
    int K = dp_model_output_size(m);
    float *x = dp_alloc(sizeof(float) * B * dim), *dz = dp_alloc(sizeof(float) * B * K);
    int32_t *y = dp_alloc(sizeof(int32_t) * B);
    for (size_t j = 0; j < B * dim; j++) x[j] = (float)(dp_rng_normal(&R));
    for (int b = 0; b < B; b++) y[b] = (int32_t)(dp_rng_u64(&R) % (uint64_t)K);
    /* microbatch reference */
    float *g = dp_alloc(sizeof(float) * B * np), *ref = dp_calloc(np, sizeof(float));
    double *rn = dnew(B);
    const float *logits;
    for (int b = 0; b < B; b++) {
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x + b * dim, 1, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y + b, 1, K, NULL, dz));
        CHECK_OK(dp_model_backward(m, dz, 1));
        memcpy(g + (size_t)b * np, dp_model_grad(m), sizeof(float) * np);
        double s = 0;
        for (size_t j = 0; j < np; j++) s += (double)g[(size_t)b * np + j] * g[(size_t)b * np + j];
        rn[b] = sqrt(s);
        double r = C / (rn[b] + 1e-6);
        if (r > 1) r = 1;
        for (size_t j = 0; j < np; j++) ref[j] += (float)(r * g[(size_t)b * np + j]);
    }
    /* frozen coordinates have zero gradient in the reference */
    const unsigned char *mask = dp_model_trainable_mask(m);
    for (size_t j = 0; j < np; j++)
        if (!mask[j]) CHECK(ref[j] == 0.0f);
    float *norms = dp_alloc(sizeof(float) * B), *fac = dp_alloc(sizeof(float) * B);
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_clip_params cp = {(dp_clip_mode)mode, C, 0, 0};
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
        int bad = -1;
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, fac, &bad));
        CHECK(bad == 0);
        double e = t_rel_err(dp_model_grad(m), ref, np), en = 0;
        for (int b = 0; b < B; b++) {
            double d = fabs(norms[b] - rn[b]) / rn[b];
            if (d > en) en = d;
            /* the clipped per-sample gradient has norm <= C */
            CHECK(fac[b] * rn[b] <= C * (1 + 1e-5));
        }
        CHECK(e < 1e-4);
        CHECK(en < 1e-4);
        if (e >= 1e-4 || en >= 1e-4)
            fprintf(stderr, "mode %s on '%s' (frozen %d): clipped sum rel err %g, norm rel err %g\n",
                    dp_clip_mode_name((dp_clip_mode)mode), spec, freeze_layer, e, en);
        for (size_t j = 0; j < np; j++)
            if (!mask[j] && dp_model_grad(m)[j] != 0.0f) {
                CHECK(!"frozen coordinate got a gradient");
                break;
            }
    }
    /* empty batch: no change, no error */
    dp_model_zero_grad(m);
    dp_clip_params cp = {DP_CLIP_GHOST, C, 0, 0};
    CHECK_OK(dp_model_forward(m, x, 0, 1, NULL, &logits));
    CHECK_OK(dp_model_clipped_grad(m, &cp, dz, 0, NULL, NULL, NULL));
    double s = 0;
    for (size_t j = 0; j < np; j++) s += fabs(dp_model_grad(m)[j]);
    CHECK(s == 0);
    dp_free(x); dp_free(dz); dp_free(y); dp_free(g); dp_free(ref); dp_free(rn); dp_free(norms); dp_free(fac);
    dp_model_destroy(m);
}

/* A clipped per-sample gradient has norm <= C with no tolerance, in the float arithmetic the
 * engine uses, in every mode (the sensitivity the accountant assumes): the clip factor must
 * absorb the rounding of the norm, of R itself and of the products R g_i (or of the second
 * pass that forms them). One sample per call, so the clipped sum is that sample's clipped
 * gradient. Loss gradients at several scales; C just below the norm, and well below it. */
static void check_clip_bound(const char *spec, int c, int h, int w, int reps) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create(spec, c, h, w, &m));
    if (!m) return;
    dp_model_init(m, &R);
    const size_t np = dp_model_num_params(m), dim = dp_model_input_size(m);
    const int K = dp_model_output_size(m), tokens = dp_model_input_is_tokens(m);
    float *x = dp_alloc(sizeof(float) * dim), *dz = dp_alloc(sizeof(float) * K);
    static const double scales[] = {1e-4, 1e-2, 1.0, 37.0, 1e4};
    static const double below[] = {-1e-8, 0.0, 1e-7, 3e-7, 1e-6, 1e-5, 1e-3, 0.5, 0.999}; /* C = n0 (1 - below) */
    const float *logits;
    int checked = 0, over = 0;
    double worst = 0;
    for (int rep = 0; rep < reps; rep++) {
        for (size_t j = 0; j < dim; j++)
            x[j] = tokens ? (float)(dp_rng_u64(&R) % (uint64_t)dp_model_vocab(m)) : (float)dp_rng_normal(&R);
        const double sc = scales[rep % 5];
        for (int j = 0; j < K; j++) dz[j] = (float)(sc * dp_rng_normal(&R));
        /* the unclipped gradient's norm */
        dp_clip_params big = {DP_CLIP_VANILLA, 1e30, 0, 0};
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, 1, 1, NULL, &logits));
        CHECK_OK(dp_model_clipped_grad(m, &big, dz, 1, NULL, NULL, NULL));
        double n0 = 0;
        for (size_t j = 0; j < np; j++) n0 += (double)dp_model_grad(m)[j] * dp_model_grad(m)[j];
        n0 = sqrt(n0);
        if (!(n0 > 0)) continue;
        for (size_t b = 0; b < sizeof below / sizeof below[0]; b++) {
            const double C = n0 * (1 - below[b]);
            for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
                dp_clip_params cp = {(dp_clip_mode)mode, C, 0, 0};
                dp_model_zero_grad(m);
                CHECK_OK(dp_model_forward(m, x, 1, 1, NULL, &logits));
                CHECK_OK(dp_model_clipped_grad(m, &cp, dz, 1, NULL, NULL, NULL));
                double s = 0;
                for (size_t j = 0; j < np; j++) s += (double)dp_model_grad(m)[j] * dp_model_grad(m)[j];
                const double r = sqrt(s) / C - 1;
                checked++;
                if (r > 0) {
                    over++;
                    if (r > worst) worst = r;
                }
            }
        }
    }
    CHECK(checked > 0 && over == 0);
    if (over)
        fprintf(stderr, "'%s': %d of %d clipped gradients have norm > C (worst by %.3g relative)\n", spec, over,
                checked, worst);
    dp_free(x); dp_free(dz);
    dp_model_destroy(m);
}

/* A conv2d followed by tanh is fused (memplan.c: the conv applies the tanh and writes the tanh's
 * buffer), and so is a tanh followed by a max pooling that finds its winners again in backward
 * (the pooling's backward applies the tanh's derivative): the forward's outputs and the clipped
 * gradients, in every mode, are bit for bit those of the layers run one after the other; the
 * kernel with g.tanh is tanh of the kernel without. */
static void test_conv_tanh_fusion(void) {
    const dp__conv_geom g0 = {2, 9, 9, 6, 3, 2, 1, 1, 1, 1, 5, 5, 0, 0, NULL};
    dp__conv_geom g1 = g0;
    g1.tanh = 1;
    const size_t nx = 3 * 2 * 81, ny = 3 * 6 * 25, nw = 6 * 2 * 9 + 6;
    float *x = dp_alloc(sizeof(float) * nx), *w = dp_alloc(sizeof(float) * nw), *y0 = dp_alloc(sizeof(float) * ny);
    float *y1 = dp_alloc(sizeof(float) * ny), *wk = dp_alloc(sizeof(float) * dp__conv_work(&g0, dp__max_threads()));
    for (size_t j = 0; j < nx; j++) x[j] = (float)dp_rng_normal(&R);
    for (size_t j = 0; j < nw; j++) w[j] = (float)dp_rng_normal(&R);
    dp__k_conv_fwd_f32(y0, wk, x, w, w + nw - 6, 3, &g0);
    dp__k_tanh_fwd_f32(y0, y0, ny);
    dp__k_conv_fwd_f32(y1, wk, x, w, w + nw - 6, 3, &g1);
    CHECK(memcmp(y0, y1, sizeof(float) * ny) == 0);
    dp_free(x); dp_free(w); dp_free(y0); dp_free(y1); dp_free(wk);

    dp_model *m = NULL;
    CHECK_OK(dp_model_create("conv2d(6,3,s2,p1) tanh conv2d(5,3,p1) tanh maxpool(2,1) flatten linear(4)", 2, 9, 9, &m));
    if (!m) return;
    dp_model_init(m, &R);
    const int B = 5, K = dp_model_output_size(m);
    const size_t dim = dp_model_input_size(m), np = dp_model_num_params(m);
    float *xb = dp_alloc(sizeof(float) * dim * B), *dz = dp_alloc(sizeof(float) * K * B);
    float *z0 = dp_alloc(sizeof(float) * K * B), *gr0 = dp_alloc(sizeof(float) * np);
    for (size_t j = 0; j < dim * B; j++) xb[j] = (float)dp_rng_normal(&R);
    for (int j = 0; j < K * B; j++) dz[j] = (float)dp_rng_normal(&R);
    const float *z;
    int saved[16] = {0}, saved_b[16] = {0};
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++)
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) { /* the same model with the layers run one by one */
            CHECK(m->L[0].fuse_tanh == 1 && m->L[1].fuse_tanh == 2 && m->L[2].fuse_tanh == 1 && m->L[3].fuse_tanh == 2);
            CHECK(m->L[4].fuse_tanh == 0 && m->L[6].fuse_tanh == 0);
            CHECK(m->L[4].fuse_tanh_bwd == 1 && m->L[3].fuse_tanh_bwd == 2 && m->L[1].fuse_tanh_bwd == 0);
            for (int k = 0; k < m->n; k++) m->L[k].fuse_tanh = m->L[k].fuse_tanh_bwd = 0;
        }
        if (pass == 0 && mode > 0) /* fused again for the next mode */
            for (int k = 0; k < m->n && k < 16; k++) m->L[k].fuse_tanh = saved[k], m->L[k].fuse_tanh_bwd = saved_b[k];
        dp_clip_params cp = {(dp_clip_mode)mode, 0.5, 0, 0};
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, xb, B, 1, NULL, &z));
        if (pass == 0 && mode == 0) /* as planned by the first forward */
            for (int k = 0; k < m->n && k < 16; k++) saved[k] = m->L[k].fuse_tanh, saved_b[k] = m->L[k].fuse_tanh_bwd;
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, NULL, NULL, NULL));
        if (pass == 0) {
            memcpy(z0, z, sizeof(float) * K * B);
            memcpy(gr0, dp_model_grad(m), sizeof(float) * np);
        } else {
            CHECK(memcmp(z0, z, sizeof(float) * K * B) == 0);
            CHECK(memcmp(gr0, dp_model_grad(m), sizeof(float) * np) == 0);
        }
    }
    dp_free(xb); dp_free(dz); dp_free(z0); dp_free(gr0);
    dp_model_destroy(m);
}

/* auto's memory estimate (what the budget is checked against, and what the physical_batch
 * hint divides) bounds the tracked peak of two steps, and does not count an instantiation chunk
 * that a layer keeping its per-sample gradients never allocates: the default CNN at its
 * default budget keeps every layer (no second pass), within 1.2x the non-private step. Then
 * with a budget that sends the first convolution to a second pass, the chunk is counted again
 * and the estimate still bounds the peak (to a few bytes: see below). */
static void test_auto_estimate(void) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create_named("cnn", 1, 28, 28, 10, &m));
    if (!m) return;
    dp_model_init(m, &R);
    const int B = 256, K = 10;
    const size_t dim = dp_model_input_size(m);
    float *x = dp_alloc(sizeof(float) * dim * B), *dz = dp_alloc(sizeof(float) * K * B);
    for (size_t j = 0; j < dim * B; j++) x[j] = (float)dp_rng_normal(&R);
    for (int j = 0; j < K * B; j++) dz[j] = (float)dp_rng_normal(&R);
    for (int tight = 0; tight < 2; tight++) {
        dp_clip_params cp = {DP_CLIP_AUTO, 1.0, 0, 0};
        if (tight) cp.mem_budget = dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 1) + 64;
        char plan[4096];
        CHECK_OK(dp_model_describe_plan(m, &cp, B, plan, sizeof plan));
        CHECK((strstr(plan, "second backward pass: no") != NULL) == !tight);
        const size_t est = dp_model_clip_plan_bytes(m, &cp, B);
        CHECK(tight || est <= dp_model_default_mem_budget(m, B));
        dp_model_destroy(m); /* a fresh model: its buffers are allocated in the step measured */
        CHECK_OK(dp_model_create_named("cnn", 1, 28, 28, 10, &m));
        if (!m) break;
        dp_model_init(m, &R);
        const size_t live0 = dp_mem_get().live_bytes;
        dp_mem_reset_peak();
        const float *z;
        /* two steps: the second's forward also makes the convolution's Grams for its ghost
         * norms (the first's clipped gradient asks for them) */
        for (int step = 0; step < 2; step++) {
            CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &z));
            CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, NULL, NULL, NULL));
        }
        const size_t used = dp_mem_get().peak_bytes - live0;
        CHECK(used <= est + 4096); /* the estimate is of the buffers; the step's small arrays (a
                                    * pointer per node) are not in it */
        CHECK(tight || est < used + 65536); /* and not more: no chunk (1 MiB here) counted */
        if (used > est + 4096 || (!tight && est >= used + 65536)) fprintf(stderr, "auto (budget %s): step peak %zu bytes, estimate %zu\n", tight ? "tight" : "default", used, est);
    }
    dp_free(x);
    dp_free(dz);
    dp_model_destroy(m);
}

/* A private step's forward makes a convolution's input Grams (the default CNN's second, T =
 * 25; a grouped one, two Grams a sample) once a clipped gradient with ghost norms asked for
 * them; the ghost norms then read them instead of unfolding the input again: the same norms and
 * clipped gradient, bit for bit, as the first step, which unfolded. An evaluation forward or a
 * non-private backward stops it. */
static void check_forward_grams(dp_model *m, int B, size_t floats) {
    dp_model_init(m, &R);
    const int K = dp_model_output_size(m);
    const size_t dim = dp_model_input_size(m), np = dp_model_num_params(m);
    float *x = dp_alloc(sizeof(float) * dim * B), *dz = dp_alloc(sizeof(float) * K * B);
    float *g0 = dp_alloc(sizeof(float) * np), *nrm = dp_alloc(sizeof(float) * 2 * B);
    for (size_t j = 0; j < dim * B; j++) x[j] = (float)dp_rng_normal(&R);
    for (int j = 0; j < K * B; j++) dz[j] = (float)dp_rng_normal(&R);
    int layers = 0;
    for (int k = 0; k < m->n; k++) layers += dp__gram_layer(&m->L[k]) != 0;
    CHECK(layers == 1 && dp__gram_floats(m) == floats);
    const dp_clip_mode modes[3] = {DP_CLIP_GHOST, DP_CLIP_BK, DP_CLIP_AUTO};
    const float *z;
    for (int q = 0; q < 3; q++) {
        dp_clip_params cp = {modes[q], 0.05, 0, 0};
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &z)); /* a non-private step: no Grams */
        CHECK_OK(dp_model_backward(m, dz, B));
        for (int step = 0; step < 2; step++) {
            dp_model_zero_grad(m);
            CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &z));
            CHECK(m->grams_B == (step ? B : 0)); /* the first step's clipped gradient asks for them */
            CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, nrm + step * B, NULL, NULL));
            if (step == 0) memcpy(g0, dp_model_grad(m), sizeof(float) * np);
        }
        CHECK(memcmp(nrm, nrm + B, sizeof(float) * B) == 0);
        CHECK(memcmp(g0, dp_model_grad(m), sizeof(float) * np) == 0);
        size_t clipped = 0;
        for (int i = 0; i < B; i++) clipped += nrm[i] > 0.05f;
        CHECK(clipped > 0); /* the factors matter */
        CHECK_OK(dp_model_forward(m, x, B, 0, NULL, &z));
        CHECK(m->grams_B == 0); /* evaluation */
    }
    dp_free(x);
    dp_free(dz);
    dp_free(g0);
    dp_free(nrm);
}

/* A flatten whose input nothing else reads is a view of it (memplan.c): no buffer, no copy,
 * its input's gradient slot. The CNN with and without its flatten (a linear reads a C x H x W
 * input as the same vector) give the same logits, clipped gradients and norms bit for bit in
 * every clipping mode, for training and evaluation, and the view holds no buffer of its own. */
/* one private step of models a and b (the same parameters) on x: the same logits, per-sample
 * norms and clipped gradient bit for bit (za, ga: scratch for a's, K = 10 outputs, B <= 8) */
static void same_step(dp_model *a, dp_model *b, dp_clip_mode mode, const float *x, const float *dz, int B, float *za,
                      float *ga) {
    const int K = 10;
    const size_t np = dp_model_num_params(a);
    dp_clip_params cp = {mode, 0.05, 0, 0};
    float na[8], nb[8];
    const float *z;
    dp_model_zero_grad(a);
    CHECK_OK(dp_model_forward(a, x, B, 1, NULL, &z));
    memcpy(za, z, sizeof(float) * K * B);
    CHECK_OK(dp_model_clipped_grad(a, &cp, dz, B, na, NULL, NULL));
    memcpy(ga, dp_model_grad(a), sizeof(float) * np);
    dp_model_zero_grad(b);
    CHECK_OK(dp_model_forward(b, x, B, 1, NULL, &z));
    CHECK(memcmp(za, z, sizeof(float) * K * B) == 0);
    CHECK_OK(dp_model_clipped_grad(b, &cp, dz, B, nb, NULL, NULL));
    CHECK(memcmp(ga, dp_model_grad(b), sizeof(float) * np) == 0);
    CHECK(memcmp(na, nb, sizeof(float) * B) == 0);
}

static void test_flatten_view(void) {
    /* a second, wider hidden layer: its pre-activation (300 a sample) takes a pooled slot after
     * the flatten's last reader, which must not be the one holding the flatten's kept values
     * (512 a sample) */
    const char *with = "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh "
                       "linear(300) tanh linear(10)";
    const char *without = "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) linear(32) tanh "
                          "linear(300) tanh linear(10)";
    dp_model *a = NULL, *b = NULL;
    CHECK_OK(dp_model_create(with, 1, 28, 28, &a));
    CHECK_OK(dp_model_create(without, 1, 28, 28, &b));
    if (!a || !b) goto out;
    dp_model_init(a, &R);
    const size_t np = dp_model_num_params(a);
    CHECK(np == dp_model_num_params(b));
    memcpy(dp_model_params(b), dp_model_params(a), sizeof(float) * np);
    const int B = 6, K = 10;
    const size_t dim = dp_model_input_size(a);
    float *x = dp_alloc(sizeof(float) * dim * B), *dz = dp_alloc(sizeof(float) * K * B), *za = dp_alloc(sizeof(float) * K * B);
    float *ga = dp_alloc(sizeof(float) * np);
    for (size_t j = 0; j < dim * B; j++) x[j] = (float)dp_rng_normal(&R);
    for (int j = 0; j < K * B; j++) dz[j] = (float)dp_rng_normal(&R);
    const float *z;
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++)
        for (int step = 0; step < 2; step++) /* the second: with the forward's Grams where asked */
            same_step(a, b, (dp_clip_mode)mode, x, dz, B, za, ga);
    CHECK(a->L[6].kind == DP_LAYER_FLATTEN && a->L[6].view == 1 && a->L[6].fslot < 0 && !a->L[6].keep_out);
    CHECK(a->L[6].out == a->L[5].out && a->L[6].gslot == a->L[5].gslot);
    CHECK_OK(dp_model_forward(a, x, B, 0, NULL, &z)); /* evaluation */
    memcpy(za, z, sizeof(float) * K * B);
    CHECK_OK(dp_model_forward(b, x, B, 0, NULL, &z));
    CHECK(memcmp(za, z, sizeof(float) * K * B) == 0);
    CHECK(dp_model_plan_bytes(a, DP_CLIP_GHOST, 64, 1) <= dp_model_plan_bytes(b, DP_CLIP_GHOST, 64, 1));
    /* everything frozen but the last layer: the flatten's values are then kept by nobody, and
     * its input's slot must stay held through the flatten's reader */
    for (int k = 0; k + 1 < a->n; k++)
        if (dp_model_layer_params(a, k, NULL)) {
            CHECK_OK(dp_model_set_frozen(a, k, 1));
            CHECK_OK(dp_model_set_frozen(b, k - (k > 6), 1));
        }
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) same_step(a, b, (dp_clip_mode)mode, x, dz, B, za, ga);
    CHECK(a->L[6].view == 1 && !a->L[5].keep_out);
    dp_free(x); dp_free(dz); dp_free(za); dp_free(ga);
out:
    dp_model_destroy(a);
    dp_model_destroy(b);
}

static void test_forward_grams(void) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create_named("cnn", 1, 28, 28, 10, &m));
    if (m) check_forward_grams(m, 7, 25 * 25);
    dp_model_destroy(m);
    m = NULL; /* two groups of 4 x 4 x 4 -> 64 channels: ghost norms (80k against 102k) */
    CHECK_OK(dp_model_create("conv2d(128,4,s2,g2) tanh flatten linear(3)", 8, 12, 12, &m));
    if (m) check_forward_grams(m, 6, 2 * 25 * 25);
    dp_model_destroy(m);
}

/* The work buffer holds a share per running thread: a model run with one thread and then with
 * more (omp_set_num_threads between calls, as the Python package's threads= does) gets its
 * buffers made again, instead of the extra threads writing past it (which ASan reported here
 * before: conv_fwd's second thread at work + tw). The outputs agree. */
static void test_threads_grow(void) {
    const int nt0 = omp_get_max_threads(), nt1 = nt0 > 1 ? nt0 : 2, B = 6;
    dp_model *m = NULL;
    CHECK_OK(dp_model_create_named("cnn", 1, 28, 28, 10, &m));
    if (!m) return;
    dp_model_init(m, &R);
    const size_t dim = dp_model_input_size(m), K = (size_t)dp_model_output_size(m);
    float *x = dp_alloc(sizeof(float) * dim * B), *z1 = dp_alloc(sizeof(float) * K * B);
    for (size_t j = 0; j < dim * B; j++) x[j] = (float)dp_rng_normal(&R);
    const float *z = NULL;
    omp_set_num_threads(1);
    CHECK_OK(dp_model_forward(m, x, B, 0, NULL, &z));
    if (z) memcpy(z1, z, sizeof(float) * K * B);
    omp_set_num_threads(nt1);
    CHECK_OK(dp_model_forward(m, x, B, 0, NULL, &z));
    CHECK(m->work_threads >= nt1);
    double worst = 0;
    for (size_t j = 0; z && j < K * B; j++) worst = fmax(worst, fabs((double)z[j] - z1[j]));
    CHECK(z && worst < 1e-5);
    omp_set_num_threads(nt0);
    dp_free(x);
    dp_free(z1);
    dp_model_destroy(m);
}

static void test_nonfinite_modes(dp_model *m, int net);

/* A sample whose loss gradient is not finite gets R = 0 and leaves the clipped sum finite in
 * every mode: on an MLP, and on a convolution whose per-sample gradients auto clips as they
 * are made (the lowest trainable node, clip.c fused_node) */
static void test_nonfinite_sample(void) {
    for (int net = 0; net < 2; net++) {
        dp_model *m = NULL;
        if (net == 0) CHECK_OK(dp_model_create("linear(4) tanh linear(3)", 1, 1, 5, &m));
        else CHECK_OK(dp_model_create("conv2d(4,3) tanh flatten linear(3)", 1, 8, 8, &m));
        if (!m) return;
        dp_model_init(m, &R);
        test_nonfinite_modes(m, net);
        dp_model_destroy(m);
    }
}

static void test_nonfinite_modes(dp_model *m, int net) {
    const size_t nx = 2 * dp_model_input_size(m);
    float x[128], dz[6];
    for (size_t j = 0; j < nx; j++) x[j] = (float)dp_rng_normal(&R);
    const float *logits;
    if (net == 1) { /* auto's plan: the convolution's per-sample gradients, on the fly */
        char plan[2048];
        dp_clip_params cp = {DP_CLIP_AUTO, 0.5, 0, 0};
        CHECK_OK(dp_model_describe_plan(m, &cp, 2, plan, sizeof plan));
        CHECK(strstr(plan, "on the fly") != NULL);
    }
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, 2, 1, NULL, &logits));
        int32_t y[2] = {0, 2};
        CHECK_OK(dp_loss_xent(logits, y, 2, 3, NULL, dz));
        dz[3] = INFINITY; /* sample 1's loss gradient is not finite */
        dp_clip_params cp = {(dp_clip_mode)mode, 0.5, 0, 0};
        float fac[2];
        int bad = 0;
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, 2, NULL, fac, &bad));
        CHECK(bad == 1 && fac[1] == 0.0f && fac[0] > 0.0f);
        int finite = 1;
        for (size_t j = 0; j < dp_model_num_params(m); j++) finite &= isfinite(dp_model_grad(m)[j]);
        CHECK(finite);
    }
}

static void test_spec_errors(void) {
    dp_model *m = NULL;
    const char *bad[] = {"", "linear", "linear(0)", "conv2d(4)", "conv2d(4,40)", "foo(3)", "linear(3", "dropout(1.5)",
                         "maxpool(2,x)", "relu", "linear(3) relu(2)", "conv2d(4,3,q1)",
                         "maxpool(3,2,p2)", "avgpool(2,p2)", "maxpool(2,1,exclude)", "avgpool(2,2,p1,q)",
                         "maxpool(2,2,p1,p1,p1)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dp_status st = dp_model_create(bad[i], 1, 28, 28, &m);
        CHECK(st != DP_OK);
        if (st == DP_OK) {
            fprintf(stderr, "spec '%s' accepted\n", bad[i]);
            dp_model_destroy(m);
        } else
            CHECK(strstr(dp_last_error(), "model spec") != NULL);
    }
    /* the default CNN has 26,010 parameters */
    CHECK_OK(dp_model_create_named("cnn", 1, 28, 28, 10, &m));
    if (m) {
        CHECK(dp_model_num_params(m) == 26010);
        float *d;
        size_t n;
        CHECK_OK(dp_model_find_tensor(m, "7.weight", &d, &n));
        CHECK(n == 32 * 512);
        CHECK(dp_model_find_tensor(m, "2.weight", &d, &n) != DP_OK);
        dp_model_destroy(m);
    }
    /* allocation failure while building is reported and leaks nothing */
    for (long k = 1; k < 12; k++) {
        dp_mem_fail_after(k);
        dp_status st = dp_model_create("conv2d(4,3) relu flatten linear(10)", 1, 8, 8, &m);
        dp_mem_fail_after(0);
        if (st == DP_OK) dp_model_destroy(m);
        else CHECK(st == DP_ERR_NOMEM);
    }
}

/* A convolution on large images whose norms are instantiated (T^2 far above its per-sample
 * gradient) gets no room for ghost Grams: the plan of a 3x3 convolution on 128 x 128 images
 * was 4.1 GB for one sample (2 T^2 floats a thread), now a few MB; every mode still matches
 * the microbatch reference there (check_modes below). */
static void test_conv_scratch(void) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create("conv2d(16,3,s1,p1) relu globalavgpool flatten linear(10)", 3, 128, 128, &m));
    if (!m) return;
    const size_t b = dp_model_plan_bytes(m, DP_CLIP_GHOST, 1, 1);
    CHECK(b < ((size_t)64 << 20));
    if (b >= ((size_t)64 << 20)) fprintf(stderr, "conv scratch: plan %zu bytes for one 128x128 sample\n", b);
    dp_model_destroy(m);
    /* a chunk has at least 64 output positions, since its GEMMs read the whole weight: a
     * convolution with one output position and 65536 channels (200 MB of weight), its weight
     * read once per sample, ran past scripts/sweep.sh's 60 s limit */
    const dp__conv_geom fc = {16, 28, 28, 65536, 28, 1, 0, 0, 1, 1, 1, 1, 0, 0, NULL};
    CHECK(dp__conv_chunk(&fc) == 64);
}

int main(void) {
    dp_rng_seed(&R, 7);
    test_linear(3, 5, 4, 1);
    test_linear(2, 7, 3, 0);
    test_conv(2, 1, 8, 8, 3, 3, 1, 0, 1);
    test_conv(2, 2, 9, 7, 3, 4, 2, 2, 1);
    test_conv(3, 3, 6, 6, 2, 2, 2, 1, 0);
    test_conv(1, 1, 28, 28, 2, 8, 2, 2, 1); /* the default CNN's first layer shape */
    test_conv_dg(2, 4, 7, 6, 6, 3, 1, 1, 1, 1, 2); /* grouped */
    test_conv_dg(3, 4, 6, 6, 4, 3, 1, 1, 0, 1, 4); /* depthwise (groups = channels) */
    test_conv_dg(2, 2, 9, 8, 3, 3, 2, 2, 1, 2, 1); /* dilated */
    test_conv_dg(2, 6, 9, 9, 9, 2, 1, 1, 1, 3, 3); /* dilated and grouped */
    test_conv_pads(2, 2, 7, 8, 3, 3, 2, 0, 1, 1, 2, 1, 1, 1); /* asymmetric: SAME_UPPER-like pads */
    test_conv_pads(2, 4, 6, 7, 4, 2, 1, 1, 0, 0, 1, 0, 2, 2); /* asymmetric, dilated, grouped */
    test_conv(2, 2, 11, 10, 2, 5, 1, 2, 1); /* kernel sizes 5, 6, 7: the unfolding's row copies */
    test_conv(2, 1, 12, 12, 2, 6, 2, 1, 1);
    test_conv(1, 2, 13, 13, 3, 7, 3, 3, 0);
    test_im2col_paths();
    test_ghost_f32();
    test_conv_tanh_fusion();
    test_auto_estimate();
    test_forward_grams();
    test_threads_grow();
    test_flatten_view();
    test_conv_chunks(11, 1, 28, 16, 8, 2, 3, 1);  /* the default CNN's layers: 2 samples a chunk */
    test_conv_chunks(23, 16, 13, 32, 4, 2, 0, 1); /* 4 a chunk */
    test_conv_chunks(37, 4, 6, 8, 3, 1, 1, 2);    /* grouped, 16 a chunk */
    test_conv_chunks(133, 3, 4, 5, 4, 1, 0, 1);   /* one output position (T = 1): 64 a chunk */
    test_act(DP_LAYER_RELU, 2, 2, 3, 3, 0, 0);
    test_act(DP_LAYER_TANH, 2, 2, 3, 3, 0, 0);
    test_act(DP_LAYER_SIGMOID, 2, 2, 3, 3, 0, 0);
    test_act(DP_LAYER_GLOBALAVGPOOL, 2, 3, 4, 5, 0, 0);
    test_act(DP_LAYER_DROPOUT, 2, 2, 3, 3, 0, 0);
    test_act(DP_LAYER_MAXPOOL, 2, 2, 5, 5, 2, 1);
    test_act(DP_LAYER_MAXPOOL, 2, 3, 6, 6, 2, 2);
    test_act(DP_LAYER_AVGPOOL, 2, 2, 5, 5, 2, 1);
    test_act(DP_LAYER_AVGPOOL, 1, 2, 7, 7, 3, 2);
    test_act_pad(DP_LAYER_MAXPOOL, 2, 2, 5, 5, 3, 2, 1, 0); /* PyTorch's ResNet stem pooling */
    test_act_pad(DP_LAYER_MAXPOOL, 1, 2, 6, 7, 2, 1, 1, 0);
    test_act_pad(DP_LAYER_MAXPOOL, 1, 1, 5, 6, 4, 3, 2, 0);
    /* asymmetric pads, ceil mode, dilated taps */
    test_act_geom(DP_LAYER_MAXPOOL, 2, 2, 5, 6, (dp__pool_geom){3, 2, 0, 1, 1, 2, 1, 0}, 0);
    test_act_geom(DP_LAYER_MAXPOOL, 1, 2, 6, 7, (dp__pool_geom){3, 2, 1, 0, 1, 0, 1, 0}, 1);
    test_act_geom(DP_LAYER_MAXPOOL, 1, 2, 7, 8, (dp__pool_geom){2, 1, 0, 0, 0, 0, 2, 0}, 0);
    test_act_geom(DP_LAYER_MAXPOOL, 1, 1, 8, 7, (dp__pool_geom){3, 2, 1, 1, 1, 1, 2, 0}, 1);
    for (int cip = 0; cip < 2; cip++) {
        test_act_pad(DP_LAYER_AVGPOOL, 2, 2, 5, 5, 3, 2, 1, cip);
        test_act_pad(DP_LAYER_AVGPOOL, 1, 2, 6, 7, 2, 1, 1, cip);
        test_act_pad(DP_LAYER_AVGPOOL, 1, 1, 5, 6, 4, 3, 2, cip);
        /* asymmetric pads (SAME_UPPER-like), and ceil mode whose last window reaches past the input */
        test_act_geom(DP_LAYER_AVGPOOL, 2, 2, 5, 6, (dp__pool_geom){3, 2, 0, 1, 1, 2, 1, cip}, 0);
        test_act_geom(DP_LAYER_AVGPOOL, 1, 2, 6, 7, (dp__pool_geom){3, 2, 1, 0, 1, 0, 1, cip}, 1);
    }
    test_pool_pad_values();
    test_maxpool_order(3, 13, 13, 2, 1);  /* the default CNN's first pooling: planes in flat runs */
    test_maxpool_order(100, 5, 5, 2, 1);  /* its second: runs of 40 planes, the last one partial */
    test_maxpool_order(3, 6, 7, 3, 1);
    test_maxpool_order(3, 40, 40, 2, 1); /* a plane too large for the flat run */
    test_maxpool_order(3, 9, 8, 2, 2);
    for (int bias = 0; bias < 2; bias++) {
        test_scale(3, 1, 4, 6, bias); /* images: 4 channels of 6 values */
        test_scale(2, 5, 3, 1, bias); /* sequences: 5 tokens of 3 features */
    }
    test_losses();
    test_f32_vs_f64();
    test_conv_f32_paths();
    check_modes("flatten linear(16) relu linear(5)", 1, 4, 5, 9, 0.5, -1);
    /* auto clips the convolution's per-sample gradients as they are made (its 6,464
     * parameters: 40 rows a chunk, so three chunks of a batch of 90) */
    check_modes("conv2d(64,5) tanh flatten linear(3)", 4, 15, 15, 90, 0.05, -1);
    check_plan_fused("conv2d(64,5) tanh flatten linear(3)", 4, 15, 15, 90);
    check_fused_rows();
    test_conv_scratch();
    check_modes("conv2d(4,3,s1,p1) relu globalavgpool flatten linear(3)", 3, 48, 48, 3, 0.05, -1); /* no Grams */
    check_modes(dp_model_builtin_spec("cnn") ? "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh linear(10)" : "", 1, 28, 28, 6, 0.1, -1);
    check_modes("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten dropout(0) linear(7)", 2, 10, 10, 5, 0.05, -1);
    check_modes("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 5, 0.05, 0);
    check_modes("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 5, 1e3, 3);
    check_modes("conv2d(4,3,s1,p1) scale relu avgpool(2) flatten scale linear(7)", 2, 8, 8, 5, 0.05, -1);
    check_modes("conv2d(4,3,s2,p1) relu maxpool(3,2,p1) conv2d(6,3,s1,p1) tanh avgpool(3,2,p1,exclude) avgpool(2,1,p1) flatten "
                "linear(7)",
                2, 11, 11, 5, 0.05, -1);
    check_modes("conv2d(4,3,s1,p1) scale relu avgpool(2) flatten scale linear(7)", 2, 8, 8, 5, 0.05, 1);
    check_modes("conv2d(4,3,s1,p1,nobias) groupnorm(2) scale bias sigmoid globalavgpool flatten bias linear(7)", 2, 7, 6, 5, 0.05,
                -1);
    /* grouped (depthwise too) and dilated convolutions */
    check_modes("conv2d(8,3,s1,p1,g2) relu conv2d(8,3,p2,d2,g8) tanh conv2d(6,2,s2,g2,nobias) flatten linear(5)", 2, 9, 9, 5,
                0.05, -1);
    check_clip_bound("flatten linear(16) relu linear(5)", 1, 4, 5, 40);
    check_clip_bound("conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh "
                     "linear(10)",
                     1, 28, 28, 15);
    check_clip_bound("conv2d(4,3,s1,p1) relu avgpool(2) conv2d(6,3,s2) tanh flatten linear(7)", 2, 10, 10, 20);
    check_clip_bound("embedding(13,6) posembed layernorm linear(5) gelu linear(6) rmsnorm meanpool linear(3)", 1, 1, 7,
                     20);
    check_clip_bound("embedding(13,6) scale posembed linear(5) scale bias gelu meanpool linear(3)", 1, 1, 7, 20);
    test_nonfinite_sample();
    test_spec_errors();
    return t_finish("test_nn");
}
