/*
 * test_config.c - clusterd's configuration (cluster/config.h) and the
 * line format both daemons read (lib/kvconf.h): profiles and what
 * overrides them, the derived settings (lease, connect retry), every kind
 * of refusal with the line it names, and files that cannot be read or are
 * too large.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/config.h"
#include "lib/err.h"
#include "lib/kvconf.h"

#define ADDRS "raft_address = 10.0.0.1:7001\napi_address = 10.0.0.1:7101\n"

static int parse_finish(struct cd_config *c, const char *text, char *err)
{
    config_defaults(c);
    int rc = config_parse(c, text, strlen(text), err, 256);
    if (rc != 0) {
        return rc;
    }
    return config_finish(c, err, 256);
}

static void test_profiles(void **state)
{
    (void)state;
    struct cd_config c;
    char err[256];
    assert_int_equal(parse_finish(&c, ADDRS, err), 0);
    assert_int_equal(c.heartbeat_ms, 50);
    assert_int_equal(c.election_ms, 400);
    assert_int_equal(c.connect_retry_ms, 50);
    /* 80% of election * 0.95 / 1.05 */
    assert_int_equal(c.vip_lease_ms, 289);
    assert_int_equal(c.voters, 3);
    assert_true(c.election_stagger);

    assert_int_equal(parse_finish(&c, ADDRS "profile = fast\n", err), 0);
    assert_int_equal(c.heartbeat_ms, 25);
    assert_int_equal(c.election_ms, 150);
    assert_int_equal(c.connect_retry_ms, 25);
    assert_int_equal(c.vip_lease_ms, 108);

    /* Explicit timing wins over the profile, whatever the order. */
    assert_int_equal(
        parse_finish(&c, ADDRS "election_ms = 300\nprofile = fast\n", err), 0);
    assert_int_equal(c.election_ms, 300);
    assert_int_equal(c.heartbeat_ms, 25);
    assert_int_equal(
        parse_finish(&c, ADDRS "heartbeat_ms=40\nconnect_retry_ms=200\n", err),
        0);
    assert_int_equal(c.heartbeat_ms, 40);
    assert_int_equal(c.election_ms, 400);
    assert_int_equal(c.connect_retry_ms, 200);
}

static void test_format(void **state)
{
    (void)state;
    struct cd_config c;
    char err[256];
    const char *text =
        "# a comment\r\n"
        "\n"
        "   \t  \n"
        "  raft_address\t=  10.0.0.1:7001   # inline\r\n"
        "api_address=10.0.0.1:7101\n"
        "join = 10.0.0.2:7101,10.0.0.3:7101\n"
        "token = a=b=c\n"
        "data_dir = /srv/clusterd data"; /* no final newline */
    assert_int_equal(parse_finish(&c, text, err), 0);
    assert_string_equal(c.raft_addr, "10.0.0.1:7001");
    assert_string_equal(c.api_addr, "10.0.0.1:7101");
    assert_string_equal(c.join, "10.0.0.2:7101,10.0.0.3:7101");
    assert_string_equal(c.token, "a=b=c");
    assert_string_equal(c.data_dir, "/srv/clusterd data");
}

