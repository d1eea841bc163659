/* tests/test.h: a minimal test harness. Each CHECK prints both sides on failure; a test
 * program exits non-zero if any check failed and prints "N passed, N failed". */
#ifndef DP_TEST_H
#define DP_TEST_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpsgd.h"
#include "core/testhooks.h" /* internal switches for tests (src/core/testhooks.h) */

static int t_pass, t_fail;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (cond) t_pass++;                                                                   \
        else {                                                                                \
            t_fail++;                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                                     \
    } while (0)

#define CHECK_OK(expr)                                                                        \
    do {                                                                                      \
        dp_status s_ = (expr);                                                                \
        if (s_ == DP_OK) t_pass++;                                                            \
        else {                                                                                \
            t_fail++;                                                                         \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr,        \
                    dp_strerror(s_), dp_last_error());                                        \
        }                                                                                     \
    } while (0)

/* |a-b| <= tol * max(1, |b|)  (relative for large values, absolute near zero) */
#define CHECK_CLOSE(a, b, tol)                                                                \
    do {                                                                                      \
        double a_ = (double)(a), b_ = (double)(b);                                            \
        double s_ = fabs(b_) > 1.0 ? fabs(b_) : 1.0;                                          \
        if (fabs(a_ - b_) <= (tol) * s_) t_pass++;                                            \
        else {                                                                                \
            t_fail++;                                                                         \
            fprintf(stderr, "%s:%d: %s = %.10g, expected %s = %.10g (tol %g)\n", __FILE__,   \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                                 \
        }                                                                                     \
    } while (0)

/* text (an error message) must NOT contain needle: a message about the content of private data
 * names the file and the rule, never the value, its row or position (docs/privacy.md) */
static inline void t_check_lacks(const char *file, int line, const char *text, const char *needle) {
    if (strstr(text, needle) == NULL) t_pass++;
    else {
        t_fail++;
        fprintf(stderr, "%s:%d: message \"%s\" quotes \"%s\"\n", file, line, text, needle);
    }
}

/* FNV-1a (64-bit) of n bytes: a fingerprint of a computed array for known-answer tests */
static inline uint64_t t_fnv64(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ULL;
    return h;
}

/* relative error of vector a against b: ||a-b|| / max(||b||, tiny) */
static inline double t_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}

/* The whole file as a NUL-terminated string (malloc'd: free it), or NULL. */
static inline char *t_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) != NULL) {
        if (fread(buf, 1, (size_t)len, f) == (size_t)len) buf[len] = '\0';
        else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

static inline int t_finish(const char *name) {
    dp_mem_stats m = dp_mem_get();
    if (m.live_blocks != 0) {
        fprintf(stderr, "%s: %zu tracked blocks (%zu bytes) still live at exit\n", name,
                m.live_blocks, m.live_bytes);
        t_fail++;
    }
    printf("%s: %d passed, %d failed\n", name, t_pass, t_fail);
    return t_fail ? 1 : 0;
}
#endif
