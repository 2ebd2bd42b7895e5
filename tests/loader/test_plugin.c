/*
 * test_plugin.c: one small method plugin, built several times by tests/loader/meson.build,
 * each time with one defect chosen by a -D flag, so the loader's refusals can be checked one
 * by one. Built with TAG=good (and TAG=twin, same id) it is a plugin the loader must accept.
 *
 * The plugin cannot print, so init and deinit leave a trace the test can read: they count
 * their calls in the environment variables PEFT_LOADER_TEST_INIT_<TAG> and ..._DEINIT_<TAG>.
 */
#include <stdio.h>
#include <stdlib.h>

#include "peft/peft_plugin.h"

#ifndef TAG
#error "build with -DTAG=name"
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

#if defined(ID_TAG)
#define METHOD_ID "test." STR(ID_TAG)
#elif defined(DEFECT_BAD_ID)
#define METHOD_ID "Test/Bad"
#else
#define METHOD_ID "test." STR(TAG)
#endif

static void count_call(const char *what) {
    char name[128], value[32];
    snprintf(name, sizeof name, "PEFT_LOADER_TEST_%s_%s", what, STR(TAG));
    const char *old = getenv(name);
    snprintf(value, sizeof value, "%d", (old ? atoi(old) : 0) + 1);
    setenv(name, value, 1);
}

static peft_status test_init(const peft_host_api *api) {
    count_call("INIT");
#if defined(DEFECT_INIT_FAILS)
    (void)api;
    return PEFT_E_CONFIG;
#else
    /* The table must be the host's, of at least the version this plugin was built for. */
    if (!api || api->abi_version < PEFT_ABI_VERSION || api->struct_size < sizeof *api ||
        !api->log)
        return PEFT_E_ABI;
    return PEFT_OK;
#endif
}

static void test_deinit(void) { count_call("DEINIT"); }

struct peft_instance {
    uint32_t n_sites;
};

static peft_status test_create(const peft_host_api *api, peft_host *h, const peft_kv *cfg,
                               uint32_t n_cfg, peft_instance **out) {
    (void)api, (void)h, (void)cfg, (void)n_cfg;
    peft_instance *self = calloc(1, sizeof *self);
    if (!self) return PEFT_E_NOMEM;
    *out = self;
    return PEFT_OK;
}

static void test_destroy(peft_instance *self) { free(self); }

#if !defined(DEFECT_NO_ATTACH)
static peft_status test_attach(peft_instance *self, uint32_t site) {
    (void)site;
    self->n_sites++;
    return PEFT_OK;
}
#endif

static const peft_method_vtable test_vt = {
#if defined(DEFECT_BAD_VT_SIZE)
    .struct_size = 16,
#else
    .struct_size = sizeof(peft_method_vtable),
#endif
    .create = test_create,
    .destroy = test_destroy,
#if defined(DEFECT_NO_ATTACH)
    .attach = NULL,
#else
    .attach = test_attach,
#endif
};

static const peft_param_spec test_params[] = {
#if defined(DEFECT_BAD_DEFAULT)
    {"r", PEFT_PARAM_INT, "eight", NULL, "rank"},
#else
    {"r", PEFT_PARAM_INT, "8", NULL, "rank"},
#endif
    {"scale", PEFT_PARAM_FLOAT, "0.5", NULL, "output scale"},
    {"enabled", PEFT_PARAM_BOOL, "yes", NULL, "switch the delta on"},
    {"init", PEFT_PARAM_CHOICE, "zero", "zero|normal", "how the tensors start"},
    {"target_modules", PEFT_PARAM_LIST, "q_proj v_proj", NULL, "sites to adapt"},
    {"note", PEFT_PARAM_STRING, "", NULL, "free text"},
    {"source", PEFT_PARAM_STAGE, NULL, NULL, "the stage to start from"},
#if defined(DEFECT_RESERVED_KEY)
    {"lr", PEFT_PARAM_FLOAT, "0.1", NULL, "a learning rate of its own"},
#endif
#if defined(DEFECT_DUP_KEY)
    {"r", PEFT_PARAM_INT, "4", NULL, "rank again"},
#endif
};

static const char *const test_features[] = {PEFT_FEATURE_MERGEABLE, NULL};

#if defined(DEFECT_BAD_STAGE_DEFAULT)
static const peft_kv test_stage_defaults[] = {{"optimizer", "rmsprop"}, {"nosuch", "1"}};
#elif defined(STAGE_DEFAULTS)
static const peft_kv test_stage_defaults[] = {{"optimizer", "rmsprop"}, {"weight_decay", "0"}};
#endif

static const peft_method_desc test_desc = {
#if defined(OLD_DESC) /* a plugin built before stage_defaults were appended */
    .struct_size = offsetof(peft_method_desc, stage_defaults),
#else
    .struct_size = sizeof(peft_method_desc),
#endif
    .id = METHOD_ID,
    .name = "Loader test method",
    .version = "1.2.3",
#if defined(NOISY_TEXT) /* a terminal escape and a carriage return, which peft must not print */
    .description = "a method with \x1b[2Jnoisy\rtext (" STR(TAG) ")",
#else
    .description = "a method that only exists to be loaded (" STR(TAG) ")",
#endif
    .features = test_features,
    .params = test_params,
    .n_params = sizeof test_params / sizeof test_params[0],
    .vt = &test_vt,
#if defined(DEFECT_BAD_STAGE_DEFAULT) || defined(STAGE_DEFAULTS)
    .stage_defaults = test_stage_defaults,
    .n_stage_defaults = sizeof test_stage_defaults / sizeof test_stage_defaults[0],
#endif
#if defined(OLD_DESC) /* beyond its struct_size: the host must not read it */
    .stage_defaults = (const peft_kv *)1, .n_stage_defaults = 99,
#endif
};

#if defined(DEFECT_BAD_ABI) || defined(DEFECT_BAD_SIZE) || defined(DEFECT_NO_ENTRY) || \
    defined(DEFECT_NEWER_MINOR)
/* Written out by hand: the defects are what PEFT_PLUGIN_DEFINE prevents. */
static const peft_method_desc *const test_methods[] = {&test_desc};
#if defined(DEFECT_NO_ENTRY)
/* Not exported: with hidden visibility the loader cannot see it. */
const peft_plugin_entry_t peft_plugin_entry = {
#else
PEFT_EXPORT const peft_plugin_entry_t peft_plugin_entry = {
#endif
#if defined(DEFECT_BAD_ABI)
    .abi_version = 7, /* the first releases' form: major 7 */
#elif defined(DEFECT_NEWER_MINOR)
    .abi_version = PEFT_ABI_VERSION + 1,
#else
    .abi_version = PEFT_ABI_VERSION,
#endif
#if defined(DEFECT_BAD_SIZE)
    .struct_size = 8,
#else
    .struct_size = sizeof(peft_plugin_entry_t),
#endif
    .init = test_init,
    .deinit = test_deinit,
    .method_count = 1,
    .methods = test_methods,
};
#else
PEFT_PLUGIN_DEFINE(test_init, test_deinit, &test_desc);
#endif
