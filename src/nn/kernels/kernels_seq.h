/* kernels_seq.h (internal): kernels for sequence models and normalisation layers, written
 * once in kernels_seq_impl.h and compiled for float (_f32, the engine) and double (_f64,
 * finite-difference tests), exactly like kernels.h / kernels_impl.h.
 *
 * Shape legend: B batch, T tokens per sample, d input features, p output features,
 * F features of a normalised row, R = B*T rows, V vocabulary, h heads (d % h == 0, dh = d/h),
 * C channels and HW = H*W positions of an image, G groups (C % G == 0).
 * Layout: row-major, sequences [B, T, d]; images [B, C, HW]. Token ids are int32; an id < 0 is
 * padding (embedding output row zero, no gradient). kvalid [B, T] (1 = a real token, 0 =
 * padding) masks attention keys and mean pooling; NULL means every position is valid.
 * Conventions as kernels_impl.h: *_bwd_param and *_ghost_sq ACCUMULATE (+=) into parameter
 * gradients and per-sample squared norms sq[B] (double); input gradients are WRITTEN (=);
 * *_ps_grad WRITE every coordinate of each sample's row ps[i*stride + 0 .. n) (weight then
 * bias). OpenMP over the batch (or rows) axis, no atomics; cblas inside parallel loops runs
 * single-threaded. `work` arguments are scratch of the size stated, per thread where said
 * (thread t uses work + t * per_thread, so allocate dp__max_threads() * per_thread).
 * Norm layers accept gamma / beta == NULL (1 / 0) in forward and backward; layernorm and
 * groupnorm bwd_param accept a NULL dgamma or dbeta (that sum is skipped). Batch reductions into parameter gradients run
 * parallel over features: the same result for any thread count. */
#ifndef DP_KERNELS_SEQ_H
#define DP_KERNELS_SEQ_H
#include <stddef.h>
#include <stdint.h>

