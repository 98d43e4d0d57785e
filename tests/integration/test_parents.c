/*
 * test_parents.c - the parent group with real clusterd processes on
 * loopback: formation by join, writes across a leader kill, identical
 * stores, catch-up by snapshot, leave/join cycles, standby promotion.
 *
 * Timing bounds are generous liveness bounds, never performance claims
 * (those live in make bench).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
                                         "--set",     "history_revisions=200",
                                         NULL};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
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
    /* History is compacted past history_revisions (200), on every replica
     * at the same point (the leader proposes it through Raft). */
    sleep_ms(2000);
    uint64_t rev = leader_revision(h);
    check_rc(harness_wait_revision(h, rev, 10000), 0);
    struct store_meta m0, mi;
    check_rc(harness_store_meta(h, 0, &m0), 0);
    if (m0.compact_rev == 0 || m0.revision - m0.compact_rev > 200 + 50) {
        fail_msg("history not compacted: revision %llu, compacted to %llu",
                 (unsigned long long)m0.revision,
                 (unsigned long long)m0.compact_rev);
    }
    for (int i = 1; i < 3; i++) {
        check_rc(harness_store_meta(h, i, &mi), 0);
        assert_int_equal(mi.compact_rev, m0.compact_rev);
    }
    if (!harness_log_has(h, victim, "restored snapshot")) {
        fail_msg(
            "node %d caught up without a snapshot: the test did not "
            "exercise InstallSnapshot",
            victim + 1);
    }
}

