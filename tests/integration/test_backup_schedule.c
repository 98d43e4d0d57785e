/*
 * test_backup_schedule.c - scheduled backups with real processes on loopback:
 * three clusterd parents and clusterctl.
 *
 *   - `clusterctl backup schedule` stores the schedule; the leader takes
 *     backups every second into the directory, each one whole and sound
 *     (clusterctl snapshot verify), and keeps the last three;
 *   - the leader is killed: the next leader goes on with the schedule (it
 *     is in the store) and says so in the recorded result;
 *   - a directory that cannot be written: each attempt fails, is logged
 *     and recorded (`backup status` shows the error and the count), the
 *     last good backup is still named, and the cluster serves on;
 *   - `clusterctl backup now` takes one at once and reports it.
 *
 * Timing bounds are generous liveness bounds.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
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

/* The backup status as the leader tells it: 0 and *out, or the error. */
static int status(struct harness *h, struct cd_msg *out)
{
    struct cd_client *c = harness_client(h, 0, 10000);
    struct cd_msg req;
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_BACKUP;
    int rc = cd_client_call(c, &req, out);
    cd_client_close(c);
    return rc;
}

/* Poll until a backup attempt later than after_ms is recorded: 0 and *last,
 * or CD_ETIMEOUT. */
static int wait_attempt(struct harness *h,
                        uint64_t after_ms,
                        struct cd_backup_result *last,
                        unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < deadline) {
        struct cd_msg m;
        if (status(h, &m) == 0) {
            int got = m.u.backup_resp.has_last &&
                      m.u.backup_resp.last.time_ms > after_ms;
            if (got) {
                *last = m.u.backup_resp.last;
            }
            codec_msg_free(&m);
            if (got) {
                return 0;
            }
        }
        harness_sleep_ms(50);
    }
    return CD_ETIMEOUT;
}

/* The backups of any cluster in dir, counted; each one checked. */
static int count_backups(const char *dir, int *sound)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    *sound = 0;
    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        char path[512];
        if (strncmp(e->d_name, "clusterd-", 9) != 0 || len < 5 ||
            strcmp(e->d_name + len - 5, ".snap") != 0) {
            continue;
        }
        n++;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        *sound += clusterd_backup_verify(path, NULL, NULL) == 0;
    }
    closedir(d);
    return n;
}

