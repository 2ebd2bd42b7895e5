/*
 * checkpoint_hf.h: HF checkpoints of the llama family (llama, qwen2, qwen3, mistral), a folder
 * with config.json + model.safetensors (or shards). Reads F32/F16/BF16 weights, both RoPE
 * layouts (top-level v4 rope_theta/rope_scaling and v5 rope_parameters), tied or untied heads;
 * checks every shape against config.json.
 * Writes the same layout (F32), atomically.
 */
#ifndef PEFT_CHECKPOINT_HF_H
#define PEFT_CHECKPOINT_HF_H

#include "model/model.h"

/* Parse DIR/config.json into c. -1 with "DIR/config.json: key: reason". */
int hf_config_load(const char *dir, struct model_config *c);
/* The same for a config.json given by its path. */
int hf_config_load_file(const char *path, struct model_config *c);
/* Load the model in DIR (config.json + model.safetensors): model_init + weights.
 * -1 with the file and the tensor or key named. */
int hf_model_load(const char *dir, struct model *m);
/* Write DIR/config.json and DIR/model.safetensors (extra metadata pairs optional, NULL-ended
 * key/value array). Creates DIR. */
int hf_model_save(const char *dir, const struct model *m, const char *const *meta_kv);
/* The same with the weights rounded to dtype (ST_F32, ST_BF16 or ST_F16; weights the model
 * keeps in 16 bits are written in their own type). */
int hf_model_save_as(const char *dir, const struct model *m, const char *const *meta_kv,
                     int32_t dtype);
/* The checkpoint folder DIR names: DIR itself when it holds config.json, else DIR/model (a
 * run stage's merged model). A new string, or NULL with "DIR: no config.json here or in
 * DIR/model (...)". */
char *hf_model_dir_of(const char *dir);
/* Copy the tokenizer files of a model folder (tokenizer.json, tokenizer_config.json,
 * generation_config.json, those present) into another, atomically each. */
int hf_copy_tokenizer(const char *from_dir, const char *to_dir);

#endif
