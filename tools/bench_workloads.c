/* bench_workloads.c: what `dpsgd bench` measures: the workloads (a model factory, the data,
 * default batch sizes and steps, the issues' targets), the modes and the stages of a step,
 * and the FLOP model of a no-DP step. A workload is one row of the `workloads` table, or the
 * one `--model FILE.onnx` builds at run time around an ONNX export (bench_model_workload); modes
 * are "no-DP" then every mode of DP_CLIP_LIST, so a mode added to the engine is benchmarked
 * without a change here. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define SYNTH_SPEC "flatten linear(2560) relu linear(1280)"

static dp_status create_synthetic(dp_model **out) { return dp_model_create(SYNTH_SPEC, 5120, 1, 1, out); }
static dp_status create_cnn(dp_model **out) { return dp_model_create_named("cnn", 1, 28, 28, 10, out); }

/* BERT-like encoders training only the last block, the pooler and the classifier, as in
 * the article's BERT experiment: base is BERT-base's shape (12 x 768, 12 heads, FFN 3072,
 * 128 tokens, vocabulary 30522; 7.68M trainable parameters), small a quick preset. */
static dp_status create_bert_preset(int layers, int width, int heads, dp_model **out) {
    dp_transformer_params p = dp_transformer_default_params();
    p.layers = layers;
    p.width = width;
    p.heads = heads;
    p.ffn = 4 * width;
    p.seq_len = 128;
    p.vocab = 30522;
    p.n_classes = 2;
    p.train_last = 1;
    p.dropout = 0; /* no dropout: the modes then compute the same step */
    return dp_model_create_transformer(&p, out);
}
static dp_status create_bert(dp_model **out) { return create_bert_preset(12, 768, 12, out); }
static dp_status create_bert_small(dp_model **out) { return create_bert_preset(4, 256, 4, out); }

/* example e's own stream: a function of (seed, e) only */
static void row_rng(dp_rng *r, uint64_t seed, size_t e) {
    dp_rng_seed(r, seed * 1000003u ^ ((uint64_t)e * 0x9e3779b97f4a7c15ULL + 0x5eed));
}

/* token ids uniform over the vocabulary, full sequences; the label uniform */
static void row_tokens(const dp_model *m, uint64_t seed, size_t e, float *x, int32_t *y) {
    dp_rng r;
    row_rng(&r, seed, e);
    const size_t T = dp_model_input_size(m);
    const uint64_t V = (uint64_t)dp_model_vocab(m);
    for (size_t i = 0; i < T; i++) x[i] = (float)(dp_rng_u64(&r) % V);
    *y = (int32_t)(dp_rng_u64(&r) % (uint64_t)dp_model_output_size(m));
}

/* features N(0,1), the label uniform */
static void row_gaussian(const dp_model *m, uint64_t seed, size_t e, float *x, int32_t *y) {
    dp_rng r;
    row_rng(&r, seed, e);
    const size_t dim = dp_model_input_size(m);
    for (size_t i = 0; i < dim; i++) x[i] = (float)dp_rng_normal(&r);
    *y = (int32_t)(dp_rng_u64(&r) % (uint64_t)dp_model_output_size(m));
}

#define BERT_FLOPS_NOTE                                                                                                \
    "GEMM FLOPs of the linear layers (2*T*in*out per sample, frozen ones too: the forward runs them) and of "          \
    "attention (4*T*T*width forward, 8*T*T*width backward); backward only where the graph needs it: weight "           \
    "gradients of trainable layers, input gradients behind the first trainable layer; embeddings, LayerNorm, "         \
    "GELU, softmax and the loss are not counted"

#define BERT_TARGETS                                                                                                   \
    {{M_GHOST, 'm', 1.05, 0, 0}, {M_GHOST, 't', 1.25, 0, 0}, {M_BK, 't', 1.10, 0, 0}, {M_AUTO, 't', 1.10, 0, 0},          \
     {M_AUTO, 'm', 1.2, 0, 0}},                                                                                        \
        5, 0, 0

