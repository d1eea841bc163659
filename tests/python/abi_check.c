/* Prints, as JSON, the size of every struct the Python package mirrors with ctypes and the offset
 * of each field, and the names of the X-macro lists, so that tests/python/test_abi.py can compare
 * them with python/dpsgd/_capi.py. */
#include <stddef.h>
#include <stdio.h>

#include "dpsgd.h"

#define S(T) printf("%s\"%s\": {\"size\": %zu, \"fields\": {", first++ ? ", " : "", #T, sizeof(T)); nf = 0
#define F(T, f) printf("%s\"%s\": %zu", nf++ ? ", " : "", #f, offsetof(T, f))
#define E() printf("}}")

int main(void) {
    int first = 0, nf = 0;
    printf("{\"structs\": {");
    S(dp_rng); F(dp_rng, s); F(dp_rng, has_spare); F(dp_rng, spare); E();
    S(dp_dataset); F(dp_dataset, n); F(dp_dataset, c); F(dp_dataset, h); F(dp_dataset, w); F(dp_dataset, dim);
    F(dp_dataset, x); F(dp_dataset, y); F(dp_dataset, n_classes); F(dp_dataset, t); F(dp_dataset, n_targets); E();
    S(dp_accounting_params); F(dp_accounting_params, eps_error); F(dp_accounting_params, delta_error);
    F(dp_accounting_params, max_points); E();
    S(dp_epsilon_report); F(dp_epsilon_report, epsilon); F(dp_epsilon_report, estimate); F(dp_epsilon_report, lower);
    F(dp_epsilon_report, upper); F(dp_epsilon_report, eps_error); F(dp_epsilon_report, approximate);
    F(dp_epsilon_report, order); E();
    S(dp_transformer_params); F(dp_transformer_params, vocab); F(dp_transformer_params, seq_len);
    F(dp_transformer_params, width); F(dp_transformer_params, heads); F(dp_transformer_params, layers);
    F(dp_transformer_params, ffn); F(dp_transformer_params, n_classes); F(dp_transformer_params, pre_norm);
    F(dp_transformer_params, gelu); F(dp_transformer_params, pool); F(dp_transformer_params, dropout);
    F(dp_transformer_params, train_last); E();
    S(dp_optim_params); F(dp_optim_params, kind); F(dp_optim_params, lr); F(dp_optim_params, momentum);
    F(dp_optim_params, dampening); F(dp_optim_params, nesterov); F(dp_optim_params, weight_decay);
    F(dp_optim_params, beta1); F(dp_optim_params, beta2); F(dp_optim_params, eps); E();
    S(dp_clip_params); F(dp_clip_params, mode); F(dp_clip_params, max_grad_norm); F(dp_clip_params, mem_budget);
    F(dp_clip_params, group); E();
    S(dp_train_progress); F(dp_train_progress, epoch); F(dp_train_progress, epochs); F(dp_train_progress, step);
    F(dp_train_progress, steps); F(dp_train_progress, step_in_epoch); F(dp_train_progress, steps_per_epoch);
    F(dp_train_progress, train_loss); F(dp_train_progress, test_accuracy); F(dp_train_progress, test_loss);
    F(dp_train_progress, epsilon); F(dp_train_progress, elapsed); F(dp_train_progress, epoch_end);
    F(dp_train_progress, max_grad_norm); E();
    S(dp_train_params); F(dp_train_params, clipping); F(dp_train_params, mem_budget); F(dp_train_params, no_dp);
    F(dp_train_params, max_grad_norm); F(dp_train_params, noise_multiplier); F(dp_train_params, target_epsilon);
    F(dp_train_params, delta); F(dp_train_params, accountant); F(dp_train_params, expected_batch);
    F(dp_train_params, physical_batch); F(dp_train_params, epochs); F(dp_train_params, optim);
    F(dp_train_params, seed); F(dp_train_params, noise_seeded); F(dp_train_params, noise_seed);
    F(dp_train_params, report_nonprivate); F(dp_train_params, ema_decay); F(dp_train_params, test_private);
    F(dp_train_params, eval_batch); F(dp_train_params, progress); F(dp_train_params, progress_user);
    F(dp_train_params, checkpoint_dir); F(dp_train_params, checkpoint_every); F(dp_train_params, resume);
    F(dp_train_params, force); F(dp_train_params, data_id); F(dp_train_params, threads); F(dp_train_params, comm);
    F(dp_train_params, stop); F(dp_train_params, clip_quantile); F(dp_train_params, clip_lr);
    F(dp_train_params, clip_count_noise); F(dp_train_params, lr_schedule); F(dp_train_params, augmult);
    F(dp_train_params, augment_pad); F(dp_train_params, augment_flip); F(dp_train_params, prior_sigma); E();
    S(dp_train_result); F(dp_train_result, test_accuracy); F(dp_train_result, test_loss);
    F(dp_train_result, epsilon); F(dp_train_result, delta); F(dp_train_result, sigma); F(dp_train_result, q);
    F(dp_train_result, steps); F(dp_train_result, steps_per_epoch); F(dp_train_result, seconds);
    F(dp_train_result, mean_batch); F(dp_train_result, empty_batches); F(dp_train_result, nonfinite_samples);
    F(dp_train_result, peak_bytes); F(dp_train_result, max_grad_norm);
    F(dp_train_result, noise_multiplier_gradient); E();
    S(dp_trainer_stats); F(dp_trainer_stats, step); F(dp_trainer_stats, batch); F(dp_trainer_stats, loss);
    F(dp_trainer_stats, nonfinite); E();
    S(dp_trainer_info); F(dp_trainer_info, q); F(dp_trainer_info, sigma); F(dp_trainer_info, steps);
    F(dp_trainer_info, steps_per_epoch); F(dp_trainer_info, secret_noise); E();
    printf("}, \"sig_atomic_t\": %zu", sizeof(sig_atomic_t));
#define NAME(e, text, ...) printf("%s\"%s\"", n++ ? ", " : "", text);
#define ENUMNAME(e, ...) printf("%s\"%s\"", n++ ? ", " : "", #e);
    int n = 0;
    printf(", \"status\": [");
    DP_STATUS_LIST(ENUMNAME)
    printf("], \"clip\": [");
    n = 0;
    DP_CLIP_LIST(NAME)
    printf("], \"layers\": [");
    n = 0;
    DP_LAYER_LIST(NAME)
    printf("], \"accountants\": [");
    n = 0;
#define ACCT(e, name, bound) printf("%s\"%s\"", n++ ? ", " : "", #name);
    DP_ACCOUNTANT_LIST(ACCT)
    printf("], \"optimizers\": [");
    for (int k = 0; k < DP_OPT_COUNT; k++) printf("%s\"%s\"", k ? ", " : "", dp_optim_name((dp_optim_kind)k));
    printf("]}\n");
    return 0;
}
