/* cmd_bench.c: `dpsgd bench WORKLOAD` and `dpsgd bench --model FILE.onnx`: the options, and the run: the probe, the
 * SGEMM rate, then per batch size one memory process per mode (skipped when the engine's plan is over
 * --mem-limit) and the timing process(es), then the summary, JSON and SVG. What each process
 * does is in bench_measure.c, the report in bench_report.c; tools/bench.h has the map.
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
#include <unistd.h>

#include <cblas.h>

#include "bench.h"
#include "cli.h"

int dp_cmd_bench(int argc, char **argv);

#define prog dp_cli_prog

static void usage(FILE *f) {
    fprintf(f, "usage: dpsgd bench WORKLOAD [options]\n"
               "       dpsgd bench --model FILE.onnx [options]\n"
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
               "  --model FILE.onnx       instead of a workload: a graph exported from PyTorch (docs/onnx.md),\n"
               "                          with the file's weights; N(0,1) inputs (uniform token ids for a\n"
               "                          token input), uniform labels [16,64; --quick 4,8]; no targets.\n"
               "                          A file that does not load is refused (exit 2) before any work\n"
               "\n"
               "options:\n"
               "  --batch-sizes LIST      comma-separated batch sizes [the workload's]\n"
               "  --modes LIST            among no-dp");
    for (int c = 0; c < DP_CLIP_COUNT; c++) fprintf(f, ",%s", dp_clip_mode_name((dp_clip_mode)c));
    fprintf(f,
            " [all]\n"
            "  --reps N                timed steps per mode, interleaved across modes\n"
            "                          [synthetic 5, cnn 10, bert 3, bert-small 5, --model 3]\n"
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
            "  --seed N                seed of the inputs, labels, initialisation (and the noise with\n"
            "                          --noise seeded) [0]\n"
            "  --noise SOURCE          secure: the OS-seeded ChaCha20 generator, as dpsgd train by default;\n"
            "                          seeded: the seeded stream, as with --noise-seed [secure]\n"
            "  --quick                 smoke test: the workload's small batch sizes, 1 warm-up step,\n"
            "                          2 timed steps, a smaller SGEMM (explicit flags win)\n"
            "  --json FILE             write the results as JSON (atomically)\n"
            "  --plot FILE.svg         write two charts: peak memory and step time against batch size\n"
            "  -h, --help              this text\n"
            "\n"
            "A step is the library's, as `dpsgd train` runs it: no-DP: zero grad, forward + cross-entropy,\n"
            "backward, scale 1/B, SGD step (lr %g, momentum %g); DP: the same with the clipped gradient of\n"
            "the mode (C = %g) and Gaussian noise (sigma = %g; --noise: secure or seeded)\n"
            "instead of the backward, and the accountant. Memory is measured with one\n"
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

static int parse_batches(const char *flag, const char *v, bench_opts *o) {
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

static int parse_modes(const char *flag, const char *v, bench_opts *o) {
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
static int parse(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->reps = -1;
    o->warmup = -1;
    o->mem_limit = (size_t)16 << 30;
    for (int k = 0; k < NMODES; k++) o->use_mode[k] = 1;
    const char *wname = NULL, *model = NULL;
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
        } else if (a[0] != '-' && dp_cli_split_flag(a)) {
            return dp_cli_unknown("bench", a);
        } else if (a[0] != '-') {
            if (wname) return bad_usage("one workload only, got '%s' and '%s'", wname, a);
            wname = a;
            continue;
        }
        static const char *const with_value[] = {"--batch-sizes", "--modes", "--reps", "--warmup", "--mem-limit",
                                                 "--threads",     "--seed",  "--json", "--plot",   "--model", "--noise"};
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
        else if (!strcmp(a, "--noise")) {
            if (!strcmp(v, "seeded")) o->seeded_noise = 1;
            else if (!strcmp(v, "secure")) o->seeded_noise = 0;
            else {
                fprintf(stderr, "%s: --noise %s: expected secure or seeded\n", prog, v);
                ok = 0;
            }
        }
        else if (!strcmp(a, "--model")) {
            if (!v[0]) return bad_usage("--model: empty file name%s%s", "", "");
            if (model) return bad_usage("--model: one file only, got '%s' and '%s'", model, v);
            model = v;
        } else if (!strcmp(a, "--json") || !strcmp(a, "--plot")) {
            if (!v[0]) return bad_usage("%s: empty file name%s", a, "");
            if (!strcmp(a, "--json"))
                o->json = v;
            else
                o->plot = v;
        }
        if (!ok) return 2;
    }
    if (wname && model)
        return bad_usage("a workload or --model FILE, not both (got '%s' and --model %s)", wname, model);
    if (!wname && !model)
        return bad_usage("give a workload (synthetic, cnn, bert or bert-small) or --model FILE.onnx%s%s", "", "");
    if (o->plan_only && (o->json || o->plot || o->no_plan)) {
        const char *which = o->no_plan ? "--no-plan" : o->json ? "--json" : "--plot";
        return bad_usage("--plan-only: measures nothing, so it takes no %s%s", which, "");
    }
    o->w = model ? bench_model_workload(model) : bench_find_workload(wname);
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

/* ---- the run ---------------------------------------------------------------------------- */

