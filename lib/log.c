/*
 * log.c - see log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log__level = LOG_LVL_INFO;
static const char *log_ident = "clusterd";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_ident(const char *ident)
{
    log_ident = ident;
}

void log_set_level(enum log_level level)
{
    log__level = level;
}

int log_parse_level(const char *s, enum log_level *out)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log__write(enum log_level level, const char *module, const char *fmt, ...)
{
    char line[1024];
    struct timeval tv;
    struct tm tm;
    int saved = errno;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000), log_ident,
                     (long)getpid(), level_names[level], module);
    if (n < 0 || (size_t)n >= sizeof line) {
        n = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    /* va_start() is above: the analyzer of clang 14 misreads glibc's
     * va_list here (valist.Uninitialized false positive). */
    int m =
        vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap); /* NOLINT */
    va_end(ap);
    if (m < 0) {
        m = 0;
    }
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) {
        len = sizeof line - 2;
    }
    line[len++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
    errno = saved;
}
