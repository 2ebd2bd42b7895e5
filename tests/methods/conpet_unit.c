/*
 * conpet_unit: the conpet plugin (both modes) and the host's continual-learning pieces it
 * relies on: the replay sampler (train.c, replay.h) and label evaluation (eval.c).
 *   grads:   dynamic mode through the ABI, with auxiliary passes served here as a run serves
 *            them: the gradient of LM loss + selector loss against fourth-order differences,
 *            for the experts, the selector's LoRA and head, and the input (embedding: the dx
 *            of both passes), at top_k 1 and 2; the selector's loss against one recomputed
 *            here from the final hidden state.
 *   routing: with a selector head that prefers other tasks, evaluation follows its top-k,
 *            training with teacher forcing puts the own task in the last slot (and without it
 *            does not); one known task needs no selector pass. Seen on a site's output.
 *   chain:   stage A trains task a; stage B (init_from A) trains b with a replayed: a's
 *            expert is frozen and stays bit-identical, c's (in no batch) stays at its start
 *            under weight decay, b's and the selector train; conpet.experts records it; a
 *            resumed B keeps its checkpoint. Twice: with the stage's tasks told (only the new
 *            expert, and the selector from two known tasks on, are trainable) and not told
 *            (every expert not trained earlier is). Static continues its LoRA; mismatches
 *            refused.
 *   replay:  the memory's bound per label (20, full, more than there is), its determinism and
 *            independence of the other tasks, the mix of a batch (exactly the new share; old
 *            tasks and memory entries uniform by chi-square), replay off = the plain sampler,
 *            the memory file.
 *   labels:  eval_labels accuracy and loss against one example and one label at a time; too
 *            many labels refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtest.h"
#include "optim.h"
#include "replay.h"
#include "run.h"
#include "safetensors.h"
#include "stage.h"
#include "tokenizer.h"

enum { N_TASKS = 3 };

static const struct plugin_method *conpet;
static char tmp_dir[] = "/tmp/peft_conpet_XXXXXX";
/* The stage's training tasks as the run tells them (peft.stage_tasks/1); NULL: not told. */
static const int32_t *stage_tasks;
static int32_t n_stage_tasks;

/* ---- a harness that serves auxiliary passes and an earlier stage's tensors --------------- */

struct harness {
    struct model m;
    struct model_acts *a, *aux;
    struct batch b;
    struct task_table tasks;
    struct method_run *mr;
    int training, aux_grad;   /* aux_grad: run the auxiliary backward when the plugin asks */
    int aux_passes;
    float aux_loss;           /* the last auxiliary pass's loss (what the plugin added) */
    const char *src;          /* the adapter file behind stage "prev" */
};

static int h_run_pass(void *ctx, uint32_t pass, uint32_t backward) {
    struct harness *H = ctx;
    struct model_hooks hooks = *method_run_hooks(H->mr, H->training);
    hooks.pass = pass;
    float loss;
    if (model_forward(&H->m, H->aux, H->b.tokens, NULL, H->b.B, H->b.T, &hooks, &loss)) return -1;
    H->aux_loss = loss;
    H->aux_passes++;
    if (backward && H->training && H->aux_grad) return model_backward(&H->m, H->aux, &hooks);
    return 0;
}

static int h_stage_tensor(void *ctx, const char *stage, const char *name, float *out,
                          uint64_t numel) {
    struct harness *H = ctx;
    if (!H->src || strcmp(stage, "prev") != 0) return err_set("stage '%s' has not finished", stage);
    struct st_file f;
    if (st_open(&f, H->src)) return -1;
    const struct st_tensor *t = st_find(&f, name);
    int rc = !t ? err_set("no tensor '%s'", name)
             : t->numel != numel ? err_set("'%s': %llu entries, %llu asked", name,
                                           (unsigned long long)t->numel, (unsigned long long)numel)
                                 : st_read_f32(&f, t, out, numel);
    st_close(&f);
    return rc;
}

/* Keys: the schema's defaults, then "key=value" overrides (NULL-terminated). */
static void cfg_with(struct mt_cfg *c, const char *const *kv) {
    mt_cfg_defaults(c, conpet->desc);
    for (; kv && *kv; kv++) {
        const char *eq = strchr(*kv, '=');
        char key[64];
        REQUIRE(eq && (size_t)(eq - *kv) < sizeof key, "bad override %s", *kv);
        memcpy(key, *kv, (size_t)(eq - *kv));
        key[eq - *kv] = 0;
        mt_cfg_set(c, key, eq + 1);
    }
}

/* A model (the same parameters every time) and the instance; 0 or -1 (err_msg) from create. */
static int h_open(struct harness *H, const char *const *kv, const char *src, uint64_t seed) {
    memset(H, 0, sizeof *H);
    mt_model(&H->m, 0, 11, 0.3f);
    H->a = model_acts_new();
    H->aux = model_acts_new();
    task_table_id(&H->tasks, "a");
    task_table_id(&H->tasks, "b");
    task_table_id(&H->tasks, "c");
    H->src = src;
    struct mt_cfg cfg;
    cfg_with(&cfg, kv);
    struct method_env env = mt_env(&H->tasks, seed);
    env.run_ctx = H;
    env.run_pass = h_run_pass;
    env.stage_tensor = h_stage_tensor;
    env.train_tasks = stage_tasks;
    env.n_train_tasks = n_stage_tasks;
    int rc = method_run_create(&H->mr, conpet, &H->m, &env, cfg.kv, cfg.n);
    mt_cfg_free(&cfg);
    if (rc) H->mr = NULL;
    return rc;
}

static void h_close(struct harness *H) {
    if (H->mr) method_run_free(H->mr);
    model_acts_free(H->a);
    model_acts_free(H->aux);
    model_free(&H->m);
    if (H->b.tokens) mt_batch_free(&H->b);
    task_table_free(&H->tasks);
}

/* A batch of B examples of T tokens whose tasks are tasks[i % n]; prompt lengths vary. */
static void h_batch(struct harness *H, int32_t B, int32_t T, const int32_t *tasks, int32_t n,
                    uint64_t seed) {
    if (H->b.tokens) mt_batch_free(&H->b);
    mt_batch(&H->b, B, T, H->m.cfg.vocab, seed);
    for (int32_t i = 0; i < B; i++) {
        H->b.example_task[i] = tasks[i % n];
        H->b.prompt_len[i] = 1 + i % (T - 1);
    }
}

static struct mtensor *tensor(struct method_run *mr, const char *name) {
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++)
        if (strcmp(method_run_tensor(mr, i)->name, name) == 0) return method_run_tensor(mr, i);
    REQUIRE(0, "no tensor %s", name);
    return NULL;
}

/* "base_model.model.<site>.lora_X.<task>.weight" of an expert (task NULL: static LoRA). */
static char *expert_name(const struct model *m, int32_t site, char ab, const char *task) {
    char s[96];
    model_site_name(m, site, s, sizeof s);
    return task ? xasprintf("base_model.model.%s.lora_%c.%s.weight", s, ab, task)
                : xasprintf("base_model.model.%s.lora_%c.weight", s, ab);
}

/* The selector's loss from the last auxiliary pass's final hidden state, in double: mean over
 * examples whose task is known of -log softmax over the known tasks. */
static double selector_loss(struct harness *H) {
    const float *hid = model_hidden(H->aux);
    const float *w = tensor(H->mr, "conpet.selector.head.weight")->data;
    const float *bias = tensor(H->mr, "conpet.selector.head.bias")->data;
    const float *ex = tensor(H->mr, "conpet.experts")->data;
    int32_t C = H->m.cfg.d_model, n = 0;
    double loss = 0;
    for (int32_t i = 0; i < H->b.B; i++) {
        int32_t own = H->b.example_task[i];
        if (ex[own] == 0) continue;
        const float *h = hid + ((size_t)i * H->b.T + (size_t)(H->b.prompt_len[i] - 1)) * C;
        double z[N_TASKS], mx = -1e300, sum = 0;
        for (int32_t t = 0; t < N_TASKS; t++) {
            z[t] = bias[t];
            for (int32_t c = 0; c < C; c++) z[t] += (double)w[t * C + c] * h[c];
            if (ex[t] != 0) mx = fmax(mx, z[t]);
        }
        for (int32_t t = 0; t < N_TASKS; t++)
            if (ex[t] != 0) sum += exp(z[t] - mx);
        loss += mx + log(sum) - z[own];
        n++;
    }
    return n ? loss / n : 0.0;
}

/* ---- grads ----------------------------------------------------------------------------- */

/* LM loss + selector loss of the current parameters, both in double (no gradients). */
static double total_loss(struct harness *H) {
    int before = H->aux_passes;
    H->training = 1;
    H->aux_grad = 0;
    REQUIRE(method_run_batch_begin(H->mr, &H->b, 1, 0) == 0, "batch_begin: %s", err_msg());
    double aux = H->aux_passes > before ? selector_loss(H) : 0.0;
    return mt_forward(&H->m, H->a, &H->b, method_run_hooks(H->mr, 1)) + aux;
}

