/* test_transformer.c: the graph engine on sequence models and transformers. Every clipping
 * mode against the microbatch reference (one sample at a time, plain backward, clip, sum),
 * with and without padding and frozen blocks; per-layer norms equal across modes; the
 * frozen prefix runs as inference (its activations are not kept); safetensors round trip
 * with Hugging Face names; spec errors for the new layers. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "dpsgd.h"
#include "test.h"

static dp_rng R;

/* token batch [B, T]: ids in 0..V-1, with padding (-1) after a random length when pad != 0 */
static void make_tokens(float *x, int B, int T, int V, int pad) {
    for (int b = 0; b < B; b++) {
        int L = pad ? 1 + (int)(dp_rng_u64(&R) % (uint64_t)T) : T;
        if (pad && b == 0) L = T; /* one full row */
        for (int t = 0; t < T; t++) x[(size_t)b * T + t] = t < L ? (float)(dp_rng_u64(&R) % (uint64_t)V) : -1.0f;
    }
    if (pad && B > 1 && T > 3) { /* a repeated id inside one row (embedding ghost pairs) */
        x[(size_t)1 * T + 0] = 3;
        x[(size_t)1 * T + 1] = 3;
    }
}

/* The microbatch reference and every mode on one model and batch. */
static void check_modes_model(dp_model *m, const char *what, const float *x, int B) {
    size_t np = dp_model_num_params(m), dim = dp_model_input_size(m);
    int K = dp_model_output_size(m), L = dp_model_num_layers(m);
    float *dz = dp_alloc(sizeof(float) * B * K);
    int32_t *y = dp_alloc(sizeof(int32_t) * B);
    for (int b = 0; b < B; b++) y[b] = (int32_t)(dp_rng_u64(&R) % (uint64_t)K);
    float *g = dp_alloc(sizeof(float) * B * np), *ref = dp_calloc(np, sizeof(float));
    double *rn = dp_alloc(sizeof(double) * B), *srt = dp_alloc(sizeof(double) * B);
    const float *logits;
    for (int b = 0; b < B; b++) {
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x + b * dim, 1, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y + b, 1, K, NULL, dz));
        CHECK_OK(dp_model_backward(m, dz, 1));
        memcpy(g + (size_t)b * np, dp_model_grad(m), sizeof(float) * np);
        double s = 0;
        for (size_t j = 0; j < np; j++) s += (double)g[(size_t)b * np + j] * g[(size_t)b * np + j];
        srt[b] = rn[b] = sqrt(s);
    }
    /* C between the sorted norms around the median: about half the samples are clipped */
    for (int i = 1; i < B; i++)
        for (int j = i; j > 0 && srt[j] < srt[j - 1]; j--) {
            double t = srt[j];
            srt[j] = srt[j - 1];
            srt[j - 1] = t;
        }
    const double C = 0.5 * (srt[B / 2 - 1] + srt[B / 2]);
    for (int b = 0; b < B; b++) {
        double r = C / (rn[b] + 1e-6);
        if (r > 1) r = 1;
        for (size_t j = 0; j < np; j++) ref[j] += (float)(r * g[(size_t)b * np + j]);
    }
    int clipped = 0;
    for (int b = 0; b < B; b++) clipped += rn[b] > C;
    CHECK(clipped > 0 && clipped < B); /* the test exercises both sides of the clip */
    const unsigned char *mask = dp_model_trainable_mask(m);
    float *norms = dp_alloc(sizeof(float) * B), *fac = dp_alloc(sizeof(float) * B);
    double *sql = dp_alloc(sizeof(double) * B * L), *sql0 = dp_alloc(sizeof(double) * B * L);
    for (int mode = 0; mode < DP_CLIP_COUNT; mode++) {
        dp_clip_params cp = {(dp_clip_mode)mode, C, 0, 0};
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
        int bad = -1;
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, fac, &bad));
        CHECK(bad == 0);
        double e = t_rel_err(dp_model_grad(m), ref, np), en = 0;
        for (int b = 0; b < B; b++) {
            double d = fabs(norms[b] - rn[b]) / rn[b];
            if (d > en) en = d;
        }
        CHECK(e < 1e-4);
        CHECK(en < 1e-4);
        if (e >= 1e-4 || en >= 1e-4)
            fprintf(stderr, "%s, mode %s: clipped sum rel err %g, norm rel err %g\n", what, dp_clip_mode_name((dp_clip_mode)mode), e, en);
        for (size_t j = 0; j < np; j++)
            if (!mask[j] && dp_model_grad(m)[j] != 0.0f) {
                CHECK(!"frozen coordinate got a gradient");
                break;
            }
        /* per-layer norms: same in every mode, and they add up to the total */
        CHECK_OK(dp_model_layer_sq_norms(m, (dp_clip_mode)mode, dz, B, mode ? sql : sql0));
        if (mode) {
            double worst = 0;
            for (size_t j = 0; j < (size_t)B * L; j++) {
                double d = fabs(sql[j] - sql0[j]) / (fabs(sql0[j]) + 1e-12);
                if (sql0[j] > 1e-12 && d > worst) worst = d;
            }
            CHECK(worst < 2e-4);
            if (worst >= 2e-4) fprintf(stderr, "%s: per-layer norms, mode %s vs vanilla: rel err %g\n", what, dp_clip_mode_name((dp_clip_mode)mode), worst);
        }
        for (int b = 0; b < B; b++) {
            double s = 0;
            for (int k = 0; k < L; k++) s += sql0[(size_t)b * L + k];
            CHECK(fabs(sqrt(s) - rn[b]) <= 1e-4 * rn[b]);
        }
    }
    /* auto under different memory budgets: everything in a second pass, a mix, everything kept */
    size_t base = dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 0);
    size_t budgets[4] = {1, base + base / 20, base + base / 4, (size_t)1 << 40};
    for (int q = 0; q < 4; q++) {
        dp_clip_params cp = {DP_CLIP_AUTO, C, budgets[q], 0};
        char plan[4096];
        CHECK_OK(dp_model_describe_plan(m, &cp, B, plan, sizeof plan));
        if (q == 0) CHECK(strstr(plan, "keep") == NULL || strstr(plan, "keeps") != NULL);
        if (q == 0) CHECK(strstr(plan, "sum keep") == NULL);
        if (q == 3) CHECK(strstr(plan, "second pass ") == NULL);
        dp_model_zero_grad(m);
        CHECK_OK(dp_model_forward(m, x, B, 1, NULL, &logits));
        CHECK_OK(dp_loss_xent(logits, y, B, K, NULL, dz));
        size_t before = dp_mem_get().live_bytes;
        dp_mem_reset_peak();
        CHECK_OK(dp_model_clipped_grad(m, &cp, dz, B, norms, NULL, NULL));
        size_t used = dp_mem_get().peak_bytes - before;
        double e = t_rel_err(dp_model_grad(m), ref, np);
        CHECK(e < 1e-4);
        if (e >= 1e-4) fprintf(stderr, "%s, auto with budget %zu: rel err %g\n%s", what, budgets[q], e, plan);
        /* the forward's buffers are already there: the step adds only what the plan keeps */
        if (q > 0 && q < 3) {
            size_t fwd = dp_model_plan_bytes(m, DP_CLIP_GHOST, B, 1);
            CHECK(fwd + used <= budgets[q] + 4096);
            if (fwd + used > budgets[q] + 4096) fprintf(stderr, "%s: auto budget %zu, used %zu + %zu\n%s", what, budgets[q], fwd, used, plan);
        }
    }
    /* empty batch */
    dp_model_zero_grad(m);
    dp_clip_params cp = {DP_CLIP_GHOST, C, 0, 0};
    CHECK_OK(dp_model_forward(m, x, 0, 1, NULL, &logits));
    CHECK_OK(dp_model_clipped_grad(m, &cp, dz, 0, NULL, NULL, NULL));
    double s = 0;
    for (size_t j = 0; j < np; j++) s += fabs(dp_model_grad(m)[j]);
    CHECK(s == 0);
    dp_free(dz); dp_free(y); dp_free(g); dp_free(ref); dp_free(rn); dp_free(srt); dp_free(norms); dp_free(fac); dp_free(sql); dp_free(sql0);
}

