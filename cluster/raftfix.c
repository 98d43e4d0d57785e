/*
 * raftfix.c - a repair of libraft 0.22.1's configuration bookkeeping; see
 * raftfix.h for the bug and the argument.
 */
#include "raftfix.h"

#include <string.h>

void raftfix_init(struct raftfix *fx)
{
    memset(fx, 0, sizeof *fx);
}

/* dst := a copy of src (public API only); 0 or a raft error. */
static int conf_copy(const struct raft_configuration *src,
                     struct raft_configuration *dst)
{
    raft_configuration_init(dst);
    for (unsigned i = 0; i < src->n; i++) {
        const struct raft_server *s = &src->servers[i];
        int rv = raft_configuration_add(dst, s->id, s->address, s->role);
        if (rv != 0) {
            raft_configuration_close(dst);
            return rv;
        }
    }
    return 0;
}

int raftfix_check(struct raftfix *fx, struct raft *r)
{
    raft_index marker = r->configuration_uncommitted_index;
    raft_index applied = raft_last_applied(r);
    raft_index last = raft_last_index(r);

    if (marker == 0 || applied < marker) {
        fx->marker = 0; /* nothing pending, or pending as libraft means */
        return 0;
    }
    if (fx->marker != marker || fx->term != r->current_term ||
        last < fx->until) {
        /* First sight (or the log moved under it): watch from here. */
        fx->marker = marker;
        fx->until = last;
        fx->term = r->current_term;
        return 0;
    }
    if (applied < fx->until) {
        return 0;
    }
    struct raft_configuration committed;
    if (conf_copy(&r->configuration, &committed) != 0) {
        return -1;
    }
    raft_configuration_close(&r->configuration_committed);
    r->configuration_committed = committed;
    r->configuration_committed_index = fx->until;
    r->configuration_uncommitted_index = 0;
    fx->marker = 0;
    return 1;
}
