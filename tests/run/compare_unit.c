/*
 * compare_unit.c: the comparison's arithmetic and files on a hand-made result.
 *
 * Two arms over three stages and three tasks, with accuracies chosen so every figure is
 * known by hand: final average accuracy, forgetting per task, average forgetting, backward
 * transfer; then report.md (costs' winners marked, no accuracy ★ from one seed), results.csv
 * and the three kinds of SVG, which must be well-formed XML (checked by a small parser here:
 * balanced tags, quoted attributes, known entities).
 * Then the statistics over seeds (stats.c) against values worked by hand or in closed form,
 * and a three-seed comparison whose paired tests are known: report.md's mean ± sd, Δ and
 * p-values, and the CSV's per-seed and aggregate rows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "report.h"
#include "stats.h"
#include "svg.h"
#include "core.h"

#define N_TASKS 3

static void make_stage(struct arm_stage *st, const char *name, int32_t trained, const double *acc) {
    memset(st, 0, sizeof *st);
    st->name = xstrdup(name);
    st->method = xstrdup("lora");
    st->trained = xcalloc(1, sizeof *st->trained);
    st->trained[0] = trained;
    st->n_trained = 1;
    st->acc = xcalloc(N_TASKS, sizeof *st->acc);
    st->loss = xcalloc(N_TASKS, sizeof *st->loss);
    for (int t = 0; t < N_TASKS; t++) {
        st->acc[t] = acc[t];
        st->loss[t] = isnan(acc[t]) ? NAN : 1.0 - acc[t];
    }
    st->complete = 1;
    st->steps = 10;
}

/* R for arm "a" (rows: stages; columns: tasks A, B, C; NAN = not evaluated yet):
 *   after s1 (trains A): 0.80   -     -
 *   after s2 (trains B): 0.60  0.90   -
 *   after s3 (trains C): 0.50  0.70  1.00
 * final average = (0.5 + 0.7 + 1.0) / 3 = 0.7333
 * forgetting: A = 0.8 - 0.5 = 0.3, B = 0.9 - 0.7 = 0.2, C: none (only seen last)
 * average forgetting = 0.25; BWT = ((0.5 - 0.8) + (0.7 - 0.9)) / 2 = -0.25
 * Arm "b" forgets nothing: every row holds 0.8, 0.9, then 0.6 for C. */
static void make_result(struct compare_result *cr) {
    memset(cr, 0, sizeof *cr);
    cr->title = xstrdup("hand-made.ini");
    cr->n_tasks = N_TASKS;
    cr->tasks = xcalloc(N_TASKS, sizeof *cr->tasks);
    cr->tasks[0] = xstrdup("task_a");
    cr->tasks[1] = xstrdup("task_b");
    cr->tasks[2] = xstrdup("task<c>&"); /* escaped in the SVG */
    cr->model_params = 100000;
    cr->n_arms = 2;
    cr->n_seeds = 1;
    cr->alpha = 0.05;
    cr->arms = xcalloc(2, sizeof *cr->arms);
    const double a[3][3] = {{0.8, NAN, NAN}, {0.6, 0.9, NAN}, {0.5, 0.7, 1.0}};
    const double b[3][3] = {{0.8, NAN, NAN}, {0.8, 0.9, NAN}, {0.8, 0.9, 0.6}};
    const char *names[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        struct arm_result *r = &cr->arms[i];
        r->name = xstrdup(names[i]);
        r->seed = 1;
        r->overrides = xstrdup(i ? "stage.s1.r=2" : "stage.s1.r=8");
        r->ok = 1;
        r->n_stages = 3;
        r->stages = xcalloc(3, sizeof *r->stages);
        const char *stage_names[3] = {"s1", "s2", "s3"};
        for (int s = 0; s < 3; s++) {
            make_stage(&r->stages[s], stage_names[s], s, i ? b[s] : a[s]);
            r->stages[s].n_trainable = i ? 500 : 2000;
            r->stages[s].adapter_bytes = i ? 4000 : 16000;
            r->stages[s].train_seconds = 1.0;
            r->stages[s].tokens_per_second = i ? 900 : 1000;
        }
        r->n_curve = 30;
        r->curve_step = xcalloc(30, sizeof *r->curve_step);
        r->curve_loss = xcalloc(30, sizeof *r->curve_loss);
        for (int k = 0; k < 30; k++) {
            r->curve_step[k] = k + 1;
            r->curve_loss[k] = 3.0 / (1 + k * (i + 1) * 0.3);
        }
        r->peak_rss_kb = 20480;
    }
}

