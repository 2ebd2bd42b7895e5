/*
 * model_check.h: small helpers shared by the model tests: a failure counter with a message,
 * and per-tensor error statistics.
 */
#ifndef PEFT_TESTS_MODEL_CHECK_H
#define PEFT_TESTS_MODEL_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            check_failures++;                                                                \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
    } while (0)

/* Largest absolute and relative error seen over a group of values. */
struct err_stats {
    double max_abs;
    double max_rel;
    size_t count;
};

/* rel = |got - want| / max(|got|, |want|, floor) */
static inline void err_add(struct err_stats *s, double got, double want, double floor)
{
    double abs_err = fabs(got - want);
    double den = fmax(fmax(fabs(got), fabs(want)), floor);
    double rel = abs_err / den;
    if (!(abs_err <= s->max_abs))
        s->max_abs = abs_err; /* NaN propagates as a failure */
    if (!(rel <= s->max_rel))
        s->max_rel = rel;
    s->count++;
}

static inline void err_merge(struct err_stats *into, const struct err_stats *s)
{
    if (!(s->max_abs <= into->max_abs))
        into->max_abs = s->max_abs;
    if (!(s->max_rel <= into->max_rel))
        into->max_rel = s->max_rel;
    into->count += s->count;
}

#endif
