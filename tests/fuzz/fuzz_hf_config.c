/* Fuzz target: an HF checkpoint's config.json (hf_config_load and the model's own checks). */
#include "checkpoint_hf.h"
#include "fuzz_input.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct model_config c;
    fuzz_file("config.json", data, size);
    if (hf_config_load(fuzz_dir(), &c) == 0) model_config_check(&c);
    err_clear();
    return 0;
}
