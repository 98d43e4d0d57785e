/*
 * snapshot.c - snapshots, backups and restore; see store.h.
 *
 * A snapshot is a stream:
 *   header   "CDSNAP01" (8) | format u32 BE | flags u32 BE (0) | 8 zero bytes
 *   body     a compact copy of the LMDB file (mdb_env_copyfd2, MDB_CP_COMPACT)
 *   trailer  "CDSNAPND" (8) | body length u64 BE | CRC-32 of body u32 BE |
 *            4 zero bytes
 * The body is produced by LMDB on a thread that writes into a pipe; this
 * side reads the pipe, checksums and forwards it, so any fd (file, pipe,
 * socket) can receive a snapshot without a temporary copy on disk.
 *
 * Restore never touches the live file: the body goes to a side file, is
 * verified, opened as a read-only LMDB environment, and its records are
 * copied into the live store in one write transaction.  That keeps the
 * store intact on any failure and keeps readers in other processes (the
 * child's local programs) safe: they see the old state or the new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../lib/err.h"
#include "../lib/fdio.h"
#include "store_int.h"

#define SNAP_MAGIC "CDSNAP01"
#define SNAP_END "CDSNAPND"
#define SNAP_HEADER 24
#define SNAP_TRAILER 24
#define SNAP_VERSION 1
#define SNAP_CHUNK ((size_t)256 * 1024)

struct copy_job
{
    MDB_env *env;
    int fd;
    int rc;
};

static void *copy_thread(void *arg)
{
    struct copy_job *job = arg;
    job->rc = mdb_env_copyfd2(job->env, job->fd, MDB_CP_COMPACT);
    close(job->fd); /* end of stream for the reader */
    return NULL;
}

int store_snapshot(struct store *s, int fd, struct store_snapshot_info *info)
{
    uint8_t head[SNAP_HEADER] = {0};
    uint8_t tail[SNAP_TRAILER] = {0};
    struct copy_job job;
    pthread_t tid;
    int pfd[2];
    int rc;

    store__settle(s);
    memcpy(head, SNAP_MAGIC, 8);
    record_put_be32(head + 8, SNAP_VERSION);
    if ((rc = fd_write_all(fd, head, sizeof head)) != 0) {
        return rc;
    }
    uint8_t *buf = malloc(SNAP_CHUNK);
    if (buf == NULL) {
        return -ENOMEM;
    }
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        free(buf);
        return -errno;
    }
    job.env = s->env;
    job.fd = pfd[1];
    job.rc = 0;
    if ((rc = pthread_create(&tid, NULL, copy_thread, &job)) != 0) {
        close(pfd[0]);
        close(pfd[1]);
        free(buf);
        return -rc;
    }

    uLong crc = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    int werr = 0;
    for (;;) {
        ssize_t n = read(pfd[0], buf, SNAP_CHUNK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            /* Closing our end below makes the copier fail and stop. */
            werr = werr != 0 ? werr : -errno;
            break;
        }
        if (n == 0) {
            break;
        }
        if (werr != 0) {
            continue; /* keep draining so the copier can finish */
        }
        crc = crc32(crc, buf, (uInt)n);
        total += (uint64_t)n;
        werr = fd_write_all(fd, buf, (size_t)n);
    }
    close(pfd[0]);
    pthread_join(tid, NULL);
    free(buf);
    if (werr != 0) {
        return werr;
    }
    if (job.rc != 0) {
        return store__lmdb_err(job.rc);
    }
    memcpy(tail, SNAP_END, 8);
    record_put_be64(tail + 8, total);
    record_put_be32(tail + 16, (uint32_t)crc);
    if ((rc = fd_write_all(fd, tail, sizeof tail)) != 0) {
        return rc;
    }
    if (info != NULL) {
        memset(info, 0, sizeof *info);
        info->bytes = total;
        info->crc32 = (uint32_t)crc;
    }
    return 0;
}

/*
 * Read a snapshot stream from fd to its end, writing the body to tmp_path
 * and checking header, trailer, length and CRC.  On success the body is on
 * disk and flushed.
 */
