/* optim.c: SGD (momentum, dampening, Nesterov, L2), Adam and AdamW over one float block,
 * matching PyTorch's torch.optim single-tensor code paths in float32.
 *
 * Shapes: n = number of parameters; params, grad, mask: [n]; state: [k*n] with k = 0 or 1
 * (SGD) or 2 (Adam/AdamW: m then v).
 *
 * Element arithmetic is float with the scalar coefficients rounded to float once, as
 * PyTorch's CPU kernels do; scalars derived from the step count (bias corrections, step
 * size) are computed in double, as PyTorch computes them in Python floats. Every loop is
 * elementwise, so results do not depend on the number of threads.
 */
#include "dpsgd/optim.h"
#include "train/step.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Below this many parameters a loop runs on one thread (a parallel region costs more). */
#define DP_OPTIM_PAR_MIN ((size_t)1 << 16)

static const char *const optim_names[] = {"sgd", "adam", "adamw"};
_Static_assert(sizeof optim_names / sizeof optim_names[0] == DP_OPT_COUNT,
               "every dp_optim_kind needs a name");

struct dp_optim {
    dp_optim_params p;
    size_t n;
    size_t state_floats; /* 0, n or 2n */
    float *state;        /* [state_floats], one tracked block, NULL when empty */
    long t;              /* steps taken */
};

const char *dp_optim_name(dp_optim_kind k) {
    if ((int)k < 0 || k >= DP_OPT_COUNT) return "unknown";
    return optim_names[k];
}

/* ASCII case-insensitive equality (strcasecmp is POSIX, not C17). */
static int name_eq(const char *a, const char *b) {
    for (;; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y - 'A' + 'a');
        if (x != y) return 0;
        if (!x) return 1;
    }
}

dp_status dp_optim_parse(const char *name, dp_optim_kind *out) {
    if (!name || !out) return dp_fail(DP_ERR_INVALID, "dp_optim_parse: NULL argument");
    for (int k = 0; k < DP_OPT_COUNT; k++) {
        if (name_eq(name, optim_names[k])) {
            *out = (dp_optim_kind)k;
            return DP_OK;
        }
    }
    return dp_fail(DP_ERR_INVALID, "optim.kind \"%.64s\": unknown optimizer (choices: sgd, adam, adamw)",
                   name);
}

dp_optim_params dp_optim_default_params(dp_optim_kind kind) {
    dp_optim_params p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    p.lr = kind == DP_OPT_SGD ? 0.01 : 1e-3;
    p.momentum = 0.0;
    p.dampening = 0.0;
    p.nesterov = 0;
    p.weight_decay = kind == DP_OPT_ADAMW ? 1e-2 : 0.0;
    p.beta1 = 0.9;
    p.beta2 = 0.999;
    p.eps = 1e-8;
    return p;
}

/* Checks p; on failure sets the message and returns the status. */
static dp_status check_params(const dp_optim_params *p) {
    if ((int)p->kind < 0 || p->kind >= DP_OPT_COUNT)
        return dp_fail(DP_ERR_INVALID, "optimizer kind %d: must be one of sgd, adam, adamw",
                       (int)p->kind);
    if (!(isfinite(p->lr) && p->lr >= 0.0))
        return dp_fail(DP_ERR_RANGE, "lr %g: must be finite and >= 0", p->lr);
    if (!(isfinite(p->weight_decay) && p->weight_decay >= 0.0))
        return dp_fail(DP_ERR_RANGE, "weight_decay %g: must be finite and >= 0", p->weight_decay);
    if (p->kind == DP_OPT_SGD) {
        if (!(p->momentum >= 0.0 && p->momentum < 1.0))
            return dp_fail(DP_ERR_RANGE, "momentum %g: must be in [0, 1)", p->momentum);
        if (!(p->dampening >= 0.0 && p->dampening <= 1.0))
            return dp_fail(DP_ERR_RANGE, "dampening %g: must be in [0, 1]", p->dampening);
        if (p->nesterov && !(p->momentum > 0.0 && p->dampening == 0.0))
            return dp_fail(DP_ERR_RANGE,
                           "nesterov: needs momentum > 0 and dampening 0 (got %g and %g)",
                           p->momentum, p->dampening);
    } else {
        if (!(p->beta1 >= 0.0 && p->beta1 < 1.0))
            return dp_fail(DP_ERR_RANGE, "beta1 %g: must be in [0, 1)", p->beta1);
        if (!(p->beta2 >= 0.0 && p->beta2 < 1.0))
            return dp_fail(DP_ERR_RANGE, "beta2 %g: must be in [0, 1)", p->beta2);
        if (!(isfinite(p->eps) && p->eps > 0.0))
            return dp_fail(DP_ERR_RANGE, "eps %g: must be finite and > 0", p->eps);
    }
    return DP_OK;
}

