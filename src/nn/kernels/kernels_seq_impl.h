/* kernels_seq_impl.h: the sequence-model and normalisation kernels declared in kernels_seq.h,
 * written once and compiled twice like kernels_impl.h (include it right after kernels_impl.h
 * from kernels_f32.c / kernels_f64.c). Besides REAL, KN, GEMM and SYRK the including file
 * defines:
 *   EXP(x)  exp for REAL (a vectorisable float exp in kernels_f32.c, libm exp for double)
 *   ERF(x)  erf for REAL (erff / erf)
 *
 * Parallelism: OpenMP over samples, sample-heads or rows, each thread owning whole output
 * blocks (no atomics). Kernels that reduce over the batch into a parameter gradient are
 * parallel over feature columns, so their sums run in the same order for any thread count
 * (deterministic). Sums of many terms are accumulated in double. cblas inside the parallel
 * loops runs single-threaded (OpenBLAS OpenMP build). */

#include <math.h>
#include <string.h>

/* columns per block of the double accumulators kept on the stack */
#define SEQ_BLK 256
/* columns per thread-owned block of a batch reduction (one 64-byte line of floats) */
#define SEQ_COLS 16

/* Column sums over `rows` rows of stride ld, n columns, in double:
 *   sgx[j] (=, or += when add) sum_r g[r*ld + j] * x[r*ld + j]   (skipped when sgx is NULL)
 *   sg[j]  (=, or += when add) sum_r g[r*ld + j]                 (skipped when sg is NULL) */
static void seq_colsums(REAL *sgx, REAL *sg, int add, const REAL *g, const REAL *x, int rows, size_t ld, int n) {
    for (int j0 = 0; j0 < n; j0 += SEQ_BLK) {
        const int nb = n - j0 < SEQ_BLK ? n - j0 : SEQ_BLK;
        double agx[SEQ_BLK], ag[SEQ_BLK];
        for (int j = 0; j < nb; j++) agx[j] = ag[j] = 0;
        for (int r = 0; r < rows; r++) {
            const REAL *gr = g + (size_t)r * ld + j0;
            if (sgx) {
                const REAL *xr = x + (size_t)r * ld + j0;
#pragma omp simd
                for (int j = 0; j < nb; j++) agx[j] += (double)gr[j] * xr[j];
            }
            if (sg) {
#pragma omp simd
                for (int j = 0; j < nb; j++) ag[j] += gr[j];
            }
        }
        for (int j = 0; j < nb; j++) {
            if (sgx) sgx[j0 + j] = (REAL)(add ? sgx[j0 + j] + agx[j] : agx[j]);
            if (sg) sg[j0 + j] = (REAL)(add ? sg[j0 + j] + ag[j] : ag[j]);
        }
    }
}

/* ---- Linear over tokens --------------------------------------------------------------- */

/* ps_i = G_i^T A_i ([p, d], one GEMM per sample), then the bias sum_t g_it [p] */
void KN(seqlin_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const REAL *in, int B, int T, int d, int p,
                        int has_bias) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *g = ps + (size_t)i * stride;
        const REAL *gi = dout + (size_t)i * T * p, *ai = in + (size_t)i * T * d;
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, p, d, T, 1, gi, p, ai, d, 0, g, d);
        if (has_bias) seq_colsums(NULL, g + (size_t)p * d, 0, gi, NULL, T, (size_t)p, p);
    }
}

/* <A_i A_i^T, G_i G_i^T> over the upper triangles of two T x T SYRK results (the diagonal
 * once, off-diagonal twice); + ||sum_t g_it||^2 for the bias. work: per thread 2*T*T. */
