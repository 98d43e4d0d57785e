/*
 * vipctl.c - when the virtual IP is held: the leader's lease.
 *
 * The argument (docs/operations.md, "The virtual IP", says it for
 * operators):
 *
 *   lease.  The leader holds the VIP only while it has a lease: the time at
 *   which it sent a barrier that a majority has since acknowledged
 *   (committed), plus vip_lease_ms, on its own monotonic clock.  It sends
 *   such a barrier every lease/4, so a healthy leader's lease never lapses.
 *   Any voter that acknowledged that barrier heard from this leader at or
 *   after lease_start.
 *
 *   election.  A new leader needs the votes of a majority; libraft's
 *   followers refuse votes while they have heard from a live leader within
 *   election_ms, so each of them was silent-for-election_ms (or more, the
 *   timeout is randomised upwards) on its own clock.  Two majorities share
 *   a voter: that voter heard from the old leader at or after its
 *   lease_start and then stayed election_ms without hearing from it before
 *   voting.  So the new leader is elected no earlier than lease_start +
 *   election_ms, in that voter's time.
 *
 *   clocks.  With clock rates off by at most drift (vip_clock_drift_pct),
 *   lease * (1 + drift) < election * (1 - drift) makes the old leader's
 *   lease end first.  config_finish() refuses a lease that breaks it.
 *
 *   claim.  A new leader claims the VIP once its own barrier committed (it
 *   has a lease) and not before vip_lease_ms * (1 + drift) / (1 - drift)
 *   after it last heard from the old leader as a follower: the second
 *   bound also covers a leadership transfer, where no election timeout
 *   passes (the old leader releases the VIP before it starts a transfer,
 *   and this bound covers a release that was lost).  A node that became
 *   leader less than election_ms after it last heard from the old one
 *   stood because of a TimeoutNow, and counts the bound from the moment
 *   it won.  "Heard" is the arrival of a message, not the follower's
 *   belief that a leader exists, which lasts until its own election
 *   timeout: counting from that belief delayed every claim after a crash
 *   by the bound (319 ms with the default profile).
 *
 *   pause.  A leader stopped (SIGSTOP, a stalled VM) and resumed checks its
 *   lease against the monotonic clock before the API reads anything (every
 *   read callback calls server__vip_check), so it answers nothing with a
 *   lapsed lease; the kernel's copy of the address is removed at once.
 *
 *   crash.  A killed leader leaves the address on its interface; clusterd
 *   removes it at start, before raft starts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "server_int.h"
#include "vip.h"

#define GARP_FIRST_MS 200    /* the second announcement, after the first */
#define GARP_SECOND_MS 500   /* the third */
#define GARP_REFRESH_MS 1500 /* then while held */
/* Added to the moment a leader's message was seen: raft's clock (uv_now)
 * is read once per loop turn, so a message in the same millisecond of it
 * as the last one changes nothing we can see. */
#define SEEN_MARGIN_MS 2

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The old leader's lease as this node's clock may see it. */
static uint64_t lease_bound_ms(const struct server *s)
{
    unsigned d = s->cfg.vip_clock_drift_pct;
    return (uint64_t)s->cfg.vip_lease_ms * (100 + d) / (100 - d) + 1;
}

static void release(struct server *s, const char *why)
{
    if (!s->vip_held) {
        return;
    }
    int rc = vip_del(s->vip);
    s->vip_held = 0;
    if (rc != 0) {
        log_error("vip", "could not remove %s (%s): %s", vip_name(s->vip), why,
                  cd_strerror(rc));
    } else {
        log_info("vip", "released %s: %s", vip_name(s->vip), why);
    }
}

void server__vip_drop_conns(struct server *s)
{
    uint32_t addr;
    if (s->vip != NULL && vip_parse(s->cfg.vip, &addr, NULL) == 0) {
        server__api_drop_local(s, addr);
    }
}

void server__vip_release(struct server *s, const char *why)
{
    if (s->vip != NULL) {
        release(s, why);
        /* A new claim by this node needs a lease taken from now on. */
        s->vip_lease_start = 0;
    }
}

static void timer_cb(uv_timer_t *t);

