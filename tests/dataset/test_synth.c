/*
 * test_synth.c: the synthetic suite. Every completion is recomputed here from its prompt by
 * rules written independently of synth.c; streams are deterministic in the seed; train and
 * eval never share a prompt; classification families have disjoint, balanced label sets.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data.h"

enum { N_TRAIN = 4000, N_EVAL = 600, OUT_MAX = 64 };

/* ---- the independent answers ---------------------------------------------------------- */

static int all_lower(const char *s, size_t lo, size_t hi) {
    size_t n = strlen(s);
    if (n < lo || n > hi)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return 0;
    return 1;
}

static int n_vowels(const char *s) {
    int v = 0;
    for (; *s; s++)
        v += strchr("aeiou", *s) != NULL;
    return v;
}

/* A number 0..99 with no sign, no leading zeros and nothing else. */
static int parse_small(const char *s, size_t n, int *out) {
    if (n == 0 || n > 2 || (n == 2 && s[0] == '0'))
        return 0;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* "a<op>b" into a and b. */
static int parse_pair(const char *body, char op, int *a, int *b) {
    const char *p = strchr(body, op);
    return p && parse_small(body, (size_t)(p - body), a) && parse_small(p + 1, strlen(p + 1), b);
}

/* The answer to prompt for task, from the prompt alone; 0 if the prompt is malformed. */
static int answer(const char *task, const char *prompt, char out[OUT_MAX]) {
    static const char *const tags[][2] = {
        {"reverse", "rev"},   {"upper", "upp"},    {"shift", "shf"},     {"swap", "swp"},
        {"add", "add"},       {"sub", "sub"},      {"count", "cnt"},     {"length", "len"},
        {"cls_color", "col"}, {"cls_size", "siz"}, {"cls_shape", "shp"}, {"cls_animal", "ani"},
        {"cls_fruit", "frt"}, {"cls_metal", "mtl"},
    };
    const char *tag = NULL;
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (strcmp(tags[i][0], task) == 0)
            tag = tags[i][1];
    size_t n = strlen(prompt);
    if (tag == NULL || n < 6 || strncmp(prompt, tag, 3) != 0 || prompt[3] != ' ' ||
        prompt[n - 1] != '=')
        return 0;
    char w[OUT_MAX];
    snprintf(w, sizeof w, "%.*s", (int)(n - 5), prompt + 4); /* the body between tag and '=' */
    size_t L = strlen(w);
    int a, b;

    if (strcmp(task, "reverse") == 0) {
        if (!all_lower(w, 4, 6))
            return 0;
        for (size_t i = 0; i < L; i++)
            out[i] = w[L - 1 - i];
        out[L] = '\0';
    } else if (strcmp(task, "upper") == 0) {
        if (!all_lower(w, 4, 6))
            return 0;
        for (size_t i = 0; i <= L; i++)
            out[i] = (char)toupper((unsigned char)w[i]);
    } else if (strcmp(task, "shift") == 0) {
        if (!all_lower(w, 4, 6))
            return 0;
        for (size_t i = 0; i <= L; i++)
            out[i] = w[i] == 'z' ? 'a' : w[i] ? (char)(w[i] + 1) : '\0';
    } else if (strcmp(task, "swap") == 0) {
        if (!all_lower(w, 4, 6))
            return 0;
        strcpy(out, w);
        out[0] = w[L - 1];
        out[L - 1] = w[0];
    } else if (strcmp(task, "add") == 0) {
        if (!parse_pair(w, '+', &a, &b))
            return 0;
        snprintf(out, OUT_MAX, "%d", a + b);
    } else if (strcmp(task, "sub") == 0) {
        if (!parse_pair(w, '-', &a, &b) || a < b)
            return 0;
        snprintf(out, OUT_MAX, "%d", a - b);
    } else if (strcmp(task, "count") == 0) {
        if (L < 3 || w[1] != ':' || !all_lower(w + 2, 6, 10) || w[0] < 'a' || w[0] > 'z')
            return 0;
        int k = 0;
        for (const char *p = w + 2; *p; p++)
            k += *p == w[0];
        snprintf(out, OUT_MAX, "%d", k);
    } else if (strcmp(task, "length") == 0) {
        if (!all_lower(w, 1, 12))
            return 0;
        snprintf(out, OUT_MAX, "%d", (int)L);
    } else if (strcmp(task, "cls_color") == 0) {
        if (!all_lower(w, 3, 7))
            return 0;
        strcpy(out, w[0] <= 'h' ? "red" : w[0] <= 'p' ? "green" : "blue");
    } else if (strcmp(task, "cls_size") == 0) {
        if (!all_lower(w, 3, 8))
            return 0;
        strcpy(out, L <= 5 ? "small" : "large");
    } else if (strcmp(task, "cls_shape") == 0) {
        if (!all_lower(w, 3, 7))
            return 0;
        strcpy(out, strchr("aeiou", w[L - 1]) ? "circle" : "square");
    } else if (strcmp(task, "cls_animal") == 0) {
        if (!all_lower(w, 4, 7))
            return 0;
        int v = n_vowels(w);
        strcpy(out, v <= 1 ? "cat" : v == 2 ? "dog" : "owl");
    } else if (strcmp(task, "cls_fruit") == 0) {
        if (!all_lower(w, 3, 8))
            return 0;
        strcpy(out, L <= 4 ? "fig" : L <= 6 ? "lime" : "pear");
    } else if (strcmp(task, "cls_metal") == 0) {
        if (!all_lower(w, 3, 7))
            return 0;
        strcpy(out, w[L - 1] <= 'm' ? "gold" : "iron");
    } else {
        return 0;
    }
    return 1;
}

/* ---- helpers -------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Prompts of d, sorted (pointers into d). */
static const char **sorted_prompts(const struct dataset *d) {
    const char **v = malloc(sizeof(char *) * (d->n ? d->n : 1));
    for (size_t i = 0; i < d->n; i++)
        v[i] = d->ex[i].prompt;
    qsort(v, d->n, sizeof(char *), cmp_str);
    return v;
}

static size_t n_distinct(const char **sorted, size_t n) {
    size_t k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++)
        k += strcmp(sorted[i], sorted[i - 1]) != 0;
    return k;
}

