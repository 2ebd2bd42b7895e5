/* cmd_generate.c: peft generate: text from a model folder (or a run stage's merged model),
 * optionally with an unmerged adapter, greedy or sampled, with a key/value cache, streamed as
 * it is decoded. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_model.h"
#include "core/core.h"
#include "io/io.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

struct gen_options {
    const char *dir, *prompt, *system, *chat_template, *adapter, *task, *plugin_path, *precision;
    int chat, quiet;
    int64_t max_new, top_k, seed;
    double temperature, top_p;
};

static const float *sort_probs; /* for by_prob: qsort has no context argument */
static int by_prob(const void *a, const void *b) {
    float pa = sort_probs[*(const int32_t *)a], pb = sort_probs[*(const int32_t *)b];
    return pa < pb ? 1 : pa > pb ? -1 : 0;
}

/* The next token: argmax, or a draw from softmax(logits / T) cut to the top k and to the
 * smallest set of most likely tokens whose probability reaches top_p. */
static int32_t choose(float *logits, int32_t V, const struct gen_options *o, struct rng *g,
                      int32_t *order) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (o->temperature <= 0) return best;
    double mx = logits[best], sum = 0;
    for (int32_t i = 0; i < V; i++) sum += logits[i] = (float)exp((logits[i] - mx) / o->temperature);
    for (int32_t i = 0; i < V; i++) logits[i] = (float)(logits[i] / sum), order[i] = i;
    int32_t n = V;
    if (o->top_k > 0 || o->top_p < 1.0) {
        sort_probs = logits;
        qsort(order, (size_t)V, sizeof *order, by_prob);
        if (o->top_k > 0 && o->top_k < n) n = (int32_t)o->top_k;
        double mass = 0;
        for (int32_t i = 0; i < n; i++)
            if ((mass += logits[order[i]]) >= o->top_p) {
                n = i + 1;
                break;
            }
    }
    double mass = 0;
    for (int32_t i = 0; i < n; i++) mass += logits[order[i]];
    double r = rng_double(g) * mass, acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += logits[order[i]];
        if (r < acc) return order[i];
    }
    return order[n - 1];
}

static int read_all_stdin(char **out) {
    size_t cap = 4096, n = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    *out = buf;
    return ferror(stdin) ? err_set("generate: standard input: read failed") : 0;
}

