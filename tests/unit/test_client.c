/*
 * test_client.c - unit tests for the API client (cluster/client.h).
 *
 * No clusterd runs here.  Each test that needs a server opens a real TCP
 * listener on 127.0.0.1 (port 0: the kernel picks one) and plays the
 * server's side of the protocol from a thread: it decodes what the client
 * sent with codec_decode() and answers with replies built by hand.  That
 * tests the client against the wire protocol (what it sends, how it reads
 * and retries), not against a model of the server's logic.
 *
 * The fake server never calls cmocka (its longjmp must stay on the test's
 * thread): it records what it saw, and notes the first thing that went
 * wrong on its side in peer.error, which the test then checks.  Every wait
 * is bounded, so a broken client fails a test instead of hanging it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h> /* cmocka.h needs it */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/client.h"
#include "lib/err.h"
#include "proto/codec.h"

#define expect_rc(got, want)                                            \
    do {                                                                \
        int got_ = (got);                                               \
        int want_ = (want);                                             \
        if (got_ != want_) {                                            \
            fail_msg("%s: expected %s (%d), got %s (%d)", #got,         \
                     cd_errname(want_), want_, cd_errname(got_), got_); \
        }                                                               \
    } while (0)

/* Elapsed time must fall in [lo, hi] ms. */
#define expect_elapsed(ms, lo, hi)                                  \
    do {                                                            \
        int64_t ms_ = (int64_t)(ms);                                \
        if (ms_ < (int64_t)(lo) || ms_ > (int64_t)(hi)) {           \
            fail_msg("took %lld ms, expected between %d and %d ms", \
                     (long long)ms_, (int)(lo), (int)(hi));         \
        }                                                           \
    } while (0)

/* How long the fake server waits for anything before it gives up. */
#define PEER_WAIT_MS 2000

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- the fake server --------------------------------------------------- */

struct seen
{
    uint64_t request_id;
    enum cd_msg_type type;
    uint64_t client_id;
    uint64_t seq;
    int has_cluster_id;
    uint64_t cluster_id;
};

struct peer;
typedef void (*peer_script)(struct peer *p);

struct peer
{
    int lfd;
    char addr[32]; /* "127.0.0.1:port" */
    pthread_t thread;
    peer_script script;
    const char *leader; /* for scripts that redirect */
    int arg;            /* a script's parameter */
    struct seen seen[16];
    int n_seen;
    int accepted;
    int saw_eof; /* the client closed a connection */
    char error[256];
};

/* One accepted connection of the fake server. */
struct pconn
{
    int fd;
    struct codec_reader reader;
    uint8_t buf[4096];
    size_t off;
    size_t len;
};

/* Note what went wrong on the server's side ("what: detail"); the first
 * note is kept. */
static void peer_fail(struct peer *p, const char *what, const char *detail)
{
    if (p->error[0] != '\0') {
        return;
    }
    snprintf(p->error, sizeof(p->error), "%s%s%s", what,
             detail != NULL ? ": " : "", detail != NULL ? detail : "");
}

static int wait_readable(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, ms) == 1;
}

static int peer_accept(struct peer *p, struct pconn *c, int ms)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (!wait_readable(p->lfd, ms)) {
        return -1;
    }
    c->fd = accept(p->lfd, NULL, NULL);
    if (c->fd < 0) {
        return -1;
    }
    codec_reader_init(&c->reader, 0);
    p->accepted++;
    return 0;
}

static void peer_close(struct pconn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    codec_reader_free(&c->reader);
}

/* Read one message from the client: 0, or -1 on EOF (saw_eof is set),
 * timeout or a bad frame. */
