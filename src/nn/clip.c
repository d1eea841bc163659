/* nn/clip.c: the clipping engine. Per-sample clip factors, the clipping plan (per trainable
 * node: norm by ghost or instantiation; clipped sum by a second pass, kept output gradients
 * or kept per-sample gradients), the clipped sum itself in every mode, and the memory
 * estimates that plans and --physical-batch hints are made from.
 *
 * A plan is a value: computed for (model, clip parameters, batch size) and handed to the
 * backward passes; nothing of it is left on the nodes, and the estimates change nothing. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "nn/kernels/kernels.h"
#include "nn/graph.h"

/* Relative margin taken off every clip factor. The clipped gradient is formed in float (R_i g_i
 * in vanilla and bk, a second backward pass otherwise) from a norm computed by another route,
 * so its norm can exceed R_i ||g_i||: by up to 6.4e-8 relative (one float ulp) measured over
 * MLPs, CNNs and token models in every mode (tests/test_nn.c, check_clip_bound). Without a
 * margin, Opacus' R_i = min(1, C / (||g_i|| + 1e-6)) let clipped gradients exceed C by up to
 * 1.1e-7 relative; 2^-18 (64 ulps, 3.8e-6) keeps ||R_i g_i|| <= C with room to spare and moves
 * R_i far less than float training noise (the Opacus comparison holds at 1e-4). */
#define CLIP_MARGIN 0x1p-18

/* R_i = min(1, C (1 - CLIP_MARGIN) / (||g_i|| + 1e-6)) from squared norms, in double, rounded
 * down to float (never up: that alone could exceed C); non-finite norms get R_i = 0 */
static int clip_factors(const double *sq, int B, double C, float *R, float *norms) {
    int bad = 0;
    for (int i = 0; i < B; i++) {
        double nrm = sqrt(sq[i]);
        if (norms) norms[i] = (float)nrm;
        if (!isfinite(nrm)) {
            R[i] = 0.0f;
            bad++;
            continue;
        }
        /* the margin applies at R = 1 as well: a norm measured just below C may be realised
         * just above it */
        double r = C * (1.0 - CLIP_MARGIN) / (nrm + 1e-6);
        float f = (float)(r < 1.0 ? r : 1.0);
        if ((double)f > r) f = nextafterf(f, 0.0f);
        R[i] = f;
    }
    return bad;
}

/* The rows' weights in the clipped sum from the examples' clip factors Rg[B / G]: with groups of
 * G > 1 rows (augmented copies of one example), each row of example i gets R_i / G, so the sum
 * of its rows is R_i times the average of the copies' gradients, the vector whose norm was
 * clipped. Rounded down to float like R_i (never up: ||R_i g_i|| <= C must survive it). G <= 1:
 * R = Rg. */
static void row_factors(const float *Rg, int B, int G, float *R) {
    if (G <= 1) {
        if (R != Rg) memcpy(R, Rg, sizeof(float) * (size_t)B);
        return;
    }
    for (int b = 0; b < B; b++) {
        double r = (double)Rg[b / G] / G;
        float f = (float)r;
        if ((double)f > r) f = nextafterf(f, 0.0f);
        R[b] = f;
    }
}

/* dst[width] += sum over the B rows (stride apart) of R[b] row b: one GEMV. Rows whose R is 0 are
 * zeroed first, since a non-finite row times 0 would still poison the sum. */
static void add_weighted_rows(float *dst, float *rows, size_t stride, size_t width, int B, const float *R) {
    for (int b = 0; b < B; b++)
        if (R[b] == 0.0f) memset(rows + (size_t)b * stride, 0, sizeof(float) * width);
    cblas_sgemv(CblasRowMajor, CblasTrans, B, (int)width, 1.0f, rows, (int)stride, R, 1, 1.0f, dst, 1);
}

/* Groups of G > 1 rows: the squared norms of the groups' summed gradients become those of
 * their averages, the example's gradient that is clipped */
