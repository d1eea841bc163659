/* train_checkpoint.c: dp_train's checkpoints (see train_checkpoint.h, dpsgd/io.h for the
 * file's fields, docs/reliability.md): the configuration a checkpoint records and the checks
 * on resume, the model's structure record, the writer, restoring the state. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* realpath */
#include "train/train_checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h> /* flock */
#include <sys/stat.h>
#include <unistd.h>

#include "dpsgd/privacy.h"
#include "core/internal.h"

/* tensors beside the model's: "state." names never collide with a parameter's */
#define ST_PREFIX "state."
#define ST_OPTIM "state.optimizer"
#define ST_PERM "state.sampler_perm"
#define ST_EMA "state.ema"
#define ST_SHARDS "state.shards"

/* ---- the model's structure ------------------------------------------------------------------
 * A checkpoint records the model as text built from the public accessors (dpsgd/nn.h), one
 * line for the input and one per layer, its fields separated by "; " and the name last:
 *   input 784 features                      (token models: input 32 token ids, vocabulary 100)
 *   layer 0: kind conv2d; inputs input; output 16x13x13; parameters 1040; frozen no; name 0
 * A resume compares the records line by line and field by field, and names the first layer
 * and field that differ. (Format 2 files hold dp_model_describe text instead; see below.) */

/* the record of m, malloc'd; NULL when out of memory */
static char *model_record(const dp_model *m) {
    const int L = dp_model_num_layers(m);
    size_t cap = 128;
    for (int i = 0; i < L; i++) cap += 256 + strlen(dp_model_layer_name(m, i));
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t o = 0;
    if (dp_model_input_is_tokens(m))
        o += (size_t)snprintf(buf, cap, "input %zu token ids, vocabulary %d\n", dp_model_input_size(m), dp_model_vocab(m));
    else
        o += (size_t)snprintf(buf, cap, "input %zu features\n", dp_model_input_size(m));
    for (int i = 0; i < L && o < cap; i++) {
        char inputs[64] = "", shape[96] = "";
        int in[3];
        int64_t sh[3];
        const int ni = dp_model_layer_inputs(m, i, in), ns = dp_model_layer_shape(m, i, sh);
        for (int k = 0, u = 0; k < ni; k++) /* at most 3 of 12 bytes each */
            u += in[k] < 0 ? snprintf(inputs + u, sizeof inputs - (size_t)u, "%sinput", k ? "," : "")
                           : snprintf(inputs + u, sizeof inputs - (size_t)u, "%s%d", k ? "," : "", in[k]);
        for (int k = 0, u = 0; k < ns; k++) /* at most 3 of 21 bytes each */
            u += snprintf(shape + u, sizeof shape - (size_t)u, "%s%lld", k ? "x" : "", (long long)sh[k]);
        o += (size_t)snprintf(buf + o, cap - o, "layer %d: kind %s; inputs %s; output %s; parameters %zu; frozen %s; name %s\n",
                              i, dp_layer_kind_name(dp_model_layer_kind(m, i)), inputs, shape,
                              dp_model_layer_params(m, i, NULL), dp_model_layer_frozen(m, i) ? "yes" : "no",
                              dp_model_layer_name(m, i));
    }
    DP_ASSERT(o < cap);
    return buf;
}

/* the line at *p (without its newline) into [*s, *s + *n), *p stepped past it; 0 at the end */
static int next_line(const char **p, const char **s, int *n) {
    if (!**p) return 0;
    *s = *p;
    *n = (int)strcspn(*p, "\n");
    *p += *n + ((*p)[*n] == '\n');
    return 1;
}

typedef struct {
    const char *key, *val;
    int nkey, nval;
} field_span;

/* A layer line [s, s + n) into its label ("layer 3", *nlabel bytes) and fields (key, value),
 * at most cap; returns how many, 0 when the line has no label (the input line) */
