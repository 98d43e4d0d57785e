/*
 * clusterd.h - read-only access to a node's clusterd state (libclusterd).
 *
 * For programs on a parent or child host (the DNS agent, the LDAP cache,
 * the appliance's own daemons) that need configuration: they read the
 * node's LMDB file directly, with no IPC and no daemon in the path, so
 * reads go on while clusterd restarts or every parent is away.  Reads never
 * block clusterd's writes, and clusterd's writes never block reads.
 *
 * This header is the stable interface: it does not change incompatibly
 * within a major version (the soname is libclusterd.so.1).  Link with
 * -lclusterd -llmdb.
 *
 * Threads: a clusterd_db may be shared by threads; a clusterd_view belongs
 * to the thread that uses it.  A process may hold at most max_readers
 * (126 by default, shared with every other process) views at once.
 *
 * Errors: 0 or a negative code; clusterd_strerror() says what it means.
 * CLUSTERD_ENOTFOUND for an absent key.
 */
#ifndef CLUSTERD_H
#define CLUSTERD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Same value as CD_ENOTFOUND in lib/err.h. */
#define CLUSTERD_ENOTFOUND (-9008)

/* Default location of a child's cache; a parent's is state.mdb. */
#define CLUSTERD_DEFAULT_PATH "/var/lib/clusterd/cache.mdb"

typedef struct clusterd_db clusterd_db;
typedef struct clusterd_view clusterd_view;

/*
 * Open the store at path (NULL: $CLUSTERD_DB, else CLUSTERD_DEFAULT_PATH).
 * The process needs read access to the file and write access to its lock
 * file ("<path>-lock").  -ENOENT if clusterd has not created it yet.
 */
int clusterd_open(const char *path, clusterd_db **out);
void clusterd_close(clusterd_db *db); /* NULL-safe */

/* Get a copy of key's value: *value is from malloc (NUL-terminated for
 * convenience, not counted in *value_len); the caller frees it. */
int clusterd_get(clusterd_db *db,
                 const char *key,
                 size_t key_len,
                 char **value,
                 size_t *value_len);

/* Called for each key of a range; return nonzero to stop.  Pointers are
 * valid during the call only. */
typedef int (*clusterd_range_fn)(void *arg,
                                 const char *key,
                                 size_t key_len,
                                 const char *value,
                                 size_t value_len);

/* Every key starting with prefix, in byte order, at most limit (0: all). */
int clusterd_range(clusterd_db *db,
                   const char *prefix,
                   size_t prefix_len,
                   size_t limit,
                   clusterd_range_fn fn,
                   void *arg);

/* The store's revision: it grows by one with each change to the data. */
int clusterd_revision(clusterd_db *db, uint64_t *revision);

struct clusterd_staleness
{
    uint64_t revision;
    uint64_t updated_ms; /* time of the last change applied (ms, epoch) */
    uint64_t contact_ms; /* child: last contact with a parent; 0: never */
    uint64_t age_ms;     /* now - contact_ms (child) or - updated_ms */
};

/* How fresh the local copy is, so callers can decide to trust it. */
int clusterd_staleness(clusterd_db *db, struct clusterd_staleness *out);

/*
 * Zero-copy reads for hot paths: a view is a consistent snapshot; values
 * it returns stay valid until clusterd_view_end().  Keep views short: an
 * open view holds back the reuse of old pages.
 */
int clusterd_view_begin(clusterd_db *db, clusterd_view **out);
int clusterd_view_get(clusterd_view *v,
                      const char *key,
                      size_t key_len,
                      const char **value,
                      size_t *value_len);
void clusterd_view_end(clusterd_view *v); /* NULL-safe */

/* What a backup holds, as clusterd_backup_verify found it. */
struct clusterd_backup_info
{
    uint64_t cluster_id;  /* the fleet it belongs to */
    uint64_t epoch;       /* history epoch; changes at each restore */
    uint64_t revision;    /* the revision it was taken at */
    uint64_t compact_rev; /* history at or below this is not in it */
    uint64_t keys;        /* keys it holds */
    uint64_t updated_ms;  /* time of its last change (ms, epoch) */
    uint64_t bytes;       /* size of the store copy inside the file */
    uint32_t crc32;       /* CRC-32 of that copy, as its trailer says */
    uint32_t format;      /* the store's on-disk format version */
};

/*
 * Check a backup file (`clusterctl snapshot save`, a scheduled backup, a
 * snapshot) without a daemon: its framing, length and CRC-32, that the
 * store inside opens and has a format this library knows, and its
 * records.  The store inside is copied to a temporary file in scratch_dir
 * (NULL: $TMPDIR, else /tmp) while it is checked, so that directory needs
 * as much room as the backup.  out may be NULL.
 * Errors: -errno (path cannot be read, scratch_dir not writable),
 * CD_EBADSNAP, CD_ETRUNCATED, CD_ECHECKSUM, CD_EVERSION (lib/err.h; see
 * clusterd_strerror).
 */
int clusterd_backup_verify(const char *path,
                           const char *scratch_dir,
                           struct clusterd_backup_info *out);

const char *clusterd_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
