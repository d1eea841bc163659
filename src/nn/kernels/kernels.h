/* kernels.h (internal): declarations of the layer kernels in kernels_impl.h, for float
 * (suffix _f32, used by the engine) and double (suffix _f64, used by finite-difference tests). */
#ifndef DP_KERNELS_H
#define DP_KERNELS_H
#include <stddef.h>
#include <stdint.h>

int dp__thread_num(void);
int dp__max_threads(void);
int dp__num_threads(void);
/* A convolution's geometry: Cin x H x W input, Cout output channels, k x k kernel with taps d
 * apart (dilation), stride s, padding pt above and pl to the left, G groups, Ho x Wo output;
 * grams: whether its norms may be ghost norms (their two T x T Grams need room in the thread
 * scratch: about 2 T^2 values, a gigabyte a thread for a 3x3 convolution on 128 x 128 images, which
 * the engine gives only to layers whose norm method can be ghost). */
typedef struct {
    int Cin, H, W, Cout, k, s, pt, pl, d, G, Ho, Wo, grams;
    int tanh; /* the forward applies tanh to its output (conv2d fused with the tanh after it) */
    /* NULL, or the Grams of the unfolded input, [B, G, T, T] of REAL (T <= DP__GRAM_FWD_T; the
     * upper triangle, t <= u, is what is read): conv_fwd writes them while each sample's
     * unfolding is in cache, conv_ghost_sq then reads them instead of unfolding the input again
     * (the engine: dp_model_forward in a private step, engine.c) */
    void *gram_buf;
} dp__conv_geom;
/* whether conv2d's float kernels run the direct path for g (AVX2 builds; kernels_f32.c) */
int dp__k_conv_direct_f32(const dp__conv_geom *g);
/* the largest T whose Grams the forward makes (the ghost norm's small-Gram path) */
#define DP__GRAM_FWD_T 32
/* Samples a thread unfolds at a time (kernels_impl.h, Conv2d): about 32k values (128 KB) of
 * unfolding and GEMM operand, so that they stay in the core's cache, at most 16, and at least
 * 64 output positions (below). (Chosen by
 * timing the default CNN's layers on one core with 8k to 128k: 16k and 32k were the fastest;
 * larger chunks for the weight gradient alone, whose GEMM's inner dimension is the chunk's
 * positions, were slower too.) */
static inline int dp__conv_chunk(const dp__conv_geom *g) {
    const size_t T = (size_t)g->Ho * g->Wo, per = T * ((size_t)g->Cin * g->k * g->k + (size_t)g->Cout);
    size_t n = per ? 32768 / per : 16;
    if (n > 16) n = 16;
    /* but at least 64 output positions: each chunk's GEMMs read the whole weight, so a layer
     * with few positions and a large weight (T = 1: a fully connected layer written as a
     * convolution) would read it once per sample (up to 64 samples a chunk) */
    const size_t nmin = T ? (64 + T - 1) / T : 1;
    if (n < nmin) n = nmin;
    return n < 1 ? 1 : (int)n;
}
/* The ghost norm's scratch after A A^T (T x T) in a thread's share: G G^T (T x T), or for T <=
 * DP__GRAM_FWD_T the float contraction's padded triangle, T rows of T rounded up to 8 */
static inline size_t dp__ghost_scratch(size_t T) { return T <= DP__GRAM_FWD_T ? T * ((T + 7) & ~(size_t)7) : T * T; }
/* one thread's scratch (in REALs) in the convolution kernels: a chunk's unfolding and GEMM
 * operand, then the partial weight gradient or (g->grams) a ghost norm's Gram A A^T and its
 * scratch (dp__ghost_scratch) */
static inline size_t dp__conv_thread_work(const dp__conv_geom *g) {
    const size_t T = (size_t)g->Ho * g->Wo, D = (size_t)g->Cin * g->k * g->k, Dg = D / (size_t)g->G;
    size_t extra = g->grams ? T * T + dp__ghost_scratch(T) : 0;
    if ((size_t)g->Cout * (Dg + 1) > extra) extra = (size_t)g->Cout * (Dg + 1);
    return (size_t)dp__conv_chunk(g) * T * (D + (size_t)g->Cout) + extra;
}
/* the sizes every convolution kernel derives from the geometry: T output positions, D = Cin k k
 * the unfolded patch, Dg and Cg one group's share of it and of the output channels, isz the
 * input values per sample, tw a thread's scratch (dp__conv_thread_work), nc the chunk */
