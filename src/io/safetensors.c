/* safetensors.c: a strict safetensors reader and an atomic writer; model weights in and out
 * with PyTorch names and shapes (see dpsgd/io.h). */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dpsgd/io.h"
#include "core/testhooks.h"
#include "io/file.h"

static const char *const dtype_names[DP_ST_DTYPE_COUNT] = {"F32", "F64", "I64", "I32", "U8"};
static const size_t dtype_sizes[DP_ST_DTYPE_COUNT] = {4, 8, 8, 4, 1};
/* the other dtypes of the format: known, but not read by this library */
static const char *const other_dtypes[] = {"BOOL", "I8",  "U16", "I16",     "F16",
                                           "BF16", "U32", "U64", "F8_E5M2", "F8_E4M3"};

const char *dp_st_dtype_name(dp_st_dtype d) { return (unsigned)d < DP_ST_DTYPE_COUNT ? dtype_names[d] : "?"; }
size_t dp_st_dtype_size(dp_st_dtype d) { return (unsigned)d < DP_ST_DTYPE_COUNT ? dtype_sizes[d] : 0; }

typedef struct {
    char *name;
    dp_st_dtype dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;
    size_t count;
} st_entry;

struct dp_safetensors {
    char *what;
    unsigned char *file; /* whole image */
    size_t len;
    const unsigned char *data; /* data section */
    size_t data_len;
    st_entry *t;
    int nt, capt;
    char **meta; /* key, value pairs */
    int nmeta, capm;
};

/* ---- a strict little JSON reader for the header ---------------------------------------- */

typedef struct {
    const char *p, *end;
    const char *what;
} jr;

static dp_status jfail(const jr *j, const char *fmt, const char *arg) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    return dp_fail(DP_ERR_FORMAT, "%s: header: %s", j->what, msg);
}

static void jws(jr *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int jpeek(jr *j, char c) {
    jws(j);
    return j->p < j->end && *j->p == c;
}

static dp_status jexpect(jr *j, char c, const char *ctx) {
    jws(j);
    if (j->p >= j->end || *j->p != c) {
        char msg[96];
        snprintf(msg, sizeof msg, "expected '%c' %s", c, ctx);
        return jfail(j, "%s", msg);
    }
    j->p++;
    return DP_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A JSON string into a new malloc'd buffer (escapes decoded; \u only for code points < 0x80
 * other than NUL, which is all this library writes). */
static dp_status jstring(jr *j, char **out, const char *ctx) {
    dp_status st;
    if ((st = jexpect(j, '"', ctx)) != DP_OK) return st;
    const char *s = j->p;
    size_t n = 0;
    while (s < j->end && *s != '"') {
        if (*s == '\\') s++;
        if (s < j->end) s++;
        n++;
    }
    if (s >= j->end) return jfail(j, "unterminated string %s", ctx);
    char *b = malloc(n + 1);
    if (!b) return dp_fail(DP_ERR_NOMEM, "%s: header: out of memory", j->what);
    size_t k = 0;
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20) {
            free(b);
            return jfail(j, "control character in a string %s", ctx);
        }
        if (c == '\\') {
            char e = *j->p++;
            switch (e) {
            case '"':
                c = '"';
                break;
            case '\\':
                c = '\\';
                break;
            case '/':
                c = '/';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = j->p < j->end ? hexval(*j->p) : -1;
                    if (h < 0) {
                        free(b);
                        return jfail(j, "bad \\u escape in a string %s", ctx);
                    }
                    v = v * 16 + h;
                    j->p++;
                }
                if (v == 0 || v >= 0x80) {
                    free(b);
                    return jfail(j, "unsupported \\u escape (NUL or non-ASCII) in a string %s", ctx);
                }
                c = (unsigned char)v;
                break;
            }
            default:
                free(b);
                return jfail(j, "bad escape in a string %s", ctx);
            }
        }
        b[k++] = (char)c;
    }
    j->p++;
    b[k] = '\0';
    *out = b;
    return DP_OK;
}