void KN(seqlin_ghost_sq)(double *sq, REAL *work, const REAL *dout, const REAL *in, int B, int T, int d, int p,
                         int has_bias) {
    if (B <= 0) return;
#pragma omp parallel
    {
        REAL *aa = work + (size_t)dp__thread_num() * 2 * T * T, *gg = aa + (size_t)T * T;
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++) {
            const REAL *gi = dout + (size_t)i * T * p, *ai = in + (size_t)i * T * d;
            SYRK(CblasRowMajor, CblasUpper, CblasNoTrans, T, d, 1, ai, d, 0, aa, T);
            SYRK(CblasRowMajor, CblasUpper, CblasNoTrans, T, p, 1, gi, p, 0, gg, T);
            double acc = 0;
            for (int t = 0; t < T; t++) {
                const REAL *ar = aa + (size_t)t * T, *gr = gg + (size_t)t * T;
                double off = 0;
#pragma omp simd reduction(+ : off)
                for (int u = t + 1; u < T; u++) off += (double)ar[u] * gr[u];
                acc += (double)ar[t] * gr[t] + 2 * off;
            }
            if (has_bias)
                for (int o0 = 0; o0 < p; o0 += SEQ_BLK) {
                    const int nb = p - o0 < SEQ_BLK ? p - o0 : SEQ_BLK;
                    double sb[SEQ_BLK];
                    for (int o = 0; o < nb; o++) sb[o] = 0;
                    for (int t = 0; t < T; t++) {
                        const REAL *gr = gi + (size_t)t * p + o0;
#pragma omp simd
                        for (int o = 0; o < nb; o++) sb[o] += gr[o];
                    }
                    for (int o = 0; o < nb; o++) acc += sb[o] * sb[o];
                }
            sq[i] += acc;
        }
    }
}

/* ---- Embedding ------------------------------------------------------------------------ */

void KN(embed_fwd)(REAL *out, const int32_t *ids, const REAL *table, int B, int T, int d) {
    const size_t R = (size_t)B * T;
#pragma omp parallel for schedule(static) if (R * (size_t)d > 65536)
    for (size_t r = 0; r < R; r++) {
        REAL *o = out + r * d;
        if (ids[r] < 0) memset(o, 0, sizeof(REAL) * (size_t)d);
        else memcpy(o, table + (size_t)ids[r] * d, sizeof(REAL) * (size_t)d);
    }
}

/* dtable[id] += g over every token with id >= 0; threads own blocks of SEQ_COLS columns of
 * the table (all rows), so tokens sharing an id never race. */
void KN(embed_bwd_param)(REAL *dtable, const REAL *dout, const int32_t *ids, int B, int T, int d) {
    const size_t R = (size_t)B * T;
    const int nblk = (d + SEQ_COLS - 1) / SEQ_COLS;
    if (R == 0) return;
#pragma omp parallel for schedule(static) if (R * (size_t)d > 65536)
    for (int bk = 0; bk < nblk; bk++) {
        const int j0 = bk * SEQ_COLS, nb = d - j0 < SEQ_COLS ? d - j0 : SEQ_COLS;
        for (size_t r = 0; r < R; r++) {
            if (ids[r] < 0) continue;
            REAL *dt = dtable + (size_t)ids[r] * d + j0;
            const REAL *g = dout + r * d + j0;
            for (int j = 0; j < nb; j++) dt[j] += g[j];
        }
    }
}

void KN(embed_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const int32_t *ids, int B, int T, int d,
                       int V) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *g = ps + (size_t)i * stride;
        memset(g, 0, sizeof(REAL) * (size_t)V * d);
        for (int t = 0; t < T; t++) {
            const int32_t id = ids[(size_t)i * T + t];
            if (id < 0) continue;
            REAL *row = g + (size_t)id * d;
            const REAL *gr = dout + ((size_t)i * T + t) * d;
            for (int j = 0; j < d; j++) row[j] += gr[j];
        }
    }
}

/* ||ps_i||^2 without forming it: for the first occurrence of each id >= 0 in the sample,
 * the sum of the g rows with that id (in work when the id repeats), squared. O(T^2) id
 * comparisons plus O(T d). work: per thread d. */
