/*
 * store.c - the LMDB store: schema, batch apply, reads.  Snapshots and the
 * consistency walk live in snapshot.c and check.c; see store.h.
 *
 * Apply runs a batch in one write transaction.  Every op validates its
 * input before it writes anything, so an op that fails on input (bad key,
 * value too big, duplicate request) leaves the transaction untouched and
 * the batch goes on.  The only failures that can strike after an op has
 * begun writing come from LMDB itself (the map filling up): then the whole
 * transaction is aborted and the batch is run again with each op in a
 * nested transaction, so that the op that hit the limit fails alone.  The
 * fast path pays nothing for that safety.  Only for local writes, though:
 * a replicated entry (with a Raft index) that does not fit fails as a whole
 * (see store_apply), since replicas must never differ.
 */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"

/* NULL: the meta records are in the main database (store_int.h). */
static const char *const db_names[STORE__NDB] = {"kv", "changes", NULL, "logs",
                                                 "clients"};

int store__lmdb_err(int rc)
{
    switch (rc) {
        case MDB_SUCCESS:
            return 0;
        case MDB_NOTFOUND:
            return CD_ENOTFOUND;
        case MDB_MAP_FULL:
        case MDB_TXN_FULL:
        case MDB_MAP_RESIZED:
            return CD_EMAPFULL;
        case MDB_READERS_FULL:
            return CD_EREADERSFULL;
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
        case MDB_INVALID:
        case MDB_BAD_TXN:
        case MDB_INCOMPATIBLE:
            return CD_ECORRUPT;
        case MDB_VERSION_MISMATCH:
            return CD_EVERSION;
        case MDB_BAD_VALSIZE:
            return CD_EKEYTOOBIG;
        case MDB_KEYEXIST:
            return -EEXIST;
        default:
            if (rc > 0) {
                return -rc;
            }
            return CD_ELMDB;
    }
}

void store_config_init(struct store_config *cfg, const char *path)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->path = path;
    cfg->map_size = (size_t)1 << 30;
    cfg->max_value = (size_t)1 << 20;
    cfg->max_readers = 126;
    cfg->durability = STORE_DURABLE_EACH;
}

/* --- meta helpers -------------------------------------------------------- */

int store__meta_get(MDB_txn *txn,
                    struct store *s,
                    const char *name,
                    uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)(uintptr_t)name};
    MDB_val v;
    *out = 0;
    int rc = mdb_get(txn, s->dbi[STORE__META], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    return record_meta_decode(v.mv_data, v.mv_size, out);
}

int store__meta_put(MDB_txn *txn,
                    struct store *s,
                    const char *name,
                    uint64_t value)
{
    uint8_t buf[8];
    record_put_le64(buf, value);
    MDB_val k = {strlen(name), (void *)(uintptr_t)name};
    MDB_val v = {sizeof buf, buf};
    return store__lmdb_err(mdb_put(txn, s->dbi[STORE__META], &k, &v, 0));
}

int store__meta_read(MDB_txn *txn, struct store *s, struct store_meta *m)
{
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = store__meta_get(txn, s, META_REVISION, &m->revision)) ||
        (rc = store__meta_get(txn, s, META_APPLIED, &m->applied_index)) ||
        (rc = store__meta_get(txn, s, META_CLUSTER, &m->cluster_id)) ||
        (rc = store__meta_get(txn, s, META_COMPACT, &m->compact_rev)) ||
        (rc = store__meta_get(txn, s, META_UPDATED, &m->updated_ms)) ||
        (rc = store__meta_get(txn, s, META_CONTACT, &m->contact_ms)) ||
        (rc = store__meta_get(txn, s, META_FORMAT, &m->format)) ||
        (rc = store__meta_get(txn, s, META_EPOCH, &m->epoch))) {
        return rc;
    }
    if (m->compact_rev > m->revision) {
        return CD_ECORRUPT;
    }
    return 0;
}

/* --- open / close -------------------------------------------------------- */

int store__open_dbs(MDB_txn *txn, MDB_dbi *dbi, int create)
{
    for (int i = 0; i < STORE__NDB; i++) {
        int rc = mdb_dbi_open(txn, db_names[i],
                              create && db_names[i] != NULL ? MDB_CREATE : 0,
                              &dbi[i]);
        if (rc == MDB_NOTFOUND) {
            return CD_ECORRUPT; /* not a clusterd store */
        }
        if (rc != 0) {
            return store__lmdb_err(rc);
        }
    }
    return 0;
}

