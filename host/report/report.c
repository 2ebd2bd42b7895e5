/* report.c: continual-learning figures, costs, report.md and results.csv of a comparison. */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "stats.h"

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
    int32_t outcome;    /* an accuracy figure: ★ only from the paired test, never as "best" */
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
    {"final avg accuracy %", "final_average_accuracy_pct", BETTER_HIGH, 1, col_final, "%.1f"},
    {"avg forgetting %", "average_forgetting_pct", BETTER_LOW, 1, col_forgetting, "%.1f"},
    {"backward transfer %", "backward_transfer_pct", BETTER_HIGH, 1, col_bwt, "%+.1f"},
    {"trainable params", "trainable_parameters", BETTER_LOW, 0, col_trainable, "%.0f"},
    {"% of model", "trainable_pct_of_model", BETTER_LOW, 0, col_percent, "%.3g"},
    {"adapter bytes", "adapter_bytes", BETTER_LOW, 0, col_bytes, "%.0f"},
    {"train s", "train_seconds", BETTER_LOW, 0, col_train_s, "%.1f"},
    {"tokens/s", "tokens_per_second", BETTER_HIGH, 0, col_tps, "%.0f"},
    {"peak RSS MiB", "peak_rss_mib", BETTER_LOW, 0, col_rss, "%.1f"},
    {"eval s", "eval_seconds", BETTER_LOW, 0, col_eval_s, "%.2f"},
};
#define N_COLUMNS ((int32_t)(sizeof columns / sizeof columns[0]))

int report_arm_ok(const struct compare_result *cr, int32_t arm) {
    int ok = 1;
    for (int32_t k = 0; k < cr->n_seeds; k++) ok &= compare_run(cr, arm, k)->ok != 0;
    return ok;
}

/* The arm's status over its runs: ok, or why one has no figures. */
static const char *arm_status(const struct compare_result *cr, int32_t arm) {
    for (int32_t k = 0; k < cr->n_seeds; k++)
        if (!compare_run(cr, arm, k)->ok) return report_status(compare_run(cr, arm, k));
    return "ok";
}

/* Mean and standard deviation of a column over the arm's seeds (NAN when a run failed). */
static void column_stats(const struct compare_result *cr, const struct column *c, int32_t arm,
                         double *mean, double *sd) {
    double v[COMPARE_MAX_SEEDS];
    int32_t n = cr->n_seeds < COMPARE_MAX_SEEDS ? cr->n_seeds : COMPARE_MAX_SEEDS;
    for (int32_t k = 0; k < n; k++) {
        const struct arm_result *a = compare_run(cr, arm, k);
        v[k] = a->ok ? c->value(cr, a) : NAN;
    }
    int32_t count;
    stats_mean_sd(v, n, mean, sd, &count);
    if (!report_arm_ok(cr, arm)) *mean = *sd = NAN;
}

/* Best mean of a column over the arms that finished; NAN if none has one. */
static double column_best(const struct compare_result *cr, const struct column *c) {
    double best = NAN;
    for (int32_t i = 0; i < cr->n_arms; i++) {
        double v, sd;
        column_stats(cr, c, i, &v, &sd);
        if (isnan(v)) continue;
        if (isnan(best) || (c->better == BETTER_HIGH ? v > best : v < best)) best = v;
    }
    return best;
}

struct paired report_paired(const struct compare_result *cr, int32_t arm) {
    struct paired p = {0, NAN, NAN, NAN, NAN, NAN};
    int32_t cap = cr->n_seeds * (cr->n_tasks > 0 ? cr->n_tasks : 1);
    double *d = xmalloc(((size_t)cap + 1) * sizeof *d);
    for (int32_t k = 0; k < cr->n_seeds; k++) {
        const struct arm_result *a = compare_run(cr, arm, k), *b = compare_run(cr, cr->baseline, k);
        const struct arm_stage *la = last_stage(a), *lb = last_stage(b);
        if (!a->ok || !b->ok || !la || !lb) continue;
        for (int32_t t = 0; t < cr->n_tasks; t++)
            if (!isnan(la->acc[t]) && !isnan(lb->acc[t])) d[p.n++] = 100.0 * (la->acc[t] - lb->acc[t]);
    }
    if (p.n > 0) {
        double sd;
        stats_mean_sd(d, p.n, &p.mean_diff, &sd, NULL);
        if (p.n >= 2) {
            double half = stats_t_quantile(0.05, p.n - 1) * sd / sqrt((double)p.n);
            p.ci_lo = p.mean_diff - half;
            p.ci_hi = p.mean_diff + half;
        }
        p.p_t = stats_paired_t_p(d, p.n, NULL);
        p.p_sign = p.n >= 2 ? stats_sign_flip_p(d, p.n) : NAN;
    }
    free(d);
    return p;
}

