/* cmd_bench.c: `dpsgd bench WORKLOAD`: memory at each stage of a training step, peak tracked
 * and process memory, and step time of the non-private step and of every clipping mode
 * (DP_CLIP_LIST), over a list of batch sizes; markdown on stdout, optional JSON and SVG.
 *
 * A workload is one row of the `workloads` table: a name, a model factory, an input generator
 * and its default batch sizes. Modes are "no-DP" then every mode of DP_CLIP_LIST, so a mode
 * added to the engine is benchmarked without a change here.
 *
 * What runs where (docs/benchmarks.md explains the choices):
 * - Memory: one child process (fork) per (batch, mode), holding only that mode's model:
 *   the tracked peak is then the allocator's own process-wide peak, and the peak resident
 *   set (VmHWM) is that of a process doing only this mode. The child runs a first step on a
 *   fresh model (its per-stage increases are the table's rows) and a second, steady step.
 *   The allocator's limit (dp_mem_set_limit) is --mem-limit: a mode that would exceed it
 *   fails its allocation and is reported as OOM. Before forking, a plan from the layer shapes
 *   skips modes that cannot fit (vanilla's B x trainable parameters floats) without running them.
 * - Time: one child per batch holding every mode that fitted; after --warmup steps per mode,
 *   --reps repetitions each run one step of every mode, starting from a different mode each
 *   time, so machine noise hits all modes alike; medians are reported.
 * - The SGEMM rate: one child, cblas_sgemm on N x N matrices, best of a few.
 * The parent never runs OpenMP or BLAS code itself (libgomp is not fork-safe once its threads
 * exist) and never holds the big buffers, so every child starts from the same small process.
 *
 * Exit status: 0 when the report is complete (OOM modes included), 1 when a measurement
 * failed (an error, a child killed) or an output could not be written, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "cli.h"
#include "svg.h"

int dp_cmd_bench(int argc, char **argv);

#define prog        dp_cli_prog
#define MAX_BATCHES 16
#define NMODES      (1 + DP_CLIP_COUNT) /* 0: no-DP; 1 + c: clipping mode c */
#define SIGMA       1.0                 /* noise multiplier */
#define CLIP_C      1.0                 /* clipping norm */
#define LR          0.01                /* small: parameters stay well-scaled over the run */
#define MOMENTUM    0.9
#define MIB         (1024.0 * 1024.0)
#define GIB         (1024.0 * 1024.0 * 1024.0)

/* ---- workloads ---------------------------------------------------------------------- */

typedef struct workload workload;
struct workload {
    const char *name;
    const char *title; /* one line for the report */
    /* the model (parameters left for dp_model_init) */
    dp_status (*create)(dp_model **out);
    /* B inputs of the model's input size and B labels below the model's output size */
    void (*gen)(dp_model *m, dp_rng *rng, float *x, int32_t *y, int B);
    int batches[MAX_BATCHES], nbatches; /* default batch sizes */
    int quick[MAX_BATCHES], nquick;     /* with --quick */
    int warmup, reps;                   /* default steps per mode (vanilla is slow on big models) */
    const char *flops_note;             /* how the FLOP count of a step is made */
    /* the issues' targets for this workload, as ratios to no-DP: mode (1 + DP_CLIP_x), 'm'
     * (peak tracked memory) or 't' (step time), the largest ratio; then whether the no-DP
     * step's share of the SGEMM rate at batch 1024 is a target */
    struct {
        int mode;
        char what;
        double max;
    } targets[8];
    int ntargets, gemm_target;
};
#define M_GHOST (1 + DP_CLIP_GHOST)
#define M_BK    (1 + DP_CLIP_BK)
#define M_AUTO  (1 + DP_CLIP_AUTO)

#define SYNTH_SPEC "flatten linear(2560) relu linear(1280)"

static dp_status create_synthetic(dp_model **out) { return dp_model_create(SYNTH_SPEC, 5120, 1, 1, out); }
static dp_status create_cnn(dp_model **out) { return dp_model_create_named("cnn", 1, 28, 28, 10, out); }

/* BERT-like encoders training only the last block, the pooler and the classifier, as in
 * the article's BERT experiment: base is BERT-base's shape (12 x 768, 12 heads, FFN 3072,
 * 128 tokens, vocabulary 30522; 7.68M trainable parameters), small a quick preset. */
static dp_status create_bert_preset(int layers, int width, int heads, dp_model **out) {
    dp_transformer_params p = dp_transformer_default_params();
    p.layers = layers;
    p.width = width;
    p.heads = heads;
    p.ffn = 4 * width;
    p.seq_len = 128;
    p.vocab = 30522;
    p.n_classes = 2;
    p.train_last = 1;
    p.dropout = 0; /* no dropout: the modes then compute the same step */
    return dp_model_create_transformer(&p, out);
}
static dp_status create_bert(dp_model **out) { return create_bert_preset(12, 768, 12, out); }
static dp_status create_bert_small(dp_model **out) { return create_bert_preset(4, 256, 4, out); }

/* token ids uniform over the vocabulary, full sequences; labels uniform */
static void gen_tokens(dp_model *m, dp_rng *rng, float *x, int32_t *y, int B) {
    const size_t T = dp_model_input_size(m);
    const uint64_t V = (uint64_t)dp_model_vocab(m);
    const int K = dp_model_output_size(m);
    for (size_t i = 0; i < (size_t)B * T; i++) x[i] = (float)(dp_rng_u64(rng) % V);
    for (int i = 0; i < B; i++) y[i] = (int32_t)(dp_rng_u64(rng) % (uint64_t)K);
}

/* inputs N(0,1), labels uniform */
static void gen_gaussian(dp_model *m, dp_rng *rng, float *x, int32_t *y, int B) {
    const size_t dim = dp_model_input_size(m);
    const int K = dp_model_output_size(m);
    for (size_t i = 0; i < (size_t)B * dim; i++) x[i] = (float)dp_rng_normal(rng);
    for (int i = 0; i < B; i++) y[i] = (int32_t)(dp_rng_u64(rng) % (uint64_t)K);
}

#define BERT_FLOPS_NOTE                                                                                        \
    "GEMM FLOPs of the linear layers (2*T*in*out per sample, frozen ones too: the forward runs them) and of "   \
    "attention (4*T*T*width forward, 8*T*T*width backward); backward only where the graph needs it: weight "    \
    "gradients of trainable layers, input gradients behind the first trainable layer; embeddings, LayerNorm, " \
    "GELU, softmax and the loss are not counted"

#define BERT_TARGETS                                                                                           \
    {{M_GHOST, 'm', 1.05}, {M_GHOST, 't', 1.25}, {M_BK, 't', 1.10}, {M_AUTO, 't', 1.10}, {M_AUTO, 'm', 1.2}}, 5, 0

static const workload workloads[] = {
    {"synthetic",
     "the Opacus article's synthetic MLP: " SYNTH_SPEC " on 5120 N(0,1) features, 1280 classes",
     create_synthetic,
     gen_gaussian,
     {32, 217, 512, 1024},
     4,
     {16, 64},
     2,
     1,
     5,
     "exact GEMM FLOPs of the linear layers: forward 2*B*in*out per layer; backward 2*B*in*out for the weight "
     "gradient plus 2*B*in*out for the input gradient of every layer above the first (bias, ReLU and loss "
     "not counted)",
     {{M_GHOST, 'm', 1.05}, {M_GHOST, 't', 1.15}, {M_BK, 't', 1.10}, {M_AUTO, 't', 1.10}, {M_AUTO, 'm', 1.2}},
     5,
     1},
    {"cnn",
     "the default CNN (Tramer & Boneh, 26,010 parameters) on 1x28x28 N(0,1) images, 10 classes",
     create_cnn,
     gen_gaussian,
     {256, 1024, 2048},
     3,
     {64, 256},
     2,
     2,
     10,
     "GEMM FLOPs of the convolutions (as im2col GEMMs, 2*B*T*D*out) and linear layers, forward and backward as "
     "for the MLP; tanh, pooling, im2col and the loss are not counted, so the rate is approximate",
     {{M_GHOST, 'm', 1.05}, {M_AUTO, 't', 1.25}, {M_AUTO, 'm', 1.2}},
     3,
     0},
    {"bert",
     "a BERT-base-shaped encoder (12 layers, width 768, 12 heads, FFN 3072, 128 tokens, vocabulary 30522, 2 "
     "classes; random weights) training only its last block, the pooler and the classifier",
     create_bert,
     gen_tokens,
     {32, 128, 512, 1024, 2048},
     5,
     {4, 8},
     2,
     1,
     3,
     BERT_FLOPS_NOTE,
     BERT_TARGETS},
    {"bert-small",
     "a small BERT-like encoder (4 layers, width 256, 4 heads, FFN 1024, 128 tokens, vocabulary 30522, 2 "
     "classes; random weights) training only its last block, the pooler and the classifier",
     create_bert_small,
     gen_tokens,
     {32, 128, 512, 1024, 2048},
     5,
     {8, 32},
     2,
     1,
     5,
     BERT_FLOPS_NOTE,
     BERT_TARGETS},
};
enum { NWORKLOADS = sizeof workloads / sizeof workloads[0] };

/* ---- modes and stages ----------------------------------------------------------------- */

static const char *mode_name(int k) { return k == 0 ? "no-DP" : dp_clip_mode_name((dp_clip_mode)(k - 1)); }

enum { ST_CREATE, ST_FORWARD, ST_BWD1, ST_BWD2, ST_OPTIM, ST_COUNT };
static const char *const stage_title[ST_COUNT] = {"model creation", "forward", "first backward", "second backward",
                                                  "optimizer step"};
