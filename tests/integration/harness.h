/*
 * harness.h - real clusterd processes on loopback, for integration tests.
 *
 * A test cluster lives in its own temporary directory; node i has
 * <dir>/n<i>/ as data dir, its log in <dir>/n<i>.log, and listens on
 * 127.0.0.1 ports derived from the test's pid (so that two runs do not
 * collide).  Every process started is recorded and stopped by its PID,
 * also when a test fails (harness_destroy runs from the teardown).
 * Waits are bounded polls: nothing here sleeps for a fixed "long enough".
 */
#ifndef CD_TEST_HARNESS_H
#define CD_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cluster/client.h"
#include "lib/err.h"
#include "storage/store.h"

#define HARNESS_MAX_NODES 7
#define HARNESS_MAX_CHILDREN 4

struct hnode
{
    pid_t pid; /* 0: not running */
    char dir[160];
    char log[160];
    char raft[32];
    char api[32];
};

/* A clusterd-child: data in <dir>/c<i+1>/, log in <dir>/c<i+1>.log. */
struct hchild
{
    pid_t pid; /* 0: not running */
    char dir[160];
    char log[160];
};

struct harness
{
    char base[96];
    char bin[4200]; /* path of the clusterd binary */
    int port;       /* first port: raft port+i, api port+100+i */
    int n;
    struct hnode node[HARNESS_MAX_NODES];
    const char *extra[16]; /* extra flags for every node, NULL-ended */
    const char *restore;   /* H_BOOTSTRAP starts from this backup if set */
    int formed;            /* set by the test once the initial joins are done */
    int joins_done;        /* joins after formation */
    char child_bin[4300];  /* path of the clusterd-child binary */
    struct hchild child[HARNESS_MAX_CHILDREN];
};

/* Make the directory and pick ports; no process yet. */
int harness_init(struct harness *h, int n, const char *const *extra);
/* Kill every running node and child (SIGKILL), wait for them, remove the
 * dir unless CD_KEEP_TEST_DIR is set. */
void harness_destroy(struct harness *h);
/* cmocka fixtures: a zeroed harness in *state (the test calls
 * harness_init), and harness_destroy + free, also after a failed test. */
int harness_setup(void **state);
int harness_teardown(void **state);

enum hstart { H_BOOTSTRAP, H_JOIN, H_RESTART, H_FORCE_NEW_CLUSTER };
/* Start node i (join goes through node `via`'s API with its join token). */
int harness_start(struct harness *h, int i, enum hstart how, int via);
/* Send sig and wait (bounded) for the exit; returns the wait status. */
int harness_stop(struct harness *h, int i, int sig);
/* Remove node i's data directory (it must be stopped). */
void harness_wipe(struct harness *h, int i);

/* A client with the API endpoints of the given nodes (all if mask 0). */
struct cd_client *harness_client(struct harness *h,
                                 unsigned mask,
                                 unsigned timeout_ms);

/* Poll until `voters` voters are in the configuration (asked of any node),
 * within timeout_ms.  0 or CD_ETIMEOUT. */
int harness_wait_voters(struct harness *h,
                        unsigned voters,
                        unsigned timeout_ms);
/* The node index of the current leader, or -1. */
int harness_leader(struct harness *h, unsigned timeout_ms);
/* Status of node i alone (no redirects): 0 and *st, or an error. */
int harness_status(struct harness *h, int i, struct cd_msg *st);
/* Poll until every running node has applied at least revision rev. */
int harness_wait_revision(struct harness *h, uint64_t rev, unsigned timeout_ms);
/* Compare the kv contents of every running node's store (read-only, while
 * they run); 0 if identical, else CD_ECORRUPT with why filled. */
int harness_compare_stores(struct harness *h, char *why, size_t why_len);
/* Node i's store meta, read from its file (while it runs). */
int harness_store_meta(struct harness *h, int i, struct store_meta *m);
/* Does node i's log contain needle? */
int harness_log_has(struct harness *h, int i, const char *needle);
/* Does the file at path contain needle (in one line)? */
int harness_file_has(const char *path, const char *needle);

/* What a store holds: its revision, its number of keys and a digest of
 * every key, value and revision.  Two stores with the same digest hold the
 * same keys with the same values and revisions. */
struct harness_digest
{
    uint64_t revision;
    uint64_t epoch;
    uint64_t keys;
    uint64_t hash;
};
/* The store file at path (a parent's state.mdb, a child's cache.mdb),
 * read-only, while its owner runs. */
int harness_store_digest(const char *path, struct harness_digest *out);

/* Run clusterctl with --endpoints of every node and args (NULL-ended, at
 * most 20); its output is appended to log.  Its exit status, or -1 (killed
 * after 60 s, or it could not run).  harness_ctl(h, log, "backup", "now")
 * makes the list. */
int harness_ctlv(struct harness *h, const char *log, const char *const *args);
#define harness_ctl(h, log, ...) \
    harness_ctlv((h), (log), (const char *const[]){__VA_ARGS__, NULL})

/* --- children ----------------------------------------------------------- */

/* Start clusterd-child i, following endpoints (NULL: every node's API, in
 * order), reporting every 300 ms with one check ("self"); with a token it
 * joins on this first start.  0, or -errno. */
int harness_child_start(struct harness *h,
                        int i,
                        const char *token,
                        const char *endpoints);
/* Send sig and reap child i (SIGKILL after 10 s): its wait status. */
int harness_child_stop(struct harness *h, int i, int sig);
/* <dir>/c<i+1>/cache.mdb */
void harness_cache_path(struct harness *h, int i, char *out, size_t len);
/* The value of key in child i's cache, read with libclusterd as a program
 * on the child does: 0 and *out (malloc'd), or the error. */
int harness_cache_get(struct harness *h, int i, const char *key, char **out);
/* The cache's revision, 0 if it cannot be read. */
uint64_t harness_cache_revision(struct harness *h, int i);
/* Poll until key holds want in child i's cache: 0 or CD_ETIMEOUT. */
int harness_wait_cache(struct harness *h,
                       int i,
                       const char *key,
                       const char *want,
                       unsigned timeout_ms);

/* In a cmocka test (included after <cmocka.h>): fail unless expr returns
 * want, naming both codes. */
#ifdef fail_msg
#define check_rc(expr, want)                                                  \
    do {                                                                      \
        int got_ = (expr);                                                    \
        if (got_ != (want)) {                                                 \
            fail_msg("%s: expected %s, got %s (%d)", #expr, cd_errname(want), \
                     cd_errname(got_), got_);                                 \
        }                                                                     \
    } while (0)
#endif

/* Small shared pieces of the integration tests. */
uint64_t harness_now_ms(void); /* CLOCK_MONOTONIC */
void harness_sleep_ms(unsigned ms);
/* Is 127.0.0.1:port free to listen on right now? */
int harness_port_free(int port);
/* A fresh join token from the cluster (600 s), as `clusterctl token
 * create` makes: 0, or the call's error. */
int harness_token(struct harness *h, char *tok, size_t len);
/* Start argv[0] with argv, stdout and stderr appended to log, env
 * ("NAME=VALUE" strings, NULL-ended; may be NULL) added in the process.
 * The pid, or -1. */
pid_t harness_spawn(const char *const *argv,
                    const char *log,
                    const char *const *env);
/* Send sig (0: none) to pid and reap it, SIGKILL after timeout_ms: its
 * wait status, or -1 when it had to be killed (or pid <= 0). */
int harness_reap(pid_t pid, int sig, unsigned timeout_ms);

#endif
