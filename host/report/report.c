/* report.c: continual-learning figures, costs, report.md and results.csv of a comparison. */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* ---- figures ----------------------------------------------------------------------- */

static const struct arm_stage *last_stage(const struct arm_result *a) {
    return a->n_stages ? &a->stages[a->n_stages - 1] : NULL;
}

double report_final_average(const struct arm_result *a, int32_t n_tasks) {
    const struct arm_stage *L = last_stage(a);
    double sum = 0;
    int32_t n = 0;
    for (int32_t t = 0; L && t < n_tasks; t++)
        if (!isnan(L->acc[t])) sum += L->acc[t], n++;
    return n ? sum / n : NAN;
}

double report_forgetting(const struct arm_result *a, int32_t task) {
    const struct arm_stage *L = last_stage(a);
    if (!L || isnan(L->acc[task])) return NAN;
    double best = NAN;
    for (int32_t s = 0; s + 1 < a->n_stages; s++) {
        double v = a->stages[s].acc[task];
        if (!isnan(v) && (isnan(best) || v > best)) best = v;
    }
    return isnan(best) ? NAN : best - L->acc[task];
}

double report_average_forgetting(const struct arm_result *a, int32_t n_tasks) {
    double sum = 0;
    int32_t n = 0;
    for (int32_t t = 0; t < n_tasks; t++) {
        double f = report_forgetting(a, t);
        if (!isnan(f)) sum += f, n++;
    }
    return n ? sum / n : NAN;
}

double report_backward_transfer(const struct arm_result *a, int32_t n_tasks) {
    const struct arm_stage *L = last_stage(a);
    double sum = 0;
    int32_t n = 0;
    for (int32_t t = 0; L && t < n_tasks; t++) {
        /* The first stage that trained t, if it is not the last one. */
        int32_t first = -1;
        for (int32_t s = 0; s < a->n_stages && first < 0; s++)
            for (int32_t k = 0; k < a->stages[s].n_trained; k++)
                if (a->stages[s].trained[k] == t) first = s;
        if (first < 0 || first == a->n_stages - 1) continue;
        double then = a->stages[first].acc[t], now = L->acc[t];
        if (isnan(then) || isnan(now)) continue;
        sum += now - then;
        n++;
    }
    return n ? sum / n : NAN;
}

/* Does stage s count towards the arm's costs? */
static int costs(const struct arm_result *a, int32_t s) {
    int all_shared = 1;
    for (int32_t k = 0; k < a->n_stages; k++) all_shared &= a->stages[k].shared != 0;
    return all_shared || !a->stages[s].shared;
}

/* The arm's status cell: ok, or why it has no figures. */
static const char *report_status(const struct arm_result *a) {
    return a->ok ? "ok" : a->diverged ? "**diverged**" : "**failed**";
}

uint64_t report_trainable(const struct arm_result *a) {
    uint64_t n = 0;
    for (int32_t s = 0; s < a->n_stages; s++) n += costs(a, s) ? a->stages[s].n_trainable : 0;
    return n;
}

int64_t report_adapter_bytes(const struct arm_result *a) {
    int64_t n = 0;
    for (int32_t s = 0; s < a->n_stages; s++) n += costs(a, s) ? a->stages[s].adapter_bytes : 0;
    return n;
}

double report_train_seconds(const struct arm_result *a) {
    double t = 0;
    for (int32_t s = 0; s < a->n_stages; s++) t += costs(a, s) ? a->stages[s].train_seconds : 0;
    return t;
}

double report_eval_seconds(const struct arm_result *a) {
    double t = 0;
    for (int32_t s = 0; s < a->n_stages; s++) t += costs(a, s) ? a->stages[s].eval_seconds : 0;
    return t;
}

double report_tokens_per_second(const struct arm_result *a) {
    const struct arm_stage *L = last_stage(a);
    return L ? L->tokens_per_second : NAN;
}

/* ---- columns of the arms table ----------------------------------------------------- */

enum { BETTER_HIGH, BETTER_LOW };

struct column {
    const char *title;
    const char *csv;    /* its name in results.csv */
    int32_t better;
    double (*value)(const struct compare_result *cr, const struct arm_result *a);
    const char *format; /* printf format of the value */
};