static const char *const stage_key[ST_COUNT] = {"model_creation", "forward", "backward_1", "backward_2",
                                                "optimizer_step"};
/* dp_mem_stage names (the engine itself names "backward 1" and "backward 2") */
static const char *const stage_mem[ST_COUNT] = {"model creation", "forward", "backward 1", "backward 2",
                                                "optimizer step"};
#define ST_INPUTS (-2) /* where an OOM happened: allocating the batch */

/* ---- options --------------------------------------------------------------------------- */

typedef struct {
    const workload *w;
    int batches[MAX_BATCHES], nb;
    int use_mode[NMODES];
    long reps, warmup, threads, seed;
    size_t mem_limit; /* 0: none */
    int quick, no_plan, plan_only;
    const char *json, *plot;
} opts;

static void usage(FILE *f) {
    fprintf(f, "usage: dpsgd bench WORKLOAD [options]\n"
               "\n"
               "Memory and time of one DP-SGD training step in every clipping mode against the\n"
               "non-private step, over several batch sizes.\n"
               "\n"
               "workloads:\n"
               "  synthetic               the Opacus article's MLP: flatten linear(2560) relu linear(1280)\n"
               "                          on 5120 N(0,1) features (16,387,840 parameters) [32,217,512,1024]\n"
               "  cnn                     the default CNN on 1x28x28 N(0,1) images [256,1024,2048]\n"
               "  bert                    a BERT-base-shaped encoder (12 x 768, 12 heads, FFN 3072, 128\n"
               "                          tokens, vocabulary 30522) training its last block, pooler and\n"
               "                          classifier (7.68M of 109M parameters) [32,128,512,1024,2048]\n"
               "  bert-small              the same with 4 layers of width 256, 4 heads [same batches]\n"
               "\n"
               "options:\n"
               "  --batch-sizes LIST      comma-separated batch sizes [the workload's]\n"
               "  --modes LIST            among no-dp");
    for (int c = 0; c < DP_CLIP_COUNT; c++) fprintf(f, ",%s", dp_clip_mode_name((dp_clip_mode)c));
    fprintf(f,
            " [all]\n"
            "  --reps N                timed steps per mode, interleaved across modes\n"
            "                          [synthetic 5, cnn 10, bert 3, bert-small 5]\n"
            "  --warmup N              untimed steps per mode before them [cnn 2, others 1]\n"
            "  --mem-limit SIZE        tracked-memory budget of one mode: a mode whose peak would\n"
            "                          exceed it is reported as OOM and not run (or stopped by the\n"
            "                          allocator); e.g. 512MiB, 16GiB, 2e9, none [16GiB]\n"
            "  --plan-only             no measurement: the engine's memory plan of every mode and batch\n"
            "                          (tracked bytes of a step + inputs, parameters, gradients,\n"
            "                          optimizer), OOM marked against --mem-limit; takes a second\n"
            "  --no-plan               do not skip modes by the engine's memory plan: run them and let\n"
            "                          the allocator refuse what exceeds --mem-limit (checks the plan)\n"
            "  --threads N             OpenMP threads [all cores]\n"
            "  --seed N                seed of the inputs, labels, initialisation and noise [0]\n"
            "  --quick                 smoke test: the workload's small batch sizes, 1 warm-up step,\n"
            "                          2 timed steps, a smaller SGEMM (explicit flags win)\n"
            "  --json FILE             write the results as JSON (atomically)\n"
            "  --plot FILE.svg         write two charts: peak memory and step time against batch size\n"
            "  -h, --help              this text\n"
            "\n"
            "A step is what `dpsgd train` does: no-DP: zero grad, forward + cross-entropy, backward,\n"
            "scale 1/B, SGD step (lr %g, momentum %g); DP: the same with the clipped gradient of the mode\n"
            "(C = %g) and Gaussian noise (sigma = %g) instead of the backward. Memory is measured with one\n"
            "process per mode (tracked allocator: per-stage increase on a fresh model, peak; VmHWM for\n"
            "the resident set); times are medians of interleaved steps. See docs/benchmarks.md.\n"
            "Exit status: 0 when the report is complete (OOM modes included), 1 when a measurement\n"
            "failed or an output could not be written, 2 on bad usage.\n",
            LR, MOMENTUM, CLIP_C, SIGMA);
}

static int bad_usage(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "%s: bench: ", prog);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see dpsgd bench --help)\n");
    return 2;
}

static int cmp_int(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static int parse_batches(const char *flag, const char *v, opts *o) {
    char tmp[512];
    if (strlen(v) >= sizeof tmp) return bad_usage("%s: list too long%s", flag, ""), 0;
    snprintf(tmp, sizeof tmp, "%s", v);
    o->nb = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long b;
        if (o->nb == MAX_BATCHES) {
            fprintf(stderr, "%s: bench: %s: at most %d batch sizes\n", prog, flag, MAX_BATCHES);
            return 0;
        }
        if (!dp_cli_parse_long(flag, tok, 1, 1L << 20, &b)) return 0;
        int dup = 0;
        for (int i = 0; i < o->nb; i++) dup |= o->batches[i] == (int)b;
        if (!dup) o->batches[o->nb++] = (int)b;
    }
    if (o->nb == 0) {
        fprintf(stderr, "%s: bench: %s '%s': no batch size given\n", prog, flag, v);
        return 0;
    }
    qsort(o->batches, (size_t)o->nb, sizeof(int), cmp_int);
    return 1;
}

static int parse_modes(const char *flag, const char *v, opts *o) {
    char tmp[512];
    if (strlen(v) >= sizeof tmp) return bad_usage("%s: list too long%s", flag, ""), 0;
    snprintf(tmp, sizeof tmp, "%s", v);
    memset(o->use_mode, 0, sizeof o->use_mode);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        dp_clip_mode c;
        if (!strcmp(tok, "no-dp") || !strcmp(tok, "no-DP") || !strcmp(tok, "nodp") || !strcmp(tok, "none"))
            o->use_mode[0] = 1;
        else if (dp_clip_mode_parse(tok, &c) == DP_OK)
            o->use_mode[1 + c] = 1;
        else {
            fprintf(stderr, "%s: bench: %s: unknown mode '%s' (choose among no-dp", prog, flag, tok);
            for (int k = 0; k < DP_CLIP_COUNT; k++) fprintf(stderr, ", %s", dp_clip_mode_name((dp_clip_mode)k));
            fprintf(stderr, ")\n");
            return 0;
        }
        n++;
    }
    if (n == 0) {
        fprintf(stderr, "%s: bench: %s '%s': no mode given\n", prog, flag, v);
        return 0;
    }
    return 1;
}

/* returns -1 to go on, else the exit status */
static int parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->reps = -1;
    o->warmup = -1;
    o->mem_limit = (size_t)16 << 30;
    for (int k = 0; k < NMODES; k++) o->use_mode[k] = 1;
    const char *wname = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quick")) {
            o->quick = 1;
            continue;
        } else if (!strcmp(a, "--no-plan")) {
            o->no_plan = 1;
            continue;
        } else if (!strcmp(a, "--plan-only")) {
            o->plan_only = 1;
            continue;
        } else if (a[0] != '-') {
            if (wname) return bad_usage("one workload only, got '%s' and '%s'", wname, a);
            wname = a;
            continue;
        }
        static const char *const with_value[] = {"--batch-sizes", "--modes", "--reps", "--warmup", "--mem-limit",
                                                 "--threads",     "--seed",  "--json", "--plot"};
        size_t f = 0, nf = sizeof with_value / sizeof with_value[0];
        while (f < nf && strcmp(a, with_value[f])) f++;
        if (f == nf) return bad_usage("unknown option '%s'%s", a, "");
        if (!dp_cli_need_value("bench", a, v, &i)) return 2;
        int ok = 1;
        if (!strcmp(a, "--batch-sizes"))
            ok = parse_batches(a, v, o);
        else if (!strcmp(a, "--modes"))
            ok = parse_modes(a, v, o);
        else if (!strcmp(a, "--reps"))
            ok = dp_cli_parse_long(a, v, 1, 100000, &o->reps);
        else if (!strcmp(a, "--warmup"))
            ok = dp_cli_parse_long(a, v, 0, 100000, &o->warmup);
        else if (!strcmp(a, "--mem-limit"))
            ok = dp_cli_parse_size("bench", a, v, &o->mem_limit);
        else if (!strcmp(a, "--threads"))
            ok = dp_cli_parse_long(a, v, 1, 1024, &o->threads);
        else if (!strcmp(a, "--seed"))
            ok = dp_cli_parse_long(a, v, 0, 1L << 62, &o->seed);
        else if (!strcmp(a, "--json") || !strcmp(a, "--plot")) {
            if (!v[0]) return bad_usage("%s: empty file name%s", a, "");
            if (!strcmp(a, "--json"))
                o->json = v;
            else
                o->plot = v;
        }
        if (!ok) return 2;
    }
    if (!wname) return bad_usage("give a workload: synthetic, cnn, bert or bert-small%s%s", "", "");
    if (o->plan_only && (o->json || o->plot || o->no_plan))
        return bad_usage("--plan-only: measures nothing, so it takes no %s%s", o->no_plan ? "--no-plan" : o->json ? "--json" : "--plot", "");
    for (int k = 0; k < NWORKLOADS; k++)
        if (!strcmp(wname, workloads[k].name)) o->w = &workloads[k];
    if (!o->w) return bad_usage("unknown workload '%s' (choose synthetic, cnn, bert or bert-small)%s", wname, "");
    if (o->nb == 0) {
        const int *src = o->quick ? o->w->quick : o->w->batches;
        o->nb = o->quick ? o->w->nquick : o->w->nbatches;
        memcpy(o->batches, src, sizeof(int) * (size_t)o->nb);
    }
    if (o->reps < 0) o->reps = o->quick ? 2 : o->w->reps;
    if (o->warmup < 0) o->warmup = o->quick ? 1 : o->w->warmup;
    /* outputs: fail now, not after the run */
    const char *outs[2] = {o->json, o->plot}, *flags[2] = {"--json", "--plot"};
    for (int k = 0; k < 2; k++) {
        if (!outs[k]) continue;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", outs[k]);
        char *slash = strrchr(dir, '/');
        if (!slash)
            snprintf(dir, sizeof dir, ".");
        else if (slash == dir)
            dir[1] = 0;
        else
            *slash = 0;
        if (access(dir, W_OK) != 0) {
            fprintf(stderr, "%s: bench: %s %s: cannot write in %s: %s\n", prog, flags[k], outs[k], dir,
                    strerror(errno));
            return 2;
        }
    }
    return -1;
}

