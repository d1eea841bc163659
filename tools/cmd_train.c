/* cmd_train.c: `dpsgd train`, DP-SGD training (by default the CNN on Fashion-MNIST). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dpsgd/precond.h"
#include "mpi_comm.h"
#ifdef DP_TEST_HOOKS
#include "core/testhooks.h"
#endif

#define prog dp_cli_prog

void dp_cmd_train_usage(FILE *f) {
    char modes[128] = "";
    for (int c = 0; c < DP_CLIP_COUNT; c++)
        snprintf(modes + strlen(modes), sizeof modes - strlen(modes), "%s%s", c ? " | " : "", dp_clip_mode_name((dp_clip_mode)c));
    fprintf(f,
"usage: dpsgd train [options]\n"
"\n"
"Trains a model with differentially private SGD: Poisson sampling, per-sample clipping to\n"
"norm C, Gaussian noise of std sigma*C, privacy accounting (PRV by default). The defaults\n"
"reproduce the published recipe for Fashion-MNIST (Tramer & Boneh 2021): the 26,010-parameter\n"
"tanh CNN, SGD lr 4 momentum 0.9, C 0.1, expected batch 2048, 40 epochs, sigma calibrated\n"
"for epsilon 3 at delta 1e-5.\n"
"\n"
"recipes (each sets the model, its features and the hyperparameters below; a flag given\n"
"on the command line overrides its value):\n"
"  --recipe NAME           [cnn; --model transformer brings the transformer recipe]\n");
    dp_cli_recipes_usage(f);
    fprintf(f,
"data:\n"
"  --data DIR              IDX files (train/t10k-images-idx3-ubyte[.gz], -labels-idx1-),\n"
"                          or " DP_CLI_SYNTHETIC " (below) [" DP_CLI_DEFAULT_DATA "]\n"
"  --normalize MEAN,STD    standardise pixels with these public constants, or 'none'\n"
"                          [0.2860,0.3530: published Fashion-MNIST statistics, for IDX data]\n"
"  --train-limit N         use only the first N training examples (quick runs) [all]\n"
"  --test-limit N          evaluate on the first N test examples [all]\n"
"model:\n"
"  --model NAME|SPEC       'cnn', 'mlp', 'transformer', a layer spec such as\n"
"                          \"conv2d(16,8,s2,p2) tanh maxpool(2,1) flatten linear(10)\" [cnn],\n"
"                          or FILE.onnx, a graph exported from PyTorch (docs/onnx.md)\n"
"                          (grammar and the transformer: docs/model-spec.md)\n"
"  --scatter-angles L      --recipe scatternet: the filter bank's angles, 1..16 (1 + 2L + 2L^2\n"
"                          channels of 7 x 7; give --model a GroupNorm that divides them) [8]\n"
"  --precondition Z        --recipe scatternet: train the linear classifier on the features\n"
"                          preconditioned by their second moments (channels and positions),\n"
"                          released with noise multiplier Z before training; epsilon covers\n"
"                          the release and sigma is raised to keep the target (docs/scatter.md).\n"
"                          The saved weights are the recipe model's. 0: off [scatternet 10]\n"
"  --freeze I|NAME         freeze layer I, or every layer named NAME or NAME.* (a module-name\n"
"                          prefix such as bert.embeddings) (repeatable)\n");
    dp_cli_model_usage(f);
    fprintf(f,
"privacy:\n"
"  --no-dp                 non-private baseline: no clipping, noise or accounting (so the\n"
"                          other flags of this group, and the noise flags, are refused with it)\n"
"  --clipping MODE         %s [%s]\n"
"  --max-grad-norm C       per-sample clipping norm [0.1]\n"
"  --mem-budget SIZE       auto: bytes a step may allocate (e.g. 2GiB); layers go back from\n"
"                          keeping to a second backward pass until the plan fits (a budget\n"
"                          no plan fits is refused, naming the --physical-batch that does)\n"
"                          [1.2 x the non-private step's buffers, parameters and gradients]\n"
"  --epsilon E             target epsilon; sigma is calibrated to it; one that no sigma\n"
"                          reaches is refused at once, with the reachable range [3]\n"
"  --delta D               target delta [1e-5]\n"
"  --accountant A          rdp | prv | pld: calibrates sigma and reports epsilon [prv]\n"
"  --noise-multiplier S    use this sigma instead of calibrating (epsilon is then reported)\n"
"  --clip-quantile Q       adaptive clipping (Andrew et al. 2021): C starts at --max-grad-norm\n"
"                          and moves each step toward the Q-quantile of the per-sample norms,\n"
"                          counted with Gaussian noise; the gradient's noise multiplier grows\n"
"                          so that gradient and count together spend what sigma alone did:\n"
"                          epsilon is unchanged [0: a fixed C]\n"
"  --clip-lr ETA           its geometric rate: C <- C exp(-ETA (fraction below C - Q)) [0.2]\n"
"  --clip-count-noise S    std of the noise on the count, in examples; 2S must exceed sigma\n"
"                          [batch size / 20]\n"
"training:\n"
"  --epochs N              [40]\n"
"  --batch-size B          expected (logical) batch size; sample rate q = B / n [2048]\n"
"  --physical-batch P      process each logical batch in chunks of at most P samples\n"
"                          (virtual batches: bounds memory, same result) [whole batch]\n"
"  --optimizer NAME        sgd | adam | adamw [sgd]\n"
"  --lr X                  learning rate [4]\n"
"  --momentum X            SGD momentum [0.9]\n"
"  --nesterov              SGD Nesterov momentum\n"
"  --weight-decay X        [0]\n"
"  --beta1 X, --beta2 X    Adam/AdamW moment decay [0.9, 0.999]\n"
"  --lr-schedule S         constant | cosine: lr (1 + cos(pi t / T)) / 2 at step t of T [constant]\n"
"  --ema DECAY             evaluate and keep an exponential moving average of the weights,\n"
"                          a <- d a + (1 - d) w after step t with d = min(DECAY, (1 + t) / (10 +\n"
"                          t)) (post-processing: free in privacy) [0: off; scatternet 0.99]\n"
"  --augmult K             augmentation multiplicity (De et al. 2022): each sampled example\n"
"                          becomes K random crops and flips of itself; its gradient is their\n"
"                          average, clipped as one, so epsilon is unchanged. Images only (not\n"
"                          tokens, flat vectors or --recipe scatternet's features); evaluation\n"
"                          is not augmented; --physical-batch then counts examples (K rows\n"
"                          each) [0: off; 1..64]\n"
"  --augment-pad P         the crop: a shift by up to P pixels each way, the pixels shifted in\n"
"                          set to 0 in the model's input space (after --normalize) [4]\n"
"  --no-flip               no horizontal flips (data whose mirror image is another class,\n"
"                          e.g. digits)\n"
"  --seed N                seed of what may be public: the initialisation (and the data\n"
"                          order of --no-dp runs) [0]\n"
"  --threads N             OpenMP threads [all cores]\n"
"noise (docs/privacy.md):\n"
"  By default the noise, the Poisson sampling and dropout come from the operating system's\n"
"  entropy (a ChaCha20 CSPRNG; noise hardened against floating-point attacks); nothing of it\n"
"  is ever written, so no two runs are alike and a resumed run continues with fresh noise.\n"
"  --noise-seed S          draw them from streams seeded by S instead: reproducible runs for\n"
"                          experiments and tests. The run's epsilon then holds ONLY while S\n"
"                          stays secret: whoever knows S can regenerate every noise vector\n"
"  --report-nonprivate     also print and write the training loss, the drawn batch sizes, the\n"
"                          non-finite sample count and accuracy on a split held out from the\n"
"                          private data, labelled: these are NOT covered by epsilon\n"
"checkpoints:\n"
"  --checkpoint-dir DIR    write DIR/checkpoint.safetensors at each epoch end (atomically); DIR\n"
"                          is locked for the run (DIR/.lock, with its pid): a second run on DIR\n"
"                          is refused\n"
"  --checkpoint-every N    ... and every N steps\n"
"  --resume DIR|FILE       continue a run from its checkpoint; epsilon carries on (with\n"
"                          --noise-seed bit-identical to an uninterrupted run on the same threads)\n"
"  --force                 resume although epochs, threads, optimizer settings or the data path\n"
"                          changed, or replace another run's checkpoint (never model, data,\n"
"                          sigma, q, C or delta)\n"
"weights:\n"
"  --init FILE             start from these weights (safetensors, PyTorch names, F32, finite)\n"
"  --save-weights FILE     write the trained weights (safetensors, atomically)\n"
"  --save-model FILE.onnx  with --model FILE.onnx: that graph with the trained weights\n"
"output:\n"
"  --out FILE              write a JSON summary (atomically)\n"
"  --quiet                 no progress, only the final line\n"
"  --verbose               print the clipping plan (per layer: norm method, how the clipped\n"
"                          sum is formed, bytes and FLOPs) before training\n"
"  -h, --help              this help\n"
"\n"
"Every output (--out, --save-weights, --checkpoint-dir) is checked before any work starts: its\n"
"directory must exist and take a new file, and no two may name the same file. Should a write\n"
"still fail at the end, the finished run is kept as ./dpsgd-weights-PID.safetensors and\n"
"./dpsgd-summary-PID.json (else in the checkpoint directory or $TMPDIR), and the paths and\n"
"epsilon are printed (exit status 1).\n"
"\n"
"Ctrl-C (SIGINT) or SIGTERM stops the run at the next step boundary, writes a checkpoint when\n"
"--checkpoint-dir is given and says how to continue (--resume DIR); exit status 130 (SIGINT) or\n"
"143 (SIGTERM). A second signal stops at once (the last checkpoint on disk stays whole).\n"
"\n"
"Data-parallel training: `mpirun -np N dpsgd train ...` (when built with MPI) runs N ranks that\n"
"each sample and clip their share of the data; the noise is drawn once per step; rank 0 alone\n"
"prints, writes --out, --save-weights and checkpoints (docs/distributed.md).\n"
"  --mpi-timeout S         a rank that does not reach a step's sum within S seconds of rank 0\n"
"                          (stopped, stalled, dead) ends the job, named; 0 waits forever [%g]\n",
            modes, dp_clip_mode_name(dp_train_default_params().clipping), DP_CLI_MPI_TIMEOUT_DEFAULT);
}

/* ---- progress ---- */

