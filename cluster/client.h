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

struct cd_client_config
{
    const char *const *endpoints; /* "a.b.c.d:port" or "host:port" */
    size_t n_endpoints;
    unsigned timeout_ms;       /* per attempt; default 5000 */
    unsigned total_timeout_ms; /* whole call, retries included; 15000 */
    uint64_t cluster_id;       /* 0: accept any cluster */
    size_t max_frame;          /* 0: CODEC_DEFAULT_MAX_FRAME */
};

struct cd_client;

/* No I/O happens until the first call.  cfg and its strings are copied.
 * -EINVAL (no endpoints, or one that is not "host:port"), -ENOMEM. */
int cd_client_open(const struct cd_client_config *cfg, struct cd_client **out);
void cd_client_close(struct cd_client *c); /* NULL-safe */

/* Parse "a,b,c" into the config's endpoint list (strings owned by *list;
 * free with cd_client_free_endpoints).  Blanks around entries are dropped;
 * an IPv6 address is written "[::1]:7101".  -EINVAL for an empty entry or
 * one that is not host:port with a port in 1..65535; -ENOMEM. */
int cd_client_parse_endpoints(const char *csv, char ***list, size_t *n);
void cd_client_free_endpoints(char **list, size_t n);

/*
 * Send req and wait for its reply (request ids are filled in).  For
 * CD_MSG_WRITE the client request id is assigned unless already set.
 * Retries on another endpoint when a connection fails, and at the leader on
 * CD_ENOTLEADER, within total_timeout_ms.  On success *resp is a decoded
 * message to free with codec_msg_free(); an error reply is returned as its
 * code (and *resp is then freed already).
 *
 * The reply's type is checked against the request's (WRITE: WRITE_RESP;
 * GET, RANGE: RANGE_RESP; TRANSFER, SHUTDOWN: OK; TOKEN: TOKEN_RESP;
 * BACKUP: OK for a new schedule, else BACKUP_RESP;
 * MEMBER_CHANGE: OK, or for an ADD MEMBERS_RESP with the new member;
 * ...).  Retried: connection failures, CD_ENOTLEADER, CD_ELEADERLOST,
 * CD_ESHUTDOWN and CD_ETIMEOUT replies, and an attempt without an answer
 * within timeout_ms.  MEMBER_CHANGE, TRANSFER, TOKEN and SHUTDOWN carry no
 * id that would make a repeat harmless, so they are retried only while
 * they cannot have been acted on: once sent, no answer returns CD_ETIMEOUT
 * and the three server codes above return as themselves, at once.  A
 * SHUTDOWN stops whichever node answers first: give its client that one
 * endpoint only.
 *
 * When total_timeout_ms runs out, the result is CD_ETIMEOUT if the request
 * may have reached a server (sent, then no definitive answer), else the
 * last reason it could not be sent: a negative errno (-ECONNREFUSED,
 * -ETIMEDOUT, -EHOSTUNREACH also for a name that does not resolve), or
 * CD_ENOTLEADER when no leader was elected in time.  Returned at once,
 * without retrying: CD_EFRAMETOOBIG, CD_EMALFORMED, CD_EBADOP or
 * CD_ETOOMANY for a reply that is not a valid clusterd message (the
 * connection is closed: a wrong port?), and CD_EBADCLUSTER for a reply
 * from another cluster.  For a write these leave the outcome unknown, as
 * CD_ETIMEOUT does.
 *
 * CD_EDUPLICATE answering a write that an earlier attempt of this call may
 * have delivered means that attempt was applied: the call returns 0 with a
 * WRITE_RESP whose revision, succeeded and deleted are 0, since the
 * results went with the lost answer (revision 0 never follows a real
 * write).  CD_EBADOP for CD_MSG_WATCH and CD_MSG_SNAPSHOT: use the calls
 * below.
 */
int cd_client_call(struct cd_client *c,
                   struct cd_msg *req,
                   struct cd_msg *resp);

/* Convenience calls.  Out-parameters may be NULL. */
int cd_client_put(struct cd_client *c,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  uint64_t *revision);
/* *value from malloc (NUL-terminated, not counted); *revision is the
 * key's mod revision (the write that gave it this value); CD_ENOTFOUND. */
int cd_client_get(struct cd_client *c,
                  const void *key,
                  size_t key_len,
                  int serializable,
                  char **value,
                  size_t *value_len,
                  uint64_t *revision);
int cd_client_delete(struct cd_client *c,
                     const void *key,
                     size_t key_len,
                     int prefix,
                     uint64_t *n_deleted);