/* ---- small helpers ---------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* a "VmHWM:" / "VmRSS:" line of /proc/self/status, in bytes (0 if unavailable) */
static size_t proc_file_bytes(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    size_t v = 0, n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) {
            v = (size_t)strtoull(line + n, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}
static size_t proc_status_bytes(const char *key) { return proc_file_bytes("/proc/self/status", key); }

/* the 1-minute load average (-1 if unavailable): other work on the machine skews the times */
static double loadavg1(void) {
    double v = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = -1;
        fclose(f);
    }
    return v;
}

/* CPU seconds all cores spent busy since boot (/proc/stat; -1 if unavailable) */
static double busy_cpu_s(void) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]);
    fclose(f);
    if (n < 5) return -1;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]; /* all but idle and iowait */
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds used by this process and its finished children */
static double own_cpu_s(void) {
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
           1e-6 * (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec);
}

static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ' || *p == '\t') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(buf, cap, "%s", p);
            }
            break;
        }
    fclose(f);
}

/* bytes for a table cell: "-" not applicable, B / KiB / MiB */
static void fmt_bytes(char *buf, size_t cap, double v) {
    if (v < 0)
        snprintf(buf, cap, "–");
    else if (v < 1024)
        snprintf(buf, cap, "%.0f B", v);
    else if (v < MIB)
        snprintf(buf, cap, "%.1f KiB", v / 1024);
    else
        snprintf(buf, cap, "%.1f MiB", v / MIB);
}

static void fmt_gib(char *buf, size_t cap, double v) {
    if (v >= GIB)
        snprintf(buf, cap, "%.1f GiB", v / GIB);
    else
        snprintf(buf, cap, "%.0f MiB", v / MIB);
}

/* ---- child processes: run fn in a fork, get its result struct through a pipe ------------ */

typedef void (*child_fn)(const void *arg, void *out);

/* 0: out filled by the child; otherwise the child died without answering: *sig = its signal
 * (0 if it exited) */
static int in_child(child_fn fn, const void *arg, void *out, size_t size, int *sig) {
    int fd[2];
    *sig = 0;
    if (pipe(fd) != 0) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
        memset(out, 0, size);
        fn(arg, out);
        const char *p = out;
        size_t off = 0;
        while (off < size) {
            ssize_t w = write(fd[1], p + off, size - off);
            if (w <= 0) _exit(3);
            off += (size_t)w;
        }
        _exit(0);
    }
    close(fd[1]);
    size_t got = 0;
    char *p = out;
    while (got < size) {
        ssize_t r = read(fd[0], p + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd[0]);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (got == size) return 0;
    if (WIFSIGNALED(ws)) *sig = WTERMSIG(ws);
    return -1;
}

/* ---- FLOPs of a step ------------------------------------------------------------------
 * The GEMM FLOPs of the trainable linear and convolution layers, per sample: forward
 * 2 * out_elements * D (D: the fan-in, in features or in_channels * k * k; out_elements =
 * T positions or tokens x out features), the same for the weight gradient, and again for the
 * input gradient of every such layer after the first trainable one (the engine skips that
 * one). Shapes come from the weight tensor (dp_model_tensor_shape) and the layer's output
 * shape in dp_model_describe ("-> 16x14x14" or "-> TxD"). NAN when they cannot be read. */
static double shape_elems(const char *s) {
    double v = 1;
    int any = 0;
    while (*s) {
        char *end;
        long d = strtol(s, &end, 10);
        if (end == s || d < 0) return -1;
        v *= (double)d;
        any = 1;
        s = end;
        if (*s == 'x')
            s++;
        else if (*s)
            return -1;
    }
    return any ? v : -1;
}

