/* fuzz_npy.c: libFuzzer target for the .npy reader (scripts/fuzz.sh). */
#include "fuzz_file.h"

#include "dpsgd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write(".npy", data, size);
    dp_npy a;
    if (dp_npy_load(p, &a) == DP_OK) dp_npy_free(&a);
    float *f = NULL;
    size_t n = 0;
    if (dp_npy_load_f32(p, &f, NULL, NULL, &n) == DP_OK) dp_free(f);
    unlink(p);
    return 0;
}
