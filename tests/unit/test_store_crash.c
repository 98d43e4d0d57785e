/*
 * test_store_crash.c - the store survives SIGKILL at any moment.
 *
 * A writer process applies batches as fast as it can, each taking exactly
 * one revision and one Raft index, and reports every acknowledged apply on
 * a pipe.  The test kills it with SIGKILL after a seeded random delay, then
 * opens the store and checks that
 *   - it opens;
 *   - its revision is the last acknowledged one, or one more (the apply in
 *     flight may have committed before its acknowledgement was written);
 *   - the applied index equals the revision (each batch took one of each);
 *   - the full consistency walk (store_check) passes.
 * The next writer continues from there.  CRASH_SEED and CRASH_ITERS
 * (default 1 and 200) choose the schedule; a failure prints the seed and
 * the iteration, so the run can be replayed.  The writer cycles through
 * the three durability modes, since their commit paths differ; with
 * STORE_DURABLE_NONE (a parent's store) it also applies as a parent does,
 * in groups of 1 to GROUP_MAX entries (store_apply_group), and
 * acknowledges a group's entries once the group committed: the revision
 * after the kill may then be up to a whole group past the last
 * acknowledged one.
 *
 * SIGKILL leaves the page cache intact, so this proves the store's own
 * atomicity, not the disk's: power loss is the fault lab's job.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/err.h"
#include "storage/store.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: small, seeded, the same schedule on every machine. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

struct ack
{
    uint64_t revision;
    uint64_t index;
};

#define GROUP_MAX 8

/* The writer: never returns. */
static void writer(const char *path, int durability, uint64_t seed, int fd)
{
    struct store_config cfg;
    struct store *s;
    struct store_read *r;
    struct store_meta m;
    static char val[4096];

    rng_state = seed;
    store_config_init(&cfg, path);
    cfg.durability = durability;
    if (store_open(&cfg, &s) != 0 || store_read_begin(s, &r) != 0 ||
        store_read_meta(r, &m) != 0) {
        _exit(3);
    }
    store_read_end(r);
    memset(val, 'x', sizeof val);
    uint64_t index = m.applied_index;
    int grouped = durability == STORE_DURABLE_NONE;
    struct ack acks[GROUP_MAX];
    size_t n_acks = 0, group = 1 + rnd() % GROUP_MAX;
    for (uint64_t n = 0;; n++) {
        char k1[32], k2[32], k3[32];
        struct cd_op ops[3];
        struct cd_op then_ops[2], else_ops[1];
        struct cd_compare cmp;
        struct cd_result res[3];
        size_t nops = 0;
        uint64_t choice = rnd() % 10;
        size_t vlen = 10 + (size_t)(rnd() % 3000);

        snprintf(k1, sizeof k1, "/crash/k/%03u", (unsigned)(rnd() % 500));
        snprintf(k2, sizeof k2, "/crash/k/%u", (unsigned)(rnd() % 50));
        snprintf(k3, sizeof k3, "/crash/last");
        memset(ops, 0, sizeof ops);
        if (choice < 6) {
            ops[nops].type = CD_OP_PUT;
            ops[nops].key = (struct cd_buf){k1, strlen(k1)};
            ops[nops].value = (struct cd_buf){val, vlen};
            nops++;
        } else {
            /* Either branch puts, so the txn always takes one revision;
             * the then branch also deletes a run of keys. */
            memset(then_ops, 0, sizeof then_ops);
            memset(else_ops, 0, sizeof else_ops);
            cmp = (struct cd_compare){
                {k1, strlen(k1)}, CD_CMP_EXISTS, CD_CMP_EQUAL, {NULL, 0}, 1};
            then_ops[0].type = CD_OP_DELETE_PREFIX;
            then_ops[0].key = (struct cd_buf){k2, strlen(k2)};
            then_ops[1].type = CD_OP_PUT;
            then_ops[1].key = (struct cd_buf){k3, strlen(k3)};
            then_ops[1].value = (struct cd_buf){val, vlen};
            else_ops[0].type = CD_OP_PUT;
            else_ops[0].key = (struct cd_buf){k1, strlen(k1)};
            else_ops[0].value = (struct cd_buf){val, vlen};
            ops[nops].type = CD_OP_TXN;
            ops[nops].compares = &cmp;
            ops[nops].n_compares = 1;
            ops[nops].then_ops = then_ops;
            ops[nops].n_then = 2;
            ops[nops].else_ops = else_ops;
            ops[nops].n_else = 1;
            nops++;
        }
        /* Ops that take no revision ride along. */
        ops[nops].type = CD_OP_LOG_APPEND;
        ops[nops].child_id = 1 + rnd() % 3;
        ops[nops].log_seq = index + 1;
        ops[nops].value = (struct cd_buf){val, 200};
        nops++;
        if (m.revision > 100 && rnd() % 50 == 0) {
            ops[nops].type = CD_OP_COMPACT;
            ops[nops].revision = m.revision - 50;
            nops++;
        }
        struct cd_batch b = {.time_ms = 1000 + n, .ops = ops, .n_ops = nops};
        int rc = grouped ? store_apply_group(s, &b, index + 1, res)
                         : store_apply(s, &b, index + 1, res);
        if (rc != 0 || res[0].status != 0) {
            _exit(4);
        }
        index++;
        m.revision = res[0].revision;
        acks[n_acks++] = (struct ack){res[0].revision, index};
        if (grouped && n_acks < group) {
            continue;
        }
        if (grouped && store_group_commit(s) != 0) {
            _exit(6);
        }
        if (write(fd, acks, n_acks * sizeof acks[0]) !=
            (ssize_t)(n_acks * sizeof acks[0])) {
            _exit(5);
        }
        n_acks = 0;
        group = 1 + rnd() % GROUP_MAX;
    }
}

