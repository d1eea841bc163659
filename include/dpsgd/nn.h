/* dpsgd/nn.h: layers, models and the clipping engine.
 *
 * A model is a sequence of layers built from a spec string or a built-in name. Its parameters
 * live in ONE float block (layer by layer, weight then bias, PyTorch's order), its gradients in
 * another of the same size. Activations for a batch are kept inside the model (grown on
 * demand, through the tracked allocator) between dp_model_forward and the backward calls.
 *
 * Spec grammar (layers separated by spaces; the input shape is given separately; any layer may
 * carry a module name as a suffix "@name", used in its parameter names):
 *   linear(OUT[,nobias])            fully connected; flattens its input
 *   conv2d(OUT,K[,sS][,pP][,nobias]) 2-D convolution, square kernel K, stride S (1), padding P (0)
 *   relu  tanh  flatten
 *   maxpool(K[,S][,pP])             max pooling, stride S (K), implicit padding P (0, <= K/2) that
 *                                   is never picked (PyTorch's MaxPool2d(K, S, P)); floor mode
 *   avgpool(K[,S][,pP][,exclude])   average pooling, the same windows; divides by K*K (padded
 *                                   zeros count, PyTorch's default) or with `exclude` by the
 *                                   window's real positions (count_include_pad=False, ONNX's default)
 *   dropout(P)                      drop probability P in [0,1)
 *   groupnorm(G)                    GroupNorm over G groups of channels (affine per channel)
 *   gelu                            GELU (exact, erf)
 *   embedding(V,D)                  first layer only: the input (c*h*w values) is T token ids
 *                                   (integers in -1..V-1, -1 = padding), output T x D
 *   posembed                        adds a learned positional embedding [T, D]
 *   layernorm([EPS])  rmsnorm([EPS]) over the features of each token (EPS 1e-5)
 *   meanpool  firsttoken            sequence -> vector: mean over real tokens / first token
 *   scale  bias                     a trainable factor (starting at 1) or offset (starting at 0)
 *                                   per channel (image), feature (sequence) or entry (vector)
 *   sigmoid                         the logistic function
 *   globalavgpool                   the mean of each channel of an image: C x H x W -> C x 1 x 1
 * On a sequence input linear(OUT) acts on every token ([T, D] -> [T, OUT]).
 * Example (the default CNN): "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh
 *   maxpool(2,1) flatten linear(32) tanh linear(10)".
 * Layers are numbered from 0 in spec order; parameter names follow PyTorch's nn.Sequential:
 *   "<index>.weight", "<index>.bias".
 */
#ifndef DPSGD_NN_H
#define DPSGD_NN_H
#include "dpsgd/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_LAYER_LIST(X)                                                                      \
    X(DP_LAYER_LINEAR, "linear")                                                              \
    X(DP_LAYER_CONV2D, "conv2d")                                                              \
    X(DP_LAYER_RELU, "relu")                                                                  \
    X(DP_LAYER_TANH, "tanh")                                                                  \
    X(DP_LAYER_MAXPOOL, "maxpool")                                                            \
    X(DP_LAYER_AVGPOOL, "avgpool")                                                            \
    X(DP_LAYER_FLATTEN, "flatten")                                                            \
    X(DP_LAYER_DROPOUT, "dropout")                                                            \
    X(DP_LAYER_EMBEDDING, "embedding")                                                        \
    X(DP_LAYER_POSEMBED, "posembed")                                                          \
    X(DP_LAYER_LAYERNORM, "layernorm")                                                        \
    X(DP_LAYER_RMSNORM, "rmsnorm")                                                            \
    X(DP_LAYER_GROUPNORM, "groupnorm")                                                        \
    X(DP_LAYER_GELU, "gelu")                                                                  \
    X(DP_LAYER_ADD, "add")                                                                    \
    X(DP_LAYER_ATTENTION, "attention")                                                        \
    X(DP_LAYER_MEANPOOL, "meanpool")                                                          \
    X(DP_LAYER_FIRSTTOKEN, "firsttoken")                                                      \
    X(DP_LAYER_SCALE, "scale")                                                            \
    X(DP_LAYER_BIAS, "bias")                                                                  \
    X(DP_LAYER_SIGMOID, "sigmoid")                                                            \
    X(DP_LAYER_GLOBALAVGPOOL, "globalavgpool")                                                \
    X(DP_LAYER_TRANSPOSE, "transpose")                                                        \
    X(DP_LAYER_MATMUL, "matmul")                                                              \
    X(DP_LAYER_SOFTMAX, "softmax")                                                            \
    X(DP_LAYER_UNARY, "unary")                                                                \
    X(DP_LAYER_BINARY, "binary")                                                              \
    X(DP_LAYER_SLICE, "slice")                                                                \
    X(DP_LAYER_CONCAT, "concat")                                                              \
    X(DP_LAYER_REDUCE, "reduce")

