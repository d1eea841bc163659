/* precond.c: private Kronecker-factored preconditioning of image features (dpsgd/precond.h).
 * The second moments are summed in double (dsyrk over chunks of examples), released with the
 * Gaussian mechanism (the secure noise of dpsgd/secure.h, or a noise_seed stream), and
 * diagonalised by LAPACK's dsyev (in the OpenBLAS the library links). */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <math.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "dpsgd/precond.h"
#include "dpsgd/privacy.h"
#include "dpsgd/secure.h"
#include "nn/kernels/kernels_seq.h"

/* LAPACK (Fortran ABI, with the hidden lengths of the two character arguments) */
extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                   double *work, const int *lwork, int *info, size_t ljobz, size_t luplo);

enum { CHUNK = 256 };                /* examples per dsyrk */
#define GN_EPS 1e-5f                 /* the groupnorm layer's */
#define SEED_TAG 0x707265636f6e64ULL /* "precond": its own stream of noise_seed */

dp_precond_params dp_precond_default_params(void) {
    dp_precond_params p;
    memset(&p, 0, sizeof p);
    p.groups = 27;
    p.power = 0.25;
    p.floor = 0.01;
    return p;
}

void dp_precond_free(dp_precond *pc) {
    if (!pc) return;
    dp_free(pc->pa);
    dp_free(pc->pb);
    dp_free(pc->a);
    dp_free(pc->b);
    memset(pc, 0, sizeof *pc);
}

/* G(x) for examples [i0, i0 + b) of d into g (float, b*c*hw), as the groupnorm layer computes it */
static void groupnorm_rows(const dp_dataset *d, int groups, size_t i0, int b, float *g, float *rstd) {
    dp__k_groupnorm_fwd_f32(g, g, rstd, d->x + i0 * d->dim, NULL, NULL, b, d->c, d->h * d->w, groups, GN_EPS);
}

/* m (n x n, symmetric, row-major) <- V diag(w'^-p) V^T with w' = max(w, floor w_max) over its
 * eigenvalues w; sums: tr m = sum w, tr(P^2 m) = sum w'^-2p w, sum w', sum w'^(1-2p) (P shares m's
 * eigenvectors, so the traces the scale needs come from the spectrum) */
static dp_status inverse_power(double *m, int n, double p, double floor, const char *what, double sums[4]) {
    double *w = dp_alloc(sizeof(double) * (size_t)n), *v = dp_alloc(sizeof(double) * (size_t)n * n), q;
    int info = 0, lwork = -1;
    dp_status st = DP_OK;
    if (!w || !v) {
        st = DP_ERR_NOMEM;
        goto out;
    }
    memcpy(v, m, sizeof(double) * (size_t)n * n); /* symmetric: row- and column-major alike */
    dsyev_("V", "U", &n, v, &n, w, &q, &lwork, &info, 1, 1);
    lwork = info == 0 ? (int)q : 0;
    double *work = lwork > 0 ? dp_alloc(sizeof(double) * (size_t)lwork) : NULL;
    if (!work) {
        st = lwork > 0 ? DP_ERR_NOMEM : dp_fail(DP_ERR_INVALID, "precondition: LAPACK dsyev workspace query failed");
        goto out;
    }
    dsyev_("V", "U", &n, v, &n, w, work, &lwork, &info, 1, 1);
    dp_free(work);
    if (info != 0) {
        st = dp_fail(DP_ERR_RANGE, "precondition: the eigenvalues of the %s second moment did not converge "
                                   "(LAPACK dsyev info %d)", what, info);
        goto out;
    }
    const double top = w[n - 1]; /* ascending */
    if (!(top > 0) || !isfinite(top)) {
        st = dp_fail(DP_ERR_RANGE, "precondition: the noisy %s second moment has no positive eigenvalue (largest "
                                   "%g): the noise swamps it; use a smaller noise multiplier, more data, or no "
                                   "preconditioning", what, top);
        goto out;
    }
    sums[0] = sums[1] = sums[2] = sums[3] = 0;
    for (int j = 0; j < n; j++) {
        const double wf = w[j] > floor * top ? w[j] : floor * top;
        sums[0] += w[j];
        sums[1] += pow(wf, -2 * p) * w[j];
        sums[2] += wf;
        sums[3] += pow(wf, 1 - 2 * p);
        w[j] = pow(wf, -p);
    }
    /* column j of v (column-major: v[j*n + i]) is eigenvector j */
    for (int r = 0; r < n; r++)
        for (int c = r; c < n; c++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += v[(size_t)j * n + r] * w[j] * v[(size_t)j * n + c];
            m[(size_t)r * n + c] = m[(size_t)c * n + r] = s;
        }
out:
    dp_free(w);
    dp_free(v);
    return st;
}

