/* audit.c: the audited DP-SGD run of one-run privacy auditing (Steinke, Nasr, Jagielski 2023):
 * input-space or white-box gradient canaries, the run through the one private step
 * (src/train/step.c, with the canaries' hooks), their scores, and the verdict from the statistics of
 * src/privacy/audit_stats.c (the p-value and epsilon bound, the f-DP estimator, the test of the
 * accountant's claimed profile). See dpsgd/audit.h and docs/audit.md. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dpsgd/audit.h"
#include "dpsgd/privacy.h"
#include "dpsgd/train.h"
#include "core/internal.h"
#include "train/step.h"
#include "core/testhooks.h"

static const char *const canary_names[] = {
#define DP__NAME(name, text) text,
    DP_CANARY_LIST(DP__NAME)
#undef DP__NAME
};
_Static_assert(sizeof canary_names / sizeof canary_names[0] == DP_CANARY_COUNT, "canary kind without a name");

const char *dp_canary_kind_name(dp_canary_kind k) {
    return (unsigned)k < DP_CANARY_COUNT ? canary_names[k] : "unknown";
}

dp_status dp_canary_kind_parse(const char *s, dp_canary_kind *out) {
    for (int k = 0; s && k < DP_CANARY_COUNT; k++)
        if (!strcasecmp(s, canary_names[k])) {
            *out = (dp_canary_kind)k;
            return DP_OK;
        }
    return dp_fail(DP_ERR_INVALID, "canary \"%s\": expected input or gradient", s ? s : "(null)");
}

/* ---- the audited run ------------------------------------------------------------------ */

dp_audit_params dp_audit_default_params(void) {
    dp_audit_params p;
    memset(&p, 0, sizeof p);
    p.canary = DP_CANARY_GRADIENT;
    p.num_canaries = 0; /* as many as the model allows: dp_audit_num_canaries */
    p.confidence = 0.95;
    p.clipping = DP_CLIP_GHOST;
    p.max_grad_norm = 0.1;
    p.target_epsilon = 3.0;
    p.delta = 1e-5;
    p.expected_batch = 500;
    p.epochs = 20;
    p.optim = dp_optim_default_params(DP_OPT_SGD);
    p.optim.lr = 4.0;
    p.optim.momentum = 0.9;
    p.accountant = DP_ACCT_PRV;
    return p;
}

int dp_audit_num_canaries(const dp_model *model, size_t n_train, const dp_audit_params *p) {
    if (p->num_canaries != 0) return p->num_canaries;
    if (p->canary == DP_CANARY_INPUT || !model) return 1000;
    /* Gradient canaries cost almost nothing themselves, and the test's power grows with their
     * number (more guesses at the same accuracy), up to one per trainable coordinate, where
     * they stop being orthogonal (each then sees another's signal as noise). The run's steps
     * grow with n + m/2 (q = B / (n + m/2)), so m is capped at 4 n: at most three times the
     * steps of the real rows alone. */
    const unsigned char *mask = dp_model_trainable_mask(model);
    const size_t np = dp_model_num_params(model);
    size_t d = 0;
    for (size_t t = 0; t < np; t++) d += mask[t] != 0;
    size_t m = d < 4 * n_train ? d : 4 * n_train;
    if (m > 10000000) m = 10000000;
    return m < 2 ? 2 : (int)m;
}

/* What the step's hooks need (src/train/step.h): the rows of the real data and of the input
 * canaries, and the gradient canaries sampled in this step. */
typedef struct {
    const dp_dataset *tr, *pool;
    const size_t *src;  /* input canary j copies pool row src[j] ... */
    const int32_t *lab; /* ... with the wrong label lab[j] */
    const size_t *can;  /* gradient canaries sampled this step (indices j), ncan of them */
    size_t ncan;
    const size_t *supp; /* canary j: coordinates supp[j kc ..], signs sgn[j kc ..] */
    const float *sgn;
    int kc;
    float norm;         /* a gradient canary's norm: C (times the test switch) */
    float *real;        /* the clipped sum of the real examples, before the canaries */
    double *llr;        /* per canary: sum over steps of the log-likelihood ratio (below) */
    double expected;
    int mc;
    double inv_c, inv_s2, q; /* 1/C, 1/sigma^2 (the sigma the accountant records), q */
} audit_hooks;

