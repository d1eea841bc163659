/* kernels_f32.c: the float instance of kernels_impl.h, kernels_seq_impl.h and kernels_tensor_impl.h (used by the engine). */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "dpsgd/core.h"
#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/kernels/kernels_tensor.h"
#define REAL float
#define KN(name) dp__k_##name##_f32
#define GEMM cblas_sgemm
#define SUMD dp__sum_f32
#define DOTD dp__dot_f32
#define SYRK cblas_ssyrk
#define TANH dp__tanhf

/* tanh without libm calls, written so that gcc vectorises the loop (no branches, nothing that
 * can trap evaluated conditionally): x P(x^2) / Q(x^2) in double, P and Q of degree 4 with
 * P(0) = Q(0) = 1, a minimax fit of tanh's relative error on [0, 9] (2.2e-8; fitted by
 * iteratively reweighted least squares, docs/design.md). |x| is clamped to 9 with an integer
 * min on its bits (tanh(9) rounds to 1 in float; inf becomes 9), except a NaN, whose bits pass
 * and which propagates. Rounded to float: within 1e-7 relative of libm's double tanh (about an
 * ulp), monotone, odd, tanh(-0) = -0 (test_nn). Cheaper than the exp-based form it replaced,
 * which ran both branches and a float division. */
#ifdef __FMA__ /* one instruction; elsewhere a multiply and an add (in double, the same to 1e-16) */
#define DP__FMAD(a, b, c) __builtin_fma(a, b, c)
#else
#define DP__FMAD(a, b, c) ((a) * (b) + (c))
#endif
static inline float dp__tanhf(float x) {
    float ax = __builtin_fabsf(x);
    int32_t ib;
    memcpy(&ib, &ax, sizeof ib);
    const int32_t cb = ib < 0x41100000 ? ib : 0x41100000; /* min(|x|, 9.0f) on the bit pattern */
    ib = ib > 0x7f800000 ? ib : cb;                       /* but a NaN stays a NaN */
    float m;
    memcpy(&m, &ib, sizeof m);
    const double xc = __builtin_copysignf(m, x), z = xc * xc;
    double p = DP__FMAD(z, 1.3421620167878586e-08, 2.0662554656960436e-05);
    p = DP__FMAD(p, z, 3.4990745045750207e-03);
    p = DP__FMAD(p, z, 1.338404631067232e-01);
    p = DP__FMAD(p, z, 1.0);
    double q = DP__FMAD(z, 7.805463410151543e-07, 3.2911666694420826e-04);
    q = DP__FMAD(q, z, 2.5890504745948062e-02);
    q = DP__FMAD(q, z, 4.671736780930852e-01);
    q = DP__FMAD(q, z, 1.0);
    return (float)(xc * p / q);
}

/* exp in float without libm calls, vectorisable (no branches). x is clamped to [-87, 88] (2^n
 * stays a normal float; exp(-87) = 1.6e-38 stands in for anything smaller, exp(88) for
 * anything larger), NaN is passed through. The callers (softmax, GELU backward) pass x <= 0.
 * Relative error ~1e-7 on the clamped range. */
static inline float dp__expf(float x) {
    float xc = x > -87.0f ? x : -87.0f; /* a NaN becomes -87 here and is restored below */
    xc = xc < 88.0f ? xc : 88.0f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x == x ? e * scale : x;
}
#define EXP dp__expf

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
static inline float dp__hsum8(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(lo);
    lo = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, lo);
    return _mm_cvtss_f32(_mm_add_ss(lo, sh));
}
/* The upper triangle of a ghost norm's Gram A A^T (A: T rows of D values, ld apart) into
 * aa[T x T], for the small T where OpenBLAS's SYRK lost to its full GEMM (conv_ghost_sq): in
 * blocks of 3 rows by 4 (twelve vector accumulators in registers), only the blocks that reach
 * the upper triangle, so about 60% of the GEMM's products for the default CNN's second
 * convolution (T = 25, D = 256). Entries below the diagonal are not all written; the caller
 * reads the upper triangle only. */
static void dp__gram_upper_f32(float *restrict aa, const float *restrict A, int T, int D, int ld) {
    const int D8 = D & ~7;
    for (int t0 = 0; t0 < T; t0 += 3)
        for (int u0 = t0 & ~3; u0 < T; u0 += 4) {
            const int nt = T - t0 < 3 ? T - t0 : 3, nu = T - u0 < 4 ? T - u0 : 4;
            if (nt == 3 && nu == 4) {
                __m256 c[3][4];
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 4; b++) c[a][b] = _mm256_setzero_ps();
                const float *x0 = A + (size_t)t0 * ld, *x1 = x0 + ld, *x2 = x1 + ld, *y0 = A + (size_t)u0 * ld;
                for (int j = 0; j < D8; j += 8) {
                    const __m256 p0 = _mm256_loadu_ps(x0 + j), p1 = _mm256_loadu_ps(x1 + j), p2 = _mm256_loadu_ps(x2 + j);
                    for (int b = 0; b < 4; b++) {
                        const __m256 y = _mm256_loadu_ps(y0 + (size_t)b * ld + j);
                        c[0][b] = _mm256_fmadd_ps(p0, y, c[0][b]);
                        c[1][b] = _mm256_fmadd_ps(p1, y, c[1][b]);
                        c[2][b] = _mm256_fmadd_ps(p2, y, c[2][b]);
                    }
                }
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 4; b++) {
                        const float *x = A + (size_t)(t0 + a) * ld, *y = A + (size_t)(u0 + b) * ld;
                        float s = dp__hsum8(c[a][b]);
                        for (int j = D8; j < D; j++) s += x[j] * y[j];
                        aa[(size_t)(t0 + a) * T + u0 + b] = s;
                    }
                continue;
            }
            for (int a = 0; a < nt; a++)
                for (int b = 0; b < nu; b++) {
                    const float *x = A + (size_t)(t0 + a) * ld, *y = A + (size_t)(u0 + b) * ld;
                    __m256 cv = _mm256_setzero_ps();
                    for (int j = 0; j < D8; j += 8) cv = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), cv);
                    float s = dp__hsum8(cv);
                    for (int j = D8; j < D; j++) s += x[j] * y[j];
                    aa[(size_t)(t0 + a) * T + u0 + b] = s;
                }
        }
}
#define GRAM_UPPER dp__gram_upper_f32

