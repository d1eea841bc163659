/* test_seq_kernels.c: the sequence-model and normalisation kernels (kernels_seq.h) in double
 * precision: every backward against central finite differences of L = <u, out> for a fixed
 * random u, every per-sample gradient against the microbatch reference (bwd_param on one
 * sample at a time) and its batch sum against bwd_param on the batch, every ghost norm
 * against the squared norms of the per-sample rows; attention and mean pooling with key
 * masks (one sample with every key masked); float against double; B = 0. */
#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "fd.h"

static float *fnew(size_t n) { return dp_calloc(n ? n : 1, sizeof(float)); }
/* ||a - b|| / ||b|| between a float result and a double one */
static double rel_fd(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}
static int all_finite(const double *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}
static int all_zero(const double *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != 0) return 0;
    return 1;
}
/* random doubles that are exactly representable as floats (for float vs double) */
static void fill_f(double *a, float *af, size_t n, double scale) {
    fill(a, n, scale);
    for (size_t i = 0; i < n; i++) af[i] = (float)a[i], a[i] = af[i];
}

/* max_rel of an analytic gradient against the FD one */
static double fd_err(fwd_fn f, void *ctx, double *v, size_t nv, const double *u, size_t ny, const double *an) {
    double *g = dnew(nv);
    fd_grad(f, ctx, v, nv, u, ny, g);
    double e = max_rel(an, g, nv);
    dp_free(g);
    return e;
}

/* A per-sample gradient block ps [B, stride] (payload n, the rest a sentinel that must survive)
 * against reference rows ref [B, n]; the sum of the rows against a batch gradient sum [n]. */
