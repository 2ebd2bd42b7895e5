/*
 * synth.c: the built-in synthetic task suite, small enough for a tiny model to learn in a few
 * thousand steps, so every feature can be shown and tested with nothing downloaded.
 *
 * Every prompt starts with a three-letter task tag and ends with '=' ("rev abcde="), so one
 * model can hold several tasks. Prompts stay within 20 bytes and completions within 8.
 *
 * Streams are deterministic in (seed, task, split). Which split a prompt belongs to is a hash
 * of the prompt alone (one in eight goes to eval), and generation rejects prompts of the other
 * split, so train and eval never share a prompt, whatever the seeds.
 *
 * The classification families have disjoint label sets (for class-incremental runs). A label
 * is drawn uniformly first and then a word that the family's rule gives that label, so labels
 * are balanced.
 */
#include "data.h"

#include <stdio.h>
#include <string.h>

/* WORD_BUF holds the longest word (12 letters); SYNTH_BUF a whole prompt or completion */
enum { WORD_BUF = 16, SYNTH_BUF = 32, SPLIT_EVAL_ONE_IN = 8, MAX_TRIES = 1 << 20 };

static const char VOWELS[] = "aeiou";
static const char CONSONANTS[] = "bcdfghjklmnpqrstvwxyz";

/* ---- small helpers --------------------------------------------------------------------- */

static int32_t rand_int(struct rng *r, int32_t lo, int32_t hi) /* [lo, hi] */ {
    return lo + (int32_t)rng_below(r, (uint64_t)(hi - lo + 1));
}

static char rand_from(struct rng *r, const char *set) {
    return set[rng_below(r, strlen(set))];
}

static char rand_lower(struct rng *r) {
    return (char)('a' + rng_below(r, 26));
}

/* n random lowercase letters into w (NUL-terminated). */
static void rand_word(struct rng *r, char *w, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        w[i] = rand_lower(r);
    w[n] = '\0';
}

/* ---- string transforms ------------------------------------------------------------------ */

/* A word of 4 to 6 letters into w and the prompt "<tag> <w>="; returns the word's length. */
static int32_t transform_word(struct rng *r, const char *tag, char *w, char *prompt) {
    int32_t n = rand_int(r, 4, 6);
    rand_word(r, w, n);
    snprintf(prompt, SYNTH_BUF, "%s %s=", tag, w);
    return n;
}

static void make_reverse(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    char w[WORD_BUF];
    int32_t n = transform_word(r, "rev", w, prompt);
    for (int32_t i = 0; i < n; i++)
        completion[i] = w[n - 1 - i];
    completion[n] = '\0';
}

static void make_upper(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    char w[WORD_BUF];
    int32_t n = transform_word(r, "upp", w, prompt);
    for (int32_t i = 0; i <= n; i++)
        completion[i] = w[i] ? (char)(w[i] - 'a' + 'A') : '\0';
}

static void make_shift(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    char w[WORD_BUF];
    int32_t n = transform_word(r, "shf", w, prompt);
    for (int32_t i = 0; i <= n; i++)
        completion[i] = w[i] ? (char)('a' + (w[i] - 'a' + 1) % 26) : '\0';
}

static void make_swap(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    char w[WORD_BUF];
    int32_t n = transform_word(r, "swp", w, prompt);
    memcpy(completion, w, (size_t)n + 1);
    completion[0] = w[n - 1];
    completion[n - 1] = w[0];
}

/* ---- arithmetic ------------------------------------------------------------------------- */

static void make_add(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    int32_t a = rand_int(r, 0, 99), b = rand_int(r, 0, 99);
    snprintf(prompt, SYNTH_BUF, "add %d+%d=", (int)a, (int)b);
    snprintf(completion, SYNTH_BUF, "%d", (int)(a + b));
}

static void make_sub(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    int32_t a = rand_int(r, 0, 99), b = rand_int(r, 0, 99);
    if (a < b) {
        int32_t t = a;
        a = b;
        b = t;
    }
    snprintf(prompt, SYNTH_BUF, "sub %d-%d=", (int)a, (int)b);
    snprintf(completion, SYNTH_BUF, "%d", (int)(a - b));
}

/* ---- counting --------------------------------------------------------------------------- */

/* The count is drawn uniformly from 0..4 first; with letters drawn freely it would nearly
 * always be 0 or 1. */
static void make_count(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    char w[WORD_BUF];
    char c = rand_lower(r);
    int32_t n = rand_int(r, 6, 10), k = rand_int(r, 0, 4);
    for (int32_t i = 0; i < n; i++) {
        char o;
        do
            o = rand_lower(r);
        while (o == c);
        w[i] = o;
    }
    w[n] = '\0';
    /* put c at k distinct positions: a partial Fisher-Yates over the positions */
    int32_t pos[WORD_BUF];
    for (int32_t i = 0; i < n; i++)
        pos[i] = i;
    for (int32_t i = 0; i < k; i++) {
        int32_t j = rand_int(r, i, n - 1), t = pos[i];
        pos[i] = pos[j];
        pos[j] = t;
        w[pos[i]] = c;
    }
    snprintf(prompt, SYNTH_BUF, "cnt %c:%s=", c, w);
    snprintf(completion, SYNTH_BUF, "%d", (int)k);
}