static int generate(const struct gen_options *o) {
    struct cli_model cm;
    struct cli_model_options mo = {o->dir, o->adapter, o->task, o->plugin_path, "generate", 0, o->precision};
    if (cli_model_open(&cm, &mo)) {
        cli_model_close(&cm);
        return -1;
    }
    const struct tokenizer *t = cm.t;
    const char *model_dir = cm.dir;
    int rc = 0;
    char *prompt = NULL, *text = NULL;
    size_t text_len = 0;
    struct tok_encoding in = {0};
    struct stop_ids eos = {.n = 0};
    if (o->prompt) prompt = xstrdup(o->prompt);
    else rc = read_all_stdin(&prompt);
    if (rc == 0 && o->chat) {
        enum chat_family f = CHAT_NONE;
        if (o->chat_template) {
            if (chat_family_by_name(o->chat_template, &f))
                rc = err_set("generate: --chat-template: '%s' is not chatml, chatml-think, llama3, "
                             "llama2 or none", o->chat_template);
        } else if (!tokenizer_chat_template(t)) {
            rc = err_set("%s/tokenizer_config.json: no chat_template: give --chat-template "
                         "chatml|chatml-think|llama3|llama2|none", model_dir);
        } else if (chat_family_of(tokenizer_chat_template(t), &f)) {
            rc = err_set("%s/tokenizer_config.json: chat_template not recognised (not ChatML, Llama-3 "
                         "or Llama-2's): give --chat-template chatml|chatml-think|llama3|llama2|none",
                         model_dir);
        }
        struct chat_message msg[2];
        int32_t n = 0;
        if (o->system) msg[n++] = (struct chat_message){"system", (char *)o->system};
        msg[n++] = (struct chat_message){"user", prompt};
        struct chat_spans spans = {0};
        if (rc == 0 && chat_render(f, t, msg, n, 1, &text, &text_len, &spans) == 0)
            tokenizer_encode(t, text, text_len, 0, &in);
        else rc = -1;
        free(spans.v);
    } else if (rc == 0) {
        tokenizer_encode(t, prompt, strlen(prompt), TOK_ADD_PREFIX, &in);
    }
    stop_ids_collect(model_dir, t, o->chat, &eos);
    if (rc == 0 && in.n == 0) rc = err_set("generate: the prompt gives no tokens");
    if (rc == 0 && (int64_t)in.n >= cm.m.cfg.max_seq)
        rc = err_set("generate: the prompt is %zu tokens, the model's context %d", in.n, (int)cm.m.cfg.max_seq);
    if (rc) {
        free(prompt), free(text), tok_encoding_free(&in);
        cli_model_close(&cm);
        return -1;
    }
    int32_t V = cm.m.cfg.vocab, cap = cm.m.cfg.max_seq;
    struct decoder *dec = cm.dec;
    decoder_use(dec, cm.mr, cm.task);
    float *logits = xmalloc((size_t)V * sizeof *logits);
    int32_t *order = xmalloc((size_t)V * sizeof *order);
    struct rng g;
    rng_seed_label(&g, (uint64_t)o->seed, "generate");
    struct tok_encoding out = {0};
    size_t printed = 0;
    double t0 = now_seconds();
    rc = decoder_feed(dec, in.ids, (int32_t)in.n, logits);
    const char *stop = "max-new-tokens";
    while (rc == 0 && (int64_t)out.n < o->max_new) {
        int32_t next = choose(logits, V, o, &g, order);
        if (stop_ids_has(&eos, next)) {
            stop = "end of sequence";
            break;
        }
        tok_encoding_push(&out, next, -1);
        /* stream: print what the ids decode to beyond what is printed, holding back a
         * character the next token may complete */
        char *so_far = NULL;
        size_t len = 0;
        if (tokenizer_decode(t, out.ids, out.n, 1, &so_far, &len) == 0) {
            int partial = len >= 3 && memcmp(so_far + len - 3, "\xEF\xBF\xBD", 3) == 0;
            if (!partial && len > printed) {
                fwrite(so_far + printed, 1, len - printed, stdout);
                fflush(stdout);
                printed = len;
            }
        }
        free(so_far);
        if ((int64_t)out.n == o->max_new) break;
        if (decoder_len(dec) >= cap) {
            stop = "the context is full";
            break;
        }
        rc = decoder_feed(dec, &next, 1, logits);
    }
    if (rc == 0) {
        char *all = NULL;
        size_t len = 0;
        if (tokenizer_decode(t, out.ids, out.n, 1, &all, &len) == 0 && len > printed)
            fwrite(all + printed, 1, len - printed, stdout);
        free(all);
        printf("\n");
        double secs = now_seconds() - t0;
        if (!o->quiet)
            fprintf(stderr, "peft: %zu prompt tokens, %zu generated (%s)%s, %.1f tokens/s\n", in.n,
                    out.n, stop, cli_model_adapter_text(&cm), secs > 0 ? (double)out.n / secs : 0.0);
    }
    free(logits), free(order), free(prompt), free(text);
    tok_encoding_free(&in), tok_encoding_free(&out);
    cli_model_close(&cm);
    return rc;
}

