/* cmd_hf.c: peft export / peft import: LoRA adapters to and from HF PEFT folders. */
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "methods/methods.h"

/* Two positional arguments and the flags each command takes. */
static int hf_main(const struct command *c, int argc, char **argv) {
    const int export = c == &cmd_export;
    const char *pos[2] = {NULL, NULL}, *plugin_path = NULL, *base_model = NULL;
    int n_pos = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (export && strcmp(argv[i], "--base-model") == 0 && i + 1 < argc)
            base_model = argv[++i];
        else if (argv[i][0] == '-' || n_pos == 2)
            return cli_unexpected(c, argv[i]);
        else
            pos[n_pos++] = argv[i];
    }
    if (n_pos != 2) {
        err_set("%s: give two arguments (usage: peft %s %s)", c->name, c->name, c->args);
        return cli_fail();
    }
    struct plugin_registry reg;
    registry_init(&reg, plugin_path);
    int rc = export ? peft_export(&reg, pos[0], pos[1], base_model) : peft_import(&reg, pos[0], pos[1]);
    registry_free(&reg);
    if (rc) return cli_fail();
    printf("wrote %s\n", pos[1]);
    return 0;
}

static int export_main(int argc, char **argv) { return hf_main(&cmd_export, argc, argv); }
static int import_main(int argc, char **argv) { return hf_main(&cmd_import, argc, argv); }

const struct command cmd_export = {
    "export", "ADAPTER.safetensors|STAGE_DIR OUT_DIR [--base-model NAME] [--plugin-path DIRS]",
    "Write a LoRA adapter as an HF PEFT folder.",
    "The folder holds adapter_config.json and adapter_model.safetensors. The adapter is a\n"
    "stage's adapter.safetensors (or its stage folder) of method lora, or a merge stage's\n"
    "LoRA output. HF PEFT loads the folder onto the base model it was trained on.\n"
    "\n"
    "options:\n"
    "  --base-model NAME   base_model_name_or_path written into adapter_config.json\n"
    "  --plugin-path DIRS  folders searched first for method plugins (':'-separated)\n"
    "  -h, --help          this help\n"
    "\n"
    "example:\n"
    "  peft export runs/quickstart/adapt hf_adapter --base-model my-org/base\n",
    export_main};

const struct command cmd_import = {
    "import", "HF_DIR OUT.safetensors [--plugin-path DIRS]",
    "Read an HF PEFT LoRA folder into an adapter file of method lora.",
    "The adapter file can then be an input of a merge stage, or be inspected.\n"
    "\n"
    "options:\n"
    "  --plugin-path DIRS  folders searched first for method plugins (':'-separated)\n"
    "  -h, --help          this help\n"
    "\n"
    "example:\n"
    "  peft import hf_adapter adapter.safetensors\n",
    import_main};