/* ---- a small well-formedness check for the SVG files -------------------------------- */

static int xml_well_formed(const char *s, char *why, size_t cap) {
    char stack[64][64];
    int depth = 0, root_closed = 0;
    const char *p = s;
    if (strncmp(p, "<?xml", 5) == 0) {
        p = strstr(p, "?>");
        if (!p) return snprintf(why, cap, "unterminated XML declaration"), 0;
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            const char *ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            int ok = 0;
            for (int i = 0; i < 5; i++) ok |= strncmp(p, ents[i], strlen(ents[i])) == 0;
            if (!ok) return snprintf(why, cap, "bad entity at '%.12s'", p), 0;
            p++;
            continue;
        }
        if (*p == '>') return snprintf(why, cap, "stray '>' in text"), 0;
        if (*p != '<') {
            if (root_closed && *p != ' ' && *p != '\n') return snprintf(why, cap, "text after the root"), 0;
            p++;
            continue;
        }
        int closing = p[1] == '/';
        const char *n = p + 1 + closing, *e = n;
        while (*e && *e != ' ' && *e != '>' && *e != '/' && *e != '\n') e++;
        if (e == n || (size_t)(e - n) >= 64) return snprintf(why, cap, "bad tag name"), 0;
        char name[64];
        memcpy(name, n, (size_t)(e - n));
        name[e - n] = 0;
        const char *q = e;
        /* attributes: name="value" with no '<' or bare '&' inside */
        while (*q && *q != '>' && !(q[0] == '/' && q[1] == '>')) {
            if (*q == '"') {
                const char *end = strchr(q + 1, '"');
                if (!end) return snprintf(why, cap, "unterminated attribute in <%s>", name), 0;
                for (const char *c = q + 1; c < end; c++)
                    if (*c == '<') return snprintf(why, cap, "'<' inside an attribute of <%s>", name), 0;
                q = end + 1;
                continue;
            }
            if (*q == '=' && q[1] != '"') return snprintf(why, cap, "unquoted attribute in <%s>", name), 0;
            q++;
        }
        if (!*q) return snprintf(why, cap, "unterminated tag <%s>", name), 0;
        int self_closing = q[0] == '/';
        if (closing) {
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0)
                return snprintf(why, cap, "</%s> closes %s", name, depth ? stack[depth - 1] : "nothing"), 0;
            depth--;
            if (depth == 0) root_closed = 1;
        } else if (!self_closing) {
            if (root_closed) return snprintf(why, cap, "a second root element"), 0;
            if (depth == 64) return snprintf(why, cap, "too deep"), 0;
            strcpy(stack[depth++], name);
        }
        p = q + (self_closing ? 2 : 1);
    }
    if (depth != 0) return snprintf(why, cap, "<%s> never closed", stack[depth - 1]), 0;
    if (!root_closed) return snprintf(why, cap, "no root element"), 0;
    return 1;
}

static char *read_text(const char *dir, const char *name) {
    char *path = path_join(dir, name), *text = NULL;
    size_t len;
    if (file_read_all(path, &text, &len) != 0) text = NULL;
    free(path);
    return text;
}

/* ---- statistics over seeds ---------------------------------------------------------- */

