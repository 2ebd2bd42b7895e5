/*
 * safetensors.c: strict reader and atomic writer of the safetensors format (huggingface/safetensors).
 *
 * Reader: the file is read into memory with read(), the 8-byte header length is checked
 * against the 100 MB cap and the file size before anything else is allocated, the header
 * bytes must be UTF-8 JSON text (only space, tab, CR, LF as whitespace, before and after the
 * object), and then every entry is checked as the reference reader does, plus explicit
 * rejection of duplicate names, a tensor-count cap and exact tensor-entry fields (the JSON
 * schema's additionalProperties: false). Tensors are kept sorted by name so lookups are a
 * binary search.
 *
 * Writer: tensors sorted by dtype size (descending) then name, so that every tensor starts at
 * a multiple of its element size once the header is padded with spaces to a multiple of 8.
 *
 * Assumes a little-endian host (the format is little-endian and tensor bytes are copied as is).
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies tensor bytes as is and needs a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull    /* the reference MAX_HEADER_SIZE (decimal 100 MB) */
#define ST_MAX_TENSORS 1000000        /* header-bloat guard: more entries is not a model */
#define ST_MAX_VALUE (1ull << 48)     /* schema: sizes and offsets are integers < 2^48 */

// ---------------------------------------------------------------------------------------
// dtypes

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4},  [ST_F16] = {"F16", 2},   [ST_BF16] = {"BF16", 2},
    [ST_I64] = {"I64", 8},  [ST_I32] = {"I32", 4},   [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1}, [ST_F64] = {"F64", 8},  [ST_I8] = {"I8", 1},
    [ST_I16] = {"I16", 2},  [ST_U16] = {"U16", 2},   [ST_U32] = {"U32", 4},
    [ST_U64] = {"U64", 8},
};

/* dtypes of the reference format that this reader does not handle, for a clearer message */
static const char *const foreign_dtypes[] = {
    "F4", "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
    "F8_E5M2FNUZ", "C64",
};

const char *st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < ST_DTYPE_COUNT ? dtype_info[dtype].name : "?";
}

size_t st_dtype_size(int dtype) {
    return dtype >= 0 && dtype < ST_DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

static int dtype_from_name(const char *s) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) return i;
    return -1;
}

// ---------------------------------------------------------------------------------------
// reader helpers

/* A name as it may appear in a one-line message: non-printable bytes escaped, long names cut. */
static const char *show(const char *s, char *buf, size_t cap) {
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (j + 4 + 4 >= cap) { /* room for one escape and "..." is gone: cut */
            memcpy(buf + j, "...", 4);
            return buf;
        }
        if (*p < 0x20 || *p == 0x7f || *p == '\\' || *p == '\'')
            j += (size_t)snprintf(buf + j, cap - j, "\\x%02x", *p);
        else
            buf[j++] = (char)*p;
    }
    buf[j] = '\0';
    return buf;
}

#define SHOW_CAP 200

void st_shape_text(char *buf, size_t cap, int32_t ndim, const int64_t *shape) {
    size_t j = (size_t)snprintf(buf, cap, "[");
    for (int32_t i = 0; i < ndim && j < cap; i++)
        j += (size_t)snprintf(buf + j, cap - j, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (j < cap) snprintf(buf + j, cap - j, "]");
}

/* Header bytes must be UTF-8 JSON text. Raw bytes below 0x20 other than tab/CR/LF are never
 * valid JSON (cJSON would take them as whitespace, e.g. NUL padding). */
static int check_header_bytes(const char *path, const uint8_t *h, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = h[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return err_set("%s: header byte %zu is the control byte 0x%02x, not JSON text",
                               path, i, c);
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1fu; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0fu; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07u; }
        else return err_set("%s: header is not valid UTF-8 at byte %zu", path, i);
        if (n - i < len) return err_set("%s: header is not valid UTF-8 at byte %zu", path, i);
        for (size_t k = 1; k < len; k++) {
            if ((h[i + k] & 0xc0) != 0x80)
                return err_set("%s: header is not valid UTF-8 at byte %zu", path, i);
            cp = (cp << 6) | (h[i + k] & 0x3fu);
        }
        /* overlong forms, surrogates and code points beyond U+10FFFF are not UTF-8 */
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return err_set("%s: header is not valid UTF-8 at byte %zu", path, i);
        i += len;
    }
    return 0;
}

