/*
 * bench_cluster.c - load and failover probes for a running clusterd
 * cluster, through the client library (cluster/client.h).
 *
 *   bench_cluster put --endpoints E --clients N --total T
 *                     [--max-seconds S] [--keys K] [--key-size B]
 *                     [--value-size B] [--trace FILE]
 *   bench_cluster wait --endpoints E [--voters V] [--timeout-s S]
 *   bench_cluster failover --endpoints E --pids P1,P2,.. [--probe-ms MS]
 *                          [--timeout-s S]
 *   bench_cluster transfer --endpoints E [--count N] [--probe-ms MS]
 *
 * E is the comma-separated list of the parents' API addresses; --verbose
 * (any command) prints every failed probe put of failover and transfer.
 *
 * put: N threads, each with its own client (all of E), take put requests
 * from one shared budget of T until it is spent or S seconds have passed:
 * random keys of B bytes out of K, the same value of B bytes, as etcd's
 * "benchmark put" does.  Every put's latency is taken on CLOCK_MONOTONIC;
 * failed puts are counted and left out of the latencies.  The rate is the
 * successful puts over the wall time from the start to the last answer;
 * percentiles are picked as etcd's benchmark picks them (the first sorted
 * sample whose rank i satisfies i * 100 / n >= p), so that both sides of
 * bench.sh read the same statistic.  Prints one line:
 *   put clients=N ops=X errors=E seconds=T rate=R p50_us=A p99_us=B
 * --trace FILE also writes "start_us latency_us" per successful put, to
 * find stalls.
 *
 * wait: until every endpoint answers STATUS naming the same leader, the
 * leader is ready, the leader's MEMBERS lists V voters, every node has
 * applied what the leader had committed when it was asked, and a put goes
 * through.  Exit 0, or 1 after S seconds.
 *
 * failover: find the leader, SIGKILL the process whose PID stands at the
 * leader's position in --pids (the caller started it and restarts it),
 * then put through a client of all endpoints until a put succeeds; each
 * try is bounded by MS ms and failed tries are 5 ms apart.  Prints
 *   failover_ms X killed I
 * with I the index of the killed node (0-based, the order of E).  This
 * program sends no other signal to anyone.
 *
 * transfer: N times, ask the leader for TRANSFER (to any voter) and time
 * its round trip (the leader answers OK once it knows the new leader), then
 * the first put that succeeds after it.  Prints per sample
 *   transfer_ms X write_ms Y
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cluster/client.h"
#include "lib/err.h"
#include "proto/codec.h"

#define MAX_NODES 16

static const char *endpoints_csv;
static int verbose; /* --verbose: every failed probe on stderr */
static char **eps;
static size_t n_eps;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

static void sleep_ms(unsigned ms)
{
    poll(NULL, 0, (int)ms);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_cluster put --endpoints E --clients N --total T "
            "[--max-seconds S]\n"
            "                         [--keys K] [--key-size B] "
            "[--value-size B]\n"
            "       bench_cluster wait --endpoints E [--voters V] "
            "[--timeout-s S]\n"
            "       bench_cluster failover --endpoints E --pids P1,P2,.. "
            "[--probe-ms MS] [--timeout-s S]\n"
            "       bench_cluster transfer --endpoints E [--count N] "
            "[--probe-ms MS]\n");
    exit(2);
}

static unsigned long num_arg(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || v[0] == '\0' || v[0] == '-') {
        fprintf(stderr, "bench_cluster: %s: not a number: %s\n", flag, v);
        exit(2);
    }
    return n;
}

/* A client of the given endpoints (all of E when list is NULL). */
static struct cd_client *client_of(char **list,
                                   size_t n,
                                   unsigned timeout_ms,
                                   unsigned total_ms)
{
    struct cd_client_config cfg;
    struct cd_client *c;
    memset(&cfg, 0, sizeof cfg);
    cfg.endpoints = (const char *const *)(list != NULL ? list : eps);
    cfg.n_endpoints = list != NULL ? n : n_eps;
    cfg.timeout_ms = timeout_ms;
    cfg.total_timeout_ms = total_ms;
    int rc = cd_client_open(&cfg, &c);
    if (rc != 0) {
        fprintf(stderr, "bench_cluster: cd_client_open: %s\n", cd_strerror(rc));
        exit(1);
    }
    return c;
}

/* --- put --------------------------------------------------------------- */