static const double SENT = 1234.5;
static void check_ps(const char *what, const double *ps, size_t stride, const double *ref, const double *sum, int B,
                     size_t n) {
    double e = 0, es;
    int gap_ok = 1;
    double *acc = dnew(n);
    for (int i = 0; i < B; i++) {
        double ei = max_rel(ps + (size_t)i * stride, ref + (size_t)i * n, n);
        if (ei > e || ei != ei) e = ei;
        for (size_t j = n; j < stride; j++) gap_ok &= ps[(size_t)i * stride + j] == SENT;
        for (size_t j = 0; j < n; j++) acc[j] += ps[(size_t)i * stride + j];
    }
    es = max_rel(acc, sum, n);
    char buf[128];
    snprintf(buf, sizeof buf, "%s ps vs microbatch", what);
    CHECK_ERR(buf, e, 1e-12);
    snprintf(buf, sizeof buf, "%s sum of ps vs batch", what);
    CHECK_ERR(buf, es, 1e-12);
    CHECK(gap_ok);
    dp_free(acc);
}
/* ghost norms sq (started at 0.25 each) against ||ps_i||^2 */
static void check_ghost(const char *what, const double *sq, const double *ps, size_t stride, int B, size_t n) {
    double e = 0;
    for (int i = 0; i < B; i++) {
        double n2 = dot(ps + (size_t)i * stride, ps + (size_t)i * stride, n);
        double ei = fabs((sq[i] - 0.25) - n2) / (n2 > 1e-300 ? n2 : 1.0);
        if (ei > e || ei != ei) e = ei;
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s ghost vs ||ps||^2", what);
    CHECK_ERR(buf, e, 1e-10);
}
static double *sentinel_ps(int B, size_t stride) {
    double *ps = dnew((size_t)B * stride);
    for (size_t j = 0; j < (size_t)B * stride; j++) ps[j] = SENT;
    return ps;
}
static double *quarter(int B) {
    double *sq = dnew(B);
    for (int i = 0; i < B; i++) sq[i] = 0.25;
    return sq;
}

/* ---- linear over tokens ---- */
typedef struct { int T, d, p, bias; const double *x; double *th; } seqlin1_ctx;
static void seqlin1_fwd(void *c, double *y) { /* one sample: [T, d] -> [T, p] */
    seqlin1_ctx *s = c;
    dp__k_linear_fwd_f64(y, s->x, s->th, s->bias ? s->th + (size_t)s->p * s->d : NULL, s->T, s->d, s->p);
}

static void test_seqlin(int B, int T, int d, int p, int bias) {
    char what[64];
    snprintf(what, sizeof what, "seqlin B%d T%d d%d p%d bias%d", B, T, d, p, bias);
    size_t nw = (size_t)p * d, n = nw + (bias ? p : 0), stride = n + 3;
    double *x = dnew((size_t)B * T * d), *g = dnew((size_t)B * T * p), *th = dnew(n);
    double *ps = sentinel_ps(B, stride), *ref = dnew((size_t)B * n), *sum = dnew(n), *sq = quarter(B);
    double *work = dnew((size_t)dp__max_threads() * 2 * T * T);
    fill(x, (size_t)B * T * d, 1);
    fill(g, (size_t)B * T * p, 1);
    fill(th, n, 0.5);
    dp__k_seqlin_ps_grad_f64(ps, stride, g, x, B, T, d, p, bias);
    for (int i = 0; i < B; i++) {
        double *r = ref + (size_t)i * n;
        dp__k_linear_bwd_param_f64(r, bias ? r + nw : NULL, g + (size_t)i * T * p, x + (size_t)i * T * d, T, d, p);
    }
    dp__k_linear_bwd_param_f64(sum, bias ? sum + nw : NULL, g, x, B * T, d, p);
    check_ps(what, ps, stride, ref, sum, B, n);
    /* sample 0's per-sample gradient by finite differences too */
    seqlin1_ctx c = {T, d, p, bias, x, th};
    CHECK_ERR(what, fd_err(seqlin1_fwd, &c, th, n, g, (size_t)T * p, ps), 1e-7);
    dp__k_seqlin_ghost_sq_f64(sq, work, g, x, B, T, d, p, bias);
    check_ghost(what, sq, ps, stride, B, n);
    dp_free(x); dp_free(g); dp_free(th); dp_free(ps); dp_free(ref); dp_free(sum); dp_free(sq); dp_free(work);
}

/* ---- embedding ---- */
typedef struct { int B, T, d; const int32_t *ids; const double *table; } emb_ctx;
static void emb_fwd(void *c, double *y) {
    emb_ctx *e = c;
    dp__k_embed_fwd_f64(y, e->ids, e->table, e->B, e->T, e->d);
}

static void test_embed(int B, int T, int d, int V) {
    char what[64];
    snprintf(what, sizeof what, "embed B%d T%d d%d V%d", B, T, d, V);
    size_t n = (size_t)V * d, stride = n + 2, ny = (size_t)B * T * d;
    int32_t *ids = dp_calloc((size_t)B * T, sizeof(int32_t));
    for (size_t r = 0; r < (size_t)B * T; r++) ids[r] = (int32_t)(dp_rng_u64(&R) % (uint64_t)(V + 2)) - 2;
    /* sample 0: id 1 three times, padding in between; the last sample: all padding */
    if (T >= 5) ids[0] = 1, ids[1] = -1, ids[2] = 1, ids[3] = 3 % V, ids[4] = 1, ids[T - 1] = 1;
    if (B >= 3)
        for (int t = 0; t < T; t++) ids[(size_t)(B - 1) * T + t] = -1;
    double *table = dnew(n), *u = dnew(ny), *y = dnew(ny), *dt = dnew(n), *dt0 = dnew(n);
    double *ps = sentinel_ps(B, stride), *ref = dnew((size_t)B * n), *sum = dnew(n), *sq = quarter(B);
    double *work = dnew((size_t)dp__max_threads() * d);
    fill(table, n, 1);
    fill(u, ny, 1);
    fill(dt0, n, 1);
    memcpy(dt, dt0, sizeof(double) * n);
    /* forward: table rows, zero rows for padding */
    emb_ctx c = {B, T, d, ids, table};
    emb_fwd(&c, y);
    int fwd_ok = 1;
    for (size_t r = 0; r < (size_t)B * T; r++)
        for (int j = 0; j < d; j++) fwd_ok &= y[r * d + j] == (ids[r] < 0 ? 0.0 : table[(size_t)ids[r] * d + j]);
    CHECK(fwd_ok);
    /* backward (accumulating) against FD */
    dp__k_embed_bwd_param_f64(dt, u, ids, B, T, d);
    for (size_t j = 0; j < n; j++) dt[j] -= dt0[j];
    CHECK_ERR(what, fd_err(emb_fwd, &c, table, n, u, ny, dt), 1e-7);
    /* per sample, sum, ghost */
    dp__k_embed_ps_grad_f64(ps, stride, u, ids, B, T, d, V);
    for (int i = 0; i < B; i++)
        dp__k_embed_bwd_param_f64(ref + (size_t)i * n, u + (size_t)i * T * d, ids + (size_t)i * T, 1, T, d);
    dp__k_embed_bwd_param_f64(sum, u, ids, B, T, d);
    check_ps(what, ps, stride, ref, sum, B, n);
    dp__k_embed_ghost_sq_f64(sq, work, u, ids, B, T, d);
    check_ghost(what, sq, ps, stride, B, n);
    if (B >= 3) CHECK(sq[B - 1] == 0.25); /* an all-padding sample adds nothing */
    dp_free(ids); dp_free(table); dp_free(u); dp_free(y); dp_free(dt); dp_free(dt0); dp_free(ps); dp_free(ref);
    dp_free(sum); dp_free(sq); dp_free(work);
}

/* ---- positional embedding ---- */
typedef struct { int B, T, d; const double *x, *P; } pos_ctx;
static void pos_fwd(void *c, double *y) {
    pos_ctx *p = c;
    dp__k_posemb_fwd_f64(y, p->x, p->P, p->B, p->T, p->d);
}

static void test_posemb(int B, int T, int d) {
    size_t nx = (size_t)B * T * d, nP = (size_t)T * d;
    double *x = dnew(nx), *P = dnew(nP), *u = dnew(nx), *dP = dnew(nP), *dP0 = dnew(nP), *y = dnew(nx);
    fill(x, nx, 1);
    fill(P, nP, 1);
    fill(u, nx, 1);
    fill(dP0, nP, 1);
    memcpy(dP, dP0, sizeof(double) * nP);
    pos_ctx c = {B, T, d, x, P};
    dp__k_posemb_bwd_param_f64(dP, u, B, T, d);
    for (size_t j = 0; j < nP; j++) dP[j] -= dP0[j];
    CHECK_ERR("posemb dP", fd_err(pos_fwd, &c, P, nP, u, nx, dP), 1e-7);
    /* in place (out == in) */
    pos_fwd(&c, y);
    dp__k_posemb_fwd_f64(x, x, P, B, T, d);
    CHECK(max_rel(x, y, nx) == 0);
    dp_free(x); dp_free(P); dp_free(u); dp_free(dP); dp_free(dP0); dp_free(y);
}

/* ---- LayerNorm / RMSNorm (rows) ---- */
typedef struct { int rms, R, F; const double *x, *gamma, *beta; double *xhat, *rstd; } norm_ctx;
static const double EPS = 1e-5;
static void norm_fwd(void *cv, double *y) {
    norm_ctx *c = cv;
    if (c->rms) dp__k_rmsnorm_fwd_f64(y, c->xhat, c->rstd, c->x, c->gamma, c->R, c->F, EPS);
    else dp__k_layernorm_fwd_f64(y, c->xhat, c->rstd, c->x, c->gamma, c->beta, c->R, c->F, EPS);
}

static void test_rownorm(int rms, int B, int T, int F, int affine) {
    char what[96];
    snprintf(what, sizeof what, "%s B%d T%d F%d affine%d", rms ? "rmsnorm" : "layernorm", B, T, F, affine);
    const int Rr = B * T;
    size_t nx = (size_t)Rr * F, np = rms ? (size_t)F : 2 * (size_t)F, stride = np + 1;
    double *x = dnew(nx), *th = dnew(np), *u = dnew(nx), *y = dnew(nx), *xhat = dnew(nx), *rstd = dnew(Rr);
    double *din = dnew(nx), *dth = dnew(np), *dth0 = dnew(np);
    fill(x, nx, 1);
    for (int r = 0; r < Rr; r++) /* rows with different offsets and scales */
        for (int j = 0; j < F; j++) x[(size_t)r * F + j] = (1 + r % 3) * x[(size_t)r * F + j] + (rms ? 0 : r - 2);
    fill(th, np, 1);
    for (int j = 0; j < F; j++) th[j] += 1.0;
    fill(u, nx, 1);
    fill(dth0, np, 1);
    memcpy(dth, dth0, sizeof(double) * np);
    norm_ctx c = {rms, Rr, F, x, affine ? th : NULL, affine && !rms ? th + F : NULL, xhat, rstd};
    norm_fwd(&c, y);
    if (!affine) CHECK(max_rel(y, xhat, nx) == 0);
    /* the saved statistics */
    double est = 0;
    for (int r = 0; r < Rr; r++) {
        double m = 0, v = 0;
        for (int j = 0; j < F; j++) m += x[(size_t)r * F + j];
        m = rms ? 0 : m / F;
        for (int j = 0; j < F; j++) v += (x[(size_t)r * F + j] - m) * (x[(size_t)r * F + j] - m);
        double e = fabs(rstd[r] - 1 / sqrt(v / F + EPS)) * sqrt(v / F + EPS);
        if (e > est) est = e;
    }
    CHECK_ERR(what, est, 1e-13);
    if (rms) dp__k_rmsnorm_bwd_input_f64(din, u, xhat, rstd, c.gamma, Rr, F);
    else dp__k_layernorm_bwd_input_f64(din, u, xhat, rstd, c.gamma, Rr, F);
    CHECK_ERR(what, fd_err(norm_fwd, &c, x, nx, u, nx, din), 1e-7);
    norm_fwd(&c, y); /* xhat back at the base point */
    if (affine) {
        if (rms) dp__k_rmsnorm_bwd_param_f64(dth, u, xhat, Rr, F);
        else dp__k_layernorm_bwd_param_f64(dth, dth + F, u, xhat, Rr, F);
        for (size_t j = 0; j < np; j++) dth[j] -= dth0[j];
        CHECK_ERR(what, fd_err(norm_fwd, &c, th, np, u, nx, dth), 1e-7);
        norm_fwd(&c, y);
        /* per sample against the microbatch reference (the T rows of one sample) */
        double *ps = sentinel_ps(B, stride), *ref = dnew((size_t)B * np), *sum = dnew(np);
        if (rms) dp__k_rmsnorm_ps_grad_f64(ps, stride, u, xhat, B, T, F);
        else dp__k_layernorm_ps_grad_f64(ps, stride, u, xhat, B, T, F);
        for (int i = 0; i < B; i++) {
            double *r = ref + (size_t)i * np;
            const double *ui = u + (size_t)i * T * F, *xi = xhat + (size_t)i * T * F;
            if (rms) dp__k_rmsnorm_bwd_param_f64(r, ui, xi, T, F);
            else dp__k_layernorm_bwd_param_f64(r, r + F, ui, xi, T, F);
        }
        if (rms) dp__k_rmsnorm_bwd_param_f64(sum, u, xhat, Rr, F);
        else dp__k_layernorm_bwd_param_f64(sum, sum + F, u, xhat, Rr, F);
        check_ps(what, ps, stride, ref, sum, B, np);
        dp_free(ps); dp_free(ref); dp_free(sum);
    }
    dp_free(x); dp_free(th); dp_free(u); dp_free(y); dp_free(xhat); dp_free(rstd); dp_free(din); dp_free(dth);
    dp_free(dth0);
}

/* ---- GroupNorm ---- */
typedef struct { int B, C, HW, G; const double *x, *gamma, *beta; double *xhat, *rstd; } gn_ctx;
static void gn_fwd(void *cv, double *y) {
    gn_ctx *c = cv;
    dp__k_groupnorm_fwd_f64(y, c->xhat, c->rstd, c->x, c->gamma, c->beta, c->B, c->C, c->HW, c->G, EPS);
}

static void test_groupnorm(int B, int C, int HW, int G) {
    char what[64];
    snprintf(what, sizeof what, "groupnorm B%d C%d HW%d G%d", B, C, HW, G);
    size_t nx = (size_t)B * C * HW, np = 2 * (size_t)C, stride = np + 2;
    double *x = dnew(nx), *th = dnew(np), *u = dnew(nx), *y = dnew(nx), *xhat = dnew(nx), *rstd = dnew((size_t)B * G);
    double *din = dnew(nx), *dth = dnew(np), *dth0 = dnew(np);
    fill(x, nx, 2);
    for (size_t j = 0; j < nx; j++) x[j] += (double)(j / HW % 4);
    fill(th, np, 1);
    fill(u, nx, 1);
    fill(dth0, np, 1);
    memcpy(dth, dth0, sizeof(double) * np);
    gn_ctx c = {B, C, HW, G, x, th, th + C, xhat, rstd};
    gn_fwd(&c, y);
    dp__k_groupnorm_bwd_input_f64(din, u, xhat, rstd, th, B, C, HW, G);
    dp__k_groupnorm_bwd_param_f64(dth, dth + C, u, xhat, B, C, HW);
    for (size_t j = 0; j < np; j++) dth[j] -= dth0[j];
    CHECK_ERR(what, fd_err(gn_fwd, &c, x, nx, u, nx, din), 1e-7);
    CHECK_ERR(what, fd_err(gn_fwd, &c, th, np, u, nx, dth), 1e-7);
    gn_fwd(&c, y);
    double *ps = sentinel_ps(B, stride), *ref = dnew((size_t)B * np), *sum = dnew(np);
    dp__k_groupnorm_ps_grad_f64(ps, stride, u, xhat, B, C, HW);
    for (int i = 0; i < B; i++) {
        double *r = ref + (size_t)i * np;
        dp__k_groupnorm_bwd_param_f64(r, r + C, u + (size_t)i * C * HW, xhat + (size_t)i * C * HW, 1, C, HW);
    }
    dp__k_groupnorm_bwd_param_f64(sum, sum + C, u, xhat, B, C, HW);
    check_ps(what, ps, stride, ref, sum, B, np);
    /* G = 1 without affine: every sample has mean 0, variance ~1 */
    dp__k_groupnorm_fwd_f64(y, xhat, rstd, x, NULL, NULL, B, C, HW, 1, EPS);
    double worst = 0;
    for (int i = 0; i < B; i++) {
        double m = 0, v = 0;
        for (size_t j = 0; j < (size_t)C * HW; j++) m += y[(size_t)i * C * HW + j];
        m /= (double)C * HW;
        for (size_t j = 0; j < (size_t)C * HW; j++) v += y[(size_t)i * C * HW + j] * y[(size_t)i * C * HW + j];
        v /= (double)C * HW;
        worst = fmax(worst, fabs(m) + fabs(v - 1));
    }
    CHECK_ERR(what, worst, 1e-3);
    dp_free(ps); dp_free(ref); dp_free(sum);
    dp_free(x); dp_free(th); dp_free(u); dp_free(y); dp_free(xhat); dp_free(rstd); dp_free(din); dp_free(dth);
    dp_free(dth0);
}

/* ---- GELU ---- */
typedef struct { size_t n; const double *x; } gelu_ctx;
static void gelu_fwd(void *cv, double *y) {
    gelu_ctx *c = cv;
    dp__k_gelu_fwd_f64(y, c->x, c->n);
}

static void test_gelu(void) {
    const size_t n = 201;
    double *x = dnew(n), *u = dnew(n), *din = dnew(n), *y = dnew(n);
    for (size_t j = 0; j < n; j++) x[j] = -6 + 0.06 * (double)j;
    fill(u, n, 1);
    gelu_ctx c = {n, x};
    dp__k_gelu_bwd_f64(din, u, x, n);
    CHECK_ERR("gelu", fd_err(gelu_fwd, &c, x, n, u, n, din), 1e-7);
    gelu_fwd(&c, y);
    CHECK(y[100] == 0);                                   /* gelu(0) */
    CHECK_CLOSE(y[150], 3 * 0.5 * (1 + erf(3 / sqrt(2.0))), 1e-15); /* gelu(3) */
    /* the derivative against its closed form, beyond what FD resolves */
    for (size_t j = 0; j < n; j++) u[j] = 1;
    dp__k_gelu_bwd_f64(din, u, x, n);
    double wd = 0;
    for (size_t j = 0; j < n; j++) {
        double ref = 0.5 * (1 + erf(x[j] / sqrt(2.0))) + x[j] * exp(-0.5 * x[j] * x[j]) / sqrt(2 * acos(-1.0));
        wd = fmax(wd, fabs(din[j] - ref));
    }
    CHECK_ERR("gelu derivative closed form", wd, 1e-14);
    dp_free(x); dp_free(u); dp_free(din); dp_free(y);
}

/* ---- attention ---- */
typedef struct { int B, T, d, h; const double *q, *k, *v; const unsigned char *kv; double *P; } attn_ctx;
static void attn_fwd(void *cv, double *y) {
    attn_ctx *c = cv;
    dp__k_attn_fwd_f64(y, c->P, c->q, c->k, c->v, c->kv, c->B, c->T, c->d, c->h);
}

/* masks: sample 0 all valid, 1 with holes, 2 none valid, 3 only the last key; others random */
static unsigned char *make_mask(int B, int T) {
    unsigned char *kv = dp_calloc((size_t)B * T, 1);
    for (int i = 0; i < B; i++)
        for (int t = 0; t < T; t++) {
            unsigned char m;
            switch (i) {
            case 0: m = 1; break;
            case 1: m = t % 3 != 1; break;
            case 2: m = 0; break;
            case 3: m = t == T - 1; break;
            default: m = dp_rng_uniform(&R) < 0.6;
            }
            kv[(size_t)i * T + t] = m;
        }
    return kv;
}

static void test_attention(int B, int T, int d, int h, int masked) {
    char what[80];
    snprintf(what, sizeof what, "attention B%d T%d d%d h%d mask%d", B, T, d, h, masked);
    size_t n = (size_t)B * T * d, nP = (size_t)B * h * T * T;
    double *q = dnew(n), *k = dnew(n), *v = dnew(n), *u = dnew(n), *y = dnew(n), *P = dnew(nP);
    double *dq = dnew(n), *dk = dnew(n), *dv = dnew(n);
    double *work = dnew((size_t)dp__max_threads() * DP_ATTN_BWD_WORK(T, d));
    unsigned char *kv = masked ? make_mask(B, T) : NULL;
    fill(q, n, 1.5);
    fill(k, n, 1.5);
    fill(v, n, 1);
    fill(u, n, 1);
    attn_ctx c = {B, T, d, h, q, k, v, kv, P};
    attn_fwd(&c, y);
    /* P: rows sum to 1 over the valid keys, exactly 0 on masked keys, all 0 with no valid key */
    double wsum = 0;
    int zero_ok = 1;
    for (int i = 0; i < B; i++) {
        int any = 0;
        for (int t = 0; t < T; t++) any |= kv ? kv[(size_t)i * T + t] : 1;
        for (int j = 0; j < h; j++)
            for (int t = 0; t < T; t++) {
                const double *pr = P + (((size_t)i * h + j) * T + t) * T;
                double s = 0;
                for (int w = 0; w < T; w++) {
                    s += pr[w];
                    if (kv && !kv[(size_t)i * T + w]) zero_ok &= pr[w] == 0;
                }
                wsum = fmax(wsum, fabs(s - (any ? 1.0 : 0.0)));
            }
        if (!any) zero_ok &= all_zero(y + (size_t)i * T * d, (size_t)T * d);
    }
    CHECK_ERR(what, wsum, 1e-14);
    CHECK(zero_ok);
    dp__k_attn_bwd_f64(dq, dk, dv, work, u, P, q, k, v, B, T, d, h);
    CHECK(all_finite(dq, n) && all_finite(dk, n) && all_finite(dv, n));
    /* no gradient reaches masked keys or values */
    int mask_ok = 1;
    for (size_t r = 0; kv && r < (size_t)B * T; r++)
        if (!kv[r]) mask_ok &= all_zero(dk + r * d, (size_t)d) && all_zero(dv + r * d, (size_t)d);
    CHECK(mask_ok);
    CHECK_ERR(what, fd_err(attn_fwd, &c, q, n, u, n, dq), 1e-7);
    CHECK_ERR(what, fd_err(attn_fwd, &c, k, n, u, n, dk), 1e-7);
    CHECK_ERR(what, fd_err(attn_fwd, &c, v, n, u, n, dv), 1e-7);
    /* a reference forward for sample 0, head 0 written out by hand */
    {
        const int dh = d / h;
        double worst = 0;
        for (int t = 0; t < T; t++) {
            double s[64], mx = -INFINITY, z = 0;
            for (int w = 0; w < T; w++) {
                double a = 0;
                for (int e = 0; e < dh; e++) a += q[(size_t)t * d + e] * k[(size_t)w * d + e];
                s[w] = a / sqrt((double)dh);
                if (s[w] > mx) mx = s[w];
            }
            for (int w = 0; w < T; w++) z += (s[w] = exp(s[w] - mx));
            for (int e = 0; e < dh; e++) {
                double o = 0;
                for (int w = 0; w < T; w++) o += s[w] / z * v[(size_t)w * d + e];
                worst = fmax(worst, fabs(o - y[(size_t)t * d + e]));
            }
        }
        CHECK_ERR(what, worst, 1e-13);
    }
    dp_free(q); dp_free(k); dp_free(v); dp_free(u); dp_free(y); dp_free(P); dp_free(dq); dp_free(dk); dp_free(dv);
    dp_free(work); dp_free(kv);
}

/* ---- mean pooling, first token ---- */
typedef struct { int B, T, d; const double *x; const unsigned char *kv; int first; } pool_ctx;
static void pool_fwd(void *cv, double *y) {
    pool_ctx *c = cv;
    if (c->first) dp__k_firsttok_fwd_f64(y, c->x, c->B, c->T, c->d);
    else dp__k_meanpool_fwd_f64(y, c->x, c->kv, c->B, c->T, c->d);
}

static void test_pool(int B, int T, int d, int masked, int first) {
    char what[80];
    snprintf(what, sizeof what, "%s B%d T%d d%d mask%d", first ? "firsttok" : "meanpool", B, T, d, masked);
    size_t nx = (size_t)B * T * d, ny = (size_t)B * d;
    double *x = dnew(nx), *u = dnew(ny), *y = dnew(ny), *din = dnew(nx);
    unsigned char *kv = masked ? make_mask(B, T) : NULL;
    fill(x, nx, 1);
    fill(u, ny, 1);
    for (size_t j = 0; j < nx; j++) din[j] = NAN; /* must be written everywhere */
    pool_ctx c = {B, T, d, x, kv, first};
    if (first) dp__k_firsttok_bwd_f64(din, u, B, T, d);
    else dp__k_meanpool_bwd_f64(din, u, kv, B, T, d);
    CHECK(all_finite(din, nx));
    CHECK_ERR(what, fd_err(pool_fwd, &c, x, nx, u, ny, din), 1e-7);
    if (masked && !first && B >= 3) { /* sample 2 has no valid position */
        pool_fwd(&c, y);
        CHECK(all_zero(y + 2 * (size_t)d, (size_t)d));
        CHECK(all_zero(din + 2 * (size_t)T * d, (size_t)T * d));
    }
    dp_free(x); dp_free(u); dp_free(y); dp_free(din); dp_free(kv);
}

/* ---- float against double ---- */
static void test_f32_vs_f64(void) {
    const int nt = dp__max_threads();
    /* attention, masked, forward and backward */
    {
        const int B = 4, T = 9, d = 8, h = 2;
        size_t n = (size_t)B * T * d, nP = (size_t)B * h * T * T;
        double *in = dnew(4 * n), *y = dnew(n), *P = dnew(nP), *g = dnew(3 * n), *work = dnew((size_t)nt * T * T);
        float *inf = fnew(4 * n), *yf = fnew(n), *Pf = fnew(nP), *gf = fnew(3 * n), *workf = fnew((size_t)nt * T * T);
        unsigned char *kv = make_mask(B, T);
        fill_f(in, inf, 4 * n, 2);
        dp__k_attn_fwd_f64(y, P, in, in + n, in + 2 * n, kv, B, T, d, h);
        dp__k_attn_fwd_f32(yf, Pf, inf, inf + n, inf + 2 * n, kv, B, T, d, h);
        CHECK_ERR("attention f32 ctx", rel_fd(yf, y, n), 1e-4);
        CHECK_ERR("attention f32 P", rel_fd(Pf, P, nP), 1e-4);
        dp__k_attn_bwd_f64(g, g + n, g + 2 * n, work, in + 3 * n, P, in, in + n, in + 2 * n, B, T, d, h);
        dp__k_attn_bwd_f32(gf, gf + n, gf + 2 * n, workf, inf + 3 * n, Pf, inf, inf + n, inf + 2 * n, B, T, d, h);
        CHECK_ERR("attention f32 grads", rel_fd(gf, g, 3 * n), 1e-4);
        dp_free(in); dp_free(y); dp_free(P); dp_free(g); dp_free(work);
        dp_free(inf); dp_free(yf); dp_free(Pf); dp_free(gf); dp_free(workf); dp_free(kv);
    }
    /* layernorm and rmsnorm forward, input backward, per-sample */
    for (int rms = 0; rms < 2; rms++) {
        const int B = 3, T = 5, F = 37, Rr = B * T;
        size_t nx = (size_t)Rr * F;
        double *x = dnew(nx), *gam = dnew(2 * F), *y = dnew(nx), *xh = dnew(nx), *rs = dnew(Rr), *u = dnew(nx),
               *din = dnew(nx), *ps = dnew((size_t)B * 2 * F);
        float *xf = fnew(nx), *gamf = fnew(2 * F), *yf = fnew(nx), *xhf = fnew(nx), *rsf = fnew(Rr), *uf = fnew(nx),
              *dinf = fnew(nx), *psf = fnew((size_t)B * 2 * F);
        fill_f(x, xf, nx, 3);
        fill_f(gam, gamf, 2 * (size_t)F, 1);
        fill_f(u, uf, nx, 1);
        if (rms) {
            dp__k_rmsnorm_fwd_f64(y, xh, rs, x, gam, Rr, F, EPS);
            dp__k_rmsnorm_fwd_f32(yf, xhf, rsf, xf, gamf, Rr, F, (float)EPS);
            dp__k_rmsnorm_bwd_input_f64(din, u, xh, rs, gam, Rr, F);
            dp__k_rmsnorm_bwd_input_f32(dinf, uf, xhf, rsf, gamf, Rr, F);
            dp__k_rmsnorm_ps_grad_f64(ps, F, u, xh, B, T, F);
            dp__k_rmsnorm_ps_grad_f32(psf, F, uf, xhf, B, T, F);
        } else {
            dp__k_layernorm_fwd_f64(y, xh, rs, x, gam, gam + F, Rr, F, EPS);
            dp__k_layernorm_fwd_f32(yf, xhf, rsf, xf, gamf, gamf + F, Rr, F, (float)EPS);
            dp__k_layernorm_bwd_input_f64(din, u, xh, rs, gam, Rr, F);
            dp__k_layernorm_bwd_input_f32(dinf, uf, xhf, rsf, gamf, Rr, F);
            dp__k_layernorm_ps_grad_f64(ps, 2 * (size_t)F, u, xh, B, T, F);
            dp__k_layernorm_ps_grad_f32(psf, 2 * (size_t)F, uf, xhf, B, T, F);
        }
        CHECK_ERR(rms ? "rmsnorm f32 fwd" : "layernorm f32 fwd", rel_fd(yf, y, nx), 1e-4);
        CHECK_ERR(rms ? "rmsnorm f32 bwd" : "layernorm f32 bwd", rel_fd(dinf, din, nx), 1e-4);
        CHECK_ERR(rms ? "rmsnorm f32 ps" : "layernorm f32 ps", rel_fd(psf, ps, (size_t)B * (rms ? 1 : 2) * F), 1e-4);
        dp_free(x); dp_free(gam); dp_free(y); dp_free(xh); dp_free(rs); dp_free(u); dp_free(din); dp_free(ps);
        dp_free(xf); dp_free(gamf); dp_free(yf); dp_free(xhf); dp_free(rsf); dp_free(uf); dp_free(dinf); dp_free(psf);
    }
    /* GELU over [-10, 10] (and beyond, where the float exp clamps) */
    {
        const size_t n = 2001;
        double *x = dnew(n), *y = dnew(n), *g = dnew(n), *u = dnew(n);
        float *xf = fnew(n), *yf = fnew(n), *gf = fnew(n), *uf = fnew(n);
        for (size_t j = 0; j < n; j++) xf[j] = (float)(-10 + 0.01 * (double)j), x[j] = xf[j], uf[j] = 1, u[j] = 1;
        xf[0] = x[0] = -30;
        xf[n - 1] = x[n - 1] = 30;
        dp__k_gelu_fwd_f64(y, x, n);
        dp__k_gelu_fwd_f32(yf, xf, n);
        dp__k_gelu_bwd_f64(g, u, x, n);
        dp__k_gelu_bwd_f32(gf, uf, xf, n);
        CHECK_ERR("gelu f32 fwd", rel_fd(yf, y, n), 1e-6);
        CHECK_ERR("gelu f32 bwd", rel_fd(gf, g, n), 1e-6);
        double worst = 0; /* elementwise, relative to max(|ref|, 1e-3) */
        for (size_t j = 0; j < n; j++) worst = fmax(worst, fabs(gf[j] - g[j]) / fmax(fabs(g[j]), 1e-3));
        CHECK_ERR("gelu f32 bwd elementwise", worst, 1e-4);
        dp_free(x); dp_free(y); dp_free(g); dp_free(u); dp_free(xf); dp_free(yf); dp_free(gf); dp_free(uf);
    }
    /* ghost norms: seqlin (bias) and embedding */
    {
        const int B = 3, T = 6, d = 5, p = 4;
        size_t nx = (size_t)B * T * d, ng = (size_t)B * T * p;
        double *x = dnew(nx), *g = dnew(ng), *sq = dnew(B), *sq2 = dnew(B), *work = dnew((size_t)nt * 2 * T * T);
        float *xf = fnew(nx), *gf = fnew(ng), *workf = fnew((size_t)nt * 2 * T * T);
        double *sqf = dnew(B), *sqf2 = dnew(B);
        int32_t ids[18] = {0, 1, 0, -1, 3, 0, 2, 2, 2, 2, 2, 2, -1, 1, 3, 1, 0, 1};
        fill_f(x, xf, nx, 1);
        fill_f(g, gf, ng, 1);
        dp__k_seqlin_ghost_sq_f64(sq, work, g, x, B, T, d, p, 1);
        dp__k_seqlin_ghost_sq_f32(sqf, workf, gf, xf, B, T, d, p, 1);
        dp__k_embed_ghost_sq_f64(sq2, work, x, ids, B, T, d);
        dp__k_embed_ghost_sq_f32(sqf2, workf, xf, ids, B, T, d);
        CHECK_ERR("seqlin ghost f32", max_rel(sqf, sq, B), 1e-4);
        CHECK_ERR("embed ghost f32", max_rel(sqf2, sq2, B), 1e-4);
        dp_free(x); dp_free(g); dp_free(sq); dp_free(sq2); dp_free(work); dp_free(xf); dp_free(gf); dp_free(workf);
        dp_free(sqf); dp_free(sqf2);
    }
}

/* ---- B = 0 (R = 0, n = 0): nothing is read or written ---- */
static void test_empty(void) {
    double buf[64], keep[64], sq[4] = {1, 2, 3, 4};
    float bf[64];
    int32_t ids[4] = {0, 0, 0, 0};
    unsigned char kv[4] = {1, 1, 1, 1};
    for (int j = 0; j < 64; j++) buf[j] = keep[j] = j + 0.5, bf[j] = (float)buf[j];
    double *b = buf;
    dp__k_seqlin_ps_grad_f64(b, 8, b, b, 0, 3, 2, 2, 1);
    dp__k_seqlin_ghost_sq_f64(sq, b, b, b, 0, 3, 2, 2, 1);
    dp__k_embed_fwd_f64(b, ids, b, 0, 3, 2);
    dp__k_embed_bwd_param_f64(b, b, ids, 0, 3, 2);
    dp__k_embed_ps_grad_f64(b, 8, b, ids, 0, 3, 2, 4);
    dp__k_embed_ghost_sq_f64(sq, b, b, ids, 0, 3, 2);
    dp__k_posemb_fwd_f64(b, b, b, 0, 3, 2);
    dp__k_posemb_bwd_param_f64(b, b, 0, 3, 2);
    dp__k_layernorm_fwd_f64(b, b, b, b, b, b, 0, 4, 1e-5);
    dp__k_layernorm_bwd_input_f64(b, b, b, b, b, 0, 4);
    dp__k_layernorm_bwd_param_f64(b, b, b, b, 0, 4);
    dp__k_layernorm_ps_grad_f64(b, 8, b, b, 0, 3, 4);
    dp__k_rmsnorm_fwd_f64(b, b, b, b, b, 0, 4, 1e-5);
    dp__k_rmsnorm_bwd_input_f64(b, b, b, b, b, 0, 4);
    dp__k_rmsnorm_bwd_param_f64(b, b, b, 0, 4);
    dp__k_rmsnorm_ps_grad_f64(b, 8, b, b, 0, 3, 4);
    dp__k_groupnorm_fwd_f64(b, b, b, b, b, b, 0, 4, 3, 2, 1e-5);
    dp__k_groupnorm_bwd_input_f64(b, b, b, b, b, 0, 4, 3, 2);
    dp__k_groupnorm_bwd_param_f64(b, b, b, b, 0, 4, 3);
    dp__k_groupnorm_ps_grad_f64(b, 8, b, b, 0, 4, 3);
    dp__k_gelu_fwd_f64(b, b, 0);
    dp__k_gelu_bwd_f64(b, b, b, 0);
    dp__k_attn_fwd_f64(b, b, b, b, b, kv, 0, 3, 4, 2);
    dp__k_attn_bwd_f64(b, b, b, b, b, b, b, b, b, 0, 3, 4, 2);
    dp__k_meanpool_fwd_f64(b, b, kv, 0, 3, 2);
    dp__k_meanpool_bwd_f64(b, b, kv, 0, 3, 2);
    dp__k_firsttok_fwd_f64(b, b, 0, 3, 2);
    dp__k_firsttok_bwd_f64(b, b, 0, 3, 2);
    dp__k_attn_fwd_f32(bf, bf, bf, bf, bf, NULL, 0, 3, 4, 2);
    dp__k_layernorm_bwd_param_f32(bf, bf, bf, bf, 0, 4);
    CHECK(memcmp(buf, keep, sizeof buf) == 0);
    CHECK(sq[0] == 1 && sq[1] == 2 && sq[2] == 3 && sq[3] == 4);
    int fok = 1;
    for (int j = 0; j < 64; j++) fok &= bf[j] == (float)keep[j];
    CHECK(fok);
}

int main(void) {
    dp_rng_seed(&R, 11);
    test_seqlin(3, 5, 4, 3, 1);
    test_seqlin(2, 7, 3, 6, 0);
    test_seqlin(2, 1, 4, 2, 1);
    test_seqlin(4, 9, 2, 2, 1); /* T*T > d*p */
    test_embed(4, 9, 3, 5);
    test_embed(3, 6, 2, 2); /* V = 2: many repeats */
    test_embed(1, 1, 4, 3);
    test_posemb(3, 5, 4);
    for (int rms = 0; rms < 2; rms++) {
        test_rownorm(rms, 3, 4, 7, 1);
        test_rownorm(rms, 2, 3, 5, 0);
        test_rownorm(rms, 2, 1, 300, 1); /* F over one accumulator block */
    }
    test_groupnorm(3, 6, 5, 3);
    test_groupnorm(2, 4, 3, 1);
    test_groupnorm(2, 3, 4, 3);
    test_gelu();
    test_attention(5, 7, 6, 2, 1);
    test_attention(4, 5, 4, 1, 1);
    test_attention(3, 6, 9, 3, 0);
    test_attention(2, 1, 4, 2, 1); /* T = 1 */
    test_pool(5, 6, 3, 1, 0);
    test_pool(3, 4, 2, 0, 0);
    test_pool(3, 4, 3, 0, 1);
    test_f32_vs_f64();
    test_empty();
    return t_finish("test_seq_kernels");
}
