/*
 * health.c - a child's checks of its local services (see health.h).
 *
 * Each check runs synchronously against a deadline taken when it starts:
 * pid files and /proc are read directly, TCP connects are non-blocking and
 * polled, and commands are forked into their own process group and polled
 * with waitid(WNOWAIT) so the group can be killed while its leader's pid is
 * still held by the zombie (and so cannot have been reused).
 */
#include "health.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/fdio.h"

#define DEFAULT_TIMEOUT_MS 2000u
/* The kernel's TASK_COMM_LEN less its NUL: longer names are cut short. */
#define COMM_MAX 15
/* Longest sleep between two looks at a running command. */
#define POLL_STEP_MAX_MS 20

static const struct
{
    const char *word;
    enum health_kind kind;
    const char *arg; /* what the argument is, for error messages */
} kinds[] = {
    {"process", HEALTH_PROCESS, "a PIDFILE"},
    {"process-name", HEALTH_PROCESS_NAME, "a process name (COMM)"},
    {"tcp", HEALTH_TCP, "HOST:PORT"},
    {"command", HEALTH_COMMAND, "a shell command"},
};

void health_init(struct health *h)
{
    memset(h, 0, sizeof *h);
    h->timeout_ms = DEFAULT_TIMEOUT_MS;
}

/* --- parsing --------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return CD_ECONFIG;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static const char *skip_blanks(const char *p)
{
    while (is_blank(*p)) {
        p++;
    }
    return p;
}

static const char *skip_word(const char *p)
{
    while (*p != '\0' && !is_blank(*p)) {
        p++;
    }
    return p;
}

static int is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
}

/*
 * Split "HOST:PORT" or "[IPV6]:PORT" into host and port (both buffers of
 * HEALTH_ARG_MAX bytes, which s fits in).  Returns 0, or -1 with *why set
 * to a static reason.  *bracketed tells whether HOST was in brackets.
 */
static int split_host_port(const char *s,
                           char *host,
                           char *port,
                           int *bracketed,
                           const char **why)
{
    const char *colon;
    size_t hlen;

    *bracketed = s[0] == '[';
    if (*bracketed) {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            *why = "no ']' after the IPv6 address";
            return -1;
        }
        if (close[1] != ':') {
            *why = "no :PORT after the ']'";
            return -1;
        }
        colon = close + 1;
        hlen = (size_t)(close - (s + 1));
        memcpy(host, s + 1, hlen);
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            *why = "no :PORT";
            return -1;
        }
        hlen = (size_t)(colon - s);
        memcpy(host, s, hlen);
    }
    host[hlen] = '\0';
    if (hlen == 0) {
        *why = "no HOST";
        return -1;
    }
    if (!*bracketed && strchr(host, ':') != NULL) {
        *why = "an IPv6 address must be in brackets: [ADDRESS]:PORT";
        return -1;
    }

    const char *p = colon + 1;
    unsigned long value = 0;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 6; p++, digits++) {
        value = value * 10 + (unsigned long)(*p - '0');
    }
    if (digits == 0 || *p != '\0' || value < 1 || value > 65535) {
        *why = "PORT must be a number from 1 to 65535";
        return -1;
    }
    snprintf(port, HEALTH_ARG_MAX, "%lu", value);
    return 0;
}

/* Is host (from brackets) an IPv6 literal?  AI_NUMERICHOST: no lookups. */
static int is_ipv6_literal(const char *host)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) {
        return 0;
    }
    freeaddrinfo(res);
    return 1;
}

