/*
 * test_restore.c - disaster recovery with real processes on loopback:
 * clusterd parents, clusterd-child daemons, clusterctl.
 *
 *   - every parent is lost; a backup taken with `clusterctl snapshot save`
 *     (and checked with `snapshot verify`) is restored into a new set of
 *     parents with fresh data directories.  The cluster keeps its id and
 *     starts a new history epoch.  A child that ran through it all, and one
 *     that was stopped and is started again afterwards, reattach by
 *     themselves although their caches were ahead of the backup: each
 *     cache ends equal to the restored store, and later writes reach them.
 *     A child that joined after the backup is not in the restored registry
 *     and stops (exit 3), even once its id has been handed out again;
 *   - --force-new-cluster on a survivor that is behind a child: the child
 *     takes the survivor's history instead of skipping its changes;
 *   - snapshot downloads: many children asking at once share a copy made
 *     off the loop, while a backup always holds the writes acknowledged
 *     before it was asked for.
 *
 * The parents keep libraft's default snapshot settings, so that parents
 * joining a restored cluster cannot rely on a raft snapshot to receive the
 * backup's state.  Timing bounds are generous liveness bounds.
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "lib/err.h"
#include "storage/clusterd.h"

static const char *const flags[] = {"--profile", "fast", NULL};

static void form(struct harness *h)
{
    check_rc(harness_init(h, 3, flags), 0);
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    for (int i = 1; i < 3; i++) {
        check_rc(harness_start(h, i, H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, 3, 30000), 0);
    h->formed = 1;
}

static void put(struct harness *h, const char *key, const char *value)
{
    struct cd_client *c = harness_client(h, 0, 15000);
    check_rc(cd_client_put(c, key, strlen(key), value, strlen(value), NULL), 0);
    cd_client_close(c);
}

/* Poll until child i's cache holds exactly what node `node` holds (keys,
 * values, revisions, history epoch): 0, or CD_ETIMEOUT with why. */
static int wait_cache_equal(struct harness *h,
                            int i,
                            int node,
                            unsigned timeout_ms,
                            char *why,
                            size_t len)
{
    char cpath[256], ppath[256];
    struct harness_digest c = {0}, p = {0};
    harness_cache_path(h, i, cpath, sizeof cpath);
    snprintf(ppath, sizeof ppath, "%s/state.mdb", h->node[node].dir);
    uint64_t deadline = harness_now_ms() + timeout_ms;
    do {
        if (harness_store_digest(cpath, &c) == 0 &&
            harness_store_digest(ppath, &p) == 0 && c.hash == p.hash &&
            c.keys == p.keys && c.revision == p.revision &&
            c.epoch == p.epoch) {
            return 0;
        }
        harness_sleep_ms(50);
    } while (harness_now_ms() < deadline);
    snprintf(why, len,
             "child %d: revision %" PRIu64 ", epoch %016" PRIx64 ", %" PRIu64
             " keys, digest %016" PRIx64 "; node %d: revision %" PRIu64
             ", epoch %016" PRIx64 ", %" PRIu64 " keys, digest %016" PRIx64,
             i + 1, c.revision, c.epoch, c.keys, c.hash, node + 1, p.revision,
             p.epoch, p.keys, p.hash);
    return CD_ETIMEOUT;
}

#define assert_cache_equal(h, i, node, timeout_ms)                            \
    do {                                                                      \
        char why_[512];                                                       \
        if (wait_cache_equal(h, i, node, timeout_ms, why_, sizeof why_) !=    \
            0) {                                                              \
            fail_msg("the cache never matched the parents' store: %s", why_); \
        }                                                                     \
    } while (0)

static void assert_same_stores(struct harness *h)
{
    char why[512];
    uint64_t deadline = harness_now_ms() + 15000;
    int rc;
    while ((rc = harness_compare_stores(h, why, sizeof why)) != 0 &&
           harness_now_ms() < deadline) {
        harness_sleep_ms(100);
    }
    if (rc != 0) {
        fail_msg("the parents' stores differ: %s", why);
    }
}