static int split_fields(const char *s, int n, int *nlabel, field_span *f, int cap) {
    const char *e = s + n, *c = memchr(s, ':', (size_t)n);
    if (!c || c + 2 > e) return 0;
    *nlabel = (int)(c - s);
    int k = 0;
    for (const char *p = c + 2; p < e && k < cap; k++) {
        const char *sp = memchr(p, ' ', (size_t)(e - p)), *end = e;
        if (!sp) return 0;
        if (strncmp(p, "name ", 5)) { /* the name, last, may hold anything; the others end at "; " */
            for (const char *q = sp; q + 1 < e; q++)
                if (q[0] == ';' && q[1] == ' ') {
                    end = q;
                    break;
                }
        }
        f[k] = (field_span){p, sp + 1, (int)(sp - p), (int)(end - sp - 1)};
        p = end + 2;
    }
    return k;
}

/* two lines that differ: the first field that does, else the whole lines */
static dp_status model_difference(const char *path, const char *a, int na, const char *b, int nb) {
    field_span fa[8], fb[8];
    int la = 0, lb = 0;
    const int ka = split_fields(a, na, &la, fa, 8), kb = split_fields(b, nb, &lb, fb, 8);
    if (ka && ka == kb && la == lb && !memcmp(a, b, (size_t)lb)) {
        const field_span *kind = NULL, *name = NULL;
        for (int i = 0; i < kb; i++) {
            if (fb[i].nkey == 4 && !memcmp(fb[i].key, "kind", 4)) kind = &fb[i];
            if (fb[i].nkey == 4 && !memcmp(fb[i].key, "name", 4)) name = &fb[i];
        }
        for (int i = 0; i < kb; i++)
            if (fa[i].nkey == fb[i].nkey && !memcmp(fa[i].key, fb[i].key, (size_t)fb[i].nkey) &&
                (fa[i].nval != fb[i].nval || memcmp(fa[i].val, fb[i].val, (size_t)fb[i].nval)))
                return dp_fail(DP_ERR_INVALID,
                               "resume %s: the checkpoint's model differs from this run's at %.*s (%.*s, name "
                               "'%.*s'): %.*s %.*s in the checkpoint, %.*s in this run; refusing",
                               path, lb, b, kind ? kind->nval : 0, kind ? kind->val : "", name ? name->nval : 0,
                               name ? name->val : "", fb[i].nkey, fb[i].key, fa[i].nval, fa[i].val, fb[i].nval,
                               fb[i].val);
    }
    return dp_fail(DP_ERR_INVALID,
                   "resume %s: the checkpoint's model differs from this run's: '%.*s' in the checkpoint, '%.*s' "
                   "in this run; refusing",
                   path, na, a, nb, b);
}

/* The checkpoint's record ck against this run's cur: DP_OK when equal, else a refusal naming
 * the first layer and field that differ, or the layer counts. */
static dp_status compare_model(const char *path, const char *ck, const char *cur) {
    const char *a, *b;
    int na, nb;
    for (int line = 0;; line++) { /* line 0: the input; line i + 1: layer i */
        const int ha = next_line(&ck, &a, &na), hb = next_line(&cur, &b, &nb);
        if (ha && hb) {
            if (na != nb || memcmp(a, b, (size_t)na)) return model_difference(path, a, na, b, nb);
            continue;
        }
        if (ha == hb) return DP_OK;
        int layers_a = line - 1 + ha, layers_b = line - 1 + hb;
        while (ha && next_line(&ck, &a, &na)) layers_a++;
        while (hb && next_line(&cur, &b, &nb)) layers_b++;
        return dp_fail(DP_ERR_INVALID,
                       "resume %s: the checkpoint's model has %d layers, this run's %d (the first %d agree); "
                       "refusing",
                       path, layers_a, layers_b, line - 1);
    }
}

/* ---- the configuration ---------------------------------------------------------------------- */

dp_status dp__ckpt_config(dp_checkpoint_info *c, const dp_model *m, const dp_dataset *tr, const dp_train_params *p,
                          double sigma, double q, uint64_t checksum) {
    memset(c, 0, sizeof *c);
    if (!(c->model = model_record(m))) return dp_fail(DP_ERR_NOMEM, "checkpoint: out of memory");
    snprintf(c->data, sizeof c->data, "%s", p->data_id ? p->data_id : "");
    c->data_n = tr->n;
    c->data_dim = tr->dim;
    c->data_checksum = checksum;
    c->regression = tr->t != NULL;
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
    c->lr_schedule = p->lr_schedule;
    c->augmult = p->augmult;
    c->augment_pad = p->augmult ? p->augment_pad : 0; /* only what changes the run */
    c->augment_flip = p->augmult ? p->augment_flip : 0;
    c->noise_seed = p->noise_seeded ? p->noise_seed : 0;
    return DP_OK;
}