int health_add(struct health *h, const char *spec, char *err, size_t errlen)
{
    struct health_check c;
    const char *p = skip_blanks(spec);
    const char *end = skip_word(p);
    size_t len = (size_t)(end - p);
    size_t i;

    memset(&c, 0, sizeof c);

    /* NAME */
    if (len == 0) {
        return fail(err, errlen, "empty check: want NAME KIND ARGUMENT");
    }
    if (len >= sizeof c.name) {
        return fail(err, errlen,
                    "check name \"%.*s...\" is too long (at most %d "
                    "characters)",
                    20, p, HEALTH_NAME_MAX - 1);
    }
    for (i = 0; i < len; i++) {
        if (!is_name_char(p[i])) {
            return fail(err, errlen,
                        "check name \"%.*s\" may contain only letters, "
                        "digits, '-', '_' and '.' (no spaces or quotes)",
                        (int)len, p);
        }
    }
    memcpy(c.name, p, len);

    /* KIND */
    p = skip_blanks(end);
    end = skip_word(p);
    len = (size_t)(end - p);
    if (len == 0) {
        return fail(err, errlen,
                    "check %s: missing kind (process, process-name, tcp or "
                    "command)",
                    c.name);
    }
    const char *word = NULL; /* the kind as written, and its argument */
    const char *what = NULL;
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strlen(kinds[i].word) == len &&
            memcmp(kinds[i].word, p, len) == 0) {
            c.kind = kinds[i].kind;
            word = kinds[i].word;
            what = kinds[i].arg;
            break;
        }
    }
    if (word == NULL) {
        return fail(err, errlen,
                    "check %s: unknown kind \"%.*s\" (want process, "
                    "process-name, tcp or command)",
                    c.name, (int)(len > 40 ? 40 : len), p);
    }

    /* ARGUMENT: the rest of the line, without surrounding blanks. */
    p = skip_blanks(end);
    end = p + strlen(p);
    while (end > p && is_blank(end[-1])) {
        end--;
    }
    len = (size_t)(end - p);
    if (len == 0) {
        return fail(err, errlen, "check %s: missing argument: %s needs %s",
                    c.name, word, what);
    }
    if (c.kind != HEALTH_COMMAND) {
        const char *extra = skip_word(p);
        if (extra < end) {
            extra = skip_blanks(extra);
            return fail(err, errlen,
                        "check %s: unexpected \"%.*s\" after %s (%s takes "
                        "one argument)",
                        c.name, (int)(end - extra > 40 ? 40 : end - extra),
                        extra, what, word);
        }
    }
    if (len >= sizeof c.arg) {
        return fail(err, errlen,
                    "check %s: argument is too long (at most %d bytes)", c.name,
                    HEALTH_ARG_MAX - 1);
    }
    memcpy(c.arg, p, len);

    if (c.kind == HEALTH_PROCESS_NAME && len > COMM_MAX) {
        return fail(err, errlen,
                    "check %s: process name \"%s\" is longer than %d "
                    "characters, the kernel's limit, so it could never match",
                    c.name, c.arg, COMM_MAX);
    }
    if (c.kind == HEALTH_TCP) {
        char host[HEALTH_ARG_MAX];
        char port[HEALTH_ARG_MAX];
        int bracketed;
        const char *why = NULL;
        if (split_host_port(c.arg, host, port, &bracketed, &why) != 0) {
            return fail(err, errlen, "check %s: bad HOST:PORT \"%s\": %s",
                        c.name, c.arg, why);
        }
        if (bracketed && !is_ipv6_literal(host)) {
            return fail(err, errlen,
                        "check %s: bad HOST:PORT \"%s\": \"%s\" is not an "
                        "IPv6 address",
                        c.name, c.arg, host);
        }
    }

    for (i = 0; i < h->n; i++) {
        if (strcmp(h->checks[i].name, c.name) == 0) {
            return fail(err, errlen, "duplicate check name \"%s\"", c.name);
        }
    }
    if (h->n >= HEALTH_MAX_CHECKS) {
        return fail(err, errlen, "too many checks (at most %d); %s not added",
                    HEALTH_MAX_CHECKS, c.name);
    }

    c.up = 0;
    snprintf(c.detail, sizeof c.detail, "not checked yet");
    h->checks[h->n++] = c;
    return 0;
}

/* --- running --------------------------------------------------------- */

static void set_down(struct health_check *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_down(struct health_check *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    c->up = 0;
}

static void set_up(struct health_check *c)
{
    c->up = 1;
    c->detail[0] = '\0';
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)(ms % 1000) * 1000000};
    /* An interrupted sleep is only a shorter one: callers loop on time. */
    nanosleep(&ts, NULL);
}

