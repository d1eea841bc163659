/* cmd_epsilon.c: `dpsgd epsilon` (the epsilon a run spends) and `dpsgd noise` (the noise
 * multiplier a target epsilon needs), with the RDP, PRV, PLD or GDP accountant. GDP, an
 * approximation, never calibrates and is only shown beside PRV's upper bound. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int dp_cmd_epsilon(int argc, char **argv);
int dp_cmd_noise(int argc, char **argv);

#define prog dp_cli_prog

static void usage_epsilon(FILE *f) {
    fprintf(f,
"usage: dpsgd epsilon (--sample-rate Q | --dataset-size N --batch-size B)\n"
"                     --noise-multiplier S (--steps T | --epochs E) --delta D\n"
"                     [--accountant rdp|prv|pld|gdp|all] [--json]\n"
"\n"
"The epsilon spent by T steps of DP-SGD with Poisson sampling at rate Q and noise\n"
"multiplier S, at the given delta.\n"
"\n"
"  --sample-rate Q         per-example sampling probability, in (0, 1]\n"
"  --dataset-size N        instead of --sample-rate, with --batch-size: Q = B / N and\n"
"  --batch-size B            --epochs counts steps as `dpsgd train` does (same flags)\n"
"  --noise-multiplier S    noise std / clipping norm, > 0\n"
"  --steps T               optimizer steps, >= 1\n"
"  --epochs E              instead of --steps: with --dataset-size, T = E x round(N / B)\n"
"                          (as `dpsgd train`); with --sample-rate, T = floor(E / Q) (as\n"
"                          Opacus; the count is printed)\n"
"  --delta D               in (0, 1)\n"
"  --accountant A          rdp | prv | pld | gdp | all [prv]\n"
"                            rdp: Renyi DP (an upper bound)\n"
"                            prv: privacy random variables, FFT (upper bound reported;\n"
"                                 lower and estimate shown; errors as Opacus)\n"
"                            pld: privacy loss distribution, pessimistic (upper bound)\n"
"                            gdp: central-limit approximation, NOT a bound: it CAN\n"
"                                 UNDERESTIMATE; shown beside prv's upper bound\n"
"  --json                  one JSON object on stdout\n");
}

static void usage_noise(FILE *f) {
    fprintf(f,
"usage: dpsgd noise --target-epsilon E --delta D (--sample-rate Q | --dataset-size N\n"
"                   --batch-size B) (--steps T | --epochs E) [--accountant rdp|prv|pld|all]\n"
"                   [--json]\n"
"\n"
"The smallest noise multiplier (to 0.01 in epsilon) whose epsilon at delta is at most the\n"
"target, for T steps at sample rate Q. A target no noise multiplier reaches (below epsilon\n"
"at noise multiplier 1e6; with prv or pld above epsilon at the least noise they can\n"
"evaluate; any target when delta >= 1 - (1 - Q)^T) is refused at once with the reachable\n"
"range, exit status 2.\n"
"\n"
"  --target-epsilon E      > 0\n"
"  --delta D               in (0, 1)\n"
"  --sample-rate Q         in (0, 1]\n"
"  --dataset-size N        instead of --sample-rate, with --batch-size: Q = B / N and\n"
"  --batch-size B            --epochs counts steps as `dpsgd train` does (same flags)\n"
"  --steps T               >= 1\n"
"  --epochs E              instead of --steps: with --dataset-size, T = E x round(N / B)\n"
"                          (as `dpsgd train`); with --sample-rate, T = floor(E / Q) (as\n"
"                          Opacus; the count is printed)\n"
"  --accountant A          rdp | prv | pld | all [prv] (see `dpsgd epsilon --help`); gdp\n"
"                          is refused: an approximation that can underestimate epsilon\n"
"                          cannot choose the noise\n"
"  --json                  one JSON object on stdout\n");
}

typedef struct {
    double q, sigma, delta, epochs, target;
    long steps, n, batch, spe; /* spe: steps per epoch when --dataset-size is given */
    int have_q, have_sigma, have_delta, have_steps, have_epochs, have_target, have_n, have_batch, json, all;
    dp_accountant_kind kind;
} opts;

