/* kernels_impl.h: the layer kernels, written once and compiled twice, for float (the
 * engine) and for double (the finite-difference tests run the very same code in double).
 * Include only from kernels_f32.c / kernels_f64.c, which define:
 *   REAL       float or double
 *   KN(name)   name mangling: dp__k_<name>_f32 / _f64
 *   GEMM, SYRK the cblas routine for REAL
 *
 * Shape legend (per sample unless the batch B is named):
 *   B batch, d input features, p output features,
 *   Cin/Cout channels, H,W input size, k kernel, s stride, pad padding, Ho,Wo output size,
 *   T = Ho*Wo output positions, D = Cin*k*k unfolded patch size.
 * Layout: activations row-major [B, ...]; images NCHW; conv weight [Cout, Cin, k, k] = [Cout, D];
 * linear weight [p, d]. Kernels named *_bwd_* ACCUMULATE (+=) into parameter gradients and
 * per-sample squared norms; input gradients are written (=).
 * Parallelism: OpenMP over the batch axis (each thread owns whole samples), so no atomics;
 * cblas calls inside run single-threaded (OpenBLAS OpenMP build). Reductions over the batch
 * (weight gradients) are single GEMMs over B*T rows, threaded inside OpenBLAS, except the
 * convolution's (see conv_bwd_param). */

#include <math.h>
#include <string.h>

/* C[M, N] (row-major, row stride ldc) = A B by a GEMM with beta 1 on C zeroed here: with beta
 * 0 OpenBLAS first zeroes C by a loop of its own, which took a quarter of the time of the
 * second convolution's input-gradient GEMM on a Zen 3 (glibc's memset is faster). The same
 * numbers: C = 0 + A B either way. */
static void KN(gemm_into)(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const REAL *A, int lda,
                          const REAL *B, int ldb, REAL *C, int ldc) {
#ifdef GEMM_SMALL /* float with AVX2: the small GEMMs without OpenBLAS's packing (kernels_f32.c) */
    if (ta == CblasNoTrans && tb == CblasNoTrans && GEMM_SMALL(M, N, K, A, lda, B, ldb, C, ldc, 0)) return;
#endif
    if (ldc == N) memset(C, 0, sizeof(REAL) * (size_t)M * (size_t)N);
    else
        for (int r = 0; r < M; r++) memset(C + (size_t)r * ldc, 0, sizeof(REAL) * (size_t)N);
    GEMM(CblasRowMajor, ta, tb, M, N, K, 1, A, lda, B, ldb, 1, C, ldc);
}

/* ---- Linear ------------------------------------------------------------------------- */

/* out[B,p] = in[B,d] W^T + b */
void KN(linear_fwd)(REAL *out, const REAL *in, const REAL *w, const REAL *b, int B, int d, int p) {
    if (B == 0) return;
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, p, d, 1, in, d, w, d, 0, out, p);
    if (b) {
#pragma omp parallel for schedule(static) if (B * p > 65536)
        for (int i = 0; i < B; i++)
            for (int o = 0; o < p; o++) out[(size_t)i * p + o] += b[o];
    }
}

/* din[B,d] = dout[B,p] W[p,d] */
void KN(linear_bwd_input)(REAL *din, const REAL *dout, const REAL *w, int B, int d, int p) {
    if (B == 0) return;
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, d, p, 1, dout, p, w, d, 0, din, d);
}

/* dW[p,d] += dout^T in; db[p] += sum_i dout_i  (db may be NULL) */
void KN(linear_bwd_param)(REAL *dw, REAL *db, const REAL *dout, const REAL *in, int B, int d, int p) {
    if (B == 0) return;
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, p, d, B, 1, dout, p, in, d, 1, dw, d);
    if (db)
        for (int i = 0; i < B; i++)
            for (int o = 0; o < p; o++) db[o] += dout[(size_t)i * p + o];
}

/* per-sample gradients: ps[i*stride + 0 .. p*d) = dout_i (x) in_i, then bias dout_i (if has_bias) */
void KN(linear_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int d, int p,
                        int has_bias) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *g = ps + (size_t)i * stride;
        const REAL *gi = dout + (size_t)i * p, *ai = in + (size_t)i * d;
        for (int o = 0; o < p; o++)
            for (int j = 0; j < d; j++) g[(size_t)o * d + j] = gi[o] * ai[j];
        if (has_bias) memcpy(g + (size_t)p * d, gi, sizeof(REAL) * (size_t)p);
    }
}

/* ghost norm: sq[i] += ||dout_i||^2 ||in_i||^2 (+ ||dout_i||^2 for the bias) */
void KN(linear_ghost_sq)(double *sq, const REAL *dout, const REAL *in, int B, int d, int p, int has_bias) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        const double gg = DOTD(dout + (size_t)i * p, dout + (size_t)i * p, (size_t)p),
                     aa = DOTD(in + (size_t)i * d, in + (size_t)i * d, (size_t)d);
        sq[i] += gg * aa + (has_bias ? gg : 0.0);
    }
}

/* ---- Conv2d ------------------------------------------------------------------------- */

/* The unfolding of one sample, col[T, D]: row t = output position (oy, ox), columns
 * (c, ky, kx) like the weight layout; kernel taps d apart (dilation; 1 = contiguous); pt, pl:
 * the zero padding above and to the left (below and to the right: whatever Ho and Wo reach).
 * A grouped convolution's group q reads the columns of its channels, q*Dg .. (q+1)*Dg - 1 with
 * Dg = D / G, so one unfolding serves all.
 * The unfolding of a batch is never formed (it is k*k/s^2 times the input, 16x for the
 * default CNN's first layer): each kernel below unfolds a few samples at a time
 * (dp__conv_chunk) into its thread's scratch, where the GEMM reads them back from cache, and
 * the weight gradients unfold the layer's input again. Scratch: dp__conv_work(g, threads). */

/* Output columns [*lo, *hi) whose k taps (d apart) all fall inside the input row; the others
 * (near the left and right padding) take the general path. */
static inline void KN(conv_inner)(const dp__conv_geom *g, int *lo, int *hi) {
    int a = 0, b = g->Wo;
    while (a < g->Wo && a * g->s - g->pl < 0) a++;
    while (b > a && (b - 1) * g->s - g->pl + (g->k - 1) * g->d >= g->W) b--;
    *lo = a;
    *hi = b;
}

/* The k values of input row `src` under every inner output column ox in [lo, hi) to (copy) or
 * from (add) k columns of row ox of the unfolding (rows D apart, `row` at ox = 0): constant
 * lengths for the usual kernel sizes, so that each is a vector move. */
