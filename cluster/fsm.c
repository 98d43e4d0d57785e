/*
 * fsm.c - see fsm.h.
 */
#include "fsm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/fdio.h"
#include "../lib/log.h"
#include "../proto/codec.h"
#include "../storage/record.h"

#define FSM_SNAP_MAGIC "CDFSM001"
#define FSM_SNAP_HEADER 24 /* magic(8) applied_index(8) revision(8) */
/* A group commits after this many entries even within one loop turn: it
 * bounds the transaction (LMDB caps its dirty pages) and the work lost to
 * an entry that fails. */
#define FSM_GROUP_ENTRIES 64

static int fsm_apply(struct raft_fsm *rf,
                     const struct raft_buffer *buf,
                     void **result)
{
    struct fsm *f = rf->data;
    struct codec_command cmd;
    uint64_t index = raft_last_applied(f->raft) + 1;
    int rc;

    *result = NULL;
    const uint8_t *entry = buf->base;
    uint32_t clen = buf->len >= 4 ? record_get_be32(entry) : 0;
    if (buf->len < 4 || clen > buf->len - 4) {
        rc = CD_EMALFORMED;
    } else {
        rc = codec_command_decode(entry + 4, clen, &cmd);
    }
    if (rc != 0) {
        /* Only a bug (or a foreign writer) puts such an entry in the log.
         * Record the index anyway so the entry counts as applied. */
        log_error("fsm", "entry %llu does not decode: %s; skipped",
                  (unsigned long long)index, cd_strerror(rc));
        struct cd_batch empty = {0, NULL, 0};
        rc = store_apply_group(f->store, &empty, index, NULL);
        if (rc != 0 && rc != -EALREADY && f->fatal != NULL) {
            f->fatal(f->arg, rc);
        }
        return 0;
    }
    size_t n = cmd.batch.n_ops;
    struct cd_result *res =
        f->results_for != NULL ? f->results_for(f->arg, index, n) : NULL;
    if (res == NULL) {
        if (n > f->scratch_len) {
            struct cd_result *p = realloc(f->scratch, n * sizeof *p);
            if (p == NULL) {
                codec_command_free(&cmd);
                if (f->fatal != NULL) {
                    f->fatal(f->arg, -ENOMEM);
                }
                return 0;
            }
            f->scratch = p;
            f->scratch_len = n;
        }
        res = f->scratch;
    }
    rc = store_apply_group(f->store, &cmd.batch, index, res);
    codec_command_free(&cmd);
    if (rc == 0 && n > 0) {
        f->revision = res[n - 1].revision;
    } else if (rc != 0 && rc != -EALREADY) {
        log_error("fsm", "store failed applying entry %llu: %s (%s)",
                  (unsigned long long)index, cd_strerror(rc), cd_errname(rc));
        if (f->fatal != NULL) {
            f->fatal(f->arg, rc);
        }
        return 0;
    }
    if (f->applied != NULL) {
        f->applied(f->arg, index, f->revision);
    }
    if (store_group_entries(f->store) >= FSM_GROUP_ENTRIES) {
        fsm_flush(f);
    }
    return 0;
}

void fsm_flush(struct fsm *f)
{
    int rc = store_group_commit(f->store);
    if (rc != 0) {
        log_error("fsm", "store failed committing applied entries: %s (%s)",
                  cd_strerror(rc), cd_errname(rc));
        if (f->fatal != NULL) {
            f->fatal(f->arg, rc);
        }
    }
}

/* Read a whole fd from offset 0 into a raft buffer after `head` bytes. */
static int slurp(int fd, size_t head, struct raft_buffer *out)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    size_t len = head + (size_t)st.st_size;
    uint8_t *p = raft_malloc(len);
    if (p == NULL) {
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r =
            pread(fd, p + head + got, (size_t)st.st_size - got, (off_t)got);
        if (r <= 0) {
            raft_free(p);
            return r < 0 ? -errno : CD_ETRUNCATED;
        }
        got += (size_t)r;
    }
    out->base = p;
    out->len = len;
    return 0;
}

#define FSM_PLACEHOLDER_MAGIC "CDSNAPPH"

int fsm_is_placeholder(const struct raft_buffer *buf)
{
    return buf->len == FSM_SNAP_HEADER &&
           memcmp(buf->base, FSM_PLACEHOLDER_MAGIC, 8) == 0;
}

