/* onnx.c: the ONNX file layer (src/io/onnx.h): element types, the model's memory, reading the
 * file, and the conversion of the decoded message into the plain-C graph of onnx.h (values,
 * attributes, nodes, the model, lookups) and of standalone TensorProto files. Its companions
 * (src/io/onnx_impl.h): onnx_wire.c checks the wire format's nesting depth first (protobuf-c
 * recurses once per nested message and has no limit of its own: a 40 KB file of nested types
 * overflows an 8 MB stack) and bounds the memory protobuf-c may take; onnx_tensor.c converts
 * tensors, checking every size with overflow-safe arithmetic, and reads external data next to
 * the model; onnx_write.c writes a model back with some initializers replaced. docs/onnx.md
 * "Reading the file". */
#define _XOPEN_SOURCE 700 /* realpath */
#include "io/onnx_impl.h"

/* ---- element types ----------------------------------------------------------------------- */

static const char *const type_names[] = {"UNDEFINED", "FLOAT",  "UINT8",     "INT8",       "UINT16",  "INT16",
                                         "INT32",     "INT64",  "STRING",    "BOOL",       "FLOAT16", "DOUBLE",
                                         "UINT32",    "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"};
enum { N_TYPE_NAMES = (int)(sizeof type_names / sizeof type_names[0]) };

const char *dp__onnx_type_name(int t) {
    static _Thread_local char buf[32];
    if (t >= 0 && t < N_TYPE_NAMES) return type_names[t];
    snprintf(buf, sizeof buf, "type %d", t);
    return buf;
}

int dp__onnx_type_class(int t) {
    switch (t) {
    case DP__ONNX_FLOAT:
    case DP__ONNX_DOUBLE:
    case DP__ONNX_FLOAT16:
    case DP__ONNX_BFLOAT16:
        return 1;
    case DP__ONNX_UINT8:
    case DP__ONNX_INT8:
    case DP__ONNX_UINT16:
    case DP__ONNX_INT16:
    case DP__ONNX_INT32:
    case DP__ONNX_INT64:
    case DP__ONNX_BOOL:
    case DP__ONNX_UINT32:
    case DP__ONNX_UINT64:
        return 2;
    case DP__ONNX_STRING:
        return 3;
    default:
        return 0;
    }
}

/* bytes per element in raw_data (0: cannot be raw) */
size_t dp__onnx_raw_size(int t) {
    switch (t) {
    case DP__ONNX_UINT8:
    case DP__ONNX_INT8:
    case DP__ONNX_BOOL:
        return 1;
    case DP__ONNX_UINT16:
    case DP__ONNX_INT16:
    case DP__ONNX_FLOAT16:
    case DP__ONNX_BFLOAT16:
        return 2;
    case DP__ONNX_FLOAT:
    case DP__ONNX_INT32:
    case DP__ONNX_UINT32:
        return 4;
    case DP__ONNX_INT64:
    case DP__ONNX_DOUBLE:
    case DP__ONNX_UINT64:
        return 8;
    default:
        return 0;
    }
}

static const char *const attr_type_names[] = {
    "UNDEFINED", "FLOAT",   "INT",    "STRING",        "TENSOR",         "GRAPH",      "FLOATS",     "INTS",
    "STRINGS",   "TENSORS", "GRAPHS", "SPARSE_TENSOR", "SPARSE_TENSORS", "TYPE_PROTO", "TYPE_PROTOS"};
enum { N_ATTR_TYPE_NAMES = (int)(sizeof attr_type_names / sizeof attr_type_names[0]) };

const char *dp__onnx_attr_type_name(int t) {
    static _Thread_local char buf[32];
    if (t >= 0 && t < N_ATTR_TYPE_NAMES) return attr_type_names[t];
    snprintf(buf, sizeof buf, "type %d", t);
    return buf;
}


/* ---- the model's memory: an arena of dp_alloc blocks ------------------------------------- */

enum { ARENA_CHUNK = 64 * 1024, ARENA_LARGE = 8 * 1024 };

static blk *blk_new(size_t cap) {
    if (cap > SIZE_MAX - sizeof(blk)) return NULL;
    blk *b = dp_alloc(sizeof(blk) + cap);
    if (b) {
        b->next = NULL;
        b->used = 0;
        b->cap = cap;
    }
    return b;
}

