/* svg.c: three small charts as SVG: loss curves, accuracy heat maps, accuracy vs size. */
#include "svg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "stats.h"

/* A colour per arm (colour-blind-safe palette), cycled. */
static const char *const palette[] = {"#0072b2", "#d55e00", "#009e73", "#cc79a7",
                                      "#e69f00", "#56b4e9", "#000000", "#f0e442"};
#define PALETTE_N ((int32_t)(sizeof palette / sizeof palette[0]))

char *svg_escape(const char *s) {
    struct strbuf b = {0};
    sb_printf(&b, "%s", "");
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&': sb_printf(&b, "&amp;"); break;
        case '<': sb_printf(&b, "&lt;"); break;
        case '>': sb_printf(&b, "&gt;"); break;
        case '"': sb_printf(&b, "&quot;"); break;
        case '\'': sb_printf(&b, "&apos;"); break;
        default: sb_printf(&b, "%c", *p);
        }
    }
    return b.s;
}

static void svg_begin(struct strbuf *b, int w, int h, const char *title) {
    char *t = svg_escape(title);
    sb_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                 "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
                 "<title>%s</title>\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
                 "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n",
              w, h, w, h, t, w, h, w / 2, t);
    free(t);
}

static void svg_text(struct strbuf *b, double x, double y, const char *anchor, const char *extra,
                     const char *text) {
    char *t = svg_escape(text);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>%s</text>\n", x, y, anchor,
              extra ? extra : "", t);
    free(t);
}

static int svg_end(struct strbuf *b, const char *path) {
    sb_printf(b, "</svg>\n");
    int rc = file_write_atomic(path, b->s, b->len);
    sb_free(b);
    return rc;
}

/* "Nice" tick step for a range: 1, 2 or 5 times a power of ten. */
static double tick_step(double span, int want) {
    double raw = span / (want > 0 ? want : 1), p = pow(10, floor(log10(raw > 0 ? raw : 1)));
    double m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

struct frame {
    double x0, y0, w, h;         /* plot area in pixels */
    double xmin, xmax, ymin, ymax;
    int log_x;
};

static double fx(const struct frame *f, double x) {
    double a = f->log_x ? log10(x) : x, lo = f->log_x ? log10(f->xmin) : f->xmin,
           hi = f->log_x ? log10(f->xmax) : f->xmax;
    return f->x0 + (hi > lo ? (a - lo) / (hi - lo) : 0.5) * f->w;
}

static double fy(const struct frame *f, double y) {
    return f->y0 + f->h - (f->ymax > f->ymin ? (y - f->ymin) / (f->ymax - f->ymin) : 0.5) * f->h;
}

static void axes(struct strbuf *b, const struct frame *f, const char *xlabel, const char *ylabel) {
    sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                 "stroke=\"#444\"/>\n", f->x0, f->y0, f->w, f->h);
    char label[64];
    double ys = tick_step(f->ymax - f->ymin, 5);
    for (double y = ceil(f->ymin / ys) * ys; y <= f->ymax + 1e-9; y += ys) {
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                  f->x0, fy(f, y), f->x0 + f->w, fy(f, y));
        snprintf(label, sizeof label, "%g", y);
        svg_text(b, f->x0 - 6, fy(f, y) + 4, "end", NULL, label);
    }
    if (f->log_x) {
        for (double x = pow(10, floor(log10(f->xmin))); x <= f->xmax * 1.0001; x *= 10) {
            if (x < f->xmin * 0.9999) continue;
            snprintf(label, sizeof label, "%g", x);
            svg_text(b, fx(f, x), f->y0 + f->h + 16, "middle", NULL, label);
        }
    } else {
        double xs = tick_step(f->xmax - f->xmin, 6);
        for (double x = ceil(f->xmin / xs) * xs; x <= f->xmax + 1e-9; x += xs) {
            snprintf(label, sizeof label, "%g", x);
            svg_text(b, fx(f, x), f->y0 + f->h + 16, "middle", NULL, label);
        }
    }
    svg_text(b, f->x0 + f->w / 2, f->y0 + f->h + 34, "middle", NULL, xlabel);
    char rot[96];
    snprintf(rot, sizeof rot, " transform=\"rotate(-90 %.1f %.1f)\"", f->x0 - 44, f->y0 + f->h / 2);
    svg_text(b, f->x0 - 44, f->y0 + f->h / 2, "middle", rot, ylabel);
}

