/*
 * bootmark.c - see bootmark.h.
 */
#include "bootmark.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../lib/fdio.h"

#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"
#define MARK_CLEAN "clean"
#define MARK_REBUILD "rebuild"
#define MARK_MAX 64

/* Read up to len - 1 bytes of a small file, without its trailing newline. */
static int read_small(const char *path, char *out, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    ssize_t n = read(fd, out, len - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        return -e;
    }
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) {
        out[--n] = '\0';
    }
    return 0;
}

int bootmark_boot_id(char *out, size_t len)
{
    if (len < 40) {
        return -EINVAL;
    }
    int rc = read_small(BOOT_ID_PATH, out, len);
    if (rc != 0) {
        return rc;
    }
    /* A UUID: 36 characters of hex digits and dashes. */
    if (strlen(out) != 36 || strspn(out, "0123456789abcdef-") != 36) {
        return -EINVAL;
    }
    return 0;
}

int bootmark_check(const char *path, int *trusted)
{
    char boot[64], mark[MARK_MAX];
    *trusted = 0;
    int rc = read_small(path, mark, sizeof mark);
    if (rc == -ENOENT) {
        *trusted = 1;
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    if (strcmp(mark, MARK_CLEAN) == 0) {
        *trusted = 1;
    } else if (bootmark_boot_id(boot, sizeof boot) == 0) {
        *trusted = strcmp(mark, boot) == 0;
    }
    return 0;
}

/* Replace the mark with content, atomically and durably. */
static int write_mark(const char *path, const char *content)
{
    char line[MARK_MAX + 2];
    int n = snprintf(line, sizeof line, "%s\n", content);
    return fd_write_file_durable(path, line, (size_t)n, 0644);
}

int bootmark_arm(const char *path)
{
    char boot[64];
    int rc = bootmark_boot_id(boot, sizeof boot);
    return rc != 0 ? rc : write_mark(path, boot);
}

int bootmark_clean(const char *path)
{
    return write_mark(path, MARK_CLEAN);
}

int bootmark_poison(const char *path)
{
    return write_mark(path, MARK_REBUILD);
}
