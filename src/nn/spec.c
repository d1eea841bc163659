/* nn/spec.c: the model spec parser ("conv2d(16,8,s2,p2) tanh ... linear(10)", grammar in
 * include/dpsgd/nn.h) and the built-in model names. A layer's own arguments are read by its
 * row of the layer table (nn/layers/). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h"

static dp_status next_token(const char **sp, dp__spec_token *t, int idx) {
    const char *s = *sp;
    memset(t, 0, sizeof *t);
    size_t n = 0;
    while (*s && (isalnum((unsigned char)*s) || *s == '_')) {
        if (n + 1 >= sizeof t->name) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: name too long", idx);
        t->name[n++] = (char)tolower((unsigned char)*s++);
    }
    if (n == 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: expected a layer name at '%.20s'", idx, s);
    if (*s == '(') {
        s++;
        for (int comma = 0;;) { /* comma: the last thing read was a ',' */
            while (*s == ' ') s++;
            if (*s == ')') {
                if (comma) /* "linear(10,)" */
                    return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): empty argument after ','", idx, t->name);
                s++;
                break;
            }
            if (t->nargs == 8) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): too many arguments", idx, t->name);
            size_t a = 0;
            while (*s && *s != ',' && *s != ')' && *s != ' ') {
                if (a + 1 >= sizeof t->args[0])
                    return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): argument too long", idx, t->name);
                t->args[t->nargs][a++] = *s++;
            }
            while (*s == ' ') s++;
            if (a == 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): empty argument", idx, t->name);
            t->nargs++;
            comma = *s == ',';
            if (comma) s++;
            else if (*s != ')')
                return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): missing ')'", idx, t->name);
        }
    }
    if (*s == '@') {
        s++;
        size_t a = 0;
        while (*s && (isalnum((unsigned char)*s) || *s == '_' || *s == '.')) {
            if (a + 1 >= sizeof t->label) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): name too long", idx, t->name);
            t->label[a++] = *s++;
        }
        if (a == 0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): empty name after '@'", idx, t->name);
    }
    if (*s && !isspace((unsigned char)*s))
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): unexpected '%c'", idx, t->name, *s);
    while (isspace((unsigned char)*s)) s++;
    *sp = s;
    return DP_OK;
}

int dp__parse_int(const char *a, long lo, long hi, long *v) {
    char *end;
    long x = strtol(a, &end, 10);
    if (end == a || *end || x < lo || x > hi) return 0;
    *v = x;
    return 1;
}

int dp__parse_real(const char *a, double lo, double hi, double *v) {
    char *end;
    double x = strtod(a, &end);
    if (end == a || *end || !(x >= lo && x <= hi)) return 0;
    *v = x;
    return 1;
}


/* Kind-specific fields of a spec layer on the current node: the input checks every kind
 * shares, then the kind's own arguments. */
static dp_status spec_layer(dp_model *m, dp__node *l, const dp__spec_token *t, int idx) {
    const dp__layer_ops *ops = dp__ops(l);
    if (ops->flags & DP__LF_BUILT)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s joins several inputs and exists only in built models "
                       "(--model transformer)", idx, t->name);
    if ((ops->flags & DP__LF_IMAGE) && l->iseq)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s needs an image input (C x H x W), not a sequence", idx, t->name);
    if ((ops->flags & DP__LF_SEQ) && !l->iseq)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s needs a sequence input (after embedding)", idx, t->name);
    if (ops->parse) return ops->parse(m, l, t, idx);
    if (t->nargs) return dp_fail(DP_ERR_INVALID, "model spec: layer %d: %s takes no arguments", idx, t->name);
    return DP_OK;
}

/* A layer's sizes must fit, as the ONNX importer requires of its nodes: an output of 1 to
 * 2^31 - 1 values (flatten keeps the count in an int, as the engine's kernels do), as many
 * weights as their shape's product, and the model's parameter count (np0 before the layer),
 * each computed without wrapping around. */
static dp_status check_sizes(const dp_model *m, const dp__node *l, int idx, const char *name, size_t np0) {
    if (l->oc < 1 || l->oh < 1 || l->ow < 1 || l->out_size > INT32_MAX)
        return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): its output is empty or above 2^31 - 1 values", idx, name);
    const dp__layer_ops *ops = dp__ops(l);
    if (ops->weight_shape) {
        int64_t sh[4];
        int nd = ops->weight_shape(l, sh), over = 0;
        uint64_t n = 1;
        for (int d = 0; d < nd; d++) over |= sh[d] < 0 || __builtin_mul_overflow(n, (uint64_t)sh[d], &n);
        if (over || n != l->nw)
            return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): its weight count overflows", idx, name);
    }
    if (m->np < np0) return dp_fail(DP_ERR_INVALID, "model spec: layer %d (%s): the parameter count overflows", idx, name);
    return DP_OK;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Two layers' parameters under one name (the same "@name" twice, or "@3" and layer 3) would
 * be written to weights and checkpoints as one tensor twice, which no reader accepts. */
