/* file.h (internal): whole files in and out for the readers and writers of src/io/ (onnx.c,
 * safetensors.c, npy.c): one copy of reading a regular file into memory and of writing a file
 * atomically (a temporary file next to the target, fsync, rename, fsync of the directory).
 * The symbols are hidden in the shared library (tests and the CLI link the static one). */
#ifndef DP_IO_FILE_H
#define DP_IO_FILE_H
#include <stddef.h>
#include <stdint.h>

#include "dpsgd/core.h"

#ifndef DP_HIDDEN
#define DP_HIDDEN __attribute__((visibility("hidden")))
#endif

/* ---- reading ---- */

/* Opens path read-only and checks that it is a regular file: the descriptor (>= 0) with
 * *size its size in bytes, -1 when open failed (errno says why) or -2 when it is not a regular
 * file (or fstat failed; nothing is left open). The caller words the message. */
DP_HIDDEN int dp__open_regular(const char *path, uint64_t *size);

/* Reads up to n bytes at offset off of fd (pread, retried on EINTR and on short reads): the
 * number read, less than n only at the end of the file or on an error. */
DP_HIDDEN size_t dp__pread_full(int fd, void *buf, size_t n, uint64_t off);

/* The whole of the regular file path in a malloc'd buffer (*buf, free() it; 1 byte allocated
 * for an empty file) of *len bytes. Errors (the message names path): DP_ERR_IO "cannot open:
 * <reason>", "not a regular file", "read failed (<got> of <n> bytes)"; DP_ERR_RANGE when the file
 * has more than max_bytes (then *len is the file's size, clamped to SIZE_MAX, so the caller may
 * word its own message); DP_ERR_NOMEM. *buf is NULL on failure. */
DP_HIDDEN dp_status dp__read_file(const char *path, size_t max_bytes, void **buf, size_t *len);

/* The directory holding path, malloc'd: "." when path has no slash, "/" for "/name"; NULL when
 * out of memory. */
DP_HIDDEN char *dp__dir_of(const char *path);

/* ---- writing atomically ---- */

/* one piece of the file; data may be NULL when len is 0 */
typedef struct {
    const void *data;
    size_t len;
} dp__file_part;

typedef struct {
    const char *tmp_suffix;      /* the temporary file is path + tmp_suffix + "XXXXXX" (mkstemp);
                                  * NULL: ".tmp" */
    unsigned mode;               /* its permissions: 0 for 0666 less the umask, else these bits */
    void (*before_rename)(void); /* NULL, or called between closing the written file and the
                                  * rename (a test hook: a kill then finds the temporary file) */
} dp__write_opts;

/* Writes the n parts, in order, to path atomically: a temporary file in the same directory is
 * created (mkstemp, then opts' permissions), written (in chunks of at most 1 GiB, write
 * retried on EINTR), fsync'ed, closed and renamed over path, then the directory is fsync'ed
 * (best effort), so that path holds either its old content or the whole new file. The parts
 * are written where they are: nothing is copied. On failure the temporary file is removed and
 * the message names path: "cannot create a file there", "write failed", "fsync failed",
 * "close failed", "cannot rename <tmp> into place", each with the system's reason (DP_ERR_IO),
 * or "out of memory" (DP_ERR_NOMEM). opts may be NULL (".tmp", 0666 less the umask, no hook). */
DP_HIDDEN dp_status dp__write_file_atomic_parts(const char *path, const dp__file_part *parts, size_t n,
                                                const dp__write_opts *opts);

/* dp__write_file_atomic_parts with one part and the default options */
DP_HIDDEN dp_status dp__write_file_atomic(const char *path, const void *buf, size_t len);

#endif