static void expect_refused(const char *text, const char *needle)
{
    struct cd_config c;
    char err[256] = "";
    int rc = parse_finish(&c, text, err);
    if (rc != CD_ECONFIG || strstr(err, needle) == NULL) {
        fail_msg("'%s': rc %d, error '%s', expected '%s'", text, rc, err,
                 needle);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    expect_refused("bogus = 1\n", "line 1: bogus: unknown setting");
    expect_refused("\n\nvoters\n", "line 3: expected key = value");
    expect_refused(" = 3\n", "line 1: expected key = value (no key");
    expect_refused("voters = 4\n", "voters: an even number");
    expect_refused("voters = -1\n", "voters: expected a number in 1..7");
    expect_refused("voters = 3x\n", "voters: expected a number");
    expect_refused("heartbeat_ms = 99999999999999999999\n", "heartbeat_ms");
    expect_refused("connect_retry_ms = 1\n", "connect_retry_ms");
    expect_refused("profile = slow\n", "profile: expected default or fast");
    expect_refused("raft_address = nowhere\n", "raft_address: expected");
    expect_refused("election_stagger = maybe\n", "election_stagger");
    expect_refused("vip = 10.0.0.50\n", "vip: expected a.b.c.d/prefix");
    expect_refused("log_level = loud\n", "log_level");
    /* Checks of the whole. */
    expect_refused("api_address = 10.0.0.1:7101\n", "raft_address: required");
    expect_refused(ADDRS "heartbeat_ms = 100\nelection_ms = 150\n",
                   "election_ms: must be at least twice heartbeat_ms");
    expect_refused(ADDRS "vip = 10.0.0.50/24\n",
                   "vip and vip_interface go together");
    expect_refused(ADDRS
                   "vip = 10.0.0.50/24\nvip_interface = eth0\n"
                   "profile = fast\nvip_lease_ms = 140\n",
                   "vip_lease_ms: must be below");
    expect_refused(ADDRS "bootstrap_is_not_a_key = yes\n", "line 3:");

    /* --set KEY=VALUE */
    struct cd_config c;
    char err[256];
    config_defaults(&c);
    assert_int_equal(config_set_arg(&c, "voters=5", err, sizeof err), 0);
    assert_int_equal(c.voters, 5);
    assert_int_equal(config_set_arg(&c, "voters", err, sizeof err), -EINVAL);
    assert_int_equal(config_set_arg(&c, "=5", err, sizeof err), -EINVAL);
    assert_int_equal(config_set_arg(&c, "voters=4", err, sizeof err),
                     CD_ECONFIG);
    assert_int_equal(config_set_arg(&c, "token=a=b", err, sizeof err), 0);
    assert_string_equal(c.token, "a=b");

    /* A value too long for its field is refused, not cut. */
    char text[600];
    memset(text, 'x', sizeof text);
    memcpy(text, "token = ", 8);
    text[sizeof text - 1] = '\0';
    expect_refused(text, "token: too long");
}

static int count_set(void *arg,
                     const char *key,
                     const char *value,
                     char *why,
                     size_t whylen)
{
    (void)key;
    (void)why;
    (void)whylen;
    (void)value;
    ++*(int *)arg;
    return 0;
}

static int keep_value(void *arg,
                      const char *key,
                      const char *value,
                      char *why,
                      size_t whylen)
{
    (void)key;
    (void)why;
    (void)whylen;
    snprintf(arg, 128, "%s", value);
    return 0;
}

static void test_kvconf_limits(void **state)
{
    (void)state;
    char err[256];
    int n = 0;
    /* A line over the limit, even a comment, is refused by number. */
    size_t len = KVCONF_LINE_MAX + 50;
    char *big = malloc(len);
    assert_non_null(big);
    static const char head[7] = {'a', ' ', '=', ' ', '1', '\n', '#'};
    memcpy(big, head, sizeof head);
    memset(big + 7, 'y', len - 7);
    assert_int_equal(kvconf_parse(big, len, 0, count_set, &n, err, sizeof err),
                     CD_ECONFIG);
    assert_non_null(strstr(err, "line 2: line longer than"));
    assert_int_equal(n, 1);
    free(big);
    /* A NUL byte. */
    n = 0;
    assert_int_equal(
        kvconf_parse("a = 1\0b", 7, 0, count_set, &n, err, sizeof err),
        CD_ECONFIG);
    assert_non_null(strstr(err, "line 1: NUL byte"));
    assert_int_equal(n, 0);
    /* Whole-line comments only: a '#' in a value stays (the child's). */
    char value[128];
    const char *t = "check = command sh -c 'test -e /run/x # y'\n";
    assert_int_equal(
        kvconf_parse(t, strlen(t), 0, keep_value, value, err, sizeof err), 0);
    assert_string_equal(value, "command sh -c 'test -e /run/x # y'");
    assert_int_equal(kvconf_parse(t, strlen(t), KVCONF_INLINE_COMMENTS,
                                  keep_value, value, err, sizeof err),
                     0);
    assert_string_equal(value, "command sh -c 'test -e /run/x");
    /* Nothing at all is fine. */
    assert_int_equal(kvconf_parse("", 0, 0, count_set, &n, err, sizeof err), 0);
}

static void test_load(void **state)
{
    (void)state;
    struct cd_config c;
    char err[512];
    char path[] = "/tmp/test_config.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = ADDRS "profile = fast\nvoters = 2\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    config_defaults(&c);
    assert_int_equal(config_load(&c, path, err, sizeof err), CD_ECONFIG);
    char want[600];
    snprintf(want, sizeof want, "%s:4: voters: an even number", path);
    assert_non_null(strstr(err, want));
    /* Settings before the bad line were applied. */
    assert_string_equal(c.profile, "fast");

    /* Too large. */
    assert_int_equal(ftruncate(fd, KVCONF_FILE_MAX + 1), 0);
    config_defaults(&c);
    assert_int_equal(config_load(&c, path, err, sizeof err), CD_ECONFIG);
    assert_non_null(strstr(err, "larger than"));
    close(fd);
    unlink(path);

    /* Missing, and a directory. */
    assert_int_equal(config_load(&c, path, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(config_load(&c, "/tmp", err, sizeof err), CD_ECONFIG);
    assert_non_null(strstr(err, "not a file"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profiles), cmocka_unit_test(test_format),
        cmocka_unit_test(test_refusals), cmocka_unit_test(test_kvconf_limits),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
