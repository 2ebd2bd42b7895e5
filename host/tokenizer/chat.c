/*
 * chat.c: the chat templates of the model families, recognised by their distinctive text (as
 * llama.cpp does) and rendered here rather than by a template engine:
 *
 *   chatml        <|im_start|>ROLE\nCONTENT<|im_end|>\n per message (SmolLM2, Qwen2.5);
 *                 generation prompt <|im_start|>assistant\n
 *   chatml-think  ChatML as Qwen3's template writes it: an assistant turn after the last user
 *                 turn carries a <think>...</think> block (empty when the content has none)
 *   llama3        BOS, then <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>, the
 *                 content trimmed; generation prompt: the assistant's header
 *   llama2        Llama-2-chat: BOS [INST] USER [/INST] ASSISTANT EOS per exchange, the system
 *                 message inside the first [INST] between <<SYS>> and <</SYS>>
 *   none          ROLE: CONTENT EOS\n per message, for models without a template
 *
 * Each assistant turn's content and its end-of-turn token are returned as byte spans of the
 * rendered text: the loss counts those tokens only, so that the model learns to answer and
 * to stop.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"
#include "unicode.h"

int chat_family_of(const char *text, enum chat_family *out) {
    if (!text) return *out = CHAT_NONE, 0;
    if (strstr(text, "<|im_start|>")) return *out = strstr(text, "<think>") ? CHAT_CHATML_THINK : CHAT_CHATML, 0;
    if (strstr(text, "<|start_header_id|>")) return *out = CHAT_LLAMA3, 0;
    if (strstr(text, "[INST]") && strstr(text, "<<SYS>>")) return *out = CHAT_LLAMA2, 0;
    return -1;
}

static const char *const FAMILY_NAMES[] = {"none", "chatml", "chatml-think", "llama3", "llama2"};

int chat_family_by_name(const char *name, enum chat_family *out) {
    for (int k = 0; k < 5; k++)
        if (strcmp(name, FAMILY_NAMES[k]) == 0) return *out = (enum chat_family)k, 0;
    return -1;
}

const char *chat_family_name(enum chat_family f) { return FAMILY_NAMES[f]; }

static void span_add(struct chat_spans *s, size_t a, size_t b) {
    if (s->n + 2 > s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = a;
    s->v[s->n++] = b;
}

static void puts_(struct bstr *b, const char *s) { bstr_put(b, s, strlen(s)); }

/* s[a..b) without leading/trailing characters of the given kind */
static int js_space(const char *s, size_t i, size_t *len) {
    struct ustr u = {0};
    size_t n = 0;
    unsigned c = (unsigned char)s[i];
    n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    utf8_decode(s + i, n, 0, &u);
    int sp = u.n == 1 && (unicode_class(u.cp[0]) & UNI_WS);
    ustr_free(&u);
    *len = n;
    return sp;
}

