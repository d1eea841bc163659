/* conv_direct.h (internal, included by kernels_f32.c where the build has AVX2 and FMA): direct
 * convolution for layers with few input channels, large kernels and short output rows (the
 * default CNN's first convolution: 1 x 28 x 28 input, 16 channels of 8 x 8 at stride 2 with
 * padding 2, 13 x 13 outputs), where the im2col path (kernels_impl.h) spent more time
 * unfolding the input, packing it again inside OpenBLAS and transposing the result than
 * multiplying: each unfolded value is one multiply-add per output channel, and the GEMM's
 * short dimension (16 channels) leaves OpenBLAS's kernels half idle.
 *
 * - forward: one sample at a time, an output row (oy) and six output channels at a time in
 *   twelve vector accumulators: the row's Wo positions as two 8-wide vectors at columns 0 and
 *   Wo - 8 (they overlap when Wo < 16: the lanes in both get the same products in the same
 *   order, so the same value is stored twice), each tap a broadcast weight times 8 inputs
 *   s apart. Stride 2 reads them contiguously from the input split by column parity
 *   (phase p holds padded columns s j + p), made once per sample. The output comes out in the
 *   layer's [Cout, T] layout (no transpose).
 * - weight gradient (per sample, or added over a run of samples): the k taps of a kernel row as
 *   the 8 lanes of a vector (k <= 8; the lanes past k are computed and dropped), each output
 *   position a broadcast output gradient times 8 consecutive padded inputs; six channels by two
 *   kernel rows in twelve accumulators, which are the gradient's own entries: no horizontal sums.
 *
 * The sums run in another order than the GEMM's, so results differ from the im2col path by
 * rounding (test_nn compares both with the double kernels). dp__conv_direct_ok says which
 * geometries take this path; the scratch is the thread's share of the layer's work buffer. */
#ifndef DP_CONV_DIRECT_H
#define DP_CONV_DIRECT_H

#define DP__CDIR_NC 6 /* output channels per block: 6 x 2 accumulators + 2 inputs + 1 broadcast <= 16 registers */

/* the zero-padded input's extents: Hp rows (one spare, read by a block of two kernel rows when k
 * is odd), Wp columns (8 values from s (Wo - 1), the last position's window start), and the
 * forward's phases of Wq columns each */
static inline void dp__cdir_extents(const dp__conv_geom *g, int *Hp, int *Wp, int *Wq) {
    *Hp = g->s * (g->Ho - 1) + g->k + 1;
    *Wp = g->s * (g->Wo - 1) + 8;
    *Wq = g->Wo + (g->k - 1) / g->s + 1;
}
static inline size_t dp__cdir_scratch(const dp__conv_geom *g) {
    int Hp, Wp, Wq;
    dp__cdir_extents(g, &Hp, &Wp, &Wq);
    const size_t D = (size_t)g->Cin * g->k * g->k, T = (size_t)g->Ho * g->Wo;
    const size_t f = (size_t)g->Cin * g->s * Hp * Wq + D * g->Cout + D; /* phases, wt, off */
    const size_t b = (size_t)g->Cin * Hp * Wp + T;                      /* padded input, offsets */
    return f > b ? f : b;
}
/* the geometries of the direct path: one group, no dilation, kernel at most 8 wide, stride 1 or
 * 2, output rows of 8 to 16 positions, at most 4 input channels, and its scratch within the
 * thread's share tw of the work buffer */
static inline int dp__conv_direct_ok(const dp__conv_geom *g, size_t tw) {
    return g->G == 1 && g->d == 1 && g->k >= 1 && g->k <= 8 && (g->s == 1 || g->s == 2) && g->Wo >= 8 && g->Wo <= 16 &&
           g->Ho >= 1 && g->Cin >= 1 && g->Cin <= 4 && g->Cout >= 1 && dp__cdir_scratch(g) <= tw;
}

/* the last block of n < 6 channels, with the block function BLOCK(NC) for a constant NC (so that
 * its accumulators stay in registers) */
#define DP__CDIR_TAIL(n, BLOCK)                                                                                        \
    switch (n) {                                                                                                       \
    case 5:                                                                                                            \
        BLOCK(5);                                                                                                      \
        break;                                                                                                         \
    case 4:                                                                                                            \
        BLOCK(4);                                                                                                      \
        break;                                                                                                         \
    case 3:                                                                                                            \
        BLOCK(3);                                                                                                      \
        break;                                                                                                         \
    case 2:                                                                                                            \
        BLOCK(2);                                                                                                      \
        break;                                                                                                         \
    case 1:                                                                                                            \
        BLOCK(1);                                                                                                      \
        break;                                                                                                         \
    default:                                                                                                           \
        break;                                                                                                         \
    }

