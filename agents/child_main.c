/*
 * child_main.c - clusterd-child, the daemon of a child node.
 *
 *   clusterd-child [--config FILE] [--data DIR] [--endpoints E1,E2,...]
 *                  [--token TOKEN] [--set KEY=VALUE]... [--log-level L]
 *
 * On first start (no <data>/child yet) it joins the cluster with the token
 * (the same as `clusterctl join --child`); afterwards it reuses the
 * identity it was given.  Then it follows the parents into its cache
 * (agents/follower.h), reconnecting with backoff and jitter, and, from a
 * second thread, reports its services' health (agents/health.h) to the
 * leader every report_interval_ms.  With every parent away it goes on
 * serving the cache and says so: state "degraded", with its staleness.
 *
 * Exit codes: 0 after SIGTERM/SIGINT, 1 start-up failure, 2 usage, 3 the
 * child was deregistered or the parents are another cluster (restarting
 * would not help: systemd's RestartPreventExitStatus=3).
 *
 * Under systemd (Type=notify, deploy/systemd/clusterd-child.service) it
 * says READY=1 once the cache is open and served, STATUS= when its state
 * or revision changes, and STOPPING=1 when it stops; without NOTIFY_SOCKET
 * sd_notify does nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/kvconf.h"
#include "../lib/log.h"
#include "../cluster/metrics.h"
#include "child_metrics.h"
#include "follower.h"
#include "health.h"

#define EXIT_USAGE 2
#define EXIT_FINAL 3
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct child_config
{
    char data_dir[256];
    char endpoints[512];
    char token[128];
    char app_version[64];
    unsigned report_interval_ms;
    unsigned stream_timeout_ms;
    unsigned keep_revisions;
    enum log_level log_level;
    char metrics_addr[64]; /* HTTP /metrics etc. on host:port; "": off */
    struct health health;
};

/* Set by the main thread (signals), read by the others. */
static atomic_int stop_flag;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clusterd-child [--config FILE] [--data DIR] "
            "[--endpoints E1,E2,...]\n"
            "                      [--token TOKEN] [--set KEY=VALUE]... "
            "[--log-level LEVEL]\n\n"
            "Follows the parents into a local cache that programs read "
            "with libclusterd\n"
            "(or 'clusterctl get --local'), and keeps serving it while "
            "the parents are away.\n"
            "On first start it joins with --token; see clusterd-child(8).\n");
}

static int parse_uint(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    unsigned long long x;
    if (kvconf_uint(v, lo, hi, &x) != 0) {
        return -1;
    }
    *out = (unsigned)x;
    return 0;
}

static int copy_str(char *dst, size_t len, const char *v)
{
    if (strlen(v) >= len) {
        return -1;
    }
    snprintf(dst, len, "%s", v);
    return 0;
}

/* One setting: 0, or CD_ECONFIG with err saying why. */
static int config_set(struct child_config *c,
                      const char *k,
                      const char *v,
                      char *err,
                      size_t errlen)
{
    int bad;
    if (strcmp(k, "data_dir") == 0) {
        bad = copy_str(c->data_dir, sizeof c->data_dir, v);
    } else if (strcmp(k, "endpoints") == 0) {
        bad = copy_str(c->endpoints, sizeof c->endpoints, v);
    } else if (strcmp(k, "token") == 0) {
        bad = copy_str(c->token, sizeof c->token, v);
    } else if (strcmp(k, "app_version") == 0) {
        bad = copy_str(c->app_version, sizeof c->app_version, v);
    } else if (strcmp(k, "report_interval_ms") == 0) {
        bad = parse_uint(v, 100, 600000, &c->report_interval_ms);
    } else if (strcmp(k, "stream_timeout_ms") == 0) {
        bad = parse_uint(v, 1500, 600000, &c->stream_timeout_ms);
    } else if (strcmp(k, "keep_revisions") == 0) {
        bad = parse_uint(v, 100, 100000000, &c->keep_revisions);
    } else if (strcmp(k, "log_level") == 0) {
        bad = log_parse_level(v, &c->log_level) != 0;
    } else if (strcmp(k, "metrics_address") == 0) {
        bad = metrics_check_address(v) != 0 ||
              copy_str(c->metrics_addr, sizeof c->metrics_addr, v) != 0;
    } else if (strcmp(k, "check") == 0) {
        return health_add(&c->health, v, err, errlen);
    } else {
        snprintf(err, errlen, "unknown key '%s'", k);
        return CD_ECONFIG;
    }
    if (bad) {
        snprintf(err, errlen, "bad value for %s: '%s'", k, v);
        return CD_ECONFIG;
    }
    return 0;
}

