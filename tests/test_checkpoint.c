/* test_checkpoint.c: safetensors (round trip bit-exact, PyTorch shapes, every kind of
 * malformed file refused naming the file and field, model loading refusing missing, extra,
 * mis-shaped, mis-typed or non-finite tensors), checkpoints (a run resumed from a snapshot taken at any
 * step ends bit-identical with the same epsilon: SGD momentum with dropout, Adam, the
 * non-private baseline; resuming with another C, data, sigma or model is refused naming the
 * difference, epochs only with force; corrupt checkpoints are refused), stop requests (a
 * checkpoint at the step boundary, resumed bit-identically) and the directory lock, and secure mode
 * (ChaCha20 known answer, OS-seeded generators differ, hardened noise on its grid with the
 * right mean, variance, skewness and kurtosis, secure sampling rate, two secure runs differ). */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "core/internal.h"
#include "fixtures.h"

static char tmpdir[256];

/* n rows of dim features, labels i mod k: N(0,1) plus 1 on the coordinates j = label (mod k)
 * (not fixtures.h's make_ds: the checkpoint tests' data was drawn this way). */
static void make_ds_dim(dp_dataset *d, size_t n, size_t dim, int k, uint64_t seed) {
    dp_rng r;
    dp_rng_seed(&r, seed);
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = (int)dim;
    d->h = d->w = 1;
    d->dim = dim;
    d->n_classes = k;
    d->x = dp_alloc(sizeof(float) * n * dim);
    d->y = dp_alloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) {
        d->y[i] = (int32_t)(i % (size_t)k);
        for (size_t j = 0; j < dim; j++)
            d->x[i * dim + j] = (float)(dp_rng_normal(&r) + (j % (size_t)k == (size_t)d->y[i]));
    }
}

static int write_file(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(b, 1, n, f);
    fclose(f);
    return w == n;
}

static int copy_file(const char *from, const char *to) {
    FILE *f = fopen(from, "rb");
    if (!f) return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return write_file(to, buf, n);
}

/* ---- safetensors --------------------------------------------------------------------- */

static void test_roundtrip(void) {
    dp_model *a = new_model("conv2d(4,3,s1,p1) tanh flatten linear(5) relu linear(3,nobias)", 2, 6, 6, 1);
    dp_model *b = new_model("conv2d(4,3,s1,p1) tanh flatten linear(5) relu linear(3,nobias)", 2, 6, 6, 2);
    char path[300];
    snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
    CHECK_OK(dp_model_save_safetensors(a, path));
    CHECK_OK(dp_model_load_safetensors(b, path));
    size_t n = dp_model_num_params(a);
    CHECK(memcmp(dp_model_params(a), dp_model_params(b), n * sizeof(float)) == 0);
    dp_safetensors *s = NULL;
    CHECK_OK(dp_safetensors_load(path, &s));
    if (s) {
        int nd;
        const int64_t *sh;
        dp_st_dtype dt;
        CHECK_OK(dp_safetensors_find(s, "0.weight", &dt, &nd, &sh, NULL, NULL));
        CHECK(dt == DP_ST_F32 && nd == 4 && sh[0] == 4 && sh[1] == 2 && sh[2] == 3 && sh[3] == 3);
        CHECK_OK(dp_safetensors_find(s, "3.weight", &dt, &nd, &sh, NULL, NULL));
        CHECK(nd == 2 && sh[0] == 5 && sh[1] == 144);
        CHECK_OK(dp_safetensors_find(s, "5.weight", &dt, &nd, &sh, NULL, NULL));
        CHECK(nd == 2 && sh[0] == 3 && sh[1] == 5);
        CHECK(dp_safetensors_find(s, "5.bias", NULL, NULL, NULL, NULL, NULL) == DP_ERR_INVALID);
        CHECK(dp_safetensors_num_tensors(s) == 5);
        dp_safetensors_destroy(s);
    }
    /* wrong model: mismatched shapes, missing or extra tensors, model unchanged */
    dp_model *c = new_model("conv2d(4,3,s1,p1) tanh flatten linear(6) relu linear(3,nobias)", 2, 6, 6, 3);
    size_t nc = dp_model_num_params(c);
    float *before = malloc(nc * sizeof(float));
    memcpy(before, dp_model_params(c), nc * sizeof(float));
    CHECK(dp_model_load_safetensors(c, path) == DP_ERR_INVALID);
    CHECK(strstr(dp_last_error(), "3.weight") && strstr(dp_last_error(), "shape"));
    CHECK(memcmp(before, dp_model_params(c), nc * sizeof(float)) == 0);
    free(before);
    dp_model *d = new_model("conv2d(4,3,s1,p1) tanh flatten linear(5) relu linear(3)", 2, 6, 6, 3);
    CHECK(dp_model_load_safetensors(d, path) == DP_ERR_INVALID);
    CHECK(strstr(dp_last_error(), "5.bias") && strstr(dp_last_error(), "missing"));
    dp_model *e = new_model("conv2d(4,3,s1,p1) tanh flatten linear(5)", 2, 6, 6, 3);
    CHECK(dp_model_load_safetensors(e, path) == DP_ERR_INVALID);
    CHECK(strstr(dp_last_error(), "not a parameter"));
    /* F64 instead of F32 */
    double dv[3] = {1, 2, 3};
    dp_st_tensor t = {"0.weight", DP_ST_F64, 1, {3}, dv};
    CHECK_OK(dp_safetensors_save(path, &t, 1, NULL, 0));
    dp_model *f = new_model("linear(3,nobias)", 1, 1, 1, 3);
    CHECK(dp_model_load_safetensors(f, path) == DP_ERR_UNSUPPORTED);
    CHECK(strstr(dp_last_error(), "F64") && strstr(dp_last_error(), "0.weight"));
    CHECK(dp_model_load_safetensors(f, "/nonexistent/w.safetensors") == DP_ERR_IO);
    CHECK(strstr(dp_last_error(), "/nonexistent/w.safetensors") != NULL);
    /* a NaN or an infinity in one tensor: refused naming the file and the tensor, model unchanged */
    float *pa = dp_model_params(a);
    const float saved = pa[n - 1], bad[2] = {NAN, -INFINITY};
    char nanpath[300];
    snprintf(nanpath, sizeof nanpath, "%s/nonfinite.safetensors", tmpdir);
    for (int k = 0; k < 2; k++) {
        pa[n - 1] = bad[k]; /* the last parameter: in the last tensor, 5.weight */
        CHECK_OK(dp_model_save_safetensors(a, nanpath));
        pa[n - 1] = saved;
        float *before_b = malloc(n * sizeof(float));
        memcpy(before_b, dp_model_params(b), n * sizeof(float));
        CHECK(dp_model_load_safetensors(b, nanpath) == DP_ERR_NONFINITE);
        CHECK(strstr(dp_last_error(), "nonfinite.safetensors") && strstr(dp_last_error(), "'5.weight'") &&
              strstr(dp_last_error(), "non-finite"));
        CHECK(memcmp(before_b, dp_model_params(b), n * sizeof(float)) == 0);
        free(before_b);
    }
    dp_model_destroy(a);
    dp_model_destroy(b);
    dp_model_destroy(c);
    dp_model_destroy(d);
    dp_model_destroy(e);
    dp_model_destroy(f);
}