/* n bytes aligned to 16; NULL when out of memory (the message is set) */
void *dp__onnx_ar_alloc(arena *a, size_t n) {
    if (n == 0) n = 1;
    if (n > ARENA_LARGE) {
        blk *b = blk_new(n);
        if (!b) return NULL;
        b->next = a->large;
        a->large = b;
        b->used = n;
        return b->data;
    }
    size_t need = (n + 15) & ~(size_t)15;
    if (!a->cur || a->cur->cap - a->cur->used < need) {
        blk *b = blk_new(ARENA_CHUNK);
        if (!b) return NULL;
        b->next = a->cur;
        a->cur = b;
    }
    void *p = a->cur->data + a->cur->used;
    a->cur->used += need;
    return p;
}

void *dp__onnx_ar_array(arena *a, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) {
        dp_fail(DP_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    return dp__onnx_ar_alloc(a, count * size);
}

void dp__onnx_ar_free(arena *a) {
    for (blk *lists[2] = {a->cur, a->large}, **l = lists; l < lists + 2; l++) {
        for (blk *b = *l; b;) {
            blk *next = b->next;
            dp_free(b);
            b = next;
        }
    }
    a->cur = a->large = NULL;
}

/* a NUL-terminated copy of n bytes */
char *dp__onnx_ar_strndup(arena *a, const void *s, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *p = dp__onnx_ar_alloc(a, n + 1);
    if (p) {
        if (n) memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}
char *dp__onnx_ar_strdup(arena *a, const char *s) { return dp__onnx_ar_strndup(a, s ? s : "", s ? strlen(s) : 0); }


/* ---- reading whole files ----------------------------------------------------------------- */

/* the .onnx (or .pb) file path in a malloc'd buffer, at most DP__ONNX_MAX_FILE_BYTES; dir
 * (may be NULL): the directory holding it (malloc'd), where its external data lies */
dp_status dp__onnx_read_file(const char *path, unsigned char **out, size_t *len, char **dir) {
    void *buf = NULL;
    dp_status st = dp__read_file(path, DP__ONNX_MAX_FILE_BYTES, &buf, len);
    *out = buf;
    if (st == DP_ERR_RANGE)
        return dp_fail(DP_ERR_RANGE,
                       "%s: the file has %zu bytes, more than the %zu a protobuf message may have "
                       "(keep the weights in external data files: onnx.save_model(..., "
                       "save_as_external_data=True))",
                       path, *len, DP__ONNX_MAX_FILE_BYTES);
    if (st != DP_OK || !dir) return st;
    if (!(*dir = dp__dir_of(path))) {
        free(buf);
        *out = NULL;
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    }
    return DP_OK;
}


static dp_status conv_value(const ctx *c, const char *kind, size_t idx, const Onnx__ValueInfoProto *v,
                            dp__onnx_value *o) {
    char where[320];
    memset(o, 0, sizeof *o);
    o->ndim = -1;
    if (!v->name || !*v->name) {
        snprintf(where, sizeof where, "%s %zu", kind, idx);
        return FAILF(DP_ERR_FORMAT, c, where, "no name");
    }
    snprintf(where, sizeof where, "%s '%s'", kind, v->name);
    if (!(o->name = dp__onnx_ar_strdup(c->ar, v->name))) return dp__onnx_oom(c, where);
    const Onnx__TypeProto *tp = v->type;
    if (!tp) return DP_OK;
    const Onnx__TensorShapeProto *shape = NULL;
    switch (tp->value_case) {
    case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
        o->kind = DP__ONNX_VALUE_TENSOR;
        if (tp->tensor_type) {
            o->elem_type = tp->tensor_type->has_elem_type ? tp->tensor_type->elem_type : 0;
            shape = tp->tensor_type->shape;
        }
        break;
    case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
        o->kind = DP__ONNX_VALUE_SPARSE_TENSOR;
        if (tp->sparse_tensor_type) {
            o->elem_type = tp->sparse_tensor_type->has_elem_type ? tp->sparse_tensor_type->elem_type : 0;
            shape = tp->sparse_tensor_type->shape;
        }
        break;
    case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
        o->kind = DP__ONNX_VALUE_SEQUENCE;
        return DP_OK;
    case ONNX__TYPE_PROTO__VALUE_MAP_TYPE:
        o->kind = DP__ONNX_VALUE_MAP;
        return DP_OK;
    case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
        o->kind = DP__ONNX_VALUE_OPTIONAL;
        return DP_OK;
    default:
        return DP_OK;
    }
    if (!shape) return DP_OK;
    if (shape->n_dim > DP__ONNX_MAX_DIMS)
        return FAILF(DP_ERR_UNSUPPORTED, c, where, "%zu dims, more than %d", shape->n_dim, DP__ONNX_MAX_DIMS);
    int64_t *dims = dp__onnx_ar_array(c->ar, shape->n_dim, sizeof *dims);
    const char **dp = dp__onnx_ar_array(c->ar, shape->n_dim, sizeof *dp);
    if (!dims || !dp) return dp__onnx_oom(c, where);
    for (size_t d = 0; d < shape->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = shape->dim[d];
        dims[d] = -1;
        dp[d] = "";
        if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (dim->dim_value < 0)
                return FAILF(DP_ERR_FORMAT, c, where, "dim %zu has dim_value %" PRId64 " (negative)", d,
                             dim->dim_value);
            dims[d] = dim->dim_value;
        } else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM) {
            if (!(dp[d] = dp__onnx_ar_strdup(c->ar, dim->dim_param))) return dp__onnx_oom(c, where);
        }
    }
    o->ndim = (int)shape->n_dim;
    o->dims = dims;
    o->dim_param = dp;
    return DP_OK;
}

