#define _POSIX_C_SOURCE 200809L
/* test_onnx_nodes.c: the ONNX importer (src/nn/onnx.c) on the ONNX project's own node tests
 * (Debian's libonnx-testdata: /usr/share/libonnx-testdata/data/node/test_NAME/model.onnx, with
 * test_data_set_0/input_N.pb and output_N.pb).
 *
 * A case is a test directory whose model is one node of an operator the importer supports.
 * Those models take their weights as graph inputs, so the case is imported through
 * dp__model_load_onnx_bound: each graph input in turn (input_0 first) is the model input (its
 * dim 0 the batch) and the others are bound to their input_N.pb values. When the importer
 * accepts a choice, the forward pass (inference) of that input's data must give output_0 to
 * 1e-4 * max(1, max |ref|): a wrong number is a FAIL. When it refuses every choice, the case
 * is a SKIP with input_0's refusal (group convolutions, SAME-padded pooling, broadcasting, ...).
 * One line per case, then the counts per operator (docs/onnx.md "Node tests" is made from
 * them). The test fails when a case fails, when the data is missing, or when fewer than
 * MIN_PASS cases pass (a regression that makes the importer refuse them). */
#include <dirent.h>

#include "io/onnx.h"
#include "nn/onnx_internal.h"
#include "test.h"

#ifndef NODE_DIR
#define NODE_DIR "/usr/share/libonnx-testdata/data/node"
#endif
/* the cases that pass today (tests/test_onnx_nodes.c's totals; docs/onnx.md "Node tests") */
#define MIN_PASS 117

static const char *const ops[] = {
    "Gemm",      "Conv",      "Relu",       "Tanh",       "Sigmoid",    "MaxPool",    "AveragePool", "GlobalAveragePool",
    "Flatten",   "Add",       "Mul",        "Gather",     "ReduceMean", "Dropout",    "Identity",    "Reshape",
    "InstanceNormalization",  "MatMul",     "Transpose",  "Softmax",    "LogSoftmax", "Erf",         "Sqrt",
    "Exp",       "Neg",       "LeakyRelu",  "Reciprocal", "Log",        "Abs",        "Sub",         "Div",
    "Pow",       "Slice",     "Split",      "Concat",     "Squeeze",    "Unsqueeze",  "ReduceSum",   "LayerNormalization",
    "Cast"};
enum { NOPS = sizeof ops / sizeof ops[0], MAXIN = 8 };
static int n_pass[NOPS], n_skip[NOPS], n_fail[NOPS];

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The refusal without the file name ("PATH: node 'n' (Op): why" -> "node 'n' (Op): why"). */
static const char *reason(const char *msg, const char *path) {
    size_t n = strlen(path);
    if (!strncmp(msg, path, n) && msg[n] == ':' && msg[n + 1] == ' ') return msg + n + 2;
    return msg;
}

/* Forward the model on x (a tensor whose dim 0 is the batch); compare with ref. 0 when right,
 * else a message in err. */