static void layer_flops(dp_model *m, double *fwd, double *bwd) {
    *fwd = *bwd = 0;
    const size_t cap = 1 << 20;
    char *desc = malloc(cap);
    if (!desc) goto unknown;
    dp_model_describe(m, desc, cap);
    int behind = 0; /* a trainable layer came before: input gradients are needed from here on */
    for (char *save = NULL, *line = strtok_r(desc, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int i;
        char kind[64], shp[64];
        if (sscanf(line, "%d %63s -> %63s", &i, kind, shp) != 3 || i < 0 || i >= dp_model_num_layers(m)) continue;
        dp_layer_kind k = dp_model_layer_kind(m, i);
        double out = shape_elems(shp);
        if (k == DP_LAYER_ATTENTION) { /* out = T x width */
            int T = 0, d = 0;
            if (sscanf(shp, "%dx%d", &T, &d) != 2 || T <= 0 || d <= 0) goto unknown;
            *fwd += 4.0 * T * T * d;
            if (behind) *bwd += 8.0 * T * T * d;
            continue;
        }
        if ((k != DP_LAYER_LINEAR && k != DP_LAYER_CONV2D) || dp_model_layer_params(m, i, NULL) == 0) continue;
        char wname[512];
        snprintf(wname, sizeof wname, "%s.weight", dp_model_layer_name(m, i));
        int64_t shape[4] = {0};
        int nd = 0;
        for (int t = 0; t < dp_model_num_tensors(m) && !nd; t++) {
            const char *name;
            float *data;
            size_t count;
            if (dp_model_tensor(m, t, &name, &data, &count) == DP_OK && !strcmp(name, wname))
                nd = dp_model_tensor_shape(m, t, shape);
        }
        if (nd < 2 || shape[0] <= 0 || out <= 0) goto unknown;
        double D = 1;
        for (int d = 1; d < nd; d++) D *= (double)shape[d];
        const double f = 2.0 * out * D;
        const int trains = !dp_model_layer_frozen(m, i);
        *fwd += f;
        if (trains) *bwd += f;  /* weight gradient */
        if (behind) *bwd += f;  /* input gradient */
        behind |= trains;
    }
    free(desc);
    return;
unknown:
    free(desc);
    *fwd = *bwd = NAN;
}

/* ---- the probe: the model's shapes, FLOPs and per-sample gradient sizes per mode -------- */

typedef struct {
    int ok;
    char msg[300];
    size_t np, dim;
    int K, nlayers;
    double creation_bytes;                 /* tracked bytes of model + optimizer */
    double step_plan[MAX_BATCHES][NMODES]; /* dp_model_plan_bytes per batch size and mode */
    size_t budget[MAX_BATCHES];            /* auto's mem_budget per batch size (see auto_budget) */
    double flops_fwd, flops_bwd;           /* per sample, no-DP step (NAN: unknown) */
} probe_result;

typedef struct {
    const workload *w;
    int nb, threads;
    const int *batches;
    size_t mem_limit;
} probe_arg;

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

static void probe_child(const void *argp, void *outp) {
    const probe_arg *a = argp;
    const workload *w = a->w;
    probe_result *r = outp;
    if (a->threads > 0) omp_set_num_threads(a->threads);
    dp_model *m = NULL;
    dp_optim *opt = NULL;
    dp_status st = w->create(&m);
    if (st == DP_OK) {
        dp_optim_params op = dp_optim_default_params(DP_OPT_SGD);
        op.lr = LR;
        op.momentum = MOMENTUM;
        st = dp_optim_create(&op, dp_model_num_params(m), &opt);
    }
    if (st != DP_OK) {
        snprintf(r->msg, sizeof r->msg, "%s", dp_last_error());
        return;
    }
    r->creation_bytes = (double)dp_mem_get().live_bytes;
    r->np = dp_model_num_params(m);
    r->dim = dp_model_input_size(m);
    r->K = dp_model_output_size(m);
    r->nlayers = dp_model_num_layers(m);
    layer_flops(m, &r->flops_fwd, &r->flops_bwd);
    for (int b = 0; b < a->nb; b++) {
        const int B = a->batches[b];
        r->step_plan[b][0] = (double)dp_model_plan_bytes(m, DP_CLIP_VANILLA, B, 1);
        const double inputs = (double)B * ((double)r->dim * 4 + 4 + (double)r->K * 4 + 4);
        r->budget[b] = auto_budget(dp_model_default_mem_budget(m, B), inputs + r->creation_bytes, a->mem_limit);
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

/* ---- one training step ----------------------------------------------------------------- */

typedef struct {
    float *x, *dz, *lv;
    int32_t *y;
    int B;
    size_t bytes;
} batch;

typedef struct {
    dp_model *m;
    dp_optim *opt;
    dp_rng noise;
    int mode;
    size_t budget; /* auto's mem_budget */
} runner;

static dp_status batch_alloc(const probe_result *pr, int B, batch *b) {
    memset(b, 0, sizeof *b);
    size_t live0 = dp_mem_get().live_bytes;
    b->B = B;
    b->x = dp_alloc(sizeof(float) * (size_t)B * pr->dim);
    b->y = dp_alloc(sizeof(int32_t) * (size_t)B);
    b->dz = dp_alloc(sizeof(float) * (size_t)B * (size_t)pr->K);
    b->lv = dp_alloc(sizeof(float) * (size_t)B);
    if (!b->x || !b->y || !b->dz || !b->lv) return DP_ERR_NOMEM;
    b->bytes = dp_mem_get().live_bytes - live0;
    return DP_OK;
}

static void batch_free(batch *b) {
    dp_free(b->x);
    dp_free(b->y);
    dp_free(b->dz);
    dp_free(b->lv);
}

static dp_status runner_create(const workload *w, int mode, uint64_t seed, runner *r) {
    memset(r, 0, sizeof *r);
    r->mode = mode;
    dp_status st = w->create(&r->m);
    if (st != DP_OK) return st;
    dp_rng init;
    dp_rng_seed(&init, seed ^ 0x1badc0ffeeULL); /* the same initialisation for every mode */
    dp_model_init(r->m, &init);
    dp_optim_params op = dp_optim_default_params(DP_OPT_SGD);
    op.lr = LR;
    op.momentum = MOMENTUM;
    if ((st = dp_optim_create(&op, dp_model_num_params(r->m), &r->opt)) != DP_OK) return st;
    dp_rng_seed(&r->noise, seed * 31 + 7 + (uint64_t)mode);
    return DP_OK;
}

static void runner_destroy(runner *r) {
    dp_optim_destroy(r->opt);
    dp_model_destroy(r->m);
    r->opt = NULL;
    r->m = NULL;
}

/* One step as src/train.c does it. parts (optional): seconds of forward + loss, backward or
 * clipped gradient, noise + scale + optimizer. inc (optional): per stage, the highest live
 * bytes within the stage minus live bytes when it began (-1: the stage does not occur).
 * *at: the stage running when the step failed. */
static dp_status step(runner *r, const batch *d, double parts[3], double inc[ST_COUNT], int *at) {
    dp_model *m = r->m;
    const int B = d->B, K = dp_model_output_size(m);
    const size_t np = dp_model_num_params(m);
    const unsigned char *mask = dp_model_trainable_mask(m);
    float *grad = dp_model_grad(m), *params = dp_model_params(m);
    size_t start[ST_COUNT] = {0};
    dp_status st;

    dp_mem_stage_reset();
    const double t0 = now_s();
    dp_model_zero_grad(m);
    *at = ST_FORWARD;
    start[ST_FORWARD] = dp_mem_get().live_bytes;
    dp_mem_stage(stage_mem[ST_FORWARD]);
    const float *z;
    if ((st = dp_model_forward(m, d->x, B, 1, NULL, &z)) != DP_OK) return st;
    if ((st = dp_loss_xent(z, d->y, B, K, d->lv, d->dz)) != DP_OK) return st;
    const double ta = now_s();
    *at = ST_BWD1;
    start[ST_BWD1] = dp_mem_get().live_bytes;
    dp_mem_stage(stage_mem[ST_BWD1]); /* also holds what clipped_grad allocates before its own mark */
    if (r->mode == 0) {
        st = dp_model_backward(m, d->dz, B);
    } else {
        dp_clip_params cp = dp_clip_default_params(); /* the engine's defaults for any other field */
        cp.mode = (dp_clip_mode)(r->mode - 1);
        cp.max_grad_norm = CLIP_C;
        cp.mem_budget = r->budget;
        int bad = 0;
        st = dp_model_clipped_grad(m, &cp, d->dz, B, NULL, NULL, &bad);
    }
    dp_mem_stage_info info[16];
    int ni = dp_mem_stage_report(info, 16);
    if (st != DP_OK) {
        for (int i = 0; i < ni; i++)
            if (!strcmp(info[i].name, stage_mem[ST_BWD2])) *at = ST_BWD2;
        return st;
    }
    const double tb = now_s();
    *at = ST_OPTIM;
    start[ST_OPTIM] = dp_mem_get().live_bytes;
    dp_mem_stage(stage_mem[ST_OPTIM]);
    const double scale = 1.0 / (double)B;
    if (r->mode != 0) /* as src/train.c: noise and averaging in one pass */
        dp_noise_gaussian_scaled(grad, np, mask, SIGMA * CLIP_C, scale, &r->noise);
    else {
#pragma omp parallel for schedule(static) if (np > 65536)
        for (size_t j = 0; j < np; j++) grad[j] = mask[j] ? (float)(grad[j] * scale) : 0.0f;
    }
    dp_optim_step(r->opt, params, grad, mask);
    const double t1 = now_s();
    if (parts) {
        parts[0] = ta - t0;
        parts[1] = tb - ta;
        parts[2] = t1 - tb;
    }
    if (inc) {
        for (int s = ST_FORWARD; s < ST_COUNT; s++) inc[s] = -1;
        ni = dp_mem_stage_report(info, 16);
        for (int i = 0; i < ni; i++)
            for (int s = ST_FORWARD; s < ST_COUNT; s++) {
                if (strcmp(info[i].name, stage_mem[s])) continue;
                size_t base = s == ST_BWD2 ? info[i].start_bytes : start[s]; /* backward 2 begins in the engine */
                inc[s] = info[i].peak_bytes > base ? (double)(info[i].peak_bytes - base) : 0;
            }
    }
    return DP_OK;
}

/* ---- memory child: one mode, one batch size ------------------------------------------- */

enum { RES_OK, RES_OOM, RES_ERROR };

typedef struct {
    const workload *w;
    const probe_result *pr;
    int mode, B;
    uint64_t seed;
    size_t limit, budget;
    int threads;
} mem_arg;

typedef struct {
    int status, oom_stage;
    char msg[300];
    double inc[ST_COUNT]; /* bytes; -1: not applicable */
    double inputs, peak_tracked, rss_start, rss_peak, seconds;
} mem_result;

static void mem_child(const void *argp, void *outp) {
    const mem_arg *a = argp;
    mem_result *r = outp;
    const double t0 = now_s();
    if (a->threads > 0) omp_set_num_threads(a->threads);
    r->rss_start = (double)proc_status_bytes("VmRSS:");
    for (int s = 0; s < ST_COUNT; s++) r->inc[s] = -1;
    dp_mem_set_limit(a->limit);
    dp_mem_reset_peak();
    batch d;
    runner run;
    memset(&run, 0, sizeof run);
    int at = ST_INPUTS;
    dp_status st = batch_alloc(a->pr, a->B, &d);
    if (st == DP_OK) {
        r->inputs = (double)d.bytes;
        dp_rng data;
        dp_rng_seed(&data, a->seed * 1000003 + (uint64_t)a->B);
        at = ST_CREATE;
        size_t live0 = dp_mem_get().live_bytes;
        dp_mem_stage_reset();
        dp_mem_stage(stage_mem[ST_CREATE]);
        st = runner_create(a->w, a->mode, a->seed, &run);
        run.budget = a->budget;
        if (st == DP_OK) {
            a->w->gen(run.m, &data, d.x, d.y, a->B);
            r->inc[ST_CREATE] = (double)(dp_mem_get().live_bytes - live0);
            double inc[ST_COUNT];
            st = step(&run, &d, NULL, inc, &at); /* first step: the table's per-stage increases */
            if (st == DP_OK) {
                for (int s = ST_FORWARD; s < ST_COUNT; s++) r->inc[s] = inc[s];
                st = step(&run, &d, NULL, NULL, &at); /* a steady step, in case it peaks higher */
            }
        }
    }
    r->peak_tracked = (double)dp_mem_get().peak_bytes;
    r->rss_peak = (double)proc_status_bytes("VmHWM:");
    r->oom_stage = at;
    if (st == DP_OK)
        r->status = RES_OK;
    else
        r->status = st == DP_ERR_NOMEM ? RES_OOM : RES_ERROR;
    if (st != DP_OK) snprintf(r->msg, sizeof r->msg, "%s", dp_last_error());
    runner_destroy(&run);
    batch_free(&d);
    r->seconds = now_s() - t0;
}

/* ---- the SGEMM rate -------------------------------------------------------------------- */

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
            double t0 = now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n_, n_, n_, 1.0f, A, n_, Bm, n_, 0.0f, C, n_);
            double dt = now_s() - t0;
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

typedef struct {
    int n, tries, threads;
} gemm_arg;
typedef struct {
    int ok;
    double gflops, best_s;
} gemm_result;

static void gemm_child(const void *argp, void *outp) {
    const gemm_arg *a = argp;
    gemm_result *r = outp;
    if (a->threads > 0) omp_set_num_threads(a->threads);
    r->gflops = sgemm_rate(a->n, a->tries, &r->best_s);
    r->ok = r->gflops > 0;
}

/* ---- timing child: every mode that fitted, one batch size ------------------------------ */

typedef struct {
    const workload *w;
    const probe_result *pr;
    int B;
    int run_mode[NMODES];
    uint64_t seed;
    int reps, warmup, threads;
    int gemm_n, gemm_tries; /* the SGEMM rate measured in the same process, before the steps */
    size_t budget;          /* auto's mem_budget */
} time_arg;

typedef struct {
    int status, failed_mode;
    char msg[300];
    double med_ms[NMODES], min_ms[NMODES], part_ms[NMODES][3];
    double gemm_gflops; /* SGEMM rate in this process (0: failed) */
    double seconds;
} time_result;

static void time_child(const void *argp, void *outp) {
    const time_arg *a = argp;
    time_result *r = outp;
    const double t0 = now_s();
    if (a->threads > 0) omp_set_num_threads(a->threads);
    r->gemm_gflops = sgemm_rate(a->gemm_n, a->gemm_tries, NULL);
    runner run[NMODES];
    memset(run, 0, sizeof run);
    double *times = calloc((size_t)NMODES * (size_t)a->reps * 4, sizeof(double)); /* step, 3 parts */
    batch d;
    int at = 0;
    r->status = RES_ERROR;
    r->failed_mode = -1;
    dp_status st = batch_alloc(a->pr, a->B, &d);
    if (!times) st = DP_ERR_NOMEM;
    for (int k = 0; k < NMODES && st == DP_OK; k++) {
        if (!a->run_mode[k]) continue;
        r->failed_mode = k;
        st = runner_create(a->w, k, a->seed, &run[k]);
        run[k].budget = a->budget;
    }
    if (st == DP_OK) { /* the same batch as the memory processes (same seed, same draws) */
        dp_rng data;
        dp_rng_seed(&data, a->seed * 1000003 + (uint64_t)a->B);
        for (int k = 0; k < NMODES; k++)
            if (run[k].m) {
                a->w->gen(run[k].m, &data, d.x, d.y, a->B);
                break;
            }
    }
    for (int k = 0; k < NMODES && st == DP_OK; k++) {
        if (!a->run_mode[k]) continue;
        r->failed_mode = k;
        for (int wu = 0; wu < a->warmup && st == DP_OK; wu++) st = step(&run[k], &d, NULL, NULL, &at);
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
                if ((st = step(&run[k], &d, parts, NULL, &at)) != DP_OK) break;
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
            r->med_ms[k] = 1e3 * median(tk, a->reps); /* sorts */
            r->min_ms[k] = 1e3 * tk[0];
            for (int p = 0; p < 3; p++)
                r->part_ms[k][p] = 1e3 * median(tk + (size_t)(p + 1) * (size_t)a->reps, a->reps);
        }
    } else {
        r->status = st == DP_ERR_NOMEM ? RES_OOM : RES_ERROR;
        snprintf(r->msg, sizeof r->msg, "%s", dp_last_error());
    }
    for (int k = 0; k < NMODES; k++) runner_destroy(&run[k]);
    batch_free(&d);
    free(times);
    r->seconds = now_s() - t0;
}

/* ---- the report ------------------------------------------------------------------------ */

enum { C_UNSELECTED, C_OK, C_OOM_PLAN, C_OOM_ALLOC, C_KILLED, C_ERROR };

typedef struct {
    int state;
    double plan;    /* bytes: the estimate the decision was made on */
    mem_result mem; /* when the memory child answered */
    int sig;
    int timed; /* times below are valid */
    double med_ms, min_ms, part_ms[3];
    double ref_ms; /* the no-DP median of the process that timed this mode: its ratios' base */
    char note[320]; /* why it failed */
} cell;

typedef struct {
    int B;
    cell c[NMODES];
    double inputs;
    int time_failed;
    int time_groups; /* processes the timing took (modes that do not fit in memory together) */
    char time_msg[320];
    double gemm_gflops; /* SGEMM rate measured in the timing process */
} batch_res;

static int nodp_ok(const batch_res *r) { return r->c[0].state == C_OK; }

static void cell_status_text(const cell *c, char *buf, size_t cap) {
    char g[32];
    switch (c->state) {
    case C_OOM_PLAN:
        fmt_gib(g, sizeof g, c->plan), snprintf(buf, cap, "OOM (plan: %s)", g);
        break;
    case C_OOM_ALLOC:
        snprintf(buf, cap, "OOM (%s)", c->mem.oom_stage == ST_INPUTS ? "inputs" : stage_title[c->mem.oom_stage]);
        break;
    case C_KILLED:
        snprintf(buf, cap, "killed (signal %d)", c->sig);
        break;
    case C_ERROR:
        snprintf(buf, cap, "error");
        break;
    default:
        snprintf(buf, cap, "–");
    }
}

static void print_batch_table(const opts *o, const batch_res *r, const probe_result *pr) {
    const double gemm_gflops = r->gemm_gflops;
    int modes[NMODES], n = 0;
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) modes[n++] = k;
    printf("\n### batch %d\n\n|  |", r->B);
    for (int j = 0; j < n; j++) printf(" %s |", mode_name(modes[j]));
    printf("\n|---|");
    for (int j = 0; j < n; j++) printf("---:|");
    printf("\n");
    char buf[96];
    printf("| *memory increase (tracked)* |");
    for (int j = 0; j < n; j++) printf("  |");
    printf("\n");
    for (int s = 0; s < ST_COUNT; s++) {
        printf("| %s |", stage_title[s]);
        for (int j = 0; j < n; j++) {
            const cell *c = &r->c[modes[j]];
            if (c->state == C_OK)
                fmt_bytes(buf, sizeof buf, c->mem.inc[s]);
            else
                snprintf(buf, sizeof buf, "%s", c->state == C_OOM_ALLOC && c->mem.oom_stage == s ? "OOM here" : "–");
            printf(" %s |", buf);
        }
        printf("\n");
    }
    const cell *c0 = &r->c[0];
    printf("| **peak tracked** |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->state == C_OK)
            fmt_bytes(buf, sizeof buf, c->mem.peak_tracked);
        else
            cell_status_text(c, buf, sizeof buf);
        printf(" **%s** |", buf);
    }
    printf("\n| peak tracked × no-DP |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->state == C_OK && nodp_ok(r))
            printf(" %.3f |", c->mem.peak_tracked / c0->mem.peak_tracked);
        else
            printf(" – |");
    }
    printf("\n| peak RSS (VmHWM) |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->state == C_OK)
            fmt_bytes(buf, sizeof buf, c->mem.rss_peak);
        else
            snprintf(buf, sizeof buf, "–");
        printf(" %s |", buf);
    }
    printf("\n| peak RSS × no-DP |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->state == C_OK && nodp_ok(r) && c0->mem.rss_peak > 0)
            printf(" %.3f |", c->mem.rss_peak / c0->mem.rss_peak);
        else
            printf(" – |");
    }
    printf("\n| *step time (ms, median)* |");
    for (int j = 0; j < n; j++) printf("  |");
    printf("\n");
    static const char *const part_title[3] = {"forward + loss", "backward / clipped grad", "noise + scale + SGD"};
    for (int p = 0; p < 3; p++) {
        printf("| %s |", part_title[p]);
        for (int j = 0; j < n; j++) {
            const cell *c = &r->c[modes[j]];
            if (c->timed)
                printf(" %.2f |", c->part_ms[p]);
            else
                printf(" – |");
        }
        printf("\n");
    }
    printf("| **step** |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->timed)
            printf(" **%.2f** |", c->med_ms);
        else {
            cell_status_text(c, buf, sizeof buf);
            printf(" %s |", c->state == C_OK ? "error" : buf);
        }
    }
    printf("\n| step time × no-DP |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->timed && c0->timed)
            printf(" %.3f |", c->med_ms / c->ref_ms);
        else
            printf(" – |");
    }
    printf("\n| GFLOP/s (no-DP step; %% of SGEMM in the same process) |");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (modes[j] == 0 && c->timed && isfinite(pr->flops_fwd)) {
            double gf = (double)r->B * (pr->flops_fwd + pr->flops_bwd) / (c->med_ms * 1e-3) / 1e9;
            if (gemm_gflops > 0)
                printf(" %.1f (%.0f%% of SGEMM) |", gf, 100 * gf / gemm_gflops);
            else
                printf(" %.1f |", gf);
        } else {
            printf(" – |");
        }
    }
    printf("\n");
    for (int j = 0; j < n; j++) {
        const cell *c = &r->c[modes[j]];
        if (c->note[0]) printf("\n- %s: %s", mode_name(modes[j]), c->note);
    }
    if (r->time_failed) printf("\n- timing: %s", r->time_msg);
    if (r->time_groups > 1)
        printf("\n- timing: in %d processes, since the modes would not fit in memory together; each ran no-DP "
               "too, interleaved with its modes; the no-DP column is the first process's, and every ratio is "
               "against the no-DP median of the mode's own process",
               r->time_groups);
    printf("\n");
}