#define DP__CONV_ROWS(K, DST, SRC, OP)                                                        \
    case K:                                                                                   \
        for (int ox = lo; ox < hi; ox++) {                                                    \
            REAL *dp_ = (REAL *)(DST);                                                        \
            const REAL *sp_ = (SRC);                                                          \
            for (int q = 0; q < K; q++) dp_[q] OP sp_[q];                                     \
        }                                                                                     \
        break;
#define DP__CONV_SWITCH(DST, SRC, OP)                                                         \
    switch (k) {                                                                              \
        DP__CONV_ROWS(1, DST, SRC, OP) DP__CONV_ROWS(2, DST, SRC, OP) DP__CONV_ROWS(3, DST, SRC, OP) \
        DP__CONV_ROWS(4, DST, SRC, OP) DP__CONV_ROWS(5, DST, SRC, OP) DP__CONV_ROWS(7, DST, SRC, OP) \
        DP__CONV_ROWS(8, DST, SRC, OP)                                                        \
    default:                                                                                  \
        for (int ox = lo; ox < hi; ox++) {                                                    \
            REAL *dp_ = (REAL *)(DST);                                                        \
            const REAL *sp_ = (SRC);                                                          \
            for (int q = 0; q < k; q++) dp_[q] OP sp_[q];                                     \
        }                                                                                     \
    }

/* Position-major unfolding (row t of col, all D values, then the next), for layers whose
 * output rows are short next to a position's Cin*k tap rows (Wo < Cin k: the default CNN's
 * second convolution, 5 positions a row against 64 tap rows of 4), where the row-major loops
 * below spend their time on loop overhead (docs/design.md, docs/benchmarks.md). A tap row
 * is a copy (OP =) or an accumulation (OP +=) of K values; a window that reaches into the
 * padding is cleared (copy) and only its taps inside the input are moved. Taps d = 1 apart. */
#define DP__CONV_POS(K, COL, IMG, OP)                                                         \
    case K:                                                                                   \
        for (int oy = 0; oy < g->Ho; oy++)                                                    \
            for (int ox = 0; ox < g->Wo; ox++) {                                              \
                REAL *pc_ = (REAL *)(COL) + ((size_t)oy * g->Wo + ox) * D;                   \
                const int iy0 = oy * s - g->pt, ix0 = ox * s - g->pl;                        \
                const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + K > g->H ? g->H - iy0 : K;   \
                const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + K > g->W ? g->W - ix0 : K;   \
                if (ky0 == 0 && ky1 == K && kx0 == 0 && kx1 == K) {                          \
                    for (int c = 0; c < g->Cin; c++)                                          \
                        for (int ky = 0; ky < K; ky++) {                                      \
                            REAL *a_ = pc_ + (size_t)(c * K + ky) * K;                       \
                            REAL *b_ = (REAL *)(IMG) + ((size_t)c * g->H + iy0 + ky) * g->W + ix0; \
                            for (int kx = 0; kx < K; kx++) DP__CONV_MOVE(OP);                 \
                        }                                                                     \
                    continue;                                                                 \
                }                                                                             \
                DP__CONV_CLEAR(OP, pc_, D);                                                   \
                for (int c = 0; c < g->Cin; c++)                                              \
                    for (int ky = ky0; ky < ky1; ky++) {                                      \
                        REAL *a_ = pc_ + (size_t)(c * K + ky) * K;                           \
                        REAL *b_ = (REAL *)(IMG) + ((size_t)c * g->H + iy0 + ky) * g->W + ix0; \
                        for (int kx = kx0; kx < kx1; kx++) DP__CONV_MOVE(OP);                 \
                    }                                                                         \
            }                                                                                 \
        return;
/* copy: col value a_[kx] from the image's b_[kx]; accumulate: the image's b_[kx] += a_[kx] */
#define DP__CONV_MOVE_COPY a_[kx] = b_[kx]
#define DP__CONV_MOVE_ADD b_[kx] += a_[kx]
#define DP__CONV_MOVE(OP) DP__CONV_MOVE_##OP
#define DP__CONV_CLEAR_COPY(p, n) memset((p), 0, sizeof(REAL) * (size_t)(n))
#define DP__CONV_CLEAR_ADD(p, n) (void)0
#define DP__CONV_CLEAR(OP, p, n) DP__CONV_CLEAR_##OP(p, n)
#define DP__CONV_POS_SWITCH(COL, IMG, OP)                                                     \
    if (g->d == 1 && g->Wo < g->Cin * k) switch (k) {                                        \
            DP__CONV_POS(2, COL, IMG, OP) DP__CONV_POS(3, COL, IMG, OP) DP__CONV_POS(4, COL, IMG, OP) \
            DP__CONV_POS(5, COL, IMG, OP) DP__CONV_POS(7, COL, IMG, OP) DP__CONV_POS(8, COL, IMG, OP) \
        default: break;                                                                       \
        }

/* The padded input a row-major unfolding reads when the layer pads and its padded image is
 * small (DP__CONV_PADDED values at most, on the stack): rows and columns of zeros around the
 * input, so that every window is inner and every tap row a constant-length move (the default
 * CNN's first convolution: 2 of its 13 output columns and 4 of its 104 tap rows reach into the
 * padding, and their per-value bounds checks took a third of its unfolding). */
#define DP__CONV_PADDED 8192
static int KN(conv_pad_size)(const dp__conv_geom *g, int *Hp, int *Wp) {
    *Hp = (g->Ho - 1) * g->s + g->k;
    *Wp = (g->Wo - 1) * g->s + g->k;
    if (g->d != 1 || (g->pt == 0 && g->pl == 0 && *Hp <= g->H && *Wp <= g->W)) return 0;
    const long n = (long)g->Cin * *Hp * *Wp;
    return n <= DP__CONV_PADDED ? (int)n : 0;
}
static void KN(conv_pad)(REAL *pad, const REAL *in, const dp__conv_geom *g, int Hp, int Wp) {
    const int x0 = g->pl, x1 = g->pl + g->W < Wp ? g->pl + g->W : Wp; /* the input's columns in a row */
    for (int c = 0; c < g->Cin; c++)
        for (int y = 0; y < Hp; y++) {
            REAL *r = pad + ((size_t)c * Hp + y) * Wp;
            const int iy = y - g->pt;
            if (iy < 0 || iy >= g->H || x1 <= x0) {
                memset(r, 0, sizeof(REAL) * (size_t)Wp);
                continue;
            }
            for (int x = 0; x < x0; x++) r[x] = 0;
            memcpy(r + x0, in + ((size_t)c * g->H + iy) * g->W, sizeof(REAL) * (size_t)(x1 - x0));
            for (int x = x1; x < Wp; x++) r[x] = 0;
        }
}

/* One output row at a time (its Wo x D block of the unfolding stays in the first-level cache
 * while every channel and tap row is written into it), or position-major (above). */