static void run_process(struct health_check *c)
{
    char buf[32];
    int fd = open(c->arg, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        set_down(c, "cannot read %s: %s", c->arg, strerror(errno));
        return;
    }
    ssize_t n = fd_read_full(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        set_down(c, "cannot read %s: %s", c->arg, cd_strerror((int)n));
        return;
    }
    buf[n] = '\0';

    /* Decimal digits, surrounded by blanks at most ("123\n" as written). */
    const char *p = skip_blanks(buf);
    char *endp = NULL;
    errno = 0;
    long pid = strtol(p, &endp, 10);
    if (endp == p || *p < '0' || *p > '9' || *skip_blanks(endp) != '\0' ||
        errno != 0 || pid <= 0 || pid > INT_MAX) {
        set_down(c, "no pid in %s", c->arg);
        return;
    }
    /* EPERM: it exists, but runs as a user we may not signal. */
    if (kill((pid_t)pid, 0) == 0 || errno == EPERM) {
        set_up(c);
    } else if (errno == ESRCH) {
        set_down(c, "pid %ld not running", pid);
    } else {
        set_down(c, "pid %ld: %s", pid, strerror(errno));
    }
}

static void run_process_name(struct health_check *c)
{
    DIR *d = opendir("/proc");
    if (d == NULL) {
        set_down(c, "cannot read /proc: %s", strerror(errno));
        return;
    }
    int found = 0;
    const struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        char path[sizeof e->d_name + 8];
        char comm[COMM_MAX + 2];
        if (e->d_name[0] < '1' || e->d_name[0] > '9') {
            continue; /* not a process */
        }
        snprintf(path, sizeof path, "%s/comm", e->d_name);
        /* A process may exit between readdir and open: skip it. */
        int fd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        ssize_t n = fd_read_full(fd, comm, sizeof comm - 1);
        close(fd);
        if (n <= 0) {
            continue;
        }
        comm[n] = '\0';
        if (comm[n - 1] == '\n') {
            comm[n - 1] = '\0';
        }
        found = strcmp(comm, c->arg) == 0;
    }
    closedir(d);
    if (found) {
        set_up(c);
    } else {
        set_down(c, "no process named %s", c->arg);
    }
}

/*
 * Connect fd (non-blocking) to addr by deadline.  0, -errno, or
 * CD_ETIMEOUT.
 */
static int connect_by(int fd,
                      const struct sockaddr *addr,
                      socklen_t addrlen,
                      int64_t deadline)
{
    if (connect(fd, addr, addrlen) == 0) {
        return 0;
    }
    /* EINTR: the connection goes on asynchronously, as for EINPROGRESS. */
    if (errno != EINPROGRESS && errno != EINTR) {
        return -errno;
    }
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            return CD_ETIMEOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            continue; /* the loop's check reports the timeout */
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            return -errno;
        }
        return -soerr;
    }
}

static void run_tcp(struct health_check *c, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    char host[HEALTH_ARG_MAX];
    char port[HEALTH_ARG_MAX];
    int bracketed;
    const char *why = NULL;
    struct addrinfo hints;
    struct addrinfo *res = NULL;

    if (split_host_port(c->arg, host, port, &bracketed, &why) != 0) {
        set_down(c, "bad HOST:PORT: %s", why); /* health_add refuses these */
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (bracketed ? AI_NUMERICHOST : 0);
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        set_down(c, "resolve %s: %s", host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }

    /* Try every address until one connects; report the last failure. */
    int last = CD_ETIMEOUT;
    const char *step = "connect";
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (now_ms() >= deadline) {
            last = CD_ETIMEOUT;
            break;
        }
        int fd = socket(ai->ai_family,
                        ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            last = -errno;
            step = "socket";
            continue;
        }
        last = connect_by(fd, ai->ai_addr, ai->ai_addrlen, deadline);
        step = "connect";
        close(fd);
        if (last == 0) {
            break;
        }
    }
    freeaddrinfo(res);

    if (last == 0) {
        set_up(c);
    } else if (last == CD_ETIMEOUT) {
        set_down(c, "timed out after %u ms", timeout_ms);
    } else {
        set_down(c, "%s: %s", step, cd_strerror(last));
    }
}