int store_open(const struct store_config *cfg, struct store **out)
{
    struct store *s;
    unsigned flags = MDB_NOSUBDIR | MDB_NOTLS;
    MDB_txn *txn = NULL;
    struct stat st;
    int rc;

    *out = NULL;
    if (cfg == NULL || cfg->path == NULL || cfg->path[0] == '\0' ||
        cfg->map_size < ((size_t)1 << 20) || cfg->max_readers == 0 ||
        cfg->max_value == 0 || cfg->max_value > ((size_t)1 << 30)) {
        return CD_ECONFIG;
    }
    if (cfg->read_only && stat(cfg->path, &st) != 0) {
        return -errno;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    s->cfg = *cfg;
    s->path = strdup(cfg->path);
    if (s->path == NULL) {
        rc = -ENOMEM;
        goto err_after_alloc;
    }
    s->cfg.path = s->path;

    switch (cfg->durability) {
        case STORE_DURABLE_EACH:
            break;
        case STORE_DURABLE_DEFERRED:
            flags |= MDB_NOMETASYNC;
            break;
        case STORE_DURABLE_NONE:
            flags |= MDB_NOSYNC;
            break;
        default:
            rc = CD_ECONFIG;
            goto err_after_alloc;
    }
    if (cfg->read_only) {
        flags |= MDB_RDONLY;
    }

    if ((rc = mdb_env_create(&s->env)) != 0) {
        rc = store__lmdb_err(rc);
        goto err_after_alloc;
    }
    if ((rc = mdb_env_set_mapsize(s->env, cfg->map_size)) != 0 ||
        (rc = mdb_env_set_maxdbs(s->env, STORE__NDB + 2)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, cfg->max_readers)) != 0 ||
        (rc = mdb_env_open(s->env, cfg->path, flags, 0644)) != 0) {
        rc = store__lmdb_err(rc);
        goto err_after_env;
    }
    /* Clear reader slots left by processes that died holding them. */
    int dead = 0;
    mdb_reader_check(s->env, &dead);

    rc = mdb_txn_begin(s->env, NULL, cfg->read_only ? MDB_RDONLY : 0, &txn);
    if (rc != 0) {
        rc = store__lmdb_err(rc);
        goto err_after_env;
    }
    if ((rc = store__open_dbs(txn, s->dbi, !cfg->read_only)) != 0) {
        goto err_after_txn;
    }
    uint64_t format;
    if ((rc = store__meta_get(txn, s, META_FORMAT, &format)) != 0) {
        goto err_after_txn;
    }
    if (format > STORE_FORMAT) {
        rc = CD_EVERSION;
        goto err_after_txn;
    }
    if (cfg->read_only) {
        if (format == 0) {
            rc = CD_ECORRUPT;
            goto err_after_txn;
        }
        /* Commit, not abort: LMDB closes the handles of sub-databases
         * opened in a transaction that is aborted, read-only or not. */
        if ((rc = mdb_txn_commit(txn)) != 0) {
            rc = store__lmdb_err(rc);
            goto err_after_env;
        }
    } else {
        if (format == 0 &&
            (rc = store__meta_put(txn, s, META_FORMAT, STORE_FORMAT)) != 0) {
            goto err_after_txn;
        }
        if ((rc = mdb_txn_commit(txn)) != 0) {
            rc = store__lmdb_err(rc);
            goto err_after_env;
        }
    }
    *out = s;
    return 0;

err_after_txn:
    mdb_txn_abort(txn);
err_after_env:
    mdb_env_close(s->env);
err_after_alloc:
    free(s->path);
    free(s);
    return rc;
}

void store_close(struct store *s)
{
    if (s == NULL) {
        return;
    }
    /* The group's entries were applied: keep them. */
    store__settle(s);
    mdb_env_close(s->env);
    free(s->scratch);
    free(s->path);
    free(s);
}

int store_sync(struct store *s)
{
    if (s->cfg.read_only) {
        return 0;
    }
    store__settle(s);
    return store__lmdb_err(mdb_env_sync(s->env, 1));
}

int store_set_durability(struct store *s, enum store_durability d)
{
    const unsigned all = MDB_NOSYNC | MDB_NOMETASYNC;
    unsigned flags;
    switch (d) {
        case STORE_DURABLE_EACH:
            flags = 0;
            break;
        case STORE_DURABLE_DEFERRED:
            flags = MDB_NOMETASYNC;
            break;
        case STORE_DURABLE_NONE:
            flags = MDB_NOSYNC;
            break;
        default:
            return CD_ECONFIG;
    }
    if (s->cfg.read_only) {
        return -EROFS;
    }
    store__settle(s);
    if (d != STORE_DURABLE_NONE && s->cfg.durability == STORE_DURABLE_NONE) {
        int rc = store__lmdb_err(mdb_env_sync(s->env, 1));
        if (rc != 0) {
            return rc;
        }
    }
    int rc = mdb_env_set_flags(s->env, all, 0);
    if (rc == 0 && flags != 0) {
        rc = mdb_env_set_flags(s->env, flags, 1);
    }
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    s->cfg.durability = d;
    return 0;
}

