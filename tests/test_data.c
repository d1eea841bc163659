/* test_data.c: .npy and IDX readers, dataset validation and standardisation.
 * Fixtures are written at run time into a mkdtemp directory under /tmp and removed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "test.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static char tmpdir[64];

/* expr must fail with status want, and the message must contain needle (the file name) */
#define CHECK_FAIL(expr, want, needle)                                                        \
    do {                                                                                      \
        dp_clear_error();                                                                     \
        dp_status s_ = (expr);                                                                \
        const char *m_ = dp_last_error();                                                     \
        if (s_ == (want) && strstr(m_, (needle)) != NULL) t_pass++;                           \
        else {                                                                                \
            t_fail++;                                                                         \
            fprintf(stderr, "%s:%d: %s returned %s (\"%s\"), expected %s with \"%s\"\n",      \
                    __FILE__, __LINE__, #expr, dp_strerror(s_), m_, dp_strerror(want),        \
                    (needle));                                                                \
        }                                                                                     \
    } while (0)

/* the last error message does NOT contain needle: a message about the content of private data
 * names the dataset and the rule, never the value, its row or column (docs/privacy.md) */
#define CHECK_LACKS(needle) t_check_lacks(__FILE__, __LINE__, dp_last_error(), (needle))

/* path of a fixture in tmpdir; each call returns a new slot of a small ring */
static const char *fx(const char *name) {
    static char ring[8][512];
    static int k;
    char *p = ring[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static const char *write_file(const char *name, const void *buf, size_t n) {
    const char *p = fx(name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(buf, 1, n, f) != n) {
        fprintf(stderr, "cannot write fixture %s\n", p);
        exit(2);
    }
    fclose(f);
    return p;
}

static const char *write_gz(const char *name, const void *buf, size_t n) {
    const char *p = fx(name);
    gzFile g = gzopen(p, "wb");
    if (!g || (n && gzwrite(g, buf, (unsigned)n) != (int)n) || gzclose(g) != Z_OK) {
        fprintf(stderr, "cannot write gzip fixture %s\n", p);
        exit(2);
    }
    return p;
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static int count_tmpdir_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

/* ---- .npy -------------------------------------------------------------------------------- */

static void test_npy_reference(void) {
    /* out-parameters are written only on success: start from zeroed values so that a missing
     * fixture is a failed check and the frees below stay harmless */
    dp_npy a = {0}, y = {0}, d = {0}, c = {0}, l = {0};
    const char *p = DP_REFERENCE_DIR "/cases/mlp/input_x.npy";
    CHECK_OK(dp_npy_load(p, &a));
    CHECK(a.dtype == DP_NPY_F32 && a.ndim == 2 && a.shape[0] == 16 && a.shape[1] == 784);
    CHECK(a.count == 16 * 784 && a.data != NULL);
    if (a.data) CHECK_CLOSE(((float *)a.data)[0], 0.2952568531036377, 1e-7);

    CHECK_OK(dp_npy_load(DP_REFERENCE_DIR "/cases/mlp/target_y.npy", &y));
    CHECK(y.dtype == DP_NPY_I64 && y.ndim == 1 && y.shape[0] == 16 && y.count == 16);
    int labels_ok = y.data != NULL;
    for (size_t i = 0; labels_ok && i < y.count; i++)
        labels_ok = ((int64_t *)y.data)[i] >= 0 && ((int64_t *)y.data)[i] <= 9;
    CHECK(labels_ok);
    if (y.data) CHECK(((int64_t *)y.data)[0] == 9 && ((int64_t *)y.data)[15] == 4);

    /* float64 case: same inputs as the float32 case, cast; load_f32 must give them exactly */
    CHECK_OK(dp_npy_load(DP_REFERENCE_DIR "/cases/cnn/input_x.npy", &c));
    CHECK_OK(dp_npy_load(DP_REFERENCE_DIR "/cases/cnn_f64/input_x.npy", &d));
    CHECK(d.dtype == DP_NPY_F64 && d.ndim == 4 && d.shape[0] == 8 && d.shape[1] == 1 && d.shape[3] == 28);
    if (c.data) CHECK_CLOSE(((float *)c.data)[0], -1.5408073663711548, 1e-7);
    float *f = NULL;
    int64_t shape[8];
    int ndim = -1;
    size_t count = 0;
    CHECK_OK(dp_npy_load_f32(DP_REFERENCE_DIR "/cases/cnn_f64/input_x.npy", &f, shape, &ndim, &count));
    CHECK(ndim == 4 && shape[0] == 8 && shape[1] == 1 && shape[2] == 28 && shape[3] == 28 && shape[4] == 0 &&
          count == 8 * 784);
    CHECK(f && c.data && c.count == count && memcmp(f, c.data, count * sizeof(float)) == 0);
    dp_free(f);
    dp_npy_free(&c);

    /* i64 -> f32 */
    f = NULL;
    CHECK_OK(dp_npy_load_f32(DP_REFERENCE_DIR "/cases/mlp/target_y.npy", &f, NULL, NULL, &count));
    CHECK(count == 16);
    if (f && y.data) CHECK(f[0] == 9.0f && f[15] == 4.0f);
    dp_free(f);

    CHECK_OK(dp_npy_load(DP_REFERENCE_DIR "/cases/cnn_f64/logits.npy", &l));
    CHECK(l.dtype == DP_NPY_F64 && l.ndim == 2 && l.shape[1] == 10);
    dp_npy_free(&l);
    dp_npy_free(&a);
    dp_npy_free(&y);
    dp_npy_free(&d);
    dp_npy_free(&d); /* zeroed: a second free is harmless */
    dp_npy_free(NULL);
    CHECK(d.data == NULL && d.count == 0);
}

static void test_npy_roundtrip(void) {
    static const dp_npy_dtype types[] = {DP_NPY_F32, DP_NPY_F64, DP_NPY_I64, DP_NPY_I32, DP_NPY_U8};
    static const int64_t shapes[][3] = {{5, 0, 0}, {3, 4, 0}, {2, 3, 5}, {0, 0, 0}, {0, 7, 0}};
    static const int ndims[] = {1, 2, 3, 0, 2};
    dp_rng r;
    dp_rng_seed(&r, 7);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t k = 0; k < sizeof ndims / sizeof ndims[0]; k++) {
            size_t count = 1;
            for (int i = 0; i < ndims[k]; i++) count *= (size_t)shapes[k][i];
            size_t bytes = count * dp_npy_dtype_size(types[t]);
            unsigned char *buf = dp_alloc(bytes + 1);
            for (size_t i = 0; i < bytes; i++) buf[i] = (unsigned char)dp_rng_u64(&r);
            if (types[t] == DP_NPY_F32 && count > 1) { /* special values survive too */
                float nan = NAN, inf = -INFINITY;
                memcpy(buf, &nan, 4);
                memcpy(buf + 4, &inf, 4);
            }
            char name[64];
            snprintf(name, sizeof name, "rt_%zu_%zu.npy", t, k);
            const char *p = fx(name);
            CHECK_OK(dp_npy_save(p, types[t], ndims[k], shapes[k], buf));
            /* numpy's layout: magic, version 1.0, header padded to a multiple of 64 */
            unsigned char head[10] = {0};
            FILE *fh = fopen(p, "rb");
            struct stat st;
            CHECK(fh && fread(head, 1, 10, fh) == 10);
            if (fh) fclose(fh);
            CHECK(memcmp(head, "\x93NUMPY\x01\x00", 8) == 0);
            size_t hlen = (size_t)head[8] | (size_t)head[9] << 8;
            CHECK((10 + hlen) % 64 == 0);
            CHECK(stat(p, &st) == 0 && (size_t)st.st_size == 10 + hlen + bytes);

            dp_npy a;
            memset(&a, 0, sizeof a);
            CHECK_OK(dp_npy_load(p, &a));
            CHECK(a.dtype == types[t] && a.ndim == ndims[k] && a.count == count);
            for (int i = 0; i < ndims[k]; i++) CHECK(a.shape[i] == shapes[k][i]);
            if (a.data) CHECK(memcmp(a.data, buf, bytes) == 0);
            dp_npy_free(&a);
            dp_free(buf);
        }
    }
    /* overwriting an existing file replaces it; no temporary files are left behind */
    int64_t sh[1] = {3};
    float v1[3] = {1, 2, 3}, v2[3] = {4, 5, 6};
    const char *p = fx("over.npy");
    int before = count_tmpdir_files();
    CHECK_OK(dp_npy_save(p, DP_NPY_F32, 1, sh, v1));
    CHECK_OK(dp_npy_save(p, DP_NPY_F32, 1, sh, v2));
    CHECK(count_tmpdir_files() == before + 1);
    float *f = NULL;
    CHECK_OK(dp_npy_load_f32(p, &f, NULL, NULL, NULL));
    if (f) CHECK(f[0] == 4 && f[2] == 6);
    dp_free(f);

    /* saving into a directory that does not exist fails cleanly, naming the file */
    CHECK_FAIL(dp_npy_save("/tmp/dpsgd-no-such-dir-31337/out.npy", DP_NPY_F32, 1, sh, v1), DP_ERR_IO,
               "out.npy");
    CHECK(access("/tmp/dpsgd-no-such-dir-31337", F_OK) != 0);
    int64_t bad[1] = {-1};
    CHECK_FAIL(dp_npy_save(fx("neg.npy"), DP_NPY_F32, 1, bad, v1), DP_ERR_INVALID, "neg.npy");
    CHECK_FAIL(dp_npy_save(fx("nd.npy"), DP_NPY_F32, 9, sh, v1), DP_ERR_INVALID, "nd.npy");
    CHECK(access(fx("neg.npy"), F_OK) != 0);
}

/* writes magic + version + header dict (padded like numpy) + data; keep bytes of it */
static const char *write_npy(const char *name, const char *magic, int major, const char *dict,
                             const void *data, size_t data_len, size_t keep) {
    unsigned char buf[1024];
    size_t pre = major == 1 ? 10 : 12;
    size_t dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64;
    size_t hlen = total - pre;
    memcpy(buf, magic, 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    if (major != 1) buf[10] = buf[11] = 0;
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', hlen - dl - 1);
    buf[total - 1] = '\n';
    memcpy(buf + total, data, data_len);
    size_t n = total + data_len;
    return write_file(name, buf, keep < n ? keep : n);
}

static void test_npy_malformed(void) {
    float v[6] = {1, 2, 3, 4, 5, 6};
    const char *ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    const size_t all = (size_t)-1;
    dp_npy a, sentinel;
    memset(&sentinel, 0xab, sizeof sentinel);

    /* control: the well-formed file loads (v2.0 and Python 2 'L' ints too) */
    CHECK_OK(dp_npy_load(write_npy("good.npy", "\x93NUMPY", 1, ok, v, sizeof v, all), &a));
    CHECK(a.count == 6 && a.data && ((float *)a.data)[5] == 6.0f);
    dp_npy_free(&a);
    CHECK_OK(dp_npy_load(write_npy("v2.npy", "\x93NUMPY", 2, ok, v, sizeof v, all), &a));
    CHECK(a.count == 6 && a.shape[1] == 3);
    dp_npy_free(&a);
    CHECK_OK(dp_npy_load(write_npy("py2.npy", "\x93NUMPY", 1,
                                   "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (6L,)}",
                                   v, sizeof v, all), &a));
    CHECK(a.ndim == 1 && a.shape[0] == 6);
    dp_npy_free(&a);

    a = sentinel;
    CHECK_FAIL(dp_npy_load(write_npy("magic.npy", "\x93NUMPX", 1, ok, v, sizeof v, all), &a),
               DP_ERR_FORMAT, "magic.npy");
    CHECK(memcmp(&a, &sentinel, sizeof a) == 0); /* out untouched on failure */
    CHECK_FAIL(dp_npy_load(write_npy("hdr.npy", "\x93NUMPY", 1, ok, v, sizeof v, 40), &a),
               DP_ERR_FORMAT, "hdr.npy");
    CHECK_FAIL(dp_npy_load(write_npy("hdr8.npy", "\x93NUMPY", 1, ok, v, sizeof v, 8), &a),
               DP_ERR_FORMAT, "hdr8.npy");
    CHECK_FAIL(dp_npy_load(write_npy("data.npy", "\x93NUMPY", 1, ok, v, sizeof v, 64 + 20), &a),
               DP_ERR_FORMAT, "data.npy");
    CHECK(strstr(dp_last_error(), "truncated") != NULL);
    CHECK_FAIL(dp_npy_load(write_npy("trail.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", v,
                                     sizeof v, all), &a),
               DP_ERR_FORMAT, "trail.npy");
    CHECK_FAIL(dp_npy_load(write_npy("fort.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", v,
                                     sizeof v, all), &a),
               DP_ERR_UNSUPPORTED, "fort.npy");
    CHECK(strstr(dp_last_error(), "fortran_order") != NULL);
    CHECK_FAIL(dp_npy_load(write_npy("be.npy", "\x93NUMPY", 1,
                                     "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", v,
                                     sizeof v, all), &a),
               DP_ERR_UNSUPPORTED, "be.npy");
    CHECK(strstr(dp_last_error(), "big-endian") != NULL);
    CHECK_FAIL(dp_npy_load(write_npy("c8.npy", "\x93NUMPY", 1,
                                     "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", v,
                                     sizeof v, all), &a),
               DP_ERR_UNSUPPORTED, "c8.npy");
    CHECK(strstr(dp_last_error(), "<c8") != NULL);
    CHECK_FAIL(dp_npy_load(write_npy("rec.npy", "\x93NUMPY", 1,
                                     "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }",
                                     v, sizeof v, all), &a),
               DP_ERR_UNSUPPORTED, "rec.npy");
    CHECK_FAIL(dp_npy_load(write_npy("negdim.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", v,
                                     sizeof v, all), &a),
               DP_ERR_FORMAT, "negdim.npy");
    CHECK(strstr(dp_last_error(), "negative") != NULL);
    CHECK_FAIL(dp_npy_load(write_npy("ovf.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': False, "
                                     "'shape': (4294967296, 4294967296), }",
                                     v, sizeof v, all), &a),
               DP_ERR_RANGE, "ovf.npy");
    CHECK_FAIL(dp_npy_load(write_npy("bigint.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': False, "
                                     "'shape': (99999999999999999999,), }",
                                     v, sizeof v, all), &a),
               DP_ERR_RANGE, "bigint.npy");
    /* huge but not overflowing: must fail on size before trying to allocate it */
    CHECK_FAIL(dp_npy_load(write_npy("huge.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }",
                                     v, sizeof v, all), &a),
               DP_ERR_FORMAT, "huge.npy");
    CHECK_FAIL(dp_npy_load(write_npy("noshape.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': False, }", v, sizeof v, all),
                           &a),
               DP_ERR_FORMAT, "noshape.npy");
    CHECK(strstr(dp_last_error(), "shape") != NULL);
    CHECK_FAIL(dp_npy_load(write_npy("nine.npy", "\x93NUMPY", 1,
                                     "{'descr': '<f4', 'fortran_order': False, "
                                     "'shape': (1,1,1,1,1,1,1,1,1), }",
                                     v, 4, all), &a),
               DP_ERR_UNSUPPORTED, "nine.npy");
    CHECK_FAIL(dp_npy_load(write_npy("junk.npy", "\x93NUMPY", 1, "not a dict at all", v, sizeof v, all),
                           &a),
               DP_ERR_FORMAT, "junk.npy");
    CHECK_FAIL(dp_npy_load(write_npy("v9.npy", "\x93NUMPY", 9, ok, v, sizeof v, all), &a),
               DP_ERR_UNSUPPORTED, "v9.npy");
    CHECK_FAIL(dp_npy_load(fx("does-not-exist.npy"), &a), DP_ERR_IO, "does-not-exist.npy");
    CHECK(memcmp(&a, &sentinel, sizeof a) == 0);

    /* allocation failure: clean status, nothing leaked (checked by t_finish) */
    for (long k = 1; k <= 2; k++) {
        dp_mem_fail_after(k);
        CHECK_FAIL(dp_npy_load(fx("good.npy"), &a), DP_ERR_NOMEM, "");
        dp_mem_fail_after(0);
    }
    float *f = NULL;
    dp_mem_fail_after(3); /* header, data, then the f64 -> f32 copy */
    CHECK_FAIL(dp_npy_load_f32(DP_REFERENCE_DIR "/cases/cnn_f64/input_x.npy", &f, NULL, NULL, NULL),
               DP_ERR_NOMEM, "");
    dp_mem_fail_after(0);
    CHECK(f == NULL);
}

/* ---- IDX --------------------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* images: magic, n, rows, cols, then n*rows*cols pixels (i*7+3 mod 256); returns length */
static size_t make_images(unsigned char *buf, uint32_t magic, uint32_t n, uint32_t rows,
                          uint32_t cols, size_t npix) {
    put32(buf, magic);
    put32(buf + 4, n);
    put32(buf + 8, rows);
    put32(buf + 12, cols);
    for (size_t i = 0; i < npix; i++) buf[16 + i] = (unsigned char)(i * 7 + 3);
    return 16 + npix;
}

static size_t make_labels(unsigned char *buf, uint32_t magic, uint32_t n, size_t nlab) {
    put32(buf, magic);
    put32(buf + 4, n);
    for (size_t i = 0; i < nlab; i++) buf[8 + i] = (unsigned char)((i * 5) % 7);
    return 8 + nlab;
}

static void check_small(const dp_dataset *d) {
    CHECK(d->n == 3 && d->c == 1 && d->h == 2 && d->w == 4 && d->dim == 8);
    CHECK(d->n_classes == 6); /* labels 0, 5, 3 */
    int ok = d->x && d->y;
    for (size_t i = 0; ok && i < 24; i++) ok = d->x[i] == (float)(unsigned char)(i * 7 + 3) / 255.0f;
    CHECK(ok);
    if (d->y) CHECK(d->y[0] == 0 && d->y[1] == 5 && d->y[2] == 3);
    if (d->x) CHECK(d->x[0] == 3.0f / 255.0f);
}

static void test_idx(void) {
    unsigned char ib[256], lb[64];
    size_t il = make_images(ib, 0x803, 3, 2, 4, 24);
    size_t ll = make_labels(lb, 0x801, 3, 3);
    dp_dataset d, sentinel;
    memset(&sentinel, 0xcd, sizeof sentinel);

    char ip[512], lp[512], igz[512], lgz[512]; /* fx() reuses its buffers: keep copies */
    snprintf(ip, sizeof ip, "%s", write_file("img", ib, il));
    snprintf(lp, sizeof lp, "%s", write_file("lab", lb, ll));
    CHECK_OK(dp_dataset_load_idx(ip, lp, &d));
    check_small(&d);
    dp_dataset_free(&d);
    CHECK(d.x == NULL && d.n == 0);
    dp_dataset_free(NULL);

    snprintf(igz, sizeof igz, "%s", write_gz("img.gz", ib, il));
    snprintf(lgz, sizeof lgz, "%s", write_gz("lab.gz", lb, ll));
    CHECK_OK(dp_dataset_load_idx(igz, lgz, &d));
    check_small(&d);
    dp_dataset_free(&d);
    CHECK_OK(dp_dataset_load_idx(igz, lp, &d)); /* mixed */
    check_small(&d);
    dp_dataset_free(&d);

    /* a gzip file cut inside its 8-byte trailer (the data whole), or with bytes after the
     * stream: zlib passes both silently; refused (sweep.sh found them) */
    {
        FILE *f = fopen(igz, "rb");
        unsigned char gzb[4096];
        size_t gn = f ? fread(gzb, 1, sizeof gzb, f) : 0;
        if (f) fclose(f);
        CHECK(gn > 8 && gn < sizeof gzb);
        char cut[512], tail[512];
        snprintf(cut, sizeof cut, "%s", write_file("img_cut.gz", gzb, gn - 3));
        memcpy(gzb + gn, "garbage", 7);
        snprintf(tail, sizeof tail, "%s", write_file("img_tail.gz", gzb, gn + 7));
        CHECK(dp_dataset_load_idx(cut, lp, &d) == DP_ERR_FORMAT && strstr(dp_last_error(), "truncated gzip stream"));
        CHECK(dp_dataset_load_idx(tail, lp, &d) == DP_ERR_FORMAT && strstr(dp_last_error(), "data after the gzip stream"));
    }

    /* MNIST directory layout: test split plain, training split gzip */
    write_file("t10k-images-idx3-ubyte", ib, il);
    write_file("t10k-labels-idx1-ubyte", lb, ll);
    write_gz("train-images-idx3-ubyte.gz", ib, il);
    write_gz("train-labels-idx1-ubyte.gz", lb, ll);
    CHECK_OK(dp_dataset_load_mnist_dir(tmpdir, 0, &d));
    check_small(&d);
    dp_dataset_free(&d);
    CHECK_OK(dp_dataset_load_mnist_dir(tmpdir, 1, &d));
    check_small(&d);
    dp_dataset_free(&d);
    d = sentinel;
    CHECK_FAIL(dp_dataset_load_mnist_dir("/tmp/dpsgd-no-such-dir-31337", 1, &d), DP_ERR_IO,
               "train-images-idx3-ubyte");

    /* malformed */
    unsigned char b[256];
    size_t n;
    n = make_images(b, 0x802, 3, 2, 4, 24);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_magic", b, n), lp, &d), DP_ERR_FORMAT, "m_magic");
    CHECK(strstr(dp_last_error(), "magic") != NULL);
    CHECK_FAIL(dp_dataset_load_idx(lp, ip, &d), DP_ERR_FORMAT, "lab"); /* swapped */
    n = make_labels(b, 0x803, 3, 3);
    CHECK_FAIL(dp_dataset_load_idx(ip, write_file("m_lmagic", b, n), &d), DP_ERR_FORMAT, "m_lmagic");
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_trunc", ib, il - 1), lp, &d), DP_ERR_FORMAT, "m_trunc");
    CHECK(strstr(dp_last_error(), "truncated") != NULL);
    CHECK_FAIL(dp_dataset_load_idx(write_gz("m_trunc.gz", ib, il - 5), lp, &d), DP_ERR_FORMAT,
               "m_trunc.gz");
    CHECK(strstr(dp_last_error(), "truncated") != NULL);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_hdr", ib, 10), lp, &d), DP_ERR_FORMAT, "m_hdr");
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_empty", ib, 0), lp, &d), DP_ERR_FORMAT, "m_empty");
    CHECK_FAIL(dp_dataset_load_idx(ip, write_file("m_ltrunc", lb, ll - 1), &d), DP_ERR_FORMAT,
               "m_ltrunc");
    memcpy(b, ib, il);
    b[il] = 0;
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_trail", b, il + 1), lp, &d), DP_ERR_FORMAT, "m_trail");
    CHECK(strstr(dp_last_error(), "trailing") != NULL);
    CHECK_FAIL(dp_dataset_load_idx(write_gz("m_trail.gz", b, il + 1), lp, &d), DP_ERR_FORMAT,
               "m_trail.gz");
    CHECK(strstr(dp_last_error(), "trailing") != NULL);
    memcpy(b, lb, ll);
    b[ll] = 1;
    CHECK_FAIL(dp_dataset_load_idx(ip, write_gz("m_ltrail.gz", b, ll + 1), &d), DP_ERR_FORMAT,
               "m_ltrail.gz");
    n = make_labels(b, 0x801, 2, 2);
    CHECK_FAIL(dp_dataset_load_idx(ip, write_file("m_count", b, n), &d), DP_ERR_FORMAT, "m_count");
    CHECK(strstr(dp_last_error(), "2 labels") != NULL && strstr(dp_last_error(), "3 images") != NULL);
    n = make_images(b, 0x803, 3, 0, 4, 0);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_zero", b, n), lp, &d), DP_ERR_FORMAT, "m_zero");
    CHECK(strstr(dp_last_error(), "rows") != NULL);
    n = make_images(b, 0x803, 0, 2, 4, 0);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_zeron", b, n), write_file("m_zerol", lb, 8), &d),
               DP_ERR_FORMAT, "m_zeron");
    n = make_images(b, 0x803, 3, 1u << 20, 1u << 20, 24);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_huge", b, n), lp, &d), DP_ERR_RANGE, "m_huge");
    n = make_images(b, 0x803, 0xffffffffu, 28, 28, 24);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_hugen", b, n), lp, &d), DP_ERR_RANGE, "m_hugen");
    /* large but legal header on a tiny file: rejected before allocating (plain and gzip) */
    n = make_images(b, 0x803, 1u << 30, 28, 28, 24);
    CHECK_FAIL(dp_dataset_load_idx(write_file("m_big", b, n), lp, &d), DP_ERR_FORMAT, "m_big");
    CHECK_FAIL(dp_dataset_load_idx(write_gz("m_big.gz", b, n), lp, &d), DP_ERR_FORMAT, "m_big.gz");
    /* corrupt gzip: flip a byte inside the compressed stream */
    {
        FILE *f = fopen(igz, "rb");
        unsigned char z[512];
        size_t zn = f ? fread(z, 1, sizeof z, f) : 0;
        if (f) fclose(f);
        CHECK(zn > 30);
        z[zn - 6] ^= 0xff; /* in the CRC32 trailer */
        int st = dp_dataset_load_idx(write_file("m_crc.gz", z, zn), lp, &d);
        CHECK(st == DP_ERR_FORMAT && strstr(dp_last_error(), "m_crc.gz") != NULL);
    }
    CHECK_FAIL(dp_dataset_load_idx(fx("m_missing"), lp, &d), DP_ERR_IO, "m_missing");
    CHECK(memcmp(&d, &sentinel, sizeof d) == 0);
    for (long k = 1; k <= 3; k++) {
        dp_mem_fail_after(k);
        CHECK_FAIL(dp_dataset_load_idx(igz, lgz, &d), DP_ERR_NOMEM, "");
        dp_mem_fail_after(0);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_fashion_mnist(void) {
    if (access(FMNIST_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0 &&
        access(FMNIST_DIR "/t10k-images-idx3-ubyte", R_OK) != 0) {
        printf("SKIP: %s not found; real Fashion-MNIST checks skipped\n", FMNIST_DIR);
        return;
    }
    dp_dataset d;
    CHECK_OK(dp_dataset_load_mnist_dir(FMNIST_DIR, 0, &d));
    CHECK(d.n == 10000 && d.c == 1 && d.h == 28 && d.w == 28 && d.dim == 784);
    CHECK(d.n_classes == 10);
    if (d.x) {
        float lo = 1e9f, hi = -1e9f;
        for (size_t i = 0; i < d.n * d.dim; i++) {
            if (d.x[i] < lo) lo = d.x[i];
            if (d.x[i] > hi) hi = d.x[i];
        }
        CHECK(lo == 0.0f && hi == 1.0f);
        int counts[10] = {0}, ok = 1;
        for (size_t i = 0; i < d.n; i++) {
            if (d.y[i] < 0 || d.y[i] > 9) ok = 0;
            else counts[d.y[i]]++;
        }
        CHECK(ok);
        for (int k = 0; k < 10; k++) CHECK(counts[k] == 1000); /* balanced test split */
        CHECK_OK(dp_dataset_validate(&d, "t10k", 1, 10));
        double mean, std;
        dp_dataset_stats(&d, &mean, &std);
        CHECK(mean > 0.2 && mean < 0.4 && std > 0.25 && std < 0.45);
    }
    dp_dataset_free(&d);

    double t0 = now_s();
    dp_status s = dp_dataset_load_mnist_dir(FMNIST_DIR, 1, &d);
    double dt = now_s() - t0;
    CHECK_OK(s);
    CHECK(d.n == 60000 && d.dim == 784 && d.n_classes == 10);
    printf("fashion-mnist train: %zu examples loaded in %.3f s\n", d.n, dt);
    CHECK(dt < 5.0); /* ~0.2 s normally; generous for sanitizer builds and busy CI */
    dp_dataset_free(&d);
}

/* ---- validation and standardisation --------------------------------------------------- */

static void make_ds(dp_dataset *d, size_t n, size_t dim) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = (int)dim;
    d->h = d->w = 1;
    d->dim = dim;
    d->x = dp_alloc(n * dim * sizeof(float));
    d->y = dp_alloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n * dim; i++) d->x[i] = (float)i * 0.5f - 3.0f;
    for (size_t i = 0; i < n; i++) d->y[i] = (int32_t)(i % 3);
    d->n_classes = 3;
}

static void test_validate(void) {
    dp_dataset d;
    make_ds(&d, 6, 4);
    CHECK_OK(dp_dataset_validate(&d, "train.csv", 6, 3));
    CHECK_OK(dp_dataset_validate(&d, NULL, 0, 0));

    CHECK_FAIL(dp_dataset_validate(&d, "train.csv", 7, 3), DP_ERR_RANGE, "train.csv");
    CHECK(strstr(dp_last_error(), "6 rows") != NULL && strstr(dp_last_error(), "7") != NULL);

    /* content errors name the dataset and the rule, never the value, its row or column, nor
     * how many: here (no digits in the name or the rule) no digit at all */
    d.x[3 * 4 + 2] = NAN;
    d.x[4 * 4 + 0] = INFINITY;
    CHECK_FAIL(dp_dataset_validate(&d, "train.csv", 1, 3), DP_ERR_NONFINITE,
               "train.csv: a value is not finite");
    CHECK_LACKS("row");
    CHECK_LACKS("column");
    CHECK_LACKS("nan");
    CHECK(strpbrk(dp_last_error(), "0123456789") == NULL);
    d.x[3 * 4 + 2] = 0.0f;
    CHECK_FAIL(dp_dataset_validate(&d, "train.csv", 1, 3), DP_ERR_NONFINITE, "every feature value must be a finite");
    CHECK_LACKS("row");
    CHECK_LACKS("inf");
    CHECK(strpbrk(dp_last_error(), "0123456789") == NULL);
    d.x[4 * 4 + 0] = 0.0f;

    d.y[5] = 12;
    CHECK_FAIL(dp_dataset_validate(&d, "t10k-labels-idx1-ubyte.gz", 1, 10), DP_ERR_RANGE,
               "t10k-labels-idx1-ubyte.gz: a label is outside 0..9; labels must lie in 0..K-1");
    CHECK_LACKS("12");
    CHECK_LACKS("index");
    CHECK_LACKS("5");
    d.y[5] = -1;
    CHECK_FAIL(dp_dataset_validate(&d, "test set", 1, 3), DP_ERR_RANGE, "test set: a label is outside 0..2");
    CHECK_LACKS(" -1"); /* the value (the rule's "K-1" has no space) */
    CHECK_LACKS("index");
    CHECK_LACKS("5");
    d.y[5] = 2;
    CHECK_FAIL(dp_dataset_validate(&d, "test set", 1, 2), DP_ERR_RANGE, "test set: a label is outside 0..1");
    CHECK_LACKS("2"); /* the value 2 and the row 2 */
    CHECK_LACKS("index");
    CHECK_OK(dp_dataset_validate(&d, "test set", 1, 3));
    d.dim = 5;
    CHECK_FAIL(dp_dataset_validate(&d, "test set", 1, 3), DP_ERR_INVALID, "test set");
    d.dim = 4;

    /* stats: values -3, -2.5, ..., 8.5 (24 of them): mean 2.75, population std */
    for (size_t i = 0; i < 24; i++) d.x[i] = (float)i * 0.5f - 3.0f;
    double mean = 0, std = 0, ref_var = 0;
    dp_dataset_stats(&d, &mean, &std);
    for (int i = 0; i < 24; i++) ref_var += (i * 0.5 - 3.0 - 2.75) * (i * 0.5 - 3.0 - 2.75);
    CHECK_CLOSE(mean, 2.75, 1e-12);
    CHECK_CLOSE(std, sqrt(ref_var / 24), 1e-12);
    dp_dataset_normalize(&d, mean, std);
    double m2, s2;
    dp_dataset_stats(&d, &m2, &s2);
    CHECK_CLOSE(m2, 0.0, 1e-6);
    CHECK_CLOSE(s2, 1.0, 1e-6);
    CHECK_CLOSE(d.x[0], (-3.0 - 2.75) / std, 1e-6);
    /* constant data: std 0 is taken as 1 (only centred) */
    for (size_t i = 0; i < 24; i++) d.x[i] = 5.0f;
    dp_dataset_stats(&d, &m2, &s2);
    CHECK(m2 == 5.0 && s2 == 0.0);
    dp_dataset_normalize(&d, m2, s2);
    CHECK(d.x[0] == 0.0f && d.x[23] == 0.0f);
    dp_dataset_free(&d);

    dp_dataset e;
    memset(&e, 0, sizeof e);
    dp_dataset_stats(&e, &m2, &s2);
    CHECK(m2 == 0.0 && s2 == 0.0);
    CHECK_FAIL(dp_dataset_validate(&e, "empty", 1, 3), DP_ERR_RANGE, "empty: 0 rows");
}

/* dp_npy_labels: integer dtypes, the largest label; a float array or a label outside
 * 0..INT32_MAX-1 refused naming the file, never the value or its row */
static void test_npy_labels(void) {
    int64_t l64[4] = {3, 0, 7, 2};
    uint8_t u8[3] = {1, 255, 0};
    float f[2] = {0, 1};
    int32_t y[4], mx = -1;
    dp_npy a = {DP_NPY_I64, 1, {4}, 4, l64};
    CHECK_OK(dp_npy_labels(&a, "l64.npy", y, &mx));
    CHECK(y[0] == 3 && y[1] == 0 && y[2] == 7 && y[3] == 2 && mx == 7);
    a = (dp_npy){DP_NPY_U8, 1, {3}, 3, u8};
    CHECK_OK(dp_npy_labels(&a, "u8.npy", y, NULL));
    CHECK(y[0] == 1 && y[1] == 255 && y[2] == 0);
    a = (dp_npy){DP_NPY_F32, 1, {2}, 2, f};
    CHECK_FAIL(dp_npy_labels(&a, "f.npy", y, &mx), DP_ERR_UNSUPPORTED, "f.npy: labels have dtype <f4");
    l64[2] = -5;
    a = (dp_npy){DP_NPY_I64, 1, {4}, 4, l64};
    CHECK_FAIL(dp_npy_labels(&a, "neg.npy", y, &mx), DP_ERR_RANGE, "neg.npy: a label is outside 0..2147483646");
    CHECK_LACKS("-5");
    CHECK_LACKS(" 2 ");
    l64[2] = (int64_t)1 << 40;
    CHECK_FAIL(dp_npy_labels(&a, "big.npy", y, &mx), DP_ERR_RANGE, "big.npy: a label is outside");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dpsgd_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_npy_reference();
    test_npy_roundtrip();
    test_npy_malformed();
    test_npy_labels();
    test_idx();
    test_fashion_mnist();
    test_validate();
    remove_tmpdir();
    return t_finish("test_data");
}
