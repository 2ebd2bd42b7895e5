/* files.c: whole-file reads, atomic writes, folders and paths. */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files --------------------------------------------------------------------------- */

int file_open_regular(const char *path, struct stat *st) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set("%s: not a regular file", path);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return err_set("%s: cannot open: %s", path, strerror(e));
    }
    if (st) *st = sb;
    return fd;
}

FILE *file_fopen_regular(const char *path) {
    int fd = file_open_regular(path, NULL);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        err_set("%s: cannot open: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

int file_read_all(const char *path, char **out, size_t *len) {
    struct stat st;
    int fd = file_open_regular(path, &st);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return err_set("%s: cannot open: %s", path, strerror(errno));
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set("%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

/* The temporary sibling is created exclusively under an unpredictable name (mkstemp: O_CREAT |
 * O_EXCL, so a planted file or symlink is never followed), and only a regular file (or
 * nothing) is ever replaced: a device, FIFO, folder or symlink at the destination is refused. */
int atomic_open(struct atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return err_set("%s: exists and is not a regular file; not replaced", path);
    char *tmp = xasprintf("%s.tmp.%ld.XXXXXX", path, (long)getpid());
    int fd = mkstemp(tmp);
    if (fd < 0) {
        err_set("%s: cannot write: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask); /* mkstemp's 0600 would make outputs private */
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        err_set("%s: cannot write: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    af->path = xstrdup(path);
    af->tmp_path = tmp;
    return 0;
}

/* After a rename, the folder's entry is made durable too. */
static void fsync_parent(const char *path) {
    char *dir = path_dirname(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int atomic_commit(struct atomic_file *af) {
    int rc = 0;
    if (fflush(af->f) != 0 || ferror(af->f) || fsync(fileno(af->f)) != 0)
        rc = err_set("%s: write failed: %s", af->path, strerror(errno));
    if (fclose(af->f) != 0 && rc == 0) rc = err_set("%s: write failed: %s", af->path, strerror(errno));
    af->f = NULL;
    struct stat st;
    if (rc == 0 && lstat(af->path, &st) == 0 && !S_ISREG(st.st_mode))
        rc = err_set("%s: exists and is not a regular file; not replaced", af->path);
    if (rc == 0 && rename(af->tmp_path, af->path) != 0)
        rc = err_set("%s: cannot rename into place: %s", af->path, strerror(errno));
    if (rc == 0) fsync_parent(af->path);
    if (rc != 0) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
    return rc;
}

void atomic_abort(struct atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

int file_write_atomic(const char *path, const void *data, size_t len) {
    struct atomic_file af;
    if (atomic_open(&af, path) != 0) return -1;
    if (len && fwrite(data, 1, len, af.f) != len) {
        atomic_abort(&af);
        return err_set("%s: write failed", path);
    }
    return atomic_commit(&af);
}

/* NAME.tmp.<pid>.<6 characters>: the names atomic_open gives, and no other file's (a run
 * folder may be one the user also keeps other files in). */
static int is_temporary_name(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t || t == name) return 0;
    const char *p = t + 5;
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || p[digits] != '.') return 0;
    p += digits + 1;
    if (strlen(p) != 6) return 0;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

int file_remove_temporaries(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = path_join(dir, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0) {
            if (S_ISDIR(st.st_mode) && depth > 0)
                n += file_remove_temporaries(sub, depth - 1);
            else if (S_ISREG(st.st_mode) && is_temporary_name(e->d_name) && unlink(sub) == 0)
                n++;
        }
        free(sub);
    }
    closedir(d);
    return n;
}

int dir_lock(const char *dir) {
    char *path = path_join(dir, ".lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        err_set("%s: cannot create the lock file: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        if (e == EWOULDBLOCK)
            err_set("%s: in use by another peft process%s%s%s; wait for it to end", dir,
                    holder[0] ? " (pid " : "", holder, holder[0] ? ")" : "");
        else
            err_set("%s: cannot lock: %s", path, strerror(e));
        close(fd);
        free(path);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message of a second process loses it */
    }
    free(path);
    return fd;
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mkdir_p(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            err_set("%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        rc = err_set("%s: cannot create directory: %s", p, strerror(errno));
    else if (!dir_exists(p))
        rc = err_set("%s: exists and is not a directory", p);
    free(p);
    return rc;
}

int remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return unlink(path) == 0 ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = path_join(path, e->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            rc |= remove_tree(sub);
        else
            rc |= unlink(sub);
        free(sub);
    }
    closedir(d);
    return rmdir(path) == 0 && rc == 0 ? 0 : -1;
}

char *path_join(const char *a, const char *b) {
    if (b[0] == '/' || !a || !a[0]) return xstrdup(b);
    size_t la = strlen(a);
    return xasprintf("%s%s%s", a, a[la - 1] == '/' ? "" : "/", b);
}

char *path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}
