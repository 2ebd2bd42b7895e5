/*
 * regex.c: the regular expressions of tokenizer.json's Split pre-tokenizers and Replace
 * patterns, with the semantics of the reference (JavaScript RegExp with the `u` flag, which
 * for these patterns equals Oniguruma's in HF tokenizers): leftmost match, alternatives tried
 * in order, greedy quantifiers with backtracking, lookahead.
 *
 * The subset: literals, `.`, classes `[...]` / `[^...]` with ranges, `\s \S \d \D \w \W`,
 * `\p{L} \p{N} \p{P} \p{M}` and their `\P` negations, `\r \n \t \f \v \xHH \uHHHH`, escaped
 * punctuation; groups `(...)`, `(?:...)`, `(?i:...)` (ASCII case folding only, as the reference
 * rewrites Llama-3's contraction group to `[sS]`-style classes), `(?!...)`, `(?=...)`;
 * quantifiers `? * + {n} {n,} {n,m}` (greedy). Anything else (anchors, lazy or possessive
 * quantifiers, back-references, other properties) is refused by name when the file loads.
 *
 * The pattern compiles to a small program run by a backtracking machine (Pike's and
 * Thompson's instruction set: CLASS, SPLIT, JMP, MATCH, plus LOOK for lookahead).
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tok_internal.h"
#include "unicode.h"

/* ---- character classes ------------------------------------------------------------------ */
struct cls {
    uint32_t *range; /* (2 * n_range) inclusive [lo, hi] pairs */
    int32_t n_range;
    uint8_t props;   /* matches when unicode_class(cp) has any of these */
    uint8_t nprops;  /* matches when unicode_class(cp) lacks any of these (\S, \P{L}) */
    uint8_t neg;
};

static int cls_match(const struct cls *c, uint32_t cp) {
    int in = 0;
    for (int32_t i = 0; i < c->n_range && !in; i++)
        in = cp >= c->range[2 * i] && cp <= c->range[2 * i + 1];
    if (!in && (c->props | c->nprops)) {
        uint8_t k = unicode_class(cp);
        in = (k & c->props) != 0 || (~k & c->nprops) != 0;
    }
    return in != c->neg;
}

static void cls_add(struct cls *c, uint32_t lo, uint32_t hi) {
    c->range = xrealloc(c->range, (size_t)(c->n_range + 1) * 2 * sizeof *c->range);
    c->range[2 * c->n_range] = lo;
    c->range[2 * c->n_range + 1] = hi;
    c->n_range++;
}

/* ---- syntax tree ---------------------------------------------------------------------------- */
enum node_kind { N_CLASS, N_CAT, N_ALT, N_REP, N_LOOK };
struct node {
    enum node_kind kind;
    int32_t cls;            /* N_CLASS */
    int32_t *kid, n_kid;    /* N_CAT, N_ALT; N_REP and N_LOOK have one */
    int32_t min, max;       /* N_REP: max -1 = unbounded */
    int neg;                /* N_LOOK */
};

enum op { I_CLASS, I_SPLIT, I_JMP, I_MATCH, I_LOOK };
struct inst {
    uint8_t op, neg;
    int32_t x, y; /* CLASS: x class; SPLIT: x then y; JMP: x; LOOK: body at pc+1, go on at x */
};

struct tok_regex {
    struct cls *cls;
    int32_t n_cls;
    struct node *node;
    int32_t n_node;
    struct inst *code;
    int32_t n_code, cap_code;
};

struct parser {
    struct tok_regex *re;
    const uint32_t *p; /* the pattern's code points */
    size_t n, i;
    int icase;
    const char *error;
};

static int32_t new_node(struct tok_regex *re, enum node_kind kind) {
    re->node = xrealloc(re->node, (size_t)(re->n_node + 1) * sizeof *re->node);
    memset(&re->node[re->n_node], 0, sizeof *re->node);
    re->node[re->n_node].kind = kind;
    return re->n_node++;
}

static void add_kid(struct tok_regex *re, int32_t parent, int32_t kid) {
    struct node *n = &re->node[parent];
    n->kid = xrealloc(n->kid, (size_t)(n->n_kid + 1) * sizeof *n->kid);
    n->kid[n->n_kid++] = kid;
}

static int32_t new_class(struct tok_regex *re) {
    re->cls = xrealloc(re->cls, (size_t)(re->n_cls + 1) * sizeof *re->cls);
    memset(&re->cls[re->n_cls], 0, sizeof *re->cls);
    return re->n_cls++;
}

