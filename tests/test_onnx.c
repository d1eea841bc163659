#define _POSIX_C_SOURCE 200809L
/* test_onnx.c: models imported from ONNX (src/nn/onnx.c) against PyTorch
 * (tests/reference/onnx/, made by make_fixtures.py with torch 1.13: the exported graph, a
 * batch, the logits, per-sample gradient norms, per-parameter squared norms and the clipped
 * sum at C = 0.5, one sample at a time in float64). Every clipping mode must match them to
 * 1e-4 relative; the parameters must carry the state_dict's names; refusals name the node. */
#include <unistd.h>

#include "test.h"

#define ONNX_REF DP_SOURCE_DIR "/tests/reference/onnx/"

static void *load_npy(const char *name, const char *what, dp_npy *a) {
    char path[512];
    snprintf(path, sizeof path, ONNX_REF "%s.%s.npy", name, what);
    memset(a, 0, sizeof *a);
    CHECK_OK(dp_npy_load(path, a));
    return a->data;
}

static void check_model(const char *name) {
    char path[512];
    snprintf(path, sizeof path, ONNX_REF "%s.onnx", name);
    dp_model *m = NULL;
    CHECK_OK(dp_model_load_onnx(path, &m));
    if (!m) {
        fprintf(stderr, "%s: %s\n", name, dp_last_error());
        return;
    }
    dp_npy xa, ya, la, na, sa;
    load_npy(name, "x", &xa);
    load_npy(name, "y", &ya);
    load_npy(name, "logits", &la);
    load_npy(name, "norms", &na);
    load_npy(name, "sq_norms", &sa);
    const int B = (int)ya.count, K = dp_model_output_size(m);
    const size_t dim = dp_model_input_size(m), np = dp_model_num_params(m);
    CHECK(xa.count == (size_t)B * dim);
    CHECK(la.count == (size_t)B * K);
    float *x = dp_alloc(sizeof(float) * xa.count), *dz = dp_alloc(sizeof(float) * (size_t)B * K);
    int32_t *y = dp_alloc(sizeof(int32_t) * (size_t)B);
    for (size_t i = 0; i < xa.count; i++)
        x[i] = xa.dtype == DP_NPY_F32 ? ((float *)xa.data)[i] : (float)((int64_t *)xa.data)[i];
    for (int i = 0; i < B; i++) y[i] = (int32_t)((int64_t *)ya.data)[i];
    /* the parameters are the state_dict's, with its initial values */
    snprintf(path, sizeof path, ONNX_REF "%s.init.safetensors", name);
    dp_safetensors *init = NULL, *cs = NULL;
    CHECK_OK(dp_safetensors_load(path, &init));
    snprintf(path, sizeof path, ONNX_REF "%s.clipped_sum.safetensors", name);
    CHECK_OK(dp_safetensors_load(path, &cs));
    CHECK(init && dp_safetensors_num_tensors(init) == dp_model_num_tensors(m));
    for (int t = 0; init && t < dp_model_num_tensors(m); t++) {
        const char *tn;
        float *d;
        size_t n, cn;
        const void *ref;
        CHECK_OK(dp_model_tensor(m, t, &tn, &d, &n));
        if (dp_safetensors_find(init, tn, NULL, NULL, NULL, &ref, &cn) != DP_OK) {
            fprintf(stderr, "%s: parameter '%s' is not in the state_dict\n", name, tn);
            CHECK(0);
            continue;
        }
        CHECK(cn == n && memcmp(ref, d, sizeof(float) * n) == 0);
    }
    /* forward */
    const float *logits;
    CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
    double el = 0, sl = 0;
    for (size_t i = 0; i < (size_t)B * K; i++) {
        double r = ((double *)la.data)[i];
        if (fabs(logits[i] - r) > el) el = fabs(logits[i] - r);
        if (fabs(r) > sl) sl = fabs(r);
    }
    CHECK(el <= 1e-5 * (sl > 1 ? sl : 1));
    if (el > 1e-5 * (sl > 1 ? sl : 1)) fprintf(stderr, "%s: logits differ by %g\n", name, el);
    /* every clipping mode: norms and the clipped sum */
    float *norms = dp_alloc(sizeof(float) * (size_t)B), *ref = dp_calloc(np, sizeof(float));
    for (int t = 0; cs && t < dp_model_num_tensors(m); t++) {
        const char *tn;
        float *d;
        size_t n, cn;
        const void *r;
        dp_st_dtype dt;
        CHECK_OK(dp_model_tensor(m, t, &tn, &d, &n));
        if (dp_safetensors_find(cs, tn, &dt, NULL, NULL, &r, &cn) == DP_OK && cn == n && dt == DP_ST_F64) {
            size_t off = (size_t)(d - dp_model_params(m));
            for (size_t j = 0; j < n; j++) {
                double v;
                memcpy(&v, (const char *)r + 8 * j, 8);
                ref[off + j] = (float)v;
            }
        } else
            CHECK(!"clipped sum tensor missing");
    }
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_clip_params cp = {(dp_clip_mode)mode, 0.5, 0, 0};
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
        int bad = -1;
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, NULL, &bad));
        double en = 0;
        for (int b = 0; b < B; b++) {
            double r = ((double *)na.data)[b], e = fabs(norms[b] - r) / r;
            if (e > en) en = e;
        }
        double e = t_rel_err(dp_model_grad(m), ref, np);
        CHECK(en < 1e-4);
        CHECK(e < 1e-4);
        if (en >= 1e-4 || e >= 1e-4)
            fprintf(stderr, "%s, mode %s: norms rel err %g, clipped sum rel err %g\n", name, dp_clip_mode_name((dp_clip_mode)mode), en, e);
    }
    /* per-layer squared norms: the columns are the state_dict's tensors; a layer of the
     * model has its weight and bias in one row entry, so compare the per-layer sums */
    double *sq = dp_alloc(sizeof(double) * (size_t)B * dp_model_num_layers(m));
    CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
    CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
    CHECK_OK(dp_model_layer_sq_norms(m, DP_CLIP_GHOST, dz, B, sq));
    double worst = 0;
    for (int b = 0; b < B; b++) {
        double tot = 0;
        for (int k = 0; k < dp_model_num_layers(m); k++) tot += sq[(size_t)b * dp_model_num_layers(m) + k];
        double r = ((double *)na.data)[b];
        double e = fabs(sqrt(tot) - r) / r;
        if (e > worst) worst = e;
    }
    CHECK(worst < 1e-4);
    CHECK(sa.ndim == 2 && sa.shape[0] == B && sa.shape[1] == dp_model_num_tensors(m));
    dp_free(sq);
    dp_free(norms);
    dp_free(ref);
    dp_free(x);
    dp_free(dz);
    dp_free(y);
    dp_npy_free(&xa);
    dp_npy_free(&ya);
    dp_npy_free(&la);
    dp_npy_free(&na);
    dp_npy_free(&sa);
    dp_safetensors_destroy(init);
    dp_safetensors_destroy(cs);
    dp_model_destroy(m);
}

