/* bench_cnn: step time and peak tracked memory of the default CNN, non-private vs the three
 * clipping modes (vanilla, fast, ghost), side by side in one run.
 *
 * For each batch size B, one model per mode is created (same initialisation) and fed the same
 * fixed batch of B N(0,1) images with random labels. After 2 warm-up steps per mode (which
 * also size each model's buffers for B), the timed steps are interleaved: repetition r runs one
 * step of every mode, starting from a different mode each time, so machine noise (other jobs,
 * frequency changes) hits all modes alike. Per-mode medians are reported.
 *
 * A step is what src/train.c does:
 *   no-DP: zero grad, forward + cross-entropy, dp_model_backward, scale 1/B, optimizer step;
 *   DP:    zero grad, forward + cross-entropy, dp_model_clipped_grad (mode), Gaussian noise,
 *          scale 1/B, optimizer step.
 *
 * Memory: all four models are alive at once, so the process-wide tracked peak would include
 * the other modes' buffers. The peak reported for a mode is what that mode needs on its own:
 *   inputs (x, y, dlogits, losses) + the mode's persistent bytes (model parameters, gradients,
 *   activation buffers, optimizer state: the live-bytes increase from creating the model and
 *   running its warm-up steps) + the highest transient increase during a timed step
 *   (dp_mem_get().peak_bytes after the step minus live bytes at its start, the peak having
 *   been reset with dp_mem_reset_peak just before).
 * Per-stage columns are the highest live bytes within the stage minus live bytes at step
 * start (dp_mem_stage / dp_mem_stage_report).
 *
 * Exit status: 0 whether or not the targets are met (this is a report); 1 on errors, 2 on
 * bad usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "dpsgd.h"
#include "../tools/tool_setup.h"

enum { M_NODP, M_VANILLA, M_FAST, M_GHOST, M_COUNT };
static const char *const mode_names[M_COUNT] = {"no-DP", "vanilla", "fast", "ghost"};
static const dp_clip_mode clip_of[M_COUNT] = {DP_CLIP_GHOST, DP_CLIP_VANILLA, DP_CLIP_FAST, DP_CLIP_GHOST};

enum { S_FORWARD, S_BACKWARD, S_CLIP, S_OPTIM, S_COUNT };
static const char *const stage_names[S_COUNT] = {"forward", "backward", "clip", "optimizer"};

#define MAX_BATCHES 16
#define WARMUP 2
#define SIGMA 1.0
#define CLIP_C 1.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_cnn [--batch B1,B2,...] [--steps N] [--threads N]\n"
            "\n"
            "Step time and peak tracked memory of the default CNN (26,010 parameters, 1x28x28,\n"
            "10 classes): no-DP vs vanilla, fast and ghost clipping, interleaved in one run.\n"
            "\n"
            "  --batch LIST   comma-separated batch sizes [256,2048]\n"
            "  --steps N      timed steps per mode, after %d warm-up steps [10]\n"
            "  --threads N    OpenMP threads [all cores]\n"
            "  --help         this text\n"
            "\n"
            "OPENBLAS_CORETYPE changes the BLAS kernels and so the results; if OpenBLAS falls back\n"
            "to \"Prescott\" the program re-executes itself with a better core (DPSGD_NO_BLAS_FIX=1\n"
            "prevents that). Exit status 0 whatever the targets' outcome, non-zero on errors.\n",
            WARMUP);
}

static int parse_pos_long(const char *flag, const char *s, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!s[0] || *end || v < 1 || v > hi) {
        fprintf(stderr, "bench_cnn: %s %s: must be an integer in 1..%ld\n", flag, s, hi);
        return 0;
    }
    *out = v;
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ' || *p == '\t') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(buf, cap, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

typedef struct {
    dp_model *model;
    dp_optim *opt;
    dp_rng noise;
    size_t owned;              /* persistent tracked bytes of this mode */
    double *times;             /* [steps] seconds */
    double *st_times;          /* [3 * steps]: forward+loss, backward/clip, noise+scale+optimizer */
    size_t transient;          /* max over timed steps: peak - live at step start */
    long stage_inc[S_COUNT];   /* max per stage: stage peak - live at step start; -1 unused */
} mode_run;

typedef struct {
    int B;
    double med_ms[M_COUNT], min_ms[M_COUNT];
    double stage_ms[M_COUNT][3]; /* medians: forward+loss, backward or clip, noise+scale+optimizer */
    double peak[M_COUNT];        /* bytes */
    size_t owned[M_COUNT];
    long stage_inc[M_COUNT][S_COUNT];
} batch_result;

