/* fuzz_onnx_import.c: libFuzzer target for the ONNX importer (dp_model_load_onnx: src/nn/onnx.c,
 * onnx_ops.c, onnx_sym.c over the file layer; scripts/fuzz.sh). The input is written to a file
 * and imported. A model that loads must hold the invariants the public API shows (parameters,
 * input and output sizes above 0; every tensor inside the parameter block, its shape's product
 * its count, the counts summing to the block; every layer's inputs earlier layers or the model
 * input; its parameters inside the block). When a step of 2 samples is small (the engine's own
 * estimates: under 64 MiB of buffers and 1e8 FLOPs), the model is driven as tests/test_onnx.c
 * does: a training forward of 2 samples (small values, or token ids), the cross-entropy, a
 * non-private backward, the clipped gradient in every clipping mode (each under 64 MiB),
 * per-layer norms; then written back (dp_model_save_onnx) and imported again: the copy must load
 * with the same tensors and values. Non-finite values are allowed (fuzzed weights); any refusal
 * of a loaded model by the engine (other than for memory) aborts, as do tracked bytes left
 * live after everything is freed. Crashes and sanitizer reports are the main signal. */
#include "fuzz_file.h" /* first: it sets _POSIX_C_SOURCE */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dpsgd/core.h"
#include "dpsgd/nn.h"
#include "fuzz_model.h"

enum { B = 2 };
#define PLAN_LIMIT ((size_t)64 << 20)
#define FLOP_LIMIT 1e8

static volatile uint64_t sink;
static int verbose; /* FUZZ_VERBOSE=1: one line per input on stderr (what loaded, what ran) */

static void fail(const char *what, const dp_model *m) {
    (void)m;
    fprintf(stderr, "fuzz_onnx_import: %s (last error: %s)\n", what, dp_last_error());
    abort();
}

/* an engine call on a loaded model: only running out of (limited) memory may refuse it */
static void ok(dp_status st, const char *what) {
    if (st == DP_OK || st == DP_ERR_NOMEM) return;
    fprintf(stderr, "fuzz_onnx_import: %s refused a model that loaded: %s\n", what, dp_last_error());
    abort();
}

static void check_invariants(dp_model *m) {
    const size_t np = dp_model_num_params(m), nt = dp_model_num_trainable(m);
    if (np == 0) fail("a loaded model has no parameter", m);
    if (nt > np) fail("more trainable parameters than parameters", m);
    if (dp_model_input_size(m) == 0) fail("input size 0", m);
    if (dp_model_output_size(m) <= 0) fail("output size <= 0", m);
    const int L = dp_model_num_layers(m);
    if (L <= 0) fail("no layer", m);
    if (dp_model_input_is_tokens(m) && dp_model_vocab(m) <= 0) fail("a token model with vocabulary <= 0", m);
    const char *bad_tensor, *why;
    uint64_t bits = 0;
    if ((why = fuzz_check_tensors(m, 0, &bad_tensor, &bits)) != NULL) {
        fprintf(stderr, "fuzz_onnx_import: tensor '%s'\n", bad_tensor ? bad_tensor : "?");
        fail(why, m);
    }
    sink += bits;
    for (int i = 0; i < L; i++) {
        if ((int)dp_model_layer_kind(m, i) < 0 || dp_model_layer_kind(m, i) >= DP_LAYER_COUNT) fail("a layer kind out of range", m);
        size_t off = 0, n = dp_model_layer_params(m, i, &off);
        if (n > np || off > np - n) fail("layer parameters outside the block", m);
        int in[3];
        int nin = dp_model_layer_inputs(m, i, in);
        if (nin < 1 || nin > 3) fail("a layer with 0 or more than 3 inputs", m);
        for (int j = 0; j < nin; j++)
            if (in[j] < -1 || in[j] >= i) fail("a layer reading a later layer", m);
        int64_t sh[3] = {0, 0, 0};
        int nd = dp_model_layer_shape(m, i, sh);
        if (nd != 2 && nd != 3) fail("a layer shape of rank other than 2 or 3", m);
        for (int k = 0; k < nd; k++)
            if (sh[k] <= 0) fail("a layer output dimension <= 0", m);
        const char *name = dp_model_layer_name(m, i);
        if (!name) fail("a layer without a name", m);
        sink += strlen(name) + (uint64_t)dp_model_layer_frozen(m, i) + (uint64_t)nd;
    }
    /* the last layer is the logits [classes] */
    int64_t sh[3];
    int nd = dp_model_layer_shape(m, L - 1, sh);
    int64_t prod = 1;
    for (int k = 0; k < nd; k++) prod *= sh[k];
    if (prod != dp_model_output_size(m)) fail("the last layer's shape is not the output size", m);
    char buf[4096];
    dp_model_describe(m, buf, sizeof buf);
    sink += strlen(buf);
}

