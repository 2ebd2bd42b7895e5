/* bench_report.c: the benchmark's table and JSON file (see bench_report.h). */
#include "bench_report.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

void report_header(const struct bench_info *info) {
    printf("peftkit training-step benchmark\n");
    printf("OpenBLAS core: %s   threads: %d   OPENBLAS_CORETYPE: %s   precision: %s\n",
           info->corename, (int)info->threads, info->coretype_env ? info->coretype_env : "(unset)",
           info->precision);
    printf("batch B=%d x seq T=%d = %d tokens/step; %d warm-up + %d timed steps, median of %d "
           "repeats\n",
           (int)info->B, (int)info->T, (int)(info->B * info->T), (int)info->warmup,
           (int)info->steps, (int)info->repeats);
    printf("step = batch_begin, zero_grads, forward, backward, collect_grads, AdamW (lr %g, "
           "clip 1), step_end\n",
           info->lr);
    printf("methods: full = every projection trainable (all-linear); lora = r %d on all seven "
           "projections, base frozen;\n"
           "  lota = 10%% of the seven projections' weights (a random mask), gradient sampled "
           "at the mask\n",
           (int)info->rank);
    printf("FLOP/token credited: 2P forward + 2P input grads + 2*(weights given a dense dW) + "
           "6*(adapter entries)\n"
           "  + attention (the causal blocks' products); P = projection + head weights. full (tied head, frozen) "
           "= 6P + attn - 2VC;\n"
           "  lora = 4P + 6*(A, B entries) + attn; lota = 4P + 2*(masked entries, sampled) "
           "+ attn.\n"
           "sgemm = GFLOP/s of the step's own sgemm calls, each timed alone (best of 5 rounds); "
           "of peak = GFLOP/s / sgemm\n");
}

void report_model(const char *size, const struct model *m, int32_t T) {
    const struct model_config *c = &m->cfg;
    printf("\n%s: d_model %d, layers %d, heads %d, kv heads %d, head_dim %d, d_ff %d, vocab %d, "
           "%.2fM params, 6N+attn %.2f MFLOP/token\n",
           size, (int)c->d_model, (int)c->n_layers, (int)c->n_heads, (int)c->n_kv_heads,
           (int)c->head_dim, (int)c->d_ff, (int)c->vocab, (double)m->n_params / 1e6,
           model_train_flops_per_token(c, T) / 1e6);
}

void report_table_head(void) {
    printf("%-8s %-6s %11s %9s %9s %10s %9s %8s %8s %7s %8s %8s\n", "size", "method",
           "trainable", "optim MB", "ms/step", "tokens/s", "MFLOP/tk", "GFLOP/s", "sgemm",
           "of peak", "gemm ms", "peak MiB");
}

void report_row(const struct bench_result *r) {
    printf("%-8s %-6s %11llu %9.2f %9.2f %10.0f %9.2f %8.1f %8.1f %6.1f%% %8.2f %8.0f\n",
           r->size, r->method, (unsigned long long)r->trainable, r->optim_bytes / 1e6,
           r->step_median * 1e3, r->tokens_per_second, r->flops_per_token / 1e6, r->gflops,
           r->sgemm_gflops, 100.0 * r->peak_fraction, r->gemm_seconds * 1e3, r->peak_rss_mib);
    fflush(stdout);
}

static cJSON *result_json(const struct bench_result *r, int32_t repeats) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "size", r->size);
    cJSON_AddStringToObject(o, "method", r->method);
    cJSON_AddNumberToObject(o, "d_model", r->cfg.d_model);
    cJSON_AddNumberToObject(o, "n_layers", r->cfg.n_layers);
    cJSON_AddNumberToObject(o, "n_heads", r->cfg.n_heads);
    cJSON_AddNumberToObject(o, "n_kv_heads", r->cfg.n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", r->cfg.head_dim);
    cJSON_AddNumberToObject(o, "d_ff", r->cfg.d_ff);
    cJSON_AddNumberToObject(o, "vocab", r->cfg.vocab);
    cJSON_AddNumberToObject(o, "trainable", (double)r->trainable);
    cJSON_AddNumberToObject(o, "optimizer_state_bytes", r->optim_bytes);
    cJSON_AddItemToObject(o, "step_seconds", cJSON_CreateDoubleArray(r->step_seconds, repeats));
    cJSON_AddNumberToObject(o, "step_seconds_median", r->step_median);
    cJSON_AddNumberToObject(o, "tokens_per_second", r->tokens_per_second);
    cJSON_AddNumberToObject(o, "peak_rss_mib", r->peak_rss_mib);
    cJSON_AddNumberToObject(o, "flops_per_token", r->flops_per_token);
    cJSON_AddNumberToObject(o, "model_train_flops_per_token", r->model_flops);
    cJSON_AddNumberToObject(o, "gflops", r->gflops);
    cJSON_AddNumberToObject(o, "sgemm_gflops", r->sgemm_gflops);
    cJSON_AddNumberToObject(o, "sgemm_seconds_per_step", r->gemm_seconds);
    cJSON_AddNumberToObject(o, "peak_fraction", r->peak_fraction);
    cJSON_AddNumberToObject(o, "loss_first", r->loss_first);
    cJSON_AddNumberToObject(o, "loss_last", r->loss_last);
    return o;
}

int report_json(const char *path, const struct bench_info *info, const struct bench_result *r,
                int32_t n) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "implementation", "peftkit");
    cJSON_AddStringToObject(root, "openblas_corename", info->corename);
    if (info->coretype_env)
        cJSON_AddStringToObject(root, "openblas_coretype_env", info->coretype_env);
    cJSON_AddNumberToObject(root, "threads", info->threads);
    cJSON_AddStringToObject(root, "precision", info->precision);
    cJSON_AddNumberToObject(root, "batch", info->B);
    cJSON_AddNumberToObject(root, "seq", info->T);
    cJSON_AddNumberToObject(root, "warmup", info->warmup);
    cJSON_AddNumberToObject(root, "steps", info->steps);
    cJSON_AddNumberToObject(root, "repeats", info->repeats);
    cJSON_AddNumberToObject(root, "lora_r", info->rank);
    cJSON_AddNumberToObject(root, "lr", info->lr);
    cJSON *arr = cJSON_AddArrayToObject(root, "results");
    for (int32_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, result_json(&r[i], info->repeats));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON_Print leaves no newline; overwrite the NUL and write len+1 */
    int rc = file_write_atomic(path, text, len + 1);
    free(text);
    return rc;
}