/* C[MR, 8 NV] (=, or += with add) A[MR, K] B[K, 8 NV] (row-major, leading dimensions lda, ldb,
 * ldc; MR and NV constants after inlining: MR x NV vector accumulators in registers), k in
 * ascending order, one accumulator per entry: an entry's value does not depend on the block it
 * is computed in */
static inline __attribute__((always_inline)) void dp__sgemm_block(float *restrict C, int ldc, const float *restrict A,
                                                                  int lda, const float *restrict B, int ldb, int K,
                                                                  int add, const int MR, const int NV) {
    __m256 c[3][4];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) c[i][v] = add ? _mm256_loadu_ps(C + (size_t)i * ldc + 8 * v) : _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 b[4];
        for (int v = 0; v < NV; v++) b[v] = _mm256_loadu_ps(B + (size_t)k * ldb + 8 * v);
        for (int i = 0; i < MR; i++) {
            const __m256 a = _mm256_broadcast_ss(A + (size_t)i * lda + k);
            for (int v = 0; v < NV; v++) c[i][v] = _mm256_fmadd_ps(a, b[v], c[i][v]);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(C + (size_t)i * ldc + 8 * v, c[i][v]);
}
#define DP__SGEMM_ROWS(MR)                                                                                       \
    switch (nv) {                                                                                                \
    case 4: dp__sgemm_block(Cb, ldc, Ab, lda, Bb, ldb, K, add, MR, 4); break;                                    \
    case 3: dp__sgemm_block(Cb, ldc, Ab, lda, Bb, ldb, K, add, MR, 3); break;                                    \
    case 2: dp__sgemm_block(Cb, ldc, Ab, lda, Bb, ldb, K, add, MR, 2); break;                                    \
    default: dp__sgemm_block(Cb, ldc, Ab, lda, Bb, ldb, K, add, MR, 1); break;                                   \
    }
/* C[M, N] (=, or += with add) A[M, K] B[K, N], all row-major, for the convolutions' small GEMMs
 * (a chunk of samples: M = a few hundred positions, N and K the channels or the patch), where
 * OpenBLAS's packing of both operands at every call cost more than the product (the default
 * CNN's second convolution ran closer to the core's FMA rate this way, timed on a Zen 3 one
 * chunk after another). Blocks of 3 rows by 32 columns in twelve accumulators, B read
 * in place (no packing: it must fit the second-level cache, K N <= 32768 floats), N a
 * multiple of 8. Returns 0, having done nothing, for any other shape (the caller's GEMM then). */
static inline int dp__sgemm_small_ok(int N, int K) {
    return K >= 1 && N >= 8 && N % 8 == 0 && N <= 512 && (long)K * N <= 32768;
}
static int dp__sgemm_small(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc,
                           int add) {
    if (M < 1 || !dp__sgemm_small_ok(N, K)) return 0;
    for (int j = 0; j < N; j += 32) {
        const int nv = N - j >= 32 ? 4 : (N - j) / 8;
        const float *Bb = B + j;
        int i = 0;
        for (; i + 3 <= M; i += 3) {
            float *Cb = C + (size_t)i * ldc + j;
            const float *Ab = A + (size_t)i * lda;
            DP__SGEMM_ROWS(3)
        }
        for (; i < M; i++) {
            float *Cb = C + (size_t)i * ldc + j;
            const float *Ab = A + (size_t)i * lda;
            DP__SGEMM_ROWS(1)
        }
    }
    return 1;
}
#undef DP__SGEMM_ROWS
#define GEMM_SMALL dp__sgemm_small
#define GEMM_SMALL_OK dp__sgemm_small_ok /* whether it takes N columns and inner length K */
#include "nn/kernels/conv_direct.h"
#endif
#define ERF erff

#include "nn/kernels/kernels_impl.h"
#include "nn/kernels/kernels_seq_impl.h"
#include "nn/kernels/kernels_tensor_impl.h"

/* whether conv2d's float kernels take the direct path for geometry g (conv_direct.h; tests) */
int dp__k_conv_direct_f32(const dp__conv_geom *g) {
#ifdef CONV_DIRECT_OK
    return CONV_DIRECT_OK(g, dp__conv_thread_work(g));
#else
    (void)g;
    return 0;
#endif
}

int dp__thread_num(void) { return omp_get_thread_num(); }
int dp__max_threads(void) { return omp_get_max_threads(); }
int dp__num_threads(void) { return omp_get_num_threads(); }
