/*
 * test_metrics.c - /metrics, /healthz and /readyz of real clusterd parents
 * and of a clusterd-child, scraped over plain TCP (HTTP/1.0), as
 * Prometheus or a load balancer would:
 *
 *   - three parents: every series is there with a sane value; one leader
 *     (clusterd_is_leader 1, the others 0, every node names it); writes
 *     show in the apply latency and batch size histograms and, past
 *     snapshot_threshold, in the snapshot series; /healthz and /readyz
 *     answer 200, an unknown path 404; SIGTERM still stops cleanly;
 *   - a child with metrics_address: its own series (revision, state,
 *     services), and the leader's children-by-state shows it following;
 *   - a bad metrics_address is refused at start, a taken port stops the
 *     start with a clear message.
 *
 * Ports: the harness takes a block of 200 from its base (raft +1.., API
 * +101..); metrics use +150.. of the same block, checked free first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "lib/err.h"

#define N_PARENTS 3
#define METRICS_OFFSET 150 /* from the harness's base port */
#define EXTRA_METRICS 9    /* index of the metrics flag in the extras */

struct fx
{
    struct harness h;
    int mport[N_PARENTS];
    char mflag[N_PARENTS][64];
    pid_t child_pid;
    char child_dir[200];
    char child_log[220];
    int child_port;
};

/* Wait (bounded) for a process of ours to exit; its wait status. */
static int wait_exit(pid_t pid, int sig, unsigned timeout_ms)
{
    return harness_reap(pid, sig, timeout_ms);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    *state = f;
    return f == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->child_pid > 0) {
        wait_exit(f->child_pid, SIGKILL, 10000);
    }
    harness_destroy(&f->h);
    free(f);
    return 0;
}

/* --- HTTP ---------------------------------------------------------------- */

/* GET path from 127.0.0.1:port with HTTP/1.0; the status (or -errno) and
 * the body (malloc'd, NUL-terminated) in *body. */
static int http_get(int port, const char *path, char **body)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {5, 0};
    char req[256];
    *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -EIO;
    }
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            char *p = realloc(buf, cap);
            assert_non_null(p);
            buf = p;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int status = -EPROTO;
    const char *sp = strchr(buf, ' ');
    if (strncmp(buf, "HTTP/1.", 7) == 0 && sp != NULL) {
        status = (int)strtol(sp + 1, NULL, 10);
    }
    const char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b != NULL ? b + 4 : "");
    free(buf);
    return status;
}

/* The value of the sample named series exactly (with its labels, if any). */
static int sample(const char *text, const char *series, double *out)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            *out = strtod(p + n + 1, NULL);
            return 0;
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return -1;
}

static double must_sample(const char *text, const char *series)
{
    double v = -1;
    if (sample(text, series, &v) != 0) {
        fail_msg("series %s missing from:\n%s", series, text);
    }
    return v;
}

/* /metrics of a port, asserting 200. */
static char *scrape(int port)
{
    char *body = NULL;
    int st = http_get(port, "/metrics", &body);
    if (st != 200) {
        fail_msg("GET :%d/metrics: status %d: %s", port, st,
                 body != NULL ? body : "");
    }
    return body;
}

static void expect_status(int port, const char *path, int want)
{
    char *body = NULL;
    int st = http_get(port, path, &body);
    if (st != want) {
        fail_msg("GET :%d%s: expected %d, got %d: %s", port, path, want, st,
                 body != NULL ? body : "");
    }
    free(body);
}

/* Poll port's /metrics until series == want (within timeout_ms). */
static int wait_sample(int port,
                       const char *series,
                       double want,
                       unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    do {
        char *body = NULL;
        double v;
        int st = http_get(port, "/metrics", &body);
        int ok = st == 200 && sample(body, series, &v) == 0 && v == want;
        free(body);
        if (ok) {
            return 0;
        }
        harness_sleep_ms(100);
    } while (harness_now_ms() < deadline);
    return CD_ETIMEOUT;
}

/* --- the cluster -----------------------------------------------------------
 */