/* Wait (bounded) for child i to exit; its exit status, or -1. */
static int child_exit_status(struct harness *h, int i, unsigned timeout_ms)
{
    int st = 0;
    uint64_t deadline = harness_now_ms() + timeout_ms;
    while (waitpid(h->child[i].pid, &st, WNOHANG) == 0) {
        if (harness_now_ms() > deadline) {
            return -1;
        }
        harness_sleep_ms(20);
    }
    h->child[i].pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_restore_children_reattach(void **state)
{
    struct harness *h = *state;
    char token[64], backup[200], log[200], key[64];
    struct store_meta before, after;
    form(h);

    /* Two children follow; a third joins only after the backup. */
    check_rc(harness_token(h, token, sizeof token), 0);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "/app/%02d", i);
        put(h, key, "backed-up");
    }
    check_rc(harness_child_start(h, 0, token, NULL), 0);
    check_rc(harness_child_start(h, 1, token, NULL), 0);
    check_rc(harness_wait_cache(h, 0, "/app/19", "backed-up", 15000), 0);
    check_rc(harness_wait_cache(h, 1, "/app/19", "backed-up", 15000), 0);

    /* The backup, with the command an operator runs, checked offline. */
    snprintf(backup, sizeof backup, "%s/backup.snap", h->base);
    snprintf(log, sizeof log, "%s/clusterctl.log", h->base);
    assert_int_equal(harness_ctl(h, log, "snapshot", "save", backup), 0);
    assert_int_equal(harness_ctl(h, log, "snapshot", "verify", backup), 0);
    assert_true(harness_file_has(log, "saved "));
    check_rc(harness_store_meta(h, 0, &before), 0);

    /* Life goes on after the backup: the children get ahead of it. */
    check_rc(harness_child_start(h, 2, token, NULL), 0);
    check_rc(harness_wait_cache(h, 2, "/app/19", "backed-up", 15000), 0);
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof key, "/lost/%02d", i);
        put(h, key, "after the backup");
    }
    put(h, "/app/00", "changed after the backup");
    check_rc(
        harness_wait_cache(h, 0, "/app/00", "changed after the backup", 15000),
        0);
    check_rc(
        harness_wait_cache(h, 1, "/app/00", "changed after the backup", 15000),
        0);
    uint64_t child_rev = harness_cache_revision(h, 0);
    /* Child 2 (joined after the backup) and child 1 are stopped through
     * the disaster; child 0 keeps running. */
    harness_child_stop(h, 1, SIGTERM);
    harness_child_stop(h, 2, SIGTERM);

    /* Every parent is lost for good. */
    for (int i = 0; i < 3; i++) {
        harness_stop(h, i, SIGKILL);
        harness_wipe(h, i);
    }
    /* New parents, fresh data directories, the backup restored. */
    h->restore = backup;
    h->formed = 0;
    h->joins_done = 0;
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    h->restore = NULL;
    check_rc(harness_wait_voters(h, 1, 15000), 0);
    for (int i = 1; i < 3; i++) {
        check_rc(harness_start(h, i, H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, 3, 30000), 0);
    h->formed = 1;
    check_rc(harness_store_meta(h, 0, &after), 0);
    assert_int_equal(after.cluster_id, before.cluster_id);
    assert_true(after.epoch != before.epoch);
    assert_true(after.revision < child_rev);

    /* The child that ran through it: back on the restored history, though
     * its cache was ahead, without anyone touching it. */
    assert_cache_equal(h, 0, 0, 30000);
    assert_true(harness_file_has(h->child[0].log, "revision went backwards"));
    char *v = NULL;
    check_rc(harness_cache_get(h, 0, "/app/00", &v), 0);
    assert_string_equal(v, "backed-up");
    free(v);
    check_rc(harness_cache_get(h, 0, "/lost/00", &v), CD_ENOTFOUND);
    /* Every parent holds the backup's state, the joined ones too. */
    assert_same_stores(h);

    /* Writes after the restore reach it. */
    put(h, "/app/after", "restored");
    check_rc(harness_wait_cache(h, 0, "/app/after", "restored", 15000), 0);

    /* The child stopped through the disaster starts again: it too. */
    check_rc(harness_child_start(h, 1, NULL, NULL), 0);
    check_rc(harness_wait_cache(h, 1, "/app/after", "restored", 20000), 0);
    assert_cache_equal(h, 1, 0, 15000);

    /* A new child registers: the restored cluster hands out the id child
     * 2 had (given after the backup).  Child 2 is not in this history: it
     * stops following, with the exit status of a removed child. */
    check_rc(harness_token(h, token, sizeof token), 0);
    check_rc(harness_child_start(h, 3, token, NULL), 0);
    check_rc(harness_wait_cache(h, 3, "/app/after", "restored", 20000), 0);
    struct cd_child_identity id2, id3;
    check_rc(cd_child_identity_load(h->child[2].dir, &id2), 0);
    check_rc(cd_child_identity_load(h->child[3].dir, &id3), 0);
    assert_int_equal(id3.child_id, id2.child_id);
    check_rc(harness_child_start(h, 2, NULL, NULL), 0);
    assert_int_equal(child_exit_status(h, 2, 20000), 3);

    /* And after a restart the restored children still follow. */
    harness_child_stop(h, 0, SIGTERM);
    check_rc(harness_child_start(h, 0, NULL, NULL), 0);
    put(h, "/app/later", "still");
    check_rc(harness_wait_cache(h, 0, "/app/later", "still", 20000), 0);
    check_rc(harness_wait_cache(h, 1, "/app/later", "still", 20000), 0);
    check_rc(harness_wait_cache(h, 3, "/app/later", "still", 20000), 0);
    assert_cache_equal(h, 0, 0, 15000);
}

