/*
 * config.c - see config.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/kvconf.h"
#include "metrics.h"
#include "vip.h"

void config_defaults(struct cd_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data_dir, sizeof c->data_dir, "/var/lib/clusterd");
    snprintf(c->profile, sizeof c->profile, "default");
    c->snapshot_threshold = 1024;
    c->snapshot_trailing = 512;
    c->history_revisions = 100000;
    c->voters = 3;
    c->failure_timeout_ms = 10000;
    c->max_conns = 1024;
    c->idle_timeout_ms = 300000;
    c->max_frame = (size_t)16 << 20;
    c->map_size = (size_t)1 << 30;
    c->log_level = LOG_LVL_INFO;
    c->vip_clock_drift_pct = 5;
    c->election_stagger = 1;
}

static int bad(char *err, size_t errlen, const char *key, const char *why)
{
    snprintf(err, errlen, "%s: %s", key, why);
    return CD_ECONFIG;
}

/* "a.b.c.d:port" with a port in 1..65535 (raft needs IPv4 or a name). */
static int check_addr(const char *v)
{
    const char *colon = strrchr(v, ':');
    unsigned long long port;
    if (colon == NULL || colon == v || strlen(v) >= 64) {
        return -1;
    }
    if (kvconf_uint(colon + 1, 1, 65535, &port) != 0) {
        return -1;
    }
    return 0;
}

#define COPY(field)                                       \
    do {                                                  \
        if (strlen(value) >= sizeof c->field) {           \
            return bad(err, errlen, key, "too long");     \
        }                                                 \
        snprintf(c->field, sizeof c->field, "%s", value); \
    } while (0)