static int is_json_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A JSON number that is an integer in [0, 2^48). cJSON keeps numbers as doubles, which are
 * exact in that range. */
static int json_u48(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d >= (double)ST_MAX_VALUE) return -1;
    *out = (uint64_t)d;
    return 0;
}

static const char *json_kind(const cJSON *v) {
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "an invalid value";
}

static void free_contents(struct st_file *f) {
    for (int32_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int32_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->map);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_tensor_offsets(const void *a, const void *b) {
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Read the whole file; the length prefix is checked before the file-sized buffer exists. */
static int read_file(struct st_file *f, uint64_t *header_len) {
    const char *path = f->path;
    struct stat sb;
    int fd = file_open_regular(path, &sb);
    if (fd < 0) return -1;
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return err_set("%s: file is %llu bytes, too small for the 8-byte header length", path,
                       (unsigned long long)size);
    }
    if (size > SIZE_MAX) {
        close(fd);
        return err_set("%s: file of %llu bytes does not fit in memory", path,
                       (unsigned long long)size);
    }
    uint8_t len8[8];
    ssize_t got = pread(fd, len8, 8, 0);
    if (got != 8) {
        int e = errno;
        close(fd);
        return err_set("%s: cannot read the header length: %s", path,
                       got < 0 ? strerror(e) : "short read");
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
    /* An impossible header length and no JSON object after it: some other kind of file (a
     * JSONL or text file starts with '{' or a letter), said as such. */
    uint8_t first = 0;
    if ((n > ST_MAX_HEADER || n > size - 8) &&
        (size == 8 || pread(fd, &first, 1, 8) != 1 ||
         (first != '{' && first != ' ' && first != '\t' && first != '\r' && first != '\n'))) {
        close(fd);
        return err_set("%s: not a safetensors file (it does not start with an 8-byte header "
                       "length and a JSON header)", path);
    }
    if (n > ST_MAX_HEADER) {
        close(fd);
        return err_set("%s: header length %llu exceeds the limit of %llu bytes", path,
                       (unsigned long long)n, ST_MAX_HEADER);
    }
    if (n > size - 8) {
        close(fd);
        return err_set("%s: header length %llu runs past the end of the %llu-byte file", path,
                       (unsigned long long)n, (unsigned long long)size);
    }
    f->map = xmalloc((size_t)size);
    size_t done = 0;
    while (done < size) {
        ssize_t r = read(fd, f->map + done, (size_t)size - done);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return err_set("%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    close(fd);
    if (done != size)
        return err_set("%s: file changed size while being read (%zu of %llu bytes)", path, done,
                       (unsigned long long)size);
    f->size = (size_t)size;
    *header_len = n;
    return 0;
}

// ---------------------------------------------------------------------------------------
// header entries

static int parse_metadata(struct st_file *f, const cJSON *obj) {
    char b1[SHOW_CAP];
    if (!cJSON_IsObject(obj))
        return err_set("%s: __metadata__ is %s, expected an object of strings", f->path,
                       json_kind(obj));
    int32_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) n++;
    f->meta_keys = xcalloc((size_t)n + 1, sizeof(char *));
    f->meta_values = xcalloc((size_t)n + 1, sizeof(char *));
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return err_set("%s: __metadata__: key '%s' is %s, expected a string", f->path,
                           show(c->string, b1, sizeof b1), json_kind(c));
        f->meta_keys[f->n_meta] = xstrdup(c->string);
        f->meta_values[f->n_meta] = xstrdup(c->valuestring);
        f->n_meta++;
    }
    char **sorted = xmalloc(((size_t)n + 1) * sizeof(char *));
    memcpy(sorted, f->meta_keys, (size_t)n * sizeof(char *));
    qsort(sorted, (size_t)n, sizeof(char *), cmp_str_ptr);
    for (int32_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            err_set("%s: __metadata__: key '%s' appears more than once", f->path,
                    show(sorted[i], b1, sizeof b1));
            free(sorted);
            return -1;
        }
    }
    free(sorted);
    return 0;
}

static int parse_tensor(struct st_file *f, const cJSON *e, struct st_tensor *t) {
    char b1[SHOW_CAP], b2[SHOW_CAP];
    const char *name = show(e->string, b1, sizeof b1);
    const char *path = f->path;
    if (!cJSON_IsObject(e))
        return err_set("%s: tensor '%s': entry is %s, expected an object", path, name,
                       json_kind(e));
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *c = e->child; c; c = c->next) {
        const cJSON **slot = strcmp(c->string, "dtype") == 0          ? &dtype
                             : strcmp(c->string, "shape") == 0        ? &shape
                             : strcmp(c->string, "data_offsets") == 0 ? &offsets
                                                                      : NULL;
        if (!slot)
            return err_set("%s: tensor '%s': unknown field '%s' (an entry holds exactly dtype, "
                           "shape and data_offsets)", path, name, show(c->string, b2, sizeof b2));
        if (*slot)
            return err_set("%s: tensor '%s': field '%s' appears more than once", path, name,
                           c->string);
        *slot = c;
    }
    if (!dtype) return err_set("%s: tensor '%s': missing field 'dtype'", path, name);
    if (!shape) return err_set("%s: tensor '%s': missing field 'shape'", path, name);
    if (!offsets) return err_set("%s: tensor '%s': missing field 'data_offsets'", path, name);

    if (!cJSON_IsString(dtype))
        return err_set("%s: tensor '%s': dtype is %s, expected a string", path, name,
                       json_kind(dtype));
    t->dtype = dtype_from_name(dtype->valuestring);
    if (t->dtype < 0) {
        for (size_t i = 0; i < sizeof foreign_dtypes / sizeof foreign_dtypes[0]; i++)
            if (strcmp(dtype->valuestring, foreign_dtypes[i]) == 0)
                return err_set("%s: tensor '%s': dtype '%s' is not supported", path, name,
                               dtype->valuestring);
        return err_set("%s: tensor '%s': unknown dtype '%s'", path, name,
                       show(dtype->valuestring, b2, sizeof b2));
    }

    if (!cJSON_IsArray(shape))
        return err_set("%s: tensor '%s': shape is %s, expected an array of integers", path,
                       name, json_kind(shape));
    int32_t ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return err_set("%s: tensor '%s': shape has %d dimensions, at most %d are supported",
                       path, name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int32_t k = 0;
    for (const cJSON *d = shape->child; d; d = d->next, k++) {
        uint64_t v;
        if (json_u48(d, &v) != 0)
            return err_set("%s: tensor '%s': shape[%d] is not an integer in [0, 2^48)", path,
                           name, k);
        t->shape[k] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel))
            return err_set("%s: tensor '%s': shape element count overflows 64 bits", path,
                           name);
    }
    t->numel = numel;

    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return err_set("%s: tensor '%s': data_offsets must be an array [begin, end]", path,
                       name);
    if (json_u48(offsets->child, &t->begin) != 0 ||
        json_u48(offsets->child->next, &t->end) != 0)
        return err_set("%s: tensor '%s': data_offsets must be integers in [0, 2^48)", path,
                       name);
    if (t->end < t->begin)
        return err_set("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path,
                       name, (unsigned long long)t->begin, (unsigned long long)t->end);
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)dtype_info[t->dtype].size, &nbytes))
        return err_set("%s: tensor '%s': byte size of shape overflows 64 bits", path, name);
    if (nbytes != t->end - t->begin) {
        st_shape_text(b2, sizeof b2, t->ndim, t->shape);
        return err_set("%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s "
                       "of %s needs %llu", path, name, (unsigned long long)t->begin,
                       (unsigned long long)t->end, (unsigned long long)(t->end - t->begin), b2,
                       dtype_info[t->dtype].name, (unsigned long long)nbytes);
    }
    t->name = xstrdup(e->string);
    return 0;
}

