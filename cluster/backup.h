/*
 * backup.h - scheduled backups: when the next one is due, and taking one
 * into a directory with retention.
 *
 * The schedule and the last result live in the store
 * (/cluster/backup/schedule, /cluster/backup/last: codec.h's records), so
 * a new leader goes on where the old one stopped.  The server
 * (server_backup.c) asks backup_next_ms() on its housekeeping tick and
 * runs backup_take() on libuv's thread pool, never on the loop.
 *
 * A backup is the store's snapshot (storage/store.h), the same bytes as
 * `clusterctl snapshot save` writes.  It is written aside as
 * ".clusterd-<cluster>-<time>.part" in the directory, synced, checked with
 * store_snapshot_verify (as `clusterctl snapshot verify` does), and only
 * then renamed to "clusterd-<cluster id, 16 hex>-<UTC time,
 * YYYYmmddTHHMMSSZ>-r<revision>.snap" and the directory synced: a file of
 * that name is always a whole, checked backup.  Names sort by time.
 *
 * Threads: any; nothing here keeps state.
 */
#ifndef CD_BACKUP_H
#define CD_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "../proto/codec.h"
#include "../storage/store.h"

/* A failed backup is tried again this long after it started (or at the
 * next slot of the schedule, if that comes first). */
#define BACKUP_RETRY_MS 300000u

/*
 * When the next backup is due (ms since the epoch, wall clock), or 0 for
 * never (no schedule, interval 0).  last (NULL: none taken yet) is the
 * record of the previous attempt, whichever leader made it.
 *   - Without a time of day: interval after the previous attempt; the
 *     first one when the schedule was set.
 *   - With at_minute: slots at that time of day (local time of the
 *     caller: TZ) and every interval after it; the first slot after the
 *     previous attempt, or after the schedule was set.  A slot missed (no
 *     leader then) is due at once, and only once.
 *   - After a failure: BACKUP_RETRY_MS after it, if that is sooner.
 */
uint64_t backup_next_ms(const struct cd_backup_schedule *bs,
                        const struct cd_backup_result *last);

/* What backup_take() did. */
struct backup_outcome
{
    char file[CD_BACKUP_FILE_MAX];   /* the backup's path, once renamed */
    char error[CD_BACKUP_ERROR_MAX]; /* what failed, for people */
    struct store_snapshot_info info; /* of the verified file */
    uint64_t file_bytes;
    unsigned pruned; /* older backups deleted */
};

/*
 * Take a backup of s into dir (created if missing, mode 0750) as described
 * above, then delete this cluster's oldest backups in dir beyond retain
 * (0: keep all), and part and check files of this cluster older than an
 * hour (left by a crash).  The check copies the store inside the backup
 * to ".clusterd-<cluster>-<time>.check" in dir while it runs: the room a
 * backup needs is taken from the backups' disk, never from the store's,
 * whose log must never run out of room.  now_ms names the files.  Blocks
 * for as long as the copy and the check take: call it off the event
 * loop.
 * 0, or the first error (out->error says what failed, in words); nothing
 * is left under a backup name on failure.  A failed prune is not a failed
 * backup: it is reported in out->error with 0.
 */
int backup_take(struct store *s,
                const char *dir,
                uint64_t cluster_id,
                unsigned retain,
                uint64_t now_ms,
                struct backup_outcome *out);

/* Delete the oldest backups of cluster_id in dir (by name) while more than
 * keep remain; *pruned (may be NULL) counts them.  0 or -errno. */
int backup_prune(const char *dir,
                 uint64_t cluster_id,
                 unsigned keep,
                 unsigned *pruned);

#endif
