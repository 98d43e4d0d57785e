/*
 * bootmark.h - may a store written without flushes be trusted at start?
 *
 * A parent's store commits without flushing (docs/storage.md): the Raft log
 * in front of it is the write-ahead log.  A process that dies (kill -9, an
 * assertion, exit 70) loses nothing, because its writes live on in the page
 * cache; a machine that stops (power loss, kernel crash, reset) may leave
 * any mix of the unflushed pages on disk, which LMDB cannot detect.  Such a
 * store is thrown away and rebuilt from raft's snapshot and log.
 *
 * The mark is a small file beside the store that says which system boot
 * may hold unflushed writes of it:
 *   - the id of a boot (Linux's /proc/sys/kernel/random/boot_id): written,
 *     durably, before the first unflushed commit of a run;
 *   - "clean": written after a flush of everything (a graceful stop);
 *   - "rebuild": a flush failed (the disk lost writes it had taken).
 * The store is trusted when the mark is absent (no unflushed run ever
 * wrote it), "clean", or names the boot that runs now.  Anything else (an
 * older boot, "rebuild", a damaged mark) means rebuild.
 *
 * Every write of the mark is atomic (a temporary file renamed over it) and
 * durable (file and directory synced) when the call returns.
 *
 * Errors: 0 or a negative errno.  Threads: any; the calls block on disk.
 */
#ifndef CD_BOOTMARK_H
#define CD_BOOTMARK_H

#include <stddef.h>

/* The running boot's id, NUL-terminated, into out (at least 40 bytes).
 * Errors: -errno of reading /proc, -EINVAL if it looks wrong. */
int bootmark_boot_id(char *out, size_t len);

/* Is the store the mark at path speaks for to be trusted?  *trusted is set
 * to 1 or 0 (0 as well when the mark names a boot but the running boot's
 * id cannot be read).  Errors: -errno of reading the mark (other than its
 * absence). */
int bootmark_check(const char *path, int *trusted);

/* The running boot may now hold unflushed writes of the store. */
int bootmark_arm(const char *path);

/* Everything of the store is flushed. */
int bootmark_clean(const char *path);

/* The disk refused a flush: the store must be rebuilt at the next start. */
int bootmark_poison(const char *path);

#endif