static int receive(int fd,
                   const char *tmp_path,
                   struct store_snapshot_info *info)
{
    uint8_t head[SNAP_HEADER];
    uint8_t *buf;
    /* The last SNAP_TRAILER bytes seen so far may be the trailer: they are
     * held back from the body until more data proves otherwise. */
    uint8_t hold[SNAP_TRAILER];
    size_t held = 0;
    uLong crc = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    int out, rc = 0;

    ssize_t n = fd_read_full(fd, head, sizeof head);
    if (n < 0) {
        return (int)n;
    }
    if ((size_t)n < sizeof head) {
        return n < 8 ? CD_EBADSNAP : CD_ETRUNCATED;
    }
    if (memcmp(head, SNAP_MAGIC, 8) != 0 ||
        record_get_be32(head + 8) != SNAP_VERSION) {
        return CD_EBADSNAP;
    }
    out = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        return -errno;
    }
    buf = malloc(SNAP_CHUNK + SNAP_TRAILER);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    for (;;) {
        memcpy(buf, hold, held);
        n = read(fd, buf + held, SNAP_CHUNK);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            goto done;
        }
        if (n == 0) {
            break;
        }
        size_t have = held + (size_t)n;
        size_t body = have > SNAP_TRAILER ? have - SNAP_TRAILER : 0;
        if (body > 0) {
            crc = crc32(crc, buf, (uInt)body);
            total += body;
            if ((rc = fd_write_all(out, buf, body)) != 0) {
                goto done;
            }
        }
        held = have - body;
        memcpy(hold, buf + body, held);
    }
    if (held < SNAP_TRAILER || memcmp(hold, SNAP_END, 8) != 0) {
        rc = CD_ETRUNCATED;
        goto done;
    }
    if (record_get_be64(hold + 8) != total) {
        rc = CD_ETRUNCATED;
        goto done;
    }
    if (record_get_be32(hold + 16) != (uint32_t)crc) {
        rc = CD_ECHECKSUM;
        goto done;
    }
    if (fsync(out) != 0) {
        rc = -errno;
        goto done;
    }
    info->bytes = total;
    info->crc32 = (uint32_t)crc;
done:
    free(buf);
    if (close(out) != 0 && rc == 0) {
        rc = -errno;
    }
    return rc;
}

/* A snapshot body opened as a read-only LMDB environment. */
struct snap_env
{
    MDB_env *env;
    MDB_txn *txn;
    struct store view; /* only env and dbi are set: for the meta helpers */
};

static void snap_close(struct snap_env *e)
{
    if (e->txn != NULL) {
        mdb_txn_abort(e->txn);
    }
    if (e->env != NULL) {
        mdb_env_close(e->env);
    }
}

/* Open the body at path (info->bytes long); fills info's meta and keys. */
static int snap_open(const char *path,
                     struct store_snapshot_info *info,
                     struct snap_env *e)
{
    struct store_meta *meta = &info->meta;
    uint64_t bytes = info->bytes;
    MDB_stat st;
    int rc;
    memset(e, 0, sizeof *e);
    if ((rc = mdb_env_create(&e->env)) != 0) {
        return store__lmdb_err(rc);
    }
    /* LMDB sizes the map up to the file when it is larger. */
    size_t map = (size_t)bytes + ((size_t)1 << 20);
    if ((rc = mdb_env_set_mapsize(e->env, map)) != 0 ||
        (rc = mdb_env_set_maxdbs(e->env, STORE__NDB + 2)) != 0 ||
        (rc = mdb_env_open(e->env, path,
                           MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOTLS,
                           0600)) != 0 ||
        (rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &e->txn)) != 0) {
        rc = rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH
                 ? CD_EBADSNAP
                 : store__lmdb_err(rc);
        snap_close(e);
        return rc;
    }
    e->view.env = e->env;
    if ((rc = store__open_dbs(e->txn, e->view.dbi, 0)) != 0 ||
        (rc = store__meta_read(e->txn, &e->view, meta)) != 0) {
        snap_close(e);
        return rc == CD_ECORRUPT ? CD_EBADSNAP : rc;
    }
    if (meta->format == 0) {
        snap_close(e);
        return CD_EBADSNAP;
    }
    if (meta->format > STORE_FORMAT) {
        snap_close(e);
        return CD_EVERSION;
    }
    if ((rc = mdb_stat(e->txn, e->view.dbi[STORE__KV], &st)) != 0) {
        snap_close(e);
        return store__lmdb_err(rc);
    }
    info->keys = st.ms_entries;
    return 0;
}