static dp_status conv_attr(const ctx *c, const char *nwhere, const Onnx__AttributeProto *at, dp__onnx_attr *o) {
    char where[480];
    memset(o, 0, sizeof *o);
    arena *a = c->ar;
    if (!at->name || !*at->name) {
        snprintf(where, sizeof where, "%s: an attribute", nwhere);
        return FAILF(DP_ERR_FORMAT, c, where, "no name");
    }
    snprintf(where, sizeof where, "%s: attribute '%s'", nwhere, at->name);
    if (!(o->name = dp__onnx_ar_strdup(a, at->name))) return dp__onnx_oom(c, where);
    int type = at->has_type ? (int)at->type : 0;
    if (type == DP__ONNX_ATTR_UNDEFINED) return FAILF(DP_ERR_FORMAT, c, where, "no type (UNDEFINED)");
    if (type < 0 || type >= N_ATTR_TYPE_NAMES) return FAILF(DP_ERR_FORMAT, c, where, "unknown type %d", type);
    o->type = type;
    switch (type) {
    case DP__ONNX_ATTR_FLOAT:
        o->f = at->f;
        break;
    case DP__ONNX_ATTR_INT:
        o->i = at->i;
        break;
    case DP__ONNX_ATTR_STRING:
        if (!(o->s = dp__onnx_ar_strndup(a, at->s.data, at->has_s ? at->s.len : 0))) return dp__onnx_oom(c, where);
        o->s_len = at->has_s ? at->s.len : 0;
        break;
    case DP__ONNX_ATTR_TENSOR: {
        if (!at->t) return FAILF(DP_ERR_FORMAT, c, where, "type TENSOR but no tensor 't'");
        dp__onnx_tensor *t = dp__onnx_ar_alloc(a, sizeof *t);
        if (!t) return dp__onnx_oom(c, where);
        dp_status st = dp__onnx_conv_tensor(c, where, at->t, t);
        if (st != DP_OK) return st;
        o->t = t;
        break;
    }
    case DP__ONNX_ATTR_FLOATS: {
        float *v = dp__onnx_ar_array(a, at->n_floats, sizeof *v);
        if (!v) return dp__onnx_oom(c, where);
        if (at->n_floats) memcpy(v, at->floats, at->n_floats * sizeof *v);
        o->floats = v;
        o->n = at->n_floats;
        break;
    }
    case DP__ONNX_ATTR_INTS: {
        int64_t *v = dp__onnx_ar_array(a, at->n_ints, sizeof *v);
        if (!v) return dp__onnx_oom(c, where);
        if (at->n_ints) memcpy(v, at->ints, at->n_ints * sizeof *v);
        o->ints = v;
        o->n = at->n_ints;
        break;
    }
    case DP__ONNX_ATTR_STRINGS: {
        char **v = dp__onnx_ar_array(a, at->n_strings, sizeof *v);
        size_t *vl = dp__onnx_ar_array(a, at->n_strings, sizeof *vl);
        if (!v || !vl) return dp__onnx_oom(c, where);
        for (size_t k = 0; k < at->n_strings; k++) {
            if (!(v[k] = dp__onnx_ar_strndup(a, at->strings[k].data, at->strings[k].len))) return dp__onnx_oom(c, where);
            vl[k] = at->strings[k].len;
        }
        o->strings = (const char *const *)v;
        o->strings_len = vl;
        o->n = at->n_strings;
        break;
    }
    default:
        break; /* kept as name and type only */
    }
    return DP_OK;
}

