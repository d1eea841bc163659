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
/* all ones in the first n lanes (n <= 8), zeros after: masked loads and stores of a row's tail */
static inline __m256i dp__mask8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
/* The four sums of c0..c3's lanes, in order */
static inline __m128 dp__hsum8x4(__m256 c0, __m256 c1, __m256 c2, __m256 c3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(c0, c1), _mm256_hadd_ps(c2, c3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
/* A block of gram_upper: rows t0.. (NT of them) times rows u0.. (NU), dot products over D
 * values in NT x NU vector accumulators (NT, NU constants after inlining), the last D % 8
 * values by masked loads; a row of four stored at once. */
static inline __attribute__((always_inline)) void dp__gram_block(float *restrict aa, const float *restrict A, int T, int D,
                                                                 int ld, int t0, int u0, const int NT, const int NU) {
    const int D8 = D & ~7;
    const __m256i tail = dp__mask8(D - D8);
    const float *x = A + (size_t)t0 * ld, *y = A + (size_t)u0 * ld;
    __m256 c[3][4];
    for (int a = 0; a < NT; a++)
        for (int b = 0; b < NU; b++) c[a][b] = _mm256_setzero_ps();
#define DP__GRAM_STEP(LOAD)                                                                                 \
    {                                                                                                       \
        __m256 p[3];                                                                                        \
        for (int a = 0; a < NT; a++) p[a] = LOAD(x + (size_t)a * ld + j);                                   \
        for (int b = 0; b < NU; b++) {                                                                      \
            const __m256 q = LOAD(y + (size_t)b * ld + j);                                                  \
            for (int a = 0; a < NT; a++) c[a][b] = _mm256_fmadd_ps(p[a], q, c[a][b]);                       \
        }                                                                                                   \
    }
#define DP__GRAM_TAIL(ptr) _mm256_maskload_ps(ptr, tail)
    int j = 0;
    for (; j < D8; j += 8) DP__GRAM_STEP(_mm256_loadu_ps)
    if (j < D) DP__GRAM_STEP(DP__GRAM_TAIL)
#undef DP__GRAM_STEP
#undef DP__GRAM_TAIL
    for (int a = 0; a < NT; a++) {
        float *r = aa + (size_t)(t0 + a) * T + u0;
        if (NU == 4) _mm_storeu_ps(r, dp__hsum8x4(c[a][0], c[a][1], c[a][2], c[a][3]));
        else
            for (int b = 0; b < NU; b++) r[b] = dp__hsum8(c[a][b]);
    }
}
/* The upper triangle of a ghost norm's Gram A A^T (A: T rows of D values, ld apart) into
 * aa[T x T], for T <= DP__GRAM_FWD_T, where OpenBLAS's SYRK lost to its full GEMM (conv_ghost_sq):
 * in blocks of 3 rows by 4 (twelve vector accumulators in registers), rows grouped from the
 * top and columns from the right, so that the partial blocks are the T % 4 leftmost columns
 * (which only the first rows reach in the upper triangle) and the T % 3 last rows; only the
 * blocks that reach the upper triangle. Entries below the diagonal are not all written; the
 * caller reads the upper triangle only. */
#define DP__GRAM_COLS(NT)                                                                                  \
    if (t0 < r) switch (r) {                                                                               \
    case 3: dp__gram_block(aa, A, T, D, ld, t0, 0, NT, 3); break;                                          \
    case 2: dp__gram_block(aa, A, T, D, ld, t0, 0, NT, 2); break;                                          \
    case 1: dp__gram_block(aa, A, T, D, ld, t0, 0, NT, 1); break;                                          \
    default: break;                                                                                        \
    }                                                                                                      \
    for (int u0 = r; u0 < T; u0 += 4)                                                                      \
        if (u0 + 3 >= t0) dp__gram_block(aa, A, T, D, ld, t0, u0, NT, 4);
static void dp__gram_upper_f32(float *restrict aa, const float *restrict A, int T, int D, int ld) {
    const int r = T % 4;
    int t0 = 0;
    for (; t0 + 3 <= T; t0 += 3) {
        DP__GRAM_COLS(3)
    }
    if (T - t0 == 2) {
        DP__GRAM_COLS(2)
    } else if (T - t0 == 1) {
        DP__GRAM_COLS(1)
    }
}
#undef DP__GRAM_COLS
#define GRAM_UPPER dp__gram_upper_f32

/* c[i][v] += A[i, k] B[k, 8 v .. 8 v + 7] for k in [k0, k1) ascending, i < MR, V0 <= v < NV: a
 * broadcast of A (rows lda apart) times vectors of B (rows ldb apart); MR, V0 and NV constants
 * after inlining, so that c stays in registers */
static inline __attribute__((always_inline)) void dp__fma_rows(__m256 c[3][4], const float *restrict A, int lda,
                                                               const float *restrict B, int ldb, int k0, int k1,
                                                               const int MR, const int V0, const int NV) {
    for (int k = k0; k < k1; k++) {
        __m256 b[4];
        for (int v = V0; v < NV; v++) b[v] = _mm256_loadu_ps(B + (size_t)k * ldb + 8 * v);
        for (int i = 0; i < MR; i++) {
            const __m256 a = _mm256_broadcast_ss(A + (size_t)i * lda + k);
            for (int v = V0; v < NV; v++) c[i][v] = _mm256_fmadd_ps(a, b[v], c[i][v]);
        }
    }
}
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
    dp__fma_rows(c, A, lda, B, ldb, 0, K, MR, 0, NV);
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
/* A conv ghost norm's <A A^T, G G^T> for one sample's group of T <= DP__GRAM_FWD_T positions
 * (kernels_impl.h, ghost_contract): aa the upper triangle of A A^T, g the output gradient
 * [Cg, T]. As sum_c g_c^T A A^T g_c = 2 sum_c g_c^T U g_c, U the upper triangle with half the
 * diagonal: U into s, rows padded to Tp = T rounded up to 8 (vectors), then for three channels
 * at a time H = g U in registers (a column vector v only from the rows t <= 8 v + 7 that
 * are not below the diagonal), <H, g> in a vector, each block's lanes added in double. The
 * products of G G^T's upper triangle, without OpenBLAS's packing of both operands at each call
 * (which cost more than the product at T = 25, Cg = 32: the default CNN's second convolution)
 * and without storing H or G G^T. s: T Tp floats (dp__ghost_scratch). */
/* sum over NR channels g_c (rows T apart) of the lanes of H_c * g_c: (g U)_c in registers */
static inline __attribute__((always_inline)) __m256 dp__ghost_rows(const float *restrict g, int T, const float *restrict s,
                                                                   const __m256i *mask, const int NR, const int NV) {
    const int Tp = 8 * NV;
    __m256 c[3][4];
    for (int i = 0; i < NR; i++)
        for (int v = 0; v < NV; v++) c[i][v] = _mm256_setzero_ps();
    /* column vector v from the rows t <= 8 v + 7 only: U is zero below its diagonal */
    dp__fma_rows(c, g, T, s, Tp, 0, T < 8 ? T : 8, NR, 0, NV);
    if (NV > 1) dp__fma_rows(c, g, T, s, Tp, 8, T < 16 ? T : 16, NR, 1, NV);
    if (NV > 2) dp__fma_rows(c, g, T, s, Tp, 16, T < 24 ? T : 24, NR, 2, NV);
    if (NV > 3) dp__fma_rows(c, g, T, s, Tp, 24, T, NR, 3, NV);
    __m256 p = _mm256_setzero_ps();
    for (int i = 0; i < NR; i++)
        for (int v = 0; v < NV; v++) p = _mm256_fmadd_ps(c[i][v], _mm256_maskload_ps(g + (size_t)i * T + 8 * v, mask[v]), p);
    return p;
}
static inline __attribute__((always_inline)) double dp__ghost_blocks(const float *restrict g, int T, int Cg,
                                                                     const float *restrict s, const __m256i *mask,
                                                                     const int NV) {
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    int c = 0;
    for (; c <= Cg; c += 3) {
        __m256 p;
        if (c + 3 <= Cg) p = dp__ghost_rows(g + (size_t)c * T, T, s, mask, 3, NV);
        else if (c + 2 == Cg) p = dp__ghost_rows(g + (size_t)c * T, T, s, mask, 2, NV);
        else if (c + 1 == Cg) p = dp__ghost_rows(g + (size_t)c * T, T, s, mask, 1, NV);
        else break;
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
    }
    double l[4];
    _mm256_storeu_pd(l, _mm256_add_pd(lo, hi));
    return (l[0] + l[2]) + (l[1] + l[3]);
}
static double dp__ghost_contract_f32(const float *restrict aa, const float *restrict g, int T, int Cg, float *restrict s) {
    const int NV = (T + 7) / 8, Tp = 8 * NV;
    __m256i mask[4];
    for (int v = 0; v < NV; v++) mask[v] = dp__mask8(T - 8 * v); /* the columns of vector v inside the row */
    const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), half = _mm256_set1_ps(0.5f);
    for (int t = 0; t < T; t++) { /* U's row t: a_tu above the diagonal, a_tt / 2, zeros (bitwise:
                                     the entries below the diagonal may be anything) */
        const __m256 tv = _mm256_set1_ps((float)t);
        for (int v = 0; v < NV; v++) {
            const __m256 u = _mm256_add_ps(iota, _mm256_set1_ps((float)(8 * v)));
            const __m256 x = _mm256_maskload_ps(aa + (size_t)t * T + 8 * v, mask[v]);
            const __m256 above = _mm256_and_ps(x, _mm256_cmp_ps(u, tv, _CMP_GT_OQ)),
                         diag = _mm256_and_ps(_mm256_mul_ps(x, half), _mm256_cmp_ps(u, tv, _CMP_EQ_OQ));
            _mm256_storeu_ps(s + (size_t)t * Tp + 8 * v, _mm256_or_ps(above, diag));
        }
    }
    double acc;
    switch (NV) {
    case 4: acc = dp__ghost_blocks(g, T, Cg, s, mask, 4); break;
    case 3: acc = dp__ghost_blocks(g, T, Cg, s, mask, 3); break;
    case 2: acc = dp__ghost_blocks(g, T, Cg, s, mask, 2); break;
    default: acc = dp__ghost_blocks(g, T, Cg, s, mask, 1); break;
    }
    return 2 * acc;
}
#define GHOST_CONTRACT dp__ghost_contract_f32
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