/* The transformer exported with constant folding (make_folded.py): nn.Linear's weights on
 * sequences are transposed copies [in, out] under generated names, read by MatMul(x, W). The
 * same function: logits and per-sample norms in every mode equal the transformer's references.
 * Written back (dp_model_save_onnx) and read again, the weights come back bit for bit. */
static void check_folded(void) {
    dp_model *m = NULL, *m2 = NULL;
    CHECK_OK(dp_model_load_onnx(ONNX_REF "transformer_folded.onnx", &m));
    if (!m) return;
    dp_npy xa, ya, la, na;
    load_npy("transformer", "x", &xa);
    load_npy("transformer", "y", &ya);
    load_npy("transformer", "logits", &la);
    load_npy("transformer", "norms", &na);
    const int B = (int)ya.count, K = dp_model_output_size(m);
    float *x = dp_alloc(sizeof(float) * xa.count), *dz = dp_alloc(sizeof(float) * (size_t)B * K);
    float *norms = dp_alloc(sizeof(float) * (size_t)B);
    int32_t *y = dp_alloc(sizeof(int32_t) * (size_t)B);
    for (size_t i = 0; i < xa.count; i++) x[i] = (float)((int64_t *)xa.data)[i];
    for (int i = 0; i < B; i++) y[i] = (int32_t)((int64_t *)ya.data)[i];
    const float *logits;
    CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
    double el = 0;
    for (size_t i = 0; i < (size_t)B * K; i++) el = fmax(el, fabs(logits[i] - ((double *)la.data)[i]));
    CHECK(el < 1e-5);
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_clip_params cp = {(dp_clip_mode)mode, 0.5, 0, 0};
        int bad = -1;
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, NULL, &bad));
        double en = 0;
        for (int b = 0; b < B; b++) en = fmax(en, fabs(norms[b] - ((double *)na.data)[b]) / ((double *)na.data)[b]);
        CHECK(en < 1e-4);
        if (en >= 1e-4) fprintf(stderr, "transformer_folded, mode %s: norms rel err %g\n", dp_clip_mode_name((dp_clip_mode)mode), en);
    }
    char out[] = "/tmp/dpsgd-folded-XXXXXX";
    int fd = mkstemp(out);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    CHECK_OK(dp_model_save_onnx(m, ONNX_REF "transformer_folded.onnx", out));
    CHECK_OK(dp_model_load_onnx(out, &m2));
    CHECK(m2 && dp_model_num_params(m2) == dp_model_num_params(m) &&
          !memcmp(dp_model_params(m2), dp_model_params(m), sizeof(float) * dp_model_num_params(m)));
    unlink(out);
    dp_free(x), dp_free(dz), dp_free(norms), dp_free(y);
    dp_npy_free(&xa), dp_npy_free(&ya), dp_npy_free(&la), dp_npy_free(&na);
    dp_model_destroy(m2);
    dp_model_destroy(m);
}

