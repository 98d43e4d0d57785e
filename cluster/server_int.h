/*
 * server_int.h - what the files of the parent server share (server.c: the
 * node, raft and leadership; api.c: connections and requests).
 */
#ifndef CD_SERVER_INT_H
#define CD_SERVER_INT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdint.h>
#include <uv.h>

#include "../proto/codec.h"
#include "../storage/store.h"
#include "config.h"
#include "fsm.h"
#include "server.h"
#include "raftfix.h"
#include "stagger.h"

enum lead_state {
    LEAD_FOLLOWER, /* not the leader */
    LEAD_LEADING,  /* raft says leader; our barrier is not applied yet */
    LEAD_READY,    /* leader with every earlier entry applied */
};

struct conn;
struct proposal;
struct snapshot_job;
struct backup_job;
struct snap_copy;

/* A member is alive while its match index keeps up with the leader's log;
 * the leader appends a barrier when the log is quiet, so that it moves. */
struct member_health
{
    uint64_t id;
    uint64_t last_ok_ms; /* when it last had everything we had before */
};
struct pending_write;
struct read_batch;
struct leaderless;
struct child_seen;
struct metrics;
struct metrics_state;

/* How the answer to a queued write is made (api.c's apply callback). */
enum server_write_kind {
    SERVER_WRITE_CLIENT = 0,     /* a client's WRITE: WRITE_RESP */
    SERVER_WRITE_CHILD_JOIN = 1, /* CHILD_JOIN_RESP with the new id */
    SERVER_WRITE_OK = 2          /* OK: a child's leave, a backup schedule */
};

struct server
{
    uv_loop_t *loop;
    struct cd_config cfg;
    uint64_t id;
    uint64_t cluster_id;
    int lock_fd;

    struct store *store;
    struct fsm fsm;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    int raft_inited;
    /* The transport's own listen/connect, wrapped to set TCP_NODELAY. */
    int (*tcp_listen)(struct raft_uv_transport *t, raft_uv_accept_cb cb);
    int (*tcp_connect)(struct raft_uv_transport *t,
                       struct raft_uv_connect *req,
                       raft_id id,
                       const char *address,
                       raft_uv_connect_cb cb);
    raft_uv_accept_cb raft_accept_cb;
    /* The uv backend's snapshot_put, wrapped to copy the store off the
     * loop first; the copy in progress; a close waiting for it. */
    int (*io_snapshot_put)(struct raft_io *io,
                           unsigned trailing,
                           struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot,
                           raft_io_snapshot_put_cb cb);
    struct snapshot_job *snap_job;
    int close_deferred;
    /* The uv backend's start, wrapped to add the staggered election
     * timeouts' fine tick (stagger.h). */
    int (*io_start)(struct raft_io *io,
                    unsigned msecs,
                    raft_io_tick_cb tick,
                    raft_io_recv_cb recv);
    struct stagger stagger;
    struct raftfix raftfix; /* libraft 0.22.1 membership bookkeeping */
    /* raft's receive callback, wrapped: an InstallSnapshot that arrives
     * while a snapshot of this node's own is being written waits here
     * until that write's callback has run (server.c, recv_guarded). */
    raft_io_recv_cb io_recv;
    unsigned own_snapshots; /* own snapshot writes in flight */
    int held_valid;
    struct raft_message held;
    char held_addr[64];
    /*
     * The store holds a state the Raft log cannot rebuild (a backup
     * restored into a new cluster) until a snapshot of it is persisted:
     * <data>/restored says so across restarts.  Meanwhile raft snapshots
     * at once and keeps no trailing entries, and parents may not join
     * (they would replay the log from index 1 without the backup).
     */
    int base_pending;
    /*
     * The store commits without flushing (docs/storage.md): <data>/
     * state.boot says which boot may hold unflushed writes of it.  A flush
     * runs on libuv's thread pool every STORE_SYNC_MS (to learn of a disk
     * that lost writes); sync_busy while it runs.
     */
    int store_unsynced;
    int sync_busy;
    uint64_t last_sync_ms;
    uv_work_t sync_work;
    int sync_rc;
    /* A scheduled or requested backup running on the thread pool
     * (server_backup.c); a "backup now" waiting for the next tick. */
    struct backup_job *backup_job;
    int backup_now;
    /* Snapshot downloads (api.c): the copy they share, and whether one is
     * being made on the thread pool. */
    struct snap_copy *dl_copy;
    unsigned dl_copy_running;

    /* Leadership. */
    uv_prepare_t prepare;
    enum lead_state lead;
    struct raft_barrier lead_barrier;
    int lead_barrier_busy;
    raft_id last_leader;
    uint64_t leader_since; /* loop time when last_leader was first seen */
    raft_id leader_api_id; /* leader whose API address is cached */
    char leader_api[64];

    /* API server. */
    uv_tcp_t listener;
    int listening;
    uv_check_t check; /* end of each loop turn: flush batches */
    uv_timer_t tick;  /* housekeeping: idle connections, membership */
    struct conn *conns;
    unsigned n_conns;