static void legend(struct strbuf *b, const struct compare_result *cr, double x, double y) {
    for (int32_t i = 0; i < cr->n_arms; i++) {
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"4\" fill=\"%s\"/>\n", x,
                  y + 18.0 * i - 4, palette[i % PALETTE_N]);
        svg_text(b, x + 20, y + 18.0 * i, "start", NULL, compare_run(cr, i, 0)->name);
    }
}

int svg_loss_curves(const struct compare_result *cr, const char *path) {
    struct frame f = {70, 40, 560, 320, INFINITY, -INFINITY, INFINITY, -INFINITY, 0};
    int32_t runs = cr->n_arms * cr->n_seeds;
    for (int32_t i = 0; i < runs; i++)
        for (int32_t k = 0; k < cr->arms[i].n_curve; k++) {
            double x = (double)cr->arms[i].curve_step[k], y = cr->arms[i].curve_loss[k];
            if (!isfinite(y)) continue;
            f.xmin = fmin(f.xmin, x), f.xmax = fmax(f.xmax, x);
            f.ymin = fmin(f.ymin, y), f.ymax = fmax(f.ymax, y);
        }
    if (!isfinite(f.xmin)) f.xmin = 0, f.xmax = 1, f.ymin = 0, f.ymax = 1;
    f.ymin = fmin(0, f.ymin);
    f.ymax *= 1.05;
    struct strbuf b = {0};
    svg_begin(&b, 800, 420, cr->n_seeds > 1 ? "Training loss of every arm (one line per seed)"
                                            : "Training loss of every arm");
    axes(&b, &f, "step (over the whole chain)", "training loss");
    /* Stage boundaries of the chain (the first arm's stages: every arm has the same steps). */
    const struct arm_result *a0 = compare_run(cr, 0, 0);
    int64_t end = 0;
    for (int32_t s = 0; s < a0->n_stages; s++) {
        int64_t start = end;
        end += a0->stages[s].steps;
        if (end <= f.xmin || start >= f.xmax) continue;
        double xs = fx(&f, fmax(f.xmin, (double)start));
        if (s > 0)
            sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
                          "stroke-dasharray=\"4 3\"/>\n", xs, f.y0, xs, f.y0 + f.h);
        svg_text(&b, xs + 4, f.y0 + 14, "start", " fill=\"#666\"", a0->stages[s].name);
    }
    for (int32_t i = 0; i < runs; i++) {
        const struct arm_result *a = &cr->arms[i];
        if (!a->n_curve) continue;
        sb_printf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"",
                  palette[(i / cr->n_seeds) % PALETTE_N], cr->n_seeds > 1 ? "1.1" : "1.6",
                  cr->n_seeds > 1 ? " stroke-opacity=\"0.7\"" : "");
        for (int32_t k = 0; k < a->n_curve; k++)
            if (isfinite(a->curve_loss[k]))
                sb_printf(&b, "%.1f,%.1f ", fx(&f, (double)a->curve_step[k]), fy(&f, a->curve_loss[k]));
        sb_printf(&b, "\"/>\n");
    }
    legend(&b, cr, 650, 60);
    return svg_end(&b, path);
}

/* White (0%) to deep blue (100%). */
static void heat_colour(double v, char *out, size_t cap) {
    if (isnan(v)) {
        snprintf(out, cap, "#eeeeee");
        return;
    }
    v = fmin(1, fmax(0, v));
    int r = (int)(255 - v * (255 - 8)), g = (int)(255 - v * (255 - 69)), bl = (int)(255 - v * (255 - 148));
    snprintf(out, cap, "#%02x%02x%02x", r, g, bl);
}

