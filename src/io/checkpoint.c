/* checkpoint.c: helpers for training checkpoints (see dpsgd/io.h and docs/reliability.md):
 * where the file lives, the identity of the data, exact text forms of RNG states and
 * numbers in the safetensors metadata, and a structural check used by the fuzzer. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dpsgd/io.h"

dp_status dp_checkpoint_path(const char *dir_or_file, char *buf, size_t cap) {
    struct stat sb;
    int n;
    if (stat(dir_or_file, &sb) == 0 && S_ISREG(sb.st_mode))
        n = snprintf(buf, cap, "%s", dir_or_file);
    else
        n = snprintf(buf, cap, "%s/%s", dir_or_file, DP_CHECKPOINT_FILE);
    if (n < 0 || (size_t)n >= cap) return dp_fail(DP_ERR_RANGE, "%s: checkpoint path too long", dir_or_file);
    return DP_OK;
}

/* A 64-bit multiply-xorshift hash over 8-byte words (not cryptographic: it identifies the
 * data against mistakes, not against an adversary). */
static uint64_t mix(uint64_t h, uint64_t w) {
    h ^= w;
    h *= 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = mix(h, w);
    }
    uint64_t w = 0;
    for (size_t k = 0; i < n; i++, k++) w |= (uint64_t)b[i] << (8 * k);
    return mix(h, w ^ (uint64_t)n);
}

uint64_t dp_checkpoint_data_checksum(const float *x, const int32_t *y, size_t n, size_t dim) {
    uint64_t h = mix(0xcbf29ce484222325ULL, (uint64_t)n);
    h = mix(h, (uint64_t)dim);
    if (n && x) h = hash_bytes(h, x, n * dim * sizeof(float));
    if (n && y) h = hash_bytes(h, y, n * sizeof(int32_t));
    return h;
}

void dp_rng_to_text(const dp_rng *r, char *buf, size_t cap) {
    snprintf(buf, cap, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %d %a", r->s[0], r->s[1], r->s[2],
             r->s[3], r->has_spare ? 1 : 0, r->spare);
}

dp_status dp_rng_from_text(const char *text, const char *what, dp_rng *r) {
    dp_rng t;
    memset(&t, 0, sizeof t);
    const char *p = text;
    char *end;
    for (int i = 0; i < 4; i++) {
        while (*p == ' ') p++;
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) goto bad;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 16);
        if (errno || end - p != 16) goto bad;
        t.s[i] = (uint64_t)v;
        p = end;
    }
    if (p[0] != ' ' || (p[1] != '0' && p[1] != '1') || p[2] != ' ') goto bad;
    t.has_spare = p[1] == '1';
    p += 3;
    errno = 0;
    t.spare = strtod(p, &end);
    if (end == p || *end || errno || !isfinite(t.spare)) goto bad;
    if (!(t.s[0] | t.s[1] | t.s[2] | t.s[3])) goto bad; /* the all-zero state is a fixed point */
    *r = t;
    return DP_OK;
bad:
    return dp_fail(DP_ERR_FORMAT, "%s: malformed RNG state '%.80s'", what, text);
}

dp_status dp_meta_string(const dp_safetensors *s, const char *key, const char **out) {
    const char *v = dp_safetensors_meta(s, key);
    if (!v) return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field '%s' is missing", dp_safetensors_what(s), key);
    *out = v;
    return DP_OK;
}

dp_status dp_meta_double(const dp_safetensors *s, const char *key, double *out) {
    const char *v;
    dp_status st = dp_meta_string(s, key, &v);
    if (st != DP_OK) return st;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || end == v || isnan(x))
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field '%s': '%.40s' is not a number", dp_safetensors_what(s), key,
                       v);
    *out = x;
    return DP_OK;
}

dp_status dp_meta_long(const dp_safetensors *s, const char *key, long lo, long hi, long *out) {
    const char *v;
    dp_status st = dp_meta_string(s, key, &v);
    if (st != DP_OK) return st;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || end == v || errno || x < lo || x > hi)
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field '%s': '%.40s' is not an integer in %ld..%ld",
                       dp_safetensors_what(s), key, v, lo, hi);
    *out = x;
    return DP_OK;
}