void KN(embed_ghost_sq)(double *sq, REAL *work, const REAL *dout, const int32_t *ids, int B, int T, int d) {
    if (B <= 0) return;
#pragma omp parallel
    {
        REAL *acc = work + (size_t)dp__thread_num() * d;
#pragma omp for schedule(static)
        for (int i = 0; i < B; i++) {
            const int32_t *id = ids + (size_t)i * T;
            const REAL *gi = dout + (size_t)i * T * d;
            double s = 0;
            for (int t = 0; t < T; t++) {
                if (id[t] < 0) continue;
                int seen = 0, next = -1;
                for (int u = 0; u < t && !seen; u++) seen = id[u] == id[t];
                if (seen) continue;
                for (int u = t + 1; u < T && next < 0; u++)
                    if (id[u] == id[t]) next = u;
                const REAL *v = gi + (size_t)t * d;
                if (next >= 0) { /* repeated id: sum its rows first */
                    memcpy(acc, v, sizeof(REAL) * (size_t)d);
                    for (int u = next; u < T; u++)
                        if (id[u] == id[t]) {
                            const REAL *gu = gi + (size_t)u * d;
                            for (int j = 0; j < d; j++) acc[j] += gu[j];
                        }
                    v = acc;
                }
                double n2 = 0;
#pragma omp simd reduction(+ : n2)
                for (int j = 0; j < d; j++) n2 += (double)v[j] * v[j];
                s += n2;
            }
            sq[i] += s;
        }
    }
}

/* ---- Learned positional embedding ----------------------------------------------------- */

/* out = in + P (broadcast over the batch); out may be in */
void KN(posemb_fwd)(REAL *out, const REAL *in, const REAL *P, int B, int T, int d) {
    const size_t td = (size_t)T * d;
#pragma omp parallel for schedule(static) if ((size_t)B * td > 65536)
    for (int i = 0; i < B; i++) {
        REAL *o = out + (size_t)i * td;
        const REAL *x = in + (size_t)i * td;
#pragma omp simd
        for (size_t j = 0; j < td; j++) o[j] = x[j] + P[j];
    }
}

/* dP[t] += sum_i dout[i, t]: threads own positions t */
void KN(posemb_bwd_param)(REAL *dP, const REAL *dout, int B, int T, int d) {
    if (B <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)B * T * d > 65536)
    for (int t = 0; t < T; t++)
        seq_colsums(NULL, dP + (size_t)t * d, 1, dout + (size_t)t * d, NULL, B, (size_t)T * d, d);
}

/* ---- LayerNorm ------------------------------------------------------------------------ */

/* gamma and beta may be NULL (1 and 0) */
void KN(layernorm_fwd)(REAL *out, REAL *xhat, REAL *rstd, const REAL *in, const REAL *gamma, const REAL *beta,
                       int R, int F, REAL eps) {
#pragma omp parallel for schedule(static) if ((size_t)R * F > 16384)
    for (int r = 0; r < R; r++) {
        const REAL *x = in + (size_t)r * F;
        REAL *xh = xhat + (size_t)r * F, *y = out + (size_t)r * F;
        double s = 0, v = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < F; j++) s += x[j];
        const double mean = s / F;
#pragma omp simd reduction(+ : v)
        for (int j = 0; j < F; j++) v += ((double)x[j] - mean) * ((double)x[j] - mean);
        const double rs = 1 / sqrt(v / F + (double)eps);
        rstd[r] = (REAL)rs;
        for (int j = 0; j < F; j++) {
            const REAL h = (REAL)(((double)x[j] - mean) * rs);
            xh[j] = h;
            y[j] = h * (gamma ? gamma[j] : 1) + (beta ? beta[j] : 0);
        }
    }
}

/* din = rstd (gx - mean(gx) - xhat mean(gx xhat)), gx = dout * gamma */
void KN(layernorm_bwd_input)(REAL *din, const REAL *dout, const REAL *xhat, const REAL *rstd, const REAL *gamma,
                             int R, int F) {
#pragma omp parallel for schedule(static) if ((size_t)R * F > 16384)
    for (int r = 0; r < R; r++) {
        const REAL *g = dout + (size_t)r * F, *xh = xhat + (size_t)r * F;
        REAL *dx = din + (size_t)r * F;
        double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int j = 0; j < F; j++) {
            const double gx = (double)g[j] * (gamma ? gamma[j] : 1);
            a += gx;
            b += gx * xh[j];
        }
        const REAL ma = (REAL)(a / F), mb = (REAL)(b / F), rs = rstd[r];
        for (int j = 0; j < F; j++) dx[j] = rs * (g[j] * (gamma ? gamma[j] : 1) - ma - xh[j] * mb);
    }
}