struct load
{
    unsigned clients;
    uint64_t total;
    uint64_t deadline_ns;
    unsigned keys;
    size_t key_size;
    size_t value_size;
    char *value;
    atomic_uint_fast64_t next; /* the next request of the budget */
    atomic_uint_fast64_t errors;
    uint32_t *lat_us;   /* per request; UINT32_MAX for a failed one */
    uint32_t *start_us; /* --trace: when each request was sent */
    uint64_t t0_ns;
    pthread_barrier_t start;
    int last_error;
};

struct worker
{
    struct load *l;
    unsigned index;
};

static void *put_worker(void *arg)
{
    struct worker *w = arg;
    struct load *l = w->l;
    struct cd_client *c = client_of(NULL, 0, 0, 0);
    uint64_t rng = 0x9E3779B97F4A7C15ull * (w->index + 1);
    char key[256];

    pthread_barrier_wait(&l->start);
    for (;;) {
        uint64_t i = atomic_fetch_add(&l->next, 1);
        if (i >= l->total) {
            break;
        }
        if (now_ns() >= l->deadline_ns) {
            l->lat_us[i] = UINT32_MAX; /* claimed, never sent */
            break;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        /* Fixed-size keys, like etcd's benchmark: the key number padded. */
        int n = snprintf(key, sizeof key, "%0*u", (int)l->key_size,
                         (unsigned)(rng % l->keys));
        size_t klen = (size_t)n < l->key_size ? (size_t)n : l->key_size;
        uint64_t t0 = now_ns();
        if (l->start_us != NULL) {
            l->start_us[i] = (uint32_t)((t0 - l->t0_ns) / 1000u);
        }
        int rc = cd_client_put(c, key, klen, l->value, l->value_size, NULL);
        uint64_t us = (now_ns() - t0) / 1000u;
        if (rc != 0) {
            atomic_fetch_add(&l->errors, 1);
            l->last_error = rc;
            l->lat_us[i] = UINT32_MAX;
        } else {
            l->lat_us[i] = us >= UINT32_MAX ? UINT32_MAX - 1 : (uint32_t)us;
        }
    }
    cd_client_close(c);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* etcd's pkg/report: the first sorted sample i with i * 100 / n >= p. */
static uint32_t pctl_u32(const uint32_t *v, size_t n, double p)
{
    for (size_t i = 0; i < n; i++) {
        if ((double)i * 100.0 / (double)n >= p) {
            return v[i];
        }
    }
    return n > 0 ? v[n - 1] : 0;
}

static int cmd_put(int argc, char **argv)
{
    struct load l;
    double max_seconds = 30;
    const char *trace = NULL;
    memset(&l, 0, sizeof l);
    l.clients = 1;
    l.total = 10000;
    l.keys = 100000;
    l.key_size = 16;
    l.value_size = 256;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--clients") == 0) {
            l.clients = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--total") == 0) {
            l.total = num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--max-seconds") == 0) {
            max_seconds = (double)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--keys") == 0) {
            l.keys = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--key-size") == 0) {
            l.key_size = num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--value-size") == 0) {
            l.value_size = num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--trace") == 0) {
            trace = argv[i + 1];
        } else {
            usage();
        }
        i++;
    }
    if (l.clients == 0 || l.clients > 4096 || l.total == 0 || l.keys == 0 ||
        l.key_size == 0 || l.key_size > 200 || l.value_size > (1u << 20)) {
        fprintf(stderr, "bench_cluster: put: bad parameters\n");
        return 2;
    }
    l.value = malloc(l.value_size + 1);
    l.lat_us = malloc(l.total * sizeof *l.lat_us);
    if (trace != NULL) {
        l.start_us = calloc(l.total, sizeof *l.start_us);
    }
    pthread_t *th = calloc(l.clients, sizeof *th);
    struct worker *ws = calloc(l.clients, sizeof *ws);
    if (l.value == NULL || l.lat_us == NULL || th == NULL || ws == NULL) {
        fprintf(stderr, "bench_cluster: out of memory\n");
        free(l.value);
        free(l.lat_us);
        free(l.start_us);
        free(th);
        free(ws);
        return 1;
    }
    for (size_t i = 0; i < l.value_size; i++) {
        l.value[i] = (char)('a' + i % 26);
    }
    atomic_init(&l.next, 0);
    atomic_init(&l.errors, 0);
    pthread_barrier_init(&l.start, NULL, l.clients + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)256 * 1024);
    for (unsigned i = 0; i < l.clients; i++) {
        ws[i].l = &l;
        ws[i].index = i;
        /* The deadline is set before the barrier opens; workers read it
         * only after. */
        if (pthread_create(&th[i], &attr, put_worker, &ws[i]) != 0) {
            fprintf(stderr, "bench_cluster: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t t0 = now_ns();
    l.t0_ns = t0;
    l.deadline_ns = t0 + (uint64_t)(max_seconds * 1e9);
    pthread_barrier_wait(&l.start);
    for (unsigned i = 0; i < l.clients; i++) {
        pthread_join(th[i], NULL);
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t issued = atomic_load(&l.next);
    if (issued > l.total) {
        issued = l.total;
    }
    if (trace != NULL) {
        FILE *f = fopen(trace, "w");
        for (uint64_t i = 0; f != NULL && i < issued; i++) {
            if (l.lat_us[i] != UINT32_MAX) {
                fprintf(f, "%u %u\n", l.start_us[i], l.lat_us[i]);
            }
        }
        if (f == NULL || fclose(f) != 0) {
            fprintf(stderr, "bench_cluster: --trace %s: %s\n", trace,
                    strerror(errno));
        }
    }
    /* Requests claimed after the deadline were never sent. */
    size_t n = 0;
    uint64_t errors = atomic_load(&l.errors);
    for (uint64_t i = 0; i < issued; i++) {
        if (l.lat_us[i] != UINT32_MAX) {
            l.lat_us[n++] = l.lat_us[i];
        }
    }
    qsort(l.lat_us, n, sizeof *l.lat_us, cmp_u32);
    printf("put clients=%u ops=%zu errors=%" PRIu64
           " seconds=%.3f rate=%.1f p50_us=%u p99_us=%u\n",
           l.clients, n, errors, secs, secs > 0 ? (double)n / secs : 0.0,
           pctl_u32(l.lat_us, n, 50), pctl_u32(l.lat_us, n, 99));
    if (errors > 0) {
        fprintf(stderr, "bench_cluster: put: %" PRIu64 " errors, last %s\n",
                errors, cd_errname(l.last_error));
    }
    pthread_barrier_destroy(&l.start);
    pthread_attr_destroy(&attr);
    free(th);
    free(ws);
    free(l.value);
    free(l.lat_us);
    free(l.start_us);
    return n > 0 ? 0 : 1;
}

/* --- cluster state ----------------------------------------------------- */

struct node_status
{
    int ok;
    uint64_t id;
    uint64_t leader_id;
    int ready_leader; /* state "leader": elected and ready for writes */
    uint64_t applied;
    uint64_t commit;
};

/* STATUS of one endpoint, asked of it alone. */
static void status_of(size_t i, unsigned timeout_ms, struct node_status *st)
{
    struct cd_client *c = client_of(&eps[i], 1, timeout_ms, timeout_ms);
    struct cd_msg resp;
    memset(st, 0, sizeof *st);
    if (cd_client_status(c, &resp) == 0) {
        st->ok = 1;
        st->id = resp.u.status_resp.id;
        st->leader_id = resp.u.status_resp.leader_id;
        st->ready_leader = resp.u.status_resp.state != NULL &&
                           strcmp(resp.u.status_resp.state, "leader") == 0;
        st->applied = resp.u.status_resp.applied_index;
        st->commit = resp.u.status_resp.commit_index;
        codec_msg_free(&resp);
    }
    cd_client_close(c);
}

/* The index in E of the one ready leader, or -1. */
static int find_leader(void)
{
    int leader = -1;
    for (size_t i = 0; i < n_eps; i++) {
        struct node_status st;
        status_of(i, 500, &st);
        if (st.ok && st.ready_leader) {
            if (leader >= 0) {
                return -1; /* two claim it: not settled yet */
            }
            leader = (int)i;
        }
    }
    return leader;
}

static const char probe_value[] = "failover-probe";

static int probe_put(struct cd_client *c, unsigned n)
{
    char key[32];
    snprintf(key, sizeof key, "bench/probe/%u", n);
    return cd_client_put(c, key, strlen(key), probe_value,
                         sizeof probe_value - 1, NULL);
}

static int voters_of_leader(size_t leader)
{
    struct cd_client *c = client_of(&eps[leader], 1, 500, 500);
    struct cd_msg req, resp;
    int voters = -1;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_MEMBERS;
    if (cd_client_call(c, &req, &resp) == 0) {
        voters = 0;
        for (size_t i = 0; i < resp.u.members_resp.n_members; i++) {
            if (resp.u.members_resp.members[i].role == CD_ROLE_VOTER) {
                voters++;
            }
        }
        codec_msg_free(&resp);
    }
    cd_client_close(c);
    return voters;
}

/* One look at the cluster: is it whole and settled? why not, in why. */
static int healthy(int want_voters, char *why, size_t len)
{
    struct node_status st[MAX_NODES];
    int leader = -1;
    for (size_t i = 0; i < n_eps; i++) {
        status_of(i, 500, &st[i]);
        if (!st[i].ok) {
            snprintf(why, len, "%s does not answer", eps[i]);
            return 0;
        }
        if (st[i].ready_leader) {
            leader = (int)i;
        }
    }
    if (leader < 0) {
        snprintf(why, len, "no ready leader");
        return 0;
    }
    for (size_t i = 0; i < n_eps; i++) {
        if (st[i].leader_id != st[leader].id) {
            snprintf(why, len, "%s sees leader %" PRIu64 ", not %" PRIu64,
                     eps[i], st[i].leader_id, st[leader].id);
            return 0;
        }
    }
    int v = voters_of_leader((size_t)leader);
    if (v < want_voters) {
        snprintf(why, len, "%d voters of %d", v, want_voters);
        return 0;
    }
    /* Followers have applied what the leader had committed at its STATUS
     * (the leader itself may have moved on since). */
    for (size_t i = 0; i < n_eps; i++) {
        struct node_status now;
        status_of(i, 500, &now);
        if (!now.ok || now.applied < st[leader].commit) {
            snprintf(why, len, "%s applied %" PRIu64 " < %" PRIu64, eps[i],
                     now.applied, st[leader].commit);
            return 0;
        }
    }
    return 1;
}

static int cmd_wait(int argc, char **argv)
{
    int voters = (int)n_eps;
    unsigned timeout_s = 60;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--voters") == 0) {
            voters = (int)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--timeout-s") == 0) {
            timeout_s = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else {
            usage();
        }
        i++;
    }
    uint64_t t0 = now_ns();
    char why[256] = "not asked yet";
    struct cd_client *c = client_of(NULL, 0, 1000, 1000);
    while (ms_since(t0) < timeout_s * 1000.0) {
        if (healthy(voters, why, sizeof why)) {
            int rc = probe_put(c, 0);
            if (rc == 0) {
                cd_client_close(c);
                return 0;
            }
            snprintf(why, sizeof why, "put: %s", cd_errname(rc));
        }
        sleep_ms(100);
    }
    cd_client_close(c);
    fprintf(stderr, "bench_cluster: wait: not healthy after %u s: %s\n",
            timeout_s, why);
    return 1;
}

/* Put until one succeeds, each try bounded by the client's timeouts. */
static int put_until_ok(struct cd_client *c,
                        uint64_t t0,
                        unsigned timeout_s,
                        unsigned tag,
                        int *last)
{
    unsigned tries = 0;
    while (ms_since(t0) < timeout_s * 1000.0) {
        int rc = probe_put(c, tag * 1000u + tries++);
        if (rc == 0) {
            return 0;
        }
        *last = rc;
        if (verbose) {
            const char *ep = cd_client_endpoint(c);
            fprintf(stderr, "bench_cluster: %8.1f ms: put: %s (last ok %s)\n",
                    ms_since(t0), cd_errname(rc), ep != NULL ? ep : "-");
        }
        sleep_ms(5);
    }
    return -1;
}

static int cmd_failover(int argc, char **argv)
{
    unsigned probe_ms = 250, timeout_s = 30;
    pid_t pids[MAX_NODES] = {0};
    size_t n_pids = 0;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--pids") == 0) {
            char *dup = strdup(argv[i + 1]), *save = NULL;
            if (dup == NULL) {
                return 1;
            }
            for (char *t = strtok_r(dup, ",", &save);
                 t != NULL && n_pids < MAX_NODES;
                 t = strtok_r(NULL, ",", &save)) {
                pids[n_pids++] = (pid_t)num_arg("--pids", t);
            }
            free(dup);
        } else if (strcmp(argv[i], "--probe-ms") == 0) {
            probe_ms = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--timeout-s") == 0) {
            timeout_s = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else {
            usage();
        }
        i++;
    }
    if (n_pids != n_eps) {
        fprintf(stderr,
                "bench_cluster: failover: %zu pids for %zu "
                "endpoints\n",
                n_pids, n_eps);
        return 2;
    }
    /* A probe client already connected to the leader, as a client that was
     * working before the crash would be. */
    struct cd_client *probe = client_of(NULL, 0, probe_ms, probe_ms);
    int leader = -1, rc = -1, last = 0;
    uint64_t t_find = now_ns();
    while (ms_since(t_find) < 10000) {
        rc = probe_put(probe, 0);
        leader = find_leader();
        if (rc == 0 && leader >= 0) {
            break;
        }
        sleep_ms(50);
    }
    if (rc != 0 || leader < 0) {
        fprintf(stderr, "bench_cluster: failover: no leader to kill\n");
        cd_client_close(probe);
        return 1;
    }
    (void)probe_put(probe, 1); /* reconnect if the leader moved meanwhile */
    uint64_t t0 = now_ns();
    if (kill(pids[leader], SIGKILL) != 0) {
        fprintf(stderr, "bench_cluster: kill %d: %s\n", (int)pids[leader],
                strerror(errno));
        cd_client_close(probe);
        return 1;
    }
    rc = put_until_ok(probe, t0, timeout_s, 2, &last);
    double ms = ms_since(t0);
    cd_client_close(probe);
    if (rc != 0) {
        fprintf(stderr,
                "bench_cluster: failover: no write within %u s "
                "(last error %s)\n",
                timeout_s, cd_errname(last));
        printf("failover_ms -1 killed %d\n", leader);
        return 1;
    }
    printf("failover_ms %.1f killed %d\n", ms, leader);
    return 0;
}

static int cmd_transfer(int argc, char **argv)
{
    unsigned count = 10, probe_ms = 250;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--count") == 0) {
            count = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else if (strcmp(argv[i], "--probe-ms") == 0) {
            probe_ms = (unsigned)num_arg(argv[i], argv[i + 1]);
        } else {
            usage();
        }
        i++;
    }
    int failed = 0;
    for (unsigned k = 0; k < count; k++) {
        int leader = -1;
        uint64_t t_find = now_ns();
        while ((leader = find_leader()) < 0 && ms_since(t_find) < 10000) {
            sleep_ms(50);
        }
        if (leader < 0) {
            fprintf(stderr, "bench_cluster: transfer: no leader\n");
            return 1;
        }
        struct cd_client *lc = client_of(&eps[leader], 1, 5000, 5000);
        struct cd_client *probe = client_of(NULL, 0, probe_ms, probe_ms);
        struct cd_msg req, resp;
        /* Connect first, so that the timing is the transfer's alone. */
        struct cd_msg st;
        if (cd_client_status(lc, &st) == 0) {
            codec_msg_free(&st);
        }
        memset(&req, 0, sizeof req);
        req.type = CD_MSG_TRANSFER;
        req.u.transfer.to = 0;
        uint64_t t0 = now_ns();
        int rc = cd_client_call(lc, &req, &resp);
        double t_ms = ms_since(t0);
        if (rc != 0) {
            fprintf(stderr, "bench_cluster: transfer from %s: %s\n",
                    eps[leader], cd_errname(rc));
            failed++;
        } else {
            codec_msg_free(&resp);
            int last = 0;
            rc = put_until_ok(probe, t0, 30, 3, &last);
            double w_ms = ms_since(t0);
            if (rc != 0) {
                fprintf(stderr,
                        "bench_cluster: transfer: no write after "
                        "it (last %s)\n",
                        cd_errname(last));
                failed++;
            } else {
                printf("transfer_ms %.2f write_ms %.2f\n", t_ms, w_ms);
            }
        }
        fflush(stdout);
        cd_client_close(lc);
        cd_client_close(probe);
        /* Let the old leader hear from the new one before the next. */
        sleep_ms(300);
    }
    return failed ? 1 : 0;
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
        } else if (strcmp(argv[i], "--verbose") == 0) {
            verbose = 1;
        } else {
            rest[n_rest++] = argv[i];
        }
    }
    if (endpoints_csv == NULL) {
        usage();
    }
    int rc = cd_client_parse_endpoints(endpoints_csv, &eps, &n_eps);
    if (rc != 0 || n_eps == 0 || n_eps > MAX_NODES) {
        fprintf(stderr, "bench_cluster: bad --endpoints %s\n", endpoints_csv);
        free(rest);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(cmd, "put") == 0) {
        rc = cmd_put(n_rest, rest);
    } else if (strcmp(cmd, "wait") == 0) {
        rc = cmd_wait(n_rest, rest);
    } else if (strcmp(cmd, "failover") == 0) {
        rc = cmd_failover(n_rest, rest);
    } else if (strcmp(cmd, "transfer") == 0) {
        rc = cmd_transfer(n_rest, rest);
    } else {
        usage();
    }
    cd_client_free_endpoints(eps, n_eps);
    free(rest);
    return rc;
}