/* A non-negative integer (no sign, no fraction, no leading zeros) up to 2^63-1. */
static dp_status juint(jr *j, uint64_t *out, const char *field, const char *tname) {
    jws(j);
    char ctx[160];
    snprintf(ctx, sizeof ctx, "tensor '%.64s': %s", tname, field);
    if (j->p < j->end && *j->p == '-') return dp_fail(DP_ERR_FORMAT, "%s: header: %s: negative value", j->what, ctx);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return dp_fail(DP_ERR_FORMAT, "%s: header: %s: expected a non-negative integer", j->what, ctx);
    uint64_t v = 0;
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (v > (uint64_t)INT64_MAX / 10 || v * 10 + (uint64_t)(*j->p - '0') > (uint64_t)INT64_MAX)
            return dp_fail(DP_ERR_RANGE, "%s: header: %s: value too large", j->what, ctx);
        v = v * 10 + (uint64_t)(*j->p++ - '0');
    }
    if (j->p - s > 1 && *s == '0') return dp_fail(DP_ERR_FORMAT, "%s: header: %s: leading zero", j->what, ctx);
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return dp_fail(DP_ERR_FORMAT, "%s: header: %s: not an integer", j->what, ctx);
    *out = v;
    return DP_OK;
}

static int st_push_meta(dp_safetensors *s, char *k, char *v) {
    if (s->nmeta + 2 > s->capm) {
        int nc = s->capm ? 2 * s->capm : 32;
        char **m = realloc(s->meta, sizeof(char *) * (size_t)nc);
        if (!m) return 0;
        s->meta = m;
        s->capm = nc;
    }
    s->meta[s->nmeta++] = k;
    s->meta[s->nmeta++] = v;
    return 1;
}

static dp_status parse_metadata(dp_safetensors *s, jr *j) {
    dp_status st;
    if ((st = jexpect(j, '{', "to open __metadata__")) != DP_OK) return st;
    if (jpeek(j, '}')) {
        j->p++;
        return DP_OK;
    }
    for (;;) {
        char *k = NULL, *v = NULL;
        if ((st = jstring(j, &k, "(a __metadata__ key)")) != DP_OK) return st;
        if (dp_safetensors_meta(s, k)) {
            st = dp_fail(DP_ERR_FORMAT, "%s: header: __metadata__: duplicate key '%.64s'", s->what, k);
            free(k);
            return st;
        }
        if ((st = jexpect(j, ':', "after a __metadata__ key")) != DP_OK ||
            (st = jstring(j, &v, "(__metadata__ values must be strings)")) != DP_OK) {
            free(k);
            return st;
        }
        if (!st_push_meta(s, k, v)) {
            free(k);
            free(v);
            return dp_fail(DP_ERR_NOMEM, "%s: out of memory", s->what);
        }
        jws(j);
        if (jpeek(j, ',')) {
            j->p++;
            continue;
        }
        return jexpect(j, '}', "to close __metadata__");
    }
}