int store_snapshot_verify(int fd,
                          const char *tmp_path,
                          struct store_snapshot_info *info)
{
    struct store_snapshot_info tmp;
    struct snap_env e;
    int rc;

    if (info == NULL) {
        info = &tmp;
    }
    memset(info, 0, sizeof *info);
    rc = receive(fd, tmp_path, info);
    if (rc == 0) {
        rc = snap_open(tmp_path, info, &e);
        if (rc == 0) {
            snap_close(&e);
        }
    }
    unlink(tmp_path);
    return rc;
}

/* Replace every record of dst with those of src (same sub-database). */
static int copy_db(MDB_txn *src_txn, MDB_dbi src, MDB_txn *dst_txn, MDB_dbi dst)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    if ((rc = mdb_drop(dst_txn, dst, 0)) != 0) {
        return store__lmdb_err(rc);
    }
    if ((rc = mdb_cursor_open(src_txn, src, &cur)) != 0) {
        return store__lmdb_err(rc);
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        /* The source is sorted, so every record goes at the end. */
        rc = mdb_put(dst_txn, dst, &k, &v, MDB_APPEND);
        if (rc != 0) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc == MDB_KEYEXIST) {
        return CD_EBADSNAP; /* unsorted: not an LMDB we wrote */
    }
    return rc == MDB_NOTFOUND ? 0 : store__lmdb_err(rc);
}

static int is_meta(const MDB_val *k)
{
    size_t n = sizeof META_PREFIX - 1;
    return k->mv_size > n && memcmp(k->mv_data, META_PREFIX, n) == 0;
}

/*
 * The meta records share the main database with the sub-database names,
 * which must stay: replace only the "meta/" records.
 */
static int copy_meta(MDB_txn *src_txn,
                     MDB_dbi src,
                     MDB_txn *dst_txn,
                     MDB_dbi dst)
{
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_val prefix = {sizeof META_PREFIX - 1, (void *)(uintptr_t)META_PREFIX};
    int rc;

    if ((rc = mdb_cursor_open(dst_txn, dst, &cur)) != 0) {
        return store__lmdb_err(rc);
    }
    k = prefix;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && is_meta(&k)) {
        if ((rc = mdb_cursor_del(cur, 0)) != 0) {
            break;
        }
        k = prefix;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store__lmdb_err(rc);
    }
    if ((rc = mdb_cursor_open(src_txn, src, &cur)) != 0) {
        return store__lmdb_err(rc);
    }
    k = prefix;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && is_meta(&k)) {
        if ((rc = mdb_put(dst_txn, dst, &k, &v, 0)) != 0) {
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : store__lmdb_err(rc);
}

int store_restore(struct store *s, int fd, struct store_snapshot_info *info)
{
    struct store_snapshot_info tmp;
    struct snap_env e;
    MDB_txn *txn;
    char *side;
    int rc;

    if (s->cfg.read_only) {
        return -EROFS;
    }
    if (info == NULL) {
        info = &tmp;
    }
    memset(info, 0, sizeof *info);
    size_t len = strlen(s->path) + sizeof ".restore";
    side = malloc(len);
    if (side == NULL) {
        return -ENOMEM;
    }
    snprintf(side, len, "%s.restore", s->path);

    if ((rc = receive(fd, side, info)) != 0) {
        goto out;
    }
    if ((rc = snap_open(side, info, &e)) != 0) {
        goto out;
    }
    store__settle(s);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
        rc = store__lmdb_err(rc);
        snap_close(&e);
        goto out;
    }
    for (int i = 0; i < STORE__NDB && rc == 0; i++) {
        if (i == STORE__META) {
            rc = copy_meta(e.txn, e.view.dbi[i], txn, s->dbi[i]);
        } else {
            rc = copy_db(e.txn, e.view.dbi[i], txn, s->dbi[i]);
        }
    }
    if (rc == 0) {
        rc = store__lmdb_err(mdb_txn_commit(txn));
    } else {
        mdb_txn_abort(txn);
    }
    snap_close(&e);
out:
    unlink(side);
    free(side);
    return rc;
}
