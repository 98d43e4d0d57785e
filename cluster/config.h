/*
 * config.h - clusterd's configuration: a file of "key = value" lines,
 * overridden by command-line flags.  Every key is listed in
 * docs/clusterd.conf.md with its default; an unknown key or a bad value is
 * a clear error naming it (CD_ECONFIG), never silently ignored.
 *
 * Timing comes in two profiles, chosen with "profile": "default" (safe on a
 * loaded LAN: heartbeat 50 ms, election 400 ms) and
 * "fast" (heartbeat 25 ms, election 150 ms); explicit heartbeat_ms /
 * election_ms override the profile whatever their order.
 */
#ifndef CD_CONFIG_H
#define CD_CONFIG_H

#include <stddef.h>

#include "../lib/log.h"

struct cd_config
{
    char data_dir[256];
    char raft_addr[64]; /* this node's Raft address, "a.b.c.d:port" */
    char api_addr[64];  /* this node's API address, "a.b.c.d:port" */
    int bootstrap;      /* create a new cluster with this node */
    char join[512];     /* endpoints of the cluster to join */
    char token[128];    /* join token */
    int force_new_cluster;
    char restore[256]; /* with bootstrap: a backup to start from */
    /* With restore: give the new cluster an id of its own instead of the
     * backup's, so that the old fleet's children are refused. */
    int new_cluster_id;
    char profile[16];
    unsigned heartbeat_ms;
    unsigned election_ms;
    int election_stagger; /* staggered follower timeouts (stagger.h) */
    /* Wait between attempts to connect to a peer that refused (0 until
     * config_finish sets it to heartbeat_ms).  libraft's own default, 1 s,
     * leaves a restarted parent unreachable for up to a second, and an
     * election that needs its vote waits for it. */
    unsigned connect_retry_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    unsigned history_revisions;  /* keep this many revisions of history */
    unsigned voters;             /* voter target: 3 or 5 (1 allowed) */
    unsigned failure_timeout_ms; /* demote a voter unreachable this long */
    unsigned max_conns;
    unsigned idle_timeout_ms;
    size_t max_frame;
    size_t map_size;
    enum log_level log_level;
    /* HTTP /metrics, /healthz, /readyz on "host:port"; "": off. */
    char metrics_addr[64];
    /* The virtual IP the leader holds ("" : none), see vip.h. */
    char vip[32];           /* "a.b.c.d/prefix" */
    char vip_interface[16]; /* where it is added */
    unsigned vip_lease_ms;  /* 0 until config_finish derives it */
    unsigned vip_clock_drift_pct;
    int vip_no_lease; /* a negative control for the lab: never set it */
    /* Set when heartbeat_ms / election_ms were given explicitly. */
    int timing_set;
};

void config_defaults(struct cd_config *c);

/* Set one key; on error, err (size errlen) says why.  CD_ECONFIG. */
int config_set(struct cd_config *c,
               const char *key,
               const char *value,
               char *err,
               size_t errlen);

/* A "KEY=VALUE" argument (--set): as config_set, or -EINVAL when it has
 * no such shape (lib/kvconf.h, kvconf_arg). */
int config_set_arg(struct cd_config *c,
                   const char *kv,
                   char *err,
                   size_t errlen);

/* Read a file of "key = value" lines ('#' comments; lib/kvconf.h).
 * CD_ECONFIG with "file:line: why" in err, or -errno if it cannot be
 * read. */
int config_load(struct cd_config *c,
                const char *path,
                char *err,
                size_t errlen);

/* The same for text in memory (len bytes); errors say "line N: why". */
int config_parse(struct cd_config *c,
                 const char *text,
                 size_t len,
                 char *err,
                 size_t errlen);

/* Apply the profile's timing (unless set explicitly) and check the whole:
 * addresses present, voters odd, election > 2 heartbeats, ... */
int config_finish(struct cd_config *c, char *err, size_t errlen);

#endif
