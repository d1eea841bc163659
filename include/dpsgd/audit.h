/* dpsgd/audit.h: empirical privacy auditing in one training run (Steinke, Nasr and
 * Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023).
 *
 * An epsilon is a proof about an idealised algorithm; an implementation bug (noise too small,
 * a layer left unclipped) silently voids it. The audit turns the claim into an experiment:
 *   1. m canaries; each is included in training independently with probability 1/2;
 *   2. one DP-SGD run (the same step as dp_train: Poisson sampling at a fixed rate q,
 *      per-sample clipping to C, noise N(0, sigma^2 C^2), division by the expected batch,
 *      optimizer step, the run's accountant: dp_train's own step function, src/train/step.c, and its
 *      noise source) over the real data plus the included canaries;
 *   3. a membership score per canary from what the run released;
 *   4. guesses: "in" for the r/2 highest scores, "out" for the r/2 lowest, abstain on the rest;
 *   5. the verdict: a test of the claim itself. The accountant certifies delta(eps) for every
 *      eps (its privacy profile), so the run claims f-DP for the trade-off curve f of that
 *      profile (dp_fdp_profile); the f-DP analysis of Mahloujifar et al. (below) gives the
 *      p-value of that claim from the number of correct guesses, and p < 1 - confidence
 *      (Bonferroni over the guess counts) is a "VIOLATION". An honest implementation is
 *      flagged with probability at most 1 - confidence; a violation is evidence of a bug;
 *   6. beside it, empirical lower bounds on epsilon: the largest eps such that an
 *      (eps, delta)-DP run would give at least the observed number of correct guesses with
 *      probability below 1 - confidence (the paper's analysis with delta, and the f-DP one).
 * Testing the whole profile is far more powerful than testing one (eps, delta) point: at the
 * CLI's defaults the audit flags noise scaled by 0.5 (docs/audit.md), which the single-point
 * lower bound did not.
 *
 * Canaries:
 *   DP_CANARY_INPUT     mislabelled examples (copies of images from a pool with a wrong
 *                       label, fixed per canary). Black-box: score = decrease of the canary's
 *                       loss from the initial to the final model.
 *   DP_CANARY_GRADIENT  white-box: canary j is a virtual example whose clipped per-sample
 *                       gradient is C * u_j (u_j a fixed unit vector, +-1/sqrt(k) on k of the
 *                       trainable coordinates, disjoint between canaries while m k <= d); when
 *                       Poisson-sampled it joins the clipped sum exactly as a real sample
 *                       would. With x_t = <released noisy sum - clipped sum of the sampled real
 *                       examples, u_j> / C at step t, score = sum over steps of
 *                       log(1 - q + q exp((x_t - 1/2) / sigma^2)), the log-likelihood ratio of
 *                       "in" against "out" under the claimed mechanism.
 *
 * Two estimators turn the guesses into a lower bound, each at the same confidence:
 *   - Steinke et al. (dp_audit_epsilon_bound): (eps, delta)-DP makes the number of correct
 *     guesses at most Binomial(r, e^eps/(1+e^eps)), plus a delta term;
 *   - f-DP (Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential Privacy in One Run", 2024;
 *     dp_audit_fdp_epsilon_bound): the largest probability of that many correct guesses under
 *     an f-DP mechanism, f the trade-off curve of (eps, delta)-DP or of a Gaussian (mu-GDP).
 * Both are empirical LOWER bounds (evidence against a claim), never privacy guarantees.
 *
 * The switches that break the mechanism on purpose, for the tests, are not part of this API:
 * see src/core/testhooks.h (dp__audit) and the test build of the CLI, dpsgd-testhooks.
 */
#ifndef DPSGD_AUDIT_H
#define DPSGD_AUDIT_H
#include "dpsgd/accounting.h"
#include "dpsgd/core.h"
#include "dpsgd/data.h"
#include "dpsgd/nn.h"
#include "dpsgd/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the bound (pure functions) ------------------------------------------------------- */

