/* tools/cli.h: what the dpsgd command's files share. Each command lives in its own file
 * (tools/cmd_<name>.c) and exports `int dp_cmd_<name>(int argc, char **argv)` (argv without
 * the program and command names), returning the exit status: 0 success, 1 failure at run
 * time, 2 bad usage. Commands are listed in tools/dpsgd.c. */
#ifndef DP_CLI_H
#define DP_CLI_H
#include <math.h>
#include <stdio.h>

#include "dpsgd.h"

extern const char *dp_cli_prog; /* "dpsgd" */

/* "dpsgd: <what>" on stderr; returns 2 (bad usage) */
int dp_cli_die(const char *what);
/* An argument the command does not know: "unknown option 'X' (see dpsgd CMD --help)", or, when
 * it is the value cut from "--switch=value" for a switch that takes none, "--switch=value:
 * --switch takes no value". Returns 2 (usage). */
int dp_cli_unknown(const char *cmd, const char *arg);
/* dpsgd.c: the flag "--name" when arg is the value cut from "--name=value", else NULL */
const char *dp_cli_split_flag(const char *arg);
/* "dpsgd: error: <dp_cli_error()>" on stderr; returns 1 */
int dp_cli_fail(dp_status st);
/* --model FILE.onnx: an imported model (dp_model_load_onnx) rather than a spec or a name */
int dp_cli_is_onnx(const char *model_name);

/* The library names parameters as their struct fields, the CLI as its flags: msg with every
 * field of the table in tools/cli.c (rows of `scope`) that stands as a whole word replaced by
 * its flag ("max_grad_norm 0: ..." -> "--max-grad-norm 0: ..."). Returns a static buffer,
 * valid until the next call. dp_cli_error: dp_last_error() so, for a run's parameters;
 * DP_CLI_MAP_MODEL adds the transformer's (for messages from building the model). */
enum { DP_CLI_MAP_RUN = 1, DP_CLI_MAP_MODEL = 2 };
const char *dp_cli_map_params(const char *msg, unsigned scope);
const char *dp_cli_error(void);
/* parse a flag's value; on failure print "<flag> <value>: <reason>" and return 0 */
int dp_cli_parse_double(const char *flag, const char *v, double *out);
/* SIZE: bytes with an optional unit (K/KiB, M/MiB, G/GiB, T/TiB are powers of 1024; KB, MB,
 * GB, TB powers of 1000); "none" or 0 give 0. 0 with a message naming cmd and flag if bad. */
int dp_cli_parse_size(const char *cmd, const char *flag, const char *v, size_t *out);
int dp_cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out);
/* write text to path atomically (temp file in the same directory, fsync, rename); on failure
 * print a message naming `flag` and path, leave nothing behind, return 0 */
int dp_cli_write_atomic(const char *flag, const char *path, const char *text);

/* An output a command will write: its flag and path (NULL: not given); `inside` NULL for a file,
 * else the path is a directory (created here if missing, as the command would) that the command
 * writes the file `inside` in (--checkpoint-dir and "checkpoint.safetensors"). */
typedef struct {
    const char *flag, *path, *inside;
} dp_cli_output;
/* Checks the outputs before any work, so that a run never ends unable to write its result:
 * each can be created (its directory exists and takes a new file: one is created with O_EXCL
 * and removed; a file output is not a directory; a directory output is a directory, created
 * when missing), and no two name the same file, however spelled (the real path of the
 * directory plus the name). Returns 0, or the exit status with a message naming the flag and
 * path printed: 1 an output that cannot be written, 2 two flags naming one file. */
int dp_cli_check_outputs(const dp_cli_output *o, int n);

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
    int data_given;                /* --data was given */
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

