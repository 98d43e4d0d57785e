/*
 * api.c - the parent's API server: connections, framing, requests.
 *
 * One TCP port; every frame is a request (proto/codec.h) answered with the
 * same request id.  Limits: max_frame (an oversized frame is answered with
 * CD_EFRAMETOOBIG and the connection closed: its framing can no longer be
 * trusted), max_connections (further connections are closed at once), and
 * idle_timeout_ms (a connection that sends nothing that long is closed,
 * unless it watches).  A malformed frame gets an error reply and the
 * connection goes on; nothing else is disturbed.
 *
 * Connection memory is freed in the close callback, and only once no
 * request in flight (a Raft entry, a barrier) still points at it: such
 * requests hold a reference.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "metrics.h"
#include "server_int.h"

#define WATCH_PAGE 10000                   /* changes per frame, at most */
#define WATCH_PAGE_BYTES ((size_t)1 << 20) /* and about this many bytes */
#define WATCH_BACKLOG ((size_t)8 << 20)    /* pause a watch above this */
#define SNAPSHOT_CHUNK ((size_t)1 << 20)
#define SNAPSHOT_BACKLOG ((size_t)2 << 20) /* queued per download, at most */
#define SNAPSHOT_REUSE_MS 2000             /* a copy serves later requests */
#define TICK_MS 250
#define CHILD_HEARTBEAT_MS 1000
#define API_USER_TIMEOUT_MS 30000 /* TCP_USER_TIMEOUT of API connections */

struct watch
{
    uint64_t request_id;
    int child;             /* a child's stream: heartbeats, request id 0 */
    uint64_t last_sent_ms; /* loop time of the last frame sent */
    uint64_t next;         /* deliver changes after this revision */
    uint8_t *prefix;       /* owned; NULL: every key */
    size_t prefix_len;
    struct watch *next_watch;
};

struct snap_send;

struct conn
{
    uv_tcp_t tcp;
    struct server *s;
    struct codec_reader reader;
    struct watch *watches;
    struct snap_send *sends; /* snapshot downloads in progress */
    int refs; /* requests in flight that will answer on this conn */
    int closing;
    int handle_closed;    /* tcp closed (conn_abort): free once refs is 0 */
    uint64_t last_active; /* loop time, ms */
    struct conn *prev, *next;
};

struct pending_write
{
    struct conn *conn;
    struct cd_msg msg; /* the decoded request; its op is proposed */
    /* A write the server made for a request (children.c): how to answer,
     * and what its op points into (freed with the message). */
    enum server_write_kind kind;
    uint64_t child_id;
    void *owned;
};

static void pending_free(struct pending_write *w)
{
    codec_msg_free(&w->msg);
    free(w->owned);
    w->owned = NULL;
}

struct proposal
{
    struct raft_apply req;
    struct server *s;
    size_t n;
    struct pending_write *items;
    struct cd_result *results;
    uint64_t proposed_ns; /* uv_hrtime(): the apply latency metric */
    struct proposal *next;
};

struct read_batch
{
    struct raft_barrier req;
    struct server *s;
    size_t n, cap;
    struct pending_write *items; /* same shape: conn + decoded request */
    struct read_batch *next;
};

static void conn_close(struct conn *c);
static void snap_pump(struct conn *c);

/* --- sending ------------------------------------------------------------- */

struct send_req
{
    uv_write_t w;
    struct conn *c;
    uint8_t *frame;
};

static void send_done(uv_write_t *w, int status)
{
    struct send_req *r = w->data;
    (void)status;
    r->c->refs--;
    free(r->frame);
    struct conn *c = r->c;
    free(r);
    if (c->closing && c->refs == 0) {
        conn_close(c);
        return;
    }
    if (c->watches != NULL) {
        c->s->watches_dirty = 1; /* a drained queue may resume a watch */
    }
    if (c->sends != NULL) {
        snap_pump(c); /* and a download */
    }
}

static int conn_send(struct conn *c, struct cd_msg *m)
{
    uint8_t *frame;
    size_t len;
    if (c->closing) {
        return CD_ESHUTDOWN;
    }
    if (c->s->cluster_id != 0) {
        m->has_cluster_id = 1;
        m->cluster_id = c->s->cluster_id;
    }
    int rc = codec_encode(m, c->s->cfg.max_frame, &frame, &len);
    if (rc != 0) {
        log_warn("api", "cannot encode a %s reply: %s",
                 codec_msg_type_name(m->type), cd_strerror(rc));
        struct cd_msg err;
        codec_error_msg(&err, m->request_id, rc, NULL);
        if (m->type == CD_MSG_ERROR ||
            codec_encode(&err, 0, &frame, &len) != 0) {
            return rc;
        }
    }
    struct send_req *r = malloc(sizeof *r);
    if (r == NULL) {
        free(frame);
        return -ENOMEM;
    }
    r->c = c;
    r->frame = frame;
    r->w.data = r;
    uv_buf_t buf = uv_buf_init((char *)frame, (unsigned)len);
    rc = uv_write(&r->w, (uv_stream_t *)&c->tcp, &buf, 1, send_done);
    if (rc != 0) {
        free(frame);
        free(r);
        return rc;
    }
    c->refs++;
    return 0;
}

static void send_error_now(struct conn *c,
                           uint64_t request_id,
                           int code,
                           const char *leader)
{
    struct cd_msg m;
    codec_error_msg(&m, request_id, code, leader);
    conn_send(c, &m);
}

/*
 * A request for the leader that arrives while no live leader is known (an
 * election is under way, or the leader has been silent for two heartbeats
 * and may be dead) is not refused at once: it waits here, up to twice the
 * election timeout, and its CD_ENOTLEADER goes out the moment a live
 * leader is known, carrying that leader's address.  The client goes there
 * at once, where an immediate "no leader" would have sent it into its
 * backoff, which grows while the election lasts: failover time is then the
 * election's, not the client's retry schedule.  Bounded: past
 * LEADERLESS_MAX waiting requests the answer goes out at once, as before.
 */
#define LEADERLESS_MAX 4096

struct leaderless
{
    struct conn *conn;
    uint64_t request_id;
    uint64_t deadline; /* loop time, ms */
    struct leaderless *next;
};

static void send_error(struct conn *c, uint64_t request_id, int code)
{
    struct server *s = c->s;
    const char *leader = NULL;
    if (code == CD_ENOTLEADER) {
        leader = server__live_leader_api(s);
        if (leader == NULL && !s->stopping && !c->closing &&
            s->n_leaderless < LEADERLESS_MAX) {
            struct leaderless *w = malloc(sizeof *w);
            if (w != NULL) {
                w->conn = c;
                w->request_id = request_id;
                w->deadline =
                    uv_now(s->loop) + 2 * (uint64_t)s->cfg.election_ms;
                w->next = s->leaderless;
                s->leaderless = w;
                s->n_leaderless++;
                c->refs++;
                return;
            }
        }
    }
    send_error_now(c, request_id, code, leader);
}

/* Answer the waiting requests once a leader is known, their time is up,
 * the server stops (all, when all is set) or their connection closed. */
static void flush_leaderless(struct server *s, int all)
{
    if (s->leaderless == NULL) {
        return;
    }
    const char *leader = server__live_leader_api(s);
    uint64_t now = uv_now(s->loop);
    struct leaderless **pp = &s->leaderless;
    while (*pp != NULL) {
        struct leaderless *w = *pp;
        struct conn *c = w->conn;
        if (!all && leader == NULL && now < w->deadline && !c->closing &&
            !s->stopping) {
            pp = &w->next;
            continue;
        }
        uint64_t request_id = w->request_id;
        *pp = w->next;
        s->n_leaderless--;
        free(w);
        c->refs--;
        if (!c->closing) {
            send_error_now(c, request_id, CD_ENOTLEADER, leader);
        } else if (c->refs == 0) {
            conn_close(c);
        }
    }
}

static void send_ok(struct conn *c, uint64_t request_id)
{
    struct cd_msg m;
    memset(&m, 0, sizeof m);
    m.request_id = request_id;
    m.type = CD_MSG_OK;
    conn_send(c, &m);
}

int server__send(struct conn *c, struct cd_msg *m)
{
    return conn_send(c, m);
}

void server__send_error(struct conn *c, uint64_t request_id, int code)
{
    send_error(c, request_id, code);
}

void server__send_ok(struct conn *c, uint64_t request_id)
{
    send_ok(c, request_id);
}

struct server *server__conn_server(const struct conn *c)
{
    return c->s;
}

/* --- writes -------------------------------------------------------------- */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct proposal *p = req->data;
    struct server *s = p->s;
    (void)result;
    /* The answers tell that the entry is applied: commit it first. */
    fsm_flush(&s->fsm);
    if (status == 0) {
        metrics_observe_apply(s->metrics,
                              (double)(uv_hrtime() - p->proposed_ns) / 1e9);
    }
    for (struct proposal **pp = &s->inflight; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    for (size_t i = 0; i < p->n; i++) {
        struct pending_write *w = &p->items[i];
        struct conn *c = w->conn;
        c->refs--;
        if (status != 0) {
            send_error(c, w->msg.request_id,
                       status == RAFT_LEADERSHIPLOST
                           ? CD_ELEADERLOST
                           : server__raft_err(status));
        } else if (p->results[i].status != 0) {
            send_error(c, w->msg.request_id, p->results[i].status);
        } else if (w->kind == SERVER_WRITE_CHILD_JOIN &&
                   !p->results[i].succeeded) {
            /* The id was taken meanwhile (another leader's join). */
            send_error(c, w->msg.request_id, CD_EBUSY);
        } else if (w->kind == SERVER_WRITE_CHILD_JOIN) {
            struct cd_msg m;
            memset(&m, 0, sizeof m);
            m.request_id = w->msg.request_id;
            m.type = CD_MSG_CHILD_JOIN_RESP;
            m.u.child_join_resp.child_id = w->child_id;
            m.u.child_join_resp.cluster_id = s->cluster_id;
            m.u.child_join_resp.registered_rev = p->results[i].revision;
            conn_send(c, &m);
        } else if (w->kind == SERVER_WRITE_OK) {
            send_ok(c, w->msg.request_id);
        } else {
            struct cd_msg m;
            memset(&m, 0, sizeof m);
            m.request_id = w->msg.request_id;
            m.type = CD_MSG_WRITE_RESP;
            m.u.write_resp.revision = p->results[i].revision;
            m.u.write_resp.succeeded = p->results[i].succeeded;
            m.u.write_resp.deleted = p->results[i].n_deleted;
            conn_send(c, &m);
        }
        pending_free(w);
        if (c->closing && c->refs == 0) {
            conn_close(c);
        }
    }
    free(p->items);
    free(p->results);
    free(p);
}