/* ---- report.md --------------------------------------------------------------------- */

static void format_p(char *out, size_t cap, double p) {
    if (isnan(p))
        snprintf(out, cap, "-");
    else if (p < 0.001)
        snprintf(out, cap, "< 0.001");
    else
        snprintf(out, cap, "%.3f", p);
}

static void md_arms_table(struct strbuf *md, const struct compare_result *cr) {
    int32_t shown[N_COLUMNS], n_shown = 0;
    double best[N_COLUMNS];
    for (int32_t c = 0; c < N_COLUMNS; c++) {
        best[c] = column_best(cr, &columns[c]);
        /* Columns nobody has a value for (forgetting in a single-stage run) are left out. */
        if (!isnan(best[c])) shown[n_shown++] = c;
    }
    int tests = cr->n_seeds >= 2;
    sb_printf(md, "| arm | status |");
    for (int32_t k = 0; k < n_shown; k++) sb_printf(md, " %s |", columns[shown[k]].title);
    if (tests)
        sb_printf(md, " Δ accuracy vs %s (pp) [95%% CI] | p (paired t) | p (sign-flip) |",
                  compare_run(cr, cr->baseline, 0)->name);
    sb_printf(md, "\n|---|---|");
    for (int32_t k = 0; k < n_shown + (tests ? 3 : 0); k++) sb_printf(md, "---:|");
    sb_printf(md, "\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        sb_printf(md, "| %s | %s |", compare_run(cr, i, 0)->name, arm_status(cr, i));
        for (int32_t k = 0; k < n_shown; k++) {
            const struct column *c = &columns[shown[k]];
            double v, sd;
            column_stats(cr, c, i, &v, &sd);
            if (isnan(v)) {
                sb_printf(md, " - |");
                continue;
            }
            char cell[64], spread[64] = "", best_cell[64];
            snprintf(cell, sizeof cell, c->format, v);
            if (tests && !isnan(sd)) {
                char sd_text[48];
                snprintf(sd_text, sizeof sd_text, c->format[1] == '+' ? "%.1f" : c->format, sd);
                snprintf(spread, sizeof spread, " ± %s", sd_text);
            }
            /* Costs: the best mean, equal within print precision (ties share it). Accuracy
             * figures get no "best": one arm above another may be noise (see the tests). */
            snprintf(best_cell, sizeof best_cell, c->format, best[shown[k]]);
            int win = !c->outcome && strcmp(cell, best_cell) == 0 && cr->n_arms > 1;
            sb_printf(md, win ? " **%s%s** ★ |" : " %s%s |", cell, spread);
        }
        if (tests) {
            if (i == cr->baseline) {
                sb_printf(md, " baseline | | |");
            } else {
                struct paired p = report_paired(cr, i);
                char pt[32], ps[32];
                format_p(pt, sizeof pt, p.p_t);
                format_p(ps, sizeof ps, p.p_sign);
                /* both tests: a t-test alone calls three equal differences certain */
                int sig = !isnan(p.p_t) && p.p_t < cr->alpha && !isnan(p.p_sign) &&
                          p.p_sign < cr->alpha;
                char ci[64] = "";
                if (!isnan(p.ci_lo)) snprintf(ci, sizeof ci, " [%+.1f, %+.1f]", p.ci_lo, p.ci_hi);
                if (p.n == 0)
                    sb_printf(md, " - | - | - |");
                else
                    sb_printf(md, sig ? " **%+.1f**%s ★ | %s | %s |" : " %+.1f%s | %s | %s |",
                              p.mean_diff, ci, pt, ps);
            }
        }
        sb_printf(md, "\n");
    }
}

