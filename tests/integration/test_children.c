/*
 * test_children.c - children with real processes on loopback: clusterd
 * parents, clusterd-child daemons, and reads through libclusterd straight
 * from the child's cache, as a program on the child does.
 *
 *   - a child joins and follows writes; every parent killed: reads on the
 *     child go on; the child restarted with every parent still down: reads
 *     still go on; parents back: the child catches up by itself; the
 *     revisions a reader observed never went backwards; leave removes it;
 *   - a child offline past the compaction horizon catches up by snapshot,
 *     and its cache then holds exactly the parents' keys;
 *   - refusals: another cluster's id, an unregistered child.
 *
 * Timing bounds are generous liveness bounds, never performance claims
 * (those live in make bench-children).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "lib/err.h"
#include "storage/clusterd.h"

static const char *const fast_flags[] = {"--profile", "fast",
                                         "--set",     "snapshot_threshold=64",
                                         "--set",     "snapshot_trailing=16",
                                         "--set",     "history_revisions=200",
                                         NULL};

struct fx
{
    struct harness h;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    *state = f;
    return f == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    harness_destroy(&f->h); /* children too */
    free(f);
    return 0;
}

/* Three parents formed by join. */
static void form(struct fx *f)
{
    struct harness *h = &f->h;
    check_rc(harness_init(h, 3, fast_flags), 0);
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    for (int i = 1; i < 3; i++) {
        check_rc(harness_start(h, i, H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, 3, 30000), 0);
    h->formed = 1;
}

static int new_token(struct fx *f, char *tok, size_t len)
{
    return harness_token(&f->h, tok, len);
}

/* Start clusterd-child i, following every parent; with a token it joins on
 * this first start. */
static void child_start(struct fx *f, int i, const char *token)
{
    check_rc(harness_child_start(&f->h, i, token, NULL), 0);
}

/* --- a reader on the child, recording the revisions it observes ---------- */

struct observer
{
    struct fx *f;
    pthread_t thread;
    volatile int stop;
    uint64_t last;
    unsigned samples;
    unsigned backwards;
    uint64_t back_from, back_to;
};

static void *observe(void *arg)
{
    struct observer *o = arg;
    while (!o->stop) {
        uint64_t rev = harness_cache_revision(&o->f->h, 0);
        if (rev != 0) {
            if (rev < o->last) {
                o->backwards++;
                o->back_from = o->last;
                o->back_to = rev;
            }
            o->last = rev;
            o->samples++;
        }
        harness_sleep_ms(2);
    }
    return NULL;
}

static int children_state(struct fx *f, uint64_t id, char *state, size_t len)
{
    struct cd_client *c = harness_client(&f->h, 0, 5000);
    struct cd_msg req, resp;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_CHILDREN;
    int rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        return rc;
    }
    rc = CD_ENOTFOUND;
    for (size_t i = 0; i < resp.u.children_resp.n_children; i++) {
        const struct cd_child_status *st = &resp.u.children_resp.children[i];
        if (st->info.id == id) {
            snprintf(state, len, "%s%s", st->state != NULL ? st->state : "?",
                     st->n_services == 1 && st->services[0].up ? "+up" : "");
            rc = 0;
        }
    }
    codec_msg_free(&resp);
    return rc;
}

static void put(struct fx *f, const char *key, const char *value)
{
    struct cd_client *c = harness_client(&f->h, 0, 15000);
    check_rc(cd_client_put(c, key, strlen(key), value, strlen(value), NULL), 0);
    cd_client_close(c);
}