/* Trim like JavaScript's String.trim (the reference's Jinja `trim` and `strip`). */
static void trim_js(const char *s, size_t *a, size_t *b) {
    size_t len;
    while (*a < *b && js_space(s, *a, &len)) *a += len;
    while (*b > *a) {
        size_t k = *b - 1;
        while (k > *a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        if (!js_space(s, k, &len)) break;
        *b = k;
    }
}

/* Strip only the given ASCII character (Python's str.strip('\n') and friends). */
static void strip_char(const char *s, size_t *a, size_t *b, char c, int left, int right) {
    while (left && *a < *b && s[*a] == c) (*a)++;
    while (right && *b > *a && s[*b - 1] == c) (*b)--;
}

static const char *piece_or(const struct tokenizer *t, int32_t id, const char *fallback) {
    const char *p = id >= 0 ? tokenizer_piece(t, id) : NULL;
    return p && !tokenizer_is_bytes(t) ? p : fallback;
}

static int render_chatml(const struct chat_message *m, int32_t n, int think, int gen,
                         struct bstr *o, struct chat_spans *spans) {
    int32_t last_user = n - 1;
    if (think) {
        /* Qwen3: the last user turn; assistant turns after it show their reasoning */
        last_user = -1;
        for (int32_t i = n - 1; i >= 0 && last_user < 0; i--)
            if (strcmp(m[i].role, "user") == 0) last_user = i;
    }
    for (int32_t i = 0; i < n; i++) {
        puts_(o, "<|im_start|>");
        puts_(o, m[i].role);
        puts_(o, "\n");
        const char *c = m[i].content;
        size_t a = 0, b = strlen(c);
        if (strcmp(m[i].role, "assistant") != 0 || !think) {
            size_t start = o->n;
            bstr_put(o, c, b);
            puts_(o, "<|im_end|>");
            if (strcmp(m[i].role, "assistant") == 0) span_add(spans, start, o->n);
            puts_(o, "\n");
            continue;
        }
        /* Qwen3's split of a content that holds its own </think> */
        size_t ra = 0, rb = 0;
        const char *end_think = strstr(c, "</think>");
        if (end_think) {
            const char *last = end_think, *p;
            while ((p = strstr(last + 1, "</think>"))) last = p;
            a = (size_t)(last - c) + 8;
            strip_char(c, &a, &b, '\n', 1, 0);
            ra = 0, rb = (size_t)(end_think - c);
            strip_char(c, &ra, &rb, '\n', 0, 1);
            for (size_t k = ra; k + 7 <= rb; k++)
                if (memcmp(c + k, "<think>", 7) == 0) ra = k + 7; /* after the last <think> */
            strip_char(c, &ra, &rb, '\n', 1, 0);
        }
        size_t start = o->n;
        if (i > last_user && (i == n - 1 || rb > ra)) {
            strip_char(c, &ra, &rb, '\n', 1, 1);
            strip_char(c, &a, &b, '\n', 1, 0);
            puts_(o, "<think>\n");
            bstr_put(o, c + ra, rb - ra);
            puts_(o, "\n</think>\n\n");
        }
        bstr_put(o, c + a, b - a);
        puts_(o, "<|im_end|>");
        span_add(spans, start, o->n);
        puts_(o, "\n");
    }
    if (gen) puts_(o, "<|im_start|>assistant\n");
    return 0;
}

static int render_llama3(const struct tokenizer *t, const struct chat_message *m, int32_t n,
                         int gen, struct bstr *o, struct chat_spans *spans) {
    puts_(o, piece_or(t, tokenizer_bos(t), "<|begin_of_text|>"));
    for (int32_t i = 0; i < n; i++) {
        puts_(o, "<|start_header_id|>");
        puts_(o, m[i].role);
        puts_(o, "<|end_header_id|>\n\n");
        size_t a = 0, b = strlen(m[i].content), start = o->n;
        trim_js(m[i].content, &a, &b);
        bstr_put(o, m[i].content + a, b - a);
        puts_(o, "<|eot_id|>");
        if (strcmp(m[i].role, "assistant") == 0) span_add(spans, start, o->n);
    }
    if (gen) puts_(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

static int render_llama2(const struct tokenizer *t, const struct chat_message *m, int32_t n,
                         struct bstr *o, struct chat_spans *spans) {
    const char *bos = piece_or(t, tokenizer_bos(t), "<s>"), *eos = piece_or(t, tokenizer_eos(t), "</s>");
    int32_t first = 0;
    const char *system = NULL;
    if (n > 0 && strcmp(m[0].role, "system") == 0) system = m[0].content, first = 1;
    for (int32_t i = first; i < n; i++) {
        int want_user = (i - first) % 2 == 0;
        if ((strcmp(m[i].role, "user") == 0) != want_user || (!want_user && strcmp(m[i].role, "assistant") != 0))
            return err_set("message %d: Llama-2's template needs roles user/assistant/user/... after an "
                           "optional system message, got '%s'", i + 1, m[i].role);
        struct bstr content = {0};
        if (i == first && system) {
            puts_(&content, "<<SYS>>\n");
            puts_(&content, system);
            puts_(&content, "\n<</SYS>>\n\n");
        }
        puts_(&content, m[i].content);
        size_t a = 0, b = content.n;
        trim_js(content.p, &a, &b);
        if (want_user) {
            puts_(o, bos);
            puts_(o, "[INST] ");
            bstr_put(o, content.p + a, b - a);
            puts_(o, " [/INST]");
        } else {
            puts_(o, " ");
            size_t start = o->n;
            bstr_put(o, content.p + a, b - a);
            puts_(o, " ");
            puts_(o, eos);
            span_add(spans, start, o->n);
        }
        bstr_free(&content);
    }
    return 0;
}

static int render_none(const struct tokenizer *t, const struct chat_message *m, int32_t n, int gen,
                       struct bstr *o, struct chat_spans *spans) {
    const char *eos = tokenizer_is_bytes(t) ? "" : piece_or(t, tokenizer_eos(t), "");
    for (int32_t i = 0; i < n; i++) {
        puts_(o, m[i].role);
        puts_(o, ": ");
        size_t start = o->n;
        puts_(o, m[i].content);
        if (strcmp(m[i].role, "assistant") == 0) {
            puts_(o, eos);
            puts_(o, "\n");
            span_add(spans, start, o->n);
        } else {
            puts_(o, "\n");
        }
    }
    if (gen) puts_(o, "assistant: ");
    return 0;
}

int chat_render(enum chat_family f, const struct tokenizer *t, const struct chat_message *m,
                int32_t n, int add_generation_prompt, char **out, size_t *len,
                struct chat_spans *spans) {
    struct bstr o = {0};
    bstr_put(&o, "", 0);
    int rc = 0;
    switch (f) {
    case CHAT_CHATML: rc = render_chatml(m, n, 0, add_generation_prompt, &o, spans); break;
    case CHAT_CHATML_THINK: rc = render_chatml(m, n, 1, add_generation_prompt, &o, spans); break;
    case CHAT_LLAMA3: rc = render_llama3(t, m, n, add_generation_prompt, &o, spans); break;
    case CHAT_LLAMA2: rc = render_llama2(t, m, n, &o, spans); break;
    case CHAT_NONE: rc = render_none(t, m, n, add_generation_prompt, &o, spans); break;
    }
    if (rc) {
        bstr_free(&o);
        return -1;
    }
    *out = o.p;
    *len = o.n;
    return 0;
}
