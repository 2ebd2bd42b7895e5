/*
 * bench_train.c: speed of one training step of each method on random llama models.
 *
 * For every --size (d_model x n_layers) and method (full, lora, lota) it builds a random model with
 * the byte tokenizer's vocabulary, loads the method's plugin, and times the trainer's step on
 * a random (B, T) batch: batch_begin, zero_grads, forward, backward, collect_grads, AdamW,
 * step_end. It reports tokens/s (the median step time over repeats), the FLOP rate that
 * implies, and the fraction it is of the machine's own sgemm rate on the step's GEMM shapes.
 * See bench/README.md for the columns.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_cost.h"
#include "bench_report.h"
#include "bench_shape.h"
#include "data.h"
#include "method.h"
#include "model.h"
#include "optim.h"
#include "plugin_loader.h"
#include "core.h"

#define MAX_SIZES 16
#define MAX_METHODS 3

struct options {
    const char *sizes[MAX_SIZES];
    int32_t n_sizes;
    const char *methods[MAX_METHODS];
    int32_t n_methods;
    int64_t B, T, steps, warmup, repeats, head_dim, rank, threads, seed;
    int64_t loss_chunk; /* -1: the model's default, 0: whole logits, else rows per chunk */
    int64_t vocab, kv_heads, d_ff; /* 0: the defaults of size_config */
    int size_from_preset;          /* the only size is a --preset's: a --size replaces it */
    double lr, gemm_seconds;
    const char *plugin_path, *json;
    int gemms;           /* print every sgemm shape's measured rate */
    int32_t precision;   /* MODEL_FP32 or MODEL_BF16 (--precision) */
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_train [options]\n"
            "  --size CxL        model d_model x n_layers (repeatable; default 128x4 256x4)\n"
            "  --method M        full, lora or lota (repeatable; default all three)\n"
            "  --batch B         examples per step (default 8)\n"
            "  --seq T           tokens per example (default 64)\n"
            "  --steps N         timed steps per repeat (default 20)\n"
            "  --warmup W        untimed steps first (default 3)\n"
            "  --repeats R       repeats; the median step time is reported (default 5)\n"
            "  --head-dim D      heads = d_model / D, kv heads = heads / 2 (default 64)\n"
            "  --kv-heads K      key/value heads instead of heads / 2 (must divide heads)\n"
            "  --d-ff F          MLP width instead of 8/3 d_model\n"
            "  --vocab V         vocabulary size (default 259, the byte tokenizer's)\n"
            "  --preset NAME     a model's shape: smollm2-135m, qwen2.5-0.5b or llama-3.2-1b\n"
            "                    (sets --size, --head-dim, --kv-heads, --d-ff and --vocab; a\n"
            "                    --size after it cuts the layers: --size 576x4)\n"
            "  --rank r          LoRA rank (default 8)\n"
            "  --precision P     fp32 or bf16, as peft run's [run] precision (default fp32)\n"
            "  --loss-chunk N    rows per chunk of the fused head and loss, as peft run's\n"
            "                    training (default: the model's); 0 keeps whole logits\n"
            "  --threads N       the host's worker threads (default: OPENBLAS_NUM_THREADS, else every core)\n"
            "  --lr X            AdamW learning rate (default 1e-4)\n"
            "  --gemm-seconds S  time each sgemm shape for at least S per round (default 0.02)\n"
            "  --seed S          model, batch and adapter seed (default 1)\n"
            "  --plugin-path P   extra plugin directories (':'-separated)\n"
            "  --json FILE       also write the figures as JSON\n"
            "  --gemms           list each sgemm shape of the step with its measured rate\n");
}

static int want_int(const char *flag, const char *v, int64_t lo, int64_t *out) {
    if (!v || parse_i64(v, out) || *out < lo)
        return err_set("%s: expected an integer >= %lld, got '%s'", flag, (long long)lo,
                       v ? v : "");
    return 0;
}

