/*
 * server.c - a clusterd parent; see server.h.
 *
 * Everything runs on one libuv loop:
 *   - raft (libraft's uv backend) and the FSM (fsm.c) over the store;
 *   - the leadership state machine, advanced from a uv_prepare handle on
 *     every loop turn, since libraft has no state-change callback:
 *         FOLLOWER --(raft says leader)--> LEADING --(barrier applied)-->
 *         READY --(raft says otherwise)--> FOLLOWER
 *     Only a READY leader serves writes and linearizable reads: its own
 *     barrier has committed, so every entry of earlier terms is applied;
 *   - the API server (api.c): connections, framing, dispatch.
 *
 * Writes that arrive in the same loop turn become one Raft entry (flushed
 * from a uv_check handle); linearizable reads of the same turn share one
 * barrier.  A follower answers writes and linearizable reads with
 * CD_ENOTLEADER and the leader's API address, taken from the replicated
 * member records (/cluster/members/<id>), and clients retry there.
 */
#include "server_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/fdio.h"
#include "../lib/log.h"
#include "bootmark.h"
#include "client.h"
#include "metrics.h"
#include "raft_version.h"

uint64_t server__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int server__raft_err(int rv)
{
    switch (rv) {
        case 0:
            return 0;
        case RAFT_NOTLEADER:
            return CD_ENOTLEADER;
        case RAFT_LEADERSHIPLOST:
            return CD_ELEADERLOST;
        case RAFT_NOMEM:
            return -ENOMEM;
        case RAFT_SHUTDOWN:
            return CD_ESHUTDOWN;
        case RAFT_CANTCHANGE:
        case RAFT_BUSY:
            return CD_EBUSY;
        case RAFT_NOSPACE:
            return -ENOSPC;
        case RAFT_IOERR:
            return -EIO;
        default:
            return CD_ERAFT;
    }
}

/* --- member records ------------------------------------------------------ */

void server__member_key(char *buf, size_t len, uint64_t id)
{
    snprintf(buf, len, "/cluster/members/%" PRIu64, id);
}

int server__member_api(struct server *s, uint64_t id, char *out, size_t len)
{
    char key[64];
    struct store_read *r;
    struct store_kv kv;
    server__member_key(key, sizeof key, id);
    int rc = store_read_begin(s->store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_get(r, key, strlen(key), &kv);
    if (rc == 0) {
        size_t n = kv.value_len < len - 1 ? kv.value_len : len - 1;
        memcpy(out, kv.value, n);
        out[n] = '\0';
    }
    store_read_end(r);
    return rc;
}

int server__store_meta(struct server *s, struct store_meta *m)
{
    struct store_read *r;
    int rc = store_read_begin(s->store, &r);
    if (rc != 0) {
        memset(m, 0, sizeof *m);
        return rc;
    }
    rc = store_read_meta(r, m);
    store_read_end(r);
    return rc;
}

const char *server__leader_api(struct server *s)
{
    raft_id id;
    const char *addr;
    raft_leader(&s->raft, &id, &addr);
    if (id == 0) {
        return NULL;
    }
    if (id != s->leader_api_id) {
        if (server__member_api(s, id, s->leader_api, sizeof s->leader_api) !=
            0) {
            return NULL;
        }
        s->leader_api_id = id;
    }
    return s->leader_api;
}

uint64_t server__transfer_target(struct server *s)
{
    const struct raft_configuration *conf = &s->raft.configuration;
    uint64_t best = 0, best_match = 0;
    int best_alive = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *srv = &conf->servers[i];
        raft_index match = 0;
        if (srv->id == s->id || srv->role != RAFT_VOTER ||
            raft_match_index(&s->raft, srv->id, &match) != 0) {
            continue;
        }
        int alive = server__member_alive(s, srv->id);
        if (best == 0 || alive > best_alive ||
            (alive == best_alive && match > best_match)) {
            best = srv->id;
            best_match = match;
            best_alive = alive;
        }
    }
    return best;
}

int server__quiescing(const struct server *s)
{
    return s->xfer != NULL;
}

static void transfer_finished(struct server *s)
{
    struct raft_transfer *req = s->xfer;
    raft_transfer_cb cb = s->xfer_cb;
    s->xfer = NULL;
    s->xfer_cb = NULL;
    s->xfer_started = 0;
    if (cb != NULL) {
        cb(req);
    }
}

static void xfer_raft_cb(struct raft_transfer *req)
{
    transfer_finished(req->data);
}

int server__transfer(struct server *s,
                     struct raft_transfer *req,
                     uint64_t target,
                     raft_transfer_cb cb)
{
    if (s->xfer != NULL || raft_state(&s->raft) != RAFT_LEADER ||
        raft_transferee(&s->raft) != 0) {
        return RAFT_NOTLEADER;
    }
    s->xfer_target = target != 0 ? target : server__transfer_target(s);
    if (s->xfer_target == 0) {
        return RAFT_NOTFOUND;
    }
    s->xfer = req;
    s->xfer_cb = cb;
    s->xfer_started = 0;
    s->xfer_deadline = uv_now(s->loop) + s->cfg.election_ms / 2;
    return 0;
}

/* Each loop turn: start the transfer once the target caught up. */
static void transfer_progress(struct server *s)
{
    if (s->xfer == NULL || s->xfer_started) {
        return;
    }
    if (raft_state(&s->raft) != RAFT_LEADER) {
        transfer_finished(s); /* deposed meanwhile: nothing to hand over */
        return;
    }
    raft_index match = 0;
    int caught_up = raft_match_index(&s->raft, s->xfer_target, &match) == 0 &&
                    match >= raft_last_index(&s->raft);
    if (!caught_up && uv_now(s->loop) < s->xfer_deadline) {
        return;
    }
    s->xfer_started = 1;
    s->xfer_raft.data = s;
    int rv =
        raft_transfer(&s->raft, &s->xfer_raft, s->xfer_target, xfer_raft_cb);
    if (rv != 0) {
        log_warn("server", "leadership transfer to %llu: %s",
                 (unsigned long long)s->xfer_target, raft_strerror(rv));
        transfer_finished(s);
    }
}

const char *server__live_leader_api(struct server *s)
{
    const char *api = server__leader_api(s);
    if (api != NULL && raft_state(&s->raft) == RAFT_FOLLOWER) {
        /* libraft restarts a follower's election timer on every contact
         * from the leader (raft.h, election_timer_start). */
        raft_time silent = uv_now(s->loop) - s->raft.election_timer_start;
        if (silent > 2 * (raft_time)s->cfg.heartbeat_ms) {
            return NULL;
        }
    }
    return api;
}

