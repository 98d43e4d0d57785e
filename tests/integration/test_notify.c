/*
 * test_notify.c - the sd_notify protocol of clusterd and clusterd-child,
 * as systemd's Type=notify sees it: the test binds a unix datagram socket,
 * starts the daemons with NOTIFY_SOCKET pointing at it, and reads what
 * they say, with the sender's pid (SO_PASSCRED: NotifyAccess=main accepts
 * only the main process's messages).
 *
 *   - clusterd --bootstrap: READY=1 (and the API answers by then);
 *     SIGTERM: STOPPING=1, exit status 0;
 *   - a clusterd that cannot start (its data directory is locked) never
 *     says READY=1 and exits 1;
 *   - clusterd-child (joined with a token): READY=1, then "STATUS=following
 *     at revision N"; the parent killed: "STATUS=degraded: ..."; SIGTERM:
 *     STOPPING=1, exit status 0.
 *
 * Every process is stopped by its pid (harness, child_stop); every wait
 * is bounded.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "lib/err.h"

struct nsock
{
    int fd;
    char path[200];
    char seen[16384]; /* every message, "pid: text" per line, for failures */
    size_t seen_len;
};

struct fx
{
    struct harness h;
    struct nsock ns;
    pid_t child; /* clusterd-child, 0: none */
    char child_bin[4300];
    char child_dir[200];
    char child_log[220];
};

/* Bind the notification socket at dir/name. */
static int nsock_open(struct nsock *ns, const char *dir, const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int one = 1;
    snprintf(ns->path, sizeof ns->path, "%s/%s", dir, name);
    if (strlen(ns->path) >= sizeof sa.sun_path) {
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, ns->path, strlen(ns->path) + 1);
    ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (ns->fd < 0) {
        return -errno;
    }
    if (bind(ns->fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        setsockopt(ns->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
        return -errno;
    }
    ns->seen_len = 0;
    ns->seen[0] = '\0';
    return 0;
}

static void nsock_close(struct nsock *ns)
{
    if (ns->fd > 0) {
        close(ns->fd);
        unlink(ns->path);
    }
    ns->fd = -1;
}

/* Does msg hold a line (KEY=VALUE) that starts with prefix? */
static int has_line(const char *msg, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = msg; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, n) == 0) {
            return 1;
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return 0;
}

/*
 * Read notifications until one from pid has a line starting with prefix,
 * within timeout_ms (0: only what is queued now).  1 if it came, else 0.
 */
static int nsock_wait(struct nsock *ns,
                      pid_t pid,
                      const char *prefix,
                      unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        struct pollfd pfd = {.fd = ns->fd, .events = POLLIN};
        uint64_t now = harness_now_ms();
        int wait = now >= deadline ? 0 : (int)(deadline - now);
        int r = poll(&pfd, 1, wait);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return 0;
        }
        char buf[4096];
        union {
            struct cmsghdr align;
            char space[CMSG_SPACE(sizeof(struct ucred))];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.space,
                            .msg_controllen = sizeof ctl.space};
        ssize_t n = recvmsg(ns->fd, &mh, MSG_DONTWAIT);
        if (n < 0) {
            continue;
        }
        buf[n] = '\0';
        pid_t from = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL;
             c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET &&
                c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred uc;
                memcpy(&uc, CMSG_DATA(c), sizeof uc);
                from = uc.pid;
            }
        }
        int w =
            snprintf(ns->seen + ns->seen_len, sizeof ns->seen - ns->seen_len,
                     "%d: %s\n", (int)from, buf);
        if (w > 0 && ns->seen_len + (size_t)w < sizeof ns->seen) {
            ns->seen_len += (size_t)w;
        }
        if (from == pid && has_line(buf, prefix)) {
            return 1;
        }
    }
}

#define expect_notify(ns, pid, prefix, ms)                              \
    do {                                                                \
        if (!nsock_wait((ns), (pid), (prefix), (ms))) {                 \
            fail_msg("no '%s' from pid %d within %u ms; received:\n%s", \
                     (prefix), (int)(pid), (unsigned)(ms), (ns)->seen); \
        }                                                               \
    } while (0)

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    f->ns.fd = -1;
    *state = f;
    return 0;
}

/* Stop the child by its pid; *status its wait status. */
static void child_stop(struct fx *f, int sig, int *status)
{
    int st = 0;
    if (f->child <= 0) {
        return;
    }
    kill(f->child, sig);
    uint64_t deadline = harness_now_ms() + 10000;
    while (waitpid(f->child, &st, WNOHANG) == 0) {
        if (harness_now_ms() > deadline) {
            kill(f->child, SIGKILL);
            waitpid(f->child, &st, 0);
            break;
        }
        harness_sleep_ms(10);
    }
    f->child = 0;
    if (status != NULL) {
        *status = st;
    }
}

static int teardown(void **state)
{
    struct fx *f = *state;
    unsetenv("NOTIFY_SOCKET");
    child_stop(f, SIGKILL, NULL);
    nsock_close(&f->ns);
    harness_destroy(&f->h);
    free(f);
    return 0;
}