/* A safetensors image: header text, data section of dlen bytes (zeros); hlen_override != 0
 * writes that header size instead of the real one. */
static size_t image(unsigned char *buf, const char *header, size_t dlen, uint64_t hlen_override) {
    size_t h = strlen(header);
    uint64_t v = hlen_override ? hlen_override : h;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, 0, dlen);
    return 8 + h + dlen;
}

static void expect_bad(const char *header, size_t dlen, uint64_t hlen, dp_status want, const char *needle) {
    static unsigned char buf[4096];
    size_t n = image(buf, header, dlen, hlen);
    dp_safetensors *s = NULL;
    dp_status st = dp_safetensors_parse(buf, n, "bad.safetensors", &s);
    int good = st == want && strstr(dp_last_error(), needle) && strstr(dp_last_error(), "bad.safetensors");
    if (!good)
        fprintf(stderr, "header %s: got %s '%s', wanted %s with '%s'\n", header, dp_strerror(st), dp_last_error(),
                dp_strerror(want), needle);
    CHECK(good);
    CHECK(s == NULL);
    dp_safetensors_destroy(s);
}

static void test_malformed(void) {
    unsigned char small[4] = {1, 2, 3, 4};
    dp_safetensors *s = NULL;
    CHECK(dp_safetensors_parse(small, 4, "bad.safetensors", &s) == DP_ERR_FORMAT);
    CHECK(strstr(dp_last_error(), "truncated") != NULL);
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    static unsigned char buf[4096];
    size_t n = image(buf, ok, 8, 0);
    CHECK_OK(dp_safetensors_parse(buf, n, "ok", &s));
    dp_safetensors_destroy(s);
    /* truncated data, header size past the end, huge header size */
    expect_bad(ok, 4, 0, DP_ERR_FORMAT, "out of range");
    expect_bad(ok, 8, 1000, DP_ERR_FORMAT, "does not fit");
    expect_bad(ok, 8, (uint64_t)1 << 40, DP_ERR_RANGE, "exceeds the limit");
    /* bad JSON */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],", 0, 0, DP_ERR_FORMAT, "header");
    expect_bad("[1,2]", 0, 0, DP_ERR_FORMAT, "expected '{'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, 0, DP_ERR_FORMAT, "trailing");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, 0, DP_ERR_FORMAT,
               "unknown field 'x'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0, DP_ERR_FORMAT, "missing data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[0],"
               "\"data_offsets\":[8,8]}}",
               8, 0, DP_ERR_FORMAT, "duplicate tensor 'a'");
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, 0, DP_ERR_FORMAT, "must be strings");
    /* offsets */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,80]}}", 8, 0, DP_ERR_FORMAT,
               "out of range");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, 0, DP_ERR_FORMAT,
               "begin after end");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
               "\"data_offsets\":[4,12]}}",
               12, 0, DP_ERR_FORMAT, "overlap");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, DP_ERR_FORMAT, "hole");
    expect_bad(ok, 12, 0, DP_ERR_FORMAT, "trailing data");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, DP_ERR_FORMAT, "needs 12");
    /* dtype, negative and huge sizes */
    expect_bad("{\"a\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, DP_ERR_FORMAT, "dtype 'F99'");
    expect_bad("{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8, 0, DP_ERR_UNSUPPORTED, "BF16");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0, DP_ERR_FORMAT, "negative");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-1,8]}}", 8, 0, DP_ERR_FORMAT, "negative");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,8]}}",
               8, 0, DP_ERR_RANGE, "overflows");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8, 0,
               DP_ERR_RANGE, "too large");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, 0,
               DP_ERR_UNSUPPORTED, "more than 8");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, 0, DP_ERR_FORMAT,
               "not an integer");
}

/* ---- checkpoints ------------------------------------------------------------------------ */

typedef struct {
    long snap_step;
    const char *from, *to;
    int copied;
} snap_state;

/* After step k+1 the checkpoint of step k is on disk: copy it away (a crash right then). */
static void snapshot(void *user, const dp_train_progress *p) {
    snap_state *s = user;
    if (!p->epoch_end && p->step == s->snap_step + 1 && !s->copied) s->copied = copy_file(s->from, s->to);
}

typedef struct {
    const char *spec;
    dp_optim_kind opt;
    int no_dp;
    long every, snap;
} resume_case;

static void test_resume_case(const resume_case *rc, const dp_dataset *tr, const dp_dataset *te) {
    char dir[300], snapdir[300], ckfile[400], snapfile[400];
    snprintf(dir, sizeof dir, "%s/ck_%ld", tmpdir, rc->snap);
    snprintf(snapdir, sizeof snapdir, "%s/snap_%ld", tmpdir, rc->snap);
    mkdir(snapdir, 0777);
    snprintf(ckfile, sizeof ckfile, "%s/%s", dir, DP_CHECKPOINT_FILE);
    snprintf(snapfile, sizeof snapfile, "%s/%s", snapdir, DP_CHECKPOINT_FILE);
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = 1; /* reproducible noise and sampling */
    p.no_dp = rc->no_dp;
    p.noise_multiplier = 1.1;
    p.max_grad_norm = 0.5;
    p.expected_batch = 32;
    p.epochs = 3;
    p.optim = dp_optim_default_params(rc->opt);
    if (rc->opt == DP_OPT_SGD) {
        p.optim.lr = 0.5;
        p.optim.momentum = 0.9;
    }
    p.seed = p.noise_seed = 5;
    p.delta = 1e-3;
    p.checkpoint_dir = dir;
    p.checkpoint_every = rc->every;
    p.force = 1; /* replace the directory's checkpoint of an earlier case */
    snap_state ss = {rc->snap, ckfile, snapfile, 0};
    p.progress = snapshot;
    p.progress_user = &ss;
    dp_model *a = new_model(rc->spec, (int)tr->dim, 1, 1, 9);
    dp_train_result ra, rb;
    CHECK_OK(dp_train(a, tr, te, &p, &ra));
    CHECK(ss.copied);
    /* resume from the snapshot in a fresh model with other initial weights */
    dp_model *b = new_model(rc->spec, (int)tr->dim, 1, 1, 77);
    p.progress = NULL;
    p.force = 0;
    p.resume = snapdir;
    p.checkpoint_dir = snapdir;
    CHECK_OK(dp_train(b, tr, te, &p, &rb));
    size_t n = dp_model_num_params(a);
    int same = memcmp(dp_model_params(a), dp_model_params(b), n * sizeof(float)) == 0;
    if (!same)
        fprintf(stderr, "resume case %s opt %d no_dp %d snap %ld: weights differ\n", rc->spec, rc->opt, rc->no_dp,
                rc->snap);
    CHECK(same);
    CHECK(ra.epsilon == rb.epsilon);
    CHECK(ra.steps == rb.steps && ra.empty_batches == rb.empty_batches && ra.mean_batch == rb.mean_batch);
    CHECK(ra.test_accuracy == rb.test_accuracy);
    dp_model_destroy(a);
    dp_model_destroy(b);
}

static void test_integrity(const dp_dataset *tr, const dp_dataset *te, const dp_train_params *base);
static void test_calibrated_sigma(const dp_dataset *tr, const dp_dataset *te, const dp_train_params *base);
static void test_no_fingerprint(dp_dataset *tr, const dp_dataset *te, const dp_train_params *base);

