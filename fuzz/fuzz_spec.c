/* fuzz_spec.c: libFuzzer target for the model-spec parser (dp_model_create_named and
 * dp_model_create: src/nn/spec.c and the layers' argument parsers in src/nn/layers/;
 * docs/model-spec.md). The input: byte 0 the channels (1..8), bytes 1 and 2 the height and
 * width (1..40), byte 3 the classes (2..20) for the built-in names, byte 4 the layer to freeze
 * and the clipping mode of the step below, then the spec string (up to the first NUL; "cnn"
 * and "mlp" name the built-in models). Tracked allocations are limited to 64 MiB, so a spec
 * with a huge parameter block is refused by the allocator (DP_ERR_NOMEM) before any malloc.
 * A model that is created must hold the invariants the public API shows: parameters above 0,
 * all trainable; input size c*h*w (or T ids for a token model, whose vocabulary is above 0);
 * each layer reading the one before; output dimensions above 0 and the output size the last
 * layer's shape product (and the classes for a built-in name); every tensor inside the
 * parameter block, found by its name (names are unique), its shape's product its count, the
 * counts adding up to the block; linear, conv2d and embedding weights as many as their input
 * and output imply; freezing a layer and unfreezing it. When a step of 2 samples is small
 * (under 16 MiB by dp_model_plan_bytes, 1e7 FLOPs), it is driven once: initialisation,
 * forward (evaluation and training), cross-entropy, backward, and the clipped gradient in one
 * mode; the engine may refuse only for memory. Tracked bytes must all be freed after
 * dp_model_destroy. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpsgd/core.h"
#include "dpsgd/nn.h"
#include "fuzz_model.h"

enum { B = 2, HDR = 5 };
#define MEM_LIMIT ((size_t)64 << 20)
#define PLAN_LIMIT ((size_t)16 << 20)
#define FLOP_LIMIT 1e7

static volatile uint64_t sink;

static void fail(const char *what, const char *spec) {
    fprintf(stderr, "fuzz_spec: %s (spec '%.200s'; last error: %s)\n", what, spec, dp_last_error());
    abort();
}

/* an engine call on a created model: only running out of (limited) memory may refuse it */
static void ok(dp_status st, const char *what, const char *spec) {
    if (st == DP_OK || st == DP_ERR_NOMEM) return;
    fprintf(stderr, "fuzz_spec: %s refused a model that was created: %s (spec '%.200s')\n", what, dp_last_error(), spec);
    abort();
}

static double shape_prod(const int64_t *sh, int nd) {
    double p = 1;
    for (int k = 0; k < nd; k++) p *= (double)sh[k];
    return p;
}

