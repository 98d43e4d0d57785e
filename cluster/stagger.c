/*
 * stagger.c - staggered election timeouts (the why is in stagger.h).
 */
#include "stagger.h"

#include <stddef.h>

unsigned stagger_timeout_ms(unsigned election_ms,
                            unsigned rank,
                            unsigned n_voters)
{
    if (n_voters < 2) {
        return election_ms;
    }
    unsigned step = election_ms / (2 * (n_voters - 1));
    if (step < 3) {
        step = 3;
    }
    return election_ms + rank * step;
}

static unsigned fine_ms(unsigned election_ms, unsigned heartbeat_ms)
{
    /* A quarter of the smallest step (that of 7 voters), at most a
     * heartbeat, at least 2 ms. */
    unsigned f = election_ms / 12 / 4;
    if (f > heartbeat_ms) {
        f = heartbeat_ms;
    }
    return f < 2 ? 2 : f;
}

void stagger_init(struct stagger *st,
                  struct raft *raft,
                  struct raft_io *io,
                  unsigned election_ms,
                  unsigned heartbeat_ms)
{
    st->raft = raft;
    st->io = io;
    st->tick_cb = NULL;
    st->election_ms = election_ms;
    st->heartbeat_ms = heartbeat_ms;
    st->fine_ms = 0;
    st->timer_open = 0;
    st->last_state = RAFT_UNAVAILABLE;
    st->first_round = 0;
}

static void fine_tick(uv_timer_t *t)
{
    struct stagger *st = t->data;
    /* A leader's tick stays libraft's own (stagger.h). */
    if (st->tick_cb != NULL && raft_state(st->raft) != RAFT_LEADER) {
        stagger_apply(st);
        st->tick_cb(st->io);
    }
}

int stagger_start(struct stagger *st, uv_loop_t *loop, raft_io_tick_cb tick)
{
    st->tick_cb = tick;
    st->fine_ms = fine_ms(st->election_ms, st->heartbeat_ms);
    int rv = uv_timer_init(loop, &st->fine_timer);
    if (rv != 0) {
        return rv;
    }
    st->timer_open = 1;
    st->fine_timer.data = st;
    return uv_timer_start(&st->fine_timer, fine_tick, st->fine_ms, st->fine_ms);
}

unsigned stagger_retry_ms(unsigned election_ms,
                          unsigned rank,
                          unsigned n_voters)
{
    if (n_voters < 2) {
        return election_ms;
    }
    unsigned step = stagger_timeout_ms(election_ms, 1, n_voters) - election_ms;
    return (n_voters - 1 - rank) * step + step / 2 + rank * (step / 4);
}

void stagger_apply(struct stagger *st)
{
    struct raft *r = st->raft;
    if (st->fine_ms == 0) {
        return;
    }
    int state = raft_state(r);
    int prev = st->last_state;
    st->last_state = state;
    if (state != RAFT_FOLLOWER && state != RAFT_CANDIDATE) {
        return;
    }
    unsigned n = 0, rank = 0, voter = 0;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        const struct raft_server *srv = &r->configuration.servers[i];
        if (srv->role != RAFT_VOTER) {
            continue;
        }
        n++;
        if (srv->id == r->id) {
            voter = 1;
        } else if (srv->id < r->id) {
            rank++;
        }
    }
    if (!voter) {
        return;
    }
    if (state == RAFT_FOLLOWER) {
        r->follower_state.randomized_election_timeout =
            stagger_timeout_ms(st->election_ms, rank, n);
        return;
    }
    /* A candidate: only the first pre-vote round after standing. */
    if (prev == RAFT_FOLLOWER) {
        st->first_round = r->election_timer_start;
    }
    if (r->candidate_state.in_pre_vote &&
        r->election_timer_start == st->first_round) {
        r->candidate_state.randomized_election_timeout =
            stagger_retry_ms(st->election_ms, rank, n);
    }
}

int stagger_close(struct stagger *st, uv_close_cb cb, void *data)
{
    if (!st->timer_open || uv_is_closing((uv_handle_t *)&st->fine_timer)) {
        return 0;
    }
    st->tick_cb = NULL;
    st->fine_timer.data = data;
    uv_close((uv_handle_t *)&st->fine_timer, cb);
    return 1;
}
