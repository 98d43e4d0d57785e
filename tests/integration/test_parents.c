/*
 * test_parents.c - the parent group with real clusterd processes on
 * loopback: formation by join, writes across a leader kill, identical
 * stores, catch-up by snapshot, leave/join cycles, standby promotion.
 *
 * Timing bounds are generous liveness bounds, never performance claims
 * (those live in make bench).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "lib/err.h"

static const char *const fast_flags[] = {"--profile", "fast",
                                         "--set",     "snapshot_threshold=64",
                                         "--set",     "snapshot_trailing=16",
                                         "--set",     "failure_timeout_ms=2000",
                                         NULL};

#define check_rc(expr, want)                                                  \
    do {                                                                      \
        int got_ = (expr);                                                    \
        if (got_ != (want)) {                                                 \
            fail_msg("%s: expected %s, got %s (%d)", #expr, cd_errname(want), \
                     cd_errname(got_), got_);                                 \
        }                                                                     \
    } while (0)

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    struct harness *h = calloc(1, sizeof *h);
    *state = h;
    return h == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    harness_destroy(*state);
    free(*state);
    return 0;
}

/* Bootstrap node 0, join the others through it, wait for the voters. */
static void form(struct harness *h, int n, unsigned voters)
{
    check_rc(harness_init(h, n, fast_flags), 0);
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    for (int i = 1; i < n; i++) {
        check_rc(harness_start(h, i, H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, voters, 30000), 0);
    h->formed = 1;
}

static uint64_t node_id(struct harness *h, int i)
{
    struct cd_msg st;
    check_rc(harness_status(h, i, &st), 0);
    uint64_t id = st.u.status_resp.id;
    codec_msg_free(&st);
    return id;
}

static uint64_t leader_revision(struct harness *h)
{
    int l = harness_leader(h, 10000);
    struct cd_msg st;
    assert_true(l >= 0);
    check_rc(harness_status(h, l, &st), 0);
    uint64_t rev = st.u.status_resp.revision;
    codec_msg_free(&st);
    return rev;
}

static void assert_same_stores(struct harness *h)
{
    char why[300];
    uint64_t rev = leader_revision(h);
    check_rc(harness_wait_revision(h, rev, 20000), 0);
    int rc = harness_compare_stores(h, why, sizeof why);
    if (rc != 0) {
        fail_msg("stores differ: %s", why);
    }
}

/* --- concurrent writers ------------------------------------------------ */

#define WRITERS 4

struct writer
{
    pthread_t tid;
    struct harness *h;
    int t;
    volatile int *stop;
    uint64_t acked; /* writes 0..acked-1 were acknowledged */
    int unknown;    /* the write after them has an unknown outcome */
    int errors;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct cd_client *c = harness_client(w->h, 0, 20000);
    if (c == NULL) {
        w->errors++;
        return NULL;
    }
    for (uint64_t i = 0; !*w->stop && i < 100000; i++) {
        char key[64], val[64];
        snprintf(key, sizeof key, "/w/%d/%06llu", w->t, (unsigned long long)i);
        snprintf(val, sizeof val, "v%d-%llu", w->t, (unsigned long long)i);
        int rc = cd_client_put(c, key, strlen(key), val, strlen(val), NULL);
        if (rc != 0) {
            /* Outcome unknown (the client gave up retrying): stop here so
             * that everything before is known acknowledged. */
            w->unknown = 1;
            w->errors++;
            break;
        }
        w->acked = i + 1;
    }
    cd_client_close(c);
    return NULL;
}

static int count_kv(void *arg, const struct cd_msg *m)
{
    (void)arg;
    (void)m;
    return 0;
}

static void test_writes_across_leader_kill(void **state)
{
    struct harness *h = *state;
    struct writer w[WRITERS];
    volatile int stop = 0;
    form(h, 3, 3);

    for (int t = 0; t < WRITERS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].h = h;
        w[t].t = t;
        w[t].stop = &stop;
        assert_int_equal(pthread_create(&w[t].tid, NULL, writer_main, &w[t]),
                         0);
    }
    sleep_ms(800);
    int old = harness_leader(h, 5000);
    assert_true(old >= 0);
    harness_stop(h, old, SIGKILL);
    sleep_ms(1500);
    stop = 1;
    for (int t = 0; t < WRITERS; t++) {
        pthread_join(w[t].tid, NULL);
    }
    int now = harness_leader(h, 10000);
    assert_true(now >= 0);
    assert_true(now != old);

    uint64_t total = 0;
    for (int t = 0; t < WRITERS; t++) {
        total += w[t].acked;
        if (w[t].errors != 0) {
            fail_msg(
                "writer %d gave up after %llu writes: the client must "
                "ride through a leader kill",
                t, (unsigned long long)w[t].acked);
        }
    }
    printf("acknowledged %llu writes; leader %d killed, %d leads\n",
           (unsigned long long)total, old + 1, now + 1);
    assert_true(total > 50);

    /* The killed node comes back and catches up. */
    check_rc(harness_start(h, old, H_RESTART, 0), 0);

    /* Every acknowledged write is in the final (linearizable) read. */
    struct cd_client *c = harness_client(h, 0, 15000);
    assert_non_null(c);
    for (int t = 0; t < WRITERS; t++) {
        for (uint64_t i = 0; i < w[t].acked; i++) {
            char key[64], want[64];
            char *val = NULL;
            size_t len;
            snprintf(key, sizeof key, "/w/%d/%06llu", t, (unsigned long long)i);
            snprintf(want, sizeof want, "v%d-%llu", t, (unsigned long long)i);
            int rc = cd_client_get(c, key, strlen(key), 0, &val, &len, NULL);
            if (rc != 0 || strcmp(val, want) != 0) {
                fail_msg("acknowledged write %s lost: %s", key,
                         rc != 0 ? cd_errname(rc) : val);
            }
            free(val);
        }
    }
    (void)count_kv;
    cd_client_close(c);
    assert_same_stores(h);
}