dp_status dp_meta_u64(const dp_safetensors *s, const char *key, uint64_t *out) {
    const char *v;
    dp_status st = dp_meta_string(s, key, &v);
    if (st != DP_OK) return st;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 16);
    if (!*v || *v == '-' || *end || end == v || errno)
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field '%s': '%.40s' is not a hexadecimal 64-bit value",
                       dp_safetensors_what(s), key, v);
    *out = (uint64_t)x;
    return DP_OK;
}

/* ---- the info block as metadata ------------------------------------------------------- */

#define FORMAT_NAME    "dpsgd-checkpoint"
#define FORMAT_VERSION "3"     /* 3: "model" is the structure record; 2: dp_model_describe text */
#define CHECKSUM_KEY   "checksum" /* since version 2; version 1 files are refused (info_read) */
enum { MODEL_MAX = 1 << 22 };     /* bytes of the "model" field read at most */

/* ---- integrity ----------------------------------------------------------------------- */

/* CRC-64/XZ (ECMA-182 polynomial, reflected, init and final xor all ones; "123456789" gives
 * 995dc9bbdf1939fa). A CRC rather than the multiply-xorshift hash above: it detects every
 * burst of up to 64 flipped bits and every odd number of flips, which is what a damaged
 * file looks like. The table is rebuilt per checksum (2048 shifts) to need no global state. */
typedef struct {
    uint64_t table[256];
    uint64_t crc;
} crc64;

static void crc64_init(crc64 *h) {
    for (unsigned i = 0; i < 256; i++) {
        uint64_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xc96c5795d7870f42ULL : c >> 1;
        h->table[i] = c;
    }
    h->crc = ~0ULL;
}

static void crc64_bytes(crc64 *h, const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t c = h->crc;
    for (size_t i = 0; i < n; i++) c = h->table[(c ^ b[i]) & 0xff] ^ (c >> 8);
    h->crc = c;
}

static void crc64_u64(crc64 *h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    crc64_bytes(h, b, 8);
}

/* A tagged, length-prefixed part: no two different contents give the same byte stream (a
 * byte moved from one value to the next, or a pair moved into a tensor name, changes it). */
static void crc64_part(crc64 *h, char tag, const void *p, size_t n) {
    crc64_bytes(h, &tag, 1);
    crc64_u64(h, (uint64_t)n);
    if (n) crc64_bytes(h, p, n);
}

static void absorb_meta(crc64 *h, const char *key, const char *value) {
    crc64_part(h, 'k', key, strlen(key));
    crc64_part(h, 'v', value, strlen(value));
}

static void absorb_tensor(crc64 *h, const char *name, dp_st_dtype dt, int ndim, const int64_t *shape,
                          const void *data, size_t bytes) {
    const char *dn = dp_st_dtype_name(dt);
    crc64_part(h, 't', name, strlen(name));
    crc64_part(h, 'd', dn, strlen(dn));
    crc64_u64(h, (uint64_t)ndim);
    for (int i = 0; i < ndim; i++) crc64_u64(h, (uint64_t)shape[i]);
    crc64_part(h, 'b', data, bytes);
}

uint64_t dp_checkpoint_content_checksum(const dp_safetensors *s) {
    crc64 h;
    crc64_init(&h);
    for (int i = 0; i < dp_safetensors_num_meta(s); i++) {
        const char *k, *v;
        dp_safetensors_meta_at(s, i, &k, &v);
        if (strcmp(k, CHECKSUM_KEY)) absorb_meta(&h, k, v);
    }
    for (int i = 0; i < dp_safetensors_num_tensors(s); i++) {
        const char *name;
        dp_st_dtype dt;
        int ndim;
        const int64_t *shape;
        const void *data;
        size_t count;
        dp_safetensors_tensor(s, i, &name, &dt, &ndim, &shape, &data, &count);
        absorb_tensor(&h, name, dt, ndim, shape, data, count * dp_st_dtype_size(dt));
    }
    return ~h.crc;
}

typedef struct {
    char *kv[2 * 64];
    int n;
    int oom;
} meta_list;