static double fd_at(struct harness *H, float *p, double h) {
    float saved = *p;
    const double steps[4] = {h, -h, 2 * h, -2 * h};
    double v[4];
    for (int i = 0; i < 4; i++) {
        *p = (float)(saved + steps[i]);
        v[i] = total_loss(H);
    }
    *p = saved;
    return (8.0 * (v[0] - v[1]) - (v[2] - v[3])) / (12.0 * h);
}

/* The difference at step 1e-2, once halved where it disagrees with the gradient. */
static double fd(struct harness *H, float *p, double grad) {
    double want = fd_at(H, p, 1e-2);
    if (fabs(grad - want) > 5e-3 * fmax(fmax(fabs(grad), fabs(want)), 1e-2)) want = fd_at(H, p, 5e-3);
    return want;
}

struct gstat {
    double max_rel, max_norm; /* per entry (floor 1e-2); per tensor: max err / max |fd| */
    size_t n;
    char worst[160];
};

static void gstat_tensor(struct gstat *g, const char *name, const float *grad, float *data,
                         uint64_t numel, struct harness *H, uint64_t max_entries) {
    double t_err = 0, t_scale = 0;
    uint64_t k = numel < max_entries ? numel : max_entries;
    for (uint64_t s = 0; s < k; s++) {
        uint64_t j = numel <= max_entries ? s : (numel * s) / k;
        double want = fd(H, &data[j], grad[j]), err = fabs(grad[j] - want);
        double rel = err / fmax(fmax(fabs(grad[j]), fabs(want)), 1e-2);
        if (rel > g->max_rel) {
            g->max_rel = rel;
            snprintf(g->worst, sizeof g->worst, "%s[%llu]: %.6g vs %.6g", name,
                     (unsigned long long)j, grad[j], want);
        }
        t_err = fmax(t_err, err);
        t_scale = fmax(t_scale, fabs(want));
        g->n++;
    }
    g->max_norm = fmax(g->max_norm, t_err / fmax(t_scale, 3e-3));
}

static void test_grads(int top_k) {
    char k_text[32];
    snprintf(k_text, sizeof k_text, "top_k=%d", top_k);
    const char *kv[] = {"mode=dynamic", "target_modules=all-linear", "r=2", "selector_r=3",
                        "lora_alpha=3", k_text, NULL};
    struct harness H;
    REQUIRE(h_open(&H, kv, NULL, 7) == 0, "create: %s", err_msg());
    model_alloc_grads(&H.m);
    int32_t emb = model_find_tensor(&H.m, "model.embed_tokens.weight");
    H.m.need_grad[emb] = 1;
    REQUIRE(method_run_begin(H.mr) == 0, "begin: %s", err_msg());
    for (int32_t t = 0; t < N_TASKS; t++)
        REQUIRE(method_run_task_begin(H.mr, t) == 0, "task_begin: %s", err_msg());
    const int32_t tasks[] = {0, 1, 2};
    h_batch(&H, 6, 5, tasks, 3, 21);
    /* Every trainable tensor away from its start; the head's bias keeps the top-k apart by a
     * margin no finite-difference step crosses (routing is piecewise constant). */
    struct rng g;
    rng_seed(&g, 77);
    for (int32_t i = 0; i < method_run_tensor_count(H.mr); i++) {
        struct mtensor *t = method_run_tensor(H.mr, i);
        if (!(t->desc.flags & PEFT_TENSOR_TRAINABLE)) continue;
        for (uint64_t j = 0; j < t->numel; j++) t->data[j] += rng_uniform(&g, -0.2f, 0.2f);
    }
    float *bias = tensor(H.mr, "conpet.selector.head.bias")->data;
    bias[0] = 6.0f;
    bias[1] = 0.0f;
    bias[2] = -6.0f;

    /* The gradients: the auxiliary pass (forward and backward) in batch_begin, then the main. */
    method_run_zero_grads(H.mr);
    model_zero_grads(&H.m);
    H.training = 1;
    H.aux_grad = 1;
    int before = H.aux_passes;
    REQUIRE(method_run_batch_begin(H.mr, &H.b, 1, 0) == 0, "batch_begin: %s", err_msg());
    CHECK(H.aux_passes == before + 1, "the selector pass did not run");
    double aux = selector_loss(&H);
    CHECK(fabs(aux - H.aux_loss) < 1e-5 * fmax(1.0, aux), "selector loss %.7g, recomputed %.7g",
          (double)H.aux_loss, aux);
    const struct model_hooks *hk = method_run_hooks(H.mr, 1);
    mt_forward(&H.m, H.a, &H.b, hk);
    REQUIRE(model_backward(&H.m, H.a, hk) == 0, "backward: %s", err_msg());
    method_run_collect_grads(H.mr);

    struct gstat expert = {0}, selector = {0}, input = {0};
    int experts_with_grad = 0;
    for (int32_t i = 0; i < method_run_tensor_count(H.mr); i++) {
        struct mtensor *t = method_run_tensor(H.mr, i);
        if (!t->grad) continue;
        int is_sel = strncmp(t->name, "conpet.selector", 15) == 0;
        double gmax = 0;
        for (uint64_t j = 0; j < t->numel; j++) gmax = fmax(gmax, fabs(t->grad[j]));
        experts_with_grad += !is_sel && gmax > 0;
        gstat_tensor(is_sel ? &selector : &expert, t->name, t->grad, t->data, t->numel, &H, 24);
    }
    const struct model_tensor *mt = &H.m.tensors[emb];
    gstat_tensor(&input, "embed_tokens", H.m.grads + mt->offset, H.m.params + mt->offset,
                 mt->numel, &H, 160);
    printf("grads top_k=%d: selector loss %.6f (recomputed %.6f); experts: %zu entries, max rel "
           "err %.3g, max err/max|fd| %.3g; selector (LoRA + head): %zu entries, max rel err "
           "%.3g, max err/max|fd| %.3g; embedding: %zu entries, max rel err %.3g\n",
           top_k, (double)H.aux_loss, aux, expert.n, expert.max_rel, expert.max_norm,
           selector.n, selector.max_rel, selector.max_norm, input.n, input.max_rel);
    CHECK(experts_with_grad > 0, "no expert received a gradient");
    CHECK(expert.n > 0 && expert.max_rel < 2e-2 && expert.max_norm < 1e-2, "experts: %s",
          expert.worst);
    CHECK(selector.n > 0 && selector.max_rel < 2e-2 && selector.max_norm < 1e-2, "selector: %s",
          selector.worst);
    CHECK(input.n > 0 && input.max_rel < 2e-2 && input.max_norm < 1e-2, "embedding: %s",
          input.worst);
    h_close(&H);
}

/* ---- routing --------------------------------------------------------------------------- */

/* The site's addition for x (n, d_in) when example i (rows i*T..) runs the expert of task
 * expert[i] (-1: none), by hand in double: s x A^T B^T. */
static void expected_addition(struct harness *H, int32_t site, const float *x, int32_t T,
                              const int32_t *expert, float s, double *y) {
    int32_t d_in, d_out;
    model_site_dims(&H->m, site, &d_in, &d_out);
    int32_t n = H->b.B * T;
    memset(y, 0, sizeof *y * (size_t)n * d_out);
    for (int32_t row = 0; row < n; row++) {
        if (expert[row / T] < 0) continue;
        {
            const char *task = H->tasks.names[expert[row / T]];
            char *an = expert_name(&H->m, site, 'A', task), *bn = expert_name(&H->m, site, 'B', task);
            const float *A = tensor(H->mr, an)->data, *B = tensor(H->mr, bn)->data;
            int32_t r = (int32_t)(tensor(H->mr, an)->numel / (uint64_t)d_in);
            for (int32_t q = 0; q < r; q++) {
                double u = 0;
                for (int32_t c = 0; c < d_in; c++) u += (double)x[row * d_in + c] * A[q * d_in + c];
                for (int32_t o = 0; o < d_out; o++) y[row * d_out + o] += s * u * B[o * r + q];
            }
            free(an);
            free(bn);
        }
    }
}

/* The largest difference between the site's addition and the expected one, after a
 * batch_begin of the harness's batch (a label-scoring batch when H->b.label_task is set). */