static void test_catch_up_by_snapshot(void **state)
{
    struct harness *h = *state;
    form(h, 3, 3);
    int leader = harness_leader(h, 5000);
    int victim = (leader + 1) % 3;
    harness_stop(h, victim, SIGKILL);

    /* Far more entries than snapshot_threshold + trailing: the leader's
     * log no longer holds what the victim misses. */
    struct cd_client *c = harness_client(h, 0, 10000);
    assert_non_null(c);
    for (int i = 0; i < 400; i++) {
        char key[32];
        snprintf(key, sizeof key, "/snap/%04d", i);
        check_rc(cd_client_put(c, key, strlen(key), "x", 1, NULL), 0);
    }
    /* clusterd's own records cannot be written or swept by clients. */
    check_rc(cd_client_put(c, "/cluster/id", 11, "x", 1, NULL), -EPERM);
    check_rc(cd_client_delete(c, "/", 1, 1, NULL), -EPERM);
    check_rc(cd_client_delete(c, "", 0, 1, NULL), -EPERM);
    check_rc(cd_client_delete(c, "/snap/", 6, 1, NULL), 0);
    cd_client_close(c);
    check_rc(harness_start(h, victim, H_RESTART, 0), 0);
    assert_same_stores(h);
    if (!harness_log_has(h, victim, "restored snapshot")) {
        fail_msg(
            "node %d caught up without a snapshot: the test did not "
            "exercise InstallSnapshot",
            victim + 1);
    }
}

static int member_change(struct harness *h,
                         unsigned mask,
                         int action,
                         uint64_t id)
{
    struct cd_client *c = harness_client(h, mask, 10000);
    struct cd_msg req, resp;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_MEMBER_CHANGE;
    req.u.member_change.action = action;
    req.u.member_change.id = id;
    int rc = cd_client_call(c, &req, &resp);
    if (rc == 0) {
        codec_msg_free(&resp);
    }
    cd_client_close(c);
    return rc;
}

static int shutdown_node(struct harness *h, int i)
{
    struct cd_client *c = harness_client(h, 1u << i, 3000);
    struct cd_msg req, resp;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_SHUTDOWN;
    int rc = cd_client_call(c, &req, &resp);
    if (rc == 0) {
        codec_msg_free(&resp);
    }
    cd_client_close(c);
    return rc;
}