typedef struct {
    int T, D, Dg, Cg, nc;
    size_t isz, tw;
} dp__conv_dims;
static inline dp__conv_dims dp__conv_sizes(const dp__conv_geom *g) {
    dp__conv_dims z;
    z.T = g->Ho * g->Wo;
    z.D = g->Cin * g->k * g->k;
    z.Dg = z.D / g->G;
    z.Cg = g->Cout / g->G;
    z.nc = dp__conv_chunk(g);
    z.isz = (size_t)g->Cin * g->H * g->W;
    z.tw = dp__conv_thread_work(g);
    return z;
}
/* the scratch of the convolution kernels for nt threads, whatever the batch */
static inline size_t dp__conv_work(const dp__conv_geom *g, int nt) { return (size_t)nt * dp__conv_thread_work(g); }

/* A pooling window's geometry: K x K taps d apart (dilation, max pooling only), stride s,
 * zero padding above, left, below and right; count_pad: average pooling divides by the taps
 * inside the padded input (PyTorch's count_include_pad), else by the real ones. */
typedef struct {
    int k, s, pt, pl, pb, pr, d, count_pad;
} dp__pool_geom;
/* Max pooling's separable path (kernels_impl.h): 2 x 2 windows at stride 1, no padding or
 * dilation, on planes of at most DP__POOL_FLAT values with short rows (the default CNN's). Its
 * backward finds the winners again from the input (maxpool_bwd_recompute) instead of reading
 * saved indices: the layer keeps no indices (an int32 per output) and reads its input. */
#ifndef DP__POOL_FLAT
#define DP__POOL_FLAT 1024 /* the largest plane (H x W) max pooling takes as one flat run */
#endif
static inline int dp__maxpool_recomputes(const dp__pool_geom *g, int H, int W, int Ho, int Wo) {
    return g->k == 2 && g->s == 1 && g->pt == 0 && g->pl == 0 && g->d <= 1 && Ho + 1 <= H && Wo + 1 <= W &&
           H * W <= DP__POOL_FLAT && Wo < 32;
}
/* pooling (layers/pooling.c): windows along an axis of `in` values padded a before and b after,
 * for a kernel spanning ext, stride s, floor or ceil mode */
int dp__pool_out(long in, long a, long b, long ext, long s, int ceil_mode);

/* Sums in double of n values (dp__sum) and of n products (dp__dot), in eight interleaved partial
 * sums added in a fixed order at the end: the same result for any thread count, and gcc
 * vectorises them. One running sum waits on each add's latency, which bound the default CNN's
 * per-sample bias sums (16 x 169 values) and gradient norms (1,040). */
#define DP__SUM_DEFS(REAL, S)                                                                  \
    static inline double dp__sum##S(const REAL *x, size_t n) {                                 \
        double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                \
        size_t j = 0;                                                                          \
        for (; j + 8 <= n; j += 8)                                                             \
            for (int l = 0; l < 8; l++) a[l] += (double)x[j + l];                              \
        double s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));          \
        for (; j < n; j++) s += (double)x[j];                                                  \
        return s;                                                                              \
    }                                                                                          \
    static inline double dp__dot##S(const REAL *x, const REAL *y, size_t n) {                  \
        double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                \
        size_t j = 0;                                                                          \
        for (; j + 8 <= n; j += 8)                                                             \
            for (int l = 0; l < 8; l++) a[l] += (double)x[j + l] * (double)y[j + l];           \
        double s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));          \
        for (; j < n; j++) s += (double)x[j] * (double)y[j];                                   \
        return s;                                                                              \
    }
DP__SUM_DEFS(float, _f32)
DP__SUM_DEFS(double, _f64)