static void check_stats(void) {
    const double x[] = {1, 2, 3, NAN};
    double mean, sd, t;
    int32_t n;
    stats_mean_sd(x, 4, &mean, &sd, &n);
    CHECK(n == 3 && mean == 2.0 && fabs(sd - 1.0) < 1e-15, "mean %g sd %g of 1 2 3 (NAN skipped)", mean, sd);
    /* t = 2 / (1 / sqrt 3) = 2 sqrt 3 on 2 degrees of freedom, where the two-sided p is
     * 1 - t / sqrt(2 + t^2) in closed form */
    double p = stats_paired_t_p(x, 3, &t), want = 1.0 - sqrt(12.0) / sqrt(14.0);
    CHECK(fabs(t - sqrt(12.0)) < 1e-12 && fabs(p - want) < 1e-10, "paired t of 1 2 3: t %.6f p %.8f, want %.8f", t, p, want);
    /* 1 degree of freedom (Cauchy): p = 1 - 2 atan(|t|) / pi */
    want = 1.0 - 2.0 * atan(1.0) / M_PI;
    CHECK(fabs(stats_t_two_sided_p(1.0, 1.0) - want) < 1e-10, "t = 1, df 1: %.8f, want %.8f",
          stats_t_two_sided_p(1.0, 1.0), want);
    /* many degrees of freedom: the normal's 1.959964 gives 0.05 */
    CHECK(fabs(stats_t_two_sided_p(1.959963984540054, 1e7) - 0.05) < 1e-6, "large df: %.8f",
          stats_t_two_sided_p(1.959963984540054, 1e7));
    CHECK(stats_t_two_sided_p(0.0, 4) == 1.0, "t = 0: p = 1");
    /* the quantile inverts it: 2 sqrt 3 at df 2, 1 at df 1 (p 0.5) */
    CHECK(fabs(stats_t_quantile(1.0 - sqrt(12.0) / sqrt(14.0), 2) - sqrt(12.0)) < 1e-8 &&
              fabs(stats_t_quantile(0.5, 1) - 1.0) < 1e-8,
          "t quantiles %.10f %.10f", stats_t_quantile(1.0 - sqrt(12.0) / sqrt(14.0), 2),
          stats_t_quantile(0.5, 1));
    /* sign flips of 1 2 3: sums 6 4 2 0 0 -2 -4 -6, |sum| >= 6 twice in 8 */
    CHECK(fabs(stats_sign_flip_p(x, 3) - 0.25) < 1e-15, "sign-flip of 1 2 3: %g", stats_sign_flip_p(x, 3));
    const double y[] = {1, -1};
    CHECK(stats_sign_flip_p(y, 2) == 1.0, "sign-flip of 1 -1: %g", stats_sign_flip_p(y, 2));
    const double z[] = {0, 0, 0};
    CHECK(stats_paired_t_p(z, 3, NULL) == 1.0 && isnan(stats_paired_t_p(z, 1, NULL)),
          "no difference: p 1; one pair: no test");
    /* 30 positive differences: the exact enumeration's limit passed, drawn patterns instead */
    double w[30];
    for (int i = 0; i < 30; i++) w[i] = 1 + i % 3;
    p = stats_sign_flip_p(w, 30);
    CHECK(p > 0 && p < 1e-4, "sign-flip of 30 positive differences: %g", p);
    printf("stats: 1 2 3: mean 2 sd 1, paired t %.4f p %.5f, sign-flip 0.25; 30 positive: %g\n",
           sqrt(12.0), stats_paired_t_p(x, 3, NULL), p);
}

/* Arms a (the baseline) and b, one stage, two tasks, three seeds. Accuracies (%):
 *   a: seed 1: 50 60, seed 2: 40 50, seed 3: 60 70   final averages 55, 45, 65
 *   b: seed 1: 60 80, seed 2: 50 80, seed 3: 80 90   final averages 70, 65, 85
 * d = b - a per seed and task: 10 20 10 30 20 20: mean 18.333, sd 7.5277, t = 5.9656 on 5
 * degrees of freedom, p = 0.0018942 (torch's Student t density integrated); every d is
 * positive, so the sign-flip p is 2 / 2^6 = 0.03125. */