static void test_sigkill_anywhere(void **state)
{
    (void)state;
    char dir[] = "/tmp/cd-crash-XXXXXX";
    char path[64];
    char why[256];
    const char *e;
    uint64_t seed = (e = getenv("CRASH_SEED")) ? strtoull(e, NULL, 0) : 1;
    int iters = (e = getenv("CRASH_ITERS")) ? atoi(e) : 200;
    uint64_t expect_rev = 0; /* the revision the store had after last check */
    int torn = 0;            /* times the in-flight apply had committed */

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/state.mdb", dir);
    rng_state = seed;
    for (int it = 0; it < iters; it++) {
        int p[2];
        uint64_t wseed = rnd();
        unsigned delay_us = 500 + (unsigned)(rnd() % 20000);
        static const int modes[] = {STORE_DURABLE_EACH, STORE_DURABLE_DEFERRED,
                                    STORE_DURABLE_NONE};
        int durability = modes[it % 3];
        uint64_t slack = durability == STORE_DURABLE_NONE ? GROUP_MAX : 1;

        assert_int_equal(pipe(p), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            writer(path, durability, wseed, p[1]);
        }
        close(p[1]);
        /* The kill lands after the writer's first commit, wherever the
         * writes that follow are: on a loaded machine a fixed delay after
         * fork() may end a writer that has not yet opened the store. */
        struct ack first = {expect_rev, expect_rev};
        struct pollfd pfd = {p[0], POLLIN, 0};
        if (poll(&pfd, 1, 10000) == 1 &&
            read(p[0], &first, sizeof first) != (ssize_t)sizeof first) {
            first = (struct ack){expect_rev, expect_rev};
        }
        usleep(delay_us);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status)) {
            fail_msg(
                "seed %llu iteration %d: writer exited by itself "
                "(status %d)",
                (unsigned long long)seed, it, status);
        }
        struct ack a = first, tmp;
        while (read(p[0], &tmp, sizeof tmp) == (ssize_t)sizeof tmp) {
            a = tmp;
        }
        close(p[0]);

        struct store_config cfg;
        struct store *s;
        struct store_read *r;
        struct store_meta m;
        store_config_init(&cfg, path);
        int rc = store_open(&cfg, &s);
        if (rc != 0) {
            fail_msg("seed %llu iteration %d: open after kill: %s",
                     (unsigned long long)seed, it, cd_errname(rc));
        }
        assert_int_equal(store_read_begin(s, &r), 0);
        assert_int_equal(store_read_meta(r, &m), 0);
        store_read_end(r);
        if (m.revision < a.revision || m.revision > a.revision + slack) {
            fail_msg(
                "seed %llu iteration %d: revision %llu, acknowledged "
                "%llu",
                (unsigned long long)seed, it, (unsigned long long)m.revision,
                (unsigned long long)a.revision);
        }
        if (m.applied_index != m.revision) {
            fail_msg(
                "seed %llu iteration %d: applied index %llu != "
                "revision %llu",
                (unsigned long long)seed, it,
                (unsigned long long)m.applied_index,
                (unsigned long long)m.revision);
        }
        torn += m.revision > a.revision;
        rc = store_check(s, why, sizeof why);
        if (rc != 0) {
            fail_msg("seed %llu iteration %d: consistency: %s",
                     (unsigned long long)seed, it, why);
        }
        expect_rev = m.revision;
        store_close(s);
    }
    printf(
        "crash: %d kills, final revision %llu, %d kills landed between "
        "commit and acknowledgement\n",
        iters, (unsigned long long)expect_rev, torn);
    /* The test must have exercised something. */
    assert_true(expect_rev >= (uint64_t)iters);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_anywhere),
    };
    return cmocka_run_group_tests_name("store_crash", tests, NULL, NULL);
}