static void check_invariants(dp_model *m, const char *spec, int c, int h, int w, int named, int classes) {
    const size_t np = dp_model_num_params(m);
    if (np == 0) fail("a created model has no parameter", spec);
    if (dp_model_num_trainable(m) != np) fail("a new model with frozen parameters", spec);
    const int L = dp_model_num_layers(m);
    if (L <= 0) fail("no layer", spec);
    if (dp_model_input_size(m) != (size_t)c * h * w) fail("input size not c*h*w", spec);
    if (dp_model_output_size(m) <= 0) fail("output size <= 0", spec);
    const int tokens = dp_model_input_is_tokens(m);
    if (tokens != (dp_model_layer_kind(m, 0) == DP_LAYER_EMBEDDING)) fail("token input without a first embedding", spec);
    if (tokens && dp_model_vocab(m) <= 0) fail("a token model with vocabulary <= 0", spec);
    const char *bad_tensor, *why;
    uint64_t bits = 0;
    if ((why = fuzz_check_tensors(m, 1, &bad_tensor, &bits)) != NULL) {
        fprintf(stderr, "fuzz_spec: tensor '%s'\n", bad_tensor ? bad_tensor : "?");
        fail(why, spec);
    }
    size_t lsum = 0;
    int64_t prev[3] = {c, h, w};
    int prev_nd = 3, prev_seq = 0;
    for (int i = 0; i < L; i++) {
        const dp_layer_kind kind = dp_model_layer_kind(m, i);
        if ((int)kind < 0 || kind >= DP_LAYER_COUNT) fail("a layer kind out of range", spec);
        size_t off = 0, n = dp_model_layer_params(m, i, &off);
        if (n > np || off > np - n) fail("layer parameters outside the block", spec);
        lsum += n;
        int in[3];
        if (dp_model_layer_inputs(m, i, in) != 1 || in[0] != i - 1) fail("a spec layer not reading the one before", spec);
        int64_t sh[3] = {0, 0, 0};
        int nd = dp_model_layer_shape(m, i, sh);
        if (nd != 2 && nd != 3) fail("a layer shape of rank other than 2 or 3", spec);
        for (int k = 0; k < nd; k++)
            if (sh[k] <= 0 || sh[k] > INT32_MAX) fail("a layer output dimension <= 0 or above 2^31-1", spec);
        /* the weights the input and output imply (64-bit sizes, in doubles: no wrap-around) */
        const double in_n = shape_prod(prev, prev_nd), feat = prev_seq ? (double)prev[1] : in_n;
        double want = -1; /* the weights implied; -1: not checked */
        int bad = 0;
        if (kind == DP_LAYER_LINEAR) {
            const double out = nd == 2 ? (double)sh[1] : (double)sh[0];
            want = out * feat;
            bad = (double)n != want && (double)n != want + out;
        } else if (kind == DP_LAYER_EMBEDDING) {
            want = (double)dp_model_vocab(m) * (double)sh[1];
            bad = (double)n != want;
        }
        if (kind == DP_LAYER_CONV2D && n == 0) bad = 1; /* its weight count wrapped around to 0 */
        if (bad) {
            fprintf(stderr, "fuzz_spec: layer %d (%s): %zu parameters, %.0f weights implied\n", i, dp_layer_kind_name(kind),
                    n, want);
            fail("a layer's parameter count is not what its shapes imply", spec);
        }
        if (!dp_model_layer_name(m, i)) fail("a layer without a name", spec);
        double f, bw, bx;
        dp_model_layer_flops(m, i, &f, &bw, &bx);
        if (!(f >= 0 && bw >= 0 && bx >= 0)) fail("negative FLOPs", spec);
        memcpy(prev, sh, sizeof prev);
        prev_nd = nd;
        prev_seq = nd == 2;
    }
    if (lsum != np) fail("the layers' parameters do not add up to the block", spec);
    /* conv2d weights [OUT, IN/G, K, K]: IN the channels before (G groups), OUT the layer's */
    for (int t = 0; t < dp_model_num_tensors(m); t++) {
        const char *name;
        float *d;
        size_t n;
        dp_model_tensor(m, t, &name, &d, &n);
        int64_t ts[4];
        if (dp_model_tensor_shape(m, t, ts) != 4) continue;
        for (int i = 0; i < L; i++) {
            size_t off = 0;
            if (dp_model_layer_kind(m, i) != DP_LAYER_CONV2D || dp_model_layer_params(m, i, &off) == 0 ||
                dp_model_params(m) + off != d)
                continue;
            int64_t sh[3], ish[3] = {c, h, w};
            dp_model_layer_shape(m, i, sh);
            if (i > 0) dp_model_layer_shape(m, i - 1, ish);
            if (ts[0] != sh[0] || ts[1] < 1 || ish[0] % ts[1] || sh[0] % (ish[0] / ts[1]) || ts[2] != ts[3])
                fail("a conv2d weight of the wrong shape", spec);
        }
    }
    int64_t sh[3];
    int nd = dp_model_layer_shape(m, L - 1, sh);
    if (shape_prod(sh, nd) != (double)dp_model_output_size(m)) fail("the last layer's shape is not the output size", spec);
    if (named && dp_model_output_size(m) != classes) fail("a built-in model whose output is not the classes", spec);
    char buf[4096];
    dp_model_describe(m, buf, sizeof buf);
    sink += strlen(buf);
}

/* freeze one layer with parameters and unfreeze it: the trainable count follows */
static void check_freeze(dp_model *m, int which, const char *spec) {
    const int L = dp_model_num_layers(m);
    const size_t np = dp_model_num_params(m);
    for (int j = 0; j < L; j++) {
        const int i = (which + j) % L;
        const size_t n = dp_model_layer_params(m, i, NULL);
        if (n == 0) continue;
        dp_status st = dp_model_set_frozen(m, i, 1);
        if (st == DP_OK) {
            if (dp_model_num_trainable(m) != np - n || !dp_model_layer_frozen(m, i)) fail("freezing miscounted", spec);
            if (dp_model_set_frozen(m, i, 0) != DP_OK) fail("unfreezing refused", spec);
        } else if (n != np) {
            fail("freezing one of several parameter layers refused", spec);
        }
        if (dp_model_num_trainable(m) != np || dp_model_layer_frozen(m, i)) fail("unfreezing miscounted", spec);
        return;
    }
}

