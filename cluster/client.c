/*
 * client.c - the blocking clusterd API client; see client.h.
 *
 * One TCP connection at a time, plain POSIX sockets kept non-blocking so
 * that every wait is a poll() with a deadline: connecting, sending and
 * receiving can each take at most what is left of the attempt and of the
 * call.  A call encodes its request once, then loops: connect (to the
 * leader a NOT_LEADER reply named, else to the next endpoint of the list),
 * send, read frames until the one with the request's id arrives, and
 * decide from it whether to return or to try again.
 *
 * What a retry may do twice is guarded by the write's client request id,
 * which the retry keeps.  What the caller learns when the call gives up
 * depends on whether the request may have reached a server: if it did
 * (sent, then no definitive answer), the result is CD_ETIMEOUT, "outcome
 * unknown"; if it never did, the last connection error, so that a refused
 * connection reads as such and a write is known not to have happened.
 */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/fdio.h"

#define DEFAULT_TIMEOUT_MS 5000u
#define DEFAULT_TOTAL_TIMEOUT_MS 15000u
/* Pause between full rounds of failed endpoints: doubles up to the max. */
#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 1000u
/* Pause when a node says there is no leader yet (an election runs). */
#define NO_LEADER_WAIT_MS 100u
/* Port numbers and host names as getaddrinfo() takes them. */
#define HOST_MAX 256
#define PORT_MAX 6
#define IN_BUF_SIZE 65536

struct cd_client
{
    char **endpoints;
    size_t n_endpoints;
    unsigned timeout_ms;
    unsigned total_timeout_ms;
    uint64_t cluster_id;
    size_t max_frame;

    int fd;           /* -1 when not connected */
    char *peer;       /* the address fd is connected to */
    char *last_ok;    /* what cd_client_endpoint() returns */
    char *redirect;   /* a leader address to try before the list */
    size_t next;      /* the endpoint of the list to try next */
    unsigned backoff; /* the next pause between rounds */

    struct codec_reader reader;
    uint8_t in[IN_BUF_SIZE]; /* received bytes not yet fed to reader */
    size_t in_off;
    size_t in_len;

    uint64_t last_request_id;
    uint64_t client_id;
    uint64_t last_seq;
    uint64_t rng; /* xorshift state for backoff jitter */
};

