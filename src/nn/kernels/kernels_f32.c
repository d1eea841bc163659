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
#define SYRK cblas_ssyrk
#define TANH dp__tanhf

/* tanh in float without libm calls, written so that gcc vectorises the loop (no branches,
 * no libm): for |x| < 0.625 a minimax odd polynomial; above, 1 - 2 / (exp(2|x|) + 1), where
 * exp(y) = 2^n e^r, n = round(y / ln2), |r| <= ln2 / 2, e^r by a degree-6 polynomial
 * (Cephes-style coefficients). |x| is clamped to 9 for the exp branch (tanh(9) rounds to 1 in
 * float) with an integer min on its bits, which also maps inf to 9. NaN propagates through
 * the polynomial half. Relative error < 1e-6 against libm's double tanh (tested). */
static inline float dp__tanhf(float x) {
    float ax = __builtin_fabsf(x);
    int32_t ib;
    memcpy(&ib, &ax, sizeof ib);
    ib = ib < 0x41100000 ? ib : 0x41100000; /* min(|x|, 9.0f) on the bit pattern (|x| >= 0) */
    float y;
    memcpy(&y, &ib, sizeof y);
    y *= 2.0f;
    float n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(y / ln2), 1.5*2^23 trick */
    float r = y - n * 0.693359375f + n * 2.12194440e-4f;
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
    float big = __builtin_copysignf(1.0f - 2.0f / (e * scale + 1.0f), x);
    float xs = x < -0.625f ? -0.625f : (x > 0.625f ? 0.625f : x), z = xs * xs;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
                   3.33332819422e-1f) * z * xs + xs;
    float t = (float)(ax < 0.625f);
    return t * small + (1.0f - t) * big;
}

/* exp in float without libm calls, vectorisable (no branches): the exp branch of dp__tanhf
 * on its own. x is clamped to [-87, 88] (2^n stays a normal float; exp(-87) = 1.6e-38 stands
 * in for anything smaller, exp(88) for anything larger), NaN is passed through. The callers
 * (softmax, GELU backward) pass x <= 0. Relative error ~1e-7 on the clamped range. */
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
#define ERF erff

#include "nn/kernels/kernels_impl.h"
#include "nn/kernels/kernels_seq_impl.h"
#include "nn/kernels/kernels_tensor_impl.h"

int dp__thread_num(void) { return omp_get_thread_num(); }
int dp__max_threads(void) { return omp_get_max_threads(); }
int dp__num_threads(void) { return omp_get_num_threads(); }