/* Read a small file into buf (NUL-terminated, newline dropped). */
static void read_text(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    buf[0] = '\0';
    if (f != NULL) {
        if (fgets(buf, (int)len, f) == NULL) {
            buf[0] = '\0';
        }
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/*
 * A parent's store commits without flushing (docs/storage.md).  After the
 * machine stopped with unflushed writes (the store's boot mark names an
 * earlier boot), the store may be anything; the node must throw it away
 * and rebuild it from raft's snapshot and log, and end up identical to the
 * others.  The worst case is modelled: the store's first pages are
 * garbage, so that it cannot even be opened.  A kill -9 within the same
 * boot must keep the store.
 */
static void test_store_rebuilt_after_machine_stop(void **state)
{
    struct harness *h = *state;
    char path[300], mark[300], boot[64], text[80];
    form(h, 3, 3);
    int leader = harness_leader(h, 5000);
    int victim = (leader + 1) % 3;
    struct cd_client *c = harness_client(h, 0, 10000);
    assert_non_null(c);
    for (int i = 0; i < 300; i++) {
        char key[32];
        snprintf(key, sizeof key, "/pl/%04d", i);
        check_rc(cd_client_put(c, key, strlen(key), "before", 6, NULL), 0);
    }
    read_text("/proc/sys/kernel/random/boot_id", boot, sizeof boot);
    snprintf(mark, sizeof mark, "%s/state.boot", h->node[victim].dir);
    read_text(mark, text, sizeof text);
    assert_string_equal(text, boot); /* armed for this boot */

    harness_stop(h, victim, SIGKILL);
    for (int i = 300; i < 400; i++) {
        char key[32];
        snprintf(key, sizeof key, "/pl/%04d", i);
        check_rc(cd_client_put(c, key, strlen(key), "after", 5, NULL), 0);
    }
    snprintf(path, sizeof path, "%s/state.mdb", h->node[victim].dir);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    static uint8_t junk[64 * 1024];
    memset(junk, 0xa5, sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    close(fd);
    write_text(mark, "00000000-0000-4000-8000-000000000000\n");

    check_rc(harness_start(h, victim, H_RESTART, 0), 0);
    check_rc(cd_client_put(c, "/pl/last", 8, "x", 1, NULL), 0);
    cd_client_close(c);
    assert_same_stores(h);
    if (!harness_log_has(h, victim, "raft rebuilds it")) {
        fail_msg("node %d did not rebuild its store", victim + 1);
    }
    read_text(mark, text, sizeof text);
    assert_string_equal(text, boot);

    /* Within one boot a killed node keeps its store as it is. */
    struct store_meta before, after;
    check_rc(harness_store_meta(h, victim, &before), 0);
    harness_stop(h, victim, SIGKILL);
    check_rc(harness_start(h, victim, H_RESTART, 0), 0);
    check_rc(harness_store_meta(h, victim, &after), 0);
    if (after.applied_index < before.applied_index) {
        fail_msg(
            "node %d lost its store over a kill -9: applied %llu, "
            "then %llu",
            victim + 1, (unsigned long long)before.applied_index,
            (unsigned long long)after.applied_index);
    }
    assert_same_stores(h);

    /* A graceful stop flushes the store and says so. */
    harness_stop(h, victim, SIGTERM);
    read_text(mark, text, sizeof text);
    assert_string_equal(text, "clean");
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

    /* Every parent is lost; a new one starts from the backup.  The new
     * cluster runs with the default snapshot settings: its first snapshot
     * then comes only after 1024 entries, and joiners that replayed the
     * log from index 1 would miss the backup's state (they did, once). */
    for (int i = 0; i < 3; i++) {
        harness_stop(h, i, SIGKILL);
        harness_wipe(h, i);
    }
    static const char *const default_snapshots[] = {
        "--profile", "fast", "--set", "failure_timeout_ms=2000", NULL};
    memset(h->extra, 0, sizeof h->extra);
    for (int i = 0; default_snapshots[i] != NULL; i++) {
        h->extra[i] = default_snapshots[i];
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
    /* With the restored state in a raft snapshot, the first parent's store
     * no longer needs its flushes: the marker is gone, the mark armed. */
    char path[300], boot[64], text[80];
    snprintf(path, sizeof path, "%s/restored", h->node[0].dir);
    assert_int_equal(access(path, F_OK), -1);
    read_text("/proc/sys/kernel/random/boot_id", boot, sizeof boot);
    snprintf(path, sizeof path, "%s/state.boot", h->node[0].dir);
    read_text(path, text, sizeof text);
    assert_string_equal(text, boot);
}

/* --- the API under bad input ------------------------------------------ */

static int raw_connect(struct harness *h, int i)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    const char *colon = strrchr(h->node[i].api, ':');
    sa.sin_port = htons((uint16_t)strtoul(colon + 1, NULL, 10));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read one frame; 0 and *m, or <0 (EOF / timeout). */
static int raw_read(int fd, struct cd_msg *m)
{
    uint8_t hdr[4];
    size_t got = 0;
    memset(m, 0, sizeof *m);
    while (got < 4) {
        ssize_t n = read(fd, hdr + got, 4 - got);
        if (n <= 0) {
            return -1;
        }
        got += (size_t)n;
    }
    uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
                   ((uint32_t)hdr[2] << 8) | hdr[3];
    uint8_t *buf = malloc(len ? len : 1);
    got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0) {
            free(buf);
            return -1;
        }
        got += (size_t)n;
    }
    int rc = codec_decode(buf, len, m);
    free(buf);
    return rc;
}

static void raw_send_status(int fd, uint64_t request_id)
{
    struct cd_msg m;
    uint8_t *frame;
    size_t len;
    memset(&m, 0, sizeof m);
    m.request_id = request_id;
    m.type = CD_MSG_STATUS;
    assert_int_equal(codec_encode(&m, 0, &frame, &len), 0);
    assert_int_equal(write(fd, frame, len), (ssize_t)len);
    free(frame);
}

static void test_bad_input(void **state)
{
    struct harness *h = *state;
    struct cd_msg m;
    form(h, 3, 3);

    /* Garbage with sound framing: an error reply, the connection lives. */
    int fd = raw_connect(h, 0);
    assert_true(fd >= 0);
    uint8_t junk[] = {0, 0, 0, 6, 0xff, 0xfe, 0x01, 0x02, 0x99, 0x00};
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    check_rc(raw_read(fd, &m), 0);
    assert_int_equal(m.type, CD_MSG_ERROR);
    assert_int_equal(m.u.error.code, CD_EMALFORMED);
    codec_msg_free(&m);
    raw_send_status(fd, 7);
    check_rc(raw_read(fd, &m), 0);
    assert_int_equal(m.type, CD_MSG_STATUS_RESP);
    assert_int_equal(m.request_id, 7);
    codec_msg_free(&m);

    /* An oversized frame: an error, then the connection is closed. */
    uint8_t big[] = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
    assert_int_equal(write(fd, big, sizeof big), (ssize_t)sizeof big);
    check_rc(raw_read(fd, &m), 0);
    assert_int_equal(m.u.error.code, CD_EFRAMETOOBIG);
    codec_msg_free(&m);
    assert_true(raw_read(fd, &m) < 0); /* closed */
    close(fd);

    /* A frame of another cluster is refused. */
    fd = raw_connect(h, 0);
    memset(&m, 0, sizeof m);
    m.request_id = 9;
    m.type = CD_MSG_STATUS;
    m.has_cluster_id = 1;
    m.cluster_id = 12345;
    uint8_t *frame;
    size_t len;
    assert_int_equal(codec_encode(&m, 0, &frame, &len), 0);
    assert_int_equal(write(fd, frame, len), (ssize_t)len);
    free(frame);
    check_rc(raw_read(fd, &m), 0);
    assert_int_equal(m.u.error.code, CD_EBADCLUSTER);
    codec_msg_free(&m);
    close(fd);

    /* Nothing else was disturbed. */
    struct cd_client *c = harness_client(h, 0, 5000);
    check_rc(cd_client_put(c, "/still", 6, "fine", 4, NULL), 0);
    cd_client_close(c);
}

/* --- watch -------------------------------------------------------------- */

struct seen
{
    int events;
    uint64_t last_rev;
    int compacted;
    int want;
};

static int on_changes(void *arg, const struct cd_msg *m)
{
    struct seen *s = arg;
    if (m->u.changes.compacted) {
        s->compacted = 1;
        return 1;
    }
    for (size_t i = 0; i < m->u.changes.n_events; i++) {
        uint64_t rev = m->u.changes.events[i].kv.mod_rev;
        if (rev < s->last_rev) {
            s->events = -1000000; /* revisions went backwards */
        }
        s->last_rev = rev;
        s->events++;
    }
    return s->events >= s->want;
}

static void test_watch_resume_and_compacted(void **state)
{
    struct harness *h = *state;
    form(h, 3, 3);
    struct cd_client *c = harness_client(h, 0, 5000);
    uint64_t first = 0, rev = 0;
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "/watch/%02d", i);
        check_rc(cd_client_put(c, key, strlen(key), "v", 1, &rev), 0);
        if (i == 0) {
            first = rev;
        }
    }
    /* From the start, then resumed from the middle: in order, no gaps. */
    struct seen s = {0, 0, 0, 20};
    check_rc(cd_client_watch(c, first - 1, "/watch/", 7, 5000, on_changes, &s),
             0);
    assert_int_equal(s.events, 20);
    struct seen s2 = {0, 0, 0, 10};
    check_rc(cd_client_watch(c, first + 9, "/watch/", 7, 5000, on_changes, &s2),
             0);
    assert_int_equal(s2.events, 10);
    assert_int_equal(s2.last_rev, rev);
    /* After compaction, an old revision gets the compacted answer. */
    struct cd_msg req, resp;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_WRITE;
    req.u.write.op.type = CD_OP_COMPACT;
    req.u.write.op.revision = first + 5;
    check_rc(cd_client_call(c, &req, &resp), 0);
    codec_msg_free(&resp);
    struct seen s3 = {0, 0, 0, 1};
    check_rc(cd_client_watch(c, first, "/watch/", 7, 5000, on_changes, &s3), 0);
    assert_int_equal(s3.compacted, 1);
    cd_client_close(c);
}

