/*
 * err.c - names and messages for the error table in err.h.
 */
#include "err.h"

#include <errno.h>
#include <string.h>

/* Names of the errno values clusterd can return; strerror() gives messages
 * but no portable names, and operators grep logs for names. */
/* The errno names read best as a table. */
/* clang-format off */
#define CD__ERRNO_NAMES(X)                                                \
    X(EPERM) X(ENOENT) X(EINTR) X(EIO) X(EBADF) X(EAGAIN) X(ENOMEM)       \
    X(EACCES) X(EEXIST) X(ENOTDIR) X(EISDIR) X(EINVAL) X(EMFILE)          \
    X(ENOSPC) X(EPIPE) X(ERANGE) X(ENAMETOOLONG) X(ENOSYS) X(EPROTO)      \
    X(EMSGSIZE) X(ECONNREFUSED) X(ECONNRESET) X(ETIMEDOUT) X(EADDRINUSE)  \
    X(ECANCELED) X(EOVERFLOW) X(EROFS) X(EFBIG) X(ENOTCONN)               \
    X(EHOSTUNREACH) X(EALREADY) X(ENETUNREACH) X(EADDRNOTAVAIL)            \
    X(ENETDOWN)
/* clang-format on */

const char *cd_errname(int err)
{
    switch (err) {
        case 0:
            return "OK";
#define CD__NAME_CASE(name, off, msg) \
    case CD_E##name:                  \
        return "CD_E" #name;
            CD_ERRNO_MAP(CD__NAME_CASE)
#undef CD__NAME_CASE
#define CD__ERRNO_CASE(e) \
    case -(e):            \
        return #e;
            CD__ERRNO_NAMES(CD__ERRNO_CASE)
#undef CD__ERRNO_CASE
        default:
            return "UNKNOWN";
    }
}

const char *cd_strerror(int err)
{
    switch (err) {
#define CD__MSG_CASE(name, off, msg) \
    case CD_E##name:                 \
        return msg;
        CD_ERRNO_MAP(CD__MSG_CASE)
#undef CD__MSG_CASE
        default:
            break;
    }
    if (err == 0) {
        return "success";
    }
    if (err < 0 && err > CD_ERR_BASE) {
        return strerror(-err);
    }
    return "unknown error";
}

int cd_err_is_project(int err)
{
    return err <= CD_ERR_BASE - 1 && err >= CD_ERR_BASE - 1000;
}
