/*
 * test_batch.c: the layout of a hand-made two-example batch, written out by hand, uncut and
 * cut at several max_T; then invariants over batches of synthetic examples.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data.h"
#include "tokenizer.h"

enum { B_ = TOK_BOS, E_ = TOK_EOS, P_ = TOK_PAD };

/* Compare row-major (B, T) arrays; print both on a mismatch. */
/* The bytes among ids (specials carry no text), NUL-terminated into out. */
static void byte_text(const int32_t *ids, int32_t n, char *out, size_t cap) {
    size_t len = 0;
    for (int32_t i = 0; i < n && len + 1 < cap; i++)
        if (ids[i] >= 0 && ids[i] < 256) out[len++] = (char)ids[i];
    out[len] = '\0';
}

static int same_rows(const char *what, const int32_t *got, const int32_t *want, int32_t B,
                     int32_t T) {
    int diff = 0;
    for (int32_t i = 0; i < B * T; i++)
        diff += got[i] != want[i];
    if (diff) {
        fprintf(stderr, "%s: %d entries differ\n", what, diff);
        for (int32_t b = 0; b < B; b++) {
            fprintf(stderr, "  row %d got:", (int)b);
            for (int32_t t = 0; t < T; t++)
                fprintf(stderr, " %d", (int)got[b * T + t]);
            fprintf(stderr, "\n  row %d want:", (int)b);
            for (int32_t t = 0; t < T; t++)
                fprintf(stderr, " %d", (int)want[b * T + t]);
            fprintf(stderr, "\n");
        }
    }
    return diff;
}

struct expected {
    int32_t max_T, T;
    const int32_t *tokens, *targets; /* (2, T) */
    int32_t prompt_len[2], task[2];
};

static void check_batch(struct batch *b, const struct dataset *d, const size_t *idx,
                        const struct expected *e) {
    batch_make(b, d, idx, 2, e->max_T);
    CHECK(b->B == 2 && b->T == e->T, "max_T %d: B %d T %d, want 2 %d", (int)e->max_T, (int)b->B,
          (int)b->T, (int)e->T);
    if (b->T != e->T)
        return;
    int dt = same_rows("tokens", b->tokens, e->tokens, 2, e->T);
    int dg = same_rows("targets", b->targets, e->targets, 2, e->T);
    CHECK(dt == 0 && dg == 0, "max_T %d: %d token and %d target entries differ", (int)e->max_T,
          dt, dg);
    for (int i = 0; i < 2; i++) {
        CHECK(b->prompt_len[i] == e->prompt_len[i], "max_T %d row %d: prompt_len %d, want %d",
              (int)e->max_T, i, (int)b->prompt_len[i], (int)e->prompt_len[i]);
        CHECK(b->example_task[i] == e->task[i], "max_T %d row %d: task %d, want %d",
              (int)e->max_T, i, (int)b->example_task[i], (int)e->task[i]);
    }
    printf("max_T %2d: T %d, %d token / %d target mismatches, prompt_len %d %d\n", (int)e->max_T,
           (int)b->T, dt, dg, (int)b->prompt_len[0], (int)b->prompt_len[1]);
}

