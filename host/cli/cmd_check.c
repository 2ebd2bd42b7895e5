/* cmd_check.c: peft check PLUGIN_OR_ID: a method plugin checked through the ABI (check.h). */
#include <string.h>

#include "cli.h"
#include "check/check.h"
#include "core/core.h"
#include "methods/methods.h"

static int check_main(int argc, char **argv) {
    const char *what = NULL, *plugin_path = NULL, *precision_name = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc)
            plugin_path = argv[++i];
        else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc)
            precision_name = argv[++i];
        else if (argv[i][0] == '-' || what)
            return cli_unexpected(&cmd_check, argv[i]);
        else
            what = argv[i];
    }
    if (!what) {
        err_set("check: no plugin given (usage: peft check %s)", cmd_check.args);
        return cli_fail();
    }
    int32_t precision;
    if (model_precision_choose(precision_name, "check: --precision", &precision)) return cli_fail();
    struct plugin_registry reg;
    registry_init(&reg, plugin_path);
    int failed = plugin_check(&reg, what, precision, stdout);
    registry_free(&reg);
    if (failed < 0) return cli_fail();
    return failed ? 1 : 0;
}

const struct command cmd_check = {
    "check", "PLUGIN.so|METHOD_ID [--plugin-path DIRS] [--precision P]",
    "Check a method plugin through the ABI: gradients, negation, save/load, merge.",
    "Loads the plugin as peft run would and checks every method in it on a small random\n"
    "model, in two runs (the schema's defaults on an untied head; every bool key true,\n"
    "dropout 0.25 and lora_alpha = r on a tied head) and again for every other value of each\n"
    "choice key the method accepts alone:\n"
    "  a fresh instance leaves the logits bit-identical;\n"
    "  every trainable tensor's gradient and the input gradient (dx) against central\n"
    "  differences of the loss, the worst tensor named; the site inputs x and dy untouched;\n"
    "  negate turns the method's change at every site into its negative;\n"
    "  save then load gives the same tensors and logits, bit for bit;\n"
    "  merge gives the hooked model's logits, or is refused (and changes nothing) by a\n"
    "  method without delta_weight that does not claim 'mergeable'.\n"
    "With --precision bf16 the model is the bf16 model of [run] precision = bf16: the\n"
    "derivatives are checked on its bfloat16 weights with the products' operands unrounded\n"
    "(rounding is flat almost everywhere), and the merge to NMSE 1e-3 (the merged weight is\n"
    "rounded to bfloat16, the hooked path is not).\n"
    "One line per check (ok or FAIL, with what was measured), then 'N passed, N failed'.\n"
    "The exit status is 1 when a check failed, 2 when the plugin cannot be loaded.\n"
    "\n"
    "options:\n"
    "  --plugin-path DIRS  folders searched first for method plugins (':'-separated)\n"
    "  --precision P       fp32, bf16 or auto (default: PEFT_PRECISION, else auto: fp32 in\n"
    "                      this build)\n"
    "  -h, --help          this help\n"
    "\n"
    "example:\n"
    "  peft check build/peft-com.example.bias.so\n",
    check_main};