static const char *const parent_series[] = {
    "clusterd_node_id",
    "clusterd_raft_term",
    "clusterd_is_leader",
    "clusterd_leader_id",
    "clusterd_raft_commit_index",
    "clusterd_raft_applied_index",
    "clusterd_revision",
    "clusterd_connections",
    "clusterd_watchers",
    "clusterd_child_streams",
    "clusterd_children_registered",
    "clusterd_children{state=\"following\"}",
    "clusterd_children{state=\"degraded\"}",
    "clusterd_children{state=\"gone\"}",
    "clusterd_children{state=\"unknown\"}",
    "clusterd_children_staleness_max_seconds{state=\"following\"}",
    "clusterd_children_staleness_max_seconds{state=\"degraded\"}",
    "clusterd_children_staleness_max_seconds{state=\"gone\"}",
    "clusterd_vip_held",
    "clusterd_apply_latency_seconds_bucket{le=\"+Inf\"}",
    "clusterd_apply_latency_seconds_sum",
    "clusterd_apply_latency_seconds_count",
    "clusterd_write_batch_size_bucket{le=\"1\"}",
    "clusterd_write_batch_size_bucket{le=\"+Inf\"}",
    "clusterd_write_batch_size_sum",
    "clusterd_write_batch_size_count",
    "clusterd_snapshots_total",
    "clusterd_snapshot_failures_total",
    "clusterd_snapshot_last_bytes",
    "clusterd_snapshot_last_duration_seconds",
    "clusterd_backup_last_attempt_timestamp_seconds",
    "clusterd_backup_last_success_timestamp_seconds",
    "clusterd_backup_last_ok",
    "clusterd_backup_consecutive_failures",
    "clusterd_backup_last_bytes",
    "clusterd_backup_last_revision",
    "clusterd_backup_last_duration_seconds",
    "clusterd_backup_running",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    NULL,
};

/* Three parents formed by join, each with its own metrics_address. */
static void form(struct fx *f)
{
    struct harness *h = &f->h;
    static const char *flags[] = {"--profile", "fast",
                                  "--set",     "snapshot_threshold=64",
                                  "--set",     "snapshot_trailing=16",
                                  "--set",     "history_revisions=200",
                                  "--set",     "metrics_address=set-per-node",
                                  NULL};
    check_rc(harness_init(h, N_PARENTS, flags), 0);
    assert_string_equal(h->extra[EXTRA_METRICS], flags[EXTRA_METRICS]);
    int next = h->port + METRICS_OFFSET;
    for (int i = 0; i < N_PARENTS; i++) {
        /* The block was free when the harness chose it; an outgoing
         * connection may have taken a port of it since. */
        while (!harness_port_free(next) && next < h->port + 199) {
            next++;
        }
        f->mport[i] = next++;
        assert_true(harness_port_free(f->mport[i]));
        snprintf(f->mflag[i], sizeof f->mflag[i],
                 "metrics_address=127.0.0.1:%d", f->mport[i]);
    }
    while (!harness_port_free(next) && next < h->port + 199) {
        next++;
    }
    f->child_port = next;
    assert_true(harness_port_free(f->child_port));
    snprintf(f->child_dir, sizeof f->child_dir, "%s/c1", h->base);
    snprintf(f->child_log, sizeof f->child_log, "%s/c1.log", h->base);
    for (int i = 0; i < N_PARENTS; i++) {
        /* The extras are read when a node starts: this node's port. */
        h->extra[EXTRA_METRICS] = f->mflag[i];
        check_rc(harness_start(h, i, i == 0 ? H_BOOTSTRAP : H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, N_PARENTS, 30000), 0);
    h->formed = 1;
}

/* The node whose /metrics says clusterd_is_leader 1 once every node names
 * the same leader; -1 if that does not happen within timeout_ms. */
static int metrics_leader(struct fx *f, unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    do {
        int leader = -1, leaders = 0, agree = 1;
        double named = -1;
        for (int i = 0; i < N_PARENTS; i++) {
            char *body = NULL;
            double is = 0, id = 0, lid = 0;
            if (http_get(f->mport[i], "/metrics", &body) != 200 ||
                sample(body, "clusterd_is_leader", &is) != 0 ||
                sample(body, "clusterd_node_id", &id) != 0 ||
                sample(body, "clusterd_leader_id", &lid) != 0) {
                agree = 0;
            } else {
                if (is == 1) {
                    leader = i;
                    leaders++;
                    agree = agree && lid == id;
                }
                agree = agree && lid != 0 && (named < 0 || named == lid);
                named = lid;
            }
            free(body);
        }
        if (agree && leaders == 1) {
            return leader;
        }
        harness_sleep_ms(100);
    } while (harness_now_ms() < deadline);
    return -1;
}

static void put_n(struct fx *f, int n)
{
    struct cd_client *c = harness_client(&f->h, 0, 15000);
    assert_non_null(c);
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "/metrics-test/%d", i);
        check_rc(cd_client_put(c, key, strlen(key), "v", 1, NULL), 0);
    }
    cd_client_close(c);
}