static int set_cb(void *arg,
                  const char *key,
                  const char *value,
                  char *why,
                  size_t whylen)
{
    return config_set(arg, key, value, why, whylen);
}

/* The file: whole-line comments only, as a check command may hold '#'. */
static int config_load(struct child_config *c, const char *path)
{
    char err[700];
    if (kvconf_load(path, 0, set_cb, c, err, sizeof err) != 0) {
        fprintf(stderr, "clusterd-child: %s\n", err);
        return -1;
    }
    return 0;
}

/* --- reports ------------------------------------------------------------- */

struct reporter
{
    struct child_config *cfg;
    struct follower *f;
    struct cd_child_identity id;
    struct child_metrics *metrics; /* NULL: off */
    pthread_t thread;
};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_flag) {
    }
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *report_loop(void *arg)
{
    struct reporter *r = arg;
    char **eps = NULL;
    size_t n_eps = 0;
    struct cd_client *c = NULL;
    int prev_down = -1;
    if (cd_client_parse_endpoints(r->id.endpoints, &eps, &n_eps) != 0) {
        return NULL;
    }
    struct cd_client_config cc = {
        .endpoints = (const char *const *)eps,
        .n_endpoints = n_eps,
        .timeout_ms = 2000,
        .total_timeout_ms = 3000,
        .cluster_id = r->id.cluster_id,
    };
    if (cd_client_open(&cc, &c) != 0) {
        cd_client_free_endpoints(eps, n_eps);
        return NULL;
    }
    cd_client_free_endpoints(eps, n_eps);
    struct cd_service_health sv[HEALTH_MAX_CHECKS];
    while (!stop_flag) {
        int down = health_run(&r->cfg->health);
        child_metrics_services(r->metrics, &r->cfg->health);
        if (down != prev_down) {
            log_info("health", "%d of %zu services down", down,
                     r->cfg->health.n);
            prev_down = down;
        }
        for (size_t i = 0; i < r->cfg->health.n; i++) {
            const struct health_check *h = &r->cfg->health.checks[i];
            sv[i] = (struct cd_service_health){
                .name = h->name,
                .up = h->up,
                .detail = h->detail[0] != '\0' ? h->detail : NULL,
            };
        }
        enum follower_state st = follower_state(r->f);
        uint64_t contact = follower_contact_ms(r->f);
        uint64_t now = wall_ms();
        struct cd_msg req, resp;
        memset(&req, 0, sizeof req);
        req.type = CD_MSG_CHILD_REPORT;
        req.u.child_report.child_id = r->id.child_id;
        req.u.child_report.revision = follower_revision(r->f);
        req.u.child_report.state =
            st == FOLLOWER_FOLLOWING ? "following" : "degraded";
        req.u.child_report.services = sv;
        req.u.child_report.n_services = r->cfg->health.n;
        req.u.child_report.staleness_ms =
            st == FOLLOWER_FOLLOWING || contact == 0 || contact > now
                ? 0
                : now - contact;
        int rc = cd_client_call(c, &req, &resp);
        if (rc == 0) {
            codec_msg_free(&resp);
        } else {
            log_debug("health", "report not delivered: %s", cd_strerror(rc));
        }
        for (unsigned waited = 0;
             waited < r->cfg->report_interval_ms && !stop_flag; waited += 100) {
            sleep_ms(100);
        }
    }
    cd_client_close(c);
    return NULL;
}

static unsigned jitter(unsigned ms)
{
    unsigned r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) {
        r = (unsigned)time(NULL);
    }
    return ms / 2 + r % (ms / 2 + 1);
}

struct follow_loop
{
    struct child_config *cfg;
    struct follower *f;
    int exit_code;
    _Atomic int done;
};

