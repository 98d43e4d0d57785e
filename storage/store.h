/*
 * store.h - clusterd's state: one LMDB environment per node.
 *
 * The same code and schema serve a parent (<data>/state.mdb, written by the
 * Raft state machine) and a child (<data>/cache.mdb, a read-only replica of
 * the parents' state).  The store knows nothing of Raft, sockets or roles.
 *
 * Sub-databases (see docs/storage.md for the byte layouts):
 *   kv       key -> value, create_rev, mod_rev, version (latest state)
 *   changes  (revision, sub) -> change: the history watches read
 *   meta     revision, applied Raft index, cluster id, history epoch,
 *            compaction revision
 *   logs     (child id, sequence) -> log record
 *   clients  client id -> deduplication window for retried writes
 *
 * Revisions: every operation of a batch that changes kv takes the next
 * revision; all key changes of that operation (a delete-prefix, a
 * transaction) share it and are told apart by a sub-index.  Operations that
 * change nothing (deleting an absent key, a failed compare with no else
 * branch) take none.
 *
 * Threads: a struct store may be used from several threads.  Write calls
 * (store_apply and its wrappers, store_restore, store_set_*) are serialised
 * by LMDB's writer lock; read views are independent (LMDB readers never
 * block writers).  A read view must be ended on the thread that uses it, but
 * it may be begun on one thread and used on another (MDB_NOTLS).  An open
 * group (store_apply_group) belongs to the thread that opened it: see there.
 *
 * Errors: 0, or a negative code from lib/err.h.  Every error leaves the store
 * as it was before the call: LMDB transactions are all or nothing.
 */
#ifndef CD_STORE_H
#define CD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/ops.h"

/* Maximum key length: LMDB's compiled-in key limit. */
#define STORE_MAX_KEY 511
/* On-disk schema version kept in meta; a store of a newer one is refused. */
#define STORE_FORMAT 1

enum store_durability {
    /*
     * Every commit is durable when it returns: LMDB flushes the data pages,
     * then writes and flushes the meta page (two ordered flushes).
     */
    STORE_DURABLE_EACH = 0,
    /*
     * One flush per commit (MDB_NOMETASYNC): the data pages are flushed, the
     * meta page is written but flushed only by the next commit or
     * store_sync().  A power loss can undo the last commit but never
     * corrupts the store.  Safe where a log in front of the store replays
     * what was lost (the Raft log on parents: apply is idempotent by index),
     * and for callers that acknowledge only after store_sync().
     */
    STORE_DURABLE_DEFERRED = 1,
    /*
     * Nothing is flushed (MDB_NOSYNC): commits reach the page cache only.
     * A process crash loses nothing; a system crash (power loss, kernel
     * panic) can undo any commits and corrupt the store undetectably.  For
     * throwaway stores (tests, fuzzing), and for owners that can tell an
     * unclean system stop and then rebuild the store from elsewhere (a
     * parent: from raft's snapshot and log, see docs/storage.md).
     */
    STORE_DURABLE_NONE = 2,
};

struct store_config
{
    const char *path;     /* the LMDB file; "<path>-lock" is its lock */
    size_t map_size;      /* bytes; the store can never grow past it */
    size_t max_value;     /* largest value accepted by put */
    unsigned max_readers; /* concurrent read views, all processes */
    enum store_durability durability;
    int read_only; /* open an existing store for reading only */
};

/* Defaults: 1 GiB map, 1 MiB values, 126 readers, STORE_DURABLE_EACH. */
void store_config_init(struct store_config *cfg, const char *path);

struct store;

/*
 * Open (and, unless read_only, create) the store at cfg->path.  cfg is
 * copied (path included).  Errors: -ENOENT (read_only and absent),
 * -EACCES, CD_EVERSION (written by a newer clusterd), CD_ECORRUPT,
 * CD_EMAPFULL (map_size smaller than the existing data), CD_ECONFIG.
 */
int store_open(const struct store_config *cfg, struct store **out);

/* Close; NULL-safe.  Every read view must have been ended. */
void store_close(struct store *s);