/* --- time -------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* poll()'s timeout for a deadline; UINT64_MAX means none. */
static int poll_timeout(uint64_t deadline)
{
    uint64_t now = now_ms();

    if (deadline == UINT64_MAX) {
        return -1;
    }
    if (deadline <= now) {
        return 0;
    }
    return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Sleep ms, but never past deadline. */
static void pause_until(unsigned ms, uint64_t deadline)
{
    uint64_t until = min_u64(now_ms() + ms, deadline);
    int t;

    while ((t = poll_timeout(until)) > 0) {
        poll(NULL, 0, t);
    }
}

static uint64_t next_random(struct cd_client *c)
{
    /* xorshift64*: jitter only needs to differ between clients. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545F4914F6CDD1Dull;
}

/* A nonzero random number; getrandom() where possible. */
static uint64_t random_nonzero(void)
{
    uint64_t v = 0;

    while (v == 0) {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
            /* Only without getrandom() (pre-3.17 kernels): good enough
             * for a client id, which must merely not collide in practice
             * between the clients of one cluster. */
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            v = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
                ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&ts;
        }
    }
    return v;
}

/* --- endpoints --------------------------------------------------------- */

/*
 * Split "host:port" or "[v6 address]:port" into its host and port.  An
 * unbracketed host with a colon is refused: "::1:7101" is ambiguous.
 */
static int split_endpoint(const char *ep,
                          char host[HOST_MAX],
                          char port[PORT_MAX])
{
    const char *h = ep;
    const char *colon;
    size_t hlen;
    size_t plen;
    unsigned long p = 0;

    if (ep[0] == '[') {
        const char *close = strchr(ep, ']');

        if (close == NULL || close[1] != ':') {
            return -EINVAL;
        }
        h = ep + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(ep, ':');
        if (colon == NULL) {
            return -EINVAL;
        }
        hlen = (size_t)(colon - ep);
        if (memchr(ep, ':', hlen) != NULL) {
            return -EINVAL;
        }
    }
    plen = strlen(colon + 1);
    if (hlen == 0 || hlen >= HOST_MAX || plen == 0 || plen >= PORT_MAX) {
        return -EINVAL;
    }
    for (size_t i = 0; i < plen; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9') {
            return -EINVAL;
        }
        p = p * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (p == 0 || p > 65535) {
        return -EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, plen + 1);
    return 0;
}

static int endpoint_valid(const char *ep)
{
    char host[HOST_MAX];
    char port[PORT_MAX];

    return ep != NULL && split_endpoint(ep, host, port) == 0;
}

void cd_client_free_endpoints(char **list, size_t n)
{
    if (list == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(list[i]);
    }
    free(list);
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

int cd_client_parse_endpoints(const char *csv, char ***list, size_t *n)
{
    char **out = NULL;
    size_t count = 1;
    size_t i = 0;
    const char *p = csv;
    int rc = 0;

    *list = NULL;
    *n = 0;
    if (csv == NULL) {
        return -EINVAL;
    }
    for (const char *q = csv; *q != '\0'; q++) {
        count += *q == ',';
    }
    out = calloc(count, sizeof(*out));
    if (out == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < count; i++) {
        const char *end = strchr(p, ',');
        const char *b = p;
        const char *e = end != NULL ? end : p + strlen(p);

        while (b < e && is_blank(*b)) {
            b++;
        }
        while (e > b && is_blank(e[-1])) {
            e--;
        }
        out[i] = strndup(b, (size_t)(e - b));
        if (out[i] == NULL) {
            rc = -ENOMEM;
            break;
        }
        if (!endpoint_valid(out[i])) {
            rc = -EINVAL;
            i++;
            break;
        }
        p = end != NULL ? end + 1 : e;
    }
    if (rc != 0) {
        cd_client_free_endpoints(out, i);
        return rc;
    }
    *list = out;
    *n = count;
    return 0;
}

/* --- open, close ------------------------------------------------------- */

int cd_client_open(const struct cd_client_config *cfg, struct cd_client **out)
{
    struct cd_client *c;

    *out = NULL;
    if (cfg == NULL || cfg->n_endpoints == 0 || cfg->endpoints == NULL) {
        return -EINVAL;
    }
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        if (!endpoint_valid(cfg->endpoints[i])) {
            return -EINVAL;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->fd = -1;
    c->endpoints = calloc(cfg->n_endpoints, sizeof(*c->endpoints));
    if (c->endpoints == NULL) {
        free(c);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_endpoints; i++) {
        c->endpoints[i] = strdup(cfg->endpoints[i]);
        if (c->endpoints[i] == NULL) {
            cd_client_free_endpoints(c->endpoints, i);
            free(c);
            return -ENOMEM;
        }
    }
    c->n_endpoints = cfg->n_endpoints;
    c->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->total_timeout_ms = cfg->total_timeout_ms != 0 ? cfg->total_timeout_ms
                                                     : DEFAULT_TOTAL_TIMEOUT_MS;
    c->cluster_id = cfg->cluster_id;
    c->max_frame =
        cfg->max_frame != 0 ? cfg->max_frame : CODEC_DEFAULT_MAX_FRAME;
    c->backoff = BACKOFF_MIN_MS;
    c->client_id = random_nonzero();
    c->rng = random_nonzero();
    codec_reader_init(&c->reader, c->max_frame);
    *out = c;
    return 0;
}

static void disconnect(struct cd_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->peer);
    c->peer = NULL;
    c->in_off = 0;
    c->in_len = 0;
    codec_reader_free(&c->reader);
    codec_reader_init(&c->reader, c->max_frame);
}

void cd_client_close(struct cd_client *c)
{
    if (c == NULL) {
        return;
    }
    disconnect(c);
    codec_reader_free(&c->reader);
    cd_client_free_endpoints(c->endpoints, c->n_endpoints);
    free(c->last_ok);
    free(c->redirect);
    free(c);
}

const char *cd_client_endpoint(const struct cd_client *c)
{
    return c->last_ok;
}

/* --- connecting -------------------------------------------------------- */

/* Map getaddrinfo()'s own codes onto errno values. */
static int resolve_error(int g)
{
    switch (g) {
        case EAI_SYSTEM:
            return errno != 0 ? -errno : -EIO;
        case EAI_MEMORY:
            return -ENOMEM;
        case EAI_AGAIN:
            return -EAGAIN;
        default:
            /* No such host: as unreachable as a host can be. */
            return -EHOSTUNREACH;
    }
}

/* Connect one address without blocking past deadline. */
static int connect_addr(const struct addrinfo *ai, uint64_t deadline, int *out)
{
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
               ai->ai_protocol);
    int one = 1;
    int rc = 0;

    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n;

            do {
                n = poll(&p, 1, poll_timeout(deadline));
            } while (n < 0 && errno == EINTR);
            if (n < 0) {
                rc = -errno;
            } else if (n == 0) {
                rc = -ETIMEDOUT;
            } else {
                int err = 0;
                socklen_t len = sizeof(err);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
                    rc = -errno;
                } else if (err != 0) {
                    rc = -err;
                }
            }
        }
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    /* Requests are small and each waits for its answer: do not let Nagle
     * hold one back for an ACK. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = fd;
    return 0;
}

/* Connect to addr ("host:port"), trying each address it resolves to. */
static int connect_to(struct cd_client *c, const char *addr, uint64_t deadline)
{
    char host[HOST_MAX];
    char port[PORT_MAX];
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int rc;
    int g;

    rc = split_endpoint(addr, host, port);
    if (rc != 0) {
        return rc;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    /* getaddrinfo() has no timeout; a resolver that hangs delays the call
     * past its deadline.  Endpoints are usually literal addresses. */
    g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        return resolve_error(g);
    }
    rc = -EHOSTUNREACH;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        uint64_t attempt = min_u64(now_ms() + c->timeout_ms, deadline);
        int fd = -1;

        rc = connect_addr(ai, attempt, &fd);
        if (rc == 0) {
            c->fd = fd;
            break;
        }
        if (now_ms() >= deadline) {
            break;
        }
    }
    freeaddrinfo(res);
    if (rc != 0) {
        return rc;
    }
    c->peer = strdup(addr);
    if (c->peer == NULL) {
        disconnect(c);
        return -ENOMEM;
    }
    return 0;
}