void KN(im2col)(REAL *col, const REAL *in, const dp__conv_geom *g) {
    const int k = g->k, d = g->d, s = g->s, D = g->Cin * k * k, Wo = g->Wo;
    DP__CONV_POS_SWITCH(col, in, COPY)
    int lo, hi, Hp, Wp;
    const int np = KN(conv_pad_size)(g, &Hp, &Wp);
    if (np) {
        REAL pad[DP__CONV_PADDED];
        KN(conv_pad)(pad, in, g, Hp, Wp);
        lo = 0;
        hi = Wo;
        for (int oy = 0; oy < g->Ho; oy++)
            for (int c = 0; c < g->Cin; c++)
                for (int ky = 0; ky < k; ky++) {
                    REAL *row = col + (size_t)oy * Wo * D + (size_t)(c * k + ky) * k;
                    const REAL *src = pad + ((size_t)c * Hp + oy * s + ky) * Wp;
                    DP__CONV_SWITCH(row + (size_t)ox * D, src + ox * s, =)
                }
        return;
    }
    KN(conv_inner)(g, &lo, &hi);
    if (d != 1) lo = hi = 0; /* dilated taps: the general path throughout */
    for (int oy = 0; oy < g->Ho; oy++)
        for (int c = 0; c < g->Cin; c++)
            for (int ky = 0; ky < k; ky++) {
                const int iy = oy * s - g->pt + ky * d;
                REAL *row = col + (size_t)oy * Wo * D + (size_t)(c * k + ky) * k;
                if (iy < 0 || iy >= g->H) {
                    for (int ox = 0; ox < Wo; ox++)
                        for (int kx = 0; kx < k; kx++) row[(size_t)ox * D + kx] = 0;
                    continue;
                }
                const REAL *src = in + ((size_t)c * g->H + iy) * g->W;
                for (int ox = 0; ox < Wo; ox++) {
                    if (ox == lo && lo < hi) ox = hi; /* the inner columns: below */
                    if (ox >= Wo) break;
                    const int ix0 = ox * s - g->pl;
                    for (int kx = 0; kx < k; kx++) {
                        const int ix = ix0 + kx * d;
                        row[(size_t)ox * D + kx] = ix >= 0 && ix < g->W ? src[ix] : 0;
                    }
                }
                DP__CONV_SWITCH(row + (size_t)ox * D, src + ox * s - g->pl, =)
            }
}

/* din[Cin, H, W] += col2im(dcol[T, D]) */
void KN(col2im)(REAL *din, const REAL *dcol, const dp__conv_geom *g) {
    const int k = g->k, d = g->d, s = g->s, D = g->Cin * k * k, Wo = g->Wo;
    DP__CONV_POS_SWITCH(dcol, din, ADD)
    int lo, hi;
    KN(conv_inner)(g, &lo, &hi);
    if (d != 1) lo = hi = 0;
    for (int oy = 0; oy < g->Ho; oy++)
        for (int c = 0; c < g->Cin; c++)
            for (int ky = 0; ky < k; ky++) {
                const int iy = oy * s - g->pt + ky * d;
                if (iy < 0 || iy >= g->H) continue;
                const REAL *row = dcol + (size_t)oy * Wo * D + (size_t)(c * k + ky) * k;
                REAL *dst = din + ((size_t)c * g->H + iy) * g->W;
                for (int ox = 0; ox < Wo; ox++) {
                    if (ox == lo && lo < hi) ox = hi;
                    if (ox >= Wo) break;
                    const int ix0 = ox * s - g->pl;
                    for (int kx = 0; kx < k; kx++) {
                        const int ix = ix0 + kx * d;
                        if (ix >= 0 && ix < g->W) dst[ix] += row[(size_t)ox * D + kx];
                    }
                }
                DP__CONV_SWITCH(dst + ox * s - g->pl, row + (size_t)ox * D, +=)
            }
}
#undef DP__CONV_SWITCH
#undef DP__CONV_ROWS
#undef DP__CONV_POS_SWITCH
#undef DP__CONV_POS
#undef DP__CONV_MOVE
#undef DP__CONV_MOVE_COPY
#undef DP__CONV_MOVE_ADD
#undef DP__CONV_CLEAR
#undef DP__CONV_CLEAR_COPY
#undef DP__CONV_CLEAR_ADD
#undef DP__CONV_PADDED

/* aa[T, T] (the upper triangle, t <= u, at least) = A A^T for A [T, Dg] of row stride ld, T <=
 * DP__GRAM_FWD_T: the ghost norm's small Grams, made by the forward (conv_fwd, g->gram_buf) or
 * by conv_ghost_sq, the same function either way so that both give the same numbers */
static void KN(gram_small)(REAL *aa, const REAL *A, int T, int Dg, int ld) {
#ifdef GRAM_UPPER /* float with AVX2: the upper triangle by blocks (kernels_f32.c) */
    GRAM_UPPER(aa, A, T, Dg, ld);
#else
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, Dg, 1, A, ld, A, ld, 0, aa, T);
#endif
}

/* sum over t <= u of the upper triangles' products, off-diagonal ones twice: <A A^T, G G^T> */
static double KN(upper_dot)(const REAL *aa, const REAL *gg, int T) {
    double acc = 0;
    for (int t = 0; t < T; t++) {
        acc += (double)aa[(size_t)t * T + t] * gg[(size_t)t * T + t];
        acc += 2 * DOTD(aa + (size_t)t * T + t + 1, gg + (size_t)t * T + t + 1, (size_t)(T - t - 1));
    }
    return acc;
}

/* <A A^T, G G^T> for one sample's group with T <= DP__GRAM_FWD_T positions: aa the upper
 * triangle of A A^T, gi the output gradient [Cg, T], s the scratch (dp__ghost_scratch(T)).
 * G G^T by GEMM (OpenBLAS's beat its SYRK at these sizes on one core, T = 25, the default
 * CNN's second layer; at T >= 49 SYRK was as fast or faster: conv_ghost_sq), or the float
 * AVX2 build's contraction without it (kernels_f32.c) */
static double KN(ghost_contract)(const REAL *aa, const REAL *gi, int T, int Cg, REAL *s) {
#ifdef GHOST_CONTRACT
    return GHOST_CONTRACT(aa, gi, T, Cg, s);
#else
    KN(gemm_into)(CblasTrans, CblasNoTrans, T, T, Cg, gi, T, gi, T, s, T);
    return KN(upper_dot)(aa, s, T);
#endif
}

/* out[B, Cout, T] = W[Cout, Dg] col_i^T + b, a chunk of samples at a time per thread: their
 * unfolding col[n*T, D], one GEMM per group over its n*T rows (col's group columns times
 * W_g^T -> res[n*T, the group's Cout columns]), then res transposed into out with the bias,
 * and with g->tanh, tanh applied to each sample's outputs while they are in cache (the engine
 * fuses a conv2d with the tanh after it: one pass over the activations less each way).
 * G groups: W_g = rows g*Cout/G.. of W. */