typedef struct {
    int tty, quiet;
    int nonprivate;   /* --report-nonprivate: the loss, labelled */
    int private_test; /* the test split is held out from the private data: its accuracy is not covered */
    int mse;          /* --loss mse: the test figure is the mean squared error, there is no accuracy */
    int adaptive;     /* --clip-quantile: each epoch line shows C */
} progress_state;

/* the test figure: accuracy in percent, or with --loss mse the mean squared error */
static void test_figure(char *buf, size_t cap, const progress_state *ps, double accuracy, double loss) {
    if (ps->mse) snprintf(buf, cap, "%.6g%s", loss, ps->private_test ? " (non-private)" : "");
    else snprintf(buf, cap, "%.2f%%%s", 100 * accuracy, ps->private_test ? " (non-private)" : "");
}

static void on_progress(void *user, const dp_train_progress *p) {
    progress_state *ps = user;
    if (ps->quiet) return;
    if (!p->epoch_end) {
        if (!ps->tty) return;
        int width = 30, fill = (int)((double)p->step_in_epoch / p->steps_per_epoch * width);
        fprintf(stderr, "\repoch %d/%d [", p->epoch, p->epochs);
        for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
        fprintf(stderr, "] step %d/%d %.0fs", p->step_in_epoch, p->steps_per_epoch, p->elapsed);
        fflush(stderr);
        return;
    }
    if (ps->tty) fprintf(stderr, "\r\033[K");
    char acc[48] = "-";
    if ((p->test_accuracy >= 0 || ps->mse) && (!ps->private_test || ps->nonprivate))
        test_figure(acc, sizeof acc, ps, p->test_accuracy, p->test_loss);
    printf("epoch %3d/%d  test %s %s  epsilon %.3f  elapsed %.1fs", p->epoch, p->epochs, ps->mse ? "mse" : "acc", acc,
           p->epsilon, p->elapsed);
    if (ps->adaptive) printf("  C %.4g", p->max_grad_norm); /* from the noisy counts: covered by epsilon */
    if (ps->nonprivate) printf("  | non-private: train loss %.4f", p->train_loss);
    printf("\n");
    fflush(stdout);
}

/* ---- SIGINT, SIGTERM: stop at the next step boundary (docs/reliability.md) ---- */

static volatile sig_atomic_t stop_signal; /* the first SIGINT or SIGTERM received; 0: none */

static void on_stop_signal(int sig) {
    if (stop_signal) { /* the second: at once (a checkpoint on disk stays whole: it is renamed into place) */
        static const char now[] = "dpsgd: second signal: stopping at once\n";
        ssize_t w = write(2, now, sizeof now - 1);
        (void)w;
        _exit(128 + sig);
    }
    stop_signal = sig;
    static const char later[] = "\ndpsgd: stopping after the current step (a second signal stops at once)\n";
    ssize_t w = write(2, later, sizeof later - 1);
    (void)w;
}

/* The run finished but FLAG's file could not be written: rather than lose the result (and the
 * privacy budget it spent), write it as dpsgd-KIND-PID.EXT in the working directory, else the
 * checkpoint directory, else $TMPDIR (or /tmp), and say where. m: the weights; else text. */
