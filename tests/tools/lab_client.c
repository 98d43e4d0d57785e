/*
 * lab_client - the fault lab's workload client and its two helpers
 * (tests/lab; the checker that reads what it writes is
 * tests/lab/checker).
 *
 *   lab_client --endpoints EPS --out FILE [workload options]
 *   lab_client --final-read FILE --endpoints EPS [--prefix P]
 *              [--timeout-ms T] [--final-timeout-s S]
 *   lab_client --child-monitor DB --out FILE [--key K] [--duration-s D]
 *              [--interval-ms I]
 *   lab_client --now
 *
 * Workload: --threads N threads, each a Jepsen "process", run a seeded mix
 * of operations through cluster/client.h until --duration-s or --max-ops
 * (whichever comes first; 0 means no bound, but one of them is needed)
 * or SIGTERM/SIGINT (the operation in flight still finishes and is
 * written), each at most --rate operations a second (0: as fast as the
 * cluster answers, which on a small machine starves the parents of CPU):
 *   get   linearizable read of a register key        (40 %)
 *   put   a unique value to a register key           (25 %)
 *   cas   a transaction: if value == expected then put a unique value
 *                                                     (20 %)
 *   add   put of a fresh key under PREFIX/set/        (15 %)
 * Register keys are PREFIX/r/GEN/K with K < --keys; GEN grows by one every
 * --rotate operations (counted over all threads; an unknown write counts
 * as rotate/8 of them), so each key sees a few hundred operations and a
 * few unknown writes at most, and a linearizability search per key stays
 * small.  Values are "PROCESS-N", unique in the run.
 *
 * Each completed operation is ONE JSON line, written at once (one write(2)
 * under a lock, no stdio buffer):
 *   {"process":3,"op":"put","key":"/lab/r/2/7","value":"3-118",
 *    "call":123,"return":456,"status":"ok"}
 * call and return are CLOCK_MONOTONIC nanoseconds, the same clock in
 * every network namespace of the machine.  status is
 *   ok    done; a get carries "result" (the value, or null: not found); a
 *         cas carries "expected" and "ok" (whether the compare held);
 *   fail  definitely not applied (refused before it was sent, or refused
 *         by a node that would not propose it); "error" names the code;
 *   info  outcome unknown (a timeout or a connection lost after sending,
 *         CD_ETIMEOUT, an error from the consensus layer...); "error".
 * Only codes known to mean "not applied" are fail; everything else is
 * info (see not_applied()), so a history never claims more than is known.
 * After an info the thread goes on as a NEW process (id + threads), with a
 * fresh client: a Jepsen process with an unknown operation is never
 * reused.  Process ids are CLIENT * 1000000 + thread + threads * n, so
 * several lab_clients (--client 0, 1, ...) never share one.
 *
 * Every attempt at most --attempt-ms (default a third of --timeout-ms),
 * every operation, retries included, at most --timeout-ms (the client's
 * total_timeout_ms).  Failed and unknown operations are written too: the
 * lab measures how long requests failed from them.
 *
 * --final-read: after the nemeses healed, a linearizable range read of
 * every key under PREFIX (paged), retried as a whole until it succeeds or
 * --final-timeout-s passes, written to FILE (via a temporary file and a
 * rename) as {"key":..,"value":..,"mod_rev":..} lines.  Exit 1 if it never
 * succeeded.
 *
 * --child-monitor: every --interval-ms (default 5), read a child's cache
 * through libclusterd (storage/clusterd.h: its revision and staleness,
 * and the value of --key if given) and write
 *   {"t":NS,"revision":R,"age_ms":A,"ok":true}
 * or {"t":NS,"ok":false,"error":"..."} when the read failed.  The file is
 * reopened when its inode changes (a child that left and joined again).
 *
 * --now prints CLOCK_MONOTONIC in nanoseconds, the clock of the histories,
 * for the scripts that write the nemesis events ({"t":NS,"event":...}):
 * a shell has no monotonic clock of its own.
 *
 * Exit status: 0, 1 when the run could not be done (output, final read),
 * 2 for bad usage.  A summary goes to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/client.h"
#include "lib/err.h"
#include "storage/clusterd.h"

#define MAX_THREADS 256
#define MAX_KEYS 1000
#define VALUE_MAX 48
#define KEY_MAX 256
#define PROCESS_STRIDE 1000000
#define RANGE_PAGE 1000

static atomic_int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, 1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR &&
           !atomic_load(&stop_flag)) {
    }
}

/* splitmix64: a seeded, reproducible sequence per thread. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* --- JSON lines ---------------------------------------------------------- */