/* dgamma += sum_r dout * xhat, dbeta += sum_r dout (either may be NULL); threads own columns */
void KN(layernorm_bwd_param)(REAL *dgamma, REAL *dbeta, const REAL *dout, const REAL *xhat, int R, int F) {
    const int nblk = (F + SEQ_COLS - 1) / SEQ_COLS;
    if (R <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)R * F > 16384)
    for (int bk = 0; bk < nblk; bk++) {
        const int j0 = bk * SEQ_COLS, nb = F - j0 < SEQ_COLS ? F - j0 : SEQ_COLS;
        seq_colsums(dgamma ? dgamma + j0 : NULL, dbeta ? dbeta + j0 : NULL, 1, dout + j0, xhat + j0, R, (size_t)F,
                    nb);
    }
}

void KN(layernorm_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const REAL *xhat, int B, int T, int F) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *g = ps + (size_t)i * stride;
        seq_colsums(g, g + F, 0, dout + (size_t)i * T * F, xhat + (size_t)i * T * F, T, (size_t)F, F);
    }
}

/* ---- RMSNorm -------------------------------------------------------------------------- */

void KN(rmsnorm_fwd)(REAL *out, REAL *xhat, REAL *rstd, const REAL *in, const REAL *gamma, int R, int F, REAL eps) {
#pragma omp parallel for schedule(static) if ((size_t)R * F > 16384)
    for (int r = 0; r < R; r++) {
        const REAL *x = in + (size_t)r * F;
        REAL *xh = xhat + (size_t)r * F, *y = out + (size_t)r * F;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < F; j++) s += (double)x[j] * x[j];
        const double rs = 1 / sqrt(s / F + (double)eps);
        rstd[r] = (REAL)rs;
        for (int j = 0; j < F; j++) {
            const REAL h = (REAL)(x[j] * rs);
            xh[j] = h;
            y[j] = h * (gamma ? gamma[j] : 1);
        }
    }
}

/* din = rstd (gx - xhat mean(gx xhat)), gx = dout * gamma */
void KN(rmsnorm_bwd_input)(REAL *din, const REAL *dout, const REAL *xhat, const REAL *rstd, const REAL *gamma, int R,
                           int F) {
#pragma omp parallel for schedule(static) if ((size_t)R * F > 16384)
    for (int r = 0; r < R; r++) {
        const REAL *g = dout + (size_t)r * F, *xh = xhat + (size_t)r * F;
        REAL *dx = din + (size_t)r * F;
        double b = 0;
#pragma omp simd reduction(+ : b)
        for (int j = 0; j < F; j++) b += (double)g[j] * (gamma ? gamma[j] : 1) * xh[j];
        const REAL mb = (REAL)(b / F), rs = rstd[r];
        for (int j = 0; j < F; j++) dx[j] = rs * (g[j] * (gamma ? gamma[j] : 1) - xh[j] * mb);
    }
}

void KN(rmsnorm_bwd_param)(REAL *dgamma, const REAL *dout, const REAL *xhat, int R, int F) {
    const int nblk = (F + SEQ_COLS - 1) / SEQ_COLS;
    if (R <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)R * F > 16384)
    for (int bk = 0; bk < nblk; bk++) {
        const int j0 = bk * SEQ_COLS, nb = F - j0 < SEQ_COLS ? F - j0 : SEQ_COLS;
        seq_colsums(dgamma + j0, NULL, 1, dout + j0, xhat + j0, R, (size_t)F, nb);
    }
}

void KN(rmsnorm_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const REAL *xhat, int B, int T, int F) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++)
        seq_colsums(ps + (size_t)i * stride, NULL, 0, dout + (size_t)i * T * F, xhat + (size_t)i * T * F, T,
                    (size_t)F, F);
}

/* ---- GroupNorm ------------------------------------------------------------------------ */

