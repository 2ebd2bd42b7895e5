/*
 * check.h: the assertions every test uses, the failure counter, error statistics and the
 * last line of main.
 *
 * A failed CHECK prints its place, the condition and an optional message on stderr, counts
 * the failure and carries on, so every check runs and reports; main ends with one of the
 * summary helpers below, which give its exit status. REQUIRE stops the test at a failure
 * that makes the rest meaningless.
 */
#ifndef PEFT_TESTS_CHECK_H
#define PEFT_TESTS_CHECK_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures; /* CHECKs that failed so far */
static int check_count;    /* CHECKs run so far */

/* CHECK(cond) or CHECK(cond, fmt, ...): the message is optional. The argument count picks
 * the form (a plain `cond, ...` macro would need a message under ISO C11); a format and up
 * to 14 values. The condition is printed as the compiler sees it, macros expanded. */
#define CHECK(...)                                                                         \
    CHECK_PICK_(__VA_ARGS__, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_,   \
                CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_,    \
                CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_MSG_, CHECK_BARE_, 0)            \
    (__VA_ARGS__)
#define CHECK_PICK_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16,   \
                    name, ...)                                                             \
    name

#define CHECK_BARE_(cond)                                                                  \
    do {                                                                                   \
        check_count++;                                                                     \
        if (!(cond)) {                                                                     \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
        }                                                                                  \
    } while (0)

#define CHECK_MSG_(cond, ...)                                                              \
    do {                                                                                   \
        check_count++;                                                                     \
        if (!(cond)) {                                                                     \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* Stop at a failure that makes the rest meaningless. */
#define REQUIRE(cond, ...)                                                                 \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: required: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* ---- error statistics ---------------------------------------------------------------- */

/* Largest absolute and relative error seen over a group of values. */
struct err_stats {
    double max_abs;
    double max_rel;
    size_t count;
};

/* Adds one value; rel = |got - want| / max(|got|, |want|, floor), which it returns. */
static inline double err_add(struct err_stats *s, double got, double want, double floor) {
    double abs_err = fabs(got - want);
    double den = fmax(fmax(fabs(got), fabs(want)), floor);
    double rel = abs_err / den;
    /* A NaN, once seen, stays: a later finite error must not hide it. */
    if (!isnan(s->max_abs) && !(abs_err <= s->max_abs)) s->max_abs = abs_err;
    if (!isnan(s->max_rel) && !(rel <= s->max_rel)) s->max_rel = rel;
    s->count++;
    return rel;
}

static inline void err_merge(struct err_stats *into, const struct err_stats *s) {
    if (!isnan(into->max_abs) && !(s->max_abs <= into->max_abs)) into->max_abs = s->max_abs;
    if (!isnan(into->max_rel) && !(s->max_rel <= into->max_rel)) into->max_rel = s->max_rel;
    into->count += s->count;
}

/* ---- the end of main ----------------------------------------------------------------- */

/* main's exit status: 1 when any check failed. */
static inline int check_status(void) { return check_failures ? 1 : 0; }

/* "<ok> (N <noun>)", or "FAIL (N <noun>)" when a check failed, on stdout; main's status. */
static inline int check_summary(const char *ok, const char *noun) {
    printf("%s (%d %s)\n", check_failures ? "FAIL" : ok, check_failures, noun);
    return check_status();
}

/* "NAME: all checks passed" on stdout, or "NAME: N check(s) failed" on stderr; main's
 * status. */
static inline int check_report(const char *name) {
    if (check_failures)
        fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    else
        printf("%s: all checks passed\n", name);
    return check_status();
}

#endif
