/* cmd_audit.c: `dpsgd audit`, an empirical privacy audit of one DP-SGD training run: the test
 * of the claimed privacy profile that decides the verdict, and the lower bounds of Steinke,
 * Nasr, Jagielski 2023 and of the f-DP estimator of Mahloujifar, Melis, Chaudhuri 2024 on the
 * same guesses; see docs/audit.md. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#ifdef DP_TEST_HOOKS
#include "core/testhooks.h"
#endif

#define DEFAULT_TRAIN_LIMIT 10000

#define prog dp_cli_prog

int dp_cmd_audit(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
"usage: dpsgd audit [options]\n"
"\n"
"Empirical privacy audit in one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).\n"
"M canaries are each included with probability 1/2; one DP-SGD run (the step of `dpsgd\n"
"train`) trains on the data plus the included canaries; each canary gets a membership score;\n"
"the auditor guesses \"in\" for the top-scored and \"out\" for the bottom-scored canaries and\n"
"abstains on the rest. The verdict tests the claim itself: the accountant certifies delta(eps)\n"
"for every eps, so the run claims the trade-off curve of that whole privacy profile; the f-DP\n"
"test of Mahloujifar, Melis & Chaudhuri (2024) gives the p-value of that claim from the number\n"
"of correct guesses, and p < 1 - confidence is a VIOLATION: the implementation leaks more than\n"
"it claims (an honest run is flagged with probability at most 1 - confidence).\n"
"Printed beside it, from the same guesses: empirical LOWER bounds on epsilon (Steinke et al.\n"
"for (epsilon, delta)-DP; f-DP for the (epsilon, delta)-DP curve and for a Gaussian one, the\n"
"latter a bound only for mechanisms whose curve is Gaussian), never guarantees.\n"
"\n"
"audit:\n"
"  --canaries M            number of canaries [gradient: one per trainable parameter, at most\n"
"                          4 x the training rows (26010 for the CNN); input: 1000]\n"
"  --canary-type T         gradient: white-box, a per-sample gradient of norm C in a fixed\n"
"                          random direction, score: the likelihood ratio of the released\n"
"                          noisy sums under the claimed mechanism (sigma, q);\n"
"                          input: mislabelled images (held-out training rows with a wrong\n"
"                          label, clipped and noised like real rows), score = decrease of\n"
"                          the canary's loss [gradient]\n"
"  --guesses R             guess on R canaries (R/2 top, R/2 bottom) [0: best of\n"
"                          R = M x 2%%,5%%,10%%,20%%,50%%,100%%, Bonferroni-corrected]\n"
"  --confidence X          confidence of the verdict's test (level 1 - X) and of the lower\n"
"                          bounds [0.95]\n"
"data and model:\n"
"  --data DIR              Fashion-MNIST IDX files [" DP_CLI_DEFAULT_DATA "]\n"
"  --classes K             number of classes, a public choice (never read off the labels);\n"
"                          every label must lie in 0..K-1 [10, as the MNIST format]\n"
"  --train-limit N         train on the first N training rows; input canaries come from\n"
"                          the rows after them [%d]\n"
"  --model NAME|SPEC       'cnn', 'mlp' or a layer spec [cnn]\n"
"privacy and training (as `dpsgd train`):\n"
"  --clipping MODE         vanilla | fast | ghost [ghost]\n"
"  --max-grad-norm C       [0.1]\n"
"  --epsilon E             claimed epsilon; sigma is calibrated to it [3]\n"
"  --delta D               [1e-5]\n"
"  --noise-multiplier S    use this sigma instead (the claimed epsilon is then computed)\n"
"  --epochs N              [20]\n"
"  --batch-size B          expected batch; q = B / (N + M/2) [500]\n"
"  --physical-batch P      chunks of at most P samples [whole batch]\n"
"  --lr X, --momentum X    SGD [4, 0.9]\n"
"  --accountant A          rdp | prv | pld: calibrates sigma, gives the claimed epsilon [prv]\n"
"  --seed N                canaries, their inclusion, initialisation [0]\n"
"  --noise-seed S          noise, sampling and dropout from streams seeded by S (a reproducible\n"
"                          audit) instead of the OS-seeded CSPRNG that `dpsgd train` uses\n"
"  --threads N             OpenMP threads [all cores]\n"
"output:\n"
"  --json FILE             write a JSON summary (atomically)\n"
"  -h, --help              this help\n",
            DEFAULT_TRAIN_LIMIT);
#ifdef DP_TEST_HOOKS
    /* the test build only (dpsgd-testhooks, never installed): the shipped dpsgd has no such flags */
    fputs("test only (break the guarantee on purpose, to check that the audit notices):\n"
          "  --debug-noise-scale X   noise std X*sigma*C while the accountant assumes sigma [1]\n"
          "  --debug-canary-scale X  gradient canaries of norm X*C (an unclipped gradient) [1]\n",
          f);
