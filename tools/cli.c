/* cli.c: helpers shared by the dpsgd commands (see cli.h). */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* realpath */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "io/file.h" /* the library's atomic write (hidden; the CLI links the static library) */

const char *dp_cli_prog = "dpsgd";
#define prog dp_cli_prog

int dp_cli_die(const char *what) {
    fprintf(stderr, "%s: %s\n", prog, what);
    return 2;
}

int dp_cli_fail(dp_status st) {
    const char *msg = dp_cli_error();
    fprintf(stderr, "%s: error: %s\n", prog, msg && *msg ? msg : dp_strerror(st));
    return 1;
}

/* ---- the library's messages in the CLI's words ----
 * The library names a parameter as its C struct field ("max_grad_norm 0: must be a positive
 * finite number", docs/design.md); the CLI shows the flag that sets it. One row per field
 * that a flag sets; fields no flag sets (dampening, eps) and words that are prose in the
 * library's messages (accountant, canary, optimizer) have none. DP_CLI_MAP_MODEL rows, the
 * transformer's parameters, are also ordinary words ("layers", "dropout" as a layer kind):
 * they apply only to messages from building the model. */
static const struct {
    const char *param, *flag;
    unsigned scope;
} param_flags[] = {
    /* dp_train_params, dp_audit_params, dp_clip_params */
    {"max_grad_norm", "--max-grad-norm", DP_CLI_MAP_RUN},
    {"noise_multiplier", "--noise-multiplier", DP_CLI_MAP_RUN},
    {"target_epsilon", "--epsilon", DP_CLI_MAP_RUN},
    {"delta", "--delta", DP_CLI_MAP_RUN},
    {"expected_batch", "--batch-size", DP_CLI_MAP_RUN},
    {"physical_batch", "--physical-batch", DP_CLI_MAP_RUN},
    {"epochs", "--epochs", DP_CLI_MAP_RUN},
    {"clipping", "--clipping", DP_CLI_MAP_RUN},
    {"mem_budget", "--mem-budget", DP_CLI_MAP_RUN},
    {"ema_decay", "--ema", DP_CLI_MAP_RUN},
    {"checkpoint_dir", "--checkpoint-dir", DP_CLI_MAP_RUN},
    {"checkpoint_every", "--checkpoint-every", DP_CLI_MAP_RUN},
    {"resume", "--resume", DP_CLI_MAP_RUN},
    {"force", "--force", DP_CLI_MAP_RUN},
    {"no_dp", "--no-dp", DP_CLI_MAP_RUN},
    {"noise_seeded", "--noise-seed", DP_CLI_MAP_RUN},
    {"noise_seed", "--noise-seed", DP_CLI_MAP_RUN},
    {"seed", "--seed", DP_CLI_MAP_RUN},
    {"threads", "--threads", DP_CLI_MAP_RUN},
    {"data_id", "--data", DP_CLI_MAP_RUN},
    {"num_canaries", "--canaries", DP_CLI_MAP_RUN},
    {"guesses", "--guesses", DP_CLI_MAP_RUN},
    {"confidence", "--confidence", DP_CLI_MAP_RUN},
    /* dp_optim_params (optim.kind: the optimizer's name) */
    {"optim.kind", "--optimizer", DP_CLI_MAP_RUN},
    {"lr", "--lr", DP_CLI_MAP_RUN},
    {"momentum", "--momentum", DP_CLI_MAP_RUN},
    {"nesterov", "--nesterov", DP_CLI_MAP_RUN},
    {"weight_decay", "--weight-decay", DP_CLI_MAP_RUN},
    {"beta1", "--beta1", DP_CLI_MAP_RUN},
    {"beta2", "--beta2", DP_CLI_MAP_RUN},
    /* the audit's test switches (dpsgd-testhooks) */
    {"noise_scale", "--debug-noise-scale", DP_CLI_MAP_RUN},
    {"canary_scale", "--debug-canary-scale", DP_CLI_MAP_RUN},
    /* dp_transformer_params */
    {"vocab", "--vocab", DP_CLI_MAP_MODEL},
    {"seq_len", "--seq-len", DP_CLI_MAP_MODEL},
    {"width", "--width", DP_CLI_MAP_MODEL},
    {"heads", "--heads", DP_CLI_MAP_MODEL},
    {"layers", "--layers", DP_CLI_MAP_MODEL},
    {"ffn", "--ffn", DP_CLI_MAP_MODEL},
    {"dropout", "--dropout", DP_CLI_MAP_MODEL},
    {"train_last", "--train-last-blocks", DP_CLI_MAP_MODEL},
};

/* a character that continues a name, a path, a flag or a quoted value: a parameter name
 * next to one is not a whole word (a '.' is one only when a name character follows it) */
static int name_char(const char *c) {
    if (*c == '.') return name_char(c + 1);
    return isalnum((unsigned char)*c) || (*c && strchr("_-/'\"", *c));
}

const char *dp_cli_map_params(const char *msg, unsigned scope) {
    static char out[4096];
    const size_t rows = sizeof param_flags / sizeof *param_flags;
    size_t o = 0;
    for (size_t i = 0; msg[i] && o + 1 < sizeof out;) {
        size_t hit = rows, len = 0;
        if (i == 0 || !name_char(msg + i - 1))
            for (size_t r = 0; r < rows && hit == rows; r++) {
                len = strlen(param_flags[r].param);
                if ((param_flags[r].scope & scope) && !strncmp(msg + i, param_flags[r].param, len) &&
                    !name_char(msg + i + len))
                    hit = r;
            }
        if (hit < rows) {
            int k = snprintf(out + o, sizeof out - o, "%s", param_flags[hit].flag);
            o = k < 0 || (size_t)k >= sizeof out - o ? sizeof out - 1 : o + (size_t)k;
            i += len;
        } else {
            out[o++] = msg[i++];
        }
    }
    out[o] = '\0';
    return out;
}

int dp_cli_unknown(const char *cmd, const char *arg) {
    const char *flag = dp_cli_split_flag(arg);
    if (flag) fprintf(stderr, "%s: %s=%s: %s takes no value (see dpsgd %s --help)\n", prog, flag, arg, flag, cmd);
    else fprintf(stderr, "%s: unknown option '%s' (see dpsgd %s --help)\n", prog, arg, cmd);
    return 2;
}

const char *dp_cli_error(void) { return dp_cli_map_params(dp_last_error(), DP_CLI_MAP_RUN); }

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
    if (dp__write_file_atomic(path, text, strlen(text)) == DP_OK) return 1;
    fprintf(stderr, "%s: %s %s\n", prog, flag, dp_last_error()); /* the message names path */
    return 0;
}

/* ---- outputs, checked before any work (dp_cli_check_outputs) ---- */

/* path without trailing slashes (a directory output may be spelled "ck/") */
static void strip_slashes(const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path);
    for (size_t n = strlen(buf); n > 1 && buf[n - 1] == '/'; n--) buf[n - 1] = 0;
}