/* One step of a mode, timed; records memory. */
static dp_status run_step(int mode, mode_run *r, const float *x, const int32_t *y, float *dz, float *lv, int B,
                          double *seconds, double *parts) {
    dp_model *m = r->model;
    const int K = dp_model_output_size(m);
    const size_t np = dp_model_num_params(m);
    const unsigned char *mask = dp_model_trainable_mask(m);
    float *grad = dp_model_grad(m), *params = dp_model_params(m);
    dp_status st;

    const size_t live0 = dp_mem_get().live_bytes;
    dp_mem_stage_reset();
    dp_mem_reset_peak();
    const double t0 = now_s();
    dp_model_zero_grad(m);
    const float *z;
    dp_mem_stage("forward");
    if ((st = dp_model_forward(m, x, B, 1, NULL, &z)) != DP_OK) return st;
    if ((st = dp_loss_xent(z, y, B, K, lv, dz)) != DP_OK) return st;
    const double ta = now_s();
    if (mode == M_NODP) {
        dp_mem_stage("backward");
        st = dp_model_backward(m, dz, B);
    } else {
        dp_clip_params cp = {clip_of[mode], CLIP_C, 0};
        int bad = 0;
        dp_mem_stage("clip");
        st = dp_model_clipped_grad(m, &cp, dz, B, NULL, NULL, &bad);
    }
    if (st != DP_OK) return st;
    const double tb = now_s();
    dp_mem_stage("optimizer");
    if (mode != M_NODP) dp_noise_gaussian(grad, np, SIGMA * CLIP_C, &r->noise);
    const double scale = 1.0 / (double)B;
    for (size_t j = 0; j < np; j++) grad[j] = mask[j] ? (float)(grad[j] * scale) : 0.0f;
    dp_optim_step(r->opt, params, grad, mask);
    const double t1 = now_s();
    *seconds = t1 - t0;
    if (parts) {
        parts[0] = ta - t0;
        parts[1] = tb - ta;
        parts[2] = t1 - tb;
    }

    size_t peak = dp_mem_get().peak_bytes;
    size_t tr = peak > live0 ? peak - live0 : 0;
    if (tr > r->transient) r->transient = tr;
    dp_mem_stage_info info[16];
    int n = dp_mem_stage_report(info, 16);
    for (int i = 0; i < n; i++)
        for (int s = 0; s < S_COUNT; s++)
            if (strcmp(info[i].name, stage_names[s]) == 0) {
                long inc = info[i].peak_bytes > live0 ? (long)(info[i].peak_bytes - live0) : 0;
                if (inc > r->stage_inc[s]) r->stage_inc[s] = inc;
            }
    return DP_OK;
}

