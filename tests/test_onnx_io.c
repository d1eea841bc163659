/* test_onnx_io.c: the ONNX file layer (src/io/onnx.c): every model and tensor of Debian's
 * libonnx-testdata (a test dependency: the test fails when it is missing), known values,
 * external data, typed fields, malformed files (built here with protobuf-c, truncated,
 * bit-flipped, nested too deep), and writing a model back with replaced initializers.
 * Temporary files go to a mkdtemp directory under /tmp, removed at the end. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "io/onnx.h"
#include <protobuf-c/protobuf-c.h>
#include "onnx.pb-c.h" /* generated in the build folder (CMakeLists.txt) */

#define TESTDATA "/usr/share/libonnx-testdata/data"
#define FIXTURES DP_SOURCE_DIR "/tests/onnx_io"

static char tmpdir[64];

/* expr must fail with status want, and the message must contain needle */
#define CHECK_FAIL(expr, want, needle)                                                                                 \
    do {                                                                                                               \
        dp_clear_error();                                                                                              \
        dp_status s_ = (expr);                                                                                         \
        const char *m_ = dp_last_error();                                                                              \
        if (s_ == (want) && strstr(m_, (needle)) != NULL)                                                              \
            t_pass++;                                                                                                  \
        else {                                                                                                         \
            t_fail++;                                                                                                  \
            fprintf(stderr, "%s:%d: %s returned %s (\"%s\"), expected %s with \"%s\"\n", __FILE__, __LINE__, #expr,    \
                    dp_strerror(s_), m_, dp_strerror(want), (needle));                                                 \
        }                                                                                                              \
    } while (0)
#define CHECK_MSG(needle)                                                                                              \
    do {                                                                                                               \
        if (strstr(dp_last_error(), (needle)))                                                                         \
            t_pass++;                                                                                                  \
        else {                                                                                                         \
            t_fail++;                                                                                                  \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, dp_last_error(), (needle));    \
        }                                                                                                              \
    } while (0)

static const char *tmp(const char *name) {
    static char ring[8][512];
    static int k;
    char *p = ring[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = slurp(from, &n);
    if (!b) {
        fprintf(stderr, "cannot read %s\n", from);
        exit(2);
    }
    spit(to, b, n);
    free(b);
}

/* ---- comparing two loaded models (the writer must keep everything) ------------------------ */

static int same_str(const char *a, const char *b) { return strcmp(a, b) == 0; }

static int same_tensor(const dp__onnx_tensor *a, const dp__onnx_tensor *b) {
    if (!same_str(a->name, b->name) || a->elem_type != b->elem_type || a->ndim != b->ndim || a->count != b->count)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->dims[d] != b->dims[d]) return 0;
    if (a->f && (!b->f || memcmp(a->f, b->f, a->count * sizeof(float)))) return 0;
    if (a->i && (!b->i || memcmp(a->i, b->i, a->count * sizeof(int64_t)))) return 0;
    for (size_t k = 0; a->s && k < a->count; k++)
        if (a->s_len[k] != b->s_len[k] || memcmp(a->s[k], b->s[k], a->s_len[k])) return 0;
    return 1;
}

static int same_value(const dp__onnx_value *a, const dp__onnx_value *b) {
    if (!same_str(a->name, b->name) || a->kind != b->kind || a->elem_type != b->elem_type || a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->dims[d] != b->dims[d] || !same_str(a->dim_param[d], b->dim_param[d])) return 0;
    return 1;
}

static int same_attr(const dp__onnx_attr *a, const dp__onnx_attr *b) {
    if (!same_str(a->name, b->name) || a->type != b->type || a->i != b->i || memcmp(&a->f, &b->f, 4) ||
        a->s_len != b->s_len || a->n != b->n)
        return 0;
    if (a->s && memcmp(a->s, b->s, a->s_len)) return 0;
    if (a->ints && memcmp(a->ints, b->ints, a->n * 8)) return 0;
    if (a->floats && memcmp(a->floats, b->floats, a->n * 4)) return 0;
    for (size_t k = 0; a->strings && k < a->n; k++)
        if (a->strings_len[k] != b->strings_len[k] || memcmp(a->strings[k], b->strings[k], a->strings_len[k])) return 0;
    if (!a->t != !b->t || (a->t && !same_tensor(a->t, b->t))) return 0;
    return 1;
}

/* skip: an initializer name whose values may differ (NULL: none) */
static int same_model(const dp__onnx_model *a, const dp__onnx_model *b, const char *skip) {
    if (a->ir_version != b->ir_version || !same_str(a->producer_name, b->producer_name) ||
        !same_str(a->producer_version, b->producer_version) || !same_str(a->graph_name, b->graph_name) ||
        a->n_opsets != b->n_opsets || a->n_inputs != b->n_inputs || a->n_outputs != b->n_outputs ||
        a->n_value_info != b->n_value_info || a->n_nodes != b->n_nodes || a->n_initializers != b->n_initializers)
        return 0;
    for (int k = 0; k < a->n_opsets; k++)
        if (!same_str(a->opsets[k].domain, b->opsets[k].domain) || a->opsets[k].version != b->opsets[k].version)
            return 0;
    for (int k = 0; k < a->n_inputs; k++)
        if (!same_value(&a->inputs[k], &b->inputs[k])) return 0;
    for (int k = 0; k < a->n_outputs; k++)
        if (!same_value(&a->outputs[k], &b->outputs[k])) return 0;
    for (int k = 0; k < a->n_value_info; k++)
        if (!same_value(&a->value_info[k], &b->value_info[k])) return 0;
    for (int k = 0; k < a->n_nodes; k++) {
        const dp__onnx_node *x = &a->nodes[k], *y = &b->nodes[k];
        if (!same_str(x->name, y->name) || !same_str(x->op_type, y->op_type) || !same_str(x->domain, y->domain) ||
            x->n_inputs != y->n_inputs || x->n_outputs != y->n_outputs || x->n_attrs != y->n_attrs)
            return 0;
        for (int j = 0; j < x->n_inputs; j++)
            if (!same_str(x->inputs[j], y->inputs[j])) return 0;
        for (int j = 0; j < x->n_outputs; j++)
            if (!same_str(x->outputs[j], y->outputs[j])) return 0;
        for (int j = 0; j < x->n_attrs; j++)
            if (!same_attr(&x->attrs[j], &y->attrs[j])) return 0;
    }
    for (int k = 0; k < a->n_initializers; k++) {
        const dp__onnx_tensor *x = &a->initializers[k], *y = &b->initializers[k];
        if (skip && same_str(x->name, skip)) {
            if (!same_str(x->name, y->name) || x->count != y->count) return 0;
        } else if (!same_tensor(x, y))
            return 0;
    }
    return 1;
}