/*
 * The forked child: become a group leader, restore what exec keeps of the
 * parent's signal state (ignored signals, the mask), put stdio on
 * /dev/null, drop every other descriptor, exec the shell.  Only
 * async-signal-safe calls: the parent may have other threads.
 */
static void __attribute__((noreturn)) exec_child(int devnull,
                                                 char *const argv[],
                                                 const struct sigaction *dfl,
                                                 const sigset_t *none,
                                                 int maxfd)
{
    setpgid(0, 0);
    for (int sig = 1; sig < NSIG; sig++) {
        sigaction(sig, dfl, NULL); /* fails harmlessly for some */
    }
    sigprocmask(SIG_SETMASK, none, NULL);
    if (dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
        dup2(devnull, STDERR_FILENO) < 0) {
        _exit(126);
    }
    if (close_range(3, ~0u, 0) != 0) {
        for (int fd = 3; fd < maxfd; fd++) {
            close(fd);
        }
    }
    execve("/bin/sh", argv, environ);
    _exit(127);
}

static void run_command(struct health_check *c, unsigned timeout_ms)
{
    char arg0[] = "sh";
    char arg1[] = "-c";
    char *const argv[] = {arg0, arg1, c->arg, NULL};
    struct sigaction dfl;
    sigset_t none;
    struct rlimit rl;
    int maxfd = 1024;

    /* Everything the child needs is prepared here, before fork. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigemptyset(&none);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        maxfd = rl.rlim_cur > 65536 ? 65536 : (int)rl.rlim_cur;
    }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        set_down(c, "cannot open /dev/null: %s", strerror(errno));
        return;
    }

    int64_t deadline = now_ms() + timeout_ms;
    pid_t pid = fork();
    if (pid < 0) {
        set_down(c, "fork: %s", strerror(errno));
        close(devnull);
        return;
    }
    if (pid == 0) {
        exec_child(devnull, argv, &dfl, &none, maxfd);
    }
    /*
     * The child makes itself a group leader too; whichever of the two calls
     * runs first wins, so the group exists before we could signal it.  This
     * one fails (EACCES) once the child has exec'd, which is fine.
     */
    setpgid(pid, pid);
    close(devnull);

    /*
     * Wait for the shell to exit without reaping it (WNOWAIT): while it is a
     * zombie its pid, and so its group id, cannot be reused.
     */
    int exited = 0;
    int lost = 0;
    int64_t nap = 1;
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0) {
            if (si.si_pid == pid) {
                exited = 1;
                break;
            }
        } else if (errno != EINTR) {
            lost = errno; /* ECHILD: reaped by someone else */
            break;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            break;
        }
        sleep_ms(nap < left ? nap : left);
        nap = nap * 2 > POLL_STEP_MAX_MS ? POLL_STEP_MAX_MS : nap * 2;
    }
    if (lost != 0) {
        set_down(c, "lost the command: waitid: %s", strerror(lost));
        return;
    }

    /* The shell on overrun, whatever it left behind otherwise. */
    kill(-pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            set_down(c, "lost the command: waitpid: %s", strerror(errno));
            return;
        }
    }

    if (!exited) {
        set_down(c, "timed out after %u ms", timeout_ms);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        set_up(c);
    } else if (WIFEXITED(status)) {
        set_down(c, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        set_down(c, "killed by signal %d", WTERMSIG(status));
    } else {
        set_down(c, "wait status 0x%x", (unsigned)status);
    }
}

int health_run(struct health *h)
{
    unsigned timeout_ms = h->timeout_ms ? h->timeout_ms : DEFAULT_TIMEOUT_MS;
    int down = 0;

    for (size_t i = 0; i < h->n; i++) {
        struct health_check *c = &h->checks[i];
        switch (c->kind) {
            case HEALTH_PROCESS:
                run_process(c);
                break;
            case HEALTH_PROCESS_NAME:
                run_process_name(c);
                break;
            case HEALTH_TCP:
                run_tcp(c, timeout_ms);
                break;
            case HEALTH_COMMAND:
                run_command(c, timeout_ms);
                break;
            default:
                set_down(c, "unknown check kind %d", (int)c->kind);
                break;
        }
        down += !c->up;
    }
    return down;
}