static int set_local_meta(struct store *s, const char *name, uint64_t v)
{
    MDB_txn *txn;
    int rc;
    if (s->cfg.read_only) {
        return -EROFS;
    }
    store__settle(s);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
        return store__lmdb_err(rc);
    }
    if ((rc = store__meta_put(txn, s, name, v)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return store__lmdb_err(mdb_txn_commit(txn));
}

int store_set_cluster_id(struct store *s, uint64_t cluster_id)
{
    return set_local_meta(s, META_CLUSTER, cluster_id);
}

int store_set_epoch(struct store *s, uint64_t epoch)
{
    return set_local_meta(s, META_EPOCH, epoch);
}

int store_reset_index(struct store *s)
{
    return set_local_meta(s, META_APPLIED, 0);
}

int store_set_contact(struct store *s, uint64_t contact_ms)
{
    return set_local_meta(s, META_CONTACT, contact_ms);
}

/* --- apply --------------------------------------------------------------- */

/* State of one apply: the transaction and the revision being built. */
struct apply_ctx
{
    struct store *s;
    MDB_txn *txn;
    uint64_t rev;      /* store revision so far */
    uint64_t op_rev;   /* revision of the current op, 0 until it changes kv */
    uint32_t sub;      /* next sub-index within op_rev */
    uint64_t time_ms;  /* the batch's time */
    uint64_t compact;  /* compaction revision */
    int compact_dirty; /* compact changed: write it to meta */
};

static int check_key(const struct store *s, struct cd_buf key)
{
    (void)s;
    if (key.len == 0 || key.data == NULL) {
        return CD_EBADKEY;
    }
    if (key.len > STORE_MAX_KEY) {
        return CD_EKEYTOOBIG;
    }
    return 0;
}

static int check_value(const struct store *s, struct cd_buf value)
{
    if (value.len > s->cfg.max_value) {
        return CD_EVALTOOBIG;
    }
    if (value.len > 0 && value.data == NULL) {
        return -EINVAL;
    }
    return 0;
}

/* Grow the store's scratch buffer; it holds one record being encoded. */
static int scratch(struct store *s, size_t len, uint8_t **out)
{
    if (len > s->scratch_len) {
        size_t n = len < 4096 ? 4096 : len;
        uint8_t *p = realloc(s->scratch, n);
        if (p == NULL) {
            return -ENOMEM;
        }
        s->scratch = p;
        s->scratch_len = n;
    }
    *out = s->scratch;
    return 0;
}

/* The revision the current op writes at: taken at its first change. */
static uint64_t op_revision(struct apply_ctx *c)
{
    if (c->op_rev == 0) {
        c->op_rev = ++c->rev;
        c->sub = 0;
    }
    return c->op_rev;
}

static int put_change(struct apply_ctx *c, const struct record_change *ch)
{
    uint8_t key[RECORD_CHANGE_KEY];
    uint8_t *buf;
    size_t len = record_change_size(ch->key_len, ch->value_len);
    int rc = scratch(c->s, len, &buf);
    if (rc != 0) {
        return rc;
    }
    record_change_encode(buf, ch);
    record_change_key(key, c->op_rev, c->sub++);
    MDB_val k = {sizeof key, key};
    MDB_val v = {len, buf};
    /* Revisions only grow, so history is always appended at its end. */
    rc = mdb_put(c->txn, c->s->dbi[STORE__CHANGES], &k, &v, MDB_APPEND);
    if (rc == MDB_KEYEXIST) {
        return CD_ECORRUPT; /* a revision at or below the last recorded */
    }
    return store__lmdb_err(rc);
}

/* Look a key up: 0 and *found set, or an LMDB/corruption error. */
static int get_kv(struct apply_ctx *c,
                  struct cd_buf key,
                  struct record_kv *out,
                  int *found)
{
    MDB_val k = {key.len, (void *)(uintptr_t)key.data};
    MDB_val v;
    *found = 0;
    int rc = mdb_get(c->txn, c->s->dbi[STORE__KV], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    *found = 1;
    return record_kv_decode(v.mv_data, v.mv_size, out);
}

static int do_put(struct apply_ctx *c, struct cd_buf key, struct cd_buf value)
{
    struct record_kv old, rec;
    int found, rc;

    if ((rc = get_kv(c, key, &old, &found)) != 0) {
        return rc;
    }
    uint64_t rev = op_revision(c);
    rec.create_rev = found ? old.create_rev : rev;
    rec.mod_rev = rev;
    rec.version = found ? old.version + 1 : 1;
    rec.value = value.data;
    rec.value_len = value.len;

    MDB_val k = {key.len, (void *)(uintptr_t)key.data};
    MDB_val v = {record_kv_size(value.len), NULL};
    rc = mdb_put(c->txn, c->s->dbi[STORE__KV], &k, &v, MDB_RESERVE);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    record_kv_encode(v.mv_data, &rec);

    struct record_change ch = {
        .type = STORE_CHANGE_PUT,
        .create_rev = rec.create_rev,
        .mod_rev = rev,
        .version = rec.version,
        .key = key.data,
        .key_len = key.len,
        .value = value.data,
        .value_len = value.len,
    };
    return put_change(c, &ch);
}

/* Record the deletion of a key whose current record is old. */
static int delete_change(struct apply_ctx *c,
                         const void *key,
                         size_t key_len,
                         const struct record_kv *old)
{
    struct record_change ch = {
        .type = STORE_CHANGE_DELETE,
        .create_rev = old->create_rev,
        .mod_rev = op_revision(c),
        .version = 0,
        .key = key,
        .key_len = key_len,
    };
    return put_change(c, &ch);
}

static int do_delete(struct apply_ctx *c, struct cd_buf key, uint64_t *n)
{
    struct record_kv old;
    int found, rc;

    if ((rc = get_kv(c, key, &old, &found)) != 0) {
        return rc;
    }
    if (!found) {
        return 0;
    }
    if ((rc = delete_change(c, key.data, key.len, &old)) != 0) {
        return rc;
    }
    MDB_val k = {key.len, (void *)(uintptr_t)key.data};
    if ((rc = mdb_del(c->txn, c->s->dbi[STORE__KV], &k, NULL)) != 0) {
        return store__lmdb_err(rc);
    }
    (*n)++;
    return 0;
}

/* Does key k start with prefix?  The empty prefix (data may be NULL)
 * matches everything; memcmp must not see a NULL pointer even for 0. */
static int has_prefix(const MDB_val *k, const void *prefix, size_t len)
{
    return len == 0 ||
           (k->mv_size >= len && memcmp(k->mv_data, prefix, len) == 0);
}

static int do_delete_prefix(struct apply_ctx *c,
                            struct cd_buf prefix,
                            uint64_t *n)
{
    MDB_cursor *cur;
    MDB_val k = {prefix.len, (void *)(uintptr_t)prefix.data};
    MDB_val v;
    int rc = mdb_cursor_open(c->txn, c->s->dbi[STORE__KV], &cur);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    rc = prefix.len > 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                        : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        if (!has_prefix(&k, prefix.data, prefix.len)) {
            break;
        }
        struct record_kv old;
        if ((rc = record_kv_decode(v.mv_data, v.mv_size, &old)) != 0 ||
            (rc = delete_change(c, k.mv_data, k.mv_size, &old)) != 0) {
            mdb_cursor_close(cur);
            return rc;
        }
        if ((rc = mdb_cursor_del(cur, 0)) != 0) {
            break;
        }
        (*n)++;
        /* Seek again rather than trust the cursor's position after a
         * delete (LMDB answers EINVAL when it deleted the last record). */
        k.mv_data = (void *)(uintptr_t)prefix.data;
        k.mv_size = prefix.len;
        rc = prefix.len > 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                            : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    return 0;
}

static int cmp_numbers(uint64_t cur, uint64_t want, enum cd_cmp_result r)
{
    switch (r) {
        case CD_CMP_EQUAL:
            return cur == want;
        case CD_CMP_NOT_EQUAL:
            return cur != want;
        case CD_CMP_LESS:
            return cur < want;
        case CD_CMP_GREATER:
            return cur > want;
    }
    return 0;
}

/* Does an ordering d (<0, 0, >0: current against given) satisfy r? */
static int cmp_order(int d, enum cd_cmp_result r)
{
    switch (r) {
        case CD_CMP_EQUAL:
            return d == 0;
        case CD_CMP_NOT_EQUAL:
            return d != 0;
        case CD_CMP_LESS:
            return d < 0;
        case CD_CMP_GREATER:
            return d > 0;
    }
    return 0;
}

static int cmp_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int d = n > 0 ? memcmp(a, b, n) : 0;
    if (d != 0) {
        return d;
    }
    return (alen > blen) - (alen < blen);
}

static int check_compare(const struct store *s, const struct cd_compare *cmp)
{
    int rc = check_key(s, cmp->key);
    if (rc != 0) {
        return rc;
    }
    if (cmp->target < CD_CMP_VALUE || cmp->target > CD_CMP_EXISTS ||
        cmp->result < CD_CMP_EQUAL || cmp->result > CD_CMP_GREATER) {
        return CD_EBADOP;
    }
    if (cmp->value.len > 0 && cmp->value.data == NULL) {
        return -EINVAL;
    }
    return 0;
}

/* Evaluate one compare against the current state: 1 holds, 0 not, <0. */
static int eval_compare(struct apply_ctx *c, const struct cd_compare *cmp)
{
    struct record_kv cur;
    int found, rc;
    if ((rc = get_kv(c, cmp->key, &cur, &found)) != 0) {
        return rc;
    }
    switch (cmp->target) {
        case CD_CMP_VALUE:
            if (!found) {
                return 0;
            }
            return cmp_order(cmp_bytes(cur.value, cur.value_len,
                                       cmp->value.data, cmp->value.len),
                             cmp->result);
        case CD_CMP_VERSION:
            return cmp_numbers(found ? cur.version : 0, cmp->number,
                               cmp->result);
        case CD_CMP_CREATE_REV:
            return cmp_numbers(found ? cur.create_rev : 0, cmp->number,
                               cmp->result);
        case CD_CMP_MOD_REV:
            return cmp_numbers(found ? cur.mod_rev : 0, cmp->number,
                               cmp->result);
        case CD_CMP_EXISTS:
            return cmp_numbers(found ? 1 : 0, cmp->number, cmp->result);
    }
    return CD_EBADOP;
}

/* Validate a plain op (one that may stand in a transaction branch). */
static int check_simple_op(const struct store *s, const struct cd_op *op)
{
    int rc;
    switch (op->type) {
        case CD_OP_PUT:
            if ((rc = check_key(s, op->key)) != 0) {
                return rc;
            }
            return check_value(s, op->value);
        case CD_OP_DELETE:
            return check_key(s, op->key);
        case CD_OP_DELETE_PREFIX:
            if (op->key.len > STORE_MAX_KEY) {
                return CD_EKEYTOOBIG;
            }
            if (op->key.len > 0 && op->key.data == NULL) {
                return CD_EBADKEY;
            }
            return 0;
        default:
            return CD_EBADOP;
    }
}

static int run_simple_op(struct apply_ctx *c,
                         const struct cd_op *op,
                         struct cd_result *res)
{
    switch (op->type) {
        case CD_OP_PUT:
            return do_put(c, op->key, op->value);
        case CD_OP_DELETE:
            return do_delete(c, op->key, &res->n_deleted);
        case CD_OP_DELETE_PREFIX:
            return do_delete_prefix(c, op->key, &res->n_deleted);
        default:
            return CD_EBADOP;
    }
}

static int do_txn(struct apply_ctx *c,
                  const struct cd_op *op,
                  struct cd_result *res)
{
    int rc;
    if ((op->n_compares > 0 && op->compares == NULL) ||
        (op->n_then > 0 && op->then_ops == NULL) ||
        (op->n_else > 0 && op->else_ops == NULL)) {
        return -EINVAL;
    }
    /* Validate everything first: a bad branch fails the txn either way. */
    for (size_t i = 0; i < op->n_compares; i++) {
        if ((rc = check_compare(c->s, &op->compares[i])) != 0) {
            return rc;
        }
    }
    for (size_t i = 0; i < op->n_then; i++) {
        if ((rc = check_simple_op(c->s, &op->then_ops[i])) != 0) {
            return rc;
        }
    }
    for (size_t i = 0; i < op->n_else; i++) {
        if ((rc = check_simple_op(c->s, &op->else_ops[i])) != 0) {
            return rc;
        }
    }
    int ok = 1;
    for (size_t i = 0; i < op->n_compares && ok; i++) {
        rc = eval_compare(c, &op->compares[i]);
        if (rc < 0) {
            return rc;
        }
        ok = rc;
    }
    res->succeeded = ok;
    const struct cd_op *branch = ok ? op->then_ops : op->else_ops;
    size_t n = ok ? op->n_then : op->n_else;
    for (size_t i = 0; i < n; i++) {
        if ((rc = run_simple_op(c, &branch[i], res)) != 0) {
            return rc;
        }
    }
    return 0;
}

static int do_compact(struct apply_ctx *c, uint64_t rev)
{
    if (rev == 0 || rev > c->rev) {
        return CD_EBADREV;
    }
    if (rev <= c->compact) {
        return CD_ECOMPACTED;
    }
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(c->txn, c->s->dbi[STORE__CHANGES], &cur);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        uint64_t r;
        uint32_t sub;
        if (record_change_key_decode(k.mv_data, k.mv_size, &r, &sub) != 0) {
            mdb_cursor_close(cur);
            return CD_ECORRUPT;
        }
        if (r > rev) {
            break;
        }
        if ((rc = mdb_cursor_del(cur, 0)) != 0) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    c->compact = rev;
    c->compact_dirty = 1;
    return 0;
}

static int do_log_append(struct apply_ctx *c, const struct cd_op *op)
{
    uint8_t key[RECORD_LOG_KEY];
    if (op->child_id == 0) {
        return CD_EBADOP;
    }
    int rc = check_value(c->s, op->value);
    if (rc != 0) {
        return rc;
    }
    record_log_key(key, op->child_id, op->log_seq);
    MDB_val k = {sizeof key, key};
    MDB_val v = {RECORD_LOG_HEADER + op->value.len, NULL};
    /* (child, seq) is the record's identity: a re-upload is a duplicate. */
    rc = mdb_put(c->txn, c->s->dbi[STORE__LOGS], &k, &v,
                 MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc == MDB_KEYEXIST) {
        return CD_EDUPLICATE;
    }
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    uint8_t *p = v.mv_data;
    p[0] = RECORD_FORMAT;
    record_put_le64(p + 1, op->log_time_ms);
    if (op->value.len > 0) {
        memcpy(p + RECORD_LOG_HEADER, op->value.data, op->value.len);
    }
    return 0;
}

/*
 * Deduplication of retried writes.  Each client keeps a window of the last
 * 64 sequence numbers: a seq above the window's top moves it; one inside it
 * is a duplicate if its bit is set; one below it cannot be told apart and
 * is refused (the client treats that as an unknown outcome).  A client
 * never has more than 64 writes in flight, so the window is enough.
 */
static int dedup_check(struct apply_ctx *c,
                       const struct cd_op *op,
                       struct record_client *rec,
                       int *found)
{
    uint8_t key[RECORD_CLIENT_KEY];
    MDB_val k = {sizeof key, key};
    MDB_val v;

    *found = 0;
    if (op->seq == 0) {
        return CD_EBADOP;
    }
    record_put_be64(key, op->client_id);
    int rc = mdb_get(c->txn, c->s->dbi[STORE__CLIENTS], &k, &v);
    if (rc == MDB_NOTFOUND) {
        *found = 0;
        return 0;
    }
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    if ((rc = record_client_decode(v.mv_data, v.mv_size, rec)) != 0) {
        return rc;
    }
    *found = 1;
    if (op->seq > rec->max_seq) {
        return 0;
    }
    uint64_t back = rec->max_seq - op->seq;
    if (back >= 64) {
        return CD_ETOOOLD;
    }
    if (rec->window & ((uint64_t)1 << back)) {
        return CD_EDUPLICATE;
    }
    return 0;
}

static int dedup_record(struct apply_ctx *c,
                        const struct cd_op *op,
                        struct record_client *rec,
                        int found)
{
    uint8_t key[RECORD_CLIENT_KEY];
    uint8_t val[RECORD_CLIENT_SIZE];

    if (!found) {
        rec->max_seq = op->seq;
        rec->window = 1;
    } else if (op->seq > rec->max_seq) {
        uint64_t shift = op->seq - rec->max_seq;
        rec->window = shift >= 64 ? 0 : rec->window << shift;
        rec->window |= 1;
        rec->max_seq = op->seq;
    } else {
        rec->window |= (uint64_t)1 << (rec->max_seq - op->seq);
    }
    rec->last_ms = c->time_ms;
    record_put_be64(key, op->client_id);
    record_client_encode(val, rec);
    MDB_val k = {sizeof key, key};
    MDB_val v = {sizeof val, val};
    return store__lmdb_err(
        mdb_put(c->txn, c->s->dbi[STORE__CLIENTS], &k, &v, 0));
}

/*
 * Is rc a failure of the input (the op fails alone, nothing was written)
 * rather than of the storage (the transaction may be half written)?
 */
static int input_error(int rc)
{
    switch (rc) {
        case CD_EBADKEY:
        case CD_EKEYTOOBIG:
        case CD_EVALTOOBIG:
        case CD_EBADREV:
        case CD_ECOMPACTED:
        case CD_EBADOP:
        case CD_EDUPLICATE:
        case CD_ETOOOLD:
        case -EINVAL:
            return 1;
        default:
            return 0;
    }
}

static int apply_op(struct apply_ctx *c,
                    const struct cd_op *op,
                    struct cd_result *res)
{
    struct record_client client;
    int found = 0;
    int rc;

    c->op_rev = 0;
    if (op->client_id != 0 && op->type != CD_OP_LOG_APPEND &&
        (rc = dedup_check(c, op, &client, &found)) != 0) {
        return rc;
    }
    switch (op->type) {
        case CD_OP_PUT:
        case CD_OP_DELETE:
        case CD_OP_DELETE_PREFIX:
            rc = check_simple_op(c->s, op);
            if (rc == 0) {
                rc = run_simple_op(c, op, res);
            }
            break;
        case CD_OP_TXN:
            rc = do_txn(c, op, res);
            break;
        case CD_OP_COMPACT:
            rc = do_compact(c, op->revision);
            break;
        case CD_OP_LOG_APPEND:
            rc = do_log_append(c, op);
            break;
        default:
            rc = CD_EBADOP;
            break;
    }
    if (rc == 0 && op->client_id != 0 && op->type != CD_OP_LOG_APPEND) {
        rc = dedup_record(c, op, &client, found);
    }
    return rc;
}

#define APPLY_RETRY_NESTED 1

/*
 * Apply a batch in its own transaction, or, with group set, in the group's
 * open transaction, which is then neither committed nor aborted here: on
 * an error the caller aborts the group.
 */
static int apply_txn(struct store *s,
                     const struct cd_batch *b,
                     uint64_t raft_index,
                     struct cd_result *results,
                     int nested,
                     MDB_txn *group)
{
    struct apply_ctx c = {.s = s, .time_ms = b->time_ms};
    struct store_meta m;
    MDB_txn *parent = group;
    int rc;

    if (group == NULL && (rc = mdb_txn_begin(s->env, NULL, 0, &parent)) != 0) {
        return store__lmdb_err(rc);
    }
    if ((rc = store__meta_read(parent, s, &m)) != 0) {
        goto abort;
    }
    if (raft_index != 0 && raft_index <= m.applied_index) {
        rc = -EALREADY;
        goto abort;
    }
    c.rev = m.revision;
    c.compact = m.compact_rev;

    for (size_t i = 0; i < b->n_ops; i++) {
        struct cd_result *res = &results[i];
        uint64_t rev_before = c.rev;
        uint64_t compact_before = c.compact;
        int compact_dirty_before = c.compact_dirty;

        memset(res, 0, sizeof *res);
        if (nested) {
            if ((rc = mdb_txn_begin(s->env, parent, 0, &c.txn)) != 0) {
                rc = store__lmdb_err(rc);
                goto abort;
            }
        } else {
            c.txn = parent;
        }
        rc = apply_op(&c, &b->ops[i], res);
        if (rc != 0 && !input_error(rc)) {
            if (!nested) {
                /* A storage failure mid-op: redo the batch op by op. */
                rc = rc == CD_EMAPFULL ? APPLY_RETRY_NESTED : rc;
                goto abort;
            }
            if (rc != CD_EMAPFULL) {
                mdb_txn_abort(c.txn);
                goto abort;
            }
        }
        if (nested) {
            if (rc != 0) {
                mdb_txn_abort(c.txn);
            } else if ((rc = mdb_txn_commit(c.txn)) != 0) {
                rc = store__lmdb_err(rc);
                goto abort;
            }
        }
        if (rc != 0) {
            /* Failed alone: nothing of it was kept. */
            c.rev = rev_before;
            c.compact = compact_before;
            c.compact_dirty = compact_dirty_before;
            res->status = rc;
            res->n_deleted = 0;
            res->succeeded = 0;
        }
        res->revision = c.rev;
    }

    if ((c.rev != m.revision &&
         (rc = store__meta_put(parent, s, META_REVISION, c.rev)) != 0) ||
        (c.compact_dirty &&
         (rc = store__meta_put(parent, s, META_COMPACT, c.compact)) != 0) ||
        (raft_index != 0 &&
         (rc = store__meta_put(parent, s, META_APPLIED, raft_index)) != 0) ||
        (b->time_ms != 0 && b->time_ms != m.updated_ms &&
         (rc = store__meta_put(parent, s, META_UPDATED, b->time_ms)) != 0)) {
        goto abort;
    }
    if (group == NULL && (rc = mdb_txn_commit(parent)) != 0) {
        return store__lmdb_err(rc);
    }
    return 0;

abort:
    if (group == NULL) {
        mdb_txn_abort(parent);
    }
    return rc;
}

int store_apply(struct store *s,
                const struct cd_batch *batch,
                uint64_t raft_index,
                struct cd_result *results)
{
    if (s == NULL || batch == NULL ||
        (batch->n_ops > 0 && (batch->ops == NULL || results == NULL))) {
        return -EINVAL;
    }
    if (s->cfg.read_only) {
        return -EROFS;
    }
    store__settle(s);
    int rc = apply_txn(s, batch, raft_index, results, 0, NULL);
    if (rc == APPLY_RETRY_NESTED) {
        if (raft_index != 0) {
            /*
             * A replicated entry must apply identically everywhere, and
             * whether an op fits in the map depends on this node's file
             * (its size, its layout after a restore): failing the op alone
             * would let replicas diverge for good, since replay skips the
             * index.  The whole entry fails; the node stops (fsm fatal)
             * with its store intact, and the others go on.
             */
            return CD_EMAPFULL;
        }
        rc = apply_txn(s, batch, raft_index, results, 1, NULL);
    }
    return rc;
}

/* --- group commit -------------------------------------------------------- */

static void group_end(struct store *s)
{
    s->group = NULL;
    s->group_entries = 0;
    atomic_store_explicit(&s->group_tid, 0, memory_order_relaxed);
}

int store_apply_group(struct store *s,
                      const struct cd_batch *batch,
                      uint64_t raft_index,
                      struct cd_result *results)
{
    if (s == NULL || batch == NULL || raft_index == 0 ||
        (batch->n_ops > 0 && (batch->ops == NULL || results == NULL))) {
        return -EINVAL;
    }
    if (s->cfg.read_only) {
        return -EROFS;
    }
    int tid = (int)gettid();
    int owner = atomic_load_explicit(&s->group_tid, memory_order_relaxed);
    if (owner != 0 && owner != tid) {
        return -EBUSY; /* another thread's group: see store.h */
    }
    if (s->group_err != 0) {
        return s->group_err;
    }
    if (s->group == NULL) {
        int rc = mdb_txn_begin(s->env, NULL, 0, &s->group);
        if (rc != 0) {
            s->group = NULL;
            return store__lmdb_err(rc);
        }
        atomic_store_explicit(&s->group_tid, tid, memory_order_relaxed);
    }
    int rc = apply_txn(s, batch, raft_index, results, 0, s->group);
    if (rc == 0) {
        s->group_entries++;
        return 0;
    }
    if (rc == -EALREADY) {
        return rc; /* nothing was written: the group goes on */
    }
    /* The entry may be half written: the whole group goes.  A replicated
     * entry that does not fit fails as a whole, as in store_apply. */
    mdb_txn_abort(s->group);
    group_end(s);
    return rc == APPLY_RETRY_NESTED ? CD_EMAPFULL : rc;
}

int store_group_commit(struct store *s)
{
    int owner = atomic_load_explicit(&s->group_tid, memory_order_relaxed);
    if (owner != 0 && owner != (int)gettid()) {
        return -EBUSY;
    }
    if (s->group_err != 0) {
        return s->group_err;
    }
    if (s->group == NULL) {
        return 0;
    }
    int rc = store__lmdb_err(mdb_txn_commit(s->group));
    group_end(s);
    if (rc != 0) {
        s->group_err = rc;
    }
    return rc;
}

size_t store_group_entries(const struct store *s)
{
    return s->group_entries;
}

void store__settle(struct store *s)
{
    if (atomic_load_explicit(&s->group_tid, memory_order_relaxed) ==
        (int)gettid()) {
        store_group_commit(s); /* an error stays in group_err */
    }
}

/* --- a child's cache: applying the parents' changes ----------------------- */

/* Write one change exactly as the parents recorded it. */
static int mirror_change(struct apply_ctx *c, const struct store_change *ch)
{
    struct cd_buf key = {ch->kv.key, ch->kv.key_len};
    int rc = check_key(c->s, key);
    if (rc != 0) {
        return rc;
    }
    MDB_val k = {key.len, (void *)(uintptr_t)key.data};
    struct record_change rch = {
        .type = (uint8_t)ch->type,
        .create_rev = ch->kv.create_rev,
        .mod_rev = ch->revision,
        .key = key.data,
        .key_len = key.len,
    };
    if (ch->type == STORE_CHANGE_PUT) {
        if ((rc = check_value(
                 c->s, (struct cd_buf){ch->kv.value, ch->kv.value_len})) != 0) {
            return rc;
        }
        struct record_kv rec = {
            .create_rev = ch->kv.create_rev,
            .mod_rev = ch->revision,
            .version = ch->kv.version,
            .value = ch->kv.value,
            .value_len = ch->kv.value_len,
        };
        MDB_val v = {record_kv_size(rec.value_len), NULL};
        rc = mdb_put(c->txn, c->s->dbi[STORE__KV], &k, &v, MDB_RESERVE);
        if (rc != 0) {
            return store__lmdb_err(rc);
        }
        record_kv_encode(v.mv_data, &rec);
        rch.version = rec.version;
        rch.value = rec.value;
        rch.value_len = rec.value_len;
    } else if (ch->type == STORE_CHANGE_DELETE) {
        rc = mdb_del(c->txn, c->s->dbi[STORE__KV], &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            return store__lmdb_err(rc);
        }
    } else {
        return CD_EBADOP;
    }
    c->op_rev = ch->revision;
    c->sub = ch->sub;
    return put_change(c, &rch);
}

int store_apply_changes(struct store *s,
                        const struct store_change *changes,
                        size_t n,
                        uint64_t revision,
                        uint64_t compact_rev,
                        uint64_t time_ms)
{
    if (s == NULL || (n > 0 && changes == NULL)) {
        return -EINVAL;
    }
    if (s->cfg.read_only) {
        return -EROFS;
    }
    store__settle(s);
    /* The order is checked before anything is written: history is
     * appended, so a change out of order would read as corruption. */
    for (size_t i = 0; i < n; i++) {
        const struct store_change *ch = &changes[i];
        if (ch->revision == 0 || ch->revision > revision ||
            (i > 0 && (ch->revision < changes[i - 1].revision ||
                       (ch->revision == changes[i - 1].revision &&
                        ch->sub <= changes[i - 1].sub)))) {
            return CD_EBADREV;
        }
    }
    struct apply_ctx c = {.s = s, .time_ms = time_ms};
    struct store_meta m;
    int rc;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &c.txn)) != 0) {
        return store__lmdb_err(rc);
    }
    if ((rc = store__meta_read(c.txn, s, &m)) != 0) {
        goto abort;
    }
    if (revision <= m.revision) {
        rc = -EALREADY; /* never backwards: a replayed or stale batch */
        goto abort;
    }
    c.compact = m.compact_rev;
    for (size_t i = 0; i < n; i++) {
        if (changes[i].revision <= m.revision) {
            continue; /* already here (a batch that overlaps the cache) */
        }
        if ((rc = mirror_change(&c, &changes[i])) != 0) {
            goto abort;
        }
    }
    c.rev = revision;
    if (compact_rev > c.compact && compact_rev <= revision &&
        (rc = do_compact(&c, compact_rev)) != 0) {
        goto abort;
    }
    if ((rc = store__meta_put(c.txn, s, META_REVISION, revision)) != 0 ||
        (c.compact_dirty &&
         (rc = store__meta_put(c.txn, s, META_COMPACT, c.compact)) != 0) ||
        (time_ms != 0 && time_ms != m.updated_ms &&
         (rc = store__meta_put(c.txn, s, META_UPDATED, time_ms)) != 0)) {
        goto abort;
    }
    if ((rc = mdb_txn_commit(c.txn)) != 0) {
        return store__lmdb_err(rc);
    }
    return 0;

