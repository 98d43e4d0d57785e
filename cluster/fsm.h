/*
 * fsm.h - the Raft state machine: the store, applied by Raft index.
 *
 * Each committed entry is a packed Command (proto/codec.h); the FSM decodes
 * it and applies it with store_apply_group() at index raft_last_applied() +
 * 1 (the index libraft is applying), so an entry already in the store
 * (replayed after a restart) is skipped.  Business errors are per-op
 * results, never a failure of apply: a failing apply would stall
 * replication.
 *
 * Group commit: the entries raft applies are written into one open LMDB
 * transaction (storage/store.h), committed by fsm_flush() (and after
 * FSM_GROUP_ENTRIES entries, before a snapshot or a restore).  Until then
 * they are invisible to other threads' read views, so the owner calls
 * fsm_flush() before anything learns that they were applied: before a
 * client is answered, a barrier's waiters are served, or watches read.  A
 * read view begun on the loop thread commits the group itself.  The
 * applied index is written in the same transaction as the data, so a crash
 * before the commit loses whole entries, which raft replays.
 *
 * Results reach the proposer without raft's result pointer (dropped on
 * followers): before an entry is applied, the FSM asks results_for(index)
 * where its results go; the server answers with the proposing request's
 * array, or NULL on every other node, and the FSM then uses scratch space.
 *
 * A snapshot is a small header (magic, applied index, revision) and the
 * store's snapshot stream (storage/store.h).  Restoring one whose index the
 * store has already applied is a no-op: at start raft restores its last
 * snapshot, and the store, kept in step with the log, is usually ahead.
 *
 * Threads: the loop thread (raft calls these from it).  libraft 0.22.1's
 * legacy path takes snapshots synchronously on the loop even for
 * snapshot_async, so the copy is bounded by the store's size: see
 * docs/operations.md for the measured stall.
 */
#ifndef CD_FSM_H
#define CD_FSM_H

#include <raft.h>
#include <stdint.h>

#include "../lib/ops.h"
#include "../storage/store.h"

struct fsm
{
    struct raft_fsm raft_fsm; /* handed to raft_init(); data = this */
    struct raft *raft;        /* set before raft_start() */
    struct store *store;      /* borrowed */
    /* Where the results of the entry at index go; NULL: nowhere. */
    struct cd_result *(*results_for)(void *arg, uint64_t index, size_t n_ops);
    /* After each applied entry (also skipped ones: revision unchanged). */
    void (*applied)(void *arg, uint64_t index, uint64_t revision);
    /*
     * May this node take a snapshot now?  NULL: always.  libraft 0.22.1
     * crashes when an InstallSnapshot arrives while the node is writing a
     * snapshot of its own (takeSnapshotCb reads snapshot_pending after
     * clearing it, src/legacy.c), so the server declines snapshots while
     * one may arrive; raft simply tries again after a later entry.
     */
    int (*may_snapshot)(void *arg);
    /* The store failed as a whole (disk error, corruption, map full): fail
     * safe.  It must not return: apply reports success to raft after it,
     * and the entry would count as applied. */
    void (*fatal)(void *arg, int err);
    void *arg;
    struct cd_result *scratch;
    size_t scratch_len;
    /*
     * Deferred snapshots: when set, fsm's snapshot callback only returns a
     * placeholder (fsm_is_placeholder), and the owner of the raft_io copies
     * the store off the loop (fsm_snapshot_copy) before the snapshot is
     * written.  libraft 0.22.1 calls snapshot (and snapshot_async) on the
     * loop; a copy of a large store would stall it.
     */
    int deferred_snapshot;
    uint64_t revision; /* store revision after the last apply */
    uint64_t cluster_id;
};

/*
 * Encode a batch as a Raft entry payload into a buffer from raft_malloc:
 * a 4-byte big-endian length, the packed Command, zero padding to a
 * multiple of 8 bytes (libraft's uv backend refuses other lengths, and a
 * protobuf cannot carry trailing zeros).  Errors as codec_command_encode.
 */
int fsm_encode_entry(const struct cd_batch *b,
                     uint64_t cluster_id,
                     struct raft_buffer *out);

/*
 * raft_apply() disposes of the buffer itself when it fails after its first
 * checks (libraft 0.22.1 frees it on an I/O refusal): the caller frees it
 * only for the errors raised before raft took it.
 */
int fsm_apply_failed_keeps_buffer(int raft_rv);

/* Is buf the placeholder of a deferred snapshot? */
int fsm_is_placeholder(const struct raft_buffer *buf);

/*
 * Make a snapshot of the store's current state into *out (raft_malloc),
 * for raft's snapshot at index: every entry up to it must be applied and
 * committed (fsm_flush) before.  Any thread may call it (LMDB readers).
 * The state may be newer than index: apply is idempotent by index and
 * every applied entry is committed, so replaying the entries after index
 * is harmless.  The header records the later of index and the store's
 * applied index, so that a node restoring it does not take its own empty
 * store for a newer state (a snapshot of a restored backup is taken before
 * any command entry reached the store).
 */
int fsm_snapshot_copy(struct store *store,
                      uint64_t index,
                      struct raft_buffer *out);

/*
 * Commit the entries applied since the last flush (a no-op when there are
 * none).  A failure is fatal (f->fatal): entries raft counts as applied
 * are lost.  The thread that applies (the loop) only.
 */
void fsm_flush(struct fsm *f);

/* No I/O.  The callbacks and arg are set by the caller afterwards. */
int fsm_init(struct fsm *f, struct store *store);
/* Commits what is left (fsm_flush) and frees the FSM's memory. */
void fsm_close(struct fsm *f);

#endif
