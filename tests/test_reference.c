/* test_reference.c: the engine against Opacus / plain PyTorch outputs stored under
 * DP_REFERENCE_DIR (see its README.md). For each case the model is rebuilt from a spec string,
 * loaded with the reference weights, and checked for: the forward pass (logits, per-sample
 * loss); in every clipping mode the per-sample norms, clip factors and clipped sum; and the
 * per-sample gradients and per-parameter norms. The float64 cases (converted to float) are
 * checked the same way against the float64 ground truth. A missing or malformed reference
 * file is a failure, never a skip. */
#include <stdarg.h>

#include "test.h"

enum { MAX_PARAMS = 16, NAME_LEN = 64, DIR_CAP = 1024, PATH_CAP = 2048 };
static const double TOL = 1e-4;

typedef struct {
    const char *name; /* folder under cases/ */
    const char *spec;
    int c, h, w;
} ref_case;

static const ref_case CASES[] = {
    {"mlp", "linear(128) relu linear(10)", 1, 1, 784},
    {"cnn", "conv2d(16,8,s2,p3) relu maxpool(2,1) conv2d(32,4,s2) relu maxpool(2,1) flatten linear(32) relu linear(10)",
     1, 28, 28},
    {"cnn_f64", "conv2d(16,8,s2,p3) relu maxpool(2,1) conv2d(32,4,s2) relu maxpool(2,1) flatten linear(32) relu linear(10)",
     1, 28, 28},
    {"seq", "embedding(100,32)@emb layernorm@ln linear(32)@proj meanpool linear(4)@head", 1, 1, 12},
    {"seq_f64", "embedding(100,32)@emb layernorm@ln linear(32)@proj meanpool linear(4)@head", 1, 1, 12},
};

/* What case.json tells us. */
typedef struct {
    int B, P;
    double C;
    char names[MAX_PARAMS][NAME_LEN];
    size_t sizes[MAX_PARAMS]; /* element count from param_shapes */
} case_info;

static void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    t_fail++;
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* ---- reading reference files ------------------------------------------------------------ */

static const char *ref_path(char path[PATH_CAP], const char *dir, const char *rel) {
    snprintf(path, PATH_CAP, "%s/%s", dir, rel);
    return path;
}


/* The text after `"key"` and its colon, or NULL. */
static const char *json_value(const char *text, const char *key) {
    char q[NAME_LEN + 2];
    snprintf(q, sizeof q, "\"%s\"", key);
    const char *p = strstr(text, q);
    if (!p) return NULL;
    p = strchr(p + strlen(q), ':');
    return p ? p + 1 : NULL;
}

/* "param_order": ["a", "b", ...] */
static int json_param_order(const char *text, case_info *ci) {
    const char *p = json_value(text, "param_order");
    if (!p || !(p = strchr(p, '['))) return 0;
    const char *end = strchr(p, ']');
    ci->P = 0;
    while (end && (p = strchr(p, '"')) && p < end && ci->P < MAX_PARAMS) {
        const char *e = strchr(p + 1, '"');
        size_t len = (size_t)(e - p - 1);
        if (!e || len >= NAME_LEN) return 0;
        memcpy(ci->names[ci->P], p + 1, len);
        ci->names[ci->P][len] = 0;
        ci->P++;
        p = e + 1;
    }
    return ci->P > 0;
}

/* "param_shapes": {"name": [d0, d1, ...], ...}: the element count of each named parameter */
static int json_param_sizes(const char *text, case_info *ci) {
    const char *shapes = json_value(text, "param_shapes");
    if (!shapes) return 0;
    for (int k = 0; k < ci->P; k++) {
        const char *p = json_value(shapes, ci->names[k]);
        if (!p || !(p = strchr(p, '['))) return 0;
        const char *end = strchr(p, ']');
        size_t n = 1;
        for (p++; p < end;) {
            char *q;
            long d = strtol(p, &q, 10);
            if (q == p) break;
            n *= (size_t)d;
            p = q;
            while (*p == ',' || *p == ' ' || *p == '\n') p++;
        }
        ci->sizes[k] = n;
    }
    return 1;
}