    /* Writes waiting for this turn's entry, entries in flight. */
    struct pending_write *writes;
    size_t n_writes, cap_writes;
    struct proposal *inflight;
    /* Linearizable reads waiting for this turn's barrier. */
    struct read_batch *reads;
    int watches_dirty;
    /* Requests for the leader that arrived during an election (api.c). */
    struct leaderless *leaderless;
    size_t n_leaderless;

    /* Liveness of the other members, as the leader sees it. */
    struct member_health *health;
    size_t n_health;
    uint64_t probe_index;    /* last index when the previous probe ran */
    uint64_t probe_ms;       /* when it ran */
    uint64_t last_append_ms; /* when the last index last moved */
    uint64_t last_seen_index;
    struct raft_barrier keepalive;
    int keepalive_busy;
    unsigned prune_ticks;

    /* Children (children.c), as the leader sees them. */
    struct child_seen *children;
    size_t n_children, cap_children;
    uint64_t child_id_reserved; /* highest child id handed out */
    uint64_t children_since_ms; /* loop time this leadership began */
    uint64_t health_window_ms;  /* rate bound of health records */
    unsigned health_writes;     /* health records in this window */

    /* The virtual IP (vipctl.c); times are CLOCK_MONOTONIC ms. */
    struct vip *vip; /* NULL: no VIP configured */
    int vip_held;
    uv_timer_t vip_timer;
    int vip_timer_closed;
    struct raft_barrier vip_barrier;
    int vip_barrier_busy;
    uint64_t vip_barrier_sent;
    raft_term vip_barrier_term;
    uint64_t vip_lease_start; /* a majority acknowledged us then; 0: none */
    uint64_t vip_claim_at;
    /* When this node, a follower, last heard from another leader: the
     * loop turn after raft last restarted its election timer under that
     * leader (vip_leader_timer is the timer start it saw then). */
    uint64_t vip_last_leader_seen;
    raft_time vip_leader_timer;
    uint64_t vip_started_ms;
    uint64_t vip_next_barrier, vip_next_garp;
    unsigned vip_garps;
    int vip_was_leader;

    /* Membership changes: one at a time. */
    struct raft_change change;
    int change_busy;
    struct conn *change_conn;
    uint64_t change_request_id;
    uint64_t change_id;
    char change_api[64];
    int change_action;
    /* The last refusal auto_promote logged (raft error and node), so that a
     * refusal repeated every tick is logged once. */
    int promote_err;
    uint64_t promote_err_id;

    /* Observability (metrics.h): NULL unless metrics_address is set. */
    struct metrics *metrics;

    /* Stopping. */
    int stopping;
    int closing_all;
    int stopped;
    int failed;
    int handles_open;
    uv_timer_t stop_timer;
    struct raft_transfer transfer_req;
    int transfer_done;
    /* A leadership transfer on its way (server__transfer): the caller's
     * request and callback, the target, and libraft's own request. */
    struct raft_transfer *xfer;
    raft_transfer_cb xfer_cb;
    uint64_t xfer_target;
    uint64_t xfer_deadline; /* loop time: transfer even if not caught up */
    int xfer_started;       /* raft_transfer() called */
    struct raft_transfer xfer_raft;
    void (*stop_cb)(struct server *s);
};

/* server.c */
uint64_t server__wall_ms(void);
void server__store_tick(struct server *s); /* each housekeeping tick */
int server__raft_err(int rv);
void server__member_key(char *buf, size_t len, uint64_t id);
int server__member_api(struct server *s, uint64_t id, char *out, size_t len);
const char *server__leader_api(struct server *s);
/* The same, but NULL while the leader looks gone: this node is a follower
 * that has not heard from it for more than two heartbeats (it may have
 * died; an election may follow).  What requests wait on (api.c). */
const char *server__live_leader_api(struct server *s);
/* The store's meta records (revision, history epoch, ...); zeroed on a
 * read error, which is returned. */
int server__store_meta(struct server *s, struct store_meta *m);
void server__maybe_stopped(struct server *s);
/* Work on the thread pool (a snapshot copy, a backup) has finished: a
 * close that waited for it goes on. */
void server__work_done(struct server *s);

/* api.c */
int server__api_start(struct server *s);
/* Close at once every API connection accepted on local address addr
 * (IPv4, network order): the VIP's, when this node gives it up. */
void server__api_drop_local(struct server *s, uint32_t addr);
void server__api_close(struct server *s);
/* Let go of the copy snapshot downloads share (at close). */
void server__downloads_close(struct server *s);
void server__on_ready(struct server *s);
void server__on_lost(struct server *s);
struct cd_result *server__results_for(void *arg, uint64_t index, size_t n_ops);
void server__applied(void *arg, uint64_t index, uint64_t revision);
int server__member_alive(struct server *s, uint64_t id);
/* The voter to hand leadership to: the live one with the highest match
 * index (libraft's own choice, with id 0, takes the last voter in the
 * configuration unless one is caught up at that very instant, which under
 * a steady write load is a lagging one as often as not, and its transfer
 * then times out).  0 when there is none. */