static int peer_read(struct peer *p, struct pconn *c, struct cd_msg *m)
{
    for (;;) {
        while (c->off < c->len) {
            const uint8_t *payload;
            size_t plen;
            size_t used;
            int rc = codec_reader_feed(&c->reader, c->buf + c->off,
                                       c->len - c->off, &used, &payload, &plen);

            c->off += used;
            if (rc < 0) {
                peer_fail(p, "client sent a bad frame", cd_errname(rc));
                return -1;
            }
            if (rc == 1) {
                rc = codec_decode(payload, plen, m);
                if (rc != 0) {
                    peer_fail(p, "client sent an undecodable message",
                              cd_errname(rc));
                    return -1;
                }
                if (p->n_seen < 16) {
                    struct seen *s = &p->seen[p->n_seen++];

                    s->request_id = m->request_id;
                    s->type = m->type;
                    s->has_cluster_id = m->has_cluster_id;
                    s->cluster_id = m->cluster_id;
                    if (m->type == CD_MSG_WRITE) {
                        s->client_id = m->u.write.op.client_id;
                        s->seq = m->u.write.op.seq;
                    }
                }
                return 0;
            }
        }
        c->off = 0;
        c->len = 0;
        if (!wait_readable(c->fd, PEER_WAIT_MS)) {
            return -1;
        }
        ssize_t n = recv(c->fd, c->buf, sizeof(c->buf), 0);

        if (n <= 0) {
            p->saw_eof |= n == 0;
            return -1;
        }
        c->len = (size_t)n;
    }
}

static void peer_send_raw(struct peer *p,
                          struct pconn *c,
                          const void *data,
                          size_t len)
{
    if (send(c->fd, data, len, MSG_NOSIGNAL) != (ssize_t)len) {
        peer_fail(p, "send to the client failed", strerror(errno));
    }
}

/* Frames to send in one go (see script_watch). */
struct batch
{
    uint8_t buf[4096];
    size_t len;
};

static void batch_add(struct peer *p, struct batch *b, const struct cd_msg *m)
{
    uint8_t *frame;
    size_t len;
    int rc = codec_encode(m, 0, &frame, &len);

    if (rc != 0) {
        peer_fail(p, "the test's reply does not encode", cd_errname(rc));
        return;
    }
    if (b->len + len > sizeof(b->buf)) {
        peer_fail(p, "the test's replies do not fit in a batch", NULL);
    } else {
        memcpy(b->buf + b->len, frame, len);
        b->len += len;
    }
    free(frame);
}

static void peer_send(struct peer *p, struct pconn *c, const struct cd_msg *m)
{
    struct batch b;

    b.len = 0;
    batch_add(p, &b, m);
    peer_send_raw(p, c, b.buf, b.len);
}

static void send_error(struct peer *p,
                       struct pconn *c,
                       uint64_t id,
                       int code,
                       const char *leader)
{
    struct cd_msg m;

    codec_error_msg(&m, id, code, leader);
    peer_send(p, c, &m);
}

static void write_resp(struct cd_msg *m, uint64_t id, uint64_t revision)
{
    memset(m, 0, sizeof(*m));
    m->request_id = id;
    m->type = CD_MSG_WRITE_RESP;
    m->u.write_resp.revision = revision;
    m->u.write_resp.deleted = revision / 2;
}

static void send_write_resp(struct peer *p,
                            struct pconn *c,
                            uint64_t id,
                            uint64_t revision)
{
    struct cd_msg m;

    write_resp(&m, id, revision);
    peer_send(p, c, &m);
}

/* Wait until the client closes the connection (or PEER_WAIT_MS). */
static void peer_expect_eof(struct peer *p, struct pconn *c)
{
    struct cd_msg m;

    while (peer_read(p, c, &m) == 0) {
        codec_msg_free(&m);
    }
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;

    p->script(p);
    return NULL;
}

static void peer_start(struct peer *p, peer_script script)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);

    memset(p, 0, sizeof(*p));
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->lfd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(p->lfd, 16), 0);
    assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&sa, &len), 0);
    snprintf(p->addr, sizeof(p->addr), "127.0.0.1:%u",
             (unsigned)ntohs(sa.sin_port));
    p->script = script;
    if (script != NULL) {
        assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
    }
}

/* Join the script's thread; fail the test if the fake server saw
 * something wrong. */
static void peer_finish(struct peer *p)
{
    if (p->script != NULL) {
        pthread_join(p->thread, NULL);
    }
    close(p->lfd);
    if (p->error[0] != '\0') {
        fail_msg("fake server at %s: %s", p->addr, p->error);
    }
}