/* p-value of the null hypothesis "the run is (eps, delta)-DP" after v correct guesses out of
 * r (abstaining on the other m - r canaries): P[Binomial(r, e^eps/(1+e^eps)) >= v] plus
 * 2 m delta times the largest mean tail max_i P[v - i <= Binomial < v] / i (Steinke et al.,
 * section 5, as in their reference code), capped at 1. Requires 0 <= v <= r <= m, eps >= 0, delta in [0, 1]
 * (DP_ERR_RANGE otherwise). */
dp_status dp_audit_p_value(long m, long r, long v, double eps, double delta, double *p);

/* The epsilon lower bound: the largest eps (bisection, to ~1e-6) whose p-value is below
 * 1 - confidence; 0 when even eps = 0 cannot be rejected. confidence in (0, 1). */
dp_status dp_audit_epsilon_bound(long m, long r, long v, double delta, double confidence, double *eps_lb);

/* The f-DP one-run estimator (Mahloujifar, Melis & Chaudhuri 2024: their recursive bound on the
 * guessing game, as in the authors' code, FDPAnalysisNode of Meta's PrivacyGuard). Curves f: */
typedef enum {
    DP_FDP_APPROX_DP, /* (eps, delta)-DP: f(a) = max(0, 1 - delta - e^eps a, e^-eps (1 - delta - a)) */
    DP_FDP_GAUSSIAN,  /* mu-GDP: f(a) = Phi(Phi^-1(1 - a) - mu) (Dong, Roth & Su 2019) */
    DP_FDP_COUNT
} dp_fdp_curve;

/* The largest probability that k guesses (the other m - k canaries abstained on) contain at
 * least v correct ones, for any mechanism that is f-DP with respect to each canary (each
 * canary included independently with probability 1/2), by the paper's recursion: the mass
 * of "at least i correct" forces, through f, the mass of "at least i - 1 correct", down to
 * i = 0, and the masses may not add up to more than the k/m guesses per canary there are.
 * param: eps for DP_FDP_APPROX_DP (delta is then the curve's delta), mu for DP_FDP_GAUSSIAN
 * (delta unused). Found by bisection to 1e-12 relative. Exact in two cases the tests check:
 * one guess (the best accuracy of one f-DP test) and, for pure DP (delta 0), v = k (the
 * binomial (e^eps/(1+e^eps))^k, Steinke et al.'s value); for v < k it is at least the
 * binomial tail of independent guesses with that accuracy (randomised response attains it).
 * Requires 0 <= v <= k <= m, k >= 1, param finite and >= 0, delta in [0, 1] (DP_ERR_RANGE
 * otherwise; an unknown curve: DP_ERR_INVALID). */
dp_status dp_audit_fdp_p_value(long m, long k, long v, dp_fdp_curve curve, double param, double delta, double *p);

/* The f-DP empirical LOWER bound on epsilon after v correct guesses out of k (m canaries):
 * every curve of the family whose p-value (dp_audit_fdp_p_value) is below beta =
 * 1 - confidence is ruled out at confidence 1 - beta, and the bound is the boundary (found by
 * bisection to ~1e-7): every eps (or mu) below it is ruled out, the first one above is not; 0
 * when even eps = 0 (mu = 0) cannot be ruled out.
 *   DP_FDP_APPROX_DP: *eps_lb directly, at the given delta (a bound for every mechanism, like
 *     dp_audit_epsilon_bound: with delta = 0 it never exceeds that one, which is exact for pure
 *     DP, and equals it when v = k; with delta > 0 it can be larger, because Steinke et al.
 *     pay for delta with a term that grows with m, 2 m delta, while the curve has delta per
 *     canary); *mu_lb (may be NULL) is set to NAN.
 *   DP_FDP_GAUSSIAN: *mu_lb receives the largest mu ruled out and *eps_lb the epsilon of
 *     mu-GDP at delta (the paper's "empirical epsilon"; infinite for delta = 0 and mu > 0).
 *     A lower bound on epsilon only for mechanisms whose trade-off curve is Gaussian
 *     (DP-SGD's is close to one): a mechanism that
 *     is not mu-GDP may still be (eps, delta)-DP at that epsilon, so this number can exceed the
 *     DP_FDP_APPROX_DP one (typically by 1.3-2x at delta 1e-5; mu-GDP implies (eps(mu), delta)-DP,
 *     so it is not below it, which the tests check) and even the claim without any bug.
 * confidence in (0, 1), delta in [0, 1), 0 <= v <= k <= m, k >= 1 (DP_ERR_RANGE otherwise). */