static const bench_workload workloads[] = {
    {"synthetic",
     "the Opacus article's synthetic MLP: " SYNTH_SPEC " on 5120 N(0,1) features, 1280 classes",
     create_synthetic,
     row_gaussian,
     {32, 217, 512, 1024},
     4,
     {16, 64},
     2,
     1,
     5,
     "exact GEMM FLOPs of the linear layers: forward 2*B*in*out per layer; backward 2*B*in*out for the weight "
     "gradient plus 2*B*in*out for the input gradient of every layer above the first (bias, ReLU and loss "
     "not counted)",
     /* the performance issue's: auto <= 1.15x no-DP at batch 32, <= 1.05x from 217 on */
     {{M_GHOST, 'm', 1.05, 0, 0},
      {M_GHOST, 't', 1.15, 0, 0},
      {M_BK, 't', 1.10, 0, 0},
      {M_AUTO, 't', 1.15, 0, 32},
      {M_AUTO, 't', 1.05, 217, 0},
      {M_AUTO, 'm', 1.2, 0, 0}},
     6,
     0.60,
     1024,
     NULL},
    {"cnn",
     "the default CNN (Tramer & Boneh, 26,010 parameters) on 1x28x28 N(0,1) images, 10 classes",
     create_cnn,
     row_gaussian,
     {256, 1024, 2048},
     3,
     {64, 256},
     2,
     2,
     10,
     "GEMM FLOPs of the convolutions (as im2col GEMMs, 2*B*T*D*out) and linear layers, forward and backward as "
     "for the MLP; tanh, pooling, im2col and the loss are not counted, so the rate is approximate",
     /* the performance issue's: auto <= 1.05x no-DP at every batch, no-DP >= 30% of SGEMM at 2048 */
     {{M_GHOST, 'm', 1.05, 0, 0}, {M_AUTO, 't', 1.05, 0, 0}, {M_AUTO, 'm', 1.2, 0, 0}},
     3,
     0.30,
     2048,
     NULL},
    {"bert",
     "a BERT-base-shaped encoder (12 layers, width 768, 12 heads, FFN 3072, 128 tokens, vocabulary 30522, 2 "
     "classes; random weights) training only its last block, the pooler and the classifier",
     create_bert,
     row_tokens,
     {32, 128, 512, 1024, 2048},
     5,
     {4, 8},
     2,
     1,
     3,
     BERT_FLOPS_NOTE,
     BERT_TARGETS,
     NULL},
    {"bert-small",
     "a small BERT-like encoder (4 layers, width 256, 4 heads, FFN 1024, 128 tokens, vocabulary 30522, 2 "
     "classes; random weights) training only its last block, the pooler and the classifier",
     create_bert_small,
     row_tokens,
     {32, 128, 512, 1024, 2048},
     5,
     {8, 32},
     2,
     1,
     5,
     BERT_FLOPS_NOTE,
     BERT_TARGETS,
     NULL},
};

/* ---- --model FILE.onnx: a workload built at run time -------------------------------------- */

static const char *model_path; /* set before any fork: every child inherits it */
static char model_name[4200];  /* "--model FILE": the report's heading and progress lines */
static char model_title[4400]; /* bench_model_describe */
static dp_status create_onnx(dp_model **out) { return dp_model_load_onnx(model_path, out); }

/* token ids for a model whose input is tokens, N(0,1) features otherwise */
static void row_model(const dp_model *m, uint64_t seed, size_t e, float *x, int32_t *y) {
    if (dp_model_input_is_tokens(m))
        row_tokens(m, seed, e, x, y);
    else
        row_gaussian(m, seed, e, x, y);
}