static void test_resume(void) {
    dp_dataset tr, te;
    make_ds_dim(&tr, 200, 6, 3, 1);
    make_ds_dim(&te, 50, 6, 3, 2);
    /* 200 / 32 -> 6 steps per epoch, 18 in all */
    resume_case cases[] = {
        {"linear(8) tanh dropout(0.25) linear(3)", DP_OPT_SGD, 0, 1, 3},
        {"linear(8) tanh dropout(0.25) linear(3)", DP_OPT_SGD, 0, 1, 6}, /* an epoch boundary */
        {"linear(8) tanh dropout(0.25) linear(3)", DP_OPT_SGD, 0, 4, 8}, /* every 4: snapshot of step 8 */
        {"linear(8) relu linear(3)", DP_OPT_ADAM, 0, 1, 10},
        {"linear(8) relu linear(3)", DP_OPT_ADAMW, 1, 1, 7}, /* non-private: the shuffled permutation */
        {"linear(8) relu linear(3)", DP_OPT_SGD, 0, 1, 17},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) test_resume_case(&cases[i], &tr, &te);

    /* refusals: every difference named */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/snap_3", tmpdir);
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = 1; /* reproducible noise and sampling */
    p.noise_multiplier = 1.1;
    p.max_grad_norm = 0.5;
    p.expected_batch = 32;
    p.epochs = 3;
    p.optim.lr = 0.5;
    p.optim.momentum = 0.9;
    p.seed = p.noise_seed = 5;
    p.delta = 1e-3;
    p.resume = dir;
    dp_train_result r;
    struct {
        const char *needle;
        int force_ok;
    } want[] = {{"made with max_grad_norm (C) 0.5", 0}, {"made with noise_multiplier (sigma) 1.1", 0},
                {"made with expected_batch 32", 0},    {"made with epochs 3, this run has 4 (pass force", 1},
                {"training data of", 0},               {"model", 0},
                {"made with delta 0.001", 0},          {"made with lr 0.5", 1}};
    for (int k = 0; k < 8; k++) {
        dp_train_params q = p;
        dp_dataset *d = &tr;
        const char *spec = "linear(8) tanh dropout(0.25) linear(3)";
        float saved = tr.x[5];
        switch (k) {
        case 0:
            q.max_grad_norm = 0.6;
            break;
        case 1:
            q.noise_multiplier = 1.2;
            break;
        case 2:
            q.expected_batch = 33;
            break;
        case 3:
            q.epochs = 4;
            break;
        case 4: /* one row fewer (the data's public size); its content leaves no fingerprint */
            tr.n--;
            break;
        case 5:
            spec = "linear(9) tanh dropout(0.25) linear(3)";
            break;
        case 6:
            q.delta = 1e-4;
            break;
        case 7:
            q.optim.lr = 0.25;
            break;
        }
        dp_model *m = new_model(spec, 6, 1, 1, 1);
        dp_status st = dp_train(m, d, &te, &q, &r);
        int good = st == DP_ERR_INVALID && strstr(dp_last_error(), want[k].needle);
        if (!good) fprintf(stderr, "refusal %d: %s: %s\n", k, dp_strerror(st), dp_last_error());
        CHECK(good);
        q.force = 1;
        st = dp_train(m, d, &te, &q, &r);
        CHECK(want[k].force_ok ? st == DP_OK : st == DP_ERR_INVALID);
        tr.x[5] = saved;
        tr.n = 200;
        dp_model_destroy(m);
    }
    /* the model's structure: the first layer and field that differ are named, and neither
     * force nor anything else resumes another model */
    {
        struct {
            const char *spec;
            int freeze; /* >= 0: this layer frozen */
            const char *needle;
        } sc[] = {
            {"linear(9) tanh dropout(0.25) linear(3)", -1,
             "at layer 0 (linear, name '0'): output 8x1x1 in the checkpoint, 9x1x1 in this run"},
            {"linear(8) relu dropout(0.25) linear(3)", -1, "at layer 1 (relu, name '1'): kind tanh in the checkpoint, relu"},
            {"linear(8) tanh dropout(0.25) linear(3)", 3, "at layer 3 (linear, name '3'): frozen no in the checkpoint, yes"},
            {"linear(8) tanh dropout(0.25) linear(3,nobias)", -1, "layer 3 (linear, name '3'): parameters 27 in the "
                                                                  "checkpoint, 24 in this run"},
            {"linear(8) tanh dropout(0.25) linear(3) tanh", -1, "model has 4 layers, this run's 5 (the first 4 agree)"},
            {"linear(8) tanh linear(3)", -1, "at layer 2 (linear, name '2'): kind dropout in the checkpoint, linear"},
        };
        for (size_t k = 0; k < sizeof sc / sizeof *sc; k++) {
            dp_model *m = new_model(sc[k].spec, 6, 1, 1, 1);
            if (sc[k].freeze >= 0) CHECK_OK(dp_model_set_frozen(m, sc[k].freeze, 1));
            for (int force = 0; force < 2; force++) {
                dp_train_params q = p;
                q.force = force;
                dp_status st = dp_train(m, &tr, &te, &q, &r);
                int good = st == DP_ERR_INVALID && strstr(dp_last_error(), sc[k].needle);
                if (!good) fprintf(stderr, "model %s: %s: %s\n", sc[k].spec, dp_strerror(st), dp_last_error());
                CHECK(good);
            }
            dp_model_destroy(m);
        }
    }
    /* an existing checkpoint is not replaced by a fresh run without force */
    {
        dp_train_params q = p;
        q.resume = NULL;
        q.checkpoint_dir = dir;
        dp_model *m = new_model("linear(8) tanh dropout(0.25) linear(3)", 6, 1, 1, 1);
        CHECK(dp_train(m, &tr, &te, &q, &r) == DP_ERR_INVALID);
        CHECK(strstr(dp_last_error(), "already holds a checkpoint") != NULL);
        dp_model_destroy(m);
    }
    /* corrupt checkpoints: truncated, a field mangled; and the structural check */
    char path[400], bad[400];
    snprintf(path, sizeof path, "%s/%s", dir, DP_CHECKPOINT_FILE);
    char *img = t_read_text(path);
    struct stat sb;
    stat(path, &sb);
    size_t len = (size_t)sb.st_size;
    CHECK(img != NULL);
    if (img) {
        CHECK_OK(dp_checkpoint_check(img, len, "ck"));
        snprintf(bad, sizeof bad, "%s/bad.safetensors", tmpdir);
        write_file(bad, img, len / 2);
        p.resume = bad;
        dp_model *m = new_model("linear(8) tanh dropout(0.25) linear(3)", 6, 1, 1, 1);
        CHECK(dp_train(m, &tr, &te, &p, &r) == DP_ERR_FORMAT);
        CHECK(strstr(dp_last_error(), "bad.safetensors") != NULL);
        char *f = strstr(img + 8, "\"rng.noise\":\"");
        if (f) {
            f[14] = 'z';
            CHECK(dp_checkpoint_check(img, len, "ck") == DP_ERR_FORMAT);
            CHECK(strstr(dp_last_error(), "rng.noise") != NULL);
            f[14] = '0';
        }
        f = strstr(img + 8, "\"format\":\"dpsgd-");
        if (f) {
            f[10] = 'x';
            CHECK(dp_checkpoint_check(img, len, "ck") == DP_ERR_FORMAT);
            CHECK(strstr(dp_last_error(), "not a dpsgd checkpoint") != NULL);
        }
        dp_model_destroy(m);
        free(img);
    }
    test_integrity(&tr, &te, &p);
    test_calibrated_sigma(&tr, &te, &p);
    test_no_fingerprint(&tr, &te, &p);
    dp_dataset_free(&tr);
    dp_dataset_free(&te);
}

