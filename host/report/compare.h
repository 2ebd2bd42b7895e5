/*
 * compare.h: `peft compare FILE.ini`, an A/B comparison of methods.
 *
 * A compare file is a run file (model, data, chain of stages: the base run) plus [arm.NAME]
 * sections, each a set of overrides "stage.STAGE.key = value" (a method and its keys, or the
 * optimizer settings of a stage), and an optional [compare] section (out, jobs). Every arm
 * runs the same model, data, order, seed and step budget: arms may not touch [run], [model],
 * [data], nor a stage's steps, batch size, tasks, n_train, seed or chain.
 *
 * Each arm is written as a complete run file OUT/arms/NAME/run.ini and run by a child
 * `peft run` process (--jobs N at a time), so a failing arm cannot take the others down and
 * every arm can be re-run alone. Stages that are identical in every respect to the first
 * arm's (same config hash) are copied from it instead of trained again; an arm whose stages
 * are all complete is not run again. Then OUT/report.md, OUT/results.csv and the plots.
 */
#ifndef PEFT_COMPARE_H
#define PEFT_COMPARE_H

#include <stdint.h>

/* Returns the exit status: 0 done, 1 an arm failed (the report says which), 2 bad input
 * (one line on stderr). jobs <= 0: from the file (default 1). */
int compare_main(const char *file, int32_t jobs, int32_t resume, const char *plugin_path);

#endif
