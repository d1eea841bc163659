/* dpsgd/precond.h: private Kronecker-factored preconditioning of image features for a linear
 * classifier (docs/scatter.md, "Preconditioning").
 *
 * A linear model trained by DP-SGD on features whose second moment is far from isotropic
 * (the scattering transform's: a few directions carry most of the energy) spends its few
 * noisy steps on those directions. Training on P(x) = s A^-p G(x) B^-p instead, where G is
 * GroupNorm without affine (what the recipe's first layer computes at initialisation),
 * A = sum G G^T (channels x channels) and B = sum G^T G (positions x positions) over the
 * training set, evens the spectrum out; the classifier trained on P(x) is the same kind of
 * linear map of G(x), which dp_precond_fold writes back.
 *
 * A and B are statistics of the private data: dp_precond_fit releases them through the
 * Gaussian mechanism. Each example's G(x) / sqrt(C*H*W) is clipped to Frobenius norm 1, so
 * one example moves A and B by X X^T and X^T X, whose Frobenius norms are at most 1 each: the
 * pair's L2 sensitivity is sqrt(2) (times 1 + 2^-22 (n + 1) for the rounding of the sums to
 * float before the noise). Gaussian noise of std noise_multiplier times that is added to every
 * entry of both upper triangles (then mirrored): one Gaussian mechanism of that noise
 * multiplier on the whole data set (sample rate 1), which the run's accountant must count
 * (dp_train_params.prior_sigma). Everything after the noise (eigenvalues, the scale s, the
 * transform of any data) is post-processing.
 */
#ifndef DPSGD_PRECOND_H
#define DPSGD_PRECOND_H
#include "dpsgd/data.h"
#include "dpsgd/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int groups;              /* GroupNorm's groups of channels (must divide C) */
    double noise_multiplier; /* > 0: the release's noise multiplier z (std z sqrt(2) per entry);
                              * 0: no noise, exact statistics: for the non-private baseline only */
    double power;            /* p: A^-p, B^-p [0.25] */
    double floor;            /* eigenvalues below floor * the largest are raised to it [0.01] */
    int noise_seeded;        /* 0: the noise from the OS-seeded CSPRNG (dpsgd/secure.h); 1: from a
                              * stream of noise_seed (reproducible; as dp_train_params) */
    uint64_t noise_seed;
} dp_precond_params;

/* groups 27 (set it), noise_multiplier 0 (set it), power 0.25, floor 0.01, secret noise */
dp_precond_params dp_precond_default_params(void);

typedef struct {
    int c, hw;      /* channels, positions (H*W) */
    int groups;
    double scale;   /* s */
    double *pa;     /* [c*c] A^-p, symmetric */
    double *pb;     /* [hw*hw] B^-p, symmetric */
    double *a, *b;  /* [c*c], [hw*hw]: the released (noisy) A and B that pa, pb come from */
    double noise_multiplier; /* the release's z: what the run's accountant must record
                              * (dp_train_params.prior_sigma = noise_multiplier) */
} dp_precond;

/* Releases A and B of the features in d (images C x H x W, n >= 1) with noise and computes the
 * transform. An example with a non-finite feature adds nothing (silently: saying so would
 * release that it exists). Errors: DP_ERR_INVALID (groups do not divide C, power, floor or noise
 * multiplier out of range), DP_ERR_RANGE (no eigenvalue of a noisy factor is positive: too much
 * noise for so little data), DP_ERR_NOMEM, DP_ERR_IO (no OS entropy). */
dp_status dp_precond_fit(const dp_dataset *d, const dp_precond_params *pp, dp_precond *out);
/* d->x[i] <- s A^-p G(d->x[i]) B^-p for every example, in place (d must have fit's shape). */
dp_status dp_precond_apply(const dp_precond *pc, dp_dataset *d);
/* The classifier written back: lin_w [k, c*hw] (a linear layer on P(x), PyTorch's [out, in])
 * becomes out_w [k, c*hw], the linear layer that gives the same outputs on G(x):
 * out_w_k = s A^-p W_k B^-p (W_k as a c x hw matrix). The bias is unchanged. DP_ERR_NOMEM. */
dp_status dp_precond_fold(const dp_precond *pc, int k, const float *lin_w, float *out_w);
void dp_precond_free(dp_precond *pc);

#ifdef __cplusplus
}
#endif
#endif