/* the JSON document */
static void json_num(dp_strbuf *b, double v) {
    if (isfinite(v))
        dp_strbuf_printf(b, "%.10g", v);
    else
        dp_strbuf_printf(b, "null");
}

static const char *state_name(int s) {
    switch (s) {
    case C_OK:
        return "ok";
    case C_OOM_PLAN:
        return "oom_plan";
    case C_OOM_ALLOC:
        return "oom_allocator";
    case C_KILLED:
        return "killed";
    case C_ERROR:
        return "error";
    default:
        return "not_selected";
    }
}

typedef struct {
    char cpu[256], blas[96];
    const char *core;
    int set_by_us, threads;
    long nproc;
    double load_start; /* 1-minute load average before the run */
    double others;     /* share of all cores that other processes kept busy during the run (-1: unknown) */
} machine;

static void build_json(dp_strbuf *b, const opts *o, const probe_result *pr, const machine *mc, const gemm_result *g,
                       const gemm_arg *ga, const batch_res *res, double wall) {
    dp_strbuf_printf(b, "{\n  \"workload\": ");
    dp_strbuf_json_str(b, o->w->name);
    dp_strbuf_printf(b, ",\n  \"description\": ");
    dp_strbuf_json_str(b, o->w->title);
    dp_strbuf_printf(b, ",\n  \"parameters\": %zu,\n  \"input_size\": %zu,\n  \"classes\": %d,\n", pr->np, pr->dim,
                     pr->K);
    dp_strbuf_printf(b, "  \"flops_per_sample\": {\"forward\": ");
    json_num(b, pr->flops_fwd);
    dp_strbuf_printf(b, ", \"backward\": ");
    json_num(b, pr->flops_bwd);
    dp_strbuf_printf(b, "},\n  \"flops_note\": ");
    dp_strbuf_json_str(b, o->w->flops_note);
    dp_strbuf_printf(b, ",\n  \"machine\": {\"cpu\": ");
    dp_strbuf_json_str(b, mc->cpu);
    dp_strbuf_printf(b, ", \"nproc\": %ld, \"threads\": %d, \"blas\": ", mc->nproc, mc->threads);
    dp_strbuf_json_str(b, mc->blas);
    dp_strbuf_printf(b, ", \"blas_core\": ");
    dp_strbuf_json_str(b, mc->core);
    dp_strbuf_printf(b, ", \"blas_core_set_by_dpsgd\": %s, \"loadavg_start\": %.2f, \"other_processes_cpu_share\": ",
                     mc->set_by_us ? "true" : "false", mc->load_start);
    json_num(b, mc->others >= 0 ? mc->others : NAN);
    dp_strbuf_printf(b, "},\n");
    dp_strbuf_printf(b, "  \"sgemm\": {\"n\": %d, \"gflops\": ", ga->n);
    json_num(b, g->ok ? g->gflops : NAN);
    dp_strbuf_printf(b, ", \"best_seconds\": ");
    json_num(b, g->ok ? g->best_s : NAN);
    dp_strbuf_printf(
        b,
        "},\n  \"settings\": {\"reps\": %ld, \"warmup\": %ld, \"mem_limit_bytes\": %zu, \"seed\": %ld, "
        "\"quick\": %s, \"no_plan\": %s, \"sigma\": %g, \"max_grad_norm\": %g, \"lr\": %g, \"momentum\": %g},\n",
        o->reps, o->warmup, o->mem_limit, o->seed, o->quick ? "true" : "false", o->no_plan ? "true" : "false", SIGMA,
        CLIP_C, LR, MOMENTUM);
    dp_strbuf_printf(b, "  \"modes\": [");
    int first = 1;
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) {
            dp_strbuf_printf(b, "%s", first ? "" : ", ");
            dp_strbuf_json_str(b, mode_name(k));
            first = 0;
        }
    dp_strbuf_printf(b, "],\n  \"results\": [");
    for (int i = 0; i < o->nb; i++) {
        const batch_res *r = &res[i];
        const cell *c0 = &r->c[0];
        dp_strbuf_printf(b, "%s\n    {\"batch\": %d, \"inputs_bytes\": %.0f, \"flops_nodp_step\": ", i ? "," : "", r->B,
                         r->inputs);
        json_num(b, (double)r->B * (pr->flops_fwd + pr->flops_bwd));
        dp_strbuf_printf(b, ", \"sgemm_gflops\": ");
        json_num(b, r->gemm_gflops > 0 ? r->gemm_gflops : NAN);
        dp_strbuf_printf(b, ", \"modes\": {");
        first = 1;
        for (int k = 0; k < NMODES; k++) {
            if (!o->use_mode[k]) continue;
            const cell *c = &r->c[k];
            dp_strbuf_printf(b, "%s\n      ", first ? "" : ",");
            first = 0;
            dp_strbuf_json_str(b, mode_name(k));
            dp_strbuf_printf(b, ": {\"status\": \"%s\", \"plan_bytes\": %.0f", state_name(c->state), c->plan);
            if (c->note[0]) {
                dp_strbuf_printf(b, ", \"message\": ");
                dp_strbuf_json_str(b, c->note);
            }
            if (c->state == C_OK) {
                dp_strbuf_printf(b, ",\n        \"memory\": {");
                for (int s = 0; s < ST_COUNT; s++) {
                    dp_strbuf_printf(b, "\"%s_bytes\": ", stage_key[s]);
                    if (c->mem.inc[s] >= 0)
                        json_num(b, c->mem.inc[s]);
                    else
                        dp_strbuf_printf(b, "null");
                    dp_strbuf_printf(b, ", ");
                }
                dp_strbuf_printf(b,
                                 "\"peak_tracked_bytes\": %.0f, \"peak_rss_bytes\": %.0f, \"rss_at_start_bytes\": %.0f",
                                 c->mem.peak_tracked, c->mem.rss_peak, c->mem.rss_start);
                dp_strbuf_printf(b, ", \"peak_tracked_x_nodp\": ");
                json_num(b, nodp_ok(r) ? c->mem.peak_tracked / c0->mem.peak_tracked : NAN);
                dp_strbuf_printf(b, ", \"peak_rss_x_nodp\": ");
                json_num(b, nodp_ok(r) && c0->mem.rss_peak > 0 ? c->mem.rss_peak / c0->mem.rss_peak : NAN);
                dp_strbuf_printf(b, "}");
            }
            if (c->timed) {
                dp_strbuf_printf(
                    b,
                    ",\n        \"time\": {\"median_ms\": %.6g, \"min_ms\": %.6g, \"forward_loss_ms\": %.6g, "
                    "\"backward_ms\": %.6g, \"noise_scale_optimizer_ms\": %.6g, \"x_nodp\": ",
                    c->med_ms, c->min_ms, c->part_ms[0], c->part_ms[1], c->part_ms[2]);
                json_num(b, c0->timed && c->ref_ms > 0 ? c->med_ms / c->ref_ms : NAN);
                if (k == 0) {
                    double gf = (double)r->B * (pr->flops_fwd + pr->flops_bwd) / (c->med_ms * 1e-3) / 1e9;
                    dp_strbuf_printf(b, ", \"gflops\": ");
                    json_num(b, gf);
                    dp_strbuf_printf(b, ", \"fraction_of_sgemm\": ");
                    json_num(b, r->gemm_gflops > 0 ? gf / r->gemm_gflops : NAN);
                }
                dp_strbuf_printf(b, "}");
            }
            dp_strbuf_printf(b, "}");
        }
        dp_strbuf_printf(b, "}}");
    }
    dp_strbuf_printf(b, "\n  ],\n  \"wall_seconds\": %.3f\n}\n", wall);
}

