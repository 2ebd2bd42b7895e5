/*
 * bench_generate: greedy generation with the key/value cache (model_decode, the path of
 * `peft generate`), at a benchmark shape with random weights. One run: a prompt of P random
 * tokens goes through in one call (prefill), then N tokens are generated one at a time, each
 * the argmax of the last logits. Reports the prefill time, the decode rate (tokens/s of the N
 * steps), their medians over repeats and the process's peak resident memory. bench/torch_ref.py
 * --generate runs the same loop in PyTorch (a KV cache, torch.no_grad).
 *
 * usage: bench_generate [--preset NAME | --size CxL] [--prompt P] [--tokens N] [--repeats R]
 *                       [--threads T] [--seed S] [--head-dim D] [--kv-heads K] [--d-ff F]
 *                       [--vocab V]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_shape.h"
#include "core.h"
#include "model.h"

struct options {
    const char *size;
    int64_t head_dim, kv_heads, d_ff, vocab, prompt, tokens, repeats, threads, seed;
};

static void usage(FILE *f) {
    fprintf(f, "usage: bench_generate [--preset NAME | --size CxL] [--prompt P] [--tokens N]\n"
               "                      [--repeats R] [--threads T] [--seed S] [--head-dim D]\n"
               "                      [--kv-heads K] [--d-ff F] [--vocab V]\n"
               "  --preset NAME  " BENCH_PRESET_NAMES " (a --size after it cuts the layers)\n"
               "  --prompt P     prompt tokens, run in one call (default 32)\n"
               "  --tokens N     tokens generated one at a time (default 64)\n"
               "  --repeats R    runs; medians reported (default 3)\n"
               "  --threads T    the host's worker threads (default: every core)\n");
}

static int want(const char *flag, const char *v, int64_t lo, int64_t *out) {
    if (!v || parse_i64(v, out) || *out < lo)
        return err_set("%s: expected an integer >= %lld, got '%s'", flag, (long long)lo, v ? v : "");
    return 0;
}

static int parse(int argc, char **argv, struct options *o) {
    *o = (struct options){.size = "576x30", .head_dim = 64, .prompt = 32, .tokens = 64,
                          .repeats = 3, .seed = 1};
    const struct preset *p = bench_preset("smollm2-135m");
    o->kv_heads = p->kv_heads, o->d_ff = p->d_ff, o->vocab = p->vocab;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--preset") == 0) {
            if (!(p = bench_preset(v)))
                return err_set("--preset: expected " BENCH_PRESET_NAMES ", got '%s'", v ? v : "");
            o->size = p->size, o->head_dim = p->head_dim, o->kv_heads = p->kv_heads;
            o->d_ff = p->d_ff, o->vocab = p->vocab;
        } else if (strcmp(a, "--size") == 0) {
            if (!v) return err_set("--size: missing value");
            o->size = v;
        } else if (strcmp(a, "--prompt") == 0) rc = want(a, v, 1, &o->prompt);
        else if (strcmp(a, "--tokens") == 0) rc = want(a, v, 1, &o->tokens);
        else if (strcmp(a, "--repeats") == 0) rc = want(a, v, 1, &o->repeats);
        else if (strcmp(a, "--threads") == 0) rc = want(a, v, 0, &o->threads);
        else if (strcmp(a, "--seed") == 0) rc = want(a, v, 0, &o->seed);
        else if (strcmp(a, "--head-dim") == 0) rc = want(a, v, 1, &o->head_dim);
        else if (strcmp(a, "--kv-heads") == 0) rc = want(a, v, 1, &o->kv_heads);
        else if (strcmp(a, "--d-ff") == 0) rc = want(a, v, 1, &o->d_ff);
        else if (strcmp(a, "--vocab") == 0) rc = want(a, v, BYTE_VOCAB, &o->vocab);
        else return err_set("unknown option '%s' (see --help)", a);
        if (rc) return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int64_t n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    struct options o;
    struct model_config c;
    if (parse(argc, argv, &o) ||
        bench_shape_config(o.size, o.head_dim, o.kv_heads, o.d_ff, o.vocab,
                           (int32_t)(o.prompt + o.tokens), &c)) {
        fprintf(stderr, "bench_generate: %s\n", err_msg());
        return 2;
    }
    if (o.threads > 0) parallel_set_threads((int32_t)o.threads);
    struct model m;
    if (model_init(&m, &c)) {
        fprintf(stderr, "bench_generate: %s\n", err_msg());
        return 2;
    }
    model_init_random(&m, (uint64_t)o.seed, 0.02f);
    struct rng g;
    rng_seed(&g, (uint64_t)o.seed + 1);
    int32_t P = (int32_t)o.prompt, N = (int32_t)o.tokens;
    int32_t *prompt = xmalloc((size_t)P * sizeof *prompt);
    for (int32_t i = 0; i < P; i++) prompt[i] = (int32_t)rng_below(&g, (uint64_t)c.vocab);
    float *logits = xalloc_floats((size_t)c.vocab);
    double *prefill = xcalloc((size_t)o.repeats, sizeof *prefill);
    double *rate = xcalloc((size_t)o.repeats, sizeof *rate);
    struct model_kv_cache *kv = model_kv_cache_new(&m, P + N);
    printf("bench_generate: %s (d_model %d, %d layers, %d heads, %d kv heads, d_ff %d, vocab %d), "
           "%d threads, prompt %d, %d new tokens, greedy, KV cache\n",
           o.size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab,
           (int)parallel_threads(), P, N);
    int rc = 0;
    uint64_t check = 0; /* the generated ids, so every repeat is seen to decode the same */
    for (int64_t r = 0; r < o.repeats && rc == 0; r++) {
        model_kv_cache_reset(kv);
        double t0 = now_seconds();
        rc = model_decode(&m, kv, prompt, P, NULL, logits);
        double t1 = now_seconds();
        uint64_t h = 1469598103934665603ULL;
        for (int32_t k = 0; k < N && rc == 0; k++) {
            int32_t next = 0;
            for (int32_t v = 1; v < c.vocab; v++) next = logits[v] > logits[next] ? v : next;
            h = (h ^ (uint64_t)next) * 1099511628211ULL;
            if (k + 1 < N) rc = model_decode(&m, kv, &next, 1, NULL, logits);
        }
        double t2 = now_seconds();
        if (r == 0) check = h;
        else if (h != check) rc = err_set("repeat %lld generated other tokens", (long long)r);
        prefill[r] = t1 - t0;
        rate[r] = (N - 1) / (t2 - t1); /* N - 1 decode calls after the prefill's token */
        printf("  repeat %lld: prefill %.1f ms, decode %.1f tokens/s\n", (long long)r + 1,
               1e3 * prefill[r], rate[r]);
    }
    if (rc) {
        fprintf(stderr, "bench_generate: %s\n", err_msg());
    } else {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("median: prefill %.1f ms, decode %.1f tokens/s, peak RSS %.0f MiB\n",
               1e3 * median(prefill, o.repeats), median(rate, o.repeats), ru.ru_maxrss / 1024.0);
    }
    model_kv_cache_free(kv);
    free(prompt), free(logits), free(prefill), free(rate);
    model_free(&m);
    return rc ? 1 : 0;
}