/* ---- Debian's libonnx-testdata: every model and every tensor ----------------------------- */

static int n_models, n_tensors, n_skipped, n_roundtrips, n_quirks;

/* the graph value a test_data_set file stands for: input_N is the N-th graph input that is
 * not an initializer, output_N the N-th graph output */
static const dp__onnx_value *value_for(const dp__onnx_model *m, int is_input, int idx) {
    if (!is_input) return idx < m->n_outputs ? &m->outputs[idx] : NULL;
    for (int k = 0, seen = 0; k < m->n_inputs; k++) {
        if (dp__onnx_find_initializer(m, m->inputs[k].name)) continue;
        if (seen++ == idx) return &m->inputs[k];
    }
    return NULL;
}

static void check_data_file(const dp__onnx_model *m, const char *path) {
    const char *base = strrchr(path, '/') + 1;
    int is_input = strncmp(base, "input_", 6) == 0;
    int idx = atoi(base + (is_input ? 6 : 7));
    const dp__onnx_value *v = value_for(m, is_input, idx);
    if (!v) {
        t_fail++;
        fprintf(stderr, "%s: no graph %s %d for it\n", path, is_input ? "input" : "output", idx);
        return;
    }
    if (v->kind != DP__ONNX_VALUE_TENSOR) { /* a SequenceProto or OptionalProto file */
        n_skipped++;
        return;
    }
    dp__onnx_tensor_file *tf = NULL;
    dp_status s = dp__onnx_load_tensor(path, &tf);
    if (s != DP_OK) {
        t_fail++;
        fprintf(stderr, "%s: %s\n", path, dp_last_error());
        return;
    }
    const dp__onnx_tensor *t = dp__onnx_tensor_file_get(tf);
    /* known quirks of the ONNX test cases: BFLOAT16 data is stored as UINT16 (numpy has no
     * bfloat16), and CastLike's 'like' input is a 1-D file where the graph declares 2 dims */
    int bf16 = v->elem_type == DP__ONNX_BFLOAT16 && t->elem_type == DP__ONNX_UINT16;
    int like = strstr(path, "/test_castlike_") && !strcmp(v->name, "like") && t->ndim == 1;
    if (bf16 || like) n_quirks++;
    int ok = t->elem_type == v->elem_type || bf16;
    if (v->ndim >= 0 && !like) {
        ok = ok && t->ndim == v->ndim;
        for (int d = 0; ok && d < v->ndim; d++)
            if (v->dims[d] >= 0 && v->dims[d] != t->dims[d]) ok = 0;
    }
    if (ok)
        t_pass++, n_tensors++;
    else {
        t_fail++;
        fprintf(stderr, "%s: %s with %d dims, the graph's '%s' says %s with %d dims\n", path,
                dp__onnx_type_name(t->elem_type), t->ndim, v->name, dp__onnx_type_name(v->elem_type), v->ndim);
    }
    dp__onnx_tensor_file_free(tf);
}

/* every test_*\/model.onnx under TESTDATA/sub; with data: its test_data_set_0 files too; with
 * roundtrip: written back with no replacement, and read again identical */
static int read_suite(const char *sub, int data, int roundtrip) {
    char pat[512];
    snprintf(pat, sizeof pat, "%s/%s/test_*/model.onnx", TESTDATA, sub);
    glob_t g;
    int n = 0;
    if (glob(pat, 0, NULL, &g) != 0) return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        dp__onnx_model *m = NULL;
        if (dp__onnx_load(g.gl_pathv[i], &m) != DP_OK) {
            t_fail++;
            fprintf(stderr, "%s\n", dp_last_error());
            continue;
        }
        t_pass++;
        n++;
        if (data) {
            char dpat[600];
            snprintf(dpat, sizeof dpat, "%.*s/test_data_set_0/*put_*.pb",
                     (int)(strrchr(g.gl_pathv[i], '/') - g.gl_pathv[i]), g.gl_pathv[i]);
            glob_t gd;
            if (glob(dpat, 0, NULL, &gd) == 0) {
                for (size_t j = 0; j < gd.gl_pathc; j++) check_data_file(m, gd.gl_pathv[j]);
                globfree(&gd);
            }
        }
        if (roundtrip) {
            const char *out = tmp("roundtrip.onnx");
            dp__onnx_model *back = NULL;
            if (dp__onnx_save_initializers(g.gl_pathv[i], out, 0, NULL) != DP_OK ||
                dp__onnx_load(out, &back) != DP_OK) {
                t_fail++;
                fprintf(stderr, "%s: written back: %s\n", g.gl_pathv[i], dp_last_error());
            } else if (!same_model(m, back, NULL)) {
                t_fail++;
                fprintf(stderr, "%s: written back, it reads differently\n", g.gl_pathv[i]);
            } else {
                /* these files are canonically encoded: protobuf-c gives the same bytes back */
                size_t n1, n2;
                unsigned char *b1 = slurp(g.gl_pathv[i], &n1), *b2 = slurp(out, &n2);
                if (b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1))
                    t_pass++, n_roundtrips++;
                else {
                    t_fail++;
                    fprintf(stderr, "%s: written back, the bytes differ\n", g.gl_pathv[i]);
                }
                free(b1);
                free(b2);
            }
            dp__onnx_free(back);
        }
        dp__onnx_free(m);
    }
    globfree(&g);
    return n;
}