static void group_mean_sq(double *sq, int nE, int G) {
    if (G > 1)
        for (int i = 0; i < nE; i++) sq[i] /= (double)G * G;
}

/* The norm method of layer k in a plan: with groups of rows every layer instantiates (a ghost
 * norm is of one row's gradient, the group's sum is not) */
static dp_norm_method plan_norm_method(const dp_model *m, int k, const dp_clip_params *cp, double *fg, double *fi) {
    dp_norm_method nm = dp_model_norm_method(m, k, cp->mode, fg, fi);
    return nm == DP_NORM_GHOST && cp->group > 1 ? DP_NORM_INSTANTIATE : nm;
}

/* ---- the clipping plan --------------------------------------------------------------------- */

typedef struct {
    unsigned char *cm;   /* [n] dp_sum_method per node (DP_SUM_SECOND_PASS where nothing is kept) */
    unsigned char small[256];
    size_t budget;       /* auto: the budget the plan was made for (else 0) */
    size_t kept;         /* bytes of kept tensors */
} clip_plan;

/* Rows of per-sample gradients made at a time by the node whose clipped sum is formed as they
 * are made (clipped_grad_bk): about 1 MiB of them, so that they are still in cache when their
 * norms and their weighted sum read them, but at least a row per thread (the per-sample kernels
 * share a chunk's rows among the threads: a layer of over 2^18 parameters had run on one) */
#define FUSED_FLOATS ((size_t)1 << 18)

/* The node whose per-sample gradients are clipped and summed as they are made, or -1: the last
 * trainable node the backward reaches (the lowest index), when the plan keeps its per-sample
 * gradients and rows are examples (group <= 1). Every other node's norm is known by then, so
 * each sample's clip factor is, once this node's part of its norm is added: the gradients need
 * not be kept for the whole batch. */
static int fused_node(const dp_model *m, int group) {
    if (group > 1) return -1;
    for (int k = 0; k < m->n; k++)
        if (dp__trainable(&m->L[k])) return k;
    return -1;
}

/* the rows node k keeps of a B-row step under sum method cm (B, or a chunk for the fused node) */
static size_t keep_rows(const dp_model *m, int k, int cm, int B, int group) {
    if (cm != DP_SUM_KEEP_PS || k != fused_node(m, group)) return (size_t)B;
    const dp__node *l = &m->L[k];
    size_t c = FUSED_FLOATS / (l->nw + l->nb ? l->nw + l->nb : 1);
    const size_t nt = (size_t)dp__max_threads();
    if (c < nt) c = nt;
    return c < (size_t)B ? c : (size_t)B;
}

static size_t keep_bytes(const dp_model *m, int k, int cm, int B, int group) {
    const dp__node *l = &m->L[k];
    const size_t rows = keep_rows(m, k, cm, B, group);
    if (cm == DP_SUM_KEEP_GRAD) return sizeof(float) * rows * l->out_size;
    if (cm == DP_SUM_KEEP_PS) return sizeof(float) * rows * (l->nw + l->nb);
    return 0;
}

/* Bytes a kept tensor takes in the step scratch: keep_bytes rounded up to 64, so each tensor
 * starts at a 64-byte boundary. */
static size_t keep_span(const dp_model *m, int k, int cm, int B, int group) {
    return (keep_bytes(m, k, cm, B, group) + 63) / 64 * 64;
}

/* Bytes of a step of B rows besides its kept tensors (group: rows per example, as
 * dp_clip_params): the buffers, the largest instantiated chunk (vanilla: every per-sample
 * gradient), the convolutions' Grams that the forward makes for ghost norms, and the clip
 * factors (rows' and examples'). cm: a bk/auto plan, whose layers that keep their per-sample
 * gradients form them in the kept block, not in a chunk (NULL: none). */