int cd_client_status(struct cd_client *c, struct cd_msg *resp);

/* The endpoint the last successful call used ("host:port"), or NULL. */
const char *cd_client_endpoint(const struct cd_client *c);

/*
 * Watch: deliver every change after since (under prefix, if any) to cb
 * until cb returns nonzero, the connection fails, or timeout_ms passes
 * without an event (0: forever).  A ChangeBatch with compacted set is
 * passed to cb too; the caller then needs a snapshot.
 *
 * Connecting and the server's acceptance (its OK) are retried like a call,
 * and cd_client_endpoint() is set once the server accepted; nothing is
 * retried after that.  A CHANGES frame with the watch's request id or 0
 * is this watch's.  Returns 0 when cb returned a positive value, cb's
 * value when negative, CD_ETIMEOUT when idle for timeout_ms, -ECONNRESET
 * when the server closed the connection, or the code of an error frame.
 * The connection is closed on return: the server would keep pushing.
 */
typedef int (*cd_client_watch_cb)(void *arg, const struct cd_msg *changes);
int cd_client_watch(struct cd_client *c,
                    uint64_t since,
                    const void *prefix,
                    size_t prefix_len,
                    unsigned timeout_ms,
                    cd_client_watch_cb cb,
                    void *arg);

/*
 * A child's stream: send hello (a CD_MSG_HELLO: cluster id, child id, the
 * cache's revision, registered_rev) to the first parent that answers, then
 * pass every CHANGES frame to cb as cd_client_watch does: the changes
 * after the hello's revision, then live ones, and an empty batch about
 * every second as the parent's heartbeat, so a timeout_ms of a few seconds
 * detects a parent that vanished.  A batch with compacted set means the
 * revision is too old: fetch a snapshot (cd_client_snapshot) and say hello
 * again.  The parent's refusals come back as their code: CD_EBADCLUSTER,
 * CD_EREVOKED (final: the child is not registered), CD_EBUSY (that parent
 * has not applied the registration yet: try again).
 */
int cd_client_follow(struct cd_client *c,
                     const struct cd_msg *hello,
                     unsigned timeout_ms,
                     cd_client_watch_cb cb,
                     void *arg);

/*
 * Stream the leader's (or any parent's) snapshot into fd.  Until the first
 * chunk arrives the request is retried like a call; after that each chunk
 * must come within timeout_ms (total_timeout_ms does not bound a large
 * snapshot) and nothing is retried, since fd has been written to.
 * CD_EMALFORMED when chunks are not contiguous; a write error on fd as
 * its negative errno.
 */
int cd_client_snapshot(struct cd_client *c, int fd, uint64_t *revision);
/* The same, but a copy the parent made a moment ago for another request
 * will do (a child: the stream brings the changes after it), so that many
 * children asking at once share one copy.  cd_client_snapshot() holds
 * every write acknowledged before it was asked for (a backup). */
int cd_client_snapshot_recent(struct cd_client *c, int fd, uint64_t *revision);

/* --- children ------------------------------------------------------------ */

/*
 * A child's identity, assigned by the cluster at join and kept in
 * <data>/child as "key=value" lines (written to a temporary file, synced,
 * then renamed, so a crash leaves the old file or the new one).
 */
struct cd_child_identity
{
    uint64_t cluster_id;
    uint64_t child_id;
    uint64_t registered_rev; /* the revision that registered it */
    char endpoints[512];     /* the parents, as given at join */
};

/* -ENOENT when the child never joined; CD_ECORRUPT for a damaged file. */
int cd_child_identity_load(const char *data_dir, struct cd_child_identity *out);
/* The parser of that file (len bytes, need not be NUL-terminated). */
int cd_child_identity_parse(const char *text,
                            size_t len,
                            struct cd_child_identity *out);
int cd_child_identity_save(const char *data_dir,
                           const struct cd_child_identity *id);

/*
 * Register this host as a child (CHILD_JOIN at the leader): its hostname,
 * non-loopback addresses, first MAC address and OS are gathered here;
 * app_version may be NULL.  Fills out's ids (not its endpoints).  -EACCES
 * for a bad or expired token.  Not retried once sent (a second join would
 * register the host twice): CD_ETIMEOUT leaves it unknown, and the
 * registry (clusterctl children) tells.
 */
int cd_client_child_join(struct cd_client *c,
                         const char *token,
                         const char *app_version,
                         struct cd_child_identity *out);

#endif
