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
 * the iteration, so the run can be replayed.  The writer alternates the
 * two durability modes, since their commit paths differ.
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
        if (store_apply(s, &b, index + 1, res) != 0 || res[0].status != 0) {
            _exit(4);
        }
        index++;
        m.revision = res[0].revision;
        struct ack a = {res[0].revision, index};
        if (write(fd, &a, sizeof a) != (ssize_t)sizeof a) {
            _exit(5);
        }
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
        int durability = it % 2 ? STORE_DURABLE_DEFERRED : STORE_DURABLE_EACH;

        assert_int_equal(pipe(p), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            writer(path, durability, wseed, p[1]);
        }
        close(p[1]);
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
        struct ack a = {expect_rev, expect_rev}, tmp;
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
        if (m.revision != a.revision && m.revision != a.revision + 1) {
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
        torn += m.revision == a.revision + 1;
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
    /* The test must have exercised something.  A kill comes 0.5 to 20 ms
     * after the fork, and a synced commit takes 0.2 ms on this disk but 4
     * ms or more when it throttles or other jobs share it (two full `make
     * check` runs ended at 196 revisions for 200 kills): ask for one
     * commit every other kill. */
    assert_true(expect_rev > (uint64_t)iters / 2);
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
