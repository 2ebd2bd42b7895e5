/*
 * io.h: the face of host/io, the files the host reads and writes that are not a method's:
 * safetensors files (safetensors.h), HF model checkpoints (checkpoint_hf.h) and INI run files
 * (config.h).
 */
#ifndef PEFT_IO_H
#define PEFT_IO_H

#include "checkpoint_hf.h"
#include "config.h"
#include "safetensors.h"

#endif
