/*
 * nfq_delay - delay, reorder and drop packets on an NFQUEUE, for the fault
 * lab (netem is not available on the lab's kernel; see docs/lab.md).
 *
 *   nfq_delay --queue N [--delay-ms D] [--jitter-ms J] [--loss P]
 *             [--seed S] [--duration-s T] [--max-held K] [--trace]
 *
 * Every packet the kernel queues to N gets its verdict after a delay drawn
 * uniformly from [D-J, D+J] ms (at least 0), so packets reorder when J > 0;
 * with probability P (0..1) it is dropped at once instead.  One seed gives
 * the same delays and drops for the same sequence of packets; --trace
 * prints that schedule, one line per packet on stdout: its number, then
 * "drop" or its delay in microseconds.  The rules
 * that feed the queue belong to the caller, with --queue-bypass so that
 * traffic flows again when this program is gone:
 *
 *   iptables -A OUTPUT -d PEER -j NFQUEUE --queue-num N --queue-bypass
 *
 * Pending verdicts sit in a min-heap ordered by due time; one timerfd armed
 * for the earliest and a poll loop release them, so nothing sleeps per
 * packet and a verdict is late by the loop's wake-up latency only.  At most
 * K packets (default 20000) are held: beyond that a packet is accepted at
 * once and counted, and the kernel queue is fail-open for the same reason.
 * SIGTERM, SIGINT or the end of --duration-s accept everything pending and
 * end the program with exit 0 after one line of counters on stderr; packets
 * that arrive during that stop are let through by the kernel (the queue is
 * made fail-open with length 0 first), never dropped by the unbinding.  After
 * SIGKILL the kernel drops what was pending and --queue-bypass lets new
 * packets through.
 *
 * Exit codes: 0 clean stop, 1 runtime error, 2 bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <libnetfilter_queue/libnetfilter_queue.h>

#define DEFAULT_MAX_HELD 20000

static const char usage[] =
    "usage: nfq_delay --queue N [--delay-ms D] [--jitter-ms J] [--loss P]\n"
    "                 [--seed S] [--duration-s T] [--max-held K] [--trace]\n"
    "  holds each packet of NFQUEUE N for D +- J ms (uniform), drops it\n"
    "  with probability P; SIGTERM or T seconds: accept what is pending,\n"
    "  print counters, exit 0\n";

struct held
{
    uint64_t due_ns; /* CLOCK_MONOTONIC */
    uint64_t seq;    /* arrival order: ties keep it */
    uint32_t id;     /* the kernel's packet id */
};

struct delayer
{
    struct nfq_handle *h;
    struct nfq_q_handle *qh;
    /* options */
    uint64_t delay_ns, jitter_ns;
    double loss;
    uint64_t rng;
    size_t max_held;
    /* the min-heap of pending verdicts */
    struct held *heap;
    size_t n_held;
    /* counters */
    uint64_t seen, dropped, delayed, passed_at_once, overflow;
    uint64_t reordered, released_seq_max, verdict_errors;
    size_t max_held_seen;
    int trace;    /* print the schedule */
    int stopping; /* accept at once: the program is ending */
    int error;    /* a failed verdict: reported at exit */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* splitmix64: small, seedable, good enough for fault schedules. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static int held_before(const struct held *a, const struct held *b)
{
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void heap_push(struct delayer *d, struct held x)
{
    size_t i = d->n_held++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!held_before(&x, &d->heap[parent])) {
            break;
        }
        d->heap[i] = d->heap[parent];
        i = parent;
    }
    d->heap[i] = x;
}

static struct held heap_pop(struct delayer *d)
{
    struct held top = d->heap[0];
    struct held last = d->heap[--d->n_held];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= d->n_held) {
            break;
        }
        if (c + 1 < d->n_held && held_before(&d->heap[c + 1], &d->heap[c])) {
            c++;
        }
        if (!held_before(&d->heap[c], &last)) {
            break;
        }
        d->heap[i] = d->heap[c];
        i = c;
    }
    if (d->n_held > 0) {
        d->heap[i] = last;
    }
    return top;
}

static void verdict(struct delayer *d, uint32_t id, uint32_t v)
{
    if (nfq_set_verdict(d->qh, id, v, 0, NULL) < 0) {
        /* The packet stays queued in the kernel until the queue goes away;
         * count it rather than stop delaying everything else. */
        d->verdict_errors++;
    }
}

static void release(struct delayer *d, struct held x)
{
    /* A packet released after one that arrived later has been reordered. */
    if (x.seq < d->released_seq_max) {
        d->reordered++;
    } else {
        d->released_seq_max = x.seq;
    }
    verdict(d, x.id, NF_ACCEPT);
}

static void release_due(struct delayer *d, uint64_t now)
{
    while (d->n_held > 0 && d->heap[0].due_ns <= now) {
        release(d, heap_pop(d));
    }
}

