/*
 * follower.h - a child's replica of the parents' state: the cache.
 *
 * The cache is a store (storage/store.h) at <data>/cache.mdb with the
 * parents' schema, so programs on the child read it with libclusterd
 * (storage/clusterd.h) and `clusterctl get --local`, with no IPC and no
 * parent needed.
 *
 * One call of follower_run() is one connection: hello to the first parent
 * that answers (the endpoints in order, the VIP first), the changes since
 * the cache's revision, then the live stream, each batch applied in one
 * cache transaction.  When the cache's revision has been compacted away on
 * the parents, a snapshot is downloaded to <data>/cache.snap, synced,
 * verified, and copied into the cache in one transaction (never older
 * than the cache): a download cut halfway leaves the cache as it was.
 * The cache's revision never goes backwards within one history epoch
 * (store.h).  The hello carries the cache's epoch; parents of another
 * epoch (restored from a backup, forced to a new cluster) answer
 * "compacted", and the snapshot that follows replaces the cache even if
 * it is older: the one time its revision may go backwards, logged.
 *
 * Threads: one thread runs the follower; follower_revision(),
 * follower_state() and follower_contact_ms() may be read from others.
 */
#ifndef CD_AGENTS_FOLLOWER_H
#define CD_AGENTS_FOLLOWER_H

#include <stdatomic.h>
#include <stdint.h>

#include "../cluster/client.h"

struct follower_config
{
    const char *data_dir;
    const struct cd_child_identity *id; /* copied */
    const char *hostname;               /* for the parents' logs; may be NULL */
    const char *version;                /* may be NULL */
    unsigned stream_timeout_ms; /* no frame for this long: reconnect (3000) */
    unsigned keep_revisions;    /* history kept in the cache (100000) */
    /* Optional: called after each applied batch; nonzero stops the run. */
    int (*on_batch)(void *arg, uint64_t revision);
    void *arg;
};

enum follower_state {
    FOLLOWER_DEGRADED = 0, /* no parent stream: serving from the cache */
    FOLLOWER_FOLLOWING = 1 /* a parent stream is live */
};

struct follower;

/* Open the cache (created if absent).  Errors of store_open(), CD_ELOCKED
 * when another process follows into the same data dir. */
int follower_open(const struct follower_config *cfg, struct follower **out);
void follower_close(struct follower *f); /* NULL-safe */

/*
 * One connection, until it fails, the stream goes quiet for
 * stream_timeout_ms, *stop becomes nonzero (checked at each frame, so within
 * a heartbeat), or on_batch asks to stop.  Returns 0 for a stop, a
 * negative code otherwise; final ones: CD_EREVOKED (the child was
 * deregistered: seen in the stream or answered by a parent that knows),
 * CD_EBADCLUSTER (the parents are another cluster).  Anything else is
 * worth retrying after a pause.
 */
int follower_run(struct follower *f, const atomic_int *stop);

uint64_t follower_revision(struct follower *f);
enum follower_state follower_state(struct follower *f);
/* Wall-clock ms of the last frame from a parent (0: none since start;
 * then the cache's recorded contact tells). */
uint64_t follower_contact_ms(struct follower *f);
/* The cache, for reads in this process (the follower owns it). */
struct store *follower_store(struct follower *f);

#endif