/* statistics over the (C/G)*HW contiguous values of each (sample, group); gamma, beta may be NULL */
void KN(groupnorm_fwd)(REAL *out, REAL *xhat, REAL *rstd, const REAL *in, const REAL *gamma, const REAL *beta, int B,
                       int C, int HW, int G, REAL eps) {
    const int cg = C / G;
    const size_t n = (size_t)cg * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > 16384)
    for (int bg = 0; bg < B * G; bg++) {
        const size_t off = (size_t)bg * n;
        const REAL *x = in + off;
        REAL *xh = xhat + off, *y = out + off;
        double s = 0, v = 0;
#pragma omp simd reduction(+ : s)
        for (size_t j = 0; j < n; j++) s += x[j];
        const double mean = s / (double)n;
#pragma omp simd reduction(+ : v)
        for (size_t j = 0; j < n; j++) v += ((double)x[j] - mean) * ((double)x[j] - mean);
        const double rs = 1 / sqrt(v / (double)n + (double)eps);
        rstd[bg] = (REAL)rs;
        for (int c = 0; c < cg; c++) {
            const int ch = (bg % G) * cg + c;
            const REAL ga = gamma ? gamma[ch] : 1, be = beta ? beta[ch] : 0;
            for (int j = 0; j < HW; j++) {
                const size_t k = (size_t)c * HW + j;
                const REAL h = (REAL)(((double)x[k] - mean) * rs);
                xh[k] = h;
                y[k] = h * ga + be;
            }
        }
    }
}

void KN(groupnorm_bwd_input)(REAL *din, const REAL *dout, const REAL *xhat, const REAL *rstd, const REAL *gamma,
                             int B, int C, int HW, int G) {
    const int cg = C / G;
    const size_t n = (size_t)cg * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > 16384)
    for (int bg = 0; bg < B * G; bg++) {
        const size_t off = (size_t)bg * n;
        const REAL *g = dout + off, *xh = xhat + off;
        REAL *dx = din + off;
        double a = 0, b = 0;
        for (int c = 0; c < cg; c++) {
            const double ga = gamma ? gamma[(bg % G) * cg + c] : 1;
            double ac = 0, bc = 0;
            const REAL *gc = g + (size_t)c * HW, *xc = xh + (size_t)c * HW;
#pragma omp simd reduction(+ : ac, bc)
            for (int j = 0; j < HW; j++) {
                ac += gc[j];
                bc += (double)gc[j] * xc[j];
            }
            a += ga * ac;
            b += ga * bc;
        }
        const REAL ma = (REAL)(a / (double)n), mb = (REAL)(b / (double)n), rs = rstd[bg];
        for (int c = 0; c < cg; c++) {
            const REAL ga = gamma ? gamma[(bg % G) * cg + c] : 1;
            const size_t o = (size_t)c * HW;
            for (int j = 0; j < HW; j++) dx[o + j] = rs * (g[o + j] * ga - ma - xh[o + j] * mb);
        }
    }
}

/* dgamma[c] += sum over samples and positions of dout * xhat, dbeta[c] += sum dout (either
 * may be NULL); threads own channels */
void KN(groupnorm_bwd_param)(REAL *dgamma, REAL *dbeta, const REAL *dout, const REAL *xhat, int B, int C, int HW) {
    if (B <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > 16384)
    for (int c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int i = 0; i < B; i++) {
            const size_t o = ((size_t)i * C + c) * HW;
            const REAL *g = dout + o, *xh = xhat + o;
#pragma omp simd reduction(+ : a, b)
            for (int j = 0; j < HW; j++) {
                a += (double)g[j] * xh[j];
                b += g[j];
            }
        }
        if (dgamma) dgamma[c] = (REAL)(dgamma[c] + a);
        if (dbeta) dbeta[c] = (REAL)(dbeta[c] + b);
    }
}

void KN(groupnorm_ps_grad)(REAL *ps, size_t stride, const REAL *dout, const REAL *xhat, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        REAL *ps_i = ps + (size_t)i * stride;
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)i * C + c) * HW;
            const REAL *g = dout + o, *xh = xhat + o;
            double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
            for (int j = 0; j < HW; j++) {
                a += (double)g[j] * xh[j];
                b += g[j];
            }
            ps_i[c] = (REAL)a;
            ps_i[C + c] = (REAL)b;
        }
    }
}