/* SIGTERM every parent: each stops cleanly (exit 0) with metrics on. */
static void stop_parents(struct fx *f)
{
    for (int i = 0; i < N_PARENTS; i++) {
        int st = harness_stop(&f->h, i, SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fail_msg("parent %d: wait status 0x%x after SIGTERM (log %s)", i,
                     (unsigned)st, f->h.node[i].log);
        }
        assert_false(harness_log_has(&f->h, i, "Sanitizer"));
    }
}

static void test_parent_metrics(void **state)
{
    struct fx *f = *state;
    form(f);
    int leader = metrics_leader(f, 15000);
    assert_true(leader >= 0);
    assert_int_equal(leader, harness_leader(&f->h, 5000));

    for (int i = 0; i < N_PARENTS; i++) {
        char *m = scrape(f->mport[i]);
        for (int k = 0; parent_series[k] != NULL; k++) {
            must_sample(m, parent_series[k]);
        }
        /* Exposition format: a HELP and a TYPE for the families. */
        assert_non_null(strstr(m, "# TYPE clusterd_raft_term gauge\n"));
        assert_non_null(
            strstr(m, "# TYPE clusterd_apply_latency_seconds histogram\n"));
        assert_non_null(strstr(m, "# TYPE clusterd_snapshots_total counter\n"));
        /* The store's identity as labels: the same on every parent. */
        assert_non_null(strstr(m, "\nclusterd_info{cluster_id=\""));
        assert_non_null(strstr(m, "\",epoch=\"0000000000000000\"} 1\n"));
        assert_true(must_sample(m, "clusterd_raft_term") >= 1);
        assert_true(must_sample(m, "clusterd_node_id") >= 1);
        assert_true(must_sample(m, "clusterd_is_leader") == (i == leader));
        double commit = must_sample(m, "clusterd_raft_commit_index");
        double applied = must_sample(m, "clusterd_raft_applied_index");
        assert_true(applied >= 1 && commit >= applied);
        assert_true(must_sample(m, "clusterd_revision") >= 1);
        assert_true(must_sample(m, "clusterd_vip_held") == 0);
        assert_true(must_sample(m, "clusterd_children_registered") == 0);
        assert_true(must_sample(m, "process_resident_memory_bytes") > 0);
        assert_true(must_sample(m, "process_open_fds") > 0);
        assert_true(must_sample(m, "process_start_time_seconds") > 1e9);
        free(m);
        expect_status(f->mport[i], "/healthz", 200);
        expect_status(f->mport[i], "/readyz", 200);
        expect_status(f->mport[i], "/nope", 404);
        expect_status(f->mport[i], "/metrics/x", 404);
    }

    /* Writes: 100 entries, past snapshot_threshold (64). */
    put_n(f, 100);
    char *m = scrape(f->mport[leader]);
    double count = must_sample(m, "clusterd_apply_latency_seconds_count");
    assert_true(count >= 100);
    assert_true(must_sample(m, "clusterd_apply_latency_seconds_sum") > 0);
    assert_true(
        must_sample(m, "clusterd_apply_latency_seconds_bucket{le=\"+Inf\"}") ==
        count);
    double batches = must_sample(m, "clusterd_write_batch_size_count");
    assert_true(batches >= 1);
    assert_true(must_sample(m, "clusterd_write_batch_size_sum") >= 100);
    assert_true(
        must_sample(m, "clusterd_write_batch_size_bucket{le=\"+Inf\"}") ==
        batches);
    free(m);
    /* Followers propose nothing: their histograms stay empty. */
    m = scrape(f->mport[(leader + 1) % N_PARENTS]);
    assert_true(must_sample(m, "clusterd_apply_latency_seconds_count") == 0);
    free(m);

    /* The leader snapshots (followers may decline for a while). */
    uint64_t deadline = harness_now_ms() + 15000;
    double snaps = 0;
    do {
        m = scrape(f->mport[leader]);
        snaps = must_sample(m, "clusterd_snapshots_total");
        if (snaps >= 1) {
            assert_true(must_sample(m, "clusterd_snapshot_last_bytes") > 0);
            assert_true(
                must_sample(m, "clusterd_snapshot_last_duration_seconds") > 0);
        }
        free(m);
        if (snaps < 1) {
            harness_sleep_ms(100);
        }
    } while (snaps < 1 && harness_now_ms() < deadline);
    assert_true(snaps >= 1);

    /* Every node ends at the same revision, and says so. */
    m = scrape(f->mport[leader]);
    double rev = must_sample(m, "clusterd_revision");
    free(m);
    for (int i = 0; i < N_PARENTS; i++) {
        check_rc(wait_sample(f->mport[i], "clusterd_revision", rev, 10000), 0);
    }
    stop_parents(f);
    /* Nobody listens any more. */
    char *body = NULL;
    assert_true(http_get(f->mport[0], "/healthz", &body) < 0);
    free(body);
}