/* ---- stop requests and the directory lock ------------------------------------------------ */

typedef struct {
    volatile sig_atomic_t *stop;
    long at;   /* set the request in the progress call of this step (mid-epoch) ... */
    int epoch; /* ... or at the end of this epoch (at 0) */
} stop_plan;

static void stop_when(void *user, const dp_train_progress *p) {
    stop_plan *s = user;
    if (s->at ? !p->epoch_end && p->step == s->at : p->epoch_end && p->epoch == s->epoch) *s->stop = 1;
}

/* whether another run could take dir's lock now (open + flock LOCK_NB, as dp_train does) */
static int lock_free(const char *dir) {
    char path[400];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0666);
    if (fd < 0) return 0;
    int ok = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd);
    return ok;
}

/* A stop request (p.stop) ends the run at the next step boundary with DP_ERR_INTERRUPTED, a
 * message naming the step and the checkpoint; a checkpoint holding exactly the steps done
 * (written mid-epoch, or the epoch-end one); resumed, the run ends bit-identical to one never
 * stopped (also for the non-private baseline's permutation at an epoch boundary). The
 * directory's lock refuses a second run naming the holder's pid, and is released on return. */
static void test_stop_and_lock(void) {
    dp_dataset tr, te;
    make_ds_dim(&tr, 200, 6, 3, 1);
    make_ds_dim(&te, 50, 6, 3, 2);
    const char *spec = "linear(8) tanh dropout(0.25) linear(3)";
    dp_train_params p = dp_train_default_params();
    p.noise_seeded = 1;
    p.noise_multiplier = 1.1;
    p.max_grad_norm = 0.5;
    p.expected_batch = 32; /* 6 steps per epoch, 18 in all */
    p.epochs = 3;
    p.optim.lr = 0.5;
    p.optim.momentum = 0.9;
    p.seed = p.noise_seed = 5;
    p.delta = 1e-3;
    volatile sig_atomic_t stop = 0;
    struct {
        int no_dp;
        long at;
        int epoch;
        const char *needle;
    } cases[] = {
        {0, 3, 0, "after 3 of 18 steps (epoch 1: 3 of its 6 steps done)"}, /* mid-epoch: written on the stop */
        {1, 0, 1, "after 6 of 18 steps (epoch 2: 0 of its 6 steps done)"}, /* the epoch-end checkpoint holds it */
    };
    for (int c = 0; c < 2; c++) {
        dp_train_params q = p;
        q.no_dp = cases[c].no_dp;
        dp_train_result ra, rb;
        dp_model *a = new_model(spec, 6, 1, 1, 9), *b = new_model(spec, 6, 1, 1, 9);
        CHECK_OK(dp_train(a, &tr, &te, &q, &ra));
        char dir[300], ck[400];
        snprintf(dir, sizeof dir, "%s/stop_%d", tmpdir, c);
        snprintf(ck, sizeof ck, "%s/%s", dir, DP_CHECKPOINT_FILE);
        stop_plan sp = {&stop, cases[c].at, cases[c].epoch};
        stop = 0;
        q.stop = &stop;
        q.checkpoint_dir = dir;
        q.progress = stop_when;
        q.progress_user = &sp;
        dp_status st = dp_train(b, &tr, &te, &q, &rb);
        CHECK(st == DP_ERR_INTERRUPTED);
        CHECK(strstr(dp_last_error(), cases[c].needle) && strstr(dp_last_error(), ck));
        if (!cases[c].no_dp) CHECK(strstr(dp_last_error(), "epsilon spent so far") != NULL);
        CHECK(lock_free(dir)); /* released on the interrupted path */
        /* resumed (into a model with other weights), without the request: as if never stopped */
        dp_model *r = new_model(spec, 6, 1, 1, 77);
        stop = 0;
        q.progress = NULL;
        q.resume = dir;
        CHECK_OK(dp_train(r, &tr, &te, &q, &rb));
        size_t n = dp_model_num_params(a);
        CHECK(memcmp(dp_model_params(a), dp_model_params(r), n * sizeof(float)) == 0);
        CHECK(ra.epsilon == rb.epsilon && ra.steps == rb.steps && ra.test_accuracy == rb.test_accuracy);
        CHECK(lock_free(dir)); /* released on success */
        dp_model_destroy(a);
        dp_model_destroy(b);
        dp_model_destroy(r);
    }
    /* asked before the first step: nothing taken, nothing written; without a directory, said so */
    {
        dp_train_params q = p;
        dp_train_result r;
        char dir[300], ck[400];
        snprintf(dir, sizeof dir, "%s/stop_first", tmpdir);
        snprintf(ck, sizeof ck, "%s/%s", dir, DP_CHECKPOINT_FILE);
        stop = 1;
        q.stop = &stop;
        q.checkpoint_dir = dir;
        dp_model *m = new_model(spec, 6, 1, 1, 9);
        CHECK(dp_train(m, &tr, &te, &q, &r) == DP_ERR_INTERRUPTED);
        CHECK(strstr(dp_last_error(), "after 0 of 18 steps") && strstr(dp_last_error(), "no step was taken"));
        CHECK(access(ck, F_OK) != 0);
        q.checkpoint_dir = NULL;
        stop = 0;
        stop_plan sp = {&stop, 2, 0};
        q.progress = stop_when;
        q.progress_user = &sp;
        CHECK(dp_train(m, &tr, &te, &q, &r) == DP_ERR_INTERRUPTED);
        CHECK(strstr(dp_last_error(), "after 2 of 18 steps") && strstr(dp_last_error(), "not saved"));
        dp_model_destroy(m);
    }
    /* the lock: a run on a directory another holds is refused naming the holder's pid */
    {
        char dir[300], lock[400];
        snprintf(dir, sizeof dir, "%s/locked", tmpdir);
        snprintf(lock, sizeof lock, "%s/.lock", dir);
        mkdir(dir, 0777);
        int fd = open(lock, O_RDWR | O_CREAT, 0666);
        CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && write(fd, "4242\n", 5) == 5);
        dp_train_params q = p;
        dp_train_result r;
        q.checkpoint_dir = dir;
        dp_model *m = new_model(spec, 6, 1, 1, 9);
        CHECK(dp_train(m, &tr, &te, &q, &r) == DP_ERR_INVALID);
        CHECK(strstr(dp_last_error(), "in use by another run (pid 4242") && strstr(dp_last_error(), lock));
        char ck[400];
        snprintf(ck, sizeof ck, "%s/%s", dir, DP_CHECKPOINT_FILE);
        CHECK(access(ck, F_OK) != 0); /* nothing written */
        close(fd);
        CHECK_OK(dp_train(m, &tr, &te, &q, &r)); /* released: the run goes ahead, and records its pid */
        char *txt = t_read_text(lock);
        char want[32];
        snprintf(want, sizeof want, "%ld\n", (long)getpid());
        CHECK(txt && !strcmp(txt, want));
        free(txt);
        dp_model_destroy(m);
    }
    dp_dataset_free(&tr);
    dp_dataset_free(&te);
}