/*
 * Apply a batch in one write transaction that also records raft_index as
 * the applied index.  results (n_ops entries, caller-owned) receive each
 * op's outcome: a failing op (bad key, value too big, a compaction of a
 * bad revision, a duplicate request id) fails alone, with its status in
 * results[i].status, and changes nothing; the other ops still apply.
 * Running out of map space is different: with raft_index 0 the op that did
 * not fit fails alone (CD_EMAPFULL in its status), but a replicated entry
 * (raft_index != 0) fails as a whole with CD_EMAPFULL and nothing applied,
 * because whether it fits depends on this node's file, and replicas must
 * never differ.
 *
 * raft_index 0 means "not from the log": nothing is checked or recorded.
 * Otherwise a raft_index at or below the applied index is skipped and the
 * call returns -EALREADY, so replaying the log after a crash is harmless.
 *
 * Whole-call errors (nothing applied, index not recorded): -EALREADY,
 * CD_EMAPFULL, -EIO, CD_ECORRUPT, -EROFS (read-only store), -EINVAL.
 */
int store_apply(struct store *s,
                const struct cd_batch *batch,
                uint64_t raft_index,
                struct cd_result *results);

/*
 * Group commit: store_apply() for replicated entries (raft_index != 0),
 * many entries to one LMDB transaction.  The first call opens a write
 * transaction that later calls join, and store_group_commit() commits them
 * all at once; each entry is applied and recorded exactly as store_apply()
 * would (results, revisions, the applied index, -EALREADY for an index
 * already applied, which leaves the group as it was).
 *
 * The group belongs to the thread that opened it, and until it commits it
 * holds LMDB's writer lock and is invisible to every read view.  On that
 * thread, every other call that begins a transaction (a read view, its
 * renewal, another write, a snapshot, store_check, store_sync,
 * store_close) commits the group first, so that the thread sees all it
 * applied and never waits for a lock it holds itself.  Other threads see
 * the state before the group; their writes wait until it commits; their
 * store_apply_group() and store_group_commit() calls fail with -EBUSY.
 *
 * Errors of store_apply_group: those of store_apply, and -EBUSY.  Any of
 * them but -EALREADY, -EINVAL, -EROFS and -EBUSY aborts the group: every
 * entry applied in it since the last commit is undone (an entry may fail
 * half written, as when it does not fit in the map: CD_EMAPFULL).
 *
 * store_group_commit() with no open group returns 0.  If a commit fails
 * (an implicit one too), the group's entries are lost although their
 * caller took them as applied: the error is sticky, every later
 * store_apply_group() and store_group_commit() returns it, and the caller
 * must stop using the store.  Errors: -EIO and other -errno, CD_EMAPFULL,
 * CD_ELMDB, -EBUSY.
 */
int store_apply_group(struct store *s,
                      const struct cd_batch *batch,
                      uint64_t raft_index,
                      struct cd_result *results);
int store_group_commit(struct store *s);
/* Entries applied in the open group (0: none open).  Owner thread only. */
size_t store_group_entries(const struct store *s);

/* One-op wrappers around store_apply(..., raft_index 0, ...) for local
 * writes (tools, tests, a child's own records): the batch time is this
 * node's wall clock.  They return the op's status.  rev / n_deleted may be
 * NULL. */
int store_put(struct store *s,
              const void *key,
              size_t key_len,
              const void *value,
              size_t value_len,
              uint64_t *rev);
int store_delete(struct store *s,
                 const void *key,
                 size_t key_len,
                 uint64_t *n_deleted);
int store_delete_prefix(struct store *s,
                        const void *prefix,
                        size_t prefix_len,
                        uint64_t *n_deleted);
/* Drop the history of revisions <= rev.  CD_EBADREV if rev > revision,
 * CD_ECOMPACTED if rev <= the compaction revision. */
int store_compact(struct store *s, uint64_t rev);

struct store_change; /* defined with the reading calls below */