static dp_status parse_tensor(dp_safetensors *s, jr *j, char *name) {
    dp_status st;
    if (s->nt == DP_ST_MAX_TENSORS)
        return dp_fail(DP_ERR_RANGE, "%s: header: more than %d tensors", s->what, DP_ST_MAX_TENSORS);
    for (int i = 0; i < s->nt; i++)
        if (!strcmp(s->t[i].name, name))
            return dp_fail(DP_ERR_FORMAT, "%s: header: duplicate tensor '%.64s'", s->what, name);
    if (s->nt == s->capt) {
        int nc = s->capt ? 2 * s->capt : 16;
        st_entry *t = realloc(s->t, sizeof(st_entry) * (size_t)nc);
        if (!t) return dp_fail(DP_ERR_NOMEM, "%s: out of memory", s->what);
        s->t = t;
        s->capt = nc;
    }
    st_entry e;
    memset(&e, 0, sizeof e);
    e.name = name;
    int have_dtype = 0, have_shape = 0, have_off = 0;
    char ctx[128];
    snprintf(ctx, sizeof ctx, "to open tensor '%.64s'", name);
    if ((st = jexpect(j, '{', ctx)) != DP_OK) return st;
    for (;;) {
        char *k = NULL;
        if ((st = jstring(j, &k, "(a tensor field)")) != DP_OK) return st;
        if ((st = jexpect(j, ':', "after a tensor field")) != DP_OK) {
            free(k);
            return st;
        }
        if (!strcmp(k, "dtype") && !have_dtype) {
            char *d = NULL;
            if ((st = jstring(j, &d, "(dtype)")) != DP_OK) {
                free(k);
                return st;
            }
            int found = -1;
            for (int i = 0; i < DP_ST_DTYPE_COUNT; i++)
                if (!strcmp(d, dtype_names[i])) found = i;
            if (found < 0) {
                int other = 0;
                for (size_t i = 0; i < sizeof other_dtypes / sizeof *other_dtypes; i++)
                    other |= !strcmp(d, other_dtypes[i]);
                st = dp_fail(other ? DP_ERR_UNSUPPORTED : DP_ERR_FORMAT, "%s: header: tensor '%.64s': dtype '%.32s' %s",
                             s->what, name, d, other ? "is not supported (F32, F64, I64, I32, U8)" : "is unknown");
                free(d);
                free(k);
                return st;
            }
            free(d);
            e.dtype = (dp_st_dtype)found;
            have_dtype = 1;
        } else if (!strcmp(k, "shape") && !have_shape) {
            if ((st = jexpect(j, '[', "to open shape")) != DP_OK) {
                free(k);
                return st;
            }
            if (jpeek(j, ']'))
                j->p++;
            else
                for (;;) {
                    uint64_t v;
                    if (e.ndim == 8) {
                        free(k);
                        return dp_fail(DP_ERR_UNSUPPORTED, "%s: header: tensor '%.64s': shape: more than 8 dimensions",
                                       s->what, name);
                    }
                    if ((st = juint(j, &v, "shape", name)) != DP_OK) {
                        free(k);
                        return st;
                    }
                    e.shape[e.ndim++] = (int64_t)v;
                    if (jpeek(j, ',')) {
                        j->p++;
                        continue;
                    }
                    if ((st = jexpect(j, ']', "to close shape")) != DP_OK) {
                        free(k);
                        return st;
                    }
                    break;
                }
            have_shape = 1;
        } else if (!strcmp(k, "data_offsets") && !have_off) {
            if ((st = jexpect(j, '[', "to open data_offsets")) != DP_OK ||
                (st = juint(j, &e.begin, "data_offsets[0]", name)) != DP_OK ||
                (st = jexpect(j, ',', "in data_offsets")) != DP_OK ||
                (st = juint(j, &e.end, "data_offsets[1]", name)) != DP_OK ||
                (st = jexpect(j, ']', "to close data_offsets (two values)")) != DP_OK) {
                free(k);
                return st;
            }
            have_off = 1;
        } else {
            st = dp_fail(DP_ERR_FORMAT, "%s: header: tensor '%.64s': %s field '%.32s'", s->what, name,
                         (!strcmp(k, "dtype") || !strcmp(k, "shape") || !strcmp(k, "data_offsets")) ? "duplicate"
                                                                                                    : "unknown",
                         k);
            free(k);
            return st;
        }
        free(k);
        if (jpeek(j, ',')) {
            j->p++;
            continue;
        }
        if ((st = jexpect(j, '}', "to close a tensor")) != DP_OK) return st;
        break;
    }
    if (!have_dtype || !have_shape || !have_off)
        return dp_fail(DP_ERR_FORMAT, "%s: header: tensor '%.64s': missing %s", s->what, name,
                       !have_dtype   ? "dtype"
                       : !have_shape ? "shape"
                                     : "data_offsets");
    uint64_t count = 1;
    for (int d = 0; d < e.ndim; d++)
        if (__builtin_mul_overflow(count, (uint64_t)e.shape[d], &count))
            return dp_fail(DP_ERR_RANGE, "%s: header: tensor '%.64s': shape: element count overflows", s->what, name);
    uint64_t bytes;
    if (__builtin_mul_overflow(count, (uint64_t)dtype_sizes[e.dtype], &bytes) || count > SIZE_MAX)
        return dp_fail(DP_ERR_RANGE, "%s: header: tensor '%.64s': shape: byte size overflows", s->what, name);
    if (e.begin > e.end)
        return dp_fail(DP_ERR_FORMAT, "%s: header: tensor '%.64s': data_offsets [%llu, %llu]: begin after end", s->what,
                       name, (unsigned long long)e.begin, (unsigned long long)e.end);
    if (e.end > s->data_len)
        return dp_fail(DP_ERR_FORMAT,
                       "%s: header: tensor '%.64s': data_offsets [%llu, %llu] out of range (data section %zu bytes)",
                       s->what, name, (unsigned long long)e.begin, (unsigned long long)e.end, s->data_len);
    if (e.end - e.begin != bytes)
        return dp_fail(DP_ERR_FORMAT,
                       "%s: header: tensor '%.64s': data_offsets [%llu, %llu] hold %llu bytes but shape x dtype %s "
                       "needs %llu",
                       s->what, name, (unsigned long long)e.begin, (unsigned long long)e.end,
                       (unsigned long long)(e.end - e.begin), dtype_names[e.dtype], (unsigned long long)bytes);
    e.count = (size_t)count;
    s->t[s->nt++] = e;
    return DP_OK;
}