/* --- rolling restart ---------------------------------------------------- */

static void test_rolling_restart_loses_nothing(void **state)
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
    /* Restart every parent in turn with SIGTERM, the leader included. */
    for (int i = 0; i < 3; i++) {
        sleep_ms(300);
        int status = harness_stop(h, i, SIGTERM);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fail_msg("node %d did not stop cleanly on SIGTERM (status %d)",
                     i + 1, status);
        }
        check_rc(harness_start(h, i, H_RESTART, 0), 0);
        check_rc(harness_wait_voters(h, 3, 20000), 0);
        uint64_t rev = leader_revision(h);
        check_rc(harness_wait_revision(h, rev, 20000), 0);
    }
    stop = 1;
    for (int t = 0; t < WRITERS; t++) {
        pthread_join(w[t].tid, NULL);
        if (w[t].errors != 0) {
            fail_msg("writer %d failed during the rolling restart", t);
        }
    }
    struct cd_client *c = harness_client(h, 0, 15000);
    for (int t = 0; t < WRITERS; t++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "/w/%d/", t);
        for (uint64_t i = 0; i < w[t].acked; i += 7) {
            char key[64];
            char *val = NULL;
            size_t len;
            snprintf(key, sizeof key, "/w/%d/%06llu", t, (unsigned long long)i);
            int rc = cd_client_get(c, key, strlen(key), 0, &val, &len, NULL);
            if (rc != 0) {
                fail_msg("acknowledged write %s lost in the rolling restart",
                         key);
            }
            free(val);
        }
    }
    cd_client_close(c);
    assert_same_stores(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writes_across_leader_kill,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_catch_up_by_snapshot,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_store_rebuilt_after_machine_stop,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_leave_join_cycles, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_refuse_removal_below_majority,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_standby_replaces_dead_voter,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_force_new_cluster, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_new_cluster_from_backup,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, harness_setup,
                                        harness_teardown),
        cmocka_unit_test_setup_teardown(test_watch_resume_and_compacted,
                                        harness_setup, harness_teardown),
        cmocka_unit_test_setup_teardown(test_rolling_restart_loses_nothing,
                                        harness_setup, harness_teardown),
    };
    /* CD_TEST_FILTER=test_name (a glob) runs only matching tests. */
    const char *filter = getenv("CD_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0') {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests_name("parents", tests, NULL, NULL);
}
