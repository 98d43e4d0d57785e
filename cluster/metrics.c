/*
 * metrics.c - see metrics.h.
 */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h> /* isinf, isnan: macros, no libm */
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/log.h"

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- text ----------------------------------------------------------------- */

static void mtext_vprintf(struct mtext *t, const char *fmt, va_list ap)
{
    va_list ap2;
    if (t->failed) {
        return;
    }
    va_copy(ap2, ap);
    int n = vsnprintf(t->buf != NULL ? t->buf + t->len : NULL,
                      t->buf != NULL ? t->cap - t->len : 0, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        t->failed = 1;
        return;
    }
    if (t->buf == NULL || t->len + (size_t)n >= t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n) {
            cap *= 2;
        }
        char *p = realloc(t->buf, cap);
        if (p == NULL) {
            va_end(ap2);
            t->failed = 1;
            return;
        }
        t->buf = p;
        t->cap = cap;
        vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap2);
    }
    va_end(ap2);
    t->len += (size_t)n;
}

void mtext_printf(struct mtext *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mtext_vprintf(t, fmt, ap);
    va_end(ap);
}

void mtext_free(struct mtext *t)
{
    free(t->buf);
    memset(t, 0, sizeof *t);
}

/* Integers as integers, the rest to the microsecond, or 9 significant
 * digits when tiny. */
static const char *fmt_num(char *buf, size_t len, double v)
{
    if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else if (isnan(v)) {
        snprintf(buf, len, "NaN");
    } else if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v) {
        snprintf(buf, len, "%" PRId64, (int64_t)v);
    } else if ((v >= 0.001 && v < 1e15) || (v <= -0.001 && v > -1e15)) {
        /* Microseconds of a timestamp survive; trailing zeros go. */
        snprintf(buf, len, "%.6f", v);
        char *e = buf + strlen(buf);
        while (e > buf && e[-1] == '0') {
            *--e = '\0';
        }
        if (e > buf && e[-1] == '.') {
            *--e = '\0';
        }
    } else {
        snprintf(buf, len, "%.9g", v);
    }
    return buf;
}

void mtext_family(struct mtext *t,
                  const char *name,
                  const char *type,
                  const char *help)
{
    mtext_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void mtext_gauge(struct mtext *t,
                 const char *name,
                 const char *help,
                 double value)
{
    char num[40];
    mtext_family(t, name, "gauge", help);
    mtext_printf(t, "%s %s\n", name, fmt_num(num, sizeof num, value));
}

void mtext_counter(struct mtext *t,
                   const char *name,
                   const char *help,
                   double value)
{
    char num[40];
    mtext_family(t, name, "counter", help);
    mtext_printf(t, "%s %s\n", name, fmt_num(num, sizeof num, value));
}

int mtext_label_ok(const char *v)
{
    return strpbrk(v, "\"\\\n") == NULL;
}

/* Seconds since the epoch at which this process started (/proc). */
static double process_start_time(void)
{
    char buf[1024];
    double btime = 0, start_ticks = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(buf, sizeof buf, f) != NULL) {
        if (strncmp(buf, "btime ", 6) == 0) {
            btime = strtod(buf + 6, NULL);
            break;
        }
    }
    fclose(f);
    f = fopen("/proc/self/stat", "r");
    if (f == NULL) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* After the command name in parentheses: field 3 (state) onwards;
     * starttime is field 22. */
    const char *p = strrchr(buf, ')');
    for (int field = 2; p != NULL && field < 22; field++) {
        p = strchr(p + 1, ' ');
    }
    if (p == NULL) {
        return 0;
    }
    start_ticks = strtod(p + 1, NULL);
    long hz = sysconf(_SC_CLK_TCK);
    return btime + start_ticks / (double)(hz > 0 ? hz : 100);
}

void mtext_process(struct mtext *t)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu =
            (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
            ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
        mtext_counter(t, "process_cpu_seconds_total",
                      "User and system CPU time spent in seconds.", cpu);
    }
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        char line[128];
        char *end = NULL;
        unsigned long resident = 0;
        if (fgets(line, sizeof line, f) != NULL) {
            strtoul(line, &end, 10); /* size, then resident, in pages */
            resident = strtoul(end, NULL, 10);
        }
        if (resident > 0) {
            long page = sysconf(_SC_PAGESIZE);
            mtext_gauge(t, "process_resident_memory_bytes",
                        "Resident memory size in bytes.",
                        (double)resident * (double)(page > 0 ? page : 4096));
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        unsigned n = 0;
        const struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                n++;
            }
        }
        closedir(d);
        mtext_gauge(t, "process_open_fds", "Number of open file descriptors.",
                    n > 0 ? n - 1 : 0); /* less opendir's own */
    }
    double start = process_start_time();
    if (start > 0) {
        mtext_gauge(t, "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    start);
    }
}