/* --- fatal errors -------------------------------------------------------- */

static void boot_mark_path(struct server *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/state.boot", s->cfg.data_dir);
}

/* How often an unflushed store is flushed in the background: to learn of a
 * disk that lost writes (only a flush reports it), not for durability. */
#define STORE_SYNC_MS 30000

static void fsm_fatal(void *arg, int err)
{
    struct server *s = arg;
    /* The store can no longer follow the log (disk error, corruption):
     * serving on would be wrong, and libraft would not step down by
     * itself.  Exit at once; the supervisor restarts the node, which
     * replays the log, or stays down for an operator. */
    log_error("server", "fatal store error: %s (%s); exiting", cd_strerror(err),
              cd_errname(err));
    s->failed = 1;
    server__vip_fatal(s);
    _exit(70);
}

static void store_sync_work(uv_work_t *w)
{
    struct server *s = w->data;
    s->sync_rc = store_sync(s->store);
}

static void store_sync_done(uv_work_t *w, int status)
{
    struct server *s = w->data;
    s->sync_busy = 0;
    if (status == 0 && s->sync_rc != 0) {
        /* Written pages the disk did not keep: the store on disk is not
         * what the node served from memory.  Rebuild it at the next start
         * (even within this boot), and stop now. */
        char mark[300];
        boot_mark_path(s, mark, sizeof mark);
        log_error("server", "flushing the store failed: %s",
                  cd_strerror(s->sync_rc));
        bootmark_poison(mark);
        fsm_fatal(s, s->sync_rc);
    }
    server__maybe_stopped(s);
}

void server__store_tick(struct server *s)
{
    uint64_t now = uv_now(s->loop);
    if (!s->store_unsynced || s->sync_busy || s->stopping) {
        return;
    }
    if (s->last_sync_ms == 0) {
        s->last_sync_ms = now;
    }
    if (now - s->last_sync_ms < STORE_SYNC_MS) {
        return;
    }
    s->last_sync_ms = now;
    s->sync_work.data = s;
    if (uv_queue_work(s->loop, &s->sync_work, store_sync_work,
                      store_sync_done) == 0) {
        s->sync_busy = 1;
    }
}

/* --- the leadership state machine ---------------------------------------- */

static void lead_barrier_cb(struct raft_barrier *req, int status)
{
    struct server *s = req->data;
    s->lead_barrier_busy = 0;
    fsm_flush(&s->fsm);
    if (status != 0 || s->lead != LEAD_LEADING ||
        raft_state(&s->raft) != RAFT_LEADER) {
        return;
    }
    s->lead = LEAD_READY;
    log_info("server", "leader ready (term %llu, revision %" PRIu64 ")",
             (unsigned long long)raft_current_term(&s->raft), s->fsm.revision);
    server__on_ready(s);
}

static void lead_transition(struct server *s)
{
    int state = raft_state(&s->raft);
    raft_id leader;
    const char *addr;
    raft_leader(&s->raft, &leader, &addr);
    if (leader != s->last_leader) {
        log_info("server", "leader is now %llu (%s)",
                 (unsigned long long)leader, leader ? addr : "none");
        s->last_leader = leader;
        s->leader_since = uv_now(s->loop);
    }
    if (state == RAFT_LEADER && s->lead == LEAD_FOLLOWER && !s->stopping) {
        s->lead = LEAD_LEADING;
        if (!s->lead_barrier_busy) {
            s->lead_barrier.data = s;
            int rv = raft_barrier(&s->raft, &s->lead_barrier, lead_barrier_cb);
            if (rv == 0) {
                s->lead_barrier_busy = 1;
            } else {
                s->lead = LEAD_FOLLOWER; /* try again next turn */
            }
        }
    } else if (state != RAFT_LEADER && s->lead != LEAD_FOLLOWER) {
        log_info("server", "no longer leader");
        s->lead = LEAD_FOLLOWER;
        server__on_lost(s);
    }
}

static void prepare_cb(uv_prepare_t *h)
{
    struct server *s = h->data;
    /* Entries applied by timers (before the check handle) commit here,
     * before raft's prepare handle answers their proposers. */
    fsm_flush(&s->fsm);
    lead_transition(s);
    transfer_progress(s);
    server__vip_check(s);
    if (s->raft_inited) {
        stagger_apply(&s->stagger);
    }
}

/*
 * Snapshots are declined while an InstallSnapshot from the leader may be on
 * its way: on a follower in its first moments under a leader (after a
 * start, an election, a healed partition), when a leader that finds it far
 * behind sends one.  libraft 0.22.1 crashes if that install lands while a
 * snapshot of the node's own is being written (fsm.h).  A leader never
 * receives one.  The delay is long against catching up, short against
 * snapshot_threshold: the log grows a little longer, nothing else.
 */
static int may_snapshot(void *arg)
{
    struct server *s = arg;
    if (s->lead != LEAD_FOLLOWER) {
        return 1;
    }
    uint64_t settle = 4 * (uint64_t)s->cfg.election_ms;
    if (settle < 2000) {
        settle = 2000;
    }
    return s->last_leader != 0 && s->last_leader != s->id &&
           uv_now(s->loop) - s->leader_since >= settle;
}

/* --- node identity ------------------------------------------------------- */

static int read_identity(struct server *s)
{
    char path[300];
    snprintf(path, sizeof path, "%s/node", s->cfg.data_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT ? CD_ENOTFOUND : -errno;
    }
    char line1[64] = "", line2[64] = "";
    int n = fgets(line1, sizeof line1, f) != NULL &&
            fgets(line2, sizeof line2, f) != NULL;
    fclose(f);
    unsigned long long id = 0, cid = 0;
    if (n && strncmp(line1, "id=", 3) == 0 &&
        strncmp(line2, "cluster_id=", 11) == 0) {
        id = strtoull(line1 + 3, NULL, 10);
        cid = strtoull(line2 + 11, NULL, 16);
    }
    if (id == 0 || cid == 0) {
        log_error("server", "%s is damaged", path);
        return CD_ECORRUPT;
    }
    s->id = id;
    s->cluster_id = cid;
    return 0;
}