/* ---- data and model flags beyond --data and --model (train and norms) ----
 * Data sources: an IDX directory (--data DIR, the default), the built-in synthetic text task
 * (--data synthetic-text), float features in .npy (--data-x), or token ids in .npy
 * (--data-ids); the last two with --data-labels and optional --test-x/--test-ids and
 * --test-labels (without test files a random 10% of the rows is held out, --holdout) and
 * --classes K (and --vocab V for the transformer on --data-ids).
 * Models: the built-in names, spec strings, and "transformer" (dp_model_create_transformer,
 * configured by the --layers ... flags). */
#define DP_CLI_SYNTHETIC "synthetic-text"
#define DP_CLI_SYN_N 20000       /* --synthetic-n */
#define DP_CLI_SYN_TEST_N 2000   /* --synthetic-test-n */
#define DP_CLI_SYN_SEQ 32        /* --seq-len for synthetic-text */
#define DP_CLI_SYN_VOCAB 100     /* --vocab for synthetic-text */
#define DP_CLI_SYN_SEED 1        /* --synthetic-seed: the train split; the test split uses seed + 1000003 */
#define DP_CLI_HOLDOUT 0.1       /* --holdout */
#define DP_CLI_IDX_CLASSES 10    /* --classes for IDX data: the (Fashion-)MNIST format's 10 classes */
#define DP_CLI_MAX_CLASSES (1 << 24) /* --classes: the largest linear(OUT) a spec allows */
#define DP_CLI_HOLDOUT_SEED 0x401d0075ULL /* the held-out rows do not depend on --seed */
#define DP_CLI_MAX_FREEZE 64

/* bits of dp_cli_model_opts.given: the transformer flags that were given */
enum {
    DP_CLI_G_LAYERS = 1 << 0, DP_CLI_G_WIDTH = 1 << 1, DP_CLI_G_HEADS = 1 << 2, DP_CLI_G_FFN = 1 << 3,
    DP_CLI_G_PRENORM = 1 << 4, DP_CLI_G_ACT = 1 << 5, DP_CLI_G_POOL = 1 << 6, DP_CLI_G_DROPOUT = 1 << 7,
    DP_CLI_G_TRAINLAST = 1 << 8
};

typedef struct {
    const char *cmd;                     /* for "see dpsgd <cmd> --help" */
    /* data */
    const char *data_x, *data_ids, *data_labels, *test_x, *test_ids, *test_labels;
    long pad_id;                         /* --pad-id; -1: none */
    long synthetic_n, synthetic_test_n;  /* 0: default */
    long synthetic_seed;                 /* -1: default */
    double holdout;                      /* NAN: default */
    int norm_mode;                       /* --normalize: 0 not given, 1 MEAN,STD, 2 none */
    long classes;                        /* --classes; 0: not given */
    int mse;                             /* --loss mse: float regression targets, mean squared error */
    double norm[2];
    /* transformer (--model transformer); seq_len 0 = from the data's shape; vocab 0 = not given
     * (synthetic-text: DP_CLI_SYN_VOCAB; --data-ids needs --vocab) */
    dp_transformer_params tp;
    unsigned given;                      /* DP_CLI_G_* */
    int seq_len_given, vocab_given;
    /* --freeze: layer indices or module-name prefixes */
    const char *freeze[DP_CLI_MAX_FREEZE];
    int nfreeze;
} dp_cli_model_opts;

/* Defaults (nothing given). */
void dp_cli_model_opts_init(dp_cli_model_opts *o, const char *cmd);
/* One argument of the flags above (same contract as dp_cli_train_flag). */
int dp_cli_model_flag(dp_cli_model_opts *o, const char *a, const char *v, int *i);
/* The help text of these flags (for `train --help` and `norms --help`). */
void dp_cli_model_usage(FILE *f);
/* Checks that need all flags (which flags go with which data and model): 1 fine, 0 message
 * printed (exit status 2). data_given: --data was given explicitly; *data may be set to
 * DP_CLI_SYNTHETIC (a token model without any data flag). */
int dp_cli_model_check(const dp_cli_model_opts *o, const char *model_name, const char **data, int data_given);