static double routing_error(struct harness *H, int training, const int32_t *expert) {
    const int32_t site = 1; /* layer 0 k_proj */
    int32_t d_in, d_out, T = H->b.T, n = H->b.B * T;
    model_site_dims(&H->m, site, &d_in, &d_out);
    H->training = training;
    H->aux_grad = 0;
    REQUIRE(method_run_batch_begin(H->mr, &H->b, training, 0) == 0, "batch_begin: %s", err_msg());
    float *x = xmalloc(sizeof *x * (size_t)n * d_in), *y = xcalloc((size_t)n * d_out, sizeof *y);
    double *want = xmalloc(sizeof *want * (size_t)n * d_out);
    struct rng g;
    rng_seed(&g, 5);
    for (int32_t i = 0; i < n * d_in; i++) x[i] = rng_uniform(&g, -1.0f, 1.0f);
    const struct model_hooks *hk = method_run_hooks(H->mr, training);
    REQUIRE(hk->site_forward(hk->ctx, 0, site, x, y, n) == 0, "site_forward: %s", err_msg());
    expected_addition(H, site, x, T, expert, 1.0f, want);
    double err = 0, mag = 0;
    for (int32_t i = 0; i < n * d_out; i++) {
        err = fmax(err, fabs(y[i] - want[i]));
        mag = fmax(mag, fabs(want[i]));
    }
    free(x);
    free(y);
    free(want);
    return mag > 1e-3 ? err : 1.0; /* a zero addition would prove nothing */
}

static void test_routing(int32_t k, int tf) {
    char k_text[32], tf_text[32];
    snprintf(k_text, sizeof k_text, "top_k=%d", k);
    snprintf(tf_text, sizeof tf_text, "teacher_forcing=%s", tf ? "true" : "false");
    const char *kv[] = {"mode=dynamic", "target_modules=all-linear", "r=2", "lora_alpha=2",
                        k_text, tf_text, NULL};
    struct harness H;
    REQUIRE(h_open(&H, kv, NULL, 9) == 0, "create: %s", err_msg());
    REQUIRE(method_run_begin(H.mr) == 0, "begin: %s", err_msg());
    const int32_t tasks[] = {0, 1, 2};
    h_batch(&H, 6, 4, tasks, 3, 3);
    struct rng g;
    rng_seed(&g, 12);
    for (int32_t i = 0; i < method_run_tensor_count(H.mr); i++) {
        struct mtensor *t = method_run_tensor(H.mr, i);
        if (strncmp(t->name, "base_model.", 11) == 0)
            for (uint64_t j = 0; j < t->numel; j++) t->data[j] = rng_uniform(&g, -0.5f, 0.5f);
    }
    /* One known task: every example uses its expert, with no selector pass. */
    REQUIRE(method_run_task_begin(H.mr, 0) == 0, "task_begin: %s", err_msg());
    const int32_t all0[6] = {0, 0, 0, 0, 0, 0};
    int before = H.aux_passes;
    double e_one = routing_error(&H, 0, all0);
    CHECK(e_one < 1e-5 && H.aux_passes == before, "one known task: err %.3g, %d selector passes",
          e_one, H.aux_passes - before);
    /* Three known tasks; the selector prefers task 1, then 2, then 0, whatever the input. */
    for (int32_t t = 1; t < N_TASKS; t++) REQUIRE(method_run_task_begin(H.mr, t) == 0, "task_begin");
    memset(tensor(H.mr, "conpet.selector.head.weight")->data, 0,
           sizeof(float) * tensor(H.mr, "conpet.selector.head.weight")->numel);
    float *bias = tensor(H.mr, "conpet.selector.head.bias")->data;
    bias[0] = 0.0f;
    bias[1] = 5.0f;
    bias[2] = 4.0f;
    /* The selected sets by hand: evaluation {1} or {1, 2}; training with teacher forcing puts
     * the own task in the last slot when it is missing. */
    int32_t sets[2][N_TASKS][2]; /* [training][own task][slot] */
    for (int32_t tr = 0; tr < 2; tr++)
        for (int32_t own = 0; own < N_TASKS; own++) {
            int32_t *st = sets[tr][own];
            st[0] = 1;
            st[1] = 2;
            if (tr && tf && k == 1) st[0] = own;
            if (tr && tf && k == 2 && own == 0) st[1] = 0;
        }
    /* A batch of completions: each example runs its first selected expert. */
    int32_t first[2][6];
    for (int32_t tr = 0; tr < 2; tr++)
        for (int32_t i = 0; i < 6; i++) first[tr][i] = sets[tr][tasks[i % 3]][0];
    before = H.aux_passes;
    double e_eval = routing_error(&H, 0, first[0]);
    double e_train = routing_error(&H, 1, first[1]);
    CHECK(H.aux_passes == before + 2, "selector passes: %d", H.aux_passes - before);
    CHECK(e_eval < 1e-5, "evaluation does not run the selector's first expert: err %.3g", e_eval);
    CHECK(e_train < 1e-5, "training routing (teacher forcing %d) off: err %.3g", tf, e_train);
    /* A label-scoring batch: prompt p (own task p) paired with a label of each task; a pair
     * runs its label's expert when that task is selected, and is masked otherwise. */
    const int32_t own9[9] = {0, 0, 0, 1, 1, 1, 2, 2, 2}, label9[9] = {0, 1, 2, 0, 1, 2, 0, 1, 2};
    h_batch(&H, 9, 4, own9, 9, 4);
    H.b.label_task = label9;
    double e_label[2];
    int masks_ok = 1, n_masked = 0;
    for (int32_t tr = 0; tr < 2; tr++) {
        int32_t expert[9];
        uint8_t want_mask[9];
        for (int32_t i = 0; i < 9; i++) {
            const int32_t *st = sets[tr][own9[i]];
            int sel = st[0] == label9[i] || (k == 2 && st[1] == label9[i]);
            expert[i] = sel ? label9[i] : -1;
            want_mask[i] = (uint8_t)!sel;
        }
        e_label[tr] = routing_error(&H, tr, expert);
        const uint8_t *masked = method_run_label_masked(H.mr);
        for (int32_t i = 0; i < 9; i++) {
            masks_ok &= masked && masked[i] == want_mask[i];
            n_masked += want_mask[i];
        }
    }
    H.b.label_task = NULL;
    printf("routing top_k=%d teacher_forcing=%d: one known task err %.2g; selector order 1 > 2 "
           "> 0: completions, evaluation err %.2g, training err %.2g; label pairs, evaluation "
           "err %.2g, training err %.2g, %d of 18 masked as by hand (%s)\n", k, tf, e_one,
           e_eval, e_train, e_label[0], e_label[1], n_masked, masks_ok ? "same" : "DIFFERENT");
    CHECK(e_label[0] < 1e-5 && e_label[1] < 1e-5, "label pairs: per-expert forward off: %.3g %.3g",
          e_label[0], e_label[1]);
    CHECK(masks_ok, "label pairs: the masked pairs differ from the unselected tasks' labels");
    h_close(&H);
}

/* ---- label prediction's loss -------------------------------------------------------------- */

/* Two prompts (own tasks 0 and 1) each paired with a label of every task, pairs 3e + l; the
 * label of prompt e's own task is its reference. */
static const int32_t lp_own[6] = {0, 0, 0, 1, 1, 1}, lp_label[6] = {0, 1, 2, 0, 1, 2};

/* The mean label loss of the two prompts (labels.c), in double; d_score (6) its derivative. */
static double label_batch_loss(struct harness *H, double *d_score, const uint8_t **masked_out) {
    H->training = 1;
    H->aux_grad = 0;
    REQUIRE(method_run_batch_begin(H->mr, &H->b, 1, 0) == 0, "batch_begin: %s", err_msg());
    float loss;
    REQUIRE(model_forward(&H->m, H->a, H->b.tokens, H->b.targets, H->b.B, H->b.T,
                          method_run_hooks(H->mr, 1), &loss) == 0, "forward: %s", err_msg());
    const uint8_t *masked = method_run_label_masked(H->mr);
    double score[6];
    int64_t n_tok[6];
    label_scores(model_logits(H->a), &H->b, H->m.cfg.vocab, masked, score, n_tok);
    double total = 0;
    for (int32_t e = 0; e < 2; e++)
        total += label_loss(score + 3 * e, 3, lp_own[3 * e], d_score ? d_score + 3 * e : NULL);
    if (masked_out) *masked_out = masked;
    return total / 2;
}

static double label_fd(struct harness *H, float *p) {
    float saved = *p;
    const double h = 1e-2, steps[4] = {h, -h, 2 * h, -2 * h};
    double v[4];
    for (int i = 0; i < 4; i++) {
        *p = (float)(saved + steps[i]);
        v[i] = label_batch_loss(H, NULL, NULL);
    }
    *p = saved;
    return (8.0 * (v[0] - v[1]) - (v[2] - v[3])) / (12.0 * h);
}

/* label_loss by hand, then the gradient of the label loss of a top-2 ConPET on label pairs
 * (a masked pair among them) through the host's per-row loss weights, against finite
 * differences: the experts that scored, and the input. */