static int generate_main(int argc, char **argv) {
    struct gen_options o = {.max_new = 64, .seed = 1, .temperature = 0, .top_p = 1.0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        if (strcmp(a, "--chat") == 0) o.chat = 1;
        else if (strcmp(a, "--quiet") == 0) o.quiet = 1;
        else if (strcmp(a, "--prompt") == 0 && v) o.prompt = v, i++;
        else if (strcmp(a, "--system") == 0 && v) o.system = v, i++;
        else if (strcmp(a, "--adapter") == 0 && v) o.adapter = v, i++;
        else if (strcmp(a, "--task") == 0 && v) o.task = v, i++;
        else if (strcmp(a, "--plugin-path") == 0 && v) o.plugin_path = v, i++;
        else if (strcmp(a, "--precision") == 0 && v) o.precision = v, i++;
        else if (strcmp(a, "--chat-template") == 0 && v) o.chat_template = v, i++, o.chat = 1;
        else if (strcmp(a, "--max-new-tokens") == 0 && v) {
            if (parse_i64(v, &o.max_new) || o.max_new < 1 || o.max_new > 1 << 20)
                return err_set("generate: --max-new-tokens: expected 1 to 1048576, got '%s'", v), cli_fail();
            i++;
        } else if (strcmp(a, "--top-k") == 0 && v) {
            if (parse_i64(v, &o.top_k) || o.top_k < 0)
                return err_set("generate: --top-k: expected a count (0 = all), got '%s'", v), cli_fail();
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            if (parse_i64(v, &o.seed) || o.seed < 0)
                return err_set("generate: --seed: expected a non-negative integer, got '%s'", v), cli_fail();
            i++;
        } else if (strcmp(a, "--temperature") == 0 && v) {
            if (parse_f64(v, &d) || d < 0 || d > 100)
                return err_set("generate: --temperature: expected 0 (greedy) to 100, got '%s'", v), cli_fail();
            o.temperature = d, i++;
        } else if (strcmp(a, "--top-p") == 0 && v) {
            if (parse_f64(v, &d) || !(d > 0 && d <= 1))
                return err_set("generate: --top-p: expected a number in (0, 1], got '%s'", v), cli_fail();
            o.top_p = d, i++;
        } else if (a[0] == '-' && a[1] == '-') {
            return cli_unexpected(&cmd_generate, a);
        } else if (!o.dir) {
            o.dir = a;
        } else {
            return cli_unexpected(&cmd_generate, a);
        }
    }
    if (!o.dir) return err_set("generate: give a model folder (peft generate --help)"), cli_fail();
    return generate(&o) ? cli_fail() : 0;
}

const struct command cmd_generate = {
    "generate", "MODEL_DIR|STAGE_DIR [--adapter A] [--prompt TEXT] [--chat] [--max-new-tokens N] [sampling]",
    "Generate text from a model folder or a run stage, with or without an adapter.",
    "The prompt is --prompt or standard input. With --chat it becomes a user message in the\n"
    "model's chat template (recognised from tokenizer_config.json, or --chat-template) with the\n"
    "assistant's turn opened. Tokens are decoded and printed as they come; generation stops at\n"
    "every EOS id of the tokenizer, config.json and generation_config.json (and, with --chat,\n"
    "the template's end of turn), after --max-new-tokens, or when the context is full. Greedy\n"
    "unless --temperature is above 0.\n"
    "\n"
    "A stage folder is read through its merged model/ (save_model = true) when it has one, else\n"
    "as its adapter, unmerged, on the model folder the run read. --adapter runs any method's\n"
    "adapter unmerged on the model given: a stage folder, an adapter.safetensors, or an HF PEFT\n"
    "LoRA folder. Adapters of task-routed methods (poly, conpet) take --task.\n"
    "\n"
    "options:\n"
    "  --prompt TEXT          the prompt (default: standard input)\n"
    "  --adapter A            an adapter to apply unmerged (stage folder, adapter file, HF folder)\n"
    "  --task NAME            the task the adapter's rows are routed to (its task names or id)\n"
    "  --plugin-path DIRS     folders searched first for method plugins (':'-separated)\n"
    "  --precision P          fp32, bf16 (the weights and each product's operands in bfloat16)\n"
    "                         or auto (default: PEFT_PRECISION, else auto: fp32 in this build)\n"
    "  --chat                 apply the chat template\n"
    "  --system TEXT          a system message first (with --chat)\n"
    "  --chat-template NAME   chatml, chatml-think, llama3, llama2 or none (implies --chat)\n"
    "  --max-new-tokens N     at most N new tokens (default 64)\n"
    "  --temperature T        sample from softmax(logits / T) (default 0: greedy)\n"
    "  --top-k K              sample among the K most likely tokens only (0 = all)\n"
    "  --top-p P              sample among the most likely tokens whose probability reaches P\n"
    "  --seed S               seed of the sampling (default 1)\n"
    "  --quiet                no summary line on standard error\n"
    "  -h, --help             this help\n"
    "\n"
    "examples:\n"
    "  peft generate runs/chat/adapt --chat --prompt 'Name a colour.' --max-new-tokens 20\n"
    "  peft generate models/base --adapter runs/multi/poly --task reverse --prompt 'abc'\n",
    generate_main};