/* Follow until stopped, reconnecting with backoff and jitter. */
static void *follow_main(void *arg)
{
    struct follow_loop *fl = arg;
    int rc;
    unsigned backoff = BACKOFF_MIN_MS;
    int said_degraded = 0;
    while (!stop_flag) {
        uint64_t before = follower_revision(fl->f);
        rc = follower_run(fl->f, &stop_flag);
        if (stop_flag) {
            break;
        }
        if (rc == CD_EREVOKED || rc == CD_EBADCLUSTER) {
            log_error("child",
                      "%s: this child no longer follows the cluster "
                      "(its cache stays readable); to rejoin, wipe %s and "
                      "join with a new token",
                      cd_strerror(rc), fl->cfg->data_dir);
            fl->exit_code = EXIT_FINAL;
            break;
        }
        if (rc == CD_ECOMPACTED) {
            backoff = BACKOFF_MIN_MS; /* restored: say hello again now */
            continue;
        }
        if (follower_revision(fl->f) != before || rc == -ECONNRESET) {
            backoff = BACKOFF_MIN_MS; /* it had been working */
        }
        if (!said_degraded && follower_contact_ms(fl->f) == 0) {
            /* Never reached a parent since start (the follower itself
             * says when a live stream is lost). */
            log_warn("child",
                     "degraded: no parent reachable (%s); serving the cache "
                     "at revision %" PRIu64,
                     cd_strerror(rc), follower_revision(fl->f));
            said_degraded = 1;
        } else {
            log_debug("child", "stream ended: %s", cd_strerror(rc));
        }
        unsigned pause = jitter(backoff);
        for (unsigned waited = 0; waited < pause && !stop_flag; waited += 50) {
            sleep_ms(50);
        }
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    fl->done = 1;
    return NULL;
}

/* systemd's STATUS= line, sent when the state or the revision changed. */
static void notify_status(struct follower *f,
                          enum follower_state *last_st,
                          uint64_t *last_rev)
{
    enum follower_state st = follower_state(f);
    uint64_t rev = follower_revision(f);
    if (st == *last_st && rev == *last_rev) {
        return;
    }
    *last_st = st;
    *last_rev = rev;
    if (st == FOLLOWER_FOLLOWING) {
        sd_notifyf(0, "STATUS=following at revision %" PRIu64, rev);
    } else {
        sd_notifyf(
            0, "STATUS=degraded: serving revision %" PRIu64 " from the cache",
            rev);
    }
}

/* --- start -----------------------------------------------------------------
 */

static int join_cluster(struct child_config *cfg, struct cd_child_identity *id)
{
    char **eps = NULL;
    size_t n_eps = 0;
    struct cd_client *c = NULL;
    if (cfg->endpoints[0] == '\0' || cfg->token[0] == '\0') {
        fprintf(stderr,
                "clusterd-child: %s/child is missing: this child has not "
                "joined yet; give --endpoints and --token (or run "
                "'clusterctl join --child')\n",
                cfg->data_dir);
        return -1;
    }
    int rc = cd_client_parse_endpoints(cfg->endpoints, &eps, &n_eps);
    if (rc == 0) {
        struct cd_client_config cc = {.endpoints = (const char *const *)eps,
                                      .n_endpoints = n_eps};
        rc = cd_client_open(&cc, &c);
        cd_client_free_endpoints(eps, n_eps);
    }
    if (rc == 0) {
        rc = cd_client_child_join(
            c, cfg->token, cfg->app_version[0] ? cfg->app_version : NULL, id);
    }
    cd_client_close(c);
    if (rc == 0) {
        snprintf(id->endpoints, sizeof id->endpoints, "%s", cfg->endpoints);
        rc = cd_child_identity_save(cfg->data_dir, id);
    }
    if (rc != 0) {
        fprintf(stderr, "clusterd-child: join failed: %s\n", cd_strerror(rc));
        return -1;
    }
    log_info("child", "joined cluster %016" PRIx64 " as child %" PRIu64,
             id->cluster_id, id->child_id);
    return 0;
}

int main(int argc, char **argv)
{
    static struct child_config cfg;
    char err[256];
    const char *config_file = NULL;

    snprintf(cfg.data_dir, sizeof cfg.data_dir, "/var/lib/clusterd");
    cfg.report_interval_ms = 5000;
    cfg.stream_timeout_ms = 3000;
    cfg.keep_revisions = 100000;
    cfg.log_level = LOG_LVL_INFO;
    health_init(&cfg.health);

    /* The file first, so that flags override it wherever they stand. */
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            config_file = argv[i + 1];
        }
    }
    if (config_file != NULL && config_load(&cfg, config_file) != 0) {
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char *key = NULL;
        if (a == NULL) {
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return EXIT_USAGE;
        }
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strcmp(a, "--data") == 0) {
            key = "data_dir";
        } else if (strcmp(a, "--endpoints") == 0) {
            key = "endpoints";
        } else if (strcmp(a, "--token") == 0) {
            key = "token";
        } else if (strcmp(a, "--log-level") == 0) {
            key = "log_level";
        } else if (strcmp(a, "--set") == 0) {
            if (kvconf_arg(v, set_cb, &cfg, err, sizeof err) != 0) {
                fprintf(stderr, "clusterd-child: --set %s: %s\n", v, err);
                return EXIT_USAGE;
            }
            i++;
            continue;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
        if (config_set(&cfg, key, v, err, sizeof err) != 0) {
            fprintf(stderr, "clusterd-child: %s: %s\n", a, err);
            return EXIT_USAGE;
        }
        i++;
    }
    log_set_ident("clusterd-child");
    log_set_level(cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM and SIGINT are taken by the main thread alone (sigwait). */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "clusterd-child: cannot create %s: %s\n", cfg.data_dir,
                strerror(errno));
        return 1;
    }
    struct cd_child_identity id;
    int rc = cd_child_identity_load(cfg.data_dir, &id);
    if (rc == -ENOENT) {
        if (join_cluster(&cfg, &id) != 0) {
            return 1;
        }
    } else if (rc != 0) {
        fprintf(stderr, "clusterd-child: cannot read %s/child: %s\n",
                cfg.data_dir, cd_strerror(rc));
        return 1;
    } else if (cfg.endpoints[0] != '\0' &&
               strcmp(cfg.endpoints, id.endpoints) != 0) {
        /* The parents moved (a new address, a VIP): follow the config. */
        snprintf(id.endpoints, sizeof id.endpoints, "%s", cfg.endpoints);
        cd_child_identity_save(cfg.data_dir, &id);
    }

    char host[256] = "";
    gethostname(host, sizeof host - 1);
    struct follower_config fc = {
        .data_dir = cfg.data_dir,
        .id = &id,
        .hostname = host,
        .version = cfg.app_version[0] ? cfg.app_version : NULL,
        .stream_timeout_ms = cfg.stream_timeout_ms,
        .keep_revisions = cfg.keep_revisions,
    };
    struct follower *f = NULL;
    rc = follower_open(&fc, &f);
    if (rc != 0) {
        fprintf(stderr, "clusterd-child: cannot open the cache in %s: %s\n",
                cfg.data_dir, cd_strerror(rc));
        return 1;
    }
    log_info("child",
             "child %" PRIu64 " of cluster %016" PRIx64
             ": serving the cache at revision %" PRIu64 " from %s/cache.mdb",
             id.child_id, id.cluster_id, follower_revision(f), cfg.data_dir);

    struct child_metrics *metrics = NULL;
    if (cfg.metrics_addr[0] != '\0') {
        rc = child_metrics_start(cfg.metrics_addr, f, id.child_id, &cfg.health,
                                 &metrics);
        if (rc != 0) {
            fprintf(stderr, "clusterd-child: metrics_address %s: %s\n",
                    cfg.metrics_addr, cd_strerror(rc));
            follower_close(f);
            return 1;
        }
        log_info("child", "serving /metrics, /healthz and /readyz on http://%s",
                 cfg.metrics_addr);
    }
    struct reporter rep = {.cfg = &cfg, .f = f, .id = id, .metrics = metrics};
    int have_reporter =
        pthread_create(&rep.thread, NULL, report_loop, &rep) == 0;

    struct follow_loop fl = {.cfg = &cfg, .f = f};
    pthread_t follow_thread;
    if (pthread_create(&follow_thread, NULL, follow_main, &fl) != 0) {
        fprintf(stderr, "clusterd-child: cannot start: %s\n", strerror(errno));
        return 1;
    }
    sd_notifyf(0, "READY=1\nSTATUS=serving the cache at revision %" PRIu64,
               follower_revision(f));
    enum follower_state last_st = FOLLOWER_DEGRADED;
    uint64_t last_rev = follower_revision(f);
    /* Wait for a signal, or for the follower to end by itself. */
    for (;;) {
        struct timespec wait = {0, 200 * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &wait);
        if (sig > 0) {
            log_info("child", "signal %d: stopping", sig);
            sd_notify(0, "STOPPING=1\nSTATUS=stopping");
            break;
        }
        if (fl.done) {
            sd_notify(0,
                      "STOPPING=1\nSTATUS=stopped: this child no longer "
                      "follows the cluster (exit status 3)");
            break;
        }
        notify_status(f, &last_st, &last_rev);
    }
    stop_flag = 1;
    /* A call in flight ends within its timeout; the cache is transactional,
     * so exiting without waiting for it loses nothing. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    if (pthread_timedjoin_np(follow_thread, NULL, &until) != 0) {
        log_info("child", "stopped (a parent call was still in flight)");
        _exit(fl.exit_code);
    }
    int exit_code = fl.exit_code;
    stop_flag = 1;
    if (have_reporter && pthread_timedjoin_np(rep.thread, NULL, &until) != 0) {
        log_info("child",
                 "stopped at revision %" PRIu64 " (a report was in flight)",
                 follower_revision(f));
        _exit(exit_code);
    }
    log_info("child", "stopped at revision %" PRIu64, follower_revision(f));
    child_metrics_stop(metrics);
    follower_close(f);
    return exit_code;
}
