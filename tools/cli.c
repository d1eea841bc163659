/* cli.c: helpers shared by the dpsgd commands (see cli.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

const char *dp_cli_prog = "dpsgd";
#define prog dp_cli_prog

int dp_cli_die(const char *what) {
    fprintf(stderr, "%s: %s\n", prog, what);
    return 2;
}

int dp_cli_fail(dp_status st) {
    const char *msg = dp_last_error();
    fprintf(stderr, "%s: error: %s\n", prog, msg && *msg ? msg : dp_strerror(st));
    return 1;
}

/* ---- value parsing: every bad value names its flag ---- */

int dp_cli_parse_double(const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || errno || !isfinite(x)) {
        fprintf(stderr, "%s: %s %s: not a finite number\n", prog, flag, v ? v : "(missing value)");
        return 0;
    }
    *out = x;
    return 1;
}

int dp_cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "%s: %s %s: must be an integer in %ld..%ld\n", prog, flag, v ? v : "(missing value)", lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* ---- JSON summary, written atomically (temp file, fsync, rename) ---- */

int dp_cli_write_atomic(const char *flag, const char *path, const char *text) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return 0;
    snprintf(tmp, n + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd >= 0) { /* mkstemp makes 0600 files: give the output the usual umask permissions */
        mode_t um = umask(0);
        umask(um);
        (void)fchmod(fd, 0666 & ~um);
    }
    if (fd < 0) {
        fprintf(stderr, "%s: %s %s: cannot create a file there: %s\n", prog, flag, path, strerror(errno));
        free(tmp);
        return 0;
    }
    size_t len = strlen(text), off = 0;
    int ok = 1;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w <= 0) {
            ok = 0;
            break;
        }
        off += (size_t)w;
    }
    if (ok && fsync(fd) != 0) ok = 0;
    if (close(fd) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "%s: %s %s: write failed: %s\n", prog, flag, path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return ok;
}


/* ---- what `dpsgd train` and `dpsgd audit` share ---- */

int dp_cli_need_value(const char *cmd, const char *a, const char *v, int *i) {
    if (!v) {
        fprintf(stderr, "%s: %s needs a value (see dpsgd %s --help)\n", prog, a, cmd);
        return 0;
    }
    (*i)++;
    return 1;
}

/* a flag whose value must be > 0: "<flag>: must be > 0" otherwise */
static int positive(const char *a, const char *v, double *out) {
    if (!dp_cli_parse_double(a, v, out)) return 0;
    if (*out <= 0) {
        fprintf(stderr, "%s: %s: must be > 0\n", prog, a);
        return 0;
    }
    return 1;
}

static int parse_int(const char *a, const char *v, long hi, int *out) {
    long lv;
    if (!dp_cli_parse_long(a, v, 1, hi, &lv)) return 0;
    *out = (int)lv;
    return 1;
}

