/*
 * follower.c - a child's cache follows the parents; see follower.h.
 */
#include "follower.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "../storage/store.h"

#define CONTACT_WRITE_MS 1000 /* record the contact time at most this often */
#define COMPACT_SLACK 10000   /* compact the cache in steps of this many */

struct follower
{
    char data_dir[256];
    char endpoints[512];
    char hostname[256];
    char version[64];
    struct cd_child_identity id;
    unsigned stream_timeout_ms;
    unsigned keep_revisions;
    int (*on_batch)(void *arg, uint64_t revision);
    void *arg;

    int lock_fd;
    struct store *cache;
    _Atomic uint64_t revision; /* read by the reporter and metrics threads */
    uint64_t compact_rev;
    uint64_t epoch; /* the cache's history epoch (store.h) */
    uint64_t contact_written_ms;
    _Atomic uint64_t contact_ms;
    _Atomic int state;

    /* During a run. */
    const atomic_int *stop;
    int need_snapshot;
    int epoch_changed;     /* the parent said so with its "compacted" */
    uint64_t parent_epoch; /* and which one it has */
    int revoked;
    int failed;            /* a cache write error: stop the run */
    int heard;             /* a frame came in this run */
    size_t first_endpoint; /* where the next run starts in the list */
    struct store_change *changes;
    size_t cap_changes;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int read_meta(struct follower *f)
{
    struct store_read *r;
    struct store_meta m;
    int rc = store_read_begin(f->cache, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_meta(r, &m);
    store_read_end(r);
    if (rc == 0) {
        f->revision = m.revision;
        f->compact_rev = m.compact_rev;
        f->epoch = m.epoch;
    }
    return rc;
}

int follower_open(const struct follower_config *cfg, struct follower **out)
{
    struct follower *f = calloc(1, sizeof *f);
    char path[300];
    if (f == NULL) {
        return -ENOMEM;
    }
    snprintf(f->data_dir, sizeof f->data_dir, "%s", cfg->data_dir);
    f->id = *cfg->id;
    snprintf(f->hostname, sizeof f->hostname, "%s",
             cfg->hostname != NULL ? cfg->hostname : "");
    snprintf(f->version, sizeof f->version, "%s",
             cfg->version != NULL ? cfg->version : "clusterd-child 0.1");
    f->stream_timeout_ms =
        cfg->stream_timeout_ms != 0 ? cfg->stream_timeout_ms : 3000;
    f->keep_revisions = cfg->keep_revisions != 0 ? cfg->keep_revisions : 100000;
    f->on_batch = cfg->on_batch;
    f->arg = cfg->arg;

    snprintf(path, sizeof path, "%s/LOCK", f->data_dir);
    f->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f->lock_fd < 0) {
        int rc = -errno;
        free(f);
        return rc;
    }
    if (flock(f->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        close(f->lock_fd);
        free(f);
        return CD_ELOCKED;
    }
    struct store_config sc;
    snprintf(path, sizeof path, "%s/cache.mdb", f->data_dir);
    store_config_init(&sc, path);
    int rc = store_open(&sc, &f->cache);
    if (rc == 0) {
        rc = read_meta(f);
    }
    if (rc == 0) {
        rc = store_set_cluster_id(f->cache, f->id.cluster_id);
    }
    if (rc != 0) {
        follower_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

void follower_close(struct follower *f)
{
    if (f == NULL) {
        return;
    }
    store_close(f->cache);
    if (f->lock_fd >= 0) {
        close(f->lock_fd);
    }
    free(f->changes);
    free(f);
}

uint64_t follower_revision(struct follower *f)
{
    return f->revision;
}

enum follower_state follower_state(struct follower *f)
{
    return (enum follower_state)atomic_load(&f->state);
}

uint64_t follower_contact_ms(struct follower *f)
{
    return atomic_load(&f->contact_ms);
}

struct store *follower_store(struct follower *f)
{
    return f->cache;
}

static void heard_from_parent(struct follower *f)
{
    uint64_t now = wall_ms();
    atomic_store(&f->contact_ms, now);
    if (atomic_exchange(&f->state, FOLLOWER_FOLLOWING) != FOLLOWER_FOLLOWING) {
        log_info("follower", "following the parents at revision %" PRIu64,
                 f->revision);
    }
    /* Local readers (libclusterd's staleness) see it in the cache. */
    if (now - f->contact_written_ms >= CONTACT_WRITE_MS) {
        f->contact_written_ms = now;
        store_set_contact(f->cache, now);
    }
}

static int is_own_record(const struct follower *f, const struct cd_event *e)
{
    char key[64];
    int n =
        snprintf(key, sizeof key, "/cluster/children/%" PRIu64, f->id.child_id);
    return e->type == CD_EVENT_DELETE && e->kv.key.len == (size_t)n &&
           memcmp(e->kv.key.data, key, (size_t)n) == 0;
}

/* One CHANGES frame: a run of whole revisions, or a heartbeat. */
static int on_changes(void *arg, const struct cd_msg *m)
{
    struct follower *f = arg;
    size_t n = m->u.changes.n_events;
    f->heard = 1;
    heard_from_parent(f);
    if (m->u.changes.compacted) {
        f->need_snapshot = 1;
        f->epoch_changed = m->u.changes.epoch != f->epoch;
        f->parent_epoch = m->u.changes.epoch;
        return 1;
    }
    if (n > f->cap_changes) {
        struct store_change *p = realloc(f->changes, n * sizeof *p);
        if (p == NULL) {
            f->failed = -ENOMEM;
            return 1;
        }
        f->changes = p;
        f->cap_changes = n;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cd_event *e = &m->u.changes.events[i];
        struct store_change *c = &f->changes[i];
        c->revision = e->kv.mod_rev;
        c->sub = e->sub;
        c->type =
            e->type == CD_EVENT_PUT ? STORE_CHANGE_PUT : STORE_CHANGE_DELETE;
        c->kv = (struct store_kv){
            .key = e->kv.key.data,
            .key_len = e->kv.key.len,
            .value = e->kv.value.data,
            .value_len = e->kv.value.len,
            .create_rev = e->kv.create_rev,
            .mod_rev = e->kv.mod_rev,
            .version = e->kv.version,
        };
        if (is_own_record(f, e)) {
            f->revoked = 1;
        }
    }
    uint64_t rev = m->u.changes.revision;
    uint64_t compact = 0;
    if (rev > f->compact_rev + f->keep_revisions + COMPACT_SLACK) {
        compact = rev - f->keep_revisions;
    }
    int rc = store_apply_changes(f->cache, f->changes, n, rev, compact, 0);
    if (rc == 0) {
        f->revision = rev;
        if (compact != 0) {
            f->compact_rev = compact;
        }
    } else if (rc != -EALREADY) {
        log_error("follower",
                  "cannot apply revision %" PRIu64 " to the cache: %s", rev,
                  cd_strerror(rc));
        f->failed = rc;
        return 1;
    }
    if (f->revoked) {
        return 1;
    }
    if (f->on_batch != NULL && rc == 0 && f->on_batch(f->arg, f->revision)) {
        return 1;
    }
    return f->stop != NULL && atomic_load(f->stop) ? 1 : 0;
}

/*
 * Replace the cache whole: it is too far behind the parents' history, or
 * it holds another history (the parents were restored from a backup or
 * forced to a new cluster).  Within one history epoch the cache never
 * goes backwards: a snapshot older than the cache is refused.  Across
 * epochs it may: the cache's later revisions are not in the parents'
 * history, and keeping them would hide the parents' own changes at those
 * revisions.
 */
static int fetch_snapshot(struct follower *f, struct cd_client *c)
{
    char path[300], tmp[320];
    struct store_snapshot_info info;
    uint64_t rev = 0;
    snprintf(path, sizeof path, "%s/cache.snap", f->data_dir);
    snprintf(tmp, sizeof tmp, "%s/cache.snap.check", f->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    if (f->epoch_changed && f->revision == 0) {
        log_info("follower",
                 "an empty cache: downloading a snapshot (history epoch "
                 "%016" PRIx64 ")",
                 f->parent_epoch);
    } else if (f->epoch_changed) {
        log_warn("follower",
                 "the parents hold another history (epoch %016" PRIx64
                 ", the cache %016" PRIx64 " at revision %" PRIu64
                 "): a restore or a forced new cluster; downloading a "
                 "snapshot to replace the cache",
                 f->parent_epoch, f->epoch, f->revision);
    } else {
        log_info("follower",
                 "revision %" PRIu64
                 " is compacted on the parents: "
                 "downloading a snapshot",
                 f->revision);
    }
    int rc = cd_client_snapshot_recent(c, fd, &rev);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    memset(&info, 0, sizeof info);
    if (rc == 0) {
        rc = lseek(fd, 0, SEEK_SET) == 0 ? store_snapshot_verify(fd, tmp, &info)
                                         : -errno;
    }
    int same_history = rc == 0 && info.meta.epoch == f->epoch;
    if (same_history && info.meta.revision < f->revision) {
        log_warn("follower",
                 "snapshot at revision %" PRIu64
                 " is older than the cache (%" PRIu64 "): not used",
                 info.meta.revision, f->revision);
        rc = CD_EBADREV;
    }
    if (rc == 0 && info.meta.cluster_id != 0 &&
        info.meta.cluster_id != f->id.cluster_id) {
        rc = CD_EBADCLUSTER;
    }
    uint64_t was = f->revision, was_epoch = f->epoch;
    if (rc == 0) {
        rc = lseek(fd, 0, SEEK_SET) == 0 ? store_restore(f->cache, fd, &info)
                                         : -errno;
    }
    close(fd);
    unlink(path);
    if (rc == 0) {
        rc = read_meta(f);
        store_set_cluster_id(f->cache, f->id.cluster_id);
        if (same_history) {
            log_info("follower",
                     "cache restored from a snapshot at revision %" PRIu64,
                     f->revision);
        } else if (was == 0) {
            log_info("follower",
                     "cache filled from a snapshot at revision %" PRIu64,
                     f->revision);
        } else {
            log_warn("follower",
                     "cache replaced by the parents' history: revision "
                     "%" PRIu64 " (epoch %016" PRIx64 ") -> %" PRIu64
                     " (epoch %016" PRIx64 ")%s",
                     was, was_epoch, f->revision, f->epoch,
                     f->revision < was ? "; the revision went backwards" : "");
        }
    } else {
        log_warn("follower",
                 "snapshot not applied: %s (the cache is as it was)",
                 cd_strerror(rc));
    }
    return rc;
}

int follower_run(struct follower *f, const atomic_int *stop)
{
    char **eps = NULL;
    size_t n_eps = 0;
    struct cd_client *c = NULL;
    int rc = cd_client_parse_endpoints(f->id.endpoints, &eps, &n_eps);
    if (rc != 0) {
        return rc;
    }
    struct cd_client_config cc = {
        .endpoints = (const char *const *)eps,
        .n_endpoints = n_eps,
        .timeout_ms = 2000,
        .total_timeout_ms = 4000,
        .cluster_id = f->id.cluster_id,
    };
    /*
     * The VIP (the first endpoint) first; but a run that heard nothing
     * starts the next one further down the list: a parent that accepts
     * connections and never answers (paused, hung) must not hide the
     * others behind it for good.
     */
    char **order = calloc(n_eps, sizeof *order);
    if (order == NULL) {
        cd_client_free_endpoints(eps, n_eps);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_eps; i++) {
        order[i] = eps[(f->first_endpoint + i) % n_eps];
    }
    cc.endpoints = (const char *const *)order;
    rc = cd_client_open(&cc, &c);
    free(order);
    cd_client_free_endpoints(eps, n_eps);
    if (rc != 0) {
        return rc;
    }
    f->stop = stop;
    f->heard = 0;
    f->need_snapshot = 0;
    f->epoch_changed = 0;
    f->failed = 0;
    struct cd_msg hello;
    memset(&hello, 0, sizeof hello);
    hello.type = CD_MSG_HELLO;
    hello.u.hello.cluster_id = f->id.cluster_id;
    hello.u.hello.child_id = f->id.child_id;
    hello.u.hello.revision = f->revision;
    hello.u.hello.registered_rev = f->id.registered_rev;
    hello.u.hello.epoch = f->epoch;
    hello.u.hello.hostname = f->hostname[0] != '\0' ? f->hostname : NULL;
    hello.u.hello.version = f->version;
    rc = cd_client_follow(c, &hello, f->stream_timeout_ms, on_changes, f);
    if (f->failed != 0) {
        rc = f->failed;
    } else if (f->revoked) {
        rc = CD_EREVOKED;
    } else if (rc == 0 && f->need_snapshot) {
        rc = fetch_snapshot(f, c);
        if (rc == 0) {
            rc = CD_ECOMPACTED; /* not a stop: say hello again at once */
        }
    }
    f->first_endpoint = f->heard ? 0 : (f->first_endpoint + 1) % n_eps;
    if (atomic_exchange(&f->state, FOLLOWER_DEGRADED) == FOLLOWER_FOLLOWING &&
        rc != CD_ECOMPACTED && !(stop != NULL && atomic_load(stop))) {
        log_warn(
            "follower",
            "degraded: lost the parent stream (%s); serving revision %" PRIu64
            " from the cache",
            cd_strerror(rc), f->revision);
    }
    cd_client_close(c);
    return rc;
}
