/*
 * main.c - clusterd, the parent daemon.
 *
 *   clusterd [--config FILE] [--data DIR] [--raft ADDR] [--api ADDR]
 *            [--bootstrap [--restore FILE [--new-cluster-id]] |
 *             --join ENDPOINTS --token TOKEN | --force-new-cluster]
 *            [--profile default|fast] [--set KEY=VALUE]... [--log-level L]
 *
 * SIGTERM / SIGINT stop it gracefully (a leader hands leadership over
 * first).  Exit codes: 0 after a clean stop, 1 start-up failure (the
 * message says why), 2 usage, 70 a fatal store error at run time.
 *
 * Under systemd (Type=notify, deploy/systemd/clusterd.service) it says
 * READY=1 once the API listens and raft has started, and STOPPING=1 when
 * a stop begins; without NOTIFY_SOCKET sd_notify does nothing.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "config.h"
#include "server.h"

static uv_signal_t sig_term, sig_int;
static struct server *srv;
static int said_stopping;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: clusterd [--config FILE] [--data DIR] [--raft ADDR] "
        "[--api ADDR]\n"
        "                [--bootstrap [--restore BACKUP [--new-cluster-id]] |\n"
        "                 --join ENDPOINTS --token TOKEN | "
        "--force-new-cluster]\n"
        "                [--profile default|fast] [--set KEY=VALUE]... "
        "[--log-level LEVEL]\n\n"
        "  --bootstrap   create a new cluster with this node as its "
        "first parent\n"
        "  --join        join the cluster at ENDPOINTS (API addresses, "
        "comma-separated)\n"
        "  --restore FILE  with --bootstrap: start the cluster again from a "
        "backup,\n"
        "                with the backup's cluster id (its children "
        "reattach)\n"
        "  --new-cluster-id  with --restore: a new cluster id instead (the "
        "old\n"
        "                fleet's children are refused)\n"
        "  --force-new-cluster  disaster recovery: make this surviving "
        "parent\n"
        "                the only voter, keeping all data (run on one "
        "node only)\n"
        "  --set K=V     any setting of the configuration file (see "
        "clusterd.conf(5))\n\n"
        "A node that has joined or bootstrapped restarts with neither "
        "flag.\n");
}

/* systemd: a stop has begun (a signal, or `clusterctl leave`). */
static void notify_stopping(void)
{
    if (!said_stopping) {
        said_stopping = 1;
        sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    }
}

static void stopped_cb(struct server *s)
{
    (void)s;
    notify_stopping();
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    (void)h;
    log_info("main", "signal %d: stopping", signum);
    notify_stopping();
    server_stop(srv, stopped_cb);
}

/* Every child keeps a stream open to a parent: allow as many descriptors as
 * the hard limit does (max_conns bounds the API's share of them). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct cd_config cfg;
    char err[512];
    int rc;

    log_set_ident("clusterd");
    raise_fd_limit();
    config_defaults(&cfg);
    /* A config file first, so that flags override it whatever the order. */
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            rc = config_load(&cfg, argv[i + 1], err, sizeof err);
            if (rc != 0) {
                fprintf(stderr, "clusterd: %s\n", err);
                return 1;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char *key = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--bootstrap") == 0) {
            cfg.bootstrap = 1;
            continue;
        } else if (strcmp(a, "--force-new-cluster") == 0) {
            cfg.force_new_cluster = 1;
            continue;
        } else if (strcmp(a, "--new-cluster-id") == 0) {
            cfg.new_cluster_id = 1;
            continue;
        } else if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        } else if (strcmp(a, "--restore") == 0 && v != NULL) {
            snprintf(cfg.restore, sizeof cfg.restore, "%s", v);
            i++;
            continue;
        } else if (strcmp(a, "--data") == 0) {
            key = "data_dir";
        } else if (strcmp(a, "--raft") == 0) {
            key = "raft_address";
        } else if (strcmp(a, "--api") == 0) {
            key = "api_address";
        } else if (strcmp(a, "--join") == 0) {
            key = "join";
        } else if (strcmp(a, "--token") == 0) {
            key = "token";
        } else if (strcmp(a, "--profile") == 0) {
            key = "profile";
        } else if (strcmp(a, "--log-level") == 0) {
            key = "log_level";
        } else if (strcmp(a, "--set") == 0 && v != NULL) {
            rc = config_set_arg(&cfg, v, err, sizeof err);
            if (rc == -EINVAL) {
                fprintf(stderr, "clusterd: --set expects KEY=VALUE\n");
                return 2;
            }
            if (rc != 0) {
                fprintf(stderr, "clusterd: %s\n", err);
                return 1;
            }
            i++;
            continue;
        } else {
            fprintf(stderr, "clusterd: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (v == NULL) {
            fprintf(stderr, "clusterd: %s needs a value\n", a);
            return 2;
        }
        if (config_set(&cfg, key, v, err, sizeof err) != 0) {
            fprintf(stderr, "clusterd: %s\n", err);
            return 1;
        }
        i++;
    }
    if (config_finish(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "clusterd: %s\n", err);
        return 1;
    }
    log_set_level(cfg.log_level);
    sd_notify(0, "STATUS=starting");

    uv_loop_t *loop = uv_default_loop();
    if ((rc = server_init(&srv, loop, &cfg)) != 0) {
        fprintf(stderr, "clusterd: %s\n", cd_strerror(rc));
        return 1;
    }
    server_on_stop(srv, stopped_cb);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, signal_cb, SIGTERM);
    uv_signal_start(&sig_int, signal_cb, SIGINT);
    rc = server_start(srv);
    if (rc != 0) {
        log_error("main", "start failed: %s (%s)", cd_strerror(rc),
                  cd_errname(rc));
        said_stopping = 1; /* it never started: no STOPPING=1 */
        sd_notifyf(0, "STATUS=start failed: %s", cd_strerror(rc));
        server_stop(srv, stopped_cb);
        uv_run(loop, UV_RUN_DEFAULT);
        server_free(srv);
        return 1;
    }
    sd_notifyf(0, "READY=1\nSTATUS=serving: api %s, raft %s", cfg.api_addr,
               cfg.raft_addr);
    uv_run(loop, UV_RUN_DEFAULT);
    int failed = server_failed(srv);
    server_free(srv);
    uv_loop_close(loop);
    log_info("main", "stopped");
    return failed ? 70 : 0;
}
