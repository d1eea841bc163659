/* test_tokens.c: token-sequence datasets: the .npy loader (dtypes, padding, every error),
 * dp_dataset_validate_tokens, and the synthetic order task dp_text_synthetic.
 * Fixtures are written at run time into a mkdtemp directory under /tmp and removed. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

#include "test.h"

static char tmpdir[64];

/* expr must fail with status want, and the message must contain needle */
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

/* the last error message contains needle */
#define CHECK_MSG(needle)                                                                     \
    do {                                                                                      \
        if (strstr(dp_last_error(), (needle)) != NULL) t_pass++;                              \
        else {                                                                                \
            t_fail++;                                                                         \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,       \
                    dp_last_error(), (needle));                                               \
        }                                                                                     \
    } while (0)

/* The last error message, with every occurrence of tmpdir (random letters and digits) cut out. */
static const char *msg_without_tmpdir(void) {
    static char buf[1024];
    const char *m = dp_last_error();
    size_t n = 0, k = strlen(tmpdir);
    while (*m && n + 1 < sizeof buf) {
        if (k && strncmp(m, tmpdir, k) == 0) m += k;
        else buf[n++] = *m++;
    }
    buf[n] = 0;
    return buf;
}

/* the last error message (less tmpdir) does NOT contain needle: a message about the content of
 * private data names the file and the rule, never the value, its row or position (docs/privacy.md) */
#define CHECK_LACKS(needle) t_check_lacks(__FILE__, __LINE__, msg_without_tmpdir(), (needle))