abort:
    mdb_txn_abort(c.txn);
    return rc;
}

/* The one-op wrappers are local writes, never replicated, so they may
 * stamp the batch with this node's clock. */
static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int apply_one(struct store *s,
                     const struct cd_op *op,
                     struct cd_result *res)
{
    struct cd_batch b = {.time_ms = wall_ms(), .ops = op, .n_ops = 1};
    memset(res, 0, sizeof *res);
    int rc = store_apply(s, &b, 0, res);
    return rc != 0 ? rc : res->status;
}

int store_put(struct store *s,
              const void *key,
              size_t key_len,
              const void *value,
              size_t value_len,
              uint64_t *rev)
{
    struct cd_op op = {
        .type = CD_OP_PUT, .key = {key, key_len}, .value = {value, value_len}};
    struct cd_result res;
    int rc = apply_one(s, &op, &res);
    if (rc == 0 && rev != NULL) {
        *rev = res.revision;
    }
    return rc;
}

static int delete_one(struct store *s,
                      enum cd_op_type type,
                      const void *key,
                      size_t key_len,
                      uint64_t *n_deleted)
{
    struct cd_op op = {.type = type, .key = {key, key_len}};
    struct cd_result res;
    int rc = apply_one(s, &op, &res);
    if (rc == 0 && n_deleted != NULL) {
        *n_deleted = res.n_deleted;
    }
    return rc;
}