static int parse_args(int argc, char **argv, struct options *o) {
    *o = (struct options){.B = 8, .T = 64, .steps = 20, .warmup = 3, .repeats = 5,
                          .head_dim = 64, .rank = 8, .threads = 0, .seed = 1, .lr = 1e-4,
                          .gemm_seconds = 0.02, .loss_chunk = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1, rc = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--size") == 0) {
            if (!v || o->n_sizes == MAX_SIZES) rc = err_set("--size: missing, or more than %d",
                                                            MAX_SIZES);
            else {
                if (o->size_from_preset) o->n_sizes = 0; /* the preset's layers, cut */
                o->size_from_preset = 0;
                o->sizes[o->n_sizes++] = v;
            }
        } else if (strcmp(a, "--method") == 0) {
            if (!v || (strcmp(v, "full") != 0 && strcmp(v, "lora") != 0 &&
                       strcmp(v, "lota") != 0))
                rc = err_set("--method: expected full, lora or lota, got '%s'", v ? v : "");
            else if (o->n_methods < MAX_METHODS) o->methods[o->n_methods++] = v;
        } else if (strcmp(a, "--gemms") == 0) {
            o->gemms = 1;
            takes = 0;
        } else if (strcmp(a, "--batch") == 0) rc = want_int(a, v, 1, &o->B);
        else if (strcmp(a, "--seq") == 0) rc = want_int(a, v, 2, &o->T);
        else if (strcmp(a, "--steps") == 0) rc = want_int(a, v, 1, &o->steps);
        else if (strcmp(a, "--warmup") == 0) rc = want_int(a, v, 0, &o->warmup);
        else if (strcmp(a, "--repeats") == 0) rc = want_int(a, v, 1, &o->repeats);
        else if (strcmp(a, "--head-dim") == 0) rc = want_int(a, v, 2, &o->head_dim);
        else if (strcmp(a, "--kv-heads") == 0) rc = want_int(a, v, 1, &o->kv_heads);
        else if (strcmp(a, "--d-ff") == 0) rc = want_int(a, v, 1, &o->d_ff);
        else if (strcmp(a, "--vocab") == 0) rc = want_int(a, v, BYTE_VOCAB, &o->vocab);
        else if (strcmp(a, "--preset") == 0) {
            const struct preset *p = bench_preset(v);
            if (!p) {
                rc = err_set("--preset: expected smollm2-135m, qwen2.5-0.5b or llama-3.2-1b, got '%s'",
                             v ? v : "");
            } else {
                o->n_sizes = 0;
                o->sizes[o->n_sizes++] = p->size;
                o->head_dim = p->head_dim, o->kv_heads = p->kv_heads, o->d_ff = p->d_ff;
                o->vocab = p->vocab;
                o->size_from_preset = 1;
            }
        }
        else if (strcmp(a, "--rank") == 0) rc = want_int(a, v, 1, &o->rank);
        else if (strcmp(a, "--precision") == 0)
            rc = model_precision_choose(v ? v : "", "--precision", &o->precision);
        else if (strcmp(a, "--threads") == 0) rc = want_int(a, v, 0, &o->threads);
        else if (strcmp(a, "--loss-chunk") == 0) rc = want_int(a, v, 0, &o->loss_chunk);
        else if (strcmp(a, "--seed") == 0) rc = want_int(a, v, 0, &o->seed);
        else if (strcmp(a, "--lr") == 0) {
            if (!v || parse_f64(v, &o->lr) || o->lr <= 0)
                rc = err_set("--lr: expected a positive number, got '%s'", v ? v : "");
        } else if (strcmp(a, "--gemm-seconds") == 0) {
            if (!v || parse_f64(v, &o->gemm_seconds) || o->gemm_seconds <= 0)
                rc = err_set("--gemm-seconds: expected a positive number, got '%s'",
                             v ? v : "");
        } else if (strcmp(a, "--plugin-path") == 0) {
            if (!v) rc = err_set("--plugin-path: missing value");
            o->plugin_path = v;
        } else if (strcmp(a, "--json") == 0) {
            if (!v) rc = err_set("--json: missing value");
            o->json = v;
        } else {
            rc = err_set("unknown option '%s' (see --help)", a);
            takes = 0;
        }
        if (rc) return -1;
        i += takes;
    }
    if (o->n_sizes == 0) {
        o->sizes[o->n_sizes++] = "128x4";
        o->sizes[o->n_sizes++] = "256x4";
    }
    if (o->n_methods == 0) {
        o->methods[o->n_methods++] = "full";
        o->methods[o->n_methods++] = "lora";
        o->methods[o->n_methods++] = "lota";
    }
    return 0;
}

