/* adapter_meta.c: owned key/value lists and the method keys recorded in adapter files. */
#include "adapter_meta.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

void kv_list_set(struct kv_list *l, const char *key, const char *value) {
    for (uint32_t i = 0; i < l->n; i++)
        if (strcmp(l->kv[i].key, key) == 0) {
            free(l->own[2 * i + 1]);
            l->own[2 * i + 1] = xstrdup(value);
            l->kv[i].value = l->own[2 * i + 1];
            return;
        }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->kv = xrealloc(l->kv, l->cap * sizeof *l->kv);
        l->own = xrealloc(l->own, 2 * l->cap * sizeof *l->own);
    }
    l->own[2 * l->n] = xstrdup(key);
    l->own[2 * l->n + 1] = xstrdup(value);
    l->kv[l->n] = (peft_kv){l->own[2 * l->n], l->own[2 * l->n + 1]};
    l->n++;
}

const char *kv_list_get(const struct kv_list *l, const char *key) {
    for (uint32_t i = 0; i < l->n; i++)
        if (strcmp(l->kv[i].key, key) == 0) return l->kv[i].value;
    return NULL;
}

void kv_list_free(struct kv_list *l) {
    for (uint32_t i = 0; i < 2 * l->n; i++) free(l->own[i]);
    free(l->own);
    free(l->kv);
    memset(l, 0, sizeof *l);
}

char *kv_list_json(const struct kv_list *l) {
    cJSON *j = cJSON_CreateObject();
    for (uint32_t i = 0; i < l->n; i++) cJSON_AddStringToObject(j, l->kv[i].key, l->kv[i].value);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char *out = xstrdup(text);
    cJSON_free(text);
    return out;
}

int kv_complete(const struct kv_list *given, const struct plugin_method *pm, const char *what,
                struct kv_list *out) {
    memset(out, 0, sizeof *out);
    const peft_method_desc *d = pm->desc;
    for (uint32_t i = 0; i < d->n_params; i++) {
        const peft_param_spec *p = &d->params[i];
        const char *v = given ? kv_list_get(given, p->name) : NULL;
        if (!v) v = p->default_value;
        if (!v) {
            kv_list_free(out);
            return err_set("%s: key %s: required by method '%s' but not recorded", what, p->name,
                           d->id);
        }
        if (param_check_value(p, v)) {
            kv_list_free(out);
            return err_prefix("%s: key %s", what, p->name);
        }
        kv_list_set(out, p->name, v);
    }
    return 0;
}

int adapter_file_kv(const struct st_file *f, const struct plugin_method *pm, struct kv_list *out) {
    const char *which = "peft.method_config";
    const char *text = st_meta(f, which);
    if (!text) text = st_meta(f, which = "peft.stage_config");
    struct kv_list given = {0};
    if (text) {
        cJSON *j = cJSON_Parse(text);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return err_set("%s: metadata %s: not a JSON object", f->path, which);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, j) {
            char num[64];
            const char *v = NULL;
            if (cJSON_IsString(it)) {
                v = it->valuestring;
            } else if (cJSON_IsNumber(it)) {
                snprintf(num, sizeof num, "%.17g", it->valuedouble);
                v = num;
            } else if (cJSON_IsBool(it)) {
                v = cJSON_IsTrue(it) ? "true" : "false";
            }
            if (v && it->string) kv_list_set(&given, it->string, v);
        }
        cJSON_Delete(j);
    }
    char what[600];
    snprintf(what, sizeof what, "%s: metadata %s", f->path, text ? which : "(no method keys)");
    int rc = kv_complete(&given, pm, what, out);
    kv_list_free(&given);
    return rc;
}

/* One word that is a number? */
static int one_number(const struct words *w, double *x) {
    return w->n == 1 && parse_f64(w->v[0], x) == 0;
}

int kv_equal(const struct kv_list *a, const struct kv_list *b, const char **key) {
    for (uint32_t i = 0; i < a->n; i++) {
        const char *va = a->kv[i].value, *vb = kv_list_get(b, a->kv[i].key);
        if (!vb) {
            *key = a->kv[i].key;
            return 0;
        }
        struct words wa, wb;
        words_split(&wa, va);
        words_split(&wb, vb);
        double xa, xb;
        int same;
        if (one_number(&wa, &xa) && one_number(&wb, &xb)) {
            same = xa == xb;
        } else {
            same = wa.n == wb.n;
            for (int k = 0; same && k < wa.n; k++) same = strcmp(wa.v[k], wb.v[k]) == 0;
        }
        words_free(&wa);
        words_free(&wb);
        if (!same) {
            *key = a->kv[i].key;
            return 0;
        }
    }
    return 1;
}