static struct cd_client *open_client(const char *const *eps,
                                     size_t n,
                                     unsigned attempt_ms,
                                     unsigned total_ms,
                                     uint64_t cluster_id)
{
    struct cd_client_config cfg;
    struct cd_client *c = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.endpoints = eps;
    cfg.n_endpoints = n;
    cfg.timeout_ms = attempt_ms;
    cfg.total_timeout_ms = total_ms;
    cfg.cluster_id = cluster_id;
    cfg.max_frame = 4096;
    expect_rc(cd_client_open(&cfg, &c), 0);
    return c;
}

/* --- endpoints and configuration --------------------------------------- */

static void test_parse_endpoints(void **state)
{
    char **list;
    size_t n;

    (void)state;
    expect_rc(cd_client_parse_endpoints(" 10.0.0.1:7101 , host-b:80,[::1]:9",
                                        &list, &n),
              0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0], "10.0.0.1:7101");
    assert_string_equal(list[1], "host-b:80");
    assert_string_equal(list[2], "[::1]:9");
    cd_client_free_endpoints(list, n);

    expect_rc(cd_client_parse_endpoints("a:1", &list, &n), 0);
    assert_int_equal(n, 1);
    cd_client_free_endpoints(list, n);

    /* Each of these is refused, and leaves nothing to free. */
    static const char *const bad[] = {
        "",        "a:1,,b:2", "a:1,",     "a",        ":80",
        "a:",      "a:0",      "a:65536",  "a:12x",    "::1:80",
        "[::1]80", "[::1]",    "a:123456", "a b:1 c:2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        list = (char **)&n; /* must be reset */
        n = 99;
        int rc = cd_client_parse_endpoints(bad[i], &list, &n);

        if (rc != -EINVAL || list != NULL || n != 0) {
            fail_msg(
                "\"%s\": expected EINVAL with an empty list, got %s, "
                "n %zu",
                bad[i], cd_errname(rc), n);
        }
    }
}

static void test_open_refuses_bad_config(void **state)
{
    const char *const bad[] = {"127.0.0.1:1", "no-port"};
    struct cd_client_config cfg;
    struct cd_client *c = (struct cd_client *)&cfg;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    expect_rc(cd_client_open(&cfg, &c), -EINVAL);
    assert_null(c);
    cfg.endpoints = bad;
    cfg.n_endpoints = 2;
    expect_rc(cd_client_open(&cfg, &c), -EINVAL);
    assert_null(c);
    cd_client_close(NULL);
}

/* --- failures of the network and of the peer --------------------------- */

static void test_connect_refused_is_bounded(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t t0;
    int rc;

    (void)state;
    /* A port that was just open and is now closed: connections to it are
     * refused. */
    peer_start(&p, NULL);
    peer_finish(&p);
    eps[0] = p.addr;
    c = open_client(eps, 1, 200, 400, 0);
    t0 = now_ms();
    rc = cd_client_put(c, "k", 1, "v", 1, NULL);
    expect_rc(rc, -ECONNREFUSED);
    /* It keeps trying (with backoff) until the total timeout, no more. */
    expect_elapsed(now_ms() - t0, 350, 1200);
    assert_null(cd_client_endpoint(c));
    cd_client_close(c);
}

static void test_silent_server_times_out(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t t0;

    (void)state;
    /* A listener that never accepts: the kernel completes connections
     * into its backlog, takes the request, and nothing ever answers. */
    peer_start(&p, NULL);
    eps[0] = p.addr;
    c = open_client(eps, 1, 150, 500, 0);
    t0 = now_ms();
    expect_rc(cd_client_put(c, "k", 1, "v", 1, NULL), CD_ETIMEOUT);
    expect_elapsed(now_ms() - t0, 450, 1500);
    expect_rc(cd_client_status(c, &(struct cd_msg){0}), CD_ETIMEOUT);
    cd_client_close(c);
    peer_finish(&p);
}

/* Answer the first request with a header announcing a frame larger than
 * the client's max_frame (4096), then see the client hang up. */
static void script_frame_too_big(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;
    uint8_t header[CODEC_HEADER_SIZE];

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no request arrived", NULL);
        peer_close(&c);
        return;
    }
    codec_msg_free(&m);
    codec_put_header(header, 1u << 20);
    peer_send_raw(p, &c, header, sizeof(header));
    peer_expect_eof(p, &c);
    peer_close(&c);
}