int store_delete(struct store *s,
                 const void *key,
                 size_t key_len,
                 uint64_t *n_deleted)
{
    return delete_one(s, CD_OP_DELETE, key, key_len, n_deleted);
}

int store_delete_prefix(struct store *s,
                        const void *prefix,
                        size_t prefix_len,
                        uint64_t *n_deleted)
{
    return delete_one(s, CD_OP_DELETE_PREFIX, prefix, prefix_len, n_deleted);
}

int store_compact(struct store *s, uint64_t rev)
{
    struct cd_op op = {.type = CD_OP_COMPACT, .revision = rev};
    struct cd_result res;
    return apply_one(s, &op, &res);
}

/* --- reads --------------------------------------------------------------- */

int store_read_begin(struct store *s, struct store_read **out)
{
    struct store_read *r = malloc(sizeof *r);
    if (r == NULL) {
        return -ENOMEM;
    }
    r->s = s;
    store__settle(s);
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
    if (rc != 0) {
        free(r);
        return store__lmdb_err(rc);
    }
    *out = r;
    return 0;
}

void store_read_reset(struct store_read *r)
{
    mdb_txn_reset(r->txn);
}

int store_read_renew(struct store_read *r)
{
    store__settle(r->s);
    return store__lmdb_err(mdb_txn_renew(r->txn));
}

