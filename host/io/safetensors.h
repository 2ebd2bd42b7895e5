/*
 * safetensors.h: reader and writer of the safetensors format (huggingface/safetensors).
 *
 * The reader enforces the reference checks: header size cap, valid JSON object, known dtypes,
 * integer shapes and offsets, contiguous data from 0 with no holes or overlaps, byte size =
 * numel * dtype size (checked 64-bit arithmetic), exact file coverage, string-only
 * __metadata__, and it rejects duplicate names. Errors are one line "PATH: reason".
 *
 * The writer sorts tensors by dtype size (descending) then name, pads the header with spaces
 * to a multiple of 8, always writes __metadata__ with "format": "pt", and writes to a
 * temporary file that is renamed into place.
 */
#ifndef PEFT_SAFETENSORS_H
#define PEFT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_U8, ST_BOOL, ST_F64, ST_I8,
                ST_I16, ST_U16, ST_U32, ST_U64, ST_DTYPE_COUNT };
const char *st_dtype_name(int dtype);
size_t st_dtype_size(int dtype);

#define ST_MAX_DIMS 8

struct st_tensor {
    char *name;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;     /* relative to the data buffer */
};

struct st_file {
    char *path;
    uint8_t *map;            /* the whole file */
    size_t size;
    const uint8_t *data;     /* start of the data buffer */
    struct st_tensor *tensors;
    int32_t n_tensors;
    char **meta_keys, **meta_values;
    int32_t n_meta;
};

/* Open and validate. -1 with "PATH: reason" (nothing to free then). */
int st_open(struct st_file *f, const char *path);
void st_close(struct st_file *f);
const struct st_tensor *st_find(const struct st_file *f, const char *name);
const char *st_meta(const struct st_file *f, const char *key); /* NULL if absent */
/* Convert a F32/F16/BF16 tensor to fp32. n must equal numel. -1 with "PATH: NAME: reason". */
int st_read_f32(const struct st_file *f, const struct st_tensor *t, float *out, uint64_t n);
/* Give back the memory of a tensor's bytes once they are read, so that loading a checkpoint
 * does not hold the whole file in memory next to the model: afterwards the tensor must not
 * be read again (its whole pages read as zeros). */
void st_drop(const struct st_file *f, const struct st_tensor *t);
/* Raw bytes of a tensor (any dtype). */
const void *st_data(const struct st_file *f, const struct st_tensor *t);
/* A shape as error lines write it, "[2, 3]" (cut short where cap is too small). */
void st_shape_text(char *buf, size_t cap, int32_t ndim, const int64_t *shape);

struct st_writer;
struct st_writer *st_writer_new(void);
/* Add a tensor; data is borrowed until st_writer_save returns. nbytes must be numel*size. */
void st_writer_add(struct st_writer *w, const char *name, int32_t dtype, int32_t ndim,
                   const int64_t *shape, const void *data);
void st_writer_add_f32(struct st_writer *w, const char *name, int32_t ndim,
                       const int64_t *shape, const float *data);
void st_writer_meta(struct st_writer *w, const char *key, const char *value);
/* Write atomically. -1 with "PATH: reason". */
int st_writer_save(struct st_writer *w, const char *path);
void st_writer_free(struct st_writer *w);


#endif