/* Start parent i with NOTIFY_SOCKET set (the harness's fork inherits it). */
static void start_notified(struct fx *f, int i, enum hstart how)
{
    assert_int_equal(setenv("NOTIFY_SOCKET", f->ns.path, 1), 0);
    int rc = harness_start(&f->h, i, how, 0);
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(rc, 0);
}

static void test_parent_ready_stopping(void **state)
{
    struct fx *f = *state;
    struct harness *h = &f->h;
    struct cd_msg st;
    assert_int_equal(harness_init(h, 2, NULL), 0);
    assert_int_equal(nsock_open(&f->ns, h->base, "notify"), 0);

    uint64_t t0 = harness_now_ms();
    start_notified(f, 0, H_BOOTSTRAP);
    pid_t pid = h->node[0].pid;
    expect_notify(&f->ns, pid, "READY=1", 15000);
    print_message("READY=1 after %llu ms\n",
                  (unsigned long long)(harness_now_ms() - t0));
    /* READY means serving: the API answers now, without waiting. */
    assert_int_equal(harness_status(h, 0, &st), 0);
    codec_msg_free(&st);

    /* A second clusterd on the same data directory cannot start (LOCK):
     * it must never say READY=1. */
    snprintf(h->node[1].dir, sizeof h->node[1].dir, "%s", h->node[0].dir);
    start_notified(f, 1, H_RESTART);
    pid_t pid2 = h->node[1].pid;
    int status2 = 0;
    uint64_t deadline = harness_now_ms() + 10000;
    while (waitpid(pid2, &status2, WNOHANG) == 0 &&
           harness_now_ms() < deadline) {
        harness_sleep_ms(10);
    }
    h->node[1].pid = 0;
    if (waitpid(pid2, NULL, WNOHANG) == 0) { /* still running: not wanted */
        kill(pid2, SIGKILL);
        waitpid(pid2, NULL, 0);
        fail_msg("a clusterd on a locked data directory kept running");
    }
    assert_true(WIFEXITED(status2));
    assert_int_equal(WEXITSTATUS(status2), 1);
    if (nsock_wait(&f->ns, pid2, "READY=1", 0)) {
        fail_msg("a clusterd that failed to start said READY=1:\n%s",
                 f->ns.seen);
    }

    int status = harness_stop(h, 0, SIGTERM);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* Sent before the exit, so already queued on the socket. */
    expect_notify(&f->ns, pid, "STOPPING=1", 0);
    print_message("notifications:\n%s", f->ns.seen);
    assert_non_null(strstr(f->ns.seen, "STATUS=starting"));
}

/* A join token from the running cluster. */
static void new_token(struct fx *f, char *tok, size_t len)
{
    assert_int_equal(harness_token(&f->h, tok, len), 0);
}

static void test_child_ready_status_stopping(void **state)
{
    struct fx *f = *state;
    struct harness *h = &f->h;
    char token[64];
    const char *const flags[] = {"--profile", "fast", NULL};
    assert_int_equal(harness_init(h, 1, flags), 0);
    assert_int_equal(nsock_open(&f->ns, h->base, "notify"), 0);
    assert_int_equal(harness_start(h, 0, H_BOOTSTRAP, 0), 0);
    assert_int_equal(harness_leader(h, 15000), 0);
    new_token(f, token, sizeof token);

    snprintf(f->child_bin, sizeof f->child_bin, "%s-child", h->bin);
    snprintf(f->child_dir, sizeof f->child_dir, "%s/c1", h->base);
    snprintf(f->child_log, sizeof f->child_log, "%s/c1.log", h->base);
    const char *argv[] = {f->child_bin,
                          "--data",
                          f->child_dir,
                          "--endpoints",
                          h->node[0].api,
                          "--token",
                          token,
                          "--set",
                          "report_interval_ms=300",
                          "--set",
                          "stream_timeout_ms=1500",
                          NULL};
    uint64_t t0 = harness_now_ms();
    char env0[300];
    snprintf(env0, sizeof env0, "NOTIFY_SOCKET=%s", f->ns.path);
    const char *const env[] = {env0, NULL};
    pid_t pid = harness_spawn(argv, f->child_log, env);
    assert_true(pid > 0);
    f->child = pid;
    expect_notify(&f->ns, pid, "READY=1", 15000);
    print_message("child READY=1 after %llu ms\n",
                  (unsigned long long)(harness_now_ms() - t0));
    expect_notify(&f->ns, pid, "STATUS=following at revision", 10000);

    /* Every parent gone: the child says it serves from the cache. */
    harness_stop(h, 0, SIGKILL);
    expect_notify(&f->ns, pid, "STATUS=degraded: serving revision", 10000);

    int status = 0;
    child_stop(f, SIGTERM, &status);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    expect_notify(&f->ns, pid, "STOPPING=1", 0);
    print_message("notifications:\n%s", f->ns.seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parent_ready_stopping, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_child_ready_status_stopping, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