/* A growable line; on allocation failure it is marked failed and dropped
 * by the writer, which then counts it as lost. */
struct line
{
    char *p;
    size_t len;
    size_t cap;
    int failed;
};

static void line_raw(struct line *l, const char *s, size_t n)
{
    if (l->failed) {
        return;
    }
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap != 0 ? l->cap : 256;
        char *p;

        while (l->len + n + 1 > cap) {
            cap *= 2;
        }
        p = realloc(l->p, cap);
        if (p == NULL) {
            l->failed = 1;
            return;
        }
        l->p = p;
        l->cap = cap;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
    l->p[l->len] = '\0';
}

static void line_cstr(struct line *l, const char *s)
{
    line_raw(l, s, strlen(s));
}

/* A JSON string of n bytes: quotes, backslashes and control bytes are
 * escaped; bytes of 0x80 and above become \u00XX, so that any key or value
 * makes a valid line (the lab's own are ASCII). */
static void line_str(struct line *l, const void *data, size_t n)
{
    const unsigned char *s = data;

    line_raw(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        char esc[8];

        if (s[i] == '"' || s[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)s[i];
            line_raw(l, esc, 2);
        } else if (s[i] < 0x20 || s[i] >= 0x80) {
            snprintf(esc, sizeof esc, "\\u%04x", s[i]);
            line_raw(l, esc, 6);
        } else {
            line_raw(l, (const char *)&s[i], 1);
        }
    }
    line_raw(l, "\"", 1);
}

static void line_u64(struct line *l, uint64_t v)
{
    char num[24];

    snprintf(num, sizeof num, "%" PRIu64, v);
    line_cstr(l, num);
}

/* ,"name": */
static void line_field(struct line *l, const char *name)
{
    line_raw(l, ",\"", 2);
    line_cstr(l, name);
    line_raw(l, "\":", 2);
}

struct out
{
    int fd;
    pthread_mutex_t lock;
    atomic_ulong lost; /* lines not written: the run is then invalid */
};

static int out_open(struct out *o, const char *path)
{
    o->fd =
        open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        return -errno;
    }
    atomic_init(&o->lost, 0);
    return pthread_mutex_init(&o->lock, NULL) == 0 ? 0 : -ENOMEM;
}

static int out_close(struct out *o)
{
    int rc = close(o->fd) == 0 ? 0 : -errno;

    pthread_mutex_destroy(&o->lock);
    return rc;
}

/* Write l and a newline in one write(2), so that lines of several threads
 * never interleave and a line is on disk (in the page cache) as soon as the
 * operation is over; l is reset. */
static void out_line(struct out *o, struct line *l)
{
    line_raw(l, "\n", 1);
    if (l->failed) {
        atomic_fetch_add(&o->lost, 1);
    } else {
        size_t off = 0;

        pthread_mutex_lock(&o->lock);
        while (off < l->len) {
            ssize_t n = write(o->fd, l->p + off, l->len - off);

            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                atomic_fetch_add(&o->lost, 1);
                break;
            }
            off += (size_t)n;
        }
        pthread_mutex_unlock(&o->lock);
    }
    l->len = 0;
    l->failed = 0;
}

/* --- options ------------------------------------------------------------- */

struct opts
{
    const char *endpoints;
    const char *out;
    const char *final_read;
    const char *child_db;
    const char *child_key;
    const char *prefix;
    uint64_t seed;
    unsigned threads;
    unsigned duration_s;
    uint64_t max_ops;
    unsigned keys;
    unsigned rotate;
    unsigned timeout_ms;
    unsigned attempt_ms;
    unsigned client;
    unsigned final_timeout_s;
    unsigned interval_ms;
    unsigned rate; /* operations per second per thread; 0: no limit */
};

