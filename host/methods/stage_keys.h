/*
 * stage_keys.h: the keys of a [stage.NAME] section that belong to the host (the stage's
 * method, data, optimizer and schedule). A method's key schema may not use any of them, so
 * every key of a stage section has exactly one owner.
 */
#ifndef PEFT_STAGE_KEYS_H
#define PEFT_STAGE_KEYS_H

/* NULL-terminated. Defined in plugin_loader.c, which refuses plugins that declare them. */
extern const char *const reserved_stage_keys[];

/* 1 if key is one of reserved_stage_keys, else 0. */
int stage_key_is_reserved(const char *key);

#endif