/* The checkpoint `ck` (from `path`) against this run's configuration `cur`. Differences that
 * change the privacy accounting (or make the state meaningless) are always refused; the rest
 * only without `force`. */
static dp_status compare_config(const char *path, const dp_checkpoint_info *ck, const dp_checkpoint_info *cur,
                                int force) {
#define NEVER(cond, what, fmt, a, b)                                                                                   \
    if (cond)                                                                                                          \
        return dp_fail(DP_ERR_INVALID,                                                                                 \
                       "resume %s: the checkpoint was made with " what " " fmt ", this run has " fmt                  \
                       "; refusing (the privacy accounting depends on it; force cannot override this)",               \
                       path, a, b)
#define UNLESS_FORCED(cond, what, fmt, a, b)                                                                           \
    if ((cond) && !force)                                                                                              \
        return dp_fail(DP_ERR_INVALID,                                                                                 \
                       "resume %s: the checkpoint was made with " what " " fmt ", this run has " fmt                  \
                       " (pass force to continue with the new value)",                                                \
                       path, a, b)
    NEVER(ck->data_n != cur->data_n, "training data of", "%llu examples", (unsigned long long)ck->data_n,
          (unsigned long long)cur->data_n);
    NEVER(ck->data_dim != cur->data_dim, "training data of", "%llu features", (unsigned long long)ck->data_dim,
          (unsigned long long)cur->data_dim);
    NEVER(ck->no_dp != cur->no_dp, "no_dp", "%s", ck->no_dp ? "on" : "off", cur->no_dp ? "on" : "off");
    if (ck->regression != cur->regression) /* another objective: the weights and optimizer state are another run's */
        return dp_fail(DP_ERR_INVALID, "resume %s: the checkpoint was trained with %s, this run has %s; refusing (force "
                       "cannot override this)", path, ck->regression ? "mse (regression targets)" : "cross-entropy (class labels)",
                       cur->regression ? "mse (regression targets)" : "cross-entropy (class labels)");
    NEVER(!cur->no_dp && ck->secure != cur->secure, "noise", "%s", ck->secure ? "from the OS CSPRNG" : "from noise_seed",
          cur->secure ? "from the OS CSPRNG" : "from noise_seed");
    if (!cur->no_dp) {
        NEVER(ck->max_grad_norm != cur->max_grad_norm, "max_grad_norm (C)", "%.17g", ck->max_grad_norm,
              cur->max_grad_norm);
        NEVER(ck->expected_batch != cur->expected_batch || ck->q != cur->q, "expected_batch", "%d (sample rate q)",
              ck->expected_batch, cur->expected_batch);
        NEVER(ck->delta != cur->delta, "delta", "%.17g", ck->delta, cur->delta);
        if ((ck->target_epsilon == 0) != (cur->target_epsilon == 0))
            return dp_fail(DP_ERR_INVALID,
                           "resume %s: the checkpoint's sigma %.17g was %s, this run %s; refusing (the privacy "
                           "accounting depends on it; force cannot override this)",
                           path, ck->sigma, ck->target_epsilon == 0 ? "given by noise_multiplier" : "calibrated to target_epsilon",
                           cur->target_epsilon == 0 ? "gives noise_multiplier" : "calibrates it to target_epsilon");
        NEVER(ck->target_epsilon != cur->target_epsilon, "target_epsilon", "%.17g", ck->target_epsilon, cur->target_epsilon);
        NEVER(cur->target_epsilon == 0 && ck->sigma != cur->sigma, "noise_multiplier (sigma)", "%.17g", ck->sigma,
              cur->sigma);
    } else {
        NEVER(ck->expected_batch != cur->expected_batch, "expected_batch", "%d", ck->expected_batch,
              cur->expected_batch);
    }
    UNLESS_FORCED(strcmp(ck->data, cur->data), "data_id", "'%s'", ck->data, cur->data);
    UNLESS_FORCED(ck->epochs != cur->epochs, "epochs", "%d", ck->epochs, cur->epochs);
    UNLESS_FORCED(ck->threads != cur->threads, "threads", "%d (results are bit-identical only for the same count)",
                  ck->threads, cur->threads);
    UNLESS_FORCED(ck->physical_batch != cur->physical_batch, "physical_batch", "%d", ck->physical_batch,
                  cur->physical_batch);
    UNLESS_FORCED(ck->clipping != cur->clipping, "clipping", "%s", dp_clip_mode_name((dp_clip_mode)ck->clipping),
                  dp_clip_mode_name((dp_clip_mode)cur->clipping));
    UNLESS_FORCED(ck->ema_decay != cur->ema_decay, "ema_decay", "%.17g", ck->ema_decay, cur->ema_decay);
    /* adaptive clipping changes how sigma is split, not sigma: the accounting stands either way */
    UNLESS_FORCED(ck->lr_schedule != cur->lr_schedule, "lr_schedule", "%s", ck->lr_schedule ? "cosine" : "constant",
                  cur->lr_schedule ? "cosine" : "constant");
    UNLESS_FORCED(ck->clip_quantile != cur->clip_quantile, "clip_quantile", "%.17g (0: off)", ck->clip_quantile,
                  cur->clip_quantile);
    UNLESS_FORCED(ck->clip_lr != cur->clip_lr, "clip_lr", "%.17g", ck->clip_lr, cur->clip_lr);
    UNLESS_FORCED(ck->clip_count_noise != cur->clip_count_noise, "clip_count_noise", "%.17g", ck->clip_count_noise,
                  cur->clip_count_noise);
    UNLESS_FORCED(ck->augmult != cur->augmult, "augmult", "%d", ck->augmult, cur->augmult);
    UNLESS_FORCED(ck->augment_pad != cur->augment_pad, "augment_pad", "%d", ck->augment_pad, cur->augment_pad);
    UNLESS_FORCED(ck->augment_flip != cur->augment_flip, "augment_flip", "%d", ck->augment_flip, cur->augment_flip);
    UNLESS_FORCED(ck->seed != cur->seed, "seed", "%llu", (unsigned long long)ck->seed, (unsigned long long)cur->seed);
    NEVER(ck->noise_seed != cur->noise_seed, "noise_seed", "%llu", (unsigned long long)ck->noise_seed,
          (unsigned long long)cur->noise_seed);
    NEVER(ck->optim.kind != cur->optim.kind, "optim.kind", "%s", dp_optim_name(ck->optim.kind),
          dp_optim_name(cur->optim.kind));
    UNLESS_FORCED(ck->optim.lr != cur->optim.lr, "lr", "%.17g", ck->optim.lr, cur->optim.lr);
    UNLESS_FORCED(ck->optim.momentum != cur->optim.momentum, "momentum", "%.17g", ck->optim.momentum,
                  cur->optim.momentum);
    UNLESS_FORCED(ck->optim.dampening != cur->optim.dampening, "dampening", "%.17g", ck->optim.dampening,
                  cur->optim.dampening);
    UNLESS_FORCED(ck->optim.nesterov != cur->optim.nesterov, "nesterov", "%d", ck->optim.nesterov,
                  cur->optim.nesterov);
    UNLESS_FORCED(ck->optim.weight_decay != cur->optim.weight_decay, "weight_decay", "%.17g",
                  ck->optim.weight_decay, cur->optim.weight_decay);
    UNLESS_FORCED(ck->optim.beta1 != cur->optim.beta1, "beta1", "%.17g", ck->optim.beta1, cur->optim.beta1);
    UNLESS_FORCED(ck->optim.beta2 != cur->optim.beta2, "beta2", "%.17g", ck->optim.beta2, cur->optim.beta2);
    UNLESS_FORCED(ck->optim.eps != cur->optim.eps, "eps", "%.17g", ck->optim.eps, cur->optim.eps);
#undef NEVER
#undef UNLESS_FORCED
    return DP_OK;
}