static int check_forward(dp_model *m, const dp__onnx_tensor *x, const dp__onnx_tensor *ref, char *err, size_t errn) {
    const int B = x->ndim >= 1 ? (int)x->dims[0] : 1;
    const size_t in = dp_model_input_size(m), K = (size_t)dp_model_output_size(m);
    if (x->count != (size_t)B * in) {
        snprintf(err, errn, "input has %zu values, the model takes %d x %zu", x->count, B, in);
        return 1;
    }
    if (!ref->f || ref->count != (size_t)B * K) {
        snprintf(err, errn, "output_0 has %zu %s values, the model gives %d x %zu", ref->count,
                 dp__onnx_type_name(ref->elem_type), B, K);
        return 1;
    }
    float *xf = dp_alloc(sizeof(float) * (x->count ? x->count : 1));
    if (!xf) {
        snprintf(err, errn, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < x->count; i++) xf[i] = x->f ? x->f[i] : (float)x->i[i];
    const float *y = NULL;
    dp_status st = dp_model_forward(m, xf, B, 0, NULL, &y);
    int bad = 0;
    if (st != DP_OK) {
        snprintf(err, errn, "forward: %s", dp_last_error());
        bad = 1;
    } else {
        double e = 0, s = 0;
        size_t at = 0;
        for (size_t i = 0; i < ref->count; i++) {
            double r = ref->f[i], d = fabs((double)y[i] - r);
            if (d != d && r == r) d = INFINITY; /* NaN where the reference is a number */
            if (d > e) e = d, at = i;
            if (fabs(r) > s) s = fabs(r);
        }
        if (e > 1e-4 * (s > 1 ? s : 1)) {
            snprintf(err, errn, "max abs error %.3g at value %zu (got %.7g, expected %.7g; max |ref| %.3g)", e, at,
                     (double)y[at], (double)ref->f[at], s);
            bad = 1;
        }
    }
    dp_free(xf);
    return bad;
}

/* One test directory (nothing when it is not a case: not one node of a supported operator). */
static void run_case(const char *name) {
    char path[1024], f[1100];
    snprintf(path, sizeof path, "%s/%s/model.onnx", NODE_DIR, name);
    dp__onnx_model *g = NULL;
    if (dp__onnx_load(path, &g) != DP_OK) {
        fprintf(stderr, "%s: %s\n", name, dp_last_error());
        CHECK(!"every node test model loads");
        return;
    }
    int op = -1;
    if (g->n_nodes == 1 && !g->nodes[0].domain[0])
        for (int k = 0; k < NOPS; k++)
            if (!strcmp(g->nodes[0].op_type, ops[k])) op = k;
    if (op < 0 || g->n_inputs > MAXIN) {
        dp__onnx_free(g);
        return;
    }
    dp__onnx_tensor_file *tf[MAXIN] = {0}, *of = NULL;
    const dp__onnx_tensor *t[MAXIN] = {0};
    char why[1200] = "";
    int ok = 1;
    for (int k = 0; k < g->n_inputs && ok; k++) {
        snprintf(f, sizeof f, "%s/%s/test_data_set_0/input_%d.pb", NODE_DIR, name, k);
        if (dp__onnx_load_tensor(f, &tf[k]) != DP_OK) {
            snprintf(why, sizeof why, "input_%d.pb is not a tensor: %s", k, dp_last_error());
            ok = 0;
        } else
            t[k] = dp__onnx_tensor_file_get(tf[k]);
    }
    snprintf(f, sizeof f, "%s/%s/test_data_set_0/output_0.pb", NODE_DIR, name);
    if (ok && dp__onnx_load_tensor(f, &of) != DP_OK) {
        snprintf(why, sizeof why, "output_0.pb is not a tensor: %s", dp_last_error());
        ok = 0;
    }
    int accepted = 0, failed = 0;
    char err[512] = "";
    for (int k = 0; k < g->n_inputs && ok; k++) { /* k: the model input; the others bound */
        const char *names[MAXIN];
        const dp__onnx_tensor *vals[MAXIN];
        int nb = 0;
        for (int j = 0; j < g->n_inputs; j++)
            if (j != k) {
                names[nb] = g->inputs[j].name;
                vals[nb++] = t[j];
            }
        dp_model *m = NULL;
        dp_status st = dp__model_load_onnx_bound(path, nb, names, vals, k,
                                                 DP__ONNX_BIND_ANY_OUTPUT | DP__ONNX_BIND_FLAT_INPUT, &m);
        if (st != DP_OK) {
            if (k == 0) snprintf(why, sizeof why, "%s", reason(dp_last_error(), path));
            continue;
        }
        accepted++;
        char e[400];
        if (check_forward(m, t[k], dp__onnx_tensor_file_get(of), e, sizeof e) && !failed) {
            failed = 1;
            snprintf(err, sizeof err, "input_%d as the model input: %s", k, e);
        }
        dp_model_destroy(m);
    }
    if (!ok || !accepted) {
        n_skip[op]++;
        printf("SKIP %-50s %-18s %.100s\n", name, ops[op], why);
    } else if (failed) {
        n_fail[op]++;
        printf("FAIL %-50s %-18s %s\n", name, ops[op], err);
    } else {
        n_pass[op]++;
        printf("PASS %-50s %-18s\n", name, ops[op]);
    }
    for (int k = 0; k < MAXIN; k++) dp__onnx_tensor_file_free(tf[k]);
    dp__onnx_tensor_file_free(of);
    dp__onnx_free(g);
}

/* The entry itself: its own refusals, and the public loader's rules where no flag loosens them. */
static void check_entry(void) {
    const char *relu = NODE_DIR "/test_relu/model.onnx", *pool = NODE_DIR "/test_maxpool_2d_default/model.onnx",
               *gemm = NODE_DIR "/test_gemm_transposeB/model.onnx";
    dp__onnx_tensor_file *tf = NULL;
    CHECK_OK(dp__onnx_load_tensor(NODE_DIR "/test_gemm_transposeB/test_data_set_0/input_1.pb", &tf));
    if (!tf) return;
    const dp__onnx_tensor *w = dp__onnx_tensor_file_get(tf);
    dp_model *m = NULL;
    const char *bad[] = {"no_such_input"}, *self[] = {"a"}, *twice[] = {"b", "b"};
    const dp__onnx_tensor *ws[] = {w, w};
    CHECK(dp__model_load_onnx_bound(gemm, 1, bad, ws, 0, 0, &m) != DP_OK &&
          strstr(dp_last_error(), "not a graph input"));
    CHECK(dp__model_load_onnx_bound(gemm, 1, self, ws, 0, 0, &m) != DP_OK &&
          strstr(dp_last_error(), "the model input"));
    CHECK(dp__model_load_onnx_bound(gemm, 2, twice, ws, 0, 0, &m) != DP_OK && strstr(dp_last_error(), "given twice"));
    CHECK(dp__model_load_onnx_bound(gemm, 0, NULL, NULL, 9, 0, &m) != DP_OK &&
          strstr(dp_last_error(), "one tensor input"));
    /* the public loader: the weights are graph inputs, not initializers */
    CHECK(dp_model_load_onnx(gemm, &m) != DP_OK &&
          strstr(dp_last_error(), "(Gemm): its second input must be a parameter"));
    /* without flags, the public loader's input and output rules */
    CHECK(dp__model_load_onnx_bound(relu, 0, NULL, NULL, 0, 0, &m) != DP_OK &&
          strstr(dp_last_error(), "must be the logits"));
    CHECK(dp__model_load_onnx_bound(pool, 0, NULL, NULL, 0, 0, &m) != DP_OK &&
          strstr(dp_last_error(), "must be the logits"));
    CHECK(dp_model_load_onnx(pool, &m) != DP_OK && strstr(dp_last_error(), "must be the logits"));
    /* with them: a parameter-free graph gets the exact ones scale, named */
    CHECK_OK(dp__model_load_onnx_bound(pool, 0, NULL, NULL, 0, DP__ONNX_BIND_ANY_OUTPUT, &m));
    if (m) {
        const char *tn = NULL;
        float *d = NULL;
        size_t n = 0;
        CHECK(dp_model_num_tensors(m) == 1);
        CHECK_OK(dp_model_tensor(m, 0, &tn, &d, &n));
        CHECK(tn && !strcmp(tn, "dp__node_test.ones") && n == 3 && d[0] == 1.0f && d[2] == 1.0f);
        dp_model_destroy(m);
    }
    dp__onnx_tensor_file_free(tf);
}

int main(void) {
    DIR *d = opendir(NODE_DIR);
    if (!d) {
        fprintf(stderr, "%s: missing (Debian: apt-get install libonnx-testdata)\n", NODE_DIR);
        CHECK(!"libonnx-testdata's node tests are installed");
        return t_finish("test_onnx_nodes");
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "test_", 5) != 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            char **nn = realloc(names, sizeof *nn * cap);
            if (!nn) break;
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    check_entry();
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        run_case(names[i]);
        free(names[i]);
    }
    free(names);
    int tp = 0, ts = 0, tf = 0;
    printf("\n%-22s %5s %5s %5s\n", "op", "pass", "skip", "fail");
    for (int k = 0; k < NOPS; k++) {
        printf("%-22s %5d %5d %5d\n", ops[k], n_pass[k], n_skip[k], n_fail[k]);
        tp += n_pass[k], ts += n_skip[k], tf += n_fail[k];
    }
    printf("%-22s %5d %5d %5d\n", "total", tp, ts, tf);
    CHECK(tf == 0);
    CHECK(tp >= MIN_PASS);
    if (tp < MIN_PASS) fprintf(stderr, "only %d cases pass (at least %d did)\n", tp, MIN_PASS);
    return t_finish("test_onnx_nodes");
}
