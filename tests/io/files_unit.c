/* Atomic writes and regular-file reads (core/files.c) against a hostile folder: a symlink
 * planted at the temporary name an earlier version used (PATH.tmp.<pid>) is not followed, a
 * special file at the destination is not replaced, a FIFO is refused without blocking, the
 * output has the permissions the umask allows, and leftover temporaries (regular files named
 * NAME.tmp.*) are removed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core.h"

int main(void) {
    char dir[] = "/tmp/peft_files_XXXXXX";
    REQUIRE(mkdtemp(dir), "mkdtemp");
    char *target = path_join(dir, "outside"), *dest = path_join(dir, "adapter.safetensors");
    REQUIRE(file_write_atomic(target, "untouched", 9) == 0, "%s", err_msg());

    /* a symlink at the predictable name */
    char *planted = xasprintf("%s.tmp.%ld", dest, (long)getpid());
    REQUIRE(symlink(target, planted) == 0, "symlink");
    CHECK(file_write_atomic(dest, "payload", 7) == 0, "write beside a planted symlink: %s", err_msg());
    char *text;
    size_t len;
    CHECK(file_read_all(target, &text, &len) == 0 && len == 9 && memcmp(text, "untouched", 9) == 0,
          "the symlink's target was written through");
    free(text);
    CHECK(file_read_all(dest, &text, &len) == 0 && len == 7 && memcmp(text, "payload", 7) == 0,
          "destination content");
    free(text);
    struct stat st;
    mode_t mask = umask(0);
    umask(mask);
    CHECK(lstat(dest, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == (0666 & ~mask),
          "mode %o, want %o", (unsigned)(st.st_mode & 0777), (unsigned)(0666 & ~mask));

    /* special files at the destination stay what they are */
    char *fifo = path_join(dir, "pipe"), *link = path_join(dir, "link");
    REQUIRE(mkfifo(fifo, 0644) == 0, "mkfifo");
    REQUIRE(symlink(target, link) == 0, "symlink");
    CHECK(file_write_atomic(fifo, "x", 1) == -1 && strstr(err_msg(), "not a regular file"),
          "FIFO replaced: %s", err_msg());
    CHECK(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO is gone");
    CHECK(file_write_atomic(link, "x", 1) == -1, "symlink replaced");
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the symlink is gone");

    /* reading a FIFO with no writer returns at once */
    CHECK(file_read_all(fifo, &text, &len) == -1 && strstr(err_msg(), "not a regular file"),
          "FIFO read: %s", err_msg());
    CHECK(file_open_regular(dir, NULL) == -1, "a folder opened as a file");

    /* leftovers: NAME.tmp.* files go, other files stay */
    char *sub = path_join(dir, "stage"), *left = path_join(sub, "adapter.safetensors.tmp.77.abcdef");
    REQUIRE(mkdir_p(sub) == 0, "%s", err_msg());
    REQUIRE(file_write_atomic(left, "", 0) == 0, "%s", err_msg());
    char *users = path_join(dir, "notes.tmp.txt"); /* a user's file that only looks alike */
    REQUIRE(file_write_atomic(users, "keep", 4) == 0, "%s", err_msg());
    int removed = file_remove_temporaries(dir, 2);
    CHECK(removed == 1 && !file_exists(left) && file_exists(dest) && file_exists(target) &&
              file_exists(users) && lstat(planted, &st) == 0,
          "removed %d (want 1: the stage's leftover; not a symlink, not a user's notes.tmp.txt)",
          removed);
    free(users);

    printf("files: planted symlink not followed, special files kept, FIFO refused, %d leftovers removed\n",
           removed);
    free(planted);
    free(target);
    free(dest);
    free(fifo);
    free(link);
    free(left);
    free(sub);
    remove_tree(dir);
    return check_report("files_unit");
}