#endif
    fputs("\nExit status: 0 consistent, 3 VIOLATION, 1 run-time error, 2 bad usage.\n", f);
}

/* appends to buf (capacity cap, *len used); a full buffer keeps what fitted (the caller sizes
 * it well above the text) */
__attribute__((format(printf, 4, 5))) static void jcat(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (k > 0) *len = *len + (size_t)k < cap ? *len + (size_t)k : cap;
}

/* "key": x, -- or null where there is no number (JSON has no inf or nan) */
static void jnum(char *buf, size_t cap, size_t *len, const char *key, double x) {
    if (isfinite(x)) jcat(buf, cap, len, "  \"%s\": %.17g,\n", key, x);
    else jcat(buf, cap, len, "  \"%s\": null,\n", key);
}

int dp_cmd_audit(int argc, char **argv) {
    dp_audit_params p = dp_audit_default_params();
    dp_cli_train_opts o = DP_CLI_TRAIN_OPTS("audit", &p);
    o.train_limit = DEFAULT_TRAIN_LIMIT;
    const char *json = NULL;
    long lv, classes = 0;
#ifdef DP_TEST_HOOKS
    dp__audit_test hooks = {1.0, 1.0};
#endif
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int common = dp_cli_train_flag(&o, a, v, &i);
        if (common < 0) return 2;
        if (common) continue;
#define NEED_VALUE DP_CLI_NEED_VALUE(o.cmd)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--canaries")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 2, 10000000, &lv)) return 2;
            p.num_canaries = (int)lv;
        } else if (!strcmp(a, "--canary-type")) {
            NEED_VALUE;
            if (dp_canary_kind_parse(v, &p.canary) != DP_OK) { /* "canary" is also prose: no table row */
                fprintf(stderr, "%s: --canary-type: %s\n", prog, dp_cli_error());
                return 2;
            }
        } else if (!strcmp(a, "--guesses")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 0, 10000000, &lv)) return 2;
            p.guesses = (int)lv;
        } else if (!strcmp(a, "--confidence")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &p.confidence)) return 2;
            if (!(p.confidence > 0 && p.confidence < 1)) return dp_cli_die("--confidence: must be in (0, 1)");
        } else if (!strcmp(a, "--classes")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, DP_CLI_MAX_CLASSES, &classes)) return 2;
        } else if (!strcmp(a, "--json")) {
            NEED_VALUE;
            json = v;
        } else if (!strcmp(a, "--accountant")) {
            NEED_VALUE;
            if (dp_accountant_kind_parse(v, &p.accountant) != DP_OK) return dp_cli_die(dp_cli_error());
            if (p.accountant == DP_ACCT_GDP) {
                char m[256];
                snprintf(m, sizeof m,
                         "--accountant gdp: a central-limit approximation, not a bound; it cannot give the claimed "
                         "epsilon (use one of %s)",
                         dp_accountant_kind_names(1));
                return dp_cli_die(m);
            }
        } else if (!strcmp(a, "--noise-seed")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 0, 1L << 62, &lv)) return 2;
            p.noise_seeded = 1;
            p.noise_seed = (uint64_t)lv;
#ifdef DP_TEST_HOOKS
        } else if (!strcmp(a, "--debug-noise-scale")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &hooks.noise_scale)) return 2;
            if (hooks.noise_scale < 0) return dp_cli_die("--debug-noise-scale: must be >= 0");
        } else if (!strcmp(a, "--debug-canary-scale")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &hooks.canary_scale)) return 2;
            if (hooks.canary_scale <= 0) return dp_cli_die("--debug-canary-scale: must be > 0");
#endif
        } else {
            return dp_cli_unknown("audit", a);
        }