static int cmp_begin(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void dp_safetensors_destroy(dp_safetensors *s) {
    if (!s) return;
    for (int i = 0; i < s->nt; i++) free(s->t[i].name);
    for (int i = 0; i < s->nmeta; i++) free(s->meta[i]);
    free(s->t);
    free(s->meta);
    free(s->what);
    dp_free(s->file);
    free(s);
}

dp_status dp_safetensors_parse(const void *buf, size_t len, const char *what, dp_safetensors **out) {
    if (!what) what = "safetensors";
    if (len < 8) return dp_fail(DP_ERR_FORMAT, "%s: truncated: %zu bytes, no 8-byte header size", what, len);
    const unsigned char *b = buf;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen > DP_ST_MAX_HEADER)
        return dp_fail(DP_ERR_RANGE, "%s: header size %llu exceeds the limit of %u bytes", what,
                       (unsigned long long)hlen, DP_ST_MAX_HEADER);
    if (hlen < 2 || hlen > len - 8)
        return dp_fail(DP_ERR_FORMAT, "%s: header size %llu does not fit the file (%zu bytes: truncated?)", what,
                       (unsigned long long)hlen, len);
    dp_safetensors *s = calloc(1, sizeof *s);
    if (!s || !(s->what = strdup(what))) {
        free(s);
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory", what);
    }
    dp_status st = DP_OK;
    s->len = len;
    if (!(s->file = dp_alloc(len ? len : 1))) {
        st = DP_ERR_NOMEM;
        goto fail;
    }
    memcpy(s->file, buf, len);
    s->data = s->file + 8 + hlen;
    s->data_len = len - 8 - (size_t)hlen;
    jr j = {(const char *)s->file + 8, (const char *)s->file + 8 + hlen, s->what};
    if (memchr(j.p, '\0', (size_t)hlen)) {
        st = jfail(&j, "%s", "NUL byte in the header");
        goto fail;
    }
    if ((st = jexpect(&j, '{', "at the start of the header")) != DP_OK) goto fail;
    int have_meta = 0;
    if (jpeek(&j, '}'))
        j.p++;
    else
        for (;;) {
            char *k = NULL;
            if ((st = jstring(&j, &k, "(a tensor name)")) != DP_OK) goto fail;
            if ((st = jexpect(&j, ':', "after a tensor name")) != DP_OK) {
                free(k);
                goto fail;
            }
            if (!strcmp(k, "__metadata__")) {
                free(k);
                if (have_meta) {
                    st = dp_fail(DP_ERR_FORMAT, "%s: header: duplicate __metadata__", s->what);
                    goto fail;
                }
                have_meta = 1;
                if ((st = parse_metadata(s, &j)) != DP_OK) goto fail;
            } else if ((st = parse_tensor(s, &j, k)) != DP_OK) {
                int owned = s->nt > 0 && s->t[s->nt - 1].name == k;
                if (!owned) free(k);
                goto fail;
            }
            if (jpeek(&j, ',')) {
                j.p++;
                continue;
            }
            if ((st = jexpect(&j, '}', "to close the header")) != DP_OK) goto fail;
            break;
        }
    jws(&j);
    if (j.p != j.end) {
        st = jfail(&j, "%s", "trailing bytes after the header object");
        goto fail;
    }
    /* the tensors tile the data section: sorted by offset, no overlap, no hole, no tail */
    st_entry *sorted = NULL;
    if (s->nt) {
        sorted = malloc(sizeof(st_entry) * (size_t)s->nt);
        if (!sorted) {
            st = dp_fail(DP_ERR_NOMEM, "%s: out of memory", s->what);
            goto fail;
        }
        memcpy(sorted, s->t, sizeof(st_entry) * (size_t)s->nt);
        qsort(sorted, (size_t)s->nt, sizeof(st_entry), cmp_begin);
    }
    uint64_t pos = 0;
    for (int i = 0; i < s->nt; i++) {
        if (sorted[i].begin < pos) {
            st = dp_fail(DP_ERR_FORMAT, "%s: header: tensor '%.64s': data_offsets [%llu, %llu] overlap tensor '%.64s'",
                         s->what, sorted[i].name, (unsigned long long)sorted[i].begin,
                         (unsigned long long)sorted[i].end, sorted[i - 1].name);
            break;
        }
        if (sorted[i].begin > pos) {
            st =
                dp_fail(DP_ERR_FORMAT, "%s: header: tensor '%.64s': data_offsets begin at %llu, leaving a hole at %llu",
                        s->what, sorted[i].name, (unsigned long long)sorted[i].begin, (unsigned long long)pos);
            break;
        }
        pos = sorted[i].end;
    }
    free(sorted);
    if (st != DP_OK) goto fail;
    if (pos != s->data_len) {
        st = dp_fail(DP_ERR_FORMAT, "%s: data section has %zu bytes but the tensors cover %llu (trailing data)",
                     s->what, s->data_len, (unsigned long long)pos);
        goto fail;
    }
    *out = s;
    return DP_OK;
fail:
    if (st == DP_ERR_NOMEM && !*dp_last_error()) dp_fail(DP_ERR_NOMEM, "%s: out of memory", what);
    dp_safetensors_destroy(s);
    return st;
}