static int load_case_info(const char *dir, case_info *ci) {
    char path[PATH_CAP];
    ref_path(path, dir, "case.json");
    char *text = t_read_text(path);
    if (!text) {
        fail_msg("missing reference file %s\n", path);
        return 0;
    }
    const char *b = json_value(text, "batch_size"), *c = json_value(text, "max_grad_norm");
    int ok = b && c && json_param_order(text, ci) && json_param_sizes(text, ci);
    if (ok) {
        ci->B = (int)strtol(b, NULL, 10);
        ci->C = strtod(c, NULL);
        ok = ci->B > 0 && ci->C > 0;
    }
    if (!ok) fail_msg("%s: cannot read batch_size, max_grad_norm, param_order or param_shapes\n", path);
    free(text);
    return ok;
}

/* Loads dir/rel as floats and checks it holds `count` elements. NULL (and a failure) if the
 * file is missing, unreadable or of the wrong size. */
static float *load_ref(const char *dir, const char *rel, size_t count) {
    char path[PATH_CAP];
    ref_path(path, dir, rel);
    float *a = NULL;
    size_t n = 0;
    if (dp_npy_load_f32(path, &a, NULL, NULL, &n) != DP_OK) {
        fail_msg("missing or unreadable reference file %s (%s)\n", path, dp_last_error());
        return NULL;
    }
    if (n != count) {
        fail_msg("%s: %zu elements, expected %zu\n", path, n, count);
        dp_free(a);
        return NULL;
    }
    return a;
}

/* target_y.npy: int64 class indices -> int32 */
static int32_t *load_targets(const char *dir, int B) {
    char path[PATH_CAP];
    ref_path(path, dir, "target_y.npy");
    dp_npy a;
    if (dp_npy_load(path, &a) != DP_OK) {
        fail_msg("missing or unreadable reference file %s (%s)\n", path, dp_last_error());
        return NULL;
    }
    int32_t *y = NULL;
    if (a.dtype != DP_NPY_I64 || a.count != (size_t)B) {
        fail_msg("%s: dtype %s count %zu, expected <i8 and %d\n", path, dp_npy_dtype_name(a.dtype), a.count, B);
    } else {
        y = dp_alloc((size_t)B * sizeof *y);
        for (int i = 0; i < B; i++) y[i] = (int32_t)((const int64_t *)a.data)[i];
    }
    dp_npy_free(&a);
    return y;
}

/* ---- comparisons (each prints both sides on failure) ------------------------------------- */

/* Vector relative error ||a-b||/||b||; on failure also the worst element. */
static void check_vec(const char *what, const char *cs, const float *a, const float *b, size_t n) {
    if (!b) return; /* the missing file was already counted */
    double e = t_rel_err(a, b, n);
    if (e < TOL) {
        t_pass++;
        return;
    }
    size_t w = 0;
    for (size_t i = 1; i < n; i++)
        if (fabs((double)a[i] - b[i]) > fabs((double)a[w] - b[w])) w = i;
    fail_msg("%s: %s: rel err %.3g >= %g; worst [%zu] ours %.9g ref %.9g\n", cs, what, e, TOL, w, a[w], b[w]);
}

/* Element-wise max |a-b|/|b| (for norms, factors, losses: one value per sample). */
static void check_each(const char *what, const char *cs, const float *a, const float *b, size_t n) {
    if (!b) return;
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-30);
        if (d > e) e = d;
    }
    if (e < TOL) {
        t_pass++;
        return;
    }
    fail_msg("%s: %s: max rel err %.3g >= %g\n", cs, what, e, TOL);
    for (size_t i = 0; i < n; i++) fprintf(stderr, "  [%zu] ours %.9g ref %.9g\n", i, a[i], b[i]);
}

/* Whether dir/rel is a 2-D array of shape [d0, d1] (a failure, printed, if not). */
static int check_shape2(const char *dir, const char *rel, const char *cs, int64_t d0, int64_t d1) {
    char path[PATH_CAP];
    ref_path(path, dir, rel);
    float *a = NULL;
    int64_t shape[DP_NPY_MAX_DIMS] = {0};
    int ndim = 0;
    if (dp_npy_load_f32(path, &a, shape, &ndim, NULL) != DP_OK) {
        fail_msg("missing or unreadable reference file %s (%s)\n", path, dp_last_error());
        return 0;
    }
    dp_free(a);
    if (ndim == 2 && shape[0] == d0 && shape[1] == d1) return 1;
    fail_msg("%s: %s has %d dims [%lld, %lld], expected [%lld, %lld]\n", cs, rel, ndim, (long long)shape[0],
             (long long)shape[1], (long long)d0, (long long)d1);
    return 0;
}