static void test_hand_made(void) {
    struct dataset d = {0};
    dataset_add(&d, 0, "ab=", "xy"); /* BOS a b = x y EOS */
    dataset_add(&d, 1, "c=", "z");   /* BOS c = z EOS */
    const size_t idx[2] = {0, 1};
    struct batch b = {0};

    /* uncut: T = 6, the longest sequence minus one */
    static const int32_t tok6[] = {B_, 'a', 'b', '=', 'x', 'y', /**/ B_, 'c', '=', 'z', P_, P_};
    static const int32_t tgt6[] = {-1, -1, -1, 'x', 'y', E_, /**/ -1, -1, 'z', E_, -1, -1};
    check_batch(&b, &d, idx, &(struct expected){0, 6, tok6, tgt6, {4, 3}, {0, 1}});
    check_batch(&b, &d, idx, &(struct expected){6, 6, tok6, tgt6, {4, 3}, {0, 1}});
    check_batch(&b, &d, idx, &(struct expected){100, 6, tok6, tgt6, {4, 3}, {0, 1}});

    /* max_T 5: the first example loses its EOS target; the second fits */
    static const int32_t tok5[] = {B_, 'a', 'b', '=', 'x', /**/ B_, 'c', '=', 'z', P_};
    static const int32_t tgt5[] = {-1, -1, -1, 'x', 'y', /**/ -1, -1, 'z', E_, -1};
    check_batch(&b, &d, idx, &(struct expected){5, 5, tok5, tgt5, {4, 3}, {0, 1}});

    /* max_T 4: the completion is cut to its first byte; the prompt stays whole */
    static const int32_t tok4[] = {B_, 'a', 'b', '=', /**/ B_, 'c', '=', 'z'};
    static const int32_t tgt4[] = {-1, -1, -1, 'x', /**/ -1, -1, 'z', E_};
    check_batch(&b, &d, idx, &(struct expected){4, 4, tok4, tgt4, {4, 3}, {0, 1}});

    /* max_T 2: the prompts no longer fit; their front goes so one target is left */
    static const int32_t tok2[] = {B_, '=', /**/ B_, '='};
    static const int32_t tgt2[] = {-1, 'x', /**/ -1, 'z'};
    check_batch(&b, &d, idx, &(struct expected){2, 2, tok2, tgt2, {2, 2}, {0, 1}});

    /* max_T 1: BOS alone predicts the first completion byte */
    static const int32_t tok1[] = {B_, /**/ B_};
    static const int32_t tgt1[] = {'x', /**/ 'z'};
    check_batch(&b, &d, idx, &(struct expected){1, 1, tok1, tgt1, {1, 1}, {0, 1}});

    /* order follows idx, and the buffers grow again after a small batch */
    const size_t rev[2] = {1, 0};
    static const int32_t tokr[] = {B_, 'c', '=', 'z', P_, P_, /**/ B_, 'a', 'b', '=', 'x', 'y'};
    static const int32_t tgtr[] = {-1, -1, 'z', E_, -1, -1, /**/ -1, -1, -1, 'x', 'y', E_};
    check_batch(&b, &d, rev, &(struct expected){0, 6, tokr, tgtr, {3, 4}, {1, 0}});

    /* bytes above 127 are ids above 127 (no sign extension), in inputs and targets */
    struct dataset u = {0};
    dataset_add(&u, 2, "\xC3\xA9=", "\xE2\x9C\x93");
    dataset_add(&u, 3, "q=", "r");
    static const int32_t toku[] = {B_, 0xC3, 0xA9, '=', 0xE2, 0x9C, /**/ B_, 'q', '=', 'r', P_,
                                   P_};
    static const int32_t tgtu[] = {-1, -1, -1, 0xE2, 0x9C, 0x93, /**/ -1, -1, 'r', E_, -1, -1};
    /* the first sequence is BOS + 3 + 3 + EOS: 7 inputs, capped to 6 to cut its EOS */
    check_batch(&b, &u, idx, &(struct expected){6, 6, toku, tgtu, {4, 3}, {2, 3}});

    batch_free(&b);
    CHECK(b.tokens == NULL && b.cap_B == 0, "batch_free left buffers behind");
    dataset_free(&d);
    dataset_free(&u);
}

/* Over many synthetic examples: every row decodes back to BOS + prompt + completion, has
 * exactly completion + EOS targets when uncut and at least one target when cut. */
static void test_synthetic_invariants(void) {
    struct dataset d = {0};
    struct task_table tt = {0};
    for (int32_t i = 0; i < synth_count(); i++)
        CHECK(synth_generate(synth_info(i)->name, 7, 0, 40, &d, &tt) == 0, "%s", err_msg());
    size_t n = d.n;
    size_t *idx = malloc(sizeof(size_t) * n);
    for (size_t i = 0; i < n; i++)
        idx[i] = (i * 7919) % n; /* a fixed shuffle: 7919 is prime and n is not its multiple */
    struct batch b = {0};
    const int32_t B = 16;
    long rows = 0, bad_rows = 0, targets = 0;
    for (int32_t max_T = 0; max_T <= 12; max_T += 3) { /* 0: no cap */
        for (size_t s = 0; s + (size_t)B <= n; s += (size_t)B) {
            batch_make(&b, &d, idx + s, B, max_T);
            for (int32_t r = 0; r < B; r++) {
                const struct example *e = &d.ex[idx[s + (size_t)r]];
                const int32_t *tok = b.tokens + r * b.T, *tgt = b.targets + r * b.T;
                int32_t P = (int32_t)strlen(e->prompt), C = (int32_t)strlen(e->completion);
                int32_t n_tgt = 0, first_tgt = -1;
                for (int32_t t = 0; t < b.T; t++)
                    if (tgt[t] >= 0) {
                        n_tgt++;
                        if (first_tgt < 0)
                            first_tgt = t;
                    }
                int ok = tok[0] == TOK_BOS && n_tgt >= 1 && first_tgt == b.prompt_len[r] - 1;
                ok = ok && tgt[first_tgt] == (unsigned char)e->completion[0];
                if (max_T == 0) {
                    char text[64], want[64];
                    byte_text(tok, b.T, text, sizeof text);
                    snprintf(want, sizeof want, "%s%s", e->prompt, e->completion);
                    ok = ok && strcmp(text, want) == 0 && n_tgt == C + 1 &&
                         b.prompt_len[r] == 1 + P && tgt[P + C] == TOK_EOS;
                }
                rows++;
                targets += n_tgt;
                bad_rows += !ok;
            }
        }
    }
    CHECK(bad_rows == 0, "%ld of %ld rows break an invariant", bad_rows, rows);
    printf("synthetic invariants: %ld rows over 5 caps, %ld targets, %ld bad rows\n", rows,
           targets, bad_rows);
    free(idx);
    batch_free(&b);
    dataset_free(&d);
    task_table_free(&tt);
}

int main(void) {
    test_hand_made();
    test_synthetic_invariants();
    return check_report("test_batch");
}