/* memory: one child per mode of batch size i; modes over --mem-limit by the plan are not run.
 * Returns 1 when a measurement failed. */
static int measure_memory(const bench_opts *o, const probe_result *pr, int i, const char *lim, bench_batch *r) {
    const int B = r->B;
    int sig, failed = 0;
    for (int k = 0; k < NMODES; k++) {
        bench_cell *c = &r->c[k];
        if (!o->use_mode[k]) continue;
        /* the plan: the engine's estimate of a step's buffers (dp_model_plan_bytes) + the
         * inputs + parameters, gradients and optimizer state */
        c->plan = r->inputs + pr->creation_bytes + pr->step_plan[i][k];
        if (o->mem_limit && c->plan > (double)o->mem_limit && !o->no_plan) {
            char g[32];
            c->state = C_OOM_PLAN;
            bench_fmt_gib(g, sizeof g, c->plan);
            snprintf(c->note, sizeof c->note,
                     "OOM by plan: needs about %s (the engine's plan of a step, dp_model_plan_bytes, + inputs, "
                     "parameters, gradients, optimizer state) over --mem-limit %s; not run",
                     g, lim);
            fprintf(stderr, "bench %s: batch %d, %s: OOM (plan: %s), skipped\n", o->w->name, B, bench_mode_name(k), g);
            continue;
        }
        mem_arg ma = {o->w, pr, k, B, (uint64_t)o->seed, o->mem_limit, pr->budget[i], (int)o->threads, !o->seeded_noise};
        int got = bench_in_child(bench_mem_child, &ma, &c->mem, sizeof c->mem, &sig);
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
                     c->mem.oom_stage == ST_INPUTS ? "the inputs" : bench_stage_title[c->mem.oom_stage], msg);
        } else if (c->mem.status == RES_ERROR) {
            c->state = C_ERROR;
            snprintf(c->note, sizeof c->note, "error: %s", msg);
            failed = 1;
        } else {
            c->state = C_OK;
        }
        char pk[32], rs[32];
        bench_fmt_bytes(pk, sizeof pk, c->mem.peak_tracked);
        bench_fmt_bytes(rs, sizeof rs, c->mem.rss_peak);
        if (c->state == C_OK)
            fprintf(stderr, "bench %s: batch %d, %s: peak tracked %s, peak RSS %s (%.1f s)\n", o->w->name, B,
                    bench_mode_name(k), pk, rs, c->mem.seconds);
        else
            fprintf(stderr, "bench %s: batch %d, %s: %s\n", o->w->name, B, bench_mode_name(k), c->note);
    }
    return failed;
}