static void usage(void)
{
    fputs(
        "usage: lab_client --endpoints EPS --out FILE [--seed S] "
        "[--threads N]\n"
        "         [--duration-s D] [--max-ops M] [--rate "
        "OPS_PER_S_PER_THREAD]\n"
        "         [--keys K] [--rotate R]\n"
        "         [--timeout-ms T] [--attempt-ms A] [--client C] "
        "[--prefix P]\n"
        "       lab_client --final-read FILE --endpoints EPS [--prefix P]\n"
        "         [--timeout-ms T] [--final-timeout-s S]\n"
        "       lab_client --child-monitor DB --out FILE [--key K]\n"
        "         [--duration-s D] [--interval-ms I]\n"
        "       lab_client --now\n",
        stderr);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
    uint64_t v;

    if (parse_u64(s, &v) != 0 || v > 0xFFFFFFFFu) {
        return -EINVAL;
    }
    *out = (unsigned)v;
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->prefix = "/lab/";
    o->seed = 1;
    o->threads = 4;
    o->keys = 5;
    o->rotate = 400;
    o->timeout_ms = 1000;
    o->final_timeout_s = 60;
    o->interval_ms = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;

        if (v == NULL) {
            return -EINVAL;
        }
        i++;
        if (strcmp(a, "--endpoints") == 0) {
            o->endpoints = v;
        } else if (strcmp(a, "--out") == 0) {
            o->out = v;
        } else if (strcmp(a, "--final-read") == 0) {
            o->final_read = v;
        } else if (strcmp(a, "--child-monitor") == 0) {
            o->child_db = v;
        } else if (strcmp(a, "--key") == 0) {
            o->child_key = v;
        } else if (strcmp(a, "--prefix") == 0) {
            o->prefix = v;
        } else if (strcmp(a, "--seed") == 0) {
            rc = parse_u64(v, &o->seed);
        } else if (strcmp(a, "--threads") == 0) {
            rc = parse_uint(v, &o->threads);
        } else if (strcmp(a, "--duration-s") == 0) {
            rc = parse_uint(v, &o->duration_s);
        } else if (strcmp(a, "--max-ops") == 0) {
            rc = parse_u64(v, &o->max_ops);
        } else if (strcmp(a, "--rate") == 0) {
            rc = parse_uint(v, &o->rate);
        } else if (strcmp(a, "--keys") == 0) {
            rc = parse_uint(v, &o->keys);
        } else if (strcmp(a, "--rotate") == 0) {
            rc = parse_uint(v, &o->rotate);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            rc = parse_uint(v, &o->timeout_ms);
        } else if (strcmp(a, "--attempt-ms") == 0) {
            rc = parse_uint(v, &o->attempt_ms);
        } else if (strcmp(a, "--client") == 0) {
            rc = parse_uint(v, &o->client);
        } else if (strcmp(a, "--final-timeout-s") == 0) {
            rc = parse_uint(v, &o->final_timeout_s);
        } else if (strcmp(a, "--interval-ms") == 0) {
            rc = parse_uint(v, &o->interval_ms);
        } else {
            return -EINVAL;
        }
        if (rc != 0) {
            return rc;
        }
    }
    if (o->attempt_ms == 0) {
        o->attempt_ms = o->timeout_ms / 3 > 100 ? o->timeout_ms / 3 : 100;
    }
    if (o->attempt_ms > o->timeout_ms) {
        o->attempt_ms = o->timeout_ms;
    }
    if (o->timeout_ms == 0 || o->prefix[0] == '\0' ||
        strlen(o->prefix) > KEY_MAX / 2) {
        return -EINVAL;
    }
    if (o->child_db != NULL) {
        return o->out != NULL && o->interval_ms > 0 ? 0 : -EINVAL;
    }
    if (o->endpoints == NULL) {
        return -EINVAL;
    }
    if (o->final_read != NULL) {
        return 0;
    }
    if (o->out == NULL || o->threads == 0 || o->threads > MAX_THREADS ||
        o->keys == 0 || o->keys > MAX_KEYS || o->rotate == 0 ||
        (o->duration_s == 0 && o->max_ops == 0) ||
        o->client >= UINT32_MAX / PROCESS_STRIDE) {
        return -EINVAL;
    }
    return 0;
}

static struct cd_client *new_client(const struct opts *o,
                                    char **eps,
                                    size_t n_eps)
{
    struct cd_client_config cfg;
    struct cd_client *c = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.endpoints = (const char *const *)eps;
    cfg.n_endpoints = n_eps;
    cfg.timeout_ms = o->attempt_ms;
    cfg.total_timeout_ms = o->timeout_ms;
    if (cd_client_open(&cfg, &c) != 0) {
        return NULL;
    }
    return c;
}

