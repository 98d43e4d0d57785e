/*
 * test_backup.c - unit tests of cluster/backup: when scheduled backups are
 * due (with and without a time of day, across time zones, after a missed
 * slot and after a failure), and taking backups of a real store into a
 * directory: names, the check, retention, leftovers, and the failures a
 * disk gives (a path that is not a directory, a full disk modelled with
 * RLIMIT_FSIZE in a forked process).  Each test has its own temporary
 * directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/backup.h"
#include "lib/err.h"
#include "storage/clusterd.h"
#include "storage/store.h"

#define CID 0x0123456789abcdefull
#define H_MS 3600000ull
#define DAY_MS (24 * H_MS)

struct fx
{
    char dir[64];
    char bk[96];
    struct store *s;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char path[128];
    struct store_config cfg;
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/cd-backup-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f; /* the teardown cleans up from here on */
    snprintf(f->bk, sizeof f->bk, "%s/backups/daily", f->dir);
    snprintf(path, sizeof path, "%s/state.mdb", f->dir);
    store_config_init(&cfg, path);
    cfg.durability = STORE_DURABLE_NONE;
    if (store_open(&cfg, &f->s) != 0 || store_set_cluster_id(f->s, CID) != 0) {
        return -1;
    }
    for (int i = 0; i < 50; i++) {
        char key[32];
        snprintf(key, sizeof key, "/k/%02d", i);
        if (store_put(f->s, key, strlen(key), "v", 1, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    store_close(f->s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", f->dir);
    }
    free(f);
    return 0;
}

/* ms since the epoch of a UTC date and time. */
static uint64_t utc_ms(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi};
    return (uint64_t)timegm(&tm) * 1000;
}

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static void test_next_without_time_of_day(void **state)
{
    struct cd_backup_schedule bs = {.interval_s = 3600, .set_ms = 5000};
    struct cd_backup_result last = {.time_ms = 100000, .ok = 1};
    (void)state;
    assert_int_equal(backup_next_ms(NULL, NULL), 0);
    struct cd_backup_schedule off = {.interval_s = 0, .dir = "/x"};
    assert_int_equal(backup_next_ms(&off, &last), 0);
    /* The first one as soon as the schedule is set. */
    assert_int_equal(backup_next_ms(&bs, NULL), 5000);
    assert_int_equal(backup_next_ms(&bs, &last), 100000 + H_MS);
    /* After a failure: soon again, not a whole interval later. */
    last.ok = 0;
    assert_int_equal(backup_next_ms(&bs, &last), 100000 + BACKUP_RETRY_MS);
    /* Unless the interval itself is shorter. */
    bs.interval_s = 60;
    assert_int_equal(backup_next_ms(&bs, &last), 100000 + 60000);
}

static void test_next_at_time_of_day(void **state)
{
    (void)state;
    set_tz("UTC");
    struct cd_backup_schedule daily = {
        .interval_s = 86400, .has_at = 1, .at_minute = 4 * 60};
    /* Set at 10:00: the first is tomorrow at 04:00. */
    daily.set_ms = utc_ms(2026, 12, 6, 10, 0);
    assert_int_equal(backup_next_ms(&daily, NULL), utc_ms(2026, 12, 7, 4, 0));
    /* Set at 03:00: today at 04:00. */
    daily.set_ms = utc_ms(2026, 12, 6, 3, 0);
    assert_int_equal(backup_next_ms(&daily, NULL), utc_ms(2026, 12, 6, 4, 0));
    /* Taken at 04:00:01: the next one tomorrow. */
    struct cd_backup_result last = {.time_ms = utc_ms(2026, 12, 6, 4, 0) + 1000,
                                    .ok = 1};
    assert_int_equal(backup_next_ms(&daily, &last), utc_ms(2026, 12, 7, 4, 0));
    /* No leader at yesterday's slot: the missed slot is due (in the past,
     * so at once), once. */
    last.time_ms = utc_ms(2026, 12, 4, 4, 0);
    assert_int_equal(backup_next_ms(&daily, &last), utc_ms(2026, 12, 5, 4, 0));

    /* Every 6 hours from 00:30. */
    struct cd_backup_schedule six = {
        .interval_s = 6ull * 3600, .has_at = 1, .at_minute = 30};
    last.time_ms = utc_ms(2026, 12, 6, 13, 0);
    assert_int_equal(backup_next_ms(&six, &last), utc_ms(2026, 12, 6, 18, 30));
    last.time_ms = utc_ms(2026, 12, 6, 0, 10);
    assert_int_equal(backup_next_ms(&six, &last), utc_ms(2026, 12, 6, 0, 30));
    /* 23:00 daily, last at 01:00: today at 23:00. */
    struct cd_backup_schedule late = {
        .interval_s = 86400, .has_at = 1, .at_minute = 23 * 60};
    last.time_ms = utc_ms(2026, 12, 6, 1, 0);
    assert_int_equal(backup_next_ms(&late, &last), utc_ms(2026, 12, 6, 23, 0));
    /* Midnight is a time of day too. */
    struct cd_backup_schedule midnight = {
        .interval_s = 86400, .has_at = 1, .at_minute = 0};
    assert_int_equal(backup_next_ms(&midnight, &last),
                     utc_ms(2026, 12, 7, 0, 0));

    /* The leader's local time: 04:00 in Tokyo is 19:00 UTC the day
     * before. */
    set_tz("Asia/Tokyo");
    daily.set_ms = utc_ms(2026, 12, 6, 10, 0); /* 19:00 in Tokyo */
    assert_int_equal(backup_next_ms(&daily, NULL), utc_ms(2026, 12, 6, 19, 0));
    set_tz("UTC");
}

/* The names in dir that start with prefix, sorted, into out (n at most);
 * the count. */
static int names(const char *dir, const char *prefix, char out[][256], int n)
{
    struct dirent **list;
    int k = scandir(dir, &list, NULL, alphasort), got = 0;
    for (int i = 0; i < k; i++) {
        if (strncmp(list[i]->d_name, prefix, strlen(prefix)) == 0 && got < n) {
            snprintf(out[got++], 256, "%s", list[i]->d_name);
        }
        free(list[i]);
    }
    if (k >= 0) {
        free(list);
    }
    return got;
}

static void touch(const char *dir, const char *name, time_t age_s)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    close(fd);
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= age_s;
    tv[1] = tv[0];
    assert_int_equal(utimes(path, tv), 0);
}

