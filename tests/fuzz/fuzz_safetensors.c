/* Fuzz target: the safetensors reader (st_open, then every tensor read as fp32). */
#include "fuzz_input.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct st_file f;
    if (st_open(&f, fuzz_file("x.safetensors", data, size)) != 0) return 0;
    for (int32_t i = 0; i < f.n_tensors; i++) {
        const struct st_tensor *t = &f.tensors[i];
        if (t->numel > (1u << 20)) continue; /* a valid header may describe big tensors */
        float *out = xalloc_floats(t->numel);
        st_read_f32(&f, t, out, t->numel);
        free(out);
    }
    st_meta(&f, "peft.method");
    st_close(&f);
    err_clear();
    return 0;
}
