/*
 * client.h - the clusterd API client: what clusterctl, the tests, the
 * benchmarks and the children use to talk to the parents.
 *
 * Blocking and simple: one TCP connection at a time, one request in flight
 * per call (except watch, which streams).  The client knows a list of
 * endpoints ("host:port" of parents' API ports, the VIP first); it
 * connects to the first that answers, and follows CD_ENOTLEADER replies to
 * the leader address they carry.  A write carries a client request id
 * (client_id, seq): client_id is random per client, seq grows per write,
 * and a write retried after a timeout, a lost connection or
 * CD_ELEADERLOST keeps its id, so the cluster applies it at most once.
 *
 * Threads: a struct cd_client belongs to one thread at a time.
 *
 * Errors: 0 or a negative code of lib/err.h; the server's error replies
 * come back as their code.  CD_ETIMEOUT means the outcome of a write is
 * unknown (it may still be applied, once).
 */
#ifndef CD_CLIENT_H
#define CD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/ops.h"
#include "../proto/codec.h"

struct cd_client_config {
    const char *const *endpoints; /* "a.b.c.d:port" or "host:port" */
    size_t n_endpoints;
    unsigned timeout_ms;       /* per attempt; default 5000 */
    unsigned total_timeout_ms; /* whole call, retries included; 15000 */
    uint64_t cluster_id;       /* 0: accept any cluster */
    size_t max_frame;          /* 0: CODEC_DEFAULT_MAX_FRAME */
};

struct cd_client;

/* No I/O happens until the first call.  cfg and its strings are copied. */
int cd_client_open(const struct cd_client_config *cfg, struct cd_client **out);
void cd_client_close(struct cd_client *c); /* NULL-safe */

/* Parse "a,b,c" into the config's endpoint list (strings owned by *list;
 * free with cd_client_free_endpoints). */
int cd_client_parse_endpoints(const char *csv, char ***list, size_t *n);
void cd_client_free_endpoints(char **list, size_t n);

/*
 * Send req and wait for its reply (request ids are filled in).  For
 * CD_MSG_WRITE the client request id is assigned unless already set.
 * Retries on another endpoint when a connection fails, and at the leader on
 * CD_ENOTLEADER, within total_timeout_ms.  On success *resp is a decoded
 * message to free with codec_msg_free(); an error reply is returned as its
 * code (and *resp is then freed already).
 */
int cd_client_call(struct cd_client *c, struct cd_msg *req,
                   struct cd_msg *resp);

/* Convenience calls.  Out-parameters may be NULL. */
int cd_client_put(struct cd_client *c, const void *key, size_t key_len,
                  const void *value, size_t value_len, uint64_t *revision);
/* *value from malloc (NUL-terminated, not counted); CD_ENOTFOUND. */
int cd_client_get(struct cd_client *c, const void *key, size_t key_len,
                  int serializable, char **value, size_t *value_len,
                  uint64_t *revision);
int cd_client_delete(struct cd_client *c, const void *key, size_t key_len,
                     int prefix, uint64_t *n_deleted);
int cd_client_status(struct cd_client *c, struct cd_msg *resp);

/* The endpoint the last successful call used ("host:port"), or NULL. */
const char *cd_client_endpoint(const struct cd_client *c);

/*
 * Watch: deliver every change after since (under prefix, if any) to cb
 * until cb returns nonzero, the connection fails, or timeout_ms passes
 * without an event (0: forever).  A ChangeBatch with compacted set is
 * passed to cb too; the caller then needs a snapshot.
 */
typedef int (*cd_client_watch_cb)(void *arg, const struct cd_msg *changes);
int cd_client_watch(struct cd_client *c, uint64_t since, const void *prefix,
                    size_t prefix_len, unsigned timeout_ms,
                    cd_client_watch_cb cb, void *arg);

/* Stream the leader's (or any parent's) snapshot into fd. */
int cd_client_snapshot(struct cd_client *c, int fd, uint64_t *revision);

#endif
