/*
 * bench_children.c - the children's side of make bench-children
 * (tests/bench/children.sh runs it against three running parents).
 *
 *   bench_children fanout --endpoints E --token T --children N --puts P
 *                         [--interval-ms MS] [--wait-s S] [--timeout-s S]
 *   bench_children catchup --endpoints E --token T --changes C --dir D
 *                          [--per-txn K] [--value-size B] [--writers W]
 *                          [--timeout-s S]
 *   bench_children reads --cache FILE --seconds S --keys-prefix PREFIX
 *                        [--max-reads N]
 *
 * E is the comma-separated list of the parents' API addresses, T a join
 * token (<data>/join-token of the first parent).
 *
 * fanout: a child simulator, one process and one thread for N real child
 * connections.  It registers N children (CHILD_JOIN, as cd_client_child_join
 * sends it, from 8 threads), reads the current revision, then opens N
 * non-blocking TCP connections spread over the parents round-robin (any
 * parent serves a child's stream), sends each a HELLO (cluster id, child
 * id, that revision, the revision of its registration) and reads what the
 * parents push with epoll, framing with codec_reader and decoding with
 * codec_decode as a real child must: the OK, then CHANGES frames with
 * request id 0 (an empty batch is the parent's heartbeat, about every
 * second).  A parent that answers CD_EBUSY (it has not applied the
 * registration yet) is asked again; a stream that breaks is resumed from
 * the child's last revision, as clusterd-child does, and counted.  Once
 * every child streams, a second thread puts P keys /bench/fanout/<i>, MS
 * ms apart (20), on the leader through a cd_client, taking the send time
 * (CLOCK_MONOTONIC) of each put before sending it; the simulator takes the
 * arrival time of each frame when read() returns it.  A sample is arrival
 * minus send time, one per (child, put); every child must see every put,
 * within S seconds (5) of the last put, else the missing ones are counted.
 * Percentiles follow etcd's rule (the first sorted sample i with
 * i * 100 / n >= p), as in bench_cluster.  Prints
 *   fanout children=N puts=P samples=X missing=M p50_ms=A p99_ms=B
 *          max_ms=C every_p50_ms=D every_max_ms=E put_p50_ms=F ...
 * (every_*: per put, until the last child had it; put_*: the put's own
 * round trip, i.e. the commit), then one "fanout_parent" line per parent.
 *
 * catchup: registers one child and makes its cache with the real follower
 * library (agents/follower.h), following until the cache has the current
 * revision; then writes C changes on the leader (transactions of K puts,
 * 100, to /bench/catchup/<n> with B-byte values, 100, from W threads, 4),
 * waits until every parent has applied them, and times follower_run from
 * the call until on_batch sees the head revision.  The cache stays in D
 * (D/cache.mdb) for reads.  Prints
 *   catchup changes=C bytes=X ms=T changes_per_s=R ...
 *
 * reads: point reads on one thread with libclusterd (storage/clusterd.h),
 * of random keys among those under PREFIX (listed first with
 * clusterd_range), for S seconds or N reads: clusterd_get (a view and a
 * copy per read, the plain API), then the zero-copy clusterd_view_get
 * with one view per 1000 reads.  Prints
 *   reads keys=K get_per_s=X get_ns=Y view_per_s=Z view_ns=W
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agents/follower.h"
#include "cluster/client.h"
#include "lib/err.h"
#include "proto/codec.h"
#include "storage/clusterd.h"

#define MAX_PARENTS 16
#define JOIN_THREADS 8
#define CONNECT_WINDOW 128   /* connections being opened at once */
#define CHILD_MAX_RETRIES 50 /* refused or broken connections, per child */
#define FANOUT_PREFIX "/bench/fanout/"

static const char *endpoints_csv;
static char **eps;
static size_t n_eps;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    poll(NULL, 0, (int)ms);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_children fanout --endpoints E --token T "
            "--children N --puts P\n"
            "                             [--interval-ms MS] [--wait-s S] "
            "[--timeout-s S]\n"
            "       bench_children catchup --endpoints E --token T "
            "--changes C --dir D\n"
            "                              [--per-txn K] [--value-size B] "
            "[--writers W] [--timeout-s S]\n"
            "       bench_children reads --cache FILE --seconds S "
            "--keys-prefix PREFIX [--max-reads N]\n");
    exit(2);
}

static unsigned long num_arg(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || v[0] == '\0' || v[0] == '-') {
        fprintf(stderr, "bench_children: %s: not a number: %s\n", flag, v);
        exit(2);
    }
    return n;
}

/* A client of every parent, with the library's default timeouts. */
static struct cd_client *client_of_all(void)
{
    struct cd_client_config cfg;
    struct cd_client *c;
    memset(&cfg, 0, sizeof cfg);
    cfg.endpoints = (const char *const *)eps;
    cfg.n_endpoints = n_eps;
    int rc = cd_client_open(&cfg, &c);
    if (rc != 0) {
        fprintf(stderr, "bench_children: cd_client_open: %s\n",
                cd_strerror(rc));
        exit(1);
    }
    return c;
}

/* The revision endpoint i has applied, asked of it alone; 0 if silent. */
static uint64_t revision_of(size_t i)
{
    struct cd_client_config cfg;
    struct cd_client *c;
    struct cd_msg resp;
    uint64_t rev = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.endpoints = (const char *const *)&eps[i];
    cfg.n_endpoints = 1;
    cfg.timeout_ms = 1000;
    cfg.total_timeout_ms = 1000;
    if (cd_client_open(&cfg, &c) != 0) {
        return 0;
    }
    if (cd_client_status(c, &resp) == 0) {
        rev = resp.u.status_resp.revision;
        codec_msg_free(&resp);
    }
    cd_client_close(c);
    return rev;
}