static size_t step_bytes(dp_model *m, dp_clip_mode mode, int B, int group, const unsigned char *cm) {
    dp__plan_current(m);
    if (B < 1) B = 1;
    size_t bytes = dp__buffer_bytes(m, B, (size_t)dp__max_threads()), extra = 0;
    dp_clip_params cp = {mode, 1.0, 0, group};
    if (mode == DP_CLIP_VANILLA)
        extra = sizeof(float) * (size_t)B * dp_model_num_trainable(m);
    else
        for (int k = 0; k < m->n; k++)
            if (plan_norm_method(m, k, &cp, NULL, NULL) == DP_NORM_INSTANTIATE && !(cm && cm[k] == DP_SUM_KEEP_PS)) {
                const dp__node *l = &m->L[k];
                size_t e = sizeof(float) * dp__inst_chunk(l, B, group) * (l->nw + l->nb);
                if (e > extra) extra = e;
            }
    if (group <= 1 && mode != DP_CLIP_VANILLA && mode != DP_CLIP_FAST) /* the forward's Grams (engine.c) */
        extra += sizeof(float) * (size_t)B * dp__gram_floats(m);
    return bytes + extra + sizeof(float) * ((size_t)B + (group > 1 ? (size_t)B / (size_t)group : 0));
}

size_t dp_model_default_mem_budget(dp_model *m, int B) {
    return (size_t)(1.2 * (double)dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 1) + 0.2 * 2.0 * sizeof(float) * (double)m->np);
}

/* The plan for a bk/auto step of B samples (every node DP_SUM_SECOND_PASS in other modes). */
static dp_status plan_make(dp_model *m, const dp_clip_params *cp, int B, clip_plan *pl) {
    pl->cm = (size_t)m->n <= sizeof pl->small ? pl->small : dp_alloc((size_t)m->n);
    if (!pl->cm) return DP_ERR_NOMEM;
    size_t total = 0;
    for (int k = 0; k < m->n; k++) {
        const dp__node *l = &m->L[k];
        pl->cm[k] = DP_SUM_SECOND_PASS;
        if (!dp__trainable(l) || (cp->mode != DP_CLIP_BK && cp->mode != DP_CLIP_AUTO)) continue;
        if (cp->mode == DP_CLIP_BK) {
            pl->cm[k] = DP_SUM_KEEP_GRAD;
        } else {
            /* a layer whose norm comes from instantiated per-sample gradients keeps them when
             * that is no bigger than keeping G (its weighted sum then replaces the weight
             * GEMM); otherwise book-keeping */
            dp_norm_method nm = plan_norm_method(m, k, cp, NULL, NULL);
            size_t mg = sizeof(float) * (size_t)B * l->out_size, mp = sizeof(float) * (size_t)B * (l->nw + l->nb);
            pl->cm[k] = nm == DP_NORM_INSTANTIATE && mp <= mg ? DP_SUM_KEEP_PS : DP_SUM_KEEP_GRAD;
        }
        total += keep_span(m, k, pl->cm[k], B, cp->group); /* what clipped_grad_bk allocates for it */
    }
    pl->budget = 0;
    if (cp->mode == DP_CLIP_AUTO) {
        size_t b = cp->mem_budget ? cp->mem_budget : dp_model_default_mem_budget(m, B);
        pl->budget = b;
        /* over budget: layers go back to a second pass from the top down, since that pass
         * only runs from the output to the lowest such layer (the head's layers are cheap
         * to reach); the step's other bytes depend on the plan (an instantiation chunk is
         * needed once a layer that kept its per-sample gradients no longer does) */
        for (int k = m->n - 1; k >= 0 && step_bytes(m, DP_CLIP_GHOST, B, cp->group, pl->cm) + total > b; k--) {
            if (!dp__trainable(&m->L[k]) || pl->cm[k] == DP_SUM_SECOND_PASS) continue;
            total -= keep_span(m, k, pl->cm[k], B, cp->group);
            pl->cm[k] = DP_SUM_SECOND_PASS;
        }
    }
    pl->kept = total;
    return DP_OK;
}

