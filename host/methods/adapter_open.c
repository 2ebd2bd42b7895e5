/* adapter_open.c: an adapter file, stage folder or HF PEFT folder as a live method run (see
 * adapter_open.h). */
#include "adapter_open.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_meta.h"
#include "io/io.h"
#include "peft_hf.h"

char *adapter_file_of(const char *path, int *hf) {
    *hf = 0;
    if (!dir_exists(path)) return xstrdup(path);
    char *file = path_join(path, "adapter.safetensors");
    if (file_exists(file)) return file;
    free(file);
    char *config = path_join(path, "adapter_config.json");
    *hf = file_exists(config);
    free(config);
    return *hf ? NULL : path_join(path, "adapter.safetensors");
}

/* "peft.tasks" (a JSON array of names) into tasks, in order. */
static int tasks_from_meta(const struct st_file *f, struct task_table *tasks) {
    const char *text = st_meta(f, "peft.tasks");
    if (!text) return 0;
    cJSON *j = cJSON_Parse(text);
    int rc = cJSON_IsArray(j) ? 0 : err_set("%s: metadata peft.tasks: not a JSON array of names", f->path);
    for (const cJSON *k = rc ? NULL : j->child; k && rc == 0; k = k->next)
        if (!cJSON_IsString(k) || task_table_id(tasks, k->valuestring) != tasks->n - 1)
            rc = err_set("%s: metadata peft.tasks: expected distinct task names", f->path);
    cJSON_Delete(j);
    return rc;
}

static int open_hf(struct plugin_registry *reg, struct model *m, const char *dir,
                   struct method_env *env, struct method_run **out) {
    struct hf_lora a;
    if (hf_lora_read(dir, &a)) return -1;
    struct kv_list kv = {0};
    const struct plugin_method *pm = registry_find(reg, hf_lora_method(&a));
    int rc = pm ? 0 : err_prefix("%s: HF PEFT adapters like this one are read as method '%s'", dir,
                                 hf_lora_method(&a));
    if (rc == 0) rc = hf_lora_method_kv(&a, pm, &kv);
    if (rc == 0) rc = method_run_create(out, pm, m, env, kv.kv, kv.n);
    if (rc == 0 && (rc = hf_lora_fill(*out, &a, dir)) != 0) method_run_free(*out), *out = NULL;
    kv_list_free(&kv);
    hf_lora_free(&a);
    return rc;
}

int adapter_open(struct plugin_registry *reg, struct model *m, const char *path,
                 const struct method_env *env_in, struct task_table *tasks, struct method_run **out) {
    struct method_env env = *env_in;
    env.tasks = tasks;
    env.where = path;
    *out = NULL;
    int hf;
    char *file = adapter_file_of(path, &hf);
    if (hf) return open_hf(reg, m, path, &env, out);
    if (dir_exists(path) && !file_exists(file)) {
        err_set("%s: not an adapter (no adapter.safetensors, the file of a stage folder, and no "
                "adapter_config.json, an HF PEFT folder's)", path);
        free(file);
        return -1;
    }
    struct st_file f;
    if (st_open(&f, file)) {
        free(file);
        return -1;
    }
    struct kv_list kv = {0};
    const char *id = st_meta(&f, "peft.method");
    const struct plugin_method *pm = NULL;
    int rc = 0;
    if (!id) {
        const char *kind = st_meta(&f, "peft.kind");
        rc = err_set("%s: not an adapter (%s); give a stage's adapter.safetensors, a stage folder "
                     "or an HF PEFT folder", file,
                     kind ? "a task vector: merge it into the model with a merge stage"
                          : "no peft.method in __metadata__");
    } else if (!(pm = registry_find(reg, id))) {
        rc = err_prefix("%s: method", file);
    }
    if (rc == 0) rc = tasks_from_meta(&f, tasks);
    if (rc == 0) rc = adapter_file_kv(&f, pm, &kv);
    st_close(&f);
    if (rc == 0) rc = method_run_create(out, pm, m, &env, kv.kv, kv.n);
    if (rc == 0 && (rc = method_run_load(*out, file)) != 0) {
        if (tasks->n == 0 && strstr(err_msg(), "shape"))
            err_prefix("%s: no peft.tasks in its metadata (an adapter written before task names "
                       "were recorded) and the task-routed tensors need the run's task count", file);
        method_run_free(*out);
        *out = NULL;
    }
    kv_list_free(&kv);
    free(file);
    return rc;
}