struct cd_result *server__results_for(void *arg, uint64_t index, size_t n_ops)
{
    struct server *s = arg;
    for (struct proposal *p = s->inflight; p != NULL; p = p->next) {
        if (p->req.index == index && p->n == n_ops) {
            return p->results;
        }
    }
    return NULL;
}

/* Propose every write of this loop turn as one Raft entry. */
static void flush_writes(struct server *s)
{
    /* A new leader holds writes until its barrier is applied (a few ms)
     * rather than refusing them: clients would back off for longer. */
    /* A leader handing over holds them too (server__transfer): the
     * next leader takes them, or this one once the transfer failed. */
    if (s->n_writes == 0 || s->lead == LEAD_LEADING ||
        (s->lead == LEAD_READY && server__quiescing(s))) {
        return;
    }
    size_t n = s->n_writes;
    struct pending_write *items = s->writes;
    s->writes = NULL;
    s->n_writes = s->cap_writes = 0;

    struct proposal *p = calloc(1, sizeof *p);
    struct cd_op *ops = calloc(n, sizeof *ops);
    struct cd_result *results = calloc(n, sizeof *results);
    int rc = p == NULL || ops == NULL || results == NULL ? -ENOMEM : 0;
    if (rc == 0 && s->lead != LEAD_READY) {
        rc = CD_ENOTLEADER;
    }
    struct raft_buffer rb = {NULL, 0};
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            ops[i] = items[i].msg.u.write.op;
        }
        struct cd_batch b = {server__wall_ms(), ops, n};
        rc = fsm_encode_entry(&b, s->cluster_id, &rb);
    }
    if (rc == 0) {
        p->s = s;
        p->n = n;
        p->items = items;
        p->results = results;
        p->req.data = p;
        p->proposed_ns = uv_hrtime();
        int rv = raft_apply(&s->raft, &p->req, &rb, 1, apply_cb);
        if (rv != 0) {
            if (fsm_apply_failed_keeps_buffer(rv)) {
                raft_free(rb.base);
            }
            log_warn("api", "proposal refused: %s", raft_errmsg(&s->raft));
            rc = server__raft_err(rv);
        } else {
            metrics_observe_batch(s->metrics, n);
        }
    }
    free(ops);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            items[i].conn->refs--;
            send_error(items[i].conn, items[i].msg.request_id, rc);
            pending_free(&items[i]);
            if (items[i].conn->closing && items[i].conn->refs == 0) {
                conn_close(items[i].conn);
            }
        }
        free(items);
        free(results);
        free(p);
        return;
    }
    /* results and items now belong to p, which belongs to s->inflight
     * until apply_cb frees them (cppcheck does not follow the list). */
    p->next = s->inflight;
    s->inflight = p;
    // cppcheck-suppress memleak
}

static int queue_write_kind(struct server *s,
                            struct conn *c,
                            struct cd_msg *msg,
                            enum server_write_kind kind,
                            uint64_t child_id,
                            void *owned)
{
    if (s->n_writes == s->cap_writes) {
        size_t cap = s->cap_writes ? s->cap_writes * 2 : 64;
        struct pending_write *w = realloc(s->writes, cap * sizeof *w);
        if (w == NULL) {
            return -ENOMEM;
        }
        s->writes = w;
        s->cap_writes = cap;
    }
    struct pending_write *w = &s->writes[s->n_writes++];
    w->conn = c;
    w->msg = *msg; /* moved */
    w->kind = kind;
    w->child_id = child_id;
    w->owned = owned;
    c->refs++;
    if (s->n_writes >= CODEC_MAX_OPS / 2) {
        flush_writes(s);
    }
    return 0;
}

static int queue_write(struct server *s, struct conn *c, struct cd_msg *msg)
{
    return queue_write_kind(s, c, msg, SERVER_WRITE_CLIENT, 0, NULL);
}

int server__queue_write(struct server *s,
                        struct conn *c,
                        struct cd_msg *msg,
                        enum server_write_kind kind,
                        uint64_t child_id,
                        void *owned)
{
    if (s->lead == LEAD_FOLLOWER) {
        return CD_ENOTLEADER;
    }
    return queue_write_kind(s, c, msg, kind, child_id, owned);
}

int server__queue_op(struct conn *c,
                     struct cd_msg *msg,
                     const struct cd_op *op,
                     enum server_write_kind kind,
                     uint64_t child_id,
                     void *owned)
{
    struct server *s = server__conn_server(c);
    struct cd_msg w = *msg; /* keeps the decoded request's memory */
    w.type = CD_MSG_WRITE;
    memset(&w.u, 0, sizeof w.u);
    w.u.write.op = *op;
    int rc = server__queue_write(s, c, &w, kind, child_id, owned);
    if (rc != 0) {
        free(owned);
        server__send_error(c, msg->request_id, rc);
        return 0;
    }
    memset(msg, 0, sizeof *msg); /* moved */
    return 1;
}

/* --- reads --------------------------------------------------------------- */

struct range_acc
{
    struct cd_kv *kvs;
    size_t n, cap;
    int keys_only;
};

static int range_collect(void *arg, const struct store_kv *kv)
{
    struct range_acc *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct cd_kv *p = realloc(a->kvs, cap * sizeof *p);
        if (p == NULL) {
            return 1; /* stop; reported as -ENOMEM below */
        }
        a->kvs = p;
        a->cap = cap;
    }
    struct cd_kv *o = &a->kvs[a->n++];
    o->key = (struct cd_buf){kv->key, kv->key_len};
    o->value = a->keys_only ? (struct cd_buf){NULL, 0}
                            : (struct cd_buf){kv->value, kv->value_len};
    o->create_rev = kv->create_rev;
    o->mod_rev = kv->mod_rev;
    o->version = kv->version;
    return 0;
}

/* Answer a GET or RANGE from the local store. */
static void serve_read(struct conn *c,
                       const struct cd_msg *req,
                       int serializable)
{
    struct server *s = c->s;
    struct store_read *r;
    struct store_meta m;
    struct range_acc acc = {NULL, 0, 0, 0};
    struct cd_msg resp;
    int more = 0;
    int rc = store_read_begin(s->store, &r);
    if (rc != 0) {
        send_error(c, req->request_id, rc);
        return;
    }
    rc = store_read_meta(r, &m);
    if (rc == 0 && req->type == CD_MSG_GET) {
        struct store_kv kv;
        rc = store_read_get(r, req->u.get.key.data, req->u.get.key.len, &kv);
        if (rc == 0) {
            rc = range_collect(&acc, &kv) != 0 ? -ENOMEM : 0;
        } else if (rc == CD_ENOTFOUND) {
            rc = 0; /* zero kvs */
        }
    } else if (rc == 0) {
        acc.keys_only = req->u.range.keys_only;
        size_t limit = req->u.range.limit > 100000 || req->u.range.limit == 0
                           ? 100000
                           : (size_t)req->u.range.limit;
        rc = store_read_range(r, req->u.range.prefix.data,
                              req->u.range.prefix.len, req->u.range.start.data,
                              req->u.range.start.len, limit, range_collect,
                              &acc, &more);
        if (rc == 0 && acc.n < limit && more) {
            rc = -ENOMEM;
        }
    }
    if (rc != 0) {
        send_error(c, req->request_id, rc);
    } else {
        memset(&resp, 0, sizeof resp);
        resp.request_id = req->request_id;
        resp.type = CD_MSG_RANGE_RESP;
        resp.u.range_resp.kvs = acc.kvs;
        resp.u.range_resp.n_kvs = acc.n;
        resp.u.range_resp.more = more;
        resp.u.range_resp.revision = m.revision;
        resp.u.range_resp.serializable = serializable;
        conn_send(c, &resp); /* encodes now: the view may end after */
    }
    free(acc.kvs);
    store_read_end(r);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct read_batch *b = req->data;
    fsm_flush(&b->s->fsm);
    for (size_t i = 0; i < b->n; i++) {
        struct pending_write *it = &b->items[i];
        it->conn->refs--;
        if (status != 0) {
            send_error(it->conn, it->msg.request_id,
                       status == RAFT_LEADERSHIPLOST
                           ? CD_ENOTLEADER
                           : server__raft_err(status));
        } else if (!it->conn->closing) {
            serve_read(it->conn, &it->msg, 0);
        }
        codec_msg_free(&it->msg);
        if (it->conn->closing && it->conn->refs == 0) {
            conn_close(it->conn);
        }
    }
    free(b->items);
    free(b);
}

/* One barrier confirms leadership for every read of this loop turn. */
static void flush_reads(struct server *s)
{
    struct read_batch *b = s->reads;
    if (b == NULL || s->lead == LEAD_LEADING ||
        (s->lead == LEAD_READY && server__quiescing(s))) {
        return;
    }
    s->reads = NULL;
    int rv = s->lead == LEAD_READY ? raft_barrier(&s->raft, &b->req, barrier_cb)
                                   : RAFT_NOTLEADER;
    if (rv != 0) {
        barrier_cb(&b->req, rv == RAFT_NOTLEADER ? RAFT_LEADERSHIPLOST : rv);
    }
}

static int queue_read(struct server *s, struct conn *c, struct cd_msg *msg)
{
    struct read_batch *b = s->reads;
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL) {
            return -ENOMEM;
        }
        b->s = s;
        b->req.data = b;
        s->reads = b;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct pending_write *p = realloc(b->items, cap * sizeof *p);
        if (p == NULL) {
            return -ENOMEM;
        }
        b->items = p;
        b->cap = cap;
    }
    b->items[b->n].conn = c;
    b->items[b->n].msg = *msg;
    b->n++;
    c->refs++;
    return 0;
}