/* Offsets walked in order must tile [0, last end) exactly; the file must end there. */
static int check_layout(struct st_file *f, uint64_t header_len) {
    char b1[SHOW_CAP], b2[SHOW_CAP];
    const char *path = f->path;
    int32_t n = f->n_tensors;
    struct st_tensor **order = xmalloc(((size_t)n + 1) * sizeof *order);
    for (int32_t i = 0; i < n; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)n, sizeof *order, cmp_tensor_offsets);
    uint64_t pos = 0;
    const struct st_tensor *prev = NULL;
    int rc = 0;
    for (int32_t i = 0; i < n && rc == 0; i++) {
        const struct st_tensor *t = order[i];
        if (t->begin > pos)
            rc = err_set("%s: tensor '%s': data_offsets [%llu, %llu] leave a gap: bytes [%llu, "
                         "%llu) of the data buffer belong to no tensor", path,
                         show(t->name, b1, sizeof b1), (unsigned long long)t->begin,
                         (unsigned long long)t->end, (unsigned long long)pos,
                         (unsigned long long)t->begin);
        else if (t->begin < pos)
            rc = err_set("%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' [%llu, "
                         "%llu]", path, show(t->name, b1, sizeof b1),
                         (unsigned long long)t->begin, (unsigned long long)t->end,
                         show(prev->name, b2, sizeof b2), (unsigned long long)prev->begin,
                         (unsigned long long)prev->end);
        pos = t->end;
        prev = t;
    }
    free(order);
    if (rc) return rc;
    uint64_t covered = 8 + header_len + pos;
    if (covered > f->size)
        return err_set("%s: file is truncated: header and tensors need %llu bytes, the file has "
                       "%zu", path, (unsigned long long)covered, f->size);
    if (covered < f->size)
        return err_set("%s: %llu trailing bytes after the last tensor (header and tensors cover "
                       "%llu of %zu bytes)", path, (unsigned long long)(f->size - covered),
                       (unsigned long long)covered, f->size);
    return 0;
}