static void keep_elsewhere(const char *flag, const char *kind, const char *ext, dp_model *m, const char *text,
                           const char *ckdir) {
    const char *tmp = getenv("TMPDIR");
    const char *dirs[3] = {".", ckdir, tmp && *tmp ? tmp : "/tmp"};
    char path[4200];
    for (int d = 0; d < 3; d++) {
        if (!dirs[d]) continue;
        for (int k = 0; k < 100; k++) {
            char sfx[16] = "";
            if (k) snprintf(sfx, sizeof sfx, "-%d", k);
            snprintf(path, sizeof path, "%s/dpsgd-%s-%ld%s.%s", dirs[d], kind, (long)getpid(), sfx, ext);
            /* a new file only: never over another run's rescued result */
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0666), ok = 0;
            if (fd < 0 && errno == EEXIST) continue;
            if (fd < 0) break; /* this directory takes no file: the next one */
            if (m) {
                close(fd);
                ok = dp_model_save_safetensors(m, path) == DP_OK; /* renamed over the placeholder */
            } else {
                size_t len = strlen(text), off = 0;
                ssize_t wr = 1;
                while (off < len && (wr = write(fd, text + off, len - off)) > 0) off += (size_t)wr;
                ok = off == len && fsync(fd) == 0;
                if (close(fd) != 0) ok = 0;
            }
            if (ok) {
                fprintf(stderr, "%s: %s: the run finished; kept its %s in %s instead\n", prog, flag, kind, path);
                return;
            }
            unlink(path);
            break;
        }
    }
    fprintf(stderr, "%s: %s: could not keep the %s anywhere (tried the working directory%s and %s)\n", prog, flag, kind,
            ckdir ? ", --checkpoint-dir" : "", dirs[2]);
}

int dp_cmd_train(int argc, char **argv) {
    dp_train_params p = dp_train_default_params();
    dp_cli_train_opts o = DP_CLI_TRAIN_OPTS("train", &p);
    const char *out = NULL;
    const char *init_path = NULL, *save_weights = NULL, *save_model = NULL;
    long test_limit = 0;
    int quiet = 0, verbose = 0;
    dp_cli_model_opts mo;
    dp_cli_model_opts_init(&mo, "train");
    dp_optim_kind okind = DP_OPT_SGD;
    double wd = NAN, beta1 = NAN, beta2 = NAN;
    int nesterov = 0;
    const char *private_flag = NULL; /* the last flag given that only a private run uses */
    int scatter_l = 0; /* --scatter-angles: the filter bank's angles (0: the recipe's) */
    double precond_z = 0; /* --precondition: the release's noise multiplier (0: off) */
    int precond_given = 0;
    int epochs_given = 0;
    const char *augment_flag = NULL; /* --augment-pad or --no-flip, which need --augmult */
    /* the recipe first: its fields are defaults that the flags below override */
    const dp_cli_recipe *recipe = dp_cli_recipe_pick(argc, argv);
    if (!recipe) return 2;
    o.model_name = recipe->model;
    p.optim.lr = recipe->lr;
    p.optim.momentum = recipe->momentum;
    p.max_grad_norm = recipe->max_grad_norm;
    p.expected_batch = recipe->expected_batch;
    p.epochs = recipe->epochs;
    p.ema_decay = recipe->ema;
    precond_z = recipe->precondition;
    if (recipe->no_normalize) mo.norm_mode = 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        /* flags of the private step only: with --no-dp they contradict it (refused below) */
        static const char *const private_only[] = {"--epsilon",    "--noise-multiplier", "--max-grad-norm",
                                                   "--clipping",   "--delta",            "--accountant",
                                                   "--noise-seed", "--report-nonprivate", "--mem-budget",
                                                   "--clip-quantile", "--clip-lr", "--clip-count-noise"};
        for (size_t f = 0; f < sizeof private_only / sizeof private_only[0]; f++)
            if (!strcmp(a, private_only[f])) private_flag = private_only[f];
        if (!strcmp(a, "--epochs")) epochs_given = 1;
        int common = dp_cli_train_flag(&o, a, v, &i);
        if (common < 0) return 2;
        if (common) continue;
        if ((common = dp_cli_model_flag(&mo, a, v, &i)) < 0) return 2;
        if (common) continue;
#define NEED_VALUE DP_CLI_NEED_VALUE(o.cmd)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            dp_cmd_train_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--recipe")) {
            NEED_VALUE; /* taken above */
        } else if (!strcmp(a, "--test-limit")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, 1L << 40, &test_limit)) return 2;
        } else if (!strcmp(a, "--no-dp")) {
            p.no_dp = 1;
        } else if (!strcmp(a, "--accountant")) {
            NEED_VALUE;
            if (dp_accountant_kind_parse(v, &p.accountant) != DP_OK) return dp_cli_die(dp_cli_error());
            if (p.accountant == DP_ACCT_GDP) { /* neither calibrates nor is a run's epsilon: not a bound */
                char m[256];
                snprintf(m, sizeof m,
                         "--accountant gdp: a central-limit approximation that can underestimate epsilon, not a "
                         "bound; a run calibrates and reports with one of %s",
                         dp_accountant_kind_names(1));
                return dp_cli_die(m);
            }
        } else if (!strcmp(a, "--optimizer")) {
            NEED_VALUE;
            if (dp_optim_parse(v, &okind) != DP_OK) return dp_cli_die(dp_cli_error());
        } else if (!strcmp(a, "--weight-decay")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &wd)) return 2;
        } else if (!strcmp(a, "--beta1")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &beta1)) return 2;
        } else if (!strcmp(a, "--beta2")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &beta2)) return 2;
        } else if (!strcmp(a, "--nesterov")) {
            nesterov = 1;
        } else if (!strcmp(a, "--noise-seed")) {
            NEED_VALUE;
            long lv;
            if (!dp_cli_parse_long(a, v, 0, 1L << 62, &lv)) return 2;
            p.noise_seeded = 1;
            p.noise_seed = (uint64_t)lv;
        } else if (!strcmp(a, "--ema")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &p.ema_decay)) return 2;
            if (!(p.ema_decay >= 0 && p.ema_decay < 1)) return dp_cli_die("--ema: the decay must be in [0, 1)");
        } else if (!strcmp(a, "--precondition")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &precond_z)) return 2;
            if (!(precond_z >= 0) || !isfinite(precond_z))
                return dp_cli_die("--precondition: the noise multiplier must be a finite number >= 0 (0: off)");
            precond_given = 1;
        } else if (!strcmp(a, "--scatter-angles")) {
            NEED_VALUE;
            long lv;
            if (!dp_cli_parse_long(a, v, 1, 16, &lv)) return 2;
            scatter_l = (int)lv;
        } else if (!strcmp(a, "--lr-schedule")) {
            NEED_VALUE;
            if (!strcmp(v, "constant")) p.lr_schedule = DP_LR_CONSTANT;
            else if (!strcmp(v, "cosine")) p.lr_schedule = DP_LR_COSINE;
            else {
                fprintf(stderr, "%s: --lr-schedule %s: unknown (constant, cosine)\n", prog, v);
                return 2;
            }
        } else if (!strcmp(a, "--clip-quantile")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &p.clip_quantile)) return 2;
            if (!(p.clip_quantile > 0 && p.clip_quantile < 1))
                return dp_cli_die("--clip-quantile: the target quantile must be in (0, 1), e.g. 0.5");
        } else if (!strcmp(a, "--clip-lr")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &p.clip_lr)) return 2;
            if (!(p.clip_lr > 0 && p.clip_lr <= 100)) return dp_cli_die("--clip-lr: the rate must be in (0, 100]");
        } else if (!strcmp(a, "--clip-count-noise")) {
            NEED_VALUE;
            if (!dp_cli_parse_double(a, v, &p.clip_count_noise)) return 2;
            if (!(p.clip_count_noise > 0 && isfinite(p.clip_count_noise)))
                return dp_cli_die("--clip-count-noise: the standard deviation must be a positive number of examples");
        } else if (!strcmp(a, "--augmult")) {
            NEED_VALUE;
            long lv;
            if (!dp_cli_parse_long(a, v, 0, DP_CLIP_MAX_GROUP, &lv)) return 2;
            p.augmult = (int)lv;
        } else if (!strcmp(a, "--augment-pad")) {
            NEED_VALUE;
            long lv;
            if (!dp_cli_parse_long(a, v, 0, 1 << 20, &lv)) return 2;
            p.augment_pad = (int)lv;
            augment_flag = a;
        } else if (!strcmp(a, "--no-flip")) {
            p.augment_flip = 0;
            augment_flag = a;
        } else if (!strcmp(a, "--report-nonprivate")) {
            p.report_nonprivate = 1;
        } else if (!strcmp(a, "--secure")) {
            return dp_cli_die("--secure: secure noise is now the default (use --noise-seed S for reproducible, "
                              "seeded noise)");
        } else if (!strcmp(a, "--checkpoint-dir")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--checkpoint-dir: empty path");
            p.checkpoint_dir = v;
        } else if (!strcmp(a, "--checkpoint-every")) {
            NEED_VALUE;
            if (!dp_cli_parse_long(a, v, 1, 1L << 40, &p.checkpoint_every)) return 2;
        } else if (!strcmp(a, "--mpi-timeout")) {
            NEED_VALUE;
            double tmo;
            if (!dp_cli_parse_double(a, v, &tmo)) return 2;
            if (!(tmo >= 0 && tmo <= 1e7)) return dp_cli_die("--mpi-timeout: seconds from 0 (wait forever) to 1e7");
            dp_cli_mpi_set_timeout(tmo);
        } else if (!strcmp(a, "--resume")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--resume: empty path");
            p.resume = v;
        } else if (!strcmp(a, "--force")) {
            p.force = 1;
        } else if (!strcmp(a, "--init")) {
            NEED_VALUE;
            init_path = v;
        } else if (!strcmp(a, "--save-weights")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--save-weights: empty path");
            save_weights = v;
        } else if (!strcmp(a, "--save-model")) {
            NEED_VALUE;
            if (!*v) return dp_cli_die("--save-model: empty path");
            save_model = v;
        } else if (!strcmp(a, "--out")) {
            NEED_VALUE;
            out = v;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--verbose")) {
            verbose = 1;
        } else if (!strcmp(a, "--mem-budget")) {
            NEED_VALUE;
            if (!dp_cli_parse_size("train", a, v, &p.mem_budget)) return 2;
        } else {
            return dp_cli_unknown("train", a);
        }