dp_status dp_safetensors_load(const char *path, dp_safetensors **out) {
    void *buf;
    size_t len;
    dp_status st = dp__read_file(path, SIZE_MAX, &buf, &len);
    if (st != DP_OK) return st;
    st = dp_safetensors_parse(buf, len, path, out);
    free(buf);
    return st;
}

int dp_safetensors_num_tensors(const dp_safetensors *s) { return s->nt; }
const char *dp_safetensors_what(const dp_safetensors *s) { return s->what; }

dp_status dp_safetensors_tensor(const dp_safetensors *s, int i, const char **name, dp_st_dtype *dtype, int *ndim,
                                const int64_t **shape, const void **data, size_t *count) {
    if (i < 0 || i >= s->nt) return dp_fail(DP_ERR_RANGE, "%s: tensor %d does not exist", s->what, i);
    const st_entry *e = &s->t[i];
    if (name) *name = e->name;
    if (dtype) *dtype = e->dtype;
    if (ndim) *ndim = e->ndim;
    if (shape) *shape = e->shape;
    if (data) *data = s->data + e->begin;
    if (count) *count = e->count;
    return DP_OK;
}

dp_status dp_safetensors_find(const dp_safetensors *s, const char *name, dp_st_dtype *dtype, int *ndim,
                              const int64_t **shape, const void **data, size_t *count) {
    for (int i = 0; i < s->nt; i++)
        if (!strcmp(s->t[i].name, name)) return dp_safetensors_tensor(s, i, NULL, dtype, ndim, shape, data, count);
    return dp_fail(DP_ERR_INVALID, "%s: tensor '%s' is missing", s->what, name);
}