void KN(conv_fwd)(REAL *out, REAL *work, const REAL *in, const REAL *w, const REAL *b, int B, const dp__conv_geom *g) {
    const dp__conv_dims z = dp__conv_sizes(g);
    const int T = z.T, D = z.D, G = g->G, Dg = z.Dg, Cout = g->Cout, Cg = z.Cg, nc = z.nc, nchunks = (B + nc - 1) / nc;
    const size_t isz = z.isz, tw = z.tw;
#ifdef CONV_DIRECT_OK /* float with AVX2: few input channels, short rows (conv_direct.h) */
    if (!g->gram_buf && CONV_DIRECT_OK(g, tw)) {
#pragma omp parallel if (B > 1)
        {
            const int t = dp__thread_num(), n = dp__num_threads();
            const int i0 = (int)((long)B * t / n), i1 = (int)((long)B * (t + 1) / n);
            if (i1 > i0)
                CONV_DIRECT_FWD(out + (size_t)i0 * Cout * T, work + (size_t)t * tw, in + (size_t)i0 * isz, isz, i1 - i0, w, b, g);
        }
        return;
    }
#endif
#ifdef GEMM_SMALL
    const int small = GEMM_SMALL_OK(Cg, Dg); /* the chunk GEMM's N and K */
#endif
#pragma omp parallel if (nchunks > 1)
    {
        REAL *col = work + (size_t)dp__thread_num() * tw, *res = col + (size_t)nc * T * D;
#ifdef GEMM_SMALL /* the weight transposed, wt[group][Dg, Cg], in the scratch's tail (>= Cout (Dg + 1) values) */
        REAL *wt = res + (size_t)nc * T * Cout;
        if (small)
            for (int u = 0; u < G; u++)
                for (int c = 0; c < Cg; c++)
                    for (int j = 0; j < Dg; j++)
                        wt[(size_t)u * Dg * Cg + (size_t)j * Cg + c] = w[((size_t)u * Cg + c) * Dg + j];
#endif
#pragma omp for schedule(static)
        for (int q = 0; q < nchunks; q++) {
            const int i0 = q * nc, n = B - i0 < nc ? B - i0 : nc;
            for (int i = 0; i < n; i++) KN(im2col)(col + (size_t)i * T * D, in + (size_t)(i0 + i) * isz, g);
            if (g->gram_buf)
                for (int i = 0; i < n; i++)
                    for (int u = 0; u < G; u++)
                        KN(gram_small)((REAL *)g->gram_buf + ((size_t)(i0 + i) * G + u) * T * T,
                                       col + (size_t)i * T * D + (size_t)u * Dg, T, Dg, D);
            for (int u = 0; u < G; u++) {
#ifdef GEMM_SMALL
                if (small &&
                    GEMM_SMALL(n * T, Cg, Dg, col + (size_t)u * Dg, D, wt + (size_t)u * Dg * Cg, Cg, res + (size_t)u * Cg, Cout, 0))
                    continue;
#endif
                KN(gemm_into)(CblasNoTrans, CblasTrans, n * T, Cg, Dg, col + (size_t)u * Dg, D, w + (size_t)u * Cg * Dg, Dg,
                              res + (size_t)u * Cg, Cout);
            }
            for (int i = 0; i < n; i++) {
                REAL *oi = out + (size_t)(i0 + i) * Cout * T;
                const REAL *ri = res + (size_t)i * T * Cout;
                for (int c = 0; c < Cout; c++) {
                    const REAL bc = b ? b[c] : 0;
                    for (int t = 0; t < T; t++) oi[(size_t)c * T + t] = ri[(size_t)t * Cout + c] + bc;
                }
                if (g->tanh) {
                    _Pragma("omp simd") for (size_t j = 0; j < (size_t)Cout * T; j++) oi[j] = TANH(oi[j]);
                }
            }
        }
    }
}

/* din[B, Cin, H, W] = the input gradient, a chunk at a time per thread: dout transposed to
 * dt[n*T, Cout], one GEMM per group dcol[n*T, group's D columns] = dt[:, group] W_g, then
 * col2im per sample */
void KN(conv_bwd_input)(REAL *din, REAL *work, const REAL *dout, const REAL *w, int B, const dp__conv_geom *g) {
    const dp__conv_dims z = dp__conv_sizes(g);
    const int T = z.T, D = z.D, G = g->G, Dg = z.Dg, Cout = g->Cout, Cg = z.Cg, nc = z.nc, nchunks = (B + nc - 1) / nc;
    const size_t isz = z.isz, tw = z.tw;
#pragma omp parallel if (nchunks > 1)
    {
        REAL *dcol = work + (size_t)dp__thread_num() * tw, *dt = dcol + (size_t)nc * T * D;
#pragma omp for schedule(static)
        for (int q = 0; q < nchunks; q++) {
            const int i0 = q * nc, n = B - i0 < nc ? B - i0 : nc;
            for (int i = 0; i < n; i++) {
                const REAL *gi = dout + (size_t)(i0 + i) * Cout * T;
                REAL *ti = dt + (size_t)i * T * Cout;
                for (int c = 0; c < Cout; c++)
                    for (int t = 0; t < T; t++) ti[(size_t)t * Cout + c] = gi[(size_t)c * T + t];
            }
            for (int u = 0; u < G; u++)
                KN(gemm_into)(CblasNoTrans, CblasNoTrans, n * T, Dg, Cg, dt + (size_t)u * Cg, Cout, w + (size_t)u * Cg * Dg,
                              Dg, dcol + (size_t)u * Dg, D);
            for (int i = 0; i < n; i++) {
                REAL *di = din + (size_t)(i0 + i) * isz;
                memset(di, 0, sizeof(REAL) * isz);
                KN(col2im)(di, dcol + (size_t)i * T * D, g);
            }
        }
    }
}

/* dW[Cout, Dg] += sum_i dout_i col_i (group q: rows q*Cout/G.., columns q*Dg.. of col);
 * db += sum over i, t. The weight GEMM has few rows (Cout) and columns (D) and a long inner
 * dimension (B*T), which OpenBLAS threads poorly, so each thread takes a contiguous run of
 * samples and, a chunk at a time, unfolds their input, gathers their output gradients as
 * [Cout, n*T] and adds to its partial dW and db with single-threaded GEMMs; the partials are
 * added at the end in thread order (reproducible for a thread count). */
