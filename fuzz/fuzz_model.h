/* fuzz_model.h: the checks of a model's tensors through the public API that the fuzz targets
 * which build models (fuzz_onnx_import, fuzz_spec) share. */
#ifndef DP_FUZZ_MODEL_H
#define DP_FUZZ_MODEL_H
#include <stdint.h>
#include <string.h>

#include "dpsgd.h"

/* Every tensor inside the parameter block, a shape of rank 1..4 with dimensions of at least
 * min_dim whose product is its count, found again by its name at the same place, and the tensors
 * together the whole block. Returns NULL, or the rule broken (*bad: the tensor's name, or NULL).
 * *sum: a sum over the tensors' bits, so that every value is read. */
static const char *fuzz_check_tensors(const dp_model *m, int64_t min_dim, const char **bad, uint64_t *sum) {
    const size_t np = dp_model_num_params(m);
    const float *params = dp_model_params((dp_model *)m);
    size_t total = 0;
    *bad = NULL;
    for (int t = 0; t < dp_model_num_tensors(m); t++) {
        const char *name;
        float *d;
        size_t n;
        if (dp_model_tensor((dp_model *)m, t, &name, &d, &n) != DP_OK) return "dp_model_tensor refused an index below the count";
        *bad = name;
        if (!name || d < params || (size_t)(d - params) > np || n > np - (size_t)(d - params))
            return "a tensor outside the parameter block";
        int64_t sh[4] = {0, 0, 0, 0};
        const int nd = dp_model_tensor_shape(m, t, sh);
        if (nd < 1 || nd > 4) return "a tensor shape of rank outside 1..4";
        uint64_t prod = 1;
        for (int k = 0; k < nd; k++) {
            if (sh[k] < min_dim) return "a tensor dimension below the least allowed";
            prod *= (uint64_t)sh[k];
        }
        if (prod != n) return "a tensor shape product that is not its count";
        float *d2;
        size_t n2;
        if (dp_model_find_tensor((dp_model *)m, name, &d2, &n2) != DP_OK || d2 != d || n2 != n)
            return "a tensor not found by its name";
        total += n;
        for (size_t k = 0; k < n; k++) {
            uint32_t u;
            memcpy(&u, &d[k], 4);
            *sum += u;
        }
    }
    *bad = NULL;
    return total == np ? NULL : "the tensors do not add up to the parameter block";
}
#endif
