/*
 * kvconf.h - configuration files of "key = value" lines, read the same way
 * by clusterd and clusterd-child.
 *
 * The format:
 *   - one setting per line: a key, '=', a value; spaces and tabs around
 *     either are dropped; the value is the rest of the line (it may hold
 *     '=' and spaces);
 *   - empty lines and lines whose first non-blank character is '#' are
 *     skipped; with KVCONF_INLINE_COMMENTS, a '#' anywhere starts a comment
 *     (clusterd's file: none of its values holds a '#'; the child's check
 *     commands may, so its file has whole-line comments only);
 *   - "\n" or "\r\n" ends a line; the last line needs no end.
 *
 * Refused, with the line's number and why: a line without '=', an empty
 * key, a line longer than KVCONF_LINE_MAX, a NUL byte, a file larger than
 * KVCONF_FILE_MAX; and whatever the caller's setter refuses.  The first
 * error stops the parse; settings already passed to the setter stay set.
 *
 * No state; any thread.
 */
#ifndef CD_KVCONF_H
#define CD_KVCONF_H

#include <stddef.h>

#define KVCONF_LINE_MAX 4096
#define KVCONF_FILE_MAX (1 << 20)

enum {
    KVCONF_INLINE_COMMENTS = 1,
};

/* Apply one setting: 0, or nonzero (returned by kvconf_parse) with why
 * (size whylen) saying what is wrong. */
typedef int (*kvconf_set_fn)(void *arg,
                             const char *key,
                             const char *value,
                             char *why,
                             size_t whylen);

/*
 * Parse text (len bytes, no NUL needed) and call set for each setting in
 * order.  0; CD_ECONFIG with "line N: why" in err for a malformed line;
 * or the setter's nonzero return with "line N: <its why>".
 */
int kvconf_parse(const char *text,
                 size_t len,
                 int flags,
                 kvconf_set_fn set,
                 void *arg,
                 char *err,
                 size_t errlen);

/* A setting's number: decimal (strtoull's, but never negative), in
 * lo..hi, nothing after it.  0 with *out set, or -1. */
int kvconf_uint(const char *v,
                unsigned long long lo,
                unsigned long long hi,
                unsigned long long *out);

/* One "KEY=VALUE" command-line argument (--set): the key is what comes
 * before the first '=' (under 64 bytes), the value all after it.  0; -EINVAL
 * with err saying so when it has no such shape; or the setter's nonzero
 * return with its why in err. */
int kvconf_arg(const char *kv,
               kvconf_set_fn set,
               void *arg,
               char *err,
               size_t errlen);

/*
 * Read the file at path and parse it as above; errors say "path:N: why".
 * 0; -errno when it cannot be read (err says why); CD_ECONFIG for a file
 * over KVCONF_FILE_MAX; or what kvconf_parse returns.
 */
int kvconf_load(const char *path,
                int flags,
                kvconf_set_fn set,
                void *arg,
                char *err,
                size_t errlen);

#endif