uint64_t server__transfer_target(struct server *s);
/*
 * Hand leadership to target (0: server__transfer_target()), as
 * raft_transfer() does, after letting the log come to rest: while it runs
 * (server__quiescing), writes, linearizable reads and barriers are held,
 * and raft_transfer() is called once the target holds every entry (or
 * after half an election timeout).  libraft 0.22.1 sends its TimeoutNow
 * as soon as the target acknowledged what the leader had, and the target
 * silently ignores it while it is still persisting a newer entry: under a
 * steady write load most transfers timed out that way.  cb(req) as for
 * raft_transfer (req is the caller's; only one transfer at a time).  0,
 * RAFT_NOTLEADER (not the leader, or a transfer is on its way).
 */
int server__transfer(struct server *s,
                     struct raft_transfer *req,
                     uint64_t target,
                     raft_transfer_cb cb);
int server__quiescing(const struct server *s);
int server__send(struct conn *c, struct cd_msg *m);
void server__send_error(struct conn *c, uint64_t request_id, int code);
void server__send_ok(struct conn *c, uint64_t request_id);
struct server *server__conn_server(const struct conn *c);
int server__token_valid(struct server *s, const char *token);
/* Propose one op of the server's own as its own entry (nobody waits). */
int server__propose_op(struct server *s, const struct cd_op *op);
/*
 * Queue a write the server built for a request on c: msg (moved in, a
 * CD_MSG_WRITE) is proposed with this turn's entry and answered as kind
 * says; owned (may be NULL) is what msg's op points into, freed with it.
 * On error nothing was taken: the caller still owns msg and owned.
 */
int server__queue_write(struct server *s,
                        struct conn *c,
                        struct cd_msg *msg,
                        enum server_write_kind kind,
                        uint64_t child_id,
                        void *owned);

/*
 * Answer the request msg on c with a write of the server's own: op (its
 * pointers into owned, or into msg) is queued for this turn's entry and
 * answered as kind says.  1: msg and owned were taken; 0: c was answered
 * with an error (owned freed) and the caller still frees msg.
 */
int server__queue_op(struct conn *c,
                     struct cd_msg *msg,
                     const struct cd_op *op,
                     enum server_write_kind kind,
                     uint64_t child_id,
                     void *owned);

/* vipctl.c: the virtual IP follows the leader's lease (see there). */
int server__vip_start(struct server *s);  /* removes a stale VIP */
void server__vip_check(struct server *s); /* each loop turn, each API read */
void server__vip_release(struct server *s, const char *why); /* transfers */
/* Close the API connections accepted on the VIP: once this node no longer
 * leads, their peers' packets go to the next holder and nothing sent on
 * them is ever acknowledged (a child's stream would hold its replies for
 * as long as TCP retries).  Not on a lease lapse alone: a leader that
 * reclaims the address keeps its connections. */
void server__vip_drop_conns(struct server *s);
void server__vip_close(struct server *s); /* stopping */
void server__vip_free(struct server *s);
void server__vip_fatal(struct server *s);

/* children.c: the children registry, their streams' admission, reports.
 * The join and leave calls return 1 when they took msg (moved into a
 * write), 0 when they answered and the caller still frees msg. */
/* A child's hello: 0 (follow from its revision), SERVER_HELLO_RESET (its
 * cache holds another history: it must take a snapshot first), or the
 * refusal (CD_EBADCLUSTER, CD_EREVOKED, CD_EBUSY, CD_EMALFORMED). */
#define SERVER_HELLO_RESET 1
int server__child_hello(struct server *s, const struct cd_msg *hello);
int server__child_join(struct conn *c, struct cd_msg *msg);
int server__child_leave(struct conn *c, struct cd_msg *msg);
void server__child_report(struct conn *c, const struct cd_msg *msg);
void server__children_list(struct conn *c, const struct cd_msg *msg);
void server__children_reset(struct server *s); /* leadership gained/lost */
void server__children_free(struct server *s);
/* Registered children; by state and staleness on the leader (into st). */
void server__children_stats(struct server *s, struct metrics_state *st);

/* server_backup.c: scheduled backups (backup.h).  The request returns 1
 * when it took msg (a schedule's write), 0 when it answered. */
void server__backup_tick(struct server *s); /* each housekeeping tick */
int server__backup_request(struct conn *c, struct cd_msg *msg);
void server__backup_stats(struct server *s, struct metrics_state *st);

/* server_metrics.c: the HTTP endpoint (metrics.h), if configured. */
int server__metrics_start(struct server *s); /* after the API listens */
void server__metrics_stop(struct server *s); /* with the handles */
void server__metrics_tick(struct server *s); /* each housekeeping tick */
/* api.c: watches served, children's streams among them. */
void server__watch_counts(struct server *s,
                          unsigned *watches,
                          unsigned *child_streams);

#endif