typedef enum {
#define DP__ENUM(name, text) name,
    DP_LAYER_LIST(DP__ENUM)
#undef DP__ENUM
        DP_LAYER_COUNT
} dp_layer_kind;
const char *dp_layer_kind_name(dp_layer_kind k);

/* How per-sample gradient norms are found (the article's modes). */
#define DP_CLIP_LIST(X)                                                                       \
    X(DP_CLIP_VANILLA, "vanilla") /* per-sample gradients of all parameters at once */        \
    X(DP_CLIP_FAST, "fast")       /* per layer: instantiate, norm, free; second backward */   \
    X(DP_CLIP_GHOST, "ghost")     /* ghost norms where cheaper, else instantiate; 2nd bwd */ \
    X(DP_CLIP_BK, "bk")           /* book-keeping: ghost norms, keep output grads, no 2nd bwd */ \
    X(DP_CLIP_AUTO, "auto")       /* per layer: book-keeping, keep per-sample grads, or 2nd bwd, \
                                     the fastest plan within a memory budget */

typedef enum {
#define DP__ENUM(name, text) name,
    DP_CLIP_LIST(DP__ENUM)
#undef DP__ENUM
        DP_CLIP_COUNT
} dp_clip_mode;
const char *dp_clip_mode_name(dp_clip_mode m);
dp_status dp_clip_mode_parse(const char *s, dp_clip_mode *out);

/* How one trainable layer's norm is computed in a given mode (for plans and tests). */
typedef enum { DP_NORM_NONE, DP_NORM_GHOST, DP_NORM_INSTANTIATE } dp_norm_method;

typedef struct dp_model dp_model;

/* Build a model for inputs of per-example shape (c, h, w) from a spec string. Errors name
 * the offending layer and token. Parameters are left zero: call dp_model_init. */
dp_status dp_model_create(const char *spec, int c, int h, int w, dp_model **out);
/* Built-in names: "cnn" (the Tramer-Boneh Fashion-MNIST CNN, 26,010 parameters for 1x28x28
 * and 10 classes), "mlp" (linear(128) relu linear(n_classes)). Anything else is a spec. */
dp_status dp_model_create_named(const char *name_or_spec, int c, int h, int w, int n_classes, dp_model **out);
/* The spec string of a built-in name (NULL if not built-in). */
const char *dp_model_builtin_spec(const char *name);

/* A BERT-like encoder classifier for token ids (forward input: [B, seq_len] ids as floats,
 * -1 = padding). Nodes: word embedding + learned positional embedding (+ LayerNorm when
 * post-norm), `layers` encoder blocks (separate query/key/value Linears, multi-head attention
 * with padding masks, output projection, residual, LayerNorm, feed-forward Linear-GELU/ReLU-
 * Linear, residual, LayerNorm; pre-norm moves each LayerNorm before its sub-block and adds a
 * final one), pooling (first token or mean over real tokens), pooler Linear + tanh, classifier.
 * Parameter names follow Hugging Face's BertForSequenceClassification ("bert.encoder.layer.0.
 * attention.self.query.weight", "bert.pooler.dense.weight", "classifier.weight"); BERT's
 * initialisation (weights N(0, 0.02), biases 0, LayerNorm 1/0, eps 1e-12). */
