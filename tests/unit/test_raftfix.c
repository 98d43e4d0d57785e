/*
 * test_raftfix.c - the repair of libraft 0.22.1's membership bookkeeping
 * (cluster/raftfix.h), on libraft's own fixture: four voters, a fifth
 * server added while one voter is cut off, so that the voter receives the
 * change behind other entries in one AppendEntries batch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "null_fsm.h"
#include "cluster/raftfix.h"

struct fx
{
    struct raft_fixture f;
    struct raft_fsm fsms[5];
    struct raft_apply applies[16];
    unsigned n_applies;
    struct raft_change change;
    int change_status;
};

static void change_cb(struct raft_change *req, int status)
{
    struct fx *x = req->data;
    x->change_status = status;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)req;
    (void)status;
    (void)result;
}

static void submit(struct fx *x, struct raft *leader, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        assert_true(x->n_applies < 16);
        struct raft_buffer b = {raft_calloc(1, 8), 8};
        assert_int_equal(
            raft_apply(leader, &x->applies[x->n_applies++], &b, 1, apply_cb),
            0);
    }
}

static void steps(struct fx *x, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        raft_fixture_step(&x->f);
    }
}

static int has_member(const struct raft_configuration *c, raft_id id)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            return 1;
        }
    }
    return 0;
}

/*
 * Servers 1-4 voters (server 5 known to no one), server 1 leads; server 2
 * is cut off while the leader commits two commands and the addition of
 * server 5; then reconnected, it receives [commands..., change] at once.
 */
static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    assert_int_equal(raft_fixture_init(&x->f), 0);
    for (unsigned i = 0; i < 5; i++) {
        null_fsm_init(&x->fsms[i]);
        assert_int_equal(raft_fixture_grow(&x->f, &x->fsms[i]), 0);
        if (getenv("CD_FIXTURE_TRACE") == NULL) {
            raft_fixture_get(&x->f, i)->tracer = NULL; /* quiet */
        }
    }
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    const char *addr[] = {"1", "2", "3", "4"};
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(
            raft_configuration_add(&conf, i + 1, addr[i], RAFT_VOTER), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(raft_bootstrap(raft_fixture_get(&x->f, i), &conf), 0);
    }
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&x->f), 0);
    raft_fixture_elect(&x->f, 0);
    struct raft *leader = raft_fixture_get(&x->f, 0);

    raft_fixture_saturate(&x->f, 0, 1);
    raft_fixture_saturate(&x->f, 1, 0);
    submit(x, leader, 2);
    x->change.data = x;
    x->change_status = -1;
    assert_int_equal(raft_add(leader, &x->change, 5, "5", change_cb), 0);
    for (unsigned i = 0; i < 5000 && x->change_status < 0; i++) {
        raft_fixture_step(&x->f);
    }
    assert_int_equal(x->change_status, 0);
    raft_fixture_desaturate(&x->f, 0, 1);
    raft_fixture_desaturate(&x->f, 1, 0);
    steps(x, 2000);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    raft_fixture_close(&x->f);
    free(x);
    return 0;
}

/* The bug as libraft 0.22.1 has it: if this fails, libraft changed (see
 * whether the repair is still needed). */
static void test_bug_present(void **state)
{
    struct fx *x = *state;
    struct raft *r = raft_fixture_get(&x->f, 1);
    assert_true(has_member(&r->configuration, 5));
    assert_int_equal(raft_last_applied(r), raft_last_index(r));
    /* The change was applied, yet still marked uncommitted, under the
     * index of the batch's first entry, and the committed copy (what a
     * snapshot records) lacks server 5. */
    assert_true(r->configuration_uncommitted_index != 0);
    assert_true(r->configuration_uncommitted_index < raft_last_index(r));
    assert_false(has_member(&r->configuration_committed, 5));

    /* Elected, it can never change the membership. */
    raft_fixture_depose(&x->f);
    raft_fixture_elect(&x->f, 1);
    steps(x, 200);
    x->change_status = -1;
    assert_int_equal(raft_assign(r, &x->change, 5, RAFT_STANDBY, change_cb),
                     RAFT_CANTCHANGE);
}

static void test_repair(void **state)
{
    struct fx *x = *state;
    struct raft *r = raft_fixture_get(&x->f, 1);
    struct raftfix fx;
    raftfix_init(&fx);
    raft_index last = raft_last_index(r);

    /* First sight: watched, not yet repaired. */
    assert_int_equal(raftfix_check(&fx, r), 0);
    assert_true(r->configuration_uncommitted_index != 0);
    /* Applied up to the index seen: repaired. */
    assert_int_equal(raftfix_check(&fx, r), 1);
    assert_int_equal(r->configuration_uncommitted_index, 0);
    assert_int_equal(r->configuration_committed_index, last);
    assert_true(has_member(&r->configuration_committed, 5));
    assert_int_equal(r->configuration_committed.n, r->configuration.n);
    /* Nothing more to do. */
    assert_int_equal(raftfix_check(&fx, r), 0);

    /* Elected, it changes the membership again. */
    raft_fixture_depose(&x->f);
    raft_fixture_elect(&x->f, 1);
    steps(x, 200);
    x->change_status = -1;
    assert_int_equal(raft_assign(r, &x->change, 5, RAFT_STANDBY, change_cb), 0);
    for (unsigned i = 0; i < 5000 && x->change_status < 0; i++) {
        raft_fixture_step(&x->f);
    }
    assert_int_equal(x->change_status, 0);
    assert_int_equal(r->configuration_uncommitted_index, 0);
}

/* A change in flight, marked as libraft means it, is left alone. */
static void test_legit_marker_untouched(void **state)
{
    struct fx *x = *state;
    struct raft *leader = raft_fixture_get(&x->f, 0);
    struct raftfix fx;
    raftfix_init(&fx);
    assert_int_equal(raft_state(leader), RAFT_LEADER);
    assert_int_equal(leader->configuration_uncommitted_index, 0);
    /* The leader cut off from everyone: its change stays uncommitted. */
    for (unsigned i = 1; i < 4; i++) {
        raft_fixture_saturate(&x->f, 0, i);
        raft_fixture_saturate(&x->f, i, 0);
    }
    x->change_status = -1;
    assert_int_equal(
        raft_assign(leader, &x->change, 5, RAFT_STANDBY, change_cb), 0);
    steps(x, 3);
    raft_index marker = leader->configuration_uncommitted_index;
    assert_true(marker > raft_last_applied(leader));
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(raftfix_check(&fx, leader), 0);
    }
    assert_int_equal(leader->configuration_uncommitted_index, marker);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bug_present, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legit_marker_untouched, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
