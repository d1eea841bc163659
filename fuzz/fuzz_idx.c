/* fuzz_idx.c: libFuzzer target for the IDX reader (plain or gzip). The input is split in two:
 * the first two bytes give the length of the images part, the rest is the labels part. */
#include "fuzz_file.h"

#include "dpsgd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t split = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 1);
    const char *img = fuzz_write("-images", data + 2, split);
    const char *lab = fuzz_write("-labels", data + 2 + split, size - 2 - split);
    dp_dataset d;
    if (dp_dataset_load_idx(img, lab, &d) == DP_OK) {
        (void)dp_dataset_validate(&d, "fuzz", 1, 0);
        dp_dataset_free(&d);
    }
    unlink(img);
    unlink(lab);
    return 0;
}