enum { DP_POOL_FIRST = 0, DP_POOL_MEAN = 1 };
typedef struct {
    int vocab, seq_len, width, heads, layers;
    int ffn;          /* feed-forward width; 0 = 4 * width */
    int n_classes;
    int pre_norm;     /* 0: post-norm (BERT), 1: pre-norm */
    int gelu;         /* 1: GELU feed-forward, 0: ReLU */
    int pool;         /* DP_POOL_FIRST or DP_POOL_MEAN */
    float dropout;    /* hidden dropout probability */
    int train_last;   /* >= 0: train only the last k blocks, the pooler and the classifier */
} dp_transformer_params;
dp_transformer_params dp_transformer_default_params(void);
dp_status dp_model_create_transformer(const dp_transformer_params *p, dp_model **out);

void dp_model_destroy(dp_model *m);

/* A model from an ONNX file (docs/onnx.md): the graph as exported by torch.onnx.export, its
 * float initializers the trainable parameters under their own names (the state_dict's), their
 * values the initial weights (no dp_model_init needed). Dimension 0 of the graph input is the
 * batch; the graph output is the logits. Operators outside the supported set, and anything
 * that would mix samples (BatchNormalization), are refused naming the node and the reason. */
dp_status dp_model_load_onnx(const char *path, dp_model **out);
/* Writes out_model: the ONNX file in_model (the one the model was loaded from) with every
 * parameter's initializer replaced by the model's current values; atomically. */
dp_status dp_model_save_onnx(const dp_model *m, const char *in_model, const char *out_model);

/* PyTorch default initialisation (kaiming-uniform weights, bias U(-1/sqrt(fan_in), ..)). */
void dp_model_init(dp_model *m, dp_rng *rng);

size_t dp_model_num_params(const dp_model *m);
size_t dp_model_num_trainable(const dp_model *m);
float *dp_model_params(dp_model *m);          /* the parameter block, borrowed */
float *dp_model_grad(dp_model *m);            /* the gradient block, borrowed */
void dp_model_zero_grad(dp_model *m);
/* n bytes, 1 for a trainable coordinate, 0 for frozen (borrowed; updated by set_frozen) */
const unsigned char *dp_model_trainable_mask(const dp_model *m);
int dp_model_num_layers(const dp_model *m);
int dp_model_output_size(const dp_model *m);
size_t dp_model_input_size(const dp_model *m); /* c*h*w */
/* Layer i: kind, parameter offset and count (0 for parameter-free layers). */
dp_layer_kind dp_model_layer_kind(const dp_model *m, int i);
size_t dp_model_layer_params(const dp_model *m, int i, size_t *offset);
/* Layer i's module name ("3" in spec models, "bert.encoder.layer.0.attention.self.query" in
 * transformers; with the spec suffix "@name", that name) and whether it is frozen. */
const char *dp_model_layer_name(const dp_model *m, int i);
int dp_model_layer_frozen(const dp_model *m, int i);
/* Token models: the input is token ids (the first layer is an embedding) and its vocabulary. */
int dp_model_input_is_tokens(const dp_model *m);
int dp_model_vocab(const dp_model *m);
/* Freeze (or unfreeze) every layer with parameters whose name is `prefix` or starts with
 * "prefix." (or with prefix when it ends in '.'); *count (optional) gets how many. Refused,
 * changing nothing, when no layer matches or nothing would remain trainable. A forward must
 * follow before the next backward (buffers are re-planned). */
dp_status dp_model_set_frozen_prefix(dp_model *m, const char *prefix, int frozen, int *count);
/* Freeze (or unfreeze) the parameters of layer i: they take no part in clipping, noise or the
 * optimizer step. */
