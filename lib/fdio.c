/*
 * fdio.c - see fdio.h.
 */
#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int fd_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t fd_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int fd_sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int fd_rename_synced(const char *from, const char *to)
{
    char dir[4096];
    const char *slash = strrchr(to, '/');
    if (rename(from, to) != 0) {
        return -errno;
    }
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == to) {
        snprintf(dir, sizeof dir, "/");
    } else if ((size_t)(slash - to) < sizeof dir) {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - to), to);
    } else {
        return -ENAMETOOLONG;
    }
    return fd_sync_dir(dir);
}

int fd_write_file_durable(const char *path,
                          const void *buf,
                          size_t len,
                          mode_t mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return -errno;
    }
    int rc = fd_write_all(fd, buf, len);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = fd_rename_synced(tmp, path);
    }
    if (rc != 0) {
        unlink(tmp);
    }
    return rc;
}
