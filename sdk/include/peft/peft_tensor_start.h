/*
 * peft_tensor_start.h: host extension "peft.tensor_start/1": the value a PEFT_TENSOR_ALIAS_BASE
 * tensor had when the stage began, which the host keeps for the stage's task vector (serves:
 * LoTA's own calibration, which reads the task vector live - start and then returns the
 * weights to their start value, bit for bit).
 *
 * Get it with api->get_extension(h, PEFT_TENSOR_START_EXTENSION); NULL means the host does not
 * offer it. The struct is host-owned and valid for the instance lifetime.
 */
#ifndef PEFT_TENSOR_START_H
#define PEFT_TENSOR_START_H

#include "peft/peft_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PEFT_TENSOR_START_EXTENSION "peft.tensor_start/1"

typedef struct peft_tensor_start_api {
    uint32_t struct_size; /* = sizeof(peft_tensor_start_api) as the host knows it */

    /* [stage_begin and later] The stage-start value of an ALIAS_BASE tensor, read-only, in
     * *out with its length in *n: numel floats, or once a mask is set n_trainable floats,
     * (*out)[j] belonging to entry mask_index[j] (the other entries never change, so they hold
     * their start value). Host-owned; valid until the next tensor_set_mask of that tensor.
     * PEFT_E_UNSUPPORTED for a tensor that is not ALIAS_BASE. */
    peft_status (*start)(peft_host *h, peft_tensor_id id, const float **out, uint64_t *n);
} peft_tensor_start_api;

#ifdef __cplusplus
}
#endif

#endif /* PEFT_TENSOR_START_H */
