/*
 * peft_files.h: host extension "peft.files/1": reading tensors from safetensors files that
 * are not the stage's own, e.g. the task vectors of earlier runs a method excludes or merges
 * (serves: LoTTO's earlier masks in LoTA).
 *
 * Get it with api->get_extension(h, PEFT_FILES_EXTENSION); NULL means the host does not offer
 * it. The struct is host-owned and valid for the instance lifetime; check struct_size with
 * PEFT_HAS_FIELD before using a member added after the first revision.
 *
 * Every function may be called from any call the host makes into the plugin, on that thread
 * ([any call]). Paths and names are borrowed for the call. A failure returns a status and the
 * host keeps the reason ("PATH: NAME: why") for the error line when the plugin's call fails.
 */
#ifndef PEFT_FILES_H
#define PEFT_FILES_H

#include "peft/peft_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PEFT_FILES_EXTENSION "peft.files/1"

typedef struct peft_files_api {
    uint32_t struct_size; /* = sizeof(peft_files_api) as the host knows it */

    /* [any call] Entries of tensor `name` in the safetensors file `path`, into *numel.
     * PEFT_E_IO if the file cannot be read, PEFT_E_INVALID_ARG if it has no such tensor. */
    peft_status (*tensor_numel)(peft_host *h, const char *path, const char *name,
                                uint64_t *numel);
    /* [any call] A F32, F16 or BF16 tensor as floats into out (numel = its entries,
     * caller-owned). */
    peft_status (*read_f32)(peft_host *h, const char *path, const char *name, float *out,
                            uint64_t numel);
    /* [any call] An integer tensor (I64, I32, U64 or U32; no negative value) as uint64 into
     * out (numel = its entries, caller-owned). */
    peft_status (*read_index)(peft_host *h, const char *path, const char *name, uint64_t *out,
                              uint64_t numel);
    /* [any call] The path of the adapter file a finished earlier stage of this run wrote,
     * into out (cap bytes, NUL included). PEFT_E_INVALID_ARG for an unknown or unfinished
     * stage, PEFT_E_UNSUPPORTED when the host runs no chain. */
    peft_status (*stage_file)(peft_host *h, const char *stage, char *out, uint64_t cap);
} peft_files_api;

#ifdef __cplusplus
}
#endif

#endif /* PEFT_FILES_H */