static dp_status check_names(const dp_model *m) {
    const char **v = dp_alloc(sizeof *v * (size_t)m->ntensors);
    if (!v) return DP_ERR_NOMEM;
    for (int t = 0; t < m->ntensors; t++) v[t] = m->tnames[t];
    qsort(v, (size_t)m->ntensors, sizeof *v, name_cmp);
    dp_status st = DP_OK;
    for (int k = 1; k < m->ntensors && st == DP_OK; k++)
        if (strcmp(v[k - 1], v[k]) == 0) {
            int a = m->tnode[(const char(*)[DP__NAME_LEN + 8])v[k - 1] - m->tnames];
            int b = m->tnode[(const char(*)[DP__NAME_LEN + 8])v[k] - m->tnames];
            st = dp_fail(DP_ERR_INVALID, "model spec: layers %d and %d: both have a parameter named '%s' (module names "
                         "must differ from each other and from the layer indices)", a < b ? a : b, a < b ? b : a, v[k]);
        }
    dp_free(v);
    return st;
}

dp_status dp_model_create(const char *spec, int c, int h, int w, dp_model **out) {
    if (!spec) return dp_fail(DP_ERR_INVALID, "model spec: empty");
    if (c < 1 || h < 1 || w < 1) return dp_fail(DP_ERR_INVALID, "model: input shape %dx%dx%d is not positive", c, h, w);
    if ((uint64_t)c * (uint64_t)h > INT32_MAX || (uint64_t)c * (uint64_t)h * (uint64_t)w > INT32_MAX)
        return dp_fail(DP_ERR_INVALID, "model: input shape %dx%dx%d is above 2^31 - 1 values", c, h, w);
    dp_model *m = dp__model_new(c, h, w);
    if (!m) return DP_ERR_NOMEM;
    dp_status st = DP_OK;
    const char *s = spec;
    while (isspace((unsigned char)*s)) s++;
    while (*s) {
        dp__spec_token t;
        if ((st = next_token(&s, &t, m->n)) != DP_OK) goto fail;
        int kind = -1;
        for (int k = 0; k < DP_LAYER_COUNT; k++)
            if (strcmp(t.name, dp_layer_kind_name((dp_layer_kind)k)) == 0) kind = k;
        if (kind < 0) {
            char known[256] = "";
            for (int k = 0; k < DP_LAYER_COUNT; k++)
                if (!(dp__layer_ops_table[k]->flags & DP__LF_BUILT))
                    snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", *known ? " " : "",
                             dp_layer_kind_name((dp_layer_kind)k));
            st = dp_fail(DP_ERR_INVALID, "model spec: layer %d: unknown layer '%s' (known: %s)", m->n, t.name, known);
            goto fail;
        }
        int idx = m->n;
        dp__node *l = dp__push_node(m, (dp_layer_kind)kind, idx - 1);
        if (!l) {
            st = DP_ERR_NOMEM;
            goto fail;
        }
        if ((st = spec_layer(m, l, &t, idx)) != DP_OK) goto fail;
        const size_t np0 = m->np;
        dp__finish_node(m, l, idx, t.label[0] ? t.label : NULL);
        if ((st = check_sizes(m, l, idx, t.name, np0)) != DP_OK) goto fail;
    }
    if ((st = dp__finish_model(m)) != DP_OK || (st = check_names(m)) != DP_OK) goto fail;
    *out = m;
    return DP_OK;
fail:
    dp_model_destroy(m);
    return st;
}

#define CNN_SPEC                                                                                  \
    "conv2d(16,8,s2,p2) tanh maxpool(2,1) conv2d(32,4,s2) tanh maxpool(2,1) flatten linear(32) tanh " \
    "linear(%d)"

const char *dp_model_builtin_spec(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, "cnn") == 0) return CNN_SPEC;
    if (strcmp(name, "mlp") == 0) return "flatten linear(128) relu linear(%d)";
    return NULL;
}

dp_status dp_model_create_named(const char *name_or_spec, int c, int h, int w, int n_classes, dp_model **out) {
    const char *fmt = dp_model_builtin_spec(name_or_spec);
    if (!fmt) return dp_model_create(name_or_spec, c, h, w, out);
    if (n_classes < 1) return dp_fail(DP_ERR_INVALID, "model %s: number of classes %d must be >= 1", name_or_spec, n_classes);
    char spec[256];
    snprintf(spec, sizeof spec, fmt, n_classes);
    return dp_model_create(spec, c, h, w, out);
}