/* --- the workload -------------------------------------------------------- */

/*
 * Does err, returned by a call of cluster/client.h, prove that the request
 * was not applied?  client.h: when the call gives up, CD_ETIMEOUT if the
 * request may have reached a server, else the last reason it could not be
 * sent (a connection error, or CD_ENOTLEADER: no leader took it).  A node
 * answers CD_ENOTLEADER only before proposing, -EPERM for a reserved key,
 * and the store's input errors fail the operation alone.  Anything else
 * (CD_ETIMEOUT, CD_ELEADERLOST, -EIO or -ENOSPC from a failed disk write
 * that followers may still commit, CD_ERAFT, CD_EBUSY, -ENOMEM, a reply
 * that was not a clusterd message, CD_EDUPLICATE or CD_ETOOOLD for a
 * retried write...) leaves the outcome unknown.
 */
static int not_applied(int err)
{
    switch (err) {
        case CD_ENOTLEADER:
        case -ECONNREFUSED:
        case -ECONNRESET:
        case -EPIPE:
        case -EHOSTUNREACH:
        case -ENETUNREACH:
        case -ETIMEDOUT: /* connect() only: a read timeout is CD_ETIMEOUT */
        case -EAGAIN:    /* name resolution */
        case -EPERM:
        case CD_EKEYTOOBIG:
        case CD_EVALTOOBIG:
        case CD_EBADKEY:
            return 1;
        default:
            return 0;
    }
}

/* The register values seen last per key of the current generation: a
 * cas expects one of them, so that some of them succeed. */
struct seen
{
    uint64_t gen;
    char value[VALUE_MAX];
};

struct lab
{
    const struct opts *o;
    char **eps;
    size_t n_eps;
    struct out out;
    uint64_t deadline_ns;  /* 0: none */
    atomic_ullong next_op; /* operations started, for --max-ops */
    atomic_ullong gen_ops; /* what the key generation is counted in */
    pthread_mutex_t seen_lock;
    struct seen seen[MAX_KEYS];
};

enum { OK, FAIL, INFO };

struct worker
{
    struct lab *lab;
    pthread_t thread;
    unsigned index;
    unsigned incarnation;
    uint64_t rng;
    uint64_t n_values;
    unsigned long count[3];
    unsigned long lost_clients;
};

static unsigned process_id(const struct worker *w)
{
    const struct opts *o = w->lab->o;

    return o->client * PROCESS_STRIDE + w->index + o->threads * w->incarnation;
}

static void remember(struct lab *lab,
                     unsigned k,
                     uint64_t gen,
                     const char *value)
{
    pthread_mutex_lock(&lab->seen_lock);
    if (gen >= lab->seen[k].gen) {
        lab->seen[k].gen = gen;
        snprintf(lab->seen[k].value, sizeof lab->seen[k].value, "%s", value);
    }
    pthread_mutex_unlock(&lab->seen_lock);
}

/* The value to expect in a cas: the last one seen on this key in this
 * generation, else one nobody wrote (the cas then fails). */
static void expected_for(struct lab *lab,
                         unsigned k,
                         uint64_t gen,
                         char out[VALUE_MAX])
{
    pthread_mutex_lock(&lab->seen_lock);
    if (lab->seen[k].gen == gen && lab->seen[k].value[0] != '\0') {
        memcpy(out, lab->seen[k].value, VALUE_MAX);
    } else {
        snprintf(out, VALUE_MAX, "none");
    }
    pthread_mutex_unlock(&lab->seen_lock);
}

static void line_start(struct line *l,
                       const struct worker *w,
                       const char *op,
                       const char *key)
{
    char head[64];

    snprintf(head, sizeof head,
             "{\"process\":%u,\"op\":\"%s\",\"key\":", process_id(w), op);
    line_cstr(l, head);
    line_str(l, key, strlen(key));
}