/* the directory part of path into dir ("." when there is none), and where its last name starts */
static const char *split_path(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, cap, ".");
        return path;
    }
    snprintf(dir, cap, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return slash + 1;
}

/* prints why o cannot be written; returns 0 */
static int output_bad(const dp_cli_output *o, const char *why, const char *where, int err) {
    fprintf(stderr, "%s: %s %s: %s%s%s%s (outputs are checked before any work starts)\n", prog, o->flag, o->path, why,
            where ? where : "", err ? ": " : "", err ? strerror(err) : "");
    return 0;
}

/* whether o can be written: its directory exists and takes a new file */
static int output_writable(const dp_cli_output *o) {
    char path[4096], dir[4096], probe[4200];
    struct stat sb;
    if (!*o->path) return output_bad(o, "empty path", NULL, 0);
    strip_slashes(o->path, path, sizeof path);
    const int exists = stat(path, &sb) == 0;
    if (o->inside && exists && !S_ISDIR(sb.st_mode)) return output_bad(o, "exists and is not a directory", NULL, 0);
    if (!o->inside && exists && S_ISDIR(sb.st_mode)) return output_bad(o, "is a directory, not a file", NULL, 0);
    if (!o->inside && o->path[strlen(o->path) - 1] == '/')
        return output_bad(o, "names a directory, not a file", NULL, 0);
    /* created now, so that files may be written into it (EEXIST: another MPI rank was first) */
    if (o->inside && !exists && mkdir(path, 0777) != 0 && errno != EEXIST)
        return output_bad(o, "cannot create the directory", NULL, errno);
    if (o->inside) snprintf(dir, sizeof dir, "%s", path);
    else {
        split_path(path, dir, sizeof dir); /* the directory the file goes in */
        if (stat(dir, &sb) != 0) return output_bad(o, "cannot write in ", dir, errno);
        if (!S_ISDIR(sb.st_mode)) return output_bad(o, "not a directory: ", dir, 0);
    }
    /* a new file, created exclusively and removed: the write at the end will need the same */
    snprintf(probe, sizeof probe, "%s/.dpsgd-check-XXXXXX", dir);
    int fd = mkstemp(probe);
    if (fd < 0) return output_bad(o, "cannot create a file in ", dir, errno);
    close(fd);
    unlink(probe);
    return 1;
}

/* the file o writes as the real path of its directory plus its name, so that two spellings of
 * one file compare equal (a missing directory output: the real path of its parent) */
static void output_file(const dp_cli_output *o, char *buf, size_t cap) {
    char path[4096], dir[4096], real[PATH_MAX];
    strip_slashes(o->path, path, sizeof path);
    if (o->inside && realpath(path, real)) {
        snprintf(buf, cap, "%s/%s", real, o->inside);
        return;
    }
    const char *base = split_path(path, dir, sizeof dir), *sep = o->inside ? "/" : "", *in = o->inside ? o->inside : "";
    if (realpath(dir, real)) snprintf(buf, cap, "%s/%s%s%s", real, base, sep, in);
    else snprintf(buf, cap, "%s%s%s", path, sep, in);
}

int dp_cli_check_outputs(const dp_cli_output *o, int n) {
    for (int pass = 0; pass < 2; pass++) /* directories first: a file output may go in one */
        for (int i = 0; i < n; i++)
            if (o[i].path && (o[i].inside != NULL) == (pass == 0) && !output_writable(&o[i])) return 1;
    char a[8400], b[8400];
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            if (!o[i].path || !o[j].path) continue;
            output_file(&o[i], a, sizeof a);
            output_file(&o[j], b, sizeof b);
            if (strcmp(a, b)) continue;
            fprintf(stderr, "%s: %s %s and %s %s name the same file (%s): one would overwrite the other; give each its "
                            "own path\n", prog, o[i].flag, o[i].path, o[j].flag, o[j].path, a);
            return 2;
        }
    return 0;
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

/* SIZE: a number of bytes with an optional unit: K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024),
 * KB/MB/GB/TB (powers of 1000), B; "none" or 0: no limit */
int dp_cli_parse_size(const char *cmd, const char *flag, const char *v, size_t *out) {
    if (!strcmp(v, "none")) {
        *out = 0;
        return 1;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || !isfinite(x) || x < 0) goto bad;
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},     {"B", 1},          {"K", 1024.0},       {"KiB", 1024.0}, {"KB", 1e3},
                 {"M", (1024.0 * 1024)},  {"MiB", (1024.0 * 1024)},      {"MB", 1e6},         {"G", (1024.0 * 1024 * 1024)},      {"GiB", (1024.0 * 1024 * 1024)},
                 {"GB", 1e9}, {"T", (1024.0 * 1024 * 1024) * 1024}, {"TiB", (1024.0 * 1024 * 1024) * 1024}, {"TB", 1e12}};
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++)
        if (!strcmp(end, units[u].suffix)) {
            double bytes = x * units[u].mult;
            if (bytes > 1e18) goto bad;
            *out = (size_t)bytes;
            return 1;
        }