static void test_label_loss(void) {
    /* scores -1, -2 and a masked label: L = log(e^-1 + e^-2 + e^-100) + 1 = log(1 + e^-1) */
    double score[3] = {-1.0, -2.0, PEFT_LABEL_NULL_SCORE}, d[3];
    double l = label_loss(score, 3, 0, d);
    double p1 = exp(-1.0) / (1.0 + exp(-1.0) + exp(-99.0));
    CHECK(fabs(l - 0.31326168751822286) < 1e-12 && fabs(d[0] + p1) < 1e-12 &&
              fabs(d[1] - p1) < 1e-12 && fabs(d[2]) < 1e-40,
          "label_loss: %.17g, d %.17g %.17g %.3g", l, d[0], d[1], d[2]);

    const char *kv[] = {"mode=dynamic", "target_modules=all-linear", "r=2", "lora_alpha=2",
                        "top_k=2", NULL};
    struct harness H;
    REQUIRE(h_open(&H, kv, NULL, 13) == 0, "create: %s", err_msg());
    model_alloc_grads(&H.m);
    int32_t emb = model_find_tensor(&H.m, "model.embed_tokens.weight");
    H.m.need_grad[emb] = 1;
    REQUIRE(method_run_begin(H.mr) == 0, "begin: %s", err_msg());
    for (int32_t t = 0; t < N_TASKS; t++)
        REQUIRE(method_run_task_begin(H.mr, t) == 0, "task_begin: %s", err_msg());
    struct rng g;
    rng_seed(&g, 31);
    for (int32_t i = 0; i < method_run_tensor_count(H.mr); i++) {
        struct mtensor *t = method_run_tensor(H.mr, i);
        if (strncmp(t->name, "base_model.", 11) == 0)
            for (uint64_t j = 0; j < t->numel; j++) t->data[j] = rng_uniform(&g, -0.5f, 0.5f);
    }
    memset(tensor(H.mr, "conpet.selector.head.weight")->data, 0,
           sizeof(float) * tensor(H.mr, "conpet.selector.head.weight")->numel);
    float *bias = tensor(H.mr, "conpet.selector.head.bias")->data;
    bias[0] = 0.0f; /* selected: 1 and 2, with teacher forcing {1, 0} for prompt 0 */
    bias[1] = 5.0f;
    bias[2] = 4.0f;
    h_batch(&H, 6, 5, lp_own, 6, 8);
    for (int32_t i = 0; i < 6; i++) H.b.prompt_len[i] = 2; /* one prompt per three pairs */
    for (int32_t i = 0; i < 6; i++)
        for (int32_t t = 0; t < 2; t++) H.b.tokens[i * H.b.T + t] = H.b.tokens[(i / 3 * 3) * H.b.T + t];
    H.b.label_task = lp_label;

    method_run_zero_grads(H.mr);
    model_zero_grads(&H.m);
    double d_score[6];
    const uint8_t *masked;
    double loss = label_batch_loss(&H, d_score, &masked);
    int32_t n_masked = 0;
    float w[6 * 5];
    for (int32_t p = 0; p < 6; p++) {
        n_masked += masked[p];
        for (int32_t t = 0; t < H.b.T; t++) w[p * H.b.T + t] = masked[p] ? 0.0f : (float)(-d_score[p] / 2);
    }
    model_acts_set_row_weights(H.a, w);
    REQUIRE(model_backward(&H.m, H.a, method_run_hooks(H.mr, 1)) == 0, "backward: %s", err_msg());
    model_acts_set_row_weights(H.a, NULL);
    method_run_collect_grads(H.mr);

    struct gstat experts = {0}, input = {0};
    for (int32_t i = 0; i < method_run_tensor_count(H.mr); i++) {
        struct mtensor *t = method_run_tensor(H.mr, i);
        if (!t->grad || strncmp(t->name, "base_model.", 11) != 0) continue;
        for (uint64_t k = 0; k < 6; k++) {
            uint64_t j = (t->numel * k) / 6;
            double want = label_fd(&H, &t->data[j]), err = fabs(t->grad[j] - want);
            double rel = err / fmax(fmax(fabs(t->grad[j]), fabs(want)), 1e-2);
            if (rel > experts.max_rel) {
                experts.max_rel = rel;
                snprintf(experts.worst, sizeof experts.worst, "%s[%llu]: %.6g vs %.6g", t->name,
                         (unsigned long long)j, t->grad[j], want);
            }
            experts.n++;
        }
    }
    const struct model_tensor *mt = &H.m.tensors[emb];
    for (uint64_t k = 0; k < 40; k++) {
        uint64_t j = (mt->numel * k) / 40;
        float *p = H.m.params + mt->offset + j;
        double got = H.m.grads[mt->offset + j], want = label_fd(&H, p);
        double rel = fabs(got - want) / fmax(fmax(fabs(got), fabs(want)), 1e-2);
        input.max_rel = fmax(input.max_rel, rel);
        input.n++;
    }
    printf("label loss by hand %.6f; top_k=2 label pairs: loss %.6f, %d of 6 pairs masked; "
           "gradient against finite differences: experts %zu entries, max rel err %.3g; "
           "embedding %zu entries, max rel err %.3g\n", l, loss, n_masked, experts.n,
           experts.max_rel, input.n, input.max_rel);
    CHECK(n_masked == 2, "masked pairs: %d, by hand 2 (prompt 0's label of task 2, prompt 1's "
          "of task 0)", n_masked);
    CHECK(experts.n > 0 && experts.max_rel < 2e-2, "experts: %s", experts.worst);
    CHECK(input.max_rel < 2e-2, "embedding: max rel err %.3g", input.max_rel);
    H.b.label_task = NULL;
    h_close(&H);
}

/* ---- chain ----------------------------------------------------------------------------- */

/* steps optimizer steps on batches of the given tasks (AdamW, weight decay 0.1). */
static void train_steps(struct harness *H, const int32_t *tasks, int32_t n, int steps) {
    struct optim_params op = {.lr = 1e-2, .weight_decay = 0.1, .beta1 = 0.9, .beta2 = 0.999,
                              .eps = 1e-8, .grad_clip = 1.0, .min_lr_ratio = 1.0,
                              .total_steps = steps, .schedule = SCHEDULE_CONSTANT};
    for (int s = 1; s <= steps; s++) {
        h_batch(H, 6, 5, tasks, n, 100 + (uint64_t)s);
        method_run_zero_grads(H->mr);
        H->training = 1;
        H->aux_grad = 1;
        REQUIRE(method_run_batch_begin(H->mr, &H->b, 1, (uint64_t)(s - 1)) == 0, "batch_begin: %s",
                err_msg());
        const struct model_hooks *hk = method_run_hooks(H->mr, 1);
        mt_forward(&H->m, H->a, &H->b, hk);
        REQUIRE(model_backward(&H->m, H->a, hk) == 0, "backward: %s", err_msg());
        method_run_collect_grads(H->mr);
        optim_step(H->mr, &op, s);
        REQUIRE(method_run_step_end(H->mr, (uint64_t)s) == 0, "step_end: %s", err_msg());
    }
}

/* Copies of every tensor, by index. */
static float **snapshot(struct method_run *mr) {
    float **v = xcalloc((size_t)method_run_tensor_count(mr), sizeof *v);
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        v[i] = xmalloc(t->numel * sizeof(float));
        memcpy(v[i], t->data, t->numel * sizeof(float));
    }
    return v;
}

static void snapshot_free(float **v, int32_t n) {
    for (int32_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Which tensors differ from the snapshot: counts by kind of tensor. */
struct changes {
    int expert_a, expert_b, expert_c, selector, frozen_a, a_total;
};

static struct changes compare_tensors(struct method_run *mr, float **snap) {
    struct changes c = {0};
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        int diff = memcmp(t->data, snap[i], t->numel * sizeof(float)) != 0;
        if (strstr(t->name, ".a.weight")) {
            c.a_total++;
            c.expert_a += diff;
            c.frozen_a += t->grad == NULL;
        } else if (strstr(t->name, ".b.weight")) {
            c.expert_b += diff;
        } else if (strstr(t->name, ".c.weight")) {
            c.expert_c += diff;
        } else if (strncmp(t->name, "conpet.selector", 15) == 0) {
            c.selector += diff;
        }
    }
    return c;
}

/* Every tensor of mr bit-identical to the file's (those the file has). */
static int same_as_file(struct method_run *mr, const char *path, const char *contains) {
    struct st_file f;
    REQUIRE(st_open(&f, path) == 0, "st_open: %s", err_msg());
    int same = 1, seen = 0;
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (contains && !strstr(t->name, contains)) continue;
        const struct st_tensor *st = st_find(&f, t->name);
        if (!st) continue;
        float *v = xmalloc(t->numel * sizeof(float));
        REQUIRE(st_read_f32(&f, st, v, t->numel) == 0, "read: %s", err_msg());
        same &= memcmp(v, t->data, t->numel * sizeof(float)) == 0;
        seen++;
        free(v);
    }
    st_close(&f);
    return same && seen > 0;
}

/* told: the run tells each stage its training tasks (peft.stage_tasks/1), so only the new
 * task's expert (and, with two known tasks, the selector) is trainable at all. */