static int run_batch(int B, int steps, batch_result *res) {
    const int C = 1, H = 28, W = 28, K = 10;
    const size_t dim = (size_t)C * H * W;
    int rc = 1;
    mode_run runs[M_COUNT];
    memset(runs, 0, sizeof runs);
    for (int k = 0; k < M_COUNT; k++)
        for (int s = 0; s < S_COUNT; s++) runs[k].stage_inc[s] = -1;

    const size_t live_in0 = dp_mem_get().live_bytes;
    float *x = dp_alloc(sizeof(float) * (size_t)B * dim);
    int32_t *y = dp_alloc(sizeof(int32_t) * (size_t)B);
    float *dz = dp_alloc(sizeof(float) * (size_t)B * K);
    float *lv = dp_alloc(sizeof(float) * (size_t)B);
    if (!x || !y || !dz || !lv) {
        fprintf(stderr, "bench_cnn: batch %d: out of memory for the inputs\n", B);
        goto done;
    }
    const size_t inputs = dp_mem_get().live_bytes - live_in0;
    dp_rng data;
    dp_rng_seed(&data, 12345u + (uint64_t)B);
    for (size_t i = 0; i < (size_t)B * dim; i++) x[i] = (float)dp_rng_normal(&data);
    for (int i = 0; i < B; i++) y[i] = (int32_t)(dp_rng_u64(&data) % (uint64_t)K);

    dp_optim_params op = dp_optim_default_params(DP_OPT_SGD);
    op.lr = 0.01; /* small: the parameters stay well-scaled over the run */
    op.momentum = 0.9;
    for (int k = 0; k < M_COUNT; k++) {
        mode_run *r = &runs[k];
        const size_t before = dp_mem_get().live_bytes;
        dp_status st = dp_model_create_named("cnn", C, H, W, K, &r->model);
        if (st == DP_OK) {
            dp_rng init;
            dp_rng_seed(&init, 42); /* same initialisation for every mode */
            dp_model_init(r->model, &init);
            st = dp_optim_create(&op, dp_model_num_params(r->model), &r->opt);
        }
        if (st != DP_OK) {
            fprintf(stderr, "bench_cnn: batch %d, %s: %s\n", B, mode_names[k], dp_last_error());
            goto done;
        }
        dp_rng_seed(&r->noise, 7u + (uint64_t)k);
        r->times = malloc(sizeof(double) * (size_t)steps);
        r->st_times = malloc(sizeof(double) * 3 * (size_t)steps);
        if (!r->times || !r->st_times) {
            fprintf(stderr, "bench_cnn: out of memory\n");
            goto done;
        }
        for (int w = 0; w < WARMUP; w++) {
            double t;
            if ((st = run_step(k, r, x, y, dz, lv, B, &t, NULL)) != DP_OK) {
                fprintf(stderr, "bench_cnn: batch %d, %s, warm-up step %d: %s\n", B, mode_names[k], w + 1,
                        dp_last_error());
                goto done;
            }
        }
        r->owned = dp_mem_get().live_bytes - before;
        r->transient = 0;
        for (int s = 0; s < S_COUNT; s++) r->stage_inc[s] = -1;
    }

    for (int rep = 0; rep < steps; rep++)
        for (int j = 0; j < M_COUNT; j++) {
            int k = (rep + j) % M_COUNT; /* rotate the starting mode */
            double parts[3];
            dp_status st = run_step(k, &runs[k], x, y, dz, lv, B, &runs[k].times[rep], parts);
            if (st != DP_OK) {
                fprintf(stderr, "bench_cnn: batch %d, %s, step %d: %s\n", B, mode_names[k], rep + 1, dp_last_error());
                goto done;
            }
            for (int p = 0; p < 3; p++) runs[k].st_times[(size_t)p * (size_t)steps + (size_t)rep] = parts[p];
        }

    res->B = B;
    for (int k = 0; k < M_COUNT; k++) {
        mode_run *r = &runs[k];
        res->med_ms[k] = 1e3 * median(r->times, steps); /* sorts times */
        res->min_ms[k] = 1e3 * r->times[0];
        for (int p = 0; p < 3; p++) res->stage_ms[k][p] = 1e3 * median(r->st_times + (size_t)p * (size_t)steps, steps);
        res->owned[k] = inputs + r->owned;
        res->peak[k] = (double)(inputs + r->owned + r->transient);
        for (int s = 0; s < S_COUNT; s++) res->stage_inc[k][s] = r->stage_inc[s];
    }
    rc = 0;
done:
    for (int k = 0; k < M_COUNT; k++) {
        dp_optim_destroy(runs[k].opt);
        dp_model_destroy(runs[k].model);
        free(runs[k].times);
        free(runs[k].st_times);
    }
    dp_free(x);
    dp_free(y);
    dp_free(dz);
    dp_free(lv);
    return rc;
}

static void fmt_stage(char *buf, size_t cap, long v) {
    if (v < 0) snprintf(buf, cap, "–");
    else snprintf(buf, cap, "%.3f", (double)v / 1e6);
}