/*
 * A child's cache: apply, in one write transaction, a run of changes as a
 * parent's history recorded them (revision, sub, create_rev, version kept
 * as they are), and move the cache to revision (normally the last change's:
 * a cache follows every key, and store_check wants every revision's
 * changes).  Changes at or below the
 * cache's revision are skipped; a revision at or below it returns
 * -EALREADY with nothing written, so the cache never goes backwards.
 * compact_rev, when above the cache's compaction revision and not past
 * revision, drops the history up to it as the parent did.  time_ms (0: leave
 * as is) is the parents' time of the batch.
 * Errors (nothing written): CD_EBADREV (changes out of order or past
 * revision), CD_EBADKEY, CD_EKEYTOOBIG, CD_EVALTOOBIG, CD_EBADOP (unknown
 * change type), CD_EMAPFULL, -EROFS, -EINVAL, CD_ELMDB.
 */
int store_apply_changes(struct store *s,
                        const struct store_change *changes,
                        size_t n,
                        uint64_t revision,
                        uint64_t compact_rev,
                        uint64_t time_ms);

/* Flush everything committed so far to disk (for STORE_DURABLE_DEFERRED
 * and NONE).  Any thread; on the thread of an open group, the group
 * commits first.  Errors: -EIO and other -errno of fdatasync(2). */
int store_sync(struct store *s);

/*
 * Change the durability of the commits that follow.  A change to a mode
 * that flushes first flushes what was committed before, so that the new
 * mode's promise holds for the whole store.  The caller's open group
 * commits first.  Call it while no other thread writes.
 * Errors: CD_ECONFIG (unknown mode), -EROFS, those of store_sync.
 */
int store_set_durability(struct store *s, enum store_durability d);

/* Node-local metadata, not replicated through batches (a snapshot carries
 * it: store_restore replaces it with the snapshot's). */
int store_set_cluster_id(struct store *s, uint64_t cluster_id);
/*
 * The history epoch: which history the revisions count.  Two stores of one
 * cluster with the same epoch hold the same change at the same revision;
 * a restore from a backup or a forced new cluster starts a new epoch, whose
 * revisions may repeat or undercut the old ones (docs/storage.md).  0 for a
 * cluster that never had either.
 */
int store_set_epoch(struct store *s, uint64_t epoch);
/* Forget the applied Raft index: for a store restored from a backup that
 * starts a new cluster, whose log begins again at index 1 (otherwise its
 * first entries would be skipped as already applied). */
int store_reset_index(struct store *s);
/* A child records when it last heard from a parent (ms since epoch). */
int store_set_contact(struct store *s, uint64_t contact_ms);

/* --- Reading ----------------------------------------------------------- */

struct store_meta
{
    uint64_t revision;      /* last revision written to kv */
    uint64_t applied_index; /* last Raft index applied, 0 if none */
    uint64_t cluster_id;    /* 0 until set */
    uint64_t compact_rev;   /* history at or below this is gone */
    uint64_t updated_ms;    /* batch time of the last applied batch */
    uint64_t contact_ms;    /* child: last contact with a parent */
    uint64_t format;        /* STORE_FORMAT of the writer */
    uint64_t epoch;         /* history epoch (store_set_epoch), 0 if none */
};

/* A key and its value as stored.  Pointers borrow from the read view (or,
 * in a range callback, are valid during the callback only). */
struct store_kv
{
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
};

enum store_change_type { STORE_CHANGE_PUT = 1, STORE_CHANGE_DELETE = 2 };

/* One key change in the history.  For a delete, kv.value is empty,
 * kv.mod_rev is the deleting revision and kv.version is 0. */
struct store_change
{
    uint64_t revision;
    uint32_t sub;
    enum store_change_type type;
    struct store_kv kv;
};

struct store_log
{
    uint64_t child_id;
    uint64_t seq;
    uint64_t time_ms;
    const void *record;
    size_t record_len;
};

/* A consistent view of the store at one moment. */
struct store_read;

/* Errors: CD_EREADERSFULL, -ENOMEM, CD_ELMDB. */
int store_read_begin(struct store *s, struct store_read **out);
/* End a view; NULL-safe.  Pointers it lent become invalid. */
void store_read_end(struct store_read *r);

/*
 * Keep a view for reuse on a hot path: store_read_reset() ends its moment
 * (it no longer holds old pages back) but keeps its reader slot;
 * store_read_renew() makes it a view of the present moment again.  A reset
 * view may be renewed, or ended, by any thread.
 */
void store_read_reset(struct store_read *r);
int store_read_renew(struct store_read *r);

int store_read_meta(struct store_read *r, struct store_meta *out);

