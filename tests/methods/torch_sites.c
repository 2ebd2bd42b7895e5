/*
 * torch_sites: the dora and ia3 plugins at one site against torch autograd (HF PEFT's
 * definitions, tests/gen_sites_fixture.py -> tests/fixtures/sites_torch.h): the site output and
 * the gradients of the adapter's tensors and of the input for a backward from fixed dy,
 *   dora  layer 0 q_proj: DoRA with the weight norm detached (the method's default gradient,
 *         which finite differences cannot check: peft check verifies exact_grad instead);
 *   ia3   layer 0 k_proj (output scaled) and down_proj (input scaled, through the host's
 *         input hook).
 * The hooks are driven as the model drives them: the input hook, the product, forward; then
 * the input made again, dx = dy W, backward, the input hook's backward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "mtest.h"
#include "fixtures/sites_torch.h"

enum { ROWS = SITES_ROWS };

static struct plugin_registry reg;
static char **args;
static int n_args;

/* The fixture's formulas, in double rounded to float. */
static float w_at(int o, int i) { return (float)(0.3 * sin(0.7 * o + 0.3 * i + 0.1)); }
static float x_at(int r, int i) { return (float)sin(0.13 * r * 16 + 0.29 * i); }
static float dy_at(int r, int o) { return (float)cos(0.31 * r + 0.17 * o); }

/* max |got - want| / max |want| */
static double rel_err(const float *got, const double *want, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(got[i] - want[i]));
        m = fmax(m, fabs(want[i]));
    }
    return m > 0 ? e / m : e;
}

struct site_run {
    struct model m;
    struct task_table tasks;
    struct batch b;
    struct method_run *mr;
    int32_t site, d_in, d_out;
    float *x, *y, *dy, *dx;
};

/* A method run of `id` on the tiny model, the site's weight set to the formula. */
static void open_site(struct site_run *s, const char *id, const char *const *kv, int32_t site) {
    memset(s, 0, sizeof *s);
    const struct plugin_method *pm = mt_method(&reg, n_args, args, id);
    mt_model(&s->m, 0, 3, 0.3f);
    task_table_id(&s->tasks, "t");
    struct method_env env = mt_env(&s->tasks, 5);
    s->site = site;
    model_site_dims(&s->m, site, &s->d_in, &s->d_out);
    float *w = model_site_weight(&s->m, site);
    for (int o = 0; o < s->d_out; o++)
        for (int i = 0; i < s->d_in; i++) w[o * s->d_in + i] = w_at(o, i);
    s->mr = mt_run_create(pm, &s->m, &env, kv);
    REQUIRE(s->mr, "create %s: %s", id, err_msg());
    mt_batch(&s->b, 2, ROWS / 2, s->m.cfg.vocab, 1);
    REQUIRE(method_run_batch_begin(s->mr, &s->b, 1, 0) == 0, "batch_begin: %s", err_msg());
    s->x = xmalloc(sizeof(float) * ROWS * s->d_in);
    s->dx = xmalloc(sizeof(float) * ROWS * s->d_in);
    s->y = xmalloc(sizeof(float) * ROWS * s->d_out);
    s->dy = xmalloc(sizeof(float) * ROWS * s->d_out);
    for (int r = 0; r < ROWS; r++) {
        for (int i = 0; i < s->d_in; i++) s->x[r * s->d_in + i] = x_at(r, i);
        for (int o = 0; o < s->d_out; o++) s->dy[r * s->d_out + o] = dy_at(r, o);
    }
}

/* (rows, d_out) = xs W^T; (rows, d_in) = dy W */
static void product(const struct site_run *s, const float *xs, float *y) {
    const float *w = model_site_weight(&s->m, s->site);
    for (int r = 0; r < ROWS; r++)
        for (int o = 0; o < s->d_out; o++) {
            double acc = 0;
            for (int i = 0; i < s->d_in; i++) acc += (double)xs[r * s->d_in + i] * w[o * s->d_in + i];
            y[r * s->d_out + o] = (float)acc;
        }
}

static void base_dx(const struct site_run *s, float *dx) {
    const float *w = model_site_weight(&s->m, s->site);
    for (int r = 0; r < ROWS; r++)
        for (int i = 0; i < s->d_in; i++) {
            double acc = 0;
            for (int o = 0; o < s->d_out; o++) acc += (double)s->dy[r * s->d_out + o] * w[o * s->d_in + i];
            dx[r * s->d_in + i] = (float)acc;
        }
}