static void plan_free(clip_plan *pl) {
    if (pl->cm != pl->small) dp_free(pl->cm);
    pl->cm = NULL;
}

static const char *sum_name(int cm, int fused) {
    return cm == DP_SUM_KEEP_GRAD ? "keep G (book-keeping)"
           : cm == DP_SUM_KEEP_PS ? (fused ? "per-sample, on the fly" : "keep per-sample grads")
                                  : "second pass";
}

static void fmt_bytes(char *b, size_t n, double v) {
    if (v >= 1 << 30) snprintf(b, n, "%.2f GiB", v / (1 << 30));
    else if (v >= 1 << 20) snprintf(b, n, "%.1f MiB", v / (1 << 20));
    else snprintf(b, n, "%.1f KiB", v / 1024);
}

static dp_status check_mode(dp_clip_mode mode) {
    if ((int)mode < 0 || mode >= DP_CLIP_COUNT) return dp_fail(DP_ERR_INVALID, "clipping mode %d unknown", (int)mode);
    return DP_OK;
}

/* the mode, and a group size that divides the B rows */
static dp_status check_params(const dp_clip_params *cp, int B) {
    dp_status st = check_mode(cp->mode);
    if (st != DP_OK) return st;
    if (cp->group < 0 || cp->group > DP_CLIP_MAX_GROUP)
        return dp_fail(DP_ERR_RANGE, "clip group %d: must be in 0..%d (0 or 1: one row per example)", cp->group,
                       DP_CLIP_MAX_GROUP);
    if (cp->group > 1 && B % cp->group)
        return dp_fail(DP_ERR_INVALID, "clip group %d: the batch of %d rows is not a whole number of groups", cp->group, B);
    return DP_OK;
}

dp_status dp_model_describe_plan(dp_model *m, const dp_clip_params *cp, int B, char *buf, size_t cap) {
    if (B < 1) B = 1;
    dp_status st = check_params(cp, B);
    if (st != DP_OK) return st;
    clip_plan pl;
    if ((st = plan_make(m, cp, B, &pl)) != DP_OK) return st;
    const int keeps = cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO;
    size_t o = 0;
    char b1[32], b2[32];
    if (cp->group > 1)
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0,
                              "clipping plan, mode %s, batch %d rows (%d examples x %d augmented copies; each example's "
                              "average gradient is clipped, its norms instantiated):\n",
                              dp_clip_mode_name(cp->mode), B, B / cp->group, cp->group);
    else
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "clipping plan, mode %s, batch %d:\n", dp_clip_mode_name(cp->mode), B);
    int second = 0;
    for (int k = 0; k < m->n && o < cap; k++) {
        const dp__node *l = &m->L[k];
        if (!dp__trainable(l)) continue;
        double fg, fi;
        dp_norm_method nm = plan_norm_method(m, k, cp, &fg, &fi);
        int cm = keeps ? pl.cm[k] : (cp->mode == DP_CLIP_VANILLA ? -1 : DP_SUM_SECOND_PASS);
        second |= cm == DP_SUM_SECOND_PASS;
        fmt_bytes(b1, sizeof b1,
                  cm >= 0 ? (double)keep_bytes(m, k, cm, B, cp->group) : (double)sizeof(float) * B * (l->nw + l->nb));
        o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, "  %3d %-10s %-40s norm %-11s sum %-22s keeps %10s  norm %.3g FLOP\n", k,
                              dp_layer_kind_name(l->kind), l->name,
                              cp->mode == DP_CLIP_VANILLA ? "per-sample" : nm == DP_NORM_GHOST ? "ghost" : "instantiate",
                              cm < 0 ? "stored per-sample grads" : sum_name(cm, keeps && k == fused_node(m, cp->group)), b1,
                              (double)B * (cp->mode == DP_CLIP_VANILLA ? fi : nm == DP_NORM_GHOST ? fg : fi));
    }
    const double step = (double)step_bytes(m, keeps ? DP_CLIP_GHOST : cp->mode, B, cp->group, keeps ? pl.cm : NULL) +
                        (double)(keeps ? pl.kept : 0);
    const size_t budget = pl.budget;
    plan_free(&pl);
    fmt_bytes(b1, sizeof b1, step);
    fmt_bytes(b2, sizeof b2, (double)dp_model_plan_bytes(m, cp->mode, B, 1));
    if (o < cap)
        o += (size_t)snprintf(buf + o, cap - o, "  step memory (estimate) %s; non-private step %s; second backward pass: %s\n", b1, b2,
                              cp->mode == DP_CLIP_VANILLA ? "no" : second ? "yes" : "no");
    if (cp->mode == DP_CLIP_AUTO && o < cap) {
        fmt_bytes(b1, sizeof b1, (double)budget);
        /* a given budget that no plan meets: fewer samples at once do (the default budget grows
         * with the batch, so there a smaller chunk does not help) */
        char fix[96] = "";
        if (step > (double)budget && cp->mem_budget) {
            int n = dp_model_max_batch_within(m, cp, budget, B) / (cp->group > 1 ? cp->group : 1); /* examples */
            if (n > 0) snprintf(fix, sizeof fix, "; --physical-batch %d fits it", n);
            else snprintf(fix, sizeof fix, "; not even one sample at a time fits it");
        }
        snprintf(buf + o, cap - o, "  memory budget %s%s%s%s\n", b1, cp->mem_budget ? "" : " (default: 1.2 x the non-private step with parameters and gradients)",
                 step > (double)budget ? "; no plan fits it: every layer takes the second pass, the smallest plan" : "", fix);
    }
    return DP_OK;
}