/* Start clusterd-child with its own metrics_address (joins with token). */
static void child_start(struct fx *f, const char *token)
{
    struct harness *h = &f->h;
    char endpoints[256], mflag[64], child_bin[4300];
    snprintf(child_bin, sizeof child_bin, "%s-child", h->bin);
    snprintf(endpoints, sizeof endpoints, "%s,%s,%s", h->node[0].api,
             h->node[1].api, h->node[2].api);
    snprintf(mflag, sizeof mflag, "metrics_address=127.0.0.1:%d",
             f->child_port);
    const char *argv[] = {child_bin,
                          "--data",
                          f->child_dir,
                          "--endpoints",
                          endpoints,
                          "--token",
                          token,
                          "--set",
                          "report_interval_ms=300",
                          "--set",
                          "check=self process-name clusterd-child",
                          "--set",
                          "check=nothing tcp 127.0.0.1:1",
                          "--set",
                          mflag,
                          NULL};
    f->child_pid = harness_spawn(argv, f->child_log, NULL);
    assert_true(f->child_pid > 0);
}

static int new_token(struct fx *f, char *tok, size_t len)
{
    return harness_token(&f->h, tok, len);
}

static void test_child_metrics(void **state)
{
    struct fx *f = *state;
    char token[64];
    form(f);
    int leader = metrics_leader(f, 15000);
    assert_true(leader >= 0);
    put_n(f, 5);
    check_rc(new_token(f, token, sizeof token), 0);
    child_start(f, token);

    /* The child follows, and says so on its own /metrics. */
    check_rc(wait_sample(f->child_port, "clusterd_child_state", 1, 20000), 0);
    check_rc(wait_sample(f->child_port,
                         "clusterd_child_service_up{name=\"self\"}", 1, 10000),
             0);
    char *m = scrape(f->mport[leader]);
    double rev = must_sample(m, "clusterd_revision");
    free(m);
    check_rc(wait_sample(f->child_port, "clusterd_child_revision", rev, 10000),
             0);
    m = scrape(f->child_port);
    assert_true(must_sample(m, "clusterd_child_id") >= 1);
    assert_true(must_sample(m, "clusterd_child_staleness_seconds") == 0);
    assert_true(
        must_sample(m, "clusterd_child_last_contact_timestamp_seconds") > 1e9);
    assert_true(must_sample(m, "clusterd_child_service_up{name=\"nothing\"}") ==
                0);
    assert_true(must_sample(m, "clusterd_child_services{state=\"up\"}") == 1);
    assert_true(must_sample(m, "clusterd_child_services{state=\"down\"}") == 1);
    assert_true(must_sample(m, "process_open_fds") > 0);
    free(m);
    expect_status(f->child_port, "/healthz", 200);
    expect_status(f->child_port, "/readyz", 200);
    expect_status(f->child_port, "/nope", 404);

    /* The leader sees it following (from its reports) ... */
    check_rc(wait_sample(f->mport[leader],
                         "clusterd_children{state=\"following\"}", 1, 15000),
             0);
    m = scrape(f->mport[leader]);
    assert_true(must_sample(m, "clusterd_children_registered") == 1);
    assert_true(must_sample(m, "clusterd_children{state=\"degraded\"}") == 0);
    assert_true(must_sample(m, "clusterd_children{state=\"gone\"}") == 0);
    assert_true(must_sample(m, "clusterd_children{state=\"unknown\"}") == 0);
    assert_true(must_sample(m,
                            "clusterd_children_staleness_max_seconds{state="
                            "\"following\"}") == 0);
    free(m);
    /* ... one parent serves its stream; the others know it registered. */
    double streams = 0, watchers = 0;
    for (int i = 0; i < N_PARENTS; i++) {
        m = scrape(f->mport[i]);
        streams += must_sample(m, "clusterd_child_streams");
        watchers += must_sample(m, "clusterd_watchers");
        assert_true(must_sample(m, "clusterd_children_registered") == 1);
        if (i != leader) {
            assert_true(
                must_sample(m, "clusterd_children{state=\"following\"}") == 0);
        }
        free(m);
    }
    assert_true(streams == 1);
    assert_true(watchers >= 1);

    /* The child stops cleanly with its HTTP server running. */
    int st = wait_exit(f->child_pid, SIGTERM, 10000);
    f->child_pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail_msg("child: wait status 0x%x after SIGTERM (log %s)", (unsigned)st,
                 f->child_log);
    }
    stop_parents(f);
}

