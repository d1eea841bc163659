/* bench_measure.c: what `dpsgd bench`'s measuring processes do (each function runs in its own
 * child, bench_in_child): the probe of the model's facts and memory plan, the memory of one
 * mode's first and second step, the SGEMM rate, and the interleaved timing of every mode.
 *
 * A step is the library's own, dp_step_run (src/train/step.c), as `dpsgd train` runs it: the batch's
 * rows copied in, zero grad, forward + cross-entropy, backward (no-DP) or the clipped sum in
 * the mode, then noise, scaling by 1/B, the optimizer and the finiteness check in one pass over
 * the coordinates, and the accountant. Its on_stage hook marks where the clipped sum (or
 * backward) and the optimizer stage begin: the stage timers. The noise comes from the OS-seeded
 * ChaCha20 generator, as in `dpsgd train` by default, or with --noise seeded from the seeded
 * stream (the path of `dpsgd train --noise-seed`), seeded per mode from --seed. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "bench.h"
#include "train/step.h"

double bench_input_bytes(const probe_result *pr, int B) {
    return (double)B * ((double)pr->dim * 4 + 4 + (double)pr->K * 4 + 4);
}

/* ---- the probe: the model's shapes, FLOPs and the memory plan per mode ------------------- */

/* auto's memory budget (bytes of a step's buffers): the engine's default, but never more
 * than what --mem-limit leaves after the inputs, parameters, gradients and optimizer state
 * (at least 1 byte: then every layer takes a second pass) */
static size_t auto_budget(size_t dflt, double fixed, size_t limit) {
    double b = (double)dflt;
    if (limit) {
        double room = (double)limit - fixed;
        if (room < b) b = room;
    }
    return b < 1 ? 1 : (size_t)b;
}

static dp_status create_optim(dp_model *m, dp_optim **opt) {
    dp_optim_params op = dp_optim_default_params(DP_OPT_SGD);
    op.lr = LR;
    op.momentum = MOMENTUM;
    return dp_optim_create(&op, dp_model_num_params(m), opt);
}

void bench_probe_child(const void *argp, void *outp) {
    const probe_arg *a = argp;
    probe_result *r = outp;
    if (a->threads > 0) omp_set_num_threads(a->threads);
    dp_model *m = NULL;
    dp_optim *opt = NULL;
    dp_status st = a->w->create(&m);
    r->create_failed = st != DP_OK;
    if (st == DP_OK) st = create_optim(m, &opt);
    if (st != DP_OK) {
        snprintf(r->msg, sizeof r->msg, "%s", dp_last_error());
        return;
    }
    r->creation_bytes = (double)dp_mem_get().live_bytes;
    r->np = dp_model_num_params(m);
    r->dim = dp_model_input_size(m);
    r->K = dp_model_output_size(m);
    r->nlayers = dp_model_num_layers(m);
    r->tokens = dp_model_input_is_tokens(m);
    r->vocab = dp_model_vocab(m);
    bench_layer_flops(m, &r->flops_fwd, &r->flops_bwd);
    for (int b = 0; b < a->nb; b++) {
        const int B = a->batches[b];
        r->step_plan[b][0] = (double)dp_model_plan_bytes(m, DP_CLIP_VANILLA, B, 1);
        r->budget[b] =
            auto_budget(dp_model_default_mem_budget(m, B), bench_input_bytes(r, B) + r->creation_bytes, a->mem_limit);
        for (int k = 1; k < NMODES; k++) {
            dp_clip_params cp = dp_clip_default_params();
            cp.mode = (dp_clip_mode)(k - 1);
            cp.mem_budget = r->budget[b];
            r->step_plan[b][k] = (double)dp_model_clip_plan_bytes(m, &cp, B);
        }
    }
    dp_optim_destroy(opt);
    dp_model_destroy(m);
    r->ok = 1;
}

/* ---- one training step: dp_step_run with stage timers ------------------------------------ */

/* the batch's rows as the step asks for them: copied from x, y (made once), or without them
 * made on the fly (the memory processes: no second copy of the batch) */
typedef struct {
    const bench_workload *w;
    const dp_model *m;
    uint64_t seed;
    const float *x;
    const int32_t *y;
} rows;

static void row_of(void *user, size_t e, float *x, int32_t *y, float *t) {
    (void)t; /* classification workloads only */
    const rows *s = user;
    if (!s->x) {
        s->w->row(s->m, s->seed, e, x, y);
        return;
    }
    const size_t dim = dp_model_input_size(s->m);
    memcpy(x, s->x + e * dim, sizeof(float) * dim);
    *y = s->y[e];
}

