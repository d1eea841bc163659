/* tools/bench.h (internal to the CLI): `dpsgd bench WORKLOAD` (or `--model FILE.onnx`), memory at each stage of a
 * training step, peak tracked and process memory, and step time of the non-private step and of
 * every clipping mode (DP_CLIP_LIST), over a list of batch sizes (docs/benchmarks.md).
 *
 * One concern per file:
 *   cmd_bench.c        options and the run: which process measures what, in which order
 *   bench_workloads.c  the workloads (model, inputs, targets; --model's, built at run time),
 *                      modes and stages, the FLOP model
 *   bench_measure.c    what the measuring processes do: the probe, one step through the
 *                      library's dp_step_run (src/train/step.c) with stage timers, the memory,
 *                      timing and SGEMM children
 *   bench_harness.c    fork/pipe isolation, clocks, medians, /proc and rusage readers
 *   bench_report.c     the markdown tables, the JSON document and the SVG charts
 *
 * What runs where:
 * - Memory: one child process (fork) per (batch, mode), holding only that mode's model:
 *   the tracked peak is then the allocator's own process-wide peak, and the peak resident
 *   set (VmHWM) is that of a process doing only this mode. The child runs a first step on a
 *   fresh model (its per-stage increases are the table's rows) and a second, steady step.
 *   The allocator's limit (dp_mem_set_limit) is --mem-limit: a mode that would exceed it
 *   fails its allocation and is reported as OOM. Before forking, the engine's memory plan
 *   skips modes that cannot fit without running them.
 * - Time: one child per batch holding every mode that fitted; after --warmup steps per mode,
 *   --reps repetitions each run one step of every mode, starting from a different mode each
 *   time, so machine noise hits all modes alike; medians are reported.
 * - The SGEMM rate: one child, cblas_sgemm on N x N matrices, best of a few.
 * The parent never runs OpenMP or BLAS code itself (libgomp is not fork-safe once its threads
 * exist) and never holds the big buffers, so every child starts from the same small process.
 */
#ifndef DP_BENCH_H
#define DP_BENCH_H
#include <stddef.h>
#include <stdint.h>

#include "dpsgd.h"
#include "svg.h"

#define MAX_BATCHES 16
#define NMODES      (1 + DP_CLIP_COUNT) /* 0: no-DP; 1 + c: clipping mode c */
#define SIGMA       1.0                 /* noise multiplier */
#define CLIP_C      1.0                 /* clipping norm */
#define LR          0.01                /* small: parameters stay well-scaled over the run */
#define MOMENTUM    0.9
#define MIB         (1024.0 * 1024.0)
#define GIB         (1024.0 * 1024.0 * 1024.0)
#define M_GHOST     (1 + DP_CLIP_GHOST)
#define M_BK        (1 + DP_CLIP_BK)
#define M_AUTO      (1 + DP_CLIP_AUTO)

/* ---- workloads, modes, stages (bench_workloads.c) ---------------------------------------- */

typedef struct bench_workload bench_workload;
struct bench_workload {
    const char *name;
    const char *title; /* one line for the report */
    /* the model (parameters left for dp_model_init) */
    dp_status (*create)(dp_model **out);
    /* example e of the workload's data: the model's input size of features into x, a label
     * below its output size into y; a function of (seed, e) only, so every process and mode
     * sees the same batch */
    void (*row)(const dp_model *m, uint64_t seed, size_t e, float *x, int32_t *y);
    int batches[MAX_BATCHES], nbatches; /* default batch sizes */
    int quick[MAX_BATCHES], nquick;     /* with --quick */
    int warmup, reps;                   /* default steps per mode (vanilla is slow on big models) */
    const char *flops_note;             /* how the FLOP count of a step is made */
    /* the issues' targets for this workload, as ratios to no-DP: mode (1 + DP_CLIP_x), 'm'
     * (peak tracked memory) or 't' (step time), the largest ratio, and the batches it is stated
     * for (bmin .. bmax; 0: no bound); then the smallest share of the SGEMM rate the no-DP step
     * is to reach (0: none) and the batch it is stated at */
    struct {
        int mode;
        char what;
        double max;
        int bmin, bmax;
    } targets[8];
    int ntargets;
    double gemm_share;
    int gemm_batch;
    /* --model FILE.onnx: the file (NULL for the table's workloads); its initializers are the
     * initial weights, so no dp_model_init */
    const char *model_file;
};

