/*
 * vexp: the vectorised exp of the softmax, cross-entropy and SwiGLU kernels (vexp.h) against
 * the double-precision exp: every 4096th float in [-87.3, 88.7] within 3 ulp of the rounded
 * true value; 0 below, +inf above, NaN kept; the array forms equal the one-value form in
 * every lane and tail position; the double sum and the sigmoid.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "vexp.h"

int main(void) {
    double worst = 0;
    float worst_x = 0;
    long points = 0;
    for (uint32_t u = 0; u < 0xffffffffu - 4096u; u += 4096u) {
        float x;
        memcpy(&x, &u, sizeof x);
        if (!(x >= -87.3f && x <= 88.7f)) continue;
        float want = (float)exp((double)x);
        double ulp = (double)nextafterf(want, INFINITY) - (double)want;
        double e = fabs((double)vexp_one(x) - exp((double)x)) / ulp;
        if (e > worst) worst = e, worst_x = x;
        points++;
    }
    printf("vexp: %ld floats in [-87.3, 88.7], worst %.2f ulp (at %g)\n", points, worst, (double)worst_x);
    CHECK(points > 500000 && worst <= 3.0, "accuracy");
    CHECK(vexp_one(-100.0f) == 0.0f && vexp_one(-87.5f) == 0.0f, "underflow to 0");
    CHECK(isinf(vexp_one(100.0f)) && vexp_one(100.0f) > 0 && isnan(vexp_one(NAN)), "inf and NaN");
    CHECK(vexp_one(0.0f) == 1.0f, "exp(0) = 1");

    /* lanes and tails: the array forms give the one-value form's result everywhere */
    enum { N = 77 };
    float in[N], out[N], sig[N];
    for (int i = 0; i < N; i++) in[i] = (float)(i * 37 % 101) * 0.173f - 9.0f;
    vexp_shifted(out, in, N, 0.25f);
    vsigmoid(sig, in, N);
    int same = 1;
    double sum = 0;
    for (int i = 0; i < N; i++) {
        same &= out[i] == vexp_one(in[i] - 0.25f);
        same &= sig[i] == 1.0f / (1.0f + vexp_one(-in[i]));
        sum += (double)vexp_one(in[i] - 0.25f);
    }
    CHECK(same, "array forms differ from vexp_one");
    double got = vexp_sum_shifted(in, N, 0.25f);
    CHECK(fabs(got - sum) <= 1e-12 * sum, "sum %.17g vs %.17g", got, sum);
    vexp_shifted(in, in, N, 0.0f); /* in place */
    CHECK(in[5] == vexp_one((float)(5 * 37 % 101) * 0.173f - 9.0f), "in place");
    return check_report("vexp");
}
