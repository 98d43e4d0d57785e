/*
 * test_bootmark.c - unit tests of cluster/bootmark: when a store written
 * without flushes is trusted at start, and how the mark is written.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/bootmark.h"

struct fx
{
    char dir[64];
    char mark[96];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/cd-test-bootmark-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->mark, sizeof f->mark, "%s/state.boot", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->mark);
    unlink(f->mark);
    unlink(tmp);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void put(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void get(const char *path, char *buf, size_t len)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, (int)len, fp));
    fclose(fp);
}

/* The trust verdict for the mark as it is now. */
static int trusted(struct fx *f)
{
    int t = -1;
    assert_int_equal(bootmark_check(f->mark, &t), 0);
    assert_true(t == 0 || t == 1);
    return t;
}

static void test_boot_id(void **state)
{
    char id[64], again[64];
    (void)state;
    assert_int_equal(bootmark_boot_id(id, sizeof id), 0);
    assert_int_equal(strlen(id), 36);
    assert_int_equal(bootmark_boot_id(again, sizeof again), 0);
    assert_string_equal(id, again);
    assert_int_equal(bootmark_boot_id(id, 16), -EINVAL);
}

static void test_verdicts(void **state)
{
    struct fx *f = *state;
    char boot[64], line[80];
    assert_int_equal(bootmark_boot_id(boot, sizeof boot), 0);

    /* No mark: no unflushed run ever wrote the store. */
    assert_int_equal(trusted(f), 1);

    /* Armed by this boot: a crashed process, the page cache kept all. */
    assert_int_equal(bootmark_arm(f->mark), 0);
    get(f->mark, line, sizeof line);
    assert_int_equal(strncmp(line, boot, 36), 0);
    assert_int_equal(trusted(f), 1);

    /* Armed by an earlier boot: the machine stopped with unflushed
     * writes, whatever is on disk cannot be trusted. */
    put(f->mark, "00000000-0000-4000-8000-000000000000\n");
    assert_int_equal(trusted(f), 0);

    /* Flushed at a graceful stop: trusted after any reboot. */
    assert_int_equal(bootmark_clean(f->mark), 0);
    get(f->mark, line, sizeof line);
    assert_string_equal(line, "clean\n");
    assert_int_equal(trusted(f), 1);

    /* A flush failed: rebuild, even within this boot. */
    assert_int_equal(bootmark_poison(f->mark), 0);
    assert_int_equal(trusted(f), 0);

    /* A damaged or empty mark is no proof of anything. */
    put(f->mark, "cle");
    assert_int_equal(trusted(f), 0);
    put(f->mark, "");
    assert_int_equal(trusted(f), 0);

    /* No temporary file is left behind. */
    char tmp[128];
    struct stat st;
    snprintf(tmp, sizeof tmp, "%s.tmp", f->mark);
    assert_int_equal(stat(tmp, &st), -1);
}

static void test_unwritable(void **state)
{
    struct fx *f = *state;
    char bad[128];
    int t = -1;
    snprintf(bad, sizeof bad, "%s/missing/state.boot", f->dir);
    assert_int_equal(bootmark_arm(bad), -ENOENT);
    assert_int_equal(bootmark_clean(bad), -ENOENT);
    /* A mark that is a directory cannot be read: an error, not a verdict. */
    assert_int_equal(mkdir(f->mark, 0755), 0);
    assert_true(bootmark_check(f->mark, &t) < 0);
    assert_int_equal(t, 0);
    rmdir(f->mark);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boot_id),
        cmocka_unit_test_setup_teardown(test_verdicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable, setup, teardown),
    };
    return cmocka_run_group_tests_name("bootmark", tests, NULL, NULL);
}