dp_status dp_model_set_frozen(dp_model *m, int layer, int frozen);
/* Named parameter tensors ("3.weight"): pointer into the block, its element count. */
int dp_model_num_tensors(const dp_model *m);
dp_status dp_model_tensor(dp_model *m, int t, const char **name, float **data, size_t *count);
dp_status dp_model_find_tensor(dp_model *m, const char *name, float **data, size_t *count);
/* PyTorch shape of tensor t (Linear [out, in], Conv2d [out, in, k, k], Embedding [vocab, dim],
 * positional [T, dim], norms and biases [n]); returns the number of dimensions (0: no tensor). */
int dp_model_tensor_shape(const dp_model *m, int t, int64_t shape[4]);
/* Layer i's output per sample: a sequence gives 2 dimensions [T, F], anything else 3
 * [C, H, W] (a vector is [N, 1, 1]); returns the number of dimensions. */
int dp_model_layer_shape(const dp_model *m, int i, int64_t shape[3]);
/* Layer i's inputs (-1: the model input) into in[3]; returns how many (1 to 3). */
int dp_model_layer_inputs(const dp_model *m, int i, int in[3]);
/* FLOPs per sample of layer i's matrix products (2 per multiply-add; element-wise work counts
 * 0): the forward, the weight gradient (0 without parameters) and the input gradient. Linear
 * and conv2d: 2 * output elements * fan-in each; attention: 4 T^2 F forward, 8 T^2 F input. */
void dp_model_layer_flops(const dp_model *m, int i, double *fwd, double *bwd_weight, double *bwd_input);
/* A readable description: one line per layer with output shape and parameter count. */
void dp_model_describe(const dp_model *m, char *buf, size_t cap);

/* Forward a batch x[B, c*h*w]. train=1 enables dropout (using rng) and keeps activations for
 * backward; *logits points inside the model, valid until the next forward. B may be 0. */
dp_status dp_model_forward(dp_model *m, const float *x, int B, int train, dp_rng *rng, const float **logits);

/* Per-sample cross-entropy: loss[i] and dlogits[i] = d loss_i / d logits_i (either may be
 * NULL). y in [0, K). Returns DP_ERR_NONFINITE (message with the count) if any loss is not
 * finite; the outputs are still written. */
dp_status dp_loss_xent(const float *logits, const int32_t *y, int B, int K, float *loss, float *dlogits);
/* Per-sample mean squared error against targets t[B, K]. */
dp_status dp_loss_mse(const float *logits, const float *t, int B, int K, float *loss, float *dlogits);

/* Non-private backward: grad += sum_i d loss_i / d theta (trainable layers only). */
dp_status dp_model_backward(dp_model *m, const float *dlogits, int B);

/* Per-sample gradients of all parameters: ps[B, num_params] (frozen coordinates zero). */
dp_status dp_model_per_sample_grads(dp_model *m, const float *dlogits, int B, float *ps);

typedef struct {
    dp_clip_mode mode;
    double max_grad_norm;  /* C > 0 */
    /* auto: the most bytes a step may allocate beyond parameters, gradients and optimizer
     * state (dp_model_plan_bytes' scope); 0 = dp_model_default_mem_budget */
    size_t mem_budget;
    /* Augmentation multiplicity (De et al. 2022): 0 or 1, every row of the batch is an example;
     * G in 2..DP_CLIP_MAX_GROUP, the B rows are B / G examples of G consecutive rows each (rows
     * i G .. i G + G - 1: augmented copies of example i). Example i's gradient is the AVERAGE of
     * its rows' gradients, g_i = (1/G) sum_k g_ik; that is what is clipped (R_i from ||g_i||),
     * and the clipped sum is sum_i R_i g_i: each example still contributes at most C. B must be
     * a multiple of G; norms, factors and n_nonfinite then have B / G entries (examples). Every
     * layer's norm is then instantiated (a ghost norm is of one row's gradient). */
    int group;
} dp_clip_params;
enum { DP_CLIP_MAX_GROUP = 64 };
dp_clip_params dp_clip_default_params(void); /* auto, C = 1, default budget */
/* auto's default budget for B samples: what keeps a step's buffers plus the parameter and
 * gradient blocks within 1.2 x the non-private step's, i.e. 1.2 x the non-private buffers
 * + 0.2 x (parameters + gradients); optimizer state only lowers the ratio further. */