#define DP__KERNEL_SEQ_DECLS(REAL, S)                                                           \
    /* Linear applied to every token: forward/backward are the plain linear kernels over R rows. \
     * ps_i = sum_t g_it (x) a_it [p*d], then bias sum_t g_it [p]. */                            \
    void dp__k_seqlin_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int T, int d, \
                                 int p, int has_bias);                                          \
    /* sq_i += <A_i A_i^T, G_i G_i^T> (+ ||sum_t g_it||^2 if has_bias); work: per thread 2*T*T */ \
    void dp__k_seqlin_ghost_sq##S(double *sq, REAL *work, const REAL *dout, const REAL *in, int B, int T, int d, \
                                  int p, int has_bias);                                         \
    /* Embedding: out[B,T,d] = table[ids] (zero row for ids < 0). */                             \
    void dp__k_embed_fwd##S(REAL *out, const int32_t *ids, const REAL *table, int B, int T, int d); \
    void dp__k_embed_bwd_param##S(REAL *dtable, const REAL *dout, const int32_t *ids, int B, int T, int d); \
    /* ps_i[V*d]: zero, then row ids[i,t] += g_it */                                             \
    void dp__k_embed_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const int32_t *ids, int B, int T, \
                                int d, int V);                                                  \
    /* sq_i += sum over pairs (t,t') with ids equal and >= 0 of g_it . g_it'; work: per thread d */ \
    void dp__k_embed_ghost_sq##S(double *sq, REAL *work, const REAL *dout, const int32_t *ids, int B, int T, \
                                 int d);                                                        \
    /* Learned positional embedding added to the input: out = in + P[0..T) (P [T, d]). */        \
    void dp__k_posemb_fwd##S(REAL *out, const REAL *in, const REAL *P, int B, int T, int d);     \
    void dp__k_posemb_bwd_param##S(REAL *dP, const REAL *dout, int B, int T, int d);            \
    /* LayerNorm over the last F features of each of R rows: y = xhat * gamma + beta,           \
     * xhat = (x - mean) * rstd, rstd = 1/sqrt(var_biased + eps). xhat [R,F] and rstd [R] are   \
     * saved for backward. */                                                                   \
    void dp__k_layernorm_fwd##S(REAL *out, REAL *xhat, REAL *rstd, const REAL *in, const REAL *gamma, \
                                const REAL *beta, int R, int F, REAL eps);                      \
    void dp__k_layernorm_bwd_input##S(REAL *din, const REAL *dout, const REAL *xhat, const REAL *rstd, \
                                      const REAL *gamma, int R, int F);                         \
    void dp__k_layernorm_bwd_param##S(REAL *dgamma, REAL *dbeta, const REAL *dout, const REAL *xhat, int R, \
                                      int F);                                                   \
    /* ps_i = [sum_t g_it * xhat_it (F), sum_t g_it (F)] over the T rows of sample i */          \
    void dp__k_layernorm_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *xhat, int B, int T, \
                                    int F);                                                     \
    /* RMSNorm: y = x * rstd * gamma, rstd = 1/sqrt(mean(x^2) + eps); xhat = x * rstd saved. */  \
    void dp__k_rmsnorm_fwd##S(REAL *out, REAL *xhat, REAL *rstd, const REAL *in, const REAL *gamma, int R, \
                              int F, REAL eps);                                                 \
    void dp__k_rmsnorm_bwd_input##S(REAL *din, const REAL *dout, const REAL *xhat, const REAL *rstd, \
                                    const REAL *gamma, int R, int F);                           \
    void dp__k_rmsnorm_bwd_param##S(REAL *dgamma, const REAL *dout, const REAL *xhat, int R, int F); \
    /* ps_i = sum_t g_it * xhat_it (F) */                                                       \
    void dp__k_rmsnorm_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *xhat, int B, int T, \
                                  int F);                                                       \
    /* GroupNorm on images [B, C, HW], G groups of C/G channels; per-channel affine gamma, beta [C]. \
     * xhat [B,C,HW], rstd [B,G] saved. */                                                      \
    void dp__k_groupnorm_fwd##S(REAL *out, REAL *xhat, REAL *rstd, const REAL *in, const REAL *gamma, \
                                const REAL *beta, int B, int C, int HW, int G, REAL eps);       \
    void dp__k_groupnorm_bwd_input##S(REAL *din, const REAL *dout, const REAL *xhat, const REAL *rstd, \
                                      const REAL *gamma, int B, int C, int HW, int G);          \
    void dp__k_groupnorm_bwd_param##S(REAL *dgamma, REAL *dbeta, const REAL *dout, const REAL *xhat, int B, \
                                      int C, int HW);                                           \
    /* ps_i = [per channel sum_hw g * xhat (C), per channel sum_hw g (C)] */                    \
    void dp__k_groupnorm_ps_grad##S(REAL *ps, size_t stride, const REAL *dout, const REAL *xhat, int B, int C, \
                                    int HW);                                                    \
    /* GELU, exact: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); backward needs the input. */   \
    void dp__k_gelu_fwd##S(REAL *out, const REAL *in, size_t n);                                \
    void dp__k_gelu_bwd##S(REAL *din, const REAL *dout, const REAL *in, size_t n);             \
    /* Multi-head scaled dot-product attention core (no projections): for sample i and head j, \
     * Q, K, V are the T x dh blocks of columns j*dh .. of q, k, v [B,T,d];                     \
     * S = Q K^T / sqrt(dh), keys with kvalid 0 get -inf, P = softmax over keys (a row with no \
     * valid key gives P = 0), ctx = P V written into the same columns of ctx [B,T,d].         \
     * P [B,h,T,T] is saved for backward. */                                                    \
    void dp__k_attn_fwd##S(REAL *ctx, REAL *P, const REAL *q, const REAL *k, const REAL *v,      \
                           const unsigned char *kvalid, int B, int T, int d, int h);            \
    /* dq, dk, dv [B,T,d] written (masked keys have P = 0, so no gradient reaches them);     \
     * work: per thread DP_ATTN_BWD_WORK(T, d) = T*T (dP, then dS in place) */               \
    void dp__k_attn_bwd##S(REAL *dq, REAL *dk, REAL *dv, REAL *work, const REAL *dctx, const REAL *P, \
                           const REAL *q, const REAL *k, const REAL *v, int B, int T, int d, int h); \
    /* Mean over valid positions: out[B,d]; a sample with no valid position gives 0. */         \
    void dp__k_meanpool_fwd##S(REAL *out, const REAL *in, const unsigned char *kvalid, int B, int T, int d); \
    void dp__k_meanpool_bwd##S(REAL *din, const REAL *dout, const unsigned char *kvalid, int B, int T, int d); \
    /* First token: out[B,d] = in[:,0,:]; backward writes din with zeros elsewhere. */          \
    void dp__k_firsttok_fwd##S(REAL *out, const REAL *in, int B, int T, int d);                 \
    void dp__k_firsttok_bwd##S(REAL *din, const REAL *dout, int B, int T, int d);

DP__KERNEL_SEQ_DECLS(float, _f32)
DP__KERNEL_SEQ_DECLS(double, _f64)

/* work REALs per thread that dp__k_attn_bwd needs (d unused: the head blocks of q, k, v, dctx
 * and dq, dk, dv are read and written in place with leading dimension d) */
#define DP_ATTN_BWD_WORK(T, d) ((size_t)(T) * (size_t)(T))
#endif