void KN(conv_bwd_param)(REAL *dw, REAL *db, REAL *work, const REAL *dout, const REAL *in, int B, const dp__conv_geom *g) {
    if (B == 0) return;
    const dp__conv_dims z = dp__conv_sizes(g);
    const int T = z.T, D = z.D, G = g->G, Dg = z.Dg, Cout = g->Cout, Cg = z.Cg, nc = z.nc;
    const size_t isz = z.isz, tw = z.tw, poff = tw - (size_t)Cout * (Dg + 1);
    int nt = dp__max_threads();
    if (nt > B) nt = B;
#pragma omp parallel num_threads(nt)
    {
        const int t = dp__thread_num(), n = dp__num_threads();
        int i0 = (int)((long)B * t / n), i1 = (int)((long)B * (t + 1) / n);
        REAL *col = work + (size_t)t * tw, *tr = col + (size_t)nc * T * D, *p = work + (size_t)t * tw + poff;
        memset(p, 0, sizeof(REAL) * (size_t)Cout * (Dg + 1));
#ifdef CONV_DIRECT_OK
        if (CONV_DIRECT_OK(g, poff)) { /* the sample's gradient added into p (conv_direct.h) */
            for (int i = i0; i < i1; i++) {
                const REAL *gi = dout + (size_t)i * Cout * T;
                CONV_DIRECT_WGRAD(p, 1, col, gi, in + (size_t)i * isz, g);
                if (db)
                    for (int c = 0; c < Cout; c++) p[(size_t)Cout * Dg + c] += (REAL)SUMD(gi + (size_t)c * T, (size_t)T);
            }
            i1 = i0; /* done: skip the unfolding path */
        }
#endif
        for (int c0 = i0; c0 < i1; c0 += nc) {
            const int m = i1 - c0 < nc ? i1 - c0 : nc;
            for (int i = 0; i < m; i++) KN(im2col)(col + (size_t)i * T * D, in + (size_t)(c0 + i) * isz, g);
            for (int c = 0; c < Cout; c++)
                for (int i = 0; i < m; i++)
                    memcpy(tr + ((size_t)c * m + i) * T, dout + ((size_t)(c0 + i) * Cout + c) * T, sizeof(REAL) * (size_t)T);
            for (int u = 0; u < G; u++) {
#ifdef GEMM_SMALL
                if (GEMM_SMALL(Cg, Dg, m * T, tr + (size_t)u * Cg * m * T, m * T, col + (size_t)u * Dg, D, p + (size_t)u * Cg * Dg,
                               Dg, 1))
                    continue;
#endif
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cg, Dg, m * T, 1, tr + (size_t)u * Cg * m * T, m * T,
                     col + (size_t)u * Dg, D, 1, p + (size_t)u * Cg * Dg, Dg);
            }
            if (db)
                for (int c = 0; c < Cout; c++) p[(size_t)Cout * Dg + c] += (REAL)SUMD(tr + (size_t)c * m * T, (size_t)m * T);
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int c = 0; c < Cout; c++)
            for (int u = 0; u < n; u++) {
                const REAL *pu = work + (size_t)u * tw + poff;
                for (int j = 0; j < Dg; j++) dw[(size_t)c * Dg + j] += pu[(size_t)c * Dg + j];
                if (db) db[c] += pu[(size_t)Cout * Dg + c];
            }
    }
}

/* per-sample gradients: ps[i*stride ..] = dout_i[Cout,T] col_i[T,D] per group ([Cout, Dg]),
 * then bias sums */
void KN(conv_ps_grad)(REAL *ps, size_t stride, REAL *work, const REAL *dout, const REAL *in, int B, const dp__conv_geom *g,
                      int has_bias) {
    const dp__conv_dims z = dp__conv_sizes(g);
    const int T = z.T, D = z.D, G = g->G, Dg = z.Dg, Cout = g->Cout, Cg = z.Cg;
    const size_t isz = z.isz, tw = z.tw;
#ifdef CONV_DIRECT_OK
    const int direct = CONV_DIRECT_OK(g, tw);
#endif
#pragma omp parallel if (B > 1)
    {
        REAL *col = work + (size_t)dp__thread_num() * tw;
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++) {
            REAL *gr = ps + (size_t)i * stride;
            const REAL *gi = dout + (size_t)i * Cout * T;
#ifdef CONV_DIRECT_OK
            if (direct)
                CONV_DIRECT_WGRAD(gr, 0, col, gi, in + (size_t)i * isz, g); /* conv_direct.h */
            else
#endif
            {
                KN(im2col)(col, in + (size_t)i * isz, g);
                for (int q = 0; q < G; q++)
                    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cg, Dg, T, 1, gi + (size_t)q * Cg * T, T,
                         col + (size_t)q * Dg, D, 0, gr + (size_t)q * Cg * Dg, Dg);
            }
            if (has_bias)
                for (int c = 0; c < Cout; c++) gr[(size_t)Cout * Dg + c] = (REAL)SUMD(gi + (size_t)c * T, (size_t)T);
        }
    }
}

/* ghost norm: sq[i] += sum over groups of <A A^T, G G^T> with A = the group's columns of
 * col_i [T, Dg], G = its rows of dout_i, transposed [T, Cout/G]; plus ||sum_t G_i[t]||^2 for
 * the bias. The Grams' upper triangles are read; at T <= 32 (DP__GRAM_FWD_T) A A^T comes from
 * gram_small and the product from ghost_contract; above, both by SYRK. With g->gram_buf the
 * A A^T are the forward's (T <= 32): the input is not unfolded again. */
void KN(conv_ghost_sq)(double *sq, REAL *work, const REAL *dout, const REAL *in, int B, const dp__conv_geom *g,
                       int has_bias) {
    DP_ASSERT(g->grams); /* the scratch has room for the Grams */
    const dp__conv_dims z = dp__conv_sizes(g);
    const int T = z.T, D = z.D, G = g->G, Dg = z.Dg, Cout = g->Cout, Cg = z.Cg;
    const REAL *fwd = g->gram_buf; /* the input's Grams from the forward, or NULL: unfold here */
    DP_ASSERT(!fwd || T <= DP__GRAM_FWD_T);
    const size_t isz = z.isz, tw = z.tw;
#pragma omp parallel if (B > 1)
    {
        REAL *col = work + (size_t)dp__thread_num() * tw, *gg = col + tw - dp__ghost_scratch((size_t)T),
             *aa = gg - (size_t)T * T;
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++) {
            const REAL *gi = dout + (size_t)i * Cout * T;
            if (!fwd) KN(im2col)(col, in + (size_t)i * isz, g);
            double acc = 0;
            for (int q = 0; q < G; q++) {
                const REAL *a = aa;
                if (fwd) a = fwd + ((size_t)i * G + q) * T * T; /* the forward's */
                if (T <= DP__GRAM_FWD_T) { /* small Grams */
                    if (!fwd) KN(gram_small)(aa, col + (size_t)q * Dg, T, Dg, D);
                    acc += KN(ghost_contract)(a, gi + (size_t)q * Cg * T, T, Cg, gg);
                } else {
                    SYRK(CblasRowMajor, CblasUpper, CblasNoTrans, T, Dg, 1, col + (size_t)q * Dg, D, 0, aa, T);
                    SYRK(CblasRowMajor, CblasUpper, CblasTrans, T, Cg, 1, gi + (size_t)q * Cg * T, T, 0, gg, T);
                    acc += KN(upper_dot)(a, gg, T);
                }
            }
            if (has_bias)
                for (int c = 0; c < Cout; c++) {
                    const double sb = SUMD(gi + (size_t)c * T, (size_t)T);
                    acc += sb * sb;
                }
            sq[i] += acc;
        }
    }
}