static void make_length(struct rng *r, int32_t label, char *prompt, char *completion) {
    (void)label;
    char w[WORD_BUF];
    int32_t n = rand_int(r, 1, 12);
    rand_word(r, w, n);
    snprintf(prompt, SYNTH_BUF, "len %s=", w);
    snprintf(completion, SYNTH_BUF, "%d", (int)n);
}

/* ---- classification families ------------------------------------------------------------ */

static const char *const COLOR_LABELS[] = {"red", "green", "blue"};
static const char *const SIZE_LABELS[] = {"small", "large"};
static const char *const SHAPE_LABELS[] = {"circle", "square"};
static const char *const ANIMAL_LABELS[] = {"cat", "dog", "owl"};
static const char *const FRUIT_LABELS[] = {"fig", "lime", "pear"};
static const char *const METAL_LABELS[] = {"gold", "iron"};

/* color: the first letter in a-h, i-p or q-z */
static void make_cls_color(struct rng *r, int32_t label, char *prompt, char *completion) {
    static const char first_lo[] = {'a', 'i', 'q'}, first_hi[] = {'h', 'p', 'z'};
    char w[WORD_BUF];
    rand_word(r, w, rand_int(r, 3, 7));
    w[0] = (char)rand_int(r, first_lo[label], first_hi[label]);
    snprintf(prompt, SYNTH_BUF, "col %s=", w);
    snprintf(completion, SYNTH_BUF, "%s", COLOR_LABELS[label]);
}

/* size: 3-5 letters or 6-8 letters */
static void make_cls_size(struct rng *r, int32_t label, char *prompt, char *completion) {
    char w[WORD_BUF];
    rand_word(r, w, label == 0 ? rand_int(r, 3, 5) : rand_int(r, 6, 8));
    snprintf(prompt, SYNTH_BUF, "siz %s=", w);
    snprintf(completion, SYNTH_BUF, "%s", SIZE_LABELS[label]);
}

/* shape: the last letter a vowel (aeiou) or not */
static void make_cls_shape(struct rng *r, int32_t label, char *prompt, char *completion) {
    char w[WORD_BUF];
    int32_t n = rand_int(r, 3, 7);
    rand_word(r, w, n);
    w[n - 1] = rand_from(r, label == 0 ? VOWELS : CONSONANTS);
    snprintf(prompt, SYNTH_BUF, "shp %s=", w);
    snprintf(completion, SYNTH_BUF, "%s", SHAPE_LABELS[label]);
}

/* animal: the number of vowels (aeiou) is 0-1, 2, or 3 and more */
static void make_cls_animal(struct rng *r, int32_t label, char *prompt, char *completion) {
    char w[WORD_BUF];
    int32_t n = rand_int(r, 4, 7);
    int32_t v = label == 0 ? rand_int(r, 0, 1) : label == 1 ? 2 : rand_int(r, 3, n < 5 ? n : 5);
    for (int32_t i = 0; i < n; i++)
        w[i] = rand_from(r, i < v ? VOWELS : CONSONANTS);
    w[n] = '\0';
    for (int32_t i = n - 1; i > 0; i--) { /* shuffle so the vowels can sit anywhere */
        int32_t j = rand_int(r, 0, i);
        char t = w[i];
        w[i] = w[j];
        w[j] = t;
    }
    snprintf(prompt, SYNTH_BUF, "ani %s=", w);
    snprintf(completion, SYNTH_BUF, "%s", ANIMAL_LABELS[label]);
}

/* fruit: 3-4, 5-6 or 7-8 letters */
static void make_cls_fruit(struct rng *r, int32_t label, char *prompt, char *completion) {
    char w[WORD_BUF];
    rand_word(r, w, rand_int(r, 3 + 2 * label, 4 + 2 * label));
    snprintf(prompt, SYNTH_BUF, "frt %s=", w);
    snprintf(completion, SYNTH_BUF, "%s", FRUIT_LABELS[label]);
}

/* metal: the last letter in a-m or n-z */
static void make_cls_metal(struct rng *r, int32_t label, char *prompt, char *completion) {
    char w[WORD_BUF];
    int32_t n = rand_int(r, 3, 7);
    rand_word(r, w, n);
    w[n - 1] = (char)(label == 0 ? rand_int(r, 'a', 'm') : rand_int(r, 'n', 'z'));
    snprintf(prompt, SYNTH_BUF, "mtl %s=", w);
    snprintf(completion, SYNTH_BUF, "%s", METAL_LABELS[label]);
}

/* ---- the table -------------------------------------------------------------------------- */

struct synth_task {
    struct synth_task_info info;
    int32_t n_labels; /* classification: drawn first so labels are balanced; else 1 */
    /* writes prompt and completion, each at most SYNTH_BUF bytes with the NUL */
    void (*make)(struct rng *r, int32_t label, char *prompt, char *completion);
};