int fsm_snapshot_copy(struct store *store,
                      uint64_t index,
                      struct raft_buffer *out)
{
    struct store_read *r;
    struct store_meta m;
    int rc = store_read_begin(store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_meta(r, &m);
    store_read_end(r);
    if (rc != 0) {
        return rc;
    }
    int fd = memfd_create("clusterd-snapshot", MFD_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    /* The copy starts after the meta read, so it holds at least that
     * state: the header's index is never ahead of the content. */
    rc = store_snapshot(store, fd, NULL);
    if (rc == 0) {
        rc = slurp(fd, FSM_SNAP_HEADER, out);
    }
    close(fd);
    if (rc != 0) {
        return rc;
    }
    uint8_t *h = out->base;
    memcpy(h, FSM_SNAP_MAGIC, 8); /* NOLINT: 8 bytes, not a C string */
    /* Entries after the last one that reached the store changed nothing
     * in it (barriers, configurations): the state is that of index too. */
    uint64_t at = m.applied_index > index ? m.applied_index : index;
    record_put_be64(h + 8, at);
    record_put_be64(h + 16, m.revision);
    log_info("fsm", "snapshot at index %llu, revision %llu: %zu bytes",
             (unsigned long long)at, (unsigned long long)m.revision, out->len);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *rf,
                        struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct fsm *f = rf->data;
    if (f->may_snapshot != NULL && !f->may_snapshot(f->arg)) {
        return RAFT_BUSY; /* not now: raft retries after a later entry */
    }
    /* The copy, here or on another thread later, must hold every entry
     * up to the snapshot's index. */
    fsm_flush(f);
    struct raft_buffer *b = raft_malloc(sizeof *b);
    if (b == NULL) {
        return RAFT_NOMEM;
    }
    int rc = 0;
    if (f->deferred_snapshot) {
        b->base = raft_calloc(1, FSM_SNAP_HEADER);
        b->len = FSM_SNAP_HEADER;
        if (b->base == NULL) {
            rc = -ENOMEM;
        } else {
            memcpy(b->base, FSM_PLACEHOLDER_MAGIC, 8); /* NOLINT: 8 bytes */
        }
    } else {
        rc = fsm_snapshot_copy(f->store, raft_last_applied(f->raft), b);
    }
    if (rc != 0) {
        raft_free(b);
        log_error("fsm", "snapshot failed: %s", cd_strerror(rc));
        return rc == -ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct fsm *f = rf->data;
    struct store_read *r = NULL;
    struct store_meta m;
    const uint8_t *h = buf->base;
    int rc;

    if (buf->len < FSM_SNAP_HEADER || memcmp(h, FSM_SNAP_MAGIC, 8) != 0) {
        log_error("fsm", "snapshot to restore has no clusterd header");
        return RAFT_MALFORMED;
    }
    uint64_t index = record_get_be64(h + 8);
    fsm_flush(f);
    rc = store_read_begin(f->store, &r);
    if (rc == 0) {
        rc = store_read_meta(r, &m);
    }
    store_read_end(r);
    if (rc != 0) {
        return RAFT_IOERR;
    }
    if (m.applied_index >= index) {
        /* The store already holds this state and more (the usual case at
         * start: raft restores its last snapshot, the store is ahead). */
        log_info("fsm", "snapshot at index %llu: store already at %llu",
                 (unsigned long long)index,
                 (unsigned long long)m.applied_index);
        f->revision = m.revision;
        raft_free(buf->base);
        return 0;
    }
    int fd = memfd_create("clusterd-restore", MFD_CLOEXEC);
    if (fd < 0) {
        return RAFT_NOMEM;
    }
    if (fd_write_all(fd, h + FSM_SNAP_HEADER, buf->len - FSM_SNAP_HEADER) !=
        0) {
        close(fd);
        return RAFT_IOERR;
    }
    lseek(fd, 0, SEEK_SET);
    struct store_snapshot_info info;
    rc = store_restore(f->store, fd, &info);
    close(fd);
    if (rc != 0) {
        log_error("fsm", "restoring snapshot at index %llu failed: %s (%s)",
                  (unsigned long long)index, cd_strerror(rc), cd_errname(rc));
        return RAFT_IOERR;
    }
    f->revision = info.meta.revision;
    log_info("fsm", "restored snapshot at index %llu, revision %llu",
             (unsigned long long)info.meta.applied_index,
             (unsigned long long)info.meta.revision);
    raft_free(buf->base);
    if (f->applied != NULL) {
        f->applied(f->arg, info.meta.applied_index, f->revision);
    }
    return 0;
}

int fsm_encode_entry(const struct cd_batch *b,
                     uint64_t cluster_id,
                     struct raft_buffer *out)
{
    uint8_t *cmd;
    size_t len;
    int rc = codec_command_encode(b, cluster_id, NULL, &cmd, &len);
    if (rc != 0) {
        return rc;
    }
    if (len > UINT32_MAX - 16) {
        free(cmd);
        return CD_EFRAMETOOBIG;
    }
    size_t total = (4 + len + 7) & ~(size_t)7;
    uint8_t *p = raft_malloc(total);
    if (p == NULL) {
        free(cmd);
        return -ENOMEM;
    }
    record_put_be32(p, (uint32_t)len);
    memcpy(p + 4, cmd, len);
    memset(p + 4 + len, 0, total - 4 - len);
    free(cmd);
    out->base = p;
    out->len = total;
    return 0;
}

int fsm_apply_failed_keeps_buffer(int raft_rv)
{
    return raft_rv == RAFT_NOTLEADER;
}

int fsm_init(struct fsm *f, struct store *store)
{
    struct store_read *r;
    struct store_meta m = {0};
    memset(f, 0, sizeof *f);
    f->store = store;
    f->raft_fsm.version = 1;
    f->raft_fsm.data = f;
    f->raft_fsm.apply = fsm_apply;
    f->raft_fsm.snapshot = fsm_snapshot;
    f->raft_fsm.restore = fsm_restore;
    int rc = store_read_begin(store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_meta(r, &m);
    store_read_end(r);
    f->revision = m.revision;
    f->cluster_id = m.cluster_id;
    return rc;
}

void fsm_close(struct fsm *f)
{
    if (f->store != NULL) {
        fsm_flush(f);
    }
    free(f->scratch);
    f->scratch = NULL;
    f->scratch_len = 0;
}