/* ---- resuming ------------------------------------------------------------------------------ */

dp_status dp__ckpt_open(const dp_train_params *p, dp_safetensors **ck, dp_checkpoint_info *info) {
    char path[4096];
    dp_status st;
    *ck = NULL;
    if ((st = dp_checkpoint_path(p->resume, path, sizeof path)) != DP_OK) return st;
    if ((st = dp_safetensors_load(path, ck)) != DP_OK) return dp__prefix_error(st, "resume");
    if ((st = dp_checkpoint_info_read(*ck, info)) != DP_OK) return dp__prefix_error(st, "resume");
    return DP_OK;
}

/* Format 2 recorded the model as dp_model_describe text (at most 4095 bytes), compared whole. */
static dp_status compare_model_v2(const char *path, const char *ck, const dp_model *m) {
    char *text = malloc(4096);
    if (!text) return dp_fail(DP_ERR_NOMEM, "checkpoint: out of memory");
    dp_model_describe(m, text, 4096);
    dp_status st = DP_OK;
    if (strcmp(ck, text))
        st = dp_fail(DP_ERR_INVALID,
                     "resume %s: the checkpoint's model differs from this run's; refusing.\n"
                     "checkpoint:\n%sthis run:\n%s",
                     path, ck, text);
    free(text);
    return st;
}