/* ---- checkpoint integrity --------------------------------------------------------------- */

/* Writes img (len bytes) to tmpdir/NAME/checkpoint.safetensors, NAME's directory to dir. With
 * `reseal`, the checksum field is first set to the content's checksum, as a deliberate edit
 * would do, so that only the history cross-check stands between the edit and the accountant. */
static void put_checkpoint(const char *name, const char *img, size_t len, int reseal, char *dir, size_t cap) {
    snprintf(dir, cap, "%s/%s", tmpdir, name);
    mkdir(dir, 0777);
    char *copy = malloc(len + 1), path[400];
    memcpy(copy, img, len + 1);
    if (reseal) {
        dp_safetensors *s = NULL;
        char *f = strstr(copy + 8, "\"checksum\":\"");
        CHECK(f != NULL);
        CHECK_OK(dp_safetensors_parse(copy, len, "reseal", &s));
        if (f && s) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016" PRIx64, dp_checkpoint_content_checksum(s));
            memcpy(f + 12, hex, 16);
        }
        dp_safetensors_destroy(s);
    }
    snprintf(path, sizeof path, "%s/%s", dir, DP_CHECKPOINT_FILE);
    CHECK(write_file(path, copy, len));
    free(copy);
}

/* As put_checkpoint, resealed, with the metadata values of keys[0..n) replaced by vals[0..n)
 * (the header is rewritten, so a value may change its length). */
static void put_edited_checkpoint(const char *name, const char *img, size_t len, const char *const *keys,
                                  const char *const *vals, int n, char *dir, size_t cap) {
    snprintf(dir, cap, "%s/%s", tmpdir, name);
    mkdir(dir, 0777);
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, DP_CHECKPOINT_FILE);
    dp_safetensors *s = NULL, *w = NULL;
    CHECK_OK(dp_safetensors_parse(img, len, "edit", &s));
    if (!s) return;
    const int nm = dp_safetensors_num_meta(s), nt = dp_safetensors_num_tensors(s);
    const char **kv = calloc(2 * (size_t)nm, sizeof *kv);
    dp_st_tensor *t = calloc((size_t)nt + 1, sizeof *t);
    int ck = -1;
    char hex[17] = "";
    for (int i = 0; i < nm; i++) {
        dp_safetensors_meta_at(s, i, &kv[2 * i], &kv[2 * i + 1]);
        for (int k = 0; k < n; k++)
            if (!strcmp(kv[2 * i], keys[k])) kv[2 * i + 1] = vals[k];
        if (!strcmp(kv[2 * i], "checksum")) ck = i;
    }
    for (int i = 0; i < nt; i++) {
        const int64_t *shape;
        CHECK_OK(dp_safetensors_tensor(s, i, &t[i].name, &t[i].dtype, &t[i].ndim, &shape, &t[i].data, NULL));
        memcpy(t[i].shape, shape, sizeof(int64_t) * (size_t)t[i].ndim);
    }
    /* written twice: the checksum covers the file as written */
    CHECK(ck >= 0);
    CHECK_OK(dp_safetensors_save(path, t, nt, kv, nm));
    CHECK_OK(dp_safetensors_load(path, &w));
    if (w && ck >= 0) {
        snprintf(hex, sizeof hex, "%016" PRIx64, dp_checkpoint_content_checksum(w));
        kv[2 * ck + 1] = hex;
        CHECK_OK(dp_safetensors_save(path, t, nt, kv, nm));
    }
    dp_safetensors_destroy(w);
    dp_safetensors_destroy(s);
    free(kv);
    free(t);
}

/* resumes the run of test_resume's refusals (base: its parameters) from dir */
static dp_status resume_from(const char *dir, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *base,
                             int force, dp_train_result *r) {
    dp_train_params p = *base;
    p.resume = dir;
    p.checkpoint_dir = NULL;
    p.force = force;
    dp_model *m = new_model("linear(8) tanh dropout(0.25) linear(3)", 6, 1, 1, 1);
    dp_status st = dp_train(m, tr, te, &p, r);
    dp_model_destroy(m);
    return st;
}

/* An edited or damaged checkpoint never resumes, with or without force: the message names the
 * file (its directory) and `needle`. */
static void expect_refused(const char *dir, const dp_dataset *tr, const dp_dataset *te, const dp_train_params *base,
                           const char *needle) {
    dp_train_result r;
    for (int force = 0; force < 2; force++) {
        dp_status st = resume_from(dir, tr, te, base, force, &r);
        int good = (st == DP_ERR_FORMAT || st == DP_ERR_INVALID || st == DP_ERR_UNSUPPORTED) &&
                   strstr(dp_last_error(), dir) && strstr(dp_last_error(), needle);
        if (!good)
            fprintf(stderr, "%s (force %d): %s: %s (want '%s')\n", dir, force, dp_strerror(st),
                    st ? dp_last_error() : "resumed", needle);
        CHECK(good);
    }
}

/* the token after the n-th space of the accountant history's first entry ("q sigma steps") */
static char *history_token(char *img, int n) {
    char *v = strstr(img + 8, "\"accountant\":\"");
    if (!v) return NULL;
    v += 14;
    for (int i = 0; i < n && v; i++) v = strchr(v, ' ') ? strchr(v, ' ') + 1 : NULL;
    return v;
}

/* Called by test_resume: edits the checkpoint in snap_3 (the resumed run's last one, of a
 * private run with noise_multiplier 1.1 and q = 32/200) one way at a time. */
