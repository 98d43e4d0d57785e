/*
 * fdio.h - whole reads and writes on file descriptors.
 *
 * write(2) and read(2) may move fewer bytes than asked and may be
 * interrupted; these loop until done.  Any thread may call them.
 */
#ifndef CD_FDIO_H
#define CD_FDIO_H

#include <stddef.h>
#include <sys/types.h>

/* Write all len bytes.  0, or -errno of write(2). */
int fd_write_all(int fd, const void *buf, size_t len);

/* Read up to len bytes, stopping early only at end of input.  The number
 * read, or -errno of read(2). */
ssize_t fd_read_full(int fd, void *buf, size_t len);

/* Make the names in directory path durable (created, renamed or removed
 * entries): fsync of the directory itself, which POSIX requires and ext4
 * or XFS only imply when something else on the file system syncs.  0, or
 * -errno of open(2) or fsync(2). */
int fd_sync_dir(const char *path);
/*
 * Rename from to to, then flush to's directory, so that the new name
 * survives a power loss (the file's own data must have been flushed
 * before).  0, or -errno of rename(2), open(2) or fsync(2): after a failed
 * flush the rename may or may not persist.
 */
int fd_rename_synced(const char *from, const char *to);

/*
 * Replace the file at path with buf (len bytes), atomically and durably:
 * written to path.tmp with mode, flushed, renamed over path, and the
 * directory flushed; path.tmp is removed on failure.  A reader sees the
 * old content or the new, never a mix, also after a power loss.  0, or
 * -errno (-ENAMETOOLONG for a path that does not fit).
 */
int fd_write_file_durable(const char *path,
                          const void *buf,
                          size_t len,
                          mode_t mode);

#endif
