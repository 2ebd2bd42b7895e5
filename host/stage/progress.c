/* progress.c: one self-rewriting line on a terminal; occasional plain lines otherwise. */
#include <stdio.h>
#include <unistd.h>

#include "stage.h"

enum { PROGRESS_OFF, PROGRESS_LINE, PROGRESS_PLAIN };

/* enabled: 1 a self-rewriting line, 0 nothing (quiet), -1 the line on a terminal and a plain
 * line every ten seconds otherwise. */
void progress_begin(struct progress *p, int32_t enabled, int64_t step0) {
    p->t0 = now_seconds();
    p->last = 0;
    p->step0 = step0;
    p->active = enabled < 0 ? (isatty(fileno(stderr)) ? PROGRESS_LINE : PROGRESS_PLAIN)
                            : enabled ? PROGRESS_LINE : PROGRESS_OFF;
}

static void format_time(double s, char *out, size_t cap) {
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

double progress_time_left(double elapsed, int64_t step0, int64_t step, int64_t steps) {
    /* The rate of this process's steps: a resumed stage did step0 of them before. */
    int64_t done = step - step0;
    return done > 0 ? elapsed / (double)done * (double)(steps - step) : 0;
}

void progress_update(struct progress *p, const char *stage, int64_t step, int64_t steps,
                     double loss, double tokens_per_s) {
    double now = now_seconds(), elapsed = now - p->t0;
    double left = progress_time_left(elapsed, p->step0, step, steps);
    char eta[32];
    format_time(left, eta, sizeof eta);
    if (p->active == PROGRESS_OFF) return;
    if (p->active == PROGRESS_LINE) {
        if (now - p->last < 0.1 && step < steps) return;
        fprintf(stderr, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  %s left   ", stage,
                (long long)step, (long long)steps, loss, tokens_per_s, eta);
        fflush(stderr);
    } else if (now - p->last >= 10.0 || step == steps) {
        /* Not a terminal (a log file, CI): a plain line every ten seconds. */
        fprintf(stderr, "[%s] step %lld/%lld  loss %.4f  %.0f tok/s  %s left\n", stage,
                (long long)step, (long long)steps, loss, tokens_per_s, eta);
    } else {
        return;
    }
    p->last = now;
}

void progress_interrupt(struct progress *p) {
    if (p->active != PROGRESS_LINE || p->last == 0) return;
    fprintf(stderr, "\n");
    p->last = 0;
}

void progress_end(struct progress *p) {
    if (p->active == PROGRESS_LINE) fprintf(stderr, "\n");
    p->active = PROGRESS_OFF;
}
