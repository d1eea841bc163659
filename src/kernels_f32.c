/* kernels_f32.c: the float instance of kernels_impl.h (used by the engine). */
#include <cblas.h>
#include <omp.h>

#include "kernels.h"
#define REAL float
#define KN(name) dp__k_##name##_f32
#define GEMM cblas_sgemm
#define SYRK cblas_ssyrk
#define TANH tanhf
#include "kernels_impl.h"

int dp__thread_num(void) { return omp_get_thread_num(); }
int dp__max_threads(void) { return omp_get_max_threads(); }