/* The highest revision any parent has applied. */
static uint64_t head_revision(void)
{
    uint64_t head = 0;
    for (size_t i = 0; i < n_eps; i++) {
        uint64_t r = revision_of(i);
        head = r > head ? r : head;
    }
    return head;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* etcd's pkg/report: the first sorted sample i with i * 100 / n >= p. */
static uint64_t pctl_u64(const uint64_t *v, size_t n, double p)
{
    for (size_t i = 0; i < n; i++) {
        if ((double)i * 100.0 / (double)n >= p) {
            return v[i];
        }
    }
    return n > 0 ? v[n - 1] : 0;
}

static double ns_to_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* --- registering children ------------------------------------------------ */

struct joins
{
    const char *token;
    struct cd_child_identity *ids;
    unsigned n;
    atomic_uint next;
    atomic_uint failed;
    int last_error;
};

static void *join_worker(void *arg)
{
    struct joins *j = arg;
    struct cd_client *c = client_of_all();
    for (;;) {
        unsigned i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n || atomic_load(&j->failed) != 0) {
            break;
        }
        int rc =
            cd_client_child_join(c, j->token, "bench_children", &j->ids[i]);
        if (rc != 0) {
            j->last_error = rc;
            atomic_fetch_add(&j->failed, 1);
            break;
        }
        snprintf(j->ids[i].endpoints, sizeof j->ids[i].endpoints, "%s",
                 endpoints_csv);
    }
    cd_client_close(c);
    return NULL;
}

/* Register n children (CHILD_JOIN at the leader), a few at a time. */
static int join_children(const char *token,
                         struct cd_child_identity *ids,
                         unsigned n)
{
    struct joins j;
    pthread_t th[JOIN_THREADS];
    unsigned n_th = n < JOIN_THREADS ? n : JOIN_THREADS;
    memset(&j, 0, sizeof j);
    j.token = token;
    j.ids = ids;
    j.n = n;
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    for (unsigned i = 0; i < n_th; i++) {
        if (pthread_create(&th[i], NULL, join_worker, &j) != 0) {
            fprintf(stderr, "bench_children: pthread_create failed\n");
            exit(1);
        }
    }
    for (unsigned i = 0; i < n_th; i++) {
        pthread_join(th[i], NULL);
    }
    if (atomic_load(&j.failed) != 0) {
        fprintf(stderr, "bench_children: CHILD_JOIN: %s (%s)\n",
                cd_errname(j.last_error), cd_strerror(j.last_error));
        return j.last_error;
    }
    return 0;
}

/* --- fanout: the child simulator ----------------------------------------- */

enum child_state {
    CH_IDLE = 0,   /* not connected yet */
    CH_WAIT,       /* to connect again at retry_at */
    CH_CONNECTING, /* connect() under way, or HELLO partly sent */
    CH_HELLO,      /* HELLO sent: waiting for the OK */
    CH_STREAMING,  /* OK received: CHANGES frames come */
    CH_DEAD,       /* gave up: its samples are missing */
};

struct sim_child
{
    int fd;
    enum child_state state;
    size_t parent; /* index in E of the parent it streams from */
    struct cd_child_identity id;
    uint64_t revision; /* of the last batch: where a resumed stream starts */
    uint64_t retry_at; /* CH_WAIT: monotonic ns */
    unsigned retries;
    struct codec_reader reader;
    uint8_t *out; /* the HELLO frame, until sent */
    size_t out_len, out_sent;
};

struct parent_addr
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

struct sim
{
    int epfd;
    unsigned n;
    struct sim_child *children;
    struct parent_addr parents[MAX_PARENTS];
    unsigned puts;
    uint64_t *arrival; /* [child * puts + put]: monotonic ns, 0 = not yet */
    uint64_t got;      /* arrivals recorded */
    unsigned streaming;
    unsigned connecting; /* CH_CONNECTING + CH_HELLO */
    unsigned waiting;    /* CH_IDLE + CH_WAIT */
    unsigned dead;
    /* Counters for the report. */
    uint64_t frames, heartbeats, busy, reconnects, backwards;
    int fatal; /* a refusal no retry can cure */
    uint8_t buf[1 << 16];
};

static int resolve_parents(struct sim *s)
{
    for (size_t i = 0; i < n_eps; i++) {
        char host[256];
        const char *colon = strrchr(eps[i], ':');
        size_t hl = colon != NULL ? (size_t)(colon - eps[i]) : 0;
        if (colon == NULL || hl == 0 || hl >= sizeof host) {
            return -EINVAL;
        }
        memcpy(host, eps[i], hl);
        host[hl] = '\0';
        if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = '\0';
        }
        struct addrinfo hints, *ai = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(host, colon + 1, &hints, &ai);
        if (rc != 0 || ai == NULL) {
            fprintf(stderr, "bench_children: %s: %s\n", eps[i],
                    gai_strerror(rc));
            return -EHOSTUNREACH;
        }
        memcpy(&s->parents[i].addr, ai->ai_addr, ai->ai_addrlen);
        s->parents[i].addr_len = ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    return 0;
}

static void set_state(struct sim *s, struct sim_child *ch, enum child_state st)
{
    int was_connecting = ch->state == CH_CONNECTING || ch->state == CH_HELLO;
    int is_connecting = st == CH_CONNECTING || st == CH_HELLO;
    s->connecting += (unsigned)is_connecting;
    s->connecting -= (unsigned)was_connecting;
    s->waiting += (unsigned)(st == CH_IDLE || st == CH_WAIT);
    s->waiting -= (unsigned)(ch->state == CH_IDLE || ch->state == CH_WAIT);
    s->streaming += (unsigned)(st == CH_STREAMING);
    s->streaming -= (unsigned)(ch->state == CH_STREAMING);
    s->dead += (unsigned)(st == CH_DEAD);
    ch->state = st;
}

static void child_close(struct sim_child *ch)
{
    if (ch->fd >= 0) {
        close(ch->fd); /* leaves the epoll set with it */
        ch->fd = -1;
    }
    free(ch->out);
    ch->out = NULL;
    codec_reader_free(&ch->reader);
}

/* The connection failed or was refused: try again after delay_ms, or give
 * up on this child after CHILD_MAX_RETRIES. */