/* path of a fixture in tmpdir; each call returns a new slot of a small ring */
static const char *fx(const char *name) {
    static char ring[64][512];
    static int k;
    char *p = ring[k++ % 64];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

/* saves an array with dp_npy_save and returns its path */
static const char *save(const char *name, dp_npy_dtype dt, int ndim, int64_t d0, int64_t d1,
                        const void *data) {
    const char *p = fx(name);
    int64_t shape[2] = {d0, d1};
    if (dp_npy_save(p, dt, ndim, shape, data) != DP_OK) {
        fprintf(stderr, "cannot write fixture %s: %s\n", p, dp_last_error());
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

/* ---- loader ------------------------------------------------------------------------------ */

enum { N = 3, T = 5 };
/* 3 rows of 5: a pad id 0 in row 0, negative ids (-1, -7) in rows 1 and 2 */
static const int32_t ids32[N * T] = {7, 3, 0, 12, 0, 5, 1, -1, -1, -1, 16777215, 9, 8, -7, 2};
static const int32_t lab32[N] = {2, 0, 1};

/* the expected x for pad_id (-1: no id mapped) */
static void expected(int pad_id, float *x) {
    for (int i = 0; i < N * T; i++)
        x[i] = ids32[i] < 0 || (pad_id >= 0 && ids32[i] == pad_id) ? -1.0f : (float)ids32[i];
}

static void check_loaded(const dp_dataset *d, int pad_id, const char *what) {
    float want[N * T];
    expected(pad_id, want);
    int ok = d->n == N && d->c == 1 && d->h == 1 && d->w == T && d->dim == T && d->x && d->y &&
             d->n_classes == 3;
    if (ok) ok = memcmp(d->x, want, sizeof want) == 0;
    if (ok) ok = d->y[0] == 2 && d->y[1] == 0 && d->y[2] == 1;
    if (!ok) fprintf(stderr, "check_loaded(%s, pad %d) failed\n", what, pad_id);
    CHECK(ok);
}

static void test_load_roundtrip(void) {
    int64_t ids64[N * T], lab64[N];
    uint8_t ids8[N * T];
    float idsf[N * T];
    double idsd[N * T];
    for (int i = 0; i < N * T; i++) {
        ids64[i] = ids32[i];
        idsf[i] = (float)ids32[i];
        idsd[i] = ids32[i];
        ids8[i] = (uint8_t)(ids32[i] < 0 || ids32[i] > 255 ? 0 : ids32[i]);
    }
    for (int i = 0; i < N; i++) lab64[i] = lab32[i];
    const char *i32 = save("ids32.npy", DP_NPY_I32, 2, N, T, ids32);
    const char *i64 = save("ids64.npy", DP_NPY_I64, 2, N, T, ids64);
    const char *f32 = save("idsf32.npy", DP_NPY_F32, 2, N, T, idsf);
    const char *f64 = save("idsf64.npy", DP_NPY_F64, 2, N, T, idsd);
    char l32[512], l64[512];
    snprintf(l32, sizeof l32, "%s", save("lab32.npy", DP_NPY_I32, 1, N, 0, lab32));
    snprintf(l64, sizeof l64, "%s", save("lab64.npy", DP_NPY_I64, 1, N, 0, lab64));

    dp_dataset d;
    static const int pads[] = {-1, 0, 3};
    for (size_t k = 0; k < sizeof pads / sizeof pads[0]; k++) {
        CHECK_OK(dp_dataset_load_tokens(i32, l32, pads[k], &d));
        check_loaded(&d, pads[k], "i32/i32");
        dp_dataset_free(&d);
        CHECK_OK(dp_dataset_load_tokens(i64, l64, pads[k], &d));
        check_loaded(&d, pads[k], "i64/i64");
        dp_dataset_free(&d);
        CHECK_OK(dp_dataset_load_tokens(i32, l64, pads[k], &d));
        check_loaded(&d, pads[k], "i32/i64");
        dp_dataset_free(&d);
        CHECK_OK(dp_dataset_load_tokens(f32, l32, pads[k], &d));
        check_loaded(&d, pads[k], "f32");
        dp_dataset_free(&d);
        CHECK_OK(dp_dataset_load_tokens(f64, l64, pads[k], &d));
        check_loaded(&d, pads[k], "f64");
        dp_dataset_free(&d);
    }
    /* pad_id mapping in detail: 0 -> -1 everywhere, other ids untouched */
    CHECK_OK(dp_dataset_load_tokens(i64, l32, 0, &d));
    if (d.x) {
        CHECK(d.x[0] == 7.0f && d.x[2] == -1.0f && d.x[4] == -1.0f && d.x[3] == 12.0f);
        CHECK(d.x[13] == -1.0f); /* -7: any negative id is padding */
        CHECK(d.x[10] == 16777215.0f); /* 2^24 - 1 kept exactly */
    }
    CHECK_OK(dp_dataset_validate_tokens(&d, "ids64.npy", 1 << 24));
    dp_dataset_free(&d);

    /* uint8 ids: byte values, pad 0 */
    const char *u8 = save("ids8.npy", DP_NPY_U8, 2, N, T, ids8);
    CHECK_OK(dp_dataset_load_tokens(u8, l32, 0, &d));
    CHECK(d.n == N && d.dim == T && d.x && d.x[0] == 7.0f && d.x[2] == -1.0f && d.x[10] == -1.0f);
    dp_dataset_free(&d);
    /* uint8 labels are accepted too */
    uint8_t lab8[N] = {2, 0, 1};
    CHECK_OK(dp_dataset_load_tokens(i32, save("lab8.npy", DP_NPY_U8, 1, N, 0, lab8), -1, &d));
    check_loaded(&d, -1, "u8 labels");
    dp_dataset_free(&d);

    /* one row, T = 1; the longest T accepted */
    int32_t one = 4, lab0 = 0;
    CHECK_OK(dp_dataset_load_tokens(save("one.npy", DP_NPY_I32, 2, 1, 1, &one),
                                    save("one_l.npy", DP_NPY_I32, 1, 1, 0, &lab0), -1, &d));
    CHECK(d.n == 1 && d.dim == 1 && d.w == 1 && d.x && d.x[0] == 4.0f && d.n_classes == 1);
    dp_dataset_free(&d);
    int32_t *longrow = dp_calloc(DP_TOKENS_MAX_LEN + 1, sizeof(int32_t));
    CHECK_OK(dp_dataset_load_tokens(save("max.npy", DP_NPY_I32, 2, 1, DP_TOKENS_MAX_LEN, longrow),
                                    fx("one_l.npy"), -1, &d));
    CHECK(d.dim == DP_TOKENS_MAX_LEN && d.w == DP_TOKENS_MAX_LEN);
    dp_dataset_free(&d);
    dp_dataset e;
    CHECK_FAIL(dp_dataset_load_tokens(save("toolong.npy", DP_NPY_I32, 2, 1, DP_TOKENS_MAX_LEN + 1,
                                           longrow),
                                      fx("one_l.npy"), -1, &e),
               DP_ERR_RANGE, "toolong.npy");
    CHECK_MSG("65537");
    dp_free(longrow);
}

static void test_load_errors(void) {
    char l32[512];
    snprintf(l32, sizeof l32, "%s", fx("lab32.npy")); /* written by test_load_roundtrip */
    char i32[512];
    snprintf(i32, sizeof i32, "%s", fx("ids32.npy"));
    dp_dataset d, sentinel;
    memset(&sentinel, 0xab, sizeof sentinel);
    d = sentinel;

    /* N mismatch */
    int32_t lab2[2] = {0, 1};
    CHECK_FAIL(dp_dataset_load_tokens(i32, save("lab_n2.npy", DP_NPY_I32, 1, 2, 0, lab2), -1, &d),
               DP_ERR_FORMAT, "lab_n2.npy");
    CHECK_MSG("2 labels");
    CHECK_MSG("3 rows");
    CHECK_MSG("ids32.npy");
    /* wrong ndim: ids 1-d, ids 3-d, labels 2-d */
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_1d.npy", DP_NPY_I32, 1, N * T, 0, ids32), l32, -1,
                                      &d),
               DP_ERR_FORMAT, "ids_1d.npy");
    CHECK_MSG("2-d");
    {
        const char *p = fx("ids_3d.npy");
        int64_t shape[3] = {N, T, 1};
        CHECK_OK(dp_npy_save(p, DP_NPY_I32, 3, shape, ids32));
        CHECK_FAIL(dp_dataset_load_tokens(p, l32, -1, &d), DP_ERR_FORMAT, "ids_3d.npy");
        CHECK_MSG("(3, 5, 1)");
    }
    CHECK_FAIL(dp_dataset_load_tokens(i32, save("lab_2d.npy", DP_NPY_I32, 2, N, 1, lab32), -1, &d),
               DP_ERR_FORMAT, "lab_2d.npy");
    CHECK_MSG("1-d");
    /* N or T zero */
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_n0.npy", DP_NPY_I32, 2, 0, T, NULL), l32, -1, &d),
               DP_ERR_FORMAT, "ids_n0.npy");
    CHECK_MSG("N (rows) is 0");
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_t0.npy", DP_NPY_I32, 2, N, 0, NULL), l32, -1, &d),
               DP_ERR_FORMAT, "ids_t0.npy");
    CHECK_MSG("T (sequence length) is 0");
    /* non-integer, non-finite and too large ids: the file and the rule, never the id, its row
     * or position (content of private data; docs/privacy.md) */
    float idsf[N * T];
    for (int i = 0; i < N * T; i++) idsf[i] = (float)ids32[i];
    idsf[1 * T + 2] = 2.5f;
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_frac.npy", DP_NPY_F32, 2, N, T, idsf), l32, -1, &d),
               DP_ERR_FORMAT, "ids_frac.npy: a token id is not an integer");
    CHECK_LACKS("2.5");
    CHECK_LACKS("row");
    CHECK_LACKS("position");
    idsf[1 * T + 2] = -0.5f; /* negative but not an integer: still an error */
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_negfrac.npy", DP_NPY_F32, 2, N, T, idsf), l32, -1,
                                      &d),
               DP_ERR_FORMAT, "not an integer");
    CHECK_LACKS("0.5");
    CHECK_LACKS("row");
    double idsd[N * T];
    for (int i = 0; i < N * T; i++) idsd[i] = ids32[i];
    idsd[2 * T + 4] = NAN;
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_nonfinite.npy", DP_NPY_F64, 2, N, T, idsd), l32, -1, &d),
               DP_ERR_NONFINITE, "ids_nonfinite.npy: a token id is not finite");
    CHECK_LACKS("nan");
    CHECK_LACKS("row");
    CHECK_LACKS("position");
    idsd[2 * T + 4] = 16777216.0;
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_bigf.npy", DP_NPY_F64, 2, N, T, idsd), l32, -1, &d),
               DP_ERR_RANGE, "ids_bigf.npy: a token id is above 2^24 - 1 = 16777215");
    CHECK_LACKS("16777216");
    CHECK_LACKS("row");
    CHECK_LACKS("position");
    idsd[0] = 0.5; /* a fraction first, the NaN after it: NaN is reported, wherever the two are */
    idsd[2 * T + 4] = NAN;
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_mixed.npy", DP_NPY_F64, 2, N, T, idsd), l32, -1, &d),
               DP_ERR_NONFINITE, "ids_mixed.npy: a token id is not finite");
    idsd[0] = ids32[0];
    int64_t ids64[N * T];
    for (int i = 0; i < N * T; i++) ids64[i] = ids32[i];
    ids64[T + 1] = (int64_t)1 << 40;
    CHECK_FAIL(dp_dataset_load_tokens(save("ids_big.npy", DP_NPY_I64, 2, N, T, ids64), l32, -1, &d),
               DP_ERR_RANGE, "ids_big.npy: a token id is above 2^24 - 1");
    CHECK_LACKS("1099511627776");
    CHECK_LACKS("row");
    CHECK_LACKS("position");
    /* labels: float dtype, negative, too large (the file and the range, never the label or its row) */
    float labf[N] = {0, 1, 2};
    CHECK_FAIL(dp_dataset_load_tokens(i32, save("lab_f.npy", DP_NPY_F32, 1, N, 0, labf), -1, &d),
               DP_ERR_UNSUPPORTED, "lab_f.npy");
    int64_t labneg[N] = {0, -3, 1};
    CHECK_FAIL(dp_dataset_load_tokens(i32, save("lab_neg.npy", DP_NPY_I64, 1, N, 0, labneg), -1,
                                      &d),
               DP_ERR_RANGE, "lab_neg.npy: a label is outside 0..2147483646");
    CHECK_LACKS("-3");
    CHECK_LACKS("index");
    int64_t labbig[N] = {0, 1, INT32_MAX};
    CHECK_FAIL(dp_dataset_load_tokens(i32, save("lab_big.npy", DP_NPY_I64, 1, N, 0, labbig), -1,
                                      &d),
               DP_ERR_RANGE, "lab_big.npy: a label is outside 0..2147483646");
    CHECK_LACKS("2147483647");
    CHECK_LACKS("index");
    /* missing files, malformed .npy, bad arguments */
    CHECK_FAIL(dp_dataset_load_tokens(fx("nope.npy"), l32, -1, &d), DP_ERR_IO, "nope.npy");
    CHECK_FAIL(dp_dataset_load_tokens(i32, fx("nolab.npy"), -1, &d), DP_ERR_IO, "nolab.npy");
    {
        const char *p = fx("junk.npy");
        FILE *f = fopen(p, "wb");
        if (f) {
            fputs("not numpy", f);
            fclose(f);
        }
        CHECK_FAIL(dp_dataset_load_tokens(p, l32, -1, &d), DP_ERR_FORMAT, "junk.npy");
    }
    CHECK_FAIL(dp_dataset_load_tokens(i32, l32, 1 << 24, &d), DP_ERR_INVALID, "pad id");
    CHECK_FAIL(dp_dataset_load_tokens(NULL, l32, -1, &d), DP_ERR_INVALID, "required");
    CHECK_FAIL(dp_dataset_load_tokens(i32, l32, -1, NULL), DP_ERR_INVALID, "required");
    CHECK(memcmp(&d, &sentinel, sizeof d) == 0); /* out untouched on every failure */

    /* allocation failures at every step are clean (no leak, out untouched) */
    char i64p[512];
    snprintf(i64p, sizeof i64p, "%s", fx("ids64.npy"));
    for (long k = 1; k <= 6; k++) {
        dp_mem_fail_after(k);
        dp_status s1 = dp_dataset_load_tokens(i32, l32, -1, &d);
        dp_mem_fail_after(k);
        dp_status s2 = dp_dataset_load_tokens(i64p, l32, -1, &d);
        dp_mem_fail_after(0);
        CHECK(s1 == DP_ERR_NOMEM || s1 == DP_OK);
        CHECK(s2 == DP_ERR_NOMEM || s2 == DP_OK);
        if (s1 == DP_OK) dp_dataset_free(&d);
        if (s2 == DP_OK) dp_dataset_free(&d);
        if (s1 != DP_OK && s2 != DP_OK) CHECK(memcmp(&d, &sentinel, sizeof d) == 0);
        d = sentinel;
    }
}