static void put(meta_list *m, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(meta_list *m, const char *key, const char *fmt, ...) {
    DP_ASSERT(m->n < 64);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *v = malloc((size_t)len + 1);
    if (!v) {
        m->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(v, (size_t)len + 1, fmt, ap);
    va_end(ap);
    m->kv[2 * m->n] = (char *)key;
    m->kv[2 * m->n + 1] = v;
    m->n++;
}

dp_status dp_checkpoint_write(const char *path, const dp_checkpoint_info *c, const dp_st_tensor *t, int nt) {
    meta_list m;
    memset(&m, 0, sizeof m);
    char r1[160], r2[160], r3[160];
    dp_rng_to_text(&c->rng_sampling, r1, sizeof r1);
    dp_rng_to_text(&c->rng_noise, r2, sizeof r2);
    dp_rng_to_text(&c->rng_dropout, r3, sizeof r3);
    put(&m, "format", "%s", FORMAT_NAME);
    put(&m, "version", "%s", FORMAT_VERSION);
    put(&m, "model", "%s", c->model ? c->model : "");
    put(&m, "data", "%s", c->data);
    put(&m, "data_n", "%llu", (unsigned long long)c->data_n);
    put(&m, "data_dim", "%llu", (unsigned long long)c->data_dim);
    put(&m, "no_dp", "%d", c->no_dp);
    put(&m, "loss", "%s", c->regression ? "mse" : "xent");
    put(&m, "clipping", "%d", c->clipping);
    put(&m, "expected_batch", "%d", c->expected_batch);
    put(&m, "physical_batch", "%d", c->physical_batch);
    put(&m, "epochs", "%d", c->epochs);
    put(&m, "threads", "%d", c->threads);
    put(&m, "secure", "%d", c->secure);
    put(&m, "max_grad_norm", "%a", c->max_grad_norm);
    put(&m, "sigma", "%a", c->sigma);
    put(&m, "q", "%a", c->q);
    put(&m, "delta", "%a", c->delta);
    put(&m, "target_epsilon", "%a", c->target_epsilon);
    put(&m, "optim.kind", "%d", (int)c->optim.kind);
    put(&m, "optim.lr", "%a", c->optim.lr);
    put(&m, "optim.momentum", "%a", c->optim.momentum);
    put(&m, "optim.dampening", "%a", c->optim.dampening);
    put(&m, "optim.nesterov", "%d", c->optim.nesterov);
    put(&m, "optim.weight_decay", "%a", c->optim.weight_decay);
    put(&m, "optim.beta1", "%a", c->optim.beta1);
    put(&m, "optim.beta2", "%a", c->optim.beta2);
    put(&m, "optim.eps", "%a", c->optim.eps);
    put(&m, "seed", "%016" PRIx64, c->seed);
    put(&m, "noise_seed", "%016" PRIx64, c->noise_seed);
    put(&m, "ema_decay", "%a", c->ema_decay);
    if (c->lr_schedule) put(&m, "lr_schedule", "%d", c->lr_schedule); /* absent: constant */
    if (c->clip_quantile > 0) { /* adaptive clipping; absent: off */
        put(&m, "clip.quantile", "%a", c->clip_quantile);
        put(&m, "clip.lr", "%a", c->clip_lr);
        put(&m, "clip.count_noise", "%a", c->clip_count_noise);
        put(&m, "clip.norm", "%a", c->clip_norm);
    }
    put(&m, "augmult", "%d", c->augmult);
    put(&m, "augment_pad", "%d", c->augment_pad);
    put(&m, "augment_flip", "%d", c->augment_flip);
    put(&m, "noise", "%s",
        c->no_dp ? "none (non-private run)"
        : c->secure ? "OS CSPRNG (never written; a resumed run draws fresh noise)"
                    : "seeded by noise_seed: epsilon holds only while the noise seed stays secret");
    put(&m, "step", "%ld", c->step);
    put(&m, "optim.steps", "%ld", c->optim_steps);
    put(&m, "rng.sampling", "%s", r1);
    put(&m, "rng.noise", "%s", r2);
    put(&m, "rng.dropout", "%s", r3);
    put(&m, "empty_batches", "%ld", c->empty_batches);
    put(&m, "nonfinite_samples", "%ld", c->nonfinite_samples);
    put(&m, "lcount", "%ld", c->lcount);
    put(&m, "batch_sum", "%a", c->batch_sum);
    put(&m, "lsum", "%a", c->lsum);
    put(&m, "test_accuracy", "%a", c->test_accuracy);
    put(&m, "test_loss", "%a", c->test_loss);
    put(&m, "elapsed", "%a", c->elapsed);
    /* accountant history: "q sigma steps" entries separated by ';' */
    size_t cap = 96 * (c->acc_len + 1), o = 0;
    char *acc = malloc(cap);
    if (acc) {
        acc[0] = '\0';
        for (size_t i = 0; i < c->acc_len; i++)
            o += (size_t)snprintf(acc + o, cap - o, "%s%a %a %ld", i ? ";" : "", c->acc_q[i], c->acc_sigma[i],
                                  c->acc_steps[i]);
        put(&m, "accountant", "%s", acc);
        free(acc);
    } else
        m.oom = 1;
    /* the checksum last, over the pairs above and the tensors, as the reader recomputes it
     * from the file (dp_checkpoint_content_checksum: file order is this order) */
    if (!m.oom) {
        crc64 h;
        crc64_init(&h);
        for (int i = 0; i < m.n; i++) absorb_meta(&h, m.kv[2 * i], m.kv[2 * i + 1]);
        for (int i = 0; i < nt; i++) {
            size_t count = 1;
            for (int d = 0; d < t[i].ndim; d++) count *= (size_t)t[i].shape[d];
            absorb_tensor(&h, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data,
                          count * dp_st_dtype_size(t[i].dtype));
        }
        put(&m, CHECKSUM_KEY, "%016" PRIx64, ~h.crc);
    }
    dp_status st;
    if (m.oom)
        st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    else
        st = dp_safetensors_save(path, t, nt, (const char *const *)m.kv, m.n);
    for (int i = 0; i < m.n; i++) free(m.kv[2 * i + 1]);
    return st;
}

void dp_checkpoint_info_free(dp_checkpoint_info *c) {
    if (!c) return;
    free(c->model);
    c->model = NULL;
    free(c->acc_q);
    free(c->acc_sigma);
    free(c->acc_steps);
    c->acc_q = c->acc_sigma = NULL;
    c->acc_steps = NULL;
    c->acc_len = 0;
}

static dp_status get_int(const dp_safetensors *s, const char *key, long lo, long hi, int *out) {
    long v;
    dp_status st = dp_meta_long(s, key, lo, hi, &v);
    if (st == DP_OK) *out = (int)v;
    return st;
}

static dp_status get_text(const dp_safetensors *s, const char *key, char *buf, size_t cap) {
    const char *v;
    dp_status st = dp_meta_string(s, key, &v);
    if (st != DP_OK) return st;
    if (strlen(v) >= cap)
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field '%s' is too long (%zu bytes)", dp_safetensors_what(s), key,
                       strlen(v));
    memcpy(buf, v, strlen(v) + 1);
    return DP_OK;
}

static dp_status get_rng(const dp_safetensors *s, const char *key, dp_rng *r) {
    const char *v;
    dp_status st = dp_meta_string(s, key, &v);
    if (st != DP_OK) return st;
    char what[600];
    snprintf(what, sizeof what, "%s: checkpoint field '%s'", dp_safetensors_what(s), key);
    return dp_rng_from_text(v, what, r);
}

static dp_status get_finite(const dp_safetensors *s, const char *key, double lo, double hi, double *out) {
    dp_status st = dp_meta_double(s, key, out);
    if (st != DP_OK) return st;
    if (!(*out >= lo && *out <= hi))
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field '%s': %g is outside [%g, %g]", dp_safetensors_what(s), key,
                       *out, lo, hi);
    return DP_OK;
}

