/* kernels.h (internal): declarations of the layer kernels in kernels_impl.h, for float
 * (suffix _f32, used by the engine) and double (suffix _f64, used by finite-difference tests). */
#ifndef DP_KERNELS_H
#define DP_KERNELS_H
#include <stddef.h>
#include <stdint.h>

int dp__thread_num(void);
int dp__max_threads(void);
int dp__num_threads(void);
/* scratch (in REALs) that conv_bwd_param needs for batch B */
#define DP_CONV_BWD_PARAM_WORK(B, Cout, T, D, nt) \
    ((size_t)(Cout) * (size_t)(B) * (size_t)(T) + (size_t)(nt) * (size_t)(Cout) * ((size_t)(D) + 1))

/* A pooling window's geometry: K x K taps d apart (dilation, max pooling only), stride s,
 * zero padding above, left, below and right; count_pad: average pooling divides by the taps
 * inside the padded input (PyTorch's count_include_pad), else by the real ones. */
typedef struct {
    int k, s, pt, pl, pb, pr, d, count_pad;
} dp__pool_geom;
/* pooling (layers/pooling.c): windows along an axis of `in` values padded a before and b after,
 * for a kernel spanning ext, stride s, floor or ceil mode */
int dp__pool_out(long in, long a, long b, long ext, long s, int ceil_mode);

#define DP__KERNEL_DECLS(REAL, S)                                                              \
    void dp__k_linear_fwd##S(REAL *out, const REAL *in, const REAL *w, const REAL *b, int B, int d, int p); \
    void dp__k_linear_bwd_input##S(REAL *din, const REAL *dout, const REAL *w, int B, int d, int p);    \
    void dp__k_linear_bwd_param##S(REAL *dw, REAL *db, const REAL *dout, const REAL *in, int B, int d, int p); \
    void dp__k_linear_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int d, \
                                 int p, int has_bias);                                          \
    void dp__k_linear_ghost_sq##S(double *sq, const REAL *dout, const REAL *in, int B, int d, int p,      \
                                  int has_bias);                                                \
    void dp__k_im2col##S(REAL *col, const REAL *in, int Cin, int H, int W, int k, int s, int pt, int pl, int d, \
                         int Ho, int Wo);                                                       \
    void dp__k_col2im##S(REAL *din, const REAL *dcol, int Cin, int H, int W, int k, int s, int pt, int pl, int d, \
                         int Ho, int Wo);                                                       \
    void dp__k_conv_fwd##S(REAL *out, REAL *col, REAL *work, const REAL *in, const REAL *w, const REAL *b, int B,      \
                           int Cin, int H, int W, int Cout, int k, int s, int pt, int pl, int d, int G, int Ho,   \
                           int Wo);                                                               \
    void dp__k_conv_bwd_input##S(REAL *din, REAL *work, const REAL *dout, const REAL *w, int B, int Cin,   \
                                 int H, int W, int Cout, int k, int s, int pt, int pl, int d, int G, int Ho,  \
                                 int Wo);                                                         \
    void dp__k_conv_bwd_param##S(REAL *dw, REAL *db, REAL *work, const REAL *dout, const REAL *col, int B, \
                                 int Cout, int T, int D, int G);                                \
    void dp__k_conv_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *col, int B, int Cout, \
                               int T, int D, int G, int has_bias);                              \
    void dp__k_conv_ghost_sq##S(double *sq, REAL *work, const REAL *dout, const REAL *col, int B, int Cout, \
                                int T, int D, int G, int has_bias);                             \
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