void store_read_end(struct store_read *r)
{
    if (r == NULL) {
        return;
    }
    mdb_txn_abort(r->txn);
    free(r);
}

int store_read_meta(struct store_read *r, struct store_meta *out)
{
    return store__meta_read(r->txn, r->s, out);
}

static int kv_from_record(const MDB_val *k,
                          const MDB_val *v,
                          struct store_kv *out)
{
    struct record_kv rec;
    int rc = record_kv_decode(v->mv_data, v->mv_size, &rec);
    if (rc != 0) {
        return rc;
    }
    out->key = k->mv_data;
    out->key_len = k->mv_size;
    out->value = rec.value;
    out->value_len = rec.value_len;
    out->create_rev = rec.create_rev;
    out->mod_rev = rec.mod_rev;
    out->version = rec.version;
    return 0;
}

int store_read_get(struct store_read *r,
                   const void *key,
                   size_t key_len,
                   struct store_kv *out)
{
    struct cd_buf kb = {key, key_len};
    int rc = check_key(r->s, kb);
    if (rc != 0) {
        return rc;
    }
    MDB_val k = {key_len, (void *)(uintptr_t)key};
    MDB_val v;
    rc = mdb_get(r->txn, r->s->dbi[STORE__KV], &k, &v);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    return kv_from_record(&k, &v, out);
}