#define N_LABELS(a) ((int32_t)(sizeof(a) / sizeof((a)[0])))

static const struct synth_task TASKS[] = {
    {{"reverse", "transform", "reverse 4-6 lowercase letters: 'rev abcde=' -> 'edcba'"}, 1,
     make_reverse},
    {{"upper", "transform", "uppercase 4-6 lowercase letters: 'upp abcd=' -> 'ABCD'"}, 1,
     make_upper},
    {{"shift", "transform", "each of 4-6 letters one on, z to a: 'shf abcz=' -> 'bcda'"}, 1,
     make_shift},
    {{"swap", "transform", "swap the first and last of 4-6 letters: 'swp abcde=' -> 'ebcda'"}, 1,
     make_swap},
    {{"add", "arithmetic", "sum of two numbers 0-99: 'add 12+7=' -> '19'"}, 1, make_add},
    {{"sub", "arithmetic", "difference a-b of numbers 0-99, a >= b: 'sub 45-12=' -> '33'"}, 1,
     make_sub},
    {{"count", "counting", "count a letter in 6-10 letters: 'cnt a:abacada=' -> '4'"}, 1,
     make_count},
    {{"length", "counting", "length of 1-12 letters: 'len abcdefg=' -> '7'"}, 1, make_length},
    {{"cls_color", "classification",
      "first letter a-h/i-p/q-z -> red/green/blue: 'col kite=' -> 'green'"},
     N_LABELS(COLOR_LABELS), make_cls_color},
    {{"cls_size", "classification", "3-5/6-8 letters -> small/large: 'siz abcdefg=' -> 'large'"},
     N_LABELS(SIZE_LABELS), make_cls_size},
    {{"cls_shape", "classification",
      "last letter a vowel/consonant -> circle/square: 'shp tomato=' -> 'circle'"},
     N_LABELS(SHAPE_LABELS), make_cls_shape},
    {{"cls_animal", "classification",
      "vowels (aeiou) 0-1/2/3+ -> cat/dog/owl: 'ani rabbit=' -> 'dog'"},
     N_LABELS(ANIMAL_LABELS), make_cls_animal},
    {{"cls_fruit", "classification", "3-4/5-6/7-8 letters -> fig/lime/pear: 'frt stone=' -> 'lime'"},
     N_LABELS(FRUIT_LABELS), make_cls_fruit},
    {{"cls_metal", "classification", "last letter a-m/n-z -> gold/iron: 'mtl frog=' -> 'gold'"},
     N_LABELS(METAL_LABELS), make_cls_metal},
};

enum { N_TASKS = (int)(sizeof(TASKS) / sizeof(TASKS[0])) };

int32_t synth_count(void) {
    return N_TASKS;
}

const struct synth_task_info *synth_info(int32_t i) {
    return i >= 0 && i < N_TASKS ? &TASKS[i].info : NULL;
}

int32_t synth_find(const char *name) {
    for (int32_t i = 0; i < N_TASKS; i++)
        if (strcmp(TASKS[i].info.name, name) == 0)
            return i;
    return -1;
}

/* The split a prompt belongs to: FNV-1a, then a murmur-style finalizer so the low bits mix. */
static int32_t prompt_split(const char *prompt) {
    uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, prompt, strlen(prompt));
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h % SPLIT_EVAL_ONE_IN == 0 ? 1 : 0;
}

int synth_generate(const char *name, uint64_t seed, int32_t split, int32_t n,
                   struct dataset *out, struct task_table *tt) {
    int32_t t = synth_find(name);
    if (t < 0) {
        char known[512] = "";
        for (int32_t i = 0; i < N_TASKS; i++) {
            size_t used = strlen(known);
            snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", TASKS[i].info.name);
        }
        return err_set("synthetic task '%s': unknown (known: %s)", name, known);
    }
    if (split != 0 && split != 1)
        return err_set("synthetic task '%s': split %d is neither 0 (train) nor 1 (eval)", name,
                       (int)split);
    if (n < 0)
        return err_set("synthetic task '%s': negative example count %d", name, (int)n);

    const struct synth_task *task = &TASKS[t];
    char label[SYNTH_BUF + 16];
    snprintf(label, sizeof label, "synth:%s:%d", name, (int)split);
    struct rng r;
    rng_seed_label(&r, seed, label);
    int32_t id = task_table_id(tt, name);
    for (int32_t i = 0; i < n; i++) {
        char prompt[SYNTH_BUF], completion[SYNTH_BUF];
        int32_t lab = (int32_t)rng_below(&r, (uint64_t)task->n_labels);
        int32_t tries = 0;
        do {
            /* every task has thousands of prompts per split; this bound only guards a bug */
            if (++tries > MAX_TRIES)
                return err_set("synthetic task '%s': no prompt found for split %d", name,
                               (int)split);
            task->make(&r, lab, prompt, completion);
        } while (prompt_split(prompt) != split);
        dataset_add(out, id, prompt, completion);
    }
    return 0;
}