static void drive(dp_model *m, int mode, const char *spec) {
    double fl = 0;
    for (int i = 0; i < dp_model_num_layers(m); i++) {
        double f, bw, bx;
        dp_model_layer_flops(m, i, &f, &bw, &bx);
        fl += (f + bw + bx) * B;
    }
    if (fl > FLOP_LIMIT || dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 0) > PLAN_LIMIT ||
        dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 1) > PLAN_LIMIT)
        return;
    dp_clip_params cp = dp_clip_default_params();
    cp.mode = (dp_clip_mode)mode;
    cp.max_grad_norm = 0.5;
    if (dp_model_clip_plan_bytes(m, &cp, B) > PLAN_LIMIT) return;
    const size_t dim = dp_model_input_size(m);
    const int K = dp_model_output_size(m);
    float *x = dp_alloc(sizeof(float) * B * dim), *dz = dp_alloc(sizeof(float) * B * (size_t)K);
    float *norms = dp_alloc(sizeof(float) * B), *fac = dp_alloc(sizeof(float) * B);
    int32_t y[B] = {0, K - 1};
    if (!x || !dz || !norms || !fac) goto done;
    const int tokens = dp_model_input_is_tokens(m), V = dp_model_vocab(m);
    for (size_t i = 0; i < B * dim; i++)
        x[i] = tokens ? (i % 3 == 2 ? -1.0f : (float)(i % (size_t)V)) /* ids; -1: padding */
                      : (float)(i % 7) * 0.125f - 0.25f;
    if (tokens) x[0] = x[dim] = 0.0f; /* a real token in each sample */
    dp_rng rng;
    dp_rng_seed(&rng, 1);
    dp_model_init(m, &rng);
    const float *logits = NULL;
    dp_status st = dp_model_forward(m, x, B, 0, NULL, &logits);
    ok(st, "forward (eval)", spec);
    if (st != DP_OK) goto done;
    for (size_t i = 0; i < B * (size_t)K; i++) sink += logits[i] == logits[i];
    st = dp_model_forward(m, x, B, 1, &rng, &logits);
    ok(st, "forward (train)", spec);
    if (st != DP_OK) goto done;
    dp_loss_xent(logits, y, B, K, NULL, dz); /* DP_ERR_NONFINITE is allowed */
    dp_model_zero_grad(m);
    st = dp_model_backward(m, dz, B);
    ok(st, "backward", spec);
    if (st != DP_OK) goto done;
    st = dp_model_forward(m, x, B, 1, &rng, &logits);
    ok(st, "forward (clipping)", spec);
    if (st != DP_OK) goto done;
    dp_loss_xent(logits, y, B, K, NULL, dz);
    dp_model_zero_grad(m);
    int bad = -1;
    st = dp_model_clipped_grad(m, &cp, dz, B, norms, fac, &bad);
    ok(st, dp_clip_mode_name(cp.mode), spec);
    if (st != DP_OK) goto done;
    if (bad < 0 || bad > B) fail("n_nonfinite out of range", spec);
    for (int b = 0; b < B; b++)
        if (!(fac[b] >= 0.0f && fac[b] <= 1.0f)) fail("a clip factor outside [0, 1]", spec);
done:
    dp_free(x);
    dp_free(dz);
    dp_free(norms);
    dp_free(fac);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once) {
        once = 1;
        dp_mem_set_limit(MEM_LIMIT); /* a huge model fails to allocate instead of exhausting RSS */
    }
    if (size < HDR) return 0;
    const int c = 1 + data[0] % 8, h = 1 + data[1] % 40, w = 1 + data[2] % 40, classes = 2 + data[3] % 19;
    const int freeze = data[4] >> 3, mode = (data[4] & 7) % DP_CLIP_COUNT;
    char *spec = malloc(size - HDR + 1);
    if (!spec) return 0;
    memcpy(spec, data + HDR, size - HDR);
    spec[size - HDR] = 0;
    const size_t live0 = dp_mem_get().live_bytes;
    dp_model *m = NULL;
    dp_status st = dp_model_create_named(spec, c, h, w, classes, &m);
    if (st == DP_OK) {
        if (!m) fail("DP_OK without a model", spec);
        check_invariants(m, spec, c, h, w, dp_model_builtin_spec(spec) != NULL, classes);
        check_freeze(m, freeze, spec);
        drive(m, mode, spec);
        dp_model_destroy(m);
    } else if (m) {
        fail("a refusal that set the model", spec);
    }
    if (dp_mem_get().live_bytes != live0) {
        fprintf(stderr, "fuzz_spec: %zu tracked bytes still live after the model (before: %zu)\n", dp_mem_get().live_bytes,
                live0);
        abort();
    }
    free(spec);
    return 0;
}