/* NULL if unknown */
const bench_workload *bench_find_workload(const char *name);
/* `--model FILE.onnx`: the workload built at run time around the file (one per process: a
 * static path, inherited by the forked children). The factory loads the file
 * (dp_model_load_onnx); the data is N(0,1) features, or uniform token ids for a token input;
 * no targets. Its title names the file until bench_model_describe completes it from the probe. */
const bench_workload *bench_model_workload(const char *path);
/* "no-DP" for 0, else the clipping mode's name */
const char *bench_mode_name(int k);

/* GEMM FLOPs per sample of a no-DP step (dp_model_layer_flops): forward of every linear,
 * convolution and attention layer (frozen ones too), weight gradient of the trainable ones,
 * input gradient of every such layer behind the first trainable one; NAN when unknown */
void bench_layer_flops(const dp_model *m, double *fwd, double *bwd);

/* the stages of a step whose memory increase is a row of the table */
enum { ST_CREATE, ST_FORWARD, ST_BWD1, ST_BWD2, ST_OPTIM, ST_COUNT };
#define ST_INPUTS (-2)                                /* where an OOM happened: allocating the batch */
extern const char *const bench_stage_title[ST_COUNT]; /* "first backward" */
extern const char *const bench_stage_key[ST_COUNT];   /* JSON: "backward_1" */

/* ---- options (cmd_bench.c) -------------------------------------------------------------- */

typedef struct {
    const bench_workload *w;
    int batches[MAX_BATCHES], nb;
    int use_mode[NMODES];
    long reps, warmup, threads, seed;
    size_t mem_limit; /* 0: none */
    int quick, no_plan, plan_only;
    int seeded_noise; /* --noise seeded: the seeded stream (--noise-seed's) instead of the OS-seeded CSPRNG */
    const char *json, *plot;
} bench_opts;

/* ---- the measuring processes (bench_measure.c) ------------------------------------------ */

enum { RES_OK, RES_OOM, RES_ERROR };

/* the probe: the model's shapes, FLOPs and the memory plan of every mode and batch size */
typedef struct {
    const bench_workload *w;
    int nb, threads;
    const int *batches;
    size_t mem_limit;
} probe_arg;

typedef struct {
    int ok;
    int create_failed; /* the workload's factory failed (--model: the file does not load) */
    char msg[1024];
    size_t np, dim;
    int K, nlayers;
    int tokens, vocab;                     /* the input is token ids of a vocabulary of that size */
    double creation_bytes;                 /* tracked bytes of model + optimizer */
    double step_plan[MAX_BATCHES][NMODES]; /* dp_model_plan_bytes per batch size and mode */
    size_t budget[MAX_BATCHES];            /* auto's mem_budget per batch size */
    double flops_fwd, flops_bwd;           /* per sample, no-DP step (NAN: unknown) */
} probe_result;

/* --model's title (bench_workloads.c), from the probe: the file, its parameter and layer
 * counts, the data */
void bench_model_describe(const probe_result *pr);

/* memory: one mode, one batch size */
typedef struct {
    const bench_workload *w;
    const probe_result *pr;
    int mode, B;
    uint64_t seed;
    size_t limit, budget;
    int threads;
    int secure; /* DP modes draw their noise from the OS-seeded CSPRNG (else the seeded stream) */
} mem_arg;

typedef struct {
    int status, oom_stage;
    char msg[300];
    double inc[ST_COUNT]; /* bytes; -1: not applicable */
    double peak_tracked, rss_start, rss_peak, seconds;
} mem_result;

/* the SGEMM rate */
typedef struct {
    int n, tries, threads;
} gemm_arg;

typedef struct {
    int ok;
    double gflops, best_s;
} gemm_result;

/* time: every mode that fitted (run_mode), one batch size */
typedef struct {
    const bench_workload *w;
    const probe_result *pr;
    int B;
    int run_mode[NMODES];
    uint64_t seed;
    int reps, warmup, threads;
    int gemm_n, gemm_tries; /* the SGEMM rate measured in the same process, before the steps */
    size_t budget;          /* auto's mem_budget */
    int secure;             /* as mem_arg's */
} time_arg;