static double col_final(const struct compare_result *cr, const struct arm_result *a) {
    return 100.0 * report_final_average(a, cr->n_tasks);
}
static double col_forgetting(const struct compare_result *cr, const struct arm_result *a) {
    return 100.0 * report_average_forgetting(a, cr->n_tasks);
}
static double col_bwt(const struct compare_result *cr, const struct arm_result *a) {
    return 100.0 * report_backward_transfer(a, cr->n_tasks);
}
static double col_trainable(const struct compare_result *cr, const struct arm_result *a) {
    (void)cr;
    return (double)report_trainable(a);
}
static double col_percent(const struct compare_result *cr, const struct arm_result *a) {
    return 100.0 * (double)report_trainable(a) / (double)(cr->model_params ? cr->model_params : 1);
}
static double col_bytes(const struct compare_result *cr, const struct arm_result *a) {
    (void)cr;
    return (double)report_adapter_bytes(a);
}
static double col_train_s(const struct compare_result *cr, const struct arm_result *a) {
    (void)cr;
    return report_train_seconds(a);
}
static double col_tps(const struct compare_result *cr, const struct arm_result *a) {
    (void)cr;
    return report_tokens_per_second(a);
}
static double col_rss(const struct compare_result *cr, const struct arm_result *a) {
    (void)cr;
    return a->peak_rss_kb > 0 ? (double)a->peak_rss_kb / 1024.0 : NAN;
}
static double col_eval_s(const struct compare_result *cr, const struct arm_result *a) {
    (void)cr;
    return report_eval_seconds(a);
}

static const struct column columns[] = {
    {"final avg accuracy %", "final_average_accuracy_pct", BETTER_HIGH, col_final, "%.1f"},
    {"avg forgetting %", "average_forgetting_pct", BETTER_LOW, col_forgetting, "%.1f"},
    {"backward transfer %", "backward_transfer_pct", BETTER_HIGH, col_bwt, "%+.1f"},
    {"trainable params", "trainable_parameters", BETTER_LOW, col_trainable, "%.0f"},
    {"% of model", "trainable_pct_of_model", BETTER_LOW, col_percent, "%.3g"},
    {"adapter bytes", "adapter_bytes", BETTER_LOW, col_bytes, "%.0f"},
    {"train s", "train_seconds", BETTER_LOW, col_train_s, "%.1f"},
    {"tokens/s", "tokens_per_second", BETTER_HIGH, col_tps, "%.0f"},
    {"peak RSS MiB", "peak_rss_mib", BETTER_LOW, col_rss, "%.1f"},
    {"eval s", "eval_seconds", BETTER_LOW, col_eval_s, "%.2f"},
};
#define N_COLUMNS ((int32_t)(sizeof columns / sizeof columns[0]))

/* Best value of a column over the arms that finished; NAN if none has one. */
static double column_best(const struct compare_result *cr, const struct column *c) {
    double best = NAN;
    for (int32_t i = 0; i < cr->n_arms; i++) {
        if (!cr->arms[i].ok) continue;
        double v = c->value(cr, &cr->arms[i]);
        if (isnan(v)) continue;
        if (isnan(best) || (c->better == BETTER_HIGH ? v > best : v < best)) best = v;
    }
    return best;
}

/* ---- report.md --------------------------------------------------------------------- */

static void md_arms_table(struct strbuf *md, const struct compare_result *cr) {
    int32_t shown[N_COLUMNS], n_shown = 0;
    double best[N_COLUMNS];
    for (int32_t c = 0; c < N_COLUMNS; c++) {
        best[c] = column_best(cr, &columns[c]);
        /* Columns nobody has a value for (forgetting in a single-stage run) are left out. */
        if (!isnan(best[c])) shown[n_shown++] = c;
    }
    sb_printf(md, "| arm | status |");
    for (int32_t k = 0; k < n_shown; k++) sb_printf(md, " %s |", columns[shown[k]].title);
    sb_printf(md, "\n|---|---|");
    for (int32_t k = 0; k < n_shown; k++) sb_printf(md, "---:|");
    sb_printf(md, "\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a = &cr->arms[i];
        sb_printf(md, "| %s | %s |", a->name, report_status(a));
        for (int32_t k = 0; k < n_shown; k++) {
            const struct column *c = &columns[shown[k]];
            double v = a->ok ? c->value(cr, a) : NAN;
            if (isnan(v)) {
                sb_printf(md, " - |");
                continue;
            }
            char cell[64];
            snprintf(cell, sizeof cell, c->format, v);
            /* Equal to the best within print precision counts as a win (ties share it). */
            char best_cell[64];
            snprintf(best_cell, sizeof best_cell, c->format, best[shown[k]]);
            int win = strcmp(cell, best_cell) == 0 && cr->n_arms > 1;
            sb_printf(md, win ? " **%s** ★ |" : " %s |", cell);
        }
        sb_printf(md, "\n");
    }
}

