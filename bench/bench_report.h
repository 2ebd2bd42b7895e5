/* bench_report.h: the figures of a training-step benchmark, as an aligned table and as JSON. */
#ifndef PEFT_BENCH_REPORT_H
#define PEFT_BENCH_REPORT_H

#include <stdint.h>

#include "model.h"

/* What the whole run shares. */
struct bench_info {
    const char *corename;     /* openblas_get_corename() */
    const char *coretype_env; /* OPENBLAS_CORETYPE, or NULL */
    int32_t threads;          /* openblas_get_num_threads() */
    int32_t B, T, warmup, steps, repeats, rank;
    double lr;
    const char *precision;    /* "fp32" or "bf16" */
};

/* One (size, method) measurement. */
struct bench_result {
    char size[32];            /* "256x4" */
    char method[32];          /* "full", "lora" */
    struct model_config cfg;
    uint64_t trainable;       /* entries the optimizer updates */
    double optim_bytes;       /* AdamW moments: 2 * 4 * trainable */
    double *step_seconds;     /* (repeats) mean step time of each repeat */
    double step_median;       /* median of step_seconds */
    double tokens_per_second; /* B*T / step_median */
    double peak_rss_mib;      /* the process's peak resident memory by the end of the steps */
    double flops_per_token;   /* credited FLOPs (bench_cost.h) */
    double model_flops;       /* model_train_flops_per_token */
    double gflops;            /* achieved: flops_per_token * B*T / step_median / 1e9 */
    double gemm_seconds;      /* the step's sgemm calls at their measured rates */
    double sgemm_gflops;      /* the same calls' FLOPs / gemm_seconds / 1e9 */
    double peak_fraction;     /* gflops / sgemm_gflops */
    float loss_first, loss_last;
};

void report_header(const struct bench_info *info);
/* Per size: its shape and parameter count, once before the size's rows. */
void report_model(const char *size, const struct model *m, int32_t T);
void report_table_head(void);
void report_row(const struct bench_result *r);
/* -1 with "PATH: reason". */
int report_json(const char *path, const struct bench_info *info, const struct bench_result *r,
                int32_t n);

#endif