/* upper triangle (row-major, i <= j) of the symmetric n x n m plus N(0, std^2) each, mirrored */
static dp_status add_noise(double *m, int n, double std, const dp_precond_params *pp, dp_csprng *crng, dp_rng *rng) {
    const size_t nt = (size_t)n * (n + 1) / 2;
    float *u = dp_alloc(sizeof(float) * nt);
    if (!u) return DP_ERR_NOMEM;
    size_t k = 0;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) u[k++] = (float)m[(size_t)i * n + j];
    if (pp->noise_seeded)
        dp_noise_gaussian(u, nt, std, rng);
    else
        dp_secure_noise_gaussian(u, nt, std, crng);
    k = 0;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++, k++) m[(size_t)i * n + j] = m[(size_t)j * n + i] = u[k];
    explicit_bzero(u, sizeof(float) * nt);
    dp_free(u);
    return DP_OK;
}

dp_status dp_precond_fit(const dp_dataset *d, const dp_precond_params *pp, dp_precond *out) {
    if (!d || !pp || !out || d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1)
        return dp_fail(DP_ERR_INVALID, "precondition: no data (an image dataset of at least one example is needed)");
    const int c = d->c, hw = d->h * d->w, G = pp->groups;
    if (G < 1 || c % G) return dp_fail(DP_ERR_INVALID, "precondition: %d groups do not divide %d channels", G, c);
    if (!(pp->noise_multiplier >= 0) || !isfinite(pp->noise_multiplier))
        return dp_fail(DP_ERR_INVALID, "precondition: noise multiplier %g must be finite and >= 0", pp->noise_multiplier);
    if (!(pp->power > 0 && pp->power <= 1))
        return dp_fail(DP_ERR_INVALID, "precondition: power %g must be in (0, 1]", pp->power);
    if (!(pp->floor > 0 && pp->floor <= 1))
        return dp_fail(DP_ERR_INVALID, "precondition: floor %g must be in (0, 1]", pp->floor);
    const size_t dim = (size_t)c * hw;
    dp_status st = DP_OK;
    dp_precond pc;
    memset(&pc, 0, sizeof pc);
    pc.c = c;
    pc.hw = hw;
    pc.groups = G;
    float *g = dp_alloc(sizeof(float) * CHUNK * dim), *rstd = dp_alloc(sizeof(float) * CHUNK * (size_t)G);
    double *x = dp_alloc(sizeof(double) * CHUNK * dim), *xt = dp_alloc(sizeof(double) * CHUNK * dim);
    pc.pa = dp_calloc((size_t)c * c, sizeof(double));
    pc.pb = dp_calloc((size_t)hw * hw, sizeof(double));
    double *a = dp_alloc(sizeof(double) * (size_t)c * c), *b = dp_alloc(sizeof(double) * (size_t)hw * hw);
    dp_csprng *crng = NULL;
    if (!g || !rstd || !x || !xt || !pc.pa || !pc.pb || !a || !b) {
        st = DP_ERR_NOMEM;
        goto out;
    }
    /* A = sum X X^T, B = sum X^T X over X = G(x) / sqrt(c hw), clipped to norm 1. Chunks: A from
     * the c x (b hw) matrix [X_1 ... X_b] (x, row r = channel r of every example), B from the
     * (b c) x hw matrix stacking them (xt). */
    const double inv = 1.0 / sqrt((double)dim);
    for (size_t i0 = 0; i0 < d->n; i0 += CHUNK) {
        const int nb = (int)(d->n - i0 < CHUNK ? d->n - i0 : CHUNK);
        groupnorm_rows(d, G, i0, nb, g, rstd);
        for (int e = 0; e < nb; e++) {
            const float *ge = g + (size_t)e * dim;
            double ss = 0;
            for (size_t j = 0; j < dim; j++) ss += (double)ge[j] * ge[j];
            /* an example with a non-finite feature adds nothing, silently: refusing the data, or
             * counting such examples, would release whether one exists (as the step does) */
            const double nrm = sqrt(ss) * inv, f = !isfinite(nrm) ? 0 : inv * (nrm > 1 ? 1 / nrm : 1);
            for (int r = 0; r < c; r++)
                for (int p = 0; p < hw; p++) {
                    const double v = f ? f * ge[(size_t)r * hw + p] : 0;
                    x[(size_t)r * ((size_t)nb * hw) + (size_t)e * hw + p] = v;
                    xt[((size_t)e * c + r) * hw + p] = v;
                }
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, c, nb * hw, 1.0, x, nb * hw, i0 ? 1.0 : 0.0, pc.pa, c);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, hw, nb * c, 1.0, xt, hw, i0 ? 1.0 : 0.0, pc.pb, hw);
    }
    for (int i = 0; i < c; i++) /* dsyrk wrote the upper triangles */
        for (int j = 0; j < i; j++) pc.pa[(size_t)i * c + j] = pc.pa[(size_t)j * c + i];
    for (int i = 0; i < hw; i++)
        for (int j = 0; j < i; j++) pc.pb[(size_t)i * hw + j] = pc.pb[(size_t)j * hw + i];
    if (pp->noise_multiplier > 0) {
        /* The release. One example moves A and B by at most 1 each in Frobenius norm; the sums
         * are rounded to float before the noise is added (dp_secure_noise_gaussian's grid works
         * on float), which moves each by at most 2^-24 ||A||_F <= 2^-24 n (A is PSD, tr A <= n),
         * for the data set and its neighbour alike, and the double sums carry far less: the
         * sensitivity of the pair is taken as sqrt(2) (1 + 2^-22 (n + 1)). */
        const double std = pp->noise_multiplier * sqrt(2.0) * (1.0 + ldexp((double)d->n + 1.0, -22));
        if (!isfinite(std)) {
            st = dp_fail(DP_ERR_INVALID, "precondition: noise multiplier %g is too large", pp->noise_multiplier);
            goto out;
        }
        dp_rng rng;
        memset(&rng, 0, sizeof rng);
        if (pp->noise_seeded)
            dp_rng_seed(&rng, pp->noise_seed ^ SEED_TAG);
        else if ((st = dp_csprng_create(&crng)) != DP_OK)
            goto out;
        if ((st = add_noise(pc.pa, c, std, pp, crng, &rng)) != DP_OK ||
            (st = add_noise(pc.pb, hw, std, pp, crng, &rng)) != DP_OK)
            goto out;
    }
    /* from here on post-processing of the released pair */
    memcpy(a, pc.pa, sizeof(double) * (size_t)c * c);
    memcpy(b, pc.pb, sizeof(double) * (size_t)hw * hw);
    double sa[4], sb[4];
    if ((st = inverse_power(pc.pa, c, pp->power, pp->floor, "channel", sa)) != DP_OK ||
        (st = inverse_power(pc.pb, hw, pp->power, pp->floor, "position", sb)) != DP_OK)
        goto out;
    /* s: the transformed features keep the mean squared norm of G(x) under the Kronecker model
     * E[vec X vec X^T] ~ A (x) B / tr: s^2 = tr^2 / (tr(Pa^2 A) tr(Pb^2 B)), tr = tr A = tr B
     * (both are the sum of squared norms; the noisy ones differ a little: their mean) */
    const double t = 0.5 * (sa[0] + sb[0]), qa = sa[1], qb = sb[1];
    if (t > 0 && qa > 0 && qb > 0 && isfinite(t / sqrt(qa * qb)))
        pc.scale = t / sqrt(qa * qb);
    else /* noise that makes those traces meaningless (little data): the same rule on the floored spectra */
        pc.scale = sqrt(sa[2] * sb[2] / (sa[3] * sb[3]));
    if (!(pc.scale > 0) || !isfinite(pc.scale)) {
        st = dp_fail(DP_ERR_RANGE, "precondition: the noisy second moments have no usable scale: the noise swamps "
                                   "them");
        goto out;
    }
    pc.noise_multiplier = pp->noise_multiplier;
    pc.a = a;
    pc.b = b;
    a = b = NULL;
    *out = pc;
    memset(&pc, 0, sizeof pc);