/* --- histograms ----------------------------------------------------------- */

void metrics_hist_init(struct metrics_hist *h, const double *le, size_t n)
{
    memset(h, 0, sizeof *h);
    h->le = le;
    h->n = n < METRICS_HIST_MAX ? n : METRICS_HIST_MAX;
}

void metrics_hist_observe(struct metrics_hist *h, double v)
{
    size_t i = 0;
    while (i < h->n && v > h->le[i]) {
        i++;
    }
    if (i < h->n) {
        h->bucket[i]++;
    }
    h->count++;
    h->sum += v;
}

void metrics_hist_write(struct mtext *t,
                        const char *name,
                        const char *help,
                        const struct metrics_hist *h)
{
    char num[40];
    uint64_t cum = 0;
    mtext_family(t, name, "histogram", help);
    for (size_t i = 0; i < h->n; i++) {
        cum += h->bucket[i];
        mtext_printf(t, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name,
                     fmt_num(num, sizeof num, h->le[i]), cum);
    }
    mtext_printf(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
    mtext_printf(t, "%s_sum %s\n", name, fmt_num(num, sizeof num, h->sum));
    mtext_printf(t, "%s_count %" PRIu64 "\n", name, h->count);
}

/* --- HTTP ----------------------------------------------------------------- */

/* Split "HOST:PORT" or "[V6]:PORT".  0, or CD_ECONFIG. */
static int split_address(const char *addr,
                         char *host,
                         size_t host_len,
                         char *port,
                         size_t port_len)
{
    const char *h = addr, *colon;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':') {
            return CD_ECONFIG;
        }
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL) {
            return CD_ECONFIG;
        }
        hl = (size_t)(colon - addr);
        if (memchr(addr, ':', hl) != NULL) {
            return CD_ECONFIG; /* an IPv6 address needs brackets */
        }
    }
    if (hl == 0 || hl >= host_len || strlen(colon + 1) >= port_len) {
        return CD_ECONFIG;
    }
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 ||
        p == 0 || p > 65535) {
        return CD_ECONFIG;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, port_len, "%lu", p);
    return 0;
}

int metrics_check_address(const char *addr)
{
    char host[256], port[8];
    if (addr[0] == '\0') {
        return 0;
    }
    return split_address(addr, host, sizeof host, port, sizeof port);
}

struct metrics_http
{
    struct MHD_Daemon *daemon;
    metrics_handler fn;
    void *arg;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_warn("metrics", "http: %s", line);
}

static enum MHD_Result answer(struct MHD_Connection *conn,
                              unsigned status,
                              const char *type,
                              struct mtext *body)
{
    struct MHD_Response *r;
    if (body->failed) {
        mtext_free(body);
        static const char oom[] = "out of memory\n";
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        r = MHD_create_response_from_buffer(
            sizeof oom - 1, (void *)(uintptr_t)oom, MHD_RESPMEM_PERSISTENT);
    } else if (body->buf == NULL) {
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_buffer(body->len, body->buf,
                                            MHD_RESPMEM_MUST_FREE);
        if (r != NULL) {
            memset(body, 0, sizeof *body); /* the response owns it now */
        }
    }
    if (r == NULL) {
        mtext_free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls,
                                  struct MHD_Connection *conn,
                                  const char *url,
                                  const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size,
                                  void **req_cls)
{
    struct metrics_http *h = cls;
    struct mtext body = {0};
    (void)version;
    (void)upload_data;
    (void)req_cls;
    *upload_data_size = 0; /* a body, if any, is ignored */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        mtext_printf(&body, "method not allowed\n");
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                      "text/plain; charset=utf-8", &body);
    }
    unsigned status = h->fn(h->arg, url, &body);
    return answer(conn, status,
                  strcmp(url, "/metrics") == 0
                      ? "text/plain; version=0.0.4; charset=utf-8"
                      : "text/plain; charset=utf-8",
                  &body);
}

