/*
 * store_int.h - what the files of storage/ share (not part of the API).
 */
#ifndef CD_STORE_INT_H
#define CD_STORE_INT_H

#include <lmdb.h>
#include <stdatomic.h>

#include "record.h"
#include "store.h"

enum {
    STORE__KV,
    STORE__CHANGES,
    STORE__META,
    STORE__LOGS,
    STORE__CLIENTS,
    STORE__NDB
};

/*
 * The meta records live in LMDB's main database, beside the records that
 * name the sub-databases: every commit rewrites the main database's page
 * anyway (sub-database roots move), so meta updates cost no extra page,
 * which is worth about 10% of the synced commit rate (docs/storage.md).
 * The "meta/" prefix keeps them apart from the sub-database names.
 */
#define META_PREFIX "meta/"
#define META_REVISION "meta/revision"
#define META_APPLIED "meta/applied_index"
#define META_CLUSTER "meta/cluster_id"
#define META_COMPACT "meta/compact_rev"
#define META_UPDATED "meta/updated_ms"
#define META_CONTACT "meta/contact_ms"
#define META_FORMAT "meta/format"
#define META_EPOCH "meta/epoch"

struct store
{
    MDB_env *env;
    MDB_dbi dbi[STORE__NDB];
    struct store_config cfg;
    char *path;
    /* Encoding buffer for apply; used only under LMDB's writer lock. */
    uint8_t *scratch;
    size_t scratch_len;
    /*
     * The open group (store_apply_group): its write transaction, and the
     * thread that owns it.  group_tid is the only field another thread
     * reads (to learn that the group is not its own); the others belong to
     * the owner.  group_err is sticky: a group that failed to commit lost
     * entries its caller counts as applied.
     */
    MDB_txn *group;
    atomic_int group_tid; /* gettid() of the owner; 0: no group */
    size_t group_entries;
    int group_err;
};

struct store_read
{
    struct store *s;
    MDB_txn *txn;
};

/*
 * Called by every entry point that begins a transaction of its own: on the
 * thread that owns an open group, commit the group first, so that this
 * thread's reads see everything it applied and its writes do not wait for
 * a writer lock it holds itself.  Elsewhere a no-op.
 */
void store__settle(struct store *s);

/* Translate an LMDB return code into a project code. */
int store__lmdb_err(int rc);
int store__open_dbs(MDB_txn *txn, MDB_dbi *dbi, int create);
int store__meta_get(MDB_txn *txn,
                    struct store *s,
                    const char *name,
                    uint64_t *out);
int store__meta_put(MDB_txn *txn,
                    struct store *s,
                    const char *name,
                    uint64_t value);
int store__meta_read(MDB_txn *txn, struct store *s, struct store_meta *m);
int store__change_from_record(const MDB_val *k,
                              const MDB_val *v,
                              struct store_change *out);

#endif