static void test_testdata(void) {
    struct stat sb;
    if (stat(TESTDATA "/node", &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        t_fail++;
        fprintf(stderr, "%s/node is missing: install Debian's libonnx-testdata (scripts/install-deps.sh)\n", TESTDATA);
        return;
    }
    int node = read_suite("node", 1, 1);
    int conv = read_suite("pytorch-converted", 1, 1);
    int op = read_suite("pytorch-operator", 1, 1);
    int simple = read_suite("simple", 1, 1);
    printf("libonnx-testdata: %d models read (node %d, pytorch-converted %d, pytorch-operator %d, simple %d); "
           "%d tensor files read and matched to their graph value, %d skipped (sequence or optional values, not "
           "TensorProto); %d matched through a known quirk of the test case; %d models written back with no "
           "replacement, identical byte for byte\n",
           n_models = node + conv + op + simple, node, conv, op, simple, n_tensors, n_skipped, n_quirks, n_roundtrips);
    CHECK(node >= 900); /* 932 in Debian's 1.12 package */
    CHECK(n_roundtrips == n_models);
    CHECK(n_tensors >= 3000);
}

/* ---- known values ------------------------------------------------------------------------ */

static dp__onnx_model *load(const char *path) {
    dp__onnx_model *m = NULL;
    dp_status s = dp__onnx_load(path, &m);
    CHECK_OK(s);
    return s == DP_OK ? m : NULL;
}

static void test_known(void) {
    dp__onnx_model *m = load(TESTDATA "/node/test_gemm_default_no_bias/model.onnx");
    if (m) {
        CHECK(m->n_nodes == 1 && !strcmp(m->nodes[0].op_type, "Gemm") && !strcmp(m->nodes[0].domain, ""));
        CHECK(m->nodes[0].n_inputs == 2 && !strcmp(m->nodes[0].inputs[0], "a") && !strcmp(m->nodes[0].inputs[1], "b"));
        CHECK(m->nodes[0].n_outputs == 1 && !strcmp(m->nodes[0].outputs[0], "y"));
        CHECK(m->n_inputs == 2 && m->n_outputs == 1 && m->n_initializers == 0);
        CHECK(m->inputs[0].kind == DP__ONNX_VALUE_TENSOR && m->inputs[0].elem_type == DP__ONNX_FLOAT);
        CHECK(m->inputs[0].ndim == 2 && m->inputs[0].dims[0] == 2 && m->inputs[0].dims[1] == 10);
        CHECK(m->inputs[1].dims[0] == 10 && m->inputs[1].dims[1] == 3);
        CHECK(m->ir_version == 7 && dp__onnx_opset_version(m, "") == 13 && dp__onnx_opset_version(m, "ai.onnx") == 13);
        CHECK(dp__onnx_opset_version(m, "com.microsoft") == 0);
        dp__onnx_free(m);
    }
    m = load(TESTDATA "/node/test_conv_with_strides_padding/model.onnx");
    if (m) {
        const dp__onnx_node *n = &m->nodes[0];
        CHECK(!strcmp(n->op_type, "Conv") && n->n_attrs == 3);
        const dp__onnx_attr *a = dp__onnx_find_attr(n, "strides");
        CHECK(a && a->type == DP__ONNX_ATTR_INTS && a->n == 2 && a->ints[0] == 2 && a->ints[1] == 2);
        a = dp__onnx_find_attr(n, "pads");
        CHECK(a && a->type == DP__ONNX_ATTR_INTS && a->n == 4 && a->ints[0] == 1 && a->ints[3] == 1);
        a = dp__onnx_find_attr(n, "kernel_shape");
        CHECK(a && a->n == 2 && a->ints[0] == 3 && a->ints[1] == 3);
        CHECK(dp__onnx_find_attr(n, "dilations") == NULL);
        CHECK(m->inputs[0].ndim == 4 && m->inputs[0].dims[2] == 7 && m->inputs[0].dims[3] == 5);
        dp__onnx_free(m);
    }
    /* Constant: a TENSOR attribute, equal to the stored output */
    m = load(TESTDATA "/node/test_constant/model.onnx");
    dp__onnx_tensor_file *tf = NULL;
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/node/test_constant/test_data_set_0/output_0.pb", &tf));
    if (m && tf) {
        const dp__onnx_attr *a = dp__onnx_find_attr(&m->nodes[0], "value");
        CHECK(a && a->type == DP__ONNX_ATTR_TENSOR && a->t && a->t->elem_type == DP__ONNX_FLOAT);
        const dp__onnx_tensor *o = dp__onnx_tensor_file_get(tf);
        CHECK(a && a->t && a->t->count == o->count && o->count == 25 &&
              !memcmp(a->t->f, o->f, o->count * sizeof(float)));
    }
    dp__onnx_free(m);
    dp__onnx_tensor_file_free(tf);
    /* Cast an INT attribute; FLOAT16 raw data against the FLOAT input it was cast from */
    m = load(TESTDATA "/node/test_cast_FLOAT_to_FLOAT16/model.onnx");
    dp__onnx_tensor_file *in = NULL, *out = NULL;
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/node/test_cast_FLOAT_to_FLOAT16/test_data_set_0/input_0.pb", &in));
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/node/test_cast_FLOAT_to_FLOAT16/test_data_set_0/output_0.pb", &out));
    if (m && in && out) {
        const dp__onnx_attr *a = dp__onnx_find_attr(&m->nodes[0], "to");
        CHECK(a && a->type == DP__ONNX_ATTR_INT && a->i == DP__ONNX_FLOAT16);
        const dp__onnx_tensor *x = dp__onnx_tensor_file_get(in), *y = dp__onnx_tensor_file_get(out);
        CHECK(x->elem_type == DP__ONNX_FLOAT && y->elem_type == DP__ONNX_FLOAT16 && x->count == 12 && y->count == 12);
        double worst = 0;
        for (size_t k = 0; k < x->count && k < y->count; k++)
            if (isfinite(x->f[k]) && fabs(x->f[k]) < 60000) {
                double e = fabs((double)y->f[k] - x->f[k]) / fmax(fabs(x->f[k]), 1e-4);
                worst = fmax(worst, e);
            }
        CHECK(worst < 1e-3); /* half precision: 2^-11 relative */
        CHECK_CLOSE(x->f[0], 0.5488135, 1e-6);
    }
    dp__onnx_free(m);
    dp__onnx_tensor_file_free(in);
    dp__onnx_tensor_file_free(out);
    /* INT64 raw data; STRING data */
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/node/test_reshape_reordered_all_dims/test_data_set_0/input_1.pb", &in));
    if (in) {
        const dp__onnx_tensor *t = dp__onnx_tensor_file_get(in);
        CHECK(t->elem_type == DP__ONNX_INT64 && t->count == 3 && t->i[0] == 4 && t->i[1] == 2 && t->i[2] == 3);
    }
    dp__onnx_tensor_file_free(in);
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/node/test_cast_STRING_to_FLOAT/test_data_set_0/input_0.pb", &in));
    if (in) {
        const dp__onnx_tensor *t = dp__onnx_tensor_file_get(in);
        CHECK(t->elem_type == DP__ONNX_STRING && t->count == 12 && t->s && !strcmp(t->s[0], "0.47892547") &&
              t->s_len[0] == 10);
    }
    dp__onnx_tensor_file_free(in);

    /* PyTorch's Linear: initializers in raw_data; y = x W^T + b recomputed from the files */
    m = load(TESTDATA "/pytorch-converted/test_Linear/model.onnx");
    in = out = NULL;
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/pytorch-converted/test_Linear/test_data_set_0/input_0.pb", &in));
    CHECK_OK(dp__onnx_load_tensor(TESTDATA "/pytorch-converted/test_Linear/test_data_set_0/output_0.pb", &out));
    if (m && in && out) {
        const dp__onnx_tensor *W = dp__onnx_find_initializer(m, "1"), *b = dp__onnx_find_initializer(m, "2");
        const dp__onnx_tensor *x = dp__onnx_tensor_file_get(in), *y = dp__onnx_tensor_file_get(out);
        CHECK(W && b && W->ndim == 2 && W->dims[0] == 8 && W->dims[1] == 10 && b->count == 8);
        CHECK(!W->external && x->ndim == 2 && x->dims[1] == 10 && y->dims[1] == 8);
        if (W && b && x->ndim == 2 && y->ndim == 2 && x->dims[1] == 10 && y->dims[0] == x->dims[0]) {
            double worst = 0;
            for (int64_t r = 0; r < x->dims[0]; r++)
                for (int o = 0; o < 8; o++) {
                    double acc = b->f[o];
                    for (int k = 0; k < 10; k++) acc += (double)x->f[r * 10 + k] * W->f[o * 10 + k];
                    worst = fmax(worst, fabs(acc - y->f[r * 8 + o]));
                }
            CHECK(worst < 1e-5);
        }
        CHECK(dp__onnx_find_initializer(m, "3") == NULL && dp__onnx_find_initializer(m, "") == NULL);
    }
    dp__onnx_free(m);
    dp__onnx_tensor_file_free(in);
    dp__onnx_tensor_file_free(out);
}

/* ---- fixtures from tests/onnx_io/make_fixtures.py ------------------------------------------ */

static void check_external_values(const dp__onnx_model *m, int external) {
    const dp__onnx_tensor *W = dp__onnx_find_initializer(m, "W"), *b = dp__onnx_find_initializer(m, "b"),
                          *sh = dp__onnx_find_initializer(m, "shape");
    CHECK(W && b && sh);
    if (!W || !b || !sh) return;
    CHECK(W->external == external && b->external == external && sh->external == external);
    CHECK(W->elem_type == DP__ONNX_FLOAT && W->ndim == 2 && W->dims[0] == 3 && W->dims[1] == 4);
    int ok = 1;
    for (int k = 0; k < 12; k++) ok &= W->f[k] == 0.25f * (float)k - 1.0f;
    CHECK(ok);
    CHECK(sh->elem_type == DP__ONNX_INT64 && sh->count == 2 && sh->i[0] == -1 && sh->i[1] == 4);
    CHECK(m->inputs[0].ndim == 2 && m->inputs[0].dims[0] == -1 && !strcmp(m->inputs[0].dim_param[0], "batch") &&
          m->inputs[0].dims[1] == 3 && !strcmp(m->inputs[0].dim_param[1], ""));
}

static void test_fixtures(void) {
    dp__onnx_model *m = load(FIXTURES "/external/model.onnx");
    if (m) {
        check_external_values(m, 1);
        const dp__onnx_tensor *b = dp__onnx_find_initializer(m, "b");
        CHECK(b && b->count == 4 && b->f[0] == 10.0f && b->f[3] == 13.0f);
        CHECK(m->n_nodes == 3 && !strcmp(m->nodes[2].op_type, "Reshape") && !strcmp(m->nodes[1].name, "add"));
        CHECK(!strcmp(m->producer_name, "make_fixtures.py") && dp__onnx_opset_version(m, "") == 17);
        dp__onnx_free(m);
    }
    /* in memory, external data has no directory to come from */
    size_t n;
    unsigned char *buf = slurp(FIXTURES "/external/model.onnx", &n);
    CHECK(buf != NULL);
    CHECK_FAIL(dp__onnx_parse(buf, n, "mem.onnx", NULL, &m), DP_ERR_UNSUPPORTED, "mem.onnx: initializer 'W'");
    free(buf);

    m = load(FIXTURES "/typed.onnx");
    if (m) {
        const dp__onnx_tensor *t = dp__onnx_find_initializer(m, "f32");
        CHECK(t && t->elem_type == DP__ONNX_FLOAT && t->count == 6 && t->f[0] == -1.0f && t->f[5] == 1.5f);
        t = dp__onnx_find_initializer(m, "f64");
        CHECK(t && t->elem_type == DP__ONNX_DOUBLE && t->count == 2 && isinf(t->f[0]) && t->f[0] > 0 &&
              t->f[1] == -2.5f);
        t = dp__onnx_find_initializer(m, "f16");
        CHECK(t && t->count == 3 && t->f[0] == 1.5f && t->f[1] == -2.0f && t->f[2] == 65504.0f);
        t = dp__onnx_find_initializer(m, "i8");
        CHECK(t && t->i && t->i[0] == -128 && t->i[1] == 0 && t->i[2] == 127);
        t = dp__onnx_find_initializer(m, "b");
        CHECK(t && t->elem_type == DP__ONNX_BOOL && t->i[0] == 1 && t->i[1] == 0);
        t = dp__onnx_find_initializer(m, "i64");
        CHECK(t && t->i[0] == -(INT64_C(1) << 40) && t->i[1] == 7);
        t = dp__onnx_find_initializer(m, "u32");
        CHECK(t && t->i[0] == INT64_C(4000000000));
        t = dp__onnx_find_initializer(m, "s");
        CHECK(t && t->count == 2 && !strcmp(t->s[0], "hello") && t->s_len[1] == 3 && !memcmp(t->s[1], "a\0b", 4));
        t = dp__onnx_find_initializer(m, "scalar");
        CHECK(t && t->ndim == 0 && t->count == 1 && t->f[0] == 3.25f);
        CHECK(m->n_inputs == 0 && m->n_initializers == 9);
        dp__onnx_free(m);
    }
}

/* ---- malformed models built with protobuf-c ---------------------------------------------- */

typedef struct {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__NodeProto n;
    Onnx__NodeProto *nodes[1];
    Onnx__OperatorSetIdProto op;
    Onnx__OperatorSetIdProto *ops[1];
    Onnx__TensorProto *inits[2];
    char *in[1], *out[1];
} mini;

/* a model with one Identity node W -> y and the given initializers */
static void mini_init(mini *x, Onnx__TensorProto *t0, Onnx__TensorProto *t1) {
    onnx__model_proto__init(&x->m);
    onnx__graph_proto__init(&x->g);
    onnx__node_proto__init(&x->n);
    onnx__operator_set_id_proto__init(&x->op);
    x->in[0] = "W";
    x->out[0] = "y";
    x->n.n_input = 1;
    x->n.input = x->in;
    x->n.n_output = 1;
    x->n.output = x->out;
    x->n.op_type = "Identity";
    x->nodes[0] = &x->n;
    x->g.n_node = 1;
    x->g.node = x->nodes;
    x->g.name = "mini";
    x->inits[0] = t0;
    x->inits[1] = t1;
    x->g.n_initializer = t1 ? 2 : t0 ? 1 : 0;
    x->g.initializer = x->inits;
    x->op.domain = "";
    x->op.has_version = 1;
    x->op.version = 17;
    x->ops[0] = &x->op;
    x->m.n_opset_import = 1;
    x->m.opset_import = x->ops;
    x->m.has_ir_version = 1;
    x->m.ir_version = 8;
    x->m.graph = &x->g;
}

/* writes the model to tmp(name) and returns that path */
static const char *mini_write(mini *x, const char *name) {
    size_t n = onnx__model_proto__get_packed_size(&x->m);
    unsigned char *b = malloc(n ? n : 1);
    onnx__model_proto__pack(&x->m, b);
    const char *p = tmp(name);
    spit(p, b, n);
    free(b);
    return p;
}

static void ftensor(Onnx__TensorProto *t, const char *name, size_t ndim, int64_t *dims, void *raw, size_t raw_len) {
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    t->has_data_type = 1;
    t->data_type = DP__ONNX_FLOAT;
    t->n_dims = ndim;
    t->dims = dims;
    if (raw) {
        t->has_raw_data = 1;
        t->raw_data.data = raw;
        t->raw_data.len = raw_len;
    }
}

static Onnx__StringStringEntryProto kv_make(const char *k, const char *v) {
    Onnx__StringStringEntryProto e;
    onnx__string_string_entry_proto__init(&e);
    e.key = (char *)k;
    e.value = (char *)v;
    return e;
}

/* an initializer W [2] FLOAT in external data at location (offset / length NULL: not given) */
static const char *external_model(const char *name, const char *location, const char *offset, const char *length) {
    static int64_t dims[1] = {2};
    mini x;
    Onnx__TensorProto t;
    ftensor(&t, "W", 1, dims, NULL, 0);
    Onnx__StringStringEntryProto e[3] = {kv_make("location", location), kv_make("offset", offset),
                                         kv_make("length", length)};
    Onnx__StringStringEntryProto *ep[3];
    size_t ne = 0;
    ep[ne++] = &e[0];
    if (offset) ep[ne++] = &e[1];
    if (length) ep[ne++] = &e[2];
    t.n_external_data = ne;
    t.external_data = ep;
    t.has_data_location = 1;
    t.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    mini_init(&x, &t, NULL);
    return mini_write(&x, name);
}

static void test_malformed(void) {
    dp__onnx_model *m = NULL;
    mini x;
    Onnx__TensorProto t, t2;
    int64_t d23[2] = {2, 3};
    float six[6] = {1, 2, 3, 4, 5, 6};

    /* the well-formed base case */
    ftensor(&t, "W", 2, d23, six, sizeof six);
    mini_init(&x, &t, NULL);
    m = load(mini_write(&x, "ok.onnx"));
    CHECK(m && m->n_initializers == 1 && m->initializers[0].f[5] == 6.0f);
    dp__onnx_free(m);

    /* raw_data of the wrong size */
    ftensor(&t, "W", 2, d23, six, 20);
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "rawsize.onnx"), &m), DP_ERR_FORMAT,
               "rawsize.onnx: initializer 'W': raw_data has 20 bytes, dims [2, 3] of FLOAT need 24");
    /* float_data of the wrong count */
    ftensor(&t, "W", 2, d23, NULL, 0);
    t.n_float_data = 5;
    t.float_data = six;
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "typedsize.onnx"), &m), DP_ERR_FORMAT,
               "initializer 'W': float_data has 5 values, dims [2, 3] need 6");
    /* a typed field that does not fit the type */
    ftensor(&t, "W", 1, d23, NULL, 0);
    int64_t two[2] = {1, 2};
    t.n_int64_data = 2;
    t.int64_data = two;
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "wrongfield.onnx"), &m), DP_ERR_FORMAT, "int64_data given for a FLOAT");
    /* no data */
    ftensor(&t, "W", 2, d23, NULL, 0);
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "nodata.onnx"), &m), DP_ERR_FORMAT, "'W': no data");
    /* dims whose product overflows, and a negative dim */
    int64_t huge[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 3};
    ftensor(&t, "W", 3, huge, six, 4);
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "overflow.onnx"), &m), DP_ERR_RANGE,
               "'W': dims [1099511627776, 1099511627776, 3] overflow");
    int64_t neg[2] = {2, -3};
    ftensor(&t, "W", 2, neg, six, 24);
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "negdim.onnx"), &m), DP_ERR_FORMAT, "dim 1 is negative");
    /* big dims with a zero: 0 elements, fine */
    int64_t zero[2] = {0, INT64_MAX};
    ftensor(&t, "W", 2, zero, NULL, 0);
    mini_init(&x, &t, NULL);
    m = load(mini_write(&x, "zero.onnx"));
    CHECK(m && m->initializers[0].count == 0);
    dp__onnx_free(m);
    /* unsupported and missing element types */
    ftensor(&t, "W", 2, d23, six, 24);
    t.data_type = DP__ONNX_COMPLEX64;
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "complex.onnx"), &m), DP_ERR_UNSUPPORTED,
               "unsupported elem type COMPLEX64");
    t.data_type = 0;
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "undef.onnx"), &m), DP_ERR_FORMAT, "'W': no data_type");
    /* UINT64 above INT64_MAX */
    uint8_t u64[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    int64_t d1[1] = {1};
    ftensor(&t, "W", 1, d1, u64, 8);
    t.data_type = DP__ONNX_UINT64;
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "u64.onnx"), &m), DP_ERR_RANGE, "above INT64_MAX");
    /* INT8 in int32_data out of range */
    int32_t big8[1] = {300};
    ftensor(&t, "W", 1, d1, NULL, 0);
    t.data_type = DP__ONNX_INT8;
    t.n_int32_data = 1;
    t.int32_data = big8;
    mini_init(&x, &t, NULL);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "int8.onnx"), &m), DP_ERR_RANGE, "out of range for INT8");
    /* the same name twice; a nameless initializer */
    ftensor(&t, "W", 2, d23, six, 24);
    ftensor(&t2, "W", 2, d23, six, 24);
    mini_init(&x, &t, &t2);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "twice.onnx"), &m), DP_ERR_FORMAT, "initializer 'W' is given twice");
    ftensor(&t2, "", 2, d23, six, 24);
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "noname.onnx"), &m), DP_ERR_FORMAT, "initializer 1: no name");
    /* no graph; a node without op_type; an attribute without type */
    ftensor(&t, "W", 2, d23, six, 24);
    mini_init(&x, &t, NULL);
    x.m.graph = NULL;
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "nograph.onnx"), &m), DP_ERR_FORMAT, "nograph.onnx: no graph");
    mini_init(&x, &t, NULL);
    x.n.op_type = NULL;
    x.n.name = "n0";
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "noop.onnx"), &m), DP_ERR_FORMAT, "node 0 'n0' (): no op_type");
    mini_init(&x, &t, NULL);
    Onnx__AttributeProto at;
    onnx__attribute_proto__init(&at);
    at.name = "alpha";
    at.has_f = 1;
    at.f = 0.5f;
    Onnx__AttributeProto *ats[1] = {&at};
    x.n.n_attribute = 1;
    x.n.attribute = ats;
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "noattrtype.onnx"), &m), DP_ERR_FORMAT,
               "node 0 (Identity): attribute 'alpha': no type");
    at.has_type = 1;
    at.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    m = load(mini_write(&x, "attr.onnx"));
    CHECK(m && m->nodes[0].n_attrs == 1 && m->nodes[0].attrs[0].f == 0.5f);
    dp__onnx_free(m);
    /* a graph input with a negative dim_value */
    Onnx__ValueInfoProto vi;
    Onnx__TypeProto tp;
    Onnx__TypeProto__Tensor tt;
    Onnx__TensorShapeProto sh;
    Onnx__TensorShapeProto__Dimension dim;
    onnx__value_info_proto__init(&vi);
    onnx__type_proto__init(&tp);
    onnx__type_proto__tensor__init(&tt);
    onnx__tensor_shape_proto__init(&sh);
    onnx__tensor_shape_proto__dimension__init(&dim);
    dim.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    dim.dim_value = -4;
    Onnx__TensorShapeProto__Dimension *dims[1] = {&dim};
    sh.n_dim = 1;
    sh.dim = dims;
    tt.has_elem_type = 1;
    tt.elem_type = DP__ONNX_FLOAT;
    tt.shape = &sh;
    tp.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp.tensor_type = &tt;
    vi.name = "x";
    vi.type = &tp;
    Onnx__ValueInfoProto *vis[1] = {&vi};
    mini_init(&x, &t, NULL);
    x.g.n_input = 1;
    x.g.input = vis;
    CHECK_FAIL(dp__onnx_load(mini_write(&x, "negin.onnx"), &m), DP_ERR_FORMAT,
               "graph input 'x': dim 0 has dim_value -4");

    /* external data: escapes, missing files, sizes */
    float w2[2] = {1.5f, -2.5f};
    spit(tmp("w.bin"), w2, sizeof w2);
    m = load(external_model("ext_ok.onnx", "w.bin", NULL, NULL));
    CHECK(m && m->initializers[0].external && m->initializers[0].f[0] == 1.5f && m->initializers[0].f[1] == -2.5f);
    dp__onnx_free(m);
    CHECK_FAIL(dp__onnx_load(external_model("ext_dotdot.onnx", "../w.bin", NULL, NULL), &m), DP_ERR_FORMAT,
               "initializer 'W': external data location '../w.bin' has a '..' component");
    CHECK_FAIL(dp__onnx_load(external_model("ext_dotdot2.onnx", "sub/../../w.bin", NULL, NULL), &m), DP_ERR_FORMAT,
               "'..' component");
    CHECK_FAIL(dp__onnx_load(external_model("ext_abs.onnx", "/etc/passwd", NULL, NULL), &m), DP_ERR_FORMAT,
               "is an absolute path");
    /* a symbolic link in the directory that leads out of it */
    char outside[128];
    snprintf(outside, sizeof outside, "%s.outside.bin", tmpdir);
    spit(outside, w2, sizeof w2);
    CHECK(symlink(outside, tmp("link.bin")) == 0);
    CHECK_FAIL(dp__onnx_load(external_model("ext_link.onnx", "link.bin", NULL, NULL), &m), DP_ERR_FORMAT,
               "outside the model's directory");
    unlink(outside);
    CHECK_FAIL(dp__onnx_load(external_model("ext_missing.onnx", "nothere.bin", NULL, NULL), &m), DP_ERR_IO,
               "ext_missing.onnx: initializer 'W': external data file");
    CHECK_MSG("nothere.bin: No such file");
    CHECK_FAIL(dp__onnx_load(external_model("ext_past.onnx", "w.bin", "4", "8"), &m), DP_ERR_FORMAT,
               "offset 4 + length 8 runs past the end");
    CHECK_FAIL(dp__onnx_load(external_model("ext_off.onnx", "w.bin", "9", NULL), &m), DP_ERR_FORMAT,
               "offset 9 is past the end");
    CHECK_FAIL(dp__onnx_load(external_model("ext_len.onnx", "w.bin", "4", NULL), &m), DP_ERR_FORMAT,
               "external data has 4 bytes");
    CHECK_FAIL(dp__onnx_load(external_model("ext_badoff.onnx", "w.bin", "-4", NULL), &m), DP_ERR_FORMAT,
               "offset '-4' is not a non-negative integer");
    CHECK_FAIL(dp__onnx_load(external_model("ext_noloc.onnx", "", NULL, NULL), &m), DP_ERR_FORMAT,
               "without a 'location'");
    CHECK(m == NULL);
}

