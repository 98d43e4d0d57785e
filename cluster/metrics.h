/*
 * metrics.h - what a node tells a monitoring system, over HTTP.
 *
 * Each node (a parent, a child) may serve, on metrics_address only:
 *   GET /metrics   Prometheus text exposition format (version 0.0.4);
 *   GET /healthz   200 "ok" while the node's own work goes on (a parent:
 *                  its loop has refreshed the figures within
 *                  METRICS_STALE_MS), 503 otherwise;
 *   GET /readyz    200 when the node can serve (a parent: it knows a
 *                  leader and has applied nearly all it knows committed),
 *                  503 otherwise; the body says why;
 * anything else 404, a method other than GET or HEAD 405.  The full list
 * of series is in docs/operations.md ("Metrics").
 *
 * Three parts:
 *  - text helpers (struct mtext, histograms, the process_* series), used
 *    by the parent and by clusterd-child (agents/child_metrics.c);
 *  - a small HTTP server on libmicrohttpd (struct metrics_http): its own
 *    threads, one per connection (at most METRICS_HTTP_CONNS), each calling
 *    a handler that must never touch a libuv loop;
 *  - the parent's figures (struct metrics).  The loop thread owns the
 *    counters and histograms and updates them as things happen; on each
 *    housekeeping tick it publishes a struct metrics_state.  When a scrape
 *    waits (metrics_wanted), the loop also gathers the costlier figures
 *    (children by state) and renders the whole text, which it publishes
 *    under the mutex; the HTTP thread only copies it out.  A scrape waits
 *    for the next tick's text (at most METRICS_WAIT_MS, then it takes the
 *    last one), so the figures are at most one tick old.
 *
 * Threads: see each function.  Errors: CD_ECONFIG (a bad address), -errno.
 */
#ifndef CD_METRICS_H
#define CD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_STALE_MS 5000  /* /healthz: the loop refreshed within this */
#define METRICS_WAIT_MS 1000   /* a scrape waits this long for fresh text */
#define METRICS_READY_LAG 1000 /* /readyz: commit - applied at most this */
#define METRICS_HTTP_CONNS 16  /* concurrent HTTP connections */

/* --- text ----------------------------------------------------------------- */

/* A growing text buffer; after a failed allocation, failed is set and
 * further writes are dropped. */
struct mtext
{
    char *buf;
    size_t len, cap;
    int failed;
};