static void lease_barrier_cb(struct raft_barrier *req, int status)
{
    struct server *s = req->data;
    s->vip_barrier_busy = 0;
    uint64_t took = mono_ms() - s->vip_barrier_sent;
    if (status != 0 || took * 2 > s->cfg.vip_lease_ms) {
        /* Debug only: at lease/4 a slow majority would flood the log;
         * a lapse is logged where it matters, at the release. */
        log_debug("vip", "lease barrier: status %d after %" PRIu64 " ms",
                  status, took);
    }
    if (status == 0 && s->vip_barrier_sent > s->vip_lease_start &&
        s->vip_barrier_term == raft_current_term(&s->raft)) {
        s->vip_lease_start = s->vip_barrier_sent;
    }
    if (!s->vip_timer_closed) {
        uv_timer_start(&s->vip_timer, timer_cb, 0, 0);
    }
}

static void arm(struct server *s, uint64_t now);

/* Evaluate everything at the monotonic time now. */
static void evaluate(struct server *s, uint64_t now)
{
    int leader =
        s->raft_inited && raft_state(&s->raft) == RAFT_LEADER && !s->stopping;
    if (!leader) {
        raft_id id = 0;
        const char *addr;
        if (s->raft_inited) {
            raft_leader(&s->raft, &id, &addr);
        }
        if (id != 0 && id != s->id &&
            (s->vip_last_leader_seen == 0 ||
             s->raft.election_timer_start != s->vip_leader_timer)) {
            /* libraft restarts a follower's election timer on each
             * message of its leader; this runs every loop turn, so now is
             * at or after that message's arrival.  A follower that keeps
             * a dead leader's id until its own timeout is not "seeing"
             * it meanwhile. */
            s->vip_leader_timer = s->raft.election_timer_start;
            s->vip_last_leader_seen = now + SEEN_MARGIN_MS;
        }
        if (s->vip_was_leader) {
            s->vip_was_leader = 0;
            s->vip_lease_start = 0;
        }
        release(s, s->stopping ? "stopping" : "not the leader");
        return;
    }
    if (!s->vip_was_leader) {
        s->vip_was_leader = 1;
        s->vip_lease_start = 0;
        uint64_t heard = s->vip_last_leader_seen > s->vip_started_ms
                             ? s->vip_last_leader_seen
                             : s->vip_started_ms;
        /* Elected by its own timeout, this node heard nothing from the old
         * leader for election_ms: the election argument holds and the
         * wait below has passed.  Sooner, a TimeoutNow made it stand (a
         * transfer): the wait counts from now, not from a last message
         * this loop may have seen a turn late. */
        uint64_t from = now - heard >= s->cfg.election_ms ? heard : now;
        s->vip_claim_at = from + lease_bound_ms(s);
        s->vip_next_barrier = now;
    }
    /* Keep the lease fresh. */
    if (now >= s->vip_next_barrier && !s->vip_barrier_busy &&
        !server__quiescing(s)) {
        s->vip_barrier.data = s;
        s->vip_barrier_sent = now;
        s->vip_barrier_term = raft_current_term(&s->raft);
        if (raft_barrier(&s->raft, &s->vip_barrier, lease_barrier_cb) == 0) {
            s->vip_barrier_busy = 1;
        }
        unsigned every = s->cfg.vip_lease_ms / 4;
        s->vip_next_barrier = now + (every > 0 ? every : 1);
    }
    int lease_ok = s->vip_lease_start != 0 &&
                   now < s->vip_lease_start + s->cfg.vip_lease_ms;
    if (s->cfg.vip_no_lease) {
        /* make lab-controls only: a leader that ignores its lease, to
         * show the checkers catch two holders. */
        lease_ok = 1;
        s->vip_claim_at = 0;
    }
    if (s->vip_held && !lease_ok) {
        char why[96];
        snprintf(why, sizeof why,
                 "lease lapsed (no majority acknowledgement for %" PRIu64
                 " ms; barrier %s)",
                 s->vip_lease_start != 0 ? now - s->vip_lease_start : 0,
                 s->vip_barrier_busy ? "in flight" : "idle");
        release(s, why);
        return;
    }
    if (!s->vip_held && lease_ok && s->lead == LEAD_READY &&
        now >= s->vip_claim_at && raft_transferee(&s->raft) == 0) {
        int rc = vip_add(s->vip);
        if (rc != 0) {
            log_error("vip", "could not add %s: %s", vip_name(s->vip),
                      cd_strerror(rc));
            return;
        }
        s->vip_held = 1;
        s->vip_garps = 0;
        s->vip_next_garp = now;
        log_info("vip", "claimed %s (term %llu)", vip_name(s->vip),
                 (unsigned long long)raft_current_term(&s->raft));
    }
    if (s->vip_held && now >= s->vip_next_garp) {
        int rc = vip_announce(s->vip);
        if (rc != 0 && s->vip_garps == 0) {
            log_warn("vip", "gratuitous ARP for %s failed: %s",
                     vip_name(s->vip), cd_strerror(rc));
        }
        s->vip_garps++;
        s->vip_next_garp =
            now + (s->vip_garps == 1   ? GARP_FIRST_MS
                   : s->vip_garps == 2 ? GARP_SECOND_MS - GARP_FIRST_MS
                                       : GARP_REFRESH_MS);
    }
}

