/*
 * plugins_cmd.h: the text of `peft plugins` (every method the search path offers) and
 * `peft plugins ID` (one method's description and key schema).
 */
#ifndef PEFT_PLUGINS_CMD_H
#define PEFT_PLUGINS_CMD_H

#include <stdio.h>

#include "methods/methods.h"

/* Scan the search path and print one line per method (id, version, ABI, file, description)
 * to out, and one line per refused file to err. -1 with err_set if no method was found. */
int plugins_list(struct plugin_registry *r, FILE *out, FILE *err);

/* Print the method `id` (an id or a path to a .so): name, version, file, features,
 * description and every key with its type, default and help. -1 with err_set if it cannot
 * be loaded. */
int plugins_show(struct plugin_registry *r, const char *id, FILE *out);

#endif