dp_status dp_optim_create(const dp_optim_params *p, size_t n, dp_optim **out) {
    if (!p || !out) return dp_fail(DP_ERR_INVALID, "dp_optim_create: NULL argument");
    dp_status s = check_params(p);
    if (s != DP_OK) return s;

    size_t k = p->kind == DP_OPT_SGD ? (p->momentum > 0.0 ? 1 : 0) : 2;
    if (k && n > SIZE_MAX / sizeof(float) / k)
        return dp_fail(DP_ERR_NOMEM, "optimizer state for %zu parameters is too large", n);

    dp_optim *o = dp_alloc(sizeof *o);
    if (!o) return DP_ERR_NOMEM;
    memset(o, 0, sizeof *o);
    o->p = *p;
    o->n = n;
    o->state_floats = k * n;
    o->state = NULL;
    o->t = 0;
    if (o->state_floats) {
        o->state = dp_calloc(o->state_floats, sizeof(float));
        if (!o->state) {
            dp_free(o);
            return DP_ERR_NOMEM;
        }
    }
    *out = o;
    return DP_OK;
}

void dp_optim_destroy(dp_optim *o) {
    if (!o) return;
    dp_free(o->state);
    dp_free(o);
}

/* ---- the updates ----------------------------------------------------------------------
 * Each loop is written once with the mask test inside; a frozen coordinate is skipped before
 * anything is read or written. The loops are inlined twice: with the mask for a range that has
 * frozen coordinates, and with mask NULL (the test folded away, so gcc vectorises the loop;
 * the scalar one was a third of a large model's non-private step at batch 32, docs/design.md)
 * for the usual range with none. Element by
 * element the same float operations either way (ISO C mode: no contraction into FMAs). */
#define DP_INLINE static inline __attribute__((always_inline))

/* mask, or NULL where the range [lo, hi) has no frozen coordinate */
static const unsigned char *range_mask(const unsigned char *mask, size_t lo, size_t hi) {
    return mask && memchr(mask + lo, 0, hi - lo) ? mask : NULL;
}

/* SGD, PyTorch _single_tensor_sgd:
 *   d = g + wd*p; buf = first ? d : mom*buf + (1-damp)*d; d = nesterov ? d + mom*buf : buf;
 *   p = p - lr*d */
/* The update of coordinates [lo, hi) at step t, in one thread: what dp_optim_step does to
 * them (dp_optim_step runs these ranges in parallel; the private step runs them right after a
 * block's noise, src/train/step.c). Element by element the same operations either way. */