static void child_retry(struct sim *s,
                        struct sim_child *ch,
                        unsigned delay_ms,
                        const char *why)
{
    int was_streaming = ch->state == CH_STREAMING;
    child_close(ch);
    if (was_streaming) {
        s->reconnects++;
    }
    if (++ch->retries > CHILD_MAX_RETRIES) {
        fprintf(stderr,
                "bench_children: child %" PRIu64 " at %s: %s; gave up\n",
                ch->id.child_id, eps[ch->parent], why);
        set_state(s, ch, CH_DEAD);
        return;
    }
    ch->retry_at = now_ns() + (uint64_t)delay_ms * 1000000u;
    set_state(s, ch, CH_WAIT);
}

/* Send what is left of the HELLO; 1 when all of it is out. */
static int child_flush(struct sim *s, struct sim_child *ch)
{
    while (ch->out_sent < ch->out_len) {
        ssize_t w = send(ch->fd, ch->out + ch->out_sent,
                         ch->out_len - ch->out_sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        }
        if (w < 0) {
            child_retry(s, ch, 100, strerror(errno));
            return -1;
        }
        ch->out_sent += (size_t)w;
    }
    free(ch->out);
    ch->out = NULL;
    return 1;
}

static void child_connect(struct sim *s, unsigned idx)
{
    struct sim_child *ch = &s->children[idx];
    const struct parent_addr *p = &s->parents[ch->parent];
    struct cd_msg hello;
    char hostname[64];
    int one = 1;

    int fd = socket(p->addr.ss_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "bench_children: socket: %s\n", strerror(errno));
        s->fatal = 1;
        set_state(s, ch, CH_DEAD);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ch->fd = fd;
    codec_reader_init(&ch->reader, 0);
    /* The HELLO a real child sends: from the cache's revision. */
    snprintf(hostname, sizeof hostname, "bench-child-%" PRIu64,
             ch->id.child_id);
    memset(&hello, 0, sizeof hello);
    hello.type = CD_MSG_HELLO;
    hello.has_cluster_id = 1;
    hello.cluster_id = ch->id.cluster_id;
    hello.u.hello.cluster_id = ch->id.cluster_id;
    hello.u.hello.child_id = ch->id.child_id;
    hello.u.hello.revision = ch->revision;
    hello.u.hello.registered_rev = ch->id.registered_rev;
    hello.u.hello.hostname = hostname;
    hello.u.hello.version = "bench_children";
    int rc = codec_encode(&hello, 0, &ch->out, &ch->out_len);
    if (rc != 0) {
        fprintf(stderr, "bench_children: encode HELLO: %s\n", cd_strerror(rc));
        s->fatal = 1;
        child_close(ch);
        set_state(s, ch, CH_DEAD);
        return;
    }
    ch->out_sent = 0;
    set_state(s, ch, CH_CONNECTING);
    if (connect(fd, (const struct sockaddr *)&p->addr, p->addr_len) != 0 &&
        errno != EINPROGRESS) {
        child_retry(s, ch, 100, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = idx};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        fprintf(stderr, "bench_children: epoll_ctl: %s\n", strerror(errno));
        s->fatal = 1;
        child_close(ch);
        set_state(s, ch, CH_DEAD);
    }
}

/* The time of arrival of every put named in the batch. */
static void record_events(struct sim *s,
                          unsigned idx,
                          const struct cd_msg *m,
                          uint64_t t)
{
    const size_t plen = sizeof FANOUT_PREFIX - 1;
    for (size_t i = 0; i < m->u.changes.n_events; i++) {
        const struct cd_event *e = &m->u.changes.events[i];
        const char *k = e->kv.key.data;
        size_t len = e->kv.key.len;
        if (e->type != CD_EVENT_PUT || len <= plen || len > plen + 9 ||
            memcmp(k, FANOUT_PREFIX, plen) != 0) {
            continue;
        }
        unsigned put = 0;
        size_t j = plen;
        for (; j < len && k[j] >= '0' && k[j] <= '9'; j++) {
            put = put * 10 + (unsigned)(k[j] - '0');
        }
        if (j != len || put >= s->puts) {
            continue; /* the warm-up put, or another run's key */
        }
        uint64_t *a = &s->arrival[(size_t)idx * s->puts + put];
        if (*a == 0) {
            *a = t;
            s->got++;
        }
    }
}

/* One decoded frame of child idx, read at time t.  0, or -1 when the
 * connection was closed (stop reading it). */
static int on_frame(struct sim *s,
                    unsigned idx,
                    const struct cd_msg *m,
                    uint64_t t)
{
    struct sim_child *ch = &s->children[idx];
    s->frames++;
    if (m->has_cluster_id && m->cluster_id != ch->id.cluster_id) {
        fprintf(stderr, "bench_children: %s: frame of cluster %016" PRIx64 "\n",
                eps[ch->parent], m->cluster_id);
        s->fatal = 1;
        child_close(ch);
        set_state(s, ch, CH_DEAD);
        return -1;
    }
    if (m->type == CD_MSG_ERROR) {
        int code = m->u.error.code;
        if (code == CD_EBUSY && ch->state == CH_HELLO) {
            /* That parent has not applied the registration yet. */
            s->busy++;
            child_retry(s, ch, 20, "BUSY");
            return -1;
        }
        if (code == CD_ESHUTDOWN || code == CD_EBUSY) {
            child_retry(s, ch, 100, cd_errname(code));
            return -1;
        }
        fprintf(stderr, "bench_children: child %" PRIu64 " refused by %s: %s\n",
                ch->id.child_id, eps[ch->parent], cd_errname(code));
        s->fatal = 1;
        child_close(ch);
        set_state(s, ch, CH_DEAD);
        return -1;
    }
    if (ch->state == CH_HELLO && m->type == CD_MSG_OK) {
        set_state(s, ch, CH_STREAMING);
        return 0;
    }
    if (ch->state != CH_STREAMING || m->type != CD_MSG_CHANGES ||
        m->request_id != 0 || m->u.changes.compacted) {
        fprintf(stderr,
                "bench_children: child %" PRIu64 ": unexpected %s%s from %s\n",
                ch->id.child_id, codec_msg_type_name(m->type),
                m->type == CD_MSG_CHANGES && m->u.changes.compacted
                    ? " (compacted)"
                    : "",
                eps[ch->parent]);
        s->fatal = 1;
        child_close(ch);
        set_state(s, ch, CH_DEAD);
        return -1;
    }
    if (m->u.changes.n_events == 0) {
        s->heartbeats++;
    }
    if (m->u.changes.revision < ch->revision) {
        s->backwards++;
    } else {
        ch->revision = m->u.changes.revision;
    }
    record_events(s, idx, m, t);
    return 0;
}