static int fail(struct parser *ps, const char *what) {
    if (!ps->error)
        ps->error = what;
    return -1;
}

static int at(struct parser *ps, uint32_t c) { return ps->i < ps->n && ps->p[ps->i] == c; }

static int hex_value(uint32_t c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* An escape after '\' into class c (adds ranges or properties); for a single character,
 * *single gets it (so that a range can use it). -1 on a refused escape. */
static int parse_escape(struct parser *ps, struct cls *c, uint32_t *single) {
    *single = UINT32_MAX;
    if (ps->i >= ps->n) return fail(ps, "a trailing backslash");
    uint32_t e = ps->p[ps->i++];
    switch (e) {
    case 's': c->props |= UNI_WS; return 0;
    case 'S': c->nprops |= UNI_WS; return 0;
    case 'd': cls_add(c, '0', '9'); return 0;   /* JavaScript's \d is ASCII */
    case 'w': cls_add(c, '0', '9'); cls_add(c, 'A', 'Z'); cls_add(c, 'a', 'z'); cls_add(c, '_', '_'); return 0;
    case 'D': case 'W': return fail(ps, "\\D or \\W");
    case 'p': case 'P': {
        if (!at(ps, '{')) return fail(ps, "a \\p without braces");
        size_t start = ++ps->i;
        while (ps->i < ps->n && ps->p[ps->i] != '}') ps->i++;
        if (ps->i >= ps->n) return fail(ps, "an unterminated \\p{...}");
        size_t len = ps->i++ - start;
        uint8_t flag = 0;
        if (len == 1) {
            switch (ps->p[start]) {
            case 'L': flag = UNI_L; break;
            case 'N': flag = UNI_N; break;
            case 'P': flag = UNI_P; break;
            case 'M': flag = UNI_M; break;
            default: break;
            }
        }
        if (!flag) return fail(ps, "a Unicode property other than L, N, P, M");
        if (e == 'p') c->props |= flag;
        else c->nprops |= flag;
        return 0;
    }
    case 'r': *single = '\r'; break;
    case 'n': *single = '\n'; break;
    case 't': *single = '\t'; break;
    case 'f': *single = '\f'; break;
    case 'v': *single = '\v'; break;
    case 'x': case 'u': {
        int digits = e == 'x' ? 2 : 4, v = 0;
        for (int k = 0; k < digits; k++) {
            int h = ps->i < ps->n ? hex_value(ps->p[ps->i]) : -1;
            if (h < 0) return fail(ps, "a malformed \\x or \\u escape");
            v = v * 16 + h;
            ps->i++;
        }
        *single = (uint32_t)v;
        break;
    }
    default:
        /* escaped punctuation stands for itself; a letter or digit would mean something else */
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
            return fail(ps, "an escape the tokenizer does not know (back-reference, anchor, ...)");
        *single = e;
        break;
    }
    cls_add(c, *single, *single);
    return 0;
}

/* A literal character (with ASCII case folding inside (?i:...)). */
static int32_t literal_node(struct parser *ps, uint32_t ch) {
    int32_t k = new_class(ps->re);
    struct cls *c = &ps->re->cls[k];
    cls_add(c, ch, ch);
    if (ps->icase && ch < 128 && ((ch | 32) >= 'a' && (ch | 32) <= 'z')) {
        uint32_t other = ch ^ 32;
        cls_add(&ps->re->cls[k], other, other);
    }
    int32_t n = new_node(ps->re, N_CLASS);
    ps->re->node[n].cls = k;
    return n;
}

static int32_t parse_alt(struct parser *ps);

static int32_t parse_bracket(struct parser *ps) {
    int32_t k = new_class(ps->re);
    if (at(ps, '^')) {
        ps->re->cls[k].neg = 1;
        ps->i++;
    }
    int first = 1;
    while (ps->i < ps->n && (first || ps->p[ps->i] != ']')) {
        first = 0;
        uint32_t lo = ps->p[ps->i++], single;
        if (lo == '[') return fail(ps, "a nested class");
        if (lo == '\\') {
            if (parse_escape(ps, &ps->re->cls[k], &single)) return -1;
            if (single == UINT32_MAX) continue;
            lo = single;
            ps->re->cls[k].n_range--; /* re-added below, possibly as a range */
        }
        uint32_t hi = lo;
        if (at(ps, '-') && ps->i + 1 < ps->n && ps->p[ps->i + 1] != ']') {
            ps->i++;
            hi = ps->p[ps->i++];
            if (hi == '\\') {
                struct cls tmp = {0};
                int rc = parse_escape(ps, &tmp, &single);
                free(tmp.range);
                if (rc || single == UINT32_MAX) return fail(ps, "a class range ending in a class");
                hi = single;
            }
            if (hi < lo) return fail(ps, "a class range out of order");
        }
        cls_add(&ps->re->cls[k], lo, hi);
        if (ps->icase) return fail(ps, "a class inside (?i:...)");
    }
    if (!at(ps, ']')) return fail(ps, "an unterminated class");
    ps->i++;
    int32_t n = new_node(ps->re, N_CLASS);
    ps->re->node[n].cls = k;
    return n;
}

static int32_t parse_atom(struct parser *ps) {
    uint32_t ch = ps->p[ps->i++];
    switch (ch) {
    case '(': {
        int saved_icase = ps->icase, look = 0, neg = 0;
        if (at(ps, '?')) {
            ps->i++;
            uint32_t k = ps->i < ps->n ? ps->p[ps->i++] : 0;
            if (k == ':') {
            } else if (k == 'i' && at(ps, ':')) {
                ps->i++;
                ps->icase = 1;
            } else if (k == '!' || k == '=') {
                look = 1;
                neg = k == '!';
            } else {
                return fail(ps, "a group kind other than (?:, (?i:, (?!, (?= (named groups, lookbehind)");
            }
        }
        int32_t inner = parse_alt(ps);
        ps->icase = saved_icase;
        if (inner < 0) return -1;
        if (!at(ps, ')')) return fail(ps, "an unclosed group");
        ps->i++;
        if (!look) return inner;
        int32_t n = new_node(ps->re, N_LOOK);
        ps->re->node[n].neg = neg;
        add_kid(ps->re, n, inner);
        return n;
    }
    case '[':
        return parse_bracket(ps);
    case '.': {
        int32_t k = new_class(ps->re);
        struct cls *c = &ps->re->cls[k];
        c->neg = 1; /* JavaScript's dot: anything but a line terminator */
        cls_add(c, '\n', '\n');
        cls_add(&ps->re->cls[k], '\r', '\r');
        cls_add(&ps->re->cls[k], 0x2028, 0x2029);
        int32_t n = new_node(ps->re, N_CLASS);
        ps->re->node[n].cls = k;
        return n;
    }
    case '\\': {
        int32_t k = new_class(ps->re);
        uint32_t single;
        if (parse_escape(ps, &ps->re->cls[k], &single)) return -1;
        if (single != UINT32_MAX && ps->icase) {
            ps->re->n_cls--;
            free(ps->re->cls[k].range);
            return literal_node(ps, single);
        }
        int32_t n = new_node(ps->re, N_CLASS);
        ps->re->node[n].cls = k;
        return n;
    }
    case '^': case '$':
        return fail(ps, "an anchor (^ or $)");
    case '*': case '+': case '?': case '{':
        return fail(ps, "a quantifier with nothing before it");
    default:
        return literal_node(ps, ch);
    }
}

static int parse_count(struct parser *ps, int32_t *v) {
    if (ps->i >= ps->n || ps->p[ps->i] < '0' || ps->p[ps->i] > '9') return -1;
    int64_t x = 0;
    while (ps->i < ps->n && ps->p[ps->i] >= '0' && ps->p[ps->i] <= '9') {
        x = x * 10 + (ps->p[ps->i++] - '0');
        if (x > 1000) return -1;
    }
    *v = (int32_t)x;
    return 0;
}

static int32_t parse_seq(struct parser *ps) {
    int32_t cat = new_node(ps->re, N_CAT);
    while (ps->i < ps->n && ps->p[ps->i] != '|' && ps->p[ps->i] != ')') {
        int32_t a = parse_atom(ps);
        if (a < 0) return -1;
        while (ps->i < ps->n) {
            uint32_t q = ps->p[ps->i];
            int32_t min, max;
            if (q == '?') min = 0, max = 1;
            else if (q == '*') min = 0, max = -1;
            else if (q == '+') min = 1, max = -1;
            else if (q == '{') {
                ps->i++;
                if (parse_count(ps, &min)) return fail(ps, "a malformed {n,m} quantifier");
                max = min;
                if (at(ps, ',')) {
                    ps->i++;
                    max = -1;
                    if (!at(ps, '}') && parse_count(ps, &max)) return fail(ps, "a malformed {n,m} quantifier");
                }
                if (!at(ps, '}') || (max >= 0 && max < min)) return fail(ps, "a malformed {n,m} quantifier");
                /* ps->i is at the '}', stepped over below */
            } else break;
            ps->i++;
            if (at(ps, '?') || at(ps, '+')) return fail(ps, "a lazy or possessive quantifier");
            int32_t r = new_node(ps->re, N_REP);
            ps->re->node[r].min = min;
            ps->re->node[r].max = max;
            add_kid(ps->re, r, a);
            a = r;
        }
        add_kid(ps->re, cat, a);
    }
    return cat;
}

static int32_t parse_alt(struct parser *ps) {
    int32_t first = parse_seq(ps);
    if (first < 0 || !at(ps, '|')) return first;
    int32_t alt = new_node(ps->re, N_ALT);
    add_kid(ps->re, alt, first);
    while (at(ps, '|')) {
        ps->i++;
        int32_t s = parse_seq(ps);
        if (s < 0) return -1;
        add_kid(ps->re, alt, s);
    }
    return alt;
}

/* ---- code generation -------------------------------------------------------------------- */
static int32_t emit(struct tok_regex *re, uint8_t op, int32_t x, int32_t y) {
    if (re->n_code == re->cap_code) {
        re->cap_code = re->cap_code ? re->cap_code * 2 : 64;
        re->code = xrealloc(re->code, (size_t)re->cap_code * sizeof *re->code);
    }
    re->code[re->n_code] = (struct inst){op, 0, x, y};
    return re->n_code++;
}

static void compile_node(struct tok_regex *re, int32_t id) {
    struct node n = re->node[id]; /* a copy: emitting may not move nodes, but stays safe */
    switch (n.kind) {
    case N_CLASS:
        emit(re, I_CLASS, n.cls, 0);
        break;
    case N_CAT:
        for (int32_t k = 0; k < n.n_kid; k++) compile_node(re, n.kid[k]);
        break;
    case N_ALT: {
        int32_t *jumps = xcalloc((size_t)n.n_kid, sizeof *jumps);
        for (int32_t k = 0; k < n.n_kid; k++) {
            int32_t split = -1;
            if (k + 1 < n.n_kid) split = emit(re, I_SPLIT, 0, 0);
            if (split >= 0) re->code[split].x = re->n_code;
            compile_node(re, n.kid[k]);
            if (k + 1 < n.n_kid) {
                jumps[k] = emit(re, I_JMP, 0, 0);
                re->code[split].y = re->n_code;
            }
        }
        for (int32_t k = 0; k + 1 < n.n_kid; k++) re->code[jumps[k]].x = re->n_code;
        free(jumps);
        break;
    }
    case N_REP: {
        for (int32_t k = 0; k < n.min; k++) compile_node(re, n.kid[0]);
        if (n.max < 0) {
            int32_t loop = emit(re, I_SPLIT, 0, 0);
            re->code[loop].x = re->n_code;
            compile_node(re, n.kid[0]);
            emit(re, I_JMP, loop, 0);
            re->code[loop].y = re->n_code;
        } else {
            int32_t opt = n.max - n.min;
            int32_t *splits = xcalloc((size_t)opt + 1, sizeof *splits);
            for (int32_t k = 0; k < opt; k++) {
                splits[k] = emit(re, I_SPLIT, 0, 0);
                re->code[splits[k]].x = re->n_code;
                compile_node(re, n.kid[0]);
            }
            for (int32_t k = 0; k < opt; k++) re->code[splits[k]].y = re->n_code;
            free(splits);
        }
        break;
    }
    case N_LOOK: {
        int32_t look = emit(re, I_LOOK, 0, 0);
        re->code[look].neg = (uint8_t)n.neg;
        compile_node(re, n.kid[0]);
        emit(re, I_MATCH, 0, 0);
        re->code[look].x = re->n_code;
        break;
    }
    }
}

struct tok_regex *tok_regex_compile(const char *pattern) {
    struct tok_regex *re = xcalloc(1, sizeof *re);
    struct ustr u = {0};
    utf8_decode(pattern, strlen(pattern), 0, &u);
    struct parser ps = {re, u.cp, u.n, 0, 0, NULL};
    int32_t root = parse_alt(&ps);
    if (root >= 0 && ps.i < ps.n) root = fail(&ps, "an unmatched ')'");
    ustr_free(&u);
    if (root < 0) {
        err_set("regex uses %s", ps.error ? ps.error : "an unsupported construct");
        tok_regex_free(re);
        return NULL;
    }
    compile_node(re, root);
    emit(re, I_MATCH, 0, 0);
    return re;
}

void tok_regex_free(struct tok_regex *re) {
    if (!re) return;
    for (int32_t i = 0; i < re->n_cls; i++) free(re->cls[i].range);
    for (int32_t i = 0; i < re->n_node; i++) free(re->node[i].kid);
    free(re->cls);
    free(re->node);
    free(re->code);
    free(re);
}

/* ---- the machine --------------------------------------------------------------------------- */
struct thread {
    int32_t pc;
    size_t pos;
};
struct stack {
    struct thread *v;
    size_t n, cap;
    struct thread local[64];
};

static void push(struct stack *s, int32_t pc, size_t pos) {
    if (s->n == s->cap) {
        size_t cap = s->cap * 2;
        if (s->v == s->local) {
            s->v = xmalloc(cap * sizeof *s->v);
            memcpy(s->v, s->local, s->n * sizeof *s->v);
        } else {
            s->v = xrealloc(s->v, cap * sizeof *s->v);
        }
        s->cap = cap;
    }
    s->v[s->n++] = (struct thread){pc, pos};
}

/* The (split, position) states a run has been through. The machine has no captures, so a
 * state's continuations give the same answer however it is reached: the first visit decides
 * it, and a second can be dropped. That bounds a run by (program x text) states, and ends the
 * loop of a repetition whose body matches nothing (" ?*"), which would otherwise grow the
 * stack without end. */
struct visited {
    uint64_t *key; /* 0 = empty; else (pc + 1) << 32 | (pos - pos0) */
    size_t n, cap;
    uint64_t local[64];
};

/* 1 if the state was seen before; else record it and return 0. */
static int seen(struct visited *v, int32_t pc, size_t off) {
    if (off >= UINT32_MAX) return 0; /* beyond what a key holds: not pruned */
    uint64_t k = ((uint64_t)(uint32_t)pc + 1) << 32 | (uint64_t)off;
    if (2 * (v->n + 1) > v->cap) { /* keep the table at most half full */
        size_t cap = v->cap * 2;
        uint64_t *old = v->key, *tab = xcalloc(cap, sizeof *tab);
        for (size_t i = 0; i < v->cap; i++) {
            if (!old[i]) continue;
            size_t j = (size_t)(old[i] * 0x9E3779B97F4A7C15ull) & (cap - 1);
            while (tab[j]) j = (j + 1) & (cap - 1);
            tab[j] = old[i];
        }
        if (old != v->local) free(old);
        v->key = tab;
        v->cap = cap;
    }
    size_t j = (size_t)(k * 0x9E3779B97F4A7C15ull) & (v->cap - 1);
    while (v->key[j]) {
        if (v->key[j] == k) return 1;
        j = (j + 1) & (v->cap - 1);
    }
    v->key[j] = k;
    v->n++;
    return 0;
}

/* Whether the program from pc matches at text[pos..]: 1 and *end, else 0. */
static int run(const struct tok_regex *re, int32_t pc0, const uint32_t *text, size_t n,
               size_t pos0, size_t *end) {
    struct stack s = {0};
    s.v = s.local;
    s.cap = sizeof s.local / sizeof s.local[0];
    struct visited vis = {0};
    vis.key = vis.local;
    vis.cap = sizeof vis.local / sizeof vis.local[0];
    push(&s, pc0, pos0);
    int found = 0;
    while (s.n > 0 && !found) {
        struct thread t = s.v[--s.n];
        for (;;) {
            const struct inst *in = &re->code[t.pc];
            if (in->op == I_CLASS) {
                if (t.pos < n && cls_match(&re->cls[in->x], text[t.pos])) {
                    t.pc++;
                    t.pos++;
                    continue;
                }
                break;
            } else if (in->op == I_SPLIT) {
                if (seen(&vis, t.pc, t.pos - pos0)) break;
                push(&s, in->y, t.pos);
                t.pc = in->x;
            } else if (in->op == I_JMP) {
                t.pc = in->x;
            } else if (in->op == I_MATCH) {
                *end = t.pos;
                found = 1;
                break;
            } else { /* I_LOOK */
                size_t dummy;
                int m = run(re, t.pc + 1, text, n, t.pos, &dummy);
                if (m == in->neg) break;
                t.pc = in->x;
            }
        }
    }
    if (s.v != s.local) free(s.v);
    if (vis.key != vis.local) free(vis.key);
    return found;
}

int tok_regex_find(const struct tok_regex *re, const uint32_t *text, size_t n, size_t from,
                   size_t *start, size_t *end) {
    for (size_t p = from; p <= n; p++) {
        if (run(re, 0, text, n, p, end)) {
            *start = p;
            return 1;
        }
    }
    return 0;
}
