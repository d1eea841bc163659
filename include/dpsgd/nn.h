/* dpsgd/nn.h: layers, models and the clipping engine.
 *
 * A model is a sequence of layers built from a spec string or a built-in name. Its parameters
 * live in ONE float block (layer by layer, weight then bias, PyTorch's order), its gradients in
 * another of the same size. Activations for a batch are kept inside the model (grown on
 * demand, through the tracked allocator) between dp_model_forward and the backward calls.
 *
 * Spec grammar (layers separated by spaces; the input shape is given separately):
 *   linear(OUT[,nobias])            fully connected; flattens its input
 *   conv2d(OUT,K[,sS][,pP][,nobias]) 2-D convolution, square kernel K, stride S (1), padding P (0)
 *   relu  tanh  flatten
 *   maxpool(K[,S])  avgpool(K[,S])  pooling, stride S (default K), no padding
 *   dropout(P)                      drop probability P in [0,1)
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
    X(DP_LAYER_DROPOUT, "dropout")

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
    X(DP_CLIP_GHOST, "ghost")     /* ghost norms where cheaper, else instantiate; 2nd bwd */

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
void dp_model_destroy(dp_model *m);

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
/* Freeze (or unfreeze) the parameters of layer i: they take no part in clipping, noise or the
 * optimizer step. */
dp_status dp_model_set_frozen(dp_model *m, int layer, int frozen);
/* Named parameter tensors ("3.weight"): pointer into the block, its element count. */
int dp_model_num_tensors(const dp_model *m);
dp_status dp_model_tensor(dp_model *m, int t, const char **name, float **data, size_t *count);
dp_status dp_model_find_tensor(dp_model *m, const char *name, float **data, size_t *count);
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
} dp_clip_params;
dp_clip_params dp_clip_default_params(void); /* ghost, C = 1 */

/* The private gradient of a forwarded batch: per-sample norms (pass 1, in the chosen mode),
 * clip factors R_i = min(1, C / (||g_i|| + 1e-6)), then grad += sum_i R_i g_i (pass 2, or the
 * stored per-sample gradients in vanilla mode). A sample whose norm is not finite gets
 * R_i = 0 and is counted in *n_nonfinite. norms and factors ([B], optional) receive ||g_i||
 * and R_i. Frozen layers are skipped. Memory stages (dp_mem_stage): "backward 1" while norms are
 * found (vanilla: all per-sample gradients), "backward 2" for the clipped sum (second backward
 * pass, or vanilla's weighted sum). */
dp_status dp_model_clipped_grad(dp_model *m, const dp_clip_params *cp, const float *dlogits, int B,
                                float *norms, float *factors, int *n_nonfinite);

/* The method the engine uses for layer i in a mode, and its estimated FLOPs for B samples. */
dp_norm_method dp_model_norm_method(const dp_model *m, int layer, dp_clip_mode mode, double *flops_ghost,
                                    double *flops_inst);

#ifdef __cplusplus
}
#endif
#endif