static double flops(const dp_model *m) {
    double tot = 0;
    for (int i = 0; i < dp_model_num_layers(m); i++) {
        double f, w, x;
        dp_model_layer_flops(m, i, &f, &w, &x);
        if (!(f >= 0 && w >= 0 && x >= 0)) fail("negative FLOPs", m);
        tot += f + w + x;
    }
    return tot * B;
}

/* the model written back must load with the same tensors and values */
static void roundtrip(dp_model *m, const char *in) {
    char out[300];
    snprintf(out, sizeof out, "%s.out.onnx", in);
    dp_status st = dp_model_save_onnx(m, in, out);
    if (st == DP_ERR_NOMEM) return;
    if (st != DP_OK) fail("a model that loads was not written back", m);
    dp_model *r = NULL;
    st = dp_model_load_onnx(out, &r);
    unlink(out);
    if (st == DP_ERR_NOMEM) return;
    if (st != DP_OK) fail("the written model does not load", m);
    int same = dp_model_num_params(r) == dp_model_num_params(m) && dp_model_num_tensors(r) == dp_model_num_tensors(m) &&
               dp_model_num_layers(r) == dp_model_num_layers(m) && dp_model_output_size(r) == dp_model_output_size(m) &&
               dp_model_input_size(r) == dp_model_input_size(m);
    for (int t = 0; same && t < dp_model_num_tensors(m); t++) {
        const char *a, *b;
        float *da, *db;
        size_t na, nb;
        dp_model_tensor(m, t, &a, &da, &na);
        dp_model_tensor(r, t, &b, &db, &nb);
        same = !strcmp(a, b) && na == nb && memcmp(da, db, sizeof(float) * na) == 0;
    }
    if (!same) fail("the written model differs", m);
    dp_model_destroy(r);
}