static dp_status parse_history(const dp_safetensors *s, dp_checkpoint_info *c) {
    const char *v;
    dp_status st = dp_meta_string(s, "accountant", &v);
    if (st != DP_OK) return st;
    size_t n = *v ? 1 : 0;
    for (const char *p = v; *p; p++) n += *p == ';';
    if (n > 1000000)
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field 'accountant': %zu entries (at most 1000000)",
                       dp_safetensors_what(s), n);
    c->acc_q = malloc(sizeof(double) * (n ? n : 1));
    c->acc_sigma = malloc(sizeof(double) * (n ? n : 1));
    c->acc_steps = malloc(sizeof(long) * (n ? n : 1));
    if (!c->acc_q || !c->acc_sigma || !c->acc_steps)
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory", dp_safetensors_what(s));
    const char *p = v;
    for (size_t i = 0; i < n; i++) {
        char *end;
        errno = 0;
        double q = strtod(p, &end);
        if (end == p || *end != ' ') goto bad;
        p = end + 1;
        double sg = strtod(p, &end);
        if (end == p || *end != ' ') goto bad;
        p = end + 1;
        if (*p < '0' || *p > '9') goto bad;
        long k = strtol(p, &end, 10);
        if (end == p || errno || (*end != ';' && *end != '\0') || (*end == ';') != (i + 1 < n)) goto bad;
        if (!(q >= 0 && q <= 1) || !(sg > 0) || !isfinite(sg) || k < 0) goto bad;
        c->acc_q[i] = q;
        c->acc_sigma[i] = sg;
        c->acc_steps[i] = k;
        p = *end ? end + 1 : end;
        c->acc_len = i + 1;
    }
    return DP_OK;
