/* regress_main.c: a main() for the fuzz targets, so the normal build can replay inputs
 * (tests/regress/<parser>/ and fuzz/corpus/<parser>/) without libFuzzer: each file named
 * on the command line is fed to LLVMFuzzerTestOneInput once. Under the sanitizer build a
 * crash or leak fails the test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "regress: cannot open %s\n", argv[i]);
            return 1;
        }
        uint8_t *buf = malloc(1 << 22);
        size_t len = buf ? fread(buf, 1, 1 << 22, f) : 0;
        fclose(f);
        if (!buf) return 1;
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        n++;
    }
    printf("regress: %d inputs replayed\n", n);
    return 0;
}