#undef NEED_VALUE
    }
    if (p.num_canaries > 0 && p.guesses > p.num_canaries) return dp_cli_die("--guesses: must not exceed --canaries");
    if (!isnan(o.lr)) p.optim.lr = o.lr;
    if (!isnan(o.momentum)) p.optim.momentum = o.momentum;
    if (o.threads > 0) omp_set_num_threads((int)o.threads);

    dp_status st;
    dp_dataset all;
    memset(&all, 0, sizeof all);
    dp_model *m = NULL;
    float *scores = NULL;
    unsigned char *in = NULL;
    int rc = 1, K;
    static const double fmnist[2] = {DP_CLI_FMNIST_MEAN, DP_CLI_FMNIST_STD};
    const dp_cli_data_spec ds = {.data = o.data, .model_name = o.model_name, .norm = fmnist, .classes = (int)classes,
                                 .seed = p.seed};
    int bad = dp_cli_load_data_and_model(&ds, &all, NULL, &K, &m);
    if (bad) {
        rc = bad;
        goto done;
    }
    /* training rows: the first train_limit; canary pool: the rows after them (held out) */
    dp_dataset tr = all, pool = all;
    if ((size_t)o.train_limit < all.n) {
        tr.n = (size_t)o.train_limit;
        pool.n = all.n - tr.n;
        pool.x = all.x + tr.n * all.dim;
        pool.y = all.y + tr.n;
    } else if (p.canary == DP_CANARY_INPUT) {
        /* input canaries are copies of held-out rows: drawn from the training rows themselves,
         * a canary "out" of the run would be in it all the same */
        fprintf(stderr, "%s: --canary-type input: no rows are held out for the canaries (--train-limit %ld uses all "
                        "%zu rows); lower --train-limit to leave at least one row after the training rows\n",
                prog, o.train_limit, all.n);
        rc = 2;
        goto done;
    }
    const int mc = dp_audit_num_canaries(m, tr.n, &p);
    scores = malloc(sizeof(float) * (size_t)mc);
    in = malloc((size_t)mc);
    if (!scores || !in) {
        fprintf(stderr, "%s: out of memory\n", prog);
        goto done;
    }
    printf("audit: %d %s canaries (%s), model %s (%zu parameters), %zu training rows, clipping %s, C %g, "
           "%d threads\n",
           mc, dp_canary_kind_name(p.canary), p.canary == DP_CANARY_GRADIENT ? "white-box" : "black-box",
           o.model_name, dp_model_num_params(m), tr.n, dp_clip_mode_name(p.clipping), p.max_grad_norm,
           omp_get_max_threads());
#ifdef DP_TEST_HOOKS
    if (hooks.noise_scale != 1 || hooks.canary_scale != 1)
        printf("WARNING: test-only switches on (noise scale %g, canary scale %g): this run is broken on purpose\n",
               hooks.noise_scale, hooks.canary_scale);
#endif
    fflush(stdout);
    dp_audit_result r;
#ifdef DP_TEST_HOOKS
    st = dp__audit(m, &tr, &pool, &p, &hooks, &r, scores, in);
#else
    st = dp_audit_run(m, &tr, &pool, &p, &r, scores, in);