static dp_status conv_names(const ctx *c, const char *where, size_t n, char **in, const char *const **out) {
    const char **v = dp__onnx_ar_array(c->ar, n, sizeof *v);
    if (!v) return dp__onnx_oom(c, where);
    for (size_t k = 0; k < n; k++)
        if (!(v[k] = dp__onnx_ar_strdup(c->ar, in[k]))) return dp__onnx_oom(c, where);
    *out = v;
    return DP_OK;
}

static dp_status conv_node(const ctx *c, size_t idx, const Onnx__NodeProto *n, dp__onnx_node *o) {
    char where[320];
    memset(o, 0, sizeof *o);
    const char *op = n->op_type ? n->op_type : "";
    if (n->name && *n->name)
        snprintf(where, sizeof where, "node %zu '%s' (%s)", idx, n->name, op);
    else
        snprintf(where, sizeof where, "node %zu (%s)", idx, op);
    if (!*op) return FAILF(DP_ERR_FORMAT, c, where, "no op_type");
    if (n->n_input > INT_MAX || n->n_output > INT_MAX || n->n_attribute > INT_MAX)
        return FAILF(DP_ERR_RANGE, c, where, "too many inputs, outputs or attributes");
    if (!(o->name = dp__onnx_ar_strdup(c->ar, n->name)) || !(o->op_type = dp__onnx_ar_strdup(c->ar, op)) ||
        !(o->domain = dp__onnx_ar_strdup(c->ar, n->domain)))
        return dp__onnx_oom(c, where);
    dp_status st;
    if ((st = conv_names(c, where, n->n_input, n->input, &o->inputs)) != DP_OK) return st;
    if ((st = conv_names(c, where, n->n_output, n->output, &o->outputs)) != DP_OK) return st;
    o->n_inputs = (int)n->n_input;
    o->n_outputs = (int)n->n_output;
    dp__onnx_attr *attrs = dp__onnx_ar_array(c->ar, n->n_attribute, sizeof *attrs);
    if (!attrs) return dp__onnx_oom(c, where);
    for (size_t k = 0; k < n->n_attribute; k++) {
        if ((st = conv_attr(c, where, n->attribute[k], &attrs[k])) != DP_OK) return st;
        for (size_t j = 0; j < k; j++)
            if (!strcmp(attrs[j].name, attrs[k].name))
                return FAILF(DP_ERR_FORMAT, c, where, "attribute '%s' given twice", attrs[k].name);
    }
    o->attrs = attrs;
    o->n_attrs = (int)n->n_attribute;
    return DP_OK;
}

/* ---- the model --------------------------------------------------------------------------- */

typedef struct {
    arena ar;
    const dp__onnx_tensor **by_name; /* the initializers sorted by name, for lookups */
} model_mem;

static int cmp_init(const void *a, const void *b) {
    return strcmp((*(const dp__onnx_tensor *const *)a)->name, (*(const dp__onnx_tensor *const *)b)->name);
}

