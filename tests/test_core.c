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
    /* splitmix64 seeding and xoshiro256** pinned: checkpoints and --noise-seed runs depend on them */
    dp_rng_seed(&r1, 42);
    CHECK(dp_rng_u64(&r1) == 0x15780b2e0c2ec716ULL && dp_rng_u64(&r1) == 0x6104d9866d113a7eULL);
}

/* dp_rng_below and the shuffles */
static void test_rng_below_shuffle(void) {
    dp_rng r, twin;
    /* without a rejection (probability below n / 2^64) below is the draw mod n: the `% n` it
     * replaced gives the same numbers */
    dp_rng_seed(&r, 7);
    dp_rng_seed(&twin, 7);
    int same = 1;
    for (uint64_t n = 1; n < 5000; n += 7) same &= dp_rng_below(&r, n) == dp_rng_u64(&twin) % n;
    CHECK(same);
    /* n = 2^63 + 1: 2^64 mod n = 2^63 - 1, so about half the draws are rejected, and each
     * result is the first draw at or above that, mod n */
    const uint64_t big = (1ULL << 63) + 1, lim = (1ULL << 63) - 1;
    int rejected = 0, ok = 1;
    for (int i = 0; i < 1000; i++) {
        uint64_t got = dp_rng_below(&r, big), v;
        while ((v = dp_rng_u64(&twin)) < lim) rejected++;
        ok &= got == v % big && got < big;
    }
    CHECK(ok);
    CHECK(rejected > 400 && rejected < 1600); /* about 1000 (geometric, mean 1 per draw) */
    /* unbiased: the counts of n = 3 within 5 sigma */
    long cnt[3] = {0, 0, 0};
    for (int i = 0; i < 300000; i++) cnt[dp_rng_below(&r, 3)]++;
    for (int k = 0; k < 3; k++) CHECK(labs(cnt[k] - 100000) < 5 * 258);

    /* the shuffle: pinned (the draws of the loops it replaced), a permutation, n - 1 draws */
    size_t a[10], b[10];
    for (size_t i = 0; i < 10; i++) a[i] = b[i] = i;
    dp_rng_seed(&r, 42);
    dp_rng_shuffle(&r, a, 10);
    static const size_t pinned[10] = {2, 1, 3, 7, 8, 9, 4, 0, 6, 5};
    CHECK(memcmp(a, pinned, sizeof a) == 0);
    dp_rng_seed(&twin, 42);
    for (int i = 0; i < 9; i++) dp_rng_u64(&twin);
    CHECK(dp_rng_u64(&r) == dp_rng_u64(&twin));
    /* a prefix: the first k of the same permutation, after k draws */
    dp_rng_seed(&r, 42);
    dp_rng_shuffle_prefix(&r, b, 10, 4);
    CHECK(memcmp(a, b, 4 * sizeof *a) == 0);
    dp_rng_seed(&twin, 42);
    for (int i = 0; i < 4; i++) dp_rng_u64(&twin);
    CHECK(dp_rng_u64(&r) == dp_rng_u64(&twin));
    /* k >= n - 1 is the whole shuffle; n 0 and 1 draw nothing */
    dp_rng_seed(&r, 1);
    dp_rng_seed(&twin, 1);
    dp_rng_shuffle(&r, a, 0);
    dp_rng_shuffle(&r, a, 1);
    dp_rng_shuffle_prefix(&r, a, 1, 5);
    CHECK(dp_rng_u64(&r) == dp_rng_u64(&twin));
    /* uniform over the 6 orders of 3 (each about 10000; 5 sigma ~ 460) */
    long perm[6] = {0};
    for (int t = 0; t < 60000; t++) {
        size_t c[3] = {0, 1, 2};
        dp_rng_shuffle(&r, c, 3);
        perm[c[0] * 2 + (c[1] > c[2])]++;
    }
    for (int k = 0; k < 6; k++) CHECK(labs(perm[k] - 10000) < 460);
}

int main(void) {
    test_status();
    test_alloc();
    test_rng();
    test_rng_below_shuffle();
    return t_finish("test_core");
}