dp_status dp_audit_fdp_epsilon_bound(long m, long k, long v, double delta, double confidence, dp_fdp_curve curve,
                                     double *eps_lb, double *mu_lb);

/* A privacy profile, or any finite part of one: the mechanism is (eps[i], delta[i])-DP for every
 * i at once (an accountant certifies delta(eps) for every eps; dp_accountant_delta_many), hence
 * f-DP for f = max_i f_{eps[i], delta[i]}, the curves of DP_FDP_APPROX_DP. Leaving points out,
 * or raising a delta, only lowers f: the claim stays true, the test loses power. */
typedef struct {
    const double *eps, *delta; /* eps[i] in [0, 700], delta[i] in [0, 1] */
    size_t n;                  /* >= 1 */
} dp_fdp_profile;

/* dp_audit_fdp_p_value for the curve of a profile: the largest probability of at least v
 * correct among k guesses for any mechanism that is (eps[i], delta[i])-DP for every i with
 * respect to each canary. With one point it is dp_audit_fdp_p_value(DP_FDP_APPROX_DP) exactly;
 * with more it is never larger than with any subset. The p-value of the claim "the run is f-DP
 * for its profile's f": the test that decides the audit's verdict (dp_audit_guess_profile).
 * Requires 0 <= v <= k <= m, k >= 1 (DP_ERR_RANGE) and a valid profile (DP_ERR_INVALID when
 * empty, DP_ERR_RANGE for a point out of range). */
dp_status dp_audit_fdp_profile_p_value(long m, long k, long v, const dp_fdp_profile *prof, double *p);

/* ---- the audited run ------------------------------------------------------------------ */

#define DP_CANARY_LIST(X)                                                                     \
    X(DP_CANARY_INPUT, "input")                                                               \
    X(DP_CANARY_GRADIENT, "gradient")

typedef enum {
#define DP__ENUM(name, text) name,
    DP_CANARY_LIST(DP__ENUM)
#undef DP__ENUM
        DP_CANARY_COUNT
} dp_canary_kind;
const char *dp_canary_kind_name(dp_canary_kind k);
dp_status dp_canary_kind_parse(const char *s, dp_canary_kind *out);

typedef struct {
    dp_canary_kind canary;      /* gradient */
    int num_canaries;           /* m; 0 (default): dp_audit_num_canaries */
    int guesses;                /* r; 0 (default): try r = m x {0.02, 0.05, 0.1, 0.2, 0.5, 1}
                                 * (distinct values, at least 2) and keep the best, each
                                 * tested at level (1-confidence)/(number tried): Bonferroni,
                                 * so the reported bound keeps its confidence */
    double confidence;          /* 0.95 */
    dp_clip_mode clipping;      /* ghost */
    double max_grad_norm;       /* C = 0.1 */
    double noise_multiplier;    /* sigma; <= 0: calibrate for target_epsilon (default) */
    double target_epsilon;      /* 3 */
    double delta;               /* 1e-5 */
    int expected_batch;         /* 500: q = expected_batch / (n + m/2) */
    int physical_batch;         /* 0: whole logical batch at once */
    int epochs;                 /* 20 */
    dp_optim_params optim;      /* SGD lr 4, momentum 0.9 (as dp_train) */
    uint64_t seed;              /* 0: the canaries (inclusion, directions, images, labels) */
    dp_accountant_kind accountant; /* PRV, as dp_train: calibrates sigma, reports the claimed epsilon */
    /* noise, Poisson sampling and dropout: as dp_train, from the OS-seeded CSPRNG unless
     * noise_seeded (then from streams of noise_seed: a reproducible audit) */
    int noise_seeded;
    uint64_t noise_seed;
} dp_audit_params;