/* returns -1 to go on, else the exit status */
static int parse(int argc, char **argv, int noise, opts *o) {
    memset(o, 0, sizeof *o);
    o->kind = DP_ACCT_PRV;
    void (*usage)(FILE *) = noise ? usage_noise : usage_epsilon;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        /* every other flag takes a value; an unknown one is said to be unknown, not to need a
         * value, wherever it stands */
        static const char *const with_value[] = {"--sample-rate", "--dataset-size", "--batch-size", "--delta",
                                                 "--steps", "--epochs", "--accountant"};
        size_t f = 0, nf = sizeof with_value / sizeof with_value[0];
        while (f < nf && strcmp(a, with_value[f])) f++;
        if (f == nf && strcmp(a, noise ? "--target-epsilon" : "--noise-multiplier")) {
            return dp_cli_unknown(noise ? "noise" : "epsilon", a);
        }
        if (!v) {
            fprintf(stderr, "%s: %s needs a value (see dpsgd %s --help)\n", prog, a, noise ? "noise" : "epsilon");
            return 2;
        }
        if (!strcmp(a, "--sample-rate")) {
            if (!dp_cli_parse_double(a, v, &o->q)) return 2;
            o->have_q = 1;
        } else if (!strcmp(a, "--dataset-size")) {
            if (!dp_cli_parse_long(a, v, 1, 1000000000000L, &o->n)) return 2;
            o->have_n = 1;
        } else if (!strcmp(a, "--batch-size")) {
            if (!dp_cli_parse_long(a, v, 1, INT_MAX, &o->batch)) return 2;
            o->have_batch = 1;
        } else if (!strcmp(a, "--noise-multiplier") && !noise) {
            if (!dp_cli_parse_double(a, v, &o->sigma)) return 2;
            o->have_sigma = 1;
        } else if (!strcmp(a, "--target-epsilon") && noise) {
            if (!dp_cli_parse_double(a, v, &o->target)) return 2;
            o->have_target = 1;
        } else if (!strcmp(a, "--delta")) {
            if (!dp_cli_parse_double(a, v, &o->delta)) return 2;
            o->have_delta = 1;
        } else if (!strcmp(a, "--steps")) {
            if (!dp_cli_parse_long(a, v, 1, 1000000000000L, &o->steps)) return 2;
            o->have_steps = 1;
        } else if (!strcmp(a, "--epochs")) {
            if (!dp_cli_parse_double(a, v, &o->epochs)) return 2;
            o->have_epochs = 1;
        } else if (!strcmp(a, "--accountant")) {
            if (!strcmp(v, "all")) o->all = 1;
            else if (dp_accountant_kind_parse(v, &o->kind)) {
                fprintf(stderr, "%s: --accountant %s: must be one of %s, or all\n", prog, v,
                        dp_accountant_kind_names(noise)); /* noise: the kinds that calibrate */
                return 2;
            } else if (noise && o->kind == DP_ACCT_GDP) {
                /* a sigma chosen by an approximation that can underestimate has no guarantee */
                fprintf(stderr,
                        "%s: --accountant gdp: a central-limit approximation that can underestimate epsilon, "
                        "not a bound; it cannot calibrate the noise multiplier: use one of %s\n",
                        prog, dp_accountant_kind_names(1));
                return 2;
            }
        } else { /* not reached: with_value above lists every flag */
            fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
            return 2;
        }
        i++;
    }
    char msg[160];