/* Leave = removal through the cluster, then the node stops itself. */
static void leave(struct harness *h, int i)
{
    uint64_t id = node_id(h, i);
    unsigned others = 0;
    for (int j = 0; j < h->n; j++) {
        if (j != i && h->node[j].pid > 0) {
            others |= 1u << j;
        }
    }
    check_rc(member_change(h, others | (1u << i), CD_MEMBER_REMOVE, id), 0);
    check_rc(shutdown_node(h, i), 0);
    int status = harness_stop(h, i, 0); /* already stopping: wait */
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_leave_join_cycles(void **state)
{
    struct harness *h = *state;
    form(h, 3, 3);
    for (int cycle = 0; cycle < 2; cycle++) {
        /* First a follower leaves, then the leader itself (which hands
         * leadership over before it is removed). */
        int leader = harness_leader(h, 5000);
        int who = cycle == 0 ? (leader + 1) % 3 : leader;
        leave(h, who);
        check_rc(harness_wait_voters(h, 2, 10000), 0);
        harness_wipe(h, who);
        int via = (who + 1) % 3;
        check_rc(harness_start(h, who, H_JOIN, via == 0 ? 0 : via), 0);
        check_rc(harness_wait_voters(h, 3, 20000), 0);
        struct cd_client *c = harness_client(h, 0, 10000);
        check_rc(cd_client_put(c, "/cycle", 6, "ok", 2, NULL), 0);
        cd_client_close(c);
    }
    assert_same_stores(h);
}

static void test_refuse_removal_below_majority(void **state)
{
    struct harness *h = *state;
    form(h, 3, 3);
    int leader = harness_leader(h, 5000);
    int dead = (leader + 1) % 3;
    int other = (leader + 2) % 3;
    harness_stop(h, dead, SIGKILL);
    /* Wait until the leader has noticed (failure_timeout_ms = 2000). */
    sleep_ms(3000);
    uint64_t id = node_id(h, other);
    check_rc(
        member_change(h, (1u << leader) | (1u << other), CD_MEMBER_REMOVE, id),
        CD_EQUORUM);
    check_rc(harness_wait_voters(h, 3, 1000), 0);
}

static void test_standby_replaces_dead_voter(void **state)
{
    struct harness *h = *state;
    form(h, 5, 3);
    int leader = harness_leader(h, 5000);
    /* Find a voter that is not the leader. */
    struct cd_client *c = harness_client(h, 0, 5000);
    struct cd_msg req, resp;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_MEMBERS;
    check_rc(cd_client_call(c, &req, &resp), 0);
    uint64_t leader_id = node_id(h, leader);
    uint64_t victim_id = 0;
    for (size_t j = 0; j < resp.u.members_resp.n_members; j++) {
        const struct cd_member *m = &resp.u.members_resp.members[j];
        if (m->role == CD_ROLE_VOTER && m->id != leader_id) {
            victim_id = m->id;
        }
    }
    codec_msg_free(&resp);
    assert_true(victim_id != 0);
    int victim = -1;
    for (int i = 0; i < h->n; i++) {
        if (node_id(h, i) == victim_id) {
            victim = i;
        }
    }
    assert_true(victim >= 0);
    harness_stop(h, victim, SIGKILL);

    /* Within failure_timeout (2 s) plus a margin, a standby takes over. */
    int replaced = 0;
    for (int tries = 0; tries < 100 && !replaced; tries++) {
        sleep_ms(100);
        memset(&req, 0, sizeof req);
        req.type = CD_MSG_MEMBERS;
        if (cd_client_call(c, &req, &resp) != 0) {
            continue;
        }
        unsigned voters = 0;
        int victim_votes = 0;
        for (size_t j = 0; j < resp.u.members_resp.n_members; j++) {
            const struct cd_member *m = &resp.u.members_resp.members[j];
            voters += m->role == CD_ROLE_VOTER;
            victim_votes |= m->id == victim_id && m->role == CD_ROLE_VOTER;
        }
        codec_msg_free(&resp);
        replaced = voters == 3 && !victim_votes;
    }
    if (!replaced) {
        fail_msg("no standby took the place of dead voter %llu",
                 (unsigned long long)victim_id);
    }
    check_rc(cd_client_put(c, "/after", 6, "ok", 2, NULL), 0);
    cd_client_close(c);
    assert_same_stores(h);
}

static void test_force_new_cluster(void **state)
{
    struct harness *h = *state;
    form(h, 3, 3);
    struct cd_client *c = harness_client(h, 0, 10000);
    for (int i = 0; i < 50; i++) {
        char key[32];
        snprintf(key, sizeof key, "/dr/%02d", i);
        check_rc(cd_client_put(c, key, strlen(key), "kept", 4, NULL), 0);
    }
    cd_client_close(c);
    int survivor = harness_leader(h, 5000);
    /* A majority is lost for good. */
    for (int i = 0; i < 3; i++) {
        if (i != survivor) {
            harness_stop(h, i, SIGKILL);
            harness_wipe(h, i);
        }
    }
    harness_stop(h, survivor, SIGTERM);
    check_rc(harness_start(h, survivor, H_FORCE_NEW_CLUSTER, 0), 0);
    check_rc(harness_wait_voters(h, 1, 15000), 0);
    c = harness_client(h, 1u << survivor, 10000);
    for (int i = 0; i < 50; i++) {
        char key[32];
        char *val = NULL;
        size_t len;
        snprintf(key, sizeof key, "/dr/%02d", i);
        check_rc(cd_client_get(c, key, strlen(key), 0, &val, &len, NULL), 0);
        assert_string_equal(val, "kept");
        free(val);
    }
    check_rc(cd_client_put(c, "/dr/after", 9, "yes", 3, NULL), 0);
    cd_client_close(c);
    /* Fresh parents join the recovered cluster and become voters. */
    for (int i = 0; i < 3; i++) {
        if (i != survivor) {
            check_rc(harness_start(h, i, H_JOIN, survivor), 0);
        }
    }
    check_rc(harness_wait_voters(h, 3, 30000), 0);
    /* New parents get new ids: the lost ones are never reused. */
    for (int i = 0; i < 3; i++) {
        if (i != survivor && node_id(h, i) <= 3) {
            fail_msg("node %d got id %llu, an id of a lost parent", i + 1,
                     (unsigned long long)node_id(h, i));
        }
    }
    assert_same_stores(h);
}

static void test_new_cluster_from_backup(void **state)
{
    struct harness *h = *state;
    char backup[200];
    form(h, 3, 3);
    struct cd_client *c = harness_client(h, 0, 10000);
    for (int i = 0; i < 30; i++) {
        char key[32];
        snprintf(key, sizeof key, "/bk/%02d", i);
        check_rc(cd_client_put(c, key, strlen(key), "saved", 5, NULL), 0);
    }
    snprintf(backup, sizeof backup, "%s/backup.snap", h->base);
    int fd = open(backup, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    uint64_t rev = 0;
    check_rc(cd_client_snapshot(c, fd, &rev), 0);
    close(fd);
    cd_client_close(c);
    struct cd_msg st;
    check_rc(harness_status(h, 0, &st), 0);
    uint64_t old_applied = st.u.status_resp.applied_index;
    codec_msg_free(&st);
    assert_true(old_applied > 30);

    /* Every parent is lost; a new one starts from the backup. */
    for (int i = 0; i < 3; i++) {
        harness_stop(h, i, SIGKILL);
        harness_wipe(h, i);
    }
    h->restore = backup;
    h->formed = 0;
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    h->restore = NULL;
    check_rc(harness_wait_voters(h, 1, 15000), 0);
    c = harness_client(h, 1u, 10000);
    char *val = NULL;
    size_t len;
    check_rc(cd_client_get(c, "/bk/29", 6, 0, &val, &len, NULL), 0);
    assert_string_equal(val, "saved");
    free(val);
    /* Writes of the new cluster land although its Raft log restarts at 1:
     * the restored store must not skip them as already applied. */
    for (int i = 0; i < 40; i++) {
        char key[32];
        snprintf(key, sizeof key, "/new/%02d", i);
        check_rc(cd_client_put(c, key, strlen(key), "fresh", 5, NULL), 0);
        check_rc(cd_client_get(c, key, strlen(key), 0, &val, &len, NULL), 0);
        assert_string_equal(val, "fresh");
        free(val);
    }
    cd_client_close(c);
    /* And the new cluster grows again by join. */
    for (int i = 1; i < 3; i++) {
        check_rc(harness_start(h, i, H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, 3, 30000), 0);
    assert_same_stores(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writes_across_leader_kill, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_catch_up_by_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_leave_join_cycles, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refuse_removal_below_majority,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_standby_replaces_dead_voter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_force_new_cluster, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_new_cluster_from_backup, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("parents", tests, NULL, NULL);
}
