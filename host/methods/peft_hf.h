/*
 * peft_hf.h: LoRA adapters in Hugging Face PEFT's folder layout (adapter_config.json + adapter_model.safetensors):
 *   DIR/adapter_config.json       peft_type "LORA", r, lora_alpha, target_modules, ...
 *   DIR/adapter_model.safetensors base_model.model.<module>.lora_A.weight (r, in) and
 *                                 base_model.model.<module>.lora_B.weight (out, r)
 * with ΔW = s B A, s = lora_alpha / r (or / sqrt(r) with use_rslora) - the layout and
 * scale of the `lora` method, whose tensors carry these very names.
 *
 * Reading refuses, with one line naming the folder and the key or tensor, what the method
 * cannot represent exactly: another peft_type, per-module ranks or alphas (rank_pattern,
 * alpha_pattern), LoRA biases, fan_in_fan_out, modules_to_save, bias other than
 * "none", a task_type other than CAUSAL_LM, pickled weights, tensors that are not LoRA
 * factors of llama projections, and shapes that disagree with r.
 *
 * Writing emits only well-established config keys (older PEFT versions fail on unknown
 * ones): alpha_pattern {}, base_model_name_or_path, bias "none", fan_in_fan_out false,
 * inference_mode true, init_lora_weights true, lora_alpha, lora_dropout, modules_to_save
 * null, peft_type "LORA", r, rank_pattern {}, target_modules, task_type "CAUSAL_LM",
 * use_rslora; sorted, indented by 2, as PEFT writes them.
 */
#ifndef PEFT_PEFT_HF_H
#define PEFT_PEFT_HF_H

#include <stddef.h>
#include <stdint.h>

#include "adapter_meta.h"
#include "plugin_loader.h"

struct hf_lora {
    int64_t r;
    double lora_alpha;
    double lora_dropout;
    int32_t use_rslora;
    int32_t use_dora;     /* DoRA: a magnitude vector per module too (the `dora` method) */
    char *target_modules; /* words; "all-linear" as PEFT's special value */
    char *base_model;     /* base_model_name_or_path, or NULL */
    int32_t n;            /* tensors */
    char **names;         /* (n) HF keys */
    int64_t (*shape)[2];  /* (n); [d, 0] for a vector (DoRA's magnitude) */
    float **data;         /* (n) fp32 */
};

/* The HF PEFT key of a LoRA factor (which = 'A' or 'B') of a site
 * ("model.layers.0.self_attn.q_proj"). */
void hf_lora_tensor_name(char *buf, size_t cap, const char *site, char which);

/* Read and check DIR. -1 with one line. */
int hf_lora_read(const char *dir, struct hf_lora *out);
/* Write DIR (created if needed). -1 with one line. */
int hf_lora_write(const char *dir, const struct hf_lora *a);
void hf_lora_free(struct hf_lora *a);

/* The method an HF PEFT LoRA folder is read as: "dora" with use_dora, else "lora". */
const char *hf_lora_method(const struct hf_lora *a);
/* The keys of method pm (the `lora` plugin) that reproduce a: r, lora_alpha, lora_dropout,
 * target_modules, use_rslora, defaults for the rest. -1 with one line. */
int hf_lora_method_kv(const struct hf_lora *a, const struct plugin_method *pm, struct kv_list *out);

/* Fill a fresh method run of the `lora` method (made with hf_lora_method_kv's keys) from a:
 * every saved tensor of the run by name, every tensor of the folder used. -1 with one line
 * naming dir. */
struct method_run;
int hf_lora_fill(struct method_run *mr, const struct hf_lora *a, const char *dir);

/* JSON text as PEFT's config files have it: a string; target_modules as a list, or the
 * string "all-linear". */
struct strbuf;
void hf_json_string(struct strbuf *b, const char *s);
void hf_json_targets(struct strbuf *b, const char *target_modules);
/* "base_model_name_or_path": the name, or null. */
void hf_json_base_model(struct strbuf *b, const char *base_model);
/* DIR/adapter_config.json from b (then freed), atomically. -1 with one line. */
int hf_config_write(const char *dir, struct strbuf *b);

/* A Poly adapter file (the `poly` method's variants poly, mhr, mhr-z; kv its keys) as an HF
 * PEFT POLY folder: adapter_config.json (peft_type "POLY", poly_type "poly", r, n_skills,
 * n_splits, n_tasks, target_modules, task_type "CAUSAL_LM", inference_mode, init_weights,
 * modules_to_save, base_model_name_or_path) and adapter_model.safetensors with PEFT's names
 * and shapes (peft_hf_poly.c). -1 with one line naming the file. */
struct st_file;
int hf_poly_export(const struct st_file *f, const struct kv_list *kv, const char *out_dir,
                   const char *base_model);
/* An adapter of the `ia3` method as an HF PEFT IA3 folder, and an IA3 folder as an adapter
 * file of `ia3` (peft_hf_ia3.c). -1 with one line. */
int hf_ia3_export(const struct st_file *f, const struct kv_list *kv, const char *out_dir,
                  const char *base_model);
int hf_ia3_import(struct plugin_registry *reg, const char *hf_dir, const char *out_file);

/* peft export SRC OUT_DIR: SRC is an adapter file (or a stage folder holding
 * adapter.safetensors) of a LoRA-shaped method, of Poly or of (IA)3. base_model may be NULL. */
int peft_export(struct plugin_registry *reg, const char *src, const char *out_dir,
                const char *base_model);
/* peft import HF_DIR OUT.safetensors: an adapter file of the `lora` method, or of `ia3` for
 * an IA3 folder. */
int peft_import(struct plugin_registry *reg, const char *hf_dir, const char *out_file);

#endif
