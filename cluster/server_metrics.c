/*
 * server_metrics.c - a parent's figures for metrics.h: gathered on the loop
 * thread at each housekeeping tick (api.c) and published to the HTTP
 * threads, which never touch the loop.
 */
#include <raft.h>
#include <string.h>

#include "../lib/log.h"
#include "metrics.h"
#include "server_int.h"

int server__metrics_start(struct server *s)
{
    if (s->cfg.metrics_addr[0] == '\0') {
        return 0;
    }
    int rc = s->metrics == NULL ? metrics_new(&s->metrics) : 0;
    if (rc == 0) {
        rc = metrics_start(s->metrics, s->cfg.metrics_addr);
    }
    if (rc != 0) {
        return rc;
    }
    server__metrics_tick(s); /* /healthz answers from the start */
    log_info("metrics", "serving /metrics, /healthz and /readyz on http://%s",
             s->cfg.metrics_addr);
    return 0;
}

void server__metrics_stop(struct server *s)
{
    metrics_stop(s->metrics);
}

void server__metrics_tick(struct server *s)
{
    struct metrics_state st;
    raft_id leader = 0;
    const char *addr = NULL;
    if (s->metrics == NULL || !s->raft_inited) {
        return;
    }
    metrics_set_vip(s->metrics, s->vip_held);
    memset(&st, 0, sizeof st);
    raft_leader(&s->raft, &leader, &addr);
    st.node_id = s->id;
    st.term = raft_current_term(&s->raft);
    st.leader_id = leader;
    st.is_leader = s->lead == LEAD_READY;
    st.commit_index = raft_commit_index(&s->raft);
    st.applied_index = raft_last_applied(&s->raft);
    st.revision = s->fsm.revision;
    st.connections = s->n_conns;
    if (metrics_wanted(s->metrics)) {
        /* A scrape waits: the costlier figures too, once per scrape. */
        server__watch_counts(s, &st.watchers, &st.child_streams);
        server__children_stats(s, &st);
        server__backup_stats(s, &st);
        struct store_meta meta;
        if (server__store_meta(s, &meta) == 0) {
            st.epoch = meta.epoch;
        }
        st.cluster_id = s->cluster_id;
        st.children_known = 1;
    }
    metrics_publish(s->metrics, &st);
}