static int parse_header(struct st_file *f, uint64_t header_len) {
    char b1[SHOW_CAP];
    const char *path = f->path;
    const uint8_t *h = f->map + 8;
    size_t n = (size_t)header_len;
    if (check_header_bytes(path, h, n) != 0) return -1;
    size_t lead = 0;
    while (lead < n && is_json_space(h[lead])) lead++;
    if (lead == n || h[lead] != '{')
        return err_set("%s: header is not a JSON object (it must start with '{')", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h + lead, n - lead, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)((const uint8_t *)end - h) : lead;
        return err_set("%s: header is not valid JSON (near header byte %zu)", path, at);
    }
    for (size_t i = (size_t)((const uint8_t *)end - h); i < n; i++) {
        if (!is_json_space(h[i])) {
            cJSON_Delete(root);
            return err_set("%s: header has characters after the JSON object (header byte %zu)",
                           path, i);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set("%s: header is not a JSON object", path);
    }

    int64_t n_entries = 0, n_meta_entries = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) n_meta_entries++;
        else n_entries++;
    }
    int rc = 0;
    if (n_meta_entries > 1)
        rc = err_set("%s: '__metadata__' appears more than once", path);
    else if (n_entries > ST_MAX_TENSORS)
        rc = err_set("%s: header lists %lld tensors, more than the limit of %d", path,
                     (long long)n_entries, ST_MAX_TENSORS);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    f->tensors = xcalloc((size_t)n_entries + 1, sizeof *f->tensors);
    for (const cJSON *c = root->child; c && rc == 0; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            rc = parse_metadata(f, c);
        } else {
            rc = parse_tensor(f, c, &f->tensors[f->n_tensors]);
            if (rc == 0) f->n_tensors++;
        }
    }
    cJSON_Delete(root);
    if (rc) return rc;

    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    for (int32_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return err_set("%s: tensor '%s' appears more than once in the header", path,
                           show(f->tensors[i].name, b1, sizeof b1));
    return check_layout(f, header_len);
}

// ---------------------------------------------------------------------------------------
// reader API

int st_open(struct st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = xstrdup(path);
    uint64_t header_len = 0;
    if (read_file(f, &header_len) != 0 || parse_header(f, header_len) != 0) {
        free_contents(f);
        return -1;
    }
    f->data = f->map + 8 + header_len;
    return 0;
}

