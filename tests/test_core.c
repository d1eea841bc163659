#include "test.h"

static void test_status(void) {
    CHECK(strcmp(dp_strerror(DP_OK), "ok") == 0);
    CHECK(strcmp(dp_strerror(DP_STATUS_COUNT), "unknown status") == 0);
    CHECK(dp_fail(DP_ERR_IO, "file %s: %s", "x.idx", "truncated") == DP_ERR_IO);
    CHECK(strcmp(dp_last_error(), "file x.idx: truncated") == 0);
    /* a message that wraps the current one (the library's "step 5: <cause>") */
    dp_fail(DP_ERR_NONFINITE, "non-finite loss");
    CHECK(dp_fail(DP_ERR_NONFINITE, "step %d (epoch %d): %s; stopped", 5, 1, dp_last_error()) == DP_ERR_NONFINITE);
    CHECK(strcmp(dp_last_error(), "step 5 (epoch 1): non-finite loss; stopped") == 0);
}

static void test_alloc(void) {
    dp_mem_stats m0 = dp_mem_get();
    dp_mem_reset_peak();
    float *a = dp_alloc(1000 * sizeof(float));
    CHECK(a != NULL && ((uintptr_t)a % 64) == 0);
    dp_mem_stats m1 = dp_mem_get();
    CHECK(m1.live_bytes == m0.live_bytes + 4000);
    CHECK(m1.live_blocks == m0.live_blocks + 1);
    dp_mem_stage("big");
    float *b = dp_calloc(250, sizeof(float));
    CHECK(b && b[249] == 0.0f);
    dp_free(b);
    dp_mem_stage("small");
    dp_free(a);
    dp_mem_stage_info st[4];
    int n = dp_mem_stage_report(st, 4);
    CHECK(n == 2);
    CHECK(strcmp(st[0].name, "big") == 0 && st[0].peak_bytes == m0.live_bytes + 5000);
    CHECK(dp_mem_get().peak_bytes >= m0.live_bytes + 5000);
    dp_mem_stage_reset();
    /* fault injection */
    dp_mem_fail_after(2);
    void *p1 = dp_alloc(8), *p2 = dp_alloc(8), *p3 = dp_alloc(8);
    CHECK(p1 && !p2 && p3);
    CHECK(strstr(dp_last_error(), "injected") != NULL);
    dp_free(p1);
    dp_free(p3);
    dp_mem_set_limit(dp_mem_get().live_bytes + 100);
    CHECK(dp_alloc(1000) == NULL);
    dp_mem_set_limit(0);
    CHECK(dp_calloc(SIZE_MAX / 2, 4) == NULL);
    dp_free(NULL);
}

static void test_rng(void) {
    dp_rng r1, r2;
    dp_rng_seed(&r1, 42);
    dp_rng_seed(&r2, 42);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= dp_rng_u64(&r1) == dp_rng_u64(&r2);
    CHECK(same);
    dp_rng_seed(&r2, 43);
    CHECK(dp_rng_u64(&r1) != dp_rng_u64(&r2));
    /* normal: mean 0, variance 1 within 5 standard errors */
    const int n = 200000;
    double s = 0, s2 = 0, u = 0;
    for (int i = 0; i < n; i++) {
        double z = dp_rng_normal(&r1);
        s += z;
        s2 += z * z;
        u += dp_rng_uniform(&r1);
    }
    double mean = s / n, var = s2 / n - mean * mean;
    CHECK(fabs(mean) < 5.0 / sqrt(n));
    CHECK(fabs(var - 1.0) < 5.0 * sqrt(2.0 / n));
    CHECK(fabs(u / n - 0.5) < 5.0 * sqrt(1.0 / 12 / n));
}

int main(void) {
    test_status();
    test_alloc();
    test_rng();
    return t_finish("test_core");
}
