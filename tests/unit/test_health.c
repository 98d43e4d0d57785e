/*
 * test_health.c - unit tests of agents/health: parsing of "check" lines and
 * every kind of check run against real processes, pid files and sockets on
 * 127.0.0.1.  Each test has its own temporary directory; every process a
 * test starts is stopped and reaped by its pid before the test ends.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agents/health.h"
#include "lib/err.h"

struct fx
{
    char dir[64];
    struct health h;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/cd-test-health-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    health_init(&f->h);
    *state = f;
    return 0;
}

/* The tests leave only plain files in their directory. */
static int teardown(void **state)
{
    struct fx *f = *state;
    DIR *d = opendir(f->dir);
    const struct dirent *e;
    char path[sizeof f->dir + 300];
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* Assert a call returned rc, printing names when it did not. */
#define assert_rc(expr, want)                                                \
    do {                                                                     \
        int got_ = (expr);                                                   \
        if (got_ != (want)) {                                                \
            fail_msg("%s: expected %s (%d), got %s (%d)", #expr,             \
                     cd_errname(want), (int)(want), cd_errname(got_), got_); \
        }                                                                    \
    } while (0)

/* Assert that text contains part. */
#define assert_has(text, part)                                        \
    do {                                                              \
        const char *t_ = (text);                                      \
        const char *p_ = (part);                                      \
        if (strstr(t_, p_) == NULL) {                                 \
            fail_msg("%s: expected \"%s\" in \"%s\"", #text, p_, t_); \
        }                                                             \
    } while (0)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Add one check to a fresh h and run it; the check, for its result. */
static const struct health_check *run_one(struct health *h, const char *spec)
{
    char err[256] = "";
    unsigned timeout_ms = h->timeout_ms;
    health_init(h);
    h->timeout_ms = timeout_ms;
    if (health_add(h, spec, err, sizeof err) != 0) {
        fail_msg("health_add(\"%s\"): %s", spec, err);
    }
    int down = health_run(h);
    assert_int_equal(down, h->checks[0].up ? 0 : 1);
    return &h->checks[0];
}

#define assert_up(c)                                                       \
    do {                                                                   \
        const struct health_check *c_ = (c);                               \
        if (!c_->up) {                                                     \
            fail_msg("check %s (%s): expected up, got down: %s", c_->name, \
                     c_->arg, c_->detail);                                 \
        }                                                                  \
        assert_string_equal(c_->detail, "");                               \
    } while (0)

#define assert_down(c, part)                                           \
    do {                                                               \
        const struct health_check *c_ = (c);                           \
        if (c_->up) {                                                  \
            fail_msg("check %s (%s): expected down, got up", c_->name, \
                     c_->arg);                                         \
        }                                                              \
        assert_has(c_->detail, (part));                                \
    } while (0)

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* The pid a command wrote to path; fails the test if there is none. */
static pid_t read_pid(const char *path)
{
    FILE *fp = fopen(path, "r");
    int pid = 0;
    if (fp == NULL) {
        fail_msg("no pid file %s: %s", path, strerror(errno));
    }
    int got = fscanf(fp, "%d", &pid);
    fclose(fp);
    if (got != 1 || pid <= 0) {
        fail_msg("no pid in %s", path);
    }
    return (pid_t)pid;
}

/* Reap pid, waiting at most ms; its wait status, or -1 if it is not gone.
 * On timeout the process is killed and reaped, so none outlives a test. */
static int reap_within(pid_t pid, int64_t ms)
{
    int status = 0;
    int64_t deadline = now_ms() + ms;
    while (now_ms() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return status;
        }
        if (r < 0) {
            fail_msg("waitpid(%d): %s", (int)pid, strerror(errno));
        }
        usleep(5000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    assert_non_null(d);
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

/* A listening TCP socket on 127.0.0.1, any port; *port gets the port. */
static int listen_loopback(int backlog, int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, backlog), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* --- parsing --------------------------------------------------------- */

static void test_parse_ok(void **state)
{
    struct fx *f = *state;
    struct health *h = &f->h;
    char err[256] = "";

    assert_int_equal(h->timeout_ms, 2000);
    assert_int_equal(h->n, 0);
    assert_rc(health_add(h, "mta process /run/postfix.pid", err, sizeof err),
              0);
    assert_rc(
        health_add(h, "  spamd\tprocess-name  spamd  \n", err, sizeof err), 0);
    assert_rc(health_add(h, "smtp tcp 127.0.0.1:25", err, sizeof err), 0);
    assert_rc(health_add(h, "smtp6 tcp [::1]:25", err, sizeof err), 0);
    assert_rc(health_add(h, "web tcp localhost:8080", err, sizeof err), 0);
    assert_rc(health_add(h,
                         "queue command  test \"$(postqueue -p | wc -l)\" "
                         "-lt 100 # not a comment  ",
                         err, sizeof err),
              0);
    assert_rc(health_add(h, "a.b_c-9 process x", NULL, 0), 0);
    assert_int_equal(h->n, 7);

    assert_string_equal(h->checks[0].name, "mta");
    assert_int_equal(h->checks[0].kind, HEALTH_PROCESS);
    assert_string_equal(h->checks[0].arg, "/run/postfix.pid");
    assert_int_equal(h->checks[0].up, 0);
    assert_string_equal(h->checks[0].detail, "not checked yet");
    assert_string_equal(h->checks[1].name, "spamd");
    assert_int_equal(h->checks[1].kind, HEALTH_PROCESS_NAME);
    assert_string_equal(h->checks[1].arg, "spamd");
    assert_int_equal(h->checks[2].kind, HEALTH_TCP);
    assert_string_equal(h->checks[3].arg, "[::1]:25");
    assert_int_equal(h->checks[5].kind, HEALTH_COMMAND);
    /* The rest of the line, inner blanks and '#' kept, outer ones not. */
    assert_string_equal(h->checks[5].arg,
                        "test \"$(postqueue -p | wc -l)\" -lt 100 # not a "
                        "comment");
}

static void test_parse_errors(void **state)
{
    struct fx *f = *state;
    struct health *h = &f->h;
    char err[256];
    char spec[HEALTH_ARG_MAX + 64];
    static const struct
    {
        const char *spec;
        const char *want;
    } bad[] = {
        {"", "empty check"},
        {"  \t ", "empty check"},
        {"web", "check web: missing kind"},
        {"web http 127.0.0.1:80", "unknown kind \"http\""},
        {"web Process /x", "unknown kind \"Process\""},
        {"web process", "missing argument: process needs a PIDFILE"},
        {"web process   ", "missing argument"},
        {"web process-name", "missing argument"},
        {"web tcp", "needs HOST:PORT"},
        {"web command ", "needs a shell command"},
        {"web process /a /b", "unexpected \"/b\" after a PIDFILE"},
        {"web process-name a b", "unexpected \"b\""},
        {"web tcp 127.0.0.1:80 x", "unexpected \"x\""},
        {"\"web server\" process /x", "may contain only letters"},
        {"web/1 process /x", "may contain only letters"},
        {"web process-name abcdefghijklmnop", "longer than 15 characters"},
        {"web tcp 127.0.0.1", "no :PORT"},
        {"web tcp 127.0.0.1:", "PORT must be a number from 1 to 65535"},
        {"web tcp 127.0.0.1:0", "from 1 to 65535"},
        {"web tcp 127.0.0.1:65536", "from 1 to 65535"},
        {"web tcp 127.0.0.1:1234567", "from 1 to 65535"},
        {"web tcp 127.0.0.1:smtp", "from 1 to 65535"},
        {"web tcp 127.0.0.1:-1", "from 1 to 65535"},
        {"web tcp :25", "no HOST"},
        {"web tcp ::1:25", "IPv6 address must be in brackets"},
        {"web tcp [::1:25", "no ']'"},
        {"web tcp [::1]25", "no :PORT after the ']'"},
        {"web tcp []:25", "no HOST"},
        {"web tcp [1.2.3.4]:25", "\"1.2.3.4\" is not an IPv6 address"},
        {"web tcp [mail.example]:25", "is not an IPv6 address"},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(err, sizeof err, "untouched");
        int rc = health_add(h, bad[i].spec, err, sizeof err);
        if (rc != CD_ECONFIG) {
            fail_msg("\"%s\": expected CD_ECONFIG, got %s", bad[i].spec,
                     cd_errname(rc));
        }
        if (strstr(err, bad[i].want) == NULL) {
            fail_msg("\"%s\": expected \"%s\" in \"%s\"", bad[i].spec,
                     bad[i].want, err);
        }
        assert_int_equal(h->n, 0);
    }

    /* A name of HEALTH_NAME_MAX characters is one too many. */
    memset(spec, 'n', HEALTH_NAME_MAX);
    snprintf(spec + HEALTH_NAME_MAX, sizeof spec - HEALTH_NAME_MAX,
             " process /x");
    assert_rc(health_add(h, spec, err, sizeof err), CD_ECONFIG);
    assert_has(err, "is too long (at most 63 characters)");
    spec[0] = ' '; /* now 63 */
    assert_rc(health_add(h, spec, err, sizeof err), 0);

    /* So is an argument of HEALTH_ARG_MAX bytes. */
    int n = snprintf(spec, sizeof spec, "long command ");
    memset(spec + n, 'x', HEALTH_ARG_MAX);
    spec[n + HEALTH_ARG_MAX] = '\0';
    assert_rc(health_add(h, spec, err, sizeof err), CD_ECONFIG);
    assert_has(err, "check long: argument is too long (at most 511 bytes)");
    spec[n + HEALTH_ARG_MAX - 1] = '\0';
    assert_rc(health_add(h, spec, err, sizeof err), 0);
    assert_int_equal(strlen(h->checks[1].arg), HEALTH_ARG_MAX - 1);

    /* Names are unique. */
    assert_rc(health_add(h, "mta process /run/a.pid", err, sizeof err), 0);
    assert_rc(health_add(h, "mta tcp 127.0.0.1:25", err, sizeof err),
              CD_ECONFIG);
    assert_has(err, "duplicate check name \"mta\"");
    assert_int_equal(h->n, 3);

    /* At most HEALTH_MAX_CHECKS. */
    while (h->n < HEALTH_MAX_CHECKS) {
        snprintf(spec, sizeof spec, "c%zu command true", h->n);
        assert_rc(health_add(h, spec, err, sizeof err), 0);
    }
    assert_rc(health_add(h, "one-more command true", err, sizeof err),
              CD_ECONFIG);
    assert_has(err, "too many checks (at most 64)");
    assert_int_equal(h->n, HEALTH_MAX_CHECKS);

    /* err is optional, and truncated to errlen. */
    assert_rc(health_add(h, "x", NULL, 0), CD_ECONFIG);
    memset(err, 'z', sizeof err);
    assert_rc(health_add(h, "x", err, 8), CD_ECONFIG);
    assert_int_equal(strlen(err), 7);
}

/* --- process and process-name ---------------------------------------- */

static void test_process(void **state)
{
    struct fx *f = *state;
    char pidfile[128];
    char spec[256];
    char text[32];
    char want[64];

    snprintf(pidfile, sizeof pidfile, "%s/self.pid", f->dir);
    snprintf(spec, sizeof spec, "self process %s", pidfile);
    snprintf(text, sizeof text, "%d\n", (int)getpid());
    write_file(pidfile, text);
    assert_up(run_one(&f->h, spec));

    /* A child that has exited and been reaped: its pid is free. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(0);
    }
    assert_int_equal(reap_within(pid, 5000), 0);
    snprintf(text, sizeof text, "%d", (int)pid);
    write_file(pidfile, text);
    snprintf(want, sizeof want, "pid %d not running", (int)pid);
    assert_down(run_one(&f->h, spec), want);

    write_file(pidfile, "not a pid\n");
    assert_down(run_one(&f->h, spec), "no pid in ");
    write_file(pidfile, "0\n");
    assert_down(run_one(&f->h, spec), "no pid in ");
    write_file(pidfile, "-1\n");
    assert_down(run_one(&f->h, spec), "no pid in ");
    write_file(pidfile, "");
    assert_down(run_one(&f->h, spec), "no pid in ");

    assert_int_equal(unlink(pidfile), 0);
    assert_down(run_one(&f->h, spec), "cannot read ");
    assert_down(run_one(&f->h, spec), "No such file or directory");
}

static void test_process_name(void **state)
{
    struct fx *f = *state;
    char comm[32] = "";
    char spec[64];

    FILE *fp = fopen("/proc/self/comm", "r");
    assert_non_null(fp);
    assert_non_null(fgets(comm, sizeof comm, fp));
    fclose(fp);
    comm[strcspn(comm, "\n")] = '\0';
    assert_string_equal(comm, "test_health");

    snprintf(spec, sizeof spec, "me process-name %s", comm);
    assert_up(run_one(&f->h, spec));
    /* A prefix of a name is not the name. */
    assert_down(run_one(&f->h, "me process-name test_healt"),
                "no process named test_healt");
    assert_down(run_one(&f->h, "ghost process-name cd-no-such-xyz"),
                "no process named cd-no-such-xyz");
}

/* --- tcp ------------------------------------------------------------- */

static void test_tcp(void **state)
{
    struct fx *f = *state;
    char spec[128];
    int port;
    int lfd = listen_loopback(16, &port);

    snprintf(spec, sizeof spec, "smtp tcp 127.0.0.1:%d", port);
    assert_up(run_one(&f->h, spec));
    /* A name; whichever of its addresses listens (::1 may come first). */
    snprintf(spec, sizeof spec, "smtp tcp localhost:%d", port);
    assert_up(run_one(&f->h, spec));

    assert_int_equal(close(lfd), 0);
    snprintf(spec, sizeof spec, "smtp tcp 127.0.0.1:%d", port);
    assert_down(run_one(&f->h, spec), "connect: Connection refused");

    assert_down(run_one(&f->h, "dns tcp cd-no-such-host.invalid:25"),
                "resolve cd-no-such-host.invalid: ");

    /* IPv6, where the host has it. */
    struct sockaddr_in6 sin6;
    socklen_t len = sizeof sin6;
    int fd6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_loopback;
    if (fd6 >= 0 && bind(fd6, (struct sockaddr *)&sin6, sizeof sin6) == 0) {
        assert_int_equal(listen(fd6, 16), 0);
        assert_int_equal(getsockname(fd6, (struct sockaddr *)&sin6, &len), 0);
        snprintf(spec, sizeof spec, "smtp6 tcp [::1]:%d",
                 ntohs(sin6.sin6_port));
        assert_up(run_one(&f->h, spec));
        assert_int_equal(close(fd6), 0);
        assert_down(run_one(&f->h, spec), "Connection refused");
    } else if (fd6 >= 0) {
        close(fd6);
    }
}

/*
 * A listener whose accept queue is full drops new SYNs, so a connect to it
 * neither succeeds nor fails: the check must give up at the timeout.
 */
static void test_tcp_timeout(void **state)
{
    struct fx *f = *state;
    struct sockaddr_in sin;
    int port;
    int lfd = listen_loopback(0, &port);
    int fill[8];
    char spec[128];

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    for (size_t i = 0; i < sizeof fill / sizeof fill[0]; i++) {
        fill[i] =
            socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fill[i] >= 0);
        (void)connect(fill[i], (struct sockaddr *)&sin, sizeof sin);
    }
    usleep(100 * 1000); /* let the handshakes that can complete do so */

    f->h.timeout_ms = 300;
    snprintf(spec, sizeof spec, "full tcp 127.0.0.1:%d", port);
    int64_t t0 = now_ms();
    const struct health_check *c = run_one(&f->h, spec);
    int64_t took = now_ms() - t0;
    assert_down(c, "timed out after 300 ms");
    if (took < 250 || took > 1000) {
        fail_msg("expected the check to take about 300 ms, took %lld ms",
                 (long long)took);
    }

    for (size_t i = 0; i < sizeof fill / sizeof fill[0]; i++) {
        close(fill[i]);
    }
    close(lfd);
}

/* --- command --------------------------------------------------------- */

static void test_command(void **state)
{
    struct fx *f = *state;
    char spec[256];

    assert_up(run_one(&f->h, "ok command true"));
    assert_down(run_one(&f->h, "bad command exit 3"), "exit status 3");
    assert_string_equal(f->h.checks[0].detail, "exit status 3");
    assert_down(run_one(&f->h, "missing command /nonexistent/cd-x"),
                "exit status 127");
    assert_down(run_one(&f->h, "sig command kill -9 $$"), "killed by signal 9");

    /* Shell syntax, and the whole rest of the line. */
    assert_up(run_one(&f->h, "sh command test 1 -lt 2 && [ \"a b\" = 'a b' ]"));

    /* stdio is /dev/null: output goes nowhere, input is empty. */
    assert_up(run_one(&f->h,
                      "io command echo out; echo err >&2; "
                      "[ \"$(readlink /proc/$$/fd/0)\" = /dev/null ] && "
                      "[ \"$(readlink /proc/$$/fd/1)\" = /dev/null ] && "
                      "[ \"$(readlink /proc/$$/fd/2)\" = /dev/null ] && "
                      "! read -r line"));

    /* Our descriptors beyond 0-2 are not inherited, even without
     * O_CLOEXEC. */
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd > 2);
    snprintf(spec, sizeof spec, "fds command [ ! -e /proc/$$/fd/%d ]", fd);
    assert_up(run_one(&f->h, spec));
    close(fd);

    /* Signals we ignore are not ignored by the command. */
    struct sigaction ign;
    struct sigaction old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    assert_int_equal(sigaction(SIGTERM, &ign, &old), 0);
    assert_down(run_one(&f->h, "term command kill -TERM $$; exit 0"),
                "killed by signal 15");
    assert_int_equal(sigaction(SIGTERM, &old, NULL), 0);
}

/*
 * A command that overruns is reported after the timeout, not after it
 * finishes, and is gone: killed with its process group and reaped.
 */
static void test_command_timeout(void **state)
{
    struct fx *f = *state;
    char spec[256];
    char pidfile[128];

    snprintf(pidfile, sizeof pidfile, "%s/cmd.pid", f->dir);
    snprintf(spec, sizeof spec, "slow command echo $$ > %s; exec sleep 10",
             pidfile);
    f->h.timeout_ms = 300;
    int64_t t0 = now_ms();
    const struct health_check *c = run_one(&f->h, spec);
    int64_t took = now_ms() - t0;
    assert_down(c, "timed out after 300 ms");
    if (took < 250 || took > 1000) {
        fail_msg("expected the check to take about 300 ms, took %lld ms",
                 (long long)took);
    }

    /* The shell made itself the group leader: pid == pgid. */
    pid_t pid = read_pid(pidfile);
    errno = 0;
    assert_int_equal(kill(-pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    errno = 0;
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    /* Reaped by health_run, not left for us. */
    errno = 0;
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/*
 * What a command leaves in its process group is killed when it exits.  We
 * become a subreaper so the orphan is ours to reap and inspect (a
 * container's init may never reap it).
 */
static void test_command_leaves_nothing(void **state)
{
    struct fx *f = *state;
    char spec[256];
    char pidfile[128];

    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    snprintf(pidfile, sizeof pidfile, "%s/bg.pid", f->dir);
    snprintf(spec, sizeof spec, "bg command sleep 10 & echo $! > %s", pidfile);
    assert_up(run_one(&f->h, spec));
    pid_t bg = read_pid(pidfile);
    int status = reap_within(bg, 2000);
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0), 0);
    if (status == -1) {
        fail_msg("background sleep %d still ran after the check", (int)bg);
    }
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* --- everything together --------------------------------------------- */

static void test_no_fd_leak(void **state)
{
    struct fx *f = *state;
    struct health *h = &f->h;
    char spec[256];
    char pidfile[128];
    char text[32];
    char err[256];
    int port;
    int lfd = listen_loopback(64, &port);
    int closed_port;
    int cfd = listen_loopback(1, &closed_port);
    close(cfd);
    assert_int_equal(fcntl(lfd, F_SETFL, O_NONBLOCK), 0);

    snprintf(pidfile, sizeof pidfile, "%s/self.pid", f->dir);
    snprintf(text, sizeof text, "%d\n", (int)getpid());
    write_file(pidfile, text);

    health_init(h);
    /* Generous: a loaded machine must not turn "true" into a timeout (the
     * timeout path has its own test above). */
    h->timeout_ms = 2000;
    snprintf(spec, sizeof spec, "p process %s", pidfile);
    assert_rc(health_add(h, spec, err, sizeof err), 0);
    snprintf(spec, sizeof spec, "p-gone process %s/none.pid", f->dir);
    assert_rc(health_add(h, spec, err, sizeof err), 0);
    assert_rc(health_add(h, "pn process-name test_health", err, sizeof err), 0);
    assert_rc(health_add(h, "pn-gone process-name cd-none", err, sizeof err),
              0);
    snprintf(spec, sizeof spec, "t tcp 127.0.0.1:%d", port);
    assert_rc(health_add(h, spec, err, sizeof err), 0);
    snprintf(spec, sizeof spec, "t-gone tcp 127.0.0.1:%d", closed_port);
    assert_rc(health_add(h, spec, err, sizeof err), 0);
    assert_rc(health_add(h, "c command true", err, sizeof err), 0);
    assert_rc(health_add(h, "c-fail command exit 1", err, sizeof err), 0);
    assert_rc(health_add(h, "c-kill command kill -9 $$", err, sizeof err), 0);

    int before = count_fds();
    for (int i = 0; i < 50; i++) {
        int down = health_run(h);
        if (down != 5) {
            fail_msg("run %d: expected 5 checks down, got %d", i, down);
        }
        /* Drain the accept queue so the listener never fills. */
        int a;
        while ((a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            close(a);
        }
    }
    int after = count_fds();
    assert_int_equal(after, before);

    for (size_t i = 0; i < h->n; i++) {
        const struct health_check *c = &h->checks[i];
        int want_up = strchr(c->name, '-') == NULL;
        if (c->up != want_up) {
            fail_msg("check %s: expected %s, got %s (%s)", c->name,
                     want_up ? "up" : "down", c->up ? "up" : "down", c->detail);
        }
    }
    assert_string_equal(h->checks[8].detail, "killed by signal 9");
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_no_fd_leak, setup, teardown),
    };
    return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
