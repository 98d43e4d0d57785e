/*
 * null_fsm.h - a libraft state machine that does nothing, for the unit
 * tests that drive libraft's fixture for its timers or its membership
 * bookkeeping only (test_stagger, test_raftfix).  Header-only: each test
 * is one translation unit.
 */
#ifndef CLUSTERD_TESTS_NULL_FSM_H
#define CLUSTERD_TESTS_NULL_FSM_H

#include <raft.h>
#include <string.h>

static int null_fsm_apply(struct raft_fsm *fsm,
                          const struct raft_buffer *buf,
                          void **result)
{
    (void)fsm;
    (void)buf;
    *result = NULL;
    return 0;
}

/* One 8-byte zero buffer. */
static int null_fsm_snapshot(struct raft_fsm *fsm,
                             struct raft_buffer *bufs[],
                             unsigned *n_bufs)
{
    (void)fsm;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = raft_calloc(1, 8);
    if ((*bufs)[0].base == NULL) {
        raft_free(*bufs);
        return RAFT_NOMEM;
    }
    (*bufs)[0].len = 8;
    *n_bufs = 1;
    return 0;
}

static int null_fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    raft_free(buf->base);
    return 0;
}

static inline void null_fsm_init(struct raft_fsm *fsm)
{
    memset(fsm, 0, sizeof *fsm);
    fsm->version = 1;
    fsm->apply = null_fsm_apply;
    fsm->snapshot = null_fsm_snapshot;
    fsm->restore = null_fsm_restore;
}

#endif
