/* cmd_epsilon.c: `dpsgd epsilon` (the epsilon a run spends) and `dpsgd noise` (the noise
 * multiplier a target epsilon needs), with the RDP, PRV, PLD or GDP accountant. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int dp_cmd_epsilon(int argc, char **argv);
int dp_cmd_noise(int argc, char **argv);

#define prog dp_cli_prog

static void usage_epsilon(FILE *f) {
    fprintf(f,
"usage: dpsgd epsilon --sample-rate Q --noise-multiplier S (--steps N | --epochs E)\n"
"                     --delta D [--accountant rdp|prv|pld|gdp|all] [--json]\n"
"\n"
"The epsilon spent by N steps of DP-SGD with Poisson sampling at rate Q and noise\n"
"multiplier S, at the given delta.\n"
"\n"
"  --sample-rate Q         per-example sampling probability, in (0, 1]\n"
"  --noise-multiplier S    noise std / clipping norm, > 0\n"
"  --steps N               optimizer steps, >= 1\n"
"  --epochs E              instead of --steps: steps = floor(E / Q) (as Opacus)\n"
"  --delta D               in (0, 1)\n"
"  --accountant A          rdp | prv | pld | gdp | all [prv]\n"
"                            rdp: Renyi DP (an upper bound)\n"
"                            prv: privacy random variables, FFT (upper bound reported;\n"
"                                 lower and estimate shown; errors as Opacus)\n"
"                            pld: privacy loss distribution, pessimistic (upper bound)\n"
"                            gdp: central-limit approximation: CAN UNDERESTIMATE\n"
"  --json                  one JSON object on stdout\n");
}

static void usage_noise(FILE *f) {
    fprintf(f,
"usage: dpsgd noise --target-epsilon E --delta D --sample-rate Q (--steps N | --epochs E)\n"
"                   [--accountant rdp|prv|pld|gdp|all] [--json]\n"
"\n"
"The smallest noise multiplier (to 0.01 in epsilon) whose epsilon at delta is at most the\n"
"target, for N steps at sample rate Q.\n"
"\n"
"  --target-epsilon E      > 0\n"
"  --delta D               in (0, 1)\n"
"  --sample-rate Q         in (0, 1]\n"
"  --steps N               >= 1\n"
"  --epochs E              instead of --steps: steps = floor(E / Q) (as Opacus)\n"
"  --accountant A          rdp | prv | pld | gdp | all [prv] (see `dpsgd epsilon --help`)\n"
"  --json                  one JSON object on stdout\n");
}

typedef struct {
    double q, sigma, delta, epochs, target;
    long steps;
    int have_q, have_sigma, have_delta, have_steps, have_epochs, have_target, json, all;
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
        if (!v) {
            fprintf(stderr, "%s: %s needs a value\n", prog, a);
            if (strncmp(a, "--", 2)) usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--sample-rate")) {
            if (!dp_cli_parse_double(a, v, &o->q)) return 2;
            o->have_q = 1;
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
                fprintf(stderr, "%s: --accountant %s: must be rdp, prv, pld, gdp or all\n", prog, v);
                return 2;
            }
        } else {
            fprintf(stderr, "%s: unknown option %s\n", prog, a);
            usage(stderr);
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
    REQUIRE(o->have_q, "--sample-rate is required");
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
        double s = floor(o->epochs / o->q);
        REQUIRE(s >= 1.0, "--epochs gives fewer than 1 step (steps = floor(epochs / sample rate))");
        REQUIRE(s <= 1e12, "--epochs gives more than 1e12 steps");
        o->steps = (long)s;
    }
#undef REQUIRE
    return -1;
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
    int k0 = o.all ? 0 : (int)o.kind, k1 = o.all ? DP_ACCT_COUNT : (int)o.kind + 1;
    if (o.json && noise)
        printf("{\"target_epsilon\": %.17g, \"sample_rate\": %.17g, \"steps\": %ld, \"delta\": %.17g, "
               "\"accountants\": {",
               o.target, o.q, o.steps, o.delta);
    else if (o.json)
        printf("{\"sample_rate\": %.17g, \"noise_multiplier\": %.17g, \"steps\": %ld, \"delta\": %.17g, "
               "\"accountants\": {",
               o.q, o.sigma, o.steps, o.delta);
    else if (noise)
        printf("target epsilon %g, sample rate %g, %ld steps, delta %g\n", o.target, o.q, o.steps,
               o.delta);
    else
        printf("sample rate %g, noise multiplier %g, %ld steps, delta %g\n", o.q, o.sigma, o.steps,
               o.delta);
    for (int k = k0; k < k1; k++) {
        double sigma = o.sigma;
        dp_epsilon_report r;
        dp_status st = noise ? dp_calibrate_sigma_kind((dp_accountant_kind)k, o.target, o.delta, o.q, o.steps, 0.0,
                                                       &sigma)
                             : DP_OK;
        if (!st) st = dp_epsilon_kind((dp_accountant_kind)k, o.q, sigma, o.steps, o.delta, &r);
        if (st) {
            if (o.json) printf("}}\n");
            return dp_cli_fail(st);
        }
        const char *name = dp_accountant_kind_name((dp_accountant_kind)k);
        if (o.json) {
            printf("%s\"%s\": {", k > k0 ? ", " : "", name);
            if (noise) json_num("noise_multiplier", sigma, 1);
            json_num("epsilon", r.epsilon, 1);
            if (!noise) {
                json_num("estimate", r.estimate, 1);
                json_num("lower", r.lower, 1);
                json_num("upper", r.upper, 1);
            }
            printf("\"approximate\": %s}", r.approximate ? "true" : "false");
        } else if (noise) {
            printf("  %s: noise multiplier %.4f  (epsilon %.4f)%s\n", name, sigma, r.epsilon,
                   r.approximate ? "  (GDP APPROXIMATION: can underestimate epsilon)" : "");
        } else if (k == DP_ACCT_GDP) {
            printf("  gdp: epsilon %.4f  (central-limit APPROXIMATION: can underestimate)\n", r.epsilon);
        } else if (k == DP_ACCT_RDP) {
            printf("  rdp: epsilon %.4f  (upper bound)\n", r.epsilon);
        } else {
            printf("  %s: epsilon %.4f  (upper bound; estimate %.4f, lower bound %.4f)\n", name,
                   r.epsilon, r.estimate, r.lower);
        }
    }
    if (o.json) printf("}}\n");
    return 0;
}

int dp_cmd_epsilon(int argc, char **argv) { return run(argc, argv, 0); }

int dp_cmd_noise(int argc, char **argv) { return run(argc, argv, 1); }