/* --- watches ------------------------------------------------------------- */

struct watch_acc
{
    struct cd_event *events;
    size_t n, cap;
    size_t bytes;      /* keys and values so far */
    uint64_t last_rev; /* revision of the last change taken */
    const uint8_t *prefix;
    size_t prefix_len;
    int failed;
};

static int watch_collect(void *arg, const struct store_change *ch)
{
    struct watch_acc *a = arg;
    /* A page ends between revisions once it is big enough: stopping at
     * the first change of a revision leaves that revision whole for the
     * next page (store_read_changes then reports the one before). */
    if (a->n > 0 && a->bytes >= WATCH_PAGE_BYTES &&
        ch->revision != a->last_rev) {
        return 1;
    }
    a->last_rev = ch->revision;
    if (a->prefix_len > 0 &&
        (ch->kv.key_len < a->prefix_len ||
         memcmp(ch->kv.key, a->prefix, a->prefix_len) != 0)) {
        return 0;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        struct cd_event *p = realloc(a->events, cap * sizeof *p);
        if (p == NULL) {
            a->failed = 1;
            return 1;
        }
        a->events = p;
        a->cap = cap;
    }
    struct cd_event *e = &a->events[a->n++];
    a->bytes += ch->kv.key_len + ch->kv.value_len + 32;
    e->type = ch->type == STORE_CHANGE_PUT ? CD_EVENT_PUT : CD_EVENT_DELETE;
    e->sub = ch->sub;
    e->kv.key = (struct cd_buf){ch->kv.key, ch->kv.key_len};
    e->kv.value = (struct cd_buf){ch->kv.value, ch->kv.value_len};
    e->kv.create_rev = ch->kv.create_rev;
    e->kv.mod_rev = ch->kv.mod_rev;
    e->kv.version = ch->kv.version;
    return 0;
}

static void watch_free(struct watch *w)
{
    free(w->prefix);
    free(w);
}

/* Deliver what a watch has not seen yet; 1 when the watch must end. */
static int watch_deliver(struct conn *c, struct watch *w)
{
    struct server *s = c->s;
    while (w->next < s->fsm.revision && !c->closing) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >
            WATCH_BACKLOG) {
            return 0; /* resumes when the queue drains */
        }
        struct store_read *r;
        struct watch_acc acc = {.prefix = w->prefix,
                                .prefix_len = w->prefix_len};
        uint64_t next = w->next;
        int rc = store_read_begin(s->store, &r);
        if (rc != 0) {
            return 0;
        }
        rc = store_read_changes(r, w->next, WATCH_PAGE, watch_collect, &acc,
                                &next);
        struct cd_msg m;
        memset(&m, 0, sizeof m);
        m.request_id = w->request_id;
        m.type = CD_MSG_CHANGES;
        if (rc == CD_ECOMPACTED) {
            struct store_meta meta;
            store_read_meta(r, &meta);
            m.u.changes.compacted = 1;
            m.u.changes.compact_rev = meta.compact_rev;
            m.u.changes.revision = meta.revision;
            m.u.changes.epoch = meta.epoch;
            conn_send(c, &m);
            store_read_end(r);
            free(acc.events);
            return 1;
        }
        if (rc != 0 || acc.failed || next == w->next) {
            store_read_end(r);
            free(acc.events);
            return rc != 0 && rc != CD_EBADREV;
        }
        if (acc.n > 0 || w->child) {
            m.u.changes.events = acc.events;
            m.u.changes.n_events = acc.n;
            m.u.changes.revision = next;
            conn_send(c, &m);
            w->last_sent_ms = uv_now(s->loop);
        }
        store_read_end(r);
        free(acc.events);
        w->next = next;
    }
    return 0;
}

static void flush_watches(struct server *s)
{
    if (!s->watches_dirty) {
        return;
    }
    s->watches_dirty = 0;
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        struct watch **pw = &c->watches;
        while (*pw != NULL) {
            struct watch *w = *pw;
            if (watch_deliver(c, w)) {
                *pw = w->next_watch;
                watch_free(w);
            } else {
                pw = &w->next_watch;
            }
        }
    }
}

/*
 * A child's stream carries an empty batch at least every CHILD_HEARTBEAT_MS
 * so that the child can tell a quiet cluster from a dead connection (a
 * parent that vanished without closing it) and knows its staleness.
 */
static void heartbeat_children(struct server *s)
{
    uint64_t now = uv_now(s->loop);
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        for (struct watch *w = c->watches; w != NULL; w = w->next_watch) {
            if (!w->child || c->closing ||
                now - w->last_sent_ms < CHILD_HEARTBEAT_MS ||
                uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >
                    WATCH_BACKLOG) {
                continue;
            }
            struct cd_msg m;
            memset(&m, 0, sizeof m);
            m.type = CD_MSG_CHANGES;
            m.u.changes.revision = w->next;
            conn_send(c, &m);
            w->last_sent_ms = now;
        }
    }
}

void server__watch_counts(struct server *s,
                          unsigned *watches,
                          unsigned *child_streams)
{
    *watches = *child_streams = 0;
    for (const struct conn *c = s->conns; c != NULL; c = c->next) {
        for (const struct watch *w = c->watches; w != NULL; w = w->next_watch) {
            ++*watches;
            *child_streams += w->child != 0;
        }
    }
}

void server__applied(void *arg, uint64_t index, uint64_t revision)
{
    struct server *s = arg;
    (void)index;
    (void)revision;
    s->watches_dirty = 1;
}

/*
 * A child whose cache holds another history than this parent's store (its
 * hello's epoch differs: a restore from a backup, a forced new cluster)
 * cannot go on from its revision, which may even be ahead of this
 * history: it is told "compacted", with this parent's epoch, and replaces
 * its cache with a snapshot, then says hello again.
 */
static void reset_child(struct conn *c, const struct cd_msg *hello)
{
    struct store_meta meta;
    struct cd_msg m;
    if (server__store_meta(c->s, &meta) != 0) {
        send_error(c, hello->request_id, CD_EBUSY);
        return;
    }
    log_info("children",
             "child %" PRIu64 " holds history epoch %016" PRIx64
             " at revision %" PRIu64 ", this store %016" PRIx64 " at %" PRIu64
             ": it replaces its cache with a snapshot",
             hello->u.hello.child_id, hello->u.hello.epoch,
             hello->u.hello.revision, meta.epoch, meta.revision);
    send_ok(c, hello->request_id);
    memset(&m, 0, sizeof m);
    m.type = CD_MSG_CHANGES;
    m.u.changes.compacted = 1;
    m.u.changes.compact_rev = meta.compact_rev;
    m.u.changes.revision = meta.revision;
    m.u.changes.epoch = meta.epoch;
    conn_send(c, &m);
}

static void start_watch(struct conn *c, struct cd_msg *req)
{
    if (req->type == CD_MSG_HELLO) {
        int rc = server__child_hello(c->s, req);
        if (rc < 0) {
            send_error(c, req->request_id, rc);
            return;
        }
        if (rc == SERVER_HELLO_RESET) {
            reset_child(c, req);
            return;
        }
    }
    struct watch *w = calloc(1, sizeof *w);
    if (w == NULL) {
        send_error(c, req->request_id, -ENOMEM);
        return;
    }
    /* A revision this parent has not reached yet is fine, as in etcd: the
     * watch waits for it (a follower may be a little behind the leader
     * that acknowledged the write the client watches from). */
    w->request_id = req->request_id;
    w->next = req->u.watch.since;
    if (req->type == CD_MSG_HELLO) {
        /* Every child gets every key, pushed with request id 0. */
        w->child = 1;
        w->request_id = 0;
        w->next = req->u.hello.revision;
        w->last_sent_ms = uv_now(c->s->loop);
    } else if (req->u.watch.prefix.len > 0) {
        w->prefix = malloc(req->u.watch.prefix.len);
        if (w->prefix == NULL) {
            free(w);
            send_error(c, req->request_id, -ENOMEM);
            return;
        }
        memcpy(w->prefix, req->u.watch.prefix.data, req->u.watch.prefix.len);
        w->prefix_len = req->u.watch.prefix.len;
    }
    send_ok(c, req->request_id);
    w->next_watch = c->watches;
    c->watches = w;
    c->s->watches_dirty = 1;
}

/* --- snapshot download --------------------------------------------------- */

/*
 * Downloads of the store's snapshot (a child catching up or replacing its
 * cache, clusterctl snapshot save, a parent joining) never copy the store
 * on the loop: the copy is made on libuv's thread pool, as raft's
 * snapshots are, into an unnamed file in the data directory.  A copy
 * serves every later request while the store has not changed since it
 * began (then it holds every write acknowledged before them), and the
 * requests that say a recent copy will do (children, who catch up from the
 * copy's revision in their stream) while it is being made and for
 * SNAPSHOT_REUSE_MS after: after a restore every child asks at once.  Each
 * download is paced: a chunk is read and sent only while its connection
 * has less than SNAPSHOT_BACKLOG queued, so that a thousand downloads do
 * not queue a thousand copies in memory.
 */
struct snap_copy
{
    uv_work_t work;
    struct server *s;
    int fd;
    uint64_t revision; /* the store's before the copy: the copy is as new */
    uint64_t size;
    uint64_t made_ms; /* loop time it was ready */
    int rc;
    int done;
    unsigned refs; /* downloads using it, and 1 while it is s->dl_copy */
};

struct snap_send
{
    struct snap_copy *copy;
    uint64_t request_id;
    uint64_t off;
    struct snap_send *next;
};

static void copy_release(struct snap_copy *cp)
{
    if (cp != NULL && --cp->refs == 0) {
        if (cp->fd >= 0) {
            close(cp->fd);
        }
        free(cp);
    }
}

/* End a download (done, failed, or its connection closes). */
static void send_drop(struct conn *c, struct snap_send *d)
{
    for (struct snap_send **pd = &c->sends; *pd != NULL; pd = &(*pd)->next) {
        if (*pd == d) {
            *pd = d->next;
            break;
        }
    }
    copy_release(d->copy);
    free(d);
    c->refs--;
}