static void line_end(struct line *l,
                     uint64_t call,
                     uint64_t ret,
                     int status,
                     int err)
{
    static const char *const names[] = {"ok", "fail", "info"};

    line_field(l, "call");
    line_u64(l, call);
    line_field(l, "return");
    line_u64(l, ret);
    line_field(l, "status");
    line_str(l, names[status], strlen(names[status]));
    if (err != 0) {
        line_field(l, "error");
        line_cstr(l, "\"");
        line_cstr(l, cd_errname(err));
        line_cstr(l, "\"");
    }
    line_cstr(l, "}");
}

static int classify(int rc)
{
    return rc == 0 ? OK : not_applied(rc) ? FAIL : INFO;
}

/* One compare-and-set: a transaction "value == expected ? put value". */
static int cas(struct cd_client *c,
               const char *key,
               const char *expected,
               const char *value,
               int *succeeded)
{
    struct cd_compare cmp;
    struct cd_op then;
    struct cd_msg req;
    struct cd_msg resp;
    size_t klen = strlen(key);
    int rc;

    memset(&cmp, 0, sizeof(cmp));
    cmp.key = (struct cd_buf){key, klen};
    cmp.target = CD_CMP_VALUE;
    cmp.result = CD_CMP_EQUAL;
    cmp.value = (struct cd_buf){expected, strlen(expected)};
    memset(&then, 0, sizeof(then));
    then.type = CD_OP_PUT;
    then.key = (struct cd_buf){key, klen};
    then.value = (struct cd_buf){value, strlen(value)};
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_WRITE;
    req.u.write.op.type = CD_OP_TXN;
    req.u.write.op.compares = &cmp;
    req.u.write.op.n_compares = 1;
    req.u.write.op.then_ops = &then;
    req.u.write.op.n_then = 1;
    rc = cd_client_call(c, &req, &resp);
    if (rc != 0) {
        return rc;
    }
    /* Revision 0: applied by an attempt whose answer was lost (client.h),
     * so whether the compare held is unknown. */
    rc = resp.u.write_resp.revision == 0 ? CD_EDUPLICATE : 0;
    *succeeded = resp.u.write_resp.succeeded;
    codec_msg_free(&resp);
    return rc;
}

/* Run one operation on the keys of generation gen; returns its status,
 * and in *wrote whether it wrote a register. */