/* What the loader found, for the commands' summary lines. */
typedef struct {
    int tokens;                /* the data are token ids */
    int seq_len, vocab;        /* token data: T and the model's vocabulary */
    char data_desc[512];       /* "synthetic-text (seeds 1/1000004)", the files, the directory */
    char model_desc[256];      /* "transformer (2 layers, width 64, ...)" or the name/spec */
    const char *data_id;       /* identity of the training data for checkpoints */
    int holdout;               /* the test split was held out of the training file */
    char features[160];        /* the feature transform applied, if any ("" none) */
} dp_cli_data_info;

/* What dp_cli_load_data_and_model loads and builds. */
typedef struct {
    const char *data, *model_name;
    long train_limit, test_limit; /* keep only the first N rows; 0: all */
    const double *norm;           /* {mean, std} to standardise the pixels with; NULL: none. Used
                                   * only without mo (with mo: mo's --normalize) */
    const dp_cli_model_opts *mo;  /* the flags above; NULL: IDX data, built-in names and specs */
    int classes;                  /* without mo: --classes for the IDX data; 0: DP_CLI_IDX_CLASSES */
    uint64_t seed;                /* initialisation: dp_rng seeded with seed ^ 0x1badc0ffee */
    dp_cli_data_info *info;       /* filled when not NULL */
    int scatter_j, scatter_l;     /* > 0: images go through the scattering transform (after the
                                   * normalisation), and the model is built for its features */
} dp_cli_data_spec;

/* Loads the training set (and the test set into te when te != NULL) from the data flags,
 * keeps the first rows, validates them (at least 2 training and 1 test rows, labels below K;
 * token ids against the model's vocabulary), normalises images, then creates the model for
 * that input and K classes, freezes layers and initialises it. K and the vocabulary are public
 * inputs, never read off the data: K is --classes (required for .npy files), 2 for
 * synthetic-text, DP_CLI_IDX_CLASSES for IDX data without --classes; the transformer's
 * vocabulary is --vocab (required for --data-ids). A label or id outside them is refused with
 * a message that names the file and the flag but not the value or its row.
 * Returns 0, or the exit status with the error printed (1: the data, 2: a flag such as
 * --model, --freeze, --seq-len); the caller frees tr, te and *m either way. */
int dp_cli_load_data_and_model(const dp_cli_data_spec *s, dp_dataset *tr, dp_dataset *te, int *K, dp_model **m);

/* ---- recipes (tools/recipes.c): `dpsgd train --recipe NAME` ----
 * A published recipe as defaults for the model, the features and the hyperparameters; every
 * flag given on the command line overrides its field. */
typedef struct {
    const char *name, *summary;
    const char *model;         /* --model */
    int scatter_j, scatter_l;  /* > 0: the scattering transform's features (dpsgd/scatter.h) */
    int no_normalize;          /* 1: pixels as read ([0, 1]), as --normalize none */
    double lr, momentum, max_grad_norm;
    int expected_batch, epochs;
    double ema; /* --ema's default: 0 (none) */
    /* the epochs for a target epsilon <= 1 and <= 2 when --epochs is not given (0: epochs) */
    int epochs_eps1, epochs_eps2;
    /* > 0: --precondition's default, the noise multiplier of the release of the features' second
     * moments (dpsgd/precond.h), with precond_groups GroupNorm groups; 0: none */
    double precondition;
    int precond_groups;
    double lr_plain; /* > 0: the lr with --precondition 0 (the recipe's lr is the preconditioned one's) */
} dp_cli_recipe;
const dp_cli_recipe *dp_cli_recipe_find(const char *name);
/* --recipe NAME in argv, else the recipe of --model (transformer has its own), else cnn;
 * NULL (message printed) for an unknown name. */
const dp_cli_recipe *dp_cli_recipe_pick(int argc, char **argv);
void dp_cli_recipes_usage(FILE *f);

int dp_cmd_train(int argc, char **argv);
void dp_cmd_train_usage(FILE *f);
int dp_cmd_norms(int argc, char **argv);
#endif