/* the first and one past the last j with 0 <= s j + p - pl < W: the phase's columns that hold input */
static inline void dp__cdir_cols(const dp__conv_geom *g, int p, int n, int *lo, int *hi) {
    const int s = g->s;
    int a = (g->pl - p + s - 1) / s, e = (g->W + g->pl - p + s - 1) / s; /* s j >= pl - p, s j < W + pl - p */
    if (g->pl - p < 0) a = 0;
    *lo = a < n ? a : n;
    *hi = e < *lo ? *lo : e < n ? e : n;
}
/* ph[c][p][Hp][Wq]: padded column s j + p of the sample's input x[c][H][W] (at row pt, column pl;
 * zero outside it). With s = 1 the one phase is the padded input, [c][Hp][Wq]. */
static void dp__cdir_phases(float *restrict ph, const float *restrict x, const dp__conv_geom *g, int Hp, int Wq) {
    const int s = g->s;
    for (int p = 0; p < s; p++) {
        int lo, hi;
        dp__cdir_cols(g, p, Wq, &lo, &hi);
        for (int c = 0; c < g->Cin; c++)
            for (int r = 0; r < Hp; r++) {
                float *o = ph + (((size_t)c * s + p) * Hp + r) * Wq;
                const int iy = r - g->pt;
                if (iy < 0 || iy >= g->H) {
                    memset(o, 0, sizeof(float) * (size_t)Wq);
                    continue;
                }
                const float *src = x + ((size_t)c * g->H + iy) * g->W + p - g->pl;
                for (int j = 0; j < lo; j++) o[j] = 0.0f;
                for (int j = lo; j < hi; j++) o[j] = src[s * j];
                for (int j = hi; j < Wq; j++) o[j] = 0.0f;
            }
    }
}
/* pad[c][Hp][Wp] = the sample's input, padded (the one phase of a stride-1 layout of Wp columns) */
static void dp__cdir_pad(float *restrict pad, const float *restrict x, const dp__conv_geom *g, int Hp, int Wp) {
    dp__conv_geom g1 = *g;
    g1.s = 1;
    dp__cdir_phases(pad, x, &g1, Hp, Wp);
}

/* out[c0 .. c0 + NC, row oy] of one sample (NC a constant after inlining: the accumulators
 * stay in registers): one loop over the D taps, tap d reading phase row + off[d] and the
 * weights wt[d][c] (the weight transposed, channels contiguous) */
static inline __attribute__((always_inline)) void dp__cdir_fwd_block(float *restrict out, const float *restrict row,
                                                                     const int *restrict off, const float *restrict wt,
                                                                     const float *restrict b, const dp__conv_geom *g,
                                                                     int oy, int c0, const int NC) {
    const int D = g->Cin * g->k * g->k, T = g->Ho * g->Wo, o1 = g->Wo - 8, Cout = g->Cout;
    __m256 a0[DP__CDIR_NC], a1[DP__CDIR_NC];
    for (int j = 0; j < NC; j++) a0[j] = a1[j] = _mm256_setzero_ps();
    const float *wp = wt + c0;
    for (int d = 0; d < D; d++, wp += Cout) {
        const float *r = row + off[d];
        const __m256 v0 = _mm256_loadu_ps(r), v1 = _mm256_loadu_ps(r + o1);
        for (int j = 0; j < NC; j++) {
            const __m256 wv = _mm256_broadcast_ss(wp + j);
            a0[j] = _mm256_fmadd_ps(wv, v0, a0[j]);
            a1[j] = _mm256_fmadd_ps(wv, v1, a1[j]);
        }
    }
    for (int j = 0; j < NC; j++) {
        const __m256 bv = _mm256_set1_ps(b ? b[c0 + j] : 0.0f);
        float *o = out + (size_t)(c0 + j) * T + (size_t)oy * g->Wo;
        _mm256_storeu_ps(o + o1, _mm256_add_ps(a1[j], bv)); /* the overlap gets the same values */
        _mm256_storeu_ps(o, _mm256_add_ps(a0[j], bv));
    }
}
/* out[i][Cout, T] = the convolution of samples x + i isz (i < n) plus the bias, with g->tanh
 * tanh applied to each sample's outputs while they are in cache */
static void dp__conv_direct_fwd(float *restrict out, float *restrict scr, const float *restrict x, size_t isz, int n,
                                const float *restrict w, const float *restrict b, const dp__conv_geom *g) {
    int Hp, Wp, Wq;
    dp__cdir_extents(g, &Hp, &Wp, &Wq);
    const int k = g->k, s = g->s, D = g->Cin * k * k, Cout = g->Cout, T = g->Ho * g->Wo;
    float *ph = scr, *wt = ph + (size_t)g->Cin * s * Hp * Wq;
    int *off = (int *)(wt + (size_t)D * Cout);
    for (int c = 0; c < Cout; c++)
        for (int d = 0; d < D; d++) wt[(size_t)d * Cout + c] = w[(size_t)c * D + d];
    for (int ci = 0, d = 0; ci < g->Cin; ci++) /* tap (ci, ky, kx): phase kx % s, column kx / s */
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++, d++) off[d] = ((ci * s + kx % s) * Hp + ky) * Wq + kx / s;
    for (int i = 0; i < n; i++) {
        float *oi = out + (size_t)i * Cout * T;
        dp__cdir_phases(ph, x + (size_t)i * isz, g, Hp, Wq);
        for (int oy = 0; oy < g->Ho; oy++) {
            const float *row = ph + (size_t)s * oy * Wq;
            int c0 = 0;
            for (; c0 + DP__CDIR_NC <= Cout; c0 += DP__CDIR_NC) dp__cdir_fwd_block(oi, row, off, wt, b, g, oy, c0, 6);
#define DP__CDIR_FWD(NC) dp__cdir_fwd_block(oi, row, off, wt, b, g, oy, c0, NC)
            DP__CDIR_TAIL(Cout - c0, DP__CDIR_FWD)
#undef DP__CDIR_FWD
        }
        if (g->tanh) {
            _Pragma("omp simd") for (size_t j = 0; j < (size_t)Cout * T; j++) oi[j] = dp__tanhf(oi[j]);
        }
    }
}

