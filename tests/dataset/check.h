/*
 * check.h: the dataset tests' assertion: report every failed check with its place and a
 * message, keep going, and make main return non-zero at the end.
 */
#ifndef PEFT_TEST_DATASET_CHECK_H
#define PEFT_TEST_DATASET_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            check_failures++;                                                              \
        }                                                                                  \
    } while (0)

static inline int check_report(const char *name) {
    if (check_failures)
        fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    else
        printf("%s: all checks passed\n", name);
    return check_failures ? 1 : 0;
}

#endif