void mtext_printf(struct mtext *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "# HELP name help\n# TYPE name type\n". */
void mtext_family(struct mtext *t,
                  const char *name,
                  const char *type,
                  const char *help);
/* One whole gauge or counter family with a single unlabelled sample. */
void mtext_gauge(struct mtext *t,
                 const char *name,
                 const char *help,
                 double value);
void mtext_counter(struct mtext *t,
                   const char *name,
                   const char *help,
                   double value);
void mtext_free(struct mtext *t);
/* process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds, process_start_time_seconds.  Any thread. */
void mtext_process(struct mtext *t);
/* Is name a safe label value as it stands (no quote, backslash, newline)?
 * Check names (agents/health.h) always are. */
int mtext_label_ok(const char *v);

#define METRICS_HIST_MAX 16

/* A cumulative histogram; bounds are upper bounds, ascending ("+Inf" is
 * implicit).  Not thread-safe: one owner. */
struct metrics_hist
{
    const double *le;
    size_t n;
    uint64_t
        bucket[METRICS_HIST_MAX]; /* not cumulative: le[i-1] < v <= le[i] */
    uint64_t count;
    double sum;
};

void metrics_hist_init(struct metrics_hist *h, const double *le, size_t n);
void metrics_hist_observe(struct metrics_hist *h, double v);
void metrics_hist_write(struct mtext *t,
                        const char *name,
                        const char *help,
                        const struct metrics_hist *h);

/* --- HTTP ----------------------------------------------------------------- */

/* Is addr usable as metrics_address: "" (off), "HOST:PORT" or
 * "[IPV6]:PORT" with a port in 1..65535?  0 or CD_ECONFIG.  No I/O. */
int metrics_check_address(const char *addr);

/* Answer GET path: fill body, return the HTTP status (200, 404, 503).
 * Runs on one of the server's threads, maybe several at once. */
typedef unsigned (*metrics_handler)(void *arg,
                                    const char *path,
                                    struct mtext *body);

struct metrics_http;

/* Bind addr (HOST resolved once: the first address it gives), listen, and
 * serve from libmicrohttpd's threads.  Errors: CD_ECONFIG (bad address,
 * unresolvable host), -errno of socket/bind/listen, -EIO (the daemon did
 * not start). */
int metrics_http_start(const char *addr,
                       metrics_handler fn,
                       void *arg,
                       struct metrics_http **out);
/* Stop serving; returns once every HTTP thread has ended.  NULL-safe. */
void metrics_http_stop(struct metrics_http *h);

/* --- the parent ----------------------------------------------------------- */

enum metrics_child_state {
    METRICS_CHILD_FOLLOWING,
    METRICS_CHILD_DEGRADED,
    METRICS_CHILD_GONE,
    METRICS_CHILD_UNKNOWN,
    METRICS_CHILD_STATES
};

/* What the loop knows, published each tick. */
struct metrics_state
{
    uint64_t node_id;
    uint64_t term;
    uint64_t leader_id; /* 0: none known */
    int is_leader;      /* leader and ready to serve */
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t revision;
    unsigned connections;
    unsigned watchers;      /* every watch, children's streams included */
    unsigned child_streams; /* children's streams */
    /* Children: counted from the registry; their states are known to the
     * leader only (every count 0 elsewhere). */
    int children_known; /* the fields below were gathered for this tick */
    uint64_t children_registered;
    uint64_t children[METRICS_CHILD_STATES];
    /* Largest staleness by state, in ms (following, degraded, gone). */
    uint64_t staleness_max_ms[METRICS_CHILD_UNKNOWN];
    /* The store's identity (clusterd_info). */
    uint64_t cluster_id;
    uint64_t epoch;
    /* Backups: the last one recorded (/cluster/backup/last, the same on
     * every parent) and whether this parent is taking one. */
    int backup_recorded;
    int backup_last_ok;
    uint64_t backup_last_ms;    /* start of the last attempt */
    uint64_t backup_last_ok_ms; /* start of the last one that worked */
    uint32_t backup_failures;   /* in a row */
    uint64_t backup_last_bytes, backup_last_revision, backup_last_duration_ms;
    int backup_running;
};

struct metrics;

/* Loop thread.  No I/O.  -ENOMEM. */
int metrics_new(struct metrics **out);
/* Stops the HTTP server if running.  NULL-safe. */
void metrics_free(struct metrics *m);
/* Serve on addr (see metrics_http_start).  Loop thread. */
int metrics_start(struct metrics *m, const char *addr);
/* Stop serving (scrapes in progress are answered 503 at once); returns once
 * the HTTP threads have ended.  NULL-safe, idempotent.  Loop thread. */
void metrics_stop(struct metrics *m);

/* Loop thread; each is NULL-safe (metrics off). */
void metrics_observe_apply(struct metrics *m, double seconds);
void metrics_observe_batch(struct metrics *m, size_t ops);
void metrics_observe_snapshot(struct metrics *m,
                              uint64_t bytes,
                              double seconds,
                              int ok);
/* Does a scrape wait for text?  Then gather everything for the next
 * metrics_publish.  Loop thread. */
int metrics_wanted(struct metrics *m);
/* Publish st (and, when a scrape waits, the whole text).  Loop thread. */
void metrics_publish(struct metrics *m, const struct metrics_state *st);

/* Whether this node holds the virtual IP (clusterd_vip_held); 0 until
 * set.  Any thread.  NULL-safe. */
void metrics_set_vip(struct metrics *m, int held);

#endif
