/* cmd_norms.c: `dpsgd norms`, the distribution of per-sample gradient norms of a model on a
 * dataset at given weights (overall and per layer), to choose the clipping norm C. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "svg.h"

#define prog dp_cli_prog

#define DEFAULT_BATCH 256
#define DEFAULT_BINS 20
#define MAX_CANDIDATES 16

static const double quantiles[] = {0.05, 0.25, 0.50, 0.75, 0.95, 0.99};
#define NQ ((int)(sizeof quantiles / sizeof quantiles[0]))

static void usage(FILE *f) {
    fprintf(f,
"usage: dpsgd norms [options]\n"
"\n"
"Per-sample gradient norms of a model on a dataset at given weights: for every sample the\n"
"L2 norm of the gradient of its cross-entropy loss over the trainable parameters (the norm\n"
"DP-SGD clips to C) and over each layer's parameters. Prints their distribution (count,\n"
"mean, min, quantiles 5/25/50/75/95/99%%, max), a log-scale histogram, the fraction of\n"
"samples that candidate values of C would clip, and a suggestion. The output is NOT\n"
"differentially private: run it on public data or data you may look at (docs/norms.md).\n"
"\n"
"weights:\n"
"  --init FILE             weights to evaluate at (safetensors, as written by train\n"
"                          --save-weights; a NaN or infinity is refused) [the initialisation\n"
"                          for --seed]\n"
"  --seed N                initialisation (without --init) and dropout masks [0]\n"
"data and model (as `dpsgd train`; docs/model-spec.md):\n"
"  --data DIR              IDX directory, or " DP_CLI_SYNTHETIC " [" DP_CLI_DEFAULT_DATA "]\n"
"  --normalize MEAN,STD    standardise pixels, or 'none' [0.2860,0.3530 for IDX data]\n"
"  --split S               train | test: which split to measure [train]\n"
"  --limit N               the first N samples of the split [all]\n"
"  --model NAME|SPEC       'cnn', 'mlp', 'transformer', a layer spec, or FILE.onnx (docs/onnx.md) [cnn]\n"
"  --freeze I|NAME         freeze layer I, or every layer named NAME or NAME.* (repeatable):\n"
"                          frozen layers take no part in the norms, as in training\n");
    dp_cli_model_usage(f);
    char modes[128] = "";
    for (int c = 0; c < DP_CLIP_COUNT; c++)
        snprintf(modes + strlen(modes), sizeof modes - strlen(modes), "%s%s", c ? " | " : "", dp_clip_mode_name((dp_clip_mode)c));
    fprintf(f,
"engine:\n"
"  --clipping MODE         %s:\n"
"                          how the norms are computed (every mode gives the same numbers\n"
"                          up to rounding) [ghost]\n"
"  --batch-size B          samples per forward/backward [%d]\n"
"  --threads N             OpenMP threads [all cores]\n"
"output:\n"
"  --clip-values C1,C2,..  candidate clipping norms to report [round values (1-2-5, or\n"
"                          powers of ten over a wide range) from the 5%% to the 99%%\n"
"                          quantile, and the median]\n"
"  --bins N                histogram bins [%d]\n"
"  --per-sample-out FILE   write the norms as .npy, float32 [N, 1 + L] (atomically): column 0\n"
"                          the total norm, then one column per trainable layer in the order\n"
"                          of the table (names in --json's \"columns\")\n"
"  --json FILE             write a JSON summary (atomically)\n"
"                          (both outputs are checked before any work: their directory must exist\n"
"                          and take a new file, and they must not name the same file)\n"
"  --quiet                 no progress on stderr\n"
"  -h, --help              this help\n",
            modes, DEFAULT_BATCH, DEFAULT_BINS);
}

/* ---- the JSON text (a dp_strbuf, tools/svg.h) ---- */

/* a number, or null when not finite */
static void sb_num(dp_strbuf *b, double x) {
    if (isfinite(x)) dp_strbuf_printf(b, "%.9g", x);
    else dp_strbuf_printf(b, "null");
}