static void sends_drop_all(struct conn *c)
{
    while (c->sends != NULL) {
        send_drop(c, c->sends);
    }
}

/* Send what the connection can take of its downloads whose copy is ready;
 * answer those whose copy failed. */
static void snap_pump(struct conn *c)
{
    struct snap_send *d = c->sends;
    uint8_t *buf = NULL;
    while (d != NULL && !c->closing) {
        struct snap_send *next = d->next;
        struct snap_copy *cp = d->copy;
        if (!cp->done) {
            d = next;
            continue;
        }
        if (cp->rc != 0) {
            send_error(c, d->request_id, cp->rc);
            send_drop(c, d);
            d = next;
            continue;
        }
        if (buf == NULL && (buf = malloc(SNAPSHOT_CHUNK)) == NULL) {
            break; /* the next drained write tries again */
        }
        int finished = 0;
        while (!finished && uv_stream_get_write_queue_size(
                                (uv_stream_t *)&c->tcp) < SNAPSHOT_BACKLOG) {
            size_t want = cp->size - d->off < SNAPSHOT_CHUNK
                              ? (size_t)(cp->size - d->off)
                              : SNAPSHOT_CHUNK;
            ssize_t n = pread(cp->fd, buf, want, (off_t)d->off);
            if (n != (ssize_t)want) {
                send_error(c, d->request_id, n < 0 ? -errno : CD_ETRUNCATED);
                finished = 1;
                break;
            }
            struct cd_msg m;
            memset(&m, 0, sizeof m);
            m.request_id = d->request_id;
            m.type = CD_MSG_SNAPSHOT_CHUNK;
            m.u.snapshot_chunk.offset = d->off;
            m.u.snapshot_chunk.data = (struct cd_buf){buf, want};
            m.u.snapshot_chunk.last = d->off + want == cp->size;
            m.u.snapshot_chunk.revision = cp->revision;
            if (conn_send(c, &m) != 0) {
                finished = 1;
                break;
            }
            d->off += want;
            finished = d->off == cp->size;
        }
        if (finished) {
            send_drop(c, d);
        }
        d = next;
    }
    free(buf);
}

static void copy_work(uv_work_t *w)
{
    struct snap_copy *cp = w->data;
    cp->rc = store_snapshot(cp->s->store, cp->fd, NULL);
    if (cp->rc == 0) {
        off_t end = lseek(cp->fd, 0, SEEK_END);
        cp->rc = end < 0 ? -errno : 0;
        cp->size = end < 0 ? 0 : (uint64_t)end;
    }
}

static void copy_done(uv_work_t *w, int status)
{
    struct snap_copy *cp = w->data;
    struct server *s = cp->s;
    s->dl_copy_running--;
    cp->done = 1;
    cp->made_ms = uv_now(s->loop);
    if (status != 0 && cp->rc == 0) {
        cp->rc = status;
    }
    if (cp->rc != 0) {
        log_warn("api", "snapshot for a download failed: %s",
                 cd_strerror(cp->rc));
    }
    cp->refs++; /* the downloads below may drop it to zero */
    unsigned waiting = 0;
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        for (struct snap_send *d = c->sends; d != NULL; d = d->next) {
            waiting += d->copy == cp;
        }
    }
    if (cp->rc == 0) {
        log_info("api",
                 "snapshot copy at revision %" PRIu64 ": %" PRIu64
                 " bytes, for %u download(s)",
                 cp->revision, cp->size, waiting);
    }
    struct conn *next;
    for (struct conn *c = s->conns; c != NULL; c = next) {
        next = c->next;
        for (struct snap_send *d = c->sends; d != NULL; d = d->next) {
            if (d->copy == cp) {
                snap_pump(c);
                break;
            }
        }
    }
    copy_release(cp);
    server__work_done(s);
}

/* The copy a request should use: the current one when it will do (see
 * above), else a new one.  NULL with *rc on failure. */
