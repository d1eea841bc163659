/* dataset.c: dp_dataset lifetime, validation before training, standardisation. */
#include "dpsgd/data.h"

#include <math.h>
#include <string.h>

void dp_dataset_free(dp_dataset *d) {
    if (!d) return;
    dp_free(d->x);
    dp_free(d->y);
    dp_free(d->t);
    memset(d, 0, sizeof *d);
}

dp_status dp_dataset_validate(const dp_dataset *d, const char *what, size_t min_rows, int n_classes) {
    if (!what) what = "dataset";
    if (!d) return dp_fail(DP_ERR_INVALID, "%s: dataset is NULL", what);
    if (d->c < 0 || d->h < 0 || d->w < 0 ||
        d->dim != (size_t)d->c * (size_t)d->h * (size_t)d->w)
        return dp_fail(DP_ERR_INVALID, "%s: dim %zu does not match the example shape %d x %d x %d",
                       what, d->dim, d->c, d->h, d->w);
    if (d->n > 0 && ((d->dim > 0 && !d->x) || !d->y))
        return dp_fail(DP_ERR_INVALID, "%s: %zu rows but no %s array", what, d->n,
                       d->y ? "feature" : "label");
    if (d->n < min_rows)
        return dp_fail(DP_ERR_RANGE, "%s: %zu rows, need at least %zu", what, d->n, min_rows);
    if (n_classes <= 0) n_classes = d->n_classes;
    /* Messages about the CONTENT of the data (the values and labels below) name the dataset
     * and the rule broken, never the offending value, its row or column, or how many rows
     * break it: what is printed about private data is a release the accountant does not cover
     * (docs/privacy.md). Messages about its STRUCTURE (shape, row count, missing arrays)
     * above may be detailed: shapes are public. */
    size_t total = d->n * d->dim;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(d->x[i]))
            return dp_fail(DP_ERR_NONFINITE,
                           "%s: a value is not finite (NaN or Inf); every feature value must be a "
                           "finite number",
                           what);
    if (d->t || d->n_targets) {
        if (d->n_targets < 1 || (d->n > 0 && !d->t) || d->n_targets != n_classes)
            return dp_fail(DP_ERR_INVALID, "%s: %d regression targets per row, but %d outputs (n_classes) and %s", what,
                           d->n_targets, n_classes, d->t ? "a target array" : "no target array");
        for (size_t i = 0; i < d->n * (size_t)d->n_targets; i++)
            if (!isfinite(d->t[i]))
                return dp_fail(DP_ERR_NONFINITE, "%s: a regression target is not finite (NaN or Inf); every target "
                               "must be a finite number", what);
    }
    for (size_t i = 0; i < d->n; i++)
        if (d->y[i] < 0 || d->y[i] >= n_classes)
            return dp_fail(DP_ERR_RANGE, "%s: a label is outside 0..%d; labels must lie in 0..K-1 for K classes",
                           what, n_classes - 1);
    return DP_OK;
}

void dp_dataset_stats(const dp_dataset *d, double *mean, double *std) {
    size_t total = d ? d->n * d->dim : 0;
    double m = 0.0, v = 0.0;
    if (total > 0) {
        /* two passes in double: the mean, then squared deviations from it */
        double sum = 0.0;
        for (size_t i = 0; i < total; i++) sum += d->x[i];
        m = sum / (double)total;
        double ss = 0.0;
        for (size_t i = 0; i < total; i++) {
            double e = d->x[i] - m;
            ss += e * e;
        }
        v = ss / (double)total;
    }
    if (mean) *mean = m;
    if (std) *std = sqrt(v);
}

void dp_dataset_normalize(dp_dataset *d, double mean, double std) {
    if (!d) return;
    size_t total = d->n * d->dim;
    double inv = (std > 0.0 && isfinite(std)) ? 1.0 / std : 1.0;
    for (size_t i = 0; i < total; i++) d->x[i] = (float)(((double)d->x[i] - mean) * inv);
}