static dp_transformer_params small_params(void) {
    dp_transformer_params p = dp_transformer_default_params();
    p.vocab = 17;
    p.seq_len = 6;
    p.width = 8;
    p.heads = 2;
    p.layers = 2;
    p.ffn = 12;
    p.n_classes = 3;
    return p;
}

/* A transformer of p with BERT initialisation plus N(0, 0.3^2) on every weight (larger than
 * BERT's 0.02, so that every layer matters numerically), the listed module-name prefixes
 * frozen, checked in every mode on B token rows (padded when pad). */
static void check_transformer(const dp_transformer_params *p, const char *const *frozen, int nfrozen, int B, int pad,
                              const char *what) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create_transformer(p, &m));
    if (!m) return;
    dp_model_init(m, &R);
    float *w = dp_model_params(m);
    for (size_t j = 0; j < dp_model_num_params(m); j++) w[j] += (float)(0.3 * dp_rng_normal(&R));
    for (int i = 0; i < nfrozen; i++) CHECK_OK(dp_model_set_frozen_prefix(m, frozen[i], 1, NULL));
    float *x = dp_alloc(sizeof(float) * B * p->seq_len);
    make_tokens(x, B, p->seq_len, p->vocab, pad);
    check_modes_model(m, what, x, B);
    dp_free(x);
    dp_model_destroy(m);
}