static dp_status conv_model(const ctx *c, const Onnx__ModelProto *mp, dp__onnx_model *m, model_mem *mm) {
    arena *a = c->ar;
    const Onnx__GraphProto *g = mp->graph;
    if (!g) return dp_fail(DP_ERR_FORMAT, "%s: no graph (not an ONNX model?)", c->label);
    m->ir_version = mp->has_ir_version ? mp->ir_version : 0;
    if (!(m->producer_name = dp__onnx_ar_strdup(a, mp->producer_name)) ||
        !(m->producer_version = dp__onnx_ar_strdup(a, mp->producer_version)) || !(m->graph_name = dp__onnx_ar_strdup(a, g->name)))
        return dp__onnx_oom(c, "model");
    if (mp->n_opset_import > INT_MAX || g->n_input > INT_MAX || g->n_output > INT_MAX || g->n_value_info > INT_MAX ||
        g->n_node > INT_MAX || g->n_initializer > INT_MAX)
        return dp_fail(DP_ERR_RANGE, "%s: too many entries in the graph", c->label);
    dp__onnx_opset *ops = dp__onnx_ar_array(a, mp->n_opset_import, sizeof *ops);
    if (!ops) return dp__onnx_oom(c, "opset_import");
    for (size_t k = 0; k < mp->n_opset_import; k++) {
        const char *d = mp->opset_import[k]->domain;
        if (!(ops[k].domain = dp__onnx_ar_strdup(a, d))) return dp__onnx_oom(c, "opset_import");
        ops[k].version = mp->opset_import[k]->has_version ? mp->opset_import[k]->version : 0;
    }
    m->opsets = ops;
    m->n_opsets = (int)mp->n_opset_import;
    if (g->n_sparse_initializer)
        return dp_fail(DP_ERR_UNSUPPORTED, "%s: graph: %zu sparse initializers (sparse_initializer is not supported)",
                       c->label, g->n_sparse_initializer);

    dp_status st;
    struct {
        const char *kind;
        size_t n;
        Onnx__ValueInfoProto **in;
        const dp__onnx_value **out;
        int *count;
    } vals[3] = {{"graph input", g->n_input, g->input, &m->inputs, &m->n_inputs},
                 {"graph output", g->n_output, g->output, &m->outputs, &m->n_outputs},
                 {"value_info", g->n_value_info, g->value_info, &m->value_info, &m->n_value_info}};
    for (int v = 0; v < 3; v++) {
        dp__onnx_value *arr = dp__onnx_ar_array(a, vals[v].n, sizeof *arr);
        if (!arr) return dp__onnx_oom(c, vals[v].kind);
        for (size_t k = 0; k < vals[v].n; k++)
            if ((st = conv_value(c, vals[v].kind, k, vals[v].in[k], &arr[k])) != DP_OK) return st;
        *vals[v].out = arr;
        *vals[v].count = (int)vals[v].n;
    }

    dp__onnx_node *nodes = dp__onnx_ar_array(a, g->n_node, sizeof *nodes);
    if (!nodes) return dp__onnx_oom(c, "graph");
    for (size_t k = 0; k < g->n_node; k++)
        if ((st = conv_node(c, k, g->node[k], &nodes[k])) != DP_OK) return st;
    m->nodes = nodes;
    m->n_nodes = (int)g->n_node;

    dp__onnx_tensor *inits = dp__onnx_ar_array(a, g->n_initializer, sizeof *inits);
    const dp__onnx_tensor **order = dp__onnx_ar_array(a, g->n_initializer, sizeof *order);
    if (!inits || !order) return dp__onnx_oom(c, "graph");
    for (size_t k = 0; k < g->n_initializer; k++) {
        const Onnx__TensorProto *t = g->initializer[k];
        char where[320];
        if (!t->name || !*t->name) {
            snprintf(where, sizeof where, "initializer %zu", k);
            return FAILF(DP_ERR_FORMAT, c, where, "no name");
        }
        snprintf(where, sizeof where, "initializer '%s'", t->name);
        if ((st = dp__onnx_conv_tensor(c, where, t, &inits[k])) != DP_OK) return st;
        order[k] = &inits[k];
    }
    m->initializers = inits;
    m->n_initializers = (int)g->n_initializer;
    if (g->n_initializer > 1) {
        qsort(order, g->n_initializer, sizeof *order, cmp_init);
        for (size_t k = 1; k < g->n_initializer; k++)
            if (!strcmp(order[k - 1]->name, order[k]->name))
                return dp_fail(DP_ERR_FORMAT, "%s: initializer '%s' is given twice", c->label, order[k]->name);
    }
    mm->by_name = order;
    return DP_OK;
}

dp_status dp__onnx_parse(const void *data, size_t size, const char *label, const char *base_dir, dp__onnx_model **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_parse: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    pb_budget b;
    ProtobufCAllocator al;
    ProtobufCMessage *msg;
    dp_status st = dp__onnx_pb_unpack(&onnx__model_proto__descriptor, data, size, label, &b, &al, &msg);
    if (st != DP_OK) return st;
    arena ar = {0};
    dp__onnx_model *m = NULL;
    model_mem *mm = NULL;
    ctx c = {label, base_dir, &ar};
    char *lab = dp__onnx_ar_strdup(&ar, label);
    if (!lab || !(m = dp__onnx_ar_alloc(&ar, sizeof *m)) || !(mm = dp__onnx_ar_alloc(&ar, sizeof *mm))) {
        st = dp__onnx_oom(&c, "model");
        goto fail;
    }
    memset(m, 0, sizeof *m);
    memset(mm, 0, sizeof *mm);
    m->path = c.label = lab;
    st = conv_model(&c, (const Onnx__ModelProto *)msg, m, mm);
    if (st != DP_OK) goto fail;
    protobuf_c_message_free_unpacked(msg, &al);
    mm->ar = ar; /* the arena's blocks now belong to the model (mm lives in them) */
    m->mem_ = mm;
    *out = m;
    return DP_OK;
fail:
    protobuf_c_message_free_unpacked(msg, &al);
    dp__onnx_ar_free(&ar);
    return st;
}