typedef struct {
    dp_model *m;
    dp_optim *opt;
    dp_accountant *acc; /* DP modes */
    dp_rng noise;
    dp_csprng *crng; /* the secure noise (DP modes, unless --noise seeded) */
    dp_rng drop;     /* the dropout stream, which the step reseeds from crng */
    dp_step step;
    int mode;
    int at;                 /* the stage running (ST_*), for where an OOM happened */
    double t_clip, t_optim; /* when the backward (clipped sum) and the optimizer stage began */
} runner;

/* dp_step's on_stage hook */
static void on_stage(void *user, const char *stage) {
    runner *r = user;
    if (!strcmp(stage, "forward")) {
        r->at = ST_FORWARD;
    } else if (!strcmp(stage, "clip") || !strcmp(stage, "backward")) {
        r->at = ST_BWD1;
        r->t_clip = bench_now_s();
    } else if (!strcmp(stage, "optimizer")) {
        r->at = ST_OPTIM;
        r->t_optim = bench_now_s();
    }
}

static dp_status runner_create(const bench_workload *w, int mode, uint64_t seed, int B, size_t budget, int secure,
                               rows *src, runner *r) {
    memset(r, 0, sizeof *r);
    r->mode = mode;
    dp_status st = w->create(&r->m);
    if (st != DP_OK) return st;
    if (!w->model_file) { /* an ONNX file's initializers are its initial weights */
        dp_rng init;
        dp_rng_seed(&init, seed ^ 0x1badc0ffeeULL); /* the same initialisation for every mode */
        dp_model_init(r->m, &init);
    }
    if ((st = create_optim(r->m, &r->opt)) != DP_OK) return st;
    if (mode != 0 && (st = dp_accountant_create(&r->acc)) != DP_OK) return st;
    dp_rng_seed(&r->noise, seed * 31 + 7 + (uint64_t)mode);
    dp_step *s = &r->step;
    s->model = r->m;
    s->opt = r->opt;
    s->acc = r->acc;
    s->no_dp = mode == 0;
    s->clip = dp_clip_default_params(); /* the engine's defaults for any other field */
    if (mode != 0) s->clip.mode = (dp_clip_mode)(mode - 1);
    s->clip.max_grad_norm = CLIP_C;
    s->clip.mem_budget = budget;
    s->sigma = SIGMA;
    s->q = 1; /* the data is the B rows, all of them in every step */
    s->expected = B;
    s->row = row_of;
    s->row_user = src;
    s->rn = &r->noise; /* the seeded noise stream, unless: */
    if (secure && mode != 0) { /* the OS-seeded CSPRNG, as dpsgd train without --noise-seed */
        if ((st = dp_csprng_create(&r->crng)) != DP_OK) return st;
        s->crng = r->crng;
        s->rd = &r->drop;
    }
    s->on_stage = on_stage;
    s->hook_user = r;
    s->noise_scale = 1;
    return DP_OK;
}

static void runner_destroy(runner *r) {
    dp_step_free(&r->step);
    dp_csprng_destroy(r->crng);
    dp_accountant_destroy(r->acc);
    dp_optim_destroy(r->opt);
    dp_model_destroy(r->m);
    memset(r, 0, sizeof *r);
}

static const dp_mem_stage_info *find_stage(const dp_mem_stage_info *info, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(info[i].name, name)) return &info[i];
    return NULL;
}

/* the highest live bytes within a stage minus live bytes when it began; -1: it did not occur */
static double stage_inc(const dp_mem_stage_info *s) {
    if (!s) return -1;
    return s->peak_bytes > s->start_bytes ? (double)(s->peak_bytes - s->start_bytes) : 0;
}

/* One step over the examples idx[0..B). parts (optional): seconds of the rows, zero grad,
 * forward and loss; of the backward or clipped sum; of noise, scaling, optimizer and accountant.
 * inc (optional): per stage, the highest live bytes within the stage minus live bytes when it
 * began (-1: the stage does not occur). *at: the stage running when the step failed. */
