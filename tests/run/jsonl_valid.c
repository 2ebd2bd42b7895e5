/* jsonl_valid FILE...: every line of every file is one JSON object whose numbers are finite
 * (JSON has no NaN); prints the first bad line and exits 1, else "N lines valid". */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* cJSON reads "nan" or "inf" as no number at all, but check the parsed values too. */
static int finite_numbers(const cJSON *j) {
    if (cJSON_IsNumber(j)) return isfinite(j->valuedouble);
    for (const cJSON *c = j->child; c; c = c->next)
        if (!finite_numbers(c)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    long lines = 0;
    for (int i = 1; i < argc; i++) {
        char *text;
        if (file_read_all(argv[i], &text, NULL)) {
            fprintf(stderr, "%s\n", err_msg());
            return 1;
        }
        long n = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            n++;
            cJSON *j = cJSON_Parse(line);
            int good = cJSON_IsObject(j) && finite_numbers(j);
            cJSON_Delete(j);
            if (!good) {
                fprintf(stderr, "%s:%ld: not a JSON object of finite numbers: %.200s\n", argv[i], n, line);
                free(text);
                return 1;
            }
        }
        lines += n;
        free(text);
    }
    printf("%ld lines valid\n", lines);
    return 0;
}
