/*
 * bench_conpet.c: inference cost of dynamic ConPET against the number of tasks.
 *
 * ConPET's claim: inference is one selector pass plus the top-k experts' passes, whatever the
 * number of tasks learnt. For each --tasks N this builds a random llama model, a conpet
 * instance in mode = dynamic with N experts (all known, B != 0), and times an evaluation
 * batch the way a run evaluates: batch_begin, which runs the selector's auxiliary pass (served
 * here as the run serves it), then the main forward with every example routed to its top-k
 * experts. Reported: time per example (median over repeats), and beside it the same batch
 * through the bare model and through one LoRA (mode = static), so the ratios show what the
 * selector pass and the routing cost. Nothing is asserted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "method.h"
#include "model.h"
#include "plugin_loader.h"
#include "tokenizer.h"
#include "core.h"

#define MAX_COUNTS 16

struct options {
    int64_t counts[MAX_COUNTS];
    int32_t n_counts;
    int64_t C, L, B, T, iters, repeats, rank, top_k, seed;
    const char *plugin_path, *target;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_conpet [options]\n"
            "  --tasks N         tasks (experts) learnt (repeatable; default 2 4 8)\n"
            "  --size CxL        model d_model x n_layers (default 128x4)\n"
            "  --batch B         examples per evaluation batch (default 16)\n"
            "  --seq T           tokens per example (default 24)\n"
            "  --iters N         batches per repeat (default 10)\n"
            "  --repeats R       repeats; the median is reported (default 5)\n"
            "  --rank r          rank of every expert and of the selector (default 4)\n"
            "  --top-k K         experts per example (default 1)\n"
            "  --target LIST     target_modules (default \"q_proj k_proj\", ConPET's)\n"
            "  --seed S          model and batch seed (default 1)\n"
            "  --plugin-path P   extra plugin directories (':'-separated)\n");
}

static int want_int(const char *flag, const char *v, int64_t lo, int64_t *out) {
    if (!v || parse_i64(v, out) || *out < lo)
        return err_set("%s: expected an integer >= %lld, got '%s'", flag, (long long)lo,
                       v ? v : "");
    return 0;
}

static int parse_args(int argc, char **argv, struct options *o) {
    *o = (struct options){.C = 128, .L = 4, .B = 16, .T = 24, .iters = 10, .repeats = 5,
                          .rank = 4, .top_k = 1, .seed = 1, .target = "q_proj k_proj"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--tasks") == 0) {
            if (o->n_counts == MAX_COUNTS) rc = err_set("--tasks: at most %d", MAX_COUNTS);
            else rc = want_int(a, v, 1, &o->counts[o->n_counts++]);
        } else if (strcmp(a, "--size") == 0) {
            const char *x = v ? strchr(v, 'x') : NULL;
            char left[32];
            if (!x || (size_t)(x - v) >= sizeof left) {
                rc = err_set("--size: expected D_MODELxN_LAYERS, got '%s'", v ? v : "");
            } else {
                memcpy(left, v, (size_t)(x - v));
                left[x - v] = 0;
                if (parse_i64(left, &o->C) || parse_i64(x + 1, &o->L) || o->C < 8 || o->L < 1 ||
                    o->C % 32 != 0)
                    rc = err_set("--size: expected D_MODELxN_LAYERS with D_MODEL a multiple of "
                                 "32, got '%s'", v);
            }
        } else if (strcmp(a, "--batch") == 0) rc = want_int(a, v, 1, &o->B);
        else if (strcmp(a, "--seq") == 0) rc = want_int(a, v, 2, &o->T);
        else if (strcmp(a, "--iters") == 0) rc = want_int(a, v, 1, &o->iters);
        else if (strcmp(a, "--repeats") == 0) rc = want_int(a, v, 1, &o->repeats);
        else if (strcmp(a, "--rank") == 0) rc = want_int(a, v, 1, &o->rank);
        else if (strcmp(a, "--top-k") == 0) rc = want_int(a, v, 1, &o->top_k);
        else if (strcmp(a, "--seed") == 0) rc = want_int(a, v, 0, &o->seed);
        else if (strcmp(a, "--target") == 0) {
            if (!v) rc = err_set("--target: missing value");
            o->target = v;
        } else if (strcmp(a, "--plugin-path") == 0) {
            if (!v) rc = err_set("--plugin-path: missing value");
            o->plugin_path = v;
        } else {
            rc = err_set("unknown option '%s' (see --help)", a);
        }
        if (rc) return -1;
        i += 1; /* every option takes a value */
    }
    if (o->n_counts == 0) {
        o->counts[0] = 2;
        o->counts[1] = 4;
        o->counts[2] = 8;
        o->n_counts = 3;
    }
    return 0;
}

/* ---- the run's side of an evaluation batch ------------------------------------------- */

struct bench {
    struct model m;
    struct model_acts *acts, *aux;
    struct batch b;
    struct method_run *mr;
    int64_t aux_passes;
};