DP_INLINE void sgd_loop(dp_optim *o, long t, float *restrict w, const float *restrict g,
                        const unsigned char *restrict mask, size_t lo, size_t hi) {
    const float lr = (float)o->p.lr, wd = (float)o->p.weight_decay;
    const float mom = (float)o->p.momentum, damp1 = (float)(1.0 - o->p.dampening);
    const int use_wd = o->p.weight_decay != 0.0, use_mom = o->p.momentum != 0.0;
    const int nesterov = o->p.nesterov, first = t == 1;
    float *restrict buf = o->state; /* [n] or NULL */
    for (size_t i = lo; i < hi; i++) {
        if (mask && !mask[i]) continue;
        float d = g[i];
        if (use_wd) d = d + wd * w[i];
        if (use_mom) {
            float b;
            if (first) b = d;
            else {
                b = buf[i] * mom;
                b = b + damp1 * d;
            }
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        w[i] = w[i] + (-lr) * d;
    }
}

DP_INLINE void adam_loop(dp_optim *o, long t, float *restrict w, const float *restrict g,
                         const unsigned char *restrict mask, size_t lo, size_t hi) {
    const size_t n = o->n;
    const double bc1 = 1.0 - pow(o->p.beta1, (double)t);
    const double bc2 = 1.0 - pow(o->p.beta2, (double)t);
    const float step_size = (float)(o->p.lr / bc1);
    const float bc2s = (float)sqrt(bc2);
    const float eps = (float)o->p.eps;
    const float w1 = (float)(1.0 - o->p.beta1); /* lerp weight */
    const float b2 = (float)o->p.beta2, c2 = (float)(1.0 - o->p.beta2);
    const int decoupled = o->p.kind == DP_OPT_ADAMW;
    const int use_wd = o->p.weight_decay != 0.0;
    const float wd = (float)o->p.weight_decay;
    const float shrink = (float)(1.0 - o->p.lr * o->p.weight_decay);
    float *restrict m = o->state;      /* [n] */
    float *restrict v = o->state + n;  /* [n] */
    for (size_t i = lo; i < hi; i++) {
        if (mask && !mask[i]) continue;
        float x = w[i];
        float gi = g[i];
        if (use_wd) {
            if (decoupled) x = x * shrink;
            else gi = gi + wd * x;
        }
        /* torch.lerp(start, end, weight): weight < 0.5 ? start + weight*(end-start)
         *                                             : end - (end-start)*(1-weight) */
        float mi = m[i];
        float diff = gi - mi;
        mi = w1 < 0.5f ? mi + w1 * diff : gi - diff * (1.0f - w1);
        float vi = v[i] * b2;
        vi = vi + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2s + eps;
        w[i] = x + (-step_size) * mi / denom; /* addcdiv: self + value*t1/t2 */
    }
}

void dp__optim_range(dp_optim *o, long t, float *params, const float *grad, const unsigned char *mask, size_t lo,
                     size_t hi) {
    const unsigned char *m = range_mask(mask, lo, hi);
    if (o->p.kind == DP_OPT_SGD) {
        if (m) sgd_loop(o, t, params, grad, m, lo, hi);
        else sgd_loop(o, t, params, grad, NULL, lo, hi);
    } else {
        if (m) adam_loop(o, t, params, grad, m, lo, hi);
        else adam_loop(o, t, params, grad, NULL, lo, hi);
    }
}

void dp__optim_advance(dp_optim *o) {
    DP_ASSERT(o->t < LONG_MAX);
    o->t++;
}

enum { OPTIM_CHUNK = 4096 };

void dp_optim_step(dp_optim *o, float *params, const float *grad, const unsigned char *mask) {
    DP_ASSERT(o);
    DP_ASSERT(o->n == 0 || (params && grad));
    DP_ASSERT(o->t < LONG_MAX);
    const long t = o->t + 1; /* this step's number, 1 for the first */
    const size_t n = o->n, nc = (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
#pragma omp parallel for schedule(static) if (n > DP_OPTIM_PAR_MIN)
    for (size_t c = 0; c < nc; c++)
        dp__optim_range(o, t, params, grad, mask, c * OPTIM_CHUNK, c * OPTIM_CHUNK + OPTIM_CHUNK < n ? c * OPTIM_CHUNK + OPTIM_CHUNK : n);
    o->t = t;
}

void dp_optim_set_lr(dp_optim *o, double lr) {
    DP_ASSERT(o);
    DP_ASSERT(isfinite(lr) && lr >= 0.0);
    o->p.lr = lr;
}

double dp_optim_lr(const dp_optim *o) {
    DP_ASSERT(o);
    return o->p.lr;
}

size_t dp_optim_state_floats(const dp_optim *o) {
    DP_ASSERT(o);
    return o->state_floats;
}

float *dp_optim_state(dp_optim *o) {
    DP_ASSERT(o);
    return o->state;
}

long dp_optim_steps(const dp_optim *o) {
    DP_ASSERT(o);
    return o->t;
}

void dp_optim_set_steps(dp_optim *o, long t) {
    DP_ASSERT(o);
    DP_ASSERT(t >= 0);
    o->t = t;
}