static bench_workload model_workload = {
    model_name,
    model_title,
    create_onnx,
    row_model,
    /* sized for image models on 2 cores: a WRN-16-4 (2.7M parameters, 3x32x32) step of 64
     * takes 1.2-2.1 s in every mode, the default run of all modes 1.5 min (docs/benchmarks.md) */
    {16, 64},
    2,
    {4, 8},
    2,
    1,
    3,
    "GEMM FLOPs of the layers dp_model_layer_flops counts: convolutions (as im2col GEMMs, 2*T*D*out per sample), "
    "linear layers (2*T*in*out) and matrix products of two activations (MatMul, e.g. attention's scores and "
    "weighted values: 2*M*K*N forward, twice that for the two input gradients); forward of every such layer, "
    "weight gradients of the trainable ones, input gradients behind the first trainable layer; normalisation, "
    "activations, pooling, softmax, element-wise operators, im2col and the loss are not counted, so the rate is "
    "approximate",
    {{0, 0, 0, 0, 0}},
    0, /* no targets: the issue asks for the figures, not for bounds */
    0,
    0,
    NULL,
};

const bench_workload *bench_model_workload(const char *path) {
    model_path = path;
    model_workload.model_file = path;
    snprintf(model_name, sizeof model_name, "--model %s", path);
    snprintf(model_title, sizeof model_title, "the ONNX model %s", path);
    return &model_workload;
}

/* n with thousands separators */
static void fmt_count(char *buf, size_t cap, size_t n) {
    char d[32];
    int len = snprintf(d, sizeof d, "%zu", n), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = d[i];
    }
    buf[o] = 0;
}

void bench_model_describe(const probe_result *pr) {
    char np[32], data[160];
    fmt_count(np, sizeof np, pr->np);
    if (pr->tokens)
        snprintf(data, sizeof data, "uniform token ids in 0..%d (%zu per example)", pr->vocab - 1, pr->dim);
    else
        snprintf(data, sizeof data, "N(0,1) float inputs (%zu values per example)", pr->dim);
    snprintf(model_title, sizeof model_title,
             "the ONNX model %s (%s parameters, %d layers once imported; the file's initial weights), %s, uniform "
             "labels in 0..%d",
             model_path, np, pr->nlayers, data, pr->K - 1);
}

const bench_workload *bench_find_workload(const char *name) {
    for (size_t k = 0; k < sizeof workloads / sizeof workloads[0]; k++)
        if (!strcmp(name, workloads[k].name)) return &workloads[k];
    return NULL;
}

const char *bench_mode_name(int k) { return k == 0 ? "no-DP" : dp_clip_mode_name((dp_clip_mode)(k - 1)); }

const char *const bench_stage_title[ST_COUNT] = {"model creation", "forward", "first backward", "second backward",
                                                 "optimizer step"};
const char *const bench_stage_key[ST_COUNT] = {"model_creation", "forward", "backward_1", "backward_2",
                                               "optimizer_step"};

/* The GEMM FLOPs per sample of the linear, convolution and attention layers, from the model
 * (dp_model_layer_flops): every layer's forward (frozen ones too: the forward runs them), the
 * weight gradient of the trainable linear and convolution layers, and the input gradient of
 * every such layer and attention behind the first trainable linear or convolution (the engine
 * skips the rest). Element-wise work counts 0. */
void bench_layer_flops(const dp_model *m, double *fwd, double *bwd) {
    *fwd = *bwd = 0;
    int behind = 0; /* a trainable layer with weight FLOPs came before: input gradients from here on */
    for (int i = 0; i < dp_model_num_layers(m); i++) {
        double f = 0, w = 0, x = 0;
        dp_model_layer_flops(m, i, &f, &w, &x);
        const int trains = dp_model_layer_params(m, i, NULL) > 0 && !dp_model_layer_frozen(m, i);
        *fwd += f;
        if (trains) *bwd += w; /* weight gradient */
        if (behind) *bwd += x; /* input gradient */
        behind |= trains && w > 0;
    }
}