static void test_child_follows_through_outage(void **state)
{
    struct fx *f = *state;
    char token[64], st[64];
    struct cd_child_identity id;
    form(f);
    check_rc(new_token(f, token, sizeof token), 0);
    put(f, "/cfg/policy", "v1");

    /* Joins on its first start (the token in its config), then follows. */
    child_start(f, 0, token);
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/policy", "v1", 15000), 0);
    check_rc(cd_child_identity_load(f->h.child[0].dir, &id), 0);
    assert_true(id.child_id > 0);

    struct observer o = {.f = f};
    assert_int_equal(pthread_create(&o.thread, NULL, observe, &o), 0);

    put(f, "/cfg/policy", "v2");
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/policy", "v2", 10000), 0);

    /* The leader knows it: following, its service up. */
    uint64_t deadline = harness_now_ms() + 10000;
    while (children_state(f, id.child_id, st, sizeof st) != 0 ||
           strcmp(st, "following+up") != 0) {
        assert_true(harness_now_ms() < deadline);
        harness_sleep_ms(100);
    }

    /* Its services' health is recorded in the store (rate-bounded). */
    {
        char key[64], *v = NULL;
        snprintf(key, sizeof key, "/cluster/health/%" PRIu64, id.child_id);
        struct cd_client *hc = harness_client(&f->h, 0, 5000);
        deadline = harness_now_ms() + 15000;
        while (cd_client_get(hc, key, strlen(key), 0, &v, NULL, NULL) != 0) {
            assert_true(harness_now_ms() < deadline);
            harness_sleep_ms(100);
        }
        assert_string_equal(v, "self up\n");
        free(v);
        cd_client_close(hc);
    }

    /* Every parent dies: the child goes on answering from its cache. */
    for (int i = 0; i < 3; i++) {
        harness_stop(&f->h, i, SIGKILL);
    }
    harness_sleep_ms(4000); /* past the stream timeout: degraded now */
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/policy", "v2", 1000), 0);
    {
        char path[256];
        clusterd_db *db;
        struct clusterd_staleness sl;
        harness_cache_path(&f->h, 0, path, sizeof path);
        check_rc(clusterd_open(path, &db), 0);
        check_rc(clusterd_staleness(db, &sl), 0);
        clusterd_close(db);
        assert_true(sl.contact_ms > 0);
        assert_true(sl.age_ms >= 3000); /* it says how stale it is */
    }

    /* Its own reboot with every parent still down: it starts from the
     * cache. */
    int status = harness_child_stop(&f->h, 0, SIGTERM);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    child_start(f, 0, NULL);
    harness_sleep_ms(1000);
    assert_true(f->h.child[0].pid > 0 && kill(f->h.child[0].pid, 0) == 0);
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/policy", "v2", 1000), 0);

    /* The parents come back: it catches up with no one doing anything. */
    for (int i = 0; i < 3; i++) {
        check_rc(harness_start(&f->h, i, H_RESTART, 0), 0);
    }
    put(f, "/cfg/policy", "v3");
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/policy", "v3", 20000), 0);

    o.stop = 1;
    pthread_join(o.thread, NULL);
    assert_true(o.samples > 100);
    if (o.backwards != 0) {
        fail_msg("the cache revision went backwards %u times (%" PRIu64
                 " -> %" PRIu64 ")",
                 o.backwards, o.back_from, o.back_to);
    }

    /* Leave: deregistered, and its daemon stops following (status 3). */
    struct cd_client *c = harness_client(&f->h, 0, 10000);
    struct cd_msg req, resp;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_CHILD_LEAVE;
    req.u.child_leave.child_id = id.child_id;
    check_rc(cd_client_call(c, &req, &resp), 0);
    codec_msg_free(&resp);
    check_rc(cd_client_call(c, &req, &resp), CD_ENOTFOUND);
    cd_client_close(c);
    deadline = harness_now_ms() + 10000;
    while (waitpid(f->h.child[0].pid, &status, WNOHANG) == 0) {
        assert_true(harness_now_ms() < deadline);
        harness_sleep_ms(20);
    }
    f->h.child[0].pid = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
    check_rc(children_state(f, id.child_id, st, sizeof st), CD_ENOTFOUND);
    /* Its cache stays readable. */
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/policy", "v3", 1000), 0);
}

/* Every key=value of a store, one string (the parents' or a cache). */
static int dump_cb(void *arg,
                   const char *key,
                   size_t klen,
                   const char *val,
                   size_t vlen)
{
    char **out = arg;
    char *n = NULL;
    if (asprintf(&n, "%s%.*s=%.*s;", *out, (int)klen, key, (int)vlen, val) <
        0) {
        return -1;
    }
    free(*out);
    *out = n;
    return 0;
}

static char *dump(const char *path)
{
    clusterd_db *db;
    char *out = strdup("");
    if (clusterd_open(path, &db) != 0) {
        return out;
    }
    clusterd_range(db, "/", 1, 0, dump_cb, &out);
    clusterd_close(db);
    return out;
}