/* ---- the clipped sum ----------------------------------------------------------------------- */

/* Pass 1 with kept tensors, clip factors, then the clipped sum from what was kept (and a
 * second pass for the layers that keep nothing). */
static dp_status clipped_grad_bk(dp_model *m, const dp_clip_params *cp, const float *dlogits, int B, float *R, float *Rg,
                                 int *bad) {
    clip_plan pl;
    const int G = cp->group > 1 ? cp->group : 1;
    dp_status st = plan_make(m, cp, B, &pl);
    if (st != DP_OK) return st;
    float **keep = dp_calloc((size_t)m->n, sizeof *keep);
    if (!keep) {
        plan_free(&pl);
        return DP_ERR_NOMEM;
    }
    /* every kept tensor in one block of the step scratch (keep_span each) */
    int low = -1;
    char *block = pl.kept ? dp__step_scratch(m, pl.kept) : NULL;
    if (pl.kept && !block) {
        st = DP_ERR_NOMEM;
        goto done;
    }
    for (int k = 0; k < m->n; k++) {
        if (!dp__trainable(&m->L[k])) continue;
        if (pl.cm[k] == DP_SUM_SECOND_PASS) {
            if (low < 0) low = k;
            continue;
        }
        keep[k] = (float *)block;
        block += keep_span(m, k, pl.cm[k], B, cp->group);
    }
    int fused = fused_node(m, cp->group);
    if (fused >= 0 && pl.cm[fused] != DP_SUM_KEEP_PS) fused = -1;
    dp__bwd p1 = dp__bwd_init(DP__BWD_NORMS, cp->mode);
    p1.sq = m->sq;
    p1.cm = pl.cm;
    p1.keep = keep;
    p1.group = cp->group;
    p1.stop = fused;
    if ((st = dp__backward(m, dlogits, B, &p1)) != DP_OK) goto done;
    if (fused >= 0) {
        /* every other node's part of each norm is in sq: this node's per-sample gradients, a
         * chunk at a time, their norms added, the clip factors (the same function of the same
         * sq as below, so the same values), and their weighted sum while the chunk is in cache */
        const dp__node *l = &m->L[fused];
        const size_t pl_n = l->nw + l->nb, chunk = keep_rows(m, fused, DP_SUM_KEEP_PS, B, cp->group);
        const float *g = dp__out_grad(m, fused);
        float *ps = keep[fused];
        for (int b0 = 0; b0 < B; b0 += (int)chunk) {
            const int nb = B - b0 < (int)chunk ? B - b0 : (int)chunk;
            dp__ops(l)->ps_grad(m, l, ps, pl_n, g + (size_t)b0 * l->out_size, b0, nb);
            dp__add_row_sq(m->sq + b0, 1, ps, pl_n, pl_n, nb);
            clip_factors(m->sq + b0, nb, cp->max_grad_norm, R + b0, NULL);
            add_weighted_rows(m->grad + l->w_off, ps, pl_n, pl_n, nb, R + b0);
        }
    }
    group_mean_sq(m->sq, B / G, G);
    *bad = clip_factors(m->sq, B / G, cp->max_grad_norm, Rg, NULL);
    row_factors(Rg, B, G, R);
    dp_mem_stage("backward 2");
    for (int k = 0; k < m->n; k++) {
        dp__node *l = &m->L[k];
        if (!keep[k] || k == fused) continue;
        if (pl.cm[k] == DP_SUM_KEEP_GRAD) {
            size_t n = l->out_size;
            float *kk = keep[k];
#pragma omp parallel for schedule(static)
            for (int b = 0; b < B; b++) {
                float *g = kk + (size_t)b * n;
                if (R[b] == 0.0f) memset(g, 0, sizeof(float) * n); /* 0 * inf would be NaN */
                else if (R[b] != 1.0f)
                    for (size_t j = 0; j < n; j++) g[j] *= R[b];
            }
            dp__ops(l)->bwd_param(m, l, keep[k], B);
        } else {
            const size_t pln = l->nw + l->nb;
            add_weighted_rows(m->grad + l->w_off, keep[k], pln, pln, B, R);
        }
    }
    if (low >= 0) {
        dp__bwd p2 = dp__bwd_init(DP__BWD_PARAM, cp->mode);
        p2.scale = R;
        p2.cm = pl.cm;
        p2.low = low;
        st = dp__backward(m, dlogits, B, &p2);
    }
done:
    dp_free(keep);
    plan_free(&pl);
    return st;
}