/* Auxiliary passes as the run serves them (run.c env_run_pass), evaluation only. */
static int bench_run_pass(void *ctx, uint32_t pass, uint32_t backward) {
    struct bench *bc = ctx;
    (void)backward;
    struct model_hooks hooks = *method_run_hooks(bc->mr, 0);
    hooks.pass = pass;
    float loss;
    bc->aux_passes++;
    return model_forward(&bc->m, bc->aux, bc->b.tokens, NULL, bc->b.B, bc->b.T, &hooks, &loss);
}

/* A random batch: tokens uniform over the bytes, the first half a prompt, task ids spread. */
static void random_batch(struct batch *b, int32_t B, int32_t T, int32_t n_tasks, uint64_t seed) {
    struct rng g;
    rng_seed_label(&g, seed, "bench:conpet");
    size_t n = (size_t)B * T;
    memset(b, 0, sizeof *b);
    b->B = b->cap_B = B;
    b->T = b->cap_T = T;
    b->tokens = xmalloc(n * sizeof *b->tokens);
    b->targets = xmalloc(n * sizeof *b->targets);
    b->example_task = xmalloc((size_t)B * sizeof *b->example_task);
    b->prompt_len = xmalloc((size_t)B * sizeof *b->prompt_len);
    for (size_t i = 0; i < n; i++) {
        b->tokens[i] = (int32_t)rng_below(&g, 256);
        b->targets[i] = (int32_t)(i % (size_t)T) >= T / 2 ? (int32_t)rng_below(&g, 256) : -1;
    }
    for (int32_t i = 0; i < B; i++) {
        b->prompt_len[i] = T / 2;
        b->example_task[i] = i % n_tasks;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int64_t n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Seconds per example of iters evaluation batches: batch_begin (mr NULL: the bare model) and
 * the forward. */
static int time_eval(struct bench *bc, struct method_run *mr, const struct options *o,
                     double *per_example) {
    const struct model_hooks *hooks = mr ? method_run_hooks(mr, 0) : NULL;
    bc->mr = mr;
    double t0 = now_seconds();
    for (int64_t it = 0; it < o->iters; it++) {
        float loss;
        if ((mr && method_run_batch_begin(mr, &bc->b, 0, 0)) ||
            model_forward(&bc->m, bc->acts, bc->b.tokens, bc->b.targets, bc->b.B, bc->b.T, hooks,
                          &loss))
            return -1;
    }
    *per_example = (now_seconds() - t0) / (double)(o->iters * o->B);
    return 0;
}

/* A conpet instance on bc->m: every schema key at its default, then the benchmark's. */
static int make_method(struct bench *bc, struct method_run **out, const struct plugin_method *pm,
                       const char *mode, const struct options *o, struct task_table *tasks) {
    char rank[24], top_k[24];
    snprintf(rank, sizeof rank, "%lld", (long long)o->rank);
    snprintf(top_k, sizeof top_k, "%lld", (long long)o->top_k);
    const peft_method_desc *d = pm->desc;
    peft_kv *kv = xcalloc((size_t)d->n_params + 1, sizeof *kv);
    uint32_t n = 0;
    for (uint32_t i = 0; i < d->n_params; i++) {
        const char *name = d->params[i].name, *v = d->params[i].default_value;
        if (strcmp(name, "mode") == 0) v = mode;
        else if (strcmp(name, "r") == 0 || strcmp(name, "selector_r") == 0) v = rank;
        else if (strcmp(name, "top_k") == 0) v = top_k;
        else if (strcmp(name, "target_modules") == 0) v = o->target;
        kv[n++] = (peft_kv){name, v ? v : ""};
    }
    struct method_env env = {.tasks = tasks, .seed = (uint64_t)o->seed, .stage = "bench",
                             .where = "bench", .run_ctx = bc, .run_pass = bench_run_pass};
    int rc = method_run_create(out, pm, &bc->m, &env, kv, n);
    free(kv);
    if (rc) return -1;
    bc->mr = *out;
    if (method_run_begin(bc->mr)) return -1;
    for (int32_t t = 0; t < tasks->n; t++)
        if (method_run_task_begin(bc->mr, t)) return -1;
    /* Experts and selector away from their zero start (the cost does not depend on values). */
    struct rng g;
    rng_seed(&g, (uint64_t)o->seed);
    for (int32_t i = 0; i < method_run_tensor_count(bc->mr); i++) {
        struct mtensor *t = method_run_tensor(bc->mr, i);
        if (t->desc.flags & PEFT_TENSOR_TRAINABLE)
            for (uint64_t j = 0; j < t->numel; j++) t->data[j] += rng_uniform(&g, -0.1f, 0.1f);
    }
    return 0;
}

/* One task count: its model, batch and the two instances. */
struct setup {
    struct bench bc;
    struct task_table tasks;
    struct method_run *one, *dyn;
    double *t[3]; /* (repeats) bare, one LoRA, dynamic: seconds per example */
};

static int setup_open(struct setup *su, const struct plugin_method *pm,
                      const struct model_config *mc, const struct options *o, int64_t count) {
    memset(su, 0, sizeof *su);
    for (int64_t t = 0; t < count; t++) {
        char name[32];
        snprintf(name, sizeof name, "task%lld", (long long)t);
        task_table_id(&su->tasks, name);
    }
    for (int k = 0; k < 3; k++) su->t[k] = xcalloc((size_t)o->repeats, sizeof(double));
    if (model_init(&su->bc.m, mc)) return -1;
    model_init_random(&su->bc.m, (uint64_t)o->seed, 0.02f);
    su->bc.acts = model_acts_new();
    su->bc.aux = model_acts_new();
    random_batch(&su->bc.b, (int32_t)o->B, (int32_t)o->T, su->tasks.n, (uint64_t)o->seed);
    return make_method(&su->bc, &su->one, pm, "static", o, &su->tasks) ||
                   make_method(&su->bc, &su->dyn, pm, "dynamic", o, &su->tasks)
               ? -1
               : 0;
}

static void setup_close(struct setup *su) {
    if (su->one) method_run_free(su->one);
    if (su->dyn) method_run_free(su->dyn);
    if (su->bc.acts) model_acts_free(su->bc.acts);
    if (su->bc.aux) model_acts_free(su->bc.aux);
    batch_free(&su->bc.b);
    model_free(&su->bc.m);
    task_table_free(&su->tasks);
    for (int k = 0; k < 3; k++) free(su->t[k]);
}

int main(int argc, char **argv) {
    struct options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "bench_conpet: %s\n", err_msg());
        return 2;
    }
    struct plugin_registry reg;
    registry_init(&reg, o.plugin_path);
    const struct plugin_method *pm = registry_find(&reg, "conpet");
    if (!pm) {
        fprintf(stderr, "bench_conpet: %s\n  the conpet plugin is found through PEFT_PLUGIN_PATH "
                "or --plugin-path (in a build tree: `meson devenv -C BUILD "
                "./bench/bench_conpet`)\n", err_msg());
        registry_free(&reg);
        return 2;
    }
    int32_t H = (int32_t)(o.C / 32);
    struct model_config mc = {.vocab = TOK_VOCAB, .d_model = (int32_t)o.C, .n_layers = (int32_t)o.L,
                              .n_heads = H, .n_kv_heads = H >= 2 ? H / 2 : 1, .head_dim = 32,
                              .d_ff = (int32_t)((o.C + 1) / 3 * 8), .max_seq = (int32_t)o.T,
                              .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tied = 1};
    struct setup *su = xcalloc((size_t)o.n_counts, sizeof *su);
    int status = 0;
    for (int32_t c = 0; c < o.n_counts && status == 0; c++)
        status = setup_open(&su[c], pm, &mc, &o, o.counts[c]);
    /* Every configuration once per repeat, in turn, so that a slower moment of a shared
     * machine falls on all of them alike; repeat -1 warms up. */
    for (int64_t r = -1; r < o.repeats && status == 0; r++)
        for (int32_t c = 0; c < o.n_counts && status == 0; c++) {
            struct method_run *mrs[3] = {NULL, su[c].one, su[c].dyn};
            for (int k = 0; k < 3 && status == 0; k++) {
                double t = 0;
                status = time_eval(&su[c].bc, mrs[k], &o, &t);
                if (r >= 0) su[c].t[k][r] = t;
            }
        }
    if (status == 0) {
        printf("dynamic ConPET, evaluation: model %lldx%lld, batch %lld x %lld tokens, rank %lld, "
               "top_k %lld, target_modules %s; median of %lld repeats of %lld batches\n\n",
               (long long)o.C, (long long)o.L, (long long)o.B, (long long)o.T,
               (long long)o.rank, (long long)o.top_k, o.target, (long long)o.repeats,
               (long long)o.iters);
        printf("| tasks | dynamic us/example | selector passes per batch | bare model us/example | "
               "one LoRA us/example | dynamic / bare | dynamic / one LoRA |\n"
               "|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int32_t c = 0; c < o.n_counts; c++) {
            double passes = (double)su[c].bc.aux_passes / (double)((o.repeats + 1) * o.iters);
            double bare = median(su[c].t[0], o.repeats), one = median(su[c].t[1], o.repeats);
            double dyn = median(su[c].t[2], o.repeats);
            printf("| %lld | %.1f | %.0f | %.1f | %.1f | %.2f | %.2f |\n", (long long)o.counts[c],
                   1e6 * dyn, passes, 1e6 * bare, 1e6 * one, dyn / bare, dyn / one);
        }
    } else {
        fprintf(stderr, "bench_conpet: %s\n", err_msg());
    }
    for (int32_t c = 0; c < o.n_counts; c++) setup_close(&su[c]);
    free(su);
    registry_free(&reg);
    return status ? 1 : 0;
}
