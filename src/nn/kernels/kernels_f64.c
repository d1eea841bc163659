/* kernels_f64.c: the double instance of kernels_impl.h, kernels_seq_impl.h and kernels_tensor_impl.h (finite-difference
 * tests). */
#include <cblas.h>

#include "dpsgd/core.h"
#include "nn/kernels/kernels.h"
#include "nn/kernels/kernels_seq.h"
#include "nn/kernels/kernels_tensor.h"
#define REAL double
#define KN(name) dp__k_##name##_f64
#define GEMM cblas_dgemm
#define SUMD dp__sum_f64
#define DOTD dp__dot_f64
#define SYRK cblas_dsyrk
#define TANH tanh
#define EXP exp
#define ERF erf
#include "nn/kernels/kernels_impl.h"
#include "nn/kernels/kernels_seq_impl.h"
#include "nn/kernels/kernels_tensor_impl.h"