static void test_chain_dynamic(int told) {
    const char *kv_a[] = {"mode=dynamic", "target_modules=q_proj v_proj", NULL};
    const char *kv_b[] = {"mode=dynamic", "target_modules=q_proj v_proj", "init_from=prev", NULL};
    char *file_a = xasprintf("%s/a.safetensors", tmp_dir), *file_b = xasprintf("%s/b.safetensors", tmp_dir);
    const char *meta[] = {"peft.stage", "test", NULL};

    /* Stage A: task a alone. */
    const int32_t task_a[] = {0}, task_b[] = {1};
    stage_tasks = told ? task_a : NULL;
    n_stage_tasks = told ? 1 : 0;
    struct harness A;
    REQUIRE(h_open(&A, kv_a, NULL, 1) == 0, "create: %s", err_msg());
    uint64_t expert_entries = 0, trainable_a = method_run_trainable_count(A.mr);
    for (int32_t i = 0; i < method_run_tensor_count(A.mr); i++)
        if (strstr(method_run_tensor(A.mr, i)->name, ".a.weight"))
            expert_entries += method_run_tensor(A.mr, i)->numel;
    REQUIRE(method_run_begin(A.mr) == 0 && method_run_task_begin(A.mr, 0) == 0, "begin: %s", err_msg());
    const int32_t only_a[] = {0};
    train_steps(&A, only_a, 1, 4);
    CHECK(A.aux_passes == 0, "a stage with one task ran %d selector passes", A.aux_passes);
    REQUIRE(method_run_save(A.mr, file_a, meta) == 0, "save: %s", err_msg());
    h_close(&A);
    struct st_file fa;
    REQUIRE(st_open(&fa, file_a) == 0, "st_open: %s", err_msg());
    int saved_a = 0, saved_other = 0;
    for (int32_t i = 0; i < fa.n_tensors; i++) {
        saved_a += strstr(fa.tensors[i].name, ".a.weight") != NULL;
        saved_other += strstr(fa.tensors[i].name, ".b.weight") || strstr(fa.tensors[i].name, ".c.weight");
    }
    st_close(&fa);
    printf("chain (dynamic, stage tasks %s): stage A's file holds %d tensors of a's expert and "
           "%d of the others\n", told ? "told" : "not told", saved_a, saved_other);
    CHECK(saved_a == 8 && (told ? saved_other == 0 : saved_other == 16),
          "stage A saved %d tensors of a, %d of the others", saved_a, saved_other);

    /* Stage B: task b, a replayed. */
    stage_tasks = told ? task_b : NULL;
    n_stage_tasks = told ? 1 : 0;
    struct harness B;
    REQUIRE(h_open(&B, kv_b, file_a, 2) == 0, "create: %s", err_msg());
    uint64_t trainable_b = method_run_trainable_count(B.mr), selector_entries = 0;
    for (int32_t i = 0; i < method_run_tensor_count(B.mr); i++)
        if (strncmp(method_run_tensor(B.mr, i)->name, "conpet.selector", 15) == 0)
            selector_entries += method_run_tensor(B.mr, i)->numel;
    printf("chain (dynamic, stage tasks %s): trainable entries: stage A %llu, stage B %llu (an "
           "expert has %llu, the selector %llu)\n", told ? "told" : "not told",
           (unsigned long long)trainable_a, (unsigned long long)trainable_b,
           (unsigned long long)expert_entries, (unsigned long long)selector_entries);
    if (told)
        CHECK(trainable_a == expert_entries && trainable_b == expert_entries + selector_entries,
              "trainable entries %llu, %llu", (unsigned long long)trainable_a,
              (unsigned long long)trainable_b);
    else
        CHECK(trainable_a == 3 * expert_entries + selector_entries &&
                  trainable_b == 2 * expert_entries + selector_entries,
              "trainable entries %llu, %llu", (unsigned long long)trainable_a,
              (unsigned long long)trainable_b);
    REQUIRE(method_run_begin(B.mr) == 0, "begin: %s", err_msg());
    int a_loaded = same_as_file(B.mr, file_a, ".a.weight");
    float **start = snapshot(B.mr);
    REQUIRE(method_run_task_begin(B.mr, 1) == 0 && method_run_task_begin(B.mr, 0) == 0,
            "task_begin: %s", err_msg());
    const int32_t mixed[] = {1, 0};
    train_steps(&B, mixed, 2, 6);
    struct changes c = compare_tensors(B.mr, start);
    const float *ex = tensor(B.mr, "conpet.experts")->data;
    int a_still = same_as_file(B.mr, file_a, ".a.weight");
    printf("chain (dynamic, stage tasks %s): stage B starts with a's expert from A: %s; after 6 steps of b with "
           "a replayed: %d of %d tensors of a changed (%d frozen), of b %d changed, of c %d "
           "changed, of the selector %d changed; %d selector passes; conpet.experts = "
           "[%g %g %g]\n", told ? "told" : "not told", a_loaded ? "yes" : "NO", c.expert_a, c.a_total, c.frozen_a,
           c.expert_b, c.expert_c, c.selector, B.aux_passes, ex[0], ex[1], ex[2]);
    CHECK(a_loaded, "stage B did not start from A's expert");
    CHECK(c.a_total > 0 && c.expert_a == 0 && a_still && c.frozen_a == c.a_total,
          "a's expert changed after its task (%d of %d tensors; frozen %d)", c.expert_a,
          c.a_total, c.frozen_a);
    CHECK(c.expert_c == 0, "c's expert (in no batch) changed under weight decay");
    CHECK(c.expert_b > 0 && c.selector > 0, "b's expert or the selector did not train");
    CHECK(B.aux_passes == 6, "selector passes: %d", B.aux_passes);
    CHECK(ex[0] == 1.0f && ex[1] == 2.0f && ex[2] == 0.0f,
          "conpet.experts = [%g %g %g]", ex[0], ex[1], ex[2]);
    REQUIRE(method_run_save(B.mr, file_b, meta) == 0, "save: %s", err_msg());
    snapshot_free(start, method_run_tensor_count(B.mr));
    h_close(&B);

    /* A resumed B (told the same tasks): its checkpoint, not init_from, decides. */
    struct harness R;
    REQUIRE(h_open(&R, kv_b, file_a, 3) == 0, "create: %s", err_msg());
    REQUIRE(method_run_load(R.mr, file_b) == 0, "load: %s", err_msg());
    REQUIRE(method_run_begin(R.mr) == 0, "begin: %s", err_msg());
    int resumed = same_as_file(R.mr, file_b, NULL);
    printf("chain (dynamic, stage tasks %s): a resumed stage B keeps its checkpoint: %s\n",
           told ? "told" : "not told", resumed ? "yes" : "NO");
    CHECK(resumed, "stage_begin overwrote a resumed stage's tensors");
    h_close(&R);
    stage_tasks = NULL;
    n_stage_tasks = 0;

    /* Refusals against A's file. */
    const char *kv_static[] = {"mode=static", "target_modules=q_proj v_proj", "init_from=prev", NULL};
    const char *kv_r[] = {"mode=dynamic", "target_modules=q_proj v_proj", "init_from=prev", "r=8", NULL};
    int rc = h_open(&R, kv_static, file_a, 4);
    CHECK(rc != 0 && strstr(err_msg(), "mode"), "static from a dynamic stage: '%s'", err_msg());
    printf("refused: %s\n", err_msg());
    h_close(&R);
    rc = h_open(&R, kv_r, file_a, 4);
    CHECK(rc != 0 && strstr(err_msg(), "r = 8"), "another rank: '%s'", err_msg());
    printf("refused: %s\n", err_msg());
    h_close(&R);
    free(file_a);
    free(file_b);
}

/* The published order: stage A trains task a; stage S (phase = selector, init_from A) trains
 * only the selector with b routable; stage E (phase = experts, init_from S) trains only b's
 * expert with the selector frozen. */