static void build_svg(dp_strbuf *b, const opts *o, const batch_res *res, double gemm_gflops) {
    int n = 0, modes[NMODES];
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) modes[n++] = k;
    double *xs = calloc((size_t)o->nb, sizeof(double));
    double *mem = calloc((size_t)(n * o->nb), sizeof(double)), *tm = calloc((size_t)(n * o->nb), sizeof(double));
    int *mark = calloc((size_t)(n * o->nb), sizeof(int));
    dp_svg_series *sm = calloc((size_t)n, sizeof *sm), *st = calloc((size_t)n, sizeof *st);
    if (!xs || !mem || !tm || !mark || !sm || !st) {
        b->failed = 1;
        goto out;
    }
    double maxmem = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < o->nb; i++) {
            const cell *c = &res[i].c[modes[j]];
            if (c->state == C_OK && c->mem.peak_tracked > maxmem) maxmem = c->mem.peak_tracked;
        }
    const int use_gib = maxmem >= 2 * GIB || (o->mem_limit && o->mem_limit < 64 * GIB && maxmem >= 0.5 * GIB);
    const double unit = use_gib ? GIB : MIB;
    for (int i = 0; i < o->nb; i++) xs[i] = res[i].B;
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < o->nb; i++) {
            const cell *c = &res[i].c[modes[j]];
            size_t at = (size_t)j * (size_t)o->nb + (size_t)i;
            mem[at] = c->state == C_OK ? c->mem.peak_tracked / unit : NAN;
            tm[at] = c->timed ? c->med_ms : NAN;
            mark[at] = c->state == C_OOM_PLAN || c->state == C_OOM_ALLOC || c->state == C_KILLED;
        }
        sm[j] = (dp_svg_series){mode_name(modes[j]),
                                o->nb,
                                xs,
                                mem + (size_t)j * (size_t)o->nb,
                                mark + (size_t)j * (size_t)o->nb,
                                modes[j]};
        st[j] = sm[j];
        st[j].y = tm + (size_t)j * (size_t)o->nb;
    }
    char lim[64] = "", title[256], note[512];
    if (o->mem_limit) {
        char g[32];
        fmt_gib(g, sizeof g, (double)o->mem_limit);
        snprintf(lim, sizeof lim, "--mem-limit %s", g);
    }
    dp_svg_chart ch[2] = {
        {"Peak tracked memory of one step", "batch size (log scale)",
         use_gib ? "peak tracked memory (GiB, log scale)" : "peak tracked memory (MiB, log scale)", 1, 1, xs, o->nb,
         /* the limit line only when it is near the data: otherwise it squeezes the lines */
         o->mem_limit && (double)o->mem_limit <= 20 * maxmem ? (double)o->mem_limit / unit : 0, lim, "OOM", sm, n},
        {"Step time (median)", "batch size (log scale)", "step time (ms, log scale)", 1, 1, xs, o->nb, 0, NULL, "OOM",
         st, n},
    };
    snprintf(title, sizeof title, "dpsgd bench %s: memory and time per training step, by clipping mode", o->w->name);
    char gemm[64] = "";
    if (gemm_gflops > 0) snprintf(gemm, sizeof gemm, "; SGEMM %.0f GFLOP/s", gemm_gflops);
    /* a long workload description goes on two lines (broken at a space) to fit the width */
    char wt[300];
    snprintf(wt, sizeof wt, "%s", o->w->title);
    const size_t wmax = 110;
    if (strlen(wt) > wmax)
        for (size_t k = wmax; k > wmax / 2; k--)
            if (wt[k] == ' ') {
                wt[k] = '\n';
                break;
            }
    snprintf(note, sizeof note,
             "%s\n%d OpenMP threads%s; memory: one process per mode; time: median of %ld interleaved steps; "
             "OOM: over %s",
             wt, omp_get_max_threads(), gemm, o->reps, o->mem_limit ? lim : "the memory limit");
    dp_svg_charts(b, title, note, ch, 2, 2);