static void test_transformer_modes(int pre_norm, int pool, int pad, int train_last) {
    dp_transformer_params p = small_params();
    p.pre_norm = pre_norm;
    p.pool = pool;
    p.train_last = train_last;
    p.gelu = !pre_norm;
    char what[96];
    snprintf(what, sizeof what, "transformer pre_norm %d pool %d pad %d train_last %d", pre_norm, pool, pad, train_last);
    check_transformer(&p, NULL, 0, 7, pad, what);
}

/* Only some of an attention's q, k, v projections train (and nothing in front of them):
 * the attention backward computes gradients for those inputs only. */
static void test_partial_attention(const char *const *frozen, int nfrozen) {
    dp_transformer_params p = small_params();
    char what[160];
    snprintf(what, sizeof what, "partial attention (%d frozen, first %s)", nfrozen, frozen[0]);
    check_transformer(&p, frozen, nfrozen, 5, 1, what);
}

static void test_spec_seq(const char *spec, int T, int pad) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create(spec, 1, 1, T, &m));
    if (!m) return;
    CHECK(dp_model_input_is_tokens(m));
    dp_model_init(m, &R);
    float *w = dp_model_params(m);
    for (size_t j = 0; j < dp_model_num_params(m); j++) w[j] += (float)(0.2 * dp_rng_normal(&R));
    int B = 6;
    float *x = dp_alloc(sizeof(float) * B * T);
    make_tokens(x, B, T, dp_model_vocab(m), pad);
    check_modes_model(m, spec, x, B);
    dp_free(x);
    dp_model_destroy(m);
}

static void test_spec_image(const char *spec, int c, int h, int w) {
    dp_model *m = NULL;
    CHECK_OK(dp_model_create(spec, c, h, w, &m));
    if (!m) return;
    dp_model_init(m, &R);
    int B = 5;
    size_t dim = (size_t)c * h * w;
    float *x = dp_alloc(sizeof(float) * B * dim);
    for (size_t j = 0; j < B * dim; j++) x[j] = (float)dp_rng_normal(&R);
    check_modes_model(m, spec, x, B);
    dp_free(x);
    dp_model_destroy(m);
}

