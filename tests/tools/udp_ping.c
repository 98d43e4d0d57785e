/*
 * udp_ping - round trips, losses and reordering of a UDP path, for the
 * fault lab's link nemeses (this machine has no ping; ICMP would also hide
 * reordering).
 *
 *   udp_ping serve ADDR:PORT
 *       echo every datagram back to its sender until SIGTERM
 *   udp_ping ADDR:PORT [--count N] [--interval-ms I] [--wait-ms W] [-v]
 *       send N numbered datagrams (default 20), one every I ms (default
 *       100), then wait up to W ms (default 2000) for the last echoes
 *
 * The client prints one summary line
 *   sent N received R lost L reordered O rtt_ms min A avg B max C
 * (reordered: echoes that came after one with a higher number; duplicates
 * are ignored) and with -v one "rtt SEQ MS" line per echo, in arrival
 * order.  Times are CLOCK_MONOTONIC.  Exit codes: 0 done (whatever was
 * lost), 1 socket error, 2 bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_COUNT 1000000

static const char usage[] =
    "usage: udp_ping serve ADDR:PORT\n"
    "       udp_ping ADDR:PORT [--count N] [--interval-ms I] [--wait-ms W] "
    "[-v]\n";

struct probe
{
    uint32_t magic;
    uint32_t seq;
    uint64_t sent_ns;
};

#define PROBE_MAGIC 0x55504e47u /* "UPNG" */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof host) {
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535 ||
        inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        return -1;
    }
    sa->sin_port = htons((uint16_t)port);
    return 0;
}

static int serve(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
        fprintf(stderr, "udp_ping: serve: %s\n", strerror(errno));
        return 1;
    }
    for (;;) {
        char buf[2048];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n =
            recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "udp_ping: serve: %s\n", strerror(errno));
            return 1;
        }
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
    }
}

static int parse_num(const char *s, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    long count = 20, interval_ms = 100, wait_ms = 2000;
    int verbose = 0;

    if (argc == 3 && strcmp(argv[1], "serve") == 0) {
        if (parse_addr(argv[2], &sa) != 0) {
            fputs(usage, stderr);
            return 2;
        }
        return serve(&sa);
    }
    if (argc < 2 || parse_addr(argv[1], &sa) != 0) {
        fputs(usage, stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        int bad = 0;
        if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--count") == 0) {
            bad = parse_num(argv[++i], MAX_COUNT, &count) || count == 0;
        } else if (i + 1 < argc && strcmp(argv[i], "--interval-ms") == 0) {
            bad = parse_num(argv[++i], 60000, &interval_ms);
        } else if (i + 1 < argc && strcmp(argv[i], "--wait-ms") == 0) {
            bad = parse_num(argv[++i], 600000, &wait_ms);
        } else {
            bad = 1;
        }
        if (bad) {
            fputs(usage, stderr);
            return 2;
        }
    }

    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "udp_ping: %s\n", strerror(errno));
        return 1;
    }
    unsigned char *seen = calloc((size_t)count, 1);
    if (seen == NULL) {
        return 1;
    }
    long sent = 0, received = 0, reordered = 0;
    long max_seq = -1;
    double min_ms = 0, max_ms = 0, sum_ms = 0;
    uint64_t start = now_ns();
    uint64_t interval = (uint64_t)interval_ms * 1000000ULL;
    uint64_t deadline = 0; /* set once everything is sent */

    for (;;) {
        uint64_t now = now_ns();
        /* Send every probe that is due (a late wake-up sends a burst rather
         * than stretch the schedule). */
        while (sent < count && now >= start + (uint64_t)sent * interval) {
            struct probe p = {PROBE_MAGIC, (uint32_t)sent, now_ns()};
            if (send(fd, &p, sizeof p, 0) < 0 && errno != ECONNREFUSED) {
                fprintf(stderr, "udp_ping: send: %s\n", strerror(errno));
                free(seen);
                return 1;
            }
            sent++;
        }
        if (sent == count && deadline == 0) {
            deadline = now + (uint64_t)wait_ms * 1000000ULL;
        }
        if (deadline != 0 && (now >= deadline || received == count)) {
            break;
        }
        uint64_t next =
            sent < count ? start + (uint64_t)sent * interval : deadline;
        int timeout = next > now ? (int)((next - now + 999999) / 1000000) : 0;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, timeout) <= 0) {
            continue;
        }
        struct probe p;
        ssize_t n = recv(fd, &p, sizeof p, MSG_DONTWAIT);
        uint64_t at = now_ns();
        if (n != (ssize_t)sizeof p || p.magic != PROBE_MAGIC ||
            (long)p.seq >= count || seen[p.seq]) {
            continue;
        }
        seen[p.seq] = 1;
        double ms = (double)(at - p.sent_ns) / 1e6;
        if ((long)p.seq < max_seq) {
            reordered++;
        } else {
            max_seq = (long)p.seq;
        }
        if (received == 0 || ms < min_ms) {
            min_ms = ms;
        }
        if (ms > max_ms) {
            max_ms = ms;
        }
        sum_ms += ms;
        received++;
        if (verbose) {
            printf("rtt %u %.3f\n", p.seq, ms);
        }
    }
    printf(
        "sent %ld received %ld lost %ld reordered %ld rtt_ms min %.3f avg "
        "%.3f max %.3f\n",
        sent, received, sent - received, reordered, min_ms,
        received > 0 ? sum_ms / (double)received : 0.0, max_ms);
    free(seen);
    close(fd);
    return 0;
}