static void test_frame_too_big_closes(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t t0;

    (void)state;
    peer_start(&p, script_frame_too_big);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    t0 = now_ms();
    expect_rc(cd_client_put(c, "k", 1, "v", 1, NULL), CD_EFRAMETOOBIG);
    /* At once: a peer that breaks the framing is not retried. */
    expect_elapsed(now_ms() - t0, 0, 500);
    peer_finish(&p);
    assert_true(p.saw_eof);
    assert_int_equal(p.accepted, 1);
    cd_client_close(c);
}

static void script_garbage(struct peer *p)
{
    static const char junk[] = "\0\0\0\x0fnot a protobuf!";
    struct pconn c;
    struct cd_msg m;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no request arrived", NULL);
        peer_close(&c);
        return;
    }
    codec_msg_free(&m);
    peer_send_raw(p, &c, junk, sizeof(junk) - 1);
    peer_expect_eof(p, &c);
    peer_close(&c);
}

static void test_garbage_is_malformed(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    char *value = NULL;

    (void)state;
    peer_start(&p, script_garbage);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    expect_rc(cd_client_get(c, "k", 1, 0, &value, NULL, NULL), CD_EMALFORMED);
    assert_null(value);
    peer_finish(&p);
    assert_true(p.saw_eof);
    cd_client_close(c);
}

/* Accept and at once close every connection for 700 ms. */
static void script_slam(struct peer *p)
{
    uint64_t end = now_ms() + 700;
    struct pconn c;

    while (now_ms() < end) {
        if (peer_accept(p, &c, (int)(end - now_ms())) == 0) {
            peer_close(&c);
        }
    }
}

static void test_backoff_between_rounds(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[2];

    (void)state;
    peer_start(&p, script_slam);
    eps[0] = p.addr;
    eps[1] = p.addr;
    c = open_client(eps, 2, 200, 400, 0);
    /* Sent, and the connection closed: the outcome is unknown. */
    expect_rc(cd_client_put(c, "k", 1, "v", 1, NULL), CD_ETIMEOUT);
    cd_client_close(c);
    peer_finish(&p);
    /* Two endpoints per round, pauses of 50, 100, 200 ms (halved at
     * worst by jitter) in 400 ms: a handful of rounds, not a busy loop. */
    if (p.accepted < 4 || p.accepted > 16) {
        fail_msg("expected 4 to 16 connections in 400 ms, got %d", p.accepted);
    }
}

/* --- what the client sends --------------------------------------------- */

/* Serve every request of one connection, each answer preceded by a stray
 * reply to another request id, which the client must skip. */
static void script_serve(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0) {
        peer_fail(p, "no connection", NULL);
        return;
    }
    while (peer_read(p, &c, &m) == 0) {
        struct cd_msg r;
        struct cd_kv kv;

        send_write_resp(p, &c, m.request_id + 1000, 999);
        memset(&r, 0, sizeof(r));
        r.request_id = m.request_id;
        switch (m.type) {
            case CD_MSG_WRITE:
                send_write_resp(p, &c, m.request_id, 100 + m.request_id);
                break;
            case CD_MSG_GET:
                memset(&kv, 0, sizeof(kv));
                kv.key = m.u.get.key;
                kv.value = (struct cd_buf){"the value", 9};
                kv.mod_rev = 77;
                r.type = CD_MSG_RANGE_RESP;
                r.u.range_resp.kvs = &kv;
                /* A key named "absent" is not there. */
                r.u.range_resp.n_kvs =
                    !(m.u.get.key.len == 6 &&
                      memcmp(m.u.get.key.data, "absent", 6) == 0);
                r.u.range_resp.revision = 80;
                peer_send(p, &c, &r);
                break;
            case CD_MSG_STATUS:
                r.type = CD_MSG_STATUS_RESP;
                r.u.status_resp.id = 3;
                r.u.status_resp.state = "leader";
                peer_send(p, &c, &r);
                break;
            case CD_MSG_TRANSFER:
                /* The wrong type of reply for a transfer. */
                send_write_resp(p, &c, m.request_id, 1);
                break;
            default:
                send_error(p, &c, m.request_id, CD_EKEYTOOBIG, NULL);
                break;
        }
        codec_msg_free(&m);
    }
    peer_close(&c);
}