const char *dp_safetensors_meta(const dp_safetensors *s, const char *key) {
    for (int i = 0; i + 1 < s->nmeta; i += 2)
        if (!strcmp(s->meta[i], key)) return s->meta[i + 1];
    return NULL;
}

int dp_safetensors_num_meta(const dp_safetensors *s) { return s->nmeta / 2; }

void dp_safetensors_meta_at(const dp_safetensors *s, int i, const char **key, const char **value) {
    DP_ASSERT(i >= 0 && 2 * i + 1 < s->nmeta);
    if (key) *key = s->meta[2 * i];
    if (value) *value = s->meta[2 * i + 1];
}

/* ---- writing ------------------------------------------------------------------------- */

typedef struct {
    char *b;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *s, const char *t, size_t n) {
    if (s->oom) return;
    if (s->n + n + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 1024;
        while (nc < s->n + n + 1) nc *= 2;
        char *b = realloc(s->b, nc);
        if (!b) {
            s->oom = 1;
            return;
        }
        s->b = b;
        s->cap = nc;
    }
    memcpy(s->b + s->n, t, n);
    s->n += n;
    s->b[s->n] = '\0';
}
static void sb_str(sbuf *s, const char *t) { sb_put(s, t, strlen(t)); }
static void sb_json(sbuf *s, const char *t) {
    sb_put(s, "\"", 1);
    for (; *t; t++) {
        unsigned char c = (unsigned char)*t;
        char e[8];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            sb_put(s, e, 2);
        } else if (c == '\n')
            sb_put(s, "\\n", 2);
        else if (c < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", c);
            sb_put(s, e, 6);
        } else
            sb_put(s, (const char *)&c, 1);
    }
    sb_put(s, "\"", 1);
}

/* Test hook (testhooks.h; the test CLI sets it from DPSGD_TEST_SLOW_CHECKPOINT=MS): sleeps
 * between writing the temporary file and renaming it, so a test can kill the process while a
 * checkpoint is half done. */
long dp__test_slow_write_ms = 0;

static void test_slow_write(void) {
    long ms = dp__test_slow_write_ms;
    if (ms > 0 && ms < 60000) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

dp_status dp_safetensors_save(const char *path, const dp_st_tensor *t, int n, const char *const *meta, int n_meta) {
    sbuf h = {0};
    uint64_t off = 0;
    sb_str(&h, "{");
    if (n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json(&h, meta[2 * i]);
            sb_str(&h, ":");
            sb_json(&h, meta[2 * i + 1]);
        }
        sb_str(&h, "}");
    }
    for (int i = 0; i < n; i++) {
        DP_ASSERT((unsigned)t[i].dtype < DP_ST_DTYPE_COUNT && t[i].ndim >= 0 && t[i].ndim <= 8);
        uint64_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) count *= (uint64_t)t[i].shape[d];
        uint64_t bytes = count * dtype_sizes[t[i].dtype];
        char num[160];
        if (n_meta > 0 || i) sb_str(&h, ",");
        sb_json(&h, t[i].name);
        snprintf(num, sizeof num, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[t[i].dtype]);
        sb_str(&h, num);
        for (int d = 0; d < t[i].ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + bytes));
        sb_str(&h, num);
        off += bytes;
    }
    sb_str(&h, "}");
    while (!h.oom && (8 + h.n) % 8) sb_str(&h, " ");
    if (h.oom) {
        free(h.b);
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    }
    /* the header and every tensor written where they are, not copied into one buffer */
    size_t nt = n > 0 ? (size_t)n : 0;
    dp__file_part *parts = malloc((nt + 2) * sizeof *parts);
    if (!parts) {
        free(h.b);
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    parts[0] = (dp__file_part){len8, 8};
    parts[1] = (dp__file_part){h.b, h.n};
    for (size_t i = 0; i < nt; i++) {
        size_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) count *= (size_t)t[i].shape[d];
        parts[2 + i] = (dp__file_part){t[i].data, count * dtype_sizes[t[i].dtype]};
    }
    dp__write_opts opts = {".tmp", 0, test_slow_write};
    dp_status st = dp__write_file_atomic_parts(path, parts, nt + 2, &opts);
    free(parts);
    free(h.b);
    return st;
}