dp_status dp__onnx_load(const char *path, dp__onnx_model **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_load: out is NULL");
    *out = NULL;
    if (!path) return dp_fail(DP_ERR_INVALID, "dp__onnx_load: path is NULL");
    unsigned char *buf;
    size_t len;
    char *dir;
    dp_status st = dp__onnx_read_file(path, &buf, &len, &dir);
    if (st != DP_OK) return st;
    st = dp__onnx_parse(buf, len, path, dir, out);
    free(dir);
    free(buf);
    return st;
}

void dp__onnx_free(dp__onnx_model *m) {
    if (!m) return;
    model_mem *mm = m->mem_;
    arena ar = mm->ar; /* m and mm live in the arena */
    dp__onnx_ar_free(&ar);
}

const dp__onnx_tensor *dp__onnx_find_initializer(const dp__onnx_model *m, const char *name) {
    if (!m || !name) return NULL;
    const model_mem *mm = m->mem_;
    size_t lo = 0, hi = (size_t)m->n_initializers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dp__onnx_tensor *t = mm->by_name[mid];
        int r = strcmp(name, t->name);
        if (r == 0) return t;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const dp__onnx_attr *dp__onnx_find_attr(const dp__onnx_node *n, const char *name) {
    if (!n || !name) return NULL;
    for (int k = 0; k < n->n_attrs; k++)
        if (!strcmp(n->attrs[k].name, name)) return &n->attrs[k];
    return NULL;
}

int64_t dp__onnx_opset_version(const dp__onnx_model *m, const char *domain) {
    if (!m) return 0;
    if (!domain || !strcmp(domain, "ai.onnx")) domain = "";
    for (int k = 0; k < m->n_opsets; k++) {
        const char *d = m->opsets[k].domain;
        if (!strcmp(d, "ai.onnx")) d = "";
        if (!strcmp(d, domain)) return m->opsets[k].version;
    }
    return 0;
}

/* ---- a standalone TensorProto file ------------------------------------------------------- */

struct dp__onnx_tensor_file {
    arena ar;
    dp__onnx_tensor t;
};

dp_status dp__onnx_parse_tensor(const void *data, size_t size, const char *label, dp__onnx_tensor_file **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_parse_tensor: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    pb_budget b;
    ProtobufCAllocator al;
    ProtobufCMessage *msg;
    dp_status st = dp__onnx_pb_unpack(&onnx__tensor_proto__descriptor, data, size, label, &b, &al, &msg);
    if (st != DP_OK) return st;
    arena ar = {0};
    ctx c = {label, NULL, &ar};
    dp__onnx_tensor_file *tf = dp__onnx_ar_alloc(&ar, sizeof *tf);
    char *lab = dp__onnx_ar_strdup(&ar, label);
    if (!tf || !lab) {
        st = dp__onnx_oom(&c, "tensor");
        goto done;
    }
    c.label = lab;
    const Onnx__TensorProto *t = (const Onnx__TensorProto *)msg;
    char where[320];
    if (t->name && *t->name)
        snprintf(where, sizeof where, "tensor '%s'", t->name);
    else
        snprintf(where, sizeof where, "tensor");
    st = dp__onnx_conv_tensor(&c, where, t, &tf->t);
done:
    protobuf_c_message_free_unpacked(msg, &al);
    if (st != DP_OK) {
        dp__onnx_ar_free(&ar);
        return st;
    }
    tf->ar = ar;
    *out = tf;
    return DP_OK;
}

dp_status dp__onnx_load_tensor(const char *path, dp__onnx_tensor_file **out) {
    if (!out) return dp_fail(DP_ERR_INVALID, "dp__onnx_load_tensor: out is NULL");
    *out = NULL;
    if (!path) return dp_fail(DP_ERR_INVALID, "dp__onnx_load_tensor: path is NULL");
    unsigned char *buf;
    size_t len;
    dp_status st = dp__onnx_read_file(path, &buf, &len, NULL);
    if (st != DP_OK) return st;
    st = dp__onnx_parse_tensor(buf, len, path, out);
    free(buf);
    return st;
}

const dp__onnx_tensor *dp__onnx_tensor_file_get(const dp__onnx_tensor_file *tf) { return tf ? &tf->t : NULL; }

void dp__onnx_tensor_file_free(dp__onnx_tensor_file *tf) {
    if (!tf) return;
    arena ar = tf->ar;
    dp__onnx_ar_free(&ar);
}