bad:
    fprintf(stderr,
            "%s: %s: %s %s: not a size (a number of bytes with an optional unit: 512MiB, 16GiB, 2e9, "
            "or none)\n",
            prog, cmd, flag, v);
    return 0;
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
        if (!*v) {
            fprintf(stderr, "%s: --data: empty path\n", prog);
            return -1;
        }
        o->data = v;
        o->data_given = 1;
    } else if (!strcmp(a, "--model")) {
        o->model_name = v;
    } else if (!strcmp(a, "--train-limit")) {
        ok = dp_cli_parse_long(a, v, 1, 1L << 40, &o->train_limit);
    } else if (!strcmp(a, "--threads")) {
        ok = dp_cli_parse_long(a, v, 1, 1024, &o->threads);
    } else if (!strcmp(a, "--clipping")) {
        if (dp_clip_mode_parse(v, o->clipping) != DP_OK) {
            dp_cli_die(dp_cli_error());
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

/* ---- data and model flags (train and norms) ---- */

void dp_cli_model_opts_init(dp_cli_model_opts *o, const char *cmd) {
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->pad_id = -1;
    o->synthetic_seed = -1;
    o->holdout = NAN;
    o->tp = dp_transformer_default_params();
    o->tp.seq_len = 0; /* from the data (synthetic-text: DP_CLI_SYN_SEQ) */
    o->tp.vocab = 0;   /* --vocab (synthetic-text: DP_CLI_SYN_VOCAB); never from the data */
}

void dp_cli_model_usage(FILE *f) {
    dp_transformer_params d = dp_transformer_default_params();
    fprintf(f,
"sizes (public choices, never read off the data: from private data they would leak it):\n"
"  --classes K             number of classes; every label must lie in 0..K-1; required with\n"
"                          --data-ids and --data-x [IDX data (the MNIST format): 10;\n"
"                          synthetic-text: 2]\n"
"token data (for --model transformer and specs that start with embedding(V,D)):\n"
"  --data " DP_CLI_SYNTHETIC "   the built-in order task (docs/sequence-data.md), on which\n"
"                          bag-of-words models stay at 50%%; the default data of token models\n"
"  --synthetic-n N         its training examples [%d]\n"
"  --synthetic-test-n N    its test examples (a split drawn from another seed) [%d]\n"
"  --synthetic-seed S      seed of the training split; the test split uses S + 1000003 [%d]\n"
"  --data-ids FILE.npy     token ids [N, T] (int32/int64/uint8; -1 = padding) ...\n"
"  --data-labels FILE.npy  ... and labels [N] (int32/int64/uint8)\n"
"  --test-ids FILE.npy, --test-labels FILE.npy   the test split; without them a random\n"
"                          fraction of --data-ids is held out (--holdout)\n"
"  --pad-id K              read id K as padding (e.g. 0 for BERT's [PAD]) [none]\n"
"  --seq-len T             sequence length; must match the data [from the data; synthetic: %d]\n"
"  --vocab V               vocabulary size; every id must lie in 0..V-1; required for\n"
"                          --model transformer on --data-ids [synthetic: %d; a spec: its V]\n"
"other .npy data:\n"
"  --data-x FILE.npy       float features [N, D], [N, H, W] or [N, C, H, W] with --data-labels;\n"
"                          --test-x/--test-labels, or --holdout; --normalize applies (default none)\n"
"  --loss L                xent: class labels, cross-entropy; mse: regression, --data-labels and\n"
"                          --test-labels hold float targets [N] or [N, K] (K = the model's\n"
"                          outputs; no --classes), mean squared error per example [xent]\n"
"  --holdout F             fraction of the rows held out as the test split when no test files\n"
"                          are given (the same rows whatever --seed) [%g]\n"
"transformer (--model transformer: a BERT-like encoder classifier, Hugging Face names):\n"
"  --layers N              encoder blocks [%d]\n"
"  --width D               hidden size [%d]\n"
"  --heads H               attention heads; must divide --width [%d]\n"
"  --ffn F                 feed-forward width; 0 = 4 x width [%d]\n"
"  --pre-norm              LayerNorm before each sub-block (and a final one) [post-norm, as BERT]\n"
"  --activation A          gelu | relu [%s]\n"
"  --pool P                first | mean: the first token or the mean over real tokens [%s]\n"
"  --dropout P             hidden dropout probability [%g]\n"
"  --train-last-blocks K   train only the last K blocks, the pooler and the classifier [all]\n"
"                          (more: --freeze bert.embeddings, --freeze bert.encoder.layer.0)\n",
            DP_CLI_SYN_N, DP_CLI_SYN_TEST_N, DP_CLI_SYN_SEED, DP_CLI_SYN_SEQ, DP_CLI_SYN_VOCAB, DP_CLI_HOLDOUT,
            d.layers, d.width, d.heads, d.ffn, d.gelu ? "gelu" : "relu", d.pool == DP_POOL_FIRST ? "first" : "mean",
            (double)d.dropout);
}

int dp_cli_model_flag(dp_cli_model_opts *o, const char *a, const char *v, int *i) {
    static const char *const with_value[] = {
        "--data-x", "--data-ids", "--data-labels", "--test-x", "--test-ids", "--test-labels", "--pad-id",
        "--synthetic-n", "--synthetic-test-n", "--synthetic-seed", "--holdout", "--normalize", "--seq-len",
        "--vocab", "--classes", "--layers", "--width", "--heads", "--ffn", "--activation", "--pool", "--dropout",
        "--train-last-blocks", "--freeze", "--loss"};
    if (!strcmp(a, "--pre-norm")) {
        o->tp.pre_norm = 1;
        o->given |= DP_CLI_G_PRENORM;
        return 1;
    }
    size_t f = 0, nf = sizeof with_value / sizeof with_value[0];
    while (f < nf && strcmp(a, with_value[f])) f++;
    if (f == nf) return 0;
    if (!dp_cli_need_value(o->cmd, a, v, i)) return -1;
    long lv;
    double dv;
    int ok = 1;
#define PATH_FLAG(name, field)                                                                                         \
    else if (!strcmp(a, name)) {                                                                                       \
        if (!*v) {                                                                                                     \
            fprintf(stderr, "%s: %s: empty path\n", prog, a);                                                          \
            return -1;                                                                                                 \
        }                                                                                                              \
        o->field = v;                                                                                                  \
    }
    if (0) {
    }
    PATH_FLAG("--data-x", data_x)
    PATH_FLAG("--data-ids", data_ids)
    PATH_FLAG("--data-labels", data_labels)
    PATH_FLAG("--test-x", test_x)
    PATH_FLAG("--test-ids", test_ids)
    PATH_FLAG("--test-labels", test_labels)
#undef PATH_FLAG
    else if (!strcmp(a, "--pad-id")) ok = dp_cli_parse_long(a, v, 0, DP_TOKENS_MAX_VOCAB - 1, &o->pad_id);
    else if (!strcmp(a, "--synthetic-n")) ok = dp_cli_parse_long(a, v, 2, 100000000, &o->synthetic_n);
    else if (!strcmp(a, "--synthetic-test-n")) ok = dp_cli_parse_long(a, v, 1, 100000000, &o->synthetic_test_n);
    else if (!strcmp(a, "--synthetic-seed")) ok = dp_cli_parse_long(a, v, 0, 1L << 62, &o->synthetic_seed);
    else if (!strcmp(a, "--holdout")) {
        ok = dp_cli_parse_double(a, v, &dv);
        if (ok && !(dv > 0 && dv < 1)) {
            fprintf(stderr, "%s: --holdout %s: must be in (0, 1)\n", prog, v);
            ok = 0;
        }
        if (ok) o->holdout = dv;
    } else if (!strcmp(a, "--normalize")) {
        if (!strcmp(v, "none")) o->norm_mode = 2;
        else {
            char *end;
            o->norm[0] = strtod(v, &end);
            if (end == v || *end != ',' || !dp_cli_parse_double("--normalize STD", end + 1, &o->norm[1]) ||
                !(o->norm[1] > 0) || !isfinite(o->norm[0])) {
                dp_cli_die("--normalize: expected MEAN,STD with STD > 0, or 'none'");
                return -1;
            }
            o->norm_mode = 1;
        }
    } else if (!strcmp(a, "--seq-len")) {
        ok = dp_cli_parse_long(a, v, 1, DP_TOKENS_MAX_LEN, &lv);
        o->tp.seq_len = (int)lv;
        o->seq_len_given = 1;
    } else if (!strcmp(a, "--classes")) {
        ok = dp_cli_parse_long(a, v, 1, DP_CLI_MAX_CLASSES, &o->classes);
    } else if (!strcmp(a, "--loss")) {
        if (!strcmp(v, "mse")) o->mse = 1;
        else if (!strcmp(v, "xent")) o->mse = 0;
        else {
            fprintf(stderr, "%s: --loss %s: expected xent (classification) or mse (regression)\n", prog, v);
            ok = 0;
        }
    } else if (!strcmp(a, "--vocab")) {
        ok = dp_cli_parse_long(a, v, 1, DP_TOKENS_MAX_VOCAB, &lv);
        o->tp.vocab = (int)lv;
        o->vocab_given = 1;
    } else if (!strcmp(a, "--layers")) {
        ok = dp_cli_parse_long(a, v, 0, 1024, &lv);
        o->tp.layers = (int)lv;
        o->given |= DP_CLI_G_LAYERS;
    } else if (!strcmp(a, "--width")) {
        ok = dp_cli_parse_long(a, v, 1, 65536, &lv);
        o->tp.width = (int)lv;
        o->given |= DP_CLI_G_WIDTH;
    } else if (!strcmp(a, "--heads")) {
        ok = dp_cli_parse_long(a, v, 1, 65536, &lv);
        o->tp.heads = (int)lv;
        o->given |= DP_CLI_G_HEADS;
    } else if (!strcmp(a, "--ffn")) {
        ok = dp_cli_parse_long(a, v, 0, 1 << 20, &lv);
        o->tp.ffn = (int)lv;
        o->given |= DP_CLI_G_FFN;
    } else if (!strcmp(a, "--activation")) {
        if (!strcmp(v, "gelu")) o->tp.gelu = 1;
        else if (!strcmp(v, "relu")) o->tp.gelu = 0;
        else {
            fprintf(stderr, "%s: --activation %s: must be gelu or relu\n", prog, v);
            ok = 0;
        }
        o->given |= DP_CLI_G_ACT;
    } else if (!strcmp(a, "--pool")) {
        if (!strcmp(v, "first")) o->tp.pool = DP_POOL_FIRST;
        else if (!strcmp(v, "mean")) o->tp.pool = DP_POOL_MEAN;
        else {
            fprintf(stderr, "%s: --pool %s: must be first or mean\n", prog, v);
            ok = 0;
        }
        o->given |= DP_CLI_G_POOL;
    } else if (!strcmp(a, "--dropout")) {
        ok = dp_cli_parse_double(a, v, &dv);
        if (ok && !(dv >= 0 && dv < 1)) {
            fprintf(stderr, "%s: --dropout %s: must be in [0, 1)\n", prog, v);
            ok = 0;
        }
        o->tp.dropout = (float)dv;
        o->given |= DP_CLI_G_DROPOUT;
    } else if (!strcmp(a, "--train-last-blocks")) {
        ok = dp_cli_parse_long(a, v, 0, 1024, &lv);
        o->tp.train_last = (int)lv;
        o->given |= DP_CLI_G_TRAINLAST;
    } else { /* --freeze */
        if (o->nfreeze == DP_CLI_MAX_FREEZE) {
            fprintf(stderr, "%s: --freeze: at most %d layers\n", prog, DP_CLI_MAX_FREEZE);
            return -1;
        }
        if (!*v || *v == '-' || isspace((unsigned char)*v)) {
            fprintf(stderr, "%s: --freeze '%s': expected a layer index (>= 0) or a module name\n", prog, v);
            return -1;
        }
        if (strspn(v, "0123456789") == strlen(v) && !dp_cli_parse_long(a, v, 0, 1 << 20, &lv)) return -1;
        o->freeze[o->nfreeze++] = v;
    }
    return ok ? 1 : -1;
}

/* a model that takes token ids: the transformer, or a spec whose first layer is embedding */
static int token_model_name(const char *name) {
    if (!strcmp(name, "transformer")) return 1;
    while (isspace((unsigned char)*name)) name++;
    return !strncmp(name, "embedding", 9) && (name[9] == '(' || name[9] == '@' || isspace((unsigned char)name[9]));
}

int dp_cli_model_check(const dp_cli_model_opts *o, const char *model_name, const char **data, int data_given) {
    char msg[512];
#define BAD(...)                                                                                                       \
    do {                                                                                                               \
        snprintf(msg, sizeof msg, __VA_ARGS__);                                                                        \
        dp_cli_die(msg);                                                                                               \
        return 0;                                                                                                      \
    } while (0)
    if (o->data_x && o->data_ids) BAD("--data-x: cannot be combined with --data-ids");
    const char *file = o->data_x ? "--data-x" : o->data_ids ? "--data-ids" : NULL;
    if (file && data_given) BAD("%s: cannot be combined with --data", file);
    if (o->data_labels && !file) BAD("--data-labels: needs --data-ids or --data-x");
    if (file && !o->data_labels) BAD("%s: needs --data-labels", file);
    if (o->test_x && !o->data_x) BAD("--test-x: needs --data-x");
    if (o->test_ids && !o->data_ids) BAD("--test-ids: needs --data-ids");
    if ((o->test_x || o->test_ids) && !o->test_labels) BAD("%s: needs --test-labels", o->test_x ? "--test-x" : "--test-ids");
    if (o->test_labels && !o->test_x && !o->test_ids) BAD("--test-labels: needs --test-ids or --test-x");
    if (!isnan(o->holdout) && (!file || o->test_labels))
        BAD("--holdout: only with --data-ids or --data-x and no test files");
    if (o->pad_id >= 0 && !o->data_ids) BAD("--pad-id: only with --data-ids");
    if (!file && !data_given && token_model_name(model_name)) *data = DP_CLI_SYNTHETIC;
    int synthetic = !file && !strcmp(*data, DP_CLI_SYNTHETIC);
    if (!synthetic && (o->synthetic_n || o->synthetic_test_n || o->synthetic_seed >= 0))
        BAD("%s: only with --data " DP_CLI_SYNTHETIC,
            o->synthetic_n ? "--synthetic-n" : o->synthetic_test_n ? "--synthetic-test-n" : "--synthetic-seed");
    int tokens = synthetic || o->data_ids;
    if (!tokens && o->seq_len_given) BAD("--seq-len: only for token data (--data " DP_CLI_SYNTHETIC " or --data-ids)");
    if (!tokens && o->vocab_given) BAD("--vocab: only for token data (--data " DP_CLI_SYNTHETIC " or --data-ids)");
    /* The class count and the vocabulary are shapes of the released model (the classifier's
     * output, the embedding's rows). Taken as 1 + the largest label or id in private files they
     * would tell whether some record holds a rare large one: epsilon would be infinite for it. */
    if (o->mse && !o->data_x)
        BAD("--loss mse: needs --data-x and float targets in --data-labels (regression on .npy features)");
    if (o->mse && o->classes)
        BAD("--classes: not with --loss mse (the model's outputs are the targets' width, K of --data-labels [N, K])");
    if (file && !o->classes && !o->mse)
        BAD("%s: needs --classes K (labels 0..K-1): the number of classes is the size of the model's output, "
            "and computed from the private labels it would reveal the largest one, which the privacy guarantee "
            "does not cover (docs/privacy.md)",
            file);
    if (synthetic && o->classes && o->classes != 2)
        BAD("--classes %ld: the " DP_CLI_SYNTHETIC " task has 2 classes", o->classes);
    if (tokens && o->norm_mode)
        BAD("--normalize: does not apply to token data (token ids are not scaled; only images and --data-x are)");
    if (synthetic && o->seq_len_given && o->tp.seq_len < 4)
        BAD("--seq-len %d: the synthetic task needs sequences of at least 4 tokens", o->tp.seq_len);
    if (synthetic && o->vocab_given && o->tp.vocab < 4)
        BAD("--vocab %d: the synthetic task needs a vocabulary of at least 4 ids", o->tp.vocab);
    int transformer = !strcmp(model_name, "transformer");
    if (!transformer && o->given) {
        static const char *const names[] = {"--layers", "--width", "--heads", "--ffn", "--pre-norm",
                                            "--activation", "--pool", "--dropout", "--train-last-blocks"};
        int b = 0;
        while (!(o->given & (1u << b))) b++;
        BAD("%s: only with --model transformer (not --model %s)", names[b], model_name);
    }
    if (transformer && !tokens)
        BAD("--model transformer: needs token data (--data " DP_CLI_SYNTHETIC " or --data-ids), not %s",
            o->data_x ? o->data_x : *data);
    /* a spec's embedding(V,D) states V itself */
    if (transformer && o->data_ids && !o->vocab_given)
        BAD("--data-ids: --model transformer needs --vocab V (ids 0..V-1): the vocabulary is the number of rows of "
            "the model's embedding, and computed from the private ids it would reveal the largest one, which the "
            "privacy guarantee does not cover (docs/privacy.md)");
#undef BAD
    return 1;
}

/* A label of file outside 0..k-1 (why: "--classes 10", the public source of k). The message
 * names the file and the flag but neither the label nor its row, nor how many rows: what the
 * command prints about private data is a release of it too, and the guarantee covers none of it. */
static dp_status label_outside(const char *file, int k, const char *why) {
    return dp_fail(DP_ERR_RANGE, "%s: a label is outside 0..%d (%s); labels must lie in 0..K-1 for --classes K", file,
                   k - 1, why);
}

/* every label of d in 0..k-1; else label_outside */
static dp_status check_labels(const dp_dataset *d, int k, const char *file, const char *why) {
    for (size_t i = 0; i < d->n; i++)
        if (d->y[i] < 0 || d->y[i] >= k) return label_outside(file, k, why);
    return DP_OK;
}

/* labels [N] (int32/int64/uint8, each in 0..k-1: dp_npy_labels) for a --data-x file */
static dp_status load_labels(const char *path, size_t n, const char *xpath, int k, const char *why, int32_t **out) {
    dp_npy a;
    dp_status st = dp_npy_load(path, &a);
    if (st != DP_OK) return st;
    if (a.dtype == DP_NPY_F32 || a.dtype == DP_NPY_F64) {
        dp_npy_free(&a);
        return dp_fail(DP_ERR_FORMAT, "%s: float labels; class labels must be integers (save labels.astype(np.int64)), "
                       "and regression targets need --loss mse", path);
    }
    if (a.ndim != 1 || (size_t)a.shape[0] != n) {
        dp_npy_free(&a);
        return dp_fail(DP_ERR_FORMAT, "%s: labels must be a 1-d array of %zu values (one per row of %s)", path, n, xpath);
    }
    int32_t *y = dp_alloc(sizeof(int32_t) * (n ? n : 1)), max_label = 0;
    if (!y) {
        dp_npy_free(&a);
        return DP_ERR_NOMEM;
    }
    st = dp_npy_labels(&a, path, y, &max_label);
    dp_npy_free(&a);
    if (st == DP_ERR_RANGE || (st == DP_OK && max_label >= k)) st = label_outside(path, k, why);
    if (st != DP_OK) {
        dp_free(y);
        return st;
    }
    *out = y;
    return DP_OK;
}

/* --loss mse: float targets [N] or [N, K] (one per row of xpath) as d->t; d->y all 0 and
 * n_classes = n_targets = K (the model's outputs) */
static dp_status load_targets(const char *path, const char *xpath, dp_dataset *d) {
    int64_t shape[DP_NPY_MAX_DIMS];
    int ndim;
    size_t count;
    float *t;
    dp_status st = dp_npy_load_f32(path, &t, shape, &ndim, &count);
    if (st != DP_OK) return st;
    if (ndim < 1 || ndim > 2 || (size_t)shape[0] != d->n || (ndim == 2 && (shape[1] < 1 || shape[1] > DP_CLI_MAX_CLASSES))) {
        dp_free(t);
        return dp_fail(DP_ERR_FORMAT, "%s: regression targets must be [N] or [N, K] with N = %zu (the rows of %s) and "
                       "1 <= K <= %d", path, d->n, xpath, DP_CLI_MAX_CLASSES);
    }
    d->y = dp_alloc(sizeof(int32_t) * d->n);
    if (!d->y) {
        dp_free(t);
        return DP_ERR_NOMEM;
    }
    memset(d->y, 0, sizeof(int32_t) * d->n);
    d->t = t;
    d->n_targets = d->n_classes = ndim == 2 ? (int)shape[1] : 1;
    return DP_OK;
}

/* float features [N, D] / [N, H, W] / [N, C, H, W] and labels [N] in 0..classes-1, or with
 * classes 0 (--loss mse) regression targets */
static dp_status load_npy_x(const char *xpath, const char *ypath, int classes, const char *why, dp_dataset *d) {
    int64_t shape[DP_NPY_MAX_DIMS];
    int ndim;
    size_t count;
    float *x;
    dp_status st = dp_npy_load_f32(xpath, &x, shape, &ndim, &count);
    if (st != DP_OK) return st;
    int c = 1, h = 1, w = 1;
    if (ndim < 2 || ndim > 4 || shape[0] < 1) {
        dp_free(x);
        return dp_fail(DP_ERR_FORMAT, "%s: features must have shape [N, D], [N, H, W] or [N, C, H, W] with N >= 1 (%d dimensions)",
                       xpath, ndim);
    }
    for (int k = 1; k < ndim; k++)
        if (shape[k] < 1 || shape[k] > INT32_MAX) {
            dp_free(x);
            return dp_fail(DP_ERR_FORMAT, "%s: dimension %d is %lld", xpath, k, (long long)shape[k]);
        }
    if (ndim == 2) c = (int)shape[1];
    else if (ndim == 3) h = (int)shape[1], w = (int)shape[2];
    else c = (int)shape[1], h = (int)shape[2], w = (int)shape[3];
    memset(d, 0, sizeof *d);
    d->n = (size_t)shape[0];
    d->c = c;
    d->h = h;
    d->w = w;
    d->dim = count / d->n;
    d->x = x;
    d->n_classes = classes;
    st = classes ? load_labels(ypath, d->n, xpath, classes, why, &d->y) : load_targets(ypath, xpath, d);
    if (st != DP_OK) dp_dataset_free(d);
    return st;
}

/* Moves a random fraction of all's rows (fixed seed) into te (rows keep their order). */
static int holdout_split(dp_dataset *all, double frac, const char *flag, dp_dataset *te) {
    size_t n = all->n, nt = (size_t)llround(frac * (double)n);
    if (nt < 1) nt = 1;
    if (n < 3 || nt > n - 2) {
        fprintf(stderr, "%s: --holdout %g: %s has %zu rows; need at least 2 for training and 1 to hold out\n", prog, frac,
                flag, n);
        return 2;
    }
    unsigned char *mark = calloc(n, 1);
    size_t *idx = malloc(sizeof(size_t) * n);
    memset(te, 0, sizeof *te);
    te->x = dp_alloc(sizeof(float) * nt * all->dim);
    te->y = dp_alloc(sizeof(int32_t) * nt);
    const size_t K = all->t ? (size_t)all->n_targets : 0;
    te->t = K ? dp_alloc(sizeof(float) * nt * K) : NULL;
    if (!mark || !idx || !te->x || !te->y || (K && !te->t)) {
        free(mark);
        free(idx);
        dp_dataset_free(te);
        return dp_cli_fail(DP_ERR_NOMEM);
    }
    dp_rng r;
    dp_rng_seed(&r, DP_CLI_HOLDOUT_SEED);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    dp_rng_shuffle_prefix(&r, idx, n, nt); /* the first nt of a random permutation */
    for (size_t i = 0; i < nt; i++) mark[idx[i]] = 1;
    size_t a = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
        const float *row = all->x + i * all->dim;
        if (mark[i]) {
            memcpy(te->x + b * all->dim, row, sizeof(float) * all->dim);
            if (K) memcpy(te->t + b * K, all->t + i * K, sizeof(float) * K);
            te->y[b] = all->y[i];
            b++;
        } else {
            if (a != i) memcpy(all->x + a * all->dim, row, sizeof(float) * all->dim);
            if (K && a != i) memcpy(all->t + a * K, all->t + i * K, sizeof(float) * K);
            all->y[a++] = all->y[i];
        }
    }
    all->n = a;
    te->n = b;
    te->c = all->c;
    te->h = all->h;
    te->w = all->w;
    te->dim = all->dim;
    te->n_classes = all->n_classes; /* the public --classes, not the labels the split happened to draw */
    te->n_targets = all->n_targets;
    free(mark);
    free(idx);
    return 0;
}

/* Every token id of d is padding (-1) or in 0..vocab-1. Checked here before
 * dp_dataset_validate_tokens, whose message would quote the id, its row and its position. */
static int ids_within(const dp_dataset *d, int vocab) {
    size_t k = d->n * d->dim;
    for (size_t i = 0; i < k; i++)
        if (!(d->x[i] >= -1.0f && d->x[i] < (float)vocab)) return 0;
    return 1;
}

/* the labels file dp_dataset_load_mnist_dir reads: DIR/SPLIT-labels-idx1-ubyte.gz, else without .gz */
static void idx_labels_path(const char *dir, int train, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s/%s-labels-idx1-ubyte.gz", dir, train ? "train" : "t10k");
    if (n > 3 && (size_t)n < cap && access(buf, F_OK) != 0) buf[n - 3] = 0;
}

int dp_cli_load_data_and_model(const dp_cli_data_spec *s, dp_dataset *tr, dp_dataset *te, int *K, dp_model **m) {
    dp_status st;
    dp_cli_model_opts dflt;
    const dp_cli_model_opts *o = s->mo;
    if (!o) {
        dp_cli_model_opts_init(&dflt, "train");
        o = &dflt;
    }
    dp_cli_data_info info_local, *info = s->info ? s->info : &info_local;
    memset(info, 0, sizeof *info);
    const int synthetic = !o->data_x && !o->data_ids && !strcmp(s->data, DP_CLI_SYNTHETIC);
    const int tokens = synthetic || o->data_ids;
    const int transformer = !strcmp(s->model_name, "transformer");
    const int onnx = dp_cli_is_onnx(s->model_name);
    info->tokens = tokens;
    info->data_id = o->data_ids ? o->data_ids : o->data_x ? o->data_x : s->data;
    dp_dataset hold;
    memset(&hold, 0, sizeof hold);
    int T = 0;
    /* The number of classes is a public input, never 1 + the largest label: the model's output
     * size is released with it (docs/privacy.md). dp_cli_model_check requires --classes for files. */
    const int classes = (int)(s->mo ? o->classes : s->classes);
    const int idx = !synthetic && !o->data_x && !o->data_ids;
    const int mse = s->mo && o->mse;
    int k = synthetic ? 2 : classes > 0 ? classes : idx ? DP_CLI_IDX_CLASSES : 0;
    if (k < 1 && !mse) {
        fprintf(stderr, "%s: %s: needs --classes K (the number of classes is not read off the private labels)\n",
                prog, o->data_x ? "--data-x" : "--data-ids");
        return 2;
    }
    char why[64]; /* where k came from, for the messages */
    if (synthetic) snprintf(why, sizeof why, "the classes of " DP_CLI_SYNTHETIC);
    else snprintf(why, sizeof why, "--classes %d%s", k, classes > 0 ? "" : ", the default for IDX data");
    long syn_n = o->synthetic_n ? o->synthetic_n : DP_CLI_SYN_N;
    long syn_test_n = o->synthetic_test_n ? o->synthetic_test_n : DP_CLI_SYN_TEST_N;
    uint64_t syn_seed = o->synthetic_seed >= 0 ? (uint64_t)o->synthetic_seed : DP_CLI_SYN_SEED;

    /* 1. the data (synthetic-text: after the model, which may fix the vocabulary) */
    if (synthetic) {
        T = o->seq_len_given ? o->tp.seq_len : DP_CLI_SYN_SEQ;
        snprintf(info->data_desc, sizeof info->data_desc, DP_CLI_SYNTHETIC " (seeds %llu/%llu)",
                 (unsigned long long)syn_seed, (unsigned long long)(syn_seed + 1000003));
    } else if (o->data_x || o->data_ids) {
        const char *flag = o->data_x ? "--data-x" : "--data-ids", *tflag = o->data_x ? "--test-x" : "--test-ids";
        const char *path = o->data_x ? o->data_x : o->data_ids, *tpath = o->data_x ? o->test_x : o->test_ids;
        st = o->data_x ? load_npy_x(path, o->data_labels, k, why, tr)
                       : dp_dataset_load_tokens(path, o->data_labels, (int)o->pad_id, tr);
        if (st == DP_OK && mse) k = tr->n_targets; /* the targets' width: a shape, public like D */
        if (st == DP_OK && o->data_ids && (st = check_labels(tr, k, o->data_labels, why)) == DP_OK) tr->n_classes = k;
        if (st != DP_OK) {
            fprintf(stderr, "%s: error: %s %s: %s\n", prog, flag, path, dp_cli_error());
            return 1;
        }
        if (tpath) {
            dp_dataset *t = te ? te : &hold;
            st = o->data_x ? load_npy_x(tpath, o->test_labels, mse ? 0 : k, why, t)
                           : dp_dataset_load_tokens(tpath, o->test_labels, (int)o->pad_id, t);
            if (st == DP_OK && mse && t->n_targets != k)
                st = dp_fail(DP_ERR_FORMAT, "%s: %d regression targets per row, but %s has %d", o->test_labels,
                             t->n_targets, o->data_labels, k);
            if (st == DP_OK && o->data_ids && (st = check_labels(t, k, o->test_labels, why)) == DP_OK) t->n_classes = k;
            if (st != DP_OK) {
                fprintf(stderr, "%s: error: %s %s: %s\n", prog, tflag, tpath, dp_cli_error());
                dp_dataset_free(&hold);
                return 1;
            }
            if (t->dim != tr->dim || t->c != tr->c || t->h != tr->h || t->w != tr->w) {
                fprintf(stderr, "%s: error: %s %s: examples of shape %dx%dx%d, but %s %s has %dx%dx%d\n", prog, tflag,
                        tpath, t->c, t->h, t->w, flag, path, tr->c, tr->h, tr->w);
                dp_dataset_free(&hold);
                return 1;
            }
            snprintf(info->data_desc, sizeof info->data_desc, "%s, test %s", path, tpath);
        } else {
            double frac = isnan(o->holdout) ? DP_CLI_HOLDOUT : o->holdout;
            int bad = holdout_split(tr, frac, flag, te ? te : &hold);
            if (bad) return bad;
            info->holdout = 1;
            snprintf(info->data_desc, sizeof info->data_desc, "%s, %g%% held out as the test split", path, 100 * frac);
        }
        dp_dataset_free(&hold);
        if (o->data_ids) {
            T = tr->w;
            if (o->seq_len_given && o->tp.seq_len != T) {
                fprintf(stderr, "%s: --seq-len %d: the data has sequences of %d tokens (%s %s)\n", prog, o->tp.seq_len, T,
                        flag, path);
                return 2;
            }
        }
    } else {
        if ((st = dp_dataset_load_mnist_dir(s->data, 1, tr)) != DP_OK ||
            (te && (st = dp_dataset_load_mnist_dir(s->data, 0, te)) != DP_OK))
            return dp_cli_fail(st);
        if (te && (te->c != tr->c || te->h != tr->h || te->w != tr->w)) {
            fprintf(stderr, "%s: error: --data %s: the test images (t10k-images) are %dx%d, the training images "
                    "(train-images) %dx%d; both splits must have one size\n", prog, s->data, te->h, te->w, tr->h, tr->w);
            return 1;
        }
        /* a label byte is 0..255 whatever the class count: refuse those at or above it */
        for (int split = 1; split >= 0; split--) {
            dp_dataset *d = split ? tr : te;
            if (!d) continue;
            char lpath[4200];
            idx_labels_path(s->data, split, lpath, sizeof lpath);
            if ((st = check_labels(d, k, lpath, why)) != DP_OK) return dp_cli_fail(st);
            d->n_classes = k;
        }
        snprintf(info->data_desc, sizeof info->data_desc, "%s", s->data);
    }
    if (!synthetic) {
        limit_dataset(tr, s->train_limit);
        if (te) limit_dataset(te, s->test_limit);
        char trname[600], tename[600]; /* the files, so that a message names them */
        snprintf(trname, sizeof trname, "training set (%s)", info->data_desc);
        snprintf(tename, sizeof tename, "test set (%s)", info->data_desc);
        if ((st = dp_dataset_validate(tr, trname, 2, k)) != DP_OK ||
            (te && (st = dp_dataset_validate(te, tename, 1, k)) != DP_OK))
            return dp_cli_fail(st);
    }
    *K = k;
    if (!tokens) {
        const double *norm = s->mo ? NULL : s->norm;
        static const double fmnist[2] = {DP_CLI_FMNIST_MEAN, DP_CLI_FMNIST_STD};
        if (s->mo) norm = o->norm_mode == 1 ? o->norm : o->norm_mode == 2 || o->data_x ? NULL : fmnist;
        if (norm) {
            dp_dataset_normalize(tr, norm[0], norm[1]);
            if (te) dp_dataset_normalize(te, norm[0], norm[1]);
        }
        if (s->scatter_j > 0 && mse) {
            fprintf(stderr, "%s: --loss mse: the scattering features (--recipe scatternet) are for classification\n", prog);
            return 2;
        }
        if (s->scatter_j > 0) {
            /* a fixed public transform: no privacy cost, but its output on private data is
             * private data, kept in memory only */
            const double t0 = omp_get_wtime();
            dp_dataset f1, f2;
            memset(&f1, 0, sizeof f1);
            memset(&f2, 0, sizeof f2);
            if ((st = dp_scatter_dataset(tr, s->scatter_j, s->scatter_l, &f1)) != DP_OK ||
                (te && (st = dp_scatter_dataset(te, s->scatter_j, s->scatter_l, &f2)) != DP_OK)) {
                dp_dataset_free(&f1);
                fprintf(stderr, "%s: scattering transform of %s: %s\n", prog, info->data_desc, dp_cli_error());
                return 2;
            }
            dp_dataset_free(tr);
            *tr = f1;
            if (te) {
                dp_dataset_free(te);
                *te = f2;
            }
            snprintf(info->features, sizeof info->features, "scattering transform J %d, %d angles: %dx%dx%d, %.1f s",
                     s->scatter_j, s->scatter_l, tr->c, tr->h, tr->w, omp_get_wtime() - t0);
        }
    }

    /* 2. the model */
    int vocab = 0;
    if (transformer) {
        dp_transformer_params tp = o->tp;
        tp.seq_len = T;
        tp.n_classes = k;
        /* never 1 + the largest id: the embedding's rows are released (dp_cli_model_check requires --vocab) */
        if (o->vocab_given) tp.vocab = o->tp.vocab;
        else if (synthetic) tp.vocab = DP_CLI_SYN_VOCAB;
        else {
            fprintf(stderr, "%s: --data-ids: --model transformer needs --vocab V (the vocabulary is not read off the "
                            "private ids)\n",
                    prog);
            return 2;
        }
        if ((st = dp_model_create_transformer(&tp, m)) != DP_OK) {
            fprintf(stderr, "%s: --model transformer: %s\n", prog,
                    dp_cli_map_params(dp_last_error(), DP_CLI_MAP_RUN | DP_CLI_MAP_MODEL));
            return 2;
        }
        int ffn = tp.ffn > 0 ? tp.ffn : 4 * tp.width;
        char extra[96] = "";
        if (tp.dropout > 0) snprintf(extra, sizeof extra, ", dropout %g", (double)tp.dropout);
        if (tp.train_last >= 0)
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", training the last %d block%s", tp.train_last,
                     tp.train_last == 1 ? "" : "s");
        snprintf(info->model_desc, sizeof info->model_desc,
                 "transformer (%d layers, width %d, %d heads, ffn %d, %s, %s, pool %s, vocab %d, seq %d%s)", tp.layers,
                 tp.width, tp.heads, ffn, tp.pre_norm ? "pre-norm" : "post-norm", tp.gelu ? "gelu" : "relu",
                 tp.pool == DP_POOL_FIRST ? "first" : "mean", tp.vocab, tp.seq_len, extra);
    } else {
        int c = synthetic ? 1 : tr->c, h = synthetic ? 1 : tr->h, w = synthetic ? T : tr->w;
        if (onnx) {
            if ((st = dp_model_load_onnx(s->model_name, m)) != DP_OK) {
                fprintf(stderr, "%s: --model %s\n", prog, dp_cli_error());
                return 2;
            }
            if (dp_model_input_size(*m) != (size_t)c * h * w) {
                fprintf(stderr, "%s: --model %s: the graph takes %zu values per example, the data has %zu (%s)\n", prog,
                        s->model_name, dp_model_input_size(*m), (size_t)c * h * w, info->data_id);
                return 2;
            }
        } else if ((st = dp_model_create_named(s->model_name, c, h, w, k, m)) != DP_OK) {
            fprintf(stderr, "%s: --model %s: %s\n", prog, s->model_name, dp_cli_error());
            return 2;
        }
        snprintf(info->model_desc, sizeof info->model_desc, "%s", s->model_name);
        if (dp_model_input_is_tokens(*m) && !tokens) {
            fprintf(stderr, "%s: --model: the model starts with an embedding and takes token ids, but %s holds "
                            "real-valued data (use --data " DP_CLI_SYNTHETIC " or --data-ids)\n",
                    prog, info->data_id);
            return 2;
        }
        if (!dp_model_input_is_tokens(*m) && tokens) {
            fprintf(stderr, "%s: --model %s: takes real-valued inputs, but the data is token ids (use --model "
                            "transformer or a spec that starts with embedding(V,D))\n",
                    prog, s->model_name);
            return 2;
        }
        if (tokens && o->vocab_given && o->tp.vocab != dp_model_vocab(*m)) {
            fprintf(stderr, "%s: --vocab %d: the model's embedding has a vocabulary of %d\n", prog, o->tp.vocab,
                    dp_model_vocab(*m));
            return 2;
        }
    }
    if (dp_model_output_size(*m) != k && mse) {
        fprintf(stderr, "%s: --model: the model outputs %d values but --data-labels %s has %d regression targets per "
                "row (--loss mse)\n", prog, dp_model_output_size(*m), o->data_labels, k);
        return 2;
    }
    if (dp_model_output_size(*m) != k) {
        fprintf(stderr, "%s: --model: the model outputs %d values but the data has %d classes (%s)\n", prog,
                dp_model_output_size(*m), k, why);
        return 2;
    }

    /* 3. token data: generate (synthetic) and validate against the model's vocabulary */
    if (tokens) {
        vocab = dp_model_vocab(*m);
        info->vocab = vocab;
        info->seq_len = T;
        if (synthetic) {
            int sv = o->vocab_given ? o->tp.vocab : transformer ? DP_CLI_SYN_VOCAB : vocab;
            if ((st = dp_text_synthetic((size_t)syn_n, T, sv, syn_seed, tr)) != DP_OK ||
                (te && (st = dp_text_synthetic((size_t)syn_test_n, T, sv, syn_seed + 1000003, te)) != DP_OK)) {
                fprintf(stderr, "%s: --data " DP_CLI_SYNTHETIC ": %s\n", prog, dp_cli_error());
                return 2;
            }
            limit_dataset(tr, s->train_limit);
            if (te) limit_dataset(te, s->test_limit);
            if ((st = dp_dataset_validate(tr, "training set", 2, k)) != DP_OK) return dp_cli_fail(st);
        } else {
            /* Ids at or above the vocabulary, refused naming the file and where V came from but not
             * the id or its row (as label_outside); dp_dataset_validate_tokens then finds none. */
            char vwhy[64];
            if (o->vocab_given) snprintf(vwhy, sizeof vwhy, "--vocab %d", vocab);
            else snprintf(vwhy, sizeof vwhy, "the vocabulary of the model's embedding(%d,D)", vocab);
            for (int split = 0; split < 2; split++) {
                const dp_dataset *d = split ? te : tr;
                int test_file = split && o->test_ids;
                if (d && !ids_within(d, vocab)) {
                    fprintf(stderr, "%s: error: %s %s: a token id is outside 0..%d (%s); ids must lie in 0..V-1 for "
                                    "--vocab V (negative ids, and --pad-id, are padding)\n",
                            prog, test_file ? "--test-ids" : "--data-ids", test_file ? o->test_ids : o->data_ids,
                            vocab - 1, vwhy);
                    return 1;
                }
            }
        }
        char what[600];
        snprintf(what, sizeof what, "%s%s (vocabulary %d%s)", synthetic ? "--data " : "--data-ids ",
                 synthetic ? DP_CLI_SYNTHETIC : o->data_ids, vocab, o->vocab_given ? ", --vocab" : "");
        if ((st = dp_dataset_validate_tokens(tr, what, vocab)) != DP_OK) return dp_cli_fail(st);
        if (te) {
            snprintf(what, sizeof what, "%s%s (vocabulary %d%s)", synthetic ? "--data " : o->test_ids ? "--test-ids " : "held-out rows of ",
                     synthetic ? DP_CLI_SYNTHETIC " test split" : o->test_ids ? o->test_ids : o->data_ids, vocab,
                     o->vocab_given ? ", --vocab" : "");
            if ((st = dp_dataset_validate_tokens(te, what, vocab)) != DP_OK) return dp_cli_fail(st);
        }
    }

    /* 4. freezing and initialisation */
    for (int f = 0; f < o->nfreeze; f++) {
        const char *name = o->freeze[f];
        if (strspn(name, "0123456789") == strlen(name)) st = dp_model_set_frozen(*m, atoi(name), 1);
        else st = dp_model_set_frozen_prefix(*m, name, 1, NULL);
        if (st != DP_OK) {
            fprintf(stderr, "%s: --freeze %s: %s\n", prog, name, dp_cli_error());
            return 2;
        }
    }
    if (!onnx) { /* an imported model starts from its file's weights */
        dp_rng init;
        dp_rng_seed(&init, s->seed ^ 0x1badc0ffeeULL);
        dp_model_init(*m, &init);
    }
    return 0;
}

int dp_cli_is_onnx(const char *model_name) {
    size_t n = strlen(model_name);
    return n > 5 && !strcmp(model_name + n - 5, ".onnx");
}