/* ---- element-wise ------------------------------------------------------------------- */

/* Element-wise loops run in blocks: OpenMP threads over blocks, SIMD inside a block. */
#define DP__ELEMENTWISE(n, stmt)                                                              \
    _Pragma("omp parallel for schedule(static) if (n > 65536)")                              \
    for (size_t c0 = 0; c0 < n; c0 += 4096) {                                                 \
        const size_t c1 = n - c0 < 4096 ? n : c0 + 4096;                                      \
        _Pragma("omp simd")                                                                   \
        for (size_t j = c0; j < c1; j++) stmt;                                                \
    }

void KN(relu_fwd)(REAL *out, const REAL *in, size_t n) { DP__ELEMENTWISE(n, out[j] = in[j] > 0 ? in[j] : 0) }
/* din = dout * (out > 0) */
void KN(relu_bwd)(REAL *din, const REAL *dout, const REAL *out, size_t n) {
    DP__ELEMENTWISE(n, din[j] = out[j] > 0 ? dout[j] : 0)
}
void KN(tanh_fwd)(REAL *out, const REAL *in, size_t n) { DP__ELEMENTWISE(n, out[j] = TANH(in[j])) }
/* din = dout * (1 - out^2) */
void KN(tanh_bwd)(REAL *din, const REAL *dout, const REAL *out, size_t n) {
    DP__ELEMENTWISE(n, din[j] = dout[j] * (1 - out[j] * out[j]))
}
/* out = 1 / (1 + e^-in), written so that neither branch overflows */
void KN(sigmoid_fwd)(REAL *out, const REAL *in, size_t n) {
    DP__ELEMENTWISE(n, out[j] = in[j] >= 0 ? 1 / (1 + EXP(-in[j])) : EXP(in[j]) / (1 + EXP(in[j])))
}
/* din = dout * out (1 - out) */
void KN(sigmoid_bwd)(REAL *din, const REAL *dout, const REAL *out, size_t n) {
    DP__ELEMENTWISE(n, din[j] = dout[j] * out[j] * (1 - out[j]))
}
/* dropout with a precomputed keep mask: out = in * mask / (1-p) */
void KN(dropout_fwd)(REAL *out, const REAL *in, const unsigned char *mask, REAL scale, size_t n) {
    for (size_t j = 0; j < n; j++) out[j] = mask[j] ? in[j] * scale : 0;
}
void KN(dropout_bwd)(REAL *din, const REAL *dout, const unsigned char *mask, REAL scale, size_t n) {
    for (size_t j = 0; j < n; j++) din[j] = mask[j] ? dout[j] * scale : 0;
}

/* ---- pooling (implicit symmetric padding `pad`; floor mode) --------------------------- */

/* Whether v takes the place of b as a window's maximum so far: larger, or a NaN over a number,
 * so that ties keep the first maximum in scan order and a NaN wins (every max pooling path) */
static inline int KN(pool_beats)(REAL v, REAL b) { return (v > b) | ((v != v) & (b == b)); }

/* max pooling's separable path for 2 x 2 windows at stride 1 (maxpool_fwd below), over a run of
 * whole planes at a time (np planes of H x W, at most DP__POOL_FLAT values: the planes are
 * contiguous, so the run is one flat array; the pairs that straddle two rows or two planes are
 * never read back). Written out for k = 2: with a loop over the taps, or a second tap chained,
 * gcc branched on the data instead of vectorising, much slower than the row-by-row path.
 * The winners of a run of n planes (at most DP__POOL_FLAT values), by output position (window
 * (oy, ox) of plane i at j = i H W + oy W + ox): hs[j] whether the right value of the pair
 * j, j + 1 beat the left, vs[j] whether the pair one row down beat pair j; so the winner is
 * j + hs[j] or, with vs[j], j + W + hs[j + W]. Each stage keeps the first maximum (or NaN) of
 * its pair, the scan order's winner. (The values alone: maxpool2_run_values, the forward's.) */
static void KN(maxpool2_pick)(unsigned char *restrict hs, unsigned char *restrict vs, const REAL *restrict x, int n,
                              int H, int W, int Ho, int Wo) {
    REAL hv[DP__POOL_FLAT];
    const int hw = H * W, nh = n * hw - 1, nv = (n - 1) * hw + (Ho - 1) * W + Wo;
    for (int j = 0; j < nh; j++) {
        const REAL b = x[j], v = x[j + 1];
        const int take = KN(pool_beats)(v, b);
        hv[j] = take ? v : b;
        hs[j] = (unsigned char)take;
    }
    for (int j = 0; j < nv; j++) {
        const REAL b = hv[j], v = hv[j + W];
        vs[j] = (unsigned char)KN(pool_beats)(v, b);
    }
}
/* the winners' values alone (the forward that saves no indices: dp__maxpool_recomputes) */
static void KN(maxpool2_run_values)(REAL *restrict vv, const REAL *restrict x, int n, int H, int W, int Ho, int Wo) {
    REAL hv[DP__POOL_FLAT];
    const int hw = H * W, nh = n * hw - 1, nv = (n - 1) * hw + (Ho - 1) * W + Wo;
    for (int j = 0; j < nh; j++) {
        const REAL b = x[j], v = x[j + 1];
        hv[j] = KN(pool_beats)(v, b) ? v : b;
    }
    for (int j = 0; j < nv; j++) {
        const REAL b = hv[j], v = hv[j + W];
        vv[j] = KN(pool_beats)(v, b) ? v : b;
    }
}
static void KN(maxpool2_flat)(REAL *restrict out, int32_t *restrict arg, const REAL *restrict in, int P, int H, int W,
                              int Ho, int Wo) {
    const int hw = H * W, np = DP__POOL_FLAT / hw, nrun = (P + np - 1) / np;
#pragma omp parallel for schedule(static)
    for (int q = 0; q < nrun; q++) {
        REAL vv[DP__POOL_FLAT];
        unsigned char hs[DP__POOL_FLAT], vs[DP__POOL_FLAT];
        const int p0 = q * np, n = P - p0 < np ? P - p0 : np;
        const REAL *x = in + (size_t)p0 * hw;
        if (arg)
            KN(maxpool2_pick)(hs, vs, x, n, H, W, Ho, Wo);
        else
            KN(maxpool2_run_values)(vv, x, n, H, W, Ho, Wo);
        for (int i = 0; i < n; i++) { /* rows of a few values: loops, not a call per row */
            REAL *o = out + (size_t)(p0 + i) * Ho * Wo;
            const int base = i * hw; /* the run's index of the plane's first value */
            if (!arg) {
                for (int oy = 0; oy < Ho; oy++)
                    for (int ox = 0; ox < Wo; ox++) o[oy * Wo + ox] = vv[base + oy * W + ox];
                continue;
            }
            int32_t *a = arg + (size_t)(p0 + i) * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    const int j = base + oy * W + ox, r = vs[j] ? j + W : j, w = r + hs[r]; /* the winner */
                    o[oy * Wo + ox] = x[w];
                    a[oy * Wo + ox] = w - base;
                }
        }
    }
}
/* din (=) from dout for the flat path, the winners found again from the input (no saved
 * indices): the same comparisons in the same order as the forward, so the same winners. A
 * window's winner is one of four offsets from its first value j (0, 1, W, W + 1: which of the
 * pair along the row, hs, in which row, vs), so the gradient goes out in four vectorised
 * passes over the run, one per offset, instead of a scatter; a value gets its windows'
 * gradients in the order a scatter over the windows would add them (offsets W + 1, W, 1, 0:
 * ascending windows), so the result is the same to the bit. With dtanh the input is a tanh's
 * output t and din is the gradient of the tanh's input: times 1 - t^2 while in cache
 * (tanh_bwd's expression; the engine's fusion). */