static void audit_row(void *user, size_t e, float *x, int32_t *y, float *t) {
    (void)t; /* classification only (dp_audit refuses regression targets) */
    const audit_hooks *h = user;
    const size_t n = h->tr->n, dim = h->tr->dim;
    memcpy(x, e < n ? h->tr->x + e * dim : h->pool->x + h->src[e - n] * dim, sizeof(float) * dim);
    *y = e < n ? h->tr->y[e] : h->lab[e - n];
}

/* gradient canaries join the clipped sum as clipped real samples would (norm C) */
static dp_status audit_clipped(void *user, float *grad, size_t np) {
    audit_hooks *h = user;
    if (!h->llr) return DP_OK;
    memcpy(h->real, grad, sizeof(float) * np);
    for (size_t i = 0; i < h->ncan; i++) {
        const size_t *sj = h->supp + h->can[i] * (size_t)h->kc;
        const float *gj = h->sgn + h->can[i] * (size_t)h->kc;
        for (int c = 0; c < h->kc; c++) grad[sj[c]] += h->norm * gj[c];
    }
    return DP_OK;
}

/* The score of a gradient canary. At step t the auditor sees x_t = <released * (q n) - real
 * clipped sum, u_j> / C: the canary's own contribution (1 when sampled, 0 otherwise) plus
 * N(0, sigma^2) noise; the other canaries are orthogonal to u_j. Under the claimed mechanism x_t
 * is N(0, sigma^2) for a canary left out and the mixture (1-q) N(0, sigma^2) + q N(1, sigma^2)
 * for one put in, independently over the steps (fresh noise and sampling each step), so the
 * sum of the per-step log-likelihood ratios log(1 - q + q e^{(x_t - 1/2)/sigma^2}) is the most
 * powerful statistic for in versus out (Neyman-Pearson) against the very mechanism the
 * accountant describes. It uses the claimed sigma and q only, never whether the canary was
 * sampled. (The plain sum of the x_t, the earlier score, ignores that a sampled step stands out:
 * it caught noise x 0.5 in 4 of 5 simulated default audits where this caught 20 of 20.) */
static dp_status audit_released(void *user, const float *grad, size_t np) {
    audit_hooks *h = user;
    (void)np;
    if (!h->llr) return DP_OK;
    const int kc = h->kc;
    for (int j = 0; j < h->mc; j++) {
        const size_t *sj = h->supp + (size_t)j * kc;
        const float *gj = h->sgn + (size_t)j * kc;
        double x = 0;
        for (int c = 0; c < kc; c++) x += ((double)grad[sj[c]] * h->expected - h->real[sj[c]]) * gj[c];
        const double a = (x * h->inv_c - 0.5) * h->inv_s2;
        /* log(1 - q + q e^a) without overflow: a + log(q + (1 - q) e^-a) for a > 0 */
        h->llr[j] += a > 0 ? a + log(h->q + (1 - h->q) * exp(-a)) : log1p(h->q * expm1(a));
    }
    return DP_OK;
}

/* Per-sample losses of the m input canaries under the current model (no training mode). */
static dp_status canary_losses(dp_model *m, const dp_dataset *pool, const size_t *src, const int32_t *lab, int mc,
                               float *xb, size_t cap, float *loss) {
    const size_t dim = pool->dim;
    const int K = dp_model_output_size(m);
    for (int off = 0; off < mc; off += (int)cap) {
        int B = mc - off < (int)cap ? mc - off : (int)cap;
        for (int i = 0; i < B; i++) memcpy(xb + (size_t)i * dim, pool->x + src[off + i] * dim, sizeof(float) * dim);
        const float *z;
        dp_status st = dp_model_forward(m, xb, B, 0, NULL, &z);
        if (st == DP_OK) st = dp_loss_xent(z, lab + off, B, K, loss + off, NULL);
        if (st != DP_OK) return st;
    }
    return DP_OK;
}