static void check_seeds(const char *dir) {
    struct compare_result cr;
    memset(&cr, 0, sizeof cr);
    cr.title = xstrdup("seeds.ini");
    cr.n_tasks = 2;
    cr.tasks = xcalloc(2, sizeof *cr.tasks);
    cr.tasks[0] = xstrdup("task_a");
    cr.tasks[1] = xstrdup("task_b");
    cr.model_params = 100000;
    cr.n_arms = 2;
    cr.n_seeds = 3;
    cr.alpha = 0.05;
    cr.arms = xcalloc(6, sizeof *cr.arms);
    const double acc[2][3][2] = {{{.5, .6}, {.4, .5}, {.6, .7}}, {{.6, .8}, {.5, .8}, {.8, .9}}};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++) {
            struct arm_result *r = &cr.arms[i * 3 + k];
            r->name = xstrdup(i ? "b" : "a");
            r->seed = k + 1;
            r->overrides = xstrdup("");
            r->ok = 1;
            r->n_stages = 1;
            r->stages = xcalloc(1, sizeof *r->stages);
            double row[N_TASKS] = {acc[i][k][0], acc[i][k][1], NAN};
            make_stage(&r->stages[0], "s1", 0, row);
            r->stages[0].n_trainable = 1000;
        }
    struct paired pb = report_paired(&cr, 1);
    printf("seeds: b vs a: %d pairs, mean %+.4f pp, p (t) %.7f, p (sign-flip) %.5f\n", (int)pb.n,
           pb.mean_diff, pb.p_t, pb.p_sign);
    CHECK(pb.n == 6 && fabs(pb.mean_diff - 55.0 / 3) < 1e-9, "pairs %d mean %g", (int)pb.n, pb.mean_diff);
    CHECK(fabs(pb.p_t - 0.0018942) < 2e-6, "paired t p %.7f, want 0.0018942", pb.p_t);
    CHECK(fabs(pb.p_sign - 0.03125) < 1e-15, "sign-flip p %g, want 0.03125", pb.p_sign);
    char *sub = path_join(dir, "seeds");
    CHECK(mkdir_p(sub) == 0 && report_write(&cr, sub, NULL, 0) == 0, "report: %s", err_msg());
    char *md = read_text(sub, "report.md"), *csv = read_text(sub, "results.csv");
    CHECK(md && csv, "seeded report.md and results.csv");
    if (md && csv) {
        /* final averages: a 55 ± 10, b 73.3 ± 10.4 */
        CHECK(strstr(md, "| a | ok | 55.0 ± 10.0 |") != NULL, "a's row:\n%s", md);
        CHECK(strstr(md, "| b | ok | 73.3 ± 10.4 |") != NULL, "b's row:\n%s", md);
        /* 95% interval: 18.33 -+ t(0.975, 5) 7.5277 / sqrt 6 = 18.33 -+ 7.90 */
        CHECK(strstr(md, "| **+18.3** [+10.4, +26.2] ★ | 0.002 | 0.031 |") != NULL,
              "b's test cells:\n%s", md);
        CHECK(strstr(csv, "b,,,,paired_diff_ci95_low_pp,10.43") != NULL, "CSV interval row");
        CHECK(strstr(md, " baseline |") != NULL, "the baseline's row says so");
        CHECK(strstr(md, "| s1 (lora) | 50.0 ± 10.0 | 60.0 ± 10.0 |") != NULL, "a's matrix:\n%s", md);
        CHECK(strstr(csv, "b,2,s1,task_b,accuracy,0.800000\n") != NULL, "a per-seed CSV row");
        CHECK(strstr(csv, "b,,,,final_average_accuracy_pct_mean,73.3333\n") != NULL, "mean row");
        CHECK(strstr(csv, "b,,,,final_average_accuracy_pct_sd,10.4083\n") != NULL, "sd row");
        CHECK(strstr(csv, "b,,,,p_sign_flip,0.03125\n") != NULL, "sign-flip row");
    }
    /* One stage: a bar per task (b: 63.3 and 83.3) with its spread, well-formed */
    char *bars = path_join(sub, "accuracy-b.svg");
    CHECK(svg_accuracy_bars(&cr, 1, bars) == 0, "bars: %s", err_msg());
    char *svg = read_text(sub, "accuracy-b.svg"), why[160] = "";
    CHECK(svg && xml_well_formed(svg, why, sizeof why) && strstr(svg, ">63<") && strstr(svg, ">83<") &&
              strstr(svg, ">task_b<") && strstr(svg, "stroke=\"#222\""),
          "bar chart: %s\n%s", why, svg ? svg : "");
    free(svg);
    free(bars);
    /* Not significant: b's second task swapped so the differences straddle 0. */
    cr.arms[4].stages[0].acc[1] = 0.3; /* seed 2: d = 10, -20 */
    cr.arms[5].stages[0].acc[0] = 0.5; /* seed 3: d = -10, 20 */
    struct paired pn = report_paired(&cr, 1);
    CHECK(pn.p_t > 0.05 && pn.p_sign > 0.05, "straddling differences: p %g and %g", pn.p_t, pn.p_sign);
    CHECK(report_write(&cr, sub, NULL, 0) == 0, "report: %s", err_msg());
    free(md);
    md = read_text(sub, "report.md");
    CHECK(md && !strstr(md, "★ | 0.") && strstr(md, "| +5.0 [-12.2, +22.2] | 0.490 | 0.625 |"), "no ★ without significance:\n%s", md ? md : "");
    /* Three equal differences: the t-test's p is 0, the sign-flip's 2 / 2^3 = 0.25; no ★
     * unless both are below alpha. */
    for (int k = 0; k < 3; k++) {
        cr.arms[k].stages[0].acc[0] = 0.5, cr.arms[3 + k].stages[0].acc[0] = 0.6;
        cr.arms[k].stages[0].acc[1] = cr.arms[3 + k].stages[0].acc[1] = NAN;
    }
    struct paired pe = report_paired(&cr, 1);
    CHECK(pe.n == 3 && pe.p_t == 0.0 && fabs(pe.p_sign - 0.25) < 1e-15, "equal differences: p %g and %g",
          pe.p_t, pe.p_sign);
    CHECK(report_write(&cr, sub, NULL, 0) == 0, "report: %s", err_msg());
    free(md);
    md = read_text(sub, "report.md");
    CHECK(md && strstr(md, "| +10.0 [+10.0, +10.0] | < 0.001 | 0.250 |") && !strstr(md, "★ | <"),
          "equal differences, t-test alone: no ★:\n%s", md ? md : "");
    free(md);
    free(csv);
    free(sub);
    compare_result_free(&cr);
}