/* Fine-tuning the last block: the frozen prefix keeps no activations. */
static void test_frozen_prefix_memory(void) {
    dp_transformer_params p = small_params();
    p.layers = 6;
    p.n_classes = 3;
    p.seq_len = 16;
    p.width = 32;
    p.ffn = 64;
    dp_model *full = NULL, *last = NULL, *one = NULL;
    CHECK_OK(dp_model_create_transformer(&p, &full));
    p.train_last = 1;
    CHECK_OK(dp_model_create_transformer(&p, &last));
    p.layers = 12;
    CHECK_OK(dp_model_create_transformer(&p, &one));
    if (!full || !last || !one) return;
    size_t bf = dp_model_plan_bytes(full, DP_CLIP_GHOST, 64, 0), bl = dp_model_plan_bytes(last, DP_CLIP_GHOST, 64, 0);
    size_t b1 = dp_model_plan_bytes(one, DP_CLIP_GHOST, 64, 0);
    /* the frozen blocks in front of the trained one keep nothing: the memory does not grow
     * with their number (5 or 11), and is under half that of training all 6 */
    CHECK(bl == b1 && bl * 2 < bf);
    if (!(bl == b1 && bl * 2 < bf)) fprintf(stderr, "plan bytes: all 6 blocks %zu, last of 6 %zu, last of 12 %zu\n", bf, bl, b1);
    dp_model_destroy(one);
    /* the plan matches what a step allocates */
    dp_model_init(last, &R);
    int B = 64;
    float *x = dp_alloc(sizeof(float) * B * p.seq_len), *dz = dp_alloc(sizeof(float) * B * 3);
    int32_t *y = dp_calloc(B, sizeof(int32_t));
    make_tokens(x, B, p.seq_len, p.vocab, 1);
    const float *logits;
    size_t before = dp_mem_get().live_bytes;
    dp_mem_reset_peak();
    CHECK_OK(dp_model_forward(last, x, B, 1, NULL, &logits));
    CHECK_OK(dp_loss_xent(logits, y, B, 3, NULL, dz));
    dp_clip_params cp = {DP_CLIP_GHOST, 1.0, 0, 0};
    CHECK_OK(dp_model_clipped_grad(last, &cp, dz, B, NULL, NULL, NULL));
    size_t used = dp_mem_get().peak_bytes - before;
    CHECK(used <= bl + 4096 && used * 10 >= bl * 9);
    if (!(used <= bl + 4096 && used * 10 >= bl * 9)) fprintf(stderr, "plan %zu bytes, step used %zu\n", bl, used);
    /* the inference prefix (pooled buffers, elementwise ops in place) computes the same
     * logits as the fully trainable model with the same weights */
    dp_model_init(full, &R);
    float *wl = dp_model_params(last), *wf = dp_model_params(full);
    for (size_t j = 0; j < dp_model_num_params(full); j++) wf[j] += (float)(0.2 * dp_rng_normal(&R));
    memcpy(wl, wf, sizeof(float) * dp_model_num_params(full));
    const float *lf, *ll;
    CHECK_OK(dp_model_forward(full, x, B, 1, NULL, &lf));
    CHECK_OK(dp_model_forward(last, x, B, 1, NULL, &ll));
    CHECK(memcmp(lf, ll, sizeof(float) * 3 * B) == 0);
    dp_free(x); dp_free(dz); dp_free(y);
    dp_model_destroy(full);
    dp_model_destroy(last);
}

static void test_names_and_io(void) {
    dp_transformer_params p = small_params();
    dp_model *m = NULL, *m2 = NULL;
    CHECK_OK(dp_model_create_transformer(&p, &m));
    CHECK_OK(dp_model_create_transformer(&p, &m2));
    if (!m || !m2) return;
    dp_model_init(m, &R);
    float *d;
    size_t n;
    CHECK_OK(dp_model_find_tensor(m, "bert.encoder.layer.1.attention.self.query.weight", &d, &n));
    CHECK(n == 64);
    CHECK_OK(dp_model_find_tensor(m, "bert.embeddings.word_embeddings.weight", &d, &n));
    CHECK(n == 17 * 8);
    CHECK_OK(dp_model_find_tensor(m, "classifier.bias", &d, &n));
    CHECK(n == 3);
    int64_t sh[4];
    int t;
    for (t = 0; t < dp_model_num_tensors(m); t++) {
        const char *nm;
        dp_model_tensor(m, t, &nm, NULL, NULL);
        if (!strcmp(nm, "bert.encoder.layer.0.intermediate.dense.weight")) break;
    }
    CHECK(dp_model_tensor_shape(m, t, sh) == 2 && sh[0] == 12 && sh[1] == 8);
    char path[] = "/tmp/dp_test_transformer_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_OK(dp_model_save_safetensors(m, path));
    CHECK_OK(dp_model_load_safetensors(m2, path));
    CHECK(memcmp(dp_model_params(m), dp_model_params(m2), sizeof(float) * dp_model_num_params(m)) == 0);
    /* a model of another shape refuses the file, naming a tensor */
    dp_transformer_params p3 = p;
    p3.width = 12;
    dp_model *m3 = NULL;
    CHECK_OK(dp_model_create_transformer(&p3, &m3));
    if (m3) {
        CHECK(dp_model_load_safetensors(m3, path) != DP_OK);
        CHECK(strstr(dp_last_error(), "bert.") != NULL);
        dp_model_destroy(m3);
    }
    /* a truncated file is refused clearly */
    FILE *f = fopen(path, "r+b");
    if (f) {
        CHECK(ftruncate(fileno(f), 40) == 0);
        fclose(f);
    }
    CHECK(dp_model_load_safetensors(m2, path) != DP_OK);
    CHECK(strstr(dp_last_error(), path) != NULL);
    unlink(path);
    /* freezing by name */
    int cnt = 0;
    CHECK_OK(dp_model_set_frozen_prefix(m, "bert.encoder.layer.0", 1, &cnt));
    CHECK(cnt == 8); /* query key value, output dense + LayerNorm, intermediate, output dense + LayerNorm */
    CHECK(dp_model_set_frozen_prefix(m, "bert.nothing", 1, NULL) != DP_OK);
    CHECK(dp_model_set_frozen_prefix(m, "bert", 1, NULL) == DP_OK);
    CHECK(dp_model_set_frozen_prefix(m, "classifier", 1, NULL) != DP_OK); /* nothing left to train */
    /* bad parameters */
    dp_transformer_params bad = p;
    bad.heads = 3;
    CHECK(dp_model_create_transformer(&bad, &m3) != DP_OK && strstr(dp_last_error(), "heads 3: must be >= 1 and divide width"));
    bad = p;
    bad.train_last = 5;
    CHECK(dp_model_create_transformer(&bad, &m3) != DP_OK && strstr(dp_last_error(), "train_last 5:"));
    /* token ids out of range are refused by forward */
    float x[6] = {1, 2, 17, 0, -1, -1};
    const float *logits;
    CHECK(dp_model_forward(m2, x, 1, 0, NULL, &logits) == DP_ERR_RANGE);
    x[2] = 1.5f;
    CHECK(dp_model_forward(m2, x, 1, 0, NULL, &logits) == DP_ERR_RANGE);
    dp_model_destroy(m);
    dp_model_destroy(m2);
}