static void on_readable(struct sim *s, unsigned idx)
{
    struct sim_child *ch = &s->children[idx];
    for (;;) {
        ssize_t n = read(ch->fd, s->buf, sizeof s->buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            child_retry(s, ch, 100, n == 0 ? "closed" : strerror(errno));
            return;
        }
        uint64_t t = now_ns();
        size_t off = 0;
        while (off < (size_t)n) {
            const uint8_t *payload;
            size_t used = 0, plen = 0;
            struct cd_msg m;
            int rc = codec_reader_feed(&ch->reader, s->buf + off,
                                       (size_t)n - off, &used, &payload, &plen);
            off += used;
            if (rc < 0) {
                child_retry(s, ch, 100, cd_errname(rc));
                return;
            }
            if (rc == 0) {
                break;
            }
            rc = codec_decode(payload, plen, &m);
            if (rc != 0) {
                fprintf(stderr, "bench_children: decode from %s: %s\n",
                        eps[ch->parent], cd_errname(rc));
                s->fatal = 1;
                child_close(ch);
                set_state(s, ch, CH_DEAD);
                return;
            }
            rc = on_frame(s, idx, &m, t);
            codec_msg_free(&m);
            if (rc != 0) {
                return;
            }
        }
    }
}

static void on_writable(struct sim *s, unsigned idx)
{
    struct sim_child *ch = &s->children[idx];
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(ch->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    if (err != 0) {
        child_retry(s, ch, 100, strerror(err));
        return;
    }
    if (child_flush(s, ch) != 1) {
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};
    epoll_ctl(s->epfd, EPOLL_CTL_MOD, ch->fd, &ev);
    set_state(s, ch, CH_HELLO);
}

/* Open connections that are due, then handle what epoll reports within
 * timeout_ms. */
static void sim_pump(struct sim *s, int timeout_ms)
{
    struct epoll_event evs[256];
    if (s->waiting > 0) {
        uint64_t now = now_ns();
        for (unsigned i = 0; i < s->n && s->connecting < CONNECT_WINDOW; i++) {
            struct sim_child *ch = &s->children[i];
            if (ch->state == CH_IDLE ||
                (ch->state == CH_WAIT && now >= ch->retry_at)) {
                child_connect(s, i);
            }
        }
    }
    int n = epoll_wait(s->epfd, evs, 256, timeout_ms);
    for (int i = 0; i < n; i++) {
        unsigned idx = evs[i].data.u32;
        struct sim_child *ch = &s->children[idx];
        if (ch->fd < 0) {
            continue; /* closed by an earlier event of this round */
        }
        if (ch->state == CH_CONNECTING) {
            on_writable(s, idx);
        } else {
            on_readable(s, idx);
        }
    }
}

struct putter
{
    struct cd_client *c;
    unsigned puts;
    unsigned interval_ms;
    uint64_t *send_ns;
    uint64_t *ack_ns; /* 0 for a failed put */
    atomic_int done;
    unsigned errors;
    int last_error;
};

static void *put_worker(void *arg)
{
    struct putter *p = arg;
    char key[64];
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < p->puts; i++) {
        uint64_t due = t0 + (uint64_t)i * p->interval_ms * 1000000u;
        uint64_t now = now_ns();
        if (now < due) {
            sleep_ms((unsigned)((due - now) / 1000000u));
        }
        int klen = snprintf(key, sizeof key, FANOUT_PREFIX "%u", i);
        p->send_ns[i] = now_ns();
        int rc = cd_client_put(p->c, key, (size_t)klen, "fanout", 6, NULL);
        if (rc != 0) {
            p->errors++;
            p->last_error = rc;
        } else {
            p->ack_ns[i] = now_ns();
        }
    }
    atomic_store(&p->done, 1);
    return NULL;
}

/* Let this process hold one descriptor per child and then some. */
static int raise_nofile(rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return -errno;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            return -errno;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        fprintf(stderr,
                "bench_children: %llu descriptors needed, the hard limit "
                "is %llu\n",
                (unsigned long long)need, (unsigned long long)rl.rlim_cur);
        return -EMFILE;
    }
    return 0;
}

/* Samples of the children streaming from parent (all when parent is
 * n_eps), sorted into out; their count. */
static size_t collect_samples(const struct sim *s,
                              const uint64_t *send_ns,
                              size_t parent,
                              uint64_t *out)
{
    size_t n = 0;
    for (unsigned c = 0; c < s->n; c++) {
        if (parent < n_eps && s->children[c].parent != parent) {
            continue;
        }
        for (unsigned p = 0; p < s->puts; p++) {
            uint64_t a = s->arrival[(size_t)c * s->puts + p];
            if (a != 0) {
                out[n++] = a > send_ns[p] ? a - send_ns[p] : 0;
            }
        }
    }
    qsort(out, n, sizeof *out, cmp_u64);
    return n;
}

/* What one fanout run allocates; freed by fanout_free(). */
struct fanout
{
    struct sim *s;
    struct cd_child_identity *ids;
    uint64_t *send_ns;
    uint64_t *ack_ns;  /* 0 for a failed put */
    uint64_t *samples; /* one per (child, put) at most */
    uint64_t *every;   /* per put: until the last child had it */
    uint64_t *rtt;     /* per put: its own round trip */
    struct cd_client *putc;
};

static void fanout_free(struct fanout *r)
{
    cd_client_close(r->putc);
    if (r->s != NULL) {
        for (unsigned i = 0; r->s->children != NULL && i < r->s->n; i++) {
            child_close(&r->s->children[i]);
        }
        if (r->s->epfd > 0) {
            close(r->s->epfd);
        }
        free(r->s->children);
        free(r->s->arrival);
    }
    free(r->s);
    free(r->ids);
    free(r->send_ns);
    free(r->ack_ns);
    free(r->samples);
    free(r->every);
    free(r->rtt);
}