/* ---- validation -------------------------------------------------------------------------- */

static void make_tokens(dp_dataset *d) {
    static const float x[3 * 4] = {0, 5, 6, -1, 0, 9, -1, -1, 3, 3, 3, 3};
    memset(d, 0, sizeof *d);
    d->n = 3;
    d->c = d->h = 1;
    d->w = 4;
    d->dim = 4;
    d->x = dp_alloc(sizeof x);
    d->y = dp_alloc(3 * sizeof(int32_t));
    memcpy(d->x, x, sizeof x);
    d->y[0] = 0;
    d->y[1] = 1;
    d->y[2] = 1;
    d->n_classes = 2;
}

static void test_validate_tokens(void) {
    dp_dataset d;
    make_tokens(&d);
    CHECK_OK(dp_dataset_validate_tokens(&d, "ids.npy", 10));
    CHECK_OK(dp_dataset_validate_tokens(&d, NULL, 1 << 24));
    CHECK_OK(dp_dataset_validate(&d, "ids.npy", 1, 2));

    /* content errors name the dataset and the rule, never the id, its row or position, nor how
     * many (private data; docs/privacy.md) */
    /* out of vocabulary (id 9 at row 1, position 1) */
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 9), DP_ERR_RANGE,
               "ids.npy: a token id is outside -1..8; ids must lie in 0..V-1");
    CHECK_LACKS("9");
    CHECK_LACKS("row");
    CHECK_LACKS("position");
    d.x[2] = 12.0f;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 10), DP_ERR_RANGE, "ids.npy: a token id is outside -1..9");
    CHECK_LACKS("12");
    CHECK_LACKS("row");
    d.x[2] = -2.0f; /* padding must be exactly -1 in a validated dataset */
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 10), DP_ERR_RANGE, "ids.npy: a token id is outside -1..9");
    CHECK_LACKS("-2");
    CHECK_LACKS("row");
    d.x[2] = 1.5f;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 10), DP_ERR_FORMAT,
               "ids.npy: a token id is not an integer");
    CHECK_LACKS("1.5");
    CHECK_LACKS("row");
    CHECK_LACKS("position");
    d.x[2] = NAN;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 10), DP_ERR_NONFINITE, "ids.npy: a value is not finite");
    CHECK_LACKS("nan");
    CHECK_LACKS("row");
    d.x[2] = 6.0f;

    /* an all-padding row (row 1): named by neither its index nor the word */
    for (int t = 0; t < 4; t++) d.x[4 + t] = -1.0f;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "train ids", 10), DP_ERR_FORMAT,
               "train ids: a sequence is all padding");
    CHECK_LACKS("row");
    CHECK(strpbrk(dp_last_error(), "0123456789") == NULL);
    /* which rule is reported does not depend on where the bad ids are: the all-padding row 1
     * comes before the id 12 in row 2, and the id is reported */
    d.x[8] = 12.0f;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "train ids", 10), DP_ERR_RANGE, "train ids: a token id is outside");
    d.x[8] = 3.0f;
    d.x[4 + 3] = 0.0f; /* one token at the end is enough */
    CHECK_OK(dp_dataset_validate_tokens(&d, "train ids", 10));

    /* labels as dp_dataset_validate checks them (label 2, then -1, at row 2) */
    d.y[2] = 2;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "labels.npy", 10), DP_ERR_RANGE,
               "labels.npy: a label is outside 0..1");
    CHECK_LACKS("2");
    CHECK_LACKS("index");
    d.y[2] = -1;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "labels.npy", 10), DP_ERR_RANGE, "labels.npy: a label is outside 0..1");
    CHECK_LACKS(" -1"); /* the value (the rule's "K-1" has no space) */
    CHECK_LACKS("2");
    d.y[2] = 1;

    /* arguments and shape */
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 0), DP_ERR_INVALID, "vocabulary size 0");
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", (1 << 24) + 1), DP_ERR_INVALID, "ids.npy");
    CHECK_FAIL(dp_dataset_validate_tokens(NULL, "ids.npy", 10), DP_ERR_INVALID, "ids.npy");
    d.c = 2;
    d.w = 2; /* 2 x 1 x 2: consistent, but not a token layout */
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "images", 10), DP_ERR_INVALID, "not a token dataset");
    d.c = 1;
    d.w = 3; /* inconsistent with dim 4 */
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "ids.npy", 10), DP_ERR_INVALID, "ids.npy");
    d.w = 4;
    size_t n = d.n;
    d.n = 0;
    CHECK_FAIL(dp_dataset_validate_tokens(&d, "empty", 10), DP_ERR_RANGE, "empty: 0 rows");
    d.n = n;
    CHECK_OK(dp_dataset_validate_tokens(&d, "ids.npy", 10));
    dp_dataset_free(&d);
}