/* Run clusterd with args to its end (bounded); its wait status. */
static int run_clusterd(struct fx *f, const char *log, const char *const *args)
{
    const char *argv[16];
    int n = 0;
    argv[n++] = f->h.bin;
    for (int i = 0; args[i] != NULL && n < 15; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(f->h.bin, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    return wait_exit(pid, 0, 20000);
}

static int file_has(const char *path, const char *needle)
{
    char buf[8192];
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void test_metrics_address_refused(void **state)
{
    struct fx *f = *state;
    struct harness *h = &f->h;
    char log[160], dir[160], raft[32], api[32], maddr[64];
    check_rc(harness_init(h, 1, NULL), 0);
    snprintf(log, sizeof log, "%s/bad.log", h->base);
    snprintf(dir, sizeof dir, "%s/bad", h->base);
    snprintf(raft, sizeof raft, "127.0.0.1:%d", h->port + 1);
    snprintf(api, sizeof api, "127.0.0.1:%d", h->port + 101);

    /* Not host:port: refused before anything starts. */
    const char *const bad[] = {"--data",      dir,     "--raft",
                               raft,          "--api", api,
                               "--bootstrap", "--set", "metrics_address=9100",
                               NULL};
    int st = run_clusterd(f, log, bad);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    assert_true(file_has(log, "metrics_address"));

    /* A port in use: the start fails and says why. */
    int port = h->port + METRICS_OFFSET;
    while (!harness_port_free(port) && port < h->port + 199) {
        port++;
    }
    assert_true(harness_port_free(port));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    snprintf(maddr, sizeof maddr, "metrics_address=127.0.0.1:%d", port);
    const char *const taken[] = {"--data", dir, "--raft",      raft,
                                 "--api",  api, "--bootstrap", "--set",
                                 maddr,    NULL};
    st = run_clusterd(f, log, taken);
    close(fd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    assert_true(file_has(log, "cannot listen on metrics_address"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parent_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_address_refused, setup,
                                        teardown),
    };
    const char *filter = getenv("CD_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