static void md_matrix(struct strbuf *md, const struct compare_result *cr, const struct arm_result *a) {
    sb_printf(md, "| after stage |");
    for (int32_t t = 0; t < cr->n_tasks; t++) sb_printf(md, " %s |", cr->tasks[t]);
    sb_printf(md, "\n|---|");
    for (int32_t t = 0; t < cr->n_tasks; t++) sb_printf(md, "---:|");
    sb_printf(md, "\n");
    for (int32_t s = 0; s < a->n_stages; s++) {
        const struct arm_stage *st = &a->stages[s];
        sb_printf(md, "| %s (%s%s) |", st->name, st->method, st->shared ? ", shared" : "");
        for (int32_t t = 0; t < cr->n_tasks; t++) {
            if (!st->complete || isnan(st->acc[t]))
                sb_printf(md, " - |");
            else
                sb_printf(md, " %.1f |", 100.0 * st->acc[t]);
        }
        sb_printf(md, "\n");
    }
    if (a->n_stages > 1) {
        sb_printf(md, "| forgetting |");
        for (int32_t t = 0; t < cr->n_tasks; t++) {
            double f = report_forgetting(a, t);
            if (isnan(f))
                sb_printf(md, " - |");
            else
                sb_printf(md, " %.1f |", 100.0 * f);
        }
        sb_printf(md, "\n");
    }
}

/* Links to each arm's predictions files after its last stage (prompt, expected, generated). */
static void md_predictions(struct strbuf *md, const struct compare_result *cr, const char *dir) {
    int any = 0;
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a = &cr->arms[i];
        const struct arm_stage *st = a->n_stages ? &a->stages[a->n_stages - 1] : NULL;
        int listed = 0;
        for (int32_t t = 0; st && st->dir && st->complete && t < cr->n_tasks; t++) {
            if (isnan(st->acc[t])) continue;
            char *rel = xasprintf("%s/predictions-%s.jsonl", st->dir, cr->tasks[t]);
            char *path = path_join(dir, rel);
            if (file_exists(path)) {
                if (!any) sb_printf(md, "\n## Predictions after the last stage\n\n");
                if (!listed) sb_printf(md, "- **%s** (%s):", a->name, st->name);
                sb_printf(md, "%s [%s](%s)", listed ? "," : "", cr->tasks[t], rel);
                any = listed = 1;
            }
            free(rel);
            free(path);
        }
        if (listed) sb_printf(md, "\n");
    }
}