void KN(maxpool_bwd_recompute)(REAL *din, const REAL *dout, const REAL *in, int B, int C, int H, int W, int Ho, int Wo,
                               int dtanh) {
    const int P = B * C, hw = H * W, np = DP__POOL_FLAT / hw, nrun = (P + np - 1) / np;
#pragma omp parallel for schedule(static)
    for (int q = 0; q < nrun; q++) {
        REAL gj[DP__POOL_FLAT];
        unsigned char hs[DP__POOL_FLAT], vs[DP__POOL_FLAT];
        const int p0 = q * np, n = P - p0 < np ? P - p0 : np, N = n * hw;
        const int nv = (n - 1) * hw + (Ho - 1) * W + Wo;
        const REAL *x = in + (size_t)p0 * hw;
        REAL *dx = din + (size_t)p0 * hw;
        KN(maxpool2_pick)(hs, vs, x, n, H, W, Ho, Wo);
        memset(gj, 0, sizeof(REAL) * (size_t)nv); /* the windows' gradients at their first values */
        for (int i = 0; i < n; i++)
            for (int oy = 0; oy < Ho; oy++)
                memcpy(gj + i * hw + oy * W, dout + ((size_t)(p0 + i) * Ho + oy) * Wo, sizeof(REAL) * (size_t)Wo);
        memset(dx, 0, sizeof(REAL) * (size_t)N);
        for (int j = 0; j < nv; j++) dx[j + W + 1] += vs[j] & hs[j + W] ? gj[j] : 0;
        for (int j = 0; j < nv; j++) dx[j + W] += vs[j] & (hs[j + W] ^ 1) ? gj[j] : 0;
        for (int j = 0; j < nv; j++) dx[j + 1] += (vs[j] ^ 1) & hs[j] ? gj[j] : 0;
        for (int j = 0; j < nv; j++) dx[j] += (vs[j] | hs[j]) ^ 1 ? gj[j] : 0;
        if (dtanh) {
            _Pragma("omp simd") for (int j = 0; j < N; j++) dx[j] = dx[j] * (1 - x[j] * x[j]);
        }
    }
}
/* out[B, C, Ho, Wo] with Ho = (H + 2 pad - k) / s + 1; arg[B, C, Ho, Wo] = flat index within
 * the sample's channel plane. Padded positions never win (-inf padding, as PyTorch and ONNX);
 * every window holds a real position as long as pad < k. Ties keep the first maximum in scan
 * order; a NaN wins (it propagates, as in PyTorch). */
void KN(maxpool_fwd)(REAL *out, int32_t *arg, const REAL *in, int B, int C, int H, int W, const dp__pool_geom *g,
                     int Ho, int Wo) {
    const int k = g->k, s = g->s, d = g->d > 1 ? g->d : 1;
    if (g->pt || g->pl || d > 1 || (Ho - 1) * s + k > H || (Wo - 1) * s + k > W) {
        /* windows that reach into padding (or past the input in ceil mode), or dilated taps:
         * only the taps inside the input compete; a window with none (the geometry's checks
         * prevent it) gives 0 and no gradient */
#pragma omp parallel for schedule(static)
        for (int bc = 0; bc < B * C; bc++) {
            const REAL *x = in + (size_t)bc * H * W;
            REAL *o = out + (size_t)bc * Ho * Wo;
            int32_t *a = arg + (size_t)bc * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++) {
                const int y0 = oy * s - g->pt;
                for (int ox = 0; ox < Wo; ox++) {
                    const int x0 = ox * s - g->pl;
                    REAL best = 0;
                    int32_t bi = -1;
                    for (int ky = 0; ky < k; ky++) {
                        const int y = y0 + ky * d;
                        if (y < 0 || y >= H) continue;
                        for (int kx = 0; kx < k; kx++) {
                            const int xx = x0 + kx * d;
                            if (xx < 0 || xx >= W) continue;
                            REAL v = x[y * W + xx];
                            if (bi < 0 || KN(pool_beats)(v, best)) {
                                best = v;
                                bi = y * W + xx;
                            }
                        }
                    }
                    o[oy * Wo + ox] = best;
                    a[oy * Wo + ox] = bi;
                }
            }
        }
        return;
    }
    if (dp__maxpool_recomputes(g, H, W, Ho, Wo)) {
        /* 2 x 2 windows at stride 1 on small planes with short rows: separably, over runs of
         * whole planes (maxpool2_flat): the better of two neighbours along each row, then of
         * two such rows, then the output rows copied out. Each stage keeps the first maximum
         * (or NaN) of its pair, so the window's winner is the one the scan order below picks. */
        KN(maxpool2_flat)(out, arg, in, B * C, H, W, Ho, Wo);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const REAL *x = in + (size_t)bc * H * W;
        REAL *o = out + (size_t)bc * Ho * Wo;
        int32_t *a = arg + (size_t)bc * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++) {
            REAL *orow = o + oy * Wo;
            int32_t *arow = a + oy * Wo;
            const int r0 = oy * s * W;
            /* window position (0,0) first, then the others; the inner loop runs along the
             * output row so it vectorises (contiguous for stride 1) */
            for (int ox = 0; ox < Wo; ox++) {
                orow[ox] = x[r0 + ox * s];
                arow[ox] = r0 + ox * s;
            }
            for (int ky = 0; ky < k; ky++)
                for (int kx = (ky == 0); kx < k; kx++) {
                    const int off = r0 + ky * W + kx;
                    for (int ox = 0; ox < Wo; ox++) {
                        REAL v = x[off + ox * s];
                        int take = KN(pool_beats)(v, orow[ox]);
                        orow[ox] = take ? v : orow[ox];
                        arow[ox] = take ? off + ox * s : arow[ox];
                    }
                }
        }
    }
}
/* din (=) from dout via the argmax indices */
void KN(maxpool_bwd)(REAL *din, const REAL *dout, const int32_t *arg, int B, int C, int H, int W, int Ho, int Wo) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        REAL *dx = din + (size_t)bc * H * W;
        memset(dx, 0, sizeof(REAL) * (size_t)H * W);
        for (int o = 0; o < Ho * Wo; o++) {
            const int32_t ai = arg[(size_t)bc * Ho * Wo + o];
            if (ai >= 0) dx[ai] += dout[(size_t)bc * Ho * Wo + o];
        }
    }
}
/* global average pooling: out[b, c] = mean over the HW values of channel c */
void KN(gap_fwd)(REAL *out, const REAL *in, int B, int C, int HW) {
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > 65536)
    for (int bc = 0; bc < B * C; bc++) {
        const REAL *x = in + (size_t)bc * HW;
        REAL acc = 0;
        for (int j = 0; j < HW; j++) acc += x[j];
        out[bc] = acc / HW;
    }
}
/* din[b, c, :] = dout[b, c] / HW */
void KN(gap_bwd)(REAL *din, const REAL *dout, int B, int C, int HW) {
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > 65536)
    for (int bc = 0; bc < B * C; bc++) {
        const REAL g = dout[bc] / HW;
        for (int j = 0; j < HW; j++) din[(size_t)bc * HW + j] = g;
    }
}

