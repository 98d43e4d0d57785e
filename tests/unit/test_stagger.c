/*
 * test_stagger.c - the staggered election timeouts (cluster/stagger.h):
 * the timeout of each rank, that stagger_apply() sets it on followers of a
 * real libraft cluster (libraft's fixture) and nowhere else, and that the
 * fine tick hands time to raft on followers but not on the leader.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>
#include <uv.h>

#include "cluster/stagger.h"

#define E 150
#define H 25

static void test_timeouts(void **state)
{
    (void)state;
    /* 3 voters: E, 1.25 E, 1.5 E. */
    assert_int_equal(stagger_timeout_ms(E, 0, 3), 150);
    assert_int_equal(stagger_timeout_ms(E, 1, 3), 187);
    assert_int_equal(stagger_timeout_ms(E, 2, 3), 224);
    /* 5 voters: a step of E / 8, the last at 1.5 E at most. */
    assert_int_equal(stagger_timeout_ms(400, 0, 5), 400);
    assert_int_equal(stagger_timeout_ms(400, 4, 5), 600);
    /* A lone voter, and a step never under 3 ms. */
    assert_int_equal(stagger_timeout_ms(E, 0, 1), 150);
    assert_int_equal(stagger_timeout_ms(20, 6, 7), 20 + 6 * 3);
    /* Never below E: the VIP lease argument (vipctl.c) relies on it. */
    for (unsigned n = 1; n <= 7; n++) {
        for (unsigned r = 0; r < n; r++) {
            assert_true(stagger_timeout_ms(E, r, n) >= E);
            assert_true(stagger_timeout_ms(E, r, n) <= E + E / 2 + 3 * r);
        }
    }
}

/* A state machine that does nothing: the test is about timers only. */
static int fsm_apply(struct raft_fsm *fsm,
                     const struct raft_buffer *buf,
                     void **result)
{
    (void)fsm;
    (void)buf;
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm,
                        struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    (void)fsm;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = raft_malloc(8);
    (*bufs)[0].len = 8;
    memset((*bufs)[0].base, 0, 8);
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    raft_free(buf->base);
    return 0;
}

static unsigned ticks;
static void count_tick(struct raft_io *io)
{
    (void)io;
    ticks++;
}

static void closed(uv_handle_t *h)
{
    (void)h;
}

static void test_fixture(void **state)
{
    (void)state;
    struct raft_fsm fsms[3];
    struct raft_fixture f;
    struct raft_configuration conf;
    memset(fsms, 0, sizeof fsms);
    assert_int_equal(raft_fixture_init(&f), 0);
    for (int i = 0; i < 3; i++) {
        fsms[i].version = 1;
        fsms[i].apply = fsm_apply;
        fsms[i].snapshot = fsm_snapshot;
        fsms[i].restore = fsm_restore;
        assert_int_equal(raft_fixture_grow(&f, &fsms[i]), 0);
    }
    assert_int_equal(raft_fixture_configuration(&f, 3, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&f), 0);
    raft_fixture_elect(&f, 1); /* the node of id 2 leads */

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct stagger st[3];
    for (unsigned i = 0; i < 3; i++) {
        struct raft *r = raft_fixture_get(&f, i);
        unsigned before = r->follower_state.randomized_election_timeout;
        stagger_init(&st[i], r, r->io, E, H);
        /* Before the start wrapper ran: nothing changes. */
        stagger_apply(&st[i]);
        if (raft_state(r) == RAFT_FOLLOWER) {
            assert_int_equal(r->follower_state.randomized_election_timeout,
                             before);
        }
        assert_int_equal(stagger_start(&st[i], &loop, count_tick), 0);
        stagger_apply(&st[i]);
        if (raft_state(r) == RAFT_FOLLOWER) {
            /* ids 1 and 3: ranks 0 and 2 among the voters 1, 2, 3. */
            unsigned want = stagger_timeout_ms(E, (unsigned)r->id - 1, 3);
            assert_int_equal(r->follower_state.randomized_election_timeout,
                             want);
        } else {
            assert_int_equal(raft_state(r), RAFT_LEADER);
            assert_int_equal(r->id, 2);
        }
    }

    /* The fine tick: followers' ticks reach raft, the leader's do not. */
    for (unsigned i = 0; i < 3; i++) {
        struct raft *r = raft_fixture_get(&f, i);
        ticks = 0;
        uv_timer_stop(&st[(i + 1) % 3].fine_timer);
        uv_timer_stop(&st[(i + 2) % 3].fine_timer);
        uint64_t end = uv_now(&loop) + 40;
        while (uv_now(&loop) < end) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        if (raft_state(r) == RAFT_LEADER) {
            assert_int_equal(ticks, 0);
        } else {
            assert_true(ticks >= 3); /* every E / 48 = 3 ms, for 40 ms */
        }
        uv_timer_again(&st[(i + 1) % 3].fine_timer);
        uv_timer_again(&st[(i + 2) % 3].fine_timer);
        uv_timer_stop(&st[i].fine_timer);
    }
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(stagger_close(&st[i], closed, NULL), 1);
        assert_int_equal(stagger_close(&st[i], closed, NULL), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    raft_fixture_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