#undef NEED_VALUE
    }
    if ((p.clip_lr > 0 || p.clip_count_noise > 0) && !(p.clip_quantile > 0))
        return dp_cli_die(p.clip_lr > 0 ? "--clip-lr: has no effect without --clip-quantile (adaptive clipping)"
                                        : "--clip-count-noise: has no effect without --clip-quantile (adaptive clipping)");
    if (p.noise_seeded && p.no_dp) return dp_cli_die("--noise-seed: has no meaning with --no-dp (there is no noise)");
    if (p.no_dp && private_flag) { /* silently ignored, it would leave the user believing in it */
        fprintf(stderr, "%s: %s: contradicts --no-dp (a non-private run has no clipping, noise or privacy "
                        "accounting); give one or the other\n", prog, private_flag);
        return 2;
    }
    if (p.checkpoint_every && !p.checkpoint_dir) return dp_cli_die("--checkpoint-every: needs --checkpoint-dir");
    if (augment_flag && !p.augmult) {
        fprintf(stderr, "%s: %s: needs --augmult K (it sets how the augmented copies are made)\n", prog, augment_flag);
        return 2;
    }
    /* a recipe's epochs for a smaller budget (docs/results.md), unless --epochs was given: fewer,
     * less noisy steps suit it */
    if (!epochs_given && !p.no_dp && p.noise_multiplier <= 0 && recipe->epochs_eps2 && p.target_epsilon <= 2)
        p.epochs = p.target_epsilon <= 1 && recipe->epochs_eps1 ? recipe->epochs_eps1 : recipe->epochs_eps2;
    if (scatter_l && !(recipe->scatter_j > 0)) {
        fprintf(stderr, "%s: --scatter-angles: only with a recipe that uses the scattering transform (--recipe "
                        "scatternet)\n", prog);
        return 2;
    }
    if (precond_z > 0) { /* what a preconditioned run cannot do yet, said before any work */
        const char *why = NULL;
        if (!(recipe->precond_groups > 0))
            why = "only with a recipe whose features it was made for (--recipe scatternet)";
        else if (strcmp(o.model_name, recipe->model))
            why = "only with the recipe's own model (the classifier it trains is folded back into it)";
        else if (p.checkpoint_dir || p.resume)
            why = "a preconditioned run cannot be checkpointed or resumed yet (the transform is not in the checkpoint)";
        else if (init_path)
            why = "not with --init (the classifier starts on the preconditioned features)";
        else if (mo.nfreeze)
            why = "not with --freeze (the preconditioned run trains the classifier alone)";
        else if (scatter_l)
            why = "not with --scatter-angles (made for the recipe's 81 channels and their groups)";
        if (why) {
            fprintf(stderr, "%s: --precondition %g%s: %s; --precondition 0 turns it off\n", prog, precond_z,
                    precond_given ? "" : " (the recipe's)", why);
            return 2;
        }
    }
    if (p.augmult && recipe->scatter_j > 0) {
        fprintf(stderr, "%s: --augmult: not with --recipe %s (its features are the scattering transform's, cached "
                        "once, not images to crop and flip)\n", prog, recipe->name);
        return 2;
    }
    if (init_path && p.resume)
        return dp_cli_die("--init: cannot be combined with --resume (the checkpoint holds the weights)");
    /* optimizer: defaults of the recipe for SGD, PyTorch's for Adam/AdamW, then the flags */
    /* the recipe's step size is the preconditioned features'; without them, its own */
    if (recipe->lr_plain > 0 && precond_z == 0) p.optim.lr = recipe->lr_plain;
    if (okind != DP_OPT_SGD) p.optim = dp_optim_default_params(okind);
    if (!isnan(o.lr)) p.optim.lr = o.lr;
    if (!isnan(o.momentum)) p.optim.momentum = o.momentum;
    if (!isnan(wd)) p.optim.weight_decay = wd;
    if (!isnan(beta1)) p.optim.beta1 = beta1;
    if (!isnan(beta2)) p.optim.beta2 = beta2;
    p.optim.nesterov = nesterov;
    /* the optimizer's ranges (--lr, --momentum, --nesterov, --weight-decay, --beta1/2) are usage
     * errors: said now, by the same checks dp_train makes, rather than after loading the data */
    dp_optim *optim_probe = NULL;
    if (dp_optim_create(&p.optim, 1, &optim_probe) != DP_OK) return dp_cli_die(dp_cli_error());
    dp_optim_destroy(optim_probe);
    if (o.threads > 0) omp_set_num_threads((int)o.threads);
    p.threads = (int)o.threads;
    if (!dp_cli_model_check(&mo, o.model_name, &o.data, o.data_given)) return 2;
    if (save_model && !dp_cli_is_onnx(o.model_name))
        return dp_cli_die("--save-model: only with --model FILE.onnx (it writes that graph with the trained weights)");
    const dp_cli_output outs[] = {{"--out", out, NULL},
                                  {"--save-weights", save_weights, NULL},
                                  {"--save-model", save_model, NULL},
                                  {"--checkpoint-dir", p.checkpoint_dir, DP_CHECKPOINT_FILE}};
    int bad_out = dp_cli_check_outputs(outs, 4); /* before any work: never train, then fail to write */
    if (bad_out) return bad_out;

