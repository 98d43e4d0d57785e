/*
 * vip_probe - failover prober for tests/lab (make bench-failover).
 *
 *   vip_probe put  ADDR:PORT [options]   clusterd writes (cd_client_put)
 *   vip_probe echo ADDR:PORT [options]   a line to an echo_serve listener
 *   vip_probe serve ADDR:PORT NAME       the listener: answers NAME\n
 *
 * Options of put and echo:
 *   --timeout MS    per attempt (default 100); a fresh connection each time
 *   --every MS      pause between attempts (default 10)
 *   --limit MS      give up after this long (default 30000)
 *   --signal SIG --pids P1,P2,...   the nemesis: t0 is taken, then SIG
 *                   (KILL, STOP, CONT, TERM or a number) goes to every PID
 *
 * Prints "ELAPSED_MS ATTEMPTS [NODE]" at the first successful request
 * (elapsed since t0, CLOCK_MONOTONIC) and exits 0; "timeout ELAPSED_MS
 * ATTEMPTS" and exit 1 when --limit passes first; exit 2 on bad usage.
 * A paused listener still completes TCP handshakes, so success means a
 * whole request answered, never a connect.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cluster/client.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return 0;
}

static int parse_signal(const char *s)
{
    static const struct
    {
        const char *name;
        int sig;
    } names[] = {{"KILL", SIGKILL}, {"STOP", SIGSTOP}, {"CONT", SIGCONT},
                 {"TERM", SIGTERM}, {"INT", SIGINT},   {"HUP", SIGHUP}};
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].sig;
    return atoi(s);
}

/* One echo request with a fresh connection: 1 and the node's name in
 * node on an answer, 0 otherwise. */
static int echo_once(const struct sockaddr_in *sa,
                     unsigned timeout_ms,
                     char *node,
                     size_t node_len)
{
    double deadline = now_ms() + timeout_ms;
    int ok = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct linger lg = {1, 0}; /* RST on close: no TIME_WAIT pile-up */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 &&
        errno != EINPROGRESS)
        goto out;
    struct pollfd p = {fd, POLLOUT, 0};
    int left = (int)(deadline - now_ms());
    if (left <= 0 || poll(&p, 1, left) != 1)
        goto out;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)
        goto out;
    if (send(fd, "?\n", 2, MSG_NOSIGNAL) != 2)
        goto out;
    size_t got = 0;
    while (got + 1 < node_len) {
        p.events = POLLIN;
        left = (int)(deadline - now_ms());
        if (left <= 0 || poll(&p, 1, left) != 1)
            goto out;
        ssize_t n = recv(fd, node + got, node_len - 1 - got, 0);
        if (n <= 0)
            goto out;
        got += (size_t)n;
        node[got] = '\0';
        char *nl = strchr(node, '\n');
        if (nl != NULL) {
            *nl = '\0';
            ok = 1;
            break;
        }
    }
out:
    close(fd);
    return ok;
}

/* 1 when a TCP connection to sa completes within timeout_ms.  The put
 * probe checks this first: the client library backs off 25-100 ms after a
 * refused connection (a killed holder's kernel answers RST), which would
 * blur a 10 ms probing step. */
static int connects(const struct sockaddr_in *sa, unsigned timeout_ms)
{
    int ok = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0)
        ok = 1;
    else if (errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t el = sizeof err;
        ok = poll(&p, 1, (int)timeout_ms) == 1 &&
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0;
    }
    close(fd);
    return ok;
}

static int put_once(const char *endpoint,
                    const struct sockaddr_in *sa,
                    unsigned timeout_ms,
                    unsigned seq)
{
    if (!connects(sa, timeout_ms))
        return 0;
    const char *eps[1] = {endpoint};
    struct cd_client_config cfg = {0};
    struct cd_client *c = NULL;
    cfg.endpoints = eps;
    cfg.n_endpoints = 1;
    cfg.timeout_ms = timeout_ms;
    cfg.total_timeout_ms = timeout_ms;
    if (cd_client_open(&cfg, &c) != 0)
        return 0;
    char key[64], val[32];
    int kl = snprintf(key, sizeof key, "/bench/failover/%d", (int)getpid());
    int vl = snprintf(val, sizeof val, "%u", seq);
    int rc = cd_client_put(c, key, (size_t)kl, val, (size_t)vl, NULL);
    cd_client_close(c);
    return rc == 0;
}

static int serve(const char *addr, const char *name)
{
    struct sockaddr_in sa;
    if (parse_addr(addr, &sa) != 0)
        return 2;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(ls, 128) != 0) {
        perror("vip_probe serve");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    char reply[80];
    int rl = snprintf(reply, sizeof reply, "%s\n", name);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        struct timeval tv = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[64];
        if (recv(fd, buf, sizeof buf, 0) > 0)
            (void)send(fd, reply, (size_t)rl, MSG_NOSIGNAL);
        close(fd);
    }
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2], argv[3]);
    if (argc < 3 ||
        (strcmp(argv[1], "put") != 0 && strcmp(argv[1], "echo") != 0)) {
        fprintf(stderr,
                "usage: vip_probe put|echo ADDR:PORT [--timeout MS] "
                "[--every MS] [--limit MS] [--signal SIG --pids P,...]\n"
                "       vip_probe serve ADDR:PORT NAME\n");
        return 2;
    }
    int is_put = strcmp(argv[1], "put") == 0;
    const char *target = argv[2];
    unsigned timeout_ms = 100, every_ms = 10, limit_ms = 30000;
    int sig = 0;
    const char *pids = NULL;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--timeout") == 0)
            timeout_ms = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--every") == 0)
            every_ms = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--limit") == 0)
            limit_ms = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--signal") == 0)
            sig = parse_signal(argv[i + 1]);
        else if (strcmp(argv[i], "--pids") == 0)
            pids = argv[i + 1];
        else {
            fprintf(stderr, "vip_probe: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    struct sockaddr_in sa;
    if (parse_addr(target, &sa) != 0) {
        fprintf(stderr, "vip_probe: bad address %s\n", target);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    double t0 = now_ms();
    if (sig > 0 && pids != NULL) {
        char *copy = strdup(pids), *save = NULL;
        for (char *p = strtok_r(copy, ",", &save); p != NULL;
             p = strtok_r(NULL, ",", &save))
            if (atoi(p) > 0 && kill((pid_t)atoi(p), sig) != 0)
                fprintf(stderr, "vip_probe: kill %s: %s\n", p, strerror(errno));
        free(copy);
    }
    unsigned attempts = 0;
    for (;;) {
        char node[64] = "-";
        attempts++;
        int ok = is_put ? put_once(target, &sa, timeout_ms, attempts)
                        : echo_once(&sa, timeout_ms, node, sizeof node);
        double el = now_ms() - t0;
        if (ok) {
            printf("%.1f %u %s\n", el, attempts, node);
            return 0;
        }
        if (el >= limit_ms) {
            printf("timeout %.1f %u\n", el, attempts);
            return 1;
        }
        sleep_ms(every_ms);
    }
}