static void test_ids_and_replies(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t rev = 0;
    uint64_t n_deleted = 0;
    char *value = NULL;
    size_t value_len = 0;
    struct cd_msg req;
    struct cd_msg resp;

    (void)state;
    peer_start(&p, script_serve);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0xc1u);

    expect_rc(cd_client_put(c, "a", 1, "1", 1, &rev), 0);
    assert_int_equal(rev, 101);
    assert_string_equal(cd_client_endpoint(c), p.addr);
    expect_rc(cd_client_put(c, "b", 1, "2", 1, &rev), 0);
    assert_int_equal(rev, 102);
    expect_rc(cd_client_get(c, "a", 1, 1, &value, &value_len, &rev), 0);
    assert_string_equal(value, "the value");
    assert_int_equal(value_len, 9);
    assert_int_equal(rev, 77); /* the key's mod revision */
    free(value);
    value = NULL;
    expect_rc(cd_client_get(c, "absent", 6, 0, &value, NULL, NULL),
              CD_ENOTFOUND);
    assert_null(value);
    expect_rc(cd_client_delete(c, "a", 1, 1, &n_deleted), 0);
    assert_int_equal(n_deleted, 105 / 2);

    /* An error reply comes back as its code, with resp already freed. */
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_MEMBERS;
    expect_rc(cd_client_call(c, &req, &resp), CD_EKEYTOOBIG);
    assert_int_equal(resp.type, CD_MSG_NONE);
    assert_null(resp.codec__owned);
    /* A reply of the wrong type is a protocol error. */
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_TRANSFER;
    expect_rc(cd_client_call(c, &req, &resp), CD_EMALFORMED);
    /* Streams have their own calls. */
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_WATCH;
    expect_rc(cd_client_call(c, &req, &resp), CD_EBADOP);

    cd_client_close(c);
    peer_finish(&p);

    /* put, put, get, get, delete, members, transfer: one connection. */
    assert_int_equal(p.accepted, 1);
    assert_int_equal(p.n_seen, 7);
    for (int i = 0; i < p.n_seen; i++) {
        assert_int_equal(p.seen[i].request_id, (uint64_t)i + 1);
        assert_true(p.seen[i].has_cluster_id);
        assert_int_equal(p.seen[i].cluster_id, 0xc1u);
    }
    assert_int_equal(p.seen[0].type, CD_MSG_WRITE);
    assert_int_equal(p.seen[2].type, CD_MSG_GET);
    assert_int_equal(p.seen[4].type, CD_MSG_WRITE);
    /* One random nonzero client id; seq 1, 2, 3 over the writes. */
    assert_int_not_equal(p.seen[0].client_id, 0);
    assert_int_equal(p.seen[1].client_id, p.seen[0].client_id);
    assert_int_equal(p.seen[4].client_id, p.seen[0].client_id);
    assert_int_equal(p.seen[0].seq, 1);
    assert_int_equal(p.seen[1].seq, 2);
    assert_int_equal(p.seen[4].seq, 3);
}

static void test_client_ids_differ(void **state)
{
    const char *eps[] = {"127.0.0.1:1"};
    struct cd_client *a = open_client(eps, 1, 0, 0, 0);
    struct cd_client *b = open_client(eps, 1, 0, 0, 0);
    struct cd_msg req;
    struct cd_msg resp;

    (void)state;
    /* Ids are assigned before any I/O, so they show on a failed call. */
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_WRITE;
    req.u.write.op.type = CD_OP_PUT;
    req.u.write.op.key = (struct cd_buf){"k", 1};
    /* An unencodable request fails before the network is touched. */
    req.u.write.op.n_compares = 1;
    expect_rc(cd_client_call(a, &req, &resp), CD_EBADOP);
    uint64_t id_a = req.u.write.op.client_id;

    memset(&req.u.write.op, 0, sizeof(req.u.write.op));
    req.u.write.op.type = CD_OP_PUT;
    req.u.write.op.n_compares = 1;
    expect_rc(cd_client_call(b, &req, &resp), CD_EBADOP);
    assert_int_not_equal(id_a, 0);
    assert_int_not_equal(req.u.write.op.client_id, 0);
    assert_int_not_equal(req.u.write.op.client_id, id_a);
    cd_client_close(a);
    cd_client_close(b);
}

