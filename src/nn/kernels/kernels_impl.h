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
        double gg = 0, aa = 0;
        for (int o = 0; o < p; o++) gg += (double)dout[(size_t)i * p + o] * dout[(size_t)i * p + o];
        for (int j = 0; j < d; j++) aa += (double)in[(size_t)i * d + j] * in[(size_t)i * d + j];
        sq[i] += gg * aa + (has_bias ? gg : 0.0);
    }
}

/* ---- Conv2d ------------------------------------------------------------------------- */

/* col[T, D]: row t = output position (oy, ox), columns (c, ky, kx) like the weight layout;
 * kernel taps d apart (dilation; 1 = contiguous); pt, pl: the zero padding above and to the
 * left (below and to the right: whatever Ho and Wo reach). A grouped convolution's group g reads the
 * columns of its channels, g*Dg .. (g+1)*Dg - 1 with Dg = D / G, so one unfolding serves all. */
void KN(im2col)(REAL *col, const REAL *in, int Cin, int H, int W, int k, int s, int pt, int pl, int d, int Ho, int Wo) {
    const int D = Cin * k * k;
    for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++) {
            REAL *row = col + (size_t)(oy * Wo + ox) * D;
            int iy0 = oy * s - pt, ix0 = ox * s - pl;
            for (int c = 0; c < Cin; c++)
                for (int ky = 0; ky < k; ky++) {
                    int iy = iy0 + ky * d;
                    REAL *dst = row + (c * k + ky) * k;
                    if (iy < 0 || iy >= H) {
                        for (int kx = 0; kx < k; kx++) dst[kx] = 0;
                        continue;
                    }
                    const REAL *src = in + ((size_t)c * H + iy) * W;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ix0 + kx * d;
                        dst[kx] = (ix >= 0 && ix < W) ? src[ix] : 0;
                    }
                }
        }
}

/* din[Cin,H,W] += col2im(dcol[T, D]) */
void KN(col2im)(REAL *din, const REAL *dcol, int Cin, int H, int W, int k, int s, int pt, int pl, int d, int Ho, int Wo) {
    const int D = Cin * k * k;
    for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++) {
            const REAL *row = dcol + (size_t)(oy * Wo + ox) * D;
            int iy0 = oy * s - pt, ix0 = ox * s - pl;
            for (int c = 0; c < Cin; c++)
                for (int ky = 0; ky < k; ky++) {
                    int iy = iy0 + ky * d;
                    if (iy < 0 || iy >= H) continue;
                    const REAL *src = row + (c * k + ky) * k;
                    REAL *dst = din + ((size_t)c * H + iy) * W;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ix0 + kx * d;
                        if (ix >= 0 && ix < W) dst[ix] += src[kx];
                    }
                }
        }
}

/* Forward over the batch. col[B, T, D] receives the unfolded input (kept for backward).
 * out[B, Cout, T] = W[Cout, Dg] col_i^T + b, computed as ONE GEMM per group over all B*T rows
 * (col[B*T, group's D columns] W_g^T -> work[B*T, group's Cout columns]) and a transpose: far
 * faster than B small GEMMs. G groups: W_g = rows g*Cout/G.. of W, Dg = D / G.
 * work: at least B*T*Cout REALs. */
void KN(conv_fwd)(REAL *out, REAL *col, REAL *work, const REAL *in, const REAL *w, const REAL *b, int B, int Cin,
                  int H, int W, int Cout, int k, int s, int pt, int pl, int d, int G, int Ho, int Wo) {
    const int D = Cin * k * k, T = Ho * Wo, Dg = D / G, Cg = Cout / G;
    if (B == 0) return;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++)
        KN(im2col)(col + (size_t)i * T * D, in + (size_t)i * Cin * H * W, Cin, H, W, k, s, pt, pl, d, Ho, Wo);
    for (int g = 0; g < G; g++)
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B * T, Cg, Dg, 1, col + (size_t)g * Dg, D,
             w + (size_t)g * Cg * Dg, Dg, 0, work + (size_t)g * Cg, Cout);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *oi = out + (size_t)i * Cout * T;
        const REAL *wi = work + (size_t)i * T * Cout;
        for (int c = 0; c < Cout; c++) {
            const REAL bc = b ? b[c] : 0;
            for (int t = 0; t < T; t++) oi[(size_t)c * T + t] = wi[(size_t)t * Cout + c] + bc;
        }
    }
}

/* din[B, Cin, H, W] = conv input gradient; work: per-thread scratch of T*D REALs each,
 * nthreads blocks (caller allocates work[omp_get_max_threads() * T * D]). */
void KN(conv_bwd_input)(REAL *din, REAL *work, const REAL *dout, const REAL *w, int B, int Cin, int H,
                        int W, int Cout, int k, int s, int pt, int pl, int d, int G, int Ho, int Wo) {
    const int D = Cin * k * k, T = Ho * Wo, Dg = D / G, Cg = Cout / G;
#pragma omp parallel
    {
        REAL *dcol = work + (size_t)dp__thread_num() * T * D;
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++) {
            REAL *di = din + (size_t)i * Cin * H * W;
            memset(di, 0, sizeof(REAL) * (size_t)Cin * H * W);
            for (int g = 0; g < G; g++)
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, Dg, Cg, 1, dout + ((size_t)i * Cout + (size_t)g * Cg) * T,
                     T, w + (size_t)g * Cg * Dg, Dg, 0, dcol + (size_t)g * Dg, D);
            KN(col2im)(di, dcol, Cin, H, W, k, s, pt, pl, d, Ho, Wo);
        }
    }
}