static void test_chain_phases(void) {
    const char *kv_a[] = {"mode=dynamic", "target_modules=q_proj v_proj", NULL};
    const char *kv_s[] = {"mode=dynamic", "target_modules=q_proj v_proj", "init_from=prev",
                          "phase=selector", NULL};
    const char *kv_e[] = {"mode=dynamic", "target_modules=q_proj v_proj", "init_from=prev",
                          "phase=experts", NULL};
    char *file_a = xasprintf("%s/pa.safetensors", tmp_dir), *file_s = xasprintf("%s/ps.safetensors", tmp_dir);
    const char *meta[] = {"peft.stage", "test", NULL};
    const int32_t task_a[] = {0}, task_b[] = {1}, only_a[] = {0}, mixed[] = {1, 0};
    stage_tasks = task_a;
    n_stage_tasks = 1;
    struct harness A, S, E;
    REQUIRE(h_open(&A, kv_a, NULL, 1) == 0, "create: %s", err_msg());
    REQUIRE(method_run_begin(A.mr) == 0 && method_run_task_begin(A.mr, 0) == 0, "begin: %s", err_msg());
    train_steps(&A, only_a, 1, 4);
    REQUIRE(method_run_save(A.mr, file_a, meta) == 0, "save: %s", err_msg());
    uint64_t expert_entries = method_run_trainable_count(A.mr);
    h_close(&A);

    stage_tasks = task_b;
    REQUIRE(h_open(&S, kv_s, file_a, 2) == 0, "create: %s", err_msg());
    uint64_t trainable_s = method_run_trainable_count(S.mr), selector_entries = 0;
    for (int32_t i = 0; i < method_run_tensor_count(S.mr); i++)
        if (strncmp(method_run_tensor(S.mr, i)->name, "conpet.selector", 15) == 0)
            selector_entries += method_run_tensor(S.mr, i)->numel;
    REQUIRE(method_run_begin(S.mr) == 0, "begin: %s", err_msg());
    float **start = snapshot(S.mr);
    REQUIRE(method_run_task_begin(S.mr, 1) == 0 && method_run_task_begin(S.mr, 0) == 0, "task_begin");
    train_steps(&S, mixed, 2, 6);
    struct changes cs = compare_tensors(S.mr, start);
    snapshot_free(start, method_run_tensor_count(S.mr));
    const float *ex = tensor(S.mr, "conpet.experts")->data;
    float ex_s[3] = {ex[0], ex[1], ex[2]};
    REQUIRE(method_run_save(S.mr, file_s, meta) == 0, "save: %s", err_msg());
    int s_passes = S.aux_passes;
    h_close(&S);
    struct st_file fs;
    REQUIRE(st_open(&fs, file_s) == 0, "st_open: %s", err_msg());
    int saved_b = 0;
    for (int32_t i = 0; i < fs.n_tensors; i++) saved_b += strstr(fs.tensors[i].name, ".b.weight") != NULL;
    st_close(&fs);
    printf("phases: selector stage: %llu trainable entries (the selector has %llu); after 6 "
           "steps a's expert %d changed, b's %d, the selector %d tensors; %d selector passes; "
           "conpet.experts = [%g %g %g]; b's expert tensors saved: %d\n",
           (unsigned long long)trainable_s, (unsigned long long)selector_entries, cs.expert_a,
           cs.expert_b, cs.selector, s_passes, ex_s[0], ex_s[1], ex_s[2], saved_b);
    CHECK(trainable_s == selector_entries && cs.expert_a == 0 && cs.expert_b == 0 &&
              cs.selector > 0 && s_passes == 6,
          "selector stage: trainable %llu, changed a %d b %d selector %d, passes %d",
          (unsigned long long)trainable_s, cs.expert_a, cs.expert_b, cs.selector, s_passes);
    CHECK(ex_s[0] == 1.0f && ex_s[1] == 3.0f && ex_s[2] == 0.0f && saved_b == 0,
          "selector stage: conpet.experts [%g %g %g], b's tensors saved %d", ex_s[0], ex_s[1],
          ex_s[2], saved_b);

    REQUIRE(h_open(&E, kv_e, file_s, 3) == 0, "create: %s", err_msg());
    uint64_t trainable_e = method_run_trainable_count(E.mr);
    REQUIRE(method_run_begin(E.mr) == 0, "begin: %s", err_msg());
    /* the selector's LoRA, and the head's rows of a and b (c's is this stage's fresh one) */
    int sel_loaded = same_as_file(E.mr, file_s, ".lora_");
    {
        struct st_file f;
        REQUIRE(st_open(&f, file_s) == 0, "st_open: %s", err_msg());
        const char *names[] = {"conpet.selector.head.weight", "conpet.selector.head.bias"};
        for (int k = 0; k < 2; k++) {
            struct mtensor *t = tensor(E.mr, names[k]);
            float *v = xmalloc(t->numel * sizeof(float));
            REQUIRE(st_read_f32(&f, st_find(&f, names[k]), v, t->numel) == 0, "read: %s", err_msg());
            uint64_t row = t->numel / N_TASKS; /* rows a and b are the first two */
            sel_loaded &= memcmp(v, t->data, 2 * row * sizeof(float)) == 0;
            free(v);
        }
        st_close(&f);
    }
    start = snapshot(E.mr);
    REQUIRE(method_run_task_begin(E.mr, 1) == 0 && method_run_task_begin(E.mr, 0) == 0, "task_begin");
    train_steps(&E, mixed, 2, 6);
    struct changes ce = compare_tensors(E.mr, start);
    snapshot_free(start, method_run_tensor_count(E.mr));
    ex = tensor(E.mr, "conpet.experts")->data;
    printf("phases: experts stage: %llu trainable entries (an expert has %llu); starts from the "
           "selector stage's selector: %s; after 6 steps a's expert %d changed, b's %d, the "
           "selector %d tensors; %d selector passes (routing); conpet.experts = [%g %g %g]\n",
           (unsigned long long)trainable_e, (unsigned long long)expert_entries,
           sel_loaded ? "yes" : "NO", ce.expert_a, ce.expert_b, ce.selector, E.aux_passes, ex[0],
           ex[1], ex[2]);
    CHECK(trainable_e == expert_entries && sel_loaded && ce.expert_a == 0 && ce.expert_b > 0 &&
              ce.selector == 0 && E.aux_passes == 6,
          "experts stage: trainable %llu, selector loaded %d, changed a %d b %d selector %d",
          (unsigned long long)trainable_e, sel_loaded, ce.expert_a, ce.expert_b, ce.selector);
    CHECK(ex[0] == 1.0f && ex[1] == 2.0f && ex[2] == 0.0f, "experts stage: conpet.experts [%g %g %g]",
          ex[0], ex[1], ex[2]);
    h_close(&E);
    stage_tasks = NULL;
    n_stage_tasks = 0;
    const char *kv_bad[] = {"mode=static", "phase=selector", NULL};
    int rc = h_open(&E, kv_bad, NULL, 4);
    CHECK(rc != 0 && strstr(err_msg(), "phase"), "phase with mode static: '%s'", err_msg());
    printf("refused: %s\n", err_msg());
    h_close(&E);
    free(file_a);
    free(file_s);
}

static void test_chain_static(void) {
    const char *kv_a[] = {"mode=static", "r=4", NULL};
    const char *kv_b[] = {"mode=static", "r=4", "init_from=prev", NULL};
    char *file_a = xasprintf("%s/sa.safetensors", tmp_dir);
    const char *meta[] = {"peft.stage", "test", NULL};
    struct harness A, B;
    REQUIRE(h_open(&A, kv_a, NULL, 1) == 0, "create: %s", err_msg());
    REQUIRE(method_run_begin(A.mr) == 0 && method_run_task_begin(A.mr, 0) == 0, "begin: %s", err_msg());
    const int32_t only_a[] = {0};
    train_steps(&A, only_a, 1, 3);
    REQUIRE(method_run_save(A.mr, file_a, meta) == 0, "save: %s", err_msg());
    h_close(&A);
    REQUIRE(h_open(&B, kv_b, file_a, 2) == 0, "create: %s", err_msg());
    REQUIRE(method_run_begin(B.mr) == 0, "begin: %s", err_msg());
    int loaded = same_as_file(B.mr, file_a, "lora_");
    int trainable = 1;
    for (int32_t i = 0; i < method_run_tensor_count(B.mr); i++)
        if (strstr(method_run_tensor(B.mr, i)->name, "lora_")) trainable &= method_run_tensor(B.mr, i)->grad != NULL;
    const int32_t mixed[] = {1, 0};
    REQUIRE(method_run_task_begin(B.mr, 1) == 0, "task_begin: %s", err_msg());
    train_steps(&B, mixed, 2, 2);
    int moved = !same_as_file(B.mr, file_a, "lora_B");
    printf("chain (static): stage B continues A's LoRA: %s, trainable: %s, trains on: %s; "
           "no selector passes: %s\n", loaded ? "yes" : "NO", trainable ? "yes" : "NO",
           moved ? "yes" : "NO", B.aux_passes == 0 ? "yes" : "NO");
    CHECK(loaded && trainable && moved && B.aux_passes == 0, "static chain");
    h_close(&B);

    /* A source with no ConPET state is refused when the stage starts. */
    const char *kv_none[] = {"mode=static", "init_from=prev", NULL};
    char *empty = xasprintf("%s/empty.safetensors", tmp_dir);
    struct st_writer *w = st_writer_new();
    float one = 1.0f;
    int64_t shape[1] = {1};
    st_writer_add_f32(w, "other", 1, shape, &one);
    REQUIRE(st_writer_save(w, empty) == 0, "write: %s", err_msg());
    st_writer_free(w);
    REQUIRE(h_open(&B, kv_none, empty, 2) == 0, "create: %s", err_msg());
    int rc = method_run_begin(B.mr);
    CHECK(rc != 0 && strstr(err_msg(), "no ConPET state"), "no state: '%s'", err_msg());
    printf("refused: %s\n", err_msg());
    h_close(&B);
    const char *bad[][3] = {{"r=0", NULL, NULL}, {"top_k=0", NULL, NULL}, {"lora_alpha=0", NULL, NULL}};
    for (int i = 0; i < 3; i++) {
        rc = h_open(&B, bad[i], NULL, 2);
        CHECK(rc != 0, "%s accepted", bad[i][0]);
        printf("refused %s: %s\n", bad[i][0], err_msg());
        h_close(&B);
    }
    free(empty);
    free(file_a);
}