/* Refusals name the file, the node and its op type. */
static void check_refusal(const char *name, const char *needle) {
    char path[512];
    snprintf(path, sizeof path, ONNX_REF "%s.onnx", name);
    dp_model *m = NULL;
    dp_status st = dp_model_load_onnx(path, &m);
    CHECK(st != DP_OK);
    CHECK(strstr(dp_last_error(), path) && strstr(dp_last_error(), needle));
    if (st == DP_OK) dp_model_destroy(m);
    else if (!strstr(dp_last_error(), needle)) fprintf(stderr, "%s: '%s' lacks '%s'\n", name, dp_last_error(), needle);
}

int main(void) {
    check_model("mlp");
    check_model("cnn_gn");
    check_model("resnet_gn");
    check_model("embbag");
    /* nn.MultiheadAttention's export: the batch moved to axis 1 and merged with the heads,
     * shape arithmetic, batched products of activations, softmax, GELU's Erf pattern */
    check_model("transformer");
    /* a ViT: patches by Conv, flatten and transpose, a class token (a parameter expanded over
     * the batch, concatenated), pre-norm attention, the class token's row */
    check_model("vit");
    /* nn.InstanceNorm2d(affine=True): InstanceNormalization with scale and bias parameters */
    check_model("cnn_in");
    /* depthwise (groups = channels) and dilated, pointwise, and grouped convolutions */
    check_model("cnn_dw");
    check_folded();
    /* an operator that is not imported: refused, naming it and listing what is */
    check_refusal("unsupported", "(CumSum): operator not supported (supported: Gemm, MatMul");
    /* BatchNorm mixes the samples of a batch: refused, saying what to use */
    check_refusal("batchnorm", "(BatchNormalization): BatchNormalization mixes the samples");
    check_refusal("batchnorm", "GroupNorm");
    /* malformed or unusable files (make_refusals.py edits of the fixtures; each loaded before
     * the checks that refuse them: the extra inputs ignored, the NaN failing at step 1, a
     * negative epsilon training to nothing) */
    check_refusal("gemm_inputs", "(Gemm): has 5 inputs; Gemm takes at most 3");
    check_refusal("nan_weight", "holds a non-finite value");
    check_refusal("bad_epsilon", "(InstanceNormalization): its epsilon must be a finite float above 0");
    check_refusal("pool_pads", "(MaxPool): a window lies wholly in the padding");
    /* a truncated file */
    {
        FILE *f = fopen(ONNX_REF "mlp.onnx", "rb");
        char buf[4096];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f) fclose(f);
        char tmp[] = "/tmp/dpsgd-onnx-XXXXXX";
        int fd = mkstemp(tmp);
        CHECK(fd >= 0 && n > 200);
        if (fd >= 0) {
            CHECK(write(fd, buf, n / 2) == (ssize_t)(n / 2));
            close(fd);
            dp_model *t = NULL;
            CHECK(dp_model_load_onnx(tmp, &t) != DP_OK && strstr(dp_last_error(), tmp));
            unlink(tmp);
        }
    }
    dp_model *m = NULL;
    CHECK(dp_model_load_onnx(ONNX_REF "no-such.onnx", &m) != DP_OK);
    return t_finish("test_onnx");
}
