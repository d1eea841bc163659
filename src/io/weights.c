/* weights.c: model weights as safetensors with PyTorch names and shapes (see dpsgd/io.h).
 * Apart from safetensors.c so that the parsers build without the model (fuzzing). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpsgd/io.h"

/* ---- model weights ---------------------------------------------------------------------- */

/* The model's tensors with their PyTorch shapes (dp_model_tensor_shape). */
dp_status dp_model_st_tensors(dp_model *m, dp_st_tensor *out) {
    int nt = dp_model_num_tensors(m);
    for (int t = 0; t < nt; t++) {
        const char *name;
        float *data;
        dp_model_tensor(m, t, &name, &data, NULL);
        dp_st_tensor *o = &out[t];
        o->name = name;
        o->dtype = DP_ST_F32;
        o->data = data;
        o->ndim = dp_model_tensor_shape(m, t, o->shape);
    }
    return DP_OK;
}

dp_status dp_model_save_safetensors(dp_model *m, const char *path) {
    int nt = dp_model_num_tensors(m);
    dp_st_tensor *t = calloc((size_t)(nt ? nt : 1), sizeof *t);
    if (!t) return dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    dp_status st = dp_model_st_tensors(m, t);
    if (st == DP_OK) st = dp_safetensors_save(path, t, nt, NULL, 0);
    free(t);
    return st;
}

dp_status dp_model_from_safetensors(dp_model *m, const dp_safetensors *s, const char *skip_prefix) {
    int nt = dp_model_num_tensors(m);
    dp_st_tensor *t = calloc((size_t)(nt ? nt : 1), sizeof *t);
    if (!t) return dp_fail(DP_ERR_NOMEM, "%s: out of memory", dp_safetensors_what(s));
    dp_status st = dp_model_st_tensors(m, t);
    /* every file tensor must be a model tensor (or skipped) */
    for (int i = 0; i < dp_safetensors_num_tensors(s) && st == DP_OK; i++) {
        const char *name;
        dp_safetensors_tensor(s, i, &name, NULL, NULL, NULL, NULL, NULL);
        if (skip_prefix && !strncmp(name, skip_prefix, strlen(skip_prefix))) continue;
        int found = 0;
        for (int k = 0; k < nt; k++) found |= !strcmp(t[k].name, name);
        if (!found)
            st = dp_fail(DP_ERR_INVALID, "%s: tensor '%.64s' is not a parameter of this model", dp_safetensors_what(s),
                         name);
    }
    for (int k = 0; k < nt && st == DP_OK; k++) {
        dp_st_dtype dt;
        int nd;
        const int64_t *sh;
        const void *data;
        size_t count;
        if ((st = dp_safetensors_find(s, t[k].name, &dt, &nd, &sh, &data, &count)) != DP_OK) break;
        if (dt != DP_ST_F32) {
            st = dp_fail(DP_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s, expected F32", dp_safetensors_what(s),
                         t[k].name, dp_st_dtype_name(dt));
            break;
        }
        int same = nd == t[k].ndim;
        for (int d = 0; same && d < nd; d++) same = sh[d] == t[k].shape[d];
        if (!same) {
            char a[128] = "", b[128] = "";
            for (int d = 0; d < nd; d++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", d ? "," : "", (long long)sh[d]);
            for (int d = 0; d < t[k].ndim; d++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", d ? "," : "", (long long)t[k].shape[d]);
            st = dp_fail(DP_ERR_INVALID, "%s: tensor '%s': shape [%s], the model needs [%s]", dp_safetensors_what(s),
                         t[k].name, a, b);
        }
    }
    /* A NaN or infinity in the weights would only show up later, as a run that fails at its first
     * step ("lower lr?") or as statistics that are all NaN: refused here, where every command
     * loads its weights, naming the file and the tensor */
    for (int k = 0; k < nt && st == DP_OK; k++) {
        const void *data;
        size_t count;
        dp_safetensors_find(s, t[k].name, NULL, NULL, NULL, &data, &count);
        for (size_t i = 0; i < count; i++) {
            float x;
            memcpy(&x, (const char *)data + i * sizeof(float), sizeof x); /* the data may be unaligned */
            if (!isfinite(x)) {
                st = dp_fail(DP_ERR_NONFINITE, "%s: tensor '%s' holds a non-finite value (NaN or infinity); these "
                             "weights cannot be trained or evaluated", dp_safetensors_what(s), t[k].name);
                break;
            }
        }
    }
    if (st == DP_OK)
        for (int k = 0; k < nt; k++) {
            const void *data;
            size_t count;
            dp_safetensors_find(s, t[k].name, NULL, NULL, NULL, &data, &count);
            memcpy((void *)t[k].data, data, count * sizeof(float));
        }
    free(t);
    return st;
}

dp_status dp_model_load_safetensors(dp_model *m, const char *path) {
    dp_safetensors *s;
    dp_status st = dp_safetensors_load(path, &s);
    if (st != DP_OK) return st;
    st = dp_model_from_safetensors(m, s, NULL);
    dp_safetensors_destroy(s);
    return st;
}