/* ---- replay ---------------------------------------------------------------------------- */

/* Examples of memory task k with label `label`, and whether they are distinct. */
static int memory_label_count(const struct replay_memory *m, const struct dataset *d, int32_t k,
                              const char *label) {
    int n = 0;
    for (size_t i = 0; i < m->n_ex[k]; i++) n += strcmp(d->ex[m->ex[k][i]].completion, label) == 0;
    return n;
}

static int memory_well_formed(const struct replay_memory *m, const struct dataset *d) {
    for (int32_t k = 0; k < m->n_tasks; k++)
        for (size_t i = 0; i < m->n_ex[k]; i++) {
            if (d->ex[m->ex[k][i]].task != m->task[k]) return 0;
            for (size_t j = 0; j < i; j++)
                if (m->ex[k][j] == m->ex[k][i]) return 0;
        }
    return 1;
}

static void test_replay(void) {
    struct dataset d = {0};
    struct task_table tt = {0};
    const char *names[] = {"cls_color", "cls_size", "cls_shape", "cls_animal"};
    for (int i = 0; i < 4; i++)
        REQUIRE(synth_generate(names[i], 5, 0, 400, &d, &tt) == 0, "synth: %s", err_msg());
    const int32_t old[] = {0, 1, 2}; /* color (3 labels), size (2), shape (2) */
    const char *labels[3][3] = {{"red", "green", "blue"}, {"small", "large", NULL}, {"circle", "square", NULL}};

    /* The bound: 20 per label. */
    struct replay_memory m, m2, m3;
    REQUIRE(replay_memory_build(&m, &d, &tt, old, 3, 20, 9) == 0, "build: %s", err_msg());
    int bound_ok = memory_well_formed(&m, &d), max_label = 0;
    for (int32_t k = 0; k < 3; k++)
        for (int l = 0; l < 3 && labels[k][l]; l++) {
            int n = memory_label_count(&m, &d, k, labels[k][l]);
            bound_ok &= n == 20;
            max_label = n > max_label ? n : max_label;
        }
    printf("replay memory, 20 per label: %zu + %zu + %zu examples, at most %d of a label, "
           "well formed: %s\n", m.n_ex[0], m.n_ex[1], m.n_ex[2], max_label,
           memory_well_formed(&m, &d) ? "yes" : "NO");
    CHECK(bound_ok && m.n_ex[0] == 60 && m.n_ex[1] == 40 && m.n_ex[2] == 40,
          "memory bound: %zu %zu %zu", m.n_ex[0], m.n_ex[1], m.n_ex[2]);

    /* Full memory, and a bound above what there is. */
    REQUIRE(replay_memory_build(&m2, &d, &tt, old, 3, 0, 9) == 0, "build: %s", err_msg());
    REQUIRE(replay_memory_build(&m3, &d, &tt, old, 3, 100000, 9) == 0, "build: %s", err_msg());
    int full = memory_well_formed(&m2, &d);
    for (int32_t k = 0; k < 3; k++) full &= m2.n_ex[k] == 400 && m3.n_ex[k] == 400;
    printf("replay memory, full: %zu %zu %zu; bound above the data: %zu %zu %zu\n", m2.n_ex[0],
           m2.n_ex[1], m2.n_ex[2], m3.n_ex[0], m3.n_ex[1], m3.n_ex[2]);
    CHECK(full, "full memory is not every example");
    replay_memory_free(&m2);
    replay_memory_free(&m3);

    /* Determinism; a task's memory does not depend on the others listed, the seed matters. */
    const int32_t shape_only[] = {2};
    REQUIRE(replay_memory_build(&m2, &d, &tt, old, 3, 20, 9) == 0, "build");
    REQUIRE(replay_memory_build(&m3, &d, &tt, shape_only, 1, 20, 9) == 0, "build");
    int same = 1;
    for (int32_t k = 0; k < 3; k++)
        same &= m2.n_ex[k] == m.n_ex[k] && memcmp(m2.ex[k], m.ex[k], m.n_ex[k] * sizeof(size_t)) == 0;
    int alone = m3.n_ex[0] == m.n_ex[2] && memcmp(m3.ex[0], m.ex[2], m.n_ex[2] * sizeof(size_t)) == 0;
    replay_memory_free(&m2);
    replay_memory_free(&m3);
    REQUIRE(replay_memory_build(&m2, &d, &tt, old, 3, 20, 10) == 0, "build");
    int differs = memcmp(m2.ex[0], m.ex[0], m.n_ex[0] * sizeof(size_t)) != 0;
    replay_memory_free(&m2);
    printf("replay memory: rebuilt identical: %s; a task's memory alone = in a list: %s; "
           "another seed differs: %s\n", same ? "yes" : "NO", alone ? "yes" : "NO",
           differs ? "yes" : "NO");
    CHECK(same && alone && differs, "memory determinism");

    /* The mix of a batch: half new (the pool: cls_animal), old tasks and entries uniform. */
    size_t *pool = xmalloc(sizeof *pool * d.n), n_pool = 0;
    for (size_t i = 0; i < d.n; i++)
        if (d.ex[i].task == 3) pool[n_pool++] = i;
    enum { BATCH = 32, N_BATCHES = 3000 };
    int32_t n_old = replay_count(0.5, 0, 3, 1, BATCH);
    CHECK(n_old == 16, "replay 0.5 of 32: %d", n_old);
    CHECK(replay_count(0, 1, 3, 1, BATCH) == 24 && replay_count(0.5, 0, 0, 1, BATCH) == 0 &&
              replay_count(0, 1, 1, 1, 7) == 4,
          "replay counts: joint %d, no tasks %d", replay_count(0, 1, 3, 1, BATCH),
          replay_count(0.5, 0, 0, 1, BATCH));
    struct rng g;
    rng_seed(&g, 44);
    size_t idx[BATCH];
    int64_t per_task[3] = {0}, *per_entry = xcalloc(m.n_ex[0], sizeof *per_entry);
    int wrong_mix = 0;
    for (int bt = 0; bt < N_BATCHES; bt++) {
        replay_draw(&m, pool, n_pool, BATCH, n_old, &g, idx);
        int n_new = 0;
        for (int i = 0; i < BATCH; i++) {
            int32_t t = d.ex[idx[i]].task;
            n_new += t == 3;
            if (t == 3) continue;
            per_task[t]++;
            if (t == 0)
                for (size_t q = 0; q < m.n_ex[0]; q++) per_entry[q] += m.ex[0][q] == idx[i];
        }
        wrong_mix += n_new != BATCH - n_old;
    }
    double total = (double)N_BATCHES * n_old, chi_task = 0, chi_entry = 0;
    for (int t = 0; t < 3; t++) chi_task += pow(per_task[t] - total / 3, 2) / (total / 3);
    double e_entry = (double)per_task[0] / (double)m.n_ex[0];
    for (size_t q = 0; q < m.n_ex[0]; q++) chi_entry += pow(per_entry[q] - e_entry, 2) / e_entry;
    /* 0.1% critical values: chi-square with 2 and 59 degrees of freedom. */
    printf("replay mix over %d batches of %d: batches not exactly %d new: %d; old tasks %lld %lld "
           "%lld, chi2 %.2f (2 dof, 0.1%% critical 13.82); cls_color's %zu memory entries: "
           "chi2 %.1f (%zu dof, 0.1%% critical 99.61)\n", N_BATCHES, BATCH, BATCH - n_old,
           wrong_mix, (long long)per_task[0], (long long)per_task[1], (long long)per_task[2],
           chi_task, m.n_ex[0], chi_entry, m.n_ex[0] - 1);
    CHECK(wrong_mix == 0, "%d batches with another mix", wrong_mix);
    CHECK(chi_task < 13.82, "old tasks not uniform: chi2 %.2f", chi_task);
    CHECK(chi_entry < 99.61, "memory entries not uniform: chi2 %.1f", chi_entry);
    free(per_entry);

    /* Without replay the draws are the plain sampler's, in the same order. */
    struct rng g1, g2;
    rng_seed(&g1, 8);
    rng_seed(&g2, 8);
    replay_draw(NULL, pool, n_pool, BATCH, 0, &g1, idx);
    int plain = 1;
    for (int i = 0; i < BATCH; i++) plain &= idx[i] == pool[rng_below(&g2, n_pool)];
    CHECK(plain, "replay off is not the plain sampler");

    /* The memory file: the memory's examples in order. */
    char *path = xasprintf("%s/replay_memory.jsonl", tmp_dir);
    REQUIRE(replay_memory_save(&m, &d, &tt, path) == 0, "save: %s", err_msg());
    struct dataset back = {0};
    struct task_table tt2 = {0};
    REQUIRE(data_load_jsonl(path, &back, &tt2) == 0, "load: %s", err_msg());
    int file_ok = back.n == m.n_ex[0] + m.n_ex[1] + m.n_ex[2];
    for (size_t i = 0, k = 0, j = 0; file_ok && i < back.n; i++) {
        const struct example *e = &d.ex[m.ex[k][j]];
        file_ok = strcmp(back.ex[i].prompt, e->prompt) == 0 && strcmp(back.ex[i].completion, e->completion) == 0 &&
                  strcmp(tt2.names[back.ex[i].task], tt.names[e->task]) == 0;
        if (++j == m.n_ex[k]) {
            k++;
            j = 0;
        }
    }
    printf("replay memory file: %zu examples read back, same as the memory: %s\n", back.n,
           file_ok ? "yes" : "NO");
    CHECK(file_ok, "memory file differs");
    dataset_free(&back);
    task_table_free(&tt2);
    free(path);

    const int32_t none[] = {3};
    struct dataset empty = {0};
    CHECK(replay_memory_build(&m2, &empty, &tt, none, 1, 20, 9) != 0 && strstr(err_msg(), "cls_animal"),
          "a task without examples: '%s'", err_msg());
    replay_memory_free(&m2);
    replay_memory_free(&m);
    free(pool);
    dataset_free(&d);
    task_table_free(&tt);
}