/* One forward and backward through the hooks, as model.c drives them. */
static void drive(struct site_run *s) {
    const struct model_hooks *hk = method_run_hooks(s->mr, 1);
    method_run_zero_grads(s->mr);
    const float *xs = hk->site_input ? hk->site_input(hk->ctx, 0, s->site, s->x, ROWS) : s->x;
    REQUIRE(xs, "input hook: %s", err_msg());
    product(s, xs, s->y);
    REQUIRE(hk->site_forward(hk->ctx, 0, s->site, xs, s->y, ROWS) == 0, "forward: %s", err_msg());
    xs = hk->site_input ? hk->site_input(hk->ctx, 0, s->site, s->x, ROWS) : s->x;
    base_dx(s, s->dx);
    REQUIRE(hk->site_backward(hk->ctx, 0, s->site, xs, s->dy, s->dx, ROWS) == 0, "backward: %s",
            err_msg());
    if (xs != s->x)
        REQUIRE(hk->site_input_backward(hk->ctx, 0, s->site, s->x, s->dx, ROWS) == 0,
                "input backward: %s", err_msg());
}

static void close_site(struct site_run *s) {
    method_run_free(s->mr);
    mt_batch_free(&s->b);
    task_table_free(&s->tasks);
    model_free(&s->m);
    free(s->x);
    free(s->y);
    free(s->dy);
    free(s->dx);
}

static struct mtensor *site_tensor(struct site_run *s, const char *suffix) {
    char site[96], name[160];
    model_site_name(&s->m, s->site, site, sizeof site);
    snprintf(name, sizeof name, "base_model.model.%s.%s", site, suffix);
    struct mtensor *t = mt_find_tensor(s->mr, name);
    REQUIRE(t, "no tensor %s", name);
    return t;
}

static void test_dora(void) {
    const char *kv[] = {"r", "2", "lora_alpha", "3", "target_modules", "q_proj", NULL};
    struct site_run s;
    open_site(&s, "dora", kv, 0);
    struct mtensor *A = site_tensor(&s, "lora_A.weight"), *B = site_tensor(&s, "lora_B.weight"),
                   *m = site_tensor(&s, "lora_magnitude_vector");
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < s.d_in; i++) A->data[k * s.d_in + i] = (float)(0.2 * cos(0.5 * k + 0.9 * i));
    for (int o = 0; o < s.d_out; o++) {
        for (int k = 0; k < 2; k++) B->data[o * 2 + k] = (float)(0.25 * sin(1.1 * o - 0.4 * k + 0.3));
        m->data[o] = (float)(1.0 + 0.1 * cos(0.8 * o));
    }
    drive(&s);
    double ey = rel_err(s.y, dora_y, ROWS * 16), eA = rel_err(A->grad, dora_dA, 32),
           eB = rel_err(B->grad, dora_dB, 32), em = rel_err(m->grad, dora_dm, 16),
           ex = rel_err(s.dx, dora_dx, ROWS * 16);
    printf("dora (norm detached, as HF PEFT) against torch: y %.2g, dA %.2g, dB %.2g, dm %.2g, "
           "dx %.2g (max error / max value)\n", ey, eA, eB, em, ex);
    CHECK(ey < 1e-5 && eA < 1e-5 && eB < 1e-5 && em < 1e-5 && ex < 1e-5, "dora against torch");
    close_site(&s);
}

static void test_ia3(int feedforward) {
    const char *kv[] = {"target_modules", "k_proj down_proj", "feedforward_modules", "down_proj", NULL};
    struct site_run s;
    open_site(&s, "ia3", kv, feedforward ? 6 : 1); /* layer 0 down_proj, k_proj */
    struct mtensor *l = site_tensor(&s, "ia3_l");
    for (uint64_t i = 0; i < l->numel; i++) l->data[i] = (float)(1.0 + 0.2 * sin(0.6 * (double)i + 0.2));
    drive(&s);
    const double *wy = feedforward ? ia3d_y : ia3k_y, *wl = feedforward ? ia3d_dl : ia3k_dl,
                 *wx = feedforward ? ia3d_dx : ia3k_dx;
    double ey = rel_err(s.y, wy, (size_t)ROWS * s.d_out), el = rel_err(l->grad, wl, l->numel),
           ex = rel_err(s.dx, wx, (size_t)ROWS * s.d_in);
    printf("ia3 %s (%s scaled) against torch: y %.2g, dl %.2g, dx %.2g\n",
           feedforward ? "down_proj" : "k_proj", feedforward ? "input" : "output", ey, el, ex);
    CHECK(ey < 1e-5 && el < 1e-5 && ex < 1e-5, "ia3 against torch");
    close_site(&s);
}

int main(int argc, char **argv) {
    registry_init(&reg, NULL);
    args = argv;
    n_args = argc;
    test_dora();
    test_ia3(0);
    test_ia3(1);
    registry_free(&reg);
    return check_report("torch_sites");
}