dp_status dp_model_clipped_grad(dp_model *m, const dp_clip_params *cp, const float *dlogits, int B, float *norms,
                                float *factors, int *n_nonfinite) {
    if (!(cp->max_grad_norm > 0) || !isfinite(cp->max_grad_norm))
        return dp_fail(DP_ERR_RANGE, "max_grad_norm %g: must be a positive finite number", cp->max_grad_norm);
    dp_status st = check_params(cp, B);
    if (st != DP_OK) return st;
    if (n_nonfinite) *n_nonfinite = 0;
    if (B == 0) return DP_OK;
    /* G rows per example (augmentation multiplicity): norms, factors and the non-finite count
     * are the nE examples'; R holds the rows' weights, Rg the examples' factors */
    const int G = cp->group > 1 ? cp->group : 1, nE = B / G;
    /* the next training forward makes the convolutions' Grams for these ghost norms */
    m->grams_want = G == 1 && (cp->mode == DP_CLIP_GHOST || cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO);
    float *R = dp_alloc(sizeof(float) * ((size_t)B + (G > 1 ? (size_t)nE : 0)));
    if (!R) return DP_ERR_NOMEM;
    float *Rg = G > 1 ? R + B : R;
    double *sq = m->sq;
    memset(sq, 0, sizeof(double) * (size_t)nE);
    int bad = 0;
    dp_mem_stage("backward 1");
    if (cp->mode == DP_CLIP_VANILLA) {
        float *ps;
        const size_t nt = dp_model_num_trainable(m);
        st = dp__ps_trainable(m, dlogits, B, &ps, 1);
        if (st == DP_OK) {
            dp__add_group_sq(sq, ps, nt, nt, B, G); /* sq was zeroed above */
            group_mean_sq(sq, nE, G);
            bad = clip_factors(sq, nE, cp->max_grad_norm, Rg, norms);
            row_factors(Rg, B, G, R);
            dp_mem_stage("backward 2");
            /* grad += ps^T R, one GEMV per layer's columns */
            for (int k = 0; k < m->n; k++) {
                const dp__node *l = &m->L[k];
                if (!dp__trainable(l)) continue;
                add_weighted_rows(m->grad + l->w_off, ps + dp__trainable_offset(m, k), nt, l->nw + l->nb, B, R);
            }
        }
    } else if (cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO) {
        st = clipped_grad_bk(m, cp, dlogits, B, R, Rg, &bad);
        if (st == DP_OK && norms)
            for (int b = 0; b < nE; b++) norms[b] = (float)sqrt(sq[b]);
    } else {
        dp__bwd p1 = dp__bwd_init(DP__BWD_NORMS, cp->mode);
        p1.sq = sq;
        p1.group = G;
        st = dp__backward(m, dlogits, B, &p1);
        if (st == DP_OK) {
            group_mean_sq(sq, nE, G);
            bad = clip_factors(sq, nE, cp->max_grad_norm, Rg, norms);
            row_factors(Rg, B, G, R);
            dp_mem_stage("backward 2");
            dp__bwd p2 = dp__bwd_init(DP__BWD_PARAM, cp->mode);
            p2.scale = R;
            st = dp__backward(m, dlogits, B, &p2);
        }
    }
    if (st == DP_OK) {
        if (factors) memcpy(factors, Rg, sizeof(float) * (size_t)nE);
        if (n_nonfinite) *n_nonfinite = bad;
    }
    dp_free(R);
    return st;
}