#define UINT(field, lo, hi)                                   \
    do {                                                      \
        unsigned long long n_;                                \
        if (kvconf_uint(value, (lo), (hi), &n_) != 0) {       \
            return bad(err, errlen, key,                      \
                       "expected a number in " #lo ".." #hi); \
        }                                                     \
        c->field = n_;                                        \
    } while (0)

int config_set(struct cd_config *c,
               const char *key,
               const char *value,
               char *err,
               size_t errlen)
{
    if (strcmp(key, "data_dir") == 0) {
        COPY(data_dir);
    } else if (strcmp(key, "raft_address") == 0) {
        if (check_addr(value) != 0) {
            return bad(err, errlen, key, "expected a.b.c.d:port");
        }
        COPY(raft_addr);
    } else if (strcmp(key, "api_address") == 0) {
        if (check_addr(value) != 0) {
            return bad(err, errlen, key, "expected a.b.c.d:port");
        }
        COPY(api_addr);
    } else if (strcmp(key, "metrics_address") == 0) {
        if (metrics_check_address(value) != 0) {
            return bad(err, errlen, key, "expected host:port or empty (off)");
        }
        COPY(metrics_addr);
    } else if (strcmp(key, "join") == 0) {
        COPY(join);
    } else if (strcmp(key, "token") == 0) {
        COPY(token);
    } else if (strcmp(key, "profile") == 0) {
        if (strcmp(value, "default") != 0 && strcmp(value, "fast") != 0) {
            return bad(err, errlen, key, "expected default or fast");
        }
        COPY(profile);
    } else if (strcmp(key, "heartbeat_ms") == 0) {
        UINT(heartbeat_ms, 5, 10000);
        c->timing_set = 1;
    } else if (strcmp(key, "election_ms") == 0) {
        UINT(election_ms, 20, 60000);
        c->timing_set = 1;
    } else if (strcmp(key, "connect_retry_ms") == 0) {
        UINT(connect_retry_ms, 5, 10000);
    } else if (strcmp(key, "election_stagger") == 0) {
        if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
            return bad(err, errlen, key, "expected yes or no");
        }
        c->election_stagger = strcmp(value, "yes") == 0;
    } else if (strcmp(key, "snapshot_threshold") == 0) {
        UINT(snapshot_threshold, 16, 100000000);
    } else if (strcmp(key, "snapshot_trailing") == 0) {
        UINT(snapshot_trailing, 0, 100000000);
    } else if (strcmp(key, "history_revisions") == 0) {
        UINT(history_revisions, 100, 1000000000);
    } else if (strcmp(key, "voters") == 0) {
        UINT(voters, 1, 7);
        if (c->voters % 2 == 0) {
            return bad(err, errlen, key,
                       "an even number of voters is refused (3 or 5)");
        }
    } else if (strcmp(key, "failure_timeout_ms") == 0) {
        UINT(failure_timeout_ms, 100, 86400000);
    } else if (strcmp(key, "max_connections") == 0) {
        UINT(max_conns, 1, 1000000);
    } else if (strcmp(key, "idle_timeout_ms") == 0) {
        UINT(idle_timeout_ms, 100, 86400000);
    } else if (strcmp(key, "max_frame") == 0) {
        UINT(max_frame, 4096, 1ULL << 30);
    } else if (strcmp(key, "map_size") == 0) {
        UINT(map_size, 1ULL << 20, 1ULL << 40);
    } else if (strcmp(key, "vip") == 0) {
        if (vip_parse(value, NULL, NULL) != 0) {
            return bad(err, errlen, key, "expected a.b.c.d/prefix (IPv4)");
        }
        COPY(vip);
    } else if (strcmp(key, "vip_interface") == 0) {
        if (value[0] == '\0' || strlen(value) >= 16) {
            return bad(err, errlen, key, "expected an interface name");
        }
        COPY(vip_interface);
    } else if (strcmp(key, "vip_lease_ms") == 0) {
        UINT(vip_lease_ms, 10, 60000);
    } else if (strcmp(key, "vip_unsafe_no_lease") == 0) {
        /* Only for the lab's negative control (make lab-controls). */
        if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0) {
            return bad(err, errlen, key, "expected yes or no");
        }
        c->vip_no_lease = strcmp(value, "yes") == 0;
    } else if (strcmp(key, "vip_clock_drift_pct") == 0) {
        UINT(vip_clock_drift_pct, 0, 20);
    } else if (strcmp(key, "log_level") == 0) {
        if (log_parse_level(value, &c->log_level) != 0) {
            return bad(err, errlen, key, "expected error|warn|info|debug");
        }
    } else {
        return bad(err, errlen, key, "unknown setting");
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

int config_parse(struct cd_config *c,
                 const char *text,
                 size_t len,
                 char *err,
                 size_t errlen)
{
    return kvconf_parse(text, len, KVCONF_INLINE_COMMENTS, set_cb, c, err,
                        errlen);
}

int config_set_arg(struct cd_config *c,
                   const char *kv,
                   char *err,
                   size_t errlen)
{
    return kvconf_arg(kv, set_cb, c, err, errlen);
}

int config_load(struct cd_config *c, const char *path, char *err, size_t errlen)
{
    return kvconf_load(path, KVCONF_INLINE_COMMENTS, set_cb, c, err, errlen);
}

int config_finish(struct cd_config *c, char *err, size_t errlen)
{
    if (!c->timing_set || c->heartbeat_ms == 0 || c->election_ms == 0) {
        int fast = strcmp(c->profile, "fast") == 0;
        if (c->heartbeat_ms == 0) {
            c->heartbeat_ms = fast ? 25 : 50;
        }
        if (c->election_ms == 0) {
            c->election_ms = fast ? 150 : 400;
        }
    }
    if (c->connect_retry_ms == 0) {
        c->connect_retry_ms = c->heartbeat_ms;
    }
    if (c->election_ms < 2 * c->heartbeat_ms) {
        return bad(err, errlen, "election_ms",
                   "must be at least twice heartbeat_ms");
    }
    if (c->raft_addr[0] == '\0') {
        return bad(err, errlen, "raft_address", "required");
    }
    if (c->api_addr[0] == '\0') {
        return bad(err, errlen, "api_address", "required");
    }
    if (c->bootstrap && c->join[0] != '\0') {
        return bad(err, errlen, "join", "cannot be used with bootstrap");
    }
    if (c->restore[0] != '\0' && !c->bootstrap) {
        return bad(err, errlen, "restore", "only with bootstrap");
    }
    if (c->new_cluster_id && c->restore[0] == '\0') {
        return bad(err, errlen, "new-cluster-id", "only with restore");
    }
    /* join without a token is refused at start only when the node has not
     * joined yet (server.c): a joined node ignores join, and an expired
     * token may be dropped from the file. */
    if ((c->vip[0] != '\0') != (c->vip_interface[0] != '\0')) {
        return bad(err, errlen, "vip", "vip and vip_interface go together");
    }
    /*
     * The lease argument (docs/operations.md, "The virtual IP"): an old
     * leader's lease, measured on its clock, must end before a new leader
     * can be elected, which takes at least election_ms of silence on the
     * voters' clocks: lease * (1 + drift) < election * (1 - drift).
     */
    double drift = c->vip_clock_drift_pct / 100.0;
    double max_lease = c->election_ms * (1.0 - drift) / (1.0 + drift);
    if (c->vip_lease_ms == 0) {
        c->vip_lease_ms = (unsigned)(max_lease * 0.8);
    }
    if (c->vip[0] != '\0' && c->vip_lease_ms >= max_lease) {
        return bad(err, errlen, "vip_lease_ms",
                   "must be below election_ms * (1 - drift) / (1 + drift)");
    }
    return 0;
}