/* The mean over the arm's seeds of R[stage][task] (NAN unless every seed has it). */
static double mean_acc(const struct compare_result *cr, int32_t arm, int32_t s, int32_t t) {
    double sum = 0;
    for (int32_t k = 0; k < cr->n_seeds; k++) {
        const struct arm_result *a = compare_run(cr, arm, k);
        if (s >= a->n_stages || !a->stages[s].complete) return NAN;
        sum += a->stages[s].acc[t];
    }
    return sum / cr->n_seeds;
}

int svg_accuracy_heatmap(const struct compare_result *cr, int32_t arm, const char *path) {
    const struct arm_result *a = compare_run(cr, arm, 0);
    const double cw = 70, ch = 30, left = 160, top = 90;
    int w = (int)(left + cw * cr->n_tasks + 40), h = (int)(top + ch * a->n_stages + 40);
    if (w < 420) w = 420;
    struct strbuf b = {0};
    char title[256];
    snprintf(title, sizeof title, "Accuracy (%%) after each stage: %s%s", a->name,
             cr->n_seeds > 1 ? " (mean over the seeds)" : "");
    svg_begin(&b, w, h, title);
    for (int32_t t = 0; t < cr->n_tasks; t++) {
        char rot[96];
        double x = left + cw * t + cw / 2, y = top - 8;
        snprintf(rot, sizeof rot, " transform=\"rotate(-30 %.1f %.1f)\"", x, y);
        svg_text(&b, x, y, "start", rot, cr->tasks[t]);
    }
    for (int32_t s = 0; s < a->n_stages; s++) {
        const struct arm_stage *st = &a->stages[s];
        char label[160];
        snprintf(label, sizeof label, "after %s", st->name);
        svg_text(&b, left - 8, top + ch * s + ch / 2 + 4, "end", NULL, label);
        for (int32_t t = 0; t < cr->n_tasks; t++) {
            double v = mean_acc(cr, arm, s, t);
            char colour[16], cell[16];
            heat_colour(v, colour, sizeof colour);
            sb_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                          "stroke=\"white\"/>\n", left + cw * t, top + ch * s, cw, ch, colour);
            if (isnan(v)) continue;
            snprintf(cell, sizeof cell, "%.0f", 100 * v);
            svg_text(&b, left + cw * t + cw / 2, top + ch * s + ch / 2 + 4, "middle",
                     v > 0.55 ? " fill=\"white\"" : NULL, cell);
        }
    }
    return svg_end(&b, path);
}