typedef struct {
    int status, failed_mode;
    char msg[300];
    double med_ms[NMODES], min_ms[NMODES], part_ms[NMODES][3];
    double gemm_gflops; /* SGEMM rate in this process (0: failed) */
    double seconds;
} time_result;

/* a batch's inputs, labels, logits gradient and losses (the step's buffers), in bytes */
double bench_input_bytes(const probe_result *pr, int B);
/* child functions for bench_in_child: arg and out are the structs above */
void bench_probe_child(const void *arg, void *out);
void bench_mem_child(const void *arg, void *out);
void bench_gemm_child(const void *arg, void *out);
void bench_time_child(const void *arg, void *out);

/* ---- the harness (bench_harness.c) ------------------------------------------------------ */

typedef void (*bench_child_fn)(const void *arg, void *out);
/* Runs fn(arg, out) in a fork and copies its `size` bytes of out back through a pipe. 0: out
 * filled by the child; otherwise the child died without answering: *sig = its signal (0 if
 * it exited). */
int bench_in_child(bench_child_fn fn, const void *arg, void *out, size_t size, int *sig);
double bench_now_s(void);                                   /* monotonic clock, seconds */
double bench_median(double *v, int n);                      /* sorts v */
size_t bench_proc_bytes(const char *path, const char *key); /* "VmHWM:" of /proc/self/status, in bytes (0: unknown) */
double bench_loadavg1(void);                                /* 1-minute load average (-1: unknown) */
double bench_busy_cpu_s(void);                              /* CPU seconds all cores spent busy since boot (-1) */
double bench_own_cpu_s(void);                               /* this process's and its finished children's */
void bench_cpu_model(char *buf, size_t cap);                /* /proc/cpuinfo's model name */

/* ---- the report (bench_report.c) -------------------------------------------------------- */

enum { C_UNSELECTED, C_OK, C_OOM_PLAN, C_OOM_ALLOC, C_KILLED, C_ERROR };

/* one (batch size, mode) */
typedef struct {
    int state;
    double plan;    /* bytes: the estimate the decision was made on */
    mem_result mem; /* when the memory child answered */
    int sig;
    int timed; /* times below are valid */
    double med_ms, min_ms, part_ms[3];
    double ref_ms;  /* the no-DP median of the process that timed this mode: its ratios' base */
    char note[320]; /* why it failed */
} bench_cell;

typedef struct {
    int B;
    bench_cell c[NMODES];
    double inputs;
    int time_failed;
    int time_groups; /* processes the timing took (modes that do not fit in memory together) */
    char time_msg[320];
    double gemm_gflops; /* SGEMM rate measured in the timing process */
} bench_batch;

typedef struct {
    char cpu[256], blas[96];
    const char *core;
    int set_by_us, threads;
    long nproc;
    double load_start; /* 1-minute load average before the run */
    double others;     /* share of all cores that other processes kept busy during the run (-1: unknown) */
} bench_machine;

void bench_fmt_bytes(char *buf, size_t cap, double v); /* "–", B, KiB, MiB */
void bench_fmt_gib(char *buf, size_t cap, double v);   /* GiB, or MiB below one */

int bench_plan_only_report(const bench_opts *o, const probe_result *pr);
void bench_print_header(const bench_opts *o, const probe_result *pr, const bench_machine *mc, const gemm_arg *ga,
                        const gemm_result *gr, const char *lim);
void bench_print_batch_table(const bench_opts *o, const bench_batch *r, const probe_result *pr);
/* the summary across batch sizes and the workload's targets */
void bench_print_summary(const bench_opts *o, const bench_batch *res, const probe_result *pr);
void bench_build_json(dp_strbuf *b, const bench_opts *o, const probe_result *pr, const bench_machine *mc,
                      const gemm_result *g, const gemm_arg *ga, const bench_batch *res, double wall);
void bench_build_svg(dp_strbuf *b, const bench_opts *o, const bench_batch *res, double gemm_gflops);
#endif