/* ---- GELU (exact, erf form) ----------------------------------------------------------- */

void KN(gelu_fwd)(REAL *out, const REAL *in, size_t n) {
    DP__ELEMENTWISE(n, out[j] = (REAL)0.5 * in[j] * (1 + ERF(in[j] * (REAL)0.70710678118654752440)))
}
/* din = dout (Phi(x) + x phi(x)) */
void KN(gelu_bwd)(REAL *din, const REAL *dout, const REAL *in, size_t n) {
    DP__ELEMENTWISE(n, din[j] = dout[j] * ((REAL)0.5 * (1 + ERF(in[j] * (REAL)0.70710678118654752440)) +
                                           in[j] * (REAL)0.39894228040143267794 * EXP((REAL)-0.5 * in[j] * in[j])))
}

/* ---- Attention core ------------------------------------------------------------------- */

/* In-place softmax of one row of scores over the keys with kv[u] != 0 (all when kv is NULL);
 * the others get 0, and a row with no valid key is all 0. */
static void seq_softmax_row(REAL *s, const unsigned char *kv, int T) {
    REAL mx = -INFINITY;
    if (kv) {
        for (int u = 0; u < T; u++) mx = (kv[u] && s[u] > mx) ? s[u] : mx;
    } else {
        for (int u = 0; u < T; u++) mx = s[u] > mx ? s[u] : mx;
    }
    if (mx == -INFINITY) { /* no valid key, or every valid score is -inf or NaN */
        int any = 0;
        for (int u = 0; u < T && !any; u++) any = kv ? kv[u] != 0 : 1;
        if (!any) {
            memset(s, 0, sizeof(REAL) * (size_t)T);
            return;
        }
        mx = 0; /* NaN scores then propagate through EXP, as in PyTorch */
    }
    REAL sum = 0;
    if (kv) {
#pragma omp simd reduction(+ : sum)
        for (int u = 0; u < T; u++) {
            const REAL e = kv[u] ? EXP(s[u] - mx) : 0;
            s[u] = e;
            sum += e;
        }
    } else {
#pragma omp simd reduction(+ : sum)
        for (int u = 0; u < T; u++) {
            const REAL e = EXP(s[u] - mx);
            s[u] = e;
            sum += e;
        }
    }
    const REAL inv = 1 / sum;
#pragma omp simd
    for (int u = 0; u < T; u++) s[u] *= inv;
}

/* per (sample, head): S = Q K^T / sqrt(dh) straight into P (GEMM), masked softmax in place,
 * ctx block = P V (GEMM). The head blocks are read and written in place (leading dim d). */
void KN(attn_fwd)(REAL *ctx, REAL *P, const REAL *q, const REAL *k, const REAL *v, const unsigned char *kvalid,
                  int B, int T, int d, int h) {
    const int dh = d / h;
    const REAL scale = (REAL)(1 / sqrt((double)dh));
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * h; bh++) {
        const int i = bh / h, j = bh % h;
        const size_t off = (size_t)i * T * d + (size_t)j * dh;
        REAL *S = P + (size_t)bh * T * T;
        const unsigned char *kv = kvalid ? kvalid + (size_t)i * T : NULL;
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, scale, q + off, d, k + off, d, 0, S, T);
        for (int t = 0; t < T; t++) seq_softmax_row(S + (size_t)t * T, kv, T);
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, 1, S, T, v + off, d, 0, ctx + off, d);
    }
}

/* per (sample, head), with dO the dctx block: dP = dO V^T (work), dS = P (dP - rowsum(P dP))
 * in place, dQ = dS K / sqrt(dh), dK = dS^T Q / sqrt(dh), dV = P^T dO, each GEMM writing the
 * head block of dq/dk/dv in place. Masked keys have P = 0, hence dS = 0. work: per thread T*T. */