#endif
    if (st != DP_OK) {
        rc = dp_cli_fail(st);
        goto done;
    }
    printf("training: %d epochs, %ld steps, q %.5f, sigma %.4f, %d of %d canaries included\n", p.epochs, r.steps, r.q,
           r.sigma, r.included, r.num_canaries);
    printf("claimed epsilon:       %.3f (%s accountant, delta %g)\n", r.epsilon, dp_accountant_kind_name(p.accountant),
           r.delta);
    /* the verdict's test: the whole claimed privacy profile against the guesses */
    printf("claimed profile test:  p = %.3g (the run is f-DP for the %s accountant's delta(eps) at %d epsilons? "
           "%ld of %ld guesses correct; Bonferroni over the guess counts)\n",
           r.profile_p, dp_accountant_kind_name(p.accountant), r.profile_points, r.profile_correct, r.profile_guesses);
    printf("empirical lower bound: %.3f (%.0f%% confidence; %ld of %ld guesses correct, abstained on %ld)\n",
           r.eps_lower, 100 * r.confidence, r.correct, r.guesses, (long)r.num_canaries - r.guesses);
    /* the f-DP estimator on the same guesses: a second opinion, labelled as what it is */
    printf("f-DP lower bound:      %.3f (%.0f%% confidence, (eps, delta)-DP trade-off curve; %ld of %ld correct)\n",
           r.fdp_eps_lower, 100 * r.confidence, r.fdp_correct, r.fdp_guesses);
    printf("  Gaussian curve:      %.3f (mu %.4f ruled out; a lower bound only if the trade-off curve is Gaussian; "
           "%ld of %ld correct)\n",
           r.gdp_eps_lower, r.gdp_mu_lower, r.gdp_correct, r.gdp_guesses);
    if (r.violation)
        printf("verdict: VIOLATION (the claimed privacy profile is rejected: p = %.3g < %g = 1 - confidence)\n",
               r.profile_p, 1 - r.confidence);
    else
        printf("verdict: consistent (the claimed privacy profile is not rejected: p = %.3g >= %g)\n", r.profile_p,
               1 - r.confidence);
    /* the lower bounds are separate statements at the same confidence; should one exceed the
     * claim while the profile test does not reject (not seen so far), say so rather than hide it */
    if (!r.violation && (r.eps_lower > r.epsilon || r.fdp_eps_lower > r.epsilon))
        printf("note: an (eps, delta) lower bound exceeds the claimed epsilon at %.0f%% confidence; "
               "repeat with other --seed values\n",
               100 * r.confidence);
    printf("time: %.1f s\n", r.seconds);
    if (json) {
        char text[4096];
        size_t len = 0;
        jcat(text, sizeof text, &len,
             "{\n  \"canary_type\": \"%s\",\n  \"canaries\": %d,\n  \"included\": %d,\n  \"model\": \"%s\",\n"
             "  \"parameters\": %zu,\n  \"train_rows\": %zu,\n  \"clipping\": \"%s\",\n  \"max_grad_norm\": %.17g,\n"
             "  \"noise_multiplier\": %.17g,\n  \"sample_rate\": %.17g,\n  \"epochs\": %d,\n  \"steps\": %ld,\n"
             "  \"delta\": %.17g,\n  \"epsilon_claimed\": %.17g,\n  \"epsilon_lower_bound\": %.17g,\n"
             "  \"confidence\": %.17g,\n  \"guesses\": %ld,\n  \"correct\": %ld,\n  \"verdict\": \"%s\",\n",
             dp_canary_kind_name(p.canary), r.num_canaries, r.included,
             dp_model_builtin_spec(o.model_name) ? o.model_name : "spec", dp_model_num_params(m), tr.n,
             dp_clip_mode_name(p.clipping), p.max_grad_norm, r.sigma, r.q, p.epochs, r.steps, r.delta, r.epsilon,
             r.eps_lower, r.confidence, r.guesses, r.correct, r.violation ? "VIOLATION" : "consistent");
        /* the verdict's test, then the f-DP estimator (empirical lower bounds like epsilon_lower_bound) */
        jnum(text, sizeof text, &len, "profile_p_value", r.profile_p);
        jcat(text, sizeof text, &len, "  \"profile_points\": %d,\n  \"profile_guesses\": %ld,\n"
             "  \"profile_correct\": %ld,\n", r.profile_points, r.profile_guesses, r.profile_correct);
        jnum(text, sizeof text, &len, "epsilon_lower_bound_fdp", r.fdp_eps_lower);
        jcat(text, sizeof text, &len, "  \"fdp_guesses\": %ld,\n  \"fdp_correct\": %ld,\n", r.fdp_guesses,
             r.fdp_correct);
        jnum(text, sizeof text, &len, "epsilon_lower_bound_fdp_gaussian", r.gdp_eps_lower);
        jnum(text, sizeof text, &len, "mu_lower_bound_fdp_gaussian", r.gdp_mu_lower);
        jcat(text, sizeof text, &len, "  \"fdp_gaussian_guesses\": %ld,\n  \"fdp_gaussian_correct\": %ld,\n",
             r.gdp_guesses, r.gdp_correct);
#ifdef DP_TEST_HOOKS
        jcat(text, sizeof text, &len, "  \"debug_noise_scale\": %.17g,\n  \"debug_canary_scale\": %.17g,\n",
             hooks.noise_scale, hooks.canary_scale);
#endif
        jcat(text, sizeof text, &len, "  \"accountant\": \"%s\",\n  \"noise\": \"%s\",\n",
             dp_accountant_kind_name(p.accountant), p.noise_seeded ? "seeded" : "os-csprng");
        if (p.noise_seeded)
            jcat(text, sizeof text, &len, "  \"noise_seed\": %llu,\n", (unsigned long long)p.noise_seed);
        jcat(text, sizeof text, &len, "  \"seconds\": %.3f,\n  \"threads\": %d,\n  \"seed\": %llu\n}\n", r.seconds,
             omp_get_max_threads(), (unsigned long long)p.seed);
        if (!dp_cli_write_atomic("--json", json, text)) goto done;
    }
    rc = r.violation ? 3 : 0;
done:
    free(scores);
    free(in);
    dp_model_destroy(m);
    dp_dataset_free(&all);
    return rc;
}