int metrics_http_start(const char *addr,
                       metrics_handler fn,
                       void *arg,
                       struct metrics_http **out)
{
    char host[256], port[8];
    struct addrinfo hints, *ai = NULL;
    if (split_address(addr, host, sizeof host, port, sizeof port) != 0) {
        log_error("metrics", "metrics_address %s: expected HOST:PORT", addr);
        return CD_ECONFIG;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g != 0 || ai == NULL) {
        log_error("metrics", "metrics_address %s: %s", addr, gai_strerror(g));
        return CD_ECONFIG;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            rc = -errno;
            close(fd);
        }
    }
    freeaddrinfo(ai);
    if (rc != 0) {
        log_error("metrics", "cannot listen on metrics_address %s: %s", addr,
                  strerror(-rc));
        return rc;
    }
    struct metrics_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        close(fd);
        return -ENOMEM;
    }
    h->fn = fn;
    h->arg = arg;
    /* A thread per connection: a scrape that waits for the loop's next
     * tick never delays /healthz.  poll(2), not select(2): a parent may
     * hold more than FD_SETSIZE descriptors. */
    h->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
            MHD_USE_POLL | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)METRICS_HTTP_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)10, MHD_OPTION_END);
    if (h->daemon == NULL) {
        /* Not closed here: libmicrohttpd closes a socket it was given on
         * its failure paths, and a second close could hit a descriptor
         * another thread just opened. */
        log_error("metrics", "cannot start the HTTP server on %s", addr);
        free(h);
        return -EIO;
    }
    *out = h;
    return 0;
}

void metrics_http_stop(struct metrics_http *h)
{
    if (h == NULL) {
        return;
    }
    MHD_stop_daemon(h->daemon); /* joins its threads, closes the socket */
    free(h);
}

/* --- the parent ----------------------------------------------------------- */

static const double apply_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                  0.025,  0.05,  0.1,    0.25,  0.5,
                                  1,      2.5,   5,      10};
static const double batch_le[] = {1,  2,   4,   8,   16,   32,
                                  64, 128, 256, 512, 1024, 4096};

static const char *const state_name[METRICS_CHILD_STATES] = {
    "following", "degraded", "gone", "unknown"};

struct metrics
{
    /* The loop thread's. */
    struct metrics_hist apply, batch;
    uint64_t snapshots, snapshot_failures, snapshot_bytes;
    double snapshot_seconds;
    struct metrics_http *http;
    /* Any thread's. */
    _Atomic int vip;
    /* Under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* CLOCK_MONOTONIC: a new text is out, or stop */
    int wanted;          /* a scrape waits for text */
    int stopping;
    uint64_t text_seq;
    char *text;
    size_t text_len;
    uint64_t published_ms; /* monotonic; 0: never */
    struct metrics_state st;
};

int metrics_new(struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof *m);
    pthread_condattr_t ca;
    if (m == NULL) {
        return -ENOMEM;
    }
    metrics_hist_init(&m->apply, apply_le, sizeof apply_le / sizeof *apply_le);
    metrics_hist_init(&m->batch, batch_le, sizeof batch_le / sizeof *batch_le);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = m;
    return 0;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL) {
        return;
    }
    metrics_stop(m);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->mu);
    free(m->text);
    free(m);
}

void metrics_observe_apply(struct metrics *m, double seconds)
{
    if (m != NULL) {
        metrics_hist_observe(&m->apply, seconds);
    }
}

void metrics_observe_batch(struct metrics *m, size_t ops)
{
    if (m != NULL) {
        metrics_hist_observe(&m->batch, (double)ops);
    }
}

void metrics_observe_snapshot(struct metrics *m,
                              uint64_t bytes,
                              double seconds,
                              int ok)
{
    if (m == NULL) {
        return;
    }
    if (!ok) {
        m->snapshot_failures++;
        return;
    }
    m->snapshots++;
    m->snapshot_bytes = bytes;
    m->snapshot_seconds = seconds;
}

void metrics_set_vip(struct metrics *m, int held)
{
    if (m != NULL) {
        atomic_store(&m->vip, held ? 1 : 0);
    }
}