int svg_accuracy_bars(const struct compare_result *cr, int32_t arm, const char *path) {
    const struct arm_result *a = compare_run(cr, arm, 0);
    int32_t last = a->n_stages - 1, n = 0;
    int32_t *tasks = xcalloc((size_t)cr->n_tasks + 1, sizeof *tasks);
    for (int32_t t = 0; t < cr->n_tasks && last >= 0; t++)
        if (!isnan(mean_acc(cr, arm, last, t))) tasks[n++] = t;
    const double bw = 60, gap = 24;
    struct frame f = {70, 50, n * (bw + gap) + gap, 260, 0, 1, 0, 100, 0};
    int w = (int)(f.x0 + f.w + 40);
    struct strbuf b = {0};
    char title[256];
    snprintf(title, sizeof title, "Accuracy (%%) after %s: %s%s", last >= 0 ? a->stages[last].name : "-",
             a->name, cr->n_seeds > 1 ? " (mean ± sd over the seeds)" : "");
    svg_begin(&b, w < 420 ? 420 : w, 380, title);
    sb_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                  "stroke=\"#444\"/>\n", f.x0, f.y0, f.w, f.h);
    for (int y = 0; y <= 100; y += 20) {
        char label[16];
        snprintf(label, sizeof label, "%d", y);
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                  f.x0, fy(&f, y), f.x0 + f.w, fy(&f, y));
        svg_text(&b, f.x0 - 6, fy(&f, y) + 4, "end", NULL, label);
    }
    double v[COMPARE_MAX_SEEDS];
    int32_t ns = cr->n_seeds < COMPARE_MAX_SEEDS ? cr->n_seeds : COMPARE_MAX_SEEDS;
    for (int32_t i = 0; i < n; i++) {
        int32_t t = tasks[i];
        for (int32_t k = 0; k < ns; k++) v[k] = 100 * compare_run(cr, arm, k)->stages[last].acc[t];
        double mean, sd;
        stats_mean_sd(v, ns, &mean, &sd, NULL);
        double x = f.x0 + gap + i * (bw + gap);
        sb_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x,
                  fy(&f, mean), bw, fy(&f, 0) - fy(&f, mean), palette[arm % PALETTE_N]);
        if (!isnan(sd) && sd > 0)
            sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\" "
                          "stroke-width=\"1.5\"/>\n", x + bw / 2, fy(&f, fmin(100, mean + sd)), x + bw / 2,
                      fy(&f, fmax(0, mean - sd)));
        char cell[32];
        snprintf(cell, sizeof cell, "%.0f", mean);
        svg_text(&b, x + bw / 2, fy(&f, mean) - 6, "middle", NULL, cell);
        svg_text(&b, x + bw / 2, f.y0 + f.h + 16, "middle", NULL, cr->tasks[t]);
    }
    free(tasks);
    return svg_end(&b, path);
}

int svg_accuracy_vs_params(const struct compare_result *cr, const char *path) {
    struct frame f = {80, 40, 520, 320, INFINITY, -INFINITY, 0, 100, 1};
    for (int32_t i = 0; i < cr->n_arms; i++) {
        double p = (double)report_trainable(compare_run(cr, i, 0));
        if (!report_arm_ok(cr, i) || p <= 0) continue;
        f.xmin = fmin(f.xmin, p), f.xmax = fmax(f.xmax, p);
    }
    if (!isfinite(f.xmin)) f.xmin = 1, f.xmax = 10;
    f.xmin /= 2;
    f.xmax *= 2;
    struct strbuf b = {0};
    svg_begin(&b, 800, 420, cr->n_seeds > 1 ? "Final average accuracy (mean ± sd over the seeds) "
                                              "against trainable parameters"
                                            : "Final average accuracy against trainable parameters");
    axes(&b, &f, "trainable parameters (log scale)", "final average accuracy (%)");
    for (int32_t i = 0; i < cr->n_arms; i++) {
        const struct arm_result *a = compare_run(cr, i, 0);
        double acc[COMPARE_MAX_SEEDS];
        int32_t n = cr->n_seeds < COMPARE_MAX_SEEDS ? cr->n_seeds : COMPARE_MAX_SEEDS;
        for (int32_t k = 0; k < n; k++) acc[k] = 100 * report_final_average(compare_run(cr, i, k), cr->n_tasks);
        double mean, sd;
        stats_mean_sd(acc, n, &mean, &sd, NULL);
        double p = (double)report_trainable(a);
        if (!report_arm_ok(cr, i) || p <= 0 || isnan(mean)) continue;
        if (!isnan(sd) && sd > 0) /* error bar: mean ± sd */
            sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"1.5\"/>\n", fx(&f, p), fy(&f, fmin(100, mean + sd)), fx(&f, p),
                      fy(&f, fmax(0, mean - sd)), palette[i % PALETTE_N]);
        sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"6\" fill=\"%s\"/>\n", fx(&f, p),
                  fy(&f, mean), palette[i % PALETTE_N]);
        svg_text(&b, fx(&f, p) + 9, fy(&f, mean) - 6, "start", NULL, a->name);
    }
    legend(&b, cr, 640, 60);
    return svg_end(&b, path);
}