static void drive(dp_model *m) {
    if (dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 1) > PLAN_LIMIT || flops(m) > FLOP_LIMIT) {
        if (verbose) fprintf(stderr, " too large to run");
        return;
    }
    const size_t dim = dp_model_input_size(m);
    const int K = dp_model_output_size(m);
    const size_t np = dp_model_num_params(m);
    if (dim > (PLAN_LIMIT / sizeof(float)) / B) return;
    float *x = dp_alloc(sizeof(float) * B * dim), *dz = dp_alloc(sizeof(float) * B * (size_t)K);
    float *loss = dp_alloc(sizeof(float) * B), *norms = dp_alloc(sizeof(float) * B), *fac = dp_alloc(sizeof(float) * B);
    double *sq = dp_alloc(sizeof(double) * B * (size_t)dp_model_num_layers(m));
    int32_t y[B] = {0, K - 1};
    if (!x || !dz || !loss || !norms || !fac || !sq) goto done;
    const int tokens = dp_model_input_is_tokens(m), V = dp_model_vocab(m);
    for (size_t i = 0; i < B * dim; i++)
        x[i] = tokens ? (i % 3 == 2 ? -1.0f : i % 2 ? 0.0f : (float)(V - 1)) /* ids; -1: padding */
                      : (float)(i % 7) * 0.125f - 0.25f;
    if (tokens) x[0] = x[dim] = 0.0f; /* a real token in each sample */
    dp_rng rng;
    dp_rng_seed(&rng, 1);
    const float *logits = NULL;
    /* evaluation, then training with a non-private backward */
    dp_status st = dp_model_forward(m, x, B, 0, NULL, &logits);
    ok(st, "forward (eval)");
    if (st != DP_OK) goto done;
    for (size_t i = 0; i < B * (size_t)K; i++) sink += logits[i] == logits[i];
    st = dp_model_forward(m, x, B, 1, &rng, &logits);
    ok(st, "forward (train)");
    if (st != DP_OK) goto done;
    dp_loss_xent(logits, y, B, K, loss, dz); /* DP_ERR_NONFINITE is allowed */
    dp_model_zero_grad(m);
    ok(dp_model_backward(m, dz, B), "backward");
    /* the clipped gradient in every mode that fits */
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_clip_params cp = dp_clip_default_params();
        cp.mode = (dp_clip_mode)mode;
        cp.max_grad_norm = 0.5;
        if (dp_model_clip_plan_bytes(m, &cp, B) > PLAN_LIMIT) continue;
        char plan[2048];
        ok(dp_model_describe_plan(m, &cp, B, plan, sizeof plan), "describe_plan");
        st = dp_model_forward(m, x, B, 1, &rng, &logits);
        ok(st, "forward (clipping)");
        if (st != DP_OK) continue;
        dp_loss_xent(logits, y, B, K, NULL, dz);
        dp_model_zero_grad(m);
        int bad = -1;
        st = dp_model_clipped_grad(m, &cp, dz, B, norms, fac, &bad);
        ok(st, dp_clip_mode_name(cp.mode));
        if (st != DP_OK) continue;
        if (verbose) fprintf(stderr, " %s", dp_clip_mode_name(cp.mode));
        if (bad < 0 || bad > B) fail("n_nonfinite out of range", m);
        for (int b = 0; b < B; b++)
            if (!(fac[b] >= 0.0f && fac[b] <= 1.0f)) fail("a clip factor outside [0, 1]", m);
        const float *g = dp_model_grad(m);
        for (size_t k = 0; k < np; k++) sink += g[k] == g[k];
    }
    if (dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 0) <= PLAN_LIMIT) {
        st = dp_model_forward(m, x, B, 1, &rng, &logits);
        ok(st, "forward (layer norms)");
        if (st == DP_OK) {
            dp_loss_xent(logits, y, B, K, NULL, dz);
            ok(dp_model_layer_sq_norms(m, DP_CLIP_GHOST, dz, B, sq), "layer_sq_norms");
        }
    }
done:
    dp_free(x);
    dp_free(dz);
    dp_free(loss);
    dp_free(norms);
    dp_free(fac);
    dp_free(sq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once) {
        once = 1;
        dp_mem_set_limit((size_t)1 << 30); /* a huge model fails to allocate instead of exhausting RSS */
        verbose = getenv("FUZZ_VERBOSE") && atoi(getenv("FUZZ_VERBOSE")) > 0;
    }
    const size_t live0 = dp_mem_get().live_bytes;
    const char *path = fuzz_write(".onnx", data, size);
    dp_model *m = NULL;
    if (dp_model_load_onnx(path, &m) == DP_OK) {
        if (!m) fail("DP_OK without a model", m);
        if (verbose) fprintf(stderr, "fuzz_onnx_import: loaded, %zu parameters, %d layers;", dp_model_num_params(m),
                             dp_model_num_layers(m));
        check_invariants(m);
        drive(m);
        roundtrip(m, path);
        if (verbose) fprintf(stderr, "\n");
        dp_model_destroy(m);
    } else if (verbose)
        fprintf(stderr, "fuzz_onnx_import: refused: %s\n", dp_last_error());
    unlink(path);
    if (dp_mem_get().live_bytes != live0) {
        fprintf(stderr, "fuzz_onnx_import: %zu tracked bytes still live after the import (before: %zu)\n",
                dp_mem_get().live_bytes, live0);
        abort();
    }
    return 0;
}
