/* train.c: the DP-SGD training loop and evaluation. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* realpath */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h> /* flock */
#include <sys/stat.h>
#include <unistd.h>

#include "dpsgd/io.h"
#include "dpsgd/privacy.h"
#include "dpsgd/secure.h"
#include "dpsgd/train.h"
#include "internal.h"
#include "step.h"
#include "testhooks.h"

_Static_assert(sizeof(size_t) == sizeof(int64_t), "the sampler permutation is checkpointed as I64");

dp_train_params dp_train_default_params(void) {
    dp_train_params p;
    memset(&p, 0, sizeof p);
    p.clipping = DP_CLIP_AUTO;
    p.max_grad_norm = 0.1;
    p.noise_multiplier = 0;
    p.target_epsilon = 3.0;
    p.delta = 1e-5;
    p.accountant = DP_ACCT_PRV;
    p.expected_batch = 2048;
    p.epochs = 40;
    p.optim = dp_optim_default_params(DP_OPT_SGD);
    p.optim.lr = 4.0;
    p.optim.momentum = 0.9;
    p.eval_batch = 1000;
    return p;
}

int dp_train_steps_per_epoch(size_t n, int expected_batch) {
    if (expected_batch < 1) return 1;
    long s = lround((double)n / expected_batch);
    return s < 1 ? 1 : (int)s;
}

dp_status dp_evaluate(dp_model *m, const dp_dataset *d, int batch, double *accuracy, double *loss) {
    int K = dp_model_output_size(m);
    if (batch < 1) batch = 1000;
    float *lv = dp_alloc(sizeof(float) * (size_t)batch);
    if (!lv) return DP_ERR_NOMEM;
    size_t correct = 0;
    double lsum = 0;
    dp_status st = DP_OK;
    for (size_t off = 0; off < d->n; off += (size_t)batch) {
        int B = (int)(d->n - off < (size_t)batch ? d->n - off : (size_t)batch);
        const float *z;
        if ((st = dp_model_forward(m, d->x + off * d->dim, B, 0, NULL, &z)) != DP_OK) break;
        for (int i = 0; i < B; i++) {
            const float *zi = z + (size_t)i * K;
            int best = 0;
            for (int c = 1; c < K; c++)
                if (zi[c] > zi[best]) best = c;
            correct += best == d->y[off + (size_t)i];
        }
        st = dp_loss_xent(z, d->y + off, B, K, lv, NULL);
        if (st != DP_OK) break;
        for (int i = 0; i < B; i++) lsum += lv[i];
    }
    dp_free(lv);
    if (st != DP_OK) return st;
    if (accuracy) *accuracy = d->n ? (double)correct / (double)d->n : 0;
    if (loss) *loss = d->n ? lsum / (double)d->n : 0;
    return DP_OK;
}

