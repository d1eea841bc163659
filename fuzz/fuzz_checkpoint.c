/* fuzz_checkpoint.c: libFuzzer target for the checkpoint reader: safetensors parse plus every
 * checkpoint field (scripts/fuzz.sh). */
#include <stddef.h>
#include <stdint.h>

#include "dpsgd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)dp_checkpoint_check(data, size, "fuzz");
    return 0;
}
