/* Fuzz target: a run file, read (cfg_load) and checked whole (run_load_cfg: sections, keys,
 * types, tasks, stages, method keys against the plugins). A file whose model or data would be
 * big (a model over 512 wide or 8 layers, thousands of examples per task) is only read:
 * building big models and data sets is not what is tested here. */
#include "config.h"
#include "fuzz_input.h"
#include "run.h"

static int model_is_small(struct cfg *c) {
    int64_t d = 128, l = 4, v = 259, f = 0, nt = 2000, ne = 100;
    cfg_int(c, "model", "d_model", d, 0, INT64_MAX, &d);
    cfg_int(c, "model", "n_layers", l, 0, INT64_MAX, &l);
    cfg_int(c, "model", "vocab", v, 0, INT64_MAX, &v);
    cfg_int(c, "model", "d_ff", d * 3, 0, INT64_MAX, &f);
    cfg_int(c, "data", "n_train", nt, 0, INT64_MAX, &nt);
    cfg_int(c, "data", "n_eval", ne, 0, INT64_MAX, &ne);
    for (int32_t i = 0; i < c->n; i++) c->e[i].used = 0;
    err_clear();
    return cfg_find(c, "model", "path") == NULL && d <= 512 && l <= 8 && v <= 4096 && f <= 2048 &&
           nt <= 2000 && ne <= 200;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct cfg c;
    if (cfg_load(&c, fuzz_file("run.ini", data, size)) != 0) {
        err_clear();
        return 0;
    }
    if (!model_is_small(&c)) {
        cfg_free(&c);
        return 0;
    }
    struct run r;
    run_load_cfg(&r, &c, NULL); /* takes c over */
    run_free(&r);
    err_clear();
    return 0;
}
