/*
 * err.h - the project's error codes.
 *
 * Every function in clusterd returns 0 on success or a negative number on
 * failure: either a negative errno (-ENOMEM, -EIO, ...) or one of the
 * project codes below, which live in a reserved range (CD_ERR_BASE and
 * down) that no errno reaches.  Codes of foreign libraries (LMDB, raft,
 * protobuf-c, ldns, libldap) are translated where they enter the project,
 * so callers only ever see these two kinds.
 *
 * The table is an X-macro: one line per code gives its name, value and
 * message, and generates the enum, cd_errname() and cd_strerror().
 *
 * Thread-safety: every function here is pure and may be called anywhere.
 */
#ifndef CD_ERR_H
#define CD_ERR_H

#define CD_ERR_BASE (-9000)

/* X(NAME, offset, message) -> CD_E<NAME> = CD_ERR_BASE - offset */
#define CD_ERRNO_MAP(X)                                                  \
    X(CORRUPT, 1, "stored data is corrupt")                              \
    X(MAPFULL, 2, "store is full: map size reached")                     \
    X(KEYTOOBIG, 3, "key exceeds the maximum key size")                  \
    X(VALTOOBIG, 4, "value exceeds the maximum value size")              \
    X(BADKEY, 5, "invalid key")                                          \
    X(BADREV, 6, "revision out of range")                                \
    X(COMPACTED, 7, "revision has been compacted")                       \
    X(NOTFOUND, 8, "key not found")                                      \
    X(FRAMETOOBIG, 9, "frame exceeds the configured maximum size")       \
    X(MALFORMED, 10, "malformed message")                                \
    X(BADCLUSTER, 11, "wrong cluster id")                                \
    X(BADOP, 12, "unknown or invalid operation")                         \
    X(CHECKSUM, 13, "checksum mismatch")                                 \
    X(BADSNAP, 14, "not a clusterd snapshot, or an unsupported version") \
    X(READERSFULL, 15, "too many concurrent readers")                    \
    X(VERSION, 16, "store format version not supported")                 \
    X(DUPLICATE, 17, "request already applied")                          \
    X(TOOOLD, 18, "request id too old to deduplicate")                   \
    X(TOOMANY, 19, "too many operations in one request")                 \
    X(NOTLEADER, 20, "not the leader")                                   \
    X(TIMEOUT, 21, "timed out")                                          \
    X(LEADERLOST, 22, "leadership lost: outcome unknown")                \
    X(SHUTDOWN, 23, "shutting down")                                     \
    X(BUSY, 24, "resource busy")                                         \
    X(RAFT, 25, "consensus library error")                               \
    X(LMDB, 26, "storage library error")                                 \
    X(LOCKED, 27, "data directory is in use by another process")         \
    X(TXNFAILED, 28, "transaction compare failed")                       \
    X(TRUNCATED, 29, "input ended early")                                \
    X(CONFIG, 30, "invalid configuration")                               \
    X(QUORUM, 31, "would leave fewer live voters than a majority")       \
    X(REVOKED, 32, "child is not registered (it left or was removed)")

enum cd_err {
#define CD__ERR_ENUM(name, off, msg) CD_E##name = CD_ERR_BASE - (off),
    CD_ERRNO_MAP(CD__ERR_ENUM)
#undef CD__ERR_ENUM
};

/* "CD_ECORRUPT", "ENOENT", ...; "UNKNOWN" for anything else.  Static. */
const char *cd_errname(int err);

/* A message for a project code or a negative errno.  Static storage. */
const char *cd_strerror(int err);

/* Is err one of the project codes (as opposed to a negative errno)? */
int cd_err_is_project(int err);

#endif
