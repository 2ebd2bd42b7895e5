/*
 * chat_data.c: conversations from JSONL become ids whose loss counts the assistant's turns
 * only, with the real tokenizers: for each family and its tokenizer, every run of scored ids
 * decodes to an assistant answer with its end-of-turn token (nothing else), every answer
 * appears in exactly one run, and a batch's targets are exactly the scored ids. Also the
 * other formats (prompt/completion, text, Alpaca) with a real tokenizer: EOS closes the
 * answer and the prompt is never scored.
 *
 *   chat_data CACHE_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "data.h"

static const char *CONVERSATIONS =
    "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
    "{\"role\":\"user\",\"content\":\"What is 2+2?\"},{\"role\":\"assistant\",\"content\":\"Four.\"},"
    "{\"role\":\"user\",\"content\":\"And 3*3?\"},{\"role\":\"assistant\",\"content\":\"Nine, of course.\"}]}\n"
    "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi in French\"},"
    "{\"role\":\"assistant\",\"content\":\"Bonjour. \\u00c7a va bien.\"}]}\n"
    "{\"task\":\"other\",\"messages\":[{\"role\":\"user\",\"content\":\"Name a colour.\"},"
    "{\"role\":\"assistant\",\"content\":\"Blue\"},{\"role\":\"user\",\"content\":\"Another?\"},"
    "{\"role\":\"assistant\",\"content\":\"Green \\ud83d\\udfe2\"}]}\n";

/* s without leading ASCII spaces */
static const char *lskip(const char *s) {
    while (*s == ' ') s++;
    return s;
}

static int run_family(const char *cache, const char *tok_name, enum chat_family fam, const char *end,
                      const char *dir) {
    char json[1024], cfg[1024];
    snprintf(json, sizeof json, "%s/tokenizers/%s/tokenizer.json", cache, tok_name);
    snprintf(cfg, sizeof cfg, "%s/tokenizers/%s/tokenizer_config.json", cache, tok_name);
    struct tokenizer *t;
    if (tokenizer_load(json, cfg, &t)) {
        printf("%s\n", err_msg());
        return 1;
    }
    char *path = xasprintf("%s/chat.jsonl", dir);
    file_write_atomic(path, CONVERSATIONS, strlen(CONVERSATIONS));
    struct data_encoding enc = {t, fam};
    struct dataset d = {.enc = &enc};
    struct task_table tt = {0};
    int bad = 0;
    if (data_load_jsonl(path, &d, &tt)) {
        printf("%s\n", err_msg());
        bad++;
    }
    size_t answers = 0, runs_total = 0, scored_total = 0, ids_total = 0;
    for (size_t i = 0; i < d.n && !bad; i++) {
        const struct example *e = &d.ex[i];
        /* the answers, in order, each followed by the end-of-turn token */
        size_t next_answer = 0;
        for (int32_t k = 0; k < e->n_messages; k++) {
            if (strcmp(e->messages[k].role, "assistant") != 0) continue;
            answers++;
            /* the run of scored ids for this answer */
            while (next_answer < (size_t)e->n_ids && !e->scored[next_answer]) next_answer++;
            size_t a = next_answer;
            while (next_answer < (size_t)e->n_ids && e->scored[next_answer]) next_answer++;
            char *text = NULL;
            size_t len = 0;
            if (a == next_answer || tokenizer_decode(t, e->ids + a, next_answer - a, 0, &text, &len)) {
                printf("%s: example %zu: no scored run for answer '%s'\n", tok_name, i, e->messages[k].content);
                bad++;
                continue;
            }
            runs_total++;
            char *want = xasprintf("%s%s%s%s", fam == CHAT_CHATML_THINK && k == e->n_messages - 1 ? "<think>\n\n</think>\n\n" : "",
                                   e->messages[k].content, fam == CHAT_LLAMA2 ? " " : "", end);
            if (strcmp(lskip(text), want) != 0) {
                printf("%s: example %zu: scored run decodes to '%s', want '%s'\n", tok_name, i, text, want);
                bad++;
            }
            free(want);
            free(text);
        }
        /* no scored id is left after the last answer */
        while (next_answer < (size_t)e->n_ids && !e->scored[next_answer]) next_answer++;
        if (next_answer != (size_t)e->n_ids) {
            printf("%s: example %zu: scored ids outside the answers\n", tok_name, i);
            bad++;
        }
        for (int32_t k = 0; k < e->n_ids; k++) scored_total += e->scored[k];
        ids_total += (size_t)e->n_ids;
    }
    /* a batch's targets are the scored ids */
    size_t *idx = xmalloc(d.n * sizeof *idx);
    for (size_t i = 0; i < d.n; i++) idx[i] = i;
    struct batch b = {0};
    batch_make(&b, &d, idx, (int32_t)d.n, 0);
    size_t targets = 0;
    for (int32_t k = 0; k < b.B * b.T; k++) targets += b.targets[k] >= 0;
    if (targets != scored_total) {
        printf("%s: %zu targets in the batch, %zu scored ids\n", tok_name, targets, scored_total);
        bad++;
    }
    printf("%-7s %-13s %zu conversations, %zu answers, %zu scored runs; %zu of %zu ids scored = %zu "
           "batch targets\n", tok_name, chat_family_name(fam), d.n, answers, runs_total, scored_total,
           ids_total, targets);
    batch_free(&b);
    free(idx);
    dataset_free(&d);
    task_table_free(&tt);
    tokenizer_free(t);
    free(path);
    return bad;
}

