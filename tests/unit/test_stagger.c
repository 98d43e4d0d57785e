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

#include "null_fsm.h"
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

/* Three servers with the do-nothing state machine, not started. */
static void fixture3(struct raft_fixture *f, struct raft_fsm fsms[3])
{
    memset(f, 0, sizeof *f); /* raft_fixture_init leaves leader_id */
    assert_int_equal(raft_fixture_init(f), 0);
    for (unsigned i = 0; i < 3; i++) {
        null_fsm_init(&fsms[i]);
        assert_int_equal(raft_fixture_grow(f, &fsms[i]), 0);
    }
}

static void test_fixture(void **state)
{
    (void)state;
    struct raft_fsm fsms[3];
    struct raft_fixture f;
    struct raft_configuration conf;
    fixture3(&f, fsms);
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

/*
 * The first pre-vote retry.  Leader id 1 dies just after id 3 (rank 2)
 * missed its last entry.  id 2 (rank 1) stands first and is refused by
 * id 3 (which still has a leader); id 3 stands next and is refused by id 2
 * (its log is shorter): only id 2 can win, on its retry.  libraft's retry
 * (the fixture's "random" draw, set to 2 E) makes that E + step + 2 E
 * after the leader's last heartbeat; the staggered first retry makes it
 * about 1.5 E + step / 2.  Fixture time, deterministic.
 */
static struct stagger *hook_st;
static int hook_followers_only;

static void hook(struct raft_fixture *f, struct raft_fixture_event *ev)
{
    (void)ev;
    for (unsigned i = 0; i < raft_fixture_n(f); i++) {
        struct raft *r = raft_fixture_get(f, i);
        if (!hook_followers_only || raft_state(r) == RAFT_FOLLOWER) {
            stagger_apply(&hook_st[i]);
        }
    }
}

static void applied(struct raft_apply *req, int status, void *result)
{
    (void)req;
    (void)status;
    (void)result;
}

static bool caught_up(struct raft_fixture *f, void *arg)
{
    (void)arg;
    return raft_last_index(raft_fixture_get(f, 1)) ==
           raft_last_index(raft_fixture_get(f, 0));
}

/* The dead leader (index 0) stays RAFT_LEADER: look at the others. */
static bool survivor_leads(struct raft_fixture *f, void *arg)
{
    (void)arg;
    return raft_state(raft_fixture_get(f, 1)) == RAFT_LEADER ||
           raft_state(raft_fixture_get(f, 2)) == RAFT_LEADER;
}

/* The election's length in fixture ms, and the index of the winner. */
static unsigned shorter_log_election(int followers_only, unsigned *winner)
{
    struct raft_fsm fsms[3];
    struct raft_fixture f;
    struct raft_configuration conf;
    fixture3(&f, fsms);
    for (unsigned i = 0; i < 3; i++) {
        struct raft *r = raft_fixture_get(&f, i);
        raft_set_election_timeout(r, E);
        raft_set_heartbeat_timeout(r, 5);
        raft_set_pre_vote(r, true);
        raft_fixture_set_randomized_election_timeout(&f, i, 2 * E);
        raft_fixture_set_network_latency(&f, i, 1);
        raft_fixture_set_disk_latency(&f, i, 1);
    }
    assert_int_equal(raft_fixture_configuration(&f, 3, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&f), 0);
    uv_loop_t loop;
    struct stagger st[3];
    assert_int_equal(uv_loop_init(&loop), 0);
    for (unsigned i = 0; i < 3; i++) {
        struct raft *r = raft_fixture_get(&f, i);
        stagger_init(&st[i], r, r->io, E, 5);
        assert_int_equal(stagger_start(&st[i], &loop, count_tick), 0);
        uv_timer_stop(&st[i].fine_timer); /* the fixture ticks */
    }
    hook_st = st;
    hook_followers_only = followers_only;
    raft_fixture_hook(&f, hook);
    /* id 1 (rank 0) times out first and leads. */
    assert_true(raft_fixture_step_until_has_leader(&f, 10 * E));
    assert_int_equal(raft_fixture_leader_index(&f), 0);
    raft_fixture_step_until_elapsed(&f, 50);

    /* id 3 misses the leader's last entry, then the leader dies. */
    raft_fixture_saturate(&f, 0, 2);
    struct raft_apply req;
    struct raft_buffer buf = {.base = raft_malloc(8), .len = 8};
    assert_non_null(buf.base);
    memset(buf.base, 0, 8);
    assert_int_equal(
        raft_apply(raft_fixture_get(&f, 0), &req, &buf, 1, applied), 0);
    assert_true(raft_fixture_step_until(&f, caught_up, NULL, 20));
    assert_true(raft_last_index(raft_fixture_get(&f, 2)) <
                raft_last_index(raft_fixture_get(&f, 1)));
    raft_fixture_kill(&f, 0);
    raft_time t0 = raft_fixture_time(&f);
    assert_true(raft_fixture_step_until(&f, survivor_leads, NULL, 10 * E));
    unsigned took = (unsigned)(raft_fixture_time(&f) - t0);
    *winner = raft_state(raft_fixture_get(&f, 1)) == RAFT_LEADER ? 1 : 2;

    raft_fixture_hook(&f, NULL);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(stagger_close(&st[i], closed, NULL), 1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    raft_fixture_close(&f);
    return took;
}

static void test_prevote_retry(void **state)
{
    (void)state;
    /* 3 voters, E = 150: step 37, retries after 93 (rank 0), 64, 37. */
    assert_int_equal(stagger_retry_ms(E, 0, 3), 2 * 37 + 18);
    assert_int_equal(stagger_retry_ms(E, 1, 3), 37 + 18 + 9);
    assert_int_equal(stagger_retry_ms(E, 2, 3), 18 + 18);
    assert_int_equal(stagger_retry_ms(E, 0, 1), E);

    unsigned winner;
    unsigned took = shorter_log_election(0, &winner);
    print_message("staggered first retry: elected after %u ms\n", took);
    assert_int_equal(winner, 1);
    assert_true(took <= E + E / 2 + 18 + 9 + 5 * 5); /* + ticks, RTTs */
    /* The control: libraft's own retry, which the test must tell apart. */
    took = shorter_log_election(1, &winner);
    print_message("libraft's retry: elected after %u ms\n", took);
    assert_int_equal(winner, 1);
    assert_true(took >= 3 * E);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_prevote_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