/* Register, connect and stream every child; 0 once all of them stream. */
static int fanout_connect(struct fanout *r,
                          const char *token,
                          unsigned n_children,
                          uint64_t deadline,
                          double *join_s,
                          double *connect_s)
{
    struct sim *s = r->s;
    uint64_t t0 = now_ns();
    if (join_children(token, r->ids, n_children) != 0) {
        return -1;
    }
    *join_s = (double)(now_ns() - t0) / 1e9;
    /* The current revision: each child's cache would be there. */
    uint64_t rev = head_revision();
    for (unsigned i = 0; i < n_children; i++) {
        rev = r->ids[i].registered_rev > rev ? r->ids[i].registered_rev : rev;
    }
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        fprintf(stderr, "bench_children: epoll_create1: %s\n", strerror(errno));
        return -1;
    }
    s->n = n_children;
    s->waiting = n_children;
    for (unsigned i = 0; i < n_children; i++) {
        struct sim_child *ch = &s->children[i];
        ch->fd = -1;
        ch->state = CH_IDLE;
        ch->parent = i % n_eps; /* round-robin over the parents */
        ch->id = r->ids[i];
        ch->revision = rev;
    }
    t0 = now_ns();
    while (s->streaming + s->dead < n_children && !s->fatal &&
           now_ns() < deadline) {
        sim_pump(s, 10);
    }
    *connect_s = (double)(now_ns() - t0) / 1e9;
    if (s->streaming < n_children) {
        fprintf(stderr,
                "bench_children: only %u of %u children stream after %.1f s\n",
                s->streaming, n_children, *connect_s);
        return -1;
    }
    return 0;
}

static int cmd_fanout(int argc, char **argv)
{
    const char *token = NULL;
    unsigned n_children = 100, puts = 50, interval_ms = 20;
    unsigned wait_s = 5, timeout_s = 120;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--token") == 0) {
            token = argv[i + 1];
        } else if (strcmp(argv[i], "--children") == 0) {
            n_children = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--puts") == 0) {
            puts = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--interval-ms") == 0) {
            interval_ms = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--wait-s") == 0) {
            wait_s = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--timeout-s") == 0) {
            timeout_s = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else {
            usage();
        }
        i++;
    }
    if (token == NULL || n_children == 0 || n_children > 100000 || puts == 0 ||
        puts > 100000) {
        fprintf(stderr, "bench_children: fanout: bad parameters\n");
        return 2;
    }
    if (raise_nofile((rlim_t)n_children + 64) != 0) {
        return 1;
    }
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000u;
    const size_t want = (size_t)n_children * puts;
    struct fanout r;
    struct putter p;
    int ok = 0;
    memset(&r, 0, sizeof r);
    memset(&p, 0, sizeof p);
    r.s = calloc(1, sizeof *r.s);
    r.ids = calloc(n_children, sizeof *r.ids);
    r.send_ns = calloc(puts, sizeof *r.send_ns);
    r.ack_ns = calloc(puts, sizeof *r.ack_ns);
    r.samples = calloc(want, sizeof *r.samples);
    r.every = calloc(puts, sizeof *r.every);
    r.rtt = calloc(puts, sizeof *r.rtt);
    if (r.s != NULL) {
        r.s->epfd = -1;
        r.s->puts = puts;
        r.s->children = calloc(n_children, sizeof *r.s->children);
        r.s->arrival = calloc(want, sizeof *r.s->arrival);
    }
    if (r.s == NULL || r.ids == NULL || r.send_ns == NULL || r.ack_ns == NULL ||
        r.samples == NULL || r.every == NULL || r.rtt == NULL ||
        r.s->children == NULL || r.s->arrival == NULL) {
        fprintf(stderr, "bench_children: out of memory\n");
        goto out;
    }
    struct sim *s = r.s;
    double join_s = 0, connect_s = 0;
    if (resolve_parents(s) != 0 ||
        fanout_connect(&r, token, n_children, deadline, &join_s, &connect_s) !=
            0) {
        goto out;
    }

    /* Puts on the leader from a second thread; the simulator reads. */
    r.putc = client_of_all();
    p.c = r.putc;
    p.puts = puts;
    p.interval_ms = interval_ms;
    p.send_ns = r.send_ns;
    p.ack_ns = r.ack_ns;
    atomic_init(&p.done, 0);
    /* A first put finds the leader, so that each timed put is one round
     * trip to it. */
    static const char warmup[] = FANOUT_PREFIX "warmup";
    int rc = cd_client_put(p.c, warmup, sizeof warmup - 1, "w", 1, NULL);
    if (rc != 0) {
        fprintf(stderr, "bench_children: warm-up put: %s\n", cd_errname(rc));
        goto out;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, put_worker, &p) != 0) {
        fprintf(stderr, "bench_children: pthread_create failed\n");
        goto out;
    }
    uint64_t t_last_put = 0;
    for (;;) {
        sim_pump(s, 20);
        uint64_t now = now_ns();
        if (s->fatal || now >= deadline) {
            break;
        }
        if (atomic_load(&p.done)) {
            if (t_last_put == 0) {
                t_last_put = now;
            }
            if (s->got >= want ||
                now - t_last_put >= (uint64_t)wait_s * 1000000000u) {
                break;
            }
        }
    }
    pthread_join(th, NULL);
    const char *leader = cd_client_endpoint(p.c);

    /* The figures. */
    size_t n = collect_samples(s, r.send_ns, n_eps, r.samples);
    size_t missing = want - n, n_every = 0, n_rtt = 0;
    for (unsigned k = 0; k < puts; k++) {
        uint64_t last = 0;
        unsigned have = 0;
        for (unsigned c = 0; c < n_children; c++) {
            uint64_t a = s->arrival[(size_t)c * puts + k];
            have += a != 0;
            last = a > last ? a : last;
        }
        if (have == n_children && last > r.send_ns[k]) {
            r.every[n_every++] = last - r.send_ns[k];
        }
        if (r.ack_ns[k] != 0) {
            r.rtt[n_rtt++] = r.ack_ns[k] - r.send_ns[k];
        }
    }
    qsort(r.every, n_every, sizeof *r.every, cmp_u64);
    qsort(r.rtt, n_rtt, sizeof *r.rtt, cmp_u64);
    printf(
        "fanout children=%u puts=%u samples=%zu missing=%zu"
        " p50_ms=%.2f p99_ms=%.2f max_ms=%.2f every_p50_ms=%.2f"
        " every_max_ms=%.2f put_p50_ms=%.2f put_max_ms=%.2f"
        " put_errors=%u join_s=%.2f connect_s=%.2f busy=%" PRIu64
        " reconnects=%" PRIu64 " heartbeats=%" PRIu64 " frames=%" PRIu64
        " backwards=%" PRIu64 "\n",
        n_children, puts, n, missing, ns_to_ms(pctl_u64(r.samples, n, 50)),
        ns_to_ms(pctl_u64(r.samples, n, 99)),
        ns_to_ms(n > 0 ? r.samples[n - 1] : 0),
        ns_to_ms(pctl_u64(r.every, n_every, 50)),
        ns_to_ms(n_every > 0 ? r.every[n_every - 1] : 0),
        ns_to_ms(pctl_u64(r.rtt, n_rtt, 50)),
        ns_to_ms(n_rtt > 0 ? r.rtt[n_rtt - 1] : 0), p.errors, join_s, connect_s,
        s->busy, s->reconnects, s->heartbeats, s->frames, s->backwards);
    for (size_t e = 0; e < n_eps; e++) {
        size_t k = collect_samples(s, r.send_ns, e, r.samples);
        unsigned kids =
            n_children / (unsigned)n_eps + (e < n_children % n_eps ? 1u : 0u);
        printf(
            "fanout_parent endpoint=%s leader=%s children=%u samples=%zu"
            " p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
            eps[e],
            leader != NULL && strcmp(leader, eps[e]) == 0 ? "yes" : "no", kids,
            k, ns_to_ms(pctl_u64(r.samples, k, 50)),
            ns_to_ms(pctl_u64(r.samples, k, 99)),
            ns_to_ms(k > 0 ? r.samples[k - 1] : 0));
    }
    if (p.errors > 0) {
        fprintf(stderr, "bench_children: %u puts failed, last %s\n", p.errors,
                cd_errname(p.last_error));
    }
    if (missing > 0) {
        fprintf(stderr, "bench_children: %zu of %zu samples missing\n", missing,
                want);
    }
    ok = !s->fatal && missing == 0 && p.errors == 0 && s->backwards == 0;