/* Compare against the reference file dir/rel, which must hold n elements. */
static void check_file(int elementwise, const char *dir, const char *rel, const char *cs, const float *ours, size_t n) {
    float *ref = load_ref(dir, rel, n);
    (elementwise ? check_each : check_vec)(rel, cs, ours, ref, n);
    dp_free(ref);
}

/* ---- the model --------------------------------------------------------------------------- */

/* Checks the model's tensors match param_order and param_shapes and fills them from
 * weights/<name>.npy. offsets[k]: where parameter k starts in the block. */
static int load_weights(dp_model *m, const char *dir, const char *cs, const case_info *ci, size_t *offsets) {
    int ok = dp_model_num_tensors(m) == ci->P;
    if (!ok) {
        fail_msg("%s: model has %d tensors, case.json %d\n", cs, dp_model_num_tensors(m), ci->P);
    }
    for (int k = 0; ok && k < ci->P; k++) {
        const char *tn = NULL;
        float *data = NULL;
        size_t n = 0;
        char rel[256];
        CHECK_OK(dp_model_tensor(m, k, &tn, &data, &n));
        if (!tn || strcmp(tn, ci->names[k]) != 0 || n != ci->sizes[k]) {
            fail_msg("%s: tensor %d is '%s' (%zu), case.json '%s' (%zu)\n", cs, k, tn ? tn : "?", n, ci->names[k],
                    ci->sizes[k]);
            ok = 0;
            break;
        }
        snprintf(rel, sizeof rel, "weights/%s.npy", tn);
        float *w = load_ref(dir, rel, n);
        if (!w) {
            ok = 0;
            break;
        }
        memcpy(data, w, n * sizeof *w);
        offsets[k] = (size_t)(data - dp_model_params(m));
        dp_free(w);
        t_pass++;
    }
    return ok;
}

/* Forward the batch; loss gradients into dz (and per-sample loss into loss if not NULL). */
static void forward(dp_model *m, const float *x, const int32_t *y, int B, float *loss, float *dz, const float **logits) {
    CHECK_OK(dp_model_forward(m, x, B, 1, NULL, logits));
    CHECK_OK(dp_loss_xent(*logits, y, B, dp_model_output_size(m), loss, dz));
}

static void check_forward(dp_model *m, const char *dir, const char *cs, const float *x, const int32_t *y, int B) {
    int K = dp_model_output_size(m);
    float *loss = dp_alloc((size_t)B * sizeof(float)), *dz = dp_alloc((size_t)B * K * sizeof(float));
    const float *logits = NULL;
    forward(m, x, y, B, loss, dz, &logits);
    check_file(0, dir, "logits.npy", cs, logits, (size_t)B * K);
    check_file(1, dir, "loss_per_sample.npy", cs, loss, (size_t)B);
    dp_free(loss);
    dp_free(dz);
}

/* Per-sample norms, clip factors and clipped sum in one mode. */
static void check_clipping(dp_model *m, dp_clip_mode mode, const char *dir, const char *case_name, const case_info *ci,
                           const size_t *offsets, const float *x, const int32_t *y) {
    int B = ci->B;
    float *dz = dp_alloc((size_t)B * dp_model_output_size(m) * sizeof(float));
    float *norms = dp_alloc((size_t)B * sizeof(float)), *fac = dp_alloc((size_t)B * sizeof(float));
    const float *logits;
    char cs[128], rel[256];
    snprintf(cs, sizeof cs, "%s/%s", case_name, dp_clip_mode_name(mode));
    dp_model_zero_grad(m);
    forward(m, x, y, B, NULL, dz, &logits);
    dp_clip_params cp = {mode, ci->C, 0, 0};
    int bad = -1;
    CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, fac, &bad));
    CHECK(bad == 0);
    check_file(1, dir, "naive/norms.npy", cs, norms, (size_t)B);
    check_file(1, dir, "ghost/norms.npy", cs, norms, (size_t)B);
    check_file(1, dir, "naive/clip_coef.npy", cs, fac, (size_t)B);
    for (int k = 0; k < ci->P; k++) {
        snprintf(rel, sizeof rel, "naive/clipped_sum/%s.npy", ci->names[k]);
        check_file(0, dir, rel, cs, dp_model_grad(m) + offsets[k], ci->sizes[k]);
    }
    dp_free(dz);
    dp_free(norms);
    dp_free(fac);
}