dp_status dp_audit_run(dp_model *model, const dp_dataset *tr, const dp_dataset *pool, const dp_audit_params *p,
                       dp_audit_result *result, float *scores_out, unsigned char *in_out) {
    return dp__audit(model, tr, pool, p, NULL, result, scores_out, in_out);
}

/* dp_audit_run with the test switches of src/core/testhooks.h (t == NULL: none) */
dp_status dp__audit(dp_model *model, const dp_dataset *tr, const dp_dataset *pool, const dp_audit_params *p,
                    const dp__audit_test *hooks, dp_audit_result *result, float *scores_out, unsigned char *in_out) {
    const double t0 = dp__now_s();
    const double noise_scale = hooks ? hooks->noise_scale : 1.0, canary_scale = hooks ? hooks->canary_scale : 1.0;
    if (!pool) pool = tr;
    const size_t n = tr->n, dim = tr->dim, np = dp_model_num_params(model);
    const int K = dp_model_output_size(model), mc = dp_audit_num_canaries(model, n, p);
    const int input = p->canary == DP_CANARY_INPUT;
    if ((unsigned)p->canary >= DP_CANARY_COUNT) return dp_fail(DP_ERR_INVALID, "audit: unknown canary kind");
    if (n == 0) return dp_fail(DP_ERR_INVALID, "training set is empty");
    if (tr->t || (pool && pool->t))
        return dp_fail(DP_ERR_UNSUPPORTED, "audit: regression targets are not supported (the canaries are labelled "
                       "examples scored by cross-entropy)");
    if (dim != dp_model_input_size(model))
        return dp_fail(DP_ERR_INVALID, "training set rows have %zu features but the model expects %zu", dim,
                       dp_model_input_size(model));
    if (mc < 2 || mc > 10000000) return dp_fail(DP_ERR_RANGE, "num_canaries %d: must be in 2..10000000", mc);
    if (p->guesses < 0 || p->guesses > mc) return dp_fail(DP_ERR_RANGE, "guesses %d: must be in 0..%d", p->guesses, mc);
    if (!(p->confidence > 0 && p->confidence < 1))
        return dp_fail(DP_ERR_RANGE, "confidence %g: must be in (0, 1)", p->confidence);
    if (p->epochs < 1) return dp_fail(DP_ERR_RANGE, "epochs %d: must be >= 1", p->epochs);
    if (p->physical_batch < 0) return dp_fail(DP_ERR_RANGE, "physical_batch %d: must be >= 0", p->physical_batch);
    if (!(p->max_grad_norm > 0) || !isfinite(p->max_grad_norm))
        return dp_fail(DP_ERR_RANGE, "max_grad_norm %g: must be a positive finite number", p->max_grad_norm);
    if (!(noise_scale >= 0) || !isfinite(noise_scale))
        return dp_fail(DP_ERR_RANGE, "noise_scale %g: must be >= 0 and finite", noise_scale);
    if (!(canary_scale > 0) || !isfinite(canary_scale))
        return dp_fail(DP_ERR_RANGE, "canary_scale %g: must be > 0 and finite", canary_scale);
    if (input) {
        if (K < 2) return dp_fail(DP_ERR_INVALID, "input canaries need a model with at least 2 outputs");
        if (pool->n == 0 || pool->dim != dim)
            return dp_fail(DP_ERR_INVALID, "canary pool: %zu rows of %zu features (need rows of %zu)", pool->n,
                           pool->dim, dim);
        for (size_t i = 0; i < pool->n; i++)
            if (pool->y[i] < 0 || pool->y[i] >= K) /* the pool may be private: no value, no row */
                return dp_fail(DP_ERR_RANGE, "canary pool: a label is outside 0..%d", K - 1);
    }
    /* the sample rate is fixed before the inclusions are drawn: q = B / (n + m/2) */
    const double n_exp = (double)n + 0.5 * mc;
    if (p->expected_batch < 1 || (double)p->expected_batch > n_exp)
        return dp_fail(DP_ERR_RANGE, "expected_batch %d: must be in 1..%.0f (training set + half the canaries)",
                       p->expected_batch, floor(n_exp));
    if (!(p->delta > 0 && p->delta < 1.0 / n_exp))
        return dp_fail(DP_ERR_RANGE, "delta %g: must be in (0, 1/n) = (0, %g)", p->delta, 1.0 / n_exp);
    const double q = (double)p->expected_batch / n_exp;
    const int spe = dp_train_steps_per_epoch((size_t)llround(n_exp), p->expected_batch);
    const long steps = (long)spe * p->epochs;
    double sigma = p->noise_multiplier;
    dp_status st = DP_OK;
    if (!(sigma > 0) &&
        (st = dp_calibrate_sigma_kind(p->accountant, p->target_epsilon, p->delta, q, steps, 0.01, &sigma)) != DP_OK)
        return st;

    dp_accountant *acc = NULL;
    dp_optim *opt = NULL;
    size_t *members = NULL, *idx = NULL, *src = NULL, *can = NULL;
    size_t *supp = NULL; /* gradient canaries: k coordinates each */
    float *sgn = NULL;
    int32_t *lab = NULL;
    unsigned char *in = NULL;
    float *real = NULL, *loss0 = NULL, *loss1 = NULL, *xb = NULL, *sc = NULL;
    double *llr = NULL, *peps = NULL, *pdel = NULL;
    dp_csprng *crng = NULL;
    dp_step sp;
    memset(&sp, 0, sizeof sp);
    const size_t xcap = 256; /* rows of xb: the canaries' losses, in chunks */
    dp_audit_result r;
    memset(&r, 0, sizeof r);
    if ((st = dp_accountant_create(&acc)) != DP_OK || (st = dp_optim_create(&p->optim, np, &opt)) != DP_OK) goto done;
    members = dp_alloc(sizeof(size_t) * (n + (size_t)mc));
    idx = dp_alloc(sizeof(size_t) * (n + (size_t)mc));
    in = dp_alloc((size_t)mc);
    sc = dp_alloc(sizeof(float) * (size_t)mc);
    can = dp_alloc(sizeof(size_t) * (size_t)mc);
    if (!members || !idx || !in || !sc || !can) goto nomem;
    if (input) {
        src = dp_alloc(sizeof(size_t) * (size_t)mc);
        lab = dp_alloc(sizeof(int32_t) * (size_t)mc);
        loss0 = dp_alloc(sizeof(float) * (size_t)mc);
        loss1 = dp_alloc(sizeof(float) * (size_t)mc);
        xb = dp_alloc(sizeof(float) * xcap * dim);
        if (!src || !lab || !loss0 || !loss1 || !xb) goto nomem;
    } else {
        llr = dp_calloc((size_t)mc, sizeof(double));
        real = dp_alloc(sizeof(float) * (np ? np : 1));
        if (!llr || !real) goto nomem;
    }

    /* noise, sampling and dropout as dp_train draws them: from the OS-seeded CSPRNG unless a
     * noise seed is given; the canaries (inclusion, directions, images, labels) from `seed` */
    dp_rng root, rc, rs, rn, rd;
    dp_rng_seed(&root, p->noise_seeded ? p->noise_seed : p->seed);
    dp_rng_split(&root, &rs); /* sampling (as dp_train) */
    dp_rng_split(&root, &rn); /* noise */
    dp_rng_split(&root, &rd); /* dropout */
    dp_rng_seed(&rc, p->seed ^ 0x63616e617279ULL); /* canaries */
    if (!p->noise_seeded && (st = dp_csprng_create(&crng)) != DP_OK) goto done;
    size_t N = 0;
    for (size_t i = 0; i < n; i++) members[N++] = i;
    for (int j = 0; j < mc; j++) {
        in[j] = dp_rng_uniform(&rc) < 0.5;
        if (in[j]) members[N++] = n + (size_t)j;
        r.included += in[j];
    }
    const unsigned char *mask = dp_model_trainable_mask(model);
    size_t d_train = 0;
    for (size_t t = 0; t < np; t++) d_train += mask[t] != 0;
    if (d_train == 0) {
        st = dp_fail(DP_ERR_INVALID, "audit: the model has no trainable parameters");
        goto done;
    }
    const double C = p->max_grad_norm;
    int kc = 0; /* coordinates per gradient canary */
    if (input) {
        /* canary j: a pool row (a random permutation, cycled when m > pool size) with a
         * wrong label drawn uniformly among the other K-1 classes */
        size_t *perm = dp_alloc(sizeof(size_t) * pool->n);
        if (!perm) goto nomem;
        for (size_t i = 0; i < pool->n; i++) perm[i] = i;
        dp_rng_shuffle_prefix(&rc, perm, pool->n, (size_t)mc);
        for (int j = 0; j < mc; j++) src[j] = perm[(size_t)j % pool->n];
        dp_free(perm);
        for (int j = 0; j < mc; j++) {
            lab[j] = (int32_t)((pool->y[src[j]] + 1 + (int32_t)dp_rng_below(&rc, (uint64_t)(K - 1))) % K);
        }
        if ((st = canary_losses(model, pool, src, lab, mc, xb, xcap, loss0)) != DP_OK) goto done;
    } else {
        /* canary j: unit vector with k = d/m (1..64) entries +-1/sqrt(k) on coordinates
         * taken from one random permutation of the trainable coordinates, so canaries are
         * orthogonal while m k <= d (the permutation is cycled beyond that) */
        kc = (int)(d_train / (size_t)mc);
        kc = kc < 1 ? 1 : kc > 64 ? 64 : kc;
        size_t *perm = dp_alloc(sizeof(size_t) * d_train);
        supp = dp_alloc(sizeof(size_t) * (size_t)mc * (size_t)kc);
        sgn = dp_alloc(sizeof(float) * (size_t)mc * (size_t)kc);
        if (!perm || !supp || !sgn) {
            dp_free(perm);
            goto nomem;
        }
        size_t k = 0;
        for (size_t t = 0; t < np; t++)
            if (mask[t]) perm[k++] = t;
        dp_rng_shuffle(&rc, perm, d_train);
        const float a = (float)(1.0 / sqrt((double)kc));
        for (size_t i = 0; i < (size_t)mc * (size_t)kc; i++) {
            supp[i] = perm[i % d_train];
            sgn[i] = (dp_rng_u64(&rc) >> 63) ? a : -a;
        }
        dp_free(perm);
    }

    /* the training itself: dp_train's step (src/train/step.c), with the gradient canaries added to
     * the clipped sum and the released gradient observed through its hooks */
    audit_hooks h = {tr,   pool, src, lab, can,   0,         supp,          sgn,          kc, (float)(canary_scale * C),
                     real, llr,  q * n_exp, mc, 1 / C, 1 / (sigma * sigma), q};
    sp.model = model;
    sp.opt = opt;
    sp.acc = acc;
    sp.clip = (dp_clip_params){p->clipping, C, 0, 0};
    sp.sigma = sigma;
    sp.q = q;
    sp.expected = q * n_exp;
    sp.physical_batch = p->physical_batch;
    sp.row = audit_row;
    sp.row_user = &h;
    sp.crng = crng;
    sp.rn = &rn;
    sp.rd = &rd;
    sp.on_clipped = audit_clipped;
    sp.on_released = audit_released;
    sp.hook_user = &h;
    sp.noise_scale = noise_scale;
    for (long step = 0; step < steps; step++) {
        size_t count;
        if (crng) st = dp_secure_poisson_sample(crng, N, q, idx, &count);
        else st = dp_poisson_sample(&rs, N, q, idx, &count);
        if (st != DP_OK) goto done;
        /* real examples (and input canaries) go through the model; gradient canaries are
         * added to the clipped sum by audit_clipped */
        size_t nf = 0, ncan = 0;
        for (size_t i = 0; i < count; i++) {
            size_t e = members[idx[i]];
            if (e >= n && !input) can[ncan++] = e - n;
            else idx[nf++] = e; /* nf <= i: in place */
        }
        h.ncan = ncan;
        dp_step_stats ss;
        if ((st = dp_step_run(&sp, idx, nf, &ss)) != DP_OK) {
            st = dp_fail(st, "audit step %ld: %s", step + 1, dp_last_error());
            goto done;
        }
    }

    if (input) {
        if ((st = canary_losses(model, pool, src, lab, mc, xb, xcap, loss1)) != DP_OK) goto done;
        for (int j = 0; j < mc; j++) sc[j] = loss0[j] - loss1[j];
    } else {
        for (int j = 0; j < mc; j++) sc[j] = (float)llr[j];
    }
    dp_epsilon_report er;
    if ((st = dp_accountant_epsilon(acc, p->accountant, p->delta, NULL, &er)) != DP_OK) goto done;
    r.epsilon = er.epsilon; /* the bound dp_train reports for the same run */
    {
        /* The claim under test: the whole privacy profile the accountant certifies for this
         * run, delta(eps) on a grid of eps (upper bounds: PRV's delta at eps - eps_error plus
         * its delta error), and the quoted (epsilon, delta) itself. Any finite set of
         * certified points is a true claim, so the test stays valid however coarse the grid;
         * a finer one only adds power (0.05 apart: within 0.5% of the limit in the tests'
         * Gaussian example). RDP has no composition to share: each delta is a bisection over
         * its conversion (~25 ms here), so its grid is 0.25 apart (about 2 s at the default). */
        const double top = isfinite(r.epsilon) ? fmin(4 * r.epsilon + 8, 64) : 64;
        const double hstep = fmax(p->accountant == DP_ACCT_RDP ? 0.25 : 0.05, top / 1000);
        const size_t ng = (size_t)(top / hstep) + 1;
        peps = dp_alloc(sizeof(double) * (ng + 1));
        pdel = dp_alloc(sizeof(double) * (ng + 1));
        if (!peps || !pdel) goto nomem;
        for (size_t i = 0; i < ng; i++) peps[i] = (double)i * hstep;
        if ((st = dp_accountant_delta_many(acc, p->accountant, peps, ng, NULL, pdel)) != DP_OK) goto done;
        size_t np_ = ng;
        if (isfinite(r.epsilon)) {
            peps[np_] = r.epsilon;
            pdel[np_++] = p->delta;
        }
        const dp_fdp_profile prof = {peps, pdel, np_};
        if ((st = dp_audit_guess_profile(sc, in, mc, p->guesses, p->delta, p->confidence, &prof, &r)) != DP_OK)
            goto done;
        r.profile_points = (int)np_;
    }
    r.delta = p->delta;
    r.sigma = sigma;
    r.q = q;
    r.steps = steps;
    r.num_canaries = mc;
    r.seconds = dp__now_s() - t0;
    if (scores_out) memcpy(scores_out, sc, sizeof(float) * (size_t)mc);
    if (in_out) memcpy(in_out, in, (size_t)mc);
    *result = r;
    goto done;
nomem:
    st = dp_fail(DP_ERR_NOMEM, "audit: out of memory");
done:
    dp_accountant_destroy(acc);
    dp_optim_destroy(opt);
    dp_free(members);
    dp_free(idx);
    dp_free(src);
    dp_free(supp);
    dp_free(sgn);
    dp_free(lab);
    dp_free(can);
    dp_free(real);
    dp_csprng_destroy(crng);
    dp_step_free(&sp);
    dp_free(in);
    dp_free(loss0);
    dp_free(loss1);
    dp_free(xb);
    dp_free(sc);
    dp_free(llr);
    dp_free(peps);
    dp_free(pdel);
    return st;
}
