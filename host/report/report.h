/*
 * report.h: the results of an A/B comparison and what is computed from them: the accuracy
 * matrix R[stage][task] of each arm, continual-learning figures, costs, and the report files
 * (report.md, results.csv) with the winner of each column marked.
 *
 * R[s][t] is the exact-match accuracy on task t after stage s (NAN where t was not evaluated).
 * With L the last stage:
 *   final average accuracy  = mean over t evaluated after L of R[L][t]
 *   forgetting of t         = max over s < L of R[s][t] - R[L][t] (tasks evaluated before L)
 *   backward transfer (BWT) = mean over tasks first trained at a stage s_t < L of
 *                             R[L][t] - R[s_t][t]
 */
#ifndef PEFT_REPORT_H
#define PEFT_REPORT_H

#include <stddef.h>
#include <stdint.h>

struct arm_stage {
    char *name;
    char *method;
    char *dir;                  /* "arms/ARM/STAGE", relative to the comparison's folder */
    int32_t *trained;           /* task indices this stage trained on */
    int32_t n_trained;
    double *acc, *loss;         /* (n_tasks) after the stage; NAN = not evaluated */
    uint64_t n_trainable;
    int64_t steps;
    int64_t adapter_bytes;
    double train_seconds, tokens_per_second, eval_seconds;
    int32_t complete;
    int32_t shared;             /* identical in every arm (same config hash): not a cost of the arm */
};

struct arm_result {
    char *name;
    int64_t seed;               /* the run's [run] seed */
    char *overrides;            /* "stage.adapt.method=lora, ..." */
    int32_t ok;                 /* every stage complete */
    char *error;                /* the arm's last error line when it failed */
    int32_t diverged;           /* it failed because a stage's loss or gradient went non-finite */
    struct arm_stage *stages;
    int32_t n_stages;
    int64_t *curve_step;        /* training loss curve over the whole chain */
    double *curve_loss;
    int32_t n_curve;
    int64_t peak_rss_kb;
    double wall_seconds;
};

struct compare_result {
    char *title;                /* the compare file */
    char **tasks;
    int32_t n_tasks;
    struct arm_result *arms;    /* (n_arms x n_seeds), arm-major: use compare_run */
    int32_t n_arms;
    int32_t n_seeds;            /* 1: one run per arm, no statistics across seeds */
    int32_t baseline;           /* the arm the paired tests compare against */
    double alpha;               /* the tests' significance level */
    uint64_t model_params;
};

enum { COMPARE_MAX_SEEDS = 64 }; /* [compare] seeds: at most this many */

/* Arm i's run with the seed_index-th seed. */
static inline const struct arm_result *compare_run(const struct compare_result *cr, int32_t arm,
                                                   int32_t seed_index) {
    return &cr->arms[(size_t)arm * (size_t)(cr->n_seeds > 0 ? cr->n_seeds : 1) + (size_t)seed_index];
}
/* Every run of the arm finished. */
int report_arm_ok(const struct compare_result *cr, int32_t arm);

/* The paired comparison of an arm with the baseline over seeds: d = arm - baseline per task
 * evaluated after the last stage and per seed (accuracy, percentage points). */
struct paired {
    int32_t n;                  /* pairs */
    double mean_diff;           /* mean of d (pp) */
    double ci_lo, ci_hi;        /* its 95% confidence interval (t, n - 1 df); NAN if n < 2 */
    double p_t, p_sign;         /* paired t-test and sign-flip test, two-sided; NAN if n < 2 */
};
struct paired report_paired(const struct compare_result *cr, int32_t arm);

double report_final_average(const struct arm_result *a, int32_t n_tasks);
/* NAN when the task was not evaluated both before and after the last stage. */
double report_forgetting(const struct arm_result *a, int32_t task);
double report_average_forgetting(const struct arm_result *a, int32_t n_tasks);
/* NAN when no task was trained before the last stage. */
double report_backward_transfer(const struct arm_result *a, int32_t n_tasks);

/* Costs of an arm: trainable entries, adapter bytes, train and eval time summed over the
 * stages that are not shared by every arm (all stages when every one is shared). */
uint64_t report_trainable(const struct arm_result *a);
int64_t report_adapter_bytes(const struct arm_result *a);
double report_train_seconds(const struct arm_result *a);
double report_eval_seconds(const struct arm_result *a);
double report_tokens_per_second(const struct arm_result *a); /* of the last stage */

/* Write DIR/report.md and DIR/results.csv (atomically). -1 with err_set. */
int report_write(const struct compare_result *cr, const char *dir, const char *const *plots,
                 int32_t n_plots);
void compare_result_free(struct compare_result *cr);

/* The rest of host/report's face: comparisons (compare.h) and their plots (svg.h). */
#include "compare.h"
#include "svg.h"

#endif