/* ---- statistics ---- */

typedef struct {
    long count, nonfinite;
    double mean, min, max, q[NQ];
} stats;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* quantile p of sorted v[0..n-1], linear interpolation between the closest ranks (numpy's
 * default) */
static double quantile(const float *v, long n, double p) {
    if (n == 0) return NAN;
    double h = p * (double)(n - 1);
    long lo = (long)floor(h);
    if (lo >= n - 1) return v[n - 1];
    return v[lo] + (h - (double)lo) * ((double)v[lo + 1] - v[lo]);
}

/* column c of the [n, ncol] table; tmp has room for n floats (left sorted: the finite values) */
static stats column_stats(const float *tab, long n, int ncol, int c, float *tmp) {
    stats s;
    memset(&s, 0, sizeof s);
    double sum = 0;
    for (long i = 0; i < n; i++) {
        float x = tab[(size_t)i * ncol + c];
        if (!isfinite(x)) {
            s.nonfinite++;
            continue;
        }
        tmp[s.count++] = x;
        sum += x;
    }
    qsort(tmp, (size_t)s.count, sizeof(float), cmp_float);
    s.mean = s.count ? sum / (double)s.count : NAN;
    s.min = s.count ? tmp[0] : NAN;
    s.max = s.count ? tmp[s.count - 1] : NAN;
    for (int k = 0; k < NQ; k++) s.q[k] = quantile(tmp, s.count, quantiles[k]);
    return s;
}

/* candidate values of C: round values from one step below the 5% quantile to the first at or
 * above the 99% quantile (1-2-5 steps over up to 3.5 decades, else powers of ten), and the
 * median; at most 14 */
static int default_candidates(const stats *t, double *out) {
    int n = 0;
    if (!(t->count > 0) || !(t->max > 0)) return 0;
    double lo = t->q[0] > 0 ? t->q[0] : t->min > 0 ? t->min : t->max * 1e-3, hi = t->q[NQ - 1];
    if (!(hi > lo)) hi = lo;
    static const double m125[] = {1, 2, 5}, m1[] = {1};
    const int fine = log10(hi / lo) <= 3.5;
    const double *mant = fine ? m125 : m1;
    const int nm = fine ? 3 : 1;
    const double step = fine ? 2.5 : 10; /* ratio between neighbours (at most) */
    double dec = pow(10, floor(log10(lo)));
    for (int m = 0; n < 13; m = (m + 1) % nm) {
        double c = mant[m] * dec;
        if (m == nm - 1) dec *= 10;
        if (c * step < lo) continue; /* start one step below lo */
        out[n++] = c;
        if (c >= hi) break;
    }
    if (t->q[2] > 0) out[n++] = t->q[2];
    /* sort, drop near-duplicates of the median */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j] < out[j - 1]; j--) {
            double x = out[j];
            out[j] = out[j - 1];
            out[j - 1] = x;
        }
    int k = 0;
    for (int i = 0; i < n; i++)
        if (k == 0 || out[i] > out[k - 1] * (1 + 1e-9)) out[k++] = out[i];
    return k;
}

static int parse_candidates(const char *v, double *out) {
    int n = 0;
    const char *p = v;
    char buf[64];
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof buf || n == MAX_CANDIDATES) {
            fprintf(stderr, "%s: --clip-values %s: expected up to %d positive numbers separated by commas\n", prog, v,
                    MAX_CANDIDATES);
            return -1;
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        double x;
        if (!dp_cli_parse_double("--clip-values", buf, &x)) return -1;
        if (!(x > 0)) {
            fprintf(stderr, "%s: --clip-values %s: every value must be > 0\n", prog, buf);
            return -1;
        }
        out[n++] = x;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) {
                fprintf(stderr, "%s: --clip-values %s: trailing comma\n", prog, v);
                return -1;
            }
        }
    }
    if (n == 0) {
        fprintf(stderr, "%s: --clip-values: empty list\n", prog);
        return -1;
    }
    return n;
}

