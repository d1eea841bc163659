/* file.c: whole files in and out for src/io/ (file.h): reading a regular file into memory and
 * writing a file atomically (temporary file, fsync, rename, fsync of the directory). */
#define _POSIX_C_SOURCE 200809L
#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- reading ----------------------------------------------------------------------------- */

int dp__open_regular(const char *path, uint64_t *size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return -2;
    }
    *size = (uint64_t)sb.st_size;
    return fd;
}

size_t dp__pread_full(int fd, void *buf, size_t n, uint64_t off) {
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

dp_status dp__read_file(const char *path, size_t max_bytes, void **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    uint64_t size;
    int fd = dp__open_regular(path, &size);
    if (fd == -1) return dp_fail(DP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fd < 0) return dp_fail(DP_ERR_IO, "%s: not a regular file", path);
    if (size > (uint64_t)max_bytes) {
        close(fd);
        *len = size > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)size;
        return dp_fail(DP_ERR_RANGE, "%s: the file has %" PRIu64 " bytes, more than the %zu that may be read", path,
                       size, max_bytes);
    }
    size_t n = (size_t)size;
    unsigned char *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return dp_fail(DP_ERR_NOMEM, "%s: out of memory (%zu bytes)", path, n);
    }
    size_t got = dp__pread_full(fd, b, n, 0);
    close(fd);
    if (got != n) {
        free(b);
        return dp_fail(DP_ERR_IO, "%s: read failed (%zu of %zu bytes)", path, got, n);
    }
    *buf = b;
    *len = n;
    return DP_OK;
}

char *dp__dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- writing atomically ------------------------------------------------------------------ */

/* 0, or -1 with errno set */
static int write_all(int fd, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path, so that the rename is durable (best effort) */
static void sync_parent_dir(const char *path) {
    char *dir = dp__dir_of(path);
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

dp_status dp__write_file_atomic_parts(const char *path, const dp__file_part *parts, size_t n,
                                      const dp__write_opts *opts) {
    const char *suffix = opts && opts->tmp_suffix ? opts->tmp_suffix : ".tmp";
    size_t tlen = strlen(path) + strlen(suffix) + 7;
    char *tmp = malloc(tlen);
    if (!tmp) return dp_fail(DP_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, tlen, "%s%sXXXXXX", path, suffix);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        dp_status st = dp_fail(DP_ERR_IO, "%s: cannot create a file there: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    /* mkstemp makes 0600 files */
    if (opts && opts->mode)
        (void)fchmod(fd, (mode_t)opts->mode);
    else {
        mode_t um = umask(0);
        umask(um);
        (void)fchmod(fd, 0666 & ~um);
    }
    const char *failed = NULL;
    for (size_t k = 0; k < n && !failed; k++)
        if (write_all(fd, parts[k].data, parts[k].len) != 0) failed = "write failed";
    if (!failed && fsync(fd) != 0) failed = "fsync failed";
    int err = errno;
    if (close(fd) != 0 && !failed) {
        failed = "close failed";
        err = errno;
    }
    if (!failed && opts && opts->before_rename) opts->before_rename();
    if (!failed && rename(tmp, path) != 0) {
        dp_status st = dp_fail(DP_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    if (failed) {
        dp_status st = dp_fail(DP_ERR_IO, "%s: %s: %s", path, failed, strerror(err));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    sync_parent_dir(path);
    return DP_OK;
}

dp_status dp__write_file_atomic(const char *path, const void *buf, size_t len) {
    dp__file_part part = {buf, len};
    return dp__write_file_atomic_parts(path, &part, 1, NULL);
}