/* dW[Cout, Dg] += sum_i dout_i col_i (group g: rows g*Cout/G.., columns g*Dg.. of col);
 * db += sum over i, t. D is the full patch width (Cin k k), Dg = D / G the weight's row.
 * work: DP_CONV_BWD_PARAM_WORK(B, Cout, T, Dg, threads) REALs.
 * The weight GEMM has few rows (Cout) and columns (D) and a long inner dimension (B*T), which
 * OpenBLAS threads poorly, so each thread takes a contiguous run of samples: it gathers their
 * output gradients as [Cout, nb*T], forms its partial dW and db with single-threaded GEMMs,
 * and the partials are added at the end in thread order (reproducible for a thread count). */
void KN(conv_bwd_param)(REAL *dw, REAL *db, REAL *work, const REAL *dout, const REAL *col, int B, int Cout,
                        int T, int D, int G) {
    if (B == 0) return;
    int nt = dp__max_threads();
    if (nt > B) nt = B;
    const int Dg = D / G, Cg = Cout / G;
    const size_t P = (size_t)Cout * (Dg + 1);
    REAL *part = work + (size_t)Cout * B * T;
#pragma omp parallel num_threads(nt)
    {
        const int t = dp__thread_num(), n = dp__num_threads();
        const int i0 = (int)((long)B * t / n), i1 = (int)((long)B * (t + 1) / n), nb = i1 - i0;
        REAL *tr = work + (size_t)Cout * T * i0, *p = part + (size_t)t * P;
        memset(p, 0, sizeof(REAL) * P);
        if (nb > 0) {
            for (int c = 0; c < Cout; c++)
                for (int i = i0; i < i1; i++)
                    memcpy(tr + ((size_t)c * nb + (i - i0)) * T, dout + ((size_t)i * Cout + c) * T,
                           sizeof(REAL) * (size_t)T);
            for (int g = 0; g < G; g++)
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cg, Dg, nb * T, 1, tr + (size_t)g * Cg * nb * T, nb * T,
                     col + (size_t)i0 * T * D + (size_t)g * Dg, D, 0, p + (size_t)g * Cg * Dg, Dg);
            if (db)
                for (int c = 0; c < Cout; c++) {
                    double acc = 0;
                    const REAL *r = tr + (size_t)c * nb * T;
                    for (size_t j = 0; j < (size_t)nb * T; j++) acc += r[j];
                    p[(size_t)Cout * Dg + c] = (REAL)acc;
                }
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int c = 0; c < Cout; c++)
            for (int u = 0; u < n; u++) {
                const REAL *pu = part + (size_t)u * P;
                for (int j = 0; j < Dg; j++) dw[(size_t)c * Dg + j] += pu[(size_t)c * Dg + j];
                if (db) db[c] += pu[(size_t)Cout * Dg + c];
            }
    }
}

/* per-sample gradients: ps[i*stride ..] = dout_i[Cout,T] col_i[T,D] per group ([Cout, Dg]),
 * then bias sums */
void KN(conv_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const REAL *col, int B, int Cout, int T,
                      int D, int G, int has_bias) {
    const int Dg = D / G, Cg = Cout / G;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *g = ps + (size_t)i * stride;
        const REAL *gi = dout + (size_t)i * Cout * T;
        for (int q = 0; q < G; q++)
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cg, Dg, T, 1, gi + (size_t)q * Cg * T, T,
                 col + (size_t)i * T * D + (size_t)q * Dg, D, 0, g + (size_t)q * Cg * Dg, Dg);
        if (has_bias)
            for (int c = 0; c < Cout; c++) {
                double acc = 0;
                for (int t = 0; t < T; t++) acc += gi[(size_t)c * T + t];
                g[(size_t)Cout * Dg + c] = (REAL)acc;
            }
    }
}

/* ghost norm: sq[i] += sum over groups of <A A^T, G G^T> with A = the group's columns of
 * col_i [T, Dg], G = its rows of dout_i, transposed [T, Cout/G]; plus ||sum_t G_i[t]||^2 for
 * the bias. work: per-thread 2*T*T REALs. */
void KN(conv_ghost_sq)(double *sq, REAL *work, const REAL *dout, const REAL *col, int B, int Cout, int T,
                       int D, int G, int has_bias) {
    const int Dg = D / G, Cg = Cout / G;
#pragma omp parallel
    {
        REAL *aa = work + (size_t)dp__thread_num() * 2 * T * T, *gg = aa + (size_t)T * T;
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++) {
            const REAL *gi = dout + (size_t)i * Cout * T;
            double acc = 0;
            for (int q = 0; q < G; q++) {
                SYRK(CblasRowMajor, CblasUpper, CblasNoTrans, T, Dg, 1, col + (size_t)i * T * D + (size_t)q * Dg, D, 0,
                     aa, T);
                SYRK(CblasRowMajor, CblasUpper, CblasTrans, T, Cg, 1, gi + (size_t)q * Cg * T, T, 0, gg, T);
                for (int t = 0; t < T; t++) {
                    acc += (double)aa[(size_t)t * T + t] * gg[(size_t)t * T + t];
                    double off = 0;
                    for (int u = t + 1; u < T; u++) off += (double)aa[(size_t)t * T + u] * gg[(size_t)t * T + u];
                    acc += 2 * off;
                }
            }
            if (has_bias)
                for (int c = 0; c < Cout; c++) {
                    double sb = 0;
                    for (int t = 0; t < T; t++) sb += gi[(size_t)c * T + t];
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
                            if (bi < 0 || (v > best) | ((v != v) & (best == best))) {
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
                        int take = (v > orow[ox]) | ((v != v) & (orow[ox] == orow[ox]));
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