/* Examples of d whose prompt is in the sorted list. */
static size_t n_shared(const struct dataset *d, const char **sorted, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++) {
        const char *key = d->ex[i].prompt;
        k += bsearch(&key, sorted, n, sizeof(char *), cmp_str) != NULL;
    }
    return k;
}

static int generate(const char *name, uint64_t seed, int32_t split, int32_t n,
                    struct dataset *d, struct task_table *tt) {
    int rc = synth_generate(name, seed, split, n, d, tt);
    CHECK(rc == 0 && d->n == (size_t)n, "%s seed %llu split %d: rc %d, %zu examples (%s)", name,
          (unsigned long long)seed, (int)split, rc, d->n, err_msg());
    return rc == 0 && d->n == (size_t)n;
}

/* ---- the tests ------------------------------------------------------------------------ */

static void test_listing(void) {
    int32_t n = synth_count(), n_cls = 0;
    CHECK(n >= 10, "only %d tasks", (int)n);
    for (int32_t i = 0; i < n; i++) {
        const struct synth_task_info *info = synth_info(i);
        CHECK(info && info->name && info->kind && info->description && info->description[0],
              "task %d has no complete info", (int)i);
        if (!info)
            continue;
        CHECK(synth_find(info->name) == i, "synth_find('%s') = %d", info->name,
              (int)synth_find(info->name));
        n_cls += strcmp(info->kind, "classification") == 0;
        printf("  %-11s %-14s %s\n", info->name, info->kind, info->description);
    }
    CHECK(synth_info(-1) == NULL && synth_info(n) == NULL, "info out of range is not NULL");
    CHECK(n_cls >= 4, "only %d classification families", (int)n_cls);
    static const char *const required[] = {"reverse", "upper", "shift", "swap",
                                           "add",     "sub",   "count", "length"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        CHECK(synth_find(required[i]) >= 0, "task '%s' missing", required[i]);
    printf("tasks: %d, of which %d classification families\n", (int)n, (int)n_cls);

    struct dataset d = {0};
    struct task_table tt = {0};
    CHECK(synth_generate("nope", 1, 0, 5, &d, &tt) == -1 && strstr(err_msg(), "'nope'") &&
              strstr(err_msg(), "reverse") && d.n == 0 && tt.n == 0,
          "unknown task: '%s'", err_msg());
    printf("unknown task -> '%s'\n", err_msg());
    CHECK(synth_generate("add", 1, 2, 5, &d, &tt) == -1 && strstr(err_msg(), "split") && d.n == 0,
          "bad split: '%s'", err_msg());
    printf("bad split -> '%s'\n", err_msg());
    dataset_free(&d);
    task_table_free(&tt);
}

/* Per task: correctness, sizes, determinism, split disjointness. */
static void test_task(const char *name) {
    struct task_table tt = {0};
    task_table_id(&tt, "first"); /* ids come from the shared table */
    struct dataset tr1 = {0}, tr1b = {0}, tr2 = {0}, ev1 = {0}, ev2 = {0}, small = {0};
    if (!generate(name, 1, 0, N_TRAIN, &tr1, &tt) || !generate(name, 1, 0, N_TRAIN, &tr1b, &tt) ||
        !generate(name, 2, 0, N_TRAIN, &tr2, &tt) || !generate(name, 1, 1, N_EVAL, &ev1, &tt) ||
        !generate(name, 2, 1, N_EVAL, &ev2, &tt) || !generate(name, 1, 0, 100, &small, &tt))
        goto done;
    CHECK(tt.n == 2 && task_table_find(&tt, name) == 1, "task table has %d names", (int)tt.n);

    /* every completion recomputed from its prompt; sizes within what a tiny model handles */
    int wrong = 0, bad_task = 0, too_long = 0, max_p = 0, max_c = 0;
    const struct dataset *all[] = {&tr1, &tr2, &ev1, &ev2};
    for (int s = 0; s < 4; s++) {
        for (size_t i = 0; i < all[s]->n; i++) {
            const struct example *e = &all[s]->ex[i];
            char want[OUT_MAX];
            int parsed = answer(name, e->prompt, want);
            int ok = parsed && strcmp(want, e->completion) == 0;
            if (!ok && wrong < 3)
                fprintf(stderr, "%s: '%s' -> '%s' (independent answer: %s)\n", name, e->prompt,
                        e->completion, parsed ? want : "malformed prompt");
            wrong += !ok;
            bad_task += e->task != 1;
            int p = (int)strlen(e->prompt), c = (int)strlen(e->completion);
            max_p = p > max_p ? p : max_p;
            max_c = c > max_c ? c : max_c;
            too_long += p > 20 || c > 8 || c == 0;
        }
    }
    CHECK(wrong == 0 && bad_task == 0 && too_long == 0, "%s: %d wrong, %d bad task ids, %d too long",
          name, wrong, bad_task, too_long);

    /* determinism: the same seed repeats exactly (and a shorter run is a prefix) */
    int repeat_diff = 0, prefix_diff = 0, seed_same = 0;
    for (size_t i = 0; i < tr1.n; i++) {
        repeat_diff += strcmp(tr1.ex[i].prompt, tr1b.ex[i].prompt) != 0 ||
                       strcmp(tr1.ex[i].completion, tr1b.ex[i].completion) != 0;
        seed_same += strcmp(tr1.ex[i].prompt, tr2.ex[i].prompt) == 0;
    }
    for (size_t i = 0; i < small.n; i++)
        prefix_diff += strcmp(small.ex[i].prompt, tr1.ex[i].prompt) != 0;
    CHECK(repeat_diff == 0 && prefix_diff == 0, "%s: same seed differs at %d (prefix %d)", name,
          repeat_diff, prefix_diff);
    CHECK(seed_same < N_TRAIN / 10, "%s: seed 2 repeats seed 1 at %d of %d places", name,
          seed_same, N_TRAIN);

    /* train and eval share no prompt, also across seeds */
    const char **s1 = sorted_prompts(&tr1), **s2 = sorted_prompts(&tr2);
    const char **se = sorted_prompts(&ev1);
    size_t shared = n_shared(&ev1, s1, tr1.n) + n_shared(&ev2, s1, tr1.n) +
                    n_shared(&ev1, s2, tr2.n) + n_shared(&ev2, s2, tr2.n);
    CHECK(shared == 0, "%s: %zu eval prompts also in train", name, shared);
    printf("  %-11s train %d (%zu distinct) eval %d (%zu distinct): shared %zu, wrong %d, "
           "seed 2 same place %d, longest prompt %d completion %d\n",
           name, N_TRAIN, n_distinct(s1, tr1.n), N_EVAL, n_distinct(se, ev1.n), shared, wrong,
           seed_same, max_p, max_c);
    free(s1);
    free(s2);
    free(se);
done:
    dataset_free(&tr1);
    dataset_free(&tr1b);
    dataset_free(&tr2);
    dataset_free(&ev1);
    dataset_free(&ev2);
    dataset_free(&small);
    task_table_free(&tt);
}

/* Labels: 2-4 per family, no label in two families, each near its fair share. */
static void test_labels(void) {
    enum { MAX_LABELS = 64 };
    const char *labels[MAX_LABELS];
    int32_t owner[MAX_LABELS];
    int n_labels = 0, overlaps = 0;
    for (int32_t t = 0; t < synth_count(); t++) {
        const struct synth_task_info *info = synth_info(t);
        if (strcmp(info->kind, "classification") != 0)
            continue;
        for (int32_t split = 0; split < 2; split++) {
            int32_t n = split ? N_EVAL : N_TRAIN;
            struct dataset d = {0};
            struct task_table tt = {0};
            if (!generate(info->name, 3, split, n, &d, &tt)) {
                dataset_free(&d);
                task_table_free(&tt);
                continue;
            }
            const char *mine[8];
            int counts[8] = {0}, k = 0;
            for (size_t i = 0; i < d.n; i++) {
                int j = 0;
                while (j < k && strcmp(mine[j], d.ex[i].completion) != 0)
                    j++;
                if (j == k && k < 8)
                    mine[k++] = d.ex[i].completion;
                if (j < 8)
                    counts[j]++;
            }
            CHECK(k >= 2 && k <= 4, "%s: %d labels", info->name, k);
            printf("  %-11s %-5s", info->name, split ? "eval" : "train");
            for (int j = 0; j < k; j++) {
                double share = (double)counts[j] * k / n;
                printf(" %s %d (%.2f)", mine[j], counts[j], share);
                CHECK(share > 0.75 && share < 1.25, "%s: label %s has %d of %d", info->name,
                      mine[j], counts[j], (int)n);
                if (split)
                    continue;
                for (int l = 0; l < n_labels; l++)
                    if (strcmp(labels[l], mine[j]) == 0 && owner[l] != t) {
                        CHECK(0, "label '%s' in both %s and %s", mine[j], info->name,
                              synth_info(owner[l])->name);
                        overlaps++;
                    }
                if (n_labels < MAX_LABELS) {
                    labels[n_labels] = xstrdup(mine[j]);
                    owner[n_labels++] = t;
                }
            }
            printf("\n");
            dataset_free(&d);
            task_table_free(&tt);
        }
    }
    printf("classification labels: %d, shared between families: %d\n", n_labels, overlaps);
    for (int l = 0; l < n_labels; l++)
        free((char *)labels[l]);
}

int main(void) {
    test_listing();
    for (int32_t i = 0; i < synth_count(); i++)
        test_task(synth_info(i)->name);
    test_labels();
    return check_report("test_synth");
}