/* --- retries ----------------------------------------------------------- */

/* Lose the answer to the first write (close the connection without it),
 * then on the retry say it was applied already; then serve one more. */
static void script_lost_then_duplicate(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no first attempt", NULL);
        peer_close(&c);
        return;
    }
    codec_msg_free(&m);
    peer_close(&c);
    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no retry after the lost answer", NULL);
        peer_close(&c);
        return;
    }
    send_error(p, &c, m.request_id, CD_EDUPLICATE, NULL);
    codec_msg_free(&m);
    if (peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no second write", NULL);
        peer_close(&c);
        return;
    }
    /* A duplicate that no lost attempt explains is an error. */
    send_error(p, &c, m.request_id, CD_EDUPLICATE, NULL);
    codec_msg_free(&m);
    peer_close(&c);
}

static void test_retry_keeps_write_id(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t rev = 99;

    (void)state;
    peer_start(&p, script_lost_then_duplicate);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    /* Applied by the attempt whose answer was lost: success, revision 0. */
    expect_rc(cd_client_put(c, "k", 1, "v", 1, &rev), 0);
    assert_int_equal(rev, 0);
    expect_rc(cd_client_put(c, "k", 1, "w", 1, &rev), CD_EDUPLICATE);
    cd_client_close(c);
    peer_finish(&p);

    assert_int_equal(p.n_seen, 3);
    assert_int_equal(p.seen[1].client_id, p.seen[0].client_id);
    assert_int_equal(p.seen[1].seq, p.seen[0].seq);
    assert_int_equal(p.seen[1].request_id, p.seen[0].request_id);
    assert_int_equal(p.seen[2].client_id, p.seen[0].client_id);
    assert_int_equal(p.seen[2].seq, p.seen[0].seq + 1);
}

/* Answer NOT_LEADER, naming p->leader (NULL: no leader known yet). */
static void script_not_leader(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no request", NULL);
        peer_close(&c);
        return;
    }
    send_error(p, &c, m.request_id, CD_ENOTLEADER, p->leader);
    codec_msg_free(&m);
    peer_expect_eof(p, &c);
    peer_close(&c);
}

/* Accept writes on one connection, answering revision 42. */
static void script_leader(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0) {
        peer_fail(p, "the client did not come to the leader", NULL);
        return;
    }
    while (peer_read(p, &c, &m) == 0) {
        send_write_resp(p, &c, m.request_id, 42);
        codec_msg_free(&m);
    }
    peer_close(&c);
}

static void test_follows_leader(void **state)
{
    struct peer follower;
    struct peer leader;
    struct cd_client *c;
    const char *eps[1];
    uint64_t rev = 0;

    (void)state;
    peer_start(&leader, script_leader);
    peer_start(&follower, NULL);
    follower.leader = leader.addr;
    follower.script = script_not_leader;
    assert_int_equal(
        pthread_create(&follower.thread, NULL, peer_main, &follower), 0);

    eps[0] = follower.addr; /* the leader is not in the list */
    c = open_client(eps, 1, 1000, 2000, 0);
    expect_rc(cd_client_put(c, "k", 1, "v", 1, &rev), 0);
    assert_int_equal(rev, 42);
    assert_string_equal(cd_client_endpoint(c), leader.addr);
    cd_client_close(c);
    peer_finish(&follower);
    peer_finish(&leader);

    assert_int_equal(follower.n_seen, 1);
    assert_int_equal(leader.n_seen, 1);
    assert_int_equal(leader.seen[0].client_id, follower.seen[0].client_id);
    assert_int_equal(leader.seen[0].seq, follower.seen[0].seq);
    assert_true(follower.saw_eof); /* the client left the follower */
}

/* No leader yet, then (on the next connection) a leader. */
static void script_election(struct peer *p)
{
    script_not_leader(p);
    script_leader(p);
}