static int write_identity(struct server *s)
{
    char path[300], buf[128];
    snprintf(path, sizeof path, "%s/node", s->cfg.data_dir);
    int len =
        snprintf(buf, sizeof buf, "id=%" PRIu64 "\ncluster_id=%016" PRIx64 "\n",
                 s->id, s->cluster_id);
    return fd_write_file_durable(path, buf, (size_t)len, 0644);
}

static int lock_data_dir(struct server *s)
{
    char path[300];
    snprintf(path, sizeof path, "%s/LOCK", s->cfg.data_dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        return -errno;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        log_error("server", "%s is in use by another clusterd",
                  s->cfg.data_dir);
        close(s->lock_fd);
        s->lock_fd = -1;
        return CD_ELOCKED;
    }
    return 0;
}

static void join_snapshot_path(const struct server *s, char *out, size_t len)
{
    snprintf(out, len, "%s/join.snap", s->cfg.data_dir);
}

/*
 * A joining parent first copies the cluster's store (any parent's: they
 * apply the same log), then replays the log after that copy's applied
 * index.  Raft alone would replay the log from index 1, or send its last
 * snapshot if the log no longer starts there; but the log of a cluster
 * started from a backup does not hold the backup's state (the store was
 * restored beside it), and after --force-new-cluster the last raft
 * snapshot may predate the new history epoch.  The copy also replaces a
 * stale store left in the data directory.  Written to <data>/join.snap,
 * synced; taken into the store by adopt_join_snapshot() once it is open.
 */
static int download_state(struct server *s, struct cd_client *c)
{
    char path[300];
    uint64_t rev = 0;
    join_snapshot_path(s, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    int rc = cd_client_snapshot(c, fd, &rev);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    close(fd);
    if (rc != 0) {
        unlink(path);
        log_error("server",
                  "copying the cluster's state from %s failed: %s (%s)",
                  s->cfg.join, cd_strerror(rc), cd_errname(rc));
        return rc;
    }
    log_info("server", "copied the cluster's state at revision %" PRIu64, rev);
    return 0;
}

/*
 * Ask the cluster at cfg.join to add this node.  The leader checks the
 * token, assigns the id and adds us as a spare; we learn our id and the
 * cluster id from the reply.  The cluster's state is copied first
 * (download_state), so that a failed copy leaves nothing behind in the
 * cluster.  Runs before the loop, blocking.
 */
static int join_cluster(struct server *s)
{
    char **eps;
    size_t n;
    struct cd_client *c;
    int rc = cd_client_parse_endpoints(s->cfg.join, &eps, &n);
    if (rc != 0) {
        return rc;
    }
    struct cd_client_config cc = {
        .endpoints = (const char *const *)eps,
        .n_endpoints = n,
        .timeout_ms = 5000,
        .total_timeout_ms = 30000,
    };
    rc = cd_client_open(&cc, &c);
    if (rc != 0) {
        cd_client_free_endpoints(eps, n);
        return rc;
    }
    struct cd_msg req, resp;
    if ((rc = download_state(s, c)) != 0) {
        cd_client_close(c);
        cd_client_free_endpoints(eps, n);
        return rc;
    }
    /* The leader makes one membership change at a time (its own
     * promotions included): a busy answer means "again shortly". */
    for (int attempt = 0; attempt < 300; attempt++) {
        memset(&req, 0, sizeof req);
        req.type = CD_MSG_MEMBER_CHANGE;
        req.u.member_change.action = CD_MEMBER_ADD;
        req.u.member_change.address = s->cfg.raft_addr;
        req.u.member_change.api_address = s->cfg.api_addr;
        req.u.member_change.token = s->cfg.token;
        rc = cd_client_call(c, &req, &resp);
        if (rc != CD_EBUSY) {
            break;
        }
        usleep(200000);
    }
    if (rc == 0) {
        if (resp.type != CD_MSG_MEMBERS_RESP ||
            resp.u.members_resp.n_members != 1 || !resp.has_cluster_id) {
            rc = CD_EMALFORMED;
        } else {
            s->id = resp.u.members_resp.members[0].id;
            s->cluster_id = resp.cluster_id;
        }
        codec_msg_free(&resp);
    }
    cd_client_close(c);
    cd_client_free_endpoints(eps, n);
    if (rc != 0) {
        char path[300];
        join_snapshot_path(s, path, sizeof path);
        unlink(path);
        log_error("server", "joining %s failed: %s (%s)", s->cfg.join,
                  cd_strerror(rc), cd_errname(rc));
        return rc;
    }
    log_info("server", "joined cluster %016" PRIx64 " as node %" PRIu64,
             s->cluster_id, s->id);
    return 0;
}

/* --- start / stop -------------------------------------------------------- */

int server_init(struct server **out,
                uv_loop_t *loop,
                const struct cd_config *cfg)
{
    struct server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    s->loop = loop;
    s->cfg = *cfg;
    s->lock_fd = -1;
    *out = s;
    return 0;
}

static void base_marker_path(struct server *s, char *buf, size_t len);

/*
 * The store commits without flushing: the Raft log in front of it is the
 * write-ahead log, and raft's snapshot plus the log after it rebuild the
 * store (docs/storage.md has the argument).  A process crash loses nothing
 * (the page cache keeps every commit); after a machine stopped while the
 * store had unflushed writes (the boot mark names another boot), the store
 * is removed here and raft rebuilds it from its snapshot and log as the
 * node starts.  The store flushes every commit instead while the boot
 * cannot be told (no boot id) and while it holds a restored backup that no
 * raft snapshot holds yet (base_pending): nothing could rebuild it.
 */
static int prepare_store(struct server *s, const char *path, int *unsynced)
{
    char mark[300], base[300], boot[64];
    *unsynced = 0;
    boot_mark_path(s, mark, sizeof mark);
    base_marker_path(s, base, sizeof base);
    int trusted = 1;
    int rc = bootmark_check(mark, &trusted);
    if (rc != 0) {
        log_error("server", "cannot read %s: %s", mark, strerror(-rc));
        return rc;
    }
    if (!trusted && access(path, F_OK) == 0) {
        log_warn("server",
                 "the machine stopped while the store had unflushed writes "
                 "(%s): removing it; raft rebuilds it from its snapshot and "
                 "log",
                 mark);
        char lock[310];
        snprintf(lock, sizeof lock, "%s-lock", path);
        if (unlink(path) != 0 || (unlink(lock) != 0 && errno != ENOENT)) {
            rc = -errno;
            log_error("server", "cannot remove %s: %s", path, strerror(-rc));
            return rc;
        }
    }
    if (access(base, F_OK) == 0) {
        return 0; /* base_pending: armed once the base is logged */
    }
    if ((rc = bootmark_boot_id(boot, sizeof boot)) != 0) {
        log_warn("server",
                 "cannot read the boot id (%s): the store flushes every "
                 "commit",
                 strerror(-rc));
        return 0;
    }
    if ((rc = bootmark_arm(mark)) != 0) {
        log_error("server", "cannot write %s: %s", mark, strerror(-rc));
        return rc;
    }
    *unsynced = 1;
    return 0;
}

static int open_store(struct server *s)
{
    char path[300];
    struct store_config sc;
    int unsynced;
    snprintf(path, sizeof path, "%s/state.mdb", s->cfg.data_dir);
    int rc = prepare_store(s, path, &unsynced);
    if (rc != 0) {
        return rc;
    }
    store_config_init(&sc, path);
    sc.map_size = s->cfg.map_size;
    /* Unflushed, or one flush per commit: either way the Raft log in front
     * replays whatever a crash undid. */
    sc.durability = unsynced ? STORE_DURABLE_NONE : STORE_DURABLE_DEFERRED;
    s->store_unsynced = unsynced;
    rc = store_open(&sc, &s->store);
    if (rc != 0) {
        log_error("server", "cannot open the store %s: %s (%s)", path,
                  cd_strerror(rc), cd_errname(rc));
        return rc;
    }
    if (!unsynced && store_sync(s->store) == 0) {
        /* Whatever an earlier run left unflushed is on disk now, and every
         * commit of this run is flushed: the store survives any reboot. */
        char mark[300];
        boot_mark_path(s, mark, sizeof mark);
        bootmark_clean(mark);
    }
    return rc;
}

/*
 * libraft's TCP transport leaves Nagle's algorithm on for the connections
 * between parents: a small AppendEntries then waits for the ACK of the
 * previous one, the classic ~40 ms stall with delayed ACKs (measured in
 * make bench: 16-client p99 of ~46 ms, 7-12 ms without Nagle).  The
 * transport's listen and connect are wrapped so that every stream they hand
 * to raft has TCP_NODELAY.  raft keeps its own pointer in transport->data,
 * so the wrappers find the server from the transport's address.
 */
#define SERVER_OF(t) \
    ((struct server *)((char *)(t)-offsetof(struct server, transport)))

static void nodelay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP) {
        uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    }
}

