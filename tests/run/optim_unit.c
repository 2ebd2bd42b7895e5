/* The host's RMSprop and SGD against torch.optim's on a fixture (tests/fixtures/optim_torch.h,
 * written by tests/gen_optim_fixture.py): one tensor of 7 entries, 4 steps of fixed gradients,
 * the weights after every step within 1e-6 relative. */
#include "check.h"
#include "core.h"
#include "optim.h"

#include <math.h>
#include <string.h>

#include "../fixtures/optim_torch.h"

int main(void)
{
    for (size_t c = 0; c < sizeof fx_cases / sizeof fx_cases[0]; c++) {
        const struct fx_case *fx = &fx_cases[c];
        struct optim_params p = {.lr = fx->lr, .alpha = fx->alpha, .eps = fx->eps,
                                 .momentum = fx->momentum, .weight_decay = fx->weight_decay,
                                 .kind = fx->kind == 1 ? OPTIM_RMSPROP : OPTIM_SGD};
        float w[7], m[7] = {0}, v[7] = {0};
        memcpy(w, fx_w0, sizeof w);
        double worst = 0;
        for (int t = 0; t < 4; t++) {
            optim_update(&p, w, NULL, fx_grads[t], 1.0f, m, v, 7, fx->lr, fx->weight_decay, t + 1);
            for (int j = 0; j < 7; j++) {
                double e = fabs(w[j] - fx->after[t][j]) / fmax(1.0, fabs(fx->after[t][j]));
                if (e > worst) worst = e;
            }
        }
        printf("%-18s worst relative difference to torch over 4 steps: %.2g\n", fx->name, worst);
        CHECK(worst < 1e-6, "%s: %.3g from torch.optim", fx->name, worst);
    }
    return check_report("optim_unit");
}