static void md_matrix(struct strbuf *md, const struct compare_result *cr, int32_t arm) {
    const struct arm_result *a0 = compare_run(cr, arm, 0);
    sb_printf(md, "| after stage |");
    for (int32_t t = 0; t < cr->n_tasks; t++) sb_printf(md, " %s |", cr->tasks[t]);
    sb_printf(md, "\n|---|");
    for (int32_t t = 0; t < cr->n_tasks; t++) sb_printf(md, "---:|");
    sb_printf(md, "\n");
    double v[COMPARE_MAX_SEEDS];
    int32_t n = cr->n_seeds < COMPARE_MAX_SEEDS ? cr->n_seeds : COMPARE_MAX_SEEDS;
    for (int32_t s = 0; s < a0->n_stages; s++) {
        const struct arm_stage *st = &a0->stages[s];
        sb_printf(md, "| %s (%s%s) |", st->name, st->method, st->shared ? ", shared" : "");
        for (int32_t t = 0; t < cr->n_tasks; t++) {
            for (int32_t k = 0; k < n; k++) {
                const struct arm_result *a = compare_run(cr, arm, k);
                const struct arm_stage *sk = s < a->n_stages ? &a->stages[s] : NULL;
                v[k] = sk && sk->complete ? 100.0 * sk->acc[t] : NAN;
            }
            double mean, sd;
            int32_t count;
            stats_mean_sd(v, n, &mean, &sd, &count);
            if (count < n || isnan(mean))
                sb_printf(md, " - |");
            else if (n >= 2)
                sb_printf(md, " %.1f ± %.1f |", mean, sd);
            else
                sb_printf(md, " %.1f |", mean);
        }
        sb_printf(md, "\n");
    }
    if (a0->n_stages > 1) {
        sb_printf(md, "| forgetting |");
        for (int32_t t = 0; t < cr->n_tasks; t++) {
            for (int32_t k = 0; k < n; k++) v[k] = 100.0 * report_forgetting(compare_run(cr, arm, k), t);
            double mean, sd;
            int32_t count;
            stats_mean_sd(v, n, &mean, &sd, &count);
            if (count < n || isnan(mean))
                sb_printf(md, " - |");
            else if (n >= 2)
                sb_printf(md, " %.1f ± %.1f |", mean, sd);
            else
                sb_printf(md, " %.1f |", mean);
        }
        sb_printf(md, "\n");
    }
}

/* Links to each arm's predictions files after its last stage (prompt, expected, generated). */
static void md_predictions(struct strbuf *md, const struct compare_result *cr, const char *dir) {
    int any = 0;
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a = compare_run(cr, i, 0); /* the first seed's run */
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

/* The report's opening: what was compared and how to read the marks. */
static void md_intro(struct strbuf *md, const struct compare_result *cr) {
    sb_printf(md, "# Comparison: %s\n\n", cr->title);
    sb_printf(md, "Every arm trains the same model (%llu parameters) on the same data, in the "
                  "same order, with the same step budget; only the overrides differ. "
                  "Accuracy is exact match by greedy decoding on held-out examples (in stages with "
                  "eval_labels: the label with the highest log-probability among all labels "
                  "evaluated). Costs count "
                  "the stages that differ between arms (stages identical in every arm are "
                  "trained once and shared); ★ marks the best cost of each column.\n\n",
              (unsigned long long)cr->model_params);
    if (cr->n_seeds >= 2) {
        sb_printf(md, "Each arm ran with %d seeds (", cr->n_seeds);
        for (int32_t k = 0; k < cr->n_seeds; k++)
            sb_printf(md, "%s%lld", k ? ", " : "", (long long)compare_run(cr, 0, k)->seed);
        sb_printf(md, "; a seed sets the data, its order and every initialisation, the same for "
                      "every arm): figures are mean ± standard deviation over the seeds. Δ "
                      "accuracy is the mean over seeds and tasks of the arm's accuracy after its "
                      "last stage minus %s's on the same seed and task, with its 95%% confidence "
                      "interval (Student's t); p is two-sided, from a "
                      "paired t-test and from a sign-flip permutation test on those "
                      "differences. ★ marks a difference significant at the %g level in both "
                      "tests; any other ordering of the accuracy columns may be noise.\n\n",
                  compare_run(cr, cr->baseline, 0)->name, cr->alpha);
    } else {
        sb_printf(md, "One seed: the accuracy columns are single draws, and no difference "
                      "between arms can be told from noise (set `seeds = 1 2 3` in [compare] for "
                      "means, spreads and paired tests).\n\n");
    }
}

/* results.csv: one figure a row, each run's with its seed; across seeds, the arm's means,
 * spreads and tests with an empty seed. */
static void csv_rows(struct strbuf *csv, const struct compare_result *cr) {
    sb_printf(csv, "arm,seed,stage,task,metric,value\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        for (int32_t k = 0; k < cr->n_seeds; k++) {
            const struct arm_result *a = compare_run(cr, i, k);
            char arm[512];
            snprintf(arm, sizeof arm, "%s,%lld", a->name, (long long)a->seed);
            sb_printf(csv, "%s,,,status,%s\n", arm, a->ok ? "ok" : a->diverged ? "diverged" : "failed");
            for (int32_t s = 0; s < a->n_stages; s++) {
                const struct arm_stage *st = &a->stages[s];
                if (!st->complete) continue;
                for (int32_t t = 0; t < cr->n_tasks; t++) {
                    if (isnan(st->acc[t])) continue;
                    sb_printf(csv, "%s,%s,%s,accuracy,%.6f\n", arm, st->name, cr->tasks[t], st->acc[t]);
                    sb_printf(csv, "%s,%s,%s,loss,%.6f\n", arm, st->name, cr->tasks[t], st->loss[t]);
                }
                sb_printf(csv, "%s,%s,,stage_trainable_parameters,%llu\n", arm, st->name,
                          (unsigned long long)st->n_trainable);
                sb_printf(csv, "%s,%s,,stage_adapter_bytes,%lld\n", arm, st->name, (long long)st->adapter_bytes);
                sb_printf(csv, "%s,%s,,stage_train_seconds,%.3f\n", arm, st->name, st->train_seconds);
                sb_printf(csv, "%s,%s,,stage_tokens_per_second,%.1f\n", arm, st->name, st->tokens_per_second);
                sb_printf(csv, "%s,%s,,stage_eval_seconds,%.3f\n", arm, st->name, st->eval_seconds);
            }
            for (int32_t t = 0; t < cr->n_tasks; t++) {
                double f = report_forgetting(a, t);
                if (!isnan(f)) sb_printf(csv, "%s,,%s,forgetting,%.6f\n", arm, cr->tasks[t], f);
            }
            for (int32_t c = 0; c < N_COLUMNS; c++) {
                double v = a->ok ? columns[c].value(cr, a) : NAN;
                if (isnan(v)) continue;
                sb_printf(csv, "%s,,,%s,%.6g\n", arm, columns[c].csv, v);
            }
            sb_printf(csv, "%s,,,wall_seconds,%.3f\n", arm, a->wall_seconds);
        }
        if (cr->n_seeds < 2) continue;
        const char *name = compare_run(cr, i, 0)->name;
        for (int32_t c = 0; c < N_COLUMNS; c++) {
            double mean, sd;
            column_stats(cr, &columns[c], i, &mean, &sd);
            if (isnan(mean)) continue;
            sb_printf(csv, "%s,,,,%s_mean,%.6g\n", name, columns[c].csv, mean);
            if (!isnan(sd)) sb_printf(csv, "%s,,,,%s_sd,%.6g\n", name, columns[c].csv, sd);
        }
        if (i == cr->baseline) continue;
        struct paired p = report_paired(cr, i);
        if (p.n == 0) continue;
        sb_printf(csv, "%s,,,,paired_pairs,%d\n", name, (int)p.n);
        sb_printf(csv, "%s,,,,paired_mean_accuracy_diff_pp,%.6g\n", name, p.mean_diff);
        if (!isnan(p.ci_lo)) {
            sb_printf(csv, "%s,,,,paired_diff_ci95_low_pp,%.6g\n", name, p.ci_lo);
            sb_printf(csv, "%s,,,,paired_diff_ci95_high_pp,%.6g\n", name, p.ci_hi);
        }
        if (!isnan(p.p_t)) sb_printf(csv, "%s,,,,p_paired_t,%.6g\n", name, p.p_t);
        if (!isnan(p.p_sign)) sb_printf(csv, "%s,,,,p_sign_flip,%.6g\n", name, p.p_sign);
    }
}