static struct snap_copy *copy_for_request(struct server *s, int recent, int *rc)
{
    struct snap_copy *cp = s->dl_copy;
    int usable = cp != NULL && !(cp->done && cp->rc != 0);
    if (usable && cp->revision == s->fsm.revision) {
        return cp;
    }
    if (usable && recent &&
        (!cp->done || uv_now(s->loop) - cp->made_ms <= SNAPSHOT_REUSE_MS)) {
        return cp;
    }
    if (s->stopping) {
        *rc = CD_ESHUTDOWN;
        return NULL;
    }
    cp = calloc(1, sizeof *cp);
    if (cp == NULL) {
        *rc = -ENOMEM;
        return NULL;
    }
    /* An unnamed file beside the store: nothing to clean up after a
     * crash, and the disk that holds the store has room for its copy.
     * Where the file system has no unnamed files, a named one, unlinked
     * at once. */
    cp->fd = open(s->cfg.data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (cp->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        char path[300];
        snprintf(path, sizeof path, "%s/download.XXXXXX", s->cfg.data_dir);
        cp->fd = mkostemp(path, O_CLOEXEC);
        if (cp->fd >= 0) {
            unlink(path);
        }
    }
    if (cp->fd < 0) {
        *rc = -errno;
        free(cp);
        return NULL;
    }
    struct store_meta meta;
    server__store_meta(s, &meta);
    cp->s = s;
    cp->revision = meta.revision;
    cp->refs = 1; /* as s->dl_copy */
    cp->work.data = cp;
    if ((*rc = uv_queue_work(s->loop, &cp->work, copy_work, copy_done)) != 0) {
        close(cp->fd);
        free(cp);
        return NULL;
    }
    s->dl_copy_running++;
    copy_release(s->dl_copy);
    s->dl_copy = cp;
    return cp;
}

static void send_snapshot(struct conn *c, uint64_t request_id, int recent)
{
    struct server *s = c->s;
    int rc = 0;
    struct snap_send *d = calloc(1, sizeof *d);
    struct snap_copy *cp = d != NULL ? copy_for_request(s, recent, &rc) : NULL;
    if (cp == NULL) {
        free(d);
        send_error(c, request_id, d == NULL ? -ENOMEM : rc);
        return;
    }
    cp->refs++;
    d->copy = cp;
    d->request_id = request_id;
    d->next = c->sends;
    c->sends = d;
    c->refs++; /* the connection lives until the download ends */
    if (cp->done) {
        snap_pump(c);
    }
}

void server__downloads_close(struct server *s)
{
    copy_release(s->dl_copy);
    s->dl_copy = NULL;
}

/* --- status and members -------------------------------------------------- */

static void send_status(struct conn *c, uint64_t request_id)
{
    struct server *s = c->s;
    struct cd_msg m;
    raft_id leader;
    const char *addr;
    raft_leader(&s->raft, &leader, &addr);
    memset(&m, 0, sizeof m);
    m.request_id = request_id;
    m.type = CD_MSG_STATUS_RESP;
    m.u.status_resp.id = s->id;
    m.u.status_resp.leader_id = leader;
    m.u.status_resp.leader_api = server__leader_api(s);
    m.u.status_resp.term = raft_current_term(&s->raft);
    m.u.status_resp.revision = s->fsm.revision;
    m.u.status_resp.applied_index = raft_last_applied(&s->raft);
    m.u.status_resp.commit_index = raft_commit_index(&s->raft);
    m.u.status_resp.state = s->lead == LEAD_READY
                                ? "leader"
                                : raft_state_name(raft_state(&s->raft));
    m.u.status_resp.version = "clusterd 0.1";
    struct store_meta meta;
    if (server__store_meta(s, &meta) == 0) {
        m.u.status_resp.epoch = meta.epoch;
    }
    conn_send(c, &m);
}

static enum cd_member_role role_of(int raft_role)
{
    switch (raft_role) {
        case RAFT_VOTER:
            return CD_ROLE_VOTER;
        case RAFT_STANDBY:
            return CD_ROLE_STANDBY;
        default:
            return CD_ROLE_SPARE;
    }
}

static void send_members(struct conn *c, uint64_t request_id)
{
    struct server *s = c->s;
    const struct raft_configuration *conf = &s->raft.configuration;
    struct cd_member *ms = calloc(conf->n ? conf->n : 1, sizeof *ms);
    char(*apis)[64] = calloc(conf->n ? conf->n : 1, 64);
    raft_id leader;
    const char *addr;
    if (ms == NULL || apis == NULL) {
        free(ms);
        free(apis);
        send_error(c, request_id, -ENOMEM);
        return;
    }
    raft_leader(&s->raft, &leader, &addr);
    for (unsigned i = 0; i < conf->n; i++) {
        ms[i].id = conf->servers[i].id;
        ms[i].address = conf->servers[i].address;
        ms[i].role = role_of(conf->servers[i].role);
        if (server__member_api(s, ms[i].id, apis[i], 64) == 0) {
            ms[i].api_address = apis[i];
        }
        ms[i].leader = ms[i].id == leader;
        /* The leader's failure detector; a parent with no leader knows
         * only itself. */
        ms[i].reachable = raft_state(&s->raft) == RAFT_LEADER
                              ? server__member_alive(s, ms[i].id)
                              : ms[i].id == s->id;
    }
    struct cd_msg m;
    memset(&m, 0, sizeof m);
    m.request_id = request_id;
    m.type = CD_MSG_MEMBERS_RESP;
    m.u.members_resp.members = ms;
    m.u.members_resp.n_members = conf->n;
    conn_send(c, &m);
    free(ms);
    free(apis);
}

/* --- membership changes -------------------------------------------------- */

/* A decimal number kept in the store under key: 0 and *out, CD_ENOTFOUND,
 * or a read error.  clusterd's own records (/cluster/...) are such. */
static int read_u64_key(struct server *s, const char *key, uint64_t *out)
{
    struct store_read *r;
    struct store_kv kv;
    int rc = store_read_begin(s->store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_get(r, key, strlen(key), &kv);
    if (rc == 0) {
        char buf[24];
        size_t n =
            kv.value_len < sizeof buf - 1 ? kv.value_len : sizeof buf - 1;
        memcpy(buf, kv.value, n);
        buf[n] = '\0';
        *out = strtoull(buf, NULL, 10);
    }
    store_read_end(r);
    return rc;
}

/* Tokens are stored as /cluster/tokens/<sha256 hex> = expiry (ms). */
static void token_key(const char *token, char *key, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(token, strlen(token), md, &mdlen, EVP_sha256(), NULL);
    int n = snprintf(key, len, "/cluster/tokens/");
    for (unsigned i = 0; i < mdlen && (size_t)n + 3 < len; i++) {
        n += snprintf(key + n, len - (size_t)n, "%02x", md[i]);
    }
}

int server__token_valid(struct server *s, const char *token)
{
    char key[128];
    uint64_t expires = 0;
    if (token == NULL || token[0] == '\0') {
        return 0;
    }
    token_key(token, key, sizeof key);
    return read_u64_key(s, key, &expires) == 0 && expires > server__wall_ms();
}

/* Propose one internal write (not tied to a client connection). */
struct internal_write
{
    struct raft_apply req;
    struct server *s;
    char key[128];
    char value[128];
    /* Optional: who waits for the commit (a token request). */
    struct conn *conn;
    uint64_t request_id;
    char token[40];
    uint64_t expires_ms;
    /* Optional: write the token here once it is committed (valid). */
    char file[300];
};

static void internal_cb(struct raft_apply *req, int status, void *result)
{
    struct internal_write *w = req->data;
    (void)result;
    fsm_flush(&w->s->fsm);
    if (status != 0) {
        log_warn("api", "internal write failed: %s", raft_strerror(status));
    }
    if (status == 0 && w->file[0] != '\0') {
        FILE *f = fopen(w->file, "w");
        if (f != NULL) {
            fchmod(fileno(f), 0600);
            fprintf(f, "%s\n", w->token);
            fclose(f);
            log_info("api", "first join token written to %s (valid 24 h)",
                     w->file);
        }
    }
    if (w->conn != NULL) {
        struct conn *c = w->conn;
        c->refs--;
        if (status != 0) {
            send_error(c, w->request_id,
                       status == RAFT_LEADERSHIPLOST
                           ? CD_ELEADERLOST
                           : server__raft_err(status));
        } else {
            struct cd_msg m;
            memset(&m, 0, sizeof m);
            m.request_id = w->request_id;
            m.type = CD_MSG_TOKEN_RESP;
            m.u.token_resp.token = w->token;
            m.u.token_resp.expires_ms = w->expires_ms;
            conn_send(c, &m);
        }
        if (c->closing && c->refs == 0) {
            conn_close(c);
        }
    }
    free(w);
}

static int propose_put_for(struct server *s,
                           const char *key,
                           const char *value,
                           struct internal_write **out);

static int propose_put(struct server *s, const char *key, const char *value)
{
    return propose_put_for(s, key, value, NULL);
}

/*
 * Propose one op of the server's own (not a client's) as its own entry.
 * The op's bytes are copied into the entry at once.  With out, the caller
 * gets the request to fill in who waits for the commit; it may do so
 * before the loop turns, since the callback cannot have run yet.
 */
static int propose_op(struct server *s,
                      const struct cd_op *op,
                      struct internal_write **out)
{
    struct cd_batch b = {server__wall_ms(), op, 1};
    struct raft_buffer rb;
    struct internal_write *w = calloc(1, sizeof *w);
    int rc = w == NULL ? -ENOMEM : fsm_encode_entry(&b, s->cluster_id, &rb);
    if (rc != 0) {
        free(w);
        return rc;
    }
    w->req.data = w;
    w->s = s;
    int rv = raft_apply(&s->raft, &w->req, &rb, 1, internal_cb);
    if (rv != 0) {
        if (fsm_apply_failed_keeps_buffer(rv)) {
            raft_free(rb.base);
        }
        log_warn("api", "internal write refused: %s", raft_errmsg(&s->raft));
        free(w);
        return server__raft_err(rv);
    }
    if (out != NULL) {
        *out = w;
    }
    return 0;
}

int server__propose_op(struct server *s, const struct cd_op *op)
{
    return propose_op(s, op, NULL);
}

static int propose_delete_prefix(struct server *s, const char *prefix)
{
    struct cd_op op = {.type = CD_OP_DELETE_PREFIX,
                       .key = {prefix, strlen(prefix)}};
    return propose_op(s, &op, NULL);
}

static int propose_put_for(struct server *s,
                           const char *key,
                           const char *value,
                           struct internal_write **out)
{
    struct cd_op op = {.type = CD_OP_PUT,
                       .key = {key, strlen(key)},
                       .value = {value, strlen(value)}};
    return propose_op(s, &op, out);
}

static void change_reply(struct server *s, int rc)
{
    struct conn *c = s->change_conn;
    s->change_busy = 0;
    s->change_conn = NULL;
    if (c == NULL) {
        return;
    }
    c->refs--;
    if (rc != 0) {
        send_error(c, s->change_request_id, rc);
    } else if (s->change_action == CD_MEMBER_ADD) {
        struct cd_member mem = {.id = s->change_id,
                                .address = "",
                                .role = CD_ROLE_SPARE,
                                .api_address = s->change_api};
        struct cd_msg m;
        memset(&m, 0, sizeof m);
        m.request_id = s->change_request_id;
        m.type = CD_MSG_MEMBERS_RESP;
        m.u.members_resp.members = &mem;
        m.u.members_resp.n_members = 1;
        conn_send(c, &m);
    } else {
        send_ok(c, s->change_request_id);
    }
    if (c->closing && c->refs == 0) {
        conn_close(c);
    }
}

static uint64_t last_id(struct server *s)
{
    uint64_t id = 0;
    read_u64_key(s, "/cluster/last_id", &id);
    return id;
}

static void change_cb(struct raft_change *req, int status)
{
    struct server *s = req->data;
    int rc = server__raft_err(status);
    fsm_flush(&s->fsm);
    if (status != 0 && s->change_conn == NULL) {
        log_warn("api", "membership change for node %llu failed: %s",
                 (unsigned long long)s->change_id, raft_strerror(status));
    }
    if (rc == 0 && s->change_action == CD_MEMBER_ADD) {
        char key[64], id[24];
        server__member_key(key, sizeof key, s->change_id);
        snprintf(id, sizeof id, "%" PRIu64, s->change_id);
        rc = propose_put(s, "/cluster/last_id", id);
        if (rc == 0) {
            rc = propose_put(s, key, s->change_api);
        }
    }
    change_reply(s, rc);
}

static int raft_role_of(enum cd_member_role r)
{
    switch (r) {
        case CD_ROLE_VOTER:
            return RAFT_VOTER;
        case CD_ROLE_STANDBY:
            return RAFT_STANDBY;
        default:
            return RAFT_SPARE;
    }
}

/* Removing id must leave a majority of the remaining voters alive. */
static int removal_safe(struct server *s, uint64_t id)
{
    const struct raft_configuration *conf = &s->raft.configuration;
    unsigned voters = 0, live = 0;
    int found = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == id) {
            found = 1;
            continue;
        }
        if (conf->servers[i].role == RAFT_VOTER) {
            voters++;
            live += server__member_alive(s, conf->servers[i].id);
        }
    }
    if (!found) {
        return CD_ENOTFOUND;
    }
    if (voters == 0 || live < voters / 2 + 1) {
        return CD_EQUORUM;
    }
    return 0;
}

struct leave_req
{
    struct raft_transfer req;
    struct conn *c;
    uint64_t request_id;
};

static void leave_transfer_cb(struct raft_transfer *req)
{
    struct leave_req *l = req->data;
    l->c->refs--;
    /* Not the leader any more (or the transfer failed): either way the
     * client asks again, at whoever leads now. */
    send_error(l->c, l->request_id, CD_ENOTLEADER);
    if (l->c->closing && l->c->refs == 0) {
        conn_close(l->c);
    }
    free(l);
}

static void leave_by_transfer(struct conn *c, const struct cd_msg *req)
{
    struct server *s = c->s;
    if (s->raft.configuration.n < 2) {
        send_error(c, req->request_id, CD_EQUORUM);
        return;
    }
    int rc = removal_safe(s, s->id);
    if (rc != 0) {
        send_error(c, req->request_id, rc);
        return;
    }
    struct leave_req *l = calloc(1, sizeof *l);
    if (l == NULL) {
        send_error(c, req->request_id, -ENOMEM);
        return;
    }
    l->c = c;
    l->request_id = req->request_id;
    l->req.data = l;
    server__vip_release(s, "handing leadership over");
    int rv = server__transfer(s, &l->req, 0, leave_transfer_cb);
    if (rv != 0) {
        free(l);
        send_error(c, req->request_id, server__raft_err(rv));
        return;
    }
    c->refs++;
    log_info("api", "asked to remove itself: handing leadership over first");
}

/* Would libraft take a configuration change now?  Asked before raft_add
 * and raft_remove, which libraft 0.22.1 refuses only after encoding the new
 * configuration, and then leaks the encoding: a change of the previous
 * leader's, or a promotion's catch-up, still in flight. */
static int config_settled(struct server *s)
{
    return s->raft.configuration_uncommitted_index == 0 &&
           (raft_state(&s->raft) != RAFT_LEADER ||
            s->raft.leader_state.promotee_id == 0);
}