static void timer_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    uint64_t now = mono_ms();
    evaluate(s, now);
    arm(s, now);
}

/* Wake at the next moment something is due. */
static void arm(struct server *s, uint64_t now)
{
    if (s->vip == NULL || s->vip_timer_closed) {
        return;
    }
    uint64_t next = now + 1000;
    if (s->vip_was_leader) {
        if (!s->vip_barrier_busy) { /* a busy one re-arms on completion */
            next = s->vip_next_barrier < next ? s->vip_next_barrier : next;
        }
        if (s->vip_held) {
            uint64_t lapse = s->vip_lease_start + s->cfg.vip_lease_ms;
            if (lapse > now && lapse < next) {
                next = lapse;
            }
            next = s->vip_next_garp < next ? s->vip_next_garp : next;
        } else if (s->vip_claim_at > now && s->vip_claim_at < next) {
            next = s->vip_claim_at;
        }
    }
    /* Never 0: libuv 1.44 runs a timer that is due now again in the same
     * turn, without polling for I/O, so a step evaluate() cannot take yet
     * (a lease barrier while a leadership transfer holds new entries)
     * would spin the loop for ever, and the transfer, waiting on I/O,
     * would never end (seen in make lab, membership: the leader asked to
     * leave hung).  1 ms lets the loop poll between two looks. */
    uv_timer_start(&s->vip_timer, timer_cb, next > now ? next - now : 1, 0);
}

void server__vip_check(struct server *s)
{
    if (s->vip != NULL) {
        uint64_t now = mono_ms();
        evaluate(s, now);
        arm(s, now);
    }
}

int server__vip_start(struct server *s)
{
    if (s->cfg.vip[0] == '\0') {
        return 0;
    }
    int rc = vip_open(s->cfg.vip, s->cfg.vip_interface, &s->vip);
    if (rc != 0) {
        log_error("vip", "cannot manage %s on %s: %s", s->cfg.vip,
                  s->cfg.vip_interface, cd_strerror(rc));
        return rc;
    }
    /* A crash (or a kill while paused) leaves the address behind. */
    if ((rc = vip_del(s->vip)) != 0) {
        log_error("vip", "cannot remove a stale %s: %s", vip_name(s->vip),
                  cd_strerror(rc));
        vip_close(s->vip);
        s->vip = NULL;
        return rc;
    }
    s->vip_started_ms = mono_ms();
    uv_timer_init(s->loop, &s->vip_timer);
    s->vip_timer.data = s;
    arm(s, s->vip_started_ms);
    log_info("vip", "managing %s (lease %u ms, election %u ms, drift %u%%)",
             vip_name(s->vip), s->cfg.vip_lease_ms, s->cfg.election_ms,
             s->cfg.vip_clock_drift_pct);
    return 0;
}

static void vip_timer_closed_cb(uv_handle_t *h)
{
    struct server *s = h->data;
    s->handles_open--;
    server__maybe_stopped(s);
}

void server__vip_close(struct server *s)
{
    if (s->vip == NULL) {
        return;
    }
    release(s, "stopping");
    if (!s->vip_timer_closed) {
        s->vip_timer_closed = 1;
        s->handles_open++;
        uv_close((uv_handle_t *)&s->vip_timer, vip_timer_closed_cb);
    }
}

void server__vip_free(struct server *s)
{
    if (s->vip != NULL) {
        if (s->vip_held) {
            vip_del(s->vip);
        }
        vip_close(s->vip);
        s->vip = NULL;
    }
}

void server__vip_fatal(struct server *s)
{
    /* About to _exit: never leave the address behind a dead leader. */
    if (s->vip != NULL && s->vip_held) {
        vip_del(s->vip);
        s->vip_held = 0;
    }
}