out:
    fanout_free(&r);
    return ok ? 0 : 1;
}

/* --- catchup: a child far behind, with the real follower ----------------- */

static atomic_int follow_stop; /* SIGALRM: a phase's time is up */

static void on_alarm(int sig)
{
    (void)sig;
    follow_stop = 1;
}

struct follow_goal
{
    uint64_t target; /* stop once the cache has this revision */
    uint64_t done_ns;
};

static int on_batch(void *arg, uint64_t revision)
{
    struct follow_goal *g = arg;
    if (revision >= g->target) {
        g->done_ns = now_ns();
        return 1;
    }
    return 0;
}

/* follower_run until the goal is reached, again after a failed run (a
 * parent that is not ready yet, a snapshot fetched), within timeout_s.
 * The number of runs, or -1 when the time ran out or a final error came. */
static int follow_until(struct follower *f,
                        struct follow_goal *g,
                        unsigned timeout_s)
{
    int runs = 0;
    g->done_ns = 0;
    if (follower_revision(f) >= g->target) {
        g->done_ns = now_ns();
        return 0;
    }
    follow_stop = 0;
    alarm(timeout_s);
    while (g->done_ns == 0 && !follow_stop) {
        int rc = follower_run(f, &follow_stop);
        runs++;
        if (g->done_ns != 0) {
            break;
        }
        if (rc == CD_EREVOKED || rc == CD_EBADCLUSTER) {
            fprintf(stderr, "bench_children: follower: %s\n", cd_errname(rc));
            break;
        }
        if (rc != CD_ECOMPACTED && !follow_stop) {
            fprintf(stderr, "bench_children: follower_run: %s; again\n",
                    cd_errname(rc));
            sleep_ms(50);
        }
    }
    alarm(0);
    return g->done_ns != 0 ? runs : -1;
}

struct bulk
{
    unsigned txns;
    unsigned per_txn;
    size_t value_size;
    char *value;
    atomic_uint next;
    atomic_uint failed;
    _Atomic uint64_t max_rev;
    _Atomic uint64_t bytes;
    int last_error;
};

static void *bulk_worker(void *arg)
{
    struct bulk *b = arg;
    struct cd_client *c = client_of_all();
    struct cd_op *ops = calloc(b->per_txn, sizeof *ops);
    char(*keys)[32] = calloc(b->per_txn, sizeof *keys);
    if (ops == NULL || keys == NULL) {
        atomic_fetch_add(&b->failed, 1);
        b->last_error = -ENOMEM;
    }
    while (ops != NULL && keys != NULL) {
        unsigned t = atomic_fetch_add(&b->next, 1);
        if (t >= b->txns || atomic_load(&b->failed) != 0) {
            break;
        }
        uint64_t bytes = 0;
        for (unsigned j = 0; j < b->per_txn; j++) {
            int n = snprintf(keys[j], sizeof keys[j], "/bench/catchup/%u",
                             t * b->per_txn + j);
            ops[j] = (struct cd_op){
                .type = CD_OP_PUT,
                .key = {keys[j], (size_t)n},
                .value = {b->value, b->value_size},
            };
            bytes += (uint64_t)n + b->value_size;
        }
        struct cd_msg req, resp;
        memset(&req, 0, sizeof req);
        req.type = CD_MSG_WRITE;
        req.u.write.op = (struct cd_op){
            .type = CD_OP_TXN,
            .then_ops = ops,
            .n_then = b->per_txn,
        };
        int rc = cd_client_call(c, &req, &resp);
        if (rc != 0) {
            b->last_error = rc;
            atomic_fetch_add(&b->failed, 1);
            break;
        }
        uint64_t rev = resp.u.write_resp.revision;
        codec_msg_free(&resp);
        uint64_t seen = atomic_load(&b->max_rev);
        while (rev > seen &&
               !atomic_compare_exchange_weak(&b->max_rev, &seen, rev)) {
        }
        atomic_fetch_add(&b->bytes, bytes);
    }
    free(ops);
    free(keys);
    cd_client_close(c);
    return NULL;
}

