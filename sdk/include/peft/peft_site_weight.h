/*
 * peft_site_weight.h: host extension "peft.site_weight/1": a site's frozen weight widened to
 * fp32 into the plugin's own buffer, for a method that reads weights only now and then (a
 * norm of W, an initialisation from W) without the host keeping an fp32 copy of them.
 *
 * Memory: the host may keep frozen weights in a checkpoint's 16-bit type (bf16, f16).
 * peft_site_info.weight is then an fp32 view that the host makes for that site when the
 * plugin asks for the site's info: 4 bytes per weight, resident for the rest of the run.
 * A method that lists PEFT_FEATURE_WEIGHT_ON_REQUEST in its descriptor gets weight = NULL
 * for such a site instead (no copy is made) and reads the values with widen() when it needs
 * them, at the cost of its own buffer for as long as it keeps them.
 *
 * Get it with api->get_extension(h, PEFT_SITE_WEIGHT_EXTENSION); NULL means the host does not
 * offer it (then every site_info.weight is an fp32 view). Host-owned, valid for the instance
 * lifetime; check struct_size with PEFT_HAS_FIELD before using a member added later.
 */
#ifndef PEFT_SITE_WEIGHT_H
#define PEFT_SITE_WEIGHT_H

#include "peft/peft_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PEFT_SITE_WEIGHT_EXTENSION "peft.site_weight/1"

/* Descriptor feature: the method never reads peft_site_info.weight when it is NULL; it asks
 * for the values with the extension (or not at all). */
#define PEFT_FEATURE_WEIGHT_ON_REQUEST "weight-on-request"

typedef struct peft_site_weight_api {
    uint32_t struct_size; /* = sizeof(peft_site_weight_api) as the host knows it */

    /* [any call] The current weight of `site`, (d_out, d_in) row-major, as fp32 into out
     * (numel = d_out * d_in floats, caller-owned). PEFT_E_INVALID_ARG for a site out of range
     * or another numel. */
    peft_status (*widen)(peft_host *h, uint32_t site, float *out, uint64_t numel);
} peft_site_weight_api;

#ifdef __cplusplus
}
#endif

#endif /* PEFT_SITE_WEIGHT_H */