static int run_op(struct worker *w,
                  struct cd_client *c,
                  uint64_t gen,
                  struct line *l,
                  int *wrote)
{
    struct lab *lab = w->lab;
    const struct opts *o = lab->o;
    unsigned k = (unsigned)(next_rand(&w->rng) % o->keys);
    unsigned pick = (unsigned)(next_rand(&w->rng) % 100);
    char key[KEY_MAX];
    char value[VALUE_MAX];
    uint64_t call;
    uint64_t ret;
    int rc;
    int status;

    snprintf(value, sizeof value, "%u-%" PRIu64, process_id(w), ++w->n_values);
    *wrote = pick >= 40 && pick < 85;
    if (pick < 40) {
        char *got = NULL;
        size_t got_len = 0;

        snprintf(key, sizeof key, "%sr/%" PRIu64 "/%u", o->prefix, gen, k);
        call = now_ns();
        rc = cd_client_get(c, key, strlen(key), 0, &got, &got_len, NULL);
        ret = now_ns();
        line_start(l, w, "get", key);
        if (rc == 0 || rc == CD_ENOTFOUND) {
            line_field(l, "result");
            if (rc == 0) {
                line_str(l, got, got_len);
                remember(lab, k, gen, got);
            } else {
                line_cstr(l, "null");
            }
            rc = 0;
        }
        free(got);
        status = classify(rc);
    } else if (pick < 65) {
        snprintf(key, sizeof key, "%sr/%" PRIu64 "/%u", o->prefix, gen, k);
        call = now_ns();
        rc = cd_client_put(c, key, strlen(key), value, strlen(value), NULL);
        ret = now_ns();
        line_start(l, w, "put", key);
        line_field(l, "value");
        line_str(l, value, strlen(value));
        status = classify(rc);
        if (status == OK) {
            remember(lab, k, gen, value);
        }
    } else if (pick < 85) {
        char expected[VALUE_MAX];
        int held = 0;

        snprintf(key, sizeof key, "%sr/%" PRIu64 "/%u", o->prefix, gen, k);
        expected_for(lab, k, gen, expected);
        call = now_ns();
        rc = cas(c, key, expected, value, &held);
        ret = now_ns();
        line_start(l, w, "cas", key);
        line_field(l, "expected");
        line_str(l, expected, strlen(expected));
        line_field(l, "value");
        line_str(l, value, strlen(value));
        status = classify(rc);
        if (status == OK) {
            line_field(l, "ok");
            line_cstr(l, held ? "true" : "false");
            if (held) {
                remember(lab, k, gen, value);
            }
        }
    } else {
        snprintf(key, sizeof key, "%sset/%s", o->prefix, value);
        call = now_ns();
        rc = cd_client_put(c, key, strlen(key), value, strlen(value), NULL);
        ret = now_ns();
        line_start(l, w, "add", key);
        line_field(l, "value");
        line_str(l, value, strlen(value));
        status = classify(rc);
    }
    line_end(l, call, ret, status, rc);
    return status;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct lab *lab = w->lab;
    const struct opts *o = lab->o;
    struct line l = {NULL, 0, 0, 0};
    struct cd_client *c = new_client(o, lab->eps, lab->n_eps);

    uint64_t period = o->rate != 0 ? 1000000000u / o->rate : 0;
    uint64_t due = now_ns();

    while (c != NULL && !atomic_load(&stop_flag)) {
        uint64_t n;
        int status;
        int wrote = 0;

        if (period != 0) {
            /* Paced: one operation per period, no catching up after an
             * operation that took longer (an outage is not a backlog). */
            uint64_t t = now_ns();
            if (due > t) {
                sleep_ms((unsigned)((due - t) / 1000000u));
            }
            due = (due > t ? due : t) + period;
        }

        if (lab->deadline_ns != 0 && now_ns() >= lab->deadline_ns) {
            break;
        }
        n = atomic_fetch_add(&lab->next_op, 1);
        if (o->max_ops != 0 && n >= o->max_ops) {
            break;
        }
        n = atomic_fetch_add(&lab->gen_ops, 1);
        status = run_op(w, c, n / o->rotate, &l, &wrote);
        out_line(&lab->out, &l);
        w->count[status]++;
        if (status == INFO && wrote) {
            /* An unknown write stays open to the end of its key's history
             * (its return is +infinity): each one multiplies the work of
             * that key's search.  Moving on to fresh keys after about
             * eight of them keeps every search small during an outage,
             * when nearly every write is unknown. */
            atomic_fetch_add(&lab->gen_ops, o->rotate / 8);
        }
        if (status == INFO) {
            /* This process may have an operation still in flight: it
             * never issues another one.  A new process, with a new client
             * (a new client id), takes over the thread. */
            w->incarnation++;
            cd_client_close(c);
            c = new_client(o, lab->eps, lab->n_eps);
        }
    }
    if (c == NULL) {
        w->lost_clients++;
    }
    cd_client_close(c);
    free(l.p);
    return NULL;
}

static int run_workload(const struct opts *o, char **eps, size_t n_eps)
{
    static struct lab lab; /* large (the seen table): not on the stack */
    struct worker *w = calloc(o->threads, sizeof(*w));
    unsigned long total[3] = {0, 0, 0};
    unsigned long lost_clients = 0;
    uint64_t start = now_ns();
    unsigned started = 0;
    int rc;

    if (w == NULL) {
        return -ENOMEM;
    }
    lab.o = o;
    lab.eps = eps;
    lab.n_eps = n_eps;
    lab.deadline_ns =
        o->duration_s != 0 ? start + (uint64_t)o->duration_s * 1000000000u : 0;
    atomic_init(&lab.next_op, 0);
    atomic_init(&lab.gen_ops, 0);
    pthread_mutex_init(&lab.seen_lock, NULL);
    rc = out_open(&lab.out, o->out);
    if (rc != 0) {
        fprintf(stderr, "lab_client: %s: %s\n", o->out, strerror(-rc));
        free(w);
        return rc;
    }
    for (unsigned i = 0; i < o->threads; i++) {
        w[i].lab = &lab;
        w[i].index = i;
        w[i].rng = o->seed * 0x100000001B3ull + i;
        if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
            atomic_store(&stop_flag, 1);
            rc = -EAGAIN;
            break;
        }
        started++;
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        for (int s = 0; s < 3; s++) {
            total[s] += w[i].count[s];
        }
        lost_clients += w[i].lost_clients;
    }
    if (out_close(&lab.out) != 0 && rc == 0) {
        rc = -EIO;
    }
    if (atomic_load(&lab.out.lost) != 0 || lost_clients != 0) {
        rc = rc != 0 ? rc : -EIO;
    }
    fprintf(stderr,
            "lab_client: %lu ops (ok %lu, fail %lu, info %lu) in %.1f s, "
            "%u threads; %lu lines lost, %lu clients not opened\n",
            total[OK] + total[FAIL] + total[INFO], total[OK], total[FAIL],
            total[INFO], (double)(now_ns() - start) / 1e9, o->threads,
            (unsigned long)atomic_load(&lab.out.lost), lost_clients);
    pthread_mutex_destroy(&lab.seen_lock);
    free(w);
    return rc;
}