dp_audit_params dp_audit_default_params(void);

/* The number of canaries a run with these parameters uses: p->num_canaries when set, else 1000
 * input canaries, or one gradient canary per trainable coordinate of the model (the most that
 * stay mutually orthogonal: 26,010 for the default CNN), at most 4 n_train (the run's steps
 * grow with n_train + m/2) and at least 2. */
int dp_audit_num_canaries(const dp_model *model, size_t n_train, const dp_audit_params *p);

typedef struct {
    double epsilon;             /* claimed: the accountant's bound at delta, for the whole run */
    double delta, sigma, q;
    long steps;
    int num_canaries, included; /* m, and how many were drawn "in" */
    long guesses, correct;      /* r and v of the best guess count */
    double eps_lower;           /* empirical lower bound at `confidence` (Steinke et al.) */
    double confidence;
    double p_level;             /* level each guess count was tested at (1-conf, or / count) */
    /* f-DP estimator (dp_audit_fdp_epsilon_bound) on the same guesses at the same level; each
     * curve keeps its own best guess count. Empirical LOWER bounds, reported beside eps_lower;
     * the verdict is the profile test's (below). */
    double fdp_eps_lower;       /* (eps, delta)-DP curve: a bound for any mechanism */
    long fdp_guesses, fdp_correct;
    double gdp_mu_lower;        /* Gaussian curve: mu ruled out, */
    double gdp_eps_lower;       /* and its epsilon at delta (assumes a Gaussian trade-off curve) */
    long gdp_guesses, gdp_correct;
    /* the verdict's test (dp_audit_guess_profile): the p-value of "the run is f-DP for the f of
     * the privacy profile its accountant certifies" (dp_audit_fdp_profile_p_value), the smallest
     * over the guess counts times their number (Bonferroni), capped at 1; the count that gave it;
     * NAN and 0 without a profile (dp_audit_guess) */
    double profile_p;
    long profile_guesses, profile_correct;
    int profile_points;         /* (eps, delta) points of the claimed profile (0: none) */
    int violation;              /* profile_p < 1 - confidence: the claim is rejected at that level */
    double seconds;             /* wall time of the whole audit */
} dp_audit_result;

/* Runs one audited DP-SGD training of `model` (already initialised; it is trained in place)
 * on `train` plus canaries and writes the result. pool (may be NULL: use `train`) supplies
 * the images of input canaries (canary j copies pool row j mod pool->n, label != its own).
 * scores ([m] floats) and in ([m] bytes), optional, receive each canary's score and
 * inclusion. Errors name the parameter (as its field is named); the result is written only on
 * success. */
dp_status dp_audit_run(dp_model *model, const dp_dataset *train, const dp_dataset *pool, const dp_audit_params *p,
                       dp_audit_result *result, float *scores, unsigned char *in);

/* Guessing and bounds from scores and inclusion bits alone: fills guesses, correct, eps_lower,
 * confidence, p_level and the fdp_* / gdp_* fields of *result; profile_p NAN, violation 0. */
dp_status dp_audit_guess(const float *scores, const unsigned char *in, int m, int guesses, double delta,
                         double confidence, dp_audit_result *result);

/* dp_audit_guess plus the verdict (what dp_audit_run does after training): on the same guess
 * counts, the test of the claimed profile at level 1 - confidence (each count at p_level):
 * profile_p, profile_guesses, profile_correct, and violation = 1 when the claim is rejected. An
 * honest run whose profile is true gives a violation with probability at most 1 - confidence. */
dp_status dp_audit_guess_profile(const float *scores, const unsigned char *in, int m, int guesses, double delta,
                                 double confidence, const dp_fdp_profile *claim, dp_audit_result *result);

#ifdef __cplusplus
}
#endif
#endif
