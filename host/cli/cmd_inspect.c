/* cmd_inspect.c: peft inspect FILE|DIR: what a safetensors file holds. */
#include "cli.h"
#include "core/core.h"

static int inspect_main(int argc, char **argv) {
    if (argc != 1) {
        if (argc > 1) return cli_unexpected(&cmd_inspect, argv[1]);
        err_set("inspect: give one safetensors file (or a folder holding one)");
        return cli_fail();
    }
    if (argv[0][0] == '-') return cli_unexpected(&cmd_inspect, argv[0]);
    return peft_inspect(argv[0], stdout) ? cli_fail() : 0;
}

const struct command cmd_inspect = {
    "inspect", "FILE.safetensors | DIR",
    "Print the tensors (name, dtype, shape, bytes) and the metadata of a safetensors file.",
    "For an adapter it also says which method and plugin ABI wrote it. A folder is searched\n"
    "for adapter.safetensors, adapter_model.safetensors (with its adapter_config.json),\n"
    "task_vector.safetensors or model.safetensors, in that order.\n"
    "\n"
    "options:\n"
    "  -h, --help  this help\n"
    "\n"
    "example:\n"
    "  peft inspect runs/quickstart/adapt/adapter.safetensors\n",
    inspect_main};