int main(void) {
    struct compare_result cr;
    make_result(&cr);
    const struct arm_result *a = &cr.arms[0], *b = &cr.arms[1];

    double fa = report_final_average(a, N_TASKS), fb = report_final_average(b, N_TASKS);
    CHECK(fabs(fa - 2.2 / 3) < 1e-12, "final average of a: %g", fa);
    CHECK(fabs(fb - 2.3 / 3) < 1e-12, "final average of b: %g", fb);
    CHECK(fabs(report_forgetting(a, 0) - 0.3) < 1e-12, "forgetting of A: %g", report_forgetting(a, 0));
    CHECK(fabs(report_forgetting(a, 1) - 0.2) < 1e-12, "forgetting of B: %g", report_forgetting(a, 1));
    CHECK(isnan(report_forgetting(a, 2)), "C is only seen last: no forgetting defined");
    CHECK(fabs(report_average_forgetting(a, N_TASKS) - 0.25) < 1e-12, "average forgetting %g",
          report_average_forgetting(a, N_TASKS));
    CHECK(fabs(report_backward_transfer(a, N_TASKS) + 0.25) < 1e-12, "BWT %g",
          report_backward_transfer(a, N_TASKS));
    CHECK(report_average_forgetting(b, N_TASKS) == 0.0, "b forgets nothing");
    CHECK(report_backward_transfer(b, N_TASKS) == 0.0, "b: BWT 0");
    CHECK(report_trainable(a) == 6000 && report_adapter_bytes(b) == 12000, "costs summed over stages");
    cr.arms[0].stages[0].shared = 1; /* a stage every arm shares is not an arm's cost */
    CHECK(report_trainable(a) == 4000 && report_adapter_bytes(a) == 32000, "shared stage left out");
    cr.arms[0].stages[0].shared = 0;
    printf("arm a: final %.4f, forgetting A %.2f B %.2f, average %.2f, BWT %+.2f\n", fa,
           report_forgetting(a, 0), report_forgetting(a, 1), report_average_forgetting(a, N_TASKS),
           report_backward_transfer(a, N_TASKS));

    /* A single-stage arm: forgetting and BWT are undefined. */
    struct arm_result single = *a;
    single.n_stages = 1;
    CHECK(isnan(report_average_forgetting(&single, N_TASKS)) &&
              isnan(report_backward_transfer(&single, N_TASKS)),
          "single stage: no forgetting figures");

    char tmpl[] = "/tmp/peft-report-XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL, "mkdtemp");
    const char *plots[] = {"loss.svg", "accuracy-vs-params.svg", "accuracy-a.svg"};
    char *loss = path_join(dir, "loss.svg"), *scatter = path_join(dir, "accuracy-vs-params.svg"),
         *heat = path_join(dir, "accuracy-a.svg");
    CHECK(svg_loss_curves(&cr, loss) == 0 && svg_accuracy_vs_params(&cr, scatter) == 0 &&
              svg_accuracy_heatmap(&cr, 0, heat) == 0,
          "plots written: %s", err_msg());
    CHECK(report_write(&cr, dir, plots, 3) == 0, "report written: %s", err_msg());

    char *md = read_text(dir, "report.md"), *csv = read_text(dir, "results.csv");
    CHECK(md && csv, "report.md and results.csv exist");
    if (md && csv) {
        /* b has the fewer parameters and bytes, a the higher tokens/s; b's higher accuracy
         * (76.7 > 73.3) is one draw, so no ★ there. */
        CHECK(strstr(md, "| b | ok | 76.7 | 0.0 | +0.0 | **1500** ★ |") != NULL,
              "b's row with its wins:\n%s", md);
        CHECK(strstr(md, "One seed") != NULL, "the one-seed caveat");
        CHECK(strstr(md, "| a | ok | 73.3 | 25.0 | -25.0 | 6000 |") != NULL, "a's row:\n%s", md);
        CHECK(strstr(md, "| forgetting | 30.0 | 20.0 | - |") != NULL, "a's forgetting row");
        CHECK(strstr(md, "| s2 (lora) | 60.0 | 90.0 | - |") != NULL, "a's matrix row s2");
        CHECK(strstr(csv, "arm,seed,stage,task,metric,value\n") == csv, "CSV header");
        CHECK(strstr(csv, "a,1,s3,task_b,accuracy,0.700000\n") != NULL, "CSV accuracy row");
        CHECK(strstr(csv, "a,1,,task_a,forgetting,0.300000\n") != NULL, "CSV forgetting row");
        CHECK(strstr(csv, "b,1,,,final_average_accuracy_pct,76.6667\n") != NULL, "CSV final row");
    }
    const char *svgs[] = {"loss.svg", "accuracy-vs-params.svg", "accuracy-a.svg"};
    for (int i = 0; i < 3; i++) {
        char *text = read_text(dir, svgs[i]), why[160] = "";
        CHECK(text && xml_well_formed(text, why, sizeof why), "%s is not well-formed XML: %s", svgs[i], why);
        CHECK(text && strstr(text, "<svg xmlns=\"http://www.w3.org/2000/svg\""), "%s has an svg root", svgs[i]);
        if (text) printf("%s: %zu bytes, well-formed\n", svgs[i], strlen(text));
        free(text);
    }
    char *h = read_text(dir, "accuracy-a.svg");
    CHECK(h && strstr(h, "task&lt;c&gt;&amp;") && strstr(h, ">80<") && strstr(h, ">100<"),
          "heat map: escaped task name and cell values");
    free(h);
    /* The checker itself rejects broken XML. */
    char why[160];
    CHECK(!xml_well_formed("<svg><g></svg>", why, sizeof why), "unbalanced tags rejected");
    CHECK(!xml_well_formed("<svg a=1></svg>", why, sizeof why), "unquoted attribute rejected");
    CHECK(!xml_well_formed("<svg>a & b</svg>", why, sizeof why), "bare ampersand rejected");

    free(md);
    free(csv);
    check_stats();
    check_seeds(dir);
    free(loss);
    free(scatter);
    free(heat);
    remove_tree(dir);
    compare_result_free(&cr);
    return check_report("compare_unit");
}
