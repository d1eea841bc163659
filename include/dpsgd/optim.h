/* dpsgd/optim.h: optimizers over one contiguous parameter block: SGD (momentum, dampening,
 * Nesterov, weight decay), Adam and AdamW, with the semantics of PyTorch's torch.optim.SGD,
 * Adam and AdamW (float32), so a run here and a run there agree to float rounding.
 *
 * Usage:
 *     dp_optim_params p = dp_optim_default_params(DP_OPT_ADAM);
 *     p.lr = 3e-4;
 *     dp_optim *o;
 *     if (dp_optim_create(&p, n, &o) != DP_OK) { ... dp_last_error() ... }
 *     for (...) dp_optim_step(o, params, grad, NULL);   // params[n], grad[n]
 *     dp_optim_destroy(o);
 *
 * The update, per coordinate i, with t the step number (1 for the first step):
 *   SGD:   d = g + wd*p;  if momentum: b = (t == 1) ? d : momentum*b + (1 - dampening)*d,
 *          d = nesterov ? d + momentum*b : b;   p -= lr*d
 *   Adam:  g += wd*p (L2);  m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2;
 *          p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)
 *   AdamW: p *= 1 - lr*wd (decoupled), then the Adam update without the L2 term.
 * Element arithmetic is float32 as in PyTorch; scalars (bias corrections, step sizes) are
 * computed in double. Results do not depend on the number of OpenMP threads.
 *
 * State: all of an optimizer's state lives in one tracked float block so checkpoints write
 * it in one go: SGD with momentum > 0: the momentum buffer (n floats); SGD without momentum:
 * none (0 floats, dp_optim_state returns NULL); Adam/AdamW: the first moments m (n floats)
 * followed by the second moments v (n floats). The step count t is kept beside it.
 *
 * Frozen coordinates: a mask of n bytes, 0 = frozen, leaves both the parameter and its state
 * bit-for-bit unchanged (no weight decay either). The step count is shared by all
 * coordinates, so to match PyTorch (which skips a parameter that has no gradient) keep the
 * mask the same from the first step on.
 */
#ifndef DPSGD_OPTIM_H
#define DPSGD_OPTIM_H

#include "dpsgd/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DP_OPT_SGD, DP_OPT_ADAM, DP_OPT_ADAMW, DP_OPT_COUNT } dp_optim_kind;

/* Name of an optimizer kind: "sgd", "adam", "adamw"; "unknown" for a value out of range.
 * A static string, never NULL. */
const char *dp_optim_name(dp_optim_kind k);

/* Parses an optimizer name (as dp_optim_name writes it; ASCII case ignored) into *out.
 * DP_ERR_INVALID, with a message naming the value and listing the choices, if unknown. */
dp_status dp_optim_parse(const char *name, dp_optim_kind *out);

typedef struct {
    dp_optim_kind kind;
    double lr;            /* learning rate, >= 0 and finite */
    double momentum;      /* SGD: in [0, 1); 0 = no momentum buffer */
    double dampening;     /* SGD, PyTorch semantics (not applied on the first step); [0, 1] */
    int nesterov;         /* SGD: Nesterov momentum; needs momentum > 0 and dampening 0 */
    double weight_decay;  /* >= 0. SGD and Adam: L2, wd*p added to the gradient;
                           * AdamW: decoupled, p *= 1 - lr*wd before the Adam update */
    double beta1, beta2;  /* Adam/AdamW: moment decay rates, each in [0, 1) */
    double eps;           /* Adam/AdamW: added to the denominator, > 0 */
} dp_optim_params;

/* PyTorch defaults for the kind. SGD: lr 0.01, momentum 0, dampening 0, no Nesterov, wd 0.
 * Adam: lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0. AdamW: as Adam with wd 1e-2.
 * Fields a kind ignores are still filled with these values (betas/eps for SGD, zeros for
 * momentum/dampening for Adam), so changing .kind afterwards gives a valid set. */
dp_optim_params dp_optim_default_params(dp_optim_kind kind);

/* Opaque optimizer handle. */
typedef struct dp_optim dp_optim;

/* Creates an optimizer for n parameters (one contiguous block), its state zeroed and its step
 * count 0. *p is copied (not kept). Errors: DP_ERR_INVALID (NULL pointers, unknown kind),
 * DP_ERR_RANGE (a parameter out of range; the message names its field, e.g.
 * "momentum 1.5: must be in [0, 1)"), DP_ERR_NOMEM. *out is written only on success. */
dp_status dp_optim_create(const dp_optim_params *p, size_t n, dp_optim **out);

/* Frees the optimizer and its state. NULL is a no-op. */
void dp_optim_destroy(dp_optim *o);

/* One step: params[n] -= update(grad[n]), and the step count goes up by one.
 * mask: NULL (all coordinates train), or n bytes where 0 marks a frozen coordinate whose
 * parameter and state stay bit-for-bit unchanged. params is updated in place; grad and mask
 * are read only and not kept. params and grad must not overlap. */
void dp_optim_step(dp_optim *o, float *params, const float *grad, const unsigned char *mask);

/* Changes the learning rate for the following steps (schedules). lr must be >= 0 and finite
 * (checked with DP_ASSERT: validate user input before). */
void dp_optim_set_lr(dp_optim *o, double lr);
/* The current learning rate. */
double dp_optim_lr(const dp_optim *o);

/* ---- state, for checkpoints ----
 * The state is one float block of dp_optim_state_floats() floats (layout above) plus the step
 * count. To save: write dp_optim_state(o)[0..floats) and dp_optim_steps(o). To restore into
 * an optimizer created with the same params and n: copy the floats into dp_optim_state(o) and
 * call dp_optim_set_steps(o, t). */
size_t dp_optim_state_floats(const dp_optim *o);
/* Borrowed pointer into the optimizer (valid until dp_optim_destroy); NULL when the state has
 * no floats. Writable, for restoring. */
float *dp_optim_state(dp_optim *o);
/* Number of steps taken (or set). */
long dp_optim_steps(const dp_optim *o);
/* Sets the step count (t >= 0, checked with DP_ASSERT); used when restoring a checkpoint. */
void dp_optim_set_steps(dp_optim *o, long t);

#ifdef __cplusplus
}
#endif
#endif