/*
 * Connect to the leader we were sent to, if any, else to the next endpoint
 * of the list.  A failed redirect falls back to the list.
 */
static int connect_next(struct cd_client *c, uint64_t deadline)
{
    int rc;

    if (c->redirect != NULL) {
        char *to = c->redirect;

        c->redirect = NULL;
        rc = connect_to(c, to, deadline);
        free(to);
        return rc;
    }
    rc = connect_to(c, c->endpoints[c->next], deadline);
    c->next = (c->next + 1) % c->n_endpoints;
    return rc;
}

/* Is the idle connection still open?  A server may have closed it since
 * the last call; finding out now saves a retry that would look like an
 * unknown outcome. */
static int still_open(struct cd_client *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    uint8_t b;

    if (poll(&p, 1, 0) <= 0) {
        return 1;
    }
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
        return 0;
    }
    return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* --- frames ------------------------------------------------------------ */

static int send_all(struct cd_client *c,
                    const uint8_t *buf,
                    size_t len,
                    uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int r = poll(&p, 1, poll_timeout(deadline));

            if (r == 0) {
                return CD_ETIMEOUT;
            }
            if (r < 0 && errno != EINTR) {
                return -errno;
            }
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

/* Is rc a sign that the peer does not speak our protocol (as opposed to a
 * network failure)? */
static int is_protocol_error(int rc)
{
    return rc == CD_EFRAMETOOBIG || rc == CD_EMALFORMED || rc == CD_EBADOP ||
           rc == CD_ETOOMANY;
}

/*
 * Read the next message, waiting at most until deadline.  CD_ETIMEOUT,
 * -ECONNRESET when the server closed the connection, another negative
 * errno, or a codec error (the frame was too big or did not decode).
 */
static int read_msg(struct cd_client *c, uint64_t deadline, struct cd_msg *out)
{
    memset(out, 0, sizeof(*out));
    for (;;) {
        while (c->in_off < c->in_len) {
            const uint8_t *payload;
            size_t payload_len;
            size_t used;
            int rc = codec_reader_feed(&c->reader, c->in + c->in_off,
                                       c->in_len - c->in_off, &used, &payload,
                                       &payload_len);

            c->in_off += used;
            if (rc < 0) {
                return rc;
            }
            if (rc == 1) {
                return codec_decode(payload, payload_len, out);
            }
        }
        c->in_off = 0;
        c->in_len = 0;

        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, poll_timeout(deadline));

        if (r == 0) {
            return CD_ETIMEOUT;
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        ssize_t n = recv(c->fd, c->in, sizeof(c->in), 0);

        if (n == 0) {
            return -ECONNRESET;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                continue;
            }
            return -errno;
        }
        c->in_len = (size_t)n;
    }
}