/* ---- the synthetic task ------------------------------------------------------------------ */

/* Checks every row of a synthetic dataset; returns 1 if all hold. Adds per-class sums of
 * length, marker positions and filler-token counts to the stats arrays. */
static int check_synthetic(const dp_dataset *d, int len, int vocab, double len_sum[2],
                           double pos_sum[2][2], double *fill_hist /* [2][vocab] */) {
    int lmin = (len + 1) / 2 > 3 ? (len + 1) / 2 : 3;
    for (size_t i = 0; i < d->n; i++) {
        const float *row = d->x + i * (size_t)len;
        int y = d->y[i];
        if (y != 0 && y != 1) return 0;
        if (row[0] != 0.0f) return 0;
        int L = len;
        while (L > 0 && row[L - 1] == -1.0f) L--;
        if (L < lmin || L > len) return 0;
        int p1 = -1, p2 = -1, zeros = 0;
        for (int t = 0; t < L; t++) {
            float v = row[t];
            if (v < 0.0f || v >= (float)vocab || v != floorf(v)) return 0;
            if (v == 0.0f) zeros++;
            else if (v == 1.0f) {
                if (p1 >= 0) return 0; /* exactly once */
                p1 = t;
            } else if (v == 2.0f) {
                if (p2 >= 0) return 0;
                p2 = t;
            } else fill_hist[y * vocab + (int)v] += 1.0;
        }
        for (int t = L; t < len; t++)
            if (row[t] != -1.0f) return 0;
        if (zeros != 1 || p1 < 1 || p2 < 1) return 0;
        if (y != (p1 < p2 ? 1 : 0)) return 0; /* the label is the marker order */
        len_sum[y] += L;
        pos_sum[y][0] += p1;
        pos_sum[y][1] += p2;
    }
    return 1;
}