size_t dp_model_default_mem_budget(dp_model *m, int B);

/* How the clipped sum of one trainable layer is formed (bk and auto modes). */
typedef enum {
    DP_SUM_SECOND_PASS, /* norms in pass 1; the layer's weight gradient in a second backward */
    DP_SUM_KEEP_GRAD,   /* book-keeping: keep the output gradients G, then A^T diag(R) G */
    DP_SUM_KEEP_PS      /* keep the per-sample gradients, then their R-weighted sum (the lowest
                         * trainable node's, with one row per example: a chunk at a time, clipped
                         * and summed as they are made, once the other nodes' norms are known) */
} dp_sum_method;

/* The private gradient of a forwarded batch: per-sample norms (pass 1, in the chosen mode),
 * clip factors R_i = min(1, C (1 - 2^-18) / (||g_i|| + 1e-6)) rounded down to float (the margin
 * keeps ||R_i g_i|| <= C through float rounding), then grad += sum_i R_i g_i (pass 2, or the
 * stored per-sample gradients in vanilla mode). A sample whose norm is not finite gets
 * R_i = 0 and is counted in *n_nonfinite. norms and factors ([B], optional) receive ||g_i||
 * and R_i. Frozen layers are skipped. Memory stages (dp_mem_stage): "backward 1" while norms are
 * found (vanilla: all per-sample gradients), "backward 2" for the clipped sum (second backward
 * pass, or vanilla's weighted sum). */
dp_status dp_model_clipped_grad(dp_model *m, const dp_clip_params *cp, const float *dlogits, int B,
                                float *norms, float *factors, int *n_nonfinite);

/* Per-layer per-sample squared gradient norms of a forwarded batch, in a mode (every mode
 * gives the same numbers up to rounding): sq_layers[b * num_layers + i] (0 for layers without
 * trainable parameters). Accumulates no gradient. */
dp_status dp_model_layer_sq_norms(dp_model *m, dp_clip_mode mode, const float *dlogits, int B, double *sq_layers);

/* Estimated tracked bytes the engine allocates for a step of B samples beyond the parameter,
 * gradient and optimizer blocks: activation and gradient buffers, scratch, and what the mode
 * adds (vanilla: B per-sample gradients; fast/ghost: the largest instantiated layer chunk).
 * no_dp != 0: a non-private step (forward + backward only). */
size_t dp_model_plan_bytes(dp_model *m, dp_clip_mode mode, int B, int no_dp);
/* The same for a private step with all of cp (auto: with cp->mem_budget). */
size_t dp_model_clip_plan_bytes(dp_model *m, const dp_clip_params *cp, int B);
/* The largest batch n <= B whose private step takes at most `bytes` by the estimates above: for
 * auto its smallest plan (every layer on a second backward pass, dp_model_plan_bytes(m,
 * DP_CLIP_GHOST, n, 0); with a budget of `bytes` the plan then keeps what else fits), for the
 * other modes dp_model_clip_plan_bytes(m, cp, n). 0 when not even one sample fits. What to
 * suggest as --physical-batch when a step does not fit. */
int dp_model_max_batch_within(dp_model *m, const dp_clip_params *cp, size_t bytes, int B);

/* The clipping plan for a batch of B samples in cp's mode: per trainable layer, the norm
 * method, how its clipped sum is formed, the bytes it keeps and its estimated FLOPs, one line
 * each, then the totals and the budget (auto). Written to buf (cap bytes, truncated). */
dp_status dp_model_describe_plan(dp_model *m, const dp_clip_params *cp, int B, char *buf, size_t cap);

/* The method the engine uses for layer i in a mode, and its estimated FLOPs for B samples. */
dp_norm_method dp_model_norm_method(const dp_model *m, int layer, dp_clip_mode mode, double *flops_ghost,
                                    double *flops_inst);

#ifdef __cplusplus
}
#endif
#endif