static void accept_nodelay_cb(struct raft_uv_transport *t,
                              raft_id id,
                              const char *address,
                              struct uv_stream_s *stream)
{
    struct server *s = SERVER_OF(t);
    nodelay(stream);
    s->raft_accept_cb(t, id, address, stream);
}

static int listen_nodelay(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct server *s = SERVER_OF(t);
    s->raft_accept_cb = cb;
    return s->tcp_listen(t, accept_nodelay_cb);
}

struct connect_wrap
{
    struct raft_uv_connect inner;
    struct raft_uv_connect *outer;
    raft_uv_connect_cb outer_cb;
};

static void connect_nodelay_cb(struct raft_uv_connect *req,
                               struct uv_stream_s *stream,
                               int status)
{
    struct connect_wrap *w = req->data;
    if (status == 0) {
        nodelay(stream);
    }
    w->outer_cb(w->outer, stream, status);
    free(w);
}

static int connect_nodelay(struct raft_uv_transport *t,
                           struct raft_uv_connect *req,
                           raft_id id,
                           const char *address,
                           raft_uv_connect_cb cb)
{
    struct server *s = SERVER_OF(t);
    struct connect_wrap *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return RAFT_NOMEM;
    }
    w->inner.data = w;
    w->outer = req;
    w->outer_cb = cb;
    int rv = s->tcp_connect(t, &w->inner, id, address, connect_nodelay_cb);
    if (rv != 0) {
        free(w);
    }
    return rv;
}

/*
 * Snapshots off the loop.  libraft 0.22.1 asks the FSM for a snapshot on
 * the loop thread; with deferred_snapshot the FSM answers with a
 * placeholder, and this wrapper of the uv backend's snapshot_put makes the
 * real copy on libuv's thread pool, then hands it to the real snapshot_put
 * (on the loop again), which writes it from its own thread.  The loop only
 * ever waits for a few small allocations.  raft sees one snapshot put, as
 * before; a close that arrives meanwhile waits until the copy is handed
 * over (close_all), so that the real put never meets a closed backend.
 */
#define SERVER_OF_IO(i) \
    ((struct server *)((char *)(i)-offsetof(struct server, io)))

struct snapshot_job
{
    uv_work_t work;
    struct server *s;
    unsigned trailing;
    struct raft_io_snapshot_put *raft_req; /* raft's own request */
    raft_io_snapshot_put_cb raft_cb;
    struct raft_io_snapshot_put put; /* ours, for the real put */
    struct raft_snapshot snap;       /* raft's metadata, our buffer */
    struct raft_buffer buf;
    int rc;
    uint64_t started_ns; /* uv_hrtime(), for the snapshot metrics */
};

static void close_all(struct server *s);

static void base_logged(struct server *s);

/*
 * libraft 0.22.1 crashes when an InstallSnapshot from the leader arrives
 * while the node writes a snapshot of its own: it defers the install, and
 * its take-snapshot callback then starts the deferred install through a
 * pointer it has just cleared (takeSnapshotCb, src/legacy.c: a NULL
 * dereference; seen in lab-extended's flaky-links).  may_snapshot keeps a
 * follower from writing one when an install is likely; this closes the
 * rest: such a message waits in the server until the write's callback has
 * run, then goes to raft, which installs it at once.  A newer install
 * replaces a waiting one (the leader sends again after its timeout).
 */
static void held_free(struct server *s)
{
    if (s->held_valid) {
        raft_configuration_close(&s->held.install_snapshot.conf);
        raft_free(s->held.install_snapshot.data.base);
        s->held_valid = 0;
    }
}

static void recv_guarded(struct raft_io *io, struct raft_message *m)
{
    struct server *s = SERVER_OF_IO(io);
    if (m->type != RAFT_INSTALL_SNAPSHOT || s->own_snapshots == 0) {
        s->io_recv(io, m);
        return;
    }
    held_free(s);
    s->held = *m;
    snprintf(s->held_addr, sizeof s->held_addr, "%s",
             m->server_address != NULL ? m->server_address : "");
    s->held.server_address = s->held_addr;
    s->held_valid = 1;
    log_info("server",
             "snapshot from the leader (index %llu) waits for this node's "
             "own snapshot write",
             (unsigned long long)m->install_snapshot.last_index);
}

