/* tools/cli.h: what the dpsgd command's files share. Each command lives in its own file
 * (tools/cmd_<name>.c) and exports `int dp_cmd_<name>(int argc, char **argv)` (argv without
 * the program and command names), returning the exit status: 0 success, 1 failure at run
 * time, 2 bad usage. Commands are listed in tools/dpsgd.c. */
#ifndef DP_CLI_H
#define DP_CLI_H
#include <math.h>

#include "dpsgd.h"

extern const char *dp_cli_prog; /* "dpsgd" */

/* "dpsgd: <what>" on stderr; returns 2 (bad usage) */
int dp_cli_die(const char *what);
/* "dpsgd: error: <dp_last_error()>" on stderr; returns 1 */
int dp_cli_fail(dp_status st);
/* parse a flag's value; on failure print "<flag> <value>: <reason>" and return 0 */
int dp_cli_parse_double(const char *flag, const char *v, double *out);
int dp_cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out);
/* write text to path atomically (temp file in the same directory, fsync, rename); on failure
 * print a message naming `flag` and path, leave nothing behind, return 0 */
int dp_cli_write_atomic(const char *flag, const char *path, const char *text);

/* ---- what `dpsgd train` and `dpsgd audit` share ---- */

#define DP_CLI_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
/* Published Fashion-MNIST pixel statistics (public constants, so normalising spends no
 * privacy budget on the training data). */
#define DP_CLI_FMNIST_MEAN 0.2860
#define DP_CLI_FMNIST_STD 0.3530

/* For a flag that takes a value: with v, step *i over it and return 1; without, print
 * "<flag> needs a value (see dpsgd <cmd> --help)" and return 0 (exit status 2). */
int dp_cli_need_value(const char *cmd, const char *a, const char *v, int *i);
/* the same inside a command's flag loop (variables a, v, i), returning 2 from the command */
#define DP_CLI_NEED_VALUE(CMD)                                                                                         \
    do {                                                                                                               \
        if (!dp_cli_need_value((CMD), a, v, &i)) return 2;                                                             \
    } while (0)

/* The training flags both commands take, and where dp_cli_train_flag puts them. The command
 * points the privacy and training fields at its own parameter struct before parsing. */
typedef struct {
    const char *cmd;               /* "train", "audit": for "see dpsgd <cmd> --help" */
    const char *data, *model_name; /* --data, --model */
    long train_limit, threads;     /* --train-limit, --threads */
    int seed_given;                /* --seed was given */
    double lr, momentum;           /* --lr, --momentum; NAN where not given */
    dp_clip_mode *clipping;        /* --clipping */
    double *max_grad_norm, *target_epsilon, *delta, *noise_multiplier;
    int *epochs, *expected_batch, *physical_batch; /* --epochs, --batch-size, --physical-batch */
    uint64_t *seed;                /* --seed */
} dp_cli_train_opts;

/* An initialiser for a dp_cli_train_opts: the defaults (data DP_CLI_DEFAULT_DATA, model cnn)
 * and the fields of the same names in *P, a dp_train_params or a dp_audit_params. */
#define DP_CLI_TRAIN_OPTS(CMD, P)                                                                                      \
    {.cmd = (CMD), .data = DP_CLI_DEFAULT_DATA, .model_name = "cnn", .lr = NAN, .momentum = NAN,                       \
     .clipping = &(P)->clipping, .max_grad_norm = &(P)->max_grad_norm, .target_epsilon = &(P)->target_epsilon,         \
     .delta = &(P)->delta, .noise_multiplier = &(P)->noise_multiplier, .epochs = &(P)->epochs,                         \
     .expected_batch = &(P)->expected_batch, .physical_batch = &(P)->physical_batch, .seed = &(P)->seed}

/* One argument a (v: the next one, or NULL) of the flags above: returns 1 when handled (*i
 * stepped over a value), 0 when a is not one of them, -1 on bad usage (message printed; exit
 * status 2). */
int dp_cli_train_flag(dp_cli_train_opts *o, const char *a, const char *v, int *i);

/* What dp_cli_load_data_and_model loads and builds. */
typedef struct {
    const char *data, *model_name;
    long train_limit, test_limit; /* keep only the first N rows; 0: all */
    const double *norm;           /* {mean, std} to standardise the pixels with; NULL: none */
    const long *freeze;           /* layers to freeze (nfreeze of them) */
    int nfreeze;
    uint64_t seed;                /* initialisation: dp_rng seeded with seed ^ 0x1badc0ffee */
} dp_cli_data_spec;

/* Loads the IDX training set (and the test set into te when te != NULL) from s->data, keeps
 * the first rows, validates them (at least 2 training and 1 test rows, labels below K, the
 * larger class count), normalises, then creates s->model_name for that input and K classes,
 * freezes layers and initialises it. Returns 0, or the exit status with the error printed
 * (1: the data, 2: --model or --freeze); the caller frees tr, te and *m either way. */
int dp_cli_load_data_and_model(const dp_cli_data_spec *s, dp_dataset *tr, dp_dataset *te, int *K, dp_model **m);

int dp_cmd_train(int argc, char **argv);
void dp_cmd_train_usage(FILE *f);
#endif