static void test_synthetic(void) {
    enum { SN = 4000, ST = 24, SV = 20 };
    dp_dataset a, b, c;
    CHECK_OK(dp_text_synthetic(SN, ST, SV, 42, &a));
    CHECK_OK(dp_text_synthetic(SN, ST, SV, 42, &b));
    CHECK_OK(dp_text_synthetic(SN, ST, SV, 43, &c));
    CHECK(a.n == SN && a.c == 1 && a.h == 1 && a.w == ST && a.dim == ST && a.n_classes == 2);
    /* deterministic for a seed, different for another */
    CHECK(a.x && b.x && memcmp(a.x, b.x, (size_t)SN * ST * sizeof(float)) == 0);
    CHECK(a.y && b.y && memcmp(a.y, b.y, SN * sizeof(int32_t)) == 0);
    CHECK(c.x && memcmp(a.x, c.x, (size_t)SN * ST * sizeof(float)) != 0);
    CHECK(c.y && memcmp(a.y, c.y, SN * sizeof(int32_t)) != 0);
    /* a fixed value pins the generator's output across platforms and refactorings */
    double hash = 0;
    for (size_t i = 0; i < (size_t)SN * ST; i++) hash += a.x[i] * (double)(i % 97 + 1);
    printf("synthetic hash (seed 42): %.1f, first labels %d %d %d %d\n", hash, a.y[0], a.y[1],
           a.y[2], a.y[3]);
    CHECK(hash == 31785201.0); /* exact: a sum of small integers in double */
    CHECK(a.y[0] == 1 && a.y[1] == 0 && a.y[2] == 1 && a.y[3] == 0);

    /* valid token data; balanced labels */
    CHECK_OK(dp_dataset_validate_tokens(&a, "synthetic", SV));
    CHECK_OK(dp_dataset_validate(&a, "synthetic", SN, 2));
    CHECK_FAIL(dp_dataset_validate_tokens(&a, "synthetic", SV - 1), DP_ERR_RANGE, "synthetic");
    int ones = 0;
    for (size_t i = 0; i < a.n; i++) ones += a.y[i];
    CHECK(ones == SN / 2); /* exactly balanced */
    int run = 0, longest = 0; /* shuffled: no long runs of one class */
    for (size_t i = 1; i < a.n; i++) {
        run = a.y[i] == a.y[i - 1] ? run + 1 : 0;
        if (run > longest) longest = run;
    }
    CHECK(longest < 30);

    /* every row: [CLS] first, each marker once, the label is their order, padding after L;
     * bag-of-words statistics agree across the classes, the order statistic does not */
    double len_sum[2] = {0, 0}, pos_sum[2][2] = {{0, 0}, {0, 0}};
    double *hist = calloc(2 * SV, sizeof(double));
    CHECK(check_synthetic(&a, ST, SV, len_sum, pos_sum, hist));
    double n0 = SN - ones, n1 = ones;
    double mlen0 = len_sum[0] / n0, mlen1 = len_sum[1] / n1;
    CHECK(fabs(mlen0 - mlen1) < 0.5); /* lengths ~ uniform 12..24, mean 18, sd 3.7 */
    CHECK(mlen0 > 17.0 && mlen0 < 19.0);
    /* filler token frequencies per class: each id's share within 1.5 points */
    double f0 = 0, f1 = 0, worst = 0;
    for (int v = 3; v < SV; v++) {
        f0 += hist[v];
        f1 += hist[SV + v];
    }
    for (int v = 3; v < SV; v++) {
        double dlt = fabs(hist[v] / f0 - hist[SV + v] / f1);
        if (dlt > worst) worst = dlt;
    }
    CHECK(worst < 0.015);
    /* marker positions: where marker 1 sits in class 1 is where marker 2 sits in class 0 */
    double m1_c1 = pos_sum[1][0] / n1, m2_c1 = pos_sum[1][1] / n1;
    double m1_c0 = pos_sum[0][0] / n0, m2_c0 = pos_sum[0][1] / n0;
    CHECK(m1_c1 < m2_c1 - 3.0 && m2_c0 < m1_c0 - 3.0);
    CHECK(fabs(m1_c1 - m2_c0) < 0.5 && fabs(m2_c1 - m1_c0) < 0.5);
    printf("synthetic: mean length %.2f / %.2f, marker 1 at %.2f / %.2f, marker 2 at %.2f / %.2f "
           "(class 0 / class 1), worst filler share gap %.4f\n",
           mlen0, mlen1, m1_c0, m1_c1, m2_c0, m2_c1, worst);
    free(hist);

    /* a bag-of-words model is at chance: swapping the two markers in every row gives the
     * same multiset per row and flips every label */
    int same_bag = 1;
    for (size_t i = 0; i < a.n && same_bag; i++) {
        int cnt[SV] = {0}, cnt_sw[SV] = {0};
        for (int t = 0; t < ST; t++) {
            float v = a.x[i * ST + t];
            if (v < 0) continue;
            cnt[(int)v]++;
            cnt_sw[v == 1.0f ? 2 : v == 2.0f ? 1 : (int)v]++;
        }
        same_bag = memcmp(cnt, cnt_sw, sizeof cnt) == 0 && cnt[0] == 1 && cnt[1] == 1 && cnt[2] == 1;
    }
    CHECK(same_bag);
    dp_dataset_free(&a);
    dp_dataset_free(&b);
    dp_dataset_free(&c);

    /* edge sizes: T = 4 (L in 3..4), odd T, vocab 4 (every filler is id 3), n = 1 */
    static const int Ts[] = {4, 5, 7, 64};
    static const int Vs[] = {4, 4, 5, 30522};
    for (int k = 0; k < 4; k++) {
        dp_dataset e;
        CHECK_OK(dp_text_synthetic(1001, Ts[k], Vs[k], (uint64_t)k, &e));
        double ls[2] = {0, 0}, ps[2][2] = {{0, 0}, {0, 0}};
        double *h = calloc(2 * (size_t)Vs[k], sizeof(double));
        CHECK(check_synthetic(&e, Ts[k], Vs[k], ls, ps, h));
        int o = 0, seen_short = 0, seen_full = 0;
        for (size_t i = 0; i < e.n; i++) {
            o += e.y[i];
            float last = e.x[i * (size_t)Ts[k] + (size_t)Ts[k] - 1];
            seen_short |= last == -1.0f;
            seen_full |= last != -1.0f;
        }
        CHECK(o == 500 || o == 501);
        CHECK(seen_short && seen_full); /* padding is exercised, and full rows occur */
        CHECK_OK(dp_dataset_validate_tokens(&e, "synthetic", Vs[k]));
        free(h);
        dp_dataset_free(&e);
    }
    dp_dataset e;
    CHECK_OK(dp_text_synthetic(1, 4, 4, 0, &e));
    CHECK(e.n == 1 && e.y && (e.y[0] == 0 || e.y[0] == 1));
    dp_dataset_free(&e);

    /* argument errors; out untouched */
    dp_dataset sentinel;
    memset(&sentinel, 0xab, sizeof sentinel);
    e = sentinel;
    CHECK_FAIL(dp_text_synthetic(10, 3, 10, 1, &e), DP_ERR_INVALID, "T = 3");
    CHECK_FAIL(dp_text_synthetic(10, 65537, 10, 1, &e), DP_ERR_INVALID, "T = 65537");
    CHECK_FAIL(dp_text_synthetic(10, 8, 3, 1, &e), DP_ERR_INVALID, "vocabulary size 3");
    CHECK_FAIL(dp_text_synthetic(10, 8, (1 << 24) + 1, 1, &e), DP_ERR_INVALID, "vocabulary size");
    CHECK_FAIL(dp_text_synthetic(0, 8, 10, 1, &e), DP_ERR_INVALID, "n (rows) is 0");
    CHECK_FAIL(dp_text_synthetic(SIZE_MAX / 8, 8, 10, 1, &e), DP_ERR_RANGE, "overflow");
    CHECK_FAIL(dp_text_synthetic(10, 8, 10, 1, NULL), DP_ERR_INVALID, "out");
    dp_mem_fail_after(1);
    CHECK_FAIL(dp_text_synthetic(10, 8, 10, 1, &e), DP_ERR_NOMEM, "");
    dp_mem_fail_after(2);
    CHECK_FAIL(dp_text_synthetic(10, 8, 10, 1, &e), DP_ERR_NOMEM, "");
    dp_mem_fail_after(0);
    CHECK(memcmp(&e, &sentinel, sizeof e) == 0);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dpsgd_test_tokens_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_load_roundtrip();
    test_load_errors();
    test_validate_tokens();
    test_synthetic();
    remove_tmpdir();
    return t_finish("test_tokens");
}
