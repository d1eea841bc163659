/* dpsgd.h: differentially private SGD in C. The one public header.
 *
 * A step of DP-SGD, as this library runs it:
 *   1. Poisson-sample a batch (each example with probability q; batches vary, may be empty);
 *   2. forward the model, keeping what backward needs;
 *   3. first backward: per-sample squared gradient norms, layer by layer (ghost norms where
 *      cheaper, otherwise instantiate one layer's per-sample gradients, norm, free);
 *   4. clip factors R_i = min(1, C (1 - 2^-18) / (||g_i|| + 1e-6)), rounded down to float;
 *   5. second backward of sum_i R_i L_i: the clipped sum of gradients;
 *   6. add N(0, sigma^2 C^2) per coordinate, divide by the expected batch size q N;
 *   7. optimizer step; the accountant records (q, sigma).
 *
 * Parts (each its own header, all included here):
 *   dpsgd/core.h     status codes, tracked allocator, RNG
 *   dpsgd/data.h     IDX and .npy readers, datasets and their validation
 *   dpsgd/privacy.h  Gaussian noise, Poisson sampling
 *   dpsgd/accounting.h  the accountant (history; RDP, PRV, PLD, GDP), sigma calibration
 *   dpsgd/optim.h    SGD (momentum, weight decay), Adam, AdamW
 *   dpsgd/nn.h       layers, models (built-in or from a spec string), clipping engine
 *   dpsgd/train.h    the training loop behind `dpsgd train`
 *   dpsgd/audit.h    one-run privacy auditing behind `dpsgd audit`
 *   dpsgd/io.h       safetensors weights, training checkpoints
 *   dpsgd/secure.h   the default noise source: OS-seeded CSPRNG, hardened noise and sampling
 *   dpsgd/scatter.h  the 2-D scattering transform (fixed public features; FFTW single precision)
 *   dpsgd/precond.h  private preconditioning of image features for a linear classifier
 *
 * Conventions: every fallible call returns dp_status and leaves a message in
 * dp_last_error(); create/destroy for heap handles (destroy(NULL) is a no-op); pointers
 * passed in are borrowed unless a comment says the callee keeps them.
 */
#ifndef DPSGD_H
#define DPSGD_H
#include "dpsgd/core.h"
#include "dpsgd/data.h"
#include "dpsgd/privacy.h"
#include "dpsgd/accounting.h"
#include "dpsgd/optim.h"
#include "dpsgd/nn.h"
#include "dpsgd/train.h"
#include "dpsgd/audit.h"
#include "dpsgd/io.h"
#include "dpsgd/secure.h"
#include "dpsgd/scatter.h"
#include "dpsgd/precond.h"
#endif