static void test_force_new_cluster_child_ahead(void **state)
{
    struct harness *h = *state;
    char token[64], key[64], eps[256];
    form(h);
    int leader = harness_leader(h, 5000);
    assert_true(leader >= 0);
    int survivor = (leader + 1) % 3, other = (leader + 2) % 3;

    /* The child follows the others first; the survivor is its last
     * endpoint. */
    snprintf(eps, sizeof eps, "%s,%s,%s", h->node[leader].api,
             h->node[other].api, h->node[survivor].api);
    check_rc(harness_token(h, token, sizeof token), 0);
    check_rc(harness_child_start(h, 0, token, eps), 0);
    put(h, "/fnc/base", "1");
    check_rc(harness_wait_cache(h, 0, "/fnc/base", "1", 15000), 0);

    /* The survivor-to-be stops hearing anything; the others commit on. */
    kill(h->node[survivor].pid, SIGSTOP);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "/fnc/ahead/%02d", i);
        put(h, key, "only the lost parents had this");
    }
    check_rc(harness_wait_cache(h, 0, "/fnc/ahead/29",
                                "only the lost parents had this", 15000),
             0);
    uint64_t child_rev = harness_cache_revision(h, 0);

    /* The two parents that knew it are lost; the survivor (behind the
     * child) becomes a one-voter cluster. */
    harness_stop(h, leader, SIGKILL);
    harness_stop(h, other, SIGKILL);
    harness_wipe(h, leader);
    harness_wipe(h, other);
    harness_stop(h, survivor, SIGKILL); /* a stopped process dies too */
    struct store_meta m;
    check_rc(harness_store_meta(h, survivor, &m), 0);
    assert_true(m.revision < child_rev);
    check_rc(harness_start(h, survivor, H_FORCE_NEW_CLUSTER, 0), 0);
    check_rc(harness_wait_voters(h, 1, 15000), 0);

    /* Its own writes take the revisions the child already had. */
    struct cd_client *c = harness_client(h, 1u << survivor, 15000);
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "/fnc/forced/%02d", i);
        check_rc(cd_client_put(c, key, strlen(key), "survivor", 8, NULL), 0);
    }
    cd_client_close(c);
    check_rc(harness_store_meta(h, survivor, &m), 0);
    assert_true(m.revision > child_rev);

    /* The child takes the survivor's history: none of its own later
     * revisions hide the survivor's changes. */
    assert_cache_equal(h, 0, survivor, 30000);
    char *v = NULL;
    check_rc(harness_cache_get(h, 0, "/fnc/ahead/00", &v), CD_ENOTFOUND);
    check_rc(harness_cache_get(h, 0, "/fnc/forced/00", &v), 0);
    assert_string_equal(v, "survivor");
    free(v);
    assert_true(harness_file_has(h->child[0].log, "another history"));
}

