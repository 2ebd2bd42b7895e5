/*
 * adapter_meta.h: the method keys behind an adapter file, and owned key/value lists.
 *
 * An adapter file (method_run_save) names its method in __metadata__ ("peft.method") and the
 * keys it was made with: "peft.method_config" (a JSON object of every method key, written by
 * merges and imports) or else "peft.stage_config" (the stage section as JSON, written by
 * trained stages, where keys left at their default are absent). Reading a file back into a
 * method run needs those keys, with the method's defaults for the rest.
 */
#ifndef PEFT_ADAPTER_META_H
#define PEFT_ADAPTER_META_H

#include <stdint.h>

#include "peft/peft_plugin.h"
#include "plugin_loader.h"
#include "io/io.h"

/* Key/value pairs that own their strings; kv[] is what method_run_create takes. */
struct kv_list {
    peft_kv *kv;
    char **own; /* (2 n) the key and value strings */
    uint32_t n, cap;
};

/* Set key (replacing an earlier value). */
void kv_list_set(struct kv_list *l, const char *key, const char *value);
const char *kv_list_get(const struct kv_list *l, const char *key);
void kv_list_free(struct kv_list *l);
/* {"key":"value",...} in order; caller frees. */
char *kv_list_json(const struct kv_list *l);

/* Every key of pm's schema: the file's value where its metadata has one, else the default.
 * Each value is checked against its type. -1 with "PATH: metadata KEY: key K: reason". */
int adapter_file_kv(const struct st_file *f, const struct plugin_method *pm, struct kv_list *out);

/* Every key of pm's schema from `given` (keys pm does not know are ignored) or else its
 * default, checked. -1 with "WHAT: key K: reason". */
int kv_complete(const struct kv_list *given, const struct plugin_method *pm, const char *what,
                struct kv_list *out);

/* Do two complete key lists of one method agree? Values compare as word lists, and as
 * numbers where both are one number ("16" = "16.0"). On disagreement *key names the first
 * key that differs. */
int kv_equal(const struct kv_list *a, const struct kv_list *b, const char **key);

#endif