/* ---- labels ---------------------------------------------------------------------------- */

/* Sum of the target log-probabilities of one (prompt, completion) alone, and their count. */
static double alone_logprob(struct run *r, struct method_run *mr, const char *prompt,
                            const char *completion, int32_t task, int64_t *n_tok) {
    struct dataset one = {0};
    dataset_add(&one, task, prompt, completion);
    size_t i0 = 0;
    struct batch b = {0};
    batch_make(&b, &one, &i0, 1, r->model.cfg.max_seq);
    struct model_acts *a = model_acts_new();
    float loss;
    REQUIRE(method_run_batch_begin(mr, &b, 0, 0) == 0 &&
                model_forward(&r->model, a, b.tokens, b.targets, 1, b.T, method_run_hooks(mr, 0), &loss) == 0,
            "forward: %s", err_msg());
    const float *lg = model_logits(a);
    int32_t V = r->model.cfg.vocab;
    double lp = 0;
    *n_tok = 0;
    for (int32_t t = 0; t < b.T; t++) {
        if (b.targets[t] < 0) continue;
        const float *row = lg + (size_t)t * V;
        double mx = row[0], s = 0;
        for (int32_t v = 1; v < V; v++) mx = fmax(mx, row[v]);
        for (int32_t v = 0; v < V; v++) s += exp((double)row[v] - mx);
        lp += row[b.targets[t]] - mx - log(s);
        (*n_tok)++;
    }
    model_acts_free(a);
    batch_free(&b);
    dataset_free(&one);
    return lp;
}

static void test_labels(void) {
    struct run r;
    memset(&r, 0, sizeof r);
    r.cfg.path = (char *)"test.ini";
    struct model_config mc = {.vocab = TOK_VOCAB, .d_model = 16, .n_layers = 2, .n_heads = 2,
                              .n_kv_heads = 1, .head_dim = 8, .d_ff = 24, .max_seq = 32,
                              .rms_eps = 1e-5f, .rope_theta = 100.0f, .tied = 1};
    REQUIRE(model_init(&r.model, &mc) == 0, "model_init: %s", err_msg());
    model_init_random(&r.model, 3, 0.3f);
    /* Two tasks with labels of one length each, so that a random model's choice varies. */
    const char *names[] = {"pair", "duo"};
    const char *labels[] = {"xa", "xb", "xc", "yd", "ye"}; /* in order of first appearance */
    struct rng gd;
    rng_seed(&gd, 2);
    for (int split = 0; split < 2; split++)
        for (int i = 0; i < (split ? 24 : 10); i++) {
            int k = i % 2, l = k == 0 ? i / 2 % 3 : 3 + i / 2 % 2;
            char prompt[16];
            for (int c = 0; c < 6; c++) prompt[c] = (char)('a' + rng_below(&gd, 26));
            prompt[6] = '=';
            prompt[7] = 0;
            int32_t id = task_table_id(&r.tasks, names[k]);
            dataset_add(split ? &r.eval : &r.train, id, prompt, labels[l]);
        }
    int32_t eval_tasks[2] = {0, 1};
    struct stage s;
    memset(&s, 0, sizeof s);
    s.name = (char *)"t";
    s.section = (char *)"stage.t";
    s.eval_tasks = eval_tasks;
    s.n_eval_tasks = 2;
    s.eval_batch_size = 11; /* not a multiple of the 5 labels: 2 examples, padded rows */
    s.eval_labels = 1;
    /* A static LoRA moved away from zero, so the hooks take part. */
    struct mt_cfg cfg;
    const char *kv[] = {"mode=static", "target_modules=all-linear", NULL};
    cfg_with(&cfg, kv);
    struct method_env env = mt_env(&r.tasks, 4);
    struct method_run *mr;
    REQUIRE(method_run_create(&mr, conpet, &r.model, &env, cfg.kv, cfg.n) == 0, "create: %s", err_msg());
    REQUIRE(method_run_begin(mr) == 0, "begin: %s", err_msg());
    struct rng g;
    rng_seed(&g, 6);
    for (int32_t i = 0; i < method_run_tensor_count(mr); i++) {
        struct mtensor *t = method_run_tensor(mr, i);
        if (t->desc.flags & PEFT_TENSOR_TRAINABLE)
            for (uint64_t j = 0; j < t->numel; j++) t->data[j] += rng_uniform(&g, -0.3f, 0.3f);
    }
    struct eval_result out[2];
    int rc = run_eval(&r, &s, mr, out);
    CHECK(rc == 0, "run_eval: %s", err_msg());
    /* One example and one label at a time. */
    for (int k = 0; k < 2 && rc == 0; k++) {
        int correct = 0, n = 0, hist[5] = {0};
        int64_t tokens = 0;
        double nll = 0;
        for (size_t i = 0; i < r.eval.n; i++) {
            const struct example *e = &r.eval.ex[i];
            if (e->task != eval_tasks[k]) continue;
            int best = 0, own = -1;
            double sc[5];
            for (int l = 0; l < 5; l++) {
                int64_t nt;
                sc[l] = alone_logprob(&r, mr, e->prompt, labels[l], e->task, &nt);
                if (sc[l] > sc[best]) best = l;
                if (strcmp(labels[l], e->completion) == 0) {
                    own = l;
                    nll -= sc[l];
                    tokens += nt;
                }
            }
            hist[best]++;
            correct += best == own;
            n++;
        }
        double acc = (double)correct / n, loss = nll / (double)tokens;
        printf("labels %s: run_eval accuracy %.4f loss %.6f; one at a time %.4f %.6f; predicted "
               "xa %d xb %d xc %d yd %d ye %d\n", names[k], out[k].accuracy,
               out[k].loss, acc, loss, hist[0], hist[1], hist[2], hist[3], hist[4]);
        CHECK(hist[0] + hist[1] + hist[2] < n && hist[3] + hist[4] < n,
              "%s: every prediction from one task's labels", names[k]);
        CHECK(out[k].n == n && fabs(out[k].accuracy - acc) < 1e-12 &&
                  fabs(out[k].loss - loss) < 1e-5 * fmax(1.0, loss),
              "%s: run_eval %.4f %.6f, alone %.4f %.6f", names[k], out[k].accuracy, out[k].loss,
              acc, loss);
    }
    /* Too many labels: a task that is not a classification. */
    REQUIRE(synth_generate("add", 2, 0, 200, &r.train, &r.tasks) == 0 &&
                synth_generate("add", 2, 1, 20, &r.eval, &r.tasks) == 0, "synth");
    eval_tasks[1] = 2;
    rc = run_eval(&r, &s, mr, out);
    CHECK(rc != 0 && strstr(err_msg(), "eval_labels"), "add with eval_labels: '%s'", err_msg());
    printf("refused: %s\n", err_msg());
    method_run_free(mr);
    mt_cfg_free(&cfg);
    dataset_free(&r.train);
    dataset_free(&r.eval);
    task_table_free(&r.tasks);
    model_free(&r.model);
}

int main(int argc, char **argv) {
    REQUIRE(mkdtemp(tmp_dir), "mkdtemp failed");
    struct plugin_registry reg;
    registry_init(&reg, NULL);
    conpet = mt_method(&reg, argc, argv, "conpet");
    double t0 = now_seconds();
    test_grads(1);
    test_grads(2);
    test_routing(1, 1);
    test_routing(2, 1);
    test_routing(1, 0);
    test_label_loss();
    test_chain_dynamic(0);
    test_chain_dynamic(1);
    test_chain_phases();
    test_chain_static();
    test_replay();
    test_labels();
    printf("%.1f s\n", now_seconds() - t0);
    remove_tree(tmp_dir);
    registry_free(&reg);
    return check_report("conpet_unit");
}
