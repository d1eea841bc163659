/* dpsgd/core.h: status codes, the tracked allocator, the seeded RNG.
 *
 * Every fallible call in the library returns a dp_status. On failure a message that names
 * the file, field or flag and the reason is kept per thread and read with dp_last_error().
 * Out-parameters are written only on success. The library never prints and never exits.
 */
#ifndef DPSGD_CORE_H
#define DPSGD_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro list: adding a status without its text breaks the build (see core.c). */
#define DP_STATUS_LIST(X)                                                                     \
    X(DP_OK, "ok")                                                                            \
    X(DP_ERR_NOMEM, "out of memory")                                                          \
    X(DP_ERR_INVALID, "invalid argument")                                                     \
    X(DP_ERR_IO, "input/output error")                                                        \
    X(DP_ERR_FORMAT, "malformed input")                                                       \
    X(DP_ERR_RANGE, "value out of range")                                                     \
    X(DP_ERR_NONFINITE, "non-finite value")                                                   \
    X(DP_ERR_UNSUPPORTED, "unsupported operation")                                            \
    X(DP_ERR_INTERRUPTED, "stopped on request")

typedef enum {
#define DP__ENUM(name, text) name,
    DP_STATUS_LIST(DP__ENUM)
#undef DP__ENUM
        DP_STATUS_COUNT
} dp_status;

/* Short text of a status code ("out of memory"). Never NULL. */
const char *dp_strerror(dp_status s);
/* The detailed message of the last failure on this thread ("" if none). Owned by the
 * library, valid until the next failing call on the same thread. */
const char *dp_last_error(void);
/* Sets the thread's message (printf-style) and returns s: `return dp_fail(DP_ERR_IO, ...)`. */
dp_status dp_fail(dp_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_clear_error(void);

/* Invariant check: aborts with file:line (programming errors only, never bad input). */
#define DP_ASSERT(cond)                                                                       \
    do {                                                                                      \
        if (!(cond)) dp__assert_fail(#cond, __FILE__, __LINE__);                             \
    } while (0)
void dp__assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

/* ---- Tracked allocator --------------------------------------------------------------
 * Every tensor byte goes through dp_alloc. Blocks are 64-byte aligned. The counters are
 * global and thread-safe: live bytes, live blocks, peak bytes, and the peak within the
 * current named stage (dp_mem_stage). dp_alloc returns NULL on failure (and sets the
 * error message); dp_calloc zero-fills. dp_free(NULL) is a no-op. */
void *dp_alloc(size_t bytes);
void *dp_calloc(size_t count, size_t size);
void dp_free(void *p);

typedef struct {
    size_t live_bytes;
    size_t live_blocks;
    size_t peak_bytes;  /* since start or the last dp_mem_reset_peak */
    size_t stage_peak;  /* peak bytes since the current stage began */
    size_t total_allocs;
} dp_mem_stats;

dp_mem_stats dp_mem_get(void);
void dp_mem_reset_peak(void);
/* Begin a named stage (name is copied, up to 31 chars): stage_peak restarts at live bytes.
 * dp_mem_stage_report gives, for each stage name seen since the last reset, the highest
 * peak seen in it; returns the number of stages written (at most cap). */
void dp_mem_stage(const char *name);
typedef struct {
    char name[32];
    size_t peak_bytes; /* highest live bytes while this stage was current */
    size_t start_bytes; /* live bytes when the stage last began */
} dp_mem_stage_info;
int dp_mem_stage_report(dp_mem_stage_info *out, int cap);
void dp_mem_stage_reset(void);
/* A limit (bytes, 0 = none) makes any allocation that would exceed it fail. */
void dp_mem_set_limit(size_t bytes);

/* ---- RNG ----------------------------------------------------------------------------
 * xoshiro256** seeded by splitmix64 (each written once, in src/core/internal.h, for the noise
 * blocks too). Deterministic for a seed on every platform. */
typedef struct {
    uint64_t s[4];
    int has_spare;
    double spare;
} dp_rng;

void dp_rng_seed(dp_rng *r, uint64_t seed);
uint64_t dp_rng_u64(dp_rng *r);
/* uniform in [0, 1), 53 random bits */
double dp_rng_uniform(dp_rng *r);
/* standard normal (polar Box-Muller, double precision) */
double dp_rng_normal(dp_rng *r);
/* independent stream: derive a child generator (for per-thread or per-purpose streams) */
void dp_rng_split(dp_rng *parent, dp_rng *child);
/* uniform in [0, n), n >= 1, without modulo bias: one dp_rng_u64 draw v, rejected while
 * v < 2^64 mod n (probability below n / 2^64), else v % n. So it returns what `v % n` would
 * unless a draw is rejected. */
uint64_t dp_rng_below(dp_rng *r, uint64_t n);
/* Fisher-Yates: a[0..n) in uniformly random order; i = 0, 1, ..., n-2 swaps a[i] with
 * a[i + dp_rng_below(r, n - i)] (n - 1 draws). */
void dp_rng_shuffle(dp_rng *r, size_t *a, size_t n);
/* The first min(k, n - 1) steps of dp_rng_shuffle: a[0..k) is a uniformly random k-subset of
 * a[0..n) in random order (the prefix of a random permutation), after min(k, n - 1) draws. */
void dp_rng_shuffle_prefix(dp_rng *r, size_t *a, size_t n, size_t k);

#ifdef __cplusplus
}
#endif
#endif