static dp_status step(runner *r, const size_t *idx, int B, double parts[3], double inc[ST_COUNT], int *at) {
    dp_step_stats ss;
    dp_mem_stage_reset();
    r->at = ST_INPUTS; /* until the forward: the step's batch buffers */
    r->t_clip = r->t_optim = 0;
    const double t0 = bench_now_s();
    dp_status st = dp_step_run(&r->step, idx, (size_t)B, &ss);
    const double t1 = bench_now_s();
    dp_mem_stage_info info[16];
    const int ni = dp_mem_stage_report(info, 16);
    *at = r->at;
    if (st != DP_OK) {
        if (r->at == ST_BWD1 && find_stage(info, ni, "backward 2")) *at = ST_BWD2;
        return st;
    }
    if (!(r->t_clip > 0 && r->t_optim > 0))
        return dp_fail(DP_ERR_INVALID, "bench: the step did not report its stages (src/train/step.c renamed them?)");
    if (parts) {
        parts[0] = r->t_clip - t0;
        parts[1] = r->t_optim - r->t_clip;
        parts[2] = t1 - r->t_optim;
    }
    if (inc) {
        inc[ST_CREATE] = -1;
        inc[ST_FORWARD] = stage_inc(find_stage(info, ni, "forward"));
        /* the first backward: from the step's mark (what clipped_grad allocates before its own
         * "backward 1" mark counts too) to the engine's "backward 2" */
        const dp_mem_stage_info *s1 = find_stage(info, ni, r->mode ? "clip" : "backward");
        const dp_mem_stage_info *e1 = find_stage(info, ni, "backward 1");
        inc[ST_BWD1] = -1;
        if (s1) {
            size_t pk = s1->peak_bytes;
            if (e1 && e1->peak_bytes > pk) pk = e1->peak_bytes;
            inc[ST_BWD1] = pk > s1->start_bytes ? (double)(pk - s1->start_bytes) : 0;
        }
        inc[ST_BWD2] = stage_inc(find_stage(info, ni, "backward 2"));
        inc[ST_OPTIM] = stage_inc(find_stage(info, ni, "optimizer"));
    }
    return DP_OK;
}

/* idx[e] = e: the step takes the whole batch (not tracked: the sampler's output in a run) */
static size_t *all_rows(int B) {
    size_t *idx = malloc(sizeof(size_t) * (size_t)(B > 0 ? B : 1));
    if (idx)
        for (int e = 0; e < B; e++) idx[e] = (size_t)e;
    return idx;
}

/* ---- memory: one mode, one batch size ---------------------------------------------------- */

void bench_mem_child(const void *argp, void *outp) {
    const mem_arg *a = argp;
    mem_result *r = outp;
    const double t0 = bench_now_s();
    if (a->threads > 0) omp_set_num_threads(a->threads);
    r->rss_start = (double)bench_proc_bytes("/proc/self/status", "VmRSS:");
    for (int s = 0; s < ST_COUNT; s++) r->inc[s] = -1;
    dp_mem_set_limit(a->limit);
    dp_mem_reset_peak();
    runner run;
    memset(&run, 0, sizeof run);
    rows src = {a->w, NULL, a->seed, NULL, NULL}; /* rows made as the step copies them in */
    size_t *idx = all_rows(a->B);
    int at = ST_CREATE;
    dp_status st = idx ? DP_OK : dp_fail(DP_ERR_NOMEM, "bench: no memory for the batch's indices");
    if (st == DP_OK) {
        size_t live0 = dp_mem_get().live_bytes;
        dp_mem_stage_reset();
        dp_mem_stage("model creation");
        st = runner_create(a->w, a->mode, a->seed, a->B, a->budget, a->secure, &src, &run);
        if (st == DP_OK) {
            src.m = run.m;
            r->inc[ST_CREATE] = (double)(dp_mem_get().live_bytes - live0);
            double inc[ST_COUNT];
            for (int s = 0; s < ST_COUNT; s++) inc[s] = -1;
            st = step(&run, idx, a->B, NULL, inc, &at); /* first step: the table's per-stage increases */
            if (st == DP_OK) {
                for (int s = ST_FORWARD; s < ST_COUNT; s++) r->inc[s] = inc[s];
                st = step(&run, idx, a->B, NULL, NULL, &at); /* a steady step, in case it peaks higher */
            }
        }
    }
    r->peak_tracked = (double)dp_mem_get().peak_bytes;
    r->rss_peak = (double)bench_proc_bytes("/proc/self/status", "VmHWM:");
    r->oom_stage = at;
    if (st == DP_OK)
        r->status = RES_OK;
    else
        r->status = st == DP_ERR_NOMEM ? RES_OOM : RES_ERROR;
    if (st != DP_OK) snprintf(r->msg, sizeof r->msg, "%s", dp_last_error());
    runner_destroy(&run);
    free(idx);
    r->seconds = bench_now_s() - t0;
}

/* ---- the SGEMM rate ----------------------------------------------------------------------- */

