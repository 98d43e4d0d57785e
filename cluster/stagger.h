/*
 * stagger.h - staggered election timeouts: one election round after a
 * leader dies, not two.
 *
 * Why.  libraft 0.22.1 draws each follower's election timeout at random in
 * [E, 2E] and checks it on its tick, which runs every heartbeat.  A
 * follower refuses even a pre-vote while its own timer has not run out
 * ("local server has a leader -> reject"), so after the leader dies the
 * election succeeds only when the LAST of the survivors a majority needs
 * has timed out: on average 1.67 E, at worst 2 E (3 voters).  And when two
 * survivors time out within a message's delay of each other (both on the
 * same tick), each grants the other's pre-vote, both stand, each votes for
 * itself, and the vote splits: another random [E, 2E] follows.  Measured
 * on loopback with E = 150 ms: elections 200-320 ms, and a split vote in
 * about one kill of twenty, elected after 436 ms.
 *
 * What.  A follower's timeout is set to E + rank * step instead, where rank
 * is its position among the voters ordered by id and step =
 * E / (2 * (voters - 1)) (no shorter than three fine ticks): with 3 voters
 * E, 1.25 E, 1.5 E.  No two voters time out together, so the vote cannot
 * split, and the last survivor a majority needs times out by 1.5 E.  And
 * followers and candidates are ticked every few ms (a quarter of the
 * smallest step, that of 7 voters: E / 48, at most a heartbeat), so the
 * timeouts are kept to a few ms rather than rounded up to the next
 * heartbeat.  Leaders keep libraft's own tick, once a
 * heartbeat: a leader's tick also demotes a follower that has not answered
 * since the last tick from pipeline to probe mode, which a finer tick
 * would do for no reason.
 *
 * A first pre-vote that fails.  The survivor that stands first asks the
 * others while their timers still run, and they refuse ("local server has
 * a leader").  When the next one stands, it asks the first, which refuses
 * it too if its log is shorter (it missed the dead leader's last entries):
 * then only the first can win, and libraft would have it retry after a
 * random [E, 2E], so the election took E + [E, 2E] (seen in make bench as
 * 964-1052 ms with E = 400, and 388-499 ms with E = 150).  So a pre-vote
 * candidate's first retry comes once every voter's follower timeout must
 * have run out: at E + (n - 1) * step + step / 2 after the last heartbeat
 * (plus rank * step / 4, so that two candidates do not retry together).
 * Later rounds, and the real vote after a successful pre-vote, keep
 * libraft's random [E, 2E].
 *
 * Safety does not depend on any of this: timeouts only decide when a node
 * stands for election, never who may win.  A node that is not a voter
 * keeps libraft's random draw.  The cost: a follower times out at E rather
 * than at 1.5 E on average, so a heartbeat stall of more than E + step
 * (not of 1.5 E on average) makes an election; pre-vote keeps a lone
 * follower's timeout harmless.
 *
 * It works through two public fields of struct raft (raft.h):
 * follower_state.randomized_election_timeout, which libraft redraws only
 * when a node becomes follower (and which libraft's own fixture sets the
 * same way), and the configuration, to find the rank.  stagger_apply()
 * runs before each fine tick hands time to raft, and should also run every
 * loop turn (a uv_prepare): libraft redraws the timeout when a node
 * becomes follower, and its own once-a-heartbeat tick must not act on
 * that draw for long.
 *
 * Threads: the loop thread only.
 */
#ifndef CD_STAGGER_H
#define CD_STAGGER_H

#include <raft.h>
#include <uv.h>

struct stagger
{
    uv_timer_t fine_timer; /* ticks followers and candidates */
    struct raft *raft;
    struct raft_io *io;
    raft_io_tick_cb tick_cb; /* raft's, captured by the start wrapper */
    unsigned election_ms;
    unsigned heartbeat_ms;
    unsigned fine_ms; /* 0 until the start wrapper ran */
    int timer_open;
    int last_state;        /* raft_state() at the last stagger_apply() */
    raft_time first_round; /* election timer start of the first pre-vote */
};

/* Set up; no I/O.  The caller wraps io->start (raft_start() calls it):
 * the wrapper calls the backend's start, then stagger_start(). */
void stagger_init(struct stagger *st,
                  struct raft *raft,
                  struct raft_io *io,
                  unsigned election_ms,
                  unsigned heartbeat_ms);

/* From the io->start wrapper, after the backend's start returned 0:
 * remember raft's tick and start the fine tick on loop.  0, or a libuv
 * error (the fine tick is then off; libraft's own tick still runs). */
int stagger_start(struct stagger *st, uv_loop_t *loop, raft_io_tick_cb tick);

/* Set this follower's timeout to its staggered value, or a candidate's
 * first pre-vote retry (see above). */
void stagger_apply(struct stagger *st);

/* The follower timeout stagger_apply() sets for a voter of this rank among
 * n voters (exposed for the tests). */
unsigned stagger_timeout_ms(unsigned election_ms,
                            unsigned rank,
                            unsigned n_voters);

/* The first pre-vote retry of a candidate of this rank among n voters,
 * counted from when it stood (exposed for the tests). */
unsigned stagger_retry_ms(unsigned election_ms,
                          unsigned rank,
                          unsigned n_voters);

/* Stop the fine tick; cb(handle) when closed (NULL-safe: nothing to close
 * returns 0 and cb is not called; otherwise returns 1). */
int stagger_close(struct stagger *st, uv_close_cb cb, void *data);

#endif