#ifdef DP_TEST_HOOKS
    /* the test build only (dpsgd-testhooks, never installed): switches that void the
     * privacy guarantee, for tests/mpi_test.sh and tests/kill_resume_test.sh */
    dp__train_test hooks = {0, 0, NULL};
    const char *tn = getenv("DPSGD_TEST_NOISE");
    if (tn && !strcmp(tn, "off")) hooks.noise = 1;
    else if (tn && !strcmp(tn, "only")) hooks.noise = 2;
    const char *tsh = getenv("DPSGD_TEST_SHARDS");
    if (tsh && *tsh) hooks.shards = atoi(tsh);
    hooks.dump_released = getenv("DPSGD_TEST_DUMP_RELEASED");
    const char *tsc = getenv("DPSGD_TEST_SLOW_CHECKPOINT");
    if (tsc && *tsc) dp__test_slow_write_ms = strtol(tsc, NULL, 10);
    const int rank_weights = getenv("DPSGD_TEST_RANK_WEIGHTS") != NULL;
#else
    const int rank_weights = 0;
#endif
    dp_train_comm comm = {0, 1, NULL, NULL, NULL};
    int mpi = dp_cli_mpi_init(&comm);
    if (!mpi) {
        const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
        if (ws && atoi(ws) > 1)
            return dp_cli_die("launched by mpirun with several processes, but this dpsgd was built without MPI "
                              "(rebuild with Open MPI installed, -DDP_MPI=ON)");
    }
    if (mpi) p.comm = &comm;
    const int rank0 = comm.rank == 0;
    if (precond_z > 0 && comm.size > 1) {
        fprintf(stderr, "%s: --precondition: not with MPI yet (each rank holds a shard of the data); "
                        "--precondition 0 turns it off\n", prog);
        dp_cli_mpi_finalize();
        return 2;
    }
    if (precond_z > 0 && !p.no_dp && p.noise_multiplier <= 0) { /* the release alone must leave room */
        dp_accountant *pa = NULL;
        dp_epsilon_report er;
        int over = 0;
        if (dp_accountant_create(&pa) == DP_OK && dp_accountant_step(pa, 1.0, precond_z, 1) == DP_OK &&
            dp_accountant_epsilon(pa, p.accountant, p.delta, NULL, &er) == DP_OK)
            over = !(er.epsilon < p.target_epsilon - 0.01);
        else
            over = -1;
        dp_accountant_destroy(pa);
        if (over) {
            if (over > 0)
                fprintf(stderr, "%s: --precondition %g: its release alone spends epsilon %.4g at delta %g (%s), "
                                "leaving nothing of --epsilon %g for training; give it more noise\n",
                        prog, precond_z, er.epsilon, p.delta, dp_accountant_kind_name(p.accountant), p.target_epsilon);
            else
                fprintf(stderr, "%s: --precondition %g: %s\n", prog, precond_z, dp_cli_error());
            dp_cli_mpi_finalize();
            return 2;
        }
    }
    if (!rank0) quiet = 1;

    dp_status st;
    dp_dataset tr, te;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    dp_model *m = NULL, *mt = NULL; /* the model; mt: the classifier that trains on preconditioned features */
    dp_precond pc;
    memset(&pc, 0, sizeof pc);
    double precond_secs = 0;
    int rc = 1, K;
    dp_cli_data_info info;
    const dp_cli_data_spec ds = {.scatter_j = recipe->scatter_j, .scatter_l = scatter_l ? scatter_l : recipe->scatter_l,
                                 .data = o.data, .model_name = o.model_name, .train_limit = o.train_limit,
                                 .test_limit = test_limit, .mo = &mo, .seed = p.seed, .info = &info};
    int bad = dp_cli_load_data_and_model(&ds, &tr, &te, &K, &m);
    if (bad) {
        rc = bad;
        goto done;
    }
    p.data_id = info.data_id;
    if (precond_z > 0) { /* the release, the transform of both splits, and the classifier that trains on them */
        const double t0 = omp_get_wtime();
        dp_precond_params pp = dp_precond_default_params();
        pp.groups = recipe->precond_groups;
        pp.noise_multiplier = p.no_dp ? 0 : precond_z; /* the non-private baseline: exact statistics */
        pp.noise_seeded = p.noise_seeded;
        pp.noise_seed = p.noise_seed;
        char spec[64];
        snprintf(spec, sizeof spec, "flatten linear(%d)", K);
        if ((st = dp_precond_fit(&tr, &pp, &pc)) != DP_OK || (st = dp_precond_apply(&pc, &tr)) != DP_OK ||
            (te.n && (st = dp_precond_apply(&pc, &te)) != DP_OK) ||
            (st = dp_model_create(spec, tr.c, tr.h, tr.w, &mt)) != DP_OK) {
            fprintf(stderr, "%s: --precondition %g: %s\n", prog, precond_z, dp_cli_error());
            goto done;
        }
        dp_rng init;
        dp_rng_seed(&init, p.seed ^ 0x1badc0ffeeULL);
        dp_model_init(mt, &init);
        if (!p.no_dp) p.prior_sigma = pc.noise_multiplier; /* the release's, as fitted */
        precond_secs = omp_get_wtime() - t0;
    }
    if (p.augmult) { /* said as usage errors, naming the flag, before the run (dp_train checks the same) */
        const int side = tr.h < tr.w ? tr.h : tr.w;
        if (info.tokens || tr.h < 2 || tr.w < 2) {
            fprintf(stderr, "%s: --augmult %d: the training data is %s, not images (crops and flips need a height and "
                            "a width of at least 2)\n", prog, p.augmult, info.tokens ? "token sequences" : "flat vectors");
            rc = 2;
            goto done;
        }
        if (p.augment_pad >= side) {
            fprintf(stderr, "%s: --augment-pad %d: must be below the images' %d x %d\n", prog, p.augment_pad, tr.h, tr.w);
            rc = 2;
            goto done;
        }
    }
    const int G = p.augmult > 1 ? p.augmult : 1; /* rows per example */
    if (init_path && (st = dp_model_load_safetensors(m, init_path)) != DP_OK) {
        fprintf(stderr, "%s: --init %s\n", prog, dp_cli_error());
        goto done;
    }
    /* Usage errors that need the training set size n, said as such (exit 2) before the run: dp_train
     * makes the same checks but its failures exit 1, and an unreachable --epsilon used to cost its
     * calibration minutes before "no convergence". With --resume the checkpoint may fix sigma. */
    if ((size_t)p.expected_batch > tr.n) {
        fprintf(stderr, "%s: --batch-size %d: must be in 1..%zu (the training set size)\n", prog, p.expected_batch,
                tr.n);
        rc = 2;
        goto done;
    }
    if (!p.no_dp && !(p.delta < 1.0 / (double)tr.n)) {
        fprintf(stderr, "%s: --delta %g: must be below 1/n = %g, or the guarantee is void\n", prog, p.delta,
                1.0 / (double)tr.n);
        rc = 2;
        goto done;
    }
    if (!p.no_dp && p.noise_multiplier <= 0 && !p.resume) {
        const double q = (double)p.expected_batch / (double)tr.n; /* as dp_train */
        const long steps = (long)dp_train_steps_per_epoch(tr.n, p.expected_batch) * p.epochs;
        if ((st = dp_calibrate_sigma_check(p.accountant, p.target_epsilon, p.delta, q, steps, 0.01)) != DP_OK) {
            if (st == DP_ERR_RANGE) {
                fprintf(stderr, "%s: --epsilon %g, --delta %g: %s\n", prog, p.target_epsilon, p.delta, dp_cli_error());
                rc = 2;
            } else
                rc = dp_cli_fail(st);
            goto done;
        }
    }
    if (!p.no_dp && p.mem_budget && p.clipping == DP_CLIP_AUTO) {
        /* a budget below auto's smallest plan (every layer on a second pass) cannot be kept: say
         * so, and which --physical-batch keeps it, rather than silently run over it */
        const int B = p.physical_batch > 0 && p.physical_batch < p.expected_batch ? p.physical_batch : p.expected_batch;
        dp_clip_params cp = {p.clipping, p.max_grad_norm, p.mem_budget, G}, smallest = cp;
        smallest.mode = DP_CLIP_GHOST; /* every layer on a second pass */
        const size_t least = dp_model_clip_plan_bytes(mt ? mt : m, &smallest, B * G);
        if (least > p.mem_budget) {
            const int n = dp_model_max_batch_within(mt ? mt : m, &cp, p.mem_budget, B * G) / G; /* examples */
            char fix[96] = "not even one sample at a time fits it: raise it";
            if (n > 0) snprintf(fix, sizeof fix, "--physical-batch %d fits it (the same result, in smaller chunks)", n);
            char rows[48] = "";
            if (G > 1) snprintf(rows, sizeof rows, " (%d rows: --augmult %d)", B * G, G);
            fprintf(stderr, "%s: --mem-budget %.4g MiB: no clipping plan fits a step of %d samples%s (the smallest, "
                            "every layer on a second backward pass, needs about %.1f MiB); %s\n",
                    prog, (double)p.mem_budget / (1024.0 * 1024.0), B, rows, (double)least / (1024.0 * 1024.0), fix);
            rc = 2;
            goto done;
        }
    }

    progress_state ps = {isatty(2), quiet, p.report_nonprivate, info.holdout && !p.no_dp, mo.mse, p.clip_quantile > 0};
    p.progress = on_progress;
    p.test_private = info.holdout; /* its accuracy is not covered: kept out of checkpoints too */
    p.progress_user = &ps;
    if (!quiet) {
        if (info.tokens)
            printf("data: %s (%zu train, %zu test, sequences of %d tokens, vocabulary %d, %d classes)\n", info.data_desc,
                   tr.n, te.n, info.seq_len, info.vocab, K);
        else
            printf("data: %s (%zu train, %zu test, %dx%dx%d, %d %s)\n", info.data_desc, tr.n, te.n, tr.c, tr.h,
                   tr.w, K, mo.mse ? "regression targets" : "classes");
        if (info.features[0]) printf("features: %s\n", info.features);
        if (mt)
        {
            char how[96] = "exact (non-private baseline)";
            if (!p.no_dp)
                snprintf(how, sizeof how, "released with noise multiplier %g (covered by epsilon)", precond_z);
            printf("preconditioning: GroupNorm(%d) features times A^-1/4 (channels) and B^-1/4 (positions), their "
                   "second moments %s; a linear classifier trains on them and is folded back into the model (%.1f s)\n",
                   recipe->precond_groups, how, precond_secs);
        }
        printf("model: %s, %zu parameters (%zu trainable); recipe %s\n", info.model_desc, dp_model_num_params(m),
               mt ? dp_model_num_trainable(mt) : dp_model_num_trainable(m), recipe->name);
        if (p.no_dp)
            printf("training: non-private baseline (--no-dp), batch %d, %d epochs, %d threads\n", p.expected_batch, p.epochs,
                   omp_get_max_threads());
        else
            printf("training: DP-SGD, clipping %s, C %g, expected batch %d (q %.5f), %d epochs x %d steps, %s lr %g%s, "
                   "target epsilon %g at delta %g (%s accountant), %d threads\n",
                   dp_clip_mode_name(p.clipping), p.max_grad_norm, p.expected_batch, (double)p.expected_batch / (double)tr.n,
                   p.epochs, dp_train_steps_per_epoch(tr.n, p.expected_batch), dp_optim_name(p.optim.kind), p.optim.lr,
                   p.optim.kind == DP_OPT_SGD && p.optim.momentum > 0 ? (p.lr_schedule ? " (momentum, cosine schedule)" : " (momentum)")
                   : p.lr_schedule ? " (cosine schedule)" : "", p.target_epsilon, p.delta,
                   dp_accountant_kind_name(p.accountant), omp_get_max_threads());
        if (verbose && !p.no_dp) {
            /* the plan at the expected batch (Poisson batches vary around it) or the physical one */
            int B = p.physical_batch > 0 && p.physical_batch < p.expected_batch ? p.physical_batch : p.expected_batch;
            dp_clip_params cp = {p.clipping, p.max_grad_norm, p.mem_budget, G};
            size_t cap = 1 << 16;
            char *buf = malloc(cap);
            if (buf && dp_model_describe_plan(mt ? mt : m, &cp, B * G, buf, cap) == DP_OK)
                fputs(buf, stdout);
            else
                fprintf(stderr, "%s: --verbose: %s\n", prog, buf ? dp_cli_error() : "out of memory");
            free(buf);
        } else if (verbose) {
            printf("memory plan: a non-private step of %d samples allocates %.1f MiB\n", p.expected_batch,
                   (double)dp_model_plan_bytes(mt ? mt : m, p.clipping, p.expected_batch, 1) / (1024.0 * 1024.0));
        }
        if (p.ema_decay > 0)
            printf("averaging: each epoch evaluates, and the run keeps, an exponential moving average of the weights "
                   "(decay %g; post-processing, free in privacy)\n", p.ema_decay);
        if (p.clip_quantile > 0)
            printf("adaptive clipping: C moves toward the %g-quantile of the per-sample norms (rate %g, count noise %g "
                   "examples); the gradient's noise multiplier is raised so that epsilon is that of sigma alone\n",
                   p.clip_quantile, p.clip_lr > 0 ? p.clip_lr : 0.2,
                   p.clip_count_noise > 0 ? p.clip_count_noise : (double)p.expected_batch / 20.0);
        if (p.augmult)
            printf("augmentation: %d cop%s of each sampled example (random crop, shift up to %d pixels%s); each "
                   "example's average gradient is clipped (privacy accounting unchanged)\n",
                   p.augmult, p.augmult == 1 ? "y" : "ies", p.augment_pad, p.augment_flip ? ", horizontal flip" : "");
        if (comm.size > 1) printf("data-parallel: %d ranks (MPI)\n", comm.size);
        if (p.resume) printf("resuming from %s\n", p.resume);
        if (p.noise_seeded)
            printf("noise: seeded by --noise-seed %llu (reproducible): the epsilon of this run holds ONLY while that "
                   "seed stays secret\n", (unsigned long long)p.noise_seed);
        else if (!p.no_dp)
            printf("noise: from the OS-seeded CSPRNG (not reproducible; nothing of it is written)\n");
        if (ps.private_test && !p.no_dp)
            printf("test split: held out from the private data, so its %s is not covered by epsilon%s\n",
                   mo.mse ? "mean squared error" : "accuracy",
                   p.report_nonprivate ? " (printed, labelled non-private)" : "; not printed (--report-nonprivate)");
        fflush(stdout);
    }
    /* SIGINT/SIGTERM ask the loop to stop at the next step boundary, where it writes a
     * checkpoint; kept until the end, so that a signal after the last step lets the outputs be
     * written. The library installs no handler: the command does. A signal ignored when dpsgd
     * started stays ignored: a script's background job is meant to survive the terminal's Ctrl-C. */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, NULL);
    if (sigaction(SIGTERM, NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(SIGTERM, &sa, NULL);
    p.stop = &stop_signal;
    dp_train_result r;
#ifdef DP_TEST_HOOKS
    st = dp__train(mt ? mt : m, &tr, &te, &p, &hooks, &r);
#else
    st = dp_train(mt ? mt : m, &tr, &te, &p, &r);
#endif
    if (st == DP_ERR_INTERRUPTED) { /* every rank stopped at the same step: no abort */
        rc = 128 + (stop_signal ? stop_signal : SIGINT);
        if (!rank0) goto done;
        fprintf(stderr, "%s: %s: %s\n", prog, stop_signal == SIGTERM ? "SIGTERM" : "SIGINT", dp_cli_error());
        char ck[4200] = "";
        if (p.checkpoint_dir) snprintf(ck, sizeof ck, "%s/%s", p.checkpoint_dir, DP_CHECKPOINT_FILE);
        if (*ck && access(ck, F_OK) == 0)
            fprintf(stderr, "%s: to continue, run the same command with --resume %s (epsilon carries on%s)\n", prog,
                    p.checkpoint_dir, p.noise_seeded ? "; bit-identical with the same threads" : "");
        else if (!*ck)
            fprintf(stderr, "%s: without --checkpoint-dir the run cannot be continued\n", prog);
        goto done;
    }
    if (st != DP_OK) {
        if (comm.size > 1) fprintf(stderr, "%s: rank %d of %d:\n", prog, comm.rank, comm.size);
        rc = dp_cli_fail(st);
        if (comm.size > 1) dp_cli_mpi_abort(rc);
        goto done;
    }
    if (mt) { /* the classifier folded back: the recipe's model gives the same outputs on the features */
        float *lw, *lb, *ow, *ob, *gw, *gb;
        size_t n1, n2, n3, n4, n5, n6;
        if (dp_model_find_tensor(mt, "1.weight", &lw, &n1) || dp_model_find_tensor(mt, "1.bias", &lb, &n2) ||
            dp_model_find_tensor(m, "0.weight", &gw, &n5) || dp_model_find_tensor(m, "0.bias", &gb, &n6) ||
            dp_model_find_tensor(m, "2.weight", &ow, &n3) || dp_model_find_tensor(m, "2.bias", &ob, &n4) || n1 != n3 ||
            n2 != n4 || n5 != n6 || (st = dp_precond_fold(&pc, K, lw, ow)) != DP_OK) {
            fprintf(stderr, "%s: --precondition: folding the classifier into the model failed: %s\n", prog,
                    dp_cli_error());
            goto done;
        }
        memcpy(ob, lb, sizeof(float) * n2);
        for (size_t i = 0; i < n5; i++) {
            gw[i] = 1;
            gb[i] = 0;
        }
    }
    if (rank_weights && save_weights) {
        char path[4096];
        snprintf(path, sizeof path, "%s.rank%d", save_weights, comm.rank);
        if ((st = dp_model_save_safetensors(m, path)) != DP_OK) {
            fprintf(stderr, "%s: --save-weights %s\n", prog, dp_cli_error());
            goto done;
        }
    }
    if (!rank0) {
        rc = 0;
        goto done;
    }
    const int show_test = !ps.private_test || p.report_nonprivate; /* evaluation on public data, or labelled */
    char acc[64] = "not shown (held-out private split)";
    if (show_test) test_figure(acc, sizeof acc, &ps, r.test_accuracy, r.test_loss);
    const char *figure = mo.mse ? "mse" : "accuracy";
    if (p.no_dp)
        printf("final: test %s %s, non-private (no privacy guarantee), %ld steps, %.1f s\n", figure, acc, r.steps,
               r.seconds);
    else
    {
        char rel[96] = "";
        if (p.prior_sigma > 0) snprintf(rel, sizeof rel, " after the features' release (noise multiplier %g)", p.prior_sigma);
        printf("final: test %s %s at epsilon %.3f (delta %g, %s), sigma %.4f, %ld steps%s, %.1f s%s\n", figure, acc,
               r.epsilon, r.delta, dp_accountant_kind_name(p.accountant), r.sigma, r.steps, rel, r.seconds,
               p.noise_seeded ? "; epsilon holds only while --noise-seed stays secret" : "");
    }
    if (p.clip_quantile > 0)
        printf("adaptive clipping: C %g -> %.4g; gradient noise multiplier %.4f, count noise %g (together sigma %.4f)\n",
               p.max_grad_norm, r.max_grad_norm, r.noise_multiplier_gradient,
               p.clip_count_noise > 0 ? p.clip_count_noise : (double)p.expected_batch / 20.0, r.sigma);
    if (p.report_nonprivate && !p.no_dp)
        printf("non-private (not covered by epsilon): mean drawn batch %.1f, empty batches %ld, non-finite samples %ld "
               "(dropped)\n", r.mean_batch, r.empty_batches, r.nonfinite_samples);
    int lost = 0; /* outputs that could not be written where asked (kept elsewhere) */
    if (save_weights && (st = dp_model_save_safetensors(m, save_weights)) != DP_OK) {
        fprintf(stderr, "%s: --save-weights %s\n", prog, dp_cli_error());
        keep_elsewhere("--save-weights", "weights", "safetensors", m, NULL, p.checkpoint_dir);
        lost = 1;
    }
    if (save_model && (st = dp_model_save_onnx(m, o.model_name, save_model)) != DP_OK) {
        fprintf(stderr, "%s: --save-model %s\n", prog, dp_cli_error());
        keep_elsewhere("--save-model", "weights", "safetensors", m, NULL, p.checkpoint_dir);
        lost = 1;
    }
    if (out) {
        /* what epsilon covers (and public evaluation) at the top; everything else under
         * "non_private", which a private run fills only with --report-nonprivate */
        char test_acc[64] = "null", test_loss[64] = "null", noise[128] = "\"none\"", extra[512] = "";
        if (show_test && !ps.private_test) {
            if (!mo.mse) snprintf(test_acc, sizeof test_acc, "%.17g", r.test_accuracy);
            snprintf(test_loss, sizeof test_loss, "%.17g", r.test_loss);
        }
        if (!p.no_dp && p.noise_seeded)
            snprintf(noise, sizeof noise, "\"seeded\",\n  \"noise_seed\": %llu,\n  \"noise_seed_public\": true",
                     (unsigned long long)p.noise_seed);
        else if (!p.no_dp)
            snprintf(noise, sizeof noise, "\"os-csprng\",\n  \"noise_seed_public\": false");
        if (p.report_nonprivate || p.no_dp) {
            snprintf(extra, sizeof extra,
                     ",\n    \"mean_batch\": %.3f,\n    \"empty_batches\": %ld,\n    \"nonfinite_samples\": %ld", r.mean_batch,
                     r.empty_batches, r.nonfinite_samples);
            if (ps.private_test && !mo.mse)
                snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                         ",\n    \"heldout_test_accuracy\": %.17g,\n    \"heldout_test_loss\": %.17g", r.test_accuracy,
                         r.test_loss);
            else if (ps.private_test)
                snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ",\n    \"heldout_test_loss\": %.17g",
                         r.test_loss);
        }
        char json[4096];
        snprintf(json, sizeof json,
                 "{\n  \"recipe\": \"%s\",\n  \"model\": \"%s\",\n  \"parameters\": %zu,\n  \"private\": %s,\n  \"clipping\": \"%s\",\n"
                 "  \"max_grad_norm\": %.17g,\n  \"max_grad_norm_final\": %.17g,\n  \"clip_quantile\": %.17g,\n"
                 "  \"ema_decay\": %.17g,\n  \"augmult\": %d,\n  \"precondition_noise_multiplier\": %.17g,\n"
                 "  \"noise_multiplier\": %.17g,\n"
                 "  \"noise_multiplier_gradient\": %.17g,\n  \"sample_rate\": %.17g,\n"
                 "  \"expected_batch\": %d,\n  \"epochs\": %d,\n  \"steps\": %ld,\n  \"delta\": %.17g,\n"
                 "  \"epsilon\": %.17g,\n  \"accountant\": \"%s\",\n  \"noise\": %s,\n"
                 "  \"loss\": \"%s\",\n  \"test_split\": \"%s\",\n  \"test_accuracy\": %s,\n  \"test_loss\": %s,\n"
                 "  \"threads\": %d,\n  \"seed\": %llu,\n"
                 "  \"non_private\": {\n    \"note\": \"not covered by epsilon\",\n    \"seconds\": %.3f,\n"
                 "    \"peak_tracked_bytes\": %zu%s\n  }\n}\n",
                 recipe->name,
                 dp_model_builtin_spec(o.model_name) || !strcmp(o.model_name, "transformer") ? o.model_name : "spec",
                 dp_model_num_params(m), p.no_dp ? "false" : "true",
                 p.no_dp ? "none" : dp_clip_mode_name(p.clipping), p.max_grad_norm, r.max_grad_norm, p.clip_quantile,
                 p.ema_decay, p.augmult, p.prior_sigma, r.sigma, r.noise_multiplier_gradient, r.q, p.expected_batch, p.epochs,
                 r.steps, p.no_dp ? 0.0 : r.delta, p.no_dp ? 0.0 : r.epsilon,
                 p.no_dp ? "none" : dp_accountant_kind_name(p.accountant), noise, mo.mse ? "mse" : "xent",
                 ps.private_test ? "held out from the private data" : "public", test_acc, test_loss,
                 omp_get_max_threads(), (unsigned long long)p.seed, r.seconds, r.peak_bytes, extra);
        if (!dp_cli_write_atomic("--out", out, json)) {
            keep_elsewhere("--out", "summary", "json", NULL, json, p.checkpoint_dir);
            lost = 1;
        }
    }
    if (lost) { /* exit 1, but say what the finished run spent */
        if (p.no_dp)
            fprintf(stderr, "%s: the run finished (non-private, %ld steps)", prog, r.steps);
        else
            fprintf(stderr, "%s: the run finished: epsilon %.17g spent (delta %g, %s), %ld steps", prog, r.epsilon,
                    r.delta, dp_accountant_kind_name(p.accountant), r.steps);
        if (p.checkpoint_dir) fprintf(stderr, "; its last checkpoint, %s/%s, also holds the weights", p.checkpoint_dir,
                                      DP_CHECKPOINT_FILE);
        fprintf(stderr, "\n");
        goto done;
    }
    rc = 0;
done:
    dp_cli_mpi_finalize();
    dp_model_destroy(m);
    dp_model_destroy(mt);
    dp_precond_free(&pc);
    dp_dataset_free(&tr);
    dp_dataset_free(&te);
    return rc;
}