/* An own snapshot write's callback has run: a waiting install goes on. */
static void own_snapshot_over(struct server *s)
{
    if (--s->own_snapshots == 0 && s->held_valid && !s->stopping) {
        struct raft_message m = s->held;
        s->held_valid = 0; /* raft owns its buffers from here */
        s->io_recv(&s->io, &m);
    }
}

static void snapshot_put_done(struct raft_io_snapshot_put *put, int status)
{
    struct snapshot_job *job = put->data;
    metrics_observe_snapshot(job->s->metrics, job->buf.len,
                             (double)(uv_hrtime() - job->started_ns) / 1e9,
                             status == 0);
    struct server *s = job->s;
    int logged = status == 0 && s->base_pending && job->snap.index >= 2;
    raft_free(job->buf.base);
    /* raft drops the log's prefix in its callback, with the trailing
     * setting of that moment: a restored base is declared logged after. */
    job->raft_cb(job->raft_req, status);
    free(job);
    own_snapshot_over(s);
    if (logged) {
        base_logged(s);
    }
}

static void snapshot_copy_work(uv_work_t *w)
{
    struct snapshot_job *job = w->data;
    job->rc = fsm_snapshot_copy(job->s->store, job->snap.index, &job->buf);
}

static void snapshot_copy_done(uv_work_t *w, int status)
{
    struct snapshot_job *job = w->data;
    struct server *s = job->s;
    int rv;
    s->snap_job = NULL;
    if (status != 0 || job->rc != 0) {
        log_error("server", "snapshot copy failed: %s",
                  cd_strerror(status != 0 ? status : job->rc));
        rv = RAFT_IOERR;
    } else {
        job->put.data = job;
        rv = s->io_snapshot_put(&s->io, job->trailing, &job->put, &job->snap,
                                snapshot_put_done);
    }
    if (rv != 0) {
        metrics_observe_snapshot(s->metrics, 0, 0, 0);
        raft_free(job->buf.base);
        job->raft_cb(job->raft_req, rv);
        free(job);
        own_snapshot_over(s);
    }
    server__work_done(s);
}

void server__work_done(struct server *s)
{
    if (s->close_deferred && s->snap_job == NULL && s->backup_job == NULL &&
        !s->dl_copy_running) {
        s->close_deferred = 0;
        close_all(s);
    }
}

static int start_staggered(struct raft_io *io,
                           unsigned msecs,
                           raft_io_tick_cb tick,
                           raft_io_recv_cb recv)
{
    struct server *s = SERVER_OF_IO(io);
    s->io_recv = recv;
    int rv = s->io_start(io, msecs, tick, recv_guarded);
    if (rv == 0 && s->cfg.election_stagger) {
        int e = stagger_start(&s->stagger, s->loop, tick);
        if (e != 0) {
            log_warn("server", "staggered election timeouts are off: %s",
                     uv_strerror(e));
        }
    }
    return rv;
}

static int snapshot_put_deferred(struct raft_io *io,
                                 unsigned trailing,
                                 struct raft_io_snapshot_put *req,
                                 const struct raft_snapshot *snapshot,
                                 raft_io_snapshot_put_cb cb)
{
    struct server *s = SERVER_OF_IO(io);
    if (snapshot->n_bufs != 1 || !fsm_is_placeholder(&snapshot->bufs[0])) {
        /* A snapshot received from the leader: real bytes already. */
        return s->io_snapshot_put(io, trailing, req, snapshot, cb);
    }
    struct snapshot_job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        return RAFT_NOMEM;
    }
    job->s = s;
    job->started_ns = uv_hrtime();
    job->trailing = trailing;
    job->raft_req = req;
    job->raft_cb = cb;
    job->snap = *snapshot;
    job->snap.bufs = &job->buf;
    job->snap.n_bufs = 1;
    job->work.data = job;
    if (uv_queue_work(s->loop, &job->work, snapshot_copy_work,
                      snapshot_copy_done) != 0) {
        free(job);
        return RAFT_IOERR;
    }
    s->snap_job = job;
    s->own_snapshots++;
    return 0;
}

/*
 * libraft fails to listen with an empty message (an address in use, a
 * name that does not resolve to IPv4): try the address ourselves first so
 * that the operator reads what is wrong.
 */