/* --- final read ---------------------------------------------------------- */

/* One whole paged range read of prefix into fd; 0 or the error of the
 * first page that failed. */
static int read_all(struct cd_client *c,
                    const char *prefix,
                    int fd,
                    unsigned long *n_keys)
{
    char *start = NULL;
    size_t start_len = 0;
    struct line l = {NULL, 0, 0, 0};
    int rc = 0;
    int more = 1;

    *n_keys = 0;
    while (rc == 0 && more) {
        struct cd_msg req;
        struct cd_msg resp;

        memset(&req, 0, sizeof(req));
        req.type = CD_MSG_RANGE;
        req.u.range.prefix = (struct cd_buf){prefix, strlen(prefix)};
        req.u.range.start = (struct cd_buf){start, start_len};
        req.u.range.limit = RANGE_PAGE;
        rc = cd_client_call(c, &req, &resp);
        if (rc != 0) {
            break;
        }
        more = resp.u.range_resp.more;
        for (size_t i = 0; i < resp.u.range_resp.n_kvs; i++) {
            const struct cd_kv *kv = &resp.u.range_resp.kvs[i];

            line_cstr(&l, "{\"key\":");
            line_str(&l, kv->key.data, kv->key.len);
            line_field(&l, "value");
            line_str(&l, kv->value.data, kv->value.len);
            line_field(&l, "mod_rev");
            line_u64(&l, kv->mod_rev);
            line_cstr(&l, "}\n");
            (*n_keys)++;
        }
        if (more && resp.u.range_resp.n_kvs > 0) {
            /* The next page starts just after the last key: key + "\0". */
            const struct cd_kv *last =
                &resp.u.range_resp.kvs[resp.u.range_resp.n_kvs - 1];
            char *next = malloc(last->key.len + 1);

            if (next == NULL) {
                rc = -ENOMEM;
            } else {
                memcpy(next, last->key.data, last->key.len);
                next[last->key.len] = '\0';
                free(start);
                start = next;
                start_len = last->key.len + 1;
            }
        } else if (more) {
            rc = CD_EMALFORMED; /* "more" but no key to continue from */
        }
        codec_msg_free(&resp);
    }
    if (rc == 0 && l.failed) {
        rc = -ENOMEM;
    }
    for (size_t off = 0; rc == 0 && off < l.len;) {
        ssize_t n = write(fd, l.p + off, l.len - off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)n;
    }
    free(start);
    free(l.p);
    return rc;
}

static int final_read(const struct opts *o, char **eps, size_t n_eps)
{
    char tmp[4096];
    uint64_t deadline = now_ns() + (uint64_t)o->final_timeout_s * 1000000000u;
    unsigned long n_keys = 0;
    unsigned attempts = 0;
    int rc;

    if (snprintf(tmp, sizeof tmp, "%s.tmp", o->final_read) >= (int)sizeof tmp) {
        return -ENAMETOOLONG;
    }
    do {
        struct cd_client *c = new_client(o, eps, n_eps);
        int fd;

        if (c == NULL) {
            return -ENOMEM;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            rc = -errno;
            cd_client_close(c);
            break;
        }
        attempts++;
        rc = read_all(c, o->prefix, fd, &n_keys);
        cd_client_close(c);
        if (rc == 0 && fsync(fd) != 0) {
            rc = -errno;
        }
        if (close(fd) != 0 && rc == 0) {
            rc = -errno;
        }
        if (rc == 0) {
            rc = rename(tmp, o->final_read) == 0 ? 0 : -errno;
            break;
        }
        fprintf(stderr, "lab_client: final read attempt %u: %s\n", attempts,
                cd_errname(rc));
        sleep_ms(200);
    } while (now_ns() < deadline && !atomic_load(&stop_flag));
    if (rc != 0) {
        unlink(tmp);
        fprintf(stderr,
                "lab_client: final read of %s failed after %u tries: %s\n",
                o->prefix, attempts, cd_strerror(rc));
        return rc;
    }
    fprintf(stderr, "lab_client: final read: %lu keys under %s (%u tries)\n",
            n_keys, o->prefix, attempts);
    return 0;
}

