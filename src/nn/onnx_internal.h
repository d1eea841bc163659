/* nn/onnx_internal.h (internal): the ONNX importer (nn/onnx.c) with some graph inputs bound to
 * values, for the ONNX project's node tests (tests/test_onnx_nodes.c, docs/onnx.md "Node
 * tests"). Those models take their weights as graph inputs, not initializers, and their
 * tensors need not have a batch axis; this entry lets a test import them as dpsgd would an
 * exported model, and compare the forward pass with the stored outputs. Hidden in the shared
 * library (tests link the static one). */
#ifndef DP_NN_ONNX_INTERNAL_H
#define DP_NN_ONNX_INTERNAL_H
#include "dpsgd/nn.h"
#include "io/onnx.h"

enum {
    /* The graph output may have any shape (not only the logits [batch, classes]); it must still
     * be the one output, made by the last node. A graph with no parameter (an operator such as
     * Relu alone, or only folded nodes such as Identity) gets a last node y = 1 * x per channel
     * with the parameter "dp__node_test.ones", so that the model can be built; the product by
     * 1.0f changes no value. */
    DP__ONNX_BIND_ANY_OUTPUT = 1u << 0,
    /* A float model input whose shape past dim 0 is neither [features] nor [C, H, W] (or that
     * has dim 0 only) is taken as a vector of its values per sample: only operators that do
     * not look at the shape (element-wise ones, Flatten, Add of equal shapes) accept it. */
    DP__ONNX_BIND_FLAT_INPUT = 1u << 1,
};

/* Like dp_model_load_onnx(path, out), except that:
 *  - the graph inputs names[0..n-1] are initializers with the values tensors[j] (the tensor's
 *    own name is ignored; a FLOAT one is a parameter, taken by an operator and trained, the
 *    others are constants, as in a file), replacing a file initializer of the same name;
 *  - the model input is graph input number input_index (it must not be bound), its dim 0 the
 *    batch, whatever the graph calls it;
 *  - flags (DP__ONNX_BIND_*) loosen the output and input rules above.
 * Everything else (supported operators, their forms, refusals and messages) is
 * dp_model_load_onnx's: the two share one implementation. */
DP_HIDDEN dp_status dp__model_load_onnx_bound(const char *path, int n, const char *const names[],
                                              const dp__onnx_tensor *const tensors[], int input_index, unsigned flags,
                                              dp_model **out);
#endif
