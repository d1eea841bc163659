/* dpsgd/scatter.h: the 2-D scattering transform (Mallat; Kymatio's Scattering2D), a fixed
 * feature map for images: the "ScatterNet" features of Tramer & Boneh (2021).
 *
 *   dp_dataset feats;                           // 60000 x 1 x 28 x 28  ->  60000 x 81 x 7 x 7
 *   if (dp_scatter_dataset(&train, 2, 8, &feats) != DP_OK) fprintf(stderr, "%s\n", dp_last_error());
 *   ... train on feats (dp_dataset_free(&feats) when done) ...
 *
 *   dp_scatter *s;                              // or a plan, reused for many batches
 *   dp_scatter_create(28, 28, 2, 8, &s);
 *   dp_scatter_apply(s, x, B * C, y);           // x [B, C, 28, 28] -> y [B, C * 81, 7, 7]
 *   dp_scatter_destroy(s);
 *
 * For an image of H x W with scale J and L angles the transform gives
 * K = 1 + J L + L^2 J (J - 1) / 2 channels of (H / 2^J) x (W / 2^J), in Kymatio's order:
 *   k = 0                      order 0:  x * phi, subsampled by 2^J
 *   k = 1 + j L + t            order 1:  |x * psi_{j,t}| * phi
 *   then, for j1 < j2 < J,     order 2:  ||x * psi_{j1,t1}| * psi_{j2,t2}| * phi
 *      ordered by (j1, t1, j2, t2), t2 fastest.
 * Filters (Kymatio's Morlet bank), padding and precision: docs/scatter.md.
 *
 * The transform is public and data-independent: applying it to private data costs no
 * privacy, but its output IS private data (it is a function of the images) and must be
 * handled as the images are. The library never writes it out.
 */
#ifndef DPSGD_SCATTER_H
#define DPSGD_SCATTER_H
#include "dpsgd/core.h"
#include "dpsgd/data.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { DP_SCATTER_MAX_L = 64 }; /* angles accepted (Kymatio's filters are designed for L = 8) */

typedef struct dp_scatter dp_scatter;

/* Sizes of a plan (all derived from H, W, J, L). */
typedef struct {
    int h, w;           /* input image size */
    int J, L;
    int channels;       /* K = 1 + J L + L^2 J (J - 1) / 2 */
    int out_h, out_w;   /* h / 2^J, w / 2^J */
    int pad_h, pad_w;   /* the padded grid the filters live on: h + 2^(J+1), w + 2^(J+1) */
} dp_scatter_info;

/* A plan for H x W images: the filter bank (computed in double, kept in float) and the FFTW
 * single-precision plans (FFTW_ESTIMATE: deterministic, made in milliseconds).
 * Requirements: J >= 1; 1 <= L <= DP_SCATTER_MAX_L; H and W divisible by 2^J (and so at
 * least 2^J). Errors: DP_ERR_INVALID (a requirement not met, out NULL; the message says
 * which), DP_ERR_RANGE (sizes overflow), DP_ERR_NOMEM. Building the filters costs
 * O(HW (H + W)) per filter: 30 ms for 28 x 28, half a second at 256 x 256 (2 threads).
 * Plan creation is serialised internally (FFTW's planner is not thread-safe); a plan is
 * read-only afterwards and may be used by several threads at once. */
dp_status dp_scatter_create(int h, int w, int J, int L, dp_scatter **out);
void dp_scatter_destroy(dp_scatter *s);
dp_scatter_info dp_scatter_get_info(const dp_scatter *s);

/* Transforms n images of H x W (float, row-major, one after the other: a batch [B, C, H, W]
 * is n = B C images) into n blocks of K x out_h x out_w: the batch [B, C * K, out_h, out_w],
 * input channel c giving output channels c K .. c K + K - 1. x and y must not overlap.
 * Images are split over the OpenMP threads; the result does not depend on the thread count.
 * Errors: DP_ERR_INVALID (NULL pointers with n > 0), DP_ERR_NOMEM (per-thread scratch). */
dp_status dp_scatter_apply(const dp_scatter *s, const float *x, size_t n, float *y);

/* Scattering path of output channel k (0 <= k < K): order 0, 1 or 2, and (j1, t1), (j2, t2)
 * (-1 where the order has none). Returns DP_ERR_INVALID for k out of range. */
dp_status dp_scatter_path(const dp_scatter *s, int k, int *order, int *j1, int *t1, int *j2, int *t2);

/* The Fourier-domain filters the plan uses (read-only; real, as Kymatio keeps them).
 * which = -1: the low-pass phi; 0 <= which < J L: the wavelet psi_{j,t}, which = j L + t.
 * res: the resolution level (the filter for signals subsampled by 2^res), its grid is
 * (pad_h >> res) x (pad_w >> res), row-major, frequency index k at position k (negative
 * frequencies at the end, as an FFT lays them out). Levels kept: phi 0..J-1; psi_j
 * 0..min(j, J-2) (level 0 for all when J = 1: Kymatio's set). Returns NULL (and sets the
 * error message) for a level that is not kept. */
const float *dp_scatter_filter(const dp_scatter *s, int which, int res);

/* Transforms a whole image dataset: in (n x c x h x w) -> out (n x c K x h/2^J x w/2^J),
 * labels and n_classes copied. Parallel over images (OpenMP). Errors: those of
 * dp_scatter_create (naming the dataset's shape), DP_ERR_INVALID (in or out NULL, in's
 * dim != c h w or arrays missing), DP_ERR_NOMEM (the output: n c K h w / 4^J floats).
 * On success *out owns new tracked blocks (free with dp_dataset_free). The output is
 * private whenever the input is (see above). */
dp_status dp_scatter_dataset(const dp_dataset *in, int J, int L, dp_dataset *out);

#ifdef __cplusplus
}
#endif
#endif