#define DP__KERNEL_DECLS(REAL, S)                                                              \
    void dp__k_linear_fwd##S(REAL *out, const REAL *in, const REAL *w, const REAL *b, int B, int d, int p); \
    void dp__k_linear_bwd_input##S(REAL *din, const REAL *dout, const REAL *w, int B, int d, int p);    \
    void dp__k_linear_bwd_param##S(REAL *dw, REAL *db, const REAL *dout, const REAL *in, int B, int d, int p); \
    void dp__k_linear_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int d, \
                                 int p, int has_bias);                                          \
    void dp__k_linear_ghost_sq##S(double *sq, const REAL *dout, const REAL *in, int B, int d, int p,      \
                                  int has_bias);                                                \
    void dp__k_im2col##S(REAL *col, const REAL *in, const dp__conv_geom *g);                   \
    void dp__k_col2im##S(REAL *din, const REAL *dcol, const dp__conv_geom *g);                 \
    void dp__k_conv_fwd##S(REAL *out, REAL *work, const REAL *in, const REAL *w, const REAL *b, int B,    \
                           const dp__conv_geom *g);                                             \
    void dp__k_conv_bwd_input##S(REAL *din, REAL *work, const REAL *dout, const REAL *w, int B,       \
                                 const dp__conv_geom *g);                                       \
    void dp__k_conv_bwd_param##S(REAL *dw, REAL *db, REAL *work, const REAL *dout, const REAL *in, int B, \
                                 const dp__conv_geom *g);                                       \
    void dp__k_conv_ps_grad##S(REAL *ps, size_t stride, REAL *work, const REAL *dout, const REAL *in, int B, \
                               const dp__conv_geom *g, int has_bias);                           \
    void dp__k_conv_ghost_sq##S(double *sq, REAL *work, const REAL *dout, const REAL *in, int B,        \
                                const dp__conv_geom *g, int has_bias);                          \
    void dp__k_relu_fwd##S(REAL *out, const REAL *in, size_t n);                                \
    void dp__k_sigmoid_fwd##S(REAL *out, const REAL *in, size_t n);                             \
    void dp__k_sigmoid_bwd##S(REAL *din, const REAL *dout, const REAL *out, size_t n);          \
    void dp__k_gap_fwd##S(REAL *out, const REAL *in, int B, int C, int HW);                     \
    void dp__k_gap_bwd##S(REAL *din, const REAL *dout, int B, int C, int HW);                   \
    void dp__k_relu_bwd##S(REAL *din, const REAL *dout, const REAL *out, size_t n);             \
    void dp__k_tanh_fwd##S(REAL *out, const REAL *in, size_t n);                                \
    void dp__k_tanh_bwd##S(REAL *din, const REAL *dout, const REAL *out, size_t n);             \
    void dp__k_dropout_fwd##S(REAL *out, const REAL *in, const unsigned char *mask, REAL scale, size_t n); \
    void dp__k_dropout_bwd##S(REAL *din, const REAL *dout, const unsigned char *mask, REAL scale, size_t n); \
    void dp__k_maxpool_fwd##S(REAL *out, int32_t *arg, const REAL *in, int B, int C, int H, int W,         \
                              const dp__pool_geom *g, int Ho, int Wo);                          \
    void dp__k_maxpool_bwd_recompute##S(REAL *din, const REAL *dout, const REAL *in, int B, int C, int H, int W, int Ho, \
                                        int Wo, int dtanh);                                     \
    void dp__k_maxpool_bwd##S(REAL *din, const REAL *dout, const int32_t *arg, int B, int C, int H, int W, \
                              int Ho, int Wo);                                                  \
    void dp__k_avgpool_fwd##S(REAL *out, const REAL *in, int B, int C, int H, int W,                      \
                              const dp__pool_geom *g, int Ho, int Wo);                          \
    void dp__k_avgpool_bwd##S(REAL *din, const REAL *dout, int B, int C, int H, int W,                    \
                              const dp__pool_geom *g, int Ho, int Wo);                          \
    int dp__k_xent##S(REAL *loss, REAL *dz, const REAL *z, const int32_t *y, int B, int K);     \
    /* nn/layers/affine.c */                                                                   \
    void dp__k_scale_fwd##S(REAL *out, const REAL *in, const REAL *gamma, int R, int C, int inner); \
    void dp__k_scale_bwd_param##S(REAL *dgamma, const REAL *dout, const REAL *in, int R, int C, int inner); \
    void dp__k_scale_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int rows, int C, \
                                int inner);                                                     \
    void dp__k_bias_fwd##S(REAL *out, const REAL *in, const REAL *beta, int R, int C, int inner); \
    void dp__k_bias_grad##S(REAL *dbeta, REAL *ps, size_t stride, const REAL *dout, int B, int rows, int C, \
                            int inner);                                                         \
    int dp__k_mse##S(REAL *loss, REAL *dz, const REAL *z, const REAL *t, int B, int K);

DP__KERNEL_DECLS(float, _f32)
DP__KERNEL_DECLS(double, _f64)
#endif