static int cmd_catchup(int argc, char **argv)
{
    const char *token = NULL, *dir = NULL;
    unsigned changes = 100000, per_txn = 100, writers = 4, timeout_s = 60;
    size_t value_size = 100;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--token") == 0) {
            token = argv[i + 1];
        } else if (strcmp(argv[i], "--dir") == 0) {
            dir = argv[i + 1];
        } else if (strcmp(argv[i], "--changes") == 0) {
            changes = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--per-txn") == 0) {
            per_txn = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--value-size") == 0) {
            value_size = num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--writers") == 0) {
            writers = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--timeout-s") == 0) {
            timeout_s = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else {
            usage();
        }
        i++;
    }
    if (token == NULL || dir == NULL || changes == 0 || per_txn == 0 ||
        per_txn > CODEC_MAX_TXN_OPS || changes % per_txn != 0 || writers == 0 ||
        writers > 64 || value_size == 0 || value_size > 65536 ||
        timeout_s == 0) {
        fprintf(stderr,
                "bench_children: catchup: bad parameters (--changes "
                "a multiple of --per-txn <= 1024)\n");
        return 2;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_children: mkdir %s: %s\n", dir, strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: waits end early */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    /* 1. One child, its cache made by following to the current revision. */
    struct cd_child_identity id;
    memset(&id, 0, sizeof id);
    if (join_children(token, &id, 1) != 0) {
        return 1;
    }
    struct follow_goal goal = {0, 0};
    struct follower_config fc;
    struct follower *f = NULL;
    memset(&fc, 0, sizeof fc);
    fc.data_dir = dir;
    fc.id = &id;
    fc.hostname = "bench-catchup";
    fc.version = "bench_children";
    fc.stream_timeout_ms = 5000;
    fc.on_batch = on_batch;
    fc.arg = &goal;
    int rc = follower_open(&fc, &f);
    if (rc != 0) {
        fprintf(stderr, "bench_children: follower_open %s: %s\n", dir,
                cd_strerror(rc));
        return 1;
    }
    int ok = 0;
    struct bulk b;
    memset(&b, 0, sizeof b);
    goal.target = head_revision();
    if (id.registered_rev > goal.target) {
        goal.target = id.registered_rev;
    }
    uint64_t t0 = now_ns();
    if (follow_until(f, &goal, timeout_s) < 0) {
        fprintf(stderr,
                "bench_children: the cache did not reach revision %" PRIu64
                " (at %" PRIu64 ")\n",
                goal.target, follower_revision(f));
        goto out;
    }
    double initial_ms = ns_to_ms(goal.done_ns - t0);
    uint64_t start_rev = follower_revision(f);

    /* 2. The child away: changes pile up on the parents. */
    b.txns = changes / per_txn;
    b.per_txn = per_txn;
    b.value_size = value_size;
    b.value = malloc(value_size);
    if (b.value == NULL) {
        fprintf(stderr, "bench_children: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < value_size; i++) {
        b.value[i] = (char)('a' + i % 26);
    }
    atomic_init(&b.next, 0);
    atomic_init(&b.failed, 0);
    atomic_init(&b.max_rev, 0);
    atomic_init(&b.bytes, 0);
    pthread_t th[64];
    unsigned started = 0;
    uint64_t t_write = now_ns();
    for (; started < writers; started++) {
        if (pthread_create(&th[started], NULL, bulk_worker, &b) != 0) {
            fprintf(stderr, "bench_children: pthread_create failed\n");
            atomic_fetch_add(&b.failed, 1);
            break;
        }
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    double write_s = (double)(now_ns() - t_write) / 1e9;
    if (atomic_load(&b.failed) != 0) {
        fprintf(stderr, "bench_children: catchup: a write failed: %s\n",
                cd_errname(b.last_error));
        goto out;
    }
    uint64_t head = atomic_load(&b.max_rev), h2 = head_revision();
    head = h2 > head ? h2 : head;
    /* Every parent has it, so that only the catch-up itself is timed,
     * whichever parent the child reaches. */
    uint64_t t_wait = now_ns();
    for (size_t i = 0; i < n_eps; i++) {
        while (revision_of(i) < head && now_ns() - t_wait < 30000000000u) {
            sleep_ms(20);
        }
    }

    /* 3. The catch-up, timed from the call. */
    goal.target = head;
    t0 = now_ns();
    int runs = follow_until(f, &goal, timeout_s);
    if (runs < 0) {
        fprintf(stderr,
                "bench_children: no catch-up to revision %" PRIu64
                " within %u s (at %" PRIu64 ")\n",
                head, timeout_s, follower_revision(f));
        goto out;
    }
    double ms = ns_to_ms(goal.done_ns - t0);
    uint64_t bytes = atomic_load(&b.bytes);
    printf("catchup changes=%u bytes=%" PRIu64
           " ms=%.1f changes_per_s=%.0f"
           " mb_per_s=%.1f revisions=%" PRIu64
           " runs=%d write_s=%.2f"
           " initial_ms=%.1f\n",
           changes, bytes, ms, ms > 0 ? changes / (ms / 1000.0) : 0.0,
           ms > 0 ? (double)bytes / 1e6 / (ms / 1000.0) : 0.0, head - start_rev,
           runs, write_s, initial_ms);
    ok = 1;
out:
    free(b.value);
    follower_close(f);
    return ok ? 0 : 1;
}

/* --- reads: the cache through libclusterd -------------------------------- */

struct key_list
{
    char *bytes; /* every key, back to back */
    size_t used, cap;
    size_t *off; /* n + 1 offsets */
    size_t n, cap_n;
    int failed;
};

static int collect_key(void *arg,
                       const char *key,
                       size_t key_len,
                       const char *value,
                       size_t value_len)
{
    struct key_list *l = arg;
    (void)value;
    (void)value_len;
    if (l->used + key_len > l->cap) {
        size_t cap = (l->cap != 0 ? l->cap * 2 : 1 << 20) + key_len;
        char *p = realloc(l->bytes, cap);
        if (p == NULL) {
            l->failed = 1;
            return 1;
        }
        l->bytes = p;
        l->cap = cap;
    }
    if (l->n + 2 > l->cap_n) {
        size_t cap = l->cap_n != 0 ? l->cap_n * 2 : 4096;
        size_t *p = realloc(l->off, cap * sizeof *p);
        if (p == NULL) {
            l->failed = 1;
            return 1;
        }
        l->off = p;
        l->cap_n = cap;
    }
    memcpy(l->bytes + l->used, key, key_len);
    l->off[l->n] = l->used;
    l->used += key_len;
    l->n++;
    l->off[l->n] = l->used;
    return 0;
}

static int cmd_reads(int argc, char **argv)
{
    const char *path = NULL, *prefix = NULL;
    unsigned seconds = 5;
    uint64_t max_reads = 200000000;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--cache") == 0) {
            path = argv[i + 1];
        } else if (strcmp(argv[i], "--keys-prefix") == 0) {
            prefix = argv[i + 1];
        } else if (strcmp(argv[i], "--seconds") == 0) {
            seconds = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--max-reads") == 0) {
            max_reads = num_arg(argv[i], argv[i + 1]);
        } else {
            usage();
        }
        i++;
    }
    if (path == NULL || prefix == NULL || seconds == 0 || max_reads == 0) {
        fprintf(stderr, "bench_children: reads: bad parameters\n");
        return 2;
    }
    clusterd_db *db = NULL;
    int rc = clusterd_open(path, &db);
    if (rc != 0) {
        fprintf(stderr, "bench_children: clusterd_open %s: %s\n", path,
                clusterd_strerror(rc));
        return 1;
    }
    struct key_list keys;
    memset(&keys, 0, sizeof keys);
    rc = clusterd_range(db, prefix, strlen(prefix), 0, collect_key, &keys);
    if (rc != 0 || keys.failed || keys.n == 0) {
        fprintf(stderr, "bench_children: no keys under %s in %s (%s)\n", prefix,
                path, rc != 0 ? clusterd_strerror(rc) : "none listed");
        clusterd_close(db);
        free(keys.bytes);
        free(keys.off);
        return 1;
    }
    const uint64_t limit_ns = (uint64_t)seconds * 1000000000u;
    uint64_t rng = 0x9E3779B97F4A7C15ull, errors = 0;

    /* clusterd_get: a view, a lookup and a copy per read. */
    uint64_t n_get = 0, t0 = now_ns(), get_ns = 0;
    while (n_get < max_reads) {
        for (unsigned k = 0; k < 1024; k++) {
            size_t i = (size_t)(xorshift(&rng) % keys.n);
            char *value = NULL;
            size_t len = 0;
            if (clusterd_get(db, keys.bytes + keys.off[i],
                             keys.off[i + 1] - keys.off[i], &value,
                             &len) != 0) {
                errors++;
            }
            free(value);
        }
        n_get += 1024;
        get_ns = now_ns() - t0;
        if (get_ns >= limit_ns) {
            break;
        }
    }

    /* clusterd_view_get: zero-copy, one view per 1000 reads. */
    uint64_t n_view = 0, view_ns = 0, sink = 0;
    t0 = now_ns();
    while (n_view < max_reads) {
        clusterd_view *v = NULL;
        if (clusterd_view_begin(db, &v) != 0) {
            errors++;
            break;
        }
        for (unsigned k = 0; k < 1000; k++) {
            size_t i = (size_t)(xorshift(&rng) % keys.n);
            const char *value;
            size_t len;
            if (clusterd_view_get(v, keys.bytes + keys.off[i],
                                  keys.off[i + 1] - keys.off[i], &value,
                                  &len) != 0) {
                errors++;
            } else {
                sink += len; /* touch the result */
            }
        }
        clusterd_view_end(v);
        n_view += 1000;
        view_ns = now_ns() - t0;
        if (view_ns >= limit_ns) {
            break;
        }
    }
    printf("reads keys=%zu get_reads=%" PRIu64
           " get_per_s=%.0f get_ns=%.0f"
           " view_reads=%" PRIu64
           " view_per_s=%.0f view_ns=%.0f"
           " errors=%" PRIu64 " value_bytes=%" PRIu64 "\n",
           keys.n, n_get, (double)n_get / ((double)get_ns / 1e9),
           (double)get_ns / (double)n_get, n_view,
           (double)n_view / ((double)view_ns / 1e9),
           (double)view_ns / (double)n_view, errors, sink);
    clusterd_close(db);
    free(keys.bytes);
    free(keys.off);
    return errors == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }
    signal(SIGPIPE, SIG_IGN);
    const char *cmd = argv[1];
    /* --endpoints may come anywhere; the rest belongs to the command. */
    char **rest = calloc((size_t)argc, sizeof *rest);
    int n_rest = 0;
    if (rest == NULL) {
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--endpoints") == 0 && i + 1 < argc) {
            endpoints_csv = argv[++i];
        } else {
            rest[n_rest++] = argv[i];
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc;
    if (strcmp(cmd, "reads") == 0) {
        rc = cmd_reads(n_rest, rest);
        free(rest);
        return rc;
    }
    if (endpoints_csv == NULL) {
        usage();
    }
    rc = cd_client_parse_endpoints(endpoints_csv, &eps, &n_eps);
    if (rc != 0 || n_eps == 0 || n_eps > MAX_PARENTS) {
        fprintf(stderr, "bench_children: bad --endpoints %s\n", endpoints_csv);
        free(rest);
        return 2;
    }
    if (strcmp(cmd, "fanout") == 0) {
        rc = cmd_fanout(n_rest, rest);
    } else if (strcmp(cmd, "catchup") == 0) {
        rc = cmd_catchup(n_rest, rest);
    } else {
        usage();
    }
    cd_client_free_endpoints(eps, n_eps);
    free(rest);
    return rc;
}
