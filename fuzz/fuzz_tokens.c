/* fuzz_tokens.c: libFuzzer target for the token loader (dp_dataset_load_tokens, src/io/tokens.c
 * over the .npy reader) and the checks before training (dp_dataset_validate_tokens). The input:
 * bytes 0-1 the length of the ids part (modulo what is left), byte 2 the pad id (byte - 1:
 * -1..254, where -1 maps nothing; 255: DP_TOKENS_MAX_VOCAB, which must be refused), byte 3
 * the vocabulary for dp_dataset_validate_tokens (0: refused; 255: DP_TOKENS_MAX_VOCAB), then
 * the ids .npy and the labels .npy. A dataset that loads must keep the loader's contract (a
 * 1 x 1 x T token dataset; every id -1 or an integer in 0..2^24-1, never the pad id; labels in
 * 0..n_classes-1), and pass dp_dataset_validate_tokens with the largest vocabulary unless a
 * row is all padding. Tracked bytes must all be freed. */
#include "fuzz_file.h" /* first: it sets _POSIX_C_SOURCE */

#include <math.h>
#include <string.h>

#include "dpsgd.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_tokens: %s (last error: %s)\n", what, dp_last_error());
    abort();
}

static void check_loaded(const dp_dataset *d, int pad_id) {
    if (d->n == 0 || !d->x || !d->y) fail("a loaded dataset without rows or arrays");
    if (d->c != 1 || d->h != 1 || d->w < 1 || d->w > DP_TOKENS_MAX_LEN || d->dim != (size_t)d->w)
        fail("a loaded dataset that is not 1 x 1 x T");
    if (d->n_classes < 1) fail("n_classes < 1");
    for (size_t i = 0; i < d->n * d->dim; i++) {
        float v = d->x[i];
        if (!(v == -1.0f || (v >= 0.0f && v < (float)DP_TOKENS_MAX_VOCAB && v == floorf(v))))
            fail("an id that is neither -1 nor an integer in 0..2^24-1");
        if (pad_id >= 0 && v == (float)pad_id) fail("the pad id left unmapped");
    }
    for (size_t i = 0; i < d->n; i++)
        if (d->y[i] < 0 || d->y[i] >= d->n_classes) fail("a label outside 0..n_classes-1");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once) {
        once = 1;
        dp_mem_set_limit((size_t)256 << 20); /* refused before malloc, not a libFuzzer OOM */
    }
    if (size < 4) return 0;
    const size_t live0 = dp_mem_get().live_bytes;
    size_t split = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 3);
    const int pad_id = data[2] == 255 ? DP_TOKENS_MAX_VOCAB : (int)data[2] - 1;
    const int vocab = data[3] == 255 ? DP_TOKENS_MAX_VOCAB : (int)data[3];
    const char *ids = fuzz_write("-ids.npy", data + 4, split);
    const char *lab = fuzz_write("-labels.npy", data + 4 + split, size - 4 - split);
    dp_dataset d;
    memset(&d, 0, sizeof d);
    dp_status st = dp_dataset_load_tokens(ids, lab, pad_id, &d);
    if (st == DP_OK) {
        if (pad_id >= DP_TOKENS_MAX_VOCAB) fail("a pad id of 2^24 accepted");
        check_loaded(&d, pad_id);
        (void)dp_dataset_validate_tokens(&d, "fuzz", vocab);
        /* what loads passes every check but the all-padding rows (and the vocabulary) */
        st = dp_dataset_validate_tokens(&d, "fuzz", DP_TOKENS_MAX_VOCAB);
        if (st != DP_OK && st != DP_ERR_FORMAT) fail("a loaded dataset refused by the checks");
        if (dp_dataset_validate_tokens(&d, NULL, 0) != DP_ERR_INVALID) fail("vocabulary 0 accepted");
        dp_dataset_free(&d);
        if (d.x || d.y || d.n) fail("dp_dataset_free left the struct set");
    }
    unlink(ids);
    unlink(lab);
    if (dp_mem_get().live_bytes != live0) {
        fprintf(stderr, "fuzz_tokens: %zu tracked bytes still live (before: %zu)\n", dp_mem_get().live_bytes, live0);
        abort();
    }
    return 0;
}