static int size_config(const char *size, const struct options *o, struct model_config *c) {
    return bench_shape_config(size, o->head_dim, o->kv_heads, o->d_ff, o->vocab, (int32_t)o->T, c);
}

/* Every schema key of the method at its default, with the benchmark's overrides. */
static peft_kv *method_cfg(const struct plugin_method *pm, const char *method, const char *rank,
                           uint32_t *n_out) {
    static const char *const all_linear =
        "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj";
    const peft_method_desc *d = pm->desc;
    peft_kv *kv = xcalloc((size_t)d->n_params + 1, sizeof *kv);
    uint32_t n = 0;
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        const char *v = p->default_value ? p->default_value : "";
        if (strcmp(p->name, "target_modules") == 0)
            v = strcmp(method, "full") == 0 ? "all-linear" : all_linear;
        else if (strcmp(method, "lora") == 0 && strcmp(p->name, "r") == 0)
            v = rank;
        else if (strcmp(method, "lora") == 0 && strcmp(p->name, "lora_dropout") == 0)
            v = "0";
        /* LoTA at its default sparsity (0.9) on a mask drawn at random: the step costs the
         * same for any mask of that size, and no calibration has to run first. */
        else if (strcmp(method, "lota") == 0 && strcmp(p->name, "random_mask") == 0)
            v = "true";
        kv[n++] = (peft_kv){p->name, v};
    }
    *n_out = n;
    return kv;
}

/* Seconds spent in optim_step (the optimizer's share of a step), summed over steps. */
static double optim_seconds;

/* The trainer's step (host/stage/train.c) on a fixed batch. */
static int train_step(struct model *m, struct model_acts *acts, struct method_run *mr,
                      const struct model_hooks *hooks, const struct batch *b,
                      const struct optim_params *op, int64_t t, float *loss) {
    if (method_run_batch_begin(mr, b, 1, (uint64_t)(t - 1))) return -1;
    method_run_zero_grads(mr);
    if (model_forward(m, acts, b->tokens, b->targets, b->B, b->T, hooks, loss) ||
        model_backward(m, acts, hooks))
        return -1;
    method_run_collect_grads(mr);
    double t0 = now_seconds();
    optim_step(mr, op, t);
    optim_seconds += now_seconds() - t0;
    return method_run_step_end(mr, (uint64_t)t);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int32_t n) {
    double *s = xmalloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return med;
}

struct bench_ctx {
    const struct options *o;
    struct plugin_registry reg;
    struct task_table tasks;
    struct batch batch;
    struct gemm_list gemm_cache;
};

