/* Fuzz target: the JSONL example reader (data_load_jsonl). */
#include "data.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct dataset d = {0};
    struct task_table tt = {0};
    data_load_jsonl(fuzz_file("x.jsonl", data, size), &d, &tt);
    dataset_free(&d);
    task_table_free(&tt);
    err_clear();
    return 0;
}
