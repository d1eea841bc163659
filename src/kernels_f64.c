/* kernels_f64.c: the double instance of kernels_impl.h (finite-difference tests). */
#include <cblas.h>

#include "kernels.h"
#define REAL double
#define KN(name) dp__k_##name##_f64
#define GEMM cblas_dgemm
#define SYRK cblas_dsyrk
#define TANH tanh
#include "kernels_impl.h"