static void member_change(struct conn *c, struct cd_msg *req)
{
    struct server *s = c->s;
    const struct raft_configuration *conf = &s->raft.configuration;
    int rv;
    if (s->lead != LEAD_READY) {
        send_error(c, req->request_id, CD_ENOTLEADER);
        return;
    }
    if (s->change_busy || !config_settled(s)) {
        send_error(c, req->request_id, CD_EBUSY);
        return;
    }
    s->change.data = s;
    s->change_action = (int)req->u.member_change.action;
    s->change_request_id = req->request_id;
    s->change_api[0] = '\0';
    switch (req->u.member_change.action) {
        case CD_MEMBER_ADD: {
            if (!server__token_valid(s, req->u.member_change.token)) {
                send_error(c, req->request_id, -EACCES);
                return;
            }
            if (s->base_pending) {
                /* A restored backup is not in a snapshot yet (server.c):
                 * a joiner would miss it.  It comes within moments. */
                send_error(c, req->request_id, CD_EBUSY);
                return;
            }
            const char *addr = req->u.member_change.address;
            /* Ids are never reused, not even after a forced recovery
             * shrank the configuration: a zombie of an old node must not
             * be taken for a new one.  /cluster/last_id is the mark. */
            uint64_t max = last_id(s);
            for (unsigned i = 0; i < conf->n; i++) {
                if (strcmp(conf->servers[i].address, addr) == 0) {
                    send_error(c, req->request_id, -EEXIST);
                    return;
                }
                max = conf->servers[i].id > max ? conf->servers[i].id : max;
            }
            s->change_id = max + 1;
            snprintf(s->change_api, sizeof s->change_api, "%s",
                     req->u.member_change.api_address != NULL
                         ? req->u.member_change.api_address
                         : "");
            rv = raft_add(&s->raft, &s->change, s->change_id, addr, change_cb);
            break;
        }
        case CD_MEMBER_REMOVE:
            s->change_id = req->u.member_change.id;
            if (s->change_id == s->id) {
                /* A leader that removed itself would leave the cluster
                 * without a leader for a whole election: hand over first;
                 * the client retries the removal at the new leader. */
                leave_by_transfer(c, req);
                return;
            }
            if ((rv = removal_safe(s, s->change_id)) != 0) {
                send_error(c, req->request_id, rv);
                return;
            }
            rv = raft_remove(&s->raft, &s->change, s->change_id, change_cb);
            break;
        case CD_MEMBER_ASSIGN:
            s->change_id = req->u.member_change.id;
            rv =
                raft_assign(&s->raft, &s->change, s->change_id,
                            raft_role_of(req->u.member_change.role), change_cb);
            break;
        default:
            send_error(c, req->request_id, CD_EBADOP);
            return;
    }
    if (rv != 0) {
        log_warn("api", "membership change refused: %s", raft_errmsg(&s->raft));
        send_error(c, req->request_id,
                   rv == RAFT_BADID || rv == RAFT_NOTFOUND
                       ? CD_ENOTFOUND
                       : server__raft_err(rv));
        return;
    }
    s->change_busy = 1;
    s->change_conn = c;
    c->refs++;
}

struct transfer_req
{
    struct raft_transfer req;
    struct conn *c;
    uint64_t request_id;
    uint64_t to;
};

static void transfer_cb(struct raft_transfer *req)
{
    struct transfer_req *t = req->data;
    struct server *s = t->c->s;
    raft_id leader;
    const char *addr;
    raft_leader(&s->raft, &leader, &addr);
    t->c->refs--;
    if (leader != 0 && leader != s->id && (t->to == 0 || leader == t->to)) {
        send_ok(t->c, t->request_id);
    } else {
        send_error(t->c, t->request_id, CD_ETIMEOUT);
    }
    if (t->c->closing && t->c->refs == 0) {
        conn_close(t->c);
    }
    free(t);
}

static void leader_transfer(struct conn *c, struct cd_msg *req)
{
    struct server *s = c->s;
    if (s->lead != LEAD_READY) {
        send_error(c, req->request_id, CD_ENOTLEADER);
        return;
    }
    struct transfer_req *t = calloc(1, sizeof *t);
    if (t == NULL) {
        send_error(c, req->request_id, -ENOMEM);
        return;
    }
    t->c = c;
    t->request_id = req->request_id;
    t->to = req->u.transfer.to;
    t->req.data = t;
    server__vip_release(s, "handing leadership over");
    int rv = server__transfer(s, &t->req, t->to, transfer_cb);
    if (rv != 0) {
        free(t);
        send_error(c, req->request_id,
                   rv == RAFT_BADID || rv == RAFT_NOTFOUND
                       ? CD_ENOTFOUND
                       : server__raft_err(rv));
        return;
    }
    c->refs++;
}

/* A new token: 32 hex digits from the kernel's random source. */
static int new_token(char *out, size_t len)
{
    uint8_t raw[16];
    if (len < 33 || getrandom(raw, sizeof raw, 0) != sizeof raw) {
        return -EIO;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    }
    return 0;
}

/* The first leader of a new cluster makes a join token valid for a day and
 * leaves it, readable by root only, in <data>/join-token, once the token is
 * committed: a joiner that reads the file can use it at once. */
static void first_token(struct server *s)
{
    char token[40], key[128], value[32];
    struct internal_write *w = NULL;
    if (new_token(token, sizeof token) != 0) {
        log_warn("api", "could not create the first join token");
        return;
    }
    token_key(token, key, sizeof key);
    snprintf(value, sizeof value, "%" PRIu64,
             server__wall_ms() + (uint64_t)86400 * 1000);
    if (propose_put_for(s, key, value, &w) != 0 || w == NULL) {
        log_warn("api", "could not propose the first join token");
        return;
    }
    snprintf(w->token, sizeof w->token, "%s", token);
    snprintf(w->file, sizeof w->file, "%s/join-token", s->cfg.data_dir);
}

/* clusterctl token create: a new token, answered once it is committed. */
static void create_token(struct conn *c, const struct cd_msg *req)
{
    struct server *s = c->s;
    char token[40], key[128], value[32];
    struct internal_write *w = NULL;
    if (s->lead != LEAD_READY) {
        send_error(c, req->request_id, CD_ENOTLEADER);
        return;
    }
    unsigned ttl = req->u.token.ttl_s != 0 ? req->u.token.ttl_s : 3600;
    uint64_t expires = server__wall_ms() + (uint64_t)ttl * 1000;
    int rc = new_token(token, sizeof token);
    if (rc == 0) {
        token_key(token, key, sizeof key);
        snprintf(value, sizeof value, "%" PRIu64, expires);
        rc = propose_put_for(s, key, value, &w);
    }
    if (rc != 0 || w == NULL) {
        send_error(c, req->request_id, rc != 0 ? rc : -ENOMEM);
        return;
    }
    w->conn = c;
    w->request_id = req->request_id;
    w->expires_ms = expires;
    snprintf(w->token, sizeof w->token, "%s", token);
    c->refs++;
}

/* --- leadership hooks ---------------------------------------------------- */

/*
 * A new leader makes sure the replicated records about itself are right:
 * its API address (clients are redirected to it), and, on the first
 * leadership of a new cluster or of a new history (a restore from a
 * backup, a forced new cluster), the cluster's identity and history epoch
 * (/cluster/id, /cluster/epoch), with the old join tokens revoked and a
 * first join token written to <data>/join-token for the operator.
 */
void server__on_ready(struct server *s)
{
    char key[64], api[64];
    /* Fresh leadership: everyone gets the benefit of the doubt. */
    s->n_health = 0;
    server__children_reset(s);
    s->probe_ms = uv_now(s->loop);
    s->probe_index = raft_last_index(&s->raft);
    server__member_key(key, sizeof key, s->id);
    if (server__member_api(s, s->id, api, sizeof api) != 0 ||
        strcmp(api, s->cfg.api_addr) != 0) {
        propose_put(s, key, s->cfg.api_addr);
    }
    struct store_read *r;
    struct store_kv kv;
    struct store_meta meta;
    char cid[32], epoch[32];
    if (server__store_meta(s, &meta) != 0) {
        return;
    }
    snprintf(cid, sizeof cid, "%016" PRIx64, s->cluster_id);
    snprintf(epoch, sizeof epoch, "%016" PRIx64, meta.epoch);
    if (store_read_begin(s->store, &r) == 0) {
        int have = store_read_get(r, "/cluster/id", 11, &kv) == 0;
        int same = have && kv.value_len == strlen(cid) &&
                   memcmp(kv.value, cid, kv.value_len) == 0;
        /* A cluster that never changed history has no record (epoch 0). */
        int same_epoch = store_read_get(r, "/cluster/epoch", 14, &kv) == 0
                             ? kv.value_len == strlen(epoch) &&
                                   memcmp(kv.value, epoch, kv.value_len) == 0
                             : meta.epoch == 0;
        int voters_set = store_read_get(r, "/cluster/voters", 15, &kv) == 0;
        store_read_end(r);
        if (!same || !same_epoch) {
            /* A new cluster, or one started from a backup (its own or
             * another's): the join tokens of before must not open it. */
            if (have) {
                propose_delete_prefix(s, "/cluster/tokens/");
            }
            if (!same) {
                propose_put(s, "/cluster/id", cid);
            }
            if (!same_epoch) {
                log_info("api", "recording history epoch %s", epoch);
                propose_put(s, "/cluster/epoch", epoch);
            }
            if (!voters_set) {
                char voters[16];
                snprintf(voters, sizeof voters, "%u", s->cfg.voters);
                propose_put(s, "/cluster/voters", voters);
            }
            first_token(s);
        }
    }
}

void server__on_lost(struct server *s)
{
    server__vip_drop_conns(s);
    server__children_free(s);
    s->backup_now = 0; /* asked of this leader: the next one is asked anew */
    /* Writes not yet proposed and reads not yet confirmed go back to their
     * clients, who retry at the new leader.  Proposed entries and issued
     * barriers are failed by raft itself (LEADERSHIPLOST). */
    flush_writes(s);
    flush_reads(s);
}

/*
 * Keys under /cluster/ are clusterd's own records (members, tokens, the
 * voter target, later the children registry): clients read and watch them
 * but never write them, and no delete-prefix may sweep them away.
 */
static int reserved_key(struct cd_buf key, int prefix)
{
    static const char reserved[] = "/cluster/";
    size_t n = sizeof reserved - 1;
    if (key.len >= n && memcmp(key.data, reserved, n) == 0) {
        return 1;
    }
    /* A prefix shorter than "/cluster/" that it starts with covers it. */
    return prefix && key.len < n &&
           (key.len == 0 || memcmp(key.data, reserved, key.len) == 0);
}