static void test_integrity(const dp_dataset *tr, const dp_dataset *te, const dp_train_params *base) {
    char path[400], dir[400];
    snprintf(path, sizeof path, "%s/snap_3/%s", tmpdir, DP_CHECKPOINT_FILE);
    char *img = t_read_text(path);
    struct stat sb;
    CHECK(img != NULL && stat(path, &sb) == 0);
    if (!img) return;
    size_t len = (size_t)sb.st_size;
    dp_train_result ref, r;
    /* untouched, and resealed without an edit: resumes */
    put_checkpoint("int_clean", img, len, 0, dir, sizeof dir);
    CHECK_OK(resume_from(dir, tr, te, base, 0, &ref));
    put_checkpoint("int_resealed", img, len, 1, dir, sizeof dir);
    CHECK_OK(resume_from(dir, tr, te, base, 0, &r));
    CHECK(r.epsilon == ref.epsilon);

    /* format 2 (the model as dp_model_describe text) still resumes, with the same result; its
     * text must match this run's; a version this build does not read is refused */
    {
        dp_model *m = new_model("linear(8) tanh dropout(0.25) linear(3)", 6, 1, 1, 1);
        char text[4096];
        dp_model_describe(m, text, sizeof text);
        dp_model_destroy(m);
        const char *keys[2] = {"version", "model"}, *v2[2] = {"2", text};
        put_edited_checkpoint("int_v2", img, len, keys, v2, 2, dir, sizeof dir);
        CHECK_OK(resume_from(dir, tr, te, base, 0, &r));
        CHECK(r.epsilon == ref.epsilon && r.test_accuracy == ref.test_accuracy && r.test_loss == ref.test_loss);
        text[strcspn(text, "\n") + 1] = '\0'; /* the input line only */
        put_edited_checkpoint("int_v2_model", img, len, keys, v2, 2, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "the checkpoint's model differs from this run's");
        const char *v4[1] = {"4"};
        put_edited_checkpoint("int_v4", img, len, keys, v4, 1, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "checkpoint version '4' (this build reads 2 and 3)");
        /* the structure record as written, and one of its fields edited (resealed) */
        dp_safetensors *s = NULL;
        CHECK_OK(dp_safetensors_parse(img, len, "ck", &s));
        const char *rec = s ? dp_safetensors_meta(s, "model") : NULL;
        CHECK(rec && !strcmp(rec, "input 6 features\n"
                                  "layer 0: kind linear; inputs input; output 8x1x1; parameters 56; frozen no; name 0\n"
                                  "layer 1: kind tanh; inputs 0; output 8x1x1; parameters 0; frozen no; name 1\n"
                                  "layer 2: kind dropout; inputs 1; output 8x1x1; parameters 0; frozen no; name 2\n"
                                  "layer 3: kind linear; inputs 2; output 3x1x1; parameters 27; frozen no; name 3\n"));
        char *edited = rec ? strdup(rec) : NULL;
        char *f = edited ? strstr(edited, "inputs 1;") : NULL;
        CHECK(f != NULL);
        if (f) {
            f[7] = '0';
            const char *v3[2] = {"3", edited};
            put_edited_checkpoint("int_record", img, len, keys, v3, 2, dir, sizeof dir);
            expect_refused(dir, tr, te, base, "at layer 2 (dropout, name '2'): inputs 0 in the checkpoint, 1 in this run");
        }
        free(edited);
        dp_safetensors_destroy(s);
    }

    /* one hex digit of sigma in the history (1.1 = 0x1.199999999999ap+0 becomes 0x1.899...:
     * epsilon would drop); plain and with the checksum recomputed */
    char *sg = history_token(img, 1);
    CHECK(sg != NULL && !strncmp(sg, "0x1.", 4));
    if (sg) {
        char saved = sg[4];
        sg[4] = saved == '8' ? '9' : '8';
        put_checkpoint("int_sigma", img, len, 0, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "corrupt or edited");
        put_checkpoint("int_sigma_resealed", img, len, 1, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "'accountant'");
        CHECK(strstr(dp_last_error(), "sigma") && strstr(dp_last_error(), "force cannot override"));
        sg[4] = saved;
    }
    /* q in the history divided by 64 (same text length: only the exponent changes) */
    char *qt = history_token(img, 0);
    CHECK(qt != NULL);
    if (qt) {
        char *end, saved[40], edited[40];
        double q = strtod(qt, &end);
        size_t n = (size_t)(end - qt);
        snprintf(edited, sizeof edited, "%a", q / 64);
        CHECK(q == 32.0 / 200 && n < sizeof saved && strlen(edited) == n);
        if (n < sizeof saved && strlen(edited) == n) {
            memcpy(saved, qt, n);
            memcpy(qt, edited, n);
            put_checkpoint("int_q", img, len, 0, dir, sizeof dir);
            expect_refused(dir, tr, te, base, "corrupt or edited");
            put_checkpoint("int_q_resealed", img, len, 1, dir, sizeof dir);
            expect_refused(dir, tr, te, base, "'accountant'");
            CHECK(strstr(dp_last_error(), "entry 1 has q"));
            memcpy(qt, saved, n);
        }
    }
    /* the history's step count (resealed): its last digit changed */
    char *kt = history_token(img, 2);
    CHECK(kt != NULL && kt[0] >= '1' && kt[0] <= '9');
    if (kt && kt[0] >= '1' && kt[0] <= '9') {
        char *last = kt + strspn(kt, "0123456789") - 1, saved = *last, needle[40];
        *last = saved == '0' ? '9' : (char)(saved - 1);
        snprintf(needle, sizeof needle, "holds %ld steps", strtol(kt, NULL, 10));
        put_checkpoint("int_steps_resealed", img, len, 1, dir, sizeof dir);
        expect_refused(dir, tr, te, base, needle);
        *last = saved;
    }
    /* one byte of the first weight tensor flipped */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)img[i];
    char *w = strstr(img + 8, "\"0.weight\":");
    char *o = w ? strstr(w, "\"data_offsets\":[") : NULL;
    CHECK(o != NULL);
    if (o) {
        size_t at = 8 + (size_t)hlen + (size_t)strtoull(o + 16, NULL, 10) + 1;
        CHECK(at < len);
        img[at] ^= 0x01;
        put_checkpoint("int_weight", img, len, 0, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "corrupt or edited");
        img[at] ^= 0x01;
    }
    /* checksum field missing (key renamed in place), and a version 1 checkpoint */
    char *ck = strstr(img + 8, "\"checksum\":\"");
    CHECK(ck != NULL);
    if (ck) {
        ck[8] = 'M';
        put_checkpoint("int_nosum", img, len, 0, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "'checksum' is missing: the checkpoint is corrupt or edited");
        ck[8] = 'm';
    }
    char *ver = strstr(img + 8, "\"version\":\"");
    CHECK(ver != NULL);
    if (ver) {
        char saved = ver[11];
        ver[11] = '1';
        put_checkpoint("int_v1", img, len, 1, dir, sizeof dir);
        expect_refused(dir, tr, te, base, "predates integrity checks");
        ver[11] = saved;
    }
    free(img);
}

/* ---- secure mode ------------------------------------------------------------------------ */

/* ChaCha20 block (RFC 8439 2.3) written plainly, as the reference for the library's batched
 * (AVX2) generator: the state's counter is 64 bits in words 12-13, the nonce words 0. */
static uint32_t ref_rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }
static void ref_chacha(const uint32_t key[8], uint64_t counter, uint32_t out[16]) {
    uint32_t in[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574}, x[16];
    memcpy(in + 4, key, 32);
    in[12] = (uint32_t)counter;
    in[13] = (uint32_t)(counter >> 32);
    in[14] = in[15] = 0;
    memcpy(x, in, sizeof x);
#define RQ(a, b, c, d)                                                                                                 \
    x[a] += x[b], x[d] = ref_rotl(x[d] ^ x[a], 16), x[c] += x[d], x[b] = ref_rotl(x[b] ^ x[c], 12), x[a] += x[b],     \
    x[d] = ref_rotl(x[d] ^ x[a], 8), x[c] += x[d], x[b] = ref_rotl(x[b] ^ x[c], 7)
    for (int i = 0; i < 10; i++) {
        RQ(0, 4, 8, 12), RQ(1, 5, 9, 13), RQ(2, 6, 10, 14), RQ(3, 7, 11, 15);
        RQ(0, 5, 10, 15), RQ(1, 6, 11, 12), RQ(2, 7, 8, 13), RQ(3, 4, 9, 14);
    }
#undef RQ
    for (int i = 0; i < 16; i++) out[i] = x[i] + in[i];
}