/* Read until the message with request id id (or, when also_zero, id 0)
 * arrives; anything else is a stray reply and is dropped. */
static int read_reply(struct cd_client *c,
                      uint64_t id,
                      int also_zero,
                      uint64_t deadline,
                      struct cd_msg *out)
{
    for (;;) {
        int rc = read_msg(c, deadline, out);

        if (rc != 0) {
            return rc;
        }
        if (c->cluster_id != 0 && out->has_cluster_id &&
            out->cluster_id != c->cluster_id) {
            codec_msg_free(out);
            memset(out, 0, sizeof(*out));
            return CD_EBADCLUSTER;
        }
        if (out->request_id == id || (also_zero && out->request_id == 0)) {
            return 0;
        }
        codec_msg_free(out);
    }
}

/* --- calls ------------------------------------------------------------- */

/* Is a reply of type r what a request of type t expects?  An ADD of a
 * member is answered with the new member (MEMBERS_RESP) or OK. */
static int reply_fits(enum cd_msg_type t, enum cd_msg_type r)
{
    switch (t) {
        case CD_MSG_WRITE:
            return r == CD_MSG_WRITE_RESP;
        case CD_MSG_GET:
        case CD_MSG_RANGE:
            return r == CD_MSG_RANGE_RESP;
        case CD_MSG_STATUS:
            return r == CD_MSG_STATUS_RESP;
        case CD_MSG_MEMBERS:
            return r == CD_MSG_MEMBERS_RESP;
        case CD_MSG_MEMBER_CHANGE:
            return r == CD_MSG_OK || r == CD_MSG_MEMBERS_RESP;
        case CD_MSG_TRANSFER:
        case CD_MSG_WATCH:
        case CD_MSG_SHUTDOWN:
        case CD_MSG_HELLO:
        case CD_MSG_CHILD_LEAVE:
        case CD_MSG_CHILD_REPORT:
            return r == CD_MSG_OK;
        case CD_MSG_CHILD_JOIN:
            return r == CD_MSG_CHILD_JOIN_RESP;
        case CD_MSG_CHILDREN:
            return r == CD_MSG_CHILDREN_RESP;
        case CD_MSG_TOKEN:
            return r == CD_MSG_TOKEN_RESP;
        case CD_MSG_SNAPSHOT:
            return r == CD_MSG_SNAPSHOT_CHUNK;
        case CD_MSG_LOG_UPLOAD:
            return r == CD_MSG_LOG_ACK;
        case CD_MSG_BACKUP:
            /* A new schedule is answered OK once committed; a status or a
             * backup started now, with the status. */
            return r == CD_MSG_OK || r == CD_MSG_BACKUP_RESP;
        default:
            return 1;
    }
}

/*
 * May a request whose outcome is unknown be sent again?  Reads may, and
 * writes carry the id that makes a second apply a no-op.  The cluster
 * operations have no such id: sent twice, a transfer to "any voter" would
 * move leadership twice, a removal would fail as "not found" after it
 * succeeded, a second token would be valid too, a child's join would
 * register it twice, and a shutdown retried at the next endpoint would
 * stop another node.  They are retried only while
 * they are known not to have been acted on (no connection, CD_ENOTLEADER).
 */
static int may_repeat(enum cd_msg_type t)
{
    return t != CD_MSG_MEMBER_CHANGE && t != CD_MSG_TRANSFER &&
           t != CD_MSG_TOKEN && t != CD_MSG_SHUTDOWN && t != CD_MSG_CHILD_JOIN;
}

/* A round of endpoints has failed (or a node asked us to wait): pause,
 * growing the pause each round, with jitter so that the clients of a
 * restarted cluster do not come back in step. */
static void backoff_pause(struct cd_client *c, uint64_t deadline)
{
    unsigned ms =
        c->backoff / 2 + (unsigned)(next_random(c) % (c->backoff / 2 + 1));

    pause_until(ms, deadline);
    c->backoff =
        c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
}

/* One call's state across its attempts. */
struct attempt_state
{
    uint64_t deadline;
    int last_err;    /* returned on giving up when nothing is unknown */
    int unknown;     /* a send whose outcome we do not know */
    size_t failures; /* failed attempts in this round of endpoints */
    size_t hops;     /* redirects since the last wait for an election */
};