static int check_raft_address(struct server *s)
{
    char host[64];
    const char *colon = strrchr(s->cfg.raft_addr, ':');
    struct sockaddr_in sa;
    if (colon == NULL || (size_t)(colon - s->cfg.raft_addr) >= sizeof host) {
        return CD_ECONFIG;
    }
    memcpy(host, s->cfg.raft_addr, (size_t)(colon - s->cfg.raft_addr));
    host[colon - s->cfg.raft_addr] = '\0';
    unsigned long port = strtoul(colon + 1, NULL, 10);
    if (port == 0 || port > 65535 || uv_ip4_addr(host, (int)port, &sa) != 0) {
        log_error("server",
                  "raft_address %s: not an IPv4 address "
                  "(libraft needs one)",
                  s->cfg.raft_addr);
        return CD_ECONFIG;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? 0 : -errno;
    close(fd);
    if (rc != 0) {
        log_error("server", "cannot listen on raft_address %s: %s",
                  s->cfg.raft_addr, strerror(-rc));
    }
    return rc;
}

/* fsync a directory, so that a file created or removed in it stays so. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static void base_marker_path(struct server *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/restored", s->cfg.data_dir);
}

/*
 * A store restored from a backup holds what no Raft entry carries, until a
 * snapshot of it is persisted: joiners that replay the log from index 1
 * would miss it (and differ from this node for good), and so would a store
 * rebuilt from raft's snapshot and log.  Until then: snapshot after every
 * entry, keep one trailing entry, and refuse joins (member_change in
 * api.c).  A snapshot at index 2 or later then drops entry 1 from the log,
 * so that a joiner must install the snapshot.  (Trailing 0 is no option:
 * libraft's uv backend takes it for an installed snapshot and moves its
 * next append index back.)
 */
static void base_pending_start(struct server *s)
{
    s->base_pending = 1;
    raft_set_snapshot_threshold(&s->raft, 1);
    raft_set_snapshot_trailing(&s->raft, 1);
    log_info("server",
             "the store holds a restored backup: snapshotting it before "
             "parents may join");
}

/* The first snapshot of the restored state is persisted. */
static void base_logged(struct server *s)
{
    char path[300];
    base_marker_path(s, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT) {
        log_warn("server", "cannot remove %s: %s", path, strerror(errno));
        return; /* try again after the next snapshot */
    }
    sync_dir(s->cfg.data_dir);
    s->base_pending = 0;
    raft_set_snapshot_threshold(&s->raft, s->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&s->raft, s->cfg.snapshot_trailing);
    log_info("server", "the restored state is in a raft snapshot: joins open");
    /* Raft can rebuild the store now: it may stop flushing (open_store). */
    char mark[300], boot[64];
    boot_mark_path(s, mark, sizeof mark);
    if (bootmark_boot_id(boot, sizeof boot) == 0 && bootmark_arm(mark) == 0 &&
        store_set_durability(s->store, STORE_DURABLE_NONE) == 0) {
        s->store_unsynced = 1;
    }
}

/*
 * Before a backup is restored (and before the store opens, so that it
 * flushes every commit: open_store): <data>/restored, durably, so that
 * a crash after the restore does not forget that the state is not in the
 * log yet.
 */
static int mark_base_pending(struct server *s)
{
    char marker[300];
    base_marker_path(s, marker, sizeof marker);
    int mfd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (mfd < 0 || fsync(mfd) != 0 || sync_dir(s->cfg.data_dir) != 0) {
        int e = -errno;
        log_error("server", "cannot create %s: %s", marker, strerror(-e));
        if (mfd >= 0) {
            close(mfd);
        }
        return e;
    }
    close(mfd);
    return 0;
}

/*
 * A new history epoch (store.h): after a restore or a forced new cluster,
 * revisions no longer count the same changes as before, and children
 * compare epochs in their hello to know that their cache must be replaced
 * rather than continued (docs/operations.md, "Disaster recovery").
 * Random, so that two restores of one backup never share an epoch.
 */
static int start_epoch(struct server *s, const char *why)
{
    struct store_read *r;
    struct store_meta m = {0};
    uint64_t epoch = 0;
    int rc = store_read_begin(s->store, &r);
    if (rc == 0) {
        rc = store_read_meta(r, &m);
        store_read_end(r);
    }
    if (rc != 0) {
        return rc;
    }
    while (epoch == 0 || epoch == m.epoch) {
        if (getrandom(&epoch, sizeof epoch, 0) != sizeof epoch) {
            return -EIO;
        }
    }
    if ((rc = store_set_epoch(s->store, epoch)) != 0) {
        return rc;
    }
    log_warn("server",
             "%s: history epoch %016" PRIx64 " -> %016" PRIx64
             " at revision %" PRIu64
             "; children replace their caches with a snapshot of this one",
             why, m.epoch, epoch, m.revision);
    return 0;
}

/*
 * Start again from a backup: the store takes the backup's state, then
 * forgets the old cluster's Raft index, since this cluster's log starts
 * again at 1.  The cluster keeps the backup's id, the identity of the
 * fleet, so that its children and clients go on (unless
 * --new-cluster-id); the children registry and every key come along.  A
 * new history epoch tells the children that the revisions they hold may
 * be ahead of this history or differ from it; the first leader records it
 * under /cluster/epoch and revokes the old join tokens (api.c).
 */
static int restore_backup(struct server *s)
{
    struct store_snapshot_info info;
    int fd = open(s->cfg.restore, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        log_error("server", "cannot open the backup %s: %s", s->cfg.restore,
                  strerror(-rc));
        return rc;
    }
    int rc = store_restore(s->store, fd, &info);
    close(fd);
    if (rc == 0) {
        rc = store_reset_index(s->store);
    }
    if (rc == 0) {
        rc = store_sync(s->store);
    }
    if (rc != 0) {
        log_error("server", "restoring %s failed: %s (%s)", s->cfg.restore,
                  cd_strerror(rc), cd_errname(rc));
        return rc;
    }
    if (!s->cfg.new_cluster_id && info.meta.cluster_id != 0) {
        s->cluster_id = info.meta.cluster_id;
    }
    log_info("server",
             "restored %s: cluster %016" PRIx64 "%s, revision %" PRIu64
             ", %" PRIu64 " keys",
             s->cfg.restore, s->cluster_id,
             s->cluster_id == info.meta.cluster_id ? " (the backup's)"
                                                   : " (a new id)",
             info.meta.revision, info.keys);
    return start_epoch(s, "restored from a backup");
}

/* Take the state download_state() copied; see there. */
static int adopt_join_snapshot(struct server *s)
{
    char path[300];
    struct store_snapshot_info info;
    join_snapshot_path(s, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = store_restore(s->store, fd, &info);
    close(fd);
    if (rc == 0 && info.meta.cluster_id != s->cluster_id) {
        log_error("server",
                  "the state copied at join belongs to cluster %016" PRIx64
                  ", not %016" PRIx64 ": are --join's endpoints one cluster?",
                  info.meta.cluster_id, s->cluster_id);
        rc = CD_EBADCLUSTER;
    }
    if (rc != 0) {
        log_error("server",
                  "taking the cluster's state failed: %s (%s); the cluster "
                  "added this parent as node %" PRIu64
                  ": remove it (clusterctl member remove %" PRIu64
                  ") before starting again",
                  cd_strerror(rc), cd_errname(rc), s->id, s->id);
        return rc;
    }
    unlink(path);
    log_info("server",
             "store holds the cluster's state at revision %" PRIu64
             " (raft index %" PRIu64 ", history epoch %016" PRIx64 ")",
             info.meta.revision, info.meta.applied_index, info.meta.epoch);
    return 0;
}

static int start_raft(struct server *s, int bootstrap)
{
    char dir[300];
    int rv;
    snprintf(dir, sizeof dir, "%s/raft", s->cfg.data_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return -errno;
    }
    /* The transport refuses to start with version 0 ("Invalid version"). */
    s->transport.version = 1;
    s->transport.data = s;
    rv = raft_uv_tcp_init(&s->transport, s->loop);
    if (rv != 0) {
        log_error("server", "raft transport: %s", raft_strerror(rv));
        return CD_ERAFT;
    }
    s->tcp_listen = s->transport.listen;
    s->tcp_connect = s->transport.connect;
    s->transport.listen = listen_nodelay;
    s->transport.connect = connect_nodelay;
    rv = raft_uv_init(&s->io, s->loop, dir, &s->transport);
    if (rv != 0) {
        log_error("server", "raft io: %s", s->io.errmsg);
        raft_uv_tcp_close(&s->transport);
        return CD_ERAFT;
    }
    raft_uv_set_connect_retry_delay(&s->io, s->cfg.connect_retry_ms);
    s->io_snapshot_put = s->io.snapshot_put;
    s->io.snapshot_put = snapshot_put_deferred;
    s->io_start = s->io.start;
    s->io.start = start_staggered;
    s->fsm.deferred_snapshot = 1;
    rv = raft_init(&s->raft, &s->io, &s->fsm.raft_fsm, s->id, s->cfg.raft_addr);
    if (rv != 0) {
        log_error("server", "raft init: %s", raft_errmsg(&s->raft));
        raft_uv_close(&s->io);
        raft_uv_tcp_close(&s->transport);
        return CD_ERAFT;
    }
    s->raft_inited = 1;
    s->fsm.raft = &s->raft;
    raftfix_init(&s->raftfix);
    stagger_init(&s->stagger, &s->raft, &s->io, s->cfg.election_ms,
                 s->cfg.heartbeat_ms);
    raft_set_heartbeat_timeout(&s->raft, s->cfg.heartbeat_ms);
    raft_set_election_timeout(&s->raft, s->cfg.election_ms);
    raft_set_pre_vote(&s->raft, true);
    raft_set_snapshot_threshold(&s->raft, s->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&s->raft, s->cfg.snapshot_trailing);
    raft_set_install_snapshot_timeout(&s->raft, 30000);

    if (s->cfg.force_new_cluster) {
        /*
         * Disaster recovery: a majority is gone for good.  This survivor
         * rewrites its configuration to itself alone, as the only voter,
         * keeping its log and store; then it is a one-voter cluster that
         * elects itself, and new parents join it.  Run on exactly one node
         * (docs/operations.md).
         */
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = raft_configuration_add(&conf, s->id, s->cfg.raft_addr, RAFT_VOTER);
        if (rv == 0) {
            rv = raft_recover(&s->raft, &conf);
        }
        raft_configuration_close(&conf);
        if (rv != 0) {
            log_error("server", "force-new-cluster: %s", raft_errmsg(&s->raft));
            return CD_ERAFT;
        }
        log_warn("server",
                 "force-new-cluster: node %" PRIu64
                 " is now the only voter; other parents must "
                 "rejoin with a wiped data directory",
                 s->id);
    }
    if (bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = raft_configuration_add(&conf, s->id, s->cfg.raft_addr, RAFT_VOTER);
        if (rv == 0) {
            rv = raft_bootstrap(&s->raft, &conf);
        }
        raft_configuration_close(&conf);
        if (rv != 0) {
            log_error("server", "bootstrap: %s", raft_errmsg(&s->raft));
            return CD_ERAFT;
        }
    }
    char marker[300];
    base_marker_path(s, marker, sizeof marker);
    if (access(marker, F_OK) == 0) {
        base_pending_start(s);
    }
    rv = raft_start(&s->raft);
    if (rv != 0) {
        log_error("server", "raft start: %s", raft_errmsg(&s->raft));
        return CD_ERAFT;
    }
    return 0;
}

/* mkdir -p: a data directory whose parents do not exist yet is fine. */
static int mkdir_parents(const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -errno;
            }
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

int server_start(struct server *s)
{
    int rc;
    /* Followers die of SIGPIPE when a peer vanishes mid-write otherwise. */
    signal(SIGPIPE, SIG_IGN);
    if ((rc = mkdir_parents(s->cfg.data_dir)) != 0) {
        log_error("server", "cannot create %s: %s", s->cfg.data_dir,
                  strerror(-rc));
        return rc;
    }
    if ((rc = lock_data_dir(s)) != 0) {
        return rc;
    }
    int bootstrap = 0, joined = 0;
    rc = read_identity(s);
    if (rc == CD_ENOTFOUND) {
        if (s->cfg.bootstrap) {
            uint64_t cid = 0;
            while (cid == 0) {
                if (getrandom(&cid, sizeof cid, 0) != sizeof cid) {
                    return -EIO;
                }
            }
            s->id = 1;
            s->cluster_id = cid; /* a restore may take the backup's */
            bootstrap = 1;
        } else if (s->cfg.join[0] != '\0') {
            if (s->cfg.token[0] == '\0') {
                log_error("server",
                          "%s holds no node yet: joining %s needs a token "
                          "(clusterctl token create)",
                          s->cfg.data_dir, s->cfg.join);
                return CD_ECONFIG;
            }
            if ((rc = join_cluster(s)) != 0) {
                return rc;
            }
            joined = 1;
        } else if (s->cfg.force_new_cluster) {
            log_error("server",
                      "--force-new-cluster needs the data "
                      "directory of a surviving parent; %s holds "
                      "no node",
                      s->cfg.data_dir);
            return CD_ECONFIG;
        } else {
            log_error("server",
                      "%s holds no node: start with --bootstrap "
                      "(first parent) or --join (see clusterd(8))",
                      s->cfg.data_dir);
            return CD_ECONFIG;
        }
    } else if (rc != 0) {
        return rc;
    } else if (s->cfg.force_new_cluster) {
        log_warn("server",
                 "node %" PRIu64 " of cluster %016" PRIx64
                 ": forcing a new one-voter cluster",
                 s->id, s->cluster_id);
    } else if (s->cfg.bootstrap || s->cfg.join[0] != '\0') {
        log_info("server",
                 "node %" PRIu64 " of cluster %016" PRIx64
                 " restarting; --bootstrap/--join/--restore ignored",
                 s->id, s->cluster_id);
    }
    if (bootstrap && s->cfg.restore[0] != '\0' &&
        (rc = mark_base_pending(s)) != 0) {
        return rc;
    }
    if ((rc = open_store(s)) != 0) {
        return rc;
    }
    if (bootstrap && s->cfg.restore[0] != '\0' &&
        (rc = restore_backup(s)) != 0) {
        return rc;
    }
    if (joined && (rc = adopt_join_snapshot(s)) != 0) {
        return rc;
    }
    if (!bootstrap && !joined && s->cfg.force_new_cluster &&
        (rc = start_epoch(s, "forced a new cluster")) != 0) {
        return rc;
    }
    /* The identity last: a node whose store is not ready yet (a restore or
     * the copy at join failed) starts again from scratch. */
    if ((bootstrap || joined) && (rc = write_identity(s)) != 0) {
        return rc;
    }
    if (bootstrap) {
        log_info("server", "bootstrapping cluster %016" PRIx64, s->cluster_id);
    }
    if ((rc = store_set_cluster_id(s->store, s->cluster_id)) != 0) {
        return rc;
    }
    if ((rc = fsm_init(&s->fsm, s->store)) != 0) {
        return rc;
    }
    s->fsm.cluster_id = s->cluster_id;
    s->fsm.results_for = server__results_for;
    s->fsm.applied = server__applied;
    s->fsm.fatal = fsm_fatal;
    s->fsm.may_snapshot = may_snapshot;
    s->fsm.arg = s;

    /* The VIP first: a stale copy left by a crash goes before raft can
     * make this node leader again. */
    if ((rc = server__vip_start(s)) != 0) {
        return rc;
    }
    if ((rc = check_raft_address(s)) != 0 ||
        (rc = start_raft(s, bootstrap)) != 0) {
        return rc;
    }
    /* The names of what this start created (LOCK, state.mdb, raft/) must
     * survive a power loss too; libraft syncs only inside raft/. */
    if ((rc = fd_sync_dir(s->cfg.data_dir)) != 0) {
        log_error("server", "cannot sync %s: %s", s->cfg.data_dir,
                  strerror(-rc));
        return rc;
    }
    uv_prepare_init(s->loop, &s->prepare);
    s->prepare.data = s;
    uv_prepare_start(&s->prepare, prepare_cb);
    if ((rc = server__api_start(s)) != 0 ||
        (rc = server__metrics_start(s)) != 0) {
        return rc;
    }
    log_info("server",
             "node %" PRIu64
             " up: raft %s, api %s, %s profile "
             "(heartbeat %u ms, election %u ms)",
             s->id, s->cfg.raft_addr, s->cfg.api_addr, s->cfg.profile,
             s->cfg.heartbeat_ms, s->cfg.election_ms);
    return 0;
}

static void raft_closed_cb(struct raft *r)
{
    struct server *s = r->data;
    raft_uv_close(&s->io);
    raft_uv_tcp_close(&s->transport);
    s->raft_inited = 0;
    server__maybe_stopped(s);
}

static void handle_closed_cb(uv_handle_t *h)
{
    struct server *s = h->data;
    s->handles_open--;
    server__maybe_stopped(s);
}

void server__maybe_stopped(struct server *s)
{
    if (!s->stopping || s->raft_inited || s->handles_open > 0 ||
        s->conns != NULL || s->stopped || s->sync_busy) {
        return;
    }
    s->stopped = 1;
    if (s->store != NULL && store_sync(s->store) == 0 && s->store_unsynced) {
        /* Everything is on disk: the next start may trust the store even
         * after a reboot. */
        char mark[300];
        boot_mark_path(s, mark, sizeof mark);
        bootmark_clean(mark);
    }
    if (s->stop_cb != NULL) {
        s->stop_cb(s);
    }
}

/* Close everything; raft last, so that in-flight requests fail cleanly. */
static void close_all(struct server *s)
{
    if (s->closing_all) {
        return;
    }
    if (s->snap_job != NULL || s->backup_job != NULL || s->dl_copy_running) {
        /* A snapshot copy (raft's or a download's) or a backup runs on the
         * thread pool with the store: close once it is over
         * (server__work_done). */
        s->close_deferred = 1;
        return;
    }
    s->closing_all = 1;
    uv_timer_stop(&s->stop_timer);
    server__vip_close(s);
    server__api_close(s);
    server__metrics_stop(s);
    if (uv_is_active((uv_handle_t *)&s->prepare) || s->prepare.loop != NULL) {
        s->handles_open++;
        s->prepare.data = s;
        uv_close((uv_handle_t *)&s->prepare, handle_closed_cb);
    }
    s->handles_open++;
    uv_close((uv_handle_t *)&s->stop_timer, handle_closed_cb);
    if (stagger_close(&s->stagger, handle_closed_cb, s)) {
        s->handles_open++;
    }
    held_free(s);
    if (s->raft_inited) {
        s->raft.data = s;
        raft_close(&s->raft, raft_closed_cb);
    }
    server__maybe_stopped(s);
}

static void stop_timer_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    if (!s->transfer_done) {
        log_warn("server",
                 "leadership transfer did not complete in time; "
                 "closing anyway");
    }
    close_all(s);
}

static void transfer_done_cb(struct raft_transfer *req)
{
    struct server *s = req->data;
    raft_id id;
    const char *addr;
    raft_leader(&s->raft, &id, &addr);
    log_info("server", "leadership handed over to %llu",
             (unsigned long long)id);
    s->transfer_done = 1;
    /* Never close raft from inside its own callback: defer one turn. */
    uv_timer_start(&s->stop_timer, stop_timer_cb, 0, 0);
}

void server_stop(struct server *s, void (*cb)(struct server *s))
{
    if (s->stopping) {
        return;
    }
    s->stopping = 1;
    if (cb != NULL) {
        s->stop_cb = cb;
    }
    uv_timer_init(s->loop, &s->stop_timer);
    s->stop_timer.data = s;
    if (s->raft_inited && raft_state(&s->raft) == RAFT_LEADER &&
        s->raft.configuration.n > 1) {
        /* Hand leadership over first: a rolling restart loses no write
         * and moves the leader (and the VIP) once.  The guard timer closes
         * anyway if the transfer callback never comes: the transfer waits
         * up to E/2 for the target to catch up (server__transfer), and
         * libraft gives it up after E; two election timeouts cover both. */
        s->transfer_req.data = s;
        server__vip_release(s, "stopping: handing leadership over");
        int rv = server__transfer(s, &s->transfer_req, 0, transfer_done_cb);
        if (rv == 0) {
            log_info("server", "stopping: transferring leadership");
            uv_timer_start(&s->stop_timer, stop_timer_cb,
                           2 * (uint64_t)s->cfg.election_ms + 200, 0);
            return;
        }
        log_warn("server", "leadership transfer refused: %s",
                 raft_strerror(rv));
    }
    close_all(s);
}

void server_free(struct server *s)
{
    if (s == NULL) {
        return;
    }
    server__vip_free(s);
    metrics_free(s->metrics);
    fsm_close(&s->fsm);
    free(s->health);
    server__children_free(s);
    store_close(s->store);
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
    }
    free(s);
}

void server_on_stop(struct server *s, void (*cb)(struct server *s))
{
    s->stop_cb = cb;
}

int server_failed(const struct server *s)
{
    return s->failed;
}
