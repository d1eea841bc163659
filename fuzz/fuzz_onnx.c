/* fuzz_onnx.c: libFuzzer target for the ONNX file layer (src/io/onnx.c; scripts/fuzz.sh).
 * The input is read as a ModelProto and as a standalone TensorProto; every part of what loads is
 * touched (reads must stay inside what the reader allocated), the lookups must find every
 * initializer, and a model with a FLOAT initializer is written back with that initializer
 * replaced (dp__onnx_save_initializers) and read again: the write must succeed and the values
 * must come back bit for bit, else the target aborts. */
#include "fuzz_file.h" /* first: it sets _POSIX_C_SOURCE */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "io/onnx.h"

static volatile uint64_t sink;

static void touch_tensor(const dp__onnx_tensor *t) {
    uint64_t h = strlen(t->name) + (uint64_t)t->elem_type;
    for (int d = 0; d < t->ndim; d++) h += (uint64_t)t->dims[d];
    for (size_t k = 0; k < t->count; k++) {
        if (t->f) {
            uint32_t u;
            memcpy(&u, &t->f[k], 4);
            h += u;
        } else if (t->i)
            h += (uint64_t)t->i[k];
        else if (t->s)
            h += t->s_len[k] + (unsigned char)t->s[k][t->s_len[k]]; /* the NUL after the bytes */
    }
    sink += h;
}

static void touch_value(const dp__onnx_value *v) {
    uint64_t h = strlen(v->name) + (uint64_t)v->kind + (uint64_t)v->elem_type;
    for (int d = 0; d < v->ndim; d++) h += (uint64_t)v->dims[d] + strlen(v->dim_param[d]);
    sink += h;
}

static void roundtrip(const uint8_t *data, size_t size, const dp__onnx_model *m) {
    const dp__onnx_tensor *w = NULL;
    for (int k = 0; k < m->n_initializers && !w; k++)
        if (m->initializers[k].elem_type == DP__ONNX_FLOAT) w = &m->initializers[k];
    if (!w) return;
    float *v = malloc(w->count ? w->count * sizeof *v : 1);
    if (!v) abort();
    for (size_t k = 0; k < w->count; k++) v[k] = (float)(k % 1000) * 0.5f - 3.0f;
    const char *in = fuzz_write(".onnx", data, size);
    char out[300];
    snprintf(out, sizeof out, "%s.out", in);
    dp__onnx_replacement r = {w->name, v, w->count};
    if (dp__onnx_save_initializers(in, out, 1, &r) != DP_OK) {
        fprintf(stderr, "fuzz_onnx: a model that loads was not written back: %s\n", dp_last_error());
        abort();
    }
    dp__onnx_model *back = NULL;
    if (dp__onnx_load(out, &back) != DP_OK) {
        fprintf(stderr, "fuzz_onnx: the written model does not load: %s\n", dp_last_error());
        abort();
    }
    const dp__onnx_tensor *b = dp__onnx_find_initializer(back, w->name);
    if (!b || b->elem_type != DP__ONNX_FLOAT || b->count != w->count || b->ndim != w->ndim ||
        (w->count && memcmp(b->f, v, w->count * sizeof *v) != 0) || back->n_nodes != m->n_nodes ||
        back->n_initializers != m->n_initializers || back->n_inputs != m->n_inputs || back->n_outputs != m->n_outputs) {
        fprintf(stderr, "fuzz_onnx: the written model differs\n");
        abort();
    }
    dp__onnx_free(back);
    unlink(out);
    unlink(in);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp__onnx_model *m = NULL;
    if (dp__onnx_parse(data, size, "fuzz", NULL, &m) == DP_OK) {
        for (int k = 0; k < m->n_inputs; k++) touch_value(&m->inputs[k]);
        for (int k = 0; k < m->n_outputs; k++) touch_value(&m->outputs[k]);
        for (int k = 0; k < m->n_value_info; k++) touch_value(&m->value_info[k]);
        for (int k = 0; k < m->n_opsets; k++) sink += strlen(m->opsets[k].domain) + (uint64_t)m->opsets[k].version;
        for (int k = 0; k < m->n_nodes; k++) {
            const dp__onnx_node *n = &m->nodes[k];
            sink += strlen(n->name) + strlen(n->op_type) + strlen(n->domain);
            for (int j = 0; j < n->n_inputs; j++) sink += strlen(n->inputs[j]);
            for (int j = 0; j < n->n_outputs; j++) sink += strlen(n->outputs[j]);
            for (int j = 0; j < n->n_attrs; j++) {
                const dp__onnx_attr *a = &n->attrs[j];
                if (dp__onnx_find_attr(n, a->name) == NULL) abort();
                sink += strlen(a->name) + (uint64_t)a->type + (uint64_t)a->i + a->s_len;
                if (a->s) sink += (unsigned char)a->s[a->s_len];
                for (size_t i = 0; i < a->n; i++) {
                    if (a->ints) sink += (uint64_t)a->ints[i];
                    if (a->floats) sink += (uint64_t)(a->floats[i] == a->floats[i]);
                    if (a->strings) sink += a->strings_len[i] + (unsigned char)a->strings[i][a->strings_len[i]];
                }
                if (a->t) touch_tensor(a->t);
            }
        }
        for (int k = 0; k < m->n_initializers; k++) {
            touch_tensor(&m->initializers[k]);
            if (dp__onnx_find_initializer(m, m->initializers[k].name) != &m->initializers[k]) abort();
        }
        sink += (uint64_t)dp__onnx_opset_version(m, "");
        roundtrip(data, size, m);
    }
    dp__onnx_free(m);
    dp__onnx_tensor_file *tf = NULL;
    if (dp__onnx_parse_tensor(data, size, "fuzz", &tf) == DP_OK) touch_tensor(dp__onnx_tensor_file_get(tf));
    dp__onnx_tensor_file_free(tf);
    return 0;
}