static void test_child_catches_up_by_snapshot(void **state)
{
    struct fx *f = *state;
    char token[64], key[64];
    form(f);
    check_rc(new_token(f, token, sizeof token), 0);
    child_start(f, 0, token);
    put(f, "/data/0", "first");
    check_rc(harness_wait_cache(&f->h, 0, "/data/0", "first", 15000), 0);
    uint64_t rev_before = harness_cache_revision(&f->h, 0);
    harness_child_stop(&f->h, 0, SIGTERM);

    /* Far past the history the parents keep (200 revisions). */
    struct cd_client *c = harness_client(&f->h, 0, 15000);
    for (int i = 0; i < 600; i++) {
        snprintf(key, sizeof key, "/data/%d", i % 300);
        check_rc(cd_client_put(c, key, strlen(key), key, strlen(key), NULL), 0);
    }
    check_rc(cd_client_put(c, "/data/last", 10, "done", 4, NULL), 0);
    cd_client_close(c);
    int leader = harness_leader(&f->h, 5000);
    assert_true(leader >= 0);
    /* Every parent (the child may say hello to any) has compacted past
     * the child's revision, so the only way back is a snapshot. */
    struct store_meta m;
    uint64_t deadline = harness_now_ms() + 20000;
    int all = 0;
    do {
        all = 1;
        for (int i = 0; i < 3; i++) {
            check_rc(harness_store_meta(&f->h, i, &m), 0);
            all &= m.compact_rev > rev_before;
        }
        if (!all) {
            harness_sleep_ms(100);
        }
    } while (!all && harness_now_ms() < deadline);
    assert_true(all);

    child_start(f, 0, NULL);
    check_rc(harness_wait_cache(&f->h, 0, "/data/last", "done", 20000), 0);

    /* Restored by snapshot, said so (the line follows the restore's
     * commit by a sync of the cache), and now identical to the parents. */
    uint64_t said_by = harness_now_ms() + 5000;
    while (!harness_file_has(f->h.child[0].log, "restored from a snapshot") &&
           harness_now_ms() < said_by) {
        harness_sleep_ms(20);
    }
    assert_true(
        harness_file_has(f->h.child[0].log, "restored from a snapshot"));
    char path[256], ppath[256];
    harness_cache_path(&f->h, 0, path, sizeof path);
    snprintf(ppath, sizeof ppath, "%s/state.mdb", f->h.node[leader].dir);
    char *want = dump(ppath);
    char *got = dump(path);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

static int never(void *arg, const struct cd_msg *m)
{
    (void)arg;
    (void)m;
    return 1;
}

struct frames
{
    int n;
    uint64_t last_rev;
};

static int two_frames(void *arg, const struct cd_msg *m)
{
    struct frames *fr = arg;
    fr->last_rev = m->u.changes.revision;
    return ++fr->n == 2;
}

static void test_child_refused(void **state)
{
    struct fx *f = *state;
    form(f);
    struct cd_client *c = harness_client(&f->h, 0, 5000);
    struct cd_msg st;
    check_rc(harness_status(&f->h, 0, &st), 0);
    codec_msg_free(&st);
    struct store_meta m;
    check_rc(harness_store_meta(&f->h, 0, &m), 0);

    struct cd_msg hello;
    memset(&hello, 0, sizeof hello);
    hello.type = CD_MSG_HELLO;
    hello.u.hello.cluster_id = m.cluster_id ^ 1;
    hello.u.hello.child_id = 1;
    check_rc(cd_client_follow(c, &hello, 2000, never, NULL), CD_EBADCLUSTER);
    /* Nobody registered child 42. */
    hello.u.hello.cluster_id = m.cluster_id;
    hello.u.hello.child_id = 42;
    check_rc(cd_client_follow(c, &hello, 2000, never, NULL), CD_EREVOKED);
    /* A registration this parent has not reached yet: try another. */
    hello.u.hello.registered_rev = m.revision + 1000;
    check_rc(cd_client_follow(c, &hello, 2000, never, NULL), CD_EBUSY);
    /* A join with a bad token. */
    struct cd_child_identity id;
    check_rc(cd_client_child_join(c, "not-a-token", NULL, &id), -EACCES);

    /* A registered child is served by any parent, a follower too. */
    char token[64];
    check_rc(new_token(f, token, sizeof token), 0);
    check_rc(cd_client_child_join(c, token, "t-1.0", &id), 0);
    cd_client_close(c);
    int leader = harness_leader(&f->h, 5000);
    int follower = (leader + 1) % 3;
    check_rc(harness_wait_revision(&f->h, id.registered_rev, 10000), 0);
    c = harness_client(&f->h, 1u << follower, 5000);
    hello.u.hello.child_id = id.child_id;
    hello.u.hello.registered_rev = id.registered_rev;
    hello.u.hello.revision = 0;
    struct frames fr = {0, 0};
    check_rc(cd_client_follow(c, &hello, 3000, two_frames, &fr), 0);
    assert_int_equal(fr.n, 2);
    assert_true(fr.last_rev >= id.registered_rev); /* from revision 0 on */
    cd_client_close(c);
}

/* Two parents that accept connections and never answer (SIGSTOP): the
 * child still finds the third and follows it. */
static void test_child_skips_hung_parents(void **state)
{
    struct fx *f = *state;
    char token[64], path[256];
    form(f);
    check_rc(new_token(f, token, sizeof token), 0);
    child_start(f, 0, token);
    put(f, "/cfg/x", "1");
    check_rc(harness_wait_cache(&f->h, 0, "/cfg/x", "1", 15000), 0);
    harness_child_stop(&f->h, 0, SIGTERM);
    kill(f->h.node[0].pid, SIGSTOP);
    kill(f->h.node[1].pid, SIGSTOP);
    uint64_t started = harness_now_ms();
    harness_sleep_ms(1500); /* the recorded contact is now older than this */
    child_start(f, 0, NULL);
    harness_cache_path(&f->h, 0, path, sizeof path);
    int following = 0;
    while (!following && harness_now_ms() - started < 30000) {
        clusterd_db *db;
        struct clusterd_staleness sl;
        harness_sleep_ms(200);
        if (clusterd_open(path, &db) == 0) {
            following = clusterd_staleness(db, &sl) == 0 && sl.age_ms < 1200;
            clusterd_close(db);
        }
    }
    kill(f->h.node[0].pid, SIGCONT);
    kill(f->h.node[1].pid, SIGCONT);
    assert_true(following);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_child_follows_through_outage,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_catches_up_by_snapshot,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_skips_hung_parents, setup,
                                        teardown),
    };
    const char *filter = getenv("CD_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
