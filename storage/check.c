/*
 * check.c - the full consistency walk of a store; see store_check().
 *
 * The invariants, each of which a torn or half-applied write would break:
 *   - meta: compaction revision <= revision; format known;
 *   - kv: every record decodes, 1 <= create_rev <= mod_rev <= revision,
 *     and if mod_rev is past the compaction revision, the change that
 *     wrote it is in the history, as a put of the same key and version;
 *   - changes: every record decodes, lies in (compact_rev, revision], and
 *     revisions are contiguous: each one from compact_rev + 1 to revision
 *     has at least one change, with sub-indexes 0, 1, 2, ... in order;
 *   - the latest change of each key in the history agrees with kv: a put
 *     is the key's current record (same mod_rev), a delete means absent;
 *   - logs and clients records decode.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "../lib/err.h"
#include "store_int.h"

struct walk
{
    char *why;
    size_t why_len;
};

static int fail(struct walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct walk *w, const char *fmt, ...)
{
    if (w->why != NULL && w->why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        /* va_start() is above: the analyzer of clang 14 misreads glibc's
         * va_list here (valist.Uninitialized false positive). */
        vsnprintf(w->why, w->why_len, fmt, ap); /* NOLINT */
        va_end(ap);
    }
    return CD_ECORRUPT;
}

/* Find the change (rev, *) that is a put of key; 0 if found. */
static int find_put(MDB_txn *txn,
                    struct store *s,
                    uint64_t rev,
                    const MDB_val *key,
                    uint64_t version)
{
    uint8_t kb[RECORD_CHANGE_KEY];
    MDB_val k = {sizeof kb, kb};
    MDB_val v;
    MDB_cursor *cur;
    int found = CD_ENOTFOUND;

    if (mdb_cursor_open(txn, s->dbi[STORE__CHANGES], &cur) != 0) {
        return CD_ELMDB;
    }
    record_change_key(kb, rev, 0);
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        struct store_change ch;
        if (store__change_from_record(&k, &v, &ch) != 0 || ch.revision != rev) {
            break;
        }
        if (ch.type == STORE_CHANGE_PUT && ch.kv.key_len == key->mv_size &&
            memcmp(ch.kv.key, key->mv_data, key->mv_size) == 0 &&
            ch.kv.version == version) {
            found = 0;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return found;
}

static int check_kv(MDB_txn *txn,
                    struct store *s,
                    const struct store_meta *m,
                    struct walk *w)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->dbi[STORE__KV], &cur);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        struct record_kv r;
        int bad = 0;
        if (record_kv_decode(v.mv_data, v.mv_size, &r) != 0) {
            bad = fail(w, "kv: record of key '%.*s' does not decode",
                       (int)k.mv_size, (const char *)k.mv_data);
        } else if (r.mod_rev > m->revision) {
            bad = fail(w, "kv: key '%.*s' mod_rev %llu > revision %llu",
                       (int)k.mv_size, (const char *)k.mv_data,
                       (unsigned long long)r.mod_rev,
                       (unsigned long long)m->revision);
        } else if (r.mod_rev > m->compact_rev &&
                   find_put(txn, s, r.mod_rev, &k, r.version) != 0) {
            bad = fail(w, "kv: key '%.*s' rev %llu has no history record",
                       (int)k.mv_size, (const char *)k.mv_data,
                       (unsigned long long)r.mod_rev);
        }
        if (bad) {
            mdb_cursor_close(cur);
            return bad;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : store__lmdb_err(rc);
}

/*
 * The latest change of each key, gathered during the forward walk of the
 * history.  Keys point into the read transaction's map, which stays valid
 * for the whole walk.
 */
struct latest
{
    const void *key;
    size_t key_len;
    uint64_t rev;
    uint8_t type;
};

struct latest_map
{
    struct latest *slots;
    size_t cap; /* power of two */
    size_t used;
};

static uint64_t hash_bytes(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h = (h ^ b[i]) * 1099511628211ULL;
    }
    return h;
}

static struct latest *latest_slot(struct latest_map *m,
                                  const void *key,
                                  size_t len)
{
    size_t i = (size_t)hash_bytes(key, len) & (m->cap - 1);
    while (m->slots[i].key != NULL &&
           (m->slots[i].key_len != len ||
            memcmp(m->slots[i].key, key, len) != 0)) {
        i = (i + 1) & (m->cap - 1);
    }
    return &m->slots[i];
}

static int latest_note(struct latest_map *m, const struct store_change *ch)
{
    if ((m->used + 1) * 2 > m->cap) {
        struct latest_map big = {NULL, m->cap ? m->cap * 2 : 1024, 0};
        big.slots = calloc(big.cap, sizeof *big.slots);
        if (big.slots == NULL) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i].key != NULL) {
                *latest_slot(&big, m->slots[i].key, m->slots[i].key_len) =
                    m->slots[i];
                big.used++;
            }
        }
        free(m->slots);
        *m = big;
    }
    struct latest *l = latest_slot(m, ch->kv.key, ch->kv.key_len);
    if (l->key == NULL) {
        l->key = ch->kv.key;
        l->key_len = ch->kv.key_len;
        m->used++;
    }
    l->rev = ch->revision;
    l->type = (uint8_t)ch->type;
    return 0;
}