static void test_scheduled_backups(void **state)
{
    struct harness *h = *state;
    char dir[200], bad[200], log[200];
    struct cd_backup_result last = {0};
    struct cd_msg m;
    check_rc(harness_init(h, 3, flags), 0);
    check_rc(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    for (int i = 1; i < 3; i++) {
        check_rc(harness_start(h, i, H_JOIN, 0), 0);
    }
    check_rc(harness_wait_voters(h, 3, 30000), 0);
    h->formed = 1;
    snprintf(dir, sizeof dir, "%s/backups/hourly", h->base);
    snprintf(log, sizeof log, "%s/clusterctl.log", h->base);

    /* No schedule yet: `backup now` has nowhere to write. */
    assert_int_equal(harness_ctl(h, log, "backup", "now"), 1);
    assert_int_equal(harness_ctl(h, log, "backup", "schedule", "--every", "1s",
                                 "--dir", dir, "--retain", "3"),
                     0);
    check_rc(status(h, &m), 0);
    assert_true(m.u.backup_resp.has_schedule);
    assert_int_equal(m.u.backup_resp.schedule.interval_s, 1);
    assert_int_equal(m.u.backup_resp.schedule.retain, 3);
    assert_string_equal(m.u.backup_resp.schedule.dir, dir);
    codec_msg_free(&m);

    /* Five backups, one after the other; three kept, all sound. */
    uint64_t after = 0;
    for (int i = 0; i < 5; i++) {
        check_rc(wait_attempt(h, after, &last, 10000), 0);
        if (!last.ok) {
            fail_msg("backup %d failed: %s", i, last.error);
        }
        assert_true(last.revision > 0 && last.keys > 0 && last.bytes > 0);
        assert_int_equal(access(last.file, R_OK), 0);
        after = last.time_ms;
    }
    int sound = 0;
    assert_int_equal(count_backups(dir, &sound), 3);
    assert_int_equal(sound, 3);

    /* The leader dies: the next one goes on with the schedule. */
    int leader = harness_leader(h, 5000);
    assert_true(leader >= 0);
    uint64_t old_node = last.node_id;
    harness_stop(h, leader, SIGKILL);
    uint64_t deadline = harness_now_ms() + 20000;
    do {
        check_rc(wait_attempt(h, after, &last, 15000), 0);
        after = last.time_ms;
    } while (last.node_id == old_node && harness_now_ms() < deadline);
    assert_true(last.node_id != old_node);
    assert_true(last.ok);
    check_rc(harness_start(h, leader, H_RESTART, 0), 0);

    /* A directory that cannot be written (a file is in the way): the
     * failures are recorded and logged, and the cluster serves on. */
    snprintf(bad, sizeof bad, "%s/not-a-dir", h->base);
    FILE *fp = fopen(bad, "w");
    assert_non_null(fp);
    fclose(fp);
    char last_ok_file[CD_BACKUP_FILE_MAX];
    snprintf(last_ok_file, sizeof last_ok_file, "%s", last.file);
    assert_int_equal(harness_ctl(h, log, "backup", "schedule", "--every", "1s",
                                 "--dir", bad, "--retain", "3"),
                     0);
    check_rc(wait_attempt(h, after, &last, 10000), 0);
    assert_false(last.ok);
    assert_int_equal(last.failures, 1);
    assert_non_null(strstr(last.error, "Not a directory"));
    assert_string_equal(last.last_ok_file, last_ok_file);
    /* A failure is tried again at the schedule's pace (here 1 s). */
    check_rc(wait_attempt(h, last.time_ms, &last, 10000), 0);
    assert_false(last.ok);
    assert_int_equal(last.failures, 2);
    struct cd_client *c = harness_client(h, 0, 10000);
    check_rc(cd_client_put(c, "/still", 6, "serving", 7, NULL), 0);
    cd_client_close(c);
    int logged = 0;
    for (int i = 0; i < 3; i++) {
        logged |= harness_log_has(h, i, "backup into");
    }
    assert_true(logged);
    assert_int_equal(harness_ctl(h, log, "backup", "status"), 0);
    assert_true(harness_file_has(log, "FAILED"));
    assert_int_equal(harness_ctl(h, log, "backup", "now"), 1);

    /* Off, back to the good directory; `backup now` takes one. */
    assert_int_equal(harness_ctl(h, log, "backup", "schedule", "--every", "1d",
                                 "--dir", dir, "--retain", "3"),
                     0);
    assert_int_equal(harness_ctl(h, log, "backup", "schedule", "--off"), 0);
    check_rc(status(h, &m), 0);
    assert_int_equal(m.u.backup_resp.schedule.interval_s, 0);
    assert_string_equal(m.u.backup_resp.schedule.dir, dir);
    assert_int_equal(m.u.backup_resp.next_ms, 0);
    codec_msg_free(&m);
    assert_int_equal(harness_ctl(h, log, "backup", "now"), 0);
    check_rc(status(h, &m), 0);
    assert_true(m.u.backup_resp.last.ok);
    assert_int_equal(m.u.backup_resp.last.failures, 0);
    assert_int_equal(access(m.u.backup_resp.last.file, R_OK), 0);
    codec_msg_free(&m);
    assert_int_equal(count_backups(dir, &sound), 3);
    assert_int_equal(sound, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scheduled_backups, harness_setup,
                                        harness_teardown),
    };
    return cmocka_run_group_tests_name("backup", tests, NULL, NULL);
}