/* time: one child for the modes that fitted, interleaved; when their models would not fit in
 * memory together (each holds its buffers), several children, each with no-DP and as many
 * modes as fit in 80% of the available memory. Returns 1 when the timing failed. */
static int measure_time(const bench_opts *o, const probe_result *pr, int i, int gemm_n, bench_batch *r) {
    const int B = r->B;
    int sig, failed = 0;
    int todo[NMODES], left = 0;
    for (int k = 0; k < NMODES; k++) left += todo[k] = r->c[k].state == C_OK;
    double avail = 0.8 * (double)bench_proc_bytes("/proc/meminfo", "MemAvailable:");
    const char *av = getenv("DPSGD_TEST_BENCH_AVAIL"); /* tests: pretend this much is available */
    if (av && *av) avail = atof(av);
    while (left > 0 && !r->time_failed) {
        time_arg ta = {.w = o->w,
                       .pr = pr,
                       .B = B,
                       .seed = (uint64_t)o->seed,
                       .reps = (int)o->reps,
                       .warmup = (int)o->warmup,
                       .threads = (int)o->threads,
                       .gemm_n = gemm_n,
                       .gemm_tries = 3,
                       .budget = pr->budget[i],
                       .secure = !o->seeded_noise};
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
        fprintf(stderr, "bench %s: batch %d: timing %ld + %ld steps per mode%s ...\n", o->w->name, B, o->warmup,
                o->reps, left > 0 || r->time_groups > 0 ? " (modes in groups that fit in memory)" : "");
        time_result tr;
        int got = bench_in_child(bench_time_child, &ta, &tr, sizeof tr, &sig);
        if (got != 0 || tr.status != RES_OK) {
            r->time_failed = 1;
            failed = 1;
            if (got != 0)
                snprintf(r->time_msg, sizeof r->time_msg, "the timing process %s (signal %d)",
                         sig ? "was killed" : "failed", sig);
            else
                snprintf(r->time_msg, sizeof r->time_msg, "%s failed: %s",
                         tr.failed_mode >= 0 ? bench_mode_name(tr.failed_mode) : "setup", tr.msg);
            fprintf(stderr, "bench %s: batch %d: timing failed: %s\n", o->w->name, B, r->time_msg);
        } else {
            for (int k = 0; k < NMODES; k++) {
                if (!ta.run_mode[k] || (k == 0 && r->time_groups > 0)) continue;
                bench_cell *c = &r->c[k];
                c->timed = 1;
                c->med_ms = tr.med_ms[k];
                c->ref_ms = ta.run_mode[0] ? tr.med_ms[0] : NAN;
                c->min_ms = tr.min_ms[k];
                memcpy(c->part_ms, tr.part_ms[k], sizeof c->part_ms);
            }
            if (r->time_groups == 0) r->gemm_gflops = tr.gemm_gflops;
            fprintf(stderr, "bench %s: batch %d: timed (%.1f s; SGEMM %.1f GFLOP/s)\n", o->w->name, B, tr.seconds,
                    tr.gemm_gflops);
        }
        r->time_groups++;
    }
    return failed;
}

/* the machine, for the report: CPU, BLAS and its core type, threads, cores, load */
static void machine_facts(bench_machine *mc) {
    memset(mc, 0, sizeof *mc);
    bench_cpu_model(mc->cpu, sizeof mc->cpu);
    snprintf(mc->blas, sizeof mc->blas, "%s", OPENBLAS_VERSION);
    char *bp = mc->blas;
    while (*bp == ' ') memmove(bp, bp + 1, strlen(bp));
    for (size_t n = strlen(bp); n > 0 && bp[n - 1] == ' '; n--) bp[n - 1] = 0;
    mc->core = openblas_get_corename();
    mc->set_by_us = getenv("DPSGD_BLAS_CORE_SET") != NULL;
    mc->threads = omp_get_max_threads();
    mc->nproc = sysconf(_SC_NPROCESSORS_ONLN);
    mc->load_start = bench_loadavg1();
}

