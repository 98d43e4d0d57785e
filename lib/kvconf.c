/*
 * kvconf.c - see kvconf.h.
 */
#include "kvconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fdio.h"

static int blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

/* One line (n bytes, NUL-terminated in buf): 0, or an error with why. */
static int one_line(char *buf,
                    int flags,
                    kvconf_set_fn set,
                    void *arg,
                    char *why,
                    size_t whylen)
{
    char *s = buf;
    while (blank(*s)) {
        s++;
    }
    if (*s == '#') {
        return 0;
    }
    if (flags & KVCONF_INLINE_COMMENTS) {
        char *hash = strchr(s, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
    }
    char *e = s + strlen(s);
    while (e > s && blank(e[-1])) {
        *--e = '\0';
    }
    if (*s == '\0') {
        return 0;
    }
    char *eq = strchr(s, '=');
    if (eq == NULL) {
        snprintf(why, whylen, "expected key = value");
        return CD_ECONFIG;
    }
    char *k_end = eq;
    while (k_end > s && blank(k_end[-1])) {
        k_end--;
    }
    *k_end = '\0';
    if (*s == '\0') {
        snprintf(why, whylen, "expected key = value (no key before '=')");
        return CD_ECONFIG;
    }
    char *v = eq + 1;
    while (blank(*v)) {
        v++;
    }
    return set(arg, s, v, why, whylen);
}

int kvconf_parse(const char *text,
                 size_t len,
                 int flags,
                 kvconf_set_fn set,
                 void *arg,
                 char *err,
                 size_t errlen)
{
    char line[KVCONF_LINE_MAX + 1];
    char why[512];
    size_t pos = 0;
    unsigned lineno = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - (text + pos)) : len - pos;
        lineno++;
        int rc = 0;
        why[0] = '\0';
        if (n > KVCONF_LINE_MAX) {
            snprintf(why, sizeof why, "line longer than %d bytes",
                     KVCONF_LINE_MAX);
            rc = CD_ECONFIG;
        } else if (memchr(text + pos, '\0', n) != NULL) {
            snprintf(why, sizeof why, "NUL byte in the line");
            rc = CD_ECONFIG;
        } else {
            memcpy(line, text + pos, n);
            line[n] = '\0';
            rc = one_line(line, flags, set, arg, why, sizeof why);
        }
        if (rc != 0) {
            snprintf(err, errlen, "line %u: %s", lineno,
                     why[0] != '\0' ? why : "refused");
            return rc;
        }
        pos += n + (nl != NULL);
    }
    return 0;
}

int kvconf_arg(const char *kv,
               kvconf_set_fn set,
               void *arg,
               char *err,
               size_t errlen)
{
    const char *eq = strchr(kv, '=');
    char key[64];
    if (eq == NULL || eq == kv || (size_t)(eq - kv) >= sizeof key) {
        snprintf(err, errlen, "expected KEY=VALUE");
        return -EINVAL;
    }
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    return set(arg, key, eq + 1, err, errlen);
}

int kvconf_uint(const char *v,
                unsigned long long lo,
                unsigned long long hi,
                unsigned long long *out)
{
    char *end;
    if (v[0] == '\0' || v[0] == '-') {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < lo || n > hi) {
        return -1;
    }
    *out = n;
    return 0;
}

int kvconf_load(const char *path,
                int flags,
                kvconf_set_fn set,
                void *arg,
                char *err,
                size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        if (fd >= 0) {
            close(fd);
        }
        return -e;
    }
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s: not a file", path);
        return CD_ECONFIG;
    }
    char *buf = malloc(KVCONF_FILE_MAX + 1);
    if (buf == NULL) {
        close(fd);
        snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
        return -ENOMEM;
    }
    ssize_t n = fd_read_full(fd, buf, KVCONF_FILE_MAX + 1);
    int e = n < 0 ? (int)-n : 0;
    close(fd);
    if (n < 0) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (n > KVCONF_FILE_MAX) {
        free(buf);
        snprintf(err, errlen, "%s: larger than %d bytes", path,
                 KVCONF_FILE_MAX);
        return CD_ECONFIG;
    }
    char why[600];
    int rc = kvconf_parse(buf, (size_t)n, flags, set, arg, why, sizeof why);
    free(buf);
    if (rc != 0) {
        /* "line N: why" -> "path:N: why" */
        const char *rest = strncmp(why, "line ", 5) == 0 ? why + 5 : why;
        snprintf(err, errlen, "%s:%s", path, rest);
    }
    return rc;
}
