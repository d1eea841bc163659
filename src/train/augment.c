/* augment.c: augmentation multiplicity (De et al. 2022, "Unlocking High-Accuracy Differentially
 * Private Image Classification through Scale"): the random crops and flips of the copies of a
 * sampled example, and the checks of the settings (see step.h, dp_train_params.augmult).
 *
 * A copy of image x [C, H, W] is x shifted by (dy, dx) and, when flipped, mirrored left-right:
 *   out[c][i][j] = x[c][i + dy][W - 1 - (j + dx)]   (flipped)
 *   out[c][i][j] = x[c][i + dy][j + dx]             (not flipped)
 * and 0 where the source pixel lies outside the image. That is a random H x W crop of the image
 * zero-padded by P on each side (dy, dx uniform in [-P, P]), then the flip. The padding is 0 in
 * the model's input space, i.e. after the normalisation of the data (for Fashion-MNIST
 * standardised with mean 0.286, a 0 is a grey pixel, not black); what matters for privacy is
 * only that each copy is a function of its own example and of randomness independent of the
 * data. */
#include <string.h>

#include "train/step.h"

void dp__augment_draw(dp_rng *r, int pad, int flip, dp_augment *a) {
    a->dy = (int)dp_rng_below(r, (uint64_t)(2 * pad + 1)) - pad;
    a->dx = (int)dp_rng_below(r, (uint64_t)(2 * pad + 1)) - pad;
    a->flip = flip ? (int)(dp_rng_u64(r) >> 63) : 0;
}

void dp__augment_apply(const float *x, float *out, int c, int h, int w, const dp_augment *a) {
    for (int ch = 0; ch < c; ch++) {
        const float *src = x + (size_t)ch * h * w;
        float *dst = out + (size_t)ch * h * w;
        for (int i = 0; i < h; i++) {
            float *row = dst + (size_t)i * w;
            const int si = i + a->dy;
            if (si < 0 || si >= h) {
                memset(row, 0, sizeof(float) * (size_t)w);
                continue;
            }
            const float *srow = src + (size_t)si * w;
            for (int j = 0; j < w; j++) {
                const int sj = j + a->dx;
                row[j] = sj < 0 || sj >= w ? 0.0f : srow[a->flip ? w - 1 - sj : sj];
            }
        }
    }
}

dp_status dp__augment_setup(dp_step *s, const dp_train_params *p, const dp_model *m, const dp_dataset *tr) {
    s->augmult = 0;
    s->clip.group = 0;
    if (p->augmult == 0) return DP_OK;
    if (p->augmult < 0 || p->augmult > DP_CLIP_MAX_GROUP)
        return dp_fail(DP_ERR_RANGE, "augmult %d: must be in 0..%d (0: no augmentation; K: K augmented copies of each "
                       "example)", p->augmult, DP_CLIP_MAX_GROUP);
    if (dp_model_input_is_tokens(m))
        return dp_fail(DP_ERR_INVALID, "augmult %d: the inputs are token ids, not images; crops and flips are for "
                       "images", p->augmult);
    if (tr->h < 2 || tr->w < 2 || (size_t)tr->c * tr->h * tr->w != tr->dim)
        return dp_fail(DP_ERR_INVALID, "augmult %d: the training data is %d x %d x %d, not images (crops and flips "
                       "need a height and a width of at least 2)", p->augmult, tr->c, tr->h, tr->w);
    const int side = tr->h < tr->w ? tr->h : tr->w;
    if (p->augment_pad < 0 || p->augment_pad >= side)
        return dp_fail(DP_ERR_RANGE, "augment_pad %d: must be in 0..%d (below the image's %d x %d)", p->augment_pad,
                       side - 1, tr->h, tr->w);
    if (p->augment_flip != 0 && p->augment_flip != 1)
        return dp_fail(DP_ERR_RANGE, "augment_flip %d: must be 0 or 1", p->augment_flip);
    s->augmult = p->augmult;
    s->aug_pad = p->augment_pad;
    s->aug_flip = p->augment_flip;
    s->aug_c = tr->c;
    s->aug_h = tr->h;
    s->aug_w = tr->w;
    s->clip.group = p->augmult; /* 1: one copy, one row: no grouping */
    return DP_OK;
}