static int on_packet(struct nfq_q_handle *qh,
                     struct nfgenmsg *msg,
                     struct nfq_data *nfa,
                     void *arg)
{
    struct delayer *d = arg;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    (void)qh;
    (void)msg;
    if (ph == NULL) {
        return 0;
    }
    uint32_t id = ntohl(ph->packet_id);
    uint64_t seq = ++d->seen;
    if (d->stopping) {
        d->passed_at_once++;
        release(d, (struct held){0, seq, id});
        return 0;
    }
    /* Draw both numbers for every packet so that one seed gives one
     * schedule whatever the options. */
    double u_loss = rng_unit(&d->rng);
    double u_delay = rng_unit(&d->rng);
    if (u_loss < d->loss) {
        if (d->trace) {
            printf("%llu drop\n", (unsigned long long)seq);
        }
        d->dropped++;
        verdict(d, id, NF_DROP);
        return 0;
    }
    int64_t delay = (int64_t)d->delay_ns +
                    (int64_t)((2.0 * u_delay - 1.0) * (double)d->jitter_ns);
    if (d->trace) {
        printf("%llu %lld\n", (unsigned long long)seq,
               (long long)(delay > 0 ? delay / 1000 : 0));
    }
    if (delay <= 0) {
        d->passed_at_once++;
        release(d, (struct held){0, seq, id});
        return 0;
    }
    if (d->n_held >= d->max_held) {
        d->overflow++;
        release(d, (struct held){0, seq, id});
        return 0;
    }
    heap_push(d, (struct held){now_ns() + (uint64_t)delay, seq, id});
    d->delayed++;
    if (d->n_held > d->max_held_seen) {
        d->max_held_seen = d->n_held;
    }
    return 0;
}