/* --- child monitor ------------------------------------------------------- */

static int child_sample(clusterd_db *db, const char *key, struct line *l)
{
    struct clusterd_staleness st;
    int rc = clusterd_staleness(db, &st);

    if (rc == 0 && key != NULL) {
        char *v = NULL;
        size_t len = 0;

        rc = clusterd_get(db, key, strlen(key), &v, &len);
        free(v);
        if (rc == CLUSTERD_ENOTFOUND) {
            rc = 0; /* answered: the key is simply not there (yet) */
        }
    }
    if (rc == 0) {
        line_field(l, "revision");
        line_u64(l, st.revision);
        line_field(l, "age_ms");
        line_u64(l, st.age_ms);
        line_field(l, "ok");
        line_cstr(l, "true");
    }
    return rc;
}

static int child_monitor(const struct opts *o)
{
    struct out out;
    struct line l = {NULL, 0, 0, 0};
    clusterd_db *db = NULL;
    ino_t ino = 0;
    dev_t dev = 0;
    uint64_t start = now_ns();
    uint64_t deadline =
        o->duration_s != 0 ? start + (uint64_t)o->duration_s * 1000000000u : 0;
    unsigned long ok = 0;
    unsigned long failed = 0;
    int rc = out_open(&out, o->out);

    if (rc != 0) {
        fprintf(stderr, "lab_client: %s: %s\n", o->out, strerror(-rc));
        return rc;
    }
    while (!atomic_load(&stop_flag) && (deadline == 0 || now_ns() < deadline)) {
        struct stat sb;

        /* A new file under the same path (the child's data directory was
         * recreated): the old mapping would show the old file forever. */
        if (db != NULL && (stat(o->child_db, &sb) != 0 || sb.st_ino != ino ||
                           sb.st_dev != dev)) {
            clusterd_close(db);
            db = NULL;
        }
        rc = 0;
        if (db == NULL) {
            rc = clusterd_open(o->child_db, &db);
            if (rc == 0 && stat(o->child_db, &sb) == 0) {
                ino = sb.st_ino;
                dev = sb.st_dev;
            }
        }
        line_cstr(&l, "{\"t\":");
        line_u64(&l, now_ns());
        if (rc == 0) {
            rc = child_sample(db, o->child_key, &l);
        }
        if (rc != 0) {
            line_field(&l, "ok");
            line_cstr(&l, "false");
            line_field(&l, "error");
            line_str(&l, cd_errname(rc), strlen(cd_errname(rc)));
            failed++;
        } else {
            ok++;
        }
        line_cstr(&l, "}");
        out_line(&out, &l);
        sleep_ms(o->interval_ms);
    }
    clusterd_close(db);
    free(l.p);
    rc = out_close(&out);
    if (atomic_load(&out.lost) != 0 && rc == 0) {
        rc = -EIO;
    }
    fprintf(stderr, "lab_client: child monitor: %lu reads ok, %lu failed\n", ok,
            failed);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct sigaction sa;
    char **eps = NULL;
    size_t n_eps = 0;
    int rc;

    if (argc == 2 && strcmp(argv[1], "--now") == 0) {
        printf("%" PRIu64 "\n", now_ns());
        return 0;
    }
    if (parse_opts(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (o.child_db != NULL) {
        return child_monitor(&o) == 0 ? 0 : 1;
    }
    if (cd_client_parse_endpoints(o.endpoints, &eps, &n_eps) != 0) {
        fprintf(stderr, "lab_client: bad --endpoints %s\n", o.endpoints);
        return 2;
    }
    rc = o.final_read != NULL ? final_read(&o, eps, n_eps)
                              : run_workload(&o, eps, n_eps);
    cd_client_free_endpoints(eps, n_eps);
    return rc == 0 ? 0 : 1;
}