out:
    free(xs);
    free(mem);
    free(tm);
    free(mark);
    free(sm);
    free(st);
}

/* ---- the command ----------------------------------------------------------------------- */

/* --plan-only: the plan of every mode and batch size, nothing run */
static int plan_only_report(const opts *o, const probe_result *pr) {
    char lim[32];
    if (o->mem_limit)
        fmt_gib(lim, sizeof lim, (double)o->mem_limit);
    else
        snprintf(lim, sizeof lim, "none");
    printf("# dpsgd bench %s --plan-only\n\n", o->w->name);
    printf("- workload: %s; %zu parameters (%.1f MiB as float32)\n", o->w->title, pr->np, (double)pr->np * 4 / MIB);
    printf("- memory plan of a step (dp_model_plan_bytes: the engine's buffers for that mode and batch) + inputs, "
           "parameters, gradients and optimizer state (%.1f MiB); nothing is run; OOM: over --mem-limit %s\n\n",
           pr->creation_bytes / MIB, lim);
    printf("| batch |");
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) printf(" %s |%s", mode_name(k), k ? " × no-DP |" : "");
    printf("\n|---:|");
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) printf("---:|%s", k ? "---:|" : "");
    printf("\n");
    for (int i = 0; i < o->nb; i++) {
        const int B = o->batches[i];
        const double inputs = (double)B * ((double)pr->dim * 4 + 4 + (double)pr->K * 4 + 4);
        const double base = inputs + pr->creation_bytes + pr->step_plan[i][0];
        printf("| %d |", B);
        for (int k = 0; k < NMODES; k++) {
            if (!o->use_mode[k]) continue;
            const double v = inputs + pr->creation_bytes + pr->step_plan[i][k];
            char b[32];
            fmt_gib(b, sizeof b, v);
            const int oom = o->mem_limit && v > (double)o->mem_limit;
            printf(" %s%s |", b, oom ? " (OOM)" : "");
            if (k) printf(" %.3f |", v / base);
        }
        printf("\n");
    }
    return 0;
}

