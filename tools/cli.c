/* cli.c: helpers shared by the dpsgd commands (see cli.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

const char *dp_cli_prog = "dpsgd";
#define prog dp_cli_prog

int dp_cli_die(const char *what) {
    fprintf(stderr, "%s: %s\n", prog, what);
    return 2;
}

int dp_cli_fail(dp_status st) {
    const char *msg = dp_last_error();
    fprintf(stderr, "%s: error: %s\n", prog, msg && *msg ? msg : dp_strerror(st));
    return 1;
}

/* ---- value parsing: every bad value names its flag ---- */

int dp_cli_parse_double(const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || errno || !isfinite(x)) {
        fprintf(stderr, "%s: %s %s: not a finite number\n", prog, flag, v ? v : "(missing value)");
        return 0;
    }
    *out = x;
    return 1;
}

int dp_cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "%s: %s %s: must be an integer in %ld..%ld\n", prog, flag, v ? v : "(missing value)", lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* ---- JSON summary, written atomically (temp file, fsync, rename) ---- */

int dp_cli_write_atomic(const char *flag, const char *path, const char *text) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return 0;
    snprintf(tmp, n + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd >= 0) { /* mkstemp makes 0600 files: give the output the usual umask permissions */
        mode_t um = umask(0);
        umask(um);
        (void)fchmod(fd, 0666 & ~um);
    }
    if (fd < 0) {
        fprintf(stderr, "%s: %s %s: cannot create a file there: %s\n", prog, flag, path, strerror(errno));
        free(tmp);
        return 0;
    }
    size_t len = strlen(text), off = 0;
    int ok = 1;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w <= 0) {
            ok = 0;
            break;
        }
        off += (size_t)w;
    }
    if (ok && fsync(fd) != 0) ok = 0;
    if (close(fd) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "%s: %s %s: write failed: %s\n", prog, flag, path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return ok;
}

