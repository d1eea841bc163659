/* onnx_write.c: the ONNX file layer's writer (src/io/onnx_impl.h): a model written back
 * with some float initializers replaced and external data folded in, atomically. */
#define _XOPEN_SOURCE 700
#include "io/onnx_impl.h"

/* ---- writing back ------------------------------------------------------------------------ */

/* a tensor whose data was swapped for the writer, and what to put back before protobuf-c frees
 * the message (the whole struct as decoded: the swap changes only its data fields) */
typedef struct {
    Onnx__TensorProto *t;
    unsigned char *buf; /* ours (malloc) */
    Onnx__TensorProto saved;
} swap;

typedef struct {
    swap *v;
    size_t n, cap;
    const ctx *c;
    dp_status st;
} swaps;

static int swap_add(swaps *s, Onnx__TensorProto *t, unsigned char *buf, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        swap *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    swap *w = &s->v[s->n++];
    w->t = t;
    w->buf = buf;
    w->saved = *t;
    t->has_raw_data = 1;
    t->raw_data.data = buf;
    t->raw_data.len = len;
    t->has_data_location = 0;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
    t->n_external_data = 0;
    t->n_float_data = 0;
    return 0;
}

static void swaps_undo(swaps *s) {
    for (size_t k = s->n; k-- > 0;) {
        swap *w = &s->v[k];
        *w->t = w->saved;
        free(w->buf);
    }
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static int is_swapped(const swaps *s, const Onnx__TensorProto *t) {
    for (size_t k = 0; k < s->n; k++)
        if (s->v[k].t == t) return 1;
    return 0;
}

/* fold one tensor's external data in as raw_data */
static void fold_tensor(swaps *s, Onnx__TensorProto *t, const char *where) {
    if (s->st != DP_OK || !t) return;
    if (!(t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)) return;
    if (is_swapped(s, t)) return;
    char w[320];
    snprintf(w, sizeof w, "%s '%s'", where, t->name ? t->name : "");
    size_t count, esz = dp__onnx_raw_size(t->has_data_type ? t->data_type : 0);
    if (esz == 0) {
        s->st = FAILF(DP_ERR_UNSUPPORTED, s->c, w, "external data of elem type %s cannot be folded in",
                      dp__onnx_type_name(t->has_data_type ? t->data_type : 0));
        return;
    }
    if ((s->st = dp__onnx_dims_count(s->c, w, t->n_dims, t->dims, &count)) != DP_OK) return;
    unsigned char *buf;
    if ((s->st = dp__onnx_read_external(s->c, w, t, count * esz, &buf)) != DP_OK) return;
    if (swap_add(s, t, buf, count * esz) != 0) {
        free(buf);
        s->st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", s->c->label);
    }
}

static void fold_graph(swaps *s, Onnx__GraphProto *g, int depth);
static void fold_sparse(swaps *s, Onnx__SparseTensorProto *sp, const char *where) {
    if (!sp) return;
    fold_tensor(s, sp->values, where);
    fold_tensor(s, sp->indices, where);
}
static void fold_nodes(swaps *s, size_t n, Onnx__NodeProto **nodes, int depth) {
    for (size_t k = 0; k < n && s->st == DP_OK; k++) {
        Onnx__NodeProto *nd = nodes[k];
        for (size_t j = 0; j < nd->n_attribute && s->st == DP_OK; j++) {
            Onnx__AttributeProto *a = nd->attribute[j];
            fold_tensor(s, a->t, "attribute tensor");
            for (size_t i = 0; i < a->n_tensors; i++) fold_tensor(s, a->tensors[i], "attribute tensor");
            fold_sparse(s, a->sparse_tensor, "attribute sparse tensor");
            for (size_t i = 0; i < a->n_sparse_tensors; i++)
                fold_sparse(s, a->sparse_tensors[i], "attribute sparse tensor");
            fold_graph(s, a->g, depth + 1);
            for (size_t i = 0; i < a->n_graphs; i++) fold_graph(s, a->graphs[i], depth + 1);
        }
    }
}
static void fold_graph(swaps *s, Onnx__GraphProto *g, int depth) {
    if (!g || s->st != DP_OK) return;
    if (depth > DP__ONNX_MAX_DEPTH) { /* cannot happen after the wire scan; kept as a guard */
        s->st = dp_fail(DP_ERR_FORMAT, "%s: subgraphs nested too deep", s->c->label);
        return;
    }
    for (size_t k = 0; k < g->n_initializer; k++) fold_tensor(s, g->initializer[k], "initializer");
    for (size_t k = 0; k < g->n_sparse_initializer; k++) fold_sparse(s, g->sparse_initializer[k], "sparse initializer");
    fold_nodes(s, g->n_node, g->node, depth);
}

dp_status dp__onnx_save_initializers(const char *in_model, const char *out_model, int n,
                                     const dp__onnx_replacement *repl) {
    if (!in_model || !out_model) return dp_fail(DP_ERR_INVALID, "dp__onnx_save_initializers: a path is NULL");
    if (n < 0 || (n > 0 && !repl))
        return dp_fail(DP_ERR_INVALID, "%s: dp__onnx_save_initializers: bad replacement list", out_model);
    unsigned char *file;
    size_t len;
    char *dir;
    dp_status st = dp__onnx_read_file(in_model, &file, &len, &dir);
    if (st != DP_OK) return st;
    /* the whole model is checked first, as the loader checks it */
    dp__onnx_model *ir = NULL;
    if ((st = dp__onnx_parse(file, len, in_model, dir, &ir)) != DP_OK) {
        free(dir);
        free(file);
        return st;
    }
    for (int k = 0; k < n; k++) {
        const char *name = repl[k].name;
        const dp__onnx_tensor *t = name ? dp__onnx_find_initializer(ir, name) : NULL;
        if (!name)
            st = dp_fail(DP_ERR_INVALID, "%s: replacement %d has no name", out_model, k);
        else if (!t)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': %s has no initializer of that name", out_model, name,
                         in_model);
        else if (t->elem_type != DP__ONNX_FLOAT)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': the initializer is %s, not FLOAT", out_model, name,
                         dp__onnx_type_name(t->elem_type));
        else if (repl[k].count != t->count)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': %zu values given, its dims hold %zu", out_model,
                         name, repl[k].count, t->count);
        else if (t->count && !repl[k].data)
            st = dp_fail(DP_ERR_INVALID, "%s: cannot replace '%s': data is NULL", out_model, name);
        for (int j = 0; j < k && st == DP_OK; j++)
            if (!strcmp(repl[j].name, name))
                st = dp_fail(DP_ERR_INVALID, "%s: '%s' is replaced twice", out_model, name);
        if (st != DP_OK) break;
    }
    dp__onnx_free(ir);
    if (st != DP_OK) {
        free(dir);
        free(file);
        return st;
    }

    pb_budget b;
    ProtobufCAllocator al;
    ProtobufCMessage *msg;
    if ((st = dp__onnx_pb_unpack(&onnx__model_proto__descriptor, file, len, in_model, &b, &al, &msg)) != DP_OK) {
        free(dir);
        free(file);
        return st;
    }
    free(file);
    Onnx__ModelProto *mp = (Onnx__ModelProto *)msg;
    arena scratch = {0};
    ctx c = {in_model, dir, &scratch};
    swaps s = {NULL, 0, 0, &c, DP_OK};
    unsigned char *out = NULL;
    size_t out_len = 0;
    for (int k = 0; k < n && s.st == DP_OK; k++) {
        Onnx__TensorProto *t = NULL;
        for (size_t j = 0; j < mp->graph->n_initializer && !t; j++)
            if (mp->graph->initializer[j]->name && !strcmp(mp->graph->initializer[j]->name, repl[k].name))
                t = mp->graph->initializer[j];
        DP_ASSERT(t); /* checked above on the same bytes */
        size_t bytes = repl[k].count * 4;
        unsigned char *buf = malloc(bytes ? bytes : 1);
        if (!buf) {
            s.st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", out_model);
            break;
        }
        for (size_t i = 0; i < repl[k].count; i++) {
            uint32_t u;
            memcpy(&u, &repl[k].data[i], 4);
            for (int bb = 0; bb < 4; bb++) buf[4 * i + (size_t)bb] = (unsigned char)(u >> (8 * bb));
        }
        if (swap_add(&s, t, buf, bytes) != 0) {
            free(buf);
            s.st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", out_model);
        }
    }
    fold_graph(&s, mp->graph, 0);
    for (size_t k = 0; k < mp->n_training_info && s.st == DP_OK; k++) {
        fold_graph(&s, mp->training_info[k]->initialization, 1);
        fold_graph(&s, mp->training_info[k]->algorithm, 1);
    }
    for (size_t k = 0; k < mp->n_functions && s.st == DP_OK; k++)
        fold_nodes(&s, mp->functions[k]->n_node, mp->functions[k]->node, 1);
    st = s.st;
    if (st == DP_OK) {
        out_len = protobuf_c_message_get_packed_size(msg);
        if (out_len > DP__ONNX_MAX_FILE_BYTES)
            st = dp_fail(DP_ERR_RANGE,
                         "%s: the model with its weights folded in would have %zu bytes, more than the %zu a "
                         "protobuf message may have",
                         out_model, out_len, DP__ONNX_MAX_FILE_BYTES);
        else if (!(out = malloc(out_len ? out_len : 1)))
            st = dp_fail(DP_ERR_NOMEM, "%s: out of memory (%zu bytes)", out_model, out_len);
        else if (protobuf_c_message_pack(msg, out) != out_len)
            st = dp_fail(DP_ERR_IO, "%s: protobuf-c packed a different size than it announced", out_model);
    }
    swaps_undo(&s);
    protobuf_c_message_free_unpacked(msg, &al);
    dp__onnx_ar_free(&scratch);
    free(dir);
    if (st == DP_OK) st = dp__write_file_atomic(out_model, out, out_len);
    free(out);
    return st;
}