/* average over the real positions of each window (padded positions are zeros); the divisor
 * is k*k when count_pad (PyTorch's count_include_pad=True), else the number of real positions
 * in the window (ONNX's default count_include_pad=0). pad = 0: always k*k. */
/* the divisor of window (y0, x0) (its top-left tap, padding included): the taps inside the
 * padded input with count_pad, else the real ones; [ya, yb) x [xa, xb) the real taps */
static inline int KN(avg_window)(const dp__pool_geom *g, int H, int W, int y0, int x0, int *ya, int *yb, int *xa,
                                 int *xb) {
    const int k = g->k;
    *ya = y0 < 0 ? 0 : y0, *yb = y0 + k > H ? H : y0 + k;
    *xa = x0 < 0 ? 0 : x0, *xb = x0 + k > W ? W : x0 + k;
    if (!g->count_pad) return (*yb - *ya) * (*xb - *xa);
    const int ye = y0 + k > H + g->pb ? H + g->pb : y0 + k, xe = x0 + k > W + g->pr ? W + g->pr : x0 + k;
    return (ye - y0) * (xe - x0);
}

void KN(avgpool_fwd)(REAL *out, const REAL *in, int B, int C, int H, int W, const dp__pool_geom *g, int Ho, int Wo) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const REAL *x = in + (size_t)bc * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int ya, yb, xa, xb;
                const int n = KN(avg_window)(g, H, W, oy * g->s - g->pt, ox * g->s - g->pl, &ya, &yb, &xa, &xb);
                REAL acc = 0;
                for (int y = ya; y < yb; y++)
                    for (int xx = xa; xx < xb; xx++) acc += x[y * W + xx];
                out[(size_t)bc * Ho * Wo + oy * Wo + ox] = n > 0 ? acc * ((REAL)1 / (REAL)n) : 0;
            }
    }
}

void KN(avgpool_bwd)(REAL *din, const REAL *dout, int B, int C, int H, int W, const dp__pool_geom *g, int Ho, int Wo) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        REAL *dx = din + (size_t)bc * H * W;
        memset(dx, 0, sizeof(REAL) * (size_t)H * W);
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int ya, yb, xa, xb;
                const int n = KN(avg_window)(g, H, W, oy * g->s - g->pt, ox * g->s - g->pl, &ya, &yb, &xa, &xb);
                if (n <= 0) continue;
                const REAL v = dout[(size_t)bc * Ho * Wo + oy * Wo + ox] * ((REAL)1 / (REAL)n);
                for (int y = ya; y < yb; y++)
                    for (int xx = xa; xx < xb; xx++) dx[y * W + xx] += v;
            }
    }
}

/* ---- losses: per-sample values and d loss_i / d logits_i ----------------------------- */

/* cross-entropy: loss_i = logsumexp(z_i) - z_i[y_i]; dz_i = softmax(z_i) - onehot(y_i).
 * Returns the number of non-finite losses (their rows still get written). */
int KN(xent)(REAL *loss, REAL *dz, const REAL *z, const int32_t *y, int B, int K) {
    int bad = 0;
    for (int i = 0; i < B; i++) {
        const REAL *zi = z + (size_t)i * K;
        double mx = zi[0];
        for (int c = 1; c < K; c++)
            if (zi[c] > mx) mx = zi[c];
        double se = 0;
        for (int c = 0; c < K; c++) se += exp((double)zi[c] - mx);
        double lse = mx + log(se);
        double l = lse - (double)zi[y[i]];
        if (loss) loss[i] = (REAL)l;
        if (!isfinite(l)) bad++;
        if (dz)
            for (int c = 0; c < K; c++)
                dz[(size_t)i * K + c] = (REAL)(exp((double)zi[c] - lse) - (c == y[i] ? 1.0 : 0.0));
    }
    return bad;
}

/* mean squared error per sample: loss_i = mean_c (z - t)^2 ; dz = 2 (z - t) / K */
int KN(mse)(REAL *loss, REAL *dz, const REAL *z, const REAL *t, int B, int K) {
    int bad = 0;
    for (int i = 0; i < B; i++) {
        double l = 0;
        for (int c = 0; c < K; c++) {
            double e = (double)z[(size_t)i * K + c] - t[(size_t)i * K + c];
            l += e * e;
            if (dz) dz[(size_t)i * K + c] = (REAL)(2 * e / K);
        }
        l /= K;
        if (loss) loss[i] = (REAL)l;
        if (!isfinite(l)) bad++;
    }
    return bad;
}
