/* core.c: status text, per-thread error messages, the tracked allocator, the RNG, the clock. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "dpsgd/core.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "core/testhooks.h"

/* ---- status --------------------------------------------------------------------- */

static const char *const status_text[] = {
#define DP__TEXT(name, text) text,
    DP_STATUS_LIST(DP__TEXT)
#undef DP__TEXT
};
_Static_assert(sizeof status_text / sizeof status_text[0] == DP_STATUS_COUNT,
               "every dp_status needs a text");

const char *dp_strerror(dp_status s) {
    if ((int)s < 0 || s >= DP_STATUS_COUNT) return "unknown status";
    return status_text[s];
}

static _Thread_local char last_error[1024];

const char *dp_last_error(void) { return last_error; }

void dp_clear_error(void) { last_error[0] = '\0'; }

dp_status dp_fail(dp_status s, const char *fmt, ...) {
    /* formatted into a local buffer first: an argument may be dp_last_error() itself (a
     * message that wraps the one below it), which vsnprintf must not write while reading */
    char buf[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    return s;
}

void dp__assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "dpsgd: internal invariant failed: %s (%s:%d)\n", cond, file, line);
    abort();
}

/* ---- tracked allocator ------------------------------------------------------------ */

enum { HDR = 64 }; /* header keeps the size and a canary; keeps 64-byte alignment */
#define CANARY 0xd95fd95fd95fd95fULL

static atomic_size_t mem_live, mem_blocks, mem_peak, mem_stage_peak, mem_total;
static atomic_long mem_fail_countdown;
static atomic_size_t mem_limit;

enum { MAX_STAGES = 32 };
static dp_mem_stage_info stages[MAX_STAGES];
static int n_stages;
static int cur_stage = -1;

static void update_peak(atomic_size_t *peak, size_t v) {
    size_t old = atomic_load(peak);
    while (v > old && !atomic_compare_exchange_weak(peak, &old, v)) {
    }
}

void *dp_alloc(size_t bytes) {
    long c = atomic_load(&mem_fail_countdown);
    if (c > 0 && atomic_fetch_sub(&mem_fail_countdown, 1) == 1) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu bytes failed (injected fault)", bytes);
        return NULL;
    }
    size_t lim = atomic_load(&mem_limit);
    if (lim && atomic_load(&mem_live) + bytes > lim) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu bytes would exceed the memory limit of %zu bytes",
                bytes, lim);
        return NULL;
    }
    if (bytes > SIZE_MAX - 2 * HDR) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu bytes is too large", bytes);
        return NULL;
    }
    size_t total = (bytes + HDR + 63) & ~(size_t)63;
    unsigned char *base = aligned_alloc(64, total);
    if (!base) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu bytes failed", bytes);
        return NULL;
    }
    uint64_t *h = (uint64_t *)base;
    h[0] = bytes;
    h[1] = CANARY;
    size_t live = atomic_fetch_add(&mem_live, bytes) + bytes;
    atomic_fetch_add(&mem_blocks, 1);
    atomic_fetch_add(&mem_total, 1);
    update_peak(&mem_peak, live);
    update_peak(&mem_stage_peak, live);
    return base + HDR;
}

void *dp_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    void *p = dp_alloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void dp_free(void *p) {
    if (!p) return;
    unsigned char *base = (unsigned char *)p - HDR;
    uint64_t *h = (uint64_t *)base;
    DP_ASSERT(h[1] == CANARY); /* double free or a pointer not from dp_alloc */
    h[1] = 0;
    atomic_fetch_sub(&mem_live, (size_t)h[0]);
    atomic_fetch_sub(&mem_blocks, 1);
    free(base);
}

static void stage_close(void) {
    if (cur_stage >= 0) {
        size_t pk = atomic_load(&mem_stage_peak);
        if (pk > stages[cur_stage].peak_bytes) stages[cur_stage].peak_bytes = pk;
    }
}

dp_mem_stats dp_mem_get(void) {
    dp_mem_stats s;
    s.live_bytes = atomic_load(&mem_live);
    s.live_blocks = atomic_load(&mem_blocks);
    s.peak_bytes = atomic_load(&mem_peak);
    s.stage_peak = atomic_load(&mem_stage_peak);
    s.total_allocs = atomic_load(&mem_total);
    return s;
}

void dp_mem_reset_peak(void) {
    atomic_store(&mem_peak, atomic_load(&mem_live));
    atomic_store(&mem_stage_peak, atomic_load(&mem_live));
}

void dp_mem_stage(const char *name) {
    stage_close();
    size_t live = atomic_load(&mem_live);
    atomic_store(&mem_stage_peak, live);
    int i;
    for (i = 0; i < n_stages; i++)
        if (strncmp(stages[i].name, name, sizeof stages[i].name - 1) == 0) break;
    if (i == n_stages) {
        if (n_stages == MAX_STAGES) {
            cur_stage = -1;
            return;
        }
        memset(&stages[i], 0, sizeof stages[i]);
        snprintf(stages[i].name, sizeof stages[i].name, "%s", name);
        n_stages++;
    }
    stages[i].start_bytes = live;
    cur_stage = i;
}

int dp_mem_stage_report(dp_mem_stage_info *out, int cap) {
    stage_close();
    int n = n_stages < cap ? n_stages : cap;
    for (int i = 0; i < n; i++) out[i] = stages[i];
    return n;
}

void dp_mem_stage_reset(void) {
    n_stages = 0;
    cur_stage = -1;
}

void dp_mem_fail_after(long n) { atomic_store(&mem_fail_countdown, n > 0 ? n : 0); }
void dp_mem_set_limit(size_t bytes) { atomic_store(&mem_limit, bytes); }

/* ---- RNG ----------------------------------------------------------------------------- */

void dp_rng_seed(dp_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = dp__splitmix64(&x);
    r->has_spare = 0;
    r->spare = 0.0;
}

uint64_t dp_rng_u64(dp_rng *r) { return dp__xoshiro256ss(r->s); }

double dp_rng_uniform(dp_rng *r) { return (double)(dp_rng_u64(r) >> 11) * 0x1.0p-53; }

static double rng_uniform(void *r) { return dp_rng_uniform(r); }

double dp_rng_normal(dp_rng *r) { return dp__polar_normal(rng_uniform, r, &r->has_spare, &r->spare); }

void dp_rng_split(dp_rng *parent, dp_rng *child) {
    dp_rng_seed(child, dp_rng_u64(parent) ^ 0x5851f42d4c957f2dULL);
}

uint64_t dp_rng_below(dp_rng *r, uint64_t n) {
    DP_ASSERT(n >= 1);
    const uint64_t lim = (0 - n) % n; /* 2^64 mod n: below it, v % n would favour small values */
    for (;;) {
        const uint64_t v = dp_rng_u64(r);
        if (v >= lim) return v % n;
    }
}

void dp_rng_shuffle_prefix(dp_rng *r, size_t *a, size_t n, size_t k) {
    for (size_t i = 0; i < k && i + 1 < n; i++) {
        const size_t j = i + (size_t)dp_rng_below(r, (uint64_t)(n - i)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

void dp_rng_shuffle(dp_rng *r, size_t *a, size_t n) { dp_rng_shuffle_prefix(r, a, n, n); }

/* ---- clock ---------------------------------------------------------------------- */

double dp__now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