static void test_waits_for_election(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t rev = 0;
    uint64_t t0;

    (void)state;
    peer_start(&p, script_election);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    t0 = now_ms();
    expect_rc(cd_client_put(c, "k", 1, "v", 1, &rev), 0);
    /* About 100 ms for the election, not a busy loop, not the timeout. */
    expect_elapsed(now_ms() - t0, 90, 1000);
    assert_int_equal(rev, 42);
    cd_client_close(c);
    peer_finish(&p);
    assert_int_equal(p.accepted, 2);
    assert_int_equal(p.seen[1].seq, p.seen[0].seq);
}

/* Take a request, answer nothing, close; count any further connection. */
static void script_drop_once(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no request", NULL);
        peer_close(&c);
        return;
    }
    codec_msg_free(&m);
    peer_close(&c);
    if (peer_accept(p, &c, 300) == 0) {
        if (peer_read(p, &c, &m) == 0) {
            codec_msg_free(&m);
        }
        peer_close(&c);
    }
}

static void test_member_change_not_repeated(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    struct cd_msg req;
    struct cd_msg resp;

    (void)state;
    peer_start(&p, script_drop_once);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_MEMBER_CHANGE;
    req.u.member_change.action = CD_MEMBER_REMOVE;
    req.u.member_change.id = 2;
    /* It may have been acted on: say so rather than remove twice. */
    expect_rc(cd_client_call(c, &req, &resp), CD_ETIMEOUT);
    cd_client_close(c);
    peer_finish(&p);
    assert_int_equal(p.n_seen, 1);
}

/* --- streams ----------------------------------------------------------- */

struct watch_seen
{
    int calls;
    uint64_t revisions[8];
};

static int count_changes(void *arg, const struct cd_msg *m)
{
    struct watch_seen *w = arg;

    if (w->calls < 8) {
        w->revisions[w->calls] = m->u.changes.revision;
    }
    w->calls++;
    return w->calls == 3 ? 1 : 0;
}

/*
 * OK, then p->arg CHANGES frames (one with request id 0, as pushes may
 * have), with a stray frame for another request in between.  All in one
 * send: the client hangs up when it has seen enough, and a send after
 * that would fail.
 */
static void script_watch(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;
    struct cd_event ev;
    struct batch b;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no watch request", NULL);
        peer_close(&c);
        return;
    }
    if (m.type != CD_MSG_WATCH || m.u.watch.since != 5 ||
        m.u.watch.prefix.len != 3) {
        peer_fail(p, "expected WATCH since 5 prefix /p/, got",
                  codec_msg_type_name(m.type));
    }
    uint64_t id = m.request_id;

    codec_msg_free(&m);
    memset(&m, 0, sizeof(m));
    m.request_id = id;
    m.type = CD_MSG_OK;
    b.len = 0;
    batch_add(p, &b, &m);
    memset(&ev, 0, sizeof(ev));
    ev.type = CD_EVENT_PUT;
    ev.kv.key = (struct cd_buf){"/p/x", 4};
    for (int i = 0; i < p->arg; i++) {
        struct cd_msg ch;

        memset(&ch, 0, sizeof(ch));
        ch.request_id = i == 1 ? 0 : id;
        ch.type = CD_MSG_CHANGES;
        ch.u.changes.events = &ev;
        ch.u.changes.n_events = 1;
        ch.u.changes.revision = 6 + (uint64_t)i;
        batch_add(p, &b, &ch);
        write_resp(&m, id + 50, 1);
        batch_add(p, &b, &m);
    }
    peer_send_raw(p, &c, b.buf, b.len);
    peer_expect_eof(p, &c);
    peer_close(&c);
}

static void test_watch_delivers_until_cb_stops(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    struct watch_seen w = {0};

    (void)state;
    peer_start(&p, NULL);
    p.arg = 5;
    p.script = script_watch;
    assert_int_equal(pthread_create(&p.thread, NULL, peer_main, &p), 0);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    expect_rc(cd_client_watch(c, 5, "/p/", 3, 1000, count_changes, &w), 0);
    assert_int_equal(w.calls, 3);
    assert_int_equal(w.revisions[0], 6);
    assert_int_equal(w.revisions[1], 7);
    assert_int_equal(w.revisions[2], 8);
    assert_string_equal(cd_client_endpoint(c), p.addr);
    cd_client_close(c);
    peer_finish(&p);
    assert_true(p.saw_eof); /* the watch's connection was closed */
}