dp_status dp__ckpt_check_resume(const dp_safetensors *ck, const dp_checkpoint_info *cki, const dp_checkpoint_info *cur,
                                const dp_model *m, const dp_train_params *p, double q, int steps_per_epoch, int ranks) {
    const char *what = dp_safetensors_what(ck);
    dp_status st = cki->version == 2 ? compare_model_v2(what, cki->model, m) : compare_model(what, cki->model, cur->model);
    if (st != DP_OK || (st = compare_config(what, cki, cur, p->force)) != DP_OK) return st;
    if (!p->no_dp && !(p->noise_multiplier > 0)) {
        /* sigma was calibrated: recompute it for the checkpoint's own step count rather than
         * trust the file (its checksum has no key, so an edit can be resealed) */
        double again = 0;
        const long ck_steps = (long)steps_per_epoch * cki->epochs;
        if ((st = dp_calibrate_sigma_kind(p->accountant, p->target_epsilon, p->delta, q, ck_steps, 0.01, &again)) !=
            DP_OK)
            return st;
        if (again != cki->sigma)
            return dp_fail(DP_ERR_INVALID,
                           "resume %s: the checkpoint's sigma %.17g is not what target_epsilon %g calibrates to for its "
                           "%ld steps with the %s accountant (%.17g): the checkpoint was edited, or made with another "
                           "accountant; refusing (the privacy accounting depends on it; force cannot override this)",
                           what, cki->sigma, p->target_epsilon, ck_steps, dp_accountant_kind_name(p->accountant), again);
    }
    int64_t ck_shards = 1;
    dp_st_dtype sdt;
    const void *sdata;
    size_t scount;
    if (dp_safetensors_find(ck, ST_SHARDS, &sdt, NULL, NULL, &sdata, &scount) == DP_OK && sdt == DP_ST_I64 && scount == 1)
        memcpy(&ck_shards, sdata, 8);
    dp_clear_error();
    if (ck_shards != ranks)
        return dp_fail(DP_ERR_INVALID,
                       "resume %s: the checkpoint was made with %lld rank(s) (MPI processes or shards), this run has "
                       "%d; it continues only on as many ranks",
                       what, (long long)ck_shards, ranks);
    return DP_OK;
}

/* ---- the writer ------------------------------------------------------------------------------ */

void dp__ckpt_fill_counters(dp_checkpoint_info *c, long step, const dp_train_result *r, size_t lcount,
                            double batch_sum, double lsum, const dp_train_progress *pr, double elapsed,
                            int report_nonprivate, int private_test) {
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
    c->clip_norm = pr->max_grad_norm; /* adaptive clipping's C for the next step */
}