/* Count the lines of file that contain needle. */
static int count_lines(const char *file, const char *needle)
{
    FILE *f = fopen(file, "r");
    char line[1024];
    int n = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}

struct download
{
    struct harness *h;
    char path[200];
    pthread_t thread;
    int rc;
    struct store_snapshot_info info;
};

/* What a child does: a snapshot, "a recent copy will do", checked. */
static void *download(void *arg)
{
    struct download *d = arg;
    struct cd_client *c = harness_client(d->h, 1u, 20000);
    int fd = open(d->path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    uint64_t rev = 0;
    d->rc = c == NULL || fd < 0 ? -EIO : cd_client_snapshot_recent(c, fd, &rev);
    if (d->rc == 0) {
        char tmp[220];
        snprintf(tmp, sizeof tmp, "%s.check", d->path);
        lseek(fd, 0, SEEK_SET);
        d->rc = store_snapshot_verify(fd, tmp, &d->info);
    }
    if (fd >= 0) {
        close(fd);
    }
    cd_client_close(c);
    return NULL;
}

static void test_downloads_share_copies(void **state)
{
    struct harness *h = *state;
    char key[32], log[200];
    check_rc(harness_init(h, 1, flags), 0);
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    check_rc(harness_wait_voters(h, 1, 15000), 0);
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "/bulk/%03d", i);
        put(h, key, "0123456789abcdef0123456789abcdef");
    }
    struct store_meta m;
    check_rc(harness_store_meta(h, 0, &m), 0);

    /* Sixteen children at once: a few copies serve them all. */
    enum { N = 16 };
    struct download d[N];
    int before = count_lines(h->node[0].log, "snapshot copy at revision");
    for (int i = 0; i < N; i++) {
        d[i].h = h;
        d[i].rc = -1;
        snprintf(d[i].path, sizeof d[i].path, "%s/dl%02d.snap", h->base, i);
        assert_int_equal(pthread_create(&d[i].thread, NULL, download, &d[i]),
                         0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(d[i].thread, NULL);
        check_rc(d[i].rc, 0);
        assert_true(d[i].info.meta.revision >= m.revision);
        assert_int_equal(d[i].info.keys, 200 + 4); /* and /cluster/... */
    }
    int copies =
        count_lines(h->node[0].log, "snapshot copy at revision") - before;
    if (copies < 1 || copies > N / 4) {
        fail_msg("%d copies for %d simultaneous downloads", copies, N);
    }

    /* A backup right after a write holds it, each time. */
    snprintf(log, sizeof log, "%s/clusterctl.log", h->base);
    for (int i = 0; i < 3; i++) {
        char file[200];
        uint64_t rev = 0;
        struct cd_client *c = harness_client(h, 0, 10000);
        snprintf(key, sizeof key, "/after/%d", i);
        check_rc(cd_client_put(c, key, strlen(key), "x", 1, &rev), 0);
        cd_client_close(c);
        snprintf(file, sizeof file, "%s/backup%d.snap", h->base, i);
        assert_int_equal(harness_ctl(h, log, "snapshot", "save", file), 0);
        struct clusterd_backup_info b;
        check_rc(clusterd_backup_verify(file, NULL, &b), 0);
        assert_true(b.revision >= rev);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restore_children_reattach,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_force_new_cluster_child_ahead,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_downloads_share_copies,
                                        harness_setup, harness_teardown),
    };
    const char *filter = getenv("CD_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0') {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests_name("restore", tests, NULL, NULL);
}