/* ---- memory estimates ------------------------------------------------------------------ */

size_t dp_model_plan_bytes(dp_model *m, dp_clip_mode mode, int B, int no_dp) {
    if (no_dp) {
        dp__plan_current(m);
        return dp__buffer_bytes(m, B < 1 ? 1 : B, (size_t)dp__max_threads());
    }
    dp_clip_params cp = dp_clip_default_params();
    cp.mode = mode;
    return dp_model_clip_plan_bytes(m, &cp, B);
}

size_t dp_model_clip_plan_bytes(dp_model *m, const dp_clip_params *cp, int B) {
    if (B < 1) B = 1;
    if (cp->mode == DP_CLIP_BK || cp->mode == DP_CLIP_AUTO) {
        clip_plan pl;
        if (plan_make(m, cp, B, &pl) != DP_OK) return (size_t)-1; /* no memory even for the plan */
        const size_t bytes = step_bytes(m, cp->mode, B, cp->group, pl.cm) + pl.kept;
        plan_free(&pl);
        return bytes;
    }
    return step_bytes(m, cp->mode, B, cp->group, NULL);
}

int dp_model_max_batch_within(dp_model *m, const dp_clip_params *cp, size_t bytes, int B) {
    /* the estimates grow with n (buffers are per sample): bisection, lo fitting, hi not */
    int lo = 0, hi = B < 1 ? 1 : B;
    /* groups of rows (augmentation multiplicity): whole groups only, n counts rows */
    const int G = cp->group > 1 ? cp->group : 1;
    if (G > 1) {
        hi = hi / G;
        if (hi < 1) hi = 1;
    }
#define FITS(n)                                                                                                  \
    ((cp->mode == DP_CLIP_AUTO ? step_bytes(m, DP_CLIP_GHOST, (n) * G, cp->group, NULL) : dp_model_clip_plan_bytes(m, cp, (n) * G)) \
     <= bytes)
    if (FITS(hi)) return hi * G;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (FITS(mid)) lo = mid;
        else hi = mid;
    }
#undef FITS
    return lo * G;
}
