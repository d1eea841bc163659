/* train_private.c: the smallest complete use of dpsgd.
 *
 * Makes a synthetic two-class problem in memory (two Gaussian blobs in 16-D), builds a small
 * MLP from a spec string, trains it with DP-SGD (Poisson sampling, ghost clipping, Gaussian
 * noise calibrated for epsilon = 2 at delta = 1e-5) and prints the test accuracy and the
 * privacy spent. Build: see docs/build.md (`cc train_private.c $(pkg-config --cflags --libs dpsgd)`).
 */
#include <stdio.h>
#include "dpsgd.h"

enum { DIM = 16, CLASSES = 2 };

/* n points: label i % 2, features N(+-0.5, 1) per coordinate. Memory from dp_alloc, owned by d. */
static dp_status make_blobs(dp_dataset *d, size_t n, uint64_t seed) {
    dp_rng rng;
    dp_rng_seed(&rng, seed);
    d->n = n;
    d->c = DIM, d->h = 1, d->w = 1, d->dim = DIM;
    d->n_classes = CLASSES;
    d->x = dp_alloc(sizeof(float) * n * DIM);
    d->y = dp_alloc(sizeof(int32_t) * n);
    if (!d->x || !d->y) return DP_ERR_NOMEM; /* dp_dataset_free() copes with a partial struct */
    for (size_t i = 0; i < n; i++) {
        d->y[i] = (int32_t)(i % CLASSES);
        double mean = d->y[i] ? 0.5 : -0.5;
        for (size_t j = 0; j < DIM; j++) d->x[i * DIM + j] = (float)(mean + dp_rng_normal(&rng));
    }
    return DP_OK;
}

int main(void) {
    dp_dataset train = {0}, test = {0};
    dp_model *model = NULL;
    dp_train_result r;
    dp_status st;
    int rc = 1;

    if ((st = make_blobs(&train, 2000, 1)) != DP_OK || (st = make_blobs(&test, 1000, 2)) != DP_OK) goto fail;
    if ((st = dp_dataset_validate(&train, "training set", 1, CLASSES)) != DP_OK) goto fail;
    if ((st = dp_model_create("flatten linear(32) tanh linear(2)", DIM, 1, 1, &model)) != DP_OK) goto fail;
    dp_rng rng;
    dp_rng_seed(&rng, 42);
    dp_model_init(model, &rng);

    dp_train_params p = dp_train_default_params();
    p.epochs = 5;
    p.expected_batch = 200; /* q = 200 / 2000 = 0.1, 10 steps per epoch */
    p.target_epsilon = 2.0; /* sigma is calibrated for (2, 1e-5)-DP over the 50 steps */
    p.delta = 1e-5;
    p.max_grad_norm = 1.0;
    p.optim.lr = 0.5;
    p.seed = 7;
    if ((st = dp_train(model, &train, &test, &p, &r)) != DP_OK) goto fail;

    printf("test accuracy %.2f%%  loss %.4f\n", 100.0 * r.test_accuracy, r.test_loss);
    printf("privacy: epsilon %.3f at delta %g (sigma %.3f, q %.3f, %ld steps)\n", r.epsilon, r.delta, r.sigma, r.q,
           r.steps);
    rc = r.test_accuracy > 0.5 ? 0 : 1; /* better than chance, or something is wrong */
    if (rc) fprintf(stderr, "train_private: accuracy %.3f is no better than chance\n", r.test_accuracy);
    goto done;
fail:
    fprintf(stderr, "train_private: %s: %s\n", dp_strerror(st), dp_last_error());
done:
    dp_model_destroy(model);
    dp_dataset_free(&train);
    dp_dataset_free(&test);
    return rc;
}
