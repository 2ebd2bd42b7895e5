/* stop_ids.c: the token ids that end a generated answer, as generate and eval both need them:
 * the tokenizer's EOS, every eos_token_id of config.json and generation_config.json, and
 * (for conversations) the chat templates' end-of-turn tokens. */
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "generate.h"
#include "stage.h"

static void stop_add(struct stop_ids *s, int32_t id) {
    if (id < 0 || stop_ids_has(s, id)) return;
    if (s->n < (int32_t)(sizeof s->v / sizeof s->v[0])) s->v[s->n++] = id;
}

int stop_ids_has(const struct stop_ids *s, int32_t id) {
    for (int32_t i = 0; i < s->n; i++)
        if (s->v[i] == id) return 1;
    return 0;
}

/* eos_token_id of DIR/NAME (a number or a list), when the file and the key are there. */
static void stop_from(const char *dir, const char *name, struct stop_ids *s) {
    char *path = path_join(dir, name), *text = NULL;
    size_t len = 0;
    if (file_exists(path) && file_read_all(path, &text, &len) == 0) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id");
        if (cJSON_IsNumber(e)) stop_add(s, (int32_t)e->valuedouble);
        for (const cJSON *k = cJSON_IsArray(e) ? e->child : NULL; k; k = k->next)
            if (cJSON_IsNumber(k)) stop_add(s, (int32_t)k->valuedouble);
        cJSON_Delete(j);
    }
    err_clear(); /* a missing or unreadable file only means no ids from it */
    free(text);
    free(path);
}

void stop_ids_collect(const char *model_dir, const struct tokenizer *t, int turn_ends,
                      struct stop_ids *s) {
    s->n = 0;
    stop_add(s, tokenizer_eos(t));
    if (turn_ends) {
        static const char *ends[] = {"<|im_end|>", "<|eot_id|>"};
        for (size_t k = 0; k < sizeof ends / sizeof ends[0]; k++) stop_add(s, tokenizer_token_id(t, ends[k]));
    }
    stop_from(model_dir, "config.json", s);
    stop_from(model_dir, "generation_config.json", s);
}