/* Time one method on one model; fills r. */
static int bench_method(struct bench_ctx *bc, struct model *m, const char *size,
                        const char *method, struct bench_result *r) {
    const struct options *o = bc->o;
    const struct plugin_method *pm = registry_find(&bc->reg, method);
    if (!pm) return -1;
    char rank[24];
    snprintf(rank, sizeof rank, "%lld", (long long)o->rank);
    uint32_t n_cfg;
    peft_kv *cfg = method_cfg(pm, method, rank, &n_cfg);
    struct method_env env = {.tasks = &bc->tasks, .seed = (uint64_t)o->seed, .stage = "bench",
                             .where = "bench"};
    struct method_run *mr = NULL;
    int rc = method_run_create(&mr, pm, m, &env, cfg, n_cfg);
    free(cfg);
    if (rc) return -1;
    struct optim_params op = {.lr = o->lr, .weight_decay = 0.0, .beta1 = 0.9, .beta2 = 0.999,
                              .eps = 1e-8, .grad_clip = 1.0, .min_lr_ratio = 0.0,
                              .warmup_steps = 0, .total_steps = 0,
                              .schedule = SCHEDULE_CONSTANT};
    struct model_acts *acts = model_acts_new();
    model_acts_set_loss_chunk(acts, o->loss_chunk >= 0 ? (int32_t)o->loss_chunk
                                                       : model_loss_chunk_rows(&m->cfg));
    const struct model_hooks *hooks = method_run_hooks(mr, 1);
    memset(r, 0, sizeof *r);
    snprintf(r->size, sizeof r->size, "%s", size);
    snprintf(r->method, sizeof r->method, "%s", method);
    r->cfg = m->cfg;
    r->step_seconds = xcalloc((size_t)o->repeats, sizeof *r->step_seconds);

    rc = -1;
    if (method_run_begin(mr) || method_run_task_begin(mr, 0)) goto out;
    int64_t t = 0;
    float loss = 0.0f;
    for (int64_t w = 0; w < o->warmup; w++) {
        if (train_step(m, acts, mr, hooks, &bc->batch, &op, ++t, &loss)) goto out;
        if (t == 1) r->loss_first = loss;
    }
    double *optim_rep = xcalloc((size_t)o->repeats, sizeof *optim_rep);
    for (int64_t rep = 0; rep < o->repeats; rep++) {
        double t0 = now_seconds();
        optim_seconds = 0;
        for (int64_t s = 0; s < o->steps; s++) {
            if (train_step(m, acts, mr, hooks, &bc->batch, &op, ++t, &loss)) {
                free(optim_rep);
                goto out;
            }
            if (t == 1) r->loss_first = loss;
        }
        r->step_seconds[rep] = (now_seconds() - t0) / (double)o->steps;
        optim_rep[rep] = optim_seconds / (double)o->steps;
    }
    /* a line of its own (the table's columns stay as they were) */
    printf("optimizer %s %s: %.1f ms of the step (median of repeats)\n", size, method,
           1e3 * median(optim_rep, (int32_t)o->repeats));
    free(optim_rep);
    r->loss_last = loss;
    struct rusage ru; /* ru_maxrss: KiB, the high-water mark since the process started */
    if (getrusage(RUSAGE_SELF, &ru) == 0) r->peak_rss_mib = (double)ru.ru_maxrss / 1024.0;
    if (method_run_end(mr)) goto out;
    /* After the steps: a mask set during the stage (LoTA) decides what the optimizer keeps. */
    r->trainable = method_run_trainable_count(mr);
    r->optim_bytes = 2.0 * 4.0 * (double)r->trainable;

    double tokens = (double)o->B * (double)o->T;
    struct step_cost cost;
    step_cost_build(&cost, m, mr, (int32_t)o->B, (int32_t)o->T);
    gemm_list_measure(&cost.gemms, &bc->gemm_cache, o->gemm_seconds, 5);
    r->step_median = median(r->step_seconds, (int32_t)o->repeats);
    r->tokens_per_second = tokens / r->step_median;
    r->flops_per_token = cost.flops_per_token;
    r->model_flops = cost.model_flops;
    r->gflops = cost.flops_per_token * tokens / r->step_median / 1e9;
    r->gemm_seconds = gemm_list_seconds(&cost.gemms);
    r->sgemm_gflops = gemm_list_flops(&cost.gemms) / r->gemm_seconds / 1e9;
    r->peak_fraction = r->gflops / r->sgemm_gflops;
    /* The credited FLOPs are exactly the step's sgemm FLOPs plus the sampled products; a gap
     * means the accounting above and the shapes disagree. */
    double gemm_per_token = gemm_list_flops(&cost.gemms) / tokens;
    double want = cost.flops_per_token - 2.0 * cost.sampled_entries;
    if (gemm_per_token > want * (1 + 1e-9) || gemm_per_token < want * (1 - 1e-9))
        fprintf(stderr, "bench_train: %s %s: note: sgemm FLOPs %.6g/token, credited %.6g\n",
                size, method, gemm_per_token, cost.flops_per_token);
    if (o->gemms) gemm_list_print(&cost.gemms, stdout);
    step_cost_free(&cost);
    rc = 0;
out:
    model_acts_free(acts);
    method_run_free(mr);
    return rc;
}

/* A random batch: tokens and next-token targets uniform over the vocabulary (V). */
static void random_batch(struct batch *b, int32_t B, int32_t T, int32_t vocab, uint64_t seed) {
    struct rng g;
    rng_seed_label(&g, seed, "bench:batch");
    size_t n = (size_t)B * T;
    b->B = B;
    b->T = T;
    b->tokens = xmalloc(n * sizeof *b->tokens);
    b->targets = xmalloc(n * sizeof *b->targets);
    b->example_task = xcalloc((size_t)B, sizeof *b->example_task);
    b->prompt_len = xmalloc((size_t)B * sizeof *b->prompt_len);
    for (size_t i = 0; i < n; i++) {
        b->tokens[i] = (int32_t)rng_below(&g, (uint64_t)vocab);
        b->targets[i] = (int32_t)rng_below(&g, (uint64_t)vocab);
    }
    for (int32_t i = 0; i < B; i++) b->prompt_len[i] = 1;
    b->cap_B = B;
    b->cap_T = T;
}

