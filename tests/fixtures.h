/* tests/fixtures.h: helpers shared by several tests (synthetic datasets, seeded models, the
 * accountant.json number scan). All static inline, so a test that includes this header and
 * uses only some of them gets no unused-function warnings. */
#ifndef DP_TEST_FIXTURES_H
#define DP_TEST_FIXTURES_H
#include <stdint.h>

#include "test.h"

/* A dataset of n rows of shape c x h x w with labels in [0, k), all tracked memory. The
 * rows are N(0,1) plus a class-dependent shift `sep` on every coordinate (sign +/- by an
 * alternating per-class pattern), so sep > 0 makes the classes separable. */
static inline void make_ds(dp_dataset *d, size_t n, int c, int h, int w, int k, double sep,
                           uint64_t seed) {
    dp_rng r;
    dp_rng_seed(&r, seed);
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = c;
    d->h = h;
    d->w = w;
    d->dim = (size_t)c * h * w;
    d->n_classes = k;
    d->x = dp_alloc(sizeof(float) * n * d->dim);
    d->y = dp_alloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) {
        int y = (int)(i % (size_t)k);
        d->y[i] = y;
        for (size_t j = 0; j < d->dim; j++) {
            /* class 0: +sep everywhere; class 1: -sep; class 2: alternating signs, ... */
            double mu = 0;
            if (sep != 0) {
                if (y == 0) mu = sep;
                else if (y == 1) mu = -sep;
                else mu = ((j + (size_t)y) % 2 ? sep : -sep);
            }
            d->x[i * d->dim + j] = (float)(mu + dp_rng_normal(&r));
        }
    }
}

/* The model `spec` for c x h x w inputs, initialised from `seed`; exits 2 if spec is bad. */
static inline dp_model *new_model(const char *spec, int c, int h, int w, uint64_t seed) {
    dp_model *m = NULL;
    if (dp_model_create(spec, c, h, w, &m) != DP_OK) {
        fprintf(stderr, "dp_model_create(%s): %s\n", spec, dp_last_error());
        exit(2);
    }
    dp_rng r;
    dp_rng_seed(&r, seed);
    dp_model_init(m, &r);
    return m;
}

/* Tiny JSON scan (the reference files are small and regular): finds "key" at or after p
 * (before end, if end != NULL), parses the number after the colon into *v; returns the
 * position after the number, or NULL. */
static inline const char *json_num(const char *p, const char *end, const char *key, double *v) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *k = strstr(p, pat);
    if (!k || (end && k >= end)) return NULL;
    const char *c = strchr(k + strlen(pat), ':');
    if (!c) return NULL;
    char *after;
    *v = strtod(c + 1, &after);
    return after == c + 1 ? NULL : after;
}
/* The report of accountant k for `steps` steps at (q, sigma): a one-entry history through the
 * one epsilon call (dp_accountant_epsilon). Errors from either call; *r written on success only. */
static inline dp_status t_epsilon1(dp_accountant_kind k, double q, double sigma, long steps, double delta,
                                   dp_epsilon_report *r) {
    dp_accountant *a = NULL;
    dp_status st = dp_accountant_create(&a);
    if (!st) st = dp_accountant_step(a, q, sigma, steps);
    if (!st) st = dp_accountant_epsilon(a, k, delta, NULL, r);
    dp_accountant_destroy(a);
    return st;
}

/* a copy of the model's parameters (dp_free it) */
static inline float *copy_params(dp_model *m) {
    size_t n = dp_model_num_params(m);
    float *p = dp_alloc(sizeof(float) * n);
    memcpy(p, dp_model_params(m), sizeof(float) * n);
    return p;
}

/* whether the last error message contains s (says which it was when not) */
static inline int msg_has(const char *s) {
    const char *e = dp_last_error();
    int ok = e && strstr(e, s) != NULL;
    if (!ok) fprintf(stderr, "  message \"%s\" does not contain \"%s\"\n", e ? e : "(null)", s);
    return ok;
}

#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200809L && defined(DP_BINARY_DIR) /* mkdtemp */
/* a new directory DP_BINARY_DIR/NAME.XXXXXX in dir (cap bytes); 0 when it could not be made */
static inline int t_scratch_dir(char *dir, size_t cap, const char *name) {
    snprintf(dir, cap, "%s/%s.XXXXXX", DP_BINARY_DIR, name);
    return mkdtemp(dir) != NULL;
}
#endif

/* removes a directory and what it holds (rm -rf); 0 on success */
static inline int t_remove_dir(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

#endif