/* dw[c0 .. c0 + NC][ci][ky0, ky0 + 1][0 .. k) (=, or += with add) of one sample from its output
 * gradient gout[Cout, T] and padded input rows row (= ky0's row of channel ci): one loop over the
 * T positions, position t reading row + poff[t] and the next row */
static inline __attribute__((always_inline)) void
dp__cdir_wgrad_block(float *restrict dw, int add, const float *restrict gout, const float *restrict row,
                     const int *restrict poff, const dp__conv_geom *g, int Wp, int ci, int ky0, int c0, const int NC) {
    const int k = g->k, D = g->Cin * k * k, T = g->Ho * g->Wo, two = ky0 + 1 < k;
    __m256 a0[DP__CDIR_NC], a1[DP__CDIR_NC];
    for (int j = 0; j < NC; j++) a0[j] = a1[j] = _mm256_setzero_ps();
    const float *gt = gout + (size_t)c0 * T;
    for (int t = 0; t < T; t++) {
        const float *r = row + poff[t];
        const __m256 v0 = _mm256_loadu_ps(r), v1 = _mm256_loadu_ps(r + Wp);
        for (int j = 0; j < NC; j++) {
            const __m256 gv = _mm256_broadcast_ss(gt + (size_t)j * T + t);
            a0[j] = _mm256_fmadd_ps(gv, v0, a0[j]);
            a1[j] = _mm256_fmadd_ps(gv, v1, a1[j]);
        }
    }
    const __m256i m = dp__mask8(k); /* the kernel row's k taps */
    for (int j = 0; j < NC; j++) {
        float *d0 = dw + (size_t)(c0 + j) * D + (size_t)(ci * k + ky0) * k;
        __m256 x0 = a0[j], x1 = a1[j];
        if (add) {
            x0 = _mm256_add_ps(x0, _mm256_maskload_ps(d0, m));
            if (two) x1 = _mm256_add_ps(x1, _mm256_maskload_ps(d0 + k, m));
        }
        _mm256_maskstore_ps(d0, m, x0);
        if (two) _mm256_maskstore_ps(d0 + k, m, x1);
    }
}
/* dw[Cout, D] = (add: +=) gout[Cout, T] times the sample's unfolded input, taken from x directly */
static void dp__conv_direct_wgrad(float *restrict dw, int add, float *restrict scr, const float *restrict gout,
                                  const float *restrict x, const dp__conv_geom *g) {
    int Hp, Wp, Wq;
    dp__cdir_extents(g, &Hp, &Wp, &Wq);
    const int s = g->s, Cout = g->Cout;
    int *poff = (int *)(scr + (size_t)g->Cin * Hp * Wp);
    for (int oy = 0, t = 0; oy < g->Ho; oy++)
        for (int ox = 0; ox < g->Wo; ox++, t++) poff[t] = s * oy * Wp + s * ox; /* the window's first value */
    dp__cdir_pad(scr, x, g, Hp, Wp);
    for (int ci = 0; ci < g->Cin; ci++)
        for (int ky0 = 0; ky0 < g->k; ky0 += 2) {
            const float *row = scr + ((size_t)ci * Hp + ky0) * Wp;
            int c0 = 0;
            for (; c0 + DP__CDIR_NC <= Cout; c0 += DP__CDIR_NC)
                dp__cdir_wgrad_block(dw, add, gout, row, poff, g, Wp, ci, ky0, c0, 6);
#define DP__CDIR_WGRAD(NC) dp__cdir_wgrad_block(dw, add, gout, row, poff, g, Wp, ci, ky0, c0, NC)
            DP__CDIR_TAIL(Cout - c0, DP__CDIR_WGRAD)
#undef DP__CDIR_WGRAD
        }
}
#undef DP__CDIR_TAIL
#define CONV_DIRECT_OK    dp__conv_direct_ok
#define CONV_DIRECT_FWD   dp__conv_direct_fwd
#define CONV_DIRECT_WGRAD dp__conv_direct_wgrad
#endif