/* the generator's first 40 blocks (several batches of 8) equal the plain reference's */
static void test_chacha_stream(void) {
    unsigned char key[32];
    uint32_t kw[8];
    for (int i = 0; i < 32; i++) key[i] = (unsigned char)(37 * i + 11);
    for (int i = 0; i < 8; i++)
        kw[i] = (uint32_t)key[4 * i] | (uint32_t)key[4 * i + 1] << 8 | (uint32_t)key[4 * i + 2] << 16 |
                (uint32_t)key[4 * i + 3] << 24;
    dp_csprng *g = NULL;
    CHECK_OK(dp_csprng_create_from_key(key, &g));
    if (!g) return;
    int same = 1;
    for (uint64_t b = 0; b < 40; b++) {
        uint32_t w[16];
        ref_chacha(kw, b, w);
        for (int i = 0; i < 16; i += 2) same &= dp_csprng_u64(g) == ((uint64_t)w[i] | (uint64_t)w[i + 1] << 32);
    }
    CHECK(same);
    dp_csprng_destroy(g);
}

/* The secure noise from one key is the same whatever makes the keystream and however many
 * threads run: OpenSSL's ChaCha20 (libcrypto) on all threads, the built-in generator (the
 * path taken where libcrypto has no ChaCha20) on all threads, and libcrypto on one thread;
 * over whole blocks and a last block that ends inside a 64-byte ChaCha20 block (100 and 50
 * words). Where libcrypto offers ChaCha20 its path must have made the blocks of the libcrypto
 * runs (the two would otherwise agree trivially). (test_chacha_stream checks the built-in
 * generator's words against the plain reference.) */
static void test_chacha_paths(void) {
    const int nt = omp_get_max_threads();
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "ChaCha20", "provider=default");
    if (!c) printf("chacha paths: libcrypto has no ChaCha20 here: the built-in path only\n");
    unsigned char key[32];
    for (int i = 0; i < 32; i++) key[i] = (unsigned char)(91 * i + 5);
    const size_t sizes[2] = {3 * 4096 + 100, 2 * 4096 + 50};
    for (int t = 0; t < 2; t++) {
        const size_t n = sizes[t];
        float *g[3];
        for (int p = 0; p < 3; p++) { /* 0: libcrypto, 1: built-in, both on all threads; 2: one thread */
            dp_csprng *r = NULL;
            CHECK_OK(dp_csprng_create_from_key(key, &r));
            g[p] = calloc(n, sizeof(float));
            if (!r || !g[p]) return;
            dp__noise_libcrypto = p != 1;
            omp_set_num_threads(p == 2 ? 1 : (nt > 1 ? nt : 2));
            const unsigned long made = dp__noise_libcrypto_blocks;
            dp_secure_noise_gaussian(g[p], n, 1.5, r);
            const unsigned long by_libcrypto = dp__noise_libcrypto_blocks - made, blocks = (n + 4095) / 4096;
            CHECK(by_libcrypto == (p != 1 && c ? blocks : 0));
            dp_csprng_destroy(r);
        }
        dp__noise_libcrypto = 1;
        omp_set_num_threads(nt);
        CHECK(memcmp(g[0], g[1], n * sizeof(float)) == 0);
        CHECK(memcmp(g[0], g[2], n * sizeof(float)) == 0);
        size_t nz = 0;
        for (size_t i = 0; i < n; i++) nz += g[0][i] != 0.0f;
        CHECK(nz > n - 10);
        for (int p = 0; p < 3; p++) free(g[p]);
    }
    EVP_CIPHER_free(c);
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_secure(void) {
    test_chacha_stream();
    test_chacha_paths();
    /* RFC 7539 appendix A.1, test vector 1: zero key, zero nonce, counter 0 */
    unsigned char key[32] = {0};
    dp_csprng *k = NULL;
    CHECK_OK(dp_csprng_create_from_key(key, &k));
    if (k) {
        CHECK(dp_csprng_u64(k) == 0x903df1a0ade0b876ULL);
        CHECK(dp_csprng_u64(k) == 0x28bd8653e56a5d40ULL);
        dp_csprng_destroy(k);
    }
    dp_csprng *a = NULL, *b = NULL;
    CHECK_OK(dp_csprng_create(&a));
    CHECK_OK(dp_csprng_create(&b));
    if (!a || !b) return;
    CHECK(dp_csprng_u64(a) != dp_csprng_u64(b));
    /* noise: on the grid, mean 0, variance std^2, skewness 0, kurtosis 3 */
    const size_t n = 400000;
    float *g = calloc(n, sizeof(float));
    const double std = 0.37;
    dp_secure_noise_gaussian(g, n, std, a);
    double lam = dp_secure_noise_grid(std);
    CHECK(lam == 0x1p-21); /* 2^-2 < 0.37 <= 2^-1: 2^(-1-20) */
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    int on_grid = 1;
    for (size_t i = 0; i < n; i++) {
        double x = g[i] / std;
        on_grid &= (double)g[i] / lam == nearbyint((double)g[i] / lam);
        s1 += x;
        s2 += x * x;
        s3 += x * x * x;
        s4 += x * x * x * x;
    }
    CHECK(on_grid);
    double mean = s1 / n, var = s2 / n - mean * mean;
    CHECK(fabs(mean) < 5 / sqrt((double)n));
    CHECK(fabs(var - 1) < 5 * sqrt(2.0 / n));
    CHECK(fabs(s3 / n) < 5 * sqrt(15.0 / n));
    CHECK(fabs(s4 / n - 3) < 5 * sqrt(96.0 / n));
    /* normality: the fraction within 1, 2 sigma */
    size_t w1 = 0, w2 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs(g[i] / std);
        w1 += x < 1;
        w2 += x < 2;
    }
    CHECK(fabs((double)w1 / n - 0.682689492) < 0.004);
    CHECK(fabs((double)w2 / n - 0.954499736) < 0.002);
    /* the whole distribution (the ziggurat on the keystream): Kolmogorov-Smirnov against the
     * normal CDF, and the tails: beyond 3 sigma and beyond the ziggurat's base r = 3.6542
     * (its tail method), each within 6 standard deviations of the expected count. The noise is
     * fresh from the OS: the bounds are wide enough to fail by chance about once in 1e5 runs. */
    {
        double *zs = malloc(sizeof(double) * n);
        for (size_t i = 0; i < n; i++) zs[i] = g[i] / std;
        qsort(zs, n, sizeof *zs, cmp_double);
        double D = 0;
        size_t t3 = 0, tr = 0;
        for (size_t i = 0; i < n; i++) {
            const double F = 0.5 * erfc(-zs[i] / sqrt(2.0));
            D = fmax(D, fmax(fabs(F - (double)i / n), fabs(F - (double)(i + 1) / n)));
            t3 += fabs(zs[i]) > 3;
            tr += fabs(zs[i]) > 3.6541528853610088;
        }
        const double p3 = erfc(3 / sqrt(2.0)), pr = erfc(3.6541528853610088 / sqrt(2.0));
        CHECK(sqrt((double)n) * D < 2.5);
        CHECK(fabs((double)t3 - n * p3) < 6 * sqrt(n * p3));
        CHECK(fabs((double)tr - n * pr) < 6 * sqrt(n * pr));
        if (!(sqrt((double)n) * D < 2.5) || !(fabs((double)tr - n * pr) < 6 * sqrt(n * pr)))
            fprintf(stderr, "secure noise: sqrt(n) D %.3f, beyond 3: %zu (expected %.0f), beyond r: %zu (expected %.0f)\n",
                    sqrt((double)n) * D, t3, n * p3, tr, n * pr);
        free(zs);
    }
    /* sampling rate */
    size_t *idx = malloc(sizeof(size_t) * 100000), cnt = 0;
    CHECK_OK(dp_secure_poisson_sample(a, 100000, 0.05, idx, &cnt));
    CHECK(fabs((double)cnt - 5000) < 5 * sqrt(5000 * 0.95));
    int sorted = 1;
    for (size_t i = 1; i < cnt; i++) sorted &= idx[i] > idx[i - 1];
    CHECK(sorted);
    CHECK(dp_secure_poisson_sample(a, 10, 1.5, idx, &cnt) == DP_ERR_RANGE);
    free(idx);
    free(g);
    dp_csprng_destroy(a);
    dp_csprng_destroy(b);
    /* two default training runs (OS-seeded noise) differ; the same noise seed twice does not */
    dp_dataset tr;
    make_ds_dim(&tr, 120, 4, 2, 3);
    dp_train_params p = dp_train_default_params();
    p.noise_multiplier = 1.0;
    p.expected_batch = 20;
    p.epochs = 1;
    p.delta = 1e-3;
    p.optim.lr = 0.1;
    dp_model *m1 = new_model("linear(2)", 4, 1, 1, 1), *m2 = new_model("linear(2)", 4, 1, 1, 1);
    dp_model *m3 = new_model("linear(2)", 4, 1, 1, 1), *m4 = new_model("linear(2)", 4, 1, 1, 1);
    const size_t bytes = sizeof(float) * dp_model_num_params(m1);
    CHECK(memcmp(dp_model_params(m1), dp_model_params(m2), bytes) == 0); /* the same initialisation */
    dp_train_result r;
    CHECK_OK(dp_train(m1, &tr, NULL, &p, &r));
    CHECK_OK(dp_train(m2, &tr, NULL, &p, &r));
    CHECK(memcmp(dp_model_params(m1), dp_model_params(m2), bytes) != 0);
    for (size_t i = 0; i < dp_model_num_params(m1); i++) CHECK(isfinite(dp_model_params(m1)[i]));
    /* the default keeps no non-private statistic */
    CHECK(r.mean_batch == 0 && r.empty_batches == 0 && r.nonfinite_samples == 0);
    p.noise_seeded = 1;
    p.noise_seed = 5;
    CHECK_OK(dp_train(m3, &tr, NULL, &p, &r));
    CHECK_OK(dp_train(m4, &tr, NULL, &p, &r));
    CHECK(memcmp(dp_model_params(m3), dp_model_params(m4), bytes) == 0);
    CHECK(memcmp(dp_model_params(m3), dp_model_params(m1), bytes) != 0);
    dp_model_destroy(m1);
    dp_model_destroy(m2);
    dp_model_destroy(m3);
    dp_model_destroy(m4);
    dp_dataset_free(&tr);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/test_checkpoint.XXXXXX", DP_BINARY_DIR);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_roundtrip();
    test_malformed();
    test_resume();
    test_stop_and_lock();
    test_secure();
    if (t_remove_dir(tmpdir) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return t_finish("test_checkpoint");
}

