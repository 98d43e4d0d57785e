/*
 * raftfix.h - a repair of libraft 0.22.1's configuration bookkeeping.
 *
 * The bug.  A follower that receives a configuration change (RAFT_CHANGE)
 * in an AppendEntries batch records it as uncommitted under the index of
 * the batch's FIRST new entry, not its own (replicationAppend passes the
 * same `index` for every entry; cowsql/raft's main branch still does).
 * When the change is applied, libraft compares its real index with the
 * recorded one, finds them different, and neither clears the marker nor
 * updates its copy of the committed configuration.  So, on every parent
 * that received a membership change behind another entry, which is every
 * change made under write load:
 *
 *   1. configuration_uncommitted_index stays set for good: when that
 *      parent becomes leader, every raft_add, raft_remove and raft_assign
 *      is refused ("a configuration change is already in progress"), so no
 *      join, leave, promotion or replacement of a failed voter can happen
 *      until a restart;
 *   2. configuration_committed stays an older configuration, and every
 *      snapshot the parent takes records it: a parent that installs such a
 *      snapshot, or restarts from it, loses the members added since (found
 *      by the extended lab: a rejoined parent missing from the
 *      configuration of the one that installed the leader's snapshot).
 *
 * The repair.  Once per loop turn, raftfix_check() looks for the one state
 * correct libraft never leaves between two turns: an uncommitted marker at
 * or below the last applied index (applying the entry at the marker clears
 * it).  It then notes the last log index L and the term.  When the log
 * has been applied up to L, in the same term, with the log never shorter
 * than L in between and the marker unchanged, the change that set the
 * marker (in [marker, L]) is committed and applied, and raft's current
 * configuration, which libraft set when the entry arrived, is the committed
 * one.  raftfix_check() then does what libraft meant to: it copies the
 * current configuration into configuration_committed, sets
 * configuration_committed_index to L (the configuration in force at L; no
 * other change lies between it and L) and clears the marker.
 *
 * Limits.  The repair trusts raft's current configuration.  libraft's own
 * rollback on a log truncation also keys on the wrong index, so a
 * truncation that removes the change but starts after the marker leaves a
 * wrong current configuration behind; the repair would then persist it.
 * That needs a change sent behind other entries, uncommitted, and
 * overwritten by a new leader in the same term; it is libraft's to fix.
 *
 * Call it on the loop thread, between raft's callbacks (a uv_check_t).
 */
#ifndef CLUSTERD_RAFTFIX_H
#define CLUSTERD_RAFTFIX_H

#include <raft.h>

struct raftfix
{
    raft_index marker; /* the stale marker being watched, 0 if none */
    raft_index until;  /* L: the last log index when it was seen */
    raft_term term;    /* the term then */
};

void raftfix_init(struct raftfix *fx);

/* Check r once: 1 when the bookkeeping was repaired by this call, 0 when
 * nothing was (or there is nothing to repair yet), -1 when the repair was
 * due but memory ran out (it is tried again on the next call). */
int raftfix_check(struct raftfix *fx, struct raft *r);

#endif