static int op_touches_reserved(const struct cd_op *op)
{
    switch (op->type) {
        case CD_OP_PUT:
        case CD_OP_DELETE:
            return reserved_key(op->key, 0);
        case CD_OP_DELETE_PREFIX:
            return reserved_key(op->key, 1);
        case CD_OP_TXN:
            for (size_t i = 0; i < op->n_then; i++) {
                if (op_touches_reserved(&op->then_ops[i])) {
                    return 1;
                }
            }
            for (size_t i = 0; i < op->n_else; i++) {
                if (op_touches_reserved(&op->else_ops[i])) {
                    return 1;
                }
            }
            return 0;
        default:
            return 0;
    }
}

/* --- dispatch ------------------------------------------------------------ */

static void dispatch(struct conn *c, struct cd_msg *msg)
{
    struct server *s = c->s;
    if (msg->has_cluster_id && s->cluster_id != 0 &&
        msg->cluster_id != s->cluster_id) {
        send_error(c, msg->request_id, CD_EBADCLUSTER);
        codec_msg_free(msg);
        return;
    }
    switch (msg->type) {
        case CD_MSG_WRITE:
            if (op_touches_reserved(&msg->u.write.op)) {
                send_error(c, msg->request_id, -EPERM);
                break;
            }
            if (s->lead == LEAD_FOLLOWER) {
                send_error(c, msg->request_id, CD_ENOTLEADER);
                break;
            }
            if (queue_write(s, c, msg) != 0) {
                send_error(c, msg->request_id, -ENOMEM);
                break;
            }
            return; /* msg moved */
        case CD_MSG_GET:
        case CD_MSG_RANGE: {
            int ser = msg->type == CD_MSG_GET ? msg->u.get.serializable
                                              : msg->u.range.serializable;
            if (ser) {
                serve_read(c, msg, 1);
                break;
            }
            if (s->lead == LEAD_FOLLOWER) {
                send_error(c, msg->request_id, CD_ENOTLEADER);
                break;
            }
            if (queue_read(s, c, msg) != 0) {
                send_error(c, msg->request_id, -ENOMEM);
                break;
            }
            return; /* msg moved */
        }
        case CD_MSG_WATCH:
        case CD_MSG_HELLO:
            start_watch(c, msg);
            break;
        case CD_MSG_CHILD_JOIN:
            if (server__child_join(c, msg) == 1) {
                return; /* msg moved into a write */
            }
            break;
        case CD_MSG_CHILD_LEAVE:
            if (server__child_leave(c, msg) == 1) {
                return; /* msg moved into a write */
            }
            break;
        case CD_MSG_CHILD_REPORT:
            server__child_report(c, msg);
            break;
        case CD_MSG_CHILDREN:
            server__children_list(c, msg);
            break;
        case CD_MSG_BACKUP:
            if (server__backup_request(c, msg) == 1) {
                return; /* msg moved into a write */
            }
            break;
        case CD_MSG_STATUS:
            send_status(c, msg->request_id);
            break;
        case CD_MSG_MEMBERS: {
            /* The leader's view, as etcd's member list: a follower sends
             * the client there.  With no live leader, the parent asked
             * answers with what it knows. */
            const char *leader = server__live_leader_api(s);
            if (raft_state(&s->raft) != RAFT_LEADER && leader != NULL) {
                send_error_now(c, msg->request_id, CD_ENOTLEADER, leader);
                break;
            }
            send_members(c, msg->request_id);
            break;
        }
        case CD_MSG_MEMBER_CHANGE:
            member_change(c, msg);
            break;
        case CD_MSG_TRANSFER:
            leader_transfer(c, msg);
            break;
        case CD_MSG_SNAPSHOT:
            send_snapshot(c, msg->request_id, msg->u.snapshot.recent);
            break;
        case CD_MSG_TOKEN:
            create_token(c, msg);
            break;
        case CD_MSG_SHUTDOWN:
            /* clusterctl leave stops a removed node this way (a removed
             * follower never learns of its removal by itself). */
            log_info("api", "shutdown requested over the API");
            send_ok(c, msg->request_id);
            server_stop(s, NULL);
            break;
        default:
            send_error(c, msg->request_id, CD_EBADOP);
            break;
    }
    codec_msg_free(msg);
}

/* --- connections --------------------------------------------------------- */

/* Free a closed connection once no request in flight refers to it. */
static void conn_release(struct conn *c)
{
    if (c->refs > 0 || !c->handle_closed) {
        return;
    }
    struct server *s = c->s;
    codec_reader_free(&c->reader);
    free(c);
    server__maybe_stopped(s);
}

static void conn_freed(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->handle_closed = 1;
    conn_release(c);
}

/*
 * Close a connection.  Gracefully (conn_close): read no more, and close
 * once the replies in flight are written.  At once (conn_abort): the
 * socket is closed now, which cancels the writes libuv still holds; the
 * memory stays until the requests in flight (a barrier, a proposal) have
 * called back.  A reply can wait forever: a peer that no longer reads, or
 * one whose packets now go to another host since the VIP this connection
 * was accepted on moved there, never acknowledges what was sent.
 */
static void conn_close_now(struct conn *c, int abort)
{
    struct server *s = c->s;
    if (!c->closing) {
        c->closing = 1;
        while (c->watches != NULL) {
            struct watch *w = c->watches;
            c->watches = w->next_watch;
            watch_free(w);
        }
        sends_drop_all(c);
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    if (uv_is_closing((uv_handle_t *)&c->tcp)) {
        conn_release(c); /* closed at once earlier: now maybe freed */
        return;
    }
    if (c->refs > 0 && !abort) {
        return; /* the last request in flight calls us again */
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else if (s->conns == c) {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    s->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, conn_freed);
}

static void conn_close(struct conn *c)
{
    conn_close_now(c, 0);
}

static void conn_abort(struct conn *c)
{
    conn_close_now(c, 1);
}

void server__api_drop_local(struct server *s, uint32_t addr)
{
    struct conn *c = s->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
            ss.ss_family == AF_INET &&
            ((struct sockaddr_in *)&ss)->sin_addr.s_addr == addr) {
            conn_abort(c);
        }
        c = next;
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base != NULL ? suggested : 0;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread < 0) {
        free(buf->base);
        conn_close(c);
        return;
    }
    c->last_active = uv_now(c->s->loop);
    /* A leader resumed from a pause checks its lease before it reads a
     * request: it must not answer through a VIP it may no longer hold. */
    server__vip_check(c->s);
    const uint8_t *data = (const uint8_t *)buf->base;
    size_t left = (size_t)nread;
    while (left > 0 && !c->closing) {
        size_t used;
        const uint8_t *payload;
        size_t plen;
        int rc =
            codec_reader_feed(&c->reader, data, left, &used, &payload, &plen);
        data += used;
        left -= used;
        if (rc == CD_EFRAMETOOBIG || rc < 0) {
            log_warn("api", "closing a connection: %s", cd_strerror(rc));
            send_error(c, 0, rc);
            conn_close(c);
            break;
        }
        if (rc == 0) {
            break;
        }
        struct cd_msg msg;
        rc = codec_decode(payload, plen, &msg);
        if (rc != 0) {
            send_error(c, 0, rc);
            continue;
        }
        dispatch(c, &msg);
    }
    free(buf->base);
}

static void accept_cb(uv_stream_t *server, int status)
{
    struct server *s = server->data;
    if (status != 0) {
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    if (s->n_conns >= s->cfg.max_conns || s->stopping) {
        /* Refuse politely: the client sees the close at once. */
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    /* A peer that vanished (powered off, or a VIP that moved) must not
     * hold a connection and its unsent replies for the quarter of an hour
     * TCP would retransmit: probe an idle one, and give up on data
     * unacknowledged for 30 s. */
    uv_tcp_keepalive(&c->tcp, 1, 10);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        unsigned user_timeout = API_USER_TIMEOUT_MS;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
                         sizeof user_timeout);
    }
    codec_reader_init(&c->reader, s->cfg.max_frame);
    c->last_active = uv_now(s->loop);
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->n_conns++;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void check_cb(uv_check_t *h)
{
    struct server *s = h->data;
    /* The end of a loop turn: the entries applied in it commit together,
     * before raft's own check handle answers their proposers (libuv runs
     * the handle started last first; the callbacks flush as well). */
    fsm_flush(&s->fsm);
    flush_writes(s);
    flush_reads(s);
    flush_watches(s);
    flush_leaderless(s, 0);
    raft_index marker = s->raft.configuration_uncommitted_index;
    if (raftfix_check(&s->raftfix, &s->raft) == 1) {
        log_warn("raft",
                 "repaired libraft's membership bookkeeping: the change "
                 "marked at index %llu was applied without being recorded "
                 "(libraft 0.22.1 bug; configuration of %u member(s) now "
                 "committed as of index %llu)",
                 (unsigned long long)marker, s->raft.configuration.n,
                 (unsigned long long)s->raft.configuration_committed_index);
    }
}

/* The voter target: /cluster/voters if set, else the configuration. */
static unsigned voter_target(struct server *s)
{
    uint64_t v = 0;
    if (read_u64_key(s, "/cluster/voters", &v) == 0 && v >= 1 && v <= 7 &&
        v % 2 == 1) {
        return (unsigned)v;
    }
    return s->cfg.voters;
}

/*
 * Membership without manual steps: a joined parent arrives as a spare;
 * while the cluster has fewer voters than its target, the leader promotes
 * it to voter (libraft catches it up first), otherwise to standby, a hot
 * spare that replicates the log.  One change at a time.
 */
static void auto_promote(struct server *s)
{
    const struct raft_configuration *conf = &s->raft.configuration;
    if (s->lead != LEAD_READY || s->change_busy || s->stopping) {
        return;
    }
    unsigned voters = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        voters += conf->servers[i].role == RAFT_VOTER;
    }
    unsigned target = voter_target(s);
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *m = &conf->servers[i];
        int role = -1;
        if (m->role != RAFT_VOTER && voters < target &&
            server__member_alive(s, m->id)) {
            role = RAFT_VOTER;
        } else if (m->role == RAFT_SPARE) {
            role = RAFT_STANDBY;
        }
        if (role < 0) {
            continue;
        }
        /* raft_assign() reallocates the configuration: m dies with it. */
        uint64_t id = m->id;
        s->change.data = s;
        s->change_action = CD_MEMBER_ASSIGN;
        s->change_id = id;
        s->change_conn = NULL;
        int rv = raft_assign(&s->raft, &s->change, id, role, change_cb);
        if (rv == 0) {
            s->change_busy = 1;
            s->promote_err = 0;
            log_info("api", "promoting node %llu to %s", (unsigned long long)id,
                     role == RAFT_VOTER ? "voter" : "standby");
        } else if (rv != s->promote_err || id != s->promote_err_id) {
            s->promote_err = rv;
            s->promote_err_id = id;
            log_warn("api", "cannot promote node %llu to %s yet: %s (%s)",
                     (unsigned long long)id,
                     role == RAFT_VOTER ? "voter" : "standby",
                     raft_strerror(rv), raft_errmsg(&s->raft));
        }
        return;
    }
}

