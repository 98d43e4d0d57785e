/*
 * server.h - a clusterd parent: the Raft node, its state machine, the
 * leadership state machine and the API server, all on one libuv loop.
 *
 * Lifecycle: server_init() (no I/O), server_start() (locks the data
 * directory, opens the store, starts raft and the API listener),
 * server_stop() (graceful: a leader first hands leadership over, then
 * everything closes; the loop then runs dry).
 *
 * Threads: the loop thread only.
 */
#ifndef CD_SERVER_H
#define CD_SERVER_H

#include <uv.h>

#include "config.h"

struct server;

/* cfg is copied.  Errors: -ENOMEM. */
int server_init(struct server **out,
                uv_loop_t *loop,
                const struct cd_config *cfg);

/* Errors: CD_ELOCKED, CD_ECONFIG (with a logged reason), CD_ERAFT, store
 * errors, -errno of listen(2). */
int server_start(struct server *s);

/* What runs once a stop completes, whoever asked for it (a signal, or a
 * SHUTDOWN request over the API). */
void server_on_stop(struct server *s, void (*cb)(struct server *s));

/* Begin a graceful stop; cb (NULL: the one set by server_on_stop) runs once
 * everything is closed.  Safe to call more than once (later calls are
 * ignored). */
void server_stop(struct server *s, void (*cb)(struct server *s));

/* Free what server_init allocated, after the stop callback. */
void server_free(struct server *s);

/* Nonzero when the node stopped because of a fatal error (disk, store):
 * the process should exit non-zero so that its supervisor restarts it. */
int server_failed(const struct server *s);

#endif