void st_close(struct st_file *f) {
    if (f) free_contents(f);
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    int32_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *st_meta(const struct st_file *f, const char *key) {
    for (int32_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

void st_drop(const struct st_file *f, const struct st_tensor *t) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)(f->data + t->begin) + page - 1) / page * page;
    uintptr_t hi = (uintptr_t)(f->data + t->end) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

const void *st_data(const struct st_file *f, const struct st_tensor *t) {
    return f->data + t->begin;
}

int st_read_f32(const struct st_file *f, const struct st_tensor *t, float *out, uint64_t n) {
    char b1[SHOW_CAP];
    if (n != t->numel)
        return err_set("%s: tensor '%s': %llu elements requested, the tensor holds %llu",
                       f->path, show(t->name, b1, sizeof b1), (unsigned long long)n,
                       (unsigned long long)t->numel);
    /* the data buffer need not be aligned in memory: copy element by element */
    const uint8_t *p = f->data + t->begin;
    switch (t->dtype) {
    case ST_F32:
        if (n) memcpy(out, p, (size_t)n * sizeof(float));
        return 0;
    case ST_F16:
    case ST_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        return 0;
    default:
        return err_set("%s: tensor '%s': dtype %s cannot be read as floats (F32, F16 or BF16 "
                       "expected)", f->path, show(t->name, b1, sizeof b1),
                       st_dtype_name(t->dtype));
    }
}

// ---------------------------------------------------------------------------------------
// writer

struct st_entry {
    char *name;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* borrowed */
    uint64_t nbytes;
};

struct st_writer {
    struct st_entry *v;
    int32_t n, cap;
    char **meta_keys, **meta_values; /* [0] is always "format" */
    int32_t n_meta, cap_meta;
    char *misuse; /* the first invalid add, reported by st_writer_save */
};

struct st_writer *st_writer_new(void) {
    struct st_writer *w = xcalloc(1, sizeof *w);
    st_writer_meta(w, "format", "pt");
    return w;
}

static void writer_misuse(struct st_writer *w, const char *fmt, ...) PEFT_PRINTF(2, 3);
static void writer_misuse(struct st_writer *w, const char *fmt, ...) {
    if (w->misuse) return;
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    w->misuse = xstrdup(buf);
}

void st_writer_add(struct st_writer *w, const char *name, int32_t dtype, int32_t ndim,
                   const int64_t *shape, const void *data) {
    char b1[SHOW_CAP];
    if (dtype < 0 || dtype >= ST_DTYPE_COUNT) {
        writer_misuse(w, "tensor '%s': invalid dtype %d", show(name, b1, sizeof b1), dtype);
        return;
    }
    if (ndim < 0 || ndim > ST_MAX_DIMS) {
        writer_misuse(w, "tensor '%s': %d dimensions (0 to %d supported)",
                      show(name, b1, sizeof b1), ndim, ST_MAX_DIMS);
        return;
    }
    uint64_t numel = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] >= ST_MAX_VALUE ||
            __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel)) {
            writer_misuse(w, "tensor '%s': invalid shape", show(name, b1, sizeof b1));
            return;
        }
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)dtype_info[dtype].size, &nbytes) ||
        nbytes >= ST_MAX_VALUE) {
        writer_misuse(w, "tensor '%s': too large", show(name, b1, sizeof b1));
        return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->v = xrealloc(w->v, (size_t)w->cap * sizeof *w->v);
    }
    struct st_entry *e = &w->v[w->n++];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = nbytes;
}

void st_writer_add_f32(struct st_writer *w, const char *name, int32_t ndim,
                       const int64_t *shape, const float *data) {
    st_writer_add(w, name, ST_F32, ndim, shape, data);
}

void st_writer_meta(struct st_writer *w, const char *key, const char *value) {
    for (int32_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_values[i]);
            w->meta_values[i] = xstrdup(value);
            return;
        }
    }
    if (w->n_meta == w->cap_meta) {
        w->cap_meta = w->cap_meta ? 2 * w->cap_meta : 8;
        w->meta_keys = xrealloc(w->meta_keys, (size_t)w->cap_meta * sizeof(char *));
        w->meta_values = xrealloc(w->meta_values, (size_t)w->cap_meta * sizeof(char *));
    }
    w->meta_keys[w->n_meta] = xstrdup(key);
    w->meta_values[w->n_meta] = xstrdup(value);
    w->n_meta++;
}

