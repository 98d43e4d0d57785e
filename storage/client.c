/*
 * client.c - libclusterd, the read-only client library; see clusterd.h.
 *
 * A thin layer over the store's read path (store.h opened read-only), so
 * the library and clusterd share one decoder of the on-disk format.
 */
#include "clusterd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "store.h"

_Static_assert(CLUSTERD_ENOTFOUND == CD_ENOTFOUND,
               "clusterd.h and err.h disagree on ENOTFOUND");

struct clusterd_db
{
    struct store *store;
    /* A reset view that clusterd_get reuses: one reader slot and one
     * allocation kept instead of taken and given back on every call.
     * Threads take it with an exchange; a thread that finds it taken
     * makes its own. */
    _Atomic(struct store_read *) spare;
};

struct clusterd_view
{
    struct store_read *read;
};

int clusterd_open(const char *path, clusterd_db **out)
{
    struct store_config cfg;
    clusterd_db *db;
    int rc;

    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    if (path == NULL) {
        path = getenv("CLUSTERD_DB");
    }
    if (path == NULL || path[0] == '\0') {
        path = CLUSTERD_DEFAULT_PATH;
    }
    db = calloc(1, sizeof *db);
    if (db == NULL) {
        return -ENOMEM;
    }
    store_config_init(&cfg, path);
    cfg.read_only = 1;
    if ((rc = store_open(&cfg, &db->store)) != 0) {
        free(db);
        return rc;
    }
    *out = db;
    return 0;
}

void clusterd_close(clusterd_db *db)
{
    if (db == NULL) {
        return;
    }
    store_read_end(atomic_exchange(&db->spare, NULL));
    store_close(db->store);
    free(db);
}

int clusterd_view_begin(clusterd_db *db, clusterd_view **out)
{
    clusterd_view *v = malloc(sizeof *v);
    if (v == NULL) {
        return -ENOMEM;
    }
    int rc = store_read_begin(db->store, &v->read);
    if (rc != 0) {
        free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void clusterd_view_end(clusterd_view *v)
{
    if (v == NULL) {
        return;
    }
    store_read_end(v->read);
    free(v);
}

int clusterd_view_get(clusterd_view *v,
                      const char *key,
                      size_t key_len,
                      const char **value,
                      size_t *value_len)
{
    struct store_kv kv;
    int rc = store_read_get(v->read, key, key_len, &kv);
    if (rc != 0) {
        return rc;
    }
    *value = kv.value;
    *value_len = kv.value_len;
    return 0;
}

int clusterd_get(clusterd_db *db,
                 const char *key,
                 size_t key_len,
                 char **value,
                 size_t *value_len)
{
    struct store_kv kv;
    struct store_read *r = atomic_exchange(&db->spare, NULL);
    int rc = r != NULL ? store_read_renew(r) : store_read_begin(db->store, &r);
    if (rc != 0) {
        if (r != NULL) {
            store_read_end(r);
        }
        return rc;
    }
    rc = store_read_get(r, key, key_len, &kv);
    if (rc == 0) {
        char *copy = malloc(kv.value_len + 1);
        if (copy == NULL) {
            rc = -ENOMEM;
        } else {
            memcpy(copy, kv.value, kv.value_len);
            copy[kv.value_len] = '\0';
            *value = copy;
            *value_len = kv.value_len;
        }
    }
    store_read_reset(r);
    struct store_read *none = NULL;
    if (!atomic_compare_exchange_strong(&db->spare, &none, r)) {
        store_read_end(r);
    }
    return rc;
}

struct range_ctx
{
    clusterd_range_fn fn;
    void *arg;
};

static int range_cb(void *arg, const struct store_kv *kv)
{
    struct range_ctx *c = arg;
    return c->fn(c->arg, kv->key, kv->key_len, kv->value, kv->value_len);
}

int clusterd_range(clusterd_db *db,
                   const char *prefix,
                   size_t prefix_len,
                   size_t limit,
                   clusterd_range_fn fn,
                   void *arg)
{
    struct range_ctx c = {fn, arg};
    struct store_read *r;
    int rc = store_read_begin(db->store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_range(r, prefix, prefix_len, NULL, 0, limit, range_cb, &c,
                          NULL);
    store_read_end(r);
    return rc;
}

static int read_meta(clusterd_db *db, struct store_meta *m)
{
    struct store_read *r;
    int rc = store_read_begin(db->store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_meta(r, m);
    store_read_end(r);
    return rc;
}

int clusterd_revision(clusterd_db *db, uint64_t *revision)
{
    struct store_meta m;
    int rc = read_meta(db, &m);
    if (rc == 0) {
        *revision = m.revision;
    }
    return rc;
}

int clusterd_staleness(clusterd_db *db, struct clusterd_staleness *out)
{
    struct store_meta m;
    struct timespec ts;
    int rc = read_meta(db, &m);
    if (rc != 0) {
        return rc;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t since = m.contact_ms != 0 ? m.contact_ms : m.updated_ms;
    out->revision = m.revision;
    out->updated_ms = m.updated_ms;
    out->contact_ms = m.contact_ms;
    out->age_ms = since != 0 && now > since ? now - since : 0;
    return 0;
}

int clusterd_backup_verify(const char *path,
                           const char *scratch_dir,
                           struct clusterd_backup_info *out)
{
    struct store_snapshot_info info;
    char tmp[4096];
    if (scratch_dir == NULL) {
        scratch_dir = getenv("TMPDIR");
    }
    if (scratch_dir == NULL || scratch_dir[0] == '\0') {
        scratch_dir = "/tmp";
    }
    if (snprintf(tmp, sizeof tmp, "%s/.clusterd-verify-XXXXXX", scratch_dir) >=
        (int)sizeof tmp) {
        return -ENAMETOOLONG;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int t = mkostemp(tmp, O_CLOEXEC);
    if (t < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    close(t);
    /* The check writes the store copy to tmp and removes it. */
    int rc = store_snapshot_verify(fd, tmp, &info);
    close(fd);
    unlink(tmp);
    if (rc == 0 && out != NULL) {
        memset(out, 0, sizeof *out);
        out->cluster_id = info.meta.cluster_id;
        out->epoch = info.meta.epoch;
        out->revision = info.meta.revision;
        out->compact_rev = info.meta.compact_rev;
        out->keys = info.keys;
        out->updated_ms = info.meta.updated_ms;
        out->bytes = info.bytes;
        out->crc32 = info.crc32;
        out->format = (uint32_t)info.meta.format;
    }
    return rc;
}

const char *clusterd_strerror(int err)
{
    return cd_strerror(err);
}