int dp_cli_train_flag(dp_cli_train_opts *o, const char *a, const char *v, int *i) {
    /* all of them take a value */
    static const char *const with_value[] = {"--data", "--model", "--train-limit", "--threads", "--clipping",
                                             "--max-grad-norm", "--epsilon", "--delta", "--noise-multiplier",
                                             "--epochs", "--batch-size", "--physical-batch", "--lr", "--momentum",
                                             "--seed"};
    size_t f = 0, nf = sizeof with_value / sizeof with_value[0];
    while (f < nf && strcmp(a, with_value[f])) f++;
    if (f == nf) return 0;
    if (!dp_cli_need_value(o->cmd, a, v, i)) return -1;
    int ok = 1;
    if (!strcmp(a, "--data")) {
        o->data = v;
    } else if (!strcmp(a, "--model")) {
        o->model_name = v;
    } else if (!strcmp(a, "--train-limit")) {
        ok = dp_cli_parse_long(a, v, 1, 1L << 40, &o->train_limit);
    } else if (!strcmp(a, "--threads")) {
        ok = dp_cli_parse_long(a, v, 1, 1024, &o->threads);
    } else if (!strcmp(a, "--clipping")) {
        if (dp_clip_mode_parse(v, o->clipping) != DP_OK) {
            dp_cli_die(dp_last_error());
            ok = 0;
        }
    } else if (!strcmp(a, "--max-grad-norm")) {
        ok = positive(a, v, o->max_grad_norm);
    } else if (!strcmp(a, "--epsilon")) {
        ok = positive(a, v, o->target_epsilon);
    } else if (!strcmp(a, "--noise-multiplier")) {
        ok = positive(a, v, o->noise_multiplier);
    } else if (!strcmp(a, "--delta")) {
        ok = dp_cli_parse_double(a, v, o->delta);
        if (ok && !(*o->delta > 0 && *o->delta < 1)) {
            dp_cli_die("--delta: must be in (0, 1)");
            ok = 0;
        }
    } else if (!strcmp(a, "--epochs")) {
        ok = parse_int(a, v, 1000000, o->epochs);
    } else if (!strcmp(a, "--batch-size")) {
        ok = parse_int(a, v, 1 << 30, o->expected_batch);
    } else if (!strcmp(a, "--physical-batch")) {
        ok = parse_int(a, v, 1 << 30, o->physical_batch);
    } else if (!strcmp(a, "--lr")) {
        ok = dp_cli_parse_double(a, v, &o->lr);
    } else if (!strcmp(a, "--momentum")) {
        ok = dp_cli_parse_double(a, v, &o->momentum);
    } else { /* --seed */
        long lv;
        ok = dp_cli_parse_long(a, v, 0, 1L << 62, &lv);
        if (ok) {
            *o->seed = (uint64_t)lv;
            o->seed_given = 1;
        }
    }
    return ok ? 1 : -1;
}

static void limit_dataset(dp_dataset *d, long limit) {
    if (limit > 0 && (size_t)limit < d->n) d->n = (size_t)limit;
}

int dp_cli_load_data_and_model(const dp_cli_data_spec *s, dp_dataset *tr, dp_dataset *te, int *K, dp_model **m) {
    dp_status st;
    if ((st = dp_dataset_load_mnist_dir(s->data, 1, tr)) != DP_OK ||
        (te && (st = dp_dataset_load_mnist_dir(s->data, 0, te)) != DP_OK))
        return dp_cli_fail(st);
    limit_dataset(tr, s->train_limit);
    if (te) limit_dataset(te, s->test_limit);
    int k = te && te->n_classes > tr->n_classes ? te->n_classes : tr->n_classes;
    *K = k;
    if ((st = dp_dataset_validate(tr, "training set", 2, k)) != DP_OK ||
        (te && (st = dp_dataset_validate(te, "test set", 1, k)) != DP_OK))
        return dp_cli_fail(st);
    if (s->norm) {
        dp_dataset_normalize(tr, s->norm[0], s->norm[1]);
        if (te) dp_dataset_normalize(te, s->norm[0], s->norm[1]);
    }
    if ((st = dp_model_create_named(s->model_name, tr->c, tr->h, tr->w, k, m)) != DP_OK) {
        fprintf(stderr, "%s: --model %s: %s\n", prog, s->model_name, dp_last_error());
        return 2;
    }
    if (dp_model_output_size(*m) != k) {
        fprintf(stderr, "%s: --model: the model outputs %d values but the data has %d classes\n", prog,
                dp_model_output_size(*m), k);
        return 2;
    }
    for (int f = 0; f < s->nfreeze; f++)
        if ((st = dp_model_set_frozen(*m, (int)s->freeze[f], 1)) != DP_OK) {
            fprintf(stderr, "%s: --freeze %ld: %s\n", prog, s->freeze[f], dp_last_error());
            return 2;
        }
    dp_rng init;
    dp_rng_seed(&init, s->seed ^ 0x1badc0ffeeULL);
    dp_model_init(*m, &init);
    return 0;
}
