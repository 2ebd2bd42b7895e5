/* stats.c: see stats.h. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>

#include "core/core.h"

void stats_mean_sd(const double *x, int32_t n, double *mean, double *sd, int32_t *count)
{
    double sum = 0;
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++)
        if (!isnan(x[i])) sum += x[i], k++;
    double m = k ? sum / k : NAN, ss = 0;
    for (int32_t i = 0; i < n; i++)
        if (!isnan(x[i])) ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *sd = k >= 2 ? sqrt(ss / (k - 1)) : NAN;
    if (count) *count = k;
}

/* The continued fraction of the incomplete beta function (modified Lentz's method), good for
 * x < (a + 1) / (a + b + 2). */
static double beta_fraction(double a, double b, double x)
{
    const double tiny = 1e-300;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double h = d;
    for (int m = 1; m <= 300; m++) {
        double m2 = 2.0 * m;
        /* even step: m (b - m) x / ((a + 2m - 1)(a + 2m)) */
        double num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + num * d;
        c = 1.0 + num / c;
        if (fabs(d) < tiny) d = tiny;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        h *= d * c;
        /* odd step: -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)) */
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + num * d;
        c = 1.0 + num / c;
        if (fabs(d) < tiny) d = tiny;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        double step = d * c;
        h *= step;
        if (fabs(step - 1.0) < 1e-15) break;
    }
    return h;
}

/* I_x(a, b), the regularized incomplete beta function. */
static double incomplete_beta(double a, double b, double x)
{
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    double front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x));
    if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_fraction(a, b, x) / a;
    return 1.0 - front * beta_fraction(b, a, 1.0 - x) / b; /* I_x(a, b) = 1 - I_{1-x}(b, a) */
}

double stats_t_two_sided_p(double t, double df)
{
    if (isnan(t) || !(df > 0)) return NAN;
    if (isinf(t)) return 0.0;
    /* P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2) */
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
}

double stats_t_quantile(double p, double df)
{
    if (!(p > 0 && p < 1) || !(df > 0)) return NAN;
    /* two-sided p falls as q grows: bisection on [0, hi] */
    double lo = 0, hi = 1;
    while (stats_t_two_sided_p(hi, df) > p && hi < 1e12) hi *= 2;
    for (int i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (stats_t_two_sided_p(mid, df) > p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

double stats_paired_t_p(const double *d, int32_t n, double *t_out)
{
    double mean, sd;
    int32_t k;
    stats_mean_sd(d, n, &mean, &sd, &k);
    if (t_out) *t_out = NAN;
    if (k < 2) return NAN;
    if (sd == 0.0) {
        if (t_out) *t_out = mean == 0.0 ? 0.0 : copysign(INFINITY, mean);
        return mean == 0.0 ? 1.0 : 0.0;
    }
    double t = mean / (sd / sqrt((double)k));
    if (t_out) *t_out = t;
    return stats_t_two_sided_p(t, k - 1);
}

enum { SIGN_FLIP_EXACT_MAX = 20, SIGN_FLIP_DRAWS = 100000 };

double stats_sign_flip_p(const double *d, int32_t n)
{
    double *x = xmalloc(((size_t)n + 1) * sizeof *x);
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++)
        if (!isnan(d[i])) x[k++] = d[i];
    if (k == 0) {
        free(x);
        return NAN;
    }
    double observed = 0;
    for (int32_t i = 0; i < k; i++) observed += x[i];
    /* sums equal up to rounding count as reaching the observed one */
    double target = fabs(observed) * (1.0 - 1e-12);
    uint64_t hits = 0, total = 0;
    if (k <= SIGN_FLIP_EXACT_MAX) {
        for (uint64_t mask = 0; mask < (1ull << k); mask++) {
            double s = 0;
            for (int32_t i = 0; i < k; i++) s += (mask >> i & 1) ? -x[i] : x[i];
            hits += fabs(s) >= target;
            total++;
        }
    } else {
        struct rng g;
        rng_seed(&g, 12345);
        for (; total < SIGN_FLIP_DRAWS; total++) {
            double s = 0;
            for (int32_t i = 0; i < k; i++) s += (rng_next(&g) & 1) ? -x[i] : x[i];
            hits += fabs(s) >= target;
        }
        hits++, total++; /* the observed signs are one of the patterns */
    }
    free(x);
    return (double)hits / (double)total;
}
