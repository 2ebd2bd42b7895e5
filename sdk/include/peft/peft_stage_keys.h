/*
 * peft_stage_keys.h: host extension "peft.stage_keys/1": the keys of any stage of the run, as
 * the run will use them, from create on (serves: a method that chains from another stage,
 * init_from or calibrate_from, and must agree with its rank, scale or mode; or that names
 * earlier stages, like LoTTO's exclude_stages. With it, such a method refuses a wrong chain
 * when the host checks the whole run file, before any stage has trained).
 *
 * Get it with api->get_extension(h, PEFT_STAGE_KEYS_EXTENSION); NULL means the host has no run
 * around this instance (e.g. a standalone merge of files). Host-owned struct, valid for the
 * instance lifetime.
 */
#ifndef PEFT_STAGE_KEYS_H
#define PEFT_STAGE_KEYS_H

#include <stddef.h>

#include "peft/peft_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PEFT_STAGE_KEYS_EXTENSION "peft.stage_keys/1"

typedef struct peft_stage_keys_api {
    uint32_t struct_size; /* = sizeof(peft_stage_keys_api) as the host knows it */

    /* [any call] The value of `key` in stage `stage` (a stage name; NULL: this instance's
     * own stage), written NUL-terminated into out (caller-owned, cap bytes): every key of the
     * stage's method, its default filled in, and of the host's stage keys "method" (the
     * method's id, or "merge" for a merge stage) and "steps". PEFT_E_CONFIG when the run has
     * no such stage or the stage no such key (nothing is logged), PEFT_E_INVALID_ARG when the
     * value does not fit in cap. */
    peft_status (*stage_value)(peft_host *h, const char *stage, const char *key, char *out,
                               size_t cap);
} peft_stage_keys_api;

#ifdef __cplusplus
}
#endif

#endif /* PEFT_STAGE_KEYS_H */