static void test_take_and_retain(void **state)
{
    struct fx *f = *state;
    struct backup_outcome out;
    char got[16][256], path[256];
    struct clusterd_backup_info b;

    /* Four backups a second apart, keeping three. */
    uint64_t t0 = utc_ms(2026, 12, 6, 4, 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(store_put(f->s, "/n", 2, "x", 1, NULL), 0);
        int rc =
            backup_take(f->s, f->bk, CID, 3, t0 + (uint64_t)i * 1000, &out);
        if (rc != 0) {
            fail_msg("backup %d: %s", i, out.error);
        }
        assert_int_equal(out.info.meta.revision, 51 + i);
        assert_int_equal(out.info.keys, 51);
        assert_true(out.file_bytes > out.info.bytes);
        snprintf(path, sizeof path,
                 "%s/clusterd-0123456789abcdef-20261206T04000%dZ-r%d.snap",
                 f->bk, i, 51 + i);
        assert_string_equal(out.file, path);
        assert_int_equal(out.pruned, i == 3 ? 1 : 0);
        /* Whole and sound, as `clusterctl snapshot verify` sees it. */
        assert_int_equal(clusterd_backup_verify(out.file, f->dir, &b), 0);
        assert_int_equal(b.cluster_id, CID);
        assert_int_equal(b.revision, 51 + i);
    }
    assert_int_equal(names(f->bk, "clusterd-", got, 16), 3);
    assert_non_null(strstr(got[0], "T040001Z"));
    assert_non_null(strstr(got[2], "T040003Z"));
    assert_int_equal(names(f->bk, ".", got, 16), 2); /* "." and ".." only */

    /* Another cluster's backups, other files, and a part file being
     * written right now are left alone; an old part file goes. */
    touch(f->bk, "clusterd-ffffffffffffffff-20200101T000000Z-r1.snap", 0);
    touch(f->bk, "notes.txt", 0);
    touch(f->bk, ".clusterd-0123456789abcdef-20261206T040009Z.part", 0);
    touch(f->bk, ".clusterd-0123456789abcdef-20200101T000000Z.part", 7200);
    touch(f->bk, ".clusterd-0123456789abcdef-20200101T000000Z.check", 7200);
    unsigned pruned = 9;
    assert_int_equal(backup_prune(f->bk, CID, 1, &pruned), 0);
    assert_int_equal(pruned, 2);
    assert_int_equal(names(f->bk, "clusterd-0123", got, 16), 1);
    assert_non_null(strstr(got[0], "T040003Z"));
    assert_int_equal(names(f->bk, "clusterd-ffff", got, 16), 1);
    assert_int_equal(names(f->bk, "notes.txt", got, 16), 1);
    assert_int_equal(names(f->bk, ".clusterd-", got, 16), 1);
    assert_non_null(strstr(got[0], "T040009Z"));
    /* 0 keeps everything. */
    assert_int_equal(backup_prune(f->bk, CID, 0, &pruned), 0);
    assert_int_equal(pruned, 0);
}

static void test_take_fails_cleanly(void **state)
{
    struct fx *f = *state;
    struct backup_outcome out;
    char file[128], sub[160], got[4][256];

    /* The directory is a file: reported, nothing written. */
    snprintf(file, sizeof file, "%s/plain", f->dir);
    touch(f->dir, "plain", 0);
    snprintf(sub, sizeof sub, "%s/sub", file);
    assert_int_equal(backup_take(f->s, file, CID, 3, 1000, &out), -ENOTDIR);
    assert_non_null(strstr(out.error, "cannot create"));
    assert_non_null(strstr(out.error, file));
    assert_int_equal(out.file[0], '\0');
    assert_int_equal(backup_take(f->s, sub, CID, 3, 1000, &out), -ENOTDIR);

    /* A full disk, in a child process whose files may not grow past 8 KiB
     * (the store copy is larger): the write fails, the part file goes,
     * no backup name appears. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {8192, 8192};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = backup_take(f->s, f->bk, CID, 3, 1000, &out);
        _exit(rc == -EFBIG && strstr(out.error, "writing") != NULL ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(names(f->bk, "clusterd-", got, 4), 0);
    assert_int_equal(names(f->bk, ".clusterd-", got, 4), 0);
    /* And with room again it works. */
    assert_int_equal(backup_take(f->s, f->bk, CID, 3, 1000, &out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_without_time_of_day),
        cmocka_unit_test(test_next_at_time_of_day),
        cmocka_unit_test_setup_teardown(test_take_and_retain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_fails_cleanly, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("backup", tests, NULL, NULL);
}