out:
    dp_csprng_destroy(crng);
    if (g) explicit_bzero(g, sizeof(float) * CHUNK * dim); /* features of private examples */
    if (x) explicit_bzero(x, sizeof(double) * CHUNK * dim);
    if (xt) explicit_bzero(xt, sizeof(double) * CHUNK * dim);
    dp_free(g);
    dp_free(rstd);
    dp_free(x);
    dp_free(xt);
    dp_free(a);
    dp_free(b);
    dp_precond_free(&pc);
    return st;
}

dp_status dp_precond_apply(const dp_precond *pc, dp_dataset *d) {
    if (!pc || !pc->pa || !d || d->c != pc->c || (size_t)d->h * d->w != (size_t)pc->hw)
        return dp_fail(DP_ERR_INVALID, "precondition: the data's shape (%d x %d x %d) is not the one the transform "
                                       "was fitted to (%d channels, %d positions)", d ? d->c : 0, d ? d->h : 0,
                       d ? d->w : 0, pc ? pc->c : 0, pc ? pc->hw : 0);
    const int c = pc->c, hw = pc->hw;
    const size_t dim = (size_t)c * hw;
    float *g = dp_alloc(sizeof(float) * CHUNK * dim), *rstd = dp_alloc(sizeof(float) * CHUNK * (size_t)pc->groups);
    double *pa = dp_alloc(sizeof(double) * (size_t)c * c);
    double *work = dp_alloc(sizeof(double) * 2 * dim * (size_t)omp_get_max_threads());
    if (!g || !rstd || !pa || !work) {
        dp_free(g);
        dp_free(rstd);
        dp_free(pa);
        dp_free(work);
        return DP_ERR_NOMEM;
    }
    for (size_t i = 0; i < (size_t)c * c; i++) pa[i] = pc->scale * pc->pa[i];
    for (size_t i0 = 0; i0 < d->n; i0 += CHUNK) {
        const int nb = (int)(d->n - i0 < CHUNK ? d->n - i0 : CHUNK);
        groupnorm_rows(d, pc->groups, i0, nb, g, rstd);
#pragma omp parallel for schedule(static)
        for (int e = 0; e < nb; e++) {
            double *t1 = work + (size_t)omp_get_thread_num() * 2 * dim, *t2 = t1 + dim;
            const float *ge = g + (size_t)e * dim;
            for (size_t j = 0; j < dim; j++) t1[j] = ge[j];
            /* t2 = (s Pa) G; then G' = t2 Pb, written over the example */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, c, 1.0, pa, c, t1, hw, 0.0, t2, hw);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, hw, 1.0, t2, hw, pc->pb, hw, 0.0, t1, hw);
            float *xe = d->x + (i0 + (size_t)e) * dim;
            for (size_t j = 0; j < dim; j++) xe[j] = (float)t1[j];
        }
    }
    dp_free(work);
    dp_free(g);
    dp_free(rstd);
    dp_free(pa);
    return DP_OK;
}

dp_status dp_precond_fold(const dp_precond *pc, int k, const float *lin_w, float *out_w) {
    const int c = pc->c, hw = pc->hw;
    const size_t dim = (size_t)c * hw;
    double *t1 = dp_alloc(sizeof(double) * dim), *t2 = dp_alloc(sizeof(double) * dim);
    if (!t1 || !t2) {
        dp_free(t1);
        dp_free(t2);
        return DP_ERR_NOMEM;
    }
    for (int o = 0; o < k; o++) {
        for (size_t j = 0; j < dim; j++) t1[j] = lin_w[(size_t)o * dim + j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, c, pc->scale, pc->pa, c, t1, hw, 0.0, t2, hw);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, hw, hw, 1.0, t2, hw, pc->pb, hw, 0.0, t1, hw);
        for (size_t j = 0; j < dim; j++) out_w[(size_t)o * dim + j] = (float)t1[j];
    }
    dp_free(t1);
    dp_free(t2);
    return DP_OK;
}