static struct member_health *health_of(struct server *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_health; i++) {
        if (s->health[i].id == id) {
            return &s->health[i];
        }
    }
    struct member_health *h = realloc(s->health, (s->n_health + 1) * sizeof *h);
    if (h == NULL) {
        return NULL;
    }
    s->health = h;
    h = &s->health[s->n_health++];
    h->id = id;
    h->last_ok_ms = uv_now(s->loop); /* benefit of the doubt at first */
    return h;
}

/* Is member id alive as far as the leader can tell? */
int server__member_alive(struct server *s, uint64_t id)
{
    if (id == s->id) {
        return 1;
    }
    struct member_health *h = health_of(s, id);
    return h != NULL &&
           uv_now(s->loop) - h->last_ok_ms <= s->cfg.failure_timeout_ms;
}

static void keepalive_cb(struct raft_barrier *req, int status)
{
    struct server *s = req->data;
    (void)status;
    s->keepalive_busy = 0;
}

/*
 * Track each member's progress.  Every probe period, a member whose match
 * index reached the index the leader had at the previous probe is alive.
 * A quiet log would make everyone look stalled, so the leader appends a
 * barrier when nothing was appended for a quarter of failure_timeout.
 */
static void probe_members(struct server *s)
{
    uint64_t now = uv_now(s->loop);
    uint64_t last = raft_last_index(&s->raft);
    unsigned period = s->cfg.failure_timeout_ms / 4;
    if (last != s->last_seen_index) {
        s->last_seen_index = last;
        s->last_append_ms = now;
    }
    if (now - s->last_append_ms >= period && !s->keepalive_busy &&
        !server__quiescing(s)) {
        s->keepalive.data = s;
        if (raft_barrier(&s->raft, &s->keepalive, keepalive_cb) == 0) {
            s->keepalive_busy = 1;
            s->last_append_ms = now;
        }
    }
    if (now - s->probe_ms < period / 2) {
        return;
    }
    const struct raft_configuration *conf = &s->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        raft_index match = 0;
        uint64_t id = conf->servers[i].id;
        struct member_health *h = health_of(s, id);
        if (id == s->id || h == NULL) {
            continue;
        }
        if (conf->servers[i].role == RAFT_SPARE) {
            h->last_ok_ms = now; /* spares do not replicate: no signal */
            continue;
        }
        if (raft_match_index(&s->raft, id, &match) == 0 &&
            match >= s->probe_index) {
            h->last_ok_ms = now;
        }
    }
    s->probe_index = last;
    s->probe_ms = now;
}

/*
 * A voter silent for longer than failure_timeout is demoted to standby,
 * but only when a live standby can take its place (auto_promote then
 * promotes it), so that the cluster never gives up voters it could not
 * replace, and never acts without a majority (the change must commit).
 */
static void replace_failed_voter(struct server *s)
{
    const struct raft_configuration *conf = &s->raft.configuration;
    if (s->lead != LEAD_READY || s->change_busy || s->stopping) {
        return;
    }
    uint64_t dead = 0;
    int spare_alive = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        uint64_t id = conf->servers[i].id;
        int alive = server__member_alive(s, id);
        if (conf->servers[i].role == RAFT_VOTER && !alive && dead == 0) {
            dead = id;
        } else if (conf->servers[i].role == RAFT_STANDBY && alive) {
            spare_alive = 1;
        }
    }
    if (dead == 0 || !spare_alive) {
        return;
    }
    s->change.data = s;
    s->change_action = CD_MEMBER_ASSIGN;
    s->change_id = dead;
    s->change_conn = NULL;
    if (raft_assign(&s->raft, &s->change, dead, RAFT_STANDBY, change_cb) == 0) {
        s->change_busy = 1;
        log_warn("api",
                 "voter %llu unreachable for over %u ms: demoted to "
                 "standby; a live standby takes its place",
                 (unsigned long long)dead, s->cfg.failure_timeout_ms);
    }
}

struct prune_acc
{
    const struct raft_configuration *conf;
    char key[64];
    int found;
};

static int prune_find(void *arg, const struct store_kv *kv)
{
    struct prune_acc *a = arg;
    const char *k = kv->key;
    size_t pre = sizeof "/cluster/members/" - 1;
    char num[24];
    size_t n = kv->key_len - pre;
    if (kv->key_len <= pre || n >= sizeof num) {
        return 0;
    }
    memcpy(num, k + pre, n);
    num[n] = '\0';
    uint64_t id = strtoull(num, NULL, 10);
    for (unsigned i = 0; i < a->conf->n; i++) {
        if (a->conf->servers[i].id == id) {
            return 0;
        }
    }
    snprintf(a->key, sizeof a->key, "%.*s", (int)kv->key_len, k);
    a->found = 1;
    return 1;
}

/*
 * The member records follow the configuration: a parent that was removed
 * (or lost in a forced recovery) no longer has an API address clients are
 * sent to.  One deletion per tick, through Raft like any write.
 */
static void prune_members(struct server *s)
{
    struct prune_acc a = {&s->raft.configuration, "", 0};
    struct store_read *r;
    if (s->change_busy || store_read_begin(s->store, &r) != 0) {
        return;
    }
    store_read_range(r, "/cluster/members/", 17, NULL, 0, 0, prune_find, &a,
                     NULL);
    store_read_end(r);
    if (!a.found) {
        return;
    }
    struct cd_op op = {.type = CD_OP_DELETE, .key = {a.key, strlen(a.key)}};
    if (propose_op(s, &op, NULL) == 0) {
        log_info("api", "removed the stale member record %s", a.key);
    }
}

/*
 * History is kept for history_revisions revisions: children and watches
 * resume from it, older ones get a snapshot instead.  The leader proposes
 * the compaction, so every replica compacts at the same point.  A big step
 * is done in slices, one per tick, so that no entry holds the loop long.
 */
static void auto_compact(struct server *s)
{
    struct store_read *r;
    struct store_meta m;
    if (store_read_begin(s->store, &r) != 0) {
        return;
    }
    int rc = store_read_meta(r, &m);
    store_read_end(r);
    uint64_t keep = s->cfg.history_revisions;
    if (rc != 0 || m.revision <= keep || m.revision - keep <= m.compact_rev) {
        return;
    }
    uint64_t to = m.revision - keep;
    if (to - m.compact_rev > 10000) {
        to = m.compact_rev + 10000;
    }
    struct cd_op op = {.type = CD_OP_COMPACT, .revision = to};
    if (propose_op(s, &op, NULL) == 0) {
        log_debug("api", "compacting history up to revision %llu",
                  (unsigned long long)to);
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    if (s->lead == LEAD_READY) {
        probe_members(s);
        replace_failed_voter(s);
        if (++s->prune_ticks % 8 == 0) {
            prune_members(s);
        }
        if (s->prune_ticks % 4 == 0) {
            auto_compact(s);
        }
        server__backup_tick(s);
    }
    auto_promote(s);
    heartbeat_children(s);
    server__metrics_tick(s);
    server__store_tick(s);
    uint64_t now = uv_now(s->loop);
    struct conn *c = s->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        if (c->watches == NULL && c->refs == 0 &&
            now - c->last_active > s->cfg.idle_timeout_ms) {
            conn_close(c);
        }
        c = next;
    }
}

static int parse_addr(const char *addr, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        return CD_ECONFIG;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    unsigned long port = strtoul(colon + 1, NULL, 10);
    if (port == 0 || port > 65535) {
        return CD_ECONFIG;
    }
    return uv_ip4_addr(host, (int)port, sa) == 0 ? 0 : CD_ECONFIG;
}

int server__api_start(struct server *s)
{
    struct sockaddr_in sa;
    int rc = parse_addr(s->cfg.api_addr, &sa);
    if (rc == 0 && s->cfg.vip[0] != '\0') {
        /* Clients come through the VIP too: listen on every address. */
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
    }
    if (rc != 0) {
        log_error("api", "bad api_address %s", s->cfg.api_addr);
        return rc;
    }
    uv_check_init(s->loop, &s->check);
    s->check.data = s;
    uv_timer_init(s->loop, &s->tick);
    s->tick.data = s;
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    s->listening = 1;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 511, accept_cb)) != 0) {
        log_error("api", "cannot listen on %s: %s", s->cfg.api_addr,
                  uv_strerror(rc));
        return rc;
    }
    uv_check_start(&s->check, check_cb);
    uv_timer_start(&s->tick, tick_cb, TICK_MS, TICK_MS);
    return 0;
}

static void api_handle_closed(uv_handle_t *h)
{
    struct server *s = h->data;
    s->handles_open--;
    server__maybe_stopped(s);
}

void server__api_close(struct server *s)
{
    /* Close what api_start got to initialise (a handle's loop is set by
     * its init; the server struct starts zeroed). */
    uv_handle_t *hs[] = {(uv_handle_t *)&s->listener, (uv_handle_t *)&s->check,
                         (uv_handle_t *)&s->tick};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (hs[i]->loop != NULL && !uv_is_closing(hs[i])) {
            s->handles_open++;
            hs[i]->data = s;
            uv_close(hs[i], api_handle_closed);
        }
    }
    s->listening = 0;
    /* Unproposed writes and unconfirmed reads fail now. */
    s->lead = LEAD_FOLLOWER;
    flush_writes(s);
    flush_reads(s);
    flush_leaderless(s, 1);
    struct conn *c = s->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        conn_abort(c);
        c = next;
    }
    server__downloads_close(s);
}