static int arm(int tfd, const struct delayer *d)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (d->n_held > 0) {
        uint64_t due = d->heap[0].due_ns;
        /* it_value 0 would disarm: a due time of 0 cannot happen, but
         * keep the timer armed whatever the clock says. */
        its.it_value.tv_sec = (time_t)(due / 1000000000ULL);
        its.it_value.tv_nsec = (long)(due % 1000000000ULL);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) {
            its.it_value.tv_nsec = 1;
        }
    }
    return timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int open_queue(struct delayer *d, uint16_t queue)
{
    d->h = nfq_open();
    if (d->h == NULL) {
        fprintf(stderr, "nfq_delay: nfq_open: %s\n", strerror(errno));
        return -1;
    }
    d->qh = nfq_create_queue(d->h, queue, on_packet, d);
    if (d->qh == NULL) {
        fprintf(stderr, "nfq_delay: queue %u: %s (is another program on it?)\n",
                queue, strerror(errno));
        return -1;
    }
    /* The verdict needs the packet id only: no payload crosses. */
    if (nfq_set_mode(d->qh, NFQNL_COPY_META, 0) < 0) {
        fprintf(stderr, "nfq_delay: set mode: %s\n", strerror(errno));
        return -1;
    }
    nfq_set_queue_maxlen(d->qh, 4 * (uint32_t)d->max_held + 1024);
    /* A full kernel queue lets packets through rather than dropping them:
     * losses come from --loss only. */
    nfq_set_queue_flags(d->qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    int fd = nfq_fd(d->h);
    int one = 1;
    /* A burst larger than the socket buffer must not end the program with
     * ENOBUFS; the kernel then fails open as above. */
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    nfnl_rcvbufsiz(nfq_nfnlh(d->h), 8u << 20);
    return fd;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"queue", required_argument, NULL, 'q'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"jitter-ms", required_argument, NULL, 'j'},
        {"loss", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},
        {"duration-s", required_argument, NULL, 't'},
        {"max-held", required_argument, NULL, 'm'},
        {"trace", no_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct delayer d;
    uint64_t queue = UINT64_MAX, delay_ms = 0, jitter_ms = 0, seed = 1;
    uint64_t duration_s = 0, max_held = DEFAULT_MAX_HELD;
    int c;

    memset(&d, 0, sizeof d);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        char *end;
        switch (c) {
            case 'q':
                bad = parse_u64(optarg, 65535, &queue);
                break;
            case 'd':
                bad = parse_u64(optarg, 3600000, &delay_ms);
                break;
            case 'j':
                bad = parse_u64(optarg, 3600000, &jitter_ms);
                break;
            case 'l':
                errno = 0;
                d.loss = strtod(optarg, &end);
                bad = errno != 0 || end == optarg || *end != '\0' ||
                      !(d.loss >= 0.0 && d.loss <= 1.0);
                break;
            case 's':
                bad = parse_u64(optarg, UINT64_MAX, &seed);
                break;
            case 't':
                bad = parse_u64(optarg, 31536000, &duration_s);
                break;
            case 'm':
                bad = parse_u64(optarg, 10000000, &max_held) || max_held == 0;
                break;
            case 'T':
                d.trace = 1;
                break;
            case 'h':
                fputs(usage, stdout);
                return 0;
            default:
                bad = 1;
        }
        if (bad) {
            for (const struct option *o = opts; c != '?' && o->name; o++) {
                if (o->val == c) {
                    fprintf(stderr, "nfq_delay: bad value for --%s: %s\n",
                            o->name, optarg);
                }
            }
            fputs(usage, stderr);
            return 2;
        }
    }
    if (queue == UINT64_MAX || optind != argc) {
        fputs(usage, stderr);
        return 2;
    }
    d.delay_ns = delay_ms * 1000000ULL;
    d.jitter_ns = jitter_ms * 1000000ULL;
    d.rng = seed;
    d.max_held = (size_t)max_held;
    d.heap = calloc(d.max_held, sizeof *d.heap);
    if (d.heap == NULL) {
        fprintf(stderr, "nfq_delay: out of memory\n");
        return 1;
    }

    /* Signals arrive through a descriptor so that a stop is handled between
     * two packets, never inside the library's callback. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    int qfd = open_queue(&d, (uint16_t)queue);
    if (sfd < 0 || tfd < 0 || qfd < 0) {
        if (sfd < 0 || tfd < 0) {
            fprintf(stderr, "nfq_delay: %s\n", strerror(errno));
        }
        free(d.heap);
        return 1;
    }
    uint64_t end_ns =
        duration_s > 0 ? now_ns() + duration_s * 1000000000ULL : UINT64_MAX;
    fprintf(stderr,
            "nfq_delay: queue %llu: delay %llu ms, jitter %llu ms, loss %g, "
            "seed %llu\n",
            (unsigned long long)queue, (unsigned long long)delay_ms,
            (unsigned long long)jitter_ms, d.loss, (unsigned long long)seed);

    static char buf[65536 + 4096];
    int stop_signal = 0, rc = 0;
    while (!stop_signal) {
        struct pollfd p[3] = {
            {qfd, POLLIN, 0}, {tfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        int timeout = -1;
        if (end_ns != UINT64_MAX) {
            uint64_t now = now_ns();
            if (now >= end_ns) {
                break;
            }
            uint64_t left_ms = (end_ns - now + 999999) / 1000000;
            timeout = left_ms > INT_MAX ? INT_MAX : (int)left_ms;
        }
        if (poll(p, 3, timeout) < 0 && errno != EINTR) {
            fprintf(stderr, "nfq_delay: poll: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        if (p[2].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                stop_signal = (int)si.ssi_signo;
            }
        }
        if (p[0].revents & POLLIN) {
            /* Drain every message ready now before looking at the clock. */
            for (int i = 0; i < 1024; i++) {
                ssize_t n = recv(qfd, buf, sizeof buf, MSG_DONTWAIT);
                if (n < 0) {
                    if (errno != EAGAIN && errno != EINTR && errno != ENOBUFS) {
                        fprintf(stderr, "nfq_delay: recv: %s\n",
                                strerror(errno));
                        rc = 1;
                    }
                    break;
                }
                nfq_handle_packet(d.h, buf, (int)n);
            }
            if (rc != 0) {
                break;
            }
        }
        if (p[1].revents & POLLIN) {
            uint64_t ticks;
            ssize_t r = read(tfd, &ticks, sizeof ticks);
            (void)r;
        }
        release_due(&d, now_ns());
        if (arm(tfd, &d) != 0) {
            fprintf(stderr, "nfq_delay: timerfd: %s\n", strerror(errno));
            rc = 1;
            break;
        }
    }

    /* Stopping the delayer must not look like a loss.  First the kernel is
     * told to let new packets through by itself (a full queue fails open,
     * and length 0 is always full), then everything held and everything
     * already on its way to this socket is accepted; only then is the queue
     * unbound, which drops whatever it still holds. */
    d.stopping = 1;
    nfq_set_queue_maxlen(d.qh, 0);
    size_t pending = d.n_held;
    while (d.n_held > 0) {
        release(&d, heap_pop(&d));
    }
    for (int i = 0; i < 4096; i++) {
        ssize_t n = recv(qfd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == ENOBUFS) {
                continue;
            }
            break;
        }
        nfq_handle_packet(d.h, buf, (int)n);
    }
    fprintf(stderr,
            "nfq_delay: stopped (%s): packets %llu, dropped %llu, delayed "
            "%llu, passed at once %llu, over the cap %llu, reordered %llu, "
            "max held %zu, accepted at stop %zu, verdict errors %llu\n",
            stop_signal ? strsignal(stop_signal)
            : rc != 0   ? "error"
                        : "duration",
            (unsigned long long)d.seen, (unsigned long long)d.dropped,
            (unsigned long long)d.delayed, (unsigned long long)d.passed_at_once,
            (unsigned long long)d.overflow, (unsigned long long)d.reordered,
            d.max_held_seen, pending, (unsigned long long)d.verdict_errors);
    nfq_destroy_queue(d.qh);
    nfq_close(d.h);
    free(d.heap);
    return rc;
}