int main(int argc, char **argv) {
    dp_tool_setup(argv);
    int batches[MAX_BATCHES] = {256, 2048};
    int nb = 2;
    long steps = 10, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--batch") || !strcmp(a, "--steps") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "bench_cnn: %s needs a value\n", a);
                usage(stderr);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--steps")) {
                if (!parse_pos_long(a, v, 1000000, &steps)) return 2;
            } else if (!strcmp(a, "--threads")) {
                if (!parse_pos_long(a, v, 1024, &threads)) return 2;
            } else {
                nb = 0;
                char tmp[256];
                snprintf(tmp, sizeof tmp, "%s", v);
                for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                    long b;
                    if (nb == MAX_BATCHES) {
                        fprintf(stderr, "bench_cnn: --batch: at most %d sizes\n", MAX_BATCHES);
                        return 2;
                    }
                    if (!parse_pos_long("--batch", tok, 1 << 20, &b)) return 2;
                    batches[nb++] = (int)b;
                }
                if (nb == 0) {
                    fprintf(stderr, "bench_cnn: --batch %s: no batch size given\n", v);
                    return 2;
                }
            }
        } else {
            fprintf(stderr, "bench_cnn: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (threads > 0) omp_set_num_threads((int)threads);

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("# bench_cnn: default CNN (1x28x28 -> 10 classes), no-DP vs DP clipping modes\n\n");
    printf("- CPU: %s; online cores (nproc): %ld; OpenMP threads: %d\n", cpu, sysconf(_SC_NPROCESSORS_ONLN),
           omp_get_max_threads());
    char blas[64];
    snprintf(blas, sizeof blas, "%s", OPENBLAS_VERSION);
    char *bp = blas;
    while (*bp == ' ') bp++;
    for (size_t n = strlen(bp); n > 0 && bp[n - 1] == ' '; n--) bp[n - 1] = 0;
    printf("- %s, core: %s (OPENBLAS_CORETYPE=%s%s); OPENBLAS_CORETYPE changes the kernels and so the "
           "results: compare runs with the same core\n",
           bp, openblas_get_corename(), ct ? ct : "unset",
           getenv("DPSGD_BLAS_CORE_SET") ? ", set by this program: OpenBLAS detected Prescott" : "");
    printf("- %ld timed steps per mode after %d warm-up steps, interleaved (one step of each mode per repetition, "
           "rotating start); median step time; SGD momentum 0.9; DP: C = %g, sigma = %g\n",
           steps, WARMUP, CLIP_C, SIGMA);
    printf("- peak = inputs + the mode's persistent bytes (params, grads, activation buffers, optimizer state) + "
           "transient peak of a step; resident = inputs + persistent (live between steps); MB = 10^6 bytes; stage columns: peak live bytes in the stage above live "
           "bytes at step start\n\n");
    fflush(stdout);

    batch_result *res = calloc((size_t)nb, sizeof *res);
    if (!res) {
        fprintf(stderr, "bench_cnn: out of memory\n");
        return 1;
    }
    for (int b = 0; b < nb; b++) {
        if (run_batch(batches[b], (int)steps, &res[b]) != 0) {
            free(res);
            return 1;
        }
    }

    printf("| batch | mode | step ms (median) | step ms (min) | time x no-DP | peak MB | mem x no-DP | resident MB "
           "| +forward MB | +backward MB | +clip MB | +optimizer MB |\n");
    printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int b = 0; b < nb; b++) {
        const batch_result *r = &res[b];
        for (int k = 0; k < M_COUNT; k++) {
            char s[S_COUNT][32];
            for (int j = 0; j < S_COUNT; j++) fmt_stage(s[j], sizeof s[j], r->stage_inc[k][j]);
            printf("| %d | %s | %.2f | %.2f | %.2f | %.3f | %.2f | %.3f | %s | %s | %s | %s |\n", r->B, mode_names[k],
                   r->med_ms[k], r->min_ms[k], r->med_ms[k] / r->med_ms[M_NODP], r->peak[k] / 1e6,
                   r->peak[k] / r->peak[M_NODP], (double)r->owned[k] / 1e6, s[S_FORWARD], s[S_BACKWARD], s[S_CLIP],
                   s[S_OPTIM]);
        }
    }
    printf("\nWhere the time goes (median ms per part of the step; medians of parts need not add up to the "
           "step median):\n\n");
    printf("| batch | mode | forward + loss | backward (no-DP) / clipped grad (DP) | noise + scale + optimizer |\n");
    printf("|---:|---|---:|---:|---:|\n");
    for (int b = 0; b < nb; b++)
        for (int k = 0; k < M_COUNT; k++)
            printf("| %d | %s | %.2f | %.2f | %.2f |\n", res[b].B, mode_names[k], res[b].stage_ms[k][0],
                   res[b].stage_ms[k][1], res[b].stage_ms[k][2]);
    printf("\nTargets:\n");
    for (int b = 0; b < nb; b++) {
        const batch_result *r = &res[b];
        double mr = r->peak[M_GHOST] / r->peak[M_NODP];
        printf("- batch %d: ghost peak memory <= 1.1x no-DP: %.3fx (%.3f MB vs %.3f MB): %s\n", r->B, mr,
               r->peak[M_GHOST] / 1e6, r->peak[M_NODP] / 1e6, mr <= 1.1 ? "PASS" : "MISS");
        int best = M_VANILLA;
        for (int k = M_FAST; k < M_COUNT; k++)
            if (r->med_ms[k] < r->med_ms[best]) best = k;
        double tr = r->med_ms[best] / r->med_ms[M_NODP];
        printf("- batch %d: fastest DP mode step time <= 1.5x no-DP: %s %.3fx (%.2f ms vs %.2f ms): %s\n", r->B,
               mode_names[best], tr, r->med_ms[best], r->med_ms[M_NODP], tr <= 1.5 ? "PASS" : "MISS");
    }
    free(res);
    return 0;
}
