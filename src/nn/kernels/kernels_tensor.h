/* kernels_tensor.h (internal): kernels of the general tensor layers of imported models
 * (nn/layers/tensor.c): element-wise functions, binary operations with broadcasting, softmax,
 * axis permutations, slices, batched matrix products of two activations and reductions.
 * Written once in kernels_tensor_impl.h and compiled for float (_f32, the engine) and double
 * (_f64, finite-difference tests), like kernels_seq.h.
 *
 * Layout: a tensor of B samples is [B, d_1, ..., d_k], row-major; dims arguments that include
 * the batch say so. Strides are in elements; a stride of 0 broadcasts that axis. Input
 * gradients are WRITTEN (=) unless the argument says it accumulates. OpenMP over samples;
 * a kernel that reduces into a broadcast input runs its reduction in a fixed order (the same
 * result for any thread count). */
#ifndef DP_KERNELS_TENSOR_H
#define DP_KERNELS_TENSOR_H
#include <stddef.h>

enum { DP__TMAXD = 8 }; /* most axes of a tensor, the batch included */

/* element-wise functions y = f(x) (alpha: LeakyRelu's slope) */
#define DP__UNARY_LIST(X)                                                                                  \
    X(DP__UN_ERF, "Erf") X(DP__UN_SQRT, "Sqrt") X(DP__UN_EXP, "Exp") X(DP__UN_NEG, "Neg")                \
        X(DP__UN_LEAKY, "LeakyRelu") X(DP__UN_RECIP, "Reciprocal") X(DP__UN_LOG, "Log") X(DP__UN_ABS, "Abs")
enum {
#define DP__E(n, s) n,
    DP__UNARY_LIST(DP__E)
#undef DP__E
        DP__UN_COUNT
};
/* binary operations y = a op b */
#define DP__BINARY_LIST(X) X(DP__BIN_ADD, "Add") X(DP__BIN_SUB, "Sub") X(DP__BIN_MUL, "Mul") X(DP__BIN_DIV, "Div") X(DP__BIN_POW, "Pow")
enum {
#define DP__E(n, s) n,
    DP__BINARY_LIST(DP__E)
#undef DP__E
        DP__BIN_COUNT
};

#define DP__KERNEL_TENSOR_DECLS(REAL, S)                                                                      \
    void dp__k_unary_fwd##S(REAL *out, const REAL *in, size_t n, int op, REAL alpha);                        \
    /* din = g f'(in) */                                                                                    \
    void dp__k_unary_bwd##S(REAL *din, const REAL *g, const REAL *in, size_t n, int op, REAL alpha);         \
    /* out = a op b over dims[0..nd) (the batch included), a and b read with strides sa, sb (0:          \
     * broadcast), out contiguous */                                                                        \
    void dp__k_binary_fwd##S(REAL *out, const REAL *a, const REAL *b, int nd, const int *dims, const int *sa,  \
                             const int *sb, int op);                                                        \
    /* da += g d(a op b)/da, db += g d(a op b)/db (NULL: skipped), read and written with the strides of   \
     * a and b; out is the forward's output (Pow's db) */                                                   \
    void dp__k_binary_bwd##S(REAL *da, REAL *db, const REAL *g, const REAL *a, const REAL *b, const REAL *out, \
                             int nd, const int *dims, const int *sa, const int *sb, int op);               \
    /* softmax (log-softmax when lg) over rows of n values */                                               \
    void dp__k_softmax_fwd##S(REAL *out, const REAL *in, size_t rows, int n, int lg);                      \
    void dp__k_softmax_bwd##S(REAL *din, const REAL *g, const REAL *out, size_t rows, int n, int lg);      \
    /* B samples of an nd-axis tensor of dims (not counting the batch): output axis j is input axis     \
     * perm[j]. scatter = 0: dst (permuted) = src; 1: dst (input layout) = src (permuted layout),       \
     * the backward */                                                                                      \
    void dp__k_permute##S(REAL *dst, const REAL *src, int B, int nd, const int *dims, const int *perm, int scatter); \
    /* per sample, [outer, n, inner] -> [outer, count, inner] at positions start + i step of the middle \
     * axis. mode 0: dst (small) = slice of src (big); 1: dst (big) = zero, then the slice = src; 2:     \
     * the slice of dst (big) = src, the rest untouched (Concat) */                                       \
    void dp__k_slice##S(REAL *dst, const REAL *src, int B, size_t outer, int n, size_t inner, int start, int count, \
                        int step, int mode);                                                                \
    /* per sample and g < G: C[g] = A[g] Bm[g], A [M, K], Bm [K, N]; an operand with ga (gb) = 0 is one     \
     * matrix for every g */                                                                                \
    void dp__k_bmm_fwd##S(REAL *C, const REAL *A, const REAL *Bm, int B, int G, int M, int K, int N, int ga, int gb); \
    /* dA (=, or += when acc_a) = dC Bm^T, dB = A^T dC, summed over g for a broadcast operand; NULL:      \
     * skipped */                                                                                           \
    void dp__k_bmm_bwd##S(REAL *dA, REAL *dB, int acc_a, int acc_b, const REAL *dC, const REAL *A, const REAL *Bm, \
                          int B, int G, int M, int K, int N, int ga, int gb);                               \
    /* per sample, out = the sum (mean when mean) of in [dims] over the axes with bit j of axes set */     \
    void dp__k_reduce_fwd##S(REAL *out, const REAL *in, int B, int nd, const int *dims, unsigned axes, int mean); \
    void dp__k_reduce_bwd##S(REAL *din, const REAL *g, int B, int nd, const int *dims, unsigned axes, int mean);

DP__KERNEL_TENSOR_DECLS(float, _f32)
DP__KERNEL_TENSOR_DECLS(double, _f64)
#endif