int store_read_range(struct store_read *r,
                     const void *prefix,
                     size_t prefix_len,
                     const void *start,
                     size_t start_len,
                     size_t limit,
                     store_kv_cb cb,
                     void *arg,
                     int *more)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;
    int rc;

    if (more != NULL) {
        *more = 0;
    }
    if (prefix_len > STORE_MAX_KEY || start_len > STORE_MAX_KEY) {
        return CD_EKEYTOOBIG;
    }
    if ((prefix_len > 0 && prefix == NULL) ||
        (start_len > 0 && start == NULL)) {
        return -EINVAL;
    }
    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[STORE__KV], &cur)) != 0) {
        return store__lmdb_err(rc);
    }
    /* Begin at the later of prefix and start. */
    const void *from = prefix;
    size_t from_len = prefix_len;
    if (start_len > 0 && cmp_bytes(start, start_len, prefix, prefix_len) > 0) {
        from = start;
        from_len = start_len;
    }
    if (from_len > 0) {
        k.mv_data = (void *)(uintptr_t)from;
        k.mv_size = from_len;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    while (rc == 0) {
        if (!has_prefix(&k, prefix, prefix_len)) {
            break;
        }
        if (limit > 0 && n == limit) {
            if (more != NULL) {
                *more = 1;
            }
            break;
        }
        struct store_kv kv;
        if ((rc = kv_from_record(&k, &v, &kv)) != 0) {
            mdb_cursor_close(cur);
            return rc;
        }
        n++;
        if (cb(arg, &kv) != 0) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    return 0;
}

int store__change_from_record(const MDB_val *k,
                              const MDB_val *v,
                              struct store_change *out)
{
    struct record_change rec;
    int rc = record_change_key_decode(k->mv_data, k->mv_size, &out->revision,
                                      &out->sub);
    if (rc != 0) {
        return rc;
    }
    if ((rc = record_change_decode(v->mv_data, v->mv_size, &rec)) != 0) {
        return rc;
    }
    out->type = rec.type;
    out->kv.key = rec.key;
    out->kv.key_len = rec.key_len;
    out->kv.value = rec.value;
    out->kv.value_len = rec.value_len;
    out->kv.create_rev = rec.create_rev;
    out->kv.mod_rev = rec.mod_rev;
    out->kv.version = rec.version;
    if (rec.mod_rev != out->revision) {
        return CD_ECORRUPT;
    }
    return 0;
}

int store_read_changes(struct store_read *r,
                       uint64_t since,
                       size_t limit,
                       store_change_cb cb,
                       void *arg,
                       uint64_t *next_since)
{
    struct store_meta m;
    MDB_cursor *cur;
    uint8_t key[RECORD_CHANGE_KEY];
    MDB_val k = {sizeof key, key};
    MDB_val v;
    size_t n = 0;
    uint64_t done = since; /* last revision delivered whole */
    uint64_t current = 0;  /* revision being delivered */
    int rc;

    if (next_since != NULL) {
        *next_since = since;
    }
    if ((rc = store__meta_read(r->txn, r->s, &m)) != 0) {
        return rc;
    }
    if (since < m.compact_rev) {
        return CD_ECOMPACTED;
    }
    if (since > m.revision) {
        return CD_EBADREV;
    }
    if (since == m.revision) {
        return 0;
    }
    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[STORE__CHANGES], &cur)) != 0) {
        return store__lmdb_err(rc);
    }
    record_change_key(key, since + 1, 0);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        struct store_change ch;
        if ((rc = store__change_from_record(&k, &v, &ch)) != 0) {
            mdb_cursor_close(cur);
            return rc;
        }
        if (ch.revision != current) {
            /* A new revision begins: the previous one is complete. */
            done = current != 0 ? current : done;
            if (limit > 0 && n >= limit) {
                break;
            }
            current = ch.revision;
        }
        n++;
        if (cb(arg, &ch) != 0) {
            current = 0; /* stopped inside a revision: it is not done */
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND && current != 0) {
        done = current; /* ran to the end: the last revision is complete */
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    if (next_since != NULL) {
        *next_since = done;
    }
    return 0;
}

int store_read_logs(struct store_read *r,
                    uint64_t child_id,
                    uint64_t from_seq,
                    size_t limit,
                    store_log_cb cb,
                    void *arg)
{
    MDB_cursor *cur;
    uint8_t key[RECORD_LOG_KEY];
    MDB_val k = {sizeof key, key};
    MDB_val v;
    size_t n = 0;
    int rc;

    if ((rc = mdb_cursor_open(r->txn, r->s->dbi[STORE__LOGS], &cur)) != 0) {
        return store__lmdb_err(rc);
    }
    record_log_key(key, child_id, from_seq);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && (limit == 0 || n < limit)) {
        struct store_log l;
        if ((rc = record_log_key_decode(k.mv_data, k.mv_size, &l.child_id,
                                        &l.seq)) != 0 ||
            (rc = record_log_decode(v.mv_data, v.mv_size, &l.time_ms, &l.record,
                                    &l.record_len)) != 0) {
            mdb_cursor_close(cur);
            return rc;
        }
        if (l.child_id != child_id) {
            break;
        }
        n++;
        if (cb(arg, &l) != 0) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    return 0;
}