void KN(attn_bwd)(REAL *dq, REAL *dk, REAL *dv, REAL *work, const REAL *dctx, const REAL *P, const REAL *q,
                  const REAL *k, const REAL *v, int B, int T, int d, int h) {
    const int dh = d / h;
    const REAL scale = (REAL)(1 / sqrt((double)dh));
    if (B <= 0) return;
#pragma omp parallel
    {
        REAL *W = work + (size_t)dp__thread_num() * T * T;
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * h; bh++) {
            const int i = bh / h, j = bh % h;
            const size_t off = (size_t)i * T * d + (size_t)j * dh;
            const REAL *Pb = P + (size_t)bh * T * T, *dO = dctx + off;
            if (dv) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, 1, Pb, T, dO, d, 0, dv + off, d);
            if (!dq && !dk) continue;
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, 1, dO, d, v + off, d, 0, W, T);
            for (int t = 0; t < T; t++) {
                const REAL *pr = Pb + (size_t)t * T;
                REAL *wr = W + (size_t)t * T;
                REAL r = 0;
#pragma omp simd reduction(+ : r)
                for (int u = 0; u < T; u++) r += pr[u] * wr[u];
#pragma omp simd
                for (int u = 0; u < T; u++) wr[u] = pr[u] * (wr[u] - r);
            }
            if (dq) GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, scale, W, T, k + off, d, 0, dq + off, d);
            if (dk) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, scale, W, T, q + off, d, 0, dk + off, d);
        }
    }
}

/* ---- Pooling over tokens -------------------------------------------------------------- */

void KN(meanpool_fwd)(REAL *out, const REAL *in, const unsigned char *kvalid, int B, int T, int d) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * d > 65536)
    for (int i = 0; i < B; i++) {
        const unsigned char *kv = kvalid ? kvalid + (size_t)i * T : NULL;
        int cnt = 0;
        for (int t = 0; t < T; t++) cnt += kv ? kv[t] != 0 : 1;
        const double inv = cnt ? 1.0 / cnt : 0.0;
        for (int j0 = 0; j0 < d; j0 += SEQ_BLK) {
            const int nb = d - j0 < SEQ_BLK ? d - j0 : SEQ_BLK;
            double acc[SEQ_BLK];
            for (int j = 0; j < nb; j++) acc[j] = 0;
            for (int t = 0; t < T; t++) {
                if (kv && !kv[t]) continue;
                const REAL *x = in + ((size_t)i * T + t) * d + j0;
#pragma omp simd
                for (int j = 0; j < nb; j++) acc[j] += x[j];
            }
            for (int j = 0; j < nb; j++) out[(size_t)i * d + j0 + j] = (REAL)(acc[j] * inv);
        }
    }
}

void KN(meanpool_bwd)(REAL *din, const REAL *dout, const unsigned char *kvalid, int B, int T, int d) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * d > 65536)
    for (int i = 0; i < B; i++) {
        const unsigned char *kv = kvalid ? kvalid + (size_t)i * T : NULL;
        int cnt = 0;
        for (int t = 0; t < T; t++) cnt += kv ? kv[t] != 0 : 1;
        const REAL inv = cnt ? (REAL)(1.0 / cnt) : 0;
        const REAL *g = dout + (size_t)i * d;
        for (int t = 0; t < T; t++) {
            REAL *dx = din + ((size_t)i * T + t) * d;
            if (kv && !kv[t]) memset(dx, 0, sizeof(REAL) * (size_t)d);
            else
                for (int j = 0; j < d; j++) dx[j] = g[j] * inv;
        }
    }
}

void KN(firsttok_fwd)(REAL *out, const REAL *in, int B, int T, int d) {
    for (int i = 0; i < B; i++) memcpy(out + (size_t)i * d, in + (size_t)i * T * d, sizeof(REAL) * (size_t)d);
}

void KN(firsttok_bwd)(REAL *din, const REAL *dout, int B, int T, int d) {
#pragma omp parallel for schedule(static) if ((size_t)B * T * d > 65536)
    for (int i = 0; i < B; i++) {
        REAL *dx = din + (size_t)i * T * d;
        if (T <= 0) continue;
        memcpy(dx, dout + (size_t)i * d, sizeof(REAL) * (size_t)d);
        memset(dx + d, 0, sizeof(REAL) * (size_t)(T - 1) * d);
    }
}

#undef SEQ_BLK
#undef SEQ_COLS
