/* inspect_diff.c: `peft inspect A --diff B`: how far two safetensors files' tensors are apart
 * (two runs that should agree: resumed and whole, one process and several). */
#include "inspect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/io.h"

static int is_float(int dtype) { return dtype == ST_F32 || dtype == ST_F16 || dtype == ST_BF16; }

/* Per tensor of a present in b: max |a - b| and that over max |a| (0 for an all-zero a). */
int peft_inspect_diff(const char *path_a, const char *path_b, FILE *out) {
    struct st_file a, b;
    if (st_open(&a, path_a)) return -1;
    if (st_open(&b, path_b)) {
        st_close(&a);
        return -1;
    }
    int rc = 0, int_differ = 0;
    double worst_rel = 0, worst_abs = 0;
    const char *worst = NULL;
    for (int32_t i = 0; i < a.n_tensors && rc == 0; i++) {
        const struct st_tensor *ta = &a.tensors[i], *tb = st_find(&b, ta->name);
        if (!tb) {
            rc = err_set("%s: no tensor '%s' (it is in %s)", path_b, ta->name, path_a);
            break;
        }
        if (tb->numel != ta->numel || tb->ndim != ta->ndim ||
            memcmp(tb->shape, ta->shape, sizeof *ta->shape * (size_t)ta->ndim) != 0) {
            rc = err_set("%s: tensor '%s' has another shape than in %s", path_b, ta->name, path_a);
            break;
        }
        if (ta->dtype != tb->dtype) {
            rc = err_set("%s: tensor '%s' is %s, %s in %s", path_b, ta->name,
                         st_dtype_name(tb->dtype), st_dtype_name(ta->dtype), path_a);
            break;
        }
        if (!is_float(ta->dtype)) { /* indices, counts: equal or not, entry by entry */
            size_t size = st_dtype_size(ta->dtype);
            uint64_t differ = 0;
            for (uint64_t j = 0; j < ta->numel; j++)
                differ += memcmp(a.data + ta->begin + j * size, b.data + tb->begin + j * size, size) != 0;
            fprintf(out, "  %-60s %s\n", ta->name, differ ? "differs" : "identical");
            if (differ) {
                fprintf(out, "    %llu of %llu entries differ\n", (unsigned long long)differ,
                        (unsigned long long)ta->numel);
                int_differ++;
            }
            continue;
        }
        float *va = xalloc_floats(ta->numel + 1), *vb = xalloc_floats(ta->numel + 1);
        if (st_read_f32(&a, ta, va, ta->numel) || st_read_f32(&b, tb, vb, tb->numel)) {
            rc = -1;
        } else {
            double max_diff = 0, max_a = 0;
            for (uint64_t j = 0; j < ta->numel; j++) {
                double d = fabs((double)va[j] - (double)vb[j]);
                if (!(d <= max_diff)) max_diff = d; /* a NaN on either side counts as apart */
                if (fabs((double)va[j]) > max_a) max_a = fabs((double)va[j]);
            }
            double rel = max_a > 0 ? max_diff / max_a : max_diff;
            fprintf(out, "  %-60s max |a-b| %.3g  relative %.3g\n", ta->name, max_diff, rel);
            if (!(rel <= worst_rel)) {
                worst_rel = rel;
                worst = ta->name;
            }
            if (!(max_diff <= worst_abs)) worst_abs = max_diff;
        }
        free(va);
        free(vb);
    }
    for (int32_t i = 0; i < b.n_tensors && rc == 0; i++)
        if (!st_find(&a, b.tensors[i].name))
            rc = err_set("%s: no tensor '%s' (it is in %s)", path_a, b.tensors[i].name, path_b);
    if (rc == 0)
        fprintf(out, "%d tensors: max |a-b| %.3g, max relative difference %.3g%s%s; %d integer "
                "tensors differ\n", (int)a.n_tensors, worst_abs, worst_rel, worst ? " in " : "",
                worst ? worst : "", int_differ);
    st_close(&a);
    st_close(&b);
    return rc;
}