/* Per-sample gradients of each parameter ([B, ...]) and the per-parameter norms.
 * Note: the reference README describes param_norms.npy as [B, P], but the stored files are
 * [P, B] (row k: parameter k's norm for every sample); the shape is checked explicitly since
 * B == P in the cnn case would hide a transposition. */
static void check_per_sample(dp_model *m, const char *dir, const char *cs, const case_info *ci, const size_t *offsets,
                             const float *x, const int32_t *y) {
    int B = ci->B, P = ci->P;
    size_t np = dp_model_num_params(m);
    float *dz = dp_alloc((size_t)B * dp_model_output_size(m) * sizeof(float));
    float *ps = dp_alloc((size_t)B * np * sizeof(float)), *pn = dp_alloc((size_t)B * P * sizeof(float));
    const float *logits;
    forward(m, x, y, B, NULL, dz, &logits);
    CHECK_OK(dp_model_per_sample_grads(m, dz, B, ps));
    for (int k = 0; k < P; k++) {
        size_t n = ci->sizes[k];
        float *g = dp_alloc((size_t)B * n * sizeof(float)); /* parameter k of every sample, [B, n] */
        for (int i = 0; i < B; i++) {
            const float *src = ps + (size_t)i * np + offsets[k];
            double s = 0;
            for (size_t j = 0; j < n; j++) s += (double)src[j] * src[j];
            memcpy(g + (size_t)i * n, src, n * sizeof(float));
            pn[(size_t)k * B + i] = (float)sqrt(s);
        }
        char rel[256], path[PATH_CAP];
        snprintf(rel, sizeof rel, "naive/per_sample_grads/%s.npy", ci->names[k]);
        /* the stored file may hold only the first rows of the batch (tests/reference/README.md) */
        int64_t shape[DP_NPY_MAX_DIMS] = {0};
        float *ref = NULL;
        size_t cnt = 0;
        if (dp_npy_load_f32(ref_path(path, dir, rel), &ref, shape, NULL, &cnt) != DP_OK) {
            fail_msg("missing or unreadable reference file %s (%s)\n", path, dp_last_error());
        } else if (shape[0] < 1 || shape[0] > B || cnt != (size_t)shape[0] * n) {
            fail_msg("%s: %zu elements with %lld rows, expected rows of %zu for at most %d samples\n", path, cnt,
                     (long long)shape[0], n, B);
        } else {
            check_vec(rel, cs, g, ref, cnt);
        }
        dp_free(ref);
        dp_free(g);
    }
    if (check_shape2(dir, "naive/param_norms.npy", cs, P, B))
        check_file(1, dir, "naive/param_norms.npy", cs, pn, (size_t)B * P);
    dp_free(dz);
    dp_free(ps);
    dp_free(pn);
}

static void run_case(const ref_case *rc) {
    char dir[DIR_CAP];
    snprintf(dir, sizeof dir, "%s/cases/%s", DP_REFERENCE_DIR, rc->name);
    case_info ci;
    memset(&ci, 0, sizeof ci);
    if (!load_case_info(dir, &ci)) return;
    dp_model *m = NULL;
    CHECK_OK(dp_model_create(rc->spec, rc->c, rc->h, rc->w, &m));
    if (!m) return;
    size_t offsets[MAX_PARAMS] = {0};
    size_t nx = (size_t)ci.B * dp_model_input_size(m);
    float *x = NULL;
    int32_t *y = NULL;
    if (load_weights(m, dir, rc->name, &ci, offsets) && (x = load_ref(dir, "input_x.npy", nx)) &&
        (y = load_targets(dir, ci.B))) {
        check_forward(m, dir, rc->name, x, y, ci.B);
        for (int mode = 0; mode < DP_CLIP_COUNT; mode++)
            check_clipping(m, (dp_clip_mode)mode, dir, rc->name, &ci, offsets, x, y);
        check_per_sample(m, dir, rc->name, &ci, offsets, x, y);
    }
    dp_free(x);
    dp_free(y);
    dp_model_destroy(m);
}

int main(void) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        int before = t_fail;
        run_case(&CASES[i]);
        printf("case %-8s %s\n", CASES[i].name, t_fail == before ? "ok" : "FAILED");
    }
    return t_finish("test_reference");
}