static void test_seq_spec_errors(void) {
    dp_model *m = NULL;
    const char *bad[] = {"linear(3) embedding(10,4)", "embedding(10)", "embedding(10,4) conv2d(3,2)", "layernorm linear(3)",
                         "embedding(10,4) add", "embedding(10,4) attention", "conv2d(4,3) groupnorm(3) flatten linear(2)",
                         "embedding(10,4)@ linear(2)", "embedding(10,4) layernorm(0) linear(2)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dp_status st = dp_model_create(bad[i], 1, 1, 8, &m);
        if (st == DP_OK) {
            fprintf(stderr, "spec '%s' accepted\n", bad[i]);
            dp_model_destroy(m);
            CHECK(!"bad spec accepted");
        } else
            CHECK(strstr(dp_last_error(), "model spec") != NULL);
    }
}

int main(void) {
    dp_rng_seed(&R, 11);
    /* the reference layers: embedding, LayerNorm, per-token Linear, mean pooling */
    test_spec_seq("embedding(13,6)@emb layernorm@ln linear(5)@proj meanpool linear(4)@head", 7, 0);
    test_spec_seq("embedding(13,6) posembed layernorm linear(5) gelu linear(6) rmsnorm meanpool linear(3)", 7, 1);
    test_spec_seq("embedding(11,4) posembed rmsnorm(1e-6) linear(8) relu firsttoken dropout(0) linear(3)", 5, 1);
    test_spec_image("conv2d(4,3,p1) groupnorm(2) relu conv2d(4,3) gelu flatten linear(3)", 2, 6, 6);
    for (int pad = 0; pad <= 1; pad++) {
        test_transformer_modes(0, DP_POOL_FIRST, pad, -1);
        test_transformer_modes(1, DP_POOL_MEAN, pad, -1);
        test_transformer_modes(0, DP_POOL_MEAN, pad, 1);
        test_transformer_modes(1, DP_POOL_FIRST, pad, 1);
    }
    test_transformer_modes(0, DP_POOL_FIRST, 1, 0);
    static const char *const only_q[] = {"bert.embeddings", "bert.encoder.layer.0.attention.self.key",
                                         "bert.encoder.layer.0.attention.self.value"};
    static const char *const only_v[] = {"bert.embeddings", "bert.encoder.layer.0.attention.self.key",
                                         "bert.encoder.layer.0.attention.self.query"};
    static const char *const only_k[] = {"bert.embeddings", "bert.encoder.layer.0.attention.self.query",
                                         "bert.encoder.layer.0.attention.self.value"};
    test_partial_attention(only_q, 3);
    test_partial_attention(only_v, 3);
    test_partial_attention(only_k, 3);
    test_frozen_prefix_memory();
    test_names_and_io();
    test_seq_spec_errors();
    return t_finish("test_transformer");
}
