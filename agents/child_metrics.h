/*
 * child_metrics.h - clusterd-child's /metrics, /healthz and /readyz on
 * metrics_address (the HTTP server of cluster/metrics.h).
 *
 * Series (prefix clusterd_child_): id, revision, state (1 following,
 * 0 degraded), staleness_seconds, last_contact_timestamp_seconds,
 * service_up{name} (one per configured check), services{state}; and the
 * process_* series.  /healthz answers 200 while the process serves;
 * /readyz 200 once the cache is open (always, here), with the state in
 * the body.
 *
 * Threads: the HTTP threads read the follower's getters (safe from any
 * thread, follower.h) and the cache's meta (store.h: any thread), and a
 * copy of the checks' results that child_metrics_services() refreshes
 * under this module's lock.  They never wait for another thread.
 */
#ifndef CD_AGENTS_CHILD_METRICS_H
#define CD_AGENTS_CHILD_METRICS_H

#include <stdint.h>

#include "follower.h"
#include "health.h"

struct child_metrics;

/* Serve on addr; f must stay open until child_metrics_stop.  h gives the
 * checks' names (their results: child_metrics_services).  Errors as
 * metrics_http_start, -ENOMEM. */
int child_metrics_start(const char *addr,
                        struct follower *f,
                        uint64_t child_id,
                        const struct health *h,
                        struct child_metrics **out);

/* The checks' latest results (after health_run).  Any thread; NULL-safe. */
void child_metrics_services(struct child_metrics *m, const struct health *h);

/* Stop serving; returns once the HTTP threads have ended.  NULL-safe. */
void child_metrics_stop(struct child_metrics *m);

#endif
