/* cmd_init_model.c: peft init-model: a checkpoint folder with random weights from a config.json
 * (a real model's, so that its shapes can be tried without its weights). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "core/core.h"
#include "io/io.h"
#include "model/model.h"

/* The token ids generation stops at, kept from the source config (our writer has no use for
 * them, a reader of the folder does). */
static int copy_token_ids(const char *src_path, const char *dir) {
    char *src = NULL, *dst = NULL;
    size_t n_src = 0, n_dst = 0;
    char *dst_path = path_join(dir, "config.json");
    int rc = file_read_all(src_path, &src, &n_src) || file_read_all(dst_path, &dst, &n_dst) ? -1 : 0;
    cJSON *from = rc ? NULL : cJSON_Parse(src), *to = rc ? NULL : cJSON_Parse(dst);
    if (!rc && from && to) {
        static const char *keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
        for (size_t k = 0; k < 3; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, keys[k]);
            if (v && !cJSON_IsNull(v)) cJSON_AddItemToObject(to, keys[k], cJSON_Duplicate(v, 1));
        }
        char *text = cJSON_Print(to);
        char *line = xasprintf("%s\n", text);
        rc = file_write_atomic(dst_path, line, strlen(line));
        free(line);
        cJSON_free(text);
    }
    cJSON_Delete(from);
    cJSON_Delete(to);
    free(src);
    free(dst);
    free(dst_path);
    return rc;
}

static int init_model_main(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    int64_t layers = 0, seed = 1;
    double std = 0.02;
    int32_t dtype = ST_F32;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--layers") == 0 && v) {
            i++;
            if (parse_i64(v, &layers) || layers < 1 || layers > 1024) {
                err_set("init-model: --layers: expected 1 to 1024, got '%s'", v);
                return cli_fail();
            }
        } else if (strcmp(a, "--seed") == 0 && v) {
            i++;
            if (parse_i64(v, &seed) || seed < 0) {
                err_set("init-model: --seed: expected a non-negative integer, got '%s'", v);
                return cli_fail();
            }
        } else if (strcmp(a, "--std") == 0 && v) {
            i++;
            char *end;
            std = strtod(v, &end);
            if (*end || !(std >= 0 && std <= 10)) {
                err_set("init-model: --std: expected a number in [0, 10], got '%s'", v);
                return cli_fail();
            }
        } else if (strcmp(a, "--dtype") == 0 && v) {
            i++;
            if (strcmp(v, "f32") == 0) dtype = ST_F32;
            else if (strcmp(v, "bf16") == 0) dtype = ST_BF16;
            else if (strcmp(v, "f16") == 0) dtype = ST_F16;
            else {
                err_set("init-model: --dtype: expected f32, bf16 or f16, got '%s'", v);
                return cli_fail();
            }
        } else if (a[0] == '-' && a[1] == '-') {
            return cli_unexpected(&cmd_init_model, a);
        } else if (!config) {
            config = a;
        } else if (!out) {
            out = a;
        } else {
            return cli_unexpected(&cmd_init_model, a);
        }
    }
    if (!config || !out) {
        err_set("init-model: give CONFIG.json and OUT_DIR (peft init-model --help)");
        return cli_fail();
    }
    char *existing = path_join(out, "config.json");
    int exists = file_exists(existing);
    free(existing);
    if (exists) {
        err_set("%s: already holds a config.json; choose another folder", out);
        return cli_fail();
    }
    struct model_config c;
    if (hf_config_load_file(config, &c)) return cli_fail();
    if (layers > 0) c.n_layers = (int32_t)layers;
    struct model m = {0};
    if (model_config_check(&c) || model_init(&m, &c)) {
        err_prefix("%s", config);
        return cli_fail();
    }
    model_init_random(&m, (uint64_t)seed, (float)std);
    int rc = hf_model_save_as(out, &m, NULL, dtype) || copy_token_ids(config, out);
    if (rc == 0)
        printf("wrote %s: %d layers, %.1f M parameters (random, std %g, seed %lld, %s)\n", out,
               (int)c.n_layers, (double)m.n_params / 1e6, std, (long long)seed, st_dtype_name(dtype));
    model_free(&m);
    return rc ? cli_fail() : 0;
}

const struct command cmd_init_model = {
    "init-model", "CONFIG.json OUT_DIR [--layers N] [--seed S] [--std X] [--dtype T]",
    "Write a checkpoint folder with random weights for a model's config.json.",
    "Reads a Hugging Face config.json (a family peft supports), optionally with fewer layers,\n"
    "and writes OUT_DIR/config.json and OUT_DIR/model.safetensors (F32, or --dtype) with weights from\n"
    "N(0, std^2) (norms at 1), as `[model] path` reads them. For trying a model's shapes,\n"
    "tokenizer and templates on a CPU without its weights: copy its tokenizer.json and\n"
    "tokenizer_config.json beside them.\n"
    "\n"
    "options:\n"
    "  --layers N   keep N decoder layers instead of the config's\n"
    "  --seed S     seed of the weights (default 1)\n"
    "  --std X      standard deviation of the weights (default 0.02)\n"
    "  --dtype T    f32 (default), bf16 or f16, as released checkpoints store them\n"
    "  -h, --help   this help\n"
    "\n"
    "example:\n"
    "  peft init-model SmolLM2-135M/config.json models/smol2 --layers 2\n",
    init_model_main};
