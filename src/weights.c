/* weights.c: model weights as safetensors with PyTorch names and shapes (see dpsgd/io.h).
 * Apart from safetensors.c so that the parsers build without the model (fuzzing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpsgd/io.h"

/* ---- model weights ---------------------------------------------------------------------- */

/* PyTorch shapes of the model's tensors, from the layer table and output shapes (read from
 * dp_model_describe, the one public place that has them). */
dp_status dp_model_st_tensors(dp_model *m, dp_st_tensor *out) {
    int L = dp_model_num_layers(m);
    size_t cap = 160 * (size_t)(L + 2) + 256;
    char *desc = malloc(cap);
    int(*osh)[3] = malloc(sizeof(int[3]) * (size_t)(L + 1));
    if (!desc || !osh) {
        free(desc);
        free(osh);
        return dp_fail(DP_ERR_NOMEM, "model tensors: out of memory");
    }
    dp_model_describe(m, desc, cap);
    const char *p = desc;
    dp_status st = DP_OK;
    if (sscanf(p, "input %dx%dx%d", &osh[0][0], &osh[0][1], &osh[0][2]) != 3) st = DP_ERR_INVALID;
    for (int i = 0; i < L && st == DP_OK; i++) {
        p = strchr(p, '\n');
        const char *arrow = p ? strstr(p, "-> ") : NULL;
        if (!arrow || sscanf(arrow, "-> %dx%dx%d", &osh[i + 1][0], &osh[i + 1][1], &osh[i + 1][2]) != 3)
            st = DP_ERR_INVALID;
        else
            p++;
    }
    free(desc);
    if (st != DP_OK) {
        free(osh);
        return dp_fail(DP_ERR_INVALID, "model tensors: cannot read the layer shapes");
    }
    int nt = dp_model_num_tensors(m);
    for (int t = 0; t < nt; t++) {
        const char *name;
        float *data;
        size_t count;
        dp_model_tensor(m, t, &name, &data, &count);
        int li = atoi(name);
        const char *dot = strchr(name, '.');
        dp_st_tensor *o = &out[t];
        o->name = name;
        o->dtype = DP_ST_F32;
        o->data = data;
        int64_t outc = osh[li + 1][0], inc = osh[li][0];
        int64_t in_all = (int64_t)osh[li][0] * osh[li][1] * osh[li][2];
        if (dot && !strcmp(dot, ".bias")) {
            o->ndim = 1;
            o->shape[0] = (int64_t)count;
        } else if (dp_model_layer_kind(m, li) == DP_LAYER_LINEAR && (int64_t)count == outc * in_all) {
            o->ndim = 2;
            o->shape[0] = outc;
            o->shape[1] = in_all;
        } else if (dp_model_layer_kind(m, li) == DP_LAYER_CONV2D && outc * inc > 0 &&
                   (int64_t)count % (outc * inc) == 0) {
            int64_t kk = (int64_t)count / (outc * inc), k = 1;
            while (k * k < kk) k++;
            o->ndim = 4;
            o->shape[0] = outc;
            o->shape[1] = inc;
            o->shape[2] = o->shape[3] = k;
            if (k * k != kk) {
                o->ndim = 1;
                o->shape[0] = (int64_t)count;
            }
        } else {
            o->ndim = 1;
            o->shape[0] = (int64_t)count;
        }
    }
    free(osh);
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
