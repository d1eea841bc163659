/* fuzz_file.h: the file readers take paths, so the fuzz input is written to a per-process
 * temporary file first (in /dev/shm when it exists, so it stays in memory). */
#ifndef DP_FUZZ_FILE_H
#define DP_FUZZ_FILE_H
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *fuzz_write(const char *suffix, const void *data, size_t size) {
    static char path[2][256];
    static int which;
    which ^= 1;
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path[which], sizeof path[which], "%s/dpsgd-fuzz-%ld-%d%s", dir, (long)getpid(), which, suffix);
    FILE *f = fopen(path[which], "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path[which];
}
#endif