#define REQUIRE(cond, text)                                                                   \
    if (!(cond)) {                                                                            \
        snprintf(msg, sizeof msg, "%s", text);                                                \
        fprintf(stderr, "%s: %s\n", prog, msg);                                               \
        return 2;                                                                             \
    }
    REQUIRE(o->have_n == o->have_batch, "--dataset-size and --batch-size go together (sample rate = batch / size)");
    REQUIRE(!(o->have_q && o->have_n), "give either --sample-rate or --dataset-size with --batch-size, not both");
    if (o->have_n) {
        REQUIRE(o->batch <= o->n, "--batch-size must be at most --dataset-size");
        o->q = (double)o->batch / (double)o->n; /* as dp_train */
        o->spe = dp_train_steps_per_epoch((size_t)o->n, (int)o->batch);
    } else {
        REQUIRE(o->have_q, "--sample-rate (or --dataset-size with --batch-size) is required");
    }
    REQUIRE(o->q > 0.0 && o->q <= 1.0, "--sample-rate must be in (0, 1]");
    if (!noise) {
        REQUIRE(o->have_sigma, "--noise-multiplier is required");
        REQUIRE(o->sigma > 0.0, "--noise-multiplier must be > 0");
    } else {
        REQUIRE(o->have_target, "--target-epsilon is required");
        REQUIRE(o->target > 0.0, "--target-epsilon must be > 0");
    }
    REQUIRE(o->have_delta, "--delta is required");
    REQUIRE(o->delta > 0.0 && o->delta < 1.0, "--delta must be in (0, 1)");
    REQUIRE(o->have_steps != o->have_epochs, "give exactly one of --steps and --epochs");
    if (o->have_epochs) {
        REQUIRE(o->epochs > 0.0, "--epochs must be > 0");
        /* with the dataset and batch sizes, the count `dpsgd train` runs (whole epochs of
         * round(N / B) steps); with a sample rate alone, Opacus' floor(E / Q) */
        if (o->have_n)
            REQUIRE(o->epochs == floor(o->epochs) && o->epochs <= 1e12 / (double)o->spe,
                    "--epochs must be a whole number with --dataset-size (as `dpsgd train`), at most 1e12 steps");
        double s = o->have_n ? o->epochs * (double)o->spe : floor(o->epochs / o->q);
        REQUIRE(s >= 1.0, "--epochs gives fewer than 1 step (steps = floor(epochs / sample rate))");
        REQUIRE(s <= 1e12, "--epochs gives more than 1e12 steps");
        o->steps = (long)s;
    }
#undef REQUIRE
    return -1;
}

/* epsilon of `steps` steps at (q, sigma): the report of a one-entry history */
static dp_status epsilon_of(dp_accountant_kind k, double q, double sigma, long steps, double delta,
                            dp_epsilon_report *r) {
    dp_accountant *a = NULL;
    dp_status st = dp_accountant_create(&a);
    if (!st) st = dp_accountant_step(a, q, sigma, steps);
    if (!st) st = dp_accountant_epsilon(a, k, delta, NULL, r);
    dp_accountant_destroy(a);
    return st;
}

static void json_num(const char *key, double v, int comma) {
    if (isfinite(v)) printf("\"%s\": %.10g%s", key, v, comma ? ", " : "");
    else printf("\"%s\": null%s", key, comma ? ", " : "");
}

/* `dpsgd epsilon` (noise 0): epsilon of the given sigma; `dpsgd noise` (noise 1): the sigma
 * calibrated to the target epsilon, and its epsilon. One line or JSON member per accountant. */