/* prompt/completion, text and Alpaca lines with a real tokenizer: the scored ids decode to the
 * completion and EOS. */
static int run_formats(const char *cache, const char *dir) {
    char json[1024], cfg[1024];
    snprintf(json, sizeof json, "%s/tokenizers/llama3/tokenizer.json", cache);
    snprintf(cfg, sizeof cfg, "%s/tokenizers/llama3/tokenizer_config.json", cache);
    struct tokenizer *t;
    if (tokenizer_load(json, cfg, &t)) return printf("%s\n", err_msg()), 1;
    struct data_encoding enc = {t, CHAT_LLAMA3};
    static const struct {
        const char *name, *line, *answer;
    } files[] = {
        {"pc.jsonl", "{\"prompt\":\"Q: capital of France?\\nA:\",\"completion\":\" Paris\"}\n", " Paris<|end_of_text|>"},
        {"text.jsonl", "{\"text\":\"Once upon a time.\"}\n", "Once upon a time.<|end_of_text|>"},
        {"alpaca.jsonl", "{\"instruction\":\"Add the numbers.\",\"input\":\"2 and 3\",\"output\":\"5\"}\n", "5<|end_of_text|>"},
    };
    int bad = 0;
    for (size_t f = 0; f < 3; f++) {
        char *path = xasprintf("%s/%s", dir, files[f].name);
        file_write_atomic(path, files[f].line, strlen(files[f].line));
        struct dataset d = {.enc = &enc};
        struct task_table tt = {0};
        if (data_load_jsonl(path, &d, &tt) || d.n != 1) {
            printf("%s: %s\n", files[f].name, err_msg());
            bad++;
        } else {
            const struct example *e = &d.ex[0];
            char *text = NULL;
            size_t len;
            tokenizer_decode(t, e->ids + e->n_prompt, (size_t)(e->n_ids - e->n_prompt), 0, &text, &len);
            int ok = strcmp(text, files[f].answer) == 0 && strcmp(tt.names[e->task], files[f].name) != 0;
            for (int32_t k = e->n_prompt; k < e->n_ids; k++) ok &= e->scored[k];
            /* the task is the file's base name */
            char base[32];
            snprintf(base, sizeof base, "%.*s", (int)(strchr(files[f].name, '.') - files[f].name), files[f].name);
            ok &= strcmp(tt.names[e->task], base) == 0;
            if (!ok) {
                printf("%s: answer '%s' (want '%s'), task '%s'\n", files[f].name, text, files[f].answer, tt.names[e->task]);
                bad++;
            }
            printf("%-12s task '%s': %d ids, %d prompt, answer '%s'\n", files[f].name, tt.names[e->task],
                   (int)e->n_ids, (int)e->n_prompt, text);
            free(text);
        }
        dataset_free(&d);
        task_table_free(&tt);
        free(path);
    }
    tokenizer_free(t);
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char dir[] = "/tmp/peft_chat_data.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    int bad = 0;
    bad += run_family(argv[1], "qwen3", CHAT_CHATML, "<|im_end|>", dir);
    bad += run_family(argv[1], "qwen3", CHAT_CHATML_THINK, "<|im_end|>", dir);
    bad += run_family(argv[1], "llama3", CHAT_LLAMA3, "<|eot_id|>", dir);
    bad += run_family(argv[1], "llama2", CHAT_LLAMA2, "</s>", dir);
    bad += run_formats(argv[1], dir);
    CHECK(bad == 0, "%d problems", bad);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
    return check_report("chat_data");
}