/* A sigma calibrated to --epsilon is recomputed on resume, not read: a checkpoint whose sigma
 * (and history, and checksum) were edited consistently is refused. */
static void test_calibrated_sigma(const dp_dataset *tr, const dp_dataset *te, const dp_train_params *base) {
    dp_train_params p = *base;
    p.noise_multiplier = 0; /* calibrate */
    p.target_epsilon = 4;
    p.accountant = DP_ACCT_RDP; /* quick to calibrate */
    p.resume = NULL;
    char dir[400], path[480];
    snprintf(dir, sizeof dir, "%s/cal", tmpdir);
    p.checkpoint_dir = dir;
    dp_model *m = new_model("linear(8) tanh dropout(0.25) linear(3)", 6, 1, 1, 1);
    dp_train_result r;
    CHECK_OK(dp_train(m, tr, te, &p, &r));
    dp_model_destroy(m);
    p.checkpoint_dir = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, DP_CHECKPOINT_FILE);
    char *img = t_read_text(path);
    struct stat sb;
    CHECK(img != NULL && stat(path, &sb) == 0);
    if (!img) return;
    const size_t len = (size_t)sb.st_size;
    /* untouched: resumes (at its last step: nothing left to do) */
    put_checkpoint("cal_clean", img, len, 0, dir, sizeof dir);
    CHECK_OK(resume_from(dir, tr, te, &p, 0, &r));
    /* the first hex digit of sigma's mantissa, in the configuration and in every history
     * entry alike, then resealed: a coherent edit that lowers or raises the reported epsilon */
    char *cfg = strstr(img + 8, "\"sigma\":\"0x1.");
    char *hist = history_token(img, 1);
    CHECK(cfg != NULL && hist != NULL && !strncmp(hist, "0x1.", 4));
    if (cfg && hist && !strncmp(hist, "0x1.", 4)) {
        char *d1 = cfg + strlen("\"sigma\":\"0x1."), *d2 = hist + 4;
        char nd = *d1 == '8' ? '9' : '8';
        CHECK(*d1 == *d2);
        *d1 = *d2 = nd;
        put_checkpoint("cal_sigma_resealed", img, len, 1, dir, sizeof dir);
        expect_refused(dir, tr, te, &p, "calibrates to");
    }
    free(img);
}

/* A checkpoint holds nothing computed from the private data but the trained state: no hash
 * of the records (whoever knows all records but one could test candidates for the last against
 * it), and no accuracy or loss on a test split held out from the private data unless
 * report_nonprivate. So a resume on data that differs in one label is not told apart. */
static void test_no_fingerprint(dp_dataset *tr, const dp_dataset *te, const dp_train_params *base) {
    dp_train_params p = *base;
    char dir[400], path[480];
    snprintf(dir, sizeof dir, "%s/fp", tmpdir);
    p.resume = NULL;
    p.checkpoint_dir = dir;
    p.epochs = 1;
    p.test_private = 1;
    dp_model *m = new_model("linear(8) tanh dropout(0.25) linear(3)", 6, 1, 1, 1);
    dp_train_result r;
    CHECK_OK(dp_train(m, tr, te, &p, &r));
    CHECK(r.test_accuracy >= 0); /* the caller gets it; the file does not */
    snprintf(path, sizeof path, "%s/%s", dir, DP_CHECKPOINT_FILE);
    dp_safetensors *s = NULL;
    dp_checkpoint_info c;
    memset(&c, 0, sizeof c);
    CHECK_OK(dp_safetensors_load(path, &s));
    if (s) {
        const char *v = NULL;
        CHECK(dp_meta_string(s, "data_checksum", &v) != DP_OK);
        CHECK_OK(dp_checkpoint_info_read(s, &c));
        CHECK(c.test_accuracy < 0 && c.test_loss == 0);
        dp_checkpoint_info_free(&c);
        dp_safetensors_destroy(s);
    }
    dp_clear_error();
    /* one label changed: resumed like the original (nothing in the file tells them apart) */
    const int32_t y0 = tr->y[0];
    tr->y[0] = (y0 + 1) % 3;
    p.checkpoint_dir = NULL;
    p.resume = dir;
    p.epochs = 2;
    p.force = 1;
    CHECK_OK(dp_train(m, tr, te, &p, &r));
    tr->y[0] = y0;
    dp_model_destroy(m);
}