/* wraps body as field number f (length-delimited) */
static size_t wrap(unsigned char *dst, int f, const unsigned char *body, size_t n) {
    size_t k = 0;
    dst[k++] = (unsigned char)((f << 3) | 2);
    size_t L = n;
    while (L >= 128) {
        dst[k++] = (unsigned char)((L & 127) | 128);
        L >>= 7;
    }
    dst[k++] = (unsigned char)L;
    memmove(dst + k, body, n);
    return k + n;
}

static void test_hostile(void) {
    dp__onnx_model *m = NULL;
    /* the committed regression inputs */
    CHECK_FAIL(dp__onnx_load(DP_SOURCE_DIR "/tests/regress/onnx/truncated.onnx", &m), DP_ERR_FORMAT, "truncated");
    CHECK_MSG("truncated.onnx: not a valid ONNX ModelProto: field graph");

    /* every prefix of a model with initializers: an error or a (smaller) valid model, never a crash */
    size_t n;
    unsigned char *buf = slurp(TESTDATA "/pytorch-converted/test_Conv2d/model.onnx", &n);
    CHECK(buf != NULL);
    int refused = 0, named = 0;
    for (size_t k = 0; buf && k < n; k++) {
        if (dp__onnx_parse(buf, k, "prefix.onnx", NULL, &m) != DP_OK) {
            refused++;
            named += strncmp(dp_last_error(), "prefix.onnx: ", 13) == 0;
        }
        dp__onnx_free(m);
        m = NULL;
    }
    CHECK(refused > (int)n * 9 / 10 && named == refused);
    /* every single-bit flip of it */
    int flips = 0, flip_refused = 0;
    for (size_t k = 0; buf && k < n * 8; k++) {
        buf[k / 8] ^= (unsigned char)(1u << (k % 8));
        if (dp__onnx_parse(buf, n, "flip.onnx", NULL, &m) != DP_OK) {
            flip_refused++;
            if (strncmp(dp_last_error(), "flip.onnx: ", 11) != 0) {
                t_fail++;
                fprintf(stderr, "bit flip %zu: message \"%s\" does not name the file\n", k, dp_last_error());
            }
        }
        dp__onnx_free(m);
        m = NULL;
        dp__onnx_tensor_file *tf = NULL;
        (void)dp__onnx_parse_tensor(buf, n, "flip.pb", &tf);
        dp__onnx_tensor_file_free(tf);
        buf[k / 8] ^= (unsigned char)(1u << (k % 8));
        flips++;
    }
    printf("hostile: %zu prefixes (%d refused), %d bit flips (%d refused)\n", n, refused, flips, flip_refused);
    free(buf);

    /* nested types 5000 deep (22 KB): protobuf-c alone would overflow the stack */
    size_t cap = 5000 * 12 + 64;
    unsigned char *a = calloc(cap, 1), *b = calloc(cap, 1);
    size_t len = 0;
    for (int k = 0; k < 5000; k++) {
        len = wrap(b, 1, a, len); /* TypeProto.Sequence.elem_type */
        len = wrap(a, 4, b, len); /* TypeProto.sequence_type */
    }
    unsigned char name[] = {0x0a, 0x01, 'x'}; /* ValueInfoProto.name = "x" */
    memcpy(b, name, sizeof name);
    len = sizeof name + wrap(b + sizeof name, 2, a, len); /* ValueInfoProto.type */
    len = wrap(a, 11, b, len);                            /* GraphProto.input */
    len = wrap(b, 7, a, len);                             /* ModelProto.graph */
    CHECK_FAIL(dp__onnx_parse(b, len, "deep.onnx", NULL, &m), DP_ERR_FORMAT,
               "deep.onnx: not a valid ONNX ModelProto: field graph.input[0].type.sequence_type.elem_type");
    CHECK_MSG("nested more than 64 deep");
    free(a);
    free(b);

    /* the file size limit: a sparse 2 GiB file is refused before it is read */
    const char *big = tmp("big.onnx");
    int fd = open(big, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)DP__ONNX_MAX_FILE_BYTES + 1) == 0);
    if (fd >= 0) close(fd);
    CHECK_FAIL(dp__onnx_load(big, &m), DP_ERR_RANGE, "big.onnx: the file has 2147483648 bytes, more than");
    unlink(big);
    /* empty and non-protobuf files */
    spit(tmp("empty.onnx"), "", 0);
    CHECK_FAIL(dp__onnx_load(tmp("empty.onnx"), &m), DP_ERR_FORMAT, "empty.onnx: no graph");
    spit(tmp("text.onnx"), "hello, world\n", 13);
    CHECK_FAIL(dp__onnx_load(tmp("text.onnx"), &m), DP_ERR_FORMAT, "text.onnx: not a valid ONNX ModelProto");
    CHECK_FAIL(dp__onnx_load(tmp("nothere.onnx"), &m), DP_ERR_IO, "nothere.onnx: cannot open");
    CHECK_FAIL(dp__onnx_load_tensor(tmp("text.onnx"), NULL), DP_ERR_INVALID, "out is NULL");
    /* a model is not a tensor */
    dp__onnx_tensor_file *tf = NULL;
    CHECK_FAIL(dp__onnx_load_tensor(TESTDATA "/pytorch-converted/test_Linear/model.onnx", &tf), DP_ERR_FORMAT,
               "test_Linear/model.onnx: not a valid ONNX TensorProto");
    CHECK(m == NULL && tf == NULL);
}