static void plugin_hint(void) {
    fprintf(stderr,
            "bench_train: the plugins (peft-full.so, peft-lora.so, peft-lota.so) are found "
            "through PEFT_PLUGIN_PATH or --plugin-path.\n"
            "  In a build tree: `meson devenv -C BUILD ./bench/bench_train ...`, or\n"
            "  export PEFT_PLUGIN_PATH=BUILD/plugins/full:BUILD/plugins/lora:BUILD/plugins/lota "
            "(bench/run_bench.sh does this).\n");
}

int main(int argc, char **argv) {
    struct options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "bench_train: %s\n", err_msg());
        usage(stderr);
        return 2;
    }
    struct model_config cfgs[MAX_SIZES];
    for (int32_t si = 0; si < o.n_sizes; si++)
        if (size_config(o.sizes[si], &o, &cfgs[si])) {
            fprintf(stderr, "bench_train: %s\n", err_msg());
            return 2;
        }
    const char *env_path = getenv("PEFT_PLUGIN_PATH");
    int hinted = 0;
    if (!o.plugin_path && (!env_path || !*env_path)) {
        fprintf(stderr, "bench_train: PEFT_PLUGIN_PATH is not set; searching the install "
                        "directory only.\n");
        plugin_hint();
        hinted = 1;
    }
    if (o.threads > 0) parallel_set_threads((int32_t)o.threads);
    struct bench_info info = {
        .corename = openblas_get_corename(),
        .coretype_env = getenv("OPENBLAS_CORETYPE"),
        .threads = parallel_threads(),
        .B = (int32_t)o.B, .T = (int32_t)o.T, .warmup = (int32_t)o.warmup,
        .steps = (int32_t)o.steps, .repeats = (int32_t)o.repeats, .rank = (int32_t)o.rank,
        .lr = o.lr, .precision = model_precision_name(o.precision),
    };
    report_header(&info);

    struct bench_ctx bc = {.o = &o};
    registry_init(&bc.reg, o.plugin_path);
    task_table_id(&bc.tasks, "bench");
    random_batch(&bc.batch, (int32_t)o.B, (int32_t)o.T, cfgs[0].vocab, (uint64_t)o.seed);
    int32_t n_res = 0;
    struct bench_result *res = xcalloc((size_t)(o.n_sizes * o.n_methods), sizeof *res);
    int rc = 0;
    for (int32_t si = 0; si < o.n_sizes && rc == 0; si++) {
        struct model m;
        if (model_init(&m, &cfgs[si])) {
            fprintf(stderr, "bench_train: %s\n", err_msg());
            rc = 2;
            break;
        }
        report_model(o.sizes[si], &m, (int32_t)o.T);
        report_table_head();
        for (int32_t mi = 0; mi < o.n_methods; mi++) {
            /* The same starting weights for every method (full changes them in place; the
             * bf16 model keeps its matrices apart from params, so it is made again). */
            if (mi > 0) {
                model_free(&m);
                if (model_init(&m, &cfgs[si])) break; /* the same config passed above */
            }
            model_init_random(&m, (uint64_t)o.seed, 0.02f);
            if (o.precision == MODEL_BF16) model_set_bf16(&m);
            if (bench_method(&bc, &m, o.sizes[si], o.methods[mi], &res[n_res]) != 0) {
                fprintf(stderr, "bench_train: %s %s: %s\n", o.sizes[si], o.methods[mi],
                        err_msg());
                if (!hinted && strstr(err_msg(), "unknown method")) plugin_hint();
                free(res[n_res].step_seconds);
                rc = 1;
                break;
            }
            report_row(&res[n_res++]);
        }
        model_free(&m);
    }
    if (rc == 0 && o.json) {
        if (report_json(o.json, &info, res, n_res)) {
            fprintf(stderr, "bench_train: %s\n", err_msg());
            rc = 1;
        } else {
            printf("\nwrote %s\n", o.json);
        }
    }
    for (int32_t i = 0; i < n_res; i++) free(res[i].step_seconds);
    free(res);
    gemm_list_free(&bc.gemm_cache);
    batch_free(&bc.batch);
    task_table_free(&bc.tasks);
    registry_free(&bc.reg);
    return rc;
}