int report_write(const struct compare_result *cr, const char *dir, const char *const *plots,
                 int32_t n_plots) {
    struct strbuf md = {0};
    md_intro(&md, cr);
    md_arms_table(&md, cr);
    sb_printf(&md, "\n## Arms\n\n");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a0 = compare_run(cr, i, 0);
        sb_printf(&md, "- **%s**: %s", a0->name, a0->overrides[0] ? a0->overrides : "(the base run)");
        for (int32_t k = 0; k < cr->n_seeds; k++) {
            const struct arm_result *a = compare_run(cr, i, k);
            if (a->ok) continue;
            if (cr->n_seeds > 1) sb_printf(&md, " — seed %lld", (long long)a->seed);
            sb_printf(&md, " — %s: `%s`", a->diverged ? "diverged" : "failed",
                      a->error ? a->error : "unknown error");
        }
        sb_printf(&md, "\n");
    }
    sb_printf(&md, "\n## Accuracy matrix R[stage][task] (%%%s)\n",
              cr->n_seeds >= 2 ? ", mean ± sd over the seeds" : "");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        sb_printf(&md, "\n### %s\n\n", compare_run(cr, i, 0)->name);
        md_matrix(&md, cr, i);
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

    struct strbuf csv = {0};
    csv_rows(&csv, cr);
    path = path_join(dir, "results.csv");
    rc = file_write_atomic(path, csv.s, csv.len);
    free(path);
    sb_free(&csv);
    return rc;
}

void compare_result_free(struct compare_result *cr) {
    int32_t runs = cr->n_arms * (cr->n_seeds > 0 ? cr->n_seeds : 1);
    for (int32_t i = 0; i < runs; i++) {
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
