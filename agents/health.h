/*
 * health.h - a child's checks of its local services.
 *
 * A child node (a mail-processing appliance) reports to the cluster leader,
 * every few seconds, whether the services it runs are up.  Each service is
 * one line of the child's config file, the value of a repeatable key
 * "check":
 *
 *   check = NAME process PIDFILE
 *       up if the pid written in PIDFILE is alive: kill(pid, 0) succeeds or
 *       fails with EPERM (the process exists but belongs to another user).
 *   check = NAME process-name COMM
 *       up if some /proc/<pid>/comm equals COMM (the kernel keeps at most
 *       15 bytes of a name, so a longer COMM is refused).
 *   check = NAME tcp HOST:PORT
 *       up if a TCP connection to HOST:PORT is established within the
 *       timeout.  HOST is an IPv4 address, a name, or an IPv6 address in
 *       brackets: [::1]:25.  Every address HOST resolves to is tried in turn
 *       until one connects.  The connection is closed at once.
 *   check = NAME command SHELL-COMMAND...
 *       up if "/bin/sh -c SHELL-COMMAND" exits with status 0 within the
 *       timeout.  The rest of the line is the command, as written.
 *
 * NAME is 1 to HEALTH_NAME_MAX - 1 letters, digits, '-', '_' or '.', unique
 * within a struct health: it is how the leader tells checks apart.
 *
 * Commands run in a process group of their own, with stdin, stdout and
 * stderr on /dev/null, default signal dispositions, an empty signal mask and
 * no descriptors of the caller beyond 0-2.  When the shell exits, or when
 * it overruns the timeout, the whole group is sent SIGKILL before the shell
 * is reaped, so a check never leaves processes behind (a descendant that
 * moved to another group or session, by setsid(1) say, escapes this).
 *
 * Threads: one struct health belongs to one thread at a time.  health_run
 * blocks (up to n * timeout_ms, plus name resolution for tcp checks), so a
 * libuv program runs it off the loop thread (uv_queue_work).  It forks, and
 * the child calls only async-signal-safe functions before exec, so it is
 * safe in a multi-threaded process.
 *
 * Caveats:
 *  - health_run reaps the commands it starts with waitpid(pid): the process
 *    must not set SIGCHLD to SIG_IGN (children would then be reaped by the
 *    kernel and their exit status lost) nor reap with waitpid(-1).
 *  - Name resolution (getaddrinfo) is bounded by the resolver's own
 *    timeouts (resolv.conf), not by timeout_ms; time it spends is deducted
 *    from the connect's share.  Use numeric addresses where that matters.
 *  - Scanning /proc for process-name is not bounded by timeout_ms; it takes
 *    about a millisecond per thousand processes.
 *
 * Errors: health_add returns 0 or CD_ECONFIG (lib/err.h).  health_run does
 * not fail: a check that cannot be carried out (unreadable pid file, no
 * memory to fork) is reported down with the reason in its detail.
 */
#ifndef CD_HEALTH_H
#define CD_HEALTH_H

#include <stddef.h>

/* Most checks one struct health holds. */
#define HEALTH_MAX_CHECKS 64
/* Size of a check's name buffer, terminating NUL included. */
#define HEALTH_NAME_MAX 64
/* Size of a check's argument buffer, terminating NUL included. */
#define HEALTH_ARG_MAX 512
/* Size of a check's detail buffer; longer details are truncated. */
#define HEALTH_DETAIL_MAX 128

enum health_kind {
    HEALTH_PROCESS = 1,  /* arg: path of a pid file */
    HEALTH_PROCESS_NAME, /* arg: a comm, at most 15 bytes */
    HEALTH_TCP,          /* arg: HOST:PORT or [IPV6]:PORT, as written */
    HEALTH_COMMAND,      /* arg: a shell command */
};

struct health_check
{
    char name[HEALTH_NAME_MAX];
    enum health_kind kind;
    char arg[HEALTH_ARG_MAX];
    /* Last result.  Before the first health_run: down, "not checked yet". */
    int up; /* 1 up, 0 down */
    /*
     * Why the check is down, e.g. "connect: Connection refused",
     * "exit status 3", "killed by signal 9", "timed out after 2000 ms",
     * "no process named X", "pid 123 not running",
     * "cannot read /run/x.pid: No such file or directory"; "" when up.
     */
    char detail[HEALTH_DETAIL_MAX];
};

struct health
{
    struct health_check checks[HEALTH_MAX_CHECKS];
    size_t n;            /* checks[0..n) are in use, in the order added */
    unsigned timeout_ms; /* per check; default 2000; 0 means the default */
};

/* Empty set of checks, timeout_ms 2000.  No I/O; cannot fail. */
void health_init(struct health *h);

/*
 * Parse one "check" value (the text after "check =", surrounding blanks
 * allowed) and append it to h.  Comments are not stripped here: a command
 * may contain '#'.  spec is borrowed; what is kept is copied.
 *
 * Returns 0, or CD_ECONFIG with h unchanged and, if err is not NULL, a
 * NUL-terminated reason in err (errlen bytes, truncated to fit) for: an
 * empty spec, a missing or unknown kind, a missing argument, extra words
 * after a single-word argument, a name too long or with characters other
 * than those above (quotes, so "a name with spaces" is refused), a
 * duplicate name, more than HEALTH_MAX_CHECKS checks, an argument of
 * HEALTH_ARG_MAX bytes or more, a process name longer than 15 bytes, and a
 * bad HOST:PORT (no port, port not in 1-65535, an unbracketed IPv6 address,
 * a bracketed one that is not an IPv6 literal).  Names in HOST are resolved
 * only when the check runs.
 */
int health_add(struct health *h, const char *spec, char *err, size_t errlen);

/*
 * Run every check once, in order, each bounded by timeout_ms (see the
 * caveats above), and update its up and detail.  A command that overruns is
 * killed, its whole process group, and reaped.  Opens no descriptor that it
 * does not close before returning.
 *
 * Returns the number of checks that are down (0 when all are up).
 */
int health_run(struct health *h);

#endif