bad:
    return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field 'accountant': malformed entry %zu", dp_safetensors_what(s),
                   c->acc_len + 1);
}

static dp_status history_fail(const dp_safetensors *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dp_status history_fail(const dp_safetensors *s, const char *fmt, ...) {
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return dp_fail(DP_ERR_FORMAT,
                   "%s: checkpoint field 'accountant' (the privacy accountant's history): %s; it must be what the "
                   "checkpoint's q, sigma and step make; refusing it (the reported epsilon depends on it; force "
                   "cannot override this)",
                   dp_safetensors_what(s), detail);
}

/* The file's integrity, checked after every field has parsed (so a malformed field is still
 * named as such, and the fuzzer reaches every field's parser). First the checksum: any
 * damaged or edited byte. Then the accountant history, which a CRC cannot protect against a
 * deliberate edit (anyone can recompute one): the reported epsilon is computed from the
 * history alone, so an edited q or sigma in it lowers epsilon. The training loop records
 * (q, sigma, 1) at every private step and the accountant merges equal neighbours, so the
 * history is determined by the checkpoint's q, sigma and step: rebuild it and require the
 * stored one to be exactly that (no entry without DP or before the first step). */
static dp_status check_integrity(const dp_safetensors *s, const dp_checkpoint_info *c) {
    const char *what = dp_safetensors_what(s);
    uint64_t stored;
    if (!dp_safetensors_meta(s, CHECKSUM_KEY))
        return dp_fail(DP_ERR_FORMAT,
                       "%s: checkpoint field '" CHECKSUM_KEY "' is missing: the checkpoint is corrupt or edited; "
                       "refusing it (force cannot override this)",
                       what);
    dp_status st = dp_meta_u64(s, CHECKSUM_KEY, &stored);
    if (st != DP_OK) return st;
    uint64_t actual = dp_checkpoint_content_checksum(s);
    if (stored != actual)
        return dp_fail(DP_ERR_FORMAT,
                       "%s: checkpoint field '" CHECKSUM_KEY "' is %016" PRIx64
                       " but the content's checksum is %016" PRIx64
                       ": the checkpoint is corrupt or edited; refusing it (force cannot override this)",
                       what, stored, actual);
    const size_t want_len = !c->no_dp && c->step > 0;
    long total = 0;
    for (size_t i = 0; i < c->acc_len; i++) {
        if (c->no_dp) return history_fail(s, "it has %zu entries but the run is non-private (no_dp 1)", c->acc_len);
        /* bit for bit: the accountant keys its entries on exact equality too */
        if (memcmp(&c->acc_q[i], &c->q, sizeof(double)))
            return history_fail(s, "entry %zu has q %.17g, the checkpoint's q is %.17g", i + 1, c->acc_q[i], c->q);
        if (memcmp(&c->acc_sigma[i], &c->sigma, sizeof(double)))
            return history_fail(s, "entry %zu has sigma %.17g, the checkpoint's sigma is %.17g", i + 1, c->acc_sigma[i],
                                c->sigma);
        if (c->acc_steps[i] > LONG_MAX - total)
            return history_fail(s, "its step counts overflow");
        total += c->acc_steps[i];
    }
    if (total != (c->no_dp ? 0 : c->step))
        return history_fail(s, "it holds %ld steps, the checkpoint is at step %ld", total, c->step);
    if (c->acc_len != want_len)
        return history_fail(s, "it has %zu entries, expected %zu (one (q, sigma, step) entry after the first step)",
                            c->acc_len, want_len);
    return DP_OK;
}

dp_status dp_checkpoint_info_read(const dp_safetensors *s, dp_checkpoint_info *out) {
    dp_checkpoint_info c;
    memset(&c, 0, sizeof c);
    const char *fmt, *ver;
    dp_status st;
    if ((st = dp_meta_string(s, "format", &fmt)) != DP_OK) return st;
    if (strcmp(fmt, FORMAT_NAME))
        return dp_fail(DP_ERR_FORMAT, "%s: not a dpsgd checkpoint (format '%.40s')", dp_safetensors_what(s), fmt);
    if ((st = dp_meta_string(s, "version", &ver)) != DP_OK) return st;
    /* safety first: a version 1 file has no checksum, so neither its weights nor the history
     * that the reported epsilon rests on can be trusted (no users hold such files) */
    if (!strcmp(ver, "1"))
        return dp_fail(DP_ERR_UNSUPPORTED,
                       "%s: checkpoint version 1 predates integrity checks (no checksum); refusing it (force cannot "
                       "override this): start a new run",
                       dp_safetensors_what(s));
    if (strcmp(ver, FORMAT_VERSION) && strcmp(ver, "2"))
        return dp_fail(DP_ERR_UNSUPPORTED, "%s: checkpoint version '%.20s' (this build reads 2 and %s)",
                       dp_safetensors_what(s), ver, FORMAT_VERSION);
    c.version = ver[0] - '0';
    int kind = 0;
    long dn = 0, dd = 0;
    const long IMAX = 2147483647L, LMAX = 0x7fffffffffffffffL;
    const char *model;
    if ((st = dp_meta_string(s, "model", &model)) != DP_OK) return st;
    if (strlen(model) >= MODEL_MAX)
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field 'model' is too long (%zu bytes)", dp_safetensors_what(s),
                       strlen(model));
    if ((st = get_text(s, "data", c.data, sizeof c.data)) != DP_OK ||
        (st = dp_meta_long(s, "data_n", 0, LMAX, &dn)) != DP_OK ||
        (st = dp_meta_long(s, "data_dim", 0, LMAX, &dd)) != DP_OK ||
        (st = get_int(s, "no_dp", 0, 1, &c.no_dp)) != DP_OK ||
        (st = get_int(s, "clipping", 0, 15, &c.clipping)) != DP_OK ||
        (st = get_int(s, "expected_batch", 1, IMAX, &c.expected_batch)) != DP_OK ||
        (st = get_int(s, "physical_batch", 0, IMAX, &c.physical_batch)) != DP_OK ||
        (st = get_int(s, "epochs", 1, IMAX, &c.epochs)) != DP_OK ||
        (st = get_int(s, "threads", 0, 1 << 20, &c.threads)) != DP_OK ||
        (st = get_int(s, "secure", 0, 1, &c.secure)) != DP_OK ||
        (st = get_finite(s, "max_grad_norm", 0, INFINITY, &c.max_grad_norm)) != DP_OK ||
        (st = get_finite(s, "sigma", 0, INFINITY, &c.sigma)) != DP_OK ||
        (st = get_finite(s, "q", 0, 1, &c.q)) != DP_OK || (st = get_finite(s, "delta", 0, 1, &c.delta)) != DP_OK ||
        (st = get_finite(s, "target_epsilon", 0, INFINITY, &c.target_epsilon)) != DP_OK ||
        (st = get_int(s, "optim.kind", 0, DP_OPT_COUNT - 1, &kind)) != DP_OK ||
        (st = get_finite(s, "optim.lr", 0, INFINITY, &c.optim.lr)) != DP_OK ||
        (st = get_finite(s, "optim.momentum", 0, 1, &c.optim.momentum)) != DP_OK ||
        (st = get_finite(s, "optim.dampening", 0, 1, &c.optim.dampening)) != DP_OK ||
        (st = get_int(s, "optim.nesterov", 0, 1, &c.optim.nesterov)) != DP_OK ||
        (st = get_finite(s, "optim.weight_decay", 0, INFINITY, &c.optim.weight_decay)) != DP_OK ||
        (st = get_finite(s, "optim.beta1", 0, 1, &c.optim.beta1)) != DP_OK ||
        (st = get_finite(s, "optim.beta2", 0, 1, &c.optim.beta2)) != DP_OK ||
        (st = get_finite(s, "optim.eps", 0, INFINITY, &c.optim.eps)) != DP_OK ||
        (st = dp_meta_u64(s, "seed", &c.seed)) != DP_OK || (st = dp_meta_u64(s, "noise_seed", &c.noise_seed)) != DP_OK || (st = get_finite(s, "ema_decay", 0, 1, &c.ema_decay)) != DP_OK || (st = dp_meta_long(s, "step", 0, LMAX, &c.step)) != DP_OK ||
        (st = dp_meta_long(s, "optim.steps", 0, LMAX, &c.optim_steps)) != DP_OK ||
        (st = get_rng(s, "rng.sampling", &c.rng_sampling)) != DP_OK ||
        (st = get_rng(s, "rng.noise", &c.rng_noise)) != DP_OK ||
        (st = get_rng(s, "rng.dropout", &c.rng_dropout)) != DP_OK ||
        (st = dp_meta_long(s, "empty_batches", 0, LMAX, &c.empty_batches)) != DP_OK ||
        (st = dp_meta_long(s, "nonfinite_samples", 0, LMAX, &c.nonfinite_samples)) != DP_OK ||
        (st = dp_meta_long(s, "lcount", 0, LMAX, &c.lcount)) != DP_OK ||
        (st = get_finite(s, "batch_sum", 0, INFINITY, &c.batch_sum)) != DP_OK ||
        (st = dp_meta_double(s, "lsum", &c.lsum)) != DP_OK ||
        (st = dp_meta_double(s, "test_accuracy", &c.test_accuracy)) != DP_OK ||
        (st = dp_meta_double(s, "test_loss", &c.test_loss)) != DP_OK ||
        (st = get_finite(s, "elapsed", 0, INFINITY, &c.elapsed)) != DP_OK)
        return st;
    const char *loss = dp_safetensors_meta(s, "loss"); /* optional: files before it are cross-entropy */
    if (loss && strcmp(loss, "mse") && strcmp(loss, "xent"))
        return dp_fail(DP_ERR_FORMAT, "%s: checkpoint field 'loss' is '%.20s' (xent or mse)", dp_safetensors_what(s), loss);
    c.regression = loss && !strcmp(loss, "mse");
    if (dp_safetensors_meta(s, "lr_schedule") && (st = get_int(s, "lr_schedule", 0, 1, &c.lr_schedule)) != DP_OK) return st;
    if (dp_safetensors_meta(s, "clip.quantile")) { /* adaptive clipping: all four, C in range */
        if ((st = get_finite(s, "clip.quantile", 0, 1, &c.clip_quantile)) != DP_OK ||
            (st = get_finite(s, "clip.lr", 0, INFINITY, &c.clip_lr)) != DP_OK ||
            (st = get_finite(s, "clip.count_noise", 0, INFINITY, &c.clip_count_noise)) != DP_OK ||
            (st = get_finite(s, "clip.norm", 0, INFINITY, &c.clip_norm)) != DP_OK)
            return st;
        if (!(c.clip_quantile > 0 && c.clip_quantile < 1) || !(c.clip_lr > 0) || !(c.clip_count_noise > 0) ||
            !(c.clip_norm > 0))
            return dp_fail(DP_ERR_FORMAT, "%s: checkpoint fields clip.*: quantile %g must be in (0, 1), lr %g, "
                           "count_noise %g and norm %g positive", dp_safetensors_what(s), c.clip_quantile, c.clip_lr,
                           c.clip_count_noise, c.clip_norm);
    }
    /* optional: files before augmentation multiplicity have none (off) */
    if (dp_safetensors_meta(s, "augmult") &&
        ((st = get_int(s, "augmult", 0, DP_CLIP_MAX_GROUP, &c.augmult)) != DP_OK ||
         (st = get_int(s, "augment_pad", 0, 1 << 20, &c.augment_pad)) != DP_OK ||
         (st = get_int(s, "augment_flip", 0, 1, &c.augment_flip)) != DP_OK))
        return st;
    c.optim.kind = (dp_optim_kind)kind;
    c.data_n = (uint64_t)dn;
    c.data_dim = (uint64_t)dd;
    if (!(c.model = strdup(model))) return dp_fail(DP_ERR_NOMEM, "%s: out of memory", dp_safetensors_what(s));
    if ((st = parse_history(s, &c)) != DP_OK || (st = check_integrity(s, &c)) != DP_OK) {
        dp_checkpoint_info_free(&c);
        return st;
    }
    *out = c;
    return DP_OK;
}

dp_status dp_checkpoint_check(const void *buf, size_t len, const char *what) {
    dp_safetensors *s;
    dp_status st = dp_safetensors_parse(buf, len, what, &s);
    if (st != DP_OK) return st;
    dp_checkpoint_info *c = malloc(sizeof *c);
    if (!c)
        st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", what);
    else if ((st = dp_checkpoint_info_read(s, c)) == DP_OK)
        dp_checkpoint_info_free(c);
    free(c);
    dp_safetensors_destroy(s);
    return st;
}