/* CD_ENOTFOUND if absent; CD_EBADKEY / CD_EKEYTOOBIG for bad keys. */
int store_read_get(struct store_read *r,
                   const void *key,
                   size_t key_len,
                   struct store_kv *out);

/* Return nonzero from a callback to stop the walk early (not an error). */
typedef int (*store_kv_cb)(void *arg, const struct store_kv *kv);
typedef int (*store_change_cb)(void *arg, const struct store_change *c);
typedef int (*store_log_cb)(void *arg, const struct store_log *l);

/*
 * Keys starting with prefix (every key if prefix_len is 0), in byte order,
 * beginning at start (inclusive; NULL for the first), at most limit of them
 * (0: no limit).  *more (may be NULL) is set when keys remain after the
 * last one delivered.
 */
int store_read_range(struct store_read *r,
                     const void *prefix,
                     size_t prefix_len,
                     const void *start,
                     size_t start_len,
                     size_t limit,
                     store_kv_cb cb,
                     void *arg,
                     int *more);

/*
 * The changes with revision > since, in order.  limit (0: none) counts
 * changes but never splits a revision: the walk ends after the revision in
 * which it was reached.  *next_since (may be NULL) receives the revision to
 * pass next time.  CD_ECOMPACTED if since < the compaction revision (the
 * caller needs a snapshot instead); CD_EBADREV if since > revision.
 */
int store_read_changes(struct store_read *r,
                       uint64_t since,
                       size_t limit,
                       store_change_cb cb,
                       void *arg,
                       uint64_t *next_since);

/* Log records of child_id from seq from_seq on, at most limit (0: none). */
int store_read_logs(struct store_read *r,
                    uint64_t child_id,
                    uint64_t from_seq,
                    size_t limit,
                    store_log_cb cb,
                    void *arg);

/* --- Snapshots, backup and restore ------------------------------------- */

struct store_snapshot_info
{
    uint64_t bytes;         /* LMDB copy size, header and trailer excluded */
    uint32_t crc32;         /* of the LMDB copy */
    struct store_meta meta; /* of the copied state (restore/verify only) */
    uint64_t keys;          /* keys in it (restore/verify only) */
};

/*
 * Write a snapshot of the current state to fd (a file, pipe or socket):
 * a header, a compact LMDB copy of a consistent view, and a trailer with
 * its length and CRC-32.  The same bytes restore a parent, seed a child and
 * serve as the backup file (docs/storage.md).  Blocks until written: call
 * it off the event loop.  info may be NULL; its meta is left zeroed.
 * Errors: -errno of write(2), CD_ELMDB.
 */
int store_snapshot(struct store *s, int fd, struct store_snapshot_info *info);

/*
 * Replace the whole state with the snapshot read from fd.  The bytes are
 * written aside ("<path>.restore"), verified (framing, length, CRC, schema
 * version), then copied into the store in one write transaction, so a
 * failure at any point leaves the store exactly as it was, and readers in
 * other processes simply see the new state on their next view.  Needs map
 * room for both states until it commits.
 * Errors: CD_EBADSNAP, CD_ETRUNCATED, CD_ECHECKSUM, CD_EVERSION,
 * CD_EMAPFULL, -ENOSPC and other -errno, -EROFS.
 */
int store_restore(struct store *s, int fd, struct store_snapshot_info *info);

/*
 * Check a snapshot read from fd without touching any store: framing,
 * length, CRC, that the body opens as a store of a known format, and its
 * meta records; info (may be NULL) receives them and the number of keys.
 * tmp_path is where its LMDB copy is written while checking (removed
 * after), so the check needs that much room there.
 * Errors: CD_EBADSNAP, CD_ETRUNCATED, CD_ECHECKSUM, CD_EVERSION, -errno.
 */
int store_snapshot_verify(int fd,
                          const char *tmp_path,
                          struct store_snapshot_info *info);

/* --- Consistency ------------------------------------------------------- */

/*
 * Walk every record and check the invariants (records decode; revisions in
 * range; every live key's mod_rev has its change unless compacted; meta
 * consistent).  On CD_ECORRUPT, why (may be NULL, size why_len) says what.
 */
int store_check(struct store *s, char *why, size_t why_len);

#endif