int dp_cmd_bench(int argc, char **argv) {
    opts o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    const double wall0 = now_s();
    if (o.threads > 0) omp_set_num_threads((int)o.threads); /* sets the ICV only: no thread starts here */
    int sig;
    int failed = 0;

    /* the model's facts, from a child */
    probe_result pr;
    probe_arg pa = {o.w, o.nb, (int)o.threads, o.batches, o.mem_limit};
    if (in_child(probe_child, &pa, &pr, sizeof pr, &sig) != 0 || !pr.ok) {
        fprintf(stderr, "%s: bench %s: cannot create the model: %s\n", prog, o.w->name,
                sig ? "the process was killed" : pr.msg);
        return 1;
    }

    if (o.plan_only) return plan_only_report(&o, &pr);

    machine mc;
    memset(&mc, 0, sizeof mc);
    cpu_model(mc.cpu, sizeof mc.cpu);
    snprintf(mc.blas, sizeof mc.blas, "%s", OPENBLAS_VERSION);
    char *bp = mc.blas;
    while (*bp == ' ') memmove(bp, bp + 1, strlen(bp));
    for (size_t n = strlen(bp); n > 0 && bp[n - 1] == ' '; n--) bp[n - 1] = 0;
    mc.core = openblas_get_corename();
    mc.set_by_us = getenv("DPSGD_BLAS_CORE_SET") != NULL;
    mc.threads = omp_get_max_threads();
    mc.nproc = sysconf(_SC_NPROCESSORS_ONLN);
    mc.load_start = loadavg1();
    const double busy0 = busy_cpu_s(), own0 = own_cpu_s();

    /* SGEMM rate */
    gemm_arg ga = {o.quick ? 1024 : 2048, o.quick ? 2 : 5, (int)o.threads};
    gemm_result gr;
    fprintf(stderr, "bench %s: SGEMM %dx%dx%d, best of %d ...\n", o.w->name, ga.n, ga.n, ga.n, ga.tries);
    if (in_child(gemm_child, &ga, &gr, sizeof gr, &sig) != 0 || !gr.ok) {
        fprintf(stderr, "bench %s: the SGEMM measurement failed\n", o.w->name);
        memset(&gr, 0, sizeof gr);
        failed = 1;
    }
    const double gemm_gflops = gr.ok ? gr.gflops : 0;

    char lim[32];
    if (o.mem_limit)
        fmt_gib(lim, sizeof lim, (double)o.mem_limit);
    else
        snprintf(lim, sizeof lim, "none");
    printf("# dpsgd bench %s\n\n", o.w->name);
    printf("- workload: %s; %zu parameters (%.1f MiB as float32)\n", o.w->title, pr.np, (double)pr.np * 4 / MIB);
    printf("- CPU: %s; online cores: %ld; OpenMP threads: %d; %s, core %s (OPENBLAS_CORETYPE=%s%s); load average "
           "%.2f at the start\n",
           mc.cpu, mc.nproc, mc.threads, mc.blas, mc.core,
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset",
           mc.set_by_us ? ", set by dpsgd: OpenBLAS detected Prescott" : "", mc.load_start);
    if (gr.ok)
        printf("- SGEMM %dx%dx%d: %.1f GFLOP/s (best of %d, %.1f ms)\n", ga.n, ga.n, ga.n, gr.gflops, ga.tries,
               gr.best_s * 1e3);
    printf("- step: SGD lr %g momentum %g; DP modes: C = %g, sigma = %g; %ld warm-up + %ld timed steps per mode, "
           "interleaved; median; seed %ld; memory limit per mode: %s\n",
           LR, MOMENTUM, CLIP_C, SIGMA, o.warmup, o.reps, o.seed, lim);
    printf("- memory: tracked allocator, one process per mode; per stage: the highest live bytes in the stage minus "
           "live bytes when it began, on the first step of a fresh model; peak tracked: the highest live bytes "
           "(inputs, model, optimizer, buffers) over that step and a second one; peak RSS: VmHWM of that process "
           "(all memory: libraries, OpenBLAS, malloc)\n");
    if (isfinite(pr.flops_fwd))
        printf("- FLOPs of a no-DP step: %.4g per sample, %.4g forward + %.4g backward (%s)\n",
               pr.flops_fwd + pr.flops_bwd, pr.flops_fwd, pr.flops_bwd, o.w->flops_note);
    else
        printf("- FLOPs of a no-DP step: unknown (the layer shapes could not be read)\n");
    fflush(stdout);

    batch_res *res = calloc((size_t)o.nb, sizeof *res);
    if (!res) return dp_cli_fail(DP_ERR_NOMEM);
    for (int i = 0; i < o.nb; i++) {
        batch_res *r = &res[i];
        const int B = o.batches[i];
        r->B = B;
        r->inputs = (double)B * ((double)pr.dim * 4 + 4 + (double)pr.K * 4 + 4);
        /* memory: one child per mode */
        for (int k = 0; k < NMODES; k++) {
            cell *c = &r->c[k];
            if (!o.use_mode[k]) continue;
            /* the plan: the engine's estimate of a step's buffers (dp_model_plan_bytes) + the
             * inputs + parameters, gradients and optimizer state */
            c->plan = r->inputs + pr.creation_bytes + pr.step_plan[i][k];
            if (o.mem_limit && c->plan > (double)o.mem_limit && !o.no_plan) {
                char g[32];
                c->state = C_OOM_PLAN;
                fmt_gib(g, sizeof g, c->plan);
                snprintf(c->note, sizeof c->note,
                         "OOM by plan: needs about %s (the engine's plan of a step, dp_model_plan_bytes, + inputs, "
                         "parameters, gradients, optimizer state) over --mem-limit %s; not run",
                         g, lim);
                fprintf(stderr, "bench %s: batch %d, %s: OOM (plan: %s), skipped\n", o.w->name, B, mode_name(k), g);
                continue;
            }
            mem_arg ma = {o.w, &pr, k, B, (uint64_t)o.seed, o.mem_limit, pr.budget[i], (int)o.threads};
            int got = in_child(mem_child, &ma, &c->mem, sizeof c->mem, &sig);
            char msg[sizeof c->mem.msg]; /* a copy: formatting from one field of *c into another */
            memcpy(msg, c->mem.msg, sizeof msg);
            msg[sizeof msg - 1] = 0;
            if (got != 0) {
                c->state = sig ? C_KILLED : C_ERROR;
                c->sig = sig;
                snprintf(c->note, sizeof c->note, "the measuring process %s",
                         sig == SIGKILL ? "was killed (SIGKILL: out of system memory?)"
                         : sig          ? "died on a signal"
                                        : "failed");
                failed = 1;
            } else if (c->mem.status == RES_OOM) {
                c->state = C_OOM_ALLOC;
                snprintf(c->note, sizeof c->note, "OOM in %s: %s",
                         c->mem.oom_stage == ST_INPUTS ? "the inputs" : stage_title[c->mem.oom_stage], msg);
            } else if (c->mem.status == RES_ERROR) {
                c->state = C_ERROR;
                snprintf(c->note, sizeof c->note, "error: %s", msg);
                failed = 1;
            } else {
                c->state = C_OK;
            }
            char pk[32], rs[32];
            fmt_bytes(pk, sizeof pk, c->mem.peak_tracked);
            fmt_bytes(rs, sizeof rs, c->mem.rss_peak);
            if (c->state == C_OK)
                fprintf(stderr, "bench %s: batch %d, %s: peak tracked %s, peak RSS %s (%.1f s)\n", o.w->name, B,
                        mode_name(k), pk, rs, c->mem.seconds);
            else
                fprintf(stderr, "bench %s: batch %d, %s: %s\n", o.w->name, B, mode_name(k), c->note);
        }
        /* time: one child for the modes that fitted, interleaved; when their models would not
         * fit in memory together (each holds its buffers), several children, each with no-DP
         * and as many modes as fit in 80% of the available memory */
        int todo[NMODES], left = 0;
        for (int k = 0; k < NMODES; k++) left += todo[k] = r->c[k].state == C_OK;
        double avail = 0.8 * (double)proc_file_bytes("/proc/meminfo", "MemAvailable:");
        const char *av = getenv("DPSGD_TEST_BENCH_AVAIL"); /* tests: pretend this much is available */
        if (av && *av) avail = atof(av);
        while (left > 0 && !r->time_failed) {
            time_arg ta = {o.w, &pr, B, {0}, (uint64_t)o.seed, (int)o.reps, (int)o.warmup, (int)o.threads, ga.n, 3, pr.budget[i]};
            double used = 0;
            int added = 0;
            for (int k = 0; k < NMODES; k++) {
                if (r->c[k].state != C_OK || (k > 0 && !todo[k])) continue;
                const double need = fmax(r->c[k].mem.rss_peak, r->c[k].plan);
                if (k > 0 && added > 0 && avail > 0 && used + need > avail) continue;
                ta.run_mode[k] = 1;
                used += need;
                if (k > 0) added++;
                if (todo[k]) left--;
                todo[k] = 0;
            }
            fprintf(stderr, "bench %s: batch %d: timing %ld + %ld steps per mode%s ...\n", o.w->name, B, o.warmup,
                    o.reps, left > 0 || r->time_groups > 0 ? " (modes in groups that fit in memory)" : "");
            time_result tr;
            int got = in_child(time_child, &ta, &tr, sizeof tr, &sig);
            if (got != 0 || tr.status != RES_OK) {
                r->time_failed = 1;
                failed = 1;
                if (got != 0)
                    snprintf(r->time_msg, sizeof r->time_msg, "the timing process %s (signal %d)",
                             sig ? "was killed" : "failed", sig);
                else
                    snprintf(r->time_msg, sizeof r->time_msg, "%s failed: %s",
                             tr.failed_mode >= 0 ? mode_name(tr.failed_mode) : "setup", tr.msg);
                fprintf(stderr, "bench %s: batch %d: timing failed: %s\n", o.w->name, B, r->time_msg);
            } else {
                for (int k = 0; k < NMODES; k++) {
                    if (!ta.run_mode[k] || (k == 0 && r->time_groups > 0)) continue;
                    cell *c = &r->c[k];
                    c->timed = 1;
                    c->med_ms = tr.med_ms[k];
                    c->ref_ms = ta.run_mode[0] ? tr.med_ms[0] : NAN;
                    c->min_ms = tr.min_ms[k];
                    memcpy(c->part_ms, tr.part_ms[k], sizeof c->part_ms);
                }
                if (r->time_groups == 0) r->gemm_gflops = tr.gemm_gflops;
                fprintf(stderr, "bench %s: batch %d: timed (%.1f s; SGEMM %.1f GFLOP/s)\n", o.w->name, B, tr.seconds,
                        tr.gemm_gflops);
            }
            r->time_groups++;
        }
        print_batch_table(&o, r, &pr);
        fflush(stdout);
    }

    /* summary across batch sizes */
    printf("\n### summary\n\n| batch | mode | peak tracked | × no-DP | peak RSS | × no-DP | step ms | × no-DP |\n"
           "|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < o.nb; i++) {
        const batch_res *r = &res[i];
        const cell *c0 = &r->c[0];
        for (int k = 0; k < NMODES; k++) {
            if (!o.use_mode[k]) continue;
            const cell *c = &r->c[k];
            char a[64], b2[64], t[64], mr[32] = "–", rr[32] = "–", trt[32] = "–";
            if (c->state == C_OK) {
                fmt_bytes(a, sizeof a, c->mem.peak_tracked);
                fmt_bytes(b2, sizeof b2, c->mem.rss_peak);
                if (nodp_ok(r)) {
                    snprintf(mr, sizeof mr, "%.3f", c->mem.peak_tracked / c0->mem.peak_tracked);
                    if (c0->mem.rss_peak > 0) snprintf(rr, sizeof rr, "%.3f", c->mem.rss_peak / c0->mem.rss_peak);
                }
            } else {
                cell_status_text(c, a, sizeof a);
                snprintf(b2, sizeof b2, "–");
            }
            if (c->timed)
                snprintf(t, sizeof t, "%.2f", c->med_ms);
            else
                snprintf(t, sizeof t, "–");
            if (c->timed && c0->timed && c->ref_ms > 0) snprintf(trt, sizeof trt, "%.3f", c->med_ms / c->ref_ms);
            printf("| %d | %s | %s | %s | %s | %s | %s | %s |\n", r->B, mode_name(k), a, mr, b2, rr, t, trt);
        }
    }

    /* targets */
    printf("\nTargets (the issues', for this workload; reported, not enforced):\n");
    int any_target = 0;
    for (int i = 0; i < o.nb; i++) {
        const batch_res *r = &res[i];
        const cell *c0 = &r->c[0];
        for (int t = 0; t < o.w->ntargets; t++) {
            const int k = o.w->targets[t].mode;
            const double tmax = o.w->targets[t].max;
            const cell *c = &r->c[k];
            double x;
            if (o.w->targets[t].what == 'm') {
                if (c0->state != C_OK || c->state != C_OK) continue;
                x = c->mem.peak_tracked / c0->mem.peak_tracked;
            } else {
                if (!c0->timed || !c->timed) continue;
                if (!(c->ref_ms > 0)) continue;
                x = c->med_ms / c->ref_ms;
            }
            printf("- batch %d: %s %s <= %.2fx no-DP: %.3fx: %s\n", r->B, mode_name(k),
                   o.w->targets[t].what == 'm' ? "peak tracked memory" : "step time", tmax, x, x <= tmax ? "PASS" : "MISS");
            any_target = 1;
        }
    }
    if (o.w->gemm_target) {
        int at = -1;
        for (int i = 0; i < o.nb; i++)
            if (res[i].c[0].timed && (at < 0 || res[i].B == 1024 || (res[at].B != 1024 && res[i].B > res[at].B)))
                at = i;
        if (at >= 0 && res[at].gemm_gflops > 0 && isfinite(pr.flops_fwd)) {
            double gf = (double)res[at].B * (pr.flops_fwd + pr.flops_bwd) / (res[at].c[0].med_ms * 1e-3) / 1e9;
            double gr2 = res[at].gemm_gflops;
            printf("- batch %d: no-DP step >= 60%% of the SGEMM rate: %.1f of %.1f GFLOP/s = %.0f%%: %s%s\n", res[at].B,
                   gf, gr2, 100 * gf / gr2, gf >= 0.6 * gr2 ? "PASS" : "MISS",
                   res[at].B == 1024 ? "" : " (the target is stated at batch 1024)");
            any_target = 1;
        }
    }
    if (!any_target) printf("- none applies to the modes run\n");
    const double wall = now_s() - wall0;
    const double busy1 = busy_cpu_s(), own1 = own_cpu_s();
    mc.others = -1;
    if (busy0 >= 0 && busy1 >= 0 && wall > 0) {
        mc.others = ((busy1 - busy0) - (own1 - own0)) / (wall * (double)mc.nproc);
        if (mc.others < 0) mc.others = 0;
    }
    printf("\nRun time: %.1f s", wall);
    if (mc.others >= 0)
        printf("; other processes kept %.0f%% of the cores busy meanwhile%s", 100 * mc.others,
               mc.others > 0.1 ? " (the times are not those of an idle machine)" : "");
    printf("\n");
    fflush(stdout);

    if (o.json) {
        dp_strbuf b = {0};
        build_json(&b, &o, &pr, &mc, &gr, &ga, res, wall);
        if (b.failed || !dp_cli_write_atomic("--json", o.json, b.s)) failed = 1;
        dp_strbuf_free(&b);
    }
    if (o.plot) {
        dp_strbuf b = {0};
        build_svg(&b, &o, res, gemm_gflops);
        if (b.failed || !dp_cli_write_atomic("--plot", o.plot, b.s)) failed = 1;
        dp_strbuf_free(&b);
    }
    free(res);
    return failed ? 1 : 0;
}