static int run(int argc, char **argv, int noise) {
    opts o;
    int rc = parse(argc, argv, noise, &o);
    if (rc >= 0) return rc;
    /* the kinds shown: noise never calibrates with gdp; epsilon shows gdp's approximation only
     * beside prv's upper bound */
    int kinds[DP_ACCT_COUNT + 1], nk = 0;
    if (o.all) {
        for (int k = 0; k < DP_ACCT_COUNT; k++)
            if (!(noise && k == DP_ACCT_GDP)) kinds[nk++] = k;
    } else {
        if (o.kind == DP_ACCT_GDP) kinds[nk++] = DP_ACCT_PRV;
        kinds[nk++] = (int)o.kind;
    }
    const char *rule = !o.have_epochs ? "steps"
                       : o.have_n     ? "epochs * round(dataset_size / batch_size)"
                                      : "floor(epochs / sample_rate)";
    if (o.json && noise)
        printf("{\"target_epsilon\": %.17g, \"sample_rate\": %.17g, \"steps\": %ld, \"steps_from\": \"%s\", "
               "\"delta\": %.17g, \"accountants\": {",
               o.target, o.q, o.steps, rule, o.delta);
    else if (o.json)
        printf("{\"sample_rate\": %.17g, \"noise_multiplier\": %.17g, \"steps\": %ld, \"steps_from\": \"%s\", "
               "\"delta\": %.17g, \"accountants\": {",
               o.q, o.sigma, o.steps, rule, o.delta);
    else if (noise)
        printf("target epsilon %g, sample rate %g, %ld steps, delta %g\n", o.target, o.q, o.steps,
               o.delta);
    else
        printf("sample rate %g, noise multiplier %g, %ld steps, delta %g\n", o.q, o.sigma, o.steps,
               o.delta);
    if (!o.json && o.have_epochs && o.have_n)
        printf("  steps: %g epochs x round(%ld / %ld) = %g x %ld = %ld (as `dpsgd train`)\n", o.epochs, o.n,
               o.batch, o.epochs, o.spe, o.steps);
    else if (!o.json && o.have_epochs)
        printf("  steps: floor(%g epochs / sample rate %g) = %ld (as Opacus); `dpsgd train` runs epochs x "
               "round(n / batch): give --dataset-size and --batch-size to count as it does\n",
               o.epochs, o.q, o.steps);
    for (int i = 0; i < nk; i++) {
        const int k = kinds[i];
        double sigma = o.sigma;
        dp_epsilon_report r;
        dp_status st = noise ? dp_calibrate_sigma_kind((dp_accountant_kind)k, o.target, o.delta, o.q, o.steps, 0.0,
                                                       &sigma)
                             : DP_OK;
        const int calib_failed = noise && st != DP_OK;
        if (!st) st = epsilon_of((dp_accountant_kind)k, o.q, sigma, o.steps, o.delta, &r);
        if (st) {
            if (o.json) printf("}}\n");
            /* the arguments were checked above: a range error of the calibration is a target no
             * noise reaches (said at once, with the range), i.e. a request to change */
            if (calib_failed && st == DP_ERR_RANGE) {
                fprintf(stderr, "%s: --target-epsilon %g, --delta %g: %s\n", prog, o.target, o.delta, dp_cli_error());
                return 2;
            }
            return dp_cli_fail(st);
        }
        const char *name = dp_accountant_kind_name((dp_accountant_kind)k);
        if (o.json) {
            printf("%s\"%s\": {", i > 0 ? ", " : "", name);
            if (noise) json_num("noise_multiplier", sigma, 1);
            json_num("epsilon", r.epsilon, 1);
            if (!noise) {
                json_num("estimate", r.estimate, 1);
                json_num("lower", r.lower, 1);
                json_num("upper", r.upper, 1);
            }
            printf("\"approximate\": %s}", r.approximate ? "true" : "false");
        } else if (noise) {
            printf("  %s: noise multiplier %.4f  (epsilon %.4f)\n", name, sigma, r.epsilon);
        } else if (k == DP_ACCT_GDP) {
            printf("  gdp: epsilon %.4f  (central-limit APPROXIMATION, not a bound: it can underestimate; the "
                   "guarantee is prv's upper bound)\n",
                   r.epsilon);
        } else if (k == DP_ACCT_RDP) {
            printf("  rdp: epsilon %.4f  (upper bound)\n", r.epsilon);
        } else {
            printf("  %s: epsilon %.4f  (upper bound; estimate %.4f, lower bound %.4f)\n", name,
                   r.epsilon, r.estimate, r.lower);
        }
    }
    if (noise && o.all && !o.json)
        printf("  gdp: not used: an approximation that can underestimate epsilon cannot choose the noise\n");
    if (o.json) printf("}}\n");
    return 0;
}

int dp_cmd_epsilon(int argc, char **argv) { return run(argc, argv, 0); }

int dp_cmd_noise(int argc, char **argv) { return run(argc, argv, 1); }