void st_writer_free(struct st_writer *w) {
    if (!w) return;
    for (int32_t i = 0; i < w->n; i++) free(w->v[i].name);
    for (int32_t i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->v);
    free(w->meta_keys);
    free(w->meta_values);
    free(w->misuse);
    free(w);
}

/* growable text buffer for the header */
struct text {
    char *s;
    size_t len, cap;
};

static void text_put(struct text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        while (t->len + n + 1 > t->cap) t->cap = t->cap ? 2 * t->cap : 4096;
        t->s = xrealloc(t->s, t->cap);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_printf(struct text *t, const char *fmt, ...) PEFT_PRINTF(2, 3);
static void text_printf(struct text *t, const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    text_put(t, buf, (size_t)n); /* only short numeric fragments come through here */
}

static void text_json_string(struct text *t, const char *s) {
    text_put(t, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            text_put(t, esc, 2);
        } else if (*p < 0x20) {
            text_printf(t, "\\u%04x", *p);
        } else {
            text_put(t, (const char *)p, 1);
        }
    }
    text_put(t, "\"", 1);
}

static int cmp_entry(const void *a, const void *b) {
    const struct st_entry *x = a, *y = b;
    size_t sx = dtype_info[x->dtype].size, sy = dtype_info[y->dtype].size;
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

int st_writer_save(struct st_writer *w, const char *path) {
    char b1[SHOW_CAP];
    if (w->misuse) return err_set("%s: %s", path, w->misuse);
    if (w->n > 1) qsort(w->v, (size_t)w->n, sizeof *w->v, cmp_entry);
    for (int32_t i = 1; i < w->n; i++)
        if (strcmp(w->v[i - 1].name, w->v[i].name) == 0)
            return err_set("%s: tensor '%s' added more than once", path,
                           show(w->v[i].name, b1, sizeof b1));

    struct text h = {0};
    text_put(&h, "{\"__metadata__\":{", 17);
    for (int32_t i = 0; i < w->n_meta; i++) {
        if (i) text_put(&h, ",", 1);
        text_json_string(&h, w->meta_keys[i]);
        text_put(&h, ":", 1);
        text_json_string(&h, w->meta_values[i]);
    }
    text_put(&h, "}", 1);
    uint64_t offset = 0;
    for (int32_t i = 0; i < w->n; i++) {
        const struct st_entry *e = &w->v[i];
        text_put(&h, ",", 1);
        text_json_string(&h, e->name);
        text_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_info[e->dtype].name);
        for (int32_t k = 0; k < e->ndim; k++)
            text_printf(&h, "%s%lld", k ? "," : "", (long long)e->shape[k]);
        text_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                    (unsigned long long)(offset + e->nbytes));
        offset += e->nbytes;
    }
    text_put(&h, "}", 1);
    while (h.len % 8) text_put(&h, " ", 1); /* the data buffer starts 8-aligned in the file */
    if (h.len > ST_MAX_HEADER) {
        free(h.s);
        return err_set("%s: header of %zu bytes exceeds the limit of %llu", path, h.len,
                       ST_MAX_HEADER);
    }

    struct atomic_file af;
    if (atomic_open(&af, path) != 0) {
        free(h.s);
        return -1;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    int ok = fwrite(len8, 1, 8, af.f) == 8 && fwrite(h.s, 1, h.len, af.f) == h.len;
    free(h.s);
    for (int32_t i = 0; ok && i < w->n; i++)
        if (w->v[i].nbytes)
            ok = fwrite(w->v[i].data, 1, (size_t)w->v[i].nbytes, af.f) == w->v[i].nbytes;
    if (!ok) {
        int e = errno;
        atomic_abort(&af);
        return err_set("%s: write failed: %s", path, strerror(e));
    }
    return atomic_commit(&af);
}