/* Each key's latest change must be what kv shows. */
static int check_latest(MDB_txn *txn,
                        struct store *s,
                        const struct latest_map *lm,
                        struct walk *w)
{
    for (size_t i = 0; i < lm->cap; i++) {
        const struct latest *l = &lm->slots[i];
        if (l->key == NULL) {
            continue;
        }
        MDB_val k = {l->key_len, (void *)(uintptr_t)l->key};
        MDB_val v;
        struct record_kv r;
        int rc = mdb_get(txn, s->dbi[STORE__KV], &k, &v);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            return store__lmdb_err(rc);
        }
        if (l->type == STORE_CHANGE_DELETE && rc == 0) {
            return fail(w, "key '%.*s' deleted at %llu is still in kv",
                        (int)l->key_len, (const char *)l->key,
                        (unsigned long long)l->rev);
        }
        if (l->type == STORE_CHANGE_PUT &&
            (rc != 0 || record_kv_decode(v.mv_data, v.mv_size, &r) != 0 ||
             r.mod_rev != l->rev)) {
            return fail(w, "key '%.*s' put at %llu is not so in kv",
                        (int)l->key_len, (const char *)l->key,
                        (unsigned long long)l->rev);
        }
    }
    return 0;
}

static int check_changes(MDB_txn *txn,
                         struct store *s,
                         const struct store_meta *m,
                         struct latest_map *lm,
                         struct walk *w)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t expect = m->compact_rev + 1; /* next revision to see */
    uint64_t cur_rev = 0;
    uint32_t next_sub = 0;
    int rc = mdb_cursor_open(txn, s->dbi[STORE__CHANGES], &cur);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        struct store_change ch;
        int bad = 0;
        if (store__change_from_record(&k, &v, &ch) != 0) {
            bad = fail(w, "changes: a record does not decode");
        } else if (ch.revision != cur_rev) {
            if (ch.revision != expect || ch.sub != 0) {
                bad = fail(w,
                           "changes: revision %llu.%u found where %llu.0 "
                           "was expected",
                           (unsigned long long)ch.revision, ch.sub,
                           (unsigned long long)expect);
            }
            cur_rev = ch.revision;
            next_sub = 1;
            expect = cur_rev + 1;
        } else if (ch.sub != next_sub++) {
            bad = fail(w, "changes: revision %llu sub %u out of order",
                       (unsigned long long)ch.revision, ch.sub);
        }
        if (!bad && ch.revision > m->revision) {
            bad = fail(w, "changes: revision %llu > store revision %llu",
                       (unsigned long long)ch.revision,
                       (unsigned long long)m->revision);
        }
        if (!bad && (rc = latest_note(lm, &ch)) != 0) {
            mdb_cursor_close(cur);
            return rc;
        }
        if (bad) {
            mdb_cursor_close(cur);
            return bad;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    if (expect != m->revision + 1) {
        return fail(w, "changes: history ends at %llu, revision is %llu",
                    (unsigned long long)(expect - 1),
                    (unsigned long long)m->revision);
    }
    return 0;
}

static int check_other(MDB_txn *txn, struct store *s, int db, struct walk *w)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->dbi[db], &cur);
    if (rc != 0) {
        return store__lmdb_err(rc);
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        int bad = 0;
        if (db == STORE__LOGS) {
            uint64_t child, seq, t;
            const void *rec;
            size_t len;
            if (record_log_key_decode(k.mv_data, k.mv_size, &child, &seq) ||
                record_log_decode(v.mv_data, v.mv_size, &t, &rec, &len)) {
                bad = fail(w, "logs: a record does not decode");
            }
        } else {
            struct record_client c;
            if (k.mv_size != RECORD_CLIENT_KEY ||
                record_client_decode(v.mv_data, v.mv_size, &c) != 0) {
                bad = fail(w, "clients: a record does not decode");
            }
        }
        if (bad) {
            mdb_cursor_close(cur);
            return bad;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : store__lmdb_err(rc);
}

int store_check(struct store *s, char *why, size_t why_len)
{
    struct walk w = {why, why_len};
    struct store_meta m;
    MDB_txn *txn;
    int rc;

    if (why != NULL && why_len > 0) {
        why[0] = '\0';
    }
    store__settle(s);
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0) {
        return store__lmdb_err(rc);
    }
    rc = store__meta_read(txn, s, &m);
    if (rc == CD_ECORRUPT) {
        rc = fail(&w,
                  "meta: a record does not decode, or compact_rev > "
                  "revision");
    } else if (rc == 0 && m.format != STORE_FORMAT) {
        rc = fail(&w, "meta: format %llu, expected %d",
                  (unsigned long long)m.format, STORE_FORMAT);
    }
    if (rc == 0) {
        rc = check_kv(txn, s, &m, &w);
    }
    struct latest_map lm = {NULL, 0, 0};
    if (rc == 0) {
        rc = check_changes(txn, s, &m, &lm, &w);
    }
    if (rc == 0) {
        rc = check_latest(txn, s, &lm, &w);
    }
    free(lm.slots);
    if (rc == 0) {
        rc = check_other(txn, s, STORE__LOGS, &w);
    }
    if (rc == 0) {
        rc = check_other(txn, s, STORE__CLIENTS, &w);
    }
    mdb_txn_abort(txn);
    return rc;
}
