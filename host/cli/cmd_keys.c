/* cmd_keys.c: peft keys [SECTION]: every key of a run file that the host reads, printed from
 * the table the run file's reader validates against (io/run_keys.c). */
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "io/io.h"

static void print_section(const char *kind, FILE *out) {
    static const char *const titles[][2] = {
        {"run", "[run]: the run as a whole"},
        {"model", "[model]: the model (an HF checkpoint, or a fresh one of this shape)"},
        {"data", "[data]: the examples (built-in tasks are generated; files are JSONL)"},
        {"stage", "[stage.NAME]: one stage, in file order; T = trained stages (method = ID, "
                  "whose own keys peft plugins ID lists), M = merge stages (merge = OP)"}};
    for (size_t i = 0; i < sizeof titles / sizeof titles[0]; i++)
        if (strcmp(titles[i][0], kind) == 0) fprintf(out, "%s\n", titles[i][1]);
    for (int32_t i = 0; i < host_key_count(); i++) {
        const struct host_key *k = host_key_at(i);
        if (strcmp(k->section, kind) != 0) continue;
        char stages[4] = "";
        if (k->flags)
            snprintf(stages, sizeof stages, "%s%s", (k->flags & HOST_KEY_TRAIN) ? "T" : "",
                     (k->flags & HOST_KEY_MERGE) ? "M" : "");
        char type[96];
        if (k->choices)
            snprintf(type, sizeof type, "%s", k->choices);
        else if (strcmp(k->type, "int") == 0 && k->hi >= 9.2e18)
            snprintf(type, sizeof type, "int >= %.0f", k->lo);
        else if (strcmp(k->type, "int") == 0)
            snprintf(type, sizeof type, "int in [%.0f, %.0f]", k->lo, k->hi);
        else if (strcmp(k->type, "float") == 0)
            snprintf(type, sizeof type, "number in [%g, %g]", k->lo, k->hi);
        else
            snprintf(type, sizeof type, "%s", k->type);
        fprintf(out, "  %-17s %-2s %s; default: %s\n  %-20s %s\n", k->key, stages, type,
                k->def[0] ? k->def : "(none)", "", k->help);
    }
}

static int keys_main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-' || only) return cli_unexpected(&cmd_keys, argv[i]);
        only = argv[i];
    }
    const char *kinds[] = {"run", "model", "data", "stage"};
    const char *want = only ? host_key_kind(only) : NULL;
    if (only && !want) {
        err_set("keys: unknown section '%s' (sections: run, model, data, stage)", only);
        return cli_fail();
    }
    for (size_t i = 0, n = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (want && strcmp(want, kinds[i]) != 0) continue;
        if (n++) printf("\n");
        print_section(kinds[i], stdout);
    }
    return 0;
}

const struct command cmd_keys = {
    "keys", "[run | model | data | stage]",
    "Print every key of a run file that the host reads: type, default, help.",
    "These are the keys of [run], [model], [data] and of every [stage.NAME]; a method's own\n"
    "keys, set in its stage's section, are printed by peft plugins ID. The run file's reader\n"
    "takes its ranges and defaults from this same table and refuses any other key.\n"
    "\n"
    "options:\n"
    "  -h, --help  this help\n"
    "\n"
    "examples:\n"
    "  peft keys\n"
    "  peft keys stage\n",
    keys_main};