/* ---- writing back ------------------------------------------------------------------------ */

static void test_write(void) {
    const char *src = tmp("linear.onnx");
    copy_file(TESTDATA "/pytorch-converted/test_Linear/model.onnx", src);
    dp__onnx_model *a = load(src);
    if (!a) return;
    const dp__onnx_tensor *W = dp__onnx_find_initializer(a, "1");
    float v[80];
    for (int k = 0; k < 80; k++) v[k] = 0.01f * (float)k - 0.3f;
    dp__onnx_replacement r = {"1", v, 80};
    int before = count_files(tmpdir);
    CHECK_OK(dp__onnx_save_initializers(src, tmp("linear2.onnx"), 1, &r));
    CHECK(count_files(tmpdir) == before + 1); /* no temporary file left */
    dp__onnx_model *b = load(tmp("linear2.onnx"));
    if (b) {
        const dp__onnx_tensor *W2 = dp__onnx_find_initializer(b, "1");
        CHECK(W2 && W2->count == 80 && !memcmp(W2->f, v, sizeof v) && W2->ndim == 2 && W2->dims[1] == 10);
        CHECK(same_model(a, b, "1"));   /* everything else as it was */
        CHECK(!same_model(a, b, NULL)); /* and W did change */
        dp__onnx_free(b);
    }
    (void)W;
    /* in place */
    for (int k = 0; k < 80; k++) v[k] = -v[k];
    CHECK_OK(dp__onnx_save_initializers(src, src, 1, &r));
    b = load(src);
    CHECK(b && !memcmp(dp__onnx_find_initializer(b, "1")->f, v, sizeof v) && same_model(a, b, "1"));
    dp__onnx_free(b);
    /* refusals, before anything is written */
    dp__onnx_replacement bad = {"nope", v, 80};
    CHECK_FAIL(dp__onnx_save_initializers(src, tmp("never.onnx"), 1, &bad), DP_ERR_INVALID,
               "never.onnx: cannot replace 'nope'");
    bad = (dp__onnx_replacement){"1", v, 79};
    CHECK_FAIL(dp__onnx_save_initializers(src, tmp("never.onnx"), 1, &bad), DP_ERR_INVALID,
               "79 values given, its dims hold 80");
    dp__onnx_replacement two[2] = {{"1", v, 80}, {"1", v, 80}};
    CHECK_FAIL(dp__onnx_save_initializers(src, tmp("never.onnx"), 2, two), DP_ERR_INVALID, "'1' is replaced twice");
    int64_t iv = 3;
    (void)iv;
    dp__onnx_replacement notf = {"i64", v, 2};
    CHECK_FAIL(dp__onnx_save_initializers(FIXTURES "/typed.onnx", tmp("never.onnx"), 1, &notf), DP_ERR_INVALID,
               "the initializer is INT64, not FLOAT");
    CHECK(access(tmp("never.onnx"), F_OK) != 0);
    CHECK_FAIL(dp__onnx_save_initializers(src, "/nonexistent-dir/x.onnx", 1, &r), DP_ERR_IO, "/nonexistent-dir/x.onnx");
    dp__onnx_free(a);

    /* a field this schema does not know (a newer ONNX) is kept */
    size_t n;
    unsigned char *raw = slurp(TESTDATA "/pytorch-converted/test_Linear/model.onnx", &n);
    unsigned char *ext = raw ? realloc(raw, n + 6) : NULL;
    if (ext) {
        const unsigned char unk[6] = {0x9a, 0x06, 3, 'a', 'b', 'c'}; /* field 99, "abc" */
        memcpy(ext + n, unk, 6);
        spit(tmp("unknown.onnx"), ext, n + 6);
        CHECK_OK(dp__onnx_save_initializers(tmp("unknown.onnx"), tmp("unknown2.onnx"), 0, NULL));
        size_t n2;
        unsigned char *back = slurp(tmp("unknown2.onnx"), &n2);
        CHECK(back && n2 == n + 6 && !memcmp(back, ext, n2));
        free(back);
        free(ext);
    }

    /* typed fields written back: the replaced FLOAT goes to raw_data, the others stay */
    a = load(FIXTURES "/typed.onnx");
    float f6[6] = {9, 8, 7, 6, 5, 4};
    dp__onnx_replacement rf = {"f32", f6, 6};
    CHECK_OK(dp__onnx_save_initializers(FIXTURES "/typed.onnx", tmp("typed2.onnx"), 1, &rf));
    b = load(tmp("typed2.onnx"));
    CHECK(a && b && same_model(a, b, "f32") && !memcmp(dp__onnx_find_initializer(b, "f32")->f, f6, sizeof f6));
    dp__onnx_free(a);
    dp__onnx_free(b);

    /* external data folded in: the copy stands alone */
    mkdir(tmp("ext"), 0755);
    copy_file(FIXTURES "/external/model.onnx", tmp("ext/model.onnx"));
    copy_file(FIXTURES "/external/weights.bin", tmp("ext/weights.bin"));
    a = load(tmp("ext/model.onnx"));
    float b4[4] = {-1, -2, -3, -4};
    dp__onnx_replacement rb = {"b", b4, 4};
    CHECK_OK(dp__onnx_save_initializers(tmp("ext/model.onnx"), tmp("folded.onnx"), 1, &rb));
    b = load(tmp("folded.onnx"));
    if (a && b) {
        check_external_values(b, 0);
        CHECK(!memcmp(dp__onnx_find_initializer(b, "b")->f, b4, sizeof b4) && same_model(a, b, "b"));
    }
    dp__onnx_free(b);
    /* in place: the model no longer needs weights.bin */
    CHECK_OK(dp__onnx_save_initializers(tmp("ext/model.onnx"), tmp("ext/model.onnx"), 0, NULL));
    unlink(tmp("ext/weights.bin"));
    b = load(tmp("ext/model.onnx"));
    CHECK(a && b && same_model(a, b, NULL));
    if (b) check_external_values(b, 0);
    dp__onnx_free(a);
    dp__onnx_free(b);
    /* a model whose external data escapes is refused by the writer too */
    CHECK_FAIL(
        dp__onnx_save_initializers(external_model("esc.onnx", "../w.bin", NULL, NULL), tmp("esc2.onnx"), 0, NULL),
        DP_ERR_FORMAT, "'..' component");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dpsgd_test_onnx_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_testdata();
    test_known();
    test_fixtures();
    test_malformed();
    test_hostile();
    test_write();
    remove_tree(tmpdir);
    (void)n_models;
    return t_finish("test_onnx_io");
}