dp_status dp__ckpt_write(dp__ckpt_writer *w, dp_optim *opt, const dp_accountant *acc, const dp_rng *rs,
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
        if (st != DP_OK) st = dp__prefix_error(st, "checkpoint_dir");
    }
    /* the history is this write's; the model record is the configuration's (borrowed): kept */
    char *model = c->model;
    c->model = NULL;
    dp_checkpoint_info_free(c);
    c->model = model;
    return st;
}

#define CK_LOCK_FILE ".lock"

/* Takes an exclusive lock on DIR/.lock for the whole run: two runs started together on one
 * directory would otherwise overwrite each other's checkpoints (and remove each other's
 * temporary file, below). flock, because the kernel releases it when the process ends however
 * it ends, so a crashed run leaves no stale lock; the pid written into the file only names
 * the holder for the refusal. */
static dp_status lock_dir(dp__ckpt_writer *w, const char *dir) {
    char path[4200], pid[32] = "";
    snprintf(path, sizeof path, "%s/%s", dir, CK_LOCK_FILE);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return dp_fail(DP_ERR_IO, "checkpoint_dir %s: cannot open the lock file %s: %s", dir, path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        ssize_t k = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        if (e != EWOULDBLOCK)
            return dp_fail(DP_ERR_IO, "checkpoint_dir %s: cannot lock %s: %s", dir, path, strerror(e));
        pid[k > 0 ? k : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        return dp_fail(DP_ERR_INVALID,
                       "checkpoint_dir %s: in use by another run (pid %s holds %s); wait until it ends, or use "
                       "another directory", dir, *pid ? pid : "unknown", path);
    }
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return dp_fail(DP_ERR_IO, "checkpoint_dir %s: cannot write the lock file %s: %s", dir, path, strerror(e));
    }
    w->lock_fd = fd;
    return DP_OK;
}

dp_status dp__ckpt_writer_init(dp__ckpt_writer *w, const dp_train_params *p, dp_model *m, dp_optim *opt,
                               size_t *perm, size_t n, int64_t *shards_val, float *ema) {
    if (mkdir(p->checkpoint_dir, 0777) != 0 && errno != EEXIST)
        return dp_fail(DP_ERR_IO, "checkpoint_dir %s: cannot create it: %s", p->checkpoint_dir, strerror(errno));
    struct stat sb;
    if (stat(p->checkpoint_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return dp_fail(DP_ERR_IO, "checkpoint_dir %s: not a directory", p->checkpoint_dir);
    int len = snprintf(w->path, sizeof w->path, "%s/%s", p->checkpoint_dir, DP_CHECKPOINT_FILE);
    if (len < 0 || (size_t)len >= sizeof w->path) return dp_fail(DP_ERR_RANGE, "checkpoint_dir: path too long");
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
                           "checkpoint_dir %s: already holds a checkpoint of another run (%s); continue it with "
                           "resume %s, or pass force to replace it",
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

void dp__ckpt_writer_close(dp__ckpt_writer *w) {
    free(w->t);
    w->t = NULL;
    w->nt = 0;
    if (w->lock_fd >= 0) close(w->lock_fd); /* releases the directory's lock */
    w->lock_fd = -1;
}

dp_status dp__ckpt_restore(const dp_safetensors *s, const dp_checkpoint_info *c, dp_model *m, dp_optim *opt,
                           dp_accountant *acc, size_t *perm, size_t n, int no_dp, long total_steps, float *ema) {
    const char *what = dp_safetensors_what(s);
    dp_status st;
    if (c->step > total_steps)
        return dp_fail(DP_ERR_INVALID, "resume %s: the checkpoint is at step %ld but this run has only %ld steps",
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
    /* the parameter average: the checkpoint's, else (a run resumed with ema_decay added under
     * force) it starts afresh at the restored parameters */
    if (ema) {
        const size_t np = dp_model_num_params(m);
        if (dp_safetensors_find(s, ST_EMA, &dt, NULL, NULL, &data, &count) == DP_OK && dt == DP_ST_F32 && count == np)
            memcpy(ema, data, sizeof(float) * np);
        else
            memcpy(ema, dp_model_params(m), sizeof(float) * np);
        dp_clear_error();
    }
    return DP_OK;
}