static void attempt_failed(struct cd_client *c, struct attempt_state *s)
{
    disconnect(c);
    if (++s->failures >= c->n_endpoints) {
        s->failures = 0;
        backoff_pause(c, s->deadline);
    }
}

/* attempt() and error_reply(): go round again. */
#define RETRY 1

static void note_success(struct cd_client *c)
{
    free(c->last_ok);
    c->last_ok = c->peer != NULL ? strdup(c->peer) : NULL;
}

/* An Error reply m to req: RETRY, or what the call returns. */
static int error_reply(struct cd_client *c,
                       const struct cd_msg *req,
                       struct attempt_state *s,
                       struct cd_msg *m,
                       struct cd_msg *resp)
{
    int code = m->u.error.code;
    const char *leader = m->u.error.leader;

    if (code == CD_ENOTLEADER && leader != NULL && endpoint_valid(leader) &&
        (c->peer == NULL || strcmp(leader, c->peer) != 0) &&
        ++s->hops <= c->n_endpoints + 2) {
        /* The request was refused, not applied: follow the leader. */
        char *to = strdup(leader);

        codec_msg_free(m);
        if (to == NULL) {
            return -ENOMEM;
        }
        disconnect(c);
        free(c->redirect);
        c->redirect = to;
        s->last_err = code;
        return RETRY;
    }
    codec_msg_free(m);
    if (code == CD_ENOTLEADER) {
        /* No leader yet (or redirects that go round in circles): give the
         * election time, then start over with the first endpoint, the
         * VIP, which the new leader will hold. */
        disconnect(c);
        s->hops = 0;
        s->last_err = code;
        c->next = 0;
        pause_until(NO_LEADER_WAIT_MS, s->deadline);
        return RETRY;
    }
    if ((code == CD_ELEADERLOST || code == CD_ESHUTDOWN ||
         code == CD_ETIMEOUT) &&
        may_repeat(req->type)) {
        /* The server took the request but cannot say what became of it;
         * the retry keeps the write's id, so it is applied at most once. */
        s->unknown = 1;
        s->last_err = code;
        attempt_failed(c, s);
        return RETRY;
    }
    if (code == CD_EDUPLICATE && req->type == CD_MSG_WRITE && s->unknown) {
        /* An attempt whose answer we lost was applied: success, but its
         * results (revision, ...) went with that answer. */
        memset(resp, 0, sizeof(*resp));
        resp->request_id = req->request_id;
        resp->type = CD_MSG_WRITE_RESP;
        note_success(c);
        return 0;
    }
    /* A definitive answer; the connection stays good for the next call. */
    return code;
}

/* One attempt at sending the encoded req: RETRY, or the call's result. */
static int attempt(struct cd_client *c,
                   const struct cd_msg *req,
                   const uint8_t *frame,
                   size_t frame_len,
                   struct attempt_state *s,
                   struct cd_msg *resp)
{
    struct cd_msg m;
    int rc;

    if (c->fd < 0) {
        rc = connect_next(c, s->deadline);
        if (rc == -ENOMEM) {
            return rc;
        }
        if (rc != 0) {
            s->last_err = rc;
            attempt_failed(c, s);
            return RETRY;
        }
    }
    rc = send_all(c, frame, frame_len, s->deadline);
    if (rc != 0) {
        /* A frame not wholly handed to the kernel cannot be applied. */
        s->last_err = rc;
        attempt_failed(c, s);
        return RETRY;
    }
    rc = read_reply(c, req->request_id, 0,
                    min_u64(now_ms() + c->timeout_ms, s->deadline), &m);
    if (rc == CD_EBADCLUSTER || rc == -ENOMEM || is_protocol_error(rc)) {
        /* Another cluster, or a peer that is not a clusterd (a wrong
         * port?): retrying would only hide that behind a timeout. */
        disconnect(c);
        return rc;
    }
    if (rc != 0) {
        s->unknown = 1;
        s->last_err = rc;
        if (!may_repeat(req->type)) {
            disconnect(c);
            return CD_ETIMEOUT;
        }
        attempt_failed(c, s);
        return RETRY;
    }
    if (m.type == CD_MSG_ERROR) {
        return error_reply(c, req, s, &m, resp);
    }
    if (!reply_fits(req->type, m.type)) {
        codec_msg_free(&m);
        disconnect(c);
        return CD_EMALFORMED;
    }
    note_success(c);
    *resp = m;
    return 0;
}

