/* bench_report.c: `dpsgd bench`'s report: the markdown on stdout (the run's header, a table
 * per batch size, the summary and the workload's targets; the --plan-only table), the JSON
 * document and the SVG charts. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* bytes for a table cell: "-" not applicable, B / KiB / MiB */
void bench_fmt_bytes(char *buf, size_t cap, double v) {
    if (v < 0)
        snprintf(buf, cap, "–");
    else if (v < 1024)
        snprintf(buf, cap, "%.0f B", v);
    else if (v < MIB)
        snprintf(buf, cap, "%.1f KiB", v / 1024);
    else
        snprintf(buf, cap, "%.1f MiB", v / MIB);
}

void bench_fmt_gib(char *buf, size_t cap, double v) {
    if (v >= GIB)
        snprintf(buf, cap, "%.1f GiB", v / GIB);
    else
        snprintf(buf, cap, "%.0f MiB", v / MIB);
}

static int nodp_ok(const bench_batch *r) { return r->c[0].state == C_OK; }

static void cell_status_text(const bench_cell *c, char *buf, size_t cap) {
    char g[32];
    switch (c->state) {
    case C_OOM_PLAN:
        bench_fmt_gib(g, sizeof g, c->plan), snprintf(buf, cap, "OOM (plan: %s)", g);
        break;
    case C_OOM_ALLOC:
        snprintf(buf, cap, "OOM (%s)", c->mem.oom_stage == ST_INPUTS ? "inputs" : bench_stage_title[c->mem.oom_stage]);
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

void bench_print_batch_table(const bench_opts *o, const bench_batch *r, const probe_result *pr) {
    const double gemm_gflops = r->gemm_gflops;
    int modes[NMODES], n = 0;
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) modes[n++] = k;
    printf("\n### batch %d\n\n|  |", r->B);
    for (int j = 0; j < n; j++) printf(" %s |", bench_mode_name(modes[j]));
    printf("\n|---|");
    for (int j = 0; j < n; j++) printf("---:|");
    printf("\n");
    char buf[96];
    printf("| *memory increase (tracked)* |");
    for (int j = 0; j < n; j++) printf("  |");
    printf("\n");
    for (int s = 0; s < ST_COUNT; s++) {
        printf("| %s |", bench_stage_title[s]);
        for (int j = 0; j < n; j++) {
            const bench_cell *c = &r->c[modes[j]];
            if (c->state == C_OK)
                bench_fmt_bytes(buf, sizeof buf, c->mem.inc[s]);
            else
                snprintf(buf, sizeof buf, "%s", c->state == C_OOM_ALLOC && c->mem.oom_stage == s ? "OOM here" : "–");
            printf(" %s |", buf);
        }
        printf("\n");
    }
    const bench_cell *c0 = &r->c[0];
    printf("| **peak tracked** |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
        if (c->state == C_OK)
            bench_fmt_bytes(buf, sizeof buf, c->mem.peak_tracked);
        else
            cell_status_text(c, buf, sizeof buf);
        printf(" **%s** |", buf);
    }
    printf("\n| peak tracked × no-DP |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
        if (c->state == C_OK && nodp_ok(r))
            printf(" %.3f |", c->mem.peak_tracked / c0->mem.peak_tracked);
        else
            printf(" – |");
    }
    printf("\n| peak RSS (VmHWM) |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
        if (c->state == C_OK)
            bench_fmt_bytes(buf, sizeof buf, c->mem.rss_peak);
        else
            snprintf(buf, sizeof buf, "–");
        printf(" %s |", buf);
    }
    printf("\n| peak RSS × no-DP |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
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
            const bench_cell *c = &r->c[modes[j]];
            if (c->timed)
                printf(" %.2f |", c->part_ms[p]);
            else
                printf(" – |");
        }
        printf("\n");
    }
    printf("| **step** |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
        if (c->timed)
            printf(" **%.2f** |", c->med_ms);
        else {
            cell_status_text(c, buf, sizeof buf);
            printf(" %s |", c->state == C_OK ? "error" : buf);
        }
    }
    printf("\n| step time × no-DP |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
        if (c->timed && c0->timed)
            printf(" %.3f |", c->med_ms / c->ref_ms);
        else
            printf(" – |");
    }
    printf("\n| GFLOP/s (no-DP step; %% of SGEMM in the same process) |");
    for (int j = 0; j < n; j++) {
        const bench_cell *c = &r->c[modes[j]];
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
        const bench_cell *c = &r->c[modes[j]];
        if (c->note[0]) printf("\n- %s: %s", bench_mode_name(modes[j]), c->note);
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

void bench_build_json(dp_strbuf *b, const bench_opts *o, const probe_result *pr, const bench_machine *mc,
                      const gemm_result *g, const gemm_arg *ga, const bench_batch *res, double wall) {
    dp_strbuf_printf(b, "{\n  \"workload\": ");
    dp_strbuf_json_str(b, o->w->name);
    dp_strbuf_printf(b, ",\n  \"model_file\": ");
    if (o->w->model_file)
        dp_strbuf_json_str(b, o->w->model_file);
    else
        dp_strbuf_printf(b, "null");
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
        "\"quick\": %s, \"no_plan\": %s, \"sigma\": %g, \"max_grad_norm\": %g, \"lr\": %g, \"momentum\": %g, "
        "\"noise\": \"%s\"},\n",
        o->reps, o->warmup, o->mem_limit, o->seed, o->quick ? "true" : "false", o->no_plan ? "true" : "false", SIGMA,
        CLIP_C, LR, MOMENTUM, o->seeded_noise ? "seeded" : "secure");
    dp_strbuf_printf(b, "  \"modes\": [");
    int first = 1;
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) {
            dp_strbuf_printf(b, "%s", first ? "" : ", ");
            dp_strbuf_json_str(b, bench_mode_name(k));
            first = 0;
        }
    dp_strbuf_printf(b, "],\n  \"results\": [");
    for (int i = 0; i < o->nb; i++) {
        const bench_batch *r = &res[i];
        const bench_cell *c0 = &r->c[0];
        dp_strbuf_printf(b, "%s\n    {\"batch\": %d, \"inputs_bytes\": %.0f, \"flops_nodp_step\": ", i ? "," : "", r->B,
                         r->inputs);
        json_num(b, (double)r->B * (pr->flops_fwd + pr->flops_bwd));
        dp_strbuf_printf(b, ", \"sgemm_gflops\": ");
        json_num(b, r->gemm_gflops > 0 ? r->gemm_gflops : NAN);
        dp_strbuf_printf(b, ", \"modes\": {");
        first = 1;
        for (int k = 0; k < NMODES; k++) {
            if (!o->use_mode[k]) continue;
            const bench_cell *c = &r->c[k];
            dp_strbuf_printf(b, "%s\n      ", first ? "" : ",");
            first = 0;
            dp_strbuf_json_str(b, bench_mode_name(k));
            dp_strbuf_printf(b, ": {\"status\": \"%s\", \"plan_bytes\": %.0f", state_name(c->state), c->plan);
            if (c->note[0]) {
                dp_strbuf_printf(b, ", \"message\": ");
                dp_strbuf_json_str(b, c->note);
            }
            if (c->state == C_OK) {
                dp_strbuf_printf(b, ",\n        \"memory\": {");
                for (int s = 0; s < ST_COUNT; s++) {
                    dp_strbuf_printf(b, "\"%s_bytes\": ", bench_stage_key[s]);
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

void bench_build_svg(dp_strbuf *b, const bench_opts *o, const bench_batch *res, double gemm_gflops) {
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
            const bench_cell *c = &res[i].c[modes[j]];
            if (c->state == C_OK && c->mem.peak_tracked > maxmem) maxmem = c->mem.peak_tracked;
        }
    const int use_gib = maxmem >= 2 * GIB || (o->mem_limit && o->mem_limit < 64 * GIB && maxmem >= 0.5 * GIB);
    const double unit = use_gib ? GIB : MIB;
    for (int i = 0; i < o->nb; i++) xs[i] = res[i].B;
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < o->nb; i++) {
            const bench_cell *c = &res[i].c[modes[j]];
            size_t at = (size_t)j * (size_t)o->nb + (size_t)i;
            mem[at] = c->state == C_OK ? c->mem.peak_tracked / unit : NAN;
            tm[at] = c->timed ? c->med_ms : NAN;
            mark[at] = c->state == C_OOM_PLAN || c->state == C_OOM_ALLOC || c->state == C_KILLED;
        }
        sm[j] = (dp_svg_series){.name = bench_mode_name(modes[j]),
                                .n = o->nb,
                                .x = xs,
                                .y = mem + (size_t)j * (size_t)o->nb,
                                .mark = mark + (size_t)j * (size_t)o->nb,
                                .style = modes[j]};
        st[j] = sm[j];
        st[j].y = tm + (size_t)j * (size_t)o->nb;
    }
    char lim[64] = "", title[256], note[1024];
    if (o->mem_limit) {
        char g[32];
        bench_fmt_gib(g, sizeof g, (double)o->mem_limit);
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

/* --plan-only: the plan of every mode and batch size, nothing run */
int bench_plan_only_report(const bench_opts *o, const probe_result *pr) {
    char lim[32];
    if (o->mem_limit)
        bench_fmt_gib(lim, sizeof lim, (double)o->mem_limit);
    else
        snprintf(lim, sizeof lim, "none");
    printf("# dpsgd bench %s --plan-only\n\n", o->w->name);
    printf("- workload: %s; %zu parameters (%.1f MiB as float32)\n", o->w->title, pr->np, (double)pr->np * 4 / MIB);
    printf("- memory plan of a step (dp_model_plan_bytes: the engine's buffers for that mode and batch) + inputs, "
           "parameters, gradients and optimizer state (%.1f MiB); nothing is run; OOM: over --mem-limit %s\n\n",
           pr->creation_bytes / MIB, lim);
    printf("| batch |");
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) printf(" %s |%s", bench_mode_name(k), k ? " × no-DP |" : "");
    printf("\n|---:|");
    for (int k = 0; k < NMODES; k++)
        if (o->use_mode[k]) printf("---:|%s", k ? "---:|" : "");
    printf("\n");
    for (int i = 0; i < o->nb; i++) {
        const int B = o->batches[i];
        const double inputs = bench_input_bytes(pr, B);
        const double base = inputs + pr->creation_bytes + pr->step_plan[i][0];
        printf("| %d |", B);
        for (int k = 0; k < NMODES; k++) {
            if (!o->use_mode[k]) continue;
            const double v = inputs + pr->creation_bytes + pr->step_plan[i][k];
            char b[32];
            bench_fmt_gib(b, sizeof b, v);
            const int oom = o->mem_limit && v > (double)o->mem_limit;
            printf(" %s%s |", b, oom ? " (OOM)" : "");
            if (k) printf(" %.3f |", v / base);
        }
        printf("\n");
    }
    return 0;
}

void bench_print_header(const bench_opts *o, const probe_result *pr, const bench_machine *mc, const gemm_arg *ga,
                        const gemm_result *gr, const char *lim) {
    printf("# dpsgd bench %s\n\n", o->w->name);
    printf("- workload: %s; %zu parameters (%.1f MiB as float32)\n", o->w->title, pr->np, (double)pr->np * 4 / MIB);
    printf("- CPU: %s; online cores: %ld; OpenMP threads: %d; %s, core %s (OPENBLAS_CORETYPE=%s%s); load average "
           "%.2f at the start\n",
           mc->cpu, mc->nproc, mc->threads, mc->blas, mc->core,
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset",
           mc->set_by_us ? ", set by dpsgd: OpenBLAS detected Prescott" : "", mc->load_start);
    if (gr->ok)
        printf("- SGEMM %dx%dx%d: %.1f GFLOP/s (best of %d, %.1f ms)\n", ga->n, ga->n, ga->n, gr->gflops, ga->tries,
               gr->best_s * 1e3);
    printf("- step: SGD lr %g momentum %g; DP modes: C = %g, sigma = %g, noise from %s; %ld warm-up + %ld timed steps "
           "per mode, interleaved; median; seed %ld; memory limit per mode: %s\n",
           LR, MOMENTUM, CLIP_C, SIGMA,
           o->seeded_noise ? "the seeded stream (--noise seeded)" : "the OS-seeded ChaCha20 generator (dpsgd train's default)",
           o->warmup, o->reps, o->seed, lim);
    printf("- memory: tracked allocator, one process per mode; per stage: the highest live bytes in the stage minus "
           "live bytes when it began, on the first step of a fresh model; peak tracked: the highest live bytes "
           "(inputs, model, optimizer, buffers) over that step and a second one; peak RSS: VmHWM of that process "
           "(all memory: libraries, OpenBLAS, malloc)\n");
    if (isfinite(pr->flops_fwd))
        printf("- FLOPs of a no-DP step: %.4g per sample, %.4g forward + %.4g backward (%s)\n",
               pr->flops_fwd + pr->flops_bwd, pr->flops_fwd, pr->flops_bwd, o->w->flops_note);
    else
        printf("- FLOPs of a no-DP step: unknown (the layer shapes could not be read)\n");
    fflush(stdout);
}

void bench_print_summary(const bench_opts *o, const bench_batch *res, const probe_result *pr) {
    /* summary across batch sizes */
    printf("\n### summary\n\n| batch | mode | peak tracked | × no-DP | peak RSS | × no-DP | step ms | × no-DP |\n"
           "|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < o->nb; i++) {
        const bench_batch *r = &res[i];
        const bench_cell *c0 = &r->c[0];
        for (int k = 0; k < NMODES; k++) {
            if (!o->use_mode[k]) continue;
            const bench_cell *c = &r->c[k];
            char a[64], b2[64], t[64], mr[32] = "–", rr[32] = "–", trt[32] = "–";
            if (c->state == C_OK) {
                bench_fmt_bytes(a, sizeof a, c->mem.peak_tracked);
                bench_fmt_bytes(b2, sizeof b2, c->mem.rss_peak);
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
            printf("| %d | %s | %s | %s | %s | %s | %s | %s |\n", r->B, bench_mode_name(k), a, mr, b2, rr, t, trt);
        }
    }

    /* targets */
    printf("\nTargets (the issues', for this workload; reported, not enforced):\n");
    int any_target = 0;
    for (int i = 0; i < o->nb; i++) {
        const bench_batch *r = &res[i];
        const bench_cell *c0 = &r->c[0];
        for (int t = 0; t < o->w->ntargets; t++) {
            const int k = o->w->targets[t].mode;
            const double tmax = o->w->targets[t].max;
            if ((o->w->targets[t].bmin && r->B < o->w->targets[t].bmin) ||
                (o->w->targets[t].bmax && r->B > o->w->targets[t].bmax))
                continue;
            const bench_cell *c = &r->c[k];
            double x;
            if (o->w->targets[t].what == 'm') {
                if (c0->state != C_OK || c->state != C_OK) continue;
                x = c->mem.peak_tracked / c0->mem.peak_tracked;
            } else {
                if (!c0->timed || !c->timed) continue;
                if (!(c->ref_ms > 0)) continue;
                x = c->med_ms / c->ref_ms;
            }
            printf("- batch %d: %s %s <= %.2fx no-DP: %.3fx: %s\n", r->B, bench_mode_name(k),
                   o->w->targets[t].what == 'm' ? "peak tracked memory" : "step time", tmax, x,
                   x <= tmax ? "PASS" : "MISS");
            any_target = 1;
        }
    }
    if (o->w->gemm_share > 0) {
        const int want = o->w->gemm_batch;
        int at = -1;
        for (int i = 0; i < o->nb; i++)
            if (res[i].c[0].timed && (at < 0 || res[i].B == want || (res[at].B != want && res[i].B > res[at].B)))
                at = i;
        if (at >= 0 && res[at].gemm_gflops > 0 && isfinite(pr->flops_fwd)) {
            double gf = (double)res[at].B * (pr->flops_fwd + pr->flops_bwd) / (res[at].c[0].med_ms * 1e-3) / 1e9;
            double gr2 = res[at].gemm_gflops;
            printf("- batch %d: no-DP step >= %.0f%% of the SGEMM rate: %.1f of %.1f GFLOP/s = %.0f%%: %s", res[at].B,
                   100 * o->w->gemm_share, gf, gr2, 100 * gf / gr2, gf >= o->w->gemm_share * gr2 ? "PASS" : "MISS");
            if (res[at].B != want) printf(" (the target is stated at batch %d)", want);
            printf("\n");
            any_target = 1;
        }
    }
    if (!o->w->ntargets && !(o->w->gemm_share > 0))
        printf("- none: the issues set none for this workload\n");
    else if (!any_target)
        printf("- none applies to the modes run\n");
}