/* GFLOP/s of cblas_sgemm on n x n matrices, best of `tries` after one warm-up (0 on failure) */
static double sgemm_rate(int n_, int tries, double *best_s) {
    const size_t n = (size_t)n_;
    double rate = 0, best = INFINITY;
    float *A = malloc(sizeof(float) * n * n), *Bm = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    if (A && Bm && C) {
        dp_rng rng;
        dp_rng_seed(&rng, 1);
        for (size_t i = 0; i < n * n; i++) {
            A[i] = (float)(dp_rng_uniform(&rng) - 0.5);
            Bm[i] = (float)(dp_rng_uniform(&rng) - 0.5);
        }
        for (int t = 0; t <= tries; t++) { /* the first one warms up */
            double t0 = bench_now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n_, n_, n_, 1.0f, A, n_, Bm, n_, 0.0f, C, n_);
            double dt = bench_now_s() - t0;
            if (t > 0 && dt < best) best = dt;
        }
        rate = 2.0 * (double)n * (double)n * (double)n / best / 1e9;
    }
    free(A);
    free(Bm);
    free(C);
    if (best_s) *best_s = best;
    return rate;
}

void bench_gemm_child(const void *argp, void *outp) {
    const gemm_arg *a = argp;
    gemm_result *r = outp;
    if (a->threads > 0) omp_set_num_threads(a->threads);
    r->gflops = sgemm_rate(a->n, a->tries, &r->best_s);
    r->ok = r->gflops > 0;
}

/* ---- time: every mode that fitted, one batch size ----------------------------------------- */

void bench_time_child(const void *argp, void *outp) {
    const time_arg *a = argp;
    time_result *r = outp;
    const double t0 = bench_now_s();
    if (a->threads > 0) omp_set_num_threads(a->threads);
    r->gemm_gflops = sgemm_rate(a->gemm_n, a->gemm_tries, NULL);
    runner run[NMODES];
    memset(run, 0, sizeof run);
    double *times = calloc((size_t)NMODES * (size_t)a->reps * 4, sizeof(double)); /* step, 3 parts */
    /* the batch, made once: the same rows as the memory processes' (same seed) */
    rows src = {a->w, NULL, a->seed, NULL, NULL};
    float *x = malloc(sizeof(float) * (size_t)a->B * a->pr->dim);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)a->B);
    size_t *idx = all_rows(a->B);
    int at = 0;
    r->status = RES_ERROR;
    r->failed_mode = -1;
    dp_status st = times && x && y && idx ? DP_OK : dp_fail(DP_ERR_NOMEM, "bench: no memory for the batch");
    for (int k = 0; k < NMODES && st == DP_OK; k++) {
        if (!a->run_mode[k]) continue;
        r->failed_mode = k;
        st = runner_create(a->w, k, a->seed, a->B, a->budget, a->secure, &src, &run[k]);
        if (st == DP_OK && !src.m) {
            src.m = run[k].m;
            for (int e = 0; e < a->B; e++) a->w->row(src.m, a->seed, (size_t)e, x + (size_t)e * a->pr->dim, y + e);
            src.x = x;
            src.y = y;
        }
    }
    for (int k = 0; k < NMODES && st == DP_OK; k++) {
        if (!a->run_mode[k]) continue;
        r->failed_mode = k;
        for (int wu = 0; wu < a->warmup && st == DP_OK; wu++) st = step(&run[k], idx, a->B, NULL, NULL, &at);
    }
    if (st == DP_OK) {
        int order[NMODES], n = 0;
        for (int k = 0; k < NMODES; k++)
            if (a->run_mode[k]) order[n++] = k;
        for (int rep = 0; rep < a->reps && st == DP_OK; rep++)
            for (int j = 0; j < n && st == DP_OK; j++) {
                int k = order[(rep + j) % n]; /* rotate the starting mode */
                double parts[3];
                r->failed_mode = k;
                if ((st = step(&run[k], idx, a->B, parts, NULL, &at)) != DP_OK) break;
                double *tk = times + (size_t)k * (size_t)a->reps * 4;
                tk[rep] = parts[0] + parts[1] + parts[2];
                for (int p = 0; p < 3; p++) tk[(size_t)(p + 1) * (size_t)a->reps + (size_t)rep] = parts[p];
            }
    }
    if (st == DP_OK) {
        r->status = RES_OK;
        r->failed_mode = -1;
        for (int k = 0; k < NMODES; k++) {
            if (!a->run_mode[k]) continue;
            double *tk = times + (size_t)k * (size_t)a->reps * 4;
            r->med_ms[k] = 1e3 * bench_median(tk, a->reps); /* sorts */
            r->min_ms[k] = 1e3 * tk[0];
            for (int p = 0; p < 3; p++)
                r->part_ms[k][p] = 1e3 * bench_median(tk + (size_t)(p + 1) * (size_t)a->reps, a->reps);
        }
    } else {
        r->status = st == DP_ERR_NOMEM ? RES_OOM : RES_ERROR;
        snprintf(r->msg, sizeof r->msg, "%s", dp_last_error());
    }
    for (int k = 0; k < NMODES; k++) runner_destroy(&run[k]);
    free(times);
    free(x);
    free(y);
    free(idx);
    r->seconds = bench_now_s() - t0;
}
