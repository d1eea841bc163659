/* idx.c: IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain.
 *
 * An IDX file is a big-endian header, magic 0x0000 TT ND (TT = 0x08 unsigned bytes, ND =
 * number of dimensions), ND uint32 dimensions, then the data in C order. Images are
 * idx3 (count, rows, cols), labels idx1 (count). zlib's gzread reads both gzip and plain
 * files; data is read in large chunks and converted with a lookup table. */
#define _POSIX_C_SOURCE 200809L
#include "dpsgd/data.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum {
    IDX_IMAGES_MAGIC = 0x00000803,
    IDX_LABELS_MAGIC = 0x00000801,
    IDX_CHUNK = 1 << 20,            /* bytes per gzread */
    IDX_MAX_DEFLATE_RATIO = 1032,   /* deflate cannot expand data more than ~1032:1 */
};
#define IDX_MAX_ITEMS ((uint64_t)1 << 31)

typedef struct {
    const char *path;
    const char *role;   /* "images" / "labels" */
    gzFile gz;
    uint64_t file_bytes; /* on disk; 0 if unknown */
    uint32_t dims[3];
    int ndim;
    uint64_t data_bytes; /* declared by the header */
    uint64_t header_bytes;
} idx_file;

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* gzread until n bytes or end of input; returns bytes read, or -1 on a read/decode error */
static long long gz_read_full(gzFile gz, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > IDX_CHUNK ? IDX_CHUNK : n - got;
        int r = gzread(gz, (char *)buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

static dp_status gz_error(const idx_file *f) {
    int err = 0;
    const char *msg = gzerror(f->gz, &err);
    if (err == Z_ERRNO)
        return dp_fail(DP_ERR_IO, "%s: read error: %s", f->path, strerror(errno));
    if (err == Z_BUF_ERROR) /* gzip stream ends early */
        return dp_fail(DP_ERR_FORMAT, "%s: truncated: compressed data ends early (%s)", f->path, msg);
    return dp_fail(DP_ERR_FORMAT, "%s: corrupt gzip data: %s", f->path, msg);
}

static const char *dim_name(int ndim, int i) {
    static const char *const names3[] = {"image count", "rows", "columns"};
    return ndim == 1 ? "label count" : names3[i];
}

/* Opens path and reads and checks its header (magic, dimensions, declared size). */
static dp_status idx_open(idx_file *f, const char *path, const char *role, uint32_t magic) {
    memset(f, 0, sizeof *f);
    f->path = path;
    f->role = role;
    f->ndim = (int)(magic & 0xff);
    struct stat st;
    if (stat(path, &st) != 0)
        return dp_fail(DP_ERR_IO, "%s: cannot open %s file: %s", path, role, strerror(errno));
    if (S_ISREG(st.st_mode)) f->file_bytes = (uint64_t)st.st_size;
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return dp_fail(DP_ERR_IO, "%s: cannot open %s file: %s", path, role,
                       errno ? strerror(errno) : "out of memory");
    gzbuffer(f->gz, 1 << 18);

    unsigned char h[16];
    size_t hb = 4 + 4 * (size_t)f->ndim;
    f->header_bytes = hb;
    long long r = gz_read_full(f->gz, h, 4);
    if (r < 0) return gz_error(f);
    if (r < 4)
        return dp_fail(DP_ERR_FORMAT, "%s: truncated %s file: %lld bytes, no IDX header", path, role,
                       r);
    uint32_t m = be32(h);
    if (m != magic) {
        const char *hint = "";
        if (m == IDX_IMAGES_MAGIC) hint = " (this is an images file)";
        else if (m == IDX_LABELS_MAGIC) hint = " (this is a labels file)";
        return dp_fail(DP_ERR_FORMAT, "%s: %s file: magic 0x%08x, expected 0x%08x (idx%d unsigned bytes)%s",
                       path, role, m, magic, f->ndim, hint);
    }
    r = gz_read_full(f->gz, h + 4, hb - 4);
    if (r < 0) return gz_error(f);
    if ((size_t)r < hb - 4)
        return dp_fail(DP_ERR_FORMAT, "%s: truncated %s file: IDX header needs %zu bytes, file holds %lld",
                       path, role, hb, 4 + r);
    uint64_t items = 1;
    for (int i = 0; i < f->ndim; i++) {
        f->dims[i] = be32(h + 4 + 4 * i);
        if (f->dims[i] == 0)
            return dp_fail(DP_ERR_FORMAT, "%s: %s file: %s is 0", path, role, dim_name(f->ndim, i));
    }
    if (f->dims[0] > IDX_MAX_ITEMS)
        return dp_fail(DP_ERR_RANGE, "%s: %s file: %s %u is more than 2^31", path, role,
                       dim_name(f->ndim, 0), f->dims[0]);
    if (f->ndim == 3) {
        uint64_t px = (uint64_t)f->dims[1] * f->dims[2];
        if (f->dims[1] > INT_MAX || f->dims[2] > INT_MAX || px > INT32_MAX)
            return dp_fail(DP_ERR_RANGE, "%s: %s file: image size %u x %u is too large", path, role,
                           f->dims[1], f->dims[2]);
        items = px;
    }
    /* items * count * sizeof(float) must fit size_t */
    if (items > SIZE_MAX / sizeof(float) / f->dims[0])
        return dp_fail(DP_ERR_RANGE, "%s: %s file: %u items of %llu values overflow memory sizes", path,
                       role, f->dims[0], (unsigned long long)items);
    f->data_bytes = items * f->dims[0];

    /* Check the declared size against the file before allocating anything for it. */
    uint64_t need = f->data_bytes + hb;
    if (gzdirect(f->gz)) {
        if (f->file_bytes && f->file_bytes < need)
            return dp_fail(DP_ERR_FORMAT,
                           "%s: truncated %s file: header declares %llu bytes of data, file holds %llu",
                           path, role, (unsigned long long)f->data_bytes,
                           (unsigned long long)(f->file_bytes - hb));
        if (f->file_bytes && f->file_bytes > need)
            return dp_fail(DP_ERR_FORMAT,
                           "%s: trailing data in %s file: header declares %llu bytes of data, file "
                           "holds %llu",
                           path, role, (unsigned long long)f->data_bytes,
                           (unsigned long long)(f->file_bytes - hb));
    } else if (f->file_bytes && need / IDX_MAX_DEFLATE_RATIO > f->file_bytes + 1024) {
        return dp_fail(DP_ERR_FORMAT,
                       "%s: truncated %s file: header declares %llu bytes of data, more than a gzip "
                       "file of %llu bytes can hold",
                       path, role, (unsigned long long)f->data_bytes,
                       (unsigned long long)f->file_bytes);
    }
    return DP_OK;
}

static void idx_close(idx_file *f) {
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

/* After the last byte of a gzip file's data: the stream must have ended whole (zlib reports a
 * stream cut inside its 8-byte trailer, CRC-32 and size, only as Z_BUF_ERROR at the end), and
 * the file must end with it: zlib skips anything that is not a gzip header after a stream, so
 * the size the trailer records (its last 4 bytes, the size mod 2^32) is compared with what was
 * read. A file of several gzip members (concatenated) is refused by that too. */
static dp_status gz_check_end(const idx_file *f) {
    if (gzdirect(f->gz)) return DP_OK;
    int err = 0;
    gzerror(f->gz, &err);
    if (err == Z_BUF_ERROR)
        return dp_fail(DP_ERR_FORMAT, "%s: truncated gzip stream: its end (checksum and size) is missing", f->path);
    FILE *raw = fopen(f->path, "rb");
    unsigned char t[4];
    int ok = raw && fseek(raw, -4, SEEK_END) == 0 && fread(t, 1, 4, raw) == 4;
    if (raw) fclose(raw);
    if (!ok) return dp_fail(DP_ERR_IO, "%s: cannot read the gzip trailer", f->path);
    const uint32_t isize = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    if (isize != (uint32_t)(f->header_bytes + f->data_bytes))
        return dp_fail(DP_ERR_FORMAT, "%s: data after the gzip stream (or several gzip members): the file does not end "
                       "with the stream's trailer; decompress it with gunzip", f->path);
    return DP_OK;
}

/* Reads exactly f->data_bytes through buf (IDX_CHUNK bytes), calling sink for each piece,
 * then checks that the file ends there. */
typedef void (*idx_sink)(void *ctx, const unsigned char *p, size_t n, size_t offset);

static dp_status idx_read_data(idx_file *f, unsigned char *buf, idx_sink sink, void *ctx) {
    uint64_t done = 0;
    while (done < f->data_bytes) {
        uint64_t left = f->data_bytes - done;
        unsigned want = left > IDX_CHUNK ? IDX_CHUNK : (unsigned)left;
        int r = gzread(f->gz, buf, want);
        if (r < 0) return gz_error(f);
        if (r == 0) {
            int err = 0;
            gzerror(f->gz, &err);
            if (err != Z_OK && err != Z_BUF_ERROR) return gz_error(f);
            return dp_fail(DP_ERR_FORMAT,
                           "%s: truncated %s file: header declares %llu bytes of data, file holds %llu",
                           f->path, f->role, (unsigned long long)f->data_bytes,
                           (unsigned long long)done);
        }
        sink(ctx, buf, (size_t)r, (size_t)done);
        done += (uint64_t)r;
    }
    int r = gzread(f->gz, buf, 1);
    if (r < 0) return gz_error(f);
    if (r > 0)
        return dp_fail(DP_ERR_FORMAT,
                       "%s: trailing data in %s file after the %llu bytes of data the header declares",
                       f->path, f->role, (unsigned long long)f->data_bytes);
    return gz_check_end(f);
}

typedef struct {
    float *x;
    float lut[256];
} pixel_ctx;

static void pixel_sink(void *vctx, const unsigned char *p, size_t n, size_t offset) {
    pixel_ctx *c = vctx;
    float *x = c->x + offset;
    for (size_t i = 0; i < n; i++) x[i] = c->lut[p[i]];
}

typedef struct {
    int32_t *y;
    int max;
} label_ctx;

static void label_sink(void *vctx, const unsigned char *p, size_t n, size_t offset) {
    label_ctx *c = vctx;
    int32_t *y = c->y + offset;
    int mx = c->max;
    for (size_t i = 0; i < n; i++) {
        y[i] = p[i];
        if (p[i] > mx) mx = p[i];
    }
    c->max = mx;
}

dp_status dp_dataset_load_idx(const char *images_path, const char *labels_path, dp_dataset *out) {
    if (!images_path || !labels_path || !out)
        return dp_fail(DP_ERR_INVALID, "dp_dataset_load_idx: images_path, labels_path and out are required");
    idx_file fi, fl;
    memset(&fl, 0, sizeof fl);
    float *x = NULL;
    int32_t *y = NULL;
    unsigned char *buf = NULL;
    dp_status s = idx_open(&fi, images_path, "images", IDX_IMAGES_MAGIC);
    if (s != DP_OK) goto fail;
    if ((s = idx_open(&fl, labels_path, "labels", IDX_LABELS_MAGIC)) != DP_OK) goto fail;
    if (fi.dims[0] != fl.dims[0]) {
        s = dp_fail(DP_ERR_FORMAT, "%s: holds %u labels but images file %s holds %u images",
                    labels_path, fl.dims[0], images_path, fi.dims[0]);
        goto fail;
    }
    size_t n = fi.dims[0];
    size_t dim = (size_t)fi.dims[1] * fi.dims[2];
    buf = dp_alloc(IDX_CHUNK);
    x = dp_alloc(n * dim * sizeof(float));
    y = dp_alloc(n * sizeof(int32_t));
    if (!buf || !x || !y) {
        s = DP_ERR_NOMEM;
        goto fail;
    }
    pixel_ctx pc;
    pc.x = x;
    for (int i = 0; i < 256; i++) pc.lut[i] = (float)i / 255.0f;
    if ((s = idx_read_data(&fi, buf, pixel_sink, &pc)) != DP_OK) goto fail;
    label_ctx lc = {y, 0};
    if ((s = idx_read_data(&fl, buf, label_sink, &lc)) != DP_OK) goto fail;
    idx_close(&fi);
    idx_close(&fl);
    dp_free(buf);

    memset(out, 0, sizeof *out);
    out->n = n;
    out->c = 1;
    out->h = (int)fi.dims[1];
    out->w = (int)fi.dims[2];
    out->dim = dim;
    out->x = x;
    out->y = y;
    out->n_classes = lc.max + 1;
    return DP_OK;

fail:
    idx_close(&fi);
    idx_close(&fl);
    dp_free(buf);
    dp_free(x);
    dp_free(y);
    return s;
}

/* dir/name.gz if it exists, else dir/name; *path is a new tracked string */
static dp_status mnist_path(const char *dir, const char *name, char **path) {
    size_t cap = strlen(dir) + strlen(name) + 8;
    char *p = dp_alloc(cap);
    if (!p) return DP_ERR_NOMEM;
    snprintf(p, cap, "%s/%s.gz", dir, name);
    if (access(p, F_OK) != 0) {
        snprintf(p, cap, "%s/%s", dir, name);
        if (access(p, F_OK) != 0) {
            dp_status s = dp_fail(DP_ERR_IO, "%s: neither %s.gz nor %s found: %s", dir, name, name,
                                  strerror(errno));
            dp_free(p);
            return s;
        }
    }
    *path = p;
    return DP_OK;
}

dp_status dp_dataset_load_mnist_dir(const char *dir, int train, dp_dataset *out) {
    if (!dir || !out) return dp_fail(DP_ERR_INVALID, "dp_dataset_load_mnist_dir: dir and out are required");
    const char *split = train ? "train" : "t10k";
    char name[64];
    char *ip = NULL, *lp = NULL;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    dp_status s = mnist_path(dir, name, &ip);
    if (s == DP_OK) {
        snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
        s = mnist_path(dir, name, &lp);
    }
    if (s == DP_OK) s = dp_dataset_load_idx(ip, lp, out);
    dp_free(ip);
    dp_free(lp);
    return s;
}
