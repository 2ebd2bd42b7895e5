/*
 * methods.h: the face of host/methods, the host side of the plugin ABI: finding and loading
 * plugins (plugin_loader.h), a method's live instance on the model and its adapter files
 * (method.h), adapter metadata and key lists (adapter_meta.h), and HF PEFT folders (peft_hf.h).
 */
#ifndef PEFT_METHODS_H
#define PEFT_METHODS_H

#include "adapter_meta.h"
#include "adapter_open.h"
#include "method.h"
#include "peft_hf.h"
#include "plugin_loader.h"

#endif
