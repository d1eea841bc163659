/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (scripts/fuzz.sh). */
#include <stddef.h>
#include <stdint.h>

#include "dpsgd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_safetensors *s = NULL;
    if (dp_safetensors_parse(data, size, "fuzz", &s) == DP_OK) {
        /* touch every tensor's bytes (reads must stay inside the image) */
        volatile uint8_t sink = 0;
        for (int i = 0; i < dp_safetensors_num_tensors(s); i++) {
            const void *p;
            size_t count;
            dp_st_dtype dt;
            dp_safetensors_tensor(s, i, NULL, &dt, NULL, NULL, &p, &count);
            size_t bytes = count * dp_st_dtype_size(dt);
            for (size_t k = 0; k < bytes; k++) sink ^= ((const uint8_t *)p)[k];
        }
        (void)dp_safetensors_meta(s, "format");
        (void)sink;
    }
    dp_safetensors_destroy(s);
    return 0;
}
