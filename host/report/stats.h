/* stats.h: the statistics of a comparison over seeds (stats.c): mean and standard deviation,
 * and two paired tests of differences d (arm minus baseline, one per seed and task):
 *   - Student's paired t-test: t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom,
 *     two-sided p from the t distribution (through the regularized incomplete beta function);
 *   - the sign-flip permutation test: under "no difference" each d_i is as likely to be
 *     -d_i, so p is the share of the 2^n sign patterns whose |sum| reaches the observed one
 *     (exact up to n = 20, else 100000 patterns drawn with a fixed seed).
 * NAN where a figure is undefined (n too small, or no spread). */
#ifndef PEFT_STATS_H
#define PEFT_STATS_H

#include <stdint.h>

/* Mean and sample standard deviation (n - 1) of the non-NAN values of x (n); *count gets how
 * many there were. sd is NAN below 2 values. */
void stats_mean_sd(const double *x, int32_t n, double *mean, double *sd, int32_t *count);

/* Two-sided p of Student's t distribution with df degrees of freedom at t. */
double stats_t_two_sided_p(double t, double df);

/* Paired t-test of the differences d (n >= 2); *t_out gets t (may be NULL). NAN when n < 2; 1
 * when every d is 0; 0 when the d are equal and not 0 (no spread, a certain sign). */
double stats_paired_t_p(const double *d, int32_t n, double *t_out);

/* The t quantile q with P(|T| >= q) = p for df degrees of freedom (0 < p < 1): the
 * half-width of a (1 - p) confidence interval is q sd / sqrt(n). */
double stats_t_quantile(double p, double df);

/* Sign-flip permutation test of d (n >= 1), two-sided. */
double stats_sign_flip_p(const double *d, int32_t n);

#endif
