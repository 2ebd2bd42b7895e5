/* cmd_plugins.c: peft plugins [ID]: the method plugins found, or one method's keys. */
#include <string.h>

#include "cli.h"
#include "core/core.h"

static int plugins_main(int argc, char **argv) {
    const char *id = NULL, *plugin_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (argv[i][0] == '-' || id)
            return cli_unexpected(&cmd_plugins, argv[i]);
        else
            id = argv[i];
    }
    struct plugin_registry reg;
    registry_init(&reg, plugin_path);
    int rc = id ? plugins_show(&reg, id, stdout) : plugins_list(&reg, stdout, stderr);
    registry_free(&reg);
    return rc ? cli_fail() : 0;
}

const struct command cmd_plugins = {
    "plugins", "[ID | FILE.so] [--plugin-path DIRS]",
    "List the method plugins found (id, version, ABI, file), or show one method: its\n"
    "description, features and every key with type, default and help.",
    "Plugins are found in --plugin-path, [run] plugin_path, PEFT_PLUGIN_PATH, the install\n"
    "folder and, for a peft run from its build tree, the plugins built beside it. Files that\n"
    "are refused are listed with the reason. The host's own keys: peft keys.\n"
    "\n"
    "options:\n"
    "  --plugin-path DIRS  folders searched first (':'-separated)\n"
    "  -h, --help          this help\n"
    "\n"
    "examples:\n"
    "  peft plugins\n"
    "  peft plugins lora\n",
    plugins_main};
