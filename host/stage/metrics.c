/* metrics.c: the metrics log, OUT/metrics.jsonl, one JSON object per line (train points and
 * eval points), kept in memory and rewritten whole and atomically at checkpoints and stage
 * ends, so a crash never leaves half a line. */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "stage.h"

void metrics_add(struct metrics *m, char *json_line) {
    m->lines = xrealloc(m->lines, sizeof *m->lines * (size_t)(m->n + 1));
    m->lines[m->n++] = json_line;
}

void metrics_open(struct metrics *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->path = xstrdup(path);
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len) == 0) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
            if (line[0]) metrics_add(m, xstrdup(line));
        free(text);
    }
    err_clear();
}

int metrics_flush(const struct metrics *m) {
    if (dist_rank() != 0) return 0; /* under mpirun process 0 writes the log the others share */
    size_t len = 0;
    for (int32_t i = 0; i < m->n; i++) len += strlen(m->lines[i]) + 1;
    char *buf = xmalloc(len + 1), *p = buf;
    for (int32_t i = 0; i < m->n; i++) {
        size_t n = strlen(m->lines[i]);
        memcpy(p, m->lines[i], n);
        p[n] = '\n';
        p += n + 1;
    }
    int rc = file_write_atomic(m->path, buf, len);
    free(buf);
    return rc;
}

void metrics_drop_stage(struct metrics *m, const char *stage, int64_t after_step) {
    int32_t kept = 0;
    for (int32_t i = 0; i < m->n; i++) {
        cJSON *j = cJSON_Parse(m->lines[i]);
        const cJSON *st = j ? cJSON_GetObjectItemCaseSensitive(j, "stage") : NULL;
        const cJSON *step = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
        int drop = cJSON_IsString(st) && strcmp(st->valuestring, stage) == 0 &&
                   (!cJSON_IsNumber(step) || step->valuedouble > (double)after_step ||
                    after_step < 0);
        cJSON_Delete(j);
        if (drop)
            free(m->lines[i]);
        else
            m->lines[kept++] = m->lines[i];
    }
    m->n = kept;
}

void metrics_free(struct metrics *m) {
    for (int32_t i = 0; i < m->n; i++) free(m->lines[i]);
    free(m->lines);
    free(m->path);
    memset(m, 0, sizeof *m);
}