/* Fisher-Yates on the first k positions of perm (a partial shuffle): a uniform k-subset. */
static void shuffle_prefix(size_t *perm, size_t n, size_t k, dp_rng *rng) {
    for (size_t i = 0; i < k && i + 1 < n; i++) {
        size_t j = i + (size_t)(dp_rng_u64(rng) % (uint64_t)(n - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- checkpoints (dpsgd/io.h, docs/reliability.md) ------------------------------------ */

/* "<prefix>: <the current message>" */
static dp_status prefix_error(dp_status st, const char *prefix) {
    return dp_fail(st, "%s: %s", prefix, dp_last_error());
}

#define ST_PREFIX "state."
#define ST_OPTIM "state.optimizer"
#define ST_PERM "state.sampler_perm"
#define ST_EMA "state.ema"
#define ST_SHARDS "state.shards"

/* splitmix64 finaliser */
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The stream of shard r at step `step` (0-based) for purpose `salt`: a function of the seed,
 * step and shard only, so a rank needs no state to resume and one process can emulate any
 * rank's draws (shards > 1). */
static void shard_rng(dp_rng *r, uint64_t seed, long step, int shard, uint64_t salt) {
    dp_rng_seed(r, mix64(mix64(mix64(seed ^ salt) ^ (uint64_t)step) ^ (uint64_t)shard));
}

/* FNV-1a over n bytes, continuing from h (start: FNV_START) */
#define FNV_START 1469598103934665603ULL
static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t params_hash(const float *x, size_t n) { return fnv_bytes(FNV_START, x, n * sizeof(float)); }

/* Every rank must run one configuration: a rank clipping at another C, or with another sigma,
 * q or step count, would break the guarantee or hang in a collective. Compared before any
 * collective whose size depends on it. */
static dp_status check_same_config(const dp_train_comm *c, const dp_checkpoint_info *k, long steps) {
    uint64_t data[2] = {k->data_n, k->data_dim}, seeds[3] = {(uint64_t)k->secure, k->noise_seed, k->seed};
    const dp_optim_params *o = &k->optim; /* field by field: a struct's padding is not part of it */
    double optim[9] = {(double)o->kind, o->lr,    o->momentum, o->dampening, (double)o->nesterov,
                       o->weight_decay, o->beta1, o->beta2,    o->eps};
    /* in cause-first order: another step count or delta also changes a calibrated sigma */
    const struct {
        const char *what;
        uint64_t h;
    } f[] = {
        {"model (--model, --freeze)", fnv_bytes(FNV_START, k->model, strlen(k->model))},
        {"training data size (--data, --train-limit)", fnv_bytes(FNV_START, data, sizeof data)},
        {"training data content (checksum)", k->data_checksum},
        {"clipping norm (--max-grad-norm)", fnv_bytes(FNV_START, &k->max_grad_norm, sizeof k->max_grad_norm)},
        {"sample rate (--batch-size)", fnv_bytes(FNV_START, &k->q, sizeof k->q)},
        {"step count (--epochs, --batch-size)", fnv_bytes(FNV_START, &steps, sizeof steps)},
        {"delta (--delta)", fnv_bytes(FNV_START, &k->delta, sizeof k->delta)},
        {"noise multiplier (--epsilon, --noise-multiplier, --accountant)", fnv_bytes(FNV_START, &k->sigma, sizeof k->sigma)},
        {"clipping mode (--clipping)", (uint64_t)k->clipping},
        {"noise source and seeds (--noise-seed, --seed)", fnv_bytes(FNV_START, seeds, sizeof seeds)},
        {"optimizer (--optimizer, --lr, --momentum, ...)", fnv_bytes(FNV_START, optim, sizeof optim)},
        {"--no-dp", (uint64_t)k->no_dp},
    };
    enum { NF = sizeof f / sizeof f[0] };
    uint64_t h[NF];
    for (int i = 0; i < NF; i++) h[i] = f[i].h;
    int which;
    dp_status st = dp_step_first_difference(c, h, NF, &which);
    if (st != DP_OK) return st;
    if (which >= 0)
        return dp_fail(DP_ERR_INVALID, "the %d ranks were started with different settings: %s differs between ranks; "
                       "every rank must run the same command", c->size, f[which].what);
    return DP_OK;
}

/* every rank holds the same parameters: sums the hash halves; a differing rank shows */
static dp_status check_replicas(const dp_train_comm *c, const float *params, size_t np, long step) {
    uint64_t h = params_hash(params, np);
    int which;
    dp_status st = dp_step_first_difference(c, &h, 1, &which);
    if (st != DP_OK) return st;
    if (which >= 0)
        return dp_fail(DP_ERR_INVALID, "step %ld: the ranks' models differ after the update (rank %d of %d); "
                       "training stopped", step, c->rank, c->size);
    return DP_OK;
}

/* test hook (testhooks.h): appends the released gradient to the file named by user */
static dp_status dump_released(void *user, const float *g, size_t n) {
    const char *path = user;
    FILE *f = fopen(path, "ab");
    int ok = f && fwrite(g, sizeof *g, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? DP_OK : dp_fail(DP_ERR_IO, "%s: cannot append the released gradient", path);
}

/* the step's row source for a dataset */
static void dataset_row(void *user, size_t e, float *x, int32_t *y) {
    const dp_dataset *d = user;
    memcpy(x, d->x + e * d->dim, sizeof(float) * d->dim);
    *y = d->y[e];
}

/* Everything the loop needs to write a checkpoint; the info's configuration part is filled
 * once, its state part before each write. */
typedef struct {
    char path[4096];
    dp_checkpoint_info info;
    dp_st_tensor *t; /* model tensors + optimizer state + sampler permutation */
    int nt;
    int lock_fd; /* DIR/.lock, flocked for the whole run; -1: not held */
} ckpt_writer;

static void fill_config(dp_checkpoint_info *c, dp_model *m, const dp_dataset *tr, const dp_train_params *p,
                        double sigma, double q, uint64_t checksum) {
    memset(c, 0, sizeof *c);
    dp_model_describe(m, c->model, sizeof c->model);
    snprintf(c->data, sizeof c->data, "%s", p->data_id ? p->data_id : "");
    c->data_n = tr->n;
    c->data_dim = tr->dim;
    c->data_checksum = checksum;
    c->no_dp = p->no_dp;
    c->clipping = (int)p->clipping;
    c->expected_batch = p->expected_batch;
    c->physical_batch = p->physical_batch;
    c->epochs = p->epochs;
    c->threads = p->threads > 0 ? p->threads : omp_get_max_threads();
    c->secure = !p->no_dp && !p->noise_seeded;
    c->max_grad_norm = p->max_grad_norm;
    c->sigma = sigma;
    c->q = q;
    c->delta = p->delta;
    c->target_epsilon = p->noise_multiplier > 0 ? 0 : p->target_epsilon; /* 0: sigma was given */
    c->optim = p->optim;
    c->seed = p->seed;
    c->ema_decay = p->ema_decay;
    c->noise_seed = p->noise_seeded ? p->noise_seed : 0;
}

/* The checkpoint `ck` (from `path`) against this run's configuration `cur`. Differences that
 * change the privacy accounting (or make the state meaningless) are always refused; the rest
 * only without `force`. */
static dp_status compare_config(const char *path, const dp_checkpoint_info *ck, const dp_checkpoint_info *cur,
                                int force) {
#define NEVER(cond, what, fmt, a, b)                                                                                   \
    if (cond)                                                                                                          \
        return dp_fail(DP_ERR_INVALID,                                                                                 \
                       "--resume %s: the checkpoint was made with " what " " fmt ", this run has " fmt                \
                       "; refusing (the privacy accounting depends on it; --force cannot override this)",             \
                       path, a, b)
#define UNLESS_FORCED(cond, what, fmt, a, b)                                                                           \
    if ((cond) && !force)                                                                                              \
        return dp_fail(DP_ERR_INVALID,                                                                                 \
                       "--resume %s: the checkpoint was made with " what " " fmt ", this run has " fmt                \
                       " (pass --force to continue with the new value)",                                              \
                       path, a, b)
    if (strcmp(ck->model, cur->model))
        return dp_fail(DP_ERR_INVALID,
                       "--resume %s: the checkpoint's model differs from this run's (--model/--freeze); refusing.\n"
                       "checkpoint:\n%sthis run:\n%s",
                       path, ck->model, cur->model);
    NEVER(ck->data_n != cur->data_n, "training data of", "%llu examples", (unsigned long long)ck->data_n,
          (unsigned long long)cur->data_n);
    NEVER(ck->data_dim != cur->data_dim, "training data of", "%llu features", (unsigned long long)ck->data_dim,
          (unsigned long long)cur->data_dim);
    NEVER(ck->no_dp != cur->no_dp, "--no-dp", "%s", ck->no_dp ? "on" : "off", cur->no_dp ? "on" : "off");
    NEVER(!cur->no_dp && ck->secure != cur->secure, "noise", "%s", ck->secure ? "from the OS CSPRNG" : "from --noise-seed",
          cur->secure ? "from the OS CSPRNG" : "from --noise-seed");
    if (!cur->no_dp) {
        NEVER(ck->max_grad_norm != cur->max_grad_norm, "--max-grad-norm (C)", "%.17g", ck->max_grad_norm,
              cur->max_grad_norm);
        NEVER(ck->expected_batch != cur->expected_batch || ck->q != cur->q, "--batch-size", "%d (sample rate q)",
              ck->expected_batch, cur->expected_batch);
        NEVER(ck->delta != cur->delta, "--delta", "%.17g", ck->delta, cur->delta);
        if ((ck->target_epsilon == 0) != (cur->target_epsilon == 0))
            return dp_fail(DP_ERR_INVALID,
                           "--resume %s: the checkpoint's sigma %.17g was %s, this run %s; refusing (the privacy "
                           "accounting depends on it; --force cannot override this)",
                           path, ck->sigma, ck->target_epsilon == 0 ? "given by --noise-multiplier" : "calibrated to --epsilon",
                           cur->target_epsilon == 0 ? "gives --noise-multiplier" : "calibrates it to --epsilon");
        NEVER(ck->target_epsilon != cur->target_epsilon, "--epsilon", "%.17g", ck->target_epsilon, cur->target_epsilon);
        NEVER(cur->target_epsilon == 0 && ck->sigma != cur->sigma, "--noise-multiplier (sigma)", "%.17g", ck->sigma,
              cur->sigma);
    } else {
        NEVER(ck->expected_batch != cur->expected_batch, "--batch-size", "%d", ck->expected_batch,
              cur->expected_batch);
    }
    UNLESS_FORCED(strcmp(ck->data, cur->data), "--data", "'%s'", ck->data, cur->data);
    UNLESS_FORCED(ck->epochs != cur->epochs, "--epochs", "%d", ck->epochs, cur->epochs);
    UNLESS_FORCED(ck->threads != cur->threads, "--threads", "%d (results are bit-identical only for the same count)",
                  ck->threads, cur->threads);
    UNLESS_FORCED(ck->physical_batch != cur->physical_batch, "--physical-batch", "%d", ck->physical_batch,
                  cur->physical_batch);
    UNLESS_FORCED(ck->clipping != cur->clipping, "--clipping", "%s", dp_clip_mode_name((dp_clip_mode)ck->clipping),
                  dp_clip_mode_name((dp_clip_mode)cur->clipping));
    UNLESS_FORCED(ck->ema_decay != cur->ema_decay, "--ema", "%.17g", ck->ema_decay, cur->ema_decay);
    UNLESS_FORCED(ck->seed != cur->seed, "--seed", "%llu", (unsigned long long)ck->seed, (unsigned long long)cur->seed);
    NEVER(ck->noise_seed != cur->noise_seed, "--noise-seed", "%llu", (unsigned long long)ck->noise_seed,
          (unsigned long long)cur->noise_seed);
    NEVER(ck->optim.kind != cur->optim.kind, "--optimizer", "%s", dp_optim_name(ck->optim.kind),
          dp_optim_name(cur->optim.kind));
    UNLESS_FORCED(ck->optim.lr != cur->optim.lr, "--lr", "%.17g", ck->optim.lr, cur->optim.lr);
    UNLESS_FORCED(ck->optim.momentum != cur->optim.momentum, "--momentum", "%.17g", ck->optim.momentum,
                  cur->optim.momentum);
    UNLESS_FORCED(ck->optim.dampening != cur->optim.dampening, "dampening", "%.17g", ck->optim.dampening,
                  cur->optim.dampening);
    UNLESS_FORCED(ck->optim.nesterov != cur->optim.nesterov, "--nesterov", "%d", ck->optim.nesterov,
                  cur->optim.nesterov);
    UNLESS_FORCED(ck->optim.weight_decay != cur->optim.weight_decay, "--weight-decay", "%.17g",
                  ck->optim.weight_decay, cur->optim.weight_decay);
    UNLESS_FORCED(ck->optim.beta1 != cur->optim.beta1, "--beta1", "%.17g", ck->optim.beta1, cur->optim.beta1);
    UNLESS_FORCED(ck->optim.beta2 != cur->optim.beta2, "--beta2", "%.17g", ck->optim.beta2, cur->optim.beta2);
    UNLESS_FORCED(ck->optim.eps != cur->optim.eps, "Adam eps", "%.17g", ck->optim.eps, cur->optim.eps);
#undef NEVER
#undef UNLESS_FORCED
    return DP_OK;
}

/* the state part of the info that the loop's counters make: step, counters, losses, elapsed */
static void fill_counters(dp_checkpoint_info *c, long step, const dp_train_result *r, size_t lcount, double batch_sum,
                          double lsum, const dp_train_progress *pr, double elapsed, int report_nonprivate,
                          int private_test) {
    if (!report_nonprivate) /* statistics of the private data that epsilon does not cover: not written */
        lcount = 0, batch_sum = 0, lsum = 0;
    c->step = step;
    c->empty_batches = report_nonprivate ? r->empty_batches : 0;
    c->nonfinite_samples = report_nonprivate ? r->nonfinite_samples : 0;
    c->lcount = (long)lcount;
    c->batch_sum = batch_sum;
    c->lsum = lsum;
    c->test_accuracy = report_nonprivate || !private_test ? pr->test_accuracy : -1;
    c->test_loss = report_nonprivate || !private_test ? pr->test_loss : 0;
    c->elapsed = elapsed;
}

static dp_status write_checkpoint(ckpt_writer *w, dp_optim *opt, const dp_accountant *acc, const dp_rng *rs,
                                  const dp_rng *rn, const dp_rng *rd) {
    dp_checkpoint_info *c = &w->info;
    c->optim_steps = dp_optim_steps(opt);
    if (c->secure) {
        /* noise, sampling and dropout came from the OS CSPRNG: nothing of it is written (a
         * resumed run draws fresh noise); the fields hold a fixed placeholder */
        dp_rng_seed(&c->rng_sampling, 0);
        c->rng_noise = c->rng_dropout = c->rng_sampling;
    } else {
        c->rng_sampling = *rs;
        c->rng_noise = *rn;
        c->rng_dropout = *rd;
    }
    size_t len = dp_accountant_history_len(acc);
    c->acc_len = len;
    c->acc_q = malloc(sizeof(double) * (len ? len : 1));
    c->acc_sigma = malloc(sizeof(double) * (len ? len : 1));
    c->acc_steps = malloc(sizeof(long) * (len ? len : 1));
    dp_status st;
    if (!c->acc_q || !c->acc_sigma || !c->acc_steps) st = dp_fail(DP_ERR_NOMEM, "checkpoint: out of memory");
    else {
        for (size_t i = 0; i < len; i++) dp_accountant_history_get(acc, i, &c->acc_q[i], &c->acc_sigma[i], &c->acc_steps[i]);
        st = dp_checkpoint_write(w->path, c, w->t, w->nt);
        if (st != DP_OK) st = prefix_error(st, "--checkpoint-dir");
    }
    dp_checkpoint_info_free(c);
    return st;
}

#define CK_LOCK_FILE ".lock"

/* Takes an exclusive lock on DIR/.lock for the whole run: two runs started together on one
 * directory would otherwise overwrite each other's checkpoints (and remove each other's
 * temporary file, below). flock, because the kernel releases it when the process ends however
 * it ends, so a crashed run leaves no stale lock; the pid written into the file only names
 * the holder for the refusal. */
static dp_status lock_dir(ckpt_writer *w, const char *dir) {
    char path[4200], pid[32] = "";
    snprintf(path, sizeof path, "%s/%s", dir, CK_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return dp_fail(DP_ERR_IO, "--checkpoint-dir %s: cannot open the lock file %s: %s", dir, path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        ssize_t k = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        if (e != EWOULDBLOCK)
            return dp_fail(DP_ERR_IO, "--checkpoint-dir %s: cannot lock %s: %s", dir, path, strerror(e));
        pid[k > 0 ? k : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        return dp_fail(DP_ERR_INVALID,
                       "--checkpoint-dir %s: in use by another run (pid %s holds %s); wait until it ends, or use "
                       "another directory", dir, *pid ? pid : "unknown", path);
    }
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return dp_fail(DP_ERR_IO, "--checkpoint-dir %s: cannot write the lock file %s: %s", dir, path, strerror(e));
    }
    w->lock_fd = fd;
    return DP_OK;
}

/* Prepares the writer: creates the directory, locks it, refuses to replace another run's
 * checkpoint (unless forced or it is the one being resumed), lists the tensors. */
static dp_status writer_init(ckpt_writer *w, const dp_train_params *p, dp_model *m, dp_optim *opt, size_t *perm,
                             size_t n, int64_t *shards_val, float *ema) {
    if (mkdir(p->checkpoint_dir, 0777) != 0 && errno != EEXIST)
        return dp_fail(DP_ERR_IO, "--checkpoint-dir %s: cannot create it: %s", p->checkpoint_dir, strerror(errno));
    struct stat sb;
    if (stat(p->checkpoint_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return dp_fail(DP_ERR_IO, "--checkpoint-dir %s: not a directory", p->checkpoint_dir);
    int len = snprintf(w->path, sizeof w->path, "%s/%s", p->checkpoint_dir, DP_CHECKPOINT_FILE);
    if (len < 0 || (size_t)len >= sizeof w->path) return dp_fail(DP_ERR_RANGE, "--checkpoint-dir: path too long");
    dp_status st = lock_dir(w, p->checkpoint_dir); /* before anything in the directory is looked at */
    if (st != DP_OK) return st;
    if (access(w->path, F_OK) == 0 && !p->force) {
        int same = 0;
        if (p->resume) {
            char rp[4096], a[4096], b[4096];
            if (dp_checkpoint_path(p->resume, rp, sizeof rp) == DP_OK && realpath(rp, a) && realpath(w->path, b))
                same = !strcmp(a, b);
        }
        if (!same)
            return dp_fail(DP_ERR_INVALID,
                           "--checkpoint-dir %s: already holds a checkpoint of another run (%s); continue it with "
                           "--resume %s, or pass --force to replace it",
                           p->checkpoint_dir, w->path, p->checkpoint_dir);
    }
    /* temporary files left by a crash in the middle of a write: never the checkpoint itself */
    DIR *dir = opendir(p->checkpoint_dir);
    if (dir) {
        struct dirent *e;
        const char *pre = DP_CHECKPOINT_FILE ".tmp";
        while ((e = readdir(dir)) != NULL)
            if (!strncmp(e->d_name, pre, strlen(pre))) {
                char tmp[4096 + 256];
                snprintf(tmp, sizeof tmp, "%s/%s", p->checkpoint_dir, e->d_name);
                (void)unlink(tmp);
            }
        closedir(dir);
    }
    int nm = dp_model_num_tensors(m);
    w->t = calloc((size_t)nm + 4, sizeof *w->t);
    if (!w->t) return dp_fail(DP_ERR_NOMEM, "checkpoint: out of memory");
    st = dp_model_st_tensors(m, w->t);
    if (st != DP_OK) return st;
    w->nt = nm;
    size_t k = dp_optim_state_floats(opt);
    if (k) w->t[w->nt++] = (dp_st_tensor){ST_OPTIM, DP_ST_F32, 1, {(int64_t)k}, dp_optim_state(opt)};
    if (p->no_dp) w->t[w->nt++] = (dp_st_tensor){ST_PERM, DP_ST_I64, 1, {(int64_t)n}, perm};
    if (shards_val[0] > 1) w->t[w->nt++] = (dp_st_tensor){ST_SHARDS, DP_ST_I64, 1, {1}, shards_val};
    if (ema) w->t[w->nt++] = (dp_st_tensor){ST_EMA, DP_ST_F32, 1, {(int64_t)dp_model_num_params(m)}, ema};
    return DP_OK;
}

/* Restores the model, optimizer, sampler permutation and accountant from a checkpoint whose
 * configuration has been checked. */
static dp_status restore_state(const dp_safetensors *s, const dp_checkpoint_info *c, dp_model *m, dp_optim *opt,
                               dp_accountant *acc, size_t *perm, size_t n, int no_dp, long total_steps) {
    const char *what = dp_safetensors_what(s);
    dp_status st;
    if (c->step > total_steps)
        return dp_fail(DP_ERR_INVALID, "--resume %s: the checkpoint is at step %ld but this run has only %ld steps",
                       what, c->step, total_steps);
    if (c->optim_steps != c->step)
        return dp_fail(DP_ERR_FORMAT, "%s: optimizer step count %ld differs from the step %ld", what, c->optim_steps,
                       c->step);
    long acc_total = 0;
    for (size_t i = 0; i < c->acc_len; i++) acc_total += c->acc_steps[i];
    if (!no_dp && acc_total != c->step)
        return dp_fail(DP_ERR_FORMAT, "%s: accountant history holds %ld steps, the checkpoint is at step %ld", what,
                       acc_total, c->step);
    if ((st = dp_model_from_safetensors(m, s, ST_PREFIX)) != DP_OK) return st;
    size_t k = dp_optim_state_floats(opt);
    dp_st_dtype dt;
    const void *data;
    size_t count;
    if (k) {
        if ((st = dp_safetensors_find(s, ST_OPTIM, &dt, NULL, NULL, &data, &count)) != DP_OK) return st;
        if (dt != DP_ST_F32 || count != k)
            return dp_fail(DP_ERR_FORMAT, "%s: tensor '%s': %s x %zu, expected F32 x %zu", what, ST_OPTIM,
                           dp_st_dtype_name(dt), count, k);
        memcpy(dp_optim_state(opt), data, k * sizeof(float));
    } else if (dp_safetensors_find(s, ST_OPTIM, NULL, NULL, NULL, NULL, &count) == DP_OK && count) {
        return dp_fail(DP_ERR_FORMAT, "%s: tensor '%s' present but this optimizer has no state", what, ST_OPTIM);
    }
    dp_clear_error();
    dp_optim_set_steps(opt, c->optim_steps);
    if (no_dp) {
        if ((st = dp_safetensors_find(s, ST_PERM, &dt, NULL, NULL, &data, &count)) != DP_OK) return st;
        if (dt != DP_ST_I64 || count != n)
            return dp_fail(DP_ERR_FORMAT, "%s: tensor '%s': %s x %zu, expected I64 x %zu", what, ST_PERM,
                           dp_st_dtype_name(dt), count, n);
        unsigned char *seen = calloc(n ? n : 1, 1);
        if (!seen) return dp_fail(DP_ERR_NOMEM, "%s: out of memory", what);
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (const char *)data + 8 * i, 8);
            if (v < 0 || (uint64_t)v >= n || seen[v]) {
                free(seen);
                return dp_fail(DP_ERR_FORMAT, "%s: tensor '%s': entry %zu (%lld) breaks the permutation", what, ST_PERM,
                               i, (long long)v);
            }
            seen[v] = 1;
            perm[i] = (size_t)v;
        }
        free(seen);
    }
    /* the accountant is rebuilt from the checkpoint's (q, sigma, step), which this run continues
     * with (compare_config), rather than replayed from the stored history (which
     * dp_checkpoint_info_read checked to be exactly this): the reported epsilon then rests on
     * the configuration itself, not on a second copy of it */
    if (!no_dp && (st = dp_accountant_step(acc, c->q, c->sigma, c->step)) != DP_OK) return st;
    return DP_OK;
}

/* epsilon spent so far at p->delta, by the chosen accountant */
static dp_status spent_epsilon(const dp_accountant *acc, const dp_train_params *p, double *eps) {
    dp_epsilon_report er;
    dp_status st = dp_accountant_epsilon_kind(acc, p->accountant, p->delta, &er);
    if (st == DP_OK) *eps = er.epsilon;
    return st;
}

/* Whether the caller asked to stop (p->stop). With several ranks the request is summed over
 * them, so that one rank's signal stops every rank at the same step: a rank that left alone
 * would leave the others waiting in the next collective. */
static dp_status stop_requested(const dp_train_params *p, const dp_train_comm *comm, int *stop) {
    *stop = p->stop && *p->stop;
    if (!p->stop || !comm) return DP_OK;
    double v = *stop;
    dp_status st = comm->sum_f64(comm->user, &v, 1);
    if (st == DP_OK) *stop = v > 0;
    return st;
}

/* DP_ERR_INTERRUPTED: where the run stopped, what it spent, and where its steps are kept */
static dp_status interrupted(const dp_train_params *p, const dp_accountant *acc, long step, long step0, long steps,
                             int ep, int s, int spe, const char *ckpath) {
    char eps[96] = "", kept[4300];
    double e;
    if (!p->no_dp && spent_epsilon(acc, p, &e) == DP_OK)
        snprintf(eps, sizeof eps, "; epsilon spent so far %.3f (delta %g)", e, p->delta);
    if (ckpath) snprintf(kept, sizeof kept, "the checkpoint %s holds it", ckpath);
    else if (step == step0) snprintf(kept, sizeof kept, "no step was taken");
    else if (p->checkpoint_dir) snprintf(kept, sizeof kept, "rank 0's checkpoint in %s holds it", p->checkpoint_dir);
    else snprintf(kept, sizeof kept, "no checkpoint directory: the steps done are not saved");
    return dp_fail(DP_ERR_INTERRUPTED,
                   "stopped on request after %ld of %ld steps (epoch %d: %d of its %d steps done)%s; %s", step, steps,
                   ep, s, spe, eps, kept);
}

dp_status dp_train(dp_model *m, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *p,
                   dp_train_result *result) {
    return dp__train(m, tr, te, p, NULL, result);
}

dp_status dp__train(dp_model *m, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *p,
                    const dp__train_test *test, dp_train_result *result) {
    static const dp__train_test no_test = {0, 0, NULL};
    const dp__train_test *t = test ? test : &no_test;
    const size_t N = tr->n, dim = tr->dim;
    const size_t np = dp_model_num_params(m);
    if (N == 0) return dp_fail(DP_ERR_INVALID, "training set is empty");
    if (dim != dp_model_input_size(m))
        return dp_fail(DP_ERR_INVALID, "training set rows have %zu features but the model expects %zu", dim,
                       dp_model_input_size(m));
    if (te && te->dim != dim)
        return dp_fail(DP_ERR_INVALID, "test set rows have %zu features, training set %zu", te->dim, dim);
    if (p->epochs < 1) return dp_fail(DP_ERR_RANGE, "--epochs %d: must be >= 1", p->epochs);
    if (p->expected_batch < 1 || (size_t)p->expected_batch > N)
        return dp_fail(DP_ERR_RANGE, "--batch-size %d: must be in 1..%zu (the training set size)", p->expected_batch, N);
    if (p->physical_batch < 0) return dp_fail(DP_ERR_RANGE, "--physical-batch %d: must be >= 0", p->physical_batch);
    if (!(p->ema_decay >= 0 && p->ema_decay < 1))
        return dp_fail(DP_ERR_RANGE, "--ema %g: the decay must be in [0, 1) (0: no averaging)", p->ema_decay);
    if (p->checkpoint_every < 0)
        return dp_fail(DP_ERR_RANGE, "--checkpoint-every %ld: must be >= 0", p->checkpoint_every);
    if (!p->no_dp) {
        if (!(p->max_grad_norm > 0) || !isfinite(p->max_grad_norm))
            return dp_fail(DP_ERR_RANGE, "--max-grad-norm %g: must be a positive finite number", p->max_grad_norm);
        if (!(p->delta > 0 && p->delta < 1)) return dp_fail(DP_ERR_RANGE, "--delta %g: must be in (0, 1)", p->delta);
        if (!(p->delta < 1.0 / (double)N))
            return dp_fail(DP_ERR_RANGE, "--delta %g: must be below 1/n = %g, or the guarantee is void", p->delta,
                           1.0 / (double)N);
        /* GDP can underestimate: it may neither choose sigma nor be the run's epsilon */
        if (p->accountant == DP_ACCT_GDP)
            return dp_fail(DP_ERR_INVALID, "accountant gdp: a central-limit approximation that can underestimate "
                                           "epsilon, not a bound; a run calibrates and reports with prv, rdp or pld");
    }
    const dp_train_comm *comm = p->comm && p->comm->size > 1 ? p->comm : NULL;
    if (p->comm && (p->comm->size < 1 || p->comm->rank < 0 || p->comm->rank >= p->comm->size || !p->comm->sum_f32 ||
                    !p->comm->sum_f64))
        return dp_fail(DP_ERR_INVALID, "communicator: rank %d of %d, or a missing sum function", p->comm->rank,
                       p->comm->size);
    if (t->shards < 0) return dp_fail(DP_ERR_RANGE, "shards %d: must be >= 0", t->shards);
    if (comm && t->shards > 1 && t->shards != comm->size)
        return dp_fail(DP_ERR_INVALID, "shards %d: differs from the %d ranks", t->shards, comm->size);
    if (comm && p->no_dp) return dp_fail(DP_ERR_INVALID, "--no-dp: not supported with several ranks (MPI)");
    if (t->shards > 1 && p->no_dp) return dp_fail(DP_ERR_INVALID, "--no-dp: not supported with shards");
    /* S > 1: sharded sampling; this process samples shards [sh_lo, sh_hi) */
    const int S = comm ? comm->size : (t->shards > 1 ? t->shards : 1);
    const int report = p->report_nonprivate || p->no_dp; /* a non-private run has nothing to hide */
    const int sh_lo = comm ? comm->rank : 0, sh_hi = comm ? comm->rank + 1 : S;
    int64_t shards_val[1] = {S};
    const double q = (double)p->expected_batch / (double)N;
    const int spe = dp_train_steps_per_epoch(N, p->expected_batch);
    const long steps = (long)spe * p->epochs;
    double sigma = 0;
    dp_status st = DP_OK;
    dp_accountant *acc = NULL;
    dp_optim *opt = NULL;
    dp_csprng *crng = NULL;
    size_t *idx = NULL;
    dp_step sp;
    memset(&sp, 0, sizeof sp);
    dp_safetensors *ck = NULL;
    float *ema = NULL, *ema_hold = NULL; /* --ema: the average, and the live parameters while it is evaluated */
    dp_checkpoint_info cki;
    memset(&cki, 0, sizeof cki);
    ckpt_writer w;
    memset(&w, 0, sizeof w);
    w.lock_fd = -1;
    int resumed = 0;
    if (p->resume) {
        char path[4096];
        if ((st = dp_checkpoint_path(p->resume, path, sizeof path)) != DP_OK) return st;
        if ((st = dp_safetensors_load(path, &ck)) != DP_OK) return prefix_error(st, "--resume");
        if ((st = dp_checkpoint_info_read(ck, &cki)) != DP_OK) {
            st = prefix_error(st, "--resume");
            goto done;
        }
        resumed = 1;
    }
    if (!p->no_dp) {
        if (p->noise_multiplier > 0) sigma = p->noise_multiplier;
        else if (resumed && cki.target_epsilon == p->target_epsilon) sigma = cki.sigma; /* as calibrated then */
        else if ((st = dp_calibrate_sigma_kind(p->accountant, p->target_epsilon, p->delta, q, steps, 0.01, &sigma)) != DP_OK)
            goto done;
    }
    uint64_t checksum = 0;
    /* only the ranks compare it, in memory: a checkpoint holds no fingerprint of the data (any
     * function of every record would tell a candidate for the last one apart) */
    if (comm) checksum = dp_checkpoint_data_checksum(tr->x, tr->y, N, dim);
    dp_checkpoint_info cur;
    fill_config(&cur, m, tr, p, sigma, q, checksum);
    if (comm && (st = check_same_config(comm, &cur, steps)) != DP_OK) goto done;
    if (resumed && (st = compare_config(dp_safetensors_what(ck), &cki, &cur, p->force)) != DP_OK) goto done;
    if (resumed && !p->no_dp && !(p->noise_multiplier > 0)) {
        /* sigma was calibrated: recompute it for the checkpoint's own step count rather than
         * trust the file (its checksum has no key, so an edit can be resealed) */
        double again = 0;
        const long ck_steps = (long)spe * cki.epochs;
        if ((st = dp_calibrate_sigma_kind(p->accountant, p->target_epsilon, p->delta, q, ck_steps, 0.01, &again)) !=
            DP_OK)
            goto done;
        if (again != cki.sigma) {
            st = dp_fail(DP_ERR_INVALID,
                         "--resume %s: the checkpoint's sigma %.17g is not what --epsilon %g calibrates to for its %ld "
                         "steps with the %s accountant (%.17g): the checkpoint was edited, or made with another "
                         "--accountant; refusing (the privacy accounting depends on it; --force cannot override this)",
                         dp_safetensors_what(ck), cki.sigma, p->target_epsilon, ck_steps,
                         dp_accountant_kind_name(p->accountant), again);
            goto done;
        }
    }
    if (resumed) {
        int64_t ck_shards = 1;
        dp_st_dtype sdt;
        const void *sdata;
        size_t scount;
        if (dp_safetensors_find(ck, ST_SHARDS, &sdt, NULL, NULL, &sdata, &scount) == DP_OK && sdt == DP_ST_I64 &&
            scount == 1)
            memcpy(&ck_shards, sdata, 8);
        dp_clear_error();
        if (ck_shards != S) {
            st = dp_fail(DP_ERR_INVALID,
                         "--resume %s: the checkpoint was made with %lld rank(s) (MPI processes or shards), this run has "
                         "%d; resume on the same number of ranks",
                         dp_safetensors_what(ck), (long long)ck_shards, S);
            goto done;
        }
    }
    dp_train_result r;
    memset(&r, 0, sizeof r);
    r.sigma = sigma;
    r.q = q;
    r.delta = p->delta;
    r.steps_per_epoch = spe;
    if ((st = dp_accountant_create(&acc)) != DP_OK) goto done;
    if ((st = dp_optim_create(&p->optim, np, &opt)) != DP_OK) goto done;
    if (!(idx = dp_alloc(sizeof(size_t) * N))) {
        st = DP_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < N; i++) idx[i] = i;
    /* Noise, Poisson sampling and dropout: from the OS-seeded CSPRNG unless the caller chose
     * a noise seed. Dropout masks are drawn by batch position, so they must be as secret as the
     * sample: known masks would make one example's presence move the others' gradients. */
    if (!p->no_dp && !p->noise_seeded && (st = dp_csprng_create(&crng)) != DP_OK) goto done;
    dp_rng root, rs, rn, rd;
    dp_rng_seed(&root, p->noise_seeded && !p->no_dp ? p->noise_seed : p->seed);
    dp_rng_split(&root, &rs); /* sampling */
    dp_rng_split(&root, &rn); /* noise */
    dp_rng_split(&root, &rd); /* dropout */
    long step = 0;
    double batch_sum = 0, lsum0 = 0, elapsed0 = 0;
    size_t lcount0 = 0;
    dp_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.test_accuracy = -1;
    if (resumed) {
        if ((st = restore_state(ck, &cki, m, opt, acc, idx, N, p->no_dp, steps)) != DP_OK) goto done;
        if (!crng) { /* a secure run's streams were never written: fresh ones go on */
            rs = cki.rng_sampling;
            rn = cki.rng_noise;
            rd = cki.rng_dropout;
        }
        step = cki.step;
        batch_sum = cki.batch_sum;
        r.empty_batches = cki.empty_batches;
        r.nonfinite_samples = cki.nonfinite_samples;
        lsum0 = cki.lsum;
        lcount0 = (size_t)cki.lcount;
        elapsed0 = cki.elapsed;
        pr.test_accuracy = cki.test_accuracy;
        pr.test_loss = cki.test_loss;
        if (!p->no_dp && (st = spent_epsilon(acc, p, &pr.epsilon)) != DP_OK) goto done;
    }
    if (p->ema_decay > 0) {
        /* the average starts at the (initial or resumed) parameters; a checkpoint's is taken
         * when it has one (a run resumed with --ema added under --force starts it afresh) */
        if (!(ema = dp_alloc(sizeof(float) * (np ? np : 1))) || !(ema_hold = dp_alloc(sizeof(float) * (np ? np : 1)))) {
            st = dp_fail(DP_ERR_NOMEM, "--ema: out of memory");
            goto done;
        }
        memcpy(ema, dp_model_params(m), sizeof(float) * np);
        dp_st_dtype dt;
        const void *data;
        size_t count;
        if (resumed && dp_safetensors_find(ck, ST_EMA, &dt, NULL, NULL, &data, &count) == DP_OK && dt == DP_ST_F32 &&
            count == np)
            memcpy(ema, data, sizeof(float) * np);
        dp_clear_error();
    }
    dp_safetensors_destroy(ck);
    ck = NULL;
    dp_checkpoint_info_free(&cki);
    const int writer = !comm || comm->rank == 0; /* checkpoints from rank 0 only */
    if (p->checkpoint_dir && writer) {
        if ((st = writer_init(&w, p, m, opt, idx, N, shards_val, ema)) != DP_OK) goto done;
        w.info = cur;
    }
    float *params = dp_model_params(m);
    sp.model = m;
    sp.opt = opt;
    sp.acc = p->no_dp ? NULL : acc;
    sp.comm = comm;
    sp.no_dp = p->no_dp;
    sp.clip = (dp_clip_params){p->clipping, p->max_grad_norm, p->mem_budget};
    sp.sigma = sigma;
    sp.q = q;
    sp.expected = q * (double)N;
    sp.physical_batch = p->physical_batch;
    sp.row = dataset_row;
    sp.row_user = (void *)tr;
    sp.crng = crng;
    sp.rn = &rn;
    sp.rd = &rd;
    sp.noise_scale = t->noise == 1 ? 0.0 : 1.0;
    sp.zero_clipped = t->noise == 2;
    if (t->dump_released && writer) {
        sp.on_released = dump_released;
        sp.hook_user = (void *)t->dump_released;
    }
    const double t0 = dp__now_s() - elapsed0;
    dp_mem_reset_peak();
    pr.epochs = p->epochs;
    pr.steps = steps;
    pr.steps_per_epoch = spe;
    const long step0 = step;
    long ck_step = -1; /* the step of the last checkpoint this call wrote */
    for (int ep = (int)(step0 / spe) + 1; ep <= p->epochs; ep++) {
        const int s0 = ep == (int)(step0 / spe) + 1 ? (int)(step0 % spe) : 0;
        double lsum = s0 ? lsum0 : 0;
        size_t lcount = s0 ? lcount0 : 0;
        if (p->no_dp && s0 == 0) shuffle_prefix(idx, N, N, &rs);
        for (int s = s0; s < spe; s++, step++) {
            int stop = 0;
            if (p->stop && (st = stop_requested(p, comm, &stop)) != DP_OK) goto done;
            if (stop) {
                /* a step boundary: the state is exactly what a checkpoint holds. At an epoch's
                 * start the epoch-end checkpoint already holds it (and the non-private baseline's
                 * permutation has been reshuffled since), and before this call's first step the
                 * state is the one it started from: a checkpoint is written only mid-epoch */
                if (p->checkpoint_dir && writer && step > step0 && ck_step != step) {
                    fill_counters(&w.info, step, &r, lcount, batch_sum, lsum, &pr, dp__now_s() - t0, report, p->test_private);
                    if ((st = write_checkpoint(&w, opt, acc, &rs, &rn, &rd)) != DP_OK) goto done;
                    ck_step = step;
                }
                st = interrupted(p, acc, step, step0, steps, ep, s, spe,
                                 p->checkpoint_dir && writer && ck_step == step ? w.path : NULL);
                goto done;
            }
            size_t count = 0, first = 0;
            dp_mem_stage("sample");
            if (S > 1) {
                /* shard sh holds the examples sh, sh + S, ...; each sampled with its own stream */
                for (int sh = sh_lo; sh < sh_hi; sh++) {
                    size_t nsh = N > (size_t)sh ? (N - (size_t)sh + (size_t)S - 1) / (size_t)S : 0, c = 0;
                    dp_rng sr;
                    shard_rng(&sr, p->noise_seed, step, sh, 0x73616d706c65ULL);
                    if (nsh) {
                        if (crng) st = dp_secure_poisson_sample(crng, nsh, q, idx + count, &c);
                        else st = dp_poisson_sample(&sr, nsh, q, idx + count, &c);
                        if (st != DP_OK) goto done;
                    }
                    for (size_t k = 0; k < c; k++) idx[count + k] = (size_t)sh + (size_t)S * idx[count + k];
                    count += c;
                }
                if (comm && !crng) shard_rng(&rd, p->noise_seed, step, comm->rank, 0x64726f70ULL); /* this rank's dropout */
            } else if (p->no_dp) {
                first = (size_t)s * (size_t)p->expected_batch % N;
                count = N - first < (size_t)p->expected_batch ? N - first : (size_t)p->expected_batch;
            } else if (crng) {
                if ((st = dp_secure_poisson_sample(crng, N, q, idx, &count)) != DP_OK) goto done;
            } else {
                if ((st = dp_poisson_sample(&rs, N, q, idx, &count)) != DP_OK) goto done;
            }
            dp_step_stats ss;
            if ((st = dp_step_run(&sp, idx + first, count, &ss)) != DP_OK) {
                char where[64];
                snprintf(where, sizeof where, "step %ld (epoch %d)", step + 1, ep);
                st = prefix_error(st, where);
                goto done;
            }
            count = ss.count;
            lsum += ss.lsum;
            lcount += ss.lcount;
            r.nonfinite_samples += ss.nonfinite;
            batch_sum += (double)count;
            if (count == 0) r.empty_batches++;
            if (comm && (st = check_replicas(comm, params, np, step + 1)) != DP_OK) goto done;
            if (ema) { /* post-processing of the released iterates: free in privacy */
                const double d = p->ema_decay;
#pragma omp parallel for schedule(static) if (np > 65536)
                for (size_t j = 0; j < np; j++) ema[j] = (float)(d * ema[j] + (1.0 - d) * params[j]);
            }
            pr.epoch = ep;
            pr.step = step + 1;
            pr.step_in_epoch = s + 1;
            pr.train_loss = !report ? NAN : lcount ? lsum / (double)lcount : 0;
            pr.elapsed = dp__now_s() - t0;
            pr.epoch_end = 0;
            /* a checkpoint every checkpoint_every steps; the epoch's last step gets its own below,
             * after the evaluation, so a checkpoint at an epoch boundary has always evaluated.
             * Written before anything of the step is released (the progress call), so a killed
             * run never redoes a step whose results were seen. */
            if (p->checkpoint_dir && writer && p->checkpoint_every > 0 && (step + 1) % p->checkpoint_every == 0 && s + 1 < spe) {
                fill_counters(&w.info, step + 1, &r, lcount, batch_sum, lsum, &pr, dp__now_s() - t0, report, p->test_private);
                if ((st = write_checkpoint(&w, opt, acc, &rs, &rn, &rd)) != DP_OK) goto done;
                ck_step = step + 1;
            }
            /* the epoch's last step is reported before the epoch's checkpoint: nothing of the
             * data is in it unless report_nonprivate (train_loss is NaN, no evaluation yet) */
            if (p->progress) p->progress(p->progress_user, &pr);
        }
        dp_mem_stage("evaluate");
        if (ema) { /* the average is what is evaluated (and, at the end, returned) */
            memcpy(ema_hold, params, sizeof(float) * np);
            memcpy(params, ema, sizeof(float) * np);
        }
        st = te ? dp_evaluate(m, te, p->eval_batch, &pr.test_accuracy, &pr.test_loss) : DP_OK;
        if (ema) memcpy(params, ema_hold, sizeof(float) * np);
        if (st != DP_OK) goto done;
        if (!p->no_dp && (st = spent_epsilon(acc, p, &pr.epsilon)) != DP_OK) goto done;
        pr.elapsed = dp__now_s() - t0;
        pr.epoch_end = 1;
        if (p->checkpoint_dir && writer) { /* on disk before the epoch's figures are released */
            fill_counters(&w.info, step, &r, lcount, batch_sum, lsum, &pr, dp__now_s() - t0, report, p->test_private);
            if ((st = write_checkpoint(&w, opt, acc, &rs, &rn, &rd)) != DP_OK) goto done;
            ck_step = step;
        }
        if (p->progress) p->progress(p->progress_user, &pr);
    }
    if (!p->no_dp && (st = spent_epsilon(acc, p, &r.epsilon)) != DP_OK) goto done;
    if (ema) memcpy(params, ema, sizeof(float) * np); /* the model returned is the average */
    r.test_accuracy = te ? pr.test_accuracy : -1;
    r.test_loss = te ? pr.test_loss : 0;
    r.steps = step;
    r.seconds = dp__now_s() - t0;
    r.mean_batch = step ? batch_sum / (double)step : 0;
    if (!report) { /* statistics of the private data that epsilon does not cover */
        r.mean_batch = 0;
        r.empty_batches = 0;
        r.nonfinite_samples = 0;
    }
    r.peak_bytes = dp_mem_get().peak_bytes;
    *result = r;
done:
    dp_safetensors_destroy(ck);
    dp_checkpoint_info_free(&cki);
    free(w.t);
    if (w.lock_fd >= 0) close(w.lock_fd); /* releases the directory's lock, on every path */
    dp_csprng_destroy(crng);
    dp_free(ema);
    dp_free(ema_hold);
    dp_accountant_destroy(acc);
    dp_optim_destroy(opt);
    dp_free(idx);
    dp_step_free(&sp);
    return st;
}