static void print_stats_row(const char *name, int namew, size_t params, const stats *s, double share) {
    printf("%-*s %9zu %7ld %10.4g %10.4g", namew, name, params, s->count, s->mean, s->min);
    for (int k = 0; k < NQ; k++) printf(" %10.4g", s->q[k]);
    printf(" %10.4g", s->max);
    if (share >= 0) printf(" %6.1f%%", 100 * share);
    printf("\n");
}

static void sb_stats(dp_strbuf *b, const stats *s) {
    dp_strbuf_printf(b, "\"count\": %ld, \"nonfinite\": %ld, \"mean\": ", s->count, s->nonfinite);
    sb_num(b, s->mean);
    dp_strbuf_printf(b, ", \"min\": ");
    sb_num(b, s->min);
    for (int k = 0; k < NQ; k++) {
        dp_strbuf_printf(b, ", \"q%02d\": ", (int)lround(100 * quantiles[k]));
        sb_num(b, s->q[k]);
    }
    dp_strbuf_printf(b, ", \"max\": ");
    sb_num(b, s->max);
}

int dp_cmd_norms(int argc, char **argv) {
    const char *data = DP_CLI_DEFAULT_DATA, *model_name = "cnn", *init_path = NULL, *per_sample_out = NULL,
               *json = NULL;
    int data_given = 0, quiet = 0, split_test = 0;
    long limit = 0, threads = 0, batch = DEFAULT_BATCH, bins = DEFAULT_BINS, seed = 0;
    dp_clip_mode mode = DP_CLIP_GHOST;
    double cand[MAX_CANDIDATES + 16];
    int ncand = 0;
    dp_cli_model_opts mo;
    dp_cli_model_opts_init(&mo, "norms");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int shared = dp_cli_model_flag(&mo, a, v, &i);
        if (shared < 0) return 2;
        if (shared) continue;
#define NEED_VALUE DP_CLI_NEED_VALUE("norms")
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--data")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--data: empty path");
            data = v;
            data_given = 1;
        } else if (!strcmp(a, "--model")) {
            NEED_VALUE;
            model_name = v;
        } else if (!strcmp(a, "--init")) {
            NEED_VALUE;
            init_path = v;
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 0, 1L << 62, &seed)) return 2;
        } else if (!strcmp(a, "--split")) {
            NEED_VALUE;
            if (!strcmp(v, "train")) split_test = 0;
            else if (!strcmp(v, "test")) split_test = 1;
            else {
                fprintf(stderr, "%s: --split %s: must be train or test\n", prog, v);
                return 2;
            }
        } else if (!strcmp(a, "--limit")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, 1L << 40, &limit)) return 2;
        } else if (!strcmp(a, "--clipping")) {
            NEED_VALUE;
            if (dp_clip_mode_parse(v, &mode) != DP_OK) return dp_cli_die(dp_cli_error());
        } else if (!strcmp(a, "--batch-size")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, 1 << 20, &batch)) return 2;
        } else if (!strcmp(a, "--threads")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--clip-values")) {
            NEED_VALUE;
            if ((ncand = parse_candidates(v, cand)) < 0) return 2;
        } else if (!strcmp(a, "--bins")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, 1000, &bins)) return 2;
        } else if (!strcmp(a, "--per-sample-out")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--per-sample-out: empty path");
            per_sample_out = v;
        } else if (!strcmp(a, "--json")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--json: empty path");
            json = v;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else {
            return dp_cli_unknown("norms", a);
        }
#undef NEED_VALUE
    }
    if (!dp_cli_model_check(&mo, model_name, &data, data_given)) return 2;
    const dp_cli_output outs[] = {{"--json", json, NULL}, {"--per-sample-out", per_sample_out, NULL}};
    int bad_out = dp_cli_check_outputs(outs, 2); /* before any work: never compute, then fail to write */
    if (bad_out) return bad_out;
    if (threads > 0) omp_set_num_threads((int)threads);

    dp_status st;
    dp_dataset tr, te;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    dp_model *m = NULL;
    float *tab = NULL, *tmp = NULL, *dz = NULL, *loss = NULL;
    double *sq = NULL;
    int *cols = NULL;
    stats *st_cols = NULL;
    double *share = NULL;
    dp_strbuf jb = {0};
    int rc = 1, K;
    dp_cli_data_info info;
    const dp_cli_data_spec ds = {.data = data, .model_name = model_name, .mo = &mo, .seed = (uint64_t)seed,
                                 .info = &info};
    int bad = dp_cli_load_data_and_model(&ds, &tr, &te, &K, &m);
    if (bad) {
        rc = bad;
        goto done;
    }
    if (init_path && (st = dp_model_load_safetensors(m, init_path)) != DP_OK) {
        fprintf(stderr, "%s: --init %s\n", prog, dp_cli_error());
        goto done;
    }
    const dp_dataset *d = split_test ? &te : &tr;
    const long n = limit > 0 && (size_t)limit < d->n ? limit : (long)d->n;
    const int L = dp_model_num_layers(m);
    cols = malloc(sizeof(int) * (size_t)(L + 1));
    int nl = 0; /* trainable layers */
    for (int l = 0; l < L; l++)
        if (dp_model_layer_params(m, l, NULL) > 0 && !dp_model_layer_frozen(m, l)) cols[nl++] = l;
    const int ncol = 1 + nl;
    const int B = (int)(batch < n ? batch : n);
    tab = malloc(sizeof(float) * (size_t)n * ncol);
    tmp = malloc(sizeof(float) * (size_t)n);
    dz = malloc(sizeof(float) * (size_t)B * K);
    loss = malloc(sizeof(float) * (size_t)B);
    sq = malloc(sizeof(double) * (size_t)B * L);
    st_cols = malloc(sizeof(stats) * (size_t)ncol);
    share = calloc((size_t)ncol, sizeof(double));
    if (!cols || !tab || !tmp || !dz || !loss || !sq || !st_cols || !share) {
        rc = dp_cli_fail(DP_ERR_NOMEM);
        goto done;
    }

    /* the per-sample norms, batch by batch */
    dp_rng rng;
    dp_rng_seed(&rng, (uint64_t)seed ^ 0x6e6f726d73ULL);
    const int tty = isatty(2);
    const double t0 = omp_get_wtime();
    double last = t0, loss_sum = 0;
    long correct = 0, nonfinite_loss = 0;
    for (long off = 0; off < n; off += B) {
        int b = (int)(n - off < B ? n - off : B);
        const float *logits;
        if ((st = dp_model_forward(m, d->x + (size_t)off * d->dim, b, 1, &rng, &logits)) != DP_OK) {
            rc = dp_cli_fail(st);
            goto done;
        }
        for (int i = 0; i < b; i++) {
            const float *z = logits + (size_t)i * K;
            int am = 0;
            for (int k = 1; k < K; k++)
                if (z[k] > z[am]) am = k;
            correct += am == d->y[off + i];
        }
        st = d->t ? dp_loss_mse(logits, d->t + (size_t)off * (size_t)K, b, K, loss, dz)
                  : dp_loss_xent(logits, d->y + off, b, K, loss, dz);
        if (st != DP_OK && st != DP_ERR_NONFINITE) {
            rc = dp_cli_fail(st);
            goto done;
        }
        for (int i = 0; i < b; i++) {
            if (isfinite(loss[i])) loss_sum += loss[i];
            else nonfinite_loss++;
        }
        if ((st = dp_model_layer_sq_norms(m, mode, dz, b, sq)) != DP_OK) {
            rc = dp_cli_fail(st);
            goto done;
        }
        for (int i = 0; i < b; i++) {
            float *row = tab + (size_t)(off + i) * ncol;
            double total = 0;
            for (int c = 0; c < nl; c++) {
                double s = sq[(size_t)i * L + cols[c]];
                total += s;
                row[1 + c] = (float)sqrt(s);
            }
            row[0] = (float)sqrt(total);
            if (isfinite(total) && total > 0)
                for (int c = 0; c < nl; c++) share[1 + c] += sq[(size_t)i * L + cols[c]] / total;
        }
        double now = omp_get_wtime();
        if (!quiet && off + b < n && (tty ? now - last > 0.2 : now - last > 10)) {
            fprintf(stderr, "%snorms: %ld/%ld samples (%.0f%%), %.1f s%s", tty ? "\r" : "", off + b, n,
                    100.0 * (double)(off + b) / (double)n, now - t0, tty ? "" : "\n");
            fflush(stderr);
            last = now;
        }
    }
    if (!quiet && tty && last != t0) fprintf(stderr, "\r\033[K");
    const double seconds = omp_get_wtime() - t0;

    /* statistics */
    for (int c = 0; c < ncol; c++) st_cols[c] = column_stats(tab, n, ncol, c, tmp);
    const stats *tot = &st_cols[0];
    long n_share = 0;
    for (long i = 0; i < n; i++)
        if (isfinite(tab[(size_t)i * ncol]) && tab[(size_t)i * ncol] > 0) n_share++;
    for (int c = 1; c < ncol; c++) share[c] = n_share ? share[c] / (double)n_share : NAN;
    share[0] = 1;
    if (ncand == 0) ncand = default_candidates(tot, cand);
    /* the histogram of the total norm: log-spaced bins over the positive finite norms */
    column_stats(tab, n, ncol, 0, tmp); /* tmp: the sorted finite totals */
    long zeros = 0;
    while (zeros < tot->count && tmp[zeros] <= 0) zeros++;
    const long npos = tot->count - zeros;
    int nb = npos == 0 ? 0 : (double)tmp[zeros] < tot->max ? (int)bins : 1;
    long hist[1000];
    double edges[1001];
    memset(hist, 0, sizeof hist);
    if (nb > 0) {
        double lo = log(tmp[zeros]), hi = log(tot->max);
        for (int k = 0; k <= nb; k++) edges[k] = exp(lo + (hi - lo) * k / nb);
        edges[0] = tmp[zeros];
        edges[nb] = tot->max;
        for (long i = zeros; i < tot->count; i++) {
            int k = nb == 1 ? 0 : (int)((log(tmp[i]) - lo) / (hi - lo) * nb);
            if (k < 0) k = 0;
            if (k >= nb) k = nb - 1;
            hist[k]++;
        }
    }

    /* report */
    size_t trainable = dp_model_num_trainable(m);
    printf("norms: %s, %zu parameters (%zu trainable), at %s\n", info.model_desc, dp_model_num_params(m), trainable,
           init_path ? init_path : "the initialisation (--seed)");
    printf("data: %s, %s split: %ld samples", info.data_desc, split_test ? "test" : "train", n);
    if (info.tokens) printf(" (sequences of %d tokens, vocabulary %d)", info.seq_len, info.vocab);
    if (d->t) printf(", %d regression targets\n", K);
    else printf(", %d classes\n", K);
    printf("engine: clipping %s, batch %d, %d threads, %.1f s\n", dp_clip_mode_name(mode), B, omp_get_max_threads(),
           seconds);
    const double mean_loss = n > nonfinite_loss ? loss_sum / (double)(n - nonfinite_loss) : NAN;
    if (d->t) printf("at these weights: mean squared error %.4f", mean_loss);
    else printf("at these weights: mean cross-entropy %.4f, accuracy %.2f%%", mean_loss, 100.0 * (double)correct / (double)n);
    if (nonfinite_loss) printf(", %ld non-finite losses", nonfinite_loss);
    printf("\n\nper-sample gradient norms (L2; total: over all trainable parameters, the norm DP-SGD clips;\n"
           "share: the layer's part of the summed squared norms):\n");
    int namew = 5;
    for (int c = 0; c < nl; c++) {
        int w = (int)strlen(dp_model_layer_name(m, cols[c]));
        if (w > namew) namew = w;
    }
    printf("%-*s %9s %7s %10s %10s", namew, "layer", "params", "count", "mean", "min");
    for (int k = 0; k < NQ; k++) printf(" %9.0f%%", 100 * quantiles[k]);
    printf(" %10s %7s\n", "max", "share");
    print_stats_row("total", namew, trainable, tot, -1);
    for (int c = 0; c < nl; c++)
        print_stats_row(dp_model_layer_name(m, cols[c]), namew, dp_model_layer_params(m, cols[c], NULL), &st_cols[1 + c],
                        share[1 + c]);
    if (tot->nonfinite) printf("non-finite total norms: %ld (left out of the statistics)\n", tot->nonfinite);

    printf("\nhistogram of the total norm (%d log-spaced bins):\n", nb);
    if (zeros) printf("  %-23s %7ld\n", "zero", zeros);
    long hmax = 1;
    for (int k = 0; k < nb; k++)
        if (hist[k] > hmax) hmax = hist[k];
    for (int k = 0; k < nb; k++) {
        int bar = (int)((double)hist[k] / (double)hmax * 50 + 0.5);
        if (hist[k] && !bar) bar = 1;
        printf("  [%10.4g, %10.4g%c %7ld  ", edges[k], edges[k + 1], k == nb - 1 ? ']' : ')', hist[k]);
        for (int j = 0; j < bar; j++) putchar('#');
        putchar('\n');
    }

    printf("\nclipping at C (clipped: norm > C; scale: mean of min(1, C / norm)):\n");
    double *clipped = malloc(sizeof(double) * (size_t)(ncand ? ncand : 1)), *scale = malloc(sizeof(double) * (size_t)(ncand ? ncand : 1));
    if (!clipped || !scale) {
        free(clipped);
        free(scale);
        rc = dp_cli_fail(DP_ERR_NOMEM);
        goto done;
    }
    for (int j = 0; j < ncand; j++) {
        long over = 0;
        double ssum = 0;
        for (long i = 0; i < tot->count; i++) {
            over += tmp[i] > cand[j];
            ssum += tmp[i] > cand[j] ? cand[j] / tmp[i] : 1.0;
        }
        clipped[j] = tot->count ? (double)over / (double)tot->count : NAN;
        scale[j] = tot->count ? ssum / (double)tot->count : NAN;
        printf("  C = %-10.4g clipped %6.2f%%   scale %.3f%s\n", cand[j], 100 * clipped[j], scale[j],
               fabs(cand[j] - tot->q[2]) <= 1e-9 * fabs(tot->q[2]) ? "   (the median)" : "");
    }
    printf("suggestion: C at the median: %.4g (half of the samples clipped); at the 75%% quantile: %.4g (a quarter)\n",
           tot->q[2], tot->q[3]);

    if (per_sample_out) {
        int64_t shape[2] = {n, ncol};
        if ((st = dp_npy_save(per_sample_out, DP_NPY_F32, 2, shape, tab)) != DP_OK) {
            fprintf(stderr, "%s: --per-sample-out %s\n", prog, dp_cli_error());
            free(clipped);
            free(scale);
            goto done;
        }
        printf("per-sample norms: %s (float32 [%ld, %d]: column 0 the total, then the %d layers of the table in order)\n",
               per_sample_out, n, ncol, nl);
    }
    if (json) {
        dp_strbuf_printf(&jb, "{\n  \"model\": ");
        dp_strbuf_json_str(&jb, info.model_desc);
        dp_strbuf_printf(&jb, ",\n  \"parameters\": %zu,\n  \"trainable\": %zu,\n  \"weights\": ", dp_model_num_params(m),
                  trainable);
        if (init_path) dp_strbuf_json_str(&jb, init_path);
        else dp_strbuf_printf(&jb, "null");
        dp_strbuf_printf(&jb, ",\n  \"seed\": %ld,\n  \"data\": ", seed);
        dp_strbuf_json_str(&jb, info.data_desc);
        dp_strbuf_printf(&jb, ",\n  \"split\": \"%s\",\n  \"samples\": %ld,\n  \"classes\": %d,\n  \"clipping\": \"%s\",\n"
                       "  \"batch_size\": %d,\n  \"threads\": %d,\n  \"seconds\": %.3f,\n  \"loss\": ",
                  split_test ? "test" : "train", n, K, dp_clip_mode_name(mode), B, omp_get_max_threads(), seconds);
        sb_num(&jb, n > nonfinite_loss ? loss_sum / (double)(n - nonfinite_loss) : NAN);
        dp_strbuf_printf(&jb, ",\n  \"loss_kind\": \"%s\",\n  \"accuracy\": ", d->t ? "mse" : "xent");
        sb_num(&jb, d->t ? NAN : (double)correct / (double)n);
        dp_strbuf_printf(&jb, ",\n  \"total\": {");
        sb_stats(&jb, tot);
        dp_strbuf_printf(&jb, "},\n  \"layers\": [");
        for (int c = 0; c < nl; c++) {
            dp_strbuf_printf(&jb, "%s\n    {\"index\": %d, \"name\": ", c ? "," : "", cols[c]);
            dp_strbuf_json_str(&jb, dp_model_layer_name(m, cols[c]));
            dp_strbuf_printf(&jb, ", \"kind\": \"%s\", \"params\": %zu, ", dp_layer_kind_name(dp_model_layer_kind(m, cols[c])),
                      dp_model_layer_params(m, cols[c], NULL));
            sb_stats(&jb, &st_cols[1 + c]);
            dp_strbuf_printf(&jb, ", \"share\": ");
            sb_num(&jb, share[1 + c]);
            dp_strbuf_printf(&jb, "}");
        }
        dp_strbuf_printf(&jb, "\n  ],\n  \"histogram\": {\"zero\": %ld, \"edges\": [", zeros);
        for (int k = 0; k <= nb && nb > 0; k++) {
            dp_strbuf_printf(&jb, "%s", k ? ", " : "");
            sb_num(&jb, edges[k]);
        }
        dp_strbuf_printf(&jb, "], \"counts\": [");
        for (int k = 0; k < nb; k++) dp_strbuf_printf(&jb, "%s%ld", k ? ", " : "", hist[k]);
        dp_strbuf_printf(&jb, "]},\n  \"candidates\": [");
        for (int j = 0; j < ncand; j++) {
            dp_strbuf_printf(&jb, "%s{\"C\": ", j ? ", " : "");
            sb_num(&jb, cand[j]);
            dp_strbuf_printf(&jb, ", \"clipped\": ");
            sb_num(&jb, clipped[j]);
            dp_strbuf_printf(&jb, ", \"scale\": ");
            sb_num(&jb, scale[j]);
            dp_strbuf_printf(&jb, "}");
        }
        dp_strbuf_printf(&jb, "],\n  \"suggested_C\": ");
        sb_num(&jb, tot->q[2]);
        dp_strbuf_printf(&jb, ",\n  \"per_sample_out\": ");
        if (per_sample_out) dp_strbuf_json_str(&jb, per_sample_out);
        else dp_strbuf_printf(&jb, "null");
        dp_strbuf_printf(&jb, ",\n  \"columns\": [\"total\"");
        for (int c = 0; c < nl; c++) {
            dp_strbuf_printf(&jb, ", ");
            dp_strbuf_json_str(&jb, dp_model_layer_name(m, cols[c]));
        }
        dp_strbuf_printf(&jb, "]\n}\n");
        if (jb.failed) {
            free(clipped);
            free(scale);
            rc = dp_cli_fail(DP_ERR_NOMEM);
            goto done;
        }
        if (!dp_cli_write_atomic("--json", json, jb.s)) {
            free(clipped);
            free(scale);
            goto done;
        }
    }
    free(clipped);
    free(scale);
    rc = 0;
done:
    dp_strbuf_free(&jb);
    free(cols);
    free(tab);
    free(tmp);
    free(dz);
    free(loss);
    free(sq);
    free(st_cols);
    free(share);
    dp_model_destroy(m);
    dp_dataset_free(&tr);
    dp_dataset_free(&te);
    return rc;
}