int metrics_wanted(struct metrics *m)
{
    if (m == NULL) {
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    int w = m->wanted;
    pthread_mutex_unlock(&m->mu);
    return w;
}

static void gauge_u64(struct mtext *t,
                      const char *name,
                      const char *help,
                      uint64_t v)
{
    mtext_family(t, name, "gauge", help);
    mtext_printf(t, "%s %" PRIu64 "\n", name, v);
}

static void render(struct metrics *m,
                   const struct metrics_state *st,
                   struct mtext *t)
{
    gauge_u64(t, "clusterd_node_id", "This parent's Raft id.", st->node_id);
    gauge_u64(t, "clusterd_raft_term", "Current Raft term.", st->term);
    gauge_u64(t, "clusterd_is_leader",
              "1 if this parent is the leader and serves writes, else 0.",
              (uint64_t)(st->is_leader != 0));
    gauge_u64(t, "clusterd_leader_id",
              "Raft id of the leader this parent knows (0: none).",
              st->leader_id);
    gauge_u64(t, "clusterd_raft_commit_index",
              "Highest Raft index known to be committed.", st->commit_index);
    gauge_u64(t, "clusterd_raft_applied_index",
              "Highest Raft index applied to the store.", st->applied_index);
    gauge_u64(t, "clusterd_revision", "Store revision after the last apply.",
              st->revision);
    gauge_u64(t, "clusterd_connections", "Open API connections.",
              st->connections);
    gauge_u64(t, "clusterd_watchers",
              "Watches served by this parent, children's streams included.",
              st->watchers);
    gauge_u64(t, "clusterd_child_streams",
              "Children's change streams served by this parent.",
              st->child_streams);
    gauge_u64(t, "clusterd_children_registered", "Children in the registry.",
              st->children_registered);
    mtext_family(t, "clusterd_children", "gauge",
                 "Registered children by state, as the leader sees them "
                 "(0 on other parents).");
    for (int i = 0; i < METRICS_CHILD_STATES; i++) {
        mtext_printf(t, "clusterd_children{state=\"%s\"} %" PRIu64 "\n",
                     state_name[i], st->children[i]);
    }
    mtext_family(t, "clusterd_children_staleness_max_seconds", "gauge",
                 "Largest staleness of the children in a state (the leader's "
                 "view: reported staleness plus the report's age; 0 on other "
                 "parents).");
    for (int i = 0; i < METRICS_CHILD_UNKNOWN; i++) {
        char num[40];
        mtext_printf(
            t, "clusterd_children_staleness_max_seconds{state=\"%s\"} %s\n",
            state_name[i],
            fmt_num(num, sizeof num, (double)st->staleness_max_ms[i] / 1000));
    }
    gauge_u64(t, "clusterd_vip_held",
              "1 if this parent holds the virtual IP, else 0.",
              (uint64_t)atomic_load(&m->vip));
    metrics_hist_write(t, "clusterd_apply_latency_seconds",
                       "From proposal to apply of each Raft entry of client "
                       "writes, on the leader.",
                       &m->apply);
    metrics_hist_write(t, "clusterd_write_batch_size",
                       "Writes per Raft entry (one entry per loop turn).",
                       &m->batch);
    mtext_counter(t, "clusterd_snapshots_total",
                  "Snapshots of the store this parent took and wrote.",
                  (double)m->snapshots);
    mtext_counter(t, "clusterd_snapshot_failures_total",
                  "Snapshots that failed.", (double)m->snapshot_failures);
    mtext_gauge(t, "clusterd_snapshot_last_bytes",
                "Size of the last snapshot taken.", (double)m->snapshot_bytes);
    mtext_gauge(t, "clusterd_snapshot_last_duration_seconds",
                "Time the last snapshot took, copy and write.",
                m->snapshot_seconds);
    mtext_family(t, "clusterd_info", "gauge",
                 "The cluster id and the history epoch of this node's store "
                 "(the epoch changes at each restore from a backup and each "
                 "forced new cluster).");
    mtext_printf(t,
                 "clusterd_info{cluster_id=\"%016" PRIx64
                 "\",epoch=\"%016" PRIx64 "\"} 1\n",
                 st->cluster_id, st->epoch);
    gauge_u64(t, "clusterd_backup_last_attempt_timestamp_seconds",
              "Start of the last scheduled or requested backup, any leader "
              "(0: none yet).",
              st->backup_last_ms / 1000);
    gauge_u64(t, "clusterd_backup_last_success_timestamp_seconds",
              "Start of the last backup that was written and checked "
              "(0: none yet).",
              st->backup_last_ok_ms / 1000);
    gauge_u64(t, "clusterd_backup_last_ok",
              "1 if the last backup attempt worked, else 0.",
              (uint64_t)(st->backup_recorded && st->backup_last_ok));
    gauge_u64(t, "clusterd_backup_consecutive_failures",
              "Backup attempts that failed in a row.", st->backup_failures);
    gauge_u64(t, "clusterd_backup_last_bytes",
              "Size of the last backup that worked.", st->backup_last_bytes);
    gauge_u64(t, "clusterd_backup_last_revision",
              "Store revision in the last backup that worked.",
              st->backup_last_revision);
    mtext_gauge(t, "clusterd_backup_last_duration_seconds",
                "Time the last backup that worked took (copy, sync, check).",
                (double)st->backup_last_duration_ms / 1000);
    gauge_u64(t, "clusterd_backup_running",
              "1 while this parent takes a backup.",
              (uint64_t)(st->backup_running != 0));
}

void metrics_publish(struct metrics *m, const struct metrics_state *st)
{
    struct mtext t = {0};
    if (m == NULL) {
        return;
    }
    if (st->children_known) {
        render(m, st, &t);
        if (t.failed) {
            mtext_free(&t);
        }
    }
    pthread_mutex_lock(&m->mu);
    m->st = *st;
    m->published_ms = mono_ms();
    char *old = NULL;
    if (t.buf != NULL) {
        old = m->text;
        m->text = t.buf;
        m->text_len = t.len;
        m->text_seq++;
        m->wanted = 0;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->mu);
    free(old);
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static unsigned serve_metrics(struct metrics *m, struct mtext *body)
{
    struct timespec until;
    deadline_in(&until, METRICS_WAIT_MS);
    pthread_mutex_lock(&m->mu);
    if (!m->stopping) {
        uint64_t want = m->text_seq + 1;
        m->wanted = 1;
        while (!m->stopping && m->text_seq < want) {
            if (pthread_cond_timedwait(&m->cond, &m->mu, &until) == ETIMEDOUT) {
                break; /* the loop is busy or stuck: the last text */
            }
        }
    }
    if (m->stopping || m->text == NULL) {
        pthread_mutex_unlock(&m->mu);
        mtext_printf(body, "%s\n", m->stopping ? "stopping" : "no figures yet");
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    mtext_printf(body, "%.*s", (int)m->text_len, m->text);
    pthread_mutex_unlock(&m->mu);
    mtext_process(body);
    return MHD_HTTP_OK;
}

static unsigned parent_handler(void *arg, const char *path, struct mtext *body)
{
    struct metrics *m = arg;
    if (strcmp(path, "/metrics") == 0) {
        return serve_metrics(m, body);
    }
    if (strcmp(path, "/healthz") != 0 && strcmp(path, "/readyz") != 0) {
        mtext_printf(body, "not found; try /metrics, /healthz or /readyz\n");
        return MHD_HTTP_NOT_FOUND;
    }
    pthread_mutex_lock(&m->mu);
    uint64_t published = m->published_ms;
    int stopping = m->stopping;
    struct metrics_state st = m->st;
    pthread_mutex_unlock(&m->mu);
    uint64_t age = published != 0 ? mono_ms() - published : 0;
    if (stopping || published == 0 || age > METRICS_STALE_MS) {
        if (stopping || published == 0) {
            mtext_printf(body, "%s\n", stopping ? "stopping" : "starting");
        } else {
            mtext_printf(
                body, "stalled: the loop last refreshed %" PRIu64 " ms ago\n",
                age);
        }
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    if (strcmp(path, "/healthz") == 0) {
        mtext_printf(body, "ok\n");
        return MHD_HTTP_OK;
    }
    if (st.leader_id == 0) {
        mtext_printf(body, "not ready: no leader known (term %" PRIu64 ")\n",
                     st.term);
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    uint64_t lag = st.commit_index > st.applied_index
                       ? st.commit_index - st.applied_index
                       : 0;
    int ready = lag <= METRICS_READY_LAG;
    mtext_printf(body,
                 "%s: leader %" PRIu64 ", applied %" PRIu64 " of %" PRIu64
                 " committed, revision %" PRIu64 "\n",
                 ready ? "ready" : "not ready (catching up)", st.leader_id,
                 st.applied_index, st.commit_index, st.revision);
    return ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
}

int metrics_start(struct metrics *m, const char *addr)
{
    return metrics_http_start(addr, parent_handler, m, &m->http);
}

void metrics_stop(struct metrics *m)
{
    if (m == NULL) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->stopping = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->mu);
    metrics_http_stop(m->http);
    m->http = NULL;
}