int dp_cmd_bench(int argc, char **argv) {
    bench_opts o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    const double wall0 = bench_now_s();
    if (o.threads > 0) omp_set_num_threads((int)o.threads); /* sets the ICV only: no thread starts here */
    int sig;
    int failed = 0;

    /* the model's facts, from a child */
    probe_result pr;
    probe_arg pa = {o.w, o.nb, (int)o.threads, o.batches, o.mem_limit};
    memset(&pr, 0, sizeof pr);
    const int probe_rc = bench_in_child(bench_probe_child, &pa, &pr, sizeof pr, &sig);
    if (probe_rc == 0 && !pr.ok && pr.create_failed && o.w->model_file) {
        /* the loader's message names the file and the node: bad input, as in `dpsgd train` */
        fprintf(stderr, "%s: bench --model %s\n", prog, pr.msg);
        return 2;
    }
    if (probe_rc != 0 || !pr.ok) {
        fprintf(stderr, "%s: bench %s: cannot create the model: %s\n", prog, o.w->name,
                sig ? "the process was killed" : pr.msg);
        return 1;
    }
    if (o.w->model_file) bench_model_describe(&pr);

    if (o.plan_only) return bench_plan_only_report(&o, &pr);

    bench_machine mc;
    machine_facts(&mc);
    const double busy0 = bench_busy_cpu_s(), own0 = bench_own_cpu_s();

    /* SGEMM rate */
    gemm_arg ga = {o.quick ? 1024 : 2048, o.quick ? 2 : 5, (int)o.threads};
    gemm_result gr;
    fprintf(stderr, "bench %s: SGEMM %dx%dx%d, best of %d ...\n", o.w->name, ga.n, ga.n, ga.n, ga.tries);
    if (bench_in_child(bench_gemm_child, &ga, &gr, sizeof gr, &sig) != 0 || !gr.ok) {
        fprintf(stderr, "bench %s: the SGEMM measurement failed\n", o.w->name);
        memset(&gr, 0, sizeof gr);
        failed = 1;
    }
    const double gemm_gflops = gr.ok ? gr.gflops : 0;

    char lim[32];
    if (o.mem_limit)
        bench_fmt_gib(lim, sizeof lim, (double)o.mem_limit);
    else
        snprintf(lim, sizeof lim, "none");
    bench_print_header(&o, &pr, &mc, &ga, &gr, lim);

    bench_batch *res = calloc((size_t)o.nb, sizeof *res);
    if (!res) return dp_cli_fail(DP_ERR_NOMEM);
    for (int i = 0; i < o.nb; i++) {
        bench_batch *r = &res[i];
        const int B = o.batches[i];
        r->B = B;
        r->inputs = bench_input_bytes(&pr, B);
        failed |= measure_memory(&o, &pr, i, lim, r);
        failed |= measure_time(&o, &pr, i, ga.n, r);
        bench_print_batch_table(&o, r, &pr);
        fflush(stdout);
    }

    bench_print_summary(&o, res, &pr);
    const double wall = bench_now_s() - wall0;
    const double busy1 = bench_busy_cpu_s(), own1 = bench_own_cpu_s();
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
        bench_build_json(&b, &o, &pr, &mc, &gr, &ga, res, wall);
        if (b.failed || !dp_cli_write_atomic("--json", o.json, b.s)) failed = 1;
        dp_strbuf_free(&b);
    }
    if (o.plot) {
        dp_strbuf b = {0};
        bench_build_svg(&b, &o, res, gemm_gflops);
        if (b.failed || !dp_cli_write_atomic("--plot", o.plot, b.s)) failed = 1;
        dp_strbuf_free(&b);
    }
    free(res);
    return failed ? 1 : 0;
}