/*
 * Send req and return the first reply to it, retrying as client.h says.
 * On success the connection stays open for what follows (a stream's next
 * frames).
 */
static int call_first(struct cd_client *c,
                      struct cd_msg *req,
                      struct cd_msg *resp)
{
    struct attempt_state s = {0};
    uint8_t *frame;
    size_t frame_len;
    int rc;

    memset(resp, 0, sizeof(*resp));
    req->request_id = ++c->last_request_id;
    if (c->cluster_id != 0) {
        req->has_cluster_id = 1;
        req->cluster_id = c->cluster_id;
    }
    if (req->type == CD_MSG_WRITE && req->u.write.op.client_id == 0) {
        req->u.write.op.client_id = c->client_id;
        req->u.write.op.seq = ++c->last_seq;
    }
    rc = codec_encode(req, c->max_frame, &frame, &frame_len);
    if (rc != 0) {
        return rc;
    }
    s.deadline = now_ms() + c->total_timeout_ms;
    s.last_err = CD_ETIMEOUT;
    c->backoff = BACKOFF_MIN_MS;
    if (c->fd >= 0 && !still_open(c)) {
        disconnect(c);
    }
    rc = RETRY;
    while (rc == RETRY && now_ms() < s.deadline) {
        rc = attempt(c, req, frame, frame_len, &s, resp);
    }
    free(frame);
    if (rc == RETRY) {
        /* Out of time.  Sent without a definitive answer: the outcome is
         * unknown.  Never sent: the last reason why not. */
        disconnect(c);
        free(c->redirect);
        c->redirect = NULL;
        rc = s.unknown ? CD_ETIMEOUT : s.last_err;
    }
    return rc;
}

int cd_client_call(struct cd_client *c, struct cd_msg *req, struct cd_msg *resp)
{
    /* Streams leave frames on the connection after the first reply; only
     * their own calls know how to read (or drop) them. */
    if (req->type == CD_MSG_WATCH || req->type == CD_MSG_SNAPSHOT) {
        memset(resp, 0, sizeof(*resp));
        return CD_EBADOP;
    }
    return call_first(c, req, resp);
}

/* --- convenience calls ------------------------------------------------- */

static int write_op(struct cd_client *c,
                    const struct cd_op *op,
                    uint64_t *revision,
                    uint64_t *deleted)
{
    struct cd_msg req;
    struct cd_msg resp;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_WRITE;
    req.u.write.op = *op;
    rc = cd_client_call(c, &req, &resp);
    if (rc != 0) {
        return rc;
    }
    if (revision != NULL) {
        *revision = resp.u.write_resp.revision;
    }
    if (deleted != NULL) {
        *deleted = resp.u.write_resp.deleted;
    }
    codec_msg_free(&resp);
    return 0;
}

int cd_client_put(struct cd_client *c,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  uint64_t *revision)
{
    struct cd_op op;

    memset(&op, 0, sizeof(op));
    op.type = CD_OP_PUT;
    op.key = (struct cd_buf){key, key_len};
    op.value = (struct cd_buf){value, value_len};
    return write_op(c, &op, revision, NULL);
}

int cd_client_delete(struct cd_client *c,
                     const void *key,
                     size_t key_len,
                     int prefix,
                     uint64_t *n_deleted)
{
    struct cd_op op;

    memset(&op, 0, sizeof(op));
    op.type = prefix ? CD_OP_DELETE_PREFIX : CD_OP_DELETE;
    op.key = (struct cd_buf){key, key_len};
    return write_op(c, &op, NULL, n_deleted);
}

int cd_client_get(struct cd_client *c,
                  const void *key,
                  size_t key_len,
                  int serializable,
                  char **value,
                  size_t *value_len,
                  uint64_t *revision)
{
    struct cd_msg req;
    struct cd_msg resp;
    const struct cd_kv *kv;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_GET;
    req.u.get.key = (struct cd_buf){key, key_len};
    req.u.get.serializable = serializable;
    rc = cd_client_call(c, &req, &resp);
    if (rc != 0) {
        return rc;
    }
    if (resp.u.range_resp.n_kvs == 0) {
        codec_msg_free(&resp);
        return CD_ENOTFOUND;
    }
    kv = &resp.u.range_resp.kvs[0];
    if (value != NULL) {
        char *copy = malloc(kv->value.len + 1);

        if (copy == NULL) {
            codec_msg_free(&resp);
            return -ENOMEM;
        }
        if (kv->value.len > 0) {
            memcpy(copy, kv->value.data, kv->value.len);
        }
        copy[kv->value.len] = '\0';
        *value = copy;
    }
    if (value_len != NULL) {
        *value_len = kv->value.len;
    }
    if (revision != NULL) {
        *revision = kv->mod_rev;
    }
    codec_msg_free(&resp);
    return 0;
}