static void test_watch_idle_timeout(void **state)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    struct watch_seen w = {0};
    uint64_t t0;

    (void)state;
    peer_start(&p, NULL);
    p.arg = 1;
    p.script = script_watch;
    assert_int_equal(pthread_create(&p.thread, NULL, peer_main, &p), 0);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    t0 = now_ms();
    expect_rc(cd_client_watch(c, 5, "/p/", 3, 200, count_changes, &w),
              CD_ETIMEOUT);
    expect_elapsed(now_ms() - t0, 190, 800);
    assert_int_equal(w.calls, 1);
    cd_client_close(c);
    peer_finish(&p);
}

/* Chunks of "hello world"; with p->arg, the second one leaves a gap. */
static void script_snapshot(struct peer *p)
{
    struct pconn c;
    struct cd_msg m;
    struct cd_msg ch;

    if (peer_accept(p, &c, PEER_WAIT_MS) != 0 || peer_read(p, &c, &m) != 0) {
        peer_fail(p, "no snapshot request", NULL);
        peer_close(&c);
        return;
    }
    memset(&ch, 0, sizeof(ch));
    ch.request_id = m.request_id;
    ch.type = CD_MSG_SNAPSHOT_CHUNK;
    codec_msg_free(&m);
    ch.u.snapshot_chunk.data = (struct cd_buf){"hello ", 6};
    peer_send(p, &c, &ch);
    ch.u.snapshot_chunk.offset = p->arg ? 7 : 6;
    ch.u.snapshot_chunk.data = (struct cd_buf){"world", 5};
    ch.u.snapshot_chunk.last = 1;
    ch.u.snapshot_chunk.revision = 9;
    peer_send(p, &c, &ch);
    peer_expect_eof(p, &c);
    peer_close(&c);
}

static void run_snapshot(int gap, int want_rc, const char *want_data)
{
    struct peer p;
    struct cd_client *c;
    const char *eps[1];
    uint64_t rev = 0;
    char got[32] = {0};
    int fd = memfd_create("snapshot", MFD_CLOEXEC);

    assert_true(fd >= 0);
    peer_start(&p, NULL);
    p.arg = gap;
    p.script = script_snapshot;
    assert_int_equal(pthread_create(&p.thread, NULL, peer_main, &p), 0);
    eps[0] = p.addr;
    c = open_client(eps, 1, 1000, 2000, 0);
    expect_rc(cd_client_snapshot(c, fd, &rev), want_rc);
    /* Closing the client lets the fake server see the end. */
    cd_client_close(c);
    peer_finish(&p);
    assert_int_equal(pread(fd, got, sizeof(got) - 1, 0),
                     (ssize_t)strlen(want_data));
    assert_string_equal(got, want_data);
    assert_int_equal(rev, want_rc == 0 ? 9 : 0);
    close(fd);
}

static void test_snapshot_chunks(void **state)
{
    (void)state;
    run_snapshot(0, 0, "hello world");
}

static void test_snapshot_gap_is_malformed(void **state)
{
    (void)state;
    /* The first chunk was written before the gap showed. */
    run_snapshot(1, CD_EMALFORMED, "hello ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_endpoints),
        cmocka_unit_test(test_open_refuses_bad_config),
        cmocka_unit_test(test_connect_refused_is_bounded),
        cmocka_unit_test(test_silent_server_times_out),
        cmocka_unit_test(test_frame_too_big_closes),
        cmocka_unit_test(test_garbage_is_malformed),
        cmocka_unit_test(test_backoff_between_rounds),
        cmocka_unit_test(test_ids_and_replies),
        cmocka_unit_test(test_client_ids_differ),
        cmocka_unit_test(test_retry_keeps_write_id),
        cmocka_unit_test(test_follows_leader),
        cmocka_unit_test(test_waits_for_election),
        cmocka_unit_test(test_member_change_not_repeated),
        cmocka_unit_test(test_watch_delivers_until_cb_stops),
        cmocka_unit_test(test_watch_idle_timeout),
        cmocka_unit_test(test_snapshot_chunks),
        cmocka_unit_test(test_snapshot_gap_is_malformed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
