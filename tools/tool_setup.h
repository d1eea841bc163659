/* tools/tool_setup.h: process set-up shared by the dpsgd programs (CLI and benchmarks).
 * Not part of the library: it changes process-wide state (environment, malloc). */
#ifndef DP_TOOL_SETUP_H
#define DP_TOOL_SETUP_H
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "core/internal.h"

/* OpenBLAS 0.3.21 (Debian 12) does not know recent Intel cores and falls back to its generic
 * "Prescott" (SSE3) kernels, 3-4x slower here. When the user has not chosen a core type and
 * the CPU has AVX-512 (or AVX2+FMA), restart once with OPENBLAS_CORETYPE set: OpenBLAS reads
 * it only when it is loaded. DPSGD_NO_BLAS_FIX=1 disables this. Returns only if no restart
 * happened (or it failed: then the program runs as it is). */
static inline void dp_tool_fix_blas_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("DPSGD_NO_BLAS_FIX")) return;
    const char *core = openblas_get_corename();
    if (!core || strcmp(core, "Prescott") != 0) return;
    __builtin_cpu_init();
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("DPSGD_BLAS_CORE_SET", "1", 1); /* so a report can say who chose the core */
    execv("/proc/self/exe", argv);
}

/* Per-step scratch blocks (one layer's per-sample gradients, up to hundreds of MB) are freed
 * and allocated again every step; keep freed memory in the heap instead of returning it to
 * the kernel each time (the page faults were ~10% of a step). With that heap, what libcrypto
 * keeps from its first use (its configuration, default provider, method store) must be
 * allocated before any large block: made at the first private step, amid the engine's and the
 * data's buffers, it pinned freed space and the default run's peak RSS grew by 30-90 MiB. So
 * the secure noise's libcrypto is started here (dp__secure_start). */
static inline void dp_tool_setup(char **argv) {
    dp_tool_fix_blas_core(argv);
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    dp__secure_start();
}
#endif