int cd_client_status(struct cd_client *c, struct cd_msg *resp)
{
    struct cd_msg req;

    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_STATUS;
    return cd_client_call(c, &req, resp);
}

/* --- streams ----------------------------------------------------------- */

/* Send req (WATCH or HELLO), then hand every pushed CHANGES frame to cb. */
static int stream(struct cd_client *c,
                  struct cd_msg *req,
                  unsigned timeout_ms,
                  cd_client_watch_cb cb,
                  void *arg)
{
    struct cd_msg m;
    int rc = call_first(c, req, &m);
    if (rc != 0) {
        return rc;
    }
    codec_msg_free(&m);
    for (;;) {
        uint64_t deadline =
            timeout_ms != 0 ? now_ms() + timeout_ms : UINT64_MAX;

        /* Pushes may carry the watch's request id or 0 (docs/protocol.md
         * says 0 for pushes); on this connection both mean this watch. */
        rc = read_reply(c, req->request_id, 1, deadline, &m);
        if (rc != 0) {
            break;
        }
        if (m.type == CD_MSG_ERROR) {
            rc = m.u.error.code;
            codec_msg_free(&m);
            break;
        }
        if (m.type == CD_MSG_CHANGES) {
            rc = cb(arg, &m);
        }
        codec_msg_free(&m);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            break;
        }
    }
    /* There is no message to end a watch: the server keeps pushing until
     * the connection closes. */
    disconnect(c);
    return rc;
}

int cd_client_watch(struct cd_client *c,
                    uint64_t since,
                    const void *prefix,
                    size_t prefix_len,
                    unsigned timeout_ms,
                    cd_client_watch_cb cb,
                    void *arg)
{
    struct cd_msg req;
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_WATCH;
    req.u.watch.since = since;
    req.u.watch.prefix = (struct cd_buf){prefix, prefix_len};
    return stream(c, &req, timeout_ms, cb, arg);
}

int cd_client_follow(struct cd_client *c,
                     const struct cd_msg *hello,
                     unsigned timeout_ms,
                     cd_client_watch_cb cb,
                     void *arg)
{
    struct cd_msg req = *hello;
    req.type = CD_MSG_HELLO;
    req.request_id = 0;
    return stream(c, &req, timeout_ms, cb, arg);
}

static int snapshot_into(struct cd_client *c,
                         int fd,
                         uint64_t *revision,
                         int recent)
{
    struct cd_msg req;
    struct cd_msg m;
    uint64_t written = 0;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_SNAPSHOT;
    req.u.snapshot.recent = recent;
    rc = call_first(c, &req, &m);
    while (rc == 0) {
        if (m.type == CD_MSG_ERROR) {
            rc = m.u.error.code;
        } else if (m.type != CD_MSG_SNAPSHOT_CHUNK ||
                   m.u.snapshot_chunk.offset != written) {
            /* A gap or an overlap: the file would be silently wrong. */
            rc = CD_EMALFORMED;
        } else {
            rc = fd_write_all(fd, m.u.snapshot_chunk.data.data,
                              m.u.snapshot_chunk.data.len);
            written += m.u.snapshot_chunk.data.len;
            if (rc == 0 && m.u.snapshot_chunk.last) {
                if (revision != NULL) {
                    *revision = m.u.snapshot_chunk.revision;
                }
                codec_msg_free(&m);
                return 0;
            }
        }
        codec_msg_free(&m);
        if (rc == 0) {
            rc = read_reply(c, req.request_id, 0, now_ms() + c->timeout_ms, &m);
        }
    }
    /* The rest of the stream may still be on its way. */
    disconnect(c);
    return rc;
}

int cd_client_snapshot(struct cd_client *c, int fd, uint64_t *revision)
{
    return snapshot_into(c, fd, revision, 0);
}

int cd_client_snapshot_recent(struct cd_client *c, int fd, uint64_t *revision)
{
    return snapshot_into(c, fd, revision, 1);
}