int report_write(const struct compare_result *cr, const char *dir, const char *const *plots,
                 int32_t n_plots) {
    struct strbuf md = {0};
    sb_printf(&md, "# Comparison: %s\n\n", cr->title);
    sb_printf(&md, "Every arm trains the same model (%llu parameters) on the same data, in the "
                   "same order, with the same seed and step budget; only the overrides differ. "
                   "Accuracy is exact match by greedy decoding on held-out examples (in stages with "
                   "eval_labels: the label with the highest log-probability among all labels "
                   "evaluated). Costs count "
                   "the stages that differ between arms (stages identical in every arm are "
                   "trained once and shared). ★ marks the best value of each column.\n\n",
              (unsigned long long)cr->model_params);
    md_arms_table(&md, cr);
    sb_printf(&md, "\n## Arms\n\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a = &cr->arms[i];
        sb_printf(&md, "- **%s**: %s", a->name, a->overrides[0] ? a->overrides : "(the base run)");
        if (!a->ok)
            sb_printf(&md, " — %s: `%s`", a->diverged ? "diverged" : "failed",
                      a->error ? a->error : "unknown error");
        sb_printf(&md, "\n");
    }
    sb_printf(&md, "\n## Accuracy matrix R[stage][task] (%%)\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        sb_printf(&md, "\n### %s\n\n", cr->arms[i].name);
        md_matrix(&md, cr, &cr->arms[i]);
    }
    md_predictions(&md, cr, dir);
    if (n_plots) {
        sb_printf(&md, "\n## Plots\n\n");
        for (int32_t i = 0; i < n_plots; i++) sb_printf(&md, "![%s](%s)\n\n", plots[i], plots[i]);
    }
    char *path = path_join(dir, "report.md");
    int rc = file_write_atomic(path, md.s, md.len);
    free(path);
    sb_free(&md);
    if (rc) return -1;

    /* results.csv: one figure a row. */
    struct strbuf csv = {0};
    sb_printf(&csv, "arm,stage,task,metric,value\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a = &cr->arms[i];
        sb_printf(&csv, "%s,,,status,%s\n", a->name,
                  a->ok ? "ok" : a->diverged ? "diverged" : "failed");
        for (int32_t s = 0; s < a->n_stages; s++) {
            const struct arm_stage *st = &a->stages[s];
            if (!st->complete) continue;
            for (int32_t t = 0; t < cr->n_tasks; t++) {
                if (isnan(st->acc[t])) continue;
                sb_printf(&csv, "%s,%s,%s,accuracy,%.6f\n", a->name, st->name, cr->tasks[t], st->acc[t]);
                sb_printf(&csv, "%s,%s,%s,loss,%.6f\n", a->name, st->name, cr->tasks[t], st->loss[t]);
            }
            sb_printf(&csv, "%s,%s,,stage_trainable_parameters,%llu\n", a->name, st->name,
                      (unsigned long long)st->n_trainable);
            sb_printf(&csv, "%s,%s,,stage_adapter_bytes,%lld\n", a->name, st->name, (long long)st->adapter_bytes);
            sb_printf(&csv, "%s,%s,,stage_train_seconds,%.3f\n", a->name, st->name, st->train_seconds);
            sb_printf(&csv, "%s,%s,,stage_tokens_per_second,%.1f\n", a->name, st->name, st->tokens_per_second);
            sb_printf(&csv, "%s,%s,,stage_eval_seconds,%.3f\n", a->name, st->name, st->eval_seconds);
        }
        for (int32_t t = 0; t < cr->n_tasks; t++) {
            double f = report_forgetting(a, t);
            if (!isnan(f)) sb_printf(&csv, "%s,,%s,forgetting,%.6f\n", a->name, cr->tasks[t], f);
        }
        for (int32_t c = 0; c < N_COLUMNS; c++) {
            double v = a->ok ? columns[c].value(cr, a) : NAN;
            if (isnan(v)) continue;
            sb_printf(&csv, "%s,,,%s,%.6g\n", a->name, columns[c].csv, v);
        }
        sb_printf(&csv, "%s,,,wall_seconds,%.3f\n", a->name, a->wall_seconds);
    }
    path = path_join(dir, "results.csv");
    rc = file_write_atomic(path, csv.s, csv.len);
    free(path);
    sb_free(&csv);
    return rc;
}

void compare_result_free(struct compare_result *cr) {
    for (int32_t i = 0; i < cr->n_arms; i++) {
        struct arm_result *a = &cr->arms[i];
        for (int32_t s = 0; s < a->n_stages; s++) {
            free(a->stages[s].name);
            free(a->stages[s].method);
            free(a->stages[s].dir);
            free(a->stages[s].trained);
            free(a->stages[s].acc);
            free(a->stages[s].loss);
        }
        free(a->stages);
        free(a->name);
        free(a->overrides);
        free(a->error);
        free(a->curve_step);
        free(a->curve_loss);
    }
    free(cr->arms);
    for (int32_t t = 0; t < cr->n_tasks; t++) free(cr->tasks[t]);
    free(cr->tasks);
    free(cr->title);
    memset(cr, 0, sizeof *cr);
}
